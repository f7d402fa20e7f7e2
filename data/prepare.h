// prepare.h: corpus preparation (text -> HDF5 tokens).
#ifndef NSA_PREPARE_H
#define NSA_PREPARE_H

#include <stdint.h>

// Byte-level tokens of a text file, the last val_fraction as /val; written atomically.
// The sizes of the two splits go to *n_train and *n_val.
int dataset_prepare(const char *text_path, const char *out_path, double val_fraction, int64_t *n_train,
                    int64_t *n_val);

#endif
