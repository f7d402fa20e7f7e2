// decode.c: see decode.h. Layer by layer: the products run once over the rows of every
// entry (matmul_xwt is row-invariant, so batching changes no bits); RoPE, the cache writes,
// compression of newly complete blocks and the attention branches run per sequence at its
// own positions.
#include "eval/decode.h"

#include <string.h>

#include "kernels/act.h"
#include "kernels/common.h"
#include "kernels/gate.h"
#include "kernels/norm.h"
#include "kernels/nsa_decode.h"
#include "kernels/rope.h"

void decoder_init(Decoder *d, const Weights *w, Pool *pool) {
    d->w = w, d->pool = pool;
    arena_init(&d->scratch, 0);
}

void decoder_free(Decoder *d) { arena_free(&d->scratch); }

static float *fbuf(Decoder *d, int64_t n) { return arena_alloc(&d->scratch, (size_t)n * sizeof(float)); }

// Shape of one sequence as cached once its new rows are in (nsa_decode.h's convention).
static NsaShape seq_shape(const Config *c, int T) {
    return (NsaShape){1, T, (int)c->n_heads, (int)c->n_kv_heads, (int)c->head_dim, (int)c->cmp_block,
                      (int)c->cmp_stride, (int)c->slc_block, (int)c->slc_topn, (int)c->window};
}

// Compressed K̃ (or Ṽ) of blocks i0 .. i0 + nb - 1 from the cached set-0 keys (or values)
// into out [nb, G, Dh]: training's compress() (model.c) on those blocks.
static void compress(Decoder *d, float *out, const KvPaged *kv, const Weight *proj, const Weight *wout,
                     const float *pe, int i0, int nb, const NsaShape *s) {
    const Config *c = &d->w->cfg;
    const int64_t rows = (int64_t)nb * s->G;
    if (c->cmp_fn == CMP_MEAN) {
        nsa_cmp_mean_paged(out, kv, i0, nb, s);
        return;
    }
    float *blocks = fbuf(d, rows * s->cmp_block * s->Dh);
    nsa_cmp_gather_paged(blocks, kv, pe, i0, nb, s);
    if (c->cmp_fn == CMP_LINEAR) {
        matmul_xwt(out, blocks, proj, rows);
        return;
    }
    float *h = fbuf(d, rows * s->Dh);
    matmul_xwt(h, blocks, proj, rows);
    silu_forward(h, h, rows * s->Dh);
    matmul_xwt(out, h, wout, rows);
}

// Attention of one sequence's m rows (q, o at row offset r0 of the batch) for layer li.
static void seq_attention(Decoder *d, int li, KvSeq *seq, int p0, int m, float *const br[3], float *q,
                          float *const kn[3], float *const vn[3], int64_t r0) {
    const Weights *w = d->w;
    const Config *c = &w->cfg;
    const LayerWeights *L = &w->layers[li];
    const int H = (int)c->n_heads, G = (int)c->n_kv_heads, Dh = (int)c->head_dim;
    const int64_t qw = (int64_t)H * Dh, kw = (int64_t)G * Dh;
    float *qs = q + r0 * qw;
    const float *cs = w->rope + (size_t)p0 * Dh;
    rope_forward(qs, qs, cs, 1, m, H, Dh);
    for (int b = 0; b < L->n_sets; b++) {
        rope_forward(kn[b] + r0 * kw, kn[b] + r0 * kw, cs, 1, m, G, Dh);
        pool_write(d->pool, li, b, seq->pages, p0, m, kn[b] + r0 * kw, vn[b] + r0 * kw);
    }
    float *lse = fbuf(d, (int64_t)m * H);
    if (!L->is_nsa) {
        KvPaged kv = pool_view(d->pool, li, 0, seq->pages);
        attn_paged_forward(br[0] + r0 * qw, lse, qs, &kv, p0, m, H, G, Dh, 0);
        return;
    }
    const NsaShape s = seq_shape(c, p0 + m);
    const int win = L->n_sets == 3 ? 2 : 0, slc = L->n_sets == 3 ? 1 : 0;
    // Blocks completed by these rows: i with p0 <= i*d + l - 1 < p0 + m.
    const int nc_new = nsa_n_cmp(&s);
    if (nc_new > seq->nc) {
        const int nb = nc_new - seq->nc;
        NSA_ASSERT(nc_new <= seq->nc_cap);
        KvPaged kv = pool_view(d->pool, li, 0, seq->pages);
        KvPaged vv = kv;
        vv.k = kv.v;  // the gather reads .k: point it at the values
        compress(d, seq->kc[li] + (size_t)seq->nc * kw, &kv, &L->k_proj, &L->k_out, L->k_pe, seq->nc, nb, &s);
        compress(d, seq->vc[li] + (size_t)seq->nc * kw, &vv, &L->v_proj, &L->v_out, L->v_pe, seq->nc, nb, &s);
    }
    nsa_cmp_decode_forward(br[0] + r0 * qw, lse, qs, seq->kc[li], seq->vc[li], p0, m, &s);
    int32_t *idx = arena_alloc(&d->scratch, (size_t)m * G * s.slc_topn * sizeof(int32_t));
    void *work = arena_alloc(&d->scratch, nsa_select_decode_work_bytes(m, &s));
    nsa_select_decode(idx, qs, seq->kc[li], lse, work, p0, m, &s);
    KvPaged ks = pool_view(d->pool, li, slc, seq->pages);
    nsa_slc_paged_forward(br[1] + r0 * qw, lse, qs, &ks, idx, p0, m, H, G, Dh, s.slc_topn);
    KvPaged kwin = pool_view(d->pool, li, win, seq->pages);
    attn_paged_forward(br[2] + r0 * qw, lse, qs, &kwin, p0, m, H, G, Dh, s.window);
}

void decoder_forward(Decoder *d, float *logits, const DecodeRows *e, int n, int all_rows) {
    const Weights *w = d->w;
    const Config *c = &w->cfg;
    const int64_t D = c->d_model, H = c->n_heads, G = c->n_kv_heads, Dh = c->head_dim, F = c->ffn_dim;
    const int64_t Dg = c->gate_hidden, qw = H * Dh, kw = G * Dh;
    arena_reset(&d->scratch);
    int64_t N = 0;
    for (int i = 0; i < n; i++) {
        const KvSeq *s = e[i].seq;
        NSA_ASSERT(e[i].m >= 1 && s->len + e[i].m <= s->cap && s->len + e[i].m <= c->seq_len);
        N += e[i].m;
    }
    int32_t *tok = arena_alloc(&d->scratch, (size_t)N * sizeof *tok);
    for (int i = 0, r = 0; i < n; r += e[i].m, i++) memcpy(tok + r, e[i].tokens, (size_t)e[i].m * sizeof *tok);
    float *x = fbuf(d, N * D), *xn = fbuf(d, N * D), *rstd = fbuf(d, N), *q = fbuf(d, N * qw);
    float *kn[3], *vn[3], *br[3];
    for (int b = 0; b < 3; b++) kn[b] = fbuf(d, N * kw), vn[b] = fbuf(d, N * kw), br[b] = fbuf(d, N * qw);
    float *y = fbuf(d, N * qw), *t = fbuf(d, N * D), *z = fbuf(d, N * 3 * H), *gh = fbuf(d, N * Dg);
    float *a1 = fbuf(d, N * F), *a3 = fbuf(d, N * F);
    weights_embed(x, w, tok, N);
    const float eps = (float)c->norm_eps;
    for (int li = 0; li < c->n_layers; li++) {
        const LayerWeights *L = &w->layers[li];
        rmsnorm_forward(xn, rstd, x, L->attn_norm, N, D, eps);
        matmul_xwt(q, xn, &L->wq, N);
        for (int b = 0; b < L->n_sets; b++) matmul_xwt(kn[b], xn, &L->wk[b], N), matmul_xwt(vn[b], xn, &L->wv[b], N);
        int64_t r0 = 0;
        for (int i = 0; i < n; r0 += e[i].m, i++)
            seq_attention(d, li, e[i].seq, e[i].seq->len, e[i].m, br, q, kn, vn, r0);
        const float *o = br[0];
        if (L->is_nsa) {
            matmul_xwt(gh, xn, &L->fc1, N);
            matmul_bias_add(gh, L->fc1_b, N, Dg);
            silu_forward(gh, gh, N * Dg);
            matmul_xwt(z, gh, &L->fc2, N);
            matmul_bias_add(z, L->fc2_b, N, 3 * H);
            gate_forward(y, z, br[0], br[1], br[2], N, H, Dh, c->gate_act);
            o = y;
        }
        matmul_xwt(t, o, &L->wo, N);
        add_forward(x, x, t, N * D);
        rmsnorm_forward(xn, rstd, x, L->mlp_norm, N, D, eps);
        matmul_xwt(a1, xn, &L->w1, N);
        matmul_xwt(a3, xn, &L->w3, N);
        swiglu_forward(a1, a1, a3, N * F);
        matmul_xwt(t, a1, &L->w2, N);
        add_forward(x, x, t, N * D);
    }
    for (int i = 0; i < n; i++) {
        KvSeq *s = e[i].seq;
        s->len += e[i].m;
        s->nc = s->len >= c->cmp_block ? (int)((s->len - c->cmp_block) / c->cmp_stride + 1) : 0;
    }
    // The head on the rows wanted: every row, or each entry's last.
    int64_t nout = all_rows ? N : n;
    float *h = all_rows ? x : fbuf(d, nout * D);
    if (!all_rows)
        for (int i = 0, r = 0; i < n; i++) r += e[i].m, memcpy(h + i * D, x + (r - 1) * D, (size_t)D * sizeof(float));
    rmsnorm_forward(xn, rstd, h, w->norm, nout, D, eps);
    matmul_xwt(logits, xn, &w->lm_head, nout);
}
