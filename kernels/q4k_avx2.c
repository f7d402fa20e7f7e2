// q4k_avx2.c: the Q4_K product with AVX2, eight weight rows per vector.
//
// The two kernels of q4k_avx512.c at half the width and without VNNI: vpmaddubsw
// multiplies u8 weights by s8 activations and adds pairs into int16, vpmaddwd applies a
// sub-block scale (or just adds pairs) into int32. Neither can saturate: a pair is at most
// 2·15·127, and the tile kernel sums eight pairs per int16 (30480 < 32767).
//  - few activation rows: each weight row's block in its own layout (a 32-byte nibble
//    plane is one sub-block), folded across eight rows by a transposing tree;
//  - many activation rows: eight rows transposed per block, lane r = row r.
// Compiled for AVX2 by function attribute (it runs only where q4k.c's dispatch found AVX2,
// FMA and F16C); results are bit-identical to q4k_rows_ref.
#include <immintrin.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/q4k_impl.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET

enum {
    G = 8,         // weight rows per group: one per 32-bit lane
    FEW = 4,       // up to this many activation rows: the direct kernel
    PREFETCH = 2,  // direct kernel: blocks ahead to prefetch per row stream (q4k_avx512.c)
    TI = 2,        // tile kernel: activation rows per register tile (16 ymm registers: 8 hold the weights)
    BCH = 4,       // tile kernel: blocks unpacked at a time
};

// ---------------------------------------------------------------------------- few activation rows

INLINE __m256i pair32(__m256i a, __m256i b) {
    return _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
}
INLINE __m256i pair64(__m256i a, __m256i b) {
    return _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
}

// q4k_unpack_scales of two blocks' headers (d, dmin, scales[12]), one per 128-bit lane:
// bytes [sc0..sc7, m0..m7] (see unpack_scales4 in q4k_avx512.c).
INLINE __m256i unpack_scales2(const uint8_t *b0, const uint8_t *b1) {
    const __m256i idx_lo =
        _mm256_broadcastsi128_si256(_mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m256i idx_hi =
        _mm256_broadcastsi128_si256(_mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
    const __m256i mask_lo = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
    const __m256i mask_nib =
        _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b0)),
                                        _mm_loadu_si128((const __m128i *)b1), 1);
    __m256i a = _mm256_shuffle_epi8(h, idx_lo), b = _mm256_shuffle_epi8(h, idx_hi);
    __m256i lo =
        _mm256_or_si256(_mm256_and_si256(a, mask_lo), _mm256_and_si256(_mm256_srli_epi16(a, 4), mask_nib));
    return _mm256_or_si256(lo, _mm256_and_si256(_mm256_srli_epi16(b, 2), _mm256_set1_epi8(0x30)));
}

// A vector whose lanes 0-3 sum to S1 and lanes 4-7 to S2 of one weight row's block (its
// [sc | m] bytes in both 128-bit lanes of u) against activation block a.
INLINE __m256i row_terms(const uint8_t *blk, __m256i u, const Q8Block *a, __m256i bsum) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i mins = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, 14, -1, 15, -1));
    __m256i v = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {  // 32 bytes of qs: sub-blocks 2c (low nibbles) and 2c+1 (high)
        __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
        for (int h = 0; h < 2; h++) {
            const int j = 2 * c + h;
            __m256i pl = _mm256_and_si256(h ? _mm256_srli_epi16(q, 4) : q, low4);
            __m256i p = _mm256_maddubs_epi16(pl, _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j)));
            v = _mm256_add_epi32(
                v, _mm256_madd_epi16(p, _mm256_shuffle_epi8(u, _mm256_set1_epi16((short)(j - 256)))));
        }
    }
    __m128i v4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    __m128i t =
        _mm256_castsi256_si128(_mm256_madd_epi16(_mm256_shuffle_epi8(u, mins), bsum));  // m_j·bsum_j pairs
    return _mm256_inserti128_si256(_mm256_castsi128_si256(v4), t, 1);
}

// Y[i·rows + g0 + r] for activation rows i < ni of A (A[b·n + i]) and weight rows r < nrow
// of the group at g0 (q4k_avx512.c's rows_few at half width).
INLINE void rows_few(const int ni, float *Y, int64_t rows, const uint8_t *W, const Q8Block *A, int64_t n,
                     int64_t nb, int64_t g0, int nrow) {
    const int64_t row_bytes = nb * Q4K_BLOCK_BYTES;
    const uint8_t *row[G];
    for (int r = 0; r < G; r++)
        row[r] = W + (g0 + (r < nrow ? r : 0)) * row_bytes;  // a tail repeats row 0, unused
    __m256 acc[FEW];
    for (int i = 0; i < ni; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const Q8Block *a = A + b * n;
        const int64_t off = b * Q4K_BLOCK_BYTES;
        if (b + PREFETCH < nb)
            for (int r = 0; r < G; r++) {
                const char *p = (const char *)row[r] + (b + PREFETCH) * Q4K_BLOCK_BYTES;
                _mm_prefetch(p, _MM_HINT_T0), _mm_prefetch(p + 64, _MM_HINT_T0),
                    _mm_prefetch(p + 143, _MM_HINT_T0);
            }
        __m256i bsum[FEW];
        for (int i = 0; i < ni; i++)
            bsum[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)a[i].bsum));
        __m256i half[2][FEW];  // per four rows: 128-bit lane 0 = S1 parts, lane 1 = S2 parts
        uint16_t dh[G], mh[G];
        for (int q = 0; q < 2; q++) {
            __m256i t[2][FEW];
            for (int k = 0; k < 4; k += 2) {
                const uint8_t *b0 = row[4 * q + k] + off, *b1 = row[4 * q + k + 1] + off;
                __m256i s = unpack_scales2(b0, b1);
                __m256i u0 = _mm256_permute2x128_si256(s, s, 0x00),
                        u1 = _mm256_permute2x128_si256(s, s, 0x11);
                for (int i = 0; i < ni; i++)
                    t[k / 2][i] =
                        pair32(row_terms(b0, u0, a + i, bsum[i]), row_terms(b1, u1, a + i, bsum[i]));
                memcpy(&dh[4 * q + k], b0, 2), memcpy(&mh[4 * q + k], b0 + 2, 2);
                memcpy(&dh[4 * q + k + 1], b1, 2), memcpy(&mh[4 * q + k + 1], b1 + 2, 2);
            }
            for (int i = 0; i < ni; i++)
                half[q][i] = pair64(t[0][i], t[1][i]);  // lane k: Σ over lane k, rows 4q..
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
        __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)mh));
        for (int i = 0; i < ni; i++) {
            __m256i s1 = _mm256_permute2x128_si256(half[0][i], half[1][i], 0x20);  // lane r: row r
            __m256i s2 = _mm256_permute2x128_si256(half[0][i], half[1][i], 0x31);
            // acc + da·(d·S1 − dmin·S2), the order of q4k_rows_ref (no FMA).
            __m256 f = _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(s1)),
                                     _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(s2)));
            acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(_mm256_set1_ps(a[i].d), f));
        }
    }
    for (int i = 0; i < ni; i++) {
        float out[G];
        _mm256_storeu_ps(out, acc[i]);
        memcpy(Y + i * rows + g0, out, (size_t)nrow * sizeof(float));
    }
}

// ---------------------------------------------------------------------------- many activation rows

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

INLINE void tile(const int ti, __m256 acc[TI], const Unpacked *u, int nbc, const Q8Block *const a[TI],
                 int64_t n) {
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
                    p16 = _mm256_add_epi16(p16,
                                           _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(load32(qa + 4 * k))));
                s1[t] = _mm256_add_epi32(s1[t], _mm256_madd_epi16(p16, u->sc[j]));
            }
        }
        for (int t = 0; t < ti; t++) {
            const Q8Block *ab = &a[t][bb * n];
            __m256i s2 = _mm256_setzero_si256();
            for (int p = 0; p < 4; p++)
                s2 = _mm256_add_epi32(
                    s2, _mm256_madd_epi16(u->mp[p], _mm256_set1_epi32(load32(&ab->bsum[2 * p]))));
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
    return n <= FEW ? 0 : BCH * sizeof(Unpacked) + (size_t)n * G * sizeof(float);
}

TARGET void q4k_rows_avx2(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                          int64_t r0, int64_t r1, void *scratch) {
    if (n <= FEW) {
        for (int64_t g0 = r0; g0 < r1; g0 += G) {
            const int nrow = (int)(r1 - g0 < G ? r1 - g0 : G);
            switch (n) {
            case 1: rows_few(1, Y, rows, W, A, n, nb, g0, nrow); break;
            case 2: rows_few(2, Y, rows, W, A, n, nb, g0, nrow); break;
            case 3: rows_few(3, Y, rows, W, A, n, nb, g0, nrow); break;
            default: rows_few(4, Y, rows, W, A, n, nb, g0, nrow); break;
            }
        }
        return;
    }
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
        for (int64_t i = 0; i < n; i++)
            memcpy(Y + i * rows + g0, accbuf + i * G, (size_t)nrow * sizeof(float));
    }
}
