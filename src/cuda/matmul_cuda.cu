/* cuBLAS wrappers for the linear layers and the bias-gradient column sum (matmul_cuda.h).
 *
 * Row-major R (r x c, ld) is column-major R^T (c x r, ld), so with cuBLAS's column-major view:
 *   forward          y^T  (n_out x rows) = W^T' x^T      -> gemm(T, N, n_out, rows, n_in)
 *   backward_input   dx^T (n_in x rows)  = W'^T dy^T     -> gemm(N, N, n_in, rows, n_out)
 *   backward_weight  dW^T (n_in x n_out) = x^T dy        -> gemm(N, T, n_in, n_out, rows)
 * where W' (n_in x n_out, ld n_in) is the column-major view of the stored W.
 */
#include "cuda/matmul_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <limits.h>

#include "cuda/cuda_check.h"

static int cublas_fail(cublasStatus_t s, const char *what) {
    return mb_fail(MB_EIO, "%s: cuBLAS error %d (%s)", what, (int)s, cublasGetStatusString(s));
}

extern "C" int mb_cublas_create(void **handle, void *stream, int allow_tf32) {
    if (!handle) return mb_fail(MB_EINVAL, "mb_cublas_create: handle is NULL");
    *handle = NULL;
    cublasHandle_t h = NULL;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS) return cublas_fail(s, "cublasCreate");
    s = cublasSetStream(h, (cudaStream_t)stream);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetMathMode(h, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h);
        return cublas_fail(s, "cublasSetStream/cublasSetMathMode");
    }
    *handle = (void *)h;
    return MB_OK;
}

extern "C" void mb_cublas_destroy(void *handle) {
    if (handle) cublasDestroy((cublasHandle_t)handle);
}

static int dims_ok(const char *fn, int64_t rows, int64_t n_in, int64_t n_out, int64_t ld1,
                   int64_t ld2) {
    if (rows < 0 || n_in <= 0 || n_out <= 0 || rows > INT_MAX || n_in > INT_MAX ||
        n_out > INT_MAX || ld1 > INT_MAX || ld2 > INT_MAX)
        return mb_fail(MB_EINVAL, "%s: bad sizes rows=%lld n_in=%lld n_out=%lld", fn,
                       (long long)rows, (long long)n_in, (long long)n_out);
    return MB_OK;
}

extern "C" int mb_matmul_cuda_forward(void *cublas, float *y, int64_t ldy, const float *x,
                                      int64_t ldx, const float *W, int64_t rows, int64_t n_in,
                                      int64_t n_out, int accumulate) {
    MB_TRY(dims_ok("mb_matmul_cuda_forward", rows, n_in, n_out, ldy, ldx));
    if (rows == 0) return MB_OK;
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublasStatus_t s =
        cublasSgemm((cublasHandle_t)cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)rows,
                    (int)n_in, &one, W, (int)n_in, x, (int)ldx, &beta, y, (int)ldy);
    return s == CUBLAS_STATUS_SUCCESS ? MB_OK : cublas_fail(s, "mb_matmul_cuda_forward");
}

extern "C" int mb_matmul_cuda_backward_input(void *cublas, float *dx, int64_t lddx, const float *dy,
                                             int64_t lddy, const float *W, int64_t rows,
                                             int64_t n_in, int64_t n_out, int accumulate) {
    MB_TRY(dims_ok("mb_matmul_cuda_backward_input", rows, n_in, n_out, lddx, lddy));
    if (rows == 0) return MB_OK;
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublasStatus_t s =
        cublasSgemm((cublasHandle_t)cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)n_in, (int)rows,
                    (int)n_out, &one, W, (int)n_in, dy, (int)lddy, &beta, dx, (int)lddx);
    return s == CUBLAS_STATUS_SUCCESS ? MB_OK : cublas_fail(s, "mb_matmul_cuda_backward_input");
}

extern "C" int mb_matmul_cuda_backward_weight(void *cublas, float *dW, const float *dy,
                                              int64_t lddy, const float *x, int64_t ldx,
                                              int64_t rows, int64_t n_in, int64_t n_out) {
    MB_TRY(dims_ok("mb_matmul_cuda_backward_weight", rows, n_in, n_out, lddy, ldx));
    if (rows == 0) return MB_OK;
    const float one = 1.0f;
    cublasStatus_t s =
        cublasSgemm((cublasHandle_t)cublas, CUBLAS_OP_N, CUBLAS_OP_T, (int)n_in, (int)n_out,
                    (int)rows, &one, x, (int)ldx, dy, (int)lddy, &one, dW, (int)n_in);
    return s == CUBLAS_STATUS_SUCCESS ? MB_OK : cublas_fail(s, "mb_matmul_cuda_backward_weight");
}

/* block (32, 8): thread (tx, ty) sums rows ty + 8*k of its row slice for column bx*32 + tx;
 * the 8 partial sums are combined in shared memory and added with one atomic per column. */
__global__ void bias_backward_kernel(float *db, const float *dy, int64_t lddy, int64_t rows,
                                     int64_t n) {
    __shared__ float part[8][33];
    const int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < n)
        for (int64_t r = (int64_t)blockIdx.y * 8 + threadIdx.y; r < rows;
             r += (int64_t)gridDim.y * 8)
            s += dy[r * lddy + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < n) {
        for (int k = 1; k < 8; k++)
            s += part[k][threadIdx.x];
        atomicAdd(db + c, s);
    }
}

extern "C" int mb_bias_cuda_backward(float *db, const float *dy, int64_t lddy, int64_t rows,
                                     int64_t n, void *stream) {
    if (rows < 0 || n <= 0 || !db || !dy)
        return mb_fail(MB_EINVAL, "mb_bias_cuda_backward: bad arguments");
    if (rows == 0) return MB_OK;
    dim3 grid((unsigned)((n + 31) / 32), mb_cuda_blocks(rows, 64, 1024));
    bias_backward_kernel<<<grid, dim3(32, 8), 0, (cudaStream_t)stream>>>(db, dy, lddy, rows, n);
    MB_CUDA_LAUNCHED("mb_bias_cuda_backward");
    return MB_OK;
}
