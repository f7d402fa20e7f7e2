// gemm.h: the only place that calls BLAS. Row-major float32, y = x Wᵀ convention of
// nn.Linear; the backward forms accumulate.
#ifndef NSA_GEMM_H
#define NSA_GEMM_H

#include <stdint.h>

// y[n, out] = x[n, in] · W[out, in]ᵀ
void gemm_xwt(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out);
// dx[n, in] (+)= dy[n, out] · W[out, in]: adds to dx when acc, else overwrites it (dx may
// then hold garbage; the bits are those of adding to zeros).
void gemm_dx(float *dx, const float *dy, const float *w, int64_t n, int64_t in, int64_t out, int acc);
// dW[out, in] += dy[n, out]ᵀ · x[n, in]
void gemm_dw_acc(float *dw, const float *dy, const float *x, int64_t n, int64_t in, int64_t out);

// Measured sgemm GFLOP/s of an n×n by n×n product with `threads` threads, each running one
// single-threaded OpenBLAS call on its share of the rows (as the wrappers above run): best
// of at least 10 calls and 0.3 s after a warm-up call. The yardstick of `nsa bench attn` and
// `nsa bench train`.
double gemm_measure_gflops(int n, int threads);

#endif
