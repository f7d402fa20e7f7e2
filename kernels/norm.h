// norm.h: RMSNorm over the last dimension, y = x / sqrt(mean(x²) + eps) · w (DESIGN.md).
#ifndef NSA_NORM_H
#define NSA_NORM_H

#include <stdint.h>

// y, x [rows, d]; w [d]; rstd [rows] receives 1 / sqrt(mean(x²) + eps) for backward.
// Rows are independent: one decode token is rows = 1.
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int64_t rows, int64_t d,
                     float eps);
// dx [rows, d] += ∂L/∂x and dw [d] += ∂L/∂w; either may be NULL (not wanted).
void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int64_t rows, int64_t d);

#endif
