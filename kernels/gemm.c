// gemm.c: OpenBLAS sgemm wrappers. OpenBLAS splits work over output tiles, never over
// the reduction dimension, so each output element is summed in the same order whatever
// the thread count: these calls are deterministic across 1 and 2 threads (tested).
#include "kernels/gemm.h"

#include <cblas.h>

void gemm_xwt(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, x,
                (int)in, w, (int)in, 0.0f, y, (int)out);
}

void gemm_dx_acc(float *dx, const float *dy, const float *w, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out, 1.0f, dy,
                (int)out, w, (int)in, 1.0f, dx, (int)in);
}

void gemm_dw_acc(float *dw, const float *dy, const float *x, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n, 1.0f, dy,
                (int)out, x, (int)in, 1.0f, dw, (int)in);
}
