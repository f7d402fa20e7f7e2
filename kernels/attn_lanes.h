// attn_lanes.h: the 64-lane building blocks of the attention kernels (attention.c, nsa_slc.c).
// "Lanes" are the rows of a query tile or the keys of a key block; an [Dh][64] array holds
// one vector of Dh floats per lane, transposed. Every kernel is always_inline with Dh as a
// parameter; callers wrap them in DISPATCH_DH so that gcc unrolls the usual head sizes.
#ifndef NSA_ATTN_LANES_H
#define NSA_ATTN_LANES_H

#include <math.h>

#include "kernels/attention.h"

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

// XT[e][l] = mul * rows[l][e] for l < n, 0 for the other lanes.
KERNEL lanes_transpose(float *restrict XT, const float *const *rows, int n, int Dh, float mul) {
    for (int l = 0; l < ATTN_L; l++) {
        if (l < n)
            for (int e = 0; e < Dh; e++) XT[e * ATTN_L + l] = rows[l][e] * mul;
        else
            for (int e = 0; e < Dh; e++) XT[e * ATTN_L + l] = 0.0f;
    }
}

// The 64 lanes are walked as LANE_V consecutive lanes times 64 / LANE_V blocks (block loop
// inner): gcc then keeps every accumulator in a vector register and broadcasts the scalar
// operand, where the plain 64-lane loop got stack accumulators and gathers.
#define LANE_V 16

// Y[i][l] = Σ_e XT[e][l] rows[i][e] for i < n: 64 dot products per row, four rows per pass
// sharing the XT loads (16 vector accumulators: one load feeds four FMAs).
KERNEL lanes_dot(float *restrict Y, const float *restrict XT, const float *const *rows, int n,
                 int Dh) {
    for (int i = 0; i < n; i += 4) {
        const float *x0 = rows[i], *x1 = rows[i + 1 < n ? i + 1 : i];
        const float *x2 = rows[i + 2 < n ? i + 2 : i], *x3 = rows[i + 3 < n ? i + 3 : i];
        float a0[ATTN_L], a1[ATTN_L], a2[ATTN_L], a3[ATTN_L];
        for (int l = 0; l < ATTN_L; l++) a0[l] = a1[l] = a2[l] = a3[l] = 0.0f;
        for (int e = 0; e < Dh; e++) {
            const float *xe = XT + e * ATTN_L;
            const float c0 = x0[e], c1 = x1[e], c2 = x2[e], c3 = x3[e];
            for (int l = 0; l < LANE_V; l++)
                for (int b = 0; b < ATTN_L; b += LANE_V) {
                    a0[b + l] = fmaf(xe[b + l], c0, a0[b + l]);
                    a1[b + l] = fmaf(xe[b + l], c1, a1[b + l]);
                    a2[b + l] = fmaf(xe[b + l], c2, a2[b + l]);
                    a3[b + l] = fmaf(xe[b + l], c3, a3[b + l]);
                }
        }
        for (int l = 0; l < ATTN_L; l++) Y[i * ATTN_L + l] = a0[l];
        if (i + 1 < n)
            for (int l = 0; l < ATTN_L; l++) Y[(i + 1) * ATTN_L + l] = a1[l];
        if (i + 2 < n)
            for (int l = 0; l < ATTN_L; l++) Y[(i + 2) * ATTN_L + l] = a2[l];
        if (i + 3 < n)
            for (int l = 0; l < ATTN_L; l++) Y[(i + 3) * ATTN_L + l] = a3[l];
    }
}

// AccT[e][l] += Σ_i W[i][l] rows[i][e] for i < n, in order of i: the transposed
// accumulation of Σ_i w_i ⊗ row_i, four e per pass sharing the W loads.
KERNEL lanes_axpy(float *restrict AccT, const float *restrict W, const float *const *rows,
                  int n, int Dh) {
    for (int e = 0; e < Dh; e += 4) {
        const int e1 = e + 1 < Dh ? e + 1 : e, e2 = e + 2 < Dh ? e + 2 : e, e3 = e + 3 < Dh ? e + 3 : e;
        float a0[ATTN_L], a1[ATTN_L], a2[ATTN_L], a3[ATTN_L];
        for (int l = 0; l < ATTN_L; l++)
            a0[l] = AccT[e * ATTN_L + l], a1[l] = AccT[e1 * ATTN_L + l], a2[l] = AccT[e2 * ATTN_L + l], a3[l] = AccT[e3 * ATTN_L + l];
        for (int i = 0; i < n; i++) {
            const float *wi = W + i * ATTN_L;
            const float c0 = rows[i][e], c1 = rows[i][e1], c2 = rows[i][e2], c3 = rows[i][e3];
            for (int l = 0; l < LANE_V; l++)
                for (int b = 0; b < ATTN_L; b += LANE_V) {
                    a0[b + l] = fmaf(wi[b + l], c0, a0[b + l]);
                    a1[b + l] = fmaf(wi[b + l], c1, a1[b + l]);
                    a2[b + l] = fmaf(wi[b + l], c2, a2[b + l]);
                    a3[b + l] = fmaf(wi[b + l], c3, a3[b + l]);
                }
        }
        // Past Dh the e's repeat e: write them first so that a0 wins.
        for (int l = 0; l < ATTN_L; l++) AccT[e3 * ATTN_L + l] = a3[l];
        for (int l = 0; l < ATTN_L; l++) AccT[e2 * ATTN_L + l] = a2[l];
        for (int l = 0; l < ATTN_L; l++) AccT[e1 * ATTN_L + l] = a1[l];
        for (int l = 0; l < ATTN_L; l++) AccT[e * ATTN_L + l] = a0[l];
    }
}

// Y[x] += Σ_j P[x][j] X[j] for rows x < n (Y[x] a plain row of Dh floats, P row-major with
// ATTN_L floats per row, keys j < nk in order, X rows at stride xs): dQ += dS·K with the
// head dimension in the vectors. R rows per pass share each X load (R·Dh accumulators, 16
// vectors of 16 floats); rows past n repeat the last one and are stored first, so the real
// row's store wins.
KERNEL rows_axpy(float *const *Y, const float *restrict P, int n, const float *restrict X, size_t xs, int nk,
                 int Dh) {
    enum { RMAX = 16 };
    const int R = Dh >= 256 ? 1 : Dh >= 128 ? 2 : Dh >= 64 ? 4 : Dh >= 32 ? 8 : RMAX;
    for (int x0 = 0; x0 < n; x0 += R) {
        int xr[RMAX];
        float a[R][Dh];
        for (int w = 0; w < R; w++) {
            xr[w] = x0 + w < n ? x0 + w : n - 1;
            for (int e = 0; e < Dh; e++) a[w][e] = Y[xr[w]][e];
        }
        for (int j = 0; j < nk; j++) {
            const float *xj = X + (size_t)j * xs;
            for (int w = 0; w < R; w++) {
                const float c = P[xr[w] * ATTN_L + j];
#pragma omp simd
                for (int e = 0; e < Dh; e++) a[w][e] = fmaf(c, xj[e], a[w][e]);
            }
        }
        for (int w = R - 1; w >= 0; w--)
            for (int e = 0; e < Dh; e++) Y[xr[w]][e] = a[w][e];
    }
}

#endif
