// nsa_ref.c: the materialising reference of the selected branch (tests and hangcheck
// only): per-query copies of the selected K/V rows and plain two-pass softmax attention.
#include "kernels/nsa_ref.h"

#include <math.h>
#include <string.h>

// Work: K and V copies for every row (b, t, g) [n*l', Dh], then one row's scratch:
// scores [n*l'], dK and dV copies [n*l', Dh], token positions [n*l'].
size_t nsa_slc_attn_ref_work_bytes(const NsaShape *s) {
    size_t m = (size_t)s->slc_topn * s->slc_block;
    size_t rows = (size_t)s->B * s->T * s->G;
    return (2 * rows * m * s->Dh + m + 2 * m * s->Dh) * sizeof(float) + m * sizeof(int32_t);
}

// Copies the selected K/V rows of row (b, t, g) into kc, vc; returns how many (pos gets
// their token positions).
static int ref_gather(float *kc, float *vc, int32_t *pos, const float *k, const float *v,
                      const int32_t *sel, int b, int t, int g, const NsaShape *s) {
    const int Dh = s->Dh, G = s->G;
    int m = 0;
    for (int i = 0; i < s->slc_topn; i++) {
        if (sel[i] < 0) continue;
        for (int p = sel[i] * s->slc_block; p < (sel[i] + 1) * s->slc_block && p <= t; p++) {
            size_t src = (((size_t)b * s->T + p) * G + g) * Dh;
            memcpy(kc + (size_t)m * Dh, k + src, Dh * sizeof(float));
            memcpy(vc + (size_t)m * Dh, v + src, Dh * sizeof(float));
            pos[m++] = p;
        }
    }
    return m;
}

void nsa_slc_attn_forward_ref(float *o, float *lse, const float *q, const float *k,
                              const float *v, const int32_t *idx, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const size_t mmax = (size_t)n * s->slc_block, rows = (size_t)s->B * T * G;
    const float scale = 1.0f / sqrtf((float)Dh);
    float *kcopy = work, *vcopy = kcopy + rows * mmax * Dh, *p = vcopy + rows * mmax * Dh;
    int32_t *pos = (int32_t *)(p + mmax + 2 * mmax * Dh);
    for (size_t row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        float *kc = kcopy + row * mmax * Dh, *vc = vcopy + row * mmax * Dh;
        int m = ref_gather(kc, vc, pos, k, v, idx + row * n, b, t, g, s);
        for (int h = 0; h < rep; h++) {
            size_t qoff = ((size_t)(b * T + t) * H + (size_t)g * rep + h);
            const float *qh = q + qoff * Dh;
            float *oh = o + qoff * Dh;
            for (int e = 0; e < Dh; e++) oh[e] = 0.0f;
            if (m == 0) {
                lse[qoff] = -INFINITY;
                continue;
            }
            float mx = -INFINITY, sum = 0.0f;
            for (int i = 0; i < m; i++) {
                float sc = 0.0f;
                for (int e = 0; e < Dh; e++) sc += qh[e] * kc[(size_t)i * Dh + e];
                p[i] = sc * scale;
                if (p[i] > mx) mx = p[i];
            }
            for (int i = 0; i < m; i++) sum += (p[i] = expf(p[i] - mx));
            for (int i = 0; i < m; i++)
                for (int e = 0; e < Dh; e++) oh[e] += p[i] / sum * vc[(size_t)i * Dh + e];
            lse[qoff] = mx + logf(sum);
        }
    }
}

void nsa_slc_attn_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const int32_t *idx, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const size_t mmax = (size_t)n * s->slc_block, rows = (size_t)s->B * T * G;
    const float scale = 1.0f / sqrtf((float)Dh);
    float *kcopy = work, *vcopy = kcopy + rows * mmax * Dh, *p = vcopy + rows * mmax * Dh;
    float *dkc = p + mmax, *dvc = dkc + mmax * Dh;
    int32_t *pos = (int32_t *)(dvc + mmax * Dh);
    for (size_t row = 0; row < rows; row++) {
        int g = (int)(row % G), t = (int)(row / G % T), b = (int)(row / G / T);
        float *kc = kcopy + row * mmax * Dh, *vc = vcopy + row * mmax * Dh;
        int m = ref_gather(kc, vc, pos, k, v, idx + row * n, b, t, g, s);
        memset(dkc, 0, (size_t)m * Dh * sizeof(float));
        memset(dvc, 0, (size_t)m * Dh * sizeof(float));
        for (int h = 0; h < rep; h++) {
            size_t qoff = ((size_t)(b * T + t) * H + (size_t)g * rep + h);
            if (m == 0 || lse[qoff] == -INFINITY) continue;
            const float *qh = q + qoff * Dh, *doh = dout + qoff * Dh, *oh = o + qoff * Dh;
            float *dqh = dq + qoff * Dh;
            float D = 0.0f;
            for (int e = 0; e < Dh; e++) D += doh[e] * oh[e];
            for (int i = 0; i < m; i++) {
                float sc = 0.0f, dp = 0.0f;
                for (int e = 0; e < Dh; e++) {
                    sc += qh[e] * kc[(size_t)i * Dh + e];
                    dp += doh[e] * vc[(size_t)i * Dh + e];
                }
                float pi = expf(sc * scale - lse[qoff]);
                float ds = pi * (dp - D) * scale;
                for (int e = 0; e < Dh; e++) {
                    dvc[(size_t)i * Dh + e] += pi * doh[e];
                    dkc[(size_t)i * Dh + e] += ds * qh[e];
                    dqh[e] += ds * kc[(size_t)i * Dh + e];
                }
            }
        }
        for (int i = 0; i < m; i++) {
            size_t dst = (((size_t)b * T + pos[i]) * G + g) * Dh;
            for (int e = 0; e < Dh; e++) {
                dk[dst + e] += dkc[(size_t)i * Dh + e];
                dv[dst + e] += dvc[(size_t)i * Dh + e];
            }
        }
    }
}
