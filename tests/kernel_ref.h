// kernel_ref.h: what the kernel tests share: random inputs, float-vs-double error measures,
// a naive double softmax-attention row and NSA shapes.
#ifndef NSA_TEST_KERNEL_REF_H
#define NSA_TEST_KERNEL_REF_H

#include <stddef.h>

#include "kernels/nsa_shape.h"
#include "kernels/rng.h"

float *kref_randn(Rng *r, size_t n, float scale);  // N(0, scale²), nsa_malloc'd
float *kref_zeros(size_t n);
double *kref_dzeros(size_t n);
float *kref_copy(const float *x, size_t n);

// max|a - ref| / max|ref| (ref == 0 everywhere: max|a|). -INFINITY entries must match
// exactly; any other mismatch or NaN gives +inf.
double kref_rel_err(const float *a, const double *ref, size_t n);
double kref_rel_err_ff(const float *a, const float *ref, size_t n);

// Softmax attention of one query over key rows keys[0..nkeys) of kv_k/kv_v (row stride
// G*Dh), in double: o [Dh], *lse; with dq != NULL also dq += , dk += , dv += for upstream
// gradient doh. No key: o = 0, lse = -INFINITY.
void kref_attention_row(double *o, double *lse, double *dq, double *dk, double *dv, const float *qh,
                        const float *doh, const float *kv_k, const float *kv_v, const int *keys, int nkeys,
                        int G, int Dh);

// An NsaShape with window 32; the sizes are the caller's to keep valid (config_validate's
// rules: d divides l and l', H % G == 0).
NsaShape kref_nsa_shape(int B, int T, int H, int G, int Dh, int l, int d, int lp, int n);

#endif
