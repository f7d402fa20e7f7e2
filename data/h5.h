// h5.h: the few HDF5 patterns the file formats need, written defensively. Writers: scalar
// attributes of DESIGN.md's types and chunked datasets carrying a Fletcher-32 checksum, in
// files whose metadata is checksummed too (HDF5 1.10's object format). Readers: every
// attribute and dataset is checked for type class, rank, element count, storage and range
// before a byte of it lands in our memory; one `nsa: error:` line names the file and
// object instead of HDF5's error stack.
#ifndef NSA_H5_H
#define NSA_H5_H

#include <hdf5.h>
#include <stdint.h>

#include "data/atomic.h"

void h5_quiet(void);  // silence HDF5's own error printing (we report one line ourselves)
hid_t h5_open_read(const char *path);  // <0 after an error line
// 1 if every link of `path` (relative to loc) exists and stays inside the file (hard or
// soft links; an external link to another file counts as absent).
int h5_exists(hid_t loc, const char *path);
hid_t h5_group(hid_t loc, const char *name);  // create; attributes kept in the checksummed header

int h5_attr_i64(hid_t loc, const char *name, int64_t v);
int h5_attr_f64(hid_t loc, const char *name, double v);
int h5_attr_str(hid_t loc, const char *name, const char *v);
int h5_attr_u64_array(hid_t loc, const char *name, const uint64_t *v, int n);
// Datasets of ndim >= 1 are chunked (h5_chunk_dims) with Fletcher-32, verified by HDF5 on
// every read; scalars are compact (inside the checksummed object header).
int h5_write_f32(hid_t loc, const char *name, const float *data, int ndim, const int64_t *shape);
int h5_write_u8(hid_t loc, const char *name, const uint8_t *data, int ndim, const int64_t *shape);
int h5_write_i32(hid_t loc, const char *name, const int32_t *data, int ndim, const int64_t *shape);
int h5_write_u16(hid_t loc, const char *name, const uint16_t *data, int ndim, const int64_t *shape);
int h5_write_f64_scalar(hid_t loc, const char *name, double v);
// The chunk shape of a dataset of `shape` with elements of esize bytes: the whole dataset
// up to 4 MiB, else blocks of leading rows of at most 1 MiB (a row wider than that is split
// along its own leading dimension, and so on), always far below HDF5's 4 GiB chunk limit.
void h5_chunk_dims(hsize_t *chunk, int ndim, const hsize_t *shape, size_t esize);

// Reads a float dataset (float32, or float64 rounded to float32; values beyond float32's
// range are an error) whose shape must equal `shape`; `what` names the file in errors.
int h5_read_f32(hid_t loc, const char *name, float *out, int ndim, const int64_t *shape, const char *what);
// Opens dataset `name` (which must be a dataset, reached through links inside the file);
// <0 after an error line naming `what` and `name`.
hid_t h5_open_dataset(hid_t loc, const char *name, const char *what);
// Checks that the data of ds is really in the file before anything is allocated for it:
// no external or virtual storage, contiguous data within the file, every chunk written
// (HDF5 would read a missing one as fill values), every filter decodable by this libhdf5.
// NSA_ERR after an error line.
int h5_check_storage(hid_t ds, const char *what, const char *name);
// H5Dread of the whole dataset into memory type mtype; a value outside mtype's range (a
// negative id into uint16, a double beyond float32) fails instead of being clipped.
// *out_of_range (may be NULL) says which of the two failures it was. No error line.
int h5_read_all(hid_t ds, hid_t mtype, void *out, int *out_of_range);
// HDF5's innermost error message (e.g. "data error detected by Fletcher32 checksum"), for
// the one line a failed call reports; "" if none.
void h5_last_error(char *buf, size_t size);

// Attributes: each must hold exactly one value (scalar, or 1-D of one element) of the
// right class: an integer for i64 (in int64's range), an integer or float for f64 (finite),
// a string for str (shorter than size). u64_array: exactly n unsigned integers.
// Returns 1 if absent, 0 ok, -1 after an error line naming file, object and attribute.
int h5_read_attr_i64(hid_t loc, const char *name, int64_t *v);
int h5_read_attr_f64(hid_t loc, const char *name, double *v);
int h5_read_attr_str(hid_t loc, const char *name, char *buf, size_t size);
int h5_read_attr_u64_array(hid_t loc, const char *name, uint64_t *v, int n);

// Every HDF5 file nsa writes goes through data/atomic.h: h5_create makes the temporary
// of `path` (a->tmp), h5_commit closes it and renames it into place, h5_abort drops it
// after a failed write, printing the one error line ("cannot write PATH: reason"); the
// target is left as it was either way.
hid_t h5_create(AtomicFile *a, const char *path);  // <0 after an error line
int h5_commit(hid_t file, AtomicFile *a);
void h5_abort(hid_t file, AtomicFile *a);

#endif
