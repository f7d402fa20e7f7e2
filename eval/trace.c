// trace.c: see trace.h.
#include "eval/trace.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "kernels/common.h"
#include "data/checkpoint.h"
#include "data/dataset.h"
#include "data/h5.h"

void trace_compute(Model *m, Graph *g, const int32_t *tokens, const int32_t *targets, int B, int T,
                   const ForwardOpts *opt, Forward *f) {
    model_alloc_grads(m);
    model_zero_grads(m);
    model_forward(m, g, tokens, targets, B, T, opt, f);
    graph_backward(g, f->loss);
}

int trace_write(const char *path, const Model *m, const int32_t *tokens, const int32_t *targets, int B,
                int T, const Forward *f) {
    const Config *c = &m->cfg;
    h5_quiet();
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        nsa_error("cannot create %s", tmp);
        return NSA_ERR;
    }
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
        H5Fclose(file);
        remove(tmp);
        return NSA_ERR;
    }
    return h5_commit(file, tmp, path);
}

int model_and_data_load(const char *ckpt, const char *data, Model *m, Dataset *d) {
    if (ckpt_load(ckpt, m) != NSA_OK) return NSA_ERR;
    if (dataset_load(data, m->cfg.vocab_size, d) != NSA_OK) {
        model_free(m);
        return NSA_ERR;
    }
    return NSA_OK;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: nsa trace --ckpt FILE --data data.h5 --out trace.h5 [--batch B]\n"
            "  Runs one batch (B windows of seq_len tokens from the start of /val, default B = 2)\n"
            "  forward and backward and writes /tokens /targets /logits /loss /grads/<param>\n"
            "  and /selection/layers.{i} for every NSA layer (DESIGN.md \"Files\").\n");
}

int trace_main(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL, *out = NULL;
    int B = 2;
    static struct option opts[] = {{"ckpt", 1, 0, 'c'}, {"data", 1, 0, 'd'}, {"out", 1, 0, 'o'},
                                   {"batch", 1, 0, 'b'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': ckpt = optarg; break;
        case 'd': data = optarg; break;
        case 'o': out = optarg; break;
        case 'b': B = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!ckpt || !data || !out || B < 1) {
        nsa_error("trace needs --ckpt, --data and --out (and --batch >= 1)");
        usage(stderr);
        return 2;
    }
    Model m;
    Dataset d;
    if (model_and_data_load(ckpt, data, &m, &d) != NSA_OK) return 1;
    int T = (int)m.cfg.seq_len;
    if (d.n_val < (int64_t)B * T + 1) {
        nsa_error("%s: /val has %lld tokens, a trace of %d windows of %d needs %lld", data,
                  (long long)d.n_val, B, T, (long long)B * T + 1);
        dataset_free(&d);
        model_free(&m);
        return 1;
    }
    int32_t *tok = nsa_malloc((size_t)B * T * sizeof *tok), *tgt = nsa_malloc((size_t)B * T * sizeof *tgt);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            tok[b * T + t] = d.val[(int64_t)b * T + t];
            tgt[b * T + t] = d.val[(int64_t)b * T + t + 1];
        }
    Arena arena;
    arena_init(&arena, 0);
    Graph g;
    graph_init(&g, &arena);
    ForwardOpts fo = {0};
    fo.keep_selection = 1;
    Forward f;
    trace_compute(&m, &g, tok, tgt, B, T, &fo, &f);
    int rc = trace_write(out, &m, tok, tgt, B, T, &f);
    if (rc == NSA_OK) printf("%s: loss %.6f over %d x %d tokens\n", out, f.loss->data[0], B, T);
    graph_free(&g);
    arena_free(&arena);
    free(tok);
    free(tgt);
    dataset_free(&d);
    model_free(&m);
    return rc == NSA_OK ? 0 : 1;
}
