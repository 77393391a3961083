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
 * Thread layout: lane = cl * G + q; the thread owns channel c = blockIdx.x * (32/G) + cl and
 * states n0 = 4q .. 4q+3 (states >= N are padding with A = B = C = 0, so they stay 0). Warp w of
 * the block owns positions [t0 + w*S, t0 + (w+1)*S) of each tile.
 */
#include "cuda/scan_cuda.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "mambabyte.h"

#define FULL_MASK 0xffffffffu
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
#define SPT 4 /* states per thread */

#define FWD_S 8     /* positions per thread per forward tile */
#define BWD_S 4     /* positions per thread per backward tile */
#define BWD_CHUNK 64 /* backward tile = chunk, at most BWD_S * 16 warps */

typedef struct {
    int B, L, Di, N, chunk, nch;
    const float *x;
    long long xs;
    const float *delta;
    const float *A_log;
    const float *Bm, *Cm;
    long long bcs;
    int bc_vec; /* Bm/Cm rows can be read as float4 */
    const float *D;
    const float *z;
    long long zs;
    const float *h0;
    float *h_last;
    float *h_chunks;
    float *y;
    /* backward */
    const float *dy;
    float *dx, *ddelta, *dA_log, *dB, *dC, *dD, *dz;
} scan_params;

static __device__ __forceinline__ float ex2(float v) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
}

static __device__ __forceinline__ float sigmoidf_(float v) {
    return __frcp_rn(1.0f + ex2(-v * LOG2E));
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

/* Sum v[0..S) over the G lanes of a channel group (lane bits below G), transposing: afterwards
 * v[j] (j < S/G) holds the total of position q*(S/G) + j. */
template <int S, int G> static __device__ __forceinline__ void group_reduce(float *v, int q) {
#pragma unroll
    for (int h = G / 2, m = S / 2; h >= 1; h >>= 1, m >>= 1) {
        const bool up = (q & h) != 0;
#pragma unroll
        for (int j = 0; j < m; j++) {
            const float send = up ? v[j] : v[j + m];
            const float keep = up ? v[j + m] : v[j];
            v[j] = keep + __shfl_xor_sync(FULL_MASK, send, h);
        }
    }
}

/* Loads of one tile for one thread (read-only path): x and delta at the S positions tb..tb+S-1
 * (< tlim, else 0), and at the S/G positions q*(S/G)+j this lane gates: x, delta, z, dy (the
 * last three only where the pointer is non-NULL). Issued a tile ahead (register double
 * buffering) so that a tile's global loads overlap the previous tile's arithmetic. */
template <int S, int G>
static __device__ __forceinline__ void load_tile(const scan_params *p, long long rowb, int c,
                                                 bool cv, int tb, int tlim, int q, float *xv,
                                                 float *dv, float *xo, float *dlo, float *zo,
                                                 float *dyo, bool bwd) {
#pragma unroll
    for (int i = 0; i < S; i++) {
        const int t = tb + i;
        const bool ok = cv && t < tlim;
        xv[i] = ok ? __ldg(p->x + (rowb + t) * p->xs + c) : 0.0f;
        dv[i] = ok ? __ldg(p->delta + (rowb + t) * p->Di + c) : 0.0f;
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
        for (int i = 0; i < S; i++) xv[i] = nxv[i], dv[i] = ndv[i];
#pragma unroll
        for (int j = 0; j < S / G; j++) xo[j] = nxo[j], zo[j] = nzo[j];
        if (t0 + T < L)
            load_tile<S, G>(&p, rowb, c, cv, tb + T, L, q, nxv, ndv, nxo, NULL, nzo, NULL, false);
        float cur[SPT];
        float av[PAR ? S : 1][SPT];
        if (PAR) {
            float P[SPT], sl[SPT];
#pragma unroll
            for (int k = 0; k < SPT; k++) P[k] = 1.0f, sl[k] = 0.0f;
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
                    for (int k = 0; k < SPT; k++) cur[k] = run[k];
                }
                const float4 Pj = buf[j * 32 + lane], Sj = buf[(W + j) * 32 + lane];
                run[0] = fmaf(Pj.x, run[0], Sj.x);
                run[1] = fmaf(Pj.y, run[1], Sj.y);
                run[2] = fmaf(Pj.z, run[2], Sj.z);
                run[3] = fmaf(Pj.w, run[3], Sj.w);
            }
#pragma unroll
            for (int k = 0; k < SPT; k++) h[k] = run[k];
        } else {
#pragma unroll
            for (int k = 0; k < SPT; k++) cur[k] = h[k];
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
            for (int k = 0; k < SPT; k++) h[k] = cur[k];
        }
        group_reduce<S, G>(ys, q);
        if (p.y && cv) {
#pragma unroll
            for (int j = 0; j < S / G; j++) {
                const int t = tb + q * (S / G) + j;
                if (t < L) {
                    const long long row = rowb + t;
                    float out = fmaf(Dc, xo[j], ys[j]);
                    if (p.z) out *= zo[j] * sigmoidf_(zo[j]);
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

template <int S, int G, bool VEC>
__global__ void __launch_bounds__(512) scan_bwd_kernel(scan_params p) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
    const int q = lane & (G - 1), cl = lane / G;
    const int c = blockIdx.x * (32 / G) + cl, b = blockIdx.y;
    const bool cv = c < p.Di;
    const int N = p.N, L = p.L, n0 = q * SPT, chunk = p.chunk;
    float A2[SPT];
#pragma unroll
    for (int k = 0; k < SPT; k++) {
        const bool nv = cv && n0 + k < N;
        A2[k] = nv ? -expf(p.A_log[(long long)c * N + n0 + k]) * LOG2E : 0.0f;
    }
    const float Dc = cv && p.D ? p.D[c] : 0.0f;
    extern __shared__ float4 smem[]; /* [P | agg][W][32] */
    const long long rowb = (long long)b * L;
    float carry[SPT] = {0.0f, 0.0f, 0.0f, 0.0f}; /* a_{t+1} g_{t+1} entering from the right */
    float dAacc[SPT] = {0.0f, 0.0f, 0.0f, 0.0f};
    float dDacc = 0.0f;

    float nxv[S], ndv[S], nxo[S / G], nzo[S / G], ndlo[S / G], ndyo[S / G];
    {
        const int ts = (p.nch - 1) * chunk;
        load_tile<S, G>(&p, rowb, c, cv, ts + warp * S, min(ts + chunk, L), q, nxv, ndv, nxo,
                        ndlo, nzo, ndyo, true);
    }
    for (int kc = p.nch - 1; kc >= 0; kc--) {
        const int ts = kc * chunk;
        const int tend = min(ts + chunk, L);
        const int tb = ts + warp * S;
        float xv[S], dv[S], xo[S / G], zo[S / G], dlo[S / G], dyraw[S / G];
#pragma unroll
        for (int i = 0; i < S; i++) xv[i] = nxv[i], dv[i] = ndv[i];
#pragma unroll
        for (int j = 0; j < S / G; j++) xo[j] = nxo[j], zo[j] = nzo[j], dlo[j] = ndlo[j], dyraw[j] = ndyo[j];
        if (kc > 0)
            load_tile<S, G>(&p, rowb, c, cv, ts - chunk + warp * S, ts, q, nxv, ndv, nxo, ndlo,
                            nzo, ndyo, true);
        /* F1: decays and the warp's forward aggregate */
        float av[S][SPT], P[SPT], sl[SPT];
#pragma unroll
        for (int k = 0; k < SPT; k++) P[k] = 1.0f, sl[k] = 0.0f;
#pragma unroll
        for (int i = 0; i < S; i++) {
            const int t = tb + i;
            float Bv[SPT];
            load4<VEC>(p.Bm, rowb + min(t, L - 1), p.bcs, n0, N, t < tend, Bv);
            const float dtx = dv[i] * xv[i];
#pragma unroll
            for (int k = 0; k < SPT; k++) {
                const float a = ex2(dv[i] * A2[k]);
                av[i][k] = a;
                P[k] *= a;
                sl[k] = fmaf(a, sl[k], dtx * Bv[k]);
            }
        }
        smem[warp * 32 + lane] = make_float4(P[0], P[1], P[2], P[3]);
        smem[(W + warp) * 32 + lane] = make_float4(sl[0], sl[1], sl[2], sl[3]);
        __syncthreads();
        float cur[SPT];
        {
            float run[SPT];
#pragma unroll
            for (int k = 0; k < SPT; k++)
                run[k] = cv && n0 + k < N
                             ? p.h_chunks[(((long long)b * p.Di + c) * p.nch + kc) * N + n0 + k]
                             : 0.0f;
            for (int j = 0; j < warp; j++) {
                const float4 Pj = smem[j * 32 + lane], Sj = smem[(W + j) * 32 + lane];
                run[0] = fmaf(Pj.x, run[0], Sj.x);
                run[1] = fmaf(Pj.y, run[1], Sj.y);
                run[2] = fmaf(Pj.z, run[2], Sj.z);
                run[3] = fmaf(Pj.w, run[3], Sj.w);
            }
#pragma unroll
            for (int k = 0; k < SPT; k++) cur[k] = run[k];
        }
        /* F2: states before each position, pre-gate output */
        float sp[S][SPT], ys[S];
#pragma unroll
        for (int i = 0; i < S; i++) {
            const int t = tb + i;
            float Bv[SPT], Cv[SPT];
            load4<VEC>(p.Bm, rowb + min(t, L - 1), p.bcs, n0, N, t < tend, Bv);
            load4<VEC>(p.Cm, rowb + min(t, L - 1), p.bcs, n0, N, t < tend, Cv);
            const float dtx = dv[i] * xv[i];
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
            const int t = tb + q * (S / G) + j;
            float dyss = 0.0f;
            if (cv && t < tend) {
                const long long row = rowb + t;
                const float g = dyraw[j];
                if (p.z) {
                    const float zz = zo[j];
                    const float sg = sigmoidf_(zz);
                    const float yss = fmaf(Dc, xo[j], ys[j]);
                    dyss = g * zz * sg;
                    p.dz[row * p.zs + c] = g * yss * sg * fmaf(zz, 1.0f - sg, 1.0f);
                } else {
                    dyss = g;
                }
                dDacc = fmaf(dyss, xo[j], dDacc);
            }
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
            const int t = tb + i;
            float Cv[SPT];
            load4<VEC>(p.Cm, rowb + min(t, L - 1), p.bcs, n0, N, t < tend, Cv);
#pragma unroll
            for (int k = 0; k < SPT; k++) ul[k] = av[i][k] * fmaf(dys[i], Cv[k], ul[k]);
        }
        float4 *rbuf = smem + 2 * W * 32;
        rbuf[warp * 32 + lane] = make_float4(ul[0], ul[1], ul[2], ul[3]);
        __syncthreads();
        float u[SPT];
        {
            float run[SPT] = {carry[0], carry[1], carry[2], carry[3]};
            for (int j = W - 1; j >= 0; j--) {
                if (j == warp) {
#pragma unroll
                    for (int k = 0; k < SPT; k++) u[k] = run[k];
                }
                const float4 Pj = smem[j * 32 + lane], Uj = rbuf[j * 32 + lane];
                run[0] = fmaf(Pj.x, run[0], Uj.x);
                run[1] = fmaf(Pj.y, run[1], Uj.y);
                run[2] = fmaf(Pj.z, run[2], Uj.z);
                run[3] = fmaf(Pj.w, run[3], Uj.w);
            }
#pragma unroll
            for (int k = 0; k < SPT; k++) carry[k] = run[k];
        }
        /* R2: gradients, walking back through the warp's positions */
        float gB[S], dd[S];
        float *dBb = p.dB + rowb * p.bcs, *dCb = p.dC + rowb * p.bcs;
#pragma unroll
        for (int i = S - 1; i >= 0; i--) {
            const int t = tb + i;
            const bool tv = t < tend;
            float Bv[SPT], Cv[SPT];
            load4<VEC>(p.Bm, rowb + min(t, L - 1), p.bcs, n0, N, tv, Bv);
            load4<VEC>(p.Cm, rowb + min(t, L - 1), p.bcs, n0, N, tv, Cv);
            const float dtx = dv[i] * xv[i];
            float vals[8];
            float gb = 0.0f, de = 0.0f;
#pragma unroll
            for (int k = 0; k < SPT; k++) {
                const float g = fmaf(dys[i], Cv[k], u[k]);
                const float st = fmaf(av[i][k], sp[i][k], dtx * Bv[k]);
                vals[k] = g * dtx;
                vals[4 + k] = dys[i] * st;
                gb = fmaf(g, Bv[k], gb);
                const float e = g * sp[i][k] * av[i][k];
                de = fmaf(e, A2[k], de);
                dAacc[k] = fmaf(e, dv[i], dAacc[k]);
                u[k] = av[i][k] * g;
            }
            gB[i] = gb;
            dd[i] = de * LN2; /* A = A2 * ln 2 */
            bc_reduce_add<G>(vals, lane, q, N, n0, dBb + (long long)t * p.bcs,
                             dCb + (long long)t * p.bcs, tv);
        }
        group_reduce<S, G>(gB, q);
        group_reduce<S, G>(dd, q);
#pragma unroll
        for (int j = 0; j < S / G; j++) {
            const int t = tb + q * (S / G) + j;
            if (cv && t < tend) {
                const long long row = rowb + t;
                p.dx[row * p.Di + c] = fmaf(gB[j], dlo[j], Dc * dyo[j]);
                p.ddelta[row * p.Di + c] = fmaf(gB[j], xo[j], dd[j]);
            }
        }
        __syncthreads(); /* smem is rewritten by the next chunk */
    }
    /* dA_log (+= A * dA) and dD: reduce over the block's warps, then one atomic per value */
    float4 *abuf = smem;
    float *dbuf = (float *)(smem + W * 32);
    abuf[warp * 32 + lane] = make_float4(dAacc[0], dAacc[1], dAacc[2], dAacc[3]);
#pragma unroll
    for (int h = 1; h < G; h <<= 1) dDacc += __shfl_xor_sync(FULL_MASK, dDacc, h);
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
}

/* dB, dC columns := 0 (they are accumulated with atomics). */
__global__ void zero_bc_kernel(float *dB, float *dC, long long rows, long long stride, int N) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * N) return;
    const long long r = i / N, n = i % N;
    dB[r * stride + n] = 0.0f;
    dC[r * stride + n] = 0.0f;
}

/* ------------------------------------------------------------------------------ host side */
static int g_fwd_warps = 0;

extern "C" void mb_scan_cuda_set_forward_warps(int warps) {
    g_fwd_warps = warps;
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

static int cuda_fail(cudaError_t e, const char *what) {
    return mb_fail(MB_EIO, "%s: CUDA error %s (%s)", what, cudaGetErrorName(e),
                   cudaGetErrorString(e));
}

static int lanes_per_channel(int64_t N) {
    const int64_t q = (N + SPT - 1) / SPT;
    int g = 1;
    while (g < q) g <<= 1;
    return g;
}

static int check_args(const mb_scan_args *a, const char *fn) {
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
    if (!a->x || !a->delta || !a->A_log || !a->Bm || !a->Cm)
        return mb_fail(MB_EINVAL, "%s: NULL input (x, delta, A_log, Bm or Cm)", fn);
    if (a->x_stride < a->Di || a->bc_stride < a->N || (a->z && a->z_stride < a->Di))
        return mb_fail(MB_EINVAL, "%s: stride smaller than the row (x %lld, bc %lld, z %lld)", fn,
                       (long long)a->x_stride, (long long)a->bc_stride, (long long)a->z_stride);
    return 0;
}

static scan_params make_params(const mb_scan_args *a) {
    scan_params p;
    memset(&p, 0, sizeof p);
    p.B = (int)a->B, p.L = (int)a->L, p.Di = (int)a->Di, p.N = (int)a->N;
    p.chunk = (int)a->chunk;
    p.nch = (int)((a->L + a->chunk - 1) / a->chunk);
    p.x = a->x, p.xs = a->x_stride, p.delta = a->delta, p.A_log = a->A_log;
    p.Bm = a->Bm, p.Cm = a->Cm, p.bcs = a->bc_stride;
    p.bc_vec = ((uintptr_t)a->Bm % 16 == 0) && ((uintptr_t)a->Cm % 16 == 0) && a->bc_stride % 4 == 0 &&
               a->N % 4 == 0;
    p.D = a->D, p.z = a->z, p.zs = a->z_stride;
    p.h0 = a->h0, p.h_last = a->h_last, p.h_chunks = a->h_chunks;
    return p;
}

typedef void (*kern_t)(scan_params);

#define FWD_K(G, PAR) (vec ? scan_fwd_kernel<FWD_S, G, PAR, true> : scan_fwd_kernel<FWD_S, G, PAR, false>)
static kern_t fwd_kernel_for(int G, int par, int vec) {
    switch (G) {
    case 1: return par ? FWD_K(1, true) : FWD_K(1, false);
    case 2: return par ? FWD_K(2, true) : FWD_K(2, false);
    case 4: return par ? FWD_K(4, true) : FWD_K(4, false);
    default: return par ? FWD_K(8, true) : FWD_K(8, false);
    }
}

#define BWD_K(G) (vec ? scan_bwd_kernel<BWD_S, G, true> : scan_bwd_kernel<BWD_S, G, false>)
static kern_t bwd_kernel_for(int G, int vec) {
    switch (G) {
    case 1: return BWD_K(1);
    case 2: return BWD_K(2);
    default: return BWD_K(4);
    }
}

static int sm_count(void) {
    static int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            n = 132;
        }
    }
    return n;
}

static int launch_forward(const scan_params *p, cudaStream_t st) {
    const int G = lanes_per_channel(p->N), cpw = 32 / G;
    const int nblk = (p->Di + cpw - 1) / cpw;
    int W = g_fwd_warps;
    if (W <= 0) {
        /* enough warps in flight: about 24 per multiprocessor */
        const long long want = (long long)sm_count() * 24;
        W = 1;
        while (W < 16 && (long long)nblk * p->B * W * 2 <= want) W *= 2;
    }
    if (W > 16) W = 16;
    const size_t shm = W > 1 ? (size_t)4 * W * 32 * sizeof(float4) : 0;
    dim3 grid(nblk, p->B);
    fwd_kernel_for(G, W > 1, p->bc_vec)<<<grid, W * 32, shm, st>>>(*p);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cuda_fail(e, "mb_scan_cuda_forward: launch");
}

extern "C" int mb_scan_cuda_forward(const mb_scan_args *a, float *y, void *stream) {
    int rc = check_args(a, "mb_scan_cuda_forward");
    if (rc) return rc;
    if (a->B * a->L * a->Di == 0) return 0;
    scan_params p = make_params(a);
    p.y = y;
    return launch_forward(&p, (cudaStream_t)stream);
}

extern "C" int mb_scan_cuda_backward(const mb_scan_args *a, const float *dy, float *dx,
                                     float *ddelta, float *dA_log, float *dB, float *dC, float *dD,
                                     float *dz, void *stream) {
    int rc = check_args(a, "mb_scan_cuda_backward");
    if (rc) return rc;
    if (a->B * a->L * a->Di == 0) return 0;
    if (!dy || !dx || !ddelta || !dA_log || !dB || !dC || (a->z && !dz))
        return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: NULL gradient pointer");
    if (a->N > 16)
        return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: d_state N %lld > 16 not supported yet",
                       (long long)a->N);
    if (!a->h_chunks)
        return mb_fail(MB_EINVAL, "mb_scan_cuda_backward: h_chunks is NULL (the forward must "
                                  "save the chunk states)");
    cudaStream_t st = (cudaStream_t)stream;
    scan_params p = make_params(a);
    p.dy = dy, p.dx = dx, p.ddelta = ddelta, p.dA_log = dA_log, p.dB = dB, p.dC = dC;
    p.dD = dD, p.dz = dz;
    float *tmp = NULL;
    cudaError_t e;
    if (p.chunk > BWD_CHUNK) {
        /* recompute the states entering every BWD_CHUNK positions */
        const long long nch = (p.L + BWD_CHUNK - 1) / BWD_CHUNK;
        e = cudaMallocAsync((void **)&tmp, sizeof(float) * (size_t)p.B * p.Di * nch * p.N, st);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return mb_fail(MB_ENOMEM, "mb_scan_cuda_backward: cannot allocate %lld floats of "
                                      "chunk states (%s)",
                           (long long)p.B * p.Di * nch * p.N, cudaGetErrorString(e));
        }
        scan_params f = p;
        f.chunk = BWD_CHUNK, f.nch = (int)nch, f.h_chunks = tmp, f.h_last = NULL, f.y = NULL;
        rc = launch_forward(&f, st);
        if (rc) {
            cudaFreeAsync(tmp, st);
            return rc;
        }
        p.chunk = BWD_CHUNK, p.nch = (int)nch, p.h_chunks = tmp;
    }
    const long long rows = (long long)p.B * p.L;
    zero_bc_kernel<<<(unsigned)((rows * p.N + 255) / 256), 256, 0, st>>>(dB, dC, rows, p.bcs, p.N);
    const int G = lanes_per_channel(p.N), cpw = 32 / G;
    const int W = (p.chunk + BWD_S - 1) / BWD_S;
    const size_t shm = (size_t)3 * W * 32 * sizeof(float4);
    dim3 grid((p.Di + cpw - 1) / cpw, p.B);
    bwd_kernel_for(G, p.bc_vec)<<<grid, W * 32, shm, st>>>(p);
    e = cudaGetLastError();
    if (tmp) cudaFreeAsync(tmp, st);
    return e == cudaSuccess ? 0 : cuda_fail(e, "mb_scan_cuda_backward: launch");
}
