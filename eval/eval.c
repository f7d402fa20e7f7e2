// eval.c: see eval.h.
#include "eval/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/checkpoint.h"
#include "kernels/common.h"
#include "model/loss_windows.h"
#include "model/quant.h"

int model_and_data_load(const char *ckpt, const char *data, Model *m, Dataset *d) {
    if (ckpt_load(ckpt, m) != NSA_OK) return NSA_ERR;
    if (dataset_load(data, m->cfg.vocab_size, d) != NSA_OK) {
        model_free(m);
        return NSA_ERR;
    }
    return NSA_OK;
}

// Scores the windows one at a time (progress between them), as model_loss_windows does:
// window w of W starts at w·(n − T − 1)/W, so the sum is the same number it returns.
static int score(Model *m, const Dataset *d, int T, int64_t W, int progress, const char *label, EvalRow *row) {
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    int32_t *tok = nsa_malloc((size_t)T * sizeof *tok), *tgt = nsa_malloc((size_t)T * sizeof *tgt);
    double t0 = nsa_now(), total = 0.0, last = 0.0;
    int64_t span = d->n_val - T - 1;
    int rc = NSA_OK;
    for (int64_t w = 0; w < W; w++) {
        // One window through model_loss_windows' own placement: a window of a 1-window
        // stream that starts where window w of W starts.
        int64_t start = (int64_t)((__int128)w * span / W);
        double loss = model_loss_windows(m, &g, d->val + start, T + 1, T, 1, tok, tgt);
        if (!isfinite(loss)) {
            nsa_error("%s loss of the window at /val position %lld is not finite (diverged checkpoint?)", label,
                      (long long)start);
            rc = NSA_ERR;
            break;
        }
        total += loss;
        double now = nsa_now();
        if (progress && (now - last > 0.5 || w + 1 == W)) {
            fprintf(stderr, "\r%s: window %lld/%lld, %.0f tokens/s   ", label, (long long)(w + 1), (long long)W,
                    (double)(w + 1) * T / (now - t0));
            last = now;
        }
    }
    if (progress) fputc('\n', stderr);
    row->weights = label;
    row->loss = total / (double)W;
    row->seconds = nsa_now() - t0;
    row->weight_bytes = model_weight_bytes(m);
    free(tok);
    free(tgt);
    graph_free(&g);
    arena_free(&arena);
    return rc;
}

int eval_run(const EvalOpts *o, EvalResult *r) {
    memset(r, 0, sizeof *r);
    Model m;
    Dataset d;
    int is_q4k = 0;
    // Load in float first: with --quant the float32 row is scored before quantizing.
    if (load_model(o->ckpt, QUANT_NONE, o->progress, &m, &is_q4k) != NSA_OK) return NSA_ERR;
    if (dataset_load(o->data, m.cfg.vocab_size, &d) != NSA_OK) {
        model_free(&m);
        return NSA_ERR;
    }
    int rc = NSA_ERR;
    int T = (int)m.cfg.seq_len;
    if (d.n_val < (int64_t)T + 1) {
        nsa_error("%s: /val has %lld tokens, evaluation at seq_len %d needs at least %d", o->data,
                  (long long)d.n_val, T, T + 1);
        goto done;
    }
    int64_t all = (d.n_val - 1) / T;  // windows that tile /val without overlap
    int64_t W = o->windows ? o->windows : all;
    if (W > all) {
        nsa_error("--windows %lld: /val of %s holds only %lld windows of %d tokens", (long long)W, o->data,
                  (long long)all, T);
        goto done;
    }
    r->windows = W, r->seq_len = T, r->tokens = W * T, r->val_tokens = d.n_val;
    r->byte_tokens = !strcmp(d.tokenizer, "bytes");
    if (!is_q4k) {
        if (score(&m, &d, T, W, o->progress, "float32", &r->rows[r->n_rows++]) != NSA_OK) goto done;
        if (o->quant == QUANT_Q4K) {
            model_quantize(&m, NULL, NULL);
            if (score(&m, &d, T, W, o->progress, "q4_k", &r->rows[r->n_rows++]) != NSA_OK) goto done;
        }
    } else if (score(&m, &d, T, W, o->progress, "q4_k", &r->rows[r->n_rows++]) != NSA_OK) {
        goto done;
    }
    rc = NSA_OK;
done:
    dataset_free(&d);
    model_free(&m);
    return rc;
}
