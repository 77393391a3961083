/* The whole model on a CUDA GPU in fp32 (model_cuda.h): forward, backward and AdamW over
 * device-side flat vectors, structured like the CPU model (src/cpu/model.c): one allocation
 * for all activations with pointers carved from it, layer functions over raw pointers, matrix
 * products through cuBLAS over all B*L rows at once, our kernels for everything else
 * (norm_cuda, conv1d_cuda, softplus_cuda, embedding_cuda, crossentropy_cuda, adamw_cuda) and
 * the selective scan of scan_cuda.
 */
#include "cuda/model_cuda.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/adamw_cuda.h"
#include "cuda/conv1d_cuda.h"
#include "cuda/crossentropy_cuda.h"
#include "cuda/cuda_check.h"
#include "cuda/embedding_cuda.h"
#include "cuda/matmul_cuda.h"
#include "cuda/norm_cuda.h"
#include "cuda/scan_cuda.h"
#include "cuda/softplus_cuda.h"

struct mb_cuda_acts {
    mb_config cfg;
    int64_t B, L, BL;
    int64_t chunk, n_chunks;
    int train, can_backward;
    int64_t lstride_mul; /* 1 when training (one slot per layer), 0 otherwise */
    void *mem;           /* the one device allocation */
    int64_t bytes;
    /* device buffers, shapes as in mb_acts (src/cpu/model.c) */
    float *residual;          /* (n_layer + 1, B, L, d) norm inputs; last slot feeds norm_f */
    float *mean;              /* (n_layer + 1, B, L) */
    float *rstd;              /* (n_layer + 1, B, L) */
    float *xz;                /* (n_layer, B, L, 2Di) */
    float *xc;                /* (n_layer, B, L, Di) conv output after SiLU */
    float *dbc;               /* (n_layer, B, L, R+2N) */
    float *delta;             /* (n_layer, B, L, Di) */
    float *y;                 /* (n_layer, B, L, Di) gated scan output */
    float *h_chunks;          /* (n_layer, B, Di, n_chunks, N) (training only) */
    float *xf;                /* (B, L, d) norm_f output */
    float *logits;            /* (B, L, 256) */
    float *losses;            /* (B, L) */
    float *u;                 /* (B, L, d) */
    float *hout;              /* (B, L, d) */
    float *dres, *du;         /* (B, L, d) (training only) */
    float *dxz;               /* (B, L, 2Di) */
    float *dxc, *ddelta, *dy; /* (B, L, Di) */
    float *ddbc;              /* (B, L, R+2N) */
    float *dlogits;           /* (B, L, 256) */
    double *loss_sum;         /* (1) */
    double *scratch;          /* (MB_CUDA_REDUCE_SCRATCH) */
    uint8_t *x, *targets;     /* (B, L) */
};

/* ------------------------------------------------------------------ carving */

typedef struct {
    void **ptr;
    int64_t bytes;
} carve_item;

static int64_t round256(int64_t n) {
    return (n + 255) & ~(int64_t)255;
}

#define F(n) ((int64_t)(n) * (int64_t)sizeof(float))

static int acts_table(mb_cuda_acts *a, carve_item *t) {
    const mb_config *c = &a->cfg;
    const int64_t BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    const int64_t nl = a->train ? c->n_layer : 1, tr = a->train ? 1 : 0;
    int k = 0;
    t[k++] = (carve_item){(void **)&a->residual, F((nl + 1) * BL * d)};
    t[k++] = (carve_item){(void **)&a->mean, F((nl + 1) * BL)};
    t[k++] = (carve_item){(void **)&a->rstd, F((nl + 1) * BL)};
    t[k++] = (carve_item){(void **)&a->xz, F(nl * BL * 2 * Di)};
    t[k++] = (carve_item){(void **)&a->xc, F(nl * BL * Di)};
    t[k++] = (carve_item){(void **)&a->dbc, F(nl * BL * (R + 2 * N))};
    t[k++] = (carve_item){(void **)&a->delta, F(nl * BL * Di)};
    t[k++] = (carve_item){(void **)&a->y, F(nl * BL * Di)};
    t[k++] = (carve_item){(void **)&a->h_chunks, F(tr * nl * a->B * Di * a->n_chunks * N)};
    t[k++] = (carve_item){(void **)&a->xf, F(BL * d)};
    t[k++] = (carve_item){(void **)&a->logits, F(BL * MB_VOCAB)};
    t[k++] = (carve_item){(void **)&a->losses, F(BL)};
    t[k++] = (carve_item){(void **)&a->u, F(BL * d)};
    t[k++] = (carve_item){(void **)&a->hout, F(BL * d)};
    t[k++] = (carve_item){(void **)&a->dres, F(tr * BL * d)};
    t[k++] = (carve_item){(void **)&a->du, F(tr * BL * d)};
    t[k++] = (carve_item){(void **)&a->dxz, F(tr * BL * 2 * Di)};
    t[k++] = (carve_item){(void **)&a->dxc, F(tr * BL * Di)};
    t[k++] = (carve_item){(void **)&a->ddelta, F(tr * BL * Di)};
    t[k++] = (carve_item){(void **)&a->ddbc, F(tr * BL * (R + 2 * N))};
    t[k++] = (carve_item){(void **)&a->dy, F(tr * BL * Di)};
    t[k++] = (carve_item){(void **)&a->dlogits, F(tr * BL * MB_VOCAB)};
    t[k++] = (carve_item){(void **)&a->loss_sum, (int64_t)sizeof(double)};
    t[k++] = (carve_item){(void **)&a->scratch, MB_CUDA_REDUCE_SCRATCH * (int64_t)sizeof(double)};
    t[k++] = (carve_item){(void **)&a->x, BL};
    t[k++] = (carve_item){(void **)&a->targets, BL};
    return k;
}

#define ACTS_MAX_ITEMS 32

static int acts_shape(mb_cuda_acts *a, const mb_config *c, int64_t B, int64_t L, int train,
                      int64_t chunk) {
    memset(a, 0, sizeof *a);
    if (!c) return mb_fail(MB_EINVAL, "mb_cuda_acts_create: config is NULL");
    a->cfg = *c;
    MB_TRY(mb_config_finalize(&a->cfg));
    if (B <= 0 || L <= 0 || B > ((int64_t)1 << 24) || L > ((int64_t)1 << 30) ||
        B * L > ((int64_t)1 << 30))
        return mb_fail(MB_EINVAL,
                       "mb_cuda_acts_create: batch B=%lld and length L=%lld must be positive "
                       "with B*L <= 2^30",
                       (long long)B, (long long)L);
    if (chunk < 0) return mb_fail(MB_EINVAL, "mb_cuda_acts_create: chunk must be >= 0");
    a->B = B;
    a->L = L;
    a->BL = B * L;
    a->chunk = chunk ? chunk : mb_scan_cuda_preferred_chunk();
    if (a->chunk > L) a->chunk = L;
    a->n_chunks = (L + a->chunk - 1) / a->chunk;
    a->train = train ? 1 : 0;
    a->lstride_mul = a->train;
    carve_item t[ACTS_MAX_ITEMS] = {};
    const int n = acts_table(a, t);
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += round256(t[i].bytes);
    a->bytes = total;
    return MB_OK;
}

extern "C" int64_t mb_cuda_acts_bytes(const mb_config *c, int64_t B, int64_t L, int for_training,
                                      int64_t chunk) {
    mb_cuda_acts a;
    if (acts_shape(&a, c, B, L, for_training, chunk)) return -1;
    return a.bytes;
}

extern "C" mb_cuda_acts *mb_cuda_acts_create(const mb_config *c, int64_t B, int64_t L,
                                             int for_training, int64_t chunk) {
    mb_cuda_acts *a = (mb_cuda_acts *)malloc(sizeof *a);
    if (!a) {
        mb_fail(MB_ENOMEM, "mb_cuda_acts_create: out of host memory");
        return NULL;
    }
    if (acts_shape(a, c, B, L, for_training, chunk)) {
        free(a);
        return NULL;
    }
    cudaError_t e = cudaMalloc(&a->mem, (size_t)a->bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        mb_fail(e == cudaErrorMemoryAllocation ? MB_ENOMEM : MB_EIO,
                "mb_cuda_acts_create: cannot allocate %.3f GiB of device memory for B=%lld "
                "L=%lld: %s",
                (double)a->bytes / (1 << 30), (long long)B, (long long)L, cudaGetErrorString(e));
        free(a);
        return NULL;
    }
    e = cudaMemset(a->mem, 0, (size_t)a->bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        mb_cuda_err(e, "mb_cuda_acts_create: cudaMemset", __FILE__, __LINE__);
        cudaFree(a->mem);
        free(a);
        return NULL;
    }
    carve_item t[ACTS_MAX_ITEMS] = {};
    const int n = acts_table(a, t);
    char *p = (char *)a->mem;
    for (int i = 0; i < n; i++) {
        *t[i].ptr = t[i].bytes ? (void *)p : NULL;
        p += round256(t[i].bytes);
    }
    return a;
}

extern "C" void mb_cuda_acts_free(mb_cuda_acts *a) {
    if (!a) return;
    if (a->mem) cudaFree(a->mem);
    free(a);
}

extern "C" int mb_cuda_losses_download(const mb_cuda_acts *a, float *losses) {
    if (!a || !losses) return mb_fail(MB_EINVAL, "mb_cuda_losses_download: NULL argument");
    MB_CUDA_TRY(cudaMemcpy(losses, a->losses, (size_t)F(a->BL), cudaMemcpyDeviceToHost),
                "mb_cuda_losses_download");
    return MB_OK;
}

/* ------------------------------------------------------------------ model */

extern "C" void mb_cuda_model_free(mb_cuda_model *dm) {
    if (!dm) return;
    if (dm->cublas) mb_cublas_destroy(dm->cublas);
    if (dm->mem) cudaFree(dm->mem);
    mb_weights_free(&dm->w);
    mb_weights_free(&dm->g);
    free(dm->tensors);
    memset(dm, 0, sizeof *dm);
}

extern "C" int mb_cuda_model_create(mb_cuda_model *dm, const mb_config *c, int allow_tf32) {
    if (!dm || !c) return mb_fail(MB_EINVAL, "mb_cuda_model_create: NULL argument");
    memset(dm, 0, sizeof *dm);
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        (void)cudaGetLastError();
        return mb_fail(MB_EIO, "no usable CUDA device (%s); use --device cpu",
                       e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    dm->cfg = *c;
    MB_TRY(mb_config_finalize(&dm->cfg));
    const int64_t n = mb_config_n_params(&dm->cfg);
    dm->n_params = n;
    const int64_t fl = round256(F(n));
    const int64_t scratch = round256(MB_CUDA_REDUCE_SCRATCH * (int64_t)sizeof(double));
    const int64_t total = 4 * fl + scratch + round256(n);
    e = cudaMalloc(&dm->mem, (size_t)total);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        dm->mem = NULL;
        const int rc = mb_fail(e == cudaErrorMemoryAllocation ? MB_ENOMEM : MB_EIO,
                               "mb_cuda_model_create: cannot allocate %.3f GiB of device memory "
                               "for %lld parameters (weights, gradients, AdamW moments): %s",
                               (double)total / (1 << 30), (long long)n, cudaGetErrorString(e));
        mb_cuda_model_free(dm);
        return rc;
    }
    char *p = (char *)dm->mem;
    dm->params = (float *)p;
    dm->grads = (float *)(p + fl);
    dm->adam_m = (float *)(p + 2 * fl);
    dm->adam_v = (float *)(p + 3 * fl);
    dm->scratch = (double *)(p + 4 * fl);
    dm->decay = (uint8_t *)(p + 4 * fl + scratch);
    int rc = mb_weights_bind(&dm->cfg, dm->params, &dm->w);
    if (!rc) rc = mb_weights_bind(&dm->cfg, dm->grads, &dm->g);
    if (!rc) rc = mb_tensor_table(&dm->cfg, &dm->tensors, &dm->n_tensors);
    uint8_t *mask = rc ? NULL : (uint8_t *)calloc((size_t)(n > 0 ? n : 1), 1);
    if (!rc && !mask) rc = mb_fail(MB_ENOMEM, "mb_cuda_model_create: out of host memory");
    if (!rc) {
        for (int i = 0; i < dm->n_tensors; i++)
            if (dm->tensors[i].weight_decay)
                memset(mask + dm->tensors[i].offset, 1, (size_t)dm->tensors[i].numel);
        e = cudaMemset(dm->mem, 0, (size_t)(4 * fl + scratch));
        if (e == cudaSuccess) e = cudaMemcpy(dm->decay, mask, (size_t)n, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            rc = mb_cuda_err(e, "mb_cuda_model_create", __FILE__, __LINE__);
        }
    }
    free(mask);
    if (!rc) rc = mb_cublas_create(&dm->cublas, dm->stream, allow_tf32);
    if (rc) {
        mb_cuda_model_free(dm);
        return rc;
    }
    mb_cuda_adamw_set(dm, 0.9f, 0.95f, 1e-8f, 0.1f);
    return MB_OK;
}

static int same_config(const mb_config *x, const mb_config *y) {
    return x->d_model == y->d_model && x->n_layer == y->n_layer && x->d_state == y->d_state &&
           x->d_conv == y->d_conv && x->d_inner == y->d_inner && x->dt_rank == y->dt_rank &&
           x->rms_norm == y->rms_norm && x->tie_embeddings == y->tie_embeddings;
}

extern "C" int mb_cuda_model_upload(mb_cuda_model *dm, const mb_model *m) {
    if (!dm || !m || !m->params || !dm->params)
        return mb_fail(MB_EINVAL, "mb_cuda_model_upload: NULL argument");
    if (!same_config(&dm->cfg, &m->cfg) || m->n_params != dm->n_params)
        return mb_fail(MB_EINVAL, "mb_cuda_model_upload: model has a different config");
    MB_CUDA_TRY(cudaMemcpy(dm->params, m->params, (size_t)F(dm->n_params), cudaMemcpyHostToDevice),
                "mb_cuda_model_upload");
    return MB_OK;
}

extern "C" int mb_cuda_model_download(const mb_cuda_model *dm, mb_model *m) {
    if (!dm || !m || !m->params || !dm->params)
        return mb_fail(MB_EINVAL, "mb_cuda_model_download: NULL argument");
    if (!same_config(&dm->cfg, &m->cfg) || m->n_params != dm->n_params)
        return mb_fail(MB_EINVAL, "mb_cuda_model_download: model has a different config");
    MB_CUDA_TRY(cudaMemcpy(m->params, dm->params, (size_t)F(dm->n_params), cudaMemcpyDeviceToHost),
                "mb_cuda_model_download");
    return MB_OK;
}

extern "C" int mb_cuda_zero_grads(mb_cuda_model *dm) {
    if (!dm || !dm->grads) return mb_fail(MB_EINVAL, "mb_cuda_zero_grads: NULL model");
    MB_CUDA_TRY(cudaMemsetAsync(dm->grads, 0, (size_t)F(dm->n_params), (cudaStream_t)dm->stream),
                "mb_cuda_zero_grads");
    return MB_OK;
}

extern "C" int mb_cuda_grads_download(const mb_cuda_model *dm, float *grads) {
    if (!dm || !grads || !dm->grads) return mb_fail(MB_EINVAL, "mb_cuda_grads_download: NULL");
    MB_CUDA_TRY(cudaMemcpy(grads, dm->grads, (size_t)F(dm->n_params), cudaMemcpyDeviceToHost),
                "mb_cuda_grads_download");
    return MB_OK;
}

/* ------------------------------------------------------------------ per-layer views */

typedef struct {
    float *res_in, *mean, *rstd;
    float *xz, *xc, *dbc, *delta, *y, *h_chunks;
} layer_view;

static layer_view layer_at(const mb_cuda_acts *a, int64_t l) {
    const mb_config *c = &a->cfg;
    const int64_t BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    const int64_t s = l * a->lstride_mul;
    layer_view v;
    v.res_in = a->residual + s * BL * d;
    v.mean = a->mean + s * BL;
    v.rstd = a->rstd + s * BL;
    v.xz = a->xz + s * BL * 2 * Di;
    v.xc = a->xc + s * BL * Di;
    v.dbc = a->dbc + s * BL * (R + 2 * N);
    v.delta = a->delta + s * BL * Di;
    v.y = a->y + s * BL * Di;
    v.h_chunks = a->h_chunks ? a->h_chunks + s * a->B * Di * a->n_chunks * N : NULL;
    return v;
}

static float *final_residual(const mb_cuda_acts *a, float **mean, float **rstd) {
    const int64_t s = a->train ? a->cfg.n_layer : 1;
    *mean = a->mean + s * a->BL;
    *rstd = a->rstd + s * a->BL;
    return a->residual + s * a->BL * a->cfg.d_model;
}

static mb_scan_args scan_args(const mb_cuda_acts *a, const mb_layer_weights *lw,
                              const layer_view *v) {
    return mb_scan_layer_args(&a->cfg, a->B, a->L, a->chunk, v->xc, v->delta, v->dbc, v->xz,
                              lw->A_log, lw->D, v->h_chunks);
}

static int check_pair(const mb_cuda_model *dm, const mb_cuda_acts *a, const char *fn) {
    if (!dm || !a || !dm->params) return mb_fail(MB_EINVAL, "%s: model or acts is NULL", fn);
    const mb_config *x = &dm->cfg, *y = &a->cfg;
    if (!mb_config_same_shape(x, y))
        return mb_fail(MB_EINVAL, "%s: acts were created for a different config", fn);
    return MB_OK;
}

/* ------------------------------------------------------------------ forward */

/* Mixer of layer l on u = a->u (model.md "Mixer"), output into a->hout. */
static int mixer_forward(mb_cuda_model *dm, mb_cuda_acts *a, int64_t l, const layer_view *v) {
    const mb_config *c = &dm->cfg;
    const mb_layer_weights *lw = &dm->w.layers[l];
    const int64_t B = a->B, L = a->L, BL = a->BL, d = c->d_model, Di = c->d_inner;
    const int64_t N = c->d_state, R = c->dt_rank, K = c->d_conv, P = R + 2 * N;
    void *st = dm->stream;
    /* xz = u @ in_proj^T                                   (BL, 2Di) */
    MB_TRY(mb_matmul_cuda_forward(dm->cublas, v->xz, 2 * Di, a->u, d, lw->in_proj_w, BL, d, 2 * Di,
                                  0));
    /* xc = SiLU(causal depthwise conv(x) + b)              (BL, Di) */
    MB_TRY(mb_conv1d_cuda_forward(v->xc, v->xz, 2 * Di, lw->conv_w, lw->conv_b, B, L, Di, K, st));
    /* dbc = xc @ x_proj^T                                  (BL, R+2N) */
    MB_TRY(mb_matmul_cuda_forward(dm->cublas, v->dbc, P, v->xc, Di, lw->x_proj_w, BL, Di, P, 0));
    /* delta = softplus(dt_low @ dt_proj_w^T + dt_proj_b)   (BL, Di) */
    MB_TRY(
        mb_matmul_cuda_forward(dm->cublas, v->delta, Di, v->dbc, P, lw->dt_proj_w, BL, R, Di, 0));
    MB_TRY(mb_softplus_bias_cuda_forward(v->delta, lw->dt_proj_b, BL, Di, st));
    /* y = scan(xc, delta, A, B, C, D) * SiLU(z)            (BL, Di) */
    mb_scan_args sa = scan_args(a, lw, v);
    MB_TRY(mb_scan_cuda_forward(&sa, v->y, st));
    /* hout = y @ out_proj^T                                (BL, d) */
    MB_TRY(mb_matmul_cuda_forward(dm->cublas, a->hout, d, v->y, Di, lw->out_proj_w, BL, Di, d, 0));
    return MB_OK;
}

extern "C" int mb_cuda_forward(mb_cuda_model *dm, mb_cuda_acts *a, const uint8_t *x,
                               const uint8_t *targets, float *loss, float *logits) {
    MB_TRY(check_pair(dm, a, "mb_cuda_forward"));
    if (!x) return mb_fail(MB_EINVAL, "mb_cuda_forward: x is NULL");
    const mb_config *c = &dm->cfg;
    const mb_weights *w = &dm->w;
    const int64_t BL = a->BL, d = c->d_model, nl = c->n_layer;
    const float eps = c->norm_eps;
    cudaStream_t st = (cudaStream_t)dm->stream;
    a->can_backward = 0;
    if (loss) *loss = 0.0f;
    MB_CUDA_TRY(cudaMemcpyAsync(a->x, x, (size_t)BL, cudaMemcpyHostToDevice, st),
                "mb_cuda_forward: copying x");
    if (targets)
        MB_CUDA_TRY(cudaMemcpyAsync(a->targets, targets, (size_t)BL, cudaMemcpyHostToDevice, st),
                    "mb_cuda_forward: copying targets");
    /* residual_0 = h = embedding[x]                        (BL, d) */
    MB_TRY(mb_embedding_cuda_forward(a->residual, a->x, w->embedding, BL, d, st));
    for (int64_t l = 0; l < nl; l++) {
        const mb_layer_weights *lw = &w->layers[l];
        layer_view v = layer_at(a, l);
        if (l == 0)
            MB_TRY(mb_norm_cuda_forward(v.res_in, a->u, v.mean, v.rstd, v.res_in, NULL, lw->norm_w,
                                        lw->norm_b, BL, d, eps, st));
        else /* residual_l = h_{l-1} + residual_{l-1}, fused into the norm */
            MB_TRY(mb_norm_cuda_forward(v.res_in, a->u, v.mean, v.rstd, a->hout,
                                        layer_at(a, l - 1).res_in, lw->norm_w, lw->norm_b, BL, d,
                                        eps, st));
        MB_TRY(mixer_forward(dm, a, l, &v));
    }
    float *mf, *rf;
    float *resf = final_residual(a, &mf, &rf);
    MB_TRY(mb_norm_cuda_forward(resf, a->xf, mf, rf, a->hout, layer_at(a, nl - 1).res_in,
                                w->norm_f_w, w->norm_f_b, BL, d, eps, st));
    /* logits = xf @ lm_head^T                              (BL, 256) */
    MB_TRY(mb_matmul_cuda_forward(dm->cublas, a->logits, MB_VOCAB, a->xf, d, w->lm_head, BL, d,
                                  MB_VOCAB, 0));
    if (logits)
        MB_CUDA_TRY(cudaMemcpyAsync(logits, a->logits, (size_t)F(BL * MB_VOCAB),
                                    cudaMemcpyDeviceToHost, st),
                    "mb_cuda_forward: copying logits");
    double sum = 0.0;
    if (targets) {
        MB_TRY(mb_crossentropy_cuda(a->losses, NULL, a->logits, a->targets, BL, 0.0f, st));
        MB_TRY(mb_reduce_sum_cuda(a->loss_sum, a->scratch, a->losses, BL, 0, st));
        MB_CUDA_TRY(cudaMemcpyAsync(&sum, a->loss_sum, sizeof sum, cudaMemcpyDeviceToHost, st),
                    "mb_cuda_forward: copying the loss");
    } else {
        MB_CUDA_TRY(cudaMemsetAsync(a->losses, 0, (size_t)F(BL), st), "mb_cuda_forward");
    }
    MB_CUDA_TRY(cudaStreamSynchronize(st), "mb_cuda_forward");
    if (targets) {
        if (loss) *loss = (float)(sum / (double)BL);
        a->can_backward = a->train;
    }
    return MB_OK;
}

/* ------------------------------------------------------------------ backward */

/* Backward of the mixer of layer l: a->dres (BL, d) is the gradient of its output; writes the
 * gradient of its input u into a->du and accumulates the parameter gradients into g. */
static int mixer_backward(mb_cuda_model *dm, mb_cuda_acts *a, int64_t l, const layer_view *v,
                          const mb_layer_weights *g) {
    const mb_config *c = &dm->cfg;
    const mb_layer_weights *lw = &dm->w.layers[l];
    const int64_t B = a->B, L = a->L, BL = a->BL, d = c->d_model, Di = c->d_inner;
    const int64_t N = c->d_state, R = c->dt_rank, K = c->d_conv, P = R + 2 * N;
    void *st = dm->stream, *cb = dm->cublas;
    /* out_proj: h = y @ out_proj^T */
    MB_TRY(mb_matmul_cuda_backward_weight(cb, g->out_proj_w, a->dres, d, v->y, Di, BL, Di, d));
    MB_TRY(mb_matmul_cuda_backward_input(cb, a->dy, Di, a->dres, d, lw->out_proj_w, BL, Di, d, 0));
    /* scan: dxc, ddelta, dB, dC, dz (=); dA_log, dD (+=) */
    mb_scan_args sa = scan_args(a, lw, v);
    MB_TRY(mb_scan_cuda_backward(&sa, a->dy, a->dxc, a->ddelta, g->A_log, a->ddbc + R,
                                 a->ddbc + R + N, g->D, a->dxz + Di, st));
    /* softplus and dt_proj bias: d pre = d delta * (-expm1(-delta)) */
    MB_TRY(mb_softplus_bias_cuda_backward(a->ddelta, g->dt_proj_b, v->delta, BL, Di, st));
    /* dt_proj: pre = dt_low @ dt_proj_w^T + dt_proj_b */
    MB_TRY(mb_matmul_cuda_backward_weight(cb, g->dt_proj_w, a->ddelta, Di, v->dbc, P, BL, R, Di));
    MB_TRY(
        mb_matmul_cuda_backward_input(cb, a->ddbc, P, a->ddelta, Di, lw->dt_proj_w, BL, R, Di, 0));
    /* x_proj: dbc = xc @ x_proj^T; dxc already holds the scan's part */
    MB_TRY(mb_matmul_cuda_backward_weight(cb, g->x_proj_w, a->ddbc, P, v->xc, Di, BL, Di, P));
    MB_TRY(mb_matmul_cuda_backward_input(cb, a->dxc, Di, a->ddbc, P, lw->x_proj_w, BL, Di, P, 1));
    /* conv1d + SiLU -> x half of dxz (dxc is overwritten with the pre-activation gradient) */
    MB_TRY(mb_conv1d_cuda_backward(a->dxz, 2 * Di, g->conv_w, g->conv_b, a->dxc, v->xz, 2 * Di,
                                   lw->conv_w, lw->conv_b, B, L, Di, K, st));
    /* in_proj: xz = u @ in_proj^T, u recomputed from the stored norm input and statistics */
    MB_TRY(
        mb_norm_cuda_apply(a->u, v->res_in, v->mean, v->rstd, lw->norm_w, lw->norm_b, BL, d, st));
    MB_TRY(
        mb_matmul_cuda_backward_weight(cb, g->in_proj_w, a->dxz, 2 * Di, a->u, d, BL, d, 2 * Di));
    MB_TRY(mb_matmul_cuda_backward_input(cb, a->du, d, a->dxz, 2 * Di, lw->in_proj_w, BL, d, 2 * Di,
                                         0));
    return MB_OK;
}

extern "C" int mb_cuda_backward(mb_cuda_model *dm, mb_cuda_acts *a, float dloss) {
    MB_TRY(check_pair(dm, a, "mb_cuda_backward"));
    if (!a->can_backward)
        return mb_fail(MB_EINVAL, "mb_cuda_backward: the last forward was not mb_cuda_forward "
                                  "with targets on training acts");
    const mb_config *c = &dm->cfg;
    const mb_weights *w = &dm->w;
    const mb_weights *g = &dm->g;
    const int64_t BL = a->BL, d = c->d_model, nl = c->n_layer;
    void *st = dm->stream, *cb = dm->cublas;
    /* cross-entropy: dlogits = dloss * (softmax - onehot)                 (BL, 256) */
    MB_TRY(mb_crossentropy_cuda(NULL, a->dlogits, a->logits, a->targets, BL, dloss, st));
    /* lm_head (tied: the embedding's gradient) */
    MB_TRY(mb_matmul_cuda_backward_weight(cb, g->lm_head, a->dlogits, MB_VOCAB, a->xf, d, BL, d,
                                          MB_VOCAB));
    MB_TRY(mb_matmul_cuda_backward_input(cb, a->du, d, a->dlogits, MB_VOCAB, w->lm_head, BL, d,
                                         MB_VOCAB, 0));
    /* norm_f: dres = gradient of the final residual                       (BL, d) */
    float *mf, *rf;
    float *resf = final_residual(a, &mf, &rf);
    MB_TRY(mb_norm_cuda_backward(a->dres, g->norm_f_w, g->norm_f_b, a->du, resf, mf, rf,
                                 w->norm_f_w, BL, d, 0, st));
    for (int64_t l = nl - 1; l >= 0; l--) {
        layer_view v = layer_at(a, l);
        /* residual_{l+1} = mixer(norm(residual_l)) + residual_l: dres feeds both paths */
        MB_TRY(mixer_backward(dm, a, l, &v, &g->layers[l]));
        MB_TRY(mb_norm_cuda_backward(a->dres, g->layers[l].norm_w, g->layers[l].norm_b, a->du,
                                     v.res_in, v.mean, v.rstd, w->layers[l].norm_w, BL, d, 1, st));
    }
    /* embedding rows: residual_0 = embedding[x] */
    MB_TRY(mb_embedding_cuda_backward(g->embedding, a->x, a->dres, BL, d, st));
    MB_CUDA_TRY(cudaStreamSynchronize((cudaStream_t)st), "mb_cuda_backward");
    return MB_OK;
}

/* ------------------------------------------------------------------ optimizer */

extern "C" int mb_cuda_grad_norm(mb_cuda_model *dm, double *norm) {
    if (!dm || !dm->grads) return mb_fail(MB_EINVAL, "mb_cuda_grad_norm: NULL model");
    cudaStream_t st = (cudaStream_t)dm->stream;
    double *out = dm->scratch + MB_CUDA_REDUCE_SCRATCH - 1;
    MB_TRY(mb_reduce_sum_cuda(out, dm->scratch, dm->grads, dm->n_params, 1, st));
    double s = 0.0;
    MB_CUDA_TRY(cudaMemcpyAsync(&s, out, sizeof s, cudaMemcpyDeviceToHost, st),
                "mb_cuda_grad_norm");
    MB_CUDA_TRY(cudaStreamSynchronize(st), "mb_cuda_grad_norm");
    if (norm) *norm = sqrt(s);
    return MB_OK;
}

extern "C" int mb_cuda_grad_clip(mb_cuda_model *dm, double max_norm, double *norm) {
    double nrm = 0.0;
    MB_TRY(mb_cuda_grad_norm(dm, &nrm));
    if (norm) *norm = nrm;
    if (max_norm > 0.0 && nrm > max_norm && isfinite(nrm))
        MB_TRY(
            mb_scale_cuda(dm->grads, dm->n_params, (float)(max_norm / (nrm + 1e-6)), dm->stream));
    return MB_OK;
}

extern "C" void mb_cuda_adamw_set(mb_cuda_model *dm, float beta1, float beta2, float eps,
                                  float weight_decay) {
    if (!dm) return;
    dm->beta1 = beta1;
    dm->beta2 = beta2;
    dm->eps = eps;
    dm->weight_decay = weight_decay;
}

extern "C" int mb_cuda_adamw_update(mb_cuda_model *dm, float lr) {
    if (!dm || !dm->params) return mb_fail(MB_EINVAL, "mb_cuda_adamw_update: NULL model");
    dm->adam_step++;
    MB_TRY(mb_adamw_cuda_update(dm->params, dm->grads, dm->adam_m, dm->adam_v, dm->decay,
                                dm->n_params, dm->adam_step, lr, dm->beta1, dm->beta2, dm->eps,
                                dm->weight_decay, dm->stream));
    MB_CUDA_TRY(cudaStreamSynchronize((cudaStream_t)dm->stream), "mb_cuda_adamw_update");
    return MB_OK;
}
