/* Error plumbing shared by the CUDA sources (C++ only, internal): CUDA runtime and launch
 * failures become negative MB_E* codes with mb_fail() naming the operation, file and line
 * (never an abort). */
#ifndef MB_CUDA_CHECK_H
#define MB_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "mambabyte.h"

/* MB_ENOMEM for an allocation failure, MB_EIO for any other CUDA error. */
static inline int mb_cuda_err(cudaError_t e, const char *what, const char *file, int line) {
    return mb_fail(e == cudaErrorMemoryAllocation ? MB_ENOMEM : MB_EIO,
                   "%s: CUDA error: %s (%s:%d)", what, cudaGetErrorString(e), file, line);
}

/* Evaluate a cudaError_t expression; on failure return the MB_E* code from the function. */
#define MB_CUDA_TRY(call, what)                                                                    \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            (void)cudaGetLastError();                                                              \
            return mb_cuda_err(e_, what, __FILE__, __LINE__);                                      \
        }                                                                                          \
    } while (0)

/* After kernel launches: report a launch error (bad configuration, earlier sticky error). */
#define MB_CUDA_LAUNCHED(what) MB_CUDA_TRY(cudaGetLastError(), what)

/* Propagate a negative return code. */
#define MB_TRY(expr)                                                                               \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* Blocks of `threads` covering n items (n > 0), capped for grid-stride loops. */
static inline unsigned mb_cuda_blocks(long long n, int threads, long long cap) {
    long long b = (n + threads - 1) / threads;
    if (b > cap) b = cap;
    return (unsigned)(b > 0 ? b : 1);
}

/* Multiprocessors of the current device (132 on the H200; 132 if the query fails), for sizing
 * grids. */
static inline int mb_cuda_sm_count(void) {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();
        return 132;
    }
    return n;
}

#endif
