// matmul.c: the row-invariant f32 product of matmul.h, AVX-512 and AVX2 register tiles and
// their portable twin, which compute every output with the same arithmetic.
//
// Why not gemm.c: OpenBLAS's edge tiles sum in another order than its full tiles, so a
// row's bits there depend on where it falls in a chunk, i.e. on the other rows of the call.
// Batched decoding must not let one sequence change another's logits. Here every y[i][j] is
//   acc[l] = fma(x[k], w[k], acc[l]) for k = l, l + 16, l + 32, ... (k < cols), l < 16,
//   then a[l] = acc[l] + acc[l + 8] (l < 8), a[l] + a[l + 4] (l < 4), a[l] + a[l + 2] (l < 2),
//   y = a[0] + a[1]
// whatever the tile it sits in: the AVX-512 kernel keeps acc in one register (the tail of
// k masked, masked lanes left untouched) and reduces with the same halving tree; the AVX2
// kernel keeps it in two (lanes 0-7 and 8-15), loads the tail with zeros in the lanes past
// cols (fma(0, 0, acc) = acc: acc starts at +0 and never becomes -0, as an exact zero
// rounds to +0) and starts its tree with acc[l] + acc[l + 8].
#include "kernels/matmul.h"

#include <immintrin.h>
#include <math.h>

#include "kernels/common.h"
#include "kernels/q4k.h"
#include "kernels/cpu.h"

#define LANES 16

static float dot_ref(const float *x, const float *w, int64_t cols) {
    float acc[LANES] = {0};
    for (int64_t k0 = 0; k0 < cols; k0 += LANES)
        for (int l = 0; l < LANES && k0 + l < cols; l++) acc[l] = fmaf(x[k0 + l], w[k0 + l], acc[l]);
    for (int half = LANES / 2; half >= 1; half /= 2)
        for (int l = 0; l < half; l++) acc[l] = acc[l] + acc[l + half];
    return acc[0];
}

// Products below this many multiply-adds run on the calling thread: a decode step of a small
// model makes many of them, and waking the team costs more than they do (the bits are the
// same either way).
#define PARALLEL_MIN_FMAS (1 << 16)

void matmul_f32_ref(float *y, const float *x, const float *w, int64_t n, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (n * rows * cols >= PARALLEL_MIN_FMAS)
    for (int64_t j = 0; j < rows; j++)
        for (int64_t i = 0; i < n; i++) y[i * rows + j] = dot_ref(x + i * cols, w + j * cols, cols);
}

// ---- AVX-512 ----

#define AVX512 __attribute__((target("avx512f,avx512dq")))
#define TJ 4  // weight rows per tile (a ragged last block repeats its first row, not stored)
#define TI 4  // activation rows per tile

AVX512 static inline float hsum_tree(__m512 a) {
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
    __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    return _mm_cvtss_f32(_mm_add_ss(a2, _mm_shuffle_ps(a2, a2, 1)));
}

// ni activation rows (a literal after inlining) times TJ weight rows, full K.
AVX512 static inline __attribute__((always_inline)) void tile_avx512(
    float *y, int64_t ystride, const float *x, const float *const *wr, int nj, int64_t cols, int ni) {
    __m512 acc[TI][TJ];
    for (int i = 0; i < ni; i++)
        for (int j = 0; j < TJ; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + LANES <= cols; k += LANES) {
        __m512 wv[TJ];
        for (int j = 0; j < TJ; j++) wv[j] = _mm512_loadu_ps(wr[j] + k);
        for (int i = 0; i < ni; i++) {
            __m512 xv = _mm512_loadu_ps(x + i * cols + k);
            for (int j = 0; j < TJ; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k < cols) {
        const __mmask16 m = (__mmask16)((1u << (cols - k)) - 1u);
        __m512 wv[TJ];
        for (int j = 0; j < TJ; j++) wv[j] = _mm512_maskz_loadu_ps(m, wr[j] + k);
        for (int i = 0; i < ni; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + i * cols + k);
            for (int j = 0; j < TJ; j++) acc[i][j] = _mm512_mask3_fmadd_ps(xv, wv[j], acc[i][j], m);
        }
    }
    for (int i = 0; i < ni; i++)
        for (int j = 0; j < nj; j++) y[i * ystride + j] = hsum_tree(acc[i][j]);
}

AVX512 void matmul_f32_avx512(float *y, const float *x, const float *w, int64_t n, int64_t rows,
                              int64_t cols) {
    const int64_t nb = (rows + TJ - 1) / TJ;
#pragma omp parallel for schedule(static) if (n * rows * cols >= PARALLEL_MIN_FMAS)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t j0 = b * TJ;
        const int nj = rows - j0 < TJ ? (int)(rows - j0) : TJ;
        const float *wr[TJ];
        for (int j = 0; j < TJ; j++) wr[j] = w + (j0 + (j < nj ? j : 0)) * cols;
        int64_t i = 0;
        for (; i + TI <= n; i += TI) tile_avx512(y + i * rows + j0, rows, x + i * cols, wr, nj, cols, TI);
        switch (n - i) {
        case 1: tile_avx512(y + i * rows + j0, rows, x + i * cols, wr, nj, cols, 1); break;
        case 2: tile_avx512(y + i * rows + j0, rows, x + i * cols, wr, nj, cols, 2); break;
        case 3: tile_avx512(y + i * rows + j0, rows, x + i * cols, wr, nj, cols, 3); break;
        default: break;
        }
    }
}

// ---- AVX2 + FMA ----

#define AVX2 __attribute__((target("avx2,fma")))
#define TJ2 2  // weight rows per tile: 2 x 2 accumulators of two registers, 4 x and 4 w loads
#define TI2 2  // per 16 columns (16 registers would not hold the AVX-512 kernel's 4 x 4)

AVX2 static inline float hsum_tree8(__m256 lo, __m256 hi) {
    __m256 a8 = _mm256_add_ps(lo, hi);
    __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
    __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    return _mm_cvtss_f32(_mm_add_ss(a2, _mm_shuffle_ps(a2, a2, 1)));
}

// ni activation rows (a literal after inlining) times TJ2 weight rows, full K.
AVX2 static inline __attribute__((always_inline)) void tile_avx2(float *y, int64_t ystride, const float *x,
                                                                const float *const *wr, int nj, int64_t cols,
                                                                int ni) {
    __m256 lo[TI2][TJ2], hi[TI2][TJ2];
    for (int i = 0; i < ni; i++)
        for (int j = 0; j < TJ2; j++) lo[i][j] = hi[i][j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + LANES <= cols; k += LANES)
        for (int j = 0; j < TJ2; j++) {
            const __m256 wl = _mm256_loadu_ps(wr[j] + k), wh = _mm256_loadu_ps(wr[j] + k + 8);
            for (int i = 0; i < ni; i++) {
                lo[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * cols + k), wl, lo[i][j]);
                hi[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * cols + k + 8), wh, hi[i][j]);
            }
        }
    if (k < cols) {  // lanes past cols load zeros
        const int rest = (int)(cols - k);
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i ml = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), idx);
        const __m256i mh = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest - 8), idx);
        for (int j = 0; j < TJ2; j++) {
            const __m256 wl = _mm256_maskload_ps(wr[j] + k, ml), wh = _mm256_maskload_ps(wr[j] + k + 8, mh);
            for (int i = 0; i < ni; i++) {
                lo[i][j] = _mm256_fmadd_ps(_mm256_maskload_ps(x + i * cols + k, ml), wl, lo[i][j]);
                hi[i][j] = _mm256_fmadd_ps(_mm256_maskload_ps(x + i * cols + k + 8, mh), wh, hi[i][j]);
            }
        }
    }
    for (int i = 0; i < ni; i++)
        for (int j = 0; j < nj; j++) y[i * ystride + j] = hsum_tree8(lo[i][j], hi[i][j]);
}

AVX2 void matmul_f32_avx2(float *y, const float *x, const float *w, int64_t n, int64_t rows, int64_t cols) {
    const int64_t nb = (rows + TJ2 - 1) / TJ2;
#pragma omp parallel for schedule(static) if (n * rows * cols >= PARALLEL_MIN_FMAS)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t j0 = b * TJ2;
        const int nj = rows - j0 < TJ2 ? (int)(rows - j0) : TJ2;
        const float *wr[TJ2];
        for (int j = 0; j < TJ2; j++) wr[j] = w + (j0 + (j < nj ? j : 0)) * cols;
        int64_t i = 0;
        for (; i + TI2 <= n; i += TI2) tile_avx2(y + i * rows + j0, rows, x + i * cols, wr, nj, cols, TI2);
        if (i < n) tile_avx2(y + i * rows + j0, rows, x + i * cols, wr, nj, cols, 1);
    }
}

void matmul_xwt(float *y, const float *x, const Weight *w, int64_t n) {
    if (n == 0 || w->rows == 0) return;
    if (w->type == WEIGHT_Q4K) {
        // Row-invariant by construction: each output is one fixed sequence over blocks of
        // exact int8 dot products (kernels/q4k.h).
        q4k_matmul(y, w->q4k, x, n, w->rows, w->cols);
        return;
    }
    NSA_ASSERT(w->type == WEIGHT_F32);
    if (nsa_cpu.avx512f) matmul_f32_avx512(y, x, w->f32, n, w->rows, w->cols);
    else if (nsa_cpu.avx2 && nsa_cpu.fma) matmul_f32_avx2(y, x, w->f32, n, w->rows, w->cols);
    else matmul_f32_ref(y, x, w->f32, n, w->rows, w->cols);
}

void matmul_bias_add(float *y, const float *b, int64_t n, int64_t cols) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < cols; j++) y[i * cols + j] += b[j];
}
