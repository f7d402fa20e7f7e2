// quant.h: which parameters are stored as Q4_K (DESIGN.md "Q4_K") and quantizing a model's
// weights in memory, so that its forward runs through the fused Q4_K kernels.
#ifndef NSA_QUANT_H
#define NSA_QUANT_H

#include <stdint.h>

#include "model/model.h"

// 1 if p is quantized: a matrix of at least 256 columns among the embedding (also the tied
// LM head), an untied lm_head, wq wk wv wo (any branch's wk/wv with kv=separate), w1 w2 w3,
// the gate's fc1 and fc2 and the compression projections k_proj / v_proj. Norms, biases,
// positional encodings and the compression output maps (k_out, v_out) stay float32.
int quant_param_is_q4k(const Param *p);

// Quantizes every such parameter with ggml's reference algorithm into one buffer
// (m->q4k_data), points p->t.q4k at its rows and zeroes its float32 copy, so nothing can
// read the float weights by mistake. `progress` (may be NULL) is called before each tensor.
typedef void (*QuantProgress)(void *ctx, int done, int total, const char *name);
void model_quantize(Model *m, QuantProgress progress, void *ctx);

// Bytes of Q4_K rows for p (0 when p stays float32).
int64_t quant_param_bytes(const Param *p);
// Bytes the weights occupy as stored: Q4_K rows for quantized matrices, 4 per float otherwise.
// A tied LM head is counted once.
int64_t model_weight_bytes(const Model *m);

#endif
