// attn_lanes.h: the 64-lane building blocks of the attention kernels (attention.c, nsa_slc.c).
// "Lanes" are the rows of a query tile or the keys of a key block; an [Dh][64] array holds
// one vector of Dh floats per lane, transposed. Every kernel is always_inline with Dh as a
// parameter; callers wrap them in DISPATCH_DH so that gcc unrolls the usual head sizes.
#ifndef NSA_ATTN_LANES_H
#define NSA_ATTN_LANES_H

#include <math.h>

#include "kernels/attention.h"
#include "kernels/cpu.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// DISPATCH_DH runs `call` with Dh_ a literal for the usual head sizes (loops unroll
// completely) and the run-time Dh otherwise.
#define DISPATCH_DH(Dh, call)                              \
    switch (Dh) {                                          \
    case 16: { const int Dh_ = 16; call; break; }          \
    case 32: { const int Dh_ = 32; call; break; }          \
    case 64: { const int Dh_ = 64; call; break; }          \
    case 128: { const int Dh_ = 128; call; break; }        \
    default: { const int Dh_ = Dh; call; break; }          \
    }
#define KERNEL static inline __attribute__((always_inline)) void

#define ATTN_L 64
_Static_assert(ATTN_ROWS == ATTN_L && ATTN_KEYS == ATTN_L, "tile kernels assume 64 lanes");

// XT[e * xs + l] = rows[l][e] * mul for l < n: rows into columns (lanes at stride xs).
KERNEL cols_from_rows_ref(float *restrict XT, size_t xs, const float *const *rows, int n, int Dh, float mul) {
    for (int l = 0; l < n; l++)
        for (int e = 0; e < Dh; e++) XT[e * xs + l] = rows[l][e] * mul;
}

// The way back, for l < n: rows[l][e] = XT[e * xs + l] * mul[l] (ADD 0), or
// rows[l][e] += XT[e * xs + l] (ADD 1, mul unused: a transposed accumulator added in).
KERNEL rows_out_ref(float *const *rows, const float *restrict XT, size_t xs, const float *mul, int n, int Dh,
                    int ADD) {
    for (int l = 0; l < n; l++)
        for (int e = 0; e < Dh; e++) rows[l][e] = ADD ? rows[l][e] + XT[e * xs + l] : XT[e * xs + l] * mul[l];
}

// For keys j < nk and lanes x < V (a multiple of 16): P[j][x] = exp(P[j][x] - base[x])
// (attn_expf), sum[x] += each in order of j. The softmax step of the forward kernels.
KERNEL lanes_exp_sum_ref(float *restrict P, float *restrict sum, const float *restrict base, int nk, int V) {
    for (int j = 0; j < nk; j++) {
#pragma omp simd
        for (int x = 0; x < V; x++) {
            const float p = attn_expf(P[j * ATTN_L + x] - base[x]);
            P[j * ATTN_L + x] = p;
            sum[x] += p;
        }
    }
}

// One backward row over a whole key block (64 keys, no mask): P[j] = exp(P[j] - lr), then
// dS[j] = scale · (P[j] · (dS[j] - D)).
KERNEL row_exp_ds_ref(float *restrict P, float *restrict dS, float lr, float D, float scale) {
#pragma omp simd
    for (int j = 0; j < ATTN_L; j++) {
        const float p = attn_expf(P[j] - lr);
        P[j] = p;
        dS[j] = scale * (p * (dS[j] - D));
    }
}

// A backward row on a causal or window edge: keys j of lanes [j0, j1) (multiples of 16),
// visible where jlo <= j < jhi; P[j], dS[j] as in row_exp_ds where visible, 0 elsewhere.
KERNEL row_exp_ds_mask_ref(float *restrict P, float *restrict dS, float lr, float D, float scale, int j0, int j1,
                           int jlo, int jhi) {
#pragma omp simd
    for (int j = j0; j < j1; j++) {
        const int vis = j >= jlo && j < jhi;
        const float p = attn_expf(P[j] - lr);
        P[j] = vis ? p : 0.0f;
        dS[j] = vis ? scale * (p * (dS[j] - D)) : 0.0f;
    }
}

// The 64 lanes are walked as LANE_V consecutive lanes times 64 / LANE_V blocks (block loop
// inner): gcc then keeps every accumulator in a vector register and broadcasts the scalar
// operand, where the plain 64-lane loop got stack accumulators and gathers.
#define LANE_V 16

// Y[i][l] = Σ_e XT[e][l] rows[i][e] for i < n and the lanes l of vectors [vb, vb + nv) (16
// lanes each; the others are neither read nor written): 64 dot products per row at most,
// four rows per pass sharing the XT loads (16 vector accumulators: one load feeds four FMAs).
KERNEL lanes_dot_ref(float *restrict Y, const float *restrict XT, const float *const *rows, int n, int Dh,
                     int vb, int nv) {
    const int l0 = vb * LANE_V, l1 = (vb + nv) * LANE_V;
    for (int i = 0; i < n; i += 4) {
        const float *x0 = rows[i], *x1 = rows[i + 1 < n ? i + 1 : i];
        const float *x2 = rows[i + 2 < n ? i + 2 : i], *x3 = rows[i + 3 < n ? i + 3 : i];
        float a0[ATTN_L], a1[ATTN_L], a2[ATTN_L], a3[ATTN_L];
        for (int l = l0; l < l1; l++) a0[l] = a1[l] = a2[l] = a3[l] = 0.0f;
        for (int e = 0; e < Dh; e++) {
            const float *xe = XT + e * ATTN_L;
            const float c0 = x0[e], c1 = x1[e], c2 = x2[e], c3 = x3[e];
            for (int l = 0; l < LANE_V; l++)
                for (int b = l0; b < l1; b += LANE_V) {
                    a0[b + l] = fmaf(xe[b + l], c0, a0[b + l]);
                    a1[b + l] = fmaf(xe[b + l], c1, a1[b + l]);
                    a2[b + l] = fmaf(xe[b + l], c2, a2[b + l]);
                    a3[b + l] = fmaf(xe[b + l], c3, a3[b + l]);
                }
        }
        for (int l = l0; l < l1; l++) Y[i * ATTN_L + l] = a0[l];
        if (i + 1 < n)
            for (int l = l0; l < l1; l++) Y[(i + 1) * ATTN_L + l] = a1[l];
        if (i + 2 < n)
            for (int l = l0; l < l1; l++) Y[(i + 2) * ATTN_L + l] = a2[l];
        if (i + 3 < n)
            for (int l = l0; l < l1; l++) Y[(i + 3) * ATTN_L + l] = a3[l];
    }
}

// AccT[e][l] += Σ_i W[i][l] rows[i][e] for i < n, in order of i, for the lanes of vectors
// [vb, vb + nv): the transposed accumulation of Σ_i w_i ⊗ row_i, four e per pass sharing
// the W loads.
KERNEL lanes_axpy_ref(float *restrict AccT, const float *restrict W, const float *const *rows, int n, int Dh,
                      int vb, int nv) {
    const int l0 = vb * LANE_V, l1 = (vb + nv) * LANE_V;
    for (int e = 0; e < Dh; e += 4) {
        const int e1 = e + 1 < Dh ? e + 1 : e, e2 = e + 2 < Dh ? e + 2 : e, e3 = e + 3 < Dh ? e + 3 : e;
        float a0[ATTN_L], a1[ATTN_L], a2[ATTN_L], a3[ATTN_L];
        for (int l = l0; l < l1; l++)
            a0[l] = AccT[e * ATTN_L + l], a1[l] = AccT[e1 * ATTN_L + l], a2[l] = AccT[e2 * ATTN_L + l], a3[l] = AccT[e3 * ATTN_L + l];
        for (int i = 0; i < n; i++) {
            const float *wi = W + i * ATTN_L;
            const float c0 = rows[i][e], c1 = rows[i][e1], c2 = rows[i][e2], c3 = rows[i][e3];
            for (int l = 0; l < LANE_V; l++)
                for (int b = l0; b < l1; b += LANE_V) {
                    a0[b + l] = fmaf(wi[b + l], c0, a0[b + l]);
                    a1[b + l] = fmaf(wi[b + l], c1, a1[b + l]);
                    a2[b + l] = fmaf(wi[b + l], c2, a2[b + l]);
                    a3[b + l] = fmaf(wi[b + l], c3, a3[b + l]);
                }
        }
        // Past Dh the e's repeat e: write them first so that a0 wins.
        for (int l = l0; l < l1; l++) AccT[e3 * ATTN_L + l] = a3[l];
        for (int l = l0; l < l1; l++) AccT[e2 * ATTN_L + l] = a2[l];
        for (int l = l0; l < l1; l++) AccT[e1 * ATTN_L + l] = a1[l];
        for (int l = l0; l < l1; l++) AccT[e * ATTN_L + l] = a0[l];
    }
}

// Y[x] = Y[x] · mul[x] (mul NULL: unscaled) + Σ_j P(x, j) X[j] for rows x < n (Y[x] a plain
// row of Dh floats, P(x, j) = P[x * px + j * pj], keys j < nk in order, X rows at stride xs):
// dQ += dS·K and the selected forward's O += P·V with the head dimension in the vectors. R
// rows per pass share each X load (R·Dh accumulators, 16 vectors of 16 floats); rows past n
// repeat the last one and are stored first, so the real row's store wins.
KERNEL rows_axpy_ref(float *const *Y, const float *restrict P, int px, int pj, const float *mul, int n,
                     const float *restrict X, size_t xs, int nk, int Dh) {
    enum { RMAX = 16 };
    const int R = Dh >= 256 ? 1 : Dh >= 128 ? 2 : Dh >= 64 ? 4 : Dh >= 32 ? 8 : RMAX;
    for (int x0 = 0; x0 < n; x0 += R) {
        int xr[RMAX];
        float a[R][Dh];
        for (int w = 0; w < R; w++) {
            xr[w] = x0 + w < n ? x0 + w : n - 1;
            for (int e = 0; e < Dh; e++) a[w][e] = mul ? Y[xr[w]][e] * mul[xr[w]] : Y[xr[w]][e];
        }
        for (int j = 0; j < nk; j++) {
            const float *xj = X + (size_t)j * xs;
            for (int w = 0; w < R; w++) {
                const float c = P[(size_t)xr[w] * px + (size_t)j * pj];
#pragma omp simd
                for (int e = 0; e < Dh; e++) a[w][e] = fmaf(c, xj[e], a[w][e]);
            }
        }
        for (int w = R - 1; w >= 0; w--)
            for (int e = 0; e < Dh; e++) Y[xr[w]][e] = a[w][e];
    }
}

// ---- AVX-512 twins ----
// The same products with the register tiles written out: gcc kept only four rows of
// accumulators in lanes_dot_ref and folded the shared operand's load into every FMA (20
// loads per 16 FMAs, with the broadcasts), and the backward kernel ran at ~60 % of single-thread sgemm. Every
// output element is the same chain of fmaf in the same order as in the _ref loops, so the
// paths give the same bits (tests/test_attention.c holds them to it). They exist where
// the compiler targets AVX-512 (the Makefile builds with -march=native); attn_setup chooses
// the path from the CPU features or NSA_ATTN_PATH.
#ifdef __AVX512F__
#define LANES_HAVE_512 1

// r[i][j] -> r[j][i] for a 16 x 16 block in registers: pairs of rows interleaved, then
// quads within each 128-bit lane, then the 128-bit lanes across the four quads.
static inline __attribute__((always_inline)) void tr16x16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c], lane L: element 4L + c of rows 4g .. 4g + 3
    for (int g = 0; g < 4; g++) {
        u[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        const __m512 x = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), y = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        const __m512 x2 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE), y2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(x, y, 0x88), r[4 + c] = _mm512_shuffle_f32x4(x, y, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(x2, y2, 0x88), r[12 + c] = _mm512_shuffle_f32x4(x2, y2, 0xDD);
    }
}

// cols_from_rows for Dh a multiple of 16, in 16 x 16 register blocks (the scalar loop
// stored one float at a time: ~40 % of a compressed-branch tile at T = 1024, whose rows see
// few keys). The same products; a short last block stores only its n lanes.
KERNEL cols_from_rows_512(float *restrict XT, size_t xs, const float *const *rows, int n, int Dh, float mul) {
    const __m512 m = _mm512_set1_ps(mul);
    for (int l0 = 0; l0 < n; l0 += 16) {
        const int nl = n - l0 < 16 ? n - l0 : 16;
        const __mmask16 keep = (__mmask16)((1u << nl) - 1);
        for (int e0 = 0; e0 < Dh; e0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < nl ? _mm512_mul_ps(_mm512_loadu_ps(rows[l0 + i] + e0), m) : _mm512_setzero_ps();
            tr16x16(r);
            for (int i = 0; i < 16; i++) _mm512_mask_storeu_ps(XT + (e0 + i) * xs + l0, keep, r[i]);
        }
    }
}

// rows_out_ref in 16 x 16 register blocks, the same products or additions; a short last
// block reads all 16 lanes (xs leaves room) and stores its n rows.
KERNEL rows_out_512(float *const *rows, const float *restrict XT, size_t xs, const float *mul, int n, int Dh,
                    int ADD) {
    for (int l0 = 0; l0 < n; l0 += 16)
        for (int e0 = 0; e0 < Dh; e0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(XT + (e0 + i) * xs + l0);
            tr16x16(r);
            for (int i = 0; i < 16 && l0 + i < n; i++) {
                float *o = rows[l0 + i] + e0;
                _mm512_storeu_ps(o, ADD ? _mm512_add_ps(_mm512_loadu_ps(o), r[i])
                                        : _mm512_mul_ps(r[i], _mm512_set1_ps(mul[l0 + i])));
            }
        }
}

// RW rows from row i of lanes_dot over NV vectors from X0 (both literals): RW * NV
// accumulators, the NV XT vectors of each e loaded once for the RW rows.
KERNEL lanes_dot_pass_512(float *restrict Y0, const float *restrict X0, const float *const *rows, int i, int Dh,
                          int RW, int NV) {
    __m512 a[24];
    for (int u = 0; u < RW * NV; u++) a[u] = _mm512_setzero_ps();
    for (int e = 0; e < Dh; e++) {
        const float *xe = X0 + e * ATTN_L;
        __m512 kv[4];
        for (int b = 0; b < NV; b++) kv[b] = _mm512_loadu_ps(xe + 16 * b);
        for (int w = 0; w < RW; w++) {
            const __m512 c = _mm512_set1_ps(rows[i + w][e]);
            for (int b = 0; b < NV; b++) a[w * NV + b] = _mm512_fmadd_ps(kv[b], c, a[w * NV + b]);
        }
    }
    for (int w = 0; w < RW; w++)
        for (int b = 0; b < NV; b++) _mm512_storeu_ps(Y0 + (i + w) * ATTN_L + 16 * b, a[w * NV + b]);
}

// lanes_dot over NV vectors from vb (NV a literal: see LANES_NV): six rows per pass with all
// four vectors (24 accumulators), eight with fewer; the rest in passes of 4, 2 and 1 (one
// row at a time, each FMA waited for its own XT load: ~2x the time per row).
KERNEL lanes_dot_512(float *restrict Y, const float *restrict XT, const float *const *rows, int n, int Dh, int vb,
                     int NV) {
    const int RW = NV == 4 ? 6 : 8;
    const float *X0 = XT + vb * 16;
    float *Y0 = Y + vb * 16;
    int i = 0;
    for (; i + RW <= n; i += RW) lanes_dot_pass_512(Y0, X0, rows, i, Dh, RW, NV);
    if (n - i >= 4) lanes_dot_pass_512(Y0, X0, rows, i, Dh, 4, NV), i += 4;
    if (n - i >= 2) lanes_dot_pass_512(Y0, X0, rows, i, Dh, 2, NV), i += 2;
    if (n - i >= 1) lanes_dot_pass_512(Y0, X0, rows, i, Dh, 1, NV);
}

// lanes_axpy over NV vectors from vb: six e per pass with all four vectors (24
// accumulators), eight with fewer; the NV W vectors of each row loaded once.
KERNEL lanes_axpy_512(float *restrict AccT, const float *restrict W, const float *const *rows, int n, int Dh,
                      int vb, int NV) {
    const int EW = NV == 4 ? 6 : 8;
    float *A0 = AccT + vb * 16;
    const float *W0 = W + vb * 16;
    int e = 0;
    for (; e + EW <= Dh; e += EW) {
        __m512 a[24];
        for (int u = 0; u < EW; u++)
            for (int b = 0; b < NV; b++) a[u * NV + b] = _mm512_loadu_ps(A0 + (e + u) * ATTN_L + 16 * b);
        for (int i = 0; i < n; i++) {
            const float *wi = W0 + i * ATTN_L;
            __m512 wv[4];
            for (int b = 0; b < NV; b++) wv[b] = _mm512_loadu_ps(wi + 16 * b);
            for (int u = 0; u < EW; u++) {
                const __m512 c = _mm512_set1_ps(rows[i][e + u]);
                for (int b = 0; b < NV; b++) a[u * NV + b] = _mm512_fmadd_ps(wv[b], c, a[u * NV + b]);
            }
        }
        for (int u = 0; u < EW; u++)
            for (int b = 0; b < NV; b++) _mm512_storeu_ps(A0 + (e + u) * ATTN_L + 16 * b, a[u * NV + b]);
    }
    for (; e < Dh; e++) {
        __m512 a[4];
        for (int b = 0; b < NV; b++) a[b] = _mm512_loadu_ps(A0 + e * ATTN_L + 16 * b);
        for (int i = 0; i < n; i++) {
            const __m512 c = _mm512_set1_ps(rows[i][e]);
            for (int b = 0; b < NV; b++) a[b] = _mm512_fmadd_ps(_mm512_loadu_ps(W0 + i * ATTN_L + 16 * b), c, a[b]);
        }
        for (int b = 0; b < NV; b++) _mm512_storeu_ps(A0 + e * ATTN_L + 16 * b, a[b]);
    }
}

// R rows from row x0 of rows_axpy (R and Dh / 16 literals): R * Dh / 16 accumulators, each
// key's Dh / 16 vectors loaded once for the R rows.
KERNEL rows_axpy_pass_512(float *const *Y, const float *restrict P, int px, int pj, const float *mul, int x0,
                          int R, const float *restrict X, size_t xs, int nk, int Dh) {
    const int nv = Dh / 16;
    __m512 a[24];
    for (int w = 0; w < R; w++) {
        const __m512 sc = _mm512_set1_ps(mul ? mul[x0 + w] : 1.0f);
        for (int v = 0; v < nv; v++) {
            const __m512 y = _mm512_loadu_ps(Y[x0 + w] + 16 * v);
            a[w * nv + v] = mul ? _mm512_mul_ps(y, sc) : y;
        }
    }
    for (int j = 0; j < nk; j++) {
        const float *xj = X + (size_t)j * xs;
        __m512 xv[16];
        for (int v = 0; v < nv; v++) xv[v] = _mm512_loadu_ps(xj + 16 * v);
        for (int w = 0; w < R; w++) {
            const __m512 c = _mm512_set1_ps(P[(size_t)(x0 + w) * px + (size_t)j * pj]);
            for (int v = 0; v < nv; v++) a[w * nv + v] = _mm512_fmadd_ps(c, xv[v], a[w * nv + v]);
        }
    }
    for (int w = 0; w < R; w++)
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(Y[x0 + w] + 16 * v, a[w * nv + v]);
}

// rows_axpy for Dh a multiple of 16 up to 256: R = 24 / (Dh / 16) rows per pass (24
// accumulators), the rest in passes of halving size (a last pass of all R rows, as before,
// cost a whole pass for a row or two: the selected forward's batches end anywhere).
KERNEL rows_axpy_512(float *const *Y, const float *restrict P, int px, int pj, const float *mul, int n,
                     const float *restrict X, size_t xs, int nk, int Dh) {
    const int nv = Dh / 16, R = 24 / nv > 0 ? 24 / nv : 1;
    int x0 = 0;
    for (; x0 + R <= n; x0 += R) rows_axpy_pass_512(Y, P, px, pj, mul, x0, R, X, xs, nk, Dh);
    for (int r = 16; r >= 1; r /= 2)
        if (r < R && n - x0 >= r) rows_axpy_pass_512(Y, P, px, pj, mul, x0, r, X, xs, nk, Dh), x0 += r;
}

// nsa_expf (kernels/vexp.h) for 16 floats, the same operations in the same order so the
// same bits: gcc's vectorisation of it spent ~35 instructions a vector on masked copies of
// its selects; this takes 18. The clamp's order differs only for NaN, whose result is x
// either way; 2^n scales by vscalefps, which rounds p·2^n once as the multiplication by
// the constructed 2^n did (n is an integer in [-126, 127]).
static inline __attribute__((always_inline)) __m512 exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f), magic = _mm512_set1_ps(12582912.0f);
    const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)), magic), magic);
    const __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), xc));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);  // 0 where x < -87
    const __m512 y = _mm512_maskz_scalef_ps(keep, p, n);
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

// lanes_exp_sum_ref with exp512; V a multiple of 16.
KERNEL lanes_exp_sum_512(float *restrict P, float *restrict sum, const float *restrict base, int nk, int V) {
    __m512 b[ATTN_L / 16], acc[ATTN_L / 16];
    for (int v = 0; v < V / 16; v++) b[v] = _mm512_loadu_ps(base + 16 * v), acc[v] = _mm512_loadu_ps(sum + 16 * v);
    for (int j = 0; j < nk; j++)
        for (int v = 0; v < V / 16; v++) {
            const __m512 p = exp512(_mm512_sub_ps(_mm512_loadu_ps(P + j * ATTN_L + 16 * v), b[v]));
            _mm512_storeu_ps(P + j * ATTN_L + 16 * v, p);
            acc[v] = _mm512_add_ps(acc[v], p);
        }
    for (int v = 0; v < V / 16; v++) _mm512_storeu_ps(sum + 16 * v, acc[v]);
}

// row_exp_ds_ref with exp512.
KERNEL row_exp_ds_512(float *restrict P, float *restrict dS, float lr, float D, float scale) {
    const __m512 l = _mm512_set1_ps(lr), d = _mm512_set1_ps(D), sc = _mm512_set1_ps(scale);
    for (int v = 0; v < ATTN_L / 16; v++) {
        const __m512 p = exp512(_mm512_sub_ps(_mm512_loadu_ps(P + 16 * v), l));
        _mm512_storeu_ps(P + 16 * v, p);
        _mm512_storeu_ps(dS + 16 * v, _mm512_mul_ps(sc, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(dS + 16 * v), d))));
    }
}
#else
#define LANES_HAVE_512 0
#endif

// ---- AVX2 twins ----
// The same register tiles for CPUs with AVX2 and FMA but not AVX-512 (AMD Zen 2/3, Intel
// before Skylake-SP): 8-float vectors and 16 registers, so a pass holds 12 accumulators
// (6 rows or head-dimension entries of one 16-lane block, the shape of an AVX2 sgemm
// kernel) where the AVX-512 twins hold 24. The portable loops, vectorised by gcc for AVX2,
// ran the dense forward at ~19 % of 2-thread sgemm on a Zen 3. Every output element is
// again the _ref loops' chain of fmaf in the same order: the same bits on every path.
#if defined(__AVX2__) && defined(__FMA__)
#define LANES_HAVE_256 1

// r[i][j] -> r[j][i] for an 8 x 8 block: pairs interleaved, then quads, then the 128-bit halves.
static inline __attribute__((always_inline)) void tr8x8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c], half H: element 4H + c of rows 4g .. 4g + 3
    for (int g = 0; g < 2; g++) {
        u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

// The first n of 8 lanes, as a maskstore mask.
static inline __attribute__((always_inline)) __m256i lanes_mask256(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// cols_from_rows_ref in 8 x 8 register blocks; a short last block stores its n lanes.
KERNEL cols_from_rows_256(float *restrict XT, size_t xs, const float *const *rows, int n, int Dh, float mul) {
    const __m256 m = _mm256_set1_ps(mul);
    for (int l0 = 0; l0 < n; l0 += 8) {
        const int nl = n - l0 < 8 ? n - l0 : 8;
        const __m256i keep = lanes_mask256(nl);
        for (int e0 = 0; e0 < Dh; e0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < nl ? _mm256_mul_ps(_mm256_loadu_ps(rows[l0 + i] + e0), m) : _mm256_setzero_ps();
            tr8x8(r);
            for (int i = 0; i < 8; i++) {
                if (nl == 8)
                    _mm256_storeu_ps(XT + (e0 + i) * xs + l0, r[i]);
                else
                    _mm256_maskstore_ps(XT + (e0 + i) * xs + l0, keep, r[i]);
            }
        }
    }
}

// rows_out_ref in 8 x 8 register blocks; a short last block reads all 8 lanes (within the
// 16 that rows_from_cols leaves room for) and stores its n rows.
KERNEL rows_out_256(float *const *rows, const float *restrict XT, size_t xs, const float *mul, int n, int Dh,
                    int ADD) {
    for (int l0 = 0; l0 < n; l0 += 8)
        for (int e0 = 0; e0 < Dh; e0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(XT + (e0 + i) * xs + l0);
            tr8x8(r);
            for (int i = 0; i < 8 && l0 + i < n; i++) {
                float *o = rows[l0 + i] + e0;
                _mm256_storeu_ps(o, ADD ? _mm256_add_ps(_mm256_loadu_ps(o), r[i])
                                        : _mm256_mul_ps(r[i], _mm256_set1_ps(mul[l0 + i])));
            }
        }
}

// RW rows (a literal) from row i of lanes_dot over the 16 lanes at X0 / Y0: 2·RW accumulators.
KERNEL lanes_dot_pass_256(float *restrict Y0, const float *restrict X0, const float *const *rows, int i, int Dh,
                          int RW) {
    __m256 a[12];
    for (int u = 0; u < 2 * RW; u++) a[u] = _mm256_setzero_ps();
    for (int e = 0; e < Dh; e++) {
        const __m256 k0 = _mm256_loadu_ps(X0 + e * ATTN_L), k1 = _mm256_loadu_ps(X0 + e * ATTN_L + 8);
        for (int w = 0; w < RW; w++) {
            const __m256 c = _mm256_broadcast_ss(rows[i + w] + e);
            a[2 * w] = _mm256_fmadd_ps(k0, c, a[2 * w]);
            a[2 * w + 1] = _mm256_fmadd_ps(k1, c, a[2 * w + 1]);
        }
    }
    for (int w = 0; w < RW; w++) {
        _mm256_storeu_ps(Y0 + (i + w) * ATTN_L, a[2 * w]);
        _mm256_storeu_ps(Y0 + (i + w) * ATTN_L + 8, a[2 * w + 1]);
    }
}

// lanes_dot over the nv 16-lane blocks from vb, one block at a time: six rows a pass (12
// accumulators, 2 key loads and 6 broadcasts for 12 FMAs), the rest in passes of 4, 2, 1.
KERNEL lanes_dot_256(float *restrict Y, const float *restrict XT, const float *const *rows, int n, int Dh, int vb,
                     int nv) {
    for (int b = vb; b < vb + nv; b++) {
        const float *X0 = XT + b * 16;
        float *Y0 = Y + b * 16;
        int i = 0;
        for (; i + 6 <= n; i += 6) lanes_dot_pass_256(Y0, X0, rows, i, Dh, 6);
        if (n - i >= 4) lanes_dot_pass_256(Y0, X0, rows, i, Dh, 4), i += 4;
        if (n - i >= 2) lanes_dot_pass_256(Y0, X0, rows, i, Dh, 2), i += 2;
        if (n - i >= 1) lanes_dot_pass_256(Y0, X0, rows, i, Dh, 1);
    }
}

// EW entries (a literal) from e of lanes_axpy over the 16 lanes at A0 / W0.
KERNEL lanes_axpy_pass_256(float *restrict A0, const float *restrict W0, const float *const *rows, int n, int e,
                           int EW) {
    __m256 a[12];
    for (int u = 0; u < EW; u++) {
        a[2 * u] = _mm256_loadu_ps(A0 + (e + u) * ATTN_L);
        a[2 * u + 1] = _mm256_loadu_ps(A0 + (e + u) * ATTN_L + 8);
    }
    for (int i = 0; i < n; i++) {
        const __m256 w0 = _mm256_loadu_ps(W0 + i * ATTN_L), w1 = _mm256_loadu_ps(W0 + i * ATTN_L + 8);
        const float *ri = rows[i] + e;
        for (int u = 0; u < EW; u++) {
            const __m256 c = _mm256_broadcast_ss(ri + u);
            a[2 * u] = _mm256_fmadd_ps(w0, c, a[2 * u]);
            a[2 * u + 1] = _mm256_fmadd_ps(w1, c, a[2 * u + 1]);
        }
    }
    for (int u = 0; u < EW; u++) {
        _mm256_storeu_ps(A0 + (e + u) * ATTN_L, a[2 * u]);
        _mm256_storeu_ps(A0 + (e + u) * ATTN_L + 8, a[2 * u + 1]);
    }
}

// lanes_axpy over the nv 16-lane blocks from vb, one block at a time: six e a pass, the
// rest of Dh in passes of 4, 2, 1.
KERNEL lanes_axpy_256(float *restrict AccT, const float *restrict W, const float *const *rows, int n, int Dh,
                      int vb, int nv) {
    for (int b = vb; b < vb + nv; b++) {
        float *A0 = AccT + b * 16;
        const float *W0 = W + b * 16;
        int e = 0;
        for (; e + 6 <= Dh; e += 6) lanes_axpy_pass_256(A0, W0, rows, n, e, 6);
        if (Dh - e >= 4) lanes_axpy_pass_256(A0, W0, rows, n, e, 4), e += 4;
        if (Dh - e >= 2) lanes_axpy_pass_256(A0, W0, rows, n, e, 2), e += 2;
        if (Dh - e >= 1) lanes_axpy_pass_256(A0, W0, rows, n, e, 1);
    }
}

// R rows (a literal) from row x0 of rows_axpy over the 16 head-dimension entries from e0.
KERNEL rows_axpy_pass_256(float *const *Y, const float *restrict P, int px, int pj, const float *mul, int x0,
                          int R, int e0, const float *restrict X, size_t xs, int nk) {
    __m256 a[12];
    for (int w = 0; w < R; w++) {
        const __m256 y0 = _mm256_loadu_ps(Y[x0 + w] + e0), y1 = _mm256_loadu_ps(Y[x0 + w] + e0 + 8);
        const __m256 sc = _mm256_set1_ps(mul ? mul[x0 + w] : 1.0f);
        a[2 * w] = mul ? _mm256_mul_ps(y0, sc) : y0;
        a[2 * w + 1] = mul ? _mm256_mul_ps(y1, sc) : y1;
    }
    for (int j = 0; j < nk; j++) {
        const float *xj = X + (size_t)j * xs + e0;
        const __m256 v0 = _mm256_loadu_ps(xj), v1 = _mm256_loadu_ps(xj + 8);
        for (int w = 0; w < R; w++) {
            const __m256 c = _mm256_broadcast_ss(P + (size_t)(x0 + w) * px + (size_t)j * pj);
            a[2 * w] = _mm256_fmadd_ps(c, v0, a[2 * w]);
            a[2 * w + 1] = _mm256_fmadd_ps(c, v1, a[2 * w + 1]);
        }
    }
    for (int w = 0; w < R; w++) {
        _mm256_storeu_ps(Y[x0 + w] + e0, a[2 * w]);
        _mm256_storeu_ps(Y[x0 + w] + e0 + 8, a[2 * w + 1]);
    }
}

// rows_axpy for Dh a multiple of 16: 16 entries of six rows a pass, the rest in passes of
// 4, 2, 1 rows.
KERNEL rows_axpy_256(float *const *Y, const float *restrict P, int px, int pj, const float *mul, int n,
                     const float *restrict X, size_t xs, int nk, int Dh) {
    for (int e0 = 0; e0 < Dh; e0 += 16) {
        int x0 = 0;
        for (; x0 + 6 <= n; x0 += 6) rows_axpy_pass_256(Y, P, px, pj, mul, x0, 6, e0, X, xs, nk);
        if (n - x0 >= 4) rows_axpy_pass_256(Y, P, px, pj, mul, x0, 4, e0, X, xs, nk), x0 += 4;
        if (n - x0 >= 2) rows_axpy_pass_256(Y, P, px, pj, mul, x0, 2, e0, X, xs, nk), x0 += 2;
        if (n - x0 >= 1) rows_axpy_pass_256(Y, P, px, pj, mul, x0, 1, e0, X, xs, nk);
    }
}

// nsa_expf for 8 floats, its operations in its order (the same bits; the clamp's order
// differs only for NaN, whose result is x either way). 2^n is built in the exponent field
// as nsa_expf builds it.
static inline __attribute__((always_inline)) __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f), magic = _mm256_set1_ps(12582912.0f);
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)), magic), magic);
    const __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), xc));
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// exp256 of four vectors, each operation applied to all four before the next (the same
// operations on each, so the same bits). One exponential is a chain of ~20 dependent
// operations. Measured on Zen 3 (hot 64 x 64 block, median of 41 interleaved trials
// against the keys-inner loop, which kept all eight bases and sums of a row in registers
// and spilled: 87 stack accesses in the loop): one lane vector at a time with the chains
// one after another 0.97x the time, interleaved by two 0.87x, by four 0.80x, by eight
// (past the 16 ymm registers) 1.03x.
#define EXP4 for (int k = 0; k < 4; k++)
static inline __attribute__((always_inline)) void exp256x4(__m256 x[4]) {
    const __m256 lo = _mm256_set1_ps(-87.0f), magic = _mm256_set1_ps(12582912.0f);
    __m256 n[4], r[4], p[4];
    __m256i e[4];
    EXP4 r[k] = _mm256_min_ps(_mm256_max_ps(x[k], lo), _mm256_set1_ps(88.0f));
    EXP4 n[k] = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(r[k], _mm256_set1_ps(1.44269504088896341f)), magic), magic);
    EXP4 r[k] = _mm256_fmadd_ps(n[k], _mm256_set1_ps(-0.693359375f), r[k]);
    EXP4 r[k] = _mm256_fmadd_ps(n[k], _mm256_set1_ps(2.12194440e-4f), r[k]);
    EXP4 e[k] = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n[k]), _mm256_set1_epi32(127)), 23);
    EXP4 p[k] = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r[k], _mm256_set1_ps(1.3981999507e-3f));
    EXP4 p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(8.3334519073e-3f));
    EXP4 p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(4.1665795894e-2f));
    EXP4 p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(1.6666665459e-1f));
    EXP4 p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(5.0000001201e-1f));
    EXP4 p[k] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p[k], r[k]), r[k], r[k]), _mm256_set1_ps(1.0f));
    EXP4 p[k] = _mm256_andnot_ps(_mm256_cmp_ps(x[k], lo, _CMP_LT_OQ), _mm256_mul_ps(p[k], _mm256_castsi256_ps(e[k])));
    EXP4 x[k] = _mm256_blendv_ps(p[k], x[k], _mm256_cmp_ps(x[k], x[k], _CMP_UNORD_Q));
}

// lanes_exp_sum_ref with exp256; V a multiple of 16. One vector of lanes at a time over its
// keys, four keys interleaved (exp256x4): the sum of each lane still adds its keys in order.
KERNEL lanes_exp_sum_256(float *restrict P, float *restrict sum, const float *restrict base, int nk, int V) {
    for (int v = 0; v < V / 8; v++) {
        const __m256 b = _mm256_loadu_ps(base + 8 * v);
        __m256 acc = _mm256_loadu_ps(sum + 8 * v);
        int j = 0;
        for (; j + 4 <= nk; j += 4) {
            __m256 x[4];
            EXP4 x[k] = _mm256_sub_ps(_mm256_loadu_ps(P + (j + k) * ATTN_L + 8 * v), b);
            exp256x4(x);
            EXP4 _mm256_storeu_ps(P + (j + k) * ATTN_L + 8 * v, x[k]), acc = _mm256_add_ps(acc, x[k]);
        }
        for (; j < nk; j++) {
            const __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(P + j * ATTN_L + 8 * v), b));
            _mm256_storeu_ps(P + j * ATTN_L + 8 * v, p);
            acc = _mm256_add_ps(acc, p);
        }
        _mm256_storeu_ps(sum + 8 * v, acc);
    }
}

// Lanes j .. j + 7 of row_exp_ds_mask from their exponentials p: P = p and dS = scale · p ·
// (dS − D) where jlo <= lane < jhi (as not (jlo > lane) and (jhi > lane)), 0 elsewhere.
static inline __attribute__((always_inline)) void masked_p_ds_256(float *restrict P, float *restrict dS, int j,
                                                                  __m256 p, __m256i lo, __m256i hi, __m256 d,
                                                                  __m256 sc) {
    const __m256i jv = _mm256_add_epi32(_mm256_set1_epi32(j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 vis = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(lo, jv), _mm256_cmpgt_epi32(hi, jv)));
    _mm256_storeu_ps(P + j, _mm256_and_ps(vis, p));
    _mm256_storeu_ps(dS + j, _mm256_and_ps(vis, _mm256_mul_ps(sc, _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dS + j), d)))));
}

// row_exp_ds_mask_ref with exp256, the visibility as an integer compare (gcc left the
// portable loop scalar for AVX2: ~15 % of the attention backward in a training profile);
// four vectors at a time interleaved (exp256x4), the rest one by one.
KERNEL row_exp_ds_mask_256(float *restrict P, float *restrict dS, float lr, float D, float scale, int j0, int j1,
                           int jlo, int jhi) {
    const __m256 l = _mm256_set1_ps(lr), d = _mm256_set1_ps(D), sc = _mm256_set1_ps(scale);
    const __m256i lo = _mm256_set1_epi32(jlo), hi = _mm256_set1_epi32(jhi);
    int j = j0;
    for (; j + 32 <= j1; j += 32) {
        __m256 x[4];
        EXP4 x[k] = _mm256_sub_ps(_mm256_loadu_ps(P + j + 8 * k), l);
        exp256x4(x);
        EXP4 masked_p_ds_256(P, dS, j + 8 * k, x[k], lo, hi, d, sc);
    }
    for (; j < j1; j += 8) masked_p_ds_256(P, dS, j, exp256(_mm256_sub_ps(_mm256_loadu_ps(P + j), l)), lo, hi, d, sc);
}

// row_exp_ds_ref with exp256, four vectors at a time interleaved (exp256x4).
KERNEL row_exp_ds_256(float *restrict P, float *restrict dS, float lr, float D, float scale) {
    const __m256 l = _mm256_set1_ps(lr), d = _mm256_set1_ps(D), sc = _mm256_set1_ps(scale);
    for (int v0 = 0; v0 < ATTN_L / 8; v0 += 4) {
        __m256 x[4];
        EXP4 x[k] = _mm256_sub_ps(_mm256_loadu_ps(P + 8 * (v0 + k)), l);
        exp256x4(x);
        EXP4 {
            _mm256_storeu_ps(P + 8 * (v0 + k), x[k]);
            _mm256_storeu_ps(dS + 8 * (v0 + k), _mm256_mul_ps(sc, _mm256_mul_ps(x[k], _mm256_sub_ps(_mm256_loadu_ps(dS + 8 * (v0 + k)), d))));
        }
    }
}
#undef EXP4
#else
#define LANES_HAVE_256 0
#endif

// The twins the kernels take: the path attn_setup chose (or a test set), and by default
// the fastest one compiled in (a binary built with AVX-512 or AVX2 code generation runs
// only on such CPUs anyway).
static inline AttnPath lanes_path(void) {
    const AttnPath p = (AttnPath)nsa_cpu.attn_path;
    if (p != ATTN_PATH_AUTO) return p;
    return LANES_HAVE_512 ? ATTN_PATH_AVX512 : LANES_HAVE_256 ? ATTN_PATH_AVX2 : ATTN_PATH_REF;
}
static inline int lanes_512(void) { return LANES_HAVE_512 && lanes_path() == ATTN_PATH_AVX512; }
static inline int lanes_256(void) { return LANES_HAVE_256 && lanes_path() == ATTN_PATH_AVX2; }

// `f512` where the AVX-512 twins are chosen and `cond` holds, `f256` where the AVX2 twins
// are, else `ref`. A twin not compiled in is not expanded.
#if LANES_HAVE_512
#define LANES_ON512(...) __VA_ARGS__
#else
#define LANES_ON512(...)
#endif
#if LANES_HAVE_256
#define LANES_ON256(...) __VA_ARGS__
#else
#define LANES_ON256(...)
#endif
#define LANES_PICK(cond, f512, f256, ref)               \
    do {                                                \
        if (LANES_HAVE_512 && lanes_512() && (cond)) {  \
            LANES_ON512(f512);                          \
        } else if (lanes_256() && (cond)) {             \
            LANES_ON256(f256);                          \
        } else {                                        \
            ref;                                        \
        }                                               \
    } while (0)

// NV_ = nv (1..4) as a literal, so that the AVX-512 twins keep their accumulators in registers.
#define LANES_NV(nv, call)                  \
    switch (nv) {                           \
    case 1: { const int NV_ = 1; call; break; } \
    case 2: { const int NV_ = 2; call; break; } \
    case 3: { const int NV_ = 3; call; break; } \
    default: { const int NV_ = 4; call; break; } \
    }

// The lanes of vectors [vb, vb + nv) only (nv 1..4): the backward's key blocks on a causal
// or window edge, whose other lanes every row of the tile has masked. Skipped lanes would
// only add fmaf(0, x, acc) = acc, so the results have the same bits as the 64-lane call.
KERNEL lanes_dot_part(float *restrict Y, const float *restrict XT, const float *const *rows, int n, int Dh, int vb,
                      int nv) {
    LANES_PICK(1, LANES_NV(nv, lanes_dot_512(Y, XT, rows, n, Dh, vb, NV_)), lanes_dot_256(Y, XT, rows, n, Dh, vb, nv),
               lanes_dot_ref(Y, XT, rows, n, Dh, vb, nv));
}

KERNEL lanes_axpy_part(float *restrict AccT, const float *restrict W, const float *const *rows, int n, int Dh, int vb,
                       int nv) {
    LANES_PICK(1, LANES_NV(nv, lanes_axpy_512(AccT, W, rows, n, Dh, vb, NV_)), lanes_axpy_256(AccT, W, rows, n, Dh, vb, nv),
               lanes_axpy_ref(AccT, W, rows, n, Dh, vb, nv));
}

// P[j][x] = exp(P[j][x] - base[x]) and sum[x] += them in order of j, for j < nk and
// lanes x < V (16, 32, 48 or 64).
KERNEL lanes_exp_sum(float *restrict P, float *restrict sum, const float *restrict base, int nk, int V) {
    LANES_PICK(1, lanes_exp_sum_512(P, sum, base, nk, V), lanes_exp_sum_256(P, sum, base, nk, V),
               lanes_exp_sum_ref(P, sum, base, nk, V));
}

// See row_exp_ds_ref.
KERNEL row_exp_ds(float *restrict P, float *restrict dS, float lr, float D, float scale) {
    LANES_PICK(1, row_exp_ds_512(P, dS, lr, D, scale), row_exp_ds_256(P, dS, lr, D, scale),
               row_exp_ds_ref(P, dS, lr, D, scale));
}

// See row_exp_ds_mask_ref.
KERNEL row_exp_ds_mask(float *restrict P, float *restrict dS, float lr, float D, float scale, int j0, int j1, int jlo,
                       int jhi) {
    // No AVX-512 twin: gcc vectorises the portable loop with masks for AVX-512, and a twin
    // (exp512, the visibility as a lane mask, invisible vectors skipped; the same bits)
    // measured 0.995x the window backward's time at `small`'s training shape and 1.00x at
    // 8k, w 512 (Zen 4, 2 threads, 30 and 10 interleaved trials), so it was not kept.
    LANES_PICK(1, row_exp_ds_mask_ref(P, dS, lr, D, scale, j0, j1, jlo, jhi),
               row_exp_ds_mask_256(P, dS, lr, D, scale, j0, j1, jlo, jhi),
               row_exp_ds_mask_ref(P, dS, lr, D, scale, j0, j1, jlo, jhi));
}

// The transposes need Dh a multiple of 16.
KERNEL cols_from_rows(float *restrict XT, size_t xs, const float *const *rows, int n, int Dh, float mul) {
    LANES_PICK(Dh % 16 == 0, cols_from_rows_512(XT, xs, rows, n, Dh, mul), cols_from_rows_256(XT, xs, rows, n, Dh, mul),
               cols_from_rows_ref(XT, xs, rows, n, Dh, mul));
}

// rows[l][e] = XT[e * xs + l] * mul[l] for l < n; xs - n >= 16 - n % 16 when n is not a
// multiple of 16 (the last block reads whole vectors).
KERNEL rows_from_cols(float *const *rows, const float *restrict XT, size_t xs, const float *mul, int n, int Dh) {
    LANES_PICK(Dh % 16 == 0, rows_out_512(rows, XT, xs, mul, n, Dh, 0), rows_out_256(rows, XT, xs, mul, n, Dh, 0),
               rows_out_ref(rows, XT, xs, mul, n, Dh, 0));
}

// rows[l][e] += XT[e * xs + l] for l < n (xs as for rows_from_cols).
KERNEL rows_add_cols(float *const *rows, const float *restrict XT, size_t xs, int n, int Dh) {
    LANES_PICK(Dh % 16 == 0, rows_out_512(rows, XT, xs, NULL, n, Dh, 1), rows_out_256(rows, XT, xs, NULL, n, Dh, 1),
               rows_out_ref(rows, XT, xs, NULL, n, Dh, 1));
}

// XT[e][l] = mul * rows[l][e] for l < n, 0 for the other lanes of the 64.
KERNEL lanes_transpose(float *restrict XT, const float *const *rows, int n, int Dh, float mul) {
    cols_from_rows(XT, ATTN_L, rows, n, Dh, mul);
    for (int e = 0; e < Dh; e++)
        for (int l = n; l < ATTN_L; l++) XT[e * ATTN_L + l] = 0.0f;
}

// rows[l][e] = XT[e][l] * mul[l] for l < n.
KERNEL lanes_untranspose(float *const *rows, const float *restrict XT, const float *mul, int n, int Dh) {
    rows_from_cols(rows, XT, ATTN_L, mul, n, Dh);
}

KERNEL lanes_dot(float *restrict Y, const float *restrict XT, const float *const *rows, int n, int Dh) {
    LANES_PICK(1, lanes_dot_512(Y, XT, rows, n, Dh, 0, 4), lanes_dot_256(Y, XT, rows, n, Dh, 0, 4),
               lanes_dot_ref(Y, XT, rows, n, Dh, 0, 4));
}

KERNEL lanes_axpy(float *restrict AccT, const float *restrict W, const float *const *rows, int n, int Dh) {
    LANES_PICK(1, lanes_axpy_512(AccT, W, rows, n, Dh, 0, 4), lanes_axpy_256(AccT, W, rows, n, Dh, 0, 4),
               lanes_axpy_ref(AccT, W, rows, n, Dh, 0, 4));
}

// Y[x] += Σ_j P[x][j] X[j] (P row-major, ATTN_L floats a row): see rows_axpy_ref.
KERNEL rows_axpy(float *const *Y, const float *restrict P, int n, const float *restrict X, size_t xs, int nk,
                 int Dh) {
    LANES_PICK(Dh % 16 == 0 && Dh <= 256, rows_axpy_512(Y, P, ATTN_L, 1, NULL, n, X, xs, nk, Dh),
               rows_axpy_256(Y, P, ATTN_L, 1, NULL, n, X, xs, nk, Dh),
               rows_axpy_ref(Y, P, ATTN_L, 1, NULL, n, X, xs, nk, Dh));
}

// Y[x] = Y[x] · mul[x] + Σ_j PT[j][x] X[j] (PT transposed: ATTN_L floats a key): see rows_axpy_ref.
KERNEL rows_axpy_t(float *const *Y, const float *restrict PT, const float *mul, int n, const float *restrict X,
                   size_t xs, int nk, int Dh) {
    LANES_PICK(Dh % 16 == 0 && Dh <= 256, rows_axpy_512(Y, PT, 1, ATTN_L, mul, n, X, xs, nk, Dh),
               rows_axpy_256(Y, PT, 1, ATTN_L, mul, n, X, xs, nk, Dh),
               rows_axpy_ref(Y, PT, 1, ATTN_L, mul, n, X, xs, nk, Dh));
}

#endif
