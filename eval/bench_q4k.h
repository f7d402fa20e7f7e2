// bench_q4k.h: `nsa bench q4k`: the Q4_K kernels against the machine's read bandwidth and float32 BLAS.
#ifndef NSA_BENCH_Q4K_H
#define NSA_BENCH_Q4K_H

#include <stdio.h>

// Prints one table to `out`, every figure a ratio of two measurements taken in this run
// with the current OpenMP thread count: read bandwidth vs Q4_K matvec on a 16384 x 16384
// matrix (144 MiB, flushed from the caches before each timing), that matvec vs float32
// sgemv of the same matrix, and Q4_K matmul vs float32 sgemm with 512 activation rows.
// Needs about 1.3 GiB of memory and 10 s on two cores. Returns NSA_OK.
int bench_q4k_run(FILE *out);

#endif
