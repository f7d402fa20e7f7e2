// nsa_ref.h: materialising reference of the selected branch (tests and `hangcheck` only,
// never training).
#ifndef NSA_NSA_REF_H
#define NSA_NSA_REF_H

#include "kernels/nsa_shape.h"

// Copies the selected K/V rows of every query into its own [n*l', Dh] buffer (the
// O(T*n*l'*Dh) memory safe packing avoids), runs plain two-pass softmax attention, and
// scatters dK/dV back serially. Serial throughout. Same contract as nsa_slc.h.
size_t nsa_slc_attn_ref_work_bytes(const NsaShape *s);
void nsa_slc_attn_forward_ref(float *o, float *lse, const float *q, const float *k,
                              const float *v, const int32_t *idx, void *work, const NsaShape *s);
void nsa_slc_attn_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const int32_t *idx, void *work, const NsaShape *s);

#endif
