/* Fused softmax + cross-entropy over the 256 byte logits of each position (llm.c's fused
 * classifier). Numerically stable: log-sum-exp around the row maximum, per-row sums in
 * float64; the loss sum over positions is accumulated in float64.
 *   CE_i = logsumexp(logits_i) - logits_i[target_i]          (nats)
 *   dlogits_i = dloss * (softmax(logits_i) - onehot(target_i))
 * All-zero logits give CE = ln 256 = 8 bits exactly. OpenMP over positions.
 */
#ifndef MB_CPU_CROSSENTROPY_H
#define MB_CPU_CROSSENTROPY_H

#include <stdint.h>

/* logits (n, 256), targets (n) -> losses (n) (may be NULL); returns the sum of the losses in
 * nats (float64). */
double mb_crossentropy_forward(float *losses, const float *logits, const uint8_t *targets,
                               int64_t n);

/* dlogits (n, 256) = dloss * (softmax - onehot); may alias logits (in place). */
void mb_crossentropy_backward(float *dlogits, const float *logits, const uint8_t *targets,
                              int64_t n, float dloss);

#endif
