// attn_decode.c: see attn_decode.h. The arithmetic mirrors attention.c's tile_forward line
// by line (which is why the same fmaf / add order appears here); only the data layout
// differs: K of a chunk transposed once to [Dh][64], each row's scores a 64-lane vector.
#include "kernels/attn_decode.h"

#include <math.h>

#include "kernels/attn_lanes.h"
#include "kernels/common.h"

#define L ATTN_KEYS

void attn_rows_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                       size_t kv_stride, const AttnTile *tl, AttnChunkIter next, void *ctx, int Dh) {
    const int n = tl->n;
    NSA_ASSERT(n >= 1 && n <= ATTN_ROWS);
    const float scale = 1.0f / sqrtf((float)Dh);
    // Rows are interleaved in the inner loops (independent FMA chains); each row's own
    // operations keep tile_forward's order.
    float KT[Dh * L], Q[n * Dh], Acc[n * Dh], S[n * L];
    float m[ATTN_ROWS], l[ATTN_ROWS], *accp[ATTN_ROWS];
    int lo[ATTN_ROWS], hi[ATTN_ROWS], s0, nk;
    for (int r = 0; r < n; r++) {
        const float *qr = q + tl->off[r] * Dh;
        for (int e = 0; e < Dh; e++) Q[r * Dh + e] = qr[e] * scale, Acc[r * Dh + e] = 0.0f;
        m[r] = -INFINITY, l[r] = 0.0f, accp[r] = Acc + r * Dh;
    }
    // Lanes past a chunk's nk keep an earlier chunk's keys (or these zeros): their scores are
    // computed and never read.
    for (int i = 0; i < Dh * L; i++) KT[i] = 0.0f;
    while (next(ctx, &s0, &nk, lo, hi)) {
        NSA_ASSERT(nk > 0 && nk <= L);
        // The chunk's keys into KT with the tile kernels' register transposes (x 1.0f: the
        // same bits as a copy). The scalar copy, 64 x Dh strided stores per chunk for the
        // few rows of a decode step, was ~29 % of this kernel's samples in a batch-8
        // `nsa generate` on Zen 3 (session 10).
        const float *kp[L];
        for (int j = 0; j < nk; j++) kp[j] = k + (size_t)(s0 + j) * kv_stride;
        DISPATCH_DH(Dh, cols_from_rows(KT, L, kp, nk, Dh_, 1.0f));
        // Scores: fmaf over e ascending, as lanes_dot.
        for (int i = 0; i < n * L; i++) S[i] = 0.0f;
        for (int e = 0; e < Dh; e++)
            for (int r = 0; r < n; r++) {
                const float qe = Q[r * Dh + e];
                float *Sr = S + r * L;
#pragma omp simd
                for (int j = 0; j < L; j++) Sr[j] = fmaf(KT[e * L + j], qe, Sr[j]);
            }
        // Each row's maximum and sum run over its keys ascending, one dependent chain per
        // row; the rows go side by side (keys outer), so their chains overlap where one
        // row after another waited a compare or add latency per key.
        float mx[ATTN_ROWS], corr[ATTN_ROWS], sum[ATTN_ROWS];
        for (int r = 0; r < n; r++) mx[r] = m[r], sum[r] = 0.0f;
        for (int j = 0; j < nk; j++) {
            const int s = s0 + j;
            for (int r = 0; r < n; r++) {
                const float x = s >= lo[r] && s < hi[r] ? S[r * L + j] : -INFINITY;
                S[r * L + j] = x;
                mx[r] = x > mx[r] ? x : mx[r];
            }
        }
        for (int r = 0; r < n; r++) {
            float *Sr = S + r * L;
            const float b = mx[r] == -INFINITY ? 0.0f : mx[r];  // no key yet: p = 0
            corr[r] = attn_expf(m[r] - b);
#pragma omp simd
            for (int j = 0; j < nk; j++) Sr[j] = attn_expf(Sr[j] - b);
        }
        for (int j = 0; j < nk; j++)
            for (int r = 0; r < n; r++) sum[r] += S[r * L + j];
        for (int r = 0; r < n; r++) {
            l[r] = l[r] * corr[r] + sum[r], m[r] = mx[r];
            for (int e = 0; e < Dh; e++) accp[r][e] *= corr[r];
        }
        // V: fmaf over keys ascending, as lanes_axpy, through the tile kernels' rows_axpy
        // (rows' accumulators in registers across the chunk's keys; the loop here kept them
        // in memory and each key waited on the previous key's store: ~36 % of this kernel's
        // samples in the same profile).
        DISPATCH_DH(Dh, rows_axpy(accp, S, n, v + (size_t)s0 * kv_stride, kv_stride, nk, Dh_));
    }
    for (int r = 0; r < n; r++) {
        float *orow = o + tl->off[r] * Dh;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int e = 0; e < Dh; e++) orow[e] = Acc[r * Dh + e] * inv;
        lse[tl->off[r]] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
    }
}
