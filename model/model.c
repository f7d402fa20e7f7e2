// model.c: parameter table, initialisation and the forward composition of ops.
#include "model/model.h"

#include <math.h>
#include <string.h>

#include "autograd/ops.h"
#include "kernels/common.h"
#include "kernels/gate.h"
#include "kernels/nsa_slc.h"
#include "kernels/rng.h"
#include "kernels/rope.h"

// ---------------------------------------------------------------------------- parameters

typedef struct {
    Model *m;
    int64_t offset;
    int counting;
} Builder;

static Tensor *add_param(Builder *b, const char *name, int64_t d0, int64_t d1) {
    Model *m = b->m;
    int ndim = d1 > 0 ? 2 : 1;
    int64_t n = d1 > 0 ? d0 * d1 : d0;
    if (b->counting) {
        m->n_params++;
        b->offset += n;
        return NULL;
    }
    Param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    int64_t shape[2] = {d0, d1};
    p->t = tensor_view(m->data + b->offset, ndim, shape);
    p->t.requires_grad = 1;
    p->decay = ndim == 2 && !strstr(name, "_pe");
    b->offset += n;
    return &p->t;
}

static void build(Builder *b) {
    Model *m = b->m;
    const Config *c = &m->cfg;
    int64_t V = c->vocab_size, D = c->d_model, H = c->n_heads, G = c->n_kv_heads, dh = c->head_dim;
    int64_t F = c->ffn_dim, Dg = c->gate_hidden, l = c->cmp_block;
    char nm[96];
    m->tok_emb = add_param(b, "tok_emb.weight", V, D);
    int separate = c->kv == KV_SEPARATE;
    static const char *br[3] = {"cmp", "slc", "win"};
    for (int i = 0; i < c->n_layers; i++) {
        Layer *L = &m->layers[i];
        L->is_nsa = config_layer_is_nsa(c, i);
#define P(field, suffix, d0, d1) \
    (snprintf(nm, sizeof nm, "layers.%d.%s", i, suffix), L->field = add_param(b, nm, d0, d1))
        P(attn_norm, "attn_norm.weight", D, 0);
        P(wq, "attn.wq.weight", H * dh, D);
        if (L->is_nsa && separate) {
            for (int k = 0; k < 3; k++) {
                char s[64];
                snprintf(s, sizeof s, "attn.%s.wk.weight", br[k]);
                P(br_wk[k], s, G * dh, D);
                snprintf(s, sizeof s, "attn.%s.wv.weight", br[k]);
                P(br_wv[k], s, G * dh, D);
            }
        } else {
            P(wk, "attn.wk.weight", G * dh, D);
            P(wv, "attn.wv.weight", G * dh, D);
        }
        P(wo, "attn.wo.weight", D, H * dh);
        if (L->is_nsa) {
            if (c->cmp_fn != CMP_MEAN) {
                P(k_proj, "attn.cmp.k_proj.weight", dh, l * dh);
                P(v_proj, "attn.cmp.v_proj.weight", dh, l * dh);
            }
            if (c->cmp_fn == CMP_MLP) {
                P(k_out, "attn.cmp.k_out.weight", dh, dh);
                P(v_out, "attn.cmp.v_out.weight", dh, dh);
                P(k_pe, "attn.cmp.k_pe", l, dh);
                P(v_pe, "attn.cmp.v_pe", l, dh);
            }
            P(fc1_w, "attn.gate.fc1.weight", Dg, D);
            P(fc1_b, "attn.gate.fc1.bias", Dg, 0);
            P(fc2_w, "attn.gate.fc2.weight", 3 * H, Dg);
            P(fc2_b, "attn.gate.fc2.bias", 3 * H, 0);
        }
        P(mlp_norm, "mlp_norm.weight", D, 0);
        P(w1, "mlp.w1.weight", F, D);
        P(w3, "mlp.w3.weight", F, D);
        P(w2, "mlp.w2.weight", D, F);
#undef P
    }
    m->norm = add_param(b, "norm.weight", D, 0);
    m->lm_head = c->tie_embeddings ? m->tok_emb : add_param(b, "lm_head.weight", V, D);
}

void model_create(Model *m, const Config *cfg) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    Builder b = {m, 0, 1};
    build(&b);
    m->n_elems = b.offset;
    m->params = nsa_calloc((size_t)m->n_params, sizeof *m->params);
    m->data = nsa_calloc((size_t)m->n_elems, sizeof(float));
    m->n_params = 0;
    b = (Builder){m, 0, 0};
    build(&b);
    NSA_ASSERT(m->n_elems == config_n_params(cfg));  // the bound config_validate checked is this count
    m->rope = nsa_malloc((size_t)(cfg->seq_len * cfg->head_dim) * sizeof(float));
    rope_table(m->rope, cfg->seq_len, cfg->head_dim, cfg->rope_theta);
}

void model_free(Model *m) {
    free(m->params);
    free(m->data);
    free(m->grad);
    free(m->rope);
    free(m->q4k_data);
    memset(m, 0, sizeof *m);
}

void model_alloc_grads(Model *m) {
    if (m->grad) return;
    m->grad = nsa_calloc((size_t)m->n_elems, sizeof(float));
    for (int i = 0; i < m->n_params; i++) m->params[i].t.grad = m->grad + (m->params[i].t.data - m->data);
}

void model_zero_grads(Model *m) {
    if (m->grad) memset(m->grad, 0, (size_t)m->n_elems * sizeof(float));
}

Param *model_param(Model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

void model_init_params(Model *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    double resid = 0.02 / sqrt(2.0 * (double)m->cfg.n_layers);  // GPT-2 scaling of residual writes
    for (int i = 0; i < m->n_params; i++) {
        Param *p = &m->params[i];
        Tensor *t = &p->t;
        const char *nm = p->name;
        int64_t fan_out = t->shape[0], fan_in = t->ndim == 2 ? t->shape[1] : 1;
        double std = 0.02, bound = 0.0;  // bound > 0: uniform(±bound) instead of normal(0, std)
        if (ends_with(nm, "norm.weight")) {
            for (int64_t j = 0; j < t->size; j++) t->data[j] = 1.0f;
            continue;
        }
        if (strstr(nm, "gate.fc2")) {
            // DESIGN.md: xavier-uniform with gain 0.1, zero bias; never all zeros, or every
            // gate starts identical and the branches are indistinguishable.
            if (ends_with(nm, "bias")) continue;
            bound = 0.1 * sqrt(6.0 / (double)(fan_in + fan_out));
        } else if (strstr(nm, "gate.fc1")) {
            bound = 1.0 / sqrt((double)m->cfg.d_model);  // nn.Linear's default, bias included
        } else if (ends_with(nm, "k_proj.weight") || ends_with(nm, "v_proj.weight") ||
                   ends_with(nm, "k_out.weight") || ends_with(nm, "v_out.weight")) {
            std = 1.0 / sqrt((double)fan_in);  // keeps compressed keys at the scale of keys
        } else if (ends_with(nm, "attn.wo.weight") || ends_with(nm, "mlp.w2.weight")) {
            std = resid;
        }
        if (bound > 0) rng_fill_uniform(&r, t->data, t->size, bound);
        else rng_fill_normal(&r, t->data, t->size, std);
    }
}

// ---------------------------------------------------------------------------- forward

typedef struct {
    Model *m;
    int B, T, l, materialise;
    int recompute;  // checkpoint recompute: the layer's output values are not needed
    int32_t **sel;  // where this layer's selection goes (NULL: not kept)
    float **gate;   // where this layer's gate values go (NULL: not kept)
} LayerArgs;

static Tensor *compress(Graph *g, Tensor *x, Tensor *proj, Tensor *out, Tensor *pe, CmpFn fn,
                        const NsaShape *s) {
    if (fn == CMP_MEAN) return op_cmp_mean(g, x, s);
    Tensor *blocks = op_cmp_gather(g, x, pe, s);
    if (fn == CMP_LINEAR) return op_linear(g, blocks, proj, NULL);
    return op_linear(g, op_silu(g, op_linear(g, blocks, proj, NULL)), out, NULL);
}

static Tensor *nsa_attention(Graph *g, const LayerArgs *a, Tensor *xn, Tensor *q) {
    Model *m = a->m;
    Layer *L = &m->layers[a->l];
    const Config *c = &m->cfg;
    int B = a->B, T = a->T;
    int H = (int)c->n_heads, G = (int)c->n_kv_heads, dh = (int)c->head_dim;
    NsaShape s = {B, T, H, G, dh, (int)c->cmp_block, (int)c->cmp_stride, (int)c->slc_block,
                  (int)c->slc_topn, (int)c->window};
    Tensor *k[3], *v[3];
    for (int br = 0; br < 3; br++) {
        if (br > 0 && L->wk) {  // kv=shared: one projection for all three branches
            k[br] = k[0], v[br] = v[0];
            continue;
        }
        Tensor *wk = L->wk ? L->wk : L->br_wk[br], *wv = L->wv ? L->wv : L->br_wv[br];
        k[br] = op_rope(g, op_linear(g, xn, wk, NULL), m->rope, B, T, G, dh);
        v[br] = op_linear(g, xn, wv, NULL);
    }
    Tensor *kc = compress(g, k[0], L->k_proj, L->k_out, L->k_pe, c->cmp_fn, &s);
    Tensor *vc = compress(g, v[0], L->v_proj, L->v_out, L->v_pe, c->cmp_fn, &s);
    int32_t *idx;
    Tensor *o_cmp = op_cmp_attn(g, q, kc, vc, &s, &idx);
    if (a->sel) *a->sel = idx;
    Tensor *o_slc, *o_win;
    if (k[1] == k[2] && v[1] == v[2] && !a->materialise && nsa_slc_head_shared(&s)) {
        op_slc_window_attn(g, q, k[1], v[1], idx, &s, &o_slc, &o_win);
    } else {
        o_slc = op_slc_attn(g, q, k[1], v[1], idx, &s, a->materialise);
        o_win = op_attention(g, q, k[2], v[2], B, T, H, G, dh, (int)c->window);
    }
    Tensor *z = op_linear(g, op_silu(g, op_linear(g, xn, L->fc1_w, L->fc1_b)), L->fc2_w, L->fc2_b);
    if (a->gate) {
        *a->gate = arena_alloc(g->arena, (size_t)z->size * sizeof(float));
        gate_weights_forward(*a->gate, z->data, z->shape[0], H, c->gate_act);
    }
    return op_gate_combine(g, z, o_cmp, o_slc, o_win, H, dh, c->gate_act);
}

static Tensor *layer_forward(Graph *g, const LayerArgs *a, Tensor *x) {
    Model *m = a->m;
    const Config *c = &m->cfg;
    Layer *L = &m->layers[a->l];
    int B = a->B, T = a->T, H = (int)c->n_heads, G = (int)c->n_kv_heads, dh = (int)c->head_dim;
    g->layer = a->l;
    Tensor *xn = op_rmsnorm(g, x, L->attn_norm, (float)c->norm_eps);
    Tensor *q = op_rope(g, op_linear(g, xn, L->wq, NULL), m->rope, B, T, H, dh);
    Tensor *o;
    if (L->is_nsa) {
        o = nsa_attention(g, a, xn, q);
    } else {
        Tensor *k = op_rope(g, op_linear(g, xn, L->wk, NULL), m->rope, B, T, G, dh);
        Tensor *v = op_linear(g, xn, L->wv, NULL);
        o = op_attention(g, q, k, v, B, T, H, G, dh, 0);
    }
    x = op_add(g, x, op_linear(g, o, L->wo, NULL));
    Tensor *xm = op_rmsnorm(g, x, L->mlp_norm, (float)c->norm_eps);
    Tensor *hdn = op_swiglu(g, op_linear(g, xm, L->w1, NULL), op_linear(g, xm, L->w3, NULL));
    // In the checkpoint recompute nothing reads the layer's output (the next layer kept its
    // own input) and the backward of these two ops needs only their inputs: record them
    // without computing the last product (a quarter of the layer's linear FLOPs).
    g->skip_values = a->recompute;
    Tensor *y = op_add(g, x, op_linear(g, hdn, L->w2, NULL));
    g->skip_values = 0;
    return y;
}

// ---------------------------------------------------------------------------- checkpointing

typedef struct {
    LayerArgs a;
    Graph *scratch;
    AttnKeep *keep;  // the layer's attention results from its first forward
} CkptCtx;

// Recompute the layer on the scratch tape, then run that tape backward with the layer
// output's gradient. The recompute is the same sequence of kernels as the first forward
// (no RNG, no counters) except the attention kernels, whose results (output, log-sum-exp,
// selection) the first forward kept (Graph.keep): gradients are bit-identical to
// checkpoint=none.
static void layer_checkpoint_backward(Graph *g, Node *n) {
    CkptCtx *c = n->ctx;
    Graph *s = c->scratch;
    Tensor *x = n->in[0];
    tensor_grad(g, x);  // in the main arena: the scratch arena is reset below
    graph_reset(s);
    s->record = 1;
    s->watch = g->watch;
    LayerArgs a = c->a;
    a.recompute = 1;
    c->keep->mode = AKEEP_REPLAY, c->keep->cur = 0;
    s->keep = c->keep;
    Tensor *y = layer_forward(s, &a, x);
    s->keep = NULL;
    NSA_ASSERT(c->keep->cur == c->keep->n);
    y->grad = n->out->grad;
    graph_backward_range(s, 0);
    graph_reset(s);
}

static Tensor *layer_checkpointed(Graph *g, Graph *scratch, const LayerArgs *a, Tensor *x) {
    graph_reset(scratch);
    scratch->record = 0;
    scratch->watch = g->watch;
    // The attention results are kept (a few tensors of the size of the layer's input) so
    // that the recompute skips the attention kernels, half of a layer's forward time at
    // the default shapes: the checkpoint's step-time cost fell from ~1.33x to ~1.2x.
    AttnKeep *keep = arena_calloc(g->arena, sizeof *keep);
    keep->mode = AKEEP_SAVE, keep->arena = g->arena;
    scratch->keep = keep;
    Tensor *ys = layer_forward(scratch, a, x);
    scratch->keep = NULL;
    NSA_ASSERT(keep->n >= 1);  // every layer has an attention op: the recompute must replay
    Tensor *y = tensor_new(g, ys->ndim, ys->shape);
    memcpy(y->data, ys->data, (size_t)ys->size * sizeof(float));
    // The selection and gate values live in scratch memory: keep copies.
    const Config *cfg = &a->m->cfg;
    if (a->sel && *a->sel)
        *a->sel = arena_dup(g->arena, *a->sel, (size_t)a->B * a->T * cfg->n_kv_heads * cfg->slc_topn * sizeof(int32_t));
    if (a->gate && *a->gate)
        *a->gate = arena_dup(g->arena, *a->gate, (size_t)a->B * a->T * 3 * cfg->n_heads * sizeof(float));
    graph_reset(scratch);
    y->requires_grad = 1;
    g->layer = a->l;  // the node's backward (recompute + backward) belongs to this layer
    if (g->record) {
        Node *n = graph_push(g, "layer_checkpoint", layer_checkpoint_backward, y);
        n->in[0] = x;
        CkptCtx *c = arena_alloc(g->arena, sizeof *c);
        c->a = *a;
        c->a.sel = NULL;
        c->a.gate = NULL;
        c->scratch = scratch;
        c->keep = keep;
        n->ctx = c;
    }
    return y;
}

void model_forward(Model *m, Graph *g, const int32_t *tokens, const int32_t *targets, int B, int T,
                   const ForwardOpts *opt, Forward *out) {
    const Config *c = &m->cfg;
    NSA_ASSERT(T >= 1 && T <= c->seq_len);
    memset(out, 0, sizeof *out);
    g->layer = -1;
    Tensor *x = op_embedding(g, m->tok_emb, tokens, (int64_t)B * T);
    for (int l = 0; l < c->n_layers; l++) {
        LayerArgs a = {.m = m, .B = B, .T = T, .l = l, .materialise = opt->materialise,
                       .sel = opt->keep_selection ? &out->sel[l] : NULL,
                       .gate = opt->keep_gates ? &out->gate[l] : NULL};
        if (opt->checkpoint && g->record) x = layer_checkpointed(g, opt->scratch, &a, x);
        else x = layer_forward(g, &a, x);
    }
    g->layer = -1;
    Tensor *xn = op_rmsnorm(g, x, m->norm, (float)c->norm_eps);
    out->logits = op_linear(g, xn, m->lm_head, NULL);
    if (targets) out->loss = op_cross_entropy(g, out->logits, targets);
}
