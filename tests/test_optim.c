/* AdamW against a float64 transcription of torch.optim.AdamW; decay mask; schedule; clipping. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mambabyte.h"
#include "train/adamw.h"
#include "train/schedule.h"

static void test_adamw_matches_reference(void **st) {
    (void)st;
    mb_config c;
    mb_config_default(&c, 16, 2);
    mb_model m;
    assert_int_equal(mb_model_create(&m, &c), 0);
    mb_model_init(&m, 1);
    int64_t n = m.n_params;
    mb_adamw o;
    assert_int_equal(mb_adamw_init(&o, &m, 0.9f, 0.95f, 1e-8f, 0.1f), 0);
    double *p = malloc((size_t)n * sizeof *p), *mm = calloc((size_t)n, sizeof *mm),
           *vv = calloc((size_t)n, sizeof *vv);
    float *g = malloc((size_t)n * sizeof *g);
    for (int64_t i = 0; i < n; i++)
        p[i] = m.params[i];
    mb_rng r;
    mb_rng_seed(&r, 3);
    const double lr = 1e-2;
    for (int t = 1; t <= 5; t++) {
        for (int64_t i = 0; i < n; i++)
            g[i] = (float)mb_rng_normal(&r);
        mb_adamw_update(&o, m.params, g, (float)lr);
        for (int ti = 0; ti < m.n_tensors; ti++) {
            const mb_tensor_info *T = &m.tensors[ti];
            for (int64_t i = T->offset; i < T->offset + T->numel; i++) {
                if (T->weight_decay) p[i] *= 1.0 - lr * 0.1;
                mm[i] = 0.9 * mm[i] + 0.1 * g[i];
                vv[i] = 0.95 * vv[i] + 0.05 * (double)g[i] * g[i];
                double mh = mm[i] / (1.0 - pow(0.9, t));
                double den = sqrt(vv[i]) / sqrt(1.0 - pow(0.95, t)) + 1e-8;
                p[i] -= lr * mh / den;
            }
        }
    }
    double maxerr = 0;
    for (int64_t i = 0; i < n; i++)
        maxerr = fmax(maxerr, fabs(p[i] - m.params[i]));
    assert_true(maxerr < 1e-5);
    assert_int_equal(o.step, 5);
    /* decay mask: matrices yes, A_log/D/biases/norms/embedding no */
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const char *nm = m.tensors[ti].name;
        int want = strstr(nm, "in_proj") || strstr(nm, "x_proj") || strstr(nm, "out_proj") ||
                   strstr(nm, "dt_proj.weight") || strstr(nm, "conv1d.weight") ||
                   strstr(nm, "lm_head");
        assert_int_equal(m.tensors[ti].weight_decay, want);
        assert_int_equal(o.decay[m.tensors[ti].offset], want);
    }
    free(p);
    free(mm);
    free(vv);
    free(g);
    mb_adamw_free(&o);
    mb_model_free(&m);
}

static void test_schedule(void **st) {
    (void)st;
    mb_schedule s = {.lr_max = 4e-4f, .lr_min = 4e-5f, .warmup = 10, .total = 110};
    assert_float_equal(mb_schedule_lr(&s, 0), 4e-5f, 1e-9);
    assert_float_equal(mb_schedule_lr(&s, 9), 4e-4f, 1e-9);
    assert_float_equal(mb_schedule_lr(&s, 10), 4e-4f, 1e-9);
    assert_float_equal(mb_schedule_lr(&s, 60), 0.5f * (4e-4f + 4e-5f), 1e-9);
    assert_float_equal(mb_schedule_lr(&s, 110), 4e-5f, 1e-9);
    assert_float_equal(mb_schedule_lr(&s, 500), 4e-5f, 1e-9);
    assert_true(mb_schedule_lr(&s, 30) > mb_schedule_lr(&s, 31));
}

static void test_clip(void **st) {
    (void)st;
    float g[4] = {3, 4, 0, 0};
    assert_float_equal(mb_grad_clip(g, 4, 10.0), 5.0, 1e-9);
    assert_float_equal(g[0], 3.0f, 0);
    assert_float_equal(mb_grad_clip(g, 4, 1.0), 5.0, 1e-9);
    assert_float_equal(g[0], 0.6f, 1e-6);
    assert_float_equal(g[1], 0.8f, 1e-6);
    assert_float_equal(mb_grad_norm(g, 4), 1.0, 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_matches_reference),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_clip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
