// nsa_decode.h: the NSA compressed branch and block selection for query rows at positions
// [p0, p0 + m) of one sequence (decoding and prefill), and the compression input of newly
// complete blocks read from the sequence's pool pages.
#ifndef NSA_NSA_DECODE_H
#define NSA_NSA_DECODE_H

#include "kernels/attn_paged.h"
#include "kernels/nsa_shape.h"

// s describes the sequence as cached: s->B = 1, s->T = p0 + m (its length once the rows are
// in), so nsa_n_cmp(s) is the number of complete compressed blocks; q, o [m, H, Dh],
// lse [m, H]; kc, vc [nsa_n_cmp(s), G, Dh]. Row i (position p0 + i) sees the blocks visible to
// its position, exactly as nsa_cmp_attn_forward's row p0 + i.
void nsa_cmp_decode_forward(float *o, float *lse, const float *q, const float *kc,
                            const float *vc, int p0, int m, const NsaShape *s);
// idx [m, G, n]: the selection nsa_select makes for rows p0 .. p0 + m - 1 from the same
// p_cmp (recomputed from q, kc and the compressed branch's lse, with the same order of sums:
// nsa_select_rows).
size_t nsa_select_decode_work_bytes(int m, const NsaShape *s);
void nsa_select_decode(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                       int p0, int m, const NsaShape *s);

// Compression input of blocks i0 .. i0 + nb - 1 from keys (or values) in the pool:
// blocks [nb, G, l*Dh] = token-major block rows plus pe [l, Dh] (NULL: none), as
// nsa_cmp_gather_forward; and cmp_fn=mean, out [nb, G, Dh] as nsa_cmp_mean_forward (same
// summation order). kv->k is the array read (kv->v unused).
void nsa_cmp_gather_paged(float *blocks, const KvPaged *kv, const float *pe, int i0, int nb,
                          const NsaShape *s);
void nsa_cmp_mean_paged(float *out, const KvPaged *kv, int i0, int nb, const NsaShape *s);

#endif
