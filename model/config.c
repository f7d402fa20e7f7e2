// config.c: the key table, defaults, parsing and validation of Config.
#include "model/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

#define K(name, type, model) {#name, type, offsetof(Config, name), sizeof(((Config *)0)->name), model}

const CfgKey cfg_keys[] = {
    K(vocab_size, CFG_INT, 1),   K(d_model, CFG_INT, 1),     K(n_layers, CFG_INT, 1),
    K(n_heads, CFG_INT, 1),      K(n_kv_heads, CFG_INT, 1),  K(head_dim, CFG_INT, 1),
    K(ffn_dim, CFG_INT, 1),      K(seq_len, CFG_INT, 1),     K(attn, CFG_STR, 1),
    K(cmp_block, CFG_INT, 1),    K(cmp_stride, CFG_INT, 1),  K(slc_block, CFG_INT, 1),
    K(slc_topn, CFG_INT, 1),     K(window, CFG_INT, 1),      K(cmp_fn, CFG_STR, 1),
    K(kv, CFG_STR, 1),           K(gate_act, CFG_STR, 1),    K(gate_hidden, CFG_INT, 1),
    K(rope_theta, CFG_REAL, 1),  K(norm_eps, CFG_REAL, 1),   K(tie_embeddings, CFG_INT, 1),
    K(batch_size, CFG_INT, 0),   K(grad_accum, CFG_INT, 0),  K(steps, CFG_INT, 0),
    K(lr, CFG_REAL, 0),          K(warmup, CFG_INT, 0),      K(min_lr, CFG_REAL, 0),
    K(weight_decay, CFG_REAL, 0), K(beta1, CFG_REAL, 0),     K(beta2, CFG_REAL, 0),
    K(grad_clip, CFG_REAL, 0),   K(eval_every, CFG_INT, 0),  K(eval_batches, CFG_INT, 0),
    K(ckpt_every, CFG_INT, 0),   K(keep_ckpts, CFG_INT, 0),  K(log_every, CFG_INT, 0),
    K(checkpoint, CFG_STR, 0),   K(seed, CFG_INT, 0),        K(data, CFG_STR, 0),
    K(run_dir, CFG_STR, 0),      K(step_timeout, CFG_REAL, 0), K(max_bad_steps, CFG_INT, 0),
};
const int cfg_n_keys = (int)(sizeof cfg_keys / sizeof cfg_keys[0]);

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    // The `tiny` shape, so a config file need only say what differs.
    c->vocab_size = 256, c->d_model = 64, c->n_layers = 2, c->n_heads = 4, c->n_kv_heads = 2;
    c->head_dim = 16, c->ffn_dim = 192, c->seq_len = 128;
    strcpy(c->attn, "nsa");
    c->cmp_block = 16, c->cmp_stride = 8, c->slc_block = 16, c->slc_topn = 4, c->window = 32;
    strcpy(c->cmp_fn, "mlp");
    strcpy(c->kv, "shared");
    strcpy(c->gate_act, "sigmoid");
    c->gate_hidden = 0;
    c->rope_theta = 10000.0, c->norm_eps = 1e-5, c->tie_embeddings = 1;
    c->batch_size = 8, c->grad_accum = 1, c->steps = 1000, c->warmup = 100;
    c->lr = 1e-3, c->min_lr = 1e-4, c->weight_decay = 0.1, c->beta1 = 0.9, c->beta2 = 0.95;
    c->grad_clip = 1.0;
    c->eval_every = 200, c->eval_batches = 8, c->ckpt_every = 200, c->keep_ckpts = 3;
    c->log_every = 1;
    strcpy(c->checkpoint, "none");
    c->seed = 1234;
    strcpy(c->data, "data/kjv.h5");
    strcpy(c->run_dir, "runs/default");
    c->step_timeout = 0.0;
    c->max_bad_steps = 5;
}

const CfgKey *config_key(const char *name) {
    for (int i = 0; i < cfg_n_keys; i++)
        if (strcmp(cfg_keys[i].name, name) == 0) return &cfg_keys[i];
    return NULL;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int set_value(Config *c, const CfgKey *k, const char *val) {
    char *end;
    void *dst = (char *)c + k->offset;
    errno = 0;
    switch (k->type) {
    case CFG_INT: {
        long long v = strtoll(val, &end, 10);
        if (end == val || *end || errno) {
            nsa_error("config key %s: '%s' is not an integer", k->name, val);
            return NSA_ERR;
        }
        *(int64_t *)dst = v;
        return NSA_OK;
    }
    case CFG_REAL: {
        double v = strtod(val, &end);
        if (end == val || *end || errno || !isfinite(v)) {
            nsa_error("config key %s: '%s' is not a number", k->name, val);
            return NSA_ERR;
        }
        *(double *)dst = v;
        return NSA_OK;
    }
    case CFG_STR:
        if (strlen(val) >= k->size) {
            nsa_error("config key %s: value longer than %zu characters", k->name, k->size - 1);
            return NSA_ERR;
        }
        strcpy(dst, val);
        return NSA_OK;
    }
    return NSA_ERR;
}

int config_set(Config *c, const char *assignment) {
    char buf[1024];
    if (strlen(assignment) >= sizeof buf) {
        nsa_error("setting too long: %.40s...", assignment);
        return NSA_ERR;
    }
    strcpy(buf, assignment);
    char *eq = strchr(buf, '=');
    if (!eq) {
        nsa_error("expected key=value, got '%s'", assignment);
        return NSA_ERR;
    }
    *eq = 0;
    char *key = trim(buf), *val = trim(eq + 1);
    const CfgKey *k = config_key(key);
    if (!k) {
        nsa_error("unknown config key '%s' (see DESIGN.md or `nsa train --help` for the list)", key);
        return NSA_ERR;
    }
    return set_value(c, k, val);
}

int config_load(Config *c, const char *name) {
    char path[1024];
    if (strchr(name, '/') || strstr(name, ".cfg"))
        snprintf(path, sizeof path, "%s", name);
    else
        snprintf(path, sizeof path, "data/configs/%s.cfg", name);
    FILE *f = fopen(path, "r");
    if (!f) {
        nsa_error("cannot open config %s: %s", path, strerror(errno));
        return NSA_ERR;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        if (!strchr(s, '=')) {
            nsa_error("%s:%d: expected key = value", path, lineno);
            fclose(f);
            return NSA_ERR;
        }
        if (config_set(c, s) != NSA_OK) {
            fprintf(stderr, "  (in %s:%d)\n", path, lineno);
            fclose(f);
            return NSA_ERR;
        }
    }
    fclose(f);
    return NSA_OK;
}

static int one_of(const char *key, const char *val, const char *a, const char *b, const char *c) {
    if (!strcmp(val, a) || !strcmp(val, b) || (c && !strcmp(val, c))) return 1;
    nsa_error("config key %s: '%s' is not one of %s, %s%s%s", key, val, a, b, c ? ", " : "", c ? c : "");
    return 0;
}

// Parses attn into per-layer flags; returns the number of entries or -1.
static int parse_attn(const char *attn, int64_t n_layers, int *is_nsa) {
    if (!strcmp(attn, "nsa") || !strcmp(attn, "dense")) {
        for (int64_t i = 0; i < n_layers && i < CFG_MAX_LAYERS; i++) is_nsa[i] = attn[0] == 'n';
        return (int)n_layers;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s", attn);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        tok = trim(tok);
        if (n >= CFG_MAX_LAYERS) return -1;
        if (!strcmp(tok, "nsa")) is_nsa[n++] = 1;
        else if (!strcmp(tok, "dense")) is_nsa[n++] = 0;
        else return -1;
    }
    return n;
}

int config_layer_is_nsa(const Config *c, int layer) {
    int is_nsa[CFG_MAX_LAYERS];
    int n = parse_attn(c->attn, c->n_layers, is_nsa);
    NSA_ASSERT(n == c->n_layers && layer >= 0 && layer < n);
    return is_nsa[layer];
}

#define RULE(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            nsa_error(__VA_ARGS__);                                                       \
            return NSA_ERR;                                                               \
        }                                                                                 \
    } while (0)

int config_validate(Config *c) {
    if (c->gate_hidden <= 0) c->gate_hidden = c->d_model;
    RULE(c->vocab_size >= 2 && c->vocab_size <= 65536, "vocab_size %lld must be in [2, 65536] (tokens are uint16)",
         (long long)c->vocab_size);
    RULE(c->d_model > 0 && c->n_heads > 0 && c->n_kv_heads > 0 && c->head_dim > 0 && c->ffn_dim > 0,
         "d_model, n_heads, n_kv_heads, head_dim and ffn_dim must be positive");
    RULE(c->n_layers >= 1 && c->n_layers <= CFG_MAX_LAYERS, "n_layers %lld must be in [1, %d]",
         (long long)c->n_layers, CFG_MAX_LAYERS);
    RULE(c->n_heads % c->n_kv_heads == 0, "n_heads %lld must be a multiple of n_kv_heads %lld",
         (long long)c->n_heads, (long long)c->n_kv_heads);
    RULE(c->head_dim <= 256, "head_dim %lld must be <= 256 (attention kernels keep per-row state on the stack)",
         (long long)c->head_dim);
    RULE(c->head_dim % 2 == 0, "head_dim %lld must be even (RoPE rotates pairs)", (long long)c->head_dim);
    RULE(c->seq_len >= 1, "seq_len must be positive");
    int is_nsa[CFG_MAX_LAYERS];
    int n = parse_attn(c->attn, c->n_layers, is_nsa);
    RULE(n == c->n_layers, "attn '%s' must be nsa, dense, or a comma list of %lld of them", c->attn,
         (long long)c->n_layers);
    int any_nsa = 0;
    for (int i = 0; i < n; i++) any_nsa |= is_nsa[i];
    if (!one_of("cmp_fn", c->cmp_fn, "mlp", "linear", "mean")) return NSA_ERR;
    if (!one_of("kv", c->kv, "shared", "separate", NULL)) return NSA_ERR;
    if (!one_of("gate_act", c->gate_act, "sigmoid", "softmax", NULL)) return NSA_ERR;
    if (!one_of("checkpoint", c->checkpoint, "none", "layer", NULL)) return NSA_ERR;
    if (any_nsa) {
        RULE(c->cmp_block > 0 && c->cmp_stride > 0 && c->slc_block > 0 && c->slc_topn > 0 && c->window > 0,
             "cmp_block, cmp_stride, slc_block, slc_topn and window must be positive");
        RULE(c->cmp_block % c->cmp_stride == 0, "cmp_stride %lld must divide cmp_block %lld",
             (long long)c->cmp_stride, (long long)c->cmp_block);
        RULE(c->slc_block % c->cmp_stride == 0, "cmp_stride %lld must divide slc_block %lld",
             (long long)c->cmp_stride, (long long)c->slc_block);
    }
    RULE(c->tie_embeddings == 0 || c->tie_embeddings == 1, "tie_embeddings must be 0 or 1");
    RULE(c->norm_eps > 0 && c->rope_theta > 0, "norm_eps and rope_theta must be positive");
    RULE(c->batch_size >= 1 && c->grad_accum >= 1, "batch_size and grad_accum must be >= 1");
    RULE(c->steps >= 0 && c->warmup >= 0, "steps and warmup must be >= 0");
    RULE(c->lr >= 0 && c->min_lr >= 0, "lr and min_lr must be >= 0");
    RULE(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1, "beta1 and beta2 must be in [0, 1)");
    RULE(c->keep_ckpts >= 1, "keep_ckpts must be >= 1");
    return NSA_OK;
}

int config_fprint(const Config *c, FILE *f) {
    for (int i = 0; i < cfg_n_keys; i++) {
        const CfgKey *k = &cfg_keys[i];
        const void *src = (const char *)c + k->offset;
        if (k->type == CFG_INT) fprintf(f, "%s = %lld\n", k->name, (long long)*(const int64_t *)src);
        else if (k->type == CFG_REAL) fprintf(f, "%s = %.17g\n", k->name, *(const double *)src);
        else fprintf(f, "%s = %s\n", k->name, (const char *)src);
    }
    return NSA_OK;
}
