/* AdamW, global-norm reduction and scaling over flat vectors (adamw_cuda.h). */
#include "cuda/adamw_cuda.h"

#include <cuda_runtime.h>
#include <math.h>

#include "cuda/cuda_check.h"

#define RED_THREADS 256
#define RED_MAX_BLOCKS 1024

__device__ __forceinline__ double block_sum_d(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = 0.0;
    if (warp == 0) {
        v = lane < (int)(blockDim.x / 32) ? sh[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v; /* valid in thread 0 */
}

__global__ void reduce_partial_kernel(double *partials, const float *x, int64_t n, int square) {
    __shared__ double sh[32];
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const double v = (double)x[i];
        s += square ? v * v : v;
    }
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void reduce_final_kernel(double *out, const double *partials, int nparts) {
    __shared__ double sh[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x)
        s += partials[i];
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) out[0] = s;
}

extern "C" int mb_reduce_sum_cuda(double *out_dev, double *scratch, const float *x, int64_t n,
                                  int square, void *stream) {
    if (n < 0 || !out_dev || !scratch || (n > 0 && !x))
        return mb_fail(MB_EINVAL, "mb_reduce_sum_cuda: bad arguments");
    cudaStream_t st = (cudaStream_t)stream;
    const unsigned blocks = mb_cuda_blocks(n, RED_THREADS * 4, RED_MAX_BLOCKS);
    reduce_partial_kernel<<<blocks, RED_THREADS, 0, st>>>(scratch, x, n, square);
    reduce_final_kernel<<<1, RED_THREADS, 0, st>>>(out_dev, scratch, (int)blocks);
    MB_CUDA_LAUNCHED("mb_reduce_sum_cuda");
    return MB_OK;
}

__global__ void scale_kernel(float *x, int64_t n, float s) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

extern "C" int mb_scale_cuda(float *x, int64_t n, float s, void *stream) {
    if (n < 0 || (n > 0 && !x)) return mb_fail(MB_EINVAL, "mb_scale_cuda: bad arguments");
    if (n == 0) return MB_OK;
    scale_kernel<<<mb_cuda_blocks(n, 256, 1 << 16), 256, 0, (cudaStream_t)stream>>>(x, n, s);
    MB_CUDA_LAUNCHED("mb_scale_cuda");
    return MB_OK;
}

__global__ void adamw_kernel(float *params, const float *grads, float *m, float *v,
                             const uint8_t *decay, int64_t n, float b1, float b2, float eps,
                             float step_size, float bc2_sqrt, float decay_mul) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = grads[i];
        const float p = decay && decay[i] ? params[i] * decay_mul : params[i];
        const float mi = m[i] + (g - m[i]) * (1.0f - b1);
        const float vi = v[i] * b2 + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        params[i] = p - step_size * (mi / denom);
    }
}

extern "C" int mb_adamw_cuda_update(float *params, const float *grads, float *m, float *v,
                                    const uint8_t *decay, int64_t n, int64_t t, float lr,
                                    float beta1, float beta2, float eps, float weight_decay,
                                    void *stream) {
    if (n < 0 || t < 1 || (n > 0 && (!params || !grads || !m || !v)))
        return mb_fail(MB_EINVAL, "mb_adamw_cuda_update: bad arguments");
    if (n == 0) return MB_OK;
    /* scalars exactly as the CPU computes them */
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay_mul = 1.0f - lr * weight_decay;
    adamw_kernel<<<mb_cuda_blocks(n, 256, 1 << 16), 256, 0, (cudaStream_t)stream>>>(
        params, grads, m, v, decay, n, beta1, beta2, eps, step_size, bc2_sqrt, decay_mul);
    MB_CUDA_LAUNCHED("mb_adamw_cuda_update");
    return MB_OK;
}
