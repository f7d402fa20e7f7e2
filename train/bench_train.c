// bench_train.c: see bench_train.h.
#include "train/bench_train.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/common.h"
#include "kernels/gemm.h"
#include "kernels/nsa.h"
#include "train/profile.h"
#include "train/trainer.h"

// (query head, key) pairs one position scores in one layer, averaged over the window; *head:
// of those, the selected branch's keys in the window's head where the window's forward
// computes them for both branches (forward once, backward twice).
static double pairs_per_token(const Config *c, int nsa, double *head) {
    const int64_t T = c->seq_len, l = c->cmp_block, d = c->cmp_stride, lp = c->slc_block, n = c->slc_topn;
    const NsaShape s = {.B = 1, .T = (int)T, .H = (int)c->n_heads, .G = (int)c->n_kv_heads, .Dh = (int)c->head_dim,
                        .cmp_block = (int)l, .cmp_stride = (int)d, .slc_block = (int)lp, .slc_topn = (int)n,
                        .window = (int)c->window};
    const int Nc = nsa_n_cmp(&s);
    const int shared = nsa && c->kv == KV_SHARED && nsa_slc_head_shared(&s);
    double sum = 0, hsum = 0;
    for (int64_t t = 0; t < T; t++) {
        if (shared) hsum += (double)(t - (t / lp >= 1 ? (t / lp - 1) * lp : 0) + 1);
        if (!nsa) {
            sum += (double)(t + 1);
            continue;
        }
        const int64_t jt = t / lp, blocks = jt + 1 < n ? jt + 1 : n;
        const int64_t slc = (blocks - 1) * lp + (t - jt * lp + 1);  // the current block, partly
        const int64_t win = t + 1 < c->window ? t + 1 : c->window;
        sum += (double)nsa_cmp_visible(&s, Nc, (int)t) + (double)slc + (double)win;
    }
    *head = hsum / (double)T * (double)c->n_heads;
    return sum / (double)T * (double)c->n_heads;
}

void bench_train_flops_split(const Config *c, double *linear, double *attn) {
    Model m;
    model_create(&m, c);
    const double G = (double)c->n_kv_heads, T = (double)c->seq_len;
    const double Nc = c->seq_len >= c->cmp_block ? (double)((c->seq_len - c->cmp_block) / c->cmp_stride + 1) : 0.0;
    double flops = 0;
    for (int i = 0; i < m.n_params; i++) {
        const Param *p = &m.params[i];
        const int cmp = strstr(p->name, "k_proj") || strstr(p->name, "v_proj") || strstr(p->name, "k_out") ||
                        strstr(p->name, "v_out");
        const int pe = strstr(p->name, "k_pe") || strstr(p->name, "v_pe");  // added, not multiplied
        if (pe) continue;
        flops += 6.0 * (double)p->t.size * (cmp ? G * Nc / T : 1.0);
    }
    model_free(&m);
    double pairs = 0, head = 0;
    for (int64_t layer = 0; layer < c->n_layers; layer++) {
        double h;
        pairs += pairs_per_token(c, config_layer_is_nsa(c, (int)layer), &h);
        head += h;
    }
    *linear = flops, *attn = (double)c->head_dim * (12.0 * pairs - 4.0 * head);
}

double bench_train_flops_per_token(const Config *c) {
    double linear, attn;
    bench_train_flops_split(c, &linear, &attn);
    return linear + attn;
}

// Keeps the largest entries of a class in top[] (at most 4, largest first).
static void keep_top(ProfEntry *top, int *n, const char *op, double s) {
    int i = *n < 4 ? (*n)++ : 4;
    if (i == 4 && s <= top[3].s[0]) return;
    if (i == 4) i = 3;
    while (i > 0 && top[i - 1].s[0] < s) top[i] = top[i - 1], i--;
    top[i] = (ProfEntry){op, {s, 0}};
}

TrainBreakdown bench_train_breakdown(const ProfEntry *e, int n, double wall_s) {
    TrainBreakdown b = {0};
    double sampled = 0;
    for (int i = 0; i < n; i++) {
        const double s = e[i].s[0] + e[i].s[1];
        const size_t len = strlen(e[i].op), suf = strlen("attention");
        sampled += s;
        if (!strcmp(e[i].op, "linear")) {
            b.linear_s += s;
        } else if (len >= suf && !strcmp(e[i].op + len - suf, "attention")) {
            b.attn_s += s;
            keep_top(b.attn, &b.n_attn, e[i].op, s);
        } else {
            b.other_s += s;
            keep_top(b.other, &b.n_other, e[i].op, s);
        }
    }
    b.rest_s = wall_s > sampled ? wall_s - sampled : 0.0;
    return b;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median of x[0..n) (n >= 1; x is sorted in place).
static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

TrainTiming bench_train_timing(const double *none_s, const double *layer_s, const double *sgemm_gf, int n,
                               double flops) {
    TrainTiming r = {.n = n};
    enum { M = BENCH_TRAIN_MAX_STEPS };
    double a[M], b[M], ratio[M], eff[M], sg[M];
    NSA_ASSERT(n >= 1 && n <= BENCH_TRAIN_MAX_STEPS);
    for (int i = 0; i < n; i++) {
        a[i] = none_s[i], b[i] = layer_s[i], sg[i] = sgemm_gf[i];
        ratio[i] = r.pair_ratio[i] = layer_s[i] / none_s[i];
        eff[i] = flops / none_s[i] / 1e9 / sgemm_gf[i];
    }
    r.none_s = median(a, n), r.none_lo = a[0], r.none_hi = a[n - 1];
    r.layer_s = median(b, n), r.layer_lo = b[0], r.layer_hi = b[n - 1];
    r.ckpt_ratio = median(ratio, n);
    r.sg_med = median(sg, n), r.sg_best = sg[n - 1];
    r.eff = median(eff, n);
    r.eff_best = flops / r.none_s / 1e9 / r.sg_best;
    return r;
}

// Timed steps in one trainer, the checkpoint mode switched between steps (trainer_step reads
// it every step): first one untimed step of each mode (the none step sizes the arenas, the
// layer step the recompute's), then steps - 1 timed pairs in ABBA order (none, layer; layer,
// none; ...), and a short sgemm (gemm_measure_gflops) right after every timed none step. On
// a shared machine a neighbour slows every core for seconds at a time: with the modes run one
// after the other (sessions 9-12) the checkpointing ratio measured the neighbour as much as
// the recompute, and a yardstick taken before and after all the steps could catch the
// machine idle while the steps ran slowed (the same 3.44 s step gave 66 % and 55 % of sgemm
// in two runs). Paired, each step is set against the sgemm and the other mode measured in
// the same seconds. The sampling profiler runs over the timed none steps only, and *bd gets
// their breakdown (seconds summed over those steps).
static int time_pairs(const Config *base, int steps, double flops, TrainTiming *tm, TrainBreakdown *bd) {
    Config c = *base;
    c.checkpoint = CKPT_NONE;
    Trainer t;
    if (trainer_init(&t, &c, NULL) != NSA_OK) return NSA_ERR;
    Profiler *prof = profiler_start(&t.watch);
    const int threads = omp_get_max_threads(), n = steps - 1;
    enum { M = BENCH_TRAIN_MAX_STEPS };
    double none_s[M], layer_s[M], sg[M], wall = 0;
    int rc = NSA_OK;
    StepStats st;
    for (int mode = 0; mode < 2 && rc == NSA_OK; mode++) {  // untimed: sizes the arenas
        t.cfg.checkpoint = mode ? CKPT_LAYER : CKPT_NONE;
        rc = trainer_step(&t, &st);
    }
    for (int i = 0; i < n && rc == NSA_OK; i++)
        for (int k = 0; k < 2 && rc == NSA_OK; k++) {
            const int layer = (i % 2) ^ k;  // ABBA
            t.cfg.checkpoint = layer ? CKPT_LAYER : CKPT_NONE;
            profiler_active(prof, !layer);
            const double t0 = nsa_now();
            rc = trainer_step(&t, &st);
            const double dt = nsa_now() - t0;
            profiler_active(prof, 0);
            if (layer) {
                layer_s[i] = dt;
            } else {
                none_s[i] = dt, wall += dt;
                sg[i] = gemm_measure_gflops(1024, threads);
            }
        }
    ProfEntry e[PROF_MAX_OPS];
    const int ne = profiler_read(prof, e);
    profiler_stop(prof);
    trainer_free(&t);
    if (rc != NSA_OK) return NSA_ERR;
    *bd = bench_train_breakdown(e, ne, wall);
    *tm = bench_train_timing(none_s, layer_s, sg, n, flops);
    return NSA_OK;
}

// One line per part of the checkpoint=none step: its share of the timed steps' wall time
// and, for the linear and attention ops, the GFLOP/s their counted FLOPs (lin, att per
// token; tokens over all the timed steps) ran at.
static void print_breakdown(FILE *out, const TrainBreakdown *b, double lin, double att, double tokens, double sg) {
    const double wall = b->linear_s + b->attn_s + b->other_s + b->rest_s;
    if (wall <= 0) return;
    fprintf(out, "  where the checkpoint=none steps went (ops sampled every ms; forward and backward together):\n");
    const struct {
        const char *name;
        double s, flops;
        const ProfEntry *top;
        int ntop;
    } parts[4] = {{"linear ops", b->linear_s, lin * tokens, NULL, 0},
                  {"attention ops", b->attn_s, att * tokens, b->attn, b->n_attn},
                  {"other ops", b->other_s, 0, b->other, b->n_other},
                  {"optimizer, rest", b->rest_s, 0, NULL, 0}};
    for (int i = 0; i < 4; i++) {
        fprintf(out, "    %-16s %5.1f%%", parts[i].name, 100.0 * parts[i].s / wall);
        if (parts[i].flops > 0 && parts[i].s > 0) {
            const double gf = parts[i].flops / parts[i].s / 1e9;
            fprintf(out, "   %6.1f GFLOP/s = %4.1f%% of sgemm", gf, 100.0 * gf / sg);
        }
        for (int j = 0; j < parts[i].ntop; j++)
            fprintf(out, "%s%s %.1f%%", j ? ", " : (parts[i].flops > 0 ? "  (" : "   ("), parts[i].top[j].op,
                    100.0 * parts[i].top[j].s[0] / wall);
        fprintf(out, "%s\n", parts[i].ntop > 0 ? ")" : "");
    }
}

int bench_train_run(FILE *out, const char *config, int steps) {
    Config c;
    config_defaults(&c);
    if (config_load(&c, config) != NSA_OK) return NSA_ERR;
    c.eval_every = 0, c.ckpt_every = 0;
    if (config_validate(&c) != NSA_OK) return NSA_ERR;
    if (steps < 2 || steps > BENCH_TRAIN_MAX_STEPS) steps = steps < 2 ? 2 : BENCH_TRAIN_MAX_STEPS;
    const int threads = omp_get_max_threads();
    double lin, att;
    bench_train_flops_split(&c, &lin, &att);
    const double fpt = lin + att;
    const double tokens = (double)(c.batch_size * c.seq_len * c.grad_accum);
    fprintf(out,
            "training %s: batch %lld x seq_len %lld x grad_accum %lld = %.0f tokens/step, %d steps per mode "
            "(the first of each untimed; the modes alternate in one trainer, paired ABBA), %d threads, %s attention "
            "kernels\n"
            "FLOPs per token %.1f M (6 per parameter use + 12*Dh per attention pair, 8*Dh for a selected key "
            "the window's head gave)\n",
            config, (long long)c.batch_size, (long long)c.seq_len, (long long)c.grad_accum, tokens, steps, threads,
            attn_path_name(), fpt / 1e6);
    fflush(out);
    TrainTiming tm;
    TrainBreakdown bd = {0};
    if (time_pairs(&c, steps, fpt * tokens, &tm, &bd) != NSA_OK) return NSA_ERR;
    const double st[2] = {tm.none_s, tm.layer_s}, lo[2] = {tm.none_lo, tm.layer_lo}, hi[2] = {tm.none_hi, tm.layer_hi};
    const char *names[2] = {"none", "layer"};
    for (int i = 0; i < 2; i++)
        fprintf(out, "  checkpoint=%-5s  step %7.3f s (%.3f .. %.3f)  %8.0f tokens/s  %6.1f GFLOP/s\n", names[i], st[i],
                lo[i], hi[i], tokens / st[i], fpt * tokens / st[i] / 1e9);
    fprintf(out,
            "sgemm 1024^3 on %d threads right after each checkpoint=none step: median %.1f GFLOP/s, best %.1f\n"
            "  checkpoint=none at %.1f%% of the sgemm measured after each step (median over the steps); %.1f%% of "
            "the best sgemm of the run\n",
            threads, tm.sg_med, tm.sg_best, 100.0 * tm.eff, 100.0 * tm.eff_best);
    fprintf(out, "  checkpoint=layer / none: step time %.2fx (median of the pairs:", tm.ckpt_ratio);
    for (int i = 0; i < tm.n; i++) fprintf(out, "%s %.2f", i ? "," : "", tm.pair_ratio[i]);
    fprintf(out, "; goal <= 1.3x); none at %.0f%% of sgemm (goal >= 60%%)\n", 100.0 * tm.eff);
    print_breakdown(out, &bd, lin, att, tokens * (steps - 1), tm.sg_med);  // the first step is not timed
    return NSA_OK;
}
