/* GPU selective scan (src/cuda/scan.cu) against the CPU reference (src/cpu/scan.c):
 * mb_scan_cuda_forward / mb_scan_cuda_backward vs mb_scan_forward / mb_scan_backward on random
 * inputs in the model's layouts (x and z interleaved in one (B, L, 2 Di) buffer, B and C at
 * offsets R and R + N of one (B, L, R + 2N) buffer), every output compared by
 * max |gpu - cpu| / max |cpu| <= 1e-4 (a NaN where the reference has none, or the reverse,
 * counts as an infinite error). Outputs are poisoned with NaN before every GPU call, so an
 * unwritten element fails. Also: y is bit-identical for every chunk length and close for every
 * tile width; a NaN input gives NaN outputs. Every backward kernel (v5 with and without the dB/dC
 * pair exchange, v4 with 8 or 16 warps splitting a chunk in time) and both lane layouts of the
 * staged forward and v5 are checked. The options of the _ex forms (delta_softplus with dt_bias
 * and its gradient; bf16 y, ddelta and dz, each within half a bf16 ulp plus TOL of the tensor's
 * largest value) against the CPU scan on softplus(delta + bias), also with delta given already
 * effective (delta_is_eff: the fused dt projection's output). bf16 inputs (x_bf16 / delta_bf16,
 * the fp32 x and delta not given) against the CPU scan on the same rounded values, and their
 * refusals. Exits 77 (ctest SKIP_RETURN_CODE) without a GPU.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/scan_cuda.h"
#include "mambabyte.h"
#include "ref_check.h"
extern "C" {
#include "cpu/activations.h"
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define TOL 1e-4

static int g_fail = 0;

/* the tolerance of check and check_bf16: TOL, or 2e-2 (the issue's bf16 bound) for the backward
 * on bf16 dense states (run_in16_case's hc16) */
static double g_tol = TOL;

static void check(const char *what, const char *name, double err) {
    const int ok = err <= g_tol;
    if (!ok) g_fail = 1;
    printf("  %-6s %-8s rel err %.2e %s\n", what, name, err, ok ? "ok" : "FAIL");
}

static float urand(mb_rng *r, float lo, float hi) {
    return lo + (hi - lo) * mb_rng_float(r);
}

typedef struct {
    int64_t B, L, Di, N, R, chunk;
    int gate, use_h0;
    int fwd_only; /* N > 16: the backward refuses it, compare the forward only */
} tcase;

/* Host and device copies of one problem. */
typedef struct {
    tcase tc;
    int64_t nch;
    float *xz, *delta, *A_log, *dbc, *D, *h0, *dy; /* host inputs */
    float *d_xz, *d_delta, *d_A_log, *d_dbc, *d_D, *d_h0, *d_dy;
} problem;

static float *dup_dev(const float *h, int64_t n) {
    float *d = NULL;
    CK(cudaMalloc((void **)&d, sizeof(float) * (size_t)(n > 0 ? n : 1)));
    if (n > 0) CK(cudaMemcpy(d, h, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice));
    return d;
}

static float *dev_poison(int64_t n) {
    float *d = NULL;
    CK(cudaMalloc((void **)&d, sizeof(float) * (size_t)(n > 0 ? n : 1)));
    CK(cudaMemset(d, 0xff, sizeof(float) * (size_t)(n > 0 ? n : 1))); /* NaN */
    return d;
}

static float *to_host(const float *d, int64_t n) {
    float *h = (float *)malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (n > 0) CK(cudaMemcpy(h, d, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost));
    return h;
}

static void make_problem(problem *p, tcase tc, uint64_t seed) {
    memset(p, 0, sizeof *p);
    p->tc = tc;
    p->nch = mb_scan_n_chunks(tc.L, tc.chunk);
    const int64_t BL = tc.B * tc.L, Di = tc.Di, N = tc.N, bcs = tc.R + 2 * N;
    mb_rng r;
    mb_rng_seed(&r, seed);
    p->xz = (float *)malloc(sizeof(float) * (size_t)(BL * 2 * Di));
    p->delta = (float *)malloc(sizeof(float) * (size_t)(BL * Di));
    p->dy = (float *)malloc(sizeof(float) * (size_t)(BL * Di));
    p->dbc = (float *)malloc(sizeof(float) * (size_t)(BL * bcs));
    p->A_log = (float *)malloc(sizeof(float) * (size_t)(Di * N));
    p->D = (float *)malloc(sizeof(float) * (size_t)Di);
    p->h0 = (float *)malloc(sizeof(float) * (size_t)(tc.B * Di * N));
    for (int64_t i = 0; i < BL * 2 * Di; i++)
        p->xz[i] = urand(&r, -2.0f, 2.0f);
    for (int64_t i = 0; i < BL * Di; i++) {
        /* softplus outputs: mostly small, some large steps */
        const float u = mb_rng_float(&r);
        p->delta[i] = u < 0.9f ? urand(&r, 0.001f, 0.1f) : urand(&r, 0.1f, 2.0f);
        p->dy[i] = urand(&r, -1.0f, 1.0f);
    }
    for (int64_t i = 0; i < BL * bcs; i++)
        p->dbc[i] = urand(&r, -1.0f, 1.0f);
    for (int64_t c = 0; c < Di; c++) {
        for (int64_t n = 0; n < N; n++)
            p->A_log[c * N + n] = logf((float)(n + 1)) + urand(&r, -0.5f, 0.5f);
        p->D[c] = urand(&r, 0.5f, 1.5f);
    }
    for (int64_t i = 0; i < tc.B * Di * N; i++)
        p->h0[i] = urand(&r, -1.0f, 1.0f);
    p->d_xz = dup_dev(p->xz, BL * 2 * Di);
    p->d_delta = dup_dev(p->delta, BL * Di);
    p->d_dy = dup_dev(p->dy, BL * Di);
    p->d_dbc = dup_dev(p->dbc, BL * bcs);
    p->d_A_log = dup_dev(p->A_log, Di * N);
    p->d_D = dup_dev(p->D, Di);
    p->d_h0 = dup_dev(p->h0, tc.B * Di * N);
}

static void free_problem(problem *p) {
    free(p->xz), free(p->delta), free(p->dy), free(p->dbc), free(p->A_log), free(p->D);
    free(p->h0);
    cudaFree(p->d_xz), cudaFree(p->d_delta), cudaFree(p->d_dy), cudaFree(p->d_dbc);
    cudaFree(p->d_A_log), cudaFree(p->d_D), cudaFree(p->d_h0);
}

/* Args over host (dev = 0) or device (dev = 1) buffers. */
static mb_scan_args args_of(const problem *p, int dev, float *h_chunks, float *h_last,
                            int64_t chunk) {
    const tcase *t = &p->tc;
    mb_scan_args a;
    memset(&a, 0, sizeof a);
    a.B = t->B, a.L = t->L, a.Di = t->Di, a.N = t->N, a.chunk = chunk;
    const float *xz = dev ? p->d_xz : p->xz, *dbc = dev ? p->d_dbc : p->dbc;
    a.x = xz, a.x_stride = 2 * t->Di;
    a.delta = dev ? p->d_delta : p->delta;
    a.A_log = dev ? p->d_A_log : p->A_log;
    a.Bm = dbc + t->R, a.Cm = dbc + t->R + t->N, a.bc_stride = t->R + 2 * t->N;
    a.D = dev ? p->d_D : p->D;
    a.z = t->gate ? xz + t->Di : NULL, a.z_stride = 2 * t->Di;
    a.h0 = t->use_h0 ? (dev ? p->d_h0 : p->h0) : NULL;
    a.h_last = h_last, a.h_chunks = h_chunks;
    return a;
}

/* Full forward + backward comparison of one case. */
static void run_case(tcase tc, uint64_t seed) {
    printf("B %lld L %lld Di %lld N %lld chunk %lld gate %d h0 %d\n", (long long)tc.B,
           (long long)tc.L, (long long)tc.Di, (long long)tc.N, (long long)tc.chunk, tc.gate,
           tc.use_h0);
    problem p;
    make_problem(&p, tc, seed);
    const int64_t BL = tc.B * tc.L, Di = tc.Di, N = tc.N, bcs = tc.R + 2 * N;
    const int64_t nhc = tc.B * Di * p.nch * N, nh = tc.B * Di * N;

    /* CPU reference */
    float *y = (float *)calloc((size_t)(BL * Di), sizeof(float));
    float *hc = (float *)calloc((size_t)nhc, sizeof(float));
    float *hl = (float *)calloc((size_t)nh, sizeof(float));
    mb_scan_args ah = args_of(&p, 0, hc, hl, tc.chunk);
    mb_scan_forward(&ah, y);
    float *dx = (float *)calloc((size_t)(BL * Di), sizeof(float));
    float *ddelta = (float *)calloc((size_t)(BL * Di), sizeof(float));
    float *dbc = (float *)calloc((size_t)(BL * bcs), sizeof(float)); /* dB, dC at R, R + N */
    float *dz = (float *)calloc((size_t)(BL * 2 * Di), sizeof(float));
    float *dA = (float *)malloc(sizeof(float) * (size_t)(Di * N));
    float *dD = (float *)malloc(sizeof(float) * (size_t)Di);
    for (int64_t i = 0; i < Di * N; i++)
        dA[i] = 0.25f; /* += semantics */
    for (int64_t i = 0; i < Di; i++)
        dD[i] = -0.5f;
    mb_scan_backward(&ah, p.dy, dx, ddelta, dA, dbc + tc.R, dbc + tc.R + N, dD,
                     tc.gate ? dz + Di : NULL);

    /* GPU */
    float *g_y = dev_poison(BL * Di), *g_hc = dev_poison(nhc), *g_hl = dev_poison(nh);
    mb_scan_args ad = args_of(&p, 1, g_hc, g_hl, tc.chunk);
    int rc = mb_scan_cuda_forward(&ad, g_y, NULL);
    if (rc) {
        printf("  forward failed: %s\n", mb_last_error());
        g_fail = 1;
    }
    CK(cudaDeviceSynchronize());
    float *gy = to_host(g_y, BL * Di), *ghc = to_host(g_hc, nhc), *ghl = to_host(g_hl, nh);
    check("fwd", "y", rel_err_rows(gy, y, BL, Di, Di));
    check("fwd", "h_chunks", rel_err_rows(ghc, hc, nhc, 1, 1));
    check("fwd", "h_last", rel_err_rows(ghl, hl, nh, 1, 1));
    if (tc.fwd_only) {
        free(y), free(hc), free(hl), free(dx), free(ddelta), free(dbc), free(dz), free(dA),
            free(dD);
        free(gy), free(ghc), free(ghl);
        cudaFree(g_y), cudaFree(g_hc), cudaFree(g_hl);
        free_problem(&p);
        return;
    }

    float *g_dx = dev_poison(BL * Di), *g_dd = dev_poison(BL * Di);
    float *g_dbc = dev_poison(BL * bcs), *g_dz = dev_poison(BL * 2 * Di);
    float *g_dA = dev_poison(Di * N), *g_dD = dev_poison(Di);
    {
        float *t = (float *)malloc(sizeof(float) * (size_t)(Di * N));
        for (int64_t i = 0; i < Di * N; i++)
            t[i] = 0.25f;
        CK(cudaMemcpy(g_dA, t, sizeof(float) * (size_t)(Di * N), cudaMemcpyHostToDevice));
        for (int64_t i = 0; i < Di; i++)
            t[i] = -0.5f;
        CK(cudaMemcpy(g_dD, t, sizeof(float) * (size_t)Di, cudaMemcpyHostToDevice));
        free(t);
    }
    rc = mb_scan_cuda_backward(&ad, p.d_dy, g_dx, g_dd, g_dA, g_dbc + tc.R, g_dbc + tc.R + N, g_dD,
                               tc.gate ? g_dz + Di : NULL, NULL);
    if (rc) {
        printf("  backward failed: %s\n", mb_last_error());
        g_fail = 1;
    }
    CK(cudaDeviceSynchronize());
    float *gdx = to_host(g_dx, BL * Di), *gdd = to_host(g_dd, BL * Di);
    float *gdbc = to_host(g_dbc, BL * bcs), *gdz = to_host(g_dz, BL * 2 * Di);
    float *gdA = to_host(g_dA, Di * N), *gdD = to_host(g_dD, Di);
    check("bwd", "dx", rel_err_rows(gdx, dx, BL, Di, Di));
    check("bwd", "ddelta", rel_err_rows(gdd, ddelta, BL, Di, Di));
    check("bwd", "dB", rel_err_rows(gdbc + tc.R, dbc + tc.R, BL, N, bcs));
    check("bwd", "dC", rel_err_rows(gdbc + tc.R + N, dbc + tc.R + N, BL, N, bcs));
    if (tc.gate) check("bwd", "dz", rel_err_rows(gdz + Di, dz + Di, BL, Di, 2 * Di));
    check("bwd", "dA_log", rel_err_rows(gdA, dA, Di, N, N));
    check("bwd", "dD", rel_err_rows(gdD, dD, 1, Di, Di));

    free(y), free(hc), free(hl), free(dx), free(ddelta), free(dbc), free(dz), free(dA), free(dD);
    free(gy), free(ghc), free(ghl), free(gdx), free(gdd), free(gdbc), free(gdz), free(gdA);
    free(gdD);
    cudaFree(g_y), cudaFree(g_hc), cudaFree(g_hl), cudaFree(g_dx), cudaFree(g_dd);
    cudaFree(g_dbc), cudaFree(g_dz), cudaFree(g_dA), cudaFree(g_dD);
    free_problem(&p);
}

static uint16_t *dev_poison16(int64_t n) {
    uint16_t *d = NULL;
    CK(cudaMalloc((void **)&d, sizeof(uint16_t) * (size_t)(n > 0 ? n : 1)));
    CK(cudaMemset(d, 0xff, sizeof(uint16_t) * (size_t)(n > 0 ? n : 1))); /* NaN */
    return d;
}

/* bf16 copy (rows x width, row stride) on the device vs fp32 reference: bf16_count_far */
static void check_bf16(const char *what, const char *name, const uint16_t *dev, const float *ref,
                       int64_t rows, int64_t width, int64_t stride) {
    const int64_t n = rows > 0 ? (rows - 1) * stride + width : 0; /* ends at the last row */
    uint16_t *h = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
    CK(cudaMemcpy(h, dev, sizeof(uint16_t) * (size_t)n, cudaMemcpyDeviceToHost));
    const int64_t bad = bf16_count_far(h, ref, rows, width, stride, g_tol);
    free(h);
    if (bad) g_fail = 1;
    printf("  %-6s %-8s bf16: %lld of %lld beyond half an ulp + TOL %s\n", what, name,
           (long long)bad, (long long)(rows * width), bad ? "FAIL" : "ok");
}

/* The backward's outputs on the device (bf16 copies of dx / ddelta / dz where bf16) against the
 * reference, each check labelled `what`. */
typedef struct {
    float *dx, *dd, *dbc, *dz, *dA, *dD, *db;
    uint16_t *dxb, *ddb, *dzb;
} bwd_out;
/* the reference's backward outputs (ref_backward) */
typedef struct {
    float *dx, *dd, *dbc, *dz, *dA, *dD, *dbias;
} ref_bwd;
static void check_bwd(const char *what, const bwd_out *g, int bf16, const ref_bwd *r, int64_t BL,
                      int64_t Di, int64_t N, int64_t R) {
    const int64_t bcs = R + 2 * N;
    if (bf16) {
        check_bf16(what, "dx", g->dxb, r->dx, BL, Di, Di);
        check_bf16(what, "ddelta", g->ddb, r->dd, BL, Di, Di);
        check_bf16(what, "dz", g->dzb + Di, r->dz + Di, BL, Di, 2 * Di);
    } else {
        float *hx = to_host(g->dx, BL * Di), *hd = to_host(g->dd, BL * Di);
        float *hz = to_host(g->dz, BL * 2 * Di);
        check(what, "dx", rel_err_rows(hx, r->dx, BL, Di, Di));
        check(what, "ddelta", rel_err_rows(hd, r->dd, BL, Di, Di));
        check(what, "dz", rel_err_rows(hz + Di, r->dz + Di, BL, Di, 2 * Di));
        free(hx), free(hd), free(hz);
    }
    float *hbc = to_host(g->dbc, BL * bcs), *hA = to_host(g->dA, Di * N);
    float *hD = to_host(g->dD, Di), *hb = to_host(g->db, Di);
    check(what, "dB", rel_err_rows(hbc + R, r->dbc + R, BL, N, bcs));
    check(what, "dC", rel_err_rows(hbc + R + N, r->dbc + R + N, BL, N, bcs));
    check(what, "dA_log", rel_err_rows(hA, r->dA, Di, N, N));
    check(what, "dD", rel_err_rows(hD, r->dD, 1, Di, Di));
    check(what, "dt_bias", rel_err_rows(hb, r->dbias, 1, Di, Di));
    free(hbc), free(hA), free(hD), free(hb);
}

/* The CPU backward of an _ex options case (args ah over the effective delta eff), ddelta mapped
 * through softplus' and summed by column (the dt bias gradient). */
static ref_bwd ref_backward(const mb_scan_args *ah, const float *dy, const float *eff, int64_t BL,
                            int64_t Di, int64_t N, int64_t R) {
    ref_bwd r;
    r.dx = (float *)calloc((size_t)(BL * Di), sizeof(float));
    r.dd = (float *)calloc((size_t)(BL * Di), sizeof(float));
    r.dbc = (float *)calloc((size_t)(BL * (R + 2 * N)), sizeof(float));
    r.dz = (float *)calloc((size_t)(BL * 2 * Di), sizeof(float));
    r.dA = (float *)calloc((size_t)(Di * N), sizeof(float));
    r.dD = (float *)calloc((size_t)Di, sizeof(float));
    r.dbias = (float *)calloc((size_t)Di, sizeof(float));
    mb_scan_backward(ah, dy, r.dx, r.dd, r.dA, r.dbc + R, r.dbc + R + N, r.dD, r.dz + Di);
    for (int64_t i = 0; i < BL; i++)
        for (int64_t c = 0; c < Di; c++) {
            r.dd[i * Di + c] *= mb_softplus_grad_from_outputf(eff[i * Di + c]);
            r.dbias[c] += r.dd[i * Di + c];
        }
    return r;
}
static void ref_bwd_free(ref_bwd *r) {
    free(r->dx), free(r->dd), free(r->dbc), free(r->dz), free(r->dA), free(r->dD), free(r->dbias);
}

/* The GPU backward's outputs, NaN-poisoned (dA_log, dD and the dt bias sums zeroed: they
 * accumulate), with bf16 copies of dx / ddelta / dz where bf16. */
static bwd_out gpu_bwd_alloc(int bf16, int64_t BL, int64_t Di, int64_t N, int64_t R) {
    bwd_out g;
    g.dx = dev_poison(BL * Di), g.dd = dev_poison(BL * Di);
    g.dbc = dev_poison(BL * (R + 2 * N)), g.dz = dev_poison(BL * 2 * Di);
    g.dA = dev_poison(Di * N), g.dD = dev_poison(Di), g.db = dev_poison(Di);
    g.ddb = bf16 ? dev_poison16(BL * Di) : NULL;
    g.dzb = bf16 ? dev_poison16(BL * 2 * Di) : NULL;
    g.dxb = bf16 ? dev_poison16(BL * Di) : NULL; /* (then dx NULL: not written) */
    CK(cudaMemset(g.dA, 0, sizeof(float) * (size_t)(Di * N)));
    CK(cudaMemset(g.dD, 0, sizeof(float) * (size_t)Di));
    CK(cudaMemset(g.db, 0, sizeof(float) * (size_t)Di));
    return g;
}
static void gpu_bwd_free(bwd_out *g) {
    cudaFree(g->dx), cudaFree(g->dd), cudaFree(g->dbc), cudaFree(g->dz), cudaFree(g->dA);
    cudaFree(g->dD), cudaFree(g->db), cudaFree(g->ddb), cudaFree(g->dzb), cudaFree(g->dxb);
}

/* The GPU forward of ad with o, then its y (the bf16 copy g_yb where bf16, else the fp32 g_y),
 * h_chunks and h_last against the CPU's y, hc (nhc floats) and hl (nh) */
static void gpu_forward_check(const mb_scan_args *ad, const mb_scan_cuda_opts *o, int bf16,
                              float *g_y, const uint16_t *g_yb, const float *y, const float *g_hc,
                              const float *hc, int64_t nhc, const float *g_hl, const float *hl,
                              int64_t nh, int64_t BL, int64_t Di) {
    if (mb_scan_cuda_forward_ex(ad, o, g_y, NULL)) {
        printf("  forward failed: %s\n", mb_last_error());
        g_fail = 1;
    }
    CK(cudaDeviceSynchronize());
    float *ghc = to_host(g_hc, nhc), *ghl = to_host(g_hl, nh);
    if (bf16) {
        check_bf16("fwd", "y", g_yb, y, BL, Di, Di);
    } else {
        float *gy = to_host(g_y, BL * Di);
        check("fwd", "y", rel_err_rows(gy, y, BL, Di, Di));
        free(gy);
    }
    if (o && (o->dense_states_bf16 || o->chunk_states_bf16)) /* (bf16: the first half) */
        check_bf16("fwd", "h_chunks", (const uint16_t *)g_hc, hc, nhc, 1, 1);
    else
        check("fwd", "h_chunks", rel_err_rows(ghc, hc, nhc, 1, 1));
    check("fwd", "h_last", rel_err_rows(ghl, hl, nh, 1, 1));
    free(ghc), free(ghl);
}
/* The _ex options: delta is raw (pre-activation without bias); the reference runs the CPU scan
 * on softplus(delta + dt_bias) and maps ddelta through softplus'. bf16: y, dx, ddelta and dz go
 * to bf16 copies only (dx NULL). */
static void run_opts_case(tcase tc, uint64_t seed, int bf16, int eff_in, int dense) {
    printf("options (softplus, dt_bias%s%s): B %lld L %lld Di %lld N %lld chunk %lld\n",
           bf16 ? ", bf16 y / dx / ddelta / dz" : "", dense ? ", y_pregate" : "", (long long)tc.B,
           (long long)tc.L, (long long)tc.Di, (long long)tc.N, (long long)tc.chunk);
    problem p;
    make_problem(&p, tc, seed);
    const int64_t BL = tc.B * tc.L, Di = tc.Di, N = tc.N, bcs = tc.R + 2 * N;
    const int64_t nhc = tc.B * Di * p.nch * N, nh = tc.B * Di * N;
    mb_rng r;
    mb_rng_seed(&r, seed ^ 0x5eed);
    float *bias = (float *)malloc(sizeof(float) * (size_t)Di);
    for (int64_t c = 0; c < Di; c++)
        bias[c] = urand(&r, -5.0f, -1.0f);
    for (int64_t i = 0; i < BL * Di; i++) /* raw pre-activations; a few above the threshold */
        p.delta[i] = mb_rng_float(&r) < 0.01f ? urand(&r, 21.0f, 26.0f) : urand(&r, -4.0f, 4.0f);
    CK(cudaMemcpy(p.d_delta, p.delta, sizeof(float) * (size_t)(BL * Di), cudaMemcpyHostToDevice));
    float *eff = (float *)malloc(sizeof(float) * (size_t)(BL * Di));
    for (int64_t i = 0; i < BL; i++)
        for (int64_t c = 0; c < Di; c++)
            eff[i * Di + c] = mb_softplusf(p.delta[i * Di + c] + bias[c]);
    /* CPU reference on the effective delta */
    float *y = (float *)calloc((size_t)(BL * Di), sizeof(float));
    float *hc = (float *)calloc((size_t)nhc, sizeof(float));
    float *hl = (float *)calloc((size_t)nh, sizeof(float));
    mb_scan_args ah = args_of(&p, 0, hc, hl, tc.chunk);
    ah.delta = eff;
    mb_scan_forward(&ah, y);
    ref_bwd ref = ref_backward(&ah, p.dy, eff, BL, Di, N, tc.R);
    /* GPU */
    float *d_bias = dup_dev(bias, Di);
    float *g_y = dev_poison(BL * Di), *g_hc = dev_poison(nhc), *g_hl = dev_poison(nh);
    uint16_t *g_yb = bf16 ? dev_poison16(BL * Di) : NULL;
    float *g_yp0 = dense ? dev_poison(BL * Di + 1) : NULL;
    float *g_yp = g_yp0 && dense == 3 ? g_yp0 + 1 : g_yp0;
    mb_scan_cuda_opts o;
    memset(&o, 0, sizeof o);
    o.dt_bias = d_bias, o.dt_softplus = 1, o.y_bf16 = g_yb, o.y_pregate = g_yp;
    mb_scan_args ad = args_of(&p, 1, g_hc, g_hl, tc.chunk);
    gpu_forward_check(&ad, &o, bf16, g_y, g_yb, y, g_hc, hc, nhc, g_hl, hl, nh, BL, Di);
    if (dense) { /* the pre-gate output: the CPU forward without z */
        float *yp = (float *)calloc((size_t)(BL * Di), sizeof(float));
        mb_scan_args an = ah;
        an.z = NULL, an.h_chunks = NULL, an.h_last = NULL;
        mb_scan_forward(&an, yp);
        float *gyp = to_host(g_yp, BL * Di);
        check("fwd", "y_pregate", rel_err_rows(gyp, yp, BL, Di, Di));
        free(yp), free(gyp);
    }
    bwd_out g = gpu_bwd_alloc(bf16, BL, Di, N, tc.R);
    o.ddt_bias = g.db, o.ddelta_bf16 = g.ddb, o.dz_bf16 = g.dzb ? g.dzb + Di : NULL;
    o.dx_bf16 = g.dxb;
    if (mb_scan_cuda_backward_ex(&ad, &o, p.d_dy, bf16 ? NULL : g.dx, g.dd, g.dA, g.dbc + tc.R,
                                 g.dbc + tc.R + N, g.dD, g.dz + Di, NULL)) {
        printf("  backward failed: %s\n", mb_last_error());
        g_fail = 1;
    }
    CK(cudaDeviceSynchronize());
    check_bwd("bwd", &g, bf16, &ref, BL, Di, N, tc.R);
    if (eff_in) { /* delta given as effective (delta_is_eff): the same gradients, no transform */
        float *g_eff = dup_dev(eff, BL * Di);
        mb_scan_args ae = ad;
        ae.delta = g_eff;
        mb_scan_cuda_opts oe = o;
        oe.delta_is_eff = 1;
        oe.dt_bias = NULL; /* not used with delta_is_eff */
        CK(cudaMemset(g.dA, 0, sizeof(float) * (size_t)(Di * N)));
        CK(cudaMemset(g.dD, 0, sizeof(float) * (size_t)Di));
        CK(cudaMemset(g.db, 0, sizeof(float) * (size_t)Di));
        CK(cudaMemset(g.dbc, 0xff, sizeof(float) * (size_t)(BL * bcs)));
        CK(cudaMemset(g.dx, 0xff, sizeof(float) * (size_t)(BL * Di)));
        CK(cudaMemset(g.dd, 0xff, sizeof(float) * (size_t)(BL * Di)));
        CK(cudaMemset(g.dz, 0xff, sizeof(float) * (size_t)(BL * 2 * Di)));
        if (bf16) {
            CK(cudaMemset(g.dxb, 0xff, sizeof(uint16_t) * (size_t)(BL * Di)));
            CK(cudaMemset(g.ddb, 0xff, sizeof(uint16_t) * (size_t)(BL * Di)));
            CK(cudaMemset(g.dzb, 0xff, sizeof(uint16_t) * (size_t)(BL * 2 * Di)));
        }
        if (mb_scan_cuda_backward_ex(&ae, &oe, p.d_dy, bf16 ? NULL : g.dx, g.dd, g.dA, g.dbc + tc.R,
                                     g.dbc + tc.R + N, g.dD, g.dz + Di, NULL)) {
            printf("  backward (delta_is_eff) failed: %s\n", mb_last_error());
            g_fail = 1;
        }
        CK(cudaDeviceSynchronize());
        check_bwd("effbwd", &g, bf16, &ref, BL, Di, N, tc.R);
        cudaFree(g_eff);
    }
    if (dense == 2 && tc.gate) {
        /* the dense backward reads y_pregate: with it zeroed, every dz must be 0 (dz = dy *
         * y_pregate * SiLU'(z)); a backward that recomputed it would give the reference's */
        CK(cudaMemset(g_yp, 0, sizeof(float) * (size_t)(BL * Di)));
        CK(cudaMemset(g.dA, 0, sizeof(float) * (size_t)(Di * N)));
        CK(cudaMemset(g.dz, 0xff, sizeof(float) * (size_t)(BL * 2 * Di)));
        if (bf16) CK(cudaMemset(g.dzb, 0xff, sizeof(uint16_t) * (size_t)(BL * 2 * Di)));
        if (mb_scan_cuda_backward_ex(&ad, &o, p.d_dy, bf16 ? NULL : g.dx, g.dd, g.dA, g.dbc + tc.R,
                                     g.dbc + tc.R + N, g.dD, g.dz + Di, NULL)) {
            printf("  backward (zero y_pregate) failed: %s\n", mb_last_error());
            g_fail = 1;
        }
        CK(cudaDeviceSynchronize());
        int64_t nonzero = 0;
        for (int64_t i = 0; i < BL; i++)
            if (bf16) {
                uint16_t v;
                CK(cudaMemcpy(&v, g.dzb + i * 2 * Di + Di + (i % Di), sizeof v,
                              cudaMemcpyDeviceToHost));
                nonzero += (v & 0x7fff) != 0;
            } else {
                float v;
                CK(cudaMemcpy(&v, g.dz + i * 2 * Di + Di + (i % Di), sizeof v,
                              cudaMemcpyDeviceToHost));
                nonzero += v != 0.0f;
            }
        if (nonzero) g_fail = 1;
        printf("  dense  dz with y_pregate zeroed: %lld of %lld sampled nonzero %s\n",
               (long long)nonzero, (long long)BL, nonzero ? "FAIL" : "ok");
    }
    ref_bwd_free(&ref);
    gpu_bwd_free(&g);
    free(bias), free(eff), free(y), free(hc), free(hl);
    cudaFree(d_bias), cudaFree(g_y), cudaFree(g_hc), cudaFree(g_hl), cudaFree(g_yb);
    cudaFree(g_yp0);
    free_problem(&p);
}

/* bf16 inputs (mb_scan_cuda_opts.x_bf16 / delta_bf16) in the training form: x (the x half of
 * xz) and the effective delta rounded to bf16, the reference run on the rounded values, the GPU
 * given only the bf16 copies (args.x / args.delta NULL; x rows of stride 2 Di, delta
 * contiguous) with delta_is_eff; dense: chunk 8 and y_pregate; zdy: z (the z half of xz, stride
 * 2 Di) and the backward's dy as bf16 too (z_bf16 / dy_bf16; args.z and the fp32 dy NULL, their
 * device copies poisoned). The v5 pair-exchange backward (knob 2). yp (dense: instead of
 * y_pregate): the forward
 * also writes the pre-gate output as bf16 (y_pregate_bf16, checked to half a bf16 ulp of the
 * reference's), the backward reads it and writes the gated output back over it (y_bf16 the
 * same buffer: checked against the reference's y), dz then to a bf16 ulp and 4e-3 of the
 * largest. */
static void run_in16_case(tcase tc, uint64_t seed, int bf16, int dense, int zdy, int hc16, int yp) {
    printf("bf16 x / delta%s%s%s%s%s: B %lld L %lld Di %lld N %lld chunk %lld\n",
           zdy ? " / z / dy" : "", bf16 ? ", bf16 outputs" : "", dense ? ", dense" : "",
           hc16 ? (dense ? ", bf16 dense states" : ", bf16 chunk states") : "",
           yp ? ", bf16 pre-gate output (YP)" : "", (long long)tc.B, (long long)tc.L,
           (long long)tc.Di, (long long)tc.N, (long long)tc.chunk);
    problem p;
    make_problem(&p, tc, seed);
    const int64_t BL = tc.B * tc.L, Di = tc.Di, N = tc.N;
    const int64_t nhc = tc.B * Di * p.nch * N, nh = tc.B * Di * N;
    mb_rng r;
    mb_rng_seed(&r, seed ^ 0x16);
    float *bias = (float *)malloc(sizeof(float) * (size_t)Di);
    for (int64_t c = 0; c < Di; c++)
        bias[c] = urand(&r, -5.0f, -1.0f);
    uint16_t *x16 = (uint16_t *)calloc((size_t)(BL * 2 * Di), sizeof(uint16_t));
    uint16_t *d16 = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(BL * Di));
    for (int64_t i = 0; i < BL; i++)
        for (int64_t c = 0; c < Di; c++) {
            const float raw = urand(&r, -4.0f, 4.0f);
            d16[i * Di + c] = ref_bf16_bits(mb_softplusf(raw + bias[c]));
            p.delta[i * Di + c] = ref_bf16_value(d16[i * Di + c]);
            x16[i * 2 * Di + c] = ref_bf16_bits(p.xz[i * 2 * Di + c]);
            p.xz[i * 2 * Di + c] = ref_bf16_value(x16[i * 2 * Di + c]);
        }
    uint16_t *dy16 = (uint16_t *)calloc((size_t)(BL * Di), sizeof(uint16_t));
    if (zdy)
        for (int64_t i = 0; i < BL; i++)
            for (int64_t c = 0; c < Di; c++) {
                x16[i * 2 * Di + Di + c] = ref_bf16_bits(p.xz[i * 2 * Di + Di + c]);
                p.xz[i * 2 * Di + Di + c] = ref_bf16_value(x16[i * 2 * Di + Di + c]);
                dy16[i * Di + c] = ref_bf16_bits(p.dy[i * Di + c]);
                p.dy[i * Di + c] = ref_bf16_value(dy16[i * Di + c]);
            }
    CK(cudaMemcpy(p.d_xz, p.xz, sizeof(float) * (size_t)(BL * 2 * Di), cudaMemcpyHostToDevice));
    /* CPU reference on the rounded values */
    float *y = (float *)calloc((size_t)(BL * Di), sizeof(float));
    float *hc = (float *)calloc((size_t)nhc, sizeof(float));
    float *hl = (float *)calloc((size_t)nh, sizeof(float));
    mb_scan_args ah = args_of(&p, 0, hc, hl, tc.chunk);
    mb_scan_forward(&ah, y);
    ref_bwd ref = ref_backward(&ah, p.dy, p.delta, BL, Di, N, tc.R);
    /* GPU: the fp32 x and delta poisoned and not passed */
    uint16_t *g_x16 = NULL, *g_d16 = NULL;
    CK(cudaMalloc((void **)&g_x16, sizeof(uint16_t) * (size_t)(BL * 2 * Di)));
    CK(cudaMalloc((void **)&g_d16, sizeof(uint16_t) * (size_t)(BL * Di)));
    CK(cudaMemcpy(g_x16, x16, sizeof(uint16_t) * (size_t)(BL * 2 * Di), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(g_d16, d16, sizeof(uint16_t) * (size_t)(BL * Di), cudaMemcpyHostToDevice));
    CK(cudaMemset(p.d_delta, 0xff, sizeof(float) * (size_t)(BL * Di)));
    uint16_t *g_dy16 = NULL;
    if (zdy) {
        CK(cudaMalloc((void **)&g_dy16, sizeof(uint16_t) * (size_t)(BL * Di)));
        CK(cudaMemcpy(g_dy16, dy16, sizeof(uint16_t) * (size_t)(BL * Di), cudaMemcpyHostToDevice));
        CK(cudaMemset(p.d_dy, 0xff, sizeof(float) * (size_t)(BL * Di)));
        CK(cudaMemset(p.d_xz, 0xff, sizeof(float) * (size_t)(BL * 2 * Di)));
    }
    float *g_y = dev_poison(BL * Di), *g_hc = dev_poison(nhc), *g_hl = dev_poison(nh);
    uint16_t *g_yb = bf16 ? dev_poison16(BL * Di) : NULL;
    float *g_yp = dense && !yp ? dev_poison(BL * Di) : NULL;
    uint16_t *g_ypb = yp ? dev_poison16(BL * Di) : NULL;
    mb_scan_cuda_opts o;
    memset(&o, 0, sizeof o);
    o.y_bf16 = g_yb, o.y_pregate = g_yp, o.y_pregate_bf16 = g_ypb;
    o.x_bf16 = g_x16, o.x_bf16_stride = 2 * Di, o.delta_bf16 = g_d16;
    o.dense_states_bf16 = hc16 && dense;
    o.chunk_states_bf16 = hc16 && !dense; /* (the plain form's chunk states) */
    mb_scan_args ad = args_of(&p, 1, g_hc, g_hl, tc.chunk);
    ad.x = NULL, ad.delta = NULL;
    if (zdy && ad.z) ad.z = NULL, o.z_bf16 = g_x16 + Di, o.z_bf16_stride = 2 * Di;
    if (zdy) o.dy_bf16 = g_dy16;
    gpu_forward_check(&ad, &o, bf16, g_y, g_yb, y, g_hc, hc, nhc, g_hl, hl, nh, BL, Di);
    if (hc16) { /* the bf16 states take the first half of the fp32-sized buffer: the rest is
                 * still the poison (0xff bytes) */
        float *ghc = to_host(g_hc, nhc);
        int64_t touched = 0;
        for (int64_t i = nhc / 2; i < nhc; i++) {
            uint32_t u;
            memcpy(&u, ghc + i, sizeof u);
            touched += u != 0xffffffffu;
        }
        free(ghc);
        if (touched) g_fail = 1;
        printf("  fwd    h_chunks second half: %lld of %lld floats written %s\n",
               (long long)touched, (long long)(nhc - nhc / 2), touched ? "FAIL" : "ok");
    }
    float *ypre = NULL; /* yp: the reference pre-gate output (the forward without z) */
    if (yp) {
        ypre = (float *)calloc((size_t)(BL * Di), sizeof(float));
        mb_scan_args an = ah;
        an.z = NULL, an.h_chunks = NULL, an.h_last = NULL;
        mb_scan_forward(&an, ypre);
        check_bf16("fwd", "y_pregate_bf16", g_ypb, ypre, BL, Di, Di);
        o.y_bf16 = g_ypb; /* the backward's gated output, over the pre-gate one */
    }
    bwd_out g = gpu_bwd_alloc(bf16, BL, Di, N, tc.R);
    o.delta_is_eff = 1, o.dt_softplus = 1;
    o.ddt_bias = g.db, o.ddelta_bf16 = g.ddb, o.dz_bf16 = g.dzb ? g.dzb + Di : NULL;
    o.dx_bf16 = g.dxb;
    if (mb_scan_cuda_backward_ex(&ad, &o, zdy ? NULL : p.d_dy, bf16 ? NULL : g.dx, g.dd, g.dA,
                                 g.dbc + tc.R, g.dbc + tc.R + N, g.dD, g.dz + Di, NULL)) {
        printf("  backward failed: %s\n", mb_last_error());
        g_fail = 1;
    }
    CK(cudaDeviceSynchronize());
    if (hc16) g_tol = 2e-2; /* (each 8-position sub-chunk from its rounded entering state) */
    if (yp) g_tol = 4e-3;   /* (dz from the bf16 pre-gate output; the others are exact as before) */
    check_bwd("bwd", &g, bf16, &ref, BL, Di, N, tc.R);
    if (yp) check_bf16("bwd", "y (gated, recomputed)", g_ypb, y, BL, Di, Di);
    g_tol = TOL;
    ref_bwd_free(&ref);
    gpu_bwd_free(&g);
    free(bias), free(x16), free(d16), free(dy16), free(y), free(hc), free(hl);
    cudaFree(g_x16), cudaFree(g_d16), cudaFree(g_dy16), cudaFree(g_y), cudaFree(g_hc);
    cudaFree(g_hl), cudaFree(g_yb), cudaFree(g_yp), cudaFree(g_ypb);
    free(ypre);
    free_problem(&p);
}

/* The bf16 inputs at the lengths of the issue, both lane layouts; then what is refused: a
 * misaligned copy, one without the other, the v4 backward and the legacy forward. */
static void run_in16(void) {
    const tcase cases[] = {
        {1, 1, 64, 16, 4, 64, 1, 0, 0},    {3, 63, 64, 16, 4, 64, 1, 1, 0},
        {2, 2049, 64, 16, 4, 64, 1, 1, 0}, {1, 8193, 64, 16, 4, 128, 1, 0, 0},
        {2, 1000, 40, 16, 4, 64, 1, 1, 0}, {2, 515, 72, 12, 4, 33, 1, 1, 0},
        {3, 2048, 64, 16, 4, 8, 1, 1, 0},  {2, 1003, 40, 12, 4, 8, 1, 1, 0},
    };
    mb_scan_cuda_set_backward_warps(2);
    for (int qm = 0; qm < 2; qm++) {
        mb_scan_cuda_set_lane_layout(qm ? 1 : -1);
        for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
            run_in16_case(cases[i], 1200 + 10 * qm + i, (i + qm) & 1, cases[i].chunk == 8,
                          (i / 2 + qm) & 1, 0, 0);
    }
    /* the bf16 pre-gate output read by the backward (YP): the cases not dense, bf16 outputs
     * and z / dy as the training form has them and not, both lane layouts */
    for (int qm = 0; qm < 2; qm++) {
        mb_scan_cuda_set_lane_layout(qm ? 1 : -1);
        for (int i = 0; i < 6; i++)
            run_in16_case(cases[i], 1280 + 10 * qm + i, (i + qm + 1) & 1, 0, (i + qm) & 1, 0, 1);
        /* and in the dense form (instead of the fp32 y_pregate): bf16 states or fp32 ones */
        for (int i = 6; i < 8; i++)
            run_in16_case(cases[i], 1280 + 10 * qm + i, 1, 1, 1, (i + qm) & 1, 1);
    }
    /* the plain form's chunk states as bf16 (chunk_states_bf16, chunk 64): with YP as training
     * runs it and without, fp32 outputs, both lane layouts */
    for (int qm = 0; qm < 2; qm++) {
        mb_scan_cuda_set_lane_layout(qm ? 1 : -1);
        for (int i : {0, 1, 2, 4})
            run_in16_case(cases[i], 1330 + 10 * qm + i, (i + qm + 1) & 1, 0, 1, 1, (i + qm) & 1);
    }
    /* the dense states as bf16 (mb_scan_cuda_opts.dense_states_bf16): the dense cases, the
     * training form (bf16 outputs, z and dy as bf16), both lane layouts */
    for (int qm = 0; qm < 2; qm++) {
        mb_scan_cuda_set_lane_layout(qm ? 1 : -1);
        for (int i = 6; i < 8; i++)
            run_in16_case(cases[i], 1250 + 10 * qm + i, 1, 1, 1, 1, 0);
    }
    /* the per-element gate (the channel quads turned off, as MB_CUDA_SCAN_GATE4=0): every case
     * above that takes the quads by default (bf16 z / dy / dz, aligned rows), in the plain, YP
     * and dense forms, both lane layouts */
    mb_scan_cuda_lab_gate4(0);
    for (int qm = 0; qm < 2; qm++) {
        mb_scan_cuda_set_lane_layout(qm ? 1 : -1);
        for (int i : {1, 2, 4, 6})
            run_in16_case(cases[i], 1360 + 10 * qm + i, 1, cases[i].chunk == 8, 1, i == 6,
                          (i + qm) & 1);
    }
    mb_scan_cuda_lab_gate4(-1);
    mb_scan_cuda_set_lane_layout(-1);
    /* refusals (MB_EINVAL before any launch) */
    const tcase tc = {2, 100, 64, 16, 4, 64, 1, 1, 0};
    problem p;
    make_problem(&p, tc, 1299);
    const int64_t BL = tc.B * tc.L, Di = tc.Di;
    uint16_t *g16 = NULL;
    CK(cudaMalloc((void **)&g16, sizeof(uint16_t) * (size_t)(BL * 2 * Di + 8)));
    float *g_hc = dev_poison(tc.B * Di * p.nch * tc.N), *g_y = dev_poison(BL * Di);
    mb_scan_args ad = args_of(&p, 1, g_hc, NULL, tc.chunk);
    ad.x = NULL, ad.delta = NULL;
    mb_scan_cuda_opts o;
    memset(&o, 0, sizeof o);
    o.x_bf16 = g16 + 1, o.x_bf16_stride = 2 * Di, o.delta_bf16 = g16 + 8;
    int bad = mb_scan_cuda_forward_ex(&ad, &o, g_y, NULL) != MB_EINVAL;
    o.x_bf16 = g16 + 8, o.delta_bf16 = NULL;
    bad |= mb_scan_cuda_forward_ex(&ad, &o, g_y, NULL) != MB_EINVAL;
    o.delta_bf16 = g16 + 16;
    o.x_bf16_stride = 2 * Di + 4;
    bad |= mb_scan_cuda_forward_ex(&ad, &o, g_y, NULL) != MB_EINVAL;
    o.x_bf16_stride = 2 * Di;
    mb_scan_cuda_set_forward_warps(4);
    bad |= mb_scan_cuda_forward_ex(&ad, &o, g_y, NULL) != MB_EINVAL;
    bad |= mb_scan_cuda_bf16in_supported(8, 8192, 2048, 16) != 0;
    mb_scan_cuda_set_forward_warps(0);
    bad |= mb_scan_cuda_forward_ex(&ad, &o, g_y, NULL) != MB_OK;
    CK(cudaDeviceSynchronize());
    mb_scan_cuda_set_backward_warps(8);
    bad |= mb_scan_cuda_backward_ex(&ad, &o, p.d_dy, g_y, g_y, p.d_A_log, g_y, g_y, p.d_D, g_y,
                                    NULL) != MB_EINVAL;
    mb_scan_cuda_set_backward_warps(0);
    /* bf16 z / dy: not without x_bf16, not beside args.z, aligned rows */
    mb_scan_cuda_opts oz = o;
    oz.z_bf16 = g16 + Di, oz.z_bf16_stride = 2 * Di;
    bad |= mb_scan_cuda_forward_ex(&ad, &oz, g_y, NULL) != MB_EINVAL; /* args.z given too */
    mb_scan_args az = ad;
    az.z = NULL;
    bad |= mb_scan_cuda_forward_ex(&az, &oz, g_y, NULL) != MB_OK;
    CK(cudaDeviceSynchronize());
    oz.z_bf16_stride = 2 * Di + 4;
    bad |= mb_scan_cuda_forward_ex(&az, &oz, g_y, NULL) != MB_EINVAL;
    mb_scan_args ax = args_of(&p, 1, g_hc, NULL, tc.chunk); /* fp32 x and delta */
    ax.z = NULL;
    oz.z_bf16_stride = 2 * Di, oz.x_bf16 = NULL, oz.delta_bf16 = NULL;
    bad |= mb_scan_cuda_forward_ex(&ax, &oz, g_y, NULL) != MB_EINVAL;
    memset(&oz, 0, sizeof oz);
    oz.dy_bf16 = g16 + 8;
    bad |= mb_scan_cuda_backward_ex(&ax, &oz, NULL, g_y, g_y, p.d_A_log, g_y, g_y, p.d_D, g_y,
                                    NULL) != MB_EINVAL;
    /* dy_bf16 alone (args.z NULL: no dz; the accumulated dA_log / dD into scratch buffers) */
    mb_scan_cuda_set_backward_warps(2); /* (v5 with the pair exchange: reads the bf16 inputs) */
    float *g_dA = dev_poison(Di * tc.N), *g_dD = dev_poison(Di);
    oz = o, oz.dy_bf16 = g16 + 8;
    bad |= mb_scan_cuda_backward_ex(&az, &oz, NULL, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL, NULL) !=
           MB_OK;
    CK(cudaDeviceSynchronize());
    oz.dy_bf16 = g16 + 1;
    bad |= mb_scan_cuda_backward_ex(&az, &oz, NULL, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL, NULL) !=
           MB_EINVAL;
    mb_scan_cuda_set_backward_warps(0);
    /* bf16 dense states: only in the dense form (y_pregate, chunk 8), forward and backward */
    float *g_yp = dev_poison(BL * Di);
    oz = o, oz.dense_states_bf16 = 1;
    bad |= mb_scan_cuda_forward_ex(&az, &oz, g_y, NULL) != MB_EINVAL; /* no y_pregate */
    oz.y_pregate = g_yp;
    bad |= mb_scan_cuda_forward_ex(&az, &oz, g_y, NULL) != MB_EINVAL; /* chunk 64 */
    mb_scan_cuda_set_backward_warps(2); /* (v5 pair exchange: refused for the chunk alone) */
    bad |= mb_scan_cuda_backward_ex(&az, &oz, p.d_dy, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL, NULL) !=
           MB_EINVAL;
    mb_scan_cuda_set_backward_warps(0);
    {
        mb_scan_args a8 = az; /* chunk 8, y_pregate: the positive control */
        float *g_hc8 = dev_poison(tc.B * Di * ((tc.L + 7) / 8) * tc.N);
        a8.chunk = 8, a8.h_chunks = g_hc8;
        bad |= mb_scan_cuda_forward_ex(&a8, &oz, g_y, NULL) != MB_OK;
        CK(cudaDeviceSynchronize());
        mb_scan_cuda_set_backward_warps(8); /* the v4 backward: no dense form */
        bad |= mb_scan_cuda_backward_ex(&a8, &oz, p.d_dy, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL,
                                        NULL) != MB_EINVAL;
        mb_scan_cuda_set_backward_warps(0);
        cudaFree(g_hc8);
    }
    /* the bf16 pre-gate output (YP): not beside y_pregate, forward or backward; read by the
     * bf16-input backward only (not without x_bf16; its other conditions are the bf16 inputs'
     * own, refused above) */
    {
        uint16_t *g_ypb = dev_poison16(BL * Di);
        oz = o, oz.y_pregate_bf16 = g_ypb, oz.y_pregate = g_yp;
        bad |= mb_scan_cuda_forward_ex(&az, &oz, g_y, NULL) != MB_EINVAL;
        oz.y_pregate = NULL;
        bad |= mb_scan_cuda_forward_ex(&az, &oz, g_y, NULL) != MB_OK; /* the positive control */
        CK(cudaDeviceSynchronize());
        mb_scan_cuda_set_backward_warps(2);
        oz.y_pregate = g_yp;
        bad |= mb_scan_cuda_backward_ex(&az, &oz, p.d_dy, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL,
                                        NULL) != MB_EINVAL;
        oz.y_pregate = NULL;
        mb_scan_cuda_opts of;
        memset(&of, 0, sizeof of);
        of.y_pregate_bf16 = g_ypb;
        bad |= mb_scan_cuda_backward_ex(&ax, &of, p.d_dy, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL,
                                        NULL) != MB_EINVAL;
        bad |= mb_scan_cuda_backward_ex(&az, &oz, p.d_dy, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL,
                                        NULL) != MB_OK; /* the positive control */
        CK(cudaDeviceSynchronize());
        mb_scan_cuda_set_backward_warps(0);
        cudaFree(g_ypb);
    }
    /* bf16 chunk states: not at a chunk that is no multiple of 32 (forward), nor one the
     * backward re-chunks (128: refused before its re-chunking forward); chunk 64 both ways */
    {
        mb_scan_args a33 = az, a128 = az;
        float *g_hc2 = dev_poison(tc.B * Di * ((tc.L + 31) / 32) * tc.N);
        a33.chunk = 33, a33.h_chunks = g_hc2, a128.chunk = 128, a128.h_chunks = g_hc2;
        oz = o, oz.chunk_states_bf16 = 1;
        bad |= mb_scan_cuda_forward_ex(&a33, &oz, g_y, NULL) != MB_EINVAL;
        bad |= mb_scan_cuda_forward_ex(&a128, &oz, g_y, NULL) != MB_OK; /* (forward: fine) */
        CK(cudaDeviceSynchronize());
        mb_scan_cuda_set_backward_warps(2);
        bad |= mb_scan_cuda_backward_ex(&a128, &oz, p.d_dy, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL,
                                        NULL) != MB_EINVAL;
        mb_scan_args a64 = az;
        a64.h_chunks = g_hc2;
        bad |= mb_scan_cuda_forward_ex(&a64, &oz, g_y, NULL) != MB_OK;
        CK(cudaDeviceSynchronize());
        bad |= mb_scan_cuda_backward_ex(&a64, &oz, p.d_dy, g_y, g_y, g_dA, g_y, g_y, g_dD, NULL,
                                        NULL) != MB_OK;
        CK(cudaDeviceSynchronize());
        mb_scan_cuda_set_backward_warps(0);
        cudaFree(g_hc2);
    }
    cudaFree(g_yp);
    cudaFree(g_dA), cudaFree(g_dD);
    /* what the model asks: the sizes of its workspaces */
    bad |= mb_scan_cuda_bf16in_supported(8, 8192, 2048, 16) != 1;
    bad |= mb_scan_cuda_bf16in_supported(32, 8192, 1024, 16) != 1;
    bad |= mb_scan_cuda_bf16in_supported(8, 8192, 2048, 8) != 0;  /* 2 lanes per channel */
    bad |= mb_scan_cuda_bf16in_supported(8, 8192, 2044, 16) != 0; /* d_inner % 8 */
    bad |= mb_scan_cuda_bf16in_supported(1, 8192, 256, 16) != 0;  /* a small grid: v4 */
    if (bad) g_fail = 1;
    printf("bf16 x / delta / z / dy refusals and sizes: %s\n", bad ? "FAIL" : "ok");
    cudaFree(g16), cudaFree(g_hc), cudaFree(g_y);
    free_problem(&p);
}

static void run_opts(void) {
    const tcase cases[] = {
        {1, 1, 64, 16, 4, 64, 1, 0, 0},    {3, 63, 64, 16, 4, 64, 1, 1, 0},
        {2, 2049, 64, 16, 4, 64, 1, 1, 0}, {1, 8193, 64, 16, 4, 128, 1, 0, 0},
        {2, 1000, 37, 16, 3, 64, 1, 1, 0}, {2, 515, 72, 12, 2, 33, 1, 1, 0},
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    const int kernels[] = {2, 1, 8}; /* v5 pair exchange, v5, v4 8 x 8 */
    for (int k = 0; k < 3; k++) {
        printf("options, backward kernel knob %d:\n", kernels[k]);
        mb_scan_cuda_set_backward_warps(kernels[k]);
        for (int i = 0; i < n; i++)
            run_opts_case(cases[i], 900 + 10 * k + i, (i + k) & 1, 1, 0);
    }
    /* the dense form: states every 8 positions and the pre-gate output from the forward
     * (y_pregate), read by the v5 pair-exchange backward (knob 2, where N is 12 or 16 and the
     * tensors 16-byte aligned; 2 = also checked to be read) and ignored by the others; 3 = the
     * forward's y_pregate misaligned by 4 bytes (its 16-byte stores off; ignored by the
     * backward) */
    const tcase dense[] = {
        {1, 1, 64, 16, 4, 8, 1, 0, 0},    {3, 63, 64, 16, 4, 8, 1, 1, 0},
        {2, 2049, 64, 16, 4, 8, 1, 1, 0}, {1, 8193, 64, 16, 4, 8, 1, 0, 0},
        {2, 1000, 40, 16, 4, 8, 1, 1, 0}, {2, 515, 72, 12, 4, 8, 1, 1, 0},
        {2, 1000, 37, 16, 3, 8, 1, 1, 0}, /* unaligned rows: ignored */
    };
    const int nd = (int)(sizeof dense / sizeof dense[0]);
    for (int k = 0; k < 3; k++) {
        printf("options with y_pregate (dense), backward kernel knob %d:\n", kernels[k]);
        mb_scan_cuda_set_backward_warps(kernels[k]);
        for (int i = 0; i < nd; i++)
            run_opts_case(dense[i], 950 + 10 * k + i, (i + k) & 1, 1, k == 0 && i < 6 ? 2 : 1);
    }
    printf("options with y_pregate misaligned (dense form off):\n");
    mb_scan_cuda_set_backward_warps(2);
    run_opts_case(dense[2], 990, 1, 1, 3);
    run_opts_case(dense[4], 991, 0, 1, 3);
    mb_scan_cuda_set_backward_warps(0);
    printf("options, legacy forward (W=4), fp32 y:\n");
    mb_scan_cuda_set_forward_warps(4);
    run_opts_case(cases[2], 990, 0, 0, 0);
    mb_scan_cuda_set_forward_warps(0);
}

/* y must not depend on the chunk length (bit for bit), nor (beyond rounding) on the number of
 * warps splitting a tile. */
static void run_invariance(void) {
    tcase tc = {2, 2049, 64, 16, 4, 64, 1, 1, 0};
    printf("invariance: B 2 L 2049 Di 64 N 16\n");
    problem p;
    make_problem(&p, tc, 99);
    const int64_t n = tc.B * tc.L * tc.Di;
    float *ref = NULL;
    const int64_t chunks[] = {1, 7, 64, 128, 1000, 2049};
    for (int i = 0; i < 6; i++) {
        float *g_y = dev_poison(n);
        float *g_hc = dev_poison(tc.B * tc.Di * mb_scan_n_chunks(tc.L, chunks[i]) * tc.N);
        mb_scan_args ad = args_of(&p, 1, g_hc, NULL, chunks[i]);
        if (mb_scan_cuda_forward(&ad, g_y, NULL)) g_fail = 1;
        CK(cudaDeviceSynchronize());
        float *y = to_host(g_y, n);
        if (!ref) {
            ref = y;
        } else {
            const int same = memcmp(y, ref, sizeof(float) * (size_t)n) == 0;
            printf("  chunk %5lld: y %s\n", (long long)chunks[i], same ? "identical" : "DIFFERS");
            if (!same) g_fail = 1;
            free(y);
        }
        cudaFree(g_y), cudaFree(g_hc);
    }
    for (int qm = 0; qm <= 1; qm++) {
        /* both lane layouts: the same arithmetic per channel */
        mb_scan_cuda_set_lane_layout(qm);
        float *g_y = dev_poison(n);
        mb_scan_args ad = args_of(&p, 1, NULL, NULL, 64);
        if (mb_scan_cuda_forward(&ad, g_y, NULL)) g_fail = 1;
        CK(cudaDeviceSynchronize());
        float *y = to_host(g_y, n);
        check("fwd", qm ? "lanes qm" : "lanes cm", rel_err_rows(y, ref, tc.B * tc.L, tc.Di, tc.Di));
        printf("  lane layout %d: y %s the default forward's\n", qm,
               memcmp(y, ref, sizeof(float) * (size_t)n) == 0 ? "identical to" : "differs from");
        free(y);
        cudaFree(g_y);
    }
    mb_scan_cuda_set_lane_layout(-1);
    const int warps[] = {1, 2, 4, 8, 16};
    for (int i = 0; i < 5; i++) {
        mb_scan_cuda_set_forward_warps(warps[i]);
        float *g_y = dev_poison(n);
        mb_scan_args ad = args_of(&p, 1, NULL, NULL, 64);
        if (mb_scan_cuda_forward(&ad, g_y, NULL)) g_fail = 1;
        CK(cudaDeviceSynchronize());
        float *y = to_host(g_y, n);
        char name[32];
        snprintf(name, sizeof name, "W=%d", warps[i]);
        check("fwd", name, rel_err_rows(y, ref, tc.B * tc.L, tc.Di, tc.Di));
        free(y);
        cudaFree(g_y);
    }
    mb_scan_cuda_set_forward_warps(0);
    free(ref);
    free_problem(&p);
}

/* A NaN input must surface as NaN outputs (never a silent pass). */
static void run_nan(void) {
    tcase tc = {1, 300, 64, 16, 4, 64, 1, 0, 0};
    printf("nan propagation\n");
    problem p;
    make_problem(&p, tc, 7);
    const int64_t t_bad = 100, c_bad = 5, n = tc.L * tc.Di;
    const float qnan = NAN;
    CK(cudaMemcpy(p.d_xz + t_bad * 2 * tc.Di + c_bad, &qnan, sizeof qnan, cudaMemcpyHostToDevice));
    float *g_y = dev_poison(n), *g_hc = dev_poison(tc.Di * 5 * tc.N);
    float *g_dx = dev_poison(n), *g_dd = dev_poison(n),
          *g_dbc = dev_poison(tc.L * (tc.R + 2 * tc.N));
    float *g_dz = dev_poison(2 * n), *g_dA = dev_poison(tc.Di * tc.N), *g_dD = dev_poison(tc.Di);
    CK(cudaMemset(g_dA, 0, sizeof(float) * (size_t)(tc.Di * tc.N)));
    CK(cudaMemset(g_dD, 0, sizeof(float) * (size_t)tc.Di));
    mb_scan_args ad = args_of(&p, 1, g_hc, NULL, 64);
    if (mb_scan_cuda_forward(&ad, g_y, NULL)) g_fail = 1;
    if (mb_scan_cuda_backward(&ad, p.d_dy, g_dx, g_dd, g_dA, g_dbc + tc.R, g_dbc + tc.R + tc.N,
                              g_dD, g_dz + tc.Di, NULL))
        g_fail = 1;
    CK(cudaDeviceSynchronize());
    float *y = to_host(g_y, n), *dB = to_host(g_dbc, tc.L * (tc.R + 2 * tc.N));
    float *dA = to_host(g_dA, tc.Di * tc.N);
    const int y_nan = isnan(y[t_bad * tc.Di + c_bad]) && isnan(y[(tc.L - 1) * tc.Di + c_bad]);
    const int y_clean =
        !isnan(y[(t_bad - 1) * tc.Di + c_bad]) && !isnan(y[t_bad * tc.Di + c_bad + 1]);
    const int dB_nan = isnan(dB[t_bad * (tc.R + 2 * tc.N) + tc.R]);
    const int dA_nan = isnan(dA[c_bad * tc.N]);
    printf("  y NaN at and after the bad input: %s; y finite elsewhere: %s; dB NaN: %s; "
           "dA_log NaN: %s\n",
           y_nan ? "yes" : "NO", y_clean ? "yes" : "NO", dB_nan ? "yes" : "NO",
           dA_nan ? "yes" : "NO");
    const float one = 1.0f;
    const double e =
        rel_err_rows(y, &one, 1, 1, 1) + rel_err_rows(&y[t_bad * tc.Di + c_bad], &one, 1, 1, 1);
    printf("  comparator on a NaN: %s\n", isinf(e) ? "fails (good)" : "PASSES (bad)");
    if (!y_nan || !y_clean || !dB_nan || !dA_nan || !isinf(e)) g_fail = 1;
    free(y), free(dB), free(dA);
    cudaFree(g_y), cudaFree(g_hc), cudaFree(g_dx), cudaFree(g_dd), cudaFree(g_dbc);
    cudaFree(g_dz), cudaFree(g_dA), cudaFree(g_dD);
    free_problem(&p);
}

int main(void) {
    if (mb_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
    const int64_t Ls[] = {1, 3, 63, 2047, 2048, 2049, 8193};
    uint64_t seed = 1;
    /* the v5 backward with the pair exchange for the main cases (the automatic choice may
     * take v4 for grids this small) */
    printf("backward v5 with the dB/dC pair exchange:\n");
    mb_scan_cuda_set_backward_warps(2);
    for (int li = 0; li < 7; li++)
        for (int64_t B = 1; B <= 3; B += 2) {
            /* chunk: the CPU default (128, rechunked on the GPU) and the GPU's own (64) */
            tcase tc = {B, Ls[li], 64, 16, 4, li % 2 ? 64 : 128, 1, (int)(B == 3), 0};
            run_case(tc, seed++);
        }
    /* N = 4 (one lane per channel), odd sizes, no gate, small and odd chunks */
    tcase extra[] = {
        {3, 2049, 64, 4, 4, 64, 1, 1, 0},  {1, 8193, 64, 4, 0, 128, 0, 0, 0},
        {2, 1000, 40, 16, 3, 7, 1, 1, 0},  {2, 515, 72, 12, 2, 33, 1, 1, 0},
        {1, 777, 64, 8, 4, 1, 0, 1, 0},    {2, 2048, 64, 16, 4, 2048, 1, 1, 0},
        {2, 1000, 37, 16, 3, 64, 1, 1, 0}, /* odd Di: a partial block of channels */
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        run_case(extra[i], 100 + i);
    /* N > 16 (8 lanes per channel): forward only */
    tcase wide[] = {{2, 1000, 64, 32, 4, 64, 1, 1, 1}, {1, 515, 40, 24, 3, 33, 1, 0, 1}};
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        run_case(wide[i], 200 + i);
    run_nan();
    printf("backward v5:\n");
    mb_scan_cuda_set_backward_warps(1);
    for (size_t i = 0; i < 4; i++)
        run_case(extra[i], 500 + i);
    {
        const tcase tc = {3, 2049, 64, 16, 4, 64, 1, 1, 0};
        run_case(tc, 510);
    }
    run_nan();
    printf("state-group-major lanes (forward and v5 backward):\n");
    mb_scan_cuda_set_lane_layout(1);
    for (int xb = 1; xb <= 2; xb++) {
        mb_scan_cuda_set_backward_warps(xb);
        for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
            run_case(extra[i], 700 + i);
        for (int li = 0; li < 7; li += 3) {
            const tcase tc = {3, Ls[li], 64, 16, 4, li % 2 ? 64 : 128, 1, 1, 0};
            run_case(tc, 710 + li);
        }
        run_nan();
    }
    mb_scan_cuda_set_lane_layout(-1);
    printf("backward v5 with the dB/dC pair exchange:\n");
    mb_scan_cuda_set_backward_warps(2);
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        run_case(extra[i], 400 + i);
    for (int li = 2; li < 7; li += 2) {
        const tcase tc = {3, Ls[li], 64, 16, 4, 64, 1, 1, 0};
        run_case(tc, 410 + li);
    }
    run_nan();
    /* the v4 backward variants (8 and 16 warps splitting a chunk in time), then the automatic
     * choice, and the legacy forward feeding the backward */
    const int v4w[] = {16, 8};
    for (int w = 0; w < 2; w++) {
        printf("backward v4 with %d warps x %d positions:\n", v4w[w], 64 / v4w[w]);
        mb_scan_cuda_set_backward_warps(v4w[w]);
        for (size_t i = 0; i < 4; i++)
            run_case(extra[i], 300 + i);
        const tcase tc = {3, 2049, 64, 16, 4, 64, 1, 1, 0};
        run_case(tc, 310);
        run_nan();
    }
    mb_scan_cuda_set_backward_warps(0);
    printf("backward, automatic choice:\n");
    {
        const tcase tc = {2, 1000, 72, 16, 4, 64, 1, 1, 0};
        run_case(tc, 330);
    }
    printf("legacy forward (W=4):\n");
    mb_scan_cuda_set_forward_warps(4);
    {
        const tcase tc = {2, 2049, 64, 16, 4, 64, 1, 1, 0};
        run_case(tc, 320);
    }
    mb_scan_cuda_set_forward_warps(0);
    run_opts();
    run_in16();
    run_invariance();
    printf(g_fail ? "FAILED\n" : "all passed\n");
    return g_fail ? 1 : 0;
}
