// trace_file.c: see trace_file.h.
#include "data/trace_file.h"

#include <stdio.h>

#include "data/h5.h"
#include "kernels/common.h"

int trace_file_write(const char *path, const Model *m, const int32_t *tokens, const int32_t *targets, int B,
                     int T, const Forward *f) {
    const Config *c = &m->cfg;
    AtomicFile a;
    hid_t file = h5_create(&a, path);
    if (file < 0) return NSA_ERR;
    int64_t bs[2] = {B, T}, bsv[3] = {B, T, c->vocab_size};
    int rc = h5_write_i32(file, "tokens", tokens, 2, bs);
    if (rc == NSA_OK) rc = h5_write_i32(file, "targets", targets, 2, bs);
    if (rc == NSA_OK) rc = h5_write_f32(file, "logits", f->logits->data, 3, bsv);
    if (rc == NSA_OK) rc = h5_write_f64_scalar(file, "loss", f->loss->data[0]);
    hid_t gg = rc == NSA_OK ? h5_group(file, "grads") : -1;
    for (int i = 0; i < m->n_params && rc == NSA_OK; i++) {
        const Param *p = &m->params[i];
        rc = h5_write_f32(gg, p->name, p->t.grad, p->t.ndim, p->t.shape);
    }
    if (gg >= 0) H5Gclose(gg);
    hid_t gs = rc == NSA_OK ? h5_group(file, "selection") : -1;
    for (int l = 0; l < c->n_layers && rc == NSA_OK; l++) {
        if (!f->sel[l]) continue;
        char name[64];
        snprintf(name, sizeof name, "layers.%d", l);
        int64_t shape[4] = {B, T, c->n_kv_heads, c->slc_topn};
        rc = h5_write_i32(gs, name, f->sel[l], 4, shape);
    }
    if (gs >= 0) H5Gclose(gs);
    if (rc != NSA_OK) {
        h5_abort(file, &a);
        return NSA_ERR;
    }
    return h5_commit(file, &a);
}
