// trainer.h: one training run's state and its four actions: build it (fresh or from a
// checkpoint), take an optimiser step (random windows from a seeded generator, gradient
// accumulation, clipping, AdamW on the warmup + cosine schedule), evaluate on /val, and
// save a checkpoint that resumes bit-exactly.
#ifndef NSA_TRAINER_H
#define NSA_TRAINER_H

#include "autograd/graph.h"
#include "data/checkpoint.h"
#include "data/dataset.h"
#include "data/path.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "train/optim.h"
#include "train/watchdog.h"

typedef struct {
    Config cfg;              // the resolved config (also model.cfg)
    Model model;
    Dataset data;
    AdamW opt;
    Arena arena;             // activations and their gradients, reset every micro-step
    Arena scratch_arena;     // gradient checkpointing: one layer's recompute
    Arena eval_arena;        // evaluation forwards (no tape), one window at a time
    Graph graph, scratch, eval_graph;
    Rng rng;                 // draws the window starts; saved as /state rng
    TrainState st;           // step = optimiser steps done
    int32_t *tokens, *targets;  // (batch_size, seq_len)
    Watch watch;
    Watchdog *wd;
    int bad_steps;           // non-finite steps in a row
    char log_path[NSA_PATH_MAX];
} Trainer;

typedef struct {
    double loss;             // mean over the micro-batches (nats/token)
    double lr, grad_norm;    // grad_norm before clipping
    int skipped;             // non-finite loss or gradient: no update was made
    double seconds;
} StepStats;

// 1 if every model key of c equals run's; else 0 after an error naming the key and `path`
// (the checkpoint the run's config came from): a run cannot change its model.
int trainer_same_model(const Config *run, const Config *c, const char *path);

// Builds the trainer for a validated config: loads the data (errors: missing or corrupt
// file, vocab mismatch, too few tokens), creates the model (fresh from cfg->seed, or the
// params, moments and state of `resume_ckpt`, whose model keys must equal cfg's).
int trainer_init(Trainer *t, const Config *cfg, const char *resume_ckpt);
void trainer_free(Trainer *t);
// One optimiser step: grad_accum micro-batches forward + backward, then AdamW. A
// non-finite loss or gradient skips the update (warning naming the parameter); returns
// NSA_ERR once max_bad_steps happen in a row.
int trainer_step(Trainer *t, StepStats *s);
// Validation loss (nats/token) over eval_batches × batch_size fixed windows of /val
// (model/loss_windows.h: the windows of `nsa eval`).
double trainer_eval(Trainer *t);
// Writes run_dir/ckpt_<step>.h5, points run_dir/latest at it, keeps the newest keep_ckpts.
int trainer_save(Trainer *t);

#endif
