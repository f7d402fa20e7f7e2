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
    int W = o->batches ? (int)o->batches * (int)m.cfg.batch_size
                       : (int)((m.cfg.eval_batches > 0 ? m.cfg.eval_batches : 8) * m.cfg.batch_size);
    if (d.vocab_size > m.cfg.vocab_size) {
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
        r->loss = model_loss_windows(&m, &g, d.val, d.n_val, T, W, tok, tgt);
        r->seconds = nsa_now() - t0;
        r->windows = W;
        r->seq_len = T;
        r->byte_tokens = !strcmp(d.tokenizer, "bytes");
        rc = NSA_OK;
        free(tok);
        free(tgt);
        graph_free(&g);
        arena_free(&arena);
    }
    dataset_free(&d);
    model_free(&m);
    return rc;
}
