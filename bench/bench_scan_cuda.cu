/* Selective-scan benchmark on the GPU (kernel lab in the llm.c manner): forward and backward of
 * mb_scan_cuda_* at the MambaByte-353M training shape (batch 8, d_inner 2048, L 8192, d_state 16,
 * fp32 inputs in the model's layouts), timed with CUDA events: 3 warm-ups then the median of 20.
 * Prints each pass with its floors: bytes that must move / 4.3 TB/s (measured H200 copy rate)
 * and exponentials (B*L*Di*N) / 4e12 per second (multi-function-unit rate).
 * Also the form mixed-precision training runs (bias + softplus of delta inside, bf16 outputs).
 * Usage: bench_scan_cuda [B L Di N]
 * Reference point: the official mamba_ssm selective_scan_cuda takes 2.56 ms forward and
 * 9.19 ms backward at this shape (bf16 inputs).
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cuda.h"
#include "cuda/bf16_cuda.h"
#include "cuda/dt_proj_cuda.h"
#include "cuda/matmul_cuda.h"
#include "cuda/scan_cuda.h"
#include "mambabyte.h"

#define BW 4.3e12   /* bytes / s */
#define EXPS 4.0e12 /* exp2 / s */

/* Uniform values in [lo, hi) from a hash of the index. */
__global__ void fill_kernel(float *p, long long n, unsigned seed, float lo, float hi) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
        p[i] = lo + (hi - lo) * (float)(h >> 8) * (1.0f / 16777216.0f);
    }
}

static float *dalloc_fill(long long n, unsigned seed, float lo, float hi) {
    float *p = NULL;
    CK(cudaMalloc((void **)&p, sizeof(float) * (size_t)n));
    fill_kernel<<<1024, 256>>>(p, n, seed, lo, hi);
    CK(cudaGetLastError());
    return p;
}

typedef struct {
    mb_scan_args a;
    float *y, *dy, *dx, *ddelta, *dA, *dbc, *dD, *dz;
    long long R;
    mb_scan_cuda_opts o; /* the training form (run_fwd_ex / run_bwd_ex) */
} bench_ctx;

/* The form mixed-precision training runs (src/cuda/model_cuda.cu, scan_opts): delta raw, its
 * bias and softplus applied inside the scan, y and every gradient but dA / dB / dC / dD written
 * as bf16 only (the O16 backward), ddt_bias summed. */
static void run_fwd_ex(bench_ctx *c) {
    RC(mb_scan_cuda_forward_ex(&c->a, &c->o, NULL, NULL));
}
static void run_bwd_ex(bench_ctx *c) {
    RC(mb_scan_cuda_backward_ex(&c->a, &c->o, c->dy, NULL, NULL, c->dA, c->dbc + c->R,
                                c->dbc + c->R + c->a.N, c->dD, NULL, NULL));
}

static void run_fwd(bench_ctx *c) {
    RC(mb_scan_cuda_forward(&c->a, c->y, NULL));
}
static void run_bwd(bench_ctx *c) {
    RC(mb_scan_cuda_backward(&c->a, c->dy, c->dx, c->ddelta, c->dA, c->dbc + c->R,
                             c->dbc + c->R + c->a.N, c->dD, c->dz, NULL));
}

/* the dt projection's operands (main) */
static struct {
    void *lt;
    uint16_t *xb, *wb;
    float *bias, *out;
    long long rows, R, ld, Di;
} g_dt;
static void run_dt_lt(bench_ctx *c) {
    (void)c;
    RC(mb_matmul_bf16_forward(g_dt.lt, g_dt.out, g_dt.Di, g_dt.xb, g_dt.ld, g_dt.wb, g_dt.rows,
                              g_dt.R, g_dt.Di, 0));
}
static void run_dt_fused(bench_ctx *c) {
    (void)c;
    RC(mb_dt_proj_softplus_cuda(g_dt.out, g_dt.xb, g_dt.ld, g_dt.wb, g_dt.bias, g_dt.rows, g_dt.R,
                                g_dt.Di, NULL));
}

static float time_ms(void (*fn)(bench_ctx *), bench_ctx *c) {
    return median_ms([&] { fn(c); });
}

static void row(const char *name, float ms, double bytes, double exps) {
    const double fb = bytes / BW * 1e3, fe = exps / EXPS * 1e3;
    const double fl = fb > fe ? fb : fe;
    printf("| %-28s | %8.3f | %8.2f | %8.3f | %8.3f | %8.3f | %6.2fx |\n", name, ms, bytes / 1e9,
           fb, fe, fl, ms / fl);
}

int main(int argc, char **argv) {
    long long B = 8, L = 8192, Di = 2048, N = 16;
    if (argc == 5) B = atoll(argv[1]), L = atoll(argv[2]), Di = atoll(argv[3]), N = atoll(argv[4]);
    if (mb_cuda_device_count() == 0) {
        printf("no CUDA device\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const long long R = (Di / 2 + 15) / 16, bcs = R + 2 * N; /* dt_rank = ceil(d_model / 16) */
    const long long BL = B * L, chunk = mb_scan_cuda_preferred_chunk();
    const long long nch = (L + chunk - 1) / chunk;
    printf("device %s, %d SMs; B %lld L %lld Di %lld N %lld, chunk %lld, fp32\n", prop.name,
           prop.multiProcessorCount, B, L, Di, N, chunk);

    bench_ctx c;
    memset(&c, 0, sizeof c);
    c.R = R;
    float *xz = dalloc_fill(BL * 2 * Di, 1, -2.0f, 2.0f);
    float *delta = dalloc_fill(BL * Di, 2, 0.001f, 0.1f);
    float *dbc = dalloc_fill(BL * bcs, 3, -1.0f, 1.0f);
    float *A_log = dalloc_fill(Di * N, 4, 0.0f, 2.7f);
    float *D = dalloc_fill(Di, 5, 0.5f, 1.5f);
    float *hc = dalloc_fill(B * Di * nch * N, 6, 0.0f, 0.0f);
    c.y = dalloc_fill(BL * Di, 7, 0.0f, 0.0f);
    c.dy = dalloc_fill(BL * Di, 8, -1.0f, 1.0f);
    c.dx = dalloc_fill(BL * Di, 9, 0.0f, 0.0f);
    c.ddelta = dalloc_fill(BL * Di, 10, 0.0f, 0.0f);
    c.dz = dalloc_fill(BL * 2 * Di, 11, 0.0f, 0.0f) + Di;
    c.dbc = dalloc_fill(BL * bcs, 12, 0.0f, 0.0f);
    c.dA = dalloc_fill(Di * N, 13, 0.0f, 0.0f);
    c.dD = dalloc_fill(Di, 14, 0.0f, 0.0f);
    mb_scan_args *a = &c.a;
    a->B = B, a->L = L, a->Di = Di, a->N = N, a->chunk = chunk;
    a->x = xz, a->x_stride = 2 * Di, a->delta = delta, a->A_log = A_log;
    a->Bm = dbc + R, a->Cm = dbc + R + N, a->bc_stride = bcs, a->D = D;
    a->z = xz + Di, a->z_stride = 2 * Di, a->h_chunks = hc;
    CK(cudaDeviceSynchronize());

    const double act = 4.0 * BL * Di, bc = 4.0 * BL * N, hcb = 4.0 * B * Di * nch * N;
    const double exps = (double)BL * Di * N;
    /* forward: x, delta, z, B, C in; y, h_chunks out. backward: x, delta, z, dy, B, C,
     * h_chunks in; dx, ddelta, dz, dB, dC out. */
    const double fwd_bytes = 4 * act + 2 * bc + hcb, bwd_bytes = 7 * act + 4 * bc + hcb;

    printf("| %-28s | %8s | %8s | %8s | %8s | %8s | %7s |\n", "pass", "ms", "GB", "bytes ms",
           "exp ms", "floor ms", "/floor");
    printf("|------------------------------|----------|----------|----------|----------|----------|"
           "---------|\n");
    const float f_auto = time_ms(run_fwd, &c);
    row("forward (staged)", f_auto, fwd_bytes, exps);
    mb_scan_cuda_set_lane_layout(0);
    const float f_cm = time_ms(run_fwd, &c);
    row("forward, channel-major lanes", f_cm, fwd_bytes, exps);
    mb_scan_cuda_set_lane_layout(1);
    const float f_qm = time_ms(run_fwd, &c);
    row("forward, state-major lanes", f_qm, fwd_bytes, exps);
    mb_scan_cuda_set_lane_layout(-1);
    const int ws[] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        char name[64];
        mb_scan_cuda_set_forward_warps(ws[i]);
        snprintf(name, sizeof name, "forward legacy (W=%d)", ws[i]);
        row(name, time_ms(run_fwd, &c), fwd_bytes, exps);
    }
    mb_scan_cuda_set_forward_warps(0);
    /* diagnostics: the same forward without the chunk-state stores, and without y */
    a->h_chunks = NULL;
    row("forward, no h_chunks (diag)", time_ms(run_fwd, &c), fwd_bytes - hcb, exps);
    float *y_keep = c.y;
    c.y = NULL;
    row("forward, no h_chunks, no y", time_ms(run_fwd, &c), fwd_bytes - hcb - act, exps);
    c.y = y_keep;
    a->h_chunks = hc;
    run_fwd(&c); /* h_chunks for the backward */
    mb_scan_cuda_set_backward_warps(1);
    const float b5 = time_ms(run_bwd, &c);
    row("backward v5", b5, bwd_bytes, exps);
    mb_scan_cuda_set_backward_warps(2);
    const float b5x = time_ms(run_bwd, &c);
    row("backward v5, pair exchange", b5x, bwd_bytes, exps);
    mb_scan_cuda_set_lane_layout(0);
    const float b5cm = time_ms(run_bwd, &c);
    row("bwd v5 pair exch., ch-major", b5cm, bwd_bytes, exps);
    mb_scan_cuda_set_lane_layout(1);
    const float b5qm = time_ms(run_bwd, &c);
    row("bwd v5 pair exch., state-major", b5qm, bwd_bytes, exps);
    mb_scan_cuda_set_lane_layout(-1);
    mb_scan_cuda_set_backward_warps(8);
    const float b4 = time_ms(run_bwd, &c);
    row("backward v4 (8 warps x 8)", b4, bwd_bytes, exps);
    mb_scan_cuda_set_backward_warps(16);
    row("backward v4 (16 warps x 4)", time_ms(run_bwd, &c), bwd_bytes, exps);
    mb_scan_cuda_lab_skip_bc_atomics(1);
    mb_scan_cuda_set_backward_warps(1);
    row("backward v5, no dB/dC (diag)", time_ms(run_bwd, &c), bwd_bytes, exps);

    mb_scan_cuda_set_backward_warps(8);
    row("backward v4 8x8, no dB/dC", time_ms(run_bwd, &c), bwd_bytes, exps);
    mb_scan_cuda_lab_skip_bc_atomics(0);
    mb_scan_cuda_set_backward_warps(0);
    const float ba = time_ms(run_bwd, &c);
    row("backward (automatic)", ba, bwd_bytes, exps);
    /* the training form: raw delta around the dt_proj bias of the init (softplus^-1 of
     * 0.001..0.1), bf16 outputs */
    {
        float *draw = dalloc_fill(BL * Di, 15, -0.5f, 0.5f),
              *bias = dalloc_fill(Di, 16, -6.9f, -2.3f);
        float *ddtb = dalloc_fill(Di, 17, 0.0f, 0.0f);
        uint16_t *b16 = NULL;
        CK(cudaMalloc((void **)&b16, sizeof(uint16_t) * (size_t)(BL * 5 * Di)));
        const float *dkeep = a->delta;
        a->delta = draw;
        c.o.dt_bias = bias, c.o.dt_softplus = 1, c.o.ddt_bias = ddtb;
        c.o.y_bf16 = b16, c.o.ddelta_bf16 = b16 + BL * Di, c.o.dx_bf16 = b16 + 2 * BL * Di;
        c.o.dz_bf16 = b16 + 3 * BL * Di; /* stride 2 Di, as z */
        const double h = 2.0 * BL * Di;  /* a bf16 activation */
        row("forward, training form", time_ms(run_fwd_ex, &c), 3 * act + 2 * bc + hcb + h, exps);
        run_fwd_ex(&c);
        row("backward, training form", time_ms(run_bwd_ex, &c), 4 * act + 4 * bc + hcb + 3 * h,
            exps);
        a->delta = dkeep;
        /* the form training runs since the fused dt projection: delta given effective (the
         * forward without the transform, the backward with delta_is_eff), then the dense form
         * (states every 8 positions and the fp32 pre-gate output from the forward, read by the
         * backward instead of its forward pass; mb_scan_cuda_opts.y_pregate) */
        c.o.dt_bias = NULL, c.o.dt_softplus = 0, c.o.ddt_bias = NULL;
        row("forward, fused-dt form", time_ms(run_fwd_ex, &c), 3 * act + 2 * bc + hcb + h, exps);
        run_fwd_ex(&c);
        c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
        row("backward, fused-dt form", time_ms(run_bwd_ex, &c), 4 * act + 4 * bc + hcb + 3 * h,
            exps);
        const long long n8 = (L + 7) / 8;
        const double hc8 = 4.0 * B * Di * n8 * N;
        float *h8 = NULL, *yp = NULL;
        CK(cudaMalloc((void **)&h8, sizeof(float) * (size_t)(B * Di * n8 * N)));
        CK(cudaMalloc((void **)&yp, sizeof(float) * (size_t)(BL * Di)));
        float *hkeep = a->h_chunks;
        a->h_chunks = h8, a->chunk = 8;
        c.o.y_pregate = yp;
        c.o.dt_softplus = 0, c.o.ddt_bias = NULL, c.o.delta_is_eff = 0;
        c.o.y_pregate = NULL;
        row("forward, chunk 8 (diag)", time_ms(run_fwd_ex, &c), 3 * act + 2 * bc + hc8 + h, exps);
        c.o.y_pregate = yp;
        row("forward, dense", time_ms(run_fwd_ex, &c), 4 * act + 2 * bc + hc8 + h, exps);
        run_fwd_ex(&c);
        c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
        row("backward, dense", time_ms(run_bwd_ex, &c), 5 * act + 4 * bc + hc8 + 3 * h, exps);
        mb_scan_cuda_lab_dense_off(1);
        row("backward, chunk 8, dense off", time_ms(run_bwd_ex, &c),
            4 * act + 4 * bc + hc8 / 8 + 3 * h, exps);
        mb_scan_cuda_lab_dense_off(0);
        /* the form training runs where the scan takes bf16 inputs (model_cuda.cu, in16): x and
         * the effective delta as bf16 copies, the fp32 ones not given */
        if (mb_scan_cuda_bf16in_supported(B, L, Di, N)) {
            printf("(dense forward: %d blocks per multiprocessor with fp32 x / delta, %d with "
                   "bf16)\n",
                   mb_scan_cuda_lab_forward_occupancy(0), mb_scan_cuda_lab_forward_occupancy(1));
            uint16_t *x16 = NULL, *d16 = NULL;
            CK(cudaMalloc((void **)&x16, sizeof(uint16_t) * (size_t)(BL * Di)));
            CK(cudaMalloc((void **)&d16, sizeof(uint16_t) * (size_t)(BL * Di)));
            RC(mb_bf16_from_f32_cuda(x16, Di, a->x, a->x_stride, BL, Di, NULL));
            RC(mb_bf16_from_f32_cuda(d16, Di, a->delta, Di, BL, Di, NULL));
            const float *xk = a->x, *dk = a->delta;
            a->x = NULL, a->delta = NULL;
            c.o.x_bf16 = x16, c.o.x_bf16_stride = Di, c.o.delta_bf16 = d16;
            c.o.dt_softplus = 0, c.o.ddt_bias = NULL, c.o.delta_is_eff = 0;
            row("forward, dense, bf16 x / delta", time_ms(run_fwd_ex, &c),
                2 * act + 2 * bc + hc8 + 3 * h, exps);
            run_fwd_ex(&c);
            c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
            row("backward, dense, bf16 x / delta", time_ms(run_bwd_ex, &c),
                3 * act + 4 * bc + hc8 + 5 * h, exps);
            /* and z and the backward's dy as bf16 (model_cuda.cu, z16) */
            uint16_t *z16 = NULL, *dy16 = NULL;
            CK(cudaMalloc((void **)&z16, sizeof(uint16_t) * (size_t)(BL * Di)));
            CK(cudaMalloc((void **)&dy16, sizeof(uint16_t) * (size_t)(BL * Di)));
            RC(mb_bf16_from_f32_cuda(z16, Di, a->z, a->z_stride, BL, Di, NULL));
            RC(mb_bf16_from_f32_cuda(dy16, Di, c.dy, Di, BL, Di, NULL));
            const float *zk = a->z;
            a->z = NULL;
            c.o.z_bf16 = z16, c.o.z_bf16_stride = Di, c.o.dy_bf16 = dy16;
            c.o.dt_softplus = 0, c.o.ddt_bias = NULL, c.o.delta_is_eff = 0;
            row("forward, dense, bf16 x / delta / z", time_ms(run_fwd_ex, &c),
                act + 2 * bc + hc8 + 4 * h, exps);
            run_fwd_ex(&c);
            c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
            row("backward, dense, bf16 x / delta / z / dy", time_ms(run_bwd_ex, &c),
                act + 4 * bc + hc8 + 7 * h, exps);
            /* and the dense states as bf16 (model_cuda.cu, hc16) */
            c.o.dense_states_bf16 = 1;
            c.o.dt_softplus = 0, c.o.ddt_bias = NULL, c.o.delta_is_eff = 0;
            row("forward, dense, bf16 x/delta/z, bf16 states", time_ms(run_fwd_ex, &c),
                act + 2 * bc + hc8 / 2 + 4 * h, exps);
            run_fwd_ex(&c);
            c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
            row("backward, dense, bf16 .. dy, bf16 states", time_ms(run_bwd_ex, &c),
                act + 4 * bc + hc8 / 2 + 7 * h, exps);
            c.o.dense_states_bf16 = 0;
            /* the plain (chunk 64) form with bf16 x / delta / z / dy, as the layers without
             * the dense scan run it: the gated output kept, then the bf16 pre-gate output (YP:
             * mb_scan_cuda_opts.y_pregate_bf16, the backward's forward pass without y) */
            {
                uint16_t *yp16 = NULL;
                CK(cudaMalloc((void **)&yp16, sizeof(uint16_t) * (size_t)(BL * Di)));
                a->h_chunks = hkeep, a->chunk = chunk;
                c.o.y_pregate = NULL;
                c.o.dt_softplus = 0, c.o.ddt_bias = NULL, c.o.delta_is_eff = 0;
                row("forward, bf16 x / delta / z", time_ms(run_fwd_ex, &c), 2 * bc + hcb + 4 * h,
                    exps);
                run_fwd_ex(&c);
                c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
                row("backward, bf16 x / delta / z / dy", time_ms(run_bwd_ex, &c),
                    4 * bc + hcb + 7 * h, exps);
                c.o.y_pregate_bf16 = yp16;
                c.o.dt_softplus = 0, c.o.ddt_bias = NULL, c.o.delta_is_eff = 0;
                row("forward, bf16 .. z, + pre-gate (YP)", time_ms(run_fwd_ex, &c),
                    2 * bc + hcb + 5 * h, exps);
                run_fwd_ex(&c);
                c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
                /* (the recomputed gated output into the forward's y buffer, b16) */
                row("backward, bf16 .. dy, YP", time_ms(run_bwd_ex, &c), 4 * bc + hcb + 9 * h,
                    exps);
                /* the dense form with it instead of the fp32 y_pregate, bf16 states */
                a->h_chunks = h8, a->chunk = 8;
                c.o.dense_states_bf16 = 1;
                c.o.dt_softplus = 0, c.o.ddt_bias = NULL, c.o.delta_is_eff = 0;
                row("forward, dense, bf16 states, YP", time_ms(run_fwd_ex, &c),
                    2 * bc + hc8 / 2 + 5 * h, exps);
                run_fwd_ex(&c);
                c.o.dt_softplus = 1, c.o.ddt_bias = ddtb, c.o.delta_is_eff = 1;
                row("backward, dense, bf16 states, YP", time_ms(run_bwd_ex, &c),
                    4 * bc + hc8 / 2 + 9 * h, exps);
                c.o.dense_states_bf16 = 0;
                c.o.y_pregate_bf16 = NULL;
                c.o.y_pregate = yp;
                CK(cudaFree(yp16));
            }
            a->z = zk;
            c.o.z_bf16 = NULL, c.o.dy_bf16 = NULL;
            CK(cudaFree(z16));
            CK(cudaFree(dy16));
            c.o.x_bf16 = NULL, c.o.delta_bf16 = NULL;
            a->x = xk, a->delta = dk;
            CK(cudaFree(x16));
            CK(cudaFree(d16));
        }
        a->h_chunks = hkeep, a->chunk = chunk;
        CK(cudaFree(h8));
        CK(cudaFree(yp));
        memset(&c.o, 0, sizeof c.o);
        CK(cudaFree(draw));
        CK(cudaFree(bias));
        CK(cudaFree(ddtb));
        CK(cudaFree(b16));
        RC(mb_scan_cuda_forward(a, c.y, NULL));
    }
    /* the dt projection that feeds it (dt_rank R from the x_proj output's bf16 copy, row stride
     * R + 2N): cuBLASLt's bf16 product (the raw delta) against the fused one with bias and
     * softplus (dt_proj_cuda.h); floor: the fp32 output */
    if (mb_dt_proj_softplus_supported(R, bcs)) {
        uint16_t *xb = NULL, *wb16 = NULL;
        CK(cudaMalloc((void **)&xb, sizeof(uint16_t) * (size_t)(BL * bcs)));
        CK(cudaMalloc((void **)&wb16, sizeof(uint16_t) * (size_t)(Di * R)));
        float *wf = dalloc_fill(Di * R, 19, -0.3f, 0.3f), *bias = dalloc_fill(Di, 20, -6.9f, -2.3f);
        float *out = dalloc_fill(BL * Di, 21, 0.0f, 0.0f);
        RC(mb_bf16_from_f32_cuda(xb, bcs, dbc, bcs, BL, bcs, NULL));
        RC(mb_bf16_from_f32_cuda(wb16, R, wf, R, Di, R, NULL));
        void *lt = NULL;
        RC(mb_cublaslt_create(&lt, NULL));
        g_dt.lt = lt, g_dt.xb = xb, g_dt.wb = wb16, g_dt.bias = bias, g_dt.out = out;
        g_dt.rows = BL, g_dt.R = R, g_dt.ld = bcs, g_dt.Di = Di;
        const double ob = 4.0 * BL * Di, ib = 2.0 * BL * R;
        row("dt_proj, cuBLASLt (raw)", time_ms(run_dt_lt, &c), ob + ib, 0);
        row("dt_proj + bias + softplus", time_ms(run_dt_fused, &c), ob + ib, 0);
        mb_cublaslt_destroy(lt);
        CK(cudaFree(xb));
        CK(cudaFree(wb16));
        CK(cudaFree(wf));
        CK(cudaFree(bias));
        CK(cudaFree(out));
    }
    a->chunk = 128; /* the CPU default: the backward first recomputes 64-step states */
    RC(mb_scan_cuda_forward(a, c.y, NULL)); /* h_chunks no longer needed at 128: reuse buffer */
    row("backward auto (chunk 128)", time_ms(run_bwd, &c), bwd_bytes, exps);
    a->chunk = chunk;
    printf("v5 backward blocks per SM (occupancy): %d\n", mb_scan_cuda_lab_backward_occupancy(N));
    printf("mamba_ssm reference (bf16): forward 2.56 ms, backward 9.19 ms\n");
    printf("summary B %lld: forward %.3f ms (channel-major lanes %.3f, state-major %.3f), "
           "backward v5 %.3f ms, v5 pair exchange %.3f ms (channel-major %.3f, state-major %.3f), "
           "v4 %.3f ms, automatic %.3f ms\n",
           B, f_auto, f_cm, f_qm, b5, b5x, b5cm, b5qm, b4, ba);
    return 0;
}
