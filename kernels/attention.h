// attention.h: causal / sliding-window flash attention (forward, backward) and the
// query-tile kernels it is built from, which the NSA branch kernels (nsa_*.c) reuse.
#ifndef NSA_ATTENTION_H
#define NSA_ATTENTION_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/vexp.h"

// Layouts (float32, row-major): q, o, dout [B, T, H, Dh]; k, v [B, T, G, Dh]; lse [B, T, H].
// GQA: query head h reads KV head h / (H/G). Scores are q·k / sqrt(Dh); lse is the
// log-sum-exp of the scaled scores over the visible keys, saved for backward.
// Key s is visible to query t iff s <= t and (window <= 0 || s > t - window).
void attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                  int B, int T, int H, int G, int Dh, int window);
// The sliding-window forward (window > 0) that also gives each row its attention over the
// head of its window, keys [lp·(⌊t/lp⌋ − 1), t] (from key 0 while ⌊t/lp⌋ <= 1): oh, lsh in the
// layout of o, lse. NSA's selected branch always holds those keys, blocks ⌊t/l'⌋ − 1 and
// ⌊t/l'⌋, and continues from them (nsa_slc_attn_forward_head) instead of visiting them again.
// Each row visits its head first and then the rest of its window, so o and lse equal
// attn_forward's to rounding (not bit for bit). Needs 2·lp <= window.
void attn_window_head_forward(float *o, float *lse, float *oh, float *lsh, const float *q, const float *k,
                              const float *v, int B, int T, int H, int G, int Dh, int window, int lp);
size_t attn_backward_work_bytes(int B, int T, int H, int G, int Dh);
// Accumulates (+=) into dq, dk, dv. One task per (batch, KV group[, head chunk]) walks the
// key blocks in order and the query tiles that see each, computing P and dS once for all
// three gradients; every gradient row has one owner (head chunks add partials in chunk
// order), so the result does not depend on the thread count.
void attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                   const float *k, const float *v, const float *o, const float *lse,
                   void *work, int B, int T, int H, int G, int Dh, int window);

// The tile kernels' inner products come in three paths with the same bits: portable C
// loops (ATTN_PATH_REF), AVX2 + FMA register tiles (ATTN_PATH_AVX2) and AVX-512 ones
// (ATTN_PATH_AVX512), each built where the compiler targets that instruction set (an
// AVX-512 build has both). ATTN_PATH_AUTO (0) takes the fastest one built.
typedef enum { ATTN_PATH_AUTO = 0, ATTN_PATH_REF = 1, ATTN_PATH_AVX512 = 2, ATTN_PATH_AVX2 = 3 } AttnPath;
int attn_path_supported(AttnPath p);  // built into this binary and runnable on this CPU
// Chooses the path from the CPU features, or NSA_ATTN_PATH=ref|avx2|avx512; NSA_ERR (with an
// nsa: error: line) for an unknown or unsupported value. main calls it once.
int attn_setup(void);
const char *attn_path_name(void);

// ---- Building blocks (serial; callers parallelise over what they own) ----
// Key s of the KV head in use lives at k + s * kv_stride (v, dk, dv alike). Each call keeps
// a few [Dh][64] float blocks on its thread's stack: ~1.3 KB per unit of Dh (330 KB at
// Dh = 256, the most config_validate allows).
//
// A query tile is up to ATTN_ROWS head vectors (query position, head) sharing one KV head.
// The kernels keep 64 independent lanes (the rows of a query tile, or the keys of a key
// block) in vector registers and broadcast the other operand one element at a time: no
// horizontal sums, every FMA full width. Keys are visited in chunks of <= ATTN_KEYS.
#define ATTN_ROWS 64
#define ATTN_KEYS 64
typedef struct {
    int n;                             // rows in use
    size_t off[ATTN_ROWS];             // row r is head vector off[r]: q + off[r]*Dh, lse + off[r]
    int t[ATTN_ROWS];                  // its query position
    int lo[ATTN_ROWS], hi[ATTN_ROWS];  // keys [lo, hi) visible to row r (where ranges are used)
} AttnTile;

// Query tiles: qb consecutive positions times hb heads of one KV group, row r = position
// r / hb, head h0 + r % hb. Tasks are numbered costliest first for causal attention (last
// position block first) so that schedule(dynamic) balances them; any schedule gives the same
// bits, since every task computes its own rows in a fixed order.
typedef struct {
    int B, T, H, G;
    int hb, nhc, qb, nqb;  // heads per tile, head chunks, positions per tile, position blocks
} AttnGrid;
AttnGrid attn_grid(int B, int T, int H, int G);
long attn_grid_tasks(const AttnGrid *gr);
// Rows of task `task` (no ranges); sets *b and *g.
void attn_grid_tile(AttnTile *tl, int *b, int *g, long task, const AttnGrid *gr);
// Rows (t, h) for the nt positions t = tlist ? tlist[i] : t0 + i and heads [h0, h0 + nh) of
// batch b, row r = i * nh + (h - h0); nt * nh <= ATTN_ROWS. No ranges.
void attn_tile_rows(AttnTile *tl, int b, int T, int H, int t0, const int32_t *tlist, int nt,
                    int h0, int nh);

// Key chunks of a query tile, in visiting order: each call yields keys [*k0, *k0 + *nk),
// 0 < nk <= ATTN_KEYS, and for every row r < tl->n the part [lo[r], hi[r]) of them that
// row sees (lo >= hi: none); returns 0 when no chunk is left. NULL instead of an iterator
// means the rows' own ranges tl->lo, tl->hi, walked in steps over their union.
typedef int (*AttnChunkIter)(void *ctx, int *k0, int *nk, int *lo, int *hi);

// Online-softmax forward of every row over its keys. A row with no key gets o = 0 and
// lse = -INFINITY.
void attn_tile_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                       size_t kv_stride, const AttnTile *tl, AttnChunkIter next, void *ctx,
                       int Dh);
// Pooling of probabilities into overlapping windows of keys (the NSA selection's Eq. 9, where
// the keys are compressed blocks): window j holds the keys a·j − (bq − 1) + m + nn, m < a,
// nn < bq, a key counted once per (m, nn) that reaches it. A chunk of keys [k0, k0 + nk)
// touches windows attn_pool_first .. + attn_pool_count - 1 (at most attn_pool_max of them);
// attn_pool_chunk writes, for each, part[jj][r] = the window's keys inside the chunk in
// ascending order, each weighted by the number of (m, nn) that reach it (attn_pool_weight:
// 1, 2, 2, 2, 1 for a = 4, bq = 2), summed as acc = fmaf(weight, p[k - k0][r], acc) from
// +0; p is [nk][ATTN_ROWS], part [count][ATTN_ROWS].
typedef struct {
    int a, bq;
} AttnPool;
static inline int attn_pool_first(const AttnPool *p, int k0) { return k0 / p->a; }
static inline int attn_pool_count(const AttnPool *p, int k0, int nk) {
    return (k0 + nk + p->bq - 2) / p->a - k0 / p->a + 1;
}
static inline int attn_pool_max(const AttnPool *p) { return (ATTN_KEYS + p->bq - 2) / p->a + 2; }
// How many (m, nn), m < a, nn < bq, have m + nn = c (0 <= c < a + bq - 1).
static inline int attn_pool_weight(int a, int bq, int c) {
    const int hi = c < a - 1 ? c : a - 1, lo = c - (bq - 1) > 0 ? c - (bq - 1) : 0;
    return hi - lo + 1;
}
void attn_pool_chunk(float *part, const float *p, int k0, int nk, const AttnPool *pool);
// attn_tile_forward over the rows' own ranges (next = NULL above), which must start at key 0,
// also pooling what the selection needs. For each chunk c of keys [64c, 64c + 64) visited:
// part + c · attn_pool_max · ATTN_ROWS gets attn_pool_chunk of p[s][r] = exp(q_r·k_s / sqrt(Dh)
// − base) (0 where key s is outside row r's range), and bases[c * ATTN_ROWS + r] the base: the
// running maximum of the row's scores up to that chunk (0 while it has none). A row's share
// of the softmax is then p · exp(base − lse), one exp per row and chunk rather than per key,
// and bit-identical to attn_tile_probs. o and lse as attn_tile_forward's.
void attn_tile_forward_pool(float *o, float *lse, float *part, float *bases, const AttnPool *pool, const float *q,
                            const float *k, const float *v, size_t kv_stride, const AttnTile *tl, int Dh);
// The bases of nch chunks made those factors in place, once lse is known: fb[c][r] =
// exp(fb[c][r] − lse_r) (lse_r = 0 where −inf or r >= tl->n), attn_tile_probs's f.
void attn_pool_factors(float *fb, int nch, const float *lse, const AttnTile *tl);
// Backward for keys [k0, k0 + nk), nk <= ATTN_KEYS, over the rows of the query tiles that
// next() yields (it fills *tl, ranges included, and returns 1, or returns 0 when done), in
// that order; the caller owns those rows' dq. P = exp(score - lse) and dS = P (dout·v - D) /
// sqrt(Dh) are computed once per (key block, tile) for all three products: dq_r += Σ_j dS k_j
// (k read in place, keys in order); dv_j += Σ_r P dout_r and dk_j += Σ_r dS q_r (rows in
// order), added to the dk, dv rows (at dk_stride, which may differ from the keys' kv_stride:
// partial sums) once at the end.
typedef int (*AttnTileIter)(AttnTile *tl, void *ctx);
void attn_keys_backward_dq(float *dk, float *dv, size_t dk_stride, float *dq, const float *k, const float *v,
                           size_t kv_stride, int k0, int nk, const float *q, const float *dout, const float *lse,
                           const float *D, AttnTileIter next, void *ctx, int Dh);

// How the one-pass backward passes (dense, compressed, selected) split a KV group's heads:
// nhc chunks of hbc heads, so that B·G·nhc reaches ATTN_BWD_TASKS tasks where the heads
// allow; a rule of the shape alone, so the bits never depend on the thread count. With
// nhc > 1 each chunk writes partial dk, dv, added in chunk order.
#define ATTN_BWD_TASKS 8
typedef struct {
    int nhc, hbc;
} AttnBwdSplit;
AttnBwdSplit attn_bwd_split(int B, int G, int rep);
// Where task `task` (b, g, chunk) of such a pass writes dk, dv: the group's rows (dk, dv
// already offset to them, stride ks) when nhc == 1, else its own partial [rows][Dh] in pk,
// pv, zeroed here; returns the row stride.
size_t attn_bwd_target(float **tdk, float **tdv, float *dk, float *dv, size_t ks, float *pk, float *pv, long task,
                       int rows, int Dh, int nhc);
// dk, dv [B][rows][G][Dh] += the partials [(b, g, chunk)][rows][Dh], chunks in order.
void attn_bwd_add_partials(float *dk, float *dv, const float *pk, const float *pv, int B, int rows, int G, int Dh,
                           int nhc);

// The softmax probabilities of a tile's rows recomputed from their saved lse, chunk by chunk
// exactly as attn_tile_forward_pool derives them, in two factors: for keys [k0, k0 + nk),
// nk <= ATTN_KEYS, p[j][r] = exp(score − base_r) (0 where key k0 + j is outside
// [tl->lo[r], tl->hi[r])) and f[r] = exp(base_r − lse[r]), where base_r is the running
// maximum m[r] of the row's visible scores over this and the earlier chunks (0 while none is
// visible); the probability is p · f. p is [nk][ATTN_ROWS], f [ATTN_ROWS]. m [ATTN_ROWS] is
// the caller's: -INFINITY before the first chunk (k0 = 0), then chunks in ascending order of
// 64 keys.
void attn_tile_probs(float *p, float *f, float *m, const float *q, const float *lse, const float *k,
                     size_t kv_stride, const AttnTile *tl, int k0, int nk, int Dh);

// D[r] = dout_r · o_r for `rows` rows of Dh floats (the softmax backward's row term).
void attn_rowdot(float *D, const float *dout, const float *o, size_t rows, int Dh);

// The exponential of every softmax here: kernels/vexp.h's nsa_expf.
static inline float attn_expf(float x) { return nsa_expf(x); }

#endif
