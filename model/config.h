// config.h: every model and training setting, under DESIGN.md's key names. One table
// (config.c) drives parsing of .cfg files and --set, validation, and the /config
// attributes of checkpoints, so a key cannot be known to one and missing from another.
#ifndef NSA_CONFIG_H
#define NSA_CONFIG_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#define CFG_MAX_LAYERS 64

typedef struct {
    // model
    int64_t vocab_size, d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, seq_len;
    char attn[512];                 // "nsa", "dense" or a comma list, one per layer
    int64_t cmp_block, cmp_stride, slc_block, slc_topn, window;  // l, d, l', n, w
    char cmp_fn[16];                // mlp | linear | mean
    char kv[16];                    // shared | separate
    char gate_act[16];              // sigmoid | softmax
    int64_t gate_hidden;            // Dg; 0 in a file means d_model
    double rope_theta, norm_eps;
    int64_t tie_embeddings;
    // training
    int64_t batch_size, grad_accum, steps, warmup;
    double lr, min_lr, weight_decay, beta1, beta2, grad_clip;
    int64_t eval_every, eval_batches, ckpt_every, keep_ckpts, log_every;
    char checkpoint[16];            // none | layer
    int64_t seed;
    char data[512];                 // dataset path
    char run_dir[512];              // where logs and checkpoints go
    double step_timeout;            // watchdog deadline per phase in seconds (0: off)
    int64_t max_bad_steps;          // consecutive non-finite steps before the run stops
} Config;

typedef enum { CFG_INT, CFG_REAL, CFG_STR } CfgType;

typedef struct {
    const char *name;
    CfgType type;
    size_t offset;
    size_t size;    // CFG_STR: buffer size
    int model;      // 1: defines the network (checked against checkpoints)
} CfgKey;

extern const CfgKey cfg_keys[];
extern const int cfg_n_keys;

void config_defaults(Config *c);
const CfgKey *config_key(const char *name);
// key=value; returns NSA_ERR with a message for an unknown key or a bad value.
int config_set(Config *c, const char *assignment);
// Reads a .cfg file ("key = value" lines, '#' comments). `name` without '/' or ".cfg"
// is looked up in data/configs/.
int config_load(Config *c, const char *name);
// Resolves derived defaults (gate_hidden) and checks every rule; one line on failure.
int config_validate(Config *c);
// Layer i is NSA (1) or dense (0); valid after config_validate.
int config_layer_is_nsa(const Config *c, int layer);
int config_fprint(const Config *c, FILE *f);

#endif
