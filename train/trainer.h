// trainer.h: one training run's state and its actions: build it (fresh or from a
// checkpoint), join it to the ranks of an MPI job, take an optimiser step (random windows
// from a seeded generator, gradient accumulation, clipping, AdamW on the warmup + cosine
// schedule), evaluate on /val, and save a checkpoint that resumes bit-exactly.
#ifndef NSA_TRAINER_H
#define NSA_TRAINER_H

#include "autograd/graph.h"
#include "data/checkpoint.h"
#include "data/dataset.h"
#include "data/path.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "train/dist.h"
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
    int64_t *starts;         // (grad_accum, batch_size) window starts of the step being taken
    float *grad_sum;         // (n_elems) micro-batch gradients summed in order (grad_accum > 1)
    Dist dist;               // this rank's place in the job; alone unless trainer_distribute
    float *gather;           // (size, min(n_elems, DIST_CHUNK)) ranks' gradient chunks (size > 1)
    float *mb_loss;          // (grad_accum / size) this rank's micro-batch losses of the step
    float *all_loss;         // (grad_accum) every rank's, rank-major
    float *win_loss;         // (ceil(W / size)) this rank's evaluation windows (size > 1)
    float *all_win;          // (size · ceil(W / size)) every rank's, rank-major
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
    double comm_s;           // of which inside MPI calls (0 alone)
} StepStats;

// 1 if every model key of c equals run's; else 0 after an error naming the key and `path`
// (the checkpoint the run's config came from): a run cannot change its model.
int trainer_same_model(const Config *run, const Config *c, const char *path);

// Builds the trainer for a validated config: loads the data (errors: missing or corrupt
// file, vocab mismatch, too few tokens), creates the model (fresh from cfg->seed, or the
// params, moments and state of `resume_ckpt`, whose model keys must equal cfg's).
int trainer_init(Trainer *t, const Config *cfg, const char *resume_ckpt);
// Makes the trainer one rank of the job d (d->size > 1; alone, a trainer needs nothing
// more): every rank takes grad_accum / size of each step's micro-batches and evaluation
// windows, and all hold the same parameters after every step. Errors: grad_accum not a
// multiple of the rank count; a rank whose parameters, moments or data state differ from
// rank 0's (each rank read a different checkpoint). Collective: every rank must call it.
int trainer_distribute(Trainer *t, const Dist *d);
void trainer_free(Trainer *t);
// One optimiser step: grad_accum micro-batches forward + backward, then AdamW. Each
// micro-batch's gradient is taken alone and the gradients are summed in micro-batch order,
// ((g0 + g1) + g2) + …, on one process or split over the ranks alike, so the bits do not
// depend on the rank count. A non-finite loss or gradient skips the update (warning naming
// the parameter); returns NSA_ERR once max_bad_steps happen in a row.
int trainer_step(Trainer *t, StepStats *s);
// Validation loss (nats/token) over eval_batches × batch_size fixed windows of /val
// (model/loss_windows.h: the windows of `nsa eval`), split over the ranks and summed in
// window order. Collective.
double trainer_eval(Trainer *t);
// Writes run_dir/ckpt_<step>.h5, points run_dir/latest at it, keeps the newest keep_ckpts.
int trainer_save(Trainer *t);

#endif
