// test_decode.c: decoding against the full forward. Token by token, and after prefills of
// every boundary length, the decoder's logits at each position equal row t of
// model_forward (max|Δ|/max|ref| <= 1e-5 per row) for dense and NSA layers under several
// option sets, at tiny and longer ragged lengths; every prefill length gives the bits of
// one-token steps; the few-rows attention kernel gives the tile kernel's bits.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "eval/decode.h"
#include "kernels/attn_decode.h"
#include "kernels/common.h"
#include "kernels/rng.h"
#include "model/model.h"

typedef struct {
    const char *name;
    const char *sets[8];  // --set style assignments over tiny
    int T;                // tokens decoded (<= seq_len)
} Case;

// Scale of wq and wk: at init scale the compressed scores are nearly flat and Eq. 9 sums
// tie within float rounding, so float32 orderings of near-equal blocks could differ between
// the two paths (DESIGN.md's warning); 8x spreads p_cmp so that top-n margins are clear.
#define QK_SCALE 8.0f

static void build_model(Model *m, const Case *k) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "tiny"), NSA_OK);
    for (int i = 0; i < 8 && k->sets[i]; i++) cr_assert_eq(config_set(&c, k->sets[i]), NSA_OK, "%s", k->sets[i]);
    cr_assert_eq(config_validate(&c), NSA_OK, "%s", k->name);
    model_create(m, &c);
    model_init_params(m, 1234);
    for (int i = 0; i < m->n_params; i++) {
        Param *p = &m->params[i];
        if (strstr(p->name, ".wq.") || strstr(p->name, ".wk."))
            for (int64_t j = 0; j < p->t.size; j++) p->t.data[j] *= QK_SCALE;
    }
}

static void random_ids(int32_t *ids, int n, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)rng_below(&r, (uint64_t)V);
}

static float *full_logits(Model *m, const int32_t *ids, int T) {
    Arena a;
    Graph g;
    arena_init(&a, 0);
    graph_init(&g, &a);
    g.record = 0;
    ForwardOpts fo = {0};
    Forward f;
    model_forward(m, &g, ids, NULL, 1, T, &fo, &f);
    const size_t n = (size_t)T * m->cfg.vocab_size;
    float *out = nsa_malloc(n * sizeof(float));
    memcpy(out, f.logits->data, n * sizeof(float));
    graph_free(&g);
    arena_free(&a);
    return out;
}

static double row_err(const float *a, const float *ref, int V) {
    double md = 0.0, mr = 0.0;
    for (int j = 0; j < V; j++) {
        md = fmax(md, fabs((double)a[j] - ref[j]));
        mr = fmax(mr, fabs((double)ref[j]));
    }
    return mr > 0 ? md / mr : md;
}

// Prefill the first P tokens (P = 0: none), then decode the rest one at a time; every row's
// logits against the full forward, and bit for bit against `same` (the P = 0 run's logits,
// [T, V]) when given. Returns the worst row error; out (NULL ok) receives the logits.
static double run_split(Model *m, const Weights *w, const int32_t *ids, int T, int P, const float *ref,
                        const float *same, float *out) {
    const int V = (int)m->cfg.vocab_size;
    Pool pool;
    cr_assert_eq(pool_init(&pool, &m->cfg, kvseq_pages(&m->cfg, T)), NSA_OK);
    Decoder d;
    decoder_init(&d, w, &pool);
    KvSeq s;
    cr_assert_eq(kvseq_init(&s, &pool, &m->cfg, T), NSA_OK);
    float *lg = nsa_malloc((size_t)T * V * sizeof(float));
    double worst = 0.0;
    if (P > 0) {
        DecodeRows e = {&s, ids, P};
        decoder_forward(&d, lg, &e, 1, 1);
        for (int t = 0; t < P; t++) {
            double err = row_err(lg + (size_t)t * V, ref + (size_t)t * V, V);
            cr_expect(err <= 1e-5, "prefill %d: position %d: rel err %g", P, t, err);
            worst = fmax(worst, err);
        }
        if (out) memcpy(out, lg, (size_t)P * V * sizeof(float));
        if (same)
            cr_expect(!memcmp(lg, same, (size_t)P * V * sizeof(float)), "prefill %d differs from one-token steps", P);
    }
    for (int t = P; t < T; t++) {
        DecodeRows e = {&s, ids + t, 1};
        decoder_forward(&d, lg, &e, 1, 0);
        double err = row_err(lg, ref + (size_t)t * V, V);
        cr_expect(err <= 1e-5, "prefill %d, then position %d: rel err %g", P, t, err);
        worst = fmax(worst, err);
        if (out) memcpy(out + (size_t)t * V, lg, (size_t)V * sizeof(float));
        if (same) cr_expect(!memcmp(lg, same + (size_t)t * V, (size_t)V * sizeof(float)),
                            "prefill %d, then position %d: differs from one-token steps", P, t);
    }
    cr_expect_eq(s.len, T);
    kvseq_free(&s, &pool);
    cr_expect_eq(pool_pages_free(&pool), pool.n_pages, "pages leaked");
    free(lg);
    decoder_free(&d);
    pool_free(&pool);
    return worst;
}

static void check_case(const Case *k) {
    // One thread: these are thousands of tiny steps, and the kernels' bits do not depend on
    // the thread count (test_engine runs with two).
    omp_set_num_threads(1);
    Model m;
    build_model(&m, k);
    Weights *w = nsa_malloc(sizeof *w);
    weights_from_model(w, &m);
    const Config *c = &m.cfg;
    int32_t *ids = nsa_malloc((size_t)k->T * sizeof *ids);
    random_ids(ids, k->T, (int)c->vocab_size, 99);
    float *ref = full_logits(&m, ids, k->T);
    // Prefill lengths at every boundary: l-1, l, the first i*d+l-1 past l, l'-1, l', the window
    // edge, ragged lengths, and the whole sequence.
    const int l = (int)c->cmp_block, d = (int)c->cmp_stride, lp = (int)c->slc_block, win = (int)c->window;
    const int splits[] = {0, 1, 2, l - 1, l, l + d - 1, lp - 1, lp, lp + 1, win, win + 1, 3 * lp + 5, k->T};
    // Every prefill length gives the same bits as one-token steps from the start: a row's
    // result never depends on the rows that share its call.
    float *steps = nsa_malloc((size_t)k->T * c->vocab_size * sizeof(float));
    double worst = run_split(&m, w, ids, k->T, 0, ref, NULL, steps);
    for (size_t i = 1; i < sizeof splits / sizeof splits[0]; i++) {
        if (splits[i] > k->T || splits[i] == splits[i - 1]) continue;
        worst = fmax(worst, run_split(&m, w, ids, k->T, splits[i], ref, steps, NULL));
    }
    free(steps);
    cr_log_info("decode %s: T %d, worst row max|d|/max|ref| %.2e", k->name, k->T, worst);
    free(ref), free(ids), free(w);
    model_free(&m);
}

Test(decode, tiny_nsa_default_matches_full_forward) {
    Case k = {"tiny nsa (mlp, shared, sigmoid, G=2)", {NULL}, 128};
    check_case(&k);
}

Test(decode, tiny_dense_matches_full_forward) {
    Case k = {"tiny dense", {"attn=dense"}, 128};
    check_case(&k);
}

Test(decode, mixed_linear_separate_softmax_gqa1) {
    Case k = {"dense,nsa linear separate softmax G=1",
              {"attn=dense,nsa", "cmp_fn=linear", "kv=separate", "gate_act=softmax", "n_kv_heads=1"},
              128};
    check_case(&k);
}

Test(decode, ragged_mean_longer) {
    // l = 12, d = 4, l' = 8: blocks overlap three ways, pages are 8 tokens, T ragged.
    Case k = {"mean l12 d4 l'8 n5 w20",
              {"cmp_fn=mean", "cmp_block=12", "cmp_stride=4", "slc_block=8", "slc_topn=5", "window=20",
               "seq_len=256"},
              203};
    check_case(&k);
}

Test(decode, long_mlp_separate_pages_of_64) {
    // l' = 64: one full key chunk per page; the window edge falls inside a page.
    Case k = {"mlp separate l32 d16 l'64 n6 w48",
              {"kv=separate", "cmp_block=32", "cmp_stride=16", "slc_block=64", "slc_topn=6", "window=48",
               "seq_len=320"},
              301};
    check_case(&k);
}

// ---------------------------------------------------------------------------- kernels

// The rows' own ranges in ATTN_KEYS steps from 0 (what attention.c's default iterator does
// for ranges starting at 0): the same chunks for both kernels.
typedef struct {
    const AttnTile *tl;
    int s0, uhi;
} Steps;

static int steps_next(void *ctx, int *k0, int *nk, int *lo, int *hi) {
    Steps *c = ctx;
    if (c->s0 >= c->uhi) return 0;
    *k0 = c->s0, *nk = c->uhi - c->s0 < ATTN_KEYS ? c->uhi - c->s0 : ATTN_KEYS;
    for (int r = 0; r < c->tl->n; r++) lo[r] = c->tl->lo[r], hi[r] = c->tl->hi[r];
    c->s0 += *nk;
    return 1;
}

// attn_rows_forward (keys as lanes) gives attn_tile_forward's bits for every row, ragged
// ranges, empty rows and a Dh without a specialised build included.
Test(decode, rows_kernel_bit_identical_to_tile_kernel) {
    const int dhs[] = {16, 32, 24};
    Rng r;
    rng_seed(&r, 8);
    for (int di = 0; di < 3; di++) {
        const int Dh = dhs[di], T = 150, n = 12;
        float *q = nsa_malloc((size_t)n * Dh * sizeof(float)), *k = nsa_malloc((size_t)T * Dh * sizeof(float));
        float *v = nsa_malloc((size_t)T * Dh * sizeof(float));
        rng_fill_normal(&r, q, (int64_t)n * Dh, 2.0);
        rng_fill_normal(&r, k, (int64_t)T * Dh, 1.0);
        rng_fill_normal(&r, v, (int64_t)T * Dh, 1.0);
        AttnTile tl;
        attn_tile_rows(&tl, 0, n, 1, 0, NULL, n, 0, 1);
        for (int i = 0; i < n; i++) {
            tl.lo[i] = (int)rng_below(&r, 80);
            tl.hi[i] = i == 3 ? tl.lo[i] : tl.lo[i] + 1 + (int)rng_below(&r, (uint64_t)(T - tl.lo[i]));
        }
        float o[2][12 * 32], lse[2][12];
        for (int kern = 0; kern < 2; kern++) {
            Steps c = {&tl, 0, T};
            (kern ? attn_rows_forward : attn_tile_forward)(o[kern], lse[kern], q, k, v, (size_t)Dh, &tl, steps_next,
                                                          &c, Dh);
        }
        cr_expect(!memcmp(o[0], o[1], (size_t)n * Dh * sizeof(float)), "Dh %d: outputs differ", Dh);
        cr_expect(!memcmp(lse[0], lse[1], sizeof lse[0]), "Dh %d: lse differ", Dh);
        cr_expect_eq(lse[1][3], -INFINITY, "a row without keys");
        free(q), free(k), free(v);
    }
}
