// gemm.c: OpenBLAS sgemm wrappers, threaded by us rather than by OpenBLAS.
//
// OpenBLAS's own threading splits the output by thread count, and its AVX-512 kernels
// sum edge tiles in a different order from full tiles, so results change with the number
// of threads (measured: every gradient differed between 1 and 2 threads). Here OpenBLAS
// runs single-threaded (cpu.c) and the output is cut into chunks whose size depends only
// on the shape; OpenMP hands whole chunks to threads. Each element is then computed by
// the same sgemm call whatever the thread count: bit-identical with 1 or 2 threads.
#include "kernels/gemm.h"

#include <cblas.h>
#include <stdlib.h>

#include "kernels/common.h"

#define ROW_CHUNK 64  // output rows per sgemm call: big enough to run sgemm near peak

static inline int64_t n_chunks(int64_t rows) { return (rows + ROW_CHUNK - 1) / ROW_CHUNK; }
static inline int64_t chunk_rows(int64_t c, int64_t rows) {
    int64_t r = rows - c * ROW_CHUNK;
    return r < ROW_CHUNK ? r : ROW_CHUNK;
}

void gemm_xwt(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks(n); c++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)chunk_rows(c, n), (int)out, (int)in, 1.0f,
                    x + c * ROW_CHUNK * in, (int)in, w, (int)in, 0.0f, y + c * ROW_CHUNK * out, (int)out);
}

void gemm_dx_acc(float *dx, const float *dy, const float *w, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks(n); c++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)chunk_rows(c, n), (int)in, (int)out, 1.0f,
                    dy + c * ROW_CHUNK * out, (int)out, w, (int)in, 1.0f, dx + c * ROW_CHUNK * in, (int)in);
}

void gemm_dw_acc(float *dw, const float *dy, const float *x, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
    // Chunks of dW's rows; each keeps the full reduction over n in one call.
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks(out); c++)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)chunk_rows(c, out), (int)in, (int)n, 1.0f,
                    dy + c * ROW_CHUNK, (int)out, x, (int)in, 1.0f, dw + c * ROW_CHUNK * in, (int)in);
}

double gemm_measure_gflops(int n, int threads) {
    const size_t nn = (size_t)n * n;
    float *a = nsa_malloc(nn * sizeof(float)), *b = nsa_malloc(nn * sizeof(float));
    float *c = nsa_malloc(nn * sizeof(float));
    for (size_t i = 0; i < nn; i++) a[i] = (float)(i % 7) - 3.0f, b[i] = (float)(i % 5) - 2.0f, c[i] = 0.0f;
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = nsa_now();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            int r0 = n * part / threads, r1 = n * (part + 1) / threads;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, n, n, 1.0f, a + (size_t)r0 * n, n, b, n,
                        0.0f, c + (size_t)r0 * n, n);
        }
        double dt = nsa_now() - t0;
        if (rep > 0 && dt < best) best = dt;  // the first call warms caches and threads
    }
    free(a), free(b), free(c);
    return 2.0 * n * (double)n * n / best / 1e9;
}
