// nsa_slc.c: selected-block attention through the index (safe packing: K/V read in
// place, never copied per query), forward and backward with a CSR inverse index.
#include "kernels/nsa_slc.h"

#include <string.h>

#include "kernels/attention.h"
#include "kernels/common.h"

static inline size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

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
    if (c->ui < c->nu && c->k0 >= nsa_imin((c->u[c->ui] + 1) * lp, c->s->T))
        if (++c->ui < c->nu) c->k0 = c->u[c->ui] * lp;
    if (c->ui >= c->nu) return 0;
    const int j = c->u[c->ui], bhi = nsa_imin((j + 1) * lp, c->s->T);
    *k0 = c->k0, *nk = nsa_imin(ATTN_KEYS, bhi - c->k0);
    for (int r = 0; r < c->tl->n; r++) {
        const int32_t *sel = c->sel[r];
        while (c->cur[r] < n && sel[c->cur[r]] >= 0 && sel[c->cur[r]] < j) c->cur[r]++;
        int mine = c->cur[r] < n && sel[c->cur[r]] == j;
        lo[r] = *k0, hi[r] = mine ? nsa_imin(*k0 + *nk, c->tl->t[r] + 1) : *k0;
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
        const int blo = j * lp, bhi = nsa_imin(blo + lp, T);
        for (int k0 = blo; k0 < bhi; k0 += ATTN_KEYS) {
            NsaQueryIter it = {.s = s, .b = b, .g = g, .hb = hb, .qb = qb, .h0 = 0, .t = off[j],
                               .tend = off[j + 1], .list = ent, .blo = blo, .bhi = bhi};
            attn_keys_backward(dk + kvoff, dv + kvoff, k + kvoff, v + kvoff, ks, k0,
                               nsa_imin(ATTN_KEYS, bhi - k0), q, dout, lse, D, nsa_query_next, &it, Dh);
        }
    }
}
