// test_fixtures.c: the whole model against the PyTorch fixtures (tests/fixtures, made by
// scripts/reference.py in float64): logits, loss, every gradient and every NSA selection.
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <string.h>

#include "eval/trace.h"
#include "kernels/common.h"
#include "model/model.h"
#include "data/checkpoint.h"
#include "data/h5.h"

static void *read_all(hid_t f, const char *name, hid_t mtype, size_t elem, int64_t *n) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert(ds >= 0, "fixture lacks %s", name);
    hid_t s = H5Dget_space(ds);
    *n = H5Sget_simple_extent_npoints(s);
    void *buf = malloc((size_t)*n * elem + 8);
    cr_assert(H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(s);
    H5Dclose(ds);
    return buf;
}

// max|a - ref| / max|ref|
static double rel_err(const float *a, const float *ref, int64_t n, double *maxref) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - ref[i]));
        m = fmax(m, fabs((double)ref[i]));
    }
    if (maxref) *maxref = m;
    return m > 0 ? d / m : d;
}

// DESIGN.md's bound for float32 vs the float64 reference: max|Δ| / max|ref| ≤ 1e-4.
#define FIXTURE_TOL 1e-4

static void check_fixture(const char *path) {
    Model m;
    cr_assert_eq(ckpt_load(path, &m), NSA_OK, "%s does not load as a checkpoint", path);
    hid_t f = h5_open_read(path);
    int64_t n_tok, n_tgt, n_logits, n_loss;
    int32_t *tok = read_all(f, "tokens", H5T_NATIVE_INT32, 4, &n_tok);
    int32_t *tgt = read_all(f, "targets", H5T_NATIVE_INT32, 4, &n_tgt);
    float *logits = read_all(f, "logits", H5T_NATIVE_FLOAT, 4, &n_logits);
    double *loss = read_all(f, "loss", H5T_NATIVE_DOUBLE, 8, &n_loss);
    hid_t ds = H5Dopen2(f, "tokens", H5P_DEFAULT);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    int B = (int)dims[0], T = (int)dims[1];

    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    ForwardOpts fo = {0};
    fo.keep_selection = 1;
    Forward out;
    trace_compute(&m, &g, tok, tgt, B, T, &fo, &out);

    double e = rel_err(out.logits->data, logits, n_logits, NULL);
    cr_expect(e <= FIXTURE_TOL, "%s: logits rel err %.3g", path, e);
    double le = fabs(out.loss->data[0] - loss[0]) / fabs(loss[0]);
    cr_expect(le <= FIXTURE_TOL, "%s: loss %.8f vs ref %.8f", path, out.loss->data[0], loss[0]);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.n_params; i++) {
        char name[160];
        snprintf(name, sizeof name, "grads/%s", m.params[i].name);
        int64_t n;
        float *ref = read_all(f, name, H5T_NATIVE_FLOAT, 4, &n);
        cr_assert_eq(n, m.params[i].t.size, "%s: %s size", path, name);
        double ge = rel_err(m.params[i].t.grad, ref, n, NULL);
        if (ge > worst) worst = ge, worst_name = m.params[i].name;
        cr_expect(ge <= FIXTURE_TOL, "%s: grad %s rel err %.3g", path, m.params[i].name, ge);
        free(ref);
    }
    cr_log_info("%s: logits %.2g loss %.2g worst grad %.2g (%s)", path, e, le, worst, worst_name);
    for (int l = 0; l < m.cfg.n_layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "selection/layers.%d", l);
        if (!config_layer_is_nsa(&m.cfg, l)) {
            cr_expect(!h5_exists(f, name), "%s: dense layer %d has a selection", path, l);
            continue;
        }
        int64_t n;
        int32_t *ref = read_all(f, name, H5T_NATIVE_INT32, 4, &n);
        cr_assert_eq(n, (int64_t)B * T * m.cfg.n_kv_heads * m.cfg.slc_topn);
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < n; i++)
            if (ref[i] != out.sel[l][i]) bad++, first = first < 0 ? i : first;
        cr_expect_eq(bad, 0, "%s layer %d: %lld selection ids differ (first at flat index %lld: %d vs ref %d)", path,
                     l, (long long)bad, (long long)first, first >= 0 ? out.sel[l][first] : 0,
                     first >= 0 ? ref[first] : 0);
        free(ref);
    }
    H5Fclose(f);
    free(tok), free(tgt), free(logits), free(loss);
    graph_free(&g);
    arena_free(&arena);
    model_free(&m);
}

Test(fixtures, dense) { check_fixture("tests/fixtures/dense.h5"); }
Test(fixtures, nsa_default) { check_fixture("tests/fixtures/nsa_default.h5"); }
Test(fixtures, nsa_linear_separate_softmax) { check_fixture("tests/fixtures/nsa_linear_separate_softmax.h5"); }
Test(fixtures, nsa_mean_equal_blocks) { check_fixture("tests/fixtures/nsa_mean_equal_blocks.h5"); }
Test(fixtures, nsa_mixed_ragged) { check_fixture("tests/fixtures/nsa_mixed_ragged.h5"); }
Test(fixtures, nsa_short) { check_fixture("tests/fixtures/nsa_short.h5"); }
Test(fixtures, nsa_gqa1) { check_fixture("tests/fixtures/nsa_gqa1.h5"); }

// Every committed fixture is exercised above: a new one without a test fails here.
Test(fixtures, all_listed) {
    const char *known = "dense.h5 nsa_default.h5 nsa_linear_separate_softmax.h5 nsa_mean_equal_blocks.h5 "
                        "nsa_mixed_ragged.h5 nsa_short.h5 nsa_gqa1.h5 "
                        "q4k_vectors.h5";  // ggml's Q4_K bytes: tests/test_q4k.c
    DIR *d = opendir("tests/fixtures");
    cr_assert(d);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".h5")) {
            cr_expect(strstr(known, e->d_name) != NULL, "fixture %s has no test", e->d_name);
            count++;
        }
    closedir(d);
    cr_expect_eq(count, 8);
}
