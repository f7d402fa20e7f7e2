// dataset.h: DESIGN.md's dataset file (/train, /val uint16 token ids; attributes
// vocab_size and tokenizer) and its creation from text (`nsa prepare`).
#ifndef NSA_DATASET_H
#define NSA_DATASET_H

#include <stdint.h>

typedef struct {
    uint16_t *train, *val;  // (n_train), (n_val)
    int64_t n_train, n_val;
    int64_t vocab_size;
    char tokenizer[64];
} Dataset;

// Loads both splits; checks every id < vocab_size of the file and, if model_vocab > 0,
// < model_vocab too.
int dataset_load(const char *path, int64_t model_vocab, Dataset *d);
void dataset_free(Dataset *d);
// The most tokens one split may hold: 2^34 (32 GiB of uint16), and no more than half of
// this machine's memory. dataset_load checks a split's declared size against it before
// allocating anything, and that every token is really stored in the file.
int64_t dataset_max_tokens(void);

#endif
