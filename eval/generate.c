// generate.c: see generate.h.
#include "eval/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/checkpoint.h"
#include "kernels/common.h"

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
    for (int64_t j = 0; j < V; j++)
        if (!isfinite(z[j])) {
            // Weights were checked finite on loading: an activation overflowed. Any token
            // chosen from here would be noise (once: NUL bytes and exit status 0).
            nsa_error("the logits at position %d are not finite (activations overflowed)", n - 1);
            graph_reset(g);
            g->record = saved_record;
            return -1;
        }
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

int generate_run(const GenerateOpts *o, FILE *out) {
    size_t np = strlen(o->prompt);
    if (np == 0) {
        nsa_error("--prompt must not be empty (generation starts from its last token)");
        return NSA_ERR;
    }
    Model m;
    if (ckpt_load(o->ckpt, &m) != NSA_OK) return NSA_ERR;
    int64_t n_max = (int64_t)np + o->max_tokens;
    int32_t *ids = nsa_malloc((size_t)n_max * sizeof *ids);
    for (size_t i = 0; i < np; i++) {
        ids[i] = (unsigned char)o->prompt[i];  // byte-level tokenizer: id = byte value
        if (ids[i] >= m.cfg.vocab_size) {
            nsa_error("prompt byte %d at offset %zu is outside the model's vocab_size %lld", ids[i], i,
                      (long long)m.cfg.vocab_size);
            free(ids);
            model_free(&m);
            return NSA_ERR;
        }
    }
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    Rng rng;
    rng_seed(&rng, o->seed);
    fwrite(o->prompt, 1, np, out);
    fflush(out);
    int rc = NSA_OK;
    for (int64_t n = (int64_t)np; n < n_max && rc == NSA_OK; n++) {
        ids[n] = generate_next(&m, &g, ids, (int)n, o->temperature, &rng);
        if (ids[n] < 0) rc = NSA_ERR;
        else fputc(ids[n] & 0xff, out);
        fflush(out);
    }
    fputc('\n', out);
    graph_free(&g);
    arena_free(&arena);
    free(ids);
    model_free(&m);
    return rc;
}
