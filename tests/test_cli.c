// test_cli.c: bad input gets one line on stderr and a non-zero exit, never a crash; good
// input round-trips through the nsa binary (NSA_BIN, set by the Makefile).
#include <criterion/criterion.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/common.h"
#include "model/model.h"
#include "data/checkpoint.h"
#include "data/h5.h"

static const char *bin(void) {
    const char *b = getenv("NSA_BIN");
    return b ? b : "build/nsa";
}

// Runs `nsa ARGS`, returns the exit status (or 128+signal) and stderr's contents.
static int run(const char *args, char *err, size_t n) {
    char cmd[4096];
    char errf[64];
    snprintf(errf, sizeof errf, "/tmp/nsa_cli_test.%d.err", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s", bin(), args, errf);
    int st = system(cmd);
    FILE *f = fopen(errf, "r");
    size_t got = f ? fread(err, 1, n - 1, f) : 0;
    err[got] = 0;
    if (f) fclose(f);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void expect_error(const char *args, const char *needle) {
    char err[8192];
    int rc = run(args, err, sizeof err);
    cr_expect(rc != 0 && rc < 128, "nsa %s: exit %d (want a non-zero exit, no crash)", args, rc);
    cr_expect(strncmp(err, "nsa: error: ", 12) == 0, "nsa %s: stderr '%s'", args, err);
    cr_expect(strstr(err, needle) != NULL, "nsa %s: stderr '%s' lacks '%s'", args, err, needle);
    cr_expect(lines(err) <= 3, "nsa %s: %d lines of stderr: %s", args, lines(err), err);
}

static void write_text(const char *path, int bytes) {
    FILE *f = fopen(path, "w");
    for (int i = 0; i < bytes; i++) fputc("In the beginning God created the heaven and the earth.\n"[i % 55], f);
    fclose(f);
}

Test(cli, help_and_usage) {
    char err[4096];
    cr_expect_eq(run("--help", err, sizeof err), 0);
    cr_expect_eq(run("trace --help", err, sizeof err), 0);
    cr_expect_eq(run("init --help", err, sizeof err), 0);
    cr_expect_eq(run("prepare --help", err, sizeof err), 0);
    expect_error("frobnicate", "unknown command");
}

Test(cli, init_trace_round_trip) {
    write_text("/tmp/nsa_cli_text.txt", 20000);
    char err[4096];
    cr_assert_eq(run("prepare --text /tmp/nsa_cli_text.txt --out /tmp/nsa_cli_data.h5", err, sizeof err), 0, "%s", err);
    cr_assert_eq(run("init --config tiny --seed 3 --out /tmp/nsa_cli_ckpt.h5", err, sizeof err), 0, "%s", err);
    cr_assert_eq(run("trace --ckpt /tmp/nsa_cli_ckpt.h5 --data /tmp/nsa_cli_data.h5 --out /tmp/nsa_cli_trace.h5", err,
                     sizeof err), 0, "%s", err);
    hid_t f = h5_open_read("/tmp/nsa_cli_trace.h5");
    cr_assert(f >= 0);
    const char *need[] = {"tokens", "targets", "logits", "loss", "grads/tok_emb.weight",
                          "grads/layers.1.attn.gate.fc2.weight", "selection/layers.0", "selection/layers.1"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        cr_expect(h5_exists(f, need[i]), "trace lacks /%s", need[i]);
    H5Fclose(f);
}

Test(cli, missing_and_corrupt_checkpoint) {
    write_text("/tmp/nsa_cli_text2.txt", 20000);
    char err[4096];
    cr_assert_eq(run("prepare --text /tmp/nsa_cli_text2.txt --out /tmp/nsa_cli_data2.h5", err, sizeof err), 0);
    expect_error("trace --ckpt /tmp/does_not_exist.h5 --data /tmp/nsa_cli_data2.h5 --out /tmp/x.h5", "cannot open");
    write_text("/tmp/nsa_cli_corrupt.h5", 3000);
    expect_error("trace --ckpt /tmp/nsa_cli_corrupt.h5 --data /tmp/nsa_cli_data2.h5 --out /tmp/x.h5", "not a readable HDF5");
    // A real checkpoint cut in half.
    cr_assert_eq(run("init --config tiny --out /tmp/nsa_cli_full.h5", err, sizeof err), 0);
    cr_assert_eq(system("head -c 20000 /tmp/nsa_cli_full.h5 > /tmp/nsa_cli_trunc.h5"), 0);
    expect_error("trace --ckpt /tmp/nsa_cli_trunc.h5 --data /tmp/nsa_cli_data2.h5 --out /tmp/x.h5", "nsa_cli_trunc.h5");
    expect_error("trace --ckpt /tmp/nsa_cli_full.h5 --data /tmp/nsa_cli_corrupt.h5 --out /tmp/x.h5", "not a readable HDF5");
}

Test(cli, shapes_disagree_with_config) {
    char err[4096];
    cr_assert_eq(run("init --config tiny --out /tmp/nsa_cli_shape.h5", err, sizeof err), 0);
    // Claim a wider FFN than the stored weights have.
    hid_t f = H5Fopen("/tmp/nsa_cli_shape.h5", H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "ffn_dim", H5P_DEFAULT);
    int64_t v = 256;
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a), H5Gclose(g), H5Fclose(f);
    write_text("/tmp/nsa_cli_text3.txt", 20000);
    cr_assert_eq(run("prepare --text /tmp/nsa_cli_text3.txt --out /tmp/nsa_cli_data3.h5", err, sizeof err), 0);
    expect_error("trace --ckpt /tmp/nsa_cli_shape.h5 --data /tmp/nsa_cli_data3.h5 --out /tmp/x.h5", "shape");
}

Test(cli, unknown_config_key_and_bad_values) {
    expect_error("init --config tiny --set no_such_key=1 --out /tmp/x.h5", "unknown config key 'no_such_key'");
    expect_error("init --config tiny --set d_model=abc --out /tmp/x.h5", "not an integer");
    expect_error("init --config tiny --set cmp_stride=6 --out /tmp/x.h5", "must divide cmp_block");
    expect_error("init --config tiny --set n_kv_heads=3 --out /tmp/x.h5", "multiple of n_kv_heads");
    expect_error("init --config tiny --set cmp_fn=conv --out /tmp/x.h5", "cmp_fn");
    expect_error("init --config tiny --set attn=nsa,dense,nsa --out /tmp/x.h5", "attn");
    expect_error("init --config no_such_config --out /tmp/x.h5", "cannot open config");
}

Test(cli, token_ids_beyond_vocab) {
    // A dataset whose ids are fine for uint16 but not for the model's vocab of 256.
    hid_t f = H5Fcreate("/tmp/nsa_cli_bigvocab.h5", H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    uint16_t tok[600];
    for (int i = 0; i < 600; i++) tok[i] = (uint16_t)(i % 200);
    tok[321] = 300;
    int64_t n = 600;
    cr_assert_eq(h5_write_f32(f, "dummy", (float[]){0}, 1, (int64_t[]){1}), NSA_OK);
    hsize_t d = (hsize_t)n;
    for (int k = 0; k < 2; k++) {
        hid_t s = H5Screate_simple(1, &d, NULL);
        hid_t ds = H5Dcreate2(f, k ? "val" : "train", H5T_STD_U16LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, tok);
        H5Dclose(ds), H5Sclose(s);
    }
    h5_attr_i64(f, "vocab_size", 512);
    h5_attr_str(f, "tokenizer", "test");
    H5Fclose(f);
    char err[4096];
    cr_assert_eq(run("init --config tiny --out /tmp/nsa_cli_v.h5", err, sizeof err), 0);
    expect_error("trace --ckpt /tmp/nsa_cli_v.h5 --data /tmp/nsa_cli_bigvocab.h5 --out /tmp/x.h5", ">= vocab_size 256");
}
