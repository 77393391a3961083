/* Embedding gather / scatter-add (embedding_cuda.h). */
#include "cuda/embedding_cuda.h"

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

/* Forward: one block per output row at a time (grid-stride over rows), its threads copying the
 * row's columns, 16 bytes each where d % 4 == 0 and the tensors are 16-byte aligned (V4). (An
 * element-per-thread form, one 64-bit division per element, ran at a sixth of the copy
 * bandwidth on the H200.) */
template <bool V4>
__global__ void embedding_forward_kernel(float *out, const uint8_t *x, const float *emb, int64_t n,
                                         int64_t d) {
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const float *src = emb + (int64_t)x[row] * d;
        float *dst = out + row * d;
        if (V4) {
            for (int64_t j = threadIdx.x; j < d / 4; j += blockDim.x)
                ((float4 *)dst)[j] = ((const float4 *)src)[j];
        } else {
            for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
                dst[j] = src[j];
        }
    }
}

/* Backward: a block sums the rows [r0, r1) of a slice of EMB_SW columns into a (256, EMB_SW)
 * table in shared memory (a warp per row, a lane per column: shared-memory atomics, 4 rows'
 * loads issued together), then adds the table's non-zero entries to demb with one global atomic
 * each. (One global atomic per element, every row contending for the 256 rows of demb, ran at a
 * seventh of the read bandwidth.) */
#define EMB_SW 32
#define EMB_NT 256
__global__ void __launch_bounds__(EMB_NT)
    embedding_backward_kernel(float *demb, const uint8_t *x, const float *dout, int64_t n,
                              int64_t d, int64_t rows_per_block) {
    __shared__ float acc[256 * EMB_SW];
    const int64_t c0 = (int64_t)blockIdx.x * EMB_SW;
    const int w = d - c0 < EMB_SW ? (int)(d - c0) : EMB_SW;
    for (int i = threadIdx.x; i < 256 * EMB_SW; i += EMB_NT)
        acc[i] = 0.0f;
    __syncthreads();
    const int lane = threadIdx.x & 31, nw = EMB_NT / 32;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_block;
    const int64_t r1 = r0 + rows_per_block < n ? r0 + rows_per_block : n;
    if (lane < w) {
        const float *col = dout + c0 + lane;
        int64_t row = r0 + (threadIdx.x >> 5);
        for (; row + 3 * nw < r1; row += 4 * nw) {
            float v[4];
            int t[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                v[k] = col[(row + k * nw) * d];
                t[k] = x[row + k * nw];
            }
#pragma unroll
            for (int k = 0; k < 4; k++)
                atomicAdd(acc + t[k] * EMB_SW + lane, v[k]);
        }
        for (; row < r1; row += nw)
            atomicAdd(acc + x[row] * EMB_SW + lane, col[row * d]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 256 * EMB_SW; i += EMB_NT) {
        const int v = i / EMB_SW, j = i % EMB_SW;
        const float a = acc[i];
        if (j < w && a != 0.0f) atomicAdd(demb + (int64_t)v * d + c0 + j, a);
    }
}

extern "C" int mb_embedding_cuda_forward(float *out, const uint8_t *x, const float *emb, int64_t n,
                                         int64_t d, void *stream) {
    if (n < 0 || d <= 0 || !out || !x || !emb)
        return mb_fail(MB_EINVAL, "mb_embedding_cuda_forward: bad arguments");
    if (n == 0) return MB_OK;
    const bool v4 = d % 4 == 0 && (uintptr_t)out % 16 == 0 && (uintptr_t)emb % 16 == 0;
    const int64_t per = v4 ? d / 4 : d; /* threads' work items per row */
    const int nt = per >= 256 ? 256 : per <= 32 ? 32 : (int)((per + 31) / 32 * 32);
    const unsigned grid = (unsigned)(n < 65536 ? n : 65536);
    if (v4)
        embedding_forward_kernel<true><<<grid, nt, 0, (cudaStream_t)stream>>>(out, x, emb, n, d);
    else
        embedding_forward_kernel<false><<<grid, nt, 0, (cudaStream_t)stream>>>(out, x, emb, n, d);
    MB_CUDA_LAUNCHED("mb_embedding_cuda_forward");
    return MB_OK;
}

extern "C" int mb_embedding_cuda_backward(float *demb, const uint8_t *x, const float *dout,
                                          int64_t n, int64_t d, void *stream) {
    if (n < 0 || d <= 0 || !demb || !x || !dout)
        return mb_fail(MB_EINVAL, "mb_embedding_cuda_backward: bad arguments");
    if (n == 0) return MB_OK;
    /* about 8 blocks per multiprocessor over the column slices and row chunks */
    const int64_t gx = (d + EMB_SW - 1) / EMB_SW;
    if (gx > 65535) return mb_fail(MB_EINVAL, "mb_embedding_cuda_backward: d too large");
    const int64_t want = 8 * (int64_t)mb_cuda_sm_count();
    int64_t gy = (want + gx - 1) / gx;
    const int64_t most = (n + 63) / 64; /* at least 64 rows per block */
    if (gy > most) gy = most;
    if (gy > 65535) gy = 65535;
    if (gy < 1) gy = 1;
    const int64_t rpb = (n + gy - 1) / gy;
    gy = (n + rpb - 1) / rpb;
    embedding_backward_kernel<<<dim3((unsigned)gx, (unsigned)gy), EMB_NT, 0,
                                (cudaStream_t)stream>>>(demb, x, dout, n, d, rpb);
    MB_CUDA_LAUNCHED("mb_embedding_cuda_backward");
    return MB_OK;
}
