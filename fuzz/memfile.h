// memfile.h: a fuzz input as a file path, without touching the disk: the bytes go into a
// file on tmpfs ($NSA_FUZZ_TMPDIR, else /dev/shm, else /tmp), so the loaders are driven
// through exactly the path-based calls the program makes (access, H5Fis_hdf5, H5Fopen,
// fopen). A memfd's /proc/self/fd/N name would not do: HDF5 resolves a file's real path,
// which a memfd lacks.
#ifndef NSA_FUZZ_MEMFILE_H
#define NSA_FUZZ_MEMFILE_H

#include <stddef.h>
#include <stdint.h>

// The path of a file holding exactly data[0..size); valid until the next call. One file
// per process, rewritten each time (a fuzzer runs one input at a time), removed at exit.
const char *memfile_path(const uint8_t *data, size_t size);

#endif
