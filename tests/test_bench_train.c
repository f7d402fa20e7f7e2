// test_bench_train.c: what `nsa bench train` counts and how it splits a step: the FLOPs
// per token in their linear and attention parts (checked on a dense config, whose counts
// are closed-form), and the breakdown of a sampling profile into linear ops, attention ops
// (every op named "...attention"), other ops and the unsampled rest.
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "kernels/common.h"
#include "model/config.h"
#include "train/bench_train.h"

static Config tiny(const char *set) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "tiny"), NSA_OK);
    if (set) cr_assert_eq(config_set(&c, set), NSA_OK);
    cr_assert_eq(config_validate(&c), NSA_OK);
    return c;
}

Test(bench_train, flops_split_dense_closed_form) {
    const Config c = tiny("attn=dense");
    double lin, att;
    bench_train_flops_split(&c, &lin, &att);
    // 6 per parameter (every parameter of a dense model is used once per token), and each
    // position t scores t + 1 keys per head: H (T + 1) / 2 pairs per token and layer.
    cr_expect_float_eq(lin, 6.0 * (double)config_n_params(&c), 1e-9 * lin);
    const double pairs = (double)c.n_layers * (double)c.n_heads * ((double)c.seq_len + 1.0) / 2.0;
    cr_expect_float_eq(att, 12.0 * (double)c.head_dim * pairs, 1e-9 * att);
    cr_expect_float_eq(bench_train_flops_per_token(&c), lin + att, 1e-9 * (lin + att));
}

Test(bench_train, flops_split_nsa_counted_key_by_key) {
    const Config c = tiny(NULL);
    double lin, att;
    bench_train_flops_split(&c, &lin, &att);
    cr_expect_float_eq(bench_train_flops_per_token(&c), lin + att, 1e-9 * (lin + att));
    // Every key s <= t of every position, counted one by one: compressed block i (keys
    // [i d, i d + l)) once it is complete, a token of the n latest selection blocks (the
    // count assumes a query selects n whole blocks, its own partly), a token of the window;
    // 12 Dh FLOPs each, but 8 Dh for a selected token in the last two blocks (the window's
    // head, whose forward the window computes for both: tiny's n = 4 >= 3, 2 l' <= w).
    const int T = (int)c.seq_len, l = (int)c.cmp_block, d = (int)c.cmp_stride, lp = (int)c.slc_block;
    const int n = (int)c.slc_topn, w = (int)c.window, Nc = T >= l ? (T - l) / d + 1 : 0;
    cr_assert(n >= 3 && 2 * lp <= w && c.kv == KV_SHARED);
    double units = 0;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < Nc; i++) units += 12 * (i * d + l - 1 <= t);
        for (int s = 0; s <= t; s++)
            units += (s / lp > t / lp - n) * (s / lp >= t / lp - 1 ? 8 : 12) + 12 * (s > t - w);
    }
    units *= (double)c.n_layers * (double)c.n_heads / T;
    cr_expect_float_eq(att, (double)c.head_dim * units, 1e-9 * att);
    // kv=separate: the branches have their own keys, every pair 12 Dh.
    const Config cs = tiny("kv=separate");
    double lin2, att2;
    bench_train_flops_split(&cs, &lin2, &att2);
    double pairs = 0;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < Nc; i++) pairs += i * d + l - 1 <= t;
        for (int s = 0; s <= t; s++) pairs += (s / lp > t / lp - n) + (s > t - w);
    }
    pairs *= (double)c.n_layers * (double)c.n_heads / T;
    cr_expect_float_eq(att2, 12.0 * (double)c.head_dim * pairs, 1e-9 * att2);
}

Test(bench_train, breakdown_classes_and_rest) {
    const ProfEntry e[] = {
        {"linear", {2.0, 3.0}},          {"slc_attention", {1.0, 2.0}}, {"window_attention", {0.5, 0.5}},
        {"cmp_attention", {0.25, 0.5}},  {"attention", {0.1, 0.1}},     {"rmsnorm", {0.2, 0.3}},
        {"swiglu", {0.1, 0.2}},          {"rope", {0.05, 0.05}},        {"add", {0.25, 0.0}},
        {"gate_combine", {0.01, 0.01}}, {"attention_mask", {1.0, 0.0}},
    };
    const int n = sizeof e / sizeof e[0];
    double sampled = 0;
    for (int i = 0; i < n; i++) sampled += e[i].s[0] + e[i].s[1];
    TrainBreakdown b = bench_train_breakdown(e, n, sampled + 1.5);
    cr_expect_float_eq(b.linear_s, 5.0, 1e-12);
    cr_expect_float_eq(b.attn_s, 3.0 + 1.0 + 0.75 + 0.2, 1e-12);
    // "attention_mask" does not end in "attention": another op
    cr_expect_float_eq(b.other_s, 0.5 + 0.3 + 0.1 + 0.25 + 0.02 + 1.0, 1e-12);
    cr_expect_float_eq(b.rest_s, 1.5, 1e-12);
    // the largest four of each class, largest first
    const char *attn[] = {"slc_attention", "window_attention", "cmp_attention", "attention"};
    const char *other[] = {"attention_mask", "rmsnorm", "swiglu", "add"};
    cr_assert_eq(b.n_attn, 4);
    cr_assert_eq(b.n_other, 4);
    for (int i = 0; i < 4; i++) {
        cr_expect_str_eq(b.attn[i].op, attn[i]);
        cr_expect_str_eq(b.other[i].op, other[i]);
    }
    cr_expect_float_eq(b.other[1].s[0], 0.5, 1e-12);
    // sampling may overshoot the wall time: the rest is then 0, not negative
    b = bench_train_breakdown(e, n, sampled - 0.1);
    cr_expect_eq(b.rest_s, 0.0);
    b = bench_train_breakdown(e, 2, 10.0);
    cr_expect_eq(b.n_attn, 1);
    cr_expect_eq(b.n_other, 0);
}

// The paired figures: a neighbour that halves the machine's speed for some of the pairs slows
// the steps and the sgemm measured after them alike, so each pair's ratios stay what the
// code does; the median over pairs reports those, while the best sgemm of the run (the
// conservative figure) sets the slowed steps against the machine at its fastest.
Test(bench_train, paired_timing_cancels_a_slowed_machine) {
    const double none_s[5] = {2.0, 4.0, 2.0, 4.0, 4.1}, layer_s[5] = {2.4, 4.8, 2.4, 4.8, 4.92};
    const double sg[5] = {100.0, 50.0, 100.0, 50.0, 50.0 * 4.0 / 4.1};
    const double flops = 120e9;  // 60 GFLOP/s in a 2 s step: 60 % of 100
    TrainTiming t = bench_train_timing(none_s, layer_s, sg, 5, flops);
    cr_expect_float_eq(t.ckpt_ratio, 1.2, 1e-12);
    cr_assert_eq(t.n, 5);
    for (int i = 0; i < 5; i++) cr_expect_float_eq(t.pair_ratio[i], layer_s[i] / none_s[i], 1e-15);
    cr_expect_float_eq(t.eff, 0.6, 1e-12);
    cr_expect_float_eq(t.none_s, 4.0, 1e-12);
    cr_expect_float_eq(t.none_lo, 2.0, 1e-12);
    cr_expect_float_eq(t.none_hi, 4.1, 1e-12);
    cr_expect_float_eq(t.layer_s, 4.8, 1e-12);
    cr_expect_float_eq(t.sg_best, 100.0, 1e-12);
    cr_expect_float_eq(t.sg_med, 50.0, 1e-12);
    cr_expect_float_eq(t.eff_best, 120.0 / 4.0 / 100.0, 1e-12);  // the median step against the best sgemm
    // An even count: the mean of the middle two.
    t = bench_train_timing(none_s, layer_s, sg, 4, flops);
    cr_expect_float_eq(t.none_s, 3.0, 1e-12);
    cr_expect_float_eq(t.eff, 0.6, 1e-12);
}
