// kernel_ref.c: shared helpers of the kernel tests (see kernel_ref.h).
#include "tests/kernel_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

float *kref_randn(Rng *r, size_t n, float scale) {
    float *x = nsa_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)rng_normal(r);
    return x;
}

float *kref_zeros(size_t n) { return nsa_calloc(n, sizeof(float)); }
double *kref_dzeros(size_t n) { return nsa_calloc(n, sizeof(double)); }

float *kref_copy(const float *x, size_t n) {
    float *y = nsa_malloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

double kref_rel_err(const float *a, const double *ref, size_t n) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isinf(ref[i]) || isinf(a[i])) {
            if ((double)a[i] != ref[i]) return INFINITY;
            continue;
        }
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d;  // NaN propagates as a failure
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0.0 ? md / mr : md;
}

double kref_rel_err_ff(const float *a, const float *ref, size_t n) {
    double *r = nsa_malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) r[i] = ref[i];
    double e = kref_rel_err(a, r, n);
    free(r);
    return e;
}

void kref_attention_row(double *o, double *lse, double *dq, double *dk, double *dv, const float *qh,
                        const float *doh, const float *kv_k, const float *kv_v, const int *keys, int nkeys,
                        int G, int Dh) {
    double scale = 1.0 / sqrt((double)Dh);
    double *p = nsa_malloc((size_t)(nkeys > 0 ? nkeys : 1) * sizeof(double));
    double mx = -INFINITY, sum = 0.0;
    for (int e = 0; e < Dh; e++) o[e] = 0.0;
    if (nkeys == 0) {
        *lse = -INFINITY;
        free(p);
        return;
    }
    for (int i = 0; i < nkeys; i++) {
        const float *kr = kv_k + (size_t)keys[i] * G * Dh;
        double sc = 0.0;
        for (int e = 0; e < Dh; e++) sc += (double)qh[e] * kr[e];
        p[i] = sc * scale;
        if (p[i] > mx) mx = p[i];
    }
    for (int i = 0; i < nkeys; i++) sum += (p[i] = exp(p[i] - mx));
    *lse = mx + log(sum);
    for (int i = 0; i < nkeys; i++) {
        p[i] /= sum;
        const float *vr = kv_v + (size_t)keys[i] * G * Dh;
        for (int e = 0; e < Dh; e++) o[e] += p[i] * vr[e];
    }
    if (dq) {
        double D = 0.0;
        for (int e = 0; e < Dh; e++) D += (double)doh[e] * o[e];
        for (int i = 0; i < nkeys; i++) {
            const float *kr = kv_k + (size_t)keys[i] * G * Dh, *vr = kv_v + (size_t)keys[i] * G * Dh;
            double dp = 0.0;
            for (int e = 0; e < Dh; e++) dp += (double)doh[e] * vr[e];
            double ds = p[i] * (dp - D) * scale;
            for (int e = 0; e < Dh; e++) {
                dq[e] += ds * kr[e];
                dk[(size_t)keys[i] * G * Dh + e] += ds * qh[e];
                dv[(size_t)keys[i] * G * Dh + e] += p[i] * doh[e];
            }
        }
    }
    free(p);
}


NsaShape kref_nsa_shape(int B, int T, int H, int G, int Dh, int l, int d, int lp, int n) {
    NsaShape s = {.B = B, .T = T, .H = H, .G = G, .Dh = Dh, .cmp_block = l, .cmp_stride = d,
                  .slc_block = lp, .slc_topn = n, .window = 32};
    NSA_ASSERT(l % d == 0 && lp % d == 0 && H % G == 0);
    return s;
}
