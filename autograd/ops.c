// ops.c: forward/backward pairs of the elementwise, normalisation, embedding, linear and
// loss ops. Attention ops live in ops_attn.c. Every backward accumulates into gradients.
// Row loops are split statically over threads, one writer per output row; reductions over
// rows (weight gradients) run in a fixed order, so results do not depend on thread count.
#include "autograd/ops.h"

#include <math.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/gemm.h"

static Tensor *like(Graph *g, const Tensor *x) { return tensor_new(g, x->ndim, x->shape); }

static int any_grad(const Tensor *a, const Tensor *b) {
    return a->requires_grad || (b && b->requires_grad);
}

// ---------------------------------------------------------------------------- linear

static void linear_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    int64_t in = w->shape[1], out = w->shape[0], rows = x->size / in;
    float *dx = tensor_grad(g, x), *dw = tensor_grad(g, w);
    if (dx) gemm_dx_acc(dx, y->grad, w->data, rows, in, out);
    if (dw) gemm_dw_acc(dw, y->grad, x->data, rows, in, out);
    float *db = b ? tensor_grad(g, b) : NULL;
    if (db)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++) db[j] += y->grad[r * out + j];
}

Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b) {
    graph_set_op(g, "linear");
    int64_t in = w->shape[1], out = w->shape[0];
    NSA_ASSERT(x->shape[x->ndim - 1] == in);
    int64_t rows = x->size / in;
    Tensor *y = tensor_new2(g, rows, out);
    gemm_xwt(y->data, x->data, w->data, rows, in, out);
    if (b)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++) y->data[r * out + j] += b->data[j];
    y->requires_grad = any_grad(x, w) || (b && b->requires_grad);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "linear", linear_backward, y);
        n->in[0] = x, n->in[1] = w, n->in[2] = b;
    }
    return y;
}

// ---------------------------------------------------------------------------- embedding

static void embedding_backward(Graph *g, Node *n) {
    Tensor *w = n->in[0], *y = n->out;
    const int32_t *tok = n->ctx;
    int64_t rows = n->iarg[0], d = w->shape[1];
    float *dw = tensor_grad(g, w);
    if (!dw) return;
    // Serial over rows: several rows may hit one token, and this fixes their order.
    for (int64_t r = 0; r < rows; r++) {
        float *dst = dw + (int64_t)tok[r] * d;
        const float *src = y->grad + r * d;
        for (int64_t j = 0; j < d; j++) dst[j] += src[j];
    }
}

Tensor *op_embedding(Graph *g, Tensor *w, const int32_t *tok, int64_t rows) {
    graph_set_op(g, "embedding");
    int64_t d = w->shape[1];
    Tensor *y = tensor_new2(g, rows, d);
    for (int64_t r = 0; r < rows; r++) {
        NSA_ASSERT(tok[r] >= 0 && tok[r] < w->shape[0]);
        memcpy(y->data + r * d, w->data + (int64_t)tok[r] * d, (size_t)d * sizeof(float));
    }
    y->requires_grad = w->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "embedding", embedding_backward, y);
        n->in[0] = w;
        int32_t *saved = arena_alloc(g->arena, (size_t)rows * sizeof *saved);
        memcpy(saved, tok, (size_t)rows * sizeof *saved);
        n->ctx = saved;
        n->iarg[0] = rows;
    }
    return y;
}

// ---------------------------------------------------------------------------- rmsnorm

static void rmsnorm_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *y = n->out;
    const float *rstd = n->ctx;
    int64_t d = w->size, rows = x->size / d;
    float *dx = tensor_grad(g, x), *dw = tensor_grad(g, w);
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x->data + r * d, *dy = y->grad + r * d;
            float dot = 0.0f;
            for (int64_t j = 0; j < d; j++) dot += dy[j] * w->data[j] * xr[j];
            float rs = rstd[r], c = rs * rs * dot / (float)d;
            for (int64_t j = 0; j < d; j++) dx[r * d + j] += rs * (dy[j] * w->data[j] - xr[j] * c);
        }
    }
    if (dw)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x->data + r * d, *dy = y->grad + r * d;
            for (int64_t j = 0; j < d; j++) dw[j] += dy[j] * xr[j] * rstd[r];
        }
}

Tensor *op_rmsnorm(Graph *g, Tensor *x, Tensor *w, float eps) {
    graph_set_op(g, "rmsnorm");
    int64_t d = w->size, rows = x->size / d;
    NSA_ASSERT(x->shape[x->ndim - 1] == d);
    Tensor *y = like(g, x);
    float *rstd = arena_alloc(g->arena, (size_t)rows * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x->data + r * d;
        float ss = 0.0f;
        for (int64_t j = 0; j < d; j++) ss += xr[j] * xr[j];
        float rs = 1.0f / sqrtf(ss / (float)d + eps);
        rstd[r] = rs;
        for (int64_t j = 0; j < d; j++) y->data[r * d + j] = xr[j] * rs * w->data[j];
    }
    y->requires_grad = any_grad(x, w);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "rmsnorm", rmsnorm_backward, y);
        n->in[0] = x, n->in[1] = w;
        n->ctx = rstd;
    }
    return y;
}

// ---------------------------------------------------------------------------- rope

// Half-split pairing (Hugging Face rotate_half): dims i and i + Dh/2 rotate together.
static void rope_apply(float *y, const float *x, const float *cs, int64_t B, int64_t T, int64_t nh,
                       int64_t dh, int inverse) {
    int64_t half = dh / 2;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < nh; h++) {
                const float *xr = x + ((b * T + t) * nh + h) * dh;
                float *yr = y + ((b * T + t) * nh + h) * dh;
                const float *c = cs + t * half * 2;
                for (int64_t i = 0; i < half; i++) {
                    float co = c[2 * i], si = inverse ? -c[2 * i + 1] : c[2 * i + 1];
                    float x1 = xr[i], x2 = xr[i + half];
                    yr[i] = x1 * co - x2 * si;
                    yr[i + half] = x2 * co + x1 * si;
                }
            }
}

static void rope_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0];
    float *dx = tensor_grad(g, x);
    if (!dx) return;
    int64_t B = n->iarg[0], T = n->iarg[1], nh = n->iarg[2], dh = n->iarg[3];
    // The rotation is orthogonal: its transpose is the rotation by the opposite angle.
    float *tmp = arena_alloc(g->arena, (size_t)x->size * sizeof(float));
    rope_apply(tmp, n->out->grad, n->ctx, B, T, nh, dh, 1);
    for (int64_t i = 0; i < x->size; i++) dx[i] += tmp[i];
}

Tensor *op_rope(Graph *g, Tensor *x, const float *cs, int64_t B, int64_t T, int64_t nh, int64_t dh) {
    graph_set_op(g, "rope");
    NSA_ASSERT(x->size == B * T * nh * dh && dh % 2 == 0);
    Tensor *y = like(g, x);
    rope_apply(y->data, x->data, cs, B, T, nh, dh, 0);
    y->requires_grad = x->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "rope", rope_backward, y);
        n->in[0] = x;
        n->ctx = (void *)cs;
        n->iarg[0] = B, n->iarg[1] = T, n->iarg[2] = nh, n->iarg[3] = dh;
    }
    return y;
}

// ---------------------------------------------------------------------------- elementwise

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void silu_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0];
    float *dx = tensor_grad(g, x);
    if (!dx) return;
    const float *dy = n->out->grad;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < x->size; i++) {
        float s = sigmoidf(x->data[i]);
        dx[i] += dy[i] * s * (1.0f + x->data[i] * (1.0f - s));
    }
}

Tensor *op_silu(Graph *g, Tensor *x) {
    graph_set_op(g, "silu");
    Tensor *y = like(g, x);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < x->size; i++) y->data[i] = x->data[i] * sigmoidf(x->data[i]);
    y->requires_grad = x->requires_grad;
    if (g->record && y->requires_grad) graph_push(g, "silu", silu_backward, y)->in[0] = x;
    return y;
}

static void add_backward(Graph *g, Node *n) {
    const float *dy = n->out->grad;
    for (int k = 0; k < 2; k++) {
        float *d = tensor_grad(g, n->in[k]);
        if (!d) continue;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n->out->size; i++) d[i] += dy[i];
    }
}

Tensor *op_add(Graph *g, Tensor *a, Tensor *b) {
    graph_set_op(g, "add");
    NSA_ASSERT(a->size == b->size);
    Tensor *y = like(g, a);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < a->size; i++) y->data[i] = a->data[i] + b->data[i];
    y->requires_grad = any_grad(a, b);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "add", add_backward, y);
        n->in[0] = a, n->in[1] = b;
    }
    return y;
}

static void mul_backward(Graph *g, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    const float *dy = n->out->grad;
    float *da = tensor_grad(g, a), *db = tensor_grad(g, b);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < a->size; i++) {
        if (da) da[i] += dy[i] * b->data[i];
        if (db) db[i] += dy[i] * a->data[i];
    }
}

Tensor *op_mul(Graph *g, Tensor *a, Tensor *b) {
    graph_set_op(g, "mul");
    NSA_ASSERT(a->size == b->size);
    Tensor *y = like(g, a);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < a->size; i++) y->data[i] = a->data[i] * b->data[i];
    y->requires_grad = any_grad(a, b);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "mul", mul_backward, y);
        n->in[0] = a, n->in[1] = b;
    }
    return y;
}

static void swiglu_backward(Graph *g, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    const float *dy = n->out->grad;
    float *da = tensor_grad(g, a), *db = tensor_grad(g, b);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < a->size; i++) {
        float x = a->data[i], s = sigmoidf(x);
        if (da) da[i] += dy[i] * b->data[i] * s * (1.0f + x * (1.0f - s));
        if (db) db[i] += dy[i] * x * s;
    }
}

Tensor *op_swiglu(Graph *g, Tensor *a, Tensor *b) {
    graph_set_op(g, "swiglu");
    NSA_ASSERT(a->size == b->size);
    Tensor *y = like(g, a);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < a->size; i++) {
        float x = a->data[i];
        y->data[i] = x * sigmoidf(x) * b->data[i];
    }
    y->requires_grad = any_grad(a, b);
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "swiglu", swiglu_backward, y);
        n->in[0] = a, n->in[1] = b;
    }
    return y;
}

// ---------------------------------------------------------------------------- cross-entropy

typedef struct {
    const int32_t *targets;
    float *lse;  // [N]
} CeCtx;

static void cross_entropy_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0];
    float *dx = tensor_grad(g, x);
    if (!dx) return;
    CeCtx *c = n->ctx;
    int64_t V = x->shape[1], rows = x->shape[0];
    float scale = n->out->grad[0] / (float)rows;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x->data + r * V;
        float *d = dx + r * V;
        for (int64_t j = 0; j < V; j++) d[j] += expf(xr[j] - c->lse[r]) * scale;
        d[c->targets[r]] -= scale;
    }
}

Tensor *op_cross_entropy(Graph *g, Tensor *x, const int32_t *targets) {
    graph_set_op(g, "cross_entropy");
    int64_t V = x->shape[1], rows = x->shape[0];
    CeCtx *c = arena_alloc(g->arena, sizeof *c);
    c->lse = arena_alloc(g->arena, (size_t)rows * sizeof(float));
    int32_t *tg = arena_alloc(g->arena, (size_t)rows * sizeof *tg);
    memcpy(tg, targets, (size_t)rows * sizeof *tg);
    c->targets = tg;
    float *row_loss = arena_alloc(g->arena, (size_t)rows * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x->data + r * V;
        float m = -INFINITY;
        for (int64_t j = 0; j < V; j++) m = xr[j] > m ? xr[j] : m;
        float s = 0.0f;
        for (int64_t j = 0; j < V; j++) s += expf(xr[j] - m);
        c->lse[r] = m + logf(s);
        row_loss[r] = c->lse[r] - xr[targets[r]];
    }
    double total = 0.0;  // serial, in row order: the loss is bit-reproducible
    for (int64_t r = 0; r < rows; r++) total += row_loss[r];
    int64_t one = 1;
    Tensor *y = tensor_new(g, 1, &one);
    y->data[0] = (float)(total / (double)rows);
    y->requires_grad = x->requires_grad;
    if (g->record && y->requires_grad) {
        Node *n = graph_push(g, "cross_entropy", cross_entropy_backward, y);
        n->in[0] = x;
        n->ctx = c;
    }
    return y;
}
