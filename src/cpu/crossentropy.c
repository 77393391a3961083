/* Fused softmax + cross-entropy (+ gradient) over 256 logits per position (see crossentropy.h). */
#include "cpu/crossentropy.h"

#include <math.h>

#include "mambabyte.h"

/* log-sum-exp of one row of MB_VOCAB logits and its maximum */
static double row_lse(const float *z, float *zmax) {
    float m = z[0];
    for (int v = 1; v < MB_VOCAB; v++)
        m = z[v] > m ? z[v] : m;
    double s = 0.0;
    for (int v = 0; v < MB_VOCAB; v++)
        s += exp((double)z[v] - (double)m);
    *zmax = m;
    return (double)m + log(s);
}

/* positions per partial sum; the partial sums are added in a fixed order, so the total does
 * not depend on the number of threads */
#define CE_BLOCK 256

double mb_crossentropy_forward(float *losses, const float *logits, const uint8_t *targets,
                               int64_t n) {
    int64_t nblk = (n + CE_BLOCK - 1) / CE_BLOCK;
    double total = 0.0;
#pragma omp parallel for ordered schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t i1 = (blk + 1) * CE_BLOCK < n ? (blk + 1) * CE_BLOCK : n;
        double part = 0.0;
        for (int64_t i = blk * CE_BLOCK; i < i1; i++) {
            const float *z = logits + i * MB_VOCAB;
            float m;
            double ce = row_lse(z, &m) - (double)z[targets[i]];
            if (losses) losses[i] = (float)ce;
            part += ce;
        }
#pragma omp ordered
        total += part;
    }
    return total;
}

void mb_crossentropy_backward(float *dlogits, const float *logits, const uint8_t *targets,
                              int64_t n, float dloss) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits + i * MB_VOCAB;
        float *dz = dlogits + i * MB_VOCAB;
        float m;
        double lse = row_lse(z, &m);
        for (int v = 0; v < MB_VOCAB; v++) {
            double p = exp((double)z[v] - lse);
            dz[v] = (float)(dloss * (p - (v == targets[i] ? 1.0 : 0.0)));
        }
    }
}
