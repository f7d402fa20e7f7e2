// test_arena.c: both ways an arena stops allocating after the first step: the address
// space reservation (the default) and the overflow chunks folded at the first reset (the
// fallback where the reservation is refused, exercised here through a small fixed cap).
#include <criterion/criterion.h>
#include <string.h>

#include "autograd/arena.h"

static void step(Arena *a) {
    for (int i = 0; i < 50; i++) {
        char *p = arena_alloc(a, 1000 + (size_t)i * 10);
        memset(p, i, 1000);  // touch it: every block must be writable
    }
    float *z = arena_calloc(a, 4096);
    for (int i = 0; i < 1024; i++) cr_assert_eq(z[i], 0.0f);
}

Test(arena, fallback_chunks_fold_after_first_step) {
    Arena a;
    arena_init(&a, 1024);  // far too small: the first step overflows
    step(&a);
    cr_assert_gt(a.n_chunks, 0);
    arena_reset(&a);
    long after_fold = a.n_mallocs;
    cr_assert_eq(a.n_chunks, 0);
    cr_assert_geq(a.cap, a.peak);
    for (int s = 0; s < 3; s++) {
        step(&a);
        arena_reset(&a);
    }
    cr_assert_eq(a.n_mallocs, after_fold, "the folded arena allocated again");
    arena_free(&a);
}

Test(arena, reservation_never_allocates) {
    Arena a;
    arena_init(&a, 0);
    long start = a.n_mallocs;
    for (int s = 0; s < 3; s++) {
        step(&a);
        arena_reset(&a);
    }
    cr_assert_eq(a.n_mallocs, start);
    cr_assert_gt(a.peak, 50 * 1000);
    arena_free(&a);
}
