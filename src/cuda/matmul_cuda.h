/* Linear layers without bias on the GPU through cuBLAS (cublasSgemm), the device twin of
 * src/cpu/matmul.h: PyTorch nn.Linear convention (W is (out, in), y = x W^T), row-major with a
 * leading dimension for every matrix so column slices need no copy. All pointers are DEVICE
 * pointers. Dimensions must fit in an int. Asynchronous on the handle's stream.
 * Errors: MB_EINVAL for bad sizes, MB_EIO with the cuBLAS status for a failed call.
 */
#ifndef MB_CUDA_MATMUL_CUDA_H
#define MB_CUDA_MATMUL_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A cuBLAS handle bound to `stream` (cudaStream_t as void *, NULL = default). allow_tf32 = 0
 * keeps every product in true fp32 (the parity mode); 1 lets cuBLAS use TF32 tensor cores.
 * MB_EIO when cuBLAS cannot be initialised (no GPU, driver). */
int mb_cublas_create(void **handle, void *stream, int allow_tf32);
void mb_cublas_destroy(void *handle);

/* y (rows, n_out; ld ldy) (=, or += when accumulate) x (rows, n_in; ld ldx) @ W^T,
 * W (n_out, n_in) contiguous. */
int mb_matmul_cuda_forward(void *cublas, float *y, int64_t ldy, const float *x, int64_t ldx,
                           const float *W, int64_t rows, int64_t n_in, int64_t n_out,
                           int accumulate);

/* dx (rows, n_in; ld lddx) (=, or += when accumulate) dy (rows, n_out; ld lddy) @ W. */
int mb_matmul_cuda_backward_input(void *cublas, float *dx, int64_t lddx, const float *dy,
                                  int64_t lddy, const float *W, int64_t rows, int64_t n_in,
                                  int64_t n_out, int accumulate);

/* dW (n_out, n_in) += dy^T (n_out x rows; dy ld lddy) @ x (rows, n_in; ld ldx). */
int mb_matmul_cuda_backward_weight(void *cublas, float *dW, const float *dy, int64_t lddy,
                                   const float *x, int64_t ldx, int64_t rows, int64_t n_in,
                                   int64_t n_out);

/* ---- bf16 mixed precision through cuBLASLt (bf16 A and B, fp32 accumulate, fp32 C/D) ----
 * The same three products with bf16 operands (uint16_t bit patterns of __nv_bfloat16) and fp32
 * outputs, so gradients accumulate into the fp32 master gradients directly. Plans (operation
 * descriptor, layouts, heuristic algorithm) are cached per shape, leading dimensions and
 * pointer alignment; when cuBLASLt offers no algorithm for a shape (odd leading dimensions of
 * tiny models) the product falls back to cublasGemmEx with the same types.
 * A context holds the cuBLASLt handle, a 32 MiB workspace and the plan cache; it is bound to
 * `stream` and not thread-safe. Errors as above (MB_EIO names the cuBLAS status). */
int mb_cublaslt_create(void **lt, void *stream);
void mb_cublaslt_destroy(void *lt);
/* on = 1: plans made from now on time cuBLASLt's first 8 heuristic algorithms on the call's
 * operands (10 runs each, on the stream, outside stream capture) and keep the fastest, instead
 * of taking the first; a product that accumulates into its output (beta 1: the weight
 * gradients) is timed on a zeroed scratch output of the same shape (cudaMalloc; the first
 * choice stands when that fails), so its real output is accumulated once. Training turns it
 * on (2-3% faster steps at medium and 353m); the choice, and so the rounding, can differ
 * between runs. Not for batched generation, whose GEMMs timed alone find their weights in L2
 * and chose slower plans. */
void mb_cublaslt_set_tune(void *lt, int on);

int mb_matmul_bf16_forward(void *lt, float *y, int64_t ldy, const uint16_t *x, int64_t ldx,
                           const uint16_t *W, int64_t rows, int64_t n_in, int64_t n_out,
                           int accumulate);
int mb_matmul_bf16_backward_input(void *lt, float *dx, int64_t lddx, const uint16_t *dy,
                                  int64_t lddy, const uint16_t *W, int64_t rows, int64_t n_in,
                                  int64_t n_out, int accumulate);
int mb_matmul_bf16_backward_weight(void *lt, float *dW, const uint16_t *dy, int64_t lddy,
                                   const uint16_t *x, int64_t ldx, int64_t rows, int64_t n_in,
                                   int64_t n_out);
/* The forward and backward-input products with a bf16 output (y / dx as uint16_t bf16 bits,
 * leading dimension in elements), overwritten: fp32 accumulation, one rounding to nearest even
 * at the end (mixed-precision activations that only feed bf16-reading kernels, as mamba_ssm's
 * autocast outputs). No accumulating form: cuBLASLt's bf16 beta = 1 kernels add the old output
 * after rounding the product (measured up to 1 ulp of the larger term off). Errors as the
 * fp32-output forms. */
int mb_matmul_bf16_forward_out16(void *lt, uint16_t *y, int64_t ldy, const uint16_t *x, int64_t ldx,
                                 const uint16_t *W, int64_t rows, int64_t n_in, int64_t n_out);
int mb_matmul_bf16_backward_input_out16(void *lt, uint16_t *dx, int64_t lddx, const uint16_t *dy,
                                        int64_t lddy, const uint16_t *W, int64_t rows, int64_t n_in,
                                        int64_t n_out);

/* Bias gradient: db (n) += sum over rows of dy (rows, n; ld lddy). Column partial sums in
 * fp32 combined with atomicAdd (order not fixed). */
int mb_bias_cuda_backward(float *db, const float *dy, int64_t lddy, int64_t rows, int64_t n,
                          void *stream);

#ifdef __cplusplus
}
#endif
#endif
