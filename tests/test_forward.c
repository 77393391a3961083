/* CPU forward (src/cpu/model.c) against the independent float64 reference
 * (tests/support/ref64.c, written from model.md): logits, per-position cross-entropy, mean
 * loss, causality, the uniform-model 8 bpb identity, and the stateful forward in pieces.
 * Tolerance: max |err| / max |ref| <= 1e-5 for logits, losses and states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "cpu/crossentropy.h"
#include "cpu/model.h"
#include "mambabyte.h"
#include "support/ref64.h"
#include "support/variants.h"

#define TOL 1e-5

static void test_matches_ref64(void **st) {
    (void)st;
    const int64_t B = 2, Ls[] = {1, 7, 33};
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 100 + (uint64_t)vi);
        double *p64 = ref64_params(&m);
        assert_non_null(p64);
        for (int li = 0; li < 3; li++) {
            int64_t L = Ls[li], BL = B * L;
            uint8_t *x = malloc((size_t)BL), *tg = malloc((size_t)BL);
            random_bytes(x, BL, 7 + (uint64_t)li);
            random_bytes(tg, BL, 9 + (uint64_t)li);
            float *lg = malloc((size_t)BL * 256 * sizeof(float));
            double *lg64 = malloc((size_t)BL * 256 * sizeof(double));
            double *ce64 = malloc((size_t)BL * sizeof(double));
            mb_acts *a = mb_acts_create(&m.cfg, B, L);
            assert_non_null(a);
            float loss = mb_forward(&m, a, x, tg, lg);
            double sum64 =
                ref64_forward(&m.cfg, p64, B, L, x, tg, NULL, NULL, lg64, ce64, NULL, NULL);
            double e_logits = ref64_rel_err(lg, lg64, BL * 256);
            double e_ce = ref64_rel_err(mb_acts_losses(a), ce64, BL);
            /* the mean loss is the mean of the per-position losses */
            double mean_ce = 0.0, max_lg = 0.0;
            for (int64_t i = 0; i < BL; i++)
                mean_ce += mb_acts_losses(a)[i];
            mean_ce /= (double)BL;
            for (int64_t i = 0; i < BL * 256; i++)
                max_lg = fmax(max_lg, fabs(lg64[i]));
            printf("variant %d L=%2lld: logits rel err %.2e (max |logit| %.2f), CE rel err %.2e, "
                   "loss %.6f ref %.6f\n",
                   vi, (long long)L, e_logits, max_lg, e_ce, loss, sum64 / (double)BL);
            assert_true(max_lg > 1.0); /* the test model gives non-trivial logits */
            assert_true(e_logits <= TOL);
            assert_true(e_ce <= TOL);
            assert_true(fabs(loss - mean_ce) <= 1e-6 * mean_ce);
            assert_true(fabs(loss - sum64 / (double)BL) <= TOL * (sum64 / (double)BL));
            /* without targets: returns 0, logits still filled, identical */
            float *lg2 = malloc((size_t)BL * 256 * sizeof(float));
            assert_true(mb_forward(&m, a, x, NULL, lg2) == 0.0f);
            assert_memory_equal(lg, lg2, (size_t)BL * 256 * sizeof(float));
            /* evaluation-mode acts (one layer slot) give the same bits */
            mb_acts *ae = mb_acts_create_ex(&m.cfg, B, L, 0, 0);
            assert_non_null(ae);
            assert_true(mb_acts_bytes(&m.cfg, B, L, 0, 0) < mb_acts_bytes(&m.cfg, B, L, 1, 0));
            float loss_e = mb_forward(&m, ae, x, tg, lg2);
            assert_true(loss_e == loss);
            assert_memory_equal(lg, lg2, (size_t)BL * 256 * sizeof(float));
            mb_acts_free(ae);
            /* short scan chunks (boundary states every 5 positions) change nothing */
            mb_acts *ac = mb_acts_create_ex(&m.cfg, B, L, 1, 5);
            assert_non_null(ac);
            mb_forward(&m, ac, x, tg, lg2);
            assert_true(ref64_rel_err(lg2, lg64, BL * 256) <= TOL);
            mb_acts_free(ac);
            free(lg2);
            mb_acts_free(a);
            free(x), free(tg), free(lg), free(lg64), free(ce64);
        }
        free(p64);
        mb_model_free(&m);
    }
}

/* Changing byte t leaves every logit before t bit-identical (and the other sequence of the
 * batch entirely), and changes the logits at t. */
static void test_causality(void **st) {
    (void)st;
    const int64_t B = 2, L = 33, BL = B * L;
    for (int vi = 0; vi < 2; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 200 + (uint64_t)vi);
        uint8_t x[66];
        random_bytes(x, BL, 11);
        float *l0 = malloc((size_t)BL * 256 * sizeof(float));
        float *l1 = malloc((size_t)BL * 256 * sizeof(float));
        mb_acts *a = mb_acts_create(&m.cfg, B, L);
        mb_forward(&m, a, x, NULL, l0);
        const int64_t ts[] = {0, 1, 5, 20, 32};
        for (int k = 0; k < 5; k++) {
            int64_t t = ts[k];
            uint8_t x2[66];
            memcpy(x2, x, sizeof x2);
            x2[L + t] ^= 0x5a; /* sequence 1, position t */
            mb_forward(&m, a, x2, NULL, l1);
            /* sequence 0 untouched, sequence 1 before t untouched */
            assert_memory_equal(l0, l1, (size_t)(L + t) * 256 * sizeof(float));
            int changed = 0;
            for (int v = 0; v < 256; v++)
                changed |= l0[(L + t) * 256 + v] != l1[(L + t) * 256 + v];
            assert_true(changed);
        }
        mb_acts_free(a);
        free(l0), free(l1);
        mb_model_free(&m);
    }
}

/* A uniform model scores exactly 8 bits per byte (model.md "Metrics"). */
static void test_uniform_8bpb(void **st) {
    (void)st;
    enum { n = 37 };
    float z[n * 256], losses[n], dz[n * 256];
    uint8_t tg[n];
    memset(z, 0, sizeof z);
    random_bytes(tg, n, 3);
    double sum = mb_crossentropy_forward(losses, z, tg, n);
    for (int i = 0; i < n; i++)
        assert_true(fabs(losses[i] - log(256.0)) <= 1e-6);
    assert_true(fabs(sum / n / log(2.0) - 8.0) <= 1e-12);
    mb_crossentropy_backward(dz, z, tg, n, 2.0f);
    for (int i = 0; i < n; i++)
        for (int v = 0; v < 256; v++)
            assert_true(fabs(dz[i * 256 + v] - 2.0 * (1.0 / 256 - (v == tg[i]))) <= 1e-7);
    /* large shifted logits: stable (no overflow), CE = lse - z[target] */
    for (int v = 0; v < 256; v++)
        z[v] = 1000.0f + (v == 7 ? 5.0f : 0.0f);
    uint8_t t7 = 7, t8 = 8;
    double ce7 = mb_crossentropy_forward(NULL, z, &t7, 1);
    double ce8 = mb_crossentropy_forward(NULL, z, &t8, 1);
    double lse = 5.0 + log(exp(0.0) + 255.0 * exp(-5.0));
    assert_true(fabs(ce7 - (lse - 5.0)) <= 1e-5);
    assert_true(fabs(ce8 - lse) <= 1e-5);
    /* through the model: a zero (untied) lm_head gives zero logits and 8.000 bpb */
    mb_model m;
    make_model(&m, &k_variants[1], 300);
    memset(m.w.lm_head, 0, 256 * (size_t)m.cfg.d_model * sizeof(float));
    uint8_t x[2 * 9], t[2 * 9];
    random_bytes(x, 18, 4);
    random_bytes(t, 18, 5);
    mb_acts *a = mb_acts_create(&m.cfg, 2, 9);
    float loss = mb_forward(&m, a, x, t, NULL);
    assert_true(fabs(loss / log(2.0) - 8.0) <= 1e-6);
    mb_acts_free(a);
    mb_model_free(&m);
}

static void random_state(mb_state *s, uint64_t seed) {
    mb_rng r;
    mb_rng_seed(&r, seed);
    const mb_config *c = &s->cfg;
    int64_t nc = c->n_layer * s->n_seq * (c->d_conv - 1) * c->d_inner;
    int64_t ns = c->n_layer * s->n_seq * c->d_inner * c->d_state;
    for (int64_t i = 0; i < nc; i++)
        s->conv[i] = (float)mb_rng_normal(&r);
    for (int64_t i = 0; i < ns; i++)
        s->ssm[i] = (float)mb_rng_normal(&r);
}

/* mb_forward_stateful over two pieces equals one mb_forward over the whole, and its final
 * states equal the reference's; from random initial states it matches the reference too. */
static void test_stateful(void **st) {
    (void)st;
    const int64_t B = 2;
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 400 + (uint64_t)vi);
        const mb_config *c = &m.cfg;
        int64_t nc = c->n_layer * B * (c->d_conv - 1) * c->d_inner;
        int64_t ns = c->n_layer * B * c->d_inner * c->d_state;
        double *p64 = ref64_params(&m);
        /* splits: (1 | 1) shorter than the conv window, (7 | 26), (2 | 1) */
        const int64_t splits[][2] = {{1, 1}, {7, 26}, {2, 1}};
        for (int si = 0; si < 3; si++) {
            int64_t L1 = splits[si][0], L2 = splits[si][1], L = L1 + L2;
            uint8_t *x = malloc((size_t)(B * L)), *tg = malloc((size_t)(B * L));
            uint8_t *x1 = malloc((size_t)(B * L1)), *x2 = malloc((size_t)(B * L2));
            random_bytes(x, B * L, 21 + (uint64_t)si);
            random_bytes(tg, B * L, 22 + (uint64_t)si);
            for (int64_t b = 0; b < B; b++) {
                memcpy(x1 + b * L1, x + b * L, (size_t)L1);
                memcpy(x2 + b * L2, x + b * L + L1, (size_t)L2);
            }
            float *lw = malloc((size_t)(B * L * 256) * sizeof(float));
            float *lp1 = malloc((size_t)(B * L1 * 256) * sizeof(float));
            float *lp2 = malloc((size_t)(B * L2 * 256) * sizeof(float));
            mb_acts *aw = mb_acts_create(c, B, L);
            mb_acts *a1 = mb_acts_create_ex(c, B, L1, 0, 0), *a2 = mb_acts_create(c, B, L2);
            mb_forward(&m, aw, x, NULL, lw);
            mb_state s;
            assert_int_equal(mb_state_create(&s, c, B), 0);
            mb_forward_stateful(&m, a1, &s, x1, NULL, lp1);
            mb_forward_stateful(&m, a2, &s, x2, NULL, lp2);
            double max_err = 0.0, max_ref = 0.0;
            for (int64_t b = 0; b < B; b++)
                for (int64_t t = 0; t < L; t++)
                    for (int v = 0; v < 256; v++) {
                        float ref = lw[(b * L + t) * 256 + v];
                        float got =
                            t < L1 ? lp1[(b * L1 + t) * 256 + v] : lp2[(b * L2 + t - L1) * 256 + v];
                        max_err = fmax(max_err, fabs((double)got - ref));
                        max_ref = fmax(max_ref, fabs((double)ref));
                    }
            double *conv64 = malloc((size_t)nc * sizeof(double) + 8);
            double *ssm64 = malloc((size_t)ns * sizeof(double));
            ref64_forward(c, p64, B, L, x, NULL, NULL, NULL, NULL, NULL, conv64, ssm64);
            double e_conv = nc ? ref64_rel_err(s.conv, conv64, nc) : 0.0;
            double e_ssm = ref64_rel_err(s.ssm, ssm64, ns);
            printf("variant %d split %lld|%lld: pieces vs whole %.2e, conv state %.2e, "
                   "ssm state %.2e\n",
                   vi, (long long)L1, (long long)L2, max_err / max_ref, e_conv, e_ssm);
            assert_true(max_err <= TOL * max_ref);
            assert_true(e_conv <= TOL);
            assert_true(e_ssm <= TOL);
            /* from random initial states, against the reference with the same states */
            random_state(&s, 31 + (uint64_t)si);
            double *c0 = malloc((size_t)nc * sizeof(double) + 8);
            double *s0 = malloc((size_t)ns * sizeof(double));
            for (int64_t i = 0; i < nc; i++)
                c0[i] = s.conv[i];
            for (int64_t i = 0; i < ns; i++)
                s0[i] = s.ssm[i];
            mb_acts *aw0 = mb_acts_create_ex(c, B, L, 0, 0);
            float loss = mb_forward_stateful(&m, aw0, &s, x, tg, lw);
            double *lg64 = malloc((size_t)(B * L * 256) * sizeof(double));
            double sum64 = ref64_forward(c, p64, B, L, x, tg, c0, s0, lg64, NULL, conv64, ssm64);
            double e_lg = ref64_rel_err(lw, lg64, B * L * 256);
            e_conv = nc ? ref64_rel_err(s.conv, conv64, nc) : 0.0;
            e_ssm = ref64_rel_err(s.ssm, ssm64, ns);
            printf("  from random states: logits %.2e, conv %.2e, ssm %.2e, loss %.6f ref %.6f\n",
                   e_lg, e_conv, e_ssm, loss, sum64 / (double)(B * L));
            assert_true(e_lg <= TOL && e_conv <= TOL && e_ssm <= TOL);
            assert_true(fabs(loss - sum64 / (double)(B * L)) <= TOL * sum64 / (double)(B * L));
            /* no backward after a stateful forward */
            float *g = calloc((size_t)m.n_params, sizeof(float));
            mb_backward(&m, aw0, 1.0f, g);
            assert_non_null(strstr(mb_last_error(), "mb_backward"));
            for (int64_t i = 0; i < m.n_params; i++)
                assert_true(g[i] == 0.0f);
            free(g);
            free(c0), free(s0), free(lg64);
            mb_acts_free(aw0);
            free(conv64), free(ssm64);
            mb_state_free(&s);
            mb_acts_free(aw), mb_acts_free(a1), mb_acts_free(a2);
            free(x), free(tg), free(x1), free(x2), free(lw), free(lp1), free(lp2);
        }
        free(p64);
        mb_model_free(&m);
    }
}

/* Bad arguments give an error, not a crash. */
static void test_errors(void **st) {
    (void)st;
    mb_model m;
    make_model(&m, &k_variants[0], 500);
    mb_config other = m.cfg;
    other.d_state = 8;
    mb_acts *a = mb_acts_create(&other, 1, 4);
    assert_non_null(a);
    uint8_t x[4] = {1, 2, 3, 4};
    assert_true(isnan(mb_forward(&m, a, x, x, NULL)));
    assert_non_null(strstr(mb_last_error(), "different config"));
    mb_acts_free(a);
    assert_null(mb_acts_create(&m.cfg, 0, 4));
    assert_non_null(strstr(mb_last_error(), "B=0"));
    assert_null(mb_acts_create(&m.cfg, 1, -1));
    mb_state s;
    assert_int_equal(mb_state_create(&s, &m.cfg, 3), 0);
    a = mb_acts_create(&m.cfg, 1, 4);
    assert_true(isnan(mb_forward_stateful(&m, a, &s, x, NULL, NULL)));
    assert_non_null(strstr(mb_last_error(), "n_seq"));
    mb_state_free(&s);
    mb_acts_free(a);
    mb_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_ref64), cmocka_unit_test(test_causality),
        cmocka_unit_test(test_uniform_8bpb),  cmocka_unit_test(test_stateful),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
