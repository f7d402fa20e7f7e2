// eval.c: `nsa eval`: validation loss of a checkpoint (eval/eval.h).
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "eval/eval.h"
#include "kernels/common.h"

static const char usage[] =
    "usage: nsa eval --ckpt FILE --data data.h5 [--batches N]\n"
    "  Mean validation loss over N batches (default: the checkpoint's eval_batches) of\n"
    "  batch_size windows of seq_len tokens, spread evenly over /val (no randomness):\n"
    "  the same windows, and so the same number, as `nsa train`'s val_loss.\n"
    "  Prints nats/token and, for the byte tokenizer, bits/byte.\n";

enum { O_HELP = 1, O_CKPT, O_DATA, O_BATCHES };
static const ArgSpec specs[] = {
    {"ckpt", 1, O_CKPT}, {"data", 1, O_DATA}, {"batches", 1, O_BATCHES}, {"help", 0, O_HELP}, {NULL, 0, 0}};

static int parse(EvalOpts *o, int argc, char **argv) {
    *o = (EvalOpts){NULL, NULL, 0};
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CKPT: o->ckpt = v; break;
        case O_DATA: o->data = v; break;
        case O_BATCHES:
            if (args_i64("--batches", v, 1, 1000000, &o->batches) != NSA_OK) return 2;
            break;
        case O_HELP: fputs(usage, stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!o->ckpt || !o->data) {
        nsa_error("eval needs --ckpt FILE and --data FILE");
        return 2;
    }
    return CMD_GO;
}

int cmd_eval(int argc, char **argv) {
    EvalOpts o;
    int rc = parse(&o, argc, argv);
    if (rc != CMD_GO) return rc;
    EvalResult r;
    if (eval_run(&o, &r) != NSA_OK) return 1;
    if (r.byte_tokens)
        printf("val loss %.6f nats/token (= nats/byte), %.6f bits/byte (%d windows of %d tokens, %.1f s)\n", r.loss,
               r.loss / M_LN2, r.windows, r.seq_len, r.seconds);
    else
        printf("val loss %.6f nats/token, %.6f bits/token (%d windows of %d tokens, %.1f s)\n", r.loss,
               r.loss / M_LN2, r.windows, r.seq_len, r.seconds);
    return 0;
}
