/* Temporary directories for tests that write files. */
#ifndef MB_TEST_TMPDIR_H
#define MB_TEST_TMPDIR_H

#include <stddef.h>

/* Create /tmp/mb_test_<tag>_XXXXXX into dir (n bytes); 0 on success, -1 on failure. */
int mb_test_mkdtemp(char *dir, size_t n, const char *tag);
/* Remove dir and everything below it (no symlinks followed); 0 on success. */
int mb_test_rmtree(const char *dir);

#endif
