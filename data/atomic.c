// atomic.c: see atomic.h. The temporary carries the writer's pid so that two processes
// writing the same target never share (and corrupt) one temporary; the rename decides
// which complete file wins.
#include "data/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "kernels/common.h"

#define TMP_TAG ".tmp."

int atomic_begin(AtomicFile *a, const char *path) {
    memset(a, 0, sizeof *a);
    if (path_fmt(a->path, sizeof a->path, "%s", path) != NSA_OK) return NSA_ERR;
    return path_fmt(a->tmp, sizeof a->tmp, "%s" TMP_TAG "%ld", path, (long)getpid());
}

int atomic_open(AtomicFile *a, const char *path) {
    if (atomic_begin(a, path) != NSA_OK) return NSA_ERR;
    a->f = fopen(a->tmp, "w");
    if (!a->f) {
        nsa_error("cannot write %s: %s", a->path, strerror(errno));
        return NSA_ERR;
    }
    return NSA_OK;
}

void atomic_abort(AtomicFile *a) {
    if (a->f) fclose(a->f);
    a->f = NULL;
    if (a->tmp[0]) unlink(a->tmp);
}

// The directory entry of the rename is data too: without this a crash right after
// commit may bring back the previous file (or none).
static int fsync_dir(const char *path) {
    char dir[NSA_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);  // path fit the same size already
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = '\0';  // a file in /
    else *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    // EINVAL: the file system has no directory fsync (some network ones); nothing to add.
    int rc = fsync(fd) != 0 && errno != EINVAL ? -1 : 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int atomic_commit(AtomicFile *a) {
    const char *failed = NULL;
    int err = 0;
    if (a->f) {
        errno = 0;
        int bad = fflush(a->f) != 0 || ferror(a->f) || fsync(fileno(a->f)) != 0;
        err = errno;
        if (fclose(a->f) != 0 && !bad) bad = 1, err = errno;
        a->f = NULL;
        if (bad) failed = "cannot write";
    } else {
        int fd = open(a->tmp, O_RDONLY);
        if (fd < 0 || fsync(fd) != 0) failed = "cannot write", err = errno;
        if (fd >= 0) close(fd);
    }
    if (!failed && rename(a->tmp, a->path) != 0) failed = "cannot replace", err = errno;
    if (failed) {
        nsa_error("%s %s: %s", failed, a->path, strerror(err ? err : EIO));
        unlink(a->tmp);
        return NSA_ERR;
    }
    // The new file is in place; only its durability is in question now.
    if (fsync_dir(a->path) != 0) {
        nsa_error("cannot sync the directory of %s: %s", a->path, strerror(errno));
        return NSA_ERR;
    }
    return NSA_OK;
}

int atomic_write(const char *path, const void *data, size_t size) {
    AtomicFile a;
    if (atomic_open(&a, path) != NSA_OK) return NSA_ERR;
    if (size && fwrite(data, 1, size, a.f) != size) {
        nsa_error("cannot write %s: %s", path, strerror(errno));
        atomic_abort(&a);
        return NSA_ERR;
    }
    return atomic_commit(&a);
}

int atomic_is_tmp_name(const char *name) {
    const char *tag = NULL;
    for (const char *p = strstr(name, TMP_TAG); p; p = strstr(p + 1, TMP_TAG)) tag = p;
    if (!tag || tag == name) return 0;
    const char *pid = tag + strlen(TMP_TAG);
    if (!*pid) return 0;
    for (; *pid; pid++)
        if (*pid < '0' || *pid > '9') return 0;
    return 1;
}
