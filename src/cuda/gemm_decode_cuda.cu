/* Skinny bf16 GEMM of batched generation (gemm_decode_cuda.h). Block (x, y, z): rows
 * [16 RT x, +16 RT) of W, k in [KB y, +KB), sequences [64 z, +64).
 * - Copies: its weight tile (16 RT x KB) and x tile (64 x KB) reach shared memory by TMA tensor
 *   copies in NS stages of KB / NS columns, each on its own mbarrier, as (64-column chunk, row,
 *   64 columns) in the engine's 128-byte swizzle (16-byte piece c of row r at c ^ (r & 7), so
 *   that ldmatrix's 8-row reads hit 8 different bank groups); rows of x past S read as zeros.
 *   The weight stages are issued before pdl_wait, the x stages after it.
 * - Products: warp (rt, kw) (RT x KW = 8 warps) multiplies the 16 rows of tile rt by the 64
 *   sequences over its 1 / KW of each stage's columns, stage by stage as they arrive: per 16
 *   columns one ldmatrix.x4 of weights, four of x (loaded one step ahead), eight mma.sync
 *   m16n8k16 (bf16 in, fp32 accumulators: 8 n-tiles of 8 sequences).
 * - Sums: the KW warp partials are added in shared memory in kw order. With KT > 1 splits the
 *   KT blocks of a row tile are one thread-block cluster: each stores its sums of the 1 / KT of
 *   the tile that block o finishes into o's shared memory (distributed shared memory), and after
 *   one cluster barrier each block adds what it received in split order (deterministic). Or,
 *   where the caller adds them up itself (plan.split_out: the batched norm reads out_proj's
 *   output), split k stores its partial sums to y + k ysplit, with no cluster (the cluster
 *   reduction cost ~0.75 us on top of the ~0.6 us of a block's own sums at 353m batch 64).
 * What was measured on the H200 (353m, batch 64; docs/benchmarks.md): one bulk copy per row cost
 * ~0.12 us each (23 us for in_proj's 192 rows per block), cp.async by every thread reached
 * ~0.5 TB/s, split sums through global memory added by the last block of a tile cost ~5 us;
 * the products of a tile take ~2 us, longer than its copies, so more than one stage
 * (MB_CUDA_GEN_GEMM_NS) measured no faster and one is the default. */
#include <cooperative_groups.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cudaTypedefs.h>

#include "cuda/gemm_decode_cuda.h"
#include "cuda/pdl_cuda.h"

typedef __nv_bfloat16 bf16;

#define GD_WARPS 8
#define GD_THREADS (32 * GD_WARPS)
#define GD_SEQ 64                /* sequences per block */
#define GD_STAGES 4              /* most copy stages */
#define GD_SMEM_MAX (227 * 1024) /* the sm_90 opt-in limit per block */
#define GD_SMEM_STATIC 64        /* the mbarriers */

/* dynamic shared memory a plan may use on a device whose opt-in limit is optin bytes */
static size_t gd_smem_limit(int64_t optin) {
    const int64_t m = optin < GD_SMEM_MAX ? optin : GD_SMEM_MAX;
    return m > GD_SMEM_STATIC ? (size_t)(m - GD_SMEM_STATIC) : 0;
}

/* TMA copies completing on an mbarrier that counts their bytes */
__device__ __forceinline__ unsigned gd_s32(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
/* 3-D tensor copy of the box at (0, row c1, chunk c2) of tensor map t (a matrix viewed as
 * (64-column chunk, row, column in chunk)) into shared memory: the whole tile in one copy */
__device__ __forceinline__ void gd_tma(void *dst, const CUtensorMap *t, int c1, int c2,
                                       unsigned long long *m) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(gd_s32(dst)),
                 "l"((unsigned long long)t), "r"(0), "r"(c1), "r"(c2), "r"(gd_s32(m))
                 : "memory");
}
__device__ __forceinline__ void gd_wait(unsigned long long *m) { /* phase 0 */
    unsigned ok = 0;
    do
        asm volatile(
            "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n\t"
            "selp.b32 %0, 1, 0, p;\n\t}\n"
            : "=r"(ok)
            : "r"(gd_s32(m))
            : "memory");
    while (!ok);
}

__device__ __forceinline__ void gd_ldsm4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3,
                                         const void *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(s));
}

__device__ __forceinline__ void gd_mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* MB_CUDA_GEN_GEMM_PROF=1: thread 0 of each block records globaltimer at 6 points (start, after
 * pdl_wait, first stage in, products done, after the barrier, end) for the last launch of each
 * product (slot) */
#define GD_PROF_BLOCKS 1024
__device__ unsigned long long gd_prof[3][GD_PROF_BLOCKS][6];
__device__ __forceinline__ void gd_mark(int slot, int i) {
    if (slot < 0 || threadIdx.x) return;
    const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    if (b >= GD_PROF_BLOCKS) return;
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    gd_prof[slot][b][i] = t;
}

/* shared memory (from the 1024-byte aligned base): the tiles, reused after the products for
 * the warp partials (KW, 64, 16 RT + 4); then the inbox of the cluster reduction (64, 16 RT) */
__host__ __device__ constexpr size_t gd_inbox_offset(int rt, int kb) {
    return ((size_t)(16 * rt + GD_SEQ) * kb * 2 >
                    (size_t)(GD_WARPS / rt) * GD_SEQ * (16 * rt + 4) * 4
                ? (size_t)(16 * rt + GD_SEQ) * kb * 2
                : (size_t)(GD_WARPS / rt) * GD_SEQ * (16 * rt + 4) * 4);
}
static size_t gd_smem_bytes(int rt, int kt, int kb) {
    return 1024 + gd_inbox_offset(rt, kb) + (kt > 1 ? (size_t)GD_SEQ * 16 * rt * 4 : 0);
}

template <int RT>
__global__ void __launch_bounds__(GD_THREADS, 1)
    gemm_decode_kernel(const __grid_constant__ CUtensorMap tw,
                       const __grid_constant__ CUtensorMap tx, float *__restrict__ y, int64_t ldy,
                       int64_t ysplit, int S, int KB, int NS, int slot) {
    constexpr int KW = GD_WARPS / RT, TR = 16 * RT, LDR = TR + 4; /* LDR: conflict-free stores */
    namespace cg = cooperative_groups;
    extern __shared__ __align__(16) unsigned char gd_smem[];
    __shared__ __align__(8) unsigned long long bar[2 * GD_STAGES]; /* weight stages, x stages */
    /* chunks of 64 columns: weights (KB / 64, TR, 64), then x (KB / 64, 64, 64); 1024-byte
     * aligned (the swizzle's period) */
    unsigned char *base = gd_smem + ((1024u - (gd_s32(gd_smem) & 1023u)) & 1023u);
    bf16 *ws = (bf16 *)base, *xs = ws + (size_t)TR * KB;
    gd_mark(slot, 0);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int r0 = blockIdx.x * TR, kt = blockIdx.y, KT = gridDim.y, s0 = blockIdx.z * GD_SEQ;
    const int c0 = kt * KB / 64, cps = KB / 64 / NS; /* first chunk, chunks per stage */
    if (tid == 0) {
        for (int i = 0; i < 2 * NS; i++) {
            /* a box's bytes count in full, also where it reads past the tensor (zeros) */
            const unsigned tx_bytes = (unsigned)((i < NS ? TR : GD_SEQ) * 64 * cps * 2);
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(gd_s32(bar + i))
                         : "memory");
            asm volatile(
                "fence.mbarrier_init.release.cluster;\n"
                "fence.proxy.async.shared::cta;\n"
                "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(gd_s32(bar + i)),
                "r"(tx_bytes)
                : "memory");
        }
        /* the weights do not depend on the previous kernel: their copy overlaps its end */
        for (int st = 0; st < NS; st++)
            gd_tma(ws + (size_t)st * cps * TR * 64, &tw, r0, c0 + st * cps, bar + st);
    }
    __syncthreads();
    pdl_wait();
    pdl_launch();
    gd_mark(slot, 1);
    if (tid == 0)
        for (int st = 0; st < NS; st++)
            gd_tma(xs + (size_t)st * cps * GD_SEQ * 64, &tx, s0, c0 + st * cps, bar + NS + st);

    const int rt = warp % RT, kw = warp / RT, kspan = KB / NS / KW; /* per stage */
    float acc[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    /* ldmatrix row addresses: A rows rt 16 + (lane & 15), piece + (lane >> 4); B rows (x) 16p +
     * 8 (lane >> 4) + (lane & 7), piece + ((lane >> 3) & 1); every row's r & 7 == lane & 7 */
    const unsigned char *arow = (const unsigned char *)ws + (rt * 16 + (lane & 15)) * 128;
    const unsigned char *brow = (const unsigned char *)xs + (((lane >> 4) << 3) + (lane & 7)) * 128;
    const int sw = lane & 7, ahi = lane >> 4, bhi = (lane >> 3) & 1;
    /* one step ahead: the fragments of step k + 16 are loaded before the products of step k */
    uint32_t fa[2][4], fb[2][4][4];
    auto load = [&](int buf, int kk) {
        const int b = kk >> 6, c = (kk & 63) >> 3;
        gd_ldsm4(fa[buf][0], fa[buf][1], fa[buf][2], fa[buf][3],
                 arow + (size_t)b * TR * 128 + (((c + ahi) ^ sw) << 4));
        const unsigned char *bb = brow + (size_t)b * GD_SEQ * 128 + (((c + bhi) ^ sw) << 4);
#pragma unroll
        for (int p = 0; p < 4; p++)
            gd_ldsm4(fb[buf][p][0], fb[buf][p][1], fb[buf][p][2], fb[buf][p][3], bb + p * 16 * 128);
    };
    auto mul = [&](int buf) {
#pragma unroll
        for (int p = 0; p < 4; p++) {
            gd_mma(acc[2 * p], fa[buf][0], fa[buf][1], fa[buf][2], fa[buf][3], fb[buf][p][0],
                   fb[buf][p][1]);
            gd_mma(acc[2 * p + 1], fa[buf][0], fa[buf][1], fa[buf][2], fa[buf][3], fb[buf][p][2],
                   fb[buf][p][3]);
        }
    };
    for (int st = 0; st < NS; st++) { /* stage st's columns as soon as they are in */
        gd_wait(bar + st);
        gd_wait(bar + NS + st);
        if (st == 0) gd_mark(slot, 2);
        const int kbeg = st * (KB / NS) + kw * kspan, kend = kbeg + kspan;
        load(0, kbeg);
        for (int kk = kbeg; kk < kend; kk += 32) { /* kspan: a multiple of 16 */
            if (kk + 16 < kend) load(1, kk + 16);
            mul(0);
            if (kk + 16 >= kend) break;
            if (kk + 32 < kend) load(0, kk + 32);
            mul(1);
        }
    }
    gd_mark(slot, 3);
    __syncthreads(); /* the tiles are read: reuse shared memory for the warp partials */
    gd_mark(slot, 4);
    float *red = (float *)base; /* (KW, 64, LDR) */
    {
        float *rw = red + (size_t)kw * GD_SEQ * LDR + rt * 16 + (lane >> 2);
        const int t2 = 2 * (lane & 3);
#pragma unroll
        for (int n = 0; n < 8; n++) { /* acc[n]: (row g, seqs 8n + 2t, +1), (row g + 8, ...) */
            const int s = 8 * n + t2;
            rw[s * LDR] = acc[n][0];
            rw[(s + 1) * LDR] = acc[n][1];
            rw[s * LDR + 8] = acc[n][2];
            rw[(s + 1) * LDR + 8] = acc[n][3];
        }
    }
    __syncthreads();
    /* the block's sums (64, TR) as float4 items i: sequence s = i / (TR / 4), rows r..r+3; with
     * KT > 1 block o of the cluster adds up the items [o per, (o + 1) per): every block stores
     * its sums of those items into block o's inbox (kt, per) (past the tiles and the warp
     * partials, so that a store may land while o still computes); after one cluster barrier
     * each block adds its inbox in split order. The stores assume block o has started: the
     * blocks of a cluster are launched together, and a store comes only after this block's
     * copies and products (microseconds). The CUDA guide's explicit form, a cluster arrive at
     * the start and its wait here, is not in yet: it has not been run on a GPU. */
    const int per = GD_SEQ * (TR / 4) / KT; /* float4 items per block (KT a power of 2, <= 8) */
    float4 *inbox = (float4 *)(base + gd_inbox_offset(RT, KB));
    for (int i = tid; i < GD_SEQ * (TR / 4); i += GD_THREADS) {
        const int s = i / (TR / 4), r = 4 * (i - s * (TR / 4));
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int k = 0; k < KW; k++) {
            const float4 w = *(const float4 *)(red + ((size_t)k * GD_SEQ + s) * LDR + r);
            v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
        }
        if (KT == 1 || ysplit) { /* ysplit: split kt's partial sums to y + kt ysplit */
            if (s0 + s < S) *(float4 *)(y + kt * ysplit + (int64_t)(s0 + s) * ldy + r0 + r) = v;
        } else {
            const int o = i / per;
            *cg::this_cluster().map_shared_rank(inbox + kt * per + (i - o * per), o) = v;
        }
    }
    if (KT > 1 && !ysplit) {
        cg::this_cluster().sync();
        for (int i = tid; i < per; i += GD_THREADS) {
            float4 a = inbox[i];
            for (int k = 1; k < KT; k++) {
                const float4 w = inbox[k * per + i];
                a.x += w.x, a.y += w.y, a.z += w.z, a.w += w.w;
            }
            const int it = kt * per + i, s = it / (TR / 4), r = 4 * (it - s * (TR / 4));
            if (s0 + s < S) *(float4 *)(y + (int64_t)(s0 + s) * ldy + r0 + r) = a;
        }
    }
    gd_mark(slot, 5);
}

typedef void (*gd_kernel_t)(const CUtensorMap, const CUtensorMap, float *, int64_t, int64_t, int,
                            int, int, int);
static gd_kernel_t gd_kernel(int rt) {
    switch (rt) {
    case 8:
        return gemm_decode_kernel<8>;
    case 4:
        return gemm_decode_kernel<4>;
    case 2:
        return gemm_decode_kernel<2>;
    default:
        return gemm_decode_kernel<1>;
    }
}

static void gd_config(cudaLaunchConfig_t *lc, cudaLaunchAttribute *at, const mb_gemm_decode_plan *p,
                      int64_t rows, int64_t S, cudaStream_t stream, int pdl) {
    *lc = cudaLaunchConfig_t{};
    lc->gridDim = dim3((unsigned)(rows / (16 * p->rt)), (unsigned)p->kt,
                       (unsigned)((S + GD_SEQ - 1) / GD_SEQ));
    lc->blockDim = dim3(GD_THREADS);
    lc->dynamicSmemBytes = p->smem;
    lc->stream = stream;
    lc->attrs = at;
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 1;
    at[0].val.clusterDim.y = p->split_out ? 1u : (unsigned)p->kt;
    at[0].val.clusterDim.z = 1;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    lc->numAttrs = 1 + (pdl ? 1 : 0);
}

/* a forcing variable's value for product `which`: "v" for every product, or "v0,v1,v2" (an
 * empty or missing item: not forced); 0 when unset (mb_gemm_decode_env_check vets the values) */
static int gd_env(const char *name, int which) {
    const char *e = getenv(name);
    if (!e) return 0;
    if (!strchr(e, ',')) return atoi(e);
    for (int i = 0; i < which; i++) {
        e = strchr(e, ',');
        if (!e) return 0;
        e++;
    }
    return atoi(e); /* (an empty item reads as 0) */
}

int mb_gemm_decode_env_check(char *msg, size_t cap) {
    static const struct {
        const char *name, *allowed;
        int lo, hi, pow2;
    } vars[] = {{"MB_CUDA_GEN_GEMM_RT", "1, 2, 4 or 8", 1, 8, 1},
                {"MB_CUDA_GEN_GEMM_KT", "1, 2, 4 or 8", 1, 8, 1},
                {"MB_CUDA_GEN_GEMM_NS", "1 to 4", 1, GD_STAGES, 0}};
    for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++) {
        const char *e = getenv(vars[v].name);
        if (!e) continue;
        int ok = 1, items = 0;
        for (const char *p = e; ok;) { /* items separated by commas, each empty or a number */
            items++;
            char *end = (char *)p;
            if (*p && *p != ',') {
                const long x = strtol(p, &end, 10);
                ok = end != p && x >= vars[v].lo && x <= vars[v].hi &&
                     (!vars[v].pow2 || (x & (x - 1)) == 0);
            }
            if (!ok || !*end) break;
            ok = *end == ',';
            p = end + 1;
        }
        if (!ok || items > 3) {
            snprintf(msg, cap,
                     "%s=\"%s\": expected %s, for every product or as in_proj,out_proj,lm_head "
                     "(an item left empty: not forced)",
                     vars[v].name, e, vars[v].allowed);
            return -1;
        }
    }
    return 0;
}

int mb_gemm_decode_plan_for(mb_gemm_decode_plan *p, int which, int64_t rows, int64_t K, int64_t S,
                            int out_splits, int sm_count, int64_t smem_optin) {
    const size_t smem_max = gd_smem_limit(smem_optin);
    if (rows <= 0 || K <= 0 || S <= 0 || rows % 16 || K % 64 || rows > (1 << 30) || K > (1 << 30))
        return -1;
    const int force_rt = gd_env("MB_CUDA_GEN_GEMM_RT", which),
              force_kt = gd_env("MB_CUDA_GEN_GEMM_KT", which),
              force_ns = gd_env("MB_CUDA_GEN_GEMM_NS", which);
    const int64_t zc = (S + GD_SEQ - 1) / GD_SEQ;
    double best = 0.0;
    int found = 0;
    for (int rt = 8; rt >= 1; rt /= 2) {
        if (rows % (16 * rt) || (force_rt && rt != force_rt)) continue;
        const int kw = GD_WARPS / rt;
        for (int kt = 1; kt <= 8; kt *= 2) { /* a cluster: at most 8 blocks (portable) */
            if (K % kt || (force_kt && kt != force_kt)) continue;
            const int64_t kb = K / kt;
            /* one copy stage unless forced (more stages measured no faster: the products, not
             * the copies, are the longer part) */
            const int ns = force_ns > 0 && force_ns <= GD_STAGES ? force_ns : 1;
            if (kb % (64 * ns) || kb % (16 * kw * ns)) continue;
            mb_gemm_decode_plan c;
            c.prof_slot = -1, c.rt = rt, c.kt = kt, c.ns = ns, c.kb = (int)kb;
            c.split_out = kt > 1 && kt <= out_splits;
            c.smem = gd_smem_bytes(rt, c.split_out ? 1 : kt, (int)kb);
            if (c.smem > smem_max) continue;
            const int64_t blocks = rows / (16 * rt) * kt * zc;
            if (zc > 65535) continue; /* grid z */
            c.blocks = (unsigned)blocks;
            /* how many clusters fit at once (1 block per multiprocessor) */
            int64_t slots = sm_count;
            if (kt > 1 && !c.split_out) {
                cudaLaunchConfig_t lc;
                cudaLaunchAttribute at[2];
                gd_config(&lc, at, &c, rows, S, 0, 0);
                int n = 0;
                if (cudaFuncSetAttribute(gd_kernel(rt), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem_max) != cudaSuccess ||
                    cudaOccupancyMaxActiveClusters(&n, gd_kernel(rt), &lc) != cudaSuccess ||
                    n < 1) {
                    cudaGetLastError();
                    continue;
                }
                slots = (int64_t)n * kt;
                if (slots > sm_count) slots = sm_count;
            }
            /* fewest waves of blocks first (each block streams its own weights); then at most
             * 2 splits (MB_CUDA_GEN_GEMM_PROF: a pair's cluster reduction adds ~0.75 us to the
             * ~0.6 us of a block's own sums, and more splits more; with split_out the reader
             * adds more partial outputs; 353m batch 64, out_proj split 4 ways: 1.377 ms/step in
             * a cluster against 1.340 for 2, and 1.353 split_out against 1.329); then the most
             * blocks in the wave (the products of a block take ~1.9 us at 32 x 1024 x 64: 353m
             * batch 64, out_proj in 128 blocks of 16 rows split 2 ways 1.340 against 1.361 in 64
             * of 32 rows); then fewest splits; then row tiles of 32 (in_proj at 353m batch 64:
             * 1.49-1.50 against 1.54-1.92 with 16, 64 or 128 rows, session 5) */
            const int64_t waves = (blocks + slots - 1) / slots;
            c.waves = (int)waves;
            /* (idle multiprocessors, also where cluster occupancy leaves them idle) */
            const int64_t idle = sm_count - (blocks < sm_count ? blocks : (int64_t)sm_count);
            const double cost = (double)waves * 1e8 + (kt > 2 ? 1e7 : 0.0) + (double)idle * 1e3 +
                                kt * 10 +
                                (rt == 2   ? 0
                                 : rt == 4 ? 1
                                 : rt == 1 ? 2
                                           : 3);
            if (!found || cost < best) {
                found = 1;
                best = cost;
                *p = c;
            }
        }
    }
    return found ? 0 : -1;
}

cudaError_t mb_gemm_decode_launch(const mb_gemm_decode_plan *p, const CUtensorMap *tw,
                                  const CUtensorMap *tx, float *y, int64_t ldy, int64_t ysplit,
                                  int64_t rows, int64_t S, cudaStream_t stream, int pdl) {
    if ((ldy & 3) || ((uintptr_t)y & 15) || (p->split_out && (ysplit < S * ldy || (ysplit & 3))))
        return cudaErrorInvalidValue;
    cudaLaunchConfig_t lc;
    cudaLaunchAttribute at[2];
    gd_config(&lc, at, p, rows, S, stream, pdl);
    return cudaLaunchKernelEx(&lc, gd_kernel(p->rt), *tw, *tx, y, ldy,
                              p->split_out ? ysplit : (int64_t)0, (int)S, p->kb, p->ns,
                              p->prof_slot);
}

int mb_gemm_decode_tmap(CUtensorMap *t, const bf16 *p, int64_t rows, int64_t K, int box_rows,
                        int box_chunks) {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = NULL;
    if (!encode) {
        cudaDriverEntryPointQueryResult q;
        void *fn = NULL;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                             cudaEnableDefault, &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess || !fn)
            return -1;
        encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    /* (column in chunk, row, chunk): one copy brings a tile as (chunk, row, 64 columns) */
    const cuuint64_t dim[3] = {64, (cuuint64_t)rows, (cuuint64_t)(K / 64)};
    const cuuint64_t stride[2] = {(cuuint64_t)K * sizeof(bf16), 64 * sizeof(bf16)};
    const cuuint32_t box[3] = {64, (cuuint32_t)box_rows, (cuuint32_t)box_chunks}, es[3] = {1, 1, 1};
    return encode(t, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)p, dim, stride, box, es,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS
               ? 0
               : -1;
}

void mb_gemm_decode_prof_print(const mb_gemm_decode_plan *p, const int *used, int n) {
    static unsigned long long h[3][GD_PROF_BLOCKS][6];
    if (cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpyFromSymbol(h, gd_prof, sizeof h) != cudaSuccess)
        return;
    const char *nm[6] = {"start", "pdl_wait", "stage 0", "products", "synced", "end"};
    for (int k = 0; k < n; k++) {
        if (!used[k]) continue;
        const int nb = p[k].blocks < GD_PROF_BLOCKS ? (int)p[k].blocks : GD_PROF_BLOCKS;
        unsigned long long t0 = ~0ull;
        for (int b = 0; b < nb; b++)
            t0 = h[k][b][0] < t0 ? h[k][b][0] : t0;
        fprintf(
            stderr,
            "GEMM %d (rt %d kt %d ns %d kb %d, %u blocks, first start %llu ns): us after the first "
            "start, mean / max:",
            k, p[k].rt, p[k].kt, p[k].ns, p[k].kb, p[k].blocks, t0);
        for (int i = 0; i < 6; i++) {
            double sum = 0.0, mx = 0.0;
            for (int b = 0; b < nb; b++) {
                const double v = (double)(h[k][b][i] - t0) * 1e-3;
                sum += v;
                mx = v > mx ? v : mx;
            }
            fprintf(stderr, " %s %.2f / %.2f", nm[i], sum / nb, mx);
        }
        fprintf(stderr, "\n");
    }
}

cudaError_t mb_gemm_decode_init(int64_t smem_optin) {
    const int m = (int)gd_smem_limit(smem_optin);
    cudaError_t e = cudaSuccess;
    for (int rt = 1; rt <= 8 && e == cudaSuccess; rt *= 2)
        e = cudaFuncSetAttribute(gd_kernel(rt), cudaFuncAttributeMaxDynamicSharedMemorySize, m);
    return e;
}
