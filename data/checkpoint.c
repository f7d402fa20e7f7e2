// checkpoint.c: see checkpoint.h.
#include "data/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/common.h"
#include "data/h5.h"

int ckpt_config_write(hid_t f, const Config *c) {
    hid_t g = h5_group(f, "config");
    if (g < 0) return NSA_ERR;
    int rc = NSA_OK;
    for (int i = 0; i < cfg_n_keys && rc == NSA_OK; i++) {
        const CfgKey *k = &cfg_keys[i];
        const void *src = (const char *)c + k->offset;
        if (k->type == CFG_INT) rc = h5_attr_i64(g, k->name, *(const int64_t *)src);
        else if (k->type == CFG_REAL) rc = h5_attr_f64(g, k->name, *(const double *)src);
        else if (k->type == CFG_ENUM) rc = h5_attr_str(g, k->name, config_enum_name(k, c));
        else rc = h5_attr_str(g, k->name, (const char *)src);
    }
    H5Gclose(g);
    return rc;
}

static int write_tensors(hid_t f, const char *group, const Model *m, const float *base) {
    hid_t g = h5_group(f, group);
    if (g < 0) return NSA_ERR;
    int rc = NSA_OK;
    for (int i = 0; i < m->n_params && rc == NSA_OK; i++) {
        const Param *p = &m->params[i];
        rc = h5_write_f32(g, p->name, base + (p->t.data - m->data), p->t.ndim, p->t.shape);
    }
    H5Gclose(g);
    return rc;
}

int ckpt_save(const char *path, const Model *m, const float *adam_m, const float *adam_v,
              const TrainState *st) {
    AtomicFile a;
    hid_t f = h5_create(&a, path);
    if (f < 0) return NSA_ERR;
    int rc = ckpt_config_write(f, &m->cfg);
    if (rc == NSA_OK) rc = write_tensors(f, "params", m, m->data);
    if (rc == NSA_OK && adam_m && adam_v) {
        hid_t g = h5_group(f, "optim");
        rc = g < 0 ? NSA_ERR : NSA_OK;
        if (g >= 0) H5Gclose(g);
        if (rc == NSA_OK) rc = write_tensors(f, "optim/m", m, adam_m);
        if (rc == NSA_OK) rc = write_tensors(f, "optim/v", m, adam_v);
    }
    if (rc == NSA_OK && st) {
        hid_t g = h5_group(f, "state");
        rc = g < 0 ? NSA_ERR : NSA_OK;
        if (rc == NSA_OK) rc = h5_attr_i64(g, "step", st->step);
        if (rc == NSA_OK) rc = h5_attr_i64(g, "data_position", st->data_position);
        if (rc == NSA_OK) rc = h5_attr_i64(g, "tokens_seen", st->tokens_seen);
        if (rc == NSA_OK) rc = h5_attr_u64_array(g, "rng", st->rng, 4);
        if (g >= 0) H5Gclose(g);
    }
    if (rc != NSA_OK) {
        h5_abort(f, &a);
        return NSA_ERR;
    }
    return h5_commit(f, &a);
}

int ckpt_config_read(hid_t f, Config *c, const char *path) {
    if (!h5_exists(f, "config")) {
        nsa_error("%s: no /config group (not an nsa checkpoint?)", path);
        return NSA_ERR;
    }
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    if (g < 0) {
        nsa_error("%s: /config is not a group (corrupt file?)", path);
        return NSA_ERR;
    }
    int rc = NSA_OK;
    for (int i = 0; i < cfg_n_keys && rc == NSA_OK; i++) {
        const CfgKey *k = &cfg_keys[i];
        void *dst = (char *)c + k->offset;
        char name[64];  // CFG_ENUM: the stored spelling
        int r = k->type == CFG_INT    ? h5_read_attr_i64(g, k->name, dst)
                : k->type == CFG_REAL ? h5_read_attr_f64(g, k->name, dst)
                : k->type == CFG_ENUM ? h5_read_attr_str(g, k->name, name, sizeof name)
                                      : h5_read_attr_str(g, k->name, dst, k->size);
        if (r == 0 && k->type == CFG_ENUM) {
            char where[1100];
            snprintf(where, sizeof where, "%s: /config: ", path);
            if (config_set_value(c, k, name, where) != NSA_OK) rc = NSA_ERR;
        } else if (r == 1 && k->model && strcmp(k->name, "gate_hidden") && strcmp(k->name, "tie_embeddings") &&
            strcmp(k->name, "rope_theta") && strcmp(k->name, "norm_eps") && strcmp(k->name, "cmp_fn") &&
            strcmp(k->name, "kv") && strcmp(k->name, "gate_act")) {
            nsa_error("%s: /config lacks model key %s", path, k->name);
            rc = NSA_ERR;
        } else if (r < 0) {
            rc = NSA_ERR;  // h5_read_attr_* named the file, the attribute and the problem
        }
    }
    H5Gclose(g);
    if (rc == NSA_OK && config_validate(c) != NSA_OK) {
        fprintf(stderr, "  (in the /config of %s)\n", path);
        rc = NSA_ERR;
    }
    return rc;
}

int ckpt_read_config(const char *path, Config *cfg) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NSA_ERR;
    int rc = ckpt_config_read(f, cfg, path);
    H5Fclose(f);
    return rc;
}

typedef struct {
    const char *what;
    int64_t bytes;  // -1 after an error line
} Stored;

// 1 if name could be a tensor's: printable ASCII without '/'. Names from a file reach error
// lines only after this check, so a hostile one cannot write control bytes to a terminal.
static int plain_name(const char *name) {
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c <= ' ' || *c >= 0x7f || *c == '/') return 0;
    return *name != 0;
}

static herr_t add_stored(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)info;
    Stored *st = op;
    if (!plain_name(name)) {
        char shown[64];
        size_t i = 0;
        for (; name[i] && i < sizeof shown - 1; i++) shown[i] = plain_name((char[]){name[i], 0}) ? name[i] : '?';
        shown[i] = 0;
        nsa_error("%s: entry '%s' is not a tensor name (corrupt file?)", st->what, shown);
        st->bytes = -1;
        return 1;
    }
    hid_t ds = h5_open_dataset(g, name, st->what);
    int ok = ds >= 0 && h5_check_storage(ds, st->what, name) == NSA_OK;
    if (ok) {
        hid_t s = H5Dget_space(ds), t = H5Dget_type(ds);
        hssize_t n = H5Sget_simple_extent_npoints(s);
        size_t esize = H5Tget_size(t);
        int64_t b;
        // Saturate: the sum is compared with what a valid config needs (< 2^34 bytes).
        if (n < 0 || esize == 0 || nsa_mul_overflow((int64_t)n, (int64_t)esize, &b) || b > INT64_MAX / 4)
            b = INT64_MAX / 4;
        st->bytes = st->bytes + b > INT64_MAX / 4 ? INT64_MAX / 4 : st->bytes + b;
        H5Tclose(t);
        H5Sclose(s);
    }
    if (ds >= 0) H5Dclose(ds);
    if (!ok) st->bytes = -1;
    return ok ? 0 : 1;
}

int64_t ckpt_stored_bytes(hid_t f, const char *group, const char *what) {
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (g < 0) {
        nsa_error("%s: cannot open the group (corrupt file?)", what);
        return -1;
    }
    Stored st = {what, 0};
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, add_stored, &st) < 0 && st.bytes >= 0) {
        nsa_error("%s: cannot list the group (corrupt file?)", what);
        st.bytes = -1;
    }
    H5Gclose(g);
    return st.bytes;
}

typedef struct {
    const Model *m;
    const char *path, *group;
    int bad;
} ExtraCheck;

static herr_t check_known(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)g, (void)info;
    ExtraCheck *e = op;
    if (!model_param((Model *)e->m, name)) {
        nsa_error("%s: /%s/%s is not a parameter of this config (config and weights disagree)", e->path,
                  e->group, name);
        e->bad = 1;
        return 1;
    }
    return 0;
}

static int read_tensors(hid_t f, const char *group, const Model *m, float *base, const char *path) {
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (g < 0) {
        nsa_error("%s: missing group /%s", path, group);
        return NSA_ERR;
    }
    int rc = NSA_OK;
    for (int i = 0; i < m->n_params && rc == NSA_OK; i++) {
        const Param *p = &m->params[i];
        char what[NSA_PATH_MAX + 64];
        snprintf(what, sizeof what, "%s /%s", path, group);
        rc = h5_read_f32(g, p->name, base + (p->t.data - m->data), p->t.ndim, p->t.shape, what);
    }
    if (rc == NSA_OK) {
        ExtraCheck e = {m, path, group, 0};
        H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, check_known, &e);
        if (e.bad) rc = NSA_ERR;
    }
    H5Gclose(g);
    return rc;
}

// A NaN weight makes every answer NaN, which generate once printed as NUL bytes with exit
// status 0.
int ckpt_check_finite(const Model *m, const float *base, const char *group, int nonneg, const char *path) {
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = &m->params[i];
        const float *x = base + (p->t.data - m->data);
        int64_t n = p->t.ndim == 2 ? p->t.shape[0] * p->t.shape[1] : p->t.shape[0];
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(x[j]) || (nonneg && x[j] < 0)) {
                nsa_error("%s: /%s/%s[%lld] is %g: the checkpoint is diverged or corrupt", path, group, p->name,
                          (long long)j, (double)x[j]);
                return NSA_ERR;
            }
    }
    return NSA_OK;
}

int ckpt_load(const char *path, Model *m) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NSA_ERR;
    Config c;
    config_defaults(&c);
    c.gate_hidden = 0;
    int rc = ckpt_config_read(f, &c, path);
    if (rc == NSA_OK && h5_exists(f, "q4k")) {
        nsa_error("%s is a Q4_K quantized checkpoint: only nsa eval and nsa generate read it (training needs "
                  "float32 weights)", path);
        rc = NSA_ERR;
    }
    if (rc == NSA_OK) {
        if (!h5_exists(f, "params")) {
            nsa_error("%s: no /params group", path);
            rc = NSA_ERR;
        }
    }
    if (rc == NSA_OK) {
        // Nothing is allocated for a config the file does not back with stored values: a
        // few KB must not make nsa zero-fill gigabytes before the first shape check fails.
        char what[NSA_PATH_MAX + 16];
        snprintf(what, sizeof what, "%s /params", path);
        int64_t stored = ckpt_stored_bytes(f, "params", what), need = config_n_params(&c) * (int64_t)sizeof(float);
        if (stored < 0) rc = NSA_ERR;
        else if (stored < need) {
            nsa_error("%s: /params stores %lld bytes of tensors, the config's shapes need %lld (config and weights "
                      "disagree)", path, (long long)stored, (long long)need);
            rc = NSA_ERR;
        }
    }
    if (rc == NSA_OK) {
        model_create(m, &c);
        rc = read_tensors(f, "params", m, m->data, path);
        if (rc == NSA_OK) rc = ckpt_check_finite(m, m->data, "params", 0, path);
        if (rc != NSA_OK) model_free(m);
    }
    H5Fclose(f);
    return rc;
}

// /state: the four attributes, each of its exact type and shape, counts non-negative and
// the generator's state not all zero (xoshiro256** would then draw only zeros).
static int read_state(hid_t f, TrainState *st, const char *path) {
    memset(st, 0, sizeof *st);
    hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
    if (g < 0) {
        nsa_error("%s: cannot open /state (corrupt file?)", path);
        return NSA_ERR;
    }
    const char *names[3] = {"step", "data_position", "tokens_seen"};
    int64_t *vals[3] = {&st->step, &st->data_position, &st->tokens_seen};
    int rc = NSA_OK;
    for (int i = 0; i < 3 && rc == NSA_OK; i++) {
        int r = h5_read_attr_i64(g, names[i], vals[i]);
        if (r == 1) nsa_error("%s: /state lacks attribute %s", path, names[i]);
        else if (r == 0 && *vals[i] < 0) nsa_error("%s: /state attribute %s is negative (%lld)", path, names[i],
                                                   (long long)*vals[i]);
        rc = r == 0 && *vals[i] >= 0 ? NSA_OK : NSA_ERR;
    }
    if (rc == NSA_OK) {
        int r = h5_read_attr_u64_array(g, "rng", st->rng, 4);
        if (r == 1) nsa_error("%s: /state lacks attribute rng (4 x uint64)", path);
        else if (r == 0 && !(st->rng[0] | st->rng[1] | st->rng[2] | st->rng[3]))
            nsa_error("%s: /state attribute rng is all zero (not a generator state)", path), r = -1;
        rc = r == 0 ? NSA_OK : NSA_ERR;
    }
    H5Gclose(g);
    return rc;
}

int ckpt_load_train(const char *path, const Model *m, float *adam_m, float *adam_v, TrainState *st) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NSA_ERR;
    if (!h5_exists(f, "optim") || !h5_exists(f, "state")) {
        H5Fclose(f);
        return 1;
    }
    int rc = read_tensors(f, "optim/m", m, adam_m, path);
    if (rc == NSA_OK) rc = read_tensors(f, "optim/v", m, adam_v, path);
    if (rc == NSA_OK) rc = ckpt_check_finite(m, adam_m, "optim/m", 0, path);
    if (rc == NSA_OK) rc = ckpt_check_finite(m, adam_v, "optim/v", 1, path);  // a mean of squares
    if (rc == NSA_OK) rc = read_state(f, st, path);
    H5Fclose(f);
    return rc;
}
