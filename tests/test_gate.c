// test_gate.c: the NSA gate (kernels/gate.c), sigmoid and softmax, against a double loop:
// gate values, the branch mix and its gradients (accumulating); 1 vs 2 threads.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/gate.h"
#include "tests/kernel_ref.h"

enum { ROWS = 11, H = 3, DH = 8, NZ = ROWS * 3 * H, NO = ROWS * H * DH };

static void ref_weights(double gw[3], const float *zr, int h, GateAct act) {
    double z[3] = {zr[h], zr[H + h], zr[2 * H + h]};
    if (act == GATE_SOFTMAX) {
        double m = fmax(z[0], fmax(z[1], z[2])), s = 0;
        for (int b = 0; b < 3; b++) s += exp(z[b] - m);
        for (int b = 0; b < 3; b++) gw[b] = exp(z[b] - m) / s;
    } else {
        for (int b = 0; b < 3; b++) gw[b] = 1 / (1 + exp(-z[b]));
    }
}

static void check(GateAct act, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *z = kref_randn(&r, NZ, 2.0f), *o[3], *dy = kref_randn(&r, NO, 1.0f), *dz0 = kref_randn(&r, NZ, 1.0f);
    float *do0[3];
    for (int b = 0; b < 3; b++) o[b] = kref_randn(&r, NO, 1.0f), do0[b] = kref_randn(&r, NO, 1.0f);
    float *gw[2], *y[2], *dz[2], *dO[2][3];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        gw[run] = kref_zeros(NZ), y[run] = kref_zeros(NO), dz[run] = kref_copy(dz0, NZ);
        for (int b = 0; b < 3; b++) dO[run][b] = kref_copy(do0[b], NO);
        gate_weights_forward(gw[run], z, ROWS, H, act);
        gate_forward(y[run], z, o[0], o[1], o[2], ROWS, H, DH, act);
        gate_backward(dz[run], dO[run][0], dO[run][1], dO[run][2], 0, dy, z, o[0], o[1], o[2], ROWS, H, DH, act);
    }
    double *rgw = kref_dzeros(NZ), *ry = kref_dzeros(NO), *rdz = kref_dzeros(NZ), *rdo[3];
    for (int b = 0; b < 3; b++) rdo[b] = kref_dzeros(NO);
    for (int i = 0; i < NZ; i++) rdz[i] = dz0[i];
    for (int rr = 0; rr < ROWS; rr++)
        for (int h = 0; h < H; h++) {
            double g[3], dg[3] = {0, 0, 0};
            ref_weights(g, z + rr * 3 * H, h, act);
            for (int e = 0; e < DH; e++) {
                int i = (rr * H + h) * DH + e;
                ry[i] = g[0] * o[0][i] + g[1] * o[1][i] + g[2] * o[2][i];
                for (int b = 0; b < 3; b++) {
                    dg[b] += (double)dy[i] * o[b][i];
                    rdo[b][i] = do0[b][i] + g[b] * dy[i];
                }
            }
            for (int b = 0; b < 3; b++) {
                rgw[rr * 3 * H + b * H + h] = g[b];
                // ∂g_b/∂z_c: softmax g_b(δ_bc − g_c); sigmoid g_b(1 − g_b)δ_bc.
                double d = 0;
                for (int c = 0; c < 3; c++)
                    d += dg[c] * (act == GATE_SOFTMAX ? g[c] * ((b == c) - g[b]) : (b == c) * g[b] * (1 - g[b]));
                rdz[rr * 3 * H + b * H + h] += d;
            }
        }
    double e[6] = {kref_rel_err(gw[0], rgw, NZ), kref_rel_err(y[0], ry, NO), kref_rel_err(dz[0], rdz, NZ)};
    for (int b = 0; b < 3; b++) e[3 + b] = kref_rel_err(dO[0][b], rdo[b], NO);
    cr_log_info("gate %s: gw %.2e y %.2e dz %.2e do %.2e %.2e %.2e", act == GATE_SOFTMAX ? "softmax" : "sigmoid",
                e[0], e[1], e[2], e[3], e[4], e[5]);
    // A float expf and a division per gate, dot products of Dh = 8: measured <= 1.2e-7; 2e-6.
    for (int k = 0; k < 6; k++) cr_expect(e[k] <= 2e-6, "output %d: rel err %g", k, e[k]);
    int same = memcmp(gw[0], gw[1], NZ * 4) == 0 && memcmp(y[0], y[1], NO * 4) == 0 &&
               memcmp(dz[0], dz[1], NZ * 4) == 0;
    for (int b = 0; b < 3; b++) same &= memcmp(dO[0][b], dO[1][b], NO * 4) == 0;
    cr_expect(same, "gate differs between 1 and 2 threads");
    // Fresh buffers (NaN there) get the bits of accumulating into zeros, each flag alone.
    for (int bit = 0; bit < 4; bit++) {
        float *zb[4], *fb[4];
        for (int i = 0; i < 4; i++) {
            const int n = i == 0 ? NZ : NO;
            zb[i] = kref_zeros(n), fb[i] = kref_zeros(n);
            if (i == bit)
                for (int j = 0; j < n; j++) fb[i][j] = NAN;
        }
        gate_backward(zb[0], zb[1], zb[2], zb[3], 0, dy, z, o[0], o[1], o[2], ROWS, H, DH, act);
        gate_backward(fb[0], fb[1], fb[2], fb[3], 1 << bit, dy, z, o[0], o[1], o[2], ROWS, H, DH, act);
        for (int i = 0; i < 4; i++) {
            cr_expect(memcmp(zb[i], fb[i], (size_t)(i == 0 ? NZ : NO) * 4) == 0, "fresh bit %d, buffer %d", bit, i);
            free(zb[i]), free(fb[i]);
        }
    }
    for (int run = 0; run < 2; run++) {
        free(gw[run]), free(y[run]), free(dz[run]);
        for (int b = 0; b < 3; b++) free(dO[run][b]);
    }
    for (int b = 0; b < 3; b++) free(o[b]), free(do0[b]), free(rdo[b]);
    free(z), free(dy), free(dz0), free(rgw), free(ry), free(rdz);
}

Test(gate, sigmoid) { check(GATE_SIGMOID, 6); }
Test(gate, softmax) { check(GATE_SOFTMAX, 7); }
