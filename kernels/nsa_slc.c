// nsa_slc.c: selected-block attention through the index (safe packing: K/V read in
// place, never copied per query), forward and backward with a CSR inverse index.
#include "kernels/nsa_slc.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_lanes.h"
#include "kernels/common.h"

static inline size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

// ---- Forward and dq: row groups per selected block ----
//
// A task owns a tile of consecutive positions times the group's heads (up to SLC_ROWS rows)
// and walks the union of the blocks its positions selected, ascending. For block j only the
// rows whose position chose it take part, packed into groups of SLC_V lanes (two vectors):
// lanes are rows, the block's keys are broadcast from K and V in place, and each row keeps
// its online-softmax state (m, l, O) across blocks in the tile. Work is then what the
// selection asks for, rounded up to SLC_V rows per block and tile, where a fixed 64-row
// tile masked to each row's blocks paid for every row on every block of the union (with
// 16 positions choosing differently, ~13x the selected tokens). A row's arithmetic (blocks
// ascending, keys in chunks of <= SLC_KEYS from the block start) does not depend on which
// rows share its group or tile.
// Two vectors of rows: each key element broadcast then feeds two FMAs (with one vector the
// kernels issued a load per FMA). Measured at S = 8k/16k, 2 threads, same bits: selected
// forward 68-72 % of the dense kernel's GFLOP/s with 16 rows, 74-76 % with 32.
#define SLC_V 32
#define SLC_KEYS 64
// Bigger tiles share each block among more rows and read K and V fewer times. Random choices
// at 32k put ~5 positions of a 64-position tile on a block (19 rows: 60 % of two vectors);
// at 64k a 256-position tile's union is nearly every block, so each tile streamed all of K
// and V. Measured with the same bits, forward: 256 positions 1.3x faster than 64 at 32k
// (1 thread), 1024 positions 1.25x faster than 256 at 64k and 1.2x at 32k (2 threads), the
// same at 8k.
#define SLC_POS 1024  // positions per tile (fewer when the group has many heads)
#define SLC_ROWS 4096 // rows per tile: SLC_POS x heads, capped
// The tile keeps its rows' q and state (see slc_at) in a per-thread scratch buffer (two
// arrays of SLC_TILE_FLOATS floats, 1 MiB), so rows shrink as Dh grows (512 at Dh = 256).
#define SLC_TILE_FLOATS 131072
// With many blocks a tile's choosers spread thin: at 64k (1024 blocks, n = 16) a
// 1024-position tile gives a block ~13 positions (52 of `small`'s rows, 81 % of the two
// vectors of lanes they take), so where a block would get fewer than SLC_POS_PER_BLOCK
// positions on average the tile (and its caps) doubles. Measured (2 threads, Zen 5, same
// bits): selected forward 1.08-1.11x faster at 64k, unchanged at 32k, and 2-5 % slower at
// 8k-16k, where the rule keeps 1024.
#define SLC_POS_PER_BLOCK 24
#define SLC_POS_MAX (2 * SLC_POS)


// The tile of task `task`: positions [*t0, *t0 + *nt), heads [*h0, *h0 + *hb) of (b, g);
// costliest (last) positions first.
typedef struct {
    int qp, nqp, hb, nhc;  // positions per tile, position tiles, heads per tile, head chunks
} SlcGrid;

static SlcGrid slc_grid(const NsaShape *s) {
    const int rep = s->H / s->G;
    const int x = (long)SLC_POS * s->slc_topn < (long)SLC_POS_PER_BLOCK * nsa_n_slc(s) ? SLC_POS_MAX / SLC_POS : 1;
    const int floats = x * SLC_TILE_FLOATS;
    const int cap = nsa_imin(x * SLC_ROWS, floats / s->Dh > 1 ? floats / s->Dh : 1);
    SlcGrid gr;
    gr.hb = rep < cap ? rep : cap;
    gr.nhc = (rep + gr.hb - 1) / gr.hb;
    gr.qp = nsa_imin(x * SLC_POS, cap / gr.hb);
    gr.nqp = (s->T + gr.qp - 1) / gr.qp;
    return gr;
}

static void slc_task(int *b, int *g, int *t0, int *nt, int *h0, int *hb, long task, const SlcGrid *gr,
                     const NsaShape *s) {
    const long per = (long)s->B * s->G * gr->nhc;
    const int qi = gr->nqp - 1 - (int)(task / per), hc = (int)(task % gr->nhc);
    *g = (int)(task / gr->nhc % s->G), *b = (int)(task % per / gr->nhc / s->G);
    *t0 = qi * gr->qp, *nt = nsa_imin(gr->qp, s->T - *t0);
    *h0 = hc * gr->hb, *hb = nsa_imin(gr->hb, s->H / s->G - *h0);
}

// The blocks a tile's positions selected, ascending, each with the positions that chose it
// (ascending): a counting sort of the tile's selections, O(nt * n + Ns). Walking every
// position of the tile for every block of the union cost O(nt * Ns), which at 64k (1024
// blocks) came close to the attention arithmetic itself.
typedef struct {
    const int *start;  // [Ns + 1]: block j's positions are pos[start[j] .. start[j + 1])
    const int *pos;    // tile-relative positions
    int Ns, j;         // blocks, cursor
} SlcUnion;

// Ints of csr scratch slc_union_init needs.
static size_t slc_union_ints(const NsaShape *s) {
    return 2 * ((size_t)nsa_n_slc(s) + 1) + (size_t)SLC_POS_MAX * s->slc_topn;
}

static void slc_union_init(SlcUnion *u, int *csr, const int32_t *idx, int b, int g, int t0, int nt,
                           const NsaShape *s) {
    const int n = s->slc_topn, Ns = nsa_n_slc(s);
    int *start = csr, *cur = start + Ns + 1, *pos = cur + Ns + 1;
    NSA_ASSERT(nt <= SLC_POS_MAX);
    memset(start, 0, ((size_t)Ns + 1) * sizeof(int));
    // A block counts for a position once (ids ascending, so a repeat is adjacent), and only
    // once the position can see it; -1 is padding.
#define SLC_SEL_FOR(BODY)                                                                        \
    for (int i = 0; i < nt; i++) {                                                               \
        const int32_t *sel = idx + (((size_t)b * s->T + t0 + i) * s->G + g) * n;                  \
        for (int a = 0; a < n; a++) {                                                            \
            const int j = sel[a];                                                                \
            if (j < 0 || j * s->slc_block > t0 + i || (a > 0 && sel[a - 1] == j)) continue;      \
            BODY;                                                                                \
        }                                                                                        \
    }
    SLC_SEL_FOR(NSA_ASSERT(j < Ns); start[j + 1]++);
    for (int j = 0; j < Ns; j++) start[j + 1] += start[j], cur[j] = start[j];
    SLC_SEL_FOR(pos[cur[j]++] = i);
#undef SLC_SEL_FOR
    u->start = start, u->pos = pos, u->Ns = Ns, u->j = 0;
}

// Next block of the union (ascending), the positions that chose it (*pos, *np); -1 when done.
static int slc_union_next(SlcUnion *u, const int **pos, int *np) {
    while (u->j < u->Ns && u->start[u->j] == u->start[u->j + 1]) u->j++;
    if (u->j >= u->Ns) return -1;
    const int j = u->j++;
    *pos = u->pos + u->start[j], *np = u->start[j + 1] - u->start[j];
    return j;
}

// The tile keeps its rows' scaled q and output state in blocks of SLC_V rows, each block
// [Dh][SLC_V] (the layout of a group's arrays): row r's element e is at
// X[slc_at(r, Dh) + e * SLC_V]. A group that is a whole block (SLC_V consecutive rows from a
// multiple of SLC_V: the forced blocks' choosers, and neighbours choosing alike) is computed
// in place; others are gathered into [Dh][SLC_V] and scattered back, a position's hb rows
// one run at a time. (With rows position-major every group was gathered, ~15 % of the
// selected forward; fully e-major rows made the scattered groups' gathers touch a cache
// line per e and measured slower.)
static inline size_t slc_at(int r, int Dh) { return (size_t)(r / SLC_V) * Dh * SLC_V + r % SLC_V; }
static inline size_t slc_tile_floats(int rows, int Dh) { return (size_t)(rows + SLC_V - 1) / SLC_V * SLC_V * Dh; }

KERNEL runs_gather(float *restrict XT, const float *restrict X, const int *rr, int nr, int hb, int Dh) {
    for (int v0 = 0; v0 < nr; v0 += hb) {
        const float *src = X + slc_at(rr[v0], Dh);
        for (int e = 0; e < Dh; e++)
            for (int h = 0; h < hb; h++) XT[e * SLC_V + v0 + h] = src[e * SLC_V + h];
    }
}
KERNEL runs_scatter(float *restrict X, const float *restrict XT, const int *rr, int nr, int hb, int Dh) {
    for (int v0 = 0; v0 < nr; v0 += hb) {
        float *dst = X + slc_at(rr[v0], Dh);
        for (int e = 0; e < Dh; e++)
            for (int h = 0; h < hb; h++) dst[e * SLC_V + h] = XT[e * SLC_V + v0 + h];
    }
}
// hb as a literal for the usual group sizes (the loops over a position's heads unroll),
// run-time otherwise.
#define HB_DISPATCH(hb, call)                     \
    switch (hb) {                                 \
    case 1: { const int hb_ = 1; call; break; }   \
    case 2: { const int hb_ = 2; call; break; }   \
    case 4: { const int hb_ = 4; call; break; }   \
    case 8: { const int hb_ = 8; call; break; }   \
    case 16: { const int hb_ = 16; call; break; } \
    case 32: { const int hb_ = 32; call; break; } \
    default: { const int hb_ = hb; call; break; } \
    }

// XT[e][v] = the tile's element e of row rr[v] for lanes v < nr, 0 beyond. Groups are
// filled position by position, so when hb divides SLC_V a group is whole positions (runs of
// hb rows, which never straddle two blocks).
KERNEL group_gather(float *restrict XT, const float *restrict X, int hb, const int *rr, int nr, int Dh) {
    if (SLC_V % hb == 0) {
        HB_DISPATCH(hb, runs_gather(XT, X, rr, nr, hb_, Dh));
    } else {
        for (int v = 0; v < nr; v++)
            for (int e = 0; e < Dh; e++) XT[e * SLC_V + v] = X[slc_at(rr[v], Dh) + e * SLC_V];
    }
    for (int e = 0; e < Dh; e++)
        for (int v = nr; v < SLC_V; v++) XT[e * SLC_V + v] = 0.0f;
}

// The tile's element e of row rr[v] = XT[e][v] for v < nr.
KERNEL group_scatter(float *restrict X, const float *restrict XT, int hb, const int *rr, int nr, int Dh) {
    if (SLC_V % hb == 0) {
        HB_DISPATCH(hb, runs_scatter(X, XT, rr, nr, hb_, Dh));
    } else {
        for (int v = 0; v < nr; v++)
            for (int e = 0; e < Dh; e++) X[slc_at(rr[v], Dh) + e * SLC_V] = XT[e * SLC_V + v];
    }
}

// S[s][v] = Σ_e XT[e][v] k_s[e] for keys s < nk (rows of k at stride ks) and lanes v < V
// (16 or SLC_V; arrays keep the stride SLC_V): eight keys per pass sharing each XT load, so
// that eight independent FMA chains cover the FMA latency of both ports (four chains ran at
// half the FMA rate). Keys past nk repeat the last one and are not stored.
#define GROUP_W 8
KERNEL group_dot(float *restrict S, const float *restrict XT, const float *restrict k, size_t ks, int nk,
                 int Dh, int V) {
    for (int j = 0; j < nk; j += GROUP_W) {
        const float *kk[GROUP_W];
        for (int w = 0; w < GROUP_W; w++) kk[w] = k + (size_t)nsa_imin(j + w, nk - 1) * ks;
        float a[GROUP_W][SLC_V] = {{0}};
        for (int e = 0; e < Dh; e++) {
            const float *xe = XT + e * SLC_V;
            for (int w = 0; w < GROUP_W; w++) {
                const float c = kk[w][e];
#pragma omp simd
                for (int v = 0; v < V; v++) a[w][v] = fmaf(xe[v], c, a[w][v]);
            }
        }
        for (int w = 0; w < GROUP_W && j + w < nk; w++)
            for (int v = 0; v < V; v++) S[(j + w) * SLC_V + v] = a[w][v];
    }
}

// AccT[e][v] += Σ_s W[s][v] x_s[e] over keys s < nk in order, eight e per pass sharing each
// W load. Near the end the e's clamp to Dh - 1; the highest is written first so that the
// real one wins.
KERNEL group_axpy(float *restrict AccT, const float *restrict W, const float *restrict x, size_t ks, int nk,
                  int Dh, int V) {
    for (int e = 0; e < Dh; e += GROUP_W) {
        int ee[GROUP_W];
        float a[GROUP_W][SLC_V];
        for (int w = 0; w < GROUP_W; w++) {
            ee[w] = nsa_imin(e + w, Dh - 1);
            for (int v = 0; v < V; v++) a[w][v] = AccT[ee[w] * SLC_V + v];
        }
        for (int s = 0; s < nk; s++) {
            const float *ws = W + s * SLC_V, *xs = x + (size_t)s * ks;
            for (int w = 0; w < GROUP_W; w++) {
                const float c = xs[ee[w]];
#pragma omp simd
                for (int v = 0; v < V; v++) a[w][v] = fmaf(ws[v], c, a[w][v]);
            }
        }
        for (int w = GROUP_W - 1; w >= 0; w--)
            for (int v = 0; v < V; v++) AccT[ee[w] * SLC_V + v] = a[w][v];
    }
}

// One group of V lanes (16 or SLC_V; positions tv[x], -1 for padding lanes) over block
// [blo, bhi): the online-softmax step per chunk of keys on the group's scaled q QT and
// state OT, m, l ([Dh][SLC_V] and [SLC_V]: a block of the tile, or gathered). A lane's
// arithmetic is the same whatever V.
KERNEL group_forward(float *restrict OT, float *restrict m, float *restrict l, const float *restrict QT,
                     const float *restrict k, const float *restrict v, size_t ks, const int *tv, int blo, int bhi,
                     int Dh, int V) {
    float S[SLC_KEYS * SLC_V], mv[SLC_V], lv[SLC_V], mx[SLC_V], base[SLC_V], corr[SLC_V], sum[SLC_V];
    int tmax = -1, tmin = 0x7fffffff;
    for (int x = 0; x < V; x++) {
        mv[x] = m[x], lv[x] = l[x];
        tmax = tv[x] > tmax ? tv[x] : tmax;
        if (tv[x] >= 0) tmin = tv[x] < tmin ? tv[x] : tmin;
    }
    const int kend = nsa_imin(bhi, tmax + 1);
    for (int s0 = blo; s0 < kend; s0 += SLC_KEYS) {
        const int nk = nsa_imin(SLC_KEYS, kend - s0);
        group_dot(S, QT, k + (size_t)s0 * ks, ks, nk, Dh, V);
        for (int x = 0; x < V; x++) mx[x] = mv[x];
        // Mask only where the causal edge runs through the chunk; padding lanes (zero
        // queries, never written back) may then see keys, harmlessly.
        if (s0 + nk - 1 > tmin) {
            for (int j = 0; j < nk; j++) {
                const int sj = s0 + j;
#pragma omp simd
                for (int x = 0; x < V; x++) {
                    const float y = S[j * SLC_V + x];
                    S[j * SLC_V + x] = sj <= tv[x] ? y : -INFINITY;
                }
            }
        }
        for (int j = 0; j < nk; j++)
#pragma omp simd
            for (int x = 0; x < V; x++) mx[x] = S[j * SLC_V + x] > mx[x] ? S[j * SLC_V + x] : mx[x];
#pragma omp simd
        for (int x = 0; x < V; x++) {
            base[x] = mx[x] == -INFINITY ? 0.0f : mx[x];
            corr[x] = attn_expf(mv[x] - base[x]);
            sum[x] = 0.0f;
        }
        for (int j = 0; j < nk; j++) {
#pragma omp simd
            for (int x = 0; x < V; x++) {
                float p = attn_expf(S[j * SLC_V + x] - base[x]);
                S[j * SLC_V + x] = p;
                sum[x] += p;
            }
        }
        for (int x = 0; x < V; x++) lv[x] = lv[x] * corr[x] + sum[x], mv[x] = mx[x];
        for (int e = 0; e < Dh; e++)
#pragma omp simd
            for (int x = 0; x < V; x++) OT[e * SLC_V + x] *= corr[x];
        group_axpy(OT, S, v + (size_t)s0 * ks, ks, nk, Dh, V);
    }
    for (int x = 0; x < V; x++) m[x] = mv[x], l[x] = lv[x];
}

// One group of nr rows (tile rows rr[v], positions t[v]) over block [blo, bhi): in place
// when it is a whole block of the tile, else gathered and scattered back.
KERNEL group_run(float *restrict OTe, float *restrict m, float *restrict l, const float *restrict QTe, int hb,
                 const float *restrict k, const float *restrict v, size_t ks, const int *rr, const int *t, int nr,
                 int blo, int bhi, int Dh) {
    int tv[SLC_V];
    float QTg[Dh * SLC_V], OTg[Dh * SLC_V], mg[SLC_V], lg[SLC_V];
    for (int x = 0; x < SLC_V; x++) tv[x] = x < nr ? t[x] : -1;
    // One call site for both cases: with two, gcc spilled an accumulator of one copy.
    const int inplace = nr == SLC_V && rr[0] % SLC_V == 0 && rr[SLC_V - 1] - rr[0] == SLC_V - 1;  // rows ascend
    float *OT = inplace ? OTe + slc_at(rr[0], Dh) : OTg, *mp = inplace ? m + rr[0] : mg, *lp = inplace ? l + rr[0] : lg;
    const float *QT = inplace ? QTe + slc_at(rr[0], Dh) : QTg;
    if (!inplace) {
        group_gather(QTg, QTe, hb, rr, nr, Dh);
        group_gather(OTg, OTe, hb, rr, nr, Dh);
        for (int x = 0; x < SLC_V; x++) mg[x] = x < nr ? m[rr[x]] : -INFINITY, lg[x] = x < nr ? l[rr[x]] : 0.0f;
    }
    // A group of at most 16 rows (the last of a block, about half the time) computes one
    // vector of lanes instead of two.
    if (nr <= 16)
        group_forward(OT, mp, lp, QT, k, v, ks, tv, blo, bhi, Dh, 16);
    else
        group_forward(OT, mp, lp, QT, k, v, ks, tv, blo, bhi, Dh, SLC_V);
    if (!inplace) {
        for (int x = 0; x < nr; x++) m[rr[x]] = mg[x], l[rr[x]] = lg[x];
        group_scatter(OTe, OTg, hb, rr, nr, Dh);
    }
}

// Walks a tile's union and calls fn on every group of <= SLC_V rows that chose a block.
// Rows are r = i * hb + h for position t0 + i and head h0 + h.
#define SLC_FOR_GROUPS(s, csr, idx, b, g, t0, nt, h0, hb, BODY)                                   \
    do {                                                                                         \
        SlcUnion u_;                                                                             \
        const int *pos_;                                                                         \
        int np_, j_;                                                                             \
        slc_union_init(&u_, csr, idx, b, g, t0, nt, s);                                          \
        while ((j_ = slc_union_next(&u_, &pos_, &np_)) >= 0) {                                   \
            const int blo = j_ * (s)->slc_block, bhi = nsa_imin(blo + (s)->slc_block, (s)->T);   \
            int rr[SLC_V], tt[SLC_V], nr = 0;                                                    \
            for (int pi_ = 0; pi_ < np_; pi_++)                                                  \
                for (int h_ = 0; h_ < (hb); h_++) {                                              \
                    const int i_ = pos_[pi_];                                                    \
                    rr[nr] = i_ * (hb) + h_, tt[nr] = (t0) + i_;                                 \
                    if (++nr == SLC_V || (pi_ == np_ - 1 && h_ == (hb) - 1)) {                   \
                        BODY;                                                                    \
                        nr = 0;                                                                  \
                    }                                                                            \
                }                                                                                \
        }                                                                                        \
    } while (0)

// Row pointers of tile rows [r0, r0 + n) into x (heads adjacent, positions H rows apart).
static void slc_row_ptrs(float **p, float *x, size_t row0, int H, int hb, int r0, int n, int Dh) {
    for (int r = 0; r < n; r++) p[r] = x + (row0 + (size_t)((r0 + r) / hb) * H + (r0 + r) % hb) * Dh;
}

static void slc_tile_forward(float *scratch, int *csr, float *o, float *lse, const float *q, const float *k,
                             const float *v, const int32_t *idx, int b, int g, int t0, int nt, int h0, int hb,
                             const NsaShape *s) {
    const int Dh = s->Dh, rows = nt * hb;
    const size_t ks = (size_t)s->G * Dh, kvoff = ((size_t)b * s->T * s->G + g) * Dh;
    const size_t row0 = ((size_t)b * s->T + t0) * s->H + g * (s->H / s->G) + h0, tf = slc_tile_floats(rows, Dh);
    float *QTe = scratch, *OTe = QTe + tf, m[rows], l[rows];
    float *ptr[SLC_V];
    for (int r0 = 0; r0 < rows; r0 += SLC_V) {  // q, scaled, into the tile's blocks
        const int n = nsa_imin(SLC_V, rows - r0);
        slc_row_ptrs(ptr, (float *)q, row0, s->H, hb, r0, n, Dh);
        DISPATCH_DH(Dh, cols_from_rows(QTe + slc_at(r0, Dh), SLC_V, (const float *const *)ptr, n, Dh_,
                                       1.0f / sqrtf((float)Dh)));
    }
    for (int r = 0; r < rows; r++) m[r] = -INFINITY, l[r] = 0.0f;
    for (size_t i = 0; i < tf; i++) OTe[i] = 0.0f;
    SLC_FOR_GROUPS(s, csr, idx, b, g, t0, nt, h0, hb,
                   DISPATCH_DH(Dh, group_run(OTe, m, l, QTe, hb, k + kvoff, v + kvoff, ks, rr, tt, nr, blo, bhi,
                                             Dh_)));
    // o = OT / l and lse = m + log l per row; a row with no selected key gets o = 0, lse = -inf.
    for (int r0 = 0; r0 < rows; r0 += SLC_V) {
        const int n = nsa_imin(SLC_V, rows - r0);
        float inv[SLC_V];
        slc_row_ptrs(ptr, o, row0, s->H, hb, r0, n, Dh);
        for (int r = 0; r < n; r++) {
            const int rt = r0 + r;
            inv[r] = l[rt] > 0.0f ? 1.0f / l[rt] : 0.0f;
            lse[row0 + (size_t)(rt / hb) * s->H + rt % hb] = l[rt] > 0.0f ? m[rt] + logf(l[rt]) : -INFINITY;
        }
        DISPATCH_DH(Dh, rows_from_cols(ptr, OTe + slc_at(r0, Dh), SLC_V, inv, n, Dh_));
    }
}

void nsa_slc_attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                          const int32_t *idx, const NsaShape *s) {
    const SlcGrid gr = slc_grid(s);
    const long tasks = (long)s->B * s->G * gr.nhc * gr.nqp;
    const size_t tf = slc_tile_floats(gr.qp * gr.hb, s->Dh);
#pragma omp parallel
    {
        float *scratch = nsa_malloc(2 * tf * sizeof(float));  // QTe, OTe
        int *csr = nsa_malloc(slc_union_ints(s) * sizeof(int));
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < tasks; task++) {
            int b, g, t0, nt, h0, hb;
            slc_task(&b, &g, &t0, &nt, &h0, &hb, task, &gr, s);
            slc_tile_forward(scratch, csr, o, lse, q, k, v, idx, b, g, t0, nt, h0, hb, s);
        }
        free(scratch), free(csr);
    }
}

// Backward, one pass: a task per (batch, KV head[, head chunk], attn_bwd_split) walks the
// blocks in order and, for each, the queries that selected it, from an inverse (CSR) index
// (ascending t, tiles of qb positions times the chunk's heads): P and dS are computed once
// for dq, dk and dv (attn_keys_backward_dq). The task owns its dq rows (each adds its blocks
// in ascending order) and the dk, dv rows of its head's blocks, or with head chunks a
// partial, added in chunk order afterwards.
//
// Work: D [B*T*H] floats, per (b, g) the CSR offsets [Ns + 1] and entries [T * n] (query
// positions) as int32, then the partial dk, dv [(b, g, chunk)][T][Dh] when chunks > 1:
// O(B*T*(H + G*n)), plus O(B*T*G*chunks*Dh) for small B*G; never O(l') per query.
static size_t slc_off_bytes(const NsaShape *s) { return align64((size_t)s->B * s->T * s->H * sizeof(float)); }
static size_t slc_ent_bytes(const NsaShape *s) {
    return slc_off_bytes(s) + align64((size_t)s->B * s->G * (nsa_n_slc(s) + 1) * sizeof(int32_t));
}
static size_t slc_part_bytes(const NsaShape *s) {
    return slc_ent_bytes(s) + align64((size_t)s->B * s->G * s->T * s->slc_topn * sizeof(int32_t));
}

size_t nsa_slc_attn_backward_work_bytes(const NsaShape *s) {
    const AttnBwdSplit d = attn_bwd_split(s->B, s->G, s->H / s->G);
    size_t bytes = slc_part_bytes(s);
    if (d.nhc > 1) bytes += 2 * (size_t)s->B * s->G * d.nhc * s->T * s->Dh * sizeof(float);
    return bytes;
}

void nsa_slc_attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *o, const float *lse,
                           const int32_t *idx, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, n = s->slc_topn, rep = H / G;
    const int lp = s->slc_block, Ns = nsa_n_slc(s);
    const size_t ks = (size_t)G * Dh;
    const AttnBwdSplit d = attn_bwd_split(s->B, G, rep);
    float *D = work;
    int32_t *offs = (int32_t *)((char *)work + slc_off_bytes(s));
    int32_t *ents = (int32_t *)((char *)work + slc_ent_bytes(s));
    float *pk = (float *)((char *)work + slc_part_bytes(s)), *pv = pk + (size_t)s->B * G * d.nhc * T * Dh;
    attn_rowdot(D, dout, o, (size_t)s->B * T * H, Dh);

    // Inverse index per (b, g): count, prefix-sum, fill in ascending t (off[j] is the fill
    // cursor, shifted back afterwards). Entries that select nothing visible are skipped.
#pragma omp parallel for schedule(static)
    for (int bg = 0; bg < s->B * G; bg++) {
        int b = bg / G, g = bg % G;
        int32_t *off = offs + (size_t)bg * (Ns + 1), *ent = ents + (size_t)bg * T * n;
        for (int j = 0; j <= Ns; j++) off[j] = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int t = 0; t < T; t++) {
                const int32_t *sel = idx + (((size_t)b * T + t) * G + g) * n;
                for (int i = 0; i < n; i++) {
                    int j = sel[i];
                    if (j < 0 || j * lp > t) continue;
                    NSA_ASSERT(j < Ns);
                    if (pass == 0) off[j + 1]++;
                    else ent[off[j]++] = t;
                }
            }
            if (pass == 0)
                for (int j = 0; j < Ns; j++) off[j + 1] += off[j];
        }
        for (int j = Ns; j > 0; j--) off[j] = off[j - 1];
        off[0] = 0;
    }

    const long tasks = (long)s->B * G * d.nhc;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        const int hc = (int)(task % d.nhc), g = (int)(task / d.nhc % G), b = (int)(task / d.nhc / G);
        const int hbeg = hc * d.hbc, hend = nsa_imin(rep, hbeg + d.hbc), hb = nsa_imin(hend - hbeg, ATTN_ROWS);
        const int32_t *off = offs + ((size_t)b * G + g) * (Ns + 1), *ent = ents + ((size_t)b * G + g) * T * n;
        const size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        float *tdk, *tdv;
        const size_t dks = attn_bwd_target(&tdk, &tdv, dk + kvoff, dv + kvoff, ks, pk, pv, task, T, Dh, d.nhc);
        for (int j = 0; j < Ns; j++) {
            const int blo = j * lp, bhi = nsa_imin(blo + lp, T);
            for (int k0 = blo; k0 < bhi; k0 += ATTN_KEYS) {
                NsaQueryIter it = {.s = s, .b = b, .g = g, .hb = hb, .qb = ATTN_ROWS / hb, .h0 = hbeg,
                                   .hbeg = hbeg, .hend = hend, .t = off[j], .tend = off[j + 1], .list = ent,
                                   .blo = blo, .bhi = bhi};
                attn_keys_backward_dq(tdk, tdv, dks, dq, k + kvoff, v + kvoff, ks, k0, nsa_imin(ATTN_KEYS, bhi - k0),
                                      q, dout, lse, D, nsa_query_next, &it, Dh);
            }
        }
    }
    if (d.nhc > 1) attn_bwd_add_partials(dk, dv, pk, pv, s->B, T, G, Dh, d.nhc);
}
