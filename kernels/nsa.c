// nsa.c: NSA branch kernels: compression input, compressed attention, block selection and
// selected-block attention through an index (safe packing), plus its materialising reference.
#include "kernels/nsa.h"

#include <math.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/common.h"

// Compressed keys per task of the compressed branch's key-parallel backward pass.
#define NSA_CMP_KEY_BLOCK 16
// nsa_select works on rows (b, t, g) with per-row scratch of Nc + Ns floats. The work
// buffer holds a fixed number of scratch slots, row r using slot r % NSA_SELECT_SLOTS, so
// its size does not depend on the thread count (at most this many threads take part).
#define NSA_SELECT_SLOTS 64

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
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

void nsa_cmp_attn_forward(float *o, float *lse, const float *q, const float *kc,
                          const float *vc, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G;
    const int Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)G * Dh;
    const long rows = (long)s->B * T * G;
#pragma omp parallel for schedule(static, 1)
    for (long row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        size_t qoff = (size_t)(b * T + t) * H + (size_t)g * rep;
        size_t kvoff = (size_t)b * Nc * ks + (size_t)g * Dh;
        AttnRange range = {0, cmp_visible(s, Nc, t)};
        attn_row_forward(o + qoff * Dh, lse + qoff, q + qoff * Dh, rep, Dh, kc + kvoff,
                         vc + kvoff, ks, &range, 1);
    }
}

size_t nsa_cmp_attn_backward_work_bytes(const NsaShape *s) {
    return (size_t)s->B * s->T * s->H * sizeof(float);
}

void nsa_cmp_attn_backward(float *dq, float *dkc, float *dvc, const float *dout, const float *q,
                           const float *kc, const float *vc, const float *o, const float *lse,
                           void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G;
    const int Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)G * Dh;
    float *D = work;  // [B, T, H]
    attn_rowdot(D, dout, o, (size_t)s->B * T * H, Dh);

    const long rows = (long)s->B * T * G;
#pragma omp parallel for schedule(static, 1)
    for (long row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        size_t qoff = (size_t)(b * T + t) * H + (size_t)g * rep;
        size_t kvoff = (size_t)b * Nc * ks + (size_t)g * Dh;
        AttnRange range = {0, cmp_visible(s, Nc, t)};
        attn_row_backward_dq(dq + qoff * Dh, dout + qoff * Dh, q + qoff * Dh, lse + qoff,
                             D + qoff, rep, Dh, kc + kvoff, vc + kvoff, ks, &range, 1);
    }

    // Key-parallel: task (b, g, block of compressed keys) owns those dkc/dvc rows and visits
    // the queries that see them (t >= i*d + l - 1) in ascending order.
    const int nkb = (Nc + NSA_CMP_KEY_BLOCK - 1) / NSA_CMP_KEY_BLOCK;
    const long tasks = (long)s->B * G * nkb;
#pragma omp parallel for schedule(static, 1)
    for (long task = 0; task < tasks; task++) {
        int kb = (int)(task % nkb), g = (int)(task / nkb % G), b = (int)(task / nkb / G);
        int ilo = kb * NSA_CMP_KEY_BLOCK, ihi = imin(Nc, ilo + NSA_CMP_KEY_BLOCK);
        size_t kvoff = (size_t)b * Nc * ks + (size_t)g * Dh;
        for (int t = ilo * s->cmp_stride + s->cmp_block - 1; t < T; t++) {
            int hi = imin(ihi, cmp_visible(s, Nc, t));
            size_t qoff = (size_t)(b * T + t) * H + (size_t)g * rep;
            attn_row_backward_dkv(dkc + kvoff, dvc + kvoff, kc + kvoff, vc + kvoff, ks, ilo, hi,
                                  q + qoff * Dh, dout + qoff * Dh, lse + qoff, D + qoff, rep, Dh);
        }
    }
}

// ---- Block selection ----

size_t nsa_select_work_bytes(const NsaShape *s) {
    return (size_t)NSA_SELECT_SLOTS * (size_t)(nsa_n_cmp(s) + nsa_n_slc(s)) * sizeof(float);
}

// Selection of one row (b, t, g): pg [Nc] and ps [Ns] are scratch.
static void select_row(int32_t *out, const float *q, const float *kc, size_t ks,
                       const float *lse, float *pg, float *ps, int t, int rep,
                       const NsaShape *s) {
    const int Dh = s->Dh, n = s->slc_topn, lp = s->slc_block;
    const int Nc = nsa_n_cmp(s), nvis = cmp_visible(s, Nc, t);
    const float scale = 1.0f / sqrtf((float)Dh);
    // Eq. 10 sums Eq. 9 over the group's heads; both are linear in p_cmp, so sum the heads
    // first: pg[c] = Σ_h p_cmp[h][c] over the visible compressed blocks.
    for (int c = 0; c < nvis; c++) {
        const float *kr = kc + (size_t)c * ks;
        float acc = 0.0f;
        for (int h = 0; h < rep; h++) {
            float sc = 0.0f;
#pragma omp simd reduction(+ : sc)
            for (int e = 0; e < Dh; e++) sc += q[h * Dh + e] * kr[e];
            acc += attn_expf(sc * scale - lse[h]);
        }
        pg[c] = acc;
    }
    // Eq. 9: selection block j gathers the compressed blocks that overlap it.
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
        out[cnt++] = best;
        ps[best] = -1.0f;
    }
    for (int i = 1; i < n; i++)  // insertion sort, n is small
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
    const long rows = (long)s->B * T * G;
    float *scratch = work;
#pragma omp parallel for schedule(static, 1)
    for (int slot = 0; slot < NSA_SELECT_SLOTS; slot++) {
        float *pg = scratch + (size_t)slot * (Nc + Ns), *ps = pg + Nc;
        for (long row = slot; row < rows; row += NSA_SELECT_SLOTS) {
            int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
            size_t qoff = (size_t)(b * T + t) * H + (size_t)g * rep;
            select_row(idx + (size_t)row * n, q + qoff * Dh, kc + (size_t)b * Nc * ks + (size_t)g * Dh,
                       ks, lse + qoff, pg, ps, t, rep, s);
        }
    }
}

// ---- Selected attention (safe packing) ----

// Key ranges of row idx[0..n): block j covers [j*l', (j+1)*l') cut at t; adjacent blocks merge.
static int slc_ranges(AttnRange *r, const int32_t *sel, int t, const NsaShape *s) {
    int nr = 0;
    for (int i = 0; i < s->slc_topn; i++) {
        int j = sel[i];
        if (j < 0) continue;
        NSA_ASSERT(j < nsa_n_slc(s));
        int lo = j * s->slc_block, hi = imin(lo + s->slc_block, t + 1);
        if (lo >= hi) continue;
        if (nr > 0 && r[nr - 1].hi == lo) r[nr - 1].hi = hi;
        else r[nr++] = (AttnRange){lo, hi};
    }
    return nr;
}

void nsa_slc_attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                          const int32_t *idx, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const size_t ks = (size_t)G * Dh;
    const long rows = (long)s->B * T * G;
#pragma omp parallel for schedule(static)
    for (long row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        size_t qoff = (size_t)(b * T + t) * H + (size_t)g * rep;
        size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        AttnRange r[n];
        int nr = slc_ranges(r, idx + (size_t)row * n, t, s);
        attn_row_forward(o + qoff * Dh, lse + qoff, q + qoff * Dh, rep, Dh, k + kvoff, v + kvoff,
                         ks, r, nr);
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
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const int lp = s->slc_block, Ns = nsa_n_slc(s);
    const size_t ks = (size_t)G * Dh;
    float *D = work;
    int32_t *offs = (int32_t *)((char *)work + slc_off_bytes(s));
    int32_t *ents = (int32_t *)((char *)work + slc_ent_bytes(s));
    attn_rowdot(D, dout, o, (size_t)s->B * T * H, Dh);

    const long rows = (long)s->B * T * G;
#pragma omp parallel for schedule(static)
    for (long row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        size_t qoff = (size_t)(b * T + t) * H + (size_t)g * rep;
        size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        AttnRange r[n];
        int nr = slc_ranges(r, idx + (size_t)row * n, t, s);
        attn_row_backward_dq(dq + qoff * Dh, dout + qoff * Dh, q + qoff * Dh, lse + qoff,
                             D + qoff, rep, Dh, k + kvoff, v + kvoff, ks, r, nr);
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

    // Key-parallel: task (b, g, j) owns dk/dv rows of block j of KV head g.
    const long tasks = (long)s->B * G * Ns;
#pragma omp parallel for schedule(static, 1)
    for (long task = 0; task < tasks; task++) {
        int j = (int)(task % Ns), bg = (int)(task / Ns), b = bg / G, g = bg % G;
        const int32_t *off = offs + (size_t)bg * (Ns + 1), *ent = ents + (size_t)bg * T * n;
        size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        int lo = j * lp;
        for (int e = off[j]; e < off[j + 1]; e++) {
            int t = ent[e];
            int hi = imin(lo + lp, t + 1);
            size_t qoff = (size_t)(b * T + t) * H + (size_t)g * rep;
            attn_row_backward_dkv(dk + kvoff, dv + kvoff, k + kvoff, v + kvoff, ks, lo, hi,
                                  q + qoff * Dh, dout + qoff * Dh, lse + qoff, D + qoff, rep, Dh);
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
