/* What the GPU benchmarks (bench_*_cuda.cu) share: exit with the failing call and its message
 * on a CUDA error (CK) or a mambabyte error (RC), and their timing: 3 warm-up calls, then the
 * median of 20 timed by CUDA events on the default stream (median_ms). */
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

/* ms of one fn() call (any callable launching work on the default stream): 3 warm-ups, then the
 * median of 20 calls, each timed between two events */
template <typename F> static float median_ms(F &&fn) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++)
        fn();
    CK(cudaDeviceSynchronize());
    float t[20];
    for (int i = 0; i < 20; i++) {
        CK(cudaEventRecord(e0));
        fn();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    qsort(t, 20, sizeof(float), cmpf);
    return 0.5f * (t[9] + t[10]);
}

#endif
