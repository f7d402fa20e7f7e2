// test_nsa_cmp.c: the compressed branch (kernels/nsa_cmp.c): compression input (gather
// with position encoding, mean pooling) and compressed attention against naive
// double-precision loops written here independently.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "kernels/common.h"
#include "kernels/nsa_cmp.h"
#include "tests/kernel_ref.h"

Test(nsa_cmp, gather_and_mean) {
    NsaShape s = kref_nsa_shape(2, 45, 4, 2, 8, 16, 8, 16, 4);  // tokens 40..44 lie in no block
    const int B = s.B, T = s.T, G = s.G, Dh = s.Dh, l = s.cmp_block, d = s.cmp_stride;
    const int Nc = nsa_n_cmp(&s);
    cr_assert_eq(Nc, 4);
    Rng r;
    rng_seed(&r, 1);
    size_t nx = (size_t)B * T * G * Dh, nb = (size_t)B * Nc * G * l * Dh, nm = (size_t)B * Nc * G * Dh;
    float *x = kref_randn(&r, nx, 1.0f), *pe = kref_randn(&r, (size_t)l * Dh, 1.0f);
    float *dblocks = kref_randn(&r, nb, 1.0f), *dmean = kref_randn(&r, nm, 1.0f);
    float *blocks = kref_zeros(nb), *blocks0 = kref_zeros(nb), *mean = kref_zeros(nm);
    float *dx = kref_zeros(nx), *dpe = kref_zeros((size_t)l * Dh), *dxm = kref_zeros(nx);
    nsa_cmp_gather_forward(blocks, x, pe, &s);
    nsa_cmp_gather_forward(blocks0, x, NULL, &s);
    nsa_cmp_gather_backward(dx, dpe, dblocks, &s);
    nsa_cmp_mean_forward(mean, x, &s);
    nsa_cmp_mean_backward(dxm, dmean, &s);

    double *rb = kref_dzeros(nb), *rb0 = kref_dzeros(nb), *rm = kref_dzeros(nm);
    double *rdx = kref_dzeros(nx), *rdpe = kref_dzeros((size_t)l * Dh), *rdxm = kref_dzeros(nx);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Nc; i++)
            for (int g = 0; g < G; g++)
                for (int j = 0; j < l; j++)
                    for (int e = 0; e < Dh; e++) {
                        size_t xi = (((size_t)b * T + i * d + j) * G + g) * Dh + e;
                        size_t bi = (((size_t)b * Nc + i) * G + g) * l * Dh + j * Dh + e;
                        size_t mi = (((size_t)b * Nc + i) * G + g) * Dh + e;
                        rb[bi] = (double)x[xi] + pe[j * Dh + e];
                        rb0[bi] = x[xi];
                        rm[mi] += (double)x[xi] / l;
                        rdx[xi] += dblocks[bi];
                        rdpe[j * Dh + e] += dblocks[bi];
                        rdxm[xi] += (double)dmean[mi] / l;
                    }
    // Gather forward is one float addition: exact up to its rounding (1 ulp, 1.2e-7).
    cr_expect(kref_rel_err(blocks, rb, nb) <= 1.2e-7);
    cr_expect(kref_rel_err(blocks0, rb0, nb) == 0.0);
    // Sums of at most B*Nc*G = 16 floats (dpe) or l/d = 2 (dx, mean): 1e-6 relative.
    cr_expect(kref_rel_err(dx, rdx, nx) <= 1e-6, "dx %g", kref_rel_err(dx, rdx, nx));
    cr_expect(kref_rel_err(dpe, rdpe, (size_t)l * Dh) <= 1e-6, "dpe %g", kref_rel_err(dpe, rdpe, (size_t)l * Dh));
    cr_expect(kref_rel_err(mean, rm, nm) <= 1e-6, "mean %g", kref_rel_err(mean, rm, nm));
    cr_expect(kref_rel_err(dxm, rdxm, nx) <= 1e-6, "dx(mean) %g", kref_rel_err(dxm, rdxm, nx));
    free(x), free(pe), free(dblocks), free(dmean), free(blocks), free(blocks0), free(mean);
    free(dx), free(dpe), free(dxm), free(rb), free(rb0), free(rm), free(rdx), free(rdpe), free(rdxm);
}


static int ref_cmp_visible(const NsaShape *s, int t) {
    int n = 0;
    for (int i = 0; i < nsa_n_cmp(s); i++) n += i * s->cmp_stride + s->cmp_block - 1 <= t;
    return n;
}

// Softmax attention of query (b,t,h) over rows [0, nkeys) or the rows listed in `keys`.

// Float32 vs double: 1e-5 of the scale forward, 2e-5 backward (reasons in test_attention.c;
// observed here <= 2.5e-7 and <= 1e-6).
#define FWD_TOL 1e-5
#define BWD_TOL 2e-5

static void check_cmp_case(NsaShape s, uint64_t seed) {
    const int B = s.B, T = s.T, H = s.H, G = s.G, Dh = s.Dh, rep = H / G, Nc = nsa_n_cmp(&s);
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)B * T * H * Dh, nl = (size_t)B * T * H, nc = (size_t)B * Nc * G * Dh;
    float *q = kref_randn(&r, nq, 1.0f), *kc = kref_randn(&r, nc, 1.0f), *vc = kref_randn(&r, nc, 1.0f);
    float *dout = kref_randn(&r, nq, 1.0f);
    float *o = kref_zeros(nq), *lse = kref_zeros(nl), *dq = kref_zeros(nq);
    float *dkc = kref_zeros(nc), *dvc = kref_zeros(nc);
    void *work = nsa_malloc(nsa_cmp_attn_backward_work_bytes(&s));
    nsa_cmp_attn_forward(o, lse, q, kc, vc, &s);
    nsa_cmp_attn_backward(dq, dkc, dvc, dout, q, kc, vc, o, lse, work, &s);

    double *ro = kref_dzeros(nq), *rl = kref_dzeros(nl), *rdq = kref_dzeros(nq);
    double *rdk = kref_dzeros(nc), *rdv = kref_dzeros(nc);
    int *keys = nsa_malloc((size_t)(Nc + 1) * sizeof(int));
    for (int i = 0; i <= Nc; i++) keys[i] = i;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                size_t qi = ((size_t)b * T + t) * H + h, kvo = ((size_t)b * Nc * G + h / rep) * Dh;
                kref_attention_row(ro + qi * Dh, rl + qi, rdq + qi * Dh, rdk + kvo, rdv + kvo,
                                   q + qi * Dh, dout + qi * Dh, kc + kvo, vc + kvo, keys,
                                   ref_cmp_visible(&s, t), G, Dh);
            }
    double e[5] = {kref_rel_err(o, ro, nq), kref_rel_err(lse, rl, nl), kref_rel_err(dq, rdq, nq),
                   kref_rel_err(dkc, rdk, nc), kref_rel_err(dvc, rdv, nc)};
    cr_log_info("cmp T%d l%d d%d Nc%d: o %.2e lse %.2e dq %.2e dkc %.2e dvc %.2e", T,
                s.cmp_block, s.cmp_stride, Nc, e[0], e[1], e[2], e[3], e[4]);
    cr_expect(e[0] <= FWD_TOL && e[1] <= FWD_TOL, "T%d: o %g lse %g", T, e[0], e[1]);
    cr_expect(e[2] <= BWD_TOL && e[3] <= BWD_TOL && e[4] <= BWD_TOL, "T%d: dq %g dkc %g dvc %g",
              T, e[2], e[3], e[4]);
    free(q), free(kc), free(vc), free(dout), free(o), free(lse), free(dq), free(dkc), free(dvc);
    free(work), free(ro), free(rl), free(rdq), free(rdk), free(rdv), free(keys);
}

Test(nsa_cmp, attention_matches_double_reference) {
    check_cmp_case(kref_nsa_shape(2, 70, 4, 2, 16, 16, 8, 16, 4), 21);
    check_cmp_case(kref_nsa_shape(1, 10, 4, 2, 16, 16, 8, 16, 4), 22);   // T < l: nothing visible
    check_cmp_case(kref_nsa_shape(1, 33, 2, 2, 16, 8, 8, 8, 4), 23);     // l = d: disjoint blocks
    check_cmp_case(kref_nsa_shape(1, 300, 3, 1, 24, 8, 2, 8, 4), 24);    // Nc = 147 > one key tile
    check_cmp_case(kref_nsa_shape(1, 16, 2, 1, 32, 16, 8, 16, 4), 25);   // only t = 15 sees block 0
    check_cmp_case(kref_nsa_shape(4, 70, 4, 2, 16, 16, 8, 16, 4), 26);   // B*G = 8: a group's heads in one backward task
}

Test(nsa_cmp, attention_no_visible_block) {
    NsaShape s = kref_nsa_shape(1, 12, 2, 1, 8, 16, 8, 16, 4);
    Rng r;
    rng_seed(&r, 3);
    size_t nq = (size_t)s.T * s.H * s.Dh;
    float *q = kref_randn(&r, nq, 1.0f), *dout = kref_randn(&r, nq, 1.0f), *o = kref_randn(&r, nq, 1.0f);
    float *lse = kref_zeros((size_t)s.T * s.H), *dq = kref_zeros(nq);
    float kc[1], vc[1], dkc[1], dvc[1];  // Nc = 0: never read
    void *work = nsa_malloc(nsa_cmp_attn_backward_work_bytes(&s));
    nsa_cmp_attn_forward(o, lse, q, kc, vc, &s);
    nsa_cmp_attn_backward(dq, dkc, dvc, dout, q, kc, vc, o, lse, work, &s);
    for (size_t i = 0; i < nq; i++) cr_expect(o[i] == 0.0f && dq[i] == 0.0f);
    for (int i = 0; i < s.T * s.H; i++) cr_expect(lse[i] == -INFINITY);
    free(q), free(dout), free(o), free(lse), free(dq), free(work);
}
