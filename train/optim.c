// optim.c: see optim.h.
#include "train/optim.h"

#include <math.h>
#include <string.h>

#include "kernels/common.h"

#define NORM_BLOCK 65536

void adamw_init(AdamW *o, int64_t n) {
    o->n = n;
    o->m = nsa_calloc((size_t)n, sizeof(float));
    o->v = nsa_calloc((size_t)n, sizeof(float));
}

void adamw_free(AdamW *o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

double lr_at(const Config *c, int64_t step) {
    if (c->warmup > 0 && step <= c->warmup) return c->lr * (double)step / (double)c->warmup;
    int64_t span = c->steps - c->warmup;
    if (span <= 0) return c->lr;
    double p = (double)(step - c->warmup) / (double)span;
    if (p > 1.0) p = 1.0;
    return c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(M_PI * p));
}

double grad_global_norm(const float *g, int64_t n) {
    int64_t nb = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    // Per-block partial sums may be computed by any thread; their sum runs in block order.
    double part[4096], *parts = nb <= 4096 ? part : nsa_malloc((size_t)nb * sizeof(double));
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * NORM_BLOCK, hi = lo + NORM_BLOCK < n ? lo + NORM_BLOCK : n;
        double s = 0.0;
        for (int64_t i = lo; i < hi; i++) s += (double)g[i] * (double)g[i];
        parts[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += parts[b];
    if (parts != part) free(parts);
    return sqrt(s);
}

void grad_scale(float *g, int64_t n, float s) {
    if (s == 1.0f) return;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) g[i] *= s;
}

int param_nonfinite(const Model *m, const float *base, int *count) {
    int last = -1, cnt = 0;
    for (int i = 0; i < m->n_params; i++) {
        const Tensor *t = &m->params[i].t;
        const float *x = base + (t->data - m->data);
        for (int64_t j = 0; j < t->size; j++)
            if (!isfinite(x[j])) {
                last = i, cnt++;
                break;
            }
    }
    if (count) *count = cnt;
    return last;
}

void adamw_step(AdamW *o, Model *m, int64_t step, double lr, const Config *c) {
    NSA_ASSERT(o->n == m->n_elems && step >= 1);
    // 1 − β in double first: (1 − 0.9f) in float is 2.4e-7 off.
    const float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = 1e-8f;
    const float omb1 = (float)(1.0 - c->beta1), omb2 = (float)(1.0 - c->beta2);
    const double bc1 = 1.0 - pow(c->beta1, (double)step), bc2 = 1.0 - pow(c->beta2, (double)step);
    const float step_size = (float)(lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = (float)(1.0 - lr * c->weight_decay);
#pragma omp parallel
    for (int p = 0; p < m->n_params; p++) {
        const Tensor *t = &m->params[p].t;
        int64_t off = t->data - m->data, n = t->size;
        float *w = m->data + off, *g = m->grad + off, *mm = o->m + off, *vv = o->v + off;
        float d = m->params[p].decay ? decay : 1.0f;
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i];
            mm[i] = b1 * mm[i] + omb1 * gi;
            vv[i] = b2 * vv[i] + omb2 * gi * gi;
            w[i] = w[i] * d - step_size * mm[i] / (sqrtf(vv[i]) * inv_sqrt_bc2 + eps);
        }
    }
}
