// eval.c: `nsa eval`: validation loss of a checkpoint, float32 and/or Q4_K (eval/eval.h).
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "eval/eval.h"
#include "kernels/common.h"

static const char usage[] =
    "usage: nsa eval --ckpt FILE --data data.h5 [--windows N] [--quant q4_k] [--quiet]\n"
    "  Mean token cross-entropy of FILE on the /val split of data.h5, over N windows of\n"
    "  seq_len tokens spread evenly over /val (default: every window that tiles /val, i.e.\n"
    "  the whole split). Training's val_loss uses eval_batches x batch_size such windows:\n"
    "  --windows with that number reproduces it.\n"
    "  FILE is a float checkpoint or a quantized one (nsa quantize). --quant q4_k quantizes a\n"
    "  float checkpoint in memory and scores both. One table: loss (nats/token), perplexity,\n"
    "  bits/byte (byte tokenizer) or bits/token, weight bytes, tokens/s; progress on stderr.\n";

enum { O_HELP = 1, O_CKPT, O_DATA, O_WINDOWS, O_QUANT, O_QUIET };
static const ArgSpec specs[] = {{"ckpt", 1, O_CKPT},   {"data", 1, O_DATA}, {"windows", 1, O_WINDOWS},
                                {"quant", 1, O_QUANT}, {"quiet", 0, O_QUIET}, {"help", 0, O_HELP},
                                {NULL, 0, 0}};

static int parse(EvalOpts *o, int argc, char **argv) {
    *o = (EvalOpts){NULL, NULL, 0, QUANT_NONE, 1};
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CKPT: o->ckpt = v; break;
        case O_DATA: o->data = v; break;
        case O_WINDOWS:
            if (args_i64("--windows", v, 1, INT64_C(1) << 32, &o->windows) != NSA_OK) return 2;
            break;
        case O_QUANT:
            if (quant_parse(v, &o->quant) != NSA_OK) return 2;
            break;
        case O_QUIET: o->progress = 0; break;
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
    printf("scored %lld tokens: %lld windows of %lld of the %lld tokens of /val in %s\n", (long long)r.tokens,
           (long long)r.windows, (long long)r.seq_len, (long long)r.val_tokens, o.data);
    printf("%-8s %12s %11s %10s %13s %10s\n", "weights", "nats/token", "perplexity",
           r.byte_tokens ? "bits/byte" : "bits/token", "weight bytes", "tokens/s");
    for (int i = 0; i < r.n_rows; i++) {
        const EvalRow *e = &r.rows[i];
        printf("%-8s %12.6f %11.4f %10.6f %13lld %10.0f\n", e->weights, e->loss, exp(e->loss), e->loss / M_LN2,
               (long long)e->weight_bytes, (double)r.tokens / e->seconds);
    }
    if (r.n_rows == 2)
        printf("q4_k costs %+.6f nats/token (%+.2f%%) for %.2fx fewer weight bytes\n",
               r.rows[1].loss - r.rows[0].loss, 100.0 * (r.rows[1].loss - r.rows[0].loss) / r.rows[0].loss,
               (double)r.rows[0].weight_bytes / (double)r.rows[1].weight_bytes);
    return 0;
}
