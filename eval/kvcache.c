// kvcache.c: see kvcache.h.
#include "eval/kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

int kvseq_pages(const Config *cfg, int cap) { return (int)((cap + cfg->slc_block - 1) / cfg->slc_block); }

static int n_cmp(const Config *cfg, int len) {
    return len >= cfg->cmp_block ? (int)((len - cfg->cmp_block) / cfg->cmp_stride + 1) : 0;
}

static void alloc_cmp(KvSeq *s, const Config *cfg) {
    s->nc_cap = n_cmp(cfg, s->cap);
    const size_t n = (size_t)(s->nc_cap > 0 ? s->nc_cap : 1) * cfg->n_kv_heads * cfg->head_dim;
    for (int i = 0; i < cfg->n_layers; i++)
        if (config_layer_is_nsa(cfg, i)) {
            s->kc[i] = nsa_malloc(n * sizeof(float));
            s->vc[i] = nsa_malloc(n * sizeof(float));
        }
}

int kvseq_init(KvSeq *s, Pool *p, const Config *cfg, int cap) {
    memset(s, 0, sizeof *s);
    const int np = kvseq_pages(cfg, cap);
    if (np > pool_pages_free(p)) return NSA_ERR;
    s->cap = cap, s->n_pages = np;
    s->pages = nsa_malloc((size_t)(np > 0 ? np : 1) * sizeof *s->pages);
    for (int j = 0; j < np; j++) s->pages[j] = pool_take(p);
    alloc_cmp(s, cfg);
    return NSA_OK;
}

int kvseq_fork(KvSeq *s, const KvSeq *src, int len, Pool *p, const Config *cfg, int cap) {
    NSA_ASSERT(len <= src->len && len <= cap);
    memset(s, 0, sizeof *s);
    const int np = kvseq_pages(cfg, cap), pl = (int)cfg->slc_block;
    const int full = len / pl, partial = len % pl != 0;  // shared pages; one copied
    if (np - full > pool_pages_free(p)) return NSA_ERR;
    s->cap = cap, s->n_pages = np, s->len = len;
    s->pages = nsa_malloc((size_t)(np > 0 ? np : 1) * sizeof *s->pages);
    for (int j = 0; j < full; j++) pool_ref(p, s->pages[j] = src->pages[j]);
    for (int j = full; j < np; j++) s->pages[j] = pool_take(p);
    // The source goes on using its last page past len: this sequence writes its own copy.
    if (partial) pool_copy_rows(p, s->pages[full], src->pages[full], len % pl);
    alloc_cmp(s, cfg);
    s->nc = n_cmp(cfg, len);
    const size_t n = (size_t)s->nc * cfg->n_kv_heads * cfg->head_dim * sizeof(float);
    for (int i = 0; i < cfg->n_layers; i++)
        if (s->kc[i]) memcpy(s->kc[i], src->kc[i], n), memcpy(s->vc[i], src->vc[i], n);
    return NSA_OK;
}

void kvseq_free(KvSeq *s, Pool *p) {
    for (int j = 0; j < s->n_pages; j++) pool_release(p, s->pages[j]);
    free(s->pages);
    for (int i = 0; i < CFG_MAX_LAYERS; i++) free(s->kc[i]), free(s->vc[i]);
    memset(s, 0, sizeof *s);
}
