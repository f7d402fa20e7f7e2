// graph.c: tensor allocation and the tape. See graph.h.
#include "autograd/graph.h"

#include <string.h>

#include "kernels/common.h"

void graph_init(Graph *g, Arena *arena) {
    memset(g, 0, sizeof *g);
    g->arena = arena;
    g->record = 1;
    g->layer = -1;
}

void graph_free(Graph *g) {
    free(g->nodes);
    g->nodes = NULL;
    g->n_nodes = g->cap_nodes = 0;
}

void graph_reset(Graph *g) {
    g->n_nodes = 0;
    g->layer = -1;
    arena_reset(g->arena);
}

static void set_shape(Tensor *t, int ndim, const int64_t *shape) {
    NSA_ASSERT(ndim >= 1 && ndim <= TENSOR_MAX_DIM);
    t->ndim = ndim;
    int64_t n = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        n *= shape[i];
    }
    t->size = n;
}

Tensor *tensor_new(Graph *g, int ndim, const int64_t *shape) {
    Tensor *t = arena_alloc(g->arena, sizeof *t);
    memset(t, 0, sizeof *t);
    set_shape(t, ndim, shape);
    t->data = arena_alloc(g->arena, (size_t)t->size * sizeof(float));
    return t;
}

Tensor *tensor_new2(Graph *g, int64_t d0, int64_t d1) {
    int64_t s[2] = {d0, d1};
    return tensor_new(g, 2, s);
}

Tensor tensor_view(float *data, int ndim, const int64_t *shape) {
    Tensor t;
    memset(&t, 0, sizeof t);
    set_shape(&t, ndim, shape);
    t.data = data;
    return t;
}

float *tensor_grad(Graph *g, Tensor *t) {
    if (!t->requires_grad) return NULL;
    if (!t->grad) t->grad = arena_calloc(g->arena, (size_t)t->size * sizeof(float));
    return t->grad;
}

float *tensor_grad_fresh(Graph *g, Tensor *t, int *fresh) {
    *fresh = 0;
    if (!t->requires_grad) return NULL;
    if (!t->grad) t->grad = arena_alloc(g->arena, (size_t)t->size * sizeof(float)), *fresh = 1;
    return t->grad;
}

Node *graph_push(Graph *g, const char *op, BackwardFn fn, Tensor *out) {
    if (g->n_nodes == g->cap_nodes) {
        g->cap_nodes = g->cap_nodes ? 2 * g->cap_nodes : 256;
        g->nodes = realloc(g->nodes, (size_t)g->cap_nodes * sizeof *g->nodes);
        NSA_ASSERT(g->nodes);
        g->n_node_reallocs++;
    }
    Node *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->backward = fn;
    n->op = op;
    n->layer = g->layer;
    n->out = out;
    return n;
}

void graph_set_op(Graph *g, const char *op) {
    Watch *w = g->watch;
    if (!w) return;
    // The deadline is per (phase, layer): entering another layer restarts the clock.
    // The start is written before the layer, so the watchdog never pairs the new layer
    // with the old start.
    if (w->layer != g->layer) {
        w->phase_start = nsa_now();
        w->layer = g->layer;
    }
    w->op = op;
    // The planted hang of the hangcheck test: spin here, as a stuck kernel would.
    if (w->spin_op && w->spin_op_layer == g->layer && strcmp(w->spin_op, op) == 0)
        for (;;) __asm__ volatile("" ::: "memory");
}

void graph_backward_range(Graph *g, int from) {
    for (int i = g->n_nodes - 1; i >= from; i--) {
        Node *n = &g->nodes[i];
        if (!n->out->grad) continue;  // nothing flowed back to this node
        if (g->watch) {
            int saved = g->layer;
            g->layer = n->layer;
            graph_set_op(g, n->op);
            g->layer = saved;
        }
        n->backward(g, n);
    }
}

void graph_backward(Graph *g, Tensor *loss) {
    NSA_ASSERT(loss->size == 1);
    tensor_grad(g, loss)[0] = 1.0f;
    graph_backward_range(g, 0);
}
