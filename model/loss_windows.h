// loss_windows.h: the validation loss of a model: mean token cross-entropy over fixed
// windows of a token stream. One function for both callers, the trainer's periodic
// evaluation (train/) and `nsa eval` (eval/), so the two report the same number for the
// same checkpoint and data.
#ifndef NSA_LOSS_WINDOWS_H
#define NSA_LOSS_WINDOWS_H

#include <stdint.h>

#include "autograd/graph.h"
#include "model/model.h"

// Mean token cross-entropy (nats) over W windows of T tokens, one window per forward (the
// memory of a batch of one, whatever the training batch). Window w starts at
// w·(n − T − 1)/W: spread evenly, no randomness, so the same checkpoint and data always give
// the same number. Needs n >= T + 1. tok and tgt are (T) work buffers; the graph is used
// without a tape and reset after every window. With g->watch set, every window is a
// WATCH_EVAL phase (the deadline is per forward, as in training).
double model_loss_windows(Model *m, Graph *g, const uint16_t *ids, int64_t n, int T, int W, int32_t *tok,
                          int32_t *tgt);
// The loss of window w alone: model_loss_windows is the mean of these, added in w order as
// doubles, so a caller that splits the windows (train/, over MPI ranks) can get its bits.
float model_loss_window(Model *m, Graph *g, const uint16_t *ids, int64_t n, int T, int W, int w, int32_t *tok,
                        int32_t *tgt);

#endif
