// eval.c: see eval.h.
#include "eval/eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/checkpoint.h"
#include "kernels/common.h"
#include "model/loss_windows.h"

int model_and_data_load(const char *ckpt, const char *data, Model *m, Dataset *d) {
    if (ckpt_load(ckpt, m) != NSA_OK) return NSA_ERR;
    if (dataset_load(data, m->cfg.vocab_size, d) != NSA_OK) {
        model_free(m);
        return NSA_ERR;
    }
    return NSA_OK;
}

int eval_run(const EvalOpts *o, EvalResult *r) {
    memset(r, 0, sizeof *r);
    Model m;
    Dataset d;
    if (model_and_data_load(o->ckpt, o->data, &m, &d) != NSA_OK) return NSA_ERR;
    int rc = NSA_ERR;
    int T = (int)m.cfg.seq_len;
    // The windows of training's periodic evaluation: eval_batches batches of batch_size.
    int64_t batches = o->batches ? o->batches : m.cfg.eval_batches > 0 ? m.cfg.eval_batches : 8;
    int64_t W;
    if (nsa_mul_overflow(batches, m.cfg.batch_size, &W) || W > EVAL_MAX_WINDOWS) {
        nsa_error("--batches: %lld batches of batch_size %lld exceed the %lld windows one evaluation may run",
                  (long long)batches, (long long)m.cfg.batch_size, (long long)EVAL_MAX_WINDOWS);
    } else if (d.vocab_size > m.cfg.vocab_size) {
        nsa_error("%s: vocab_size %lld is larger than the model's %lld (data and checkpoint disagree)", o->data,
                  (long long)d.vocab_size, (long long)m.cfg.vocab_size);
    } else if (d.n_val < (int64_t)T + 1) {
        nsa_error("%s: /val has %lld tokens, evaluation at seq_len %d needs at least %d", o->data,
                  (long long)d.n_val, T, T + 1);
    } else {
        Arena arena;
        arena_init(&arena, 0);
        Graph g;
        graph_init(&g, &arena);
        int32_t *tok = nsa_malloc((size_t)T * sizeof *tok), *tgt = nsa_malloc((size_t)T * sizeof *tgt);
        double t0 = nsa_now();
        int64_t bad;
        r->loss = model_loss_windows(&m, &g, d.val, d.n_val, T, (int)W, tok, tgt, &bad);
        r->seconds = nsa_now() - t0;
        r->windows = (int)W;
        r->seq_len = T;
        r->byte_tokens = !strcmp(d.tokenizer, "bytes");
        // The weights were checked finite on loading: a non-finite loss is an activation
        // that overflowed, and a number printed from it would be a silent wrong answer.
        if (bad >= 0)
            nsa_error("%s: the loss of the window at /val[%lld..%lld) is not finite (activations overflowed)",
                      o->ckpt, (long long)bad, (long long)(bad + T));
        else rc = NSA_OK;
        free(tok);
        free(tgt);
        graph_free(&g);
        arena_free(&arena);
    }
    dataset_free(&d);
    model_free(&m);
    return rc;
}
