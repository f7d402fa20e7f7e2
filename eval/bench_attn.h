// bench_attn.h: `nsa bench attn`: one layer of NSA attention against dense flash attention
// at long context (S = 8k ... 64k), with every kernel's GFLOP/s against sgemm of the same run.
#ifndef NSA_BENCH_ATTN_H
#define NSA_BENCH_ATTN_H

#include <stdio.h>

// Prints the table to out for S = 8192, 16384, ... up to max_seq (>= 8192). Returns NSA_OK.
// reps > 0: the best of reps runs at every S; 0: 4 at 8k, 3 at 16k, 1 beyond.
int bench_attn_run(FILE *out, int max_seq, int reps);

#endif
