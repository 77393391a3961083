/* Checkpoint loading shared by eval, generate and info. */
#include "model_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"

int cli_load_model(const char *cmd, const char *dir, mb_model *m) {
    if (mb_checkpoint_load(dir, m, NULL)) {
        fprintf(stderr, "mambabyte %s: %s\n", cmd, mb_last_error());
        return -1;
    }
    return 0;
}

int64_t cli_training_ctx(const char *dir, int64_t fallback) {
    char path[4200];
    /* -m DIR/config.json (accepted by the loader) names the same checkpoint as -m DIR */
    const size_t n = strlen(dir), cl = strlen("/config.json");
    const int strip = n > cl && !strcmp(dir + n - cl, "/config.json");
    snprintf(path, sizeof path, "%.*s/train_state.safetensors", (int)(strip ? n - cl : n), dir);
    mb_st_file f;
    if (mb_st_open(&f, path)) return fallback;
    const char *d = mb_st_meta(&f, "data");
    const char *p = d ? strstr(d, "ctx=") : NULL;
    int64_t ctx = p ? strtoll(p + 4, NULL, 10) : 0;
    mb_st_close(&f);
    return ctx > 0 ? ctx : fallback;
}
