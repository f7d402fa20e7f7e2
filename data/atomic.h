// atomic.h: the one way nsa writes a whole file. The bytes go to a temporary beside the
// target (<path>.tmp.<pid>), which is fsynced and renamed over the target; then the
// directory is fsynced so the rename itself survives a crash. A reader, or a crash at any
// moment, sees the previous file or the new one, never a mix. On any failure the
// temporary is removed, the previous file is left as it was, and one error line names
// the path and the reason.
#ifndef NSA_ATOMIC_H
#define NSA_ATOMIC_H

#include <stddef.h>
#include <stdio.h>

#include "data/path.h"

typedef struct {
    char path[NSA_PATH_MAX];  // the target
    char tmp[NSA_PATH_MAX];   // <path>.tmp.<pid>
    FILE *f;                  // stdio stream on tmp (atomic_open); NULL for other writers
} AtomicFile;

// Text and other stdio writers: write into a->f, then commit (or abort).
int atomic_open(AtomicFile *a, const char *path);
// Writers that create the file themselves (HDF5): names a->tmp for them to create and
// close; commit afterwards as for a stream.
int atomic_begin(AtomicFile *a, const char *path);
// Flushes and checks the stream (if any), fsyncs tmp, renames it over path and fsyncs
// the directory. NSA_ERR (temporary removed, target untouched) on any failure.
int atomic_commit(AtomicFile *a);
// Gives up: closes the stream and removes the temporary. The target is untouched.
void atomic_abort(AtomicFile *a);

// The whole of a file in one call.
int atomic_write(const char *path, const void *data, size_t size);

// 1 if a directory entry is a temporary of this scheme (a writer died before its
// rename): never a complete file, safe to delete once its writer is gone.
int atomic_is_tmp_name(const char *name);

#endif
