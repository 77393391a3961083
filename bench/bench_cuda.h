/* What the GPU benchmarks (bench_*_cuda.cu) share: exit with the failing call and its message
 * on a CUDA error (CK) or a mambabyte error (RC), and the float comparison their medians sort
 * with. */
#ifndef MB_BENCH_CUDA_H
#define MB_BENCH_CUDA_H

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "mambabyte.h"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define RC(call)                                                                                   \
    do {                                                                                           \
        if ((call) != 0) {                                                                         \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, mb_last_error());        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* qsort comparison of floats, ascending */
static inline int cmpf(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

#endif
