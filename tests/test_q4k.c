// test_q4k.c: Q4_K against ggml (tests/fixtures/q4k_vectors.h5, a copy of ../shared/q4k/vectors.h5:
// ggml d99724f's quantize_row_q4_K_ref / dequantize_row_q4_K built with -O2 -ffp-contract=off),
// half-float conversion against the F16C instructions, every fast path against the
// reference product, the product against float64 loops, padding, batch and thread invariance.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <hdf5.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/q4k.h"
#include "kernels/rng.h"

#define FIXTURE "tests/fixtures/q4k_vectors.h5"
enum { FX_ROWS = 64, FX_COLS = 512, FX_BYTES = 288 };

// Dataset `name` of `file`, which must be 2-D [d0, d1].
static void read2d(hid_t file, const char *name, hid_t type, void *buf, hsize_t d0, hsize_t d1) {
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    cr_assert(ds >= 0, "no dataset %s in " FIXTURE, name);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 0};
    cr_assert_eq(H5Sget_simple_extent_ndims(sp), 2, "%s is not 2-D", name);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    cr_assert(dims[0] == d0 && dims[1] == d1, "%s is [%llu, %llu], expected [%llu, %llu]", name,
              (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)d0,
              (unsigned long long)d1);
    cr_assert(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(sp);
    H5Dclose(ds);
}

typedef struct {
    float x[FX_ROWS][FX_COLS];
    uint8_t q[FX_ROWS][FX_BYTES];
    float deq[FX_ROWS][FX_COLS];
} Vectors;

static Vectors *load_vectors(void) {
    Vectors *v = nsa_malloc(sizeof *v);
    hid_t f = H5Fopen(FIXTURE, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0, "cannot open " FIXTURE);
    read2d(f, "x", H5T_NATIVE_FLOAT, v->x, FX_ROWS, FX_COLS);
    read2d(f, "q4k", H5T_NATIVE_UINT8, v->q, FX_ROWS, FX_BYTES);
    read2d(f, "dequant", H5T_NATIVE_FLOAT, v->deq, FX_ROWS, FX_COLS);
    H5Fclose(f);
    return v;
}

// The order of the fixture's `kinds` attribute (../shared/q4k/README.md): 4 rows each.
static const char *const kinds[16] = {"normal",  "weight",   "uniform",   "zeros",   "const_pos", "const_neg",
                                      "outlier", "positive", "negative",  "tiny",    "large",     "laplace",
                                      "sparse",  "ramp",     "subscales", "halfzero"};

// ---------------------------------------------------------------------------- against ggml

Test(q4k, quantize_matches_ggml_bytes) {
    Vectors *v = load_vectors();
    int bad = 0;
    for (int r = 0; r < FX_ROWS; r++) {
        uint8_t q[FX_BYTES];
        cr_assert_eq(q4k_row_bytes(FX_COLS), FX_BYTES);
        q4k_quantize_row(q, v->x[r], FX_COLS);
        for (int k = 0; k < FX_BYTES; k++)
            if (q[k] != v->q[r][k]) {
                cr_log_error("row %d (%s): first differing byte %d: ours 0x%02x, ggml 0x%02x", r,
                             kinds[r / 4], k, q[k], v->q[r][k]);
                bad++;
                break;
            }
    }
    cr_expect_eq(bad, 0, "%d of %d rows differ from ggml's bytes", bad, FX_ROWS);
    free(v);
}

Test(q4k, dequantize_matches_ggml_bits) {
    Vectors *v = load_vectors();
    int bad = 0;
    for (int r = 0; r < FX_ROWS; r++) {
        float y[FX_COLS];
        q4k_dequantize_row(y, v->q[r], FX_COLS);
        if (memcmp(y, v->deq[r], sizeof y)) {
            bad++;
            for (int k = 0; k < FX_COLS; k++)
                if (memcmp(&y[k], &v->deq[r][k], 4)) {
                    cr_log_error("row %d (%s) value %d: ours %.9g, ggml %.9g", r, kinds[r / 4], k, y[k],
                                 v->deq[r][k]);
                    break;
                }
        }
    }
    cr_expect_eq(bad, 0, "%d of %d rows differ from ggml's floats", bad, FX_ROWS);
    free(v);
}

// ---------------------------------------------------------------------------- half floats

__attribute__((target("f16c"))) static uint16_t hw_to_half(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
__attribute__((target("f16c"))) static float hw_from_half(uint16_t h) { return _cvtsh_ss(h); }

Test(q4k, half_from_float_rounds_as_f16c) {
    if (!__builtin_cpu_supports("f16c")) cr_skip_test("no F16C to compare with");
    // Every 4099th bit pattern (about a million, all exponents) plus the edges of each range.
    // (Checked once over all 2^32 patterns: no difference; that takes 7 s on two cores.)
    const uint32_t edges[] = {0,          1,          0x33000000, 0x33000001, 0x337fffff,
                              0x33800000, 0x387fc000, 0x387fe000, 0x387fffff, 0x38800000,
                              0x38801000, 0x38803000, 0x477fe000, 0x477fefff, 0x477ff000,
                              0x477fffff, 0x47800000, 0x7f7fffff, 0x7f800000};
    const size_t cap = 2 * 19 + (1ull << 32) / 4099 + 1;
    uint32_t *probe = nsa_malloc(cap * sizeof(uint32_t));
    size_t np = 0;
    for (size_t e = 0; e < 19; e++) probe[np++] = edges[e], probe[np++] = edges[e] | 0x80000000u;
    for (uint64_t u = 0; u < (1ull << 32); u += 4099) probe[np++] = (uint32_t)u;
    cr_assert(np <= cap);
    int bad = 0;
    for (size_t k = 0; k < np; k++) {
        float f;
        memcpy(&f, &probe[k], 4);
        uint16_t want =
            isnan(f) ? (uint16_t)((probe[k] >> 16 & 0x8000u) | 0x7e00u) : hw_to_half(f);  // ggml's NaN
        if (q4k_fp32_to_fp16(f) != want && bad++ < 5)
            cr_log_error("0x%08x: ours 0x%04x, expected 0x%04x", probe[k], q4k_fp32_to_fp16(f), want);
    }
    free(probe);
    cr_expect_eq(bad, 0);
}

Test(q4k, float_from_half_exact) {
    if (!__builtin_cpu_supports("f16c")) cr_skip_test("no F16C to compare with");
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float ours = q4k_fp16_to_fp32((uint16_t)h), hw = hw_from_half((uint16_t)h);
        if (isnan(hw) ? !isnan(ours) : memcmp(&ours, &hw, 4) != 0) bad++;
    }
    cr_expect_eq(bad, 0, "%d of 65536 halves convert differently from vcvtph2ps", bad);
}

// ---------------------------------------------------------------------------- quantizer edges

static float *randn(Rng *r, int64_t n, float scale) {
    float *x = nsa_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = scale * (float)rng_normal(r);
    return x;
}

// A row of `cols` quantizes as the same row padded with zeros to 256·blocks; the
// dequantized row is that of the padded one, cut to `cols`.
Test(q4k, padding) {
    Rng rng;
    rng_seed(&rng, 11);
    const int64_t cols_list[] = {1, 192, 256, 300, 704, 1000};
    for (size_t c = 0; c < sizeof cols_list / sizeof *cols_list; c++) {
        int64_t cols = cols_list[c], nb = q4k_row_blocks(cols), padded = nb * 256;
        cr_assert_eq(q4k_row_bytes(cols), nb * 144);
        cr_assert_eq(nb, (cols + 255) / 256);
        float *x = randn(&rng, cols, 0.02f), *xp = nsa_calloc((size_t)padded, sizeof(float));
        memcpy(xp, x, (size_t)cols * sizeof(float));
        uint8_t *q = nsa_malloc((size_t)q4k_row_bytes(cols)), *qp = nsa_malloc((size_t)q4k_row_bytes(padded));
        q4k_quantize_row(q, x, cols);
        q4k_quantize_row(qp, xp, padded);
        cr_expect(memcmp(q, qp, (size_t)q4k_row_bytes(cols)) == 0, "cols %lld: padding is not zeros",
                  (long long)cols);
        float *y = nsa_malloc((size_t)cols * sizeof(float)), *yp = nsa_malloc((size_t)padded * sizeof(float));
        q4k_dequantize_row(y, q, cols);
        q4k_dequantize_row(yp, qp, padded);
        cr_expect(memcmp(y, yp, (size_t)cols * sizeof(float)) == 0, "cols %lld: dequantized row differs",
                  (long long)cols);
        free(x), free(xp), free(q), free(qp), free(y), free(yp);
    }
}

// Non-finite weights: ggml's algorithm gives whatever bytes it gives; ours must give the
// same bytes every time, touch nothing outside the row (the ASan build checks that, and
// UBSan that no step is undefined), and leave the other blocks of the row alone.
Test(q4k, non_finite_rows) {
    Rng rng;
    rng_seed(&rng, 12);
    const float bad_values[] = {NAN, -NAN, INFINITY, -INFINITY, 3e38f, -3e38f, 1e-45f};
    for (size_t v = 0; v < sizeof bad_values / sizeof *bad_values; v++)
        for (int pos = 0; pos < 256; pos += 85) {
            float *x = randn(&rng, 512, 1.0f);
            x[256 + pos] = bad_values[v];
            uint8_t q1[288], q2[288], good[144];
            q4k_quantize_row(q1, x, 512);
            q4k_quantize_row(q2, x, 512);
            q4k_quantize_row(good, x, 256);
            cr_expect(memcmp(q1, q2, 288) == 0, "value %g: not deterministic", bad_values[v]);
            cr_expect(memcmp(q1, good, 144) == 0, "value %g: changed the finite block", bad_values[v]);
            float y[512];
            q4k_dequantize_row(y, q1, 512);  // must not crash either
            free(x);
        }
}

Test(q4k, quantize_rows_matches_rows) {
    Rng rng;
    rng_seed(&rng, 13);
    const int64_t rows = 37, cols = 300, rb = q4k_row_bytes(cols);
    float *w = randn(&rng, rows * cols, 0.05f);
    uint8_t *all = nsa_malloc((size_t)(rows * rb)), one[288];
    q4k_quantize_rows(all, w, rows, cols);
    for (int64_t r = 0; r < rows; r++) {
        q4k_quantize_row(one, w + r * cols, cols);
        cr_expect(memcmp(one, all + r * rb, (size_t)rb) == 0, "row %lld", (long long)r);
    }
    free(w), free(all);
}

// ---------------------------------------------------------------------------- products

// Results are equal: the same bits, or both NaN (NaN payloads depend on operand order).
static int same_floats(const float *a, const float *b, int64_t n, int64_t *where) {
    for (int64_t k = 0; k < n; k++)
        if (memcmp(&a[k], &b[k], 4) && !(isnan(a[k]) && isnan(b[k]))) {
            *where = k;
            return 0;
        }
    return 1;
}

typedef struct {
    int64_t n, rows, cols;
    float *w, *x;  // float weights [rows, cols] and activations [n, cols]
    uint8_t *q;    // Q4_K weights
} Problem;

// Weights with a different spread per row (scales must not be uniform to mean anything),
// activations with a different spread per 256-block, some blocks zero.
static Problem problem(uint64_t seed, int64_t n, int64_t rows, int64_t cols) {
    Problem p = {n, rows, cols, NULL, NULL, NULL};
    Rng rng;
    rng_seed(&rng, seed);
    p.w = nsa_malloc((size_t)(rows * cols) * sizeof(float));
    p.x = nsa_malloc((size_t)(n * cols) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        float s = 0.01f * (float)(1 + rng_below(&rng, 20));
        for (int64_t c = 0; c < cols; c++)
            p.w[r * cols + c] = s * (float)rng_normal(&rng) + (c % 7 == 0 ? s : 0);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < cols; c++) {
            int64_t blk = c / 256;
            float s = (i + blk) % 5 == 4 ? 0.0f : (float)(1 + (i * 3 + blk) % 4);
            p.x[i * cols + c] = s * (float)rng_normal(&rng);
        }
    p.q = nsa_malloc((size_t)(rows * q4k_row_bytes(cols)));
    q4k_quantize_rows(p.q, p.w, rows, cols);
    return p;
}

static void problem_free(Problem *p) { free(p->w), free(p->x), free(p->q); }

static const Q4kPath all_paths[] = {Q4K_PATH_REF, Q4K_PATH_AVX2, Q4K_PATH_AVX512};

// Every path this CPU runs gives the reference's bits, over shapes that exercise partial
// row groups (rows not a multiple of 8 or 16), partial register tiles (n not a multiple
// of 4) and padded columns.
Test(q4k, paths_equal_reference) {
    const int64_t shapes[][3] = {{1, 1, 256},   {1, 16, 256}, {2, 17, 192},  {3, 33, 300},   {4, 40, 704},
                                 {5, 15, 1024}, {7, 64, 520}, {9, 100, 256}, {16, 48, 2048}, {1, 300, 4096}};
    int tested = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        Problem p = problem(100 + s, shapes[s][0], shapes[s][1], shapes[s][2]);
        float *ref = nsa_malloc((size_t)(p.n * p.rows) * sizeof(float));
        float *got = nsa_malloc((size_t)(p.n * p.rows) * sizeof(float));
        q4k_matmul_path(Q4K_PATH_REF, ref, p.q, p.x, p.n, p.rows, p.cols);
        for (size_t k = 1; k < sizeof all_paths / sizeof *all_paths; k++) {
            if (!q4k_path_supported(all_paths[k])) continue;
            tested++;
            memset(got, 0xff, (size_t)(p.n * p.rows) * sizeof(float));
            q4k_matmul_path(all_paths[k], got, p.q, p.x, p.n, p.rows, p.cols);
            int64_t at = 0;
            cr_expect(same_floats(got, ref, p.n * p.rows, &at),
                      "%s, n %lld rows %lld cols %lld: Y[%lld] %.9g vs ref %.9g", q4k_path_str(all_paths[k]),
                      (long long)p.n, (long long)p.rows, (long long)p.cols, (long long)at, got[at], ref[at]);
        }
        free(ref), free(got);
        problem_free(&p);
    }
    cr_log_info("fast paths compared: %d shape-path pairs (path chosen here: %s)", tested, q4k_path_name());
}

// Non-finite activations make their whole output row NaN, on every path.
Test(q4k, non_finite_activations) {
    Problem p = problem(7, 3, 20, 512);
    p.x[1 * 512 + 300] = INFINITY;
    float y[3 * 20];
    for (size_t k = 0; k < sizeof all_paths / sizeof *all_paths; k++) {
        if (!q4k_path_supported(all_paths[k])) continue;
        q4k_matmul_path(all_paths[k], y, p.q, p.x, 3, 20, 512);
        for (int r = 0; r < 20; r++) {
            cr_expect(isfinite(y[r]) && isfinite(y[40 + r]), "%s: finite rows", q4k_path_str(all_paths[k]));
            cr_expect(isnan(y[20 + r]), "%s: row with inf", q4k_path_str(all_paths[k]));
        }
    }
    problem_free(&p);
}

// The product against float64 loops over ggml-style dequantized weights.
//  (a) With the activations as the kernels use them (q4k_act_dequant): only float32
//      rounding separates the two. Per block the kernel rounds (float)S1, d·S1, dmin·S2,
//      their difference, the product with da and the running sum: each a relative 2^-24
//      of at most E = Σ_t (|d·sc·q_t| + |dmin·m|)·|xq_t|, so |y − ref| ≤ (5 + blocks)·2^-24·E
//      (bound 1e-5·E for up to 64 blocks; measured below).
//  (b) With the original activations: add the int8 rounding of x, at most da/2 per value,
//      so |y − Σ w·x| ≤ Σ_blocks (da/2)·Σ_t |w_t| + 1e-5·E. A bound, not a fit.
Test(q4k, against_float64) {
    const int64_t shapes[][3] = {{3, 50, 256}, {5, 33, 704}, {2, 20, 4096}, {1, 64, 300}};
    double worst_a = 0, worst_b = 0, sq_err_b = 0, sq_ref_b = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        Problem p = problem(200 + s, shapes[s][0], shapes[s][1], shapes[s][2]);
        const int64_t n = p.n, rows = p.rows, cols = p.cols, rb = q4k_row_bytes(cols),
                      nb = q4k_row_blocks(cols);
        float *y = nsa_malloc((size_t)(n * rows) * sizeof(float));
        q4k_matmul(y, p.q, p.x, n, rows, cols);
        float *wd = nsa_malloc((size_t)cols * sizeof(float)), *xq = nsa_malloc((size_t)cols * sizeof(float));
        double *mag = nsa_malloc((size_t)cols * sizeof(double));  // |d·sc·q| + |dmin·m| per weight
        for (int64_t i = 0; i < n; i++) {
            const float *x = p.x + i * cols;
            q4k_act_dequant(xq, x, cols);
            for (int64_t r = 0; r < rows; r++) {
                const uint8_t *qr = p.q + r * rb;
                q4k_dequantize_row(wd, qr, cols);
                for (int64_t c = 0; c < cols; c++) {  // magnitudes of the two terms, by get_scale_min_k4
                    const uint8_t *blk = qr + (c / 256) * 144, *sc = blk + 4;
                    int j = (int)(c % 256) / 32, q = (blk[16 + 32 * (j / 2) + c % 32] >> (4 * (j & 1))) & 0xF;
                    int scale = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
                    int min = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
                    uint16_t hd, hm;
                    memcpy(&hd, blk, 2), memcpy(&hm, blk + 2, 2);
                    mag[c] = fabs((double)q4k_fp16_to_fp32(hd) * scale * q) +
                             fabs((double)q4k_fp16_to_fp32(hm) * min);
                }
                double ref_a = 0, ref_b = 0, E = 0, act_bound = 0;
                for (int64_t b = 0; b < nb; b++) {
                    double amax = 0, wsum = 0;
                    for (int64_t c = b * 256; c < cols && c < (b + 1) * 256; c++) {
                        ref_a += (double)wd[c] * xq[c];
                        ref_b += (double)wd[c] * x[c];
                        E += mag[c] * fabs((double)xq[c]);
                        amax = fmax(amax, fabs((double)x[c]));
                        wsum += fabs((double)wd[c]);
                    }
                    act_bound += amax / 127.0 / 2.0 * wsum * (1 + 1e-6);  // da/2 per value (da rounded: 1e-6)
                }
                double got = y[i * rows + r], tol_a = 1e-5 * E + 1e-30;
                double ea = fabs(got - ref_a), eb = fabs(got - ref_b);
                cr_expect(ea <= tol_a, "n %lld cols %lld [%lld,%lld]: %.9g vs %.9g (a)", (long long)n,
                          (long long)cols, (long long)i, (long long)r, got, ref_a);
                cr_expect(eb <= act_bound + tol_a, "[%lld,%lld]: %.9g vs %.9g (b): error %.3g > bound %.3g",
                          (long long)i, (long long)r, got, ref_b, eb, act_bound + tol_a);
                if (E > 0) worst_a = fmax(worst_a, ea / E);
                if (act_bound > 0) worst_b = fmax(worst_b, eb / (act_bound + tol_a));
                sq_err_b += eb * eb, sq_ref_b += ref_b * ref_b;
            }
        }
        free(y), free(wd), free(xq), free(mag);
        problem_free(&p);
    }
    // Measured: (a) error/E <= 1.1e-8 (bound 1e-5); (b) error <= 0.14 of the bound; the
    // RMS error against float activations is 0.6 % of the RMS output (the int8 cost).
    cr_log_info("float64: (a) max error/E %.3g, (b) max error/bound %.3g, RMS error/RMS output %.3g", worst_a,
                worst_b, sqrt(sq_err_b / sq_ref_b));
}

Test(q4k, matvec_is_matmul_row) {
    Problem p = problem(300, 4, 70, 704);
    float Y[4 * 70], y[70];
    q4k_matmul(Y, p.q, p.x, 4, 70, 704);
    for (int i = 0; i < 4; i++) {
        q4k_matvec(y, p.q, p.x + i * 704, 70, 704);
        cr_expect(memcmp(y, Y + i * 70, sizeof y) == 0, "row %d", i);
    }
    problem_free(&p);
}

// A row's outputs computed alone equal the same row inside a batch of 7, on every path.
Test(q4k, batch_invariance) {
    Problem p = problem(400, 7, 45, 1000);
    float Y[7 * 45], y[45];
    for (size_t k = 0; k < sizeof all_paths / sizeof *all_paths; k++) {
        if (!q4k_path_supported(all_paths[k])) continue;
        q4k_matmul_path(all_paths[k], Y, p.q, p.x, 7, 45, 1000);
        for (int i = 0; i < 7; i++) {
            q4k_matmul_path(all_paths[k], y, p.q, p.x + i * 1000, 1, 45, 1000);
            cr_expect(memcmp(y, Y + i * 45, sizeof y) == 0, "%s: row %d alone differs from row %d of 7",
                      q4k_path_str(all_paths[k]), i, i);
        }
    }
    problem_free(&p);
}

Test(q4k, thread_invariance) {
    Problem p = problem(500, 9, 200, 704);
    float *y1 = nsa_malloc(9 * 200 * sizeof(float)), *y2 = nsa_malloc(9 * 200 * sizeof(float));
    int saved = omp_get_max_threads();
    for (size_t k = 0; k < sizeof all_paths / sizeof *all_paths; k++) {
        if (!q4k_path_supported(all_paths[k])) continue;
        omp_set_num_threads(1);
        q4k_matmul_path(all_paths[k], y1, p.q, p.x, 9, 200, 704);
        omp_set_num_threads(2);
        q4k_matmul_path(all_paths[k], y2, p.q, p.x, 9, 200, 704);
        cr_expect(memcmp(y1, y2, 9 * 200 * sizeof(float)) == 0, "%s: 1 and 2 threads differ",
                  q4k_path_str(all_paths[k]));
    }
    omp_set_num_threads(saved);
    free(y1), free(y2);
    problem_free(&p);
}

Test(q4k, empty_shapes) {
    Problem p = problem(600, 2, 3, 256);
    float y[6] = {1, 1, 1, 1, 1, 1};
    q4k_matmul(y, p.q, p.x, 0, 3, 256);  // n = 0: nothing written
    q4k_matmul(y, p.q, p.x, 2, 0, 256);  // rows = 0: nothing written
    for (int k = 0; k < 6; k++) cr_expect_eq(y[k], 1.0f);
    q4k_matmul(y, p.q, p.x, 2, 3, 0);  // cols = 0: empty sums
    for (int k = 0; k < 6; k++) cr_expect_eq(y[k], 0.0f);
    problem_free(&p);
}

// ---------------------------------------------------------------------------- dispatch

Test(q4k, path_from_environment) {
    for (size_t k = 0; k < sizeof all_paths / sizeof *all_paths; k++) {
        setenv("NSA_Q4K_PATH", q4k_path_str(all_paths[k]), 1);
        if (q4k_path_supported(all_paths[k])) {
            cr_expect_eq(q4k_setup(), NSA_OK);
            cr_expect_str_eq(q4k_path_name(), q4k_path_str(all_paths[k]));
        } else {
            cr_expect_eq(q4k_setup(), NSA_ERR);
        }
    }
    unsetenv("NSA_Q4K_PATH");
    cr_expect_eq(q4k_setup(), NSA_OK);
    cpu_detect();
    const char *best = nsa_cpu.avx512f && nsa_cpu.avx512vnni ? "avx512" : nsa_cpu.avx2 ? "avx2" : "ref";
    cr_expect_str_eq(q4k_path_name(), best);
}

Test(q4k, unknown_path_one_line_error) {
    cr_redirect_stderr();
    setenv("NSA_Q4K_PATH", "sse9", 1);
    cr_expect_eq(q4k_setup(), NSA_ERR);
    fflush(stderr);
    cr_expect_stderr_eq_str(
        "nsa: error: NSA_Q4K_PATH=sse9: unknown Q4_K kernel path (ref, avx2 or avx512)\n");
}
