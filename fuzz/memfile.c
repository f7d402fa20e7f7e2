// memfile.c: see memfile.h.
#include "fuzz/memfile.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[64];

static void remove_file(void) { unlink(path); }

const char *memfile_path(const uint8_t *data, size_t size) {
    if (!path[0]) {
        // fuzz/run.sh names a directory it removes afterwards: a crashing input ends the
        // process before atexit can remove the file.
        const char *dir = getenv("NSA_FUZZ_TMPDIR");
        if (!dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%.40s/nsa_fuzz_%ld.bin", dir, (long)getpid());
        atexit(remove_file);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size) || close(fd) != 0) {
        perror(path);
        abort();
    }
    return path;
}
