/* Internal layout of mb_state's scratch (shared by state.c and step.c). */
#ifndef MB_INFER_STATE_H
#define MB_INFER_STATE_H

#include "mambabyte.h"

/* Views into mb_state.scratch for one step of n_seq (= S) sequences; all row-major. */
typedef struct {
    float *hidden; /* (S, d)      embedding row, then each mixer's output */
    float *resid;  /* (S, d)      fp32 residual stream */
    float *u;      /* (S, d)      normed input of a block / of lm_head */
    float *xz;     /* (S, 2Di)    in_proj output: x = [:, :Di], z = [:, Di:] */
    float *xc;     /* (S, Di)     conv output after SiLU */
    float *dbc;    /* (S, R+2N)   x_proj output: dt_low, B, C */
    float *delta;  /* (S, Di)     softplus(dt_proj) */
    float *y;      /* (S, Di)     gated scan output */
} mb_step_scratch;

/* Floats of scratch needed for n_seq sequences of config c. */
int64_t mb_step_scratch_floats(const mb_config *c, int64_t n_seq);
/* Carve the views out of s->scratch. */
void mb_step_scratch_bind(const mb_state *s, mb_step_scratch *v);

#endif
