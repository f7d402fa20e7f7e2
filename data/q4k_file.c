// q4k_file.c: see q4k_file.h.
#include "data/q4k_file.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "data/checkpoint.h"
#include "data/h5.h"
#include "data/path.h"
#include "kernels/common.h"
#include "kernels/q4k.h"
#include "model/quant.h"

int q4k_file_is(const char *path) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NSA_ERR;
    int is = h5_exists(f, "q4k");
    H5Fclose(f);
    return is;
}

int q4k_file_save(const char *path, const Model *m) {
    AtomicFile a;
    hid_t f = h5_create(&a, path);
    if (f < 0) return NSA_ERR;
    int rc = ckpt_config_write(f, &m->cfg);
    hid_t gq = rc == NSA_OK ? h5_group(f, "q4k") : -1, gp = rc == NSA_OK ? h5_group(f, "params") : -1;
    if (gq < 0 || gp < 0) rc = NSA_ERR;
    for (int i = 0; i < m->n_params && rc == NSA_OK; i++) {
        const Param *p = &m->params[i];
        if (quant_param_is_q4k(p)) {
            NSA_ASSERT(p->t.q4k);
            int64_t shape[2] = {p->t.shape[0], q4k_row_bytes(p->t.shape[1])};
            rc = h5_write_u8(gq, p->name, p->t.q4k, 2, shape);
            if (rc == NSA_OK) {
                hid_t ds = H5Dopen2(gq, p->name, H5P_DEFAULT);
                rc = ds >= 0 && h5_attr_i64(ds, "rows", p->t.shape[0]) == NSA_OK &&
                             h5_attr_i64(ds, "cols", p->t.shape[1]) == NSA_OK
                         ? NSA_OK
                         : NSA_ERR;
                if (ds >= 0) H5Dclose(ds);
            }
        } else {
            rc = h5_write_f32(gp, p->name, p->t.data, p->t.ndim, p->t.shape);
        }
    }
    if (gq >= 0) H5Gclose(gq);
    if (gp >= 0) H5Gclose(gp);
    if (rc != NSA_OK) {
        h5_abort(f, &a);
        return NSA_ERR;
    }
    return h5_commit(f, &a);
}

// Reads /q4k/<name> into q after checking type, rank, shape and the rows/cols attributes.
static int read_q4k(hid_t gq, const Param *p, uint8_t *q, const char *path) {
    int64_t rows = p->t.shape[0], cols = p->t.shape[1], rb = q4k_row_bytes(cols);
    if (!h5_exists(gq, p->name)) {
        nsa_error("%s: missing /q4k/%s (the config quantizes it)", path, p->name);
        return NSA_ERR;
    }
    char what[NSA_PATH_MAX + 16];
    snprintf(what, sizeof what, "%s /q4k", path);
    hid_t ds = h5_open_dataset(gq, p->name, what);
    if (ds < 0) return NSA_ERR;
    int rc = NSA_ERR;
    hid_t t = H5Dget_type(ds), s = H5Dget_space(ds);
    hsize_t d[2] = {0, 0};
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd == 2) H5Sget_simple_extent_dims(s, d, NULL);
    int64_t a_rows = -1, a_cols = -1;
    int r_rows = 0, r_cols = 0;
    if (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) != 1 || H5Tget_sign(t) != H5T_SGN_NONE) {
        nsa_error("%s: /q4k/%s is not uint8 block data", path, p->name);
    } else if (nd != 2 || d[0] != (hsize_t)rows || d[1] != (hsize_t)rb) {
        nsa_error("%s: /q4k/%s holds [%llu, %llu] bytes, the config's [%lld, %lld] matrix needs [%lld, %lld] "
                  "(truncated block data or config and weights disagree)",
                  path, p->name, (unsigned long long)d[0], (unsigned long long)(nd == 2 ? d[1] : 0),
                  (long long)rows, (long long)cols, (long long)rows, (long long)rb);
    } else if ((r_rows = h5_read_attr_i64(ds, "rows", &a_rows)) < 0 ||
               (r_cols = h5_read_attr_i64(ds, "cols", &a_cols)) < 0) {
        // h5_read_attr_i64 named the attribute and the problem
    } else if (r_rows || r_cols || a_rows != rows || a_cols != cols) {
        nsa_error("%s: /q4k/%s: attributes rows %lld, cols %lld disagree with the config's [%lld, %lld]", path,
                  p->name, (long long)a_rows, (long long)a_cols, (long long)rows, (long long)cols);
    } else if (h5_check_storage(ds, what, p->name) != NSA_OK) {
        // h5_check_storage said why
    } else if (h5_read_all(ds, H5T_NATIVE_UINT8, q, NULL) != NSA_OK) {
        char why[200];
        h5_last_error(why, sizeof why);
        nsa_error("%s: cannot read /q4k/%s (corrupt file: %s)", path, p->name, why[0] ? why : "HDF5 error");
    } else {
        rc = NSA_OK;
        // Every block's d and dmin (two IEEE halves) must be finite, or the weights are not.
        for (int64_t b = 0; b < rows * (rb / Q4K_BLOCK_BYTES) && rc == NSA_OK; b++) {
            const uint8_t *blk = q + b * Q4K_BLOCK_BYTES;
            uint16_t h0 = (uint16_t)(blk[0] | blk[1] << 8), h1 = (uint16_t)(blk[2] | blk[3] << 8);
            if (!isfinite(q4k_fp16_to_fp32(h0)) || !isfinite(q4k_fp16_to_fp32(h1))) {
                nsa_error("%s: /q4k/%s: block %lld has a non-finite scale (weights are not finite)", path,
                          p->name, (long long)b);
                rc = NSA_ERR;
            }
        }
    }
    H5Tclose(t);
    H5Sclose(s);
    H5Dclose(ds);
    return rc;
}

typedef struct {
    Model *m;
    const char *path, *group;
    int q4k;  // the group is /q4k: its entries must be quantized parameters
    int bad;
} Known;

static herr_t check_known(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)g, (void)info;
    Known *k = op;
    Param *p = model_param(k->m, name);
    if (!p || quant_param_is_q4k(p) != k->q4k) {
        nsa_error("%s: /%s/%s is not a %s parameter of this config", k->path, k->group, name,
                  k->q4k ? "quantized" : "float32");
        k->bad = 1;
        return 1;
    }
    return 0;
}

int q4k_file_load(const char *path, Model *m) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NSA_ERR;
    Config c;
    config_defaults(&c);
    c.gate_hidden = 0;
    int rc = ckpt_config_read(f, &c, path);
    if (rc == NSA_OK && (!h5_exists(f, "q4k") || !h5_exists(f, "params"))) {
        nsa_error("%s: a quantized checkpoint needs /q4k and /params", path);
        rc = NSA_ERR;
    }
    if (rc == NSA_OK) {
        // As ckpt_load: allocate only for a config the file backs with stored bytes. A Q4_K
        // matrix takes at least 144/256 bytes per weight, a float tensor 4.
        char what[NSA_PATH_MAX + 16];
        snprintf(what, sizeof what, "%s /q4k", path);
        int64_t q = ckpt_stored_bytes(f, "q4k", what);
        snprintf(what, sizeof what, "%s /params", path);
        int64_t p = q < 0 ? -1 : ckpt_stored_bytes(f, "params", what), need = config_n_params(&c) / 256 * 144;
        if (q < 0 || p < 0) rc = NSA_ERR;
        else if (q + p < need) {
            nsa_error("%s: /q4k and /params store %lld bytes, the config's shapes need at least %lld (config and "
                      "weights disagree)", path, (long long)(q + p), (long long)need);
            rc = NSA_ERR;
        }
    }
    if (rc != NSA_OK) {
        H5Fclose(f);
        return NSA_ERR;
    }
    model_create(m, &c);
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += quant_param_bytes(&m->params[i]);
    m->q4k_data = nsa_malloc((size_t)(total > 0 ? total : 1));
    m->q4k_bytes = total;
    hid_t gq = H5Gopen2(f, "q4k", H5P_DEFAULT), gp = H5Gopen2(f, "params", H5P_DEFAULT);
    if (gq < 0 || gp < 0) {
        nsa_error("%s: cannot open /q4k and /params as groups (corrupt file?)", path);
        rc = NSA_ERR;
    }
    int64_t off = 0;
    for (int i = 0; i < m->n_params && rc == NSA_OK; i++) {
        Param *p = &m->params[i];
        if (quant_param_is_q4k(p)) {
            rc = read_q4k(gq, p, m->q4k_data + off, path);
            p->t.q4k = m->q4k_data + off;
            p->t.requires_grad = 0;  // quantized weights are never trained
            off += quant_param_bytes(p);
        } else {
            char what[NSA_PATH_MAX + 16];
            snprintf(what, sizeof what, "%s /params", path);
            rc = h5_read_f32(gp, p->name, p->t.data, p->t.ndim, p->t.shape, what);
        }
    }
    for (int k = 0; k < 2 && rc == NSA_OK; k++) {
        Known kn = {m, path, k ? "params" : "q4k", !k, 0};
        H5Literate(k ? gp : gq, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, check_known, &kn);
        if (kn.bad) rc = NSA_ERR;
    }
    // The float tensors (norms, gate biases, embeddings left in float) must be finite too.
    if (rc == NSA_OK) rc = ckpt_check_finite(m, m->data, "params", 0, path);
    if (gq >= 0) H5Gclose(gq);
    if (gp >= 0) H5Gclose(gp);
    H5Fclose(f);
    if (rc != NSA_OK) model_free(m);
    return rc;
}
