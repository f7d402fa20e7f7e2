// trace_file.h: DESIGN.md's trace file (from `nsa trace`): /tokens and /targets [B, S],
// /logits [B, S, V], /loss, /grads/<param> and /selection/layers.{i} [B, S, G, n] for
// every NSA layer: what a reference implementation is compared against.
#ifndef NSA_TRACE_FILE_H
#define NSA_TRACE_FILE_H

#include <stdint.h>

#include "model/model.h"

// f: the forward of the batch (with keep_selection); the gradients are m's. Atomic.
int trace_file_write(const char *path, const Model *m, const int32_t *tokens, const int32_t *targets, int B,
                     int T, const Forward *f);

#endif
