/* Non-blocking open of regular input files (regular_file.h). */
#include "io/regular_file.h"

#include "mambabyte.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mb_open_regular(const char *path, const char *what, int *fd, int64_t *size) {
    *fd = -1;
    if (!path) return mb_fail(MB_EINVAL, "%s: NULL path", what);
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f < 0) return mb_fail(MB_EIO, "%s %s: cannot open: %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(f, &st) != 0) {
        const int e = errno;
        close(f);
        return mb_fail(MB_EIO, "%s %s: cannot stat: %s", what, path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(f);
        return mb_fail(MB_EIO, "%s %s: not a regular file (%s)", what, path,
                       S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                                              : "a device or socket");
    }
    const int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        const int e = errno;
        close(f);
        return mb_fail(MB_EIO, "%s %s: fcntl: %s", what, path, strerror(e));
    }
    *fd = f;
    if (size) *size = (int64_t)st.st_size;
    return MB_OK;
}
