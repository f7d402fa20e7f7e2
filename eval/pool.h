// pool.h: the block pool: every sequence's K/V in fixed pages of slc_block tokens, shared
// by all sequences, with reference counts so that named sessions can share a prefix.
#ifndef NSA_POOL_H
#define NSA_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/attn_paged.h"
#include "model/config.h"

// Page p of layer i holds page_len tokens at k[i] + (p * page_len + r) * row_floats[i] for its
// rows r, each row the layer's K/V sets (kv=separate NSA layers: cmp, slc, win; else one)
// times G heads times Dh floats. A page id is taken for every layer at once (every layer of a
// sequence grows alike), so one page table per sequence serves all layers.
typedef struct {
    int n_layers, page_len, n_pages, G, Dh;
    int sets[CFG_MAX_LAYERS];
    size_t row_floats[CFG_MAX_LAYERS];
    float *k[CFG_MAX_LAYERS], *v[CFG_MAX_LAYERS];
    int32_t *refs;       // [n_pages] holders of each page; 0: free
    int32_t *free_list;  // [n_pages] stack of free ids, the next one taken last
    int n_free;
} Pool;

// NSA_ERR with a message when n_pages < 1.
int pool_init(Pool *p, const Config *cfg, int n_pages);
void pool_free(Pool *p);
int pool_pages_free(const Pool *p);
// A free page with one holder, or -1 when none is left.
int32_t pool_take(Pool *p);
void pool_ref(Pool *p, int32_t page);
// Drops one holder; the page is free again when none is left.
void pool_release(Pool *p, int32_t page);
// Rows [0, rows) of page src copied to page dst in every layer (copy-on-write of a shared
// partly filled page).
void pool_copy_rows(Pool *p, int32_t dst, int32_t src, int rows);
// Set `set` of layer `layer` as a paged K/V view through the page table `pages`.
KvPaged pool_view(const Pool *p, int layer, int set, const int32_t *pages);
// Writes set `set` of n tokens (k, v [n, G*Dh]) at positions p0 .. p0 + n - 1.
void pool_write(Pool *p, int layer, int set, const int32_t *pages, int p0, int n, const float *k,
                const float *v);

#endif
