// q4k_file.h: the quantized checkpoint written by `nsa quantize` (DESIGN.md "Quantized
// checkpoint"): /config as in a checkpoint; /q4k/<name> uint8 [rows, blocks·144] (ggml's
// block_q4_K bytes, rows padded with zeros to a multiple of 256 columns) with int64
// attributes `rows` and `cols` (the unpadded [out, in] shape) for every matrix that
// model/quant.h quantizes; /params/<name> float32 for every other tensor.
#ifndef NSA_Q4K_FILE_H
#define NSA_Q4K_FILE_H

#include "model/model.h"

// 1 when `path` is a quantized checkpoint (it has /q4k), 0 when not, NSA_ERR after an error
// line when it cannot be read as HDF5 at all.
int q4k_file_is(const char *path);
// Writes a quantized model (model_quantize, or one loaded by q4k_file_load) atomically.
int q4k_file_save(const char *path, const Model *m);
// Creates *m from the file's config, reads the float tensors and the Q4_K rows (into
// m->q4k_data, each matrix's Tensor.q4k pointing at its rows). Checks every shape, type and
// attribute against the config, and that every block's scales are finite.
int q4k_file_load(const char *path, Model *m);

#endif
