// eval.c: see eval.h.
#include "eval/eval.h"
#include "eval/trace.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "data/checkpoint.h"
#include "data/dataset.h"
#include "train/watchdog.h"

double eval_loss(Model *m, Graph *g, const uint16_t *ids, int64_t n, int T, int W, int32_t *tok,
                 int32_t *tgt) {
    NSA_ASSERT(n >= (int64_t)T + 1 && W >= 1);
    int64_t span = n - T - 1;
    int saved_record = g->record;
    g->record = 0;
    ForwardOpts fo = {0};
    double total = 0.0;
    for (int w = 0; w < W; w++) {
        int64_t start = (int64_t)((__int128)w * span / W);
        for (int t = 0; t < T; t++) {
            tok[t] = ids[start + t];
            tgt[t] = ids[start + t + 1];
        }
        Forward f;
        graph_reset(g);
        if (g->watch) watch_phase(g->watch, WATCH_EVAL);  // the deadline is per forward, as in training
        model_forward(m, g, tok, tgt, 1, T, &fo, &f);
        total += f.loss->data[0];
        graph_reset(g);
    }
    g->record = saved_record;
    return total / W;
}

int32_t generate_next(Model *m, Graph *g, const int32_t *ids, int n, double temperature, Rng *rng) {
    int T = n < m->cfg.seq_len ? n : (int)m->cfg.seq_len;
    int saved_record = g->record;
    g->record = 0;
    ForwardOpts fo = {0};
    Forward f;
    graph_reset(g);
    model_forward(m, g, ids + (n - T), NULL, 1, T, &fo, &f);
    int64_t V = m->cfg.vocab_size;
    const float *z = f.logits->data + (int64_t)(T - 1) * V;
    int32_t best = 0;
    for (int64_t j = 1; j < V; j++)
        if (z[j] > z[best]) best = (int32_t)j;
    if (temperature > 0) {
        // Softmax in double relative to the max logit, then invert the CDF at one uniform draw.
        double sum = 0.0;
        for (int64_t j = 0; j < V; j++) sum += exp(((double)z[j] - z[best]) / temperature);
        double u = rng_uniform(rng) * sum, acc = 0.0;
        for (int64_t j = 0; j < V; j++) {
            acc += exp(((double)z[j] - z[best]) / temperature);
            if (u < acc) {
                best = (int32_t)j;
                break;
            }
        }
    }
    graph_reset(g);
    g->record = saved_record;
    return best;
}

// ---------------------------------------------------------------------------- nsa eval

static void eval_usage(FILE *f) {
    fprintf(f, "usage: nsa eval --ckpt FILE --data data.h5 [--batches N]\n"
               "  Mean validation loss over N batches (default: the checkpoint's eval_batches) of\n"
               "  batch_size windows of seq_len tokens, spread evenly over /val (no randomness):\n"
               "  the same windows, and so the same number, as `nsa train`'s val_loss.\n"
               "  Prints nats/token and, for the byte tokenizer, bits/byte.\n");
}

int eval_main(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL;
    long batches = 0;
    static struct option opts[] = {{"ckpt", 1, 0, 'c'}, {"data", 1, 0, 'd'}, {"batches", 1, 0, 'n'},
                                   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': ckpt = optarg; break;
        case 'd': data = optarg; break;
        case 'n': {
            char *end;
            batches = strtol(optarg, &end, 10);
            if (*end || batches < 1) {
                nsa_error("--batches must be a positive integer, got '%s'", optarg);
                return 2;
            }
            break;
        }
        case 'h': eval_usage(stdout); return 0;
        default: eval_usage(stderr); return 2;
        }
    }
    if (!ckpt || !data) {
        nsa_error("eval needs --ckpt FILE and --data FILE");
        return 2;
    }
    Model m;
    Dataset d;
    if (model_and_data_load(ckpt, data, &m, &d) != NSA_OK) return 1;
    int rc = 1;
    int T = (int)m.cfg.seq_len;
    // The windows of training's periodic evaluation: eval_batches batches of batch_size.
    int W = batches ? (int)batches * (int)m.cfg.batch_size
                    : (int)((m.cfg.eval_batches > 0 ? m.cfg.eval_batches : 8) * m.cfg.batch_size);
    if (d.vocab_size > m.cfg.vocab_size) {
        nsa_error("%s: vocab_size %lld is larger than the model's %lld (data and checkpoint disagree)", data,
                  (long long)d.vocab_size, (long long)m.cfg.vocab_size);
    } else if (d.n_val < (int64_t)T + 1) {
        nsa_error("%s: /val has %lld tokens, evaluation at seq_len %d needs at least %d", data,
                  (long long)d.n_val, T, T + 1);
    } else {
        Arena arena;
        arena_init(&arena, 0);
        Graph g;
        graph_init(&g, &arena);
        int32_t *tok = nsa_malloc((size_t)T * sizeof *tok), *tgt = nsa_malloc((size_t)T * sizeof *tgt);
        double t0 = nsa_now();
        double loss = eval_loss(&m, &g, d.val, d.n_val, T, W, tok, tgt);
        double secs = nsa_now() - t0;
        if (!strcmp(d.tokenizer, "bytes"))
            printf("val loss %.6f nats/token (= nats/byte), %.6f bits/byte (%d windows of %d tokens, %.1f s)\n", loss,
                   loss / M_LN2, W, T, secs);
        else
            printf("val loss %.6f nats/token, %.6f bits/token (%d windows of %d tokens, %.1f s)\n", loss,
                   loss / M_LN2, W, T, secs);
        rc = isfinite(loss) ? 0 : 1;
        if (rc) nsa_error("validation loss is not finite (diverged checkpoint?)");
        free(tok);
        free(tgt);
        graph_free(&g);
        arena_free(&arena);
    }
    dataset_free(&d);
    model_free(&m);
    return rc;
}

// ---------------------------------------------------------------------------- nsa generate

static void generate_usage(FILE *f) {
    fprintf(f, "usage: nsa generate --ckpt FILE --prompt TEXT [--max-tokens N] [--temperature T] [--seed N]\n"
               "  Continues TEXT (byte tokens) by full recompute, one token at a time, over the last\n"
               "  seq_len tokens. --temperature 0 (default) is greedy; --seed fixes sampling (default 1).\n");
}

int generate_main(int argc, char **argv) {
    const char *ckpt = NULL, *prompt = NULL;
    long max_tokens = 200;
    double temperature = 0.0;
    unsigned long long seed = 1;
    static struct option opts[] = {{"ckpt", 1, 0, 'c'},        {"prompt", 1, 0, 'p'}, {"max-tokens", 1, 0, 'n'},
                                   {"temperature", 1, 0, 't'}, {"seed", 1, 0, 's'},   {"help", 0, 0, 'h'},
                                   {0, 0, 0, 0}};
    int ch;
    char *end;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': ckpt = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n':
            max_tokens = strtol(optarg, &end, 10);
            if (*end || max_tokens < 0) {
                nsa_error("--max-tokens must be a non-negative integer, got '%s'", optarg);
                return 2;
            }
            break;
        case 't':
            temperature = strtod(optarg, &end);
            if (*end || !(temperature >= 0) || !isfinite(temperature)) {
                nsa_error("--temperature must be a number >= 0, got '%s'", optarg);
                return 2;
            }
            break;
        case 's':
            seed = strtoull(optarg, &end, 10);
            if (*end) {
                nsa_error("--seed must be an integer, got '%s'", optarg);
                return 2;
            }
            break;
        case 'h': generate_usage(stdout); return 0;
        default: generate_usage(stderr); return 2;
        }
    }
    if (!ckpt || !prompt) {
        nsa_error("generate needs --ckpt FILE and --prompt TEXT");
        return 2;
    }
    size_t np = strlen(prompt);
    if (np == 0) {
        nsa_error("--prompt must not be empty (generation starts from its last token)");
        return 2;
    }
    Model m;
    if (ckpt_load(ckpt, &m) != NSA_OK) return 1;
    int64_t n_max = (int64_t)np + max_tokens;
    int32_t *ids = nsa_malloc((size_t)n_max * sizeof *ids);
    for (size_t i = 0; i < np; i++) {
        ids[i] = (unsigned char)prompt[i];  // byte-level tokenizer: id = byte value
        if (ids[i] >= m.cfg.vocab_size) {
            nsa_error("prompt byte %d at offset %zu is outside the model's vocab_size %lld", ids[i], i,
                      (long long)m.cfg.vocab_size);
            free(ids);
            model_free(&m);
            return 1;
        }
    }
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    Rng rng;
    rng_seed(&rng, seed);
    fwrite(prompt, 1, np, stdout);
    fflush(stdout);
    for (int64_t n = (int64_t)np; n < n_max; n++) {
        ids[n] = generate_next(&m, &g, ids, (int)n, temperature, &rng);
        putchar(ids[n] & 0xff);
        fflush(stdout);
    }
    putchar('\n');
    graph_free(&g);
    arena_free(&arena);
    free(ids);
    model_free(&m);
    return 0;
}
