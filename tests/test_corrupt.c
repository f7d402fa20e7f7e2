// test_corrupt.c: every file nsa writes detects its own corruption (issue 13). A small
// checkpoint (with optimiser state), quantized checkpoint and dataset are written, then one
// bit is flipped at offsets spread over the whole file, metadata and data alike; each
// damaged copy must fail to load (one error line) or load exactly the original content (a
// bit in unused space), never load something else, never crash, and never leave an HDF5
// object open. Before the checksums (Fletcher-32 on the data, HDF5 1.10's checksummed
// metadata, strings inside the object headers) 64 of 13281 flips of a small checkpoint
// loaded silently changed content and 6 crashed libhdf5.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/checkpoint.h"
#include "data/dataset.h"
#include "data/prepare.h"
#include "data/q4k_file.h"
#include "kernels/common.h"
#include "model/quant.h"
#include "tests/testutil.h"

static char dir[256];

static void make_dir(void) {
    tu_mkdtemp(dir, sizeof dir, "nsa_corrupt_");
    // The loaders' error lines for thousands of damaged files say nothing a reader needs.
    cr_redirect_stderr();
}
static void remove_dir(void) { tu_rm_rf(dir); }

static void small_model(Model *m, int q4k) {
    Config c;
    config_defaults(&c);
    const char *sets[] = {"vocab_size=32", "d_model=16", "n_layers=2", "attn=nsa,dense", "n_heads=2",
                          "n_kv_heads=1", "head_dim=8", "ffn_dim=32", "seq_len=32", "cmp_block=8",
                          "cmp_stride=4", "slc_block=8", "slc_topn=2", "window=8", "gate_hidden=8"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) cr_assert_eq(config_set(&c, sets[i]), NSA_OK);
    // Q4_K quantizes matrices of >= 256 columns only.
    if (q4k) cr_assert_eq(config_set(&c, "d_model=256"), NSA_OK);
    cr_assert_eq(config_validate(&c), NSA_OK);
    model_create(m, &c);
    model_init_params(m, 3);
}

static unsigned char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    rewind(f);
    unsigned char *buf = malloc((size_t)*n);
    cr_assert(buf && fread(buf, 1, (size_t)*n, f) == (size_t)*n);
    fclose(f);
    return buf;
}

// Loads `path` as kind k and compares with the original's content; 1 same, 0 refused.
typedef int (*LoadSame)(const char *path, const void *orig);

// Flips one bit (varying which) at about `tries` offsets spread over the file.
static void sweep(const char *orig_path, LoadSame load_same, const void *orig, int tries) {
    long n;
    unsigned char *buf = slurp(orig_path, &n);
    char damaged[300];
    snprintf(damaged, sizeof damaged, "%s/damaged.h5", dir);
    long stride = n / tries > 1 ? n / tries : 1;
    int refused = 0, same = 0;
    for (long off = 0; off < n; off += stride) {
        unsigned char bit = (unsigned char)(1u << (off * 5 % 8));
        buf[off] ^= bit;
        FILE *f = fopen(damaged, "wb");
        cr_assert(f && fwrite(buf, 1, (size_t)n, f) == (size_t)n);
        fclose(f);
        buf[off] ^= bit;
        int r = load_same(damaged, orig);
        cr_assert(r >= 0, "%s: a bit flipped at byte %ld of %ld loaded different content", orig_path, off, n);
        cr_assert_eq(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0, "byte %ld: an HDF5 object was left open", off);
        r ? same++ : refused++;
    }
    // Most of a small file is metadata and data; a flip lands in unused space rarely.
    cr_expect_gt(refused, 4 * same, "%s: %d flips refused, %d harmless", orig_path, refused, same);
    free(buf);
}

typedef struct {
    const Model *m;
    const float *am, *av;
    const TrainState *st;
} CkptOrig;

static int same_model(const Model *a, const Model *b) {
    return a->n_elems == b->n_elems && !memcmp(a->data, b->data, (size_t)a->n_elems * sizeof(float)) &&
           !memcmp(&a->cfg, &b->cfg, sizeof a->cfg) && a->q4k_bytes == b->q4k_bytes &&
           (!a->q4k_bytes || !memcmp(a->q4k_data, b->q4k_data, (size_t)a->q4k_bytes));
}

static int ckpt_same(const char *path, const void *orig) {
    const CkptOrig *o = orig;
    Model m;
    if (ckpt_load(path, &m) != NSA_OK) return 0;
    float *am = malloc((size_t)m.n_elems * sizeof(float)), *av = malloc((size_t)m.n_elems * sizeof(float));
    TrainState st;
    int r = ckpt_load_train(path, &m, am, av, &st);
    int same = r == NSA_OK && same_model(&m, o->m) && !memcmp(am, o->am, (size_t)m.n_elems * sizeof(float)) &&
               !memcmp(av, o->av, (size_t)m.n_elems * sizeof(float)) && !memcmp(&st, o->st, sizeof st);
    free(am);
    free(av);
    model_free(&m);
    return r != NSA_OK ? 0 : same ? 1 : -1;
}

Test(corrupt, checkpoint_bit_flips_are_detected, .init = make_dir, .fini = remove_dir, .timeout = 300) {
    Model m;
    small_model(&m, 0);
    float *am = malloc((size_t)m.n_elems * sizeof(float)), *av = malloc((size_t)m.n_elems * sizeof(float));
    for (int64_t i = 0; i < m.n_elems; i++) am[i] = 1e-3f * (float)(i % 7 - 3), av[i] = 1e-6f * (float)(i % 5);
    TrainState st = {12, 24, 768, {1, 2, 3, 4}};
    char path[300];
    snprintf(path, sizeof path, "%s/ckpt.h5", dir);
    cr_assert_eq(ckpt_save(path, &m, am, av, &st), NSA_OK);
    CkptOrig o = {&m, am, av, &st};
    cr_assert_eq(ckpt_same(path, &o), 1, "the undamaged checkpoint does not load as written");
    sweep(path, ckpt_same, &o, 1500);
    free(am);
    free(av);
    model_free(&m);
}

static int q4k_same(const char *path, const void *orig) {
    Model m;
    if (q4k_file_is(path) != 1 || q4k_file_load(path, &m) != NSA_OK) return 0;
    int same = same_model(&m, orig);
    model_free(&m);
    return same ? 1 : -1;
}

Test(corrupt, quantized_checkpoint_bit_flips_are_detected, .init = make_dir, .fini = remove_dir, .timeout = 300) {
    Model m;
    small_model(&m, 1);
    model_quantize(&m, NULL, NULL);
    char path[300];
    snprintf(path, sizeof path, "%s/q.h5", dir);
    cr_assert_eq(q4k_file_save(path, &m), NSA_OK);
    cr_assert_eq(q4k_same(path, &m), 1, "the undamaged quantized checkpoint does not load as written");
    sweep(path, q4k_same, &m, 1000);
    model_free(&m);
}

static int dataset_same(const char *path, const void *orig) {
    const Dataset *o = orig;
    Dataset d;
    if (dataset_load(path, 0, &d) != NSA_OK) return 0;
    int same = d.n_train == o->n_train && d.n_val == o->n_val && d.vocab_size == o->vocab_size &&
               !strcmp(d.tokenizer, o->tokenizer) && !memcmp(d.train, o->train, (size_t)d.n_train * 2) &&
               !memcmp(d.val, o->val, (size_t)d.n_val * 2);
    dataset_free(&d);
    return same ? 1 : -1;
}

Test(corrupt, dataset_bit_flips_are_detected, .init = make_dir, .fini = remove_dir, .timeout = 300) {
    char txt[300], path[300];
    snprintf(txt, sizeof txt, "%s/t.txt", dir);
    snprintf(path, sizeof path, "%s/d.h5", dir);
    FILE *f = fopen(txt, "w");
    for (int i = 0; i < 5000; i++) fputc("And God said, Let there be light: and there was light.\n"[i % 56], f);
    fclose(f);
    int64_t nt, nv;
    cr_assert_eq(dataset_prepare(txt, path, 0.1, &nt, &nv), NSA_OK);
    Dataset o;
    cr_assert_eq(dataset_load(path, 0, &o), NSA_OK);
    sweep(path, dataset_same, &o, 1000);
    dataset_free(&o);
}
