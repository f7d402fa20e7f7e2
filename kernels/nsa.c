// nsa.c: NSA branch kernels: compression input, compressed attention, block selection and
// selected-block attention through an index (safe packing), plus its materialising reference.
#include "kernels/nsa.h"

#include <math.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/common.h"

// Compressed keys per task of the compressed branch's key-parallel backward pass.
#define NSA_CMP_KEY_BLOCK ATTN_KEYS
// nsa_select's work buffer holds a fixed number of scratch slots, task i using slot
// i % NSA_SELECT_SLOTS, so its size does not depend on the thread count (at most this many
// threads take part).
#define NSA_SELECT_SLOTS 32

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

int nsa_n_cmp(const NsaShape *s) {
    return s->T >= s->cmp_block ? (s->T - s->cmp_block) / s->cmp_stride + 1 : 0;
}

int nsa_n_slc(const NsaShape *s) { return (s->T + s->slc_block - 1) / s->slc_block; }

int nsa_shape_check(const NsaShape *s) {
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->G < 1 || s->Dh < 1) {
        nsa_error("attention sizes must be positive (B %d, T %d, n_heads %d, n_kv_heads %d, "
                  "head_dim %d)", s->B, s->T, s->H, s->G, s->Dh);
        return NSA_ERR;
    }
    if (s->Dh > NSA_MAX_HEAD_DIM) {
        nsa_error("head_dim %d is larger than the attention kernels support (%d)", s->Dh,
                  NSA_MAX_HEAD_DIM);
        return NSA_ERR;
    }
    if (s->H % s->G != 0) {
        nsa_error("n_kv_heads %d must divide n_heads %d", s->G, s->H);
        return NSA_ERR;
    }
    if (s->cmp_block < 1 || s->cmp_stride < 1 || s->slc_block < 1 || s->slc_topn < 1 ||
        s->window < 1) {
        nsa_error("cmp_block %d, cmp_stride %d, slc_block %d, slc_topn %d and window %d must "
                  "all be >= 1", s->cmp_block, s->cmp_stride, s->slc_block, s->slc_topn,
                  s->window);
        return NSA_ERR;
    }
    if (s->cmp_block % s->cmp_stride != 0) {
        nsa_error("cmp_stride %d must divide cmp_block %d", s->cmp_stride, s->cmp_block);
        return NSA_ERR;
    }
    if (s->slc_block % s->cmp_stride != 0) {
        nsa_error("cmp_stride %d must divide slc_block %d", s->cmp_stride, s->slc_block);
        return NSA_ERR;
    }
    return NSA_OK;
}

// Compressed blocks visible to query t: i*d + l - 1 <= t.
static inline int cmp_visible(const NsaShape *s, int Nc, int t) {
    if (t < s->cmp_block - 1) return 0;
    return imin(Nc, (t - s->cmp_block + 1) / s->cmp_stride + 1);
}

// ---- Compression input ----

void nsa_cmp_gather_forward(float *blocks, const float *x, const float *pe, const NsaShape *s) {
    const int T = s->T, G = s->G, Dh = s->Dh, l = s->cmp_block, d = s->cmp_stride;
    const int Nc = nsa_n_cmp(s);
    const long rows = (long)s->B * Nc;
#pragma omp parallel for schedule(static)
    for (long row = 0; row < rows; row++) {
        int i = (int)(row % Nc), b = (int)(row / Nc);
        for (int g = 0; g < G; g++) {
            float *out = blocks + ((size_t)row * G + g) * l * Dh;
            for (int j = 0; j < l; j++) {
                const float *xr = x + (((size_t)b * T + (size_t)i * d + j) * G + g) * Dh;
                for (int e = 0; e < Dh; e++)
                    out[j * Dh + e] = xr[e] + (pe ? pe[j * Dh + e] : 0.0f);
            }
        }
    }
}

void nsa_cmp_gather_backward(float *dx, float *dpe, const float *dblocks, const NsaShape *s) {
    const int T = s->T, G = s->G, Dh = s->Dh, l = s->cmp_block, d = s->cmp_stride;
    const int Nc = nsa_n_cmp(s);
    const long rows = (long)s->B * T;
    // Token-parallel: dx row (b, t) gathers from the blocks that contain t, in block order.
#pragma omp parallel for schedule(static)
    for (long row = 0; row < rows; row++) {
        int t = (int)(row % T), b = (int)(row / T);
        int ilo = t - l + 1 > 0 ? (t - l + 1 + d - 1) / d : 0, ihi = imin(Nc - 1, t / d);
        for (int i = ilo; i <= ihi; i++) {
            int j = t - i * d;
            for (int g = 0; g < G; g++) {
                float *dxr = dx + ((size_t)row * G + g) * Dh;
                const float *src = dblocks + (((size_t)b * Nc + i) * G + g) * l * Dh + j * Dh;
                for (int e = 0; e < Dh; e++) dxr[e] += src[e];
            }
        }
    }
    if (!dpe) return;
    // Position-parallel: dpe row j sums over (b, i, g) in that order.
#pragma omp parallel for schedule(static)
    for (int j = 0; j < l; j++) {
        float *dr = dpe + (size_t)j * Dh;
        for (long bi = 0; bi < (long)s->B * Nc; bi++)
            for (int g = 0; g < G; g++) {
                const float *src = dblocks + ((size_t)bi * G + g) * l * Dh + j * Dh;
                for (int e = 0; e < Dh; e++) dr[e] += src[e];
            }
    }
}

void nsa_cmp_mean_forward(float *out, const float *x, const NsaShape *s) {
    const int T = s->T, G = s->G, Dh = s->Dh, l = s->cmp_block, d = s->cmp_stride;
    const int Nc = nsa_n_cmp(s);
    const float inv_l = 1.0f / (float)l;
    const long rows = (long)s->B * Nc;
#pragma omp parallel for schedule(static)
    for (long row = 0; row < rows; row++) {
        int i = (int)(row % Nc), b = (int)(row / Nc);
        for (int g = 0; g < G; g++) {
            float *o = out + ((size_t)row * G + g) * Dh;
            for (int e = 0; e < Dh; e++) o[e] = 0.0f;
            for (int j = 0; j < l; j++) {
                const float *xr = x + (((size_t)b * T + (size_t)i * d + j) * G + g) * Dh;
                for (int e = 0; e < Dh; e++) o[e] += xr[e];
            }
            for (int e = 0; e < Dh; e++) o[e] *= inv_l;
        }
    }
}

void nsa_cmp_mean_backward(float *dx, const float *dout, const NsaShape *s) {
    const int T = s->T, G = s->G, Dh = s->Dh, l = s->cmp_block, d = s->cmp_stride;
    const int Nc = nsa_n_cmp(s);
    const float inv_l = 1.0f / (float)l;
    const long rows = (long)s->B * T;
#pragma omp parallel for schedule(static)
    for (long row = 0; row < rows; row++) {
        int t = (int)(row % T), b = (int)(row / T);
        int ilo = t - l + 1 > 0 ? (t - l + 1 + d - 1) / d : 0, ihi = imin(Nc - 1, t / d);
        for (int i = ilo; i <= ihi; i++)
            for (int g = 0; g < G; g++) {
                float *dxr = dx + ((size_t)row * G + g) * Dh;
                const float *src = dout + (((size_t)b * Nc + i) * G + g) * Dh;
                for (int e = 0; e < Dh; e++) dxr[e] += src[e] * inv_l;
            }
    }
}

// ---- Compressed attention ----

// Rows of grid task `task` with the compressed blocks each sees; returns the KV offset of
// its (b, g).
static size_t cmp_tile(AttnTile *tl, long task, const AttnGrid *gr, const NsaShape *s) {
    const int Nc = nsa_n_cmp(s);
    int b, g;
    attn_grid_tile(tl, &b, &g, task, gr);
    for (int r = 0; r < tl->n; r++) tl->lo[r] = 0, tl->hi[r] = cmp_visible(s, Nc, tl->t[r]);
    return ((size_t)b * Nc * s->G + g) * s->Dh;
}

// Query tiles for one key block of a backward pass: positions [t, tend) (or list[t..tend)
// when list is set: the selected branch's inverse index) times the group's heads in chunks
// of hb. Ranges: compressed blocks visible to t, or with list set the tokens of the
// selection block [blo, bhi) up to t.
typedef struct {
    const NsaShape *s;
    int b, g, hb, qb;
    int t, h0, tend;  // cursor
    const int32_t *list;
    int blo, bhi;
} QueryIter;

static int query_next(AttnTile *tl, void *ctx) {
    QueryIter *it = ctx;
    const NsaShape *s = it->s;
    const int rep = s->H / s->G;
    if (it->t >= it->tend) return 0;
    int nt = imin(it->qb, it->tend - it->t);
    attn_tile_rows(tl, it->b, s->T, s->H, it->t, it->list ? it->list + it->t : NULL, nt,
                   it->g * rep + it->h0, imin(it->hb, rep - it->h0));
    for (int r = 0; r < tl->n; r++) {
        if (it->list) tl->lo[r] = it->blo, tl->hi[r] = imin(it->bhi, tl->t[r] + 1);
        else tl->lo[r] = 0, tl->hi[r] = cmp_visible(s, nsa_n_cmp(s), tl->t[r]);
    }
    it->h0 += it->hb;
    if (it->h0 >= rep) it->h0 = 0, it->t += nt;
    return 1;
}

void nsa_cmp_attn_forward(float *o, float *lse, const float *q, const float *kc,
                          const float *vc, const NsaShape *s) {
    const size_t ks = (size_t)s->G * s->Dh;
    const AttnGrid gr = attn_grid(s->B, s->T, s->H, s->G);
    const long tasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        AttnTile tl;
        size_t kvoff = cmp_tile(&tl, task, &gr, s);
        attn_tile_forward(o, lse, q, kc + kvoff, vc + kvoff, ks, &tl, NULL, NULL, s->Dh);
    }
}

size_t nsa_cmp_attn_backward_work_bytes(const NsaShape *s) {
    return (size_t)s->B * s->T * s->H * sizeof(float);
}

void nsa_cmp_attn_backward(float *dq, float *dkc, float *dvc, const float *dout, const float *q,
                           const float *kc, const float *vc, const float *o, const float *lse,
                           void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh;
    const int Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)G * Dh;
    const AttnGrid cg = attn_grid(s->B, T, H, G);
    float *D = work;  // [B, T, H]
    attn_rowdot(D, dout, o, (size_t)s->B * T * H, Dh);

    const long qtasks = attn_grid_tasks(&cg);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < qtasks; task++) {
        AttnTile tl;
        size_t kvoff = cmp_tile(&tl, task, &cg, s);
        attn_tile_backward_dq(dq, dout, q, lse, D, kc + kvoff, vc + kvoff, ks, &tl, NULL, NULL, Dh);
    }

    // Key-parallel: task (block of compressed keys, b, g) owns those dkc/dvc rows and visits
    // the queries that see them (t >= i*d + l - 1) in ascending order; costliest first.
    const int nkb = (Nc + NSA_CMP_KEY_BLOCK - 1) / NSA_CMP_KEY_BLOCK;
    const long ktasks = (long)s->B * G * nkb;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < ktasks; task++) {
        int kb = (int)(task / ((long)s->B * G)), g = (int)(task % G), b = (int)(task / G % s->B);
        int k0 = kb * NSA_CMP_KEY_BLOCK, nk = imin(NSA_CMP_KEY_BLOCK, Nc - k0);
        QueryIter it = {.s = s, .b = b, .g = g, .hb = cg.hb, .qb = cg.qb, .h0 = 0,
                        .t = k0 * s->cmp_stride + s->cmp_block - 1, .tend = T, .list = NULL};
        size_t kvoff = ((size_t)b * Nc * G + g) * Dh;
        attn_keys_backward(dkc + kvoff, dvc + kvoff, kc + kvoff, vc + kvoff, ks, k0, nk, q, dout,
                           lse, D, query_next, &it, Dh);
    }
}

// ---- Block selection ----

// Tasks are (b, g, block of qb positions); task i uses scratch slot i % NSA_SELECT_SLOTS:
// pg [qb][Nc] (p_cmp summed over the group's heads) and ps [Ns] (block scores).
size_t nsa_select_work_bytes(const NsaShape *s) {
    const AttnGrid gr = attn_grid(s->B, s->T, s->H, s->G);
    return (size_t)NSA_SELECT_SLOTS * ((size_t)gr.qb * nsa_n_cmp(s) + nsa_n_slc(s)) * sizeof(float);
}

// Top-n selection of position t from pg [Nc], the group's summed p_cmp; ps [Ns] is scratch.
static void select_from_scores(int32_t *out, const float *pg, float *ps, int t,
                               const NsaShape *s) {
    const int n = s->slc_topn, lp = s->slc_block;
    const int nvis = cmp_visible(s, nsa_n_cmp(s), t);
    // Eq. 9: selection block j gathers the compressed blocks that overlap it. (Eq. 10 sums
    // Eq. 9 over the group's heads; both are linear in p_cmp, so pg already holds that sum.)
    const int a = lp / s->cmp_stride, bq = s->cmp_block / s->cmp_stride;
    const int jt = t / lp, ncand = jt + 1;
    for (int j = 0; j < ncand; j++) {
        float acc = 0.0f;
        for (int m = 0; m < a; m++)
            for (int nn = 0; nn < bq; nn++) {
                int c = a * j - (bq - 1) + m + nn;
                if (c >= 0 && c < nvis) acc += pg[c];
            }
        ps[j] = acc;
    }
    if (ncand <= n) {
        for (int i = 0; i < n; i++) out[i] = i < ncand ? i : -1;
        return;
    }
    // Forced blocks first (ascending, so the lowest win when n is small), then the best
    // of the rest; scores are >= 0, so -1 marks a taken block.
    int forced[3], nf = 0;
    forced[nf++] = 0;
    if (jt - 1 > 0) forced[nf++] = jt - 1;
    if (jt > 0) forced[nf++] = jt;
    int cnt = 0;
    for (int f = 0; f < nf && cnt < n; f++) {
        out[cnt++] = forced[f];
        ps[forced[f]] = -1.0f;
    }
    while (cnt < n) {
        int best = -1;
        for (int j = 0; j < ncand; j++)
            if (ps[j] >= 0.0f && (best < 0 || ps[j] > ps[best])) best = j;  // ties: lower j
        if (best < 0) break;  // only NaN scores left (non-finite inputs): pad
        out[cnt++] = best;
        ps[best] = -1.0f;
    }
    for (int i = cnt; i < n; i++) out[i] = -1;
    for (int i = 1; i < cnt; i++)  // insertion sort, n is small
        for (int k = i; k > 0 && out[k - 1] > out[k]; k--) {
            int32_t tmp = out[k];
            out[k] = out[k - 1];
            out[k - 1] = tmp;
        }
}

void nsa_select(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const int Nc = nsa_n_cmp(s), Ns = nsa_n_slc(s);
    const size_t ks = (size_t)G * Dh;
    const AttnGrid gr = attn_grid(s->B, T, H, G);
    const long tasks = (long)s->B * G * gr.nqb;
#pragma omp parallel for schedule(static, 1)
    for (int slot = 0; slot < NSA_SELECT_SLOTS; slot++) {
        float *pg = (float *)work + (size_t)slot * ((size_t)gr.qb * Nc + Ns);
        float *ps = pg + (size_t)gr.qb * Nc;
        float P[ATTN_KEYS * ATTN_ROWS];
        for (long task = slot; task < tasks; task += NSA_SELECT_SLOTS) {
            int qbi = (int)(task % gr.nqb), g = (int)(task / gr.nqb % G);
            int b = (int)(task / gr.nqb / G), t0 = qbi * gr.qb, nt = imin(gr.qb, T - t0);
            const int nvis = cmp_visible(s, Nc, t0 + nt - 1);
            const float *kcg = kc + ((size_t)b * Nc * G + g) * Dh;
            for (int i = 0; i < nt * Nc; i++) pg[i] = 0.0f;
            // p_cmp of the tile's rows chunk by chunk, summed over heads in head order.
            for (int h0 = 0; h0 < rep; h0 += gr.hb) {
                const int hb = imin(gr.hb, rep - h0);
                AttnTile tl;
                attn_tile_rows(&tl, b, T, H, t0, NULL, nt, g * rep + h0, hb);
                for (int r = 0; r < tl.n; r++) tl.lo[r] = 0, tl.hi[r] = cmp_visible(s, Nc, tl.t[r]);
                for (int c0 = 0; c0 < nvis; c0 += ATTN_KEYS) {
                    const int nk = imin(ATTN_KEYS, nvis - c0);
                    attn_tile_probs(P, q, lse, kcg, ks, &tl, c0, nk, Dh);
                    for (int j = 0; j < nk; j++)
                        for (int r = 0; r < tl.n; r++) pg[(r / hb) * Nc + c0 + j] += P[j * ATTN_ROWS + r];
                }
            }
            for (int i = 0; i < nt; i++)
                select_from_scores(idx + (((size_t)b * T + t0 + i) * G + g) * n, pg + (size_t)i * Nc,
                                   ps, t0 + i, s);
        }
    }
}

// ---- Selected attention (safe packing) ----

// Key chunks of a selected-branch query tile: the union of the blocks its positions
// selected, ascending, each cut into chunks of <= ATTN_KEYS keys; a row sees a chunk's keys
// up to its position if its own selection holds the block. Tiles of consecutive positions
// share most blocks (the forced ones always), so the union stays near n blocks; even when
// they share nothing it is <= qb * n blocks, never the whole prefix.
typedef struct {
    const NsaShape *s;
    const AttnTile *tl;
    const int32_t *sel[ATTN_ROWS];  // row r's selection [n]
    int cur[ATTN_ROWS];             // row r's cursor into it
    const int32_t *u;               // union of the tile's blocks, ascending
    int nu, ui, k0;                 // union size; current block and next key in it
} SlcChunks;

static int slc_chunks_next(void *ctx, int *k0, int *nk, int *lo, int *hi) {
    SlcChunks *c = ctx;
    const int lp = c->s->slc_block, n = c->s->slc_topn;
    if (c->ui < c->nu && c->k0 >= imin((c->u[c->ui] + 1) * lp, c->s->T))
        if (++c->ui < c->nu) c->k0 = c->u[c->ui] * lp;
    if (c->ui >= c->nu) return 0;
    const int j = c->u[c->ui], bhi = imin((j + 1) * lp, c->s->T);
    *k0 = c->k0, *nk = imin(ATTN_KEYS, bhi - c->k0);
    for (int r = 0; r < c->tl->n; r++) {
        const int32_t *sel = c->sel[r];
        while (c->cur[r] < n && sel[c->cur[r]] >= 0 && sel[c->cur[r]] < j) c->cur[r]++;
        int mine = c->cur[r] < n && sel[c->cur[r]] == j;
        lo[r] = *k0, hi[r] = mine ? imin(*k0 + *nk, c->tl->t[r] + 1) : *k0;
    }
    c->k0 += *nk;
    return 1;
}

// Sets up the chunks of tile tl (batch b, group g); u holds room for qb * n block ids.
static void slc_chunks_init(SlcChunks *c, int32_t *u, const AttnTile *tl, const int32_t *idx,
                            int b, int g, const NsaShape *s) {
    const int n = s->slc_topn, Ns = nsa_n_slc(s);
    c->s = s, c->tl = tl, c->u = u, c->nu = 0, c->ui = 0;
    for (int r = 0; r < tl->n; r++) {
        c->sel[r] = idx + (((size_t)b * s->T + tl->t[r]) * s->G + g) * n;
        c->cur[r] = 0;
        if (r > 0 && tl->t[r] == tl->t[r - 1]) continue;  // same position, same selection
        for (int i = 0; i < n; i++) {  // insert into the sorted union, skipping duplicates
            int j = c->sel[r][i], pos = c->nu;
            if (j < 0 || j * s->slc_block > tl->t[r]) continue;
            NSA_ASSERT(j < Ns);
            while (pos > 0 && u[pos - 1] > j) pos--;
            if (pos > 0 && u[pos - 1] == j) continue;
            memmove(u + pos + 1, u + pos, (size_t)(c->nu - pos) * sizeof *u);
            u[pos] = j;
            c->nu++;
        }
    }
    c->k0 = c->nu > 0 ? u[0] * s->slc_block : 0;
}

void nsa_slc_attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                          const int32_t *idx, const NsaShape *s) {
    const int T = s->T, G = s->G, Dh = s->Dh;
    const size_t ks = (size_t)G * Dh;
    const AttnGrid gr = attn_grid(s->B, T, s->H, G);
    const long tasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        AttnTile tl;
        SlcChunks c;
        int b, g;
        int32_t u[gr.qb * s->slc_topn];
        attn_grid_tile(&tl, &b, &g, task, &gr);
        slc_chunks_init(&c, u, &tl, idx, b, g, s);
        size_t kvoff = ((size_t)b * T * G + g) * Dh;
        attn_tile_forward(o, lse, q, k + kvoff, v + kvoff, ks, &tl, slc_chunks_next, &c, Dh);
    }
}

// Work of the backward pass: D [B*T*H] floats, then per (b, g) the CSR offsets [Ns + 1]
// and entries [T * n] (query positions) as int32. O(T*(H + G*n)), independent of l' and Dh.
static size_t slc_off_bytes(const NsaShape *s) { return align64((size_t)s->B * s->T * s->H * sizeof(float)); }
static size_t slc_ent_bytes(const NsaShape *s) {
    return slc_off_bytes(s) + align64((size_t)s->B * s->G * (nsa_n_slc(s) + 1) * sizeof(int32_t));
}

size_t nsa_slc_attn_backward_work_bytes(const NsaShape *s) {
    return slc_ent_bytes(s) + (size_t)s->B * s->G * s->T * s->slc_topn * sizeof(int32_t);
}

void nsa_slc_attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *o, const float *lse,
                           const int32_t *idx, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, n = s->slc_topn;
    const int lp = s->slc_block, Ns = nsa_n_slc(s);
    const size_t ks = (size_t)G * Dh;
    float *D = work;
    int32_t *offs = (int32_t *)((char *)work + slc_off_bytes(s));
    int32_t *ents = (int32_t *)((char *)work + slc_ent_bytes(s));
    attn_rowdot(D, dout, o, (size_t)s->B * T * H, Dh);

    const AttnGrid gr = attn_grid(s->B, T, H, G);
    const long qtasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < qtasks; task++) {
        AttnTile tl;
        SlcChunks c;
        int b, g;
        int32_t u[gr.qb * n];
        attn_grid_tile(&tl, &b, &g, task, &gr);
        slc_chunks_init(&c, u, &tl, idx, b, g, s);
        size_t kvoff = ((size_t)b * T * G + g) * Dh;
        attn_tile_backward_dq(dq, dout, q, lse, D, k + kvoff, v + kvoff, ks, &tl, slc_chunks_next,
                              &c, Dh);
    }

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

    // Key-parallel: task (j, b, g) owns dk/dv rows of block j of KV head g; its queries come
    // from the inverse index in ascending t, in tiles of qb positions times the group's heads.
    // Early blocks are selected most (block 0 by every query): they go first.
    const int hb = gr.hb, qb = gr.qb;
    const long tasks = (long)s->B * G * Ns;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        int j = (int)(task / ((long)s->B * G)), bg = (int)(task % ((long)s->B * G));
        int b = bg / G, g = bg % G;
        const int32_t *off = offs + (size_t)bg * (Ns + 1), *ent = ents + (size_t)bg * T * n;
        size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        const int blo = j * lp, bhi = imin(blo + lp, T);
        for (int k0 = blo; k0 < bhi; k0 += ATTN_KEYS) {
            QueryIter it = {.s = s, .b = b, .g = g, .hb = hb, .qb = qb, .h0 = 0, .t = off[j],
                            .tend = off[j + 1], .list = ent, .blo = blo, .bhi = bhi};
            attn_keys_backward(dk + kvoff, dv + kvoff, k + kvoff, v + kvoff, ks, k0,
                               imin(ATTN_KEYS, bhi - k0), q, dout, lse, D, query_next, &it, Dh);
        }
    }
}

// ---- Materialising reference ----

// Work: K and V copies for every row (b, t, g) [n*l', Dh], then one row's scratch:
// scores [n*l'], dK and dV copies [n*l', Dh], token positions [n*l'].
size_t nsa_slc_attn_ref_work_bytes(const NsaShape *s) {
    size_t m = (size_t)s->slc_topn * s->slc_block;
    size_t rows = (size_t)s->B * s->T * s->G;
    return (2 * rows * m * s->Dh + m + 2 * m * s->Dh) * sizeof(float) + m * sizeof(int32_t);
}

// Copies the selected K/V rows of row (b, t, g) into kc, vc; returns how many (pos gets
// their token positions).
static int ref_gather(float *kc, float *vc, int32_t *pos, const float *k, const float *v,
                      const int32_t *sel, int b, int t, int g, const NsaShape *s) {
    const int Dh = s->Dh, G = s->G;
    int m = 0;
    for (int i = 0; i < s->slc_topn; i++) {
        if (sel[i] < 0) continue;
        for (int p = sel[i] * s->slc_block; p < (sel[i] + 1) * s->slc_block && p <= t; p++) {
            size_t src = (((size_t)b * s->T + p) * G + g) * Dh;
            memcpy(kc + (size_t)m * Dh, k + src, Dh * sizeof(float));
            memcpy(vc + (size_t)m * Dh, v + src, Dh * sizeof(float));
            pos[m++] = p;
        }
    }
    return m;
}

void nsa_slc_attn_forward_ref(float *o, float *lse, const float *q, const float *k,
                              const float *v, const int32_t *idx, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const size_t mmax = (size_t)n * s->slc_block, rows = (size_t)s->B * T * G;
    const float scale = 1.0f / sqrtf((float)Dh);
    float *kcopy = work, *vcopy = kcopy + rows * mmax * Dh, *p = vcopy + rows * mmax * Dh;
    int32_t *pos = (int32_t *)(p + mmax + 2 * mmax * Dh);
    for (size_t row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        float *kc = kcopy + row * mmax * Dh, *vc = vcopy + row * mmax * Dh;
        int m = ref_gather(kc, vc, pos, k, v, idx + row * n, b, t, g, s);
        for (int h = 0; h < rep; h++) {
            size_t qoff = ((size_t)(b * T + t) * H + (size_t)g * rep + h);
            const float *qh = q + qoff * Dh;
            float *oh = o + qoff * Dh;
            for (int e = 0; e < Dh; e++) oh[e] = 0.0f;
            if (m == 0) {
                lse[qoff] = -INFINITY;
                continue;
            }
            float mx = -INFINITY, sum = 0.0f;
            for (int i = 0; i < m; i++) {
                float sc = 0.0f;
                for (int e = 0; e < Dh; e++) sc += qh[e] * kc[(size_t)i * Dh + e];
                p[i] = sc * scale;
                if (p[i] > mx) mx = p[i];
            }
            for (int i = 0; i < m; i++) sum += (p[i] = expf(p[i] - mx));
            for (int i = 0; i < m; i++)
                for (int e = 0; e < Dh; e++) oh[e] += p[i] / sum * vc[(size_t)i * Dh + e];
            lse[qoff] = mx + logf(sum);
        }
    }
}

void nsa_slc_attn_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const int32_t *idx, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const size_t mmax = (size_t)n * s->slc_block, rows = (size_t)s->B * T * G;
    const float scale = 1.0f / sqrtf((float)Dh);
    float *kcopy = work, *vcopy = kcopy + rows * mmax * Dh, *p = vcopy + rows * mmax * Dh;
    float *dkc = p + mmax, *dvc = dkc + mmax * Dh;
    int32_t *pos = (int32_t *)(dvc + mmax * Dh);
    for (size_t row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        float *kc = kcopy + row * mmax * Dh, *vc = vcopy + row * mmax * Dh;
        int m = ref_gather(kc, vc, pos, k, v, idx + row * n, b, t, g, s);
        memset(dkc, 0, (size_t)m * Dh * sizeof(float));
        memset(dvc, 0, (size_t)m * Dh * sizeof(float));
        for (int h = 0; h < rep; h++) {
            size_t qoff = ((size_t)(b * T + t) * H + (size_t)g * rep + h);
            if (m == 0 || lse[qoff] == -INFINITY) continue;
            const float *qh = q + qoff * Dh, *doh = dout + qoff * Dh, *oh = o + qoff * Dh;
            float *dqh = dq + qoff * Dh;
            float D = 0.0f;
            for (int e = 0; e < Dh; e++) D += doh[e] * oh[e];
            for (int i = 0; i < m; i++) {
                float sc = 0.0f, dp = 0.0f;
                for (int e = 0; e < Dh; e++) {
                    sc += qh[e] * kc[(size_t)i * Dh + e];
                    dp += doh[e] * vc[(size_t)i * Dh + e];
                }
                float pi = expf(sc * scale - lse[qoff]);
                float ds = pi * (dp - D) * scale;
                for (int e = 0; e < Dh; e++) {
                    dvc[(size_t)i * Dh + e] += pi * doh[e];
                    dkc[(size_t)i * Dh + e] += ds * qh[e];
                    dqh[e] += ds * kc[(size_t)i * Dh + e];
                }
            }
        }
        for (int i = 0; i < m; i++) {
            size_t dst = (((size_t)b * T + pos[i]) * G + g) * Dh;
            for (int e = 0; e < Dh; e++) {
                dk[dst + e] += dkc[(size_t)i * Dh + e];
                dv[dst + e] += dvc[(size_t)i * Dh + e];
            }
        }
    }
}
