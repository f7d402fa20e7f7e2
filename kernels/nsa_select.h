// nsa_select.h: top-n block selection of the selected branch (DESIGN.md, Eq. 9-10).
#ifndef NSA_NSA_SELECT_H
#define NSA_NSA_SELECT_H

#include "kernels/nsa_shape.h"

// p_cmp is recomputed from q, kc and the compressed branch's lse (p = exp(score - lse)).
// idx [B, T, G, n] int32: selected block ids ascending, -1 padding. Not differentiable.
// The order of the sums, which every selection here shares (so the fused forward, this
// reference twin and decoding pick the same blocks bit for bit): per query row, the
// compressed blocks of each chunk of 64 are pooled into the selection blocks they overlap
// as exp(score − base) with the chunk's running-maximum base (each distinct compressed
// block of a window once, ascending, weighted by the number of Eq. 9's (m, nn) that reach
// it, fmaf from +0); each pool is scaled by exp(base − lse) and the chunks touching a block
// added in order (fmaf); then the group's heads are added in head order (Eq. 10).
size_t nsa_select_work_bytes(const NsaShape *s);
void nsa_select(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                const NsaShape *s);

// The selection of nt consecutive query rows i0 .. i0 + nt - 1 of batch b (q and lse hold Tq
// rows a batch; row i is query position p0 + i) and KV group g, nt <= ATTN_ROWS / min(H/G,
// ATTN_ROWS), exactly as nsa_select computes it for those positions; out gets row i0's
// choice, the next rows' at strides of G·n. Decoding calls it with s->T = the cached length,
// so Nc counts the complete blocks. scratch: nsa_select_rows_floats(s) floats.
size_t nsa_select_rows_floats(const NsaShape *s);
void nsa_select_rows(int32_t *out, const float *q, const float *kc, const float *lse, int b, int Tq, int i0, int nt,
                     int p0, int g, float *scratch, const NsaShape *s);

// ps[i] += Σ_h ph[h·nt + i] for positions i < nt, heads in order: the head sum (Eq. 10) of
// every selection here, whose query tiles are head-major. Exposed for the test that holds
// its order of additions.
void nsa_select_add_heads(float *ps, const float *ph, int hb, int nt);

// The compressed branch's forward with the selection in the same pass: per query tile, the
// online softmax over the visible compressed blocks (o, lse bit-identical to
// nsa_cmp_attn_forward) pools each chunk's probabilities into selection blocks while they
// are in registers, and the pools scaled by exp(base − lse) once lse is known give idx,
// identical to nsa_select's. The compressed keys are read once, where nsa_select reads them
// again, and a tile row keeps about Nc·d/l' pooled floats rather than Nc probabilities.
size_t nsa_cmp_select_work_bytes(const NsaShape *s);
void nsa_cmp_attn_select_forward(float *o, float *lse, int32_t *idx, const float *q,
                                 const float *kc, const float *vc, void *work, const NsaShape *s);

// The block from which the AVX-512 top-n keeps one list per position instead of its level
// vectors (nsa_select.c, topn_lists16); -1 (the default) lets it choose (4 x the list
// length). Both ways give the same ids; the tests set 0 and INT_MAX to hold each to the
// portable scan.
extern int nsa_topn_lists_from;

#endif
