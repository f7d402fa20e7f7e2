// test_nsa_select.c: top-n block selection (kernels/nsa_select.c) against a naive
// double-precision selection that follows DESIGN.md's Eq. 9-10 literally, forced blocks
// and the tie rule.
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/nsa_cmp.h"
#include "kernels/nsa_select.h"
#include "tests/kernel_ref.h"

typedef struct {
    double score;
    int j;
} Cand;

static int cand_cmp(const void *a, const void *b) {
    const Cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->j - y->j;
}

static int int_cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

// Naive selection of row (b, t, g) in double, following DESIGN.md literally. Returns 1 when
// the row's choice is clear (the last chosen score beats the first rejected one by 1e-4
// relative, or both are exact zeros where the tie rule decides), else 0.
static int naive_select_row(int *out, const float *q, const float *kc, const NsaShape *s,
                            int b, int t, int g) {
    const int H = s->H, G = s->G, Dh = s->Dh, rep = H / G, Nc = nsa_n_cmp(s);
    const int l = s->cmp_block, d = s->cmp_stride, lp = s->slc_block, n = s->slc_topn;
    double *pc = nsa_malloc((size_t)(rep * Nc + 1) * sizeof(double));  // p_cmp[h][i]
    for (int hh = 0; hh < rep; hh++) {
        int h = g * rep + hh;
        const float *qh = q + (((size_t)b * s->T + t) * H + h) * Dh;
        double mx = -INFINITY, sum = 0.0;
        for (int i = 0; i < Nc; i++) {
            double sc = -INFINITY;
            if (i * d + l - 1 <= t) {
                sc = 0.0;
                for (int e = 0; e < Dh; e++)
                    sc += (double)qh[e] * kc[(((size_t)b * Nc + i) * G + g) * Dh + e];
                sc /= sqrt((double)Dh);
            }
            pc[hh * Nc + i] = sc;
            if (sc > mx) mx = sc;
        }
        for (int i = 0; i < Nc; i++) {
            double p = pc[hh * Nc + i] == -INFINITY ? 0.0 : exp(pc[hh * Nc + i] - mx);
            pc[hh * Nc + i] = p;
            sum += p;
        }
        for (int i = 0; i < Nc; i++) pc[hh * Nc + i] = sum > 0.0 ? pc[hh * Nc + i] / sum : 0.0;
    }
    int jt = t / lp, ncand = jt + 1;
    Cand *c = nsa_malloc((size_t)ncand * sizeof(Cand));
    int nfree = 0, nout = 0, clear = 1;
    int forced[3] = {0, jt - 1, jt};
    for (int j = 0; j < ncand; j++) {
        double score = 0.0;  // Eq. 10 over heads of Eq. 9
        for (int hh = 0; hh < rep; hh++)
            for (int m = 0; m < lp / d; m++)
                for (int nn = 0; nn < l / d; nn++) {
                    int i = (lp / d) * j - (l / d - 1) + m + nn;
                    if (i >= 0 && i < Nc) score += pc[hh * Nc + i];
                }
        int is_forced = j == forced[0] || j == forced[1] || j == forced[2];
        if (ncand <= n) out[nout++] = j;
        else if (!is_forced) c[nfree++] = (Cand){score, j};
    }
    if (ncand > n) {
        for (int j = 0; j < ncand && nout < n; j++)  // forced, lowest ids first
            if (j == forced[0] || j == forced[1] || j == forced[2]) out[nout++] = j;
        qsort(c, nfree, sizeof(Cand), cand_cmp);
        int k = n - nout;
        if (k > 0 && k < nfree) {
            double last = c[k - 1].score, next = c[k].score;
            clear = (last == 0.0 && next == 0.0) || last - next > 1e-4 * last;
        }
        for (int i = 0; i < k; i++) out[nout++] = c[i].j;
        qsort(out, nout, sizeof(int), int_cmp);
    }
    for (int i = nout; i < n; i++) out[i] = -1;
    free(pc), free(c);
    return clear;
}

static void check_select_case(NsaShape s, uint64_t seed) {
    const int B = s.B, T = s.T, H = s.H, G = s.G, Dh = s.Dh, n = s.slc_topn, Nc = nsa_n_cmp(&s);
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)B * T * H * Dh, nc = (size_t)B * Nc * G * Dh;
    float *q = kref_randn(&r, nq, 1.0f), *kc = kref_randn(&r, nc, 1.0f), *vc = kref_randn(&r, nc, 1.0f);
    float *o = kref_zeros(nq), *lse = kref_zeros((size_t)B * T * H);
    int32_t *idx = nsa_malloc((size_t)B * T * G * n * sizeof(int32_t));
    void *work = nsa_malloc(nsa_select_work_bytes(&s));
    nsa_cmp_attn_forward(o, lse, q, kc, vc, &s);
    nsa_select(idx, q, kc, lse, work, &s);
    // The fused kernel (compressed forward + selection in one pass) against the two separate
    // ones: the same arithmetic, so identical bits and indices.
    {
        float *o2 = kref_zeros(nq), *lse2 = kref_zeros((size_t)B * T * H);
        int32_t *idx2 = nsa_malloc((size_t)B * T * G * n * sizeof(int32_t));
        void *w2 = nsa_malloc(nsa_cmp_select_work_bytes(&s));
        nsa_cmp_attn_select_forward(o2, lse2, idx2, q, kc, vc, w2, &s);
        cr_expect(memcmp(o, o2, nq * sizeof(float)) == 0, "fused: o differs");
        cr_expect(memcmp(lse, lse2, (size_t)B * T * H * sizeof(float)) == 0, "fused: lse differs");
        cr_expect(memcmp(idx, idx2, (size_t)B * T * G * n * sizeof(int32_t)) == 0, "fused: idx differs");
        free(o2), free(lse2), free(idx2), free(w2);
    }
    int *want = nsa_malloc((size_t)n * sizeof(int));
    long rows = 0, clear_rows = 0, bad = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int g = 0; g < G; g++) {
                const int32_t *got = idx + (((size_t)b * T + t) * G + g) * n;
                int clear = naive_select_row(want, q, kc, &s, b, t, g);
                rows++;
                clear_rows += clear;
                // Always: ascending ids, -1 only as trailing padding, count min(n, t/l'+1).
                int cnt = 0;
                for (int i = 0; i < n; i++) {
                    if (got[i] >= 0) {
                        cnt++;
                        if (i > 0 && (got[i - 1] < 0 || got[i - 1] >= got[i])) bad++;
                        if (got[i] * s.slc_block > t) bad++;
                    }
                }
                int ncand = t / s.slc_block + 1;
                if (cnt != (ncand < n ? ncand : n)) bad++;
                if (clear && memcmp(got, want, (size_t)n * sizeof(int)) != 0) {
                    if (bad < 5)
                        cr_log_error("b%d t%d g%d: got %d %d %d .. want %d %d %d ..", b, t, g,
                                     got[0], n > 1 ? got[1] : -9, n > 2 ? got[2] : -9, want[0],
                                     n > 1 ? want[1] : -9, n > 2 ? want[2] : -9);
                    bad++;
                }
            }
    cr_log_info("select T%d l%d d%d l'%d n%d: %ld/%ld rows with a clear margin", T, s.cmp_block,
                s.cmp_stride, s.slc_block, n, clear_rows, rows);
    cr_expect_eq(bad, 0, "T%d n%d: %ld rows differ from the naive selection", T, n, bad);
    // Random inputs: near-ties are rare; if many rows were skipped the test would be vacuous.
    cr_expect(clear_rows >= rows * 95 / 100, "only %ld/%ld rows clear", clear_rows, rows);
    free(q), free(kc), free(vc), free(o), free(lse), free(idx), free(work), free(want);
}

Test(nsa_select, matches_naive) {
    check_select_case(kref_nsa_shape(2, 200, 4, 2, 16, 16, 8, 16, 6), 31);  // T % l' != 0, top-n decides
    check_select_case(kref_nsa_shape(1, 300, 4, 2, 32, 32, 16, 64, 4), 32); // small-config blocks
    check_select_case(kref_nsa_shape(1, 64, 2, 1, 16, 16, 8, 16, 6), 33);   // n >= candidates
    check_select_case(kref_nsa_shape(1, 100, 4, 2, 16, 16, 8, 16, 1), 34);  // n = 1 < forced set
    check_select_case(kref_nsa_shape(1, 100, 4, 2, 16, 16, 8, 16, 2), 35);  // n = 2
    check_select_case(kref_nsa_shape(1, 77, 2, 2, 16, 8, 8, 8, 4), 36);     // l = d = l'
    check_select_case(kref_nsa_shape(1, 10, 2, 1, 16, 16, 4, 4, 2), 37);    // T < l: all scores 0
    check_select_case(kref_nsa_shape(1, 90, 130, 2, 8, 16, 8, 16, 4), 38);  // r = 65: two head chunks
    check_select_case(kref_nsa_shape(1, 700, 8, 2, 32, 32, 16, 64, 6), 39); // small's group: r = 4, 16 positions a tile
    // Past 64 compressed blocks: blocks whose windows straddle two 64-key chunks of the pooling
    // (select_fold adds both chunks' parts), with l' = 2d and with small's l' = 4d, l = 2d.
    check_select_case(kref_nsa_shape(1, 1100, 4, 2, 16, 16, 8, 16, 6), 40);
    check_select_case(kref_nsa_shape(1, 1300, 8, 2, 32, 32, 16, 64, 6), 41);
}

Test(nsa_select, forced_and_ties) {
    // All-zero scores (T < l, nothing visible): forced blocks, then lowest ids by the tie rule.
    NsaShape s = kref_nsa_shape(1, 15, 2, 1, 8, 32, 2, 2, 4);
    Rng r;
    rng_seed(&r, 5);
    size_t nq = (size_t)s.T * s.H * s.Dh;
    float *q = kref_randn(&r, nq, 1.0f), *lse = kref_zeros((size_t)s.T * s.H), kc[1];
    for (int i = 0; i < s.T * s.H; i++) lse[i] = -INFINITY;
    int32_t *idx = nsa_malloc((size_t)s.T * s.slc_topn * sizeof(int32_t));
    void *work = nsa_malloc(nsa_select_work_bytes(&s));
    nsa_select(idx, q, kc, lse, work, &s);
    const int32_t *row14 = idx + 14 * 4;  // t = 14: jt = 7, forced {0, 6, 7}, then 1
    cr_expect(row14[0] == 0 && row14[1] == 1 && row14[2] == 6 && row14[3] == 7, "%d %d %d %d",
              row14[0], row14[1], row14[2], row14[3]);
    const int32_t *row3 = idx + 3 * 4;  // t = 3: candidates {0, 1}
    cr_expect(row3[0] == 0 && row3[1] == 1 && row3[2] == -1 && row3[3] == -1);
    free(q), free(lse), free(idx), free(work);
}

// Exact ties everywhere: q = 0 makes p_cmp uniform, so every block that straddles the same
// number of compressed blocks scores the same. The fused kernel (vectorised entry test across
// a tile's positions) must pick exactly what the separate selection's scalar scan picks:
// forced blocks, then the lowest ids among equals.
// Case 2 adds what a best list must do with ties once it is full: keys 0.. score 0 (ties),
// the last compressed keys score higher, so later blocks beat the tied ones already listed
// and must push out the highest id among them (a list that put a later tie before an
// earlier one would drop the lowest instead). Case 3 has random scores and up to 75
// candidates, so the AVX-512 top-n switches from its level vectors to per-position lists
// in the middle of the scan; each case also runs with the lists from the first block.
Test(nsa_select, fused_ties_match_separate) {
    NsaShape shapes[4] = {kref_nsa_shape(1, 700, 8, 2, 32, 32, 16, 64, 6), kref_nsa_shape(2, 300, 4, 4, 16, 16, 8, 16, 5),
                          kref_nsa_shape(1, 2048, 8, 2, 32, 32, 16, 64, 16),
                          kref_nsa_shape(1, 1200, 4, 2, 16, 16, 8, 16, 16)};
    for (int c = 0; c < 4; c++) {
        NsaShape s = shapes[c];
        const int B = s.B, T = s.T, H = s.H, G = s.G, Dh = s.Dh, n = s.slc_topn, Nc = nsa_n_cmp(&s);
        Rng r;
        rng_seed(&r, 61 + c);
        size_t nq = (size_t)B * T * H * Dh, nc = (size_t)B * Nc * G * Dh;
        float *q = kref_zeros(nq), *kc = kref_randn(&r, nc, 1.0f), *vc = kref_randn(&r, nc, 1.0f);
        float *o = kref_zeros(nq), *lse = kref_zeros((size_t)B * T * H), *o2 = kref_zeros(nq);
        float *lse2 = kref_zeros((size_t)B * T * H);
        int32_t *idx = nsa_malloc((size_t)B * T * G * n * sizeof(int32_t)), *idx2 = nsa_malloc((size_t)B * T * G * n * sizeof(int32_t));
        void *w = nsa_malloc(nsa_select_work_bytes(&s)), *w2 = nsa_malloc(nsa_cmp_select_work_bytes(&s));
        if (c == 2) {  // q = 1, kc = 0 but for the last 64 of 127 compressed keys (blocks 16 ..)
            for (size_t i = 0; i < nq; i++) q[i] = 1.0f;
            for (int i = 0; i < Nc; i++)
                for (int e = 0; e < G * Dh; e++) kc[(size_t)i * G * Dh + e] = i >= Nc - 64 ? 0.05f : 0.0f;
        }
        if (c == 3)  // random scores, up to 75 candidates: the AVX-512 top-n switches mid-scan
            for (size_t i = 0; i < nq; i++) q[i] = (float)rng_normal(&r);
        // On every kernel path the machine has: the AVX-512 and AVX2 top-n keep their level
        // lists in vectors, the portable one in arrays; the AVX-512 one also with its
        // per-position lists from the first block (0) and never (INT_MAX).
        const AttnPath paths[5] = {ATTN_PATH_AVX512, ATTN_PATH_AVX512, ATTN_PATH_AVX512, ATTN_PATH_AVX2, ATTN_PATH_REF};
        const int lists_from[5] = {-1, 0, INT_MAX, -1, -1};
        for (int p = 0; p < 5; p++) {
            if (!attn_path_supported(paths[p])) continue;
            nsa_cpu.attn_path = paths[p];
            nsa_topn_lists_from = lists_from[p];
            nsa_cmp_attn_forward(o, lse, q, kc, vc, &s);
            nsa_select(idx, q, kc, lse, w, &s);
            nsa_cmp_attn_select_forward(o2, lse2, idx2, q, kc, vc, w2, &s);
            cr_expect(memcmp(idx, idx2, (size_t)B * T * G * n * sizeof(int32_t)) == 0,
                      "shape %d, %s path (lists from %d): fused idx differs", c, attn_path_name(), lists_from[p]);
            if (c == 3) continue;  // no ties
            // The tie rule, spelled out at the last position: forced 0, jt-1, jt, then 1, 2, ...
            // Case 2 at position 1100 (jt = 17): forced 0, 16, 17; block 15 straddles a higher
            // key and enters last, pushing the highest of the tied 1 .. 14 out: 1 .. 12 stay.
            const int t = c == 2 ? 1100 : T - 1, jt = t / s.slc_block;
            const int32_t *row = idx2 + ((size_t)t * G) * n;
            if (c < 2) {
                cr_expect(row[0] == 0 && row[1] == 1 && row[n - 2] == jt - 1 && row[n - 1] == jt,
                          "shape %d: %d %d .. %d %d", c, row[0], row[1], row[n - 2], row[n - 1]);
            } else {
                int ok = 1;
                for (int a = 0; a < n; a++) ok &= row[a] == (a <= 12 ? a : a + 2);
                cr_expect(ok, "case 2: %d %d .. %d %d %d", row[0], row[1], row[13], row[14], row[15]);
            }
        }
        nsa_cpu.attn_path = ATTN_PATH_AUTO;
        nsa_topn_lists_from = -1;
        free(q), free(kc), free(vc), free(o), free(lse), free(o2), free(lse2), free(idx), free(idx2), free(w), free(w2);
    }
}

// The fused forward's pooled probabilities and factors (attn_tile_forward_pool,
// attn_pool_factors) against the recomputation every other selection uses (attn_tile_probs,
// attn_pool_chunk), bit for bit, and attn_pool_chunk against Eq. 9's sums written out: over
// head sizes (literal and not), pool geometries, partial last chunks and rows that see
// fewer keys than the tile (padding rows past n are never used and not compared).
Test(nsa_select, pool_matches_recomputed) {
    const struct {
        int Dh, a, bq, nk, n;
    } cases[] = {{32, 4, 2, 200, 64}, {16, 1, 1, 64, 37}, {24, 3, 2, 150, 64}, {32, 2, 4, 1, 10}, {16, 4, 2, 130, 5},
                 {16, 2, 2, 100, 20}};  // (a, bq) = (4, 2) and (2, 2) take pool_chunk's literal paths
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int Dh = cases[c].Dh, nk = cases[c].nk, n = cases[c].n, L = ATTN_ROWS;
        const AttnPool pool = {.a = cases[c].a, .bq = cases[c].bq};
        const int jb = attn_pool_max(&pool), nch = (nk + L - 1) / L;
        Rng r;
        rng_seed(&r, 70 + c);
        float *q = kref_randn(&r, (size_t)n * Dh, 1.5f), *k = kref_randn(&r, (size_t)nk * Dh, 1.0f);
        float *v = kref_randn(&r, (size_t)nk * Dh, 1.0f), *o = kref_zeros((size_t)n * Dh), *lse = kref_zeros(n);
        float *part = kref_zeros((size_t)nch * jb * L), *fb = kref_zeros((size_t)nch * L);
        float *part2 = kref_zeros((size_t)nch * jb * L), *f2 = kref_zeros((size_t)nch * L), P[ATTN_KEYS * ATTN_ROWS];
        AttnTile tl = {.n = n};
        for (int i = 0; i < n; i++) {
            tl.off[i] = (size_t)i, tl.t[i] = i, tl.lo[i] = 0;
            tl.hi[i] = i == 0 ? nk : (int)rng_below(&r, (uint64_t)nk + 1);  // some rows see nothing
        }
        attn_tile_forward_pool(o, lse, part, fb, &pool, q, k, v, (size_t)Dh, &tl, Dh);
        attn_pool_factors(fb, nch, lse, &tl);
        float m[ATTN_ROWS];
        for (int i = 0; i < L; i++) m[i] = -INFINITY;
        long bad = 0, badpool = 0;
        for (int ch = 0; ch < nch; ch++) {
            const int c0 = ch * L, kn = nk - c0 < L ? nk - c0 : L, j0 = attn_pool_first(&pool, c0);
            const int nj = attn_pool_count(&pool, c0, kn);
            attn_tile_probs(P, f2 + (size_t)c0, m, q, lse, k, (size_t)Dh, &tl, c0, kn, Dh);
            attn_pool_chunk(part2 + (size_t)ch * jb * L, P, c0, kn, &pool);
            cr_assert(nj <= jb);
            for (int i = 0; i < n; i++) {
                bad += memcmp(&fb[(size_t)c0 + i], &f2[(size_t)c0 + i], sizeof(float)) != 0;
                for (int jj = 0; jj < nj; jj++) {
                    const size_t at = ((size_t)ch * jb + jj) * L + i;
                    bad += memcmp(&part[at], &part2[at], sizeof(float)) != 0;
                    // Eq. 9 over this chunk's keys: each key of the window once, ascending, times
                    // the number of (m, nn) that reach it, counted here by walking them
                    float want = 0.0f;
                    for (int cc = 0; cc < pool.a + pool.bq - 1; cc++) {
                        const int key = pool.a * (j0 + jj) - (pool.bq - 1) + cc;
                        int reach = 0;
                        for (int mm = 0; mm < pool.a; mm++)
                            for (int nn = 0; nn < pool.bq; nn++) reach += mm + nn == cc;
                        if (key >= c0 && key < c0 + kn) want = fmaf((float)reach, P[(key - c0) * L + i], want);
                    }
                    badpool += memcmp(&want, &part2[at], sizeof(float)) != 0;
                }
            }
            // Every window that holds a key of the chunk is among those counted.
            for (int key = c0; key < c0 + kn; key++)
                for (int j = 0; j <= key + 1; j++) {
                    const int lo = pool.a * j - (pool.bq - 1), hi = lo + (pool.a - 1) + (pool.bq - 1);
                    if (key >= lo && key <= hi)
                        cr_expect(j >= j0 && j < j0 + nj, "case %zu key %d: window %d outside %d + %d", c, key, j,
                                  j0, nj);
                }
        }
        cr_expect_eq(bad, 0, "case %zu: %ld pooled values or factors differ from the recomputation", c, bad);
        cr_expect_eq(badpool, 0, "case %zu: %ld pools differ from Eq. 9 written out", c, badpool);
        free(q), free(k), free(v), free(o), free(lse), free(part), free(fb), free(part2), free(f2);
    }
}

// The head sum of the selection (Eq. 10) against the sum written out, heads in order, bit for
// bit: values spread over six decades so that any other order of the additions changes the
// result (and the block choices only rarely, which is why the index comparisons above cannot
// be relied on for it).
Test(nsa_select, add_heads_order) {
    const int shapes[][2] = {{4, 16}, {2, 32}, {8, 8}, {3, 21}, {1, 64}};
    Rng r;
    rng_seed(&r, 81);
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const int hb = shapes[c][0], nt = shapes[c][1];
        float ph[ATTN_ROWS], ps[ATTN_ROWS], want[ATTN_ROWS];
        for (int i = 0; i < ATTN_ROWS; i++)
            ph[i] = (float)(exp(rng_uniform(&r) * 14.0 - 7.0) * rng_uniform(&r)), ps[i] = (float)rng_uniform(&r);
        for (int i = 0; i < nt; i++) {
            want[i] = ps[i];
            for (int h = 0; h < hb; h++) want[i] += ph[h * nt + i];
        }
        nsa_select_add_heads(ps, ph, hb, nt);
        cr_expect(memcmp(ps, want, (size_t)nt * sizeof(float)) == 0, "hb %d nt %d: head sum differs", hb, nt);
    }
}
