/* Fused softmax + cross-entropy (+ gradient) over 256 logits per position
 * (crossentropy_cuda.h). */
#include "cuda/crossentropy_cuda.h"

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

#define FULL_MASK 0xffffffffu
#define V 256
#define PER_LANE (V / 32)
#define ROWS_PER_BLOCK 8

__global__ void crossentropy_kernel(float *losses, float *dlogits, const float *logits,
                                    const uint8_t *targets, int64_t n, float dloss) {
    const int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.y;
    if (row >= n) return;
    const int lane = threadIdx.x;
    const float *z = logits + row * V;
    float v[PER_LANE];
    float m = -INFINITY;
    int has_nan = 0;
    for (int k = 0; k < PER_LANE; k++) {
        v[k] = z[lane + 32 * k];
        has_nan |= isnan(v[k]);
        m = fmaxf(m, v[k]);
    }
    for (int o = 16; o > 0; o >>= 1) {
        m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, o));
        has_nan |= __shfl_xor_sync(FULL_MASK, has_nan, o);
    }
    if (has_nan) m = NAN; /* fmaxf drops NaN: make it reach the loss and the gradient */
    float s = 0.0f;
    for (int k = 0; k < PER_LANE; k++)
        s += expf(v[k] - m);
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(FULL_MASK, s, o);
    const int t = targets[row];
    const float lse = m + logf(s);
    if (losses && lane == 0) losses[row] = lse - z[t];
    if (dlogits) {
        __syncwarp();
        float *dz = dlogits + row * V;
        const float inv = 1.0f / s;
        for (int k = 0; k < PER_LANE; k++) {
            const int j = lane + 32 * k;
            const float p = expf(v[k] - m) * inv;
            dz[j] = dloss * (p - (j == t ? 1.0f : 0.0f));
        }
    }
}

extern "C" int mb_crossentropy_cuda(float *losses, float *dlogits, const float *logits,
                                    const uint8_t *targets, int64_t n, float dloss, void *stream) {
    if (n < 0 || !logits || !targets)
        return mb_fail(MB_EINVAL, "mb_crossentropy_cuda: bad arguments");
    if (n == 0 || (!losses && !dlogits)) return MB_OK;
    crossentropy_kernel<<<(unsigned)((n + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK),
                          dim3(32, ROWS_PER_BLOCK), 0, (cudaStream_t)stream>>>(
        losses, dlogits, logits, targets, n, dloss);
    MB_CUDA_LAUNCHED("mb_crossentropy_cuda");
    return MB_OK;
}
