// main.c: the `nsa` command: dispatches subcommands; the only place that exits.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/prepare.h"
#include "eval/trace.h"
#include "kernels/common.h"
#include "kernels/cpu.h"
#include "model/model.h"
#include "data/checkpoint.h"
#include "data/dataset.h"

int train_main(int argc, char **argv);
int hangcheck_main(int argc, char **argv);
int bench_main(int argc, char **argv);
int eval_main(int argc, char **argv);
int generate_main(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: nsa COMMAND [options]   (nsa COMMAND --help for each)\n"
            "  prepare   --text FILE --out data.h5 [--val-fraction 0.05]   text -> byte tokens\n"
            "  init      --config NAME|FILE [--seed N] [--set k=v ...] --out ckpt.h5\n"
            "  train     --config NAME|FILE [--set k=v ...] [--name NAME]  train a model\n"
            "  train     --resume RUN_DIR [--set k=v ...]             continue a run bit-exactly\n"
            "  eval      --ckpt FILE --data data.h5 [--batches N]     validation loss\n"
            "  generate  --ckpt FILE --prompt TEXT [--max-tokens N] [--temperature T] [--seed N]\n"
            "  trace     --ckpt FILE --data data.h5 --out trace.h5    logits, loss, grads, selection\n"
            "  hangcheck [--layers 1,12] [--seq 128,512,1024,2048] [--timeout SEC] [--json FILE]\n");
}

static int prepare_main(int argc, char **argv) {
    const char *text = NULL, *out = NULL;
    double frac = 0.05;
    static struct option opts[] = {{"text", 1, 0, 't'}, {"out", 1, 0, 'o'}, {"val-fraction", 1, 0, 'v'},
                                   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't': text = optarg; break;
        case 'o': out = optarg; break;
        case 'v': frac = atof(optarg); break;
        case 'h':
            printf("usage: nsa prepare --text FILE --out data.h5 [--val-fraction 0.05]\n"
                   "  Byte-level tokens (vocab 256) of FILE; the last fraction becomes /val.\n");
            return 0;
        default: return 2;
        }
    }
    if (!text || !out) {
        nsa_error("prepare needs --text FILE and --out FILE");
        return 2;
    }
    return dataset_prepare(text, out, frac) == NSA_OK ? 0 : 1;
}

static int init_main(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    long long seed = -1;
    Config c;
    config_defaults(&c);
    const char *sets[64];
    int n_sets = 0;
    static struct option opts[] = {{"config", 1, 0, 'c'}, {"seed", 1, 0, 's'}, {"out", 1, 0, 'o'},
                                   {"set", 1, 0, 'S'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 's': seed = atoll(optarg); break;
        case 'o': out = optarg; break;
        case 'S':
            if (n_sets < 64) sets[n_sets++] = optarg;
            break;
        case 'h':
            printf("usage: nsa init --config NAME|FILE [--seed N] [--set key=value ...] --out ckpt.h5\n"
                   "  Writes a freshly initialised checkpoint (/config and /params only).\n"
                   "  NAME is one of data/configs/*.cfg (tiny, small, seed12).\n");
            return 0;
        default: return 2;
        }
    }
    if (!config || !out) {
        nsa_error("init needs --config and --out");
        return 2;
    }
    if (config_load(&c, config) != NSA_OK) return 1;
    for (int i = 0; i < n_sets; i++)
        if (config_set(&c, sets[i]) != NSA_OK) return 1;
    if (seed >= 0) c.seed = seed;
    if (config_validate(&c) != NSA_OK) return 1;
    Model m;
    model_create(&m, &c);
    model_init_params(&m, (uint64_t)c.seed);
    int rc = ckpt_save(out, &m, NULL, NULL, NULL);
    if (rc == NSA_OK) printf("%s: %lld parameters\n", out, (long long)m.n_elems);
    model_free(&m);
    return rc == NSA_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    cpu_setup(argc, argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    argc--, argv++;
    if (!strcmp(cmd, "prepare")) return prepare_main(argc, argv);
    if (!strcmp(cmd, "init")) return init_main(argc, argv);
    if (!strcmp(cmd, "trace")) return trace_main(argc, argv);
    if (!strcmp(cmd, "train")) return train_main(argc, argv);
    if (!strcmp(cmd, "eval")) return eval_main(argc, argv);
    if (!strcmp(cmd, "generate")) return generate_main(argc, argv);
    if (!strcmp(cmd, "hangcheck")) return hangcheck_main(argc, argv);
    if (!strcmp(cmd, "bench")) return bench_main(argc, argv);
    nsa_error("unknown command '%s' (try nsa --help)", cmd);
    return 2;
}
