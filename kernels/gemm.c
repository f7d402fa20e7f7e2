// gemm.c: OpenBLAS sgemm wrappers, threaded by us rather than by OpenBLAS.
//
// OpenBLAS's own threading splits the output by thread count, and its AVX-512 kernels
// sum edge tiles in a different order from full tiles, so results change with the number
// of threads (measured: every gradient differed between 1 and 2 threads). Here OpenBLAS
// runs single-threaded (cpu.c) and the output is cut into chunks whose size depends only
// on the shape; OpenMP hands whole chunks to threads. Each element is then computed by
// the same sgemm call whatever the thread count: bit-identical with 1 or 2 threads.
// Threads take the next chunk as they finish one (schedule dynamic): which thread computes
// a chunk changes nothing in it, and on a shared host one core is often slower than the
// other for a while (Zen 3, 2 threads, one layer's products forward and backward, 10
// interleaved trials: 0.983x the time of equal static shares, 8 of 10 trials faster).
#include "kernels/gemm.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

// Output rows per sgemm call. Every call packs the whole weight matrix again, so small
// chunks pay that copy once per few rows: measured on Zen 5 with 2 threads, 8192 rows,
// K = 256 or 704, N = 64..704, against a 1024^3 sgemm: 64-row chunks 72-75 %, 256-row
// chunks 69-93 %, 512-row chunks 77-96 %, 1024-row chunks 78-95 %. 512 keeps 16 chunks of
// a default training batch for the threads to share.
#define ROW_CHUNK 512

// dW = dY^T X reduces over all n rows inside one call and is cut along dW's longer side
// instead: rows (out) when out >= in, else columns (in). Each call packs its whole share
// of dY and X again, and a narrow dW cut into rows packs all of X once per chunk and runs
// the kernel on a few rows at a time; so chunks are as large as keeps every thread busy on
// two cores: at least two, at most 384, equal sizes rounded up to 16. Measured (Zen 5, 2
// threads, n = 8192, % of a 1024^3 sgemm): out 704 x in 256 in row chunks of 128 72 %, of
// 352 91-94 %; out 256 x in 704 in column chunks of 352 89 % (row chunks of 128 85 %);
// out 64 x in 256 in row chunks of 32 60 %, column chunks of 128 76 %; out 24 (the gate's
// last layer) in row chunks of 16 38 %, column chunks of 128 65 %. The cut depends only
// on the shape, so the bits do not depend on the thread count.
static inline int64_t dw_chunk(int64_t len) {
    const int64_t pieces = len > 768 ? (len + 383) / 384 : 2;
    return ((len + pieces - 1) / pieces + 15) / 16 * 16;
}

// Chunks of `chunk` rows out of `rows`, and the rows of chunk c (the last may be short).
static inline int64_t n_chunks(int64_t rows, int64_t chunk) { return (rows + chunk - 1) / chunk; }
static inline int64_t chunk_rows(int64_t c, int64_t rows, int64_t chunk) {
    int64_t r = rows - c * chunk;
    return r < chunk ? r : chunk;
}

void gemm_xwt(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < n_chunks(n, ROW_CHUNK); c++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)chunk_rows(c, n, ROW_CHUNK), (int)out, (int)in, 1.0f,
                    x + c * ROW_CHUNK * in, (int)in, w, (int)in, 0.0f, y + c * ROW_CHUNK * out, (int)out);
}

void gemm_dx(float *dx, const float *dy, const float *w, int64_t n, int64_t in, int64_t out, int acc) {
    if (n == 0) return;
    if (out == 0) {
        if (!acc) memset(dx, 0, (size_t)(n * in) * sizeof(float));
        return;
    }
    // beta = 0 makes OpenBLAS zero each chunk just before its kernel adds into it, while the
    // chunk is in cache, instead of a separate pass over the whole of dx.
    const float beta = acc ? 1.0f : 0.0f;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < n_chunks(n, ROW_CHUNK); c++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)chunk_rows(c, n, ROW_CHUNK), (int)in, (int)out,
                    1.0f, dy + c * ROW_CHUNK * out, (int)out, w, (int)in, beta, dx + c * ROW_CHUNK * in, (int)in);
}

void gemm_dw_acc(float *dw, const float *dy, const float *x, int64_t n, int64_t in, int64_t out) {
    if (n == 0 || out == 0) return;
    // Chunks of dW's rows or columns; each keeps the full reduction over n in one call.
    if (out >= in) {
        const int64_t ch = dw_chunk(out);
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t c = 0; c < n_chunks(out, ch); c++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)chunk_rows(c, out, ch), (int)in, (int)n, 1.0f,
                        dy + c * ch, (int)out, x, (int)in, 1.0f, dw + c * ch * in, (int)in);
    } else {
        const int64_t ch = dw_chunk(in);
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t c = 0; c < n_chunks(in, ch); c++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)chunk_rows(c, in, ch), (int)n, 1.0f,
                        dy, (int)out, x + c * ch, (int)in, 1.0f, dw + c * ch, (int)in);
    }
}

double gemm_measure_gflops(int n, int threads) {
    const size_t nn = (size_t)n * n;
    float *a = nsa_malloc(nn * sizeof(float)), *b = nsa_malloc(nn * sizeof(float));
    float *c = nsa_malloc(nn * sizeof(float));
    for (size_t i = 0; i < nn; i++) a[i] = (float)(i % 7) - 3.0f, b[i] = (float)(i % 5) - 2.0f, c[i] = 0.0f;
    // Best of at least 10 timed calls and 0.3 s: on a shared machine one call in a few is
    // slowed by a neighbour, and a yardstick taken from a slowed call flatters the ratio.
    double best = 1e30, spent = 0;
    for (int rep = 0; rep < 11 || spent < 0.3; rep++) {
        double t0 = nsa_now();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            int r0 = n * part / threads, r1 = n * (part + 1) / threads;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, n, n, 1.0f, a + (size_t)r0 * n, n, b, n,
                        0.0f, c + (size_t)r0 * n, n);
        }
        double dt = nsa_now() - t0;
        spent += dt;
        if (rep > 0 && dt < best) best = dt;  // the first call warms caches and threads
        if (rep > 1000) break;
    }
    free(a), free(b), free(c);
    return 2.0 * n * (double)n * n / best / 1e9;
}
