// loss_windows.c: see loss_windows.h.
#include "model/loss_windows.h"

#include "autograd/watch.h"
#include "kernels/common.h"

double model_loss_windows(Model *m, Graph *g, const uint16_t *ids, int64_t n, int T, int W, int32_t *tok,
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
        if (g->watch) watch_phase(g->watch, WATCH_EVAL);
        model_forward(m, g, tok, tgt, 1, T, &fo, &f);
        total += f.loss->data[0];
        graph_reset(g);
    }
    g->record = saved_record;
    return total / W;
}
