/* Selective scan (src/cpu/scan.c) against an independent float64 reference loop written from
 * model.md "Forward": forward values, saved chunk states and final state; chunk-size and
 * thread-count invariance; every gradient against central finite differences of the float64
 * reference; output-layout semantics (= / +=, untouched neighbouring columns). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <omp.h>

#include "cpu/scan.h"
#include "mambabyte.h"

/* ------------------------------------------------------------------ problem + reference */

/* One random problem in the model's layouts: x inside a (B, L, xs) buffer at offset 0, B and C
 * inside a (B, L, R + 2N) buffer at offsets R and R + N, z inside a (B, L, 2Di) buffer at
 * offset Di. */
typedef struct {
    int64_t B, L, Di, N, R, xs;
    int gated, with_h0;
    float *xbuf, *delta, *A_log, *bc, *D, *xz, *h0;
} problem;

static double randn(mb_rng *r) {
    return mb_rng_normal(r);
}

static float softplusf_ref(double v) {
    return (float)(v > 20.0 ? v : log1p(exp(v)));
}

static void problem_make(problem *p, int64_t B, int64_t L, int64_t Di, int64_t N, int gated,
                         int with_h0, int64_t x_pad, uint64_t seed) {
    mb_rng r;
    mb_rng_seed(&r, seed);
    memset(p, 0, sizeof *p);
    p->B = B, p->L = L, p->Di = Di, p->N = N, p->R = 3, p->xs = Di + x_pad;
    p->gated = gated, p->with_h0 = with_h0;
    const int64_t BL = B * L, W = p->R + 2 * N;
    p->xbuf = malloc(sizeof(float) * (size_t)(BL * p->xs));
    p->delta = malloc(sizeof(float) * (size_t)(BL * Di));
    p->A_log = malloc(sizeof(float) * (size_t)(Di * N));
    p->bc = malloc(sizeof(float) * (size_t)(BL * W));
    p->D = malloc(sizeof(float) * (size_t)Di);
    p->xz = malloc(sizeof(float) * (size_t)(BL * 2 * Di));
    p->h0 = malloc(sizeof(float) * (size_t)(B * Di * N));
    for (int64_t i = 0; i < BL * p->xs; i++)
        p->xbuf[i] = (float)randn(&r);
    /* delta = softplus(2 n - 2): spans about 0.005 .. 4, so decays from ~1 to ~0 */
    for (int64_t i = 0; i < BL * Di; i++)
        p->delta[i] = softplusf_ref(2.0 * randn(&r) - 2.0);
    for (int64_t c = 0; c < Di; c++)
        for (int64_t n = 0; n < N; n++)
            p->A_log[c * N + n] = (float)(log((double)(n + 1)) + 0.3 * randn(&r));
    for (int64_t i = 0; i < BL * W; i++)
        p->bc[i] = (float)randn(&r);
    for (int64_t c = 0; c < Di; c++)
        p->D[c] = (float)randn(&r);
    for (int64_t i = 0; i < BL * 2 * Di; i++)
        p->xz[i] = (float)(2.0 * randn(&r));
    for (int64_t i = 0; i < B * Di * N; i++)
        p->h0[i] = (float)randn(&r);
}

static void problem_free(problem *p) {
    free(p->xbuf), free(p->delta), free(p->A_log), free(p->bc), free(p->D), free(p->xz);
    free(p->h0);
}

static mb_scan_args problem_args(const problem *p, int64_t chunk, float *h_last, float *h_chunks) {
    mb_scan_args a;
    memset(&a, 0, sizeof a);
    a.B = p->B, a.L = p->L, a.Di = p->Di, a.N = p->N, a.chunk = chunk;
    a.x = p->xbuf, a.x_stride = p->xs;
    a.delta = p->delta;
    a.A_log = p->A_log;
    a.Bm = p->bc + p->R, a.Cm = p->bc + p->R + p->N, a.bc_stride = p->R + 2 * p->N;
    a.D = p->D;
    a.z = p->gated ? p->xz + p->Di : NULL, a.z_stride = 2 * p->Di;
    a.h0 = p->with_h0 ? p->h0 : NULL;
    a.h_last = h_last, a.h_chunks = h_chunks;
    return a;
}

/* The reference works on contiguous float64 copies. */
typedef struct {
    int64_t B, L, Di, N;
    double *x, *delta, *A_log, *Bm, *Cm, *D, *z, *h0; /* z, h0 may be NULL */
} ref_in;

static double *dup_strided(const float *src, int64_t rows, int64_t width, int64_t stride) {
    double *d = malloc(sizeof(double) * (size_t)(rows * width));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < width; c++)
            d[r * width + c] = src[r * stride + c];
    return d;
}

static void ref_make(ref_in *q, const problem *p) {
    const int64_t BL = p->B * p->L, W = p->R + 2 * p->N;
    q->B = p->B, q->L = p->L, q->Di = p->Di, q->N = p->N;
    q->x = dup_strided(p->xbuf, BL, p->Di, p->xs);
    q->delta = dup_strided(p->delta, BL, p->Di, p->Di);
    q->A_log = dup_strided(p->A_log, p->Di, p->N, p->N);
    q->Bm = dup_strided(p->bc + p->R, BL, p->N, W);
    q->Cm = dup_strided(p->bc + p->R + p->N, BL, p->N, W);
    q->D = dup_strided(p->D, 1, p->Di, p->Di);
    q->z = p->gated ? dup_strided(p->xz + p->Di, BL, p->Di, 2 * p->Di) : NULL;
    q->h0 = p->with_h0 ? dup_strided(p->h0, p->B * p->Di, p->N, p->N) : NULL;
}

static void ref_free(ref_in *q) {
    free(q->x), free(q->delta), free(q->A_log), free(q->Bm), free(q->Cm), free(q->D);
    free(q->z), free(q->h0);
}

/* model.md: s_t = exp(delta_t A) s_{t-1} + delta_t B_t x_t, y_t = (C_t . s_t + D x_t) SiLU(z_t),
 * A = -exp(A_log). Writes y (B, L, Di); h_last (B, Di, N) and the states entering every
 * position t, hist (B, Di, L, N), where non-NULL. */
static void ref_forward(const ref_in *q, double *y, double *h_last, double *hist) {
    const int64_t B = q->B, L = q->L, Di = q->Di, N = q->N;
    double *s = malloc(sizeof(double) * (size_t)N);
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < Di; c++) {
            for (int64_t n = 0; n < N; n++)
                s[n] = q->h0 ? q->h0[(b * Di + c) * N + n] : 0.0;
            for (int64_t t = 0; t < L; t++) {
                const int64_t i = (b * L + t) * Di + c;
                const double *Bt = q->Bm + (b * L + t) * N, *Ct = q->Cm + (b * L + t) * N;
                if (hist)
                    for (int64_t n = 0; n < N; n++)
                        hist[((b * Di + c) * L + t) * N + n] = s[n];
                double acc = 0.0;
                for (int64_t n = 0; n < N; n++) {
                    const double A = -exp(q->A_log[c * N + n]);
                    s[n] = exp(q->delta[i] * A) * s[n] + q->delta[i] * Bt[n] * q->x[i];
                    acc += s[n] * Ct[n];
                }
                acc += q->D[c] * q->x[i];
                if (q->z) acc *= q->z[i] / (1.0 + exp(-q->z[i]));
                y[i] = acc;
            }
            if (h_last)
                for (int64_t n = 0; n < N; n++)
                    h_last[(b * Di + c) * N + n] = s[n];
        }
    free(s);
}

static double ref_loss(const ref_in *q, const double *w, double *ybuf) {
    ref_forward(q, ybuf, NULL, NULL);
    double l = 0.0;
    for (int64_t i = 0; i < q->B * q->L * q->Di; i++)
        l += w[i] * ybuf[i];
    return l;
}

/* max |got - want| / max |want| over n values read with strides. */
static double rel_err(const float *got, int64_t gstride, const double *want, int64_t rows,
                      int64_t width) {
    double num = 0.0, den = 0.0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < width; c++) {
            double g = got[r * gstride + c], w = want[r * width + c];
            if (!(fabs(g - w) <= num)) num = fabs(g - w); /* NaN propagates */
            if (fabs(w) > den) den = fabs(w);
        }
    return den > 0.0 ? num / den : num;
}

static double rel_err_f(const float *got, const float *want, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= num)) num = d;
        if (fabs((double)want[i]) > den) den = fabs((double)want[i]);
    }
    return den > 0.0 ? num / den : num;
}

/* ------------------------------------------------------------------ forward */

static void check_forward(int64_t B, int64_t L, int64_t Di, int64_t N, int gated, int with_h0,
                          int64_t x_pad, int64_t chunk, uint64_t seed) {
    problem p;
    problem_make(&p, B, L, Di, N, gated, with_h0, x_pad, seed);
    ref_in q;
    ref_make(&q, &p);
    const int64_t nch = mb_scan_n_chunks(L, chunk);
    assert_int_equal(nch, (L + chunk - 1) / chunk);
    float *y = malloc(sizeof(float) * (size_t)(B * L * Di));
    float *hl = malloc(sizeof(float) * (size_t)(B * Di * N));
    float *hc = malloc(sizeof(float) * (size_t)(B * Di * nch * N));
    double *yr = malloc(sizeof(double) * (size_t)(B * L * Di));
    double *hlr = malloc(sizeof(double) * (size_t)(B * Di * N));
    double *hist = malloc(sizeof(double) * (size_t)(B * Di * L * N));
    mb_scan_args a = problem_args(&p, chunk, hl, hc);
    mb_scan_forward(&a, y);
    ref_forward(&q, yr, hlr, hist);

    double ey = rel_err(y, Di, yr, B * L, Di);
    double eh = rel_err(hl, N, hlr, B * Di, N);
    /* saved chunk-entry states against the reference history */
    double num = 0.0, den = 0.0;
    for (int64_t bc = 0; bc < B * Di; bc++)
        for (int64_t k = 0; k < nch; k++)
            for (int64_t n = 0; n < N; n++) {
                double w = hist[(bc * L + k * chunk) * N + n];
                double d = fabs(hc[(bc * nch + k) * N + n] - w);
                if (!(d <= num)) num = d;
                if (fabs(w) > den) den = fabs(w);
            }
    double ec = den > 0 ? num / den : num;
    print_message("forward B=%lld L=%lld Di=%lld N=%lld gated=%d h0=%d chunk=%lld: "
                  "y %.2e h_last %.2e h_chunks %.2e\n",
                  (long long)B, (long long)L, (long long)Di, (long long)N, gated, with_h0,
                  (long long)chunk, ey, eh, ec);
    assert_true(ey <= 1e-5);
    assert_true(eh <= 1e-5);
    assert_true(ec <= 1e-5);
    if (!with_h0) /* chunk 0 entry state is exactly zero */
        for (int64_t bc = 0; bc < B * Di; bc++)
            for (int64_t n = 0; n < N; n++)
                assert_true(hc[bc * nch * N + n] == 0.0f);

    /* without h_chunks / h_last: same y */
    float *y2 = malloc(sizeof(float) * (size_t)(B * L * Di));
    a.h_chunks = NULL, a.h_last = NULL;
    mb_scan_forward(&a, y2);
    assert_memory_equal(y, y2, sizeof(float) * (size_t)(B * L * Di));
    free(y2);
    free(y), free(hl), free(hc), free(yr), free(hlr), free(hist);
    ref_free(&q);
    problem_free(&p);
}

static void test_forward_reference(void **st) {
    (void)st;
    static const int64_t shapes[][4] = {
        {1, 1, 5, 4},     {3, 7, 19, 16},  {1, 33, 37, 8},
        {3, 100, 40, 16}, {1, 100, 16, 1}, {2, 20, 70, 16},
    };
    uint64_t seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t B = shapes[s][0], L = shapes[s][1], Di = shapes[s][2], N = shapes[s][3];
        check_forward(B, L, Di, N, 1, 0, 0, mb_scan_default_chunk(L), seed++);
        check_forward(B, L, Di, N, 0, 0, 0, 16, seed++);
        check_forward(B, L, Di, N, 1, 1, 3, 5, seed++);
    }
}

/* delta up to 50 (decay exp(-800) -> 0) and |z| up to 100: stays finite and matches. */
static void test_forward_extremes(void **st) {
    (void)st;
    problem p;
    problem_make(&p, 2, 20, 21, 16, 1, 1, 0, 99);
    for (int64_t i = 0; i < 2 * 20 * 21; i += 3)
        p.delta[i] = 50.0f;
    for (int64_t i = 0; i < 2 * 20 * 21; i += 5)
        p.delta[i] = 1e-6f;
    for (int64_t i = 0; i < 2 * 20 * 2 * 21; i += 7)
        p.xz[i] = (i % 2) ? 100.0f : -100.0f;
    ref_in q;
    ref_make(&q, &p);
    float y[2 * 20 * 21], hl[2 * 21 * 16];
    double yr[2 * 20 * 21], hlr[2 * 21 * 16];
    mb_scan_args a = problem_args(&p, 6, hl, NULL);
    mb_scan_forward(&a, y);
    ref_forward(&q, yr, hlr, NULL);
    for (size_t i = 0; i < sizeof y / sizeof y[0]; i++)
        assert_true(isfinite(y[i]));
    assert_true(rel_err(y, 21, yr, 40, 21) <= 1e-5);
    assert_true(rel_err(hl, 16, hlr, 42, 16) <= 1e-5);
    ref_free(&q);
    problem_free(&p);
}

/* ------------------------------------------------------------------ backward */

typedef struct {
    float *dx, *ddelta, *dA_log, *dbc, *dD, *dxz;
} grads;

#define SENTINEL 12345.0f
#define ACC0 0.25f

/* Forward + backward with `chunk`; dbc / dxz prefilled with SENTINEL, dA_log / dD with ACC0. */
static void run_backward(const problem *p, int64_t chunk, const float *dy, grads *g, float *y_out,
                         float *hl_out) {
    const int64_t B = p->B, L = p->L, Di = p->Di, N = p->N, BL = B * L;
    const int64_t W = p->R + 2 * N, nch = mb_scan_n_chunks(L, chunk);
    float *hc = malloc(sizeof(float) * (size_t)(B * Di * nch * N));
    float *y = y_out ? y_out : malloc(sizeof(float) * (size_t)(BL * Di));
    mb_scan_args a = problem_args(p, chunk, hl_out, hc);
    mb_scan_forward(&a, y);
    g->dx = malloc(sizeof(float) * (size_t)(BL * Di));
    g->ddelta = malloc(sizeof(float) * (size_t)(BL * Di));
    g->dA_log = malloc(sizeof(float) * (size_t)(Di * N));
    g->dbc = malloc(sizeof(float) * (size_t)(BL * W));
    g->dD = malloc(sizeof(float) * (size_t)Di);
    g->dxz = malloc(sizeof(float) * (size_t)(BL * 2 * Di));
    for (int64_t i = 0; i < BL * W; i++)
        g->dbc[i] = SENTINEL;
    for (int64_t i = 0; i < BL * 2 * Di; i++)
        g->dxz[i] = SENTINEL;
    for (int64_t i = 0; i < Di * N; i++)
        g->dA_log[i] = ACC0;
    for (int64_t i = 0; i < Di; i++)
        g->dD[i] = ACC0;
    mb_scan_backward(&a, dy, g->dx, g->ddelta, g->dA_log, g->dbc + p->R, g->dbc + p->R + N, g->dD,
                     p->gated ? g->dxz + Di : NULL);
    free(hc);
    if (!y_out) free(y);
}

static void grads_free(grads *g) {
    free(g->dx), free(g->ddelta), free(g->dA_log), free(g->dbc), free(g->dD), free(g->dxz);
}

/* Central differences of L = sum w * y on the float64 reference, for every element of `v`. */
static void fd_grad(ref_in *q, double *v, int64_t n, const double *w, double *out, double *ybuf) {
    for (int64_t i = 0; i < n; i++) {
        const double v0 = v[i], h = 1e-5 * (fabs(v0) > 1.0 ? fabs(v0) : 1.0);
        v[i] = v0 + h;
        double lp = ref_loss(q, w, ybuf);
        v[i] = v0 - h;
        double lm = ref_loss(q, w, ybuf);
        v[i] = v0;
        out[i] = (lp - lm) / (2.0 * h);
    }
}

static void check_gradients(int64_t B, int64_t L, int64_t Di, int64_t N, int gated, int with_h0,
                            int64_t chunk, uint64_t seed) {
    problem p;
    problem_make(&p, B, L, Di, N, gated, with_h0, 2, seed);
    ref_in q;
    ref_make(&q, &p);
    const int64_t BL = B * L, W = p.R + 2 * N;
    mb_rng r;
    mb_rng_seed(&r, seed + 1000);
    float *dy = malloc(sizeof(float) * (size_t)(BL * Di));
    double *w = malloc(sizeof(double) * (size_t)(BL * Di));
    for (int64_t i = 0; i < BL * Di; i++)
        w[i] = dy[i] = (float)randn(&r);
    double *ybuf = malloc(sizeof(double) * (size_t)(BL * Di));

    /* float64 finite-difference gradients of every input */
    double *gx = malloc(sizeof(double) * (size_t)(BL * Di));
    double *gd = malloc(sizeof(double) * (size_t)(BL * Di));
    double *gz = malloc(sizeof(double) * (size_t)(BL * Di));
    double *gA = malloc(sizeof(double) * (size_t)(Di * N));
    double *gB = malloc(sizeof(double) * (size_t)(BL * N));
    double *gC = malloc(sizeof(double) * (size_t)(BL * N));
    double *gD = malloc(sizeof(double) * (size_t)Di);
    fd_grad(&q, q.x, BL * Di, w, gx, ybuf);
    fd_grad(&q, q.delta, BL * Di, w, gd, ybuf);
    if (gated) fd_grad(&q, q.z, BL * Di, w, gz, ybuf);
    fd_grad(&q, q.A_log, Di * N, w, gA, ybuf);
    fd_grad(&q, q.Bm, BL * N, w, gB, ybuf);
    fd_grad(&q, q.Cm, BL * N, w, gC, ybuf);
    fd_grad(&q, q.D, Di, w, gD, ybuf);

    /* several thread counts: different splits of (b, channel block) items between threads */
    static const int threads[] = {1, 2, 3, 4, 5, 7};
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
        omp_set_num_threads(threads[ti]);
        grads g;
        run_backward(&p, chunk, dy, &g, NULL, NULL);
        for (int64_t i = 0; i < Di * N; i++)
            g.dA_log[i] -= ACC0;
        for (int64_t i = 0; i < Di; i++)
            g.dD[i] -= ACC0;
        double e[7] = {
            rel_err(g.dx, Di, gx, BL, Di),
            rel_err(g.ddelta, Di, gd, BL, Di),
            gated ? rel_err(g.dxz + Di, 2 * Di, gz, BL, Di) : 0.0,
            rel_err(g.dA_log, N, gA, Di, N),
            rel_err(g.dbc + p.R, W, gB, BL, N),
            rel_err(g.dbc + p.R + N, W, gC, BL, N),
            rel_err(g.dD, Di, gD, 1, Di),
        };
        print_message("grad B=%lld L=%lld Di=%lld N=%lld gated=%d h0=%d chunk=%lld threads=%d: "
                      "x %.1e delta %.1e z %.1e A_log %.1e B %.1e C %.1e D %.1e\n",
                      (long long)B, (long long)L, (long long)Di, (long long)N, gated, with_h0,
                      (long long)chunk, threads[ti], e[0], e[1], e[2], e[3], e[4], e[5], e[6]);
        for (int k = 0; k < 7; k++)
            assert_true(e[k] <= 1e-4);
        /* columns outside dB/dC and dz are untouched */
        for (int64_t row = 0; row < BL; row++) {
            for (int64_t c = 0; c < p.R; c++)
                assert_true(g.dbc[row * W + c] == SENTINEL);
            for (int64_t c = 0; c < Di; c++)
                assert_true(g.dxz[row * 2 * Di + c] == SENTINEL);
            if (!gated)
                for (int64_t c = Di; c < 2 * Di; c++)
                    assert_true(g.dxz[row * 2 * Di + c] == SENTINEL);
        }
        grads_free(&g);
    }
    omp_set_num_threads(2);
    free(gx), free(gd), free(gz), free(gA), free(gB), free(gC), free(gD);
    free(dy), free(w), free(ybuf);
    ref_free(&q);
    problem_free(&p);
}

static void test_gradients(void **st) {
    (void)st;
    check_gradients(2, 9, 19, 5, 1, 1, 4, 11); /* one partial channel block, h0 */
    check_gradients(1, 12, 5, 3, 0, 0, 5, 12); /* ungated */
    /* 3 x 2 work items (b, channel block): with 4 or 5 threads some thread holds two
     * sequences partially (both dB/dC slots) */
    check_gradients(3, 7, 37, 4, 1, 0, 3, 13);
    check_gradients(1, 5, 70, 3, 1, 1, 2, 15); /* 3 channel blocks of one sequence */
    check_gradients(1, 1, 16, 2, 1, 0, 1, 14); /* L = 1 */
}

/* y, h_last and every gradient agree across chunk sizes 1, 3, 16, L, L + 5. */
static void test_chunk_invariance(void **st) {
    (void)st;
    problem p;
    const int64_t B = 3, L = 33, Di = 37, N = 8, BL = B * L, W = 3 + 2 * N;
    problem_make(&p, B, L, Di, N, 1, 1, 0, 21);
    mb_rng r;
    mb_rng_seed(&r, 22);
    float *dy = malloc(sizeof(float) * (size_t)(BL * Di));
    for (int64_t i = 0; i < BL * Di; i++)
        dy[i] = (float)randn(&r);
    float *y0 = malloc(sizeof(float) * (size_t)(BL * Di)), *y = malloc(sizeof *y * BL * Di);
    float *hl0 = malloc(sizeof(float) * (size_t)(B * Di * N)),
          *hl = malloc(sizeof *hl * B * Di * N);
    grads g0, g;
    run_backward(&p, L, dy, &g0, y0, hl0);
    const int64_t chunks[] = {1, 3, 16, L + 5};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        run_backward(&p, chunks[k], dy, &g, y, hl);
        double e[9] = {
            rel_err_f(y, y0, BL * Di),
            rel_err_f(hl, hl0, B * Di * N),
            rel_err_f(g.dx, g0.dx, BL * Di),
            rel_err_f(g.ddelta, g0.ddelta, BL * Di),
            rel_err_f(g.dA_log, g0.dA_log, Di * N),
            rel_err_f(g.dbc, g0.dbc, BL * W),
            rel_err_f(g.dD, g0.dD, Di),
            rel_err_f(g.dxz, g0.dxz, BL * 2 * Di),
            0.0,
        };
        print_message("chunk %lld vs %lld: y %.1e h_last %.1e dx %.1e ddelta %.1e dA_log %.1e "
                      "dbc %.1e dD %.1e dz %.1e\n",
                      (long long)chunks[k], (long long)L, e[0], e[1], e[2], e[3], e[4], e[5], e[6],
                      e[7]);
        for (int i = 0; i < 9; i++)
            assert_true(e[i] <= 1e-6);
        grads_free(&g);
    }
    grads_free(&g0);
    free(dy), free(y0), free(y), free(hl0), free(hl);
    problem_free(&p);
}

/* Argument errors are reported, not crashes: backward without saved states. */
static void test_backward_errors(void **st) {
    (void)st;
    problem p;
    problem_make(&p, 1, 4, 3, 2, 1, 0, 0, 31);
    mb_scan_args a = problem_args(&p, 2, NULL, NULL);
    float dy[12] = {0}, dx[12], dd[12], dA[6] = {0}, dbc[4 * 7], dD[3] = {0}, dz[4 * 6];
    mb_scan_backward(&a, dy, dx, dd, dA, dbc + 3, dbc + 5, dD, dz + 3);
    assert_true(isnan(dx[0]) && isnan(dd[11]));
    assert_non_null(strstr(mb_last_error(), "h_chunks"));
    assert_int_equal(mb_scan_n_chunks(0, 4), 0);
    assert_int_equal(mb_scan_n_chunks(8, 4), 2);
    assert_int_equal(mb_scan_n_chunks(9, 4), 3);
    for (int64_t L = 1; L < 20000; L = L * 3 + 1) {
        int64_t c = mb_scan_default_chunk(L);
        assert_true(c >= 1 && c <= L && c <= 256);
    }
    problem_free(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_reference), cmocka_unit_test(test_forward_extremes),
        cmocka_unit_test(test_gradients),         cmocka_unit_test(test_chunk_invariance),
        cmocka_unit_test(test_backward_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
