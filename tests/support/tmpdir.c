/* Temporary directories for tests that write files (see tmpdir.h). */
#include "support/tmpdir.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int mb_test_mkdtemp(char *dir, size_t n, const char *tag) {
    if ((size_t)snprintf(dir, n, "/tmp/mb_test_%s_XXXXXX", tag) >= n) return -1;
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_cb(const char *p, const struct stat *s, int flag, struct FTW *w) {
    (void)s, (void)flag, (void)w;
    return remove(p);
}

int mb_test_rmtree(const char *dir) {
    return nftw(dir, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
}
