/* RMSNorm / LayerNorm forward and backward with the residual add fused (see norm.h). */
#include "cpu/norm.h"

#include <math.h>
#include <stddef.h>

/* Columns per task in the parameter-gradient reductions: a cache line of floats. Each task
 * sums over all rows in a fixed order, so the result does not depend on the thread count. */
#define NORM_COL_BLOCK 16

void mb_norm_forward(float *resid_out, float *y, float *mean, float *rstd, const float *h,
                     const float *resid_in, const float *w, const float *b, int64_t rows, int64_t d,
                     float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *hi = h + i * d;
        float *ri = resid_out + i * d;
        if (resid_in) {
            const float *pi = resid_in + i * d;
            for (int64_t j = 0; j < d; j++)
                ri[j] = hi[j] + pi[j];
        } else if (ri != hi) {
            for (int64_t j = 0; j < d; j++)
                ri[j] = hi[j];
        }
        float *yi = y + i * d;
        if (b) { /* LayerNorm */
            double s = 0.0;
            for (int64_t j = 0; j < d; j++)
                s += ri[j];
            double m = s / (double)d;
            double v = 0.0;
            for (int64_t j = 0; j < d; j++) {
                double t = ri[j] - m;
                v += t * t;
            }
            float rs = (float)(1.0 / sqrt(v / (double)d + (double)eps));
            float mf = (float)m;
            if (mean) mean[i] = mf;
            rstd[i] = rs;
            for (int64_t j = 0; j < d; j++)
                yi[j] = (ri[j] - mf) * rs * w[j] + b[j];
        } else { /* RMSNorm */
            double v = 0.0;
            for (int64_t j = 0; j < d; j++)
                v += (double)ri[j] * ri[j];
            float rs = (float)(1.0 / sqrt(v / (double)d + (double)eps));
            rstd[i] = rs;
            for (int64_t j = 0; j < d; j++)
                yi[j] = ri[j] * rs * w[j];
        }
    }
}

void mb_norm_apply(float *y, const float *r, const float *mean, const float *rstd, const float *w,
                   const float *b, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *ri = r + i * d;
        float *yi = y + i * d;
        float rs = rstd[i];
        if (b) {
            float mf = mean[i];
            for (int64_t j = 0; j < d; j++)
                yi[j] = (ri[j] - mf) * rs * w[j] + b[j];
        } else {
            for (int64_t j = 0; j < d; j++)
                yi[j] = ri[j] * rs * w[j];
        }
    }
}

void mb_norm_backward(float *dr, float *dw, float *db, const float *dy, const float *r,
                      const float *mean, const float *rstd, const float *w, int64_t rows, int64_t d,
                      int accumulate) {
    int layer = db != NULL;
    /* input gradient, row by row:
     *   g = dy * w, xhat = (r - mean) * rstd   (mean = 0 for RMSNorm)
     *   LayerNorm: dr = rstd * (g - mean(g) - xhat * mean(g * xhat))
     *   RMSNorm:   dr = rstd * (g - xhat * mean(g * xhat)) */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *ri = r + i * d, *dyi = dy + i * d;
        float *dri = dr + i * d;
        float rs = rstd[i], mf = layer ? mean[i] : 0.0f;
        double sg = 0.0, sgx = 0.0;
        for (int64_t j = 0; j < d; j++) {
            float g = dyi[j] * w[j];
            float xh = (ri[j] - mf) * rs;
            sg += g;
            sgx += (double)g * xh;
        }
        float mg = layer ? (float)(sg / (double)d) : 0.0f;
        float mgx = (float)(sgx / (double)d);
        for (int64_t j = 0; j < d; j++) {
            float g = dyi[j] * w[j];
            float xh = (ri[j] - mf) * rs;
            float v = rs * (g - mg - xh * mgx);
            dri[j] = accumulate ? dri[j] + v : v;
        }
    }
    /* parameter gradients: dw = sum_rows dy * xhat, db = sum_rows dy */
    int64_t nblk = (d + NORM_COL_BLOCK - 1) / NORM_COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t j0 = blk * NORM_COL_BLOCK;
        int64_t nj = d - j0 < NORM_COL_BLOCK ? d - j0 : NORM_COL_BLOCK;
        double sw[NORM_COL_BLOCK] = {0}, sb[NORM_COL_BLOCK] = {0};
        for (int64_t i = 0; i < rows; i++) {
            const float *ri = r + i * d + j0, *dyi = dy + i * d + j0;
            float rs = rstd[i], mf = layer ? mean[i] : 0.0f;
            for (int64_t j = 0; j < nj; j++) {
                sw[j] += (double)dyi[j] * ((ri[j] - mf) * rs);
                sb[j] += dyi[j];
            }
        }
        for (int64_t j = 0; j < nj; j++) {
            dw[j0 + j] += (float)sw[j];
            if (layer) db[j0 + j] += (float)sb[j];
        }
    }
}
