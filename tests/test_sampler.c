/* Sampler (src/infer/sampler.c): argmax at T=0, top-k, top-p, frequencies against an
 * independent double-precision softmax, determinism in the seed, argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>

#include "infer/sampler.h"
#include "mambabyte.h"

#define V MB_VOCAB

static void random_logits(mb_rng *r, float *l, double scale) {
    for (int i = 0; i < V; i++)
        l[i] = (float)(scale * mb_rng_normal(r));
}

/* Independent reference: softmax(l / T) in double. */
static void ref_softmax(const float *l, double T, double *p) {
    double mx = -INFINITY, sum = 0.0;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, (double)l[i]);
    for (int i = 0; i < V; i++)
        sum += (p[i] = exp(((double)l[i] - mx) / T));
    for (int i = 0; i < V; i++)
        p[i] /= sum;
}

/* Draw n bytes into counts (V). */
static void draw(mb_sampler *s, const float *l, int n, long *counts) {
    memset(counts, 0, V * sizeof(long));
    for (int i = 0; i < n; i++) {
        int b = mb_sample(s, l);
        assert_true(b >= 0 && b < V);
        counts[b]++;
    }
}

/* Every bin within 5 sigma of the binomial expectation (+1 count of slack for tiny p), and
 * bins of zero probability never drawn. */
static void assert_frequencies(const long *counts, const double *p, int n) {
    for (int i = 0; i < V; i++) {
        double mean = n * p[i], sd = sqrt(n * p[i] * (1.0 - p[i]));
        if (p[i] == 0.0) {
            assert_int_equal(counts[i], 0);
            continue;
        }
        if (fabs((double)counts[i] - mean) > 5.0 * sd + 1.0)
            fail_msg("byte %d: %ld draws, expected %.1f +- %.1f", i, counts[i], mean, sd);
    }
}

static void test_argmax_at_zero_temperature(void **st) {
    (void)st;
    mb_rng r;
    mb_rng_seed(&r, 1);
    float l[V];
    mb_sampler s;
    mb_sampler_init(&s, 0.0f, 0, 1.0f, 7);
    for (int trial = 0; trial < 200; trial++) {
        random_logits(&r, l, 3.0);
        int want = (int)mb_rng_below(&r, V);
        l[want] = 100.0f;
        float copy[V];
        memcpy(copy, l, sizeof l);
        assert_int_equal(mb_sample(&s, l), want);
        assert_memory_equal(copy, l, sizeof l); /* logits not modified */
    }
    /* ties go to the lowest index */
    random_logits(&r, l, 1.0);
    l[200] = 50.0f;
    l[100] = 50.0f;
    l[255] = 50.0f;
    assert_int_equal(mb_sample(&s, l), 100);
    for (int i = 0; i < V; i++)
        l[i] = -3.5f;
    assert_int_equal(mb_sample(&s, l), 0);
    l[255] = -3.0f;
    assert_int_equal(mb_sample(&s, l), 255);
    mb_sampler_free(&s);
}

static void test_top_k_one_is_argmax(void **st) {
    (void)st;
    mb_rng r;
    mb_rng_seed(&r, 2);
    float l[V];
    const float temps[] = {0.1f, 1.0f, 5.0f, 1000.0f};
    for (int t = 0; t < 4; t++) {
        mb_sampler s;
        mb_sampler_init(&s, temps[t], 1, 1.0f, 11 + (uint64_t)t);
        for (int trial = 0; trial < 300; trial++) {
            random_logits(&r, l, 0.5);
            int want = 0;
            for (int i = 1; i < V; i++)
                if (l[i] > l[want]) want = i;
            assert_int_equal(mb_sample(&s, l), want);
        }
        /* tie: top_k 1 keeps the lowest index */
        for (int i = 0; i < V; i++)
            l[i] = 0.0f;
        l[9] = l[3] = 1.0f;
        for (int k = 0; k < 100; k++)
            assert_int_equal(mb_sample(&s, l), 3);
        mb_sampler_free(&s);
    }
}

static void test_top_k_zero_is_off(void **st) {
    (void)st;
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = 0.25f;
    long counts[V];
    double p[V];
    for (int i = 0; i < V; i++)
        p[i] = 1.0 / V;
    const int ks[] = {0, 256};
    for (int t = 0; t < 2; t++) {
        mb_sampler s;
        mb_sampler_init(&s, 1.0f, ks[t], 1.0f, 3);
        draw(&s, l, 50000, counts);
        for (int i = 0; i < V; i++)
            assert_true(counts[i] > 0);
        assert_frequencies(counts, p, 50000);
        mb_sampler_free(&s);
    }
    /* top_k = 5 on flat logits: the 5 lowest indices (ties), uniformly */
    mb_sampler s;
    mb_sampler_init(&s, 1.0f, 5, 1.0f, 4);
    draw(&s, l, 20000, counts);
    for (int i = 0; i < V; i++)
        p[i] = i < 5 ? 0.2 : 0.0;
    assert_frequencies(counts, p, 20000);
    mb_sampler_free(&s);
}

/* probabilities 0.5, 0.3, 0.1 on bytes 7, 42, 3 (out of order on purpose), 0.1 spread
 * over the other 253 bytes */
static void top_p_logits(float *l) {
    for (int i = 0; i < V; i++)
        l[i] = (float)log(0.1 / 253.0);
    l[7] = (float)log(0.5);
    l[42] = (float)log(0.3);
    l[3] = (float)log(0.1);
}

static void test_top_p_smallest_set(void **st) {
    (void)st;
    float l[V];
    top_p_logits(l);
    long counts[V];
    double p[V];
    const int n = 40000;
    /* p = 0.8: exactly {7, 42} (0.5 + 0.3 reaches 0.8), renormalised to 0.625 / 0.375 */
    mb_sampler s;
    mb_sampler_init(&s, 1.0f, 0, 0.8f, 5);
    draw(&s, l, n, counts);
    for (int i = 0; i < V; i++)
        p[i] = 0.0;
    p[7] = 0.625;
    p[42] = 0.375;
    assert_true(counts[7] > 0 && counts[42] > 0);
    assert_int_equal(counts[7] + counts[42], n);
    assert_frequencies(counts, p, n);
    mb_sampler_free(&s);
    /* p = 0.81: the byte crossing p is included -> exactly {7, 42, 3} */
    mb_sampler_init(&s, 1.0f, 0, 0.81f, 6);
    draw(&s, l, n, counts);
    for (int i = 0; i < V; i++)
        p[i] = 0.0;
    p[7] = 0.5 / 0.9;
    p[42] = 0.3 / 0.9;
    p[3] = 0.1 / 0.9;
    assert_true(counts[3] > 0);
    assert_int_equal(counts[7] + counts[42] + counts[3], n);
    assert_frequencies(counts, p, n);
    mb_sampler_free(&s);
    /* p = 0.5: the single top byte; p = 0.4: still the top byte (it crosses p) */
    const float ps[] = {0.5f, 0.4f, 0.05f};
    for (int t = 0; t < 3; t++) {
        mb_sampler_init(&s, 1.0f, 0, ps[t], 8);
        draw(&s, l, 2000, counts);
        assert_int_equal(counts[7], 2000);
        mb_sampler_free(&s);
    }
    /* p = 1 is off: all 256 bytes appear (0.1/253 each -> ~40 draws per byte over 100k) */
    mb_sampler_init(&s, 1.0f, 0, 1.0f, 9);
    draw(&s, l, 100000, counts);
    for (int i = 0; i < V; i++)
        assert_true(counts[i] > 0);
    mb_sampler_free(&s);
    /* top-k then top-p on the renormalised top-k: k = 2 gives {0.625, 0.375}; p = 0.6
     * reaches 0.6 with the first byte alone */
    mb_sampler_init(&s, 1.0f, 2, 0.6f, 10);
    draw(&s, l, 2000, counts);
    assert_int_equal(counts[7], 2000);
    mb_sampler_free(&s);
    mb_sampler_init(&s, 1.0f, 2, 0.7f, 10);
    draw(&s, l, 2000, counts);
    assert_int_equal(counts[7] + counts[42], 2000);
    assert_true(counts[42] > 0);
    mb_sampler_free(&s);
}

static void test_frequencies_match_softmax(void **st) {
    (void)st;
    mb_rng r;
    mb_rng_seed(&r, 77);
    float l[V];
    random_logits(&r, l, 2.0);
    double p[V];
    long counts[V];
    const int n = 100000;
    const float temps[] = {1.0f, 0.7f, 2.5f};
    for (int t = 0; t < 3; t++) {
        mb_sampler s;
        mb_sampler_init(&s, temps[t], 0, 1.0f, 100 + (uint64_t)t);
        ref_softmax(l, temps[t], p);
        draw(&s, l, n, counts);
        assert_frequencies(counts, p, n);
        /* chi-square over bins with expectation >= 5; df ~ bins - 1; 5-sigma bound */
        double chi = 0.0;
        int bins = 0;
        for (int i = 0; i < V; i++)
            if (n * p[i] >= 5.0) {
                double e = n * p[i];
                chi += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
                bins++;
            }
        assert_true(bins > 20);
        assert_true(chi < (bins - 1) + 5.0 * sqrt(2.0 * (bins - 1)));
        mb_sampler_free(&s);
    }
    /* top_k = 10 at T = 0.8: the reference restricted to the 10 largest and renormalised */
    mb_sampler s;
    mb_sampler_init(&s, 0.8f, 10, 1.0f, 200);
    ref_softmax(l, 0.8, p);
    double kth;
    {
        double sorted[V];
        memcpy(sorted, p, sizeof sorted);
        for (int i = 0; i < 10; i++)
            for (int j = i + 1; j < V; j++)
                if (sorted[j] > sorted[i]) {
                    double t = sorted[i];
                    sorted[i] = sorted[j];
                    sorted[j] = t;
                }
        kth = sorted[9];
    }
    double mass = 0.0;
    for (int i = 0; i < V; i++) {
        if (p[i] < kth) p[i] = 0.0;
        mass += p[i];
    }
    for (int i = 0; i < V; i++)
        p[i] /= mass;
    draw(&s, l, n, counts);
    assert_frequencies(counts, p, n);
    mb_sampler_free(&s);
}

static void test_seed_repeats(void **st) {
    (void)st;
    mb_rng r;
    mb_rng_seed(&r, 3);
    float l[V];
    random_logits(&r, l, 1.0);
    int a[2000], b[2000], c[2000];
    mb_sampler s1, s2, s3;
    mb_sampler_init(&s1, 0.9f, 40, 0.95f, 1234);
    mb_sampler_init(&s2, 0.9f, 40, 0.95f, 1234);
    mb_sampler_init(&s3, 0.9f, 40, 0.95f, 1235);
    for (int i = 0; i < 2000; i++) {
        a[i] = mb_sample(&s1, l);
        b[i] = mb_sample(&s2, l);
        c[i] = mb_sample(&s3, l);
    }
    assert_memory_equal(a, b, sizeof a);
    int same = 0;
    for (int i = 0; i < 2000; i++)
        same += a[i] == c[i];
    assert_true(same < 1000); /* another seed gives another stream */
    mb_sampler_free(&s1);
    mb_sampler_free(&s2);
    mb_sampler_free(&s3);
}

static void expect_einval(float t, int k, float p, const char *name) {
    assert_int_equal(mb_sampler_check(t, k, p), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), name));
}

static void test_argument_errors(void **st) {
    (void)st;
    assert_int_equal(mb_sampler_check(0.0f, 0, 1.0f), MB_OK);
    assert_int_equal(mb_sampler_check(1.0f, 256, 0.5f), MB_OK);
    assert_int_equal(mb_sampler_check(100.0f, 1, 1e-6f), MB_OK);
    expect_einval(-0.01f, 0, 1.0f, "temperature");
    expect_einval(NAN, 0, 1.0f, "temperature");
    expect_einval(INFINITY, 0, 1.0f, "temperature");
    expect_einval(1.0f, -1, 1.0f, "top_k");
    expect_einval(1.0f, 257, 1.0f, "top_k");
    expect_einval(1.0f, 0, 0.0f, "top_p");
    expect_einval(1.0f, 0, -0.5f, "top_p");
    expect_einval(1.0f, 0, 1.0001f, "top_p");
    expect_einval(1.0f, 0, NAN, "top_p");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_at_zero_temperature),
        cmocka_unit_test(test_top_k_one_is_argmax),
        cmocka_unit_test(test_top_k_zero_is_off),
        cmocka_unit_test(test_top_p_smallest_set),
        cmocka_unit_test(test_frequencies_match_softmax),
        cmocka_unit_test(test_seed_repeats),
        cmocka_unit_test(test_argument_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
