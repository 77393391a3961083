/* The dt projection with bias and softplus fused into its output (dt_proj_cuda.h).
 *
 * One block = 128 rows (positions) x 128 output channels, 8 warps as 2 x 4, each warp 64 x 32
 * of the output in m16n8k16 bf16 tensor-core products (mma.sync, fp32 accumulators), 16 rows at
 * a time (finished and stored before the next: few registers, several blocks per SM). K (dt_rank)
 * is at most 128, so both operand tiles (128 x K bf16 each) are copied into shared memory once
 * with 16-byte loads and the block needs a single barrier; rows are padded by 8 elements (16
 * bytes), which puts the 8 rows of a fragment load in 8 different 4-bank groups. The epilogue
 * adds the bias, applies the scan's softplus and stores float2 pairs (each row's 8 pairs of a
 * warp store fill one 32-byte sector). The pass is bound by its 4-byte output per element. */
#include "cuda/dt_proj_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/cuda_check.h"
#include "cuda/fast_math_cuda.h"

#define DP_BM 128
#define DP_BN 128
#define DP_KMAX 128
#define DP_THREADS 256

static __device__ __forceinline__ uint32_t lds32(const uint16_t *p) {
    return *(const uint32_t *)p;
}

static __device__ __forceinline__ void dp_mma(float *c, const uint32_t *a, uint32_t b0,
                                              uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Copy `n` rows of K bf16 from src (row stride ld elements) into the padded shared tile (row
 * stride K + 8); rows past n are zeros. V16: 16-byte pieces (src rows 16-byte aligned), else
 * one element at a time (dt_proj's weight inside the parameter buffer may sit at any even
 * byte offset; its tile is small). */
template <bool V16>
static __device__ __forceinline__ void dp_stage(uint16_t *dst, const uint16_t *src, long long ld,
                                                int n, int K) {
    if (V16) {
        const int per = K / 8; /* 16-byte pieces per row */
        for (int i = threadIdx.x; i < DP_BM * per; i += DP_THREADS) {
            const int r = i / per, k = (i - r * per) * 8;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (r < n) v = __ldg((const uint4 *)(src + (long long)r * ld + k));
            *(uint4 *)(dst + r * (K + 8) + k) = v;
        }
    } else {
        for (int i = threadIdx.x; i < DP_BM * K; i += DP_THREADS) {
            const int r = i / K, k = i - r * K;
            dst[r * (K + 8) + k] = r < n ? __ldg(src + (long long)r * ld + k) : (uint16_t)0;
        }
    }
}

/* 5 blocks per multiprocessor (48 registers): H200, medium's shape, 0.470 ms at 3 blocks (77
 * registers), 0.431 at 4, 0.416 at 5; cuBLASLt's product alone 0.32 */
template <bool W16, bool O16>
__global__ void __launch_bounds__(DP_THREADS, 5)
    dt_proj_softplus_kernel(float *__restrict__ delta, uint16_t *__restrict__ delta16,
                            const uint16_t *__restrict__ x, long long ldx,
                            const uint16_t *__restrict__ w, const float *__restrict__ bias,
                            long long rows, int K, int Di) {
    extern __shared__ uint4 dp_smem[];
    uint16_t *As = (uint16_t *)dp_smem, *Ws = As + DP_BM * (K + 8);
    const long long row0 = (long long)blockIdx.x * DP_BM;
    const int n0 = blockIdx.y * DP_BN;
    dp_stage<true>(As, x + row0 * ldx, ldx, (int)min((long long)DP_BM, rows - row0), K);
    dp_stage<W16>(Ws, w + (long long)n0 * K, K, min(DP_BN, Di - n0), K);
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3, wm = warp >> 2, wn = warp & 3;
    const int LD = K + 8;
    const bool pairs = (Di & 1) == 0;
    float bv[4][2];
#pragma unroll
    for (int ni = 0; ni < 4; ni++) {
        const int c = n0 + wn * 32 + ni * 8 + 2 * t;
        bv[ni][0] = c < Di ? bias[c] : 0.0f;
        bv[ni][1] = c + 1 < Di ? bias[c + 1] : 0.0f;
    }
    /* one 16-row slice of the warp's 64 at a time, stored before the next: 16 accumulators per
     * thread instead of 64, so that more blocks share a multiprocessor */
#pragma unroll 1
    for (int mi = 0; mi < 4; mi++) {
        float acc[4][4]; /* the products summed onto the bias */
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[ni][e] = bv[ni][e & 1];
        const uint16_t *pa = As + (wm * 64 + mi * 16 + g) * LD + 2 * t;
        const uint16_t *pb = Ws + (wn * 32 + g) * LD + 2 * t;
        for (int k0 = 0; k0 < K; k0 += 16) {
            const uint32_t a[4] = {lds32(pa + k0), lds32(pa + 8 * LD + k0), lds32(pa + k0 + 8),
                                   lds32(pa + 8 * LD + k0 + 8)};
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
                dp_mma(acc[ni], a, lds32(pb + ni * 8 * LD + k0), lds32(pb + ni * 8 * LD + k0 + 8));
        }
        /* c0, c1 at (row g, cols 2t, 2t + 1), c2, c3 at (row g + 8, the same cols) */
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const long long r = row0 + wm * 64 + mi * 16 + g + 8 * h;
            if (r >= rows) continue;
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int c = n0 + wn * 32 + ni * 8 + 2 * t;
                if (c >= Di) continue;
                const float v0 = dt_softplus_f(acc[ni][2 * h]);
                const float v1 = dt_softplus_f(acc[ni][2 * h + 1]);
                if (O16) { /* (round to nearest even, as __float2bfloat16_rn) */
                    uint16_t *d16 = delta16 + r * Di + c;
                    const __nv_bfloat162 b2 = __floats2bfloat162_rn(v0, v1);
                    if (pairs) {
                        *(__nv_bfloat162 *)d16 = b2;
                    } else {
                        *(__nv_bfloat16 *)d16 = b2.x;
                        if (c + 1 < Di) *(__nv_bfloat16 *)(d16 + 1) = b2.y;
                    }
                    continue;
                }
                float *dst = delta + r * Di + c;
                if (pairs) {
                    *(float2 *)dst = make_float2(v0, v1);
                } else {
                    dst[0] = v0;
                    if (c + 1 < Di) dst[1] = v1;
                }
            }
        }
    }
}

extern "C" int mb_dt_proj_softplus_supported(int64_t R, int64_t ldx) {
    return R >= 16 && R <= DP_KMAX && R % 16 == 0 && ldx >= R && ldx % 8 == 0;
}

extern "C" int mb_dt_proj_softplus_cuda(float *delta, const uint16_t *x, int64_t ldx,
                                        const uint16_t *w, const float *bias, int64_t rows,
                                        int64_t R, int64_t Di, void *stream) {
    return mb_dt_proj_softplus_cuda_ex(delta, NULL, x, ldx, w, bias, rows, R, Di, stream);
}

#define DP_KERNEL(W, O)                                                                            \
    dt_proj_softplus_kernel<W, O><<<grid, DP_THREADS, smem, (cudaStream_t)stream>>>(               \
        delta, delta_bf16, x, (long long)ldx, w, bias, (long long)rows, (int)R, (int)Di)

extern "C" int mb_dt_proj_softplus_cuda_ex(float *delta, uint16_t *delta_bf16, const uint16_t *x,
                                           int64_t ldx, const uint16_t *w, const float *bias,
                                           int64_t rows, int64_t R, int64_t Di, void *stream) {
    if (!mb_dt_proj_softplus_supported(R, ldx) || rows < 0 || Di <= 0 || Di >= (1LL << 31))
        return mb_fail(MB_EINVAL,
                       "mb_dt_proj_softplus_cuda: unsupported shape (dt_rank %lld, row stride "
                       "%lld, d_inner %lld): dt_rank must be a multiple of 16 up to 128",
                       (long long)R, (long long)ldx, (long long)Di);
    if (delta_bf16) delta = NULL; /* one output: the bf16 one where given */
    if ((!delta && !delta_bf16) || !x || !w || !bias)
        return mb_fail(MB_EINVAL, "mb_dt_proj_softplus_cuda: NULL pointer");
    const uintptr_t da = delta ? (uintptr_t)delta : 2 * (uintptr_t)delta_bf16; /* fp32 units */
    if ((uintptr_t)x % 16 || (uintptr_t)w % 2 || da % 4 || ((Di & 1) == 0 && da % 8))
        return mb_fail(MB_EINVAL, "mb_dt_proj_softplus_cuda: x must be 16-byte aligned (and w "
                                  "and delta at their element size, delta pairs at 8 bytes)");
    if (rows == 0) return MB_OK;
    const int smem = 2 * DP_BM * ((int)R + 8) * (int)sizeof(uint16_t);
    const int smax = 2 * DP_BM * (DP_KMAX + 8) * (int)sizeof(uint16_t);
    static int attr_set = 0;
    if (!attr_set) {
        const void *k[4] = {(const void *)dt_proj_softplus_kernel<true, false>,
                            (const void *)dt_proj_softplus_kernel<false, false>,
                            (const void *)dt_proj_softplus_kernel<true, true>,
                            (const void *)dt_proj_softplus_kernel<false, true>};
        for (int i = 0; i < 4; i++)
            MB_CUDA_TRY(
                cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize, smax),
                "mb_dt_proj_softplus_cuda: shared memory");
        attr_set = 1;
    }
    const long long gx = (rows + DP_BM - 1) / DP_BM, gy = (Di + DP_BN - 1) / DP_BN;
    if (gx > 2147483647LL || gy > 65535)
        return mb_fail(MB_EINVAL,
                       "mb_dt_proj_softplus_cuda: %lld rows x %lld channels are too many",
                       (long long)rows, (long long)Di);
    const dim3 grid((unsigned)gx, (unsigned)gy); /* rows in x: up to 2^31 - 1 blocks */
    const bool w16 = (uintptr_t)w % 16 == 0;
    if (delta_bf16) {
        if (w16)
            DP_KERNEL(true, true);
        else
            DP_KERNEL(false, true);
    } else {
        if (w16)
            DP_KERNEL(true, false);
        else
            DP_KERNEL(false, false);
    }
    MB_CUDA_LAUNCHED("mb_dt_proj_softplus_cuda");
    return MB_OK;
}
