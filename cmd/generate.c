// generate.c: `nsa generate`: continues prompts through the KV-cache engine, or by full
// recompute with --no-cache (eval/generate.h).
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "eval/generate.h"
#include "kernels/common.h"

static const char usage[] =
    "usage: nsa generate --ckpt FILE (--prompt TEXT | --prompts FILE) [--max-tokens N]\n"
    "                    [--temperature T] [--seed N] [--batch N] [--no-cache] [--quant q4_k]\n"
    "  Continues each prompt (byte tokens) with a KV cache in a shared block pool.\n"
    "  --prompt TEXT     prints TEXT, then each new byte as it comes, then a newline\n"
    "  --prompts FILE    one prompt per line; one JSON line per prompt on stdout, in file order:\n"
    "                    {\"prompt\",\"completion\",\"tokens\",\"finish_reason\",\"seconds\"}; progress on stderr\n"
    "  --max-tokens N    tokens to generate per prompt (default 200)\n"
    "  --temperature T   0 (default): greedy, ties to the lower id; > 0: sample softmax(logits/T)\n"
    "  --seed N          seed of every sequence's own sampling stream (default 1)\n"
    "  --batch N         sequences decoded together with --prompts (default 8); the output does\n"
    "                    not depend on it\n"
    "  --no-cache        recompute the full forward for every token (the reference; slow)\n"
    "  --quant q4_k      quantize a float checkpoint to Q4_K in memory; a file from nsa quantize\n"
    "                    is always Q4_K. Both paths use the fused Q4_K kernels\n"
    "  Context: a token is predicted from at most seq_len tokens (the model's context), so a\n"
    "  text ends at seq_len + 1 tokens; generation that reaches it stops with finish_reason\n"
    "  \"context\" (--prompt: a warning on stderr). A prompt longer than seq_len is an error.\n";

enum { O_HELP = 1, O_CKPT, O_PROMPT, O_PROMPTS, O_MAX, O_TEMP, O_SEED, O_BATCH, O_NOCACHE, O_QUANT };
static const ArgSpec specs[] = {{"ckpt", 1, O_CKPT},         {"prompt", 1, O_PROMPT}, {"prompts", 1, O_PROMPTS},
                                {"max-tokens", 1, O_MAX},    {"temperature", 1, O_TEMP},
                                {"seed", 1, O_SEED},         {"batch", 1, O_BATCH},   {"no-cache", 0, O_NOCACHE}, {"quant", 1, O_QUANT},
                                {"help", 0, O_HELP},         {NULL, 0, 0}};

static int parse(GenerateOpts *o, int argc, char **argv) {
    *o = (GenerateOpts){.max_tokens = 200, .seed = 1, .batch = 8};
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CKPT: o->ckpt = v; break;
        case O_PROMPT: o->prompt = v; break;
        case O_PROMPTS: o->prompts_file = v; break;
        case O_MAX:
            if (args_i64("--max-tokens", v, 0, 1000000, &o->max_tokens) != NSA_OK) return 2;
            break;
        case O_TEMP:
            if (args_f64("--temperature", v, 0, INFINITY, &o->temperature) != NSA_OK) return 2;
            break;
        case O_SEED:
            if (args_u64("--seed", v, 0, UINT64_MAX, &o->seed) != NSA_OK) return 2;
            break;
        case O_BATCH:
            if (args_i64("--batch", v, 1, 1024, &o->batch) != NSA_OK) return 2;
            break;
        case O_NOCACHE: o->no_cache = 1; break;
        case O_QUANT:
            if (quant_parse(v, &o->quant) != NSA_OK) return 2;
            break;
        case O_HELP: fputs(usage, stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!o->ckpt || (!o->prompt && !o->prompts_file)) {
        nsa_error("generate needs --ckpt FILE and --prompt TEXT or --prompts FILE");
        return 2;
    }
    if (o->prompt && o->prompts_file) {
        nsa_error("generate takes --prompt TEXT or --prompts FILE, not both");
        return 2;
    }
    if (o->prompt && !o->prompt[0]) {
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
