// quant.c: see quant.h.
#include "model/quant.h"

#include <string.h>

#include "kernels/common.h"
#include "kernels/q4k.h"

// Suffixes of the quantized matrices (after "layers.N." for layer parameters).
static const char *const q4k_names[] = {
    "attn.wq.weight",      "attn.wk.weight",      "attn.wv.weight",      "attn.wo.weight",
    "attn.cmp.wk.weight",  "attn.cmp.wv.weight",  "attn.slc.wk.weight",  "attn.slc.wv.weight",
    "attn.win.wk.weight",  "attn.win.wv.weight",  "attn.gate.fc1.weight", "attn.gate.fc2.weight",
    "attn.cmp.k_proj.weight", "attn.cmp.v_proj.weight", "mlp.w1.weight", "mlp.w2.weight",
    "mlp.w3.weight",
};

int quant_param_is_q4k(const Param *p) {
    if (p->t.ndim != 2 || p->t.shape[1] < Q4K_BLOCK) return 0;
    if (!strcmp(p->name, "tok_emb.weight") || !strcmp(p->name, "lm_head.weight")) return 1;
    if (strncmp(p->name, "layers.", 7)) return 0;
    const char *rest = strchr(p->name + 7, '.');
    if (!rest) return 0;
    for (size_t i = 0; i < sizeof q4k_names / sizeof *q4k_names; i++)
        if (!strcmp(rest + 1, q4k_names[i])) return 1;
    return 0;
}

int64_t quant_param_bytes(const Param *p) {
    return quant_param_is_q4k(p) ? p->t.shape[0] * q4k_row_bytes(p->t.shape[1]) : 0;
}

void model_quantize(Model *m, QuantProgress progress, void *ctx) {
    NSA_ASSERT(!m->q4k_data);
    int64_t total = 0;
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        total += quant_param_bytes(&m->params[i]);
        n += quant_param_is_q4k(&m->params[i]);
    }
    m->q4k_data = nsa_malloc((size_t)(total > 0 ? total : 1));
    m->q4k_bytes = total;
    int64_t off = 0;
    int done = 0;
    for (int i = 0; i < m->n_params; i++) {
        Param *p = &m->params[i];
        if (!quant_param_is_q4k(p)) continue;
        if (progress) progress(ctx, done, n, p->name);
        q4k_quantize_rows(m->q4k_data + off, p->t.data, p->t.shape[0], p->t.shape[1]);
        p->t.q4k = m->q4k_data + off;
        p->t.requires_grad = 0;  // quantized weights are never trained
        memset(p->t.data, 0, (size_t)p->t.size * sizeof(float));
        off += quant_param_bytes(p);
        done++;
    }
    if (progress) progress(ctx, done, n, NULL);
}

int64_t model_weight_bytes(const Model *m) {
    int64_t bytes = 0;
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = &m->params[i];
        int64_t q = quant_param_bytes(p);
        bytes += p->t.q4k ? q : p->t.size * (int64_t)sizeof(float);
    }
    return bytes;
}
