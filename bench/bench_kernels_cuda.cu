/* Memory-bound training kernels on the GPU: the fused add + LayerNorm (bf16 input) forward and
 * backward, the causal conv1d + SiLU (bf16 input) forward and backward, and the dt projection
 * with its bias and softplus (dt_rank ceil(d_model / 16), its forms and tilings), and the layer's
 * matrix products (cuBLASLt, tuned as training), in the forms and
 * layouts mixed-precision training runs them (src/cuda/model_cuda.cu), timed with CUDA events
 * (3 warm-ups, then the median of 20). Each row prints the bytes the kernel must move, the
 * achieved rate, and that rate against a device-to-device copy measured in the same run (the
 * practical ceiling) and against 4.3 TB/s.
 * Usage: bench_kernels_cuda [B L d_model d_inner d_conv]   (default: the medium preset at
 * ctx 8192, batch 32: 32 8192 512 1024 4)
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cuda.h"
#include "cuda/conv1d_cuda.h"
#include "cuda/dt_proj_cuda.h"
#include "cuda/matmul_cuda.h"
#include "cuda/norm_cuda.h"
#include "mambabyte.h"

#define BW 4.3e12 /* bytes / s */

/* Uniform values in [lo, hi) from a hash of the index, as fp32 or as bf16 bit patterns. */
__global__ void fill_kernel(float *p, unsigned short *h, long long n, unsigned seed, float lo,
                            float hi) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        unsigned u = (unsigned)i * 2654435761u ^ seed;
        u ^= u >> 15, u *= 2246822519u, u ^= u >> 13, u *= 3266489917u, u ^= u >> 16;
        const float v = lo + (hi - lo) * (float)(u >> 8) * (1.0f / 16777216.0f);
        if (p) p[i] = v;
        if (h) h[i] = (unsigned short)(__float_as_uint(v) >> 16);
    }
}

static float *f32(long long n, unsigned seed, float lo, float hi) {
    float *p = NULL;
    CK(cudaMalloc((void **)&p, sizeof(float) * (size_t)n));
    fill_kernel<<<1024, 256>>>(p, NULL, n, seed, lo, hi);
    CK(cudaGetLastError());
    return p;
}

static uint16_t *b16(long long n, unsigned seed, float lo, float hi) {
    unsigned short *p = NULL;
    CK(cudaMalloc((void **)&p, sizeof(uint16_t) * (size_t)n));
    fill_kernel<<<1024, 256>>>(NULL, p, n, seed, lo, hi);
    CK(cudaGetLastError());
    return (uint16_t *)p;
}

static struct {
    long long B, L, d, Di, K, rows;
    float *resid_in, *resid_out, *mean, *rstd, *w, *b, *dr, *dw, *db;
    uint16_t *h, *yb, *dy, *drb;
    uint16_t *xz, *xc, *dout, *dout2, *dxz;
    float *cw, *cb, *dcw, *dcb;
    void *cp_src, *cp_dst;
    size_t cp_bytes;
    long long R, ldx; /* dt_rank; the dt part's row stride in the x_proj output (R + 32) */
    uint16_t *dbcb, *dtw, *delta16;
    float *dtb, *delta;
} g;

static void run_copy(void) {
    CK(cudaMemcpyAsync(g.cp_dst, g.cp_src, g.cp_bytes, cudaMemcpyDeviceToDevice, 0));
}
static void run_norm_fwd(void) {
    RC(mb_norm_cuda_forward_bf16in(g.resid_out, g.yb, g.mean, g.rstd, g.h, g.resid_in, g.w, g.b,
                                   g.rows, g.d, 1e-5f, NULL));
}
static void run_norm_bwd(void) {
    RC(mb_norm_cuda_backward_bf16in(g.dr, g.drb, g.dw, g.db, g.dy, g.resid_out, g.mean, g.rstd, g.w,
                                    g.rows, g.d, 1, NULL));
}
static long long g_xs = 0; /* the conv's x / dx row stride: 2 d_inner (in xz), or d_inner */
static void run_conv_fwd(void) {
    RC(mb_conv1d_cuda_forward_bf16in(NULL, g.xc, g.xz, g_xs, g.cw, g.cb, g.B, g.L, g.Di, g.K,
                                     NULL));
}
static void run_conv_bwd(void) {
    RC(mb_conv1d_cuda_backward_bf16in(g.dxz, g_xs, g.dcw, g.dcb, g.dout, g.dout2, g.xz, g_xs, g.cw,
                                      g.cb, g.B, g.L, g.Di, g.K, NULL));
}

static void run_dt16(void) {
    RC(mb_dt_proj_softplus_cuda_ex(NULL, g.delta16, g.dbcb, g.ldx, g.dtw, g.dtb, g.rows, g.R, g.Di,
                                   NULL));
}
static void run_dt32(void) {
    RC(mb_dt_proj_softplus_cuda(g.delta, g.dbcb, g.ldx, g.dtw, g.dtb, g.rows, g.R, g.Di, NULL));
}

static float time_ms(void (*fn)(void)) {
    return median_ms(fn);
}

static double g_copy_rate = 0.0; /* bytes / s of the device-to-device copy */

static void row(const char *name, float ms, double bytes) {
    const double rate = bytes / (ms * 1e-3);
    printf("| %-40s | %8.3f | %7.3f | %6.2f | %5.1f%% | %5.1f%% |\n", name, ms, bytes / 1e9,
           rate / 1e12, 100.0 * rate / g_copy_rate, 100.0 * rate / BW);
}

int main(int argc, char **argv) {
    g.B = 32, g.L = 8192, g.d = 512, g.Di = 1024, g.K = 4;
    if (argc == 6)
        g.B = atoll(argv[1]), g.L = atoll(argv[2]), g.d = atoll(argv[3]), g.Di = atoll(argv[4]),
        g.K = atoll(argv[5]);
    else if (argc != 1) {
        fprintf(stderr, "usage: bench_kernels_cuda [B L d_model d_inner d_conv]\n");
        return 2;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device\n");
        return 0;
    }
    g.rows = g.B * g.L;
    const long long nd = g.rows * g.d, ni = g.rows * g.Di;
    /* the norm: residual and its gradient fp32, the out_proj output and du bf16 */
    g.resid_in = f32(nd, 1, -1.0f, 1.0f);
    g.resid_out = f32(nd, 2, -1.0f, 1.0f);
    g.h = b16(nd, 3, -1.0f, 1.0f);
    g.yb = b16(nd, 4, 0.0f, 0.0f);
    g.mean = f32(g.rows, 5, 0.0f, 0.0f);
    g.rstd = f32(g.rows, 6, 0.0f, 0.0f);
    g.w = f32(g.d, 7, 0.5f, 1.5f);
    g.b = f32(g.d, 8, -0.1f, 0.1f);
    g.dr = f32(nd, 9, -1e-3f, 1e-3f);
    g.drb = b16(nd, 10, 0.0f, 0.0f);
    g.dy = b16(nd, 11, -1e-3f, 1e-3f);
    g.dw = f32(g.d, 12, 0.0f, 0.0f);
    g.db = f32(g.d, 13, 0.0f, 0.0f);
    /* the conv: x in the x half of in_proj's bf16 output (row stride 2 d_inner), dx likewise */
    g.xz = b16(2 * ni, 14, -1.0f, 1.0f);
    g.xc = b16(ni, 15, 0.0f, 0.0f);
    g.dout = b16(ni, 16, -1e-3f, 1e-3f);
    g.dout2 = b16(ni, 17, -1e-3f, 1e-3f);
    g.dxz = b16(2 * ni, 18, 0.0f, 0.0f);
    g.cw = f32(g.Di * g.K, 19, -0.5f, 0.5f);
    g.cb = f32(g.Di, 20, -0.1f, 0.1f);
    g.dcw = f32(g.Di * g.K, 21, 0.0f, 0.0f);
    g.dcb = f32(g.Di, 22, 0.0f, 0.0f);
    /* the dt projection: dt_low bf16 in the x_proj output's copy, dt_proj weight bf16 */
    g.R = (g.d + 15) / 16, g.ldx = g.R + 32;
    g.dbcb = b16(g.rows * g.ldx, 23, -1.0f, 1.0f);
    g.dtw = b16(g.Di * g.R, 24, -0.3f, 0.3f);
    g.dtb = f32(g.Di, 25, -6.9f, -2.3f);
    g.delta16 = b16(ni, 26, 0.0f, 0.0f);
    g.delta = f32(ni, 27, 0.0f, 0.0f);
    g.cp_bytes = sizeof(float) * (size_t)nd;
    g.cp_src = g.resid_in, g.cp_dst = g.resid_out;
    CK(cudaDeviceSynchronize());
    /* the norm statistics must exist before the backward reads them */
    run_norm_fwd();
    CK(cudaDeviceSynchronize());

    const float ms_copy = time_ms(run_copy);
    g_copy_rate = 2.0 * (double)g.cp_bytes / (ms_copy * 1e-3);
    printf("memory-bound training kernels: B %lld, L %lld, d_model %lld, d_inner %lld, d_conv "
           "%lld (median of 20)\n\n",
           g.B, g.L, g.d, g.Di, g.K);
    printf("| %-40s | %8s | %7s | %6s | %6s | %6s |\n", "kernel", "ms", "GB", "TB/s", "copy",
           "4.3");
    printf("|---|---|---|---|---|---|\n");
    row("device-to-device copy (reference)", ms_copy, 2.0 * (double)g.cp_bytes);
    /* bytes per element: h 2, resid_in 4, resid_out 4, yb 2 */
    row("add + LayerNorm forward, bf16 h", time_ms(run_norm_fwd), 12.0 * (double)nd);
    /* dy 2, r 4, dr read 4 + written 4, drb 2 */
    row("add + LayerNorm backward, bf16 dy, +=", time_ms(run_norm_bwd), 16.0 * (double)nd);
    /* x 2, out 2 */
    g_xs = 2 * g.Di;
    row("conv1d + SiLU forward, bf16", time_ms(run_conv_fwd), 4.0 * (double)ni);
    /* dout 2, dout2 2, x 2, dx 2 */
    row("conv1d + SiLU backward, bf16, two dout", time_ms(run_conv_bwd), 8.0 * (double)ni);
    /* diagnostics: x and dx rows contiguous (stride d_inner) instead of halves of xz rows */
    g_xs = g.Di;
    row("conv forward, x rows contiguous (diag)", time_ms(run_conv_fwd), 4.0 * (double)ni);
    row("conv backward, x rows contiguous (diag)", time_ms(run_conv_bwd), 8.0 * (double)ni);
    if (mb_dt_proj_softplus_supported(g.R, g.ldx)) {
        /* bytes: the output (2 or 4 per element) and dt_low (2 R per row) */
        const double in = 2.0 * (double)g.rows * (double)g.R;
        static const struct {
            const char *name;
            int variant, tiles, o16;
        } v[] = {
            {"dt_proj + softplus, bf16, first form", 1, 0, 1},
            {"dt_proj + softplus, bf16", 0, 0, 1},
            {"dt_proj + softplus, bf16, 1 tile", 0, 1, 1},
            {"dt_proj + softplus, bf16, 2 tiles", 0, 2, 1},
            {"dt_proj + softplus, bf16, 8 tiles", 0, 8, 1},
            {"dt_proj + softplus, bf16, 16 tiles", 0, 16, 1},
            {"dt_proj + softplus, fp32 (first form)", 0, 0, 0},
        };
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
            mb_dt_proj_cuda_set_variant(v[i].variant, v[i].tiles);
            row(v[i].name, time_ms(v[i].o16 ? run_dt16 : run_dt32),
                (v[i].o16 ? 2.0 : 4.0) * (double)ni + in);
        }
        mb_dt_proj_cuda_set_variant(0, 0);
    }
    /* the layer's matrix products in the forms bf16 training runs them (src/cuda/model_cuda.cu),
     * cuBLASLt with its candidates timed (as training), beside their FLOP rate and the time
     * their operands' bytes take at the copy's rate: which of them the memory bounds.
     * MB_BENCH_NO_PRODUCTS=1 leaves them out (tests/cuda/sanitize_cuda.sh: under racecheck,
     * cuBLAS's kernels stop with an internal sanitizer error) */
    const char *np = getenv("MB_BENCH_NO_PRODUCTS");
    void *lt = NULL;
    if (!(np && !strcmp(np, "1")) && mb_cublaslt_create(&lt, NULL) == 0) {
        mb_cublaslt_set_tune(lt, 1);
        const long long d = g.d, Di = g.Di, R = g.R, P = g.R + 32, rows = g.rows;
        uint16_t *u16 = b16(rows * d, 30, -1.0f, 1.0f), *xz16 = b16(rows * 2 * Di, 31, -1.0f, 1.0f);
        uint16_t *dbc16 = b16(rows * P, 32, -1.0f, 1.0f), *dd16 = b16(rows * Di, 33, -1e-3f, 1e-3f);
        uint16_t *dy16 = b16(rows * d, 34, -1e-3f, 1e-3f),
                 *o16 = b16(rows * 2 * Di, 35, 0.0f, 0.0f);
        uint16_t *w_in = b16(2 * Di * d, 36, -0.05f, 0.05f), *w_x = b16(P * Di, 37, -0.05f, 0.05f);
        uint16_t *w_out = b16(d * Di, 38, -0.05f, 0.05f), *w_dt = b16(Di * R, 39, -0.05f, 0.05f);
        float *o32 = f32(rows * 2 * Di, 40, 0.0f, 0.0f), *dw32 = f32(2 * Di * d, 41, 0.0f, 0.0f);
        struct prod {
            const char *name;
            int kind; /* 0 forward, 1 forward bf16 out, 2 backward input, 3 the same bf16 out,
                         4 backward weight */
            const uint16_t *a, *w;
            long long lda, n_in, n_out;
        } pr[] = {
            {"in_proj forward (bf16 out)", 1, u16, w_in, d, d, 2 * Di},
            {"x_proj forward", 0, xz16, w_x, 2 * Di, Di, P},
            {"out_proj forward", 0, xz16, w_out, 2 * Di, Di, d},
            {"out_proj backward input (bf16)", 3, dy16, w_out, d, Di, d},
            {"out_proj backward weight", 4, dy16, xz16, d, Di, d},
            {"dt_proj backward input", 2, dd16, w_dt, Di, R, Di},
            {"dt_proj backward weight", 4, dd16, dbc16, Di, R, Di},
            {"x_proj backward input (bf16)", 3, dbc16, w_x, P, Di, P},
            {"x_proj backward weight", 4, dbc16, xz16, P, Di, P},
            {"in_proj backward input", 2, xz16, w_in, 2 * Di, d, 2 * Di},
            {"in_proj backward weight", 4, xz16, u16, 2 * Di, d, 2 * Di},
        };
        printf(
            "\nthe layer's products (bf16 in, fp32 accumulate; tuned as training): rows %lld\n\n",
            rows);
        printf("| %-32s | %8s | %8s | %7s | %8s |\n", "product", "ms", "TFLOP/s", "GB", "copy ms");
        printf("|---|---|---|---|---|\n");
        double tot = 0.0;
        for (size_t i = 0; i < sizeof pr / sizeof pr[0]; i++) {
            const prod p = pr[i];
            /* bytes: the input rows, the weight, the output (fp32 4, bf16 2; a weight gradient
             * read and written in fp32) */
            double bytes;
            auto run = [&] {
                switch (p.kind) {
                case 0:
                    RC(mb_matmul_bf16_forward(lt, o32, p.n_out, p.a, p.lda, p.w, rows, p.n_in,
                                              p.n_out, 0));
                    break;
                case 1:
                    RC(mb_matmul_bf16_forward_out16(lt, o16, p.n_out, p.a, p.lda, p.w, rows, p.n_in,
                                                    p.n_out));
                    break;
                case 2:
                    RC(mb_matmul_bf16_backward_input(lt, o32, p.n_in, p.a, p.lda, p.w, rows, p.n_in,
                                                     p.n_out, 0));
                    break;
                case 3:
                    RC(mb_matmul_bf16_backward_input_out16(lt, o16, p.n_in, p.a, p.lda, p.w, rows,
                                                           p.n_in, p.n_out));
                    break;
                default: /* dW (n_out, n_in) += dy^T x: a = dy (n_out wide), w = x (n_in wide) */
                    RC(mb_matmul_bf16_backward_weight(lt, dw32, p.a, p.lda, p.w,
                                                      p.w == xz16  ? 2 * Di
                                                      : p.w == u16 ? d
                                                                   : P,
                                                      rows, p.n_in, p.n_out));
                }
            };
            if (p.kind == 4)
                bytes = 2.0 * rows * (p.n_in + p.n_out) + 8.0 * p.n_in * p.n_out;
            else
                bytes = 2.0 * rows * (p.kind >= 2 ? p.n_out : p.n_in) + 2.0 * p.n_in * p.n_out +
                        (p.kind == 1 || p.kind == 3 ? 2.0 : 4.0) * rows *
                            (p.kind >= 2 ? p.n_in : p.n_out);
            const float ms = median_ms(run);
            tot += ms;
            printf("| %-32s | %8.3f | %8.1f | %7.3f | %8.3f |\n", p.name, ms,
                   2.0 * rows * p.n_in * p.n_out / (ms * 1e-3) / 1e12, bytes / 1e9,
                   bytes / g_copy_rate * 1e3);
        }
        printf("| %-32s | %8.3f | | | |\n", "sum", tot);
        mb_cublaslt_destroy(lt);
    }
    return 0;
}
