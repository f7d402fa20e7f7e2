// weights.h: the read-only view inference runs on: every matrix as a Weight (kernels/matmul.h,
// f32 or Q4_K) and every vector as floats, per layer, built from a Model.
#ifndef NSA_WEIGHTS_H
#define NSA_WEIGHTS_H

#include "kernels/matmul.h"
#include "model/config.h"
#include "model/model.h"

typedef struct {
    int is_nsa;
    int n_sets;                              // K/V sets: 3 for kv=separate NSA layers (cmp, slc, win), else 1
    const float *attn_norm, *mlp_norm;       // (D)
    Weight wq, wo;                           // (H*Dh, D) (D, H*Dh)
    Weight wk[3], wv[3];                     // (G*Dh, D) per set
    Weight k_proj, v_proj, k_out, v_out;     // (Dh, l*Dh) (Dh, Dh); cmp_fn mlp/linear
    const float *k_pe, *v_pe;                // (l, Dh); cmp_fn mlp
    Weight fc1, fc2;                         // (Dg, D) (3H, Dg)
    const float *fc1_b, *fc2_b;              // (Dg) (3H)
    Weight w1, w2, w3;                       // (F, D) (D, F) (F, D)
} LayerWeights;

typedef struct {
    Config cfg;
    Weight tok_emb;                          // (V, D), looked up through weights_embed
    Weight lm_head;                          // (V, D); tok_emb's storage when tied
    const float *norm;                       // (D)
    const float *rope;                       // (seq_len, Dh/2, 2)
    LayerWeights layers[CFG_MAX_LAYERS];
} Weights;

// Views into m's parameters (m must outlive w).
void weights_from_model(Weights *w, const Model *m);
// y [n, D] = rows tok[0..n) of the embedding table (a Q4_K table dequantizes its rows).
void weights_embed(float *y, const Weights *w, const int32_t *tok, int64_t n);

#endif
