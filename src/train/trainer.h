/* The training loop (MambaByte recipe, model.md "Training recipe"): AdamW, linear warm-up then
 * cosine decay, global gradient-norm clipping, gradient accumulation, periodic validation bpb,
 * atomic checkpoints (mamba_ssm safetensors + config.json + train_state.safetensors) and exact
 * resume. */
#ifndef MB_TRAIN_TRAINER_H
#define MB_TRAIN_TRAINER_H

#include <stdint.h>

#include "mambabyte.h"

typedef struct mb_train_opts {
    const char *data;   /* training input: file, directory tree or .jsonl */
    const char *val;    /* separate validation input, or NULL (split by document) */
    const char *format; /* "auto", "bytes", "jsonl" */
    const char *out;    /* checkpoint directory */
    mb_config cfg;      /* model (ignored on resume: the checkpoint's config is used) */
    int64_t ctx, batch, accum;
    int64_t steps;      /* total steps (schedule length); 0 = derive from time_limit */
    double time_limit;  /* seconds of wall time for this run; 0 = none */
    int64_t stop_after; /* stop (with a checkpoint) after this many steps of this run; 0 = off */
    double lr, lr_min, weight_decay, beta1, beta2, eps, clip;
    int64_t warmup;
    uint64_t seed;
    double val_fraction;      /* fraction of documents (or bytes) held out */
    int64_t eval_every;       /* steps between validation evaluations (0 = only at the end;
                               * saved with the run: restored on resume) */
    int64_t eval_bytes;       /* cap on validation bytes scored per evaluation (0 = all) */
    int64_t final_eval_bytes; /* cap on validation bytes for the final val_bpb (0 = all) */
    /* eval_bytes / final_eval_bytes given by the caller: on resume they replace the run's saved
     * values (with a note); otherwise the saved ones are used, as eval_every */
    int eval_bytes_given, final_eval_bytes_given;
    int64_t ckpt_every; /* steps between checkpoints (0 = only at the end) */
    int resume;
    int force;             /* replace a checkpoint already in `out` (without resume) */
    int quiet;             /* no per-step progress lines */
    const char *precision; /* "auto" (bf16 on a GPU, fp32 on the CPU), "fp32", "bf16" */
    int recompute;         /* activation recomputation: -1 auto, 0 off, 1 on (GPU) */
    double gpu_memory;     /* GPU: most device memory in use (GiB, as nvidia-smi counts it)
                            * that the activation plan may reach; 0 = 90% of what is free */
    /* With resume: called once the checkpoint and its train state have loaded, with the run's
     * saved settings (saved: ctx, batch, accum, seed, val_fraction, the optimizer's and
     * eval_every, as the run goes on with them; eval_bytes / final_eval_bytes as used) and the
     * checkpoint's model config, so that the caller can report which of its options differ from
     * them. NULL: not called. */
    void (*on_resume)(const struct mb_train_opts *saved, const mb_config *cfg, void *user);
    void *on_resume_user;
} mb_train_opts;

/* Defaults: ctx 1024, batch 8, accum 1, lr 4e-4 (min 10%), warm-up 500 capped at 10% of steps,
 * wd 0.1, betas 0.9/0.95, eps 1e-8, clip 1.0, val 1%, eval every 100 steps on <= 256 KiB, final
 * eval on <= 4 MiB. */
void mb_train_opts_default(mb_train_opts *o);

/* Run training. Prints one progress line per step to stderr and `val_bpb: <value>` to stdout
 * at the end; appends JSON lines to <out>/metrics.jsonl. Returns MB_OK, or an error with
 * mb_last_error() set (bad input, I/O, MB_ENONFINITE naming the step of a NaN/inf loss or
 * gradient; the last checkpoint is then left intact). */
int mb_train(const mb_train_opts *o);

#endif
