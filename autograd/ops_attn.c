// ops_attn.c: tape records of the attention ops: dense / window flash attention, the NSA
// branches (compression, compressed attention, selection, selected attention) and the gate.
// The kernels own the loops; these record what backward needs.
#include "autograd/ops.h"

#include "kernels/attention.h"
#include "kernels/common.h"
#include "kernels/nsa.h"

// ---------------------------------------------------------------------------- kept results

// An attention op's output [rows, cols], lse [nlse] and selection [nidx] (nidx = 0: none):
// under AKEEP_REPLAY the next kept entry (returns 1, nothing to compute), else fresh arena
// memory for the op to fill (returns 0; keep_put then saves it under AKEEP_SAVE).
static int keep_take(Graph *g, int64_t rows, int64_t cols, int64_t nlse, int64_t nidx, Tensor **o, float **lse,
                     int32_t **idx) {
    AttnKeep *k = g->keep;
    if (k && k->mode == AKEEP_REPLAY) {
        NSA_ASSERT(k->cur < k->n);
        const int i = k->cur++;
        NSA_ASSERT(k->e[i].no == rows * cols && k->e[i].nlse == nlse && k->e[i].nidx == nidx);
        const int64_t shape[2] = {rows, cols};
        *o = arena_alloc(g->arena, sizeof **o);
        **o = tensor_view(k->e[i].o, 2, shape);
        *lse = k->e[i].lse;
        if (idx) *idx = k->e[i].idx;
        return 1;
    }
    *o = tensor_new2(g, rows, cols);
    *lse = arena_alloc(g->arena, (size_t)nlse * sizeof(float));
    if (idx) *idx = arena_alloc(g->arena, (size_t)nidx * sizeof(int32_t));
    return 0;
}

static void keep_put(Graph *g, const Tensor *o, const float *lse, int64_t nlse, const int32_t *idx,
                     int64_t nidx) {
    AttnKeep *k = g->keep;
    if (!k || k->mode != AKEEP_SAVE) return;
    NSA_ASSERT(k->n < AKEEP_MAX);
    const int i = k->n++;
    k->e[i].o = arena_dup(k->arena, o->data, (size_t)o->size * sizeof(float));
    k->e[i].lse = arena_dup(k->arena, lse, (size_t)nlse * sizeof(float));
    k->e[i].idx = nidx ? arena_dup(k->arena, idx, (size_t)nidx * sizeof(int32_t)) : NULL;
    k->e[i].no = o->size, k->e[i].nlse = nlse, k->e[i].nidx = nidx;
}

// ---------------------------------------------------------------------------- dense / window

typedef struct {
    float *lse;
    int64_t B, T, H, G, dh;
    int window;
} AttnCtx;

static void attention_bwd(Graph *g, Node *n) {
    AttnCtx *c = n->ctx;
    Tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    float *dq = tensor_grad(g, q), *dk = tensor_grad(g, k), *dv = tensor_grad(g, v);
    // The kernel writes all three; route absent ones to scratch.
    if (!dq) dq = arena_calloc(g->arena, (size_t)q->size * sizeof(float));
    if (!dk) dk = arena_calloc(g->arena, (size_t)k->size * sizeof(float));
    if (!dv) dv = arena_calloc(g->arena, (size_t)v->size * sizeof(float));
    void *work = arena_alloc(g->arena, attn_backward_work_bytes((int)c->B, (int)c->T, (int)c->H, (int)c->G, (int)c->dh));
    attn_backward(dq, dk, dv, n->out->grad, q->data, k->data, v->data, n->out->data, c->lse, work,
                  (int)c->B, (int)c->T, (int)c->H, (int)c->G, (int)c->dh, c->window);
}

static void attention_record(Graph *g, Tensor *o, Tensor *q, Tensor *k, Tensor *v, AttnCtx *c) {
    o->requires_grad = q->requires_grad || k->requires_grad || v->requires_grad;
    if (g->record && o->requires_grad) {
        Node *n = graph_push(g, c->window > 0 ? "window_attention" : "attention", attention_bwd, o);
        n->in[0] = q, n->in[1] = k, n->in[2] = v;
        n->ctx = c;
    }
}

Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int64_t B, int64_t T, int64_t H,
                     int64_t G, int64_t dh, int window) {
    graph_set_op(g, window > 0 ? "window_attention" : "attention");
    NSA_ASSERT(q->size == B * T * H * dh && k->size == B * T * G * dh && v->size == k->size);
    Tensor *o;
    AttnCtx *c = arena_alloc(g->arena, sizeof *c);
    *c = (AttnCtx){NULL, B, T, H, G, dh, window};
    if (!keep_take(g, B * T, H * dh, B * T * H, 0, &o, &c->lse, NULL)) {
        attn_forward(o->data, c->lse, q->data, k->data, v->data, (int)B, (int)T, (int)H, (int)G, (int)dh,
                     window);
        keep_put(g, o, c->lse, B * T * H, NULL, 0);
    }
    attention_record(g, o, q, k, v, c);
    return o;
}

// ---------------------------------------------------------------------------- compression

static void cmp_gather_bwd(Graph *g, Node *n) {
    const NsaShape *s = n->ctx;
    float *dx = tensor_grad(g, n->in[0]);
    float *dpe = n->in[1] ? tensor_grad(g, n->in[1]) : NULL;
    if (!dx) dx = arena_calloc(g->arena, (size_t)n->in[0]->size * sizeof(float));
    nsa_cmp_gather_backward(dx, dpe, n->out->grad, s);
}

static NsaShape *save_shape(Graph *g, const NsaShape *s) {
    NsaShape *c = arena_alloc(g->arena, sizeof *c);
    *c = *s;
    return c;
}

Tensor *op_cmp_gather(Graph *g, Tensor *x, Tensor *pe, const NsaShape *s) {
    graph_set_op(g, "cmp_gather");
    int64_t nc = nsa_n_cmp(s);
    Tensor *y = tensor_new2(g, (int64_t)s->B * nc * s->G, (int64_t)s->cmp_block * s->Dh);
    nsa_cmp_gather_forward(y->data, x->data, pe ? pe->data : NULL, s);
    y->requires_grad = x->requires_grad || (pe && pe->requires_grad);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "cmp_gather", cmp_gather_bwd, y);
        n->in[0] = x, n->in[1] = pe;
        n->ctx = save_shape(g, s);
    }
    return y;
}

static void cmp_mean_bwd(Graph *g, Node *n) {
    float *dx = tensor_grad(g, n->in[0]);
    if (dx) nsa_cmp_mean_backward(dx, n->out->grad, n->ctx);
}

Tensor *op_cmp_mean(Graph *g, Tensor *x, const NsaShape *s) {
    graph_set_op(g, "cmp_mean");
    int64_t nc = nsa_n_cmp(s);
    Tensor *y = tensor_new2(g, (int64_t)s->B * nc * s->G, s->Dh);
    nsa_cmp_mean_forward(y->data, x->data, s);
    y->requires_grad = x->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "cmp_mean", cmp_mean_bwd, y);
        n->in[0] = x;
        n->ctx = save_shape(g, s);
    }
    return y;
}

// ---------------------------------------------------------------------------- compressed attention

typedef struct {
    NsaShape s;
    float *lse;
} NsaCtx;

static float *grad_or_scratch(Graph *g, Tensor *t) {
    float *d = tensor_grad(g, t);
    return d ? d : arena_calloc(g->arena, (size_t)t->size * sizeof(float));
}

static void cmp_attn_bwd(Graph *g, Node *n) {
    NsaCtx *c = n->ctx;
    Tensor *q = n->in[0], *kc = n->in[1], *vc = n->in[2];
    float *dq = grad_or_scratch(g, q), *dk = grad_or_scratch(g, kc), *dv = grad_or_scratch(g, vc);
    void *work = arena_alloc(g->arena, nsa_cmp_attn_backward_work_bytes(&c->s));
    nsa_cmp_attn_backward(dq, dk, dv, n->out->grad, q->data, kc->data, vc->data, n->out->data, c->lse,
                          work, &c->s);
}

Tensor *op_cmp_attn(Graph *g, Tensor *q, Tensor *kc, Tensor *vc, const NsaShape *s, int32_t **idx) {
    graph_set_op(g, "cmp_attention");
    Tensor *o;
    NsaCtx *c = arena_alloc(g->arena, sizeof *c);
    c->s = *s;
    const int64_t rows = (int64_t)s->B * s->T, nlse = rows * s->H, nidx = rows * s->G * s->slc_topn;
    if (!keep_take(g, rows, (int64_t)s->H * s->Dh, nlse, nidx, &o, &c->lse, idx)) {
        void *work = arena_alloc(g->arena, nsa_cmp_select_work_bytes(s));
        nsa_cmp_attn_select_forward(o->data, c->lse, *idx, q->data, kc->data, vc->data, work, s);
        keep_put(g, o, c->lse, nlse, *idx, nidx);
    }
    o->requires_grad = q->requires_grad || kc->requires_grad || vc->requires_grad;
    if (g->record && o->requires_grad) {
        Node *n = graph_push(g, "cmp_attention", cmp_attn_bwd, o);
        n->in[0] = q, n->in[1] = kc, n->in[2] = vc;
        n->ctx = c;
    }
    return o;
}

// ---------------------------------------------------------------------------- selected attention

typedef struct {
    NsaShape s;
    float *lse;
    const int32_t *idx;
    int materialise;
} SlcCtx;

static void slc_attn_bwd(Graph *g, Node *n) {
    SlcCtx *c = n->ctx;
    Tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    float *dq = grad_or_scratch(g, q), *dk = grad_or_scratch(g, k), *dv = grad_or_scratch(g, v);
    if (c->materialise) {
        void *work = arena_alloc(g->arena, nsa_slc_attn_ref_work_bytes(&c->s));
        nsa_slc_attn_backward_ref(dq, dk, dv, n->out->grad, q->data, k->data, v->data, n->out->data,
                                  c->lse, c->idx, work, &c->s);
    } else {
        void *work = arena_alloc(g->arena, nsa_slc_attn_backward_work_bytes(&c->s));
        nsa_slc_attn_backward(dq, dk, dv, n->out->grad, q->data, k->data, v->data, n->out->data,
                              c->lse, c->idx, work, &c->s);
    }
}

static void slc_attn_record(Graph *g, Tensor *o, Tensor *q, Tensor *k, Tensor *v, SlcCtx *c) {
    o->requires_grad = q->requires_grad || k->requires_grad || v->requires_grad;
    if (g->record && o->requires_grad) {
        Node *n = graph_push(g, "slc_attention", slc_attn_bwd, o);
        n->in[0] = q, n->in[1] = k, n->in[2] = v;
        n->ctx = c;
    }
}

Tensor *op_slc_attn(Graph *g, Tensor *q, Tensor *k, Tensor *v, const int32_t *idx, const NsaShape *s,
                    int materialise) {
    graph_set_op(g, "slc_attention");
    Tensor *o;
    SlcCtx *c = arena_alloc(g->arena, sizeof *c);
    c->s = *s;
    c->idx = idx;
    c->materialise = materialise;
    const int64_t rows = (int64_t)s->B * s->T, nlse = rows * s->H;
    if (!keep_take(g, rows, (int64_t)s->H * s->Dh, nlse, 0, &o, &c->lse, NULL)) {
        if (materialise) {
            void *work = arena_alloc(g->arena, nsa_slc_attn_ref_work_bytes(s));
            nsa_slc_attn_forward_ref(o->data, c->lse, q->data, k->data, v->data, idx, work, s);
        } else {
            nsa_slc_attn_forward(o->data, c->lse, q->data, k->data, v->data, idx, s);
        }
        keep_put(g, o, c->lse, nlse, NULL, 0);
    }
    slc_attn_record(g, o, q, k, v, c);
    return o;
}

void op_slc_window_attn(Graph *g, Tensor *q, Tensor *k, Tensor *v, const int32_t *idx, const NsaShape *s,
                        Tensor **o_slc, Tensor **o_win) {
    NSA_ASSERT(nsa_slc_head_shared(s));
    graph_set_op(g, "slc_attention");
    SlcCtx *cs = arena_alloc(g->arena, sizeof *cs);
    AttnCtx *cw = arena_alloc(g->arena, sizeof *cw);
    *cs = (SlcCtx){.s = *s, .idx = idx};
    *cw = (AttnCtx){NULL, s->B, s->T, s->H, s->G, s->Dh, s->window};
    const int64_t rows = (int64_t)s->B * s->T, cols = (int64_t)s->H * s->Dh, nlse = rows * s->H;
    // Kept in the order op_slc_attn and op_attention would keep them.
    const int kept = keep_take(g, rows, cols, nlse, 0, o_slc, &cs->lse, NULL);
    NSA_ASSERT(keep_take(g, rows, cols, nlse, 0, o_win, &cw->lse, NULL) == kept);
    if (!kept) {
        graph_set_op(g, "window_attention");
        attn_window_head_forward((*o_win)->data, cw->lse, (*o_slc)->data, cs->lse, q->data, k->data, v->data, s->B,
                                 s->T, s->H, s->G, s->Dh, s->window, s->slc_block);
        graph_set_op(g, "slc_attention");
        nsa_slc_attn_forward_head((*o_slc)->data, cs->lse, q->data, k->data, v->data, idx, s);
        keep_put(g, *o_slc, cs->lse, nlse, NULL, 0);
        keep_put(g, *o_win, cw->lse, nlse, NULL, 0);
    }
    slc_attn_record(g, *o_slc, q, k, v, cs);
    attention_record(g, *o_win, q, k, v, cw);
}

// ---------------------------------------------------------------------------- gate

static void gate_combine_bwd(Graph *g, Node *n) {
    Tensor *z = n->in[0], *oc = n->in[1], *os = n->in[2], *ow = n->in[3];
    // The branch outputs' gradients start here: written fresh rather than zeroed and added.
    int f[4];
    float *dz = tensor_grad_fresh(g, z, &f[0]), *doc = tensor_grad_fresh(g, oc, &f[1]);
    float *dos = tensor_grad_fresh(g, os, &f[2]), *dow = tensor_grad_fresh(g, ow, &f[3]);
    gate_backward(dz, doc, dos, dow, f[0] | f[1] << 1 | f[2] << 2 | f[3] << 3,
                  n->out->grad, z->data, oc->data, os->data, ow->data, z->shape[0], n->iarg[0], n->iarg[1],
                  (GateAct)n->iarg[2]);
}

Tensor *op_gate_combine(Graph *g, Tensor *z, Tensor *oc, Tensor *os, Tensor *ow, int64_t H,
                        int64_t dh, GateAct act) {
    graph_set_op(g, "gate_combine");
    int64_t rows = z->shape[0];
    NSA_ASSERT(z->shape[1] == 3 * H && oc->size == rows * H * dh);
    Tensor *y = tensor_new2(g, rows, H * dh);
    gate_forward(y->data, z->data, oc->data, os->data, ow->data, rows, H, dh, act);
    y->requires_grad = z->requires_grad || oc->requires_grad || os->requires_grad || ow->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "gate_combine", gate_combine_bwd, y);
        n->in[0] = z, n->in[1] = oc, n->in[2] = os, n->in[3] = ow;
        n->iarg[0] = H, n->iarg[1] = dh, n->iarg[2] = act;
    }
    return y;
}
