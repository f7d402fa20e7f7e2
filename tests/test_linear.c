// test_linear.c: the linear layer (kernels/linear.c over gemm.c) against a double loop:
// y = x Wᵀ + b and its three gradients, accumulating; 1 vs 2 threads bit-identical.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/linear.h"
#include "tests/kernel_ref.h"

static void check_linear(int ROWS, int IN, int OUT) {
    Rng r;
    rng_seed(&r, 3);
    float *x = kref_randn(&r, ROWS * IN, 1.0f), *w = kref_randn(&r, OUT * IN, 1.0f), *b = kref_randn(&r, OUT, 1.0f);
    float *dy = kref_randn(&r, ROWS * OUT, 1.0f), *dx0 = kref_randn(&r, ROWS * IN, 1.0f);
    float *dw0 = kref_randn(&r, OUT * IN, 1.0f), *db0 = kref_randn(&r, OUT, 1.0f);
    float *y[2], *dx[2], *dw[2], *db[2];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        y[run] = kref_zeros(ROWS * OUT), dx[run] = kref_copy(dx0, ROWS * IN);
        dw[run] = kref_copy(dw0, OUT * IN), db[run] = kref_copy(db0, OUT);
        linear_forward(y[run], x, w, b, ROWS, IN, OUT);
        linear_backward(dx[run], 1, dw[run], db[run], dy, x, w, ROWS, IN, OUT);
    }
    double *ry = kref_dzeros(ROWS * OUT), *rdx = kref_dzeros(ROWS * IN), *rdw = kref_dzeros(OUT * IN);
    double *rdb = kref_dzeros(OUT);
    for (int i = 0; i < ROWS * IN; i++) rdx[i] = dx0[i];
    for (int i = 0; i < OUT * IN; i++) rdw[i] = dw0[i];
    for (int o = 0; o < OUT; o++) rdb[o] = db0[o];
    for (int n = 0; n < ROWS; n++)
        for (int o = 0; o < OUT; o++) {
            double s = b[o];
            for (int i = 0; i < IN; i++) {
                s += (double)x[n * IN + i] * w[o * IN + i];
                rdx[n * IN + i] += (double)dy[n * OUT + o] * w[o * IN + i];
                rdw[o * IN + i] += (double)dy[n * OUT + o] * x[n * IN + i];
            }
            ry[n * OUT + o] = s;
            rdb[o] += dy[n * OUT + o];
        }
    double e[4] = {kref_rel_err(y[0], ry, ROWS * OUT), kref_rel_err(dx[0], rdx, ROWS * IN),
                   kref_rel_err(dw[0], rdw, OUT * IN), kref_rel_err(db[0], rdb, OUT)};
    cr_log_info("linear %dx%dx%d: y %.2e dx %.2e dw %.2e db %.2e", ROWS, IN, OUT, e[0], e[1], e[2], e[3]);
    // float32 dot products of up to 1100 terms: measured <= 5e-7 of the scale; 1e-5.
    for (int k = 0; k < 4; k++) cr_expect(e[k] <= 1e-5, "output %d: rel err %g", k, e[k]);
    cr_expect(memcmp(y[0], y[1], ROWS * OUT * 4) == 0 && memcmp(dx[0], dx[1], ROWS * IN * 4) == 0 &&
                  memcmp(dw[0], dw[1], OUT * IN * 4) == 0 && memcmp(db[0], db[1], OUT * 4) == 0,
              "linear differs between 1 and 2 threads");
    // dx into a fresh buffer (dx_acc = 0, garbage there): the bits of adding to zeros.
    float *dxz = kref_zeros(ROWS * IN), *dxg = kref_zeros(ROWS * IN);
    for (int i = 0; i < ROWS * IN; i++) dxg[i] = NAN;
    linear_backward(dxz, 1, NULL, NULL, dy, x, w, ROWS, IN, OUT);
    linear_backward(dxg, 0, NULL, NULL, dy, x, w, ROWS, IN, OUT);
    cr_expect(memcmp(dxz, dxg, ROWS * IN * 4) == 0, "overwriting dx differs from adding to zeros");
    free(dxz), free(dxg);
    // No bias: the product alone.
    float *y0 = kref_zeros(ROWS * OUT);
    linear_forward(y0, x, w, NULL, ROWS, IN, OUT);
    for (int n = 0; n < ROWS * OUT; n++) ry[n] -= b[n % OUT];
    cr_expect(kref_rel_err(y0, ry, ROWS * OUT) <= 1e-5);
    free(y0), free(x), free(w), free(b), free(dy), free(dx0), free(dw0), free(db0);
    free(ry), free(rdx), free(rdw), free(rdb);
    for (int run = 0; run < 2; run++) free(y[run]), free(dx[run]), free(dw[run]), free(db[run]);
}

Test(linear, matches_double_reference) {
    // Rows past two 512-row gemm chunks and a ragged last chunk, on both sides of the
    // product; dW wider than tall, cut into rows (48 and a ragged 22 at OUT = 70).
    check_linear(1100, 37, 70);
    // dW taller than wide (OUT < IN), cut into columns (48 and a ragged 42 at IN = 90).
    check_linear(600, 90, 20);
}
