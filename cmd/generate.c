// generate.c: `nsa generate`: continues a prompt by full recompute (eval/generate.h).
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "eval/generate.h"
#include "kernels/common.h"

static const char usage[] =
    "usage: nsa generate --ckpt FILE --prompt TEXT [--max-tokens N] [--temperature T] [--seed N]\n"
    "  Continues TEXT (byte tokens) by full recompute, one token at a time, over the last\n"
    "  seq_len tokens. --temperature 0 (default) is greedy; --seed fixes sampling (default 1).\n";

enum { O_HELP = 1, O_CKPT, O_PROMPT, O_MAX, O_TEMP, O_SEED };
static const ArgSpec specs[] = {{"ckpt", 1, O_CKPT},        {"prompt", 1, O_PROMPT}, {"max-tokens", 1, O_MAX},
                                {"temperature", 1, O_TEMP}, {"seed", 1, O_SEED},     {"help", 0, O_HELP},
                                {NULL, 0, 0}};

static int parse(GenerateOpts *o, int argc, char **argv) {
    *o = (GenerateOpts){NULL, NULL, 200, 0.0, 1};
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CKPT: o->ckpt = v; break;
        case O_PROMPT: o->prompt = v; break;
        case O_MAX:
            if (args_i64("--max-tokens", v, 0, 1000000, &o->max_tokens) != NSA_OK) return 2;
            break;
        case O_TEMP:
            if (args_f64("--temperature", v, 0, INFINITY, &o->temperature) != NSA_OK) return 2;
            break;
        case O_SEED:
            if (args_u64("--seed", v, 0, UINT64_MAX, &o->seed) != NSA_OK) return 2;
            break;
        case O_HELP: fputs(usage, stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!o->ckpt || !o->prompt) {
        nsa_error("generate needs --ckpt FILE and --prompt TEXT");
        return 2;
    }
    if (!o->prompt[0]) {
        nsa_error("--prompt must not be empty (generation starts from its last token)");
        return 2;
    }
    return CMD_GO;
}

int cmd_generate(int argc, char **argv) {
    GenerateOpts o;
    int rc = parse(&o, argc, argv);
    if (rc != CMD_GO) return rc;
    return generate_run(&o, stdout) == NSA_OK ? 0 : 1;
}
