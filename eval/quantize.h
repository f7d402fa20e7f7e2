// quantize.h: `nsa quantize`'s engine: a float checkpoint to a quantized one (Q4_K rows for
// the matrices model/quant.h names, float32 for the rest; data/q4k_file.h).
#ifndef NSA_QUANTIZE_H
#define NSA_QUANTIZE_H

#include <stdint.h>

typedef struct {
    int tensors, quantized;          // parameters in all, and how many became Q4_K
    int64_t bytes_before, bytes_after;  // weight bytes as float32, and as stored
    double seconds;
} QuantizeResult;

// Progress on stderr when `progress`. NSA_ERR after an error line.
int quantize_run(const char *ckpt, const char *out, int progress, QuantizeResult *r);

#endif
