// test_pool.c: the block pool and a sequence's pages: take / share / release bookkeeping,
// page layout as the paged attention reads it, and a fork that shares full pages and copies
// a partly filled one so that writes past the fork point leave the source intact.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <string.h>

#include "eval/kvcache.h"
#include "kernels/common.h"

static Config tiny(void) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "tiny"), NSA_OK);
    cr_assert_eq(config_set(&c, "attn=dense,nsa"), NSA_OK);
    cr_assert_eq(config_set(&c, "kv=separate"), NSA_OK);
    cr_assert_eq(config_validate(&c), NSA_OK);
    return c;
}

Test(pool, take_share_release, .init = cr_redirect_stderr) {
    Config c = tiny();
    Pool p;
    cr_assert_eq(pool_init(&p, &c, 0), NSA_ERR);
    fflush(stderr);
    cr_assert_stderr_eq_str("nsa: error: the block pool needs at least one page (got 0)\n");
    cr_assert_eq(pool_init(&p, &c, 3), NSA_OK);
    // Dense layer: one K/V set per row; kv=separate NSA layer: three (cmp, slc, win).
    cr_expect_eq(p.row_floats[0], (size_t)c.n_kv_heads * c.head_dim);
    cr_expect_eq(p.row_floats[1], (size_t)3 * c.n_kv_heads * c.head_dim);
    int32_t a = pool_take(&p), b = pool_take(&p), d = pool_take(&p);
    cr_expect(a == 0 && b == 1 && d == 2);
    cr_expect_eq(pool_take(&p), -1, "an empty pool handed out a page");
    pool_ref(&p, b);
    pool_release(&p, b);
    cr_expect_eq(pool_pages_free(&p), 0, "a shared page was freed with a holder left");
    pool_release(&p, b), pool_release(&p, a), pool_release(&p, d);
    cr_expect_eq(pool_pages_free(&p), 3);
    pool_free(&p);
}

Test(pool, fork_shares_full_pages_and_copies_the_partial_one) {
    Config c = tiny();
    const int pl = (int)c.slc_block, G = (int)c.n_kv_heads, Dh = (int)c.head_dim;
    Pool p;
    cr_assert_eq(pool_init(&p, &c, 8), NSA_OK);
    KvSeq src, dst;
    cr_assert_eq(kvseq_init(&src, &p, &c, 3 * pl), NSA_OK);
    // Token t's K of set 0 in layer 0 holds t everywhere.
    float *k = nsa_malloc((size_t)3 * pl * G * Dh * sizeof(float)), *v = k;
    for (int t = 0; t < 3 * pl; t++)
        for (int e = 0; e < G * Dh; e++) k[t * G * Dh + e] = (float)t;
    pool_write(&p, 0, 0, src.pages, 0, 3 * pl, k, v);
    src.len = 3 * pl;
    cr_expect_eq(pool_pages_free(&p), 5);
    const int len = pl + 5;  // one full page, five rows of the next
    cr_assert_eq(kvseq_fork(&dst, &src, len, &p, &c, 2 * pl + 3), NSA_OK);
    cr_expect_eq(dst.len, len);
    cr_expect_eq(dst.pages[0], src.pages[0], "the full page is not shared");
    cr_expect_neq(dst.pages[1], src.pages[1], "the partial page is shared, not copied");
    cr_expect_eq(pool_pages_free(&p), 3, "fork of 3 pages with 1 shared took %d", 5 - pool_pages_free(&p));
    // The copy holds the first five rows; writing past them changes only the fork.
    KvPaged view = pool_view(&p, 0, 0, dst.pages);
    for (int t = 0; t < len; t++) {
        const float *row = view.k + ((size_t)dst.pages[t / pl] * pl + t % pl) * view.kv_stride;
        cr_expect_eq(row[0], (float)t, "token %d", t);
    }
    float *z = nsa_calloc((size_t)G * Dh, sizeof(float));
    pool_write(&p, 0, 0, dst.pages, len, 1, z, z);
    KvPaged sv = pool_view(&p, 0, 0, src.pages);
    cr_expect_eq(sv.k[((size_t)src.pages[1] * pl + 5) * sv.kv_stride], (float)(pl + 5), "fork wrote into its source");
    kvseq_free(&src, &p);
    cr_expect_eq(pool_pages_free(&p), 5, "the shared page left with its first holder");
    kvseq_free(&dst, &p);
    cr_expect_eq(pool_pages_free(&p), 8);
    cr_assert_eq(kvseq_init(&src, &p, &c, 9 * pl), NSA_ERR, "more pages than the pool has");
    cr_expect_eq(pool_pages_free(&p), 8);
    free(k), free(z);
    pool_free(&p);
}
