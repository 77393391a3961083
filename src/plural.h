/* "" for a count of 1, else "s", for messages: "%lld byte%s", n, mb_plural(n). */
#ifndef MB_PLURAL_H
#define MB_PLURAL_H

#include <stdint.h>

static inline const char *mb_plural(int64_t n) {
    return n == 1 ? "" : "s";
}

#endif
