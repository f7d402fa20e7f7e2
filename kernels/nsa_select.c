// nsa_select.c: top-n block selection (DESIGN.md, Eq. 9-10) from the compressed branch's
// attention probabilities: fused into the compressed forward (training), or recomputed from
// its saved log-sum-exp (the reference twin).
#include "kernels/nsa_select.h"

#include <omp.h>
#include <stdlib.h>

#include "kernels/attention.h"
#include "kernels/attn_lanes.h"
#include "kernels/common.h"

// The selection's work buffer holds a fixed number of scratch slots, one per thread (at most
// this many threads take part), so its size does not depend on the thread count; a slot is
// scratch only, so a task's result does not depend on which thread runs it.
#define NSA_SELECT_SLOTS 32

// Eq. 9's overlap as a pooling of compressed blocks into selection blocks: block j pools
// compressed blocks (l'/d)·j − (l/d − 1) + m + nn, m < l'/d, nn < l/d.
static AttnPool select_pool(const NsaShape *s) {
    return (AttnPool){.a = s->slc_block / s->cmp_stride, .bq = s->cmp_block / s->cmp_stride};
}

// The scratch of one task (b, g, block of qb positions), in floats: the pooled chunks part
// [ceil(Nc / 64)][attn_pool_max][ATTN_ROWS], their factors f (or the forward's bases, made
// factors in place) [ceil(Nc / 64)][ATTN_ROWS], and the block scores ps [Ns][qb].
static size_t select_slot_floats(const NsaShape *s) {
    const AttnGrid gr = attn_grid(s->B, s->T, s->H, s->G);
    const AttnPool pool = select_pool(s);
    const size_t nch = (size_t)(nsa_n_cmp(s) + ATTN_KEYS - 1) / ATTN_KEYS;
    return nch * ATTN_ROWS * (attn_pool_max(&pool) + 1) + (size_t)gr.qb * nsa_n_slc(s);
}

size_t nsa_select_work_bytes(const NsaShape *s) {
    return (size_t)NSA_SELECT_SLOTS * select_slot_floats(s) * sizeof(float);
}

// Top-n choice of position t from its block scores ps[j * sstride], j <= t / l' (Eq. 9-10
// already summed); overwrites ps.
static void select_topn(int32_t *out, float *ps_, size_t sstride, int t, const NsaShape *s) {
    const int n = s->slc_topn, lp = s->slc_block;
    const int jt = t / lp, ncand = jt + 1;
#define ps(j) ps_[(size_t)(j) * sstride]
    if (ncand <= n) {
        for (int i = 0; i < n; i++) out[i] = i < ncand ? i : -1;
        return;
    }
    // Forced blocks first (ascending, so the lowest win when n is small), then the best
    // of the rest; scores are >= 0, so -1 marks a taken block.
    int forced[3], nf = 0;
    forced[nf++] = 0;
    if (jt - 1 > 0) forced[nf++] = jt - 1;
    if (jt > 0) forced[nf++] = jt;
    int cnt = 0;
    for (int f = 0; f < nf && cnt < n; f++) {
        out[cnt++] = forced[f];
        ps(forced[f]) = -1.0f;
    }
    // The best n - cnt of the rest in one pass: best[] is kept sorted by score descending,
    // ties by lower j (a later j enters only if strictly greater), so this picks what
    // repeated arg-max with the lower-index tie rule picks, in O(ncand) instead of
    // O(n * ncand). Taken blocks (-1) and NaN scores (the comparison fails) never enter.
    const int k = n - cnt;
    int32_t best[k > 0 ? k : 1];
    float bs[k > 0 ? k : 1];
    int nb = 0;
    for (int j = 0; j < ncand && k > 0; j++) {
        const float x = ps(j);
        if (!(x >= 0.0f) || (nb == k && !(x > bs[k - 1]))) continue;
        int pos = nb < k ? nb++ : k - 1;
        while (pos > 0 && x > bs[pos - 1]) {
            bs[pos] = bs[pos - 1], best[pos] = best[pos - 1];
            pos--;
        }
        bs[pos] = x, best[pos] = j;
    }
    for (int i = 0; i < nb; i++) out[cnt++] = best[i];
    for (int i = cnt; i < n; i++) out[i] = -1;
    for (int i = 1; i < cnt; i++)  // insertion sort, n is small
        for (int a = i; a > 0 && out[a - 1] > out[a]; a--) {
            int32_t tmp = out[a];
            out[a] = out[a - 1];
            out[a - 1] = tmp;
        }
#undef ps
}

int nsa_topn_lists_from = -1;  // on every build, so that the tests link where AVX-512 is not compiled

#if LANES_HAVE_512 || LANES_HAVE_256
// Runs `call` with k the literal value of K (1..16), so that the level scans unroll their
// levels into registers (see topn_scan16).
#define TOPN_K_CASE(n, call) case n: { const int k = n; call; break; }
#define TOPN_FOR_K(K, call)                                                                      \
    switch (K) {                                                                                 \
        TOPN_K_CASE(1, call) TOPN_K_CASE(2, call) TOPN_K_CASE(3, call) TOPN_K_CASE(4, call)      \
        TOPN_K_CASE(5, call) TOPN_K_CASE(6, call) TOPN_K_CASE(7, call) TOPN_K_CASE(8, call)      \
        TOPN_K_CASE(9, call) TOPN_K_CASE(10, call) TOPN_K_CASE(11, call) TOPN_K_CASE(12, call)   \
        TOPN_K_CASE(13, call) TOPN_K_CASE(14, call) TOPN_K_CASE(15, call) TOPN_K_CASE(16, call)  \
    }

// After the level lists of positions i0 .. i0 + nl - 1 (a position's first kk levels, ids
// in idv): each position's count of real entries (an id of -1 ends its list).
static void levels_counts(int32_t (*idv)[16], int i0, int nl, const int *nc, const int *kk, int *nb) {
    for (int l = 0; l < nl; l++) {
        const int i = i0 + l;
        if (nc[i] == 0) continue;
        nb[i] = 0;
        while (nb[i] < kk[i] && idv[i][nb[i]] >= 0) nb[i]++;
    }
}
#endif

#if LANES_HAVE_512
// The AVX-512 top-n for 16 positions at once (lanes i0 .. i0 + 15 below np, n <= 16): level a of
// their best lists is one vector of scores e[a] and one of ids, sorted down the levels as
// select_topn keeps a list. A candidate x enters above every level it strictly exceeds,
// and those levels are a suffix (the list is sorted), so level a becomes level a - 1 where
// x exceeds level a - 1, x where it exceeds only level a, and stays otherwise: every level
// is updated at once, with no branch per entry. A block where no lane beats its last level
// is skipped after one comparison. Lists are K = the lanes' longest (a lane's first kk
// levels are its own list: ranks do not depend on the list's length). Each lane gets the
// ids of its first kk levels in idv and their count in nb. (One position's list per vector,
// entered one position at a time by a vector insert each, took ~2 ms of the fused
// forward's 13 at 8k.)
//
// topn_scan16 is the scan over the blocks for a literal K (topn_levels16 switches on K):
// the levels can then live in registers rather than in stack arrays indexed at run time,
// and each level's comparison is made as the update reaches it (from the last level up,
// before the level above changes), so two masks are live at a time, not K. Against the
// run-time-K loop with all K masks first: 0.94x the time of the fused forward at 8k, 0.95x
// at 16k, 0.96x at 32k, 0.98x at 64k (n = 16; Zen 4, 2 threads, medians of 20/10/6/4
// interleaved trials, the same ids); at `small`'s n = 6, 1.00x.
static inline __attribute__((always_inline)) void topn_scan16(const float *ps, int np, int i0, __mmask16 lanes,
                                                              __m512i ncv, int jm, int K, __m512 *e,
                                                              __m512i *id) {
    for (int j = 0; j < jm; j++) {
        const __m512 xr = _mm512_maskz_loadu_ps(lanes, ps + (size_t)j * np + i0);
        // A candidate counts iff j < the lane's candidates and x >= 0 (not taken, not NaN).
        const __mmask16 ok = _mm512_cmpgt_epi32_mask(ncv, _mm512_set1_epi32(j)) &
                             _mm512_cmp_ps_mask(xr, _mm512_setzero_ps(), _CMP_GE_OQ);
        if (!(ok & _mm512_cmp_ps_mask(xr, e[K - 1], _CMP_GT_OQ))) continue;
        const __m512 x = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), ok, xr);
        const __m512i jv = _mm512_set1_epi32(j);
        __mmask16 ga = _mm512_cmp_ps_mask(x, e[K - 1], _CMP_GT_OQ);
        for (int a = K - 1; a >= 1; a--) {
            const __mmask16 gb = _mm512_cmp_ps_mask(x, e[a - 1], _CMP_GT_OQ);  // level a - 1 before its update
            e[a] = _mm512_mask_mov_ps(_mm512_mask_mov_ps(e[a], ga, x), gb, e[a - 1]);
            id[a] = _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(id[a], ga, jv), gb, id[a - 1]);
            ga = gb;
        }
        e[0] = _mm512_mask_mov_ps(e[0], ga, x);
        id[0] = _mm512_mask_mov_epi32(id[0], ga, jv);
    }
}

// Lane i + 1 gets lane i (lane 0 gets lane 15): a list's entries moved down one place.
static inline __attribute__((always_inline)) __m512 lanes_down1(__m512 v) {
    const __m512i x = _mm512_castps_si512(v);
    return _mm512_castsi512_ps(_mm512_alignr_epi32(x, x, 15));
}

// The scan's second phase, from block j0 on: each lane's list in a vector of its own
// (entries down the lanes, sorted as the levels were), entered only by the lanes whose
// candidate passes. Once the 16 lists are full, a block rarely beats a given lane's last
// entry (about K / j of the time for scores in random order), but often beats some lane's,
// and the level update then costs ~5K operations for all 16 lanes. An entry here costs ~12
// for its lane: its place is the count of the list's entries >= x (the list is sorted, so
// they are a prefix: ties keep the earlier id ahead), the entries from there on move down a
// lane and x takes the place. The lists are the same, entry for entry: what a lane's list
// becomes depends only on its own candidates in order.
static inline __attribute__((always_inline)) void topn_lists16(const float *ps, int np, int i0, __mmask16 lanes,
                                                               __m512i ncv, int j0, int jm, int K, __m512 *e,
                                                               __m512i *id) {
    __m512 L[16], I[16];  // lane l's list: scores L[l], ids I[l] (bit patterns), K entries used
    for (int a = 0; a < 16; a++)
        L[a] = a < K ? e[a] : _mm512_set1_ps(-INFINITY),
        I[a] = _mm512_castsi512_ps(a < K ? id[a] : _mm512_set1_epi32(-1));
    tr16x16(L), tr16x16(I);
    __m512 thr = e[K - 1];  // each lane's last entry
    const __m512i last = _mm512_set1_epi32(K - 1);
    const __mmask16 used = (__mmask16)((1u << K) - 1);
    for (int j = j0; j < jm; j++) {
        const __m512 xr = _mm512_maskz_loadu_ps(lanes, ps + (size_t)j * np + i0);
        __mmask16 enter = _mm512_cmpgt_epi32_mask(ncv, _mm512_set1_epi32(j)) &
                          _mm512_cmp_ps_mask(xr, _mm512_setzero_ps(), _CMP_GE_OQ) &
                          _mm512_cmp_ps_mask(xr, thr, _CMP_GT_OQ);
        if (!enter) continue;
        _Alignas(64) float xs[16];
        _mm512_store_ps(xs, xr);
        const __m512 jv = _mm512_castsi512_ps(_mm512_set1_epi32(j));
        while (enter) {
            const int l = __builtin_ctz(enter);
            enter &= (__mmask16)(enter - 1);
            const __m512 x = _mm512_set1_ps(xs[l]);
            const __mmask16 keep = _mm512_mask_cmp_ps_mask(used, L[l], x, _CMP_GE_OQ), at = (__mmask16)(keep + 1);
            L[l] = _mm512_mask_mov_ps(_mm512_mask_mov_ps(lanes_down1(L[l]), keep, L[l]), at, x);
            I[l] = _mm512_mask_mov_ps(_mm512_mask_mov_ps(lanes_down1(I[l]), keep, I[l]), at, jv);
            thr = _mm512_mask_permutexvar_ps(thr, (__mmask16)(1u << l), last, L[l]);
        }
    }
    tr16x16(I);
    for (int a = 0; a < K; a++) id[a] = _mm512_castps_si512(I[a]);
}

// The block from which topn_levels16 keeps a list per lane instead of levels: with 16 lanes
// each entering about K / j of the time, the level update (~5K operations for all lanes) and
// the lanes' own entries (~12 each, ~16K / j a block) cost the same near j = 4K.
static int topn_lists_from(int K) { return nsa_topn_lists_from >= 0 ? nsa_topn_lists_from : 4 * K; }

// See topn_scan16.
static void topn_levels16(const float *ps, int np, int i0, const int *nc, const int *kk, int32_t (*idv)[16],
                          int *nb) {
    const int nl = nsa_imin(16, np - i0);
    const __mmask16 lanes = (__mmask16)((1u << nl) - 1);  // a tile of 21 positions ends in 5
    int K = 0, jm = 0;
    for (int l = 0; l < nl; l++)
        if (nc[i0 + l] > 0) K = nsa_imax(K, kk[i0 + l]), jm = nsa_imax(jm, nc[i0 + l]);
    if (K == 0) return;
    __m512 e[16];
    __m512i id[16];
    for (int a = 0; a < K; a++) e[a] = _mm512_set1_ps(-INFINITY), id[a] = _mm512_set1_epi32(-1);
    const __m512i ncv = _mm512_maskz_loadu_epi32(lanes, nc + i0);  // 0 candidates past np
    const int j0 = nsa_imin(jm, topn_lists_from(K));
    TOPN_FOR_K(K, topn_scan16(ps, np, i0, lanes, ncv, j0, k, e, id));
    if (j0 < jm) topn_lists16(ps, np, i0, lanes, ncv, j0, jm, K, e, id);
    for (int a = 0; a < K; a++) {
        _Alignas(64) int32_t v[16];
        _mm512_store_si512(v, id[a]);
        for (int l = 0; l < nl; l++) idv[i0 + l][a] = v[l];
    }
    levels_counts(idv, i0, nl, nc, kk, nb);
}
#endif

#if LANES_HAVE_256
// topn_levels16 for 8 positions with AVX2 (lanes i0 .. i0 + 7 below np, n <= 16): the same
// level lists, candidate test and masked level updates, the masks as vectors and the
// selections as blends; topn_scan8 is topn_scan16's scan (a literal K, each level's mask
// made as the update reaches it). The 2 x K level vectors do not all fit the 16 registers;
// the ones that do not stay in L1. Against the run-time-K loop, measured only on Zen 4
// running this AVX2 build (x86-64-v3; 2 threads, interleaved, the same ids): 0.977x the
// fused forward's time at 8k, 0.992x at 32k, 0.993x at `small`'s shape.
static inline __attribute__((always_inline)) void topn_scan8(const float *ps, int np, int i0, int nl, __m256i lanes,
                                                             __m256i ncv, int jm, int K, __m256 *e, __m256 *id) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < jm; j++) {
        const float *row = ps + (size_t)j * np + i0;
        const __m256 xr = nl == 8 ? _mm256_loadu_ps(row) : _mm256_maskload_ps(row, lanes);
        // A candidate counts iff j < the lane's candidates and x >= 0 (not taken, not NaN).
        const __m256 ok = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(ncv, _mm256_set1_epi32(j))),
                                        _mm256_cmp_ps(xr, _mm256_setzero_ps(), _CMP_GE_OQ));
        if (!_mm256_movemask_ps(_mm256_and_ps(ok, _mm256_cmp_ps(xr, e[K - 1], _CMP_GT_OQ)))) continue;
        const __m256 x = _mm256_blendv_ps(ninf, xr, ok);
        const __m256 jv = _mm256_castsi256_ps(_mm256_set1_epi32(j));
        __m256 ga = _mm256_cmp_ps(x, e[K - 1], _CMP_GT_OQ);
        for (int a = K - 1; a >= 1; a--) {
            const __m256 gb = _mm256_cmp_ps(x, e[a - 1], _CMP_GT_OQ);  // level a - 1 before its update
            e[a] = _mm256_blendv_ps(_mm256_blendv_ps(e[a], x, ga), e[a - 1], gb);
            id[a] = _mm256_blendv_ps(_mm256_blendv_ps(id[a], jv, ga), id[a - 1], gb);
            ga = gb;
        }
        e[0] = _mm256_blendv_ps(e[0], x, ga);
        id[0] = _mm256_blendv_ps(id[0], jv, ga);
    }
}

static void topn_levels8(const float *ps, int np, int i0, const int *nc, const int *kk, int32_t (*idv)[16],
                         int *nb) {
    const int nl = nsa_imin(8, np - i0);
    int K = 0, jm = 0, ncl[8];
    for (int l = 0; l < 8; l++) {
        ncl[l] = l < nl ? nc[i0 + l] : 0;  // 0 candidates past np
        if (ncl[l] > 0) K = nsa_imax(K, kk[i0 + l]), jm = nsa_imax(jm, ncl[l]);
    }
    if (K == 0) return;
    __m256 e[16], id[16];  // ids as float bit patterns: blends move bits
    for (int a = 0; a < K; a++) e[a] = _mm256_set1_ps(-INFINITY), id[a] = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    const __m256i ncv = _mm256_loadu_si256((const __m256i *)ncl);
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(nl), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    TOPN_FOR_K(K, topn_scan8(ps, np, i0, nl, lanes, ncv, jm, k, e, id));
    for (int a = 0; a < K; a++) {
        int32_t v[8];
        _mm256_storeu_si256((__m256i *)v, _mm256_castps_si256(id[a]));
        for (int l = 0; l < nl; l++) idv[i0 + l][a] = v[l];
    }
    levels_counts(idv, i0, nl, nc, kk, nb);
}
#endif

// select_topn for the nt positions of a tile at once (position i's scores at ps[j * np + i],
// its choice at out + i * ostride), with the same result bits: each position still meets its
// candidates in ascending j and keeps the same sorted best list. What changes is the test of
// whether a candidate enters: one vector comparison across the tile's positions per block
// against each position's current entry threshold, where select_topn spent a scalar
// compare-and-branch per position and block. Once a position's list is full, few candidates
// pass (about k ln(ncand / k) of ncand for scores in random order), so the insertions left
// to scalar code are a small part of the work. On the AVX-512 and AVX2 paths with n <= 16,
// topn_levels16 / topn_levels8 build the lists instead (same lists, same bits: the
// fused-vs-separate selection tests hold them to select_topn on every path).
static void select_topn_tile(int32_t *out, size_t ostride, float *ps, int np, int t0, int nt,
                             const NsaShape *s) {
    const int n = s->slc_topn, lp = s->slc_block;
    NSA_ASSERT(np <= ATTN_ROWS && nt <= np);
    int nc[ATTN_ROWS], cnt[ATTN_ROWS], kk[ATTN_ROWS], nb[ATTN_ROWS], jmax = 0;
    float thr[ATTN_ROWS];
#if LANES_HAVE_512 || LANES_HAVE_256
    const int vec = (lanes_512() || lanes_256()) && n <= 16;  // the level lists, in idv
    int32_t idv[vec ? ATTN_ROWS : 1][16];
#else
    const int vec = 0;
#endif
    int32_t(*best)[n] = vec ? NULL : nsa_malloc((size_t)nt * n * sizeof(int32_t));
    float(*bs)[n] = vec ? NULL : nsa_malloc((size_t)nt * n * sizeof(float));
    for (int i = 0; i < np; i++) {
        nc[i] = 0, thr[i] = INFINITY;  // never enters
        if (i >= nt) continue;
        const int jt = (t0 + i) / lp, ncand = jt + 1;
        int32_t *o = out + (size_t)i * ostride;
        if (ncand <= n) {
            for (int a = 0; a < n; a++) o[a] = a < ncand ? a : -1;
            cnt[i] = -1;  // done
            continue;
        }
        int forced[3], nf = 0;  // as in select_topn
        forced[nf++] = 0;
        if (jt - 1 > 0) forced[nf++] = jt - 1;
        if (jt > 0) forced[nf++] = jt;
        cnt[i] = 0;
        for (int f = 0; f < nf && cnt[i] < n; f++) {
            o[cnt[i]++] = forced[f];
            ps[(size_t)forced[f] * np + i] = -1.0f;
        }
        kk[i] = n - cnt[i], nb[i] = 0;
        if (kk[i] > 0) nc[i] = ncand, thr[i] = -INFINITY, jmax = ncand > jmax ? ncand : jmax;
    }
#if LANES_HAVE_512
    if (vec && lanes_512())
        for (int i0 = 0; i0 < np; i0 += 16) topn_levels16(ps, np, i0, nc, kk, idv, nb);
#endif
#if LANES_HAVE_256
    if (vec && lanes_256())
        for (int i0 = 0; i0 < np; i0 += 8) topn_levels8(ps, np, i0, nc, kk, idv, nb);
#endif
    for (int j = 0; j < (vec ? 0 : jmax); j++) {
        const float *x = ps + (size_t)j * np;
        // Enters iff x >= 0 (not taken, not NaN) and, once the list is full, x > its last.
        uint64_t enter = 0;
#if LANES_HAVE_512
        if (lanes_512() && np % 16 == 0) {  // gcc kept the portable loop scalar
            const __m512i jv = _mm512_set1_epi32(j);
            for (int i = 0; i < np; i += 16) {
                const __m512 xv = _mm512_loadu_ps(x + i);
                const __mmask16 e = _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(nc + i), jv) &
                                    _mm512_cmp_ps_mask(xv, _mm512_setzero_ps(), _CMP_GE_OQ) &
                                    _mm512_cmp_ps_mask(xv, _mm512_loadu_ps(thr + i), _CMP_GT_OQ);
                enter |= (uint64_t)e << i;
            }
        } else
#endif
#pragma omp simd reduction(| : enter)
        for (int i = 0; i < np; i++) enter |= (uint64_t)((j < nc[i]) & (x[i] >= 0.0f) & (x[i] > thr[i])) << i;
        while (enter) {
            const int i = __builtin_ctzll(enter), k = kk[i];
            enter &= enter - 1;
            int pos = nb[i] < k ? nb[i]++ : k - 1;
            while (pos > 0 && x[i] > bs[i][pos - 1]) {
                bs[i][pos] = bs[i][pos - 1], best[i][pos] = best[i][pos - 1];
                pos--;
            }
            bs[i][pos] = x[i], best[i][pos] = j;
            if (nb[i] == k) thr[i] = bs[i][k - 1];
        }
    }
    // Ascending ids: the picks are distinct blocks < ncand, so a bitmap sorts them.
    const int nw = (jmax + 64) / 64;
    uint64_t bits_s[64], *bits = nw <= 64 ? bits_s : nsa_malloc((size_t)nw * sizeof(uint64_t));
    for (int i = 0; i < nt; i++) {
        if (cnt[i] < 0) continue;
        int32_t *o = out + (size_t)i * ostride;
        int c = 0;
        for (int w = 0; w < nw; w++) bits[w] = 0;
        for (int a = 0; a < cnt[i]; a++) bits[o[a] / 64] |= (uint64_t)1 << (o[a] % 64);
        for (int a = 0; a < (kk[i] > 0 ? nb[i] : 0); a++) {
#if LANES_HAVE_512 || LANES_HAVE_256
            const int32_t b = vec ? idv[i][a] : best[i][a];  // the list the path kept
#else
            const int32_t b = best[i][a];
#endif
            bits[b / 64] |= (uint64_t)1 << (b % 64);
        }
        for (int w = 0; w < nw; w++)
            for (uint64_t b = bits[w]; b; b &= b - 1) o[c++] = w * 64 + __builtin_ctzll(b);
        for (int a = c; a < n; a++) o[a] = -1;
    }
    if (bits != bits_s) free(bits);
    free(best), free(bs);
}

// ps[i] += Σ_h ph[h * nt + i], heads in order, for the nt positions of a tile whose rows are
// head-major (select_tile_rows): each head's scores are a plain run of nt floats, which gcc
// vectorises on every path. (With the tiles' usual position-major rows, r = i * hb + h, the
// row scores were deinterleaved by head with permutes, in AVX-512 and AVX2 twins of their
// own; the fused compressed forward takes the same time either way, fused / plain 1.08-1.10
// at 64k and 1.12 at 16k in interleaved runs, Zen 4, 2 threads.)
static void heads_add(float *restrict ps, const float *restrict ph, int hb, int nt) {
    for (int h = 0; h < hb; h++)
#pragma omp simd
        for (int i = 0; i < nt; i++) ps[i] += ph[h * nt + i];
}

void nsa_select_add_heads(float *ps, const float *ph, int hb, int nt) { heads_add(ps, ph, hb, nt); }

// The selection's query tile: nt positions from t0 times heads [h0, h0 + hb) of batch b,
// head-major (row r = h * nt + i), where attn_tile_rows puts the heads inner. A row's
// attention does not depend on its place in the tile; the head sum reads whole runs.
static void select_tile_rows(AttnTile *tl, int b, int T, int H, int t0, int nt, int h0, int hb) {
    NSA_ASSERT(nt >= 1 && hb >= 1 && nt * hb <= ATTN_ROWS);
    tl->n = nt * hb;
    for (int h = 0; h < hb; h++)
        for (int i = 0; i < nt; i++) {
            tl->off[h * nt + i] = ((size_t)b * T + t0 + i) * H + h0 + h;
            tl->t[h * nt + i] = t0 + i;
        }
}

// Eq. 9 and 10 for the qb positions of a tile from its pooled chunks (attn_pool_chunk over
// the rows' exp(score − base), f = exp(base − lse) per chunk and row): for each block
// j < ncand and row r, v = Σ over the chunks touching j, ascending, of part · f (one fmaf
// each, from +0), then ps[j][i] += v of the position's rows, heads in order (the rows
// head-major, nt positions). Chunks cover the compressed blocks [0, nvis) (the tile's last
// position's): a block a row cannot see adds exp(−inf) = +0 to its pool and a chunk past
// the row's blocks adds fmaf(+0, f, v) = v, so a row's scores do not depend on the tile it
// is in. The chunks' window ranges [first, last] (attn_pool_first, attn_pool_count) ascend
// with the chunk, so a cursor finds block j's chunks (working them out per block and chunk
// took three integer divisions each: 0.99x the fused forward's time without them at 8k and
// 32k, 2 threads, Zen 3).
static void select_fold(float *restrict ps, int qb, const float *restrict part, const float *restrict f, int nvis,
                        int ncand, int hb, int nt, const AttnPool *pool) {
    const int jb = attn_pool_max(pool), L = ATTN_ROWS, nch = (nvis + L - 1) / L;
    int first[nch + 1], last[nch + 1];
    for (int ch = 0; ch < nch; ch++) {
        first[ch] = attn_pool_first(pool, ch * L);
        last[ch] = first[ch] + attn_pool_count(pool, ch * L, nsa_imin(L, nvis - ch * L)) - 1;
    }
    for (int j = 0, c = 0; j < ncand; j++) {
        float v[ATTN_ROWS];
        for (int r = 0; r < L; r++) v[r] = 0.0f;
        while (c < nch && last[c] < j) c++;
        for (int ch = c; ch < nch && first[ch] <= j; ch++) {  // last[ch] >= last[c] >= j
            const float *pp = part + ((size_t)ch * jb + j - first[ch]) * L, *ff = f + (size_t)ch * L;
#pragma omp simd
            for (int r = 0; r < L; r++) v[r] = fmaf(pp[r], ff[r], v[r]);
        }
        heads_add(ps + (size_t)j * qb, v, hb, nt);
    }
}

// See nsa_select.h: p_cmp recomputed from the saved lse chunk by chunk (attn_tile_probs),
// pooled and folded as the fused forward does it, then select_topn per position. The
// reference twin of nsa_cmp_attn_select_forward, and decoding's selection.
size_t nsa_select_rows_floats(const NsaShape *s) { return select_slot_floats(s); }

void nsa_select_rows(int32_t *out, const float *q, const float *kc, const float *lse, int b, int Tq, int i0, int nt,
                     int p0, int g, float *scratch, const NsaShape *s) {
    const int H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn, Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)G * Dh;
    const AttnGrid gr = attn_grid(1, 1, H, G);
    const AttnPool pool = select_pool(s);
    const int jb = attn_pool_max(&pool), nch = (Nc + ATTN_KEYS - 1) / ATTN_KEYS;
    float *part = scratch, *f = part + (size_t)nch * jb * ATTN_ROWS, *ps = f + (size_t)nch * ATTN_ROWS;
    const int tlast = p0 + i0 + nt - 1, nvis = nsa_cmp_visible(s, Nc, tlast), ncand = tlast / s->slc_block + 1;
    const float *kcg = kc + ((size_t)b * Nc * G + g) * Dh;
    NSA_ASSERT(nt >= 1 && nt <= gr.qb);
    for (size_t i = 0; i < (size_t)ncand * gr.qb; i++) ps[i] = 0.0f;
    float P[ATTN_KEYS * ATTN_ROWS];
    for (int h0 = 0; h0 < rep; h0 += gr.hb) {
        const int hb = nsa_imin(gr.hb, rep - h0);
        AttnTile tl;
        select_tile_rows(&tl, b, Tq, H, i0, nt, g * rep + h0, hb);
        for (int r = 0; r < tl.n; r++) tl.lo[r] = 0, tl.hi[r] = nsa_cmp_visible(s, Nc, p0 + tl.t[r]);
        float m[ATTN_ROWS];
        for (int r = 0; r < ATTN_ROWS; r++) m[r] = -INFINITY;
        for (int c0 = 0; c0 < nvis; c0 += ATTN_KEYS) {
            const int nk = nsa_imin(ATTN_KEYS, nvis - c0);
            attn_tile_probs(P, f + (size_t)c0, m, q, lse, kcg, ks, &tl, c0, nk, Dh);
            attn_pool_chunk(part + (size_t)(c0 / ATTN_KEYS) * jb * ATTN_ROWS, P, c0, nk, &pool);
        }
        select_fold(ps, gr.qb, part, f, nvis, ncand, hb, nt, &pool);
    }
    for (int i = 0; i < nt; i++) select_topn(out + (size_t)i * G * n, ps + i, (size_t)gr.qb, p0 + i0 + i, s);
}

void nsa_select(int32_t *idx, const float *q, const float *kc, const float *lse, void *work,
                const NsaShape *s) {
    const int T = s->T, G = s->G, n = s->slc_topn;
    const AttnGrid gr = attn_grid(s->B, T, s->H, G);
    const long tasks = (long)s->B * G * gr.nqb;
    const int nthr = nsa_imin(omp_get_max_threads(), NSA_SELECT_SLOTS);
#pragma omp parallel num_threads(nthr)
    {
        float *scratch = (float *)work + (size_t)omp_get_thread_num() * select_slot_floats(s);
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < tasks; task++) {
            const int qbi = (int)(task % gr.nqb), g = (int)(task / gr.nqb % G), b = (int)(task / gr.nqb / G);
            const int t0 = qbi * gr.qb, nt = nsa_imin(gr.qb, T - t0);
            nsa_select_rows(idx + (((size_t)b * T + t0) * G + g) * n, q, kc, lse, b, T, t0, nt, 0, g, scratch, s);
        }
    }
}

// ---- Fused with the compressed forward ----

size_t nsa_cmp_select_work_bytes(const NsaShape *s) { return nsa_select_work_bytes(s); }

void nsa_cmp_attn_select_forward(float *o, float *lse, int32_t *idx, const float *q,
                                 const float *kc, const float *vc, void *work, const NsaShape *s) {
    const int T = s->T, H = s->H, G = s->G, Dh = s->Dh, rep = H / G, n = s->slc_topn;
    const int Nc = nsa_n_cmp(s);
    const size_t ks = (size_t)G * Dh;
    const AttnGrid gr = attn_grid(s->B, T, H, G);
    const AttnPool pool = select_pool(s);
    const int jb = attn_pool_max(&pool), nch = (Nc + ATTN_KEYS - 1) / ATTN_KEYS;
    const long tasks = (long)s->B * G * gr.nqb;
    // A slot per thread and the tasks handed out as threads finish: a task's bits do not
    // depend on who runs it (the slot is scratch only), and on a shared host one core is often
    // slower for a while, which fixed shares (slot i's tasks i, i + 32, ...) left the other
    // waiting on: 0.91x the time at 32k with 2 threads, 0.96x at 64k, 0.89x at `small`'s
    // training shape (medians of interleaved runs, AMD Zen 3).
    const int nthr = nsa_imin(omp_get_max_threads(), NSA_SELECT_SLOTS);
#pragma omp parallel num_threads(nthr)
    {
        float *part = (float *)work + (size_t)omp_get_thread_num() * select_slot_floats(s);
        float *f = part + (size_t)nch * jb * ATTN_ROWS, *ps = f + (size_t)nch * ATTN_ROWS;
        // Costliest (last) position blocks first.
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < tasks; task++) {
            int qbi = gr.nqb - 1 - (int)(task / ((long)s->B * G)), g = (int)(task % G);
            int b = (int)(task / G % s->B), t0 = qbi * gr.qb, nt = nsa_imin(gr.qb, T - t0);
            const size_t kvoff = ((size_t)b * Nc * G + g) * Dh;
            const int nvis = nsa_cmp_visible(s, Nc, t0 + nt - 1), ncand = (t0 + nt - 1) / s->slc_block + 1;
            for (size_t i = 0; i < (size_t)ncand * gr.qb; i++) ps[i] = 0.0f;
            for (int h0 = 0; h0 < rep; h0 += gr.hb) {
                const int hb = nsa_imin(gr.hb, rep - h0);
                AttnTile tl;
                select_tile_rows(&tl, b, T, H, t0, nt, g * rep + h0, hb);
                for (int r = 0; r < tl.n; r++) tl.lo[r] = 0, tl.hi[r] = nsa_cmp_visible(s, Nc, tl.t[r]);
                attn_tile_forward_pool(o, lse, part, f, &pool, q, kc + kvoff, vc + kvoff, ks, &tl, Dh);
                // The chunks' bases become attn_tile_probs's factors: the bits nsa_select gets,
                // with one exp per row and chunk.
                attn_pool_factors(f, (nvis + ATTN_KEYS - 1) / ATTN_KEYS, lse, &tl);
                select_fold(ps, gr.qb, part, f, nvis, ncand, hb, nt, &pool);
            }
            select_topn_tile(idx + (((size_t)b * T + t0) * G + g) * n, (size_t)G * n, ps, gr.qb, t0, nt, s);
        }
    }
}
