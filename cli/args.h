/* Small helpers for the subcommands' flag parsing: each value is checked and an error names
 * the flag. */
#ifndef MB_CLI_ARGS_H
#define MB_CLI_ARGS_H

#include <stdint.h>

#include "plural.h"

/* The flag argv[i] as the loop compares it. "--name=value" (GNU form) gives "--name" and keeps
 * value for the arg_value call that follows; any other argument is returned as it is. NULL after
 * printing an error where the previous flag was given "=value" but takes none (see also
 * arg_flags_end). The returned name stays valid until the next call. */
const char *arg_flag(const char *cmd, char **argv, int i);
/* After the loop: nonzero (message printed) where the last flag was given a value it takes not. */
int arg_flags_end(const char *cmd);
/* Value of flag argv[*i]: the "=value" part of "--name=value", else the next argument (advances
 * *i); NULL after printing "<cmd>: <flag> needs a value". */
const char *arg_value(const char *cmd, int argc, char **argv, int *i);
/* arg_value for a file or directory, flag as arg_flag returned it: an empty value is refused too
 * ("<cmd>: <flag> needs a path, not an empty string"; an empty path would otherwise name the
 * current or the root directory once joined with a file name). */
const char *arg_path(const char *cmd, const char *flag, int argc, char **argv, int *i);
/* 0 when path (a positional argument named `what`) is non-empty, else -1 after the same
 * message. */
int arg_path_check(const char *cmd, const char *what, const char *path);
/* Parse integers / floats in [lo, hi]; on error print a message naming the flag, return -1. */
int arg_int64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
              int64_t *out);
int arg_float(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out);
/* Human-readable byte count ("1.5 MiB"). Returns buf. */
const char *fmt_bytes(double bytes, char *buf, int n);
/* Seconds as "1h02m03s" / "2m03s" / "12s". */
const char *fmt_duration(double s, char *buf, int n);
/* Peak resident memory of this process in bytes (getrusage). */
double peak_rss_bytes(void);
/* Monotonic wall time in seconds. */
double now_seconds(void);

#endif
