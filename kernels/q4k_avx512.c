// q4k_avx512.c: the Q4_K product with AVX-512 VNNI (vpdpbusd), sixteen weight rows per vector.
//
// Compiled for AVX-512 by function attribute, so the file builds for any x86-64 and runs
// only where q4k.c's dispatch found the features. Layout: a group of 16 weight rows is
// unpacked block by block into vectors whose lane r belongs to row r (four 4-bit weights
// widened to bytes per lane), with its scales and mins likewise; an activation's four
// bytes are then broadcast to all lanes, so one vpdpbusd advances 16 outputs by 4 terms
// and the integer sums S1, S2 of q4k.h come out one lane per row, with no horizontal
// adds. The transposition costs a few instructions per 144-byte block and is shared by
// every activation row of the call. The float steps are q4k.h's, lane by lane, in the
// same order as q4k_rows_ref: the results are bit-identical to it.
#include <immintrin.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/q4k_impl.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define INLINE static inline __attribute__((always_inline)) TARGET

enum {
    G = 16,   // weight rows per group: one per 32-bit lane
    TI = 4,   // activation rows per register tile (4 x 16 outputs in flight)
    BCH = 4,  // blocks unpacked at a time (about 20 KB: stays in L1 across the tile loop)
};

// One block of a 16-row group, lanes = rows.
typedef struct {
    __m512i q[64];  // q[t]: weights 4t..4t+3 of each row, one byte each (t = 8·sub-block + k)
    __m512i sc[8];  // sub-block scales (int32)
    __m512i mp[4];  // mins of sub-blocks 2p and 2p+1 as an int16 pair
    __m512 d, dmin;
} Unpacked;

static const uint8_t zero_block[Q4K_BLOCK_BYTES];  // rows past the end of the matrix

// y[k].lane r = x[r].lane k (16 x 16 dwords).
INLINE void transpose16(__m512i y[16], const __m512i x[16]) {
    __m512i a[16], b[16];
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {  // b[4i+e], 128-bit lane c: rows 4i..4i+3, dword 4c+e
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int e = 0; e < 4; e++) {  // y[4c+e] = 128-bit lane c of b[e], b[4+e], b[8+e], b[12+e]
        __m512i u0 = _mm512_shuffle_i32x4(b[e], b[4 + e], 0x44), u1 = _mm512_shuffle_i32x4(b[e], b[4 + e], 0xEE);
        __m512i v0 = _mm512_shuffle_i32x4(b[8 + e], b[12 + e], 0x44);
        __m512i v1 = _mm512_shuffle_i32x4(b[8 + e], b[12 + e], 0xEE);
        y[e] = _mm512_shuffle_i32x4(u0, v0, 0x88);
        y[4 + e] = _mm512_shuffle_i32x4(u0, v0, 0xDD);
        y[8 + e] = _mm512_shuffle_i32x4(u1, v1, 0x88);
        y[12 + e] = _mm512_shuffle_i32x4(u1, v1, 0xDD);
    }
}

// Block b of the 16 rows at blk[r] (blk[r] + b·144 is row r's block).
INLINE void unpack_block(Unpacked *u, const uint8_t *const blk[G]) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    // Four 64-byte sets per row: the low and high nibbles of qs[0:64] and qs[64:128]. Set s
    // holds weights whose dword index t is first[s] + k for its dwords k < 8 and
    // first[s] + 8 + k for k >= 8 (each 32-byte half is one sub-block).
    static const int first[4] = {0, 8, 32, 40};
    for (int s = 0; s < 4; s++) {
        __m512i x[G], y[G];
        for (int r = 0; r < G; r++) {
            __m512i q = _mm512_loadu_si512(blk[r] + 16 + 64 * (s / 2));
            x[r] = _mm512_and_si512(s & 1 ? _mm512_srli_epi16(q, 4) : q, low4);
        }
        transpose16(y, x);
        for (int k = 0; k < G; k++) u->q[first[s] + (k < 8 ? k : k + 8)] = y[k];
    }
    uint8_t scT[8][G], mT[8][G];
    uint16_t dh[G], mh[G];
    for (int r = 0; r < G; r++) {
        uint8_t sc[8], m[8];
        q4k_unpack_scales(sc, m, blk[r] + 4);
        for (int j = 0; j < 8; j++) scT[j][r] = sc[j], mT[j][r] = m[j];
        memcpy(&dh[r], blk[r], 2);
        memcpy(&mh[r], blk[r] + 2, 2);
    }
    for (int j = 0; j < 8; j++) u->sc[j] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)scT[j]));
    for (int p = 0; p < 4; p++) {
        __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)mT[2 * p]));
        __m512i hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)mT[2 * p + 1]));
        u->mp[p] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
    }
    u->d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)dh));
    u->dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)mh));
}

static inline int32_t load32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// acc[0..ti) (16 outputs each) += blocks u[0..nbc) against activation rows a[ti·?]: a[t]
// points at activation row t's block of u[0]; the next block is a[t] + n.
INLINE void tile(const int ti, __m512 acc[TI], const Unpacked *u, int nbc, const Q8Block *const a[TI], int64_t n) {
    for (int bb = 0; bb < nbc; bb++, u++) {
        __m512i s1[TI];
        for (int t = 0; t < ti; t++) s1[t] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m512i w[8];
            for (int k = 0; k < 8; k++) w[k] = _mm512_load_si512(&u->q[8 * j + k]);
            for (int t = 0; t < ti; t++) {
                const int8_t *qa = a[t][bb * n].qs + 32 * j;
                __m512i isum = _mm512_setzero_si512();
                for (int k = 0; k < 8; k++) isum = _mm512_dpbusd_epi32(isum, w[k], _mm512_set1_epi32(load32(qa + 4 * k)));
                s1[t] = _mm512_add_epi32(s1[t], _mm512_mullo_epi32(isum, u->sc[j]));
            }
        }
        for (int t = 0; t < ti; t++) {
            const Q8Block *ab = &a[t][bb * n];
            __m512i s2 = _mm512_setzero_si512();
            for (int p = 0; p < 4; p++) s2 = _mm512_dpwssd_epi32(s2, u->mp[p], _mm512_set1_epi32(load32(&ab->bsum[2 * p])));
            // acc + da·(d·S1 − dmin·S2), the order of q4k_rows_ref (no FMA).
            __m512 f = _mm512_sub_ps(_mm512_mul_ps(u->d, _mm512_cvtepi32_ps(s1[t])),
                                     _mm512_mul_ps(u->dmin, _mm512_cvtepi32_ps(s2)));
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_set1_ps(ab->d), f));
        }
    }
}

INLINE void tile_rows(const int ti, float *accbuf, const Unpacked *u, int nbc, const Q8Block *A, int64_t n,
                      int64_t i0, int64_t b0) {
    __m512 acc[TI];
    const Q8Block *a[TI];
    for (int t = 0; t < ti; t++) {
        acc[t] = _mm512_load_ps(accbuf + (i0 + t) * G);
        a[t] = A + b0 * n + i0 + t;
    }
    tile(ti, acc, u, nbc, a, n);
    for (int t = 0; t < ti; t++) _mm512_store_ps(accbuf + (i0 + t) * G, acc[t]);
}

TARGET size_t q4k_rows_avx512_scratch(int64_t n, int64_t nb) {
    (void)nb;
    return BCH * sizeof(Unpacked) + (size_t)n * G * sizeof(float);
}

TARGET void q4k_rows_avx512(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                            int64_t r0, int64_t r1, void *scratch) {
    Unpacked *u = scratch;
    float *accbuf = (float *)(u + BCH);
    const int64_t row_bytes = nb * Q4K_BLOCK_BYTES;
    for (int64_t g0 = r0; g0 < r1; g0 += G) {
        const int nrow = (int)(r1 - g0 < G ? r1 - g0 : G);
        const uint8_t *blk[G];
        for (int r = 0; r < G; r++) blk[r] = r < nrow ? W + (g0 + r) * row_bytes : zero_block;
        memset(accbuf, 0, (size_t)n * G * sizeof(float));
        for (int64_t b0 = 0; b0 < nb; b0 += BCH) {
            const int nbc = (int)(nb - b0 < BCH ? nb - b0 : BCH);
            for (int bb = 0; bb < nbc; bb++) {
                const uint8_t *rb[G];
                for (int r = 0; r < G; r++) rb[r] = blk[r] + (r < nrow ? (b0 + bb) * Q4K_BLOCK_BYTES : 0);
                unpack_block(&u[bb], rb);
            }
            int64_t i0 = 0;
            for (; i0 + TI <= n; i0 += TI) tile_rows(TI, accbuf, u, nbc, A, n, i0, b0);
            switch (n - i0) {
            case 3: tile_rows(3, accbuf, u, nbc, A, n, i0, b0); break;
            case 2: tile_rows(2, accbuf, u, nbc, A, n, i0, b0); break;
            case 1: tile_rows(1, accbuf, u, nbc, A, n, i0, b0); break;
            default: break;
            }
        }
        const __mmask16 keep = (__mmask16)((1u << nrow) - 1);
        for (int64_t i = 0; i < n; i++)
            _mm512_mask_storeu_ps(Y + i * rows + g0, keep, _mm512_load_ps(accbuf + i * G));
    }
}
