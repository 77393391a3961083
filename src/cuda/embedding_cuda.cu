/* Embedding gather / scatter-add (embedding_cuda.h). */
#include "cuda/embedding_cuda.h"

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

__global__ void embedding_forward_kernel(float *out, const uint8_t *x, const float *emb, int64_t n,
                                         int64_t d) {
    const int64_t total = n * d;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / d, j = i - row * d;
        out[i] = emb[(int64_t)x[row] * d + j];
    }
}

__global__ void embedding_backward_kernel(float *demb, const uint8_t *x, const float *dout,
                                          int64_t n, int64_t d) {
    const int64_t total = n * d;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / d, j = i - row * d;
        atomicAdd(demb + (int64_t)x[row] * d + j, dout[i]);
    }
}

extern "C" int mb_embedding_cuda_forward(float *out, const uint8_t *x, const float *emb, int64_t n,
                                         int64_t d, void *stream) {
    if (n < 0 || d <= 0 || !out || !x || !emb)
        return mb_fail(MB_EINVAL, "mb_embedding_cuda_forward: bad arguments");
    if (n == 0) return MB_OK;
    embedding_forward_kernel<<<mb_cuda_blocks(n * d, 256, 1 << 20), 256, 0, (cudaStream_t)stream>>>(
        out, x, emb, n, d);
    MB_CUDA_LAUNCHED("mb_embedding_cuda_forward");
    return MB_OK;
}

extern "C" int mb_embedding_cuda_backward(float *demb, const uint8_t *x, const float *dout,
                                          int64_t n, int64_t d, void *stream) {
    if (n < 0 || d <= 0 || !demb || !x || !dout)
        return mb_fail(MB_EINVAL, "mb_embedding_cuda_backward: bad arguments");
    if (n == 0) return MB_OK;
    embedding_backward_kernel<<<mb_cuda_blocks(n * d, 256, 1 << 20), 256, 0,
                                (cudaStream_t)stream>>>(demb, x, dout, n, d);
    MB_CUDA_LAUNCHED("mb_embedding_cuda_backward");
    return MB_OK;
}
