/* Escaping of strings from files for error messages (printable.h). */
#include "io/printable.h"

#include <string.h>

const char *mb_printable(const char *s, char *buf) {
    static const char hex[] = "0123456789abcdef";
    if (!s) s = "(null)";
    char *o = buf;
    size_t i = 0;
    for (; s[i] && i < MB_PRINTABLE_MAX; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '\\') {
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
    if (s[i]) {
        memcpy(o, "...", 3);
        o += 3;
    }
    *o = '\0';
    return buf;
}
