// rng.h: the one random generator (xoshiro256**, seeded by splitmix64); its state is
// saved in checkpoints as /state attribute `rng` (uint64[4]).
#ifndef NSA_RNG_H
#define NSA_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
double rng_uniform(Rng *r);          // [0, 1), 53 bits
double rng_normal(Rng *r);           // N(0, 1), Box-Muller on two uniforms
uint64_t rng_below(Rng *r, uint64_t n);  // uniform in [0, n), unbiased
// x[i] = std · N(0, 1) and x[i] = U(−bound, bound), in index order (parameter init).
void rng_fill_normal(Rng *r, float *x, int64_t n, double std);
void rng_fill_uniform(Rng *r, float *x, int64_t n, double bound);

#endif
