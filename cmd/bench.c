// bench.c: `nsa bench [kernels]`: long measurements (eval/bench.h), never part of `make test`.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "data/path.h"
#include "eval/bench.h"
#include "eval/bench_q4k.h"
#include "eval/bench_decode.h"
#include "kernels/common.h"
#include "kernels/cpu.h"

static const char usage[] =
    "usage: nsa bench [kernels|q4k|decode]\n"
    "  kernels: sgemm with the AVX-512 vs Haswell OpenBLAS kernels, causal attention vs a\n"
    "  naive materialised loop, NSA selected attention index path vs materialising reference.\n"
    "  q4k: read bandwidth, Q4_K matvec on a matrix far larger than the LLC (GB/s vs that\n"
    "  bandwidth, vs float32 sgemv) and Q4_K matmul with 512 rows vs float32 sgemm.\n"
    "  decode: decode tokens/s of NSA vs dense layers (small dimensions, seq_len 32768, random\n"
    "  init) at batch 1 and 8 and contexts 1k, 8k, 32k, and bytes read per step against the\n"
    "  measured copy bandwidth.\n"
    "  Training-step and memory measurements: scripts/bench-ckpt.sh (make bench).\n";

enum { O_HELP = 1, O_WHAT };
static const ArgSpec specs[] = {{"", 1, O_WHAT}, {"help", 0, O_HELP}, {NULL, 0, 0}};

int cmd_bench(int argc, char **argv) {
    const char *what = NULL, *v;
    ArgIter it;
    args_begin(&it, argc, argv);
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        if (id == O_HELP || !strcmp(v, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (what) {
            nsa_error("bench: one benchmark at a time, got '%s' and '%s'", what, v);
            return 2;
        }
        what = v;
    }
    if (id == ARGS_BAD) return 2;
    if (!what) what = "kernels";
    // Internal: the child of `bench kernels` that measures OpenBLAS's own Haswell choice.
    if (!strcmp(what, "sgemm-only")) {
        cpu_set_threads(1);
        printf("%.3f\n", bench_sgemm_gflops(1024));
        return 0;
    }
    if (!strcmp(what, "q4k")) return bench_q4k_run(stdout) == NSA_OK ? 0 : 1;
    if (!strcmp(what, "decode")) return bench_decode() == NSA_OK ? 0 : 1;
    if (strcmp(what, "kernels")) {
        nsa_error("unknown benchmark '%s' (nsa bench --help)", what);
        return 2;
    }
    char self[NSA_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = 0;
    return bench_kernels(self) == NSA_OK ? 0 : 1;
}
