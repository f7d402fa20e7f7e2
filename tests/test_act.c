// test_act.c: elementwise kernels (kernels/act.c) against double-precision loops, with
// backward accumulating into existing gradients and 1 vs 2 threads bit-identical.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/act.h"
#include "tests/kernel_ref.h"

#define N 1001  // odd: the two threads' halves differ in size

static double dsig(double x) { return 1.0 / (1.0 + exp(-x)); }

// Measured: forward <= 7.2e-8, backward <= 2.5e-7 of the scale (a libm expf, a division
// and a few products, each rounded once in float32); 2e-6 leaves ~10x.
#define TOL 2e-6

typedef struct {
    float *a, *b, *dy, *da0, *db0;
} Inputs;

static Inputs inputs(uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    Inputs in = {kref_randn(&r, N, 3.0f), kref_randn(&r, N, 1.0f), kref_randn(&r, N, 1.0f),
                 kref_randn(&r, N, 1.0f), kref_randn(&r, N, 1.0f)};
    return in;
}

static void free_inputs(Inputs *in) { free(in->a), free(in->b), free(in->dy), free(in->da0), free(in->db0); }

Test(act, silu) {
    Inputs in = inputs(1);
    float *y[2], *dx[2];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        y[run] = kref_zeros(N), dx[run] = kref_copy(in.da0, N);
        silu_forward(y[run], in.a, N);
        silu_backward(dx[run], in.dy, in.a, N);
    }
    double ry[N], rdx[N];
    for (int i = 0; i < N; i++) {
        double x = in.a[i], s = dsig(x);
        ry[i] = x * s;
        rdx[i] = in.da0[i] + in.dy[i] * (s + x * s * (1 - s));
    }
    double ey = kref_rel_err(y[0], ry, N), ed = kref_rel_err(dx[0], rdx, N);
    cr_log_info("silu: y %.2e dx %.2e", ey, ed);
    cr_expect(ey <= TOL && ed <= TOL, "y %g dx %g", ey, ed);
    cr_expect(memcmp(y[0], y[1], N * 4) == 0 && memcmp(dx[0], dx[1], N * 4) == 0, "1 vs 2 threads");
    for (int run = 0; run < 2; run++) free(y[run]), free(dx[run]);
    free_inputs(&in);
}

Test(act, swiglu) {
    Inputs in = inputs(2);
    float *y[2], *da[2], *db[2];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        y[run] = kref_zeros(N), da[run] = kref_copy(in.da0, N), db[run] = kref_copy(in.db0, N);
        swiglu_forward(y[run], in.a, in.b, N);
        swiglu_backward(da[run], db[run], 1, in.dy, in.a, in.b, N);
    }
    double ry[N], rda[N], rdb[N];
    for (int i = 0; i < N; i++) {
        double x = in.a[i], s = dsig(x);
        ry[i] = x * s * in.b[i];
        rda[i] = in.da0[i] + in.dy[i] * in.b[i] * (s + x * s * (1 - s));
        rdb[i] = in.db0[i] + in.dy[i] * x * s;
    }
    double e[3] = {kref_rel_err(y[0], ry, N), kref_rel_err(da[0], rda, N), kref_rel_err(db[0], rdb, N)};
    cr_log_info("swiglu: y %.2e da %.2e db %.2e", e[0], e[1], e[2]);
    cr_expect(e[0] <= TOL && e[1] <= TOL && e[2] <= TOL, "y %g da %g db %g", e[0], e[1], e[2]);
    cr_expect(memcmp(y[0], y[1], N * 4) == 0 && memcmp(da[0], da[1], N * 4) == 0 && memcmp(db[0], db[1], N * 4) == 0,
              "1 vs 2 threads");
    // Only one gradient wanted: the other pointer is NULL and da is unchanged by its absence.
    float *da1 = kref_copy(in.da0, N);
    swiglu_backward(da1, NULL, 1, in.dy, in.a, in.b, N);
    cr_expect(memcmp(da1, da[0], N * 4) == 0);
    // Fresh buffers (acc = 0, garbage there) get the bits of adding to zeros.
    float *za = kref_zeros(N), *zb = kref_zeros(N), *ga = kref_zeros(N), *gb = kref_zeros(N);
    for (int i = 0; i < N; i++) ga[i] = gb[i] = NAN;
    swiglu_backward(za, zb, 1, in.dy, in.a, in.b, N);
    swiglu_backward(ga, gb, 0, in.dy, in.a, in.b, N);
    cr_expect(memcmp(za, ga, N * 4) == 0 && memcmp(zb, gb, N * 4) == 0, "overwrite vs add to zeros");
    free(da1), free(za), free(zb), free(ga), free(gb);
    for (int run = 0; run < 2; run++) free(y[run]), free(da[run]), free(db[run]);
    free_inputs(&in);
}

Test(act, add) {
    Inputs in = inputs(3);
    float *y = kref_zeros(N), *da = kref_copy(in.da0, N), *db = kref_copy(in.db0, N);
    add_forward(y, in.a, in.b, N);
    add_backward(da, db, in.dy, N);
    // One float addition each: exactly the float sum (the naive loop is the reference).
    float *dxx = kref_copy(in.da0, N);
    add_backward(dxx, dxx, in.dy, N);  // y = x + x: both gradients in one buffer, dy added twice
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += y[i] != in.a[i] + in.b[i] || da[i] != in.da0[i] + in.dy[i] || db[i] != in.db0[i] + in.dy[i] ||
               dxx[i] != (in.da0[i] + in.dy[i]) + in.dy[i];
    cr_expect_eq(bad, 0, "%d elements differ from the float sums", bad);
    // The fresh form: a fresh buffer (garbage there) gets the bits of adding dy to zeros,
    // -0 included; a kept one accumulates; either may be alone.
    float *fa = kref_zeros(N), *fb = kref_copy(in.db0, N), *za = kref_zeros(N), *zb = kref_copy(in.db0, N);
    for (int i = 0; i < N; i++) fa[i] = NAN;
    float *dy0 = kref_copy(in.dy, N);
    dy0[0] = -0.0f, dy0[1] = 0.0f;
    add_backward(za, zb, dy0, N);
    add_backward_fresh(fa, 1, fb, 0, dy0, N);
    cr_expect(memcmp(fa, za, N * 4) == 0 && memcmp(fb, zb, N * 4) == 0, "fresh + kept vs zeros + add");
    for (int i = 0; i < N; i++) fa[i] = NAN;
    add_backward_fresh(NULL, 0, fa, 1, dy0, N);
    cr_expect(memcmp(fa, za, N * 4) == 0, "fresh alone");
    add_backward_fresh(fb, 0, NULL, 1, dy0, N);
    add_backward(zb, NULL, dy0, N);
    cr_expect(memcmp(fb, zb, N * 4) == 0, "kept alone");
    free(y), free(da), free(db), free(dxx), free(fa), free(fb), free(za), free(zb), free(dy0);
    free_inputs(&in);
}
