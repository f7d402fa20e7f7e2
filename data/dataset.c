// dataset.c: see dataset.h.
#include "data/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/common.h"
#include "data/h5.h"

#define DATASET_MAX_TOKENS ((int64_t)1 << 34)

int64_t dataset_max_tokens(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    int64_t half = pages > 0 && page > 0 ? (int64_t)pages / 2 * page / (int64_t)sizeof(uint16_t) : 0;
    return half > 0 && half < DATASET_MAX_TOKENS ? half : DATASET_MAX_TOKENS;
}

static int read_split(hid_t f, const char *name, uint16_t **out, int64_t *n, const char *path) {
    *out = NULL;
    if (!h5_exists(f, name)) {
        nsa_error("%s: missing dataset /%s (not an nsa dataset? make one with `nsa prepare`)", path, name);
        return NSA_ERR;
    }
    hid_t ds = h5_open_dataset(f, name, path);
    if (ds < 0) return NSA_ERR;
    hid_t s = H5Dget_space(ds), t = H5Dget_type(ds);
    int nd = H5Sget_simple_extent_ndims(s);
    hsize_t d = 0;
    int rc = NSA_ERR;
    if (nd != 1 || H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_dims(s, &d, NULL) != 1) {
        nsa_error("%s: /%s must be a 1-D integer dataset of token ids", path, name);
    } else if (d > (hsize_t)dataset_max_tokens()) {
        nsa_error("%s: /%s declares %llu tokens; at most %lld fit (2^34, and half of this machine's memory)", path,
                  name, (unsigned long long)d, (long long)dataset_max_tokens());
    } else if (h5_check_storage(ds, path, name) == NSA_OK) {
        *n = (int64_t)d;
        *out = nsa_malloc((size_t)d * sizeof(uint16_t));
        int range;
        // Any integer type is read, through HDF5's conversion to uint16 with range checks:
        // an id below 0 or above 65535 is an error, not a clipped (wrong) token.
        if (h5_read_all(ds, H5T_NATIVE_UINT16, *out, &range) == NSA_OK) {
            rc = NSA_OK;
        } else {
            char why[200];
            h5_last_error(why, sizeof why);
            if (range) nsa_error("%s: /%s holds token ids outside 0..65535 (negative, or too large)", path, name);
            else nsa_error("%s: cannot read /%s (corrupt file: %s)", path, name, why[0] ? why : "HDF5 error");
            free(*out);
            *out = NULL;
        }
    }
    H5Tclose(t);
    H5Sclose(s);
    H5Dclose(ds);
    return rc;
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
    int rc = NSA_OK;
    d->vocab_size = 65536;
    if (h5_read_attr_i64(f, "vocab_size", &d->vocab_size) < 0) rc = NSA_ERR;
    if (rc == NSA_OK && (d->vocab_size < 2 || d->vocab_size > 65536)) {
        nsa_error("%s: attribute vocab_size %lld must be in [2, 65536] (ids are uint16)", path,
                  (long long)d->vocab_size);
        rc = NSA_ERR;
    }
    strcpy(d->tokenizer, "bytes");
    if (rc == NSA_OK && h5_read_attr_str(f, "tokenizer", d->tokenizer, sizeof d->tokenizer) < 0) rc = NSA_ERR;
    if (rc == NSA_OK) rc = read_split(f, "train", &d->train, &d->n_train, path);
    if (rc == NSA_OK) rc = read_split(f, "val", &d->val, &d->n_val, path);
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
