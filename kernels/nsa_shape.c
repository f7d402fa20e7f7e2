// nsa_shape.c: NSA block counts and the shared query-tile iterator (see nsa_shape.h).
#include "kernels/nsa_shape.h"

int nsa_n_cmp(const NsaShape *s) {
    return s->T >= s->cmp_block ? (s->T - s->cmp_block) / s->cmp_stride + 1 : 0;
}

int nsa_n_slc(const NsaShape *s) { return (s->T + s->slc_block - 1) / s->slc_block; }

int nsa_query_next(AttnTile *tl, void *ctx) {
    NsaQueryIter *it = ctx;
    const NsaShape *s = it->s;
    const int rep = s->H / s->G, hend = it->hend > 0 ? it->hend : rep;
    if (it->t >= it->tend) return 0;
    int nt = nsa_imin(it->qb, it->tend - it->t);
    attn_tile_rows(tl, it->b, s->T, s->H, it->t, it->list ? it->list + it->t : NULL, nt,
                   it->g * rep + it->h0, nsa_imin(it->hb, hend - it->h0));
    for (int r = 0; r < tl->n; r++) {
        if (it->list) tl->lo[r] = it->blo, tl->hi[r] = nsa_imin(it->bhi, tl->t[r] + 1);
        else tl->lo[r] = 0, tl->hi[r] = nsa_cmp_visible(s, nsa_n_cmp(s), tl->t[r]);
    }
    it->h0 += it->hb;
    if (it->h0 >= hend) it->h0 = it->hbeg, it->t += nt;
    return 1;
}
