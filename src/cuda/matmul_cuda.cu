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

/* ------------------------------------------------------------------ bf16 through cuBLASLt */

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

enum { LT_FWD = 0, LT_BWD_IN = 1, LT_BWD_W = 2 };
#define LT_CACHE 256
#define LT_WORKSPACE ((size_t)32 << 20)

typedef struct {
    int kind, m, n, k, lda, ldb, ldc, beta1;
    int align_a, align_b, align_c;
    int d16; /* D (and C) bf16 instead of fp32 */
} lt_key;

typedef struct {
    lt_key key;
    int have_algo; /* 0: cuBLASLt offered none -> cublasGemmEx */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct {
    cublasLtHandle_t h;
    cublasHandle_t fallback; /* for shapes cuBLASLt declines */
    cudaStream_t stream;
    void *workspace;
    int tune; /* mb_cublaslt_set_tune */
    int n_plans;
    lt_plan plans[LT_CACHE];
} lt_ctx;

#define LT_TUNE_ALGOS 8 /* heuristic candidates timed per plan when tuning */
#define LT_TUNE_REPS 10 /* timed runs per candidate (after one warm-up run) */

extern "C" void mb_cublaslt_set_tune(void *lt, int on) {
    if (lt) ((lt_ctx *)lt)->tune = on != 0;
}

/* Index of the fastest of the n candidates for plan p on these operands, by LT_TUNE_REPS timed
 * runs each on the context's stream with the plan's beta (*beta); D is overwritten, so an
 * accumulating plan passes a scratch D of the same shape. 0 when timing fails (then the
 * heuristic's first choice stands). */
static int lt_fastest(lt_ctx *c, lt_plan *p, const cublasLtMatmulHeuristicResult_t *res, int n,
                      const void *A, const void *B, void *D, const float *beta) {
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        (void)cudaGetLastError();
        if (e0) cudaEventDestroy(e0);
        return 0;
    }
    const float one = 1.0f;
    int best = 0;
    float best_ms = 0.0f;
    for (int i = 0; i < n; i++) {
        cublasStatus_t s =
            cublasLtMatmul(c->h, p->op, &one, A, p->a, B, p->b, beta, D, p->c, D, p->c,
                           &res[i].algo, c->workspace, LT_WORKSPACE, c->stream);
        cudaEventRecord(e0, c->stream);
        for (int r = 0; r < LT_TUNE_REPS && s == CUBLAS_STATUS_SUCCESS; r++)
            s = cublasLtMatmul(c->h, p->op, &one, A, p->a, B, p->b, beta, D, p->c, D, p->c,
                               &res[i].algo, c->workspace, LT_WORKSPACE, c->stream);
        cudaEventRecord(e1, c->stream);
        float ms = 0.0f;
        if (cudaEventSynchronize(e1) != cudaSuccess ||
            cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        if (s == CUBLAS_STATUS_SUCCESS && (best_ms == 0.0f || ms < best_ms)) best = i, best_ms = ms;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return best;
}

extern "C" int mb_cublaslt_create(void **lt, void *stream) {
    if (!lt) return mb_fail(MB_EINVAL, "mb_cublaslt_create: NULL argument");
    *lt = NULL;
    lt_ctx *c = (lt_ctx *)calloc(1, sizeof *c);
    if (!c) return mb_fail(MB_ENOMEM, "mb_cublaslt_create: out of host memory");
    c->stream = (cudaStream_t)stream;
    cublasStatus_t s = cublasLtCreate(&c->h);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(c);
        return cublas_fail(s, "cublasLtCreate");
    }
    int rc = mb_cublas_create((void **)&c->fallback, stream, 0);
    if (rc) {
        cublasLtDestroy(c->h);
        free(c);
        return rc;
    }
    cudaError_t e = cudaMalloc(&c->workspace, LT_WORKSPACE);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        mb_cublaslt_destroy(c);
        return mb_cuda_err(e, "mb_cublaslt_create: workspace", __FILE__, __LINE__);
    }
    *lt = c;
    return MB_OK;
}

static void plan_free(lt_plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

extern "C" void mb_cublaslt_destroy(void *lt) {
    lt_ctx *c = (lt_ctx *)lt;
    if (!c) return;
    for (int i = 0; i < c->n_plans; i++)
        plan_free(&c->plans[i]);
    if (c->workspace) cudaFree(c->workspace);
    if (c->fallback) cublasDestroy(c->fallback);
    if (c->h) cublasLtDestroy(c->h);
    free(c);
}

/* largest power of two (<= 256) dividing the address */
static int ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int a = 256;
    while (a > 1 && (u & (uintptr_t)(a - 1)))
        a >>= 1;
    return a;
}

/* Column-major D (m x n, ldc; fp32, or bf16 when d16) = op(A) op(B) (+ D), A and B bf16 as
 * stored: A (ta ? k x m : m x k, lda), B (tb ? n x k : k x n, ldb). fp32 accumulation either way;
 * a bf16 D is rounded once at the end (callers use it with beta 0 only). */
static int lt_gemm(lt_ctx *c, int kind, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                   int k, const uint16_t *A, int lda, const uint16_t *B, int ldb, void *D, int d16,
                   int ldc, int beta1, const char *fn) {
    const cudaDataType_t dt = d16 ? CUDA_R_16BF : CUDA_R_32F;
    lt_key key;
    memset(&key, 0, sizeof key);
    key.kind = kind, key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb;
    key.ldc = ldc, key.beta1 = beta1, key.d16 = d16 != 0;
    key.align_a = ptr_align(A), key.align_b = ptr_align(B), key.align_c = ptr_align(D);
    lt_plan *p = NULL;
    for (int i = 0; i < c->n_plans; i++)
        if (!memcmp(&c->plans[i].key, &key, sizeof key)) {
            p = &c->plans[i];
            break;
        }
    if (!p) {
        if (c->n_plans == LT_CACHE) { /* full: start over */
            for (int i = 0; i < c->n_plans; i++)
                plan_free(&c->plans[i]);
            c->n_plans = 0;
        }
        p = &c->plans[c->n_plans];
        memset(p, 0, sizeof *p);
        p->key = key;
        cublasStatus_t s = cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, ta == CUBLAS_OP_N ? m : k,
                                           ta == CUBLAS_OP_N ? k : m, lda);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, tb == CUBLAS_OP_N ? k : n,
                                           tb == CUBLAS_OP_N ? n : k, ldb);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&p->c, dt, m, n, ldc);
        cublasLtMatmulPreference_t pref = NULL;
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulPreferenceCreate(&pref);
        size_t ws = LT_WORKSPACE;
        uint32_t al[3] = {(uint32_t)key.align_a, (uint32_t)key.align_b, (uint32_t)key.align_c};
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &ws, sizeof ws);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof al[0]);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof al[1]);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof al[2]);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], sizeof al[2]);
        /* cuBLASLt 12/13 split-K kernels can drop the last K % block_k terms of the sum (seen
         * here: 2.5% errors at K = 6147 on the H200; a known cuBLAS bug). Split-K only when K is
         * a multiple of 256: training's K = B * L usually is, odd shapes get unsplit kernels. */
        const uint32_t no_split = CUBLASLT_REDUCTION_SCHEME_NONE;
        if (s == CUBLAS_STATUS_SUCCESS && k % 256 != 0)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &no_split, sizeof no_split);
        cublasLtMatmulHeuristicResult_t res[LT_TUNE_ALGOS];
        int found = 0;
        /* tuning, outside stream capture: a beta 0 plan times its candidates on D (scratch
         * until the real call), an accumulating one on a zeroed scratch D of D's shape */
        cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
        const int tune = c->tune && cudaStreamIsCapturing(c->stream, &cap) == cudaSuccess &&
                         cap == cudaStreamCaptureStatusNone;
        if (s == CUBLAS_STATUS_SUCCESS) {
            cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
                c->h, p->op, p->a, p->b, p->c, p->c, pref, tune ? LT_TUNE_ALGOS : 1, res, &found);
            if (hs != CUBLAS_STATUS_SUCCESS) found = 0; /* fall back to cublasGemmEx */
        }
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (s != CUBLAS_STATUS_SUCCESS) {
            plan_free(p);
            return cublas_fail(s, fn);
        }
        p->have_algo = found > 0;
        int pick = 0;
        if (found > 1) {
            const float tbeta = beta1 ? 1.0f : 0.0f;
            void *TD = D;
            const size_t dbytes = (size_t)ldc * (size_t)n * (d16 ? 2u : 4u);
            if (beta1 && (cudaMalloc(&TD, dbytes) != cudaSuccess ||
                          cudaMemsetAsync(TD, 0, dbytes, c->stream) != cudaSuccess)) {
                (void)cudaGetLastError(); /* no scratch: the heuristic's first choice stands */
                if (TD != D) cudaFree(TD);
                TD = NULL;
            }
            if (TD) pick = lt_fastest(c, p, res, found, A, B, TD, &tbeta);
            if (TD && TD != D) {
                cudaStreamSynchronize(c->stream);
                cudaFree(TD);
            }
        }
        if (found > 0) p->algo = res[pick].algo;
        c->n_plans++;
    }
    const float one = 1.0f, beta = beta1 ? 1.0f : 0.0f;
    cublasStatus_t s;
    if (p->have_algo)
        s = cublasLtMatmul(c->h, p->op, &one, A, p->a, B, p->b, &beta, D, p->c, D, p->c, &p->algo,
                           c->workspace, LT_WORKSPACE, c->stream);
    else
        s = cublasGemmEx(c->fallback, ta, tb, m, n, k, &one, A, CUDA_R_16BF, lda, B, CUDA_R_16BF,
                         ldb, &beta, D, dt, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? MB_OK : cublas_fail(s, fn);
}

/* The forward and backward-input products of both output types (y / dx fp32, or bf16 when d16);
 * fn names the public function in errors. */
static int bf16_forward(void *lt, void *y, int d16, int64_t ldy, const uint16_t *x, int64_t ldx,
                        const uint16_t *W, int64_t rows, int64_t n_in, int64_t n_out,
                        int accumulate, const char *fn) {
    MB_TRY(dims_ok(fn, rows, n_in, n_out, ldy, ldx));
    if (!lt) return mb_fail(MB_EINVAL, "%s: no cuBLASLt context", fn);
    if (rows == 0) return MB_OK;
    return lt_gemm((lt_ctx *)lt, LT_FWD, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)rows, (int)n_in,
                   W, (int)n_in, x, (int)ldx, y, d16, (int)ldy, accumulate, fn);
}
static int bf16_backward_input(void *lt, void *dx, int d16, int64_t lddx, const uint16_t *dy,
                               int64_t lddy, const uint16_t *W, int64_t rows, int64_t n_in,
                               int64_t n_out, int accumulate, const char *fn) {
    MB_TRY(dims_ok(fn, rows, n_in, n_out, lddx, lddy));
    if (!lt) return mb_fail(MB_EINVAL, "%s: no cuBLASLt context", fn);
    if (rows == 0) return MB_OK;
    return lt_gemm((lt_ctx *)lt, LT_BWD_IN, CUBLAS_OP_N, CUBLAS_OP_N, (int)n_in, (int)rows,
                   (int)n_out, W, (int)n_in, dy, (int)lddy, dx, d16, (int)lddx, accumulate, fn);
}

extern "C" int mb_matmul_bf16_forward(void *lt, float *y, int64_t ldy, const uint16_t *x,
                                      int64_t ldx, const uint16_t *W, int64_t rows, int64_t n_in,
                                      int64_t n_out, int accumulate) {
    return bf16_forward(lt, y, 0, ldy, x, ldx, W, rows, n_in, n_out, accumulate,
                        "mb_matmul_bf16_forward");
}

extern "C" int mb_matmul_bf16_forward_out16(void *lt, uint16_t *y, int64_t ldy, const uint16_t *x,
                                            int64_t ldx, const uint16_t *W, int64_t rows,
                                            int64_t n_in, int64_t n_out) {
    return bf16_forward(lt, y, 1, ldy, x, ldx, W, rows, n_in, n_out, 0,
                        "mb_matmul_bf16_forward_out16");
}

extern "C" int mb_matmul_bf16_backward_input(void *lt, float *dx, int64_t lddx, const uint16_t *dy,
                                             int64_t lddy, const uint16_t *W, int64_t rows,
                                             int64_t n_in, int64_t n_out, int accumulate) {
    return bf16_backward_input(lt, dx, 0, lddx, dy, lddy, W, rows, n_in, n_out, accumulate,
                               "mb_matmul_bf16_backward_input");
}

extern "C" int mb_matmul_bf16_backward_input_out16(void *lt, uint16_t *dx, int64_t lddx,
                                                   const uint16_t *dy, int64_t lddy,
                                                   const uint16_t *W, int64_t rows, int64_t n_in,
                                                   int64_t n_out) {
    return bf16_backward_input(lt, dx, 1, lddx, dy, lddy, W, rows, n_in, n_out, 0,
                               "mb_matmul_bf16_backward_input_out16");
}

extern "C" int mb_matmul_bf16_backward_weight(void *lt, float *dW, const uint16_t *dy, int64_t lddy,
                                              const uint16_t *x, int64_t ldx, int64_t rows,
                                              int64_t n_in, int64_t n_out) {
    MB_TRY(dims_ok("mb_matmul_bf16_backward_weight", rows, n_in, n_out, lddy, ldx));
    if (!lt) return mb_fail(MB_EINVAL, "mb_matmul_bf16_backward_weight: no cuBLASLt context");
    if (rows == 0) return MB_OK;
    return lt_gemm((lt_ctx *)lt, LT_BWD_W, CUBLAS_OP_N, CUBLAS_OP_T, (int)n_in, (int)n_out,
                   (int)rows, x, (int)ldx, dy, (int)lddy, dW, 0, (int)n_in, 1,
                   "mb_matmul_bf16_backward_weight");
}
