// generate.c: see generate.h. Prompts are checked in full before any work starts.
#include "eval/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/checkpoint.h"
#include "eval/engine.h"
#include "kernels/common.h"
#include "kernels/sample.h"

int32_t generate_next(Model *m, Graph *g, const int32_t *ids, int n, double temperature, Rng *rng) {
    NSA_ASSERT(n >= 1 && n <= m->cfg.seq_len);
    int saved_record = g->record;
    g->record = 0;
    ForwardOpts fo = {0};
    Forward f;
    graph_reset(g);
    model_forward(m, g, ids, NULL, 1, n, &fo, &f);
    const int64_t V = m->cfg.vocab_size;
    const float *z = f.logits->data + (int64_t)(n - 1) * V;
    int64_t j = 0;
    while (j < V && isfinite(z[j])) j++;
    // Weights are checked finite on loading: non-finite logits mean an activation overflowed.
    int32_t tok = j == V ? sample_token(z, V, temperature, rng) : -1;
    graph_reset(g);
    g->record = saved_record;
    return tok;
}

// ---------------------------------------------------------------------------- prompts

typedef struct {
    char **text;
    size_t *len;
    int n;
} Prompts;

static void prompts_free(Prompts *p) {
    for (int i = 0; i < p->n; i++) free(p->text[i]);
    free(p->text), free(p->len);
    memset(p, 0, sizeof *p);
}

static void prompts_add(Prompts *p, const char *s, size_t n) {
    p->text = realloc(p->text, (size_t)(p->n + 1) * sizeof *p->text);
    p->len = realloc(p->len, (size_t)(p->n + 1) * sizeof *p->len);
    NSA_ASSERT(p->text && p->len);
    p->text[p->n] = nsa_malloc(n + 1);
    memcpy(p->text[p->n], s, n);
    p->text[p->n][n] = 0;
    p->len[p->n++] = n;
}

// One prompt per line; the line ending (\n or \r\n) is not part of it.
static int prompts_read(Prompts *p, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        nsa_error("cannot open prompts file %s", path);
        return NSA_ERR;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') n--;
        if (n > 0 && line[n - 1] == '\r') n--;
        prompts_add(p, line, (size_t)n);
    }
    free(line);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        nsa_error("cannot read prompts file %s", path);
        return NSA_ERR;
    }
    if (p->n == 0) {
        nsa_error("prompts file %s has no lines", path);
        return NSA_ERR;
    }
    return NSA_OK;
}

static int prompts_check(const Prompts *p, const Config *c, const char *where) {
    for (int i = 0; i < p->n; i++) {
        const char *at = where ? where : "--prompt";
        if (p->len[i] == 0) {
            nsa_error("%s: prompt %d is empty (generation continues from a prompt's last token)", at, i + 1);
            return NSA_ERR;
        }
        if ((int64_t)p->len[i] > c->seq_len) {
            nsa_error("%s: prompt %d is %zu bytes, longer than the model's context (seq_len %lld)", at, i + 1,
                      p->len[i], (long long)c->seq_len);
            return NSA_ERR;
        }
        for (size_t j = 0; j < p->len[i]; j++)
            if ((unsigned char)p->text[i][j] >= c->vocab_size) {
                nsa_error("%s: prompt %d: byte %d at offset %zu is outside the model's vocab_size %lld", at, i + 1,
                          (unsigned char)p->text[i][j], j, (long long)c->vocab_size);
                return NSA_ERR;
            }
    }
    return NSA_OK;
}

// ---------------------------------------------------------------------------- output

// A JSON string: quotes, backslash and control bytes escaped; bytes >= 0x80 as \u00XX (the
// tokenizer is bytes, so a completion need not be valid UTF-8).
static void json_string(FILE *out, const int32_t *ids, size_t n) {
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        const int b = ids[i] & 0xff;
        if (b == '"' || b == '\\') fprintf(out, "\\%c", b);
        else if (b == '\n') fputs("\\n", out);
        else if (b == '\t') fputs("\\t", out);
        else if (b == '\r') fputs("\\r", out);
        else if (b < 0x20 || b >= 0x7f) fprintf(out, "\\u%04x", b);
        else fputc(b, out);
    }
    fputc('"', out);
}

typedef struct {
    int32_t *tokens;  // prompt, then completion
    int n_prompt, n_tokens;
    FinishReason finish;
    double seconds;
} Result;

static void print_json(FILE *out, const Result *r) {
    fputs("{\"prompt\":", out);
    json_string(out, r->tokens, (size_t)r->n_prompt);
    fputs(",\"completion\":", out);
    json_string(out, r->tokens + r->n_prompt, (size_t)(r->n_tokens - r->n_prompt));
    fprintf(out, ",\"tokens\":%d,\"finish_reason\":\"%s\",\"seconds\":%.3f}\n", r->n_tokens - r->n_prompt,
            r->finish == FINISH_CONTEXT ? "context" : "length", r->seconds);
    fflush(out);
}

static int32_t *prompt_ids(const char *s, size_t n, int64_t extra) {
    int32_t *ids = nsa_malloc((n + (size_t)extra + 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)s[i];
    return ids;
}

// ---------------------------------------------------------------------------- full recompute

static int run_no_cache(Model *m, const Prompts *p, const GenerateOpts *o, FILE *out, int stream) {
    int rc = NSA_OK;
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    for (int i = 0; i < p->n; i++) {
        Result r = {prompt_ids(p->text[i], p->len[i], o->max_tokens), (int)p->len[i], (int)p->len[i],
                    FINISH_LENGTH, 0.0};
        Rng rng;
        rng_seed(&rng, o->seed);
        const double t0 = nsa_now();
        if (stream) fwrite(p->text[i], 1, p->len[i], out), fflush(out);
        for (int64_t k = 0; k < o->max_tokens; k++) {
            if (r.n_tokens > m->cfg.seq_len) {
                r.finish = FINISH_CONTEXT;
                break;
            }
            r.tokens[r.n_tokens] = generate_next(m, &g, r.tokens, r.n_tokens, o->temperature, &rng);
            if (r.tokens[r.n_tokens] < 0) {
                nsa_error("prompt %d: the logits at position %d are not finite (activations overflowed)", i + 1,
                          r.n_tokens - 1);
                rc = NSA_ERR;
                break;
            }
            if (stream) fputc(r.tokens[r.n_tokens] & 0xff, out), fflush(out);
            r.n_tokens++;
        }
        r.seconds = nsa_now() - t0;
        if (rc != NSA_OK) {
            free(r.tokens);
            break;
        }
        if (stream) {
            fputc('\n', out);
            if (r.finish == FINISH_CONTEXT)
                nsa_warn("stopped at the model's context length (seq_len %lld)", (long long)m->cfg.seq_len);
        } else {
            print_json(out, &r);
            fprintf(stderr, "nsa: generate: %d/%d prompts\n", i + 1, p->n);
        }
        free(r.tokens);
    }
    graph_free(&g);
    arena_free(&arena);
    return rc;
}

// ---------------------------------------------------------------------------- engine

static int run_engine(const Weights *w, const Prompts *p, const GenerateOpts *o, FILE *out, int stream) {
    const int batch = (int)(o->batch < p->n ? o->batch : p->n);
    Engine e;
    if (engine_init(&e, w, engine_pages_for(&w->cfg, batch), batch) != NSA_OK) return NSA_ERR;
    const int max_tokens = (int)o->max_tokens;
    for (int i = 0; i < p->n; i++) {
        int32_t *ids = prompt_ids(p->text[i], p->len[i], 0);
        EngineRequest r = {ids, (int)p->len[i], max_tokens, o->temperature, o->seed, NULL, NULL};
        int id = engine_submit(&e, &r);
        free(ids);
        if (id < 0) {
            engine_free(&e);
            return NSA_ERR;
        }
    }
    if (stream) fwrite(p->text[0], 1, p->len[0], out), fflush(out);
    int printed = 0, left = p->n, streamed = (int)p->len[0], bad = -1;
    long tokens = 0;
    const double t0 = nsa_now();
    double last_report = t0;
    while (left > 0) {
        left = engine_step(&e);
        if (stream) {
            const EngineSeq *s = engine_seq(&e, 0);
            for (; streamed < s->n_tokens; streamed++) fputc(s->tokens[streamed] & 0xff, out);
            fflush(out);
            continue;
        }
        // JSON lines in file order, each as soon as it and every earlier prompt are done.
        for (; printed < p->n && engine_seq(&e, printed)->finish != FINISH_NONE; printed++) {
            const EngineSeq *s = engine_seq(&e, printed);
            if (s->finish == FINISH_REFUSED) continue;  // cannot happen without sessions; reported
            if (s->finish == FINISH_NONFINITE) {
                if (bad < 0) bad = printed;
                continue;
            }
            Result r = {s->tokens, s->n_prompt, s->n_tokens, s->finish, s->seconds};
            print_json(out, &r);
            tokens += s->n_tokens - s->n_prompt;
        }
        const double now = nsa_now();
        if (now - last_report >= 1.0 || left == 0) {
            fprintf(stderr, "nsa: generate: %d/%d prompts done, %ld tokens, %.1f tokens/s\n", printed, p->n, tokens,
                    tokens / (now - t0 > 0 ? now - t0 : 1e-9));
            last_report = now;
        }
    }
    if (stream) {
        fputc('\n', out);
        if (engine_seq(&e, 0)->finish == FINISH_CONTEXT)
            nsa_warn("stopped at the model's context length (seq_len %lld)", (long long)w->cfg.seq_len);
        if (engine_seq(&e, 0)->finish == FINISH_NONFINITE) bad = 0;
    }
    if (bad >= 0)
        nsa_error("prompt %d: the logits at position %d are not finite (activations overflowed)", bad + 1,
                  engine_seq(&e, bad)->n_tokens - 1);
    engine_free(&e);
    return bad >= 0 ? NSA_ERR : NSA_OK;
}

int generate_run(const GenerateOpts *o, FILE *out) {
    Prompts p = {0};
    if (o->prompts_file) {
        if (prompts_read(&p, o->prompts_file) != NSA_OK) goto fail;
    } else {
        prompts_add(&p, o->prompt, strlen(o->prompt));
    }
    Model m;
    if (load_model(o->ckpt, o->quant, 0, &m, NULL) != NSA_OK) goto fail;
    if (prompts_check(&p, &m.cfg, o->prompts_file) != NSA_OK) {
        model_free(&m);
        goto fail;
    }
    int rc = NSA_OK;
    const int stream = o->prompts_file == NULL;
    if (o->no_cache) {
        rc = run_no_cache(&m, &p, o, out, stream);
    } else {
        Weights *w = nsa_malloc(sizeof *w);
        weights_from_model(w, &m);
        rc = run_engine(w, &p, o, out, stream);
        free(w);
    }
    model_free(&m);
    prompts_free(&p);
    return rc;
fail:
    prompts_free(&p);
    return NSA_ERR;
}
