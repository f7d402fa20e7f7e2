// matmul.h: the one product inference uses, y = x·Wᵀ over float32 or Q4_K weights, with every
// output element's bits independent of how many rows the call has and of the thread count.
#ifndef NSA_MATMUL_H
#define NSA_MATMUL_H

#include <stdint.h>

typedef enum { WEIGHT_F32, WEIGHT_Q4K } WeightType;

// A weight matrix [rows, cols] (nn.Linear's [out, in]) in one of the storages.
typedef struct {
    WeightType type;
    const float *f32;    // WEIGHT_F32: rows * cols floats, row-major
    const uint8_t *q4k;  // WEIGHT_Q4K: DESIGN.md's blocks, row-major
    int64_t rows, cols;
} Weight;

// y [n, w->rows] = x [n, w->cols] · Wᵀ. Batch invariance: y[i][j] is one dot product in a
// fixed order (16 interleaved partial sums over k = lane mod 16, then a fixed halving tree),
// the same whatever n is, whichever thread computes it and whichever kernel (AVX-512, AVX2 or
// the portable twin) runs; threads split the weight rows.
void matmul_xwt(float *y, const float *x, const Weight *w, int64_t n);
// y [n, cols] += b [cols] per row (a linear layer's bias, after the product).
void matmul_bias_add(float *y, const float *b, int64_t n, int64_t cols);

// The f32 kernels behind matmul_xwt (AVX-512 where the CPU has it, else AVX2 + FMA, else the
// portable loop), exposed so a test can hold them to the same bits. w [rows, cols].
void matmul_f32_ref(float *y, const float *x, const float *w, int64_t n, int64_t rows, int64_t cols);
void matmul_f32_avx512(float *y, const float *x, const float *w, int64_t n, int64_t rows, int64_t cols);
void matmul_f32_avx2(float *y, const float *x, const float *w, int64_t n, int64_t rows, int64_t cols);

#endif
