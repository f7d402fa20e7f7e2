// test_watchdog.c: the watchdog in-process, in forked children: it fires on a spinning
// phase within its deadline + 1 s naming phase, layer and op, never on idle time or after
// watchdog_stop, measures the deadline per (phase, layer), and the debug spin switch hits
// only its op in its layer.
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "autograd/graph.h"
#include "kernels/common.h"
#include "train/watchdog.h"

// A watchdog must fire within its deadline plus this (the bound).
#define FIRE_SLACK_S 1.0

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

// Forks a child that runs fn; returns its exit code, *wall the child's lifetime, and the
// child's stderr in errbuf.
static int in_child(void (*fn)(void), double *wall, char *errbuf, size_t n) {
    char path[] = "/tmp/nsa_wd_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    fflush(NULL);
    double t0 = nsa_now();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fd, 2);
        fn();
        _exit(0);
    }
    int status = wait_limited(pid, t0, 10.0, wall);
    lseek(fd, 0, SEEK_SET);
    ssize_t k = read(fd, errbuf, n - 1);
    errbuf[k > 0 ? k : 0] = '\0';
    close(fd);
    unlink(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void spin_for(double s) {
    double t = nsa_now();
    while (nsa_now() - t < s) __asm__ volatile("" ::: "memory");
}

static void child_spins_in_optimiser(void) {
    Watch w;
    watch_init(&w);
    watchdog_start(&w, 0.3, NULL);
    watch_phase(&w, WATCH_OPTIMIZER);
    spin_for(5.0);  // the watchdog must end this long before
}

Test(watchdog, fires_on_spinning_phase, .timeout = 20) {
    double wall;
    char err[1024];
    int rc = in_child(child_spins_in_optimiser, &wall, err, sizeof err);
    cr_assert_eq(rc, NSA_EXIT_HANG, "exit %d; stderr: %s", rc, err);
    cr_assert(wall >= 0.3 && wall <= 0.3 + FIRE_SLACK_S, "fired after %.2f s (deadline 0.3 s)", wall);
    cr_assert_not_null(strstr(err, "nsa: watchdog: optimiser step stuck for "), "%s", err);
    cr_assert_not_null(strstr(err, "(deadline 0.30 s); exiting with code 124\n"), "%s", err);
}

// Idle time is never watched, and watchdog_stop ends the watch.
static void child_idles_then_stops(void) {
    Watch w;
    watch_init(&w);
    if (watchdog_start(&w, 0, NULL) != NULL) _exit(5);  // timeout <= 0: no watchdog
    Watchdog *wd = watchdog_start(&w, 0.2, NULL);
    watch_phase(&w, WATCH_IDLE);
    spin_for(0.6);
    watch_phase(&w, WATCH_FORWARD);
    spin_for(0.05);
    watch_phase(&w, WATCH_IDLE);
    watchdog_stop(wd);
    watch_phase(&w, WATCH_BACKWARD);
    spin_for(0.4);  // past the deadline, but nothing watches any more
}

Test(watchdog, idle_and_stopped_are_not_watched, .timeout = 20) {
    double wall;
    char err[1024];
    int rc = in_child(child_idles_then_stops, &wall, err, sizeof err);
    cr_assert_eq(rc, 0, "exit %d; stderr: %s", rc, err);
}

// The deadline is per (phase, layer): five layers of 0.15 s each under a 0.3 s deadline
// (0.75 s for the phase) pass; then 0.6 s in layer 5 fires, naming layer 5 and its op.
static void child_layers(void) {
    Arena a;
    arena_init(&a, 0);
    Graph g;
    graph_init(&g, &a);
    Watch w;
    watch_init(&w);
    g.watch = &w;
    watchdog_start(&w, 0.3, NULL);
    watch_phase(&w, WATCH_BACKWARD);
    for (int l = 0; l < 5; l++) {
        g.layer = l;
        graph_set_op(&g, "linear");
        spin_for(0.15);
    }
    g.layer = 5;
    graph_set_op(&g, "slc_attention");
    spin_for(0.6);
    _exit(3);  // not reached when the watchdog works
}

Test(watchdog, deadline_is_per_layer, .timeout = 20) {
    double wall;
    char err[1024];
    int rc = in_child(child_layers, &wall, err, sizeof err);
    cr_assert_eq(rc, NSA_EXIT_HANG, "exit %d; stderr: %s", rc, err);
    cr_assert_not_null(strstr(err, "nsa: watchdog: backward of layer 5 stuck in op slc_attention for 0."), "%s",
                       err);
    cr_assert(wall >= 0.75 + 0.3 && wall <= 0.75 + 0.3 + FIRE_SLACK_S, "fired after %.2f s", wall);
}

// The spin switch itself: the named op in the named layer never returns; others do.
static void child_spin_switch(void) {
    Arena a;
    arena_init(&a, 0);
    Graph g;
    graph_init(&g, &a);
    Watch w;
    memset(&w, 0, sizeof w);
    g.watch = &w;
    w.spin_op_layer = 1;
    w.spin_op = "slc_attention";
    watchdog_start(&w, 0.2, NULL);
    watch_phase(&w, WATCH_FORWARD);
    g.layer = 0;
    graph_set_op(&g, "slc_attention");  // other layer: returns
    g.layer = 1;
    graph_set_op(&g, "linear");         // other op: returns
    graph_set_op(&g, "slc_attention");  // spins
    _exit(3);
}

Test(watchdog, spin_switch_hits_only_its_op_and_layer, .timeout = 20) {
    double wall;
    char err[1024];
    int rc = in_child(child_spin_switch, &wall, err, sizeof err);
    cr_assert_eq(rc, NSA_EXIT_HANG, "exit %d; stderr: %s", rc, err);
    cr_assert_not_null(strstr(err, "forward of layer 1 stuck in op slc_attention"), "%s", err);
}
