// prepare.h: corpus preparation (text -> HDF5 tokens).
#ifndef NSA_PREPARE_H
#define NSA_PREPARE_H

// Byte-level tokens of a text file, the last val_fraction as /val; written atomically.
int dataset_prepare(const char *text_path, const char *out_path, double val_fraction);

#endif
