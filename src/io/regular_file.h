/* Opening an input that must be a regular file (checkpoint weights, config.json, data and pack
 * files) without blocking: open(2) of a FIFO for reading waits for a writer, so the path is
 * opened non-blocking, checked with fstat, and only then made blocking again. */
#ifndef MB_IO_REGULAR_FILE_H
#define MB_IO_REGULAR_FILE_H

#include <stdint.h>

/* Open path read-only (close-on-exec) into *fd, its size in bytes into *size (may be NULL).
 * Errors name `what` (e.g. "file", "data file") and the path: MB_EIO when it cannot be opened
 * or is not a regular file (a directory, FIFO, socket or device). */
int mb_open_regular(const char *path, const char *what, int *fd, int64_t *size);

#endif
