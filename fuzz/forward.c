// forward.c: see forward.h.
#include "fuzz/forward.h"

#include "autograd/arena.h"
#include "autograd/graph.h"
#include "kernels/common.h"

void fuzz_forward(Model *m) {
    // A few tokens keep each input fast; ids cycle through the vocabulary.
    int T = m->cfg.seq_len < 12 ? (int)m->cfg.seq_len : 12;
    int32_t tok[12], tgt[12];
    for (int t = 0; t < T; t++) {
        tok[t] = (int32_t)((t * 7 + 1) % m->cfg.vocab_size);
        tgt[t] = (int32_t)((t * 5 + 2) % m->cfg.vocab_size);
    }
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    g.record = 0;
    ForwardOpts fo = {0};
    Forward f;
    model_forward(m, &g, tok, tgt, 1, T, &fo, &f);
    graph_free(&g);
    arena_free(&arena);
}
