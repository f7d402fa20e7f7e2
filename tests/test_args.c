// test_args.c: the command-line parsers of cmd/args.h: exact option matching, values
// after a space or '=', positional arguments only where a command takes one, and numbers
// that reject trailing junk, overflow, non-finite values and anything out of range, each
// with one error line naming option, value and range.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cmd/args.h"
#include "kernels/common.h"

// What the code under test printed on stderr so far (the suite redirects it).
static const char *stderr_text(void) {
    static char buf[4096];
    fflush(stderr);
    size_t n = fread(buf, 1, sizeof buf - 1, cr_get_redirected_stderr());
    buf[n] = 0;
    return buf;
}

enum { O_A = 1, O_FLAG, O_POS };
static const ArgSpec specs[] = {{"alpha", 1, O_A}, {"flag", 0, O_FLAG}, {NULL, 0, 0}};

Test(args, options_values_and_flags, .init = cr_redirect_stderr) {
    char *argv[] = {"cmd", "--alpha", "1", "--flag", "--alpha=x=y", "--alpha", "--flag", NULL};
    ArgIter it;
    args_begin(&it, 7, argv);
    const char *v;
    cr_assert_eq(args_next(&it, specs, &v), O_A);
    cr_assert_str_eq(v, "1");
    cr_assert_eq(args_next(&it, specs, &v), O_FLAG);
    cr_assert_null(v);
    cr_assert_eq(args_next(&it, specs, &v), O_A);
    cr_assert_str_eq(v, "x=y");  // only the first '=' separates
    cr_assert_eq(args_next(&it, specs, &v), O_A);
    cr_assert_str_eq(v, "--flag", "a value may look like an option");
    cr_assert_eq(args_next(&it, specs, &v), ARGS_END);
    cr_assert_str_empty(stderr_text());
}

Test(args, bad_options_are_one_line_errors, .init = cr_redirect_stderr) {
    static const char *cases[][2] = {{"--alph", "cmd: unknown option '--alph' (nsa cmd --help)\n"},
                                     {"--alphabet=3", "cmd: unknown option '--alphabet' (nsa cmd --help)\n"},
                                     {"-a", "cmd: unexpected argument '-a' (nsa cmd --help)\n"},
                                     {"word", "cmd: unexpected argument 'word' (nsa cmd --help)\n"},
                                     {"--flag=1", "cmd: --flag takes no value\n"},
                                     {"--alpha", "cmd: --alpha needs a value\n"}};
    char want[4096] = "";
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *argv[] = {"cmd", (char *)cases[i][0], NULL};
        ArgIter it;
        args_begin(&it, 2, argv);
        const char *v;
        cr_assert_eq(args_next(&it, specs, &v), ARGS_BAD, "%s was accepted", cases[i][0]);
        strcat(want, "nsa: error: ");
        strcat(want, cases[i][1]);
    }
    cr_assert_str_eq(stderr_text(), want);
}

Test(args, positional_only_where_declared) {
    static const ArgSpec with_pos[] = {{"", 1, O_POS}, {"flag", 0, O_FLAG}, {NULL, 0, 0}};
    char *argv[] = {"bench", "kernels", "--flag", NULL};
    ArgIter it;
    args_begin(&it, 3, argv);
    const char *v;
    cr_assert_eq(args_next(&it, with_pos, &v), O_POS);
    cr_assert_str_eq(v, "kernels");
    cr_assert_eq(args_next(&it, with_pos, &v), O_FLAG);
    cr_assert_eq(args_next(&it, with_pos, &v), ARGS_END);
}

Test(args, integers, .init = cr_redirect_stderr) {
    int64_t x = 7;
    cr_assert_eq(args_i64("--n", "42", 0, 100, &x), NSA_OK);
    cr_assert_eq(x, 42);
    cr_assert_eq(args_i64("--n", "-5", -5, 5, &x), NSA_OK);
    cr_assert_eq(x, -5);
    cr_assert_eq(args_i64("--n", "9223372036854775807", 0, INT64_MAX, &x), NSA_OK);
    cr_assert_eq(x, INT64_MAX);
    static const char *bad[] = {"", "abc", "12x", "1.5", " 3", "101", "-1", "9223372036854775808", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        x = 7;
        cr_assert_eq(args_i64("--n", bad[i], 0, 100, &x), NSA_ERR, "'%s' was accepted", bad[i]);
        cr_assert_eq(x, 7, "'%s' changed the output", bad[i]);
    }
    uint64_t u;
    cr_assert_eq(args_u64("--seed", "18446744073709551615", 0, UINT64_MAX, &u), NSA_OK);
    cr_assert_eq(u, UINT64_MAX);
    cr_assert_eq(args_u64("--seed", "-1", 0, UINT64_MAX, &u), NSA_ERR, "strtoull's wrap-around of -1");
    cr_assert_eq(args_u64("--seed", "18446744073709551616", 0, UINT64_MAX, &u), NSA_ERR);
    const char *err = stderr_text();
    cr_assert(strstr(err, "nsa: error: --n: 'abc' is not an integer in [0, 100]\n"), "%s", err);
    cr_assert(strstr(err, "nsa: error: --seed: '-1' is not an integer in [0, 18446744073709551615]\n"), "%s", err);
    cr_assert_eq(strlen(err) > 0 && err[strlen(err) - 1] == '\n', 1);
}

Test(args, doubles, .init = cr_redirect_stderr) {
    double x = 7;
    cr_assert_eq(args_f64("--t", "0", 0, INFINITY, &x), NSA_OK);
    cr_assert_eq(x, 0);
    cr_assert_eq(args_f64("--t", "1e3", 0, INFINITY, &x), NSA_OK);
    cr_assert_eq(x, 1000);
    cr_assert_eq(args_f64_open("--f", "0.05", 0, 1, &x), NSA_OK);
    cr_assert_eq(x, 0.05);
    static const char *bad[] = {"", "x", "1s", "nan", "inf", "-inf", "1e999", "-0.5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(args_f64("--t", bad[i], 0, INFINITY, &x), NSA_ERR, "'%s' was accepted", bad[i]);
    cr_assert_eq(args_f64_open("--f", "0", 0, 1, &x), NSA_ERR, "an open interval excludes its ends");
    cr_assert_eq(args_f64_open("--f", "1", 0, 1, &x), NSA_ERR);
    cr_assert_eq(args_f64("--c", "1", 0, 1, &x), NSA_OK, "a closed interval includes them");
    const char *err = stderr_text();
    cr_assert(strstr(err, "nsa: error: --t: 'nan' is not a number in [0, inf)\n"), "%s", err);
    cr_assert(strstr(err, "nsa: error: --f: '0' is not a number in (0, 1)\n"), "%s", err);
}

Test(args, integer_lists, .init = cr_redirect_stderr) {
    int v[4], n = -1;
    cr_assert_eq(args_i64_list("--l", "1,12", 1, 64, 4, v, &n), NSA_OK);
    cr_assert_eq(n, 2);
    cr_assert(v[0] == 1 && v[1] == 12);
    cr_assert_eq(args_i64_list("--l", "5", 1, 64, 4, v, &n), NSA_OK);
    cr_assert_eq(n, 1);
    static const char *bad[] = {"", ",", "1,", ",1", "1,,2", "1,x", "0", "65", "1,2,3,4,5",
                                "000000000000000000000000000000000001"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(args_i64_list("--l", bad[i], 1, 64, 4, v, &n), NSA_ERR, "'%s' was accepted", bad[i]);
    const char *err = stderr_text();
    cr_assert(strstr(err, "nsa: error: --l: '1,2,3,4,5' has more than 4 entries\n"), "%s", err);
}

// No silent limit: a thousand values, all kept in order.
Test(args, list_grows) {
    static char vals[1000][12];
    ArgList l = {0};
    for (int i = 0; i < 1000; i++) {
        snprintf(vals[i], sizeof vals[i], "%d", i);
        arglist_push(&l, vals[i]);
    }
    cr_assert_eq(l.n, 1000);
    for (int i = 0; i < 1000; i++) cr_assert_eq(l.v[i], vals[i]);
    arglist_free(&l);
    cr_assert_eq(l.n, 0);
    cr_assert_null(l.v);
}
