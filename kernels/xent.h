// xent.h: softmax cross-entropy of logits against target ids, in nats.
#ifndef NSA_XENT_H
#define NSA_XENT_H

#include <stdint.h>

// Per row r of logits [rows, V]: lse[r] = log Σ_j exp(logits[r, j]) and
// loss[r] = lse[r] − logits[r, targets[r]]. Rows are independent (a decode step is rows = 1).
void xent_forward(float *loss, float *lse, const float *logits, const int32_t *targets, int64_t rows,
                  int64_t V);
// Mean of loss [rows], summed in double in row order: bit-reproducible.
float xent_mean(const float *loss, int64_t rows);
// dlogits += dmean / rows · (softmax(logits) − onehot(target)), the gradient of the mean
// loss scaled by dmean (its incoming gradient).
void xent_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                   float dmean, int64_t rows, int64_t V);

#endif
