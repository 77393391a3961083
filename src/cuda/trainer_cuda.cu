/* The CUDA backend of train/backend.h (trainer_cuda.h) over mb_cuda_model / mb_cuda_acts. */
#include "cuda/trainer_cuda.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_check.h"
#include "cuda/matmul_cuda.h"
#include "cuda/model_cuda.h"

typedef struct {
    mb_backend base;
    mb_model *m;
    mb_adamw *opt;
    mb_cuda_model dm;
    mb_cuda_acts *acts;   /* (B, L), training or evaluation */
    mb_cuda_acts *single; /* (1, L) evaluation workspace for short windows, made on first use */
    int64_t B, L;
    int train;
    int acts_flags;                /* MB_CUDA_ACTS_* of the session's workspaces */
    float *conv_state, *ssm_state; /* device carried states (streamed evaluation, B = 1) */
    float *losses;                 /* (B, L) host */
    uint8_t *xy;                   /* (2, L) host, zero-padded short window */
} cuda_backend;

/* A kernel of this file: finding its image tells whether this build runs on the GPU. */
__global__ void mb_trainer_cuda_probe_kernel(int *p) {
    if (p) *p = 0;
}

static int cuda_probe(char *desc, size_t n) {
    int ndev = 0, drv = 0, rt = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        (void)cudaGetLastError();
        cudaDriverGetVersion(&drv);
        cudaRuntimeGetVersion(&rt);
        if (e == cudaErrorInsufficientDriver && drv > 0)
            return mb_fail(MB_EIO,
                           "the NVIDIA driver supports CUDA %d.%d but this build needs %d.%d "
                           "(update the driver)",
                           drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice)
            return mb_fail(MB_EIO, "no usable CUDA device (no NVIDIA GPU or driver found)");
        return mb_fail(MB_EIO, "no usable CUDA device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    int dev = 0;
    cudaDeviceProp p;
    e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return mb_cuda_err(e, "CUDA device query", __FILE__, __LINE__);
    }
    cudaFuncAttributes fa;
    e = cudaFuncGetAttributes(&fa, mb_trainer_cuda_probe_kernel);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return mb_fail(MB_EIO,
                       "GPU %s (compute capability %d.%d) cannot run this build's kernels (%s); "
                       "rebuild with CMAKE_CUDA_ARCHITECTURES=%d%d",
                       p.name, p.major, p.minor, cudaGetErrorString(e), p.major, p.minor);
    }
    if (desc && n)
        snprintf(desc, n, "%s, sm_%d%d, %.1f GiB", p.name, p.major, p.minor,
                 (double)p.totalGlobalMem / (double)(1 << 30));
    return MB_OK;
}

static void cuda_close(mb_backend *b) {
    cuda_backend *c = (cuda_backend *)b;
    if (!c) return;
    mb_cuda_acts_free(c->acts);
    mb_cuda_acts_free(c->single);
    if (c->conv_state) cudaFree(c->conv_state);
    if (c->ssm_state) cudaFree(c->ssm_state);
    mb_cuda_model_free(&c->dm);
    free(c->losses);
    free(c->xy);
    free(c);
}

/* Activation flags for a session (mb_cuda_acts_plan): precision and (training) recomputation,
 * auto-chosen when recompute < 0, and what a recomputing plan keeps, within a budget of 90% of
 * the device's free memory after the model less the evaluation workspace made later (one
 * sequence of L bytes) and 0.5 GiB for the libraries' own allocations; with gpu_memory > 0, at
 * most what keeps the device's memory in use under gpu_memory GiB, less the same. Refused when
 * that cap is what the smallest plan exceeds. */
static int choose_acts_flags(const mb_config *cfg, int64_t B, int64_t L, int train, int bf16,
                             int recompute, double gpu_memory, int *out) {
    const int f = (train ? MB_CUDA_ACTS_TRAIN : 0) | (bf16 ? MB_CUDA_ACTS_BF16 : 0);
    *out = f;
    if (!train) return MB_OK;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        free_b = total_b = 0;
    }
    const double gib = (double)(1 << 30), used = (double)(total_b - free_b);
    const int64_t eval_b = mb_cuda_acts_bytes_ex(cfg, 1, L, bf16 ? MB_CUDA_ACTS_BF16 : 0, 0);
    const double reserve = (eval_b > 0 ? (double)eval_b : 0.0) + 0.5 * gib;
    const double room = 0.9 * (double)free_b - reserve;
    const double cap = gpu_memory > 0.0 ? gpu_memory * gib - used - reserve : room;
    const double budget = cap < room ? cap : room;
    int fits = 1;
    MB_TRY(mb_cuda_acts_plan(cfg, B, L, f, recompute, budget, 1, out, &fits));
    if (!fits && cap < room) {
        const int64_t need = mb_cuda_acts_bytes_ex(cfg, B, L, *out, 0);
        const int rc = (*out & MB_CUDA_ACTS_RECOMPUTE) != 0;
        return mb_fail(MB_ENOMEM,
                       "--gpu-memory %g: the activations of batch %lld x ctx %lld need %.2f GiB "
                       "(%s), but %.2f GiB are in use already (the model, its optimizer state "
                       "and any other process on the device) and %.2f GiB are kept for "
                       "evaluation and the libraries, which leaves %.2f GiB; allow more%s, or "
                       "lower --batch or --ctx",
                       gpu_memory, (long long)B, (long long)L, (double)need / gib,
                       rc ? "recomputing each layer" : "storing every layer, --recompute off",
                       used / gib, reserve / gib, cap > 0.0 ? cap / gib : 0.0,
                       rc ? "" : ", use --recompute on");
    }
    return MB_OK;
}

static int cuda_open(mb_backend **out, mb_model *m, mb_adamw *opt, int64_t B, int64_t L, int train,
                     const mb_backend_flags *flags) {
    *out = NULL;
    const int prec = flags ? flags->precision : MB_PRECISION_AUTO;
    const int bf16 = prec == MB_PRECISION_BF16 || (prec == MB_PRECISION_AUTO && train);
    const int recompute = flags ? flags->recompute : -1;
    const double gpu_memory = flags ? flags->gpu_memory : 0.0;
    if (!m || (train && !opt))
        return mb_fail(MB_EINVAL, "cuda backend: training needs a model and an optimizer");
    if (opt && opt->n != m->n_params)
        return mb_fail(MB_EINVAL, "cuda backend: optimizer and model sizes differ");
    cuda_backend *c = (cuda_backend *)calloc(1, sizeof *c);
    if (!c) return mb_fail(MB_ENOMEM, "cuda backend: out of host memory");
    c->base.ops = mb_backend_cuda();
    c->m = m;
    c->opt = opt;
    c->B = B;
    c->L = L;
    c->train = train ? 1 : 0;
    const char *tf32 = getenv("MB_CUDA_TF32");
    int rc = mb_cuda_model_create(&c->dm, &m->cfg, tf32 && !strcmp(tf32, "1"));
    if (!rc) rc = mb_cuda_model_upload(&c->dm, m);
    if (!rc && opt) {
        const size_t bytes = (size_t)m->n_params * sizeof(float);
        cudaError_t e = cudaMemcpy(c->dm.adam_m, opt->m, bytes, cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(c->dm.adam_v, opt->v, bytes, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            rc = mb_cuda_err(e, "cuda backend: uploading the AdamW moments", __FILE__, __LINE__);
        }
        mb_cuda_adamw_set(&c->dm, opt->beta1, opt->beta2, opt->eps, opt->weight_decay);
        c->dm.adam_step = opt->step;
    }
    if (!rc && bf16) rc = mb_cuda_model_set_bf16(&c->dm, 1);
    if (!rc && bf16 && c->train) {
        /* training times cuBLASLt's candidates for each product's shape at its first use and
         * keeps the fastest (2-3% faster steps at medium and 353m, docs/benchmarks.md session
         * 20); MB_CUDA_GEMM_TUNE=0 keeps the heuristic's first choice */
        const char *t = getenv("MB_CUDA_GEMM_TUNE");
        mb_cublaslt_set_tune(c->dm.cublaslt, !(t && !strcmp(t, "0")));
    }
    if (!rc)
        rc =
            choose_acts_flags(&m->cfg, B, L, c->train, bf16, recompute, gpu_memory, &c->acts_flags);
    if (!rc) {
        c->acts = mb_cuda_acts_create_ex(&m->cfg, B, L, c->acts_flags, 0);
        if (!c->acts) rc = MB_ENOMEM; /* message set by mb_cuda_acts_create */
    }
    if (!rc) {
        const int64_t ab = mb_cuda_acts_bytes_ex(&m->cfg, B, L, c->acts_flags, 0);
        const char *acts = "";
        char kept[128] = "";
        if (c->train && !(c->acts_flags & MB_CUDA_ACTS_RECOMPUTE)) {
            const int64_t nd = mb_cuda_acts_dense_layers(c->acts), nl = m->cfg.n_layer;
            acts = ", recomputation off";
            if (nd >= nl)
                snprintf(kept, sizeof kept, " (dense scan)");
            else if (nd > 0)
                snprintf(kept, sizeof kept, " (dense scan in %lld of %lld layers)", (long long)nd,
                         (long long)nl);
        }
        if (c->train && (c->acts_flags & MB_CUDA_ACTS_RECOMPUTE)) {
            const int64_t nx = mb_cuda_acts_xz_kept(c->acts), nl = m->cfg.n_layer;
            const int scan = (c->acts_flags & MB_CUDA_ACTS_KEEP_SCAN) != 0;
            acts = ", recomputation on";
            if (nx > 0)
                snprintf(kept, sizeof kept, " (%sin_proj output kept for %lld of %lld layers)",
                         scan ? "scan kept; " : "", (long long)nx, (long long)nl);
            else if (scan)
                snprintf(kept, sizeof kept, " (scan kept)");
        }
        snprintf(c->base.numerics, sizeof c->base.numerics, "%s%s%s, activations %.2f GiB",
                 bf16 ? "bf16 mixed precision" : "fp32", acts, kept, (double)ab / (1 << 30));
    }
    if (!rc) {
        c->losses = (float *)malloc((size_t)(B * L) * sizeof(float));
        c->xy = (uint8_t *)calloc((size_t)(2 * L), 1);
        if (!c->losses || !c->xy) rc = mb_fail(MB_ENOMEM, "cuda backend: out of host memory");
    }
    if (rc) {
        cuda_close(&c->base);
        return rc;
    }
    *out = &c->base;
    return MB_OK;
}

static int need_train(const cuda_backend *c) {
    return c->train ? MB_OK : mb_fail(MB_EINVAL, "cuda backend: session opened without training");
}

static int cuda_zero_grads(mb_backend *b) {
    cuda_backend *c = (cuda_backend *)b;
    MB_TRY(need_train(c));
    return mb_cuda_zero_grads(&c->dm);
}

static int cuda_forward(mb_backend *b, const uint8_t *x, const uint8_t *y, float *loss) {
    cuda_backend *c = (cuda_backend *)b;
    return mb_cuda_forward(&c->dm, c->acts, x, y, loss, NULL);
}

static int cuda_backward(mb_backend *b, float dloss) {
    cuda_backend *c = (cuda_backend *)b;
    MB_TRY(need_train(c));
    return mb_cuda_backward(&c->dm, c->acts, dloss);
}

static int cuda_clip(mb_backend *b, double max_norm, double *norm) {
    cuda_backend *c = (cuda_backend *)b;
    MB_TRY(need_train(c));
    return mb_cuda_grad_clip(&c->dm, max_norm, norm);
}

static int cuda_update(mb_backend *b, float lr) {
    cuda_backend *c = (cuda_backend *)b;
    MB_TRY(need_train(c));
    return mb_cuda_adamw_update(&c->dm, lr);
}

static int cuda_sync(mb_backend *b) {
    cuda_backend *c = (cuda_backend *)b;
    MB_TRY(mb_cuda_model_download(&c->dm, c->m));
    if (c->opt) {
        const size_t bytes = (size_t)c->m->n_params * sizeof(float);
        MB_CUDA_TRY(cudaMemcpy(c->opt->m, c->dm.adam_m, bytes, cudaMemcpyDeviceToHost),
                    "cuda backend: downloading the AdamW moments");
        MB_CUDA_TRY(cudaMemcpy(c->opt->v, c->dm.adam_v, bytes, cudaMemcpyDeviceToHost),
                    "cuda backend: downloading the AdamW moments");
        c->opt->step = c->dm.adam_step;
    }
    return MB_OK;
}

static double sum_f(const float *l, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += l[i];
    return s;
}

static int cuda_score(void *b, const uint8_t *x, const uint8_t *y, int64_t B, int64_t L,
                      double *nats) {
    cuda_backend *c = (cuda_backend *)b;
    *nats = 0.0;
    if (B == c->B && L == c->L) {
        MB_TRY(mb_cuda_forward(&c->dm, c->acts, x, y, NULL, NULL));
        MB_TRY(mb_cuda_losses_download(c->acts, c->losses));
        *nats = sum_f(c->losses, B * L);
        return MB_OK;
    }
    if (B != 1 || L < 1 || L > c->L)
        return mb_fail(MB_EINVAL, "cuda backend: cannot score %lld windows of %lld bytes",
                       (long long)B, (long long)L);
    if (!c->single) {
        c->single =
            mb_cuda_acts_create_ex(&c->m->cfg, 1, c->L, c->acts_flags & MB_CUDA_ACTS_BF16, 0);
        if (!c->single) return MB_ENOMEM;
    }
    /* zero-padded to the workspace length: positions < L see only the window (causal) */
    memset(c->xy, 0, (size_t)(2 * c->L));
    memcpy(c->xy, x, (size_t)L);
    memcpy(c->xy + c->L, y, (size_t)L);
    MB_TRY(mb_cuda_forward(&c->dm, c->single, c->xy, c->xy + c->L, NULL, NULL));
    MB_TRY(mb_cuda_losses_download(c->single, c->losses));
    *nats = sum_f(c->losses, L);
    return MB_OK;
}

/* Streamed scoring: the session's (1, L) workspace and device states; a shorter (last) window
 * is zero-padded to L (causal: its first positions are unaffected; the state after it is not
 * used again). */
static int cuda_score_stream(void *b, const uint8_t *x, const uint8_t *y, int64_t L, int reset,
                             double *nats) {
    cuda_backend *c = (cuda_backend *)b;
    const mb_config *cfg = &c->m->cfg;
    *nats = 0.0;
    if (c->B != 1 || L < 1 || L > c->L)
        return mb_fail(MB_EINVAL, "cuda backend: cannot stream a window of %lld bytes",
                       (long long)L);
    const size_t conv_b = (size_t)(cfg->n_layer * (cfg->d_conv - 1) * cfg->d_inner) * sizeof(float);
    const size_t ssm_b = (size_t)(cfg->n_layer * cfg->d_inner * cfg->d_state) * sizeof(float);
    if (!c->ssm_state) { /* both states or neither */
        float *ssm = NULL, *conv = NULL;
        cudaError_t e = cudaMalloc(&ssm, ssm_b);
        if (e == cudaSuccess && conv_b) e = cudaMalloc(&conv, conv_b);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            if (ssm) cudaFree(ssm);
            return mb_cuda_err(e, "cuda backend: streamed evaluation state", __FILE__, __LINE__);
        }
        c->ssm_state = ssm;
        c->conv_state = conv;
        reset = 1;
    }
    if (reset) {
        MB_CUDA_TRY(cudaMemset(c->ssm_state, 0, ssm_b), "cuda backend: state reset");
        if (conv_b) MB_CUDA_TRY(cudaMemset(c->conv_state, 0, conv_b), "cuda backend: state reset");
    }
    memset(c->xy, 0, (size_t)(2 * c->L));
    memcpy(c->xy, x, (size_t)L);
    memcpy(c->xy + c->L, y, (size_t)L);
    MB_TRY(mb_cuda_forward_stateful(&c->dm, c->acts, c->conv_state, c->ssm_state, c->xy,
                                    c->xy + c->L, NULL, NULL));
    MB_TRY(mb_cuda_losses_download(c->acts, c->losses));
    *nats = sum_f(c->losses, L);
    return MB_OK;
}

static const mb_backend_ops cuda_ops = {
    "cuda",        cuda_probe, cuda_open,   cuda_close, cuda_zero_grads, cuda_forward,
    cuda_backward, cuda_clip,  cuda_update, cuda_sync,  cuda_score,      cuda_score_stream,
};

extern "C" const mb_backend_ops *mb_backend_cuda(void) {
    return &cuda_ops;
}
