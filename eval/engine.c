// engine.c: see engine.h.
#include "eval/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/sample.h"

int engine_pages_for(const Config *cfg, int max_batch) {
    return max_batch * kvseq_pages(cfg, (int)cfg->seq_len);
}

int engine_init(Engine *e, const Weights *w, int n_pages, int max_batch) {
    memset(e, 0, sizeof *e);
    if (max_batch < 1) {
        nsa_error("the batch must hold at least one sequence (got %d)", max_batch);
        return NSA_ERR;
    }
    if (pool_init(&e->pool, &w->cfg, n_pages) != NSA_OK) return NSA_ERR;
    e->w = w, e->max_batch = max_batch;
    decoder_init(&e->dec, w, &e->pool);
    e->logits = nsa_malloc((size_t)max_batch * w->cfg.vocab_size * sizeof(float));
    e->rows = nsa_malloc((size_t)max_batch * sizeof *e->rows);
    return NSA_OK;
}

static void seq_release(Engine *e, EngineSeq *s) {
    if (s->kv.pages) kvseq_free(&s->kv, &e->pool);
}

void engine_free(Engine *e) {
    for (int i = 0; i < e->n_seqs; i++) {
        seq_release(e, &e->seqs[i]);
        free(e->seqs[i].tokens), free(e->seqs[i].session);
    }
    for (int i = 0; i < e->n_sessions; i++) {
        kvseq_free(&e->sessions[i].kv, &e->pool);
        free(e->sessions[i].name), free(e->sessions[i].tokens);
    }
    free(e->seqs), free(e->sessions), free(e->logits), free(e->rows);
    decoder_free(&e->dec);
    pool_free(&e->pool);
    memset(e, 0, sizeof *e);
}

// Positions a request feeds through the model: the prompt and every generated token but
// the last, at most seq_len.
static int request_cap(const Config *c, int n_prompt, int max_tokens) {
    int64_t fed = (int64_t)n_prompt + max_tokens - 1;
    return (int)(fed < c->seq_len ? fed : c->seq_len);
}

int engine_submit(Engine *e, const EngineRequest *r) {
    const Config *c = &e->w->cfg;
    if (r->n_prompt < 1) {
        nsa_error("a request needs at least one prompt token (generation continues from its last)");
        return NSA_ERR;
    }
    if (r->n_prompt > c->seq_len) {
        nsa_error("prompt of %d tokens is longer than the model's context (seq_len %lld)", r->n_prompt,
                  (long long)c->seq_len);
        return NSA_ERR;
    }
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= c->vocab_size) {
            nsa_error("prompt token %d at offset %d is outside the model's vocab_size %lld", r->prompt[i], i,
                      (long long)c->vocab_size);
            return NSA_ERR;
        }
    if (r->max_tokens < 0) {
        nsa_error("max_tokens must be >= 0 (got %d)", r->max_tokens);
        return NSA_ERR;
    }
    const int need = r->max_tokens > 0 ? kvseq_pages(c, request_cap(c, r->n_prompt, r->max_tokens)) : 0;
    if (need > e->pool.n_pages) {
        nsa_error("a request of %d prompt + %d new tokens needs %d cache pages; the pool has %d", r->n_prompt,
                  r->max_tokens, need, e->pool.n_pages);
        return NSA_ERR;
    }
    if (e->n_seqs == e->cap_seqs) {
        e->cap_seqs = e->cap_seqs ? 2 * e->cap_seqs : 16;
        e->seqs = realloc(e->seqs, (size_t)e->cap_seqs * sizeof *e->seqs);
        NSA_ASSERT(e->seqs);
    }
    EngineSeq *s = &e->seqs[e->n_seqs];
    memset(s, 0, sizeof *s);
    s->tokens = nsa_malloc((size_t)(r->n_prompt + r->max_tokens) * sizeof *s->tokens);
    memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof *s->tokens);
    s->n_prompt = s->n_tokens = r->n_prompt;
    s->max_tokens = r->max_tokens, s->temperature = r->temperature, s->logits = r->logits;
    rng_seed(&s->rng, r->seed);
    if (r->session) {
        s->session = nsa_malloc(strlen(r->session) + 1);
        strcpy(s->session, r->session);
    }
    return e->n_seqs++;
}

const EngineSeq *engine_seq(const Engine *e, int id) {
    NSA_ASSERT(id >= 0 && id < e->n_seqs);
    return &e->seqs[id];
}

static EngineSession *find_session(Engine *e, const char *name) {
    for (int i = 0; i < e->n_sessions; i++)
        if (!strcmp(e->sessions[i].name, name)) return &e->sessions[i];
    return NULL;
}

int engine_session_release(Engine *e, const char *name) {
    EngineSession *ss = find_session(e, name);
    if (!ss) {
        nsa_error("no session named '%s'", name);
        return NSA_ERR;
    }
    kvseq_free(&ss->kv, &e->pool);
    free(ss->name), free(ss->tokens);
    *ss = e->sessions[--e->n_sessions];
    return NSA_OK;
}

// A finished sequence's cache becomes its session (replacing one of the same name), or
// goes back to the pool.
static void finish(Engine *e, EngineSeq *s, FinishReason why) {
    s->finish = why, s->active = 0;
    s->seconds = nsa_now() - s->t_start;
    if (!s->session || !s->kv.pages) {
        seq_release(e, s);
        return;
    }
    EngineSession *ss = find_session(e, s->session);
    if (ss) {
        kvseq_free(&ss->kv, &e->pool);
        free(ss->tokens);
    } else {
        e->sessions = realloc(e->sessions, (size_t)(e->n_sessions + 1) * sizeof *e->sessions);
        NSA_ASSERT(e->sessions);
        ss = &e->sessions[e->n_sessions++];
        ss->name = nsa_malloc(strlen(s->session) + 1);
        strcpy(ss->name, s->session);
    }
    ss->kv = s->kv;
    memset(&s->kv, 0, sizeof s->kv);
    ss->tokens = nsa_malloc((size_t)(ss->kv.len > 0 ? ss->kv.len : 1) * sizeof *ss->tokens);
    memcpy(ss->tokens, s->tokens, (size_t)ss->kv.len * sizeof *ss->tokens);
}

// The next token from the logits of the sequence's last fed position; then whether it is done.
static void take_token(Engine *e, EngineSeq *s, const float *z) {
    const Config *c = &e->w->cfg;
    const int64_t V = c->vocab_size;
    const int k = s->n_tokens - s->n_prompt;
    if (s->logits) memcpy(s->logits + (size_t)k * V, z, (size_t)V * sizeof(float));
    for (int64_t j = 0; j < V; j++)
        if (!isfinite(z[j])) {
            finish(e, s, FINISH_NONFINITE);  // any token drawn from them would be noise
            return;
        }
    s->tokens[s->n_tokens++] = sample_token(z, V, s->temperature, &s->rng);
    if (s->n_tokens - s->n_prompt == s->max_tokens) finish(e, s, FINISH_LENGTH);
    else if (s->kv.len == c->seq_len) finish(e, s, FINISH_CONTEXT);
}

// Pages for the request, from its session's prefix where the prompt starts with it; its
// prompt's remaining rows go into this step's forward.
static int admit(Engine *e, EngineSeq *s) {
    const Config *c = &e->w->cfg;
    const int cap = request_cap(c, s->n_prompt, s->max_tokens);
    EngineSession *ss = s->session ? find_session(e, s->session) : NULL;
    int match = 0;
    if (ss) {
        // The last prompt token is always fed: its logits give the first new token.
        while (match < ss->kv.len && match < s->n_prompt - 1 && ss->tokens[match] == s->tokens[match]) match++;
    }
    if (match > 0) {
        if (kvseq_fork(&s->kv, &ss->kv, match, &e->pool, c, cap) != NSA_OK) return NSA_ERR;
    } else if (kvseq_init(&s->kv, &e->pool, c, cap) != NSA_OK) {
        return NSA_ERR;
    }
    s->reused = match;
    s->active = 1;
    s->t_start = nsa_now();
    return NSA_OK;
}

int engine_step(Engine *e) {
    int active = 0;
    for (int i = 0; i < e->n_seqs; i++) active += e->seqs[i].active;
    // Admission in submission order; the head waits for pages rather than being overtaken.
    while (e->next_queued < e->n_seqs && active < e->max_batch) {
        EngineSeq *s = &e->seqs[e->next_queued];
        if (s->max_tokens == 0) {
            s->t_start = nsa_now();
            finish(e, s, FINISH_LENGTH);
        } else if (admit(e, s) != NSA_OK) {
            if (active > 0) break;  // pages come back as running sequences finish
            nsa_error("request %d needs %d cache pages but only %d are free, the rest held by named "
                      "sessions (release one); refused", e->next_queued,
                      kvseq_pages(&e->w->cfg, request_cap(&e->w->cfg, s->n_prompt, s->max_tokens)),
                      pool_pages_free(&e->pool));
            finish(e, s, FINISH_REFUSED);
        } else {
            active++;
        }
        e->next_queued++;
    }
    // One forward over every active sequence: the rest of a new one's prompt (its prefill),
    // or the last token of a running one.
    int n = 0;
    for (int i = 0; i < e->n_seqs; i++) {
        EngineSeq *s = &e->seqs[i];
        if (!s->active) continue;
        const int fed = s->kv.len, todo = s->n_tokens - fed;
        NSA_ASSERT(todo >= 1);
        e->rows[n++] = (DecodeRows){&s->kv, s->tokens + fed, todo};
    }
    if (n > 0) decoder_forward(&e->dec, e->logits, e->rows, n, 0);
    for (int i = 0, r = 0; i < e->n_seqs; i++) {
        EngineSeq *s = &e->seqs[i];
        if (!s->active) continue;
        take_token(e, s, e->logits + (size_t)r++ * e->w->cfg.vocab_size);
    }
    int left = e->n_seqs - e->next_queued;
    for (int i = 0; i < e->n_seqs; i++) left += e->seqs[i].active;
    return left;
}
