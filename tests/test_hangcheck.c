// test_hangcheck.c: `nsa hangcheck` through $NSA_BIN: a planted hang is reported within
// the deadline + 1 s with its phase, layer and op and exit status 124; a bad debug spin is
// a usage error; the reduced matrix passes and writes valid JSON.
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "autograd/graph.h"
#include "kernels/common.h"
#include "tests/testutil.h"
#include "train/watchdog.h"

// Time a child may take before the planted op starts spinning: exec (and cpu_setup's
// re-exec), config, model build and the tiny steps before the op. That is 0.1-0.3 s with
// one thread on a loaded 2-core machine; budgeted 1.5 s so that `make test --jobs 2` next
// to other heavy suites does not make the bound flaky. The children run with
// OMP_NUM_THREADS=1: the startup of an oversubscribed OpenMP run varies by seconds, and
// the watchdog does not care how many threads the step uses.
#define STARTUP_BUDGET_S 1.5
// A watchdog must fire within its deadline plus this (the bound).
#define FIRE_SLACK_S 1.0

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

static void tmpdir(char *dir, size_t n) {
    snprintf(dir, n, "/tmp/nsa_hangcheck_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

// Waits for pid at most limit_s (then kills it: a broken watchdog must fail the test, not
// hang the suite). Returns the wait status; *wall gets the seconds since t0.
static int wait_limited(pid_t pid, double t0, double limit_s, double *wall) {
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (nsa_now() - t0 > limit_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            cr_assert_fail("child still running after %.1f s: the watchdog did not end it", limit_s);
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *wall = nsa_now() - t0;
    return status;
}

// Runs $NSA_BIN with args (NULL-terminated, argv[0] excluded), stdout and stderr to files
// in dir; env_spin, when set, goes into NSA_DEBUG_SPIN; one_thread sets OMP_NUM_THREADS=1.
// Returns the exit code (-1: killed by a signal); fails the test after limit_s.
static int run_nsa(const char *dir, const char *const *args, const char *env_spin, int one_thread,
                   double limit_s, double *wall) {
    const char *bin = getenv("NSA_BIN") ? getenv("NSA_BIN") : "build/nsa";
    const char *argv[40];
    int n = 0;
    argv[n++] = bin;
    while (*args && n < 39) argv[n++] = *args++;
    argv[n] = NULL;
    char out[300], err[300];
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    fflush(NULL);
    double t0 = nsa_now();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        if (env_spin) setenv("NSA_DEBUG_SPIN", env_spin, 1);
        else unsetenv("NSA_DEBUG_SPIN");
        if (one_thread) setenv("OMP_NUM_THREADS", "1", 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int status = wait_limited(pid, t0, limit_s, wall);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *read_in(const char *dir, const char *name) {
    char p[300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *s = slurp(p);
    cr_assert_not_null(s, "no %s", p);
    return s;
}

// A planted hang through the CLI: exit 124 within timeout + 1 s (+ startup), one stderr
// line naming phase, layer and op, and the same as a JSON record in the log.
static void planted_hang(const char *spin, int via_env, const char *checkpoint, const char *want) {
    char dir[64], log[128], spin_opt[128];
    tmpdir(dir, sizeof dir);
    snprintf(log, sizeof log, "%s/log.jsonl", dir);
    snprintf(spin_opt, sizeof spin_opt, "--debug-spin=%s", spin);
    const double timeout = 1.0;
    const char *args[] = {"hangcheck", "--config", "tiny", "--layers", "2", "--seq", "64", "--steps", "1",
                          "--path", "index", "--checkpoint", checkpoint, "--timeout", "1", "--log", log,
                          via_env ? NULL : spin_opt, NULL};
    double wall;
    int rc = run_nsa(dir, args, via_env ? spin : NULL, 1, 10.0, &wall);
    char *err = read_in(dir, "stderr");
    cr_assert_eq(rc, NSA_EXIT_HANG, "exit %d, want %d; stderr:\n%s", rc, NSA_EXIT_HANG, err);
    cr_assert_geq(wall, timeout, "fired after %.2f s, before the %.1f s deadline", wall, timeout);
    cr_assert_leq(wall, timeout + FIRE_SLACK_S + STARTUP_BUDGET_S, "fired after %.2f s", wall);
    char line[256];
    snprintf(line, sizeof line, "nsa: watchdog: %s for ", want);
    const char *hit = strstr(err, line);
    cr_assert_not_null(hit, "stderr lacks '%s':\n%s", line, err);
    double elapsed = atof(hit + strlen(line));
    cr_assert(elapsed >= timeout && elapsed <= timeout + FIRE_SLACK_S, "elapsed %.2f s", elapsed);
    cr_assert_not_null(strstr(hit, "(deadline 1.00 s); exiting with code 124\n"), "%s", err);
    char *rec = read_in(dir, "log.jsonl");
    cr_assert_not_null(strstr(rec, "{\"type\":\"watchdog\",\"phase\":"), "%s", rec);
    cr_assert_not_null(strstr(rec, "\"deadline_s\":1.000"), "%s", rec);
    cr_assert_not_null(strstr(rec, "\"exit_code\":124"), "%s", rec);
    free(rec);
    free(err);
    tu_rm_rf(dir);
}

Test(hangcheck, planted_hang_backward, .timeout = 40) {
    planted_hang("backward:slc_attention@1", 0, "none", "backward of layer 1 stuck in op slc_attention");
}

// With checkpoint=layer the op first runs again in backward's recompute of the layer.
Test(hangcheck, planted_hang_backward_checkpointed, .timeout = 40) {
    planted_hang("backward:slc_attention@1", 0, "layer", "backward of layer 1 stuck in op slc_attention");
}

Test(hangcheck, planted_hang_forward_from_env, .timeout = 40) {
    planted_hang("forward:swiglu@0", 1, "none", "forward of layer 0 stuck in op swiglu");
}

Test(hangcheck, planted_hang_outside_layers, .timeout = 40) {
    planted_hang("backward:cross_entropy@-1", 0, "none", "backward outside the layers stuck in op cross_entropy");
}

Test(hangcheck, bad_debug_spin_is_usage_error, .timeout = 40) {
    char dir[64];
    tmpdir(dir, sizeof dir);
    const char *args[] = {"hangcheck", "--config", "tiny", "--debug-spin", "slc_attention", NULL};
    double wall;
    int rc = run_nsa(dir, args, NULL, 1, 10.0, &wall);
    char *err = read_in(dir, "stderr");
    cr_assert_eq(rc, 2, "exit %d; stderr:\n%s", rc, err);
    cr_assert_not_null(strstr(err, "bad debug spin"), "%s", err);
    free(err);
    tu_rm_rf(dir);
}

// ---------------------------------------------------------------------------- JSON

// Minimal JSON syntax check (RFC 8259 values; no semantic checks): returns the end of
// the value at s, or NULL.
static const char *json_ws(const char *s) {
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
    return s;
}

static const char *json_value(const char *s);

static const char *json_string(const char *s) {
    if (*s++ != '"') return NULL;
    while (*s && *s != '"') {
        if ((unsigned char)*s < 0x20) return NULL;
        if (*s == '\\' && !*++s) return NULL;
        s++;
    }
    return *s == '"' ? s + 1 : NULL;
}

static const char *json_value(const char *s) {
    s = json_ws(s);
    if (*s == '{' || *s == '[') {
        char close = *s == '{' ? '}' : ']';
        s = json_ws(s + 1);
        if (*s == close) return s + 1;
        for (;;) {
            if (close == '}') {
                if (!(s = json_string(json_ws(s)))) return NULL;
                s = json_ws(s);
                if (*s++ != ':') return NULL;
            }
            if (!(s = json_value(s))) return NULL;
            s = json_ws(s);
            if (*s == close) return s + 1;
            if (*s++ != ',') return NULL;
        }
    }
    if (*s == '"') return json_string(s);
    for (const char *lit = "true\0false\0null\0"; *lit; lit += strlen(lit) + 1)
        if (!strncmp(s, lit, strlen(lit))) return s + strlen(lit);
    char *end;
    strtod(s, &end);
    return end > s ? end : NULL;
}

// The reduced matrix of `make test`: 2 layers x S {64, 128} x both checkpoints x both
// paths of `tiny` pass, and --json holds all 8 cells.
Test(hangcheck, reduced_matrix_passes, .timeout = 120) {
    char dir[64], json[128];
    tmpdir(dir, sizeof dir);
    snprintf(json, sizeof json, "%s/hc.json", dir);
    const char *args[] = {"hangcheck", "--config", "tiny", "--layers", "2", "--seq", "64,128",
                          "--timeout", "20", "--json", json, NULL};
    double wall;
    int rc = run_nsa(dir, args, NULL, 0, 100.0, &wall);
    char *out = read_in(dir, "stdout");
    char *err = read_in(dir, "stderr");
    cr_assert_eq(rc, 0, "exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    cr_assert_not_null(strstr(out, "8 cells, 8 passed, 0 failed, 0 skipped"), "%s", out);
    char *js = read_in(dir, "hc.json");
    const char *end = json_value(js);
    cr_assert(end && !*json_ws(end), "--json output is not valid JSON:\n%s", js);
    cr_assert_not_null(strstr(js, "\"complete\": true, \"pass\": true"), "%s", js);
    static const int seqs[2] = {64, 128};
    static const char *ck[2] = {"none", "layer"}, *path[2] = {"index", "materialise"};
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 2; c++)
            for (int p = 0; p < 2; p++) {
                char cell[200];
                snprintf(cell, sizeof cell,
                         "{\"layers\": 2, \"seq\": %d, \"checkpoint\": \"%s\", \"path\": \"%s\", \"status\": \"pass\"",
                         seqs[s], ck[c], path[p]);
                cr_assert_not_null(strstr(js, cell), "missing %s in\n%s", cell, js);
            }
    int n = 0;
    for (const char *p = js; (p = strstr(p, "\"grads_finite\": true")); p++) n++;
    cr_assert_eq(n, 8, "%d cells with finite gradients", n);
    free(js);
    free(out);
    free(err);
    tu_rm_rf(dir);
}
