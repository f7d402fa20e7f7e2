// test_ops.c: every op's float32 forward and backward against a float64 reference path:
// forward compared directly, gradients against central finite differences of the float64
// forward (h = 1e-5, truncation error ~1e-10, far below the float32 tolerance).
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "autograd/ops.h"
#include "kernels/rng.h"

#define MAX_IN 4

// float32 forward under test; args carry sizes (and token/target ids where an op has them).
typedef Tensor *(*RunFn)(Graph *g, Tensor **in, const int64_t *a);
// float64 reference forward.
typedef void (*RefFn)(double *out, double *const *in, const int64_t *a);

typedef struct {
    const char *name;
    int n_in;
    int64_t in_size[MAX_IN];
    int64_t out_size;
    RunFn run;
    RefFn ref;
    const int64_t *args;
    double scale;  // input magnitude
} OpCase;

static double ref_loss(const OpCase *c, double *const *in, const double *r, double *out) {
    c->ref(out, in, c->args);
    double L = 0;
    for (int64_t i = 0; i < c->out_size; i++) L += r[i] * out[i];
    return L;
}

// Tolerances: forward max|Δ|/max|ref| ≤ 1e-5 (float32 rounding through a few ops);
// gradients ≤ 1e-3 (the bound for float32 vs a float64 path).
static void check_op(const OpCase *c) {
    Rng rng;
    rng_seed(&rng, 42);
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    Tensor *in[MAX_IN];
    double *din[MAX_IN];
    for (int k = 0; k < c->n_in; k++) {
        in[k] = tensor_new(&g, 1, &c->in_size[k]);
        in[k]->requires_grad = 1;
        din[k] = malloc((size_t)c->in_size[k] * sizeof(double));
        for (int64_t i = 0; i < c->in_size[k]; i++) {
            in[k]->data[i] = (float)(c->scale * rng_normal(&rng));
            din[k][i] = in[k]->data[i];
        }
    }
    Tensor *out = c->run(&g, in, c->args);
    cr_assert_eq(out->size, c->out_size, "%s: output size %lld", c->name, (long long)out->size);
    double *r = malloc((size_t)c->out_size * sizeof(double));
    double *dout = malloc((size_t)c->out_size * sizeof(double));
    out->grad = arena_alloc(&arena, (size_t)out->size * sizeof(float));
    for (int64_t i = 0; i < c->out_size; i++) {
        out->grad[i] = (float)rng_normal(&rng);
        r[i] = out->grad[i];
    }
    graph_backward_range(&g, 0);

    ref_loss(c, din, r, dout);
    double fmx = 0, fdiff = 0;
    for (int64_t i = 0; i < c->out_size; i++) {
        fmx = fmax(fmx, fabs(dout[i]));
        fdiff = fmax(fdiff, fabs(dout[i] - out->data[i]));
    }
    cr_assert(fdiff <= 1e-5 * fmx + 1e-12, "%s forward: max|Δ| %.3g vs max|ref| %.3g", c->name, fdiff, fmx);

    const double h = 1e-5;
    for (int k = 0; k < c->n_in; k++) {
        double gmax = 0, gdiff = 0;
        for (int64_t i = 0; i < c->in_size[k]; i++) {
            double x0 = din[k][i];
            din[k][i] = x0 + h;
            double lp = ref_loss(c, din, r, dout);
            din[k][i] = x0 - h;
            double lm = ref_loss(c, din, r, dout);
            din[k][i] = x0;
            double fd = (lp - lm) / (2 * h);
            double an = in[k]->grad ? in[k]->grad[i] : 0.0;
            gmax = fmax(gmax, fabs(fd));
            gdiff = fmax(gdiff, fabs(fd - an));
        }
        cr_assert(gdiff <= 1e-3 * gmax + 1e-9, "%s grad of input %d: max|Δ| %.3g vs max|fd| %.3g", c->name, k,
                  gdiff, gmax);
        cr_assert(gmax > 0, "%s: input %d gets no gradient at all", c->name, k);
    }
    for (int k = 0; k < c->n_in; k++) free(din[k]);
    free(r);
    free(dout);
    graph_free(&g);
    arena_free(&arena);
}

// ---------------------------------------------------------------------------- linear

static Tensor *run_linear(Graph *g, Tensor **in, const int64_t *a) {
    int64_t N = a[0], I = a[1], O = a[2];
    Tensor *x = in[0], *w = in[1], *b = in[2];
    int64_t sx[2] = {N, I}, sw[2] = {O, I};
    x->ndim = w->ndim = 2;
    memcpy(x->shape, sx, sizeof sx), memcpy(w->shape, sw, sizeof sw);
    return op_linear(g, x, w, b);
}
static void ref_linear(double *y, double *const *in, const int64_t *a) {
    int64_t N = a[0], I = a[1], O = a[2];
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double s = in[2][o];
            for (int64_t i = 0; i < I; i++) s += in[0][n * I + i] * in[1][o * I + i];
            y[n * O + o] = s;
        }
}
Test(ops, linear) {
    static const int64_t a[] = {5, 7, 3};
    OpCase c = {"linear", 3, {35, 21, 3}, 15, run_linear, ref_linear, a, 1.0};
    check_op(&c);
}

// ---------------------------------------------------------------------------- embedding

static const int32_t emb_tok[] = {3, 1, 3, 0, 4, 3};
static Tensor *run_embedding(Graph *g, Tensor **in, const int64_t *a) {
    in[0]->ndim = 2, in[0]->shape[0] = a[0], in[0]->shape[1] = a[1];
    return op_embedding(g, in[0], emb_tok, 6);
}
static void ref_embedding(double *y, double *const *in, const int64_t *a) {
    for (int r = 0; r < 6; r++)
        for (int64_t j = 0; j < a[1]; j++) y[r * a[1] + j] = in[0][emb_tok[r] * a[1] + j];
}
Test(ops, embedding) {
    static const int64_t a[] = {5, 4};
    OpCase c = {"embedding", 1, {20}, 24, run_embedding, ref_embedding, a, 1.0};
    check_op(&c);
}

// ---------------------------------------------------------------------------- rmsnorm

static Tensor *run_rmsnorm(Graph *g, Tensor **in, const int64_t *a) {
    in[0]->ndim = 2, in[0]->shape[0] = a[0], in[0]->shape[1] = a[1];
    return op_rmsnorm(g, in[0], in[1], 1e-5f);
}
static void ref_rmsnorm(double *y, double *const *in, const int64_t *a) {
    for (int64_t r = 0; r < a[0]; r++) {
        double ss = 0;
        for (int64_t j = 0; j < a[1]; j++) ss += in[0][r * a[1] + j] * in[0][r * a[1] + j];
        double rs = 1.0 / sqrt(ss / (double)a[1] + 1e-5);
        for (int64_t j = 0; j < a[1]; j++) y[r * a[1] + j] = in[0][r * a[1] + j] * rs * in[1][j];
    }
}
Test(ops, rmsnorm) {
    static const int64_t a[] = {4, 8};
    OpCase c = {"rmsnorm", 2, {32, 8}, 32, run_rmsnorm, ref_rmsnorm, a, 1.0};
    check_op(&c);
}

// ---------------------------------------------------------------------------- rope

static float rope_cs[6 * 4 * 2];
static void rope_table(void) {
    for (int t = 0; t < 6; t++)
        for (int i = 0; i < 4; i++) {
            double ang = t * pow(10000.0, -2.0 * i / 8.0);
            rope_cs[(t * 4 + i) * 2] = (float)cos(ang), rope_cs[(t * 4 + i) * 2 + 1] = (float)sin(ang);
        }
}
static Tensor *run_rope(Graph *g, Tensor **in, const int64_t *a) {
    (void)a;
    rope_table();
    return op_rope(g, in[0], rope_cs, 2, 6, 3, 8);
}
static void ref_rope(double *y, double *const *in, const int64_t *a) {
    (void)a;
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 6; t++)
            for (int h = 0; h < 3; h++) {
                const double *x = in[0] + ((b * 6 + t) * 3 + h) * 8;
                double *o = y + ((b * 6 + t) * 3 + h) * 8;
                for (int i = 0; i < 4; i++) {
                    double ang = t * pow(10000.0, -2.0 * i / 8.0), c = cos(ang), s = sin(ang);
                    o[i] = x[i] * c - x[i + 4] * s;  // HF rotate_half pairing
                    o[i + 4] = x[i + 4] * c + x[i] * s;
                }
            }
}
Test(ops, rope) {
    OpCase c = {"rope", 1, {2 * 6 * 3 * 8}, 2 * 6 * 3 * 8, run_rope, ref_rope, NULL, 1.0};
    check_op(&c);
}

// ---------------------------------------------------------------------------- elementwise

static double dsilu(double x) { return x / (1 + exp(-x)); }
static Tensor *run_silu(Graph *g, Tensor **in, const int64_t *a) { (void)a; return op_silu(g, in[0]); }
static void ref_silu(double *y, double *const *in, const int64_t *a) {
    for (int64_t i = 0; i < a[0]; i++) y[i] = dsilu(in[0][i]);
}
static Tensor *run_add(Graph *g, Tensor **in, const int64_t *a) { (void)a; return op_add(g, in[0], in[1]); }
static void ref_add(double *y, double *const *in, const int64_t *a) {
    for (int64_t i = 0; i < a[0]; i++) y[i] = in[0][i] + in[1][i];
}
static Tensor *run_swiglu(Graph *g, Tensor **in, const int64_t *a) { (void)a; return op_swiglu(g, in[0], in[1]); }
static void ref_swiglu(double *y, double *const *in, const int64_t *a) {
    for (int64_t i = 0; i < a[0]; i++) y[i] = dsilu(in[0][i]) * in[1][i];
}
static const int64_t n17[] = {17};
Test(ops, silu) { OpCase c = {"silu", 1, {17}, 17, run_silu, ref_silu, n17, 2.0}; check_op(&c); }
Test(ops, add) { OpCase c = {"add", 2, {17, 17}, 17, run_add, ref_add, n17, 1.0}; check_op(&c); }
Test(ops, swiglu) { OpCase c = {"swiglu", 2, {17, 17}, 17, run_swiglu, ref_swiglu, n17, 2.0}; check_op(&c); }

// ---------------------------------------------------------------------------- cross-entropy

static const int32_t ce_tgt[] = {2, 0, 5, 5};
static Tensor *run_ce(Graph *g, Tensor **in, const int64_t *a) {
    in[0]->ndim = 2, in[0]->shape[0] = a[0], in[0]->shape[1] = a[1];
    return op_cross_entropy(g, in[0], ce_tgt);
}
static void ref_ce(double *y, double *const *in, const int64_t *a) {
    double tot = 0;
    for (int64_t r = 0; r < a[0]; r++) {
        const double *x = in[0] + r * a[1];
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < a[1]; j++) m = fmax(m, x[j]);
        for (int64_t j = 0; j < a[1]; j++) s += exp(x[j] - m);
        tot += m + log(s) - x[ce_tgt[r]];
    }
    y[0] = tot / (double)a[0];
}
Test(ops, cross_entropy) {
    static const int64_t a[] = {4, 6};
    OpCase c = {"cross_entropy", 1, {24}, 1, run_ce, ref_ce, a, 3.0};
    check_op(&c);
}

// ---------------------------------------------------------------------------- attention

// a = {B, T, H, G, Dh, window}
static Tensor *run_attn(Graph *g, Tensor **in, const int64_t *a) {
    return op_attention(g, in[0], in[1], in[2], a[0], a[1], a[2], a[3], a[4], (int)a[5]);
}
static void ref_attn(double *y, double *const *in, const int64_t *a) {
    int64_t B = a[0], T = a[1], H = a[2], G = a[3], D = a[4], w = a[5];
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t gk = h / (H / G);
                const double *q = in[0] + ((b * T + t) * H + h) * D;
                double sc[64], m = -INFINITY, z = 0;
                for (int64_t s = 0; s <= t; s++) {
                    sc[s] = -INFINITY;
                    if (w > 0 && s <= t - w) continue;
                    double d = 0;
                    for (int64_t e = 0; e < D; e++) d += q[e] * in[1][((b * T + s) * G + gk) * D + e];
                    sc[s] = d / sqrt((double)D);
                    m = fmax(m, sc[s]);
                }
                for (int64_t s = 0; s <= t; s++) z += sc[s] == -INFINITY ? 0 : exp(sc[s] - m);
                double *o = y + ((b * T + t) * H + h) * D;
                for (int64_t e = 0; e < D; e++) o[e] = 0;
                for (int64_t s = 0; s <= t; s++) {
                    if (sc[s] == -INFINITY) continue;
                    double p = exp(sc[s] - m) / z;
                    for (int64_t e = 0; e < D; e++) o[e] += p * in[2][((b * T + s) * G + gk) * D + e];
                }
            }
}
Test(ops, attention_causal_gqa) {
    static const int64_t a[] = {2, 7, 4, 2, 4, 0};
    OpCase c = {"attention", 3, {2 * 7 * 4 * 4, 2 * 7 * 2 * 4, 2 * 7 * 2 * 4}, 2 * 7 * 4 * 4, run_attn, ref_attn, a, 1.0};
    check_op(&c);
}
Test(ops, attention_window) {
    static const int64_t a[] = {1, 9, 2, 1, 4, 3};
    OpCase c = {"window_attention", 3, {9 * 2 * 4, 9 * 4, 9 * 4}, 9 * 2 * 4, run_attn, ref_attn, a, 1.0};
    check_op(&c);
}

// ---------------------------------------------------------------------------- gate

// a = {rows, H, Dh, GateAct}
static Tensor *run_gate(Graph *g, Tensor **in, const int64_t *a) {
    in[0]->ndim = 2, in[0]->shape[0] = a[0], in[0]->shape[1] = 3 * a[1];
    return op_gate_combine(g, in[0], in[1], in[2], in[3], a[1], a[2], (GateAct)a[3]);
}
static void ref_gate(double *y, double *const *in, const int64_t *a) {
    int64_t R = a[0], H = a[1], D = a[2];
    for (int64_t r = 0; r < R; r++)
        for (int64_t h = 0; h < H; h++) {
            double gw[3], z[3];
            for (int b = 0; b < 3; b++) z[b] = in[0][r * 3 * H + b * H + h];
            if (a[3] == GATE_SOFTMAX) {
                double m = fmax(z[0], fmax(z[1], z[2])), s = 0;
                for (int b = 0; b < 3; b++) s += exp(z[b] - m);
                for (int b = 0; b < 3; b++) gw[b] = exp(z[b] - m) / s;
            } else {
                for (int b = 0; b < 3; b++) gw[b] = 1 / (1 + exp(-z[b]));
            }
            for (int64_t e = 0; e < D; e++) {
                int64_t i = (r * H + h) * D + e;
                y[i] = gw[0] * in[1][i] + gw[1] * in[2][i] + gw[2] * in[3][i];
            }
        }
}
Test(ops, gate_sigmoid) {
    static const int64_t a[] = {3, 2, 4, GATE_SIGMOID};
    OpCase c = {"gate_combine", 4, {18, 24, 24, 24}, 24, run_gate, ref_gate, a, 1.0};
    check_op(&c);
}
Test(ops, gate_softmax) {
    static const int64_t a[] = {3, 2, 4, GATE_SOFTMAX};
    OpCase c = {"gate_combine", 4, {18, 24, 24, 24}, 24, run_gate, ref_gate, a, 1.0};
    check_op(&c);
}

// ---------------------------------------------------------------------------- NSA compression

static NsaShape cmp_shape = {2, 11, 2, 2, 3, 4, 2, 4, 2, 4};  // B T H G Dh l d l' n w
static Tensor *run_gather(Graph *g, Tensor **in, const int64_t *a) {
    (void)a;
    return op_cmp_gather(g, in[0], in[1], &cmp_shape);
}
static void ref_gather(double *y, double *const *in, const int64_t *a) {
    (void)a;
    const NsaShape *s = &cmp_shape;
    int nc = (s->T - s->cmp_block) / s->cmp_stride + 1;
    for (int b = 0; b < s->B; b++)
        for (int i = 0; i < nc; i++)
            for (int gk = 0; gk < s->G; gk++)
                for (int j = 0; j < s->cmp_block; j++)
                    for (int e = 0; e < s->Dh; e++)
                        y[(((int64_t)(b * nc + i) * s->G + gk) * s->cmp_block + j) * s->Dh + e] =
                            in[0][((b * s->T + i * s->cmp_stride + j) * s->G + gk) * s->Dh + e] + in[1][j * s->Dh + e];
}
Test(ops, cmp_gather) {
    // T = 11, l = 4, d = 2: Nc = 4 blocks overlapping by half; tokens 9, 10 in no block.
    OpCase c = {"cmp_gather", 2, {2 * 11 * 2 * 3, 4 * 3}, 2 * 4 * 2 * 4 * 3, run_gather, ref_gather, NULL, 1.0};
    check_op(&c);
}
static Tensor *run_mean(Graph *g, Tensor **in, const int64_t *a) {
    (void)a;
    return op_cmp_mean(g, in[0], &cmp_shape);
}
static void ref_mean(double *y, double *const *in, const int64_t *a) {
    (void)a;
    const NsaShape *s = &cmp_shape;
    int nc = (s->T - s->cmp_block) / s->cmp_stride + 1;
    for (int b = 0; b < s->B; b++)
        for (int i = 0; i < nc; i++)
            for (int gk = 0; gk < s->G; gk++)
                for (int e = 0; e < s->Dh; e++) {
                    double m = 0;
                    for (int j = 0; j < s->cmp_block; j++)
                        m += in[0][((b * s->T + i * s->cmp_stride + j) * s->G + gk) * s->Dh + e];
                    y[((b * nc + i) * s->G + gk) * s->Dh + e] = m / s->cmp_block;
                }
}
Test(ops, cmp_mean) {
    OpCase c = {"cmp_mean", 1, {2 * 11 * 2 * 3}, 2 * 4 * 2 * 3, run_mean, ref_mean, NULL, 1.0};
    check_op(&c);
}
