// embed.c: embedding lookup and its backward (see embed.h).
#include "kernels/embed.h"

#include <string.h>

#include "kernels/common.h"
#include "kernels/q4k.h"

void embed_forward(float *y, const float *w, const int32_t *tok, int64_t rows, int64_t V, int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        NSA_ASSERT(tok[r] >= 0 && tok[r] < V);
        memcpy(y + r * d, w + (int64_t)tok[r] * d, (size_t)d * sizeof(float));
    }
}

void embed_backward(float *dw, const float *dy, const int32_t *tok, int64_t rows, int64_t d) {
    // Serial over rows: several rows may hit one token, and this fixes their order.
    for (int64_t r = 0; r < rows; r++) {
        float *dst = dw + (int64_t)tok[r] * d;
        const float *src = dy + r * d;
        for (int64_t j = 0; j < d; j++) dst[j] += src[j];
    }
}

void embed_forward_q4k(float *y, const uint8_t *wq, const int32_t *tok, int64_t rows, int64_t V, int64_t d) {
    int64_t row_bytes = q4k_row_bytes(d);
    for (int64_t r = 0; r < rows; r++) {
        NSA_ASSERT(tok[r] >= 0 && tok[r] < V);
        q4k_dequantize_row(y + r * d, wq + (int64_t)tok[r] * row_bytes, d);
    }
}
