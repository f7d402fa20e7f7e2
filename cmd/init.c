// init.c: `nsa init`: a freshly initialised checkpoint (/config and /params only).
#include <stdint.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "data/checkpoint.h"
#include "kernels/common.h"
#include "model/model.h"

typedef struct {
    const char *config, *out;
    int64_t seed;              // -1: the config's
    ArgList sets;
} InitArgs;

static const char usage[] =
    "usage: nsa init --config NAME|FILE [--seed N] [--set key=value ...] --out ckpt.h5\n"
    "  Writes a freshly initialised checkpoint (/config and /params only).\n"
    "  NAME is one of data/configs/*.cfg (tiny, small, seed12).\n";

enum { O_HELP = 1, O_CONFIG, O_SEED, O_OUT, O_SET };
static const ArgSpec specs[] = {{"config", 1, O_CONFIG}, {"seed", 1, O_SEED}, {"out", 1, O_OUT},
                                {"set", 1, O_SET},       {"help", 0, O_HELP}, {NULL, 0, 0}};

static int parse(InitArgs *a, int argc, char **argv) {
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CONFIG: a->config = v; break;
        case O_SEED:
            if (args_i64("--seed", v, 0, INT64_MAX, &a->seed) != NSA_OK) return 2;
            break;
        case O_OUT: a->out = v; break;
        case O_SET: arglist_push(&a->sets, v); break;
        case O_HELP: fputs(usage, stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!a->config || !a->out) {
        nsa_error("init needs --config and --out");
        return 2;
    }
    return CMD_GO;
}

static int run(const InitArgs *a) {
    Config c;
    config_defaults(&c);
    if (config_load(&c, a->config) != NSA_OK) return 1;
    for (int i = 0; i < a->sets.n; i++)
        if (config_set(&c, a->sets.v[i]) != NSA_OK) return 1;
    if (a->seed >= 0) c.seed = a->seed;
    if (config_validate(&c) != NSA_OK) return 1;
    Model m;
    model_create(&m, &c);
    model_init_params(&m, (uint64_t)c.seed);
    int rc = ckpt_save(a->out, &m, NULL, NULL, NULL);
    if (rc == NSA_OK) printf("%s: %lld parameters\n", a->out, (long long)m.n_elems);
    model_free(&m);
    return rc == NSA_OK ? 0 : 1;
}

int cmd_init(int argc, char **argv) {
    InitArgs a = {NULL, NULL, -1, {0}};
    int rc = parse(&a, argc, argv);
    if (rc == CMD_GO) rc = run(&a);
    arglist_free(&a.sets);
    return rc;
}
