// main.c: the `nsa` binary: picks the CPU kernels, then hands the arguments to the command
// named first (cmd/cmd.h); the only place that exits.
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/attention.h"
#include "kernels/q4k.h"

typedef struct {
    const char *name;
    const char *summary;  // synopsis and what it does, one line of `nsa --help`
    int (*run)(int argc, char **argv);
} Command;

static const Command commands[] = {
    {"prepare", "--text FILE --out data.h5 [--val-fraction 0.05]   text -> byte tokens", cmd_prepare},
    {"init", "--config NAME|FILE [--seed N] [--set k=v ...] --out ckpt.h5   a fresh checkpoint", cmd_init},
    {"train", "--config NAME|FILE [--set k=v ...] [--name NAME] | --resume RUN_DIR   train a model", cmd_train},
    {"eval", "--ckpt FILE --data data.h5 [--windows N] [--quant q4_k]   validation loss, float32 vs Q4_K",
     cmd_eval},
    {"quantize", "--ckpt FILE --out FILE.q4k.h5   quantize a checkpoint to Q4_K (ggml's bytes)", cmd_quantize},
    {"generate", "--ckpt FILE (--prompt TEXT | --prompts FILE) [--batch N] [--quant q4_k]   KV-cache decoding",
     cmd_generate},
    {"trace", "--ckpt FILE --data data.h5 --out trace.h5    logits, loss, grads, selection", cmd_trace},
    {"hangcheck", "[--layers 1,12] [--seq 128,512,1024,2048] [--timeout SEC] [--json FILE]", cmd_hangcheck},
    {"bench", "[kernels|q4k|decode|attn|train]   long measurements (never part of make test)", cmd_bench},
};
#define N_COMMANDS (int)(sizeof commands / sizeof *commands)

static void usage(FILE *f) {
    fprintf(f, "usage: nsa COMMAND [options]   (nsa COMMAND --help for each)\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    // A file-size limit (ulimit -f) would otherwise kill nsa mid-write with SIGXFSZ; ignored,
    // the write fails with EFBIG like a full disk: one error line, the temporary removed.
    signal(SIGXFSZ, SIG_IGN);
    cpu_setup(argc, argv);
    if (q4k_setup() != NSA_OK) return 1;  // a bad NSA_Q4K_PATH is a one-line error
    if (attn_setup() != NSA_OK) return 1;  // and NSA_ATTN_PATH
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    nsa_error("unknown command '%s' (try nsa --help)", argv[1]);
    return 2;
}
