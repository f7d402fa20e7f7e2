// testutil.c: see testutil.h.
#include "tests/testutil.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/prepare.h"
#include "kernels/common.h"

const char *tu_bin(void) {
    const char *b = getenv("NSA_BIN");
    return b && *b ? b : "build/nsa";
}

void tu_mkdtemp(char *dir, size_t size, const char *prefix) {
    snprintf(dir, size, "/tmp/%sXXXXXX", prefix);
    cr_assert(mkdtemp(dir), "mkdtemp %s failed", dir);
}

void tu_rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int tu_run(char *err, size_t size, const char *fmt, ...) {
    char *args, *cmd, errpath[] = "/tmp/nsa_tu_err_XXXXXX";
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&args, fmt, ap) >= 0);
    va_end(ap);
    int fd = mkstemp(errpath);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert(asprintf(&cmd, "OMP_NUM_THREADS=1 %s %s >/dev/null 2>%s", tu_bin(), args, errpath) >= 0);
    int st = system(cmd);
    free(cmd);
    free(args);
    FILE *f = fopen(errpath, "r");
    size_t n = f ? fread(err, 1, size - 1, f) : 0;
    err[n] = 0;
    if (f) fclose(f);
    unlink(errpath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int tu_count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

void tu_write_corpus(const char *txt, const char *h5) {
    static const char *words[] = {"the",  "lord", "said", "unto",  "moses", "and",   "his",  "people",
                                  "went", "into", "land", "of",    "egypt", "café",  "with", "great",
                                  "joy",  "they", "were", "many",  "days",  "there", "came", "a"};
    FILE *f = fopen(txt, "w");
    cr_assert(f);
    uint64_t x = 12345;
    size_t n = 0;
    while (n < 120000) {
        int len = 4 + (int)((x >> 33) % 9);
        for (int i = 0; i < len; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            const char *w = words[(x >> 35) % (sizeof words / sizeof *words)];
            if (i == 0) n += (size_t)fprintf(f, "%c%s", w[0] - 32, w + 1);  // capitalised
            else n += (size_t)fprintf(f, " %s", w);
        }
        n += (size_t)fprintf(f, ".\n");
    }
    fclose(f);
    int64_t n_train, n_val;
    cr_assert_eq(dataset_prepare(txt, h5, 0.1, &n_train, &n_val), NSA_OK);
}
