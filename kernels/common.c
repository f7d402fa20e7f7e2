// common.c: error reporting, checked allocation and the wall clock.
#include "kernels/common.h"

#include <stdarg.h>
#include <time.h>

void nsa_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("nsa: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void nsa_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("nsa: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void nsa_assert_fail(const char *cond, const char *file, int line) {
    fprintf(stderr, "nsa: internal error: assertion '%s' failed at %s:%d (a bug: please report it)\n",
            cond, file, line);
    abort();
}

void *nsa_malloc_at(size_t n, const char *file, int line) {
    void *p = NULL;
    // 64-byte alignment keeps AVX-512 loads on one cache line.
    if (posix_memalign(&p, 64, n ? n : 64) != 0) {
        fprintf(stderr, "nsa: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
        abort();
    }
    return p;
}

void *nsa_calloc_at(size_t n, size_t size, const char *file, int line) {
    size_t bytes = n * size;
    NSA_ASSERT(size == 0 || bytes / size == n);
    void *p = nsa_malloc_at(bytes, file, line);
    for (size_t i = 0; i < bytes; i++) ((char *)p)[i] = 0;
    return p;
}

double nsa_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
