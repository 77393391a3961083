/* JSON text checks shared by the config.json and safetensors header readers (json_check.h). */
#include "io/json_check.h"

#include <string.h>

#include "io/printable.h"
#include "mambabyte.h"

int mb_json_check_nul(const char *text, size_t n, const char *path, int64_t base) {
    for (size_t i = 0; i < n; i++) {
        if (text[i] != '"') continue;
        const size_t start = ++i;
        int nul = 0;
        for (; i < n && text[i] != '"'; i++) {
            if (text[i] == '\0') nul = 1;
            if (text[i] != '\\' || i + 1 >= n) continue;
            if (text[i + 1] == 'u' && i + 5 < n && !strncmp(text + i + 2, "0000", 4)) nul = 1;
            i++; /* (the escaped character; \uXXXX's digits are plain characters) */
        }
        if (!nul) continue;
        size_t k = i + 1;
        while (k < n && (text[k] == ' ' || text[k] == '\t' || text[k] == '\n' || text[k] == '\r'))
            k++;
        char shown[MB_PRINTABLE_BUF];
        mb_printable_json(text + start, i - start, shown);
        if (k < n && text[k] == ':')
            return mb_fail(MB_EFORMAT,
                           "file %s: field name \"%s\" (byte %lld) contains a NUL byte (not "
                           "supported in a field name)",
                           path, shown, (long long)(base + (int64_t)start));
        return mb_fail(MB_EFORMAT,
                       "file %s: string \"%s\" (byte %lld) contains a NUL byte (not supported)",
                       path, shown, (long long)(base + (int64_t)start));
    }
    return MB_OK;
}
