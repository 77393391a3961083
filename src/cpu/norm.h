/* RMSNorm and LayerNorm (with bias) over the last dimension, with the residual add of the
 * next block fused in (mamba_ssm `Block` with fused_add_norm / `layer_norm_fn`):
 *   resid_out = h + resid_in            (resid_in may be NULL: resid_out = h)
 *   LayerNorm: y = (r - mean(r)) * rstd * w + b,   rstd = 1 / sqrt(mean((r - mean)^2) + eps)
 *   RMSNorm:   y = r * rstd * w,                   rstd = 1 / sqrt(mean(r^2) + eps)
 * The row statistics are accumulated in float64. `b == NULL` selects RMSNorm (mean is then
 * neither written nor read). Rows are independent; OpenMP over rows.
 */
#ifndef MB_CPU_NORM_H
#define MB_CPU_NORM_H

#include <stdint.h>

/* Forward over `rows` rows of `d` floats (all contiguous, leading dimension d).
 * h (rows, d); resid_in (rows, d) or NULL; resid_out (rows, d) (may alias h or resid_in);
 * y (rows, d) normalised output; mean (rows) (LayerNorm only, may be NULL for RMSNorm);
 * rstd (rows); w (d); b (d) or NULL for RMSNorm. */
void mb_norm_forward(float *resid_out, float *y, float *mean, float *rstd, const float *h,
                     const float *resid_in, const float *w, const float *b, int64_t rows, int64_t d,
                     float eps);

/* Recompute the normalised output y (rows, d) from the stored input r and statistics
 * (bitwise equal to the y written by mb_norm_forward). */
void mb_norm_apply(float *y, const float *r, const float *mean, const float *rstd, const float *w,
                   const float *b, int64_t rows, int64_t d);

/* Backward. dy (rows, d) gradient of the normalised output; r (rows, d) the norm input
 * (resid_out of the forward); mean/rstd as written by the forward.
 * dr (rows, d): gradient w.r.t. r; written (=) when accumulate == 0, added (+=) otherwise.
 * Since resid_out = h + resid_in, dr is also the gradient of h and resid_in.
 * dw (d) and db (d, NULL for RMSNorm) are accumulated (+=). */
void mb_norm_backward(float *dr, float *dw, float *db, const float *dy, const float *r,
                      const float *mean, const float *rstd, const float *w, int64_t rows, int64_t d,
                      int accumulate);

#endif
