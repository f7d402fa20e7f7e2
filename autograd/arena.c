// arena.c: see arena.h.
#include "autograd/arena.h"

#include <string.h>

#include "kernels/common.h"

#define ALIGN 64

void arena_init(Arena *a, size_t cap) {
    memset(a, 0, sizeof *a);
    if (cap) {
        a->base = nsa_malloc(cap);
        a->cap = cap;
        a->n_mallocs = 1;
    }
}

void arena_free(Arena *a) {
    for (int i = 0; i < a->n_chunks; i++) free(a->chunks[i]);
    free(a->chunks);
    free(a->base);
    memset(a, 0, sizeof *a);
}

void *arena_alloc(Arena *a, size_t bytes) {
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (bytes == 0) bytes = ALIGN;
    void *p;
    if (a->used + bytes <= a->cap) {
        p = a->base + a->used;
        a->used += bytes;
    } else {
        if (a->n_chunks == a->cap_chunks) {
            a->cap_chunks = a->cap_chunks ? 2 * a->cap_chunks : 16;
            a->chunks = realloc(a->chunks, (size_t)a->cap_chunks * sizeof *a->chunks);
            NSA_ASSERT(a->chunks);
            a->n_mallocs++;
        }
        p = nsa_malloc(bytes);
        a->n_mallocs++;
        a->chunks[a->n_chunks++] = p;
        a->extra += bytes;
    }
    if (a->used + a->extra > a->peak) a->peak = a->used + a->extra;
    return p;
}

void *arena_calloc(Arena *a, size_t bytes) {
    void *p = arena_alloc(a, bytes);
    memset(p, 0, bytes);
    return p;
}

void arena_reset(Arena *a) {
    if (a->n_chunks) {
        for (int i = 0; i < a->n_chunks; i++) free(a->chunks[i]);
        a->n_chunks = 0;
        free(a->base);
        a->cap = a->peak;
        a->base = nsa_malloc(a->cap);
        a->n_mallocs++;
    }
    a->used = 0;
    a->extra = 0;
}

size_t arena_in_use(const Arena *a) { return a->used + a->extra; }
