// q4k.h: Q4_K weights (ggml's block_q4_K): quantize, dequantize, and the fused int8 matvec/matmul.
//
// A row of `cols` weights is padded with zeros to a multiple of 256 and stored as
// q4k_row_blocks(cols) blocks of 144 bytes, laid out exactly as ggml's block_q4_K:
// d and dmin (IEEE half, little-endian), scales[12] (eight 6-bit scales and eight 6-bit
// mins, packed as ggml's get_scale_min_k4 unpacks them), qs[128] (for each 64-weight
// pair of 32-weight sub-blocks, byte t holds weight t in its low nibble and weight t+32
// in its high nibble). Weight = d·sc·q − dmin·m. A matrix is `rows` such rows, row-major.
//
// The products quantize the activations to int8 per 256-block (as ggml's q8_K does) and
// take integer dot products. Their exact semantics, which every path (portable
// reference, AVX2, AVX-512 VNNI) reproduces bit for bit, for output y[i][r] =
// Σ_c X[i][c]·W[r][c]:
//
//   activation block b of row i (the row padded with zeros to 256·nb):
//     amax = max|x|;  non-finite amax -> da = NaN, qa = 0 (the output row becomes NaN);
//     amax < 1e-30 -> da = 0, qa = 0;  else qa = clamp(rint(x·(127/amax)), ±127), da = amax/127
//   for each weight block b, with sc_j, m_j the sub-block scales and mins (j = 0..7):
//     S1 = Σ_j sc_j·Σ_{t∈j} qw_t·qa_t,  S2 = Σ_j m_j·Σ_{t∈j} qa_t     (exact int32)
//     acc = acc + da·(d·(float)S1 − dmin·(float)S2)                    (float, b ascending)
//   y[i][r] = acc (starting from 0).
//
// Integers are exact whatever order a path adds them in, and the float steps are one
// fixed sequence per output, so a result never depends on the path, on how many other
// activation rows share the call (batch invariance) or on the thread count.
#ifndef NSA_Q4K_H
#define NSA_Q4K_H

#include <stdint.h>

#define Q4K_BLOCK 256        // weights per block
#define Q4K_BLOCK_BYTES 144  // bytes per block

typedef struct {
    uint16_t d;          // super-block scale of the sub-block scales (half)
    uint16_t dmin;       // super-block scale of the sub-block mins (half)
    uint8_t scales[12];  // 6-bit scales and mins, ggml's packing
    uint8_t qs[128];     // 4-bit quants
} Q4kBlock;

// IEEE half <-> float, round to nearest even; NaN becomes 0x7e00 with its sign (as ggml).
uint16_t q4k_fp32_to_fp16(float f);
float q4k_fp16_to_fp32(uint16_t h);

int64_t q4k_row_blocks(int64_t cols);  // ceil(cols / 256)
int64_t q4k_row_bytes(int64_t cols);   // 144 · q4k_row_blocks(cols)

// q[q4k_row_bytes(cols)] = ggml's quantize_row_q4_K_ref of x[cols] padded with zeros.
// Non-finite weights (callers reject them first) give the bytes a release build of ggml
// gives (a debug build asserts in nearest_int): garbage, but deterministic, confined to
// their own 256-block, and free of undefined behaviour.
void q4k_quantize_row(uint8_t *q, const float *x, int64_t cols);
// q[rows, q4k_row_bytes(cols)] from w[rows, cols]; threads split rows.
void q4k_quantize_rows(uint8_t *q, const float *w, int64_t rows, int64_t cols);
// x[cols] = ggml's dequantize_row_q4_K of q (padding dropped).
void q4k_dequantize_row(float *x, const uint8_t *q, int64_t cols);

// y[rows] = W · x, W [rows, cols] in Q4_K. Bit-identical to row 0 of q4k_matmul.
void q4k_matvec(float *y, const uint8_t *W, const float *x, int64_t rows, int64_t cols);
// Y[n, rows] = X[n, cols] · Wᵀ (y = x Wᵀ of a linear layer with a [out, in] weight).
void q4k_matmul(float *Y, const uint8_t *W, const float *X, int64_t n, int64_t rows, int64_t cols);
// xq[cols] = the activations the products actually use: x after its int8 round trip.
void q4k_act_dequant(float *xq, const float *x, int64_t cols);

// ---- Paths (run-time CPU dispatch)

typedef enum { Q4K_PATH_REF = 1, Q4K_PATH_AVX2, Q4K_PATH_AVX512 } Q4kPath;

// Chooses the path once: NSA_Q4K_PATH=ref|avx2|avx512 if set, else the fastest the CPU
// runs. Returns NSA_ERR (one error line) for an unknown name or a path this CPU cannot
// run. main calls it; q4k_matvec/q4k_matmul call it on first use if nobody did (and
// abort on that error, which main should have reported first).
int q4k_setup(void);
const char *q4k_path_name(void);      // the chosen path ("ref", "avx2", "avx512")
const char *q4k_path_str(Q4kPath p);  // any path's name
int q4k_path_supported(Q4kPath p);    // whether this CPU can run it
// q4k_matmul through one given path (tests, benchmarks); the path must be supported.
void q4k_matmul_path(Q4kPath p, float *Y, const uint8_t *W, const float *X, int64_t n, int64_t rows,
                     int64_t cols);

#endif
