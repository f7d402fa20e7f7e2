// decode.h: the forward pass over new tokens of one or more sequences against their decode
// state: prefill (many tokens of one sequence) and batched decoding (one token of each)
// are the same call. Computes exactly the rows the full forward computes for those
// positions, through the training kernels, without a tape.
#ifndef NSA_DECODE_H
#define NSA_DECODE_H

#include "autograd/arena.h"
#include "eval/kvcache.h"
#include "eval/weights.h"

typedef struct {
    const Weights *w;
    Pool *pool;
    Arena scratch;  // activations of one call, reset at the start of the next
} Decoder;

// The m new tokens of one sequence, at positions seq->len .. seq->len + m - 1 (all below
// seq->cap and the model's seq_len).
typedef struct {
    KvSeq *seq;
    const int32_t *tokens;
    int m;
} DecodeRows;

void decoder_init(Decoder *d, const Weights *w, Pool *pool);
void decoder_free(Decoder *d);
// Runs every entry's rows (one product per linear layer over all of them; attention per
// sequence), appends their K/V and newly complete compressed blocks to the caches and
// advances each seq->len by m. logits [n, V]: each entry's last row; with all_rows,
// [Σ m, V]: every row, entries in order. A row's logits do not depend on the other entries.
void decoder_forward(Decoder *d, float *logits, const DecodeRows *e, int n, int all_rows);

#endif
