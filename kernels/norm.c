// norm.c: RMSNorm forward and backward (see norm.h).
//
// Rows are split statically over threads, one writer per row. A row's sums are nsa_dot16's
// 16 interleaved partial sums: the same bits whatever the thread count or the other rows,
// where one running float sum waited an add latency per element (~1 % of a training step
// at d = 256). dw sums over rows in row order for every element, its columns split over
// threads (one writer per element).
#include "kernels/norm.h"

#include <math.h>

#include "kernels/common.h"

void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int64_t rows, int64_t d,
                     float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        const float ss = nsa_dot16(xr, xr, d);
        float rs = 1.0f / sqrtf(ss / (float)d + eps);
        rstd[r] = rs;
        for (int64_t j = 0; j < d; j++) y[r * d + j] = xr[j] * rs * w[j];
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int64_t rows, int64_t d) {
    if (dx) {
#pragma omp parallel
        {
            float dyw[d];
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; r++) {
                const float *xr = x + r * d, *dyr = dy + r * d;
                for (int64_t j = 0; j < d; j++) dyw[j] = dyr[j] * w[j];
                const float dot = nsa_dot16(dyw, xr, d);
                float rs = rstd[r], c = rs * rs * dot / (float)d;
                for (int64_t j = 0; j < d; j++) dx[r * d + j] += rs * (dyw[j] - xr[j] * c);
            }
        }
    }
    if (dw) {
        // Columns in blocks of 64 over threads; each element still sums its rows in order.
        const int64_t nblk = (d + 63) / 64;
#pragma omp parallel for schedule(static)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t j0 = blk * 64, j1 = j0 + 64 < d ? j0 + 64 : d;
            for (int64_t r = 0; r < rows; r++) {
                const float *xr = x + r * d, *dyr = dy + r * d;
                for (int64_t j = j0; j < j1; j++) dw[j] += dyr[j] * xr[j] * rstd[r];
            }
        }
    }
}
