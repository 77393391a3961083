/* fp32 -> bf16 conversion on the GPU for the mixed-precision path (model_cuda.h): the operands
 * of the bf16 matrix products (activations, their gradients, the weights' bf16 shadow) are
 * rounded to nearest-even bf16 copies of fp32 tensors. bf16 values are uint16_t bit patterns of
 * __nv_bfloat16. NaN stays NaN, overflow becomes inf (__float2bfloat16_rn).
 * Errors: MB_EINVAL for bad sizes / NULL pointers, MB_EIO for a failed launch.
 * Asynchronous on `stream` (cudaStream_t as void *). */
#ifndef MB_CUDA_BF16_CUDA_H
#define MB_CUDA_BF16_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst (rows, cols; row stride ldd) = bf16(src (rows, cols; row stride lds)). */
int mb_bf16_from_f32_cuda(uint16_t *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                          int64_t cols, void *stream);

/* dst (n) = bf16(src (n)), contiguous. */
int mb_bf16_from_f32_flat_cuda(uint16_t *dst, const float *src, int64_t n, void *stream);

#ifdef __cplusplus
}
#endif
#endif
