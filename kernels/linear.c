// linear.c: the linear layer: products through gemm.c (thread-count independent by its
// chunking), bias loops serial so the bias gradient sums rows in row order.
#include "kernels/linear.h"

#include "kernels/gemm.h"
#include "kernels/q4k.h"

void linear_forward(float *y, const float *x, const float *w, const float *b, int64_t rows, int64_t in,
                    int64_t out) {
    gemm_xwt(y, x, w, rows, in, out);
    if (b)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++) y[r * out + j] += b[j];
}

void linear_forward_q4k(float *y, const float *x, const uint8_t *wq, const float *b, int64_t rows, int64_t in,
                        int64_t out) {
    q4k_matmul(y, wq, x, rows, out, in);
    if (b)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++) y[r * out + j] += b[j];
}

void linear_backward(float *dx, int dx_acc, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int64_t rows, int64_t in, int64_t out) {
    if (dx) gemm_dx(dx, dy, w, rows, in, out, dx_acc);
    if (dw) gemm_dw_acc(dw, dy, x, rows, in, out);
    if (db)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++) db[j] += dy[r * out + j];
}
