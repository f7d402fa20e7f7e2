// nsa_shape.h: the shape every NSA kernel takes, its block counts and visibility rule, and
// the query-tile iterator that the one-pass backwards of the compressed and selected branches share.
#ifndef NSA_NSA_SHAPE_H
#define NSA_NSA_SHAPE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/attention.h"

// Layouts (float32, row-major) as in attention.h: q [B, T, H, Dh]; k, v [B, T, G, Dh];
// lse [B, T, H]. Every score is scaled by 1/sqrt(Dh). The sizes are checked once, by
// config_validate (model/config.c): d divides l and l', H % G == 0, Dh <= NSA_MAX_HEAD_DIM.
typedef struct {
    int B, T, H, G, Dh;
    int cmp_block, cmp_stride;  // l, d   (d divides l)
    int slc_block, slc_topn;    // l', n  (d divides l')
    int window;                 // w
} NsaShape;

// The tile kernels keep [Dh][64] float blocks on the stack (~1.3 KB per unit of Dh).
#define NSA_MAX_HEAD_DIM 256

static inline int nsa_imin(int a, int b) { return a < b ? a : b; }
static inline int nsa_imax(int a, int b) { return a > b ? a : b; }

int nsa_n_cmp(const NsaShape *s);  // compressed blocks: T >= l ? (T - l) / d + 1 : 0
int nsa_n_slc(const NsaShape *s);  // selection blocks: ceil(T / l')

// Compressed blocks visible to query t (of Nc): block i is visible iff i*d + l - 1 <= t.
static inline int nsa_cmp_visible(const NsaShape *s, int Nc, int t) {
    if (t < s->cmp_block - 1) return 0;
    return nsa_imin(Nc, (t - s->cmp_block + 1) / s->cmp_stride + 1);
}

// Query tiles for one key block of a backward pass: positions [t, tend) (or list[t..tend)
// when list is set: the selected branch's inverse index) times the group's heads in chunks
// of hb. Ranges: compressed blocks visible to t, or with list set the tokens of the
// selection block [blo, bhi) up to t. nsa_query_next is an AttnTileIter over it.
// Heads [hbeg, hend) of the group (hend = 0: all of them); h0 starts at hbeg.
typedef struct {
    const NsaShape *s;
    int b, g, hb, qb;
    int t, h0, tend;  // cursor
    const int32_t *list;
    int blo, bhi;
    int hbeg, hend;
} NsaQueryIter;

int nsa_query_next(AttnTile *tl, void *ctx);

#endif
