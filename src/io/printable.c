/* Escaping of strings from files for error messages (printable.h). */
#include "io/printable.h"

#include <string.h>

/* s[0, n) escaped into buf; keep_bs: a backslash as itself instead of "\\" */
static const char *escape(const char *s, size_t n, int keep_bs, char *buf) {
    static const char hex[] = "0123456789abcdef";
    char *o = buf;
    size_t i = 0;
    for (; i < n && i < MB_PRINTABLE_MAX; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '\\' && !keep_bs) {
            *o++ = '\\';
            *o++ = '\\';
        } else if (c >= 0x20 && c < 0x7f) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    if (i < n) {
        memcpy(o, "...", 3);
        o += 3;
    }
    *o = '\0';
    return buf;
}

const char *mb_printable(const char *s, char *buf) {
    if (!s) s = "(null)";
    return escape(s, strnlen(s, MB_PRINTABLE_MAX + 1), 0, buf);
}

const char *mb_printable_json(const char *s, size_t n, char *buf) {
    return escape(s, n, 1, buf);
}
