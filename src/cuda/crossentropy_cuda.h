/* Fused classifier on the GPU (llm.c's fused softmax + cross-entropy + gradient): the device
 * twin of src/cpu/crossentropy.h over the 256 byte logits of each position:
 *   CE_i      = logsumexp(logits_i) - logits_i[target_i]            (nats)
 *   dlogits_i = dloss * (softmax(logits_i) - onehot(target_i))
 * One warp per position (8 logits per lane), log-sum-exp around the row maximum. A NaN logit
 * makes its row's loss and gradient NaN. DEVICE pointers; asynchronous on `stream`;
 * 0 / MB_EINVAL / MB_EIO.
 */
#ifndef MB_CUDA_CROSSENTROPY_CUDA_H
#define MB_CUDA_CROSSENTROPY_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* logits (n, 256), targets (n). losses (n) written if non-NULL; dlogits (n, 256) written if
 * non-NULL (may alias logits: each row is read before it is overwritten). */
int mb_crossentropy_cuda(float *losses, float *dlogits, const float *logits, const uint8_t *targets,
                         int64_t n, float dloss, void *stream);

#ifdef __cplusplus
}
#endif
#endif
