// quantize.c: see quantize.h.
#include "eval/quantize.h"

#include <string.h>

#include "data/q4k_file.h"
#include "eval/load.h"
#include "kernels/common.h"
#include "model/quant.h"

int quantize_run(const char *ckpt, const char *out, int progress, QuantizeResult *r) {
    memset(r, 0, sizeof *r);
    double t0 = nsa_now();
    Model m;
    int is_q4k = 0;
    if (load_model(ckpt, QUANT_Q4K, progress, &m, &is_q4k) != NSA_OK) return NSA_ERR;
    if (is_q4k) {
        nsa_error("%s is already a quantized checkpoint", ckpt);
        model_free(&m);
        return NSA_ERR;
    }
    r->tensors = m.n_params;
    for (int i = 0; i < m.n_params; i++) r->quantized += m.params[i].t.q4k != NULL;
    r->bytes_before = m.n_elems * (int64_t)sizeof(float);
    r->bytes_after = model_weight_bytes(&m);
    int rc = q4k_file_save(out, &m);
    r->seconds = nsa_now() - t0;
    model_free(&m);
    return rc;
}
