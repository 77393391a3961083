/* Device math shared by the CUDA kernels: one-instruction approximations (MUFU) and what is
 * built from them (sigmoid, SiLU, softplus with mamba_ssm's threshold), and the transposing
 * warp sum. The scan (scan.cu) and the batched generation step (step_cuda.cu) use them; their
 * CPU references are src/cpu/activations.h (expf / log1pf), and the tests compare within the
 * kernels' stated tolerances (1e-4 relative in fp32 mode).
 *
 * Under MB_SCAN_EMU (the CPU emulators: tests/cuda/scan_emu.cpp runs scan.cu, decode_emu
 * decode_persist.cu) ex2, lg2_ and rcp_ are the exact host functions; the emulator defines
 * __shfl_xor_sync itself, before including this. */
#ifndef MB_FAST_MATH_CUDA_H
#define MB_FAST_MATH_CUDA_H

#ifndef FULL_MASK
#define FULL_MASK 0xffffffffu
#endif
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

#ifndef MB_SCAN_EMU
/* 2^v, one MUFU.EX2 (relative error about 2^-22; 0 for v -> -inf) */
static __device__ __forceinline__ float ex2(float v) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
}

/* log2(v), one MUFU.LG2 (absolute error about 2^-22 near 1) */
static __device__ __forceinline__ float lg2_(float v) {
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
}

/* 1 / v, one MUFU.RCP (relative error about 1 ulp; 0 for v = inf) */
static __device__ __forceinline__ float rcp_(float v) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
}
#else /* the CPU emulators (scan_emu, decode_emu): the exact host functions */
static inline float ex2(float v) {
    return exp2f(v);
}
static inline float lg2_(float v) {
    return log2f(v);
}
static inline float rcp_(float v) {
    return 1.0f / v;
}
#endif

/* 1 / (1 + exp(-v)): 0 for v -> -inf (rcp of inf), 1 for v -> +inf */
static __device__ __forceinline__ float sigmoidf_(float v) {
    return rcp_(1.0f + ex2(-v * LOG2E));
}

/* v * sigmoid(v) */
static __device__ __forceinline__ float silu_fast(float v) {
    return v * sigmoidf_(v);
}

/* softplus with mamba_ssm's threshold (delta_softplus; src/cpu/activations.h): v above 20, else
 * log1p(e), e = exp(v), by one MUFU.LG2 of 1 + e, or for e < 1/64 by its series to e^3
 * (relative error below e^3 / 4 < 1e-6, where 1 + e would lose e's low bits) */
static __device__ __forceinline__ float dt_softplus_f(float v) {
    const float e = ex2(v * LOG2E);
    const float series = e * fmaf(e, fmaf(e, 1.0f / 3.0f, -0.5f), 1.0f);
    return v > 20.0f ? v : e < 0.015625f ? series : lg2_(1.0f + e) * LN2;
}

/* Sum v[0..S) over G lanes (lanes LS apart: LS = 1 when they are adjacent), transposing:
 * afterwards v[j] (j < S/G) holds the total of value q*(S/G) + j, q the lane's index among the
 * G (bit H of q picks the upper half at the level of distance H). S >= G, both powers of two.
 * S - S/G shuffles instead of S log2(G) for a plain butterfly per value. */
template <int S, int G, int H, int LS> struct group_reduce_level {
    static __device__ __forceinline__ void run(float *v, int q) {
        constexpr int m = S * H / G; /* values still paired at this level */
        const bool up = (q & H) != 0;
#pragma unroll
        for (int j = 0; j < m; j++) {
            const float send = up ? v[j] : v[j + m];
            const float keep = up ? v[j + m] : v[j];
            v[j] = keep + __shfl_xor_sync(FULL_MASK, send, H * LS);
        }
        group_reduce_level<S, G, H / 2, LS>::run(v, q);
    }
};
template <int S, int G, int LS> struct group_reduce_level<S, G, 0, LS> {
    static __device__ __forceinline__ void run(float *, int) {}
};
template <int S, int G, int LS = 1>
static __device__ __forceinline__ void group_reduce(float *v, int q) {
    group_reduce_level<S, G, G / 2, LS>::run(v, q);
}

#endif
