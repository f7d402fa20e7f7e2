// bench.h: `nsa bench`'s long measurements (never part of `make test`): sgemm with the
// AVX-512 vs Haswell OpenBLAS kernels, causal attention vs a naive materialised loop, NSA
// selected attention's index path vs the materialising reference.
#ifndef NSA_BENCH_H
#define NSA_BENCH_H

// Single-thread sgemm GFLOP/s (n×n by n×n) with the OpenBLAS kernel this process loaded.
double bench_sgemm_gflops(int n);
// Prints every kernel figure. self: this program's path; the Haswell sgemm runs in a child
// of it (`self bench sgemm-only`), since a process keeps the OpenBLAS kernel it loaded.
int bench_kernels(const char *self);

#endif
