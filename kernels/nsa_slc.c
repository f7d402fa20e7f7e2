// nsa_slc.c: selected-block attention through the index (safe packing: K/V read in
// place, never copied per query), forward and backward with a CSR inverse index.
#include "kernels/nsa_slc.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_lanes.h"
#include "kernels/common.h"

static inline size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

// ---- Forward: batches of rows per selected block ----
//
// A task owns a tile of consecutive positions times the group's heads (up to SLC_ROWS rows)
// and walks the union of the blocks its positions selected, ascending. For block j only the
// rows whose position chose it take part, in batches of up to SLC_BATCH rows (see
// batch_forward), and each row keeps its online-softmax state (m, l, O) across blocks in
// the tile. Work is then what the selection asks for, where a fixed 64-row tile masked to
// each row's blocks paid for every row on every block of the union (with 16 positions
// choosing differently, ~13x the selected tokens). A row's arithmetic (blocks ascending,
// keys in chunks of <= 64 from the block start) does not depend on which rows share its
// batch or tile.
// Bigger tiles share each block among more rows and read K and V fewer times: at 64k a
// 256-position tile's union is nearly every block, so each tile streamed all of K and V.
// Measured with the same bits, forward: 256 positions 1.3x faster than 64 at 32k (1
// thread), 1024 positions 1.25x faster than 256 at 64k and 1.2x at 32k (2 threads), the
// same at 8k (row groups then; with batches, 128 to 2048 positions measure within 3 % of
// each other at 8k, and 1024 is 1.06x faster than 256 at 32k).
#define SLC_POS 1024  // positions per tile (fewer when the group has many heads)
#define SLC_ROWS 4096 // rows per tile: SLC_POS x heads, capped
// The tile keeps its rows' scaled q and output in a per-thread scratch buffer (two arrays
// of SLC_TILE_FLOATS floats, 1 MiB), so rows shrink as Dh grows (512 at Dh = 256).
#define SLC_TILE_FLOATS 131072
// With many blocks a tile's choosers spread thin: at 64k (1024 blocks, n = 16) a
// 1024-position tile gives a block ~13 positions (52 of `small`'s rows), at 32k ~26, so
// where a block would get fewer than SLC_POS_PER_BLOCK positions on average the tile (and
// its caps) doubles, where the L2 cache holds at least SLC_WIDE_L2 bytes (or its size is
// unknown). Measured (2 threads, same bits) with batches, 2048 positions against 1024:
// Zen 5 (1 MiB L2, AVX-512) 1.05-1.09x faster at 64k; Zen 4 (1 MiB L2; session 17,
// interleaved in one process) 0.94x the time at 64k, 0.98x at 32k (median of six pairs),
// 1.01x at 16k and 8k, and 4096 positions 0.94x, 1.01x, 1.03x, 1.04x; Zen 3 (512 KiB L2,
// AVX2) 1.02-1.35x slower at 64k in five interleaved runs (the tile's q and output rows,
// 2 MiB doubled, are read in the choosers' order).
#define SLC_POS_PER_BLOCK 48
#define SLC_POS_MAX (2 * SLC_POS)
#define SLC_WIDE_L2 (1L << 20)


// The tile of task `task`: positions [*t0, *t0 + *nt), heads [*h0, *h0 + *hb) of (b, g);
// costliest (last) positions first.
typedef struct {
    int qp, nqp, hb, nhc;  // positions per tile, position tiles, heads per tile, head chunks
} SlcGrid;

static SlcGrid slc_grid(const NsaShape *s) {
    const int rep = s->H / s->G;
    const int wide = nsa_cpu.l2_bytes == 0 || nsa_cpu.l2_bytes >= SLC_WIDE_L2;
    const int x = wide && (long)SLC_POS * s->slc_topn < (long)SLC_POS_PER_BLOCK * nsa_n_slc(s) ? SLC_POS_MAX / SLC_POS : 1;
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

// head: leave out the blocks the window's head holds (j >= ⌊t/l'⌋ − 1).
static void slc_union_init(SlcUnion *u, int *csr, const int32_t *idx, int b, int g, int t0, int nt, int head,
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
        const int jend = head ? (t0 + i) / s->slc_block - 1 : s->T;                              \
        for (int a = 0; a < n; a++) {                                                            \
            const int j = sel[a];                                                                \
            if (j < 0 || j * s->slc_block > t0 + i || j >= jend || (a > 0 && sel[a - 1] == j))   \
                continue;                                                                        \
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

// A batch of the rows that chose a block: the batch's rows are the lanes of the scores.
// Their scaled q rows are transposed into QT [Dh][64] (16 x 16 register blocks), and the
// chunk's key rows, read in place and broadcast, give ST[j][x] = q_x·k_j (lanes_dot, eight
// keys per pass sharing each QT vector, as the dense kernel's); the online-softmax step
// runs on ST with rows as lanes, exactly as the dense kernel's; and each row's output
// accumulator, a plain row of the tile, gains Σ_j p[j][x] v_j with V's rows read in place
// and each p broadcast (rows_axpy_t, Dh in the vectors). Only q is transposed; the output
// state is neither gathered nor scattered, and no lane is padding in the products but the
// last 16-lane vector of a short batch. (Rows as lanes throughout, the first design,
// gathered each group's q and state into [Dh][32] and scattered the state back: ~8 % of the
// selected forward at 8k, ~20 % more with the groups' empty lanes at 64k. The keys as
// lanes, the second, transposed each block's keys once per tile and each batch's scores
// S[x][j] into ST: the selected forward is 0.95x that design's time at 8k and 32k, 0.95-1.0x
// at 64k, Zen 4, 2 threads, session 16.) A row's arithmetic is the same chain of fmaf in
// the same order in all three, so the bits are the same.
// Rows per batch: three vectors of lanes (lanes_dot then takes eight keys a pass) and whole
// passes of rows_axpy (Dh = 32: 12 rows). Measured with this design at 16k and 32k (2
// threads, Zen 4): 64 rows 1.02-1.03x and 32 rows 1.25x slower than 48 (with the keys as
// lanes at 8k, Zen 5: 64 rows 1.03x, 32 rows 1.07x).
#define SLC_BATCH 48
_Static_assert(SLC_BATCH <= ATTN_L, "a batch's rows are the lanes of ST");

// The online-softmax step of chunk [s0, s0 + nk) for lanes x < V (a multiple of 16; lanes
// past the batch hold stale scores and are never written back): ST[j][x] becomes
// exp(score - base), mv and lv the rows' running maximum and sum, corr[x] the factor on the
// row's output so far. Rows see keys up to their position tv[x]; tmin is the batch's lowest.
KERNEL batch_softmax(float *restrict ST, float *restrict mv, float *restrict lv, float *restrict corr,
                     const int *tv, int s0, int nk, int tmin, int V) {
    float mx[ATTN_L], base[ATTN_L], sum[ATTN_L];
    for (int x = 0; x < V; x++) mx[x] = mv[x];
    // Mask only where the causal edge runs through the chunk.
    if (s0 + nk - 1 > tmin) {
        for (int j = 0; j < nk; j++) {
            const int sj = s0 + j;
#pragma omp simd
            for (int x = 0; x < V; x++) {
                const float y = ST[j * ATTN_L + x];
                ST[j * ATTN_L + x] = sj <= tv[x] ? y : -INFINITY;
            }
        }
    }
    for (int j = 0; j < nk; j++)
#pragma omp simd
        for (int x = 0; x < V; x++) mx[x] = ST[j * ATTN_L + x] > mx[x] ? ST[j * ATTN_L + x] : mx[x];
#pragma omp simd
    for (int x = 0; x < V; x++) {
        base[x] = mx[x] == -INFINITY ? 0.0f : mx[x];
        corr[x] = attn_expf(mv[x] - base[x]);
        sum[x] = 0.0f;
    }
    lanes_exp_sum(ST, sum, base, nk, V);
    for (int x = 0; x < V; x++) lv[x] = lv[x] * corr[x] + sum[x], mv[x] = mx[x];
}

// One batch of nb <= SLC_BATCH rows (tile rows rr[x] at positions t[x], ascending) over the
// chunk [s0, s0 + nk) whose key rows are kp[0 .. nk) and whose values are vs (rows at stride
// ks): the rows' scaled q (Qs) and output (Os) are plain rows of Dh floats, m and l per tile
// row. QT ([Dh][64]) and ST ([64][64]) are scratch whose lanes hold finite values.
KERNEL batch_forward(float *restrict Os, float *restrict m, float *restrict l, const float *restrict Qs,
                     const float *const *kp, const float *restrict vs, size_t ks, float *restrict QT,
                     float *restrict ST, const int *rr, const int *t, int nb, int s0, int nk, int Dh) {
    float mv[ATTN_L], lv[ATTN_L], corr[ATTN_L];
    const float *qp[SLC_BATCH];
    float *op[SLC_BATCH];
    int tv[ATTN_L];
    const int V = (nb + 15) / 16 * 16, tmin = t[0];  // positions ascend
    for (int x = 0; x < nb; x++) {
        qp[x] = Qs + (size_t)rr[x] * Dh, op[x] = Os + (size_t)rr[x] * Dh;
        mv[x] = m[rr[x]], lv[x] = l[rr[x]], tv[x] = t[x];
    }
    for (int x = nb; x < V; x++) mv[x] = -INFINITY, lv[x] = 0.0f, tv[x] = -1;
    cols_from_rows(QT, ATTN_L, qp, nb, Dh, 1.0f);       // QT[e][x] = q_x[e] / sqrt(Dh)
    lanes_dot_part(ST, QT, kp, nk, Dh, 0, V / 16);      // ST[j][x] = q_x·k_j / sqrt(Dh)
    switch (V) {
    case 16: batch_softmax(ST, mv, lv, corr, tv, s0, nk, tmin, 16); break;
    case 32: batch_softmax(ST, mv, lv, corr, tv, s0, nk, tmin, 32); break;
    case 48: batch_softmax(ST, mv, lv, corr, tv, s0, nk, tmin, 48); break;
    default: batch_softmax(ST, mv, lv, corr, tv, s0, nk, tmin, ATTN_L); break;
    }
    for (int x = 0; x < nb; x++) m[rr[x]] = mv[x], l[rr[x]] = lv[x];
    rows_axpy_t(op, ST, corr, nb, vs, ks, nk, Dh);  // o_x = o_x · corr_x + Σ_j p[j][x] v_j
}

// Y[r][e] = rows[r][e] * mul for r < n: rows into a plain [n][Dh] array.
KERNEL rows_scaled(float *restrict Y, const float *const *rows, int n, int Dh, float mul) {
    for (int r = 0; r < n; r++)
#pragma omp simd
        for (int e = 0; e < Dh; e++) Y[(size_t)r * Dh + e] = rows[r][e] * mul;
}

// Row pointers of tile rows [r0, r0 + n) into x (heads adjacent, positions H rows apart).
static void slc_row_ptrs(const float **p, const float *x, size_t row0, int H, int hb, int r0, int n, int Dh) {
    for (int r = 0; r < n; r++) p[r] = x + (row0 + (size_t)((r0 + r) / hb) * H + (r0 + r) % hb) * Dh;
}

// head: o and lse hold, for each row, attention over its window's head, the state the row
// starts from (m = lse, l = 1, O = o; a row with lse = -inf starts empty).
static void slc_tile_forward(float *scratch, int *csr, float *o, float *lse, const float *q, const float *k,
                             const float *v, const int32_t *idx, int b, int g, int t0, int nt, int h0, int hb,
                             int head, const NsaShape *s) {
    const int Dh = s->Dh, rows = nt * hb;
    const size_t ks = (size_t)s->G * Dh, kvoff = ((size_t)b * s->T * s->G + g) * Dh;
    const size_t row0 = ((size_t)b * s->T + t0) * s->H + g * (s->H / s->G) + h0;
    const float scale = 1.0f / sqrtf((float)Dh);
    float *Qs = scratch, *Os = Qs + (size_t)rows * Dh, m[rows], l[rows];
    float QT[Dh * ATTN_L], ST[ATTN_L * ATTN_L];
    const float *ptr[ATTN_L];
    for (int r0 = 0; r0 < rows; r0 += ATTN_L) {  // q, scaled, into the tile's rows
        const int n = nsa_imin(ATTN_L, rows - r0);
        slc_row_ptrs(ptr, q, row0, s->H, hb, r0, n, Dh);
        DISPATCH_DH(Dh, rows_scaled(Qs + (size_t)r0 * Dh, ptr, n, Dh_, scale));
    }
    if (head) {
        for (int r = 0; r < rows; r++) {
            const size_t at = row0 + (size_t)(r / hb) * s->H + r % hb;
            m[r] = lse[at], l[r] = lse[at] == -INFINITY ? 0.0f : 1.0f;
            memcpy(Os + (size_t)r * Dh, o + at * Dh, (size_t)Dh * sizeof(float));
        }
    } else {
        for (int r = 0; r < rows; r++) m[r] = -INFINITY, l[r] = 0.0f;
        memset(Os, 0, (size_t)rows * Dh * sizeof(float));
    }
    memset(ST, 0, sizeof ST), memset(QT, 0, sizeof QT);
    const float *kb = k + kvoff, *vb = v + kvoff;
    // The union's blocks, ascending; per chunk of a block's keys (up to its last chooser's
    // position) its choosers in batches of <= SLC_BATCH rows,
    // r = i * hb + h for position t0 + i and head h0 + h.
    SlcUnion u;
    const int *pos;
    int np, j;
    slc_union_init(&u, csr, idx, b, g, t0, nt, head, s);
    while ((j = slc_union_next(&u, &pos, &np)) >= 0) {
        const int blo = j * s->slc_block, kend = nsa_imin(nsa_imin(blo + s->slc_block, s->T), t0 + pos[np - 1] + 1);
        for (int s0 = blo; s0 < kend; s0 += ATTN_L) {
            const int nkc = nsa_imin(ATTN_L, kend - s0);
            const float *kp[ATTN_L];
            for (int c = 0; c < nkc; c++) kp[c] = kb + (size_t)(s0 + c) * ks;
            int rr[SLC_BATCH], tt[SLC_BATCH], nr = 0;
            for (int pi = 0; pi < np; pi++)
                for (int h = 0; h < hb; h++) {
                    rr[nr] = pos[pi] * hb + h, tt[nr] = t0 + pos[pi];
                    if (++nr < SLC_BATCH && (pi < np - 1 || h < hb - 1)) continue;
                    const int nk = nsa_imin(nkc, tt[nr - 1] + 1 - s0);  // keys up to the batch's last position
                    if (nk > 0)
                        DISPATCH_DH(Dh, batch_forward(Os, m, l, Qs, kp, vb + (size_t)s0 * ks, ks, QT, ST, rr, tt, nr,
                                                      s0, nk, Dh_));
                    nr = 0;
                }
        }
    }
    // o = O / l and lse = m + log l per row; a row with no selected key gets o = 0, lse = -inf.
    for (int r = 0; r < rows; r++) {
        const size_t at = row0 + (size_t)(r / hb) * s->H + r % hb;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        lse[at] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
#pragma omp simd
        for (int e = 0; e < Dh; e++) o[at * Dh + e] = Os[(size_t)r * Dh + e] * inv;
    }
}

static void slc_forward(float *o, float *lse, const float *q, const float *k, const float *v, const int32_t *idx,
                        int head, const NsaShape *s) {
    const SlcGrid gr = slc_grid(s);
    const long tasks = (long)s->B * s->G * gr.nhc * gr.nqp;
    const size_t tf = (size_t)gr.qp * gr.hb * s->Dh;
#pragma omp parallel
    {
        float *scratch = nsa_malloc(2 * tf * sizeof(float));  // Qs, Os
        int *csr = nsa_malloc(slc_union_ints(s) * sizeof(int));
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < tasks; task++) {
            int b, g, t0, nt, h0, hb;
            slc_task(&b, &g, &t0, &nt, &h0, &hb, task, &gr, s);
            slc_tile_forward(scratch, csr, o, lse, q, k, v, idx, b, g, t0, nt, h0, hb, head, s);
        }
        free(scratch), free(csr);
    }
}

void nsa_slc_attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                          const int32_t *idx, const NsaShape *s) {
    slc_forward(o, lse, q, k, v, idx, 0, s);
}

int nsa_slc_head_shared(const NsaShape *s) { return s->slc_topn >= 3 && 2 * s->slc_block <= s->window; }

void nsa_slc_attn_forward_head(float *o, float *lse, const float *q, const float *k, const float *v,
                               const int32_t *idx, const NsaShape *s) {
    NSA_ASSERT(nsa_slc_head_shared(s));
    slc_forward(o, lse, q, k, v, idx, 1, s);
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
