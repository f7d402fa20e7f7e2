// bench_attn.c: see bench_attn.h. One NSA attention layer (every branch kernel, forward and
// backward) against dense causal flash attention, and each kernel's GFLOP/s against sgemm
// measured in the same run, since absolute times on a shared machine say little.
#include "eval/bench_attn.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>


#include "kernels/attention.h"
#include "kernels/common.h"
#include "kernels/gemm.h"
#include "kernels/nsa.h"
#include "kernels/rng.h"

// `small`'s attention dimensions with the paper's long-context NSA setting
// (l = 32, d = 16, l' = 64, n = 16, w = 512; `small` itself trains with n = 6, w = 128).
#define BA_H 8
#define BA_G 2
#define BA_DH 32

// The paper's speed-ups over FlashAttention-2 (Fig. 6) at 8k, 16k, 32k, 64k.
static const double paper_fwd[4] = {2.1, 3.8, 6.3, 9.0};
static const double paper_bwd[4] = {1.1, 2.0, 3.4, 6.0};

static float *randn(size_t n, uint64_t seed, float scale) {
    Rng r;
    rng_seed(&r, seed);
    float *x = nsa_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)rng_normal(&r);
    return x;
}

typedef struct {
    NsaShape s;
    int Nc;
    float *q, *k, *v, *dout;            // inputs
    float *kc, *vc;                     // compressed (mean pooling: the cheapest cmp_fn)
    float *o, *lse, *ow, *lw;           // outputs: dense, window,
    float *oc, *lc, *os, *ls;           // compressed, selected
    float *dq, *dk, *dv, *dkc, *dvc;
    int32_t *idx;
    void *wd, *wc, *ws, *wsel;          // work: dense, compressed, selected, selection
} Bench;

// Per-kernel times of one NSA forward and backward (seconds).
typedef struct {
    double cmp_f, sel_f, slc_f, win_f, nsa_f;
    double cmp_b, slc_b, win_b, nsa_b;
} NsaTimes;

static void nsa_forward_timed(Bench *x, NsaTimes *tm) {
    const NsaShape *s = &x->s;
    double t0 = nsa_now();
    nsa_cmp_mean_forward(x->kc, x->k, s);
    nsa_cmp_mean_forward(x->vc, x->v, s);
    double t1 = nsa_now();
    nsa_cmp_attn_select_forward(x->oc, x->lc, x->idx, x->q, x->kc, x->vc, x->wsel, s);
    // As the model runs them (one k, v for both): the window with its head first, then the
    // selected branch continuing from the head.
    double t2 = nsa_now();
    attn_window_head_forward(x->ow, x->lw, x->os, x->ls, x->q, x->k, x->v, s->B, s->T, s->H, s->G, s->Dh, s->window,
                             s->slc_block);
    double t3 = nsa_now();
    nsa_slc_attn_forward_head(x->os, x->ls, x->q, x->k, x->v, x->idx, s);
    double t4 = nsa_now();
    tm->cmp_f = t1 - t0, tm->sel_f = t2 - t1, tm->win_f = t3 - t2, tm->slc_f = t4 - t3, tm->nsa_f = t4 - t0;
}

static void nsa_backward_timed(Bench *x, NsaTimes *tm) {
    const NsaShape *s = &x->s;
    double t0 = nsa_now();
    memset(x->dkc, 0, (size_t)x->Nc * s->G * s->Dh * sizeof(float));
    memset(x->dvc, 0, (size_t)x->Nc * s->G * s->Dh * sizeof(float));
    nsa_cmp_attn_backward(x->dq, x->dkc, x->dvc, x->dout, x->q, x->kc, x->vc, x->oc, x->lc, x->wc, s);
    nsa_cmp_mean_backward(x->dk, x->dkc, s);
    nsa_cmp_mean_backward(x->dv, x->dvc, s);
    double t1 = nsa_now();
    nsa_slc_attn_backward(x->dq, x->dk, x->dv, x->dout, x->q, x->k, x->v, x->os, x->ls, x->idx, x->ws, s);
    double t2 = nsa_now();
    attn_backward(x->dq, x->dk, x->dv, x->dout, x->q, x->k, x->v, x->ow, x->lw, x->wd, s->B, s->T, s->H, s->G,
                  s->Dh, s->window);
    double t3 = nsa_now();
    tm->cmp_b = t1 - t0, tm->slc_b = t2 - t1, tm->win_b = t3 - t2, tm->nsa_b = t3 - t0;
}

// Keys (query head, key) pairs each branch attends to; 4*Dh FLOPs per pair forward (QK^T
// and PV), 10*Dh backward (the five products of flash attention's backward; ours recomputes
// more, which counts against it).
static double pairs_dense(const NsaShape *s) { return (double)s->H * s->T * (s->T + 1.0) / 2.0; }
static double pairs_window(const NsaShape *s) {
    double p = 0;
    for (int t = 0; t < s->T; t++) p += t + 1 < s->window ? t + 1 : s->window;
    return p * s->H;
}
static double pairs_cmp(const NsaShape *s, int Nc) {
    double p = 0;
    for (int t = 0; t < s->T; t++) p += nsa_cmp_visible(s, Nc, t);
    return p * s->H;
}
// head: only the blocks the selected forward visits itself, below the window's head.
static double pairs_slc(const NsaShape *s, const int32_t *idx, int head) {
    const int n = s->slc_topn, lp = s->slc_block;
    double p = 0;
    for (int t = 0; t < s->T; t++)
        for (int g = 0; g < s->G; g++)
            for (int i = 0; i < n; i++) {
                int j = idx[((size_t)t * s->G + g) * n + i];
                if (j < 0 || j * lp > t || (head && j >= t / lp - 1)) continue;
                int hi = (j + 1) * lp < t + 1 ? (j + 1) * lp : t + 1;
                p += hi - j * lp;
            }
    return p * (s->H / s->G);
}

static void bench_free(Bench *x) {
    free(x->q), free(x->k), free(x->v), free(x->dout), free(x->kc), free(x->vc);
    free(x->o), free(x->lse), free(x->ow), free(x->lw), free(x->oc), free(x->lc), free(x->os), free(x->ls);
    free(x->dq), free(x->dk), free(x->dv), free(x->dkc), free(x->dvc), free(x->idx);
    free(x->wd), free(x->wc), free(x->ws), free(x->wsel);
}

static void bench_init(Bench *x, int T) {
    memset(x, 0, sizeof *x);
    x->s = (NsaShape){.B = 1, .T = T, .H = BA_H, .G = BA_G, .Dh = BA_DH, .cmp_block = 32, .cmp_stride = 16,
                      .slc_block = 64, .slc_topn = 16, .window = 512};
    const NsaShape *s = &x->s;
    x->Nc = nsa_n_cmp(s);
    size_t nq = (size_t)T * s->H * s->Dh, nk = (size_t)T * s->G * s->Dh, nc = (size_t)x->Nc * s->G * s->Dh;
    // q scaled so that scores spread (std ~2 after 1/sqrt(Dh)): selection then has real
    // winners, as in a trained model, rather than near-uniform p_cmp.
    x->q = randn(nq, 11, 2.0f), x->k = randn(nk, 12, 1.0f), x->v = randn(nk, 13, 1.0f);
    x->dout = randn(nq, 14, 1.0f);
    x->kc = nsa_malloc(nc * 4), x->vc = nsa_malloc(nc * 4), x->dkc = nsa_malloc(nc * 4), x->dvc = nsa_malloc(nc * 4);
    size_t nl = (size_t)T * s->H * 4;
    x->o = nsa_malloc(nq * 4), x->ow = nsa_malloc(nq * 4), x->oc = nsa_malloc(nq * 4), x->os = nsa_malloc(nq * 4);
    x->lse = nsa_malloc(nl), x->lw = nsa_malloc(nl), x->lc = nsa_malloc(nl), x->ls = nsa_malloc(nl);
    x->dq = nsa_calloc(nq, 4), x->dk = nsa_calloc(nk, 4), x->dv = nsa_calloc(nk, 4);
    x->idx = nsa_malloc((size_t)T * s->G * s->slc_topn * sizeof(int32_t));
    x->wd = nsa_malloc(attn_backward_work_bytes(1, T, s->H, s->G, s->Dh));
    x->wc = nsa_malloc(nsa_cmp_attn_backward_work_bytes(s));
    x->ws = nsa_malloc(nsa_slc_attn_backward_work_bytes(s));
    x->wsel = nsa_malloc(nsa_cmp_select_work_bytes(s));
    // First touch here, not inside the first timed call (at S >= 32k it runs once).
    memset(x->wd, 0, attn_backward_work_bytes(1, T, s->H, s->G, s->Dh));
    memset(x->wc, 0, nsa_cmp_attn_backward_work_bytes(s));
    memset(x->ws, 0, nsa_slc_attn_backward_work_bytes(s));
    memset(x->wsel, 0, nsa_cmp_select_work_bytes(s));
    memset(x->o, 0, nq * 4), memset(x->ow, 0, nq * 4), memset(x->oc, 0, nq * 4), memset(x->os, 0, nq * 4);
    memset(x->lse, 0, nl), memset(x->lw, 0, nl), memset(x->lc, 0, nl), memset(x->ls, 0, nl);
    memset(x->kc, 0, nc * 4), memset(x->vc, 0, nc * 4), memset(x->dkc, 0, nc * 4), memset(x->dvc, 0, nc * 4);
    memset(x->idx, 0, (size_t)T * s->G * s->slc_topn * sizeof(int32_t));
}

static double pct(double a, double b) { return b > 0 ? 100.0 * a / b : 0; }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

AttnPairs bench_attn_pairs(const double *dense_s, const double *nsa_s, int n) {
    AttnPairs r = {.n = n, .dense_best = dense_s[0], .nsa_best = nsa_s[0]};
    double x[BENCH_ATTN_MAX_REPS];
    NSA_ASSERT(n >= 1 && n <= BENCH_ATTN_MAX_REPS);
    for (int i = 0; i < n; i++) {
        x[i] = r.pair[i] = dense_s[i] / nsa_s[i];
        r.dense_best = fmin(r.dense_best, dense_s[i]), r.nsa_best = fmin(r.nsa_best, nsa_s[i]);
    }
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    r.ratio = n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
    r.best_ratio = r.dense_best / r.nsa_best;
    return r;
}

static void dense_forward_timed(Bench *x, double *sec) {
    const NsaShape *s = &x->s;
    double t0 = nsa_now();
    attn_forward(x->o, x->lse, x->q, x->k, x->v, 1, s->T, s->H, s->G, s->Dh, 0);
    *sec = nsa_now() - t0;
}

static void dense_backward_timed(Bench *x, double *sec) {
    const NsaShape *s = &x->s;
    double t0 = nsa_now();
    attn_backward(x->dq, x->dk, x->dv, x->dout, x->q, x->k, x->v, x->o, x->lse, x->wd, 1, s->T, s->H, s->G, s->Dh,
                  0);
    *sec = nsa_now() - t0;
}

int bench_attn_run(FILE *out, int max_seq, int nreps) {
    const int threads = omp_get_max_threads();
    const double sg1 = gemm_measure_gflops(1024, 1), sg2 = threads >= 2 ? gemm_measure_gflops(1024, 2) : 0;
    const double sg = threads >= 2 ? sg2 : sg1;
    fprintf(out,
            "attention, one layer: H=%d G=%d Dh=%d, B=1; NSA l/d/l'/n/w = 32/16/64/16/512, cmp_fn=mean; "
            "%d threads, %s attention kernels\n"
            "sgemm 1024^3 (OpenBLAS %s kernels): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s; %% below is of "
            "the %d-thread figure\n"
            "NSA fwd = compression | compressed attention with selection fused | selected (continuing from the "
            "window's head) | window (and its head, run before selected); bwd = compressed (+ compression) | selected "
            "| window\n"
            "GFLOP/s count 4*Dh FLOPs per (head, key) pair forward, 10*Dh backward; selection counts none, the selected "
            "forward only the keys below the window's head\n"
            "x: the median over the runs of dense / NSA, each run timing the two back to back; times, GFLOP/s and "
            "parts: the fastest run\n\n",
            BA_H, BA_G, BA_DH, threads, attn_path_name(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "default",
            sg1, sg2, threads >= 2 ? 2 : 1);
    fprintf(out, "%6s | %9s %9s %6s %6s | %9s %9s %6s %6s | %-13s %-13s | %-22s %-22s | %s\n", "S", "dense fwd",
            "NSA fwd", "x", "paper", "dense bwd", "NSA bwd", "x", "paper", "dense fwd GF", "dense bwd GF",
            "slc fwd GF (%dense)", "slc bwd GF (%dense)", "NSA fwd parts | bwd parts (ms)");
    for (int si = 0, T = 8192; si < 4 && T <= max_seq; si++, T *= 2) {
        Bench x;
        bench_init(&x, T);
        const NsaShape *s = &x.s;
        // Runs in pairs: dense and NSA forward back to back, then the two backwards, in the
        // order dense, NSA, NSA, dense in even runs and NSA, dense, dense, NSA in odd ones. The
        // ratio is the median of the runs' ratios. (Until session 14 each run timed dense
        // forward and backward and then NSA's, and the table took the fastest of each side: at
        // 64k the NSA forward came a minute after the dense one, and a default run of 2.6
        // minutes on a Zen 3 host gave the fused compressed forward 2.0 s where it measured
        // 1.3-1.4 s alone.) By default about three minutes on 2 cores: 4 runs at 8k, 3 at
        // 16k, 2 at 32k and 1 at 64k, where one takes about 100 s.
        const int reps = nreps > 0 ? nreps : T <= 8192 ? 4 : T <= 16384 ? 3 : T <= 32768 ? 2 : 1;
        NsaTimes best = {1e30, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30}, tm;
        double dfs[BENCH_ATTN_MAX_REPS], dbs[BENCH_ATTN_MAX_REPS], nfs[BENCH_ATTN_MAX_REPS], nbs[BENCH_ATTN_MAX_REPS];
        NSA_ASSERT(reps <= BENCH_ATTN_MAX_REPS);
        for (int r = 0; r < reps; r++) {
            if (r % 2 == 0) {
                dense_forward_timed(&x, &dfs[r]);
                nsa_forward_timed(&x, &tm);
                nsa_backward_timed(&x, &tm);
                dense_backward_timed(&x, &dbs[r]);
            } else {
                nsa_forward_timed(&x, &tm);
                dense_forward_timed(&x, &dfs[r]);
                dense_backward_timed(&x, &dbs[r]);
                nsa_backward_timed(&x, &tm);
            }
            nfs[r] = tm.nsa_f, nbs[r] = tm.nsa_b;
            if (tm.nsa_f < best.nsa_f)
                best.cmp_f = tm.cmp_f, best.sel_f = tm.sel_f, best.slc_f = tm.slc_f, best.win_f = tm.win_f,
                best.nsa_f = tm.nsa_f;
            if (tm.nsa_b < best.nsa_b)
                best.cmp_b = tm.cmp_b, best.slc_b = tm.slc_b, best.win_b = tm.win_b, best.nsa_b = tm.nsa_b;
        }
        const AttnPairs pf = bench_attn_pairs(dfs, nfs, reps), pb = bench_attn_pairs(dbs, nbs, reps);
        const double df = pf.dense_best, db = pb.dense_best;
        const double fd = 4.0 * s->Dh * pairs_dense(s), fs = 4.0 * s->Dh * pairs_slc(s, x.idx, 0);
        const double fsf = 4.0 * s->Dh * pairs_slc(s, x.idx, 1);
        const double gdf = fd / df / 1e9, gdb = 2.5 * fd / db / 1e9;
        const double gsf = fsf / best.slc_f / 1e9, gsb = 2.5 * fs / best.slc_b / 1e9;
        char c1[32], c2[32], c3[32], c4[32];
        snprintf(c1, sizeof c1, "%.1f (%.0f%%)", gdf, pct(gdf, sg));
        snprintf(c2, sizeof c2, "%.1f (%.0f%%)", gdb, pct(gdb, sg));
        snprintf(c3, sizeof c3, "%.1f (%.0f%%)", gsf, pct(gsf, gdf));
        snprintf(c4, sizeof c4, "%.1f (%.0f%%)", gsb, pct(gsb, gdb));
        fprintf(out,
                "%6d | %9.1f %9.1f %6.2f %6.1f | %9.1f %9.1f %6.2f %6.1f | %-13s %-13s | %-22s %-22s | "
                "%.0f+%.0f+%.0f+%.0f | %.0f+%.0f+%.0f\n",
                T, df * 1e3, best.nsa_f * 1e3, pf.ratio, paper_fwd[si], db * 1e3, best.nsa_b * 1e3, pb.ratio,
                paper_bwd[si], c1, c2, c3, c4, best.cmp_f * 1e3, best.sel_f * 1e3,
                best.slc_f * 1e3, best.win_f * 1e3, best.cmp_b * 1e3, best.slc_b * 1e3, best.win_b * 1e3);
        fprintf(out, "%6s   GFLOP/s: compressed (with selection) fwd %.1f, compressed bwd %.1f, window fwd %.1f bwd %.1f\n",
                "", 4.0 * s->Dh * pairs_cmp(s, x.Nc) / best.sel_f / 1e9,
                10.0 * s->Dh * pairs_cmp(s, x.Nc) / best.cmp_b / 1e9,
                4.0 * s->Dh * pairs_window(s) / best.win_f / 1e9, 10.0 * s->Dh * pairs_window(s) / best.win_b / 1e9);
        // What the ratio would be if every NSA kernel ran at the dense kernel's speed per key
        // and the selection cost nothing: the keys each side visits (the backward's selected
        // branch visits the window's head itself).
        const double kf = pairs_cmp(s, x.Nc) + pairs_slc(s, x.idx, 1) + pairs_window(s);
        const double kb = pairs_cmp(s, x.Nc) + pairs_slc(s, x.idx, 0) + pairs_window(s);
        const double bf = pairs_dense(s) / kf, bb = pairs_dense(s) / kb;
        fprintf(out, "%6s   keys visited, dense / NSA (the ratio at the dense kernel's speed per key, selection free): "
                "fwd %.2f (x is %.0f%% of it), bwd %.2f (%.0f%%)\n", "", bf, pct(pf.ratio, bf), bb, pct(pb.ratio, bb));
        fprintf(out, "%6s   x per run, fwd:", "");
        for (int r = 0; r < reps; r++) fprintf(out, " %.2f", pf.pair[r]);
        fprintf(out, " (fastest/fastest %.2f); bwd:", pf.best_ratio);
        for (int r = 0; r < reps; r++) fprintf(out, " %.2f", pb.pair[r]);
        fprintf(out, " (fastest/fastest %.2f)\n", pb.best_ratio);
        fflush(out);
        bench_free(&x);
    }
    return NSA_OK;
}
