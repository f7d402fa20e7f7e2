// test_optim.c: the optimiser's parts against their formulas: the warmup + cosine
// schedule, one AdamW step (PyTorch's AdamW in double), and the global gradient norm
// (thread-count independent, NaN-aware).
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "train/optim.h"

Test(optim, lr_schedule_warmup_then_cosine) {
    Config c;
    config_defaults(&c);
    c.lr = 1e-3, c.min_lr = 1e-4, c.warmup = 10, c.steps = 110;
    cr_assert_float_eq(lr_at(&c, 1), 1e-4, 1e-15);
    cr_assert_float_eq(lr_at(&c, 5), 5e-4, 1e-15);
    cr_assert_float_eq(lr_at(&c, 10), 1e-3, 1e-15);
    cr_assert_float_eq(lr_at(&c, 60), 0.5 * (1e-3 + 1e-4), 1e-15);  // halfway down the cosine
    cr_assert_float_eq(lr_at(&c, 110), 1e-4, 1e-15);
    cr_assert_float_eq(lr_at(&c, 500), 1e-4, 1e-15);
    for (int64_t s = 11; s < 110; s++) cr_assert_leq(lr_at(&c, s + 1), lr_at(&c, s));
}

// One AdamW step against the formula in double (PyTorch's AdamW): decay only where
// Param.decay; float32 arithmetic, so within a few ulps of the terms.
Test(optim, adamw_matches_formula) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_validate(&c), NSA_OK);
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 3);
    model_alloc_grads(&m);
    Rng r;
    rng_seed(&r, 5);
    for (int64_t i = 0; i < m.n_elems; i++) m.grad[i] = (float)(0.01 * rng_normal(&r));
    AdamW o;
    adamw_init(&o, m.n_elems);
    for (int64_t i = 0; i < m.n_elems; i++) o.m[i] = (float)(0.001 * rng_normal(&r)), o.v[i] = (float)(1e-5 * rng_uniform(&r));
    size_t bytes = (size_t)m.n_elems * sizeof(float);
    float *w0 = malloc(bytes), *m0 = malloc(bytes), *v0 = malloc(bytes);
    memcpy(w0, m.data, bytes), memcpy(m0, o.m, bytes), memcpy(v0, o.v, bytes);
    int64_t step = 7;
    double lr = 2e-3;
    adamw_step(&o, &m, step, lr, &c);
    int decayed = 0, plain = 0;
    for (int i = 0; i < m.n_params; i++) {
        const Param *p = &m.params[i];
        if (p->decay) decayed++;
        else plain++;
        int64_t off = p->t.data - m.data;
        for (int64_t j = 0; j < p->t.size; j++) {
            int64_t k = off + j;
            double g = m.grad[k];
            double mm = c.beta1 * m0[k] + (1 - c.beta1) * g, vv = c.beta2 * v0[k] + (1 - c.beta2) * g * g;
            double mh = mm / (1 - pow(c.beta1, step)), vh = vv / (1 - pow(c.beta2, step));
            double upd = lr * mh / (sqrt(vh) + 1e-8);
            double w = w0[k] * (p->decay ? 1 - lr * c.weight_decay : 1.0) - upd;
            // float32 rounding (~6e-8 relative) of every term, and β·m and (1 − β)·g may
            // cancel: the bound is relative to the terms' magnitudes, not to the result's.
            double terms = fabs(w0[k]) + lr * (c.beta1 * fabs(m0[k]) + (1 - c.beta1) * fabs(g)) /
                                             (1 - pow(c.beta1, step)) / (sqrt(vh) + 1e-8);
            cr_assert_float_eq(m.data[k], w, 1e-6 * terms + 1e-12, "%s[%lld]: %g vs %g", p->name, (long long)j,
                               m.data[k], w);
        }
    }
    cr_assert(decayed > 0 && plain > 0, "both decayed (matrices) and plain (norms, biases) params exist");
    free(w0), free(m0), free(v0);
    adamw_free(&o);
    model_free(&m);
}

// The norm is a fixed-order sum: the same bits at 1 and 2 threads, and it sees a NaN.
Test(optim, grad_norm_is_thread_independent) {
    int64_t n = 300001;
    float *g = malloc((size_t)n * sizeof *g);
    Rng r;
    rng_seed(&r, 11);
    double ref = 0;
    for (int64_t i = 0; i < n; i++) g[i] = (float)rng_normal(&r), ref += (double)g[i] * g[i];
    cpu_set_threads(1);
    double a = grad_global_norm(g, n);
    cpu_set_threads(2);
    double b = grad_global_norm(g, n);
    cr_assert_eq(memcmp(&a, &b, sizeof a), 0);
    cr_assert_float_eq(a, sqrt(ref), 1e-9 * sqrt(ref));
    g[12345] = NAN;
    cr_assert(!isfinite(grad_global_norm(g, n)));
    free(g);
}
