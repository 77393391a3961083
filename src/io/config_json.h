/* config.json in the two flavours of model.md "Checkpoint formats":
 *   mamba_ssm (models/config_mamba.py MambaConfig): d_model, n_layer, vocab_size,
 *     ssm_cfg {d_state, d_conv, expand, dt_rank, dt_min, dt_max, dt_init_floor, ...}, rms_norm,
 *     residual_in_fp32, fused_add_norm, pad_vocab_size_multiple, tie_embeddings;
 *   Hugging Face transformers (models/mamba/configuration_mamba.py MambaConfig), recognised by
 *     model_type "mamba": hidden_size, state_size, num_hidden_layers, layer_norm_epsilon,
 *     expand, conv_kernel, use_bias, use_conv_bias, time_step_rank, residual_in_fp32,
 *     tie_word_embeddings, time_step_min/max/floor, ...
 * Defaults of missing fields follow the respective MambaConfig, except that d_model/n_layer
 * (hidden_size/num_hidden_layers) and vocab_size are required. */
#ifndef MB_IO_CONFIG_JSON_H
#define MB_IO_CONFIG_JSON_H

#include "mambabyte.h"

typedef enum { MB_CFG_MAMBA_SSM = 0, MB_CFG_HF = 1 } mb_config_flavour;

/* "mamba_ssm" or "hf". */
const char *mb_config_flavour_name(mb_config_flavour f);

/* Parse config JSON text into c (finalised: d_inner, dt_rank derived). `path` only names the
 * source in messages. Errors (MB_EFORMAT / MB_EINVAL) name the file and the field: invalid
 * JSON, wrong types, a missing required field, an unknown field (mamba_ssm: any unknown key,
 * as MambaConfig(**cfg) would reject it; HF: an unknown key that looks like a misspelling of
 * one we read), a vocabulary (padded to pad_vocab_size_multiple) other than 256, and settings
 * this library cannot honour (in_proj bias, no conv bias, Mamba-2 layers, attention layers).
 * flavour_out may be NULL. */
int mb_config_json_parse(const char *text, int64_t len, const char *path, mb_config *c,
                         mb_config_flavour *flavour_out);
/* Read and parse a file (MB_EIO naming the path if it cannot be read). */
int mb_config_json_read(const char *path, mb_config *c, mb_config_flavour *flavour_out);

/* Serialise c (finalised) as JSON text in the given flavour; malloc'ed, NULL on OOM.
 * HF output carries every key transformers' MambaConfig needs for MambaForCausalLM. */
char *mb_config_json_string(const mb_config *c, mb_config_flavour flavour);
/* The same with HF's "torch_dtype" given (the stored weights' dtype: "float32", "float16",
 * "bfloat16"; the other form writes "float32"; the mamba_ssm flavour has no such key). */
char *mb_config_json_string_dtype(const mb_config *c, mb_config_flavour flavour,
                                  const char *torch_dtype);
/* Write the JSON atomically to path. */
int mb_config_json_write(const char *path, const mb_config *c, mb_config_flavour flavour);
int mb_config_json_write_dtype(const char *path, const mb_config *c, mb_config_flavour flavour,
                               const char *torch_dtype);

#endif
