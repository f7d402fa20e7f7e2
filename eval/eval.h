// eval.h: validation loss of a model over fixed windows of a token stream (`nsa eval`,
// and the periodic evaluation of `nsa train`), and text generation by full recompute
// (`nsa generate`).
#ifndef NSA_EVAL_H
#define NSA_EVAL_H

#include <stdint.h>

#include "autograd/graph.h"
#include "kernels/rng.h"
#include "model/model.h"

// Mean token cross-entropy (nats) over W windows of T tokens, one window per forward (the
// memory of a batch of one, whatever the training batch). Window w starts at
// w·(n − T − 1)/W: spread evenly, no randomness, so the same checkpoint and data always give
// the same number. Needs n >= T + 1. tok and tgt are (T) work buffers; the graph is used
// without a tape and reset after every window.
double eval_loss(Model *m, Graph *g, const uint16_t *ids, int64_t n, int T, int W, int32_t *tok,
                 int32_t *tgt);

// Next token after ids[0..n) by full recompute over the last seq_len of them: argmax at
// temperature 0 (ties to the lower id), else a draw from softmax(logits / temperature).
int32_t generate_next(Model *m, Graph *g, const int32_t *ids, int n, double temperature, Rng *rng);

// The `nsa eval` and `nsa generate` commands.
int eval_main(int argc, char **argv);
int generate_main(int argc, char **argv);

#endif
