// common.h: error reporting, checked allocation and always-on assertions shared by every layer.
#ifndef NSA_COMMON_H
#define NSA_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Errors a user can cause are reported once, where they are detected, as one line on
// stderr; the function returns NSA_ERR and its callers pass the code up unchanged.
#define NSA_OK 0
#define NSA_ERR (-1)

void nsa_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void nsa_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Invariants of the program itself (not of user input): stay on in release builds.
#define NSA_ASSERT(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) nsa_assert_fail(#cond, __FILE__, __LINE__);                          \
    } while (0)
_Noreturn void nsa_assert_fail(const char *cond, const char *file, int line);

// Allocation failure is not recoverable here: report the place and the size, then abort.
#define nsa_malloc(n) nsa_malloc_at((n), __FILE__, __LINE__)
#define nsa_calloc(n, s) nsa_calloc_at((n), (s), __FILE__, __LINE__)
void *nsa_malloc_at(size_t n, const char *file, int line);
void *nsa_calloc_at(size_t n, size_t size, const char *file, int line);

// a·b into *out; 1 (and *out unspecified) if the product overflows int64. For sizes that
// come from files and flags, before anything is allocated or indexed with them.
static inline int nsa_mul_overflow(int64_t a, int64_t b, int64_t *out) { return __builtin_mul_overflow(a, b, out); }

// Σ_j a[j]·b[j] for a row-local reduction: element j goes into partial sum j % 16 (left to
// right), and the 16 sums are added in a fixed pairwise tree. The bits depend only on a and
// b (not on threads or other rows), and the 16 independent sums vectorise, where one running
// float sum waits an add latency per element.
static inline float nsa_dot16(const float *restrict a, const float *restrict b, int64_t n) {
    float acc[16] = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[j + l] * b[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += a[j + l] * b[j + l];
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

// Monotonic wall clock in seconds.
double nsa_now(void);

#endif
