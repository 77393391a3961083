/* Causal depthwise conv1d + bias + SiLU on the GPU, forward and backward from a zero initial
 * state: the device twin of src/cpu/conv1d.h (mamba_ssm causal_conv1d_fn with activation
 * "silu"):
 *   pre_t[c] = b[c] + sum_{k<K} w[c,k] * x_{t-K+1+k}[c]   (zeros before t = 0)
 *   out_t[c] = SiLU(pre_t[c])
 * One thread per (position, channel), channels contiguous (coalesced). Every pointer is a
 * DEVICE pointer; asynchronous on `stream`. Returns 0, MB_EINVAL for bad sizes, MB_EIO on a
 * launch failure.
 */
#ifndef MB_CUDA_CONV1D_CUDA_H
#define MB_CUDA_CONV1D_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x (B, L, Di) with row stride x_stride (the x half of xz: stride 2*Di); w (Di, K); b (Di);
 * out (B, L, Di) contiguous. */
int mb_conv1d_cuda_forward(float *out, const float *x, int64_t x_stride, const float *w,
                           const float *b, int64_t B, int64_t L, int64_t Di, int64_t K,
                           void *stream);

/* Forward continuing a carried conv state (streamed evaluation, prompt prefill; the CPU's
 * mb_conv1d_forward with a state followed by mb_conv1d_update_state): inputs before t = 0 come
 * from state (B, K-1, Di), the last K-1 inputs so far, oldest first (mb_state.conv layout);
 * next_state (B, K-1, Di), a different buffer, receives the last K-1 inputs after these L
 * (the oldest from state when L < K-1). Other arguments as mb_conv1d_cuda_forward. */
int mb_conv1d_cuda_forward_state(float *out, const float *x, int64_t x_stride, const float *w,
                                 const float *b, const float *state, float *next_state, int64_t B,
                                 int64_t L, int64_t Di, int64_t K, void *stream);

/* Backward. dout (B, L, Di) contiguous: the gradient of the SiLU output (left unchanged for
 * K <= 8; for longer filters it is overwritten with the pre-activation gradient). Writes (=)
 * dx (B, L, Di) with row stride dx_stride; accumulates (+=) dw (Di, K) and db (Di). */
int mb_conv1d_cuda_backward(float *dx, int64_t dx_stride, float *dw, float *db, float *dout,
                            const float *x, int64_t x_stride, const float *w, const float *b,
                            int64_t B, int64_t L, int64_t Di, int64_t K, void *stream);

/* The same with optional bf16 copies written alongside (NULL: none), for the mixed-precision
 * model: out_bf16 (B, L, Di) contiguous; dx_bf16 with row stride dx_stride. dx may be NULL when
 * dx_bf16 is not: only the bf16 copy is written (the mixed-precision backward's products read
 * nothing else; 4 of the backward's 14 bytes per element). state: the carried conv
 * state for the forward (NULL = zeros; see mb_conv1d_cuda_forward_state). Filters of K <= 8
 * run in one pass per direction (a thread walks a tile of positions of one channel); longer
 * ones take the per-element kernels. */
int mb_conv1d_cuda_forward_ex(float *out, uint16_t *out_bf16, const float *x, int64_t x_stride,
                              const float *w, const float *b, const float *state, int64_t B,
                              int64_t L, int64_t Di, int64_t K, void *stream);
int mb_conv1d_cuda_backward_ex(float *dx, uint16_t *dx_bf16, int64_t dx_stride, float *dw,
                               float *db, float *dout, const float *x, int64_t x_stride,
                               const float *w, const float *b, int64_t B, int64_t L, int64_t Di,
                               int64_t K, void *stream);

/* bf16 inputs, for the mixed-precision training (x as the in_proj product's bf16 output, the
 * output gradient as the scan backward's bf16 dx plus the x_proj product's): as the _ex forms
 * with x (B, L, Di; row stride x_stride), dout and dout2 (B, L, Di contiguous; dout2 may be
 * NULL) bf16 bit patterns; the gradient of the SiLU output is dout + dout2, added in fp32. No
 * carried state; d_conv K <= 8, B <= 65535 and L <= 65535 * 128 (MB_EINVAL otherwise). The
 * forward writes out (fp32) and out_bf16 where non-NULL (at least one; the training path with
 * the scan's bf16 inputs writes out_bf16 alone); the backward writes dx_bf16
 * only and accumulates dw, db; arithmetic in fp32 as the fp32 forms. */
/* 1 when the bf16-input forms take these sizes (the d_conv, B and L limits above), else 0 */
int mb_conv1d_cuda_bf16in_supported(int64_t B, int64_t L, int64_t K);
int mb_conv1d_cuda_forward_bf16in(float *out, uint16_t *out_bf16, const uint16_t *x,
                                  int64_t x_stride, const float *w, const float *b, int64_t B,
                                  int64_t L, int64_t Di, int64_t K, void *stream);
int mb_conv1d_cuda_backward_bf16in(uint16_t *dx_bf16, int64_t dx_stride, float *dw, float *db,
                                   const uint16_t *dout, const uint16_t *dout2, const uint16_t *x,
                                   int64_t x_stride, const float *w, const float *b, int64_t B,
                                   int64_t L, int64_t Di, int64_t K, void *stream);

#ifdef __cplusplus
}
#endif
#endif
