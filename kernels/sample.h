// sample.h: the next token from one row of logits: argmax or a seeded draw.
#ifndef NSA_SAMPLE_H
#define NSA_SAMPLE_H

#include <stdint.h>

#include "kernels/rng.h"

// temperature 0: argmax, ties to the lower id (no draw). Else one uniform draw from rng,
// inverted through the CDF of softmax(z / temperature) computed in double relative to the
// max logit, ids ascending.
int32_t sample_token(const float *z, int64_t V, double temperature, Rng *rng);

#endif
