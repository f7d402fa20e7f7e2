// testutil.h: what several suites share: a temporary directory per test, the synthetic
// training corpus, and running the nsa binary ($NSA_BIN, set by the Makefile) with its
// stderr captured. No tests here.
#ifndef NSA_TESTUTIL_H
#define NSA_TESTUTIL_H

#include <stddef.h>

// The binary under test: $NSA_BIN, else build/nsa.
const char *tu_bin(void);
// mkdtemp of /tmp/<prefix>XXXXXX into dir (fails the test if it cannot).
void tu_mkdtemp(char *dir, size_t size, const char *prefix);
void tu_rm_rf(const char *dir);
// Runs `$NSA_BIN ARGS` (ARGS from fmt, through the shell) with OMP_NUM_THREADS=1 and
// stdout discarded; returns the exit status (128 + signal if killed) and stderr in err.
int tu_run(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int tu_count_lines(const char *s);
// ~120 KB of sentences over a small vocabulary (a fixed generator) written to txt, then
// prepared into the dataset h5: enough structure that a tiny model's loss falls within
// tens of steps, and bytes >= 128 from 'é' (UTF-8) so a vocab_size of 128 is a genuine
// mismatch.
void tu_write_corpus(const char *txt, const char *h5);

// A clear error: non-zero exit (no crash), exactly one stderr line, "nsa: error: ..."
// containing `what`.
#define TU_ASSERT_ONE_LINE_ERROR(rc, err, what)                                                    \
    do {                                                                                           \
        cr_assert_neq(rc, 0, "expected failure, got exit 0 (stderr: %s)", err);                    \
        cr_assert_lt(rc, 100, "crashed (exit %d): %s", rc, err);                                   \
        cr_assert_eq(tu_count_lines(err), 1, "expected one line, got: %s", err);                   \
        cr_assert(!strncmp(err, "nsa: error: ", 12), "not an error line: %s", err);                \
        cr_assert(strstr(err, what), "'%s' not in: %s", what, err);                                \
    } while (0)

#endif
