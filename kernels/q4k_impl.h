// q4k_impl.h: what only the Q4_K paths share: the int8 activation block and the per-path row kernels.
#ifndef NSA_Q4K_IMPL_H
#define NSA_Q4K_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/q4k.h"

_Static_assert(sizeof(Q4kBlock) == Q4K_BLOCK_BYTES, "block_q4_K is 144 bytes");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "d and dmin are stored little-endian");

// One 256-value block of an activation row after the int8 round trip (q4k.h gives the rule).
typedef struct {
    int8_t qs[Q4K_BLOCK];  // natural order
    int16_t bsum[8];       // Σ qs over each 32-value sub-block (|.| ≤ 32·127, fits int16)
    float d;               // x ≈ d · qs
    uint8_t pad[12];       // 288 bytes: 32-byte multiple
} Q8Block;

// a[b·stride] for each block b of x[cols] (zero-padded to 256·nb).
void q4k_act_quantize(Q8Block *a, int64_t stride, const float *x, int64_t cols);

// The 6-bit scales and mins of one block, as ggml's get_scale_min_k4 unpacks them, all
// eight at once: scales 0-3 and mins 0-3 are the low 6 bits of bytes 0-3 and 4-7; scales
// 4-7 and mins 4-7 take their low 4 bits from the nibbles of bytes 8-11 and their high 2
// bits from the top bits of bytes 0-3 and 4-7.
static inline void q4k_unpack_scales(uint8_t sc[8], uint8_t m[8], const uint8_t s[12]) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4), memcpy(&u1, s + 4, 4), memcpy(&u2, s + 8, 4);
    uint32_t sc_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
    uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4;
    uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 6) & 0x03030303u) << 4;
    memcpy(sc, &sc_lo, 4), memcpy(sc + 4, &sc_hi, 4);
    memcpy(m, &m_lo, 4), memcpy(m + 4, &m_hi, 4);
}

// A path computes Y[i][r] for every i < n and r0 <= r < r1 (r0 a multiple of 16), the
// activations block-major (A[b·n + i]), with `scratch` of q4k_rows_*_scratch(n, nb) bytes
// (64-byte aligned) of its own.
typedef void (*Q4kRowsFn)(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                          int64_t r0, int64_t r1, void *scratch);

void q4k_rows_ref(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                  int64_t r0, int64_t r1, void *scratch);
size_t q4k_rows_ref_scratch(int64_t n, int64_t nb);
void q4k_rows_avx2(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                   int64_t r0, int64_t r1, void *scratch);
size_t q4k_rows_avx2_scratch(int64_t n, int64_t nb);
void q4k_rows_avx512(float *Y, const uint8_t *W, const Q8Block *A, int64_t n, int64_t rows, int64_t nb,
                     int64_t r0, int64_t r1, void *scratch);
size_t q4k_rows_avx512_scratch(int64_t n, int64_t nb);

#endif
