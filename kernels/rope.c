// rope.c: the RoPE table and the rotation forward/backward (see rope.h). Every output
// element is one rotation of one input pair: no reductions, any thread split is exact.
#include "kernels/rope.h"

#include <math.h>

void rope_table(float *cs, int64_t S, int64_t dh, double theta) {
    int64_t half = dh / 2;
    for (int64_t t = 0; t < S; t++)
        for (int64_t i = 0; i < half; i++) {
            double ang = (double)t * pow(theta, -2.0 * (double)i / (double)dh);
            cs[(t * half + i) * 2] = (float)cos(ang);
            cs[(t * half + i) * 2 + 1] = (float)sin(ang);
        }
}

// inverse: rotate by the opposite angle (the transpose). accumulate: y += R x instead of y = R x.
static void rope_apply(float *y, const float *x, const float *cs, int64_t B, int64_t T, int64_t nh,
                       int64_t dh, int inverse, int accumulate) {
    int64_t half = dh / 2;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < nh; h++) {
                const float *xr = x + ((b * T + t) * nh + h) * dh;
                float *yr = y + ((b * T + t) * nh + h) * dh;
                const float *c = cs + t * half * 2;
                for (int64_t i = 0; i < half; i++) {
                    float co = c[2 * i], si = inverse ? -c[2 * i + 1] : c[2 * i + 1];
                    float x1 = xr[i], x2 = xr[i + half];
                    float y1 = x1 * co - x2 * si, y2 = x2 * co + x1 * si;
                    if (accumulate) {
                        yr[i] += y1;
                        yr[i + half] += y2;
                    } else {
                        yr[i] = y1;
                        yr[i + half] = y2;
                    }
                }
            }
}

void rope_forward(float *y, const float *x, const float *cs, int64_t B, int64_t T, int64_t nh,
                  int64_t dh) {
    rope_apply(y, x, cs, B, T, nh, dh, 0, 0);
}

void rope_backward(float *dx, const float *dy, const float *cs, int64_t B, int64_t T, int64_t nh,
                   int64_t dh) {
    rope_apply(dx, dy, cs, B, T, nh, dh, 1, 1);
}
