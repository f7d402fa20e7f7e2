// bench.c: see bench.h. Every figure is a ratio measured in one run (ours vs naive, vs
// the other sgemm kernel), since absolute times on shared machines say little.
#include "eval/bench.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "autograd/graph.h"
#include "data/path.h"
#include "kernels/attention.h"
#include "kernels/common.h"
#include "kernels/gemm.h"
#include "kernels/nsa.h"
#include "kernels/rng.h"
#include "model/model.h"

static float *randn(int64_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *x = nsa_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    return x;
}

// Best of `reps` timings of fn(ctx).
static double best_time(void (*fn)(void *), void *ctx, int reps) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = nsa_now();
        fn(ctx);
        double dt = nsa_now() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

// ---------------------------------------------------------------------------- sgemm

typedef struct {
    float *a, *b, *c;
    int n;
} GemmCtx;

static void run_sgemm(void *p) {
    GemmCtx *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n, 0.0f,
                g->c, g->n);
}

double bench_sgemm_gflops(int n) {
    GemmCtx g = {randn((int64_t)n * n, 1), randn((int64_t)n * n, 2), randn((int64_t)n * n, 3), n};
    run_sgemm(&g);
    double t = best_time(run_sgemm, &g, 5);
    free(g.a), free(g.b), free(g.c);
    return 2.0 * n * n * (double)n / t / 1e9;
}

// ---------------------------------------------------------------------------- attention

typedef struct {
    int B, T, H, G, Dh, w;
    float *q, *k, *v, *o, *lse, *dout, *dq, *dk, *dv, *work;
    float *p;  // naive: materialised [T, T] probabilities of one head
} AttnCtx;

static void run_attn_fwd(void *p) {
    AttnCtx *a = p;
    attn_forward(a->o, a->lse, a->q, a->k, a->v, a->B, a->T, a->H, a->G, a->Dh, a->w);
}

static void run_attn_bwd(void *p) {
    AttnCtx *a = p;
    attn_backward(a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v, a->o, a->lse, a->work, a->B, a->T, a->H, a->G,
                  a->Dh, a->w);
}

// Materialised causal softmax attention, one head at a time (the textbook loop nest).
static void run_attn_naive(void *p) {
    AttnCtx *a = p;
    int T = a->T, H = a->H, G = a->G, D = a->Dh;
    float scale = 1.0f / sqrtf((float)D);
    for (int h = 0; h < H; h++) {
        int g = h / (H / G);
#pragma omp parallel for schedule(dynamic, 16)
        for (int t = 0; t < T; t++) {
            float *pr = a->p + (size_t)t * T, m = -INFINITY, z = 0;
            for (int s = 0; s <= t; s++) {
                float d = 0;
                for (int e = 0; e < D; e++) d += a->q[((size_t)t * H + h) * D + e] * a->k[((size_t)s * G + g) * D + e];
                pr[s] = d * scale;
                m = fmaxf(m, pr[s]);
            }
            for (int s = 0; s <= t; s++) z += pr[s] = expf(pr[s] - m);
            float *o = a->o + ((size_t)t * H + h) * D;
            for (int e = 0; e < D; e++) o[e] = 0;
            for (int s = 0; s <= t; s++)
                for (int e = 0; e < D; e++) o[e] += pr[s] / z * a->v[((size_t)s * G + g) * D + e];
        }
    }
}

static void bench_attention(int T) {
    AttnCtx a;
    memset(&a, 0, sizeof a);
    a.B = 1, a.T = T, a.H = 8, a.G = 2, a.Dh = 32, a.w = 0;
    size_t nq = (size_t)T * a.H * a.Dh, nk = (size_t)T * a.G * a.Dh;
    a.q = randn((int64_t)nq, 4), a.k = randn((int64_t)nk, 5), a.v = randn((int64_t)nk, 6);
    a.dout = randn((int64_t)nq, 7);
    a.o = nsa_malloc(nq * 4), a.lse = nsa_malloc((size_t)T * a.H * 4);
    a.dq = nsa_calloc(nq, 4), a.dk = nsa_calloc(nk, 4), a.dv = nsa_calloc(nk, 4);
    a.work = nsa_malloc(attn_backward_work_bytes(1, T, a.H, a.G, a.Dh));
    a.p = nsa_malloc((size_t)T * T * 4);
    double tn = best_time(run_attn_naive, &a, 2);
    double tf = best_time(run_attn_fwd, &a, 5);
    double tb = best_time(run_attn_bwd, &a, 5);
    double flops = 4.0 * a.H * a.Dh * (double)T * (T + 1) / 2;  // QK and PV of the causal half
    printf("  causal attention T=%d H=8 G=2 Dh=32: forward %.2f ms (%.1f GFLOP/s), naive materialised %.2f ms "
           "-> %.1fx faster; backward %.2f ms = %.2fx forward\n",
           T, tf * 1e3, flops / tf / 1e9, tn * 1e3, tn / tf, tb * 1e3, tb / tf);
    free(a.q), free(a.k), free(a.v), free(a.dout), free(a.o), free(a.lse), free(a.dq), free(a.dk), free(a.dv);
    free(a.work), free(a.p);
}

typedef struct {
    NsaShape s;
    float *q, *k, *v, *o, *lse, *dout, *dq, *dk, *dv;
    int32_t *idx;
    void *work, *rwork;
} SlcCtx;

static void run_slc_index(void *p) {
    SlcCtx *c = p;
    nsa_slc_attn_forward(c->o, c->lse, c->q, c->k, c->v, c->idx, &c->s);
    nsa_slc_attn_backward(c->dq, c->dk, c->dv, c->dout, c->q, c->k, c->v, c->o, c->lse, c->idx, c->work, &c->s);
}

static void run_slc_ref(void *p) {
    SlcCtx *c = p;
    nsa_slc_attn_forward_ref(c->o, c->lse, c->q, c->k, c->v, c->idx, c->rwork, &c->s);
    nsa_slc_attn_backward_ref(c->dq, c->dk, c->dv, c->dout, c->q, c->k, c->v, c->o, c->lse, c->idx, c->rwork, &c->s);
}

static void bench_selected(int T) {
    SlcCtx c;
    memset(&c, 0, sizeof c);
    c.s = (NsaShape){1, T, 8, 2, 32, 32, 16, 64, 8, 256};
    size_t nq = (size_t)T * 8 * 32, nk = (size_t)T * 2 * 32;
    c.q = randn((int64_t)nq, 8), c.k = randn((int64_t)nk, 9), c.v = randn((int64_t)nk, 10), c.dout = randn((int64_t)nq, 11);
    c.o = nsa_malloc(nq * 4), c.lse = nsa_malloc((size_t)T * 8 * 4);
    c.dq = nsa_calloc(nq, 4), c.dk = nsa_calloc(nk, 4), c.dv = nsa_calloc(nk, 4);
    // A plausible selection: forced blocks plus pseudo-random others, ascending.
    int n = c.s.slc_topn, nb = (T + 63) / 64;
    c.idx = nsa_malloc((size_t)T * 2 * n * 4);
    Rng r;
    rng_seed(&r, 3);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < 2; g++) {
            int32_t *row = c.idx + ((size_t)t * 2 + g) * n, cur = t / 64, cnt = 0;
            char used[1024] = {0};
            for (int j = 0; j < nb && cnt < n; j++) {
                int cand = j == 0 ? 0 : j == 1 ? cur : j == 2 ? cur - 1 : (int)rng_below(&r, (uint64_t)cur + 1);
                if (cand < 0 || cand > cur || used[cand]) continue;
                used[cand] = 1;
                cnt++;
            }
            int w = 0;
            for (int j = 0; j <= cur; j++)
                if (used[j]) row[w++] = j;
            while (w < n) row[w++] = -1;
        }
    c.work = nsa_malloc(nsa_slc_attn_backward_work_bytes(&c.s));
    c.rwork = nsa_malloc(nsa_slc_attn_ref_work_bytes(&c.s));
    double ti = best_time(run_slc_index, &c, 3), tr = best_time(run_slc_ref, &c, 2);
    printf("  selected attention fwd+bwd T=%d n=8 l'=64: index path %.1f ms (workspace %.1f MB), materialising "
           "reference %.1f ms (workspace %.1f MB) -> %.1fx faster, %.0fx less memory\n",
           T, ti * 1e3, nsa_slc_attn_backward_work_bytes(&c.s) / 1e6, tr * 1e3, nsa_slc_attn_ref_work_bytes(&c.s) / 1e6,
           tr / ti, (double)nsa_slc_attn_ref_work_bytes(&c.s) / (double)nsa_slc_attn_backward_work_bytes(&c.s));
    free(c.q), free(c.k), free(c.v), free(c.dout), free(c.o), free(c.lse), free(c.dq), free(c.dk), free(c.dv);
    free(c.idx), free(c.work), free(c.rwork);
}

int bench_kernels(const char *self) {
    int threads = omp_get_max_threads();
    printf("kernels (%d threads, OPENBLAS_CORETYPE=%s)\n", threads, getenv("OPENBLAS_CORETYPE"));
    double ours = bench_sgemm_gflops(1024);
    // The same measurement in a child that keeps OpenBLAS's own Haswell choice.
    char cmd[NSA_PATH_MAX + 100];
    snprintf(cmd, sizeof cmd, "OPENBLAS_CORETYPE=Haswell NSA_NO_REEXEC=1 %s bench sgemm-only", self);
    double haswell = 0;
    FILE *p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%lf", &haswell) != 1) haswell = 0;
        pclose(p);
    }
    printf("  sgemm 1024^3, 1 thread: %.1f GFLOP/s with %s kernels, %.1f with Haswell kernels -> %.2fx\n", ours,
           getenv("OPENBLAS_CORETYPE"), haswell, haswell > 0 ? ours / haswell : 0);
    bench_attention(1024);
    bench_attention(2048);
    bench_selected(2048);
    return 0;
}
