/* Tiny random models shared by the forward and gradient tests: d_model 12, 2 layers, covering
 * RMSNorm/LayerNorm x tied/untied, d_state 4/16, d_conv 4/3, dt_rank auto (ceil(12/16) = 1) / 3.
 * Weights are randomised away from the init by ref64_randomize. */
#ifndef MB_TEST_VARIANTS_H
#define MB_TEST_VARIANTS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mambabyte.h"
#include "support/ref64.h"

typedef struct {
    int64_t d_state, d_conv, dt_rank;
    int rms, tie;
} variant;

static const variant k_variants[] = {
    {4, 4, 0, 1, 1},
    {16, 3, 3, 0, 0},
    {16, 4, 0, 0, 1},
    {4, 3, 3, 1, 0},
};
#define N_VARIANTS (int)(sizeof k_variants / sizeof k_variants[0])

static inline void make_model(mb_model *m, const variant *v, uint64_t seed) {
    mb_config c;
    mb_config_default(&c, 12, 2);
    c.d_state = v->d_state;
    c.d_conv = v->d_conv;
    c.dt_rank = v->dt_rank;
    c.rms_norm = v->rms;
    c.tie_embeddings = v->tie;
    assert_int_equal(mb_config_finalize(&c), 0);
    assert_int_equal(mb_model_create(m, &c), 0);
    ref64_randomize(m, seed);
}

static inline void random_bytes(uint8_t *p, int64_t n, uint64_t seed) {
    mb_rng r;
    mb_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)mb_rng_below(&r, 256);
}

#endif
