/* An independent float64 reference forward of the whole model, written straight from
 * shared/spec/model.md with plain loops (no BLAS, no OpenMP, no code shared with src/cpu).
 * Used by the forward, gradient (finite differences) and state tests. */
#ifndef MB_TEST_REF64_H
#define MB_TEST_REF64_H

#include <stdint.h>

#include "mambabyte.h"

/* A float64 copy of a model's parameters (n_params doubles, same flat layout). malloc'ed. */
double *ref64_params(const mb_model *m);

/* Forward of B sequences of L bytes x (B, L). params: n_params doubles in the layout of
 * mb_tensor_table(c), tensors looked up by their mamba_ssm names.
 * Optional initial states (NULL = zeros), in mb_state's layout:
 *   conv0 (n_layer, B, K-1, Di) the last K-1 conv inputs, oldest first; ssm0 (n_layer, B, Di, N).
 * Optional outputs (NULL = not wanted): logits (B, L, 256); ce (B, L) per-position
 * cross-entropy in nats (needs targets); conv_out / ssm_out final states in the same layouts.
 * Returns the sum of the per-position cross-entropies (0 when targets is NULL), or NAN if
 * a tensor is missing or memory runs out. */
double ref64_forward(const mb_config *c, const double *params, int64_t B, int64_t L,
                     const uint8_t *x, const uint8_t *targets, const double *conv0,
                     const double *ssm0, double *logits, double *ce, double *conv_out,
                     double *ssm_out);

/* Test weights: mb_model_init(seed) and then every tensor perturbed away from its init so no
 * term is trivially zero or one (embedding N(0,1), norm weights 1 + N(0,0.3), biases, A_log in
 * [-1, 2], D ~ N(0,1), dt biases spread over softplus' range with one channel per layer above
 * the threshold 20, larger conv / projection weights, lm_head scaled to give O(1) logits). */
void ref64_randomize(mb_model *m, uint64_t seed);

/* max |a - ref| / max |ref| over n values (a is float32). */
double ref64_rel_err(const float *a, const double *ref, int64_t n);

#endif
