// engine.h: the batching engine: requests are submitted, queued until the block pool has
// their pages, then prefilled and decoded together, one forward per step (one product per
// linear layer over every active sequence's rows), and leave when done. A sequence's logits
// do not depend on what else is in the batch. Named sessions keep a finished sequence's cache so
// that a later request with the same prefix prefills only the rest.
#ifndef NSA_ENGINE_H
#define NSA_ENGINE_H

#include <stdint.h>

#include "eval/decode.h"
#include "kernels/rng.h"

typedef enum {
    FINISH_NONE,     // still queued or running
    FINISH_LENGTH,   // max_tokens generated
    FINISH_CONTEXT,  // the cache reached seq_len (the RoPE table's end): no position is left to feed
    FINISH_REFUSED,  // could not get pages while nothing else was running (sessions hold the rest)
    FINISH_NONFINITE,  // the logits were not finite (an activation overflowed): no token drawn from them
} FinishReason;

typedef struct {
    const int32_t *prompt;  // n_prompt >= 1 tokens (copied at submit)
    int n_prompt;
    int max_tokens;         // >= 0
    double temperature;     // 0: greedy
    uint64_t seed;          // of this request's own draws (batching never changes them)
    const char *session;    // NULL, or a name: reuse that session's prefix, become it when done
    float *logits;          // NULL, or [max_tokens, V]: the logits each generated token came from
} EngineRequest;

typedef struct {
    int32_t *tokens;        // prompt, then generated
    int n_prompt, n_tokens, max_tokens;
    double temperature;
    Rng rng;
    char *session;
    float *logits;
    KvSeq kv;
    int active, reused;     // reused: positions taken from a session
    FinishReason finish;
    double t_start, seconds;
} EngineSeq;

typedef struct {
    char *name;
    KvSeq kv;
    int32_t *tokens;        // the kv.len tokens cached
} EngineSession;

typedef struct {
    const Weights *w;
    Pool pool;
    Decoder dec;
    int max_batch;
    EngineSeq *seqs;        // by request id
    int n_seqs, cap_seqs, next_queued;
    EngineSession *sessions;
    int n_sessions;
    float *logits;          // [max(max_batch, 1), V]
    DecodeRows *rows;
} Engine;

// A pool of n_pages pages (engine_pages_for gives enough for max_batch sequences of seq_len).
int engine_init(Engine *e, const Weights *w, int n_pages, int max_batch);
void engine_free(Engine *e);
int engine_pages_for(const Config *cfg, int max_batch);
// The request's id (0, 1, ... in submission order), or NSA_ERR with one error line when it
// can never run: empty prompt, a token outside the vocabulary, a prompt longer than seq_len,
// more pages than the whole pool.
int engine_submit(Engine *e, const EngineRequest *r);
// Admits queued requests (in order) while there is room in the batch and pages in the pool,
// then runs one forward over every active sequence (a new one's prompt rows, a running
// one's last token) and draws each one's next token. Returns how many requests are not
// finished yet.
int engine_step(Engine *e);
const EngineSeq *engine_seq(const Engine *e, int id);
// Returns the session's pages; NSA_ERR with a message for an unknown name.
int engine_session_release(Engine *e, const char *name);

#endif
