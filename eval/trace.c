// trace.c: see trace.h.
#include "eval/trace.h"

#include <stdlib.h>
#include <string.h>

#include "data/trace_file.h"
#include "eval/eval.h"
#include "kernels/common.h"

void trace_compute(Model *m, Graph *g, const int32_t *tokens, const int32_t *targets, int B, int T,
                   const ForwardOpts *opt, Forward *f) {
    model_alloc_grads(m);
    model_zero_grads(m);
    model_forward(m, g, tokens, targets, B, T, opt, f);
    graph_backward(g, f->loss);
}

int trace_run(const TraceOpts *o, TraceResult *r) {
    memset(r, 0, sizeof *r);
    Model m;
    Dataset d;
    if (model_and_data_load(o->ckpt, o->data, &m, &d) != NSA_OK) return NSA_ERR;
    int B = o->batch, T = (int)m.cfg.seq_len;
    int64_t logits;
    if (nsa_mul_overflow((int64_t)B * T, m.cfg.vocab_size, &logits) || logits > TRACE_MAX_LOGITS) {
        nsa_error("--batch %d: %d windows of %d tokens need %lld x %lld logits, more than the %lld a trace holds",
                  B, B, T, (long long)B * T, (long long)m.cfg.vocab_size, (long long)TRACE_MAX_LOGITS);
        dataset_free(&d);
        model_free(&m);
        return NSA_ERR;
    }
    if (d.n_val < (int64_t)B * T + 1) {
        nsa_error("%s: /val has %lld tokens, a trace of %d windows of %d needs %lld", o->data,
                  (long long)d.n_val, B, T, (long long)B * T + 1);
        dataset_free(&d);
        model_free(&m);
        return NSA_ERR;
    }
    int32_t *tok = nsa_malloc((size_t)B * T * sizeof *tok), *tgt = nsa_malloc((size_t)B * T * sizeof *tgt);
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        tok[i] = d.val[i];
        tgt[i] = d.val[i + 1];
    }
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    ForwardOpts fo = {0};
    fo.keep_selection = 1;
    Forward f;
    trace_compute(&m, &g, tok, tgt, B, T, &fo, &f);
    int rc = trace_file_write(o->out, &m, tok, tgt, B, T, &f);
    r->loss = f.loss->data[0];
    r->batch = B;
    r->seq_len = T;
    graph_free(&g);
    arena_free(&arena);
    free(tok);
    free(tgt);
    dataset_free(&d);
    model_free(&m);
    return rc;
}
