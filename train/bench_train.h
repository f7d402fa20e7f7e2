// bench_train.h: `nsa bench train`: a few optimiser steps of a named config (default
// `small`) in this process, with checkpoint=none and checkpoint=layer, reported as tokens/s,
// achieved GFLOP/s (counted below) against sgemm measured in the same run, and the step-time
// ratio of gradient checkpointing, both from paired measurements (bench_train_timing); then
// where the checkpoint=none step's time goes (linear ops, attention ops, the rest) with each
// part's GFLOP/s. Nothing is written to disk.
#ifndef NSA_BENCH_TRAIN_H
#define NSA_BENCH_TRAIN_H

#include <stdio.h>

#include "model/config.h"
#include "train/profile.h"

// FLOPs of one training token (forward + backward) of config c: 6 per parameter use (2
// forward, 4 backward), where the compression MLP's parameters are used once per compressed
// block and KV group (G·Nc/T times per token) rather than once per token, plus 12·Dh per
// (query head, key) pair that attention scores (4·Dh forward for QKᵀ and PV, 8·Dh backward),
// averaged over the positions of a window: the causal prefix for dense layers; compressed
// blocks, selected tokens and the window for NSA layers. Where the selected branch continues
// from the window's head (op_slc_window_attn), the head's keys count 4·Dh forward once, for
// the window: that forward computes them for both.
double bench_train_flops_per_token(const Config *c);
// The same two parts apart: *linear (6 per parameter use) and *attn (12·Dh per pair, 8·Dh
// for a selected key in the window's head).
void bench_train_flops_split(const Config *c, double *linear, double *attn);

// Where a step's time goes, from the sampling profile (train/profile.h) of the timed steps:
// seconds of the "linear" op, of the attention ops (every op whose name ends in
// "attention": dense, window, compressed, selected), of every other forward and backward
// op, and the rest of the wall time (the batch drawn, gradients zeroed, clipping, the
// optimizer). The attention and the other ops are also kept by name, largest first (at
// most 4 each).
typedef struct {
    double linear_s, attn_s, other_s, rest_s;
    ProfEntry attn[4], other[4];  // s[0] = forward + backward seconds
    int n_attn, n_other;
} TrainBreakdown;
// wall_s: the timed steps' total wall time; e: n profile entries (seconds per op and phase).
TrainBreakdown bench_train_breakdown(const ProfEntry *e, int n, double wall_s);

#define BENCH_TRAIN_MAX_STEPS 64

// What the timed steps say: n pairs of a checkpoint=none and a checkpoint=layer step (none_s,
// layer_s, seconds) and the sgemm GFLOP/s measured right after each none step (sgemm_gf);
// flops: the counted FLOPs of one step.
typedef struct {
    double none_s, none_lo, none_hi;     // median, fastest and slowest checkpoint=none step
    double layer_s, layer_lo, layer_hi;  // the same for checkpoint=layer
    double ckpt_ratio;                   // median over the pairs of layer / none
    double pair_ratio[BENCH_TRAIN_MAX_STEPS];  // each pair's layer / none, in step order
    int n;
    double sg_med, sg_best;              // median and best of the sgemm measurements
    double eff;       // median over the none steps of (flops / step time) / the sgemm after it
    double eff_best;  // flops / none_s / sg_best: against the best the machine showed
} TrainTiming;
TrainTiming bench_train_timing(const double *none_s, const double *layer_s, const double *sgemm_gf, int n,
                               double flops);

// Runs `steps` steps per mode in one trainer, alternating checkpoint=none and =layer (the
// first of each, which sizes the arenas, is left out). Errors: unknown config, missing data
// file.
int bench_train_run(FILE *out, const char *config, int steps);

#endif
