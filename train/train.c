// train.c: see train.h. The run directory holds config.cfg (the resolved config),
// log.jsonl (one JSON record per step and per evaluation), ckpt_<step 8 digits>.h5 and
// `latest` (the name of the newest checkpoint, replaced atomically after the checkpoint
// itself is on disk, so it never names a partial file).
#include "train/train.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/eval.h"
#include "kernels/common.h"

// The one piece of global mutable state here: a signal handler can reach nothing else.
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

// ---------------------------------------------------------------------------- run directory

static int mkdir_p(const char *dir) {
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        nsa_error("run directory name too long: %s", dir);
        return NSA_ERR;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                nsa_error("cannot create directory %s: %s", buf, strerror(errno));
                return NSA_ERR;
            }
            *p = c;
            if (!c) break;
        }
    }
    return NSA_OK;
}

// Writes `text` to path through path.tmp + fsync + rename: readers see the old or the new.
static int write_atomic(const char *path, const char *text) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    size_t n = strlen(text);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd) != 0) {
        nsa_error("cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        return NSA_ERR;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        nsa_error("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        return NSA_ERR;
    }
    return NSA_OK;
}

static int is_ckpt_name(const char *s) {
    if (strncmp(s, "ckpt_", 5)) return 0;
    for (int i = 5; i < 13; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return !strcmp(s + 13, ".h5");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Checkpoint file names of a run directory, oldest first (zero-padded steps sort as text).
static int list_ckpts(const char *dir, char ***names) {
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_ckpt_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            *names = realloc(*names, (size_t)cap * sizeof **names);
            NSA_ASSERT(*names);
        }
        (*names)[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(*names, (size_t)n, sizeof **names, cmp_str);
    return n;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

// Leftovers of a run killed while writing: never loadable, never named by `latest`.
static void remove_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 4 && !strcmp(e->d_name + n - 4, ".tmp")) {
            char p[1400];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            remove(p);
        }
    }
    closedir(d);
}

int train_latest_ckpt(const char *run_dir, char *path, size_t size) {
    char lp[1100], name[256] = "";
    snprintf(lp, sizeof lp, "%s/latest", run_dir);
    FILE *f = fopen(lp, "r");
    if (f) {
        if (!fgets(name, sizeof name, f)) name[0] = 0;
        fclose(f);
        name[strcspn(name, "\r\n")] = 0;
    }
    if (!name[0]) {  // no `latest` (killed before the first one): the newest complete file
        char **names;
        int n = list_ckpts(run_dir, &names);
        if (n) snprintf(name, sizeof name, "%s", names[n - 1]);
        free_names(names, n);
    }
    if (!name[0]) {
        struct stat sb;
        if (stat(run_dir, &sb) != 0) nsa_error("cannot resume: run directory %s does not exist", run_dir);
        else nsa_error("cannot resume: %s has no checkpoint (no `latest`, no ckpt_*.h5)", run_dir);
        return NSA_ERR;
    }
    if ((size_t)snprintf(path, size, "%s/%s", run_dir, name) >= size) {
        nsa_error("checkpoint path too long in %s", run_dir);
        return NSA_ERR;
    }
    return NSA_OK;
}

// ---------------------------------------------------------------------------- trainer

static int same_model(const Config *a, const Config *b, const char *path) {
    for (int i = 0; i < cfg_n_keys; i++) {
        const CfgKey *k = &cfg_keys[i];
        if (!k->model) continue;
        const char *pa = (const char *)a + k->offset, *pb = (const char *)b + k->offset;
        int same = k->type == CFG_STR ? !strcmp(pa, pb) : !memcmp(pa, pb, k->size);
        if (!same) {
            nsa_error("%s: model key %s differs from the run's config (a run cannot change its model)", path,
                      k->name);
            return 0;
        }
    }
    return 1;
}

int trainer_init(Trainer *t, const Config *cfg, const char *resume_ckpt) {
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    const Config *c = &t->cfg;
    int64_t S = c->seq_len, B = c->batch_size;
    if (dataset_load(c->data, c->vocab_size, &t->data) != NSA_OK) return NSA_ERR;
    if (t->data.vocab_size > c->vocab_size) {
        nsa_error("%s: vocab_size %lld does not fit the model's vocab_size %lld (data and config disagree)",
                  c->data, (long long)t->data.vocab_size, (long long)c->vocab_size);
        dataset_free(&t->data);
        return NSA_ERR;
    }
    if (t->data.n_train < S + 2) {
        nsa_error("%s: /train has %lld tokens; windows of seq_len %lld need at least %lld", c->data,
                  (long long)t->data.n_train, (long long)S, (long long)(S + 2));
        dataset_free(&t->data);
        return NSA_ERR;
    }
    if (c->eval_every > 0 && t->data.n_val < S + 1) {
        nsa_error("%s: /val has %lld tokens; evaluation at seq_len %lld needs at least %lld (or eval_every=0)",
                  c->data, (long long)t->data.n_val, (long long)S, (long long)(S + 1));
        dataset_free(&t->data);
        return NSA_ERR;
    }
    if (resume_ckpt) {
        if (ckpt_load(resume_ckpt, &t->model) != NSA_OK) {
            dataset_free(&t->data);
            return NSA_ERR;
        }
        if (!same_model(&t->model.cfg, c, resume_ckpt)) {
            model_free(&t->model);
            dataset_free(&t->data);
            return NSA_ERR;
        }
        t->model.cfg = *c;  // training keys (steps, lr, ...) as resolved for this run
    } else {
        model_create(&t->model, c);
        model_init_params(&t->model, (uint64_t)c->seed);
    }
    model_alloc_grads(&t->model);
    adamw_init(&t->opt, t->model.n_elems);
    if (resume_ckpt) {
        int r = ckpt_load_train(resume_ckpt, &t->model, t->opt.m, t->opt.v, &t->st);
        if (r != NSA_OK) {
            if (r == 1)
                nsa_error("%s has no /optim or /state: a weights-only checkpoint cannot be resumed", resume_ckpt);
            adamw_free(&t->opt);
            model_free(&t->model);
            dataset_free(&t->data);
            return NSA_ERR;
        }
        memcpy(t->rng.s, t->st.rng, sizeof t->rng.s);
    } else {
        // The data generator is seeded apart from the weights' initialisation stream.
        rng_seed(&t->rng, (uint64_t)c->seed ^ 0x5eedda7a5eedda7aULL);
    }
    arena_init(&t->arena, 0);
    arena_init(&t->scratch_arena, 0);
    arena_init(&t->eval_arena, 0);
    graph_init(&t->graph, &t->arena);
    graph_init(&t->scratch, &t->scratch_arena);
    graph_init(&t->eval_graph, &t->eval_arena);
    t->watch.spin_op_layer = -1;
    t->graph.watch = &t->watch;
    t->eval_graph.watch = &t->watch;
    t->tokens = nsa_malloc((size_t)(B * S) * sizeof *t->tokens);
    t->targets = nsa_malloc((size_t)(B * S) * sizeof *t->targets);
    snprintf(t->log_path, sizeof t->log_path, "%s/log.jsonl", c->run_dir);
    return NSA_OK;
}

void trainer_free(Trainer *t) {
    if (t->wd) watchdog_stop(t->wd);
    free(t->tokens);
    free(t->targets);
    graph_free(&t->graph);
    graph_free(&t->scratch);
    graph_free(&t->eval_graph);
    arena_free(&t->arena);
    arena_free(&t->scratch_arena);
    arena_free(&t->eval_arena);
    adamw_free(&t->opt);
    model_free(&t->model);
    dataset_free(&t->data);
    memset(t, 0, sizeof *t);
}

// Fills tokens/targets (B, S) with windows whose starts are uniform in [0, n_train − S − 1].
static void draw_batch(Trainer *t) {
    int64_t S = t->cfg.seq_len, B = t->cfg.batch_size;
    for (int64_t b = 0; b < B; b++) {
        int64_t start = (int64_t)rng_below(&t->rng, (uint64_t)(t->data.n_train - S));
        const uint16_t *w = t->data.train + start;
        for (int64_t i = 0; i < S; i++) {
            t->tokens[b * S + i] = w[i];
            t->targets[b * S + i] = w[i + 1];
        }
        t->st.data_position++;  // windows drawn so far
    }
}

static void layer_of(const char *name, char *out, size_t n) {
    int l;
    if (sscanf(name, "layers.%d.", &l) == 1) snprintf(out, n, "layer %d", l);
    else snprintf(out, n, "outside the layers");
}

// Names where the non-finite values are, for the warning and the final diagnostic.
static void describe_nonfinite(const Trainer *t, double loss, char *msg, size_t n) {
    const Model *m = &t->model;
    int ng, np;
    int ig = param_nonfinite(m, m->grad, &ng), ip = param_nonfinite(m, m->data, &np);
    char where[64];
    int k = snprintf(msg, n, "loss %g", loss);
    if (ig >= 0) {
        layer_of(m->params[ig].name, where, sizeof where);
        k += snprintf(msg + k, n - (size_t)k,
                      ", non-finite gradient in %d of %d parameters, nearest the loss %s (%s)", ng, m->n_params,
                      m->params[ig].name, where);
    }
    if (ip >= 0 && (size_t)k < n) {
        layer_of(m->params[ip].name, where, sizeof where);
        snprintf(msg + k, n - (size_t)k, ", parameter %s (%s) itself is non-finite", m->params[ip].name, where);
    }
}

int trainer_step(Trainer *t, StepStats *s) {
    const Config *c = &t->cfg;
    Model *m = &t->model;
    int B = (int)c->batch_size, S = (int)c->seq_len;
    double t0 = nsa_now();
    ForwardOpts fo = {0};
    fo.checkpoint = c->checkpoint == CKPT_LAYER;
    fo.scratch = &t->scratch;
    model_zero_grads(m);
    double loss = 0.0;
    for (int64_t a = 0; a < c->grad_accum; a++) {
        draw_batch(t);
        Forward f;
        watch_phase(&t->watch, WATCH_FORWARD);
        model_forward(m, &t->graph, t->tokens, t->targets, B, S, &fo, &f);
        watch_phase(&t->watch, WATCH_BACKWARD);
        graph_backward(&t->graph, f.loss);
        loss += f.loss->data[0];
        // Reset now rather than before the next forward: the first step's overflow is folded
        // into one buffer here, so no later step allocates.
        graph_reset(&t->graph);
    }
    watch_phase(&t->watch, WATCH_OPTIMIZER);
    loss /= (double)c->grad_accum;
    grad_scale(m->grad, m->n_elems, (float)(1.0 / (double)c->grad_accum));
    double norm = grad_global_norm(m->grad, m->n_elems);
    int64_t step = t->st.step + 1;
    double lr = lr_at(c, step);
    memset(s, 0, sizeof *s);
    s->loss = loss, s->lr = lr, s->grad_norm = norm;
    int rc = NSA_OK;
    if (!isfinite(loss) || !isfinite(norm)) {
        s->skipped = 1;
        t->bad_steps++;
        char msg[600];
        describe_nonfinite(t, loss, msg, sizeof msg);
        if (t->bad_steps >= c->max_bad_steps) {
            nsa_error("stopping at step %lld: %d non-finite steps in a row (max_bad_steps); last: %s",
                      (long long)step, t->bad_steps, msg);
            rc = NSA_ERR;
        } else {
            nsa_warn("step %lld skipped (%d in a row): %s", (long long)step, t->bad_steps, msg);
        }
    } else {
        t->bad_steps = 0;
        if (c->grad_clip > 0 && norm > c->grad_clip)
            grad_scale(m->grad, m->n_elems, (float)(c->grad_clip / norm));
        adamw_step(&t->opt, m, step, lr, c);
    }
    // A skipped step still consumes its batch and its place in the schedule.
    if (rc == NSA_OK) {
        t->st.step = step;
        t->st.tokens_seen += (int64_t)B * S * c->grad_accum;
    }
    watch_phase(&t->watch, WATCH_IDLE);
    s->seconds = nsa_now() - t0;
    return rc;
}

double trainer_eval(Trainer *t) {
    const Config *c = &t->cfg;
    int W = (int)(c->eval_batches * c->batch_size);
    double loss = eval_loss(&t->model, &t->eval_graph, t->data.val, t->data.n_val, (int)c->seq_len,
                            W > 0 ? W : 1, t->tokens, t->targets);
    watch_phase(&t->watch, WATCH_IDLE);
    return loss;
}

int trainer_save(Trainer *t) {
    const Config *c = &t->cfg;
    char name[64], path[1200];
    snprintf(name, sizeof name, "ckpt_%08lld.h5", (long long)t->st.step);
    snprintf(path, sizeof path, "%s/%s", c->run_dir, name);
    memcpy(t->st.rng, t->rng.s, sizeof t->st.rng);
    if (ckpt_save(path, &t->model, t->opt.m, t->opt.v, &t->st) != NSA_OK) return NSA_ERR;
    // `latest` moves only once the checkpoint itself has been renamed into place.
    char lp[1100], text[80];
    snprintf(lp, sizeof lp, "%s/latest", c->run_dir);
    snprintf(text, sizeof text, "%s\n", name);
    if (write_atomic(lp, text) != NSA_OK) return NSA_ERR;
    char **names;
    int n = list_ckpts(c->run_dir, &names);
    for (int i = 0; i < n - (int)c->keep_ckpts; i++) {
        if (!strcmp(names[i], name)) continue;
        snprintf(path, sizeof path, "%s/%s", c->run_dir, names[i]);
        remove(path);
    }
    free_names(names, n);
    return NSA_OK;
}

// ---------------------------------------------------------------------------- log and progress

static void json_num(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);  // JSON has no NaN or Infinity
}

// On resume, records past the checkpoint's step describe steps that are about to be redone:
// drop them so the log reads as one run.
static int truncate_log(const char *path, int64_t step) {
    FILE *in = fopen(path, "r");
    if (!in) return NSA_OK;
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        nsa_error("cannot write %s: %s", tmp, strerror(errno));
        fclose(in);
        return NSA_ERR;
    }
    char line[4096];
    while (fgets(line, sizeof line, in)) {
        const char *p = strstr(line, "\"step\":");
        if (p && atoll(p + 7) > step) continue;
        if (!strchr(line, '\n')) continue;  // cut off by a crash mid-write
        fputs(line, out);
    }
    fclose(in);
    int bad = fflush(out) != 0 || fsync(fileno(out)) != 0;
    fclose(out);
    if (bad || rename(tmp, path) != 0) {
        nsa_error("cannot rewrite %s: %s", path, strerror(errno));
        return NSA_ERR;
    }
    return NSA_OK;
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

// ---------------------------------------------------------------------------- the loop

typedef struct {
    int64_t stop_at;  // stop with a checkpoint after this step (0: cfg.steps)
    int resumed;
} LoopOpts;

static int train_loop(Trainer *t, const LoopOpts *o) {
    const Config *c = &t->cfg;
    int64_t end = c->steps;
    if (o->stop_at > 0 && o->stop_at < end) end = o->stop_at;
    FILE *log = fopen(t->log_path, o->resumed ? "a" : "w");
    if (!log) {
        nsa_error("cannot open %s: %s", t->log_path, strerror(errno));
        return 1;
    }
    int tty = isatty(fileno(stdout));
    int64_t tok_per_step = c->batch_size * c->seq_len * c->grad_accum;
    int64_t first = t->st.step, done = 0;
    double t_start = nsa_now(), t_train = 0.0;
    int rc = 0, saved_at_end = 0, line_open = 0;  // line_open: a \r progress line awaits its newline
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    // A second Ctrl-C kills at once (the checkpoint rename keeps the previous one whole);
    // SA_RESTART keeps a signal from failing a checkpoint write with EINTR.
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (first >= end)
        printf("%s: already at step %lld of %lld\n", c->run_dir, (long long)first, (long long)end);
    while (t->st.step < end && !stop_signal) {
        StepStats s;
        if (trainer_step(t, &s) != NSA_OK) {
            rc = 1;
            break;
        }
        done++;
        t_train += s.seconds;
        int64_t step = t->st.step;
        double tps = (double)(done * tok_per_step) / t_train;
        double eta = (double)(c->steps - step) * t_train / (double)done;  // to the run's end, not --stop-at
        fprintf(log, "{\"type\":\"step\",\"step\":%lld", (long long)step);
        json_num(log, "loss", s.loss, "%.17g");
        json_num(log, "lr", s.lr, "%.9g");
        json_num(log, "grad_norm", s.grad_norm, "%.9g");
        json_num(log, "tokens_per_s", tps, "%.1f");
        json_num(log, "step_s", s.seconds, "%.4f");
        json_num(log, "elapsed_s", nsa_now() - t_start, "%.2f");
        if (s.skipped) fputs(",\"skipped\":true", log);
        fputs("}\n", log);
        fflush(log);
        // A terminal gets every step on one rewritten line; a log file every log_every steps.
        if (tty || (c->log_every > 0 && (step % c->log_every == 0 || step == end || step == first + 1))) {
            char eta_s[32];
            fmt_duration(eta_s, sizeof eta_s, eta);
            printf("%sstep %lld/%lld | loss %.4f | lr %.3g | grad norm %.3g | %.0f tok/s | ETA %s%s",
                   tty ? "\r" : "", (long long)step, (long long)c->steps, s.loss, s.lr, s.grad_norm, tps,
                   eta_s, tty ? "\033[K" : "\n");
            fflush(stdout);
            line_open = tty;
        }
        int last = step == end;
        if (c->eval_every > 0 && (step % c->eval_every == 0 || (last && step == c->steps))) {
            double te = nsa_now();
            double val = trainer_eval(t), bpb = val / M_LN2;
            fprintf(log, "{\"type\":\"eval\",\"step\":%lld", (long long)step);
            json_num(log, "val_loss", val, "%.17g");
            json_num(log, "val_bpb", bpb, "%.9g");
            json_num(log, "eval_s", nsa_now() - te, "%.2f");
            fputs("}\n", log);
            fflush(log);
            printf("%sstep %lld: val loss %.4f nats/token, %.4f bits/byte (%.1f s)%s\n", tty ? "\r" : "",
                   (long long)step, val, bpb, nsa_now() - te, tty ? "\033[K" : "");
            line_open = 0;
        }
        if (c->ckpt_every > 0 && step % c->ckpt_every == 0) {
            if (trainer_save(t) != NSA_OK) {
                rc = 1;
                break;
            }
            saved_at_end = step == end;
        }
    }
    if (line_open) putchar('\n');
    if (rc == 0 && !saved_at_end && t->st.step > first) {
        if (trainer_save(t) != NSA_OK) rc = 1;
    }
    if (rc == 0) {
        if (stop_signal)
            printf("stopped by signal %d at step %lld; checkpoint written. Continue with: nsa train --resume %s\n",
                   (int)stop_signal, (long long)t->st.step, c->run_dir);
        else if (done)
            printf("done: step %lld/%lld in %.1f s; checkpoint %s/latest\n", (long long)t->st.step,
                   (long long)c->steps, nsa_now() - t_start, c->run_dir);
    }
    fclose(log);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

// ---------------------------------------------------------------------------- nsa train

static void usage(FILE *f) {
    fprintf(f,
            "usage: nsa train --config NAME|FILE [--set key=value ...] [--name NAME] [--step-timeout SEC]\n"
            "       nsa train --resume RUN_DIR [--set key=value ...] [--stop-at STEP]\n"
            "  Trains on the dataset `data` (default data/kjv.h5; make one with scripts/get-corpus.sh).\n"
            "  RUN_DIR (run_dir, default runs/default; --name NAME = runs/NAME) receives config.cfg,\n"
            "  log.jsonl, ckpt_<step>.h5 every ckpt_every steps and at the end, and `latest`.\n"
            "  --resume continues the newest checkpoint of RUN_DIR bit-exactly; --set may change\n"
            "  training keys (e.g. steps), not model keys. --stop-at STEP stops (with a checkpoint)\n"
            "  after STEP without changing the schedule. SIGINT/SIGTERM finish the step, save, exit 0.\n"
            "  Keys:");
    for (int i = 0; i < cfg_n_keys; i++) fprintf(f, "%s%s", i % 8 == 0 ? "\n    " : " ", cfg_keys[i].name);
    fprintf(f, "\n");
}

int train_main(int argc, char **argv) {
    const char *config = NULL, *resume = NULL, *name = NULL;
    const char *sets[128];
    int n_sets = 0;
    double step_timeout = -1;
    long long stop_at = 0;
    static struct option opts[] = {{"config", 1, 0, 'c'},       {"set", 1, 0, 'S'},     {"resume", 1, 0, 'r'},
                                   {"name", 1, 0, 'n'},         {"step-timeout", 1, 0, 't'},
                                   {"stop-at", 1, 0, 'a'},      {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    int ch;
    char *end;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'S':
            if (n_sets == 128) {
                nsa_error("too many --set options (at most 128)");
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case 'r': resume = optarg; break;
        case 'n': name = optarg; break;
        case 't':
            step_timeout = strtod(optarg, &end);
            if (*end || !(step_timeout >= 0)) {
                nsa_error("--step-timeout must be a number of seconds >= 0, got '%s'", optarg);
                return 2;
            }
            break;
        case 'a':
            stop_at = strtoll(optarg, &end, 10);
            if (*end || stop_at < 1) {
                nsa_error("--stop-at must be a positive step number, got '%s'", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        nsa_error("unexpected argument '%s' (settings go through --set key=value)", argv[optind]);
        return 2;
    }
    if (!config == !resume) {
        nsa_error(resume ? "--resume takes the config from the run's checkpoint; drop --config (use --set)"
                         : "train needs --config NAME|FILE or --resume RUN_DIR");
        return 2;
    }
    if (resume && name) {
        nsa_error("--name picks a new run directory; with --resume the run directory is RUN_DIR");
        return 2;
    }
    Config c;
    config_defaults(&c);
    char ckpt[1200];
    if (resume) {
        if (train_latest_ckpt(resume, ckpt, sizeof ckpt) != NSA_OK) return 1;
        c.gate_hidden = 0;
        if (ckpt_read_config(ckpt, &c) != NSA_OK) return 1;
    } else if (config_load(&c, config) != NSA_OK) {
        return 1;
    }
    Config file_cfg = c;
    for (int i = 0; i < n_sets; i++)
        if (config_set(&c, sets[i]) != NSA_OK) return 1;
    if (name) {
        if (!*name || strchr(name, '/') || strlen(name) > 200) {
            nsa_error("--name must be a plain directory name, got '%s'", name);
            return 2;
        }
        snprintf(c.run_dir, sizeof c.run_dir, "runs/%s", name);
    }
    if (resume) snprintf(c.run_dir, sizeof c.run_dir, "%s", resume);
    if (step_timeout >= 0) c.step_timeout = step_timeout;
    if (config_validate(&c) != NSA_OK) return 1;
    if (resume && !same_model(&file_cfg, &c, ckpt)) return 1;
    if (c.seq_len < 1 || c.eval_batches < 0 || c.ckpt_every < 0 || c.eval_every < 0 || c.max_bad_steps < 1 ||
        c.grad_clip < 0 || c.weight_decay < 0 || c.step_timeout < 0) {
        nsa_error("eval_every, eval_batches, ckpt_every, grad_clip, weight_decay and step_timeout must be >= 0, "
                  "max_bad_steps >= 1");
        return 1;
    }
    if (c.eval_every > 0 && c.eval_batches < 1) {
        nsa_error("eval_batches must be >= 1 when eval_every > 0");
        return 1;
    }
    if (!resume) {
        char **names;
        int n = list_ckpts(c.run_dir, &names);
        free_names(names, n);
        if (n) {
            nsa_error("%s already holds checkpoints: continue it with --resume %s, or pick another --name",
                      c.run_dir, c.run_dir);
            return 1;
        }
    }
    Trainer t;
    if (trainer_init(&t, &c, resume ? ckpt : NULL) != NSA_OK) return 1;
    if (mkdir_p(c.run_dir) != NSA_OK) {
        trainer_free(&t);
        return 1;
    }
    remove_tmp_files(c.run_dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.cfg", c.run_dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        nsa_error("cannot write %s: %s", path, strerror(errno));
        trainer_free(&t);
        return 1;
    }
    config_fprint(&t.cfg, f);
    fclose(f);
    if (resume && truncate_log(t.log_path, t.st.step) != NSA_OK) {
        trainer_free(&t);
        return 1;
    }
    t.wd = watchdog_start(&t.watch, c.step_timeout, t.log_path);
    printf("%s %s: %lld parameters, %s, batch %lld x %lld tokens x %lld accum, %lld steps, checkpoint=%s\n",
           resume ? "resuming" : "training", c.run_dir, (long long)t.model.n_elems, c.attn,
           (long long)c.batch_size, (long long)c.seq_len, (long long)c.grad_accum, (long long)c.steps,
           config_enum_name(config_key("checkpoint"), &c));
    if (resume) printf("  from %s (step %lld)\n", ckpt, (long long)t.st.step);
    LoopOpts o = {stop_at, resume != NULL};
    int rc = train_loop(&t, &o);
    trainer_free(&t);
    return rc;
}
