/* Minimal cblas interface for building the CPU reference on machines without OpenBLAS (the GPU
 * device image): only what src/cpu/matmul.c uses. Implemented in tests/cuda/cblas_shim.c;
 * used only by tests/cuda/device_run_model.sh, never by the CMake build. */
#ifndef MB_TEST_CBLAS_SHIM_H
#define MB_TEST_CBLAS_SHIM_H

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m,
                 int n, int k, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc);

#endif
