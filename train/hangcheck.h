// hangcheck.h: `nsa hangcheck`, the backward-hang regression matrix (layers x S x
// checkpoint x selected-branch path) run under the watchdog, and the debug-only planted
// hang that tests the watchdog itself.
#ifndef NSA_HANGCHECK_H
#define NSA_HANGCHECK_H

#include "autograd/graph.h"

// Exit: 0 every cell passed (skipped cells do not fail), 1 a cell failed, 2 bad usage,
// NSA_EXIT_HANG (124) from the watchdog when a phase of a layer outlives --timeout.
int hangcheck_main(int argc, char **argv);

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
