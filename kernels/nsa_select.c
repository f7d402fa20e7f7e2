// nsa_select.c: top-n block selection (DESIGN.md, Eq. 9-10) from the compressed branch's
// attention probabilities: fused into the compressed forward (training), or recomputed from
// its saved log-sum-exp (the reference twin).
#include "kernels/nsa_select.h"

#include <stdlib.h>

#include "kernels/attention.h"
#include "kernels/attn_lanes.h"
#include "kernels/common.h"

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

// Top-n choice of position t from its block scores ps[j * sstride], j <= t / l' (Eq. 9-10
// already summed); overwrites ps.
static void select_topn(int32_t *out, float *ps_, size_t sstride, int t, const NsaShape *s) {
    const int n = s->slc_topn, lp = s->slc_block;
    const int jt = t / lp, ncand = jt + 1;
#define ps(j) ps_[(size_t)(j) * sstride]
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
        ps(forced[f]) = -1.0f;
    }
    // The best n - cnt of the rest in one pass: best[] is kept sorted by score descending,
    // ties by lower j (a later j enters only if strictly greater), so this picks what
    // repeated arg-max with the lower-index tie rule picks, in O(ncand) instead of
    // O(n * ncand). Taken blocks (-1) and NaN scores (the comparison fails) never enter.
    const int k = n - cnt;
    int32_t best[k > 0 ? k : 1];
    float bs[k > 0 ? k : 1];
    int nb = 0;
    for (int j = 0; j < ncand && k > 0; j++) {
        const float x = ps(j);
        if (!(x >= 0.0f) || (nb == k && !(x > bs[k - 1]))) continue;
        int pos = nb < k ? nb++ : k - 1;
        while (pos > 0 && x > bs[pos - 1]) {
            bs[pos] = bs[pos - 1], best[pos] = best[pos - 1];
            pos--;
        }
        bs[pos] = x, best[pos] = j;
    }
    for (int i = 0; i < nb; i++) out[cnt++] = best[i];
    for (int i = cnt; i < n; i++) out[i] = -1;
    for (int i = 1; i < cnt; i++)  // insertion sort, n is small
        for (int a = i; a > 0 && out[a - 1] > out[a]; a--) {
            int32_t tmp = out[a];
            out[a] = out[a - 1];
            out[a - 1] = tmp;
        }
#undef ps
}

#if LANES_HAVE_512
// One entry into a best list of up to 16 (scores descending in bs, ids in id; lanes past the
// list -inf), as select_topn's insertion does it: x goes after every score >= x, the rest
// move down one lane and the last falls off. Branch-free: the scalar insertion's loop
// mispredicted on nearly every entry (~30 % of the fused selection at 8k with n = 16).
static inline void best16_insert(float *bs, int32_t *id, float x, int j) {
    const __m512i down = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14);
    const __m512 b = _mm512_load_ps(bs), xv = _mm512_set1_ps(x);
    const __m512i ids = _mm512_load_si512(id);
    const __mmask16 after = _mm512_cmp_ps_mask(b, xv, _CMP_LT_OQ);  // a prefix stays
    const __mmask16 at = (__mmask16)(after & (unsigned)-(int)after);  // its first lane
    __m512 nb = _mm512_mask_mov_ps(b, after, _mm512_permutexvar_ps(down, b));
    __m512i ni = _mm512_mask_mov_epi32(ids, after, _mm512_permutexvar_epi32(down, ids));
    _mm512_store_ps(bs, _mm512_mask_mov_ps(nb, at, xv));
    _mm512_store_si512(id, _mm512_mask_mov_epi32(ni, at, _mm512_set1_epi32(j)));
}
#endif

// select_topn for the nt positions of a tile at once (position i's scores at ps[j * np + i],
// its choice at out + i * ostride), with the same result bits: each position still meets its
// candidates in ascending j and keeps the same sorted best list. What changes is the test of
// whether a candidate enters: one vector comparison across the tile's positions per block
// against each position's current entry threshold, where select_topn spent a scalar
// compare-and-branch per position and block. Once a position's list is full, few candidates
// pass (about k ln(ncand / k) of ncand for scores in random order), so the insertions left
// to scalar code are a small part of the work.
static void select_topn_tile(int32_t *out, size_t ostride, float *ps, int np, int t0, int nt,
                             const NsaShape *s) {
    const int n = s->slc_topn, lp = s->slc_block;
    NSA_ASSERT(np <= ATTN_ROWS && nt <= np);
    int nc[ATTN_ROWS], cnt[ATTN_ROWS], kk[ATTN_ROWS], nb[ATTN_ROWS], jmax = 0;
    float thr[ATTN_ROWS];
    int32_t(*best)[n] = nsa_malloc((size_t)nt * n * sizeof(int32_t));
    float(*bs)[n] = nsa_malloc((size_t)nt * n * sizeof(float));
#if LANES_HAVE_512
    // The AVX-512 path keeps each position's list in one vector (n <= 16), the portable one
    // in best/bs; the fused-vs-separate selection test holds it to select_topn bit for bit.
    const int vec = lanes_512() && n <= 16;
    _Alignas(64) float bsv[vec ? ATTN_ROWS : 1][16];
    _Alignas(64) int32_t idv[vec ? ATTN_ROWS : 1][16];
    if (vec)
        for (int i = 0; i < np; i++)
            for (int a = 0; a < 16; a++) bsv[i][a] = -INFINITY, idv[i][a] = -1;
#endif
    for (int i = 0; i < np; i++) {
        nc[i] = 0, thr[i] = INFINITY;  // never enters
        if (i >= nt) continue;
        const int jt = (t0 + i) / lp, ncand = jt + 1;
        int32_t *o = out + (size_t)i * ostride;
        if (ncand <= n) {
            for (int a = 0; a < n; a++) o[a] = a < ncand ? a : -1;
            cnt[i] = -1;  // done
            continue;
        }
        int forced[3], nf = 0;  // as in select_topn
        forced[nf++] = 0;
        if (jt - 1 > 0) forced[nf++] = jt - 1;
        if (jt > 0) forced[nf++] = jt;
        cnt[i] = 0;
        for (int f = 0; f < nf && cnt[i] < n; f++) {
            o[cnt[i]++] = forced[f];
            ps[(size_t)forced[f] * np + i] = -1.0f;
        }
        kk[i] = n - cnt[i], nb[i] = 0;
        if (kk[i] > 0) nc[i] = ncand, thr[i] = -INFINITY, jmax = ncand > jmax ? ncand : jmax;
    }
    for (int j = 0; j < jmax; j++) {
        const float *x = ps + (size_t)j * np;
        // Enters iff x >= 0 (not taken, not NaN) and, once the list is full, x > its last.
        uint64_t enter = 0;
#pragma omp simd reduction(| : enter)
        for (int i = 0; i < np; i++) enter |= (uint64_t)((j < nc[i]) & (x[i] >= 0.0f) & (x[i] > thr[i])) << i;
        while (enter) {
            const int i = __builtin_ctzll(enter), k = kk[i];
            enter &= enter - 1;
#if LANES_HAVE_512
            if (vec) {
                best16_insert(bsv[i], idv[i], x[i], j);
                if (nb[i] < k) nb[i]++;
                if (nb[i] == k) thr[i] = bsv[i][k - 1];
                continue;
            }
#endif
            int pos = nb[i] < k ? nb[i]++ : k - 1;
            while (pos > 0 && x[i] > bs[i][pos - 1]) {
                bs[i][pos] = bs[i][pos - 1], best[i][pos] = best[i][pos - 1];
                pos--;
            }
            bs[i][pos] = x[i], best[i][pos] = j;
            if (nb[i] == k) thr[i] = bs[i][k - 1];
        }
    }
    // Ascending ids: the picks are distinct blocks < ncand, so a bitmap sorts them.
    const int nw = (jmax + 64) / 64;
    uint64_t *bits = nsa_malloc((size_t)nw * sizeof(uint64_t));
    for (int i = 0; i < nt; i++) {
        if (cnt[i] < 0) continue;
        int32_t *o = out + (size_t)i * ostride;
        int c = 0;
        for (int w = 0; w < nw; w++) bits[w] = 0;
        for (int a = 0; a < cnt[i]; a++) bits[o[a] / 64] |= (uint64_t)1 << (o[a] % 64);
        for (int a = 0; a < (kk[i] > 0 ? nb[i] : 0); a++) {
#if LANES_HAVE_512
            const int32_t b = vec ? idv[i][a] : best[i][a];  // the list the path kept
#else
            const int32_t b = best[i][a];
#endif
            bits[b / 64] |= (uint64_t)1 << (b % 64);
        }
        for (int w = 0; w < nw; w++)
            for (uint64_t b = bits[w]; b; b &= b - 1) o[c++] = w * 64 + __builtin_ctzll(b);
        for (int a = c; a < n; a++) o[a] = -1;
    }
    free(bits), free(best), free(bs);
}

// Eq. 9 for positions of one tile at once: ps[j * np + i] = Σ_m Σ_nn pg[c * np + i] over
// c = (l'/d)·j − (l/d − 1) + m + nn in [0, nvis), m then nn ascending, for j < ncand. pg
// holds the group's summed p_cmp (Eq. 10: Eq. 9 is linear, so summing heads first is the
// same), +0 at blocks a position cannot see, so one nvis (the tile's last position's)
// serves every position with the same bits.
static void select_scores(float *ps, const float *pg, int np, int ncand, int nvis, const NsaShape *s) {
    const int a = s->slc_block / s->cmp_stride, bq = s->cmp_block / s->cmp_stride;
    for (int j = 0; j < ncand; j++) {
        float *acc = ps + (size_t)j * np;
        for (int i = 0; i < np; i++) acc[i] = 0.0f;
        const int c0 = a * j - (bq - 1);
        for (int m = 0; m < a; m++)
            for (int nn = 0; nn < bq; nn++) {
                const int c = c0 + m + nn;
                if (c < 0 || c >= nvis) continue;
                const float *pc = pg + (size_t)c * np;
#pragma omp simd
                for (int i = 0; i < np; i++) acc[i] += pc[i];
            }
    }
}

// See nsa_select.h (decoding calls it directly).
void nsa_select_top(int32_t *out, const float *pg, float *ps, int t, const NsaShape *s) {
    select_scores(ps, pg, 1, t / s->slc_block + 1, nsa_cmp_visible(s, nsa_n_cmp(s), t), s);
    select_topn(out, ps, 1, t, s);
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
                float m[ATTN_ROWS];
                for (int r = 0; r < ATTN_ROWS; r++) m[r] = -INFINITY;
                for (int c0 = 0; c0 < nvis; c0 += ATTN_KEYS) {
                    const int nk = nsa_imin(ATTN_KEYS, nvis - c0);
                    attn_tile_probs(P, m, q, lse, kcg, ks, &tl, c0, nk, Dh);
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

// ---- Fused with the compressed forward ----

// pg[i] += p[i * hb + h] for heads h in order (i >= the tile's positions: unused).
static inline __attribute__((always_inline)) void add_heads(float *restrict pg, const float *restrict p, int hb, int qb) {
    for (int h = 0; h < hb; h++)
#pragma omp simd
        for (int i = 0; i < qb; i++) pg[i] += p[i * hb + h];
}

#if defined(__AVX512F__)
#include <immintrin.h>
// add_heads for 4 heads and 16 positions (`small`'s GQA group) with the same additions in the
// same order: the 64 probabilities are deinterleaved by head with two-source permutes and
// 128-bit lane shuffles, where gcc gathered them lane by lane (a quarter of the fused
// selection's time). add_heads stays the portable twin; the fused-vs-separate selection
// test holds the two together bit for bit.
static inline void add_heads4x16(float *restrict pg, const float *restrict p) {
    const __m512i even = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i odd = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    const __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16), v2 = _mm512_loadu_ps(p + 32),
                 v3 = _mm512_loadu_ps(p + 48);
    const __m512 a = _mm512_permutex2var_ps(v0, even, v1), b = _mm512_permutex2var_ps(v0, odd, v1);
    const __m512 c = _mm512_permutex2var_ps(v2, even, v3), d = _mm512_permutex2var_ps(v2, odd, v3);
    // a: head 0 of positions 0-7 | head 1 of 0-7; c: the same for positions 8-15; b, d: heads 2, 3.
    const __m512 h0 = _mm512_shuffle_f32x4(a, c, 0x44), h1 = _mm512_shuffle_f32x4(a, c, 0xEE);
    const __m512 h2 = _mm512_shuffle_f32x4(b, d, 0x44), h3 = _mm512_shuffle_f32x4(b, d, 0xEE);
    __m512 acc = _mm512_loadu_ps(pg);
    acc = _mm512_add_ps(acc, h0);
    acc = _mm512_add_ps(acc, h1);
    acc = _mm512_add_ps(acc, h2);
    acc = _mm512_add_ps(acc, h3);
    _mm512_storeu_ps(pg, acc);
}
#endif

// Slot i: the tile's probabilities [Nc][ATTN_ROWS] and chunk bases [ceil(Nc / 64)][ATTN_ROWS]
// (attn_tile_forward_probs), pg [Nc][qb], ps [Ns][qb]. Same slot rule as above.
static size_t cmp_select_bases(const NsaShape *s) { return (size_t)(nsa_n_cmp(s) + ATTN_KEYS - 1) / ATTN_KEYS * ATTN_ROWS; }
static size_t cmp_select_slot_floats(const NsaShape *s) {
    const AttnGrid gr = attn_grid(s->B, s->T, s->H, s->G);
    const size_t Nc = (size_t)nsa_n_cmp(s);
    return Nc * ATTN_ROWS + cmp_select_bases(s) + (size_t)gr.qb * Nc + (size_t)gr.qb * nsa_n_slc(s);
}

size_t nsa_cmp_select_work_bytes(const NsaShape *s) {
    return (size_t)NSA_SELECT_SLOTS * cmp_select_slot_floats(s) * sizeof(float);
}

void nsa_cmp_attn_select_forward(float *o, float *lse, int32_t *idx, const float *q,
                                 const float *kc, const float *vc, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const int Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)G * Dh;
    const AttnGrid gr = attn_grid(s->B, T, H, G);
    const long tasks = (long)s->B * G * gr.nqb;
#pragma omp parallel for schedule(static, 1)
    for (int slot = 0; slot < NSA_SELECT_SLOTS; slot++) {
        float *sc = (float *)work + (size_t)slot * cmp_select_slot_floats(s);
        float *bases = sc + (size_t)Nc * ATTN_ROWS, *pg = bases + cmp_select_bases(s), *ps = pg + (size_t)gr.qb * Nc;
        // Costliest (last) position blocks first, spread over the slots.
        for (long task = slot; task < tasks; task += NSA_SELECT_SLOTS) {
            int qbi = gr.nqb - 1 - (int)(task / ((long)s->B * G)), g = (int)(task % G);
            int b = (int)(task / G % s->B), t0 = qbi * gr.qb, nt = nsa_imin(gr.qb, T - t0);
            const size_t kvoff = ((size_t)b * Nc * G + g) * Dh;
            for (size_t i = 0; i < (size_t)gr.qb * Nc; i++) pg[i] = 0.0f;
            for (int h0 = 0; h0 < rep; h0 += gr.hb) {
                const int hb = nsa_imin(gr.hb, rep - h0);
                AttnTile tl;
                attn_tile_rows(&tl, b, T, H, t0, NULL, nt, g * rep + h0, hb);
                for (int r = 0; r < tl.n; r++) tl.lo[r] = 0, tl.hi[r] = nsa_cmp_visible(s, Nc, tl.t[r]);
                attn_tile_forward_probs(o, lse, sc, bases, q, kc + kvoff, vc + kvoff, ks, &tl, Dh);
                // p_cmp exactly as attn_tile_probs recomputes it (the forward's exp(score -
                // base) times exp(base - lse) per chunk), summed over heads in head order: the
                // bits nsa_select gets, with one exp per row and chunk instead of per key.
                const int nvis = nsa_cmp_visible(s, Nc, t0 + nt - 1);
                float lser[ATTN_ROWS], p[ATTN_ROWS], f[ATTN_ROWS];
                for (int r = 0; r < ATTN_ROWS; r++)
                    lser[r] = r < tl.n && lse[tl.off[r]] != -INFINITY ? lse[tl.off[r]] : 0.0f;
                for (int c = 0; c < nvis; c++) {
                    const float *scc = sc + (size_t)c * ATTN_ROWS;
                    if (c % ATTN_KEYS == 0) {
                        const float *bc = bases + (size_t)c;  // chunk c / 64's row
#pragma omp simd
                        for (int r = 0; r < ATTN_ROWS; r++) f[r] = attn_expf(bc[r] - lser[r]);
                    }
#pragma omp simd
                    for (int r = 0; r < ATTN_ROWS; r++) p[r] = scc[r] * f[r];
                    // Rows of one position are adjacent (r = i * hb + h): add them in head
                    // order into pg [Nc][qb] (one vector of positions per block). A block a
                    // row cannot see adds exp(-inf) = +0, which leaves the sum's bits alone.
                    float *pgc = pg + (size_t)c * gr.qb;
#if defined(__AVX512F__)
                    if (hb == 4 && gr.qb == 16) {
                        add_heads4x16(pgc, p);
                        continue;
                    }
#endif
                    switch (hb) {  // a literal stride: gcc's gathers become permutes
                    case 4: add_heads(pgc, p, 4, gr.qb); break;
                    case 8: add_heads(pgc, p, 8, gr.qb); break;
                    case 2: add_heads(pgc, p, 2, gr.qb); break;
                    default: add_heads(pgc, p, hb, gr.qb); break;
                    }
                }
            }
            select_scores(ps, pg, gr.qb, (t0 + nt - 1) / s->slc_block + 1,
                          nsa_cmp_visible(s, Nc, t0 + nt - 1), s);
            select_topn_tile(idx + (((size_t)b * T + t0) * G + g) * n, (size_t)G * n, ps, gr.qb, t0, nt, s);
        }
    }
}
