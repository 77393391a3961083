/* Thin cblas_sgemm wrappers for the linear layers (see matmul.h). */
#include "cpu/matmul.h"

#include <cblas.h>

/* rows per sgemm call, so every cblas dimension fits in an int */
#define MM_MAX_ROWS ((int64_t)1 << 30)

void mb_matmul_forward(float *y, int64_t ldy, const float *x, int64_t ldx, const float *W,
                       int64_t rows, int64_t n_in, int64_t n_out, int accumulate) {
    for (int64_t r0 = 0; r0 < rows; r0 += MM_MAX_ROWS) {
        int64_t m = rows - r0 < MM_MAX_ROWS ? rows - r0 : MM_MAX_ROWS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n_out, (int)n_in, 1.0f,
                    x + r0 * ldx, (int)ldx, W, (int)n_in, accumulate ? 1.0f : 0.0f, y + r0 * ldy,
                    (int)ldy);
    }
}

void mb_matmul_backward_input(float *dx, int64_t lddx, const float *dy, int64_t lddy,
                              const float *W, int64_t rows, int64_t n_in, int64_t n_out,
                              int accumulate) {
    for (int64_t r0 = 0; r0 < rows; r0 += MM_MAX_ROWS) {
        int64_t m = rows - r0 < MM_MAX_ROWS ? rows - r0 : MM_MAX_ROWS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n_in, (int)n_out, 1.0f,
                    dy + r0 * lddy, (int)lddy, W, (int)n_in, accumulate ? 1.0f : 0.0f,
                    dx + r0 * lddx, (int)lddx);
    }
}

void mb_matmul_backward_weight(float *dW, const float *dy, int64_t lddy, const float *x,
                               int64_t ldx, int64_t rows, int64_t n_in, int64_t n_out) {
    for (int64_t r0 = 0; r0 < rows; r0 += MM_MAX_ROWS) {
        int64_t m = rows - r0 < MM_MAX_ROWS ? rows - r0 : MM_MAX_ROWS;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n_out, (int)n_in, (int)m, 1.0f,
                    dy + r0 * lddy, (int)lddy, x + r0 * ldx, (int)ldx, 1.0f, dW, (int)n_in);
    }
}

#define BIAS_CBLK 16

void mb_bias_backward(float *db, const float *dy, int64_t lddy, int64_t rows, int64_t n) {
    int64_t nblk = (n + BIAS_CBLK - 1) / BIAS_CBLK;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t j0 = blk * BIAS_CBLK;
        int64_t nj = n - j0 < BIAS_CBLK ? n - j0 : BIAS_CBLK;
        double s[BIAS_CBLK] = {0};
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < nj; j++)
                s[j] += dy[i * lddy + j0 + j];
        for (int64_t j = 0; j < nj; j++)
            db[j0 + j] += (float)s[j];
    }
}
