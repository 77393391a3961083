/* Comparisons against references, shared by the GPU tests and the CPU emulators of the GPU
 * kernels (host code only): relative error, and bf16 copies against their fp32 references. */
#ifndef MB_TESTS_CUDA_REF_CHECK_H
#define MB_TESTS_CUDA_REF_CHECK_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* max |a - b| / max |b| over rows x width elements (row stride `stride`); a NaN or inf on one
 * side only -> INFINITY (both sides NaN / the same inf: skipped) */
static inline double rel_err_rows(const float *a, const float *b, int64_t rows, int64_t width,
                                  int64_t stride) {
    double num = 0.0, den = 0.0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < width; c++) {
            const float x = a[r * stride + c], y = b[r * stride + c];
            if (isnan(x) != isnan(y) || isinf(x) != isinf(y)) return INFINITY;
            if (isnan(x) || isinf(x)) continue;
            const double d = fabs((double)x - (double)y);
            if (d > num) num = d;
            if (fabs((double)y) > den) den = fabs((double)y);
        }
    return den > 0 ? num / den : num;
}

/* fp32 -> bf16 bits, round to nearest even (NaN stays NaN), and bf16 bits -> fp32 (exact): the
 * rounding the kernels' bf16 copies use, for references on the same rounded values */
static inline uint16_t ref_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float ref_bf16_value(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Elements of a bf16 tensor h (uint16_t bit patterns; rows x width, row stride `stride`) farther
 * from the fp32 reference ref (same layout) than half a bf16 ulp (<= 2^-8 relative) plus tol x
 * the largest reference magnitude: values near 0 come out of cancellations whose last fp32 bits
 * differ between devices. A NaN where the reference has a number counts as far. */
static inline int64_t bf16_count_far(const uint16_t *h, const float *ref, int64_t rows,
                                     int64_t width, int64_t stride, double tol) {
    float big = 0.0f;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < width; c++)
            big = fmaxf(big, fabsf(ref[r * stride + c]));
    int64_t far = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < width; c++) {
            const float v = ref_bf16_value(h[r * stride + c]);
            const float want = ref[r * stride + c];
            if (!(fabsf(v - want) <= 0x1p-8f * fabsf(want) + (float)tol * big)) far++;
        }
    return far;
}

#endif
