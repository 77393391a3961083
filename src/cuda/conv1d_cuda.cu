/* Causal depthwise conv1d + bias + SiLU forward / backward (conv1d_cuda.h). */
#include "cuda/conv1d_cuda.h"

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

__device__ __forceinline__ float sigmoid_f(float v) {
    return 1.0f / (1.0f + expf(-v));
}

/* pre-activation at (b, t, c), taps in the CPU's order */
__device__ __forceinline__ float conv_pre(const float *x, int64_t x_stride, const float *w,
                                          const float *b, int64_t bb, int64_t t, int64_t L,
                                          int64_t c, int64_t K) {
    float acc = b[c];
    const int64_t k0 = K - 1 - t > 0 ? K - 1 - t : 0;
    for (int64_t k = k0; k < K; k++)
        acc += w[c * K + k] * x[(bb * L + t - K + 1 + k) * x_stride + c];
    return acc;
}

__global__ void conv_forward_kernel(float *out, const float *x, int64_t x_stride, const float *w,
                                    const float *b, int64_t B, int64_t L, int64_t Di, int64_t K) {
    const int64_t n = B * L * Di;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / Di, c = i - row * Di;
        const int64_t bb = row / L, t = row - bb * L;
        const float pre = conv_pre(x, x_stride, w, b, bb, t, L, c, K);
        out[i] = pre * sigmoid_f(pre);
    }
}

/* forward with inputs before t = 0 from state (B, K-1, Di) */
__global__ void conv_forward_state_kernel(float *out, const float *x, int64_t x_stride,
                                          const float *w, const float *b, const float *state,
                                          int64_t B, int64_t L, int64_t Di, int64_t K) {
    const int64_t n = B * L * Di;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / Di, c = i - row * Di;
        const int64_t bb = row / L, t = row - bb * L;
        float pre = b[c];
        for (int64_t k = 0; k < K; k++) {
            const int64_t j = t - K + 1 + k; /* input position; < 0: from the state */
            const float v = j >= 0 ? x[(bb * L + j) * x_stride + c]
                                   : state[(bb * (K - 1) + (K - 1 + j)) * Di + c];
            pre += w[c * K + k] * v;
        }
        out[i] = pre * sigmoid_f(pre);
    }
}

/* next_state (B, K-1, Di) = the last K-1 inputs of state ++ x */
__global__ void conv_next_state_kernel(float *next, const float *state, const float *x,
                                       int64_t x_stride, int64_t B, int64_t L, int64_t Di,
                                       int64_t K) {
    const int64_t n = B * (K - 1) * Di;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / Di, c = i - row * Di;
        const int64_t bb = row / (K - 1), s = row - bb * (K - 1);
        const int64_t j = L - (K - 1) + s;
        next[i] =
            j >= 0 ? x[(bb * L + j) * x_stride + c] : state[(bb * (K - 1) + (K - 1 + j)) * Di + c];
    }
}

extern "C" int mb_conv1d_cuda_forward_state(float *out, const float *x, int64_t x_stride,
                                            const float *w, const float *b, const float *state,
                                            float *next_state, int64_t B, int64_t L, int64_t Di,
                                            int64_t K, void *stream) {
    if (!out || !x || !w || !b || B <= 0 || L <= 0 || Di <= 0 || K <= 0 || x_stride < Di ||
        (K > 1 && (!state || !next_state || next_state == state)))
        return mb_fail(MB_EINVAL, "mb_conv1d_cuda_forward_state: bad arguments");
    cudaStream_t st = (cudaStream_t)stream;
    conv_forward_state_kernel<<<mb_cuda_blocks(B * L * Di, 256, 132 * 16), 256, 0, st>>>(
        out, x, x_stride, w, b, state, B, L, Di, K);
    MB_CUDA_LAUNCHED("mb_conv1d_cuda_forward_state");
    if (K > 1) {
        conv_next_state_kernel<<<mb_cuda_blocks(B * (K - 1) * Di, 256, 1024), 256, 0, st>>>(
            next_state, state, x, x_stride, B, L, Di, K);
        MB_CUDA_LAUNCHED("mb_conv1d_cuda_forward_state: next state");
    }
    return MB_OK;
}

/* g = dout * SiLU'(pre), in place */
__global__ void conv_grad_pre_kernel(float *g, const float *x, int64_t x_stride, const float *w,
                                     const float *b, int64_t B, int64_t L, int64_t Di, int64_t K) {
    const int64_t n = B * L * Di;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / Di, c = i - row * Di;
        const int64_t bb = row / L, t = row - bb * L;
        const float pre = conv_pre(x, x_stride, w, b, bb, t, L, c, K);
        const float s = sigmoid_f(pre);
        g[i] *= s * (1.0f + pre * (1.0f - s));
    }
}

/* dx[b, p, c] = sum_k g[b, p + K-1-k, c] * w[c, k] over positions inside the sequence */
__global__ void conv_dx_kernel(float *dx, int64_t dx_stride, const float *g, const float *w,
                               int64_t B, int64_t L, int64_t Di, int64_t K) {
    const int64_t n = B * L * Di;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / Di, c = i - row * Di;
        const int64_t bb = row / L, p = row - bb * L;
        float acc = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const int64_t t = p + K - 1 - k;
            if (t < L) acc += g[(bb * L + t) * Di + c] * w[c * K + k];
        }
        dx[row * dx_stride + c] = acc;
    }
}

/* blockIdx.z = k < K: dw[c, k] += sum_{b, t} g[b, t, c] * x[b, t-K+1+k, c];
 * blockIdx.z = K: db[c] += sum g. Block (32, 8) over 32 channels and a slice of rows. */
__global__ void conv_dw_kernel(float *dw, float *db, const float *g, const float *x,
                               int64_t x_stride, int64_t B, int64_t L, int64_t Di, int64_t K) {
    __shared__ float part[8][33];
    const int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    const int64_t k = blockIdx.z;
    const int64_t rows = B * L;
    float s = 0.0f;
    if (c < Di)
        for (int64_t r = (int64_t)blockIdx.y * 8 + threadIdx.y; r < rows;
             r += (int64_t)gridDim.y * 8) {
            const float gv = g[r * Di + c];
            if (k == K) {
                s += gv;
            } else {
                const int64_t t = r % L, p = t - K + 1 + k;
                if (p >= 0) s += gv * x[(r - t + p) * x_stride + c];
            }
        }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < Di) {
        for (int j = 1; j < 8; j++)
            s += part[j][threadIdx.x];
        atomicAdd(k == K ? db + c : dw + c * K + k, s);
    }
}

static int sizes_ok(const char *fn, int64_t B, int64_t L, int64_t Di, int64_t K) {
    if (B < 0 || L < 0 || Di <= 0 || K <= 0 || K > 64)
        return mb_fail(MB_EINVAL, "%s: bad sizes B=%lld L=%lld Di=%lld K=%lld", fn, (long long)B,
                       (long long)L, (long long)Di, (long long)K);
    return MB_OK;
}

extern "C" int mb_conv1d_cuda_forward(float *out, const float *x, int64_t x_stride, const float *w,
                                      const float *b, int64_t B, int64_t L, int64_t Di, int64_t K,
                                      void *stream) {
    MB_TRY(sizes_ok("mb_conv1d_cuda_forward", B, L, Di, K));
    const int64_t n = B * L * Di;
    if (n == 0) return MB_OK;
    conv_forward_kernel<<<mb_cuda_blocks(n, 256, 1 << 20), 256, 0, (cudaStream_t)stream>>>(
        out, x, x_stride, w, b, B, L, Di, K);
    MB_CUDA_LAUNCHED("mb_conv1d_cuda_forward");
    return MB_OK;
}

extern "C" int mb_conv1d_cuda_backward(float *dx, int64_t dx_stride, float *dw, float *db,
                                       float *dout, const float *x, int64_t x_stride,
                                       const float *w, const float *b, int64_t B, int64_t L,
                                       int64_t Di, int64_t K, void *stream) {
    MB_TRY(sizes_ok("mb_conv1d_cuda_backward", B, L, Di, K));
    const int64_t n = B * L * Di;
    if (n == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    const unsigned blocks = mb_cuda_blocks(n, 256, 1 << 20);
    conv_grad_pre_kernel<<<blocks, 256, 0, st>>>(dout, x, x_stride, w, b, B, L, Di, K);
    conv_dx_kernel<<<blocks, 256, 0, st>>>(dx, dx_stride, dout, w, B, L, Di, K);
    dim3 grid((unsigned)((Di + 31) / 32), mb_cuda_blocks(B * L, 64, 256), (unsigned)(K + 1));
    conv_dw_kernel<<<grid, dim3(32, 8), 0, st>>>(dw, db, dout, x, x_stride, B, L, Di, K);
    MB_CUDA_LAUNCHED("mb_conv1d_cuda_backward");
    return MB_OK;
}
