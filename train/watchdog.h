// watchdog.h: per-phase deadlines watched from a separate thread, so a spinning kernel
// cannot silence them. The thread running the step reports where it is through a Watch
// (autograd/graph.h): phase (forward, backward, optimiser), layer and op.
#ifndef NSA_WATCHDOG_H
#define NSA_WATCHDOG_H

#include "autograd/graph.h"

// Exit status when a deadline passes (the same as timeout(1)).
#define NSA_EXIT_HANG 124

typedef struct Watchdog Watchdog;

// Starts the monitor thread. When the current (phase, layer) has run longer than
// timeout_s it prints one line to stderr naming phase, layer, op and elapsed time,
// appends the same as a JSON record to log_path (if not NULL), and exits the process
// with NSA_EXIT_HANG. timeout_s <= 0: returns NULL, watches nothing.
Watchdog *watchdog_start(Watch *w, double timeout_s, const char *log_path);
void watchdog_stop(Watchdog *wd);
// Enters a phase (WATCH_*): restarts its clock, clears layer and op.
void watch_phase(Watch *w, int phase);

#endif
