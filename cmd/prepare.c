// prepare.c: `nsa prepare`: a text file -> DESIGN.md's dataset file (byte tokens).
#include <stdint.h>
#include <stdio.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "data/prepare.h"
#include "kernels/common.h"

typedef struct {
    const char *text, *out;
    double val_fraction;
} PrepareArgs;

static const char usage[] =
    "usage: nsa prepare --text FILE --out data.h5 [--val-fraction 0.05]\n"
    "  Byte-level tokens (vocab 256) of FILE; the last fraction becomes /val.\n";

enum { O_HELP = 1, O_TEXT, O_OUT, O_VAL };
static const ArgSpec specs[] = {
    {"text", 1, O_TEXT}, {"out", 1, O_OUT}, {"val-fraction", 1, O_VAL}, {"help", 0, O_HELP}, {NULL, 0, 0}};

static int parse(PrepareArgs *a, int argc, char **argv) {
    *a = (PrepareArgs){NULL, NULL, 0.05};
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_TEXT: a->text = v; break;
        case O_OUT: a->out = v; break;
        case O_VAL:
            if (args_f64_open("--val-fraction", v, 0, 1, &a->val_fraction) != NSA_OK) return 2;
            break;
        case O_HELP: fputs(usage, stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!a->text || !a->out) {
        nsa_error("prepare needs --text FILE and --out FILE");
        return 2;
    }
    return CMD_GO;
}

int cmd_prepare(int argc, char **argv) {
    PrepareArgs a;
    int rc = parse(&a, argc, argv);
    if (rc != CMD_GO) return rc;
    int64_t n_train, n_val;
    if (dataset_prepare(a.text, a.out, a.val_fraction, &n_train, &n_val) != NSA_OK) return 1;
    printf("%s: %lld train + %lld val byte tokens\n", a.out, (long long)n_train, (long long)n_val);
    return 0;
}
