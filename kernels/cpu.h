// cpu.h: the CPU-feature table and the thread count (the program's only global state).
#ifndef NSA_CPU_H
#define NSA_CPU_H

typedef struct {
    int detected;    // cpu_detect has run
    int avx2, fma, f16c;
    int avx512f;     // F + BW + DQ + VL together: the set OpenBLAS's SkylakeX kernels and our paths need
    int avx512vnni;  // int8 dot products (vpdpbusd)
    int threads;
    int q4k_path;    // the Q4_K kernel path (a Q4kPath, kernels/q4k.h); 0 until q4k_setup chooses
    int attn_path;   // the attention kernels' path (an AttnPath, kernels/attention.h); 0: the fastest built
    long l2_bytes;   // L2 cache per core as the C library reports it; 0 if unknown (a tile-size hint only)
} CpuInfo;

extern CpuInfo nsa_cpu;

// Fills nsa_cpu. If OpenBLAS would pick a slower kernel than the CPU supports
// (OpenBLAS 0.3.21 takes Zen 5 for Haswell: half-speed sgemm), re-executes the program
// with OPENBLAS_CORETYPE set, since OpenBLAS reads it only when it is loaded. Call first
// thing in main; an AVX-512 OPENBLAS_CORETYPE already set is kept.
void cpu_setup(int argc, char **argv);
// Only the feature flags (no re-exec, no threads): for code that may run before or
// without cpu_setup, such as the tests. Idempotent.
void cpu_detect(void);
// OpenMP threads (OMP_NUM_THREADS, else all cores); OpenBLAS is kept at one (gemm.c).
void cpu_set_threads(int n);

#endif
