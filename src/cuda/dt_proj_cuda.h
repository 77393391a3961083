/* The dt projection with its bias and softplus in one pass, for mixed-precision (bf16) training
 * and evaluation on the GPU (model.md "Mixer": delta = softplus(dt_low @ dt_proj.weight^T +
 * dt_proj.bias), mamba_ssm's delta_softplus with threshold 20). The product is bf16 x bf16 with
 * fp32 accumulation (mma.sync, as the cuBLASLt product it replaces), the bias and softplus are
 * applied to each fp32 result before it is stored, so the selective scan gets the effective
 * delta and needs no pass of its own over it (scan_cuda.h, mb_scan_cuda_opts.delta_is_eff).
 * DEVICE pointers; asynchronous on `stream` (cudaStream_t as void *, NULL = default stream).
 */
#ifndef MB_CUDA_DT_PROJ_CUDA_H
#define MB_CUDA_DT_PROJ_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Whether mb_dt_proj_softplus_cuda takes this shape: dt_rank R a multiple of 16 up to 128, the
 * input's row stride ldx (elements) a multiple of 8 (16-byte rows). */
int mb_dt_proj_softplus_supported(int64_t R, int64_t ldx);

/* delta (rows, Di), row stride Di, fp32 := softplus(x @ w^T + bias) with x (rows, R) bf16 bits,
 * row stride ldx (the dt part of the x_proj output's bf16 copy), w (Di, R) bf16 bits (dt_proj's
 * weight, row-major), bias (Di) fp32. The softplus is the scan's (fast_math_cuda.h,
 * dt_softplus_f). x must be 16-byte aligned; w may sit at any element offset. Errors:
 * MB_EINVAL for an unsupported shape (mb_dt_proj_softplus_supported), NULL pointers or a
 * misaligned x; MB_EIO names a CUDA launch failure. */
int mb_dt_proj_softplus_cuda(float *delta, const uint16_t *x, int64_t ldx, const uint16_t *w,
                             const float *bias, int64_t rows, int64_t R, int64_t Di, void *stream);

/* The same with the output in bf16 where delta_bf16 is non-NULL (bit patterns, (rows, Di), row
 * stride Di, rounded to nearest even; delta is then not written and may be NULL): the mixed-
 * precision training's delta, which the scan reads as bf16 (scan_cuda.h,
 * mb_scan_cuda_opts.delta_bf16), as mamba_ssm's autocast passes it. */
int mb_dt_proj_softplus_cuda_ex(float *delta, uint16_t *delta_bf16, const uint16_t *x, int64_t ldx,
                                const uint16_t *w, const float *bias, int64_t rows, int64_t R,
                                int64_t Di, void *stream);

/* Lab knob (benchmarks and tests): variant 0 the default (a bf16 output by the row-tile form: a
 * block per 64 rows walking column tiles, 16-byte row stores; fp32 by the first form), 1 the
 * first form for both (128 x 128 blocks, pair stores; also MB_CUDA_DT_PROJ=1, read at the first
 * call); tiles_per_block the row-tile form's column tiles of 128 channels per block (0:
 * automatic). Not thread-safe; applies to later calls. */
void mb_dt_proj_cuda_set_variant(int variant, int tiles_per_block);

#ifdef __cplusplus
}
#endif
#endif
