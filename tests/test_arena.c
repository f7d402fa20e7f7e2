// test_arena.c: both ways an arena stops allocating after the first step: the overflow
// chunks folded into one buffer at the first reset (exercised through a small fixed buffer,
// as when the address-space reservation is refused), and the reservation (the default).
#include <criterion/criterion.h>
#include <string.h>

#include "autograd/arena.h"

// One "step": 50 blocks of ~1-1.5 KB (scale 1) or twice that (scale 2), plus a zeroed one.
static void step(Arena *a, int scale) {
    for (int i = 0; i < 50; i++) {
        size_t n = (size_t)scale * (1000 + (size_t)i * 10);
        char *p = arena_alloc(a, n);
        memset(p, i, n);  // touch it: every block must be writable
    }
    float *z = arena_calloc(a, 4096);
    for (int i = 0; i < 1024; i++) cr_assert_eq(z[i], 0.0f);
}

Test(arena, chunks_fold_after_first_step) {
    Arena a;
    arena_init(&a, 1024);  // far too small: the first step overflows
    long start = a.n_mallocs;
    step(&a, 1);
    // The first step pays one malloc per overflowing block (and the chunk table).
    cr_assert_gt(a.n_mallocs, start + 40, "the first step did not overflow: %ld mallocs", a.n_mallocs - start);
    cr_assert_gt(a.n_chunks, 0);
    arena_reset(&a);
    long after_fold = a.n_mallocs;
    cr_assert_eq(a.n_chunks, 0);
    cr_assert_geq(a.cap, a.peak);
    for (int s = 0; s < 3; s++) {
        step(&a, 1);
        cr_assert_eq(a.n_chunks, 0, "step %d overflowed the folded buffer", s);
        arena_reset(&a);
    }
    cr_assert_eq(a.n_mallocs, after_fold, "the folded arena allocated again");
    // The counter sees growth when there is some: a larger step overflows again, folds
    // again, and is then flat at its own size.
    step(&a, 2);
    cr_assert_gt(a.n_mallocs, after_fold, "a step twice as large did not allocate");
    arena_reset(&a);
    long after_refold = a.n_mallocs;
    step(&a, 2);
    arena_reset(&a);
    step(&a, 1);
    arena_reset(&a);
    cr_assert_eq(a.n_mallocs, after_refold, "the refolded arena allocated again");
    arena_free(&a);
}

Test(arena, reservation_is_one_mapping) {
    Arena a;
    arena_init(&a, 0);
    cr_assert(a.reserved, "mmap of the reservation failed (strict overcommit?)");
    cr_assert_eq(a.n_mallocs, 1);  // the mapping itself
    for (int s = 0; s < 3; s++) {
        step(&a, s + 1);  // growing steps: the reservation absorbs them all
        cr_assert_eq(a.n_chunks, 0);
        arena_reset(&a);
    }
    cr_assert_eq(a.n_mallocs, 1);
    cr_assert_gt(a.peak, 3 * 50 * 1000);
    arena_free(&a);
}
