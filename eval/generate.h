// generate.h: text generation by full recompute (`nsa generate`): every new token runs
// the model over the last seq_len tokens, byte-level tokenizer.
#ifndef NSA_GENERATE_H
#define NSA_GENERATE_H

#include <stdint.h>
#include <stdio.h>

#include "autograd/graph.h"
#include "kernels/rng.h"
#include "model/model.h"

typedef struct {
    const char *ckpt, *prompt;  // prompt: non-empty; its bytes are the first tokens
    int64_t max_tokens;
    double temperature;         // 0: greedy
    uint64_t seed;              // of the sampling draws
} GenerateOpts;

// Next token after ids[0..n) by full recompute over the last seq_len of them: argmax at
// temperature 0 (ties to the lower id), else a draw from softmax(logits / temperature).
// -1 after an error line if the logits are not finite.
int32_t generate_next(Model *m, Graph *g, const int32_t *ids, int n, double temperature, Rng *rng);

// Writes the prompt, then each new byte as it comes, then a newline, to out.
int generate_run(const GenerateOpts *o, FILE *out);

#endif
