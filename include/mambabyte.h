/* mambabyte: byte-level language modelling with Mamba (selective state-space) blocks.
 *
 * The public C API. The model is defined in shared/spec/model.md (Mamba-1 LM of
 * mamba_ssm `MambaLMHeadModel`, vocabulary of 256 bytes). All tensors are fp32, row-major,
 * and use the mamba_ssm names and shapes. Sizes and offsets are int64_t.
 *
 * Conventions
 *   - Functions returning int return 0 on success and a negative MB_E* code on failure;
 *     a human-readable message naming the file / field / argument is stored and can be
 *     read with mb_last_error() (thread-local).
 *   - Batches of sequences are laid out (B, L) for bytes and (B, L, C) for activations.
 */
#ifndef MAMBABYTE_H
#define MAMBABYTE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MB_VERSION "0.1.0" /* the program and library version (`mambabyte --version`) */
#define MB_VOCAB 256

/* ---------------------------------------------------------------- errors */
enum {
    MB_OK = 0,
    MB_EINVAL = -1,  /* bad argument or value */
    MB_EIO = -2,     /* file system error */
    MB_EFORMAT = -3, /* malformed file (safetensors, JSON, pack, state) */
    MB_ENOMEM = -4,
    MB_ENONFINITE = -5, /* NaN or inf found */
    MB_EINTR = -6,      /* stopped by SIGINT / SIGTERM (training: after a checkpoint) */
};

/* Message of the last error on this thread ("" if none). */
const char *mb_last_error(void);
/* Set the thread's error message printf-style; returns `code` for `return mb_fail(...)`. */
int mb_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------- config */
/* Model hyper-parameters (model.md "Sizes and symbols"). d_inner = expand * d_model;
 * dt_rank = ceil(d_model / 16) when given as 0 ("auto"). */
typedef struct {
    int64_t d_model;
    int64_t n_layer;
    int64_t vocab_size;   /* always 256 */
    int64_t d_state;      /* N */
    int64_t d_conv;       /* K */
    int64_t expand;       /* E */
    int64_t dt_rank;      /* R */
    int64_t d_inner;      /* Di = E * d_model */
    int rms_norm;         /* 1: RMSNorm (weight); 0: LayerNorm (weight + bias) */
    int tie_embeddings;   /* 1: lm_head is the embedding */
    int residual_in_fp32; /* always 1 here; kept for the config files */
    float norm_eps;       /* 1e-5 */
    /* initialisation of dt_proj.bias (model.md "Initialisation") */
    float dt_min, dt_max, dt_init_floor;
} mb_config;

/* Fill defaults (MambaByte: d_state 16, d_conv 4, expand 2, LayerNorm, untied) for a
 * d_model and n_layer, and derive d_inner and dt_rank. */
void mb_config_default(mb_config *c, int64_t d_model, int64_t n_layer);
/* Derive d_inner / dt_rank ("auto" = 0) and check every field; MB_EINVAL names the field. */
int mb_config_finalize(mb_config *c);
/* Named presets: "tiny", "small" (default CPU preset), "medium", "353m", "972m".
 * Returns MB_EINVAL (listing the names) for an unknown name. */
int mb_config_preset(mb_config *c, const char *name);
/* Comma-separated list of preset names, for --help. */
const char *mb_config_preset_names(void);
/* 1 when two configs give the same tensor shapes and norm variant (buffers made for one fit the
 * other), else 0. */
int mb_config_same_shape(const mb_config *a, const mb_config *b);
/* Closed-form number of parameters (lm_head counted only when untied). */
int64_t mb_config_n_params(const mb_config *c);
/* Bytes of recurrent state for one sequence: n_layer * d_inner * (d_conv - 1 + d_state) * 4. */
int64_t mb_config_state_bytes(const mb_config *c);

/* ---------------------------------------------------------------- parameters */
/* One tensor of the flat parameter vector, in mamba_ssm naming. */
typedef struct {
    char name[96]; /* e.g. "backbone.layers.3.mixer.in_proj.weight" */
    int ndim;      /* 1..3 */
    int64_t shape[3];
    int64_t offset; /* in floats into the flat vector */
    int64_t numel;
    int weight_decay; /* 1 for matrices (in_proj, x_proj, dt_proj.weight, out_proj, conv1d.weight,
                         lm_head); 0 for A_log, D, biases, norms, embedding */
} mb_tensor_info;

/* Per-layer views into the flat vector. Shapes as in model.md. */
typedef struct {
    float *norm_w;     /* (d) */
    float *norm_b;     /* (d), NULL for RMSNorm */
    float *in_proj_w;  /* (2Di, d) */
    float *conv_w;     /* (Di, K)  (stored (Di,1,K) in checkpoints) */
    float *conv_b;     /* (Di) */
    float *x_proj_w;   /* (R+2N, Di) */
    float *dt_proj_w;  /* (Di, R) */
    float *dt_proj_b;  /* (Di) */
    float *A_log;      /* (Di, N) */
    float *D;          /* (Di) */
    float *out_proj_w; /* (d, Di) */
} mb_layer_weights;

typedef struct {
    float *embedding;         /* (V, d) */
    float *lm_head;           /* (V, d); == embedding when tied */
    float *norm_f_w;          /* (d) */
    float *norm_f_b;          /* (d), NULL for RMSNorm */
    mb_layer_weights *layers; /* n_layer entries */
} mb_weights;

/* The tensor table of a config, in a fixed order (embedding, layers..., norm_f, lm_head if
 * untied). *out is malloc'ed; the last offset+numel equals mb_config_n_params(). */
int mb_tensor_table(const mb_config *c, mb_tensor_info **out, int *n_out);

/* Carve views for a flat vector `base` of n_params floats (parameters, gradients or
 * optimizer moments share this layout). w->layers is malloc'ed; free with mb_weights_free. */
int mb_weights_bind(const mb_config *c, float *base, mb_weights *w);
void mb_weights_free(mb_weights *w);

/* A model: config + flat fp32 parameters + views. */
typedef struct {
    mb_config cfg;
    int64_t n_params;
    float *params; /* n_params floats, 64-byte aligned */
    mb_weights w;
    mb_tensor_info *tensors;
    int n_tensors;
} mb_model;

/* Allocate a model (parameters zeroed). */
int mb_model_create(mb_model *m, const mb_config *c);
void mb_model_free(mb_model *m);
/* mamba_ssm default initialisation (model.md "Initialisation"), deterministic in `seed`. */
void mb_model_init(mb_model *m, uint64_t seed);

/* ---------------------------------------------------------------- random numbers */
/* xoshiro256** generator; the one source of randomness (init, data, sampling). */
typedef struct {
    uint64_t s[4];
} mb_rng;
void mb_rng_seed(mb_rng *r, uint64_t seed);
uint64_t mb_rng_u64(mb_rng *r);
/* Uniform in [0, 1) with 24 bits (float) / 53 bits (double). */
float mb_rng_float(mb_rng *r);
double mb_rng_double(mb_rng *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t mb_rng_below(mb_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double mb_rng_normal(mb_rng *r);

/* ---------------------------------------------------------------- CPU forward / backward */
/* Activations and workspace for a batch of B sequences of L bytes (training and evaluation).
 * Holds everything the backward pass needs: per layer the residual stream, norm statistics,
 * in_proj output, conv output, x_proj output, delta, gated scan output and the scan's
 * chunk-boundary states (never an (L, Di, N) tensor). */
typedef struct mb_acts mb_acts;
mb_acts *mb_acts_create(const mb_config *c, int64_t B, int64_t L);
void mb_acts_free(mb_acts *a);

/* Parallel forward over a batch: x (B, L) input bytes; targets (B, L) bytes or NULL.
 * Returns the mean cross-entropy in nats over the B*L predicted bytes (0 when targets is
 * NULL). If logits is non-NULL, writes (B, L, 256) logits. Every sequence starts from a zero
 * state (see mb_forward_stateful for carried state). Per-position losses are kept in acts. */
float mb_forward(const mb_model *m, mb_acts *a, const uint8_t *x, const uint8_t *targets,
                 float *logits);
/* Backward of the last mb_forward with targets. Adds d(dloss * sum of per-position CE)/dparam
 * into grads (flat, n_params floats, same layout as parameters). For a mean loss over a batch
 * pass dloss = 1 / (B * L * accumulation_steps). */
void mb_backward(const mb_model *m, mb_acts *a, float dloss, float *grads);
/* Per-position cross-entropy (nats) of the last forward: (B, L) floats owned by acts. */
const float *mb_acts_losses(const mb_acts *a);

/* ---------------------------------------------------------------- recurrent state */
/* Recurrent inference state for S sequences (model.md "Recurrent step"): per layer and
 * sequence the last K-1 conv inputs (K-1, Di) and the SSM state (Di, N). Constant size. */
typedef struct {
    mb_config cfg;
    int64_t n_seq;
    float *conv;    /* (n_layer, n_seq, K-1, Di), oldest first */
    float *ssm;     /* (n_layer, n_seq, Di, N) */
    float *scratch; /* workspace for mb_step */
} mb_state;
int mb_state_create(mb_state *s, const mb_config *c, int64_t n_seq);
void mb_state_reset(mb_state *s);
void mb_state_free(mb_state *s);

/* One recurrent step for every sequence: bytes (n_seq), writes logits (n_seq, 256).
 * Equals the parallel forward at the same position. */
void mb_step(const mb_model *m, mb_state *s, const uint8_t *bytes, float *logits);

/* Forward of a batch starting from and updating carried states (streamed evaluation and
 * prompt prefill): x (B, L), state has n_seq == B. Like mb_forward otherwise (no backward). */
float mb_forward_stateful(const mb_model *m, mb_acts *a, mb_state *s, const uint8_t *x,
                          const uint8_t *targets, float *logits);

/* ---------------------------------------------------------------- sampler */
/* Sampling (llama2.c style): temperature 0 = argmax; top_k 0 = off; top_p 1 = off. */
typedef struct {
    float temperature;
    int top_k;
    float top_p;
    mb_rng rng;
    float *probs; /* workspace (256) */
    int *idx;     /* workspace (256) */
} mb_sampler;
void mb_sampler_init(mb_sampler *s, float temperature, int top_k, float top_p, uint64_t seed);
void mb_sampler_free(mb_sampler *s);
/* Draw one byte from 256 logits (logits are not modified). */
int mb_sample(mb_sampler *s, const float *logits);

#ifdef __cplusplus
}
#endif
#endif
