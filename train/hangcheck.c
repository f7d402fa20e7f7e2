// hangcheck.c: `nsa hangcheck` (see hangcheck.h). Every cell of the matrix builds the
// model at the config's dimensions with its layer count, runs a few forward+backward
// steps of batch 1 under the watchdog, and checks time, memory and finiteness.
#include "train/hangcheck.h"

#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/ops.h"
#include "kernels/common.h"
#include "kernels/nsa.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "train/watchdog.h"

#define HC_MAX_LIST 16
#define HC_MAX_CELLS 1024
#define HC_MAX_PROF 48
#define HC_GATE_MIN_SPREAD 1e-3  // below this the three branches are indistinguishable

// ---------------------------------------------------------------------------- debug spin

int debug_spin_parse(DebugSpin *d, const char *spec) {
    memset(d, 0, sizeof *d);
    d->phase = -1;
    if (!spec || !spec[0]) return NSA_OK;
    const char *s = spec;
    if (!strncmp(s, "forward:", 8)) d->phase = WATCH_FORWARD, s += 8;
    else if (!strncmp(s, "backward:", 9)) d->phase = WATCH_BACKWARD, s += 9;
    const char *at = strrchr(s, '@');
    char *end = NULL;
    long layer = at ? strtol(at + 1, &end, 10) : 0;
    if (!at || at == s || (size_t)(at - s) >= sizeof d->op || !at[1] || *end || layer < -1) {
        nsa_error("bad debug spin '%s' (want [forward:|backward:]OP@LAYER, e.g. backward:slc_attention@1)",
                  spec);
        return NSA_ERR;
    }
    memcpy(d->op, s, (size_t)(at - s));
    d->op[at - s] = '\0';
    d->layer = (int)layer;
    d->on = 1;
    return NSA_OK;
}

void debug_spin_arm(const DebugSpin *d, Watch *w) {
    if (d->on && (d->phase < 0 || d->phase == w->phase)) {
        w->spin_op_layer = d->layer;  // the layer first: graph_set_op tests the op pointer first
        w->spin_op = d->op;
    } else {
        w->spin_op = NULL;
        w->spin_op_layer = -1;
    }
}

// ---------------------------------------------------------------------------- profile

// Optional sampling profile (--profile): a thread reads the Watch every millisecond and
// charges the time since its last look to the (phase, op) it sees. Ops announce
// themselves at their start, so this is wall time per op without touching the ops. A
// look that comes late (the sampler was descheduled) is charged as one tick only: the
// whole gap would go to whichever op runs when a core frees up. Reported shares are of
// the sampled time, scaled to the cell's measured phase time.
typedef struct {
    const char *op;
    double s[2];  // forward, backward seconds over the timed steps
} ProfEntry;

typedef struct {
    Watch *w;
    atomic_int stop, active;
    pthread_t thread;
    pthread_mutex_t mu;
    ProfEntry e[HC_MAX_PROF];
    int n;
} Profiler;

static void *prof_thread(void *arg) {
    Profiler *p = arg;
    struct timespec tick = {0, 1000 * 1000};
    double last = nsa_now();
    while (!atomic_load(&p->stop)) {
        nanosleep(&tick, NULL);
        double now = nsa_now(), dt = now - last;
        last = now;
        if (dt > 3e-3) dt = 1e-3;
        if (!atomic_load(&p->active)) continue;
        int phase = p->w->phase;
        const char *op = p->w->op;
        if ((phase != WATCH_FORWARD && phase != WATCH_BACKWARD) || !op) continue;
        int b = phase == WATCH_BACKWARD;
        pthread_mutex_lock(&p->mu);
        int i = 0;
        while (i < p->n && p->e[i].op != op && strcmp(p->e[i].op, op)) i++;
        if (i == p->n && p->n < HC_MAX_PROF) p->e[p->n++] = (ProfEntry){op, {0, 0}};
        if (i < p->n) p->e[i].s[b] += dt;
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

// ---------------------------------------------------------------------------- cells

enum { CELL_PASS, CELL_FAIL, CELL_SKIP };

typedef struct {
    int layers, seq, checkpoint, materialise;
    int status;
    char reason[200];
    double fwd_s, bwd_s, ratio;   // best of the timed steps; ratio = bwd / fwd
    double fwd_cpu_s, bwd_cpu_s;  // process CPU seconds (all threads), best of the timed steps
    double peak_mb;               // arenas (main + scratch) + tape + params + grads
    double rss_mb;                // process peak RSS so far (getrusage), all cells up to this one
    double predicted_mb;          // materialise: the estimate the skip decision used
    double loss, gate_spread;
    int loss_finite, grads_finite;
    double ratio_limit;           // > 0: bwd/fwd was checked against it (--max-bwd-ratio)
    ProfEntry prof[HC_MAX_PROF];  // seconds per step (--profile): sampled share x fwd_s / bwd_s
    int n_prof;
} Cell;

typedef struct {
    const char *config, *json, *log;
    const char *sets[64];
    int n_sets;
    int layers[HC_MAX_LIST], n_layers;
    int seqs[HC_MAX_LIST], n_seqs;
    int ckpts[2], n_ckpts;
    int paths[2], n_paths;
    int steps;
    double timeout, mem_budget_mb, max_ratio;
    int profile;
    DebugSpin spin;
} Opts;

static int parse_int_list(const char *s, int *out, int *n, int lo, int hi, const char *what) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < lo || v > hi || *n == HC_MAX_LIST) {
            nsa_error("bad --%s '%s' (comma list of integers in [%d, %d], at most %d)", what, s, lo, hi,
                      HC_MAX_LIST);
            return NSA_ERR;
        }
        out[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) {
        nsa_error("empty --%s", what);
        return NSA_ERR;
    }
    return NSA_OK;
}

// Comma list of names; each must be one of names[0..k); out gets their indices.
static int parse_name_list(const char *s, const char *const *names, int k, int *out, int *n,
                           const char *what) {
    *n = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int j = 0, dup = 0;
        while (j < k && strcmp(tok, names[j])) j++;
        for (int i = 0; i < *n; i++) dup |= out[i] == j;
        if (j == k || dup) {
            nsa_error("bad --%s '%s' (comma list of: %s%s%s)", what, s, names[0], k > 1 ? ", " : "",
                      k > 1 ? names[1] : "");
            return NSA_ERR;
        }
        out[(*n)++] = j;
    }
    if (*n == 0) {
        nsa_error("empty --%s", what);
        return NSA_ERR;
    }
    return NSA_OK;
}

static const char *const ckpt_names[2] = {"none", "layer"};
static const char *const path_names[2] = {"index", "materialise"};

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
static void run_cell(Model *m, Cell *cell, const int32_t *tok, const int32_t *tgt, const Opts *o,
                     Watch *w, Profiler *prof) {
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
    double fwd[64], bwd[64], fwd_cpu[64], bwd_cpu[64];
    cell->loss_finite = cell->grads_finite = 1;
    if (prof) {
        pthread_mutex_lock(&prof->mu);
        prof->n = 0;
        pthread_mutex_unlock(&prof->mu);
    }
    for (int step = 0; step < o->steps; step++) {
        int timed = step > 0 || o->steps == 1;
        graph_reset(&g);
        model_zero_grads(m);
        if (prof) atomic_store(&prof->active, timed);
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
        if (prof) atomic_store(&prof->active, 0);
        cell->loss = f.loss->data[0];
        if (!isfinite(cell->loss)) cell->loss_finite = 0;
        for (int64_t i = 0; i < m->n_elems; i++)
            if (!isfinite(m->grad[i])) {
                cell->grads_finite = 0;
                break;
            }
        if (timed) {
            int k = step > 0 ? step - 1 : 0;
            if (k < 64) fwd[k] = t1 - t0, bwd[k] = t2 - t1, fwd_cpu[k] = c1 - c0, bwd_cpu[k] = c2 - c1;
        }
    }
    if (n_timed > 64) n_timed = 64;
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
        pthread_mutex_lock(&prof->mu);
        cell->n_prof = prof->n;
        double tot[2] = {0, 0}, phase_s[2] = {cell->fwd_s, cell->bwd_s};
        for (int i = 0; i < prof->n; i++) tot[0] += prof->e[i].s[0], tot[1] += prof->e[i].s[1];
        for (int i = 0; i < prof->n; i++) {
            cell->prof[i] = prof->e[i];
            for (int b = 0; b < 2; b++) cell->prof[i].s[b] = tot[b] > 0 ? prof->e[i].s[b] / tot[b] * phase_s[b] : 0;
        }
        pthread_mutex_unlock(&prof->mu);
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

// ---------------------------------------------------------------------------- report

static void print_header(void) {
    printf("%6s %5s %-5s %-11s %8s %8s %7s %7s %8s %7s %9s %6s %7s  %s\n", "layers", "S", "ckpt", "path",
           "fwd_s", "bwd_s", "bwd/fwd", "cpu b/f", "peak_MB", "rss_MB", "loss", "grads", "gate_sd", "result");
}

static void print_row(const Cell *c) {
    printf("%6d %5d %-5s %-11s ", c->layers, c->seq, ckpt_names[c->checkpoint], path_names[c->materialise]);
    if (c->status == CELL_SKIP) {
        printf("%8s %8s %7s %7s %8s %7s %9s %6s %7s  SKIP: %s\n", "-", "-", "-", "-", "-", "-", "-", "-", "-",
               c->reason);
    } else {
        printf("%8.3f %8.3f %7.2f %7.2f %8.1f %7.0f %9.5f %6s %7.4f  %s%s%s\n", c->fwd_s, c->bwd_s, c->ratio,
               c->bwd_cpu_s / c->fwd_cpu_s, c->peak_mb, c->rss_mb, c->loss, c->grads_finite ? "finite" : "NONFIN", c->gate_spread,
               c->status == CELL_PASS ? "PASS" : "FAIL", c->reason[0] ? ": " : "", c->reason);
    }
    if (c->n_prof > 0) {
        for (int b = 1; b >= 0; b--) {
            double tot = 0;
            for (int i = 0; i < c->n_prof; i++) tot += c->prof[i].s[b];
            printf("         %s per op (s/step):", b ? "backward" : "forward ");
            // Largest first; at most 8.
            int used[HC_MAX_PROF] = {0};
            for (int k = 0; k < 8; k++) {
                int best = -1;
                for (int i = 0; i < c->n_prof; i++)
                    if (!used[i] && c->prof[i].s[b] > 0 && (best < 0 || c->prof[i].s[b] > c->prof[best].s[b]))
                        best = i;
                if (best < 0) break;
                used[best] = 1;
                printf(" %s %.3f (%.0f%%)", c->prof[best].op, c->prof[best].s[b],
                       tot > 0 ? 100.0 * c->prof[best].s[b] / tot : 0.0);
            }
            printf("\n");
        }
    }
    fflush(stdout);
}

static void json_num(FILE *f, const char *key, double v, int last) {
    if (isfinite(v)) fprintf(f, "\"%s\": %.6g%s", key, v, last ? "" : ", ");
    else fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

// The whole table so far, rewritten after every cell (temp file + rename): if the
// watchdog ends the run, the finished cells are on disk.
static int write_json(const char *path, const Opts *o, const Cell *cells, int n, int done) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        nsa_error("cannot write %s", tmp);
        return NSA_ERR;
    }
    int pass = 1;
    for (int i = 0; i < n; i++) pass &= cells[i].status != CELL_FAIL;
    fprintf(f, "{\"config\": \"%s\", \"steps\": %d, \"timeout_s\": %g, \"mem_budget_mb\": %g, ", o->config,
            o->steps, o->timeout, o->mem_budget_mb);
    json_num(f, "max_bwd_ratio", o->max_ratio > 0 ? o->max_ratio : NAN, 0);
    fprintf(f, "\"complete\": %s, \"pass\": %s,\n \"cells\": [\n", done ? "true" : "false",
            pass ? "true" : "false");
    for (int i = 0; i < n; i++) {
        const Cell *c = &cells[i];
        static const char *st[3] = {"pass", "fail", "skipped"};
        fprintf(f, "  {\"layers\": %d, \"seq\": %d, \"checkpoint\": \"%s\", \"path\": \"%s\", \"status\": \"%s\", ",
                c->layers, c->seq, ckpt_names[c->checkpoint], path_names[c->materialise], st[c->status]);
        fprintf(f, "\"reason\": \"%s\", ", c->reason);
        if (c->materialise) json_num(f, "predicted_mb", c->predicted_mb, 0);
        if (c->status != CELL_SKIP) {
            json_num(f, "fwd_s", c->fwd_s, 0);
            json_num(f, "bwd_s", c->bwd_s, 0);
            json_num(f, "bwd_fwd", c->ratio, 0);
            json_num(f, "fwd_cpu_s", c->fwd_cpu_s, 0);
            json_num(f, "bwd_cpu_s", c->bwd_cpu_s, 0);
            json_num(f, "bwd_fwd_limit", c->ratio_limit > 0 ? c->ratio_limit : NAN, 0);
            json_num(f, "peak_mb", c->peak_mb, 0);
            json_num(f, "rss_mb", c->rss_mb, 0);
            json_num(f, "loss", c->loss, 0);
            fprintf(f, "\"loss_finite\": %s, \"grads_finite\": %s, ", c->loss_finite ? "true" : "false",
                    c->grads_finite ? "true" : "false");
            if (c->n_prof > 0) {
                fprintf(f, "\"profile_s\": {");
                for (int i2 = 0; i2 < c->n_prof; i2++)
                    fprintf(f, "%s\"%s\": [%.4f, %.4f]", i2 ? ", " : "", c->prof[i2].op, c->prof[i2].s[0],
                            c->prof[i2].s[1]);
                fprintf(f, "}, ");
            }
        }
        json_num(f, "gate_spread", c->gate_spread, 1);
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, " ]}\n");
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        nsa_error("cannot write %s", path);
        return NSA_ERR;
    }
    return NSA_OK;
}

// ---------------------------------------------------------------------------- main

static void usage(FILE *f) {
    fprintf(f,
            "usage: nsa hangcheck [--layers 1,12] [--seq 128,512,1024,2048] [--checkpoint none,layer]\n"
            "                     [--path index,materialise] [--steps 3] [--timeout 60] [--json FILE]\n"
            "                     [--mem-budget-mb 8192] [--max-bwd-ratio R] [--config seed12]\n"
            "                     [--set key=value ...] [--log FILE] [--profile]\n"
            "  Runs every cell of layers x S x checkpoint x selected-branch path: batch 1, random\n"
            "  tokens, --steps forward+backward steps (the first a warm-up, not timed), under a\n"
            "  watchdog with a deadline of --timeout seconds per phase per layer. Per cell: the best\n"
            "  forward and backward wall seconds of the timed steps, bwd/fwd, the same ratio in\n"
            "  process CPU time (cpu b/f: a cross-check on a busy machine), peak memory (arenas + tape\n"
            "  + params + grads; rss_MB is the process peak so far), final loss, whether loss and\n"
            "  every gradient were finite, and gate_sd (std of the 3 branch gates of the first NSA\n"
            "  layer, mean over tokens and heads; must exceed %g).\n"
            "  A cell fails on a non-finite loss or gradient, gate_sd too small, peak above\n"
            "  --mem-budget-mb, or (with --max-bwd-ratio) bwd/fwd above R in the index-path cells\n"
            "  with the largest layers and S of the matrix (R + 1 with checkpoint=layer, whose\n"
            "  backward includes one recompute of every layer's forward). materialise cells whose\n"
            "  predicted memory exceeds the budget are skipped (not a failure).\n"
            "  The model is the config's with n_layers from --layers and seq_len = the largest S\n"
            "  (--set cannot change those two).\n"
            "  --json FILE writes the table (rewritten after every cell); --log FILE receives the\n"
            "  watchdog's JSON record; --profile adds wall seconds per op (sampled at 1 kHz; with\n"
            "  checkpoint=layer, backward includes the recompute under the forward ops' names).\n"
            "  Exit: 0 all passed, 1 a cell failed, 2 bad usage, 124 the watchdog fired.\n"
            "  Debug only: --debug-spin [forward:|backward:]OP@LAYER (or NSA_DEBUG_SPIN) plants a\n"
            "  hang: that op spins forever, for testing the watchdog.\n",
            HC_GATE_MIN_SPREAD);
}

int hangcheck_main(int argc, char **argv) {
    Opts o;
    memset(&o, 0, sizeof o);
    o.config = "seed12";
    o.steps = 3;
    o.timeout = 60;
    o.mem_budget_mb = 8192;
    o.layers[0] = 1, o.layers[1] = 12, o.n_layers = 2;
    o.seqs[0] = 128, o.seqs[1] = 512, o.seqs[2] = 1024, o.seqs[3] = 2048, o.n_seqs = 4;
    o.ckpts[0] = 0, o.ckpts[1] = 1, o.n_ckpts = 2;
    o.paths[0] = 0, o.paths[1] = 1, o.n_paths = 2;
    const char *spin = getenv("NSA_DEBUG_SPIN");
    enum { O_LAYERS = 256, O_SEQ, O_CKPT, O_PATH, O_STEPS, O_TIMEOUT, O_JSON, O_BUDGET, O_RATIO, O_CONFIG,
           O_SET, O_LOG, O_PROFILE, O_SPIN, O_HELP };
    static struct option lopts[] = {
        {"layers", 1, 0, O_LAYERS},      {"seq", 1, 0, O_SEQ},        {"checkpoint", 1, 0, O_CKPT},
        {"path", 1, 0, O_PATH},          {"steps", 1, 0, O_STEPS},    {"timeout", 1, 0, O_TIMEOUT},
        {"json", 1, 0, O_JSON},          {"mem-budget-mb", 1, 0, O_BUDGET},
        {"max-bwd-ratio", 1, 0, O_RATIO}, {"config", 1, 0, O_CONFIG}, {"set", 1, 0, O_SET},
        {"log", 1, 0, O_LOG},            {"profile", 0, 0, O_PROFILE}, {"debug-spin", 1, 0, O_SPIN},
        {"help", 0, 0, O_HELP},          {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        int rc = NSA_OK;
        char *end = NULL;
        switch (ch) {
        case O_LAYERS: rc = parse_int_list(optarg, o.layers, &o.n_layers, 1, CFG_MAX_LAYERS, "layers"); break;
        case O_SEQ: rc = parse_int_list(optarg, o.seqs, &o.n_seqs, 1, 1 << 20, "seq"); break;
        case O_CKPT: rc = parse_name_list(optarg, ckpt_names, 2, o.ckpts, &o.n_ckpts, "checkpoint"); break;
        case O_PATH: rc = parse_name_list(optarg, path_names, 2, o.paths, &o.n_paths, "path"); break;
        case O_STEPS:
            o.steps = (int)strtol(optarg, &end, 10);
            if (*end || o.steps < 1 || o.steps > 65) rc = NSA_ERR, nsa_error("bad --steps '%s' (1..65)", optarg);
            break;
        case O_TIMEOUT:
            o.timeout = strtod(optarg, &end);
            if (*end || !(o.timeout > 0)) rc = NSA_ERR, nsa_error("bad --timeout '%s' (seconds > 0)", optarg);
            break;
        case O_BUDGET:
            o.mem_budget_mb = strtod(optarg, &end);
            if (*end || !(o.mem_budget_mb > 0)) rc = NSA_ERR, nsa_error("bad --mem-budget-mb '%s'", optarg);
            break;
        case O_RATIO:
            o.max_ratio = strtod(optarg, &end);
            if (*end || !(o.max_ratio > 0)) rc = NSA_ERR, nsa_error("bad --max-bwd-ratio '%s'", optarg);
            break;
        case O_JSON: o.json = optarg; break;
        case O_LOG: o.log = optarg; break;
        case O_CONFIG: o.config = optarg; break;
        case O_SET:
            if (o.n_sets == 64) rc = NSA_ERR, nsa_error("too many --set (at most 64)");
            else o.sets[o.n_sets++] = optarg;
            break;
        case O_PROFILE: o.profile = 1; break;
        case O_SPIN: spin = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (rc != NSA_OK) return 2;
    }
    if (optind < argc) {
        nsa_error("hangcheck: unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (debug_spin_parse(&o.spin, spin) != NSA_OK) return 2;
    if (o.spin.on)
        nsa_warn("debug spin armed: op %s in layer %d (%s) spins forever; the watchdog ends this run",
                 o.spin.op, o.spin.layer,
                 o.spin.phase == WATCH_FORWARD ? "forward" : o.spin.phase == WATCH_BACKWARD ? "backward" : "any phase");

    Config base;
    config_defaults(&base);
    if (config_load(&base, o.config) != NSA_OK) return 2;
    for (int i = 0; i < o.n_sets; i++)
        if (config_set(&base, o.sets[i]) != NSA_OK) return 2;
    int max_seq = 0, max_layers = 0;
    for (int i = 0; i < o.n_seqs; i++) max_seq = o.seqs[i] > max_seq ? o.seqs[i] : max_seq;
    for (int i = 0; i < o.n_layers; i++) max_layers = o.layers[i] > max_layers ? o.layers[i] : max_layers;
    base.seq_len = max_seq;
    // Validate each layer count up front: a bad --set should fail before any cell runs.
    for (int i = 0; i < o.n_layers; i++) {
        Config c = base;
        c.n_layers = o.layers[i];
        if (config_validate(&c) != NSA_OK) return 2;
    }

    int n_cells = o.n_layers * o.n_seqs * o.n_ckpts * o.n_paths;
    if (n_cells > HC_MAX_CELLS) {
        nsa_error("hangcheck: %d cells, at most %d", n_cells, HC_MAX_CELLS);
        return 2;
    }
    Cell *cells = nsa_calloc((size_t)n_cells, sizeof *cells);
    {
        Config c = base;
        config_validate(&c);
        printf("nsa hangcheck: config %s (V %lld, D %lld, H/G %lld/%lld, Dh %lld, F %lld, l/d/l'/n/w "
               "%lld/%lld/%lld/%lld/%lld), batch 1, %d step%s (%s), deadline %g s per phase per layer, "
               "memory budget %g MB\n",
               o.config, (long long)c.vocab_size, (long long)c.d_model, (long long)c.n_heads,
               (long long)c.n_kv_heads, (long long)c.head_dim, (long long)c.ffn_dim, (long long)c.cmp_block,
               (long long)c.cmp_stride, (long long)c.slc_block, (long long)c.slc_topn, (long long)c.window,
               o.steps, o.steps == 1 ? "" : "s", o.steps == 1 ? "timed" : "the first untimed", o.timeout,
               o.mem_budget_mb);
        if (o.max_ratio > 0)
            printf("  bwd/fwd must be <= %g (checkpoint=none) and <= %g (checkpoint=layer: its backward\n"
                   "  recomputes each layer's forward first) in the index cells with %d layers and S = %d\n",
                   o.max_ratio, o.max_ratio + 1, max_layers, max_seq);
    }
    print_header();
    fflush(stdout);

    Watch w;
    memset(&w, 0, sizeof w);
    w.spin_op_layer = -1;
    w.layer = -1;
    Watchdog *wd = watchdog_start(&w, o.timeout, o.log);
    Profiler *prof = NULL;
    if (o.profile) {
        prof = nsa_calloc(1, sizeof *prof);
        prof->w = &w;
        pthread_mutex_init(&prof->mu, NULL);
        atomic_init(&prof->stop, 0);
        atomic_init(&prof->active, 0);
        NSA_ASSERT(pthread_create(&prof->thread, NULL, prof_thread, prof) == 0);
    }

    int n = 0, failed = 0;
    for (int li = 0; li < o.n_layers; li++) {
        Config c = base;
        c.n_layers = o.layers[li];
        config_validate(&c);
        Model m;
        model_create(&m, &c);
        model_init_params(&m, (uint64_t)c.seed);
        model_alloc_grads(&m);
        for (int si = 0; si < o.n_seqs; si++) {
            int T = o.seqs[si];
            int32_t *tok = nsa_malloc((size_t)T * sizeof *tok), *tgt = nsa_malloc((size_t)T * sizeof *tgt);
            Rng r;
            rng_seed(&r, 1000 + (uint64_t)T);
            for (int t = 0; t < T; t++) tok[t] = (int32_t)rng_below(&r, (uint64_t)c.vocab_size);
            for (int t = 0; t < T; t++) tgt[t] = t + 1 < T ? tok[t + 1] : (int32_t)rng_below(&r, (uint64_t)c.vocab_size);
            double spread = gate_spread(&m, tok, T);
            for (int ci = 0; ci < o.n_ckpts; ci++) {
                double index_peak = NAN;
                for (int pi = 0; pi < o.n_paths; pi++) {
                    Cell *cell = &cells[n++];
                    cell->layers = c.n_layers, cell->seq = T;
                    cell->checkpoint = o.ckpts[ci], cell->materialise = o.paths[pi];
                    cell->gate_spread = spread;
                    if (cell->materialise) {
                        double base_mb = isfinite(index_peak)
                                             ? index_peak
                                             : 2.0 * (double)m.n_elems * sizeof(float) / (1024.0 * 1024.0);
                        cell->predicted_mb = materialise_predicted_mb(&m, T, cell->checkpoint, base_mb);
                        if (cell->predicted_mb > o.mem_budget_mb) {
                            cell->status = CELL_SKIP;
                            snprintf(cell->reason, sizeof cell->reason,
                                     "memory (predicted %.0f MB > budget %g MB)", cell->predicted_mb,
                                     o.mem_budget_mb);
                            print_row(cell);
                            if (o.json) write_json(o.json, &o, cells, n, 0);
                            continue;
                        }
                    }
                    run_cell(&m, cell, tok, tgt, &o, &w, prof);
                    if (!cell->materialise) index_peak = cell->peak_mb;
                    char *rs = cell->reason;
                    size_t cap = sizeof cell->reason;
#define REASON(...) snprintf(rs + strlen(rs), cap - strlen(rs), __VA_ARGS__)
                    if (!cell->loss_finite) REASON("%snon-finite loss", rs[0] ? "; " : "");
                    if (!cell->grads_finite) REASON("%snon-finite gradient", rs[0] ? "; " : "");
                    if (!(cell->gate_spread > HC_GATE_MIN_SPREAD))
                        REASON("%sgate spread %.2g <= %g", rs[0] ? "; " : "", cell->gate_spread,
                               HC_GATE_MIN_SPREAD);
                    if (cell->peak_mb > o.mem_budget_mb)
                        REASON("%speak %.0f MB > budget %g MB", rs[0] ? "; " : "", cell->peak_mb, o.mem_budget_mb);
                    if (o.max_ratio > 0 && !cell->materialise && cell->layers == max_layers && T == max_seq) {
                        cell->ratio_limit = o.max_ratio + (cell->checkpoint ? 1 : 0);
                        if (!(cell->ratio <= cell->ratio_limit))
                            REASON("%sbwd/fwd %.2f > %g", rs[0] ? "; " : "", cell->ratio, cell->ratio_limit);
                    }
#undef REASON
                    cell->status = rs[0] ? CELL_FAIL : CELL_PASS;
                    failed += cell->status == CELL_FAIL;
                    print_row(cell);
                    if (o.json) write_json(o.json, &o, cells, n, 0);
                }
            }
            free(tok);
            free(tgt);
        }
        model_free(&m);
    }
    watchdog_stop(wd);
    if (prof) {
        atomic_store(&prof->stop, 1);
        pthread_join(prof->thread, NULL);
        pthread_mutex_destroy(&prof->mu);
        free(prof);
    }
    int json_rc = o.json ? write_json(o.json, &o, cells, n, 1) : NSA_OK;
    int skipped = 0;
    for (int i = 0; i < n; i++) skipped += cells[i].status == CELL_SKIP;
    printf("hangcheck: %d cell%s, %d passed, %d failed, %d skipped\n", n, n == 1 ? "" : "s",
           n - failed - skipped, failed, skipped);
    free(cells);
    return failed || json_rc != NSA_OK ? 1 : 0;
}
