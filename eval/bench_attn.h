// bench_attn.h: `nsa bench attn`: one layer of NSA attention against dense flash attention
// at long context (S = 8k ... 64k), with every kernel's GFLOP/s against sgemm of the same run.
#ifndef NSA_BENCH_ATTN_H
#define NSA_BENCH_ATTN_H

#include <stdio.h>

#define BENCH_ATTN_MAX_REPS 10

// What n runs at one S say (seconds of each run, dense and NSA measured back to back): ratio
// is the median over the runs of dense / NSA, each run's in pair[]; best_ratio the fastest
// dense over the fastest NSA. A neighbour that slows the machine for seconds slows both
// halves of a run alike, so the pairs cancel it where the fastest of each side, from
// different moments, need not.
typedef struct {
    double ratio, best_ratio, dense_best, nsa_best;
    double pair[BENCH_ATTN_MAX_REPS];
    int n;
} AttnPairs;
AttnPairs bench_attn_pairs(const double *dense_s, const double *nsa_s, int n);

// Prints the table to out for S = 8192, 16384, ... up to max_seq (>= 8192). Returns NSA_OK.
// reps > 0: that many paired runs at every S; 0: 4 at 8k, 3 at 16k, 2 at 32k, 1 at 64k.
int bench_attn_run(FILE *out, int max_seq, int reps);

#endif
