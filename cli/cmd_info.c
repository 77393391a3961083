/* mambabyte info: config, parameter count and recurrent-state size of a preset or checkpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "args.h"
#include "commands.h"
#include "io/checkpoint.h"
#include "mambabyte.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: mambabyte info (-m DIR | --preset NAME) [--json]\n"
            "\n"
            "Print a model's config, its parameter count (closed form) and the bytes of recurrent\n"
            "state one sequence needs in generation (constant in the context length).\n"
            "\n"
            "  -m DIR          checkpoint directory (config.json + model.safetensors) or a\n"
            "                  .safetensors file with config.json beside it (also --model DIR)\n"
            "  --preset NAME   one of: %s\n"
            "  --json          print JSON (config fields, n_params, state_bytes, format)\n",
            mb_config_preset_names());
}

int cmd_info(int argc, char **argv) {
    const char *dir = NULL, *preset = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = arg_flag("info", argv, i);
        if (!a) return 2;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(dir = arg_path("info", a, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--preset")) {
            if (!(preset = arg_value("info", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else {
            fprintf(stderr, "mambabyte info: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (arg_flags_end("info")) return 2;
    if (!dir == !preset) {
        fprintf(stderr, "mambabyte info: give exactly one of -m DIR or --preset NAME\n");
        return 2;
    }
    mb_config c;
    const char *format = "preset";
    mb_checkpoint_info ci;
    memset(&ci, 0, sizeof ci);
    if (preset) {
        if (mb_config_preset(&c, preset)) {
            fprintf(stderr, "mambabyte info: %s\n", mb_last_error());
            return 2;
        }
    } else {
        mb_model m;
        if (mb_checkpoint_load(dir, &m, &ci)) {
            fprintf(stderr, "mambabyte info: %s\n", mb_last_error());
            return 1;
        }
        c = m.cfg;
        format = ci.format;
        mb_model_free(&m);
    }
    int64_t n_params = mb_config_n_params(&c), state = mb_config_state_bytes(&c);
    int64_t n_emb = c.vocab_size * c.d_model * (c.tie_embeddings ? 1 : 2);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "d_model", (double)c.d_model);
        cJSON_AddNumberToObject(o, "n_layer", (double)c.n_layer);
        cJSON_AddNumberToObject(o, "vocab_size", (double)c.vocab_size);
        cJSON_AddNumberToObject(o, "d_state", (double)c.d_state);
        cJSON_AddNumberToObject(o, "d_conv", (double)c.d_conv);
        cJSON_AddNumberToObject(o, "expand", (double)c.expand);
        cJSON_AddNumberToObject(o, "d_inner", (double)c.d_inner);
        cJSON_AddNumberToObject(o, "dt_rank", (double)c.dt_rank);
        cJSON_AddBoolToObject(o, "rms_norm", c.rms_norm);
        cJSON_AddBoolToObject(o, "tie_embeddings", c.tie_embeddings);
        cJSON_AddBoolToObject(o, "residual_in_fp32", 1);
        /* the float's shortest decimal (1e-05, not 9.99999974737875e-06) */
        char eps[32];
        snprintf(eps, sizeof eps, "%.9g", (double)c.norm_eps);
        for (int digits = 1; digits <= 9; digits++) {
            snprintf(eps, sizeof eps, "%.*g", digits, (double)c.norm_eps);
            if ((float)strtod(eps, NULL) == c.norm_eps) break;
        }
        cJSON_AddRawToObject(o, "norm_eps", eps);
        cJSON_AddNumberToObject(o, "n_params", (double)n_params);
        cJSON_AddNumberToObject(o, "n_params_non_embedding", (double)(n_params - n_emb));
        cJSON_AddNumberToObject(o, "state_bytes", (double)state);
        cJSON_AddStringToObject(o, "format", format);
        if (dir) cJSON_AddStringToObject(o, "dtype", ci.dtype);
        char *s = cJSON_Print(o);
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(o);
        return 0;
    }
    char b1[32];
    printf("source          %s%s%s\n", dir ? dir : preset, dir ? "  format " : " (preset)",
           dir ? format : "");
    if (dir) printf("weights dtype   %s\n", ci.dtype);
    printf("d_model         %lld\n", (long long)c.d_model);
    printf("n_layer         %lld\n", (long long)c.n_layer);
    printf("d_inner         %lld (expand %lld)\n", (long long)c.d_inner, (long long)c.expand);
    printf("d_state         %lld\n", (long long)c.d_state);
    printf("d_conv          %lld\n", (long long)c.d_conv);
    printf("dt_rank         %lld\n", (long long)c.dt_rank);
    printf("vocab_size      %lld (bytes)\n", (long long)c.vocab_size);
    printf("norm            %s, eps %g\n", c.rms_norm ? "RMSNorm" : "LayerNorm (with bias)",
           (double)c.norm_eps);
    printf("lm_head         %s\n", c.tie_embeddings ? "tied to the embedding" : "untied");
    printf("n_params        %lld (%.1fM; %lld without embedding/head)\n", (long long)n_params,
           (double)n_params / 1e6, (long long)(n_params - n_emb));
    printf("fp32 weights    %s\n", fmt_bytes((double)n_params * 4.0, b1, sizeof b1));
    printf("state_bytes     %lld (%s per sequence, any context length)\n", (long long)state,
           fmt_bytes((double)state, b1, sizeof b1));
    return 0;
}
