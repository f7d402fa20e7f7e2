// optim.h: AdamW (decoupled weight decay, Loshchilov & Hutter 2019), the learning-rate
// schedule (linear warmup, cosine decay to min_lr) and global-norm gradient clipping.
#ifndef NSA_OPTIM_H
#define NSA_OPTIM_H

#include <stdint.h>

#include "model/model.h"

typedef struct {
    float *m;    // (n_elems) first moment, laid out like Model.data
    float *v;    // (n_elems) second moment
    int64_t n;
} AdamW;

void adamw_init(AdamW *o, int64_t n);  // moments zeroed
void adamw_free(AdamW *o);

// Learning rate of optimiser step `step` (1-based): lr·step/warmup for step <= warmup, then
// cosine from lr down to min_lr at step == steps (and min_lr after it).
double lr_at(const Config *c, int64_t step);

// sqrt(Σ g²) in double over fixed 64k-element blocks summed in block order, so the
// result does not depend on the thread count. Non-finite if any element is.
double grad_global_norm(const float *g, int64_t n);

// Multiplies every gradient by s (accumulation average and clipping in one pass).
void grad_scale(float *g, int64_t n, float s);

// Index of the parameter with a non-finite value in `base` (laid out like Model.data)
// that is nearest the loss (the last in parameter order: where a NaN entered backward),
// or -1; *count receives how many parameters have one.
int param_nonfinite(const Model *m, const float *base, int *count);

// One AdamW update with the gradients in m->grad; step is 1-based (bias correction).
// Weight decay only where Param.decay (matrices).
void adamw_step(AdamW *o, Model *m, int64_t step, double lr, const Config *c);

#endif
