/* GPU model (src/cuda/model_cuda.cu) against the CPU model (src/cpu/model.c), fp32 parity mode:
 *   - random tiny models (RMSNorm / LayerNorm x tied / untied) at lengths 1, 3, 63, 2047, 2049
 *     and batch 1 and 3: logits and loss of mb_cuda_forward vs mb_forward, and every gradient
 *     tensor of mb_cuda_backward vs mb_backward, each by max |gpu - cpu| / max |cpu| <= 1e-4
 *     (a NaN / inf on one side only counts as an infinite error); the global gradient norm;
 *     the same with activation recomputation (1e-4), and in bf16 mixed precision with and
 *     without it (logits, loss, norm 2e-2 by the max norm; the whole gradient 2e-2 by the L2
 *     norm, each tensor 0.25 by its L2 norm);
 *     a second backward of one forward doubles the gradients (recompute evicts the top layer);
 *   - the stateful forward (carried conv / SSM states) vs mb_forward_stateful over 3 windows;
 *   - evaluation-mode activations give the same logits as training-mode ones;
 *   - 50 AdamW steps (gradient clipping on) of a tiny model on random periodic bytes on both
 *     devices: every step's loss within 2% relative, and the loss must fall;
 *   - a NaN in a weight gives a NaN loss (never a finite one); misuse returns MB_EINVAL.
 * Exits 77 (ctest SKIP_RETURN_CODE) without a GPU.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cuda/model_cuda.h"
#include "cuda/scan_cuda.h"
#include "mambabyte.h"
extern "C" { /* C headers without their own guards */
#include "cpu/model.h"
#include "train/adamw.h"
}

#define TOL 1e-4
#define BF16_TOL 2e-2
/* bf16 gradients, one tensor by its L2 norm: a wrong, missing or mis-scaled gradient is off by
 * O(1); the bf16 roundings of the operands leave up to ~0.17 on the smallest tensors (dt_proj)
 * at one position (seen on the H200), where nothing averages them out */
#define BF16_TENSOR_TOL 0.25
#define TRAIN_TOL 0.02

/* GPU numerics exercised against the same CPU results */
typedef struct {
    const char *name;
    int bf16, recompute; /* recompute: 0 or MB_CUDA_ACTS_* recomputation (or DENSE_SCAN) flags */
    double tol;
    int unfused; /* MB_CUDA_SCAN_FUSED=0: softplus and bf16 copies by separate kernels */
    int x32;     /* MB_CUDA_XSPLIT=0: the bf16 mode's conv input and gradient in fp32 */
} gpu_mode;
#define RC MB_CUDA_ACTS_RECOMPUTE
#define KEEP (MB_CUDA_ACTS_RECOMPUTE | MB_CUDA_ACTS_KEEP_SCAN)
static const gpu_mode g_modes[] = {
    {"fp32", 0, 0, TOL, 0, 0},
    {"fp32+recompute", 0, RC, TOL, 0, 0},
    {"fp32+rc+keep", 0, KEEP, TOL, 0, 0},
    {"bf16", 1, 0, BF16_TOL, 0, 0},
    {"bf16+recompute", 1, RC, BF16_TOL, 0, 0},
    {"bf16+rc+keep", 1, KEEP, BF16_TOL, 0, 0},
    {"bf16 unfused", 1, 0, BF16_TOL, 1, 0},
    {"fp32 unfused", 0, RC, TOL, 1, 0},
    {"bf16 fp32 conv input", 1, 0, BF16_TOL, 0, 1},
    {"bf16+rc fp32 conv input", 1, RC, BF16_TOL, 0, 1},
};
#define N_MODES 10
/* the dense scan (states every 8 positions and the pre-gate output kept by the forward), on a
 * model whose sizes take it (test_dense): in every layer, and in the first only (DENSE_LAYERS:
 * the second layer's states in the plain form's slots after the dense layer's) */
static const gpu_mode g_dense_modes[] = {
    {"fp32 dense", 0, MB_CUDA_ACTS_DENSE_SCAN, TOL, 0, 0},
    {"bf16 dense", 1, MB_CUDA_ACTS_DENSE_SCAN, BF16_TOL, 0, 0},
    {"fp32 dense 1 layer", 0, MB_CUDA_ACTS_DENSE_SCAN | MB_CUDA_ACTS_DENSE_LAYERS(1), TOL, 0, 0},
    {"bf16 dense 1 layer", 1, MB_CUDA_ACTS_DENSE_SCAN | MB_CUDA_ACTS_DENSE_LAYERS(1), BF16_TOL, 0,
     0},
};

static void tiny_config(mb_config *c, int rms, int tied, int64_t d_model, int64_t n_layer) {
    mb_config_default(c, d_model, n_layer);
    c->rms_norm = rms;
    c->tie_embeddings = tied;
    if (mb_config_finalize(c)) {
        printf("config: %s\n", mb_last_error());
        exit(1);
    }
}

/* mamba_ssm init, then norms moved off (1, 0) so their gradients are exercised */
static void random_model(mb_model *m, const mb_config *c, uint64_t seed) {
    if (mb_model_create(m, c)) {
        printf("model: %s\n", mb_last_error());
        exit(1);
    }
    mb_model_init(m, seed);
    mb_rng r;
    mb_rng_seed(&r, seed ^ 0x9e3779b97f4a7c15ull);
    const int64_t d = c->d_model;
    for (int64_t l = 0; l <= c->n_layer; l++) {
        float *w = l < c->n_layer ? m->w.layers[l].norm_w : m->w.norm_f_w;
        float *b = l < c->n_layer ? m->w.layers[l].norm_b : m->w.norm_f_b;
        for (int64_t j = 0; j < d; j++) {
            w[j] = 1.0f + 0.4f * (mb_rng_float(&r) - 0.5f);
            if (b) b[j] = 0.2f * (mb_rng_float(&r) - 0.5f);
        }
    }
}

static void random_bytes(uint8_t *p, int64_t n, mb_rng *r) {
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)mb_rng_below(r, 256);
}

/* ------------------------------------------------------------------ parity */

/* the bf16 scan inputs (test_in16): 1 = every bf16 workspace of the parity runs must take them
 * (mb_cuda_acts_in16), -1 = not checked; g_expect_z16 the same for bf16 z and dy
 * (mb_cuda_acts_z16) */
static int g_expect_in16 = -1, g_expect_z16 = -1;
static int g_expect_hc16 = 1; /* dense bf16 workspaces: bf16 dense states (mb_cuda_acts_hc16) */
static const gpu_mode g_in16_modes[] = {
    {"bf16 in16", 1, 0, BF16_TOL, 0, 0},
    {"bf16+rc in16", 1, RC, BF16_TOL, 0, 0},
    {"bf16+keep in16", 1, KEEP, BF16_TOL, 0, 0},
    {"bf16 dense in16", 1, MB_CUDA_ACTS_DENSE_SCAN, BF16_TOL, 0, 0},
    /* a dense layer beside one that is not, both keeping the bf16 pre-gate output */
    {"bf16 dense 1 layer in16", 1, MB_CUDA_ACTS_DENSE_SCAN | MB_CUDA_ACTS_DENSE_LAYERS(1), BF16_TOL,
     0, 0},
};

static void parity_case_modes(const mb_model *m, mb_cuda_model *dm, int64_t B, int64_t L,
                              uint64_t seed, const char *name, const gpu_mode *modes, int n_modes) {
    const mb_config *c = &m->cfg;
    const int64_t BL = B * L, n = m->n_params;
    mb_rng r;
    mb_rng_seed(&r, seed);
    uint8_t *x = (uint8_t *)xmalloc((size_t)BL), *t = (uint8_t *)xmalloc((size_t)BL);
    random_bytes(x, BL, &r);
    random_bytes(t, BL, &r);
    float *lc = (float *)xmalloc(sizeof(float) * (size_t)(BL * MB_VOCAB));
    float *lg = (float *)xmalloc(sizeof(float) * (size_t)(BL * MB_VOCAB));
    float *gc = (float *)calloc((size_t)n, sizeof(float));
    float *gg = (float *)xmalloc(sizeof(float) * (size_t)n);
    const float dloss = 1.0f / (float)BL;

    mb_acts *a = mb_acts_create(c, B, L);
    REQUIRE(a != NULL, "mb_acts_create");
    const float loss_c = mb_forward(m, a, x, t, lc);
    mb_backward(m, a, dloss, gc);

    for (int mi = 0; mi < n_modes; mi++) {
        const gpu_mode *md = &modes[mi];
        const double tol = md->tol;
        REQUIRE(mb_cuda_model_set_bf16(dm, md->bf16) == 0, "set_bf16");
        setenv("MB_CUDA_SCAN_FUSED", md->unfused ? "0" : "1", 1); /* read by acts_create */
        setenv("MB_CUDA_XSPLIT", md->x32 ? "0" : "1", 1);
        mb_cuda_acts *da = mb_cuda_acts_create_ex(
            c, B, L, MB_CUDA_ACTS_TRAIN | md->recompute | (md->bf16 ? MB_CUDA_ACTS_BF16 : 0), 0);
        REQUIRE(da != NULL, "mb_cuda_acts_create B=%lld L=%lld", (long long)B, (long long)L);
        if (md->recompute & MB_CUDA_ACTS_DENSE_SCAN) {
            const int64_t nd = MB_CUDA_ACTS_DENSE_LAYERS_OF(md->recompute),
                          want = nd > 0 && nd < c->n_layer ? nd : c->n_layer;
            REQUIRE(mb_cuda_acts_dense(da) == 1 && mb_cuda_acts_dense_layers(da) == want &&
                        mb_cuda_acts_hc16(da) == (md->bf16 && g_expect_hc16),
                    "%s: the workspace takes the dense scan in %lld layers (bf16 states %d)",
                    md->name, (long long)want, md->bf16 && g_expect_hc16);
        }
        const char *ypk = getenv("MB_CUDA_SCAN_YP");
        const int yp_on = !(ypk && !strcmp(ypk, "0"));
        if (g_expect_in16 >= 0 && md->bf16)
            REQUIRE(mb_cuda_acts_in16(da) == g_expect_in16 &&
                        mb_cuda_acts_yp(da) == (g_expect_in16 && yp_on &&
                                                ((md->recompute & MB_CUDA_ACTS_RECOMPUTE) ||
                                                 mb_cuda_acts_dense_layers(da) < c->n_layer)),
                    "%s: bf16 scan inputs %d (and the bf16 pre-gate output kept unless every "
                    "layer is dense)",
                    md->name, g_expect_in16);
        if (g_expect_z16 >= 0 && md->bf16)
            REQUIRE(mb_cuda_acts_z16(da) == g_expect_z16 && mb_cuda_acts_h16(da) == g_expect_z16 &&
                        mb_cuda_acts_ukeep(da) ==
                            (g_expect_z16 && !(md->recompute & MB_CUDA_ACTS_RECOMPUTE)),
                    "%s: bf16 z and dy, bf16 norm inputs, kept norm outputs %d", md->name,
                    g_expect_z16);
        float loss_g = NAN;
        for (int64_t i = 0; i < BL * MB_VOCAB; i++)
            lg[i] = NAN;
        int rc = da ? mb_cuda_zero_grads(dm) : -1;
        if (!rc) rc = mb_cuda_forward(dm, da, x, t, &loss_g, lg);
        REQUIRE(rc == 0, "mb_cuda_forward");
        if (!rc) rc = mb_cuda_backward(dm, da, dloss);
        REQUIRE(rc == 0, "mb_cuda_backward");
        /* with recomputation, the layers whose in_proj output was kept (KEEP_XZ) re-run no
         * in_proj product: the first backward re-runs it in every other layer but the top one,
         * whose activations the forward left in the slots */
        const int64_t nl = c->n_layer, kx = MB_CUDA_ACTS_KEEP_XZ_OF(md->recompute);
        const int64_t kept = md->recompute & MB_CUDA_ACTS_RECOMPUTE ? (kx < nl ? kx : nl) : 0;
        if (!rc)
            REQUIRE(mb_cuda_acts_xz_kept(da) == kept &&
                        mb_cuda_acts_xz_reruns(da) == (md->recompute & MB_CUDA_ACTS_RECOMPUTE
                                                           ? (nl - 1 > kept ? nl - 1 - kept : 0)
                                                           : 0),
                    "%s: in_proj output kept for %lld layers (expected %lld), %lld re-runs",
                    md->name, (long long)mb_cuda_acts_xz_kept(da), (long long)kept,
                    (long long)mb_cuda_acts_xz_reruns(da));
        if (!rc) rc = mb_cuda_grads_download(dm, gg);
        REQUIRE(rc == 0, "mb_cuda_grads_download");

        const double e_loss = fabs((double)loss_g - loss_c) / fabs((double)loss_c);
        const double e_logits = rel_err(lg, lc, BL * MB_VOCAB);
        double worst = 0.0;
        const char *worst_name = "-";
        int bad = 0;
        for (int i = 0; i < m->n_tensors && !rc; i++) {
            const mb_tensor_info *ti = &m->tensors[i];
            /* fp32: max |diff| / max |cpu|; bf16: ||diff||_2 / ||cpu||_2 (the gradients pass
             * through several bf16 roundings, so single elements of small tensors cancel) */
            const double e = md->bf16 ? l2_rel_err(gg + ti->offset, gc + ti->offset, ti->numel)
                                      : rel_err(gg + ti->offset, gc + ti->offset, ti->numel);
            if (!(e <= worst)) {
                worst = e;
                worst_name = ti->name;
            }
            if (!(e <= (md->bf16 ? BF16_TENSOR_TOL : tol))) {
                printf("  FAIL grad %-44s rel err %.2e\n", ti->name, e);
                bad = 1;
            }
        }
        double norm_g = 0.0;
        if (!rc) rc = mb_cuda_grad_norm(dm, &norm_g);
        const double norm_c = mb_grad_norm(gc, n);
        const double e_norm = fabs(norm_g - norm_c) / norm_c;
        /* bf16: the whole gradient vector by its L2 norm within BF16_TOL */
        const double e_all = md->bf16 ? l2_rel_err(gg, gc, n) : 0.0;
        const int ok =
            !rc && e_loss <= tol && e_logits <= tol && e_norm <= tol && e_all <= tol && !bad;
        if (!ok) g_fail = 1;
        printf("%-10s %-14s B=%lld L=%-5lld loss cpu %.6f gpu %.6f (rel %.1e) logits %.1e gradnorm "
               "%.1e worst grad %.1e (%s) all grads %.1e %s\n",
               name, md->name, (long long)B, (long long)L, loss_c, loss_g, e_loss, e_logits, e_norm,
               worst, worst_name, e_all, ok ? "ok" : "FAIL");
        /* a second backward of the same forward doubles every gradient (recompute re-runs the
         * top layer, which the first backward evicted from the one-layer workspace) */
        if (md->recompute && L == 63) {
            float *g2 = (float *)xmalloc(sizeof(float) * (size_t)n);
            int r2 = mb_cuda_backward(dm, da, dloss);
            if (!r2) r2 = mb_cuda_grads_download(dm, g2);
            /* (with recomputation every layer re-runs now, the top one too: in_proj but in the
             * kept ones) */
            const int64_t nl = c->n_layer, kx = mb_cuda_acts_xz_kept(da);
            const int64_t want2 = md->recompute & MB_CUDA_ACTS_RECOMPUTE && nl > 1 ? nl - kx : 0;
            REQUIRE(r2 || mb_cuda_acts_xz_reruns(da) == want2,
                    "%s: second backward: %lld in_proj re-runs, expected %lld", md->name,
                    (long long)mb_cuda_acts_xz_reruns(da), (long long)want2);
            for (int64_t i = 0; i < n; i++)
                g2[i] *= 0.5f;
            /* fp32: max-relative 1e-4; bf16: the L2 norm within 1e-3 (the scan's atomic sums
             * add in a varying order, and a last-bit difference can flip a bf16 rounding
             * downstream: up to 1.2e-3 max-relative seen on the H200, also without any change
             * of slots) */
            const double e2 = r2 ? INFINITY : md->bf16 ? l2_rel_err(g2, gg, n) : rel_err(g2, gg, n);
            printf("  %s: second backward / 2 vs first: rel err %.2e (%s)\n", md->name, e2,
                   md->bf16 ? "L2" : "max");
            REQUIRE(e2 <= (md->bf16 ? 1e-3 : 1e-4),
                    "%s: second backward / 2 vs first: rel err %.2e", md->name, e2);
            free(g2);
        }
        mb_cuda_acts_free(da);
    }
    REQUIRE(mb_cuda_model_set_bf16(dm, 0) == 0, "set_bf16 off");

    /* evaluation-mode workspace: same logits and loss */
    if (L == 63 && B == 3) {
        mb_cuda_acts *ea = mb_cuda_acts_create(c, B, L, 0, 0);
        float le = NAN;
        REQUIRE(ea != NULL, "eval acts");
        int rc = ea ? mb_cuda_forward(dm, ea, x, t, &le, lg) : -1;
        REQUIRE(rc == 0, "eval forward");
        const double e = rel_err(lg, lc, BL * MB_VOCAB);
        REQUIRE(e <= TOL && fabs((double)le - loss_c) <= TOL * loss_c,
                "eval-mode logits rel err %.2e loss %f vs %f", e, le, loss_c);
        REQUIRE(mb_cuda_backward(dm, ea, dloss) == MB_EINVAL, "backward on eval acts refused");
        mb_cuda_acts_free(ea);
        /* a bf16 model refuses fp32 acts */
        mb_cuda_acts *fa = mb_cuda_acts_create(c, B, L, 1, 0);
        REQUIRE(mb_cuda_model_set_bf16(dm, 1) == 0, "set_bf16");
        REQUIRE(fa && mb_cuda_forward(dm, fa, x, t, &le, NULL) == MB_EINVAL,
                "bf16 model with fp32 acts refused");
        REQUIRE(mb_cuda_model_set_bf16(dm, 0) == 0, "set_bf16 off");
        mb_cuda_acts_free(fa);
    }
    mb_acts_free(a);
    free(x);
    free(t);
    free(lc);
    free(lg);
    free(gc);
    free(gg);
}

/* random_model and its GPU copy; -1 (failure counted, nothing left allocated) if the GPU model
 * cannot be created */
static int gpu_random_model(mb_model *m, mb_cuda_model *dm, const mb_config *c, uint64_t seed) {
    random_model(m, c, seed);
    const int rc = mb_cuda_model_create(dm, c, 0);
    REQUIRE(rc == 0, "mb_cuda_model_create");
    if (rc) {
        mb_model_free(m);
        return -1;
    }
    REQUIRE(mb_cuda_model_upload(dm, m) == 0, "upload");
    return 0;
}

static void parity_case(const mb_model *m, mb_cuda_model *dm, int64_t B, int64_t L, uint64_t seed,
                        const char *name) {
    parity_case_modes(m, dm, B, L, seed, name, g_modes, N_MODES);
}

/* The dense scan in the model (d_model 64: dt_rank 4, d_inner 128, d_state 16; the v5 backward
 * forced, as the automatic choice takes v4 for grids this small) against the CPU, at lengths
 * with a partial 8- and 64-position chunk; too short a sequence (L < 8) or the v4 backward
 * leave the workspace without it. */
static void test_dense(void) {
    mb_config c;
    tiny_config(&c, 0, 0, 64, 2);
    mb_model m;
    mb_cuda_model dm;
    if (gpu_random_model(&m, &dm, &c, 1100)) return;
    mb_scan_cuda_set_backward_warps(2);
    const int64_t cases[][2] = {{3, 63}, {2, 200}, {1, 8}};
    for (int i = 0; i < 3; i++)
        parity_case_modes(&m, &dm, cases[i][0], cases[i][1], 500 + i, "ln/dense", g_dense_modes, 4);
    const int fl = MB_CUDA_ACTS_TRAIN | MB_CUDA_ACTS_DENSE_SCAN;
    mb_cuda_acts *a = mb_cuda_acts_create_ex(&c, 2, 7, fl, 0);
    REQUIRE(a && !mb_cuda_acts_dense(a), "L 7: no dense scan");
    mb_cuda_acts_free(a);
    mb_scan_cuda_set_backward_warps(8);
    a = mb_cuda_acts_create_ex(&c, 2, 200, fl, 0);
    REQUIRE(a && !mb_cuda_acts_dense(a), "v4 backward: no dense scan");
    mb_cuda_acts_free(a);
    mb_scan_cuda_set_backward_warps(0);
    mb_cuda_model_free(&dm);
    mb_model_free(&m);
}

/* Recomputation that keeps the in_proj output of the first layers (MB_CUDA_ACTS_KEEP_XZ) on a
 * 4-layer model against the CPU: one layer kept (layers 1-3 share a slot, the top one's left
 * there by the forward), three, all; in bf16 with bf16 x and z (xzb, the v5 backward forced so
 * that the scan reads them), with the fp32 z of the xsplit form and the plain fp32 xz, in
 * fp32; with and without the scan kept. The re-run counts are checked
 * in parity_case_modes; the workspace sizes and the planner (no GPU needed) in
 * test_plan_cuda.c. */
#define XZ MB_CUDA_ACTS_KEEP_XZ
/* bf16 x and z in one bf16 buffer (xzb, the bf16 scan inputs: v5 backward forced) */
static const gpu_mode g_xz_modes[] = {
    {"bf16+rc xz1", 1, RC | XZ(1), BF16_TOL, 0, 0},
    {"bf16+keep xz3", 1, KEEP | XZ(3), BF16_TOL, 0, 0},
    {"bf16+keep xz all", 1, KEEP | XZ(100), BF16_TOL, 0, 0},
    {"fp32+rc xz1", 0, RC | XZ(1), TOL, 0, 0},
    {"fp32+keep xz2", 0, KEEP | XZ(2), TOL, 0, 0},
};
/* fp32 z (MB_CUDA_SCAN_IN16=0): x as bf16 inside the fp32 xz rows (xsplit), and the plain fp32
 * xz (MB_CUDA_XSPLIT=0), with the same without a kept layer beside it */
static const gpu_mode g_xz32_modes[] = {
    {"bf16+rc xz2 xsplit", 1, RC | XZ(2), BF16_TOL, 0, 0},
    {"bf16+rc xsplit", 1, RC, BF16_TOL, 0, 0},
    {"bf16+rc xz2 fp32 xz", 1, RC | XZ(2), BF16_TOL, 0, 1},
    {"bf16+rc fp32 xz", 1, RC, BF16_TOL, 0, 1},
};
static void test_keep_xz(void) {
    mb_config c;
    tiny_config(&c, 0, 0, 256, 4);
    mb_model m;
    mb_cuda_model dm;
    if (gpu_random_model(&m, &dm, &c, 1400)) return;
    mb_scan_cuda_set_backward_warps(2);
    const int64_t cases[][2] = {{2, 200}, {3, 63}};
    g_expect_in16 = 1, g_expect_z16 = 1;
    for (int i = 0; i < 2; i++)
        parity_case_modes(&m, &dm, cases[i][0], cases[i][1], 1410 + i, "ln/keep-xz", g_xz_modes,
                          (int)(sizeof g_xz_modes / sizeof g_xz_modes[0]));
    g_expect_in16 = 0, g_expect_z16 = -1;
    setenv("MB_CUDA_SCAN_IN16", "0", 1);
    for (int i = 0; i < 2; i++)
        parity_case_modes(&m, &dm, cases[i][0], cases[i][1], 1420 + i, "ln/keep-xz z32",
                          g_xz32_modes, (int)(sizeof g_xz32_modes / sizeof g_xz32_modes[0]));
    unsetenv("MB_CUDA_SCAN_IN16");
    unsetenv("MB_CUDA_XSPLIT");
    g_expect_in16 = -1;
    mb_scan_cuda_set_backward_warps(0);
    mb_cuda_model_free(&dm);
    mb_model_free(&m);
}

/* The scan's bf16 inputs in the model (bf16 training: the conv's and the dt projection's bf16
 * outputs, in_proj's bf16 z and out_proj's bf16 input gradient read by the scan, no fp32
 * copies; the norms' bf16 inputs (out_proj's output, in_proj's input gradient); then with fp32
 * z, dy and norm inputs) against the CPU, with and without recomputation,
 * dense; d_model 256 (dt_rank 16: the fused dt projection; d_inner 512, d_state 16) and the v5
 * pair-exchange backward forced (the automatic choice takes v4 for grids this small). Then
 * what leaves a workspace without them, and the stateful forward on such training acts:
 * refused above batch 1, at batch 1 equal to an evaluation workspace's. */
static void test_in16(void) {
    mb_config c;
    tiny_config(&c, 0, 0, 256, 2);
    mb_model m;
    mb_cuda_model dm;
    if (gpu_random_model(&m, &dm, &c, 1300)) return;
    mb_scan_cuda_set_backward_warps(2);
    g_expect_in16 = 1, g_expect_z16 = 1;
    const int64_t cases[][2] = {{2, 200}, {1, 63}, {3, 130}};
    for (int i = 0; i < 3; i++)
        parity_case_modes(&m, &dm, cases[i][0], cases[i][1], 1310 + i, "ln/in16", g_in16_modes, 5);
    /* the gated scan output kept instead of the pre-gate one (MB_CUDA_SCAN_YP=0) */
    setenv("MB_CUDA_SCAN_YP", "0", 1);
    parity_case_modes(&m, &dm, 2, 200, 1314, "ln/in16 no yp", g_in16_modes, 5);
    unsetenv("MB_CUDA_SCAN_YP");
    /* bf16 x and delta with an fp32 z and dy (MB_CUDA_SCAN_Z16=0), fp32 norm inputs
     * (MB_CUDA_NORM_IN16=0), the norm outputs recomputed by the backward (MB_CUDA_KEEP_U=0) */
    setenv("MB_CUDA_SCAN_Z16", "0", 1);
    setenv("MB_CUDA_NORM_IN16", "0", 1);
    setenv("MB_CUDA_KEEP_U", "0", 1);
    setenv("MB_CUDA_DENSE_H16", "0", 1);
    g_expect_hc16 = 0;
    g_expect_z16 = 0;
    parity_case_modes(&m, &dm, 2, 200, 1315, "ln/in16 z32", g_in16_modes, 5);
    unsetenv("MB_CUDA_SCAN_Z16");
    unsetenv("MB_CUDA_NORM_IN16");
    unsetenv("MB_CUDA_KEEP_U");
    unsetenv("MB_CUDA_DENSE_H16");
    g_expect_hc16 = 1;
    g_expect_in16 = -1, g_expect_z16 = -1;
    const int fl = MB_CUDA_ACTS_TRAIN | MB_CUDA_ACTS_BF16;
    setenv("MB_CUDA_SCAN_IN16", "0", 1);
    mb_cuda_acts *a = mb_cuda_acts_create_ex(&c, 2, 64, fl, 0);
    REQUIRE(a && !mb_cuda_acts_in16(a), "MB_CUDA_SCAN_IN16=0: no bf16 scan inputs");
    mb_cuda_acts_free(a);
    unsetenv("MB_CUDA_SCAN_IN16");
    a = mb_cuda_acts_create_ex(&c, 2, 64, MB_CUDA_ACTS_TRAIN, 0);
    REQUIRE(a && !mb_cuda_acts_in16(a), "fp32 training: no bf16 scan inputs");
    mb_cuda_acts_free(a);
    a = mb_cuda_acts_create_ex(&c, 2, 64, MB_CUDA_ACTS_BF16, 0);
    REQUIRE(a && !mb_cuda_acts_in16(a), "evaluation: no bf16 scan inputs");
    mb_cuda_acts_free(a);
    /* the stateful forward: refused on batch-2 in16 training acts, equal at batch 1 */
    REQUIRE(mb_cuda_model_set_bf16(&dm, 1) == 0, "set_bf16");
    const int64_t Di = c.d_inner, N = c.d_state, K = c.d_conv, L = 40;
    float *st = NULL;
    cudaMalloc((void **)&st, sizeof(float) * (size_t)(2 * 2 * Di * (N + K)));
    cudaMemset(st, 0, sizeof(float) * (size_t)(2 * 2 * Di * (N + K)));
    float *ssm = st, *conv = st + 2 * c.n_layer * Di * N;
    uint8_t x[2 * L];
    for (int i = 0; i < 2 * L; i++)
        x[i] = (uint8_t)(37 * i + 11);
    a = mb_cuda_acts_create_ex(&c, 2, L, fl, 0);
    REQUIRE(a && mb_cuda_acts_in16(a) && mb_cuda_acts_z16(a),
            "batch-2 training acts take the bf16 inputs");
    REQUIRE(a && mb_cuda_forward_stateful(&dm, a, conv, ssm, x, NULL, NULL, NULL) == MB_EINVAL,
            "stateful forward on batch-2 in16 training acts refused");
    mb_cuda_acts_free(a);
    float *l1 = (float *)xmalloc(sizeof(float) * (size_t)(L * MB_VOCAB));
    float *l2 = (float *)xmalloc(sizeof(float) * (size_t)(L * MB_VOCAB));
    a = mb_cuda_acts_create_ex(&c, 1, L, fl, 0);
    mb_cuda_acts *e = mb_cuda_acts_create_ex(&c, 1, L, MB_CUDA_ACTS_BF16, 0);
    REQUIRE(a && e && mb_cuda_acts_in16(a) && mb_cuda_acts_z16(a),
            "batch-1 training acts take the bf16 inputs");
    int rc = a && e ? mb_cuda_forward_stateful(&dm, a, conv, ssm, x, NULL, NULL, l1) : -1;
    cudaMemset(st, 0, sizeof(float) * (size_t)(2 * 2 * Di * (N + K)));
    if (!rc) rc = mb_cuda_forward_stateful(&dm, e, conv, ssm, x, NULL, NULL, l2);
    REQUIRE(rc == 0 && rel_err(l1, l2, L * MB_VOCAB) == 0.0,
            "batch-1 stateful forward on in16 training acts equals the evaluation workspace's");
    mb_cuda_acts_free(a);
    /* the same on dense training acts with bf16 states (the v5 knob makes the dense form
     * available at batch 1): their state slots are sized for bf16 states, which the stateful
     * forward must not fill with fp32 ones (mixer_forward refuses that; before 5899490 it
     * wrote them, past the last slot) */
    a = mb_cuda_acts_create_ex(&c, 1, L, fl | MB_CUDA_ACTS_DENSE_SCAN, 0);
    REQUIRE(a && mb_cuda_acts_dense(a) && mb_cuda_acts_hc16(a),
            "batch-1 dense training acts with bf16 states");
    cudaMemset(st, 0, sizeof(float) * (size_t)(2 * 2 * Di * (N + K)));
    rc = a ? mb_cuda_forward_stateful(&dm, a, conv, ssm, x, NULL, NULL, l1) : -1;
    REQUIRE(rc == 0 && rel_err(l1, l2, L * MB_VOCAB) == 0.0,
            "batch-1 stateful forward on dense bf16-state training acts equals the evaluation "
            "workspace's");
    mb_cuda_acts_free(a);
    mb_cuda_acts_free(e);
    free(l1), free(l2);
    cudaFree(st);
    REQUIRE(mb_cuda_model_set_bf16(&dm, 0) == 0, "set_bf16 off");
    mb_scan_cuda_set_backward_warps(0);
    mb_cuda_model_free(&dm);
    mb_model_free(&m);
}

static void test_parity(void) {
    static const int64_t lengths[] = {1, 3, 63, 2047, 2049};
    static const int64_t batches[] = {1, 3};
    for (int rms = 0; rms <= 1; rms++)
        for (int tied = 0; tied <= 1; tied++) {
            mb_config c;
            tiny_config(&c, rms, tied, 32, 2);
            mb_model m;
            mb_cuda_model dm;
            if (gpu_random_model(&m, &dm, &c, 1000 + 2 * rms + tied)) continue;
            char name[32];
            snprintf(name, sizeof name, "%s%s", rms ? "rms" : "ln", tied ? "/tied" : "/untied");
            for (int li = 0; li < 5; li++)
                for (int bi = 0; bi < 2; bi++)
                    parity_case(&m, &dm, batches[bi], lengths[li], 77 + li * 2 + bi, name);
            /* download returns the uploaded parameters bit for bit */
            mb_model back;
            if (mb_model_create(&back, &c) == 0) {
                REQUIRE(mb_cuda_model_download(&dm, &back) == 0, "download");
                REQUIRE(memcmp(back.params, m.params, sizeof(float) * (size_t)m.n_params) == 0,
                        "download differs from upload");
                mb_model_free(&back);
            }
            mb_cuda_model_free(&dm);
            mb_model_free(&m);
        }
}

/* ------------------------------------------------------------------ training */

static void test_training(void) {
    const int64_t B = 4, L = 128, steps = 50, text_len = 1 << 14;
    const float lr = 3e-3f;
    const double clip = 1.0;
    mb_config c;
    tiny_config(&c, 0, 0, 48, 2);
    mb_model m;
    random_model(&m, &c, 4242);
    mb_rng r;
    mb_rng_seed(&r, 99);
    /* random bytes with structure: a random period-29 pattern over 16 symbols, 10% noise */
    uint8_t pattern[29];
    for (int i = 0; i < 29; i++)
        pattern[i] = (uint8_t)(97 + mb_rng_below(&r, 16));
    uint8_t *text = (uint8_t *)xmalloc((size_t)text_len);
    for (int64_t i = 0; i < text_len; i++)
        text[i] = mb_rng_float(&r) < 0.1f ? (uint8_t)mb_rng_below(&r, 256) : pattern[i % 29];

    mb_cuda_model dm;
    int rc = mb_cuda_model_create(&dm, &c, 0);
    REQUIRE(rc == 0, "mb_cuda_model_create");
    if (rc) {
        mb_model_free(&m);
        free(text);
        return;
    }
    REQUIRE(mb_cuda_model_upload(&dm, &m) == 0, "upload");
    mb_adamw opt;
    REQUIRE(mb_adamw_init(&opt, &m, 0.9f, 0.95f, 1e-8f, 0.1f) == 0, "adamw init");
    mb_cuda_adamw_set(&dm, 0.9f, 0.95f, 1e-8f, 0.1f);
    mb_acts *a = mb_acts_create(&c, B, L);
    mb_cuda_acts *da = mb_cuda_acts_create(&c, B, L, 1, 0);
    REQUIRE(a && da, "acts");
    /* the same run in bf16 mixed precision with recomputation */
    mb_cuda_model dm2;
    rc = mb_cuda_model_create(&dm2, &c, 0);
    if (!rc) rc = mb_cuda_model_upload(&dm2, &m);
    if (!rc) rc = mb_cuda_model_set_bf16(&dm2, 1);
    REQUIRE(rc == 0, "bf16 model");
    mb_cuda_adamw_set(&dm2, 0.9f, 0.95f, 1e-8f, 0.1f);
    mb_cuda_acts *da2 = mb_cuda_acts_create_ex(
        &c, B, L, MB_CUDA_ACTS_TRAIN | MB_CUDA_ACTS_RECOMPUTE | MB_CUDA_ACTS_BF16, 0);
    REQUIRE(da2 != NULL, "bf16 acts");
    double worst2 = 0.0;
    float last_b = 0.0f;
    float *grads = (float *)xmalloc(sizeof(float) * (size_t)m.n_params);
    uint8_t *x = (uint8_t *)xmalloc((size_t)(B * L)), *t = (uint8_t *)xmalloc((size_t)(B * L));
    double worst = 0.0;
    float first_c = 0.0f, last_c = 0.0f, last_g = 0.0f;
    for (int64_t s = 0; s < steps && a && da && da2; s++) {
        for (int64_t b = 0; b < B; b++) {
            const int64_t off = (int64_t)mb_rng_below(&r, (uint64_t)(text_len - L - 1));
            memcpy(x + b * L, text + off, (size_t)L);
            memcpy(t + b * L, text + off + 1, (size_t)L);
        }
        const float dloss = 1.0f / (float)(B * L);
        /* CPU step */
        const float lc = mb_forward(&m, a, x, t, NULL);
        memset(grads, 0, sizeof(float) * (size_t)m.n_params);
        mb_backward(&m, a, dloss, grads);
        const double nc = mb_grad_clip(grads, m.n_params, clip);
        mb_adamw_update(&opt, m.params, grads, lr);
        /* GPU step */
        float lg = NAN;
        double ng = NAN;
        rc = mb_cuda_zero_grads(&dm);
        if (!rc) rc = mb_cuda_forward(&dm, da, x, t, &lg, NULL);
        if (!rc) rc = mb_cuda_backward(&dm, da, dloss);
        if (!rc) rc = mb_cuda_grad_clip(&dm, clip, &ng);
        if (!rc) rc = mb_cuda_adamw_update(&dm, lr);
        REQUIRE(rc == 0, "GPU training step %lld", (long long)s);
        if (rc) break;
        float lb = NAN;
        double nb = NAN;
        rc = mb_cuda_zero_grads(&dm2);
        if (!rc) rc = mb_cuda_forward(&dm2, da2, x, t, &lb, NULL);
        if (!rc) rc = mb_cuda_backward(&dm2, da2, dloss);
        if (!rc) rc = mb_cuda_grad_clip(&dm2, clip, &nb);
        if (!rc) rc = mb_cuda_adamw_update(&dm2, lr);
        REQUIRE(rc == 0, "GPU bf16 training step %lld", (long long)s);
        if (rc) break;
        const double e = fabs((double)lg - lc) / fabs((double)lc);
        if (!(e <= worst)) worst = e;
        const double e2 = fabs((double)lb - lc) / fabs((double)lc);
        if (!(e2 <= worst2)) worst2 = e2;
        last_b = lb;
        if (s % 10 == 0 || s == steps - 1)
            printf("  step %2lld loss cpu %.5f gpu %.5f (rel %.1e) bf16+recompute %.5f (rel %.1e) "
                   "grad norm cpu %.5f gpu %.5f bf16 %.5f\n",
                   (long long)s, lc, lg, e, lb, e2, nc, ng, nb);
        if (s == 0) first_c = lc;
        last_c = lc;
        last_g = lg;
    }
    mb_model gm;
    double e_params = INFINITY;
    if (mb_model_create(&gm, &c) == 0) {
        if (mb_cuda_model_download(&dm, &gm) == 0)
            e_params = rel_err(gm.params, m.params, m.n_params);
        mb_model_free(&gm);
    }
    const int ok = worst <= TRAIN_TOL && last_c < 0.8f * first_c && last_g < 0.8f * first_c;
    const int ok2 = worst2 <= TRAIN_TOL && last_b < 0.8f * first_c;
    if (!ok || !ok2) g_fail = 1;
    printf("training: %lld steps, worst loss rel diff %.2e (tol %.0e), loss %.4f -> cpu %.4f gpu "
           "%.4f, final params rel diff %.2e %s\n",
           (long long)steps, worst, TRAIN_TOL, first_c, last_c, last_g, e_params,
           ok ? "ok" : "FAIL");
    printf("training bf16+recompute: worst loss rel diff vs cpu %.2e (tol %.0e), final %.4f %s\n",
           worst2, TRAIN_TOL, last_b, ok2 ? "ok" : "FAIL");
    mb_cuda_acts_free(da2);
    mb_cuda_model_free(&dm2);
    free(x);
    free(t);
    free(grads);
    free(text);
    mb_acts_free(a);
    mb_cuda_acts_free(da);
    mb_adamw_free(&opt);
    mb_cuda_model_free(&dm);
    mb_model_free(&m);
}

/* ------------------------------------------------------------------ NaN and misuse */

static void test_nan_and_errors(void) {
    mb_config c;
    tiny_config(&c, 0, 0, 32, 2);
    mb_model m;
    random_model(&m, &c, 7);
    mb_cuda_model dm;
    if (mb_cuda_model_create(&dm, &c, 0)) {
        REQUIRE(0, "mb_cuda_model_create");
        mb_model_free(&m);
        return;
    }
    const int64_t B = 2, L = 100;
    mb_cuda_acts *da = mb_cuda_acts_create(&c, B, L, 1, 0);
    REQUIRE(da != NULL, "acts");
    uint8_t x[200], t[200];
    mb_rng r;
    mb_rng_seed(&r, 5);
    random_bytes(x, B * L, &r);
    random_bytes(t, B * L, &r);
    float loss = 0.0f;
    /* misuse */
    REQUIRE(mb_cuda_backward(&dm, da, 1.0f) == MB_EINVAL, "backward before forward refused");
    REQUIRE(mb_cuda_forward(&dm, da, NULL, t, &loss, NULL) == MB_EINVAL, "NULL x refused");
    mb_config c2;
    tiny_config(&c2, 0, 0, 64, 2);
    mb_cuda_acts *wrong = mb_cuda_acts_create(&c2, B, L, 1, 0);
    REQUIRE(wrong && mb_cuda_forward(&dm, wrong, x, t, &loss, NULL) == MB_EINVAL,
            "acts of another config refused");
    mb_cuda_acts_free(wrong);
    REQUIRE(mb_cuda_acts_create(&c, 0, L, 1, 0) == NULL, "B = 0 refused");
    /* no targets: loss 0, no backward */
    REQUIRE(mb_cuda_forward(&dm, da, x, NULL, &loss, NULL) == 0 && loss == 0.0f,
            "forward without targets");
    REQUIRE(mb_cuda_backward(&dm, da, 1.0f) == MB_EINVAL, "backward without targets refused");
    /* a NaN in a weight must reach the loss */
    float *spots[3] = {m.w.layers[0].in_proj_w + 5, m.w.layers[1].A_log + 3, m.w.norm_f_w + 1};
    const char *names[3] = {"layers.0.in_proj.weight", "layers.1.A_log", "norm_f.weight"};
    for (int i = 0; i < 3 && da; i++) {
        const float keep = *spots[i];
        *spots[i] = NAN;
        loss = 0.0f;
        int rc = mb_cuda_model_upload(&dm, &m);
        if (!rc) rc = mb_cuda_forward(&dm, da, x, t, &loss, NULL);
        REQUIRE(rc == 0 && isnan(loss), "NaN in %s gives loss %f", names[i], loss);
        printf("NaN in %-24s -> loss %f %s\n", names[i], loss, isnan(loss) ? "ok" : "FAIL");
        *spots[i] = keep;
    }
    /* and finite again once the weight is restored */
    REQUIRE(mb_cuda_model_upload(&dm, &m) == 0 &&
                mb_cuda_forward(&dm, da, x, t, &loss, NULL) == 0 && isfinite(loss),
            "finite loss after restoring the weights");
    mb_cuda_acts_free(da);
    mb_cuda_model_free(&dm);
    mb_model_free(&m);
}

/* ------------------------------------------------------------------ stateful forward */

/* mb_cuda_forward_stateful against mb_forward_stateful: three consecutive windows (5, 63 and 2
 * bytes) of B = 3 sequences from zero states, logits of every window and the carried conv / SSM
 * states after each within TOL (fp32) or BF16_TOL (bf16 model). */
static void test_stateful(int bf16) {
    mb_config c;
    tiny_config(&c, 1, 0, 32, 2);
    mb_model m;
    random_model(&m, &c, 31);
    mb_cuda_model dm;
    if (mb_cuda_model_create(&dm, &c, 0) || mb_cuda_model_upload(&dm, &m) ||
        mb_cuda_model_set_bf16(&dm, bf16)) {
        REQUIRE(0, "stateful: model");
        mb_model_free(&m);
        return;
    }
    const int64_t B = 3, lens[3] = {5, 63, 2}, Di = c.d_inner, N = c.d_state, K = c.d_conv;
    const int64_t conv_n = c.n_layer * B * (K - 1) * Di, ssm_n = c.n_layer * B * Di * N;
    const double tol = bf16 ? BF16_TOL : TOL;
    mb_state hs;
    REQUIRE(mb_state_create(&hs, &c, B) == 0, "mb_state_create");
    float *dconv = NULL, *dssm = NULL;
    cudaMalloc((void **)&dconv, sizeof(float) * (size_t)conv_n);
    cudaMalloc((void **)&dssm, sizeof(float) * (size_t)ssm_n);
    cudaMemset(dconv, 0, sizeof(float) * (size_t)conv_n);
    cudaMemset(dssm, 0, sizeof(float) * (size_t)ssm_n);
    float *hconv = (float *)xmalloc(sizeof(float) * (size_t)conv_n);
    float *hssm = (float *)xmalloc(sizeof(float) * (size_t)ssm_n);
    mb_rng r;
    mb_rng_seed(&r, 3);
    double worst_l = 0.0, worst_s = 0.0;
    for (int w = 0; w < 3; w++) {
        const int64_t L = lens[w], BL = B * L;
        uint8_t *x = (uint8_t *)xmalloc((size_t)BL);
        random_bytes(x, BL, &r);
        float *lc = (float *)xmalloc(sizeof(float) * (size_t)(BL * MB_VOCAB));
        float *lg = (float *)xmalloc(sizeof(float) * (size_t)(BL * MB_VOCAB));
        mb_acts *a = mb_acts_create(&c, B, L);
        mb_forward_stateful(&m, a, &hs, x, NULL, lc);
        mb_cuda_acts *da = mb_cuda_acts_create_ex(&c, B, L, bf16 ? MB_CUDA_ACTS_BF16 : 0, 0);
        int rc = da ? mb_cuda_forward_stateful(&dm, da, dconv, dssm, x, NULL, NULL, lg) : -1;
        REQUIRE(rc == 0, "mb_cuda_forward_stateful window %d", w);
        cudaMemcpy(hconv, dconv, sizeof(float) * (size_t)conv_n, cudaMemcpyDeviceToHost);
        cudaMemcpy(hssm, dssm, sizeof(float) * (size_t)ssm_n, cudaMemcpyDeviceToHost);
        const double el = rel_err(lg, lc, BL * MB_VOCAB);
        const double es = fmax(rel_err(hconv, hs.conv, conv_n), rel_err(hssm, hs.ssm, ssm_n));
        worst_l = fmax(worst_l, el);
        worst_s = fmax(worst_s, es);
        mb_cuda_acts_free(da);
        mb_acts_free(a);
        free(x);
        free(lc);
        free(lg);
    }
    const int ok = worst_l <= tol && worst_s <= tol;
    if (!ok) g_fail = 1;
    printf("stateful forward %s (windows 5, 63, 2 of B=3): logits rel err %.1e, states %.1e %s\n",
           bf16 ? "bf16" : "fp32", worst_l, worst_s, ok ? "ok" : "FAIL");
    cudaFree(dconv);
    cudaFree(dssm);
    free(hconv);
    free(hssm);
    mb_state_free(&hs);
    mb_cuda_model_free(&dm);
    mb_model_free(&m);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (mb_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    test_nan_and_errors();
    test_stateful(0);
    test_stateful(1);
    test_parity();
    test_dense();
    test_in16();
    test_keep_xz();
    test_training();
    printf(g_fail ? "test_model_cuda: FAILED\n" : "test_model_cuda: all passed\n");
    return g_fail ? 1 : 0;
}
