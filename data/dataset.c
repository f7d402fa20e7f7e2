// dataset.c: see dataset.h.
#include "data/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "data/h5.h"

static int read_split(hid_t f, const char *name, uint16_t **out, int64_t *n, const char *path) {
    if (!h5_exists(f, name)) {
        nsa_error("%s: missing dataset /%s (not an nsa dataset? make one with `nsa prepare`)", path, name);
        return NSA_ERR;
    }
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t s = H5Dget_space(ds);
    hid_t t = H5Dget_type(ds);
    int nd = H5Sget_simple_extent_ndims(s);
    hsize_t d = 0;
    int ok = nd == 1 && H5Tget_class(t) == H5T_INTEGER;
    if (ok) H5Sget_simple_extent_dims(s, &d, NULL);
    H5Tclose(t);
    H5Sclose(s);
    if (!ok) {
        nsa_error("%s: /%s must be a 1-D integer dataset of token ids", path, name);
        H5Dclose(ds);
        return NSA_ERR;
    }
    *n = (int64_t)d;
    *out = nsa_malloc((size_t)d * sizeof(uint16_t) + 1);
    ok = H5Dread(ds, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) >= 0;
    H5Dclose(ds);
    if (!ok) {
        nsa_error("%s: cannot read /%s (corrupt, or ids outside uint16?)", path, name);
        free(*out);
        *out = NULL;
        return NSA_ERR;
    }
    return NSA_OK;
}

static int check_ids(const uint16_t *x, int64_t n, int64_t vocab, const char *what, const char *path) {
    for (int64_t i = 0; i < n; i++)
        if (x[i] >= vocab) {
            nsa_error("%s: token id %u at /%s[%lld] is >= vocab_size %lld", path, x[i], what, (long long)i,
                      (long long)vocab);
            return NSA_ERR;
        }
    return NSA_OK;
}

int dataset_load(const char *path, int64_t model_vocab, Dataset *d) {
    memset(d, 0, sizeof *d);
    hid_t f = h5_open_read(path);
    if (f < 0) return NSA_ERR;
    int rc = read_split(f, "train", &d->train, &d->n_train, path);
    if (rc == NSA_OK) rc = read_split(f, "val", &d->val, &d->n_val, path);
    d->vocab_size = 65536;
    if (rc == NSA_OK && h5_read_attr_i64(f, "vocab_size", &d->vocab_size) < 0) {
        nsa_error("%s: attribute vocab_size is not an integer", path);
        rc = NSA_ERR;
    }
    strcpy(d->tokenizer, "bytes");
    if (rc == NSA_OK) h5_read_attr_str(f, "tokenizer", d->tokenizer, sizeof d->tokenizer);
    H5Fclose(f);
    int64_t vocab = d->vocab_size;
    if (model_vocab > 0 && model_vocab < vocab) vocab = model_vocab;
    if (rc == NSA_OK) rc = check_ids(d->train, d->n_train, vocab, "train", path);
    if (rc == NSA_OK) rc = check_ids(d->val, d->n_val, vocab, "val", path);
    if (rc != NSA_OK) dataset_free(d);
    return rc;
}

void dataset_free(Dataset *d) {
    free(d->train);
    free(d->val);
    memset(d, 0, sizeof *d);
}
