/* AdamW (Loshchilov & Hutter), following torch.optim.AdamW's update order. */
#include "train/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int mb_adamw_init(mb_adamw *o, const mb_model *m, float beta1, float beta2, float eps,
                  float weight_decay) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->n = m->n_params;
    o->m = calloc((size_t)o->n, sizeof(float));
    o->v = calloc((size_t)o->n, sizeof(float));
    o->decay = calloc((size_t)o->n, 1);
    if (!o->m || !o->v || !o->decay) {
        mb_adamw_free(o);
        return mb_fail(MB_ENOMEM, "out of memory for AdamW moments (%lld parameters)",
                       (long long)m->n_params);
    }
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].weight_decay)
            memset(o->decay + m->tensors[i].offset, 1, (size_t)m->tensors[i].numel);
    return MB_OK;
}

void mb_adamw_free(mb_adamw *o) {
    free(o->m);
    free(o->v);
    free(o->decay);
    memset(o, 0, sizeof *o);
}

void mb_adamw_update(mb_adamw *o, float *params, const float *grads, float lr) {
    o->step++;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const double bc1 = 1.0 - pow((double)b1, (double)o->step);
    const double bc2 = 1.0 - pow((double)b2, (double)o->step);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay_mul = 1.0f - lr * o->weight_decay;
    float *m = o->m, *v = o->v;
    const uint8_t *dec = o->decay;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < o->n; i++) {
        float g = grads[i];
        float p = dec[i] ? params[i] * decay_mul : params[i];
        m[i] = m[i] + (g - m[i]) * (1.0f - b1);
        v[i] = v[i] * b2 + (1.0f - b2) * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] = p - step_size * (m[i] / denom);
    }
}

double mb_grad_norm(const float *grads, int64_t n) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < n; i++)
        s += (double)grads[i] * grads[i];
    return sqrt(s);
}

double mb_grad_clip(float *grads, int64_t n, double max_norm) {
    double norm = mb_grad_norm(grads, n);
    if (max_norm > 0.0 && norm > max_norm && isfinite(norm)) {
        float scale = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            grads[i] *= scale;
    }
    return norm;
}
