/* Persistent recurrent step for batch 1..4 (see decode_persist.h): one kernel per step, one
 * block per multiprocessor, 1 grid barrier per layer at batch 1 and 2 (y and hidden as LL
 * words), 3 above, weights streamed into shared memory one phase ahead (bulk copies issued by a
 * producer warp, or cp.async). Arithmetic follows
 * src/infer/step.c (mb_step): norm statistics in double, conv taps oldest first, softplus threshold
 * 20, exp(dt*A) state decay, D skip, SiLU(z) gate, the exps by one-instruction approximations
 * (fast_math_cuda.h, as the batched step); dot products are split over lanes (summation order
 * differs from the CPU's). */
#ifndef MBP_EMU /* MBP_EMU: compiled as host C++ by a CPU emulator (fibers per thread) */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_check.h"
#endif
#include "cuda/decode_persist.h"
#ifdef MBP_EMU /* fast_math_cuda.h's approximations as the host functions */
#define MB_SCAN_EMU 1
#endif
#include "cuda/fast_math_cuda.h"

typedef __nv_bfloat16 bf16;

#define PT MBP_THREADS
#define MBP_KMAX 8         /* d_conv up to which the conv taps are held in registers */
#define MBP_FOLD_MAXR 4.0f /* |mean| / spread up to which the folded rows run on r itself */
#define NWARP (PT / 32)
#define FX_ONE 4294967296.0f                /* 2^32: 32.32 fixed point */
#define FX_INV 2.3283064365386962890625e-10 /* 2^-32 */

/* ------------------------------------------------------------------------------ helpers */
/* sum over the aligned group of g lanes (g a power of 2, <= 32) holding v; every lane of the
 * group gets it (all 32 lanes must call) */
__device__ __forceinline__ float p_group_sum(float v, int g) {
#pragma unroll
    for (int o = g >> 1; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float p_warp_sum(float v) {
    return p_group_sum(v, 32);
}
__device__ __forceinline__ double p_warp_sumd(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
/* SiLU, softplus (threshold 20) and exp by the one-instruction approximations the batched step
 * and the scan use (fast_math_cuda.h), not the accurate expf / log1pf / division: on the H200
 * with the fill calls below, 972m batch 1 bf16 0.983-0.989 -> 0.964-0.968 ms/step, 353m
 * 0.625-0.642 -> 0.617-0.629 (three device calls, session 30) */
__device__ __forceinline__ float p_silu(float v) {
    return silu_fast(v);
}
__device__ __forceinline__ float p_softplus(float v) {
    return dt_softplus_f(v);
}
__device__ __forceinline__ float p_exp(float v) {
    return ex2(v * LOG2E);
}
__device__ __forceinline__ unsigned long long fx_q(float v) {
    return (unsigned long long)__float2ll_rn(v * FX_ONE);
}
__device__ __forceinline__ float fx_f(unsigned long long q) {
    return (float)((double)(long long)q * FX_INV);
}

#ifndef MBP_EMU
__device__ __forceinline__ unsigned long long gtimer();
#endif
/* The spin waits' guard (mbarrier, grid barrier, LL words): tick() once a poll; every `every`
 * polls it reads the globaltimer and traps once the wait has lasted 10 s (a lost copy, a block
 * that is not co-resident), a launch failure instead of a hang. */
struct spin_timeout {
    unsigned long long t0 = 0;
    int it = 0;
    __device__ __forceinline__ void tick(int every) {
        if (++it < every) return;
        it = 0;
        const unsigned long long now = gtimer();
        if (!t0)
            t0 = now;
        else if (now - t0 > 10000000000ull)
            __trap();
    }
};

#ifndef MBP_EMU
/* cp.async: 16-byte (L2 only) and 4-byte copies global -> shared, groups */
__device__ __forceinline__ void cp16(void *dst, const void *src) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void cp4(void *dst, const void *src) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
/* bulk copies (sm_90 TMA engine, one instruction per contiguous segment) completing on an
 * mbarrier that counts their bytes */
__device__ __forceinline__ unsigned smem_u32(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void mbar_init(unsigned long long *m, unsigned count = 1u) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(m)), "r"(count)
                 : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_tx(unsigned long long *m, unsigned tx) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(m)),
                 "r"(tx)
                 : "memory");
}
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, unsigned bytes,
                                         unsigned long long *m) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                 "%2, [%3];\n" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(m))
                 : "memory");
}
/* plain arrival (the ring's empty barriers: a consumer is done with the slot) */
__device__ __forceinline__ void mbar_arrive(unsigned long long *m) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(m)) : "memory");
}
/* true once the phase of the given parity has completed (non-blocking) */
__device__ __forceinline__ bool mbar_test(unsigned long long *m, unsigned parity) {
    unsigned ok = 0;
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                 "selp.b32 %0, 1, 0, p;\n\t}\n"
                 : "=r"(ok)
                 : "r"(smem_u32(m)), "r"(parity)
                 : "memory");
    return ok != 0;
}
__device__ __forceinline__ void mbar_wait(unsigned long long *m, unsigned parity) {
    unsigned ok = 0;
    spin_timeout guard;
    for (;;) {
        asm volatile(
            "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
            "selp.b32 %0, 1, 0, p;\n\t}\n"
            : "=r"(ok)
            : "r"(smem_u32(m)), "r"(parity)
            : "memory");
        if (ok) break;
        guard.tick(256); /* a lost bulk copy */
    }
}
#endif
/* Copy bytes (a multiple of 4) from src to dst (shared) with all threads of the block. */
__device__ __forceinline__ void cp_seg(unsigned char *dst, const void *src, int64_t bytes) {
    if (bytes <= 0) return;
    const unsigned char *s = (const unsigned char *)src;
    if ((((uintptr_t)s | (uintptr_t)dst | (uintptr_t)bytes) & 15) == 0) {
        for (int64_t i = threadIdx.x; i < bytes / 16; i += PT)
            cp16(dst + 16 * i, s + 16 * i);
    } else {
        for (int64_t i = threadIdx.x; i < bytes / 4; i += PT)
            cp4(dst + 4 * i, s + 4 * i);
    }
}

#ifndef MBP_EMU
/* grid barrier: flag per block, the count of barriers it passed (wrapping compare) */
__device__ __forceinline__ unsigned ld_acq(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
/* fire-and-forget add at L2 (no returned value to wait for) */
__device__ __forceinline__ void red_add_u64(unsigned long long *p, unsigned long long v) {
    asm volatile("red.relaxed.gpu.global.add.u64 [%0], %1;\n" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ void st_rel(unsigned *p, unsigned v) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ unsigned long long gtimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#endif
/* Block-level syncs of the PT compute threads (named barrier 1), so that the producer warp
 * (threads PT..PT+31, launched with a.producer) takes no part in them; with PT threads launched
 * it is __syncthreads. Named barriers 2 and 3 hand buffer A / B to the producer: the compute
 * threads arrive (not waiting) once the buffer is free, the producer warp waits there. */
__device__ __forceinline__ void csync() {
#ifndef MBP_EMU
    asm volatile("bar.sync 1, %0;\n" ::"n"(PT) : "memory");
#else
    emu_bar_sync(1, PT);
#endif
}
#ifndef MBP_EMU
__device__ __forceinline__ void nbar_arrive(int id) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "n"(PT + 32) : "memory");
}
__device__ __forceinline__ void nbar_sync(int id) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(PT + 32) : "memory");
}
#else
__device__ __forceinline__ void nbar_arrive(int id) {
    emu_bar_arrive(id, PT + 32);
}
__device__ __forceinline__ void nbar_sync(int id) {
    emu_bar_sync(id, PT + 32);
}
#endif
/* arrive: every thread's writes and atomics of the phase are before the flag store */
__device__ __forceinline__ void bar_arrive(unsigned *flags, unsigned target, bool light) {
    csync();
    if (threadIdx.x == 0) {
        if (!light) __threadfence(); /* light: the release store alone (CUTLASS's barrier) */
        st_rel(flags + blockIdx.x, target);
    }
}
__device__ __forceinline__ void bar_wait(const unsigned *flags, unsigned target) {
    for (int i = threadIdx.x; i < (int)gridDim.x; i += PT) {
        spin_timeout guard;
        while ((int)(ld_acq(flags + i) - target) < 0)
            guard.tick(1024); /* a block not co-resident */
    }
    csync();
}

/* LL words (NCCL's low-latency protocol): a float and the epoch it belongs to in one 8-byte
 * word, stored and loaded whole (single-copy atomic at gpu scope), so that a reader knows the
 * value has arrived by its epoch and no barrier (and no fence draining this block's other
 * stores and copies) is needed. The epoch is the step count + 1: a slot (one per layer) holds the
 * previous step's epoch until its writer stores this step's. */
__host__ __device__ __forceinline__ unsigned f2u(float v) {
    unsigned u;
    memcpy(&u, &v, 4);
    return u;
}
__host__ __device__ __forceinline__ float u2f(unsigned u) {
    float v;
    memcpy(&v, &u, 4);
    return v;
}
#ifndef MBP_EMU
__device__ __forceinline__ void ll_store(unsigned long long *p, float v, unsigned epoch) {
    const unsigned long long w = ((unsigned long long)epoch << 32) | f2u(v);
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;\n" ::"l"(p), "l"(w) : "memory");
}
__device__ __forceinline__ unsigned long long ll_load(const unsigned long long *p) {
    unsigned long long w;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];\n" : "=l"(w) : "l"(p) : "memory");
    return w;
}
#endif
/* dst[i] = the value of LL word src[i] for i < n (compute threads), each once its epoch is ep:
 * LL_U loads per thread in flight, then the late ones polled until they come. Where one round
 * covers n (n <= LL_ALL_MAX: y and hidden at batch 1, hidden at batch 2 of the 353m / 972m
 * shapes) every late word is re-read each round; above, the first late word is polled alone and,
 * once it has come, every other late one re-read at once (a fraction of the L2 traffic). H200,
 * ms/step: 353m batch 1 0.744 -> 0.731, 972m 1.131 -> 1.124 with re-reading all; batch 2 1.008
 * -> 1.025 with both reads re-reading all. (Polling each late word alone in turn, one L2 round
 * trip per word, cost ~6k of a 353m layer's ~29k cycles.) Traps after 10 s (a writer that is
 * not co-resident). */
#define LL_U 8
#ifdef MBP_EMU
static int g_ll_all_max = LL_U * PT; /* the emulator runs both ways */
#define LL_ALL_MAX g_ll_all_max
#else
#define LL_ALL_MAX (LL_U * PT)
#endif
__device__ __noinline__ void ll_read(float *dst, const unsigned long long *src, int n,
                                     unsigned ep) {
    for (int i0 = threadIdx.x; i0 < n; i0 += LL_U * PT) {
        unsigned long long w[LL_U];
        unsigned pend = 0;
#pragma unroll
        for (int q = 0; q < LL_U; q++) {
            const int i = i0 + q * PT;
            w[q] = i < n ? ll_load(src + i) : 0ull;
        }
#pragma unroll
        for (int q = 0; q < LL_U; q++)
            if (i0 + q * PT < n && (unsigned)(w[q] >> 32) != ep) pend |= 1u << q;
        spin_timeout guard;
        const bool all = n <= LL_ALL_MAX;
        while (pend) {
            bool reread = all;
            if (!all) { /* the first late word alone */
                const int q = __ffs((int)pend) - 1;
                const unsigned long long v = ll_load(src + i0 + q * PT);
                if ((unsigned)(v >> 32) == ep) {
                    pend &= ~(1u << q);
#pragma unroll
                    for (int k = 0; k < LL_U; k++)
                        if (k == q) w[k] = v; /* (register array: constant indices only) */
                    reread = true;
                }
            }
            if (reread) { /* every (other) late word */
#pragma unroll
                for (int k = 0; k < LL_U; k++)
                    if ((pend >> k) & 1u) w[k] = ll_load(src + i0 + k * PT);
#pragma unroll
                for (int k = 0; k < LL_U; k++)
                    if (((pend >> k) & 1u) && (unsigned)(w[k] >> 32) == ep) pend &= ~(1u << k);
            }
            guard.tick(256); /* a writer not co-resident */
        }
#pragma unroll
        for (int q = 0; q < LL_U; q++)
            if (i0 + q * PT < n) dst[i0 + q * PT] = u2f((unsigned)w[q]);
    }
}

/* dst[i] = src[i] for i < n (compute threads; src in global memory written by other blocks
 * before a grid barrier: read from L2), 16-byte loads when both are aligned. Not inlined, as
 * ll_read: keeps their registers out of the kernel's phases (ptxas: 36-52 bytes of spills
 * against 52-84 inlined; with 4 loads per thread in flight here, 130-320). */
__device__ __noinline__ void load_l2(float *dst, const float *src, int n) {
    if ((((uintptr_t)dst | (uintptr_t)src | (uintptr_t)n * 4) & 15) == 0)
        for (int i = threadIdx.x; i < n / 4; i += PT)
            ((float4 *)dst)[i] = __ldcg((const float4 *)src + i);
    else
        for (int i = threadIdx.x; i < n; i += PT)
            dst[i] = __ldcg(src + i);
}

/* weights as floats (generic address: shared or global) */
__device__ __forceinline__ float ld1(const float *p) {
    return *p;
}
__device__ __forceinline__ float ld1(const bf16 *p) {
    return __bfloat162float(*p);
}

/* acc[s] = row . u[s] (n weights; u (S, ld) shared, fp32, the first n of each row) summed over
 * the warp; every lane gets it. The
 * row's loads of a pass (CH chunks of 256 elements) are all issued before its products, so that
 * a row read from global memory costs about one memory latency per pass. */
template <typename WT> struct Raw8; /* 8 raw weights */
template <> struct Raw8<float> {
    float4 a, b;
    __device__ __forceinline__ void load(const float *p) {
        a = *(const float4 *)p, b = *((const float4 *)p + 1);
    }
    __device__ __forceinline__ void get(float *w) const {
        w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z,
        w[7] = b.w;
    }
};
template <> struct Raw8<bf16> {
    uint4 v;
    __device__ __forceinline__ void load(const bf16 *p) {
        v = *(const uint4 *)p;
    }
    __device__ __forceinline__ void get(float *w) const {
        __nv_bfloat162 h[4]; /* memcpy, not a pointer cast: no aliasing of v (registers) */
        memcpy(h, &v, sizeof h);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = __bfloat1622float2(h[i]);
            w[2 * i] = f.x, w[2 * i + 1] = f.y;
        }
    }
};

template <typename WT, int S>
__device__ __forceinline__ void dot_row(const WT *row, const float *u, int d, int ld, float *acc) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int s = 0; s < S; s++)
        acc[s] = 0.0f;
    if ((d & 7) == 0) { /* (then ld and the offsets of u are multiples of 8 too) */
        constexpr int CH = sizeof(WT) == 2 ? 8 : 4;
        for (int k0 = lane * 8; k0 < d; k0 += CH * 256) {
            Raw8<WT> raw[CH];
#pragma unroll
            for (int c = 0; c < CH; c++)
                if (k0 + c * 256 < d) raw[c].load(row + k0 + c * 256);
#pragma unroll
            for (int c = 0; c < CH; c++) {
                const int k = k0 + c * 256;
                if (k < d) {
                    float w[8];
                    raw[c].get(w);
#pragma unroll
                    for (int s = 0; s < S; s++) {
                        const float4 a = *(const float4 *)(u + s * ld + k);
                        const float4 b = *(const float4 *)(u + s * ld + k + 4);
                        acc[s] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x +
                                  w[5] * b.y + w[6] * b.z + w[7] * b.w;
                    }
                }
            }
        }
    } else {
        for (int k = lane; k < d; k += 32) {
            const float w = ld1(row + k);
#pragma unroll
            for (int s = 0; s < S; s++)
                acc[s] += w * u[s * ld + k];
        }
    }
#pragma unroll
    for (int s = 0; s < S; s++)
        acc[s] = p_warp_sum(acc[s]);
}

/* Block b's share [*lo, *lo + *len) of n items split over nb blocks. */
__host__ __device__ __forceinline__ void block_range(int b, int nb, int n, int *lo, int *len) {
    *lo = (int)((int64_t)b * n / nb);
    *len = (int)((int64_t)(b + 1) * n / nb) - *lo;
}
/* What block b of nb owns: channels [c0, c0 + CB), lm_head rows [v0, v0 + VB), out_proj rows
 * [o0, o0 + OB). */
struct mbp_blk {
    int c0, CB, v0, VB, o0, OB, b;
};
__host__ __device__ __forceinline__ mbp_blk block_share(const mbp_args &a, int b, int nb) {
    mbp_blk k;
    k.b = b;
    block_range(b, nb, a.Di, &k.c0, &k.CB);
    block_range(b, nb, a.V, &k.v0, &k.VB);
    block_range(b, nb, a.d, &k.o0, &k.OB);
    return k;
}

/* Segments of one buffer fill, op(dst offset in shared memory, src, bytes) for each (lt: the
 * layer table, k: the block's share): buffer 0 (A) of layer l: norm weights, conv weights,
 * x_proj^T rows, in_proj rows x then z (up to capA); l == n_layer: norm_f, lm_head rows. Buffer 1
 * (B): dt_proj rows, A, this block's SSM states, out_proj rows (up to capB). (dt bias and D,
 * and without a.win the conv bias and windows, whose slices are not 16-byte aligned, are read
 * from global memory in the phases.) Also run on the host by mbp_all_aligned. */
#ifndef MBP_EMU
#pragma nv_exec_check_disable
#endif
template <typename Op>
__host__ __device__ __forceinline__ void for_segs(const mbp_args *ap, const mbp_layer *lt,
                                                  int which, int l, const mbp_blk &k, Op &&op) {
    const mbp_args &a = *ap;
    const int d = a.d, Di = a.Di, N = a.N, K = a.K, R = a.R, W = R + 2 * N, S = a.S;
    const int nl = a.n_layer, CBm = a.CBmax, c0 = k.c0, CB = k.CB;
    const int64_t ws = a.bf16 ? 2 : 4, rb = (int64_t)d * ws, rbo = (int64_t)Di * ws; /* row bytes */
    if (which == 0) {
        if (l < nl) {
            const mbp_layer *L = lt + l;
            if (mbp_folded(&a, l)) { /* the block's fold floats in place of the norm weights */
                op(a.off_nw, L->fold + (int64_t)k.b * 4 * CBm, (int64_t)CBm * 16);
            } else {
                op(a.off_nw, L->norm_w, (int64_t)d * 4);
                if (!a.rms) op(a.off_nb, L->norm_b, (int64_t)d * 4);
            }
            op(a.off_cw, L->conv_w + (int64_t)c0 * K, (int64_t)CB * K * 4);
            op(a.off_xw, L->xwT + (int64_t)c0 * W, (int64_t)CB * W * 4);
            const int nx = CB < a.capA ? CB : a.capA, nz = CB < a.capA - CB ? CB : a.capA - CB;
            const unsigned char *in = (const unsigned char *)L->in;
            op(a.off_rowsA, in + (int64_t)c0 * rb, nx * rb);
            if (nz > 0) op(a.off_rowsA + CB * rb, in + (int64_t)(Di + c0) * rb, nz * rb);
        } else {
            op(a.off_nw, a.normf_w, (int64_t)d * 4);
            if (!a.rms) op(a.off_nb, a.normf_b, (int64_t)d * 4);
            op(a.off_rowsA, (const unsigned char *)a.lm + (int64_t)k.v0 * rb,
               (k.VB < a.capA ? k.VB : a.capA) * rb);
        }
    } else if (l < nl) {
        const mbp_layer *L = lt + l;
        op(a.off_dw, L->dt_w + (int64_t)c0 * R, (int64_t)CB * R * 4);
        op(a.off_A, L->A + (int64_t)c0 * N, (int64_t)CB * N * 4);
        for (int s = 0; s < S; s++)
            op(a.off_ss + (int64_t)s * CBm * N * 4, a.ssm + (((int64_t)l * S + s) * Di + c0) * N,
               (int64_t)CB * N * 4);
        op(a.off_rowsB, (const unsigned char *)L->out + (int64_t)k.o0 * rbo,
           (k.OB < a.capB ? k.OB : a.capB) * rbo);
    }
}

/* a segment for a bulk copy: 16-byte aligned shared offset (the base is), source and size */
__host__ __device__ __forceinline__ bool ok16(int64_t off, const void *src, int64_t bytes) {
    return bytes > 0 && (((uint64_t)off | (uintptr_t)src | (uint64_t)bytes) & 15) == 0;
}

int mbp_all_aligned(const mbp_args *a, const mbp_layer *layers) {
    int ok = 1;
    for (int b = 0; b < a->nb && ok; b++) {
        const mbp_blk k = block_share(*a, b, a->nb);
        for (int l = 0; l <= a->n_layer && ok; l++)
            for (int which = 0; which < 2; which++)
                for_segs(a, layers, which, l, k, [&](int64_t off, const void *src, int64_t bytes) {
                    if (bytes > 0 && !ok16(off, src, bytes)) ok = 0;
                });
    }
    return ok;
}

/* Fill buffer which (0: A, 1: B) for layer l (mode 0: all compute threads call it): with
 * a.bulk the 16-byte aligned segments are bulk copies issued by thread 0 (a counting pass
 * first: the mbarrier expects their bytes; nothing to fill (B past the last layer): no
 * arrival), the others cp.async by every thread; one cp.async group is committed in every
 * case. With a producer warp the two parts are split: mode 1 (compute threads) the cp.async
 * segments and the commit, mode 2 (one producer thread) the bulk copies and the arrival. (The
 * producer taking the cp.async segments too, with cp.async.mbarrier.arrive, was slower on the
 * H200: 1.02 against 0.93 ms/step at 353m.) Not inlined: keeps its registers out of the
 * kernel's phases. The block's share k by value: by reference it kept the kernel's copy on
 * the stack, read back from local memory by every phase that uses it (ptxas: 44 -> 28 bytes
 * of spills with the profile clocks in shared memory). */
__device__ __noinline__ void fill_buf(const mbp_args *ap, unsigned char *sm,
                                      unsigned long long *mbar, int which, int l, const mbp_blk k,
                                      int mode) {
    const bool bulk = ap->bulk != 0;
    const mbp_layer *lt = (const mbp_layer *)(sm + ap->off_lt);
    /* the bulk part (mode 2: the calling producer thread; mode 0: thread 0): a counting pass,
     * the arrival expecting those bytes, the copies; B past the last layer: no arrival */
    if (bulk && (mode == 2 || (mode == 0 && threadIdx.x == 0)) && (which == 0 || l < ap->n_layer)) {
        int64_t tx = 0;
        for_segs(ap, lt, which, l, k, [&](int64_t off, const void *src, int64_t bytes) {
            if (ok16(off, src, bytes)) tx += bytes;
        });
        mbar_arrive_tx(mbar, (unsigned)tx);
        /* the producer's copies paced (a.pace_cyc, see mbp_args): pieces of pace_bytes, on
         * average one per pace_cyc cycles from the start of the fill (a piece late by a stall
         * lets the next ones go at once); the emulator splits alike and lets the other threads
         * run between pieces instead of reading the clock */
        const bool paced = mode == 2 && ap->pace_cyc > 0 && ap->pace_bytes >= 16;
        const int64_t piece = paced ? ap->pace_bytes & ~15 : 32768;
        long long tnext = paced ? clock64() : 0;
        for_segs(ap, lt, which, l, k, [&](int64_t off, const void *src, int64_t bytes) {
            if (!ok16(off, src, bytes)) return;
            const unsigned char *sp = (const unsigned char *)src;
            for (int64_t o = 0; o < bytes; o += piece) {
                if (paced) {
#ifndef MBP_EMU
                    while (clock64() < tnext) {
                    }
#else
                    emu_spin();
#endif
                    tnext += ap->pace_cyc;
                }
                bulk_g2s(sm + off + o, sp + o, (unsigned)min(piece, bytes - o), mbar);
            }
        });
    }
    if (mode == 2) return;
    /* the cp.async part (modes 0 and 1: every compute thread; none when every segment is a
     * bulk copy), then the group's commit */
    if (!(bulk && ap->all16))
        for_segs(ap, lt, which, l, k, [&](int64_t off, const void *src, int64_t bytes) {
            if (!bulk || !ok16(off, src, bytes)) cp_seg(sm + off, src, bytes);
        });
    cp_commit();
}

#ifndef MBP_EMU
__device__ __forceinline__ void prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}
#endif
/* The small slices a phase of layer l reads straight from global memory (not 16-byte aligned,
 * so not in the fills), prefetched into L2 about a phase ahead: otherwise each is an HBM
 * access (the weights streamed every step evict them) on the phase's critical path. which 0:
 * conv bias and this block's conv windows (phase A), 1: dt bias and D (phase B). The first and
 * the last element of each slice (a slice of <= 32 floats spans at most 2 lines of 128 B). */
__device__ __forceinline__ void prefetch_small(const mbp_args &a, const mbp_layer *lt, int l,
                                               int which, const mbp_blk &k) {
    if (l >= a.n_layer || k.CB == 0 || (which == 0 && a.win)) return;
    const int t = threadIdx.x, K1 = a.K - 1, nr = which == 0 ? 1 + a.S * K1 : 2;
    for (int i = t; i < 2 * nr; i += PT) {
        const int r = i >> 1;
        const float *p;
        if (which == 0)
            p = r == 0 ? lt[l].conv_b + k.c0
                       : a.conv + (((int64_t)l * a.S + (r - 1) / K1) * K1 + (r - 1) % K1) * a.Di +
                             k.c0;
        else
            p = (r == 0 ? lt[l].dt_b : lt[l].D) + k.c0;
        prefetch_l2(p + ((i & 1) ? k.CB - 1 : 0));
    }
}

/* ------------------------------------------------------------------------------ ring */
/* The ring's items in stream order for block k (a.ring): per layer, the in_proj rows of its
 * channels, x then z (2 CB items of d weights), then its out_proj rows, each as ring_p = Di / d
 * pieces of d weights (OB x ring_p items); after the last layer its lm_head rows (VB items). Each
 * item takes one slot of ring_sb bytes. The items go in chunks of C = ring_c (bulk copies of the
 * chunk's pieces of contiguous rows: a copy per row was 2x slower on the H200): chunk q is in
 * ring chunk q % NC (NC = ring_ns / C), its (q / NC)-th use; item it is in slot it % ring_ns. */
__host__ __device__ __forceinline__ int ring_per_layer(const mbp_args &a, const mbp_blk &k) {
    return 2 * k.CB + k.OB * a.ring_p;
}
/* The stream as contiguous segments of global memory: per layer (l < n_layer) the block's x
 * rows, z rows (CB x ring_sb bytes each) and out_proj rows (OB x ring_p x ring_sb: with d_inner
 * a multiple of d_model every piece fills its slot), then its lm_head rows (seg 0 of layer
 * n_layer, VB x ring_sb). */
#ifndef MBP_EMU
#pragma nv_exec_check_disable
#endif
__host__ __device__ __forceinline__ int64_t ring_seg(const mbp_args &a, const mbp_layer *lt,
                                                     const mbp_blk &k, int l, int seg,
                                                     const unsigned char **src) {
    const int64_t sb = a.ring_sb;
    if (l == a.n_layer) {
        *src = (const unsigned char *)a.lm + k.v0 * sb;
        return seg == 0 ? k.VB * sb : 0;
    }
    if (seg < 2) {
        *src = (const unsigned char *)lt[l].in + (seg * (int64_t)a.Di + k.c0) * sb;
        return k.CB * sb;
    }
    *src = (const unsigned char *)lt[l].out + (int64_t)k.o0 * a.ring_p * sb;
    return (int64_t)k.OB * a.ring_p * sb;
}

int mbp_rows_aligned(const mbp_args *a, const mbp_layer *layers) {
    const int64_t ws = a->bf16 ? 2 : 4;
    if (((a->d * ws) | (a->Di * ws)) & 15 || a->Di % a->d || ((uintptr_t)a->lm & 15)) return 0;
    for (int l = 0; l < a->n_layer; l++)
        if (((uintptr_t)layers[l].in | (uintptr_t)layers[l].out) & 15) return 0;
    return 1;
}

/* Consumer side of item it (every lane of the warp): wait until the chunk's previous use has
 * been consumed (cnt[chunk]: items consumed from it over all uses; several warps take items of
 * one chunk, so a warp may come to use u before use u - 1 is done, and the full barrier's
 * parity alone would then pass on use u - 1's phase), then until the copy has landed; returns
 * the item's slot. */
__device__ __forceinline__ int ring_acquire(const mbp_args &a, unsigned long long *full,
                                            volatile int *cnt, int it) {
    const int C = a.ring_c, q = it / C, nc = a.ring_ns / C, kq = q % nc, use = q / nc;
    spin_timeout guard;
    while (cnt[kq] < use * C) {
#ifdef MBP_EMU
        emu_spin();
#endif
        guard.tick(256);
    }
    mbar_wait(&full[kq], (unsigned)use & 1u);
    return it % a.ring_ns;
}
/* The first of a phase's rows (items it0, it0 + 1, ...) that warp w takes: the one whose item
 * is w modulo NWARP, so that the C items of a chunk (C dividing NWARP) go to C different warps
 * of one round and the chunk frees up after about one row's time. (In the out_proj phase a
 * row is ring_p items and the rows are dealt by row index: there a chunk's pieces may share a
 * warp.) */
__device__ __forceinline__ int ring_first(int it0, int w) {
    return (w - it0 % NWARP + NWARP) % NWARP;
}
/* The warp is done reading item it: count it, and free the chunk for the producer once all
 * its items are (the empty barrier expects C arrivals). */
__device__ __forceinline__ void ring_release(const mbp_args &a, unsigned long long *empty,
                                             volatile int *cnt, int it) {
    __syncwarp(); /* every lane's reads are done (dot_row ends in shuffles, but to be plain) */
    if ((threadIdx.x & 31) == 0) {
        const int kq = (it / a.ring_c) % (a.ring_ns / a.ring_c);
        atomicAdd((int *)&cnt[kq], 1);
        mbar_arrive(&empty[kq]);
    }
}

/* The producer thread with a.ring: as each of the small buffers frees up (its empty barrier:
 * the compute threads' phase is done), the next layer's small tensors (the bulk part of
 * fill_buf); as each ring chunk frees up (its empty barrier: all C items of its previous use
 * read), the next C items into it (its full barrier expecting their bytes), one bulk copy per
 * piece of a stream segment (ring_seg) up to 32 KB. Polls, sleeping briefly when nothing was
 * ready; traps after 10 s without progress. (Walking the items one by one in this one thread
 * made it the bottleneck: 972m 1.94 ms/step.) */
__device__ __noinline__ void ring_producer(const mbp_args *ap, unsigned char *sm,
                                           unsigned long long *mbar, const mbp_blk k) {
    const mbp_args &a = *ap;
    const int C = a.ring_c, NC = a.ring_ns / C, nl = a.n_layer;
    unsigned long long *full = (unsigned long long *)(sm + a.off_rmb), *empty = full + NC,
                       *sempty = empty + NC;
    const mbp_layer *lt = (const mbp_layer *)(sm + a.off_lt);
    const int total = nl * ring_per_layer(a, k) + k.VB;
    const int64_t sb = a.ring_sb;
    int it = 0, kq = 0, use = 0; /* next item, its ring chunk and use */
    int nA = 1, nB = 1;          /* next layer of small buffer A / B to fill */
    int l = 0, seg = 0;          /* the segment being copied and its bytes copied */
    int64_t off = 0;
    const unsigned char *src = NULL;
    int64_t len = ring_seg(a, lt, k, l, seg, &src);
    spin_timeout guard;
    while (it < total || nA <= nl || nB < nl) {
        bool did = false;
        if (nA <= nl && mbar_test(&sempty[0], (unsigned)(nA - 1) & 1u)) {
            fill_buf(ap, sm, &mbar[0], 0, nA++, k, 2);
            did = true;
        }
        if (nB < nl && mbar_test(&sempty[1], (unsigned)(nB - 1) & 1u)) {
            fill_buf(ap, sm, &mbar[1], 1, nB++, k, 2);
            did = true;
        }
        while (it < total) { /* every chunk that is free */
            if (use > 0 && !mbar_test(&empty[kq], (unsigned)(use - 1) & 1u)) break;
            const int n = total - it < C ? total - it : C;
            mbar_arrive_tx(&full[kq], (unsigned)(n * sb));
            unsigned char *dst = sm + a.off_ring + (int64_t)kq * C * sb;
            for (int64_t left = n * sb; left > 0;) {
                while (off == len) { /* the next non-empty segment */
                    if (++seg == (l < nl ? 3 : 1)) seg = 0, l++;
                    off = 0;
                    len = ring_seg(a, lt, k, l, seg, &src);
                }
                int64_t take = len - off < left ? len - off : left;
                if (take > 32768) take = 32768;
                bulk_g2s(dst, src + off, (unsigned)take, &full[kq]);
                dst += take, off += take, left -= take;
            }
            it += n;
            if (++kq == NC) kq = 0, use++;
            did = true;
        }
#ifdef MBP_EMU
        emu_prod_state(it, total, nA, nB);
#endif
        if (did)
            guard = spin_timeout(); /* progress: the 10 s count starts again */
        else {
            __nanosleep(64);
            guard.tick(64); /* a consumer that never frees its chunk */
        }
    }
}

/* ------------------------------------------------------------------------------ kernel */
template <typename WT, int S, bool RING>
__global__ void __launch_bounds__(PT + 32, 1)
    persist_step_kernel(const __grid_constant__ mbp_args a) {
#ifndef MBP_EMU
    extern __shared__ __align__(16) unsigned char sm[];
    __shared__ double red[NWARP][2 * S];
    __shared__ __align__(8) unsigned long long mbar[2]; /* bulk copies of bufA / bufB */
#else
    unsigned char *sm = emu_smem();
    double(*red)[2 * S] = (double(*)[2 * S]) emu_static();
    unsigned long long *mbar = emu_mbar(); /* the block's 2 */
#endif
    const int b = blockIdx.x, nb = gridDim.x, t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int d = a.d, Di = a.Di, N = a.N, K = a.K, R = a.R, V = a.V, W = R + 2 * N;
    const int nl = a.n_layer, CBm = a.CBmax;
    const mbp_blk kb = block_share(a, b, nb);
    const int c0 = kb.c0, CB = kb.CB, v0 = kb.v0, VB = kb.VB, o0 = kb.o0, OB = kb.OB;
    float *r = (float *)(sm + a.off_r), *u = (float *)(sm + a.off_u);
    float *xz = (float *)(sm + a.off_xz), *xc = (float *)(sm + a.off_xc);
    float *dbc = (float *)(sm + a.off_dbc);
    const float *nw = (const float *)(sm + a.off_nw), *nbias = (const float *)(sm + a.off_nb);
    const float *cw = (const float *)(sm + a.off_cw), *xw = (const float *)(sm + a.off_xw);
    const WT *rowsA = (const WT *)(sm + a.off_rowsA), *rowsB = (const WT *)(sm + a.off_rowsB);
    const float *dw = (const float *)(sm + a.off_dw), *Av = (const float *)(sm + a.off_A);
    const float *ss = (const float *)(sm + a.off_ss);
    float *yall = (float *)(sm + a.off_yall);
    /* a.win: the conv windows (n_layer, S, K - 1, CBmax) and biases (n_layer, CBmax) */
    float *wins = (float *)(sm + a.off_win), *winb = wins + (int64_t)nl * S * (K - 1) * CBm;

    unsigned nbar = ld_acq(a.flags + b); /* barriers passed so far (this block's own flag) */
    const unsigned stepc = __ldcg(a.step), par = stepc & 1u, ep = stepc + 1u; /* LL epoch */
    const int64_t per = (int64_t)nl * S * W;
    unsigned long long *accx = a.acc + par * per;

    /* profile marks (block 0, thread 0): cycles since the previous mark into slot k */
    const bool prof = a.prof && t == 0 && (b == 0 || a.prof_all);
    unsigned long long *pr = a.prof + (a.prof_all ? (int64_t)b * MBP_PROF : 0);
    /* the previous mark and the start in shared memory (a.off_prof, at the end of the layout:
     * a static array moved every offset by 16 bytes); in registers, held across the whole
     * step, they spilled on the unprofiled path */
    long long *prof_clk = (long long *)(sm + a.off_prof);
    if (prof) prof_clk[0] = prof_clk[1] = clock64();
    auto mark = [&](int k) {
        if (prof) {
            const long long n = clock64();
            pr[k] += (unsigned long long)(n - prof_clk[0]);
            prof_clk[0] = n;
        }
    };
    const bool bulk = a.bulk != 0, light = a.light_fence != 0, producer = bulk && a.producer;
    if (bulk && t == 0) {
        mbar_init(&mbar[0]);
        mbar_init(&mbar[1]);
    }
    /* RING: full[NC] (one arrival), empty[NC] (C arrivals), the small buffers' empty[2] (one),
     * the chunks' consumed counts cnt[NC] */
    const int rnc = RING ? a.ring_ns / a.ring_c : 0, rper = RING ? ring_per_layer(a, kb) : 0;
    unsigned long long *rfull = (unsigned long long *)(sm + a.off_rmb), *rempty = rfull + rnc,
                       *sempty = rempty + rnc;
    volatile int *rcnt = (volatile int *)(sempty + 2);
    if (RING && t < PT)
        for (int i = t; i < 2 * rnc + 2; i += PT) {
            mbar_init(&rfull[i], i >= rnc && i < 2 * rnc ? (unsigned)a.ring_c : 1u);
            if (i < rnc) rcnt[i] = 0;
        }
    { /* the layer table into shared memory: the fills read it every phase */
        const unsigned long long *src = (const unsigned long long *)a.layers;
        unsigned long long *dst = (unsigned long long *)(sm + a.off_lt);
        const int n = nl * (int)(sizeof(mbp_layer) / 8);
        for (int i = t; i < n && t < PT; i += PT)
            dst[i] = src[i];
    }
    if (a.win && t < PT) { /* every layer's windows and conv biases of this block's channels:
                            * one round of loads per step instead of one per layer */
        const int nw = nl * S * (K - 1), nwb = nw + nl;
        for (int i = t; i < nwb * CB; i += PT) {
            const int r = i / CB, ci = i % CB;
            if (r < nw)
                wins[(int64_t)r * CBm + ci] = a.conv[(int64_t)r * Di + c0 + ci];
            else
                winb[(r - nw) * CBm + ci] = __ldg(a.layers[r - nw].conv_b + c0 + ci);
        }
    }
    __syncthreads();
    const mbp_layer *lt = (const mbp_layer *)(sm + a.off_lt);
    if (t >= PT) {  /* the producer warp: the next layer's copies as each buffer frees up */
        if (RING) { /* one thread: the ring's chunks and the small buffers */
            if (t == PT) ring_producer(&a, sm, mbar, kb);
        } else
            for (int l = 0; l < nl; l++) {
                nbar_sync(2); /* phase A of layer l done: buffer A free */
                if (t == PT) fill_buf(&a, sm, &mbar[0], 0, l + 1, kb, 2);
                nbar_sync(3); /* phase H of layer l done: buffer B free */
                if (t == PT && l + 1 < nl) fill_buf(&a, sm, &mbar[1], 1, l + 1, kb, 2);
            }
        return;
    }
    /* layer weight pointers read from the table one layer ahead (their latency off the path) */
    const void *in_cur = lt[0].in, *out_cur = lt[0].out;
    const void *in_nxt = in_cur, *out_nxt = out_cur;
    fill_buf(&a, sm, &mbar[0], 0, 0, kb, 0); /* thread 0 issues the bulk copies */
    fill_buf(&a, sm, &mbar[1], 1, 0, kb, 0);
    prefetch_small(a, lt, 0, 0, kb);
    prefetch_small(a, lt, 0, 1, kb);
    for (int l = 0; l <= nl; l++) {
        /* ---------------- phase A: residual + norm (redundant in every block) */
        if (l > 0) { /* the previous layer's out_proj rows -> u (free until the norm) */
            if (a.ll)
                ll_read(u, a.hll + (int64_t)(l - 1) * S * d, S * d, ep);
            else /* plain floats, after the barrier that ended phase H */
                load_l2(u, (const float *)a.hll + (int64_t)(l - 1) * S * d, S * d);
        }
        mark(8);
        cp_wait<1>();
        if (bulk) mbar_wait(&mbar[0], (unsigned)l & 1u);
        csync();
        mark(0);
        /* a.fold: layers 1..n_layer-1 have folded rows (layer 0 and norm_f the normalized copy
         * in u) */
        const bool folded = mbp_folded(&a, l);
        double ps[2 * S];
#pragma unroll
        for (int i = 0; i < 2 * S; i++)
            ps[i] = 0.0;
        {
            /* r = embedding row (layer 0) or r + hidden (in u): every load of a pass (S x RJ
             * per thread) issued before the first update */
            constexpr int RJ = 4;
            const float *er[S];
            if (l == 0)
#pragma unroll
                for (int s = 0; s < S; s++)
                    er[s] = a.emb + (int64_t)a.tok[s] * d;
            for (int j0 = t; j0 < d; j0 += RJ * PT) {
                float nv[S][RJ];
#pragma unroll
                for (int s = 0; s < S; s++)
#pragma unroll
                    for (int q = 0; q < RJ; q++) {
                        const int j = j0 + q * PT;
                        nv[s][q] = j >= d ? 0.0f : l == 0 ? __ldg(er[s] + j) : u[s * d + j];
                    }
#pragma unroll
                for (int s = 0; s < S; s++)
#pragma unroll
                    for (int q = 0; q < RJ; q++) {
                        const int j = j0 + q * PT;
                        if (j < d) {
                            const float v = l == 0 ? nv[s][q] : r[s * d + j] + nv[s][q];
                            r[s * d + j] = v;
                            ps[2 * s] += (double)v;
                            ps[2 * s + 1] += (double)v * v;
                        }
                    }
            }
        }
#pragma unroll
        for (int i = 0; i < 2 * S; i++) {
            const double v = p_warp_sumd(ps[i]);
            if (lane == 0) red[warp][i] = v;
        }
        csync();
        float mean[S], rstd[S];
#pragma unroll
        for (int s = 0; s < S; s++) {
            double sum = 0.0, sq = 0.0;
            for (int w = 0; w < NWARP; w++)
                sum += red[w][2 * s], sq += red[w][2 * s + 1];
            mean[s] = 0.0f;
            double var = sq / (double)d;
            if (!a.rms) {
                const double m = sum / (double)d;
                var = var - m * m;
                if (var < 0.0) var = 0.0;
                mean[s] = (float)m;
            }
            rstd[s] = (float)(1.0 / sqrt(var + (double)a.eps));
        }
        /* fast: the folded rows' dot products on r itself, finished as (acc - mean s) rstd +
         * W.beta, where the mean is at most MBP_FOLD_MAXR spreads from 0 (the subtraction loses
         * digits in proportion to mean / spread: with embeddings + 100, mean ~3000 spreads, the
         * logits were off by 4e-4 against 2e-7); else (and for rows not folded) the normalized
         * copy in u, without gamma and beta where the rows hold them. Every thread decides
         * alike (same sums). */
        bool fast = folded;
#pragma unroll
        for (int s = 0; s < S; s++)
            fast = fast && fabsf(mean[s]) * rstd[s] <= MBP_FOLD_MAXR;
        if (!fast) {
#pragma unroll
            for (int s = 0; s < S; s++) {
                const float *rs = r + s * d;
                float *us = u + s * d;
                for (int j = t; j < d; j += PT)
                    us[j] = folded  ? (rs[j] - mean[s]) * rstd[s]
                            : a.rms ? rs[j] * rstd[s] * nw[j]
                                    : (rs[j] - mean[s]) * rstd[s] * nw[j] + nbias[j];
            }
            csync();
        }
        if (l < nl) mark(1);

        if (l == nl) { /* ---------------- norm_f done: lm_head rows, then finish */
            const WT *lm = (const WT *)a.lm;
            for (int i = RING ? ring_first(nl * rper, warp) : warp; i < VB; i += NWARP) {
                const WT *row = i < a.capA ? rowsA + (int64_t)i * d : lm + (int64_t)(v0 + i) * d;
                const int it = nl * rper + i;
                if (RING)
                    row = (const WT *)(sm + a.off_ring +
                                       (int64_t)ring_acquire(a, rfull, rcnt, it) * a.ring_sb);
                float acc[S];
                dot_row<WT, S>(row, u, d, d, acc);
                if (RING) ring_release(a, rempty, rcnt, it);
                if (lane == 0)
#pragma unroll
                    for (int s = 0; s < S; s++)
                        a.logits[(int64_t)s * V + v0 + i] = acc[s];
            }
            /* zero the other parity's sums (consumed by the previous step, used by the next) */
            unsigned long long *other = a.acc + (1 - par) * per;
            for (int64_t i = (int64_t)b * PT + t; i < per; i += (int64_t)nb * PT)
                other[i] = 0ull;
            if (b == 0 && t == 0) *a.step = __ldcg(a.step) + 1u; /* all blocks read it */
            cp_wait<0>();
            mark(11);
            if (prof) {
                pr[12] += 1;
                pr[13] += (unsigned long long)(clock64() - prof_clk[1]);
            }
            return;
        }

        /* ---------------- phase A: in_proj rows of this block's channels (x then z) */
        const WT *inw = (const WT *)in_cur;
        for (int i = RING ? ring_first(l * rper, warp) : warp; i < 2 * CB; i += NWARP) {
            const int grow = i < CB ? c0 + i : Di + c0 + (i - CB);
            const WT *row = i < a.capA ? rowsA + (int64_t)i * d : inw + (int64_t)grow * d;
            const int it = l * rper + i; /* (RING) */
            if (RING)
                row = (const WT *)(sm + a.off_ring +
                                   (int64_t)ring_acquire(a, rfull, rcnt, it) * a.ring_sb);
            float acc[S];
            dot_row<WT, S>(row, fast ? r : u, d, d, acc);
            if (RING) ring_release(a, rempty, rcnt, it);
            if (lane == 0)
#pragma unroll
                for (int s = 0; s < S; s++)
                    xz[s * 2 * CBm + i] =
                        fast     ? fmaf(acc[s] - mean[s] * nw[i], rstd[s], nw[2 * CBm + i])
                        : folded ? acc[s] + nw[2 * CBm + i]
                                 : acc[s];
        }
        csync();
        mark(9);
        /* conv window shift + causal conv + bias + SiLU (step.c order: oldest tap first). With
         * a.win the window and the bias come from the block's copy in shared memory (loaded at
         * the start of the step; each layer's is read once per step, so only the global copy
         * gets the shifted window), else straight from global memory (L2, prefetched a phase
         * ahead), every load before the first use. */
        for (int i = t; i < S * CB; i += PT) {
            const int s = i / CB, ci = i % CB;
            const float xn = xz[s * 2 * CBm + ci];
            float *win = a.conv + (((int64_t)l * S + s) * (K - 1)) * Di + c0 + ci;
            const float *src = a.win ? wins + ((int64_t)l * S + s) * (K - 1) * CBm + ci : win;
            const int64_t st = a.win ? CBm : Di; /* between taps in src */
            float acc = a.win ? winb[l * CBm + ci] : __ldg(lt[l].conv_b + c0 + ci);
            if (K <= MBP_KMAX) {
                float wv[MBP_KMAX];
#pragma unroll
                for (int k = 0; k < MBP_KMAX; k++)
                    if (k < K - 1) wv[k] = src[k * st];
#pragma unroll
                for (int k = 0; k < MBP_KMAX; k++)
                    if (k < K - 1) {
                        acc += cw[ci * K + k] * wv[k];
                        win[(int64_t)k * Di] =
                            k + 1 < K - 1 ? wv[k + 1 < MBP_KMAX ? k + 1 : 0] : xn;
                    }
            } else { /* serial: each old tap read before its slot is overwritten */
                for (int k = 0; k < K - 1; k++) {
                    acc += cw[ci * K + k] * src[k * st];
                    if (!a.win) /* (global: the tap read before its slot is overwritten) */
                        win[(int64_t)k * Di] = k + 1 < K - 1 ? win[(int64_t)(k + 1) * Di] : xn;
                }
                if (a.win)
                    for (int k = 0; k < K - 1; k++)
                        win[(int64_t)k * Di] = k + 1 < K - 1 ? src[(k + 1) * st] : xn;
            }
            acc += cw[ci * K + K - 1] * xn;
            xc[s * CBm + ci] = p_silu(acc);
        }
        csync();
        mark(10);
        /* x_proj partial sums of this block's channels -> dbc (fixed point) */
        if (CB > 0)
            for (int o = t; o < S * W; o += PT) {
                const int s = o / W, w = o % W;
                float p = 0.0f;
                for (int ci = 0; ci < CB; ci++)
                    p += xw[ci * W + w] * xc[s * CBm + ci];
                red_add_u64(accx + ((int64_t)l * S + s) * W + w, fx_q(p));
            }
        mark(2);
        bar_arrive(a.flags, ++nbar, light); /* (syncs: bufA is free) */
        mark(3);
        if (RING) {
            if (t == 0) mbar_arrive(&sempty[0]);
        } else if (producer)
            nbar_arrive(2);
        /* the compute threads' part of the next fill (cp.async segments and the commit of
         * their group): nothing where the producer issues every copy as a bulk copy (the empty
         * group's commit cost a call on the critical path) */
        if (!(producer && a.all16)) fill_buf(&a, sm, &mbar[0], 0, l + 1, kb, producer ? 1 : 0);
        prefetch_small(a, lt, l + 1, 0, kb);
        mark(14);
        bar_wait(a.flags, nbar);
        mark(4);

        /* ---------------- phase B: dbc, dt_proj + softplus + state update + gate */
        cp_wait<1>();
        if (bulk) mbar_wait(&mbar[1], (unsigned)l & 1u);
        mark(5);
        for (int i = t; i < S * W; i += PT)
            dbc[i] = fx_f(__ldcg(accx + (int64_t)l * S * W + i));
        csync();
        mark(6);
        /* G lanes per (sequence, channel): a half warp when d_state <= 16, so that 16 channels
         * take one pass of 8 warps (a warp per channel left one warp with 2 of a block's 16
         * channels: half the blocks took twice as long and every block waited for them). The
         * loop is uniform over the warp (its shuffles are); inactive groups compute on pair 0
         * and store nothing. */
        {
            const int G = N <= 16 ? 16 : 32, gpw = 32 / G, gl = lane & (G - 1), gi = lane / G;
            for (int p0 = warp * gpw; p0 < S * CB; p0 += NWARP * gpw) {
                const int p = p0 + gi;
                const bool act = p < S * CB;
                const int s = act ? p / CB : 0, ci = act ? p % CB : 0;
                const float dtb = __ldg(lt[l].dt_b + c0 + ci), Dc = __ldg(lt[l].D + c0 + ci);
                const float *db = dbc + s * W;
                float dt = 0.0f;
                for (int k = gl; k < R; k += G)
                    dt += dw[ci * R + k] * db[k];
                dt = p_softplus(p_group_sum(dt, G) + dtb);
                const float x = xc[s * CBm + ci], z = xz[s * 2 * CBm + CB + ci], dtx = dt * x;
                float *hg = a.ssm + (((int64_t)l * S + s) * Di + c0 + ci) * N;
                const float *hs = ss + (s * CBm + ci) * N;
                float acc = 0.0f;
                for (int n = gl; n < N; n += G) {
                    const float h = p_exp(dt * Av[ci * N + n]) * hs[n] + dtx * db[R + n];
                    if (act) hg[n] = h;
                    acc += h * db[R + N + n];
                }
                acc = p_group_sum(acc, G);
                if (act && gl == 0) {
                    const float yv = (acc + Dc * x) * p_silu(z);
                    const int64_t o = ((int64_t)l * S + s) * Di + c0 + ci;
                    if (a.ll)
                        ll_store(a.yll + o, yv, ep);
                    else
                        ((float *)a.yll)[o] = yv;
                }
            }
        }
        csync();
        mark(7);
        /* ---------------- phase H: y of every channel -> this block's out_proj rows -> hidden
         * (LL words, or plain floats between two grid barriers) */
        if (a.ll) {
            ll_read(yall, a.yll + (int64_t)l * S * Di, S * Di, ep);
        } else {
            bar_arrive(a.flags, ++nbar, light);
            bar_wait(a.flags, nbar);
            load_l2(yall, (const float *)a.yll + (int64_t)l * S * Di, S * Di);
        }
        csync();
        mark(16);
        {
            const WT *outw = (const WT *)out_cur;
            for (int i = RING ? ring_first(l * rper + 2 * CB, warp) : warp; i < OB; i += NWARP) {
                float acc[S];
                if (RING) { /* the row's pieces, items l * per + 2 CB + i * ring_p + j */
#pragma unroll
                    for (int s = 0; s < S; s++)
                        acc[s] = 0.0f;
                    const int it0 = l * rper + 2 * CB + i * a.ring_p;
                    for (int j = 0; j < a.ring_p; j++) {
                        const int it = it0 + j, e0 = j * d;
                        const int slot = ring_acquire(a, rfull, rcnt, it);
                        float pa[S];
                        dot_row<WT, S>((const WT *)(sm + a.off_ring + (int64_t)slot * a.ring_sb),
                                       yall + e0, Di - e0 < d ? Di - e0 : d, Di, pa);
                        ring_release(a, rempty, rcnt, it);
#pragma unroll
                        for (int s = 0; s < S; s++)
                            acc[s] += pa[s];
                    }
                } else {
                    const WT *row =
                        i < a.capB ? rowsB + (int64_t)i * Di : outw + (int64_t)(o0 + i) * Di;
                    dot_row<WT, S>(row, yall, Di, Di, acc);
                }
                if (lane == 0)
#pragma unroll
                    for (int s = 0; s < S; s++)
                        if (a.ll)
                            ll_store(a.hll + ((int64_t)l * S + s) * d + o0 + i, acc[s], ep);
                        else
                            ((float *)a.hll)[((int64_t)l * S + s) * d + o0 + i] = acc[s];
            }
        }
        if (a.ll)
            csync(); /* bufB is free */
        else
            bar_arrive(a.flags, ++nbar, light); /* (syncs: bufB is free) */
        mark(17);
        if (RING) {
            if (t == 0) mbar_arrive(&sempty[1]);
        } else if (producer)
            nbar_arrive(3);
        if (!(producer && a.all16)) fill_buf(&a, sm, &mbar[1], 1, l + 1, kb, producer ? 1 : 0);
        prefetch_small(a, lt, l + 1, 1, kb);
        if (l + 1 < nl) in_nxt = lt[l + 1].in, out_nxt = lt[l + 1].out;
        mark(15);
        if (!a.ll) bar_wait(a.flags, nbar);
        in_cur = in_nxt, out_cur = out_nxt;
    }
}

/* ------------------------------------------------------------------------------ plan */
static int al16(int64_t n) {
    return (int)((n + 15) & ~(int64_t)15);
}

/* bytes of the conv windows and biases kept in shared memory with a->win */
static int64_t win_bytes(const mbp_args *a) {
    return (int64_t)a->n_layer * (a->S * (a->K - 1) + 1) * a->CBmax * 4;
}

/* offsets for nb blocks; returns the bytes needed with capA / capB rows (caps given) */
static int64_t layout(mbp_args *a, int with_rows) {
    const int64_t S = a->S, d = a->d, N = a->N, K = a->K, R = a->R, W = R + 2 * N;
    const int64_t C = a->CBmax, ws = a->bf16 ? 2 : 4;
    int64_t o = a->pad_base;
#define PLACE(f, bytes) (a->f = (int)o, o += al16(bytes))
    PLACE(off_r, S * d * 4);
    PLACE(off_u, S * d * 4);
    PLACE(off_xz, S * 2 * C * 4);
    PLACE(off_xc, S * C * 4);
    PLACE(off_dbc, S * W * 4);
    PLACE(off_nw, (a->fold && 4 * C > d ? 4 * C : d) * 4); /* norm weights, or the fold floats */
    PLACE(off_nb, d * 4);
    PLACE(off_cw, C * K * 4);
    PLACE(off_xw, C * W * 4);
    PLACE(off_dw, C * R * 4);
    PLACE(off_A, C * N * 4);
    PLACE(off_ss, S * C * N * 4);
    PLACE(off_yall, S * a->Di * 4);
    PLACE(off_lt, (int64_t)a->n_layer * (int64_t)sizeof(mbp_layer));
    PLACE(off_win, a->win ? win_bytes(a) : 0);
    PLACE(off_rowsA, with_rows ? (int64_t)a->capA * d * ws : 0);
    PLACE(off_rowsB, with_rows ? (int64_t)a->capB * a->Di * ws : 0);
    PLACE(off_rmb, with_rows && a->ring ? (2 * (int64_t)a->ring_ns + 2) * 8 + a->ring_ns * 4 : 0);
    PLACE(off_ring, with_rows && a->ring ? (int64_t)a->ring_ns * a->ring_sb : 0);
    PLACE(off_prof, 16);
#undef PLACE
    return o;
}

/* The shared memory plan for nb blocks and optin bytes of shared memory per block (rows kept
 * in shared memory limited to row_bytes when >= 0). 0: planned; 1: not covered. */
int mbp_plan(mbp_args *a, int nb, int optin, long long row_bytes) {
    if (a->S < 1 || a->S > MBP_MAX_SEQ || (a->d & 1) || a->d < 2 || a->Di < 1 || a->K < 1 ||
        a->N < 1 || a->R < 1 || a->V != 256 || nb < 1)
        return 1;
    const int64_t static_smem = (int64_t)NWARP * 2 * MBP_MAX_SEQ * 8 + 64;
    const int64_t budget = optin - static_smem - 1024;
    a->nb = nb, a->pad_base = 0;
    a->CBmax = (a->Di + nb - 1) / nb;
    const int64_t ws = a->bf16 ? 2 : 4, rbA = (int64_t)a->d * ws, rbB = (int64_t)a->Di * ws;
    const int VBmax = (a->V + nb - 1) / nb;
    const int needA = 2 * a->CBmax > VBmax ? 2 * a->CBmax : VBmax, needB = (a->d + nb - 1) / nb;
    /* conv windows in shared memory (win_mode 0, the default): where every weight row fits
     * beside them, or where the rows overflow shared memory even without them and the windows
     * take at most a third of the rows' bytes (the rows they displace are read from global
     * memory in their phase, as the overflow already is: on the H200 972m bf16 batch 1 (windows
     * 15% of the rows' bytes) 1.165 -> 1.134 ms/step, batch 2 (27%) 1.527 -> 1.460; larger
     * shares are not measured); not where they would push out rows that fit otherwise (353m
     * batch 4 bf16 1.475 -> 1.576). win_mode 2: whenever they fit, 1: never. */
    const int64_t rows_all = needA * rbA + needB * rbB;
    a->win = 0;
    const int64_t left0 = budget - layout(a, 0) - 32; /* for rows, without the windows */
    const int64_t left = left0 - al16(win_bytes(a));  /* beside the windows */
    a->win =
        a->K > 1 && a->win_mode != 1 && left >= 0 &&
        (a->win_mode == 2 || left >= rows_all || (left0 < rows_all && 3 * (left0 - left) <= left0));
    int64_t avail = a->win ? left : left0;
    if (avail < 0) return 1;
    if (row_bytes >= 0 && row_bytes < avail) avail = row_bytes;
    /* where the rows overflow, at most MBP_OVERFLOW_ROWS bytes of them in shared memory: the
     * rest are read by all the warps in their phase, which keeps more bytes in flight than the
     * buffer fills (H200, ms/step, 30 KB against every byte that fits: 972m bf16 batch 1 1.124
     * -> 1.035-1.041, batch 2 1.452 -> 1.411, batch 3 1.968 -> 1.890, 972m fp32 1.494 -> 1.439,
     * 353m fp32 batch 1 0.942 -> 0.882, batch 2 1.176 -> 1.095; 15-45 KB within ~1% of it) */
    const bool overflow = rows_all > avail;
    /* the ring (below) runs where it is asked for (ring_mode 2) and can: the cap and the pad
     * are for the fixed buffers, where it cannot too (with a pad asked for, its room counted) */
    const int64_t ring_room = avail - (a->pad_set ? a->pad_ask : 0);
    const bool ring = a->ring_mode == 2 && a->bulk && a->producer && ((rbA | rbB) & 15) == 0 &&
                      a->Di % a->d == 0 && ring_room - 32 >= rbA + 20; /* (a slot: ns >= 1) */
    if (row_bytes < 0 && !ring && overflow && avail > MBP_OVERFLOW_ROWS) avail = MBP_OVERFLOW_ROWS;
    /* where the rows overflow, the whole layout 16 bytes later. H200, ms/step
     * against no pad in the same call: 972m bf16 batch 1 0.953-0.961 -> 0.944-0.952 (at every
     * producer pace from 250 to 450 cycles per 4 KB; 64 bytes: 0.950-0.957), batch 2 1.369 ->
     * 1.353, batch 4 2.238-2.246 -> 2.228-2.237, fp32 1.355 -> 1.346; but 353m fp32 0.790 ->
     * 0.800 and 353m bf16 batch 4 1.327-1.332 -> 1.338-1.342. Why is not known: a shift of
     * every offset leaves the bank pattern of each access as it was, and it is not one
     * alignment (the dynamic area starts right after the static one, at 1 KB + 240 S + 16
     * bytes: 0, 112, 96, 80 modulo 128 at batch 1-4, by a probe kernel with the same static
     * arrays on the H200; so the 16 bytes take batch 1 off 128-byte alignment and batch 2 onto
     * it, and both gain). Not where every row fits: 353m bf16 batch 1 0.616 -> 0.654-0.667
     * with 16 bytes. a->pad_set: a->pad_ask bytes instead (lab knob) */
    a->pad_base = a->pad_set ? a->pad_ask : overflow && !ring ? 16 : 0;
    avail = avail > a->pad_base ? avail - a->pad_base : 0;
    /* the ring (ring_mode 2 only): every slot of rbA bytes plus its share of the mbarriers
     * and counts, two more mbarriers for the small buffers (and 16-byte rounding). H200,
     * ms/step: 972m bf16 batch 1 1.124 -> 1.050 against the fixed buffers with every row that
     * fits (chunks of 3 rows; 4: 1.10, 5: 1.07, 8: 1.15, 15: 1.26, 1 row per copy: 1.55), but
     * 1.038 with the overflow cap above; slower at batch 2-4 and in fp32. It scales with its
     * size (972m b1: 50 KB 1.45, 70 KB 1.30, 90 KB 1.185, 110 KB 1.08, 118 KB 1.05), so it may
     * win once the small tensors leave it more room. Chunks: the largest divisor of NWARP (so
     * that a chunk's rows go to different warps of one round, ring_first) of at most 12 KB, at
     * least 4 chunks where there are 4 slots. */
    a->ring = 0, a->ring_ns = 0, a->ring_sb = 0, a->ring_p = 0;
    const int64_t ns = (avail - 32) / (rbA + 20);
    if (ring) {
        int64_t c = 1;
        for (int64_t k = 1; k <= NWARP; k++)
            if (NWARP % k == 0 && k * rbA <= 12288 && 4 * k <= ns) c = k;
        if (a->ring_c_ask > 0 && a->ring_c_ask <= ns) c = a->ring_c_ask; /* (lab knob) */
        a->ring = 1, a->ring_c = (int)c, a->ring_ns = (int)(ns / c * c), a->ring_sb = (int)rbA;
        a->ring_p = (a->Di + a->d - 1) / a->d;
        a->capA = 0, a->capB = 0;
    } else if (needA * rbA + needB * rbB <= avail) {
        a->capA = needA, a->capB = needB;
    } else { /* split the bytes that fit 2 : 1 (in_proj has twice the weights of out_proj) */
        int64_t ca = avail * 2 / 3 / rbA;
        if (ca > needA) ca = needA;
        int64_t cbr = (avail - ca * rbA) / rbB;
        if (cbr > needB) cbr = needB;
        ca = (avail - cbr * rbB) / rbA;
        if (ca > needA) ca = needA;
        a->capA = (int)ca, a->capB = (int)cbr;
    }
    a->smem = (int)layout(a, 1);
    return 0;
}

#ifndef MBP_EMU
/* ------------------------------------------------------------------------------ host */
template <typename WT, int S> static void *kptr(int ring) {
    return ring ? (void *)persist_step_kernel<WT, S, true>
                : (void *)persist_step_kernel<WT, S, false>;
}
static void *kernel_for(int half, int S, int ring) {
    switch (S) {
    case 1:
        return half ? kptr<bf16, 1>(ring) : kptr<float, 1>(ring);
    case 2:
        return half ? kptr<bf16, 2>(ring) : kptr<float, 2>(ring);
    case 3:
        return half ? kptr<bf16, 3>(ring) : kptr<float, 3>(ring);
    default:
        return half ? kptr<bf16, 4>(ring) : kptr<float, 4>(ring);
    }
}

int mbp_prepare(mbp_args *a, int sm_count) {
    int dev = 0, optin = 0;
    MB_CUDA_TRY(cudaGetDevice(&dev), "persistent step: device");
    MB_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
                "persistent step: shared memory limit");
    int nb = sm_count;
    const char *e = getenv("MB_CUDA_GEN_PERSIST_BLOCKS");
    if (e && atoi(e) > 0 && atoi(e) < nb) nb = atoi(e);
    const char *rbe = getenv("MB_CUDA_GEN_PERSIST_ROWBYTES");
    if (mbp_plan(a, nb, optin, rbe ? atoll(rbe) : -1)) return 1;
    void *k = kernel_for(a->bf16, a->S, a->ring);
    MB_CUDA_TRY(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, a->smem),
                "persistent step: shared memory attribute");
    int per_sm = 0;
    MB_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                    &per_sm, k, PT + (a->bulk && a->producer ? 32 : 0), (size_t)a->smem),
                "persistent step: occupancy");
    if (per_sm < 1) return 1;
    if ((int64_t)per_sm * sm_count < nb) { /* fewer co-resident blocks: re-plan for them */
        if (mbp_plan(a, per_sm * sm_count, optin, rbe ? atoll(rbe) : -1)) return 1;
        MB_CUDA_TRY(cudaFuncSetAttribute(kernel_for(a->bf16, a->S, a->ring),
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, a->smem),
                    "persistent step: shared memory attribute");
    }
    return 0;
}

int mbp_launch(const mbp_args *a, cudaStream_t stream) {
    const dim3 grid((unsigned)a->nb), block(PT + (a->bulk && a->producer ? 32 : 0));
    void *k = kernel_for(a->bf16, a->S, a->ring);
    void *args[] = {(void *)a};
    MB_CUDA_TRY(cudaLaunchKernel(k, grid, block, args, (size_t)a->smem, stream),
                "persistent generation step (kernel launch)");
    MB_CUDA_LAUNCHED("persistent generation step (kernel launch)");
    return MB_OK;
}

/* One block per in_proj row o (grid 2Di): wf[o] = W[o] * gamma rounded to WT; the row's slot
 * in fold (the block b owning channel o mod Di, row i of its 2 CB) gets sum_j wf[o][j] and
 * sum_j W[o][j] beta[j], both summed in double. */
template <typename WT>
__global__ void fold_norm_kernel(WT *wf, float *fold, const float *W, const float *gamma,
                                 const float *beta, int d, int Di, int nb, int CBm) {
    const int64_t o = blockIdx.x;
    const float *w = W + o * d;
    WT *wo = wf + o * d;
    double s = 0.0, bb = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const WT v = (WT)(w[j] * gamma[j]);
        wo[j] = v;
        s += (double)(float)v;
        if (beta) bb += (double)w[j] * (double)beta[j];
    }
    __shared__ double red[2][32];
    for (int off = 16; off > 0; off >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, off);
        bb += __shfl_xor_sync(0xffffffffu, bb, off);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) red[0][warp] = s, red[1][warp] = bb;
    __syncthreads();
    if (threadIdx.x != 0) return;
    s = 0.0, bb = 0.0;
    for (int k = 0; k < nw; k++)
        s += red[0][k], bb += red[1][k];
    const int c = (int)(o % Di), z = (int)(o / Di);
    int b = (int)((int64_t)c * nb / Di), c0 = 0, CB = 0;
    for (;;) { /* the block whose range [c0, c0 + CB) holds c */
        block_range(b, nb, Di, &c0, &CB);
        if (c < c0)
            b--;
        else if (c >= c0 + CB)
            b++;
        else
            break;
    }
    float *f = fold + (int64_t)b * 4 * CBm + z * CB + (c - c0);
    f[0] = (float)s;
    f[2 * CBm] = (float)bb;
}

int mbp_fold_norm(const mbp_args *a, void *wf, float *fold, const float *W, const float *gamma,
                  const float *beta, cudaStream_t stream) {
    const int rows = 2 * a->Di;
    MB_CUDA_TRY(cudaMemsetAsync(fold, 0, (size_t)a->nb * 4 * a->CBmax * sizeof(float), stream),
                "persistent step: norm fold");
    if (a->bf16)
        fold_norm_kernel<bf16><<<rows, 256, 0, stream>>>((bf16 *)wf, fold, W, gamma, beta, a->d,
                                                         a->Di, a->nb, a->CBmax);
    else
        fold_norm_kernel<float><<<rows, 256, 0, stream>>>((float *)wf, fold, W, gamma, beta, a->d,
                                                          a->Di, a->nb, a->CBmax);
    MB_CUDA_LAUNCHED("persistent step: norm fold");
    return MB_OK;
}

/* dst (cols, rows) = src (rows, cols)^T through 32 x 32 shared tiles */
__global__ void transpose_kernel(float *dst, const float *src, int64_t rows, int64_t cols) {
    __shared__ float tile[32][33];
    const int64_t r0 = (int64_t)blockIdx.y * 32, c0 = (int64_t)blockIdx.x * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int64_t rr = r0 + i, cc = c0 + threadIdx.x;
        tile[i][threadIdx.x] = (rr < rows && cc < cols) ? src[rr * cols + cc] : 0.0f;
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int64_t cc = c0 + i, rr = r0 + threadIdx.x;
        if (rr < rows && cc < cols) dst[cc * rows + rr] = tile[threadIdx.x][i];
    }
}

int mbp_transpose(float *dst, const float *src, int64_t rows, int64_t cols, cudaStream_t stream) {
    const dim3 grid((unsigned)((cols + 31) / 32), (unsigned)((rows + 31) / 32)), block(32, 8);
    transpose_kernel<<<grid, block, 0, stream>>>(dst, src, rows, cols);
    MB_CUDA_LAUNCHED("persistent step: weight transpose");
    return MB_OK;
}
#endif
