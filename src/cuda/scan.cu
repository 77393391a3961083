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

#ifndef MB_SCAN_EMU /* tests/cuda/scan_emu.cpp runs the v5 backward on the CPU (no GPU needed) */
#include <cuda_runtime.h>
#endif
#include <stdio.h>
#include <string.h>

#include "mambabyte.h"

#define FULL_MASK 0xffffffffu
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
#define SPT 4 /* states per thread */

#define FWD_S 8     /* positions per thread per forward tile */
#define BWD_CHUNK 64 /* backward chunk = W warps x S positions (16 x 4 or 8 x 8) */

typedef struct {
    int B, L, Di, N, chunk, nch;
    const float *x;
    long long xs;
    const float *delta;
    const float *A_log;
    const float *Bm, *Cm;
    long long bcs;
    int bc_vec; /* Bm/Cm rows can be read as float4 */
    int vec;    /* every staged tensor can be copied in 16-byte pieces (see make_params) */
    int hstep;  /* backward: h_chunks index step per backward chunk (BWD_CHUNK / chunk) */
    int skip_bc; /* lab diagnostic: leave out the dB/dC atomics (wrong dB/dC) */
    int red_vec; /* dB/dC rows take 16-byte vector reductions (v5 backward) */
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

#ifndef MB_SCAN_EMU
static __device__ __forceinline__ float ex2(float v) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
}

/* 1 / v, one MUFU.RCP (relative error about 1 ulp; 0 for v = inf) */
static __device__ __forceinline__ float rcp_(float v) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
}

#endif

static __device__ __forceinline__ float sigmoidf_(float v) {
    return rcp_(1.0f + ex2(-v * LOG2E));
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
template <int S, int G, int H> struct group_reduce_level {
    static __device__ __forceinline__ void run(float *v, int q) {
        constexpr int m = S * H / G; /* values still paired at this level */
        const bool up = (q & H) != 0;
#pragma unroll
        for (int j = 0; j < m; j++) {
            const float send = up ? v[j] : v[j + m];
            const float keep = up ? v[j + m] : v[j];
            v[j] = keep + __shfl_xor_sync(FULL_MASK, send, H);
        }
        group_reduce_level<S, G, H / 2>::run(v, q);
    }
};
template <int S, int G> struct group_reduce_level<S, G, 0> {
    static __device__ __forceinline__ void run(float *, int) {}
};
template <int S, int G> static __device__ __forceinline__ void group_reduce(float *v, int q) {
    group_reduce_level<S, G, G / 2>::run(v, q);
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
static __device__ __forceinline__ void bc_reduce_add(float4 acc, bool write, float *dst,
                                                     int n_left, bool red_vec) {
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
    return SW == 1 ? col ^ (((r ^ (r >> 1)) & 3) << 3) : SW == 2 ? col ^ (((r >> 3) & 3) << 3) : col;
}

/* Stage `rows` rows of a row-major tensor into shared memory: element (r, e) of the tile is
 * base[(row0 + r) * stride + e] for r < nvalid and e < width, zero elsewhere; the tile has
 * `ld` floats per row (ld % 4 == 0, width <= ld), column e stored at swz_col<SW>(r, e) (SW != 0
 * needs ld == 32). VEC: 16-byte copies (base, stride and width multiples of 4 floats / 16
 * bytes). All NT threads of the block take part. `safe`: a valid global address given to the
 * copies that read nothing. */
template <int NT, bool VEC, int SW = 0>
static __device__ __forceinline__ void stage_rows(float *dst, int ld, const float *base,
                                                  long long row0, long long stride, int rows,
                                                  int nvalid, int width, int tid,
                                                  const float *safe) {
    if (VEC) {
        const int per = ld >> 2, n = rows * per;
        for (int i = tid; i < n; i += NT) {
            const int r = i / per, f = i - r * per;
            const bool ok = base && r < nvalid && 4 * f < width;
            cp16(dst + r * ld + swz_col<SW>(r, 4 * f), ok ? base + (row0 + r) * stride + 4 * f : safe, ok);
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

/* ----------------------------------------------------------------- forward (staged, v4) */
/* One block = 32 channels x G lanes (G warps); every thread walks the whole sequence for its
 * channel and 4 states (no split in time). Tiles of FT positions of x, delta, z (32 channels)
 * and of B, C are copied into shared memory FK-1 tiles ahead (cp.async), so a step reads only
 * shared memory and registers. FINE: chunk boundaries fall inside tiles (chunk % FT != 0). */
#define FT 32
#define FK 3
/* CH channels per thread (1, or 2 for G = 4): a block of 32 channels has NT = 32 G / CH
 * threads */
template <int G, int CH = 1> struct fwd_geom {
    static constexpr int CPB = 32, NP = 4 * G, NT = 32 * G / CH;
    static constexpr int STAGE = 3 * FT * CPB + 2 * FT * NP;
};

template <int G, int CH, bool VEC>
static __device__ __forceinline__ void fwd_stage(const scan_params &p, float *st, int b, int c0,
                                                 int t0, int tid) {
    typedef fwd_geom<G, CH> g;
    const long long row0 = (long long)b * p.L + t0;
    const int nv = min(FT, p.L - t0), w = min(g::CPB, p.Di - c0);
    stage_rows<g::NT, VEC, 2>(st, g::CPB, p.x + c0, row0, p.xs, FT, nv, w, tid, p.x);
    stage_rows<g::NT, VEC, 2>(st + FT * g::CPB, g::CPB, p.delta + c0, row0, p.Di, FT, nv, w, tid, p.x);
    stage_rows<g::NT, VEC, 2>(st + 2 * FT * g::CPB, g::CPB, p.z ? p.z + c0 : NULL, row0, p.zs, FT,
                              nv, w, tid, p.x);
    float *bs = st + 3 * FT * g::CPB;
    stage_rows<g::NT, VEC>(bs, g::NP, p.Bm, row0, p.bcs, FT, nv, p.N, tid, p.x);
    stage_rows<g::NT, VEC>(bs + FT * g::NP, g::NP, p.Cm, row0, p.bcs, FT, nv, p.N, tid, p.x);
}

/* y rows of tile t0 from the tile's Z region (which holds the gated output by then): whole
 * 128-byte rows of 32 channels (VEC: 16-byte stores). */
template <int G, int CH, bool VEC>
static __device__ __forceinline__ void fwd_write_y(const scan_params &p, const float *Zt, int b,
                                                   int c0, int t0, int tid) {
    typedef fwd_geom<G, CH> g;
    const int nv = min(FT, p.L - t0), w = min(g::CPB, p.Di - c0);
    float *yb = p.y + ((long long)b * p.L + t0) * p.Di + c0;
    if (VEC) {
        for (int i = tid; i < FT * g::CPB / 4; i += g::NT) {
            const int r = i / (g::CPB / 4), f = i % (g::CPB / 4);
            if (r < nv && 4 * f < w)
                *(float4 *)(yb + (long long)r * p.Di + 4 * f) =
                    *(const float4 *)(Zt + r * g::CPB + swz_col<2>(r, 4 * f));
        }
    } else {
        for (int i = tid; i < FT * g::CPB; i += g::NT) {
            const int r = i / g::CPB, e = i % g::CPB;
            if (r < nv && e < w) yb[(long long)r * p.Di + e] = Zt[r * g::CPB + swz_col<2>(r, e)];
        }
    }
}

/* Store the states h of this thread's channel (row hc of h_chunks) as chunk entry k. */
static __device__ __forceinline__ void fwd_save_h(float *hc, long long k, int N, int n0,
                                                  const float *h) {
    float *dst = hc + k * N;
#pragma unroll
    for (int s = 0; s < SPT; s++)
        if (n0 + s < N) dst[n0 + s] = h[s];
}

/* Thread (lane = pl * G + q of warp w) owns channels cw .. cw + CH - 1, cw = w * (32 CH / G) +
 * CH pl, and states n0 = 4 q .. n0 + 3. CH = 2: each B/C row read from shared memory serves 8
 * state chains (half the shared-memory reads of B and C per channel). */
template <int G, bool VEC, bool FINE, int CH>
__global__ void __launch_bounds__(32 * G / CH) scan_fwd2_kernel(scan_params p) {
    typedef fwd_geom<G, CH> g;
    constexpr int CPB = g::CPB, NP = g::NP, T = FT;
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int q = lane & (G - 1), cw = warp * (32 * CH / G) + CH * (lane / G);
    const int c0 = blockIdx.x * CPB, b = blockIdx.y;
    const int N = p.N, L = p.L, n0 = q * SPT;
    float A2[CH][SPT], h[CH][SPT], Dc[CH];
    float *hc[CH];
    bool cv[CH];
#pragma unroll
    for (int ch = 0; ch < CH; ch++) {
        const int c = c0 + cw + ch;
        cv[ch] = c < p.Di;
#pragma unroll
        for (int k = 0; k < SPT; k++) {
            const bool nv = cv[ch] && n0 + k < N;
            A2[ch][k] = nv ? -expf(p.A_log[(long long)c * N + n0 + k]) * LOG2E : 0.0f;
            h[ch][k] = nv && p.h0 ? p.h0[((long long)b * p.Di + c) * N + n0 + k] : 0.0f;
        }
        Dc[ch] = cv[ch] && p.D ? p.D[c] : 0.0f;
        hc[ch] = p.h_chunks && cv[ch] ? p.h_chunks + ((long long)b * p.Di + c) * p.nch * N : NULL;
    }
    /* padding (states >= N, channels >= Di, positions >= L) must read as zeros */
    for (int i = tid; i < FK * g::STAGE; i += g::NT) sm[i] = 0.0f;
    __syncthreads();
    const int ntiles = (L + T - 1) / T;
    fwd_stage<G, CH, VEC>(p, sm, b, c0, 0, tid);
    cp_commit();
    /* tile it is computed while tile it + 1 is copied in and tile it - 1's y rows are written
     * out (three buffers) */
    for (int it = 0; it < ntiles; it++) {
        cp_wait<0>();
        __syncthreads();
        if (it + 1 < ntiles)
            fwd_stage<G, CH, VEC>(p, sm + ((it + 1) % FK) * g::STAGE, b, c0, (it + 1) * T, tid);
        cp_commit();
        if (p.y && it > 0)
            fwd_write_y<G, CH, VEC>(p, sm + ((it - 1) % FK) * g::STAGE + 2 * T * CPB, b, c0,
                                    (it - 1) * T, tid);
        const float *X = sm + (it % FK) * g::STAGE, *Dl = X + T * CPB;
        float *Z = sm + (it % FK) * g::STAGE + 2 * T * CPB;
        const float *Bs = Z + T * CPB, *Cs = Bs + T * NP;
        const int t0 = it * T;
        int nb = 0;
        if (p.h_chunks) {
            if (!FINE) {
                if (t0 % p.chunk == 0) {
#pragma unroll
                    for (int ch = 0; ch < CH; ch++)
                        if (hc[ch]) fwd_save_h(hc[ch], t0 / p.chunk, N, n0, h[ch]);
                }
            } else {
                nb = (t0 + p.chunk - 1) / p.chunk * p.chunk;
            }
        }
        float ys[CH * T]; /* [channel][position] */
#pragma unroll
        for (int i = 0; i < T; i++) {
            if (FINE && p.h_chunks) {
                const int t = t0 + i;
                if (t == nb && t < L) {
#pragma unroll
                    for (int ch = 0; ch < CH; ch++)
                        if (hc[ch]) fwd_save_h(hc[ch], t / p.chunk, N, n0, h[ch]);
                    nb += p.chunk;
                }
            }
            float xv[CH], dv[CH];
            if (CH == 2) {
                const float2 x2 = *(const float2 *)(X + i * CPB + swz_col<2>(i, cw));
                const float2 d2 = *(const float2 *)(Dl + i * CPB + swz_col<2>(i, cw));
                xv[0] = x2.x, xv[CH - 1] = x2.y, dv[0] = d2.x, dv[CH - 1] = d2.y;
            } else {
                xv[0] = X[i * CPB + swz_col<2>(i, cw)], dv[0] = Dl[i * CPB + swz_col<2>(i, cw)];
            }
            const float4 B4 = *(const float4 *)(Bs + i * NP + n0);
            const float4 C4 = *(const float4 *)(Cs + i * NP + n0);
            const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w}, Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
#pragma unroll
            for (int ch = 0; ch < CH; ch++) {
                const float dtx = dv[ch] * xv[ch];
                float yv = 0.0f;
#pragma unroll
                for (int k = 0; k < SPT; k++) {
                    const float a = ex2(dv[ch] * A2[ch][k]);
                    h[ch][k] = fmaf(a, h[ch][k], dtx * Bv[k]);
                    yv = fmaf(h[ch][k], Cv[k], yv);
                }
                ys[ch * T + i] = yv;
            }
        }
        group_reduce<CH * T, G>(ys, q);
        if (p.y) {
            /* gated output into the Z slots this lane read (written out next tile): lane q
             * holds values q * (CH T / G) + j = (channel, position) */
#pragma unroll
            for (int j = 0; j < CH * T / G; j++) {
                const int idx = q * (CH * T / G) + j, ch = idx / T, r = idx % T;
                const int sc = r * CPB + swz_col<2>(r, cw + ch);
                const float xo = X[sc], zo = Z[sc];
                const float dch = CH == 2 && ch ? Dc[CH - 1] : Dc[0];
                float out = fmaf(dch, xo, ys[j]);
                if (p.z) out *= zo * sigmoidf_(zo);
                Z[sc] = out;
            }
        }
    }
    cp_wait<0>();
    if (p.y && ntiles > 0) {
        __syncthreads();
        fwd_write_y<G, CH, VEC>(p, sm + ((ntiles - 1) % FK) * g::STAGE + 2 * T * CPB, b, c0,
                                (ntiles - 1) * T, tid);
    }
    if (p.h_last) {
#pragma unroll
        for (int ch = 0; ch < CH; ch++) {
            if (!cv[ch]) continue;
            float *dst = p.h_last + ((long long)b * p.Di + c0 + cw + ch) * N;
#pragma unroll
            for (int k = 0; k < SPT; k++)
                if (n0 + k < N) dst[n0 + k] = h[ch][k];
        }
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
    stage_rows<g::NT, VEC>(st + 2 * T * CPW, CPW, p.z ? p.z + c0 : NULL, row0, p.zs, T, nv, w,
                           tid, p.x);
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
    float dDacc = 0.0f;
    const int nch = (L + T - 1) / T;
    for (int i = tid; i < 2 * g::STAGE; i += g::NT) stg[i] = 0.0f;
    __syncthreads();
    bwd_stage<S, G, W, VEC>(p, stg, b, c0, nch - 1, tid);
    cp_commit();
    for (int kc = nch - 1, it = 0; kc >= 0; kc--, it++) {
        cp_wait<0>();
        __syncthreads(); /* chunk kc staged; everyone is done with the other stage and agg */
        if (kc > 0) bwd_stage<S, G, W, VEC>(p, stg + ((it + 1) & 1) * g::STAGE, b, c0, kc - 1, tid);
        cp_commit();
        const float *X = stg + (it & 1) * g::STAGE, *Dl = X + T * CPW, *Z = Dl + T * CPW;
        const float *DY = Z + T * CPW, *Bs = DY + T * CPW, *Cs = Bs + T * NP, *H = Cs + T * NP;
        const int ts = kc * T, r0 = warp * S;
        /* F1: decays and the warp's forward aggregate */
        float av[S][SPT], P[SPT], sl[SPT];
#pragma unroll
        for (int k = 0; k < SPT; k++) P[k] = 1.0f, sl[k] = 0.0f;
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
            for (int k = 0; k < SPT; k++) cur[k] = run[k];
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
                if (cv && t < L)
                    p.dz[(rowb + t) * p.zs + c] = gy * yss * sg * fmaf(zz, 1.0f - sg, 1.0f);
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
            for (int k = 0; k < SPT; k++) ul[k] = av[i][k] * fmaf(dys[i], Cv[k], ul[k]);
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
                    for (int k = 0; k < SPT; k++) u[k] = run[k];
                }
                const float4 Pj = agg[j * 32 + lane], Uj = agg[(2 * W + j) * 32 + lane];
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
                p.dx[row * p.Di + c] = fmaf(gB[j], Dl[r * CPW + cl], Dc * dyo[j]);
                p.ddelta[row * p.Di + c] = fmaf(gB[j], X[r * CPW + cl], dd[j]);
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

/* Sum v[0..8) over the lanes that differ in lane bits 2..4 (the warp's 8 channel pairs),
 * transposing: afterwards v[0] holds the total of value lane >> 2. */
static __device__ __forceinline__ void pair_reduce8(float *v, int lane) {
#pragma unroll
    for (int s = 0; s < 3; s++) {
        const int h = 16 >> s, m = 4 >> s;
        const bool up = (lane & h) != 0;
#pragma unroll
        for (int j = 0; j < m; j++) {
            const float send = up ? v[j] : v[j + m];
            const float keep = up ? v[j + m] : v[j];
            v[j] = keep + __shfl_xor_sync(FULL_MASK, send, h);
        }
    }
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
    static constexpr int NCK = BT / BK - 1; /* checkpoints in shared memory (the first in registers) */
    static constexpr int RBW = 2 * CPW * 8 * G; /* per-warp dB/dC buffer: [2 positions][CPW][8G] = 512 */
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

template <int G, bool VEC>
static __device__ __forceinline__ void bwd3_stage(const scan_params &p, float *sm, int b, int c0,
                                                  int kc, int tid) {
    typedef bwd3_geom<G> g;
    const int t0 = kc * BT;
    const long long row0 = (long long)b * p.L + t0;
    const int nv = min(BT, p.L - t0), w = min(g::CPB, p.Di - c0);
    stage_rows<g::NT, VEC, 1>(sm + g::X, g::CPB, p.x + c0, row0, p.xs, BT, nv, w, tid, p.x);
    stage_rows<g::NT, VEC, 1>(sm + g::DL, g::CPB, p.delta + c0, row0, p.Di, BT, nv, w, tid, p.x);
    stage_rows<g::NT, VEC>(sm + g::BS, g::NP, p.Bm, row0, p.bcs, BT, nv, p.N, tid, p.x);
    stage_rows<g::NT, VEC>(sm + g::CS, g::NP, p.Cm, row0, p.bcs, BT, nv, p.N, tid, p.x);
}

/* State entering chunk kc for this thread's channel and states (zeros outside). */
template <bool VEC>
static __device__ __forceinline__ void bwd3_load_h(const scan_params &p, const float *hrow,
                                                   int kc, int n0, bool cv, float h[SPT]) {
    const float *hp = hrow + (long long)kc * p.hstep * p.N + n0;
    if (VEC) {
        const bool ok = cv && n0 < p.N;
        const float4 v = ok ? __ldg((const float4 *)hp) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        h[0] = v.x, h[1] = v.y, h[2] = v.z, h[3] = v.w;
    } else {
#pragma unroll
        for (int k = 0; k < SPT; k++) h[k] = cv && n0 + k < p.N ? __ldg(hp + k) : 0.0f;
    }
}

template <int G, bool VEC, int XB>
__global__ void __launch_bounds__(32 * G, 16 / G) scan_bwd3_kernel(scan_params p) {
    typedef bwd3_geom<G> g;
    constexpr int CPW = g::CPW, NP = g::NP, NT = g::NT, CPB = g::CPB;
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    const float *X = sm + g::X, *Dl = sm + g::DL, *Bs = sm + g::BS, *Cs = sm + g::CS;
    float *YS = sm + g::YS;
    float4 *CK = (float4 *)(sm + g::CK);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float *RB = sm + g::RB + warp * g::RBW;
    /* scan mapping: channel cw of the block, states n0..n0+3 */
    const int q = lane & (G - 1), cl = lane / G, cw = warp * CPW + cl;
    const int c0 = blockIdx.x * CPB, c = c0 + cw, b = blockIdx.y;
    const bool cv = c < p.Di;
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
    float dDacc = 0.0f;
    const int nch = (L + BT - 1) / BT;
    bwd3_stage<G, VEC>(p, sm, b, c0, nch - 1, tid);
    cp_commit();
    float hn[SPT];
    bwd3_load_h<VEC>(p, hrow, nch - 1, n0, cv, hn);
#pragma unroll 1
    for (int kc = nch - 1; kc >= 0; kc--) {
        const float h0v[SPT] = {hn[0], hn[1], hn[2], hn[3]};
        cp_wait<0>();
        __syncthreads();
        const int ts = kc * BT;
        /* ---- forward pass: states, checkpoints, pre-gate output */
        {
            float cur[SPT] = {h0v[0], h0v[1], h0v[2], h0v[3]};
#pragma unroll 1
            for (int j = 0; j < BT / BK; j++) {
                if (j > 0) CK[(j - 1) * NT + tid] = make_float4(cur[0], cur[1], cur[2], cur[3]);
                float ys[BK];
#pragma unroll
                for (int i = 0; i < BK; i++) {
                    const int r = j * BK + i;
                    const int sc = r * CPB + swz_col<1>(i, cw); /* r % 8 == i */
                    const float dv = Dl[sc], dtx = dv * X[sc];
                    const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
                    const float4 C4 = *(const float4 *)(Cs + r * NP + n0);
                    const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
                    const float Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
                    float yv = 0.0f;
#pragma unroll
                    for (int k = 0; k < SPT; k++) {
                        const float a = ex2(dv * A2[k]);
                        cur[k] = fmaf(a, cur[k], dtx * Bv[k]);
                        yv = fmaf(cur[k], Cv[k], yv);
                    }
                    ys[i] = yv;
                }
                group_reduce<BK, G>(ys, q);
#pragma unroll
                for (int jj = 0; jj < BK / G; jj++) {
                    const int r = j * BK + q * (BK / G) + jj;
                    YS[r * CPB + swz_col<1>(r, cw)] = ys[jj];
                }
            }
        }
        __syncwarp();
        /* ---- gate (one lane per (position, channel)): dz, dyss -> YS, dD */
#pragma unroll 1
        for (int mb = 0; mb < BT / G; mb += 16) {
            float gy[16], zr[16];
#pragma unroll
            for (int m = 0; m < 16; m++) {
                const int t = ts + gpo + G * (mb + m);
                const bool ok = gcv && t < L;
                gy[m] = ok ? __ldg(p.dy + (rowb + t) * p.Di + gc) : 0.0f;
                zr[m] = ok && p.z ? __ldg(p.z + (rowb + t) * p.zs + gc) : 0.0f;
            }
#pragma unroll
            for (int m = 0; m < 16; m++) {
                const int r = gpo + G * (mb + m), t = ts + r;
                const int sc = r * CPB + swz_col<1>(r, gcw);
                const float xo = X[sc];
                float dyss = gy[m];
                if (p.z) {
                    const float zz = zr[m], sg = sigmoidf_(zz);
                    const float yss = fmaf(Dg, xo, YS[sc]);
                    dyss = gy[m] * zz * sg;
                    if (gcv && t < L)
                        p.dz[(rowb + t) * p.zs + gc] = gy[m] * yss * sg * fmaf(zz, 1.0f - sg, 1.0f);
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
                for (int k = 0; k < SPT; k++) s0[k] = h0v[k];
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
                    const float spa = (i > 0 ? st[i > 0 ? i - 1 : 0][k] : s0[k]) * av[i][k];
                    vb[k] = gk * dtx;
                    vc[k] = dys * st[i][k];
                    gb = fmaf(gk, Bv[k], gb);
                    const float e = gk * spa;
                    de = fmaf(e, A2[k], de);
                    dA[k] = fmaf(e, dv, dA[k]);
                    u[k] = av[i][k] * gk;
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
                        kv[k] = keep + __shfl_xor_sync(FULL_MASK, send, G);
                    }
                    float *row = RB + (i & 3) * (CPW / 2 * 8 * G) + (cl >> 1) * (8 * G);
                    *(float4 *)(row + 4 * (odd ? G + q : q)) = make_float4(kv[0], kv[1], kv[2], kv[3]);
                    if ((i & 3) == 0) {
                        /* positions i .. i + 3 (xpos) are in the buffer */
                        __syncwarp();
                        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
                        for (int jj = 0; jj < 4; jj++) {
                            const float4 v = *(const float4 *)(RB + xpos * (CPW / 2 * 8 * G) +
                                                               (xpart * 4 + jj) * (8 * G) + 4 * xquad);
                            acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
                        }
                        const int t = ts + i0 + i + xpos;
                        bc_reduce_add<LPX>(acc, xpart == 0 && t < L && xn < N,
                                           xdst + (long long)t * p.bcs, N - xn, p.red_vec);
                        __syncwarp();
                    }
                }
                if (!p.skip_bc && XB == 2) {
                    /* butterfly over the warp's 8 channels (G = 4): lane (cl, q) ends with dB
                     * (cl < 4) or dC of state n0 + (cl & 3), one red per lane */
                    float v[8] = {vb[0], vb[1], vb[2], vb[3], vc[0], vc[1], vc[2], vc[3]};
                    pair_reduce8(v, lane);
                    const int t = ts + i0 + i, n = n0 + (cl & 3);
                    if (t < L && n < N)
                        atomicAdd((cl < 4 ? p.dB : p.dC) + (rowb + t) * p.bcs + n, v[0]);
                }
                if (!p.skip_bc && XB == 0) {
                    float *row = RB + (i & 1) * (CPW * 8 * G) + cl * (8 * G);
                    *(float4 *)(row + 4 * (q ^ swz)) = make_float4(vb[0], vb[1], vb[2], vb[3]);
                    *(float4 *)(row + 4 * ((G + q) ^ swz)) = make_float4(vc[0], vc[1], vc[2], vc[3]);
                    if ((i & 1) == 0) {
                        /* positions i (spos 0) and i + 1 (spos 1) are in the buffer */
                        __syncwarp();
                        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
                        for (int jj = 0; jj < 4; jj++) {
                            const int ch = spart * 4 + jj;
                            const float4 v = *(const float4 *)(RB + spos * (CPW * 8 * G) +
                                                               ch * (8 * G) +
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
            group_reduce<BK, G>(gB, q);
            group_reduce<BK, G>(dE, q);
#pragma unroll
            for (int jj = 0; jj < BK / G; jj++) {
                const int r = i0 + q * (BK / G) + jj, t = ts + r;
                if (cv && t < L) {
                    const long long row = rowb + t;
                    const int sc = r * CPB + swz_col<1>(r, cw);
                    p.dx[row * p.Di + c] = fmaf(gB[jj], Dl[sc], Dc * YS[sc]);
                    p.ddelta[row * p.Di + c] = fmaf(gB[jj], X[sc], dE[jj] * LN2);
                }
            }
        }
        __syncthreads(); /* everyone is done with the staged chunk */
        if (kc > 0) {
            bwd3_stage<G, VEC>(p, sm, b, c0, kc - 1, tid);
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
    for (int off = CPW; off < 32; off <<= 1) dDacc += __shfl_xor_sync(FULL_MASK, dDacc, off);
    if (p.dD && gcv && lane < CPW) atomicAdd(p.dD + gc, dDacc);
}

/* ------------------------------------------------------- backward (two channels, v6) */
/* v5's walk with two channels per thread (N <= 16 in 4 lanes of 4 states; G = 4 only): one
 * block = 32 channels = 16 channel pairs x 4 lanes (2 warps, 64 threads); a thread owns
 * channels cw, cw + 1 (adjacent, read as float2) and states n0..n0+3. Each B/C row read from
 * shared memory serves 8 state chains instead of 4, which halves the B/C traffic that bound v5
 * (L1 94% busy), and the dB/dC sums over the thread's two channels are FMAs. Per 64-chunk:
 *   forward: from the saved entering state (prefetched into registers), states and the
 *     pre-gate output; checkpoints every BK = 8 positions (8 floats per thread) to shared memory;
 *   gate (one lane per (channel, position): 16 channels x 2 rows per warp, rows 16 banks apart
 *     in the padded X / YS tiles): dz, dyss -> YS, dD;
 *   reverse: per 8-position sub-chunk, decays and states recomputed into registers (2 x 64
 *     floats), then the walk; per position the dB/dC terms (dB: g dt x summed over the pair,
 *     dC: dyss s) are summed over the warp's 8 pairs by a transposing butterfly over lane bits
 *     2..4 (7 shuffles), after which lane (q, pl) holds one of the 32 (dB | dC, state) totals of
 *     the warp and adds it with one red (a warp's 32 reds cover the dB and dC rows of the
 *     position); dx / ddelta partials are summed over the 4 lanes of the pair the same way, lane
 *     q writing one of (dx c, dx c+1, ddelta c, ddelta c+1).
 * Warps never wait for one another inside a chunk (two __syncthreads per chunk, around the
 * single-stage cp.async staging). 54 KB of shared memory: 4 blocks per multiprocessor. */
struct bwd6_geom {
    static constexpr int NP = 16, NT = 64, CPB = 32;
    static constexpr int XS = 48; /* row stride of X and YS: the gate's two rows 16 banks apart */
    static constexpr int NCK = BT / BK - 1; /* checkpoints in shared memory (the first in registers) */
    /* offsets in floats (multiples of 4) */
    static constexpr int X = 0, DL = X + BT * XS, BS = DL + BT * CPB, CS = BS + BT * NP;
    static constexpr int YS = CS + BT * NP, CK = YS + BT * XS;
    static constexpr int TOTAL = CK + NCK * 2 * NT * 4;
};

template <bool VEC>
static __device__ __forceinline__ void bwd6_stage(const scan_params &p, float *sm, int b, int c0,
                                                  int kc, int tid) {
    typedef bwd6_geom g;
    const int t0 = kc * BT;
    const long long row0 = (long long)b * p.L + t0;
    const int nv = min(BT, p.L - t0), w = min(g::CPB, p.Di - c0);
    stage_rows<g::NT, VEC>(sm + g::X, g::XS, p.x + c0, row0, p.xs, BT, nv, w, tid, p.x);
    stage_rows<g::NT, VEC>(sm + g::DL, g::CPB, p.delta + c0, row0, p.Di, BT, nv, w, tid, p.x);
    stage_rows<g::NT, VEC>(sm + g::BS, g::NP, p.Bm, row0, p.bcs, BT, nv, p.N, tid, p.x);
    stage_rows<g::NT, VEC>(sm + g::CS, g::NP, p.Cm, row0, p.bcs, BT, nv, p.N, tid, p.x);
}

template <bool VEC>
__global__ void __launch_bounds__(64, 4) scan_bwd6_kernel(scan_params p) {
    typedef bwd6_geom g;
    constexpr int XS = g::XS, CPB = g::CPB, NP = g::NP, NT = g::NT;
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    const float *X = sm + g::X, *Dl = sm + g::DL, *Bs = sm + g::BS, *Cs = sm + g::CS;
    float *YS = sm + g::YS;
    float4 *CK = (float4 *)(sm + g::CK);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    /* scan mapping: channels cw, cw + 1 of the block, states n0..n0+3 */
    const int q = lane & 3, pl = lane >> 2, cw = warp * 16 + 2 * pl;
    const int c0 = blockIdx.x * CPB, c = c0 + cw, b = blockIdx.y;
    const bool cv0 = c < p.Di, cv1 = c + 1 < p.Di;
    const int N = p.N, L = p.L, n0 = q * SPT;
    /* gate mapping: channel gcw, positions gpo + 2 m */
    const int gcw = warp * 16 + (lane & 15), gpo = lane >> 4, gc = c0 + gcw;
    const bool gcv = gc < p.Di;
    const float Dg = gcv && p.D ? p.D[gc] : 0.0f;
    float A0[SPT], A1[SPT];
#pragma unroll
    for (int k = 0; k < SPT; k++) {
        const bool nv = n0 + k < N;
        A0[k] = cv0 && nv ? -expf(p.A_log[(long long)c * N + n0 + k]) * LOG2E : 0.0f;
        A1[k] = cv1 && nv ? -expf(p.A_log[(long long)(c + 1) * N + n0 + k]) * LOG2E : 0.0f;
    }
    const long long rowb = (long long)b * L;
    const float *hrow0 = p.h_chunks + ((long long)b * p.Di + (cv0 ? c : 0)) * p.nch * N;
    const float *hrow1 = p.h_chunks + ((long long)b * p.Di + (cv1 ? c + 1 : 0)) * p.nch * N;
    /* after pair_reduce8 lane (q, pl) holds dB (pl < 4) or dC of state n0 + (pl & 3) */
    const int rn = n0 + (pl & 3);
    float *const rdst = (pl < 4 ? p.dB : p.dC) + rowb * p.bcs + min(rn, N - 1);
    /* after the 4-lane sum lane q holds dx (q < 2) or ddelta of channel c + (q & 1) */
    const int oc = c + (q & 1);
    const bool ocv = oc < p.Di;
    float *const odst = (q < 2 ? p.dx : p.ddelta) + rowb * p.Di + (ocv ? oc : 0);
    const float oD = q < 2 && ocv && p.D ? p.D[oc] : 0.0f;
    float u0[SPT] = {0.0f, 0.0f, 0.0f, 0.0f}, u1[SPT] = {0.0f, 0.0f, 0.0f, 0.0f};
    float dA0[SPT] = {0.0f, 0.0f, 0.0f, 0.0f}, dA1[SPT] = {0.0f, 0.0f, 0.0f, 0.0f};
    float dDacc = 0.0f;
    const int nch = (L + BT - 1) / BT;
    bwd6_stage<VEC>(p, sm, b, c0, nch - 1, tid);
    cp_commit();
    float hn0[SPT], hn1[SPT];
    bwd3_load_h<VEC>(p, hrow0, nch - 1, n0, cv0, hn0);
    bwd3_load_h<VEC>(p, hrow1, nch - 1, n0, cv1, hn1);
#pragma unroll 1
    for (int kc = nch - 1; kc >= 0; kc--) {
        const float e0[SPT] = {hn0[0], hn0[1], hn0[2], hn0[3]};
        const float e1[SPT] = {hn1[0], hn1[1], hn1[2], hn1[3]};
        cp_wait<0>();
        __syncthreads();
        const int ts = kc * BT;
        /* ---- forward pass: states, checkpoints, pre-gate output */
        {
            float s0[SPT] = {e0[0], e0[1], e0[2], e0[3]}, s1[SPT] = {e1[0], e1[1], e1[2], e1[3]};
#pragma unroll 1
            for (int j = 0; j < BT / BK; j++) {
                if (j > 0) {
                    CK[(2 * (j - 1)) * NT + tid] = make_float4(s0[0], s0[1], s0[2], s0[3]);
                    CK[(2 * (j - 1) + 1) * NT + tid] = make_float4(s1[0], s1[1], s1[2], s1[3]);
                }
                /* ys[(2 ch + (i & 1)) * 4 + i / 2]: after the 4-lane sum lane q holds channel
                 * q >> 1 at positions 2 jj + (q & 1) (rows one apart: no bank conflicts) */
                float ys[2 * BK];
#pragma unroll
                for (int i = 0; i < BK; i++) {
                    const int r = j * BK + i;
                    const float2 xv = *(const float2 *)(X + r * XS + cw);
                    const float2 dv = *(const float2 *)(Dl + r * CPB + cw);
                    const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
                    const float4 C4 = *(const float4 *)(Cs + r * NP + n0);
                    const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
                    const float Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
                    const float dtx0 = dv.x * xv.x, dtx1 = dv.y * xv.y;
                    float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
                    for (int k = 0; k < SPT; k++) {
                        const float a0 = ex2(dv.x * A0[k]), a1 = ex2(dv.y * A1[k]);
                        s0[k] = fmaf(a0, s0[k], dtx0 * Bv[k]);
                        s1[k] = fmaf(a1, s1[k], dtx1 * Bv[k]);
                        y0 = fmaf(s0[k], Cv[k], y0);
                        y1 = fmaf(s1[k], Cv[k], y1);
                    }
                    ys[(i & 1) * 4 + i / 2] = y0;
                    ys[(2 + (i & 1)) * 4 + i / 2] = y1;
                }
                group_reduce<2 * BK, 4>(ys, q);
#pragma unroll
                for (int jj = 0; jj < 4; jj++)
                    YS[(j * BK + 2 * jj + (q & 1)) * XS + cw + (q >> 1)] = ys[jj];
            }
        }
        __syncwarp();
        /* ---- gate (one lane per (channel, position)): dz, dyss -> YS, dD */
#pragma unroll 1
        for (int mb = 0; mb < BT / 2; mb += 16) {
            float gy[16], zr[16];
#pragma unroll
            for (int m = 0; m < 16; m++) {
                const int t = ts + gpo + 2 * (mb + m);
                const bool ok = gcv && t < L;
                gy[m] = ok ? __ldg(p.dy + (rowb + t) * p.Di + gc) : 0.0f;
                zr[m] = ok && p.z ? __ldg(p.z + (rowb + t) * p.zs + gc) : 0.0f;
            }
#pragma unroll
            for (int m = 0; m < 16; m++) {
                const int r = gpo + 2 * (mb + m), t = ts + r;
                const float xo = X[r * XS + gcw];
                float dyss = gy[m];
                if (p.z) {
                    const float zz = zr[m], sg = sigmoidf_(zz);
                    const float yss = fmaf(Dg, xo, YS[r * XS + gcw]);
                    dyss = gy[m] * zz * sg;
                    if (gcv && t < L)
                        p.dz[(rowb + t) * p.zs + gc] = gy[m] * yss * sg * fmaf(zz, 1.0f - sg, 1.0f);
                }
                dDacc = fmaf(dyss, xo, dDacc);
                YS[r * XS + gcw] = dyss;
            }
        }
        __syncwarp();
        /* ---- reverse pass, one 8-position sub-chunk at a time */
#pragma unroll 1
        for (int j = BT / BK - 1; j >= 0; j--) {
            const int i0 = j * BK;
            float p0[SPT], p1[SPT];
            if (j == 0) {
#pragma unroll
                for (int k = 0; k < SPT; k++) p0[k] = e0[k], p1[k] = e1[k];
            } else {
                const float4 v0 = CK[(2 * (j - 1)) * NT + tid], v1 = CK[(2 * (j - 1) + 1) * NT + tid];
                p0[0] = v0.x, p0[1] = v0.y, p0[2] = v0.z, p0[3] = v0.w;
                p1[0] = v1.x, p1[1] = v1.y, p1[2] = v1.z, p1[3] = v1.w;
            }
            float av0[BK][SPT], av1[BK][SPT], st0[BK][SPT], st1[BK][SPT];
            {
                float s0[SPT] = {p0[0], p0[1], p0[2], p0[3]}, s1[SPT] = {p1[0], p1[1], p1[2], p1[3]};
#pragma unroll
                for (int i = 0; i < BK; i++) {
                    const int r = i0 + i;
                    const float2 xv = *(const float2 *)(X + r * XS + cw);
                    const float2 dv = *(const float2 *)(Dl + r * CPB + cw);
                    const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
                    const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
                    const float dtx0 = dv.x * xv.x, dtx1 = dv.y * xv.y;
#pragma unroll
                    for (int k = 0; k < SPT; k++) {
                        const float a0 = ex2(dv.x * A0[k]), a1 = ex2(dv.y * A1[k]);
                        av0[i][k] = a0, av1[i][k] = a1;
                        s0[k] = fmaf(a0, s0[k], dtx0 * Bv[k]);
                        s1[k] = fmaf(a1, s1[k], dtx1 * Bv[k]);
                        st0[i][k] = s0[k], st1[i][k] = s1[k];
                    }
                }
            }
#pragma unroll
            for (int i = BK - 1; i >= 0; i--) {
                const int r = i0 + i, t = ts + r;
                const float2 dys = *(const float2 *)(YS + r * XS + cw);
                const float2 xv = *(const float2 *)(X + r * XS + cw);
                const float2 dv = *(const float2 *)(Dl + r * CPB + cw);
                const float4 B4 = *(const float4 *)(Bs + r * NP + n0);
                const float4 C4 = *(const float4 *)(Cs + r * NP + n0);
                const float Bv[SPT] = {B4.x, B4.y, B4.z, B4.w};
                const float Cv[SPT] = {C4.x, C4.y, C4.z, C4.w};
                const float dtx0 = dv.x * xv.x, dtx1 = dv.y * xv.y;
                float v[8], gb0 = 0.0f, gb1 = 0.0f, de0 = 0.0f, de1 = 0.0f;
#pragma unroll
                for (int k = 0; k < SPT; k++) {
                    const float g0 = fmaf(dys.x, Cv[k], u0[k]), g1 = fmaf(dys.y, Cv[k], u1[k]);
                    u0[k] = av0[i][k] * g0; /* a_t g_t, the carry into t - 1 */
                    u1[k] = av1[i][k] * g1;
                    /* e = g_t a_t s_{t-1} */
                    const float ee0 = u0[k] * (i > 0 ? st0[i > 0 ? i - 1 : 0][k] : p0[k]);
                    const float ee1 = u1[k] * (i > 0 ? st1[i > 0 ? i - 1 : 0][k] : p1[k]);
                    de0 = fmaf(ee0, A0[k], de0);
                    de1 = fmaf(ee1, A1[k], de1);
                    dA0[k] = fmaf(ee0, dv.x, dA0[k]);
                    dA1[k] = fmaf(ee1, dv.y, dA1[k]);
                    gb0 = fmaf(g0, Bv[k], gb0);
                    gb1 = fmaf(g1, Bv[k], gb1);
                    v[k] = fmaf(g1, dtx1, g0 * dtx0);
                    v[4 + k] = fmaf(dys.y, st1[i][k], dys.x * st0[i][k]);
                }
                /* dx = delta sum_n g B + D dyss, ddelta = x sum_n g B + ln2 sum_n g a s A2 */
                float o[4] = {dv.x * gb0, dv.y * gb1, fmaf(xv.x, gb0, de0 * LN2),
                              fmaf(xv.y, gb1, de1 * LN2)};
                group_reduce<4, 4>(o, q);
                if (ocv && t < L)
                    odst[(long long)t * p.Di] = q < 2 ? fmaf(oD, (q & 1) ? dys.y : dys.x, o[0]) : o[0];
                if (!p.skip_bc) {
                    pair_reduce8(v, lane);
                    if (rn < N && t < L) atomicAdd(rdst + (long long)t * p.bcs, v[0]);
                }
            }
        }
        __syncthreads(); /* everyone is done with the staged chunk */
        if (kc > 0) {
            bwd6_stage<VEC>(p, sm, b, c0, kc - 1, tid);
            bwd3_load_h<VEC>(p, hrow0, kc - 1, n0, cv0, hn0);
            bwd3_load_h<VEC>(p, hrow1, kc - 1, n0, cv1, hn1);
        }
        cp_commit();
    }
    cp_wait<0>();
#pragma unroll
    for (int k = 0; k < SPT; k++) {
        if (n0 + k >= N) continue;
        if (cv0) atomicAdd(p.dA_log + (long long)c * N + n0 + k, dA0[k] * A0[k] * LN2);
        if (cv1) atomicAdd(p.dA_log + (long long)(c + 1) * N + n0 + k, dA1[k] * A1[k] * LN2);
    }
    dDacc += __shfl_xor_sync(FULL_MASK, dDacc, 16);
    if (p.dD && gcv && lane < 16) atomicAdd(p.dD + gc, dDacc);
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
static int g_fwd_warps = 0; /* > 0: the legacy forward kernel with that many warps per tile */
static int g_bwd_warps = 0; /* 0: automatic; 1: v5 (one thread walks a chunk); 8 or 16: v4 */
static int g_skip_bc = 0;
static int g_fwd_ch = 0; /* staged forward: channels per thread (0: automatic) */
#ifndef FWD_CH_AUTO
#define FWD_CH_AUTO 1
#endif

extern "C" void mb_scan_cuda_set_forward_channels(int ch) {
    g_fwd_ch = ch;
}

extern "C" void mb_scan_cuda_lab_skip_bc_atomics(int skip) {
    g_skip_bc = skip;
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

/* Backward kernel choice: 3 = v6 (scan_bwd6_kernel, two channels per thread; N 9..16 only),
 * 1 = v5 (scan_bwd3_kernel), 2 = v5 with the dB/dC pair exchange (XB 1), 4 = v5 with the dB/dC
 * butterfly (XB 2; N 9..16 only), 0 = v4
 * (scan_bwd2_kernel). Automatic: v6 (N 9..16) or v5 with the pair exchange (N <= 8) unless the
 * grid has fewer than 1.5 blocks per multiprocessor (v5 and v6 have one block per 32 channels
 * and sequence; v4 splits time inside a block and fills a small grid better: on the H200 at
 * L 8192, Di 2048, B 2 (128 blocks) v4 took 1.87 ms and v5 2.11, at B 4 v4 3.69 and v5 2.67). */
#ifndef BWD_AUTO
#define BWD_AUTO 3
#endif
static int choose_bwd(const scan_params *p) {
    const int G = lanes_per_channel(p->N);
    if (g_bwd_warps == 3) return G == 4 ? 3 : 2;
    if (g_bwd_warps == 4) return G == 4 ? 4 : 2;
    if (g_bwd_warps == 1 || g_bwd_warps == 2) return g_bwd_warps;
    if (g_bwd_warps == 8 || g_bwd_warps == 16) return 0;
    if (p->N > 16) return 0;
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        sms = 132;
    }
    const long long blocks = (long long)p->B * ((p->Di + 31) / 32);
    if (2 * blocks < 3LL * sms) return 0;
    return BWD_AUTO == 3 && G != 4 ? 2 : BWD_AUTO;
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
#define FWD_K(G, PAR) (vec ? scan_fwd_kernel<FWD_S, G, PAR, true> : scan_fwd_kernel<FWD_S, G, PAR, false>)
static kern_t fwd_kernel_for(int G, int par, int vec) {
    switch (G) {
    case 1: return par ? FWD_K(1, true) : FWD_K(1, false);
    case 2: return par ? FWD_K(2, true) : FWD_K(2, false);
    case 4: return par ? FWD_K(4, true) : FWD_K(4, false);
    default: return par ? FWD_K(8, true) : FWD_K(8, false);
    }
}

#define FWD2_K(G, FINE, CH) (vec ? scan_fwd2_kernel<G, true, FINE, CH> : scan_fwd2_kernel<G, false, FINE, CH>)
static kern_t fwd2_kernel_for(int G, int fine, int vec, int ch) {
    switch (G) {
    case 1: return fine ? FWD2_K(1, true, 1) : FWD2_K(1, false, 1);
    case 2: return fine ? FWD2_K(2, true, 1) : FWD2_K(2, false, 1);
    case 4:
        if (ch == 2) return fine ? FWD2_K(4, true, 2) : FWD2_K(4, false, 2);
        return fine ? FWD2_K(4, true, 1) : FWD2_K(4, false, 1);
    default: return fine ? FWD2_K(8, true, 1) : FWD2_K(8, false, 1);
    }
}

#define BWD3_K(G, XB) (vec ? scan_bwd3_kernel<G, true, XB> : scan_bwd3_kernel<G, false, XB>)
/* xb: 0 plain, 1 pair exchange, 2 butterfly (G = 4 only; else the pair exchange) */
static kern_t bwd3_kernel_for(int G, int vec, int xb) {
    switch (G) {
    case 1: return xb ? BWD3_K(1, 1) : BWD3_K(1, 0);
    case 2: return xb ? BWD3_K(2, 1) : BWD3_K(2, 0);
    default: return xb == 2 ? BWD3_K(4, 2) : xb ? BWD3_K(4, 1) : BWD3_K(4, 0);
    }
}

#define BWD2_K(S, G, W) (vec ? scan_bwd2_kernel<S, G, W, true> : scan_bwd2_kernel<S, G, W, false>)
static kern_t bwd2_kernel_for(int G, int W, int vec) {
    if (W == 8) {
        switch (G) {
        case 1: return BWD2_K(8, 1, 8);
        case 2: return BWD2_K(8, 2, 8);
        default: return BWD2_K(8, 4, 8);
        }
    }
    switch (G) {
    case 1: return BWD2_K(4, 1, 16);
    case 2: return BWD2_K(4, 2, 16);
    default: return BWD2_K(4, 4, 16);
    }
}

static int launch_forward(const scan_params *p, cudaStream_t st) {
    const int G = lanes_per_channel(p->N);
    cudaError_t e;
    if (g_fwd_warps <= 0) {
        const int vec = p->vec, fine = p->h_chunks && p->chunk % FT != 0;
        const size_t shm = sizeof(float) * FK * (3 * FT * 32 + 2 * FT * 4 * G);
        const int ch = G == 4 && (g_fwd_ch == 2 || (g_fwd_ch == 0 && FWD_CH_AUTO == 2)) ? 2 : 1;
        kern_t k = fwd2_kernel_for(G, fine, vec, ch);
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)shm);
        if (e != cudaSuccess) return cuda_fail(e, "mb_scan_cuda_forward: shared memory size");
        dim3 grid((p->Di + 31) / 32, p->B);
        k<<<grid, 32 * G / ch, shm, st>>>(*p);
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
    const int G = lanes_per_channel(N), v6 = G == 4 && BWD_AUTO == 3;
    const size_t shm = sizeof(float) * (v6 ? bwd6_geom::TOTAL
                                        : G == 1 ? bwd3_geom<1>::TOTAL
                                        : G == 2 ? bwd3_geom<2>::TOTAL
                                                 : bwd3_geom<4>::TOTAL);
    kern_t k = v6 ? scan_bwd6_kernel<true> : bwd3_kernel_for(G, 1, 1);
    cudaError_t e = cudaFuncSetAttribute((const void *)k,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 (int)cudaSharedmemCarveoutMaxShared);
    int nb = 0;
    if (e == cudaSuccess)
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k, v6 ? bwd6_geom::NT : 32 * G, shm);
    return e == cudaSuccess ? nb : cuda_fail(e, "backward occupancy");
}

extern "C" int mb_scan_cuda_forward(const mb_scan_args *a, float *y, void *stream) {
    int rc = check_args(a, "mb_scan_cuda_forward");
    if (rc) return rc;
    if (a->B * a->L * a->Di == 0) return 0;
    scan_params p = make_params(a);
    p.y = y;
    p.vec = p.vec && (!y || al16(y)); /* y rows are written with 16-byte stores */
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
    if (BWD_CHUNK % p.chunk == 0) {
        p.hstep = BWD_CHUNK / p.chunk; /* every hstep-th saved state is a backward chunk's */
    } else {
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
    zero_bc_kernel<<<(unsigned)((rows * p.N + 255) / 256), 256, 0, st>>>(dB, dC, rows, p.bcs, p.N);
    const int G = lanes_per_channel(p.N), cpw = 32 / G, vec = p.vec;
    p.skip_bc = g_skip_bc;
    p.red_vec = al16(dB) && al16(dC) && p.bcs % 4 == 0 && p.N % 4 == 0;
    const int kind = choose_bwd(&p);
    if (kind == 0) {
        const int W = g_bwd_warps == 16 ? 16 : 8;
        const size_t shm = sizeof(float4) * 3 * W * 32 +
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
        /* v5: blocks of 32 channels x G lanes, 54 KB of shared memory (G = 4): 4 per SM;
         * v6: blocks of 16 channel pairs x 4 lanes, 54 KB: 4 per SM */
        const size_t shm = sizeof(float) * (kind == 3   ? bwd6_geom::TOTAL
                                            : G == 1   ? bwd3_geom<1>::TOTAL
                                            : G == 2 ? bwd3_geom<2>::TOTAL
                                                     : bwd3_geom<4>::TOTAL);
        kern_t k = kind == 3 ? (vec ? scan_bwd6_kernel<true> : scan_bwd6_kernel<false>)
                             : bwd3_kernel_for(G, vec, kind == 4 ? 2 : kind == 2);
        e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)shm);
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute((const void *)k,
                                     cudaFuncAttributePreferredSharedMemoryCarveout,
                                     (int)cudaSharedmemCarveoutMaxShared);
        if (e == cudaSuccess) {
            dim3 grid((p.Di + 31) / 32, p.B);
            k<<<grid, kind == 3 ? bwd6_geom::NT : 32 * G, shm, st>>>(p);
            e = cudaGetLastError();
        }
    }
    if (tmp) cudaFreeAsync(tmp, st);
    return e == cudaSuccess ? 0 : cuda_fail(e, "mb_scan_cuda_backward: launch");
}
#endif /* MB_SCAN_EMU */
