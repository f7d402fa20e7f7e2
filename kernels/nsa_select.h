// nsa_select.h: top-n block selection of the selected branch (DESIGN.md, Eq. 9-10).
#ifndef NSA_NSA_SELECT_H
#define NSA_NSA_SELECT_H

#include "kernels/nsa_shape.h"

// p_cmp is recomputed from q, kc and the compressed branch's lse (p = exp(score - lse)).
// idx [B, T, G, n] int32: selected block ids ascending, -1 padding. Not differentiable.
size_t nsa_select_work_bytes(const NsaShape *s);
void nsa_select(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                const NsaShape *s);

#endif
