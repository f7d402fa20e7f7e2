// trainer.c: see trainer.h.
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/watch.h"
#include "kernels/common.h"
#include "model/loss_windows.h"
#include "train/rundir.h"

int trainer_same_model(const Config *run, const Config *c, const char *path) {
    for (int i = 0; i < cfg_n_keys; i++) {
        const CfgKey *k = &cfg_keys[i];
        if (!k->model) continue;
        const char *pa = (const char *)run + k->offset, *pb = (const char *)c + k->offset;
        int same = k->type == CFG_STR ? !strcmp(pa, pb) : !memcmp(pa, pb, k->size);
        if (!same) {
            nsa_error("%s: model key %s differs from the run's config (a run cannot change its model)", path,
                      k->name);
            return 0;
        }
    }
    return 1;
}

int trainer_init(Trainer *t, const Config *cfg, const char *resume_ckpt) {
    memset(t, 0, sizeof *t);
    dist_alone(&t->dist);
    t->cfg = *cfg;
    const Config *c = &t->cfg;
    int64_t S = c->seq_len, B = c->batch_size;
    if (path_fmt(t->log_path, sizeof t->log_path, "%s/log.jsonl", c->run_dir) != NSA_OK) goto fail;
    if (dataset_load(c->data, c->vocab_size, &t->data) != NSA_OK) goto fail;
    if (t->data.vocab_size > c->vocab_size) {
        nsa_error("%s: vocab_size %lld does not fit the model's vocab_size %lld (data and config disagree)",
                  c->data, (long long)t->data.vocab_size, (long long)c->vocab_size);
        goto fail;
    }
    if (t->data.n_train < S + 2) {
        nsa_error("%s: /train has %lld tokens; windows of seq_len %lld need at least %lld", c->data,
                  (long long)t->data.n_train, (long long)S, (long long)(S + 2));
        goto fail;
    }
    if (c->eval_every > 0 && t->data.n_val < S + 1) {
        nsa_error("%s: /val has %lld tokens; evaluation at seq_len %lld needs at least %lld (or eval_every=0)",
                  c->data, (long long)t->data.n_val, (long long)S, (long long)(S + 1));
        goto fail;
    }
    if (resume_ckpt) {
        if (ckpt_load(resume_ckpt, &t->model) != NSA_OK) goto fail;
        if (!trainer_same_model(&t->model.cfg, c, resume_ckpt)) goto fail;
        t->model.cfg = *c;  // training keys (steps, lr, ...) as resolved for this run
    } else {
        model_create(&t->model, c);
        model_init_params(&t->model, (uint64_t)c->seed);
    }
    model_alloc_grads(&t->model);
    adamw_init(&t->opt, t->model.n_elems);
    if (resume_ckpt) {
        int r = ckpt_load_train(resume_ckpt, &t->model, t->opt.m, t->opt.v, &t->st);
        if (r != NSA_OK) {
            if (r == 1)
                nsa_error("%s has no /optim or /state: a weights-only checkpoint cannot be resumed", resume_ckpt);
            goto fail;
        }
        memcpy(t->rng.s, t->st.rng, sizeof t->rng.s);
    } else {
        // The data generator is seeded apart from the weights' initialisation stream.
        rng_seed(&t->rng, (uint64_t)c->seed ^ 0x5eedda7a5eedda7aULL);
    }
    arena_init(&t->arena, 0);
    arena_init(&t->scratch_arena, 0);
    arena_init(&t->eval_arena, 0);
    graph_init(&t->graph, &t->arena);
    graph_init(&t->scratch, &t->scratch_arena);
    graph_init(&t->eval_graph, &t->eval_arena);
    watch_init(&t->watch);
    t->graph.watch = &t->watch;
    t->eval_graph.watch = &t->watch;
    t->tokens = nsa_malloc((size_t)(B * S) * sizeof *t->tokens);
    t->targets = nsa_malloc((size_t)(B * S) * sizeof *t->targets);
    t->starts = nsa_malloc((size_t)(B * c->grad_accum) * sizeof *t->starts);
    if (c->grad_accum > 1) t->grad_sum = nsa_malloc((size_t)t->model.n_elems * sizeof *t->grad_sum);
    t->mb_loss = nsa_malloc((size_t)c->grad_accum * sizeof *t->mb_loss);
    t->all_loss = nsa_malloc((size_t)c->grad_accum * sizeof *t->all_loss);
    return NSA_OK;
fail:
    trainer_free(t);
    return NSA_ERR;
}

void trainer_free(Trainer *t) {
    if (t->wd) watchdog_stop(t->wd);
    free(t->tokens);
    free(t->targets);
    free(t->starts);
    free(t->grad_sum);
    free(t->gather);
    free(t->mb_loss);
    free(t->all_loss);
    free(t->win_loss);
    free(t->all_win);
    graph_free(&t->graph);
    graph_free(&t->scratch);
    graph_free(&t->eval_graph);
    arena_free(&t->arena);
    arena_free(&t->scratch_arena);
    arena_free(&t->eval_arena);
    adamw_free(&t->opt);
    model_free(&t->model);
    dataset_free(&t->data);
    memset(t, 0, sizeof *t);
}

// FNV-1a over 64-bit words: enough to tell that two ranks loaded different states.
static uint64_t hash_words(uint64_t h, const void *p, size_t bytes) {
    const unsigned char *b = p;
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    for (size_t i = bytes & ~(size_t)7; i < bytes; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

int trainer_distribute(Trainer *t, const Dist *d) {
    const Config *c = &t->cfg;
    t->dist = *d;
    t->dist.comm_s = 0;
    int N = d->size;
    if (N == 1) return NSA_OK;
    if (c->grad_accum % N != 0) {
        // Every rank finds the same; one line is enough.
        if (d->rank == 0)
            nsa_error("grad_accum %lld is not a multiple of the %d ranks: each rank takes whole micro-batches "
                      "of the batch_size x grad_accum windows of a step (set grad_accum to a multiple of %d)",
                      (long long)c->grad_accum, N, N);
        return NSA_ERR;
    }
    int64_t W = c->eval_batches * c->batch_size, per = (W + N - 1) / N;
    int64_t chunk = t->model.n_elems < DIST_CHUNK ? t->model.n_elems : DIST_CHUNK;
    t->gather = nsa_malloc((size_t)(N * chunk) * sizeof *t->gather);
    t->win_loss = nsa_malloc((size_t)(per > 0 ? per : 1) * sizeof *t->win_loss);
    t->all_win = nsa_malloc((size_t)(N * (per > 0 ? per : 1)) * sizeof *t->all_win);
    // Every rank read the run's state itself: all must start from rank 0's bits.
    const Model *m = &t->model;
    size_t bytes = (size_t)m->n_elems * sizeof(float);
    uint64_t h = 0xcbf29ce484222325ULL;
    h = hash_words(h, m->data, bytes);
    h = hash_words(h, t->opt.m, bytes);
    h = hash_words(h, t->opt.v, bytes);
    h = hash_words(h, t->rng.s, sizeof t->rng.s);
    h = hash_words(h, &t->st, sizeof t->st);
    uint64_t *all = nsa_malloc((size_t)N * sizeof *all);
    dist_allgather_u64(&t->dist, all, &h, 1);
    int bad = -1;
    for (int r = N - 1; r > 0; r--)
        if (all[r] != all[0]) bad = r;
    free(all);
    if (bad > 0) {
        if (d->rank == 0)
            nsa_error("rank %d starts from other parameters or data state than rank 0 (every rank must read the "
                      "same run: put run_dir and the checkpoint on a filesystem all ranks share)",
                      bad);
        return NSA_ERR;
    }
    return NSA_OK;
}

// The step's window starts, uniform in [0, n_train − S − 1]: all grad_accum × batch_size
// of them on every rank, so the generator moves the same whatever the rank count and a
// checkpoint resumes under any.
static void draw_step(Trainer *t) {
    int64_t S = t->cfg.seq_len, n = t->cfg.batch_size * t->cfg.grad_accum;
    for (int64_t i = 0; i < n; i++) {
        t->starts[i] = (int64_t)rng_below(&t->rng, (uint64_t)(t->data.n_train - S));
        t->st.data_position++;  // windows drawn so far
    }
}

// tokens/targets (B, S) of micro-batch a of the step.
static void fill_batch(Trainer *t, int64_t a) {
    int64_t S = t->cfg.seq_len, B = t->cfg.batch_size;
    for (int64_t b = 0; b < B; b++) {
        const uint16_t *w = t->data.train + t->starts[a * B + b];
        for (int64_t i = 0; i < S; i++) {
            t->tokens[b * S + i] = w[i];
            t->targets[b * S + i] = w[i + 1];
        }
    }
}

static void layer_of(const char *name, char *out, size_t n) {
    int l;
    if (sscanf(name, "layers.%d.", &l) == 1) snprintf(out, n, "layer %d", l);
    else snprintf(out, n, "outside the layers");
}

// Names where the non-finite values are, for the warning and the final diagnostic.
static void describe_nonfinite(const Trainer *t, double loss, char *msg, size_t n) {
    const Model *m = &t->model;
    int ng, np;
    int ig = param_nonfinite(m, m->grad, &ng), ip = param_nonfinite(m, m->data, &np);
    char where[64];
    int k = snprintf(msg, n, "loss %g", loss);
    if (ig >= 0) {
        layer_of(m->params[ig].name, where, sizeof where);
        k += snprintf(msg + k, n - (size_t)k,
                      ", non-finite gradient in %d of %d parameters, nearest the loss %s (%s)", ng, m->n_params,
                      m->params[ig].name, where);
    }
    if (ip >= 0 && (size_t)k < n) {
        layer_of(m->params[ip].name, where, sizeof where);
        snprintf(msg + k, n - (size_t)k, ", parameter %s (%s) itself is non-finite", m->params[ip].name, where);
    }
}

int trainer_step(Trainer *t, StepStats *s) {
    const Config *c = &t->cfg;
    Model *m = &t->model;
    int B = (int)c->batch_size, S = (int)c->seq_len;
    double t0 = nsa_now();
    ForwardOpts fo = {0};
    fo.checkpoint = c->checkpoint == CKPT_LAYER;
    fo.scratch = &t->scratch;
    Dist *d = &t->dist;
    int64_t A = c->grad_accum, N = d->size, rounds = A / N;
    double comm0 = d->comm_s;
    draw_step(t);
    // Round j: this rank's micro-batch is j·N + rank. Its gradient is taken alone (zeroed
    // first: backward accumulates) and joins the sum in micro-batch order. With one
    // micro-batch the gradient is the sum and stays where backward left it.
    for (int64_t j = 0; j < rounds; j++) {
        fill_batch(t, j * N + d->rank);
        model_zero_grads(m);
        Forward f;
        watch_phase(&t->watch, WATCH_FORWARD);
        model_forward(m, &t->graph, t->tokens, t->targets, B, S, &fo, &f);
        watch_phase(&t->watch, WATCH_BACKWARD);
        graph_backward(&t->graph, f.loss);
        t->mb_loss[j] = f.loss->data[0];
        // Reset now rather than before the next forward: the first step's overflow is folded
        // into one buffer here, so no later step allocates.
        graph_reset(&t->graph);
        if (A > 1) {
            watch_phase(&t->watch, WATCH_COMM);
            t->watch.op = "gradient allgather";
            dist_sum_ordered(d, t->grad_sum, m->grad, m->n_elems, j == 0, t->gather);
        }
    }
    if (A > 1) memcpy(m->grad, t->grad_sum, (size_t)m->n_elems * sizeof *m->grad);
    watch_phase(&t->watch, WATCH_COMM);
    t->watch.op = "loss allgather";
    dist_allgather_f32(d, t->all_loss, t->mb_loss, rounds);
    double loss = 0.0;
    for (int64_t a = 0; a < A; a++) loss += t->all_loss[(a % N) * rounds + a / N];
    watch_phase(&t->watch, WATCH_OPTIMIZER);
    loss /= (double)c->grad_accum;
    grad_scale(m->grad, m->n_elems, (float)(1.0 / (double)c->grad_accum));
    double norm = grad_global_norm(m->grad, m->n_elems);
    int64_t step = t->st.step + 1;
    double lr = lr_at(c, step);
    memset(s, 0, sizeof *s);
    s->loss = loss, s->lr = lr, s->grad_norm = norm;
    int rc = NSA_OK;
    if (!isfinite(loss) || !isfinite(norm)) {
        s->skipped = 1;
        t->bad_steps++;
        char msg[600];
        describe_nonfinite(t, loss, msg, sizeof msg);
        // Every rank holds the same gradient and decides alike; rank 0 speaks for all.
        if (t->bad_steps >= c->max_bad_steps) {
            if (d->rank == 0)
                nsa_error("stopping at step %lld: %d non-finite steps in a row (max_bad_steps); last: %s",
                          (long long)step, t->bad_steps, msg);
            rc = NSA_ERR;
        } else if (d->rank == 0) {
            nsa_warn("step %lld skipped (%d in a row): %s", (long long)step, t->bad_steps, msg);
        }
    } else {
        t->bad_steps = 0;
        if (c->grad_clip > 0 && norm > c->grad_clip)
            grad_scale(m->grad, m->n_elems, (float)(c->grad_clip / norm));
        adamw_step(&t->opt, m, step, lr, c);
    }
    // A skipped step still consumes its batch and its place in the schedule.
    if (rc == NSA_OK) {
        t->st.step = step;
        t->st.tokens_seen += (int64_t)B * S * c->grad_accum;
    }
    watch_phase(&t->watch, WATCH_IDLE);
    s->seconds = nsa_now() - t0;
    s->comm_s = d->comm_s - comm0;
    return rc;
}

double trainer_eval(Trainer *t) {
    const Config *c = &t->cfg;
    Dist *d = &t->dist;
    int W = (int)(c->eval_batches * c->batch_size);
    if (W < 1) W = 1;
    double loss;
    if (d->size == 1) {
        loss = model_loss_windows(&t->model, &t->eval_graph, t->data.val, t->data.n_val, (int)c->seq_len, W,
                                  t->tokens, t->targets);
    } else {
        // Window w is rank w mod N's; the losses come back rank-major and are summed in
        // window order, as model_loss_windows sums them.
        int N = d->size, per = (W + N - 1) / N, k = 0;
        for (int w = d->rank; w < W; w += N)
            t->win_loss[k++] = model_loss_window(&t->model, &t->eval_graph, t->data.val, t->data.n_val,
                                                 (int)c->seq_len, W, w, t->tokens, t->targets);
        watch_phase(&t->watch, WATCH_COMM);
        t->watch.op = "eval allgather";
        dist_allgather_f32(d, t->all_win, t->win_loss, per);
        double total = 0.0;
        for (int w = 0; w < W; w++) total += t->all_win[(w % N) * per + w / N];
        loss = total / W;
    }
    watch_phase(&t->watch, WATCH_IDLE);
    return loss;
}

int trainer_save(Trainer *t) {
    const Config *c = &t->cfg;
    char name[64], path[NSA_PATH_MAX];
    rundir_ckpt_name(name, sizeof name, t->st.step);
    if (path_fmt(path, sizeof path, "%s/%s", c->run_dir, name) != NSA_OK) return NSA_ERR;
    memcpy(t->st.rng, t->rng.s, sizeof t->st.rng);
    if (ckpt_save(path, &t->model, t->opt.m, t->opt.v, &t->st) != NSA_OK) return NSA_ERR;
    return rundir_commit_ckpt(c->run_dir, name, c->keep_ckpts);
}
