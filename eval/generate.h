// generate.h: text generation (`nsa generate`), byte-level tokenizer: through the batching
// engine and its KV cache (default), or by full recompute of every token (--no-cache, the
// reference). Generation stops after max_tokens, or when the context is full: a token is
// predicted from at most seq_len tokens (positions past seq_len have no RoPE angles and
// were never trained), so a text ends at seq_len + 1 tokens (finish_reason "context").
#ifndef NSA_GENERATE_H
#define NSA_GENERATE_H

#include <stdint.h>
#include <stdio.h>

#include "autograd/graph.h"
#include "kernels/rng.h"
#include "eval/load.h"
#include "model/model.h"

typedef struct {
    const char *ckpt;
    const char *prompt;        // --prompt: non-empty; its bytes are the first tokens
    const char *prompts_file;  // --prompts: one prompt per line (exactly one of the two is set)
    int64_t max_tokens;
    double temperature;        // 0: greedy
    uint64_t seed;             // every sequence draws from its own stream seeded with it
    int64_t batch;             // sequences decoded together (--prompts)
    int no_cache;              // full recompute per token
    Quant quant;               // QUANT_Q4K: quantize a float checkpoint in memory (a Q4_K file is always Q4_K)
} GenerateOpts;

// Next token after ids[0..n), 1 <= n <= seq_len, by a full forward over them: argmax at
// temperature 0 (ties to the lower id), else a draw from softmax(logits / temperature).
// -1 when the logits are not finite (no token drawn from them).
int32_t generate_next(Model *m, Graph *g, const int32_t *ids, int n, double temperature, Rng *rng);

// --prompt: writes the prompt, then each new byte as it comes, then a newline, to out.
// --prompts: one JSON line per prompt, in file order, to out:
// {"prompt":..., "completion":..., "tokens":N, "finish_reason":"length"|"context", "seconds":S};
// progress on stderr.
int generate_run(const GenerateOpts *o, FILE *out);

#endif
