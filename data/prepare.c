// prepare.c: corpus preparation for `nsa prepare`: text -> DESIGN.md's dataset file (byte-level tokens, uint16,
// /train and /val, attributes vocab_size and tokenizer).
#include "data/prepare.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "data/dataset.h"
#include "data/h5.h"

int dataset_prepare(const char *text_path, const char *out_path, double val_fraction, int64_t *n_train_out,
                    int64_t *n_val_out) {
    if (!(val_fraction > 0 && val_fraction < 1)) {
        nsa_error("--val-fraction must be in (0, 1), got %g", val_fraction);
        return NSA_ERR;
    }
    FILE *in = fopen(text_path, "rb");
    if (!in) {
        nsa_error("cannot open %s: %s", text_path, strerror(errno));
        return NSA_ERR;
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = nsa_malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, in)) > 0) {
        n += got;
        if (n == cap && (int64_t)n >= dataset_max_tokens()) {
            nsa_error("%s: more than %lld bytes; a dataset holds at most that many tokens per split", text_path,
                      (long long)dataset_max_tokens());
            free(buf);
            fclose(in);
            return NSA_ERR;
        }
        if (n == cap) {
            unsigned char *bigger = nsa_malloc(cap * 2);
            memcpy(bigger, buf, n);
            free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    int read_error = ferror(in);
    fclose(in);
    if (read_error) {
        nsa_error("cannot read %s: %s", text_path, strerror(errno));
        free(buf);
        return NSA_ERR;
    }
    int64_t n_val = (int64_t)((double)n * val_fraction);
    if (n < 16 || n_val < 2 || (int64_t)n - n_val < 2) {
        nsa_error("%s: %zu bytes is too little text to split into train and val", text_path, n);
        free(buf);
        return NSA_ERR;
    }
    uint16_t *tok = nsa_malloc(n * sizeof *tok);
    for (size_t i = 0; i < n; i++) tok[i] = buf[i];  // byte-level: id = byte value
    free(buf);
    AtomicFile a;
    hid_t f = h5_create(&a, out_path);
    if (f < 0) {
        free(tok);
        return NSA_ERR;
    }
    int64_t n_train = (int64_t)n - n_val;
    int64_t shape[2] = {n_train, n_val};
    int rc = h5_write_u16(f, "train", tok, 1, &shape[0]);
    if (rc == NSA_OK) rc = h5_write_u16(f, "val", tok + n_train, 1, &shape[1]);
    if (rc == NSA_OK) rc = h5_attr_i64(f, "vocab_size", 256);
    if (rc == NSA_OK) rc = h5_attr_str(f, "tokenizer", "bytes");
    free(tok);
    if (rc != NSA_OK) {
        h5_abort(f, &a);
        return NSA_ERR;
    }
    if (h5_commit(f, &a) != NSA_OK) return NSA_ERR;
    *n_train_out = n_train;
    *n_val_out = n_val;
    return NSA_OK;
}
