// nsa_select.c: top-n block selection (DESIGN.md, Eq. 9-10) from the compressed branch's
// attention probabilities, recomputed from its saved log-sum-exp.
#include "kernels/nsa_select.h"

#include "kernels/attention.h"

// nsa_select's work buffer holds a fixed number of scratch slots, task i using slot
// i % NSA_SELECT_SLOTS, so its size does not depend on the thread count (at most this many
// threads take part).
#define NSA_SELECT_SLOTS 32

// Tasks are (b, g, block of qb positions); task i uses scratch slot i % NSA_SELECT_SLOTS:
// pg [qb][Nc] (p_cmp summed over the group's heads) and ps [Ns] (block scores).
size_t nsa_select_work_bytes(const NsaShape *s) {
    const AttnGrid gr = attn_grid(s->B, s->T, s->H, s->G);
    return (size_t)NSA_SELECT_SLOTS * ((size_t)gr.qb * nsa_n_cmp(s) + nsa_n_slc(s)) * sizeof(float);
}

void nsa_select_top(int32_t *out, const float *pg, float *ps, int t, const NsaShape *s) {
    const int n = s->slc_topn, lp = s->slc_block;
    const int nvis = nsa_cmp_visible(s, nsa_n_cmp(s), t);
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
            int b = (int)(task / gr.nqb / G), t0 = qbi * gr.qb, nt = nsa_imin(gr.qb, T - t0);
            const int nvis = nsa_cmp_visible(s, Nc, t0 + nt - 1);
            const float *kcg = kc + ((size_t)b * Nc * G + g) * Dh;
            for (int i = 0; i < nt * Nc; i++) pg[i] = 0.0f;
            // p_cmp of the tile's rows chunk by chunk, summed over heads in head order.
            for (int h0 = 0; h0 < rep; h0 += gr.hb) {
                const int hb = nsa_imin(gr.hb, rep - h0);
                AttnTile tl;
                attn_tile_rows(&tl, b, T, H, t0, NULL, nt, g * rep + h0, hb);
                for (int r = 0; r < tl.n; r++) tl.lo[r] = 0, tl.hi[r] = nsa_cmp_visible(s, Nc, tl.t[r]);
                for (int c0 = 0; c0 < nvis; c0 += ATTN_KEYS) {
                    const int nk = nsa_imin(ATTN_KEYS, nvis - c0);
                    attn_tile_probs(P, q, lse, kcg, ks, &tl, c0, nk, Dh);
                    for (int j = 0; j < nk; j++)
                        for (int r = 0; r < tl.n; r++) pg[(r / hb) * Nc + c0 + j] += P[j * ATTN_ROWS + r];
                }
            }
            for (int i = 0; i < nt; i++)
                nsa_select_top(idx + (((size_t)b * T + t0 + i) * G + g) * n, pg + (size_t)i * Nc, ps,
                               t0 + i, s);
        }
    }
}
