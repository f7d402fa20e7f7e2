// model.h: the decoder-only transformer of DESIGN.md with dense or NSA attention per
// layer. Parameters live in one buffer (and gradients in another), carved into named views.
#ifndef NSA_MODEL_H
#define NSA_MODEL_H

#include "autograd/graph.h"
#include "model/config.h"

typedef struct {
    char name[96];
    Tensor t;        // view into Model.data (grad into Model.grad once allocated)
    int decay;       // AdamW weight decay applies (matrices only)
} Param;

typedef struct {
    int is_nsa;
    Tensor *attn_norm;                         // (D)
    Tensor *wq, *wk, *wv, *wo;                 // (H*Dh, D) (G*Dh, D) (G*Dh, D) (D, H*Dh)
    Tensor *br_wk[3], *br_wv[3];               // kv=separate: cmp, slc, win (G*Dh, D)
    Tensor *k_proj, *k_out, *k_pe;             // (Dh, l*Dh) (Dh, Dh) (l, Dh)
    Tensor *v_proj, *v_out, *v_pe;
    Tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;     // (Dg, D) (Dg) (3H, Dg) (3H)
    Tensor *mlp_norm;                          // (D)
    Tensor *w1, *w2, *w3;                      // (F, D) (D, F) (F, D)
} Layer;

typedef struct {
    Config cfg;
    Param *params;
    int n_params;
    int64_t n_elems;     // total parameter count
    float *data;         // (n_elems) every parameter
    float *grad;         // (n_elems) every gradient, NULL until model_alloc_grads
    Tensor *tok_emb;     // (V, D)
    Tensor *norm;        // (D)
    Tensor *lm_head;     // (V, D); == tok_emb when tied
    Layer layers[CFG_MAX_LAYERS];
    float *rope;         // (seq_len, Dh/2, 2) cos, sin
    uint8_t *q4k_data;   // (q4k_bytes) Q4_K rows of the quantized matrices (model/quant.h), or NULL
    int64_t q4k_bytes;
} Model;

// Builds the parameter table for a validated config; data zeroed.
void model_create(Model *m, const Config *cfg);
void model_free(Model *m);
void model_init_params(Model *m, uint64_t seed);
void model_alloc_grads(Model *m);
void model_zero_grads(Model *m);
Param *model_param(Model *m, const char *name);

typedef struct {
    int checkpoint;          // 1: keep only layer inputs, recompute layers in backward
    int materialise;         // 1: selected branch through the materialising reference
    int keep_selection;      // 1: fill Forward.sel (trace)
    int keep_gates;          // 1: fill Forward.gate
    Graph *scratch;          // recompute graph (checkpoint=1)
} ForwardOpts;

typedef struct {
    Tensor *logits;          // (B*T, V)
    Tensor *loss;            // scalar, NULL without targets
    int32_t *sel[CFG_MAX_LAYERS];  // (B, T, G, n) per NSA layer when keep_selection
    float *gate[CFG_MAX_LAYERS];   // (B*T, 3, H) gate values (act(z), branch-major) per NSA layer when keep_gates
} Forward;

// tokens, targets: (B, T) with T <= seq_len. targets may be NULL (no loss).
void model_forward(Model *m, Graph *g, const int32_t *tokens, const int32_t *targets, int B, int T,
                   const ForwardOpts *opt, Forward *out);

#endif
