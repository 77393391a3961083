/* The GPU training workspace's sizes and the activation planner (src/cuda/model_cuda.cu:
 * mb_cuda_acts_bytes_ex, mb_cuda_acts_plan), which are host arithmetic: no GPU is needed, so
 * this runs on CI. The scan's backward is forced to its v5 form (mb_scan_cuda_set_backward_warps
 * 2), so the workspace forms that depend on it (bf16 x and z, the dense scan) do not depend on a
 * device's multiprocessor count.
 *   - KEEP_XZ(k) adds one slot per kept layer (bf16 x and z, the x_proj output in fp32 and its
 *     bf16 copy) up to n_layer - 1, none after; it is ignored without recomputation;
 *   - the planner: no recomputation when everything fits (dense scan when that fits too);
 *     else recomputation keeping the scan when it fits, then as many in_proj outputs as fit
 *     (each budget between two counts gives the lower one); the scan not kept but in_proj
 *     outputs kept when only those fit; nothing fitting: the smallest plan, fits 0; recompute 1
 *     and 0 forced; the MB_CUDA_KEEP_XZ knob read only when asked (a number forces the count,
 *     anything else leaves the automatic choice); a 1-layer model;
 *   - DENSE_LAYERS(k): the dense scan in the first k layers adds each one's extra bytes (with
 *     the bf16 pre-gate output kept, and with MB_CUDA_SCAN_YP=0 the fp32 one); the planner
 *     takes as many dense layers as fit beside no recomputation, all of them as DENSE_SCAN
 *     alone; the MB_CUDA_DENSE_LAYERS and MB_CUDA_DENSE_SCAN knobs. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "cuda/model_cuda.h"
#include "cuda/scan_cuda.h"
#include "mambabyte.h"

#define RC MB_CUDA_ACTS_RECOMPUTE
#define KEEP (MB_CUDA_ACTS_RECOMPUTE | MB_CUDA_ACTS_KEEP_SCAN)
#define XZ MB_CUDA_ACTS_KEEP_XZ
#define XZ_OF MB_CUDA_ACTS_KEEP_XZ_OF

static void config(mb_config *c, int64_t d_model, int64_t n_layer) {
    mb_config_default(c, d_model, n_layer);
    if (mb_config_finalize(c)) {
        printf("config: %s\n", mb_last_error());
        exit(1);
    }
}

static int plan(const mb_config *c, int64_t B, int64_t L, int recompute, double budget,
                int env_knobs, int *fits) {
    int f = -1;
    const int rc = mb_cuda_acts_plan(c, B, L, MB_CUDA_ACTS_TRAIN | MB_CUDA_ACTS_BF16, recompute,
                                     budget, env_knobs, &f, fits);
    REQUIRE(rc == 0, "mb_cuda_acts_plan");
    return f;
}

static void test_sizes_and_plans(void) {
    mb_config c;
    config(&c, 256, 4); /* d_inner 512, dt_rank 16, d_state 16 */
    const int64_t B = 2, L = 200, P = c.dt_rank + 2 * c.d_state;
    const int tb = MB_CUDA_ACTS_TRAIN | MB_CUDA_ACTS_BF16;
    /* one kept layer: x and z bf16 (B L 2Di), dbc fp32 and bf16 (B L P), each a multiple of 256
     * bytes at these sizes (the carve rounds every buffer up to 256) */
    const int64_t slot = B * L * (2 * c.d_inner * 2 + P * 6);
    int64_t b[7];
    for (int k = 0; k < 7; k++)
        b[k] = mb_cuda_acts_bytes_ex(&c, B, L, tb | KEEP | XZ(k), 0);
    for (int k = 1; k < 7; k++) {
        const int64_t want = k < 4 ? slot : 0; /* (from n_layer - 1 on every layer has a slot) */
        REQUIRE(b[k] - b[k - 1] == want, "KEEP_XZ(%d) adds %lld bytes, expected %lld", k,
                (long long)(b[k] - b[k - 1]), (long long)want);
    }
    REQUIRE(mb_cuda_acts_bytes_ex(&c, B, L, tb | XZ(3), 0) ==
                mb_cuda_acts_bytes_ex(&c, B, L, tb, 0),
            "KEEP_XZ without recomputation ignored");
    /* fp32 training: the plain fp32 xz (B L 2Di floats) and dbc */
    const int64_t slot32 = B * L * (2 * c.d_inner * 4 + P * 4);
    REQUIRE(mb_cuda_acts_bytes_ex(&c, B, L, MB_CUDA_ACTS_TRAIN | RC | XZ(1), 0) -
                    mb_cuda_acts_bytes_ex(&c, B, L, MB_CUDA_ACTS_TRAIN | RC, 0) ==
                slot32,
            "fp32: one kept layer adds %lld bytes", (long long)slot32);

    const int64_t full = mb_cuda_acts_bytes_ex(&c, B, L, tb, 0);
    const int64_t dense = mb_cuda_acts_bytes_ex(&c, B, L, tb | MB_CUDA_ACTS_DENSE_SCAN, 0);
    const int64_t rc0 = mb_cuda_acts_bytes_ex(&c, B, L, tb | RC, 0);
    REQUIRE(dense > full && full > b[6] && b[0] > rc0,
            "workspace sizes ordered: %lld %lld %lld %lld", (long long)dense, (long long)full,
            (long long)b[0], (long long)rc0);
    int fits = -1, f;
    f = plan(&c, B, L, -1, 1e18, 0, &fits);
    REQUIRE(fits == 1 && f == (tb | MB_CUDA_ACTS_DENSE_SCAN),
            "unlimited: dense, no recomputation (%#x)", f);
    f = plan(&c, B, L, -1, (double)full, 0, &fits);
    REQUIRE(fits == 1 && f == tb, "budget = the full workspace: no recomputation, no dense (%#x)",
            f);
    f = plan(&c, B, L, 1, 1e18, 0, &fits);
    REQUIRE(fits == 1 && f == (tb | KEEP | XZ(4)),
            "recompute on, unlimited: scan and every layer kept (%#x)", f);
    for (int k = 0; k < 4; k++) {
        /* between k and k + 1 kept layers: k (3 and 4 cost the same: 4) */
        const double budget = (double)b[k] + 0.5 * (double)slot;
        const int want = k < 3 ? k : 4;
        f = plan(&c, B, L, -1, budget, 0, &fits);
        REQUIRE(fits == 1 && f == (tb | KEEP | XZ(want)), "budget %.0f: %d layers kept (%#x)",
                budget, want, f);
        f = plan(&c, B, L, -1, (double)b[k], 0, &fits);
        REQUIRE(fits == 1 && XZ_OF(f) == want, "budget = %d layers exactly (%#x)", want, f);
    }
    /* the scan's states do not fit, one in_proj output does */
    const int64_t rc1 = mb_cuda_acts_bytes_ex(&c, B, L, tb | RC | XZ(1), 0);
    REQUIRE(rc1 < b[0], "one kept layer costs less than the scan's states");
    f = plan(&c, B, L, -1, (double)rc1, 0, &fits);
    REQUIRE(fits == 1 && f == (tb | RC | XZ(1)), "only in_proj outputs fit: 1 kept, no scan (%#x)",
            f);
    f = plan(&c, B, L, -1, (double)rc0 - 1.0, 0, &fits);
    REQUIRE(fits == 0 && f == (tb | RC), "under the smallest plan: recomputation, fits 0 (%#x)", f);
    f = plan(&c, B, L, 0, (double)rc0, 0, &fits);
    REQUIRE(fits == 0 && f == tb, "recompute off: none, even when it does not fit (%#x)", f);
    /* the knob */
    setenv("MB_CUDA_KEEP_XZ", "2", 1);
    f = plan(&c, B, L, 1, 1e18, 1, &fits);
    REQUIRE(XZ_OF(f) == 2, "MB_CUDA_KEEP_XZ=2 forces 2 layers (%#x)", f);
    f = plan(&c, B, L, 1, 1e18, 0, &fits);
    REQUIRE(XZ_OF(f) == 4, "the knob read only with env_knobs (%#x)", f);
    setenv("MB_CUDA_KEEP_XZ", "abc", 1);
    f = plan(&c, B, L, 1, (double)b[1], 1, &fits);
    REQUIRE(XZ_OF(f) == 1 && fits == 1, "MB_CUDA_KEEP_XZ=abc: the automatic choice (%#x)", f);
    setenv("MB_CUDA_KEEP_XZ", "99", 1);
    f = plan(&c, B, L, 1, 1.0, 1, &fits);
    REQUIRE(XZ_OF(f) == 4 && fits == 0, "MB_CUDA_KEEP_XZ=99: capped at n_layer, not fitting (%#x)",
            f);
    unsetenv("MB_CUDA_KEEP_XZ");
    /* bad sizes */
    REQUIRE(mb_cuda_acts_plan(&c, 0, L, tb, -1, 1e18, 0, &f, &fits) == MB_EINVAL, "B 0 refused");
    REQUIRE(mb_cuda_acts_plan(&c, B, L, tb, -1, 1e18, 0, NULL, &fits) == MB_EINVAL,
            "flags NULL refused");

    /* the dense scan in the first k layers (DENSE_LAYERS): each adds its bf16 states every 8
     * positions, less the plain form's states every 64 (bf16 too at these sizes: cs16; its
     * pre-gate output is the bf16 one every layer keeps, the bf16-input scan's YP form); every
     * layer dense takes the fp32 pre-gate output instead, and no shared slot of the gated one
     * (B L Di bf16) */
    const int64_t D = MB_CUDA_ACTS_DENSE_SCAN, Di = c.d_inner, N = c.d_state;
    const int64_t plain16 = B * Di * ((L + 63) / 64) * N * 2;
    const int64_t extra = B * Di * ((L + 7) / 8) * N * 2 - plain16;
    const int64_t pre32 = B * L * Di * 4, ygate = B * L * Di * 2;
    int64_t db[5];
    for (int k = 0; k < 5; k++)
        db[k] = mb_cuda_acts_bytes_ex(&c, B, L, k ? tb | D | MB_CUDA_ACTS_DENSE_LAYERS(k) : tb, 0);
    for (int k = 1; k < 5; k++) {
        const int64_t want = k < 4 ? extra : extra + 4 * pre32 - ygate;
        REQUIRE(db[k] - db[k - 1] == want, "DENSE_LAYERS(%d) adds %lld bytes, expected %lld", k,
                (long long)(db[k] - db[k - 1]), (long long)want);
    }
    /* without the YP form (MB_CUDA_SCAN_YP=0) a dense layer also keeps the fp32 pre-gate
     * output, and no layer the shared slot of the gated one */
    setenv("MB_CUDA_SCAN_YP", "0", 1);
    const int64_t full0 = mb_cuda_acts_bytes_ex(&c, B, L, tb, 0);
    const int64_t d1 = mb_cuda_acts_bytes_ex(&c, B, L, tb | D | MB_CUDA_ACTS_DENSE_LAYERS(1), 0);
    unsetenv("MB_CUDA_SCAN_YP");
    REQUIRE(full - full0 == ygate && d1 - full0 == extra + pre32,
            "MB_CUDA_SCAN_YP=0: %lld bytes less, a dense layer %lld more",
            (long long)(full - full0), (long long)(d1 - full0));
    /* MB_CUDA_STATES_H16=0: the plain form's states in fp32, twice the bytes */
    setenv("MB_CUDA_STATES_H16", "0", 1);
    const int64_t full32 = mb_cuda_acts_bytes_ex(&c, B, L, tb, 0);
    const int64_t keep32 = mb_cuda_acts_bytes_ex(&c, B, L, tb | KEEP, 0);
    unsetenv("MB_CUDA_STATES_H16");
    REQUIRE(full32 - full == 4 * plain16 && keep32 - b[0] == 4 * plain16,
            "MB_CUDA_STATES_H16=0: %lld and %lld bytes more, expected %lld",
            (long long)(full32 - full), (long long)(keep32 - b[0]), (long long)(4 * plain16));
    REQUIRE(db[4] == dense &&
                mb_cuda_acts_bytes_ex(&c, B, L, tb | D | MB_CUDA_ACTS_DENSE_LAYERS(9), 0) == dense,
            "DENSE_LAYERS(n_layer) and above: every layer");
    REQUIRE(mb_cuda_acts_bytes_ex(&c, B, L, tb | MB_CUDA_ACTS_DENSE_LAYERS(2), 0) == full,
            "DENSE_LAYERS without DENSE_SCAN ignored");
    REQUIRE(mb_cuda_acts_bytes_ex(&c, B, L, tb | RC | D | MB_CUDA_ACTS_DENSE_LAYERS(2), 0) == rc0,
            "the dense scan ignored with recomputation");
    for (int k = 1; k < 4; k++) {
        const double budget = (double)db[k] + 0.5 * (double)extra;
        f = plan(&c, B, L, -1, budget, 0, &fits);
        REQUIRE(fits == 1 && f == (tb | D | MB_CUDA_ACTS_DENSE_LAYERS(k)),
                "budget %.0f: the dense scan in %d layers (%#x)", budget, k, f);
        f = plan(&c, B, L, 0, (double)db[k], 0, &fits);
        REQUIRE(fits == 1 && f == (tb | D | MB_CUDA_ACTS_DENSE_LAYERS(k)),
                "recompute off, budget = %d dense layers exactly (%#x)", k, f);
    }
    f = plan(&c, B, L, -1, (double)db[4], 0, &fits);
    REQUIRE(fits == 1 && f == (tb | D), "budget = every layer dense: DENSE_SCAN alone (%#x)", f);
    setenv("MB_CUDA_DENSE_LAYERS", "2", 1);
    f = plan(&c, B, L, -1, 1e18, 1, &fits);
    REQUIRE(f == (tb | D | MB_CUDA_ACTS_DENSE_LAYERS(2)), "MB_CUDA_DENSE_LAYERS=2 (%#x)", f);
    f = plan(&c, B, L, -1, (double)full, 1, &fits);
    REQUIRE(fits == 0 && f == (tb | D | MB_CUDA_ACTS_DENSE_LAYERS(2)),
            "MB_CUDA_DENSE_LAYERS=2 forced past the budget (%#x)", f);
    setenv("MB_CUDA_DENSE_LAYERS", "0", 1);
    f = plan(&c, B, L, -1, 1e18, 1, &fits);
    REQUIRE(f == tb, "MB_CUDA_DENSE_LAYERS=0: none (%#x)", f);
    setenv("MB_CUDA_DENSE_LAYERS", "9", 1);
    f = plan(&c, B, L, -1, (double)full, 1, &fits);
    REQUIRE(f == (tb | D), "MB_CUDA_DENSE_LAYERS=9: every layer (%#x)", f);
    unsetenv("MB_CUDA_DENSE_LAYERS");
    setenv("MB_CUDA_DENSE_SCAN", "0", 1);
    f = plan(&c, B, L, -1, 1e18, 1, &fits);
    REQUIRE(f == tb, "MB_CUDA_DENSE_SCAN=0: none (%#x)", f);
    setenv("MB_CUDA_DENSE_SCAN", "1", 1);
    f = plan(&c, B, L, -1, (double)full, 1, &fits);
    REQUIRE(f == (tb | D) && fits == 0, "MB_CUDA_DENSE_SCAN=1: every layer, forced (%#x)", f);
    unsetenv("MB_CUDA_DENSE_SCAN");

    /* one layer: its slot is its own, so nothing to keep costs anything */
    mb_config c1;
    config(&c1, 256, 1);
    REQUIRE(mb_cuda_acts_bytes_ex(&c1, B, L, tb | KEEP | XZ(1), 0) ==
                mb_cuda_acts_bytes_ex(&c1, B, L, tb | KEEP, 0),
            "1 layer: KEEP_XZ costs nothing");
}

int main(void) {
    mb_scan_cuda_set_backward_warps(2);
    test_sizes_and_plans();
    mb_scan_cuda_set_backward_warps(0);
    printf("test_plan_cuda: %s\n", g_fail ? "FAILED" : "passed");
    return g_fail ? 1 : 0;
}
