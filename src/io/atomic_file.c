/* Atomic file replacement (see atomic_file.h). */
#include "io/atomic_file.h"

#include "mambabyte.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void release(mb_atomic_file *af) {
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof *af);
}

int mb_atomic_open(mb_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    if (!path || !*path) return mb_fail(MB_EINVAL, "atomic write: empty path");
    size_t n = strlen(path) + 32;
    af->path = strdup(path);
    af->tmp = malloc(n);
    if (!af->path || !af->tmp) {
        release(af);
        return mb_fail(MB_ENOMEM, "file %s: out of memory", path);
    }
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        int e = errno;
        int rc = mb_fail(MB_EIO, "file %s: cannot create temporary file %s: %s", path, af->tmp,
                         strerror(e));
        release(af);
        return rc;
    }
    return MB_OK;
}

int mb_atomic_write(mb_atomic_file *af, const void *data, int64_t n) {
    if (!af->f) return mb_fail(MB_EINVAL, "atomic write: file not open");
    if (n < 0) return mb_fail(MB_EINVAL, "file %s: negative write size", af->path);
    if (n == 0) return MB_OK;
    errno = 0;
    if (fwrite(data, 1, (size_t)n, af->f) != (size_t)n) {
        int e = errno;
        return mb_fail(MB_EIO, "file %s: write to %s failed: %s", af->path, af->tmp,
                       e ? strerror(e) : "short write");
    }
    return MB_OK;
}

void mb_atomic_abort(mb_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp);
    release(af);
}

int mb_atomic_sync_dir(const char *path) {
    char *dir = strdup(path);
    if (!dir) return mb_fail(MB_ENOMEM, "file %s: out of memory", path);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    int rc = MB_OK;
    if (fd < 0) {
        rc = mb_fail(MB_EIO, "file %s: cannot open directory %s to sync it: %s", path, dir,
                     strerror(errno));
    } else {
        /* some file systems refuse fsync on directories (EINVAL): not an error */
        if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
            rc = mb_fail(MB_EIO, "file %s: fsync of directory %s failed: %s", path, dir,
                         strerror(errno));
        close(fd);
    }
    free(dir);
    return rc;
}

int mb_atomic_finish(mb_atomic_file *af) {
    if (!af->f) return mb_fail(MB_EINVAL, "atomic write: file not open");
    int rc = MB_OK;
    if (fflush(af->f) != 0)
        rc = mb_fail(MB_EIO, "file %s: flush of %s failed: %s", af->path, af->tmp, strerror(errno));
    else if (fsync(fileno(af->f)) != 0)
        rc = mb_fail(MB_EIO, "file %s: fsync of %s failed: %s", af->path, af->tmp, strerror(errno));
    if (fclose(af->f) != 0 && rc == MB_OK)
        rc = mb_fail(MB_EIO, "file %s: close of %s failed: %s", af->path, af->tmp, strerror(errno));
    af->f = NULL;
    if (rc != MB_OK) {
        unlink(af->tmp);
        release(af);
    }
    return rc;
}

int mb_atomic_publish(mb_atomic_file *af) {
    if (af->f || !af->tmp) return mb_fail(MB_EINVAL, "atomic write: file not finished");
    int rc = MB_OK;
    if (rename(af->tmp, af->path) != 0) {
        rc = mb_fail(MB_EIO, "file %s: rename from %s failed: %s", af->path, af->tmp,
                     strerror(errno));
        unlink(af->tmp);
        release(af);
        return rc;
    }
    rc = mb_atomic_sync_dir(af->path);
    release(af);
    return rc;
}

int mb_atomic_commit(mb_atomic_file *af) {
    int rc = mb_atomic_finish(af);
    return rc ? rc : mb_atomic_publish(af);
}

int mb_atomic_write_file(const char *path, const void *data, int64_t n) {
    mb_atomic_file af;
    int rc = mb_atomic_open(&af, path);
    if (rc) return rc;
    rc = mb_atomic_write(&af, data, n);
    if (rc) {
        mb_atomic_abort(&af);
        return rc;
    }
    return mb_atomic_commit(&af);
}
