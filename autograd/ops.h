// ops.h: every differentiable op of the model, forward recorded on the tape with its
// backward. Inputs [rows, cols] are contiguous; attention ops take their dims explicitly
// ([B, T, heads, Dh] is the same memory as [B*T, heads*Dh]).
#ifndef NSA_OPS_H
#define NSA_OPS_H

#include "autograd/graph.h"
#include "kernels/gate.h"
#include "kernels/nsa_shape.h"

// y[N, out] = x[N, in] · Wᵀ (+ b)
Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b);
// y[N, D] = W[tok[i]]
Tensor *op_embedding(Graph *g, Tensor *w, const int32_t *tok, int64_t n);
// y = x / sqrt(mean(x²) + eps) · w, over the last dim
Tensor *op_rmsnorm(Graph *g, Tensor *x, Tensor *w, float eps);
// Rotary embedding on x [B, T, nh, Dh] with table cs [T_max, Dh/2, 2] (cos, sin).
Tensor *op_rope(Graph *g, Tensor *x, const float *cs, int64_t B, int64_t T, int64_t nh, int64_t dh);
Tensor *op_silu(Graph *g, Tensor *x);
Tensor *op_add(Graph *g, Tensor *a, Tensor *b);
// silu(a) * b, fused (SwiGLU's inner product)
Tensor *op_swiglu(Graph *g, Tensor *a, Tensor *b);
// Mean token cross-entropy (nats) of logits [N, V] against targets; returns a scalar.
Tensor *op_cross_entropy(Graph *g, Tensor *logits, const int32_t *targets);
// Causal attention (window <= 0: full causal) with GQA; q [B,T,H,Dh], k/v [B,T,G,Dh].
Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int64_t B, int64_t T, int64_t H,
                     int64_t G, int64_t dh, int window);

// NSA pieces (DESIGN.md "NSA attention"); s describes B, T, H, G, Dh and the block sizes.
Tensor *op_cmp_gather(Graph *g, Tensor *x, Tensor *pe, const NsaShape *s);   // [B*Nc*G, l*Dh]
Tensor *op_cmp_mean(Graph *g, Tensor *x, const NsaShape *s);                 // [B*Nc*G, Dh]
// Compressed attention with the top-n block selection in the same pass; *idx receives the
// selection [B, T, G, n] in arena memory (no gradient).
Tensor *op_cmp_attn(Graph *g, Tensor *q, Tensor *kc, Tensor *vc, const NsaShape *s, int32_t **idx);
// Selected-block attention through the index; materialise=1 uses the reference path.
Tensor *op_slc_attn(Graph *g, Tensor *q, Tensor *k, Tensor *v, const int32_t *idx, const NsaShape *s,
                    int materialise);
// The selected and window branches at once where one k, v serves both and
// nsa_slc_head_shared(s): the window's forward also gives each row its attention over the
// head of its window (attn_window_head_forward), which is the selected branch's over its
// last two blocks, and the selected forward continues from it (nsa_slc_attn_forward_head)
// instead of visiting those keys again. The tape and the kept results are the two ops'
// (op_slc_attn, then op_attention with s->window).
void op_slc_window_attn(Graph *g, Tensor *q, Tensor *k, Tensor *v, const int32_t *idx, const NsaShape *s,
                        Tensor **o_slc, Tensor **o_win);
// o[b,t,h] = Σ_branch act(z)[branch,h] · o_branch[b,t,h]; z [B*T, 3H] branch-major
// (kernels/gate.h).
Tensor *op_gate_combine(Graph *g, Tensor *z, Tensor *oc, Tensor *os, Tensor *ow, int64_t H,
                        int64_t dh, GateAct act);

#endif
