// watchdog.h: per-phase deadlines watched from a separate thread, so a spinning kernel
// cannot silence them. The thread running the step reports where it is through a Watch
// (autograd/graph.h, autograd/watch.h): phase (forward, backward, optimiser), layer and
// op. Also the debug-only planted hang that tests the watchdog itself.
#ifndef NSA_WATCHDOG_H
#define NSA_WATCHDOG_H

#include "autograd/graph.h"
#include "autograd/watch.h"

// Exit status when a deadline passes (the same as timeout(1)).
#define NSA_EXIT_HANG 124

typedef struct Watchdog Watchdog;

// Starts the monitor thread. When the current (phase, layer) has run longer than
// timeout_s it prints one line to stderr naming phase, layer, op and elapsed time,
// appends the same as a JSON record to log_path (if not NULL), and exits the process
// with NSA_EXIT_HANG. timeout_s <= 0: returns NULL, watches nothing.
Watchdog *watchdog_start(Watch *w, double timeout_s, const char *log_path);
void watchdog_stop(Watchdog *wd);

// Debug only: a planted hang, "[forward:|backward:]OP@LAYER" (e.g. backward:slc_attention@1,
// layer -1 for ops outside the layers), from --debug-spin or the environment variable
// NSA_DEBUG_SPIN. That op spins forever when it starts in that layer (and phase), as a
// stuck kernel would; only the watchdog ends the run. Never set it without a watchdog.
typedef struct {
    int on;
    char op[64];
    int layer;
    int phase;   // WATCH_FORWARD or WATCH_BACKWARD; -1: any phase
} DebugSpin;

// Parses spec (NULL or "" leaves it off); NSA_ERR with a one-line message on a bad spec.
int debug_spin_parse(DebugSpin *d, const char *spec);
// Call after every watch_phase: arms the spin in w when the phase matches, else disarms.
void debug_spin_arm(const DebugSpin *d, Watch *w);

#endif
