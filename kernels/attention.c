// attention.c: flash-style causal / sliding-window attention and the per-row kernels
// (one query position, the heads of one KV group, ranges of keys) shared with nsa.c.
#include "kernels/attention.h"

#include "kernels/common.h"

// Keys are processed in tiles: scores of one tile for one head sit in a stack buffer so
// the exp loop vectorises and the tile's K/V rows stay in L1 while every head reads them.
#define ATTN_TILE 64
// Dense key-parallel pass: keys per task (its dk/dv rows are owned by that task).
#define ATTN_KEY_BLOCK 64

static inline float dotf(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int e = 0; e < n; e++) s += a[e] * b[e];
    return s;
}

static inline void axpyf(float *y, float a, const float *x, int n) {
#pragma omp simd
    for (int e = 0; e < n; e++) y[e] += a * x[e];
}

// Dh is a compile-time constant in the specialised copies below (always_inline + constant
// argument), which lets gcc unroll the Dh loops completely for the common head sizes.
static inline __attribute__((always_inline)) void
row_forward(float *restrict o, float *restrict lse, const float *restrict q, int nh, int Dh,
            const float *restrict k, const float *restrict v, size_t ks, const AttnRange *r, int nr) {
    const float scale = 1.0f / sqrtf((float)Dh);
    float sc[ATTN_TILE];
    for (int h = 0; h < nh; h++) {
        const float *qh = q + (size_t)h * Dh;
        float *oh = o + (size_t)h * Dh;
        float m = -INFINITY, l = 0.0f;
        for (int e = 0; e < Dh; e++) oh[e] = 0.0f;
        for (int ri = 0; ri < nr; ri++) {
            for (int s0 = r[ri].lo; s0 < r[ri].hi; s0 += ATTN_TILE) {
                int n = r[ri].hi - s0 < ATTN_TILE ? r[ri].hi - s0 : ATTN_TILE;
                const float *kt = k + (size_t)s0 * ks, *vt = v + (size_t)s0 * ks;
                float mx = m;
                for (int j = 0; j < n; j++) {
                    sc[j] = dotf(qh, kt + (size_t)j * ks, Dh) * scale;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                float corr = attn_expf(m - mx);  // 0 on the first tile (m = -inf)
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int j = 0; j < n; j++) {
                    sc[j] = attn_expf(sc[j] - mx);
                    sum += sc[j];
                }
                l = l * corr + sum;
                m = mx;
                if (corr != 1.0f)
                    for (int e = 0; e < Dh; e++) oh[e] *= corr;
                for (int j = 0; j < n; j++) axpyf(oh, sc[j], vt + (size_t)j * ks, Dh);
            }
        }
        if (l > 0.0f) {
            float inv = 1.0f / l;
            for (int e = 0; e < Dh; e++) oh[e] *= inv;
            lse[h] = m + logf(l);
        } else {
            lse[h] = -INFINITY;
        }
    }
}

static inline __attribute__((always_inline)) void
row_backward_dq(float *restrict dq, const float *restrict dout, const float *restrict q,
                const float *restrict lse, const float *restrict D, int nh, int Dh,
                const float *restrict k, const float *restrict v, size_t ks, const AttnRange *r,
                int nr) {
    const float scale = 1.0f / sqrtf((float)Dh);
    float sc[ATTN_TILE], dp[ATTN_TILE];
    for (int h = 0; h < nh; h++) {
        if (lse[h] == -INFINITY) continue;
        const float *qh = q + (size_t)h * Dh, *doh = dout + (size_t)h * Dh;
        float *dqh = dq + (size_t)h * Dh;
        const float lh = lse[h], Dv = D[h];
        for (int ri = 0; ri < nr; ri++) {
            for (int s0 = r[ri].lo; s0 < r[ri].hi; s0 += ATTN_TILE) {
                int n = r[ri].hi - s0 < ATTN_TILE ? r[ri].hi - s0 : ATTN_TILE;
                const float *kt = k + (size_t)s0 * ks, *vt = v + (size_t)s0 * ks;
                for (int j = 0; j < n; j++) {
                    sc[j] = dotf(qh, kt + (size_t)j * ks, Dh);
                    dp[j] = dotf(doh, vt + (size_t)j * ks, Dh);
                }
#pragma omp simd
                for (int j = 0; j < n; j++)
                    sc[j] = attn_expf(sc[j] * scale - lh) * (dp[j] - Dv) * scale;
                for (int j = 0; j < n; j++) axpyf(dqh, sc[j], kt + (size_t)j * ks, Dh);
            }
        }
    }
}

static inline __attribute__((always_inline)) void
row_backward_dkv(float *restrict dk, float *restrict dv, const float *restrict k,
                 const float *restrict v, size_t ks, int lo, int hi, const float *restrict q,
                 const float *restrict dout, const float *restrict lse, const float *restrict D,
                 int nh, int Dh) {
    const float scale = 1.0f / sqrtf((float)Dh);
    float p[ATTN_TILE], ds[ATTN_TILE];
    for (int h = 0; h < nh; h++) {
        if (lse[h] == -INFINITY) continue;
        const float *qh = q + (size_t)h * Dh, *doh = dout + (size_t)h * Dh;
        const float lh = lse[h], Dv = D[h];
        for (int s0 = lo; s0 < hi; s0 += ATTN_TILE) {
            int n = hi - s0 < ATTN_TILE ? hi - s0 : ATTN_TILE;
            const float *kt = k + (size_t)s0 * ks, *vt = v + (size_t)s0 * ks;
            for (int j = 0; j < n; j++) {
                p[j] = dotf(qh, kt + (size_t)j * ks, Dh);
                ds[j] = dotf(doh, vt + (size_t)j * ks, Dh);
            }
#pragma omp simd
            for (int j = 0; j < n; j++) {
                p[j] = attn_expf(p[j] * scale - lh);
                ds[j] = p[j] * (ds[j] - Dv) * scale;
            }
            float *dkt = dk + (size_t)s0 * ks, *dvt = dv + (size_t)s0 * ks;
            for (int j = 0; j < n; j++) {
                axpyf(dvt + (size_t)j * ks, p[j], doh, Dh);
                axpyf(dkt + (size_t)j * ks, ds[j], qh, Dh);
            }
        }
    }
}

// Dispatch to a copy with constant Dh for the usual head sizes, a generic one otherwise.
#define ATTN_DISPATCH_DH(Dh, call)              \
    switch (Dh) {                               \
    case 16: { const int Dh_ = 16; call; break; } \
    case 32: { const int Dh_ = 32; call; break; } \
    case 64: { const int Dh_ = 64; call; break; } \
    case 128: { const int Dh_ = 128; call; break; } \
    default: { const int Dh_ = Dh; call; break; } \
    }

void attn_row_forward(float *o, float *lse, const float *q, int nh, int Dh, const float *k,
                      const float *v, size_t kv_stride, const AttnRange *r, int nr) {
    ATTN_DISPATCH_DH(Dh, row_forward(o, lse, q, nh, Dh_, k, v, kv_stride, r, nr));
}

void attn_row_backward_dq(float *dq, const float *dout, const float *q, const float *lse,
                          const float *D, int nh, int Dh, const float *k, const float *v,
                          size_t kv_stride, const AttnRange *r, int nr) {
    ATTN_DISPATCH_DH(Dh, row_backward_dq(dq, dout, q, lse, D, nh, Dh_, k, v, kv_stride, r, nr));
}

void attn_row_backward_dkv(float *dk, float *dv, const float *k, const float *v,
                           size_t kv_stride, int lo, int hi, const float *q, const float *dout,
                           const float *lse, const float *D, int nh, int Dh) {
    ATTN_DISPATCH_DH(Dh, row_backward_dkv(dk, dv, k, v, kv_stride, lo, hi, q, dout, lse, D, nh, Dh_));
}

void attn_rowdot(float *D, const float *dout, const float *o, size_t rows, int Dh) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) D[r] = dotf(dout + r * Dh, o + r * Dh, Dh);
}

// ---- Dense causal / sliding-window attention ----

static inline int window_lo(int t, int window) {
    return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}

void attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                  int B, int T, int H, int G, int Dh, int window) {
    NSA_ASSERT(B > 0 && T > 0 && G > 0 && H % G == 0 && Dh > 0);
    const int rep = H / G;
    const size_t ks = (size_t)G * Dh;
    const long rows = (long)B * T * G;
    // Row (b, t, g) costs O(t): round-robin rows so each thread gets early and late ones.
#pragma omp parallel for schedule(static, 1)
    for (long row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        size_t qoff = ((size_t)(b * T + t) * H + (size_t)g * rep);
        size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        AttnRange range = {window_lo(t, window), t + 1};
        attn_row_forward(o + qoff * Dh, lse + qoff, q + qoff * Dh, rep, Dh, k + kvoff, v + kvoff,
                         ks, &range, 1);
    }
}

size_t attn_backward_work_bytes(int B, int T, int H) {
    return (size_t)B * T * H * sizeof(float);
}

void attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                   const float *k, const float *v, const float *o, const float *lse,
                   void *work, int B, int T, int H, int G, int Dh, int window) {
    NSA_ASSERT(B > 0 && T > 0 && G > 0 && H % G == 0 && Dh > 0);
    const int rep = H / G;
    const size_t ks = (size_t)G * Dh;
    float *D = work;  // [B, T, H]
    attn_rowdot(D, dout, o, (size_t)B * T * H, Dh);

    const long rows = (long)B * T * G;
#pragma omp parallel for schedule(static, 1)
    for (long row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        size_t qoff = ((size_t)(b * T + t) * H + (size_t)g * rep);
        size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        AttnRange range = {window_lo(t, window), t + 1};
        attn_row_backward_dq(dq + qoff * Dh, dout + qoff * Dh, q + qoff * Dh, lse + qoff,
                             D + qoff, rep, Dh, k + kvoff, v + kvoff, ks, &range, 1);
    }

    // Key-parallel pass: task (b, g, key block) owns dk/dv rows of its keys and visits the
    // queries that see them in ascending order, so the summation order is fixed.
    const int nkb = (T + ATTN_KEY_BLOCK - 1) / ATTN_KEY_BLOCK;
    const long tasks = (long)B * G * nkb;
#pragma omp parallel for schedule(static, 1)
    for (long task = 0; task < tasks; task++) {
        int kb = (int)(task % nkb), g = (int)(task / nkb % G), b = (int)(task / nkb / G);
        int klo = kb * ATTN_KEY_BLOCK, khi = klo + ATTN_KEY_BLOCK < T ? klo + ATTN_KEY_BLOCK : T;
        int tmax = T - 1;
        if (window > 0 && khi - 1 + window - 1 < tmax) tmax = khi - 1 + window - 1;
        size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        for (int t = klo; t <= tmax; t++) {
            int lo = window_lo(t, window) > klo ? window_lo(t, window) : klo;
            int hi = t + 1 < khi ? t + 1 : khi;
            if (lo >= hi) continue;
            size_t qoff = ((size_t)(b * T + t) * H + (size_t)g * rep);
            attn_row_backward_dkv(dk + kvoff, dv + kvoff, k + kvoff, v + kvoff, ks, lo, hi,
                                  q + qoff * Dh, dout + qoff * Dh, lse + qoff, D + qoff, rep, Dh);
        }
    }
}
