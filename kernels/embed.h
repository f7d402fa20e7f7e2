// embed.h: token embedding lookup, y[r] = W[tok[r]], and its scatter-add backward.
#ifndef NSA_EMBED_H
#define NSA_EMBED_H

#include <stdint.h>

// y [rows, d]; w [V, d]; every tok[r] in [0, V) (checked: ids are validated on load).
void embed_forward(float *y, const float *w, const int32_t *tok, int64_t rows, int64_t V, int64_t d);
// The same from a Q4_K table (V rows of q4k_row_bytes(d) bytes): only the looked-up rows are
// dequantized, into y.
void embed_forward_q4k(float *y, const uint8_t *wq, const int32_t *tok, int64_t rows, int64_t V, int64_t d);
// dw [V, d] += dy [rows, d] scattered to the rows' tokens.
void embed_backward(float *dw, const float *dy, const int32_t *tok, int64_t rows, int64_t d);

#endif
