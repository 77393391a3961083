/* AdamW over the flat parameter vector (PyTorch torch.optim.AdamW semantics, decoupled weight
 * decay applied only to tensors whose mb_tensor_info.weight_decay is set). */
#ifndef MB_TRAIN_ADAMW_H
#define MB_TRAIN_ADAMW_H

#include <stdint.h>

#include "mambabyte.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
    int64_t n;      /* number of parameters */
    int64_t step;   /* steps taken so far (the next update uses step + 1) */
    float *m;       /* (n) first moment */
    float *v;       /* (n) second moment */
    uint8_t *decay; /* (n) 1 where weight decay applies */
} mb_adamw;

/* Allocate zeroed moments for a model; hyper-parameters as given (MambaByte: 0.9, 0.95, 1e-8,
 * 0.1). Returns MB_ENOMEM on failure. */
int mb_adamw_init(mb_adamw *o, const mb_model *m, float beta1, float beta2, float eps,
                  float weight_decay);
void mb_adamw_free(mb_adamw *o);
/* One update with learning rate lr: p *= 1 - lr*wd (decayed tensors only); m, v updated;
 * p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), t = ++step. */
void mb_adamw_update(mb_adamw *o, float *params, const float *grads, float lr);

/* Global L2 norm of a flat gradient (accumulated in double). */
double mb_grad_norm(const float *grads, int64_t n);
/* PyTorch clip_grad_norm_: if norm > max_norm, scale grads by max_norm / (norm + 1e-6).
 * max_norm <= 0 disables clipping. Returns the norm before clipping. */
double mb_grad_clip(float *grads, int64_t n, double max_norm);

#endif
