// loss_windows.c: see loss_windows.h.
#include "model/loss_windows.h"

#include "autograd/watch.h"
#include "kernels/common.h"

float model_loss_window(Model *m, Graph *g, const uint16_t *ids, int64_t n, int T, int W, int w, int32_t *tok,
                        int32_t *tgt) {
    NSA_ASSERT(n >= (int64_t)T + 1 && W >= 1 && w >= 0 && w < W);
    int64_t span = n - T - 1;
    int saved_record = g->record;
    g->record = 0;
    ForwardOpts fo = {0};
    int64_t start = (int64_t)((__int128)w * span / W);
    for (int t = 0; t < T; t++) {
        tok[t] = ids[start + t];
        tgt[t] = ids[start + t + 1];
    }
    Forward f;
    graph_reset(g);
    if (g->watch) watch_phase(g->watch, WATCH_EVAL);
    model_forward(m, g, tok, tgt, 1, T, &fo, &f);
    float loss = f.loss->data[0];
    graph_reset(g);
    g->record = saved_record;
    return loss;
}

double model_loss_windows(Model *m, Graph *g, const uint16_t *ids, int64_t n, int T, int W, int32_t *tok,
                          int32_t *tgt) {
    NSA_ASSERT(W >= 1);
    double total = 0.0;
    for (int w = 0; w < W; w++) total += model_loss_window(m, g, ids, n, T, W, w, tok, tgt);
    return total / W;
}
