// cpu.c: see cpu.h.
#include "kernels/cpu.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void openblas_set_num_threads(int);

CpuInfo nsa_cpu;

// Spin iterations before an idle OpenMP thread sleeps (see cpu_setup).
#define NSA_GOMP_SPINCOUNT "10000"

// OpenBLAS core names whose sgemm uses AVX-512.
static int is_avx512_core(const char *name) {
    return name && (!strcasecmp(name, "SkylakeX") || !strcasecmp(name, "CooperLake") ||
                    !strcasecmp(name, "SapphireRapids"));
}

void cpu_detect(void) {
    if (nsa_cpu.detected) return;
    __builtin_cpu_init();
    nsa_cpu.avx2 = __builtin_cpu_supports("avx2");
    nsa_cpu.fma = __builtin_cpu_supports("fma");
    nsa_cpu.f16c = __builtin_cpu_supports("f16c");
    nsa_cpu.avx512f = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    nsa_cpu.avx512vnni = nsa_cpu.avx512f && __builtin_cpu_supports("avx512vnni");
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    nsa_cpu.l2_bytes = l2 > 0 ? l2 : 0;
    nsa_cpu.detected = 1;
}

void cpu_setup(int argc, char **argv) {
    (void)argc;
    cpu_detect();
    // Both settings below are read by libraries when they are loaded, before main runs, so
    // the program sets them and re-executes itself once (NSA_NO_REEXEC marks the second run).
    int reexec = 0;
    // Upgrade an unset or pre-AVX-512 core type (machines here even export
    // OPENBLAS_CORETYPE=Haswell): sgemm runs about twice as fast with the SkylakeX kernels.
    const char *core = getenv("OPENBLAS_CORETYPE");
    if (nsa_cpu.avx512f && !is_avx512_core(core)) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        reexec = 1;
    }
    // libgomp's threads spin for ~300k iterations at every barrier before sleeping. Alone on
    // the machine that saves a wake-up; with a second OpenMP process on 2 cores each spinning
    // thread takes the core the other process's thread needs (training fell from ~2400 to
    // ~700 tokens/s). A short spin keeps most of the first and avoids the second; a user's
    // own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        setenv("GOMP_SPINCOUNT", NSA_GOMP_SPINCOUNT, 1);
        reexec = 1;
    }
    if (reexec && !getenv("NSA_NO_REEXEC")) {
        setenv("NSA_NO_REEXEC", "1", 1);
        execv("/proc/self/exe", argv);
        // Exec failed: carry on with the libraries' own choices (slower, still correct).
    }
    cpu_set_threads(omp_get_max_threads());
}

void cpu_set_threads(int n) {
    if (n < 1) n = 1;
    nsa_cpu.threads = n;
    omp_set_num_threads(n);
    // OpenBLAS stays single-threaded: gemm.c threads it in shape-fixed chunks (determinism).
    openblas_set_num_threads(1);
}
