// cpu.h: the CPU-feature table and the thread count (the program's only global state).
#ifndef NSA_CPU_H
#define NSA_CPU_H

typedef struct {
    int avx2, avx512f, fma;
    int threads;
} CpuInfo;

extern CpuInfo nsa_cpu;

// Fills nsa_cpu. If OpenBLAS would pick a slower kernel than the CPU supports
// (OpenBLAS 0.3.21 takes Zen 5 for Haswell: half-speed sgemm), re-executes the program
// with OPENBLAS_CORETYPE set, since OpenBLAS reads it only when it is loaded. Call first
// thing in main; an AVX-512 OPENBLAS_CORETYPE already set is kept.
void cpu_setup(int argc, char **argv);
// OpenMP threads (OMP_NUM_THREADS, else all cores); OpenBLAS is kept at one (gemm.c).
void cpu_set_threads(int n);

#endif
