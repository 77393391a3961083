/* Optimizer-side reductions and updates over the flat parameter vector on the GPU: AdamW in one
 * kernel (the device twin of src/train/adamw.h, torch.optim.AdamW order), the global gradient
 * L2 norm, scaling (gradient clipping) and a float64 sum used for the loss. DEVICE pointers;
 * asynchronous on `stream` unless stated; 0 / MB_EINVAL / MB_EIO.
 */
#ifndef MB_CUDA_ADAMW_CUDA_H
#define MB_CUDA_ADAMW_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Floats of float64 scratch the reductions need (partials per block plus the result). */
#define MB_CUDA_REDUCE_SCRATCH 1040

/* out_dev[0] (float64, on the device) = sum_i x[i] (square = 0) or sum_i x[i]^2 (square = 1),
 * n >= 0. scratch: MB_CUDA_REDUCE_SCRATCH doubles of device memory. Two kernels, fixed order
 * (deterministic). */
int mb_reduce_sum_cuda(double *out_dev, double *scratch, const float *x, int64_t n, int square,
                       void *stream);

/* x (n) *= s. */
int mb_scale_cuda(float *x, int64_t n, float s, void *stream);

/* One AdamW step t (>= 1, already incremented) with learning rate lr, as mb_adamw_update:
 * p *= 1 - lr*wd where decay[i] (uint8 mask, may be NULL = none); m, v updated;
 * p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). */
int mb_adamw_cuda_update(float *params, const float *grads, float *m, float *v,
                         const uint8_t *decay, int64_t n, int64_t t, float lr, float beta1,
                         float beta2, float eps, float weight_decay, void *stream);

#ifdef __cplusplus
}
#endif
#endif
