/* Checks of JSON text that cJSON's parse cannot make, shared by the config.json and
 * safetensors header readers. */
#ifndef MB_IO_JSON_CHECK_H
#define MB_IO_JSON_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* cJSON keeps strings NUL-terminated, so a NUL byte in one (raw, or written \u0000) would cut
 * it short: a key "d_model\u0000x" would read as d_model, a tensor name
 * "backbone.embedding.weight\u0000junk" as the embedding, and an unknown key be named by its
 * first part only. Scans the strings of the parsed JSON text text[0, n) and refuses (MB_EFORMAT,
 * "file PATH: field name "..." (byte N) contains a NUL byte", shown as written; N = base + its
 * offset in text, base the text's offset in the file) one holding a NUL byte; MB_OK otherwise. */
int mb_json_check_nul(const char *text, size_t n, const char *path, int64_t base);

#endif
