// attention.c: flash-style causal / sliding-window attention and the query-tile kernels it
// is built from (shared with the NSA kernels, nsa_*.c).
#include "kernels/attention.h"

#include <stdlib.h>

#include "kernels/attn_lanes.h"
#include "kernels/common.h"

#define L ATTN_L
// Causal query tiles per task of the dense forward (tiles_forward).
#define ATTN_SUPER 8

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

static inline float dotf(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int e = 0; e < n; e++) s = fmaf(a[e], b[e], s);
    return s;
}

// ---- Kernel path ----

int attn_path_supported(AttnPath p) {
    cpu_detect();
    switch (p) {
    case ATTN_PATH_AUTO:
    case ATTN_PATH_REF: return 1;
    case ATTN_PATH_AVX2: return LANES_HAVE_256 && nsa_cpu.avx2 && nsa_cpu.fma;
    case ATTN_PATH_AVX512: return LANES_HAVE_512 && nsa_cpu.avx512f;
    }
    return 0;
}

int attn_setup(void) {
    AttnPath p = attn_path_supported(ATTN_PATH_AVX512) ? ATTN_PATH_AVX512
                 : attn_path_supported(ATTN_PATH_AVX2) ? ATTN_PATH_AVX2
                                                       : ATTN_PATH_REF;
    const char *env = getenv("NSA_ATTN_PATH");
    if (env && *env) {
        static const struct {
            const char *name;
            AttnPath path;
            int built;
            const char *cpu;
        } paths[] = {{"ref", ATTN_PATH_REF, 1, ""},
                     {"avx2", ATTN_PATH_AVX2, LANES_HAVE_256, "AVX2 and FMA"},
                     {"avx512", ATTN_PATH_AVX512, LANES_HAVE_512, "AVX-512 F/BW/DQ/VL"}};
        int found = -1;
        for (int i = 0; i < 3; i++)
            if (!strcmp(env, paths[i].name)) found = i;
        if (found < 0) {
            nsa_error("NSA_ATTN_PATH=%s: unknown attention kernel path (ref, avx2 or avx512)", env);
            return NSA_ERR;
        }
        if (!attn_path_supported(paths[found].path)) {
            if (paths[found].built)
                nsa_error("NSA_ATTN_PATH=%s: this CPU lacks %s", env, paths[found].cpu);
            else
                nsa_error("NSA_ATTN_PATH=%s: this binary was built without %s code", env, paths[found].cpu);
            return NSA_ERR;
        }
        p = paths[found].path;
    }
    nsa_cpu.attn_path = p;
    return NSA_OK;
}

const char *attn_path_name(void) { return lanes_512() ? "avx512" : lanes_256() ? "avx2" : "ref"; }

// ---- Query tiles ----

void attn_tile_rows(AttnTile *tl, int b, int T, int H, int t0, const int32_t *tlist, int nt,
                    int h0, int nh) {
    NSA_ASSERT(nt >= 1 && nh >= 1 && nt * nh <= ATTN_ROWS);
    tl->n = nt * nh;
    for (int i = 0; i < nt; i++) {
        int t = tlist ? tlist[i] : t0 + i;
        for (int h = 0; h < nh; h++) {
            tl->off[i * nh + h] = ((size_t)b * T + t) * H + h0 + h;
            tl->t[i * nh + h] = t;
        }
    }
}

AttnGrid attn_grid(int B, int T, int H, int G) {
    AttnGrid gr = {.B = B, .T = T, .H = H, .G = G};
    const int rep = H / G;
    gr.hb = rep < ATTN_ROWS ? rep : ATTN_ROWS;
    gr.nhc = (rep + gr.hb - 1) / gr.hb;
    gr.qb = ATTN_ROWS / gr.hb;
    gr.nqb = (T + gr.qb - 1) / gr.qb;
    return gr;
}

long attn_grid_tasks(const AttnGrid *gr) { return (long)gr->B * gr->G * gr->nhc * gr->nqb; }

void attn_grid_tile(AttnTile *tl, int *b, int *g, long task, const AttnGrid *gr) {
    const int rep = gr->H / gr->G;
    const long per_block = (long)gr->B * gr->G * gr->nhc;
    const int qbi = gr->nqb - 1 - (int)(task / per_block), hc = (int)(task % gr->nhc);
    *g = (int)(task / gr->nhc % gr->G), *b = (int)(task % per_block / gr->nhc / gr->G);
    const int t0 = qbi * gr->qb, h0 = hc * gr->hb;
    attn_tile_rows(tl, *b, gr->T, gr->H, t0, NULL, imin(gr->qb, gr->T - t0), *g * rep + h0,
                   imin(gr->hb, rep - h0));
}

// Row pointers of a tile (lanes past n repeat row 0; lanes_transpose never reads them).
static inline void tile_ptrs(const float **p, const float *x, const AttnTile *tl, int Dh) {
    for (int r = 0; r < L; r++) p[r] = x + tl->off[r < tl->n ? r : 0] * Dh;
}

// Rows [s0, s0 + n) of k (or v) at stride ks.
static inline void key_ptrs(const float **p, const float *k, size_t ks, int s0, int n) {
    for (int j = 0; j < n; j++) p[j] = k + (size_t)(s0 + j) * ks;
}

// The default chunk iterator: the rows' own ranges, walked in L-key steps over their union.
typedef struct {
    const AttnTile *tl;
    int s0, uhi;
} RangeChunks;

static void range_chunks_init(RangeChunks *rc, const AttnTile *tl) {
    rc->tl = tl, rc->s0 = 0x7fffffff, rc->uhi = 0;
    for (int r = 0; r < tl->n; r++)
        if (tl->lo[r] < tl->hi[r]) rc->s0 = imin(rc->s0, tl->lo[r]), rc->uhi = imax(rc->uhi, tl->hi[r]);
}

static int range_chunks_next(void *ctx, int *k0, int *nk, int *lo, int *hi) {
    RangeChunks *rc = ctx;
    if (rc->s0 >= rc->uhi) return 0;
    *k0 = rc->s0, *nk = imin(L, rc->uhi - rc->s0);
    for (int r = 0; r < rc->tl->n; r++) lo[r] = rc->tl->lo[r], hi[r] = rc->tl->hi[r];
    rc->s0 += *nk;
    return 1;
}

// Next chunk, with padding rows (r >= n) seeing nothing.
static inline int tile_chunk(AttnChunkIter next, void *ctx, int n, int *k0, int *nk, int *lo,
                             int *hi) {
    if (!next(ctx, k0, nk, lo, hi)) return 0;
    NSA_ASSERT(*nk > 0 && *nk <= L);
    for (int r = n; r < L; r++) lo[r] = hi[r] = 0;
    return 1;
}

// Whether every row r < n sees all keys [s0, s0 + nk): the chunk then needs no mask (the
// common case away from the causal diagonal; masking cost ~15% of the forward). Padding
// rows compute on zero queries and are never written back.
static inline int chunk_full(const int *lo, const int *hi, int n, int s0, int nk) {
    int full = 1;
    for (int r = 0; r < n; r++) full &= lo[r] <= s0 && hi[r] >= s0 + nk;
    return full;
}

// The online-softmax state of one query tile: scaled queries and output transposed
// ([Dh][L] each, the caller's memory), running maximum and sum per row.
typedef struct {
    float *QT, *OT;
    float m[L], l[L];
} FwdState;

KERNEL fwd_init(FwdState *st, const float *restrict q, const AttnTile *tl, int Dh) {
    const float *qp[L];
    tile_ptrs(qp, q, tl, Dh);
    lanes_transpose(st->QT, qp, tl->n, Dh, 1.0f / sqrtf((float)Dh));
    for (int r = 0; r < L; r++) st->m[r] = -INFINITY, st->l[r] = 0.0f;
    for (int i = 0; i < Dh * L; i++) st->OT[i] = 0.0f;
}

// Pooling of a chunk's unnormalised probabilities (see attention.h): window j of the chunk
// (windows first .. first + count - 1) is, over its distinct keys k = cb + c ascending that
// lie in [k0, k0 + nk), acc = fmaf(w_c, p[k - k0][r], acc) from +0, with w_c the number of
// (m, nn) that reach key c of the window (attn_pool_weight). A and BQ are the window's a and
// bq, literals for the usual shapes: the windows inside the chunk (all but the edges') then
// take all 64 rows at once with no bounds test, fully unrolled. (With run-time bounds tests
// on every key the pooling was ~15 % of the fused forward at 8k, ~7 cycles an add. Adding
// each (m, nn) in turn, 8 adds a window for (4, 2) where its 5 keys take 5 fmaf, the pooling
// was ~6.5 % of the fused compressed forward at 16k and 32k, measured by leaving it out.)
KERNEL pool_windows(float *restrict part, const float *restrict p, int k0, int nk, int j0, int nj, int A, int BQ) {
    const int nw = A + BQ - 1;  // distinct keys of a window
    float w[nw];
    for (int c = 0; c < nw; c++) w[c] = (float)attn_pool_weight(A, BQ, c);
    for (int jj = 0; jj < nj; jj++) {
        const int cb = A * (j0 + jj) - (BQ - 1) - k0;  // the window's first key, chunk-relative
        float *out = part + (size_t)jj * L;
        if (cb >= 0 && cb + nw - 1 < nk) {  // every key inside: all 64 rows at once
            float acc[L];
            for (int r = 0; r < L; r++) acc[r] = 0.0f;
            for (int c = 0; c < nw; c++) {
                const float *x = p + (size_t)(cb + c) * L;
#pragma omp simd
                for (int r = 0; r < L; r++) acc[r] = fmaf(w[c], x[r], acc[r]);
            }
            for (int r = 0; r < L; r++) out[r] = acc[r];
            continue;
        }
        for (int r0 = 0; r0 < L; r0 += 16) {
            float acc[16];
            for (int i = 0; i < 16; i++) acc[i] = 0.0f;
            for (int c = 0; c < nw; c++) {
                if (cb + c < 0 || cb + c >= nk) continue;
                const float *x = p + (size_t)(cb + c) * L + r0;
#pragma omp simd
                for (int i = 0; i < 16; i++) acc[i] = fmaf(w[c], x[i], acc[i]);
            }
            memcpy(out + r0, acc, sizeof acc);
        }
    }
}

static inline __attribute__((always_inline)) void pool_chunk(float *restrict part, const float *restrict p,
                                                            int k0, int nk, const AttnPool *pool) {
    const int a = pool->a, bq = pool->bq, j0 = attn_pool_first(pool, k0);
    const int nj = attn_pool_count(pool, k0, nk);
    NSA_ASSERT(nj <= attn_pool_max(pool));
    if (a == 4 && bq == 2)  // l' = 64, l = 32, d = 16: the paper's and `small`'s
        pool_windows(part, p, k0, nk, j0, nj, 4, 2);
    else if (a == 2 && bq == 2)  // l' = l = 2d
        pool_windows(part, p, k0, nk, j0, nj, 2, 2);
    else
        pool_windows(part, p, k0, nk, j0, nj, a, bq);
}

void attn_pool_chunk(float *part, const float *p, int k0, int nk, const AttnPool *pool) {
    pool_chunk(part, p, k0, nk, pool);
}

// One chunk of keys [s0, s0 + nk) (rows kp, vp), row r seeing [lo[r], hi[r]) of them.
// pool (NULL: none) pools the chunk's probabilities before normalisation, exp(score - base)
// (0 where masked), into part + (s0 / L) * attn_pool_max * L (pool_chunk), and bases[c * L + r]
// receives the base of chunk c = s0 / L (chunks must start at multiples of L).
KERNEL fwd_chunk(FwdState *st, const AttnPool *pool, float *restrict part, float *restrict bases,
                 const float *const *kp, const float *const *vp, int n, int s0, int nk, const int *lo,
                 const int *hi, int Dh) {
    float S[L * L], mx[L], base[L], corr[L], sum[L];
    float *restrict m = st->m, *restrict l = st->l, *restrict OT = st->OT;
    if (pool) NSA_ASSERT(s0 % L == 0);
    lanes_dot(S, st->QT, kp, nk, Dh);  // S[j][r] = q_r·k_j / sqrt(Dh)
    for (int r = 0; r < L; r++) mx[r] = m[r];
    if (chunk_full(lo, hi, n, s0, nk)) {
        for (int j = 0; j < nk; j++)
#pragma omp simd
            for (int r = 0; r < L; r++) mx[r] = S[j * L + r] > mx[r] ? S[j * L + r] : mx[r];
    } else {
        for (int j = 0; j < nk; j++) {
            const int s = s0 + j;
#pragma omp simd
            for (int r = 0; r < L; r++) {
                // Load, then select: with the load under && gcc made it a masked gather.
                const float y = S[j * L + r];
                const float x = ((s >= lo[r]) & (s < hi[r])) ? y : -INFINITY;
                S[j * L + r] = x;
                mx[r] = x > mx[r] ? x : mx[r];
            }
        }
    }
#pragma omp simd
    for (int r = 0; r < L; r++) {
        base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];  // row with no key yet: p = 0
        corr[r] = attn_expf(m[r] - base[r]);
        sum[r] = 0.0f;
    }
    lanes_exp_sum(S, sum, base, nk, L);
    if (pool) {
        pool_chunk(part + (size_t)(s0 / L) * attn_pool_max(pool) * L, S, s0, nk, pool);
        memcpy(bases + (size_t)s0, base, L * sizeof(float));  // chunk s0 / L
    }
    for (int r = 0; r < L; r++) l[r] = l[r] * corr[r] + sum[r], m[r] = mx[r];
    for (int e = 0; e < Dh; e++)
#pragma omp simd
        for (int r = 0; r < L; r++) OT[e * L + r] *= corr[r];
    lanes_axpy(OT, S, vp, nk, Dh);  // OT[e][r] += Σ_j p[j][r] v_j[e]
}

KERNEL fwd_finish(float *restrict o, float *restrict lse, const FwdState *st, const AttnTile *tl, int Dh) {
    float *orow[L], inv[L];
    for (int r = 0; r < tl->n; r++) {
        orow[r] = o + tl->off[r] * Dh;
        inv[r] = st->l[r] > 0.0f ? 1.0f / st->l[r] : 0.0f;
        lse[tl->off[r]] = st->l[r] > 0.0f ? st->m[r] + logf(st->l[r]) : -INFINITY;
    }
    lanes_untranspose(orow, st->OT, inv, tl->n, Dh);  // o_r = OT[.][r] / l_r
}

// pool, part, bases: see fwd_chunk.
KERNEL tile_forward(float *restrict o, float *restrict lse, const AttnPool *pool, float *restrict part,
                    float *restrict bases,
                    const float *restrict q, const float *restrict k, const float *restrict v,
                    size_t ks, const AttnTile *tl, AttnChunkIter next, void *ctx, int Dh) {
    float QT[Dh * L], OT[Dh * L];
    const float *kp[L], *vp[L];
    int lo[L], hi[L], s0, nk;
    FwdState st = {.QT = QT, .OT = OT};
    fwd_init(&st, q, tl, Dh);
    while (tile_chunk(next, ctx, tl->n, &s0, &nk, lo, hi)) {
        key_ptrs(kp, k, ks, s0, nk);
        key_ptrs(vp, v, ks, s0, nk);
        fwd_chunk(&st, pool, part, bases, kp, vp, tl->n, s0, nk, lo, hi, Dh);
    }
    fwd_finish(o, lse, &st, tl, Dh);
}

// Several causal query tiles of one KV head at once (rows' ranges all start at key 0): each
// chunk of keys is loaded once and used by every tile that sees it while it is in cache,
// where one tile at a time streamed all of K and V once per tile (past the LLC at 64k).
// A tile's chunks are exactly tile_forward's ([0, 64), [64, 128), ... up to its own last
// key), in the same order, so every row gets the same bits. scratch: 2 * ntl * Dh * L floats.
KERNEL tiles_forward(float *restrict o, float *restrict lse, const float *restrict q, const float *restrict k,
                     const float *restrict v, size_t ks, const AttnTile *tls, int ntl, float *scratch, int Dh) {
    FwdState st[ATTN_SUPER];
    int uhi[ATTN_SUPER], U = 0;
    NSA_ASSERT(ntl >= 1 && ntl <= ATTN_SUPER);
    for (int i = 0; i < ntl; i++) {
        st[i].QT = scratch + (size_t)2 * i * Dh * L, st[i].OT = st[i].QT + (size_t)Dh * L;
        fwd_init(&st[i], q, &tls[i], Dh);
        uhi[i] = 0;
        for (int r = 0; r < tls[i].n; r++) {
            NSA_ASSERT(tls[i].lo[r] == 0);
            uhi[i] = imax(uhi[i], tls[i].hi[r]);
        }
        U = imax(U, uhi[i]);
    }
    const float *kp[L], *vp[L];
    int lo[L], hi[L];
    for (int s0 = 0; s0 < U; s0 += L) {
        key_ptrs(kp, k, ks, s0, imin(L, U - s0));
        key_ptrs(vp, v, ks, s0, imin(L, U - s0));
        for (int i = 0; i < ntl; i++) {
            if (s0 >= uhi[i]) continue;
            for (int r = 0; r < L; r++) {
                const int in = r < tls[i].n;
                lo[r] = in ? tls[i].lo[r] : 0, hi[r] = in ? tls[i].hi[r] : 0;
            }
            fwd_chunk(&st[i], NULL, NULL, NULL, kp, vp, tls[i].n, s0, imin(L, uhi[i] - s0), lo, hi, Dh);
        }
    }
    for (int i = 0; i < ntl; i++) fwd_finish(o, lse, &st[i], &tls[i], Dh);
}

// A tile's rows split into runs for the backward's key block: rows [r0, return value) and
// the 16-key vectors [*vb, *ve) some of them see. Rows on a causal or window edge see part
// of the block and every other vector is masked for all of them, so a run computes only its
// own vectors (10 of 16 on a 64-key diagonal: a third of the window branch's work at window
// 128 and most of a short compressed block's was masked lanes). A run ends where a row's
// vectors differ, once it has BWD_RUN_MIN rows (shorter runs cost more per row than the
// masked vectors they save); rows that see nothing join any run.
#define BWD_RUN_MIN 8
static inline int bwd_run(const int *va, const int *vz, int n, int r0, int *vb, int *ve) {
    int a = L, z = 0, r = r0;
    for (; r < n; r++) {
        if (va[r] >= vz[r]) continue;
        if (a < z && (va[r] != a || vz[r] != z) && r - r0 >= BWD_RUN_MIN) break;
        a = imin(a, va[r]), z = imax(z, vz[r]);
    }
    *vb = a, *ve = z;
    return r;
}

// Keys as lanes: K (scaled) and V of the block are transposed once and the query rows
// broadcast; see attn_keys_backward_dq. P and dS are computed once for all three gradients,
// where a separate dq pass recomputed both (ds is scaled by 1/sqrt(Dh) once). A run of the
// tile's rows over the lanes of vectors [vb, vb + nv) (bwd_run) adds what the whole tile
// would: the skipped lanes hold only masked keys, which add fmaf(0, x, acc) = acc, and rows
// accumulate into dK and dV in the same order whatever the runs.
KERNEL keys_backward_dq(float *restrict dk, float *restrict dv, size_t dks, float *dq, const float *restrict k,
                        const float *restrict v, size_t ks, int k0, int nk, const float *restrict q,
                        const float *restrict dout, const float *restrict lse, const float *restrict D,
                        AttnTileIter next, void *ctx, int Dh) {
    const float scale = 1.0f / sqrtf((float)Dh);
    float KT[Dh * L], VT[Dh * L], dKT[Dh * L], dVT[Dh * L], P[L * L], dS[L * L];
    const float *kp[L], *vp[L], *qp[L], *dp[L];
    float *dqp[L];
    int va[L], vz[L];
    NSA_ASSERT(nk > 0 && nk <= L);
    key_ptrs(kp, k, ks, k0, nk);
    key_ptrs(vp, v, ks, k0, nk);
    lanes_transpose(KT, kp, nk, Dh, scale);
    lanes_transpose(VT, vp, nk, Dh, 1.0f);
    for (int i = 0; i < Dh * L; i++) dKT[i] = dVT[i] = 0.0f;
    AttnTile tl;
    while (next(&tl, ctx)) {
        tile_ptrs(qp, q, &tl, Dh);
        tile_ptrs(dp, dout, &tl, Dh);
        for (int r = 0; r < tl.n; r++) {
            const int jlo = imax(tl.lo[r] - k0, 0), jhi = imin(tl.hi[r] - k0, nk);
            va[r] = jlo < jhi ? jlo / LANE_V : 0, vz[r] = jlo < jhi ? (jhi + LANE_V - 1) / LANE_V : 0;
            dqp[r] = dq + tl.off[r] * Dh;
        }
        int vb, ve;
        for (int r0 = 0, r1; r0 < tl.n; r0 = r1) {
            r1 = bwd_run(va, vz, tl.n, r0, &vb, &ve);
            if (vb >= ve) continue;  // no row of the run sees the block: it would add only zeros
            const int m = r1 - r0, nv = ve - vb, j0 = vb * LANE_V, j1 = ve * LANE_V;
            float *Pm = P + r0 * L, *dSm = dS + r0 * L;
            lanes_dot_part(Pm, KT, qp + r0, m, Dh, vb, nv);   // P[r][j] = q_r·k_j / sqrt(Dh)
            lanes_dot_part(dSm, VT, dp + r0, m, Dh, vb, nv);  // dS[r][j] = dout_r·v_j
            for (int r = r0; r < r1; r++) {
                const float lr = lse[tl.off[r]] != -INFINITY ? lse[tl.off[r]] : 0.0f;
                const float Dv = D[tl.off[r]];
                const int jlo = tl.lo[r] - k0, jhi = imin(tl.hi[r] - k0, nk);
                if (jlo <= 0 && jhi >= L) {  // sees the whole (full) key block: no mask
                    row_exp_ds(P + r * L, dS + r * L, lr, Dv, scale);
                    continue;
                }
                row_exp_ds_mask(P + r * L, dS + r * L, lr, Dv, scale, j0, j1, jlo, jhi);
            }
            lanes_axpy_part(dVT, Pm, dp + r0, m, Dh, vb, nv);   // dVT[e][j] += Σ_r p[r][j] dout_r[e]
            lanes_axpy_part(dKT, dSm, qp + r0, m, Dh, vb, nv);  // dKT[e][j] += Σ_r ds[r][j] q_r[e]
            // dq_r += Σ_j ds[r][j] k_j over the run's keys
            rows_axpy(dqp + r0, dSm + j0, m, kp[0] + (size_t)j0 * ks, ks, imin(j1, nk) - j0, Dh);
        }
    }
    float *dkp[L], *dvp[L];
    for (int j = 0; j < nk; j++) dkp[j] = dk + (size_t)(k0 + j) * dks, dvp[j] = dv + (size_t)(k0 + j) * dks;
    rows_add_cols(dkp, dKT, L, nk, Dh);  // dk_j += dKT[.][j]
    rows_add_cols(dvp, dVT, L, nk, Dh);
}

void attn_tile_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                       size_t kv_stride, const AttnTile *tl, AttnChunkIter next, void *ctx,
                       int Dh) {
    RangeChunks rc;
    if (!next) range_chunks_init(&rc, tl), next = range_chunks_next, ctx = &rc;
    DISPATCH_DH(Dh, tile_forward(o, lse, NULL, NULL, NULL, q, k, v, kv_stride, tl, next, ctx, Dh_));
}

void attn_tile_forward_pool(float *o, float *lse, float *part, float *bases, const AttnPool *pool, const float *q,
                            const float *k, const float *v, size_t kv_stride, const AttnTile *tl, int Dh) {
    RangeChunks rc;
    range_chunks_init(&rc, tl);
    NSA_ASSERT(rc.s0 >= rc.uhi || rc.s0 == 0);  // chunks from key 0
    DISPATCH_DH(Dh, tile_forward(o, lse, pool, part, bases, q, k, v, kv_stride, tl, range_chunks_next, &rc, Dh_));
}

// The rows' lse as the factors exp(base − lse) use it: 0 where −inf (no key) or past the tile.
static inline void tile_lse(float *lser, const float *lse, const AttnTile *tl) {
    for (int r = 0; r < L; r++) lser[r] = r < tl->n && lse[tl->off[r]] != -INFINITY ? lse[tl->off[r]] : 0.0f;
}

// f = exp(f − lse) for each chunk's row of L factors: the forward's exp step (lanes_exp_sum,
// its sums unused), so the vector twins of the exponential serve here too (the portable
// loop was ~2 % of the fused forward at 64k on AVX2).
void attn_pool_factors(float *fb, int nch, const float *lse, const AttnTile *tl) {
    float lser[L], unused[L] = {0};
    tile_lse(lser, lse, tl);
    lanes_exp_sum(fb, unused, lser, nch, L);
}

KERNEL tile_probs(float *restrict P, float *restrict f, float *restrict m, const float *restrict q,
                  const float *restrict lse, const float *restrict k, size_t ks, const AttnTile *tl, int k0, int nk,
                  int Dh) {
    float QT[Dh * L], lser[L], mx[L];
    const float *qp[L], *kp[L];
    int lo[L], hi[L];
    NSA_ASSERT(nk > 0 && nk <= L);
    tile_ptrs(qp, q, tl, Dh);
    lanes_transpose(QT, qp, tl->n, Dh, 1.0f / sqrtf((float)Dh));
    tile_lse(lser, lse, tl);
    for (int r = 0; r < L; r++) {
        lo[r] = r < tl->n ? tl->lo[r] : 0, hi[r] = r < tl->n ? tl->hi[r] : 0;
        mx[r] = m[r];
    }
    key_ptrs(kp, k, ks, k0, nk);
    lanes_dot(P, QT, kp, nk, Dh);
    // The running maximum over the visible scores, as tile_forward keeps it.
    for (int j = 0; j < nk; j++) {
        const int s = k0 + j;
#pragma omp simd
        for (int r = 0; r < L; r++) {
            const float y = P[j * L + r];  // loaded unconditionally, as in fwd_chunk
            const float x = ((s >= lo[r]) & (s < hi[r])) ? y : -INFINITY;
            mx[r] = x > mx[r] ? x : mx[r];
        }
    }
    float base[L];
#pragma omp simd
    for (int r = 0; r < L; r++) {
        base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];  // no key yet: p = 0
        f[r] = attn_expf(base[r] - lser[r]);
        m[r] = mx[r];
    }
    for (int j = 0; j < nk; j++) {
        const int s = k0 + j;
#pragma omp simd
        for (int r = 0; r < L; r++) {
            const float p = attn_expf(P[j * L + r] - base[r]);
            P[j * L + r] = ((s >= lo[r]) & (s < hi[r])) ? p : 0.0f;
        }
    }
}

void attn_tile_probs(float *p, float *f, float *m, const float *q, const float *lse, const float *k,
                     size_t kv_stride, const AttnTile *tl, int k0, int nk, int Dh) {
    DISPATCH_DH(Dh, tile_probs(p, f, m, q, lse, k, kv_stride, tl, k0, nk, Dh_));
}

void attn_keys_backward_dq(float *dk, float *dv, size_t dk_stride, float *dq, const float *k, const float *v,
                           size_t kv_stride, int k0, int nk, const float *q, const float *dout, const float *lse,
                           const float *D, AttnTileIter next, void *ctx, int Dh) {
    DISPATCH_DH(Dh, keys_backward_dq(dk, dv, dk_stride, dq, k, v, kv_stride, k0, nk, q, dout, lse, D, next, ctx, Dh_));
}

AttnBwdSplit attn_bwd_split(int B, int G, int rep) {
    int want = (ATTN_BWD_TASKS + B * G - 1) / (B * G);
    if (want > rep) want = rep;
    if (want < 1) want = 1;
    AttnBwdSplit d = {.hbc = (rep + want - 1) / want};
    d.nhc = (rep + d.hbc - 1) / d.hbc;
    return d;
}

size_t attn_bwd_target(float **tdk, float **tdv, float *dk, float *dv, size_t ks, float *pk, float *pv, long task,
                       int rows, int Dh, int nhc) {
    if (nhc == 1) {
        *tdk = dk, *tdv = dv;
        return ks;
    }
    *tdk = pk + (size_t)task * rows * Dh, *tdv = pv + (size_t)task * rows * Dh;
    memset(*tdk, 0, (size_t)rows * Dh * sizeof(float));
    memset(*tdv, 0, (size_t)rows * Dh * sizeof(float));
    return (size_t)Dh;
}

void attn_bwd_add_partials(float *dk, float *dv, const float *pk, const float *pv, int B, int rows, int G, int Dh,
                           int nhc) {
    const size_t ks = (size_t)G * Dh;
#pragma omp parallel for schedule(static)
    for (long row = 0; row < (long)B * rows; row++) {
        const int b = (int)(row / rows), t = (int)(row % rows);
        for (int g = 0; g < G; g++) {
            float *dkr = dk + (size_t)row * ks + (size_t)g * Dh, *dvr = dv + (size_t)row * ks + (size_t)g * Dh;
            for (int hc = 0; hc < nhc; hc++) {
                const size_t part = ((((size_t)b * G + g) * nhc + hc) * rows + t) * Dh;
                for (int e = 0; e < Dh; e++) dkr[e] += pk[part + e], dvr[e] += pv[part + e];
            }
        }
    }
}

void attn_rowdot(float *D, const float *dout, const float *o, size_t rows, int Dh) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) D[r] = dotf(dout + r * Dh, o + r * Dh, Dh);
}

// ---- Dense causal / sliding-window attention ----

static inline int window_lo(int t, int window) {
    return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}

// Rows of grid task `task` with their dense ranges; returns the KV offset of its (b, g).
static size_t dense_tile(AttnTile *tl, long task, const AttnGrid *gr, int Dh, int window) {
    int b, g;
    attn_grid_tile(tl, &b, &g, task, gr);
    for (int r = 0; r < tl->n; r++) tl->lo[r] = window_lo(tl->t[r], window), tl->hi[r] = tl->t[r] + 1;
    return ((size_t)b * gr->T * gr->G + g) * Dh;
}

// Query tiles [t, tend) of heads [hbeg, hend) of group g, for one key block of the backward
// pass: qb positions times hb heads per tile, heads inner.
typedef struct {
    int b, g, T, H, rep, window;
    int hbeg, hend, hb, qb;
    int t, h0, tend;  // cursor: next tile starts at position t, head h0
} DenseIter;

static int dense_next(AttnTile *tl, void *ctx) {
    DenseIter *it = ctx;
    if (it->t >= it->tend) return 0;
    attn_tile_rows(tl, it->b, it->T, it->H, it->t, NULL, imin(it->qb, it->tend - it->t),
                   it->g * it->rep + it->h0, imin(it->hb, it->hend - it->h0));
    for (int r = 0; r < tl->n; r++)
        tl->lo[r] = window_lo(tl->t[r], it->window), tl->hi[r] = tl->t[r] + 1;
    it->h0 += it->hb;
    if (it->h0 >= it->hend) it->h0 = it->hbeg, it->t += it->qb;
    return 1;
}

void attn_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                  int B, int T, int H, int G, int Dh, int window) {
    NSA_ASSERT(B > 0 && T > 0 && G > 0 && H % G == 0 && Dh > 0);
    const size_t ks = (size_t)G * Dh;
    const AttnGrid gr = attn_grid(B, T, H, G);
    if (window > 0) {  // a window's keys are few and stay cached: one tile per task
        const long tasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
        for (long task = 0; task < tasks; task++) {
            AttnTile tl;
            size_t kvoff = dense_tile(&tl, task, &gr, Dh, window);
            attn_tile_forward(o, lse, q, k + kvoff, v + kvoff, ks, &tl, NULL, NULL, Dh);
        }
        return;
    }
    // Causal: ATTN_SUPER consecutive position blocks of one (b, g, head chunk) per task,
    // sharing each chunk of keys (tiles_forward); latest positions first.
    const long per_block = (long)B * G * gr.nhc, nsup = (gr.nqb + ATTN_SUPER - 1) / ATTN_SUPER;
#pragma omp parallel
    {
        float *scratch = nsa_malloc((size_t)2 * ATTN_SUPER * Dh * L * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < nsup * per_block; task++) {
            const long si = nsup - 1 - task / per_block, rest = task % per_block;
            AttnTile tls[ATTN_SUPER];
            int ntl = 0;
            size_t kvoff = 0;
            for (long qbi = si * ATTN_SUPER; qbi < gr.nqb && qbi < (si + 1) * ATTN_SUPER; qbi++) {
                // grid task of position block qbi with the same (b, g, head chunk)
                const long gt = (gr.nqb - 1 - qbi) * per_block + rest;
                kvoff = dense_tile(&tls[ntl++], gt, &gr, Dh, 0);
            }
            DISPATCH_DH(Dh, tiles_forward(o, lse, q, k + kvoff, v + kvoff, ks, tls, ntl, scratch, Dh_));
        }
        free(scratch);
    }
}

// The head of row t's window: keys [window_head(t, lp), t], the current block of lp keys
// and the one before it (from key 0 in the first two blocks).
static inline int window_head(int t, int lp) { return t / lp >= 1 ? (t / lp - 1) * lp : 0; }

// tile_forward over the rows' ranges in two parts: first each row's keys from its window's
// head on, which give oh and lsh, then the rest of its range, continuing the same online
// softmax, which give o and lse.
KERNEL tile_forward_head(float *restrict o, float *restrict lse, float *restrict oh, float *restrict lsh,
                         const float *restrict q, const float *restrict k, const float *restrict v, size_t ks,
                         const AttnTile *tl, int lp, int Dh) {
    float QT[Dh * L], OT[Dh * L];
    const float *kp[L], *vp[L];
    int lo[L], hi[L], s0, nk;
    FwdState st = {.QT = QT, .OT = OT};
    AttnTile part = *tl;
    fwd_init(&st, q, tl, Dh);
    for (int head = 1; head >= 0; head--) {
        for (int r = 0; r < tl->n; r++) {
            const int hs = imin(imax(window_head(tl->t[r], lp), tl->lo[r]), tl->hi[r]);
            part.lo[r] = head ? hs : tl->lo[r], part.hi[r] = head ? tl->hi[r] : hs;
        }
        RangeChunks rc;
        range_chunks_init(&rc, &part);
        while (tile_chunk(range_chunks_next, &rc, tl->n, &s0, &nk, lo, hi)) {
            key_ptrs(kp, k, ks, s0, nk);
            key_ptrs(vp, v, ks, s0, nk);
            fwd_chunk(&st, NULL, NULL, NULL, kp, vp, tl->n, s0, nk, lo, hi, Dh);
        }
        fwd_finish(head ? oh : o, head ? lsh : lse, &st, tl, Dh);
    }
}

void attn_window_head_forward(float *o, float *lse, float *oh, float *lsh, const float *q, const float *k,
                              const float *v, int B, int T, int H, int G, int Dh, int window, int lp) {
    NSA_ASSERT(B > 0 && T > 0 && G > 0 && H % G == 0 && Dh > 0 && lp > 0 && 2 * lp <= window);
    const size_t ks = (size_t)G * Dh;
    const AttnGrid gr = attn_grid(B, T, H, G);
    const long tasks = attn_grid_tasks(&gr);
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        AttnTile tl;
        size_t kvoff = dense_tile(&tl, task, &gr, Dh, window);
        DISPATCH_DH(Dh, tile_forward_head(o, lse, oh, lsh, q, k + kvoff, v + kvoff, ks, &tl, lp, Dh_));
    }
}

// The dense backward runs one task per (batch, KV group, head chunk): the task walks the key
// blocks in order and, for each, the query tiles that see it, computing P and dS once for
// dq, dk and dv (keys_backward_dq). It owns its dq rows outright (every key block adds to
// them in ascending order), and its group's dk, dv rows when the group is one chunk; with
// several chunks each writes a partial, and the partials are added in chunk order. The
// heads are split only when B·G is below ATTN_BWD_TASKS (attn_bwd_split), by the shape
// alone, so the bits never depend on the thread count.
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t attn_backward_work_bytes(int B, int T, int H, int G, int Dh) {
    const AttnBwdSplit d = attn_bwd_split(B, G, H / G);
    size_t bytes = align64((size_t)B * T * H * sizeof(float));
    if (d.nhc > 1) bytes += 2 * (size_t)B * G * d.nhc * T * Dh * sizeof(float);
    return bytes;
}

void attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                   const float *k, const float *v, const float *o, const float *lse,
                   void *work, int B, int T, int H, int G, int Dh, int window) {
    NSA_ASSERT(B > 0 && T > 0 && G > 0 && H % G == 0 && Dh > 0);
    const int rep = H / G;
    const size_t ks = (size_t)G * Dh;
    const AttnBwdSplit d = attn_bwd_split(B, G, rep);
    float *D = work;  // [B, T, H]
    float *pk = (float *)((char *)work + align64((size_t)B * T * H * sizeof(float)));
    float *pv = pk + (size_t)B * G * d.nhc * T * Dh;  // partials [(b, g, chunk)][T][Dh] (nhc > 1)
    attn_rowdot(D, dout, o, (size_t)B * T * H, Dh);
    const int nkb = (T + L - 1) / L;
    const long tasks = (long)B * G * d.nhc;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
        const int hc = (int)(task % d.nhc), g = (int)(task / d.nhc % G), b = (int)(task / d.nhc / G);
        const int hbeg = hc * d.hbc, hend = imin(rep, hbeg + d.hbc), hb = imin(hend - hbeg, L);
        const size_t kvoff = (size_t)b * T * ks + (size_t)g * Dh;
        float *tdk, *tdv;
        const size_t dks = attn_bwd_target(&tdk, &tdv, dk + kvoff, dv + kvoff, ks, pk, pv, task, T, Dh, d.nhc);
        for (int kb = 0; kb < nkb; kb++) {
            const int k0 = kb * L, nk = imin(L, T - k0);
            DenseIter it = {.b = b, .g = g, .T = T, .H = H, .rep = rep, .window = window, .hbeg = hbeg,
                            .hend = hend, .hb = hb, .qb = L / hb, .t = k0, .h0 = hbeg,
                            .tend = window > 0 ? imin(T, k0 + nk - 1 + window) : T};
            attn_keys_backward_dq(tdk, tdv, dks, dq, k + kvoff, v + kvoff, ks, k0, nk, q, dout, lse, D, dense_next,
                                  &it, Dh);
        }
    }
    if (d.nhc > 1) attn_bwd_add_partials(dk, dv, pk, pv, B, T, G, Dh, d.nhc);
}
