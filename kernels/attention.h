// attention.h: causal / sliding-window flash attention (forward, backward) and the
// row-level building blocks (one query position against ranges of keys) that nsa.c reuses.
#ifndef NSA_ATTENTION_H
#define NSA_ATTENTION_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// Layouts (float32, row-major): q, o, dout [B, T, H, Dh]; k, v [B, T, G, Dh]; lse [B, T, H].
// GQA: query head h reads KV head h / (H/G). Scores are q·k / sqrt(Dh); lse is the
// log-sum-exp of the scaled scores over the visible keys, saved for backward.
// Key s is visible to query t iff s <= t and (window <= 0 || s > t - window).
void attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                  int B, int T, int H, int G, int Dh, int window);
size_t attn_backward_work_bytes(int B, int T, int H);
// Accumulates (+=) into dq, dk, dv. dq is query-parallel; dk, dv come from a separate
// key-parallel pass that recomputes P from q, k and lse, so every gradient row has one
// owner and the result does not depend on the thread count.
void attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                   const float *k, const float *v, const float *o, const float *lse,
                   void *work, int B, int T, int H, int G, int Dh, int window);

// ---- Building blocks (serial; callers parallelise over rows they own) ----
// A row is one query position with nh query heads that share one KV head: q, o, dq, dout
// point at nh contiguous head vectors of Dh floats, lse and D at nh floats. Key s of the
// shared head lives at k + s * kv_stride (same for v).
typedef struct {
    int lo, hi;  // keys [lo, hi)
} AttnRange;

// Online-softmax forward over the keys of r[0..nr) (in that order). No key at all gives
// o = 0 and lse = -INFINITY.
void attn_row_forward(float *o, float *lse, const float *q, int nh, int Dh, const float *k,
                      const float *v, size_t kv_stride, const AttnRange *r, int nr);
// dq += Σ_s ds_s k_s / sqrt(Dh) with p = exp(score - lse), ds = p (dout·v_s - D).
// Heads with lse = -INFINITY (saw no key) are skipped.
void attn_row_backward_dq(float *dq, const float *dout, const float *q, const float *lse,
                          const float *D, int nh, int Dh, const float *k, const float *v,
                          size_t kv_stride, const AttnRange *r, int nr);
// The key side of one row: for keys s in [lo, hi), dv_s += p dout and dk_s += ds q / sqrt(Dh),
// heads in order. dk and dv use the same kv_stride as k and v.
void attn_row_backward_dkv(float *dk, float *dv, const float *k, const float *v,
                           size_t kv_stride, int lo, int hi, const float *q, const float *dout,
                           const float *lse, const float *D, int nh, int Dh);
// D[r] = dout_r · o_r for `rows` rows of Dh floats (the softmax backward's row term).
void attn_rowdot(float *D, const float *dout, const float *o, size_t rows, int Dh);

// exp(x) to ~2 ulp in plain C that gcc vectorises (libm's expf is a scalar call in the
// hot loops); Cephes' expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial in r, times 2^n.
// Returns 0 below -87 (so exp(-INFINITY) = 0) and saturates above 88.
static inline float attn_expf(float x) {
    float xc = x > 88.0f ? 88.0f : (x < -87.0f ? -87.0f : x);
    float n = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float pow2n;
    memcpy(&pow2n, &bits, sizeof pow2n);
    return x < -87.0f ? 0.0f : p * pow2n;
}

#endif
