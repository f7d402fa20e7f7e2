// act.h: elementwise kernels over n floats: SiLU, SwiGLU's gated product, add.
// Backward accumulates (+=); a NULL gradient pointer means "not wanted".
#ifndef NSA_ACT_H
#define NSA_ACT_H

#include <stdint.h>

// y = x · sigmoid(x)
void silu_forward(float *y, const float *x, int64_t n);
void silu_backward(float *dx, const float *dy, const float *x, int64_t n);
// y = silu(a) · b (SwiGLU's inner product, DESIGN.md: w2(silu(w1 x) * w3 x))
void swiglu_forward(float *y, const float *a, const float *b, int64_t n);
void swiglu_backward(float *da, float *db, int acc, const float *dy, const float *a, const float *b, int64_t n);
// y = a + b
void add_forward(float *y, const float *a, const float *b, int64_t n);
void add_backward(float *da, float *db, const float *dy, int64_t n);
void add_backward_fresh(float *da, int fa, float *db, int fb, const float *dy, int64_t n);

#endif
