// bench_train.h: `nsa bench train`: a few optimiser steps of a named config (default
// `small`) in this process, with checkpoint=none and checkpoint=layer, reported as tokens/s,
// achieved GFLOP/s (counted below) against sgemm measured in the same run, and the step-time
// ratio of gradient checkpointing. Nothing is written to disk.
#ifndef NSA_BENCH_TRAIN_H
#define NSA_BENCH_TRAIN_H

#include <stdio.h>

#include "model/config.h"

// FLOPs of one training token (forward + backward) of config c: 6 per parameter use (2
// forward, 4 backward), where the compression MLP's parameters are used once per compressed
// block and KV group (G·Nc/T times per token) rather than once per token, plus 12·Dh per
// (query head, key) pair that attention scores (4·Dh forward for QKᵀ and PV, 8·Dh backward),
// averaged over the positions of a window: the causal prefix for dense layers; compressed
// blocks, selected tokens and the window for NSA layers.
double bench_train_flops_per_token(const Config *c);

// Runs `steps` steps per mode (the first, which sizes the arenas, is left out; the median
// of the others is the step time). Errors: unknown config, missing data file.
int bench_train_run(FILE *out, const char *config, int steps);

#endif
