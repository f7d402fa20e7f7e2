// path.c: see path.h.
#include "data/path.h"

#include <stdarg.h>
#include <stdio.h>

#include "kernels/common.h"

int path_fmt(char *out, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        nsa_error("path too long (%d bytes, at most %zu): %.80s...", n, size - 1, out);
        if (size) out[0] = '\0';
        return NSA_ERR;
    }
    return NSA_OK;
}
