// h5.c: see h5.h. Readers never trust a size, type or layout from the file: each is
// checked before the read that depends on it, and HDF5's range-exception callback turns
// silent clipping (a negative token id into uint16) into an error.
#include "data/h5.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/common.h"

#define MIB ((uint64_t)1 << 20)
// A fixed-length string attribute longer than this is not one of ours (config strings are
// < 512 bytes); refusing it bounds the buffer its read needs.
#define MAX_FIXED_STR ((size_t)1 << 16)

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

static herr_t innermost(unsigned n, const H5E_error2_t *e, void *buf) {
    if (n == 0 && e->desc) snprintf(buf, 200, "%s", e->desc);
    return 0;
}

void h5_last_error(char *buf, size_t size) {
    char tmp[200] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, tmp);
    snprintf(buf, size, "%s", tmp);
}

int h5_exists(hid_t loc, const char *path) {
    // H5Lexists needs every intermediate group to exist: walk the path.
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return 0;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            H5L_info_t info;
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0 || H5Lget_info(loc, buf, &info, H5P_DEFAULT) < 0) return 0;
            // An external link would make HDF5 open a file the user never named.
            if (info.type != H5L_TYPE_HARD && info.type != H5L_TYPE_SOFT) return 0;
            if (!c) return 1;
            *p = c;
        }
    }
}

hid_t h5_group(hid_t loc, const char *name) {
    // Attributes and links stay in the group's object header, which carries a checksum;
    // beyond 8 of them HDF5 would move them to a heap whose blocks may not.
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_attr_phase_change(gcpl, 4096, 4000);
    H5Pset_link_phase_change(gcpl, 65535, 65000);
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    return g;
}

// ---------------------------------------------------------------------------- writing

// Writers clear errno first, so that after a failure it holds the system's reason (if
// any) for h5_abort's line, not a leftover of some earlier call.
static int write_attr(hid_t loc, const char *name, hid_t type, hid_t space, const void *v) {
    errno = 0;
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
    // Fixed-length, so the bytes live in the attribute message under the object header's
    // checksum; a variable-length string lives in the global heap, which has none (and
    // whose corrupt lengths crash libhdf5 1.10).
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = write_attr(loc, name, t, H5Screate(H5S_SCALAR), v);
    H5Tclose(t);
    return rc;
}

int h5_attr_u64_array(hid_t loc, const char *name, const uint64_t *v, int n) {
    hsize_t d = (hsize_t)n;
    return write_attr(loc, name, H5T_STD_U64LE, H5Screate_simple(1, &d, NULL), v);
}

static uint64_t mul_sat(uint64_t a, uint64_t b) { return b && a > UINT64_MAX / b ? UINT64_MAX : a * b; }

void h5_chunk_dims(hsize_t *chunk, int ndim, const hsize_t *shape, size_t esize) {
    uint64_t total = esize;
    for (int i = 0; i < ndim; i++) {
        chunk[i] = shape[i] ? shape[i] : 1;
        total = mul_sat(total, chunk[i]);
    }
    if (total <= 4 * MIB) return;
    for (int i = 0; i < ndim; i++) {
        uint64_t inner = esize;
        for (int j = i + 1; j < ndim; j++) inner = mul_sat(inner, chunk[j]);
        if (inner <= MIB) {
            uint64_t rows = MIB / inner;
            chunk[i] = rows < chunk[i] ? rows : chunk[i];
            return;
        }
        chunk[i] = 1;
    }
}

static int write_ds(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *data, int ndim,
                    const int64_t *shape) {
    NSA_ASSERT(ndim >= 0 && ndim <= 8);
    hsize_t d[8] = {0}, c[8] = {0};
    int empty = 0;
    for (int i = 0; i < ndim; i++) {
        d[i] = (hsize_t)shape[i];
        empty |= d[i] == 0;
    }
    hid_t s = ndim ? H5Screate_simple(ndim, d, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (ndim == 0) {
        H5Pset_layout(dcpl, H5D_COMPACT);  // inside the object header, under its checksum
    } else if (!empty) {
        h5_chunk_dims(c, ndim, d, H5Tget_size(ftype));
        H5Pset_chunk(dcpl, ndim, c);
        H5Pset_fletcher32(dcpl);
    }
    errno = 0;
    hid_t ds = H5Dcreate2(loc, name, ftype, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int ok = ds >= 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    if (ds >= 0 && H5Dclose(ds) < 0) ok = 0;
    H5Pclose(dcpl);
    H5Sclose(s);
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

int h5_write_u16(hid_t loc, const char *name, const uint16_t *data, int ndim, const int64_t *shape) {
    return write_ds(loc, name, H5T_STD_U16LE, H5T_NATIVE_UINT16, data, ndim, shape);
}

int h5_write_f64_scalar(hid_t loc, const char *name, double v) {
    return write_ds(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, 0, NULL);
}

// ---------------------------------------------------------------------------- datasets

static H5T_conv_ret_t on_conv_exception(H5T_conv_except_t ex, hid_t src, hid_t dst, void *s, void *d, void *op) {
    (void)src, (void)dst, (void)s, (void)d;
    // Infinities and NaNs pass through (the caller's finiteness check names them);
    // a value the destination cannot hold stops the read.
    if (ex != H5T_CONV_EXCEPT_RANGE_HI && ex != H5T_CONV_EXCEPT_RANGE_LOW) return H5T_CONV_UNHANDLED;
    *(int *)op = 1;
    return H5T_CONV_ABORT;
}

int h5_read_all(hid_t ds, hid_t mtype, void *out, int *out_of_range) {
    int range = 0;
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_type_conv_cb(dxpl, on_conv_exception, &range);
    int ok = H5Dread(ds, mtype, H5S_ALL, H5S_ALL, dxpl, out) >= 0;
    H5Pclose(dxpl);
    if (out_of_range) *out_of_range = !ok && range;
    return ok ? NSA_OK : NSA_ERR;
}

int h5_check_storage(hid_t ds, const char *what, const char *name) {
    hid_t dcpl = H5Dget_create_plist(ds), space = H5Dget_space(ds), type = H5Dget_type(ds);
    int rc = NSA_ERR;
    hssize_t npoints = H5Sget_simple_extent_npoints(space);
    size_t esize = H5Tget_size(type);
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (dcpl < 0 || space < 0 || type < 0 || npoints < 0 || esize == 0) {
        nsa_error("%s: cannot inspect dataset %s (corrupt file?)", what, name);
        goto done;
    }
    if (layout == H5D_VIRTUAL || H5Pget_external_count(dcpl) != 0) {
        nsa_error("%s: dataset %s keeps its data in other files (external or virtual storage)", what, name);
        goto done;
    }
    int nf = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf; i++) {
        unsigned flags, cd[8];
        size_t ncd = 8;
        char fname[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname, fname, NULL);
        if (id < 0 || H5Zfilter_avail(id) <= 0) {
            nsa_error("%s: dataset %s needs HDF5 filter %d (%s), which this libhdf5 cannot decode", what, name,
                      (int)id, fname[0] ? fname : "unknown");
            goto done;
        }
    }
    if (npoints == 0 || layout == H5D_COMPACT) {
        rc = NSA_OK;
    } else if (layout == H5D_CONTIGUOUS) {
        haddr_t off = H5Dget_offset(ds);
        hsize_t stored = H5Dget_storage_size(ds), fsize = 0;
        hid_t fid = H5Iget_file_id(ds);
        H5Fget_filesize(fid, &fsize);
        H5Fclose(fid);
        uint64_t need = mul_sat((uint64_t)npoints, esize);
        if (off == HADDR_UNDEF || stored < need)
            nsa_error("%s: dataset %s declares %lld values but stores none (never written?)", what, name,
                      (long long)npoints);
        else if (stored > fsize || off > fsize - stored)
            nsa_error("%s: dataset %s lies beyond the end of the file (%llu bytes at offset %llu of %llu): "
                      "truncated or corrupt", what, name, (unsigned long long)stored, (unsigned long long)off,
                      (unsigned long long)fsize);
        else rc = NSA_OK;
    } else if (layout == H5D_CHUNKED) {
        int nd = H5Sget_simple_extent_ndims(space);
        hsize_t d[32], c[32], have = 0;
        uint64_t want = 1;
        if (nd < 1 || nd > 32 || H5Pget_chunk(dcpl, nd, c) != nd || H5Sget_simple_extent_dims(space, d, NULL) != nd ||
            H5Dget_num_chunks(ds, space, &have) < 0) {
            nsa_error("%s: cannot inspect the chunks of dataset %s (corrupt file?)", what, name);
            goto done;
        }
        for (int i = 0; i < nd; i++) want = mul_sat(want, c[i] ? (d[i] + c[i] - 1) / c[i] : UINT64_MAX);
        if (have != want)
            nsa_error("%s: dataset %s has %llu of its %llu chunks written (the rest would read as fill values): "
                      "incomplete or corrupt", what, name, (unsigned long long)have, (unsigned long long)want);
        else rc = NSA_OK;
    } else {
        nsa_error("%s: dataset %s has an unknown storage layout", what, name);
    }
done:
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

hid_t h5_open_dataset(hid_t loc, const char *name, const char *what) {
    if (!h5_exists(loc, name)) {
        nsa_error("%s: missing dataset %s", what, name);
        return -1;
    }
    H5O_info_t info;
    if (H5Oget_info_by_name(loc, name, &info, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_DATASET) {
        nsa_error("%s: %s is not a dataset", what, name);
        return -1;
    }
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) {
        nsa_error("%s: cannot open dataset %s (corrupt file?)", what, name);
        return -1;
    }
    return ds;
}

static void dims_text(char *buf, size_t size, int nd, const hsize_t *d) {
    buf[0] = 0;
    for (int i = 0; i < nd; i++) {
        size_t k = strlen(buf);
        snprintf(buf + k, size - k, "%s%llu", i ? "," : "", (unsigned long long)d[i]);
    }
}

int h5_read_f32(hid_t loc, const char *name, float *out, int ndim, const int64_t *shape, const char *what) {
    hid_t ds = h5_open_dataset(loc, name, what);
    if (ds < 0) return NSA_ERR;
    int rc = NSA_ERR;
    hid_t t = H5Dget_type(ds), s = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(s);
    hsize_t d[8] = {0}, want[8] = {0};
    if (nd >= 0 && nd <= 8) H5Sget_simple_extent_dims(s, d, NULL);
    int same = nd == ndim;
    for (int i = 0; i < ndim; i++) {
        want[i] = (hsize_t)shape[i];
        same = same && d[i] == want[i];
    }
    size_t esize = H5Tget_size(t);
    if (H5Tget_class(t) != H5T_FLOAT || (esize != 4 && esize != 8)) {
        nsa_error("%s: %s must be float32 (or float64), not a %s of %zu bytes", what, name,
                  H5Tget_class(t) == H5T_INTEGER ? "integer" : "non-float type", esize);
    } else if (!same) {
        char got[160], exp[160];
        dims_text(got, sizeof got, nd >= 0 && nd <= 8 ? nd : 0, d);
        dims_text(exp, sizeof exp, ndim, want);
        nsa_error("%s: %s has shape [%s], the config says [%s]", what, name, got, exp);
    } else if (h5_check_storage(ds, what, name) == NSA_OK) {
        int range;
        rc = h5_read_all(ds, H5T_NATIVE_FLOAT, out, &range);
        if (rc != NSA_OK) {
            char why[200];
            h5_last_error(why, sizeof why);
            if (range) nsa_error("%s: %s holds values beyond float32's range", what, name);
            else nsa_error("%s: cannot read %s (corrupt file: %s)", what, name, why[0] ? why : "HDF5 error");
        }
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Dclose(ds);
    return rc;
}

// ---------------------------------------------------------------------------- attributes

// One error line: "<file>: <object> attribute <name> <problem>".
static void attr_error(hid_t loc, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void attr_error(hid_t loc, const char *name, const char *fmt, ...) {
    char file[NSA_PATH_MAX] = "?", obj[256] = "?", msg[256];
    if (H5Fget_name(loc, file, sizeof file) < 0) strcpy(file, "?");
    if (H5Iget_name(loc, obj, sizeof obj) <= 0) strcpy(obj, "?");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    nsa_error("%s: %s attribute %s %s", file, obj, name, msg);
}

// Opens attribute `name` if it exists and holds exactly `n` values (n == 1: scalar or
// 1-D of one); 0 if absent, <0 after an error line.
static hid_t open_attr(hid_t loc, const char *name, hssize_t n) {
    htri_t ex = H5Aexists(loc, name);
    if (ex == 0) return 0;
    hid_t a = ex > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    if (a < 0) {
        attr_error(loc, name, "cannot be read (corrupt file?)");
        return -1;
    }
    hid_t s = H5Aget_space(a);
    H5S_class_t cls = H5Sget_simple_extent_type(s);
    int nd = H5Sget_simple_extent_ndims(s);
    hssize_t np = H5Sget_simple_extent_npoints(s);
    H5Sclose(s);
    int ok = n == 1 ? (cls == H5S_SCALAR || (cls == H5S_SIMPLE && nd == 1 && np == 1))
                    : (cls == H5S_SIMPLE && nd == 1 && np == n);
    if (!ok) {
        if (cls == H5S_SIMPLE)
            attr_error(loc, name, "holds %lld values in %d dimensions, want %s %lld", (long long)np, nd,
                       n == 1 ? "a single value, not" : "exactly", (long long)n);
        else attr_error(loc, name, "is empty (null dataspace)");
        H5Aclose(a);
        return -1;
    }
    return a;
}

int h5_read_attr_i64(hid_t loc, const char *name, int64_t *v) {
    hid_t a = open_attr(loc, name, 1);
    if (a <= 0) return a == 0 ? 1 : -1;
    hid_t t = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) > 8) {
        attr_error(loc, name, "must be an integer");
    } else if (H5Tget_sign(t) == H5T_SGN_NONE) {
        uint64_t u;
        if (H5Aread(a, H5T_NATIVE_UINT64, &u) < 0) attr_error(loc, name, "cannot be read (corrupt file?)");
        else if (u > INT64_MAX) attr_error(loc, name, "%llu is out of range", (unsigned long long)u);
        else *v = (int64_t)u, rc = 0;
    } else if (H5Aread(a, H5T_NATIVE_INT64, v) < 0) {
        attr_error(loc, name, "cannot be read (corrupt file?)");
    } else {
        rc = 0;
    }
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

int h5_read_attr_f64(hid_t loc, const char *name, double *v) {
    hid_t a = open_attr(loc, name, 1);
    if (a <= 0) return a == 0 ? 1 : -1;
    hid_t t = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(t);
    int rc = -1;
    if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || H5Tget_size(t) > 8) attr_error(loc, name, "must be a number");
    else if (H5Aread(a, H5T_NATIVE_DOUBLE, v) < 0) attr_error(loc, name, "cannot be read (corrupt file?)");
    else if (!isfinite(*v)) attr_error(loc, name, "is not finite");
    else rc = 0;
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

int h5_read_attr_str(hid_t loc, const char *name, char *buf, size_t size) {
    hid_t a = open_attr(loc, name, 1);
    if (a <= 0) return a == 0 ? 1 : -1;
    hid_t ft = H5Aget_type(a), mt = -1;
    int rc = -1;
    char *s = NULL;
    if (H5Tget_class(ft) != H5T_STRING) {
        attr_error(loc, name, "must be a string");
    } else if (H5Tis_variable_str(ft) > 0) {
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Aread(a, mt, &s) < 0 || !s) attr_error(loc, name, "cannot be read (corrupt file?)");
        else if (strlen(s) >= size) attr_error(loc, name, "is longer than %zu characters", size - 1);
        else strcpy(buf, s), rc = 0;
        if (s) H5free_memory(s);
    } else {
        size_t n = H5Tget_size(ft);
        if (n == 0 || n > MAX_FIXED_STR) {
            attr_error(loc, name, "is a fixed-length string of %zu bytes (at most %zu)", n, MAX_FIXED_STR);
        } else {
            // Read as a NUL-terminated string one byte wider, whatever the file's padding.
            mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, n + 1);
            H5Tset_strpad(mt, H5T_STR_NULLTERM);
            H5Tset_cset(mt, H5Tget_cset(ft));
            s = calloc(n + 1, 1);
            if (!s || H5Aread(a, mt, s) < 0) attr_error(loc, name, "cannot be read (corrupt file?)");
            else if (strlen(s) >= size) attr_error(loc, name, "is longer than %zu characters", size - 1);
            else strcpy(buf, s), rc = 0;
            free(s);
        }
    }
    if (mt >= 0) H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int h5_read_attr_u64_array(hid_t loc, const char *name, uint64_t *v, int n) {
    hid_t a = open_attr(loc, name, n);
    if (a <= 0) return a == 0 ? 1 : -1;
    hid_t t = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(t) != H5T_INTEGER || H5Tget_sign(t) != H5T_SGN_NONE || H5Tget_size(t) > 8)
        attr_error(loc, name, "must be unsigned integers");
    else if (H5Aread(a, H5T_NATIVE_UINT64, v) < 0) attr_error(loc, name, "cannot be read (corrupt file?)");
    else rc = 0;
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

// ---------------------------------------------------------------------------- files

hid_t h5_create(AtomicFile *a, const char *path) {
    h5_quiet();
    if (atomic_begin(a, path) != NSA_OK) return -1;
    // HDF5 1.10's object format checksums the superblock, object headers and (the fixed
    // array) chunk indexes, so corrupt metadata is an error too; Fletcher-32 covers the
    // data. The older format's v1 B-tree chunk index has no checksum, and a flipped bit in
    // a chunk's filter mask there would even switch Fletcher-32 off for that chunk.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
    errno = 0;
    hid_t f = H5Fcreate(a->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    int err = errno;
    H5Pclose(fapl);
    if (f < 0) {
        nsa_error("cannot create %s: %s", path, err ? strerror(err) : "HDF5 error");
        unlink(a->tmp);
    }
    return f;
}

// One line for a write that failed: the system's reason when HDF5 left one in errno (a
// full disk: "No space left on device", "File too large"), else HDF5's.
static void write_error(const char *path, int err) {
    char why[200];
    h5_last_error(why, sizeof why);
    nsa_error("cannot write %s: %s", path, err ? strerror(err) : why[0] ? why : "HDF5 error");
}

int h5_commit(hid_t file, AtomicFile *a) {
    // Closing flushes HDF5's caches: only then are all the bytes in the temporary.
    errno = 0;
    if (H5Fclose(file) < 0) {
        write_error(a->path, errno);
        atomic_abort(a);
        return NSA_ERR;
    }
    return atomic_commit(a);
}

void h5_abort(hid_t file, AtomicFile *a) {
    int err = errno;
    write_error(a->path, err);
    if (file >= 0) H5Fclose(file);
    atomic_abort(a);
}
