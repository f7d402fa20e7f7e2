// test_h5read.c: the HDF5 readers (data/h5.h) against files written through the raw HDF5
// API the way other tools write them (issue 13): what such writers legitimately produce
// loads (variable-length strings, one-element attribute arrays, integer reals, float64
// weights, any integer type of token ids in range), and every other shape, type, range or
// storage is refused with one error line naming the file and the object, before anything
// is allocated for it.
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/checkpoint.h"
#include "data/dataset.h"
#include "data/h5.h"
#include "kernels/common.h"
#include "tests/testutil.h"

static char dir[256];

static void make_dir(void) {
    tu_mkdtemp(dir, sizeof dir, "nsa_h5read_");
    h5_quiet();
}
static void remove_dir(void) { tu_rm_rf(dir); }

static FILE *cap;
static int saved_fd = -1;

static void capture_stderr(void) {
    fflush(stderr);
    cap = tmpfile();
    saved_fd = dup(2);
    dup2(fileno(cap), 2);
}

static const char *captured(void) {
    static char buf[4096];
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    rewind(cap);
    size_t n = fread(buf, 1, sizeof buf - 1, cap);
    buf[n] = 0;
    fclose(cap);
    return buf;
}

// rc is an error, and stderr one `nsa: error:` line containing every needle.
static void expect_error(int rc, const char *err, const char *a, const char *b) {
    cr_expect_neq(rc, NSA_OK, "accepted; stderr: %s", err);
    cr_expect_eq(tu_count_lines(err), 1, "want one line: %s", err);
    cr_expect(!strncmp(err, "nsa: error: ", 12), "%s", err);
    cr_expect(strstr(err, a), "'%s' lacks '%s'", err, a);
    cr_expect(!b || strstr(err, b), "'%s' lacks '%s'", err, b);
}

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

// ---------------------------------------------------------------------------- datasets

static void attr_i64(hid_t loc, const char *name, int64_t v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a), H5Sclose(s);
}

// A dataset file in the earliest format: /train of n ids of file type `type` from the
// native values `vals` (mtype), /val the same; written == 0 creates without writing.
static void tokens_file(const char *path, hid_t type, hid_t mtype, const void *vals, hsize_t n, int written,
                        hsize_t chunk) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    for (int k = 0; k < 2; k++) {
        hid_t s = H5Screate_simple(1, &n, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        if (chunk) H5Pset_chunk(dcpl, 1, &chunk);
        hid_t ds = H5Dcreate2(f, k ? "val" : "train", type, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (written) cr_assert(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals) >= 0);
        H5Dclose(ds), H5Pclose(dcpl), H5Sclose(s);
    }
    attr_i64(f, "vocab_size", 256);
    H5Fclose(f);
}

Test(h5read, token_ids_of_any_integer_type_in_range_load, .init = make_dir, .fini = remove_dir) {
    char p[300];
    path_of(p, sizeof p, "i32.h5");
    int32_t v[300];
    for (int i = 0; i < 300; i++) v[i] = i % 256;
    tokens_file(p, H5T_STD_I32BE, H5T_NATIVE_INT32, v, 300, 1, 0);  // big-endian, even
    Dataset d;
    cr_assert_eq(dataset_load(p, 256, &d), NSA_OK);
    cr_expect_eq(d.n_train, 300);
    cr_expect_eq(d.train[255], 255);
    cr_expect_str_eq(d.tokenizer, "bytes");  // absent means bytes
    dataset_free(&d);
}

Test(h5read, token_ids_outside_uint16_are_an_error, .init = make_dir, .fini = remove_dir) {
    char p[300];
    path_of(p, sizeof p, "u32.h5");
    uint32_t v[300];
    for (int i = 0; i < 300; i++) v[i] = (uint32_t)(i % 256);
    v[77] = 70000;  // HDF5's conversion would clip it to 65535
    tokens_file(p, H5T_STD_U32LE, H5T_NATIVE_UINT32, v, 300, 1, 0);
    Dataset d;
    capture_stderr();
    int rc = dataset_load(p, 0, &d);
    expect_error(rc, captured(), "u32.h5", "outside 0..65535");
}

Test(h5read, unwritten_token_data_is_an_error, .init = make_dir, .fini = remove_dir) {
    char p[300];
    Dataset d;
    // Contiguous, created but never written: HDF5 would read fill values (zeros).
    path_of(p, sizeof p, "contig.h5");
    tokens_file(p, H5T_STD_U16LE, H5T_NATIVE_UINT16, NULL, 1000, 0, 0);
    capture_stderr();
    int rc = dataset_load(p, 0, &d);
    expect_error(rc, captured(), "contig.h5", "never written");
    // Chunked, declared 4096 ids with only the first 1024-id chunk written.
    path_of(p, sizeof p, "chunks.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    uint16_t v[1024] = {0};
    for (int k = 0; k < 2; k++) {
        hsize_t n = 4096, c = 1024, start = 0;
        hid_t s = H5Screate_simple(1, &n, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 1, &c);
        hid_t ds = H5Dcreate2(f, k ? "val" : "train", H5T_STD_U16LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Sselect_hyperslab(s, H5S_SELECT_SET, &start, NULL, &c, NULL);
        hid_t ms = H5Screate_simple(1, &c, NULL);
        cr_assert(H5Dwrite(ds, H5T_NATIVE_UINT16, ms, s, H5P_DEFAULT, v) >= 0);
        H5Sclose(ms), H5Dclose(ds), H5Pclose(dcpl), H5Sclose(s);
    }
    H5Fclose(f);
    capture_stderr();
    rc = dataset_load(p, 0, &d);
    expect_error(rc, captured(), "chunks.h5", "1 of its 4 chunks");
}

Test(h5read, data_in_other_files_is_refused, .init = make_dir, .fini = remove_dir) {
    char p[300], ext[300], other[300];
    path_of(p, sizeof p, "external.h5");
    path_of(ext, sizeof ext, "raw.bin");
    FILE *rf = fopen(ext, "wb");
    for (int i = 0; i < 2000; i++) fputc(0, rf);
    fclose(rf);
    // /train's bytes in a raw file beside it (H5Pset_external): nsa reads only the file named.
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 1000;
    hid_t s = H5Screate_simple(1, &n, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_external(dcpl, ext, 0, 2000);
    H5Dclose(H5Dcreate2(f, "train", H5T_STD_U16LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Pclose(dcpl);
    H5Dclose(H5Dcreate2(f, "val", H5T_STD_U16LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(s);
    H5Fclose(f);
    Dataset d;
    capture_stderr();
    int rc = dataset_load(p, 0, &d);
    expect_error(rc, captured(), "external.h5", "other files");
    // /train as an external link to another file: as good as missing.
    path_of(other, sizeof other, "other.h5");
    uint16_t v[100] = {0};
    tokens_file(other, H5T_STD_U16LE, H5T_NATIVE_UINT16, v, 100, 1, 0);
    path_of(p, sizeof p, "elink.h5");
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Lcreate_external(other, "train", f, "train", H5P_DEFAULT, H5P_DEFAULT);
    H5Lcreate_external(other, "val", f, "val", H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    capture_stderr();
    rc = dataset_load(p, 0, &d);
    expect_error(rc, captured(), "elink.h5", "missing dataset /train");
}

Test(h5read, dataset_attributes_are_checked, .init = make_dir, .fini = remove_dir) {
    char p[300];
    path_of(p, sizeof p, "attrs.h5");
    uint16_t v[300] = {0};
    tokens_file(p, H5T_STD_U16LE, H5T_NATIVE_UINT16, v, 300, 1, 0);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "vocab_size");
    attr_i64(f, "vocab_size", 0);
    H5Fclose(f);
    Dataset d;
    capture_stderr();
    int rc = dataset_load(p, 0, &d);
    expect_error(rc, captured(), "attrs.h5", "vocab_size 0");
    // A one-element array is one value (numpy writes [256] that way); a string is not a number.
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "vocab_size");
    hsize_t one = 1;
    hid_t s = H5Screate_simple(1, &one, NULL);
    hid_t a = H5Acreate2(f, "vocab_size", H5T_STD_U8LE, s, H5P_DEFAULT, H5P_DEFAULT);
    uint8_t u = 200;
    H5Awrite(a, H5T_NATIVE_UINT8, &u);
    H5Aclose(a), H5Sclose(s);
    H5Fclose(f);
    cr_assert_eq(dataset_load(p, 0, &d), NSA_OK);
    cr_expect_eq(d.vocab_size, 200);
    dataset_free(&d);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "vocab_size");
    h5_attr_str(f, "vocab_size", "256");
    H5Fclose(f);
    capture_stderr();
    rc = dataset_load(p, 0, &d);
    expect_error(rc, captured(), "attrs.h5", "vocab_size must be an integer");
}

// ---------------------------------------------------------------------------- checkpoints

static void tiny_model(Model *m) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_validate(&c), NSA_OK);
    model_create(m, &c);
    model_init_params(m, 1);
}

// Rewrites /params/<name> of file p as a dataset of file type `type` holding `vals`.
static void replace_param(const char *p, const Param *par, hid_t type, hid_t mtype, const void *vals) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "params", H5P_DEFAULT);
    H5Ldelete(g, par->name, H5P_DEFAULT);
    hsize_t d[2] = {(hsize_t)par->t.shape[0], (hsize_t)par->t.shape[1]};
    hid_t s = H5Screate_simple(par->t.ndim, d, NULL);
    hid_t ds = H5Dcreate2(g, par->name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals) >= 0);
    H5Dclose(ds), H5Sclose(s), H5Gclose(g), H5Fclose(f);
}

Test(h5read, float64_weights_load_rounded_and_in_range, .init = make_dir, .fini = remove_dir) {
    Model m, r;
    tiny_model(&m);
    char p[300];
    path_of(p, sizeof p, "f64.h5");
    cr_assert_eq(ckpt_save(p, &m, NULL, NULL, NULL), NSA_OK);
    Param *w = model_param(&m, "layers.0.mlp.w1.weight");
    int64_t n = w->t.shape[0] * w->t.shape[1];
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (double)w->t.data[i] * (1 + 1e-12);  // rounds back to the float
    replace_param(p, w, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v);
    cr_assert_eq(ckpt_load(p, &r), NSA_OK);
    cr_expect(!memcmp(r.data, m.data, (size_t)m.n_elems * sizeof(float)), "float64 weights did not round back");
    model_free(&r);
    v[5] = 1e300;  // no float32 holds it
    replace_param(p, w, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v);
    capture_stderr();
    int rc = ckpt_load(p, &r);
    expect_error(rc, captured(), "f64.h5", "layers.0.mlp.w1.weight holds values beyond float32");
    free(v);
    model_free(&m);
}

Test(h5read, config_attributes_from_other_writers, .init = make_dir, .fini = remove_dir) {
    Model m, r;
    tiny_model(&m);
    char p[300];
    path_of(p, sizeof p, "cfg.h5");
    cr_assert_eq(ckpt_save(p, &m, NULL, NULL, NULL), NSA_OK);
    // A real key written as an integer, a string key as a variable-length string.
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    H5Adelete(g, "rope_theta");
    attr_i64(g, "rope_theta", 10000);
    H5Adelete(g, "attn");
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    const char *nsa = "nsa";
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, "attn", t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &nsa);
    H5Aclose(a), H5Sclose(s), H5Tclose(t);
    H5Gclose(g), H5Fclose(f);
    cr_assert_eq(ckpt_load(p, &r), NSA_OK);
    cr_expect_eq(r.cfg.rope_theta, 10000.0);
    model_free(&r);
    // An integer key beyond int64 (uint64 2^63) and a real that is not finite.
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gopen2(f, "config", H5P_DEFAULT);
    H5Adelete(g, "window");
    s = H5Screate(H5S_SCALAR);
    a = H5Acreate2(g, "window", H5T_STD_U64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    uint64_t big = (uint64_t)1 << 63;
    H5Awrite(a, H5T_NATIVE_UINT64, &big);
    H5Aclose(a), H5Sclose(s);
    H5Gclose(g), H5Fclose(f);
    capture_stderr();
    int rc = ckpt_load(p, &r);
    expect_error(rc, captured(), "cfg.h5: /config attribute window", "out of range");
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gopen2(f, "config", H5P_DEFAULT);
    H5Adelete(g, "window");
    attr_i64(g, "window", 32);
    H5Adelete(g, "norm_eps");
    h5_attr_f64(g, "norm_eps", NAN);
    H5Gclose(g), H5Fclose(f);
    capture_stderr();
    rc = ckpt_load(p, &r);
    expect_error(rc, captured(), "cfg.h5: /config attribute norm_eps", "not finite");
    model_free(&m);
}

Test(h5read, a_file_too_small_for_its_config_allocates_nothing, .init = make_dir, .fini = remove_dir) {
    Model m, r;
    tiny_model(&m);
    char p[300];
    path_of(p, sizeof p, "small.h5");
    cr_assert_eq(ckpt_save(p, &m, NULL, NULL, NULL), NSA_OK);
    // A config of ~2^31 parameters (within every bound) over the tiny weights: the 8 GiB
    // the model would take are refused before model_create, not zero-filled first.
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    const char *keys[] = {"d_model", "ffn_dim", "gate_hidden"};
    int64_t vals[] = {4096, 32768, 64};
    for (int i = 0; i < 3; i++) {
        H5Adelete(g, keys[i]);
        attr_i64(g, keys[i], vals[i]);
    }
    H5Gclose(g), H5Fclose(f);
    capture_stderr();
    int rc = ckpt_load(p, &r);
    expect_error(rc, captured(), "small.h5: /params stores", "config and weights disagree");
    model_free(&m);
}

// ---------------------------------------------------------------------------- chunks

Test(h5read, chunk_shapes) {
    hsize_t c[3];
    // Up to 4 MiB: one chunk.
    h5_chunk_dims(c, 2, (hsize_t[]){1024, 1024}, 4);
    cr_expect(c[0] == 1024 && c[1] == 1024);
    // Larger: blocks of whole rows of at most 1 MiB.
    h5_chunk_dims(c, 2, (hsize_t[]){65536, 16384}, 4);
    cr_expect(c[0] == 16 && c[1] == 16384, "%llu %llu", (unsigned long long)c[0], (unsigned long long)c[1]);
    h5_chunk_dims(c, 1, (hsize_t[]){10000000}, 2);
    cr_expect(c[0] == 524288, "%llu", (unsigned long long)c[0]);
    // A row wider than 1 MiB is split along its own leading dimension.
    h5_chunk_dims(c, 3, (hsize_t[]){2, 1024, 65536}, 4);
    cr_expect(c[0] == 1 && c[1] == 4 && c[2] == 65536, "%llu %llu %llu", (unsigned long long)c[0],
              (unsigned long long)c[1], (unsigned long long)c[2]);
    // Zero-length dimensions still get a chunk HDF5 accepts.
    h5_chunk_dims(c, 2, (hsize_t[]){0, 7}, 4);
    cr_expect(c[0] == 1 && c[1] == 7);
}
