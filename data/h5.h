// h5.h: the few HDF5 patterns the file formats need (scalar attributes of DESIGN.md's
// types, float32 datasets with shape checks), with one-line errors instead of HDF5's stack.
#ifndef NSA_H5_H
#define NSA_H5_H

#include <hdf5.h>
#include <stdint.h>

#include "data/atomic.h"

void h5_quiet(void);  // silence HDF5's own error printing (we report one line ourselves)
hid_t h5_open_read(const char *path);  // <0 after an error line
int h5_exists(hid_t loc, const char *path);
hid_t h5_group(hid_t loc, const char *name);  // create
int h5_attr_i64(hid_t loc, const char *name, int64_t v);
int h5_attr_f64(hid_t loc, const char *name, double v);
int h5_attr_str(hid_t loc, const char *name, const char *v);
int h5_attr_u64_array(hid_t loc, const char *name, const uint64_t *v, int n);
int h5_write_f32(hid_t loc, const char *name, const float *data, int ndim, const int64_t *shape);
int h5_write_u8(hid_t loc, const char *name, const uint8_t *data, int ndim, const int64_t *shape);
int h5_write_i32(hid_t loc, const char *name, const int32_t *data, int ndim, const int64_t *shape);
int h5_write_f64_scalar(hid_t loc, const char *name, double v);
// Reads a float dataset whose shape must equal `shape`; `what` names the file in errors.
int h5_read_f32(hid_t loc, const char *name, float *out, int ndim, const int64_t *shape, const char *what);
// Reads attribute `name` into an int64/double/string; returns 1 if absent, 0 ok, -1 error.
int h5_read_attr_i64(hid_t loc, const char *name, int64_t *v);
int h5_read_attr_f64(hid_t loc, const char *name, double *v);
int h5_read_attr_str(hid_t loc, const char *name, char *buf, size_t size);
int h5_read_attr_u64_array(hid_t loc, const char *name, uint64_t *v, int n);
// Every HDF5 file nsa writes goes through data/atomic.h: h5_create makes the temporary
// of `path` (a->tmp), h5_commit closes it and renames it into place, h5_abort drops it.
hid_t h5_create(AtomicFile *a, const char *path);  // <0 after an error line
int h5_commit(hid_t file, AtomicFile *a);
void h5_abort(hid_t file, AtomicFile *a);

#endif
