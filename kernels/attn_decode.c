// attn_decode.c: see attn_decode.h. The arithmetic mirrors attention.c's tile_forward line
// by line (which is why the same fmaf / add order appears here); only the data layout
// differs: K of a chunk transposed once to [Dh][64], each row's scores a 64-lane vector.
#include "kernels/attn_decode.h"

#include <math.h>

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
    float m[ATTN_ROWS], l[ATTN_ROWS];
    int lo[ATTN_ROWS], hi[ATTN_ROWS], s0, nk;
    for (int r = 0; r < n; r++) {
        const float *qr = q + tl->off[r] * Dh;
        for (int e = 0; e < Dh; e++) Q[r * Dh + e] = qr[e] * scale, Acc[r * Dh + e] = 0.0f;
        m[r] = -INFINITY, l[r] = 0.0f;
    }
    // Lanes past a chunk's nk keep an earlier chunk's keys (or these zeros): their scores are
    // computed and never read.
    for (int i = 0; i < Dh * L; i++) KT[i] = 0.0f;
    while (next(ctx, &s0, &nk, lo, hi)) {
        NSA_ASSERT(nk > 0 && nk <= L);
        for (int j = 0; j < nk; j++) {
            const float *kj = k + (size_t)(s0 + j) * kv_stride;
            for (int e = 0; e < Dh; e++) KT[e * L + j] = kj[e];
        }
        // Scores: fmaf over e ascending, as lanes_dot.
        for (int i = 0; i < n * L; i++) S[i] = 0.0f;
        for (int e = 0; e < Dh; e++)
            for (int r = 0; r < n; r++) {
                const float qe = Q[r * Dh + e];
                float *Sr = S + r * L;
#pragma omp simd
                for (int j = 0; j < L; j++) Sr[j] = fmaf(KT[e * L + j], qe, Sr[j]);
            }
        for (int r = 0; r < n; r++) {
            float *Sr = S + r * L;
            float mx = m[r];
            for (int j = 0; j < nk; j++) {
                const int s = s0 + j;
                const float x = s >= lo[r] && s < hi[r] ? Sr[j] : -INFINITY;
                Sr[j] = x;
                mx = x > mx ? x : mx;
            }
            const float base = mx == -INFINITY ? 0.0f : mx;
            const float corr = attn_expf(m[r] - base);
#pragma omp simd
            for (int j = 0; j < nk; j++) Sr[j] = attn_expf(Sr[j] - base);
            float sum = 0.0f;
            for (int j = 0; j < nk; j++) sum += Sr[j];
            l[r] = l[r] * corr + sum, m[r] = mx;
            float *acc = Acc + r * Dh;
            for (int e = 0; e < Dh; e++) acc[e] *= corr;
        }
        // V: fmaf over keys ascending, as lanes_axpy.
        for (int j = 0; j < nk; j++) {
            const float *vj = v + (size_t)(s0 + j) * kv_stride;
            for (int r = 0; r < n; r++) {
                const float p = S[r * L + j];
                float *acc = Acc + r * Dh;
#pragma omp simd
                for (int e = 0; e < Dh; e++) acc[e] = fmaf(p, vj[e], acc[e]);
            }
        }
    }
    for (int r = 0; r < n; r++) {
        float *orow = o + tl->off[r] * Dh;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int e = 0; e < Dh; e++) orow[e] = Acc[r * Dh + e] * inv;
        lse[tl->off[r]] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
    }
}
