// train.h: the training loop of `nsa train`: random windows from a seeded generator,
// AdamW with warmup + cosine schedule, clipping and accumulation, periodic evaluation,
// checkpoints every ckpt_every steps that resume bit-exactly, and clean stops on signals.
#ifndef NSA_TRAIN_H
#define NSA_TRAIN_H

#include <stdio.h>

#include "autograd/graph.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "data/checkpoint.h"
#include "data/dataset.h"
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
    char log_path[1100];
} Trainer;

typedef struct {
    double loss;             // mean over the micro-batches (nats/token)
    double lr, grad_norm;    // grad_norm before clipping
    int skipped;             // non-finite loss or gradient: no update was made
    double seconds;
} StepStats;

// Builds the trainer for a validated config: loads the data (errors: missing or corrupt
// file, vocab mismatch, too few tokens), creates the model (fresh from cfg->seed, or the
// params, moments and state of `resume_ckpt`, whose model keys must equal cfg's).
int trainer_init(Trainer *t, const Config *cfg, const char *resume_ckpt);
void trainer_free(Trainer *t);
// One optimiser step: grad_accum micro-batches forward + backward, then AdamW. A
// non-finite loss or gradient skips the update (warning naming the parameter); returns
// NSA_ERR once max_bad_steps happen in a row.
int trainer_step(Trainer *t, StepStats *s);
// Validation loss (nats/token) over eval_batches fixed windows of /val.
double trainer_eval(Trainer *t);
// Writes run_dir/ckpt_<step>.h5, points run_dir/latest at it, keeps the newest keep_ckpts.
int trainer_save(Trainer *t);

// Path of the newest checkpoint of a run directory (from `latest`, else the newest
// ckpt_*.h5); NSA_ERR with a message when there is none.
int train_latest_ckpt(const char *run_dir, char *path, size_t size);

// The `nsa train` command.
int train_main(int argc, char **argv);

#endif
