/* Causal depthwise conv1d with bias and SiLU fused (mamba_ssm `Mamba.forward`:
 * `act(conv1d(x)[..., :L])`, i.e. causal_conv1d_fn with activation "silu"):
 *   pre_t[c] = b[c] + sum_{k<K} w[c,k] * x_{t-K+1+k}[c]
 *   out_t[c] = SiLU(pre_t[c])
 * Inputs before t = 0 come from an optional conv state holding the last K-1 inputs of the
 * sequence so far, oldest first ((K-1, Di) per sequence, as in mb_state.conv); zeros when the
 * state is NULL. OpenMP over (sequence, channel block).
 */
#ifndef MB_CPU_CONV1D_H
#define MB_CPU_CONV1D_H

#include <stdint.h>

/* x (B, L, Di) with row stride x_stride (e.g. the x half of xz, stride 2*Di);
 * w (Di, K); b (Di); state (B, K-1, Di) or NULL; out (B, L, Di) contiguous. */
void mb_conv1d_forward(float *out, const float *x, int64_t x_stride, const float *w, const float *b,
                       const float *state, int64_t B, int64_t L, int64_t Di, int64_t K);

/* Replace the conv state (B, K-1, Di) by the last K-1 inputs after the L inputs x (B, L, Di)
 * (stride x_stride); when L < K-1 the oldest entries come from the previous state. */
void mb_conv1d_update_state(float *state, const float *x, int64_t x_stride, int64_t B, int64_t L,
                            int64_t Di, int64_t K);

/* Backward from a zero initial state. dout (B, L, Di) contiguous: gradient of the SiLU output.
 * Recomputes the pre-activation from x. Writes (=) dx (B, L, Di) with row stride dx_stride;
 * accumulates (+=) dw (Di, K) and db (Di). Reductions over (B, L) are in a fixed order. */
void mb_conv1d_backward(float *dx, int64_t dx_stride, float *dw, float *db, const float *dout,
                        const float *x, int64_t x_stride, const float *w, const float *b, int64_t B,
                        int64_t L, int64_t Di, int64_t K);

#endif
