/* Learning-rate schedule: linear warm-up then cosine decay (MambaByte recipe, model.md). */
#ifndef MB_TRAIN_SCHEDULE_H
#define MB_TRAIN_SCHEDULE_H

#include <stdint.h>

typedef struct {
    float lr_max;   /* peak learning rate (4e-4 in the paper) */
    float lr_min;   /* floor reached at total_steps */
    int64_t warmup; /* warm-up steps (500 in the paper) */
    int64_t total;  /* total steps; <= 0 means constant after warm-up */
} mb_schedule;

/* Learning rate for 0-based step: lr_max * (step + 1) / warmup during warm-up, then
 * lr_min + 0.5 (lr_max - lr_min)(1 + cos(pi * progress)), progress in [0, 1]. */
float mb_schedule_lr(const mb_schedule *s, int64_t step);

#endif
