// eval.h: validation loss of a checkpoint on a dataset (`nsa eval`), in float32 and/or
// Q4_K: mean token cross-entropy over windows of seq_len tokens placed as training's
// periodic evaluation places them (model/loss_windows.h), so that with the same number of
// windows it reports the run's val_loss.
#ifndef NSA_EVAL_H
#define NSA_EVAL_H

#include <stdint.h>

#include "data/dataset.h"
#include "eval/load.h"
#include "model/model.h"

typedef struct {
    const char *ckpt, *data;
    int64_t windows;           // windows of seq_len tokens; 0: the whole /val split
    Quant quant;               // QUANT_Q4K on a float checkpoint: evaluate float32 and Q4_K
    int progress;              // a progress line on stderr
} EvalOpts;

typedef struct {
    const char *weights;       // "float32" or "q4_k"
    double loss;               // nats/token
    double seconds;
    int64_t weight_bytes;      // as the forward reads them (Q4_K rows + float tensors)
} EvalRow;

typedef struct {
    EvalRow rows[2];
    int n_rows;
    int64_t windows, seq_len, tokens;  // tokens scored = windows · seq_len
    int64_t val_tokens;                // tokens in /val
    int byte_tokens;                   // the tokenizer is `bytes`: nats/token = nats/byte
} EvalResult;

// NSA_ERR after an error line (unreadable files, vocabularies that disagree, too little
// /val, weights or losses that are not finite).
int eval_run(const EvalOpts *o, EvalResult *r);

// Loads a float checkpoint and a dataset whose ids fit its vocabulary (trace); on failure
// both are left freed and the error has been reported.
int model_and_data_load(const char *ckpt, const char *data, Model *m, Dataset *d);

#endif
