// watchdog.c: the monitor thread behind watchdog.h. It polls the Watch every 25 ms and,
// when the current (phase, layer) has outlived its deadline, reports and ends the process
// itself: the thread running the step may be spinning in a kernel and never return.
//
// Report (stderr, one line):
//   nsa: watchdog: backward of layer 3 stuck in op slc_attention for 2.05 s (deadline 2.00 s); exiting with code 124
// Run log (log_path, one JSON line appended):
//   {"type":"watchdog","phase":"backward","layer":3,"op":"slc_attention","elapsed_s":2.05,
//    "deadline_s":2.00,"exit_code":124,"message":"..."}
// layer is -1 for work outside the layers (embedding, final norm, loss, the optimiser) and
// op is null before the phase's first op. Exit status: NSA_EXIT_HANG (124).
// The record is appended with its own write(2) + fsync: the log is an append-only stream,
// not a file rewritten whole, so it does not go through data/atomic.h.
#include "train/watchdog.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/path.h"
#include "kernels/common.h"

#define WATCHDOG_POLL_NS (25 * 1000 * 1000)

struct Watchdog {
    Watch *w;
    double timeout_s;
    char log_path[NSA_PATH_MAX];
    int has_log;
    atomic_int stop;
    pthread_t thread;
};

static const char *phase_name(int phase) {
    switch (phase) {
    case WATCH_FORWARD: return "forward";
    case WATCH_BACKWARD: return "backward";
    case WATCH_OPTIMIZER: return "optimiser step";
    case WATCH_EVAL: return "eval";
    case WATCH_COMM: return "communication with the other ranks";
    default: return "idle";
    }
}

// One consistent reading of the Watch: the step thread may move on while we read, so
// retry until phase_start is the same before and after.
typedef struct {
    int phase, layer;
    const char *op;
    double start;
} Snapshot;

static Snapshot watch_read(const Watch *w) {
    Snapshot s;
    for (int tries = 0; tries < 100; tries++) {
        s.start = w->phase_start;
        s.phase = w->phase;
        s.layer = w->layer;
        s.op = w->op;
        if (w->phase_start == s.start) break;
    }
    return s;
}

static void write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, buf, n);
        if (k <= 0) return;
        buf += k;
        n -= (size_t)k;
    }
}

// Ends the process. The line goes straight to fd 2 and the record through its own
// descriptor, so neither waits on a stdio lock the stuck thread might hold; stdout is
// flushed only if its lock is free, for the same reason.
static _Noreturn void fire(const Watchdog *wd, const Snapshot *s, double elapsed) {
    char where[96], what[128], msg[512];
    const char *phase = phase_name(s->phase);
    if (s->layer >= 0) snprintf(where, sizeof where, "%s of layer %d", phase, s->layer);
    else if (s->phase == WATCH_FORWARD || s->phase == WATCH_BACKWARD)
        snprintf(where, sizeof where, "%s outside the layers", phase);
    else snprintf(where, sizeof where, "%s", phase);
    if (s->op) snprintf(what, sizeof what, " in op %s", s->op);
    else what[0] = '\0';
    snprintf(msg, sizeof msg, "nsa: watchdog: %s stuck%s for %.2f s (deadline %.2f s); exiting with code %d\n",
             where, what, elapsed, wd->timeout_s, NSA_EXIT_HANG);
    if (ftrylockfile(stdout) == 0) {
        fflush(stdout);
        funlockfile(stdout);
    }
    if (ftrylockfile(stderr) == 0) {
        fflush(stderr);
        funlockfile(stderr);
    }
    write_all(2, msg, strlen(msg));
    if (wd->has_log) {
        char op[80], rec[1024];
        if (s->op) snprintf(op, sizeof op, "\"%.60s\"", s->op);  // op names are identifiers
        else snprintf(op, sizeof op, "null");
        msg[strlen(msg) - 1] = '\0';  // the message again, without its newline
        snprintf(rec, sizeof rec,
                 "{\"type\":\"watchdog\",\"phase\":\"%s\",\"layer\":%d,\"op\":%s,\"elapsed_s\":%.3f,"
                 "\"deadline_s\":%.3f,\"exit_code\":%d,\"message\":\"%s\"}\n",
                 phase, s->layer, op, elapsed, wd->timeout_s, NSA_EXIT_HANG, msg);
        int fd = open(wd->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            write_all(fd, rec, strlen(rec));
            fsync(fd);
            close(fd);
        }
    }
    _exit(NSA_EXIT_HANG);
}

static void *monitor(void *arg) {
    Watchdog *wd = arg;
    struct timespec poll = {0, WATCHDOG_POLL_NS};
    while (!atomic_load(&wd->stop)) {
        nanosleep(&poll, NULL);
        Snapshot s = watch_read(wd->w);
        if (s.phase == WATCH_IDLE || s.start <= 0) continue;
        double elapsed = nsa_now() - s.start;
        if (elapsed > wd->timeout_s && !atomic_load(&wd->stop)) fire(wd, &s, elapsed);
    }
    return NULL;
}

Watchdog *watchdog_start(Watch *w, double timeout_s, const char *log_path) {
    if (timeout_s <= 0) return NULL;
    Watchdog *wd = nsa_calloc(1, sizeof *wd);
    wd->w = w;
    wd->timeout_s = timeout_s;
    if (log_path && log_path[0]) {
        snprintf(wd->log_path, sizeof wd->log_path, "%s", log_path);
        wd->has_log = 1;
    }
    atomic_init(&wd->stop, 0);
    NSA_ASSERT(pthread_create(&wd->thread, NULL, monitor, wd) == 0);
    return wd;
}

void watchdog_stop(Watchdog *wd) {
    if (!wd) return;
    atomic_store(&wd->stop, 1);
    pthread_join(wd->thread, NULL);
    free(wd);
}

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
