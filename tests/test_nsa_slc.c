// test_nsa_slc.c: selected-block attention through the index (kernels/nsa_slc.c) against
// the materialising reference (kernels/nsa_ref.c) and both against a naive double loop;
// the index path's workspace does not grow with l' or Dh.
#include <criterion/criterion.h>
#include <omp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/nsa.h"
#include "tests/kernel_ref.h"

static int int_cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

// Float32 vs double: 1e-5 of the scale forward, 2e-5 backward (reasons in test_attention.c;
// observed here <= 2.5e-7 and <= 1e-6).
#define FWD_TOL 1e-5
#define BWD_TOL 2e-5

// Random valid selections: ascending distinct candidates, some rows short, a few empty.
static void random_idx(int32_t *idx, Rng *r, const NsaShape *s) {
    const int n = s->slc_topn;
    int *perm = nsa_malloc((size_t)nsa_n_slc(s) * sizeof(int));
    for (size_t row = 0; row < (size_t)s->B * s->T * s->G; row++) {
        int t = (int)(row / s->G % s->T), ncand = t / s->slc_block + 1;
        int k = ncand < n ? ncand : n;
        uint64_t u = rng_below(r, 100);
        if (u < 2) k = 0;
        else if (u < 12 && k > 1) k--;
        for (int j = 0; j < ncand; j++) perm[j] = j;
        for (int i = 0; i < k; i++) {
            int pick = i + (int)rng_below(r, (uint64_t)(ncand - i));
            int tmp = perm[i];
            perm[i] = perm[pick], perm[pick] = tmp;
        }
        qsort(perm, k, sizeof(int), int_cmp);
        for (int i = 0; i < n; i++) idx[row * n + i] = i < k ? perm[i] : -1;
    }
    free(perm);
}

// The selection cmp_fn=mean would produce: nsa_select over mean-pooled keys.
static void select_from_mean(int32_t *idx, const float *q, const float *k, const float *v, const NsaShape *s) {
    const int Nc = nsa_n_cmp(s);
    const size_t nc = (size_t)s->B * Nc * s->G * s->Dh, nq = (size_t)s->B * s->T * s->H * s->Dh;
    float *kc = kref_zeros(nc), *vc = kref_zeros(nc), *oc = kref_zeros(nq), *lc = kref_zeros(nq / s->Dh);
    void *sw = nsa_malloc(nsa_select_work_bytes(s));
    nsa_cmp_mean_forward(kc, k, s);
    nsa_cmp_mean_forward(vc, v, s);
    nsa_cmp_attn_forward(oc, lc, q, kc, vc, s);
    nsa_select(idx, q, kc, lc, sw, s);
    free(kc), free(vc), free(oc), free(lc), free(sw);
}

static void check_slc_case(NsaShape s, uint64_t seed, int use_select) {
    const int B = s.B, T = s.T, H = s.H, G = s.G, Dh = s.Dh, n = s.slc_topn, rep = H / G;
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * G * Dh, nl = (size_t)B * T * H;
    float *q = kref_randn(&r, nq, 1.0f), *k = kref_randn(&r, nk, 1.0f), *v = kref_randn(&r, nk, 1.0f);
    float *dout = kref_randn(&r, nq, 1.0f);
    int32_t *idx = nsa_malloc((size_t)B * T * G * n * sizeof(int32_t));
    if (use_select) {
        select_from_mean(idx, q, k, v, &s);
    } else {
        random_idx(idx, &r, &s);
    }
    float *o = kref_zeros(nq), *lse = kref_zeros(nl), *dq = kref_zeros(nq), *dk = kref_zeros(nk);
    float *dv = kref_zeros(nk), *o2 = kref_zeros(nq), *lse2 = kref_zeros(nl), *dq2 = kref_zeros(nq);
    float *dk2 = kref_zeros(nk), *dv2 = kref_zeros(nk);
    void *work = nsa_malloc(nsa_slc_attn_backward_work_bytes(&s));
    void *rwork = nsa_malloc(nsa_slc_attn_ref_work_bytes(&s));
    nsa_slc_attn_forward(o, lse, q, k, v, idx, &s);
    nsa_slc_attn_backward(dq, dk, dv, dout, q, k, v, o, lse, idx, work, &s);
    nsa_slc_attn_forward_ref(o2, lse2, q, k, v, idx, rwork, &s);
    nsa_slc_attn_backward_ref(dq2, dk2, dv2, dout, q, k, v, o2, lse2, idx, rwork, &s);

    // Index path vs materialising path, both float32 with different summation orders
    // (online vs two-pass softmax, tiles vs one pass): 2e-6 forward, 1e-5 backward.
    double f[5] = {kref_rel_err_ff(o, o2, nq), kref_rel_err_ff(lse, lse2, nl), kref_rel_err_ff(dq, dq2, nq),
                   kref_rel_err_ff(dk, dk2, nk), kref_rel_err_ff(dv, dv2, nk)};
    cr_expect(f[0] <= 2e-6 && f[1] <= 2e-6, "vs ref: o %g lse %g", f[0], f[1]);
    cr_expect(f[2] <= 1e-5 && f[3] <= 1e-5 && f[4] <= 1e-5, "vs ref: dq %g dk %g dv %g", f[2],
              f[3], f[4]);

    double *ro = kref_dzeros(nq), *rl = kref_dzeros(nl), *rdq = kref_dzeros(nq);
    double *rdk = kref_dzeros(nk), *rdv = kref_dzeros(nk);
    int *keys = nsa_malloc((size_t)n * s.slc_block * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                int g = h / rep, nkeys = 0;
                const int32_t *sel = idx + (((size_t)b * T + t) * G + g) * n;
                for (int i = 0; i < n; i++)
                    for (int p = sel[i] * s.slc_block; sel[i] >= 0 && p < (sel[i] + 1) * s.slc_block; p++)
                        if (p <= t) keys[nkeys++] = p;
                size_t qi = ((size_t)b * T + t) * H + h, kvo = ((size_t)b * T * G + g) * Dh;
                kref_attention_row(ro + qi * Dh, rl + qi, rdq + qi * Dh, rdk + kvo, rdv + kvo,
                                   q + qi * Dh, dout + qi * Dh, k + kvo, v + kvo, keys, nkeys, G, Dh);
            }
    double e[5] = {kref_rel_err(o, ro, nq), kref_rel_err(lse, rl, nl), kref_rel_err(dq, rdq, nq),
                   kref_rel_err(dk, rdk, nk), kref_rel_err(dv, rdv, nk)};
    cr_log_info("slc T%d l'%d n%d: vs ref o %.1e dq %.1e dk %.1e | vs double o %.1e lse %.1e "
                "dq %.1e dk %.1e dv %.1e", T, s.slc_block, n, f[0], f[2], f[3], e[0], e[1], e[2],
                e[3], e[4]);
    cr_expect(e[0] <= FWD_TOL && e[1] <= FWD_TOL, "vs double: o %g lse %g", e[0], e[1]);
    cr_expect(e[2] <= BWD_TOL && e[3] <= BWD_TOL && e[4] <= BWD_TOL,
              "vs double: dq %g dk %g dv %g", e[2], e[3], e[4]);
    // The materialising reference (kernels/nsa_ref.c) against the same double loop.
    double er[5] = {kref_rel_err(o2, ro, nq), kref_rel_err(lse2, rl, nl), kref_rel_err(dq2, rdq, nq),
                    kref_rel_err(dk2, rdk, nk), kref_rel_err(dv2, rdv, nk)};
    cr_expect(er[0] <= FWD_TOL && er[1] <= FWD_TOL && er[2] <= BWD_TOL && er[3] <= BWD_TOL && er[4] <= BWD_TOL,
              "ref vs double: o %g lse %g dq %g dk %g dv %g", er[0], er[1], er[2], er[3], er[4]);
    free(q), free(k), free(v), free(dout), free(idx), free(o), free(lse), free(dq), free(dk);
    free(dv), free(o2), free(lse2), free(dq2), free(dk2), free(dv2), free(work), free(rwork);
    free(ro), free(rl), free(rdq), free(rdk), free(rdv), free(keys);
}

Test(nsa_slc, index_vs_ref_and_double) {
    check_slc_case(kref_nsa_shape(2, 100, 4, 2, 16, 16, 8, 16, 3), 41, 0);
    check_slc_case(kref_nsa_shape(1, 130, 2, 1, 32, 16, 8, 8, 5), 42, 0);   // l' = 8: blocks merge
    check_slc_case(kref_nsa_shape(1, 200, 4, 4, 24, 16, 8, 64, 2), 43, 0);  // l' = tile, generic Dh
    check_slc_case(kref_nsa_shape(1, 1, 2, 1, 16, 16, 8, 16, 3), 44, 0);    // T = 1
    check_slc_case(kref_nsa_shape(1, 300, 2, 1, 16, 16, 8, 128, 3), 46, 0); // l' = 128: 2 chunks/block
    check_slc_case(kref_nsa_shape(1, 90, 4, 2, 5, 16, 8, 16, 3), 47, 0);    // odd head size
    check_slc_case(kref_nsa_shape(2, 160, 4, 2, 32, 16, 8, 16, 5), 45, 1);  // idx from nsa_select
    check_slc_case(kref_nsa_shape(1, 150, 6, 2, 16, 16, 8, 16, 3), 48, 0);  // r = 3: lanes one by one
    check_slc_case(kref_nsa_shape(1, 90, 10, 2, 8, 16, 8, 16, 4), 49, 0);   // r = 5: positions split over groups
    check_slc_case(kref_nsa_shape(1, 40, 32, 1, 8, 16, 8, 16, 3), 50, 0);   // r = 32: one group of rows
    check_slc_case(kref_nsa_shape(1, 40, 16, 1, 8, 16, 8, 16, 3), 52, 0);   // r = 16: half a group
    check_slc_case(kref_nsa_shape(1, 24, 64, 1, 8, 16, 8, 16, 3), 53, 0);   // r = 64 > one group
    check_slc_case(kref_nsa_shape(4, 100, 4, 2, 16, 16, 8, 16, 3), 51, 0);  // B*G = 8: one backward task per group
    // Many blocks: 2048-position tiles where the L2 is large (or unknown), 1024 where it is
    // small (kernels/nsa_slc.c); both, whatever this machine's L2.
    const long l2 = nsa_cpu.l2_bytes;
    nsa_cpu.l2_bytes = 0;
    check_slc_case(kref_nsa_shape(1, 2100, 2, 1, 8, 16, 8, 8, 1), 54, 0);
    nsa_cpu.l2_bytes = 512 * 1024;
    check_slc_case(kref_nsa_shape(1, 2100, 2, 1, 8, 16, 8, 8, 1), 54, 0);
    nsa_cpu.l2_bytes = l2;
}

// The index path's work: D and the inverse index, O(B·T·(H + G·n)), plus partial dk, dv
// (2·B·G·chunks·T·Dh floats) while B·G is too small to keep two threads busy without
// splitting a group's heads; never O(l') per query like the materialising reference.
Test(nsa_slc, backward_work_does_not_materialise) {
    NsaShape s = kref_nsa_shape(1, 2048, 8, 2, 32, 32, 16, 64, 8);
    size_t fast = nsa_slc_attn_backward_work_bytes(&s), ref = nsa_slc_attn_ref_work_bytes(&s);
    cr_log_info("T=2048 n=8 l'=64 Dh=32 G=2 H=8: index path work %zu bytes, materialising %zu", fast, ref);
    // Measured 4,391,232 B (4.2 MB of it the partials of 4 head chunks) vs 537,006,080 B.
    cr_expect(fast * 100 < ref, "index path %zu B vs ref %zu B", fast, ref);
    const AttnBwdSplit d = attn_bwd_split(s.B, s.G, s.H / s.G);
    cr_expect(d.nhc == 4, "B*G = 2: the group's 4 heads in 4 chunks, got %d", d.nhc);
    const size_t index = (size_t)s.T * (s.H + s.G * s.slc_topn) * 4 + 1024;
    cr_expect(fast <= index + 2 * (size_t)s.G * d.nhc * s.T * s.Dh * 4, "%zu B", fast);
    NsaShape s2 = s;  // l' x4: unchanged
    s2.slc_block = 256;
    cr_expect(nsa_slc_attn_backward_work_bytes(&s2) <= fast + 1024);
    NsaShape s3 = s;  // B*G = 16: no head chunks, no partials
    s3.B = 8;
    cr_expect(nsa_slc_attn_backward_work_bytes(&s3) <= 8 * index, "%zu B", nsa_slc_attn_backward_work_bytes(&s3));
}

// The model's path where one k, v serves the selected and window branches and
// nsa_slc_head_shared holds: attn_window_head_forward gives each row the window's output
// and its attention over the window's head (blocks ⌊t/l'⌋ − 1 and ⌊t/l'⌋), and
// nsa_slc_attn_forward_head continues from that head. The head against a double loop over
// its keys; the window and selected outputs against attn_forward and nsa_slc_attn_forward
// (float32 both, keys in another order: 2e-6, observed <= 1.3e-6 at 8k) and against double
// loops; and the same bits with 1 and 2 threads and on every path.
static void check_head_case(NsaShape s, uint64_t seed) {
    const int B = s.B, T = s.T, H = s.H, G = s.G, Dh = s.Dh, n = s.slc_topn, rep = H / G, lp = s.slc_block;
    cr_assert(nsa_slc_head_shared(&s));
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * G * Dh, nl = (size_t)B * T * H;
    float *q = kref_randn(&r, nq, 1.5f), *k = kref_randn(&r, nk, 1.0f), *v = kref_randn(&r, nk, 1.0f);
    int32_t *idx = nsa_malloc((size_t)B * T * G * n * sizeof(int32_t));
    select_from_mean(idx, q, k, v, &s);
    // The separate kernels.
    float *ow0 = kref_zeros(nq), *lw0 = kref_zeros(nl), *os0 = kref_zeros(nq), *ls0 = kref_zeros(nl);
    attn_forward(ow0, lw0, q, k, v, B, T, H, G, Dh, s.window);
    nsa_slc_attn_forward(os0, ls0, q, k, v, idx, &s);
    // threads, path: as test_nsa.c's runs
    const int runs[4][2] = {{1, ATTN_PATH_AUTO}, {2, ATTN_PATH_AUTO}, {1, ATTN_PATH_REF}, {1, ATTN_PATH_AVX2}};
    enum { OW, LW, OH, LH, OS, LS, NOUT };
    const size_t sizes[NOUT] = {nq, nl, nq, nl, nq, nl};
    float *out[4][NOUT];
    for (int run = 0; run < 4; run++) {
        omp_set_num_threads(runs[run][0]);
        nsa_cpu.attn_path = attn_path_supported(runs[run][1]) ? runs[run][1] : ATTN_PATH_REF;
        float **x = out[run];
        for (int a = 0; a < NOUT; a++) x[a] = kref_zeros(sizes[a]);
        attn_window_head_forward(x[OW], x[LW], x[OS], x[LS], q, k, v, B, T, H, G, Dh, s.window, lp);
        memcpy(x[OH], x[OS], nq * sizeof(float));
        memcpy(x[LH], x[LS], nl * sizeof(float));
        nsa_slc_attn_forward_head(x[OS], x[LS], q, k, v, idx, &s);
    }
    nsa_cpu.attn_path = ATTN_PATH_AUTO;
    omp_set_num_threads(2);
    for (int run = 1; run < 4; run++)
        for (int a = 0; a < NOUT; a++)
            cr_expect(memcmp(out[0][a], out[run][a], sizes[a] * sizeof(float)) == 0, "output %d differs in run %d", a,
                      run);
    float **x = out[0];
    const double fw[4] = {kref_rel_err_ff(x[OW], ow0, nq), kref_rel_err_ff(x[LW], lw0, nl),
                          kref_rel_err_ff(x[OS], os0, nq), kref_rel_err_ff(x[LS], ls0, nl)};
    cr_expect(fw[0] <= 2e-6 && fw[1] <= 2e-6, "window vs attn_forward: o %g lse %g", fw[0], fw[1]);
    cr_expect(fw[2] <= 2e-6 && fw[3] <= 2e-6, "selected vs nsa_slc_attn_forward: o %g lse %g", fw[2], fw[3]);
    // Double loops: the head's keys [l'(⌊t/l'⌋ − 1), t], the selected blocks' and the window's.
    double *ro[3], *rl[3];
    for (int c = 0; c < 3; c++) ro[c] = kref_dzeros(nq), rl[c] = kref_dzeros(nl);
    int *keys = nsa_malloc(((size_t)n * lp + s.window + T) * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                const int g = h / rep, jt = t / lp;
                const int32_t *sel = idx + (((size_t)b * T + t) * G + g) * n;
                size_t qi = ((size_t)b * T + t) * H + h, kvo = ((size_t)b * T * G + g) * Dh;
                for (int c = 0; c < 3; c++) {
                    int nkeys = 0;
                    if (c == 0)
                        for (int p = jt >= 1 ? (jt - 1) * lp : 0; p <= t; p++) keys[nkeys++] = p;
                    if (c == 1)
                        for (int i = 0; i < n; i++)
                            for (int p = sel[i] * lp; sel[i] >= 0 && p < (sel[i] + 1) * lp && p <= t; p++)
                                keys[nkeys++] = p;
                    if (c == 2)
                        for (int p = t - s.window + 1 > 0 ? t - s.window + 1 : 0; p <= t; p++) keys[nkeys++] = p;
                    kref_attention_row(ro[c] + qi * Dh, rl[c] + qi, NULL, NULL, NULL, q + qi * Dh, NULL, k + kvo,
                                       v + kvo, keys, nkeys, G, Dh);
                }
            }
    const double e[6] = {kref_rel_err(x[OH], ro[0], nq), kref_rel_err(x[LH], rl[0], nl),
                         kref_rel_err(x[OS], ro[1], nq), kref_rel_err(x[LS], rl[1], nl),
                         kref_rel_err(x[OW], ro[2], nq), kref_rel_err(x[LW], rl[2], nl)};
    cr_log_info("head T%d l'%d n%d w%d: vs separate kernels window %.1e selected %.1e | vs double head %.1e "
                "selected %.1e window %.1e", T, lp, n, s.window, fw[0], fw[2], e[0], e[2], e[4]);
    for (int c = 0; c < 3; c++)
        cr_expect(e[2 * c] <= FWD_TOL && e[2 * c + 1] <= FWD_TOL, "%s vs double: o %g lse %g",
                  c == 0 ? "head" : c == 1 ? "selected" : "window", e[2 * c], e[2 * c + 1]);
    for (int run = 0; run < 4; run++)
        for (int a = 0; a < NOUT; a++) free(out[run][a]);
    for (int c = 0; c < 3; c++) free(ro[c]), free(rl[c]);
    free(q), free(k), free(v), free(idx);
    free(ow0), free(lw0), free(os0), free(ls0), free(keys);
}

Test(nsa_slc, window_head_continues_to_the_same_attention) {
    NsaShape s = kref_nsa_shape(2, 160, 4, 2, 32, 16, 8, 16, 5);  // window 32 = 2 l'
    check_head_case(s, 61);
    s = kref_nsa_shape(1, 300, 2, 2, 16, 16, 8, 32, 3);  // r = 1: 64-position tiles over blocks of 32
    s.window = 100;
    check_head_case(s, 62);
    s = kref_nsa_shape(1, 400, 8, 2, 32, 32, 16, 64, 6);  // `small`'s shape: l' 64, n 6, w 128
    s.window = 128;
    check_head_case(s, 63);
    s = kref_nsa_shape(1, 90, 10, 2, 5, 16, 8, 16, 4);  // r = 5, odd head size
    check_head_case(s, 64);
    s = kref_nsa_shape(1, 1, 2, 1, 16, 16, 8, 16, 3);  // T = 1
    check_head_case(s, 65);
}
