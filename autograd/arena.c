// arena.c: see arena.h.
#include "autograd/arena.h"

#include <string.h>
#include <sys/mman.h>

#include "kernels/common.h"

#define ALIGN 64
// Address space reserved per arena when no size is given. Pages are backed only when
// touched, so this costs nothing; it spares the first steps a fold of overflow chunks
// into a fresh buffer whose pages would all fault in again (measured: step 2 of `small`
// took 5.3 s instead of 1.1 s).
#define RESERVE ((size_t)1 << 38)

void arena_init(Arena *a, size_t cap) {
    memset(a, 0, sizeof *a);
    if (cap) {
        a->base = nsa_malloc(cap);
        a->cap = cap;
        a->n_mallocs = 1;
        return;
    }
    void *p = mmap(NULL, RESERVE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {  // else (strict overcommit): learn the size through overflow chunks
        // Transparent huge pages where the kernel offers them on request (the Debian default
        // is "madvise"): a step's activations are gigabytes, and 4 KiB pages cost a fault
        // each on first touch and a TLB entry each after. Advice only: failure changes nothing.
        (void)madvise(p, RESERVE, MADV_HUGEPAGE);
        a->base = p;
        a->cap = RESERVE;
        a->reserved = 1;
        a->n_mallocs = 1;
    }
}

static void release_base(Arena *a) {
    if (a->reserved) munmap(a->base, a->cap);
    else free(a->base);
}

void arena_free(Arena *a) {
    for (int i = 0; i < a->n_chunks; i++) free(a->chunks[i]);
    free(a->chunks);
    release_base(a);
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

void *arena_dup(Arena *a, const void *src, size_t bytes) {
    void *p = arena_alloc(a, bytes);
    memcpy(p, src, bytes);
    return p;
}

void arena_reset(Arena *a) {
    if (a->n_chunks) {
        for (int i = 0; i < a->n_chunks; i++) free(a->chunks[i]);
        a->n_chunks = 0;
        release_base(a);
        a->reserved = 0;
        a->cap = a->peak;
        a->base = nsa_malloc(a->cap);
        a->n_mallocs++;
    }
    a->used = 0;
    a->extra = 0;
}

size_t arena_in_use(const Arena *a) { return a->used + a->extra; }
