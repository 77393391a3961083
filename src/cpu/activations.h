/* Elementwise activations of the Mamba block and their derivatives (model.md "Forward").
 *
 * softplus follows torch.nn.functional.softplus with beta 1 and threshold 20, as used by
 * mamba_ssm (`selective_scan_ref`, delta_softplus=True; the CUDA kernel tests `<= 20.f`):
 *   softplus(v) = v             if v > 20
 *               = log1p(exp(v)) otherwise
 * SiLU(v) = v * sigmoid(v) (F.silu; the conv1d activation and the z gate).
 */
#ifndef MB_CPU_ACTIVATIONS_H
#define MB_CPU_ACTIVATIONS_H

#include <math.h>

#define MB_SOFTPLUS_THRESHOLD 20.0f

static inline float mb_sigmoidf(float v) {
    return 1.0f / (1.0f + expf(-v));
}

static inline float mb_softplusf(float v) {
    return v > MB_SOFTPLUS_THRESHOLD ? v : log1pf(expf(v));
}

/* d softplus / dv at the pre-activation v: 1 above the threshold, sigmoid(v) below. */
static inline float mb_softplus_gradf(float v) {
    return v > MB_SOFTPLUS_THRESHOLD ? 1.0f : mb_sigmoidf(v);
}

/* The same derivative from the softplus output s = softplus(v), so the pre-activation need
 * not be stored: sigmoid(v) = 1 - exp(-softplus(v)) = -expm1(-s) (exact identity below the
 * threshold; above it -expm1(-s) rounds to 1 in float since s > 20). */
static inline float mb_softplus_grad_from_outputf(float s) {
    return -expm1f(-s);
}

static inline float mb_siluf(float v) {
    return v / (1.0f + expf(-v));
}

/* d SiLU / dv = sigmoid(v) * (1 + v * (1 - sigmoid(v))). */
static inline float mb_silu_gradf(float v) {
    float s = mb_sigmoidf(v);
    return s * (1.0f + v * (1.0f - s));
}

#endif
