/* The whole model on a CUDA GPU, in fp32 or in bf16 mixed precision: device-side parameters,
 * gradients and AdamW moments, an activation workspace, the parallel forward and its backward,
 * matching the CPU model (src/cpu/model.c, include/mambabyte.h mb_forward / mb_backward /
 * mb_adamw_update).
 *
 * Layout: params, grads, adam_m and adam_v are flat DEVICE vectors of n_params floats with the
 * layout of mb_model.params (mb_tensor_table order), so checkpoints move with one copy.
 * Activations: one device allocation per workspace, carved into per-layer buffers as in mb_acts
 * (residual stream, norm statistics, in_proj / conv / x_proj / delta / gated scan outputs and
 * the scan's chunk-boundary states; never an (L, Di, N) tensor).
 *
 * Precision (mb_cuda_model_set_bf16): fp32 (default) runs every product in fp32 (cuBLAS SGEMM).
 * bf16 mixed precision follows PyTorch autocast as mamba_ssm trains: the matrix products take
 * bf16 operands (a bf16 shadow of the fp32 master weights, refreshed after every upload and
 * AdamW step, and bf16 copies of their activation / gradient operands) with fp32 accumulation
 * and fp32 outputs through cuBLASLt; parameters, gradients, AdamW moments, the residual stream,
 * norms, conv, softplus, the scan (inputs, state) and the loss stay fp32.
 *
 * Activation recomputation (MB_CUDA_ACTS_RECOMPUTE): training keeps only each layer's residual
 * input and norm statistics; the backward re-runs each layer's mixer forward (one layer's
 * workspace) before differentiating it: about one more forward pass of compute for a
 * workspace that no longer grows with n_layer (mamba_ssm's checkpointing of the Mamba block).
 *
 * Errors: every function returns 0 or a negative MB_E* code with mb_fail() saying what failed
 * (MB_EIO: no CUDA device, driver or kernel failure, with the CUDA message; MB_ENOMEM: device
 * out of memory; MB_EINVAL: bad arguments). Nothing aborts. All work runs on dm->stream (the
 * legacy default stream); functions that return host values synchronise.
 */
#ifndef MB_CUDA_MODEL_CUDA_H
#define MB_CUDA_MODEL_CUDA_H

#include <stdint.h>

#include "mambabyte.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    mb_config cfg;
    int64_t n_params;
    float *params;           /* (n_params) device */
    float *grads;            /* (n_params) device; accumulated by mb_cuda_backward */
    float *adam_m;           /* (n_params) device, AdamW first moment */
    float *adam_v;           /* (n_params) device, AdamW second moment */
    uint8_t *decay;          /* (n_params) device, 1 where weight decay applies */
    mb_weights w;            /* device views into params */
    mb_weights g;            /* device views into grads */
    mb_tensor_info *tensors; /* host tensor table */
    int n_tensors;
    double *scratch; /* device float64 reduction scratch */
    void *cublas;    /* cublasHandle_t */
    void *stream;    /* cudaStream_t (NULL: default stream) */
    void *mem;       /* the one device allocation */
    /* AdamW hyper-parameters and step count (mb_cuda_adamw_update) */
    float beta1, beta2, eps, weight_decay;
    int64_t adam_step;
    int bf16;              /* 1: bf16 mixed precision (mb_cuda_model_set_bf16) */
    uint16_t *params_bf16; /* (n_params) device bf16 shadow of params (bf16 mode) */
    void *cublaslt;        /* cuBLASLt context of matmul_cuda.h (bf16 mode) */
} mb_cuda_model;

/* Create a device model for a config: parameters, gradients and moments zeroed; AdamW
 * hyper-parameters default to (0.9, 0.95, 1e-8, 0.1). allow_tf32 = 0 keeps matrix products in
 * true fp32 (parity mode). MB_EIO when no CUDA device is usable, MB_ENOMEM when the device is
 * out of memory. On failure *dm is left zeroed (safe to free). */
int mb_cuda_model_create(mb_cuda_model *dm, const mb_config *c, int allow_tf32);
/* Flags of mb_cuda_model_create_ex: INFERENCE allocates the parameters only (no gradients,
 * AdamW moments or decay mask: a quarter of the memory); mb_cuda_backward, mb_cuda_zero_grads,
 * mb_cuda_grad_norm and mb_cuda_adamw_update then fail with MB_EINVAL. Forward passes (also
 * stateful ones: streamed evaluation, prompt prefill) work as usual.
 * mb_cuda_model_create(dm, c, t) = mb_cuda_model_create_ex(dm, c, t, 0). */
enum { MB_CUDA_MODEL_INFERENCE = 1 };
int mb_cuda_model_create_ex(mb_cuda_model *dm, const mb_config *c, int allow_tf32, int flags);
void mb_cuda_model_free(mb_cuda_model *dm);

/* Switch the model to bf16 mixed precision (on = 1) or back to fp32 (0): allocates the bf16
 * weight shadow (n_params x 2 bytes) and the cuBLASLt context on first use and refreshes the
 * shadow from the current parameters. Activations must be created with MB_CUDA_ACTS_BF16 to
 * match. MB_ENOMEM / MB_EIO as for create. */
int mb_cuda_model_set_bf16(mb_cuda_model *dm, int on);

/* Copy parameters host -> device (m must have dm's config) / device -> host. */
int mb_cuda_model_upload(mb_cuda_model *dm, const mb_model *m);
int mb_cuda_model_download(const mb_cuda_model *dm, mb_model *m);
/* grads = 0 / copy the gradients (n_params floats) to the host. */
int mb_cuda_zero_grads(mb_cuda_model *dm);
int mb_cuda_grads_download(const mb_cuda_model *dm, float *grads);

/* Device activation workspace for B sequences of L bytes (see mb_acts_create_ex):
 * for_training = 1 keeps every layer (needed by mb_cuda_backward), 0 one layer's worth.
 * chunk: scan chunk (0 = mb_scan_cuda_preferred_chunk()). NULL (error set) on bad sizes or
 * device out of memory. */
typedef struct mb_cuda_acts mb_cuda_acts;
mb_cuda_acts *mb_cuda_acts_create(const mb_config *c, int64_t B, int64_t L, int for_training,
                                  int64_t chunk);
/* Flags of mb_cuda_acts_create_ex: TRAIN keeps what mb_cuda_backward needs; RECOMPUTE (with
 * TRAIN) keeps only the residual stream per layer and recomputes each mixer in the backward;
 * KEEP_SCAN (with RECOMPUTE) also keeps every layer's scan chunk states and scan output (bf16
 * in bf16 mode, before the gate where mb_cuda_acts_yp: B*L*Di*2 bytes + B*Di*n_chunks*N*4, or
 * *2 where the states are bf16 too, per layer), so the re-run
 * skips the scan forward (the in_proj, conv, x_proj, dt_proj and softplus still re-run);
 * BF16 adds the bf16 operand copies of the mixed-precision model (required iff the model is
 * in bf16 mode). mb_cuda_acts_create(c, B, L, t, chunk) = _ex(c, B, L, t ? TRAIN : 0, chunk). */
enum {
    MB_CUDA_ACTS_TRAIN = 1,
    MB_CUDA_ACTS_RECOMPUTE = 2,
    MB_CUDA_ACTS_BF16 = 4,
    MB_CUDA_ACTS_KEEP_SCAN = 8,
    /* DENSE_SCAN (with TRAIN, without RECOMPUTE; fused scan, chunk 0, and sizes for which
     * mb_scan_cuda_dense_supported): the scan
     * forward saves its state every 8 positions (mb_scan_cuda_dense_chunk) and its output before
     * the gate, B*Di*N*L/8 + B*L*Di floats per layer, and the backward reads them instead of
     * recomputing them (mb_scan_cuda_opts.y_pregate); ignored where it does not apply */
    MB_CUDA_ACTS_DENSE_SCAN = 16
};
/* KEEP_XZ(n) (with RECOMPUTE; n in 0 .. 65535, capped at n_layer): layers 0 .. n - 1 keep their
 * in_proj output (xz: B*L*2Di bf16 with bf16 z, else fp32) and their x_proj output (dbc:
 * B*L*(R+2N) fp32, and its bf16 copy) in a slot each, so the backward's re-run of those layers
 * skips both products, most of the recomputation's matrix work (at 353m, ctx 8192 x 8, about
 * 0.7 of a layer's 1 ms); the other layers share one slot.
 * Memory grows by one slot per kept layer up to n_layer - 1 (n_layer - 1 and n_layer are the
 * same: the top layer's slot is its own), so a planner keeps as many layers as a budget allows
 * (mb_cuda_acts_plan). Ignored without RECOMPUTE. */
#define MB_CUDA_ACTS_KEEP_XZ(n) ((int)(((unsigned)(n)&0xffffu) << 8))
#define MB_CUDA_ACTS_KEEP_XZ_OF(flags) ((int64_t)(((unsigned)(flags) >> 8) & 0xffffu))
/* DENSE_LAYERS(n) (with DENSE_SCAN; n in 0 .. 127): only layers 0 .. n - 1 take the dense scan,
 * the others the plain one (chunk states every mb_scan_cuda_preferred_chunk() positions, no
 * y_pregate), so a budget that holds some dense layers but not all still buys those; 0, or n
 * at or above n_layer, is every layer. A dense layer costs B*Di*N*L/8 states (bf16 in bf16
 * mode) more than a plain one, less the plain one's states every 64 positions (bf16 where the
 * scan takes bf16 inputs), and B*L*Di floats of y_pregate where the pre-gate output is not kept
 * as bf16 (mb_cuda_acts_yp): at 353m's shape (ctx 8192 x 8) 0.47 GB (1.01 without), for ~0.4 ms
 * less step time (docs/benchmarks.md, session 28). Counts above 127 are not expressed (the
 * flag keeps n's low 7 bits; the planner asks for at most 127). */
#define MB_CUDA_ACTS_DENSE_LAYERS(n) ((int)(((unsigned)(n)&0x7fu) << 24))
#define MB_CUDA_ACTS_DENSE_LAYERS_OF(flags) ((int64_t)(((unsigned)(flags) >> 24) & 0x7fu))
mb_cuda_acts *mb_cuda_acts_create_ex(const mb_config *c, int64_t B, int64_t L, int flags,
                                     int64_t chunk);
int64_t mb_cuda_acts_bytes_ex(const mb_config *c, int64_t B, int64_t L, int flags, int64_t chunk);
void mb_cuda_acts_free(mb_cuda_acts *a);
/* 1 when the workspace runs the dense scan (MB_CUDA_ACTS_DENSE_SCAN applied), else 0. */
int mb_cuda_acts_dense(const mb_cuda_acts *a);
/* How many layers (0 .. n_layer, the first ones) run the dense scan (DENSE_LAYERS). */
int64_t mb_cuda_acts_dense_layers(const mb_cuda_acts *a);

/* 1 when the workspace's scan reads bf16 x and delta (bf16 training with the fused dt
 * projection, at sizes the scan takes them: mb_scan_cuda_bf16in_supported; MB_CUDA_SCAN_IN16=0
 * turns it off), else 0. Such training workspaces hold no fp32 conv output or delta, so their
 * stateful forward (mb_cuda_forward_stateful) works at batch 1 only. */
int mb_cuda_acts_in16(const mb_cuda_acts *a);
/* 1 when, beyond that, in_proj writes x and z as bf16 only and the scan reads z (and in the
 * backward its output gradient dy) as bf16 (MB_CUDA_SCAN_Z16=0 turns it off), else 0. Such
 * workspaces hold no fp32 xz above batch 1 and no fp32 dy. */
int mb_cuda_acts_z16(const mb_cuda_acts *a);
/* 1 when the workspace's norms read the out_proj output and their output gradient as bf16
 * (bf16 training at d_model a multiple of 128 up to 1024; MB_CUDA_NORM_IN16=0 turns it off),
 * else 0. */
int mb_cuda_acts_h16(const mb_cuda_acts *a);
/* 1 when the forward keeps every layer's bf16 norm output for the backward (bf16 training
 * without recomputation; MB_CUDA_KEEP_U=0 turns it off: the backward recomputes it), else 0. */
int mb_cuda_acts_ukeep(const mb_cuda_acts *a);
/* 1 when the layers keep the scan's output before the gate as bf16 (the dense ones instead of
 * the fp32 y_pregate), which the scan backward reads instead of recomputing it and from which
 * it recomputes the gated output for out_proj's weight gradient, as mamba_ssm does (bf16 scan
 * inputs, mb_cuda_acts_in16, unless every layer is dense; MB_CUDA_SCAN_YP=0 turns it off: the
 * gated output kept), else 0. */
int mb_cuda_acts_yp(const mb_cuda_acts *a);
/* 1 when the dense scan's states (every 8 positions) are stored as bf16 (bf16 training with the
 * dense scan; MB_CUDA_DENSE_H16=0 keeps them fp32), else 0. */
int mb_cuda_acts_hc16(const mb_cuda_acts *a);
/* Layers whose in_proj output the workspace keeps for the backward's re-run (KEEP_XZ, at most
 * n_layer; 0 without RECOMPUTE), and how many in_proj products the last mb_cuda_backward re-ran
 * (tests: a kept layer's re-run must not re-run it). */
int64_t mb_cuda_acts_xz_kept(const mb_cuda_acts *a);
int64_t mb_cuda_acts_xz_reruns(const mb_cuda_acts *a);
/* Training activation flags for B x L within budget bytes of device memory (host only, no
 * device call): base (TRAIN, BF16) plus, for recompute -1 (auto), no recomputation when every
 * activation fits, with DENSE_SCAN in every layer when that fits too, else in as many layers as
 * fit (DENSE_LAYERS, at most 127); otherwise (and for recompute 1)
 * RECOMPUTE, with KEEP_SCAN when that fits, and KEEP_XZ for as many layers as then fit.
 * recompute 0 forces no recomputation (DENSE_SCAN where it fits). env_knobs: MB_CUDA_DENSE_SCAN,
 * MB_CUDA_KEEP_SCAN ("0" / other), MB_CUDA_DENSE_LAYERS and MB_CUDA_KEEP_XZ (layer counts; not
 * a number: the automatic choice) force those choices (tests, benchmarks). *fits: 1 when the plan's
 * workspace fits in budget, else 0 (the smallest plan is returned then). Returns MB_EINVAL on bad
 * sizes. */
int mb_cuda_acts_plan(const mb_config *c, int64_t B, int64_t L, int base, int recompute,
                      double budget, int env_knobs, int *flags, int *fits);
/* Device bytes an mb_cuda_acts of this shape allocates (-1 on bad arguments). */
int64_t mb_cuda_acts_bytes(const mb_config *c, int64_t B, int64_t L, int for_training,
                           int64_t chunk);

/* Parallel forward from zero states (mb_forward): x (B, L) host bytes; targets (B, L) host bytes
 * or NULL. *loss (if non-NULL) receives the mean cross-entropy in nats over the B*L positions
 * (0 without targets; NaN propagates). logits (B, L, 256) host floats copied back if non-NULL. */
int mb_cuda_forward(mb_cuda_model *dm, mb_cuda_acts *a, const uint8_t *x, const uint8_t *targets,
                    float *loss, float *logits);

/* Forward starting from and updating carried recurrent states (mb_forward_stateful: streamed
 * evaluation, prompt prefill): conv_state (n_layer, B, K-1, Di) and ssm_state (n_layer, B, Di,
 * N) are DEVICE buffers with the layouts of mb_state.conv / mb_state.ssm (n_seq = B), updated
 * in place to the states after these L bytes. Otherwise as mb_cuda_forward (no backward). */
int mb_cuda_forward_stateful(mb_cuda_model *dm, mb_cuda_acts *a, float *conv_state,
                             float *ssm_state, const uint8_t *x, const uint8_t *targets,
                             float *loss, float *logits);

/* Backward of the last mb_cuda_forward with targets on training acts (mb_backward): adds
 * d(dloss * sum of per-position CE)/dparam into dm->grads (tied embeddings: the lm_head and
 * embedding gradients both land in the embedding). MB_EINVAL if the last forward cannot be
 * differentiated. */
int mb_cuda_backward(mb_cuda_model *dm, mb_cuda_acts *a, float dloss);

/* Per-position losses (B, L) of the last forward copied to the host. */
int mb_cuda_losses_download(const mb_cuda_acts *a, float *losses);

/* Global L2 norm of dm->grads (float64 accumulation) / PyTorch clip_grad_norm_ (scale by
 * max_norm / (norm + 1e-6) when norm > max_norm and finite; max_norm <= 0: no clipping), the
 * norm before clipping in *norm (may be NULL). */
int mb_cuda_grad_norm(mb_cuda_model *dm, double *norm);
int mb_cuda_grad_clip(mb_cuda_model *dm, double max_norm, double *norm);

/* AdamW hyper-parameters (moments and step count are kept). */
void mb_cuda_adamw_set(mb_cuda_model *dm, float beta1, float beta2, float eps, float weight_decay);
/* One AdamW step with learning rate lr over all parameters (mb_adamw_update semantics). */
int mb_cuda_adamw_update(mb_cuda_model *dm, float lr);

#ifdef __cplusplus
}
#endif
#endif
