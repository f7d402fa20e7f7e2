// pool.c: see pool.h.
#include "eval/pool.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

int pool_init(Pool *p, const Config *cfg, int n_pages) {
    memset(p, 0, sizeof *p);
    if (n_pages < 1) {
        nsa_error("the block pool needs at least one page (got %d)", n_pages);
        return NSA_ERR;
    }
    p->n_layers = (int)cfg->n_layers, p->page_len = (int)cfg->slc_block, p->n_pages = n_pages;
    p->G = (int)cfg->n_kv_heads, p->Dh = (int)cfg->head_dim;
    for (int i = 0; i < p->n_layers; i++) {
        p->sets[i] = config_layer_is_nsa(cfg, i) && cfg->kv == KV_SEPARATE ? 3 : 1;
        p->row_floats[i] = (size_t)p->sets[i] * p->G * p->Dh;
        const size_t n = (size_t)n_pages * p->page_len * p->row_floats[i];
        p->k[i] = nsa_calloc(n, sizeof(float));
        p->v[i] = nsa_calloc(n, sizeof(float));
    }
    p->refs = nsa_calloc((size_t)n_pages, sizeof *p->refs);
    p->free_list = nsa_malloc((size_t)n_pages * sizeof *p->free_list);
    // Stack with page 0 on top: pages are handed out in ascending order from a fresh pool.
    for (int i = 0; i < n_pages; i++) p->free_list[i] = n_pages - 1 - i;
    p->n_free = n_pages;
    return NSA_OK;
}

void pool_free(Pool *p) {
    for (int i = 0; i < p->n_layers; i++) free(p->k[i]), free(p->v[i]);
    free(p->refs);
    free(p->free_list);
    memset(p, 0, sizeof *p);
}

int pool_pages_free(const Pool *p) { return p->n_free; }

int32_t pool_take(Pool *p) {
    if (p->n_free == 0) return -1;
    int32_t id = p->free_list[--p->n_free];
    NSA_ASSERT(p->refs[id] == 0);
    p->refs[id] = 1;
    return id;
}

void pool_ref(Pool *p, int32_t page) {
    NSA_ASSERT(page >= 0 && page < p->n_pages && p->refs[page] > 0);
    p->refs[page]++;
}

void pool_release(Pool *p, int32_t page) {
    NSA_ASSERT(page >= 0 && page < p->n_pages && p->refs[page] > 0);
    if (--p->refs[page] == 0) p->free_list[p->n_free++] = page;
}

void pool_copy_rows(Pool *p, int32_t dst, int32_t src, int rows) {
    for (int i = 0; i < p->n_layers; i++) {
        const size_t page = (size_t)p->page_len * p->row_floats[i], n = (size_t)rows * p->row_floats[i];
        memcpy(p->k[i] + dst * page, p->k[i] + src * page, n * sizeof(float));
        memcpy(p->v[i] + dst * page, p->v[i] + src * page, n * sizeof(float));
    }
}

KvPaged pool_view(const Pool *p, int layer, int set, const int32_t *pages) {
    const size_t off = (size_t)set * p->G * p->Dh;
    return (KvPaged){.k = p->k[layer] + off, .v = p->v[layer] + off, .kv_stride = p->row_floats[layer],
                     .pages = pages, .page_len = p->page_len};
}

void pool_write(Pool *p, int layer, int set, const int32_t *pages, int p0, int n, const float *k,
                const float *v) {
    const size_t rf = p->row_floats[layer], w = (size_t)p->G * p->Dh, off = (size_t)set * w;
    for (int i = 0; i < n; i++) {
        const int t = p0 + i;
        const size_t row = (size_t)pages[t / p->page_len] * p->page_len + t % p->page_len;
        memcpy(p->k[layer] + row * rf + off, k + (size_t)i * w, w * sizeof(float));
        memcpy(p->v[layer] + row * rf + off, v + (size_t)i * w, w * sizeof(float));
    }
}
