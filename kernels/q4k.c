// q4k.c: Q4_K quantizer/dequantizer as ggml's, int8 activations, the reference product, path dispatch.
//
// The quantizer must give ggml's bytes, so it repeats ggml's float operations in ggml's
// order. Two things keep the compiler from changing them: GCC in ISO C mode (-std=c11)
// does not contract a*b+c into an FMA (-ffp-contract=off), and without -ffast-math it
// never reassociates. tests/test_q4k.c holds the bytes against ggml's.
#include "kernels/q4k.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/q4k_impl.h"

// ---------------------------------------------------------------------------- half floats

uint16_t q4k_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;   // NaN
    if (a >= 0x477ff000u) return sign | 0x7c00u;  // at or past 65520, halfway beyond 65504: infinity
    if (a >= 0x38800000u) {                       // normal half (>= 2^-14): rebias, round the 13 dropped bits
        uint32_t r = a + 0x0fffu + ((a >> 13) & 1u);
        return sign | (uint16_t)((r - 0x38000000u) >> 13);
    }
    // Subnormal half: units of 2^-24, mantissa·2^(e-126) of them; below 2^-25 rounds to 0.
    uint32_t e = a >> 23;
    if (e < 102) return sign;
    uint32_t mant = (a & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    q += rem > half || (rem == half && (q & 1u));
    return sign | (uint16_t)q;
}

float q4k_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0x1f) {
        x = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0);  // NaN comes out quiet, as vcvtph2ps
    } else if (e) {
        x = sign | ((e + 112) << 23) | (m << 13);
    } else {
        float v = (float)m * 0x1p-24f;  // subnormal (or zero): exact, m < 2^10
        memcpy(&x, &v, 4);
        x |= sign;
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

// ---------------------------------------------------------------------------- layout

int64_t q4k_row_blocks(int64_t cols) { return (cols + Q4K_BLOCK - 1) / Q4K_BLOCK; }
int64_t q4k_row_bytes(int64_t cols) { return q4k_row_blocks(cols) * Q4K_BLOCK_BYTES; }

// A block's fields by memcpy: rows start every 144 bytes of whatever buffer the caller has.
static inline float block_d(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return q4k_fp16_to_fp32(h);
}
static inline float block_dmin(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk + 2, 2);
    return q4k_fp16_to_fp32(h);
}
#define BLOCK_SCALES(blk) ((blk) + 4)
#define BLOCK_QS(blk) ((blk) + 16)

// ---------------------------------------------------------------------------- quantizer

// ggml's nearest_int: round to nearest even by adding 1.5·2^23. Only meaningful for
// |f| < 2^22, like ggml's; outside it (and for NaN) it returns the same garbage ggml does,
// computed on unsigned bits so that nothing is undefined.
static inline int nearest_int(float f) {
    float v = f + 12582912.f;
    uint32_t i;
    memcpy(&i, &v, 4);
    return (int)(i & 0x007fffffu) - 0x00400000;
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// ggml's make_qkx2_quants with Q4_K's arguments (32 values, 4 bits, rmin -1, rdelta 0.1,
// 20 steps, squared error): a weighted least-squares fit x ≈ scale·L + min over a sweep
// of trial inverse scales, keeping the best. Returns scale; *neg_min = -min (>= 0).
enum { SUB = 32, NMAX = 15, NSTEP = 20 };
static float fit_sub_block(uint8_t L[SUB], float *neg_min, const float *x, const float *w) {
    const float rmin = -1.f, rdelta = 0.1f;
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < SUB; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, SUB);
        *neg_min = -min;
        return 0.f;
    }
    float iscale = NMAX / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < SUB; i++) {
        L[i] = (uint8_t)clampi(nearest_int(iscale * (x[i] - min)), 0, NMAX);
        float diff = scale * L[i] + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    uint8_t Laux[SUB];
    for (int is = 0; is <= NSTEP; is++) {
        iscale = (rmin + rdelta * is + NMAX) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < SUB; i++) {
            int l = clampi(nearest_int(iscale * (x[i] - min)), 0, NMAX);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < SUB; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, SUB);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
}

// One 256-weight block: ggml's quantize_row_q4_K_ref. Each sub-block is fitted with
// weights rms(sub-block) + |x|; the eight scales and mins are then quantized to 6 bits
// against their maxima, and the quants recomputed against the rounded scales.
static void quantize_block(uint8_t *blk, const float *x) {
    uint8_t L[Q4K_BLOCK];
    float scales[8], mins[8], w[SUB], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + SUB * j;
        float sum_x2 = 0;
        for (int l = 0; l < SUB; l++) sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / SUB);
        for (int l = 0; l < SUB; l++) w[l] = av_x + fabsf(xs[l]);
        scales[j] = fit_sub_block(L + SUB * j, &mins[j], xs, w);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *sc = BLOCK_SCALES(blk);
    for (int j = 0; j < 8; j++) {
        // ggml stores the rounded value in a uint8_t before clamping: keep that wrap.
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    uint16_t hd = q4k_fp32_to_fp16(max_scale / 63.f), hm = q4k_fp32_to_fp16(max_min / 63.f);
    memcpy(blk, &hd, 2);
    memcpy(blk + 2, &hm, 2);
    uint8_t s8[8], m8[8];
    q4k_unpack_scales(s8, m8, sc);
    float d_all = q4k_fp16_to_fp32(hd), m_all = q4k_fp16_to_fp32(hm);
    for (int j = 0; j < 8; j++) {
        const float d = d_all * s8[j];
        if (!d) continue;  // scale 0: keep the fit's quants, as ggml does
        const float dm = m_all * m8[j];
        for (int l = 0; l < SUB; l++)
            L[SUB * j + l] = (uint8_t)clampi(nearest_int((x[SUB * j + l] + dm) / d), 0, NMAX);
    }
    uint8_t *q = BLOCK_QS(blk);
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < SUB; l++) q[SUB * p + l] = (uint8_t)(L[64 * p + l] | (L[64 * p + l + SUB] << 4));
}

void q4k_quantize_row(uint8_t *q, const float *x, int64_t cols) {
    int64_t nb = q4k_row_blocks(cols);
    for (int64_t b = 0; b < nb; b++) {
        int64_t c0 = b * Q4K_BLOCK, len = cols - c0 < Q4K_BLOCK ? cols - c0 : Q4K_BLOCK;
        if (len == Q4K_BLOCK) {
            quantize_block(q + b * Q4K_BLOCK_BYTES, x + c0);
        } else {
            float pad[Q4K_BLOCK] = {0};
            memcpy(pad, x + c0, (size_t)len * sizeof(float));
            quantize_block(q + b * Q4K_BLOCK_BYTES, pad);
        }
    }
}

void q4k_quantize_rows(uint8_t *q, const float *w, int64_t rows, int64_t cols) {
    int64_t rb = q4k_row_bytes(cols);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) q4k_quantize_row(q + r * rb, w + r * cols, cols);
}

// ggml's dequantize_row_q4_K: d·sc and dmin·m rounded to float first, then d1·q − m1.
static void dequantize_block(float *y, const uint8_t *blk) {
    uint8_t sc[8], m[8];
    q4k_unpack_scales(sc, m, BLOCK_SCALES(blk));
    const float d = block_d(blk), min = block_dmin(blk);
    const uint8_t *q = BLOCK_QS(blk);
    for (int p = 0; p < 4; p++, q += SUB) {
        const float d1 = d * sc[2 * p], m1 = min * m[2 * p];
        const float d2 = d * sc[2 * p + 1], m2 = min * m[2 * p + 1];
        for (int l = 0; l < SUB; l++) *y++ = d1 * (q[l] & 0xF) - m1;
        for (int l = 0; l < SUB; l++) *y++ = d2 * (q[l] >> 4) - m2;
    }
}

void q4k_dequantize_row(float *x, const uint8_t *q, int64_t cols) {
    int64_t nb = q4k_row_blocks(cols);
    for (int64_t b = 0; b < nb; b++) {
        int64_t c0 = b * Q4K_BLOCK, len = cols - c0 < Q4K_BLOCK ? cols - c0 : Q4K_BLOCK;
        if (len == Q4K_BLOCK) {
            dequantize_block(x + c0, q + b * Q4K_BLOCK_BYTES);
        } else {
            float full[Q4K_BLOCK];
            dequantize_block(full, q + b * Q4K_BLOCK_BYTES);
            memcpy(x + c0, full, (size_t)len * sizeof(float));
        }
    }
}

// ---------------------------------------------------------------------------- activations

// Below this a block's scale 127/amax would overflow float: such activations count as zero.
#define ACT_TINY 1e-30f

// a[b·stride] for each block b of x[cols] (see q4k.h for the rule). The maximum is taken
// over the bits of |x| (an integer maximum: exact, order-free, and it sees inf/NaN).
static void act_quantize_block(Q8Block *o, const float *x) {
    uint32_t amax_bits = 0;
    for (int t = 0; t < Q4K_BLOCK; t++) {
        uint32_t u;
        memcpy(&u, x + t, 4);
        u &= 0x7fffffffu;
        amax_bits = u > amax_bits ? u : amax_bits;
    }
    float amax;
    memcpy(&amax, &amax_bits, 4);
    memset(o, 0, sizeof *o);
    if (amax_bits >= 0x7f800000u) {
        o->d = NAN;
        return;
    }
    if (amax < ACT_TINY) return;
    // |x·iscale| <= amax·(127/amax) <= 127·(1 + 2^-24)^2 < 127.5: rint stays within ±127.
    const float iscale = 127.f / amax;
    for (int t = 0; t < Q4K_BLOCK; t++) o->qs[t] = (int8_t)(int)rintf(x[t] * iscale);
    for (int j = 0; j < 8; j++) {
        int s = 0;
        for (int t = 0; t < SUB; t++) s += o->qs[SUB * j + t];
        o->bsum[j] = (int16_t)s;
    }
    o->d = amax / 127.f;
}

void q4k_act_quantize(Q8Block *a, int64_t stride, const float *x, int64_t cols) {
    int64_t nb = q4k_row_blocks(cols);
    for (int64_t b = 0; b < nb; b++) {
        int64_t c0 = b * Q4K_BLOCK, len = cols - c0 < Q4K_BLOCK ? cols - c0 : Q4K_BLOCK;
        if (len == Q4K_BLOCK) {
            act_quantize_block(a + b * stride, x + c0);
        } else {
            float pad[Q4K_BLOCK] = {0};
            memcpy(pad, x + c0, (size_t)len * sizeof(float));
            act_quantize_block(a + b * stride, pad);
        }
    }
}

void q4k_act_dequant(float *xq, const float *x, int64_t cols) {
    int64_t nb = q4k_row_blocks(cols);
    Q8Block *a = nsa_malloc((size_t)(nb ? nb : 1) * sizeof(Q8Block));
    q4k_act_quantize(a, 1, x, cols);
    for (int64_t c = 0; c < cols; c++) xq[c] = a[c / Q4K_BLOCK].d * a[c / Q4K_BLOCK].qs[c % Q4K_BLOCK];
    free(a);
}

// ---------------------------------------------------------------------------- reference product

// The definition in q4k.h, one output at a time.
void q4k_rows_ref(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                  int64_t r0, int64_t r1, void *scratch) {
    (void)scratch;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = W + r * nb * Q4K_BLOCK_BYTES;
        for (int64_t i = 0; i < n; i++) {
            float acc = 0.f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = wr + b * Q4K_BLOCK_BYTES, *qs = BLOCK_QS(blk);
                const Q8Block *a = A + b * n + i;
                uint8_t sc[8], m[8];
                q4k_unpack_scales(sc, m, BLOCK_SCALES(blk));
                int32_t s1 = 0, s2 = 0;
                for (int j = 0; j < 8; j++) {
                    // Sub-block j: nibble (j odd: high) of qs bytes 32·(j/2) .. +31.
                    const uint8_t *qj = qs + SUB * (j / 2);
                    const int shift = 4 * (j & 1);
                    int32_t isum = 0;
                    for (int t = 0; t < SUB; t++) isum += ((qj[t] >> shift) & 0xF) * a->qs[SUB * j + t];
                    s1 += sc[j] * isum;
                    s2 += m[j] * a->bsum[j];
                }
                acc = acc + a->d * (block_d(blk) * (float)s1 - block_dmin(blk) * (float)s2);
            }
            Y[i * rows + r] = acc;
        }
    }
}

size_t q4k_rows_ref_scratch(int64_t n, int64_t nb) {
    (void)n, (void)nb;
    return 0;
}

// ---------------------------------------------------------------------------- dispatch

static const char *const path_names[] = {
    [Q4K_PATH_REF] = "ref", [Q4K_PATH_AVX2] = "avx2", [Q4K_PATH_AVX512] = "avx512"};

const char *q4k_path_str(Q4kPath p) {
    return p >= Q4K_PATH_REF && p <= Q4K_PATH_AVX512 ? path_names[p] : "?";
}

int q4k_path_supported(Q4kPath p) {
    cpu_detect();
    switch (p) {
    case Q4K_PATH_REF: return 1;
    case Q4K_PATH_AVX2: return nsa_cpu.avx2 && nsa_cpu.fma && nsa_cpu.f16c;
    case Q4K_PATH_AVX512: return nsa_cpu.avx512f && nsa_cpu.avx512vnni;
    }
    return 0;
}

int q4k_setup(void) {
    Q4kPath p = q4k_path_supported(Q4K_PATH_AVX512) ? Q4K_PATH_AVX512
                : q4k_path_supported(Q4K_PATH_AVX2) ? Q4K_PATH_AVX2
                                                    : Q4K_PATH_REF;
    const char *env = getenv("NSA_Q4K_PATH");
    if (env && *env) {
        Q4kPath want = 0;
        for (int k = Q4K_PATH_REF; k <= Q4K_PATH_AVX512; k++)
            if (!strcmp(env, path_names[k])) want = (Q4kPath)k;
        if (!want) {
            nsa_error("NSA_Q4K_PATH=%s: unknown Q4_K kernel path (ref, avx2 or avx512)", env);
            return NSA_ERR;
        }
        if (!q4k_path_supported(want)) {
            nsa_error(
                "NSA_Q4K_PATH=%s: this CPU cannot run it (avx2 needs AVX2, FMA and F16C; avx512 needs "
                "AVX-512 F/BW/DQ/VL and VNNI)",
                env);
            return NSA_ERR;
        }
        p = want;
    }
    nsa_cpu.q4k_path = p;
    return NSA_OK;
}

static Q4kPath active_path(void) {
    // main reports a bad NSA_Q4K_PATH through q4k_setup before any product runs.
    if (!nsa_cpu.q4k_path) NSA_ASSERT(q4k_setup() == NSA_OK);
    return (Q4kPath)nsa_cpu.q4k_path;
}

const char *q4k_path_name(void) { return q4k_path_str(active_path()); }

// Output rows per task: a multiple of every path's row group (16), small enough that a
// 256-row layer still gives both threads work.
#define ROW_CHUNK 32

void q4k_matmul_path(Q4kPath p, float *Y, const uint8_t *W, const float *X, int64_t n, int64_t rows,
                     int64_t cols) {
    NSA_ASSERT(q4k_path_supported(p));
    if (n <= 0 || rows <= 0) return;
    int64_t nb = q4k_row_blocks(cols);
    if (nb == 0) {
        memset(Y, 0, (size_t)(n * rows) * sizeof(float));
        return;
    }
    Q4kRowsFn fn = p == Q4K_PATH_AVX512 ? q4k_rows_avx512 : p == Q4K_PATH_AVX2 ? q4k_rows_avx2 : q4k_rows_ref;
    size_t scratch = p == Q4K_PATH_AVX512 ? q4k_rows_avx512_scratch(n, nb)
                     : p == Q4K_PATH_AVX2 ? q4k_rows_avx2_scratch(n, nb)
                                          : q4k_rows_ref_scratch(n, nb);
    // Activations block-major (A[b·n + i]): a row kernel walks one block of every
    // activation row at a time.
    Q8Block *A = nsa_malloc((size_t)(n * nb) * sizeof(Q8Block));
    const int64_t chunks = (rows + ROW_CHUNK - 1) / ROW_CHUNK;
    const int par = n * rows * nb >= 256;  // tiny products: not worth waking threads
#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) q4k_act_quantize(A + i, n, X + i * cols, cols);
        void *s = scratch ? nsa_malloc(scratch) : NULL;
#pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks; c++) {
            int64_t r0 = c * ROW_CHUNK, r1 = r0 + ROW_CHUNK < rows ? r0 + ROW_CHUNK : rows;
            fn(Y, W, A, n, rows, nb, r0, r1, s);
        }
        free(s);
    }
    free(A);
}

void q4k_matmul(float *Y, const uint8_t *W, const float *X, int64_t n, int64_t rows, int64_t cols) {
    q4k_matmul_path(active_path(), Y, W, X, n, rows, cols);
}

void q4k_matvec(float *y, const uint8_t *W, const float *x, int64_t rows, int64_t cols) {
    q4k_matmul_path(active_path(), y, W, x, 1, rows, cols);
}
