// make_corpus.c: writes the fuzz targets' seed corpora (committed; `make fuzz-corpus`
// reruns it). Each HDF5 target gets two kinds of seed: in fuzz/corpus/<target>/ files as
// nsa writes them (checksummed: most mutations end at a checksum, which is what the
// checksums are for), in fuzz/corpus/<target>-foreign/ the same content in the layout other
// writers such as h5py use by default (HDF5's earliest format, contiguous data, no
// filters, variable-length strings), whose bytes a mutation changes without tripping a
// checksum, so the fuzzer reaches the checks behind them, and libhdf5's parser of
// unchecked metadata too. Models are shrunk so that every seed stays below ~100 KB.
// fuzz/corpus/<target>-regress/ holds inputs that once crashed nsa, kept by hand (make
// fuzz-corpus leaves them): make test replays them and does not mutate them.
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/checkpoint.h"
#include "data/prepare.h"
#include "data/q4k_file.h"
#include "kernels/common.h"
#include "model/model.h"
#include "model/quant.h"

static const char *out_dir;

static void path_in(char *buf, size_t n, const char *sub, const char *name) {
    snprintf(buf, n, "%s/%s/%s", out_dir, sub, name);
}

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "make_corpus: %s failed\n", what);
        exit(1);
    }
}

static void attr(hid_t loc, const char *name, hid_t type, const void *v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
    check(a >= 0 && H5Awrite(a, type, v) >= 0, name);
    H5Aclose(a);
    H5Sclose(s);
}

static void attr_vlen_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    attr(loc, name, t, &v);
    H5Tclose(t);
}

static void dataset(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int ndim, const hsize_t *d,
                    const void *data) {
    hid_t s = H5Screate_simple(ndim, d, NULL);
    hid_t ds = H5Dcreate2(loc, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    check(ds >= 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, name);
    H5Dclose(ds);
    H5Sclose(s);
}

// /config as h5py writes a dict of Python values: int64, float64, variable-length strings.
static void legacy_config(hid_t f, const Config *c) {
    hid_t g = H5Gcreate2(f, "config", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int i = 0; i < cfg_n_keys; i++) {
        const CfgKey *k = &cfg_keys[i];
        const void *src = (const char *)c + k->offset;
        if (k->type == CFG_INT) attr(g, k->name, H5T_STD_I64LE, src);
        else if (k->type == CFG_REAL) attr(g, k->name, H5T_IEEE_F64LE, src);
        else attr_vlen_str(g, k->name, k->type == CFG_ENUM ? config_enum_name(k, c) : (const char *)src);
    }
    H5Gclose(g);
}

// A checkpoint (or, with m->q4k_data, a quantized one) in the earliest format.
static void legacy_model(const char *path, const Model *m) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    check(f >= 0, path);
    legacy_config(f, &m->cfg);
    hid_t gp = H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t gq = m->q4k_data ? H5Gcreate2(f, "q4k", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = &m->params[i];
        if (m->q4k_data && quant_param_is_q4k(p)) {
            hsize_t d[2] = {(hsize_t)p->t.shape[0], (hsize_t)(quant_param_bytes(p) / p->t.shape[0])};
            dataset(gq, p->name, H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, d, p->t.q4k);
            hid_t ds = H5Dopen2(gq, p->name, H5P_DEFAULT);
            attr(ds, "rows", H5T_NATIVE_INT64, &p->t.shape[0]);
            attr(ds, "cols", H5T_NATIVE_INT64, &p->t.shape[1]);
            H5Dclose(ds);
        } else {
            hsize_t d[2] = {(hsize_t)p->t.shape[0], (hsize_t)p->t.shape[1]};
            dataset(gp, p->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, p->t.ndim, d, p->t.data);
        }
    }
    if (gq >= 0) H5Gclose(gq);
    H5Gclose(gp);
    check(H5Fclose(f) >= 0, path);
}

static void small_config(Config *c, int q4k) {
    config_defaults(c);
    // Q4_K quantizes only matrices of >= 256 columns: that seed needs d_model 256.
    const char *sets[] = {"vocab_size=32", "d_model=16", "n_layers=2", "attn=nsa,dense", "n_heads=2",
                          "n_kv_heads=1", "head_dim=8", "ffn_dim=32", "seq_len=32", "cmp_block=8",
                          "cmp_stride=4", "slc_block=8", "slc_topn=2", "window=8", "gate_hidden=8",
                          "batch_size=2", "eval_batches=2"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) check(config_set(c, sets[i]) == NSA_OK, sets[i]);
    if (q4k) {
        check(config_set(c, "d_model=256") == NSA_OK && config_set(c, "n_layers=1") == NSA_OK &&
                  config_set(c, "attn=nsa") == NSA_OK && config_set(c, "vocab_size=32") == NSA_OK,
              "q4k config");
    }
    check(config_validate(c) == NSA_OK, "config_validate");
}

// The seed of the loader's non-finite check, in nsa's own layout: block 0 of `name` gets a
// NaN scale d (IEEE half 0x7e00), so the weights it stands for are not finite. (The
// regression input fuzz/corpus/q4k-regress/nan-attention.h5, a mutation of a foreign seed
// whose float type decodes to NaN, reached attn_expf with NaN before that check existed.)
static void nan_scale(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = f >= 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    check(ds >= 0, name);
    hid_t s = H5Dget_space(ds);
    const hssize_t n = H5Sget_simple_extent_npoints(s);
    check(n >= 2, name);
    uint8_t *q = nsa_malloc((size_t)n);
    check(H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, q) >= 0, name);
    q[0] = 0x00, q[1] = 0x7e;
    check(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, q) >= 0, name);
    free(q);
    H5Sclose(s);
    H5Dclose(ds);
    check(H5Fclose(f) >= 0, path);
}

static void checkpoints(void) {
    Config c;
    small_config(&c, 0);
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 7);
    char p[1024];
    path_in(p, sizeof p, "checkpoint", "nsa_weights.h5");
    check(ckpt_save(p, &m, NULL, NULL, NULL) == NSA_OK, p);
    float *am = nsa_malloc((size_t)m.n_elems * sizeof(float)), *av = nsa_malloc((size_t)m.n_elems * sizeof(float));
    for (int64_t i = 0; i < m.n_elems; i++) am[i] = 1e-3f * (float)(i % 7), av[i] = 1e-6f * (float)(i % 5);
    TrainState st = {12, 24, 12 * 2 * 32, {1, 2, 3, 4}};
    path_in(p, sizeof p, "checkpoint", "nsa_train.h5");
    check(ckpt_save(p, &m, am, av, &st) == NSA_OK, p);
    path_in(p, sizeof p, "checkpoint-foreign", "weights.h5");
    legacy_model(p, &m);
    free(am);
    free(av);
    model_free(&m);

    small_config(&c, 1);
    model_create(&m, &c);
    model_init_params(&m, 8);
    model_quantize(&m, NULL, NULL);
    path_in(p, sizeof p, "q4k", "nsa_q4k.h5");
    check(q4k_file_save(p, &m) == NSA_OK, p);
    path_in(p, sizeof p, "q4k", "nan_scale.h5");
    check(q4k_file_save(p, &m) == NSA_OK, p);
    nan_scale(p, "/q4k/layers.0.attn.wq.weight");
    path_in(p, sizeof p, "q4k-foreign", "q4k.h5");
    legacy_model(p, &m);
    model_free(&m);
}

static void datasets(void) {
    char txt[1024], p[1024];
    path_in(txt, sizeof txt, "dataset", "text.tmp");
    FILE *f = fopen(txt, "w");
    check(f != NULL, txt);
    for (int i = 0; i < 3000; i++) fputc("In the beginning God created the heaven and the earth.\n"[i % 55], f);
    fclose(f);
    path_in(p, sizeof p, "dataset", "nsa.h5");
    int64_t nt, nv;
    check(dataset_prepare(txt, p, 0.1, &nt, &nv) == NSA_OK, p);
    remove(txt);
    // Signed 16-bit ids (h5py's int16 arrays), one of them negative, and a vlen tokenizer.
    int16_t tok[600];
    for (int i = 0; i < 600; i++) tok[i] = (int16_t)(i * 31 % 256);
    tok[100] = -1;
    path_in(p, sizeof p, "dataset-foreign", "int16.h5");
    hid_t h = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t d[2] = {500, 100};
    dataset(h, "train", H5T_STD_I16LE, H5T_NATIVE_INT16, 1, &d[0], tok);
    dataset(h, "val", H5T_STD_I16LE, H5T_NATIVE_INT16, 1, &d[1], tok + 500);
    int64_t vocab = 256;
    attr(h, "vocab_size", H5T_STD_I64LE, &vocab);
    attr_vlen_str(h, "tokenizer", "bytes");
    check(H5Fclose(h) >= 0, p);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR   (writes DIR/{checkpoint,dataset,q4k}{,-foreign}/*.h5)\n");
        return 2;
    }
    out_dir = argv[1];
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    checkpoints();
    datasets();
    return 0;
}
