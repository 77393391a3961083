/* Prompt prefill on the GPU by the parallel forward: the prompt's bytes go through the model's
 * parallel (chunked-scan) forward with carried states (mb_cuda_forward_stateful) instead of one
 * recurrent step per byte, and leave the conv and SSM states of every layer as the steps would
 * (the recurrent and parallel forms compute the same function; model.md "Recurrent step").
 * Used by mb_cuda_gen_prefill (step_cuda.h), which copies its weights in and then steps the
 * prompt's last byte itself, so that its logits come from the generator's own step.
 *
 * Memory: an inference-only mb_cuda_model (4 bytes per parameter, plus 2 for the bf16 shadow in
 * bf16 mode) and one layer's activation workspace for at most MB_CUDA_PREFILL_TOKENS positions
 * at a time (about 1.5 GB at 353m), held until mb_cuda_prefill_free.
 * Errors: 0 or a negative MB_E* code with mb_fail() saying what failed. */
#ifndef MB_CUDA_PREFILL_CUDA_H
#define MB_CUDA_PREFILL_CUDA_H
#include <stdint.h>

#include "mambabyte.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MB_CUDA_PREFILL_TOKENS 32768 /* positions (sequences x bytes) per forward chunk */

typedef struct mb_cuda_prefill mb_cuda_prefill;

/* An inference model of config c (fp32, or bf16 mixed precision when bf16) with zero weights.
 * MB_EIO / MB_ENOMEM as mb_cuda_model_create. */
int mb_cuda_prefill_create(mb_cuda_prefill **out, const mb_config *c, int bf16);
void mb_cuda_prefill_free(mb_cuda_prefill *p);
/* The model's device weight views (mb_weights layout: A_log, not A), to be filled by the caller
 * (device copies on the legacy default stream or synchronised), then mb_cuda_prefill_weights_set
 * (refreshes the bf16 shadow in bf16 mode). */
mb_weights *mb_cuda_prefill_weights(mb_cuda_prefill *p);
int mb_cuda_prefill_weights_set(mb_cuda_prefill *p);
/* Run bytes[s * L + 0 .. n) of each of S sequences (bytes (S, L) host, 1 <= n <= L) through the
 * parallel forward from and into conv_state (n_layer, S, K-1, Di) and ssm_state (n_layer, S,
 * Di, N) (DEVICE, mb_state's layouts), in chunks of at most MB_CUDA_PREFILL_TOKENS / S bytes.
 * Synchronous (the legacy default stream). The activations (for a whole chunk and for the last
 * partial one, kept for the next call of the same shape) are allocated before the first
 * forward: MB_ENOMEM leaves the states untouched; a later failure leaves them part-way. */
int mb_cuda_prefill_run(mb_cuda_prefill *p, const uint8_t *bytes, int64_t S, int64_t L, int64_t n,
                        float *conv_state, float *ssm_state);

#ifdef __cplusplus
}
#endif
#endif
