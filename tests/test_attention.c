// test_attention.c: dense causal / sliding-window flash attention against a materialised
// double-precision softmax, finite differences, and thread-count determinism.
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_lanes.h"
#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/rng.h"

static float *randn(Rng *r, size_t n, float scale) {
    float *x = nsa_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)rng_normal(r);
    return x;
}

static float *zeros(size_t n) { return nsa_calloc(n, sizeof(float)); }

// max|a - ref| / max|ref| (ref == 0 everywhere: max|a|).
static double rel_err(const float *a, const double *ref, size_t n) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d;  // NaN propagates as a failure
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0.0 ? md / mr : md;
}

// Materialised reference in double: P [T] per query, then o, lse and the gradients.
static void ref_attention(double *o, double *lse, double *dq, double *dk, double *dv,
                          const float *dout, const float *q, const float *k, const float *v,
                          int B, int T, int H, int G, int Dh, int window) {
    int rep = H / G;
    double scale = 1.0 / sqrt((double)Dh);
    double *p = nsa_malloc((size_t)T * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                int g = h / rep;
                size_t qi = (((size_t)b * T + t) * H + h) * Dh;
                int lo = window > 0 ? (t - window + 1 > 0 ? t - window + 1 : 0) : 0;
                double mx = -INFINITY, sum = 0.0;
                for (int s = lo; s <= t; s++) {
                    size_t ki = (((size_t)b * T + s) * G + g) * Dh;
                    double sc = 0.0;
                    for (int e = 0; e < Dh; e++) sc += (double)q[qi + e] * k[ki + e];
                    p[s] = sc * scale;
                    if (p[s] > mx) mx = p[s];
                }
                for (int s = lo; s <= t; s++) sum += (p[s] = exp(p[s] - mx));
                lse[((size_t)b * T + t) * H + h] = mx + log(sum);
                for (int e = 0; e < Dh; e++) o[qi + e] = 0.0;
                for (int s = lo; s <= t; s++) {
                    p[s] /= sum;
                    size_t ki = (((size_t)b * T + s) * G + g) * Dh;
                    for (int e = 0; e < Dh; e++) o[qi + e] += p[s] * v[ki + e];
                }
                if (!dq) continue;
                double D = 0.0;
                for (int e = 0; e < Dh; e++) D += (double)dout[qi + e] * o[qi + e];
                for (int s = lo; s <= t; s++) {
                    size_t ki = (((size_t)b * T + s) * G + g) * Dh;
                    double dp = 0.0;
                    for (int e = 0; e < Dh; e++) dp += (double)dout[qi + e] * v[ki + e];
                    double ds = p[s] * (dp - D) * scale;
                    for (int e = 0; e < Dh; e++) {
                        dq[qi + e] += ds * k[ki + e];
                        dk[ki + e] += ds * q[qi + e];
                        dv[ki + e] += p[s] * dout[qi + e];
                    }
                }
            }
    free(p);
}

typedef struct {
    int B, T, H, G, Dh, window;
} Case;

// Forward tolerance: float32 scores/softmax vs double, ~6e-8 per rounding, a few ulp from
// the polynomial exp, sums over <= 200 keys; observed <= 3e-7 of the output scale, so
// 1e-5 leaves a 30x margin. Backward: two more dot products and the (dp - D) cancellation;
// observed <= 1.1e-6, so 2e-5.
#define FWD_TOL 1e-5
#define BWD_TOL 2e-5

static void check_case(Case c, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)c.B * c.T * c.H * c.Dh, nk = (size_t)c.B * c.T * c.G * c.Dh;
    size_t nl = (size_t)c.B * c.T * c.H;
    float *q = randn(&r, nq, 1.0f), *k = randn(&r, nk, 1.0f), *v = randn(&r, nk, 1.0f);
    float *dout = randn(&r, nq, 1.0f);
    float *o = zeros(nq), *lse = zeros(nl), *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
    void *work = nsa_malloc(attn_backward_work_bytes(c.B, c.T, c.H, c.G, c.Dh));
    attn_forward(o, lse, q, k, v, c.B, c.T, c.H, c.G, c.Dh, c.window);
    attn_backward(dq, dk, dv, dout, q, k, v, o, lse, work, c.B, c.T, c.H, c.G, c.Dh, c.window);

    double *ro = nsa_calloc(nq, sizeof(double)), *rl = nsa_calloc(nl, sizeof(double));
    double *rdq = nsa_calloc(nq, sizeof(double)), *rdk = nsa_calloc(nk, sizeof(double));
    double *rdv = nsa_calloc(nk, sizeof(double));
    ref_attention(ro, rl, rdq, rdk, rdv, dout, q, k, v, c.B, c.T, c.H, c.G, c.Dh, c.window);

    double eo = rel_err(o, ro, nq), el = rel_err(lse, rl, nl), eq = rel_err(dq, rdq, nq);
    double ek = rel_err(dk, rdk, nk), ev = rel_err(dv, rdv, nk);
    cr_log_info("B%d T%d H%d G%d Dh%d w%d: o %.2e lse %.2e dq %.2e dk %.2e dv %.2e", c.B, c.T,
                c.H, c.G, c.Dh, c.window, eo, el, eq, ek, ev);
    cr_expect(eo <= FWD_TOL, "o rel err %g (B%d T%d H%d G%d Dh%d w%d)", eo, c.B, c.T, c.H, c.G,
              c.Dh, c.window);
    cr_expect(el <= FWD_TOL, "lse rel err %g", el);
    cr_expect(eq <= BWD_TOL, "dq rel err %g", eq);
    cr_expect(ek <= BWD_TOL, "dk rel err %g", ek);
    cr_expect(ev <= BWD_TOL, "dv rel err %g", ev);
    free(q), free(k), free(v), free(dout), free(o), free(lse), free(dq), free(dk), free(dv);
    free(work), free(ro), free(rl), free(rdq), free(rdk), free(rdv);
}

Test(attention, matches_double_reference) {
    const Case cases[] = {
        {1, 1, 2, 1, 16, 0},     // T = 1: one key
        {2, 37, 4, 2, 32, 0},    // causal, GQA
        {1, 64, 4, 4, 16, 1},    // window = 1: only the diagonal; G = H
        {2, 50, 2, 1, 8, 100},   // window > T is plain causal; G = 1
        {1, 200, 8, 2, 32, 16},  // window spanning tiles and key blocks
        {1, 150, 3, 1, 24, 0},   // generic head size (no specialised Dh), > 2 key tiles
        {1, 130, 2, 2, 64, 65},  // window just past a tile
        {1, 5, 130, 1, 8, 0},    // 130 heads per group: tiles split a group's heads
        {1, 70, 2, 1, 5, 9},     // odd head size
        {2, 20, 2, 1, 256, 0},   // the largest head size config_validate allows
        // The backward splits a group's heads into chunks (partial dk, dv added in chunk
        // order) only while B*G < 8: these two keep one chunk per group.
        {4, 33, 4, 2, 16, 0},    // B*G = 8: the group's dk, dv written directly
        {8, 9, 130, 1, 8, 0},    // one chunk of 130 heads: tiles of 64 heads
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(cases[i], 100 + i);
}

// Loss L = Σ w·o with fixed random w; dL/dx by central differences of the float kernel
// vs attn_backward with dout = w.
Test(attention, finite_differences) {
    const int B = 1, T = 6, H = 2, G = 1, Dh = 4, window = 4;
    omp_set_num_threads(1);  // ~200 tiny calls: idle spinning threads would only slow them
    Rng r;
    rng_seed(&r, 7);
    size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * G * Dh;
    float *q = randn(&r, nq, 1.0f), *k = randn(&r, nk, 1.0f), *v = randn(&r, nk, 1.0f);
    float *w = randn(&r, nq, 1.0f), *o = zeros(nq), *lse = zeros((size_t)B * T * H);
    float *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
    void *work = nsa_malloc(attn_backward_work_bytes(B, T, H, G, Dh));
    attn_forward(o, lse, q, k, v, B, T, H, G, Dh, window);
    attn_backward(dq, dk, dv, w, q, k, v, o, lse, work, B, T, H, G, Dh, window);

    float *xs[3] = {q, k, v}, *gs[3] = {dq, dk, dv};
    size_t ns[3] = {nq, nk, nk};
    const float eps = 1e-2f;
    for (int a = 0; a < 3; a++)
        for (size_t i = 0; i < ns[a]; i++) {
            float x0 = xs[a][i];
            double L[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                xs[a][i] = x0 + (sgn ? -eps : eps);
                attn_forward(o, lse, q, k, v, B, T, H, G, Dh, window);
                L[sgn] = 0.0;
                for (size_t j = 0; j < nq; j++) L[sgn] += (double)w[j] * o[j];
            }
            xs[a][i] = x0;
            double num = (L[0] - L[1]) / (2.0 * eps);
            // Central differences: truncation O(eps^2 f''') ~1e-4 and float rounding of L
            // (~1e-6) / 2eps ~ 1e-4, so 2e-3 absolute + 1% relative.
            cr_expect(fabs(num - gs[a][i]) <= 2e-3 + 1e-2 * fabs(num),
                      "input %d elem %zu: analytic %g numeric %g", a, i, gs[a][i], num);
        }
    free(q), free(k), free(v), free(w), free(o), free(lse), free(dq), free(dk), free(dv);
    free(work);
}

// Backward adds into the gradients: running it twice gives twice the gradient.
Test(attention, backward_accumulates) {
    const int B = 1, T = 40, H = 4, G = 2, Dh = 16, window = 0;
    Rng r;
    rng_seed(&r, 9);
    size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * G * Dh;
    float *q = randn(&r, nq, 1.0f), *k = randn(&r, nk, 1.0f), *v = randn(&r, nk, 1.0f);
    float *dout = randn(&r, nq, 1.0f), *o = zeros(nq), *lse = zeros((size_t)B * T * H);
    float *g1[3] = {zeros(nq), zeros(nk), zeros(nk)}, *g2[3] = {zeros(nq), zeros(nk), zeros(nk)};
    void *work = nsa_malloc(attn_backward_work_bytes(B, T, H, G, Dh));
    attn_forward(o, lse, q, k, v, B, T, H, G, Dh, window);
    attn_backward(g1[0], g1[1], g1[2], dout, q, k, v, o, lse, work, B, T, H, G, Dh, window);
    for (int pass = 0; pass < 2; pass++)
        attn_backward(g2[0], g2[1], g2[2], dout, q, k, v, o, lse, work, B, T, H, G, Dh, window);
    size_t ns[3] = {nq, nk, nk};
    for (int a = 0; a < 3; a++) {
        double md = 0.0, mr = 0.0;
        for (size_t i = 0; i < ns[a]; i++) {
            md = fmax(md, fabs((double)g2[a][i] - 2.0 * g1[a][i]));
            mr = fmax(mr, fabs(2.0 * g1[a][i]));
        }
        // Only the rounding of one extra addition per contribution: 1e-6 of the scale.
        cr_expect(mr > 0.0 && md <= 1e-6 * mr, "grad %d: %g vs scale %g", a, md, mr);
        free(g1[a]), free(g2[a]);
    }
    free(q), free(k), free(v), free(dout), free(o), free(lse), free(work);
}

// Outputs and gradients must be bit-identical with 1 and 2 threads, and on the portable,
// AVX2 and AVX-512 kernel paths (those this machine has); head sizes that are, and are not,
// multiples of the 16-float vectors, and one the kernels do not specialise (48).
Test(attention, deterministic_across_threads_and_paths) {
    const int B = 2, T = 150, H = 4, G = 2;
    const int dhs[3] = {32, 20, 48}, windows[2] = {0, 40};
    // run: {threads, path}
    const int runs[4][2] = {{1, ATTN_PATH_AUTO}, {2, ATTN_PATH_AUTO}, {1, ATTN_PATH_REF}, {1, ATTN_PATH_AVX2}};
    Rng r;
    rng_seed(&r, 11);
    for (int di = 0; di < 3; di++) {
        const int Dh = dhs[di];
        size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * G * Dh, nl = (size_t)B * T * H;
        float *q = randn(&r, nq, 1.0f), *k = randn(&r, nk, 1.0f), *v = randn(&r, nk, 1.0f);
        float *dout = randn(&r, nq, 1.0f);
        void *work = nsa_malloc(attn_backward_work_bytes(B, T, H, G, Dh));
        for (int wi = 0; wi < 2; wi++) {
            float *out[4][5];
            for (int run = 0; run < 4; run++) {
                omp_set_num_threads(runs[run][0]);
                nsa_cpu.attn_path = attn_path_supported(runs[run][1]) ? runs[run][1] : ATTN_PATH_REF;
                float *o = zeros(nq), *lse = zeros(nl), *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
                attn_forward(o, lse, q, k, v, B, T, H, G, Dh, windows[wi]);
                attn_backward(dq, dk, dv, dout, q, k, v, o, lse, work, B, T, H, G, Dh, windows[wi]);
                out[run][0] = o, out[run][1] = lse, out[run][2] = dq, out[run][3] = dk, out[run][4] = dv;
            }
            nsa_cpu.attn_path = ATTN_PATH_AUTO;
            size_t ns[5] = {nq, nl, nq, nk, nk};
            const char *names[5] = {"o", "lse", "dq", "dk", "dv"};
            for (int a = 0; a < 5; a++) {
                cr_expect(memcmp(out[0][a], out[1][a], ns[a] * sizeof(float)) == 0,
                          "%s differs between 1 and 2 threads (Dh %d, window %d)", names[a], Dh, windows[wi]);
                for (int run = 2; run < 4; run++)
                    cr_expect(memcmp(out[0][a], out[run][a], ns[a] * sizeof(float)) == 0,
                              "%s differs between the %s and %s paths (Dh %d, window %d)", names[a],
                              attn_path_name(), run == 2 ? "ref" : "avx2", Dh, windows[wi]);
                for (int run = 0; run < 4; run++) free(out[run][a]);
            }
        }
        free(q), free(k), free(v), free(dout), free(work);
    }
}

// attn_setup: NSA_ATTN_PATH picks the path (an error where this binary or CPU lacks it); an
// unknown value is an error; unset, the fastest path this machine has.
Test(attention, path_setup) {
    const char *names[3] = {"ref", "avx2", "avx512"};
    const AttnPath paths[3] = {ATTN_PATH_REF, ATTN_PATH_AVX2, ATTN_PATH_AVX512};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(setenv("NSA_ATTN_PATH", names[i], 1), 0);
        const int ok = attn_path_supported(paths[i]);
        cr_expect_eq(attn_setup(), ok ? NSA_OK : NSA_ERR, "NSA_ATTN_PATH=%s", names[i]);
        if (ok) cr_expect_str_eq(attn_path_name(), names[i]);
    }
    cr_expect(attn_path_supported(ATTN_PATH_REF));
    cr_assert_eq(setenv("NSA_ATTN_PATH", "avx2048", 1), 0);
    cr_expect_eq(attn_setup(), NSA_ERR);
    unsetenv("NSA_ATTN_PATH");
    cr_expect_eq(attn_setup(), NSA_OK);
    cr_expect_str_eq(attn_path_name(), attn_path_supported(ATTN_PATH_AVX512) ? "avx512"
                                       : attn_path_supported(ATTN_PATH_AVX2) ? "avx2"
                                                                             : "ref");
    nsa_cpu.attn_path = ATTN_PATH_AUTO;
}

// The polynomial exp against libm's double exp over the range the kernels use.
Test(attention, expf_accuracy) {
    double worst = 0.0;
    for (float x = -87.0f; x <= 88.0f; x += 0.001953125f) {
        double ref = exp((double)x), got = attn_expf(x);
        double rel = fabs(got - ref) / ref;
        if (rel > worst) worst = rel;
    }
    // Cephes' expf is within ~2 ulp (2.4e-7) over this range; 4e-7 allows the 2^n scaling.
    cr_expect(worst <= 4e-7, "attn_expf worst relative error %g", worst);
    cr_expect(attn_expf(-INFINITY) == 0.0f);
    cr_expect(attn_expf(-100.0f) == 0.0f);
    cr_expect(attn_expf(0.0f) == 1.0f);
}

// The softmax exponentials' fast paths (lanes_exp_sum, row_exp_ds: exp512 and exp256 against
// the portable nsa_expf) give the same bits: every float from -104 to 89 at a step of 2^-10
// (covering the clamps at -87 and 88 and the subnormal results just above -87.3), a sweep of
// the bit patterns of [-2, 2] and the special values, with a base subtracted first as the
// kernels do.
static void exp_path_same_bits(AttnPath fast, const char *name) {
    enum { N = 64 * 64 };
    static float in[N], out[2][N], sum[2][64], base[64];
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, -87.0f, 88.0f, 88.7f, -87.34f,
                             1e-30f, -1e-30f, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN};
    long bad = 0, checked = 0;
    uint32_t pattern = 0x3f800000u;  // walks the bit patterns of [-2, 2] by an odd stride
    for (float x0 = -104.0f; x0 < 89.0f; x0 += (float)N / 1024.0f) {
        for (int i = 0; i < N; i++) {
            if (i % 3 == 2) {  // bit patterns
                pattern = (pattern + 2654435761u) & 0x803fffffu;
                uint32_t b = pattern | 0x3f800000u;
                memcpy(&in[i], &b, sizeof b);
            } else {
                in[i] = x0 + (float)i / 1024.0f;
            }
        }
        if (x0 == -104.0f)
            for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) in[i] = special[i];
        for (int x = 0; x < 64; x++) base[x] = (float)(x % 5) * 0.25f - 0.5f;
        for (int path = 0; path < 2; path++) {
            nsa_cpu.attn_path = path ? ATTN_PATH_REF : fast;
            memcpy(out[path], in, sizeof in);
            for (int x = 0; x < 64; x++) sum[path][x] = 0.0f;
            // Key counts 64 down to 60: the vector twins interleave keys by four, then one by one.
            lanes_exp_sum(out[path], sum[path], base, 64 - (int)(checked % 5), 64);
        }
        nsa_cpu.attn_path = ATTN_PATH_AUTO;
        bad += memcmp(out[0], out[1], sizeof out[0]) != 0 ||
               (x0 != -104.0f && memcmp(sum[0], sum[1], sizeof sum[0]) != 0);  // NaN sums aside
        checked++;
    }
    cr_expect_eq(bad, 0, "%ld of %ld exp tiles differ between the %s and ref paths", bad, checked, name);
    // The backward's row kernel: random scores, lse and D.
    Rng r;
    rng_seed(&r, 12);
    long rows_bad = 0;
    for (int it = 0; it < 200; it++) {
        float P[2][64], dS[2][64];
        const float lr = (float)rng_normal(&r) * 3.0f, D = (float)rng_normal(&r);
        for (int j = 0; j < 64; j++) P[0][j] = P[1][j] = lr + (float)rng_normal(&r) * 4.0f, dS[0][j] = dS[1][j] = (float)rng_normal(&r);
        for (int path = 0; path < 2; path++) {
            nsa_cpu.attn_path = path ? ATTN_PATH_REF : fast;
            row_exp_ds(P[path], dS[path], lr, D, 0.17f);
        }
        nsa_cpu.attn_path = ATTN_PATH_AUTO;
        rows_bad += memcmp(P[0], P[1], sizeof P[0]) != 0 || memcmp(dS[0], dS[1], sizeof dS[0]) != 0;
    }
    cr_expect_eq(rows_bad, 0, "row_exp_ds differs between the %s and ref paths in %ld of 200 rows", name, rows_bad);
    // Rows on a causal or window edge: lanes [j0, j1) of whole vectors, visible keys
    // [jlo, jhi) anywhere from before j0 to past j1 (empty included); lanes outside [j0, j1)
    // must stay untouched.
    long masked_bad = 0, masked_cut = 0;
    for (int it = 0; it < 400; it++) {
        float P[2][64], dS[2][64];
        const float lr = (float)rng_normal(&r) * 3.0f, D = (float)rng_normal(&r);
        const int j0 = 16 * (int)(rng_uniform(&r) * 4), j1 = j0 + 16 * (1 + (int)(rng_uniform(&r) * ((64 - j0) / 16)));
        const int jlo = j0 - 20 + (int)(rng_uniform(&r) * (j1 - j0 + 21));
        const int jhi = jlo + (int)(rng_uniform(&r) * (j1 + 20 - jlo));
        for (int j = 0; j < 64; j++) P[0][j] = P[1][j] = lr + (float)rng_normal(&r) * 4.0f, dS[0][j] = dS[1][j] = (float)rng_normal(&r);
        for (int path = 0; path < 2; path++) {
            nsa_cpu.attn_path = path ? ATTN_PATH_REF : fast;
            row_exp_ds_mask(P[path], dS[path], lr, D, 0.17f, j0, j1, jlo, jhi);
        }
        nsa_cpu.attn_path = ATTN_PATH_AUTO;
        masked_bad += memcmp(P[0], P[1], sizeof P[0]) != 0 || memcmp(dS[0], dS[1], sizeof dS[0]) != 0;
        masked_cut += jlo > j0 && jhi < j1 && jlo < jhi;
    }
    cr_expect_eq(masked_bad, 0, "row_exp_ds_mask differs between the %s and ref paths in %ld of 400 rows", name,
                 masked_bad);
    cr_expect(masked_cut >= 20, "only %ld rows cut at both ends", masked_cut);
}

Test(attention, exp_paths_same_bits) {
    int tested = 0;
    if (attn_path_supported(ATTN_PATH_AVX512)) exp_path_same_bits(ATTN_PATH_AVX512, "avx512"), tested++;
    if (attn_path_supported(ATTN_PATH_AVX2)) exp_path_same_bits(ATTN_PATH_AVX2, "avx2"), tested++;
    if (!tested) cr_log_info("neither AVX2 nor AVX-512 on this machine: one path only");
}
