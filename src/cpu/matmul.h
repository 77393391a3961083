/* Linear layers without bias as cblas_sgemm calls over all B*L rows at once (PyTorch
 * nn.Linear convention: W is (out, in), y = x W^T). Row-major; every matrix has a leading
 * dimension so column slices (e.g. dt_low = dbc[:, :R]) need no copy. OpenBLAS threads
 * internally. Dimensions must fit in an int (cblas); larger calls are split over rows.
 */
#ifndef MB_CPU_MATMUL_H
#define MB_CPU_MATMUL_H

#include <stdint.h>

/* y (rows, n_out; ld ldy) (=, or += when accumulate) x (rows, n_in; ld ldx) @ W^T,
 * W (n_out, n_in) contiguous. */
void mb_matmul_forward(float *y, int64_t ldy, const float *x, int64_t ldx, const float *W,
                       int64_t rows, int64_t n_in, int64_t n_out, int accumulate);

/* Input gradient: dx (rows, n_in; ld lddx) (=, or += when accumulate) dy (rows, n_out;
 * ld lddy) @ W. */
void mb_matmul_backward_input(float *dx, int64_t lddx, const float *dy, int64_t lddy,
                              const float *W, int64_t rows, int64_t n_in, int64_t n_out,
                              int accumulate);

/* Weight gradient: dW (n_out, n_in) += dy^T (n_out x rows) @ x (rows, n_in). */
void mb_matmul_backward_weight(float *dW, const float *dy, int64_t lddy, const float *x,
                               int64_t ldx, int64_t rows, int64_t n_in, int64_t n_out);

/* Bias gradient: db (n) += sum over rows of dy (rows, n; ld lddy), float64 sums in a fixed
 * order (independent of the thread count). */
void mb_bias_backward(float *db, const float *dy, int64_t lddy, int64_t rows, int64_t n);

#endif
