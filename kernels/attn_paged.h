// attn_paged.h: attention of query rows at positions [p0, p0 + m) over one sequence's K/V
// read in place from a block pool through its page table: causal / sliding-window (dense
// layers and the NSA window branch) and the NSA selected branch (a selected block is a page).
#ifndef NSA_ATTN_PAGED_H
#define NSA_ATTN_PAGED_H

#include <stddef.h>
#include <stdint.h>

// Token p of the sequence is pool row pages[p / page_len] * page_len + p % page_len; KV
// head g of pool row s is k + s * kv_stride + g * Dh (v alike). Rows of the attention tile
// kernels never cross a page, so each key chunk is contiguous pool rows.
typedef struct {
    const float *k, *v;
    size_t kv_stride;
    const int32_t *pages;
    int page_len;
} KvPaged;

// q, o [m, H, Dh]; lse [m, H]. Row i is position t = p0 + i and sees tokens
// (t - window, t] (window <= 0: [0, t]); every one of them must be in the pool.
void attn_paged_forward(float *o, float *lse, const float *q, const KvPaged *kv, int p0, int m,
                        int H, int G, int Dh, int window);

// The NSA selected branch: row i (position t = p0 + i), head h sees the tokens <= t of the
// blocks idx[i, h / (H/G), 0..n) (ascending, -1 padding); block j is page j of the table,
// so kv->page_len must be the selection block length l'.
void nsa_slc_paged_forward(float *o, float *lse, const float *q, const KvPaged *kv,
                           const int32_t *idx, int p0, int m, int H, int G, int Dh, int n);

#endif
