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
            const float *xb = x + bb * L * x_stride;
            const float *sb = state ? state + bb * (K - 1) * Di : NULL;
            for (int64_t t = 0; t < L; t++) {
                float *o = out + (bb * L + t) * Di + c0;
                for (int64_t c = 0; c < nc; c++) {
                    int64_t ch = c0 + c;
                    float acc = b[ch];
                    for (int64_t k = 0; k < K; k++) {
                        int64_t p = t - K + 1 + k;
                        float v;
                        if (p >= 0)
                            v = xb[p * x_stride + ch];
                        else if (sb)
                            v = sb[(K - 1 + p) * Di + ch];
                        else
                            continue;
                        acc += w[ch * K + k] * v;
                    }
                    o[c] = mb_siluf(acc);
                }
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
        double sdw[CONV_CBLK * 64]; /* K <= 64 (mb_config_finalize) */
        double sdb[CONV_CBLK];
        for (int64_t i = 0; i < nc * K; i++)
            sdw[i] = 0.0;
        for (int64_t c = 0; c < nc; c++)
            sdb[c] = 0.0;
        for (int64_t bb = 0; bb < B; bb++) {
            const float *xb = x + bb * L * x_stride;
            float *dxb = dx + bb * L * dx_stride;
            for (int64_t t = 0; t < L; t++)
                for (int64_t c = 0; c < nc; c++)
                    dxb[t * dx_stride + c0 + c] = 0.0f;
            for (int64_t t = 0; t < L; t++) {
                const float *go = dout + (bb * L + t) * Di + c0;
                for (int64_t c = 0; c < nc; c++) {
                    int64_t ch = c0 + c;
                    /* recompute the pre-activation */
                    float acc = b[ch];
                    for (int64_t k = 0; k < K; k++) {
                        int64_t p = t - K + 1 + k;
                        if (p >= 0) acc += w[ch * K + k] * xb[p * x_stride + ch];
                    }
                    float g = go[c] * mb_silu_gradf(acc);
                    sdb[c] += g;
                    for (int64_t k = 0; k < K; k++) {
                        int64_t p = t - K + 1 + k;
                        if (p < 0) continue;
                        sdw[c * K + k] += (double)g * xb[p * x_stride + ch];
                        dxb[p * dx_stride + ch] += g * w[ch * K + k];
                    }
                }
            }
        }
        for (int64_t c = 0; c < nc; c++) {
            db[c0 + c] += (float)sdb[c];
            for (int64_t k = 0; k < K; k++)
                dw[(c0 + c) * K + k] += (float)sdw[c * K + k];
        }
    }
}
