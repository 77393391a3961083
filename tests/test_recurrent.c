/* Recurrent inference (src/infer/step.c, state.c) against the parallel forward
 * (src/cpu/model.c, mb_forward / mb_forward_stateful) and the float64 reference
 * (tests/support/ref64.c).
 *
 * Tolerances. Logits: max |step - forward| <= 1e-4 * max |forward logit| over the sequence.
 * Both paths are fp32 but add in different orders (gemv vs blocked gemm, fused vs separate
 * softplus/exp, norm statistics); on these O(1)-scaled random models the observed error is
 * ~1e-6 relative, so 1e-4 leaves a wide margin for BLAS/compiler variation while any real
 * defect (a conv tap off by one, a missing D skip, a state not carried) moves logits by
 * 1e-2 or more. States: max |step - stateful forward| <= 1e-5 * max(1, max |state|): the
 * states see only one layer's worth of rounding, not the head. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "mambabyte.h"
#include "support/ref64.h"

#define LOGIT_TOL 1e-4
#define STATE_TOL 1e-5
#define LONG_L 300

typedef struct {
    int64_t d_model, n_layer, d_state, d_conv, dt_rank;
    int rms, tie;
} variant;
/* RMSNorm/LayerNorm x tied/untied; d_state 8/16/5 (odd: vector remainder); d_conv 4/3/2 */
static const variant k_variants[] = {
    {16, 2, 8, 4, 0, 1, 1},
    {24, 3, 16, 4, 0, 0, 0},
    {16, 2, 5, 3, 3, 0, 1},
    {20, 2, 16, 2, 2, 1, 0},
};
#define N_VARIANTS (int)(sizeof k_variants / sizeof k_variants[0])

static double g_max_logit_err = 0.0, g_max_state_err = 0.0;

/* Every tensor moved away from its init so no term is trivially 0 or 1. */
static void randomize(mb_model *m, uint64_t seed) {
    mb_model_init(m, seed);
    mb_rng r;
    mb_rng_seed(&r, seed * 7919 + 13);
    for (int t = 0; t < m->n_tensors; t++) {
        const mb_tensor_info *ti = &m->tensors[t];
        float *p = m->params + ti->offset;
        const char *nm = ti->name;
        for (int64_t i = 0; i < ti->numel; i++) {
            double g = mb_rng_normal(&r), u = 2.0 * mb_rng_double(&r) - 1.0;
            if (strstr(nm, "embedding"))
                p[i] = (float)(0.7 * g);
            else if (strstr(nm, "norm") && strstr(nm, "weight"))
                p[i] = (float)(1.0 + 0.3 * g);
            else if (strstr(nm, "norm") && strstr(nm, "bias"))
                p[i] = (float)(0.2 * g);
            else if (strstr(nm, "conv1d"))
                p[i] = (float)(0.8 * u);
            else if (strstr(nm, "dt_proj.bias")) /* softplus over (-4, 1) ... */
                p[i] = (float)(2.5 * u - 1.5);
            else if (strstr(nm, "A_log"))
                p[i] = (float)(1.5 * u + 0.5);
            else if (strstr(nm, ".D"))
                p[i] = (float)g;
            else /* in_proj, x_proj, dt_proj.weight, out_proj, lm_head: 1.5x their init */
                p[i] *= 1.5f + 0.5f * (float)u;
        }
    }
    /* ... and one channel per layer on softplus' linear branch (threshold 20) */
    for (int64_t l = 0; l < m->cfg.n_layer; l++)
        m->w.layers[l].dt_proj_b[1] = 25.0f;
}

static void make_model(mb_model *m, const variant *v, uint64_t seed) {
    mb_config c;
    mb_config_default(&c, v->d_model, v->n_layer);
    c.d_state = v->d_state;
    c.d_conv = v->d_conv;
    c.dt_rank = v->dt_rank;
    c.rms_norm = v->rms;
    c.tie_embeddings = v->tie;
    assert_int_equal(mb_config_finalize(&c), 0);
    assert_int_equal(mb_model_create(m, &c), 0);
    randomize(m, seed);
}

static void random_bytes(uint8_t *p, int64_t n, uint64_t seed) {
    mb_rng r;
    mb_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)mb_rng_below(&r, 256);
}

static double max_abs(const float *a, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

/* max |a - b| / max(floor, max |b|); NaN counts as infinite */
static double rel_err(const float *a, const float *b, int64_t n, double floor) {
    double e = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d;
    }
    return e / fmax(floor, max_abs(b, n));
}

static void check_logits(const float *got, const float *want, int64_t n, const char *what,
                         int64_t L) {
    double e = rel_err(got, want, n, 1e-30);
    if (e > g_max_logit_err) g_max_logit_err = e;
    if (!(e <= LOGIT_TOL)) fail_msg("%s, L=%lld: logits rel err %.3g", what, (long long)L, e);
}

static void check_states(const mb_state *a, const mb_state *b, const char *what, int64_t L) {
    const mb_config *c = &a->cfg;
    int64_t nc = c->n_layer * a->n_seq * (c->d_conv - 1) * c->d_inner;
    int64_t ns = c->n_layer * a->n_seq * c->d_inner * c->d_state;
    double ec = nc ? rel_err(a->conv, b->conv, nc, 1.0) : 0.0;
    double es = rel_err(a->ssm, b->ssm, ns, 1.0);
    if (fmax(ec, es) > g_max_state_err) g_max_state_err = fmax(ec, es);
    if (!(ec <= STATE_TOL && es <= STATE_TOL))
        fail_msg("%s, L=%lld: state rel err conv %.3g ssm %.3g", what, (long long)L, ec, es);
}

/* Step x (L bytes) from the current state of st (n_seq 1), logits into out (L, 256). */
static void step_all(const mb_model *m, mb_state *st, const uint8_t *x, int64_t L, float *out) {
    for (int64_t t = 0; t < L; t++)
        mb_step(m, st, &x[t], out + t * MB_VOCAB);
}

/* For every length 1..40 and LONG_L: the step logits equal mb_forward at every position and
 * the final states equal mb_forward_stateful's. */
static void test_step_equals_forward(void **unused) {
    (void)unused;
    uint8_t x[LONG_L];
    float *want = malloc(LONG_L * MB_VOCAB * sizeof(float));
    float *got = malloc(LONG_L * MB_VOCAB * sizeof(float));
    assert_non_null(want);
    assert_non_null(got);
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 100 + (uint64_t)vi);
        mb_state st, sf;
        assert_int_equal(mb_state_create(&st, &m.cfg, 1), 0);
        assert_int_equal(mb_state_create(&sf, &m.cfg, 1), 0);
        for (int64_t L = 1; L <= 41; L++) {
            if (L == 41) L = LONG_L;
            random_bytes(x, L, 1000 * (uint64_t)vi + (uint64_t)L);
            mb_acts *a = mb_acts_create(&m.cfg, 1, L);
            assert_non_null(a);
            float loss = mb_forward(&m, a, x, NULL, want);
            assert_false(isnan(loss));
            mb_state_reset(&st);
            step_all(&m, &st, x, L, got);
            char what[64];
            snprintf(what, sizeof what, "variant %d", vi);
            check_logits(got, want, L * MB_VOCAB, what, L);
            /* final states against the stateful parallel forward from zeros */
            mb_state_reset(&sf);
            loss = mb_forward_stateful(&m, a, &sf, x, NULL, NULL);
            assert_false(isnan(loss));
            check_states(&st, &sf, what, L);
            mb_acts_free(a);
        }
        mb_state_free(&st);
        mb_state_free(&sf);
        mb_model_free(&m);
    }
    free(want);
    free(got);
}

/* The step against the independent float64 reference over LONG_L bytes (logits and final
 * states), so a defect shared by both fp32 paths cannot hide. */
static void test_step_equals_ref64(void **unused) {
    (void)unused;
    uint8_t x[LONG_L];
    float *got = malloc(LONG_L * MB_VOCAB * sizeof(float));
    double *ref = malloc(LONG_L * MB_VOCAB * sizeof(double));
    assert_non_null(got);
    assert_non_null(ref);
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 200 + (uint64_t)vi);
        const mb_config *c = &m.cfg;
        int64_t nc = c->n_layer * (c->d_conv - 1) * c->d_inner;
        int64_t ns = c->n_layer * c->d_inner * c->d_state;
        double *conv = malloc((size_t)(nc + 1) * sizeof(double));
        double *ssm = malloc((size_t)ns * sizeof(double));
        double *p64 = ref64_params(&m);
        assert_non_null(p64);
        random_bytes(x, LONG_L, 77 + (uint64_t)vi);
        double r = ref64_forward(c, p64, 1, LONG_L, x, NULL, NULL, NULL, ref, NULL, conv, ssm);
        assert_false(isnan(r));
        mb_state st;
        assert_int_equal(mb_state_create(&st, c, 1), 0);
        step_all(&m, &st, x, LONG_L, got);
        double e = ref64_rel_err(got, ref, LONG_L * MB_VOCAB);
        if (!(e <= LOGIT_TOL)) fail_msg("variant %d: logits vs ref64 rel err %.3g", vi, e);
        double es = ref64_rel_err(st.ssm, ssm, ns);
        double ec = nc ? ref64_rel_err(st.conv, conv, nc) : 0.0;
        if (!(es <= STATE_TOL && ec <= STATE_TOL))
            fail_msg("variant %d: state vs ref64 rel err conv %.3g ssm %.3g", vi, ec, es);
        mb_state_free(&st);
        free(p64);
        free(conv);
        free(ssm);
        mb_model_free(&m);
    }
    free(got);
    free(ref);
}

/* Prompt prefill: mb_forward_stateful over a prefix, then steps, equals the full forward; and
 * steps then mb_forward_stateful over the rest also does (the state layouts agree). */
static void test_prefill_then_step(void **unused) {
    (void)unused;
    const int64_t L = 60, P = 23;
    uint8_t x[60];
    float *want = malloc(L * MB_VOCAB * sizeof(float));
    float *got = malloc(L * MB_VOCAB * sizeof(float));
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 300 + (uint64_t)vi);
        random_bytes(x, L, 5 + (uint64_t)vi);
        mb_acts *a = mb_acts_create(&m.cfg, 1, L);
        mb_acts *ap = mb_acts_create(&m.cfg, 1, P);
        mb_acts *aq = mb_acts_create(&m.cfg, 1, L - P);
        assert_non_null(a);
        assert_non_null(ap);
        assert_non_null(aq);
        assert_false(isnan(mb_forward(&m, a, x, NULL, want)));
        mb_state st;
        assert_int_equal(mb_state_create(&st, &m.cfg, 1), 0);
        /* prefill P bytes in parallel, step the rest */
        assert_false(isnan(mb_forward_stateful(&m, ap, &st, x, NULL, got)));
        step_all(&m, &st, x + P, L - P, got + P * MB_VOCAB);
        check_logits(got, want, L * MB_VOCAB, "prefill then step", L);
        /* step P bytes, then the rest in parallel from the stepped state */
        mb_state_reset(&st);
        step_all(&m, &st, x, P, got);
        assert_false(isnan(mb_forward_stateful(&m, aq, &st, x + P, NULL, got + P * MB_VOCAB)));
        check_logits(got, want, L * MB_VOCAB, "step then stateful forward", L);
        mb_state_free(&st);
        mb_acts_free(a);
        mb_acts_free(ap);
        mb_acts_free(aq);
        mb_model_free(&m);
    }
    free(want);
    free(got);
}

/* n_seq = 3 with different byte streams equals three single-sequence runs (gemm vs gemv:
 * same tolerances), logits at every step and the final states. */
static void test_batched_equals_single(void **unused) {
    (void)unused;
    const int64_t S = 3, L = 50;
    uint8_t x[3][50];
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 400 + (uint64_t)vi);
        const mb_config *c = &m.cfg;
        for (int s = 0; s < S; s++)
            random_bytes(x[s], L, 9 * (uint64_t)vi + (uint64_t)s);
        x[1][0] = x[0][0]; /* same first byte, then diverging */
        mb_state sb, s1[3];
        assert_int_equal(mb_state_create(&sb, c, S), 0);
        for (int s = 0; s < S; s++)
            assert_int_equal(mb_state_create(&s1[s], c, 1), 0);
        float lb[3 * MB_VOCAB], l1[MB_VOCAB];
        for (int64_t t = 0; t < L; t++) {
            uint8_t bytes[3] = {x[0][t], x[1][t], x[2][t]};
            mb_step(&m, &sb, bytes, lb);
            for (int s = 0; s < S; s++) {
                mb_step(&m, &s1[s], &x[s][t], l1);
                check_logits(lb + s * MB_VOCAB, l1, MB_VOCAB, "batched vs single", t + 1);
            }
        }
        /* sequence s's slice of the batched state equals its single state */
        int64_t Di = c->d_inner, N = c->d_state, K1 = c->d_conv - 1;
        for (int64_t l = 0; l < c->n_layer; l++)
            for (int s = 0; s < S; s++) {
                const float *cb = sb.conv + (l * S + s) * K1 * Di, *c1 = s1[s].conv + l * K1 * Di;
                const float *hb = sb.ssm + (l * S + s) * Di * N, *h1 = s1[s].ssm + l * Di * N;
                if (K1) assert_true(rel_err(cb, c1, K1 * Di, 1.0) <= STATE_TOL);
                assert_true(rel_err(hb, h1, Di * N, 1.0) <= STATE_TOL);
            }
        /* and the streams really differ (the comparison is not vacuous) */
        assert_true(rel_err(lb, lb + MB_VOCAB, MB_VOCAB, 1e-30) > 1e-3);
        mb_state_free(&sb);
        for (int s = 0; s < S; s++)
            mb_state_free(&s1[s]);
        mb_model_free(&m);
    }
}

/* mb_state_reset gives exactly what a fresh state gives; create zeroes; bad arguments. */
static void test_reset_and_create(void **unused) {
    (void)unused;
    const int64_t L = 30;
    uint8_t x[30], junk[30];
    float fresh[30 * MB_VOCAB], again[30 * MB_VOCAB];
    mb_model m;
    make_model(&m, &k_variants[1], 500);
    const mb_config *c = &m.cfg;
    random_bytes(x, L, 1);
    random_bytes(junk, L, 2);
    mb_state st;
    assert_int_equal(mb_state_create(&st, c, 2), 0);
    int64_t nc = c->n_layer * 2 * (c->d_conv - 1) * c->d_inner;
    int64_t ns = c->n_layer * 2 * c->d_inner * c->d_state;
    assert_true(max_abs(st.conv, nc) == 0.0 && max_abs(st.ssm, ns) == 0.0);
    uint8_t pair[2];
    for (int64_t t = 0; t < L; t++) {
        pair[0] = x[t], pair[1] = junk[t];
        float lg[2 * MB_VOCAB];
        mb_step(&m, &st, pair, lg);
        memcpy(fresh + t * MB_VOCAB, lg, sizeof(float) * MB_VOCAB);
    }
    /* dirty the state with other bytes, reset, replay */
    for (int64_t t = 0; t < L; t++) {
        pair[0] = junk[t], pair[1] = x[t];
        float lg[2 * MB_VOCAB];
        mb_step(&m, &st, pair, lg);
    }
    assert_true(max_abs(st.ssm, ns) > 0.0);
    mb_state_reset(&st);
    assert_true(max_abs(st.conv, nc) == 0.0 && max_abs(st.ssm, ns) == 0.0);
    for (int64_t t = 0; t < L; t++) {
        pair[0] = x[t], pair[1] = junk[t];
        float lg[2 * MB_VOCAB];
        mb_step(&m, &st, pair, lg);
        memcpy(again + t * MB_VOCAB, lg, sizeof(float) * MB_VOCAB);
    }
    assert_memory_equal(fresh, again, sizeof fresh);
    mb_state_free(&st);
    mb_state_free(&st); /* idempotent */

    assert_int_equal(mb_state_create(&st, c, 0), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "n_seq"));
    assert_null(st.conv);
    mb_config bad = *c;
    bad.d_state = 0;
    assert_int_equal(mb_state_create(&st, &bad, 1), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "d_state"));
    assert_int_equal(mb_state_create(&st, NULL, 1), MB_EINVAL);
    /* a state of another config is refused: NaN logits, state untouched */
    mb_model m2;
    make_model(&m2, &k_variants[0], 501);
    assert_int_equal(mb_state_create(&st, &m2.cfg, 1), 0);
    float lg[MB_VOCAB];
    mb_fail(MB_OK, "%s", "");
    mb_step(&m, &st, x, lg);
    assert_non_null(strstr(mb_last_error(), "different config"));
    assert_true(isnan(lg[0]) && isnan(lg[MB_VOCAB - 1]));
    assert_true(max_abs(st.ssm, m2.cfg.n_layer * m2.cfg.d_inner * m2.cfg.d_state) == 0.0);
    mb_step(&m2, &st, x, lg); /* and the right model works */
    assert_false(isnan(lg[0]));
    mb_state_free(&st);
    mb_model_free(&m2);
    mb_model_free(&m);
}

static int report(void **unused) {
    (void)unused;
    printf("max logit rel err (step vs forward / batched vs single): %.3g (tol %.0e)\n",
           g_max_logit_err, LOGIT_TOL);
    printf("max state rel err: %.3g (tol %.0e)\n", g_max_state_err, STATE_TOL);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_equals_forward), cmocka_unit_test(test_step_equals_ref64),
        cmocka_unit_test(test_prefill_then_step),   cmocka_unit_test(test_batched_equals_single),
        cmocka_unit_test(test_reset_and_create),
    };
    return cmocka_run_group_tests(tests, NULL, report);
}
