// q4k_avx512.c: the Q4_K product with AVX-512 VNNI (vpdpbusd).
//
// Compiled for AVX-512 by function attribute, so the file builds for any x86-64 and runs
// only where q4k.c's dispatch found the features. Two kernels, bit-identical to
// q4k_rows_ref and so to each other (q4k.h: integer sums, then one fixed float sequence):
//  - few activation rows (decoding, matvec): each weight row's block is dotted in its own
//    layout and sixteen rows' partial sums are folded into one vector by a transposing
//    tree; the weights are touched once, with no rearranging, which a memory-bound
//    product cannot afford;
//  - many activation rows: a group of 16 weight rows is transposed block by block so that
//    lane r of every vector belongs to row r, then an activation's four bytes are
//    broadcast and one vpdpbusd advances 16 outputs by 4 terms, with no horizontal adds.
//    The transposition is paid once per block and shared by every activation row.
#include <immintrin.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/q4k_impl.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define INLINE static inline __attribute__((always_inline)) TARGET

enum {
    G = 16,   // weight rows per group: one per 32-bit lane
    FEW = 4,  // up to this many activation rows: the direct kernel
    // Direct kernel: blocks ahead to prefetch in each of its 16 row streams. The hardware
    // prefetchers alone kept a 16384 x 16384 matvec near 55 % of read bandwidth; this,
    // over 90 % (2 to 4 measured alike).
    PREFETCH = 2,
    TI = 4,   // tile kernel: activation rows per register tile (4 x 16 outputs in flight)
    BCH = 4,  // tile kernel: blocks unpacked at a time (about 20 KB: stays in L1)
};

static inline int32_t load32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// ---------------------------------------------------------------------------- block headers

// The first 16 bytes (d, dmin, scales[12]) of four blocks, one per 128-bit lane.
INLINE __m512i load_headers4(const uint8_t *b0, const uint8_t *b1, const uint8_t *b2, const uint8_t *b3) {
    __m512i h = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)b0));
    h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)b1), 1);
    h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)b2), 2);
    return _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)b3), 3);
}

// q4k_unpack_scales on each 128-bit lane of load_headers4: bytes [sc0..sc7, m0..m7].
// Byte i of scales[] sits at header byte 4 + i. The low bits come from one shuffle (sc0-3
// and m0-3 are bytes 0-7 masked to 6 bits, sc4-7 and m4-7 the low and high nibbles of bytes
// 8-11), the top two bits of sc4-7 and m4-7 from the top bits of bytes 0-3 and 4-7.
INLINE __m512i unpack_scales4(__m512i h) {
    const __m512i idx_lo =
        _mm512_broadcast_i32x4(_mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i idx_hi =
        _mm512_broadcast_i32x4(_mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
    const __m512i mask_lo =
        _mm512_broadcast_i32x4(_mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
    const __m512i mask_nib =
        _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
    __m512i a = _mm512_shuffle_epi8(h, idx_lo), b = _mm512_shuffle_epi8(h, idx_hi);
    __m512i lo =
        _mm512_or_si512(_mm512_and_si512(a, mask_lo), _mm512_and_si512(_mm512_srli_epi16(a, 4), mask_nib));
    // (byte >> 6) << 4 == (byte >> 2) & 0x30; the 16-bit shift's spill from the next byte is masked off.
    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(b, 2), _mm512_set1_epi8(0x30));
    return _mm512_or_si512(lo, hi);
}

// d and dmin of 16 rows (lanes) from their four load_headers4 vectors.
INLINE void headers_d(__m512 *d, __m512 *dmin, const __m512i h[4]) {
    const __m512i first = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i lo = _mm512_permutex2var_epi32(h[0], first, h[1]),
            hi = _mm512_permutex2var_epi32(h[2], first, h[3]);
    __m512i dm = _mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1);  // d | dmin << 16 per row
    *d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
    *dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
}

// Dword w of each row's 128-bit lane in four unpack_scales4 vectors, for 16 rows (lanes),
// as bytes 4w..4w+3 of lane r: w = 0, 1 give sc0-3, sc4-7; w = 2, 3 give m0-3, m4-7.
INLINE void transpose_scales(__m512i out[2], const __m512i u[4], int mins) {
    const __m512i pick_sc = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i pick = _mm512_add_epi32(pick_sc, _mm512_set1_epi32(2 * mins));
    __m512i r01 = _mm512_permutex2var_epi32(u[0], pick, u[1]),
            r23 = _mm512_permutex2var_epi32(u[2], pick, u[3]);
    out[0] = _mm512_shuffle_i64x2(r01, r23, 0x44), out[1] = _mm512_shuffle_i64x2(r01, r23, 0xEE);
}

// Sub-block scales of 16 rows, lanes = rows: sc[j] (int32). vpshufb indexes bytes of the
// 128-bit lane: dword l of it starts at byte 4l.
INLINE void scales_lanes(__m512i sc[8], const __m512i u[4]) {
    __m512i four[2];
    transpose_scales(four, u, 0);
    for (int j = 0; j < 8; j++) {
        const int b = j % 4;
        const __m128i idx =
            _mm_setr_epi8(b, -1, -1, -1, 4 + b, -1, -1, -1, 8 + b, -1, -1, -1, 12 + b, -1, -1, -1);
        sc[j] = _mm512_shuffle_epi8(four[j / 4], _mm512_broadcast_i32x4(idx));
    }
}

// Sub-block mins of 16 rows, lanes = rows: mp[p] = m_2p | m_2p+1 << 16, an int16 pair for
// vpdpwssd.
INLINE void mins_lanes(__m512i mp[4], const __m512i u[4]) {
    __m512i four[2];
    transpose_scales(four, u, 1);
    for (int p = 0; p < 4; p++) {
        const int b = 2 * (p % 2);
        const __m128i idx = _mm_setr_epi8(b, -1, b + 1, -1, 4 + b, -1, 5 + b, -1, 8 + b, -1, 9 + b, -1,
                                          12 + b, -1, 13 + b, -1);
        mp[p] = _mm512_shuffle_epi8(four[p / 2], _mm512_broadcast_i32x4(idx));
    }
}

// ---------------------------------------------------------------------------- few activation rows

INLINE __m512i pair32(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}
INLINE __m512i pair64(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}
// Sums of 128-bit lanes (0+1, 2+3) of a and of b: [a01, a23, b01, b23].
INLINE __m512i pair128(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xDD));
}

// 128-bit lanes (lo, lo, hi, hi).
INLINE __m512i lanes_2x2(__m128i lo, __m128i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(lo)),
                              _mm256_broadcastsi128_si256(hi), 1);
}

// A block's 128 bytes of quants as four 64-byte nibble planes: the low and high nibbles of
// qs[0:64] and of qs[64:128]. Plane c holds two sub-blocks, one per 32-byte half:
// (0,2), (1,3), (4,6), (5,7).
INLINE void planes(__m512i pl[4], const uint8_t *blk) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    __m512i q0 = _mm512_loadu_si512(blk + 16), q1 = _mm512_loadu_si512(blk + 80);
    pl[0] = _mm512_and_si512(q0, low4);
    pl[1] = _mm512_and_si512(_mm512_srli_epi16(q0, 4), low4);
    pl[2] = _mm512_and_si512(q1, low4);
    pl[3] = _mm512_and_si512(_mm512_srli_epi16(q1, 4), low4);
}

// The activation bytes that meet plane c.
INLINE void act_planes(__m512i act[4], const Q8Block *a) {
    static const int off[4][2] = {{0, 64}, {32, 96}, {128, 192}, {160, 224}};
    for (int c = 0; c < 4; c++)
        act[c] = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a->qs + off[c][0]))),
            _mm256_loadu_si256((const __m256i *)(a->qs + off[c][1])), 1);
}

// A vector whose lanes sum to S1 of one weight row's block and one activation block.
// vpackssdw of planes (0,1) puts, in 128-bit lane k, four int16 of plane 0 then four of
// plane 1, i.e. of sub-blocks (0,1) for k < 2 and (2,3) for k >= 2 (planes (2,3): 4-7);
// sc01 and sc23 are the matching scale patterns. A dpbusd lane holds 4 products of at
// most 15·127, so the int16 packing cannot saturate.
INLINE __m512i row_s1(const __m512i pl[4], const __m512i act[4], __m512i sc01, __m512i sc23) {
    const __m512i z = _mm512_setzero_si512();
    __m512i p01 =
        _mm512_packs_epi32(_mm512_dpbusd_epi32(z, pl[0], act[0]), _mm512_dpbusd_epi32(z, pl[1], act[1]));
    __m512i p23 =
        _mm512_packs_epi32(_mm512_dpbusd_epi32(z, pl[2], act[2]), _mm512_dpbusd_epi32(z, pl[3], act[3]));
    return _mm512_add_epi32(_mm512_madd_epi16(p01, sc01), _mm512_madd_epi16(p23, sc23));
}

// Y[i·rows + g0 + r] for activation rows i < ni of A (A[b·n + i]) and weight rows r < nrow
// of the group at g0. Per block: the rows' S1 vectors go through a transposing tree
// (pair32, pair64 per quad of rows, pair128 across quads) that leaves S1 one lane per
// row; S2 and the float steps then work in that layout.
INLINE void rows_few(const int ni, float *Y, int64_t rows, const uint8_t *W, const Q8Block *A, int64_t n,
                     int64_t nb, int64_t g0, int nrow) {
    const __m512i pick01 = lanes_2x2(_mm_setr_epi8(0, -1, 0, -1, 0, -1, 0, -1, 1, -1, 1, -1, 1, -1, 1, -1),
                                     _mm_setr_epi8(2, -1, 2, -1, 2, -1, 2, -1, 3, -1, 3, -1, 3, -1, 3, -1));
    const __m512i pick23 = lanes_2x2(_mm_setr_epi8(4, -1, 4, -1, 4, -1, 4, -1, 5, -1, 5, -1, 5, -1, 5, -1),
                                     _mm_setr_epi8(6, -1, 6, -1, 6, -1, 6, -1, 7, -1, 7, -1, 7, -1, 7, -1));
    const int64_t row_bytes = nb * Q4K_BLOCK_BYTES;
    const uint8_t *row[G];
    for (int r = 0; r < G; r++)
        row[r] = W + (g0 + (r < nrow ? r : 0)) * row_bytes;  // a tail repeats row 0, unused
    __m512 acc[FEW];
    for (int i = 0; i < ni; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const Q8Block *a = A + b * n;
        if (b + PREFETCH < nb)
            for (int r = 0; r < G; r++) {
                const char *p = (const char *)row[r] + (b + PREFETCH) * Q4K_BLOCK_BYTES;
                _mm_prefetch(p, _MM_HINT_T0), _mm_prefetch(p + 64, _MM_HINT_T0),
                    _mm_prefetch(p + 143, _MM_HINT_T0);
            }
        __m512i act[FEW][4];
        for (int i = 0; i < ni; i++) act_planes(act[i], a + i);
        const int64_t off = b * Q4K_BLOCK_BYTES;
        __m512i h[4], sc4[4], u[4][FEW];
        for (int q = 0; q < 4; q++) {
            const uint8_t *blk[4] = {row[4 * q] + off, row[4 * q + 1] + off, row[4 * q + 2] + off,
                                     row[4 * q + 3] + off};
            h[q] = load_headers4(blk[0], blk[1], blk[2], blk[3]);
            sc4[q] = unpack_scales4(h[q]);
            const __m512i s[4] = {
                _mm512_shuffle_i32x4(sc4[q], sc4[q], 0x00), _mm512_shuffle_i32x4(sc4[q], sc4[q], 0x55),
                _mm512_shuffle_i32x4(sc4[q], sc4[q], 0xAA), _mm512_shuffle_i32x4(sc4[q], sc4[q], 0xFF)};
            __m512i t[2][FEW];
            for (int k = 0; k < 4; k += 2) {  // s[k]: row k's [sc | m] in every lane
                __m512i r0[FEW], r1[FEW], pl[4];
                planes(pl, blk[k]);
                __m512i sc01 = _mm512_shuffle_epi8(s[k], pick01), sc23 = _mm512_shuffle_epi8(s[k], pick23);
                for (int i = 0; i < ni; i++) r0[i] = row_s1(pl, act[i], sc01, sc23);
                planes(pl, blk[k + 1]);
                sc01 = _mm512_shuffle_epi8(s[k + 1], pick01), sc23 = _mm512_shuffle_epi8(s[k + 1], pick23);
                for (int i = 0; i < ni; i++) r1[i] = row_s1(pl, act[i], sc01, sc23);
                for (int i = 0; i < ni; i++) t[k / 2][i] = pair32(r0[i], r1[i]);
            }
            for (int i = 0; i < ni; i++) u[q][i] = pair64(t[0][i], t[1][i]);  // 128-bit lane k: rows 4q..4q+3
        }
        __m512i mp[4];
        mins_lanes(mp, sc4);
        __m512 d, dmin;
        headers_d(&d, &dmin, h);
        for (int i = 0; i < ni; i++) {
            __m512i s1 = pair128(pair128(u[0][i], u[1][i]), pair128(u[2][i], u[3][i]));  // lane r: row r
            __m512i s2 = _mm512_setzero_si512();
            for (int p = 0; p < 4; p++)
                s2 = _mm512_dpwssd_epi32(s2, mp[p], _mm512_set1_epi32(load32(&a[i].bsum[2 * p])));
            // acc + da·(d·S1 − dmin·S2), the order of q4k_rows_ref (no FMA).
            __m512 f = _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(s1)),
                                     _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(s2)));
            acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(_mm512_set1_ps(a[i].d), f));
        }
    }
    for (int i = 0; i < ni; i++)
        _mm512_mask_storeu_ps(Y + i * rows + g0, (__mmask16)((1u << nrow) - 1), acc[i]);
}

// ---------------------------------------------------------------------------- many activation rows

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
        __m512i u0 = _mm512_shuffle_i32x4(b[e], b[4 + e], 0x44),
                u1 = _mm512_shuffle_i32x4(b[e], b[4 + e], 0xEE);
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
    __m512i h[4], sc4[4];
    for (int q = 0; q < 4; q++) {
        h[q] = load_headers4(blk[4 * q], blk[4 * q + 1], blk[4 * q + 2], blk[4 * q + 3]);
        sc4[q] = unpack_scales4(h[q]);
    }
    scales_lanes(u->sc, sc4);
    mins_lanes(u->mp, sc4);
    headers_d(&u->d, &u->dmin, h);
}

// acc[t] (16 outputs) += blocks u[0..nbc) against activation row t < ti, whose block for
// u[0] is a[t] and for u[bb] is a[t] + bb·n.
INLINE void tile(const int ti, __m512 acc[TI], const Unpacked *u, int nbc, const Q8Block *const a[TI],
                 int64_t n) {
    for (int bb = 0; bb < nbc; bb++, u++) {
        __m512i s1[TI];
        for (int t = 0; t < ti; t++) s1[t] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m512i w[8];
            for (int k = 0; k < 8; k++) w[k] = _mm512_load_si512(&u->q[8 * j + k]);
            for (int t = 0; t < ti; t++) {
                const int8_t *qa = a[t][bb * n].qs + 32 * j;
                __m512i isum = _mm512_setzero_si512();
                for (int k = 0; k < 8; k++)
                    isum = _mm512_dpbusd_epi32(isum, w[k], _mm512_set1_epi32(load32(qa + 4 * k)));
                s1[t] = _mm512_add_epi32(s1[t], _mm512_mullo_epi32(isum, u->sc[j]));
            }
        }
        for (int t = 0; t < ti; t++) {
            const Q8Block *ab = &a[t][bb * n];
            __m512i s2 = _mm512_setzero_si512();
            for (int p = 0; p < 4; p++)
                s2 = _mm512_dpwssd_epi32(s2, u->mp[p], _mm512_set1_epi32(load32(&ab->bsum[2 * p])));
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
    return n <= FEW ? 0 : BCH * sizeof(Unpacked) + (size_t)n * G * sizeof(float);
}

TARGET void q4k_rows_avx512(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
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
                const uint8_t *blk[G];
                for (int r = 0; r < G; r++)
                    blk[r] = r < nrow ? W + (g0 + r) * row_bytes + (b0 + bb) * Q4K_BLOCK_BYTES : zero_block;
                unpack_block(&u[bb], blk);
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
