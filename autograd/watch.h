// watch.h: the step thread's side of the Watch (declared in autograd/graph.h): entering a
// phase. Reading it, and acting on deadlines, is the watchdog's job (train/watchdog.h);
// this half lives here so that model and eval code can report phases without depending
// on train/.
#ifndef NSA_WATCH_H
#define NSA_WATCH_H

#include "autograd/graph.h"

// Nothing running yet: idle, no layer, no op, the debug spin off.
void watch_init(Watch *w);
// Enters a phase (WATCH_*): restarts its clock, clears layer and op.
void watch_phase(Watch *w, int phase);

#endif
