// rope.h: rotary position embedding, half-split pairing as Hugging Face Llama's rotate_half
// (DESIGN.md): dims i and i + Dh/2 rotate together by pos·θ^(−2i/Dh).
#ifndef NSA_ROPE_H
#define NSA_ROPE_H

#include <stdint.h>

// cs [S, Dh/2, 2] = (cos, sin) of pos·θ^(−2i/Dh) for pos < S, computed in double
// precision (float32 angles are off by ~1e-4 rad at pos 2048) and rounded once.
void rope_table(float *cs, int64_t S, int64_t dh, double theta);
// y, x [B, T, nh, Dh]; cs points at the table row of the first position (table + p0 * Dh
// for positions p0 .. p0 + T - 1: a decode step passes its own position). y may equal x.
void rope_forward(float *y, const float *x, const float *cs, int64_t B, int64_t T, int64_t nh,
                  int64_t dh);
// dx += Rᵀ dy: the rotation is orthogonal, so its transpose is the rotation by −angle.
void rope_backward(float *dx, const float *dy, const float *cs, int64_t B, int64_t T, int64_t nh,
                   int64_t dh);

#endif
