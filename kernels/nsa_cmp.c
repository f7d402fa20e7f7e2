// nsa_cmp.c: the compressed branch: block compression input (gather with position
// encoding, mean pooling) and compressed attention over the visible blocks, forward and
// backward.
#include "kernels/nsa_cmp.h"

#include "kernels/attention.h"

// Compressed keys per key block of the compressed branch's one-pass backward.
#define NSA_CMP_KEY_BLOCK ATTN_KEYS

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
        int ilo = t - l + 1 > 0 ? (t - l + 1 + d - 1) / d : 0, ihi = nsa_imin(Nc - 1, t / d);
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
        int ilo = t - l + 1 > 0 ? (t - l + 1 + d - 1) / d : 0, ihi = nsa_imin(Nc - 1, t / d);
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
    for (int r = 0; r < tl->n; r++) tl->lo[r] = 0, tl->hi[r] = nsa_cmp_visible(s, Nc, tl->t[r]);
    return ((size_t)b * Nc * s->G + g) * s->Dh;
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

// One pass, as the dense backward (attention.c): a task per (batch, KV head[, head chunk])
// walks the compressed key blocks in order and, for each, the query tiles that see it
// (t >= k0·d + l - 1, ascending), computing P and dS once for dq, dkc and dvc. The task owns
// its dq rows; with head chunks (attn_bwd_split) each writes partial dkc, dvc, added in
// chunk order afterwards.
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t nsa_cmp_attn_backward_work_bytes(const NsaShape *s) {
    const AttnBwdSplit d = attn_bwd_split(s->B, s->G, s->H / s->G);
    size_t bytes = align64((size_t)s->B * s->T * s->H * sizeof(float));
    if (d.nhc > 1) bytes += 2 * (size_t)s->B * s->G * d.nhc * nsa_n_cmp(s) * s->Dh * sizeof(float);
    return bytes;
}

void nsa_cmp_attn_backward(float *dq, float *dkc, float *dvc, const float *dout, const float *q,
                           const float *kc, const float *vc, const float *o, const float *lse,
                           void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G;
    const int Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)G * Dh;
    const AttnBwdSplit d = attn_bwd_split(s->B, G, rep);
    float *D = work;  // [B, T, H]
    float *pk = (float *)((char *)work + align64((size_t)s->B * T * H * sizeof(float)));
    float *pv = pk + (size_t)s->B * G * d.nhc * Nc * Dh;  // partials [(b, g, chunk)][Nc][Dh] (nhc > 1)
    attn_rowdot(D, dout, o, (size_t)s->B * T * H, Dh);
    if (Nc == 0) return;
    const int nkb = (Nc + NSA_CMP_KEY_BLOCK - 1) / NSA_CMP_KEY_BLOCK;
    const long tasks = (long)s->B * G * d.nhc;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        const int hc = (int)(task % d.nhc), g = (int)(task / d.nhc % G), b = (int)(task / d.nhc / G);
        const int hbeg = hc * d.hbc, hend = nsa_imin(rep, hbeg + d.hbc), hb = nsa_imin(hend - hbeg, ATTN_ROWS);
        const size_t kvoff = ((size_t)b * Nc * G + g) * Dh;
        float *tdk, *tdv;
        const size_t dks = attn_bwd_target(&tdk, &tdv, dkc + kvoff, dvc + kvoff, ks, pk, pv, task, Nc, Dh, d.nhc);
        for (int kb = 0; kb < nkb; kb++) {
            const int k0 = kb * NSA_CMP_KEY_BLOCK, nk = nsa_imin(NSA_CMP_KEY_BLOCK, Nc - k0);
            NsaQueryIter it = {.s = s, .b = b, .g = g, .hb = hb, .qb = ATTN_ROWS / hb, .h0 = hbeg, .hbeg = hbeg,
                               .hend = hend, .t = k0 * s->cmp_stride + s->cmp_block - 1, .tend = T, .list = NULL};
            attn_keys_backward_dq(tdk, tdv, dks, dq, kc + kvoff, vc + kvoff, ks, k0, nk, q, dout, lse, D,
                                  nsa_query_next, &it, Dh);
        }
    }
    if (d.nhc > 1) attn_bwd_add_partials(dkc, dvc, pk, pv, s->B, Nc, G, Dh, d.nhc);
}
