/* Atomic file replacement: write `path.tmp.<pid>` in the same directory, flush + fsync it,
 * rename it over `path`, then fsync the directory, so a reader sees either the old file or
 * the complete new one, never a torn write (POSIX rename(2) semantics). */
#ifndef MB_IO_ATOMIC_FILE_H
#define MB_IO_ATOMIC_FILE_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char *path; /* final name */
    char *tmp;  /* path.tmp.<pid> */
} mb_atomic_file;

/* Create `path.tmp.<pid>` for writing. MB_EIO names the temporary path and errno text. */
int mb_atomic_open(mb_atomic_file *af, const char *path);
/* Append n bytes. MB_EIO (naming the final path) on a short write; the file stays open and
 * must still be aborted. */
int mb_atomic_write(mb_atomic_file *af, const void *data, int64_t n);
/* fflush + fsync + close, rename over the final path, fsync the directory. On failure the
 * temporary file is removed and MB_EIO names the path. af is released either way. */
int mb_atomic_commit(mb_atomic_file *af);
/* The two halves of mb_atomic_commit, for files that must appear together (a checkpoint's
 * weights and train state): finish (fflush + fsync + close: the complete temporary file is on
 * disk; on failure it is removed and af released), then publish (rename over the final path +
 * fsync of the directory; af released either way, the temporary removed on failure). Finish
 * every file before publishing any, so that a write error (a full disk) leaves all the old
 * files in place; a finished af that is not published must be aborted. */
int mb_atomic_finish(mb_atomic_file *af);
int mb_atomic_publish(mb_atomic_file *af);
/* Close and delete the temporary file (no-op on a released af). */
void mb_atomic_abort(mb_atomic_file *af);

/* fsync the directory holding `path` (a file in it), so that a rename into it is durable.
 * File systems that refuse fsync on directories (EINVAL, EROFS) are not an error; MB_EIO names
 * the directory otherwise. */
int mb_atomic_sync_dir(const char *path);
/* Whole-buffer convenience: open, write n bytes, commit. */
int mb_atomic_write_file(const char *path, const void *data, int64_t n);

#endif
