// test_rope.c: RoPE kernels (kernels/rope.c): the table against double angles, the
// rotation against a double loop with Hugging Face's rotate_half pairing, the backward as
// the transpose (accumulating), a position offset, and 1 vs 2 threads bit-identical.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/rope.h"
#include "tests/kernel_ref.h"

enum { B = 2, T = 11, NH = 3, DH = 12, HALF = DH / 2, N = B * T * NH * DH, S = 40 };
static const double theta = 10000.0;

static double angle(int pos, int i) { return pos * pow(theta, -2.0 * i / DH); }

Test(rope, table_is_double_angles_rounded_once) {
    float cs[S * DH];
    rope_table(cs, S, DH, theta);
    for (int t = 0; t < S; t++)
        for (int i = 0; i < HALF; i++) {
            // One rounding of the double value: exact equality with (float)cos(angle).
            cr_expect(cs[(t * HALF + i) * 2] == (float)cos(angle(t, i)), "cos t %d i %d", t, i);
            cr_expect(cs[(t * HALF + i) * 2 + 1] == (float)sin(angle(t, i)), "sin t %d i %d", t, i);
        }
}

// Double rotation of x by +angle (sign 1) or −angle (sign −1), positions p0 + t.
static void ref_rotate(double *y, const float *x, int p0, int sign) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                const float *xr = x + ((b * T + t) * NH + h) * DH;
                double *yr = y + ((b * T + t) * NH + h) * DH;
                for (int i = 0; i < HALF; i++) {
                    double c = cos(angle(p0 + t, i)), s = sign * sin(angle(p0 + t, i));
                    yr[i] = xr[i] * c - xr[i + HALF] * s;  // rotate_half: dims i and i + Dh/2
                    yr[i + HALF] = xr[i + HALF] * c + xr[i] * s;
                }
            }
}

Test(rope, forward_backward_match_double_reference) {
    float cs[S * DH];
    rope_table(cs, S, DH, theta);
    Rng r;
    rng_seed(&r, 2);
    float *x = kref_randn(&r, N, 1.0f), *dy = kref_randn(&r, N, 1.0f), *dx0 = kref_randn(&r, N, 1.0f);
    const int p0 = 17;  // positions 17..27: the table row of the first position is passed
    float *y[2], *dx[2];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        y[run] = kref_zeros(N), dx[run] = kref_copy(dx0, N);
        rope_forward(y[run], x, cs + p0 * DH, B, T, NH, DH);
        rope_backward(dx[run], dy, cs + p0 * DH, B, T, NH, DH);
    }
    double *ry = kref_dzeros(N), *rdx = kref_dzeros(N);
    ref_rotate(ry, x, p0, 1);
    ref_rotate(rdx, dy, p0, -1);  // Rᵀ = R(−angle)
    for (int i = 0; i < N; i++) rdx[i] += dx0[i];
    double ey = kref_rel_err(y[0], ry, N), edx = kref_rel_err(dx[0], rdx, N);
    cr_log_info("rope: y %.2e dx %.2e", ey, edx);
    // cos/sin rounded to float (6e-8) and two products and a sum per element: measured
    // <= 7.5e-8; 1e-6.
    cr_expect(ey <= 1e-6 && edx <= 1e-6, "y %g dx %g", ey, edx);
    cr_expect(memcmp(y[0], y[1], N * 4) == 0 && memcmp(dx[0], dx[1], N * 4) == 0, "1 vs 2 threads");
    // In place (y == x) gives the same bits.
    float *xi = kref_copy(x, N);
    rope_forward(xi, xi, cs + p0 * DH, B, T, NH, DH);
    cr_expect(memcmp(xi, y[0], N * 4) == 0, "in-place rotation differs");
    free(xi), free(x), free(dy), free(dx0), free(ry), free(rdx);
    for (int run = 0; run < 2; run++) free(y[run]), free(dx[run]);
}
