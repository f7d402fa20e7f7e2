// test_xent.c: softmax cross-entropy (kernels/xent.c) against a double loop: per-row
// log-sum-exp and loss, the mean, and the accumulating gradient; 1 vs 2 threads.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/xent.h"
#include "tests/kernel_ref.h"

enum { ROWS = 13, V = 50 };

Test(xent, matches_double_reference) {
    Rng r;
    rng_seed(&r, 5);
    float *x = kref_randn(&r, ROWS * V, 4.0f), *dx0 = kref_randn(&r, ROWS * V, 0.01f);
    int32_t tg[ROWS];
    for (int i = 0; i < ROWS; i++) tg[i] = (int32_t)rng_below(&r, V);
    const float dmean = 0.75f;  // the loss's incoming gradient
    float *loss[2], *lse[2], *dx[2], mean[2];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        loss[run] = kref_zeros(ROWS), lse[run] = kref_zeros(ROWS), dx[run] = kref_copy(dx0, ROWS * V);
        xent_forward(loss[run], lse[run], x, tg, ROWS, V);
        mean[run] = xent_mean(loss[run], ROWS);
        xent_backward(dx[run], x, lse[run], tg, dmean, ROWS, V);
    }
    double rl[ROWS], rlse[ROWS], rdx[ROWS * V], rmean = 0;
    for (int i = 0; i < ROWS; i++) {
        const float *xr = x + i * V;
        double m = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) m = fmax(m, xr[j]);
        for (int j = 0; j < V; j++) s += exp(xr[j] - m);
        rlse[i] = m + log(s);
        rl[i] = rlse[i] - xr[tg[i]];
        rmean += rl[i] / ROWS;
        for (int j = 0; j < V; j++)
            rdx[i * V + j] = dx0[i * V + j] + dmean / ROWS * (exp(xr[j] - rlse[i]) - (j == tg[i]));
    }
    double e[3] = {kref_rel_err(loss[0], rl, ROWS), kref_rel_err(lse[0], rlse, ROWS),
                   kref_rel_err(dx[0], rdx, ROWS * V)};
    double em = fabs(mean[0] - rmean) / rmean;
    cr_log_info("xent: loss %.2e lse %.2e mean %.2e dx %.2e", e[0], e[1], em, e[2]);
    // Float32 sum of 50 exps and a log: measured <= 6.2e-8 (loss, lse, mean) and <= 3.1e-7
    // (dx); 2e-6.
    cr_expect(e[0] <= 2e-6 && e[1] <= 2e-6 && em <= 2e-6 && e[2] <= 2e-6, "loss %g lse %g mean %g dx %g", e[0], e[1],
              em, e[2]);
    cr_expect(memcmp(loss[0], loss[1], ROWS * 4) == 0 && memcmp(dx[0], dx[1], ROWS * V * 4) == 0 &&
                  memcmp(&mean[0], &mean[1], 4) == 0,
              "1 vs 2 threads");
    // One row alone gives that row's bits.
    float l1, s1;
    xent_forward(&l1, &s1, x + 6 * V, tg + 6, 1, V);
    cr_expect(l1 == loss[0][6] && s1 == lse[0][6]);
    for (int run = 0; run < 2; run++) free(loss[run]), free(lse[run]), free(dx[run]);
    free(x), free(dx0);
}
