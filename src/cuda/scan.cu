/* Selective scan (S6) on the GPU, forward and backward. See scan_cuda.h for the contract and
 * the decomposition; src/cpu/scan.c is the reference these kernels are tested against
 * (tests/cuda/test_scan_cuda.cu).
 *
 * Notation (model.md "Forward"), per sequence b, channel c, state n, position t:
 *   a_t = exp(delta_t * A_n) = exp2(delta_t * A2_n),  A2 = -exp(A_log) * log2(e)
 *   s_t = a_t * s_{t-1} + delta_t * x_t * B_t[n]
 *   y_t = (sum_n s_t C_t[n] + D x_t) * SiLU(z_t)
 * Backward (g = dL/ds_t, dyss = dL/d(pre-gate y)):
 *   g_t = a_{t+1} g_{t+1} + dyss_t C_t[n]                         (reverse scan)
 *   dB_t[n] += g_t delta_t x_t,  dC_t[n] += dyss_t s_t             (summed over channels)
 *   dx_t = D dyss_t + delta_t sum_n g_t B_t[n]
 *   ddelta_t = x_t sum_n g_t B_t[n] + sum_n g_t s_{t-1} a_t A_n
 *   dA_n += g_t s_{t-1} a_t delta_t  (dA_log = dA * A),  dD += dyss_t x_t
 *
 * Thread layout: lane = cl * G + q (channel-major; the staged forward and v5 also take the
 * state-group-major lane = q * (32/G) + cl, see lane_q); the thread owns channel c =
 * blockIdx.x * (32/G) + cl and states n0 = 4q .. 4q+3 (states >= N are padding with A = B = C =
 * 0, so they stay 0). In the legacy forward and v4, warp w of the block owns positions
 * [t0 + w*S, t0 + (w+1)*S) of each tile.
 *
 * Shared-memory costs measured on the H200 (ncu, wavefronts per warp-wide read): LDS.32 1
 * whatever the addresses; LDS.128 4 for distinct addresses and for the channel-major B/C read
 * (4 addresses per quarter-warp), 2 when each quarter-warp reads one address. Tried and dropped
 * (bench/bench_scan_cuda.md): two channels per thread (backward v6: 253 registers, 8 warps per
 * SM, latency-bound, 4.70 ms against 4.19; forward: 1.49 against 1.25 ms) and a shuffle
 * butterfly for the v5 dB/dC sums (4.78 ms).
 */
#include "cuda/fast_math_cuda.h"
#include "cuda/scan_cuda.h"

/* MB_SCAN_EMU: tests/cuda/scan_emu.cpp runs the forward and v5 on the CPU (no GPU needed) */
#ifndef MB_SCAN_EMU
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mambabyte.h"

#define SPT 4 /* states per thread */

#define FWD_S 8      /* positions per thread per forward tile */
#define BWD_CHUNK 64 /* backward chunk = W warps x S positions (16 x 4 or 8 x 8) */

typedef struct {
    int B, L, Di, N, chunk, nch;
    const float *x;
    long long xs;
    const float *delta;
    const float *A_log;
    const float *Bm, *Cm;
    long long bcs;
    int bc_vec;  /* Bm/Cm rows can be read as float4 */
    int vec;     /* every staged tensor can be copied in 16-byte pieces (see make_params) */
    int hstep;   /* backward: h_chunks index step per backward chunk (BWD_CHUNK / chunk) */
    int skip_bc; /* lab diagnostic: leave out the dB/dC atomics (wrong dB/dC) */
    int red_vec; /* dB/dC rows take 16-byte vector reductions (v5 backward) */
    const float *D;
    const float *z;
    long long zs;
    const float *h0;
    float *h_last;
    float *h_chunks;
    float *y;
    /* mb_scan_cuda_opts: delta := softplus(delta + dt_bias) (dt_softplus) or delta + dt_bias,
     * applied to each staged tile; bf16 outputs replace their fp32 twins where non-NULL */
    const float *dt_bias;
    int dt_softplus;
    uint16_t *y_bf16;
    /* backward */
    const float *dy;
    float *dx, *ddelta, *dA_log, *dB, *dC, *dD, *dz;
    float *ddt_bias;
    uint16_t *ddelta_bf16, *dz_bf16;
    uint16_t *dx_bf16; /* backward: dx as bf16 instead of fp32 (added last: the other fields'
                          offsets in the kernel parameter, and so the kernels' code, unchanged) */
    int delta_eff;     /* backward: delta is the effective one already (no transform of the tiles;
                          dt_softplus then shapes only ddelta) */
    float *y_pregate;  /* (B, L, Di) output before the gate, with the D skip (mamba_ssm's `out`):
                          written by the forward where non-NULL (through the x tile, as y); read
                          by the dense backward (DN), whose h_chunks are at chunk 8 (one per BK) */
    /* bf16 inputs (mb_scan_cuda_opts.x_bf16 / delta_bf16; staged forward and v5 backward, VEC):
     * read instead of x / delta, staged as bf16 and widened to the fp32 tiles (widen_rows) */
    const uint16_t *x16;
    long long xs16;
    const uint16_t *delta16;
    /* with x16 (the X16 forms only): z (stride zs, which dz / dz_bf16 share) and the backward's
     * dy (B, L, Di contiguous) as bf16 (mb_scan_cuda_opts.z_bf16 / dy_bf16); NULL: fp32 z / dy */
    const uint16_t *z16;
    const uint16_t *dy16;
    /* the dense states (the FINE 2 forward's h_chunks at chunk 8, read by the DN backward only)
     * as bf16 (mb_scan_cuda_opts.dense_states_bf16): h_chunks then holds uint16_t bit patterns
     * at the same element indices */
    int hc16;
    /* the pre-gate output with the D skip as bf16 (mb_scan_cuda_opts.y_pregate_bf16): written by
     * the forward (through the x tile, as y_pregate); read by the X16 backward's YP form in its
     * gate instead of recomputed by the forward pass, which then keeps only the states; yg16:
     * that form's recomputed gated output (bf16, may be yp16 itself) */
    uint16_t *yp16;
    uint16_t *yg16;
    /* the X16 backward's gate by channel quads (a lane: 4 channels at one position, 8-byte
     * loads and stores of bf16 dy, z, dz and the YP forms' yp16 / yg16): set by the host where
     * those are all bf16 and 8-byte aligned (bwd_gate4) */
    int gate4;
} scan_params;

/* With p.hc16: where the bf16 state at the element index of fp32 address f lies (half f's byte
 * offset into h_chunks). The forward's store uses it; the backward's reads spell the same
 * address as (uint16_t *)h_chunks + (f - h_chunks), the form with which ptxas left the dense
 * bf16-input backward without spills (with h16_at: 20 bytes) */
static __device__ __forceinline__ const void *h16_at(const scan_params &p, const float *f) {
    return (const char *)p.h_chunks + ((const char *)f - (const char *)p.h_chunks) / 2;
}

/* the effective delta of a raw one (mb_scan_cuda_opts), channel c valid */
static __device__ __forceinline__ float dt_eff(const scan_params &p, float raw, int c) {
    const float v = raw + (p.dt_bias ? p.dt_bias[c] : 0.0f);
    return p.dt_softplus ? dt_softplus_f(v) : v;
}

/* d loss / d (delta + dt_bias) from d loss / d delta and the effective delta: softplus' =
 * sigmoid(pre) = -expm1(-softplus(pre)) */
static __device__ __forceinline__ float dt_grad_pre(const scan_params &p, float g, float eff) {
    if (!p.dt_softplus) return g;
    /* 1 - exp(-eff); for eff < 1/64 by its series to eff^3 (no cancellation) */
    const float series = eff * fmaf(eff, fmaf(eff, 1.0f / 6.0f, -0.5f), 1.0f);
    return g * (eff < 0.015625f ? series : 1.0f - ex2(-eff * LOG2E));
}

/* fp32 -> bf16 bits, round to nearest even, NaN stays NaN (as __float2bfloat16_rn). On the GPU
 * the conversion instruction (cvt.rn.bf16.f32: one instruction against ~7 for the integer
 * rounding, which the host build of the emulator keeps; a NaN becomes the canonical 0x7fff
 * there instead of keeping its payload) */
static __device__ __forceinline__ uint16_t bf16_bits(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
#endif
}

/* four floats as bf16 bit patterns packed in order into one 8-byte word (an 8-byte store) */
static __device__ __forceinline__ uint2 bf16x4(float a, float b, float c, float d) {
    return make_uint2(bf16_bits(a) | (uint32_t)bf16_bits(b) << 16,
                      bf16_bits(c) | (uint32_t)bf16_bits(d) << 16);
}

/* 4 consecutive states n0..n0+3 of row `row` of B or C, zeros past N or where !ok. Branch-free
 * (addresses clamped into the tensor, then selected) so that the compiler can issue the loads
 * of a whole tile early. VEC: one 16-byte load (rows 16-byte aligned and N % 4 == 0). */
template <bool VEC>
static __device__ __forceinline__ void load4(const float *base, long long row, long long stride,
                                             int n0, int N, bool ok, float v[4]) {
    if (VEC) {
        const float4 f = __ldg((const float4 *)(base + row * stride + min(n0, N - 4)));
        const bool use = ok && n0 < N;
        v[0] = use ? f.x : 0.0f, v[1] = use ? f.y : 0.0f;
        v[2] = use ? f.z : 0.0f, v[3] = use ? f.w : 0.0f;
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float f = __ldg(base + row * stride + min(n0 + k, N - 1));
            v[k] = ok && n0 + k < N ? f : 0.0f;
        }
    }
}

/* Lane layout of the staged forward and the v5 backward, for a warp of 32 / G channels x G
 * state groups. QM false (channel-major): lane = channel * G + q. QM true (state-group-major):
 * lane = q * (32 / G) + channel, so that the 8 lanes of a quarter-warp share q and read the same
 * 16 bytes of a B / C row: a float4 read of B then costs 2 shared-memory wavefronts instead of
 * 4 (H200, ncu: uniform per quarter 2, four addresses per quarter 4). */
template <int G, bool QM> static __device__ __forceinline__ int lane_q(int lane) {
    return QM ? lane / (32 / G) : lane & (G - 1);
}
template <int G, bool QM> static __device__ __forceinline__ int lane_ch(int lane) {
    return QM ? lane % (32 / G) : lane / G;
}

/* Loads of one tile for one thread (read-only path): x and delta at the S positions tb..tb+S-1
 * (< tlim, else 0), and at the S/G positions q*(S/G)+j this lane gates: x, delta, z, dy (the
 * last three only where the pointer is non-NULL). Issued a tile ahead (register double
 * buffering) so that a tile's global loads overlap the previous tile's arithmetic. */
template <int S, int G>
static __device__ __forceinline__ void
load_tile(const scan_params *p, long long rowb, int c, bool cv, int tb, int tlim, int q, float *xv,
          float *dv, float *xo, float *dlo, float *zo, float *dyo, bool bwd) {
#pragma unroll
    for (int i = 0; i < S; i++) {
        const int t = tb + i;
        const bool ok = cv && t < tlim;
        xv[i] = ok ? __ldg(p->x + (rowb + t) * p->xs + c) : 0.0f;
        dv[i] = ok ? __ldg(p->delta + (rowb + t) * p->Di + c) : 0.0f;
        if (ok && (p->dt_bias || p->dt_softplus)) dv[i] = dt_eff(*p, dv[i], c);
    }
#pragma unroll
    for (int j = 0; j < S / G; j++) {
        const int t = tb + q * (S / G) + j;
        const bool ok = cv && t < tlim;
        xo[j] = ok ? __ldg(p->x + (rowb + t) * p->xs + c) : 0.0f;
        zo[j] = ok && p->z ? __ldg(p->z + (rowb + t) * p->zs + c) : 0.0f;
        if (bwd) {
            dlo[j] = ok ? __ldg(p->delta + (rowb + t) * p->Di + c) : 0.0f;
            dyo[j] = ok ? __ldg(p->dy + (rowb + t) * p->Di + c) : 0.0f;
        }
    }
}

/* ------------------------------------------------------------------------------ forward */
/* PAR: W > 1 warps split each tile in time (aggregates combined through shared memory);
 * otherwise one warp per block walks the sequence alone (single pass). */
template <int S, int G, bool PAR, bool VEC>
__global__ void __launch_bounds__(512) scan_fwd_kernel(scan_params p) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
    const int q = lane & (G - 1), cl = lane / G;
    const int c = blockIdx.x * (32 / G) + cl, b = blockIdx.y;
    const bool cv = c < p.Di;
    const int N = p.N, L = p.L, n0 = q * SPT;
    float A2[SPT], h[SPT];
#pragma unroll
    for (int k = 0; k < SPT; k++) {
        const bool nv = cv && n0 + k < N;
        A2[k] = nv ? -expf(p.A_log[(long long)c * N + n0 + k]) * LOG2E : 0.0f;
        h[k] = nv && p.h0 ? p.h0[((long long)b * p.Di + c) * N + n0 + k] : 0.0f;
    }
    const float Dc = cv && p.D ? p.D[c] : 0.0f;
    extern __shared__ float4 smem[]; /* [2 buffers][P | S][W][32] */
    const long long rowb = (long long)b * L;
    const int T = W * S;
    float nxv[S], ndv[S], nxo[S / G], nzo[S / G];
    load_tile<S, G>(&p, rowb, c, cv, warp * S, L, q, nxv, ndv, nxo, NULL, nzo, NULL, false);
    for (int t0 = 0, tile = 0; t0 < L; t0 += T, tile++) {
        const int tb = t0 + warp * S;
        float xv[S], dv[S], xo[S / G], zo[S / G];
#pragma unroll
        for (int i = 0; i < S; i++)
            xv[i] = nxv[i], dv[i] = ndv[i];
#pragma unroll
        for (int j = 0; j < S / G; j++)
            xo[j] = nxo[j], zo[j] = nzo[j];
        if (t0 + T < L)
            load_tile<S, G>(&p, rowb, c, cv, tb + T, L, q, nxv, ndv, nxo, NULL, nzo, NULL, false);
        float cur[SPT];
        float av[PAR ? S : 1][SPT];
        if (PAR) {
            float P[SPT], sl[SPT];
#pragma unroll
            for (int k = 0; k < SPT; k++)
                P[k] = 1.0f, sl[k] = 0.0f;
#pragma unroll
            for (int i = 0; i < S; i++) {
                const int t = tb + i;
                float Bv[SPT];
                load4<VEC>(p.Bm, rowb + min(t, L - 1), p.bcs, n0, N, t < L, Bv);
                const float dtx = dv[i] * xv[i];
#pragma unroll
                for (int k = 0; k < SPT; k++) {
                    const float a = ex2(dv[i] * A2[k]);
                    av[i][k] = a;
                    P[k] *= a;
                    sl[k] = fmaf(a, sl[k], dtx * Bv[k]);
                }
            }
            float4 *buf = smem + (tile & 1) * 2 * W * 32;
            buf[warp * 32 + lane] = make_float4(P[0], P[1], P[2], P[3]);
            buf[(W + warp) * 32 + lane] = make_float4(sl[0], sl[1], sl[2], sl[3]);
            __syncthreads();
            /* state entering warp `warp`, and the carry into the next tile */
            float run[SPT] = {h[0], h[1], h[2], h[3]};
            for (int j = 0; j < W; j++) {
                if (j == warp) {
#pragma unroll
                    for (int k = 0; k < SPT; k++)
                        cur[k] = run[k];
                }
                const float4 Pj = buf[j * 32 + lane], Sj = buf[(W + j) * 32 + lane];
                run[0] = fmaf(Pj.x, run[0], Sj.x);
                run[1] = fmaf(Pj.y, run[1], Sj.y);
                run[2] = fmaf(Pj.z, run[2], Sj.z);
                run[3] = fmaf(Pj.w, run[3], Sj.w);
            }
#pragma unroll
            for (int k = 0; k < SPT; k++)
                h[k] = run[k];
        } else {
#pragma unroll
            for (int k = 0; k < SPT; k++)
                cur[k] = h[k];
        }
        /* second pass (or the only one): states, chunk-entry states, C contraction */
        int nb = 0; /* next chunk boundary >= tb */
        if (p.h_chunks) nb = (tb + p.chunk - 1) / p.chunk * p.chunk;
        float ys[S];
#pragma unroll
        for (int i = 0; i < S; i++) {
            const int t = tb + i;
            if (p.h_chunks && t == nb && t < L) {
                if (cv) {
                    float *dst = p.h_chunks + (((long long)b * p.Di + c) * p.nch + t / p.chunk) * N;
#pragma unroll
                    for (int k = 0; k < SPT; k++)
                        if (n0 + k < N) dst[n0 + k] = cur[k];
                }
                nb += p.chunk;
            }
            float Bv[SPT], Cv[SPT];
            load4<VEC>(p.Bm, rowb + min(t, L - 1), p.bcs, n0, N, t < L, Bv);
            load4<VEC>(p.Cm, rowb + min(t, L - 1), p.bcs, n0, N, t < L, Cv);
            const float dtx = dv[i] * xv[i];
            float yv = 0.0f;
#pragma unroll
            for (int k = 0; k < SPT; k++) {
                const float a = PAR ? av[PAR ? i : 0][k] : ex2(dv[i] * A2[k]);
                cur[k] = fmaf(a, cur[k], dtx * Bv[k]);
                yv = fmaf(cur[k], Cv[k], yv);
            }
            ys[i] = yv;
        }
        if (!PAR) {
#pragma unroll
            for (int k = 0; k < SPT; k++)
                h[k] = cur[k];
        }
        group_reduce<S, G>(ys, q);
        if ((p.y || p.y_bf16) && cv) {
#pragma unroll
            for (int j = 0; j < S / G; j++) {
                const int t = tb + q * (S / G) + j;
                if (t < L) {
                    const long long row = rowb + t;
                    float out = fmaf(Dc, xo[j], ys[j]);
                    if (p.z) out *= zo[j] * sigmoidf_(zo[j]);
                    if (p.y_bf16)
                        p.y_bf16[row * p.Di + c] = bf16_bits(out);
                    else
                        p.y[row * p.Di + c] = out;
                }
            }
        }
    }
    if (p.h_last && cv && warp == 0) {
        float *dst = p.h_last + ((long long)b * p.Di + c) * N;
#pragma unroll
        for (int k = 0; k < SPT; k++)
            if (n0 + k < N) dst[n0 + k] = h[k];
    }
}

/* ------------------------------------------------------------------------------ backward */
/* Reduce v[0..8) (dB for states n0..n0+3, then dC) over the channels of the warp (lane bits
 * G..16) and add the totals to dB/dC of position t. */
template <int G>
static __device__ __forceinline__ void bc_reduce_add(float *v, int lane, int q, int N, int n0,
                                                     float *dBrow, float *dCrow, bool tvalid) {
    int vbase = 0;
    bool owner = true;
#pragma unroll
    for (int s = 0; (16 >> s) >= G; s++) {
        const int h = 16 >> s, m = 8 >> (s + 1);
        if (m >= 1) {
            const bool up = (lane & h) != 0;
#pragma unroll
            for (int j = 0; j < m; j++) {
                const float send = up ? v[j] : v[j + m];
                const float keep = up ? v[j + m] : v[j];
                v[j] = keep + __shfl_xor_sync(FULL_MASK, send, h);
            }
            if (up) vbase += m;
        } else {
            v[0] += __shfl_xor_sync(FULL_MASK, v[0], h);
            if (lane & h) owner = false;
        }
    }
    (void)q;
    if (!tvalid || !owner) return;
    constexpr int nleft = (32 / G) >= 8 ? 1 : 8 / (32 / G);
#pragma unroll
    for (int j = 0; j < nleft; j++) {
        const int vi = vbase + j;
        const int n = n0 + (vi & 3);
        if (n < N) atomicAdd((vi < 4 ? dBrow : dCrow) + n, v[j]);
    }
}

/* ------------------------------------------------------------------------ async staging */
#ifndef MB_SCAN_EMU
/* cp.async copies global -> shared (sm_80+): `ok` false writes zeros and reads nothing (the
 * source address is still a valid one). */
static __device__ __forceinline__ void cp16(float *dst, const float *src, bool ok) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}
static __device__ __forceinline__ void cp8(float *dst, const float *src, bool ok) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(src),
                 "r"(ok ? 8 : 0)
                 : "memory");
}
static __device__ __forceinline__ void cp4(float *dst, const float *src, bool ok) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src),
                 "r"(ok ? 4 : 0)
                 : "memory");
}
static __device__ __forceinline__ void cp_commit(void) {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int K> static __device__ __forceinline__ void cp_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(K) : "memory");
}
/* dst[0..3] += v, one 16-byte reduction (sm_90; each element atomic on its own) */
static __device__ __forceinline__ void red_add_v4(float *addr, float4 v) {
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(addr), "f"(v.x), "f"(v.y),
                 "f"(v.z), "f"(v.w)
                 : "memory");
}
#endif

/* v5 backward's dB/dC reduction tail: sums acc over the LANES lanes that hold parts of the
 * same 4 states (xor shuffles), then the lane with write set adds them to dst[0..3] (one
 * 16-byte red, or one atomic per state below n_left when red_vec is off). */
template <int LANES>
static __device__ __forceinline__ void bc_reduce_add(float4 acc, bool write, float *dst, int n_left,
                                                     bool red_vec) {
#pragma unroll
    for (int off = 1; off < LANES; off <<= 1) {
        acc.x += __shfl_xor_sync(FULL_MASK, acc.x, off);
        acc.y += __shfl_xor_sync(FULL_MASK, acc.y, off);
        acc.z += __shfl_xor_sync(FULL_MASK, acc.z, off);
        acc.w += __shfl_xor_sync(FULL_MASK, acc.w, off);
    }
    if (!write) return;
    if (red_vec) {
        red_add_v4(dst, acc);
    } else {
        const float av4[4] = {acc.x, acc.y, acc.z, acc.w};
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (k < n_left) atomicAdd(dst + k, av4[k]);
    }
}

/* Column swizzles of the 32-channel shared tiles (x, delta, z, YS): the 8-channel group g of
 * row r sits at group g ^ sw(r), so that lanes reading the same channels in several rows at
 * once hit different banks. SW 1 (v5 backward): sw = Gray code of r mod 4 ((r ^ r >> 1) & 3),
 * distinct over rows 4k..4k+3 (the gate) and over rows 2q + jj, q = 0..3 (the output and the
 * pre-gate sums); SW 2 (forward): sw = (r >> 3) & 3, distinct over rows 8q + j. */
template <int SW> static __device__ __forceinline__ int swz_col(int r, int col) {
    return SW == 1   ? col ^ (((r ^ (r >> 1)) & 3) << 3)
           : SW == 2 ? col ^ (((r >> 3) & 3) << 3)
                     : col;
}

/* Stage `rows` rows of a row-major tensor into shared memory: element (r, e) of the tile is
 * base[(row0 + r) * stride + e] for r < nvalid and e < width, zero elsewhere; the tile has
 * `ld` floats per row (ld % 4 == 0, width <= ld), column e stored at swz_col<SW>(r, e) (SW != 0
 * needs ld == 32). VEC: 16-byte copies (base, stride and width multiples of 4 floats / 16
 * bytes). All NT threads of the block take part. `safe`: a valid global address given to the
 * copies that read nothing. */
template <int NT, bool VEC, int SW = 0>
static __device__ __forceinline__ void
stage_rows(float *dst, int ld, const float *base, long long row0, long long stride, int rows,
           int nvalid, int width, int tid, const float *safe) {
    if (VEC && ld >= 4 && NT % (ld >> 2) == 0) {
        /* (every caller's ld and rows are constants: a fixed column and rows r0, r0 + rstep, ...
         * per thread, one 64-bit address computed once; the general loop below cost ~60
         * instructions per copy in the forward scan, ~1/3 of its per-tile work) */
        const int per = ld >> 2, rstep = NT / per, r0 = tid / per, f = tid - r0 * per;
        const bool okf = base && 4 * f < width;
        const float *src = okf ? base + (row0 + r0) * stride + 4 * f : safe;
        const long long sstep = (long long)rstep * stride;
#pragma unroll
        for (int j = 0; j * rstep < rows; j++) {
            const int r = r0 + j * rstep;
            if (r < rows) {
                const bool ok = okf && r < nvalid;
                cp16(dst + r * ld + swz_col<SW>(r, 4 * f), ok ? src + j * sstep : safe, ok);
            }
        }
    } else if (VEC) {
        const int per = ld >> 2, n = rows * per;
        for (int i = tid; i < n; i += NT) {
            const int r = i / per, f = i - r * per;
            const bool ok = base && r < nvalid && 4 * f < width;
            cp16(dst + r * ld + swz_col<SW>(r, 4 * f),
                 ok ? base + (row0 + r) * stride + 4 * f : safe, ok);
        }
    } else {
        const int n = rows * ld;
        for (int i = tid; i < n; i += NT) {
            const int r = i / ld, e = i - r * ld;
            const bool ok = base && r < nvalid && e < width;
            cp4(dst + r * ld + swz_col<SW>(r, e), ok ? base + (row0 + r) * stride + e : safe, ok);
        }
    }
}

/* The staged delta tile [0, nvalid) x [0, width) (rows of LD floats, swizzle SW) becomes the
 * effective delta (dt_eff) in place; padding stays 0. All NT threads take part (NT % LD == 0:
 * a thread keeps one column, so its dt_bias is loaded once); the caller synchronises before
 * and after. */
template <int NT, int LD, int SW>
static __device__ __forceinline__ void dt_transform(const scan_params &p, float *dst, int nvalid,
                                                    int width, int c0, int tid) {
    static_assert(NT % LD == 0, "a thread keeps one column");
    const int e = tid % LD;
    if (e >= width) return;
    const float bias = p.dt_bias ? p.dt_bias[c0 + e] : 0.0f;
    for (int r = tid / LD; r < nvalid; r += NT / LD) {
        float *v = dst + r * LD + swz_col<SW>(r, e);
        const float pre = *v + bias;
        *v = p.dt_softplus ? dt_softplus_f(pre) : pre;
    }
}

/* bf16 inputs (the X16 kernel forms). stage_rows16 copies ROWS rows of 32 bf16 values (64
 * bytes) of a row-major bf16 tensor to dst (ROWS x 32 bf16, unswizzled), zeros past nvalid rows
 * or width columns (width % 8 == 0; base 16-byte aligned, stride % 8 == 0: 16-byte copies).
 * widen_rows then writes them as an fp32 tile of ROWS x 32 floats in the layout (swizzle SW)
 * the walks read (bf16 -> fp32 is exact), from a buffer of their own (the forward's per-stage
 * area; the backward's dB / dC buffer, free at a chunk's start). A thread widens the very
 * pieces it copied (same NT, ROWS: piece i = tid + j NT), so after its own cp_wait and before
 * the barrier that precedes the tile's readers, with no barrier of its own. (Widening in place
 * from the upper half of each tile, loads, a barrier, stores, cost the forward 9% at B 8.) All
 * NT threads take part. */
template <int NT, int ROWS>
static __device__ __forceinline__ void stage_rows16(uint16_t *dst, const uint16_t *base,
                                                    long long row0, long long stride, int nvalid,
                                                    int width, int tid, const float *safe) {
#pragma unroll
    for (int j = 0; j < (ROWS * 4 + NT - 1) / NT; j++) {
        const int i = tid + j * NT, r = i >> 2, f = i & 3;
        if (i < ROWS * 4) {
            const bool ok = r < nvalid && 8 * f < width;
            cp16((float *)(dst + r * 32 + 8 * f),
                 ok ? (const float *)(base + (row0 + r) * stride + 8 * f) : safe, ok);
        }
    }
}
static __device__ __forceinline__ float bf16_lo(uint32_t u) {
    const uint32_t v = u << 16;
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}
static __device__ __forceinline__ float bf16_hi(uint32_t u) {
    const uint32_t v = u & 0xffff0000u;
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}
/* 8 bf16 values to d[0..8); up: the upper 16 bytes stored first. The 8 threads of a quarter-warp
 * widen 2 rows (4 pieces each) whose first stores, with the swizzles' multiples of 8 columns,
 * fall in the even 16-byte bank groups for both rows: odd rows store their upper half first, so
 * that each of the two stores is conflict-free (stored in one order, ncu counted 3-way
 * conflicts on a quarter of the forward's shared stores). */
static __device__ __forceinline__ void widen8(float *d, uint4 v, bool up) {
    const float4 lo = make_float4(bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y));
    const float4 hi = make_float4(bf16_lo(v.z), bf16_hi(v.z), bf16_lo(v.w), bf16_hi(v.w));
    const int a = up ? 4 : 0;
    *(float4 *)(d + a) = up ? hi : lo;
    *(float4 *)(d + 4 - a) = up ? lo : hi;
}
template <int NT, int ROWS, int SW>
static __device__ __forceinline__ void widen_rows(float *dst, const uint16_t *src, int tid) {
#pragma unroll
    for (int j = 0; j < (ROWS * 4 + NT - 1) / NT; j++) {
        const int i = tid + j * NT, r = i >> 2;
        if (i < ROWS * 4)
            widen8(dst + r * 32 + swz_col<SW>(r, 8 * (i & 3)), ((const uint4 *)src)[i], r & 1);
    }
}

/* Sum ys[0..T) over the G lanes that share a channel, through shared memory, transposing like
 * group_reduce: afterwards ys[j] (j < T/G) holds the total at position q*(T/G) + j. Each thread
 * has stored its T partial sums as T/4 float4s (yr[j * NT + tid], j < T/4: the walk does so
 * every 4 positions, so that they hold no registers), the warp synchronises here, and each
 * thread adds the T/G values it owns from the G lanes of its channel (lane layout as
 * lane_q / lane_ch): T/4 16-byte stores, (T/G)/4 * G 16-byte loads and (G-1) T/G adds per
 * thread, against T - T/G shuffles, twice as many selects and T - T/G adds for group_reduce.
 * Both accesses are conflict-free for QM lanes (a quarter-warp touches 8 consecutive float4s).
 * The caller synchronises the block before yr is written again. */
template <int T, int G, int NT, bool QM>
static __device__ __forceinline__ void yred_smem(float *ys, float4 *yr, int tid, int q, int chl) {
    constexpr int PQ = T / G, CPW = 32 / G;
    static_assert(PQ % 4 == 0, "whole float4s per lane");
    __syncwarp();
    const float4 *src = yr + (q * (PQ / 4)) * NT + (tid & ~31);
#pragma unroll
    for (int q2 = 0; q2 < G; q2++) {
        const int sl = QM ? q2 * CPW + chl : chl * G + q2;
#pragma unroll
        for (int j4 = 0; j4 < PQ / 4; j4++) {
            const float4 v = src[j4 * NT + sl];
            if (q2 == 0) {
                ys[4 * j4] = v.x, ys[4 * j4 + 1] = v.y, ys[4 * j4 + 2] = v.z, ys[4 * j4 + 3] = v.w;
            } else {
                ys[4 * j4] += v.x, ys[4 * j4 + 1] += v.y, ys[4 * j4 + 2] += v.z;
                ys[4 * j4 + 3] += v.w;
            }
        }
    }
}

/* ----------------------------------------------------------------- forward (staged, v4) */
/* One block = 32 channels x G lanes (G warps); every thread walks the whole sequence for its
 * channel and 4 states (no split in time). Tiles of FT positions of x, delta, z (32 channels)
 * and of B, C are copied into shared memory one tile ahead (cp.async), so a step reads only
 * shared memory and registers. FINE: chunk boundaries fall inside tiles (chunk % FT != 0). */
#define FT 32
#define FK 2
template <int G> struct fwd_geom {
    static constexpr int CPB = 32, NP = 4 * G, NT = 32 * G;
    static constexpr int STAGE = 3 * FT * CPB + 2 * FT * NP;
    /* dynamic shared memory (floats): FK stages, then y's partial sums (yred_smem) if G > 1 */
    static constexpr int SMEM = FK * STAGE + (G > 1 ? FT * NT : 0);
    /* X16: then the bf16 x, delta and z rows of the stage being copied (FT x 32 each, 2 bytes:
     * 3/2 FT x CPB floats; one area serves both stages: a tile is widened before the barrier
     * after which the next tile's copies are issued) */
    static constexpr int SMEM16 = SMEM + 3 * FT * CPB / 2;
};
/* fwd_geom<G>::SMEM for a run-time G (launch_forward; the emulator's shared-memory bound) */
static inline int fwd_smem_floats(int G, int x16 = 0) {
    return x16      ? fwd_geom<4>::SMEM16 /* (G 4 only) */
           : G == 1 ? fwd_geom<1>::SMEM
           : G == 2 ? fwd_geom<2>::SMEM
           : G == 4 ? fwd_geom<4>::SMEM
                    : fwd_geom<8>::SMEM;
}

/* tile t0 into stage s of the block's shared memory sm */
template <int G, bool VEC, bool X16 = false>
static __device__ __forceinline__ void fwd_stage(const scan_params &p, float *sm, int s, int b,
                                                 int c0, int t0, int tid) {
    typedef fwd_geom<G> g;
    float *st = sm + s * g::STAGE;
    const long long row0 = (long long)b * p.L + t0;
    const int nv = min(FT, p.L - t0), w = min(g::CPB, p.Di - c0);
    if (X16) { /* into the bf16 area (after the stages and y's sums: SMEM16) */
        uint16_t *b16 = (uint16_t *)(sm + g::SMEM);
        stage_rows16<g::NT, FT>(b16, p.x16 + c0, row0, p.xs16, nv, w, tid, p.x);
        stage_rows16<g::NT, FT>(b16 + FT * 32, p.delta16 + c0, row0, p.Di, nv, w, tid, p.x);
        if (p.z16)
            stage_rows16<g::NT, FT>(b16 + 2 * FT * 32, p.z16 + c0, row0, p.zs, nv, w, tid, p.x);
    } else {
        stage_rows<g::NT, VEC, 2>(st, g::CPB, p.x + c0, row0, p.xs, FT, nv, w, tid, p.x);
        stage_rows<g::NT, VEC, 2>(st + FT * g::CPB, g::CPB, p.delta + c0, row0, p.Di, FT, nv, w,
                                  tid, p.x);
    }
    if (!X16 || !p.z16)
        stage_rows<g::NT, VEC, 2>(st + 2 * FT * g::CPB, g::CPB, p.z ? p.z + c0 : NULL, row0, p.zs,
                                  FT, nv, w, tid, p.x);
    float *bs = st + 3 * FT * g::CPB;
    stage_rows<g::NT, VEC>(bs, g::NP, p.Bm, row0, p.bcs, FT, nv, p.N, tid, p.x);
    stage_rows<g::NT, VEC>(bs + FT * g::NP, g::NP, p.Cm, row0, p.bcs, FT, nv, p.N, tid, p.x);
}

/* Output rows of tile t0 from a region of the tile (Z: the gated output by then; X: the pre-gate
 * one) to y32 (fp32) or, where y16 is non-NULL, to y16 (bf16): whole 128-byte rows of 32
 * channels. VEC: each thread keeps one 4-channel column and rows r0, r0 + rstep, ... (as
 * stage_rows; the general loop's index arithmetic cost more than the stores), 16-byte stores of
 * fp32 or 8-byte stores of 4 bf16 values. */
template <int G, bool VEC>
static __device__ __forceinline__ void fwd_write_y(const scan_params &p, const float *Zt,
                                                   float *y32, uint16_t *y16, int b, int c0, int t0,
                                                   int tid) {
    typedef fwd_geom<G> g;
    const int nv = min(FT, p.L - t0), w = min(g::CPB, p.Di - c0);
    const long long off = ((long long)b * p.L + t0) * p.Di + c0;
    if (VEC) {
        constexpr int per = g::CPB / 4, rstep = g::NT / per;
        static_assert(g::NT % per == 0, "whole rows per pass");
        const int r0 = tid / per, f = tid - r0 * per;
        if (4 * f >= w) return;
        const long long o0 = off + (long long)r0 * p.Di + 4 * f, ostep = (long long)rstep * p.Di;
#pragma unroll
        for (int j = 0; j * rstep < FT; j++) {
            const int r = r0 + j * rstep;
            if (r >= nv) break;
            const float *src = Zt + r * g::CPB + swz_col<2>(r, 4 * f);
            if (y16) {
                uint32_t *d32 = (uint32_t *)(y16 + o0 + j * ostep);
                d32[0] = bf16_bits(src[0]) | (uint32_t)bf16_bits(src[1]) << 16;
                d32[1] = bf16_bits(src[2]) | (uint32_t)bf16_bits(src[3]) << 16;
            } else if (y32 == p.y_pregate) { /* read by the backward only: evict first */
                __stcs((float4 *)(y32 + o0 + j * ostep), *(const float4 *)src);
            } else {
                *(float4 *)(y32 + o0 + j * ostep) = *(const float4 *)src;
            }
        }
    } else {
        for (int i = tid; i < FT * g::CPB; i += g::NT) {
            const int r = i / g::CPB, e = i % g::CPB;
            if (r >= nv || e >= w) continue;
            const float v = Zt[r * g::CPB + swz_col<2>(r, e)];
            if (y16)
                y16[off + (long long)r * p.Di + e] = bf16_bits(v);
            else
                y32[off + (long long)r * p.Di + e] = v;
        }
    }
}

/* QM: state-group-major lanes (lane_q / lane_ch). FINE: 0 = chunk boundaries at tile starts
 * (chunk % FT == 0), 1 = anywhere (a per-position check), 2 = every 8 positions (chunk 8, the
 * dense backward's states: one 16-byte store per thread at positions 8k of the tile; needs VEC
 * and N % 4 == 0, which VEC implies). */
template <int G, bool VEC, int FINE, bool QM, bool X16 = false>
__global__ void __launch_bounds__(32 * G) scan_fwd2_kernel(scan_params p) {
    static_assert(!X16 || VEC, "bf16 inputs take the 16-byte copies");
    typedef fwd_geom<G> g;
    constexpr int CPB = g::CPB, NP = g::NP, CPW = 32 / G, T = FT;
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    float4 *const yr = (float4 *)(sm + FK * g::STAGE); /* y's partial sums (yred_smem), G > 1 */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int q = lane_q<G, QM>(lane), cw = warp * CPW + lane_ch<G, QM>(lane);
    const int c0 = blockIdx.x * CPB, c = c0 + cw, b = blockIdx.y;
    const bool cv = c < p.Di, hz = p.z || (X16 && p.z16); /* the SiLU(z) gate */
    const int N = p.N, L = p.L, n0 = q * SPT;
    float A2[SPT], h[SPT];
#pragma unroll
    for (int k = 0; k < SPT; k++) {
        const bool nv = cv && n0 + k < N;
        A2[k] = nv ? -expf(p.A_log[(long long)c * N + n0 + k]) * LOG2E : 0.0f;
        h[k] = nv && p.h0 ? p.h0[((long long)b * p.Di + c) * N + n0 + k] : 0.0f;
    }
    const float Dc = cv && p.D ? p.D[c] : 0.0f;
    float *hc = p.h_chunks ? p.h_chunks + ((long long)b * p.Di + c) * p.nch * N : NULL;
    /* padding (states >= N, channels >= Di, positions >= L) must read as zeros */
    for (int i = tid; i < FK * g::STAGE; i += g::NT)
        sm[i] = 0.0f;
    __syncthreads();
    const int ntiles = (L + T - 1) / T;
    fwd_stage<G, VEC, X16>(p, sm, 0, b, c0, 0, tid);
    cp_commit();
    /* tile it is computed while tile it + 1 is copied in; tile it - 1's y rows are written out
     * first, from the buffer that tile it + 1 then goes into (two buffers: 32 KB per block, 6
     * blocks per multiprocessor instead of 4 with three; H200 B 8: 1.257 -> 1.235-1.243 ms) */
    for (int it = 0; it < ntiles; it++) {
        cp_wait<0>();
        if (X16) { /* this tile's bf16 x, delta (and z) -> fp32: each thread the pieces it
                    * copied (so no barrier before; the stage's fp32 tiles are free since the
                    * last one; the bf16 area is copied into again after the barrier below) */
            float *cur = sm + (it % FK) * g::STAGE;
            const uint16_t *b16 = (const uint16_t *)(sm + g::SMEM);
            widen_rows<g::NT, T, 2>(cur, b16, tid);
            widen_rows<g::NT, T, 2>(cur + T * CPB, b16 + T * 32, tid);
            if (p.z16) widen_rows<g::NT, T, 2>(cur + 2 * T * CPB, b16 + 2 * T * 32, tid);
        }
        __syncthreads();
        /* tile it - 1's y rows out of the buffer that tile it + 1 is copied into next (and the
         * pre-gate rows from its x region) */
        if ((p.y || p.y_bf16 || p.y_pregate || p.yp16) && it > 0) {
            float *prev = sm + ((it - 1) % FK) * g::STAGE;
            if (p.y || p.y_bf16)
                fwd_write_y<G, VEC>(p, prev + 2 * T * CPB, p.y, p.y_bf16, b, c0, (it - 1) * T, tid);
            if (p.y_pregate || p.yp16)
                fwd_write_y<G, VEC>(p, prev, p.y_pregate, p.yp16, b, c0, (it - 1) * T, tid);
            __syncthreads();
        }
        if (it + 1 < ntiles) fwd_stage<G, VEC, X16>(p, sm, (it + 1) % FK, b, c0, (it + 1) * T, tid);
        cp_commit();
        if (p.dt_bias || p.dt_softplus) {
            dt_transform<g::NT, CPB, 2>(p, sm + (it % FK) * g::STAGE + T * CPB, min(T, L - it * T),
                                        min(CPB, p.Di - c0), c0, tid);
            __syncthreads();
        }
        float *X = sm + (it % FK) * g::STAGE; /* (the pre-gate output replaces x at the end) */
        const float *Dl = X + T * CPB;
        float *Z = sm + (it % FK) * g::STAGE + 2 * T * CPB;
        const float *Bs = Z + T * CPB, *Cs = Bs + T * NP;
        const int t0 = it * T;
        int nb = 0;
        if (hc && FINE != 2) {
            if (!FINE) {
                if (t0 % p.chunk == 0 && cv) {
                    float *dst = hc + (long long)(t0 / p.chunk) * N;
                    if (p.hc16) { /* (bf16 at the fp32 element indices, as FINE 2's) */
                        uint16_t *d16 = (uint16_t *)p.h_chunks + (dst - p.h_chunks);
#pragma unroll
                        for (int k = 0; k < SPT; k++)
                            if (n0 + k < N) d16[n0 + k] = bf16_bits(h[k]);
                    } else {
#pragma unroll
                        for (int k = 0; k < SPT; k++)
                            if (n0 + k < N) dst[n0 + k] = h[k];
                    }
                }
            } else {
                nb = (t0 + p.chunk - 1) / p.chunk * p.chunk;
            }
        }
        float ys[T];
#pragma unroll
        for (int i = 0; i < T; i++) {
            if (FINE == 2 && i % 8 == 0 && hc) {
                if (cv && n0 < N && t0 + i < L) { /* read by the backward only: evict first */
                    const long long e = (long long)((t0 + i) >> 3) * N + n0;
                    if (p.hc16)
                        __stcs((uint2 *)const_cast<void *>(h16_at(p, hc + e)),
                               bf16x4(h[0], h[1], h[2], h[3]));
                    else
                        __stcs((float4 *)(hc + e), make_float4(h[0], h[1], h[2], h[3]));
                }
            } else if (FINE == 1 && hc) {
                const int t = t0 + i;
                if (t == nb && t < L) {
                    if (cv) {
                        float *dst = hc + (long long)(t / p.chunk) * N;
#pragma unroll
                        for (int k = 0; k < SPT; k++)
                            if (n0 + k < N) dst[n0 + k] = h[k];
                    }
                    nb += p.chunk;
                }
            }
            const float xv = X[i * CPB + swz_col<2>(i, cw)], dv = Dl[i * CPB + swz_col<2>(i, cw)];
            const float4 B4 = *(const float4 *)(Bs + i * NP + n0);
            const float4 C4 = *(const float4 *)(Cs + i * NP + n0);
            const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w}, Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
            const float dtx = dv * xv;
            float yv = 0.0f;
#pragma unroll
            for (int k = 0; k < SPT; k++) {
                const float a = ex2(dv * A2[k]);
                h[k] = fmaf(a, h[k], dtx * Bv[k]);
                yv = fmaf(h[k], Cv[k], yv);
            }
            ys[i] = yv;
            if (G > 1 && i % 4 == 3)
                yr[(i / 4) * g::NT + tid] = make_float4(ys[i - 3], ys[i - 2], ys[i - 1], yv);
        }
        if (G > 1) yred_smem<T, G, g::NT, QM>(ys, yr, tid, q, lane_ch<G, QM>(lane));
        if (p.y || p.y_bf16 || p.y_pregate || p.yp16) {
            /* gated output into the Z slots this lane read (written out next tile) */
#pragma unroll
            for (int j = 0; j < T / G; j++) {
                const int r = q * (T / G) + j;
                const int sc = r * CPB + swz_col<2>(r, cw);
                const float xo = X[sc], zo = Z[sc];
                float out = fmaf(Dc, xo, ys[j]);
                if (p.y_pregate || p.yp16) X[sc] = out; /* (read above only) out next tile */
                if (hz) out *= zo * sigmoidf_(zo);
                Z[sc] = out;
            }
        }
    }
    cp_wait<0>();
    if ((p.y || p.y_bf16 || p.y_pregate || p.yp16) && ntiles > 0) {
        __syncthreads();
        float *last = sm + ((ntiles - 1) % FK) * g::STAGE;
        if (p.y || p.y_bf16)
            fwd_write_y<G, VEC>(p, last + 2 * T * CPB, p.y, p.y_bf16, b, c0, (ntiles - 1) * T, tid);
        if (p.y_pregate || p.yp16)
            fwd_write_y<G, VEC>(p, last, p.y_pregate, p.yp16, b, c0, (ntiles - 1) * T, tid);
    }
    if (p.h_last && cv) {
        float *dst = p.h_last + ((long long)b * p.Di + c) * N;
#pragma unroll
        for (int k = 0; k < SPT; k++)
            if (n0 + k < N) dst[n0 + k] = h[k];
    }
}

/* ---------------------------------------------------------------- backward (staged, v4) */
/* One block = 32/G channels (one warp's width) x W warps that split each chunk of T = W*S
 * positions in time. The chunk's x, delta, z, dy, B, C and its entering state (h_chunks) are
 * copied into shared memory one chunk ahead (cp.async, two stages). Per chunk: F1 decays and
 * forward aggregates, combined over the warps; F2 states and the pre-gate output; gate (dz);
 * R1 reverse aggregates, combined; R2 gradients. dB/dC are summed over the warp's channels by
 * shuffles and added with one atomic per (position, value). */
template <int S, int G, int W> struct bwd_geom {
    static constexpr int CPW = 32 / G, NP = 4 * G, T = W * S, NT = 32 * W;
    static constexpr int STAGE = 4 * T * CPW + 2 * T * NP + CPW * NP;
    static constexpr int AGG = 3 * W * 32; /* float4s */
};

template <int S, int G, int W, bool VEC>
static __device__ __forceinline__ void bwd_stage(const scan_params &p, float *st, int b, int c0,
                                                 int kc, int tid) {
    typedef bwd_geom<S, G, W> g;
    constexpr int T = g::T, CPW = g::CPW, NP = g::NP;
    const int t0 = kc * T;
    const long long row0 = (long long)b * p.L + t0;
    const int nv = min(T, p.L - t0), w = min(CPW, p.Di - c0);
    stage_rows<g::NT, VEC>(st, CPW, p.x + c0, row0, p.xs, T, nv, w, tid, p.x);
    stage_rows<g::NT, VEC>(st + T * CPW, CPW, p.delta + c0, row0, p.Di, T, nv, w, tid, p.x);
    stage_rows<g::NT, VEC>(st + 2 * T * CPW, CPW, p.z ? p.z + c0 : NULL, row0, p.zs, T, nv, w, tid,
                           p.x);
    stage_rows<g::NT, VEC>(st + 3 * T * CPW, CPW, p.dy + c0, row0, p.Di, T, nv, w, tid, p.x);
    float *bs = st + 4 * T * CPW;
    stage_rows<g::NT, VEC>(bs, NP, p.Bm, row0, p.bcs, T, nv, p.N, tid, p.x);
    stage_rows<g::NT, VEC>(bs + T * NP, NP, p.Cm, row0, p.bcs, T, nv, p.N, tid, p.x);
    /* states entering the chunk: row r = channel c0 + r, at h_chunks index kc * hstep */
    stage_rows<g::NT, VEC>(bs + 2 * T * NP, NP,
                           p.h_chunks + ((long long)b * p.Di + c0) * p.nch * p.N +
                               (long long)kc * p.hstep * p.N,
                           0, (long long)p.nch * p.N, CPW, w, p.N, tid, p.x);
}

template <int S, int G, int W, bool VEC>
__global__ void __launch_bounds__(W * 32, 16 / W) scan_bwd2_kernel(scan_params p) {
    typedef bwd_geom<S, G, W> g;
    constexpr int CPW = g::CPW, NP = g::NP, T = g::T;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int q = lane & (G - 1), cl = lane / G;
    const int c0 = blockIdx.x * CPW, c = c0 + cl, b = blockIdx.y;
    const bool cv = c < p.Di;
    const int N = p.N, L = p.L, n0 = q * SPT;
    float A2[SPT];
#pragma unroll
    for (int k = 0; k < SPT; k++) {
        const bool nv = cv && n0 + k < N;
        A2[k] = nv ? -expf(p.A_log[(long long)c * N + n0 + k]) * LOG2E : 0.0f;
    }
    const float Dc = cv && p.D ? p.D[c] : 0.0f;
    extern __shared__ float4 smem4[];
    float4 *agg = smem4; /* [P | forward aggregate | reverse aggregate][W][32] */
    float *stg = (float *)(smem4 + g::AGG);
    const long long rowb = (long long)b * L;
    float carry[SPT] = {0.0f, 0.0f, 0.0f, 0.0f}; /* a_{t+1} g_{t+1} entering from the right */
    float dAacc[SPT] = {0.0f, 0.0f, 0.0f, 0.0f};
    float dDacc = 0.0f, dtb = 0.0f; /* dtb: this thread's part of ddt_bias[c] */
    const int nch = (L + T - 1) / T;
    for (int i = tid; i < 2 * g::STAGE; i += g::NT)
        stg[i] = 0.0f;
    __syncthreads();
    bwd_stage<S, G, W, VEC>(p, stg, b, c0, nch - 1, tid);
    cp_commit();
    for (int kc = nch - 1, it = 0; kc >= 0; kc--, it++) {
        cp_wait<0>();
        __syncthreads(); /* chunk kc staged; everyone is done with the other stage and agg */
        if (kc > 0) bwd_stage<S, G, W, VEC>(p, stg + ((it + 1) & 1) * g::STAGE, b, c0, kc - 1, tid);
        cp_commit();
        if (!p.delta_eff && (p.dt_bias || p.dt_softplus)) {
            dt_transform<g::NT, CPW, 0>(p, stg + (it & 1) * g::STAGE + T * CPW, min(T, L - kc * T),
                                        min(CPW, p.Di - c0), c0, tid);
            __syncthreads();
        }
        const float *X = stg + (it & 1) * g::STAGE, *Dl = X + T * CPW, *Z = Dl + T * CPW;
        const float *DY = Z + T * CPW, *Bs = DY + T * CPW, *Cs = Bs + T * NP, *H = Cs + T * NP;
        const int ts = kc * T, r0 = warp * S;
        /* F1: decays and the warp's forward aggregate */
        float av[S][SPT], P[SPT], sl[SPT];
#pragma unroll
        for (int k = 0; k < SPT; k++)
            P[k] = 1.0f, sl[k] = 0.0f;
#pragma unroll
        for (int i = 0; i < S; i++) {
            const int r = r0 + i;
            const float dv = Dl[r * CPW + cl], dtx = dv * X[r * CPW + cl];
            const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
            const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
#pragma unroll
            for (int k = 0; k < SPT; k++) {
                const float a = ex2(dv * A2[k]);
                av[i][k] = a;
                P[k] *= a;
                sl[k] = fmaf(a, sl[k], dtx * Bv[k]);
            }
        }
        agg[warp * 32 + lane] = make_float4(P[0], P[1], P[2], P[3]);
        agg[(W + warp) * 32 + lane] = make_float4(sl[0], sl[1], sl[2], sl[3]);
        __syncthreads();
        float cur[SPT];
        {
            const float4 h4 = *(const float4 *)(H + cl * NP + n0);
            float run[SPT] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll
            for (int j = 0; j < W - 1; j++) {
                if (j < warp) {
                    const float4 Pj = agg[j * 32 + lane], Sj = agg[(W + j) * 32 + lane];
                    run[0] = fmaf(Pj.x, run[0], Sj.x);
                    run[1] = fmaf(Pj.y, run[1], Sj.y);
                    run[2] = fmaf(Pj.z, run[2], Sj.z);
                    run[3] = fmaf(Pj.w, run[3], Sj.w);
                }
            }
#pragma unroll
            for (int k = 0; k < SPT; k++)
                cur[k] = run[k];
        }
        /* F2: states before each position, pre-gate output */
        float sp[S][SPT], ys[S];
#pragma unroll
        for (int i = 0; i < S; i++) {
            const int r = r0 + i;
            const float dtx = Dl[r * CPW + cl] * X[r * CPW + cl];
            const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
            const float4 C4 = *(const float4 *)(Cs + r * NP + n0);
            const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w}, Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
            float yv = 0.0f;
#pragma unroll
            for (int k = 0; k < SPT; k++) {
                sp[i][k] = cur[k];
                cur[k] = fmaf(av[i][k], cur[k], dtx * Bv[k]);
                yv = fmaf(cur[k], Cv[k], yv);
            }
            ys[i] = yv;
        }
        /* gate: each lane of the channel group handles S/G positions */
        group_reduce<S, G>(ys, q);
        float dyo[S / G];
#pragma unroll
        for (int j = 0; j < S / G; j++) {
            const int r = r0 + q * (S / G) + j, t = ts + r;
            const float gy = DY[r * CPW + cl], xo = X[r * CPW + cl];
            float dyss;
            if (p.z) {
                const float zz = Z[r * CPW + cl];
                const float sg = sigmoidf_(zz);
                const float yss = fmaf(Dc, xo, ys[j]);
                dyss = gy * zz * sg;
                if (cv && t < L) {
                    const float dzv = gy * yss * sg * fmaf(zz, 1.0f - sg, 1.0f);
                    if (p.dz_bf16)
                        p.dz_bf16[(rowb + t) * p.zs + c] = bf16_bits(dzv);
                    else
                        p.dz[(rowb + t) * p.zs + c] = dzv;
                }
            } else {
                dyss = gy;
            }
            dDacc = fmaf(dyss, xo, dDacc);
            dyo[j] = dyss;
        }
        float dys[S];
#pragma unroll
        for (int i = 0; i < S; i++)
            dys[i] = __shfl_sync(FULL_MASK, dyo[i % (S / G)], (lane & ~(G - 1)) | (i / (S / G)));
        /* R1: the warp's reverse aggregate u_out = P * u_in + ul */
        float ul[SPT] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int i = S - 1; i >= 0; i--) {
            const float4 C4 = *(const float4 *)(Cs + (r0 + i) * NP + n0);
            const float Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
#pragma unroll
            for (int k = 0; k < SPT; k++)
                ul[k] = av[i][k] * fmaf(dys[i], Cv[k], ul[k]);
        }
        agg[(2 * W + warp) * 32 + lane] = make_float4(ul[0], ul[1], ul[2], ul[3]);
        __syncthreads();
        float u[SPT];
        {
            float run[SPT] = {carry[0], carry[1], carry[2], carry[3]};
#pragma unroll
            for (int j = W - 1; j >= 0; j--) {
                if (j == warp) {
#pragma unroll
                    for (int k = 0; k < SPT; k++)
                        u[k] = run[k];
                }
                const float4 Pj = agg[j * 32 + lane], Uj = agg[(2 * W + j) * 32 + lane];
                run[0] = fmaf(Pj.x, run[0], Uj.x);
                run[1] = fmaf(Pj.y, run[1], Uj.y);
                run[2] = fmaf(Pj.z, run[2], Uj.z);
                run[3] = fmaf(Pj.w, run[3], Uj.w);
            }
#pragma unroll
            for (int k = 0; k < SPT; k++)
                carry[k] = run[k];
        }
        /* R2: gradients, walking back through the warp's positions */
        float gB[S], dd[S];
        float *dBb = p.dB + rowb * p.bcs, *dCb = p.dC + rowb * p.bcs;
#pragma unroll
        for (int i = S - 1; i >= 0; i--) {
            const int r = r0 + i, t = ts + r;
            const float dv = Dl[r * CPW + cl], dtx = dv * X[r * CPW + cl];
            const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
            const float4 C4 = *(const float4 *)(Cs + r * NP + n0);
            const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w}, Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
            float vals[8];
            float gb = 0.0f, de = 0.0f;
#pragma unroll
            for (int k = 0; k < SPT; k++) {
                const float gk = fmaf(dys[i], Cv[k], u[k]);
                const float spa = sp[i][k] * av[i][k];
                vals[k] = gk * dtx;
                vals[4 + k] = dys[i] * fmaf(dtx, Bv[k], spa);
                gb = fmaf(gk, Bv[k], gb);
                const float e = gk * spa;
                de = fmaf(e, A2[k], de);
                dAacc[k] = fmaf(e, dv, dAacc[k]);
                u[k] = av[i][k] * gk;
            }
            gB[i] = gb;
            dd[i] = de * LN2; /* A = A2 * ln 2 */
            bc_reduce_add<G>(vals, lane, q, N, n0, dBb + (long long)t * p.bcs,
                             dCb + (long long)t * p.bcs, t < L && !p.skip_bc);
        }
        group_reduce<S, G>(gB, q);
        group_reduce<S, G>(dd, q);
#pragma unroll
        for (int j = 0; j < S / G; j++) {
            const int r = r0 + q * (S / G) + j, t = ts + r;
            if (cv && t < L) {
                const long long row = rowb + t;
                const float dxv = fmaf(gB[j], Dl[r * CPW + cl], Dc * dyo[j]);
                if (p.dx_bf16)
                    p.dx_bf16[row * p.Di + c] = bf16_bits(dxv);
                else
                    p.dx[row * p.Di + c] = dxv;
                const float gd =
                    dt_grad_pre(p, fmaf(gB[j], X[r * CPW + cl], dd[j]), Dl[r * CPW + cl]);
                dtb += gd;
                if (p.ddelta_bf16)
                    p.ddelta_bf16[row * p.Di + c] = bf16_bits(gd);
                else
                    p.ddelta[row * p.Di + c] = gd;
            }
        }
    }
    cp_wait<0>();
    __syncthreads();
    /* dA_log (+= A * dA) and dD: reduce over the block's warps, then one atomic per value */
    float4 *abuf = agg;
    float *dbuf = (float *)(agg + W * 32);
    abuf[warp * 32 + lane] = make_float4(dAacc[0], dAacc[1], dAacc[2], dAacc[3]);
#pragma unroll
    for (int h = 1; h < G; h <<= 1)
        dDacc += __shfl_xor_sync(FULL_MASK, dDacc, h);
    dbuf[warp * 32 + lane] = dDacc;
    __syncthreads();
    if (warp == 0 && cv) {
        float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        float sd = 0.0f;
        for (int j = 0; j < W; j++) {
            const float4 v = abuf[j * 32 + lane];
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
            sd += dbuf[j * 32 + lane];
        }
        const float sv[SPT] = {s.x, s.y, s.z, s.w};
#pragma unroll
        for (int k = 0; k < SPT; k++)
            if (n0 + k < N) atomicAdd(p.dA_log + (long long)c * N + n0 + k, sv[k] * A2[k] * LN2);
        if (q == 0 && p.dD) atomicAdd(p.dD + c, sd);
    }
    if (p.ddt_bias && cv) atomicAdd(p.ddt_bias + c, dtb);
}

/* ------------------------------------------------------------ backward (serial, v5) */
/* One block = 32 channels x G lanes (G warps, NT = 32 G threads); warps never wait for one
 * another inside a chunk. Every thread walks each BT = 64-position chunk alone, in two passes:
 *   forward: from the saved entering state (h_chunks, prefetched into registers), states and
 *     the pre-gate output; checkpoints of the state every BK = 8 positions go to shared memory
 *     (per thread), the output (reduced over the G lanes of a channel) to YS; then the gate
 *     (warp-local, one lane per (position, channel)): dz, dyss (overwrites YS), dD;
 *   reverse: for each 8-position sub-chunk, last first, recompute decays and states from its
 *     checkpoint into registers, then walk back: g, dA, the sums over states for dx / ddelta,
 *     and the per-channel dB / dC terms, which go through a per-warp shared buffer, are summed
 *     over the warp's 32/G channels and added to dB / dC with one 16-byte reduction
 *     (red.global.add.v4.f32) per (position, 4 states, warp). XB (the default): one shuffle
 *     first sums them over channel pairs (even channels keep dB, odd ones dC), halving the
 *     buffer traffic, and the buffer holds 4 positions; otherwise 2 positions of all terms.
 * The chunk's x, delta (32 channels) and B, C rows are staged in shared memory by cp.async
 * (one stage: the 3-4 other blocks of the multiprocessor cover the copy). The carry of g
 * between chunks stays in registers. Cost per (position, channel, state): 2 exp2 (no stored
 * decays) and about 43 instructions (measured); no __syncthreads inside a chunk. The kernel is
 * bound by shared-memory bandwidth (L1 94% busy at B 8: about 51 wavefronts per warp and
 * position, 20 of them the float4 B/C reads, which 8 channels of a warp read alike). */
#define BT 64 /* = BWD_CHUNK */
#define BK 8  /* sub-chunk kept in registers in the reverse pass */
template <int G> struct bwd3_geom {
    static constexpr int CPW = 32 / G, NP = 4 * G, NT = 32 * G, CPB = 32;
    static constexpr int NCK =
        BT / BK - 1; /* checkpoints in shared memory (the first in registers) */
    static constexpr int RBW =
        2 * CPW * 8 * G; /* per-warp dB/dC buffer: [2 positions][CPW][8G] = 512 */
    /* offsets in floats (all multiples of 4) */
    static constexpr int X = 0, DL = X + BT * CPB, BS = DL + BT * CPB, CS = BS + BT * NP;
    static constexpr int YS = CS + BT * NP, CK = YS + BT * CPB, RB = CK + NCK * NT * 4;
    static constexpr int TOTAL = RB + G * RBW;
};

/* XOR applied to the 4-float group index (dB groups 0..G-1, dC groups G..2G-1) of channel ch in
 * the dB/dC buffer, so that both the writes (two channels per 8-lane phase) and the sums (two
 * channel blocks per phase) hit distinct banks for G = 4. */
template <int G> static __device__ __forceinline__ int rb_swz(int ch) {
    return ((ch ^ (ch >> 2)) & 1) * G;
}

template <int G, bool VEC, bool X16 = false>
static __device__ __forceinline__ void bwd3_stage(const scan_params &p, float *sm, int b, int c0,
                                                  int kc, int tid) {
    typedef bwd3_geom<G> g;
    const int t0 = kc * BT;
    const long long row0 = (long long)b * p.L + t0;
    const int nv = min(BT, p.L - t0), w = min(g::CPB, p.Di - c0);
    if (X16) { /* into the dB / dC buffer, widened into X / DL at the chunk's start */
        static_assert(!X16 || G * g::RBW * 4 >= 2 * BT * 32 * 2, "x, delta fit the dB/dC buffer");
        uint16_t *rb = (uint16_t *)(sm + g::RB);
        stage_rows16<g::NT, BT>(rb, p.x16 + c0, row0, p.xs16, nv, w, tid, p.x);
        stage_rows16<g::NT, BT>(rb + BT * 32, p.delta16 + c0, row0, p.Di, nv, w, tid, p.x);
    } else {
        stage_rows<g::NT, VEC, 1>(sm + g::X, g::CPB, p.x + c0, row0, p.xs, BT, nv, w, tid, p.x);
        stage_rows<g::NT, VEC, 1>(sm + g::DL, g::CPB, p.delta + c0, row0, p.Di, BT, nv, w, tid,
                                  p.x);
    }
    stage_rows<g::NT, VEC>(sm + g::BS, g::NP, p.Bm, row0, p.bcs, BT, nv, p.N, tid, p.x);
    stage_rows<g::NT, VEC>(sm + g::CS, g::NP, p.Cm, row0, p.bcs, BT, nv, p.N, tid, p.x);
}

/* State entering chunk kc for this thread's channel and states (zeros outside). */
template <bool VEC>
static __device__ __forceinline__ void bwd3_load_h(const scan_params &p, const float *hrow, int kc,
                                                   int n0, bool cv, float h[SPT]) {
    const float *hp = hrow + (long long)kc * p.hstep * p.N + n0;
    if (VEC && p.hc16) { /* (bf16 at the same element index) */
        const bool ok = cv && n0 < p.N;
        const uint2 u =
            ok ? __ldg((const uint2 *)((const uint16_t *)p.h_chunks + (hp - p.h_chunks)))
               : make_uint2(0u, 0u);
        h[0] = bf16_lo(u.x), h[1] = bf16_hi(u.x), h[2] = bf16_lo(u.y), h[3] = bf16_hi(u.y);
    } else if (VEC) {
        const bool ok = cv && n0 < p.N;
        const float4 v = ok ? __ldg((const float4 *)hp) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        h[0] = v.x, h[1] = v.y, h[2] = v.z, h[3] = v.w;
    } else {
#pragma unroll
        for (int k = 0; k < SPT; k++)
            h[k] = cv && n0 + k < p.N ? __ldg(hp + k) : 0.0f;
    }
}

/* Dense backward (DN): the 7 checkpoints of chunk kc after its first (h_chunks at chunk 8,
 * entries kc * 8 + 1 .. 7) into CK and the forward's pre-gate output into YS, by cp.async with
 * the chunk's other tiles; entries past the sequence read as zeros (their sub-chunks are
 * padding). */
template <int G, bool VEC, bool YP = false>
static __device__ __forceinline__ void bwd3_stage_dense(const scan_params &p, float *sm,
                                                        const float *hrow, int b, int c0, int kc,
                                                        int n0, bool cv, int tid) {
    typedef bwd3_geom<G> g;
    const int t0 = kc * BT;
    const long long row0 = (long long)b * p.L + t0;
    const int nv = min(BT, p.L - t0), w = min(g::CPB, p.Di - c0);
    if (!YP) /* (YP: the gate reads the bf16 pre-gate output itself) */
        stage_rows<g::NT, VEC, 1>(sm + g::YS, g::CPB, p.y_pregate + c0, row0, p.Di, BT, nv, w, tid,
                                  p.x);
#pragma unroll
    for (int j = 1; j < BT / BK; j++) {
        const long long e = (long long)kc * (BT / BK) + j;
        const bool ok = cv && n0 < p.N && e < p.nch;
        if (p.hc16) /* 8 bytes into the first half of the checkpoint's slot */
            cp8(sm + g::CK + ((j - 1) * g::NT + tid) * 4,
                ok ? (const float *)((const uint16_t *)p.h_chunks + (hrow - p.h_chunks) + e * p.N +
                                     n0)
                   : p.x,
                ok);
        else
            cp16(sm + g::CK + ((j - 1) * g::NT + tid) * 4, ok ? hrow + e * p.N + n0 : p.x, ok);
    }
}

/* The v5 gate's dy and z at positions t0, t0 + G, ... (16) of channel gc (zeros where !gcv, past
 * L, or for z where !hz): branch-free, the addresses clamped into the tensors and the values
 * then selected, so that the 32 loads issue together (loads in per-position branches, as the
 * run-time choice of fp32 or bf16 tensors made them, cost the backward 35%). DY16 / Z16: dy
 * (p.dy16) / z (p.z16) as bf16. */
template <int G, bool DY16, bool Z16, bool YP = false, int M = 16>
static __device__ __forceinline__ void gate_loads(const scan_params &p, long long rowb, int t0,
                                                  int gc, bool gcv, bool hz, float gy[M],
                                                  float zr[M], float yp[M] = NULL) {
    const int gcc = gcv ? gc : p.Di - 1;
    if (YP) { /* the forward's bf16 pre-gate output (plain loads: the gate may overwrite it) */
#pragma unroll
        for (int m = 0; m < M; m++) {
            const int t = t0 + G * m;
            const long long row = rowb + min(t, p.L - 1);
            const float v = bf16_lo(p.yp16[row * p.Di + gcc]);
            yp[m] = gcv && t < p.L ? v : 0.0f;
        }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        const int t = t0 + G * m;
        const long long row = rowb + min(t, p.L - 1);
        const float v =
            DY16 ? bf16_lo(__ldg(p.dy16 + row * p.Di + gcc)) : __ldg(p.dy + row * p.Di + gcc);
        gy[m] = gcv && t < p.L ? v : 0.0f;
    }
    if (hz) {
#pragma unroll
        for (int m = 0; m < M; m++) {
            const int t = t0 + G * m;
            const long long row = rowb + min(t, p.L - 1);
            const float v =
                Z16 ? bf16_lo(__ldg(p.z16 + row * p.zs + gcc)) : __ldg(p.z + row * p.zs + gcc);
            zr[m] = gcv && t < p.L ? v : 0.0f;
        }
    } else {
#pragma unroll
        for (int m = 0; m < M; m++)
            zr[m] = 0.0f;
    }
}

/* The X16 backward's gate by channel quads (p.gate4: bf16 dy, z and dz, and in the YP form
 * yp16 / yg16, all 8-byte aligned; Di % 8 == 0, so a quad is valid or not as a whole): lane l
 * of warp w takes channels w CPW + 4 (l & 1) .. + 3 at positions l / 2 + 16 m of the chunk (m
 * < BT / 16), the warp's CPW = 8 channels as the per-element gate; per quad and position one
 * 8-byte load of each bf16 input, one 16-byte shared-memory load of x (and of YS where it holds
 * the output), one 16-byte store of dyss into YS and one 8-byte store of dz (and yg16), where
 * the per-element gate spends its 64-bit index arithmetic once per element (~84 instructions
 * per element, session 10). Same arithmetic per element. H200, ms, per-element gate / quads
 * (bench_scan_cuda, same call): B 8 dense bf16 states 3.673-3.684 / 3.483-3.534, plain YP
 * 4.050-4.061 / 3.866-3.883; B 32 Di 1024 dense 7.233-7.259 / 6.910-6.928; training medium
 * 136.9-137.8 / 134.7-134.8 ms/step, 353m (--recompute on --gpu-memory 66) 599.6 / 590.2. dD: the
 * quads' sums over the warp's positions, folded into the per-element layout's dDacc (lane l < CPW:
 * channel w CPW + l), which the kernel's end sums over lanes l, l + CPW, ... */
#ifndef GQ_YP_BATCH
/* gate_quads' passes per batch of loads in the YP forms: with 2 (or all 4) ptxas spilled 4-8
 * (44) bytes in the dense YP backward, none with 1; H200, B 8, the two timed alike (plain YP
 * 3.860-3.861 ms against 3.866-3.883, dense YP 3.575-3.583 against 3.555-3.584) */
#define GQ_YP_BATCH 1
#endif
template <int G, bool DN, bool YP>
static __device__ __forceinline__ void gate_quads(const scan_params &p, const float *X, float *YS,
                                                  long long rowb, int ts, int c0, int warp,
                                                  int lane, float &dDacc) {
    constexpr int CPW = 32 / G, CPB = 32, NM = BT / 16;
    static_assert(CPW == 8, "two channel quads per warp");
    const int cq = lane & 1, pr = lane >> 1, gcw = warp * CPW + 4 * cq, gc = c0 + gcw;
    const bool qv = gc < p.Di;
    const int gcc = qv ? gc : 0, L = p.L;
    float Dq[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* (the D skip, where YS holds y without it) */
    if (!DN && !YP && qv && p.D)
#pragma unroll
        for (int e = 0; e < 4; e++)
            Dq[e] = p.D[gc + e];
    float dD4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    /* MB passes' loads in flight at once (all NM where they fit the registers: the YP forms
     * keep a third input) */
    constexpr int MB = YP ? GQ_YP_BATCH : NM;
#pragma unroll
    for (int m0 = 0; m0 < NM; m0 += MB) {
        uint2 dyv[MB], zv[MB], ypv[MB];
#pragma unroll
        for (int i = 0; i < MB; i++) {
            const int t = ts + pr + 16 * (m0 + i);
            const bool ok = qv && t < L;
            const long long row = rowb + min(t, L - 1);
            dyv[i] = ok ? __ldg((const uint2 *)(p.dy16 + row * p.Di + gcc)) : make_uint2(0u, 0u);
            zv[i] = ok ? __ldg((const uint2 *)(p.z16 + row * p.zs + gcc)) : make_uint2(0u, 0u);
            /* (plain loads: yg16 may be yp16 itself) */
            if (YP) ypv[i] = ok ? *(const uint2 *)(p.yp16 + row * p.Di + gcc) : make_uint2(0u, 0u);
        }
#pragma unroll
        for (int i = 0; i < MB; i++) {
            const int r = pr + 16 * (m0 + i), t = ts + r;
            const int sc = r * CPB + swz_col<1>(r, gcw); /* (4 channels contiguous: 16 bytes) */
            const float4 x4 = *(const float4 *)(X + sc);
            const float xo[4] = {x4.x, x4.y, x4.z, x4.w};
            float ysv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (!YP) {
                const float4 y4 = *(const float4 *)(YS + sc);
                ysv[0] = y4.x, ysv[1] = y4.y, ysv[2] = y4.z, ysv[3] = y4.w;
            }
            const float gy[4] = {bf16_lo(dyv[i].x), bf16_hi(dyv[i].x), bf16_lo(dyv[i].y),
                                 bf16_hi(dyv[i].y)};
            const float zz[4] = {bf16_lo(zv[i].x), bf16_hi(zv[i].x), bf16_lo(zv[i].y),
                                 bf16_hi(zv[i].y)};
            float ypf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (YP)
                ypf[0] = bf16_lo(ypv[i].x), ypf[1] = bf16_hi(ypv[i].x), ypf[2] = bf16_lo(ypv[i].y),
                ypf[3] = bf16_hi(ypv[i].y);
            float dyss[4], dzv[4], ygv[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float sg = sigmoidf_(zz[e]);
                const float yss = YP ? ypf[e] : DN ? ysv[e] : fmaf(Dq[e], xo[e], ysv[e]);
                dyss[e] = gy[e] * zz[e] * sg;
                dzv[e] = gy[e] * yss * sg * fmaf(zz[e], 1.0f - sg, 1.0f);
                ygv[e] = yss * zz[e] * sg;
                dD4[e] = fmaf(dyss[e], xo[e], dD4[e]);
            }
            if (qv && t < L) {
                const long long row = rowb + t;
                *(uint2 *)(p.dz_bf16 + row * p.zs + gc) = bf16x4(dzv[0], dzv[1], dzv[2], dzv[3]);
                /* YP: the gated output again (mamba_ssm's recomputed out_z) */
                if (YP && p.yg16)
                    *(uint2 *)(p.yg16 + row * p.Di + gc) = bf16x4(ygv[0], ygv[1], ygv[2], ygv[3]);
            }
            *(float4 *)(YS + sc) = make_float4(dyss[0], dyss[1], dyss[2], dyss[3]);
        }
    }
    /* dD: the quad's sums over the 16 lanes of the same cq, then channel l of the warp (l <
     * CPW) from lane (l >> 2) & 1's element l & 3 */
#pragma unroll
    for (int off = 2; off < 32; off <<= 1)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dD4[e] += __shfl_xor_sync(FULL_MASK, dD4[e], off);
    const int src = (lane >> 2) & 1, el = lane & 3;
    float v = 0.0f;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float w = __shfl_sync(FULL_MASK, dD4[e], src);
        v = el == e ? w : v;
    }
    if (lane < CPW) dDacc += v;
}

/* QM: state-group-major lanes (lane_q / lane_ch). O16: dx, ddelta and dz (where z is given) go
 * to their bf16 outputs, chosen at compile time (the mixed-precision training's form; the
 * run-time choice of each output's pointer cost this kernel ~3%). DN (dense, VEC only): the
 * forward saved the states every 8 positions (p.chunk == 8) and the pre-gate output
 * (p.y_pregate); they are staged with the chunk instead of recomputed by the forward pass, which
 * this form leaves out (about a fifth of the kernel's instructions). */
template <int G, bool VEC, int XB, bool QM, bool O16, bool DN = false, bool X16 = false,
          bool YP = false>
__global__ void __launch_bounds__(32 * G, 16 / G) scan_bwd3_kernel(scan_params p) {
    static_assert(!X16 || VEC, "bf16 inputs take the 16-byte copies");
    static_assert(!YP || X16, "YP: the bf16-input forms");
    typedef bwd3_geom<G> g;
    constexpr int CPW = g::CPW, NP = g::NP, NT = g::NT, CPB = g::CPB, LS = QM ? CPW : 1;
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    const float *X = sm + g::X, *Dl = sm + g::DL, *Bs = sm + g::BS, *Cs = sm + g::CS;
    float *YS = sm + g::YS;
    float4 *CK = (float4 *)(sm + g::CK);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float *RB = sm + g::RB + warp * g::RBW;
    /* scan mapping: channel cw of the block, states n0..n0+3 */
    const int q = lane_q<G, QM>(lane), cl = lane_ch<G, QM>(lane), cw = warp * CPW + cl;
    const int c0 = blockIdx.x * CPB, c = c0 + cw, b = blockIdx.y;
    const bool cv = c < p.Di, hz = p.z || (X16 && p.z16); /* the SiLU(z) gate */
    const int N = p.N, L = p.L, n0 = q * SPT;
    /* gate mapping: channel gcw, positions gpo + G m */
    const int gch = lane % CPW, gpo = lane / CPW, gcw = warp * CPW + gch, gc = c0 + gcw;
    const bool gcv = gc < p.Di;
    const float Dc = cv && p.D ? p.D[c] : 0.0f, Dg = gcv && p.D ? p.D[gc] : 0.0f;
    float A2[SPT];
#pragma unroll
    for (int k = 0; k < SPT; k++) {
        const bool nv = cv && n0 + k < N;
        A2[k] = nv ? -expf(p.A_log[(long long)c * N + n0 + k]) * LOG2E : 0.0f;
    }
    const long long rowb = (long long)b * L;
    const float *hrow = p.h_chunks + ((long long)b * p.Di + (cv ? c : 0)) * p.nch * N;
    const int swz = rb_swz<G>(cl);
    /* the gate's positions per batch of loads (YP: three tensors' loads, so half as many) */
    constexpr int GM = YP ? 8 : 16;
    /* dB/dC sum mapping: LP lanes per (position, 4-state group), 4 channels each */
    constexpr int LP = 8 / G;
    const int spart = lane % LP, squad = (lane / LP) % (2 * G), spos = lane / LP / (2 * G);
    float *sdst = NULL;
    int sn = 4 * (squad % G);
    {
        float *base = squad < G ? p.dB : p.dC;
        sdst = base + rowb * p.bcs + sn;
    }
    /* XB: LPX lanes per (position, group) over 4 positions, 4 channel pairs each */
    constexpr int LPX = 4 / G;
    const int xpart = lane % LPX, xquad = (lane / LPX) % (2 * G), xpos = lane / LPX / (2 * G);
    const int xn = 4 * (xquad % G);
    float *const xdst = (xquad < G ? p.dB : p.dC) + rowb * p.bcs + xn;
    float u[SPT] = {0.0f, 0.0f, 0.0f, 0.0f}; /* a_{t+1} g_{t+1}: the carry from the right */
    float dA[SPT] = {0.0f, 0.0f, 0.0f, 0.0f};
    float dDacc = 0.0f, dtb = 0.0f; /* dtb: this thread's part of ddt_bias[c] */
    const int nch = (L + BT - 1) / BT;
    bwd3_stage<G, VEC, X16>(p, sm, b, c0, nch - 1, tid);
    if (DN) bwd3_stage_dense<G, VEC, YP>(p, sm, hrow, b, c0, nch - 1, n0, cv, tid);
    cp_commit();
    float hn[SPT];
    bwd3_load_h<VEC>(p, hrow, nch - 1, n0, cv, hn);
#pragma unroll 1
    for (int kc = nch - 1; kc >= 0; kc--) {
        const float h0v[SPT] = {hn[0], hn[1], hn[2], hn[3]};
        cp_wait<0>();
        if (X16) { /* the chunk's bf16 x and delta -> fp32 (before the dB / dC buffer's use):
                    * each thread the pieces it copied, so no barrier before */
            const uint16_t *rb = (const uint16_t *)(sm + g::RB);
            widen_rows<NT, BT, 1>(sm + g::X, rb, tid);
            widen_rows<NT, BT, 1>(sm + g::DL, rb + BT * 32, tid);
        }
        __syncthreads();
        const int ts = kc * BT;
        if (!p.delta_eff && (p.dt_bias || p.dt_softplus)) {
            dt_transform<NT, CPB, 1>(p, sm + g::DL, min(BT, L - ts), min(CPB, p.Di - c0), c0, tid);
            __syncthreads();
        }
        /* ---- forward pass: states, checkpoints, pre-gate output (DN: staged instead) */
        if (!DN) {
            float cur[SPT] = {h0v[0], h0v[1], h0v[2], h0v[3]};
#pragma unroll 1
            for (int j = 0; j < BT / BK; j++) {
                if (j > 0) CK[(j - 1) * NT + tid] = make_float4(cur[0], cur[1], cur[2], cur[3]);
                /* (YP: the states only; the gate reads the forward's output) */
                float ys[BK];
#pragma unroll
                for (int i = 0; i < BK; i++) {
                    const int r = j * BK + i;
                    const int sc = r * CPB + swz_col<1>(i, cw); /* r % 8 == i */
                    const float dv = Dl[sc], dtx = dv * X[sc];
                    const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
                    const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
                    float Cv[SPT] = {0.0f, 0.0f, 0.0f, 0.0f};
                    if (!YP) {
                        const float4 C4 = *(const float4 *)(Cs + r * NP + n0);
                        Cv[0] = C4.x, Cv[1] = C4.y, Cv[2] = C4.z, Cv[3] = C4.w;
                    }
                    float yv = 0.0f;
#pragma unroll
                    for (int k = 0; k < SPT; k++) {
                        const float a = ex2(dv * A2[k]);
                        cur[k] = fmaf(a, cur[k], dtx * Bv[k]);
                        if (!YP) yv = fmaf(cur[k], Cv[k], yv);
                    }
                    ys[i] = yv;
                }
                if (!YP) {
                    group_reduce<BK, G, LS>(ys, q);
#pragma unroll
                    for (int jj = 0; jj < BK / G; jj++) {
                        const int r = j * BK + q * (BK / G) + jj;
                        YS[r * CPB + swz_col<1>(r, cw)] = ys[jj];
                    }
                }
            }
        }
        __syncwarp();
        /* ---- gate (one lane per (position, channel)): dz, dyss -> YS, dD (DN: YS holds the
         * forward's pre-gate output with its D skip) */
        bool quads = false; /* by channel quads: a lane 4 channels at one position */
        if constexpr (X16 && G == 4)
            if (p.gate4) {
                gate_quads<G, DN, YP>(p, X, YS, rowb, ts, c0, warp, lane, dDacc);
                quads = true;
            }
        if (!quads)
#pragma unroll 1
            for (int mb = 0; mb < BT / G; mb += GM) {
                float gy[GM], zr[GM], yp[GM];
                const int t0 = ts + gpo + G * mb;
                if (YP) {
                    if (p.dy16 && p.z16)
                        gate_loads<G, true, true, true, GM>(p, rowb, t0, gc, gcv, hz, gy, zr, yp);
                    else if (p.dy16)
                        gate_loads<G, true, false, true, GM>(p, rowb, t0, gc, gcv, hz, gy, zr, yp);
                    else if (p.z16)
                        gate_loads<G, false, true, true, GM>(p, rowb, t0, gc, gcv, hz, gy, zr, yp);
                    else
                        gate_loads<G, false, false, true, GM>(p, rowb, t0, gc, gcv, hz, gy, zr, yp);
                } else if (X16 && p.dy16) {
                    if (X16 && p.z16)
                        gate_loads<G, true, true, false, GM>(p, rowb, t0, gc, gcv, hz, gy, zr);
                    else
                        gate_loads<G, true, false, false, GM>(p, rowb, t0, gc, gcv, hz, gy, zr);
                } else {
                    if (X16 && p.z16)
                        gate_loads<G, false, true, false, GM>(p, rowb, t0, gc, gcv, hz, gy, zr);
                    else
                        gate_loads<G, false, false, false, GM>(p, rowb, t0, gc, gcv, hz, gy, zr);
                }
#pragma unroll
                for (int m = 0; m < GM; m++) {
                    const int r = gpo + G * (mb + m), t = ts + r;
                    const int sc = r * CPB + swz_col<1>(r, gcw);
                    const float xo = X[sc];
                    float dyss = gy[m];
                    if (hz) {
                        const float zz = zr[m], sg = sigmoidf_(zz);
                        const float yss = YP ? yp[m] : DN ? YS[sc] : fmaf(Dg, xo, YS[sc]);
                        dyss = gy[m] * zz * sg;
                        if (gcv && t < L) {
                            const float dzv = gy[m] * yss * sg * fmaf(zz, 1.0f - sg, 1.0f);
                            if (O16 || p.dz_bf16)
                                p.dz_bf16[(rowb + t) * p.zs + gc] = bf16_bits(dzv);
                            else
                                p.dz[(rowb + t) * p.zs + gc] = dzv;
                            /* YP: the gated output again (mamba_ssm's recomputed out_z) */
                            if (YP && p.yg16)
                                p.yg16[(rowb + t) * p.Di + gc] = bf16_bits(yss * zz * sg);
                        }
                    } else if (YP && p.yg16 && gcv && t < L) {
                        p.yg16[(rowb + t) * p.Di + gc] = bf16_bits(yp[m]);
                    }
                    dDacc = fmaf(dyss, xo, dDacc);
                    YS[sc] = dyss;
                }
            }
        __syncwarp();
        /* ---- reverse pass, one 8-position sub-chunk at a time */
#pragma unroll 1
        for (int j = BT / BK - 1; j >= 0; j--) {
            const int i0 = j * BK;
            float s0[SPT];
            if (j == 0) {
#pragma unroll
                for (int k = 0; k < SPT; k++)
                    s0[k] = h0v[k];
            } else if (DN && p.hc16) {
                const uint2 u = *(const uint2 *)&CK[(j - 1) * NT + tid];
                s0[0] = bf16_lo(u.x), s0[1] = bf16_hi(u.x), s0[2] = bf16_lo(u.y),
                s0[3] = bf16_hi(u.y);
            } else {
                const float4 v = CK[(j - 1) * NT + tid];
                s0[0] = v.x, s0[1] = v.y, s0[2] = v.z, s0[3] = v.w;
            }
            float av[BK][SPT], st[BK][SPT];
            {
                float cur[SPT] = {s0[0], s0[1], s0[2], s0[3]};
#pragma unroll
                for (int i = 0; i < BK; i++) {
                    const int r = i0 + i;
                    const int sc = r * CPB + swz_col<1>(i, cw); /* r % 8 == i */
                    const float dv = Dl[sc], dtx = dv * X[sc];
                    const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
                    const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
#pragma unroll
                    for (int k = 0; k < SPT; k++) {
                        const float a = ex2(dv * A2[k]);
                        av[i][k] = a;
                        cur[k] = fmaf(a, cur[k], dtx * Bv[k]);
                        st[i][k] = cur[k];
                    }
                }
            }
            float gB[BK], dE[BK];
#pragma unroll
            for (int i = BK - 1; i >= 0; i--) {
                const int r = i0 + i;
                const int sc = r * CPB + swz_col<1>(i, cw); /* r % 8 == i */
                const float dys = YS[sc];
                const float dv = Dl[sc], dtx = dv * X[sc];
                const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
                const float4 C4 = *(const float4 *)(Cs + r * NP + n0);
                const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
                const float Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
                float vb[SPT], vc[SPT], gb = 0.0f, de = 0.0f;
#pragma unroll
                for (int k = 0; k < SPT; k++) {
                    const float gk = fmaf(dys, Cv[k], u[k]);
                    vb[k] = gk * dtx;
                    vc[k] = dys * st[i][k];
                    gb = fmaf(gk, Bv[k], gb);
                    u[k] = av[i][k] * gk; /* a_t g_t: the carry, and times s_{t-1} the dA term */
                    const float e = u[k] * (i > 0 ? st[i > 0 ? i - 1 : 0][k] : s0[k]);
                    de = fmaf(e, A2[k], de);
                    dA[k] = fmaf(e, dv, dA[k]);
                }
                gB[i] = gb;
                dE[i] = de;
                if (!p.skip_bc && XB == 1) {
                    /* one exchange with the lane of channel cl ^ 1 first: even channels keep the
                     * dB terms of the pair, odd ones the dC terms; then 4 positions per sum */
                    const bool odd = (cl & 1) != 0;
                    float kv[SPT];
#pragma unroll
                    for (int k = 0; k < SPT; k++) {
                        const float send = odd ? vb[k] : vc[k], keep = odd ? vc[k] : vb[k];
                        kv[k] = keep + __shfl_xor_sync(FULL_MASK, send, QM ? 1 : G);
                    }
                    float *row = RB + (i & 3) * (CPW / 2 * 8 * G) + (cl >> 1) * (8 * G);
                    *(float4 *)(row + 4 * (odd ? G + q : q)) =
                        make_float4(kv[0], kv[1], kv[2], kv[3]);
                    if ((i & 3) == 0) {
                        /* positions i .. i + 3 (xpos) are in the buffer */
                        __syncwarp();
                        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
                        for (int jj = 0; jj < 4; jj++) {
                            const float4 v =
                                *(const float4 *)(RB + xpos * (CPW / 2 * 8 * G) +
                                                  (xpart * 4 + jj) * (8 * G) + 4 * xquad);
                            acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
                        }
                        const int t = ts + i0 + i + xpos;
                        bc_reduce_add<LPX>(acc, xpart == 0 && t < L && xn < N,
                                           xdst + (long long)t * p.bcs, N - xn, p.red_vec);
                        __syncwarp();
                    }
                }
                if (!p.skip_bc && XB == 0) {
                    float *row = RB + (i & 1) * (CPW * 8 * G) + cl * (8 * G);
                    *(float4 *)(row + 4 * (q ^ swz)) = make_float4(vb[0], vb[1], vb[2], vb[3]);
                    *(float4 *)(row + 4 * ((G + q) ^ swz)) =
                        make_float4(vc[0], vc[1], vc[2], vc[3]);
                    if ((i & 1) == 0) {
                        /* positions i (spos 0) and i + 1 (spos 1) are in the buffer */
                        __syncwarp();
                        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
                        for (int jj = 0; jj < 4; jj++) {
                            const int ch = spart * 4 + jj;
                            const float4 v =
                                *(const float4 *)(RB + spos * (CPW * 8 * G) + ch * (8 * G) +
                                                  4 * (squad ^ rb_swz<G>(ch)));
                            acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
                        }
                        const int t = ts + i0 + i + spos;
                        bc_reduce_add<LP>(acc, spart == 0 && t < L && sn < N,
                                          sdst + (long long)t * p.bcs, N - sn, p.red_vec);
                        __syncwarp();
                    }
                }
            }
            group_reduce<BK, G, LS>(gB, q);
            group_reduce<BK, G, LS>(dE, q);
#pragma unroll
            for (int jj = 0; jj < BK / G; jj++) {
                const int r = i0 + q * (BK / G) + jj, t = ts + r;
                if (cv && t < L) {
                    const long long row = rowb + t;
                    const int sc = r * CPB + swz_col<1>(r, cw);
                    const float dxv = fmaf(gB[jj], Dl[sc], Dc * YS[sc]);
                    if (O16 || p.dx_bf16)
                        p.dx_bf16[row * p.Di + c] = bf16_bits(dxv);
                    else
                        p.dx[row * p.Di + c] = dxv;
                    const float gd = dt_grad_pre(p, fmaf(gB[jj], X[sc], dE[jj] * LN2), Dl[sc]);
                    dtb += gd;
                    if (O16 || p.ddelta_bf16)
                        p.ddelta_bf16[row * p.Di + c] = bf16_bits(gd);
                    else
                        p.ddelta[row * p.Di + c] = gd;
                }
            }
        }
        __syncthreads(); /* everyone is done with the staged chunk */
        if (kc > 0) {
            bwd3_stage<G, VEC, X16>(p, sm, b, c0, kc - 1, tid);
            if (DN) bwd3_stage_dense<G, VEC, YP>(p, sm, hrow, b, c0, kc - 1, n0, cv, tid);
            bwd3_load_h<VEC>(p, hrow, kc - 1, n0, cv, hn);
        }
        cp_commit();
    }
    cp_wait<0>();
    if (cv) {
#pragma unroll
        for (int k = 0; k < SPT; k++)
            if (n0 + k < N) atomicAdd(p.dA_log + (long long)c * N + n0 + k, dA[k] * A2[k] * LN2);
    }
#pragma unroll
    for (int off = CPW; off < 32; off <<= 1)
        dDacc += __shfl_xor_sync(FULL_MASK, dDacc, off);
    if (p.dD && gcv && lane < CPW) atomicAdd(p.dD + gc, dDacc);
    if (p.ddt_bias && cv) atomicAdd(p.ddt_bias + c, dtb);
}

/* dB, dC columns := 0 (they are accumulated with atomics). */
__global__ void zero_bc_kernel(float *dB, float *dC, long long rows, long long stride, int N) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * N) return;
    const long long r = i / N, n = i % N;
    dB[r * stride + n] = 0.0f;
    dC[r * stride + n] = 0.0f;
}

#ifndef MB_SCAN_EMU
/* ------------------------------------------------------------------------------ host side */
/* Lane layout defaults, as measured on the H200 (bench_scan_cuda, B 8, commit 6e9e996): the
 * staged forward state-group-major (1.256 against 1.321 ms channel-major), the v5 backward
 * channel-major (4.31 against 4.41 ms). */
#define LANE_QM_FWD_DEFAULT 1
#define LANE_QM_BWD_DEFAULT 0
static int g_fwd_warps = 0; /* > 0: the legacy forward kernel with that many warps per tile */
static int g_bwd_warps = 0; /* 0: automatic; 1: v5 (one thread walks a chunk); 8 or 16: v4 */
static int g_skip_bc = 0;
static int g_dense_off = 0; /* lab knob: the backward ignores y_pregate (forward pass kept) */
static int g_lane_qm_fwd = LANE_QM_FWD_DEFAULT; /* state-group-major lanes: staged forward */
static int g_lane_qm = LANE_QM_BWD_DEFAULT;     /* state-group-major lanes: v5 backward */

extern "C" void mb_scan_cuda_set_lane_layout(int state_major) {
    g_lane_qm_fwd = state_major < 0 ? LANE_QM_FWD_DEFAULT : state_major != 0;
    g_lane_qm = state_major < 0 ? LANE_QM_BWD_DEFAULT : state_major != 0;
}

extern "C" void mb_scan_cuda_lab_dense_off(int off) {
    g_dense_off = off;
}
extern "C" void mb_scan_cuda_lab_skip_bc_atomics(int skip) {
    g_skip_bc = skip;
}

static int g_gate4 = -1; /* -1: from MB_CUDA_SCAN_GATE4 at the next backward */
extern "C" void mb_scan_cuda_lab_gate4(int on) {
    g_gate4 = on < 0 ? -1 : on != 0;
}
static int gate4_allowed(void) {
    if (g_gate4 < 0) {
        const char *v = getenv("MB_CUDA_SCAN_GATE4");
        g_gate4 = !(v && !strcmp(v, "0"));
    }
    return g_gate4;
}

extern "C" void mb_scan_cuda_set_forward_warps(int warps) {
    g_fwd_warps = warps;
}

extern "C" void mb_scan_cuda_set_backward_warps(int warps) {
    g_bwd_warps = warps;
}

extern "C" int mb_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int64_t mb_scan_cuda_preferred_chunk(void) {
    return BWD_CHUNK;
}

extern "C" int64_t mb_scan_cuda_dense_chunk(void) {
    return BK;
}

static int cuda_fail(cudaError_t e, const char *what) {
    return mb_fail(MB_EIO, "%s: CUDA error %s (%s)", what, cudaGetErrorName(e),
                   cudaGetErrorString(e));
}

static int lanes_per_channel(int64_t N) {
    const int64_t q = (N + SPT - 1) / SPT;
    int g = 1;
    while (g < q)
        g <<= 1;
    return g;
}

/* Backward kernel choice: 1 = v5 (scan_bwd3_kernel), 2 = v5 with the dB/dC pair exchange
 * (XB), 0 = v4 (scan_bwd2_kernel). Automatic: V5_AUTO unless the grid has fewer than 1.5 blocks
 * per multiprocessor (v5 has one block per 32 channels and sequence; v4 splits time inside a
 * block and fills a small grid better: on the H200 at L 8192, Di 2048, B 2 (128 blocks) v4 took
 * 1.87 ms and v5 2.07, at B 4 v4 3.69 and v5 2.57). */
#ifndef V5_AUTO
#define V5_AUTO 2 /* with the pair exchange: 4.19 ms against 4.43 at B 8 on the H200 */
#endif
static int choose_v5(const scan_params *p) {
    if (g_bwd_warps == 1 || g_bwd_warps == 2) return g_bwd_warps;
    if (g_bwd_warps == 8 || g_bwd_warps == 16) return 0;
    if (p->N > 16) return 0;
    const int sms = mb_cuda_sm_count();
    const long long blocks = (long long)p->B * ((p->Di + 31) / 32);
    return 2 * blocks >= 3LL * sms ? V5_AUTO : 0;
}

extern "C" int mb_scan_cuda_dense_supported(int64_t B, int64_t L, int64_t Di, int64_t N,
                                            int64_t R) {
    /* the DN kernel: 4 lanes of 4 states (N 12 or 16, 16-byte copies), a whole 8-position
     * checkpoint, 16-byte rows (x / z stride 2 Di, B / C after R columns of dt_low), and the
     * v5 pair-exchange kernel chosen for the grid */
    if (N % 4 != 0 || N <= 8 || N > 16 || L < BK || Di % 4 != 0 || R % 4 != 0 || B < 1 ||
        B > 65535 || Di >= (1LL << 31))
        return 0;
    scan_params p;
    memset(&p, 0, sizeof p);
    p.B = (int)B, p.Di = (int)Di, p.N = (int)N;
    return choose_v5(&p) == 2 && !g_dense_off;
}

static int check_args(const mb_scan_args *a, const mb_scan_cuda_opts *o, const char *fn) {
    if (!a) return mb_fail(MB_EINVAL, "%s: args is NULL", fn);
    if (a->B < 0 || a->L < 0 || a->Di < 0 || a->L >= (1LL << 31) - 2 * BWD_CHUNK ||
        a->Di >= (1LL << 31) || a->B > 65535)
        return mb_fail(MB_EINVAL, "%s: bad sizes B %lld L %lld Di %lld", fn, (long long)a->B,
                       (long long)a->L, (long long)a->Di);
    if (a->N < 1 || a->N > 32)
        return mb_fail(MB_EINVAL, "%s: d_state N %lld not in 1..32", fn, (long long)a->N);
    if (a->chunk <= 0 || a->chunk >= (1LL << 30))
        return mb_fail(MB_EINVAL, "%s: chunk %lld must be in 1..2^30", fn, (long long)a->chunk);
    if (a->B * a->L * a->Di == 0) return 0;
    if ((!a->x && !(o && o->x_bf16)) || (!a->delta && !(o && o->delta_bf16)) || !a->A_log ||
        !a->Bm || !a->Cm)
        return mb_fail(MB_EINVAL, "%s: NULL input (x, delta, A_log, Bm or Cm)", fn);
    if ((a->x && a->x_stride < a->Di) || a->bc_stride < a->N || (a->z && a->z_stride < a->Di))
        return mb_fail(MB_EINVAL, "%s: stride smaller than the row (x %lld, bc %lld, z %lld)", fn,
                       (long long)a->x_stride, (long long)a->bc_stride, (long long)a->z_stride);
    return 0;
}

static int al16(const void *ptr) {
    return ((uintptr_t)ptr % 16) == 0;
}

static scan_params make_params(const mb_scan_args *a) {
    scan_params p;
    memset(&p, 0, sizeof p);
    p.B = (int)a->B, p.L = (int)a->L, p.Di = (int)a->Di, p.N = (int)a->N;
    p.chunk = (int)a->chunk;
    p.nch = (int)((a->L + a->chunk - 1) / a->chunk);
    p.hstep = 1;
    p.x = a->x, p.xs = a->x_stride, p.delta = a->delta, p.A_log = a->A_log;
    p.Bm = a->Bm, p.Cm = a->Cm, p.bcs = a->bc_stride;
    p.bc_vec = al16(a->Bm) && al16(a->Cm) && a->bc_stride % 4 == 0 && a->N % 4 == 0;
    p.vec = p.bc_vec && al16(a->x) && al16(a->delta) && a->x_stride % 4 == 0 && a->Di % 4 == 0 &&
            (!a->z || (al16(a->z) && a->z_stride % 4 == 0));
    p.D = a->D, p.z = a->z, p.zs = a->z_stride;
    p.h0 = a->h0, p.h_last = a->h_last, p.h_chunks = a->h_chunks;
    return p;
}

typedef void (*kern_t)(scan_params);

/* legacy forward (kept as a lab reference: mb_scan_cuda_set_forward_warps(W > 0)) */
#define FWD_K(G, PAR)                                                                              \
    (vec ? scan_fwd_kernel<FWD_S, G, PAR, true> : scan_fwd_kernel<FWD_S, G, PAR, false>)
static kern_t fwd_kernel_for(int G, int par, int vec) {
    switch (G) {
    case 1:
        return par ? FWD_K(1, true) : FWD_K(1, false);
    case 2:
        return par ? FWD_K(2, true) : FWD_K(2, false);
    case 4:
        return par ? FWD_K(4, true) : FWD_K(4, false);
    default:
        return par ? FWD_K(8, true) : FWD_K(8, false);
    }
}

#define FWD2_K(G, FINE)                                                                            \
    (vec ? (qm ? scan_fwd2_kernel<G, true, FINE, true> : scan_fwd2_kernel<G, true, FINE, false>)   \
         : (qm ? scan_fwd2_kernel<G, false, FINE, true>                                            \
               : scan_fwd2_kernel<G, false, FINE, false>))
/* x16: the bf16 inputs' form (G 4, vec; apply_in16) */
#define FWD2_X16(FINE)                                                                             \
    (qm ? scan_fwd2_kernel<4, true, FINE, true, true>                                              \
        : scan_fwd2_kernel<4, true, FINE, false, true>)
static kern_t fwd2_kernel_for(int G, int fine, int vec, int qm, int x16) {
    if (x16) return fine == 2 ? FWD2_X16(2) : fine ? FWD2_X16(1) : FWD2_X16(0);
    if (fine == 2 && vec && G == 4) /* the dense backward's states (G 4: N 9..16) */
        return qm ? scan_fwd2_kernel<4, true, 2, true> : scan_fwd2_kernel<4, true, 2, false>;
    switch (G) {
    case 1:
        return fine ? FWD2_K(1, true) : FWD2_K(1, false);
    case 2:
        return fine ? FWD2_K(2, true) : FWD2_K(2, false);
    case 4:
        return fine ? FWD2_K(4, true) : FWD2_K(4, false);
    default:
        return fine ? FWD2_K(8, true) : FWD2_K(8, false);
    }
}

#define BWD3_K1(G, XB, O)                                                                          \
    (vec ? (qm ? scan_bwd3_kernel<G, true, XB, true, O> : scan_bwd3_kernel<G, true, XB, false, O>) \
         : (qm ? scan_bwd3_kernel<G, false, XB, true, O>                                           \
               : scan_bwd3_kernel<G, false, XB, false, O>))
#define BWD3_K(G, XB) (o16 ? BWD3_K1(G, XB, true) : BWD3_K1(G, XB, false))
/* o16: every gradient output bf16 (scan_bwd3_kernel's O16) */
#define BWD3_X16(O, D)                                                                             \
    (qm ? scan_bwd3_kernel<4, true, 1, true, O, D, true>                                           \
        : scan_bwd3_kernel<4, true, 1, false, O, D, true>)
/* the bf16 inputs' form reading the forward's bf16 pre-gate output (YP) */
#define BWD3_X16YP(O, D)                                                                           \
    (qm ? scan_bwd3_kernel<4, true, 1, true, O, D, true, true>                                     \
        : scan_bwd3_kernel<4, true, 1, false, O, D, true, true>)
static kern_t bwd3_kernel_for(int G, int vec, int xb, int qm, int o16, int dn, int x16, int yp) {
    if (x16 && yp)
        return o16 ? (dn ? BWD3_X16YP(true, true) : BWD3_X16YP(true, false))
                   : (dn ? BWD3_X16YP(false, true) : BWD3_X16YP(false, false));
    if (x16) /* the bf16 inputs' form: G 4, 16-byte copies, pair exchange (apply_in16) */
        return o16 ? (dn ? BWD3_X16(true, true) : BWD3_X16(true, false))
                   : (dn ? BWD3_X16(false, true) : BWD3_X16(false, false));
    if (dn) /* the dense form: G 4, 16-byte copies, pair exchange (dense_ok) */
        return o16 ? (qm ? scan_bwd3_kernel<4, true, 1, true, true, true>
                         : scan_bwd3_kernel<4, true, 1, false, true, true>)
                   : (qm ? scan_bwd3_kernel<4, true, 1, true, false, true>
                         : scan_bwd3_kernel<4, true, 1, false, false, true>);
    switch (G) {
    case 1:
        return xb ? BWD3_K(1, 1) : BWD3_K(1, 0);
    case 2:
        return xb ? BWD3_K(2, 1) : BWD3_K(2, 0);
    default:
        return xb ? BWD3_K(4, 1) : BWD3_K(4, 0);
    }
}

#define BWD2_K(S, G, W) (vec ? scan_bwd2_kernel<S, G, W, true> : scan_bwd2_kernel<S, G, W, false>)
static kern_t bwd2_kernel_for(int G, int W, int vec) {
    if (W == 8) {
        switch (G) {
        case 1:
            return BWD2_K(8, 1, 8);
        case 2:
            return BWD2_K(8, 2, 8);
        default:
            return BWD2_K(8, 4, 8);
        }
    }
    switch (G) {
    case 1:
        return BWD2_K(4, 1, 16);
    case 2:
        return BWD2_K(4, 2, 16);
    default:
        return BWD2_K(4, 4, 16);
    }
}

static int launch_forward(const scan_params *p, cudaStream_t st) {
    const int G = lanes_per_channel(p->N);
    cudaError_t e;
    if (g_fwd_warps <= 0) {
        const int vec = p->vec;
        int fine = p->h_chunks && p->chunk % FT != 0;
        if (fine && p->chunk == BK && vec && al16(p->h_chunks) && G == 4) fine = 2;
        const size_t shm = sizeof(float) * fwd_smem_floats(G, p->x16 != NULL);
        kern_t k = fwd2_kernel_for(G, fine, vec, g_lane_qm_fwd, p->x16 != NULL);
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)shm);
        if (e == cudaSuccess && p->x16) /* 4 blocks of 56 KB: the whole 228 KB */
            e = cudaFuncSetAttribute((const void *)k,
                                     cudaFuncAttributePreferredSharedMemoryCarveout,
                                     (int)cudaSharedmemCarveoutMaxShared);
        if (e != cudaSuccess) return cuda_fail(e, "mb_scan_cuda_forward: shared memory size");
        dim3 grid((p->Di + 31) / 32, p->B);
        k<<<grid, 32 * G, shm, st>>>(*p);
    } else {
        const int cpw = 32 / G, nblk = (p->Di + cpw - 1) / cpw;
        const int W = g_fwd_warps > 16 ? 16 : g_fwd_warps;
        const size_t shm = W > 1 ? (size_t)4 * W * 32 * sizeof(float4) : 0;
        dim3 grid(nblk, p->B);
        fwd_kernel_for(G, W > 1, p->bc_vec)<<<grid, W * 32, shm, st>>>(*p);
    }
    e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cuda_fail(e, "mb_scan_cuda_forward: launch");
}

extern "C" int mb_scan_cuda_lab_backward_occupancy(int64_t N) {
    if (N < 1 || N > 16) return mb_fail(MB_EINVAL, "backward occupancy: N %lld", (long long)N);
    const int G = lanes_per_channel(N);
    const size_t shm = sizeof(float) * (G == 1   ? bwd3_geom<1>::TOTAL
                                        : G == 2 ? bwd3_geom<2>::TOTAL
                                                 : bwd3_geom<4>::TOTAL);
    kern_t k = bwd3_kernel_for(G, 1, 1, g_lane_qm, 0, 0, 0, 0);
    cudaError_t e = cudaFuncSetAttribute((const void *)k,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 (int)cudaSharedmemCarveoutMaxShared);
    int nb = 0;
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k, 32 * G, shm);
    return e == cudaSuccess ? nb : cuda_fail(e, "backward occupancy");
}

extern "C" int mb_scan_cuda_lab_forward_occupancy(int x16) {
    const size_t shm = sizeof(float) * fwd_smem_floats(4, x16);
    kern_t k = fwd2_kernel_for(4, 2, 1, g_lane_qm_fwd, x16);
    cudaError_t e = cudaFuncSetAttribute((const void *)k,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    if (e == cudaSuccess && x16)
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 (int)cudaSharedmemCarveoutMaxShared);
    int nb = 0;
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k, 128, shm);
    return e == cudaSuccess ? nb : cuda_fail(e, "forward occupancy");
}

static void apply_opts(scan_params *p, const mb_scan_cuda_opts *o) {
    if (!o) return;
    p->dt_bias = o->dt_bias, p->dt_softplus = o->dt_softplus ? 1 : 0;
}

/* The bf16 inputs of o into p (after make_params): their alignment, and the kernels that read
 * them (staged forward, v5 backward with the pair exchange: v5 == 2, 16-byte copies: vec). */
static int apply_in16(scan_params *p, const mb_scan_cuda_opts *o, int vec, int v5, const char *fn) {
    if (!o) return 0;
    if (!o->x_bf16 && !o->delta_bf16) {
        if (o->z_bf16 || o->dy_bf16)
            return mb_fail(MB_EINVAL,
                           "%s: z_bf16 / dy_bf16 are read only with x_bf16 and "
                           "delta_bf16",
                           fn);
        return 0;
    }
    p->x16 = o->x_bf16, p->xs16 = o->x_bf16_stride, p->delta16 = o->delta_bf16;
    if (!p->x16 || !p->delta16)
        return mb_fail(MB_EINVAL, "%s: x_bf16 and delta_bf16 go together", fn);
    if (!al16(p->x16) || p->xs16 < p->Di || p->xs16 % 8 || !al16(p->delta16) || p->Di % 8)
        return mb_fail(MB_EINVAL,
                       "%s: bf16 x / delta need 16-byte aligned rows (x_bf16_stride %lld and "
                       "d_inner %d multiples of 8)",
                       fn, p->xs16, p->Di);
    if (!vec || v5 != 2 || lanes_per_channel(p->N) != 4 || g_fwd_warps > 0)
        return mb_fail(MB_EINVAL,
                       "%s: bf16 x / delta are read by the staged forward and the v5 backward "
                       "(pair exchange) with 16-byte copies only: 16-byte aligned tensors, "
                       "d_state 12 or 16, a grid of at least 1.5 blocks of 32 channels per "
                       "multiprocessor, no lab kernel knob (mb_scan_cuda_bf16in_supported)",
                       fn);
    if (o->z_bf16) { /* (replaces args.z; its stride is dz's too) */
        if (p->z) return mb_fail(MB_EINVAL, "%s: z_bf16 replaces args.z, which must be NULL", fn);
        if (!al16(o->z_bf16) || o->z_bf16_stride < p->Di || o->z_bf16_stride % 8)
            return mb_fail(MB_EINVAL,
                           "%s: bf16 z needs 16-byte aligned rows (z_bf16_stride %lld >= d_inner, "
                           "a multiple of 8)",
                           fn, (long long)o->z_bf16_stride);
        p->z16 = o->z_bf16, p->zs = o->z_bf16_stride;
    }
    if (o->dy_bf16) {
        if (!al16(o->dy_bf16)) return mb_fail(MB_EINVAL, "%s: dy_bf16 must be 16-byte aligned", fn);
        p->dy16 = o->dy_bf16;
    }
    /* a valid global address for the copies that read nothing (the fp32 tensors may be NULL) */
    if (!p->x) p->x = (const float *)p->x16;
    return 0;
}

extern "C" int mb_scan_cuda_bf16in_supported(int64_t B, int64_t L, int64_t Di, int64_t N) {
    if (N % 4 != 0 || N <= 8 || N > 16 || Di % 8 != 0 || B < 1 || B > 65535 || L < 1 ||
        Di >= (1LL << 31) || g_fwd_warps > 0)
        return 0;
    scan_params p;
    memset(&p, 0, sizeof p);
    p.B = (int)B, p.Di = (int)Di, p.N = (int)N;
    return choose_v5(&p) == 2;
}

extern "C" int mb_scan_cuda_forward_ex(const mb_scan_args *a, const mb_scan_cuda_opts *o, float *y,
                                       void *stream) {
    int rc = check_args(a, o, "mb_scan_cuda_forward");
    if (rc) return rc;
    if (a->B * a->L * a->Di == 0) return 0;
    if (g_fwd_warps > 0 && o && o->y_bf16)
        return mb_fail(MB_EINVAL, "mb_scan_cuda_forward: the legacy forward (lab knob) writes no "
                                  "bf16 y");
    scan_params p = make_params(a);
    apply_opts(&p, o);
    p.y_bf16 = o ? o->y_bf16 : NULL;
    p.y = p.y_bf16 ? NULL : y;
    p.y_pregate = o ? o->y_pregate : NULL;
    p.yp16 = o ? o->y_pregate_bf16 : NULL;
    if (g_fwd_warps > 0 && (p.y_pregate || p.yp16))
        return mb_fail(MB_EINVAL, "mb_scan_cuda_forward: the legacy forward (lab knob) writes no "
                                  "y_pregate");
    if (p.y_pregate && p.yp16)
        return mb_fail(MB_EINVAL, "mb_scan_cuda_forward: y_pregate and y_pregate_bf16 are "
                                  "exclusive");
    /* y and y_pregate rows are written with 16-byte stores (bf16 y: 4-byte ones) */
    p.vec = p.vec && (!p.y || al16(p.y)) && (!p.y_bf16 || (uintptr_t)p.y_bf16 % 4 == 0) &&
            (!p.y_pregate || al16(p.y_pregate)) && (!p.yp16 || (uintptr_t)p.yp16 % 4 == 0);
    rc = apply_in16(&p, o, p.vec, 2, "mb_scan_cuda_forward"); /* (no backward kernel here) */
    if (rc) return rc;
    if (o && o->dense_states_bf16) {
        /* only the FINE 2 form (launch_forward) stores them */
        if (!(p.y_pregate || p.yp16) || p.chunk != BK || !p.vec || !p.h_chunks ||
            !al16(p.h_chunks) || lanes_per_channel(p.N) != 4 || g_fwd_warps > 0)
            return mb_fail(MB_EINVAL, "mb_scan_cuda_forward: dense_states_bf16 needs the dense "
                                      "form (y_pregate or y_pregate_bf16, chunk 8, N 12 or 16, "
                                      "16-byte aligned tensors)");
        p.hc16 = 1;
    }
    if (o && o->chunk_states_bf16) {
        /* the staged forward's FINE 0 form (chunk states at tile starts), 4-state groups */
        if (o->dense_states_bf16 || !p.h_chunks || p.chunk % FT != 0 || !p.vec ||
            !al16(p.h_chunks) || p.N % 4 != 0 || g_fwd_warps > 0)
            return mb_fail(MB_EINVAL, "mb_scan_cuda_forward: chunk_states_bf16 needs chunk states "
                                      "at a chunk that is a multiple of 32, N a multiple of 4 and "
                                      "16-byte aligned tensors (not with dense_states_bf16)");
        p.hc16 = 1;
    }
    return launch_forward(&p, (cudaStream_t)stream);
}

extern "C" int mb_scan_cuda_forward(const mb_scan_args *a, float *y, void *stream) {
    return mb_scan_cuda_forward_ex(a, NULL, y, stream);
}

extern "C" int mb_scan_cuda_backward(const mb_scan_args *a, const float *dy, float *dx,
                                     float *ddelta, float *dA_log, float *dB, float *dC, float *dD,
                                     float *dz, void *stream) {
    return mb_scan_cuda_backward_ex(a, NULL, dy, dx, ddelta, dA_log, dB, dC, dD, dz, stream);
}

extern "C" int mb_scan_cuda_backward_ex(const mb_scan_args *a, const mb_scan_cuda_opts *o,
                                        const float *dy, float *dx, float *ddelta, float *dA_log,
                                        float *dB, float *dC, float *dD, float *dz, void *stream) {
    int rc = check_args(a, o, "mb_scan_cuda_backward");
    if (rc) return rc;
    if (a->B * a->L * a->Di == 0) return 0;
    uint16_t *ddelta_bf16 = o ? o->ddelta_bf16 : NULL, *dz_bf16 = o ? o->dz_bf16 : NULL;
    uint16_t *dx_bf16 = o ? o->dx_bf16 : NULL;
    const int has_z = a->z || (o && o->z_bf16);
    if ((!dy && !(o && o->dy_bf16)) || (!dx && !dx_bf16) || (!ddelta && !ddelta_bf16) || !dA_log ||
        !dB || !dC || (has_z && !dz && !dz_bf16))
        return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: NULL gradient pointer");
    if (a->N > 16)
        return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: d_state N %lld > 16 not supported yet",
                       (long long)a->N);
    if (!a->h_chunks)
        return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: h_chunks is NULL (the forward must "
                                  "save the chunk states)");
    cudaStream_t st = (cudaStream_t)stream;
    scan_params p = make_params(a);
    apply_opts(&p, o);
    p.dy = dy, p.dx = dx, p.ddelta = ddelta, p.dA_log = dA_log, p.dB = dB, p.dC = dC;
    p.dD = dD, p.dz = dz;
    p.ddt_bias = o ? o->ddt_bias : NULL, p.ddelta_bf16 = ddelta_bf16, p.dz_bf16 = dz_bf16;
    p.dx_bf16 = dx_bf16;
    p.delta_eff = o && o->delta_is_eff ? 1 : 0;
    /* (the kernel's p.vec as set below) */
    rc = apply_in16(&p, o, p.vec && al16(dy) && al16(p.h_chunks), choose_v5(&p),
                    "mb_scan_cuda_backward");
    if (rc) return rc;
    /* (the options' refusals that do not depend on the re-chunked states: before any launch) */
    if (o && o->chunk_states_bf16 && BWD_CHUNK % p.chunk != 0)
        return mb_fail(MB_EINVAL,
                       "mb_scan_cuda_backward: chunk_states_bf16 needs a chunk that "
                       "divides 64 (got %lld)",
                       (long long)a->chunk);
    if (o && o->y_pregate_bf16 && (!p.x16 || o->y_pregate))
        return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: y_pregate_bf16 is read by the "
                                  "bf16-input form only (x_bf16), not with y_pregate");
    float *tmp = NULL;
    cudaError_t e;
    if (BWD_CHUNK % p.chunk == 0) {
        p.hstep = BWD_CHUNK / p.chunk; /* every hstep-th saved state is a backward chunk's */
    } else {
        /* recompute the states entering every BWD_CHUNK positions */
        const long long nch = (p.L + BWD_CHUNK - 1) / BWD_CHUNK;
        e = cudaMallocAsync((void **)&tmp, sizeof(float) * (size_t)p.B * p.Di * nch * p.N, st);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return mb_fail(MB_ENOMEM,
                           "mb_scan_cuda_backward: cannot allocate %lld floats of "
                           "chunk states (%s)",
                           (long long)p.B * p.Di * nch * p.N, cudaGetErrorString(e));
        }
        scan_params f = p;
        f.chunk = BWD_CHUNK, f.nch = (int)nch, f.h_chunks = tmp, f.h_last = NULL, f.y = NULL;
        f.y_bf16 = NULL;
        if (p.delta_eff) f.dt_bias = NULL, f.dt_softplus = 0; /* delta is the effective one */
        const int keep = g_fwd_warps;
        g_fwd_warps = 0;
        rc = launch_forward(&f, st);
        g_fwd_warps = keep;
        if (rc) {
            cudaFreeAsync(tmp, st);
            return rc;
        }
        p.chunk = BWD_CHUNK, p.nch = (int)nch, p.h_chunks = tmp, p.hstep = 1;
    }
    p.vec = p.vec && al16(dy) && al16(p.h_chunks);
    const long long rows = (long long)p.B * p.L;
    const int G = lanes_per_channel(p.N), cpw = 32 / G, vec = p.vec;
    p.skip_bc = g_skip_bc;
    p.red_vec = al16(dB) && al16(dC) && p.bcs % 4 == 0 && p.N % 4 == 0;
    const int use_v5 = choose_v5(&p);
    /* dense: the forward's states every 8 positions and its pre-gate output (fp32, or bf16 in
     * the YP form) */
    const int dn = o && ((o->y_pregate && al16(o->y_pregate)) || o->y_pregate_bf16) &&
                   p.chunk == BK && G == 4 && vec && use_v5 == 2 && !g_dense_off;
    if (o && o->y_pregate_bf16) { /* the YP form */
        if (!p.x16 || !vec || G != 4 || use_v5 != 2 || o->y_pregate) {
            if (tmp) cudaFreeAsync(tmp, st);
            return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: y_pregate_bf16 is read by the "
                                      "bf16-input form only (x_bf16, N 12 or 16, 16-byte aligned "
                                      "tensors, a grid that takes v5), not with y_pregate");
        }
        p.yp16 = o->y_pregate_bf16;
        p.yg16 = o->y_bf16;
    }
    if (o && o->dense_states_bf16) {
        if (!dn) {
            if (tmp) cudaFreeAsync(tmp, st);
            return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: dense_states_bf16 needs the dense "
                                      "backward (y_pregate or y_pregate_bf16, chunk 8, N 12 or "
                                      "16, 16-byte aligned tensors, a grid that takes v5)");
        }
        p.hc16 = 1;
    }
    if (o && o->chunk_states_bf16) { /* read by bwd3_load_h's 8-byte loads (v5, VEC) */
        if (dn || o->dense_states_bf16 || tmp || !vec || !use_v5 || p.N % 4 != 0) {
            if (tmp) cudaFreeAsync(tmp, st);
            return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: chunk_states_bf16 needs the v5 "
                                      "backward at a chunk that divides 64, N a multiple of 4 and "
                                      "16-byte aligned tensors, not the dense form");
        }
        p.hc16 = 1;
    }
    zero_bc_kernel<<<(unsigned)((rows * p.N + 255) / 256), 256, 0, st>>>(dB, dC, rows, p.bcs, p.N);
    if (!use_v5) {
        const int W = g_bwd_warps == 16 ? 16 : 8;
        const size_t shm =
            sizeof(float4) * 3 * W * 32 +
            sizeof(float) * 2 * (4 * BWD_CHUNK * cpw + 2 * BWD_CHUNK * 4 * G + cpw * 4 * G);
        kern_t k = bwd2_kernel_for(G, W, vec);
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)shm);
        if (e == cudaSuccess) {
            dim3 grid((p.Di + cpw - 1) / cpw, p.B);
            k<<<grid, W * 32, shm, st>>>(p);
            e = cudaGetLastError();
        }
    } else {
        /* v5: blocks of 32 channels x G lanes, 54 KB of shared memory (G = 4): 4 per SM */
        const size_t shm = sizeof(float) * (G == 1   ? bwd3_geom<1>::TOTAL
                                            : G == 2 ? bwd3_geom<2>::TOTAL
                                                     : bwd3_geom<4>::TOTAL);
        const int o16 = p.dx_bf16 && p.ddelta_bf16 && ((!p.z && !p.z16) || p.dz_bf16);
        if (dn) p.y_pregate = o->y_pregate; /* (NULL in the YP form) */
        /* the gate by channel quads (gate_quads): bf16 dy, z and dz, 8-byte aligned (the
         * strides are multiples of 8 elements: apply_in16) */
        p.gate4 = G == 4 && p.x16 && p.z16 && p.dy16 && p.dz_bf16 &&
                  (uintptr_t)p.dz_bf16 % 8 == 0 && (!p.yp16 || (uintptr_t)p.yp16 % 8 == 0) &&
                  (!p.yg16 || (uintptr_t)p.yg16 % 8 == 0) && gate4_allowed();
        kern_t k =
            bwd3_kernel_for(G, vec, use_v5 == 2, g_lane_qm, o16, dn, p.x16 != NULL, p.yp16 != NULL);
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)shm);
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute((const void *)k,
                                     cudaFuncAttributePreferredSharedMemoryCarveout,
                                     (int)cudaSharedmemCarveoutMaxShared);
        if (e == cudaSuccess) {
            dim3 grid((p.Di + 31) / 32, p.B);
            k<<<grid, 32 * G, shm, st>>>(p);
            e = cudaGetLastError();
        }
    }
    if (tmp) cudaFreeAsync(tmp, st);
    return e == cudaSuccess ? 0 : cuda_fail(e, "mb_scan_cuda_backward: launch");
}
#endif /* MB_SCAN_EMU */
