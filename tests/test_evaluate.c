/* Evaluation (src/eval/evaluate.c) against the independent float64 reference
 * (tests/support/ref64.c): the windowed mode's nats equal the sum of each window scored from a
 * zero state by ref64_forward, the streamed mode's equal each whole document scored in one
 * piece (the carried state is exactly a longer context), at every batch size and window
 * length; max_bytes stops after whole windows; the progress callback reports done < total
 * while scoring and done >= total exactly once, at the end. Tolerance: relative 1e-5 on the
 * nats (float32 model against float64). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "eval/evaluate.h"
#include "mambabyte.h"
#include "support/ref64.h"
#include "support/variants.h"

#define TOL 1e-5

/* documents of 0, 1, 2, 9, 40 and 73 bytes: empty, unscorable, shorter and longer than the
 * windows, a multiple of none */
enum { N_DOCS = 6, MAX_LEN = 73 };
static const int64_t k_lens[N_DOCS] = {40, 1, 73, 0, 9, 2};

static void make_docs(mb_doc *docs, uint8_t *buf) {
    int64_t at = 0;
    random_bytes(buf, N_DOCS * MAX_LEN, 41);
    for (int d = 0; d < N_DOCS; d++) {
        docs[d].bytes = buf + at;
        docs[d].len = k_lens[d];
        at += k_lens[d];
    }
}

/* ref64's cross-entropy of bytes w[1 .. n] given w[0 .. n-1], from a zero state. */
static double ref_nats(const mb_model *m, const double *p64, const uint8_t *w, int64_t n) {
    return ref64_forward(&m->cfg, p64, 1, n, w, w + 1, NULL, NULL, NULL, NULL, NULL, NULL);
}

typedef struct {
    int64_t calls, at_end, last_done, last_total, bad;
} progress_log;

static void log_progress(int64_t done, int64_t total, void *user) {
    progress_log *p = user;
    p->calls++;
    if (done >= total) p->at_end++;
    if (done < p->last_done || (p->calls > 1 && total != p->last_total)) p->bad++;
    p->last_done = done, p->last_total = total;
}

static void check_progress(const progress_log *p, const mb_eval_result *r) {
    assert_true(p->calls >= 1);
    assert_int_equal(p->at_end, 1);           /* 100% once */
    assert_int_equal(p->bad, 0);              /* done never decreases, total fixed */
    assert_int_equal(p->last_done, r->bytes); /* the last call has the final count */
}

static void test_windowed_matches_ref64(void **st) {
    (void)st;
    uint8_t buf[N_DOCS * MAX_LEN];
    mb_doc docs[N_DOCS];
    make_docs(docs, buf);
    for (int vi = 0; vi < 2; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 300 + (uint64_t)vi);
        double *p64 = ref64_params(&m);
        assert_non_null(p64);
        const int64_t ctxs[] = {1, 8, 16, 72, 100};
        for (int ci = 0; ci < 5; ci++) {
            const int64_t ctx = ctxs[ci];
            double want = 0.0;
            int64_t want_bytes = 0, want_docs = 0;
            for (int d = 0; d < N_DOCS; d++) {
                if (docs[d].len > 1) want_docs++;
                for (int64_t off = 0; off + 1 < docs[d].len; off += ctx) {
                    int64_t n = docs[d].len - 1 - off;
                    if (n > ctx) n = ctx;
                    want += ref_nats(&m, p64, docs[d].bytes + off, n);
                    want_bytes += n;
                }
            }
            const int64_t batches[] = {1, 3, 8};
            for (int bi = 0; bi < 3; bi++) {
                mb_eval_result r;
                progress_log p = {0};
                assert_int_equal(
                    mb_evaluate(&m, docs, N_DOCS, ctx, batches[bi], 0, 0, log_progress, &p, &r),
                    MB_OK);
                printf("variant %d windowed ctx %3lld batch %lld: nats %.6f ref %.6f, %lld "
                       "bytes, %lld docs\n",
                       vi, (long long)ctx, (long long)batches[bi], r.nats, want, (long long)r.bytes,
                       (long long)r.docs);
                assert_int_equal(r.bytes, want_bytes);
                assert_int_equal(r.docs, want_docs);
                assert_true(fabs(r.nats - want) <= TOL * want);
                check_progress(&p, &r);
            }
        }
        free(p64);
        mb_model_free(&m);
    }
}

static void test_streamed_matches_ref64(void **st) {
    (void)st;
    uint8_t buf[N_DOCS * MAX_LEN];
    mb_doc docs[N_DOCS];
    make_docs(docs, buf);
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        mb_model m;
        make_model(&m, &k_variants[vi], 400 + (uint64_t)vi);
        double *p64 = ref64_params(&m);
        assert_non_null(p64);
        double want = 0.0;
        int64_t want_bytes = 0;
        for (int d = 0; d < N_DOCS; d++)
            if (docs[d].len > 1) {
                want += ref_nats(&m, p64, docs[d].bytes, docs[d].len - 1);
                want_bytes += docs[d].len - 1;
            }
        const int64_t ctxs[] = {1, 5, 16, 72, 200};
        for (int ci = 0; ci < 5; ci++) {
            mb_eval_result r;
            progress_log p = {0};
            assert_int_equal(mb_evaluate(&m, docs, N_DOCS, ctxs[ci], 1, 1, 0, log_progress, &p, &r),
                             MB_OK);
            printf("variant %d streamed ctx %3lld: nats %.6f ref %.6f (whole documents)\n", vi,
                   (long long)ctxs[ci], r.nats, want);
            assert_int_equal(r.bytes, want_bytes);
            assert_int_equal(r.docs, 4);
            assert_true(fabs(r.nats - want) <= TOL * want);
            check_progress(&p, &r);
        }
        free(p64);
        mb_model_free(&m);
    }
}

/* max_bytes: scoring stops at the first window boundary at or past it (never fewer bytes than
 * asked for while documents remain, less than a window more); 100% reported once. */
static void test_max_bytes(void **st) {
    (void)st;
    uint8_t buf[N_DOCS * MAX_LEN];
    mb_doc docs[N_DOCS];
    make_docs(docs, buf);
    mb_model m;
    make_model(&m, &k_variants[0], 500);
    for (int stream = 0; stream < 2; stream++)
        for (int64_t ctx = 4; ctx <= 32; ctx *= 2)
            for (int64_t batch = 1; batch <= (stream ? 1 : 5); batch += 2)
                for (int64_t mb = 1; mb <= 125; mb += 3) {
                    mb_eval_result r, all;
                    progress_log p = {0};
                    assert_int_equal(
                        mb_evaluate(&m, docs, N_DOCS, ctx, batch, stream, mb, log_progress, &p, &r),
                        MB_OK);
                    check_progress(&p, &r);
                    assert_int_equal(p.last_total, mb < 120 ? mb : 120); /* 120 scorable */
                    assert_true(r.bytes >= (mb < 120 ? mb : 120));
                    /* a window starts only below the limit (windows queued for a batch
                     * counted as scored), so less than one window past it */
                    assert_true(r.bytes < mb + ctx);
                    /* a part of the whole evaluation, all of it where the limit is not reached */
                    assert_int_equal(
                        mb_evaluate(&m, docs, N_DOCS, ctx, batch, stream, 0, NULL, NULL, &all),
                        MB_OK);
                    assert_true(r.bytes <= all.bytes && r.nats <= all.nats * (1 + TOL));
                    if (mb >= 120) assert_true(fabs(r.nats - all.nats) <= TOL * all.nats);
                }
    mb_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windowed_matches_ref64),
        cmocka_unit_test(test_streamed_matches_ref64),
        cmocka_unit_test(test_max_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
