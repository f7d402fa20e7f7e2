// profile.h: the sampling profile of `nsa hangcheck --profile`: wall seconds per op, split
// into forward and backward, without touching the ops. A thread reads the Watch every
// millisecond and charges the time since its last look to the (phase, op) it sees; ops
// announce themselves at their start (graph_set_op), so that is the op running.
#ifndef NSA_PROFILE_H
#define NSA_PROFILE_H

#include <pthread.h>
#include <stdatomic.h>

#include "autograd/graph.h"

#define PROF_MAX_OPS 48  // distinct op names kept; later ones are not charged

typedef struct {
    const char *op;
    double s[2];  // forward, backward seconds
} ProfEntry;

typedef struct Profiler Profiler;

// Starts the sampler on w; it charges nothing until profiler_active(p, 1).
Profiler *profiler_start(Watch *w);
void profiler_stop(Profiler *p);
void profiler_clear(Profiler *p);
// Only the timed steps are charged: on around them, off for warm-up steps.
void profiler_active(Profiler *p, int on);
// Copies the entries out (at most PROF_MAX_OPS); returns how many.
int profiler_read(Profiler *p, ProfEntry *out);

#endif
