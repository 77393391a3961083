/* RMSNorm / LayerNorm (with bias) with the residual add fused, on the GPU: the device twin of
 * src/cpu/norm.h (same arguments and semantics, mamba_ssm `layer_norm_fn` with
 * residual_in_fp32):
 *   resid_out = h + resid_in   (resid_in NULL: resid_out = h; resid_out may alias either)
 *   LayerNorm: y = (r - mean) * rstd * w + b;  RMSNorm (b == NULL): y = r * rstd * w
 * One warp per row; row statistics accumulated in float64. Every pointer is a DEVICE pointer;
 * launches are asynchronous on `stream` (cudaStream_t as void *). Returns 0, MB_EINVAL for bad
 * sizes, MB_EIO on a launch failure.
 */
#ifndef MB_CUDA_NORM_CUDA_H
#define MB_CUDA_NORM_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* h, resid_in, resid_out, y (rows, d); mean (rows) (LayerNorm only); rstd (rows); w, b (d). */
int mb_norm_cuda_forward(float *resid_out, float *y, float *mean, float *rstd, const float *h,
                         const float *resid_in, const float *w, const float *b, int64_t rows,
                         int64_t d, float eps, void *stream);

/* y (rows, d) recomputed from the stored input r and statistics (as mb_norm_apply). */
int mb_norm_cuda_apply(float *y, const float *r, const float *mean, const float *rstd,
                       const float *w, const float *b, int64_t rows, int64_t d, void *stream);

/* Backward (mb_norm_backward): dr (rows, d) written (=) or added (+=, accumulate) with
 * rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w (no mean(g) term for RMSNorm);
 * dw (d) += sum_rows dy * xhat, db (d, NULL for RMSNorm) += sum_rows dy (fp32 column partial
 * sums, atomics). */
int mb_norm_cuda_backward(float *dr, float *dw, float *db, const float *dy, const float *r,
                          const float *mean, const float *rstd, const float *w, int64_t rows,
                          int64_t d, int accumulate, void *stream);

/* The same three with bf16 copies (uint16_t bit patterns of __nv_bfloat16, round to nearest
 * even) written by the kernel for the mixed-precision path: yb (rows, d) of the norm output
 * (y or yb may be NULL, not both), drb (rows, d, may be NULL) of the final dr. */
int mb_norm_cuda_forward_ex(float *resid_out, float *y, uint16_t *yb, float *mean, float *rstd,
                            const float *h, const float *resid_in, const float *w, const float *b,
                            int64_t rows, int64_t d, float eps, void *stream);
int mb_norm_cuda_apply_ex(float *y, uint16_t *yb, const float *r, const float *mean,
                          const float *rstd, const float *w, const float *b, int64_t rows,
                          int64_t d, void *stream);
int mb_norm_cuda_backward_ex(float *dr, uint16_t *drb, float *dw, float *db, const float *dy,
                             const float *r, const float *mean, const float *rstd, const float *w,
                             int64_t rows, int64_t d, int accumulate, void *stream);

/* bf16 h (forward) / dy (backward), uint16_t bit patterns, as mamba_ssm's autocast passes the
 * out_proj output and the norm output's gradient (the mixed-precision training): otherwise as
 * the _ex forms, the arithmetic fp32 (the values widened exactly). The forward writes resid_out
 * and yb (no fp32 y). Only the row-in-registers kernels: d % 128 == 0 and d <= 1024
 * (mb_norm_cuda_bf16in_supported), h / dy / yb / drb 8-byte and the fp32 tensors 16-byte
 * aligned; MB_EINVAL otherwise, or for a NULL argument. */
int mb_norm_cuda_bf16in_supported(int64_t d);
int mb_norm_cuda_forward_bf16in(float *resid_out, uint16_t *yb, float *mean, float *rstd,
                                const uint16_t *h, const float *resid_in, const float *w,
                                const float *b, int64_t rows, int64_t d, float eps, void *stream);
int mb_norm_cuda_backward_bf16in(float *dr, uint16_t *drb, float *dw, float *db, const uint16_t *dy,
                                 const float *r, const float *mean, const float *rstd,
                                 const float *w, int64_t rows, int64_t d, int accumulate,
                                 void *stream);

#ifdef __cplusplus
}
#endif
#endif
