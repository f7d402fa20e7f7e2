// vexp.h: exp(x) in plain C that gcc vectorises, for the hot loops of the attention
// kernels and the activations (libm's expf is a scalar call: with math-errno semantics gcc
// cannot vectorise it, and the SwiGLU and SiLU loops ran at ~2 ns per element).
// On AVX2 the selects below vectorise only under -fno-trapping-math (the Makefile's CFLAGS):
// gcc otherwise keeps them as branches, the loops stay scalar (SiLU, SwiGLU, the gates), and
// SwiGLU and SiLU took ~11 % of a `small` training step's samples on Zen 3 (~2 % after).
#ifndef NSA_VEXP_H
#define NSA_VEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

// exp(x) to ~2 ulp; Cephes' expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial in r, times 2^n.
// n is rounded by adding and subtracting 1.5 * 2^23 (floorf does not vectorise without
// -ffast-math). Returns 0 below -87 (so exp(-INFINITY) = 0), saturates above 88, and
// returns NaN for NaN. The clamp is written so that NaN lands on 88 (every comparison with
// NaN is false): n stays in [-126, 127], the float->int conversion and the exponent shift
// are defined for every input, and finite inputs give the same bits as ever.
static inline float nsa_expf(float x) {
    float xc = x < 88.0f ? (x > -87.0f ? x : -87.0f) : 88.0f;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = fmaf(n, 2.12194440e-4f, fmaf(n, -0.693359375f, xc));
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float pow2n;
    memcpy(&pow2n, &bits, sizeof pow2n);
    return x < -87.0f ? 0.0f : (x != x ? x : p * pow2n);
}

#endif
