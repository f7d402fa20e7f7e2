// sample.c: see sample.h.
#include "kernels/sample.h"

#include <math.h>

int32_t sample_token(const float *z, int64_t V, double temperature, Rng *rng) {
    int32_t best = 0;
    for (int64_t j = 1; j < V; j++)
        if (z[j] > z[best]) best = (int32_t)j;
    if (temperature <= 0) return best;
    double sum = 0.0;
    for (int64_t j = 0; j < V; j++) sum += exp(((double)z[j] - z[best]) / temperature);
    double u = rng_uniform(rng) * sum, acc = 0.0;
    for (int64_t j = 0; j < V; j++) {
        acc += exp(((double)z[j] - z[best]) / temperature);
        if (u < acc) return (int32_t)j;
    }
    return best;  // rounding left u at or past the total: the most likely token
}
