// load.c: see load.h.
#include "eval/load.h"

#include <stdio.h>
#include <string.h>

#include "data/checkpoint.h"
#include "data/q4k_file.h"
#include "kernels/common.h"
#include "model/quant.h"

int quant_parse(const char *s, Quant *q) {
    if (!strcmp(s, "q4_k")) {
        *q = QUANT_Q4K;
        return NSA_OK;
    }
    nsa_error("--quant: '%s' is not a known quantization (q4_k)", s);
    return NSA_ERR;
}

static void progress(void *ctx, int done, int total, const char *name) {
    (void)ctx;
    if (name) fprintf(stderr, "\rquantizing %d/%d %-40s", done + 1, total, name);
    else fprintf(stderr, "\rquantized %d tensors to Q4_K%-40s\n", total, "");
}

int load_model(const char *path, Quant q, int verbose, Model *m, int *is_q4k_file) {
    int is = q4k_file_is(path);
    if (is < 0) return NSA_ERR;
    if (is_q4k_file) *is_q4k_file = is;
    if (is) return q4k_file_load(path, m);
    if (ckpt_load(path, m) != NSA_OK) return NSA_ERR;
    if (q == QUANT_Q4K) model_quantize(m, verbose ? progress : NULL, NULL);
    return NSA_OK;
}
