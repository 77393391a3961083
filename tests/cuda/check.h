/* Shared by the GPU tests (tests/cuda/test_*.cu; one translation unit each): the failure
 * flag, a REQUIRE that records a failure with the library's last error and goes on, relative
 * errors that treat a NaN / inf on one side only as an infinite error, and a malloc that
 * exits when the host is out of memory. */
#ifndef MB_TESTS_CUDA_CHECK_H
#define MB_TESTS_CUDA_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mambabyte.h"
#include "ref_check.h"

static int g_fail = 0;

#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf(" [%s]\n", mb_last_error());                                                    \
            g_fail = 1;                                                                            \
        }                                                                                          \
    } while (0)

/* max |a - b| / max |b|; NaN or inf on one side only -> INFINITY */
static inline double rel_err(const float *a, const float *b, int64_t n) {
    return rel_err_rows(a, b, 1, n, n);
}

/* ||a - b||_2 / ||b||_2; NaN or inf on one side only -> INFINITY */
static inline double l2_rel_err(const float *a, const float *b, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float x = a[i], y = b[i];
        if (isnan(x) != isnan(y) || isinf(x) != isinf(y)) return INFINITY;
        if (isnan(x) || isinf(x)) continue;
        num += ((double)x - y) * ((double)x - y);
        den += (double)y * y;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("out of host memory\n");
        exit(1);
    }
    return p;
}

#endif
