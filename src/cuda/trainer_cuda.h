/* The CUDA backend of training and evaluation (train/backend.h) over the fp32 GPU model of
 * model_cuda.h: parameters, gradients and AdamW moments live on the device; the session
 * uploads the host model and AdamW state when it opens and downloads them on sync (before each
 * checkpoint), so checkpoints are those of the CPU path and resume on either device.
 *
 * Matrix products run in true fp32 (cuBLAS without TF32) unless the environment sets
 * MB_CUDA_TF32=1. Windows shorter than the session's length (a document's last window) are
 * scored zero-padded on a (1, L) workspace: the model is causal, so the losses of the first
 * positions are those of the short window.
 *
 * Errors (never an abort): the probe says why no GPU is usable (no device, driver older than
 * the runtime, no kernel image for this GPU's architecture); out of device memory when a
 * session opens is MB_ENOMEM naming the size, before any training step runs. */
#ifndef MB_CUDA_TRAINER_CUDA_H
#define MB_CUDA_TRAINER_CUDA_H

#include "train/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend's operations (static storage). */
const mb_backend_ops *mb_backend_cuda(void);

#ifdef __cplusplus
}
#endif
#endif
