// nsa_slc.h: selected-block attention read in place through the index (safe packing).
#ifndef NSA_NSA_SLC_H
#define NSA_NSA_SLC_H

#include "kernels/nsa_shape.h"

// Query (b,t,h) attends to the tokens of blocks idx[b,t,h/(H/G),:] (ascending, -1 padding)
// with position <= t. Safe packing: K/V are read in place through the index, never copied
// per query. Forward and dQ run on query tiles (16 consecutive positions x 4 heads for
// H/G = 4) over the union of the tile's selected blocks, each row masked to its own blocks;
// the cost per tile is that union (<= min(t/l' + 1, positions * n) blocks), ~n blocks when
// neighbouring queries select alike, all candidates when they share nothing.
void nsa_slc_attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                          const int32_t *idx, const NsaShape *s);
size_t nsa_slc_attn_backward_work_bytes(const NsaShape *s);
// Work O(B*T*(H + G*n)), independent of l' and Dh.
// dq query-parallel; dk/dv per KV block (b, g, j) from an inverse (CSR) index built in
// `work`: the queries that selected j, ascending. Each (b, g, j) has one owner thread.
void nsa_slc_attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *o, const float *lse,
                           const int32_t *idx, void *work, const NsaShape *s);

#endif
