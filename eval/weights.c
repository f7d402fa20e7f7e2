// weights.c: see weights.h.
#include "eval/weights.h"

#include <string.h>

#include "kernels/common.h"
#include "kernels/embed.h"

static Weight f32(const Tensor *t) {
    if (!t) return (Weight){0};
    if (t->q4k) return (Weight){.type = WEIGHT_Q4K, .q4k = t->q4k, .rows = t->shape[0], .cols = t->shape[1]};
    return (Weight){.type = WEIGHT_F32, .f32 = t->data, .rows = t->shape[0], .cols = t->shape[1]};
}

static const float *vec(const Tensor *t) { return t ? t->data : NULL; }

void weights_from_model(Weights *w, const Model *m) {
    memset(w, 0, sizeof *w);
    w->cfg = m->cfg;
    w->tok_emb = f32(m->tok_emb);
    w->lm_head = f32(m->lm_head);
    w->norm = vec(m->norm);
    w->rope = m->rope;
    for (int i = 0; i < m->cfg.n_layers; i++) {
        const Layer *L = &m->layers[i];
        LayerWeights *lw = &w->layers[i];
        lw->is_nsa = L->is_nsa;
        lw->attn_norm = vec(L->attn_norm), lw->mlp_norm = vec(L->mlp_norm);
        lw->wq = f32(L->wq), lw->wo = f32(L->wo);
        if (L->wk) {
            lw->n_sets = 1;
            lw->wk[0] = f32(L->wk), lw->wv[0] = f32(L->wv);
        } else {
            lw->n_sets = 3;
            for (int b = 0; b < 3; b++) lw->wk[b] = f32(L->br_wk[b]), lw->wv[b] = f32(L->br_wv[b]);
        }
        lw->k_proj = f32(L->k_proj), lw->v_proj = f32(L->v_proj);
        lw->k_out = f32(L->k_out), lw->v_out = f32(L->v_out);
        lw->k_pe = vec(L->k_pe), lw->v_pe = vec(L->v_pe);
        lw->fc1 = f32(L->fc1_w), lw->fc2 = f32(L->fc2_w);
        lw->fc1_b = vec(L->fc1_b), lw->fc2_b = vec(L->fc2_b);
        lw->w1 = f32(L->w1), lw->w2 = f32(L->w2), lw->w3 = f32(L->w3);
    }
}

void weights_embed(float *y, const Weights *w, const int32_t *tok, int64_t n) {
    if (w->tok_emb.type == WEIGHT_Q4K) {
        embed_forward_q4k(y, w->tok_emb.q4k, tok, n, w->tok_emb.rows, w->tok_emb.cols);
        return;
    }
    embed_forward(y, w->tok_emb.f32, tok, n, w->tok_emb.rows, w->tok_emb.cols);
}
