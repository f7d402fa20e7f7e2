// nsa_select.h: top-n block selection of the selected branch (DESIGN.md, Eq. 9-10).
#ifndef NSA_NSA_SELECT_H
#define NSA_NSA_SELECT_H

#include "kernels/nsa_shape.h"

// p_cmp is recomputed from q, kc and the compressed branch's lse (p = exp(score - lse)).
// idx [B, T, G, n] int32: selected block ids ascending, -1 padding. Not differentiable.
size_t nsa_select_work_bytes(const NsaShape *s);
void nsa_select(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                const NsaShape *s);

// Top-n of query position t (Eq. 9 over the compressed blocks visible to t among
// nsa_n_cmp(s), forced blocks, ties to the lower id) from pg [Nc], p_cmp summed over the
// group's heads (Eq. 10); out [n] ascending, -1 padding; ps [t / l' + 1] is scratch.
// Decoding calls it with s->T = the cached length, so Nc counts the complete blocks.
void nsa_select_top(int32_t *out, const float *pg, float *ps, int t, const NsaShape *s);

#endif
