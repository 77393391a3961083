/* fp32 -> bf16 conversions (bf16_cuda.h). */
#include "cuda/bf16_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

/* One thread per 4 columns of a row when cols % 4 == 0 and both rows start 16/8-byte aligned
 * (float4 in, 4 x bf16 out), else one thread per element; grid-stride over rows x groups. */
__global__ void bf16_from_f32_vec4_kernel(__nv_bfloat16 *dst, int64_t ldd, const float *src,
                                          int64_t lds, int64_t rows, int64_t groups) {
    const int64_t total = rows * groups;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / groups, g = i - r * groups;
        const float4 v = *(const float4 *)(src + r * lds + 4 * g);
        __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        __nv_bfloat162 *o = (__nv_bfloat162 *)(dst + r * ldd + 4 * g);
        o[0] = lo;
        o[1] = hi;
    }
}

__global__ void bf16_from_f32_kernel(__nv_bfloat16 *dst, int64_t ldd, const float *src, int64_t lds,
                                     int64_t rows, int64_t cols) {
    const int64_t total = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i - r * cols;
        dst[r * ldd + c] = __float2bfloat16_rn(src[r * lds + c]);
    }
}

extern "C" int mb_bf16_from_f32_cuda(uint16_t *dst, int64_t ldd, const float *src, int64_t lds,
                                     int64_t rows, int64_t cols, void *stream) {
    if (!dst || !src || rows < 0 || cols <= 0 || ldd < cols || lds < cols)
        return mb_fail(MB_EINVAL, "mb_bf16_from_f32_cuda: bad arguments (rows %lld cols %lld)",
                       (long long)rows, (long long)cols);
    if (rows == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    const int vec = cols % 4 == 0 && lds % 4 == 0 && ldd % 4 == 0 && ((uintptr_t)src & 15) == 0 &&
                    ((uintptr_t)dst & 7) == 0;
    if (vec) {
        const int64_t groups = cols / 4;
        bf16_from_f32_vec4_kernel<<<mb_cuda_blocks(rows * groups, 256, 132 * 16), 256, 0, st>>>(
            (__nv_bfloat16 *)dst, ldd, src, lds, rows, groups);
    } else {
        bf16_from_f32_kernel<<<mb_cuda_blocks(rows * cols, 256, 132 * 16), 256, 0, st>>>(
            (__nv_bfloat16 *)dst, ldd, src, lds, rows, cols);
    }
    MB_CUDA_LAUNCHED("mb_bf16_from_f32_cuda");
    return MB_OK;
}

extern "C" int mb_bf16_from_f32_flat_cuda(uint16_t *dst, const float *src, int64_t n,
                                          void *stream) {
    if (n <= 0) return n == 0 ? MB_OK : mb_fail(MB_EINVAL, "mb_bf16_from_f32_flat_cuda: n < 0");
    /* as rows of 4096 plus a tail row */
    const int64_t w = 4096, rows = n / w, tail = n - rows * w;
    if (rows) MB_TRY(mb_bf16_from_f32_cuda(dst, w, src, w, rows, w, stream));
    if (tail)
        MB_TRY(mb_bf16_from_f32_cuda(dst + rows * w, tail, src + rows * w, tail, 1, tail, stream));
    return MB_OK;
}
