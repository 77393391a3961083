/* Sampler argument checks (internal API for the CLI and server). */
#ifndef MB_INFER_SAMPLER_H
#define MB_INFER_SAMPLER_H

#include "mambabyte.h"

/* Check sampler settings before mb_sampler_init: temperature >= 0 (finite), top_k in 0..256,
 * top_p in (0, 1]. Returns MB_OK, or MB_EINVAL with a message naming the argument
 * ("temperature", "top_k" or "top_p") and the value. */
int mb_sampler_check(float temperature, int top_k, float top_p);

#endif
