// xent.c: cross-entropy forward and backward (see xent.h). Rows split statically over
// threads, one writer per row; the mean is a serial sum, so the loss does not depend on
// the thread count.
#include "kernels/xent.h"

#include <math.h>

void xent_forward(float *loss, float *lse, const float *logits, const int32_t *targets, int64_t rows,
                  int64_t V) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = logits + r * V;
        float m = -INFINITY;
        for (int64_t j = 0; j < V; j++) m = xr[j] > m ? xr[j] : m;
        float s = 0.0f;
        for (int64_t j = 0; j < V; j++) s += expf(xr[j] - m);
        lse[r] = m + logf(s);
        loss[r] = lse[r] - xr[targets[r]];
    }
}

float xent_mean(const float *loss, int64_t rows) {
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) total += loss[r];
    return (float)(total / (double)rows);
}

void xent_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                   float dmean, int64_t rows, int64_t V) {
    float scale = dmean / (float)rows;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = logits + r * V;
        float *d = dlogits + r * V;
        for (int64_t j = 0; j < V; j++) d[j] += expf(xr[j] - lse[r]) * scale;
        d[targets[r]] -= scale;
    }
}
