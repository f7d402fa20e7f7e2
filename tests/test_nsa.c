// test_nsa.c: the NSA kernels together: shape arithmetic (kernels/nsa_shape.c) and every
// kernel, fed from the previous one as the layer would, bit-identical with 1 and 2 threads
// and on every kernel path this machine has (portable, AVX2, AVX-512).
#include <criterion/criterion.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/nsa.h"
#include "tests/kernel_ref.h"

// Every kernel, fed from the previous one as the layer would, with 1 and 2 threads and with
// the portable and AVX2 kernel paths.
static void check_threads_and_paths(NsaShape s) {
    const int B = s.B, T = s.T, H = s.H, G = s.G, Dh = s.Dh, l = s.cmp_block, n = s.slc_topn;
    const int Nc = nsa_n_cmp(&s);
    Rng r;
    rng_seed(&r, 51);
    size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * G * Dh, nl = (size_t)B * T * H;
    size_t nb = (size_t)B * Nc * G * l * Dh, nc = (size_t)B * Nc * G * Dh, ni = (size_t)B * T * G * n;
    float *q = kref_randn(&r, nq, 1.0f), *k = kref_randn(&r, nk, 1.0f), *v = kref_randn(&r, nk, 1.0f);
    float *pe = kref_randn(&r, (size_t)l * Dh, 1.0f), *dout = kref_randn(&r, nq, 1.0f);
    float *dblocks = kref_randn(&r, nb, 1.0f), *dmean = kref_randn(&r, nc, 1.0f);
    enum { BLK, DXG, DPE, KC, VC, DXM, OC, LC, DQC, DKC, DVC, OS, LS, DQS, DKS, DVS, OF, LF, NOUT };
    const size_t sizes[NOUT] = {nb, nk, (size_t)l * Dh, nc, nc, nk, nq, nl, nq, nc, nc,
                                nq, nl, nq, nk, nk, nq, nl};
    float *out[4][NOUT];
    int32_t *idx[4], *idxf[4];
    // threads, path: the fastest path built, then the portable and the AVX2 ones (the
    // portable one again where AVX2 is missing); on an AVX-512 machine all three
    const int runs[4][2] = {{1, ATTN_PATH_AUTO}, {2, ATTN_PATH_AUTO}, {1, ATTN_PATH_REF}, {1, ATTN_PATH_AVX2}};
    size_t wb = nsa_select_work_bytes(&s);
    if (nsa_cmp_select_work_bytes(&s) > wb) wb = nsa_cmp_select_work_bytes(&s);
    if (nsa_cmp_attn_backward_work_bytes(&s) > wb) wb = nsa_cmp_attn_backward_work_bytes(&s);
    if (nsa_slc_attn_backward_work_bytes(&s) > wb) wb = nsa_slc_attn_backward_work_bytes(&s);
    void *work = nsa_malloc(wb);
    for (int run = 0; run < 4; run++) {
        omp_set_num_threads(runs[run][0]);
        nsa_cpu.attn_path = attn_path_supported(runs[run][1]) ? runs[run][1] : ATTN_PATH_REF;
        float **x = out[run];
        for (int a = 0; a < NOUT; a++) x[a] = kref_zeros(sizes[a]);
        idx[run] = nsa_malloc(ni * sizeof(int32_t));
        nsa_cmp_gather_forward(x[BLK], k, pe, &s);
        nsa_cmp_gather_backward(x[DXG], x[DPE], dblocks, &s);
        nsa_cmp_mean_forward(x[KC], k, &s);
        nsa_cmp_mean_forward(x[VC], v, &s);
        nsa_cmp_mean_backward(x[DXM], dmean, &s);
        nsa_cmp_attn_forward(x[OC], x[LC], q, x[KC], x[VC], &s);
        nsa_cmp_attn_backward(x[DQC], x[DKC], x[DVC], dout, q, x[KC], x[VC], x[OC], x[LC], work, &s);
        nsa_select(idx[run], q, x[KC], x[LC], work, &s);
        idxf[run] = nsa_malloc(ni * sizeof(int32_t));
        nsa_cmp_attn_select_forward(x[OF], x[LF], idxf[run], q, x[KC], x[VC], work, &s);
        nsa_slc_attn_forward(x[OS], x[LS], q, k, v, idx[run], &s);
        nsa_slc_attn_backward(x[DQS], x[DKS], x[DVS], dout, q, k, v, x[OS], x[LS], idx[run], work, &s);
    }
    nsa_cpu.attn_path = ATTN_PATH_AUTO;
    for (int run = 1; run < 4; run++) {
        const char *what = run == 1 ? "between 1 and 2 threads" : run == 2 ? "from the portable path" : "from the AVX2 path";
        for (int a = 0; a < NOUT; a++)
            cr_expect(memcmp(out[0][a], out[run][a], sizes[a] * sizeof(float)) == 0, "output %d differs %s", a,
                      what);
        cr_expect(memcmp(idx[0], idx[run], ni * sizeof(int32_t)) == 0, "selection differs %s", what);
        cr_expect(memcmp(idxf[0], idxf[run], ni * sizeof(int32_t)) == 0, "fused selection differs %s", what);
    }
    for (int run = 0; run < 4; run++) {
        for (int a = 0; a < NOUT; a++) free(out[run][a]);
        free(idx[run]), free(idxf[run]);
    }
    free(q), free(k), free(v), free(pe), free(dout), free(dblocks);
    free(dmean), free(work);
}

Test(nsa, deterministic_across_threads_and_paths) {
    check_threads_and_paths(kref_nsa_shape(2, 160, 4, 2, 16, 16, 8, 16, 5));
    // Dh = 32 with 64-key blocks: the shapes of the default model
    check_threads_and_paths(kref_nsa_shape(1, 300, 8, 2, 32, 32, 16, 64, 3));
    // Dh = 64, three heads a position, 13 blocks for 4 choices: the selected forward's
    // batches end in odd row counts, so the products' short passes (4, 2, 1 rows) run on
    // every path (dropping the 1-row pass fails the forward's output here and nowhere else)
    check_threads_and_paths(kref_nsa_shape(1, 200, 6, 2, 64, 16, 8, 16, 4));
}

Test(nsa, block_counts) {
    NsaShape s = kref_nsa_shape(1, 128, 4, 2, 16, 16, 8, 16, 4);
    cr_expect_eq(nsa_n_cmp(&s), 15);  // (128 − 16) / 8 + 1
    cr_expect_eq(nsa_n_slc(&s), 8);
    s.T = 15;  // shorter than one compression block
    cr_expect_eq(nsa_n_cmp(&s), 0);
    s.T = 17;
    cr_expect_eq(nsa_n_slc(&s), 2);  // the last selection block is partial
    s.T = 40;  // blocks start at 0, 8, 16, 24; the last ends at token 39
    cr_expect_eq(nsa_n_cmp(&s), 4);
    cr_expect_eq(nsa_cmp_visible(&s, 4, 14), 0);
    cr_expect_eq(nsa_cmp_visible(&s, 4, 15), 1);  // i·d + l − 1 ≤ t
    cr_expect_eq(nsa_cmp_visible(&s, 4, 39), 4);
    cr_expect_eq(nsa_cmp_visible(&s, 4, 1000), 4);
}
