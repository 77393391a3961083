/* libFuzzer target for the safetensors reader (src/io/safetensors.h): the input is written to
 * a private temporary file and opened with mb_st_open; when it validates, every tensor is
 * looked up by name and converted to fp32 (finite check on), and every metadata key read.
 * Any crash, leak, out-of-bounds access or undefined behaviour is a bug: mb_st_open must turn
 * every malformed file into MB_EIO / MB_EFORMAT. Seed corpus: tests/fuzz/corpus/safetensors. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "mambabyte.h"

static char g_path[64];

static void cleanup(void) {
    if (g_path[0]) unlink(g_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_path[0]) {
        snprintf(g_path, sizeof g_path, "/tmp/mb_fuzz_st_%ld.safetensors", (long)getpid());
        atexit(cleanup);
    }
    FILE *fp = fopen(g_path, "wb");
    if (!fp) return 0;
    if (size && fwrite(data, 1, size, fp) != size) {
        fclose(fp);
        return 0;
    }
    fclose(fp);
    mb_st_file f;
    if (mb_st_open(&f, g_path) != 0) {
        if (!mb_last_error()[0]) abort(); /* every failure must say why */
        return 0;
    }
    for (int i = 0; i < f.n_tensors; i++) {
        const mb_st_tensor *t = &f.tensors[i];
        if (mb_st_find(&f, t->name) != t) abort(); /* names are unique: lookup finds it */
        if (t->numel > (int64_t)1 << 20) continue;
        float *buf = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
        if (!buf) continue;
        (void)mb_st_read_f32(&f, t, t->ndim, t->shape, 1, buf);
        free(buf);
    }
    for (int i = 0; i < f.n_meta; i++)
        if (mb_st_meta(&f, f.meta_keys[i]) == NULL) abort();
    (void)mb_st_find(&f, "backbone.embedding.weight");
    mb_st_close(&f);
    return 0;
}
