// nsa.h: every NSA branch kernel in one include: shape (nsa_shape.h), compressed branch
// (nsa_cmp.h), block selection (nsa_select.h), selected attention (nsa_slc.h) and its
// materialising reference (nsa_ref.h). The gate that mixes the branches is gate.h.
#ifndef NSA_NSA_H
#define NSA_NSA_H

#include "kernels/nsa_cmp.h"
#include "kernels/nsa_ref.h"
#include "kernels/nsa_select.h"
#include "kernels/nsa_shape.h"
#include "kernels/nsa_slc.h"

#endif
