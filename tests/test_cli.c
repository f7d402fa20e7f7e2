// test_cli.c: the nsa binary (NSA_BIN, set by the Makefile) as a user meets it: --help
// on every command, one `nsa: error:` line and exit 2 for bad usage (unknown options,
// malformed numbers), one line and a non-zero exit for bad input (missing, corrupt or
// mismatched files, unknown config keys), never a crash; and good input round-trips
// (prepare -> init -> trace, train -> eval -> generate).
#include <criterion/criterion.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/h5.h"
#include "kernels/common.h"
#include "model/config.h"
#include "tests/testutil.h"

static int tiny_batch_size(void) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "tiny"), NSA_OK);
    return (int)c.batch_size;
}

static char dir[256];  // this test's temporary directory (each Criterion test is a process)

static void make_dir(void) { tu_mkdtemp(dir, sizeof dir, "nsa_cli_"); }
static void remove_dir(void) { tu_rm_rf(dir); }

static void corpus(char *h5, size_t size) {
    char txt[300];
    snprintf(txt, sizeof txt, "%s/corpus.txt", dir);
    snprintf(h5, size, "%s/corpus.h5", dir);
    tu_write_corpus(txt, h5);
}

// Bad input: a non-zero exit (no crash) and an error line first; a few context lines
// (e.g. "  (in the /config of ...)") may follow.
static void expect_error(const char *args, const char *needle) {
    char err[8192];
    int rc = tu_run(err, sizeof err, "%s", args);
    cr_expect(rc != 0 && rc < 128, "nsa %s: exit %d (want a non-zero exit, no crash)", args, rc);
    cr_expect(strncmp(err, "nsa: error: ", 12) == 0, "nsa %s: stderr '%s'", args, err);
    cr_expect(strstr(err, needle) != NULL, "nsa %s: stderr '%s' lacks '%s'", args, err, needle);
    cr_expect(tu_count_lines(err) <= 3, "nsa %s: %d lines of stderr: %s", args, tu_count_lines(err), err);
}

// Bad usage: exit 2 and exactly one error line containing needle.
static void expect_usage_error(const char *args, const char *needle) {
    char err[8192];
    int rc = tu_run(err, sizeof err, "%s", args);
    cr_expect_eq(rc, 2, "nsa %s: exit %d, want 2 (stderr: %s)", args, rc, err);
    cr_expect(strncmp(err, "nsa: error: ", 12) == 0, "nsa %s: stderr '%s'", args, err);
    cr_expect(strstr(err, needle) != NULL, "nsa %s: stderr '%s' lacks '%s'", args, err, needle);
    cr_expect_eq(tu_count_lines(err), 1, "nsa %s: %d lines of stderr: %s", args, tu_count_lines(err), err);
}

static void write_text(const char *path, int bytes) {
    FILE *f = fopen(path, "w");
    for (int i = 0; i < bytes; i++) fputc("In the beginning God created the heaven and the earth.\n"[i % 55], f);
    fclose(f);
}

// A small text file prepared into dir/<name>.h5 (path into h5).
static void small_data(const char *name, char *h5, size_t size) {
    char txt[300], err[4096];
    snprintf(txt, sizeof txt, "%s/%s.txt", dir, name);
    snprintf(h5, size, "%s/%s.h5", dir, name);
    write_text(txt, 20000);
    cr_assert_eq(tu_run(err, sizeof err, "prepare --text %s --out %s", txt, h5), 0, "%s", err);
}

static const char *const commands[] = {"prepare", "init", "train", "eval", "generate", "trace", "hangcheck", "bench"};
#define N_COMMANDS (int)(sizeof commands / sizeof *commands)

// ---------------------------------------------------------------------------- usage

Test(cli, help_on_every_command) {
    char err[4096], cmd[600];
    cr_expect_eq(tu_run(err, sizeof err, "--help"), 0);
    for (int i = 0; i < N_COMMANDS; i++) {
        // The usage goes to stdout, starting with the command's own synopsis.
        snprintf(cmd, sizeof cmd, "%s %s --help", tu_bin(), commands[i]);
        FILE *p = popen(cmd, "r");
        char out[256] = "";
        cr_assert(fgets(out, sizeof out, p), "nsa %s --help printed nothing", commands[i]);
        while (fgetc(p) != EOF) {
        }
        cr_expect_eq(pclose(p), 0, "nsa %s --help failed", commands[i]);
        char want[64];
        snprintf(want, sizeof want, "usage: nsa %s", commands[i]);
        cr_expect(!strncmp(out, want, strlen(want)), "nsa %s --help: '%s'", commands[i], out);
    }
    expect_usage_error("frobnicate", "unknown command");
}

Test(cli, unknown_option_on_every_command) {
    char args[128];
    for (int i = 0; i < N_COMMANDS; i++) {
        snprintf(args, sizeof args, "%s --frobnicate 3", commands[i]);
        expect_usage_error(args, "unknown option '--frobnicate'");
    }
    // Exact names only: an abbreviation is not an option.
    expect_usage_error("init --conf tiny --out /tmp/x.h5", "unknown option '--conf'");
    expect_usage_error("init --config", "--config needs a value");
    expect_usage_error("init --help=yes", "--help takes no value");
    expect_usage_error("init --config tiny --out /tmp/x.h5 stray", "unexpected argument 'stray'");
    expect_usage_error("train --config tiny --quiet=1", "--quiet takes no value");
}

// Every number goes through a checked parser: trailing junk, overflow, out of range and
// non-finite values are usage errors naming the option, the value and the range.
Test(cli, malformed_numbers) {
    expect_usage_error("generate --ckpt c.h5 --prompt x --max-tokens abc",
                       "--max-tokens: 'abc' is not an integer in [0, 1000000]");
    expect_usage_error("generate --ckpt c.h5 --prompt x --max-tokens 12x", "'12x' is not an integer");
    expect_usage_error("generate --ckpt c.h5 --prompt x --max-tokens 99999999999999999999", "is not an integer");
    expect_usage_error("generate --ckpt c.h5 --prompt x --temperature -1",
                       "--temperature: '-1' is not a number in [0, inf)");
    expect_usage_error("generate --ckpt c.h5 --prompt x --temperature nan", "--temperature: 'nan'");
    expect_usage_error("generate --ckpt c.h5 --prompt x --seed -1", "--seed: '-1' is not an integer");
    expect_usage_error("eval --ckpt c.h5 --data d.h5 --windows 0", "--windows: '0' is not an integer in [1, ");
    expect_usage_error("trace --ckpt c.h5 --data d.h5 --out t.h5 --batch two", "--batch: 'two'");
    expect_usage_error("prepare --text t --out d.h5 --val-fraction 1", "--val-fraction: '1' is not a number in (0, 1)");
    expect_usage_error("init --config tiny --out x.h5 --seed 1e3", "--seed: '1e3'");
    expect_usage_error("train --config tiny --stop-at 0", "--stop-at: '0'");
    expect_usage_error("train --config tiny --step-timeout inf", "--step-timeout: 'inf'");
    expect_usage_error("hangcheck --steps 66", "--steps: '66' is not an integer in [1, 65]");
    expect_usage_error("bench attn --reps 0", "--reps: '0' is not an integer in [1, 10]");
    expect_usage_error("bench attn --max-seq 100", "--max-seq: '100' is not an integer in [8192, 65536]");
    expect_usage_error("hangcheck --layers 1,,2", "--layers: '' is not an integer");
    expect_usage_error("hangcheck --seq 64,abc", "--seq: 'abc'");
    expect_usage_error("hangcheck --layers 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "more than 16 entries");
    expect_usage_error("hangcheck --timeout 0", "--timeout: '0' is not a number in (0, inf)");
    expect_usage_error("hangcheck --checkpoint none,none", "--checkpoint: 'none,none'");
    expect_usage_error("hangcheck --path index,fast", "--path: 'index,fast'");
}

// --set repeats without a limit: every one of 300 is applied (the last one decides).
Test(cli, many_sets_all_applied, .init = make_dir, .fini = remove_dir) {
    char args[8000], err[4096];
    int n = snprintf(args, sizeof args, "init --config tiny --out %s/many.h5", dir);
    for (int i = 0; i < 300; i++) n += snprintf(args + n, sizeof args - (size_t)n, " --set seed=%d", i);
    cr_assert_eq(tu_run(err, sizeof err, "%s", args), 0, "%s", err);
    snprintf(args + n, sizeof args - (size_t)n, " --set d_model=abc");
    expect_error(args, "not an integer");
}

// ---------------------------------------------------------------------------- files

Test(cli, init_trace_round_trip, .init = make_dir, .fini = remove_dir) {
    char data[300], err[4096], ckpt[300], trace[300];
    small_data("text", data, sizeof data);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.h5", dir);
    snprintf(trace, sizeof trace, "%s/trace.h5", dir);
    cr_assert_eq(tu_run(err, sizeof err, "init --config=tiny --seed 3 --out=%s", ckpt), 0, "%s", err);
    cr_assert_eq(tu_run(err, sizeof err, "trace --ckpt %s --data %s --out %s", ckpt, data, trace), 0, "%s", err);
    hid_t f = h5_open_read(trace);
    cr_assert(f >= 0);
    const char *need[] = {"tokens", "targets", "logits", "loss", "grads/tok_emb.weight",
                          "grads/layers.1.attn.gate.fc2.weight", "selection/layers.0", "selection/layers.1"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        cr_expect(h5_exists(f, need[i]), "trace lacks /%s", need[i]);
    H5Fclose(f);
}

Test(cli, missing_and_corrupt_checkpoint, .init = make_dir, .fini = remove_dir) {
    char data[300], err[4096], args[2000], corrupt[300], full[300], trunc[300];
    small_data("text2", data, sizeof data);
    snprintf(args, sizeof args, "trace --ckpt %s/does_not_exist.h5 --data %s --out %s/x.h5", dir, data, dir);
    expect_error(args, "cannot open");
    snprintf(corrupt, sizeof corrupt, "%s/corrupt.h5", dir);
    write_text(corrupt, 3000);
    snprintf(args, sizeof args, "trace --ckpt %s --data %s --out %s/x.h5", corrupt, data, dir);
    expect_error(args, "not a readable HDF5");
    // A real checkpoint cut in half.
    snprintf(full, sizeof full, "%s/full.h5", dir);
    snprintf(trunc, sizeof trunc, "%s/trunc.h5", dir);
    cr_assert_eq(tu_run(err, sizeof err, "init --config tiny --out %s", full), 0);
    snprintf(args, sizeof args, "head -c 20000 %s > %s", full, trunc);
    cr_assert_eq(system(args), 0);
    snprintf(args, sizeof args, "trace --ckpt %s --data %s --out %s/x.h5", trunc, data, dir);
    expect_error(args, "trunc.h5");
    snprintf(args, sizeof args, "trace --ckpt %s --data %s --out %s/x.h5", full, corrupt, dir);
    expect_error(args, "not a readable HDF5");
}

Test(cli, shapes_disagree_with_config, .init = make_dir, .fini = remove_dir) {
    char err[4096], ckpt[300], data[300], args[1000];
    snprintf(ckpt, sizeof ckpt, "%s/shape.h5", dir);
    cr_assert_eq(tu_run(err, sizeof err, "init --config tiny --out %s", ckpt), 0);
    // Claim a wider FFN than the stored weights have.
    hid_t f = H5Fopen(ckpt, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "ffn_dim", H5P_DEFAULT);
    int64_t v = 256;
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a), H5Gclose(g), H5Fclose(f);
    small_data("text3", data, sizeof data);
    snprintf(args, sizeof args, "trace --ckpt %s --data %s --out %s/x.h5", ckpt, data, dir);
    expect_error(args, "shape");
}

Test(cli, unknown_config_key_and_bad_values, .init = make_dir, .fini = remove_dir) {
    char args[600];
#define INIT_WITH(set) (snprintf(args, sizeof args, "init --config tiny " set " --out %s/x.h5", dir), args)
    expect_error(INIT_WITH("--set no_such_key=1"), "unknown config key 'no_such_key'");
    expect_error(INIT_WITH("--set d_model=abc"), "not an integer");
    expect_error(INIT_WITH("--set cmp_stride=6"), "must divide cmp_block");
    expect_error(INIT_WITH("--set n_kv_heads=3"), "multiple of n_kv_heads");
    expect_error(INIT_WITH("--set cmp_fn=conv"), "cmp_fn");
    expect_error(INIT_WITH("--set attn=nsa,dense,nsa"), "attn");
#undef INIT_WITH
    snprintf(args, sizeof args, "init --config no_such_config --out %s/x.h5", dir);
    expect_error(args, "cannot open config");
}

Test(cli, token_ids_beyond_vocab, .init = make_dir, .fini = remove_dir) {
    // A dataset whose ids are fine for uint16 but not for the model's vocab of 256.
    char big[300], ckpt[300], err[4096], args[1000];
    snprintf(big, sizeof big, "%s/bigvocab.h5", dir);
    snprintf(ckpt, sizeof ckpt, "%s/v.h5", dir);
    hid_t f = H5Fcreate(big, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
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
    cr_assert_eq(tu_run(err, sizeof err, "init --config tiny --out %s", ckpt), 0);
    snprintf(args, sizeof args, "trace --ckpt %s --data %s --out %s/x.h5", ckpt, big, dir);
    expect_error(args, ">= vocab_size 256");
}

// ---------------------------------------------------------------------------- train, eval, generate

Test(cli, train_bad_data_and_config_one_line_errors, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    char data[300], err[4096], garbage[300], txt[300];
    corpus(data, sizeof data);
    snprintf(garbage, sizeof garbage, "%s/garbage.h5", dir);
    FILE *f = fopen(garbage, "w");
    fputs("this is not an HDF5 file\n", f);
    fclose(f);
    snprintf(txt, sizeof txt, "%s/corpus.txt", dir);
    const char *base = "train --config tiny --set seq_len=64 --set steps=2 --set eval_every=0";
    int rc;

    rc = tu_run(err, sizeof err, "%s --set data=%s/missing.h5 --set run_dir=%s/r1", base, dir, dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "missing.h5");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set run_dir=%s/r2", base, garbage, dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "garbage.h5");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set run_dir=%s/r3", base, txt, dir);  // text, not HDF5
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "corpus.txt");
    char cmd[1000], cut[300];  // the dataset cut off half way: a corrupt HDF5 file
    snprintf(cut, sizeof cut, "%s/cut.h5", dir);
    snprintf(cmd, sizeof cmd, "head -c 100000 %s > %s", data, cut);
    cr_assert_eq(system(cmd), 0);
    rc = tu_run(err, sizeof err, "%s --set data=%s --set run_dir=%s/r3b", base, cut, dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "cut.h5");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set run_dir=%s/r4 --set vocab_size=128", base, data, dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "vocab_size");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set run_dir=%s/r5 --set seq_len=1000000", base, data, dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "seq_len");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set no_such_key=3", base, data);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "no_such_key");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set batch_size=0", base, data);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "batch_size");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set lr=fast", base, data);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "lr");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set checkpoint=sometimes", base, data);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "checkpoint");
    rc = tu_run(err, sizeof err, "%s --set data=%s --set beta2=1.5", base, data);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "beta");
    rc = tu_run(err, sizeof err, "train --config %s/no_such.cfg", dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "no_such.cfg");
    rc = tu_run(err, sizeof err, "train --resume %s/never_ran", dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "never_ran");
    rc = tu_run(err, sizeof err, "train");
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "--config");
    rc = tu_run(err, sizeof err, "eval --ckpt %s --data %s", garbage, data);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "garbage.h5");
    rc = tu_run(err, sizeof err, "generate --ckpt %s --prompt ''", garbage);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "prompt");
    rc = tu_run(err, sizeof err, "train --help");
    cr_assert_eq(rc, 0);

    // A run directory that already holds checkpoints is continued with --resume, never
    // silently overwritten; a resumed run cannot change its model.
    rc = tu_run(err, sizeof err, "%s --set data=%s --set run_dir=%s/ok", base, data, dir);
    cr_assert_eq(rc, 0, "a valid run failed: %s", err);
    rc = tu_run(err, sizeof err, "%s --set data=%s --set run_dir=%s/ok", base, data, dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "--resume");
    rc = tu_run(err, sizeof err, "train --resume %s/ok --set d_model=32", dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "d_model");
    rc = tu_run(err, sizeof err, "train --resume %s/ok --set steps=3", dir);
    cr_assert_eq(rc, 0, "resuming with more steps failed: %s", err);
}

// `nsa eval` of the final checkpoint reproduces the run's last val_loss (same windows);
// greedy `nsa generate` is deterministic and writes prompt + max-tokens bytes.
Test(cli, train_eval_matches_log_and_generate_is_deterministic, .init = make_dir, .fini = remove_dir,
     .timeout = 60) {
    char data[300], err[4096], cmd[2000];
    corpus(data, sizeof data);
    int rc = tu_run(err, sizeof err,
                     "train --config tiny --set seq_len=64 --set steps=6 --set eval_every=3 --set eval_batches=2 "
                     "--set data=%s --set run_dir=%s/run",
                     data, dir);
    cr_assert_eq(rc, 0, "%s", err);
    char log[400], line[1024], val[64] = "";
    snprintf(log, sizeof log, "%s/run/log.jsonl", dir);
    FILE *f = fopen(log, "r");
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"val_loss\":");
        if (p) snprintf(val, sizeof val, "%.6f", atof(p + 11));
    }
    fclose(f);
    cr_assert(val[0], "no eval record in the log");
    // Training's val_loss scores eval_batches x batch_size windows: --windows with that
    // number gives the same windows.
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s eval --ckpt %s/run/ckpt_00000006.h5 --data %s --quiet --windows %d",
             tu_bin(), dir, data, 2 * tiny_batch_size());
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    cr_assert_eq(pclose(p), 0);
    cr_assert(strstr(out, val), "eval printed '%s', the log's last val_loss is %s", out, val);
    cr_assert(strstr(out, "bits/byte"));

    char gen[2][512];
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "OMP_NUM_THREADS=1 %s generate --ckpt %s/run/ckpt_00000006.h5 --prompt 'The lord ' --max-tokens 24 "
                 "--temperature 0",
                 tu_bin(), dir);
        p = popen(cmd, "r");
        size_t n = fread(gen[i], 1, sizeof gen[i] - 1, p);
        gen[i][n] = 0;
        cr_assert_eq(pclose(p), 0);
        cr_assert_eq(n, strlen("The lord ") + 24 + 1, "generate wrote %zu bytes: %s", n, gen[i]);
    }
    cr_assert_str_eq(gen[0], gen[1]);
}
