// linear.h: y = x Wᵀ + b (nn.Linear's convention, W [out, in]) on top of gemm.h, bias
// included, forward and backward.
#ifndef NSA_LINEAR_H
#define NSA_LINEAR_H

#include <stdint.h>

// y [rows, out] = x [rows, in] · W [out, in]ᵀ (+ b [out] when b != NULL).
void linear_forward(float *y, const float *x, const float *w, const float *b, int64_t rows, int64_t in,
                    int64_t out);
// The same with W as Q4_K rows (kernels/q4k.h: `out` rows of q4k_row_bytes(in) bytes), through
// the fused dequant-matmul: W is never expanded to float32. Each row of y is independent of
// `rows` and of the thread count. Forward only (quantized weights are never trained).
void linear_forward_q4k(float *y, const float *x, const uint8_t *wq, const float *b, int64_t rows, int64_t in,
                        int64_t out);
// dx [rows, in] += dy · W (= when !dx_acc: a fresh buffer, overwritten), dw [out, in] += dyᵀ · x,
// db [out] += Σ_rows dy; any may be NULL.
void linear_backward(float *dx, int dx_acc, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int64_t rows, int64_t in, int64_t out);

#endif
