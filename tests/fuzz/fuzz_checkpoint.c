/* libFuzzer target for the checkpoint loader (src/io/checkpoint.h): the input becomes
 * model.safetensors beside a fixed config.json (d_model 4, 1 layer, d_state 2, d_conv 2,
 * dt_rank 1, LayerNorm, untied: the seed tests/fuzz/corpus/safetensors/tiny_checkpoint) in a
 * private temporary directory, and mb_checkpoint_load runs every cross-check on it (layer count
 * from the keys, shapes vs config, norm biases, tied head, missing/unexpected tensors, finite
 * values, module. prefix, HF names, F16/BF16). Every rejection must set an error message; an
 * accepted file must give the config's parameter count. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "mambabyte.h"

static char g_dir[64], g_st[128], g_cfg[128];

static void cleanup(void) {
    unlink(g_st);
    unlink(g_cfg);
    rmdir(g_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/mb_fuzz_ckpt_%ld", (long)getpid());
        if (mkdir(g_dir, 0700) != 0 && access(g_dir, W_OK) != 0) abort();
        snprintf(g_st, sizeof g_st, "%s/model.safetensors", g_dir);
        snprintf(g_cfg, sizeof g_cfg, "%s/config.json", g_dir);
        FILE *c = fopen(g_cfg, "wb");
        if (!c) abort();
        fputs("{\"d_model\": 4, \"n_layer\": 1, \"vocab_size\": 256, \"ssm_cfg\": {\"d_state\": 2, "
              "\"d_conv\": 2, \"expand\": 2, \"dt_rank\": 1}, \"rms_norm\": false, "
              "\"residual_in_fp32\": true, \"fused_add_norm\": true, "
              "\"pad_vocab_size_multiple\": 8, \"tie_embeddings\": false}\n",
              c);
        fclose(c);
        atexit(cleanup);
    }
    FILE *fp = fopen(g_st, "wb");
    if (!fp) return 0;
    if (size && fwrite(data, 1, size, fp) != size) {
        fclose(fp);
        return 0;
    }
    fclose(fp);
    mb_model m;
    mb_checkpoint_info info;
    if (mb_checkpoint_load(g_dir, &m, &info) != 0) {
        if (!mb_last_error()[0]) abort();
        return 0;
    }
    if (m.n_params != mb_config_n_params(&m.cfg) || m.cfg.d_model != 4 || m.cfg.n_layer != 1)
        abort();
    mb_model_free(&m);
    return 0;
}
