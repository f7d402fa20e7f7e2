// watch.c: see watch.h.
#include "autograd/watch.h"

#include <string.h>

#include "kernels/common.h"

void watch_init(Watch *w) {
    memset(w, 0, sizeof *w);
    w->layer = -1;
    w->spin_op_layer = -1;
}

void watch_phase(Watch *w, int phase) {
    // The clock first, the phase last: the monitor may pair a new start with the old
    // phase (a late report at worst), never the new phase with an old start.
    w->phase_start = nsa_now();
    w->layer = -1;
    w->op = NULL;
    w->phase = phase;
}
