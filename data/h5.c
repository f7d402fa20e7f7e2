// h5.c: see h5.h.
#include "data/h5.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/common.h"

void h5_quiet(void) {
    static int first = 1;
    if (first) {
        // A file whose close failed (a full disk) stays open inside HDF5, and HDF5 1.10's
        // exit handler then crashes closing it again; nsa closes every file it keeps, so
        // it needs no exit handler. Only effective before any other HDF5 call, which is
        // why every file is opened or created through this module.
        H5dont_atexit();
        first = 0;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

hid_t h5_open_read(const char *path) {
    h5_quiet();
    if (access(path, R_OK) != 0) {
        nsa_error("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    htri_t is = H5Fis_hdf5(path);
    hid_t f = is > 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (f < 0) nsa_error("%s is not a readable HDF5 file (corrupt or truncated?)", path);
    return f;
}

int h5_exists(hid_t loc, const char *path) {
    // H5Lexists needs every intermediate group to exist: walk the path.
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0) return 0;
            if (!c) return 1;
            *p = c;
        }
    }
}

hid_t h5_group(hid_t loc, const char *name) {
    return H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
}

static int write_attr(hid_t loc, const char *name, hid_t type, hid_t space, const void *v) {
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, type, v) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return ok ? NSA_OK : NSA_ERR;
}

int h5_attr_i64(hid_t loc, const char *name, int64_t v) {
    return write_attr(loc, name, H5T_STD_I64LE, H5Screate(H5S_SCALAR), &v);
}

int h5_attr_f64(hid_t loc, const char *name, double v) {
    return write_attr(loc, name, H5T_IEEE_F64LE, H5Screate(H5S_SCALAR), &v);
}

int h5_attr_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = write_attr(loc, name, t, H5Screate(H5S_SCALAR), &v);
    H5Tclose(t);
    return rc;
}

int h5_attr_u64_array(hid_t loc, const char *name, const uint64_t *v, int n) {
    hsize_t d = (hsize_t)n;
    return write_attr(loc, name, H5T_STD_U64LE, H5Screate_simple(1, &d, NULL), v);
}

static int write_ds(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *data, int ndim,
                    const int64_t *shape) {
    hsize_t d[8];
    for (int i = 0; i < ndim; i++) d[i] = (hsize_t)shape[i];
    hid_t s = ndim ? H5Screate_simple(ndim, d, NULL) : H5Screate(H5S_SCALAR);
    hid_t ds = H5Dcreate2(loc, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int ok = ds >= 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(s);
    if (!ok) nsa_error("cannot write dataset %s", name);
    return ok ? NSA_OK : NSA_ERR;
}

int h5_write_f32(hid_t loc, const char *name, const float *data, int ndim, const int64_t *shape) {
    return write_ds(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, ndim, shape);
}

int h5_write_u8(hid_t loc, const char *name, const uint8_t *data, int ndim, const int64_t *shape) {
    return write_ds(loc, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, data, ndim, shape);
}

int h5_write_i32(hid_t loc, const char *name, const int32_t *data, int ndim, const int64_t *shape) {
    return write_ds(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, data, ndim, shape);
}

int h5_write_f64_scalar(hid_t loc, const char *name, double v) {
    return write_ds(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, 0, NULL);
}

int h5_read_f32(hid_t loc, const char *name, float *out, int ndim, const int64_t *shape, const char *what) {
    if (!h5_exists(loc, name)) {
        nsa_error("%s: missing dataset %s", what, name);
        return NSA_ERR;
    }
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) {
        nsa_error("%s: cannot open dataset %s", what, name);
        return NSA_ERR;
    }
    hid_t s = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(s);
    hsize_t d[8] = {0};
    if (nd >= 0 && nd <= 8) H5Sget_simple_extent_dims(s, d, NULL);
    H5Sclose(s);
    int same = nd == ndim;
    for (int i = 0; same && i < ndim; i++) same = d[i] == (hsize_t)shape[i];
    if (!same) {
        char got[128] = "", want[128] = "";
        for (int i = 0; i < nd && i < 8; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? "," : "", (unsigned long long)d[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
        nsa_error("%s: %s has shape [%s], the config says [%s]", what, name, got, want);
        H5Dclose(ds);
        return NSA_ERR;
    }
    int ok = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0;
    H5Dclose(ds);
    if (!ok) nsa_error("%s: cannot read %s (corrupt file?)", what, name);
    return ok ? NSA_OK : NSA_ERR;
}

static hid_t open_attr(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return 0;
    return H5Aopen(loc, name, H5P_DEFAULT);
}

int h5_read_attr_i64(hid_t loc, const char *name, int64_t *v) {
    hid_t a = open_attr(loc, name);
    if (a == 0) return 1;
    int ok = a > 0 && H5Aread(a, H5T_NATIVE_INT64, v) >= 0;
    if (a > 0) H5Aclose(a);
    return ok ? 0 : -1;
}

int h5_read_attr_f64(hid_t loc, const char *name, double *v) {
    hid_t a = open_attr(loc, name);
    if (a == 0) return 1;
    int ok = a > 0 && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0;
    if (a > 0) H5Aclose(a);
    return ok ? 0 : -1;
}

int h5_read_attr_str(hid_t loc, const char *name, char *buf, size_t size) {
    hid_t a = open_attr(loc, name);
    if (a == 0) return 1;
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int ok = H5Tget_class(ft) == H5T_STRING;
    if (ok && H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        char *s = NULL;
        ok = H5Aread(a, mt, &s) >= 0 && s && strlen(s) < size;
        if (ok) strcpy(buf, s);
        if (s) H5free_memory(s);
        H5Tclose(mt);
    } else if (ok) {
        size_t n = H5Tget_size(ft);
        char *tmp = calloc(n + 1, 1);
        hid_t mt = H5Tcopy(ft);
        ok = tmp && H5Aread(a, mt, tmp) >= 0 && strlen(tmp) < size;
        if (ok) strcpy(buf, tmp);
        free(tmp);
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return ok ? 0 : -1;
}

int h5_read_attr_u64_array(hid_t loc, const char *name, uint64_t *v, int n) {
    hid_t a = open_attr(loc, name);
    if (a == 0) return 1;
    if (a < 0) return -1;
    hid_t s = H5Aget_space(a);
    int ok = H5Sget_simple_extent_npoints(s) == n && H5Aread(a, H5T_NATIVE_UINT64, v) >= 0;
    H5Sclose(s);
    H5Aclose(a);
    return ok ? 0 : -1;
}

hid_t h5_create(AtomicFile *a, const char *path) {
    h5_quiet();
    if (atomic_begin(a, path) != NSA_OK) return -1;
    errno = 0;
    hid_t f = H5Fcreate(a->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        nsa_error("cannot create %s: %s", path, errno ? strerror(errno) : "HDF5 error");
        unlink(a->tmp);
    }
    return f;
}

int h5_commit(hid_t file, AtomicFile *a) {
    // Closing flushes HDF5's caches: only then are all the bytes in the temporary.
    if (H5Fclose(file) < 0) {
        nsa_error("cannot finish writing %s (HDF5 error)", a->path);
        atomic_abort(a);
        return NSA_ERR;
    }
    return atomic_commit(a);
}

void h5_abort(hid_t file, AtomicFile *a) {
    if (file >= 0) H5Fclose(file);
    atomic_abort(a);
}
