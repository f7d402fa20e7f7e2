// q4k_avx2.c: the Q4_K product with AVX2, eight weight rows per vector.
//
// The AVX-512 path's layout (q4k_avx512.c) at half the width: lane r of every vector
// belongs to weight row r, so the integer sums come out one lane per row. Without VNNI,
// vpmaddubsw multiplies the u8 weights by the broadcast s8 activations and adds pairs
// into int16; eight such steps cover a 32-weight sub-block without saturating (each
// int16 collects 16 products of at most 15·127: 30480 < 32767), and vpmaddwd then applies
// the sub-block scale while widening to int32. Compiled for AVX2 by function attribute
// (it runs only where q4k.c's dispatch found AVX2, FMA and F16C); results are
// bit-identical to q4k_rows_ref.
#include <immintrin.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/q4k_impl.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET

enum {
    G = 8,    // weight rows per group: one per 32-bit lane
    TI = 2,   // activation rows per register tile (16 ymm registers: 8 hold the weights)
    BCH = 4,  // blocks unpacked at a time
};

typedef struct {
    __m256i q[64];  // q[t]: weights 4t..4t+3 of each row, one byte each
    __m256i sc[8];  // sub-block scale, as the int16 pair (sc, sc)
    __m256i mp[4];  // mins of sub-blocks 2p and 2p+1 as an int16 pair
    __m256 d, dmin;
} Unpacked;

static const uint8_t zero_block[Q4K_BLOCK_BYTES];

// y[k].lane r = x[r].lane k (8 x 8 dwords).
INLINE void transpose8(__m256i y[8], const __m256i x[8]) {
    __m256i a[8], b[8];
    for (int i = 0; i < 4; i++) {
        a[2 * i] = _mm256_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {  // b[4i+e], 128-bit lane c: rows 4i..4i+3, dword 4c+e
        b[4 * i] = _mm256_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm256_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm256_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm256_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int e = 0; e < 4; e++) {
        y[e] = _mm256_permute2x128_si256(b[e], b[4 + e], 0x20);
        y[4 + e] = _mm256_permute2x128_si256(b[e], b[4 + e], 0x31);
    }
}

INLINE void unpack_block(Unpacked *u, const uint8_t *const blk[G]) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    // Set s (32 bytes per row): nibbles (s odd: high) of qs[32·(s/2) : +32], which are the
    // weights 32·s .. 32·s+31: dwords 8s .. 8s+7.
    for (int s = 0; s < 8; s++) {
        __m256i x[G];
        for (int r = 0; r < G; r++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(blk[r] + 16 + 32 * (s / 2)));
            x[r] = _mm256_and_si256(s & 1 ? _mm256_srli_epi16(q, 4) : q, low4);
        }
        transpose8(&u->q[8 * s], x);
    }
    uint32_t scT[8][G], mpT[4][G];
    uint16_t dh[G], mh[G];
    for (int r = 0; r < G; r++) {
        uint8_t sc[8], m[8];
        q4k_unpack_scales(sc, m, blk[r] + 4);
        for (int j = 0; j < 8; j++) scT[j][r] = sc[j] | (uint32_t)sc[j] << 16;
        for (int p = 0; p < 4; p++) mpT[p][r] = m[2 * p] | (uint32_t)m[2 * p + 1] << 16;
        memcpy(&dh[r], blk[r], 2);
        memcpy(&mh[r], blk[r] + 2, 2);
    }
    for (int j = 0; j < 8; j++) u->sc[j] = _mm256_loadu_si256((const __m256i *)scT[j]);
    for (int p = 0; p < 4; p++) u->mp[p] = _mm256_loadu_si256((const __m256i *)mpT[p]);
    u->d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
    u->dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)mh));
}

static inline int32_t load32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

INLINE void tile(const int ti, __m256 acc[TI], const Unpacked *u, int nbc, const Q8Block *const a[TI], int64_t n) {
    for (int bb = 0; bb < nbc; bb++, u++) {
        __m256i s1[TI];
        for (int t = 0; t < ti; t++) s1[t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            __m256i w[8];
            for (int k = 0; k < 8; k++) w[k] = _mm256_load_si256(&u->q[8 * j + k]);
            for (int t = 0; t < ti; t++) {
                const int8_t *qa = a[t][bb * n].qs + 32 * j;
                __m256i p16 = _mm256_setzero_si256();
                for (int k = 0; k < 8; k++)
                    p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(load32(qa + 4 * k))));
                s1[t] = _mm256_add_epi32(s1[t], _mm256_madd_epi16(p16, u->sc[j]));
            }
        }
        for (int t = 0; t < ti; t++) {
            const Q8Block *ab = &a[t][bb * n];
            __m256i s2 = _mm256_setzero_si256();
            for (int p = 0; p < 4; p++)
                s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(u->mp[p], _mm256_set1_epi32(load32(&ab->bsum[2 * p]))));
            // acc + da·(d·S1 − dmin·S2), the order of q4k_rows_ref (no FMA).
            __m256 f = _mm256_sub_ps(_mm256_mul_ps(u->d, _mm256_cvtepi32_ps(s1[t])),
                                     _mm256_mul_ps(u->dmin, _mm256_cvtepi32_ps(s2)));
            acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(_mm256_set1_ps(ab->d), f));
        }
    }
}

INLINE void tile_rows(const int ti, float *accbuf, const Unpacked *u, int nbc, const Q8Block *A, int64_t n,
                      int64_t i0, int64_t b0) {
    __m256 acc[TI];
    const Q8Block *a[TI];
    for (int t = 0; t < ti; t++) {
        acc[t] = _mm256_load_ps(accbuf + (i0 + t) * G);
        a[t] = A + b0 * n + i0 + t;
    }
    tile(ti, acc, u, nbc, a, n);
    for (int t = 0; t < ti; t++) _mm256_store_ps(accbuf + (i0 + t) * G, acc[t]);
}

TARGET size_t q4k_rows_avx2_scratch(int64_t n, int64_t nb) {
    (void)nb;
    return BCH * sizeof(Unpacked) + (size_t)n * G * sizeof(float);
}

TARGET void q4k_rows_avx2(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                          int64_t r0, int64_t r1, void *scratch) {
    Unpacked *u = scratch;
    float *accbuf = (float *)(u + BCH);
    const int64_t row_bytes = nb * Q4K_BLOCK_BYTES;
    for (int64_t g0 = r0; g0 < r1; g0 += G) {
        const int nrow = (int)(r1 - g0 < G ? r1 - g0 : G);
        memset(accbuf, 0, (size_t)n * G * sizeof(float));
        for (int64_t b0 = 0; b0 < nb; b0 += BCH) {
            const int nbc = (int)(nb - b0 < BCH ? nb - b0 : BCH);
            for (int bb = 0; bb < nbc; bb++) {
                const uint8_t *rb[G];
                for (int r = 0; r < G; r++)
                    rb[r] = r < nrow ? W + (g0 + r) * row_bytes + (b0 + bb) * Q4K_BLOCK_BYTES : zero_block;
                unpack_block(&u[bb], rb);
            }
            int64_t i0 = 0;
            for (; i0 + TI <= n; i0 += TI) tile_rows(TI, accbuf, u, nbc, A, n, i0, b0);
            if (i0 < n) tile_rows(1, accbuf, u, nbc, A, n, i0, b0);
        }
        for (int64_t i = 0; i < n; i++) memcpy(Y + i * rows + g0, accbuf + i * G, (size_t)nrow * sizeof(float));
    }
}
