// checkpoint.h: DESIGN.md's checkpoint file: /config, /params, /optim/{m,v}, /state.
// Written through data/atomic.h: a crash never leaves a half-written checkpoint.
#ifndef NSA_CHECKPOINT_H
#define NSA_CHECKPOINT_H

#include <hdf5.h>
#include <stdint.h>

#include "model/model.h"

typedef struct {
    int64_t step, data_position, tokens_seen;
    uint64_t rng[4];
} TrainState;

// adam_m / adam_v (n_elems each) and st may be NULL: then /optim or /state is omitted.
int ckpt_save(const char *path, const Model *m, const float *adam_m, const float *adam_v,
              const TrainState *st);
// Reads /config over `cfg` (which holds defaults or the caller's settings) and validates it.
int ckpt_read_config(const char *path, Config *cfg);
// The /config group alone, for the formats that share it (data/q4k_file.h). Reading
// validates the config and reports one line naming `path` on failure.
int ckpt_config_write(hid_t f, const Config *c);
int ckpt_config_read(hid_t f, Config *c, const char *path);
// Total bytes the datasets directly under `group` store (declared size, each checked to be
// a dataset whose data is really in the file); -1 after an error line naming `what`. What
// loaders compare with the config's needs before allocating anything for it.
int64_t ckpt_stored_bytes(hid_t f, const char *group, const char *what);
// NSA_OK if every value of the parameters' tensors in `base` (m->data, or an AdamW moment
// laid out like it) is finite (and, with nonneg, >= 0); else one error line naming the
// first bad one as <path>: /<group>/<name>[index].
int ckpt_check_finite(const Model *m, const float *base, const char *group, int nonneg, const char *path);
// Creates *m from the file's config and reads every parameter, checking names, shapes,
// types, storage and that every value is finite.
int ckpt_load(const char *path, Model *m);
// Reads /optim and /state (moments finite, v >= 0; step, data_position, tokens_seen >= 0;
// rng four unsigned integers, not all zero); returns 1 if the file has none
// (weights-only checkpoint).
int ckpt_load_train(const char *path, const Model *m, float *adam_m, float *adam_v, TrainState *st);

#endif
