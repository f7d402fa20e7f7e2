// nsa_slc.h: selected-block attention read in place through the index (safe packing).
#ifndef NSA_NSA_SLC_H
#define NSA_NSA_SLC_H

#include "kernels/nsa_shape.h"

// Query (b,t,h) attends to the tokens of blocks idx[b,t,h/(H/G),:] (ascending, -1 padding)
// with position <= t. Safe packing: K/V are read in place through the index, never copied
// per query. Forward runs on tiles of up to 1024 consecutive positions x the group's
// heads: each block of the tile's union is read once for the rows whose position chose it,
// packed 16 rows to a vector, so the work is the selected tokens (rounded up to 16 rows per
// block and tile), however much neighbouring positions' choices differ.
void nsa_slc_attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                          const int32_t *idx, const NsaShape *s);
// Whether the window's head can stand in for the blocks every selection holds: n >= 3 (so
// blocks ⌊t/l'⌋ − 1 and ⌊t/l'⌋ are always selected) and 2·l' <= window (so the window holds
// them).
int nsa_slc_head_shared(const NsaShape *s);
// nsa_slc_attn_forward continued from the head of each row's window: on entry o and lse hold
// each row's attention over keys [l'·(⌊t/l'⌋ − 1), t] (from key 0 while ⌊t/l'⌋ <= 1), as
// attn_window_head_forward gives them with lp = l', and every row's selection holds blocks
// ⌊t/l'⌋ − 1 and ⌊t/l'⌋ (any selection does where nsa_slc_head_shared). Those blocks are not
// visited again: the row's online softmax starts from (m = lse, l = 1, O = o) and adds its
// other blocks, ascending. The result equals nsa_slc_attn_forward's to rounding. With
// `small`'s n = 6 and w = 128 the head is ~30 % of a row's selected keys, with the paper's
// n = 16 ~10 %.
void nsa_slc_attn_forward_head(float *o, float *lse, const float *q, const float *k, const float *v,
                               const int32_t *idx, const NsaShape *s);
size_t nsa_slc_attn_backward_work_bytes(const NsaShape *s);
// Work O(B*T*(H + G*n)) (+ partial dk, dv while B*G < 8), independent of l'.
// One pass: a task per (b, g[, head chunk]) walks the blocks in order and, for each, the
// queries that selected it, from an inverse (CSR) index built in `work` (ascending t);
// P and dS are computed once for dq, dk and dv, and every gradient row has one owner.
void nsa_slc_attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *o, const float *lse,
                           const int32_t *idx, void *work, const NsaShape *s);

#endif
