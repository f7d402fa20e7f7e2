// test_norm.c: RMSNorm kernels (kernels/norm.c) against a double-precision loop, backward
// accumulation, rows independent of each other, and 1 vs 2 threads bit-identical.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/norm.h"
#include "tests/kernel_ref.h"

#define ROWS 9
#define D 150  // past 16-float lanes with a remainder; dW in three column blocks (64, 64, 22)

Test(norm, rmsnorm_matches_double_reference) {
    const float eps = 1e-5f;
    Rng r;
    rng_seed(&r, 1);
    float *x = kref_randn(&r, ROWS * D, 2.0f), *w = kref_randn(&r, D, 1.0f), *dy = kref_randn(&r, ROWS * D, 1.0f);
    float *dx0 = kref_randn(&r, ROWS * D, 1.0f), *dw0 = kref_randn(&r, D, 1.0f);  // backward adds to these
    float *y[2], *rstd[2], *dx[2], *dw[2];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        y[run] = kref_zeros(ROWS * D), rstd[run] = kref_zeros(ROWS);
        dx[run] = kref_copy(dx0, ROWS * D), dw[run] = kref_copy(dw0, D);
        rmsnorm_forward(y[run], rstd[run], x, w, ROWS, D, eps);
        rmsnorm_backward(dx[run], dw[run], dy, x, w, rstd[run], ROWS, D);
    }
    double *ry = kref_dzeros(ROWS * D), *rrs = kref_dzeros(ROWS), *rdx = kref_dzeros(ROWS * D), *rdw = kref_dzeros(D);
    for (int j = 0; j < D; j++) rdw[j] = dw0[j];
    for (int i = 0; i < ROWS; i++) {
        const float *xr = x + i * D, *dyr = dy + i * D;
        double ss = 0, dot = 0;
        for (int j = 0; j < D; j++) ss += (double)xr[j] * xr[j], dot += (double)dyr[j] * w[j] * xr[j];
        double rs = 1.0 / sqrt(ss / D + eps);
        rrs[i] = rs;
        for (int j = 0; j < D; j++) {
            ry[i * D + j] = xr[j] * rs * w[j];
            // d/dx of x·rs·w: rs·(dy·w) − x·rs³·mean(dy·w·x)
            rdx[i * D + j] = dx0[i * D + j] + rs * dyr[j] * w[j] - xr[j] * rs * rs * rs * dot / D;
            rdw[j] += (double)dyr[j] * xr[j] * rs;
        }
    }
    double e[4] = {kref_rel_err(y[0], ry, ROWS * D), kref_rel_err(rstd[0], rrs, ROWS),
                   kref_rel_err(dx[0], rdx, ROWS * D), kref_rel_err(dw[0], rdw, D)};
    cr_log_info("rmsnorm: y %.2e rstd %.2e dx %.2e dw %.2e", e[0], e[1], e[2], e[3]);
    // float32 sums of 40 terms and a few products: measured <= 1.4e-7; 2e-6.
    for (int k = 0; k < 4; k++) cr_expect(e[k] <= 2e-6, "output %d: rel err %g", k, e[k]);
    cr_expect(memcmp(y[0], y[1], ROWS * D * 4) == 0 && memcmp(dx[0], dx[1], ROWS * D * 4) == 0 &&
                  memcmp(dw[0], dw[1], D * 4) == 0,
              "rmsnorm differs between 1 and 2 threads");
    // One row alone (a decode step) gives that row's bits of the batched call.
    float y1[D], rs1, dx1[D];
    memcpy(dx1, dx0 + 4 * D, sizeof dx1);
    rmsnorm_forward(y1, &rs1, x + 4 * D, w, 1, D, eps);
    rmsnorm_backward(dx1, NULL, dy + 4 * D, x + 4 * D, w, &rs1, 1, D);
    cr_expect(memcmp(y1, y[0] + 4 * D, sizeof y1) == 0 && memcmp(dx1, dx[0] + 4 * D, sizeof dx1) == 0);
    for (int run = 0; run < 2; run++) free(y[run]), free(rstd[run]), free(dx[run]), free(dw[run]);
    free(x), free(w), free(dy), free(dx0), free(dw0), free(ry), free(rrs), free(rdx), free(rdw);
}
