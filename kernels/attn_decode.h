// attn_decode.h: the online-softmax forward of a query tile with few rows (a decode step:
// one position times a group's heads), keys as the vector lanes.
#ifndef NSA_ATTN_DECODE_H
#define NSA_ATTN_DECODE_H

#include <stddef.h>

#include "kernels/attention.h"

// attn_tile_forward's contract and bits: every row goes through the same operations in the
// same order (q scaled then dotted over e ascending with fmaf, chunk max, exp against the
// running max, sums and the V accumulation over keys ascending), so a row's result is the
// same whichever of the two kernels runs it. attn_tile_forward spends 64 query lanes per
// tile, 4 of them used by one decode position of a 4-head group; here the 64 lanes are the
// keys of a chunk, full whatever the row count.
void attn_rows_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                       size_t kv_stride, const AttnTile *tl, AttnChunkIter next, void *ctx, int Dh);

// Rows up to which the callers (paged attention, compressed decode) pick attn_rows_forward.
#define ATTN_ROWS_KERNEL_MAX 16

#endif
