/* Gradient check of mb_backward (src/cpu/model.c) against central finite differences of the
 * independent float64 reference forward (tests/support/ref64.c).
 *
 * For every parameter tensor of 4 model variants (RMSNorm/LayerNorm x tied/untied, d_state
 * 4/16, d_conv 4/3, dt_rank auto/3) at B = 2 and L = 1, 7, 33 (33 with scan chunks of 8, so
 * the backward crosses chunk boundaries):
 *   - sampled entries (embedding rows that occur in the input and one that does not; lm_head
 *     rows of targets and others): d(dloss * sum CE)/dp by central differences in float64,
 *     step 1e-4;
 *   - one random direction per tensor (covers every entry): directional derivative by
 *     central differences against <grad, v>.
 * Tolerance: |analytic - fd| <= 1e-3 * |fd| + 1e-4 * max|analytic gradient of the tensor|
 * (the float32 backward against float64 FD, which is accurate to ~1e-8 here). mb_backward
 * must accumulate (+=) into grads and scale by dloss; it is deterministic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "cpu/model.h"
#include "mambabyte.h"
#include "support/ref64.h"
#include "support/variants.h"

#define FD_STEP 1e-4
#define REL_TOL 1e-3
#define ABS_TOL 1e-4 /* times the largest gradient entry of the tensor */
#define N_SAMPLES 5
#define DLOSS 0.37f

typedef struct {
    const mb_model *m;
    double *p; /* float64 parameters, perturbed in place */
    int64_t B, L;
    const uint8_t *x, *tg;
} fd_ctx;

static double loss64(const fd_ctx *f) {
    return (double)DLOSS * ref64_forward(&f->m->cfg, f->p, f->B, f->L, f->x, f->tg, NULL, NULL,
                                         NULL, NULL, NULL, NULL);
}

/* d loss / d p[i] by central differences */
static double fd_entry(fd_ctx *f, int64_t i) {
    double p0 = f->p[i];
    f->p[i] = p0 + FD_STEP;
    double lp = loss64(f);
    f->p[i] = p0 - FD_STEP;
    double lm = loss64(f);
    f->p[i] = p0;
    return (lp - lm) / (2.0 * FD_STEP);
}

/* directional derivative along v over [off, off + n) */
static double fd_dir(fd_ctx *f, int64_t off, int64_t n, const double *v) {
    for (int64_t i = 0; i < n; i++)
        f->p[off + i] += FD_STEP * v[i];
    double lp = loss64(f);
    for (int64_t i = 0; i < n; i++)
        f->p[off + i] -= 2.0 * FD_STEP * v[i];
    double lm = loss64(f);
    for (int64_t i = 0; i < n; i++)
        f->p[off + i] += FD_STEP * v[i];
    return (lp - lm) / (2.0 * FD_STEP);
}

static int check(const char *what, const char *name, double ga, double fd, double gmax,
                 double *worst) {
    double err = fabs(ga - fd), tol = REL_TOL * fabs(fd) + ABS_TOL * gmax;
    double r = err / tol;
    if (r > *worst) *worst = r;
    if (!(err <= tol)) {
        printf("  FAIL %s %s: analytic %.8e fd %.8e (err %.2e, tol %.2e)\n", name, what, ga, fd,
               err, tol);
        return 0;
    }
    return 1;
}

static void run_case(const variant *v, int vi, int64_t L, int64_t chunk) {
    const int64_t B = 2, BL = B * L;
    mb_model m;
    make_model(&m, v, 1000 + 17 * (uint64_t)vi + (uint64_t)L);
    mb_rng r;
    mb_rng_seed(&r, 77 + (uint64_t)L * 3 + (uint64_t)vi);
    uint8_t *x = malloc((size_t)BL), *tg = malloc((size_t)BL);
    /* bytes from a small alphabet so embedding rows repeat; targets anywhere */
    for (int64_t i = 0; i < BL; i++)
        x[i] = (uint8_t)(40 + mb_rng_below(&r, 12));
    for (int64_t i = 0; i < BL; i++)
        tg[i] = (uint8_t)mb_rng_below(&r, 256);

    /* analytic, into zeroed grads */
    int64_t P = m.n_params;
    float *g = calloc((size_t)P, sizeof(float)), *g2 = malloc((size_t)P * sizeof(float));
    mb_acts *a = mb_acts_create_ex(&m.cfg, B, L, 1, chunk);
    assert_non_null(a);
    float loss = mb_forward(&m, a, x, tg, NULL);
    assert_true(isfinite(loss));
    mb_backward(&m, a, DLOSS, g);
    double *ga = malloc((size_t)P * sizeof(double));
    for (int64_t i = 0; i < P; i++)
        ga[i] = (double)g[i];
    /* accumulation (+=): from random content the result is g0 + g to float rounding */
    float *g0 = malloc((size_t)P * sizeof(float));
    double gall = 0.0;
    for (int64_t i = 0; i < P; i++) {
        g0[i] = (float)mb_rng_normal(&r);
        gall = fmax(gall, fabs(ga[i]));
    }
    memcpy(g2, g0, (size_t)P * sizeof(float));
    mb_backward(&m, a, DLOSS, g2); /* a second backward of the same forward is allowed */
    for (int64_t i = 0; i < P; i++)
        assert_true(fabs((double)g2[i] - ((double)g0[i] + ga[i])) <=
                    4e-7 * fabs((double)g0[i]) + 1e-6 * gall);
    /* deterministic: the same forward + backward again gives the same bits */
    memset(g2, 0, (size_t)P * sizeof(float));
    mb_forward(&m, a, x, tg, NULL);
    mb_backward(&m, a, DLOSS, g2);
    assert_memory_equal(g, g2, (size_t)P * sizeof(float));

    fd_ctx f = {&m, ref64_params(&m), B, L, x, tg};
    assert_non_null(f.p);
    int ok = 1;
    double worst = 0.0;
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const mb_tensor_info *t = &m.tensors[ti];
        const double *gt = ga + t->offset;
        double gmax = 0.0;
        for (int64_t i = 0; i < t->numel; i++)
            gmax = fmax(gmax, fabs(gt[i]));
        /* entries to sample */
        int64_t idx[N_SAMPLES + 3];
        int ns = 0;
        int is_emb = strcmp(t->name, "backbone.embedding.weight") == 0;
        int is_head = strcmp(t->name, "lm_head.weight") == 0;
        int64_t d = m.cfg.d_model;
        if (is_emb) { /* rows of input bytes (several entries), and a row not in the input */
            for (int k = 0; k < 3; k++)
                idx[ns++] = (int64_t)x[mb_rng_below(&r, (uint64_t)BL)] * d +
                            (int64_t)mb_rng_below(&r, (uint64_t)d);
            idx[ns++] = 200 * d + 3; /* byte 200 never occurs in x (40..51) */
            idx[ns++] = (int64_t)tg[0] * d + 1;
        } else if (is_head) { /* rows of targets and a random row */
            for (int k = 0; k < 3; k++)
                idx[ns++] = (int64_t)tg[mb_rng_below(&r, (uint64_t)BL)] * d +
                            (int64_t)mb_rng_below(&r, (uint64_t)d);
            idx[ns++] = (int64_t)mb_rng_below(&r, 256) * d + 5;
        }
        while (ns < N_SAMPLES)
            idx[ns++] = (int64_t)mb_rng_below(&r, (uint64_t)t->numel);
        for (int k = 0; k < ns; k++) {
            char what[64];
            snprintf(what, sizeof what, "[%lld]", (long long)idx[k]);
            ok &= check(what, t->name, gt[idx[k]], fd_entry(&f, t->offset + idx[k]), gmax, &worst);
        }
        if (is_emb && !m.cfg.tie_embeddings) /* no gradient for bytes absent from the input */
            assert_true(gt[200 * d + 3] == 0.0);
        /* a random direction over the whole tensor */
        double *dir = malloc((size_t)t->numel * sizeof(double));
        double dot = 0.0;
        for (int64_t i = 0; i < t->numel; i++) {
            dir[i] = mb_rng_normal(&r);
            dot += dir[i] * gt[i];
        }
        double dirmax = 0.0; /* scale: sum |v_i| max|g| bounds <v, g> */
        for (int64_t i = 0; i < t->numel; i++)
            dirmax += fabs(dir[i]);
        ok &= check("direction", t->name, dot, fd_dir(&f, t->offset, t->numel, dir),
                    gmax * dirmax / sqrt((double)t->numel), &worst);
        free(dir);
        if (L == 1 && strstr(t->name, "A_log")) /* one step from a zero state: exp(delta A) * 0 */
            assert_true(gmax == 0.0);
        else
            assert_true(gmax > 0.0); /* every tensor receives gradient */
    }
    printf("variant %d (%s, %s) L=%2lld chunk %lld: loss %.5f, %d tensors, worst err/tol %.3f\n",
           vi, v->rms ? "RMSNorm" : "LayerNorm", v->tie ? "tied" : "untied", (long long)L,
           (long long)(chunk ? chunk : L), loss, m.n_tensors, worst);
    assert_true(ok);
    free(f.p);
    mb_acts_free(a);
    free(g0), free(g), free(g2), free(ga), free(x), free(tg);
    mb_model_free(&m);
}

static void test_grad_L1(void **st) {
    (void)st;
    for (int vi = 0; vi < N_VARIANTS; vi++)
        run_case(&k_variants[vi], vi, 1, 0);
}

static void test_grad_L7(void **st) {
    (void)st;
    for (int vi = 0; vi < N_VARIANTS; vi++)
        run_case(&k_variants[vi], vi, 7, 0);
}

static void test_grad_L33(void **st) {
    (void)st;
    for (int vi = 0; vi < N_VARIANTS; vi++)
        run_case(&k_variants[vi], vi, 33, 8);
}

/* mb_backward without a differentiable forward sets an error and leaves grads alone. */
static void test_backward_refuses(void **st) {
    (void)st;
    mb_model m;
    make_model(&m, &k_variants[0], 5);
    uint8_t x[6] = {1, 2, 3, 4, 5, 6};
    float *g = calloc((size_t)m.n_params, sizeof(float));
    mb_acts *a = mb_acts_create(&m.cfg, 2, 3);
    mb_forward(&m, a, x, NULL, NULL); /* no targets */
    mb_fail(MB_OK, "%s", "");
    mb_backward(&m, a, 1.0f, g);
    assert_non_null(strstr(mb_last_error(), "mb_backward"));
    for (int64_t i = 0; i < m.n_params; i++)
        assert_true(g[i] == 0.0f);
    mb_acts *ae = mb_acts_create_ex(&m.cfg, 2, 3, 0, 0); /* evaluation acts */
    mb_forward(&m, ae, x, x, NULL);
    mb_fail(MB_OK, "%s", "");
    mb_backward(&m, ae, 1.0f, g);
    assert_non_null(strstr(mb_last_error(), "mb_backward"));
    for (int64_t i = 0; i < m.n_params; i++)
        assert_true(g[i] == 0.0f);
    mb_acts_free(a), mb_acts_free(ae);
    free(g);
    mb_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_L1),
        cmocka_unit_test(test_grad_L7),
        cmocka_unit_test(test_grad_L33),
        cmocka_unit_test(test_backward_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
