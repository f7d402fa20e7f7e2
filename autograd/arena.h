// arena.h: bump allocator for one role (activations of a step, recompute scratch).
// The first step may overflow into extra chunks; the reset after it folds them into one
// buffer of the high-water size, so every later identical step allocates nothing.
#ifndef NSA_ARENA_H
#define NSA_ARENA_H

#include <stddef.h>

typedef struct {
    char *base;       // one buffer, cap bytes
    size_t cap;
    size_t used;      // bytes handed out of base
    size_t extra;     // bytes handed out of overflow chunks since the last reset
    size_t peak;      // high-water mark of used + extra over the arena's life
    void **chunks;    // overflow chunks (only while the arena is still learning its size)
    int n_chunks, cap_chunks;
    long n_mallocs;   // malloc/mmap calls made by this arena over its life (tests assert it stops growing)
    int reserved;     // base is an mmap reservation
} Arena;

void arena_init(Arena *a, size_t cap);
void arena_free(Arena *a);
void *arena_alloc(Arena *a, size_t bytes);              // 64-byte aligned, uninitialised
void *arena_calloc(Arena *a, size_t bytes);             // zeroed
void *arena_dup(Arena *a, const void *src, size_t bytes); // a copy of src
void arena_reset(Arena *a);
size_t arena_in_use(const Arena *a);

#endif
