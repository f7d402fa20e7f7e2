// test_model.c: the whole model against the PyTorch fixtures (tests/fixtures, made by
// scripts/reference.py in float64), checkpoint round trips, thread-count determinism,
// allocation-free steady state, directional finite differences and init properties.
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "autograd/ops.h"
#include "kernels/common.h"
#include "eval/trace.h"
#include "kernels/cpu.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/h5util.h"

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

// ---------------------------------------------------------------------------- helpers

static void tiny_config(Config *c, const char *attn) {
    config_defaults(c);
    cr_assert_eq(config_load(c, "tiny"), NSA_OK);
    snprintf(c->attn, sizeof c->attn, "%s", attn);
    cr_assert_eq(config_validate(c), NSA_OK);
}

static void random_tokens(int32_t *tok, int32_t *tgt, int64_t n, int64_t vocab, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        tok[i] = (int32_t)rng_below(&r, (uint64_t)vocab);
        tgt[i] = (int32_t)rng_below(&r, (uint64_t)vocab);
    }
}

// ---------------------------------------------------------------------------- checkpoint files

Test(checkpoint, round_trip_bit_identical) {
    Config c;
    tiny_config(&c, "dense,nsa");
    strcpy(c.kv, "separate");
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 7);
    float *am = malloc((size_t)m.n_elems * 4), *av = malloc((size_t)m.n_elems * 4);
    for (int64_t i = 0; i < m.n_elems; i++) am[i] = (float)i * 1e-3f, av[i] = (float)i * 1e-6f;
    TrainState st = {12, 345, 6789, {1, 2, 3, 0xffffffffffffffffULL}};
    const char *path = "/tmp/nsa_test_ckpt_roundtrip.h5";
    cr_assert_eq(ckpt_save(path, &m, am, av, &st), NSA_OK);
    Model r;
    cr_assert_eq(ckpt_load(path, &r), NSA_OK);
    cr_assert_eq(r.n_elems, m.n_elems);
    cr_assert_eq(memcmp(r.data, m.data, (size_t)m.n_elems * 4), 0, "params differ after a round trip");
    cr_assert_str_eq(r.cfg.attn, "dense,nsa");
    cr_assert_str_eq(r.cfg.kv, "separate");
    cr_assert_eq(r.cfg.gate_hidden, c.gate_hidden);
    float *bm = malloc((size_t)m.n_elems * 4), *bv = malloc((size_t)m.n_elems * 4);
    TrainState st2;
    cr_assert_eq(ckpt_load_train(path, &r, bm, bv, &st2), NSA_OK);
    cr_assert_eq(memcmp(am, bm, (size_t)m.n_elems * 4), 0);
    cr_assert_eq(memcmp(av, bv, (size_t)m.n_elems * 4), 0);
    cr_assert_eq(memcmp(&st, &st2, sizeof st), 0);
    // Weights-only files are valid for trace/eval: no /optim means "nothing to resume".
    cr_assert_eq(ckpt_save(path, &m, NULL, NULL, NULL), NSA_OK);
    cr_assert_eq(ckpt_load_train(path, &r, bm, bv, &st2), 1);
    free(am), free(av), free(bm), free(bv);
    model_free(&m);
    model_free(&r);
    remove(path);
}

// ---------------------------------------------------------------------------- determinism

static float run_grads(const Config *c, int threads, int checkpoint, float *grads) {
    cpu_set_threads(threads);
    Model m;
    model_create(&m, c);
    model_init_params(&m, 11);
    int B = 2, T = (int)c->seq_len;
    int32_t *tok = malloc((size_t)B * T * 4), *tgt = malloc((size_t)B * T * 4);
    random_tokens(tok, tgt, (int64_t)B * T, c->vocab_size, 5);
    Arena a, sa;
    arena_init(&a, 0);
    arena_init(&sa, 0);
    Graph g, sg;
    graph_init(&g, &a);
    graph_init(&sg, &sa);
    ForwardOpts fo = {checkpoint, 0, 0, &sg};
    Forward f;
    trace_compute(&m, &g, tok, tgt, B, T, &fo, &f);
    float loss = f.loss->data[0];
    memcpy(grads, m.grad, (size_t)m.n_elems * 4);
    graph_free(&g), graph_free(&sg), arena_free(&a), arena_free(&sa);
    free(tok), free(tgt);
    model_free(&m);
    cpu_set_threads(2);
    return loss;
}

static void check_threads(const char *attn) {
    Config c;
    tiny_config(&c, attn);
    Model m;
    model_create(&m, &c);
    int64_t n = m.n_elems;
    model_free(&m);
    float *g1 = malloc((size_t)n * 4), *g2 = malloc((size_t)n * 4);
    float l1 = run_grads(&c, 1, 0, g1), l2 = run_grads(&c, 2, 0, g2);
    cr_assert_eq(memcmp(&l1, &l2, 4), 0, "%s: loss %.9g (1 thread) vs %.9g (2 threads)", attn, l1, l2);
    Model mm;
    model_create(&mm, &c);
    for (int p = 0; p < mm.n_params; p++) {
        int64_t off = mm.params[p].t.data - mm.data;
        cr_expect_eq(memcmp(g1 + off, g2 + off, (size_t)mm.params[p].t.size * 4), 0,
                     "%s: gradient of %s differs between 1 and 2 threads", attn, mm.params[p].name);
    }
    model_free(&mm);
    free(g1), free(g2);
}

Test(determinism, dense_threads_1_vs_2) { check_threads("dense"); }
Test(determinism, nsa_threads_1_vs_2) { check_threads("nsa"); }

Test(determinism, checkpoint_layer_equals_none) {
    Config c;
    tiny_config(&c, "nsa,dense");
    Model m;
    model_create(&m, &c);
    int64_t n = m.n_elems;
    model_free(&m);
    float *g1 = malloc((size_t)n * 4), *g2 = malloc((size_t)n * 4);
    float l1 = run_grads(&c, 2, 0, g1), l2 = run_grads(&c, 2, 1, g2);
    cr_assert_eq(memcmp(&l1, &l2, 4), 0);
    cr_assert_eq(memcmp(g1, g2, (size_t)n * 4), 0, "checkpoint=layer gradients differ from checkpoint=none");
    free(g1), free(g2);
}

// ---------------------------------------------------------------------------- steady state

Test(memory, no_allocation_after_first_step) {
    Config c;
    tiny_config(&c, "nsa");
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 3);
    model_alloc_grads(&m);
    int B = 2, T = 96;
    int32_t *tok = malloc((size_t)B * T * 4), *tgt = malloc((size_t)B * T * 4);
    Arena a, sa;
    arena_init(&a, 0);
    arena_init(&sa, 0);
    Graph g, sg;
    graph_init(&g, &a);
    graph_init(&sg, &sa);
    long mallocs[4], reallocs[4];
    for (int step = 0; step < 4; step++) {
        random_tokens(tok, tgt, (int64_t)B * T, c.vocab_size, (uint64_t)step);
        graph_reset(&g);
        ForwardOpts fo = {step % 2, 0, 0, &sg};  // alternate plain and recompute steps
        Forward f;
        model_zero_grads(&m);
        model_forward(&m, &g, tok, tgt, B, T, &fo, &f);
        graph_backward(&g, f.loss);
        mallocs[step] = a.n_mallocs + sa.n_mallocs;
        reallocs[step] = g.n_node_reallocs + sg.n_node_reallocs;
    }
    // Steps 0 and 1 teach the arenas their sizes (plain, then recompute); 2 and 3 reuse them.
    cr_assert_eq(mallocs[3], mallocs[1], "arena mallocs grew after warm-up: %ld -> %ld", mallocs[1], mallocs[3]);
    cr_assert_eq(mallocs[2], mallocs[1]);
    cr_assert_eq(reallocs[3], reallocs[1]);
    graph_free(&g), graph_free(&sg), arena_free(&a), arena_free(&sa);
    free(tok), free(tgt);
    model_free(&m);
}

// ---------------------------------------------------------------------------- finite differences

// The whole model along a direction u: (L(θ+εu) − L(θ−εu)) / 2ε vs <∇L, u>, in float32.
// Directions: the normalised gradient (largest signal) and two random unit vectors
// restricted to one layer's NSA parameters. Selection is piecewise constant and ε is
// made small enough not to flip it (the selections at both probes are compared).
static void directional_fd(const char *attn, const char *cmp_fn, const char *gate_act) {
    Config c;
    tiny_config(&c, attn);
    strcpy(c.cmp_fn, cmp_fn);
    strcpy(c.gate_act, gate_act);
    c.seq_len = 64;
    cr_assert_eq(config_validate(&c), NSA_OK);
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 21);
    // Larger weights than init so every branch matters to the loss.
    for (int64_t i = 0; i < m.n_elems; i++) m.data[i] *= 3.0f;
    int B = 1, T = 64;
    int32_t tok[64], tgt[64];
    random_tokens(tok, tgt, T, c.vocab_size, 9);
    Arena a;
    arena_init(&a, 0);
    Graph g;
    graph_init(&g, &a);
    ForwardOpts fo = {0};
    fo.keep_selection = 1;
    Forward f;
    trace_compute(&m, &g, tok, tgt, B, T, &fo, &f);
    size_t sel_bytes = (size_t)B * T * c.n_kv_heads * c.slc_topn * sizeof(int32_t);
    int32_t *base_sel[CFG_MAX_LAYERS] = {0};
    for (int l = 0; l < c.n_layers; l++)
        if (f.sel[l]) base_sel[l] = memcpy(malloc(sel_bytes), f.sel[l], sel_bytes);
    float *grad = malloc((size_t)m.n_elems * 4), *theta = malloc((size_t)m.n_elems * 4);
    double *u = malloc((size_t)m.n_elems * 8);
    memcpy(grad, m.grad, (size_t)m.n_elems * 4);
    memcpy(theta, m.data, (size_t)m.n_elems * 4);
    Rng r;
    rng_seed(&r, 77);
    for (int dir = 0; dir < 3; dir++) {
        double norm = 0;
        for (int64_t i = 0; i < m.n_elems; i++) {
            u[i] = dir == 0 ? grad[i] : 0.0;
            norm += u[i] * u[i];
        }
        if (dir > 0) {  // random direction over the NSA-specific parameters of layer 0
            norm = 0;
            for (int p = 0; p < m.n_params; p++) {
                const char *nm = m.params[p].name;
                if (strncmp(nm, "layers.0.attn.", 14) || (!strstr(nm, "cmp") && !strstr(nm, "gate") && !strstr(nm, "wq")))
                    continue;
                Tensor *t = &m.params[p].t;
                for (int64_t j = 0; j < t->size; j++) {
                    double v = rng_normal(&r);
                    u[(t->data - m.data) + j] = v;
                    norm += v * v;
                }
            }
        }
        cr_assert(norm > 0);
        norm = sqrt(norm);
        double an = 0;
        for (int64_t i = 0; i < m.n_elems; i++) an += grad[i] * (u[i] / norm);
        // Selection is piecewise constant: a step that flips a block makes the loss jump.
        // Halve the step until both probes select exactly what the base point selects.
        // Along the gradient (|∇L| ~ 30 here) the loss is strongly curved: ε = 1e-3 gave a
        // 14% third-order error on the mlp case, 1e-4 gives 0.3%; float32 noise at 1e-4 is
        // ~1e-6 / 2e-4 = 5e-3 absolute, small against |<∇L,u>| ~ 30.
        double eps = dir == 0 ? 1e-4 : 1e-2, lp = 0, lm = 0;
        for (;;) {
            int flipped = 0;
            for (int s = 0; s < 2; s++) {
                for (int64_t i = 0; i < m.n_elems; i++) m.data[i] = (float)(theta[i] + (s ? -eps : eps) * u[i] / norm);
                graph_reset(&g);
                g.record = 0;
                Forward f2;
                model_forward(&m, &g, tok, tgt, B, T, &fo, &f2);
                if (s) lm = f2.loss->data[0];
                else lp = f2.loss->data[0];
                for (int l = 0; l < c.n_layers; l++)
                    if (base_sel[l] && memcmp(base_sel[l], f2.sel[l], sel_bytes)) flipped = 1;
            }
            if (!flipped || eps < 1e-5) break;
            eps /= 2;
        }
        g.record = 1;
        memcpy(m.data, theta, (size_t)m.n_elems * 4);
        double fd = (lp - lm) / (2 * eps);
        // Measured: ≤ 0.3% of |<∇L,u>| along the gradient, ≤ 1.2% along the random
        // directions (float32 noise ~5e-5 absolute at ε = 1e-2 on values ~1e-2..0.3).
        double err = fabs(fd - an);
        cr_log_info("%s/%s/%s dir %d: eps %.2g fd %.6g analytic %.6g", attn, cmp_fn, gate_act, dir, eps, fd, an);
        cr_expect(err <= 2e-2 * fabs(an) + 2e-4, "%s %s %s direction %d: fd %.6g vs analytic %.6g", attn, cmp_fn,
                  gate_act, dir, fd, an);
    }
    free(grad), free(theta), free(u);
    for (int l = 0; l < c.n_layers; l++) free(base_sel[l]);
    graph_free(&g);
    arena_free(&a);
    model_free(&m);
}

Test(gradcheck, nsa_mlp_sigmoid) { directional_fd("nsa", "mlp", "sigmoid"); }
Test(gradcheck, nsa_linear_softmax) { directional_fd("nsa", "linear", "softmax"); }
Test(gradcheck, nsa_mean_sigmoid) { directional_fd("nsa", "mean", "sigmoid"); }
Test(gradcheck, dense) { directional_fd("dense", "mlp", "sigmoid"); }

// ---------------------------------------------------------------------------- init

// DESIGN.md: fc2 is xavier-uniform gain 0.1 so the three gates differ from the start.
Test(init, gates_differ) {
    Config c;
    tiny_config(&c, "nsa");
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 1);
    int T = 64, H = (int)c.n_heads;
    int32_t tok[64], tgt[64];
    random_tokens(tok, tgt, T, c.vocab_size, 2);
    Arena a;
    arena_init(&a, 0);
    Graph g;
    graph_init(&g, &a);
    g.record = 0;
    for (int l = 0; l < c.n_layers; l++) {
        Layer *L = &m.layers[l];
        Tensor *x = op_embedding(&g, m.tok_emb, tok, T);
        Tensor *xn = op_rmsnorm(&g, x, L->attn_norm, 1e-5f);
        Tensor *z = op_linear(&g, op_silu(&g, op_linear(&g, xn, L->fc1_w, L->fc1_b)), L->fc2_w, L->fc2_b);
        double spread = 0;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                double gv[3], mean = 0, var = 0;
                for (int b = 0; b < 3; b++) gv[b] = 1 / (1 + exp(-z->data[t * 3 * H + b * H + h])), mean += gv[b] / 3;
                for (int b = 0; b < 3; b++) var += (gv[b] - mean) * (gv[b] - mean) / 3;
                spread += sqrt(var) / (T * H);
            }
        cr_log_info("layer %d gate spread %.4g", l, spread);
        cr_expect(spread > 1e-3, "layer %d: gate std across branches %.3g <= 1e-3", l, spread);
    }
    graph_free(&g);
    arena_free(&a);
    model_free(&m);
}

Test(init, deterministic_from_seed) {
    Config c;
    tiny_config(&c, "nsa");
    Model a, b;
    model_create(&a, &c);
    model_create(&b, &c);
    model_init_params(&a, 99);
    model_init_params(&b, 99);
    cr_assert_eq(memcmp(a.data, b.data, (size_t)a.n_elems * 4), 0);
    model_init_params(&b, 100);
    cr_assert_neq(memcmp(a.data, b.data, (size_t)a.n_elems * 4), 0);
    Param *fc2 = model_param(&a, "layers.0.attn.gate.fc2.weight");
    cr_assert(fc2);
    double s = 0;
    for (int64_t i = 0; i < fc2->t.size; i++) s += fabs(fc2->t.data[i]);
    cr_assert(s > 0, "gate fc2 must not be all zeros");
    model_free(&a);
    model_free(&b);
}
