// args.h: the command line of every nsa command. Options are matched exactly against a
// table (--name VALUE or --name=VALUE); numbers go through checked parsers that reject
// trailing junk, overflow and values outside a stated range; repeated options collect
// into growable lists. Every problem is one `nsa: error:` line; the caller exits with 2.
#ifndef NSA_ARGS_H
#define NSA_ARGS_H

#include <stdint.h>

typedef struct {
    const char *name;   // without the leading "--"; "" matches one positional argument
    int takes_value;
    int id;             // > 0, returned by args_next
} ArgSpec;

typedef struct {
    const char *cmd;    // for messages: "train" -> "nsa train --help"
    int argc, i;
    char **argv;
} ArgIter;

#define ARGS_END 0
#define ARGS_BAD (-1)

// argv[0] is the command's own name (as main passes it), options start at argv[1].
void args_begin(ArgIter *it, int argc, char **argv);
// The next option's id and, for options with a value, *value; ARGS_END after the last;
// ARGS_BAD after an error line (unknown option, missing or unexpected value, stray argument).
// specs ends with an entry whose name is NULL.
int args_next(ArgIter *it, const ArgSpec *specs, const char **value);

// Checked numbers; NSA_ERR after e.g. "--max-tokens: 'abc' is not an integer in [0, 1000000]".
int args_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
int args_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
// Finite doubles in [lo, hi] (hi = INFINITY: no upper bound), and in (lo, hi).
int args_f64(const char *opt, const char *s, double lo, double hi, double *out);
int args_f64_open(const char *opt, const char *s, double lo, double hi, double *out);
// Comma list of integers in [lo, hi], at most max of them, into out[0..*n).
int args_i64_list(const char *opt, const char *s, int64_t lo, int64_t hi, int max, int *out, int *n);

// Values of a repeated option (--set), in order; grows as needed.
typedef struct {
    const char **v;
    int n, cap;
} ArgList;

void arglist_push(ArgList *l, const char *s);
void arglist_free(ArgList *l);

#endif
