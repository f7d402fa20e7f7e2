// config.h: every model and training setting, under DESIGN.md's key names. One table
// (config.c) drives parsing of .cfg files and --set, validation, and the /config
// attributes of checkpoints, so a key cannot be known to one and missing from another.
#ifndef NSA_CONFIG_H
#define NSA_CONFIG_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#include "kernels/gate.h"

// Limits config_validate enforces, so that no value can ask for an absurd allocation or
// overflow the int sizes the kernels take. Every command validates through it.
#define CFG_MAX_LAYERS 64
#define CFG_MAX_VOCAB 65536                  // token ids are uint16
#define CFG_MAX_D_MODEL 16384
#define CFG_MAX_FFN_DIM 65536                // ffn_dim and gate_hidden
#define CFG_MAX_HEADS 256                    // n_heads (n_kv_heads divides it); head_dim <= NSA_MAX_HEAD_DIM
#define CFG_MAX_SEQ_LEN (1 << 20)            // seq_len, and cmp_block, slc_block, window
#define CFG_MAX_TOPN 1024                    // slc_topn (a query tile keeps up to 64·n block ids on the stack)
#define CFG_MAX_BATCH 65536                  // batch_size, grad_accum, eval_batches
#define CFG_MAX_TOKENS (1 << 24)             // batch_size·seq_len tokens; eval_batches·batch_size windows
#define CFG_MAX_ELEMS ((int64_t)1 << 31)     // total parameters; widest activation (tokens × width)

typedef enum { CMP_MLP, CMP_LINEAR, CMP_MEAN } CmpFn;      // cmp_fn
typedef enum { KV_SHARED, KV_SEPARATE } KvMode;            // kv
typedef enum { CKPT_NONE, CKPT_LAYER } CkptMode;           // checkpoint (gradient checkpointing)
// gate_act is GateAct (kernels/gate.h): GATE_SIGMOID, GATE_SOFTMAX.

typedef struct {
    // model
    int64_t vocab_size, d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, seq_len;
    char attn[512];                 // "nsa", "dense" or a comma list, one per layer
    int64_t cmp_block, cmp_stride, slc_block, slc_topn, window;  // l, d, l', n, w
    CmpFn cmp_fn;
    KvMode kv;
    GateAct gate_act;
    int64_t gate_hidden;            // Dg; 0 in a file means d_model
    double rope_theta, norm_eps;
    int64_t tie_embeddings;
    // training
    int64_t batch_size, grad_accum, steps, warmup;
    double lr, min_lr, weight_decay, beta1, beta2, grad_clip;
    int64_t eval_every, eval_batches, ckpt_every, keep_ckpts, log_every;
    CkptMode checkpoint;
    int64_t seed;
    char data[512];                 // dataset path
    char run_dir[512];              // where logs and checkpoints go
    double step_timeout;            // watchdog deadline per phase in seconds (0: off)
    int64_t max_bad_steps;          // consecutive non-finite steps before the run stops
    // derived by config_validate (not keys)
    int validated;                  // 1 once config_validate passed; config_set_value clears it
    unsigned char layer_nsa[CFG_MAX_LAYERS];  // layer i is NSA (1) or dense (0), from attn
} Config;

typedef enum { CFG_INT, CFG_REAL, CFG_STR, CFG_ENUM } CfgType;

typedef struct {
    const char *name;
    CfgType type;
    size_t offset;
    size_t size;                    // CFG_STR: buffer size
    int model;                      // 1: defines the network (checked against checkpoints)
    const char *const *names;       // CFG_ENUM: the value v is spelled names[v]; NULL-terminated
} CfgKey;

extern const CfgKey cfg_keys[];
extern const int cfg_n_keys;

void config_defaults(Config *c);
const CfgKey *config_key(const char *name);
// key=value; returns NSA_ERR with a message for an unknown key or a bad value.
int config_set(Config *c, const char *assignment);
// Parses `value` as key k's type (CFG_ENUM: one of its names) into c; on failure one line
// that starts with `where` (e.g. "ckpt.h5: /config: ", or "").
int config_set_value(Config *c, const CfgKey *k, const char *value, const char *where);
// The spelling of CFG_ENUM key k's current value in c (what files and logs show).
const char *config_enum_name(const CfgKey *k, const Config *c);
// Reads a .cfg file ("key = value" lines, '#' comments; a key given twice: the last wins).
// A `name` with '/' or ending in ".cfg" is a path; any other name is NAME.cfg looked up in
// $NSA_CONFIG_DIR, then <directory of the executable>/../data/configs, then ./data/configs.
int config_load(Config *c, const char *name);
// Resolves derived defaults (gate_hidden, layer_nsa) and checks every rule of every key,
// model and training alike (the one validation all commands use); one line on failure.
int config_validate(Config *c);
// Parameter count of the model c describes (c validated, or its sizes within limits).
int64_t config_n_params(const Config *c);
// Layer i is NSA (1) or dense (0); valid after config_validate.
int config_layer_is_nsa(const Config *c, int layer);
int config_fprint(const Config *c, FILE *f);

#endif
