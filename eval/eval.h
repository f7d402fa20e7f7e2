// eval.h: validation loss of a checkpoint on a dataset (`nsa eval`): the windows of
// training's periodic evaluation (model/loss_windows.h), so the same number as the
// run's val_loss.
#ifndef NSA_EVAL_H
#define NSA_EVAL_H

#include <stdint.h>

#include "data/dataset.h"
#include "model/model.h"

typedef struct {
    const char *ckpt, *data;
    int64_t batches;           // batches of batch_size windows (0: the checkpoint's eval_batches, else 8)
} EvalOpts;

typedef struct {
    double loss;               // nats/token
    int windows, seq_len;
    double seconds;
    int byte_tokens;           // the dataset's tokenizer is `bytes`: nats/token = nats/byte
} EvalResult;

// The most windows one evaluation runs (batches × batch_size): 2^24, as for eval_batches.
#define EVAL_MAX_WINDOWS ((int64_t)1 << 24)

// NSA_ERR after an error line (unreadable files, vocabularies that disagree, too little /val,
// a window whose loss is not finite).
int eval_run(const EvalOpts *o, EvalResult *r);

// Loads a checkpoint and a dataset whose ids fit its vocabulary (eval, trace); on failure
// both are left freed and the error has been reported.
int model_and_data_load(const char *ckpt, const char *data, Model *m, Dataset *d);

#endif
