/* Every GPU kernel of the model (src/cuda/{norm,conv1d,softplus,dt_proj,embedding,crossentropy,
 * matmul,bf16,adamw}_cuda.cu) against its CPU reference (the files of src/cpu and
 * src/train/adamw.c) on random inputs, at lengths 1, 3, 63, 2047, 2048, 2049 and 8193 with batch 1
 * and 3 (rows = B*L), with widths that are not multiples of 32 and strided (column-slice) operands.
 * Each output is compared by max |gpu - cpu| / max |cpu| <= 1e-4 (NaN on one side only = infinite
 * error); outputs are poisoned with NaN first, so an unwritten element fails, and accumulated
 * outputs start from random values. Exits 77 (ctest SKIP_RETURN_CODE) without a GPU.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cuda/adamw_cuda.h"
#include "cuda/bf16_cuda.h"
#include "cuda/conv1d_cuda.h"
#include "cuda/crossentropy_cuda.h"
#include "cuda/dt_proj_cuda.h"
#include "cuda/embedding_cuda.h"
#include "cuda/matmul_cuda.h"
#include "cuda/norm_cuda.h"
#include "cuda/scan_cuda.h"
#include "cuda/softplus_cuda.h"
#include "mambabyte.h"
#include "ref_check.h"
extern "C" { /* C headers without their own guards */
#include "cpu/activations.h"
#include "cpu/conv1d.h"
#include "cpu/crossentropy.h"
#include "cpu/matmul.h"
#include "cpu/norm.h"
#include "train/adamw.h"
}

#define TOL 1e-4

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            printf("%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));          \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define OK(call)                                                                                   \
    do {                                                                                           \
        if ((call) != 0) {                                                                         \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, mb_last_error());            \
            g_fail = 1;                                                                            \
        }                                                                                          \
    } while (0)

static mb_rng g_rng;
#define MAX_NAMES 128
static double g_worst[MAX_NAMES];
static const char *g_names[MAX_NAMES];
static int g_nnames = 0;

/* compare a device buffer with the host reference; keep the worst error per kernel name */
static void check(const char *name, const float *dev, const float *ref, int64_t n, int64_t B,
                  int64_t L) {
    float *h = (float *)malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    CK(cudaMemcpy(h, dev, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost));
    const double e = rel_err(h, ref, n);
    free(h);
    int k = 0;
    while (k < g_nnames && strcmp(g_names[k], name))
        k++;
    if (k == g_nnames) {
        if (g_nnames == MAX_NAMES) {
            printf("too many kernel names\n");
            exit(1);
        }
        g_names[g_nnames++] = name;
        g_worst[k] = 0.0;
    }
    if (!(e <= g_worst[k])) g_worst[k] = e;
    if (!(e <= TOL)) {
        g_fail = 1;
        printf("  FAIL %-16s B=%lld L=%lld rel err %.2e\n", name, (long long)B, (long long)L, e);
    }
}

/* a device bf16 copy (uint16_t bits) of n values against an fp32 host reference
 * (bf16_count_far with the fp32 tolerance) */
static void check_bf16(const char *name, const uint16_t *dev, const float *ref, int64_t n,
                       int64_t B, int64_t L) {
    uint16_t *h = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
    CK(cudaMemcpy(h, dev, sizeof(uint16_t) * (size_t)n, cudaMemcpyDeviceToHost));
    const int64_t bad = bf16_count_far(h, ref, 1, n, n, TOL);
    free(h);
    if (bad) {
        g_fail = 1;
        printf("  FAIL %-16s B=%lld L=%lld: %lld of %lld bf16 values off by more than half an ulp "
               "+ TOL\n",
               name, (long long)B, (long long)L, (long long)bad, (long long)n);
    }
}

static uint16_t *poison16(int64_t n) {
    uint16_t *d = NULL;
    CK(cudaMalloc((void **)&d, sizeof(uint16_t) * (size_t)(n > 0 ? n : 1)));
    CK(cudaMemset(d, 0xff, sizeof(uint16_t) * (size_t)(n > 0 ? n : 1)));
    return d;
}

static float *hrand(int64_t n, float lo, float hi) {
    /* (calloc: gcc's -Wmaybe-uninitialized saw the malloc'd rows passed as const when n may be
     * 0) */
    float *p = (float *)calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * mb_rng_float(&g_rng);
    return p;
}
static float *dup(const float *h, int64_t n) {
    float *d = NULL;
    CK(cudaMalloc((void **)&d, sizeof(float) * (size_t)(n > 0 ? n : 1)));
    CK(cudaMemcpy(d, h, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice));
    return d;
}
static float *poison(int64_t n) {
    float *d = NULL;
    CK(cudaMalloc((void **)&d, sizeof(float) * (size_t)(n > 0 ? n : 1)));
    CK(cudaMemset(d, 0xff, sizeof(float) * (size_t)(n > 0 ? n : 1)));
    return d;
}
static float *hcopy(const float *h, int64_t n) {
    float *p = (float *)malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(p, h, sizeof(float) * (size_t)n);
    return p;
}

static uint16_t *bf16_dup(float *h, int64_t rows, int64_t cols, int64_t ld);

/* The bf16-input forms (mb_norm_cuda_forward_bf16in / backward_bf16in): h and the backward's dy
 * rounded to bf16 (copies of the caller's), the CPU reference run on the rounded values; the
 * forward's fp32 residual and bf16 output, the backward's dr (accumulated), its bf16 copy and
 * the parameter gradients (fresh). */
static void test_norm_bf16in(int64_t B, int64_t L, int layer, int64_t d, const float *h0,
                             const float *ri, const float *w, const float *b, const float *g0) {
    const int64_t rows = B * L;
    float *h = hcopy(h0, rows * d), *g = hcopy(g0, rows * d);
    uint16_t *dh16 = bf16_dup(h, rows, d, d), *dg16 = bf16_dup(g, rows, d, d);
    float *ro = hrand(rows * d, 0, 0), *y = hrand(rows * d, 0, 0), *mean = hrand(rows, 0, 0),
          *rstd = hrand(rows, 0, 0);
    mb_norm_forward(ro, y, mean, rstd, h, ri, w, b, rows, d, 1e-5f);
    float *dri = dup(ri, rows * d), *dw = dup(w, d), *db = b ? dup(b, d) : NULL;
    float *dro = poison(rows * d), *dmean = poison(rows), *drstd = poison(rows);
    uint16_t *yb = poison16(rows * d);
    OK(mb_norm_cuda_forward_bf16in(dro, yb, dmean, drstd, dh16, dri, dw, db, rows, d, 1e-5f, NULL));
    check(layer ? "ln_fwd_h16_resid" : "rms_fwd_h16_resid", dro, ro, rows * d, B, L);
    check_bf16(layer ? "ln_fwd_h16_yb" : "rms_fwd_h16_yb", yb, y, rows * d, B, L);
    check(layer ? "ln_fwd_h16_rstd" : "rms_fwd_h16_rstd", drstd, rstd, rows, B, L);
    float *dr = hrand(rows * d, -1, 1), *gw = hrand(d, 0, 0), *gb = layer ? hrand(d, 0, 0) : NULL;
    float *ddr = dup(dr, rows * d), *dgw = dup(gw, d), *dgb = gb ? dup(gb, d) : NULL;
    uint16_t *drb = poison16(rows * d);
    mb_norm_backward(dr, gw, gb, g, ro, mean, rstd, w, rows, d, 1);
    OK(mb_norm_cuda_backward_bf16in(ddr, drb, dgw, dgb, dg16, dro, dmean, drstd, dw, rows, d, 1,
                                    NULL));
    check("norm_bwd_dy16_dr", ddr, dr, rows * d, B, L);
    check_bf16("norm_bwd_dy16_drb", drb, dr, rows * d, B, L);
    check("norm_bwd_dy16_dw", dgw, gw, d, B, L);
    if (layer) check("norm_bwd_dy16_db", dgb, gb, d, B, L);
    float *all[] = {h, g, ro, y, mean, rstd, dr, gw, gb};
    for (float *p : all)
        free(p);
    float *dall[] = {dri, dw, db, dro, dmean, drstd, ddr, dgw, dgb};
    for (float *p : dall)
        cudaFree(p);
    cudaFree(dh16), cudaFree(dg16), cudaFree(yb), cudaFree(drb);
}

/* d = 48: one warp per row, scalar; d % 128 == 0 (<= 1024): rows held in registers as float4,
 * the backward's parameter sums fused (and the bf16-input forms, test_norm_bf16in) */
static void test_norm(int64_t B, int64_t L, int layer, int64_t d) {
    const int64_t rows = B * L;
    float *h = hrand(rows * d, -2, 2), *ri = hrand(rows * d, -2, 2), *w = hrand(d, 0.5f, 1.5f);
    float *b = layer ? hrand(d, -0.5f, 0.5f) : NULL;
    float *ro = hrand(rows * d, 0, 0), *y = hrand(rows * d, 0, 0), *mean = hrand(rows, 0, 0),
          *rstd = hrand(rows, 0, 0);
    mb_norm_forward(ro, y, mean, rstd, h, ri, w, b, rows, d, 1e-5f);
    float *dh = dup(h, rows * d), *dri = dup(ri, rows * d), *dw = dup(w, d);
    float *db = b ? dup(b, d) : NULL;
    float *dro = poison(rows * d), *dy = poison(rows * d), *dmean = poison(rows),
          *drstd = poison(rows);
    OK(mb_norm_cuda_forward(dro, dy, dmean, drstd, dh, dri, dw, db, rows, d, 1e-5f, NULL));
    check(layer ? "ln_fwd_resid" : "rms_fwd_resid", dro, ro, rows * d, B, L);
    check(layer ? "ln_fwd_y" : "rms_fwd_y", dy, y, rows * d, B, L);
    if (layer) check("ln_fwd_mean", dmean, mean, rows, B, L);
    check(layer ? "ln_fwd_rstd" : "rms_fwd_rstd", drstd, rstd, rows, B, L);
    /* apply */
    float *dy2 = poison(rows * d);
    OK(mb_norm_cuda_apply(dy2, dro, dmean, drstd, dw, db, rows, d, NULL));
    check("norm_apply", dy2, y, rows * d, B, L);
    /* bf16 outputs written by the kernels (fp32 outputs off) */
    uint16_t *yb = poison16(rows * d), *yb2 = poison16(rows * d);
    float *dro2 = poison(rows * d);
    OK(mb_norm_cuda_forward_ex(dro2, NULL, yb, dmean, drstd, dh, dri, dw, db, rows, d, 1e-5f,
                               NULL));
    check(layer ? "ln_fwd_ex_resid" : "rms_fwd_ex_resid", dro2, ro, rows * d, B, L);
    check_bf16(layer ? "ln_fwd_ex_yb" : "rms_fwd_ex_yb", yb, y, rows * d, B, L);
    OK(mb_norm_cuda_apply_ex(NULL, yb2, dro, dmean, drstd, dw, db, rows, d, NULL));
    check_bf16("norm_apply_ex_yb", yb2, y, rows * d, B, L);
    cudaFree(yb);
    cudaFree(yb2);
    cudaFree(dro2);
    /* backward, accumulating into random dr / dw / db */
    float *g = hrand(rows * d, -1, 1), *dr = hrand(rows * d, -1, 1), *gw = hrand(d, -1, 1);
    float *gb = layer ? hrand(d, -1, 1) : NULL;
    float *ddr = dup(dr, rows * d), *dgw = dup(gw, d), *dgb = gb ? dup(gb, d) : NULL,
          *dg = dup(g, rows * d);
    float *ddr2 = dup(dr, rows * d);
    uint16_t *drb = poison16(rows * d);
    mb_norm_backward(dr, gw, gb, g, ro, mean, rstd, w, rows, d, 1);
    OK(mb_norm_cuda_backward(ddr, dgw, dgb, dg, dro, dmean, drstd, dw, rows, d, 1, NULL));
    check("norm_bwd_dr", ddr, dr, rows * d, B, L);
    check("norm_bwd_dw", dgw, gw, d, B, L);
    if (layer) check("norm_bwd_db", dgb, gb, d, B, L);
    /* with the bf16 copy of dr (parameter gradients accumulate a second time: not checked) */
    OK(mb_norm_cuda_backward_ex(ddr2, drb, dgw, dgb, dg, dro, dmean, drstd, dw, rows, d, 1, NULL));
    check("norm_bwd_ex_dr", ddr2, dr, rows * d, B, L);
    check_bf16("norm_bwd_ex_drb", drb, dr, rows * d, B, L);
    cudaFree(ddr2);
    cudaFree(drb);
    if (d % 128 == 0)
        test_norm_bf16in(B, L, layer, d, h, ri, w, b, g);
    else if (mb_norm_cuda_forward_bf16in(dro, (uint16_t *)dy, dmean, drstd, (uint16_t *)dh, dri, dw,
                                         db, rows, d, 1e-5f, NULL) != MB_EINVAL) {
        g_fail = 1; /* the bf16-input forms take only the row-in-registers kernels */
        printf("  FAIL norm bf16in accepted d %lld\n", (long long)d);
    }
    float *all[] = {h, ri, w, b, ro, y, mean, rstd, g, dr, gw, gb};
    for (float *p : all)
        free(p);
    float *dall[] = {dh, dri, dw, db, dro, dy, dmean, drstd, dy2, ddr, dgw, dgb, dg};
    for (float *p : dall)
        cudaFree(p);
}

static uint16_t *bf16_dup(float *h, int64_t rows, int64_t cols, int64_t ld);

/* bf16 dx rows of stride 2 Di (the model's dxz) against a reference of stride Di: values within
 * half an ulp + TOL, and the other Di columns of each row untouched (still the 0xffff poison) */
static void check_dx_rows(const char *name, const uint16_t *dev, const float *ref, int64_t rows,
                          int64_t Di, int64_t B, int64_t L) {
    uint16_t *h = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(rows * 2 * Di));
    CK(cudaMemcpy(h, dev, sizeof(uint16_t) * (size_t)(rows * 2 * Di), cudaMemcpyDeviceToHost));
    int64_t far = 0, touched = 0;
    for (int64_t r = 0; r < rows; r++) {
        far += bf16_count_far(h + r * 2 * Di, ref + r * Di, 1, Di, Di, TOL);
        for (int64_t c = Di; c < 2 * Di; c++)
            touched += h[r * 2 * Di + c] != 0xffff;
    }
    free(h);
    if (far || touched) {
        g_fail = 1;
        printf("  FAIL %-16s B=%lld L=%lld Di=%lld: %lld values far, %lld written outside the "
               "row's Di columns\n",
               name, (long long)B, (long long)L, (long long)Di, (long long)far, (long long)touched);
    }
}

/* The bf16-input conv (mixed-precision training): x as bf16 rows of stride 4 Di (the model's
 * layout), dout bf16; references on the same bf16-rounded inputs in fp32 (so TOL holds; the
 * bf16 outputs within half an ulp + TOL). K > 8 must be refused. xz (rows, 2Di) and g (rows, Di)
 * are the fp32 test's inputs, w / b its weights and dw / db their device copies. */
static void test_conv_bf16in(int64_t B, int64_t L, int64_t Di, int64_t K, const float *xz,
                             const float *g, const float *w, const float *b, const float *dw,
                             const float *db) {
    const int64_t rows = B * L, xs = 4 * Di;
    float *x4 = hrand(rows * xs, 0, 0), *gr = hcopy(g, rows * Di);
    for (int64_t r = 0; r < rows; r++)
        memcpy(x4 + r * xs, xz + r * 2 * Di, sizeof(float) * (size_t)Di);
    uint16_t *dx4 = bf16_dup(x4, rows, Di, xs), *dgr = bf16_dup(gr, rows, Di, Di);
    float *dout = poison(rows * Di);
    uint16_t *dout16 = poison16(rows * Di), *ddx16 = poison16(rows * 2 * Di); /* stride 2 Di */
    float *gw = hrand(Di * K, 0, 0), *gb = hrand(Di, 0, 0);
    float *dgw = dup(gw, Di * K), *dgb = dup(gb, Di);
    const int rf = mb_conv1d_cuda_forward_bf16in(dout, dout16, dx4, xs, dw, db, B, L, Di, K, NULL);
    /* the output gradient in two bf16 parts: g rounded, and a second part of its own */
    float *g2 = hrand(rows * Di, -0.5f, 0.5f);
    uint16_t *dg2 = bf16_dup(g2, rows, Di, Di);
    const int rb = mb_conv1d_cuda_backward_bf16in(ddx16, 2 * Di, dgw, dgb, dgr, dg2, dx4, xs, dw,
                                                  db, B, L, Di, K, NULL);
    if (K > 8) {
        if (rf != MB_EINVAL || rb != MB_EINVAL) {
            printf("  FAIL conv bf16 inputs at K %lld not refused (%d, %d)\n", (long long)K, rf,
                   rb);
            g_fail = 1;
        }
    } else {
        OK(rf);
        OK(rb);
        float *out = hrand(rows * Di, 0, 0), *dx = hrand(rows * Di, 0, 0);
        mb_conv1d_forward(out, x4, xs, w, b, NULL, B, L, Di, K);
        check("conv_fwd_bf16in", dout, out, rows * Di, B, L);
        check_bf16("conv_fwd_bf16in_16", dout16, out, rows * Di, B, L);
        /* the bf16 output alone (out NULL: the training path whose scan reads bf16 x) */
        uint16_t *o16 = poison16(rows * Di);
        OK(mb_conv1d_cuda_forward_bf16in(NULL, o16, dx4, xs, dw, db, B, L, Di, K, NULL));
        check_bf16("conv_fwd_bf16in_16only", o16, out, rows * Di, B, L);
        cudaFree(o16);
        for (int64_t i = 0; i < rows * Di; i++)
            g2[i] += gr[i];
        mb_conv1d_backward(dx, Di, gw, gb, g2, x4, xs, w, b, B, L, Di, K);
        check_dx_rows("conv_bwd_bf16in_dx", ddx16, dx, rows, Di, B, L);
        check("conv_bwd_bf16in_dw", dgw, gw, Di * K, B, L);
        check("conv_bwd_bf16in_db", dgb, gb, Di, B, L);
        /* dout2 NULL: the gradient is dout alone (dw / db keep accumulating) */
        OK(mb_conv1d_cuda_backward_bf16in(ddx16, 2 * Di, dgw, dgb, dgr, NULL, dx4, xs, dw, db, B, L,
                                          Di, K, NULL));
        mb_conv1d_backward(dx, Di, gw, gb, gr, x4, xs, w, b, B, L, Di, K);
        check_dx_rows("conv_bwd_bf16in_dx1", ddx16, dx, rows, Di, B, L);
        check("conv_bwd_bf16in_dw1", dgw, gw, Di * K, B, L);
        check("conv_bwd_bf16in_db1", dgb, gb, Di, B, L);
        free(out);
        free(dx);
    }
    free(x4), free(gr), free(g2), free(gw), free(gb);
    cudaFree(dx4), cudaFree(dgr), cudaFree(dg2), cudaFree(dout), cudaFree(dout16), cudaFree(ddx16);
    cudaFree(dgw), cudaFree(dgb);
}

/* Di = 80: 4 channels per thread (16-byte accesses); 78, 77: one; K > 8: the per-element
 * kernels. The bf16-input forms (test_conv_bf16in): the forward as the fp32 one (4 channels when
 * Di % 4 == 0, else one), the backward 2 channels for even Di, else one */
static void test_conv(int64_t B, int64_t L, int64_t Di, int64_t K = 4) {
    const int64_t xs = 2 * Di, rows = B * L;
    float *xz = hrand(rows * xs, -2, 2), *w = hrand(Di * K, -0.5f, 0.5f),
          *b = hrand(Di, -0.5f, 0.5f);
    float *out = hrand(rows * Di, 0, 0);
    mb_conv1d_forward(out, xz, xs, w, b, NULL, B, L, Di, K);
    float *dxz = dup(xz, rows * xs), *dw = dup(w, Di * K), *db = dup(b, Di),
          *dout = poison(rows * Di);
    OK(mb_conv1d_cuda_forward(dout, dxz, xs, dw, db, B, L, Di, K, NULL));
    check("conv_fwd", dout, out, rows * Di, B, L);
    float *g = hrand(rows * Di, -1, 1), *gw = hrand(Di * K, -1, 1), *gb = hrand(Di, -1, 1);
    float *dx = hrand(rows * xs, 0, 0);
    float *dg = dup(g, rows * Di), *dgw = dup(gw, Di * K), *dgb = dup(gb, Di),
          *ddx = poison(rows * xs);
    mb_conv1d_backward(dx, xs, gw, gb, g, xz, xs, w, b, B, L, Di, K);
    OK(mb_conv1d_cuda_backward(ddx, xs, dgw, dgb, dg, dxz, xs, dw, db, B, L, Di, K, NULL));
    /* only the Di columns of each dx row are written */
    float *hx = (float *)malloc(sizeof(float) * (size_t)(rows * xs));
    CK(cudaMemcpy(hx, ddx, sizeof(float) * (size_t)(rows * xs), cudaMemcpyDeviceToHost));
    float *gx = (float *)malloc(sizeof(float) * (size_t)(rows * Di)),
          *cx = (float *)malloc(sizeof(float) * (size_t)(rows * Di));
    for (int64_t r = 0; r < rows; r++) {
        memcpy(gx + r * Di, hx + r * xs, sizeof(float) * (size_t)Di);
        memcpy(cx + r * Di, dx + r * xs, sizeof(float) * (size_t)Di);
    }
    float *dgx = dup(gx, rows * Di);
    check("conv_bwd_dx", dgx, cx, rows * Di, B, L);
    check("conv_bwd_dw", dgw, gw, Di * K, B, L);
    check("conv_bwd_db", dgb, gb, Di, B, L);
    /* bf16 dx only (dx NULL: the mixed-precision backward), contiguous rows; dw and db keep
     * accumulating (their references get the same gradient once more) */
    {
        uint16_t *dxh = poison16(rows * Di);
        float *dg2 = dup(g, rows * Di); /* (K > 8 overwrites its dout) */
        OK(mb_conv1d_cuda_backward_ex(NULL, dxh, Di, dgw, dgb, dg2, dxz, xs, dw, db, B, L, Di, K,
                                      NULL));
        mb_conv1d_backward(dx, xs, gw, gb, g, xz, xs, w, b, B, L, Di, K);
        check_bf16("conv_bwd_ex_dx_bf16", dxh, cx, rows * Di, B, L);
        check("conv_bwd_ex_dw", dgw, gw, Di * K, B, L);
        check("conv_bwd_ex_db", dgb, gb, Di, B, L);
        if (mb_conv1d_cuda_backward_ex(NULL, NULL, Di, dgw, dgb, dg, dxz, xs, dw, db, B, L, Di, K,
                                       NULL) == MB_OK) {
            printf("FAIL conv_bwd_ex with neither dx nor dx_bf16 accepted\n");
            g_fail = 1;
        }
        cudaFree(dxh);
        cudaFree(dg2);
    }
    test_conv_bf16in(B, L, Di, K, xz, g, w, b, dw, db);
    float *all[] = {xz, w, b, out, g, gw, gb, dx, hx, gx, cx};
    for (float *p : all)
        free(p);
    float *dall[] = {dxz, dw, db, dout, dg, dgw, dgb, ddx, dgx};
    for (float *p : dall)
        cudaFree(p);
}

/* n = 80: the 4-column kernel; 78: the scalar one */
static void test_softplus(int64_t B, int64_t L, int64_t n) {
    const int64_t rows = B * L;
    float *pre = hrand(rows * n, -30, 30), *bias = hrand(n, -5, 5);
    float *delta = hcopy(pre, rows * n);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < n; j++)
            delta[i * n + j] = mb_softplusf(pre[i * n + j] + bias[j]);
    float *dd = dup(pre, rows * n), *db = dup(bias, n);
    OK(mb_softplus_bias_cuda_forward(dd, db, rows, n, NULL));
    check("softplus_fwd", dd, delta, rows * n, B, L);
    float *g = hrand(rows * n, -1, 1), *gb = hrand(n, -1, 1);
    float *dg = dup(g, rows * n), *dgb = dup(gb, n), *ddelta = dup(delta, rows * n);
    for (int64_t i = 0; i < rows * n; i++)
        g[i] *= mb_softplus_grad_from_outputf(delta[i]);
    mb_bias_backward(gb, g, n, rows, n);
    OK(mb_softplus_bias_cuda_backward(dg, dgb, ddelta, rows, n, NULL));
    check("softplus_bwd", dg, g, rows * n, B, L);
    check("softplus_bwd_db", dgb, gb, n, B, L);
    /* bf16 result only: the fp32 gradient stays the incoming one */
    float *g_in = hrand(rows * n, -1, 1), *dg2 = dup(g_in, rows * n), *dgb3 = dup(gb, n);
    float *gb3 = hcopy(gb, n), *want = hcopy(g_in, rows * n);
    for (int64_t i = 0; i < rows * n; i++)
        want[i] *= mb_softplus_grad_from_outputf(delta[i]);
    mb_bias_backward(gb3, want, n, rows, n);
    uint16_t *dgh = poison16(rows * n);
    OK(mb_softplus_bias_cuda_backward_ex(dg2, dgh, dgb3, ddelta, rows, n, NULL));
    check("softplus_bwd_ex_in", dg2, g_in, rows * n, B, L);
    check_bf16("softplus_bwd_ex_b", dgh, want, rows * n, B, L);
    check("softplus_bwd_ex_db", dgb3, gb3, n, B, L);
    free(g_in);
    free(gb3);
    free(want);
    cudaFree(dg2);
    cudaFree(dgb3);
    cudaFree(dgh);
    /* generic bias gradient over a strided column slice */
    float *gb2 = hrand(n - 3, -1, 1), *dgb2 = dup(gb2, n - 3);
    mb_bias_backward(gb2, g + 3, n, rows, n - 3);
    OK(mb_bias_cuda_backward(dgb2, dg + 3, n, rows, n - 3, NULL));
    check("bias_bwd", dgb2, gb2, n - 3, B, L);
    float *all[] = {pre, bias, delta, g, gb, gb2};
    for (float *p : all)
        free(p);
    float *dall[] = {dd, db, dg, dgb, ddelta, dgb2};
    for (float *p : dall)
        cudaFree(p);
}

/* the gather and its scatter-add at width d (48: 16-byte copies, one partial column slice of the
 * backward; 512: full slices; 37: scalar copies) */
static void test_embedding(int64_t B, int64_t L, int64_t d, const uint8_t *x, const uint8_t *dx) {
    const int64_t rows = B * L;
    float *emb = hrand(256 * d, -1, 1), *out = hrand(rows * d, 0, 0);
    for (int64_t i = 0; i < rows; i++)
        memcpy(out + i * d, emb + x[i] * d, sizeof(float) * (size_t)d);
    float *demb = dup(emb, 256 * d), *dout = poison(rows * d);
    OK(mb_embedding_cuda_forward(dout, dx, demb, rows, d, NULL));
    check("embedding_fwd", dout, out, rows * d, B, L);
    float *g = hrand(rows * d, -1, 1), *ge = hrand(256 * d, -1, 1);
    float *dg = dup(g, rows * d), *dge = dup(ge, 256 * d);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < d; j++)
            ge[x[i] * d + j] += g[i * d + j];
    OK(mb_embedding_cuda_backward(dge, dx, dg, rows, d, NULL));
    check("embedding_bwd", dge, ge, 256 * d, B, L);
    float *all[] = {emb, out, g, ge};
    for (float *p : all)
        free(p);
    float *dall[] = {demb, dout, dg, dge};
    for (float *p : dall)
        cudaFree(p);
}

static void test_embedding_ce(int64_t B, int64_t L) {
    const int64_t rows = B * L;
    uint8_t *x = (uint8_t *)malloc((size_t)rows);
    for (int64_t i = 0; i < rows; i++)
        x[i] = (uint8_t)mb_rng_below(&g_rng, i % 7 == 0 ? 256 : 5); /* repeated rows too */
    uint8_t *dx = NULL;
    CK(cudaMalloc((void **)&dx, (size_t)rows));
    CK(cudaMemcpy(dx, x, (size_t)rows, cudaMemcpyHostToDevice));
    for (int64_t d : {48, 512, 37})
        test_embedding(B, L, d, x, dx);
    /* fused classifier */
    float *logits = hrand(rows * 256, -8, 8), *losses = hrand(rows, 0, 0),
          *dl = hrand(rows * 256, 0, 0);
    mb_crossentropy_forward(losses, logits, x, rows);
    const float dloss = 1.0f / (float)rows;
    mb_crossentropy_backward(dl, logits, x, rows, dloss);
    float *dlogits = dup(logits, rows * 256), *dlosses = poison(rows), *ddl = poison(rows * 256);
    OK(mb_crossentropy_cuda(dlosses, ddl, dlogits, dx, rows, dloss, NULL));
    check("ce_losses", dlosses, losses, rows, B, L);
    check("ce_dlogits", ddl, dl, rows * 256, B, L);
    OK(mb_crossentropy_cuda(NULL, dlogits, dlogits, dx, rows, dloss, NULL)); /* in place */
    check("ce_dlogits_inplace", dlogits, dl, rows * 256, B, L);
    /* float64 sum of the losses */
    double *scr = NULL, s = 0.0, ref = 0.0;
    CK(cudaMalloc((void **)&scr, sizeof(double) * MB_CUDA_REDUCE_SCRATCH));
    OK(mb_reduce_sum_cuda(scr + MB_CUDA_REDUCE_SCRATCH - 1, scr, dlosses, rows, 0, NULL));
    CK(cudaMemcpy(&s, scr + MB_CUDA_REDUCE_SCRATCH - 1, sizeof s, cudaMemcpyDeviceToHost));
    float *hl = (float *)malloc(sizeof(float) * (size_t)rows);
    CK(cudaMemcpy(hl, dlosses, sizeof(float) * (size_t)rows, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < rows; i++)
        ref += hl[i]; /* the GPU's own losses: only the reduction is under test */
    free(hl);
    if (!(fabs(s - ref) <= 1e-12 * fabs(ref))) {
        g_fail = 1;
        printf("  FAIL reduce_sum %.9g vs %.9g\n", s, ref);
    }
    free(x);
    float *all[] = {logits, losses, dl};
    for (float *p : all)
        free(p);
    float *dall[] = {dlogits, dlosses, ddl};
    for (float *p : dall)
        cudaFree(p);
    cudaFree(dx);
    cudaFree(scr);
}

static void test_matmul(void *cb, int64_t B, int64_t L) {
    const int64_t rows = B * L, n_in = 40, n_out = 70, ldx = 50, ldy = 75;
    float *x = hrand(rows * ldx, -1, 1), *W = hrand(n_out * n_in, -1, 1),
          *y = hrand(rows * ldy, -1, 1);
    float *dX = dup(x, rows * ldx), *dW = dup(W, n_out * n_in), *dY = dup(y, rows * ldy);
    for (int acc = 0; acc <= 1; acc++) {
        mb_matmul_forward(y, ldy, x, ldx, W, rows, n_in, n_out, acc);
        OK(mb_matmul_cuda_forward(cb, dY, ldy, dX, ldx, dW, rows, n_in, n_out, acc));
        check("matmul_fwd", dY, y, rows * ldy, B, L);
        mb_matmul_backward_input(x, ldx, y, ldy, W, rows, n_in, n_out, acc);
        OK(mb_matmul_cuda_backward_input(cb, dX, ldx, dY, ldy, dW, rows, n_in, n_out, acc));
        check("matmul_bwd_in", dX, x, rows * ldx, B, L);
    }
    float *gW = hrand(n_out * n_in, -1, 1), *dgW = dup(gW, n_out * n_in);
    mb_matmul_backward_weight(gW, y, ldy, x, ldx, rows, n_in, n_out);
    OK(mb_matmul_cuda_backward_weight(cb, dgW, dY, ldy, dX, ldx, rows, n_in, n_out));
    CK(cudaDeviceSynchronize());
    check("matmul_bwd_w", dgW, gW, n_out * n_in, B, L);
    float *all[] = {x, W, y, gW};
    for (float *p : all)
        free(p);
    float *dall[] = {dX, dW, dY, dgW};
    for (float *p : dall)
        cudaFree(p);
}

/* round to the nearest-even bf16, as a float (the host twin of __float2bfloat16_rn) */
static float bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return f; /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* device bf16 copy of host h (rows, cols; ld) through mb_bf16_from_f32_cuda; h is rounded in
 * place to the bf16 values, and the device bits are checked against the host rounding. */
static uint16_t *bf16_dup(float *h, int64_t rows, int64_t cols, int64_t ld) {
    const int64_t n = rows * ld;
    float *d = dup(h, n);
    uint16_t *b = NULL;
    CK(cudaMalloc((void **)&b, sizeof(uint16_t) * (size_t)(n > 0 ? n : 1)));
    CK(cudaMemset(b, 0, sizeof(uint16_t) * (size_t)(n > 0 ? n : 1)));
    OK(mb_bf16_from_f32_cuda(b, ld, d, ld, rows, cols, NULL));
    uint16_t *hb = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
    CK(cudaMemcpy(hb, b, sizeof(uint16_t) * (size_t)n, cudaMemcpyDeviceToHost));
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float *v = h + r * ld + c;
            *v = bf16_round(*v);
            uint32_t u;
            memcpy(&u, v, 4);
            if ((uint16_t)(u >> 16) != hb[r * ld + c]) bad++;
        }
    if (bad) {
        g_fail = 1;
        printf("  FAIL bf16_from_f32: %lld of %lld values differ from round-to-nearest-even\n",
               (long long)bad, (long long)(rows * cols));
    }
    free(hb);
    cudaFree(d);
    return b;
}

/* The dt projection with bias and softplus fused (dt_proj_cuda.h) against a float64 product of
 * the same bf16-rounded operands, then the CPU's bias + softplus (threshold 20: a share of the
 * pre-activations lies above it). x is the dt part of a wider (rows, R + 32) bf16 buffer, as the
 * x_proj output's copy; w sits 16-byte aligned or one element off (the parameter buffer's
 * placement); Di odd takes the scalar stores. Every form of the kernel is run against the same
 * reference: the row-tile form (bf16 output) at its automatic tiling and at 1, 2 and 3 column
 * tiles per block (blocks starting mid-row, a last group shorter than the others), and the
 * first form (the fp32 output's, and bf16 with the knob). Di 130: even but not a multiple of 8
 * (the row pieces stored element by element). */
static void test_dt_proj(int64_t B, int64_t L, int64_t R, int64_t Di, int w_off) {
    const int64_t rows = B * L, ldx = R + 32;
    float *x = hrand(rows * ldx, -1, 1), *W = hrand(Di * R, -0.5f, 0.5f), *bias = hrand(Di, -8, 24);
    uint16_t *bx = bf16_dup(x, rows, R, ldx), *bW = bf16_dup(W, Di, R, R);
    uint16_t *bWo = NULL;
    CK(cudaMalloc((void **)&bWo, sizeof(uint16_t) * (size_t)(Di * R + 1)));
    CK(cudaMemcpy(bWo + w_off, bW, sizeof(uint16_t) * (size_t)(Di * R), cudaMemcpyDeviceToDevice));
    float *ref = (float *)malloc(sizeof(float) * (size_t)(rows * Di));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < Di; c++) {
            double acc = 0.0;
            for (int64_t k = 0; k < R; k++)
                acc += (double)x[r * ldx + k] * (double)W[c * R + k];
            ref[r * Di + c] = mb_softplusf((float)acc + bias[c]);
        }
    float *db = dup(bias, Di), *hd = (float *)malloc(sizeof(float) * (size_t)(rows * Di));
    static const int forms[][2] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}}; /* variant, tiles */
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
        mb_dt_proj_cuda_set_variant(forms[f][0], forms[f][1]);
        /* (check keeps the name's pointer: static strings) */
        static const char *names[2][5] = {
            {"dt_proj_softplus", "dt_proj_softplus t1", "dt_proj_softplus t2",
             "dt_proj_softplus t3", "dt_proj_softplus first"},
            {"dt_proj_softplus_w1", "dt_proj_softplus_w1 t1", "dt_proj_softplus_w1 t2",
             "dt_proj_softplus_w1 t3", "dt_proj_softplus_w1 first"}};
        const char *name = names[w_off != 0][f];
        float *dd = poison(rows * Di);
        OK(mb_dt_proj_softplus_cuda(dd, bx, ldx, bWo + w_off, db, rows, R, Di, NULL));
        check(name, dd, ref, rows * Di, B, L);
        /* the bf16 output (the training path whose scan reads bf16 delta): the fp32 one untouched
         */
        uint16_t *dd16 = poison16(rows * Di);
        CK(cudaMemset(dd, 0x7f, sizeof(float) * (size_t)(rows * Di)));
        OK(mb_dt_proj_softplus_cuda_ex(dd, dd16, bx, ldx, bWo + w_off, db, rows, R, Di, NULL));
        check_bf16(name, dd16, ref, rows * Di, B, L); /* (named by the fp32 form's name) */
        CK(cudaMemcpy(hd, dd, sizeof(float) * (size_t)(rows * Di), cudaMemcpyDeviceToHost));
        int64_t touched = 0;
        for (int64_t i = 0; i < rows * Di; i++) {
            uint32_t u;
            memcpy(&u, hd + i, 4);
            touched += u != 0x7f7f7f7fu;
        }
        if (touched) {
            g_fail = 1;
            printf("  FAIL %s (bf16 output): %lld fp32 values written\n", name, (long long)touched);
        }
        cudaFree(dd), cudaFree(dd16);
    }
    mb_dt_proj_cuda_set_variant(0, 0);
    free(x), free(W), free(bias), free(ref), free(hd);
    cudaFree(bx), cudaFree(bW), cudaFree(bWo), cudaFree(db);
}

/* bf16 products through cuBLASLt (fp32 accumulate) vs the fp32 CPU products of the same
 * bf16-rounded operands: both sum exact products in fp32, so TOL holds. Shapes: an aligned
 * one (the cuBLASLt path) and an odd-strided one (may take the cublasGemmEx fallback). */
static void test_matmul_bf16(void *lt, int64_t B, int64_t L) {
    static const int64_t shapes[2][4] = {{64, 96, 64, 96}, {40, 70, 50, 75}};
    for (int si = 0; si < 2; si++) {
        const int64_t rows = B * L, n_in = shapes[si][0], n_out = shapes[si][1];
        const int64_t ldx = shapes[si][2], ldy = shapes[si][3];
        float *x = hrand(rows * ldx, -1, 1), *W = hrand(n_out * n_in, -1, 1),
              *dyh = hrand(rows * ldy, -1, 1);
        uint16_t *bx = bf16_dup(x, rows, n_in, ldx), *bW = bf16_dup(W, n_out, n_in, n_in);
        uint16_t *bdy = bf16_dup(dyh, rows, n_out, ldy);
        for (int acc = 0; acc <= 1; acc++) {
            float *y = hrand(rows * ldy, -1, 1), *dY = dup(y, rows * ldy);
            mb_matmul_forward(y, ldy, x, ldx, W, rows, n_in, n_out, acc);
            OK(mb_matmul_bf16_forward(lt, dY, ldy, bx, ldx, bW, rows, n_in, n_out, acc));
            CK(cudaDeviceSynchronize());
            check(si ? "bf16_fwd_odd" : "bf16_fwd", dY, y, rows * ldy, B, L);
            float *dx = hrand(rows * ldx, -1, 1), *dDX = dup(dx, rows * ldx);
            mb_matmul_backward_input(dx, ldx, dyh, ldy, W, rows, n_in, n_out, acc);
            OK(mb_matmul_bf16_backward_input(lt, dDX, ldx, bdy, ldy, bW, rows, n_in, n_out, acc));
            CK(cudaDeviceSynchronize());
            check(si ? "bf16_bwd_in_odd" : "bf16_bwd_in", dDX, dx, rows * ldx, B, L);
            free(y);
            free(dx);
            cudaFree(dY);
            cudaFree(dDX);
            if (acc) continue;
            /* bf16 outputs (the _out16 forms, overwriting): the product rounded once, the
             * columns past n_out (ldy > n_out) untouched */
            float *y2 = hrand(rows * ldy, -1, 1), *dx2 = hrand(rows * ldx, -1, 1);
            uint16_t *dY16 = bf16_dup(y2, rows, ldy, ldy), *dDX16 = bf16_dup(dx2, rows, ldx, ldx);
            mb_matmul_forward(y2, ldy, x, ldx, W, rows, n_in, n_out, 0);
            OK(mb_matmul_bf16_forward_out16(lt, dY16, ldy, bx, ldx, bW, rows, n_in, n_out));
            mb_matmul_backward_input(dx2, ldx, dyh, ldy, W, rows, n_in, n_out, 0);
            OK(mb_matmul_bf16_backward_input_out16(lt, dDX16, ldx, bdy, ldy, bW, rows, n_in,
                                                   n_out));
            CK(cudaDeviceSynchronize());
            check_bf16(si ? "bf16_fwd_out16_odd" : "bf16_fwd_out16", dY16, y2, rows * ldy, B, L);
            check_bf16(si ? "bf16_bwd_in_out16_odd" : "bf16_bwd_in_out16", dDX16, dx2, rows * ldx,
                       B, L);
            free(y2);
            free(dx2);
            cudaFree(dY16);
            cudaFree(dDX16);
        }

        float *gW = hrand(n_out * n_in, -1, 1), *dgW = dup(gW, n_out * n_in);
        mb_matmul_backward_weight(gW, dyh, ldy, x, ldx, rows, n_in, n_out);
        OK(mb_matmul_bf16_backward_weight(lt, dgW, bdy, ldy, bx, ldx, rows, n_in, n_out));
        CK(cudaDeviceSynchronize());
        check(si ? "bf16_bwd_w_odd" : "bf16_bwd_w", dgW, gW, n_out * n_in, B, L);
        free(x);
        free(W);
        free(dyh);
        free(gW);
        cudaFree(bx);
        cudaFree(bW);
        cudaFree(bdy);
        cudaFree(dgW);
    }
}

/* bf16 products of all-ones operands: every output is exactly the length of the sum (fp32
 * holds these integers exactly), so a product that drops terms (e.g. a split-K tail) fails
 * however small the loss. K = rows for the weight gradient, n_in for the forward. */
static void test_bf16_ones(void *lt, int64_t rows) {
    const int64_t n_in = 64, n_out = 96;
    float *x = (float *)malloc(sizeof(float) * (size_t)(rows * n_in));
    float *dy = (float *)malloc(sizeof(float) * (size_t)(rows * n_out));
    float *W = (float *)malloc(sizeof(float) * (size_t)(n_out * n_in));
    for (int64_t i = 0; i < rows * n_in; i++)
        x[i] = 1.0f;
    for (int64_t i = 0; i < rows * n_out; i++)
        dy[i] = 1.0f;
    for (int64_t i = 0; i < n_out * n_in; i++)
        W[i] = 1.0f;
    uint16_t *bx = bf16_dup(x, rows, n_in, n_in), *bdy = bf16_dup(dy, rows, n_out, n_out);
    uint16_t *bW = bf16_dup(W, n_out, n_in, n_in);
    float *dgW = poison(n_out * n_in), *dY = poison(rows * n_out);
    CK(cudaMemset(dgW, 0, sizeof(float) * (size_t)(n_out * n_in)));
    OK(mb_matmul_bf16_backward_weight(lt, dgW, bdy, n_out, bx, n_in, rows, n_in, n_out));
    OK(mb_matmul_bf16_forward(lt, dY, n_out, bx, n_in, bW, rows, n_in, n_out, 0));
    const int64_t nh = rows * n_out > n_out * n_in ? rows * n_out : n_out * n_in;
    float *h = (float *)malloc(sizeof(float) * (size_t)nh);
    CK(cudaMemcpy(h, dgW, sizeof(float) * (size_t)(n_out * n_in), cudaMemcpyDeviceToHost));
    int64_t bad = 0;
    for (int64_t i = 0; i < n_out * n_in; i++)
        bad += h[i] != (float)rows;
    CK(cudaMemcpy(h, dY, sizeof(float) * (size_t)(rows * n_out), cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < rows * n_out; i++)
        bad += h[i] != (float)n_in;
    if (bad) {
        g_fail = 1;
        printf("  FAIL bf16 all-ones products, K = %lld: %lld outputs are not the exact sum\n",
               (long long)rows, (long long)bad);
    }
    free(x);
    free(dy);
    free(W);
    free(h);
    cudaFree(bx);
    cudaFree(bdy);
    cudaFree(bW);
    cudaFree(dgW);
    cudaFree(dY);
}

static void test_adamw(void) {
    mb_config c;
    mb_config_default(&c, 48, 2);
    mb_model m;
    if (mb_model_create(&m, &c)) exit(1);
    mb_model_init(&m, 3);
    const int64_t n = m.n_params;
    mb_adamw o;
    if (mb_adamw_init(&o, &m, 0.9f, 0.95f, 1e-8f, 0.1f)) exit(1);
    uint8_t *ddec = NULL;
    CK(cudaMalloc((void **)&ddec, (size_t)n));
    CK(cudaMemcpy(ddec, o.decay, (size_t)n, cudaMemcpyHostToDevice));
    float *dp = dup(m.params, n), *dm = dup(o.m, n), *dv = dup(o.v, n);
    float *g = hrand(n, -1, 1), *dg = dup(g, n);
    double *scr = NULL;
    CK(cudaMalloc((void **)&scr, sizeof(double) * MB_CUDA_REDUCE_SCRATCH));
    for (int t = 1; t <= 5; t++) {
        for (int64_t i = 0; i < n; i++)
            g[i] = 2.0f * mb_rng_float(&g_rng) - 1.0f;
        CK(cudaMemcpy(dg, g, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice));
        mb_adamw_update(&o, m.params, g, 1e-2f);
        OK(mb_adamw_cuda_update(dp, dg, dm, dv, ddec, n, t, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, NULL));
    }
    check("adamw_params", dp, m.params, n, 1, 5);
    check("adamw_m", dm, o.m, n, 1, 5);
    check("adamw_v", dv, o.v, n, 1, 5);
    double s = 0.0;
    OK(mb_reduce_sum_cuda(scr + MB_CUDA_REDUCE_SCRATCH - 1, scr, dg, n, 1, NULL));
    CK(cudaMemcpy(&s, scr + MB_CUDA_REDUCE_SCRATCH - 1, sizeof s, cudaMemcpyDeviceToHost));
    const double ref = mb_grad_norm(g, n);
    if (!(fabs(sqrt(s) - ref) <= 1e-9 * ref)) {
        g_fail = 1;
        printf("  FAIL grad norm %.12g vs %.12g\n", sqrt(s), ref);
    }
    mb_grad_clip(g, n, 0.5);
    OK(mb_scale_cuda(dg, n, (float)(0.5 / (ref + 1e-6)), NULL));
    check("grad_clip", dg, g, n, 1, 5);
    cudaFree(ddec);
    cudaFree(dp);
    cudaFree(dm);
    cudaFree(dv);
    cudaFree(dg);
    cudaFree(scr);
    free(g);
    mb_adamw_free(&o);
    mb_model_free(&m);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (mb_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    mb_rng_seed(&g_rng, 12345);
    void *cb = NULL;
    if (mb_cublas_create(&cb, NULL, 0)) {
        printf("cuBLAS: %s\n", mb_last_error());
        return 1;
    }
    void *lt = NULL;
    if (mb_cublaslt_create(&lt, NULL)) {
        printf("cuBLASLt: %s\n", mb_last_error());
        return 1;
    }
    static const int64_t lengths[] = {1, 3, 63, 2047, 2048, 2049, 8193};
    for (int li = 0; li < 7; li++)
        for (int64_t B = 1; B <= 3; B += 2) {
            const int64_t L = lengths[li];
            const int64_t dv = L > 4096 ? 384 : 1024;
            for (int ln = 0; ln <= 1; ln++) {
                test_norm(B, L, ln, 48);
                test_norm(B, L, ln, 256);
                test_norm(B, L, ln, dv);
                /* d 512 to 896: the row-in-registers backward at NV 4 (medium's d_model) to 7
                 * (dv above: NV 8, 353m's), then the form that re-reads the row
                 * (MB_CUDA_NORM_BWD_REG=0) at d 512 and 1024, and at 768 with the old limit */
                if (L == 63 || L == 2049) {
                    test_norm(B, L, ln, 512);
                    test_norm(B, L, ln, 640);
                    test_norm(B, L, ln, 768);
                    test_norm(B, L, ln, 896);
                    setenv("MB_CUDA_NORM_BWD_REG", "0", 1);
                    test_norm(B, L, ln, 512);
                    test_norm(B, L, ln, 1024);
                    setenv("MB_CUDA_NORM_BWD_REG", "4", 1); /* the old limit: 768 re-reads */
                    test_norm(B, L, ln, 768);
                    unsetenv("MB_CUDA_NORM_BWD_REG");
                }
            }
            test_conv(B, L, 80);
            test_conv(B, L, 78);
            test_conv(B, L, 80, 10);
            test_conv(B, L, 77, 3); /* odd d_inner: the bf16 inputs' one-channel kernels */
            /* the bf16 ring walks at other tap counts (steps of K positions that do not divide
             * the 128-position tile; K 1 to 8): forward and backward at Di 80, the
             * backward alone at Di 78 (two channels per thread, the forward's one-channel
             * tiled kernel) */
            for (int64_t K = 1; K <= 8; K++)
                if (K != 4) test_conv(B, L, 80, K);
            test_conv(B, L, 78, 5);
            if (L == 63 || L == 2049) { /* the tiled kernels the ring walks replaced (a knob) */
                setenv("MB_CUDA_CONV_RING", "0", 1);
                test_conv(B, L, 80);
                unsetenv("MB_CUDA_CONV_RING");
            }
            /* the ring walks' tile lengths (by default the forward takes 64 on these small
             * grids, the backward 128): each forced, at K 4 and 3 */
            if (L >= 2047) {
                static const char *ts[] = {"32", "64", "128"};
                for (int ti = 0; ti < 3; ti++) {
                    setenv("MB_CUDA_CONV_T", ts[ti], 1);
                    test_conv(B, L, 80);
                    test_conv(B, L, 80, 3);
                    unsetenv("MB_CUDA_CONV_T");
                }
            }
            test_softplus(B, L, 80);
            test_softplus(B, L, 78);
            { /* every dt_rank the kernel takes (16 .. 128 in steps of 16) over the lengths */
                static const int64_t rs[] = {16, 32, 48, 64, 80, 96, 112, 128};
                test_dt_proj(B, L, rs[li % 8], 136, (int)(B == 3));
                test_dt_proj(B, L, rs[(li + 2) % 8], 77, (int)(B == 1));
                test_dt_proj(B, L, rs[(li + 4) % 8], 392, (int)(B == 3 && (li & 1)));
                test_dt_proj(B, L, rs[(li + 6) % 8], 130, (int)(B == 1 && (li & 1)));
            }
            test_embedding_ce(B, L);
            test_matmul(cb, B, L);
            test_matmul_bf16(lt, B, L);
            test_bf16_ones(lt, B * L);
        }
    /* the shapes where split-K dropped the tail, and training-sized ones */
    static const int64_t ks[] = {6147, 6141, 24579, 65536, 65536 + 8, 262144 - 3};
    for (int i = 0; i < 6; i++)
        test_bf16_ones(lt, ks[i]);
    { /* tuned plans (MB_CUDA_GEMM_TUNE, on in training): every candidate is timed on the
       * operands first, the accumulating ones (beta 1, every weight gradient) on a scratch D;
       * the results must be those of the untuned products, accumulated once into D */
        void *lt_tuned = NULL;
        if (mb_cublaslt_create(&lt_tuned, NULL)) {
            printf("cuBLASLt: %s\n", mb_last_error());
            return 1;
        }
        mb_cublaslt_set_tune(lt_tuned, 1);
        const int before = g_fail;
        for (int64_t B = 1; B <= 3; B += 2) {
            test_matmul_bf16(lt_tuned, B, 63);
            test_matmul_bf16(lt_tuned, B, 2049);
        }
        for (int i = 0; i < 6; i++)
            test_bf16_ones(lt_tuned, ks[i]);
        mb_cublaslt_destroy(lt_tuned);
        printf("tuned cuBLASLt plans (accumulating ones included): %s\n",
               g_fail == before ? "ok" : "FAIL");
    }
    test_adamw();
    { /* a dt_rank the fused dt projection does not take is refused, naming it */
        float *d = poison(64);
        uint16_t *b = poison16(64 * 40);
        const int rc = mb_dt_proj_softplus_cuda(d, b, 40, b, d, 1, 24, 64, NULL);
        const int ok = rc == MB_EINVAL && strstr(mb_last_error(), "dt_rank 24") &&
                       !mb_dt_proj_softplus_supported(24, 40) &&
                       mb_dt_proj_softplus_supported(32, 64);
        printf("dt_proj_softplus refuses dt_rank 24: %s\n", ok ? "ok" : "FAIL");
        if (!ok) g_fail = 1;
        cudaFree(d), cudaFree(b);
    }
    mb_cublas_destroy(cb);
    mb_cublaslt_destroy(lt);
    CK(cudaDeviceSynchronize());
    for (int k = 0; k < g_nnames; k++)
        printf("%-20s worst rel err %.2e %s\n", g_names[k], g_worst[k],
               g_worst[k] <= TOL ? "ok" : "FAIL");
    printf(g_fail ? "test_kernels_cuda: FAILED\n" : "test_kernels_cuda: all passed\n");
    return g_fail ? 1 : 0;
}
