/* delta = softplus(dt_proj output + dt_proj.bias) on the GPU (model.md "Mixer"; mamba_ssm
 * delta_softplus with threshold 20, as src/cpu/activations.h), and its backward with the
 * bias gradient fused. DEVICE pointers; asynchronous on `stream`; 0 / MB_EINVAL / MB_EIO.
 */
#ifndef MB_CUDA_SOFTPLUS_CUDA_H
#define MB_CUDA_SOFTPLUS_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* delta (rows, n) in place: delta = softplus(delta + bias) (bias (n)). */
int mb_softplus_bias_cuda_forward(float *delta, const float *bias, int64_t rows, int64_t n,
                                  void *stream);

/* ddelta (rows, n) in place becomes the gradient of the pre-activation:
 * ddelta *= -expm1(-delta) (= sigmoid(pre), from the stored output delta); and
 * dbias (n) += the column sums of the result. */
int mb_softplus_bias_cuda_backward(float *ddelta, float *dbias, const float *delta, int64_t rows,
                                   int64_t n, void *stream);

/* The same for the mixed-precision path: with ddelta_bf16 (rows, n) non-NULL the result goes
 * only to that bf16 copy (ddelta keeps the incoming gradient); NULL: as above. */
int mb_softplus_bias_cuda_backward_ex(float *ddelta, uint16_t *ddelta_bf16, float *dbias,
                                      const float *delta, int64_t rows, int64_t n, void *stream);

#ifdef __cplusplus
}
#endif
#endif
