/* Strings read from files (tensor names, dtypes, config keys and values) made safe to echo in
 * an error message: a corrupt file must not send control bytes or invalid UTF-8 to the
 * terminal, nor a megabyte-long name into the message. */
#ifndef MB_IO_PRINTABLE_H
#define MB_IO_PRINTABLE_H

#include <stddef.h>

/* bytes of the string shown at most; the buffer mb_printable needs */
#define MB_PRINTABLE_MAX 64
#define MB_PRINTABLE_BUF (4 * MB_PRINTABLE_MAX + 4)

/* s as printable ASCII into buf (MB_PRINTABLE_BUF bytes), which is returned: bytes 0x20..0x7e
 * as they are except '\' (written "\\"), every other byte (control bytes, DEL, any byte >= 0x80)
 * as "\xNN"; only the first MB_PRINTABLE_MAX bytes of s, then "..." when s is longer. NULL
 * gives "(null)". */
const char *mb_printable(const char *s, char *buf);

/* s[0, n), NUL bytes included, as mb_printable but with backslashes kept single: a string
 * shown as written in a JSON text, its escapes ("\u0000") as they are. */
const char *mb_printable_json(const char *s, size_t n, char *buf);

#endif
