// loop.h: a whole training run: the run directory, the trainer, steps until the end (or
// --stop-at, or SIGINT/SIGTERM/SIGUSR1, which finish the step and save), with the periodic
// evaluations and checkpoints the config asks for; alone or as one rank of an MPI job
// (train/dist.h), where rank 0 alone writes the run directory and stdout.
#ifndef NSA_TRAIN_LOOP_H
#define NSA_TRAIN_LOOP_H

#include <stdint.h>

#include "model/config.h"
#include "train/dist.h"

typedef struct {
    const char *resume_ckpt;   // checkpoint to continue bit-exactly (NULL: a fresh run)
    int64_t stop_at;           // stop with a checkpoint after this step (0: the config's steps)
    int quiet;                 // no progress on stdout; log.jsonl and errors as always
    const Dist *dist;          // the MPI job this process is a rank of (NULL: alone)
} TrainOpts;

// Trains cfg (validated; run_dir and data set) into cfg->run_dir. A fresh run refuses a
// directory that already holds checkpoints (continue it with resume_ckpt instead).
// NSA_ERR after an error line.
int train_run(const Config *cfg, const TrainOpts *o);

#endif
