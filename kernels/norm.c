// norm.c: RMSNorm forward and backward (see norm.h).
//
// Rows are split statically over threads, one writer per row; the float accumulators run
// left to right within a row, so a row's result never depends on the thread count. dw
// sums over rows serially in row order for the same reason.
#include "kernels/norm.h"

#include <math.h>

void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int64_t rows, int64_t d,
                     float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float ss = 0.0f;
        for (int64_t j = 0; j < d; j++) ss += xr[j] * xr[j];
        float rs = 1.0f / sqrtf(ss / (float)d + eps);
        rstd[r] = rs;
        for (int64_t j = 0; j < d; j++) y[r * d + j] = xr[j] * rs * w[j];
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int64_t rows, int64_t d) {
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * d, *dyr = dy + r * d;
            float dot = 0.0f;
            for (int64_t j = 0; j < d; j++) dot += dyr[j] * w[j] * xr[j];
            float rs = rstd[r], c = rs * rs * dot / (float)d;
            for (int64_t j = 0; j < d; j++) dx[r * d + j] += rs * (dyr[j] * w[j] - xr[j] * c);
        }
    }
    if (dw)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * d, *dyr = dy + r * d;
            for (int64_t j = 0; j < d; j++) dw[j] += dyr[j] * xr[j] * rstd[r];
        }
}
