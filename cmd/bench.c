// bench.c: `nsa bench [kernels|q4k|decode|attn|train]`: long measurements (eval/bench*.h,
// train/bench_train.h), never part of `make test`.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "data/path.h"
#include "eval/bench.h"
#include "eval/bench_attn.h"
#include "eval/bench_q4k.h"
#include "eval/bench_decode.h"
#include "kernels/common.h"
#include "kernels/cpu.h"
#include "train/bench_train.h"

static const char usage[] =
    "usage: nsa bench [kernels|q4k|decode|attn [--max-seq N] [--reps N]|train [--config NAME] [--steps N]]\n"
    "  kernels: sgemm with the AVX-512 vs Haswell OpenBLAS kernels, causal attention vs a\n"
    "  naive materialised loop, NSA selected attention index path vs materialising reference.\n"
    "  q4k: read bandwidth, Q4_K matvec on a matrix far larger than the LLC (GB/s vs that\n"
    "  bandwidth, vs float32 sgemv) and Q4_K matmul with 512 rows vs float32 sgemm.\n"
    "  decode: decode tokens/s of NSA vs dense layers (small dimensions, seq_len 32768, random\n"
    "  init) at batch 1 and 8 and contexts 1k, 8k, 32k, and bytes read per step against the\n"
    "  measured copy bandwidth.\n"
    "  attn: one layer of NSA attention (compressed, selection, selected, window) vs dense\n"
    "  causal flash attention at S = 8k, 16k, 32k, 64k (stop after --max-seq, default 65536),\n"
    "  forward and backward, each kernel's GFLOP/s against 1- and 2-thread sgemm of the run;\n"
    "  --reps runs per S (1-10; default 4 at 8k, 3 at 16k, 2 at 32k, 1 at 64k: ~3 minutes),\n"
    "  each timing dense and NSA back to back: the ratio is the median of the runs' ratios,\n"
    "  times and GFLOP/s the fastest run's.\n"
    "  train: optimiser steps of a named config (default small; --steps per mode, default 6,\n"
    "  the first left out), checkpoint=none and =layer alternating in pairs: tokens/s,\n"
    "  achieved GFLOP/s (6 per parameter use + 12*Dh per attention pair, 8*Dh for a selected\n"
    "  key in the window's head) against an sgemm measured right after each none step, the\n"
    "  step-time ratio of gradient checkpointing (median of the pairs), and where the\n"
    "  checkpoint=none steps went (linear ops, attention ops, other ops, the rest; sampled\n"
    "  every ms) with the linear and attention ops' GFLOP/s. Needs the config's data file\n"
    "  (scripts/get-corpus.sh).\n"
    "  Peak memory of gradient checkpointing at seq_len 2048: scripts/bench-ckpt.sh (make bench).\n";

enum { O_HELP = 1, O_WHAT, O_MAX_SEQ, O_CONFIG, O_STEPS, O_REPS };
static const ArgSpec specs[] = {{"", 1, O_WHAT},          {"help", 0, O_HELP},   {"max-seq", 1, O_MAX_SEQ},
                                {"config", 1, O_CONFIG}, {"steps", 1, O_STEPS}, {"reps", 1, O_REPS},
                                {NULL, 0, 0}};

int cmd_bench(int argc, char **argv) {
    const char *what = NULL, *v;
    ArgIter it;
    args_begin(&it, argc, argv);
    int id;
    int64_t max_seq = 65536, steps = 6, reps = 0;
    const char *config = "small";
    while ((id = args_next(&it, specs, &v)) > 0) {
        if (id == O_MAX_SEQ) {
            if (args_i64("--max-seq", v, 8192, 65536, &max_seq) != NSA_OK) return 2;
            continue;
        }
        if (id == O_REPS) {
            if (args_i64("--reps", v, 1, 10, &reps) != NSA_OK) return 2;
            continue;
        }
        if (id == O_STEPS) {
            if (args_i64("--steps", v, 2, 64, &steps) != NSA_OK) return 2;
            continue;
        }
        if (id == O_CONFIG) {
            config = v;
            continue;
        }
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
    if (!strcmp(what, "attn")) return bench_attn_run(stdout, (int)max_seq, (int)reps) == NSA_OK ? 0 : 1;
    if (!strcmp(what, "train")) return bench_train_run(stdout, config, (int)steps) == NSA_OK ? 0 : 1;
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
