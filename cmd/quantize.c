// quantize.c: `nsa quantize`: a float checkpoint to Q4_K (eval/quantize.h).
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "eval/quantize.h"
#include "kernels/common.h"

static const char usage[] =
    "usage: nsa quantize --ckpt FILE --out FILE.q4k.h5 [--quiet]\n"
    "  Quantizes every matrix of at least 256 columns among tok_emb (and so a tied LM head),\n"
    "  lm_head, wq wk wv wo, w1 w2 w3, the gate's fc1 fc2 and the compression k_proj v_proj\n"
    "  to Q4_K with ggml's reference algorithm (byte for byte; rows padded with zeros to a\n"
    "  multiple of 256); everything else stays float32. nsa eval and nsa generate read the\n"
    "  result; training does not. Progress on stderr, a summary on stdout.\n";

enum { O_HELP = 1, O_CKPT, O_OUT, O_QUIET };
static const ArgSpec specs[] = {
    {"ckpt", 1, O_CKPT}, {"out", 1, O_OUT}, {"quiet", 0, O_QUIET}, {"help", 0, O_HELP}, {NULL, 0, 0}};

int cmd_quantize(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *v;
    int progress = 1, id;
    ArgIter it;
    args_begin(&it, argc, argv);
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CKPT: ckpt = v; break;
        case O_OUT: out = v; break;
        case O_QUIET: progress = 0; break;
        case O_HELP: fputs(usage, stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!ckpt || !out) {
        nsa_error("quantize needs --ckpt FILE and --out FILE");
        return 2;
    }
    QuantizeResult r;
    if (quantize_run(ckpt, out, progress, &r) != NSA_OK) return 1;
    printf("%s: %d of %d tensors quantized to Q4_K, weights %lld -> %lld bytes (%.2fx smaller), %.1f s\n", out,
           r.quantized, r.tensors, (long long)r.bytes_before, (long long)r.bytes_after,
           (double)r.bytes_before / (double)r.bytes_after, r.seconds);
    return 0;
}
