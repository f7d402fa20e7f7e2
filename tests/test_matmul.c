// test_matmul.c: the row-invariant product of kernels/matmul.c: AVX-512 and AVX2 kernels and
// the portable twin bit-identical, each row's bits independent of the row count and thread count, and
// both close to a double loop.
#include <criterion/criterion.h>
#include <omp.h>
#include <string.h>

#include "kernels/matmul.h"
#include "tests/kernel_ref.h"

static int have_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
}

static int have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// The fast kernels, each run where the CPU has its instructions.
static const struct {
    const char *name;
    void (*fn)(float *, const float *, const float *, int64_t, int64_t, int64_t);
    int (*have)(void);
} fast[] = {{"avx2", matmul_f32_avx2, have_avx2}, {"avx512", matmul_f32_avx512, have_avx512}};

// Shapes with ragged K stripes (cols % 16), ragged weight-row blocks and ragged row tiles.
static const int shapes[][3] = {{1, 1, 1}, {3, 5, 17}, {7, 70, 37}, {9, 33, 256}, {13, 64, 704}, {4, 3, 9}};

Test(matmul, kernels_agree_bitwise_and_rows_are_invariant) {
    Rng r;
    rng_seed(&r, 11);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], rows = shapes[s][1], cols = shapes[s][2];
        float *x = kref_randn(&r, (size_t)n * cols, 1.0f), *w = kref_randn(&r, (size_t)rows * cols, 1.0f);
        float *ref = kref_zeros((size_t)n * rows), *y = kref_zeros((size_t)n * rows);
        if (s == 5)  // a row of -0: every product is a signed zero, the sums must still match
            for (int k = 0; k < cols; k++) x[k] = -0.0f;
        omp_set_num_threads(1);
        matmul_f32_ref(ref, x, w, n, rows, cols);
        double *dref = kref_dzeros((size_t)n * rows);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < rows; j++) {
                double acc = 0.0;
                for (int k = 0; k < cols; k++) acc += (double)x[i * cols + k] * w[j * cols + k];
                dref[i * rows + j] = acc;
            }
        // float32 dot products of up to 704 terms of N(0,1)² against double: measured
        // <= 3e-7 of the largest output; 1e-5 leaves room for other shapes.
        double e = kref_rel_err(ref, dref, (size_t)n * rows);
        cr_expect(e <= 1e-5, "shape %zu: ref vs double %g", s, e);
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            // Row i alone gives the same bits as inside the n-row call (batch invariance).
            for (int i = 0; i < n; i++) {
                matmul_f32_ref(y, x + (size_t)i * cols, w, 1, rows, cols);
                cr_expect(!memcmp(y, ref + (size_t)i * rows, (size_t)rows * 4), "ref row %d alone differs", i);
            }
            matmul_f32_ref(y, x, w, n, rows, cols);
            cr_expect(!memcmp(y, ref, (size_t)n * rows * 4), "ref: %d threads differ", threads);
            for (size_t kk = 0; kk < sizeof fast / sizeof fast[0]; kk++) {
                if (!fast[kk].have()) continue;
                memset(y, 0, (size_t)n * rows * 4);
                fast[kk].fn(y, x, w, n, rows, cols);
                cr_expect(!memcmp(y, ref, (size_t)n * rows * 4), "shape %zu: %s != ref with %d threads", s,
                          fast[kk].name, threads);
                for (int i = 0; i < n; i++) {
                    fast[kk].fn(y, x + (size_t)i * cols, w, 1, rows, cols);
                    cr_expect(!memcmp(y, ref + (size_t)i * rows, (size_t)rows * 4), "%s row %d alone differs",
                              fast[kk].name, i);
                }
            }
        }
        free(x), free(w), free(ref), free(y), free(dref);
    }
}

Test(matmul, dispatch_and_bias) {
    Rng r;
    rng_seed(&r, 5);
    float *x = kref_randn(&r, 3 * 20, 1.0f), *w = kref_randn(&r, 6 * 20, 1.0f), *b = kref_randn(&r, 6, 1.0f);
    float *y = kref_zeros(18), *ref = kref_zeros(18);
    Weight W = {.type = WEIGHT_F32, .f32 = w, .rows = 6, .cols = 20};
    matmul_xwt(y, x, &W, 3);
    matmul_f32_ref(ref, x, w, 3, 6, 20);
    cr_expect(!memcmp(y, ref, sizeof(float) * 18));
    matmul_bias_add(y, b, 3, 6);
    for (int i = 0; i < 18; i++) cr_expect_eq(y[i], ref[i] + b[i % 6]);
    free(x), free(w), free(b), free(y), free(ref);
}
