// hangcheck.c: see hangcheck.h.
#include "train/hangcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/ops.h"
#include "autograd/watch.h"
#include "kernels/common.h"
#include "kernels/nsa.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "train/hangcheck_report.h"

const char *const hangcheck_checkpoint_names[2] = {"none", "layer"};
const char *const hangcheck_path_names[2] = {"index", "materialise"};

void hangcheck_defaults(HangcheckOpts *o) {
    memset(o, 0, sizeof *o);
    o->config_name = "seed12";
    config_defaults(&o->base);
    o->steps = 3;
    o->timeout = 60;
    o->mem_budget_mb = 8192;
    o->layers[0] = 1, o->layers[1] = 12, o->n_layers = 2;
    o->seqs[0] = 128, o->seqs[1] = 512, o->seqs[2] = 1024, o->seqs[3] = 2048, o->n_seqs = 4;
    o->ckpts[0] = 0, o->ckpts[1] = 1, o->n_ckpts = 2;
    o->paths[0] = 0, o->paths[1] = 1, o->n_paths = 2;
    debug_spin_parse(&o->spin, NULL);
}

// Best of the timed steps: the second step still page-faults the arena that the first
// one sized (arena_reset folds its chunks into one fresh buffer), and on a shared machine
// other processes only ever add time.
static double minimum(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

// Process CPU time, all threads: unlike wall time it hardly moves when other processes
// compete for the cores, so its bwd/fwd is a cross-check on a busy machine (it counts the
// OpenMP workers' spin-waits too, so it is not the same number as the wall ratio).
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;  // KiB on Linux
}

// Std of the three gate values (cmp, slc, win) per (token, head) of the first NSA layer,
// averaged: the same gate MLP as the model's (DESIGN.md "Gate") on the same normalised
// input, run on a tape-free graph. Returns NAN when no layer is NSA.
static double gate_spread(Model *m, const int32_t *tok, int T) {
    const Config *c = &m->cfg;
    int li = 0;
    while (li < c->n_layers && !m->layers[li].is_nsa) li++;
    if (li == c->n_layers) return NAN;
    Layer *L = &m->layers[li];
    Arena a;
    arena_init(&a, 0);
    Graph g;
    graph_init(&g, &a);
    g.record = 0;
    Tensor *x = op_embedding(&g, m->tok_emb, tok, T);
    // Layers before li are not run: at init every layer's gate sees inputs of this
    // scale, and the first NSA layer is layer 0 in every named config.
    Tensor *xn = op_rmsnorm(&g, x, L->attn_norm, (float)c->norm_eps);
    Tensor *z = op_linear(&g, op_silu(&g, op_linear(&g, xn, L->fc1_w, L->fc1_b)), L->fc2_w, L->fc2_b);
    int64_t H = c->n_heads;
    int softmax = c->gate_act == GATE_SOFTMAX;
    double sum = 0;
    for (int64_t r = 0; r < T; r++)
        for (int64_t h = 0; h < H; h++) {
            double gv[3], mean = 0, var = 0;
            const float *zr = z->data + r * 3 * H;
            if (softmax) {
                double mx = fmax(zr[h], fmax(zr[H + h], zr[2 * H + h])), s = 0;
                for (int b = 0; b < 3; b++) s += gv[b] = exp(zr[b * H + h] - mx);
                for (int b = 0; b < 3; b++) gv[b] /= s;
            } else {
                for (int b = 0; b < 3; b++) gv[b] = 1.0 / (1.0 + exp(-(double)zr[b * H + h]));
            }
            for (int b = 0; b < 3; b++) mean += gv[b] / 3;
            for (int b = 0; b < 3; b++) var += (gv[b] - mean) * (gv[b] - mean) / 3;
            sum += sqrt(var);
        }
    graph_free(&g);
    arena_free(&a);
    return sum / (double)(T * H);
}

// Runs one cell's steps. The watchdog is armed by the caller for the whole run.
static void run_cell(Model *m, HangcheckCell *cell, const int32_t *tok, const int32_t *tgt,
                     const HangcheckOpts *o, Watch *w, Profiler *prof) {
    int T = cell->seq, n_timed = o->steps > 1 ? o->steps - 1 : 1;
    Arena am, as;
    arena_init(&am, 0);
    arena_init(&as, 0);
    Graph g, sg;
    graph_init(&g, &am);
    graph_init(&sg, &as);
    g.watch = sg.watch = w;
    ForwardOpts fo = {0};
    fo.checkpoint = cell->checkpoint;
    fo.materialise = cell->materialise;
    fo.scratch = &sg;
    double fwd[HC_MAX_STEPS], bwd[HC_MAX_STEPS], fwd_cpu[HC_MAX_STEPS], bwd_cpu[HC_MAX_STEPS];
    cell->loss_finite = cell->grads_finite = 1;
    if (prof) profiler_clear(prof);
    for (int step = 0; step < o->steps; step++) {
        int timed = step > 0 || o->steps == 1;
        graph_reset(&g);
        model_zero_grads(m);
        if (prof) profiler_active(prof, timed);
        watch_phase(w, WATCH_FORWARD);
        debug_spin_arm(&o->spin, w);
        double t0 = nsa_now(), c0 = cpu_now();
        Forward f;
        model_forward(m, &g, tok, tgt, 1, T, &fo, &f);
        double t1 = nsa_now(), c1 = cpu_now();
        watch_phase(w, WATCH_BACKWARD);
        debug_spin_arm(&o->spin, w);
        graph_backward(&g, f.loss);
        double t2 = nsa_now(), c2 = cpu_now();
        watch_phase(w, WATCH_IDLE);
        debug_spin_arm(&o->spin, w);
        if (prof) profiler_active(prof, 0);
        cell->loss = f.loss->data[0];
        if (!isfinite(cell->loss)) cell->loss_finite = 0;
        for (int64_t i = 0; i < m->n_elems; i++)
            if (!isfinite(m->grad[i])) {
                cell->grads_finite = 0;
                break;
            }
        if (timed) {
            int k = step > 0 ? step - 1 : 0;
            if (k < HC_MAX_STEPS) fwd[k] = t1 - t0, bwd[k] = t2 - t1, fwd_cpu[k] = c1 - c0, bwd_cpu[k] = c2 - c1;
        }
    }
    if (n_timed > HC_MAX_STEPS) n_timed = HC_MAX_STEPS;
    cell->fwd_s = minimum(fwd, n_timed);
    cell->bwd_s = minimum(bwd, n_timed);
    cell->ratio = cell->bwd_s / cell->fwd_s;
    cell->fwd_cpu_s = minimum(fwd_cpu, n_timed);
    cell->bwd_cpu_s = minimum(bwd_cpu, n_timed);
    size_t bytes = am.peak + as.peak + (size_t)(g.cap_nodes + sg.cap_nodes) * sizeof(Node) +
                   2 * (size_t)m->n_elems * sizeof(float);
    cell->peak_mb = (double)bytes / (1024.0 * 1024.0);
    cell->rss_mb = rss_mb();
    if (prof) {
        ProfEntry e[PROF_MAX_OPS];
        cell->n_prof = profiler_read(prof, e);
        double tot[2] = {0, 0}, phase_s[2] = {cell->fwd_s, cell->bwd_s};
        for (int i = 0; i < cell->n_prof; i++) tot[0] += e[i].s[0], tot[1] += e[i].s[1];
        for (int i = 0; i < cell->n_prof; i++) {
            cell->prof[i] = e[i];
            for (int b = 0; b < 2; b++) cell->prof[i].s[b] = tot[b] > 0 ? e[i].s[b] / tot[b] * phase_s[b] : 0;
        }
    }
    graph_free(&g);
    graph_free(&sg);
    arena_free(&am);
    arena_free(&as);
}

// Memory the materialising path would take, in MB: its per-query K/V copies (one work
// buffer per NSA layer in forward and one in backward; with checkpoint=layer they live in
// the scratch arena, reset between layers, so two at a time) on top of what the index
// path of the same cell took (base_mb).
static double materialise_predicted_mb(const Model *m, int T, int checkpoint, double base_mb) {
    const Config *c = &m->cfg;
    NsaShape s = {1, T, (int)c->n_heads, (int)c->n_kv_heads, (int)c->head_dim, (int)c->cmp_block,
                  (int)c->cmp_stride, (int)c->slc_block, (int)c->slc_topn, (int)c->window};
    int n_nsa = 0;
    for (int l = 0; l < c->n_layers; l++) n_nsa += m->layers[l].is_nsa;
    double work = (double)nsa_slc_attn_ref_work_bytes(&s) / (1024.0 * 1024.0);
    return base_mb + (checkpoint ? 2.0 : 2.0 * n_nsa) * work;
}

// ---------------------------------------------------------------------------- the matrix

int hangcheck_run(const HangcheckOpts *o) {
    int max_seq = 0, max_layers = 0;
    for (int i = 0; i < o->n_seqs; i++) max_seq = o->seqs[i] > max_seq ? o->seqs[i] : max_seq;
    for (int i = 0; i < o->n_layers; i++) max_layers = o->layers[i] > max_layers ? o->layers[i] : max_layers;
    Config base = o->base;
    base.seq_len = max_seq;
    // Validate each layer count up front: a bad --set should fail before any cell runs.
    for (int i = 0; i < o->n_layers; i++) {
        Config c = base;
        c.n_layers = o->layers[i];
        if (config_validate(&c) != NSA_OK) return HANGCHECK_USAGE;
    }

    int n_cells = o->n_layers * o->n_seqs * o->n_ckpts * o->n_paths;
    HangcheckCell *cells = nsa_calloc((size_t)n_cells, sizeof *cells);
    {
        Config c = base;
        config_validate(&c);
        printf("nsa hangcheck: config %s (V %lld, D %lld, H/G %lld/%lld, Dh %lld, F %lld, l/d/l'/n/w "
               "%lld/%lld/%lld/%lld/%lld), batch 1, %d step%s (%s), deadline %g s per phase per layer, "
               "memory budget %g MB\n",
               o->config_name, (long long)c.vocab_size, (long long)c.d_model, (long long)c.n_heads,
               (long long)c.n_kv_heads, (long long)c.head_dim, (long long)c.ffn_dim, (long long)c.cmp_block,
               (long long)c.cmp_stride, (long long)c.slc_block, (long long)c.slc_topn, (long long)c.window,
               o->steps, o->steps == 1 ? "" : "s", o->steps == 1 ? "timed" : "the first untimed", o->timeout,
               o->mem_budget_mb);
        if (o->max_ratio > 0)
            printf("  bwd/fwd must be <= %g (checkpoint=none) and <= %g (checkpoint=layer: its backward\n"
                   "  recomputes each layer's forward first) in the index cells with %d layers and S = %d\n",
                   o->max_ratio, o->max_ratio + 1, max_layers, max_seq);
    }
    hangcheck_print_header();
    fflush(stdout);

    Watch w;
    watch_init(&w);
    Watchdog *wd = watchdog_start(&w, o->timeout, o->log);
    Profiler *prof = o->profile ? profiler_start(&w) : NULL;

    int n = 0, failed = 0;
    for (int li = 0; li < o->n_layers; li++) {
        Config c = base;
        c.n_layers = o->layers[li];
        config_validate(&c);
        Model m;
        model_create(&m, &c);
        model_init_params(&m, (uint64_t)c.seed);
        model_alloc_grads(&m);
        for (int si = 0; si < o->n_seqs; si++) {
            int T = o->seqs[si];
            int32_t *tok = nsa_malloc((size_t)T * sizeof *tok), *tgt = nsa_malloc((size_t)T * sizeof *tgt);
            Rng r;
            rng_seed(&r, 1000 + (uint64_t)T);
            for (int t = 0; t < T; t++) tok[t] = (int32_t)rng_below(&r, (uint64_t)c.vocab_size);
            for (int t = 0; t < T; t++)
                tgt[t] = t + 1 < T ? tok[t + 1] : (int32_t)rng_below(&r, (uint64_t)c.vocab_size);
            double spread = gate_spread(&m, tok, T);
            for (int ci = 0; ci < o->n_ckpts; ci++) {
                double index_peak = NAN;
                for (int pi = 0; pi < o->n_paths; pi++) {
                    HangcheckCell *cell = &cells[n++];
                    cell->layers = c.n_layers, cell->seq = T;
                    cell->checkpoint = o->ckpts[ci], cell->materialise = o->paths[pi];
                    cell->gate_spread = spread;
                    if (cell->materialise) {
                        double base_mb = isfinite(index_peak)
                                             ? index_peak
                                             : 2.0 * (double)m.n_elems * sizeof(float) / (1024.0 * 1024.0);
                        cell->predicted_mb = materialise_predicted_mb(&m, T, cell->checkpoint, base_mb);
                        if (cell->predicted_mb > o->mem_budget_mb) {
                            cell->status = CELL_SKIP;
                            snprintf(cell->reason, sizeof cell->reason,
                                     "memory (predicted %.0f MB > budget %g MB)", cell->predicted_mb,
                                     o->mem_budget_mb);
                            hangcheck_print_row(cell);
                            if (o->json) hangcheck_write_json(o->json, o, cells, n, 0);
                            continue;
                        }
                    }
                    run_cell(&m, cell, tok, tgt, o, &w, prof);
                    if (!cell->materialise) index_peak = cell->peak_mb;
                    char *rs = cell->reason;
                    size_t cap = sizeof cell->reason;
#define REASON(...) snprintf(rs + strlen(rs), cap - strlen(rs), __VA_ARGS__)
                    if (!cell->loss_finite) REASON("%snon-finite loss", rs[0] ? "; " : "");
                    if (!cell->grads_finite) REASON("%snon-finite gradient", rs[0] ? "; " : "");
                    if (!(cell->gate_spread > HC_GATE_MIN_SPREAD))
                        REASON("%sgate spread %.2g <= %g", rs[0] ? "; " : "", cell->gate_spread,
                               HC_GATE_MIN_SPREAD);
                    if (cell->peak_mb > o->mem_budget_mb)
                        REASON("%speak %.0f MB > budget %g MB", rs[0] ? "; " : "", cell->peak_mb, o->mem_budget_mb);
                    if (o->max_ratio > 0 && !cell->materialise && cell->layers == max_layers && T == max_seq) {
                        cell->ratio_limit = o->max_ratio + (cell->checkpoint ? 1 : 0);
                        if (!(cell->ratio <= cell->ratio_limit))
                            REASON("%sbwd/fwd %.2f > %g", rs[0] ? "; " : "", cell->ratio, cell->ratio_limit);
                    }
#undef REASON
                    cell->status = rs[0] ? CELL_FAIL : CELL_PASS;
                    failed += cell->status == CELL_FAIL;
                    hangcheck_print_row(cell);
                    if (o->json) hangcheck_write_json(o->json, o, cells, n, 0);
                }
            }
            free(tok);
            free(tgt);
        }
        model_free(&m);
    }
    watchdog_stop(wd);
    profiler_stop(prof);
    int json_rc = o->json ? hangcheck_write_json(o->json, o, cells, n, 1) : NSA_OK;
    int skipped = 0;
    for (int i = 0; i < n; i++) skipped += cells[i].status == CELL_SKIP;
    printf("hangcheck: %d cell%s, %d passed, %d failed, %d skipped\n", n, n == 1 ? "" : "s",
           n - failed - skipped, failed, skipped);
    free(cells);
    return failed || json_rc != NSA_OK ? HANGCHECK_FAIL : HANGCHECK_PASS;
}
