// test_bench_attn.c: how `nsa bench attn` turns its paired runs into the table's ratio.
#include <criterion/criterion.h>

#include "eval/bench_attn.h"

// Dense and NSA time their runs back to back; the ratio is the median of the runs' ratios.
// Here the true ratio is 2 and the machine ran fast (0.8x the time) only while dense ran in
// the first run: the pairs of the other runs hold the median at 2, where the fastest dense
// over the fastest NSA (moments apart) reads 1.6.
Test(bench_attn, pairs_median_is_not_fooled_by_one_fast_moment) {
    const double dense_s[3] = {0.32, 0.8, 0.4}, nsa_s[3] = {0.2, 0.4, 0.2};
    AttnPairs p = bench_attn_pairs(dense_s, nsa_s, 3);
    cr_assert_eq(p.n, 3);
    for (int i = 0; i < 3; i++) cr_expect_float_eq(p.pair[i], dense_s[i] / nsa_s[i], 1e-15);
    cr_expect_float_eq(p.ratio, 2.0, 1e-12);
    cr_expect_float_eq(p.dense_best, 0.32, 1e-15);
    cr_expect_float_eq(p.nsa_best, 0.2, 1e-15);
    cr_expect_float_eq(p.best_ratio, 1.6, 1e-12);
    // An even count: the mean of the middle two; one run: its own ratio.
    p = bench_attn_pairs(dense_s, nsa_s, 2);
    cr_expect_float_eq(p.ratio, 1.8, 1e-12);
    p = bench_attn_pairs(dense_s + 1, nsa_s + 1, 1);
    cr_expect_float_eq(p.ratio, 2.0, 1e-12);
    cr_expect_float_eq(p.best_ratio, 2.0, 1e-12);
}
