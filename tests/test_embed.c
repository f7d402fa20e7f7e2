// test_embed.c: embedding lookup and its scatter-add backward (kernels/embed.c) against a
// naive loop, with repeated tokens accumulating in row order.
#include <criterion/criterion.h>
#include <string.h>

#include "kernels/embed.h"
#include "tests/kernel_ref.h"

enum { V = 7, D = 5, ROWS = 9 };

Test(embed, lookup_and_scatter_add) {
    static const int32_t tok[ROWS] = {3, 1, 3, 0, 6, 3, 1, 2, 3};
    Rng r;
    rng_seed(&r, 4);
    float *w = kref_randn(&r, V * D, 1.0f), *dy = kref_randn(&r, ROWS * D, 1.0f), *dw0 = kref_randn(&r, V * D, 1.0f);
    float y[ROWS * D], *dw = kref_copy(dw0, V * D);
    embed_forward(y, w, tok, ROWS, V, D);
    embed_backward(dw, dy, tok, ROWS, D);
    // Copies are exact; the backward is float sums in row order, recomputed here in that order.
    cr_expect(memcmp(y + 2 * D, w + 3 * D, D * 4) == 0);
    int bad = 0;
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < D; j++) bad += y[i * D + j] != w[tok[i] * D + j];
    for (int v = 0; v < V; v++)
        for (int j = 0; j < D; j++) {
            float want = dw0[v * D + j];
            for (int i = 0; i < ROWS; i++)
                if (tok[i] == v) want += dy[i * D + j];
            bad += dw[v * D + j] != want;
        }
    cr_expect_eq(bad, 0, "%d elements differ from the naive loop", bad);
    // Token 4 and 5 occur nowhere: their gradient rows are untouched.
    cr_expect(memcmp(dw + 4 * D, dw0 + 4 * D, 2 * D * 4) == 0);
    free(w), free(dy), free(dw0), free(dw);
}
