// test_atomic.c: data/atomic.h, the one path for files written whole: a commit replaces
// the target and leaves no temporary; every failure (cannot create, cannot write, cannot
// rename) leaves the previous file byte for byte, removes the temporary and reports one
// line naming the path and the reason. The same holds through HDF5 (checkpoints), and
// a run directory's stale temporaries are recognised and removed.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/atomic.h"
#include "data/checkpoint.h"
#include "kernels/common.h"
#include "model/model.h"
#include "tests/testutil.h"
#include "train/rundir.h"

static char dir[256];

static void setup(void) {
    tu_mkdtemp(dir, sizeof dir, "nsa_atomic_");
    cr_redirect_stderr();
}

static void teardown(void) { tu_rm_rf(dir); }

static const char *stderr_text(void) {
    static char buf[4096];
    fflush(stderr);
    size_t n = fread(buf, 1, sizeof buf - 1, cr_get_redirected_stderr());
    buf[n] = 0;
    return buf;
}

static char *slurp(const char *path) {
    static char buf[1 << 16];
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot read %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

// Directory entries that are temporaries of data/atomic.h.
static int count_tmp(const char *d) {
    DIR *dd = opendir(d);
    cr_assert(dd);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dd))) n += atomic_is_tmp_name(e->d_name);
    closedir(dd);
    return n;
}

// Writes beyond this many bytes fail with EFBIG (SIGXFSZ ignored): a full disk, on demand.
// Only the soft limit moves, so unlimit_file_size can lift it again before Criterion's
// own teardown writes its report.
static void limit_file_size(rlim_t bytes) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit r;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &r), 0);
    r.rlim_cur = bytes;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &r), 0);
}

static void unlimit_file_size(void) {
    struct rlimit r;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &r), 0);
    r.rlim_cur = r.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &r), 0);
}

Test(atomic, write_then_replace, .init = setup, .fini = teardown) {
    char p[300];
    snprintf(p, sizeof p, "%s/f.txt", dir);
    cr_assert_eq(atomic_write(p, "first\n", 6), NSA_OK);
    cr_assert_str_eq(slurp(p), "first\n");
    AtomicFile a;
    cr_assert_eq(atomic_open(&a, p), NSA_OK);
    fprintf(a.f, "second %d\n", 2);
    cr_assert_str_eq(slurp(p), "first\n", "the target changed before the commit");
    cr_assert_eq(atomic_commit(&a), NSA_OK);
    cr_assert_str_eq(slurp(p), "second 2\n");
    cr_assert_eq(count_tmp(dir), 0);
    cr_assert_eq(atomic_open(&a, p), NSA_OK);
    fputs("abandoned\n", a.f);
    atomic_abort(&a);
    cr_assert_str_eq(slurp(p), "second 2\n");
    cr_assert_eq(count_tmp(dir), 0);
    cr_assert_str_empty(stderr_text());
}

Test(atomic, failed_write_keeps_previous, .init = setup, .fini = teardown) {
    char p[300];
    snprintf(p, sizeof p, "%s/f.txt", dir);
    cr_assert_eq(atomic_write(p, "previous\n", 9), NSA_OK);
    limit_file_size(1000);
    static char big[100000];
    memset(big, 'x', sizeof big);
    cr_assert_eq(atomic_write(p, big, sizeof big), NSA_ERR);
    unlimit_file_size();
    cr_assert_str_eq(slurp(p), "previous\n");
    cr_assert_eq(count_tmp(dir), 0, "the temporary was left behind");
    const char *err = stderr_text();
    char want[400];
    snprintf(want, sizeof want, "nsa: error: cannot write %s: File too large\n", p);
    cr_assert_str_eq(err, want);
}

// The stream's buffer hides write errors until the commit flushes it: commit must catch them.
Test(atomic, failed_stream_commit_keeps_previous, .init = setup, .fini = teardown) {
    char p[300];
    snprintf(p, sizeof p, "%s/f.txt", dir);
    cr_assert_eq(atomic_write(p, "previous\n", 9), NSA_OK);
    limit_file_size(100);
    AtomicFile a;
    cr_assert_eq(atomic_open(&a, p), NSA_OK);
    for (int i = 0; i < 100; i++) fprintf(a.f, "line %d\n", i);
    cr_assert_eq(atomic_commit(&a), NSA_ERR);
    unlimit_file_size();
    cr_assert_str_eq(slurp(p), "previous\n");
    cr_assert_eq(count_tmp(dir), 0);
    cr_assert(strstr(stderr_text(), "File too large"));
}

Test(atomic, failed_rename_and_create, .init = setup, .fini = teardown) {
    char p[300], inner[400];
    snprintf(p, sizeof p, "%s/adir", dir);  // a non-empty directory cannot be replaced by a file
    mkdir(p, 0777);
    snprintf(inner, sizeof inner, "%s/keep", p);
    cr_assert_eq(atomic_write(inner, "kept\n", 5), NSA_OK);
    cr_assert_eq(atomic_write(p, "file\n", 5), NSA_ERR);
    cr_assert_str_eq(slurp(inner), "kept\n");
    cr_assert_eq(count_tmp(dir), 0);
    char missing[400];
    snprintf(missing, sizeof missing, "%s/no/such/dir/f.txt", dir);
    cr_assert_eq(atomic_write(missing, "x", 1), NSA_ERR);
    char want[1200];
    snprintf(want, sizeof want,
             "nsa: error: cannot replace %s: Is a directory\n"
             "nsa: error: cannot write %s: No such file or directory\n",
             p, missing);
    cr_assert_str_eq(stderr_text(), want);
}

// HDF5 writers go through the same path: a checkpoint whose write fails half way leaves
// the previous checkpoint loadable and no temporary.
Test(atomic, failed_checkpoint_keeps_previous, .init = setup, .fini = teardown) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "tiny"), NSA_OK);
    cr_assert_eq(config_validate(&c), NSA_OK);
    Model m;
    model_create(&m, &c);
    model_init_params(&m, 1);
    char p[300];
    snprintf(p, sizeof p, "%s/ckpt.h5", dir);
    cr_assert_eq(ckpt_save(p, &m, NULL, NULL, NULL), NSA_OK);
    float first = m.data[0];
    m.data[0] += 1.0f;
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0);
    limit_file_size((rlim_t)sb.st_size / 2);
    cr_assert_eq(ckpt_save(p, &m, NULL, NULL, NULL), NSA_ERR);
    unlimit_file_size();
    cr_assert_eq(count_tmp(dir), 0);
    Model r;
    cr_assert_eq(ckpt_load(p, &r), NSA_OK, "the previous checkpoint no longer loads");
    cr_assert_eq(r.data[0], first);
    cr_assert(strstr(stderr_text(), "ckpt.h5"));
    model_free(&r);
    model_free(&m);
}

Test(atomic, temporary_names_and_cleanup, .init = setup, .fini = teardown) {
    cr_assert(atomic_is_tmp_name("ckpt_00000004.h5.tmp.12345"));
    cr_assert(atomic_is_tmp_name("latest.tmp.1"));
    cr_assert(atomic_is_tmp_name("a.tmp.x.tmp.7"));
    cr_assert(!atomic_is_tmp_name("ckpt_00000004.h5"));
    cr_assert(!atomic_is_tmp_name("notes.tmp"));
    cr_assert(!atomic_is_tmp_name("a.tmp.12x"));
    cr_assert(!atomic_is_tmp_name("a.tmp."));
    cr_assert(!atomic_is_tmp_name(".tmp.5"));
    const char *names[] = {"ckpt_00000004.h5.tmp.999", "latest.tmp.1000", "ckpt_00000004.h5", "log.jsonl"};
    for (int i = 0; i < 4; i++) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        fclose(f);
    }
    rundir_remove_tmp(dir);
    for (int i = 0; i < 4; i++) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        cr_expect_eq(access(p, F_OK) == 0, i >= 2, "%s", names[i]);
    }
}
