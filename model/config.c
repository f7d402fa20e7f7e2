// config.c: the key table, defaults, parsing, named-config lookup and validation of Config.
#include "model/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/common.h"
#include "kernels/nsa_shape.h"

// Enum keys are stored as int-sized enums and written through int pointers.
_Static_assert(sizeof(CmpFn) == sizeof(int) && sizeof(KvMode) == sizeof(int) &&
                   sizeof(GateAct) == sizeof(int) && sizeof(CkptMode) == sizeof(int),
               "enum config keys must be int-sized");

static const char *const cmp_fn_names[] = {"mlp", "linear", "mean", NULL};
static const char *const kv_names[] = {"shared", "separate", NULL};
static const char *const gate_act_names[] = {"sigmoid", "softmax", NULL};
static const char *const checkpoint_names[] = {"none", "layer", NULL};

#define K(name, type, model) {#name, type, offsetof(Config, name), sizeof(((Config *)0)->name), model, NULL}
#define E(name, model) {#name, CFG_ENUM, offsetof(Config, name), sizeof(((Config *)0)->name), model, name##_names}

const CfgKey cfg_keys[] = {
    K(vocab_size, CFG_INT, 1),   K(d_model, CFG_INT, 1),     K(n_layers, CFG_INT, 1),
    K(n_heads, CFG_INT, 1),      K(n_kv_heads, CFG_INT, 1),  K(head_dim, CFG_INT, 1),
    K(ffn_dim, CFG_INT, 1),      K(seq_len, CFG_INT, 1),     K(attn, CFG_STR, 1),
    K(cmp_block, CFG_INT, 1),    K(cmp_stride, CFG_INT, 1),  K(slc_block, CFG_INT, 1),
    K(slc_topn, CFG_INT, 1),     K(window, CFG_INT, 1),      E(cmp_fn, 1),
    E(kv, 1),                    E(gate_act, 1),             K(gate_hidden, CFG_INT, 1),
    K(rope_theta, CFG_REAL, 1),  K(norm_eps, CFG_REAL, 1),   K(tie_embeddings, CFG_INT, 1),
    K(batch_size, CFG_INT, 0),   K(grad_accum, CFG_INT, 0),  K(steps, CFG_INT, 0),
    K(lr, CFG_REAL, 0),          K(warmup, CFG_INT, 0),      K(min_lr, CFG_REAL, 0),
    K(weight_decay, CFG_REAL, 0), K(beta1, CFG_REAL, 0),     K(beta2, CFG_REAL, 0),
    K(grad_clip, CFG_REAL, 0),   K(eval_every, CFG_INT, 0),  K(eval_batches, CFG_INT, 0),
    K(ckpt_every, CFG_INT, 0),   K(keep_ckpts, CFG_INT, 0),  K(log_every, CFG_INT, 0),
    E(checkpoint, 0),            K(seed, CFG_INT, 0),        K(data, CFG_STR, 0),
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
    c->cmp_fn = CMP_MLP;
    c->kv = KV_SHARED;
    c->gate_act = GATE_SIGMOID;
    c->gate_hidden = 0;
    c->rope_theta = 10000.0, c->norm_eps = 1e-5, c->tie_embeddings = 1;
    c->batch_size = 8, c->grad_accum = 1, c->steps = 1000, c->warmup = 100;
    c->lr = 1e-3, c->min_lr = 1e-4, c->weight_decay = 0.1, c->beta1 = 0.9, c->beta2 = 0.95;
    c->grad_clip = 1.0;
    c->eval_every = 200, c->eval_batches = 8, c->ckpt_every = 200, c->keep_ckpts = 3;
    c->log_every = 1;
    c->checkpoint = CKPT_NONE;
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

const char *config_enum_name(const CfgKey *k, const Config *c) {
    NSA_ASSERT(k->type == CFG_ENUM);
    int v = *(const int *)((const char *)c + k->offset);
    int n = 0;
    while (k->names[n]) n++;
    NSA_ASSERT(v >= 0 && v < n);
    return k->names[v];
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

// `where` prefixes every message ("file:line: " or ""), so each error stays one line.
static int set_value(Config *c, const CfgKey *k, const char *val, const char *where) {
    char *end;
    void *dst = (char *)c + k->offset;
    c->validated = 0;
    errno = 0;
    switch (k->type) {
    case CFG_INT: {
        long long v = strtoll(val, &end, 10);
        if (end == val || *end || errno) {
            nsa_error("%sconfig key %s: '%s' is not an integer%s", where, k->name, val,
                      errno == ERANGE ? " in range" : "");
            return NSA_ERR;
        }
        *(int64_t *)dst = v;
        return NSA_OK;
    }
    case CFG_REAL: {
        double v = strtod(val, &end);
        if (end == val || *end || errno || !isfinite(v)) {
            nsa_error("%sconfig key %s: '%s' is not a finite number", where, k->name, val);
            return NSA_ERR;
        }
        *(double *)dst = v;
        return NSA_OK;
    }
    case CFG_STR:
        if (strlen(val) >= k->size) {
            nsa_error("%sconfig key %s: value longer than %zu characters", where, k->name, k->size - 1);
            return NSA_ERR;
        }
        strcpy(dst, val);
        return NSA_OK;
    case CFG_ENUM: {
        char list[128] = "";
        for (int i = 0; k->names[i]; i++) {
            if (!strcmp(val, k->names[i])) {
                *(int *)dst = i;
                return NSA_OK;
            }
            size_t n = strlen(list);
            snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", k->names[i]);
        }
        nsa_error("%sconfig key %s: '%s' is not one of %s", where, k->name, val, list);
        return NSA_ERR;
    }
    }
    return NSA_ERR;
}

int config_set_value(Config *c, const CfgKey *k, const char *value, const char *where) {
    return set_value(c, k, value, where);
}

static int assign(Config *c, const char *assignment, const char *where) {
    char buf[1024];
    if (strlen(assignment) >= sizeof buf) {
        nsa_error("%ssetting longer than %zu characters: %.40s...", where, sizeof buf - 1, assignment);
        return NSA_ERR;
    }
    strcpy(buf, assignment);
    char *eq = strchr(buf, '=');
    if (!eq) {
        nsa_error("%sexpected key=value, got '%s'", where, assignment);
        return NSA_ERR;
    }
    *eq = 0;
    char *key = trim(buf), *val = trim(eq + 1);
    const CfgKey *k = config_key(key);
    if (!k) {
        nsa_error("%sunknown config key '%s' (see DESIGN.md or `nsa train --help` for the list)", where, key);
        return NSA_ERR;
    }
    return set_value(c, k, val, where);
}

int config_set(Config *c, const char *assignment) { return assign(c, assignment, ""); }

// Named config NAME: the first of the places config.h lists that holds NAME.cfg. On
// failure *tried lists where it looked.
static int find_named(char *path, size_t size, const char *name, char *tried, size_t tsize) {
    const char *dirs[3];
    int n = 0;
    const char *env = getenv("NSA_CONFIG_DIR");
    if (env && *env) dirs[n++] = env;
    // build/nsa and build-asan/nsa sit one level below the repository root.
    char exe[PATH_MAX + 32];
    ssize_t len = readlink("/proc/self/exe", exe, PATH_MAX - 1);
    char *slash = len > 0 ? (exe[len] = 0, strrchr(exe, '/')) : NULL;
    if (slash) {
        strcpy(slash, "/../data/configs");
        dirs[n++] = exe;
    }
    dirs[n++] = "data/configs";
    tried[0] = 0;
    for (int i = 0; i < n; i++) {
        if ((size_t)snprintf(path, size, "%s/%s.cfg", dirs[i], name) >= size) continue;
        if (access(path, F_OK) == 0) return NSA_OK;
        size_t t = strlen(tried);
        snprintf(tried + t, tsize - t, "%s%s", i ? ", " : "", path);
    }
    return NSA_ERR;
}

int config_load(Config *c, const char *name) {
    char path[PATH_MAX + 64];
    size_t nl = strlen(name);
    if (nl == 0) {
        nsa_error("empty config name");
        return NSA_ERR;
    }
    if (strchr(name, '/') || (nl > 4 && !strcmp(name + nl - 4, ".cfg"))) {
        if ((size_t)snprintf(path, sizeof path, "%s", name) >= sizeof path) {
            nsa_error("config path too long: %.60s...", name);
            return NSA_ERR;
        }
    } else {
        char tried[3 * (PATH_MAX + 64)];
        if (find_named(path, sizeof path, name, tried, sizeof tried) != NSA_OK) {
            nsa_error("cannot open config %s: not found (looked for %s; set NSA_CONFIG_DIR or give a path)", name,
                      tried);
            return NSA_ERR;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        nsa_error("cannot open config %s: %s", path, strerror(errno));
        return NSA_ERR;
    }
    if (!S_ISREG(st.st_mode)) {
        nsa_error("config %s is %s, not a file", path, S_ISDIR(st.st_mode) ? "a directory" : "special");
        return NSA_ERR;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        nsa_error("cannot open config %s: %s", path, strerror(errno));
        return NSA_ERR;
    }
    char line[1024], where[PATH_MAX + 96];
    int lineno = 0, rc = NSA_OK;
    while (rc == NSA_OK && fgets(line, sizeof line, f)) {
        lineno++;
        snprintf(where, sizeof where, "%s:%d: ", path, lineno);
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            int next = getc(f);  // a full buffer is fine only if the file ends right there
            if (next != EOF) {
                nsa_error("%sline longer than %zu characters", where, sizeof line - 2);
                rc = NSA_ERR;
                break;
            }
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        if (!strchr(s, '=')) {
            nsa_error("%sexpected key = value", where);
            rc = NSA_ERR;
        } else {
            rc = assign(c, s, where);
        }
    }
    if (rc == NSA_OK && ferror(f)) {
        nsa_error("cannot read config %s: %s", path, strerror(errno));
        rc = NSA_ERR;
    }
    fclose(f);
    return rc;
}

// Parses attn into c->layer_nsa; returns the number of entries, or -1.
static int parse_attn(Config *c) {
    if (!strcmp(c->attn, "nsa") || !strcmp(c->attn, "dense")) {
        for (int64_t i = 0; i < c->n_layers && i < CFG_MAX_LAYERS; i++) c->layer_nsa[i] = c->attn[0] == 'n';
        return (int)c->n_layers;
    }
    char buf[sizeof c->attn];
    snprintf(buf, sizeof buf, "%s", c->attn);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (n >= CFG_MAX_LAYERS) return -1;
        if (!strcmp(tok, "nsa")) c->layer_nsa[n++] = 1;
        else if (!strcmp(tok, "dense")) c->layer_nsa[n++] = 0;
        else return -1;
    }
    return n;
}

int config_layer_is_nsa(const Config *c, int layer) {
    NSA_ASSERT(c->validated && layer >= 0 && layer < c->n_layers);
    return c->layer_nsa[layer];
}

// Saturating arithmetic: a product or sum past INT64_MAX stays there, so a size check
// against a limit cannot be fooled by wrap-around.
static int64_t mul_sat(int64_t a, int64_t b) {
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) || r < 0 ? INT64_MAX : r;
}
static int64_t add_sat(int64_t a, int64_t b) {
    int64_t r;
    return __builtin_add_overflow(a, b, &r) || r < 0 ? INT64_MAX : r;
}
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Mirrors model.c's parameter table (model_create asserts that the two agree).
int64_t config_n_params(const Config *c) {
    int64_t V = c->vocab_size, D = c->d_model, H = c->n_heads, G = c->n_kv_heads, dh = c->head_dim;
    int64_t F = c->ffn_dim, Dg = c->gate_hidden > 0 ? c->gate_hidden : D, l = c->cmp_block;
    int64_t kvw = mul_sat(mul_sat(G, dh), D);  // one k or v projection
    int64_t hw = mul_sat(mul_sat(H, dh), D);   // wq or wo
    int64_t n = mul_sat(V, D);
    for (int64_t i = 0; i < c->n_layers && i < CFG_MAX_LAYERS; i++) {
        int nsa = c->layer_nsa[i];
        int64_t layer = add_sat(mul_sat(2, D), mul_sat(2, hw));                   // norms, wq, wo
        layer = add_sat(layer, mul_sat(nsa && c->kv == KV_SEPARATE ? 6 : 2, kvw));  // wk, wv
        layer = add_sat(layer, mul_sat(3, mul_sat(F, D)));                         // w1, w2, w3
        if (nsa) {
            if (c->cmp_fn != CMP_MEAN) layer = add_sat(layer, mul_sat(2, mul_sat(dh, mul_sat(l, dh))));
            if (c->cmp_fn == CMP_MLP) layer = add_sat(layer, mul_sat(2, add_sat(mul_sat(dh, dh), mul_sat(l, dh))));
            layer = add_sat(layer, add_sat(mul_sat(Dg, D), Dg));                     // gate fc1
            layer = add_sat(layer, add_sat(mul_sat(mul_sat(3, H), Dg), mul_sat(3, H))); // gate fc2
        }
        n = add_sat(n, layer);
    }
    n = add_sat(n, D);
    if (!c->tie_embeddings) n = add_sat(n, mul_sat(V, D));
    return n;
}

#define RULE(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            nsa_error(__VA_ARGS__);                                                       \
            return NSA_ERR;                                                               \
        }                                                                                 \
    } while (0)

// Integer key in [lo, hi]; `why` (may be "") explains the bound.
#define RANGE(key, lo, hi, why)                                                           \
    RULE(c->key >= (lo) && c->key <= (hi), "config key %s: %lld is not in [%lld, %lld]%s", #key,     \
         (long long)c->key, (long long)(lo), (long long)(hi), why)

int config_validate(Config *c) {
    c->validated = 0;
    // model
    RANGE(vocab_size, 2, CFG_MAX_VOCAB, " (token ids are uint16)");
    RANGE(d_model, 1, CFG_MAX_D_MODEL, "");
    RANGE(n_layers, 1, CFG_MAX_LAYERS, "");
    RANGE(n_heads, 1, CFG_MAX_HEADS, "");
    RANGE(n_kv_heads, 1, c->n_heads, " (n_kv_heads divides n_heads)");
    RULE(c->n_heads % c->n_kv_heads == 0, "n_heads %lld must be a multiple of n_kv_heads %lld",
         (long long)c->n_heads, (long long)c->n_kv_heads);
    RANGE(head_dim, 2, NSA_MAX_HEAD_DIM, " (attention kernels keep per-row state on the stack)");
    RULE(c->head_dim % 2 == 0, "head_dim %lld must be even (RoPE rotates pairs)", (long long)c->head_dim);
    RANGE(ffn_dim, 1, CFG_MAX_FFN_DIM, "");
    RANGE(seq_len, 1, CFG_MAX_SEQ_LEN, "");
    RULE(c->gate_hidden >= 0, "config key gate_hidden: %lld must be >= 0 (0 means d_model)",
         (long long)c->gate_hidden);
    if (c->gate_hidden == 0) c->gate_hidden = c->d_model;
    RANGE(gate_hidden, 1, CFG_MAX_FFN_DIM, "");
    int n = parse_attn(c);
    RULE(n == c->n_layers, "attn '%s' must be nsa, dense, or a comma list of %lld of them", c->attn,
         (long long)c->n_layers);
    int any_nsa = 0;
    for (int i = 0; i < n; i++) any_nsa |= c->layer_nsa[i];
    if (any_nsa) {
        RANGE(cmp_block, 1, CFG_MAX_SEQ_LEN, "");
        RANGE(cmp_stride, 1, c->cmp_block, "");
        RANGE(slc_block, 1, CFG_MAX_SEQ_LEN, "");
        RANGE(slc_topn, 1, CFG_MAX_TOPN, "");
        RANGE(window, 1, CFG_MAX_SEQ_LEN, "");
        RULE(c->cmp_block % c->cmp_stride == 0, "cmp_stride %lld must divide cmp_block %lld",
             (long long)c->cmp_stride, (long long)c->cmp_block);
        RULE(c->slc_block % c->cmp_stride == 0, "cmp_stride %lld must divide slc_block %lld",
             (long long)c->cmp_stride, (long long)c->slc_block);
    }
    RANGE(tie_embeddings, 0, 1, "");
    RULE(c->norm_eps > 0 && c->rope_theta > 0, "norm_eps and rope_theta must be positive");
    // training
    RANGE(batch_size, 1, CFG_MAX_BATCH, "");
    RANGE(grad_accum, 1, CFG_MAX_BATCH, "");
    RANGE(eval_batches, 0, CFG_MAX_BATCH, "");
    RULE(c->eval_every <= 0 || c->eval_batches >= 1, "eval_batches must be >= 1 when eval_every > 0");
    RULE(c->steps >= 0 && c->warmup >= 0, "steps and warmup must be >= 0");
    RULE(c->eval_every >= 0 && c->ckpt_every >= 0 && c->log_every >= 0,
         "eval_every, ckpt_every and log_every must be >= 0");
    RANGE(keep_ckpts, 1, INT_MAX, "");
    RANGE(max_bad_steps, 1, INT_MAX, "");
    RULE(c->lr > 0 && c->min_lr >= 0, "lr must be > 0 and min_lr >= 0");
    RULE(c->weight_decay >= 0 && c->grad_clip >= 0 && c->step_timeout >= 0,
         "weight_decay, grad_clip and step_timeout must be >= 0");
    RULE(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1, "beta1 and beta2 must be in [0, 1)");
    // sizes: each bound above keeps int64 far from overflow; these keep memory sane.
    int64_t tokens = mul_sat(c->batch_size, c->seq_len);
    RULE(tokens <= CFG_MAX_TOKENS, "batch_size x seq_len = %lld tokens is more than %d", (long long)tokens,
         CFG_MAX_TOKENS);
    RULE(mul_sat(c->eval_batches, c->batch_size) <= CFG_MAX_TOKENS,
         "eval_batches x batch_size = %lld windows is more than %d",
         (long long)mul_sat(c->eval_batches, c->batch_size), CFG_MAX_TOKENS);
    int64_t params = config_n_params(c);
    RULE(params <= CFG_MAX_ELEMS, "the model would have %lld parameters, more than %lld", (long long)params,
         (long long)CFG_MAX_ELEMS);
    int64_t width = max64(max64(c->vocab_size, c->ffn_dim), max64(c->n_heads * c->head_dim, c->gate_hidden));
    width = max64(width, max64(c->d_model, 3 * c->n_heads));
    int64_t act = mul_sat(tokens, width);
    if (any_nsa) {  // the compression input [B·Nc·G, l·Dh] and the selection index [B·T·G, n]
        int64_t nc = c->seq_len >= c->cmp_block ? (c->seq_len - c->cmp_block) / c->cmp_stride + 1 : 0;
        int64_t blocks = mul_sat(mul_sat(c->batch_size, nc), mul_sat(c->n_kv_heads, c->cmp_block * c->head_dim));
        if (c->cmp_fn != CMP_MEAN) act = max64(act, blocks);
        act = max64(act, mul_sat(tokens, c->n_kv_heads * c->slc_topn));
    }
    RULE(act <= CFG_MAX_ELEMS, "one batch would need an activation of %lld elements, more than %lld "
         "(reduce batch_size or seq_len)", (long long)act, (long long)CFG_MAX_ELEMS);
    c->validated = 1;
    return NSA_OK;
}

int config_fprint(const Config *c, FILE *f) {
    for (int i = 0; i < cfg_n_keys; i++) {
        const CfgKey *k = &cfg_keys[i];
        const void *src = (const char *)c + k->offset;
        if (k->type == CFG_INT) fprintf(f, "%s = %lld\n", k->name, (long long)*(const int64_t *)src);
        else if (k->type == CFG_REAL) fprintf(f, "%s = %.17g\n", k->name, *(const double *)src);
        else if (k->type == CFG_ENUM) fprintf(f, "%s = %s\n", k->name, config_enum_name(k, c));
        else fprintf(f, "%s = %s\n", k->name, (const char *)src);
    }
    return NSA_OK;
}
