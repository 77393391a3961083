/* Residual add + RMSNorm / LayerNorm forward and backward (norm_cuda.h). */
#include "cuda/norm_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

#define FULL_MASK 0xffffffffu
#define ROWS_PER_BLOCK 8 /* one warp per row */

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

/* Each lane reads back only elements it wrote itself (same j pattern), so the fused residual
 * write needs no synchronisation before the statistics pass. */
__global__ void norm_forward_kernel(float *resid_out, float *y, __nv_bfloat16 *yb, float *mean,
                                    float *rstd, const float *h, const float *resid_in,
                                    const float *w, const float *b, int64_t rows, int64_t d,
                                    float eps) {
    const int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    const int lane = threadIdx.x;
    const float *hi = h + row * d;
    const float *pi = resid_in ? resid_in + row * d : NULL;
    float *ri = resid_out + row * d;
    float *yi = y ? y + row * d : NULL;
    __nv_bfloat16 *ybi = yb ? yb + row * d : NULL;
    double s = 0.0;
    for (int64_t j = lane; j < d; j += 32) {
        float v = pi ? hi[j] + pi[j] : hi[j];
        ri[j] = v;
        s += b ? (double)v : (double)v * v;
    }
    s = warp_sum_d(s);
    if (b) { /* LayerNorm: centred second pass */
        const double m = s / (double)d;
        double var = 0.0;
        for (int64_t j = lane; j < d; j += 32) {
            double t = (double)ri[j] - m;
            var += t * t;
        }
        var = warp_sum_d(var);
        const float rs = (float)(1.0 / sqrt(var / (double)d + (double)eps));
        const float mf = (float)m;
        if (lane == 0) {
            mean[row] = mf;
            rstd[row] = rs;
        }
        for (int64_t j = lane; j < d; j += 32) {
            const float o = (ri[j] - mf) * rs * w[j] + b[j];
            if (yi) yi[j] = o;
            if (ybi) ybi[j] = __float2bfloat16_rn(o);
        }
    } else {
        const float rs = (float)(1.0 / sqrt(s / (double)d + (double)eps));
        if (lane == 0) rstd[row] = rs;
        for (int64_t j = lane; j < d; j += 32) {
            const float o = ri[j] * rs * w[j];
            if (yi) yi[j] = o;
            if (ybi) ybi[j] = __float2bfloat16_rn(o);
        }
    }
}

/* thread (column j, row block): w[j], b[j] loaded once, rows += gridDim.y; no index division */
__global__ void norm_apply_kernel(float *y, __nv_bfloat16 *yb, const float *r, const float *mean,
                                  const float *rstd, const float *w, const float *b, int64_t rows,
                                  int64_t d) {
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    const float wj = w[j], bj = b ? b[j] : 0.0f;
    for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const int64_t i = row * d + j;
        const float o = b ? (r[i] - mean[row]) * rstd[row] * wj + bj : r[i] * rstd[row] * wj;
        if (y) y[i] = o;
        if (yb) yb[i] = __float2bfloat16_rn(o);
    }
}

__global__ void norm_backward_input_kernel(float *dr, __nv_bfloat16 *drb, const float *dy,
                                           const float *r, const float *mean, const float *rstd,
                                           const float *w, int layer, int64_t rows, int64_t d,
                                           int accumulate) {
    const int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    const int lane = threadIdx.x;
    const float *ri = r + row * d, *dyi = dy + row * d;
    float *dri = dr + row * d;
    const float rs = rstd[row], mf = layer ? mean[row] : 0.0f;
    double sg = 0.0, sgx = 0.0;
    for (int64_t j = lane; j < d; j += 32) {
        const float g = dyi[j] * w[j];
        const float xh = (ri[j] - mf) * rs;
        sg += g;
        sgx += (double)g * xh;
    }
    sg = warp_sum_d(sg);
    sgx = warp_sum_d(sgx);
    const float mg = layer ? (float)(sg / (double)d) : 0.0f;
    const float mgx = (float)(sgx / (double)d);
    for (int64_t j = lane; j < d; j += 32) {
        const float g = dyi[j] * w[j];
        const float xh = (ri[j] - mf) * rs;
        float v = rs * (g - mg - xh * mgx);
        if (accumulate) v += dri[j];
        dri[j] = v;
        if (drb) drb[row * d + j] = __float2bfloat16_rn(v);
    }
}

/* dw (d) += sum_rows dy * xhat, db += sum_rows dy; block (32, 8) per 32 columns and row slice */
__global__ void norm_backward_params_kernel(float *dw, float *db, const float *dy, const float *r,
                                            const float *mean, const float *rstd, int64_t rows,
                                            int64_t d) {
    __shared__ float pw[8][33], pb[8][33];
    const int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    float sw = 0.0f, sb = 0.0f;
    if (c < d)
        for (int64_t i = (int64_t)blockIdx.y * 8 + threadIdx.y; i < rows;
             i += (int64_t)gridDim.y * 8) {
            const float g = dy[i * d + c];
            const float mf = db ? mean[i] : 0.0f;
            sw += g * ((r[i * d + c] - mf) * rstd[i]);
            sb += g;
        }
    pw[threadIdx.y][threadIdx.x] = sw;
    pb[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    if (threadIdx.y == 0 && c < d) {
        for (int k = 1; k < 8; k++) {
            sw += pw[k][threadIdx.x];
            sb += pb[k][threadIdx.x];
        }
        atomicAdd(dw + c, sw);
        if (db) atomicAdd(db + c, sb);
    }
}

static int sizes_ok(const char *fn, int64_t rows, int64_t d) {
    if (rows < 0 || d <= 0)
        return mb_fail(MB_EINVAL, "%s: bad sizes rows=%lld d=%lld", fn, (long long)rows,
                       (long long)d);
    return MB_OK;
}

extern "C" int mb_norm_cuda_forward_ex(float *resid_out, float *y, uint16_t *yb, float *mean,
                                       float *rstd, const float *h, const float *resid_in,
                                       const float *w, const float *b, int64_t rows, int64_t d,
                                       float eps, void *stream) {
    MB_TRY(sizes_ok("mb_norm_cuda_forward", rows, d));
    if (b && !mean) return mb_fail(MB_EINVAL, "mb_norm_cuda_forward: LayerNorm needs mean");
    if (!y && !yb) return mb_fail(MB_EINVAL, "mb_norm_cuda_forward: no output (y and yb NULL)");
    if (rows == 0) return MB_OK;
    norm_forward_kernel<<<(unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK),
                          dim3(32, ROWS_PER_BLOCK), 0, (cudaStream_t)stream>>>(
        resid_out, y, (__nv_bfloat16 *)yb, mean, rstd, h, resid_in, w, b, rows, d, eps);
    MB_CUDA_LAUNCHED("mb_norm_cuda_forward");
    return MB_OK;
}

extern "C" int mb_norm_cuda_forward(float *resid_out, float *y, float *mean, float *rstd,
                                    const float *h, const float *resid_in, const float *w,
                                    const float *b, int64_t rows, int64_t d, float eps,
                                    void *stream) {
    return mb_norm_cuda_forward_ex(resid_out, y, NULL, mean, rstd, h, resid_in, w, b, rows, d, eps,
                                   stream);
}

extern "C" int mb_norm_cuda_apply_ex(float *y, uint16_t *yb, const float *r, const float *mean,
                                     const float *rstd, const float *w, const float *b,
                                     int64_t rows, int64_t d, void *stream) {
    MB_TRY(sizes_ok("mb_norm_cuda_apply", rows, d));
    if (!y && !yb) return mb_fail(MB_EINVAL, "mb_norm_cuda_apply: no output (y and yb NULL)");
    if (rows == 0) return MB_OK;
    const unsigned cb = (unsigned)((d + 255) / 256);
    const unsigned rbc = cb >= 2112 ? 1 : (unsigned)(2112 / cb); /* ~16 blocks per SM */
    const unsigned rb = (unsigned)(rows < (int64_t)rbc ? rows : rbc);
    norm_apply_kernel<<<dim3(cb, rb), 256, 0, (cudaStream_t)stream>>>(y, (__nv_bfloat16 *)yb, r,
                                                                      mean, rstd, w, b, rows, d);
    MB_CUDA_LAUNCHED("mb_norm_cuda_apply");
    return MB_OK;
}

extern "C" int mb_norm_cuda_apply(float *y, const float *r, const float *mean, const float *rstd,
                                  const float *w, const float *b, int64_t rows, int64_t d,
                                  void *stream) {
    return mb_norm_cuda_apply_ex(y, NULL, r, mean, rstd, w, b, rows, d, stream);
}

extern "C" int mb_norm_cuda_backward_ex(float *dr, uint16_t *drb, float *dw, float *db,
                                        const float *dy, const float *r, const float *mean,
                                        const float *rstd, const float *w, int64_t rows, int64_t d,
                                        int accumulate, void *stream) {
    MB_TRY(sizes_ok("mb_norm_cuda_backward", rows, d));
    if (rows == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    norm_backward_input_kernel<<<(unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK),
                                 dim3(32, ROWS_PER_BLOCK), 0, st>>>(
        dr, (__nv_bfloat16 *)drb, dy, r, mean, rstd, w, db != NULL, rows, d, accumulate);
    dim3 grid((unsigned)((d + 31) / 32), mb_cuda_blocks(rows, 64, 1024));
    norm_backward_params_kernel<<<grid, dim3(32, 8), 0, st>>>(dw, db, dy, r, mean, rstd, rows, d);
    MB_CUDA_LAUNCHED("mb_norm_cuda_backward");
    return MB_OK;
}

extern "C" int mb_norm_cuda_backward(float *dr, float *dw, float *db, const float *dy,
                                     const float *r, const float *mean, const float *rstd,
                                     const float *w, int64_t rows, int64_t d, int accumulate,
                                     void *stream) {
    return mb_norm_cuda_backward_ex(dr, NULL, dw, db, dy, r, mean, rstd, w, rows, d, accumulate,
                                    stream);
}
