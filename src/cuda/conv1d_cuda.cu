/* Causal depthwise conv1d + bias + SiLU forward / backward (conv1d_cuda.h). */
#include "cuda/conv1d_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/bf16_cuda.h"
#include "cuda/cuda_check.h"
#include "cuda/fast_math_cuda.h"

/* 1 / (1 + exp(-v)) by one MUFU.EX2 and one MUFU.RCP (fast_math_cuda.h; relative error ~2^-21).
 * The accurate expf and IEEE division took ~20 instructions of the bf16 forward's ~38 per
 * element (ncu, H200, 65,536 x 2,048), at 64% of its issue slots. */
__device__ __forceinline__ float sigmoid_f(float v) {
    return sigmoidf_(v);
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
    MB_TRY(mb_conv1d_cuda_forward_ex(out, NULL, x, x_stride, w, b, K > 1 ? state : NULL, B, L, Di,
                                     K, stream));
    if (K > 1) {
        conv_next_state_kernel<<<mb_cuda_blocks(B * (K - 1) * Di, 256, 1024), 256, 0,
                                 (cudaStream_t)stream>>>(next_state, state, x, x_stride, B, L, Di,
                                                         K);
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

/* ---------------------------------------------------------------- tiled kernels (K <= 8)
 * A thread owns one channel of one sequence over a tile of CONV_T positions and walks it in
 * time with the K-tap window in registers, so every input is read once (coalesced across the
 * block's channels) and no index is divided. Block: CONV_C channels; grid: (channel blocks,
 * time tiles, sequences). */
#define CONV_C 128
#define CONV_T 128
/* The bf16-input backward prefetches into L2, each step, the lines of the position this many
 * steps ahead: its loads carry half the bytes of the fp32 form's for as many registers, so fewer
 * bytes were in flight. Medium's conv backward (H200, same call) took 9.2 ms per step without,
 * 8.05 / 7.55 / 7.58 / 8.8 with 2 / 4 / 8 / 16 (the fp32 form: 7.6). (The bf16 forward, at ~3.4
 * TB/s without, has none.) */
#define CONV_PFD16 4

__device__ __forceinline__ void prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

__device__ __forceinline__ float silu_f(float v) {
    return v * sigmoid_f(v);
}

/* V consecutive floats at p (V = 4: one 16-byte access; p 16-byte aligned) */
template <int V> __device__ __forceinline__ void ld_v(float (&r)[V], const float *p) {
    if constexpr (V == 4) {
        const float4 t = *(const float4 *)p;
        r[0] = t.x, r[1] = t.y, r[2] = t.z, r[3] = t.w;
    } else {
#pragma unroll
        for (int v = 0; v < V; v++)
            r[v] = p[v];
    }
}
/* the same from bf16 (V = 4: one 8-byte access; p 8-byte aligned); a bf16 is the top half of
 * its float */
template <int V> __device__ __forceinline__ void ld_v(float (&r)[V], const __nv_bfloat16 *p) {
    if constexpr (V == 4) {
        const uint2 u = *(const uint2 *)p;
        r[0] = __uint_as_float(u.x << 16), r[1] = __uint_as_float(u.x & 0xffff0000u);
        r[2] = __uint_as_float(u.y << 16), r[3] = __uint_as_float(u.y & 0xffff0000u);
    } else if constexpr (V == 2) { /* one 4-byte access; p 4-byte aligned */
        const unsigned u = *(const unsigned *)p;
        r[0] = __uint_as_float(u << 16), r[1] = __uint_as_float(u & 0xffff0000u);
    } else {
#pragma unroll
        for (int v = 0; v < V; v++)
            r[v] = __bfloat162float(p[v]);
    }
}
template <int V> __device__ __forceinline__ void st_v(float *p, const float (&r)[V]) {
    if constexpr (V == 4) {
        *(float4 *)p = make_float4(r[0], r[1], r[2], r[3]);
    } else {
#pragma unroll
        for (int v = 0; v < V; v++)
            p[v] = r[v];
    }
}
template <int V> __device__ __forceinline__ void st_v_bf16(__nv_bfloat16 *p, const float (&r)[V]) {
    if constexpr (V == 2) { /* one 4-byte access; p 4-byte aligned */
        *(__nv_bfloat162 *)p = __floats2bfloat162_rn(r[0], r[1]);
    } else if constexpr (V == 4) { /* one 8-byte access; p 8-byte aligned */
        __nv_bfloat162 h[2] = {__floats2bfloat162_rn(r[0], r[1]),
                               __floats2bfloat162_rn(r[2], r[3])};
        uint2 u;
        memcpy(&u, h, sizeof u);
        *(uint2 *)p = u;
    } else {
#pragma unroll
        for (int v = 0; v < V; v++)
            p[v] = __float2bfloat16_rn(r[v]);
    }
}

/* input j of sequence bb, channels c..c+V-1: x for j >= 0, else the carried state (or 0) */
template <int V, typename XT>
__device__ __forceinline__ void conv_in(float (&r)[V], const XT *x, int64_t x_stride,
                                        const float *state, int64_t bb, int64_t j, int64_t L,
                                        int64_t c, int64_t Di, int K) {
    if (j >= 0) {
        ld_v<V>(r, x + (bb * L + j) * x_stride + c);
    } else if (state) {
        ld_v<V>(r, state + (bb * (K - 1) + (K - 1 + j)) * Di + c);
    } else {
#pragma unroll
        for (int v = 0; v < V; v++)
            r[v] = 0.0f;
    }
}

/* A thread's taps and biases for channels c..c+V-1 (w: (Di, K) row-major, b: (Di)) */
template <int K, int V>
__device__ __forceinline__ void conv_taps(float (&wk)[V][K], float (&bias)[V], const float *w,
                                          const float *b, int64_t c) {
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int k = 0; k < K; k++)
            wk[v][k] = w[(c + v) * K + k];
        bias[v] = b[c + v];
    }
}

/* A thread owns V consecutive channels (V = 4 when every row is 16-byte aligned: 16-byte
 * accesses, four times the bytes in flight per thread). XT: the input's type (float, or bf16
 * for the mixed-precision training's x). */
template <int K, int V, typename XT = float>
__global__ void conv_fwd_tiled_kernel(float *out, __nv_bfloat16 *out_bf16, const XT *x,
                                      int64_t x_stride, const float *w, const float *b,
                                      const float *state, int64_t L, int64_t Di) {
    const int64_t c = ((int64_t)blockIdx.x * CONV_C + threadIdx.x) * V;
    if (c >= Di) return;
    const int64_t bb = blockIdx.z, t0 = (int64_t)blockIdx.y * CONV_T;
    const int64_t t1 = t0 + CONV_T < L ? t0 + CONV_T : L;
    float wk[V][K], win[K][V], bias[V];
    conv_taps<K, V>(wk, bias, w, b, c);
#pragma unroll
    for (int k = 0; k < K - 1; k++) /* win[k] = input t0 - K + 1 + k */
        conv_in<V>(win[k], x, x_stride, state, bb, t0 - K + 1 + k, L, c, Di, K);
    /* the loads of positions up to t + PF issued before t's arithmetic (as the backward): PF 2
     * for bf16 inputs, whose loads carry half the bytes */
    constexpr int PF = sizeof(XT) == 2 ? 2 : 1;
    float xq[PF][V];
#pragma unroll
    for (int j = 0; j < PF; j++)
        if (t0 + j < t1) ld_v<V>(xq[j], x + (bb * L + t0 + j) * x_stride + c);
    for (int64_t t = t0; t < t1; t++) {
#pragma unroll
        for (int v = 0; v < V; v++)
            win[K - 1][v] = xq[0][v];
#pragma unroll
        for (int j = 0; j + 1 < PF; j++)
#pragma unroll
            for (int v = 0; v < V; v++)
                xq[j][v] = xq[j + 1][v];
        if (t + PF < t1) ld_v<V>(xq[PF - 1], x + (bb * L + t + PF) * x_stride + c);
        float o[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            float pre = bias[v];
#pragma unroll
            for (int k = 0; k < K; k++)
                pre += wk[v][k] * win[k][v];
            o[v] = silu_f(pre);
        }
        const int64_t i = (bb * L + t) * Di + c;
        if (out) st_v<V>(out + i, o);
        if (out_bf16) st_v_bf16<V>(out_bf16 + i, o);
#pragma unroll
        for (int k = 0; k < K - 1; k++)
#pragma unroll
            for (int v = 0; v < V; v++)
                win[k][v] = win[k + 1][v];
    }
}

/* The bf16 forward (mixed-precision training) with 4 channels per thread, walking its tile in
 * steps of K positions, unrolled: the window is a ring (slot (p - t0) mod K holds position p, so
 * no register moves), and the K inputs of the next step are loaded (as raw 8-byte words) before
 * this step's arithmetic: twice the tiled kernel's bytes in flight per thread. H200
 * (bench_kernels_cuda): 0.167 against the tiled kernel's 0.190 ms at 353m's shape (65,536 x
 * 2,048), 80% of a copy's rate; 0.291 against 0.337 at medium's (262,144 x 1,024), 91%.
 * MB_CUDA_CONV_RING=0 (read per call) takes the tiled kernel. */
__device__ __forceinline__ void unpack4(float (&r)[4], uint2 u) {
    r[0] = __uint_as_float(u.x << 16), r[1] = __uint_as_float(u.x & 0xffff0000u);
    r[2] = __uint_as_float(u.y << 16), r[3] = __uint_as_float(u.y & 0xffff0000u);
}

template <int K>
__global__ void __launch_bounds__(CONV_C, 6)
    conv_fwd_ring_kernel(float *out, __nv_bfloat16 *out_bf16, const __nv_bfloat16 *x,
                         int64_t x_stride, const float *w, const float *b, const float *state,
                         int64_t L, int64_t Di, int T) {
    constexpr int V = 4;
    const int64_t c = ((int64_t)blockIdx.x * CONV_C + threadIdx.x) * V;
    if (c >= Di) return;
    const int64_t bb = blockIdx.z, t0 = (int64_t)blockIdx.y * T;
    const int64_t t1 = t0 + T < L ? t0 + T : L;
    float wk[V][K], win[K][V], bias[V];
    conv_taps<K, V>(wk, bias, w, b, c);
#pragma unroll
    for (int k = 0; k < K - 1; k++) /* position t0 - K + 1 + k: slot k + 1 */
        conv_in<V>(win[k + 1], x, x_stride, state, bb, t0 - K + 1 + k, L, c, Di, K);
    const __nv_bfloat16 *xp = x + (bb * L + t0) * x_stride + c;
    uint2 nx[K];
#pragma unroll
    for (int u = 0; u < K; u++)
        nx[u] = t0 + u < t1 ? *(const uint2 *)(xp + u * x_stride) : make_uint2(0u, 0u);
    const int64_t i0 = (bb * L + t0) * Di + c;
    for (int64_t t = t0; t < t1; t += K) {
        uint2 cur[K];
#pragma unroll
        for (int u = 0; u < K; u++)
            cur[u] = nx[u];
        const __nv_bfloat16 *xn = xp + (t - t0 + K) * x_stride;
#pragma unroll
        for (int u = 0; u < K; u++)
            if (t + K + u < t1) nx[u] = *(const uint2 *)(xn + u * x_stride);
#pragma unroll
        for (int u = 0; u < K; u++) {
            if (t + u < t1) {
                unpack4(win[u], cur[u]);
                float o[V];
#pragma unroll
                for (int v = 0; v < V; v++) {
                    float pre = bias[v];
#pragma unroll
                    for (int k = 0; k < K; k++) /* position t + u - K + 1 + k */
                        pre += wk[v][k] * win[(u + 1 + k) % K][v];
                    o[v] = silu_f(pre);
                }
                const int64_t i = i0 + (t - t0 + u) * Di;
                if (out) st_v<V>(out + i, o);
                if (out_bf16) st_v_bf16<V>(out_bf16 + i, o);
            }
        }
    }
}

/* Backward over a tile, walking time downwards from the tile's end plus K-1 halo positions
 * (whose pre-activation gradients dx needs): g = dout * SiLU'(pre); dx[t] = sum_k
 * g[t+K-1-k] w[k]; dw[k] += g[t] x[t-K+1+k] and db += g[t] over the tile, one atomic each.
 * V channels per thread as in the forward. */
template <int K, int V, typename XT = float, typename GT = float>
__global__ void conv_bwd_tiled_kernel(float *dx, __nv_bfloat16 *dx_bf16, int64_t dx_stride,
                                      float *dw, float *db, const GT *dout, const GT *dout2,
                                      const XT *x, int64_t x_stride, const float *w, const float *b,
                                      int64_t L, int64_t Di) {
    const int64_t c = ((int64_t)blockIdx.x * CONV_C + threadIdx.x) * V;
    if (c >= Di) return;
    const int64_t bb = blockIdx.z, t0 = (int64_t)blockIdx.y * CONV_T;
    const int64_t t1 = t0 + CONV_T < L ? t0 + CONV_T : L;
    const int64_t top = t1 + K - 2 < L - 1 ? t1 + K - 2 : L - 1; /* last position with a g */
    float wk[V][K], win[K][V], gwin[K][V], dwk[V][K], dbs[V], bias[V];
    conv_taps<K, V>(wk, bias, w, b, c);
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int k = 0; k < K; k++) {
            gwin[k][v] = 0.0f; /* gwin[k] = g[t + k]; 0 beyond the sequence */
            dwk[v][k] = 0.0f;
        }
        dbs[v] = 0.0f;
    }
#pragma unroll
    for (int k = 1; k < K; k++) /* win[k] = input top - K + 1 + k, filled for t = top */
        conv_in<V>(win[k], x, x_stride, NULL, bb, top - K + 1 + k, L, c, Di, K);
    /* the loads of position t - 1 issued before t's arithmetic (twice the bytes in flight);
     * dout2 (bf16 only; may be NULL): a second part of the output gradient, added in fp32 */
    constexpr bool TWO = sizeof(GT) == 2;
    float xn[V], gn[V], hn[V];
    conv_in<V>(xn, x, x_stride, NULL, bb, top - K + 1, L, c, Di, K);
    ld_v<V>(gn, dout + (bb * L + top) * Di + c);
    if (TWO && dout2) ld_v<V>(hn, dout2 + (bb * L + top) * Di + c);
    for (int64_t t = top; t >= t0; t--) {
        float go[V];
#pragma unroll
        for (int v = 0; v < V; v++)
            win[0][v] = xn[v], go[v] = TWO && dout2 ? gn[v] + hn[v] : gn[v];
        if (t > t0) {
            conv_in<V>(xn, x, x_stride, NULL, bb, t - K, L, c, Di, K);
            ld_v<V>(gn, dout + (bb * L + t - 1) * Di + c);
            if (TWO && dout2) ld_v<V>(hn, dout2 + (bb * L + t - 1) * Di + c);
        }
        if (TWO && t - CONV_PFD16 >= t0) { /* bf16: those of t - CONV_PFD16 into L2 */
            const int64_t tp = t - CONV_PFD16;
            if (tp - K + 1 >= 0) prefetch_l2(x + (bb * L + tp - K + 1) * x_stride + c);
            prefetch_l2(dout + (bb * L + tp) * Di + c);
            if (dout2) prefetch_l2(dout2 + (bb * L + tp) * Di + c);
        }
#pragma unroll
        for (int k = K - 1; k > 0; k--)
#pragma unroll
            for (int v = 0; v < V; v++)
                gwin[k][v] = gwin[k - 1][v];
#pragma unroll
        for (int v = 0; v < V; v++) {
            float pre = bias[v];
#pragma unroll
            for (int k = 0; k < K; k++)
                pre += wk[v][k] * win[k][v];
            const float s = sigmoid_f(pre);
            gwin[0][v] = go[v] * (s * (1.0f + pre * (1.0f - s)));
        }
        if (t < t1) {
            float acc[V];
#pragma unroll
            for (int v = 0; v < V; v++) {
                acc[v] = 0.0f;
#pragma unroll
                for (int k = 0; k < K; k++)
                    acc[v] += gwin[K - 1 - k][v] * wk[v][k];
#pragma unroll
                for (int k = 0; k < K; k++)
                    dwk[v][k] += gwin[0][v] * win[k][v];
                dbs[v] += gwin[0][v];
            }
            const int64_t o = (bb * L + t) * dx_stride + c;
            if (dx) st_v<V>(dx + o, acc);
            if (dx_bf16) st_v_bf16<V>(dx_bf16 + o, acc);
        }
#pragma unroll
        for (int k = K - 1; k > 0; k--)
#pragma unroll
            for (int v = 0; v < V; v++)
                win[k][v] = win[k - 1][v];
    }
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int k = 0; k < K; k++)
            atomicAdd(dw + (c + v) * K + k, dwk[v][k]);
        atomicAdd(db + c + v, dbs[v]);
    }
}

/* The bf16 backward (mixed-precision training: bf16 x, dout and dout2, bf16 dx) with 2 channels
 * per thread, walking time downwards in unrolled steps of K positions: x and g windows are rings
 * (slot (top - p) mod K holds position p: no register moves) and the K positions of the next
 * step (x, dout, dout2 as raw 4-byte words) are loaded before this step's arithmetic, in place
 * of conv_bwd_tiled_kernel's one-position lookahead and L2 prefetch. Same sums as that kernel:
 * g = dout * SiLU'(pre); dx[t] = sum_k g[t+K-1-k] w[k]; dw[k] += g[t] x[t-K+1+k], db += g[t]
 * over the tile, one atomic each. H200 (bench_kernels_cuda, two dout): 0.333 against 0.391 ms
 * at 353m's shape, 0.639 against 0.752 at medium's, 81-82% of a copy's rate.
 * MB_CUDA_CONV_RING=0 (read per call) takes the tiled kernel. */
__device__ __forceinline__ void unpack2(float (&r)[2], unsigned u) {
    r[0] = __uint_as_float(u << 16), r[1] = __uint_as_float(u & 0xffff0000u);
}

template <int K>
__global__ void __launch_bounds__(CONV_C, 6)
    conv_bwd_ring_kernel(__nv_bfloat16 *dx_bf16, int64_t dx_stride, float *dw, float *db,
                         const __nv_bfloat16 *dout, const __nv_bfloat16 *dout2,
                         const __nv_bfloat16 *x, int64_t x_stride, const float *w, const float *b,
                         int64_t L, int64_t Di, int T) {
    constexpr int V = 2;
    const int64_t c = ((int64_t)blockIdx.x * CONV_C + threadIdx.x) * V;
    if (c >= Di) return;
    const int64_t bb = blockIdx.z, t0 = (int64_t)blockIdx.y * T;
    const int64_t t1 = t0 + T < L ? t0 + T : L;
    const int64_t top = t1 + K - 2 < L - 1 ? t1 + K - 2 : L - 1; /* last position with a g */
    float wk[V][K], win[K][V], gwin[K][V], dwk[V][K], dbs[V], bias[V];
    conv_taps<K, V>(wk, bias, w, b, c);
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int k = 0; k < K; k++) {
            gwin[k][v] = 0.0f; /* g beyond the sequence (or not needed) */
            dwk[v][k] = 0.0f;
        }
        dbs[v] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < K - 1; k++) /* x(top - k): slot k */
        conv_in<V>(win[k], x, x_stride, NULL, bb, top - k, L, c, Di, K);
    const __nv_bfloat16 *xr = x + bb * L * x_stride + c, *gr = dout + bb * L * Di + c;
    const __nv_bfloat16 *hr = dout2 ? dout2 + bb * L * Di + c : NULL;
    /* the raw words of the step starting at tb: position t = tb - u reads x(t - K + 1), dout(t),
     * dout2(t) */
    unsigned nx[K], ng[K], nh[K];
#pragma unroll
    for (int u = 0; u < K; u++) {
        const int64_t t = top - u;
        const bool ok = t >= t0;
        nx[u] = ok && t - K + 1 >= 0 ? *(const unsigned *)(xr + (t - K + 1) * x_stride) : 0u;
        ng[u] = ok ? *(const unsigned *)(gr + t * Di) : 0u;
        nh[u] = ok && hr ? *(const unsigned *)(hr + t * Di) : 0u;
    }
    for (int64_t tb = top; tb >= t0; tb -= K) {
        unsigned cx[K], cg[K], ch[K];
#pragma unroll
        for (int u = 0; u < K; u++)
            cx[u] = nx[u], cg[u] = ng[u], ch[u] = nh[u];
#pragma unroll
        for (int u = 0; u < K; u++) {
            const int64_t t = tb - K - u;
            const bool ok = t >= t0;
            if (ok) {
                nx[u] = t - K + 1 >= 0 ? *(const unsigned *)(xr + (t - K + 1) * x_stride) : 0u;
                ng[u] = *(const unsigned *)(gr + t * Di);
                if (hr) nh[u] = *(const unsigned *)(hr + t * Di);
            }
        }
#pragma unroll
        for (int u = 0; u < K; u++) {
            const int64_t t = tb - u;
            if (t >= t0) {
                unpack2(win[(u + K - 1) % K], cx[u]); /* x(t - K + 1) */
                float go[V], ho[V];
                unpack2(go, cg[u]);
                unpack2(ho, ch[u]);
                float g[V];
#pragma unroll
                for (int v = 0; v < V; v++) {
                    float pre = bias[v];
#pragma unroll
                    for (int k = 0; k < K; k++) /* x(t - K + 1 + k) */
                        pre += wk[v][k] * win[(u + K - 1 - k) % K][v];
                    const float s = sigmoid_f(pre);
                    g[v] = (hr ? go[v] + ho[v] : go[v]) * (s * (1.0f + pre * (1.0f - s)));
                    gwin[u % K][v] = g[v]; /* g(t) */
                }
                if (t < t1) {
                    float acc[V];
#pragma unroll
                    for (int v = 0; v < V; v++) {
                        acc[v] = 0.0f;
#pragma unroll
                        for (int k = 0; k < K; k++) /* g(t + K - 1 - k) */
                            acc[v] += gwin[(u + 1 + k) % K][v] * wk[v][k];
#pragma unroll
                        for (int k = 0; k < K; k++)
                            dwk[v][k] += g[v] * win[(u + K - 1 - k) % K][v];
                        dbs[v] += g[v];
                    }
                    st_v_bf16<V>(dx_bf16 + (bb * L + t) * dx_stride + c, acc);
                }
            }
        }
    }
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int k = 0; k < K; k++)
            atomicAdd(dw + (c + v) * K + k, dwk[v][k]);
        atomicAdd(db + c + v, dbs[v]);
    }
}

static dim3 conv_grid(int64_t B, int64_t L, int64_t Di, int V) {
    return dim3((unsigned)((Di + CONV_C * V - 1) / (CONV_C * V)),
                (unsigned)((L + CONV_T - 1) / CONV_T), (unsigned)B);
}

/* The ring kernels' tile length T (positions per block), from 128 down to tmin by halves:
 * whichever makes the fewest position-steps per multiprocessor, counting the last wave whole and
 * each tile's K - 1 halo positions: ceil(blocks / (multiprocessors x blocks per multiprocessor))
 * x (T + K - 1). H200 (bench_kernels_cuda, MB_CUDA_CONV_T forcing each): the forward at 353m's
 * shape (B 8, L 8192, d_inner 2048) ran 2.2 waves at T 128, 0.163 ms, against 0.152 at 64 and
 * 0.155 at 32 (medium's shape: 0.287-0.289 at 128 and 64, 0.297 at 32), so tmin 64. The
 * backward lost at every shorter tile (353m's shape 0.330 ms at 128, 0.397 at 64, 0.553 at 32:
 * each tile's K + 1 atomics per channel into dw / db and its halo), so it keeps 128.
 * MB_CUDA_CONV_T=32|64|128 forces one (read per call; tests). */
static int ring_tile(const void *kernel, int64_t B, int64_t L, int64_t Di, int V, int64_t K,
                     int tmin) {
    const char *e = getenv("MB_CUDA_CONV_T");
    if (e && (!strcmp(e, "32") || !strcmp(e, "64") || !strcmp(e, "128"))) {
        const int t = atoi(e);
        if ((L + t - 1) / t <= 65535) return t;
    }
    static struct {
        const void *kernel;
        int per_sm;
    } cache[16]; /* blocks per multiprocessor of each kernel asked (one device) */
    int per_sm = 0, i = 0;
    while (i < 16 && cache[i].kernel && cache[i].kernel != kernel)
        i++;
    if (i < 16 && cache[i].kernel) {
        per_sm = cache[i].per_sm;
    } else {
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, CONV_C, 0) !=
                cudaSuccess ||
            per_sm < 1) {
            (void)cudaGetLastError();
            return CONV_T;
        }
        if (i < 16) cache[i].kernel = kernel, cache[i].per_sm = per_sm;
    }
    const int64_t slots = (int64_t)mb_cuda_sm_count() * per_sm;
    const int64_t cblocks = (Di + CONV_C * V - 1) / (CONV_C * V);
    int best = CONV_T;
    int64_t best_cost = -1;
    for (int t = CONV_T; t >= tmin; t /= 2) {
        const int64_t tiles = (L + t - 1) / t;
        if (tiles > 65535) break;
        const int64_t waves = (cblocks * tiles * B + slots - 1) / slots;
        const int64_t cost = waves * (t + K - 1);
        if (best_cost < 0 || cost < best_cost) best = t, best_cost = cost;
    }
    return best;
}

static int al(const void *p, unsigned bytes) {
    return ((uintptr_t)p % bytes) == 0;
}

#define CONV_DISPATCH(K, V, KERNEL, ...)                                                           \
    switch (K) {                                                                                   \
    case 1:                                                                                        \
        KERNEL<1, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    case 2:                                                                                        \
        KERNEL<2, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    case 3:                                                                                        \
        KERNEL<3, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    case 4:                                                                                        \
        KERNEL<4, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    case 5:                                                                                        \
        KERNEL<5, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    case 6:                                                                                        \
        KERNEL<6, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    case 7:                                                                                        \
        KERNEL<7, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    default:                                                                                       \
        KERNEL<8, V CONV_TARGS> __VA_ARGS__;                                                       \
        break;                                                                                     \
    }

/* Tiled launches with V channels per thread (K <= 8); XT / GT: the types of x and dout */
/* CONV_TARGS: the kernel's template arguments after K and V */
template <int V, typename XT>
static void conv_fwd_tiled(float *out, uint16_t *out_bf16, const XT *x, int64_t x_stride,
                           const float *w, const float *b, const float *state, int64_t B, int64_t L,
                           int64_t Di, int64_t K, cudaStream_t st) {
#define CONV_TARGS , XT
    CONV_DISPATCH(K, V, conv_fwd_tiled_kernel,
                  <<<conv_grid(B, L, Di, V), CONV_C, 0, st>>>(out, (__nv_bfloat16 *)out_bf16, x,
                                                              x_stride, w, b, state, L, Di))
#undef CONV_TARGS
}

template <int V, typename XT, typename GT>
static void conv_bwd_tiled(float *dx, uint16_t *dx_bf16, int64_t dx_stride, float *dw, float *db,
                           const GT *dout, const GT *dout2, const XT *x, int64_t x_stride,
                           const float *w, const float *b, int64_t B, int64_t L, int64_t Di,
                           int64_t K, cudaStream_t st) {
#define CONV_TARGS , XT, GT
    CONV_DISPATCH(K, V, conv_bwd_tiled_kernel,
                  <<<conv_grid(B, L, Di, V), CONV_C, 0, st>>>(dx, (__nv_bfloat16 *)dx_bf16,
                                                              dx_stride, dw, db, dout, dout2, x,
                                                              x_stride, w, b, L, Di))
#undef CONV_TARGS
}

/* the tiled kernels' reach: K <= 8 taps in registers, B and the time tiles within grid limits */
static int tiled_ok(int64_t B, int64_t L, int64_t K) {
    return K <= 8 && B <= 65535 && (L + CONV_T - 1) / CONV_T <= 65535;
}

extern "C" int mb_conv1d_cuda_bf16in_supported(int64_t B, int64_t L, int64_t K) {
    return tiled_ok(B, L, K);
}

/* The tiled forward with x of type XT (V = 4 when every row allows 4-channel accesses) */
template <typename XT>
static void conv_fwd_launch(float *out, uint16_t *out_bf16, const XT *x, int64_t x_stride,
                            const float *w, const float *b, const float *state, int64_t B,
                            int64_t L, int64_t Di, int64_t K, cudaStream_t st) {
    const int v4 = Di % 4 == 0 && x_stride % 4 == 0 && al(out, 16) &&
                   al(x, (unsigned)(4 * sizeof(XT))) && (!state || al(state, 16)) &&
                   (!out_bf16 || al(out_bf16, 8));
    if constexpr (sizeof(XT) == 2) { /* the ring walk unless MB_CUDA_CONV_RING=0 (per call) */
        const char *e = getenv("MB_CUDA_CONV_RING");
        if (v4 && !(e && !strcmp(e, "0"))) {
            __nv_bfloat16 *ob = (__nv_bfloat16 *)out_bf16;
            const __nv_bfloat16 *xb = (const __nv_bfloat16 *)x;
#define RING(KK)                                                                                   \
    case KK: {                                                                                     \
        const int T = ring_tile((const void *)conv_fwd_ring_kernel<KK>, B, L, Di, 4, K, 64);       \
        const dim3 g((unsigned)((Di + CONV_C * 4 - 1) / (CONV_C * 4)),                             \
                     (unsigned)((L + T - 1) / T), (unsigned)B);                                    \
        conv_fwd_ring_kernel<KK>                                                                   \
            <<<g, CONV_C, 0, st>>>(out, ob, xb, x_stride, w, b, state, L, Di, T);                  \
        break;                                                                                     \
    }
            switch (K) {
                RING(1)
                RING(2)
                RING(3)
                RING(4)
                RING(5)
                RING(6)
                RING(7)
                RING(8)
            }
#undef RING
            return;
        }
    }
    if (v4)
        conv_fwd_tiled<4, XT>(out, out_bf16, x, x_stride, w, b, state, B, L, Di, K, st);
    else
        conv_fwd_tiled<1, XT>(out, out_bf16, x, x_stride, w, b, state, B, L, Di, K, st);
}

static int sizes_ok(const char *fn, int64_t B, int64_t L, int64_t Di, int64_t K) {
    if (B < 0 || L < 0 || Di <= 0 || K <= 0 || K > 64)
        return mb_fail(MB_EINVAL, "%s: bad sizes B=%lld L=%lld Di=%lld K=%lld", fn, (long long)B,
                       (long long)L, (long long)Di, (long long)K);
    return MB_OK;
}

extern "C" int mb_conv1d_cuda_forward_ex(float *out, uint16_t *out_bf16, const float *x,
                                         int64_t x_stride, const float *w, const float *b,
                                         const float *state, int64_t B, int64_t L, int64_t Di,
                                         int64_t K, void *stream) {
    MB_TRY(sizes_ok("mb_conv1d_cuda_forward", B, L, Di, K));
    if (!out || !x || !w || !b || x_stride < Di)
        return mb_fail(MB_EINVAL, "mb_conv1d_cuda_forward: bad arguments");
    const int64_t n = B * L * Di;
    if (n == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    if (tiled_ok(B, L, K)) {
        conv_fwd_launch<float>(out, out_bf16, x, x_stride, w, b, state, B, L, Di, K, st);
        MB_CUDA_LAUNCHED("mb_conv1d_cuda_forward");
        return MB_OK;
    }
    if (state)
        conv_forward_state_kernel<<<mb_cuda_blocks(n, 256, 1 << 20), 256, 0, st>>>(
            out, x, x_stride, w, b, state, B, L, Di, K);
    else
        conv_forward_kernel<<<mb_cuda_blocks(n, 256, 1 << 20), 256, 0, st>>>(out, x, x_stride, w, b,
                                                                             B, L, Di, K);
    MB_CUDA_LAUNCHED("mb_conv1d_cuda_forward");
    if (out_bf16) MB_TRY(mb_bf16_from_f32_cuda(out_bf16, Di, out, Di, B * L, Di, stream));
    return MB_OK;
}

extern "C" int mb_conv1d_cuda_forward(float *out, const float *x, int64_t x_stride, const float *w,
                                      const float *b, int64_t B, int64_t L, int64_t Di, int64_t K,
                                      void *stream) {
    return mb_conv1d_cuda_forward_ex(out, NULL, x, x_stride, w, b, NULL, B, L, Di, K, stream);
}

extern "C" int mb_conv1d_cuda_backward_ex(float *dx, uint16_t *dx_bf16, int64_t dx_stride,
                                          float *dw, float *db, float *dout, const float *x,
                                          int64_t x_stride, const float *w, const float *b,
                                          int64_t B, int64_t L, int64_t Di, int64_t K,
                                          void *stream) {
    MB_TRY(sizes_ok("mb_conv1d_cuda_backward", B, L, Di, K));
    if ((!dx && !dx_bf16) || !dw || !db || !dout || !x || !w || !b || dx_stride < Di ||
        x_stride < Di)
        return mb_fail(MB_EINVAL, "mb_conv1d_cuda_backward: bad arguments (dx and dx_bf16 both "
                                  "NULL, a NULL tensor or a stride below d_inner)");
    const int64_t n = B * L * Di;
    if (n == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    if (tiled_ok(B, L, K)) {
        const int v4 = Di % 4 == 0 && x_stride % 4 == 0 && dx_stride % 4 == 0 && al(dx, 16) &&
                       al(dout, 16) && al(x, 16) && (!dx_bf16 || al(dx_bf16, 8));
        if (v4)
            conv_bwd_tiled<4, float, float>(dx, dx_bf16, dx_stride, dw, db, dout, NULL, x, x_stride,
                                            w, b, B, L, Di, K, st);
        else
            conv_bwd_tiled<1, float, float>(dx, dx_bf16, dx_stride, dw, db, dout, NULL, x, x_stride,
                                            w, b, B, L, Di, K, st);
        MB_CUDA_LAUNCHED("mb_conv1d_cuda_backward");
        return MB_OK;
    }
    /* the per-element kernels: dx in fp32 first (a temporary one where only the bf16 copy is
     * asked for) */
    float *tmp = NULL;
    int64_t ld = dx_stride;
    if (!dx) {
        const cudaError_t e = cudaMallocAsync((void **)&tmp, sizeof(float) * (size_t)n, st);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return mb_fail(MB_ENOMEM, "mb_conv1d_cuda_backward: cannot allocate %lld floats for dx",
                           (long long)n);
        }
        dx = tmp, ld = Di;
    }
    const unsigned blocks = mb_cuda_blocks(n, 256, 1 << 20);
    conv_grad_pre_kernel<<<blocks, 256, 0, st>>>(dout, x, x_stride, w, b, B, L, Di, K);
    conv_dx_kernel<<<blocks, 256, 0, st>>>(dx, ld, dout, w, B, L, Di, K);
    dim3 grid((unsigned)((Di + 31) / 32), mb_cuda_blocks(B * L, 64, 256), (unsigned)(K + 1));
    conv_dw_kernel<<<grid, dim3(32, 8), 0, st>>>(dw, db, dout, x, x_stride, B, L, Di, K);
    int rc = MB_OK;
    const cudaError_t le = cudaGetLastError();
    if (le != cudaSuccess) rc = mb_cuda_err(le, "mb_conv1d_cuda_backward", __FILE__, __LINE__);
    if (!rc && dx_bf16) rc = mb_bf16_from_f32_cuda(dx_bf16, dx_stride, dx, ld, B * L, Di, stream);
    if (tmp) cudaFreeAsync(tmp, st);
    return rc;
}

extern "C" int mb_conv1d_cuda_backward(float *dx, int64_t dx_stride, float *dw, float *db,
                                       float *dout, const float *x, int64_t x_stride,
                                       const float *w, const float *b, int64_t B, int64_t L,
                                       int64_t Di, int64_t K, void *stream) {
    return mb_conv1d_cuda_backward_ex(dx, NULL, dx_stride, dw, db, dout, x, x_stride, w, b, B, L,
                                      Di, K, stream);
}

/* ---- bf16 inputs (mixed-precision training; conv1d_cuda.h) */

static int bf16in_ok(const char *fn, int64_t B, int64_t L, int64_t Di, int64_t K) {
    MB_TRY(sizes_ok(fn, B, L, Di, K));
    if (!tiled_ok(B, L, K))
        return mb_fail(MB_EINVAL,
                       "%s: bf16 inputs take d_conv <= 8, B <= 65535 and L <= 65535 * %d (K=%lld "
                       "B=%lld L=%lld)",
                       fn, CONV_T, (long long)K, (long long)B, (long long)L);
    return MB_OK;
}

extern "C" int mb_conv1d_cuda_forward_bf16in(float *out, uint16_t *out_bf16, const uint16_t *x,
                                             int64_t x_stride, const float *w, const float *b,
                                             int64_t B, int64_t L, int64_t Di, int64_t K,
                                             void *stream) {
    MB_TRY(bf16in_ok("mb_conv1d_cuda_forward_bf16in", B, L, Di, K));
    if ((!out && !out_bf16) || !x || !w || !b || x_stride < Di)
        return mb_fail(MB_EINVAL, "mb_conv1d_cuda_forward_bf16in: bad arguments");
    if (B * L == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    conv_fwd_launch<__nv_bfloat16>(out, out_bf16, (const __nv_bfloat16 *)x, x_stride, w, b, NULL, B,
                                   L, Di, K, st);
    MB_CUDA_LAUNCHED("mb_conv1d_cuda_forward_bf16in");
    return MB_OK;
}

extern "C" int mb_conv1d_cuda_backward_bf16in(uint16_t *dx_bf16, int64_t dx_stride, float *dw,
                                              float *db, const uint16_t *dout,
                                              const uint16_t *dout2, const uint16_t *x,
                                              int64_t x_stride, const float *w, const float *b,
                                              int64_t B, int64_t L, int64_t Di, int64_t K,
                                              void *stream) {
    MB_TRY(bf16in_ok("mb_conv1d_cuda_backward_bf16in", B, L, Di, K));
    if (!dx_bf16 || !dw || !db || !dout || !x || !w || !b || dx_stride < Di || x_stride < Di)
        return mb_fail(MB_EINVAL, "mb_conv1d_cuda_backward_bf16in: bad arguments");
    if (B * L == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    /* 2 channels per thread (4-byte accesses), before the L2 prefetch (CONV_PFD16), on the
     * H200 (medium preset's conv backward, ms per step, same call): 9.95, against 4 channels
     * (8-byte accesses) 11.6, 4 with the loads two positions ahead 11.6-12.0 or with 5-6 blocks
     * per multiprocessor forced (spills) 12.0-12.7, 8 channels 16.4. ncu: latency-bound on its
     * loads (1.92 TB/s against the fp32 form's 2.85), which the prefetch takes away (7.55). */
    typedef __nv_bfloat16 hb;
    const int v2 = Di % 2 == 0 && x_stride % 2 == 0 && dx_stride % 2 == 0 && al(dout, 4) &&
                   (!dout2 || al(dout2, 4)) && al(x, 4) && al(dx_bf16, 4);
    const hb *g1 = (const hb *)dout, *g2 = (const hb *)dout2, *xh = (const hb *)x;
    const char *e = getenv("MB_CUDA_CONV_RING"); /* (read per call) */
    if (v2 && !(e && !strcmp(e, "0"))) {
        __nv_bfloat16 *dxb = (__nv_bfloat16 *)dx_bf16;
#define RING(KK)                                                                                   \
    case KK: {                                                                                     \
        const int T = ring_tile((const void *)conv_bwd_ring_kernel<KK>, B, L, Di, 2, K, 128);      \
        const dim3 g((unsigned)((Di + CONV_C * 2 - 1) / (CONV_C * 2)),                             \
                     (unsigned)((L + T - 1) / T), (unsigned)B);                                    \
        conv_bwd_ring_kernel<KK>                                                                   \
            <<<g, CONV_C, 0, st>>>(dxb, dx_stride, dw, db, g1, g2, xh, x_stride, w, b, L, Di, T);  \
        break;                                                                                     \
    }
        switch (K) {
            RING(1)
            RING(2)
            RING(3)
            RING(4)
            RING(5)
            RING(6)
            RING(7)
            RING(8)
        }
#undef RING
    } else if (v2)
        conv_bwd_tiled<2, hb, hb>(NULL, dx_bf16, dx_stride, dw, db, g1, g2, xh, x_stride, w, b, B,
                                  L, Di, K, st);
    else
        conv_bwd_tiled<1, hb, hb>(NULL, dx_bf16, dx_stride, dw, db, g1, g2, xh, x_stride, w, b, B,
                                  L, Di, K, st);
    MB_CUDA_LAUNCHED("mb_conv1d_cuda_backward_bf16in");
    return MB_OK;
}
