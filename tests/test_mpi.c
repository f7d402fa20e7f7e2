// test_mpi.c: `mpirun -np N nsa train` (train/dist.h): 2 and 4 ranks give the losses,
// parameters, moments and data state of one process bit for bit; a run stopped under 2
// ranks resumes under 1 (and the reverse) to the bits of an uninterrupted run; a rank
// killed with SIGKILL ends the job with an error and leaves a loadable latest checkpoint;
// a signal to one rank stops them all with a checkpoint; a stalled rank makes the
// others' watchdog end the job; a grad_accum the ranks cannot split is a one-line error. Everything runs the tiny config over the synthetic corpus,
// each rank on one thread, oversubscribed on whatever cores there are.
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/checkpoint.h"
#include "kernels/common.h"
#include "model/model.h"
#include "tests/testutil.h"
#include "train/rundir.h"

// ---------------------------------------------------------------------------- helpers

static char dir[256];  // this test's temporary directory (each Criterion test is a process)
static char data[300];

static void setup(void) {
    tu_mkdtemp(dir, sizeof dir, "nsa_mpi_");
    char txt[300];
    snprintf(txt, sizeof txt, "%s/corpus.txt", dir);
    snprintf(data, sizeof data, "%s/corpus.h5", dir);
    tu_write_corpus(txt, data);
}

static void teardown(void) { tu_rm_rf(dir); }

// Starts `[mpirun -np NP ...] $NSA_BIN train --quiet ARGS` (np 0: the binary alone), one
// OpenMP thread per process, stdout discarded, stderr to `err`. mpirun's flags are what a
// root shell in a container needs: --allow-run-as-root; --oversubscribe (more ranks than
// cores); --bind-to none (several ranks share a core; binding would pin them to one);
// no single-copy transfers between ranks (CMA needs ptrace rights a container may lack).
static pid_t spawn(int np, const char *err, char **args) {
    char *argv[96], nps[16];
    int n = 0;
    if (np > 0) {
        snprintf(nps, sizeof nps, "%d", np);
        char *pre[] = {"mpirun", "-np", nps, "--oversubscribe", "--allow-run-as-root", "--bind-to", "none"};
        for (size_t i = 0; i < sizeof pre / sizeof *pre; i++) argv[n++] = pre[i];
    }
    argv[n++] = (char *)tu_bin();
    argv[n++] = "train";
    argv[n++] = "--quiet";
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setenv("OMP_NUM_THREADS", "1", 1);
        setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
        int out = open("/dev/null", O_WRONLY), fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0 || fe < 0) _exit(126);
        dup2(out, 1);
        dup2(fe, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

// Exit status (128 + signal if killed) of pid; fails the test if it takes over limit_s.
static int wait_for(pid_t pid, double limit_s, const char *err) {
    double t0 = nsa_now();
    int st;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (nsa_now() - t0 > limit_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            cr_assert_fail("still running after %.0f s (stderr in %s)", limit_s, err);
        }
        usleep(10000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void slurp(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    buf[n] = 0;
    if (f) fclose(f);
}

// Trains with the given extra arguments and fails the test unless it exits 0.
static void train(int np, char **args) {
    char err[400], msg[4096];
    snprintf(err, sizeof err, "%s/stderr", dir);
    int rc = wait_for(spawn(np, err, args), 90, err);
    slurp(err, msg, sizeof msg);
    cr_assert_eq(rc, 0, "np %d: exit %d: %s", np, rc, msg);
}

// The run's arguments: tiny at seq_len 64, 4 micro-batches of 1 window per step (so 2 or 4
// ranks split them), clipping that bites, evaluations over 3 windows (split unevenly over
// 2 ranks) and checkpoints inside the run. `extra` (NULL-terminated) follows.
static char **run_args(const char *run, char *const *extra) {
    static char set_data[400], set_run[400];
    static char *args[64];
    snprintf(set_data, sizeof set_data, "data=%s", data);
    snprintf(set_run, sizeof set_run, "run_dir=%s", run);
    char *common[] = {"--config", "tiny", "--set", set_data, "--set", set_run, "--set", "seq_len=64",
                      "--set", "batch_size=1", "--set", "grad_accum=4", "--set", "steps=8", "--set", "warmup=2",
                      "--set", "lr=3e-3", "--set", "grad_clip=0.5", "--set", "eval_every=3", "--set",
                      "eval_batches=3", "--set", "ckpt_every=3"};
    int n = 0;
    for (size_t i = 0; i < sizeof common / sizeof *common; i++) args[n++] = common[i];
    for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    return args;
}

// The step and eval records of a log.jsonl as "step:loss" / "eval:val_loss" strings
// (%.17g, the exact double).
static int read_records(const char *run, char rec[][64], int max) {
    char path[400], line[1024];
    snprintf(path, sizeof path, "%s/log.jsonl", run);
    FILE *f = fopen(path, "r");
    cr_assert(f, "no %s", path);
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        const char *p;
        char v[40];
        if (!strchr(line, '\n')) continue;  // a last line still being written
        if (strstr(line, "\"type\":\"step\"") && (p = strstr(line, "\"loss\":"))) {
            sscanf(p + 7, "%39[^,]", v);
            snprintf(rec[n++], 64, "step:%s", v);
        } else if (strstr(line, "\"type\":\"eval\"") && (p = strstr(line, "\"val_loss\":"))) {
            sscanf(p + 11, "%39[^,]", v);
            snprintf(rec[n++], 64, "eval:%s", v);
        }
    }
    fclose(f);
    return n;
}

typedef struct {
    Model m;
    float *mo, *vo;
    TrainState st;
} Ckpt;

static void ckpt_read(const char *path, Ckpt *c) {
    cr_assert_eq(ckpt_load(path, &c->m), NSA_OK, "%s does not load", path);
    c->mo = malloc((size_t)c->m.n_elems * sizeof(float));
    c->vo = malloc((size_t)c->m.n_elems * sizeof(float));
    cr_assert_eq(ckpt_load_train(path, &c->m, c->mo, c->vo, &c->st), NSA_OK, "%s lacks optimiser state", path);
}

static void ckpt_drop(Ckpt *c) {
    model_free(&c->m);
    free(c->mo);
    free(c->vo);
}

// Runs a and b logged the same losses and validation losses, and their checkpoints of
// `step` hold the same parameters, moments and data state: memcmp, no tolerance.
static void assert_same_run(const char *a, const char *b, int64_t step) {
    char ra[64][64], rb[64][64];
    int na = read_records(a, ra, 64), nb = read_records(b, rb, 64);
    cr_assert_eq(na, nb, "%s has %d records, %s has %d", a, na, b, nb);
    cr_assert_gt(na, (int)step, "too few records in %s", a);
    for (int i = 0; i < na; i++) cr_assert_str_eq(ra[i], rb[i], "record %d: %s vs %s (%s, %s)", i, ra[i], rb[i], a, b);
    char pa[400], pb[400];
    snprintf(pa, sizeof pa, "%s/ckpt_%08lld.h5", a, (long long)step);
    snprintf(pb, sizeof pb, "%s/ckpt_%08lld.h5", b, (long long)step);
    Ckpt ca, cb;
    ckpt_read(pa, &ca);
    ckpt_read(pb, &cb);
    size_t bytes = (size_t)ca.m.n_elems * sizeof(float);
    cr_assert_eq(ca.m.n_elems, cb.m.n_elems);
    cr_assert_eq(memcmp(ca.m.data, cb.m.data, bytes), 0, "parameters differ: %s vs %s", pa, pb);
    cr_assert_eq(memcmp(ca.mo, cb.mo, bytes), 0, "Adam m differs: %s vs %s", pa, pb);
    cr_assert_eq(memcmp(ca.vo, cb.vo, bytes), 0, "Adam v differs: %s vs %s", pa, pb);
    cr_assert_eq(ca.st.step, step);
    cr_assert_eq(cb.st.step, step);
    cr_assert_eq(ca.st.tokens_seen, cb.st.tokens_seen);
    cr_assert_eq(ca.st.data_position, cb.st.data_position);
    cr_assert_eq(memcmp(ca.st.rng, cb.st.rng, sizeof ca.st.rng), 0, "data RNG differs");
    ckpt_drop(&ca);
    ckpt_drop(&cb);
}

static int count_steps(const char *run) {
    char rec[4096][64];
    int n = read_records(run, rec, 4096), k = 0;
    for (int i = 0; i < n; i++) k += !strncmp(rec[i], "step:", 5);
    return k;
}

// The pid of rank `rank` among mpirun's children (their environment names the rank), or 0.
static pid_t find_rank(pid_t mpirun, int rank) {
    DIR *d = opendir("/proc");
    cr_assert(d);
    char want[64];
    int wl = snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    pid_t found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0) continue;
        char path[64], buf[8192];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        slurp(path, buf, sizeof buf);
        const char *p = strrchr(buf, ')');  // the command name may hold spaces
        int ppid = 0;
        if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1 || ppid != mpirun) continue;
        snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i + (size_t)wl <= n; i += strlen(buf + i) + 1)
            if (!strcmp(buf + i, want)) found = pid;
    }
    closedir(d);
    return found;
}

// Starts a 2-rank run long enough to be interrupted and waits until it has logged at
// least `steps` steps and written a checkpoint; returns mpirun's pid and rank `rank`'s.
// step_timeout: the watchdog's deadline ("0": off).
static pid_t start_long_run(const char *run, const char *err, int steps, int rank, pid_t *rank_pid,
                            const char *step_timeout) {
    char *extra[] = {"--set", "steps=100000", "--set", "ckpt_every=4", "--set", "eval_every=0",
                     "--step-timeout", (char *)step_timeout, NULL};
    pid_t pid = spawn(2, err, run_args(run, extra));
    char latest[400];
    snprintf(latest, sizeof latest, "%s/latest", run);
    double t0 = nsa_now();
    *rank_pid = 0;
    while (nsa_now() - t0 < 60) {
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "mpirun exited early (status %d)", st);
        if (!*rank_pid) *rank_pid = find_rank(pid, rank);
        char log[400];
        snprintf(log, sizeof log, "%s/log.jsonl", run);
        if (*rank_pid && access(latest, F_OK) == 0 && access(log, F_OK) == 0 && count_steps(run) >= steps)
            return pid;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert_fail("no rank %d, checkpoint or %d steps within 60 s", rank, steps);
    return pid;
}

// ---------------------------------------------------------------------------- bit-identity

// 2 ranks (2 micro-batches each) and 4 ranks (one each) against one process: every loss,
// every validation loss, and parameters, moments and state at the end, bit for bit.
Test(mpi, ranks_bit_identical_to_one_process, .init = setup, .fini = teardown, .timeout = 150) {
    char one[300], two[300], four[300];
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    snprintf(four, sizeof four, "%s/four", dir);
    train(0, run_args(one, NULL));
    train(2, run_args(two, NULL));
    train(4, run_args(four, NULL));
    assert_same_run(one, two, 8);
    assert_same_run(one, four, 8);
    // Rank 0 alone wrote the log: one record per step, none duplicated by rank 1.
    cr_assert_eq(count_steps(two), 8);
}

// ---------------------------------------------------------------------------- resume

// Stopped after step 4 under 2 ranks and resumed alone, or stopped alone and resumed
// under 2 ranks: both end with the bits of the uninterrupted run.
Test(mpi, resume_under_another_rank_count, .init = setup, .fini = teardown, .timeout = 150) {
    char ref[300], a[300], b[300];
    snprintf(ref, sizeof ref, "%s/ref", dir);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    char *stop[] = {"--stop-at", "4", NULL};
    train(0, run_args(ref, NULL));
    train(2, run_args(a, stop));
    train(0, (char *[]){"--resume", a, NULL});
    train(0, run_args(b, stop));
    train(2, (char *[]){"--resume", b, NULL});
    char ck[400];
    cr_assert_eq(rundir_latest_ckpt(a, ck, sizeof ck), NSA_OK);
    assert_same_run(ref, a, 8);
    assert_same_run(ref, b, 8);
}

// ---------------------------------------------------------------------------- failures

// SIGKILL to rank 1 mid-run: mpirun ends the job within a bounded time with a non-zero
// status and a message naming the rank; `latest` names a complete checkpoint that loads
// and resumes.
Test(mpi, killed_rank_ends_run_with_error, .init = setup, .fini = teardown, .timeout = 150) {
    char run[300], err[400], msg[8192];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(err, sizeof err, "%s/killed.err", dir);
    pid_t r1;
    pid_t pid = start_long_run(run, err, 10, 1, &r1, "0");
    cr_assert_eq(kill(r1, SIGKILL), 0);
    int rc = wait_for(pid, 30, err);
    slurp(err, msg, sizeof msg);
    cr_assert_neq(rc, 0, "mpirun exited 0 after a rank was killed: %s", msg);
    cr_assert(strstr(msg, "rank 1") && strstr(msg, "signal 9"), "no word of rank 1's death: %s", msg);
    cr_assert(strstr(msg, "nsa: error: rank 0: mpirun is ending the job"), "rank 0 said nothing: %s", msg);
    char ck[400];
    cr_assert_eq(rundir_latest_ckpt(run, ck, sizeof ck), NSA_OK);
    cr_assert(!strstr(ck, ".tmp"), "latest names a temporary file: %s", ck);
    Ckpt c;
    ckpt_read(ck, &c);
    char want[64], stop[32];
    snprintf(want, sizeof want, "ckpt_%08lld.h5", (long long)c.st.step);
    cr_assert(strstr(ck, want), "latest %s holds step %lld", ck, (long long)c.st.step);
    cr_assert_geq(c.st.step, 4);
    snprintf(stop, sizeof stop, "%lld", (long long)c.st.step + 2);
    train(0, (char *[]){"--resume", run, "--stop-at", stop, NULL});
    ckpt_drop(&c);
}

// SIGTERM to rank 1 alone: the stop is decided together, rank 0 writes the checkpoint of
// exactly the steps logged, and the job exits 0.
Test(mpi, signal_to_one_rank_stops_all, .init = setup, .fini = teardown, .timeout = 150) {
    char run[300], err[400], msg[8192];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(err, sizeof err, "%s/term.err", dir);
    pid_t r1;
    pid_t pid = start_long_run(run, err, 6, 1, &r1, "0");
    cr_assert_eq(kill(r1, SIGTERM), 0);
    int rc = wait_for(pid, 30, err);
    slurp(err, msg, sizeof msg);
    cr_assert_eq(rc, 0, "exit %d after SIGTERM to rank 1: %s", rc, msg);
    char ck[400];
    cr_assert_eq(rundir_latest_ckpt(run, ck, sizeof ck), NSA_OK);
    Ckpt c;
    ckpt_read(ck, &c);
    int n = count_steps(run);
    cr_assert_eq(c.st.step, n, "checkpoint at step %lld, log has %d steps", (long long)c.st.step, n);
    ckpt_drop(&c);
}

// A rank that stops answering (SIGSTOP: alive, so mpirun sees nothing wrong) leaves the
// others waiting in a collective; their watchdog ends the job with code 124, naming the
// wait, and the latest checkpoint stays loadable. The deadline, 3 s, is ~100 times a tiny
// layer's forward or backward here even on a loaded machine.
Test(mpi, stalled_rank_fires_the_watchdog, .init = setup, .fini = teardown, .timeout = 150) {
    char run[300], err[400], msg[8192];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(err, sizeof err, "%s/stall.err", dir);
    pid_t r1;
    pid_t pid = start_long_run(run, err, 6, 1, &r1, "3");
    double t0 = nsa_now();
    cr_assert_eq(kill(r1, SIGSTOP), 0);
    int rc = wait_for(pid, 30, err);
    double took = nsa_now() - t0;
    slurp(err, msg, sizeof msg);
    cr_assert_eq(rc, 124, "exit %d with a stalled rank: %s", rc, msg);
    cr_assert(strstr(msg, "nsa: watchdog: communication with the other ranks stuck"), "%s", msg);
    cr_assert_lt(took, 20, "the job took %.1f s to end", took);
    char ck[400];
    cr_assert_eq(rundir_latest_ckpt(run, ck, sizeof ck), NSA_OK);
    Ckpt c;
    ckpt_read(ck, &c);
    ckpt_drop(&c);
}

// 3 micro-batches cannot be split over 2 ranks: one error line from rank 0, non-zero exit.
Test(mpi, grad_accum_must_split_over_ranks, .init = setup, .fini = teardown, .timeout = 60) {
    char run[300], err[400], msg[8192];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(err, sizeof err, "%s/split.err", dir);
    char *extra[] = {"--set", "grad_accum=3", NULL};
    int rc = wait_for(spawn(2, err, run_args(run, extra)), 30, err);
    slurp(err, msg, sizeof msg);
    cr_assert_neq(rc, 0);
    const char *line = strstr(msg, "nsa: error: grad_accum 3 is not a multiple of the 2 ranks");
    cr_assert(line, "no error line: %s", msg);
    cr_assert_null(strstr(line + 1, "nsa: error:"), "more than one error line: %s", msg);
    cr_assert_neq(access(run, F_OK), 0, "a run directory was created for a run that never started");
}
