// test_layers.c: scripts/check-layers.sh, the include-direction check `make test` runs
// first: the repository passes, and a tree with includes against the direction fails,
// naming every offending file, line and include (so the check can fail at all).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tests/testutil.h"

static int run_check(const char *root, char *out, size_t size) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "scripts/check-layers.sh %s 2>&1", root);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void put(const char *root, const char *path, const char *text) {
    char p[600], d[600];
    snprintf(p, sizeof p, "%s/%s", root, path);
    snprintf(d, sizeof d, "%s", p);
    *strrchr(d, '/') = 0;
    mkdir(d, 0777);
    FILE *f = fopen(p, "w");
    cr_assert(f, "cannot write %s", p);
    fputs(text, f);
    fclose(f);
}

Test(layers, repository_passes) {
    char out[8192];
    int rc = run_check(".", out, sizeof out);
    cr_assert_eq(rc, 0, "scripts/check-layers.sh failed on the repository:\n%s", out);
    cr_assert_str_empty(out);
}

Test(layers, includes_against_the_direction_fail) {
    char root[256], out[8192];
    tu_mkdtemp(root, sizeof root, "nsa_layers_");
    // Allowed: downward and sideways within a folder, data from train, anything from cmd.
    put(root, "kernels/k.h", "#include \"kernels/common.h\"\n");
    put(root, "autograd/a.c", "#include \"kernels/k.h\"\n#include <stdio.h>\n");
    put(root, "data/d.c", "#include \"model/m.h\"\n");
    put(root, "train/t.c", "#include \"data/d.h\"\n");
    put(root, "cmd/c.c", "#include \"train/t.h\"\n#include \"eval/e.h\"\n");
    cr_assert_eq(run_check(root, out, sizeof out), 0, "a well-layered tree failed:\n%s", out);
    // Against the direction: up, and sideways between train and eval.
    put(root, "kernels/up.c", "#include \"autograd/graph.h\"\n");
    put(root, "model/m.c", "#include \"model/m.h\"\n  #  include \"train/t.h\"\n");
    put(root, "eval/e.c", "#include \"train/watchdog.h\"\n");
    put(root, "data/d2.c", "#include \"eval/e.h\"\n");
    put(root, "main.c", "int main(void) { return 0; }\n");
    int rc = run_check(root, out, sizeof out);
    cr_assert_eq(rc, 1, "exit %d:\n%s", rc, out);
    const char *want[] = {"kernels/up.c:1: includes \"autograd/graph.h\"", "model/m.c:2: includes \"train/t.h\"",
                          "eval/e.c:1: includes \"train/watchdog.h\"", "data/d2.c:1: includes \"eval/e.h\"",
                          "main.c: not in a known layer folder"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_expect(strstr(out, want[i]), "no '%s' in:\n%s", want[i], out);
    cr_expect_eq(tu_count_lines(out), 5, "one line per problem, got:\n%s", out);
    tu_rm_rf(root);
}
