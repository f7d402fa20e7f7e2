// bench_decode.c: see bench_decode.h. `small`'s dimensions with seq_len raised to 32768,
// random init; batch 1 and 8 at contexts 1k, 8k and 32k; NSA and dense in one run, so the
// ratios compare like with like on a shared machine.
#include "eval/bench_decode.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/decode.h"
#include "kernels/common.h"
#include "kernels/cpu.h"
#include "kernels/rng.h"

#define BENCH_SEQ_LEN 32768
#define BENCH_STEPS 16  // decode steps timed per cell (the context grows by this much)

static int bench_config(Config *c, const char *attn) {
    config_defaults(c);
    if (config_load(c, "small") != NSA_OK) return NSA_ERR;
    char set[64];
    snprintf(set, sizeof set, "seq_len=%d", BENCH_SEQ_LEN);
    if (config_set(c, set) != NSA_OK || config_set(c, attn) != NSA_OK) return NSA_ERR;
    return config_validate(c);
}

// Read bandwidth of this machine with every thread copying its own slice of 256 MiB
// (bytes read + written per second).
static double bandwidth(void) {
    const size_t n = (size_t)256 << 20;
    char *a = nsa_malloc(n), *b = nsa_malloc(n);
    memset(a, 1, n), memset(b, 2, n);
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = nsa_now();
#pragma omp parallel
        {
            const int nt = omp_get_num_threads(), i = omp_get_thread_num();
            const size_t chunk = n / (size_t)nt;
            memcpy(b + chunk * i, a + chunk * i, chunk);
        }
        double dt = nsa_now() - t0;
        best = dt < best ? dt : best;
    }
    free(a), free(b);
    return 2.0 * (double)n / best;
}

static double weight_bytes(const Weights *w) {
    const Config *c = &w->cfg;
    double n = (double)w->lm_head.rows * w->lm_head.cols + (double)c->d_model;  // head, one embedding row
    for (int i = 0; i < c->n_layers; i++) {
        const LayerWeights *L = &w->layers[i];
        const Weight *m[] = {&L->wq, &L->wo, &L->wk[0], &L->wv[0], &L->wk[1], &L->wv[1], &L->wk[2],
                             &L->wv[2], &L->fc1, &L->fc2, &L->w1, &L->w2, &L->w3};
        for (size_t k = 0; k < sizeof m / sizeof m[0]; k++) n += (double)m[k]->rows * m[k]->cols;
    }
    return 4.0 * n;
}

// Cache floats one step of one sequence at position t reads (per layer, both K and V):
// dense: t + 1 tokens; NSA: the visible compressed blocks, n selected blocks and the window.
static double cache_bytes(const Config *c, int t) {
    const double row = 2.0 * c->n_kv_heads * c->head_dim * 4.0;
    double per = 0.0;
    for (int i = 0; i < c->n_layers; i++) {
        if (!config_layer_is_nsa(c, i)) {
            per += (t + 1) * row;
            continue;
        }
        int64_t nc = t + 1 >= c->cmp_block ? (t + 1 - c->cmp_block) / c->cmp_stride + 1 : 0;
        int64_t slc = c->slc_topn * c->slc_block, win = c->window;
        per += (double)(nc + (slc < t + 1 ? slc : t + 1) + (win < t + 1 ? win : t + 1)) * row;
    }
    return per;
}

typedef struct {
    double step_s, bytes;
} Cell;

static Cell run_cell(const Weights *w, int batch, int ctx) {
    const Config *c = &w->cfg;
    const int start = ctx - BENCH_STEPS;
    Pool pool;
    NSA_ASSERT(pool_init(&pool, c, batch * kvseq_pages(c, ctx)) == NSA_OK);
    Rng r;
    rng_seed(&r, 1);
    for (int i = 0; i < pool.n_layers; i++) {
        const int64_t n = (int64_t)pool.n_pages * pool.page_len * (int64_t)pool.row_floats[i];
        rng_fill_uniform(&r, pool.k[i], n, 1.0);
        rng_fill_uniform(&r, pool.v[i], n, 1.0);
    }
    KvSeq *seqs = nsa_calloc((size_t)batch, sizeof *seqs);
    DecodeRows *rows = nsa_malloc((size_t)batch * sizeof *rows);
    int32_t *tok = nsa_calloc((size_t)batch, sizeof *tok);
    for (int b = 0; b < batch; b++) {
        NSA_ASSERT(kvseq_init(&seqs[b], &pool, c, ctx) == NSA_OK);
        seqs[b].len = start;
        seqs[b].nc = start >= c->cmp_block ? (int)((start - c->cmp_block) / c->cmp_stride + 1) : 0;
        for (int i = 0; i < c->n_layers; i++)
            if (seqs[b].kc[i]) {
                rng_fill_uniform(&r, seqs[b].kc[i], (int64_t)seqs[b].nc * c->n_kv_heads * c->head_dim, 1.0);
                rng_fill_uniform(&r, seqs[b].vc[i], (int64_t)seqs[b].nc * c->n_kv_heads * c->head_dim, 1.0);
            }
        rows[b] = (DecodeRows){&seqs[b], &tok[b], 1};
    }
    Decoder d;
    decoder_init(&d, w, &pool);
    float *logits = nsa_malloc((size_t)batch * c->vocab_size * sizeof(float));
    double best = 1e30, bytes = 0.0;
    for (int s = 0; s < BENCH_STEPS; s++) {
        double t0 = nsa_now();
        decoder_forward(&d, logits, rows, batch, 0);
        double dt = nsa_now() - t0;
        if (dt < best) best = dt, bytes = weight_bytes(w) + batch * cache_bytes(c, start + s);
    }
    for (int b = 0; b < batch; b++) kvseq_free(&seqs[b], &pool);
    free(seqs), free(rows), free(tok), free(logits);
    decoder_free(&d);
    pool_free(&pool);
    return (Cell){best, bytes};
}

int bench_decode(void) {
    Config cfg[2];
    const char *names[2] = {"dense", "nsa"};
    if (bench_config(&cfg[0], "attn=dense") != NSA_OK || bench_config(&cfg[1], "attn=nsa") != NSA_OK) return NSA_ERR;
    const Config *c = &cfg[1];
    const double bw = bandwidth();
    printf("decode: small dimensions (D %lld, L %lld, H/G %lld/%lld, Dh %lld, F %lld), seq_len %d, random init,\n"
           "  NSA l/d/l'/n/w = %lld/%lld/%lld/%lld/%lld; %d threads (%s matmul); best of %d steps per cell;\n"
           "  copy bandwidth %.1f GB/s (read + write)\n",
           (long long)c->d_model, (long long)c->n_layers, (long long)c->n_heads, (long long)c->n_kv_heads,
           (long long)c->head_dim, (long long)c->ffn_dim, BENCH_SEQ_LEN, (long long)c->cmp_block,
           (long long)c->cmp_stride, (long long)c->slc_block, (long long)c->slc_topn, (long long)c->window,
           nsa_cpu.threads, nsa_cpu.avx512f ? "AVX-512" : "portable", BENCH_STEPS, bw / 1e9);
    printf("%-6s %5s %7s %10s %10s %12s %14s\n", "attn", "batch", "context", "ms/step", "tokens/s", "MB read/step",
           "bytes/s / bw");
    const int batches[2] = {1, 8}, ctxs[3] = {1024, 8192, 32768};
    double tps[2][2][3];
    for (int a = 0; a < 2; a++) {
        Weights *w = nsa_malloc(sizeof *w);
        Model m;
        model_create(&m, &cfg[a]);
        model_init_params(&m, 1);
        weights_from_model(w, &m);
        for (int bi = 0; bi < 2; bi++)
            for (int ci = 0; ci < 3; ci++) {
                Cell cell = run_cell(w, batches[bi], ctxs[ci]);
                tps[a][bi][ci] = batches[bi] / cell.step_s;
                printf("%-6s %5d %7d %10.3f %10.1f %12.2f %13.0f%%\n", names[a], batches[bi], ctxs[ci],
                       cell.step_s * 1e3, tps[a][bi][ci], cell.bytes / 1e6, 100.0 * cell.bytes / cell.step_s / bw);
                fflush(stdout);
            }
        free(w);
        model_free(&m);
    }
    printf("NSA / dense decode tokens/s (goal >= 5x at 32k):\n");
    for (int bi = 0; bi < 2; bi++) {
        printf("  batch %d:", batches[bi]);
        for (int ci = 0; ci < 3; ci++) printf("  %dk %.2fx", ctxs[ci] / 1024, tps[1][bi][ci] / tps[0][bi][ci]);
        printf("\n");
    }
    return NSA_OK;
}
