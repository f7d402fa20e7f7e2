// nsa_cmp.h: the compressed branch (DESIGN.md "Compressed branch"): compression input
// (block gather with position encoding, or mean pooling) and compressed attention.
#ifndef NSA_NSA_CMP_H
#define NSA_NSA_CMP_H

#include "kernels/nsa_shape.h"

// ---- Compression input ----
// blocks [B, Nc, G, l*Dh]: blocks[b,i,g, j*Dh+e] = x[b, i*d+j, g, e] + (pe ? pe[j*Dh+e] : 0);
// x [B, T, G, Dh]; pe [l, Dh] may be NULL.
void nsa_cmp_gather_forward(float *blocks, const float *x, const float *pe, const NsaShape *s);
// dx += scatter of dblocks (token-parallel); dpe (NULL ok) += dblocks summed over b, i, g.
void nsa_cmp_gather_backward(float *dx, float *dpe, const float *dblocks, const NsaShape *s);
// cmp_fn=mean: out [B, Nc, G, Dh] = mean of the l tokens of block i.
void nsa_cmp_mean_forward(float *out, const float *x, const NsaShape *s);
void nsa_cmp_mean_backward(float *dx, const float *dout, const NsaShape *s);

// ---- Compressed attention ----
// kc, vc [B, Nc, G, Dh]. Block i is visible to t iff i*d + l - 1 <= t. A query with no
// visible block gets o = 0, lse = -INFINITY and contributes no gradient.
void nsa_cmp_attn_forward(float *o, float *lse, const float *q, const float *kc,
                          const float *vc, const NsaShape *s);
size_t nsa_cmp_attn_backward_work_bytes(const NsaShape *s);
void nsa_cmp_attn_backward(float *dq, float *dkc, float *dvc, const float *dout, const float *q,
                           const float *kc, const float *vc, const float *o, const float *lse,
                           void *work, const NsaShape *s);

#endif
