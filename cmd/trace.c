// trace.c: `nsa trace`: one batch's logits, loss, gradients and selections (eval/trace.h).
#include <stdint.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "eval/trace.h"
#include "kernels/common.h"

static const char usage[] =
    "usage: nsa trace --ckpt FILE --data data.h5 --out trace.h5 [--batch B]\n"
    "  Runs one batch (B windows of seq_len tokens from the start of /val, default B = 2)\n"
    "  forward and backward and writes /tokens /targets /logits /loss /grads/<param>\n"
    "  and /selection/layers.{i} for every NSA layer (DESIGN.md \"Files\").\n";

enum { O_HELP = 1, O_CKPT, O_DATA, O_OUT, O_BATCH };
static const ArgSpec specs[] = {{"ckpt", 1, O_CKPT},   {"data", 1, O_DATA}, {"out", 1, O_OUT},
                                {"batch", 1, O_BATCH}, {"help", 0, O_HELP}, {NULL, 0, 0}};

static int parse(TraceOpts *o, int argc, char **argv) {
    *o = (TraceOpts){NULL, NULL, NULL, 2};
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int64_t b;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CKPT: o->ckpt = v; break;
        case O_DATA: o->data = v; break;
        case O_OUT: o->out = v; break;
        case O_BATCH:
            if (args_i64("--batch", v, 1, 4096, &b) != NSA_OK) return 2;
            o->batch = (int)b;
            break;
        case O_HELP: fputs(usage, stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!o->ckpt || !o->data || !o->out) {
        nsa_error("trace needs --ckpt, --data and --out");
        return 2;
    }
    return CMD_GO;
}

int cmd_trace(int argc, char **argv) {
    TraceOpts o;
    int rc = parse(&o, argc, argv);
    if (rc != CMD_GO) return rc;
    TraceResult r;
    if (trace_run(&o, &r) != NSA_OK) return 1;
    printf("%s: loss %.6f over %d x %d tokens\n", o.out, r.loss, r.batch, r.seq_len);
    return 0;
}
