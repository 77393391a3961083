/* Causal depthwise conv1d + bias + SiLU, forward and backward (see conv1d.h). */
#include "cpu/conv1d.h"

#include <string.h>

#include "cpu/activations.h"

/* channels per task: one cache line of floats per row touched */
#define CONV_CBLK 16

void mb_conv1d_forward(float *out, const float *x, int64_t x_stride, const float *w, const float *b,
                       const float *state, int64_t B, int64_t L, int64_t Di, int64_t K) {
    int64_t nblk = (Di + CONV_CBLK - 1) / CONV_CBLK;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t bb = 0; bb < B; bb++) {
        for (int64_t blk = 0; blk < nblk; blk++) {
            int64_t c0 = blk * CONV_CBLK;
            int64_t nc = Di - c0 < CONV_CBLK ? Di - c0 : CONV_CBLK;
            const float *xb = x + bb * L * x_stride + c0;
            const float *sb = state ? state + bb * (K - 1) * Di + c0 : NULL;
            float wt[64][CONV_CBLK]; /* taps transposed: wt[k][c] = w[c0 + c, k]; K <= 64 */
            for (int64_t k = 0; k < K; k++)
                for (int64_t c = 0; c < nc; c++)
                    wt[k][c] = w[(c0 + c) * K + k];
            for (int64_t t = 0; t < L; t++) {
                float acc[CONV_CBLK];
                for (int64_t c = 0; c < nc; c++)
                    acc[c] = b[c0 + c];
                for (int64_t k = 0; k < K; k++) {
                    int64_t p = t - K + 1 + k;
                    const float *src;
                    if (p >= 0)
                        src = xb + p * x_stride;
                    else if (sb)
                        src = sb + (K - 1 + p) * Di;
                    else
                        continue; /* zeros before the sequence */
                    for (int64_t c = 0; c < nc; c++)
                        acc[c] += wt[k][c] * src[c];
                }
                float *o = out + (bb * L + t) * Di + c0;
                for (int64_t c = 0; c < nc; c++)
                    o[c] = mb_siluf(acc[c]);
            }
        }
    }
}

void mb_conv1d_update_state(float *state, const float *x, int64_t x_stride, int64_t B, int64_t L,
                            int64_t Di, int64_t K) {
    if (K <= 1 || L <= 0) return;
#pragma omp parallel for schedule(static)
    for (int64_t bb = 0; bb < B; bb++) {
        float *sb = state + bb * (K - 1) * Di;
        const float *xb = x + bb * L * x_stride;
        /* new row r holds input position p = L - (K-1) + r; for p < 0 it is old row L + r.
         * Ascending r reads rows > r that are not yet overwritten, so in place is safe. */
        for (int64_t r = 0; r < K - 1; r++) {
            int64_t p = L - (K - 1) + r;
            if (p >= 0)
                memcpy(sb + r * Di, xb + p * x_stride, (size_t)Di * sizeof(float));
            else
                memmove(sb + r * Di, sb + (L + r) * Di, (size_t)Di * sizeof(float));
        }
    }
}

void mb_conv1d_backward(float *dx, int64_t dx_stride, float *dw, float *db, const float *dout,
                        const float *x, int64_t x_stride, const float *w, const float *b, int64_t B,
                        int64_t L, int64_t Di, int64_t K) {
    int64_t nblk = (Di + CONV_CBLK - 1) / CONV_CBLK;
    /* parallel over channel blocks only, so the dw/db sums over (B, L) have a fixed order */
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t c0 = blk * CONV_CBLK;
        int64_t nc = Di - c0 < CONV_CBLK ? Di - c0 : CONV_CBLK;
        float wt[64][CONV_CBLK];   /* wt[k][c] = w[c0 + c, k]; K <= 64 (mb_config_finalize) */
        double sdw[64][CONV_CBLK]; /* dw partial sums, [k][c] */
        double sdb[CONV_CBLK] = {0};
        for (int64_t k = 0; k < K; k++)
            for (int64_t c = 0; c < nc; c++) {
                wt[k][c] = w[(c0 + c) * K + k];
                sdw[k][c] = 0.0;
            }
        for (int64_t bb = 0; bb < B; bb++) {
            const float *xb = x + bb * L * x_stride + c0;
            float *dxb = dx + bb * L * dx_stride + c0;
            for (int64_t t = 0; t < L; t++)
                for (int64_t c = 0; c < nc; c++)
                    dxb[t * dx_stride + c] = 0.0f;
            for (int64_t t = 0; t < L; t++) {
                /* recompute the pre-activation (same order as the forward) */
                float acc[CONV_CBLK], g[CONV_CBLK];
                for (int64_t c = 0; c < nc; c++)
                    acc[c] = b[c0 + c];
                int64_t k0 = K - 1 - t > 0 ? K - 1 - t : 0; /* first tap inside the sequence */
                for (int64_t k = k0; k < K; k++) {
                    const float *src = xb + (t - K + 1 + k) * x_stride;
                    for (int64_t c = 0; c < nc; c++)
                        acc[c] += wt[k][c] * src[c];
                }
                const float *go = dout + (bb * L + t) * Di + c0;
                for (int64_t c = 0; c < nc; c++) {
                    g[c] = go[c] * mb_silu_gradf(acc[c]);
                    sdb[c] += g[c];
                }
                for (int64_t k = k0; k < K; k++) {
                    int64_t p = t - K + 1 + k;
                    const float *src = xb + p * x_stride;
                    float *dst = dxb + p * dx_stride;
                    for (int64_t c = 0; c < nc; c++) {
                        sdw[k][c] += (double)g[c] * src[c];
                        dst[c] += g[c] * wt[k][c];
                    }
                }
            }
        }
        for (int64_t c = 0; c < nc; c++) {
            db[c0 + c] += (float)sdb[c];
            for (int64_t k = 0; k < K; k++)
                dw[(c0 + c) * K + k] += (float)sdw[k][c];
        }
    }
}
