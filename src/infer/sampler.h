/* Sampler argument checks and the draw with a given uniform (internal API for the CLI, the
 * server and the GPU sampler's tests). */
#ifndef MB_INFER_SAMPLER_H
#define MB_INFER_SAMPLER_H

#include "mambabyte.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Check sampler settings before mb_sampler_init: temperature >= 0 (finite), top_k in 0..256,
 * top_p in (0, 1]. Returns MB_OK, or MB_EINVAL with a message naming the argument
 * ("temperature", "top_k" or "top_p") and the value. */
int mb_sampler_check(float temperature, int top_k, float top_p);

/* The byte mb_sample picks from 256 logits (not modified) when its uniform draw in [0, 1) is u
 * (mb_sample is this with u from the sampler's rng; temperature <= 0: the argmax, u unused).
 * Uses the sampler's settings and workspace, not its rng: for generators with their own
 * stream of uniforms (the GPU sampler's tests). */
int mb_sample_draw(mb_sampler *s, const float *logits, double u);

#ifdef __cplusplus
}
#endif

#endif
