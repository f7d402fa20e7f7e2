// trace.h: `nsa trace`: one batch's logits, loss, every gradient and every NSA selection
// of a checkpoint, written as DESIGN.md's trace file (data/trace_file.h): what a
// reference implementation is compared against.
#ifndef NSA_TRACE_H
#define NSA_TRACE_H

#include "autograd/graph.h"
#include "model/model.h"

// Forward + backward of one batch; gradients land in m->grad (zeroed first).
void trace_compute(Model *m, Graph *g, const int32_t *tokens, const int32_t *targets, int B, int T,
                   const ForwardOpts *opt, Forward *f);

typedef struct {
    const char *ckpt, *data, *out;
    int batch;                 // B windows of seq_len tokens from the start of /val
} TraceOpts;

typedef struct {
    double loss;
    int batch, seq_len;
} TraceResult;

// The most logits (batch × seq_len × vocab_size floats) a trace writes: 2^31, 8 GiB.
#define TRACE_MAX_LOGITS ((int64_t)1 << 31)

// NSA_ERR after an error line.
int trace_run(const TraceOpts *o, TraceResult *r);

#endif
