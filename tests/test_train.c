// test_train.c: `nsa train` and its parts: resume is bit-exact (and thread-count
// independent), gradient checkpointing is bit-identical, SIGKILL during a checkpoint write
// leaves the previous one loadable, SIGTERM stops cleanly, loss falls, the steady-state step
// allocates nothing, non-finite steps are skipped then stop the run with a diagnostic, and
// the watchdog ends a stuck step. Everything runs on the tiny config over a synthetic
// corpus each test writes to its own temporary directory.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "data/checkpoint.h"
#include "kernels/common.h"
#include "kernels/cpu.h"
#include "model/model.h"
#include "tests/testutil.h"
#include "train/rundir.h"
#include "train/trainer.h"

// ---------------------------------------------------------------------------- helpers

static char dir[256];  // this test's temporary directory (each Criterion test is a process)

static void make_dir(void) {
    tu_mkdtemp(dir, sizeof dir, "nsa_train_");
    cpu_set_threads(1);
}

static void remove_dir(void) { tu_rm_rf(dir); }

static void corpus(char *h5, size_t size) {
    char txt[300];
    snprintf(txt, sizeof txt, "%s/corpus.txt", dir);
    snprintf(h5, size, "%s/corpus.h5", dir);
    tu_write_corpus(txt, h5);
}

// The tiny config at seq_len 64, for a training run over `data` into `run_dir`.
static void tiny_config(Config *c, const char *data, const char *run_dir) {
    config_defaults(c);
    cr_assert_eq(config_load(c, "tiny"), NSA_OK);
    c->seq_len = 64, c->batch_size = 2, c->steps = 30, c->warmup = 3, c->lr = 3e-3, c->min_lr = 3e-4;
    c->eval_every = 0, c->eval_batches = 2, c->ckpt_every = 0;
    snprintf(c->data, sizeof c->data, "%s", data);
    snprintf(c->run_dir, sizeof c->run_dir, "%s", run_dir);
    cr_assert_eq(config_validate(c), NSA_OK);
}

// Runs `nsa train --quiet` in this process with the given arguments (NULL-terminated).
static int run_train(const char *first, ...) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = "train";
    argv[argc++] = "--quiet";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return cmd_train(argc, argv);
}

// Losses of the step records of a log.jsonl, as printed (%.17g: the exact double).
static int read_losses(const char *log, char losses[][40], int max) {
    FILE *f = fopen(log, "r");
    cr_assert(f, "no %s", log);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        const char *p = strstr(line, "\"loss\":");
        // Skips a last line still being written by a live trainer.
        if (!strstr(line, "\"type\":\"step\"") || !p || !strchr(line, '\n')) continue;
        sscanf(p + 7, "%39[^,]", losses[n++]);
    }
    fclose(f);
    return n;
}

static void load_full(const char *path, Model *m, float **mo, float **vo, TrainState *st) {
    cr_assert_eq(ckpt_load(path, m), NSA_OK, "%s does not load", path);
    *mo = malloc((size_t)m->n_elems * sizeof(float));
    *vo = malloc((size_t)m->n_elems * sizeof(float));
    cr_assert_eq(ckpt_load_train(path, m, *mo, *vo, st), NSA_OK, "%s lacks optimiser state", path);
}

// ---------------------------------------------------------------------------- resume

// 2N steps in one run == N steps, stop, resume, N steps: losses, parameters, moments and
// state bit for bit. The one-run side uses 2 threads and the resumed side 1, so this also
// holds the loop to thread-count independence. grad_accum = 2, clipping that bites, an
// evaluation and a checkpoint inside the span: none of them may perturb the result.
Test(train, resume_is_bit_exact, .init = make_dir, .fini = remove_dir, .timeout = 120) {
    char data[300], a[300], b[300];
    corpus(data, sizeof data);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    char set_data[400], set_a[400], set_b[400];
    snprintf(set_data, sizeof set_data, "data=%s", data);
    snprintf(set_a, sizeof set_a, "run_dir=%s", a);
    snprintf(set_b, sizeof set_b, "run_dir=%s", b);
#define COMMON "--config", "tiny", "--set", set_data, "--set", "seq_len=64", "--set", "batch_size=2", "--set", \
               "grad_accum=2", "--set", "steps=8", "--set", "warmup=2", "--set", "lr=3e-3", "--set",        \
               "grad_clip=0.5", "--set", "eval_every=3", "--set", "eval_batches=1", "--set", "ckpt_every=3"
    cpu_set_threads(2);
    cr_assert_eq(run_train(COMMON, "--set", set_a, NULL), 0);
    cpu_set_threads(1);
    cr_assert_eq(run_train(COMMON, "--set", set_b, "--stop-at", "4", NULL), 0);
#undef COMMON
    char ck[400];
    cr_assert_eq(rundir_latest_ckpt(b, ck, sizeof ck), NSA_OK);
    cr_assert(strstr(ck, "ckpt_00000004.h5"), "stopped run's latest is %s", ck);
    cr_assert_eq(run_train("--resume", b, NULL), 0);

    char la[16][40], lb[16][40];
    char log[400];
    snprintf(log, sizeof log, "%s/log.jsonl", a);
    int na = read_losses(log, la, 16);
    snprintf(log, sizeof log, "%s/log.jsonl", b);
    int nb = read_losses(log, lb, 16);
    cr_assert_eq(na, 8);
    cr_assert_eq(nb, 8, "resumed log has %d step records (expected 8, none repeated)", nb);
    for (int i = 0; i < 8; i++) cr_assert_str_eq(la[i], lb[i], "step %d loss %s != %s", i + 1, la[i], lb[i]);

    Model ma, mb;
    float *m1, *v1, *m2, *v2;
    TrainState sa, sb;
    char pa[400], pb[400];
    snprintf(pa, sizeof pa, "%s/ckpt_00000008.h5", a);
    snprintf(pb, sizeof pb, "%s/ckpt_00000008.h5", b);
    load_full(pa, &ma, &m1, &v1, &sa);
    load_full(pb, &mb, &m2, &v2, &sb);
    size_t bytes = (size_t)ma.n_elems * sizeof(float);
    cr_assert_eq(ma.n_elems, mb.n_elems);
    cr_assert_eq(memcmp(ma.data, mb.data, bytes), 0, "parameters differ after resume");
    cr_assert_eq(memcmp(m1, m2, bytes), 0, "Adam m differs after resume");
    cr_assert_eq(memcmp(v1, v2, bytes), 0, "Adam v differs after resume");
    cr_assert_eq(sa.step, 8);
    cr_assert_eq(sb.step, 8);
    cr_assert_eq(sa.tokens_seen, sb.tokens_seen);
    cr_assert_eq(sa.data_position, sb.data_position);
    cr_assert_eq(memcmp(sa.rng, sb.rng, sizeof sa.rng), 0, "data RNG differs after resume");
    // keep_ckpts (3) bounds what stays on disk: steps 3 and 6 and 8 remain.
    snprintf(pa, sizeof pa, "%s/ckpt_00000003.h5", a);
    cr_assert_eq(access(pa, F_OK), 0);
    model_free(&ma);
    model_free(&mb);
    free(m1), free(v1), free(m2), free(v2);
}

// ---------------------------------------------------------------------------- checkpointing

// checkpoint=layer recomputes each layer in backward with the same kernels in the same
// order, so every gradient is bit-identical to checkpoint=none (memcmp, no tolerance).
Test(train, checkpoint_layer_grads_bit_identical, .init = make_dir, .fini = remove_dir) {
    static const char *variants[][2] = {{"attn", "nsa"}, {"kv", "separate"}, {"attn", "dense,nsa"}};
    for (int vi = 0; vi < 3; vi++) {
        Config c;
        config_defaults(&c);
        cr_assert_eq(config_load(&c, "tiny"), NSA_OK);
        char kv[64];
        snprintf(kv, sizeof kv, "%s=%s", variants[vi][0], variants[vi][1]);
        cr_assert_eq(config_set(&c, kv), NSA_OK);
        cr_assert_eq(config_validate(&c), NSA_OK);
        Model m;
        model_create(&m, &c);
        model_init_params(&m, 7);
        model_alloc_grads(&m);
        int B = 2, T = (int)c.seq_len;
        int32_t *tok = malloc((size_t)B * T * sizeof *tok), *tgt = malloc((size_t)B * T * sizeof *tgt);
        Rng r;
        rng_seed(&r, 99);
        for (int i = 0; i < B * T; i++) tok[i] = (int32_t)rng_below(&r, 256), tgt[i] = (int32_t)rng_below(&r, 256);
        float *grads[2], loss[2];
        for (int ck = 0; ck < 2; ck++) {
            Arena a, sa;
            arena_init(&a, 0);
            arena_init(&sa, 0);
            Graph g, s;
            graph_init(&g, &a);
            graph_init(&s, &sa);
            ForwardOpts fo = {0};
            fo.checkpoint = ck;
            fo.scratch = &s;
            Forward f;
            model_zero_grads(&m);
            model_forward(&m, &g, tok, tgt, B, T, &fo, &f);
            graph_backward(&g, f.loss);
            loss[ck] = f.loss->data[0];
            grads[ck] = malloc((size_t)m.n_elems * sizeof(float));
            memcpy(grads[ck], m.grad, (size_t)m.n_elems * sizeof(float));
            graph_free(&g);
            graph_free(&s);
            arena_free(&a);
            arena_free(&sa);
        }
        cr_assert_eq(memcmp(&loss[0], &loss[1], sizeof(float)), 0, "%s: loss differs", kv);
        for (int i = 0; i < m.n_params; i++) {
            const Tensor *t = &m.params[i].t;
            int64_t off = t->data - m.data;
            cr_assert_eq(memcmp(grads[0] + off, grads[1] + off, (size_t)t->size * sizeof(float)), 0,
                         "%s: gradient of %s differs with checkpoint=layer", kv, m.params[i].name);
        }
        free(grads[0]), free(grads[1]), free(tok), free(tgt);
        model_free(&m);
    }
}

// ---------------------------------------------------------------------------- crashes and signals

static int find_tmp(const char *run) {
    DIR *d = opendir(run);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) && !found) found = strstr(e->d_name, ".h5.tmp") != NULL;
    closedir(d);
    return found;
}

static pid_t spawn_train(const char *data, const char *run, int resume) {
    fflush(stdout);  // or the child's exit would print our buffered output again
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        char set_data[400], set_run[400];
        snprintf(set_data, sizeof set_data, "data=%s", data);
        snprintf(set_run, sizeof set_run, "run_dir=%s", run);
        if (!freopen("/dev/null", "w", stdout)) _exit(99);
        setenv("OMP_NUM_THREADS", "1", 1);
        if (resume)
            execl(tu_bin(), "nsa", "train", "--resume", run, (char *)NULL);
        else
            execl(tu_bin(), "nsa", "train", "--config", "tiny", "--set", set_data, "--set", set_run, "--set",
                  "seq_len=64", "--set", "batch_size=2", "--set", "steps=100000", "--set", "ckpt_every=1",
                  "--set", "keep_ckpts=2", "--set", "eval_every=0", (char *)NULL);
        _exit(98);
    }
    return pid;
}

// Kills the trainer with SIGKILL while a checkpoint is being written (a ckpt_*.h5.tmp is
// on disk), three times, resuming in between: `latest` must always name a complete,
// loadable checkpoint with its optimiser state, and the run must resume from it.
Test(train, sigkill_during_checkpoint_write_keeps_previous, .init = make_dir, .fini = remove_dir,
     .timeout = 120) {
    char data[300], run[300];
    corpus(data, sizeof data);
    snprintf(run, sizeof run, "%s/run", dir);
    int64_t last_step = 0;
    for (int round = 0; round < 3; round++) {
        pid_t pid = spawn_train(data, run, round > 0);
        char latest[400];
        snprintf(latest, sizeof latest, "%s/latest", run);
        double t0 = nsa_now();
        int caught = 0;
        while (nsa_now() - t0 < 60) {
            // Once a first checkpoint exists, wait for the next one to be mid-write.
            if (access(latest, F_OK) == 0 && find_tmp(run)) {
                kill(pid, SIGKILL);
                caught = 1;
                break;
            }
            int st;
            cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "trainer exited early (status %d)", st);
        }
        if (!caught) kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        cr_assert(caught, "round %d: never saw a checkpoint being written within 60 s", round);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        char ck[400];
        cr_assert_eq(rundir_latest_ckpt(run, ck, sizeof ck), NSA_OK);
        cr_assert(!strstr(ck, ".tmp"), "latest names a temporary file: %s", ck);
        Model m;
        float *mo, *vo;
        TrainState ts;
        load_full(ck, &m, &mo, &vo, &ts);
        char want[64];
        snprintf(want, sizeof want, "ckpt_%08lld.h5", (long long)ts.step);
        cr_assert(strstr(ck, want), "latest %s holds step %lld", ck, (long long)ts.step);
        cr_assert_geq(ts.step, last_step, "round %d went back from step %lld to %lld", round,
                      (long long)last_step, (long long)ts.step);
        last_step = ts.step;
        model_free(&m);
        free(mo), free(vo);
    }
}

// SIGTERM finishes the step, writes a checkpoint of exactly the steps logged, exits 0.
Test(train, sigterm_saves_and_exits_zero, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    char data[300], run[300], log[400];
    corpus(data, sizeof data);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(log, sizeof log, "%s/log.jsonl", run);
    pid_t pid = spawn_train(data, run, 0);
    double t0 = nsa_now();
    char losses[8][40];
    while (nsa_now() - t0 < 30) {
        if (access(log, F_OK) == 0 && read_losses(log, losses, 8) >= 5) break;
        usleep(2000);
    }
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d after SIGTERM", st);
    char all[4096][40], ck[400];
    int n = read_losses(log, all, 4096);
    cr_assert_geq(n, 5);
    cr_assert_eq(rundir_latest_ckpt(run, ck, sizeof ck), NSA_OK);
    Model m;
    float *mo, *vo;
    TrainState ts;
    load_full(ck, &m, &mo, &vo, &ts);
    cr_assert_eq(ts.step, n, "checkpoint at step %lld, log has %d steps", (long long)ts.step, n);
    model_free(&m);
    free(mo), free(vo);
}

// ---------------------------------------------------------------------------- learning

// 30 steps on the synthetic corpus: training loss and validation loss both fall clearly
// from ln(256) ≈ 5.55 (margins measured: ~2.4 nats on the training loss).
Test(train, loss_falls_on_fixed_corpus, .init = make_dir, .fini = remove_dir) {
    char data[300], run[300];
    corpus(data, sizeof data);
    snprintf(run, sizeof run, "%s/run", dir);
    Config c;
    tiny_config(&c, data, run);
    Trainer t;
    cr_assert_eq(trainer_init(&t, &c, NULL), NSA_OK);
    double val0 = trainer_eval(&t), first = 0, last5 = 0;
    for (int i = 0; i < 30; i++) {
        StepStats s;
        cr_assert_eq(trainer_step(&t, &s), NSA_OK);
        cr_assert(!s.skipped && isfinite(s.loss));
        if (i == 0) first = s.loss;
        if (i >= 25) last5 += s.loss / 5;
    }
    double val1 = trainer_eval(&t);
    cr_assert_gt(first, 5.0, "initial loss %g should be near ln(256)", first);
    cr_assert_lt(last5, first - 1.5, "loss %g -> %g did not fall", first, last5);
    cr_assert_lt(val1, val0 - 1.0, "val loss %g -> %g did not fall", val0, val1);
    cr_assert_eq(t.st.step, 30);
    trainer_free(&t);
}

// After the first step the arenas and tapes have their size: later steps (and the micro-steps
// of accumulation, and gradient-checkpoint recompute) allocate nothing. The trainer's
// arenas are swapped for tiny fixed ones: the default reservation (256 GiB of address
// space) never allocates whatever the trainer does, so only an arena that must grow shows
// whether the trainer resets it at the right points (the first step overflows into chunks,
// its reset folds them into one buffer, and no later step may overflow again).
Test(train, no_allocation_after_first_step, .init = make_dir, .fini = remove_dir) {
    char data[300], run[300];
    corpus(data, sizeof data);
    snprintf(run, sizeof run, "%s/run", dir);
    for (int ck = 0; ck < 2; ck++) {
        Config c;
        tiny_config(&c, data, run);
        c.grad_accum = 2;
        c.checkpoint = ck ? CKPT_LAYER : CKPT_NONE;
        Trainer t;
        cr_assert_eq(trainer_init(&t, &c, NULL), NSA_OK);
        // In place: the graphs keep pointing at these Arena structs.
        arena_free(&t.arena);
        arena_free(&t.scratch_arena);
        arena_init(&t.arena, 4096);
        arena_init(&t.scratch_arena, 4096);
        StepStats s;
        cr_assert_eq(trainer_step(&t, &s), NSA_OK);
        long a = t.arena.n_mallocs, sa = t.scratch_arena.n_mallocs;
        long g = t.graph.n_node_reallocs, sg = t.scratch.n_node_reallocs;
        cr_assert_gt(a, 1, "checkpoint=%d: the first step never outgrew a 4 KiB arena", ck);
        for (int i = 0; i < 4; i++) cr_assert_eq(trainer_step(&t, &s), NSA_OK);
        cr_assert_eq(t.arena.n_mallocs, a, "checkpoint=%d: activation arena allocated after step 1", ck);
        cr_assert_eq(t.scratch_arena.n_mallocs, sa, "checkpoint=%d: scratch arena allocated after step 1", ck);
        cr_assert_eq(t.graph.n_node_reallocs, g);
        cr_assert_eq(t.scratch.n_node_reallocs, sg);
        if (ck) cr_assert_gt(sa, 1, "checkpoint=layer never used the scratch arena");
        trainer_free(&t);
    }
}

// A NaN planted in one weight makes every step non-finite: the step is skipped (weights and
// moments untouched) with a warning, and max_bad_steps in a row stop the run with a
// diagnostic that names the parameter.
Test(train, nonfinite_steps_skip_then_stop, .init = make_dir, .fini = remove_dir) {
    cr_redirect_stderr();
    char data[300], run[300];
    corpus(data, sizeof data);
    snprintf(run, sizeof run, "%s/run", dir);
    Config c;
    tiny_config(&c, data, run);
    c.max_bad_steps = 2;
    Trainer t;
    cr_assert_eq(trainer_init(&t, &c, NULL), NSA_OK);
    StepStats s;
    cr_assert_eq(trainer_step(&t, &s), NSA_OK);
    Param *p = model_param(&t.model, "layers.1.mlp.w1.weight");
    cr_assert(p);
    p->t.data[5] = NAN;
    size_t bytes = (size_t)t.model.n_elems * sizeof(float);
    float *before = malloc(bytes), *mbefore = malloc(bytes);
    memcpy(before, t.model.data, bytes);
    memcpy(mbefore, t.opt.m, bytes);
    cr_assert_eq(trainer_step(&t, &s), NSA_OK);
    cr_assert(s.skipped);
    cr_assert_eq(memcmp(before, t.model.data, bytes), 0, "a skipped step changed the weights");
    cr_assert_eq(memcmp(mbefore, t.opt.m, bytes), 0, "a skipped step changed the moments");
    cr_assert_eq(trainer_step(&t, &s), NSA_ERR, "max_bad_steps=2 in a row must stop the run");
    fflush(stderr);
    char buf[4096] = "";
    FILE *f = cr_get_redirected_stderr();
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    cr_assert(strstr(buf, "skipped"), "no warning: %s", buf);
    cr_assert(strstr(buf, "stopping"), "no stop diagnostic: %s", buf);
    cr_assert(strstr(buf, "layers.1.mlp.w1.weight (layer 1)"), "diagnostic does not name the parameter: %s", buf);
    free(before), free(mbefore);
    trainer_free(&t);
}

// With step_timeout set, the trainer runs under the watchdog (train/watchdog.h) with its
// Watch on the step's graph: a planted spin in layer 1's forward ends the process with 124.
// (Its report line is test_watchdog.c's business; here it would only clutter the output.)
Test(train, watchdog_ends_a_stuck_step, .init = make_dir, .fini = remove_dir, .exit_code = NSA_EXIT_HANG,
     .timeout = 30) {
    cr_redirect_stderr();
    char data[300], run[300];
    corpus(data, sizeof data);
    snprintf(run, sizeof run, "%s/run", dir);
    Config c;
    tiny_config(&c, data, run);
    Trainer t;
    cr_assert_eq(trainer_init(&t, &c, NULL), NSA_OK);
    t.wd = watchdog_start(&t.watch, 0.3, NULL);
    cr_assert(t.wd);
    StepStats s;
    cr_assert_eq(trainer_step(&t, &s), NSA_OK);  // a normal step is well inside 0.3 s
    t.watch.spin_op = "linear";
    t.watch.spin_op_layer = 1;
    trainer_step(&t, &s);
    cr_assert_fail("the watchdog did not fire");
}
