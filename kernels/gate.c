// gate.c: NSA gate activation and branch mix, forward and backward (see gate.h). Rows are
// split statically over threads; every output element belongs to one (row, head) and is
// computed in a fixed order, so results do not depend on the thread count.
#include "kernels/gate.h"

#include <math.h>

#include "kernels/common.h"
#include "kernels/vexp.h"

static inline float sigm(float x) { return 1.0f / (1.0f + nsa_expf(-x)); }  // see act.c

// Gate values of one (row, head): act over zr[branch*H + h].
static inline void gate_head(float gw[3], const float *zr, int64_t H, int64_t h, GateAct act) {
    if (act == GATE_SOFTMAX) {
        float m = fmaxf(zr[h], fmaxf(zr[H + h], zr[2 * H + h]));
        float e0 = expf(zr[h] - m), e1 = expf(zr[H + h] - m), e2 = expf(zr[2 * H + h] - m);
        float inv = 1.0f / (e0 + e1 + e2);
        gw[0] = e0 * inv, gw[1] = e1 * inv, gw[2] = e2 * inv;
    } else {
        for (int b = 0; b < 3; b++) gw[b] = sigm(zr[b * H + h]);
    }
}

void gate_weights_forward(float *gw, const float *z, int64_t rows, int64_t H, GateAct act) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++) {
            float g[3];
            gate_head(g, z + r * 3 * H, H, h, act);
            for (int b = 0; b < 3; b++) gw[r * 3 * H + b * H + h] = g[b];
        }
}

void gate_forward(float *y, const float *z, const float *oc, const float *os, const float *ow,
                  int64_t rows, int64_t H, int64_t dh, GateAct act) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++) {
            float gw[3];
            gate_head(gw, z + r * 3 * H, H, h, act);
            float *yr = y + (r * H + h) * dh;
            for (int64_t e = 0; e < dh; e++) {
                int64_t i = (r * H + h) * dh + e;
                yr[e] = gw[0] * oc[i] + gw[1] * os[i] + gw[2] * ow[i];
            }
        }
}

void gate_backward(float *dz, float *doc, float *dos, float *dow, int fresh, const float *dy, const float *z,
                   const float *oc, const float *os, const float *ow, int64_t rows, int64_t H,
                   int64_t dh, GateAct act) {
    const float *o[3] = {oc, os, ow};
    float *dO[3] = {doc, dos, dow};
    const int fz = fresh & 1, fo[3] = {fresh >> 1 & 1, fresh >> 2 & 1, fresh >> 3 & 1};
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *zr = z + r * 3 * H;
        for (int64_t h = 0; h < H; h++) {
            float gw[3], dg[3];
            gate_head(gw, zr, H, h, act);
            const float *dyh = dy + (r * H + h) * dh;
            for (int b = 0; b < 3; b++) {
                const float *ob = o[b] + (r * H + h) * dh;
                dg[b] = nsa_dot16(dyh, ob, dh);
                if (dO[b]) {
                    float *d = dO[b] + (r * H + h) * dh;
                    for (int64_t e = 0; e < dh; e++) d[e] = (fo[b] ? 0.0f : d[e]) + gw[b] * dyh[e];
                }
            }
            if (!dz) continue;
            if (act == GATE_SOFTMAX) {  // d softmax: g_b (dg_b − Σ_c g_c dg_c)
                float mean = gw[0] * dg[0] + gw[1] * dg[1] + gw[2] * dg[2];
                for (int b = 0; b < 3; b++) {
                    float *d = dz + r * 3 * H + b * H + h;
                    *d = (fz ? 0.0f : *d) + gw[b] * (dg[b] - mean);
                }
            } else {                    // d sigmoid: g (1 − g)
                for (int b = 0; b < 3; b++) {
                    float *d = dz + r * 3 * H + b * H + h;
                    *d = (fz ? 0.0f : *d) + dg[b] * gw[b] * (1.0f - gw[b]);
                }
            }
        }
    }
}
