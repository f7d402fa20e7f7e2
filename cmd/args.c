// args.c: see args.h. Unlike getopt_long: no abbreviations (--conf is not --config), no
// argument permutation, no global state, and the errors are nsa's one-line kind.
#include "cmd/args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

void args_begin(ArgIter *it, int argc, char **argv) {
    it->cmd = argc > 0 ? argv[0] : "nsa";
    it->argc = argc;
    it->argv = argv;
    it->i = 1;
}

int args_next(ArgIter *it, const ArgSpec *specs, const char **value) {
    *value = NULL;
    if (it->i >= it->argc) return ARGS_END;
    const char *arg = it->argv[it->i++];
    if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
        for (const ArgSpec *s = specs; s->name; s++)
            if (!s->name[0]) {
                *value = arg;
                return s->id;
            }
        nsa_error("%s: unexpected argument '%s' (nsa %s --help)", it->cmd, arg, it->cmd);
        return ARGS_BAD;
    }
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    for (const ArgSpec *s = specs; s->name; s++) {
        if (!s->name[0] || strlen(s->name) != len || strncmp(s->name, name, len)) continue;
        if (!s->takes_value) {
            if (eq) {
                nsa_error("%s: --%s takes no value", it->cmd, s->name);
                return ARGS_BAD;
            }
            return s->id;
        }
        if (eq) *value = eq + 1;
        else if (it->i < it->argc) *value = it->argv[it->i++];
        else {
            nsa_error("%s: --%s needs a value", it->cmd, s->name);
            return ARGS_BAD;
        }
        return s->id;
    }
    nsa_error("%s: unknown option '%.*s' (nsa %s --help)", it->cmd, (int)len + 2, arg, it->cmd);
    return ARGS_BAD;
}

int args_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    // strtoll skips leading blanks; a number on the command line has none.
    if (end == s || *end || errno == ERANGE || *s == ' ' || *s == '\t' || v < lo || v > hi) {
        nsa_error("%s: '%s' is not an integer in [%lld, %lld]", opt, s, (long long)lo, (long long)hi);
        return NSA_ERR;
    }
    *out = v;
    return NSA_OK;
}

int args_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    errno = 0;
    // strtoull accepts "-1" as 2^64 - 1: only digits are a non-negative integer.
    unsigned long long v = *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
    if (!(*s >= '0' && *s <= '9') || *end || errno == ERANGE || v < lo || v > hi) {
        nsa_error("%s: '%s' is not an integer in [%llu, %llu]", opt, s, (unsigned long long)lo,
                  (unsigned long long)hi);
        return NSA_ERR;
    }
    *out = v;
    return NSA_OK;
}

static int parse_f64(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return end != s && !*end && *s != ' ' && *s != '\t' && errno != ERANGE && isfinite(*v);
}

static void range_error(const char *opt, const char *s, char open, double lo, double hi, char close) {
    if (isinf(hi)) nsa_error("%s: '%s' is not a number in %c%g, inf)", opt, s, open, lo);
    else nsa_error("%s: '%s' is not a number in %c%g, %g%c", opt, s, open, lo, hi, close);
}

int args_f64(const char *opt, const char *s, double lo, double hi, double *out) {
    double v;
    if (!parse_f64(s, &v) || v < lo || v > hi) {
        range_error(opt, s, '[', lo, hi, ']');
        return NSA_ERR;
    }
    *out = v;
    return NSA_OK;
}

int args_f64_open(const char *opt, const char *s, double lo, double hi, double *out) {
    double v;
    if (!parse_f64(s, &v) || v <= lo || v >= hi) {
        range_error(opt, s, '(', lo, hi, ')');
        return NSA_ERR;
    }
    *out = v;
    return NSA_OK;
}

int args_i64_list(const char *opt, const char *s, int64_t lo, int64_t hi, int max, int *out, int *n) {
    *n = 0;
    const char *p = s;
    do {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        int64_t v;
        if (*n == max) {
            nsa_error("%s: '%s' has more than %d entries", opt, s, max);
            return NSA_ERR;
        }
        if (len >= sizeof item) {
            nsa_error("%s: '%.*s' is not an integer in [%lld, %lld]", opt, (int)len, p, (long long)lo, (long long)hi);
            return NSA_ERR;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (args_i64(opt, item, lo, hi, &v) != NSA_OK) return NSA_ERR;
        out[(*n)++] = (int)v;
        p = comma ? comma + 1 : NULL;
    } while (p);
    return NSA_OK;
}

void arglist_push(ArgList *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = realloc(l->v, (size_t)l->cap * sizeof *l->v);
        NSA_ASSERT(l->v);
    }
    l->v[l->n++] = s;
}

void arglist_free(ArgList *l) {
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}
