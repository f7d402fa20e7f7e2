// test_engine.c: the batching engine and its block pool: logits bit-identical alone and in
// batches of 2..8 with sequences joining and leaving; the pool all free after ten rounds of
// mixed requests (queued for pages, sessions, refusals); a reused session's output equals a
// fresh prefill's; the stop at the context length.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "eval/engine.h"
#include "kernels/common.h"
#include "kernels/rng.h"
#include "model/model.h"
#include "tests/testutil.h"

static Model model;
static Weights *weights;

static void setup_model(const char *attn, const char *seq_len) {
    Config c;
    config_defaults(&c);
    cr_assert_eq(config_load(&c, "tiny"), NSA_OK);
    cr_assert_eq(config_set(&c, attn), NSA_OK);
    cr_assert_eq(config_set(&c, seq_len), NSA_OK);
    cr_assert_eq(config_validate(&c), NSA_OK);
    model_create(&model, &c);
    model_init_params(&model, 77);
    weights = nsa_malloc(sizeof *weights);
    weights_from_model(weights, &model);
}

static void setup_nsa(void) { setup_model("attn=nsa", "seq_len=128"); }
// Refusals print error lines: captured, and checked where they are the point.
static void setup_nsa_quiet(void) {
    cr_redirect_stderr();
    setup_nsa();
}

static const char *stderr_text(void) {
    static char buf[4096];
    fflush(stderr);
    size_t n = fread(buf, 1, sizeof buf - 1, cr_get_redirected_stderr());
    buf[n] = 0;
    return buf;
}
static void setup_mixed(void) { setup_model("attn=dense,nsa", "seq_len=96"); }
static void teardown(void) {
    free(weights);
    model_free(&model);
}

static void ids(int32_t *out, int n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) out[i] = (int32_t)rng_below(&r, (uint64_t)model.cfg.vocab_size);
}

enum { NREQ = 8, MAXP = 70 };
static const int plen[NREQ] = {1, 17, 40, 5, 64, 33, 2, 70};
static const int gen[NREQ] = {20, 9, 31, 40, 12, 25, 3, 16};

// Runs the NREQ requests with at most `batch` at a time, submitting request i once `i * lag`
// steps have run (lag 0: all at once); logits[i] get each request's [gen, V] logits.
static void run(float **logits, int batch, int lag) {
    Engine e;
    cr_assert_eq(engine_init(&e, weights, engine_pages_for(&model.cfg, batch), batch), NSA_OK);
    int32_t prompt[MAXP];
    int submitted = 0, step = 0, left = 1;
    while (submitted < NREQ || left > 0) {
        while (submitted < NREQ && step >= submitted * lag) {
            ids(prompt, plen[submitted], 1000 + submitted);
            EngineRequest r = {prompt, plen[submitted], gen[submitted], submitted % 3 ? 0.0 : 0.8,
                               (uint64_t)submitted, NULL, logits[submitted]};
            cr_assert_eq(engine_submit(&e, &r), submitted);
            submitted++;
        }
        left = engine_step(&e);
        step++;
    }
    for (int i = 0; i < NREQ; i++) cr_assert_eq(engine_seq(&e, i)->finish, FINISH_LENGTH);
    cr_expect_eq(pool_pages_free(&e.pool), e.pool.n_pages);
    engine_free(&e);
}

static void batch_invariance(void) {
    omp_set_num_threads(2);
    const size_t V = (size_t)model.cfg.vocab_size;
    float *alone[NREQ], *batched[NREQ];
    for (int i = 0; i < NREQ; i++) {
        alone[i] = nsa_calloc((size_t)gen[i] * V, sizeof(float));
        batched[i] = nsa_calloc((size_t)gen[i] * V, sizeof(float));
    }
    run(alone, 1, 0);
    // batch 8 all at once, then 2, 3, 5 and 8 with staggered arrivals: sequences of other
    // lengths join and leave around each one.
    const int batches[][2] = {{8, 0}, {2, 3}, {3, 1}, {5, 4}, {8, 6}};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        for (int i = 0; i < NREQ; i++) memset(batched[i], 0xff, (size_t)gen[i] * V * sizeof(float));
        run(batched, batches[b][0], batches[b][1]);
        for (int i = 0; i < NREQ; i++)
            cr_expect(!memcmp(alone[i], batched[i], (size_t)gen[i] * V * sizeof(float)),
                      "request %d: logits differ in batch %d (lag %d) from alone", i, batches[b][0], batches[b][1]);
    }
    for (int i = 0; i < NREQ; i++) free(alone[i]), free(batched[i]);
}

Test(engine, batch_invariant_nsa, .init = setup_nsa, .fini = teardown) { batch_invariance(); }
Test(engine, batch_invariant_dense_nsa, .init = setup_mixed, .fini = teardown) { batch_invariance(); }

Test(engine, pool_all_free_after_ten_mixed_rounds, .init = setup_nsa_quiet, .fini = teardown) {
    omp_set_num_threads(1);
    // A pool of two full-length sequences under a batch of four: requests wait for pages.
    Engine e;
    const int pages = engine_pages_for(&model.cfg, 2);
    cr_assert_eq(engine_init(&e, weights, pages, 4), NSA_OK);
    Rng r;
    rng_seed(&r, 5);
    int32_t prompt[128];
    char name[16];
    int waited = 0;
    for (int round = 0; round < 10; round++) {
        const int nreq = 1 + (int)rng_below(&r, 6);
        for (int i = 0; i < nreq; i++) {
            const int np = 1 + (int)rng_below(&r, 100), ng = (int)rng_below(&r, 60);
            ids(prompt, np, (uint64_t)(round * 10 + i));
            snprintf(name, sizeof name, "s%d", (int)rng_below(&r, 3));
            EngineRequest q = {prompt, np, ng, 0.0, 1, i % 2 ? name : NULL, NULL};
            cr_assert_geq(engine_submit(&e, &q), 0);
        }
        while (engine_step(&e) > 0) waited += e.next_queued < e.n_seqs;
        // Sessions hold pages until released.
        while (e.n_sessions > 0) cr_assert_eq(engine_session_release(&e, e.sessions[0].name), NSA_OK);
        cr_assert_eq(pool_pages_free(&e.pool), pages, "round %d: %d of %d pages free", round,
                     pool_pages_free(&e.pool), pages);
    }
    cr_expect_gt(waited, 0, "no request ever waited for pages: the test did not exercise queueing");
    for (int i = 0; i < e.n_seqs; i++) cr_expect_neq(engine_seq(&e, i)->finish, FINISH_NONE);
    engine_free(&e);
}

Test(engine, refusals_are_one_line_and_leave_the_pool_whole, .init = setup_nsa_quiet, .fini = teardown) {
    Engine e;
    const int pages = kvseq_pages(&model.cfg, 64);
    cr_assert_eq(engine_init(&e, weights, pages, 2), NSA_OK);
    int32_t prompt[200] = {0};
    EngineRequest q = {prompt, 129, 1, 0.0, 1, NULL, NULL};
    cr_expect_eq(engine_submit(&e, &q), NSA_ERR, "prompt longer than seq_len accepted");
    q.n_prompt = 0;
    cr_expect_eq(engine_submit(&e, &q), NSA_ERR, "empty prompt accepted");
    q.n_prompt = 60, q.max_tokens = 10;
    cr_expect_eq(engine_submit(&e, &q), NSA_ERR, "a request larger than the pool accepted");
    prompt[3] = 256;
    q.max_tokens = 1;
    cr_expect_eq(engine_submit(&e, &q), NSA_ERR, "token outside the vocabulary accepted");
    prompt[3] = 0;
    // A session holding every page: the next request can never get its pages and is refused.
    q.session = "hold", q.n_prompt = 64, q.max_tokens = 1;
    cr_assert_eq(engine_submit(&e, &q), 0);
    while (engine_step(&e) > 0) {}
    cr_assert_eq(pool_pages_free(&e.pool), 0);
    q.session = NULL, q.n_prompt = 5;
    cr_assert_eq(engine_submit(&e, &q), 1);
    while (engine_step(&e) > 0) {}
    cr_expect_eq(engine_seq(&e, 1)->finish, FINISH_REFUSED);
    cr_expect_eq(engine_session_release(&e, "nope"), NSA_ERR);
    cr_assert_eq(engine_session_release(&e, "hold"), NSA_OK);
    cr_expect_eq(pool_pages_free(&e.pool), pages);
    engine_free(&e);
    // One "nsa: error:" line per refusal, each naming its cause.
    const char *err = stderr_text();
    static const char *const causes[] = {"longer than the model's context (seq_len 128)", "at least one prompt token",
                                         "needs 5 cache pages; the pool has 4", "outside the model's vocab_size 256",
                                         "held by named sessions", "no session named 'nope'"};
    const char *line = err;
    for (size_t i = 0; i < sizeof causes / sizeof causes[0]; i++) {
        cr_assert(!strncmp(line, "nsa: error: ", 12), "line %zu: %s", i, line);
        const char *nl = strchr(line, '\n');
        cr_assert(nl, "line %zu unterminated", i);
        cr_expect(memmem(line, (size_t)(nl - line), causes[i], strlen(causes[i])), "line %zu lacks '%s': %.*s", i,
                  causes[i], (int)(nl - line), line);
        line = nl + 1;
    }
    cr_expect_eq(*line, 0, "more output: %s", line);
}

static double max_rel(const float *a, const float *b, size_t n) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)a[i] - b[i])), mr = fmax(mr, fabs((double)b[i]));
    return md / mr;
}

Test(engine, session_reuse_equals_fresh_prefill, .init = setup_nsa, .fini = teardown) {
    omp_set_num_threads(1);
    const size_t V = (size_t)model.cfg.vocab_size;
    int32_t first[37], second[90];
    ids(first, 37, 1);
    Engine e;
    cr_assert_eq(engine_init(&e, weights, engine_pages_for(&model.cfg, 2), 2), NSA_OK);
    EngineRequest q = {first, 37, 20, 0.0, 1, "chat", NULL};
    cr_assert_eq(engine_submit(&e, &q), 0);
    while (engine_step(&e) > 0) {}
    // The second prompt: the whole first exchange (57 tokens, 56 cached), then more.
    const EngineSeq *s0 = engine_seq(&e, 0);
    memcpy(second, s0->tokens, 57 * sizeof *second);
    ids(second + 57, 33, 2);
    float *reused = nsa_malloc(25 * V * sizeof(float)), *fresh = nsa_malloc(25 * V * sizeof(float));
    EngineRequest q2 = {second, 90, 25, 0.0, 1, "chat", reused};
    cr_assert_eq(engine_submit(&e, &q2), 1);
    const int free_before = pool_pages_free(&e.pool);
    engine_step(&e);
    // 56 positions came from the session: 3 full pages shared, none taken for them.
    cr_expect_eq(engine_seq(&e, 1)->reused, 56);
    cr_expect_eq(free_before - pool_pages_free(&e.pool), kvseq_pages(&model.cfg, 90 + 25 - 1) - 56 / 16);
    while (engine_step(&e) > 0) {}
    Engine f;
    cr_assert_eq(engine_init(&f, weights, engine_pages_for(&model.cfg, 1), 1), NSA_OK);
    EngineRequest q3 = {second, 90, 25, 0.0, 1, NULL, fresh};
    cr_assert_eq(engine_submit(&f, &q3), 0);
    while (engine_step(&f) > 0) {}
    const EngineSeq *a = engine_seq(&e, 1), *b = engine_seq(&f, 0);
    cr_expect_eq(a->n_tokens, b->n_tokens);
    cr_expect(!memcmp(a->tokens, b->tokens, (size_t)a->n_tokens * sizeof *a->tokens), "greedy text differs");
    // Bit-identical: the session's 56 positions came from a 37-row prefill plus 19 one-row
    // steps, the fresh run's from one 90-row prefill, and every kernel computes a row the same
    // way whatever rows share the call (key chunks cut at fixed page offsets).
    cr_expect(!memcmp(reused, fresh, 25 * V * sizeof(float)), "session logits differ from a fresh prefill by %g",
              max_rel(reused, fresh, 25 * V));
    free(reused), free(fresh);
    engine_free(&f);
    cr_assert_eq(engine_session_release(&e, "chat"), NSA_OK);
    cr_expect_eq(pool_pages_free(&e.pool), e.pool.n_pages);
    engine_free(&e);
}

Test(engine, stops_at_the_context_length, .init = setup_nsa, .fini = teardown) {
    Engine e;
    cr_assert_eq(engine_init(&e, weights, engine_pages_for(&model.cfg, 1), 1), NSA_OK);
    int32_t prompt[128];
    ids(prompt, 128, 3);
    EngineRequest q = {prompt, 120, 50, 0.0, 1, NULL, NULL};
    cr_assert_eq(engine_submit(&e, &q), 0);
    q.n_prompt = 128, q.max_tokens = 1;  // a full context still yields one token
    cr_assert_eq(engine_submit(&e, &q), 1);
    while (engine_step(&e) > 0) {}
    // Positions 0..127 fed: 9 tokens generated after 120 (the last from position 127).
    cr_expect_eq(engine_seq(&e, 0)->finish, FINISH_CONTEXT);
    cr_expect_eq(engine_seq(&e, 0)->n_tokens, 129);
    cr_expect_eq(engine_seq(&e, 1)->finish, FINISH_LENGTH);
    cr_expect_eq(engine_seq(&e, 1)->n_tokens, 129);
    engine_free(&e);
}

// ---------------------------------------------------------------------------- nsa generate

static char dir[256];
static void make_dir(void) { tu_mkdtemp(dir, sizeof dir, "nsa_engine_"); }
static void remove_dir(void) { tu_rm_rf(dir); }

// stdout of `nsa ARGS` with OMP_NUM_THREADS=threads, every "seconds" value blanked.
static char *run_out(int threads, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d %s %s 2>/dev/null | sed 's/\"seconds\":[0-9.]*/\"seconds\":S/'",
             threads, tu_bin(), args);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t cap = 1 << 16, n = 0, k;
    char *buf = nsa_malloc(cap);
    while ((k = fread(buf + n, 1, cap - 1 - n, p)) > 0) n += k;
    buf[n] = 0;
    cr_assert_eq(pclose(p), 0, "%s failed", args);
    return buf;
}

// Greedy and sampled text with the cache equal --no-cache for prompts of 1, 50 and 500 bytes
// (seq_len 1024, so the 500-byte prompt and its continuation fit), and --batch changes nothing.
Test(engine, generate_cache_equals_no_cache, .init = make_dir, .fini = remove_dir, .timeout = 120) {
    char err[4096], args[1024];
    int rc = tu_run(err, sizeof err, "init --config tiny --set seq_len=1024 --seed 4 --out %s/c.h5", dir);
    cr_assert_eq(rc, 0, "%s", err);
    char path[300];
    snprintf(path, sizeof path, "%s/p.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    static const char text[] = "And God said, Let there be light: and there was light. ";
    fputs("A\n", f);
    for (int i = 0; i < 50; i++) fputc(text[i % (sizeof text - 1)], f);
    fputc('\n', f);
    for (int i = 0; i < 500; i++) fputc(text[(i * 7) % (sizeof text - 1)], f);
    fputc('\n', f);
    fclose(f);
    const char *temps[] = {"0", "1"};
    for (int t = 0; t < 2; t++) {
        snprintf(args, sizeof args, "generate --ckpt %s/c.h5 --prompts %s --max-tokens 40 --temperature %s --no-cache",
                 dir, path, temps[t]);
        char *ref = run_out(1, args);
        cr_assert_eq(tu_count_lines(ref), 3, "%s", ref);
        snprintf(args, sizeof args, "generate --ckpt %s/c.h5 --prompts %s --max-tokens 40 --temperature %s --batch 1",
                 dir, path, temps[t]);
        char *one = run_out(1, args);
        snprintf(args, sizeof args, "generate --ckpt %s/c.h5 --prompts %s --max-tokens 40 --temperature %s --batch 3",
                 dir, path, temps[t]);
        char *three = run_out(2, args);
        cr_expect_str_eq(one, ref, "temperature %s: cache differs from --no-cache", temps[t]);
        cr_expect_str_eq(three, one, "temperature %s: --batch 3 with 2 threads differs from --batch 1", temps[t]);
        if (t == 1) cr_expect(strstr(ref, "\"tokens\":40,\"finish_reason\":\"length\""), "%s", ref);
        free(ref), free(one), free(three);
    }
    // --prompt streams the same text.
    snprintf(args, sizeof args, "generate --ckpt %s/c.h5 --prompt 'In the beginning' --max-tokens 30 --temperature 1",
             dir);
    char *a = run_out(1, args);
    snprintf(args, sizeof args,
             "generate --ckpt %s/c.h5 --prompt 'In the beginning' --max-tokens 30 --temperature 1 --no-cache", dir);
    char *b = run_out(1, args);
    cr_expect_eq(strlen(a), strlen("In the beginning") + 30 + 1);
    cr_expect(!memcmp(a, b, strlen(a) + 1), "--prompt: cache and --no-cache differ");
    free(a), free(b);
}

// JSON escaping, the stop at the context length, and bad prompt files as one-line errors.
Test(engine, generate_json_context_and_errors, .init = make_dir, .fini = remove_dir, .timeout = 60) {
    char err[4096], args[1024], path[300];
    int rc = tu_run(err, sizeof err, "init --config tiny --set seq_len=64 --seed 4 --out %s/c.h5", dir);
    cr_assert_eq(rc, 0, "%s", err);
    snprintf(path, sizeof path, "%s/p.txt", dir);
    FILE *f = fopen(path, "w");
    fputs("say \"hi\"\\\tcaf\xc3\xa9\r\n", f);
    for (int i = 0; i < 60; i++) fputc('a' + i % 26, f);
    fputc('\n', f);
    fclose(f);
    for (int nc = 0; nc < 2; nc++) {
        snprintf(args, sizeof args, "generate --ckpt %s/c.h5 --prompts %s --max-tokens 10%s", dir, path,
                 nc ? " --no-cache" : "");
        char *out = run_out(1, args);
        cr_expect(!strncmp(out, "{\"prompt\":\"say \\\"hi\\\"\\\\\\tcaf\\u00c3\\u00a9\",\"completion\":\"", 55),
                  "%s", out);
        // 60 prompt tokens + 5 generated: the 5th comes from position 63, the last of seq_len 64.
        cr_expect(strstr(out, "\"tokens\":5,\"finish_reason\":\"context\""), "%s", out);
        cr_expect(strstr(out, "\"tokens\":10,\"finish_reason\":\"length\""), "%s", out);
        free(out);
    }
    f = fopen(path, "w");
    fputs("ok\n\nnext\n", f);
    fclose(f);
    rc = tu_run(err, sizeof err, "generate --ckpt %s/c.h5 --prompts %s", dir, path);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "prompt 2 is empty");
    f = fopen(path, "w");
    for (int i = 0; i < 65; i++) fputc('x', f);
    fclose(f);
    rc = tu_run(err, sizeof err, "generate --ckpt %s/c.h5 --prompts %s", dir, path);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "longer than the model's context (seq_len 64)");
    rc = tu_run(err, sizeof err, "generate --ckpt %s/c.h5 --prompts %s/none.txt", dir, dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "cannot open prompts file");
    rc = tu_run(err, sizeof err, "generate --ckpt %s/c.h5 --prompts %s --prompt x", dir, path);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "not both");
    rc = tu_run(err, sizeof err, "generate --ckpt %s/c.h5 --prompt x --batch 0", dir);
    TU_ASSERT_ONE_LINE_ERROR(rc, err, "--batch");
}
