/* Recurrent inference state (model.md "Recurrent step"): per layer and sequence the conv
 * window of the last K-1 conv inputs and the SSM state, plus workspace for mb_step.
 * Layout follows kroggen/mamba.c's RunState and llama.cpp's per-sequence recurrent slots. */
#include "infer/state.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int64_t mb_step_scratch_floats(const mb_config *c, int64_t n_seq) {
    int64_t d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    return n_seq * (3 * d + 2 * Di + Di + (R + 2 * N) + Di + Di);
}

void mb_step_scratch_bind(const mb_state *s, mb_step_scratch *v) {
    const mb_config *c = &s->cfg;
    int64_t S = s->n_seq, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    float *p = s->scratch;
    v->hidden = p, p += S * d;
    v->resid = p, p += S * d;
    v->u = p, p += S * d;
    v->xz = p, p += S * 2 * Di;
    v->xc = p, p += S * Di;
    v->dbc = p, p += S * (R + 2 * N);
    v->delta = p, p += S * Di;
    v->y = p, p += S * Di;
}

static int64_t conv_floats(const mb_state *s) {
    return s->cfg.n_layer * s->n_seq * (s->cfg.d_conv - 1) * s->cfg.d_inner;
}

static int64_t ssm_floats(const mb_state *s) {
    return s->cfg.n_layer * s->n_seq * s->cfg.d_inner * s->cfg.d_state;
}

/* Allocate a zeroed state for n_seq (>= 1) sequences of config c (copied and finalized).
 * conv (n_layer, n_seq, K-1, Di) oldest first; ssm (n_layer, n_seq, Di, N); scratch for one
 * mb_step of n_seq sequences. MB_EINVAL for a bad config or n_seq, MB_ENOMEM if out of
 * memory (s is then left empty; mb_state_free on it is safe). */
int mb_state_create(mb_state *s, const mb_config *c, int64_t n_seq) {
    memset(s, 0, sizeof *s);
    if (!c) return mb_fail(MB_EINVAL, "mb_state_create: config is NULL");
    if (n_seq <= 0 || n_seq > (1 << 20))
        return mb_fail(MB_EINVAL, "mb_state_create: n_seq must be in 1..1048576 (got %lld)",
                       (long long)n_seq);
    mb_config cfg = *c;
    int rc = mb_config_finalize(&cfg);
    if (rc) return rc;
    s->cfg = cfg;
    s->n_seq = n_seq;
    int64_t nc = conv_floats(s), ns = ssm_floats(s), nw = mb_step_scratch_floats(&cfg, n_seq);
    /* +1 so that K == 1 (empty conv window) still gets a valid pointer */
    s->conv = calloc((size_t)nc + 1, sizeof(float));
    s->ssm = calloc((size_t)ns, sizeof(float));
    s->scratch = calloc((size_t)nw, sizeof(float));
    if (!s->conv || !s->ssm || !s->scratch) {
        mb_state_free(s);
        return mb_fail(MB_ENOMEM, "mb_state_create: out of memory for %lld sequences (%lld bytes)",
                       (long long)n_seq, (long long)((nc + ns + nw) * (int64_t)sizeof(float)));
    }
    return MB_OK;
}

/* Zero the conv and SSM states of every sequence (a fresh start, as after create). */
void mb_state_reset(mb_state *s) {
    if (!s || !s->conv || !s->ssm) return;
    memset(s->conv, 0, (size_t)conv_floats(s) * sizeof(float));
    memset(s->ssm, 0, (size_t)ssm_floats(s) * sizeof(float));
}

/* Free the buffers; s is zeroed (safe to call twice). */
void mb_state_free(mb_state *s) {
    if (!s) return;
    free(s->conv);
    free(s->ssm);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}
