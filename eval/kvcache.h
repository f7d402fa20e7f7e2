// kvcache.h: the decode state of one sequence: its page table into the block pool (K after
// RoPE and V of every cached token, all layers) and, for NSA layers, the compressed K̃/Ṽ of
// every complete compression block, contiguous per sequence.
#ifndef NSA_KVCACHE_H
#define NSA_KVCACHE_H

#include "eval/pool.h"
#include "model/config.h"

typedef struct {
    int len;                    // positions [0, len) are cached
    int cap;                    // positions the page table covers (n_pages * page_len >= cap)
    int n_pages;
    int32_t *pages;             // [n_pages] logical block j -> pool page (also selection block j)
    int nc, nc_cap;             // complete compressed blocks cached; room for those of cap positions
    float *kc[CFG_MAX_LAYERS];  // NSA layers: [nc_cap, G, Dh] (cmp_fn's output for the cmp K/V set)
    float *vc[CFG_MAX_LAYERS];
} KvSeq;

// Pages a sequence of cap positions holds.
int kvseq_pages(const Config *cfg, int cap);
// An empty sequence with room for cap positions; takes its pages from the pool. Returns
// NSA_ERR, taking nothing and printing nothing, when the pool has too few free pages (the
// engine decides whether to wait or refuse).
int kvseq_init(KvSeq *s, Pool *p, const Config *cfg, int cap);
// The first len positions of src (len <= src->len) with room for cap: full pages shared
// (one more holder each), a partly filled last page copied into a page of its own, the
// compressed blocks complete within len copied. NSA_ERR as kvseq_init.
int kvseq_fork(KvSeq *s, const KvSeq *src, int len, Pool *p, const Config *cfg, int cap);
// Returns the pages (one holder less each) and frees the compressed caches.
void kvseq_free(KvSeq *s, Pool *p);

#endif
