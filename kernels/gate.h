// gate.h: the NSA gate (DESIGN.md "Gate" and "Output"): per (row, head), branch weights
// act(z) mix the compressed, selected and window outputs, o = Σ_branch g_branch · o_branch.
#ifndef NSA_GATE_H
#define NSA_GATE_H

#include <stdint.h>

// The config's gate_act: sigmoid per branch (the paper) or softmax over the three.
typedef enum { GATE_SIGMOID, GATE_SOFTMAX } GateAct;

// Gate logits z [rows, 3H] are branch-major, as the gate MLP's fc2 rows: cmp heads 0..H−1,
// then slc, then win. Branch outputs oc, os, ow and y are [rows, H, Dh].
// gw [rows, 3H] = act(z), the gate values themselves (same layout as z).
void gate_weights_forward(float *gw, const float *z, int64_t rows, int64_t H, GateAct act);
// y = g_cmp · oc + g_slc · os + g_win · ow, per (row, head).
void gate_forward(float *y, const float *z, const float *oc, const float *os, const float *ow,
                  int64_t rows, int64_t H, int64_t dh, GateAct act);
// dz, doc, dos, dow += their gradients; any may be NULL (not wanted). Bit i of `fresh`
// (dz, doc, dos, dow in that order) marks a buffer as fresh: written as +0 + its gradient,
// the bits of zeroing it first, without reading it.
void gate_backward(float *dz, float *doc, float *dos, float *dow, int fresh, const float *dy, const float *z,
                   const float *oc, const float *os, const float *ow, int64_t rows, int64_t H,
                   int64_t dh, GateAct act);

#endif
