/* Residual add + RMSNorm / LayerNorm forward and backward (norm_cuda.h). */
#include "cuda/norm_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

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

/* ---------------------------------------------------------------- row-in-registers kernels
 * For d % 128 == 0 and d <= 128 * NV_MAX with 16-byte aligned rows: lane l of the row's warp
 * holds the float4s at columns 4 * (32 k + l), k < NV = d / 128, so every input is read once with
 * 16-byte loads. Statistics: per-lane float partials, summed over the warp in double. */
#define NV_MAX 8

/* 4 values at float4 index i4 of p: one 16-byte load, or from bf16 one 8-byte load (a bf16 is
 * the top half of its float) */
__device__ __forceinline__ float4 ld4(const float *p, int64_t i4) {
    return ((const float4 *)p)[i4];
}
__device__ __forceinline__ float4 ld4(const __nv_bfloat16 *p, int64_t i4) {
    const uint2 u = ((const uint2 *)p)[i4];
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                       __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
}

/* HT: h's type (float, or bf16: the mixed-precision out_proj output) */
template <int NV, typename HT = float>
__global__ void norm_forward_vec_kernel(float *resid_out, float *y, __nv_bfloat16 *yb, float *mean,
                                        float *rstd, const HT *h, const float *resid_in,
                                        const float *w, const float *b, int64_t rows, float eps) {
    const int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    const int lane = threadIdx.x;
    const int64_t d4 = 32 * NV, o = row * d4;
    const float4 *p4 = resid_in ? (const float4 *)resid_in + o : NULL;
    float4 v[NV];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        v[k] = ld4(h, o + 32 * k + lane);
        if (p4) {
            const float4 q = p4[32 * k + lane];
            v[k].x += q.x, v[k].y += q.y, v[k].z += q.z, v[k].w += q.w;
        }
        ((float4 *)resid_out)[o + 32 * k + lane] = v[k];
        s += b ? v[k].x + v[k].y + v[k].z + v[k].w
               : v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    const double dn = (double)(4 * d4);
    float mf = 0.0f, rs;
    const double sd = warp_sum_d((double)s);
    if (b) { /* LayerNorm: centred second pass over the registers */
        const double m = sd / dn;
        mf = (float)m;
        float q = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const float a0 = v[k].x - mf, a1 = v[k].y - mf, a2 = v[k].z - mf, a3 = v[k].w - mf;
            q += a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3;
        }
        const double var = warp_sum_d((double)q);
        rs = (float)(1.0 / sqrt(var / dn + (double)eps));
        if (lane == 0) mean[row] = mf;
    } else {
        rs = (float)(1.0 / sqrt(sd / dn + (double)eps));
    }
    if (lane == 0) rstd[row] = rs;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int64_t c4 = 32 * k + lane;
        const float4 wk = ((const float4 *)w)[c4];
        float4 r;
        r.x = (v[k].x - mf) * rs * wk.x, r.y = (v[k].y - mf) * rs * wk.y;
        r.z = (v[k].z - mf) * rs * wk.z, r.w = (v[k].w - mf) * rs * wk.w;
        if (b) {
            const float4 bk = ((const float4 *)b)[c4];
            r.x += bk.x, r.y += bk.y, r.z += bk.z, r.w += bk.w;
        }
        if (y) ((float4 *)y)[o + c4] = r;
        if (yb) {
            __nv_bfloat162 *q = (__nv_bfloat162 *)(yb + 4 * (o + c4));
            q[0] = __floats2bfloat162_rn(r.x, r.y);
            q[1] = __floats2bfloat162_rn(r.z, r.w);
        }
    }
}

/* Backward with the parameter sums fused: each warp walks rows row0, row0 + warps, ... keeping
 * its dw / db column partials in registers; the block's warps add them in shared memory (2 d
 * floats, dynamic) and the block adds them to dw / db with one atomic per column.
 * REG (d <= 1024): the row's dy, r and, when accumulating, the old dr are loaded together at the
 * row's start and kept in registers (one round of loads per row, all in flight at once);
 * otherwise the row is read again from L1 after the row sums and dr read there, so that two
 * blocks fit per multiprocessor at 128 registers. */
template <int NV, typename GT = float, bool REG = false> /* GT: dy's type (float, or bf16) */
__global__ void norm_backward_vec_kernel(float *dr, __nv_bfloat16 *drb, float *dw, float *db,
                                         const GT *dy, const float *r, const float *mean,
                                         const float *rstd, const float *w, int64_t rows,
                                         int accumulate) {
    extern __shared__ float sh[]; /* (2, d): dw, db partials */
    const int lane = threadIdx.x;
    const int64_t d4 = 32 * NV, d = 4 * d4;
    const int layer = db != NULL;
    for (int64_t i = threadIdx.y * 32 + lane; i < 2 * d; i += 32 * ROWS_PER_BLOCK)
        sh[i] = 0.0f;
    float4 aw[NV], ab[NV];
#pragma unroll
    for (int k = 0; k < NV; k++)
        aw[k] = ab[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const double dn = (double)d;
    for (int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.y; row < rows;
         row += (int64_t)gridDim.x * ROWS_PER_BLOCK) {
        const int64_t o = row * d4;
        float4 dyr[REG ? NV : 1], rr[REG ? NV : 1], dro[REG ? NV : 1];
        if constexpr (REG) {
#pragma unroll
            for (int k = 0; k < NV; k++) {
                const int64_t c4 = 32 * k + lane;
                dyr[k] = ld4(dy, o + c4), rr[k] = ((const float4 *)r)[o + c4];
                dro[k] =
                    accumulate ? ((const float4 *)dr)[o + c4] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
        }
        const float rs = rstd[row], mf = layer ? mean[row] : 0.0f;
        float sg = 0.0f, sgx = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const int64_t c4 = 32 * k + lane;
            const float4 dyk = REG ? dyr[REG ? k : 0] : ld4(dy, o + c4);
            const float4 rk = REG ? rr[REG ? k : 0] : ((const float4 *)r)[o + c4];
            const float4 wk = ((const float4 *)w)[c4];
            const float4 xh =
                make_float4((rk.x - mf) * rs, (rk.y - mf) * rs, (rk.z - mf) * rs, (rk.w - mf) * rs);
            const float4 g = make_float4(dyk.x * wk.x, dyk.y * wk.y, dyk.z * wk.z, dyk.w * wk.w);
            sg += g.x + g.y + g.z + g.w;
            sgx += g.x * xh.x + g.y * xh.y + g.z * xh.z + g.w * xh.w;
            aw[k].x += dyk.x * xh.x, aw[k].y += dyk.y * xh.y;
            aw[k].z += dyk.z * xh.z, aw[k].w += dyk.w * xh.w;
            ab[k].x += dyk.x, ab[k].y += dyk.y, ab[k].z += dyk.z, ab[k].w += dyk.w;
        }
        const float mg = layer ? (float)(warp_sum_d((double)sg) / dn) : 0.0f;
        const float mgx = (float)(warp_sum_d((double)sgx) / dn);
        /* second pass: from the registers (REG), or the row again (L1) */
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const int64_t c4 = 32 * k + lane;
            const float4 dyk = REG ? dyr[REG ? k : 0] : ld4(dy, o + c4);
            const float4 rk = REG ? rr[REG ? k : 0] : ((const float4 *)r)[o + c4];
            const float4 wk = ((const float4 *)w)[c4];
            float4 v = make_float4(rs * (dyk.x * wk.x - mg - (rk.x - mf) * rs * mgx),
                                   rs * (dyk.y * wk.y - mg - (rk.y - mf) * rs * mgx),
                                   rs * (dyk.z * wk.z - mg - (rk.z - mf) * rs * mgx),
                                   rs * (dyk.w * wk.w - mg - (rk.w - mf) * rs * mgx));
            float4 *dp = (float4 *)dr + o + c4;
            if (accumulate) {
                const float4 a = REG ? dro[REG ? k : 0] : *dp;
                v.x += a.x, v.y += a.y, v.z += a.z, v.w += a.w;
            }
            *dp = v;
            if (drb) {
                __nv_bfloat162 *q = (__nv_bfloat162 *)(drb + 4 * (o + c4));
                q[0] = __floats2bfloat162_rn(v.x, v.y);
                q[1] = __floats2bfloat162_rn(v.z, v.w);
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int64_t c = 4 * (32 * k + lane);
        atomicAdd(sh + c, aw[k].x), atomicAdd(sh + c + 1, aw[k].y);
        atomicAdd(sh + c + 2, aw[k].z), atomicAdd(sh + c + 3, aw[k].w);
        if (layer) {
            atomicAdd(sh + d + c, ab[k].x), atomicAdd(sh + d + c + 1, ab[k].y);
            atomicAdd(sh + d + c + 2, ab[k].z), atomicAdd(sh + d + c + 3, ab[k].w);
        }
    }
    __syncthreads();
    for (int64_t i = threadIdx.y * 32 + lane; i < d; i += 32 * ROWS_PER_BLOCK) {
        atomicAdd(dw + i, sh[i]);
        if (layer) atomicAdd(db + i, sh[d + i]);
    }
}

/* NV = d / 128 when the row-in-registers kernels apply to these rows, else 0 */
static int vec_nv(int64_t d, const void *const *ptrs, int n) {
    if (d % 128 != 0 || d / 128 > NV_MAX) return 0;
    for (int i = 0; i < n; i++)
        if (ptrs[i] && (uintptr_t)ptrs[i] % 16 != 0) return 0;
    return (int)(d / 128);
}

#define NV_DISPATCH(nv, KERNEL, ...) NV_DISPATCH_T(nv, KERNEL, float, __VA_ARGS__)
/* T: the kernel's second template argument (the type of h / dy) */
#define NV_DISPATCH_T(nv, KERNEL, T, ...)                                                          \
    switch (nv) {                                                                                  \
    case 1:                                                                                        \
        KERNEL<1, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
    case 2:                                                                                        \
        KERNEL<2, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
    case 3:                                                                                        \
        KERNEL<3, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
    case 4:                                                                                        \
        KERNEL<4, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
    case 5:                                                                                        \
        KERNEL<5, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
    case 6:                                                                                        \
        KERNEL<6, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
    case 7:                                                                                        \
        KERNEL<7, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
    default:                                                                                       \
        KERNEL<8, T> __VA_ARGS__;                                                                  \
        break;                                                                                     \
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
    const unsigned grid = (unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
    const void *ptrs[] = {resid_out, y, h, resid_in, w, b};
    const int nv = yb && (uintptr_t)yb % 8 != 0 ? 0 : vec_nv(d, ptrs, 6);
    if (nv)
        NV_DISPATCH(
            nv, norm_forward_vec_kernel,
            <<<grid, dim3(32, ROWS_PER_BLOCK), 0, (cudaStream_t)stream>>>(
                resid_out, y, (__nv_bfloat16 *)yb, mean, rstd, h, resid_in, w, b, rows, eps))
    else
        norm_forward_kernel<<<grid, dim3(32, ROWS_PER_BLOCK), 0, (cudaStream_t)stream>>>(
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

/* The backward's launch: ~2 blocks of 8 warps per multiprocessor, each walking rows / (grid *
 * 8) rows; rows in registers (REG) at d <= 1024 unless MB_CUDA_NORM_BWD_REG=0 (or =4: only up
 * to d 512). H200: medium's norm backward (d 512, docs/benchmarks.md, session 25); at d 1024
 * (353m; 254 registers, one block per multiprocessor, no spills) 0.291 against 0.347 ms for
 * 65,536 rows, 92% of a copy's rate against 77% (session 27). */
template <typename GT>
static void norm_backward_launch(int nv, float *dr, uint16_t *drb, float *dw, float *db,
                                 const GT *dy, const float *r, const float *mean, const float *rstd,
                                 const float *w, int64_t rows, int accumulate, cudaStream_t st) {
    const char *e = getenv("MB_CUDA_NORM_BWD_REG"); /* (read per call: tests set it) */
    const int reg = !(e && !strcmp(e, "0"));
    const int reg_max = e && !strcmp(e, "4") ? 4 : 8; /* "4": only up to d 512, as before */
    const int64_t want = 2 * (int64_t)mb_cuda_sm_count();
    const int64_t need = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
    const unsigned grid = (unsigned)(need < want ? need : want);
    const size_t shm = (size_t)(2 * 128 * nv) * sizeof(float);
    const dim3 blk(32, ROWS_PER_BLOCK);
    __nv_bfloat16 *hb = (__nv_bfloat16 *)drb;
#define NBR(N)                                                                                     \
    norm_backward_vec_kernel<N, GT, true>                                                          \
        <<<grid, blk, shm, st>>>(dr, hb, dw, db, dy, r, mean, rstd, w, rows, accumulate)
    if (reg && nv <= reg_max) {
        if (nv == 1)
            NBR(1);
        else if (nv == 2)
            NBR(2);
        else if (nv == 3)
            NBR(3);
        else if (nv == 4)
            NBR(4);
        else if (nv == 5)
            NBR(5);
        else if (nv == 6)
            NBR(6);
        else if (nv == 7)
            NBR(7);
        else
            NBR(8);
    } else {
        NV_DISPATCH_T(
            nv, norm_backward_vec_kernel, GT,
            <<<grid, blk, shm, st>>>(dr, hb, dw, db, dy, r, mean, rstd, w, rows, accumulate))
    }
#undef NBR
}

extern "C" int mb_norm_cuda_backward_ex(float *dr, uint16_t *drb, float *dw, float *db,
                                        const float *dy, const float *r, const float *mean,
                                        const float *rstd, const float *w, int64_t rows, int64_t d,
                                        int accumulate, void *stream) {
    MB_TRY(sizes_ok("mb_norm_cuda_backward", rows, d));
    if (rows == 0) return MB_OK;
    cudaStream_t st = (cudaStream_t)stream;
    const void *ptrs[] = {dr, dy, r, w};
    const int nv = drb && (uintptr_t)drb % 8 != 0 ? 0 : vec_nv(d, ptrs, 4);
    if (nv) {
        norm_backward_launch<float>(nv, dr, drb, dw, db, dy, r, mean, rstd, w, rows, accumulate,
                                    st);
        MB_CUDA_LAUNCHED("mb_norm_cuda_backward");
        return MB_OK;
    }
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

/* ---- bf16 h / dy (mixed-precision training; norm_cuda.h) */

extern "C" int mb_norm_cuda_bf16in_supported(int64_t d) {
    return d > 0 && d % 128 == 0 && d / 128 <= NV_MAX;
}

extern "C" int mb_norm_cuda_forward_bf16in(float *resid_out, uint16_t *yb, float *mean, float *rstd,
                                           const uint16_t *h, const float *resid_in, const float *w,
                                           const float *b, int64_t rows, int64_t d, float eps,
                                           void *stream) {
    static const char fn[] = "mb_norm_cuda_forward_bf16in";
    MB_TRY(sizes_ok(fn, rows, d));
    const void *ptrs[] = {resid_out, resid_in, w, b};
    if (!resid_out || !yb || !rstd || !h || !w || (b && !mean))
        return mb_fail(MB_EINVAL, "%s: NULL argument", fn);
    const int nv =
        mb_norm_cuda_bf16in_supported(d) && (uintptr_t)h % 8 == 0 && (uintptr_t)yb % 8 == 0
            ? vec_nv(d, ptrs, 4)
            : 0;
    if (!nv)
        return mb_fail(MB_EINVAL,
                       "%s: d_model %lld must be a multiple of 128 up to %d, h and yb 8-byte and "
                       "the fp32 tensors 16-byte aligned",
                       fn, (long long)d, 128 * NV_MAX);
    if (rows == 0) return MB_OK;
    const unsigned grid = (unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
    NV_DISPATCH_T(nv, norm_forward_vec_kernel, __nv_bfloat16,
                  <<<grid, dim3(32, ROWS_PER_BLOCK), 0, (cudaStream_t)stream>>>(
                      resid_out, NULL, (__nv_bfloat16 *)yb, mean, rstd, (const __nv_bfloat16 *)h,
                      resid_in, w, b, rows, eps))
    MB_CUDA_LAUNCHED(fn);
    return MB_OK;
}

extern "C" int mb_norm_cuda_backward_bf16in(float *dr, uint16_t *drb, float *dw, float *db,
                                            const uint16_t *dy, const float *r, const float *mean,
                                            const float *rstd, const float *w, int64_t rows,
                                            int64_t d, int accumulate, void *stream) {
    static const char fn[] = "mb_norm_cuda_backward_bf16in";
    MB_TRY(sizes_ok(fn, rows, d));
    if (!dr || !dw || !dy || !r || !rstd || !w || (db && !mean))
        return mb_fail(MB_EINVAL, "%s: NULL argument", fn);
    const void *ptrs[] = {dr, r, w};
    const int nv = mb_norm_cuda_bf16in_supported(d) && (uintptr_t)dy % 8 == 0 &&
                           (!drb || (uintptr_t)drb % 8 == 0)
                       ? vec_nv(d, ptrs, 3)
                       : 0;
    if (!nv)
        return mb_fail(MB_EINVAL,
                       "%s: d_model %lld must be a multiple of 128 up to %d, dy and drb 8-byte and "
                       "the fp32 tensors 16-byte aligned",
                       fn, (long long)d, 128 * NV_MAX);
    if (rows == 0) return MB_OK;
    norm_backward_launch<__nv_bfloat16>(nv, dr, drb, dw, db, (const __nv_bfloat16 *)dy, r, mean,
                                        rstd, w, rows, accumulate, (cudaStream_t)stream);
    MB_CUDA_LAUNCHED(fn);
    return MB_OK;
}
