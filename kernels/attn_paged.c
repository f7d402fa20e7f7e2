// attn_paged.c: key-chunk iterators that map a sequence's logical token ranges onto pool
// pages, driving the same tile kernel as training (attn_tile_forward) over pages in place.
#include "kernels/attn_paged.h"

#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_decode.h"
#include "kernels/common.h"

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

// Chunks over the union [a, uhi) of the rows' logical ranges [llo[r], lhi[r]): each chunk
// stays inside one page and holds <= ATTN_KEYS tokens; the iterator reports pool rows.
// A row's result depends only on where the chunk edges fall inside its own range (keys it
// does not see change nothing in the online softmax).
typedef struct {
    const KvPaged *kv;
    int n, a, uhi;
    int llo[ATTN_ROWS], lhi[ATTN_ROWS];
} PagedChunks;

static void paged_chunks_init(PagedChunks *c, const KvPaged *kv, int n) {
    c->kv = kv, c->n = n, c->a = 0x7fffffff, c->uhi = 0;
    for (int r = 0; r < n; r++)
        if (c->llo[r] < c->lhi[r]) c->a = imin(c->a, c->llo[r]), c->uhi = imax(c->uhi, c->lhi[r]);
}

static int paged_chunks_next(void *ctx, int *k0, int *nk, int *lo, int *hi) {
    PagedChunks *c = ctx;
    if (c->a >= c->uhi) return 0;
    const int pl = c->kv->page_len, j = c->a / pl, in = c->a % pl;
    // Chunk edges at page starts and every ATTN_KEYS tokens into a page, wherever the union
    // starts: a row's keys are then cut the same way whatever other rows share its tile, so
    // prefill and one-token steps give the same bits.
    const int end = imin(imin(c->a - in + (in / ATTN_KEYS + 1) * ATTN_KEYS, (j + 1) * pl), c->uhi);
    *k0 = c->kv->pages[j] * pl + c->a % pl;
    *nk = end - c->a;
    for (int r = 0; r < c->n; r++) {
        const int l = imax(c->llo[r], c->a), h = imin(c->lhi[r], end);
        lo[r] = *k0 + (l - c->a), hi[r] = l < h ? *k0 + (h - c->a) : lo[r];
    }
    c->a = end;
    return 1;
}

void attn_paged_forward(float *o, float *lse, const float *q, const KvPaged *kv, int p0, int m,
                        int H, int G, int Dh, int window) {
    NSA_ASSERT(m > 0 && G > 0 && H % G == 0 && p0 >= 0);
    const AttnGrid gr = attn_grid(1, m, H, G);
    const long tasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        AttnTile tl;
        PagedChunks c;
        int b, g;
        attn_grid_tile(&tl, &b, &g, task, &gr);
        for (int r = 0; r < tl.n; r++) {
            const int t = p0 + tl.t[r];
            c.llo[r] = window > 0 ? imax(0, t - window + 1) : 0, c.lhi[r] = t + 1;
        }
        paged_chunks_init(&c, kv, tl.n);
        const size_t hoff = (size_t)g * Dh;
        (tl.n <= ATTN_ROWS_KERNEL_MAX ? attn_rows_forward : attn_tile_forward)(
            o, lse, q, kv->k + hoff, kv->v + hoff, kv->kv_stride, &tl, paged_chunks_next, &c, Dh);
    }
}

// The selected branch's chunks: the union of the tile's selected blocks, ascending, each
// block (= page) walked in <= ATTN_KEYS steps up to the tile's last position; a row sees a
// chunk's tokens up to its own position when its own selection holds the block.
typedef struct {
    const KvPaged *kv;
    int n, topn, tmax;
    const int32_t *sel[ATTN_ROWS];
    int t[ATTN_ROWS];
    int32_t *u;                 // union of the tile's block ids, ascending
    int nu, ui, a;              // union size; current block and next logical token in it
} SlcPagedChunks;

static int slc_paged_next(void *ctx, int *k0, int *nk, int *lo, int *hi) {
    SlcPagedChunks *c = ctx;
    const int pl = c->kv->page_len;
    for (;;) {
        if (c->ui >= c->nu) return 0;
        const int j = c->u[c->ui], bend = imin((j + 1) * pl, c->tmax + 1);
        if (c->a < bend) break;
        if (++c->ui < c->nu) c->a = c->u[c->ui] * pl;
    }
    const int j = c->u[c->ui], end = imin(imin(c->a + ATTN_KEYS, (j + 1) * pl), c->tmax + 1);
    *k0 = c->kv->pages[j] * pl + c->a % pl;
    *nk = end - c->a;
    for (int r = 0; r < c->n; r++) {
        int mine = 0;
        for (int i = 0; i < c->topn && !mine; i++) mine = c->sel[r][i] == j;
        const int h = mine ? imin(end, c->t[r] + 1) : c->a;
        lo[r] = *k0, hi[r] = h > c->a ? *k0 + (h - c->a) : *k0;
    }
    c->a = end;
    return 1;
}

void nsa_slc_paged_forward(float *o, float *lse, const float *q, const KvPaged *kv,
                           const int32_t *idx, int p0, int m, int H, int G, int Dh, int n) {
    NSA_ASSERT(m > 0 && G > 0 && H % G == 0 && p0 >= 0);
    const AttnGrid gr = attn_grid(1, m, H, G);
    const long tasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        AttnTile tl;
        int b, g;
        attn_grid_tile(&tl, &b, &g, task, &gr);
        // Rows of one position share a selection: the union needs <= qb * n ids (as training's
        // nsa_slc_attn_forward, on the stack).
        int32_t u[gr.qb * n];
        SlcPagedChunks cs, *c = &cs;
        c->u = u, c->kv = kv, c->n = tl.n, c->topn = n, c->tmax = 0, c->nu = 0, c->ui = 0;
        for (int r = 0; r < tl.n; r++) {
            c->t[r] = p0 + tl.t[r];
            c->tmax = imax(c->tmax, c->t[r]);
            c->sel[r] = idx + ((size_t)tl.t[r] * G + g) * n;
            if (r > 0 && tl.t[r] == tl.t[r - 1]) continue;
            for (int i = 0; i < n; i++) {  // insert into the sorted union, skipping duplicates
                int j = c->sel[r][i], pos = c->nu;
                if (j < 0 || j * kv->page_len > c->t[r]) continue;
                while (pos > 0 && u[pos - 1] > j) pos--;
                if (pos > 0 && u[pos - 1] == j) continue;
                memmove(u + pos + 1, u + pos, (size_t)(c->nu - pos) * sizeof *u);
                u[pos] = j;
                c->nu++;
            }
        }
        c->a = c->nu > 0 ? c->u[0] * kv->page_len : 0;
        const size_t hoff = (size_t)g * Dh;
        (tl.n <= ATTN_ROWS_KERNEL_MAX ? attn_rows_forward : attn_tile_forward)(
            o, lse, q, kv->k + hoff, kv->v + hoff, kv->kv_stride, &tl, slc_paged_next, c, Dh);
    }
}
