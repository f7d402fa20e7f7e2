// rundir.c: see rundir.h.
#include "train/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/atomic.h"
#include "kernels/common.h"

int rundir_create(const char *dir) {
    char buf[NSA_PATH_MAX];
    if (path_fmt(buf, sizeof buf, "%s", dir) != NSA_OK) return NSA_ERR;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                nsa_error("cannot create directory %s: %s", buf, strerror(errno));
                return NSA_ERR;
            }
            *p = c;
            if (!c) break;
        }
    }
    return NSA_OK;
}

int rundir_lock(const char *dir) {
    char path[NSA_PATH_MAX];
    if (path_fmt(path, sizeof path, "%s/lock", dir) != NSA_OK) return NSA_ERR;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        nsa_error("cannot open %s: %s", path, strerror(errno));
        return NSA_ERR;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = "";
        ssize_t n = err == EWOULDBLOCK ? pread(fd, pid, sizeof pid - 1, 0) : -1;
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (err == EWOULDBLOCK)
            nsa_error("run directory %s is in use by another nsa train (pid %s)", dir, pid[0] ? pid : "unknown");
        else nsa_error("cannot lock %s: %s", path, strerror(err));
        close(fd);
        return NSA_ERR;
    }
    // Only informative (for the message above): a full disk must not stop the run here.
    char text[32];
    int len = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) errno = 0;
    return fd;
}

void rundir_unlock(int fd) {
    if (fd >= 0) close(fd);
}

static int is_ckpt_name(const char *s) {
    if (strncmp(s, "ckpt_", 5)) return 0;
    for (int i = 5; i < 13; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return !strcmp(s + 13, ".h5");
}

void rundir_ckpt_name(char *name, size_t size, int64_t step) {
    snprintf(name, size, "ckpt_%08lld.h5", (long long)step);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Checkpoint file names of a run directory, oldest first (zero-padded steps sort as text).
static int list_ckpts(const char *dir, char ***names) {
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_ckpt_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            *names = realloc(*names, (size_t)cap * sizeof **names);
            NSA_ASSERT(*names);
        }
        (*names)[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(*names, (size_t)n, sizeof **names, cmp_str);
    return n;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

int rundir_has_ckpts(const char *dir) {
    char **names;
    int n = list_ckpts(dir, &names);
    free_names(names, n);
    return n > 0;
}

void rundir_remove_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[NSA_PATH_MAX];
        if (atomic_is_tmp_name(e->d_name) && snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
            unlink(p);
    }
    closedir(d);
}

int rundir_latest_ckpt(const char *dir, char *path, size_t size) {
    char lp[NSA_PATH_MAX], name[256] = "";
    if (path_fmt(lp, sizeof lp, "%s/latest", dir) != NSA_OK) return NSA_ERR;
    FILE *f = fopen(lp, "r");
    if (f) {
        if (!fgets(name, sizeof name, f)) name[0] = 0;
        fclose(f);
        name[strcspn(name, "\r\n")] = 0;
    }
    if (name[0] && !is_ckpt_name(name)) {
        // `latest` is one of ours: anything else (a path, "../x") is not followed.
        nsa_error("cannot resume: %s/latest names '%.64s', not a ckpt_<step>.h5 of this run", dir, name);
        return NSA_ERR;
    }
    if (!name[0]) {  // no `latest` (killed before the first one): the newest complete file
        char **names;
        int n = list_ckpts(dir, &names);
        if (n) snprintf(name, sizeof name, "%s", names[n - 1]);
        free_names(names, n);
    }
    if (!name[0]) {
        struct stat sb;
        if (stat(dir, &sb) != 0) nsa_error("cannot resume: run directory %s does not exist", dir);
        else nsa_error("cannot resume: %s has no checkpoint (no `latest`, no ckpt_*.h5)", dir);
        return NSA_ERR;
    }
    return path_fmt(path, size, "%s/%s", dir, name);
}

int rundir_commit_ckpt(const char *dir, const char *name, int64_t keep) {
    char lp[NSA_PATH_MAX], text[80];
    if (path_fmt(lp, sizeof lp, "%s/latest", dir) != NSA_OK) return NSA_ERR;
    int len = snprintf(text, sizeof text, "%s\n", name);
    if (atomic_write(lp, text, (size_t)len) != NSA_OK) return NSA_ERR;
    char **names;
    int n = list_ckpts(dir, &names);
    for (int i = 0; i < n - (int)keep; i++) {
        char path[NSA_PATH_MAX];
        if (strcmp(names[i], name) && path_fmt(path, sizeof path, "%s/%s", dir, names[i]) == NSA_OK) remove(path);
    }
    free_names(names, n);
    return NSA_OK;
}

int rundir_write_config(const char *dir, const Config *c) {
    char path[NSA_PATH_MAX];
    if (path_fmt(path, sizeof path, "%s/config.cfg", dir) != NSA_OK) return NSA_ERR;
    AtomicFile a;
    if (atomic_open(&a, path) != NSA_OK) return NSA_ERR;
    if (config_fprint(c, a.f) != NSA_OK) {
        atomic_abort(&a);
        return NSA_ERR;
    }
    return atomic_commit(&a);
}
