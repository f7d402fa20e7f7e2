// test_model.c: the model as a whole: checkpoint round trips, thread-count determinism,
// allocation-free steady state, directional finite differences and init properties.
// (The PyTorch fixture comparisons are test_fixtures.c.)
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

#include "kernels/common.h"
#include "eval/trace.h"
#include "kernels/cpu.h"
#include "kernels/gate.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "data/checkpoint.h"
#include "data/h5.h"

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

Test(model, checkpoint_round_trip_bit_identical) {
    Config c;
    tiny_config(&c, "dense,nsa");
    c.kv = KV_SEPARATE;
    c.gate_act = GATE_SOFTMAX;
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
    cr_assert_eq(r.cfg.kv, KV_SEPARATE);
    cr_assert_eq(r.cfg.gate_act, GATE_SOFTMAX);
    // The file keeps DESIGN.md's format: enum keys are the strings users write.
    hid_t f = h5_open_read(path);
    hid_t cg = H5Gopen2(f, "config", H5P_DEFAULT);
    char s[32];
    cr_assert_eq(h5_read_attr_str(cg, "kv", s, sizeof s), 0);
    cr_assert_str_eq(s, "separate");
    cr_assert_eq(h5_read_attr_str(cg, "gate_act", s, sizeof s), 0);
    cr_assert_str_eq(s, "softmax");
    cr_assert_eq(h5_read_attr_str(cg, "cmp_fn", s, sizeof s), 0);
    cr_assert_str_eq(s, "mlp");
    cr_assert_eq(h5_read_attr_str(cg, "checkpoint", s, sizeof s), 0);
    cr_assert_str_eq(s, "none");
    H5Gclose(cg);
    H5Fclose(f);
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

// A /config enum attribute that is none of its key's names: one error line naming the file.
Test(model, checkpoint_bad_enum_is_one_line_error) {
    Config c;
    tiny_config(&c, "nsa");
    Model m;
    model_create(&m, &c);
    const char *path = "/tmp/nsa_test_ckpt_badenum.h5";
    cr_assert_eq(ckpt_save(path, &m, NULL, NULL, NULL), NSA_OK);
    model_free(&m);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t cg = H5Gopen2(f, "config", H5P_DEFAULT);
    cr_assert(H5Adelete(cg, "gate_act") >= 0);
    cr_assert_eq(h5_attr_str(cg, "gate_act", "tanh"), NSA_OK);
    H5Gclose(cg);
    H5Fclose(f);
    fflush(stderr);
    FILE *cap = tmpfile();
    int saved = dup(2);
    dup2(fileno(cap), 2);
    Model r;
    int rc = ckpt_load(path, &r);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char err[1024] = "";
    rewind(cap);
    size_t n = fread(err, 1, sizeof err - 1, cap);
    err[n] = 0;
    fclose(cap);
    cr_expect_eq(rc, NSA_ERR);
    cr_expect_str_eq(err, "nsa: error: /tmp/nsa_test_ckpt_badenum.h5: /config: config key gate_act: 'tanh' is not "
                          "one of sigmoid, softmax\n");
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
    ForwardOpts fo = {.checkpoint = checkpoint, .scratch = &sg};
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

Test(model, dense_threads_1_vs_2) { check_threads("dense"); }
Test(model, nsa_threads_1_vs_2) { check_threads("nsa"); }

Test(model, checkpoint_layer_equals_none) {
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

// Arenas with a 64-byte buffer (no address-space reservation) learn their size through
// overflow chunks and fold them at the next reset, so the malloc count is what this test
// watches: it must grow while the arenas learn (steps 0 and 1) and then stay flat. Were
// folding broken, every step would malloc its chunks again and steps 2, 3 would grow it.
Test(model, no_allocation_after_first_step) {
    Config c;
    tiny_config(&c, "nsa");
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 3);
    model_alloc_grads(&m);
    int B = 2, T = 96;
    int32_t *tok = malloc((size_t)B * T * 4), *tgt = malloc((size_t)B * T * 4);
    Arena a, sa;
    arena_init(&a, 64);
    arena_init(&sa, 64);
    Graph g, sg;
    graph_init(&g, &a);
    graph_init(&sg, &sa);
    long start = a.n_mallocs + sa.n_mallocs, mallocs[4], reallocs[4];
    for (int step = 0; step < 4; step++) {
        random_tokens(tok, tgt, (int64_t)B * T, c.vocab_size, (uint64_t)step);
        graph_reset(&g);
        ForwardOpts fo = {.checkpoint = step % 2, .scratch = &sg};  // alternate plain and recompute steps
        Forward f;
        model_zero_grads(&m);
        model_forward(&m, &g, tok, tgt, B, T, &fo, &f);
        graph_backward(&g, f.loss);
        mallocs[step] = a.n_mallocs + sa.n_mallocs;
        reallocs[step] = g.n_node_reallocs + sg.n_node_reallocs;
    }
    // Steps 0 and 1 teach the arenas their sizes (plain, then recompute); 2 and 3 reuse them.
    cr_assert_gt(mallocs[0], start + 10, "the first step did not overflow the small arena (%ld mallocs)",
                 mallocs[0] - start);
    cr_assert_gt(mallocs[1], mallocs[0], "the first recompute step did not teach the scratch arena");
    cr_assert_eq(mallocs[2], mallocs[1], "arena mallocs grew after warm-up: %ld -> %ld", mallocs[1], mallocs[2]);
    cr_assert_eq(mallocs[3], mallocs[1], "arena mallocs grew after warm-up: %ld -> %ld", mallocs[1], mallocs[3]);
    cr_assert_eq(a.n_chunks + sa.n_chunks, 0, "the last steps still spilled into chunks");
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
static void directional_fd(const char *attn, CmpFn cmp_fn, GateAct gate_act) {
    Config c;
    tiny_config(&c, attn);
    c.cmp_fn = cmp_fn;
    c.gate_act = gate_act;
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
        cr_log_info("%s/cmp_fn %d/gate_act %d dir %d: eps %.2g fd %.6g analytic %.6g", attn, cmp_fn, gate_act, dir,
                    eps, fd, an);
        cr_expect(err <= 2e-2 * fabs(an) + 2e-4, "%s cmp_fn %d gate_act %d direction %d: fd %.6g vs analytic %.6g",
                  attn, cmp_fn, gate_act, dir, fd, an);
    }
    free(grad), free(theta), free(u);
    for (int l = 0; l < c.n_layers; l++) free(base_sel[l]);
    graph_free(&g);
    arena_free(&a);
    model_free(&m);
}

Test(model, gradcheck_nsa_mlp_sigmoid) { directional_fd("nsa", CMP_MLP, GATE_SIGMOID); }
Test(model, gradcheck_nsa_linear_softmax) { directional_fd("nsa", CMP_LINEAR, GATE_SOFTMAX); }
Test(model, gradcheck_nsa_mean_sigmoid) { directional_fd("nsa", CMP_MEAN, GATE_SIGMOID); }
Test(model, gradcheck_dense) { directional_fd("dense", CMP_MLP, GATE_SIGMOID); }

// ---------------------------------------------------------------------------- init

// DESIGN.md: fc2 is xavier-uniform gain 0.1 so the three gates differ from the start. The
// gate values come from the model's own forward (keep_gates: the gate kernel's act(z) on
// the layer's normalised input), for both gate activations.
static void gates_differ(GateAct act) {
    Config c;
    tiny_config(&c, "nsa");
    c.gate_act = act;
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
    ForwardOpts fo = {.keep_gates = 1};
    Forward f;
    model_forward(&m, &g, tok, NULL, 1, T, &fo, &f);
    for (int l = 0; l < c.n_layers; l++) {
        const float *gw = f.gate[l];
        cr_assert(gw, "layer %d: no gate values kept", l);
        // Spread across branches (std of cmp, slc, win per token and head, averaged) and
        // across heads (max − min of one branch's gate over the heads, averaged).
        double branch_spread = 0, head_spread = 0, sum = 0;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                double mean = 0, var = 0;
                for (int b = 0; b < 3; b++) mean += gw[t * 3 * H + b * H + h] / 3;
                for (int b = 0; b < 3; b++) var += pow(gw[t * 3 * H + b * H + h] - mean, 2) / 3;
                branch_spread += sqrt(var) / (T * H);
                sum += act == GATE_SOFTMAX ? mean * 3 : 0;
            }
        for (int t = 0; t < T; t++)
            for (int b = 0; b < 3; b++) {
                float lo = gw[t * 3 * H + b * H], hi = lo;
                for (int h = 1; h < H; h++) {
                    float v = gw[t * 3 * H + b * H + h];
                    lo = fminf(lo, v), hi = fmaxf(hi, v);
                }
                head_spread += (hi - lo) / (3 * T);
            }
        cr_log_info("layer %d gate_act %d: spread across branches %.4g, across heads %.4g", l, act, branch_spread,
                    head_spread);
        // Measured 6.9e-3..9.6e-3 and 1.9e-2..2.2e-2 at init (tiny, seed 1); an all-zero fc2
        // gives exactly 0 for both.
        cr_expect(branch_spread > 1e-3, "layer %d: gate std across branches %.3g <= 1e-3", l, branch_spread);
        cr_expect(head_spread > 1e-3, "layer %d: gate range across heads %.3g <= 1e-3", l, head_spread);
        if (act == GATE_SOFTMAX)  // each (token, head)'s three gates sum to 1
            cr_expect(fabs(sum - T * H) < 1e-4 * T * H, "layer %d: softmax gates sum to %g, not %d", l, sum,
                      T * H);
    }
    graph_free(&g);
    arena_free(&a);
    model_free(&m);
}

Test(model, gates_differ_sigmoid) { gates_differ(GATE_SIGMOID); }
Test(model, gates_differ_softmax) { gates_differ(GATE_SOFTMAX); }

Test(model, init_deterministic_from_seed) {
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
