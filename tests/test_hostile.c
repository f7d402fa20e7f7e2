// test_hostile.c: hostile files and flags (issue 13). Every case here crashed, hit an
// assertion, allocated without bound or gave a silent wrong answer before the hardening;
// each must now end with one `nsa: error:` line and a non-zero exit (never a signal).
// Files are made with `nsa init` / `nsa prepare` and then damaged through the raw HDF5 C
// API, so the tests depend only on the file formats, not on the program's own helpers.
#include <criterion/criterion.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/attention.h"

static const char *bin(void) {
    const char *b = getenv("NSA_BIN");
    return b ? b : "build/nsa";
}

static char dir[64];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/nsa_hostile.%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", dir, dir);
    cr_assert_eq(system(cmd), 0);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void remove_dir(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

// Runs `sh -c "exec nsa ARGS"` in the test directory, stderr through a pipe (so a file-size
// limit does not cut it); returns the exit status, or 128 + the signal that ended nsa.
// fsize_limit >= 0 sets RLIMIT_FSIZE (bytes) for nsa: a disk that fills part-way.
static int run_limited(long fsize_limit, const char *args, char *err, size_t n) {
    char *abs = realpath(bin(), NULL);
    cr_assert(abs, "cannot find %s", bin());
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "exec %s %s >/dev/null", abs, args);
    free(abs);
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        if (chdir(dir) != 0) _exit(99);
        if (fsize_limit >= 0) {
            struct rlimit rl = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(98);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    char sink[4096];
    while ((r = read(fd[0], got < n - 1 ? err + got : sink, got < n - 1 ? n - 1 - got : sizeof sink)) > 0)
        if (got < n - 1) got += (size_t)r;
    close(fd[0]);
    err[got] = 0;
    int st;
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

static int run(const char *args, char *err, size_t n) { return run_limited(-1, args, err, n); }

static int lines(const char *s) {
    int k = 0;
    for (; *s; s++) k += *s == '\n';
    return k;
}

// One `nsa: error:` line containing `needle` (NULL: any), a non-zero exit, no signal.
static void expect_error_with(long fsize_limit, const char *args, const char *needle) {
    char err[16384];
    int rc = run_limited(fsize_limit, args, err, sizeof err);
    cr_expect(rc != 0 && rc < 128, "nsa %s: exit %d (want an error exit, no crash); stderr: %s", args, rc, err);
    const char *e = strstr(err, "nsa: error: ");
    cr_expect(e != NULL, "nsa %s: no 'nsa: error:' line; stderr: '%s'", args, err);
    cr_expect(!needle || strstr(err, needle), "nsa %s: stderr '%s' lacks '%s'", args, err, needle);
    cr_expect(!strstr(err, "HDF5-DIAG") && !strstr(err, "AddressSanitizer") && !strstr(err, "runtime error"),
              "nsa %s: library or sanitizer output: %s", args, err);
    cr_expect(lines(err) <= 3, "nsa %s: %d lines of stderr: %s", args, lines(err), err);
}

static void expect_error(const char *args, const char *needle) { expect_error_with(-1, args, needle); }

static void must_run(const char *args) {
    char err[16384];
    int rc = run(args, err, sizeof err);
    cr_assert_eq(rc, 0, "nsa %s failed (%d): %s", args, rc, err);
}

static void write_text(const char *name, int bytes) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < bytes; i++) fputc("In the beginning God created the heaven and the earth.\n"[i % 55], f);
    fclose(f);
}

static void path_of(char *out, size_t n, const char *name) {
    int w = snprintf(out, n, "%s/%s", dir, name);
    cr_assert(w > 0 && (size_t)w < n, "path too long: %s/%s", dir, name);
}

// A tiny checkpoint and a dataset for it.
static void make_ckpt_and_data(void) {
    write_text("text.txt", 30000);
    must_run("prepare --text text.txt --out data.h5");
    must_run("init --config tiny --seed 5 --out ckpt.h5");
}

// Replaces attribute `name` of object `obj` in `file` by an int64 array of `n` values.
static void attr_as_i64_array(const char *file, const char *obj, const char *name, int n) {
    char path[256];
    path_of(path, sizeof path, file);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    cr_assert(o >= 0, "%s has no %s", file, obj);
    if (H5Aexists(o, name) > 0) H5Adelete(o, name);
    hsize_t d = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(o, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    int64_t v[64];
    for (int i = 0; i < n; i++) v[i] = 64 + i;
    cr_assert(n <= 64 && H5Awrite(a, H5T_NATIVE_INT64, v) >= 0);
    H5Aclose(a), H5Sclose(s), H5Oclose(o), H5Fclose(f);
}

// Replaces attribute `name` by an array of `n` fixed-length strings.
static void attr_as_str_array(const char *file, const char *obj, const char *name, int n) {
    char path[256];
    path_of(path, sizeof path, file);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    if (H5Aexists(o, name) > 0) H5Adelete(o, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 600);
    hsize_t d = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(o, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    char *buf = calloc((size_t)n, 600);
    for (int i = 0; i < n; i++) memset(buf + i * 600, 'x', 599);
    cr_assert(H5Awrite(a, t, buf) >= 0);
    free(buf);
    H5Aclose(a), H5Sclose(s), H5Tclose(t), H5Oclose(o), H5Fclose(f);
}

static void set_i64_attr(const char *file, const char *obj, const char *name, int64_t v) {
    char path[256];
    path_of(path, sizeof path, file);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    cr_assert(o >= 0);
    if (H5Aexists(o, name) > 0) H5Adelete(o, name);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a), H5Sclose(s), H5Oclose(o), H5Fclose(f);
}

// ---------------------------------------------------------------- attributes that are arrays

Test(hostile, config_attribute_stored_as_array, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    attr_as_i64_array("ckpt.h5", "config", "d_model", 32);
    expect_error("eval --ckpt ckpt.h5 --data data.h5", "d_model");
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 4", "d_model");
    expect_error("trace --ckpt ckpt.h5 --data data.h5 --out t.h5", "d_model");
}

Test(hostile, config_string_attribute_stored_as_array, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    attr_as_str_array("ckpt.h5", "config", "attn", 8);
    expect_error("eval --ckpt ckpt.h5 --data data.h5", "attn");
}

Test(hostile, dataset_attributes_stored_as_arrays, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    must_run("prepare --text text.txt --out data2.h5");
    attr_as_i64_array("data.h5", "/", "vocab_size", 16);
    expect_error("eval --ckpt ckpt.h5 --data data.h5", "vocab_size");
    attr_as_str_array("data2.h5", "/", "tokenizer", 16);
    expect_error("eval --ckpt ckpt.h5 --data data2.h5", "tokenizer");
}

Test(hostile, state_attributes_stored_as_arrays_or_negative, .init = make_dir, .fini = remove_dir, .timeout = 120) {
    write_text("text.txt", 60000);
    must_run("prepare --text text.txt --out data.h5");
    must_run("train --config tiny --set data=data.h5 --set steps=2 --set ckpt_every=2 --set eval_every=0 "
             "--set batch_size=1 --set run_dir=run");
    char ck[256];
    FILE *f = fopen(strcat(strcpy(ck, dir), "/run/latest"), "r");
    cr_assert(f);
    char name[128] = {0};
    cr_assert(fgets(name, sizeof name, f));
    fclose(f);
    name[strcspn(name, "\n")] = 0;
    char rel[200];
    snprintf(rel, sizeof rel, "run/%s", name);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/%s %s/keep.h5", dir, rel, dir);
    cr_assert_eq(system(cmd), 0);
    attr_as_i64_array(rel, "state", "rng", 40);
    expect_error("train --resume run", "rng");
    snprintf(cmd, sizeof cmd, "cp %s/keep.h5 %s/%s", dir, dir, rel);
    cr_assert_eq(system(cmd), 0);
    attr_as_i64_array(rel, "state", "step", 8);
    expect_error("train --resume run", "step");
    snprintf(cmd, sizeof cmd, "cp %s/keep.h5 %s/%s", dir, dir, rel);
    cr_assert_eq(system(cmd), 0);
    set_i64_attr(rel, "state", "step", -3);
    expect_error("train --resume run", "step");
}

// ---------------------------------------------------------------- flags

Test(hostile, integer_flags_are_checked, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 4611686018427387904", "--max-tokens");
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 9223372036854775807", "--max-tokens");
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 12abc", "--max-tokens");
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens -1", "--max-tokens");
    expect_error("generate --ckpt ckpt.h5 --prompt In --temperature nan", "--temperature");
    expect_error("generate --ckpt ckpt.h5 --prompt In --seed x", "--seed");
    expect_error("init --config tiny --seed 99999999999999999999999 --out x.h5", "--seed");
    expect_error("prepare --text text.txt --out d.h5 --val-fraction 2", "--val-fraction");
    expect_error("prepare --text text.txt --out d.h5 --val-fraction abc", "--val-fraction");
    expect_error("trace --ckpt ckpt.h5 --data data.h5 --out t.h5 --batch 0", "--batch");
    expect_error("hangcheck --seq 64,abc", "--seq");
    expect_error("hangcheck --timeout -1", "--timeout");
}

Test(hostile, every_set_option_counts, .init = make_dir, .fini = remove_dir) {
    // Options after the 64th --set were dropped: the bad value at the end went unseen.
    char args[4096] = "init --config tiny --out x.h5";
    for (int i = 0; i < 70; i++) strcat(args, " --set seed=1");
    strcat(args, " --set d_model=abc");
    expect_error(args, "d_model");
}

Test(hostile, run_name_cannot_escape_runs, .init = make_dir, .fini = remove_dir) {
    write_text("text.txt", 30000);
    must_run("prepare --text text.txt --out data.h5");
    expect_error("train --config tiny --set data=data.h5 --name ..", "--name");
    expect_error("train --config tiny --set data=data.h5 --name a/b", "--name");
    expect_error("train --config tiny --set data=data.h5 --name ''", "--name");
}

// ---------------------------------------------------------------- config sizes and text

Test(hostile, config_sizes_are_bounded, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    expect_error("init --config tiny --set d_model=1000000000 --set n_heads=4 --out x.h5", "d_model");
    expect_error("init --config tiny --set seq_len=2147483648 --out x.h5", "seq_len");
    expect_error("init --config tiny --set ffn_dim=288230376151711744 --out x.h5", "ffn_dim");
    expect_error("init --config tiny --set slc_topn=1099511627776 --out x.h5", "slc_topn");
    expect_error("init --config tiny --set vocab_size=100000000 --out x.h5", "vocab_size");
    expect_error("init --config tiny --set n_layers=100000 --out x.h5", "n_layers");
    expect_error("init --config tiny --set batch_size=1000000000 --out x.h5", "batch_size");
    // Each fits alone; together they exceed the parameter budget.
    expect_error("init --config tiny --set d_model=16384 --set n_heads=128 --set n_kv_heads=128 --set head_dim=128 "
                 "--set ffn_dim=65536 --set n_layers=64 --set gate_hidden=16384 --out x.h5",
                 "parameters");
}

Test(hostile, checkpoint_config_sizes_are_bounded, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    make_ckpt_and_data();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/ckpt.h5 %s/ckpt2.h5", dir, dir);
    cr_assert_eq(system(cmd), 0);
    set_i64_attr("ckpt.h5", "config", "slc_topn", (int64_t)1 << 40);
    expect_error("eval --ckpt ckpt.h5 --data data.h5", "slc_topn");
    set_i64_attr("ckpt2.h5", "config", "ffn_dim", (int64_t)1 << 58);
    expect_error("eval --ckpt ckpt2.h5 --data data.h5", "ffn_dim");
}

Test(hostile, long_config_line_is_an_error, .init = make_dir, .fini = remove_dir) {
    char path[256];
    path_of(path, sizeof path, "long.cfg");
    FILE *f = fopen(path, "w");
    fputs("vocab_size = 256\nd_model = 64\nn_layers = 2\nn_heads = 4\nn_kv_heads = 2\nhead_dim = 16\n"
          "ffn_dim = 192\nseq_len = 128\nattn = nsa\ncmp_block = 16\ncmp_stride = 8\nslc_block = 16\n"
          "slc_topn = 4\nwindow = 32\n# ",
          f);
    for (int i = 0; i < 1100; i++) fputc('x', f);
    fputs("\nd_model = 32\n", f);
    fclose(f);
    expect_error("init --config long.cfg --out x.h5", "long");
}

Test(hostile, config_directory_is_an_error, .init = make_dir, .fini = remove_dir) {
    char path[256];
    path_of(path, sizeof path, "cfgdir");
    cr_assert_eq(mkdir(path, 0755), 0);
    expect_error("init --config cfgdir --out x.h5", "cfgdir");
    expect_error("init --config ./cfgdir/ --out x.h5", "cfgdir");
}

// ---------------------------------------------------------------- datasets

static void write_dataset_file(const char *name, hid_t type, const void *train, hsize_t n, hsize_t declared,
                               int64_t vocab) {
    char path[256];
    path_of(path, sizeof path, name);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    for (int k = 0; k < 2; k++) {
        hsize_t d = k ? n : declared, chunk = 1024;
        hid_t s = H5Screate_simple(1, &d, NULL);
        hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(pl, 1, &chunk);
        hid_t ds = H5Dcreate2(f, k ? "val" : "train", type, s, H5P_DEFAULT, pl, H5P_DEFAULT);
        hsize_t start = 0;
        hid_t fs = H5Dget_space(ds);
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
        hid_t ms = H5Screate_simple(1, &n, NULL);
        cr_assert(H5Dwrite(ds, type, ms, fs, H5P_DEFAULT, train) >= 0);
        H5Sclose(ms), H5Sclose(fs), H5Dclose(ds), H5Pclose(pl), H5Sclose(s);
    }
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "vocab_size", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &vocab);
    H5Aclose(a), H5Sclose(s);
    H5Fclose(f);
}

Test(hostile, dataset_declaring_2_40_tokens, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    make_ckpt_and_data();
    static uint16_t tok[4096];
    for (int i = 0; i < 4096; i++) tok[i] = (uint16_t)(i % 200);
    write_dataset_file("huge.h5", H5T_STD_U16LE, tok, 4096, (hsize_t)1 << 40, 256);
    expect_error("eval --ckpt ckpt.h5 --data huge.h5", "huge.h5");
    expect_error("train --config tiny --set data=huge.h5 --set steps=1 --set run_dir=r", "huge.h5");
}

Test(hostile, negative_token_ids_are_an_error, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    static int16_t tok[4096];
    for (int i = 0; i < 4096; i++) tok[i] = (int16_t)(i % 200);
    tok[700] = -5;
    write_dataset_file("neg.h5", H5T_STD_I16LE, tok, 4096, 4096, 256);
    expect_error("eval --ckpt ckpt.h5 --data neg.h5", "neg.h5");
}

// ---------------------------------------------------------------- parameters

static void rewrite_param(const char *file, const char *name, hid_t type, const void *data) {
    char path[256];
    path_of(path, sizeof path, file);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t g = H5Gopen2(f, "params", H5P_DEFAULT);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    hid_t s = H5Dget_space(ds);
    H5Dclose(ds);
    H5Ldelete(g, name, H5P_DEFAULT);
    ds = H5Dcreate2(g, name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(ds), H5Sclose(s), H5Gclose(g), H5Fclose(f);
}

Test(hostile, int32_parameters_are_an_error, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    static int32_t w[64];  // norm.weight is [d_model] = [64]
    for (int i = 0; i < 64; i++) w[i] = 1;
    rewrite_param("ckpt.h5", "norm.weight", H5T_NATIVE_INT32, w);
    expect_error("eval --ckpt ckpt.h5 --data data.h5", "norm.weight");
}

Test(hostile, nonfinite_weights_stop_eval_and_generate, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    static float w[64];
    for (int i = 0; i < 64; i++) w[i] = i == 7 ? NAN : 1.0f;
    rewrite_param("ckpt.h5", "norm.weight", H5T_NATIVE_FLOAT, w);
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 4", "norm.weight");
    expect_error("eval --ckpt ckpt.h5 --data data.h5", "norm.weight");
    w[7] = INFINITY;
    rewrite_param("ckpt.h5", "norm.weight", H5T_NATIVE_FLOAT, w);
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 4", "norm.weight");
}

// The file offset of dataset /params/<name>'s (first) stored block of data.
static haddr_t data_offset(hid_t f, const char *name) {
    char full[256];
    snprintf(full, sizeof full, "params/%s", name);
    hid_t ds = H5Dopen2(f, full, H5P_DEFAULT);
    cr_assert(ds >= 0);
    haddr_t off = H5Dget_offset(ds);
    if (off == HADDR_UNDEF) {  // chunked: the first chunk
        hid_t s = H5Dget_space(ds);
        hsize_t n = 0;
        cr_assert(H5Dget_num_chunks(ds, s, &n) >= 0 && n > 0);
        hsize_t coord[4];
        unsigned mask;
        hsize_t size;
        cr_assert(H5Dget_chunk_info(ds, s, 0, coord, &mask, &off, &size) >= 0);
        H5Sclose(s);
    }
    H5Dclose(ds);
    return off;
}

Test(hostile, flipped_bit_in_weights_is_detected, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    char path[256];
    path_of(path, sizeof path, "ckpt.h5");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    haddr_t off = data_offset(f, "layers.0.mlp.w1.weight");
    H5Fclose(f);
    cr_assert(off != HADDR_UNDEF);
    // Flip the top exponent bit of the 10th float: 0.02 becomes ~7e36.
    FILE *fp = fopen(path, "r+b");
    cr_assert(fp);
    long pos = (long)off + 10 * 4 + 3;
    fseek(fp, pos, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, pos, SEEK_SET);
    fputc(c ^ 0x40, fp);
    fclose(fp);
    expect_error("eval --ckpt ckpt.h5 --data data.h5", "ckpt.h5");
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 4", "ckpt.h5");
}

// ---------------------------------------------------------------- disks and run directories

Test(hostile, full_disk_while_writing_a_checkpoint, .init = make_dir, .fini = remove_dir, .timeout = 120) {
    write_text("text.txt", 60000);
    must_run("prepare --text text.txt --out data.h5");
    must_run("train --config tiny --set data=data.h5 --set steps=2 --set ckpt_every=2 --set eval_every=0 "
             "--set batch_size=1 --set run_dir=run");
    // A file-size limit below a checkpoint's size: the next checkpoint write fails part-way.
    expect_error_with(128 * 1024,
                      "train --resume run --set steps=4 --set ckpt_every=2", "ckpt");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s/run | grep -c tmp", dir);
    FILE *p = popen(cmd, "r");
    int ntmp = -1;
    cr_assert(fscanf(p, "%d", &ntmp) == 1);
    pclose(p);
    cr_expect_eq(ntmp, 0, "a temporary file was left in the run directory");
    // The previous checkpoint is intact and `latest` names it.
    must_run("eval --ckpt run/ckpt_00000002.h5 --data data.h5");
    char latest[64] = {0};
    char lp[256];
    snprintf(lp, sizeof lp, "%s/run/latest", dir);
    FILE *fl = fopen(lp, "r");
    cr_assert(fl && fgets(latest, sizeof latest, fl));
    fclose(fl);
    cr_expect(strstr(latest, "ckpt_00000002.h5"), "latest: %s", latest);
}

Test(hostile, disk_full_from_the_start, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    write_text("text.txt", 60000);
    must_run("prepare --text text.txt --out data.h5");
    expect_error_with(0, "train --config tiny --set data=data.h5 --set steps=2 --set run_dir=run", NULL);
    expect_error_with(0, "init --config tiny --out x.h5", "x.h5");
    expect_error_with(0, "prepare --text text.txt --out d2.h5", "d2.h5");
}

Test(hostile, run_directory_is_locked, .init = make_dir, .fini = remove_dir, .timeout = 120) {
    write_text("text.txt", 60000);
    must_run("prepare --text text.txt --out data.h5");
    char cmd[1024];
    char *abs = realpath(bin(), NULL);
    snprintf(cmd, sizeof cmd,
             "cd %s && (%s train --config tiny --set data=data.h5 --set steps=100000 --set ckpt_every=100000 "
             "--set eval_every=0 --set batch_size=1 --set run_dir=run >/dev/null 2>&1 & echo $! > pid)",
             dir, abs);
    free(abs);
    cr_assert_eq(system(cmd), 0);
    // Wait until the first trainer has taken the directory.
    char logp[256];
    snprintf(logp, sizeof logp, "%s/run/log.jsonl", dir);
    struct stat st;
    for (int i = 0; i < 200 && (stat(logp, &st) != 0 || st.st_size == 0); i++) usleep(50000);
    expect_error("train --config tiny --set data=data.h5 --set steps=2 --set run_dir=run", "run");
    expect_error("train --resume run --set steps=3", "run");
    snprintf(cmd, sizeof cmd, "kill -TERM $(cat %s/pid); sleep 1", dir);
    cr_assert_eq(system(cmd), 0);
}

// ---------------------------------------------------------------- kernels on non-finite input

Test(hostile, expf_of_nan_is_nan_without_undefined_behaviour) {
    // Under UBSan (make test-asan) the old code shifted a negative value here.
    cr_expect(isnan(attn_expf(NAN)));
    cr_expect_eq(attn_expf(-INFINITY), 0.0f);
    cr_expect(attn_expf(INFINITY) > 1e38f);
}

// ---------------------------------------------------------------- beyond the list

Test(hostile, trace_batch_is_bounded_by_its_logits, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    make_ckpt_and_data();
    must_run("init --config tiny --set seq_len=65536 --out long.h5");
    // 200 windows of 65536 tokens x 256 logits: 2^31.6 floats (12 GiB) refused up front.
    expect_error("trace --ckpt long.h5 --data data.h5 --out t.h5 --batch 200", "--batch");
}

Test(hostile, overflowing_activations_stop_eval_and_generate, .init = make_dir, .fini = remove_dir) {
    make_ckpt_and_data();
    // Finite weights whose product is not: the final norm's 3e38 times the embeddings
    // overflows every logit, so no token or loss is trustworthy.
    static float w[64];
    for (int i = 0; i < 64; i++) w[i] = 3e38f;
    rewrite_param("ckpt.h5", "norm.weight", H5T_NATIVE_FLOAT, w);
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 4", "not finite");
    expect_error("generate --ckpt ckpt.h5 --prompt In --max-tokens 4 --no-cache", "not finite");
    char prompts[300];
    path_of(prompts, sizeof prompts, "prompts.txt");
    FILE *f = fopen(prompts, "w");
    fputs("In the\nAnd God\n", f);
    fclose(f);
    expect_error("generate --ckpt ckpt.h5 --prompts prompts.txt --max-tokens 4", "not finite");
    expect_error("eval --ckpt ckpt.h5 --data data.h5 --windows 2", "not finite");
}

Test(hostile, run_names_that_hide_or_look_like_options, .init = make_dir, .fini = remove_dir) {
    write_text("text.txt", 30000);
    must_run("prepare --text text.txt --out data.h5");
    expect_error("train --config tiny --set data=data.h5 --name .hidden", "--name");
    expect_error("train --config tiny --set data=data.h5 --name=-rf", "--name");
}

Test(hostile, a_killed_trainer_leaves_no_stale_lock, .init = make_dir, .fini = remove_dir, .timeout = 120) {
    write_text("text.txt", 60000);
    must_run("prepare --text text.txt --out data.h5");
    char cmd[1024];
    char *abs = realpath(bin(), NULL);
    snprintf(cmd, sizeof cmd,
             "cd %s && (%s train --config tiny --set data=data.h5 --set steps=100000 --set ckpt_every=1 "
             "--set eval_every=0 --set batch_size=1 --set run_dir=run >/dev/null 2>&1 & echo $! > pid)",
             dir, abs);
    free(abs);
    cr_assert_eq(system(cmd), 0);
    char latest[256];
    snprintf(latest, sizeof latest, "%s/run/latest", dir);
    struct stat st;
    for (int i = 0; i < 400 && stat(latest, &st) != 0; i++) usleep(50000);
    snprintf(cmd, sizeof cmd, "kill -KILL $(cat %s/pid); sleep 0.5", dir);
    cr_assert_eq(system(cmd), 0);
    // The lock file is still there; the lock died with its process.
    char lock[256];
    snprintf(lock, sizeof lock, "%s/run/lock", dir);
    cr_assert_eq(stat(lock, &st), 0, "no lock file in the run directory");
    must_run("train --resume run --set steps=3 --quiet");
}

Test(hostile, full_disk_while_writing_a_trace_or_quantized_checkpoint, .init = make_dir, .fini = remove_dir,
     .timeout = 60) {
    make_ckpt_and_data();
    // Both files are far above 20 KB; the limit stops them part-way.
    expect_error_with(20 * 1024, "trace --ckpt ckpt.h5 --data data.h5 --out t.h5", "t.h5");
    expect_error_with(20 * 1024, "quantize --ckpt ckpt.h5 --out q.h5", "q.h5");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c -e tmp -e '^t.h5$' -e '^q.h5$'", dir);
    FILE *p = popen(cmd, "r");
    int left = -1;
    cr_assert(fscanf(p, "%d", &left) == 1);
    pclose(p);
    cr_expect_eq(left, 0, "a temporary or partial file was left behind");
}

Test(hostile, latest_names_only_a_checkpoint_of_its_run, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    write_text("text.txt", 60000);
    must_run("prepare --text text.txt --out data.h5");
    must_run("init --config tiny --out outside.h5");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/run && echo ../outside.h5 > %s/run/latest", dir, dir);
    cr_assert_eq(system(cmd), 0);
    expect_error("train --resume run --set data=data.h5", "latest");
}
