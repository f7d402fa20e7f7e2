// bench_q4k.c: `nsa bench q4k`: Q4_K matvec and matmul against read bandwidth, sgemv and sgemm, all measured
// in one run.
//
// Absolute speeds on a shared two-core machine say little, so every figure is a ratio of
// two measurements taken here, back to back, with the same threads.
#include "eval/bench_q4k.h"

#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/q4k.h"

enum {
    MV = 16384,       // matvec: MV x MV weights, 1 GiB as float32, 144 MiB as Q4_K
    MM_N = 512,       // matmul: activation rows
    MM_D = 4096,      // matmul: MM_D x MM_D weights
    DISTINCT = 256,   // distinct rows quantized (see q4k_matrix)
    SGEMV_ROWS = 64,  // rows per sgemv call, as gemm.c's chunks
};

// Uniform in [-scale, scale), from the element index: cheap and parallel (a 1 GiB buffer).
static void fill(float *x, int64_t n, uint64_t seed, float scale) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = ((uint64_t)i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[i] = scale * ((float)(z >> 40) * 0x1p-23f - 1.0f);
    }
}

// The same matrix twice: Q4_K and its float32 dequantization [rows, cols]. Quantizing
// 16384² weights with ggml's search takes tens of seconds, so DISTINCT rows are
// quantized and repeated; speed does not depend on the values, and the repetition does
// not help the caches (each row is read once per product, the matrices dwarf the LLC).
static void matrices(uint8_t **q, float **w, int64_t rows, int64_t cols, uint64_t seed) {
    const int64_t rb = q4k_row_bytes(cols);
    float *src = nsa_malloc((size_t)(DISTINCT * cols) * sizeof(float));
    fill(src, DISTINCT * cols, seed, 0.05f);
    uint8_t *qd = nsa_malloc((size_t)(DISTINCT * rb));
    q4k_quantize_rows(qd, src, DISTINCT, cols);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < DISTINCT; r++) q4k_dequantize_row(src + r * cols, qd + r * rb, cols);
    *q = nsa_malloc((size_t)(rows * rb));
    *w = nsa_malloc((size_t)(rows * cols) * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        memcpy(*q + r * rb, qd + (r % DISTINCT) * rb, (size_t)rb);
        memcpy(*w + r * cols, src + (r % DISTINCT) * cols, (size_t)cols * sizeof(float));
    }
    free(src), free(qd);
}

typedef struct {
    const void *buf;
    size_t bytes;
    const uint8_t *q;
    const float *w, *x;
    float *y;
    int64_t n, rows, cols;
} Ctx;

// Read bandwidth: every thread sums its contiguous share of the buffer as 64-bit
// integers (an integer sum vectorizes and needs no reassociation of floats).
static void run_read(Ctx *c) {
    const uint64_t *p = c->buf;
    const int64_t words = (int64_t)(c->bytes / 8);
    uint64_t s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (int64_t i = 0; i < words; i++) s += p[i];
    volatile uint64_t keep = s;  // the sum is used: the reads cannot be optimized away
    (void)keep;
}

static void run_q4k(Ctx *c) { q4k_matmul(c->y, c->q, c->x, c->n, c->rows, c->cols); }

// float32 matrix-vector product threaded as gemm.c threads sgemm: OpenBLAS single-threaded
// on fixed row chunks, OpenMP over the chunks.
static void run_sgemv(Ctx *c) {
    const int64_t chunks = (c->rows + SGEMV_ROWS - 1) / SGEMV_ROWS;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        int64_t r0 = k * SGEMV_ROWS, nr = c->rows - r0 < SGEMV_ROWS ? c->rows - r0 : SGEMV_ROWS;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nr, (int)c->cols, 1.0f, c->w + r0 * c->cols,
                    (int)c->cols, c->x, 1, 0.0f, c->y + r0, 1);
    }
}

static void run_sgemm(Ctx *c) { gemm_xwt(c->y, c->x, c->w, c->n, c->cols, c->rows); }

static double timed(void (*fn)(Ctx *), Ctx *c) {
    double t0 = nsa_now();
    fn(c);
    return nsa_now() - t0;
}

// Best of `reps` after one warm-up run.
static double best_time(void (*fn)(Ctx *), Ctx *c, int reps) {
    fn(c);
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double dt = timed(fn, c);
        best = dt < best ? dt : best;
    }
    return best;
}

int bench_q4k_run(FILE *out) {
    const int threads = omp_get_max_threads();
    cpu_set_threads(threads);  // OpenBLAS single-threaded: gemm.c's rule
    fprintf(out, "Q4_K kernels: path %s, %d threads, OPENBLAS_CORETYPE=%s\n", q4k_path_name(), threads,
            getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");

    // Matvec: MV x MV.
    uint8_t *q;
    float *w;
    matrices(&q, &w, MV, MV, 1);
    float *x = nsa_malloc((size_t)MV * sizeof(float)), *y = nsa_malloc((size_t)MV * sizeof(float));
    fill(x, MV, 2, 1.0f);
    const double q_bytes = (double)MV * (double)q4k_row_bytes(MV), f_bytes = (double)MV * MV * sizeof(float);
    Ctx c = {
        .buf = w, .bytes = (size_t)f_bytes, .q = q, .w = w, .x = x, .y = y, .n = 1, .rows = MV, .cols = MV};
    // Every timed matvec follows a read of the whole 1 GiB buffer: a bandwidth sample, and a
    // flush, so that the 144 MiB of Q4_K come from memory and not from a large L3 (this
    // machine reports 508 MiB of L3 for the socket). Alternating also exposes both figures
    // to the same load from other processes.
    run_q4k(&c);
    double t_read = 1e30, t_q4k = 1e30;
    for (int rep = 0; rep < 10; rep++) {
        double tr = timed(run_read, &c), tq = timed(run_q4k, &c);
        t_read = tr < t_read ? tr : t_read;
        t_q4k = tq < t_q4k ? tq : t_q4k;
    }
    double t_sgemv = best_time(run_sgemv, &c, 5);
    double bw = f_bytes / t_read / 1e9, q_gbs = q_bytes / t_q4k / 1e9;
    free(q), free(w), free(x), free(y);

    // Matmul: [MM_N, MM_D] x [MM_D, MM_D]ᵀ.
    matrices(&q, &w, MM_D, MM_D, 3);
    x = nsa_malloc((size_t)MM_N * MM_D * sizeof(float));
    y = nsa_malloc((size_t)MM_N * MM_D * sizeof(float));
    fill(x, (int64_t)MM_N * MM_D, 4, 1.0f);
    c = (Ctx){.q = q, .w = w, .x = x, .y = y, .n = MM_N, .rows = MM_D, .cols = MM_D};
    double t_mm = best_time(run_q4k, &c, 5);
    double t_sgemm = best_time(run_sgemm, &c, 5);
    const double flops = 2.0 * MM_N * (double)MM_D * MM_D;
    free(q), free(w), free(x), free(y);

    fprintf(out, "  %-58s %12s %10s %7s\n", "measurement", "result", "ratio", "goal");
    fprintf(out, "  %-58s %7.1f GB/s %10s %7s\n", "read bandwidth: sum of a 1 GiB buffer", bw, "", "");
    fprintf(out, "  %-58s %7.1f GB/s %9.0f%% %7s\n", "Q4_K matvec 16384 x 16384 (144 MiB), Q4_K bytes read",
            q_gbs, 100.0 * q_gbs / bw, ">= 80%");
    fprintf(out, "  %-58s %7.2f ms   %9.1fx %7s\n", "float32 sgemv of the same matrix (1 GiB) vs Q4_K matvec",
            t_sgemv * 1e3, t_sgemv / t_q4k, ">= 5x");
    fprintf(out, "  %-58s %6.1f GF/s %10s %7s\n", "float32 sgemm 512 x 4096 x 4096 (gemm.c's threading)",
            flops / t_sgemm / 1e9, "", "");
    fprintf(out, "  %-58s %6.1f GF/s %9.2fx %7s\n", "Q4_K matmul of the same shape vs float32 sgemm",
            flops / t_mm / 1e9, t_sgemm / t_mm, ">= 0.7x");
    return NSA_OK;
}
