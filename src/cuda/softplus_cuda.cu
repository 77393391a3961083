/* softplus(x + bias) forward and backward with the bias gradient (softplus_cuda.h). */
#include "cuda/softplus_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

#define SOFTPLUS_THRESHOLD 20.0f

/* thread (column c, row block): bias loaded once, rows r = blockIdx.y, += gridDim.y; no index
 * division */
__global__ void softplus_bias_kernel(float *delta, const float *bias, int64_t rows, int64_t n) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n) return;
    const float bc = bias[c];
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float *p = delta + r * n + c;
        const float v = *p + bc;
        *p = v > SOFTPLUS_THRESHOLD ? v : log1pf(__expf(v));
    }
}

/* block (32, 8) per 32 columns and a slice of rows: scale in place, then column sums */
__global__ void softplus_bias_backward_kernel(float *dd, __nv_bfloat16 *ddb, float *dbias,
                                              const float *delta, int64_t rows, int64_t n) {
    __shared__ float part[8][33];
    const int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < n)
        for (int64_t r = (int64_t)blockIdx.y * 8 + threadIdx.y; r < rows;
             r += (int64_t)gridDim.y * 8) {
            const int64_t i = r * n + c;
            const float g = dd[i] * -expm1f(-delta[i]);
            if (ddb)
                ddb[i] = __float2bfloat16_rn(g);
            else
                dd[i] = g;
            s += g;
        }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < n) {
        for (int k = 1; k < 8; k++)
            s += part[k][threadIdx.x];
        atomicAdd(dbias + c, s);
    }
}

/* the same, 4 columns per thread with 16-byte loads and stores (n % 4 == 0, 16-byte aligned) */
__global__ void softplus_bias_kernel4(float4 *delta, const float4 *bias, int64_t rows, int64_t n4) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n4) return;
    const float4 bc = bias[c];
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float4 *p = delta + r * n4 + c;
        float4 v = *p;
        v.x += bc.x, v.y += bc.y, v.z += bc.z, v.w += bc.w;
        v.x = v.x > SOFTPLUS_THRESHOLD ? v.x : log1pf(__expf(v.x));
        v.y = v.y > SOFTPLUS_THRESHOLD ? v.y : log1pf(__expf(v.y));
        v.z = v.z > SOFTPLUS_THRESHOLD ? v.z : log1pf(__expf(v.z));
        v.w = v.w > SOFTPLUS_THRESHOLD ? v.w : log1pf(__expf(v.w));
        *p = v;
    }
}

extern "C" int mb_softplus_bias_cuda_forward(float *delta, const float *bias, int64_t rows,
                                             int64_t n, void *stream) {
    if (rows < 0 || n <= 0 || !delta || !bias)
        return mb_fail(MB_EINVAL, "mb_softplus_bias_cuda_forward: bad arguments");
    if (rows == 0) return MB_OK;
    const int v4 = n % 4 == 0 && (uintptr_t)delta % 16 == 0 && (uintptr_t)bias % 16 == 0;
    const int64_t nt = v4 ? n / 4 : n; /* threads per row */
    const unsigned cb = (unsigned)((nt + 255) / 256);
    /* about 16 blocks per multiprocessor in all, each row block walking rows / gridDim.y rows */
    const unsigned rb = (unsigned)(rows < 65535 ? rows : 65535);
    const unsigned rbc = cb >= 2112 ? 1 : (unsigned)(2112 / cb);
    const dim3 grid(cb, rb < rbc ? rb : rbc);
    if (v4)
        softplus_bias_kernel4<<<grid, 256, 0, (cudaStream_t)stream>>>(
            (float4 *)delta, (const float4 *)bias, rows, nt);
    else
        softplus_bias_kernel<<<grid, 256, 0, (cudaStream_t)stream>>>(delta, bias, rows, n);
    MB_CUDA_LAUNCHED("mb_softplus_bias_cuda_forward");
    return MB_OK;
}

extern "C" int mb_softplus_bias_cuda_backward_ex(float *ddelta, uint16_t *ddelta_bf16, float *dbias,
                                                 const float *delta, int64_t rows, int64_t n,
                                                 void *stream) {
    if (rows < 0 || n <= 0 || !ddelta || !dbias || !delta)
        return mb_fail(MB_EINVAL, "mb_softplus_bias_cuda_backward: bad arguments");
    if (rows == 0) return MB_OK;
    dim3 grid((unsigned)((n + 31) / 32), mb_cuda_blocks(rows, 64, 1024));
    softplus_bias_backward_kernel<<<grid, dim3(32, 8), 0, (cudaStream_t)stream>>>(
        ddelta, (__nv_bfloat16 *)ddelta_bf16, dbias, delta, rows, n);
    MB_CUDA_LAUNCHED("mb_softplus_bias_cuda_backward");
    return MB_OK;
}

extern "C" int mb_softplus_bias_cuda_backward(float *ddelta, float *dbias, const float *delta,
                                              int64_t rows, int64_t n, void *stream) {
    return mb_softplus_bias_cuda_backward_ex(ddelta, NULL, dbias, delta, rows, n, stream);
}
