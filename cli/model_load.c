/* Checkpoint loading shared by eval, generate and info. */
#include "model_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"

int cli_load_model(const char *cmd, const char *dir, mb_model *m) {
    if (mb_checkpoint_load(dir, m, NULL)) {
        fprintf(stderr, "mambabyte %s: %s\n", cmd, mb_last_error());
        return -1;
    }
    return 0;
}

void cli_model_dir(const char *dir, char *buf, size_t n) {
    /* like the checkpoint loader: a file given with -m (DIR/config.json, a .safetensors)
     * stands for the directory it is in */
    struct stat st;
    const char *slash = strrchr(dir, '/');
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        snprintf(buf, n, "%.*s", slash ? (int)(slash - dir) : 1, slash ? dir : ".");
    else
        snprintf(buf, n, "%s", dir);
}

int64_t cli_training_ctx(const char *dir, int64_t fallback) {
    char md[4096], path[4200];
    cli_model_dir(dir, md, sizeof md);
    snprintf(path, sizeof path, "%s/train_state.safetensors", md);
    mb_st_file f;
    struct stat sb;
    if (stat(path, &sb) != 0) return fallback; /* (an exported model: no training state) */
    if (mb_st_open(&f, path)) { /* there but unreadable: say which context is used instead */
        fprintf(stderr, "mambabyte: note: %s cannot be read (%s); using ctx %lld (give --ctx)\n",
                path, mb_last_error(), (long long)fallback);
        return fallback;
    }
    const char *d = mb_st_meta(&f, "data");
    const char *p = d ? strstr(d, "ctx=") : NULL;
    int64_t ctx = p ? strtoll(p + 4, NULL, 10) : 0;
    mb_st_close(&f);
    if (ctx <= 0)
        fprintf(stderr,
                "mambabyte: note: %s names no training context; using ctx %lld (give "
                "--ctx)\n",
                path, (long long)fallback);
    return ctx > 0 ? ctx : fallback;
}
