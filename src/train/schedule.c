/* Linear warm-up + cosine decay learning-rate schedule. */
#include "train/schedule.h"

#include <math.h>

float mb_schedule_lr(const mb_schedule *s, int64_t step) {
    if (s->warmup > 0 && step < s->warmup) return s->lr_max * (float)(step + 1) / (float)s->warmup;
    if (s->total <= 0 || s->total <= s->warmup) return s->lr_max;
    double progress = (double)(step - s->warmup) / (double)(s->total - s->warmup);
    if (progress > 1.0) progress = 1.0;
    if (progress < 0.0) progress = 0.0;
    return (float)(s->lr_min + 0.5 * (s->lr_max - s->lr_min) * (1.0 + cos(M_PI * progress)));
}
