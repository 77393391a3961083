/* Checkpoints: a directory with config.json + model.safetensors in the mamba_ssm or Hugging
 * Face layout (model.md "Checkpoint formats to read and write"). Tensor names are those of
 * mb_tensor_table (mamba_ssm); the HF layout differs only in `backbone.embeddings.weight`.
 * conv1d.weight is stored (Di, 1, K). A tied lm_head is not stored. */
#ifndef MB_IO_CHECKPOINT_H
#define MB_IO_CHECKPOINT_H

#include "io/config_json.h"
#include "io/safetensors.h"
#include "mambabyte.h"

typedef enum { MB_CKPT_MAMBA_SSM = 0, MB_CKPT_HF = 1 } mb_ckpt_format;

/* "mamba_ssm" / "hf" -> format (MB_EINVAL naming the string otherwise). */
int mb_ckpt_format_parse(const char *s, mb_ckpt_format *out);
const char *mb_ckpt_format_name(mb_ckpt_format f);

/* What mb_checkpoint_load found. */
typedef struct {
    mb_ckpt_format names;             /* embedding key: embedding (mamba_ssm) / embeddings (hf) */
    int module_prefix;                /* 1: every key carried a wrapper's prefix (below) */
    char prefix[24];                  /* that prefix: DDP "module.", torch.compile "_orig_mod.",
                                         or both ("module._orig_mod."); "" without one */
    mb_config_flavour config_flavour; /* flavour of config.json */
    char format[48];                  /* "mamba_ssm", "hf", with "+" and the prefix if any */
    char dtype[8];                    /* "F32", "F16", "BF16" or "mixed" */
    int lm_head_stored;               /* lm_head.weight present in the file */
    int n_tensors;                    /* tensors in the file */
    char config_path[4096];
    char weights_path[4096];
} mb_checkpoint_info;

/* Write dir/config.json (flavour = format) and dir/model.safetensors (F32, metadata
 * format=pt), each atomically; creates dir (and parents) if needed. MB_EINVAL for the HF
 * format with LayerNorm (HF Mamba is RMSNorm only); MB_EIO naming the path on I/O errors. */
int mb_checkpoint_save(const char *dir, const mb_model *m, mb_ckpt_format format);
/* Same, storing the weights as `dtype` (F16/BF16 rounded to nearest even: for export). */
int mb_checkpoint_save_dtype(const char *dir, const mb_model *m, mb_ckpt_format format,
                             mb_dtype dtype);
/* The same up to the weights: dir/config.json written (atomically; a checkpoint's config is
 * the same from save to save) and model.safetensors as a finished temporary file in *weights
 * (mb_atomic_finish), for the caller to publish together with its own files (the trainer's
 * train state) or abort. *weights is zeroed on failure. */
int mb_checkpoint_prepare(const char *dir, const mb_model *m, mb_ckpt_format format, mb_dtype dtype,
                          mb_atomic_file *weights);

/* Load a checkpoint: `path` is a directory (config.json + model.safetensors) or a
 * .safetensors file with config.json beside it. Accepts either config flavour, mamba_ssm or
 * HF tensor names, and a "module." prefix on every key; F32/F16/BF16 (converted to fp32).
 * Cross-checks: n_layer counted from the keys vs the config (both numbers named); d_model,
 * d_inner, d_state, dt_rank, d_conv from the tensor shapes vs the config; norm biases vs
 * rms_norm; every tensor's shape; no missing or unexpected tensors; a tied lm_head must be
 * absent or bit-equal to the embedding, an untied one present; every weight finite
 * (MB_ENONFINITE naming file and tensor). On success *m is a new model (mb_model_free it);
 * on failure *m is zeroed. info may be NULL. */
int mb_checkpoint_load(const char *path, mb_model *m, mb_checkpoint_info *info);

#endif
