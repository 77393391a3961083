/* Compute backends for training and evaluation: the CPU model (src/cpu) or, when the program
 * was built with CUDA, the GPU model (src/cuda/model_cuda.h through src/cuda/trainer_cuda.h).
 *
 * A backend session holds a host model (mb_model) and, for training, its AdamW state
 * (mb_adamw). The CPU backend works on them in place. The CUDA backend uploads parameters,
 * AdamW moments and step count when it opens and keeps them on the device; mb_backend_sync
 * copies them back into the host model / optimizer (before a checkpoint is written), so the
 * checkpoint files are the same whatever the device, and a run can resume on either.
 *
 * The library itself only knows the CPU backend (it never links CUDA); the CUDA backend's ops
 * come from mb_backend_cuda() in the mambabyte_cuda library and reach the trainer through
 * mb_train_with_backend / mb_backend_resolve. MB_BACKEND_CUDA_OPS gives them to code compiled
 * with MB_HAVE_CUDA (the CLI when cmake/cuda.cmake found nvcc), NULL elsewhere.
 */
#ifndef MB_TRAIN_BACKEND_H
#define MB_TRAIN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "mambabyte.h"
#include "train/adamw.h"
#include "train/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_backend mb_backend;

/* Numerics of a session. precision: MB_PRECISION_AUTO (bf16 mixed precision on the GPU when
 * training, fp32 otherwise), MB_PRECISION_FP32, MB_PRECISION_BF16 (GPU only: bf16 operands of
 * the matrix products, fp32 master weights, moments, scan, norms and loss; model_cuda.h).
 * recompute (training): -1 auto (GPU: on when the stored activations would not fit in the
 * device's free memory), 0 off, 1 on (re-run each layer's mixer forward in the backward).
 * gpu_memory (training, GPU): when > 0, the device memory in use (GiB, every process's, as
 * nvidia-smi counts it) that the session's activations may bring the device to; the plan
 * (recomputation, what it keeps) is chosen to stay under it, and a session whose smallest plan
 * does not fit is refused. 0: 90% of the free memory.
 * The CPU backend keeps every activation and computes in fp32 (bf16 is refused). */
enum { MB_PRECISION_AUTO = 0, MB_PRECISION_FP32 = 1, MB_PRECISION_BF16 = 2 };
typedef struct {
    int precision;
    int recompute;
    double gpu_memory;
} mb_backend_flags;

/* "auto" | "fp32" | "bf16" -> MB_PRECISION_*; -1 for anything else. */
int mb_precision_parse(const char *s);

/* Every function returns 0 or a negative MB_E* code with mb_last_error() set. */
typedef struct {
    const char *name; /* "cpu", "cuda" */
    /* Is the device usable? Writes a one-line description ("NVIDIA H200, sm_90, 139.8 GiB")
     * into desc (may be NULL). Errors say why not (no device, driver too old, no kernel image
     * for this GPU). */
    int (*probe)(char *desc, size_t n);
    /* Open a session on host model m (kept by pointer: it must outlive the session) with
     * batches of B sequences of L bytes. opt: AdamW state for training, or NULL (evaluation
     * only; then train must be 0). train = 1 keeps the activations needed by backward.
     * flags: numerics (NULL = defaults: auto precision, auto recomputation). */
    int (*open)(mb_backend **out, mb_model *m, mb_adamw *opt, int64_t B, int64_t L, int train,
                const mb_backend_flags *flags);
    void (*close)(mb_backend *b);
    /* gradients = 0 */
    int (*zero_grads)(mb_backend *b);
    /* Parallel forward of a (B, L) batch (host bytes) from zero states with targets y; *loss =
     * mean cross-entropy in nats (NaN propagates). Same as mb_forward. */
    int (*forward)(mb_backend *b, const uint8_t *x, const uint8_t *y, float *loss);
    /* Backward of the last forward: gradients += d(dloss * sum of CE)/dparam (mb_backward). */
    int (*backward)(mb_backend *b, float dloss);
    /* Global gradient-norm clipping (mb_grad_clip); *norm = norm before clipping. */
    int (*clip)(mb_backend *b, double max_norm, double *norm);
    /* One AdamW step with learning rate lr (mb_adamw_update). */
    int (*update)(mb_backend *b, float lr);
    /* Copy parameters (and, for training, AdamW moments and step) into the host model and
     * optimizer given to open. No-op on the CPU. */
    int (*sync)(mb_backend *b);
    /* Evaluation scorer (mb_eval_scorer of eval/evaluate.h; user = the mb_backend): B windows
     * (B, L) from zero states, *nats = sum over the B*L positions of the cross-entropy (summed
     * in double, in position order). Called with (B, L) = the session's shape, or with B = 1
     * and 1 <= L <= the session's L. */
    int (*score)(void *b, const uint8_t *x, const uint8_t *y, int64_t B, int64_t L, double *nats);
    /* Streamed-evaluation scorer (mb_stream_scorer of eval/evaluate.h; user = the mb_backend)
     * on a session opened with B = 1: one window of 1 <= L <= the session's L continuing the
     * carried state (reset = 1: zero state first). NULL when the backend has none (the CPU's
     * streamed evaluation is mb_evaluate's own). */
    int (*score_stream)(void *b, const uint8_t *x, const uint8_t *y, int64_t L, int reset,
                        double *nats);
} mb_backend_ops;

/* A session; each backend's own state follows this header. */
struct mb_backend {
    const mb_backend_ops *ops;
    char numerics[256]; /* set by open: "fp32", "bf16 mixed precision, recomputation on", ... */
};

/* The CPU backend (src/cpu model, OpenBLAS): bit-for-bit the arithmetic of mb_forward,
 * mb_backward, mb_grad_clip and mb_adamw_update on the host buffers. */
extern const mb_backend_ops mb_backend_cpu;

/* Resolve a --device value: "cpu"; "cuda" (cuda_ops must be non-NULL and its probe succeed);
 * "auto" or NULL: cuda when cuda_ops is non-NULL and a usable GPU is found, else cpu.
 * cuda_ops: MB_BACKEND_CUDA_OPS (NULL in a build without CUDA). desc (may be NULL) receives
 * the chosen device's description. MB_EINVAL with a message suggesting --device cpu when CUDA
 * is asked for and unavailable (not built in / no usable GPU), or for an unknown name. */
int mb_backend_resolve(const char *device, const mb_backend_ops *cuda_ops,
                       const mb_backend_ops **out, char *desc, size_t n);

/* The training loop of trainer.h (mb_train) on a backend; mb_train(o) is
 * mb_train_with_backend(o, &mb_backend_cpu). Defined in trainer.c. */
int mb_train_with_backend(const mb_train_opts *o, const mb_backend_ops *be);

#ifdef __cplusplus
}
#endif

#ifdef MB_HAVE_CUDA
#include "cuda/trainer_cuda.h"
#define MB_BACKEND_CUDA_OPS (mb_backend_cuda())
#else
#define MB_BACKEND_CUDA_OPS NULL
#endif

#endif
