// trace.h: one batch's logits, loss, every gradient and every NSA selection, as DESIGN.md's
// trace file: what a reference implementation is compared against.
#ifndef NSA_TRACE_H
#define NSA_TRACE_H

#include "autograd/graph.h"
#include "model/model.h"

// Forward + backward of one batch; gradients land in m->grad (zeroed first).
void trace_compute(Model *m, Graph *g, const int32_t *tokens, const int32_t *targets, int B, int T,
                   const ForwardOpts *opt, Forward *f);
int trace_write(const char *path, const Model *m, const int32_t *tokens, const int32_t *targets, int B,
                int T, const Forward *f);
#include "data/dataset.h"

// Loads a checkpoint and a dataset whose ids fit its vocabulary (eval, trace); on failure
// both are left freed and the error has been reported.
int model_and_data_load(const char *ckpt, const char *data, Model *m, Dataset *d);
// The `nsa trace` command.
int trace_main(int argc, char **argv);

#endif
