/* Reference sgemm for tests/cuda/shim/cblas.h: C = alpha op(A) op(B) + beta C, row-major
 * only, float64 accumulation, OpenMP over rows of C. Slow but exact enough to serve as the
 * CPU reference of the GPU tests on a machine without OpenBLAS. */
#include <stdint.h>

#include "cblas.h"

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m,
                 int n, int k, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) {
    (void)order; /* row-major only */
    const int at = ta == CblasTrans, bt = tb == CblasTrans;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) {
                const float a = at ? A[(int64_t)p * lda + i] : A[(int64_t)i * lda + p];
                const float b = bt ? B[(int64_t)j * ldb + p] : B[(int64_t)p * ldb + j];
                s += (double)a * b;
            }
            float *c = C + (int64_t)i * ldc + j;
            *c = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
}
