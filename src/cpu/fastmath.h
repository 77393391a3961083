/* Branch-free, vectorisable elementwise maths shared by the CPU kernels (the selective scan
 * and the recurrent step), so their inner loops compile to SIMD without libm calls. */
#ifndef MB_CPU_FASTMATH_H
#define MB_CPU_FASTMATH_H

#include <stdint.h>

#if defined(__FMA__)
#define MB_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define MB_FMA(a, b, c) ((a) * (b) + (c))
#endif

typedef union {
    float f;
    uint32_t u;
} mb_fbits;

/* exp(v), branch-free and vectorisable. Cephes expf scheme: v = k ln2 + r with |r| <= ln2/2
 * (ln2 split in two constants), exp(r) by a degree-6 polynomial (about 1 ulp), 2^k through the
 * exponent bits; k = round(v log2 e) via the 1.5 * 2^23 rounding constant. Inputs are clamped
 * to [-87, 88]; results for v < -87 are 0 (they would be denormal). NaN propagates. */
static inline float mb_fast_expf(float v) {
    float x = v > 88.0f ? 88.0f : v;
    x = x < -87.0f ? -87.0f : x;
    mb_fbits t;
    t.f = MB_FMA(x, 1.44269504088896341f, 12582912.0f);
    float k = t.f - 12582912.0f;
    float r = MB_FMA(k, -0.693359375f, x);
    r = MB_FMA(k, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = MB_FMA(p, r, 1.3981999507e-3f);
    p = MB_FMA(p, r, 8.3334519073e-3f);
    p = MB_FMA(p, r, 4.1665795894e-2f);
    p = MB_FMA(p, r, 1.6666665459e-1f);
    p = MB_FMA(p, r, 5.0000001201e-1f);
    p = MB_FMA(p * r, r, r) + 1.0f;
    mb_fbits sc;
    sc.u = (t.u - 0x4B400000u + 127u) << 23; /* 2^k, k in [-126, 127] */
    float res = p * sc.f;
    return v < -87.0f ? 0.0f : res;
}

#endif
