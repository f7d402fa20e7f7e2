// ops.c: tape records of the linear, embedding, normalisation, RoPE, elementwise and loss
// ops. Each forward calls its kernel and, when recording, saves what the kernel's backward
// needs; each backward calls that kernel with the gradients it wants (NULL: not wanted).
// The loops live in kernels/; attention ops are in ops_attn.c.
#include "autograd/ops.h"

#include <string.h>

#include "kernels/act.h"
#include "kernels/common.h"
#include "kernels/embed.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/xent.h"

static Tensor *like(Graph *g, const Tensor *x) { return tensor_new(g, x->ndim, x->shape); }

static int any_grad(const Tensor *a, const Tensor *b) {
    return a->requires_grad || (b && b->requires_grad);
}

// ---------------------------------------------------------------------------- linear

static void linear_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    int64_t in = w->shape[1], out = w->shape[0];
    int fresh;
    float *dx = tensor_grad_fresh(g, x, &fresh);
    linear_backward(dx, !fresh, tensor_grad(g, w), b ? tensor_grad(g, b) : NULL, n->out->grad, x->data, w->data,
                    x->size / in, in, out);
}

Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b) {
    graph_set_op(g, "linear");
    int64_t in = w->shape[1], out = w->shape[0];
    NSA_ASSERT(x->shape[x->ndim - 1] == in);
    int64_t rows = x->size / in;
    Tensor *y = tensor_new2(g, rows, out);
    if (g->skip_values) {
        // backward needs x, W and dy, never y
    } else if (w->q4k) {
        NSA_ASSERT(!w->requires_grad);
        linear_forward_q4k(y->data, x->data, w->q4k, b ? b->data : NULL, rows, in, out);
    } else {
        linear_forward(y->data, x->data, w->data, b ? b->data : NULL, rows, in, out);
    }
    y->requires_grad = any_grad(x, w) || (b && b->requires_grad);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "linear", linear_bwd, y);
        n->in[0] = x, n->in[1] = w, n->in[2] = b;
    }
    return y;
}

// ---------------------------------------------------------------------------- embedding

static void embedding_bwd(Graph *g, Node *n) {
    Tensor *w = n->in[0];
    float *dw = tensor_grad(g, w);
    if (dw) embed_backward(dw, n->out->grad, n->ctx, n->iarg[0], w->shape[1]);
}

Tensor *op_embedding(Graph *g, Tensor *w, const int32_t *tok, int64_t rows) {
    graph_set_op(g, "embedding");
    Tensor *y = tensor_new2(g, rows, w->shape[1]);
    if (w->q4k) embed_forward_q4k(y->data, w->q4k, tok, rows, w->shape[0], w->shape[1]);
    else embed_forward(y->data, w->data, tok, rows, w->shape[0], w->shape[1]);
    y->requires_grad = w->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "embedding", embedding_bwd, y);
        n->in[0] = w;
        int32_t *saved = arena_alloc(g->arena, (size_t)rows * sizeof *saved);
        memcpy(saved, tok, (size_t)rows * sizeof *saved);  // the caller's buffer may change
        n->ctx = saved;
        n->iarg[0] = rows;
    }
    return y;
}

// ---------------------------------------------------------------------------- rmsnorm

static void rmsnorm_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1];
    int64_t d = w->size;
    rmsnorm_backward(tensor_grad(g, x), tensor_grad(g, w), n->out->grad, x->data, w->data, n->ctx,
                     x->size / d, d);
}

Tensor *op_rmsnorm(Graph *g, Tensor *x, Tensor *w, float eps) {
    graph_set_op(g, "rmsnorm");
    int64_t d = w->size, rows = x->size / d;
    NSA_ASSERT(x->shape[x->ndim - 1] == d);
    Tensor *y = like(g, x);
    float *rstd = arena_alloc(g->arena, (size_t)rows * sizeof(float));
    rmsnorm_forward(y->data, rstd, x->data, w->data, rows, d, eps);
    y->requires_grad = any_grad(x, w);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "rmsnorm", rmsnorm_bwd, y);
        n->in[0] = x, n->in[1] = w;
        n->ctx = rstd;
    }
    return y;
}

// ---------------------------------------------------------------------------- rope

static void rope_bwd(Graph *g, Node *n) {
    float *dx = tensor_grad(g, n->in[0]);
    if (dx) rope_backward(dx, n->out->grad, n->ctx, n->iarg[0], n->iarg[1], n->iarg[2], n->iarg[3]);
}

Tensor *op_rope(Graph *g, Tensor *x, const float *cs, int64_t B, int64_t T, int64_t nh, int64_t dh) {
    graph_set_op(g, "rope");
    NSA_ASSERT(x->size == B * T * nh * dh && dh % 2 == 0);
    Tensor *y = like(g, x);
    rope_forward(y->data, x->data, cs, B, T, nh, dh);
    y->requires_grad = x->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "rope", rope_bwd, y);
        n->in[0] = x;
        n->ctx = (void *)cs;
        n->iarg[0] = B, n->iarg[1] = T, n->iarg[2] = nh, n->iarg[3] = dh;
    }
    return y;
}

// ---------------------------------------------------------------------------- elementwise

static void silu_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0];
    silu_backward(tensor_grad(g, x), n->out->grad, x->data, x->size);
}

Tensor *op_silu(Graph *g, Tensor *x) {
    graph_set_op(g, "silu");
    Tensor *y = like(g, x);
    silu_forward(y->data, x->data, x->size);
    y->requires_grad = x->requires_grad;
    if (g->record && y->requires_grad) graph_push(g, "silu", silu_bwd, y)->in[0] = x;
    return y;
}

// The binary ops record the same way: inputs a, b of equal size.
static Tensor *binary(Graph *g, const char *op, BackwardFn bwd, Tensor *a, Tensor *b) {
    NSA_ASSERT(a->size == b->size);
    Tensor *y = like(g, a);
    y->requires_grad = any_grad(a, b);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, op, bwd, y);
        n->in[0] = a, n->in[1] = b;
    }
    return y;
}

static void add_bwd(Graph *g, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    if (a == b) {  // y = x + x: one buffer receives dy twice
        add_backward(tensor_grad(g, a), tensor_grad(g, a), n->out->grad, n->out->size);
        return;
    }
    // The residual stream's adds meet both gradients first: writing them saves zeroing them.
    int fa, fb;
    float *da = tensor_grad_fresh(g, a, &fa), *db = tensor_grad_fresh(g, b, &fb);
    add_backward_fresh(da, fa, db, fb, n->out->grad, n->out->size);
}

Tensor *op_add(Graph *g, Tensor *a, Tensor *b) {
    graph_set_op(g, "add");
    Tensor *y = binary(g, "add", add_bwd, a, b);
    if (!g->skip_values) add_forward(y->data, a->data, b->data, a->size);
    return y;
}

static void swiglu_bwd(Graph *g, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    if (a == b) {  // one buffer receives both terms: accumulate
        float *d = tensor_grad(g, a);
        swiglu_backward(d, d, 1, n->out->grad, a->data, b->data, a->size);
        return;
    }
    int fa, fb;
    float *da = tensor_grad_fresh(g, a, &fa), *db = tensor_grad_fresh(g, b, &fb);
    // Mixed freshness (one gradient already partly summed): zero the fresh one and add to both.
    if (da && db && fa != fb) {
        if (fa) memset(da, 0, (size_t)a->size * sizeof(float));
        if (fb) memset(db, 0, (size_t)b->size * sizeof(float));
        fa = fb = 0;
    }
    swiglu_backward(da, db, !(da ? fa : fb), n->out->grad, a->data, b->data, a->size);
}

Tensor *op_swiglu(Graph *g, Tensor *a, Tensor *b) {
    graph_set_op(g, "swiglu");
    Tensor *y = binary(g, "swiglu", swiglu_bwd, a, b);
    swiglu_forward(y->data, a->data, b->data, a->size);
    return y;
}

// ---------------------------------------------------------------------------- cross-entropy

typedef struct {
    const int32_t *targets;
    float *lse;  // [N]
} CeCtx;

static void cross_entropy_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0];
    float *dx = tensor_grad(g, x);
    CeCtx *c = n->ctx;
    if (dx) xent_backward(dx, x->data, c->lse, c->targets, n->out->grad[0], x->shape[0], x->shape[1]);
}

Tensor *op_cross_entropy(Graph *g, Tensor *x, const int32_t *targets) {
    graph_set_op(g, "cross_entropy");
    int64_t V = x->shape[1], rows = x->shape[0];
    CeCtx *c = arena_alloc(g->arena, sizeof *c);
    c->lse = arena_alloc(g->arena, (size_t)rows * sizeof(float));
    int32_t *tg = arena_alloc(g->arena, (size_t)rows * sizeof *tg);
    memcpy(tg, targets, (size_t)rows * sizeof *tg);  // the caller's buffer may change
    c->targets = tg;
    float *row_loss = arena_alloc(g->arena, (size_t)rows * sizeof(float));
    xent_forward(row_loss, c->lse, x->data, targets, rows, V);
    int64_t one = 1;
    Tensor *y = tensor_new(g, 1, &one);
    y->data[0] = xent_mean(row_loss, rows);
    y->requires_grad = x->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "cross_entropy", cross_entropy_bwd, y);
        n->in[0] = x;
        n->ctx = c;
    }
    return y;
}
