// load.h: loading a model for evaluation and generation from either kind of file — a float
// checkpoint (optionally quantized to Q4_K in memory) or a quantized checkpoint — and the
// one place that decides which it is.
#ifndef NSA_LOAD_H
#define NSA_LOAD_H

#include "model/model.h"

typedef enum { QUANT_NONE, QUANT_Q4K } Quant;

// "q4_k" -> QUANT_Q4K; NSA_ERR after an error line for anything else.
int quant_parse(const char *s, Quant *q);

// A float checkpoint (quantized in memory when q == QUANT_Q4K, with progress on stderr when
// `verbose`), or a `nsa quantize` file (always Q4_K; q is then irrelevant). *is_q4k_file
// (may be NULL) tells which kind the file was.
int load_model(const char *path, Quant q, int verbose, Model *m, int *is_q4k_file);

#endif
