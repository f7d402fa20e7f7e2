// test_config.c: model/config.c: every validation rule (NSA shapes, training keys, size
// limits) rejects with its one-line message, enum keys parse once and print back, the
// .cfg parser's edge cases, and named configs found from any working directory.
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/common.h"
#include "kernels/nsa_shape.h"
#include "model/model.h"

// ---------------------------------------------------------------------------- helpers

static int saved_fd = -1;
static FILE *cap;

static void capture_stderr(void) {
    fflush(stderr);
    cap = tmpfile();
    cr_assert(cap);
    saved_fd = dup(2);
    dup2(fileno(cap), 2);
}

// What was written to stderr since capture_stderr.
static const char *captured(void) {
    static char buf[4096];
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    rewind(cap);
    size_t n = fread(buf, 1, sizeof buf - 1, cap);
    buf[n] = 0;
    fclose(cap);
    return buf;
}

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

// The error path must be NSA_ERR and exactly one "nsa: error: ..." line containing `want`.
static void expect_one_line(int rc, const char *err, const char *want, const char *what) {
    cr_expect_eq(rc, NSA_ERR, "%s: accepted", what);
    cr_expect(strncmp(err, "nsa: error: ", 12) == 0 && lines(err) == 1, "%s: not one error line: '%s'", what, err);
    cr_expect(strstr(err, want) != NULL, "%s: '%s' lacks '%s'", what, err, want);
}

static void tiny(Config *c) {
    config_defaults(c);
    cr_assert_eq(config_load(c, "tiny"), NSA_OK);
    cr_assert_eq(config_validate(c), NSA_OK);
}

// Applies `set` (key=value, several separated by spaces) to tiny and expects config_validate
// to reject it with `want`.
static void expect_invalid(const char *set, const char *want) {
    Config c;
    tiny(&c);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", set);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " "))
        cr_assert_eq(config_set(&c, tok), NSA_OK, "%s", tok);
    capture_stderr();
    int rc = config_validate(&c);
    expect_one_line(rc, captured(), want, set);
    cr_expect(!c.validated, "%s: marked valid", set);
}

static void expect_valid(const char *set) {
    Config c;
    tiny(&c);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", set);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " "))
        cr_assert_eq(config_set(&c, tok), NSA_OK, "%s", tok);
    cr_expect_eq(config_validate(&c), NSA_OK, "%s rejected", set);
}

// ---------------------------------------------------------------------------- validation

// The NSA shape rules the kernels rely on (they check nothing themselves).
Test(config, rejects_bad_nsa_shapes) {
    expect_invalid("cmp_stride=6", "cmp_stride 6 must divide cmp_block 16");
    expect_invalid("slc_block=20", "cmp_stride 8 must divide slc_block 20");
    expect_invalid("cmp_block=8 cmp_stride=16 slc_block=16", "config key cmp_stride: 16 is not in [1, 8]");
    expect_invalid("slc_topn=0", "config key slc_topn: 0 is not in [1, 1024]");
    expect_invalid("slc_topn=4294967297", "config key slc_topn: 4294967297 is not in [1, 1024]");
    expect_invalid("window=0", "config key window: 0 is not in");
    expect_invalid("cmp_block=0", "config key cmp_block: 0 is not in");
    expect_invalid("slc_block=-16", "config key slc_block: -16 is not in");
    expect_invalid("n_kv_heads=3", "n_heads 4 must be a multiple of n_kv_heads 3");
    expect_invalid("n_kv_heads=8", "config key n_kv_heads: 8 is not in [1, 4]");
    expect_invalid("head_dim=258", "config key head_dim: 258 is not in [2, 256]");
    expect_invalid("head_dim=15", "head_dim 15 must be even");
    expect_invalid("attn=nsa,dense,nsa", "attn 'nsa,dense,nsa' must be nsa, dense, or a comma list of 2");
    expect_invalid("attn=nsa,sparse", "attn 'nsa,sparse'");
    // NSA-only sizes do not matter when no layer is NSA.
    expect_valid("attn=dense slc_topn=0 cmp_stride=6");
    expect_valid("attn=dense,nsa");
    expect_valid("head_dim=256");
}

Test(config, layer_flags_precomputed) {
    Config c;
    tiny(&c);
    cr_assert_eq(config_set(&c, "n_layers=3"), NSA_OK);
    cr_assert_eq(config_set(&c, "attn = dense, nsa ,dense"), NSA_OK);
    cr_assert(!c.validated, "config_set must clear the validated mark");
    cr_assert_eq(config_validate(&c), NSA_OK);
    cr_expect(!config_layer_is_nsa(&c, 0) && config_layer_is_nsa(&c, 1) && !config_layer_is_nsa(&c, 2));
    cr_assert_eq(config_set(&c, "attn=nsa"), NSA_OK);
    cr_assert_eq(config_validate(&c), NSA_OK);
    for (int l = 0; l < 3; l++) cr_expect(config_layer_is_nsa(&c, l));
}

// Training keys are validated for every command (init and hangcheck used to skip them).
Test(config, rejects_bad_training_keys) {
    expect_invalid("batch_size=0", "config key batch_size: 0 is not in [1, 65536]");
    expect_invalid("grad_accum=0", "config key grad_accum: 0 is not in");
    expect_invalid("lr=0", "lr must be > 0");
    expect_invalid("min_lr=-1e-4", "min_lr >= 0");
    expect_invalid("beta1=1", "beta1 and beta2 must be in [0, 1)");
    expect_invalid("beta2=-0.1", "beta1 and beta2");
    expect_invalid("grad_clip=-1", "grad_clip");
    expect_invalid("weight_decay=-0.1", "weight_decay");
    expect_invalid("step_timeout=-2", "step_timeout");
    expect_invalid("steps=-1", "steps and warmup must be >= 0");
    expect_invalid("warmup=-1", "steps and warmup");
    expect_invalid("eval_every=-1", "eval_every, ckpt_every and log_every must be >= 0");
    expect_invalid("ckpt_every=-5", "ckpt_every");
    expect_invalid("log_every=-1", "log_every");
    expect_invalid("eval_every=10 eval_batches=0", "eval_batches must be >= 1 when eval_every > 0");
    expect_invalid("keep_ckpts=0", "config key keep_ckpts: 0 is not in");
    expect_invalid("max_bad_steps=0", "config key max_bad_steps: 0 is not in");
    expect_invalid("tie_embeddings=2", "config key tie_embeddings: 2 is not in [0, 1]");
    expect_invalid("norm_eps=0", "norm_eps and rope_theta must be positive");
    expect_invalid("gate_hidden=-3", "gate_hidden: -3 must be >= 0");
    expect_valid("eval_every=0 eval_batches=0 steps=0 warmup=0 grad_clip=0 weight_decay=0 beta1=0");
}

// No value may ask for an absurd allocation or overflow the kernels' int sizes.
Test(config, rejects_absurd_sizes) {
    expect_invalid("vocab_size=65537", "config key vocab_size: 65537 is not in [2, 65536] (token ids are uint16)");
    expect_invalid("vocab_size=1", "vocab_size: 1");
    expect_invalid("d_model=16385", "config key d_model: 16385 is not in [1, 16384]");
    expect_invalid("n_layers=65", "config key n_layers: 65 is not in [1, 64]");
    expect_invalid("n_layers=0", "n_layers: 0");
    expect_invalid("n_heads=512 n_kv_heads=2", "config key n_heads: 512 is not in [1, 256]");
    expect_invalid("ffn_dim=65537", "config key ffn_dim: 65537 is not in [1, 65536]");
    expect_invalid("gate_hidden=70000", "config key gate_hidden: 70000 is not in");
    expect_invalid("seq_len=2097152", "config key seq_len: 2097152 is not in [1, 1048576]");
    expect_invalid("seq_len=0", "seq_len: 0");
    expect_invalid("batch_size=65537", "config key batch_size: 65537 is not in [1, 65536]");
    expect_invalid("seq_len=1048576 batch_size=32",
                   "batch_size x seq_len = 33554432 tokens is more than 16777216");
    expect_invalid("eval_batches=65536 batch_size=512", "eval_batches x batch_size = 33554432 windows");
    // 64 layers of d_model 16384 and ffn 65536: 3·2^30 elements each, far past 2^31.
    expect_invalid("n_layers=64 d_model=16384 ffn_dim=65536 attn=dense", "parameters, more than 2147483648");
    // 16M tokens of a 256-wide logit row: 2^32 floats in one activation.
    expect_invalid("batch_size=4096 seq_len=4096", "activation of 4294967296 elements");
    // A compression block as long as the sequence with stride 1: B·Nc·G·l·Dh explodes.
    expect_invalid("seq_len=65536 batch_size=8 cmp_block=32768 cmp_stride=1 slc_block=32768",
                   "activation of");
    // ... but the same with mean pooling has no [B·Nc·G, l·Dh] input.
    expect_valid("seq_len=65536 batch_size=8 cmp_block=32768 cmp_stride=1 slc_block=32768 cmp_fn=mean");
}

// config_n_params is the count the size limit is checked on; it must be the model's.
Test(config, parameter_count_matches_model) {
    const char *sets[] = {"attn=nsa", "attn=dense,nsa kv=separate tie_embeddings=0", "cmp_fn=mean gate_hidden=24",
                          "cmp_fn=linear attn=nsa,dense"};
    for (int i = 0; i < 4; i++) {
        Config c;
        tiny(&c);
        char buf[128];
        snprintf(buf, sizeof buf, "%s", sets[i]);
        for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) cr_assert_eq(config_set(&c, tok), NSA_OK);
        cr_assert_eq(config_validate(&c), NSA_OK);
        Model m;
        model_create(&m, &c);  // asserts the same equality internally
        cr_expect_eq(config_n_params(&c), m.n_elems, "%s: %lld vs %lld", sets[i], (long long)config_n_params(&c),
                     (long long)m.n_elems);
        model_free(&m);
    }
}

// ---------------------------------------------------------------------------- enums

Test(config, enums_parse_once_and_print_back) {
    Config c;
    tiny(&c);
    cr_expect(c.cmp_fn == CMP_MLP && c.kv == KV_SHARED && c.gate_act == GATE_SIGMOID && c.checkpoint == CKPT_NONE);
    cr_assert_eq(config_set(&c, "cmp_fn=linear"), NSA_OK);
    cr_assert_eq(config_set(&c, "kv = separate"), NSA_OK);
    cr_assert_eq(config_set(&c, "gate_act=softmax"), NSA_OK);
    cr_assert_eq(config_set(&c, "checkpoint=layer"), NSA_OK);
    cr_expect(c.cmp_fn == CMP_LINEAR && c.kv == KV_SEPARATE && c.gate_act == GATE_SOFTMAX &&
              c.checkpoint == CKPT_LAYER);
    cr_expect_str_eq(config_enum_name(config_key("cmp_fn"), &c), "linear");
    cr_expect_str_eq(config_enum_name(config_key("checkpoint"), &c), "layer");
    cr_assert_eq(config_set_value(&c, config_key("cmp_fn"), "mean", ""), NSA_OK);
    cr_expect_eq(c.cmp_fn, CMP_MEAN);
    capture_stderr();
    int rc = config_set_value(&c, config_key("kv"), "both", "ckpt.h5: /config: ");
    expect_one_line(rc, captured(), "ckpt.h5: /config: config key kv: 'both' is not one of shared, separate", "kv");

    capture_stderr();
    rc = config_set(&c, "cmp_fn=conv");
    expect_one_line(rc, captured(), "config key cmp_fn: 'conv' is not one of mlp, linear, mean", "cmp_fn=conv");
    capture_stderr();
    rc = config_set(&c, "checkpoint=sometimes");
    expect_one_line(rc, captured(), "config key checkpoint: 'sometimes' is not one of none, layer", "checkpoint");
    cr_expect_eq(c.checkpoint, CKPT_LAYER, "a rejected value must not change the key");

    // config_fprint writes the names; loading its output gives back the same config.
    cr_assert_eq(config_validate(&c), NSA_OK);
    const char *path = "/tmp/nsa_test_config_print.cfg";
    FILE *f = fopen(path, "w");
    config_fprint(&c, f);
    fclose(f);
    char text[8192];
    f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    cr_expect(strstr(text, "cmp_fn = mean\n") && strstr(text, "kv = separate\n") &&
                  strstr(text, "gate_act = softmax\n") && strstr(text, "checkpoint = layer\n"),
              "%s", text);
    Config d;
    config_defaults(&d);
    cr_assert_eq(config_load(&d, path), NSA_OK);
    cr_assert_eq(config_validate(&d), NSA_OK);
    for (int i = 0; i < cfg_n_keys; i++) {
        const CfgKey *k = &cfg_keys[i];
        const char *a = (const char *)&c + k->offset, *b = (const char *)&d + k->offset;
        cr_expect(k->type == CFG_STR ? !strcmp(a, b) : !memcmp(a, b, k->size), "key %s differs after a round trip",
                  k->name);
    }
    remove(path);
}

// ---------------------------------------------------------------------------- parser

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

Test(config, number_parsing_is_strict) {
    Config c;
    config_defaults(&c);
    const char *bad[][2] = {
        {"d_model=12abc", "config key d_model: '12abc' is not an integer"},
        {"d_model=", "config key d_model: '' is not an integer"},
        {"d_model=1.5", "'1.5' is not an integer"},
        {"seed=99999999999999999999", "'99999999999999999999' is not an integer in range"},
        {"lr=1e-3x", "config key lr: '1e-3x' is not a finite number"},
        {"lr=nan", "'nan' is not a finite number"},
        {"lr=inf", "'inf' is not a finite number"},
        {"lr=1e999", "'1e999' is not a finite number"},
        {"no_such_key=1", "unknown config key 'no_such_key'"},
        {"d_model", "expected key=value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        capture_stderr();
        int rc = config_set(&c, bad[i][0]);
        expect_one_line(rc, captured(), bad[i][1], bad[i][0]);
    }
    cr_expect_eq(c.d_model, 64, "rejected values must leave the key alone");
    cr_assert_eq(config_set(&c, "seed=-9223372036854775808"), NSA_OK);
    cr_expect_eq(c.seed, INT64_MIN);
    cr_assert_eq(config_set(&c, "lr=  2.5e-4 "), NSA_OK);
    cr_expect_eq(c.lr, 2.5e-4);
}

Test(config, file_parser_edge_cases) {
    const char *path = "/tmp/nsa_test_config_parse.cfg";
    Config c;
    // A key given twice: the last wins. Comments and blank lines are skipped.
    write_file(path, "# comment\n\nd_model = 32   # trailing comment\nd_model = 48\nattn=dense\n");
    config_defaults(&c);
    cr_assert_eq(config_load(&c, path), NSA_OK);
    cr_expect_eq(c.d_model, 48);
    cr_expect_str_eq(c.attn, "dense");

    // A line longer than the parser's buffer is an error, never split into two settings.
    char *text = malloc(4000);
    strcpy(text, "d_model = 32\ndata = ");
    size_t n = strlen(text);
    memset(text + n, 'x', 1500);
    strcpy(text + n + 1500, "\nd_model = 16\n");
    write_file(path, text);
    free(text);
    config_defaults(&c);
    capture_stderr();
    int rc = config_load(&c, path);
    expect_one_line(rc, captured(), "nsa_test_config_parse.cfg:2: line longer than 1022 characters", "long line");

    // Errors name the file and line on the same line.
    write_file(path, "d_model = 32\n\nn_heads = four\n");
    capture_stderr();
    rc = config_load(&c, path);
    expect_one_line(rc, captured(), "nsa_test_config_parse.cfg:3: config key n_heads: 'four' is not an integer",
                    "bad value");
    write_file(path, "d_model 32\n");
    capture_stderr();
    rc = config_load(&c, path);
    expect_one_line(rc, captured(), "nsa_test_config_parse.cfg:1: expected key = value", "no =");
    write_file(path, "bogus = 1\n");
    capture_stderr();
    rc = config_load(&c, path);
    expect_one_line(rc, captured(), "nsa_test_config_parse.cfg:1: unknown config key 'bogus'", "unknown key");
    // A last line without a newline is fine.
    write_file(path, "d_model = 40");
    config_defaults(&c);
    cr_assert_eq(config_load(&c, path), NSA_OK);
    cr_expect_eq(c.d_model, 40);
    remove(path);

    // A directory is not a config file.
    const char *dir = "/tmp/nsa_test_config_dir.cfg";
    mkdir(dir, 0700);
    capture_stderr();
    rc = config_load(&c, dir);
    expect_one_line(rc, captured(), "config /tmp/nsa_test_config_dir.cfg is a directory", "directory");
    rmdir(dir);
    capture_stderr();
    rc = config_load(&c, "/tmp/nsa_test_no_such.cfg");
    expect_one_line(rc, captured(), "cannot open config /tmp/nsa_test_no_such.cfg", "missing file");
}

// ---------------------------------------------------------------------------- named configs

// The test binary is build/run-tests (or build-asan/run-tests): a named config is found
// through <directory of the executable>/../data/configs whatever the working directory.
Test(config, named_config_from_any_directory) {
    cr_assert_eq(chdir("/"), 0);
    unsetenv("NSA_CONFIG_DIR");
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "seed12"), NSA_OK, "seed12 not found from /");
    cr_expect_eq(c.n_layers, 12);

    // $NSA_CONFIG_DIR comes first.
    const char *dir = "/tmp/nsa_test_configs";
    mkdir(dir, 0700);
    write_file("/tmp/nsa_test_configs/seed12.cfg", "n_layers = 3\n");
    setenv("NSA_CONFIG_DIR", dir, 1);
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "seed12"), NSA_OK);
    cr_expect_eq(c.n_layers, 3, "NSA_CONFIG_DIR was not searched first");

    // Not found anywhere: one line that lists every place looked at.
    capture_stderr();
    int rc = config_load(&c, "no_such_config");
    const char *err = captured();
    expect_one_line(rc, err, "cannot open config no_such_config", "missing name");
    cr_expect(strstr(err, "/tmp/nsa_test_configs/no_such_config.cfg") &&
                  strstr(err, "/../data/configs/no_such_config.cfg") &&
                  strstr(err, ", data/configs/no_such_config.cfg"),
              "places not listed: %s", err);
    remove("/tmp/nsa_test_configs/seed12.cfg");
    rmdir(dir);
}
