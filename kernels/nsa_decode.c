// nsa_decode.c: compressed attention and selection at a position offset, and compression
// input from pool pages (see nsa_decode.h). The tiles, probabilities and top-n are training's
// own (attn_tile_forward, nsa_select_rows), so a row computes what the full
// forward computes for it.
#include "kernels/nsa_decode.h"

#include "kernels/attention.h"
#include "kernels/attn_decode.h"
#include "kernels/common.h"
#include "kernels/nsa_select.h"

// The rows' own ranges walked in ATTN_KEYS steps from the union's start (as attention.c's
// default iterator, so either tile kernel cuts a row's keys alike).
typedef struct {
    const AttnTile *tl;
    int s0, uhi;
} RangeChunks;

static int range_next(void *ctx, int *k0, int *nk, int *lo, int *hi) {
    RangeChunks *rc = ctx;
    if (rc->s0 >= rc->uhi) return 0;
    *k0 = rc->s0, *nk = nsa_imin(ATTN_KEYS, rc->uhi - rc->s0);
    for (int r = 0; r < rc->tl->n; r++) lo[r] = rc->tl->lo[r], hi[r] = rc->tl->hi[r];
    rc->s0 += *nk;
    return 1;
}

void nsa_cmp_decode_forward(float *o, float *lse, const float *q, const float *kc,
                            const float *vc, int p0, int m, const NsaShape *s) {
    NSA_ASSERT(s->B == 1 && s->T == p0 + m);
    const int Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)s->G * s->Dh;
    const AttnGrid gr = attn_grid(1, m, s->H, s->G);
    const long tasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        AttnTile tl;
        int b, g;
        attn_grid_tile(&tl, &b, &g, task, &gr);
        RangeChunks rc = {&tl, 0x7fffffff, 0};
        for (int r = 0; r < tl.n; r++) {
            tl.lo[r] = 0, tl.hi[r] = nsa_cmp_visible(s, Nc, p0 + tl.t[r]);
            if (tl.hi[r] > 0) rc.s0 = 0, rc.uhi = rc.uhi > tl.hi[r] ? rc.uhi : tl.hi[r];
        }
        const size_t hoff = (size_t)g * s->Dh;
        (tl.n <= ATTN_ROWS_KERNEL_MAX ? attn_rows_forward : attn_tile_forward)(o, lse, q, kc + hoff, vc + hoff, ks,
                                                                              &tl, range_next, &rc, s->Dh);
    }
}

// One task per (block of qb rows, group), as nsa_select tiles positions; task i uses scratch
// slot i % NSA_DECODE_SLOTS, so a long prefill needs no more work memory than a decode step
// of as many tasks. A row's choice does not depend on the rows it shares a task with.
#define NSA_DECODE_SLOTS 32

static long select_decode_tasks(int m, const NsaShape *s, int *qb) {
    *qb = attn_grid(1, 1, s->H, s->G).qb;
    return (long)(m + *qb - 1) / *qb * s->G;
}

size_t nsa_select_decode_work_bytes(int m, const NsaShape *s) {
    int qb;
    const long tasks = select_decode_tasks(m, s, &qb), slots = tasks < NSA_DECODE_SLOTS ? tasks : NSA_DECODE_SLOTS;
    return (size_t)slots * nsa_select_rows_floats(s) * sizeof(float);
}

void nsa_select_decode(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                       int p0, int m, const NsaShape *s) {
    NSA_ASSERT(s->B == 1 && s->T == p0 + m);
    const int G = s->G, n = s->slc_topn;
    int qb;
    const long tasks = select_decode_tasks(m, s, &qb), slots = tasks < NSA_DECODE_SLOTS ? tasks : NSA_DECODE_SLOTS;
#pragma omp parallel for schedule(static, 1)
    for (long slot = 0; slot < slots; slot++) {
        float *scratch = (float *)work + (size_t)slot * nsa_select_rows_floats(s);
        for (long task = slot; task < tasks; task += slots) {
            const int i0 = (int)(task / G) * qb, g = (int)(task % G), nt = nsa_imin(qb, m - i0);
            nsa_select_rows(idx + ((size_t)i0 * G + g) * n, q, kc, lse, 0, m, i0, nt, p0, g, scratch, s);
        }
    }
}

// Pool row of token p of KV head g.
static inline const float *paged_row(const KvPaged *kv, int p, int g, int Dh) {
    const int pl = kv->page_len;
    return kv->k + ((size_t)kv->pages[p / pl] * pl + p % pl) * kv->kv_stride + (size_t)g * Dh;
}

void nsa_cmp_gather_paged(float *blocks, const KvPaged *kv, const float *pe, int i0, int nb,
                          const NsaShape *s) {
    const int G = s->G, Dh = s->Dh, l = s->cmp_block, d = s->cmp_stride;
    for (int i = 0; i < nb; i++)
        for (int g = 0; g < G; g++) {
            float *out = blocks + ((size_t)i * G + g) * l * Dh;
            for (int j = 0; j < l; j++) {
                const float *xr = paged_row(kv, (i0 + i) * d + j, g, Dh);
                for (int e = 0; e < Dh; e++) out[j * Dh + e] = xr[e] + (pe ? pe[j * Dh + e] : 0.0f);
            }
        }
}

void nsa_cmp_mean_paged(float *out, const KvPaged *kv, int i0, int nb, const NsaShape *s) {
    const int G = s->G, Dh = s->Dh, l = s->cmp_block, d = s->cmp_stride;
    const float inv_l = 1.0f / (float)l;
    for (int i = 0; i < nb; i++)
        for (int g = 0; g < G; g++) {
            float *o = out + ((size_t)i * G + g) * Dh;
            for (int e = 0; e < Dh; e++) o[e] = 0.0f;
            for (int j = 0; j < l; j++) {
                const float *xr = paged_row(kv, (i0 + i) * d + j, g, Dh);
                for (int e = 0; e < Dh; e++) o[e] += xr[e];
            }
            for (int e = 0; e < Dh; e++) o[e] *= inv_l;
        }
}
