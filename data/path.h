// path.h: file names built from parts: one length limit for every path buffer, and a
// formatter that fails (one error line) instead of cutting a name short.
#ifndef NSA_PATH_H
#define NSA_PATH_H

#include <stddef.h>

// Every path buffer is this size; Linux's PATH_MAX, so a name the kernel accepts fits.
#define NSA_PATH_MAX 4096

// snprintf into out[size]; NSA_ERR with "path too long" when the result would not fit,
// so a truncated name never opens, creates or removes the wrong file.
int path_fmt(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
