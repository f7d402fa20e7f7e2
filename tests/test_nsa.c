// test_nsa.c: the NSA kernels together: shape arithmetic (kernels/nsa_shape.c) and every
// kernel, fed from the previous one as the layer would, bit-identical with 1 and 2 threads.
#include <criterion/criterion.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/nsa.h"
#include "tests/kernel_ref.h"

// Every kernel, fed from the previous one as the layer would, with 1 and 2 threads.
Test(nsa, deterministic_across_threads) {
    NsaShape s = kref_nsa_shape(2, 160, 4, 2, 16, 16, 8, 16, 5);
    const int B = s.B, T = s.T, H = s.H, G = s.G, Dh = s.Dh, l = s.cmp_block, n = s.slc_topn;
    const int Nc = nsa_n_cmp(&s);
    Rng r;
    rng_seed(&r, 51);
    size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * G * Dh, nl = (size_t)B * T * H;
    size_t nb = (size_t)B * Nc * G * l * Dh, nc = (size_t)B * Nc * G * Dh, ni = (size_t)B * T * G * n;
    float *q = kref_randn(&r, nq, 1.0f), *k = kref_randn(&r, nk, 1.0f), *v = kref_randn(&r, nk, 1.0f);
    float *pe = kref_randn(&r, (size_t)l * Dh, 1.0f), *dout = kref_randn(&r, nq, 1.0f);
    float *dblocks = kref_randn(&r, nb, 1.0f), *dmean = kref_randn(&r, nc, 1.0f);
    enum { BLK, DXG, DPE, KC, VC, DXM, OC, LC, DQC, DKC, DVC, OS, LS, DQS, DKS, DVS, NOUT };
    const size_t sizes[NOUT] = {nb, nk, (size_t)l * Dh, nc, nc, nk, nq, nl, nq, nc, nc,
                                nq, nl, nq, nk, nk};
    float *out[2][NOUT];
    int32_t *idx[2];
    size_t wb = nsa_select_work_bytes(&s);
    if (nsa_cmp_attn_backward_work_bytes(&s) > wb) wb = nsa_cmp_attn_backward_work_bytes(&s);
    if (nsa_slc_attn_backward_work_bytes(&s) > wb) wb = nsa_slc_attn_backward_work_bytes(&s);
    void *work = nsa_malloc(wb);
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
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
        nsa_slc_attn_forward(x[OS], x[LS], q, k, v, idx[run], &s);
        nsa_slc_attn_backward(x[DQS], x[DKS], x[DVS], dout, q, k, v, x[OS], x[LS], idx[run], work, &s);
    }
    for (int a = 0; a < NOUT; a++) {
        cr_expect(memcmp(out[0][a], out[1][a], sizes[a] * sizeof(float)) == 0,
                  "output %d differs between 1 and 2 threads", a);
        free(out[0][a]), free(out[1][a]);
    }
    cr_expect(memcmp(idx[0], idx[1], ni * sizeof(int32_t)) == 0, "selection differs");
    free(idx[0]), free(idx[1]), free(q), free(k), free(v), free(pe), free(dout), free(dblocks);
    free(dmean), free(work);
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
