// nsa.h: the NSA branch kernels: block compression (gather, mean), compressed attention,
// top-n block selection, and selected-block attention read in place through an index.
#ifndef NSA_NSA_H
#define NSA_NSA_H

#include <stddef.h>
#include <stdint.h>

// Layouts (float32, row-major) as in attention.h: q [B, T, H, Dh]; k, v [B, T, G, Dh];
// lse [B, T, H]. Every score is scaled by 1/sqrt(Dh).
typedef struct {
    int B, T, H, G, Dh;
    int cmp_block, cmp_stride;  // l, d   (d divides l)
    int slc_block, slc_topn;    // l', n  (d divides l')
    int window;                 // w
} NsaShape;

// The tile kernels keep [Dh][64] float blocks on the stack (~1.3 KB per unit of Dh).
#define NSA_MAX_HEAD_DIM 256

int nsa_n_cmp(const NsaShape *s);  // compressed blocks: T >= l ? (T - l) / d + 1 : 0
int nsa_n_slc(const NsaShape *s);  // selection blocks: ceil(T / l')
// Validates sizes (head_dim <= NSA_MAX_HEAD_DIM), l, d, l', n, w and the divisibility
// rules; returns 0, or -1 after one line on stderr (nsa_error), e.g. "cmp_stride 6 must
// divide cmp_block 16".
int nsa_shape_check(const NsaShape *s);

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

// ---- Block selection (DESIGN.md, Eq. 9-10) ----
// p_cmp is recomputed from q, kc and the compressed branch's lse (p = exp(score - lse)).
// idx [B, T, G, n] int32: selected block ids ascending, -1 padding.
size_t nsa_select_work_bytes(const NsaShape *s);
void nsa_select(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                const NsaShape *s);

// ---- Selected attention ----
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

// Materialising reference (tests and `hangcheck` only, never training): copies the
// selected K/V rows of every query into its own [n*l', Dh] buffer (the O(T*n*l'*Dh) memory
// safe packing avoids), runs plain two-pass softmax attention, and scatters dK/dV back
// serially. Serial throughout.
size_t nsa_slc_attn_ref_work_bytes(const NsaShape *s);
void nsa_slc_attn_forward_ref(float *o, float *lse, const float *q, const float *k,
                              const float *v, const int32_t *idx, void *work, const NsaShape *s);
void nsa_slc_attn_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const int32_t *idx, void *work, const NsaShape *s);

#endif
