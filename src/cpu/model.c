/* The whole model on the CPU: parallel forward over a batch (model.md "Forward", mamba_ssm
 * `MambaLMHeadModel` with fused_add_norm and residual_in_fp32), its backward, and the
 * stateful forward used for streamed evaluation and prompt prefill.
 *
 * Structure after llm.c's train_gpt2.c: one allocation for all activations with pointers
 * carved from it (each with its shape), layer functions over raw pointers, matrix products
 * through cblas over all B*L rows at once, OpenMP for the elementwise work. The selective
 * scan is src/cpu/scan.c; it keeps only chunk-boundary states, so no (L, Di, N) tensor.
 */
#include "cpu/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/activations.h"
#include "cpu/conv1d.h"
#include "cpu/crossentropy.h"
#include "cpu/matmul.h"
#include "cpu/norm.h"
#include "cpu/scan.h"

struct mb_acts {
    mb_config cfg;
    int64_t B, L, BL;
    int64_t chunk, n_chunks; /* scan chunking (mb_scan_default_chunk(L)) */
    int train;               /* per-layer storage and backward workspace present */
    int can_backward;        /* the last forward was mb_forward with targets */
    int64_t lstride_mul;     /* 1 when training (one slot per layer), 0 otherwise (shared) */
    uint8_t *x;              /* (B, L) input bytes of the last forward */
    uint8_t *targets;        /* (B, L) targets of the last forward */
    float *mem;              /* the one float allocation below */
    int64_t n_floats;

    /* per layer; in evaluation mode every layer uses slot 0 */
    float *residual; /* (n_layer + 1, B, L, d): input of layer l's norm (fp32 residual stream);
                        slot n_layer (slot 1 in evaluation mode) is the input of norm_f */
    float *mean;     /* (n_layer + 1, B, L) LayerNorm row means (unused for RMSNorm) */
    float *rstd;     /* (n_layer + 1, B, L) row 1/sqrt(var + eps) */
    float *xz;       /* (n_layer, B, L, 2Di) in_proj output: x = [..., :Di], z = [..., Di:] */
    float *xc;       /* (n_layer, B, L, Di) conv1d output after SiLU */
    float *dbc;      /* (n_layer, B, L, R+2N) x_proj output: dt_low (R), B (N), C (N) */
    float *delta;    /* (n_layer, B, L, Di) softplus(dt_low @ dt_proj_w^T + dt_proj_b) */
    float *y;        /* (n_layer, B, L, Di) gated scan output */
    float *h_chunks; /* (n_layer, B, Di, n_chunks, N) scan state entering each chunk
                        (training only) */
    /* head */
    float *xf;     /* (B, L, d) norm_f output */
    float *logits; /* (B, L, 256) */
    float *losses; /* (B, L) per-position cross-entropy (nats) */
    /* forward scratch */
    float *u;      /* (B, L, d) normalised input of the current layer */
    float *hout;   /* (B, L, d) mixer output of the current layer */
    float *h_last; /* (B, Di, N) final scan state of the current layer (stateful forward) */
    /* backward scratch (training only) */
    float *dres;    /* (B, L, d) gradient of the residual stream */
    float *du;      /* (B, L, d) gradient of a norm output */
    float *dxz;     /* (B, L, 2Di) */
    float *dxc;     /* (B, L, Di) gradient of the conv output (after SiLU) */
    float *ddelta;  /* (B, L, Di) gradient of delta, then of the pre-softplus dt */
    float *ddbc;    /* (B, L, R+2N) */
    float *dy;      /* (B, L, Di) gradient of the gated scan output */
    float *dlogits; /* (B, L, 256) */
};

/* ------------------------------------------------------------------ allocation */

typedef struct {
    float **ptr;
    int64_t n;
} carve_item;

/* round every buffer up to 16 floats (64 bytes) so each starts on a cache line */
static int64_t round16(int64_t n) {
    return (n + 15) & ~(int64_t)15;
}

/* Fill the table of buffers for a shape; returns the number of entries. */
static int acts_table(mb_acts *a, carve_item *t) {
    const mb_config *c = &a->cfg;
    int64_t BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    int64_t nl = a->train ? c->n_layer : 1; /* layer slots */
    int k = 0;
    t[k++] = (carve_item){&a->residual, (nl + 1) * BL * d};
    t[k++] = (carve_item){&a->mean, (nl + 1) * BL};
    t[k++] = (carve_item){&a->rstd, (nl + 1) * BL};
    t[k++] = (carve_item){&a->xz, nl * BL * 2 * Di};
    t[k++] = (carve_item){&a->xc, nl * BL * Di};
    t[k++] = (carve_item){&a->dbc, nl * BL * (R + 2 * N)};
    t[k++] = (carve_item){&a->delta, nl * BL * Di};
    t[k++] = (carve_item){&a->y, nl * BL * Di};
    t[k++] = (carve_item){&a->h_chunks, a->train ? nl * a->B * Di * a->n_chunks * N : 0};
    t[k++] = (carve_item){&a->xf, BL * d};
    t[k++] = (carve_item){&a->logits, BL * MB_VOCAB};
    t[k++] = (carve_item){&a->losses, BL};
    t[k++] = (carve_item){&a->u, BL * d};
    t[k++] = (carve_item){&a->hout, BL * d};
    t[k++] = (carve_item){&a->h_last, a->B * Di * N};
    int64_t tr = a->train ? 1 : 0;
    t[k++] = (carve_item){&a->dres, tr * BL * d};
    t[k++] = (carve_item){&a->du, tr * BL * d};
    t[k++] = (carve_item){&a->dxz, tr * BL * 2 * Di};
    t[k++] = (carve_item){&a->dxc, tr * BL * Di};
    t[k++] = (carve_item){&a->ddelta, tr * BL * Di};
    t[k++] = (carve_item){&a->ddbc, tr * BL * (R + 2 * N)};
    t[k++] = (carve_item){&a->dy, tr * BL * Di};
    t[k++] = (carve_item){&a->dlogits, tr * BL * MB_VOCAB};
    return k;
}

#define ACTS_MAX_ITEMS 32

static int acts_shape(mb_acts *a, const mb_config *c, int64_t B, int64_t L, int for_training,
                      int64_t chunk) {
    memset(a, 0, sizeof *a);
    if (!c) return mb_fail(MB_EINVAL, "mb_acts_create: config is NULL");
    a->cfg = *c;
    int rc = mb_config_finalize(&a->cfg);
    if (rc) return rc;
    if (B <= 0 || L <= 0 || B > ((int64_t)1 << 24) || L > ((int64_t)1 << 30) ||
        B * L > ((int64_t)1 << 30))
        return mb_fail(MB_EINVAL,
                       "mb_acts_create: batch B=%lld and length L=%lld must be positive with "
                       "B*L <= 2^30",
                       (long long)B, (long long)L);
    a->B = B;
    a->L = L;
    a->BL = B * L;
    if (chunk < 0) return mb_fail(MB_EINVAL, "mb_acts_create: chunk must be >= 0");
    a->chunk = chunk ? (chunk < L ? chunk : L) : mb_scan_default_chunk(L);
    a->n_chunks = mb_scan_n_chunks(L, a->chunk);
    a->train = for_training ? 1 : 0;
    a->lstride_mul = a->train;
    carve_item t[ACTS_MAX_ITEMS];
    int n = acts_table(a, t);
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += round16(t[i].n);
    a->n_floats = total;
    return MB_OK;
}

int mb_mem_fits(int64_t need, int64_t *avail) {
    *avail = -1;
    if (need <= ((int64_t)256 << 20)) return 1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    if (kb <= 0) return 1;
    *avail = (int64_t)kb * 1024;
    return (double)need <= 0.9 * (double)*avail;
}

int64_t mb_acts_bytes(const mb_config *c, int64_t B, int64_t L, int for_training, int64_t chunk) {
    mb_acts a;
    if (acts_shape(&a, c, B, L, for_training, chunk)) return -1;
    return a.n_floats * (int64_t)sizeof(float) + 2 * a.BL + (int64_t)sizeof(mb_acts);
}

mb_acts *mb_acts_create_ex(const mb_config *c, int64_t B, int64_t L, int for_training,
                           int64_t chunk) {
    mb_acts *a = malloc(sizeof *a);
    if (!a) {
        mb_fail(MB_ENOMEM, "mb_acts_create: out of memory");
        return NULL;
    }
    if (acts_shape(a, c, B, L, for_training, chunk)) {
        free(a);
        return NULL;
    }
    size_t bytes = (size_t)a->n_floats * sizeof(float);
    a->mem = aligned_alloc(64, bytes);
    a->x = malloc((size_t)a->BL);
    a->targets = malloc((size_t)a->BL);
    if (!a->mem || !a->x || !a->targets) {
        mb_fail(MB_ENOMEM, "mb_acts_create: out of memory for B=%lld L=%lld (%lld bytes)",
                (long long)B, (long long)L, (long long)bytes);
        mb_acts_free(a);
        return NULL;
    }
    memset(a->mem, 0, bytes);
    carve_item t[ACTS_MAX_ITEMS];
    int n = acts_table(a, t);
    float *p = a->mem;
    for (int i = 0; i < n; i++) {
        *t[i].ptr = t[i].n ? p : NULL;
        p += round16(t[i].n);
    }
    return a;
}

/* Activations for training (every layer kept); see mb_acts_create_ex. */
mb_acts *mb_acts_create(const mb_config *c, int64_t B, int64_t L) {
    return mb_acts_create_ex(c, B, L, 1, 0);
}

void mb_acts_free(mb_acts *a) {
    if (!a) return;
    free(a->mem);
    free(a->x);
    free(a->targets);
    free(a);
}

const float *mb_acts_losses(const mb_acts *a) {
    return a ? a->losses : NULL;
}

int64_t mb_acts_batch(const mb_acts *a) {
    return a->B;
}

int64_t mb_acts_seq_len(const mb_acts *a) {
    return a->L;
}

/* ------------------------------------------------------------------ per-layer views */

typedef struct {
    float *res_in; /* (B, L, d) norm input */
    float *mean;   /* (B, L) */
    float *rstd;   /* (B, L) */
    float *xz, *xc, *dbc, *delta, *y, *h_chunks;
} layer_view;

static layer_view layer_at(const mb_acts *a, int64_t l) {
    const mb_config *c = &a->cfg;
    int64_t BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    int64_t s = l * a->lstride_mul; /* slot */
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

/* The final residual (input of norm_f) and its statistics. */
static float *final_residual(const mb_acts *a, float **mean, float **rstd) {
    int64_t s = a->train ? a->cfg.n_layer : 1;
    *mean = a->mean + s * a->BL;
    *rstd = a->rstd + s * a->BL;
    return a->residual + s * a->BL * a->cfg.d_model;
}

static mb_scan_args scan_args(const mb_acts *a, const mb_layer_weights *lw, const layer_view *v) {
    return mb_scan_layer_args(&a->cfg, a->B, a->L, a->chunk, v->xc, v->delta, v->dbc, v->xz,
                              lw->A_log, lw->D, v->h_chunks);
}

/* ------------------------------------------------------------------ forward */

static int check_pair(const mb_model *m, const mb_acts *a, const char *fn) {
    if (!m || !a || !m->params) return mb_fail(MB_EINVAL, "%s: model or acts is NULL", fn);
    const mb_config *x = &m->cfg, *y = &a->cfg;
    if (!mb_config_same_shape(x, y))
        return mb_fail(MB_EINVAL, "%s: acts were created for a different config", fn);
    return MB_OK;
}

/* Mixer of layer l on u = a->u (model.md "Mixer"), output into a->hout. `s` (or NULL for
 * zero initial states) supplies and receives the conv and SSM states. */
static void mixer_forward(const mb_model *m, mb_acts *a, int64_t l, const layer_view *v,
                          mb_state *s) {
    const mb_config *c = &m->cfg;
    const mb_layer_weights *lw = &m->w.layers[l];
    int64_t B = a->B, L = a->L, BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state;
    int64_t R = c->dt_rank, K = c->d_conv, P = R + 2 * N;
    /* xz = u @ in_proj^T                                   (BL, 2Di) */
    mb_matmul_forward(v->xz, 2 * Di, a->u, d, lw->in_proj_w, BL, d, 2 * Di, 0);
    /* xc = SiLU(causal depthwise conv(x) + b)              (BL, Di) */
    float *conv_state = s ? s->conv + l * s->n_seq * (K - 1) * Di : NULL;
    mb_conv1d_forward(v->xc, v->xz, 2 * Di, lw->conv_w, lw->conv_b, conv_state, B, L, Di, K);
    if (conv_state) mb_conv1d_update_state(conv_state, v->xz, 2 * Di, B, L, Di, K);
    /* dbc = xc @ x_proj^T                                  (BL, R+2N) */
    mb_matmul_forward(v->dbc, P, v->xc, Di, lw->x_proj_w, BL, Di, P, 0);
    /* delta = softplus(dt_low @ dt_proj_w^T + dt_proj_b)   (BL, Di) */
    mb_matmul_forward(v->delta, Di, v->dbc, P, lw->dt_proj_w, BL, R, Di, 0);
    float *delta = v->delta;
    const float *dtb = lw->dt_proj_b;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < BL; i++)
        for (int64_t ch = 0; ch < Di; ch++)
            delta[i * Di + ch] = mb_softplusf(delta[i * Di + ch] + dtb[ch]);
    /* y = scan(xc, delta, A, B, C, D) * SiLU(z)            (BL, Di) */
    mb_scan_args sa = scan_args(a, lw, v);
    float *ssm = s ? s->ssm + l * s->n_seq * Di * N : NULL;
    sa.h0 = ssm;
    sa.h_last = ssm ? a->h_last : NULL;
    mb_scan_forward(&sa, v->y);
    if (ssm) memcpy(ssm, a->h_last, (size_t)(B * Di * N) * sizeof(float));
    /* hout = y @ out_proj^T                                (BL, d) */
    mb_matmul_forward(a->hout, d, v->y, Di, lw->out_proj_w, BL, Di, d, 0);
}

static float forward_impl(const mb_model *m, mb_acts *a, mb_state *s, const uint8_t *x,
                          const uint8_t *targets, float *logits) {
    const mb_config *c = &m->cfg;
    const mb_weights *w = &m->w;
    int64_t BL = a->BL, d = c->d_model, nl = c->n_layer;
    float eps = c->norm_eps;
    a->can_backward = 0;
    memcpy(a->x, x, (size_t)BL);
    /* residual_0 = h = embedding[x]                        (BL, d) */
    float *res0 = a->residual;
    const float *emb = w->embedding;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < BL; i++)
        memcpy(res0 + i * d, emb + (int64_t)x[i] * d, d * sizeof(float));
    for (int64_t l = 0; l < nl; l++) {
        const mb_layer_weights *lw = &w->layers[l];
        layer_view v = layer_at(a, l);
        if (l == 0)
            mb_norm_forward(v.res_in, a->u, v.mean, v.rstd, v.res_in, NULL, lw->norm_w, lw->norm_b,
                            BL, d, eps);
        else /* residual_l = h_{l-1} + residual_{l-1}: fused into the norm */
            mb_norm_forward(v.res_in, a->u, v.mean, v.rstd, a->hout, layer_at(a, l - 1).res_in,
                            lw->norm_w, lw->norm_b, BL, d, eps);
        mixer_forward(m, a, l, &v, s);
    }
    float *mf, *rf;
    float *resf = final_residual(a, &mf, &rf);
    mb_norm_forward(resf, a->xf, mf, rf, a->hout, layer_at(a, nl - 1).res_in, w->norm_f_w,
                    w->norm_f_b, BL, d, eps);
    /* logits = xf @ lm_head^T                              (BL, 256) */
    mb_matmul_forward(a->logits, MB_VOCAB, a->xf, d, w->lm_head, BL, d, MB_VOCAB, 0);
    if (logits) memcpy(logits, a->logits, (size_t)BL * MB_VOCAB * sizeof(float));
    if (!targets) {
        memset(a->losses, 0, (size_t)BL * sizeof(float));
        return 0.0f;
    }
    memcpy(a->targets, targets, (size_t)BL);
    double sum = mb_crossentropy_forward(a->losses, a->logits, targets, BL);
    a->can_backward = a->train && !s;
    return (float)(sum / (double)BL);
}

/* Parallel forward over a batch from zero states (model.md "Forward"). x and targets are
 * (B, L) bytes with the B, L of the acts; logits (B, L, 256) or NULL. Returns the mean
 * cross-entropy in nats (0 without targets), NAN with the error set on bad arguments. */
float mb_forward(const mb_model *m, mb_acts *a, const uint8_t *x, const uint8_t *targets,
                 float *logits) {
    if (check_pair(m, a, "mb_forward")) return NAN;
    if (!x) {
        mb_fail(MB_EINVAL, "mb_forward: x is NULL");
        return NAN;
    }
    return forward_impl(m, a, NULL, x, targets, logits);
}

/* Forward from carried states (streamed evaluation, prompt prefill): layer l of sequence b
 * starts from s->conv[l, b] (K-1, Di) and s->ssm[l, b] (Di, N) and leaves there the states
 * after its L bytes. s->n_seq must equal the acts' B. No backward afterwards. */
float mb_forward_stateful(const mb_model *m, mb_acts *a, mb_state *s, const uint8_t *x,
                          const uint8_t *targets, float *logits) {
    if (check_pair(m, a, "mb_forward_stateful")) return NAN;
    if (!x || !s || !s->conv || !s->ssm) {
        mb_fail(MB_EINVAL, "mb_forward_stateful: x or state is NULL");
        return NAN;
    }
    if (s->n_seq != a->B) {
        mb_fail(MB_EINVAL, "mb_forward_stateful: state has n_seq=%lld but acts have B=%lld",
                (long long)s->n_seq, (long long)a->B);
        return NAN;
    }
    if (s->cfg.d_inner != m->cfg.d_inner || s->cfg.d_state != m->cfg.d_state ||
        s->cfg.d_conv != m->cfg.d_conv || s->cfg.n_layer != m->cfg.n_layer) {
        mb_fail(MB_EINVAL, "mb_forward_stateful: state was created for a different config");
        return NAN;
    }
    return forward_impl(m, a, s, x, targets, logits);
}

/* ------------------------------------------------------------------ backward */

/* Backward of the mixer of layer l: dres (BL, d) is the gradient of its output h; writes the
 * gradient of its input u into a->du and accumulates the parameter gradients into g. */
static void mixer_backward(const mb_model *m, mb_acts *a, int64_t l, const layer_view *v,
                           const mb_layer_weights *g) {
    const mb_config *c = &m->cfg;
    const mb_layer_weights *lw = &m->w.layers[l];
    int64_t B = a->B, L = a->L, BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state;
    int64_t R = c->dt_rank, K = c->d_conv, P = R + 2 * N;
    /* out_proj: h = y @ out_proj^T */
    mb_matmul_backward_weight(g->out_proj_w, a->dres, d, v->y, Di, BL, Di, d);
    mb_matmul_backward_input(a->dy, Di, a->dres, d, lw->out_proj_w, BL, Di, d, 0);
    /* scan: dxc, ddelta, dB, dC, dz (=); dA_log, dD (+=) */
    mb_scan_args sa = scan_args(a, lw, v);
    mb_scan_backward(&sa, a->dy, a->dxc, a->ddelta, g->A_log, a->ddbc + R, a->ddbc + R + N, g->D,
                     a->dxz + Di);
    /* softplus: d pre = d delta * sigmoid(pre) = d delta * (-expm1(-delta)) */
    float *dd = a->ddelta;
    const float *delta = v->delta;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < BL * Di; i++)
        dd[i] *= mb_softplus_grad_from_outputf(delta[i]);
    /* dt_proj: pre = dt_low @ dt_proj_w^T + dt_proj_b */
    mb_bias_backward(g->dt_proj_b, dd, Di, BL, Di);
    mb_matmul_backward_weight(g->dt_proj_w, dd, Di, v->dbc, P, BL, R, Di);
    mb_matmul_backward_input(a->ddbc, P, dd, Di, lw->dt_proj_w, BL, R, Di, 0);
    /* x_proj: dbc = xc @ x_proj^T; dxc already holds the scan's part */
    mb_matmul_backward_weight(g->x_proj_w, a->ddbc, P, v->xc, Di, BL, Di, P);
    mb_matmul_backward_input(a->dxc, Di, a->ddbc, P, lw->x_proj_w, BL, Di, P, 1);
    /* conv1d + SiLU -> dx half of dxz */
    mb_conv1d_backward(a->dxz, 2 * Di, g->conv_w, g->conv_b, a->dxc, v->xz, 2 * Di, lw->conv_w,
                       lw->conv_b, B, L, Di, K);
    /* in_proj: xz = u @ in_proj^T, u recomputed from the stored norm input and statistics */
    mb_norm_apply(a->u, v->res_in, v->mean, v->rstd, lw->norm_w, lw->norm_b, BL, d);
    mb_matmul_backward_weight(g->in_proj_w, a->dxz, 2 * Di, a->u, d, BL, d, 2 * Di);
    mb_matmul_backward_input(a->du, d, a->dxz, 2 * Di, lw->in_proj_w, BL, d, 2 * Di, 0);
}

/* Backward of the last mb_forward (with targets, training acts): adds
 * d(dloss * sum_positions CE)/dparam into grads (n_params floats, parameter layout). With tied
 * embeddings the lm_head and embedding gradients both land in the embedding. Does nothing
 * (error set) when the last forward cannot be differentiated. */
void mb_backward(const mb_model *m, mb_acts *a, float dloss, float *grads) {
    if (check_pair(m, a, "mb_backward") || !grads) {
        if (!grads) mb_fail(MB_EINVAL, "mb_backward: grads is NULL");
        return;
    }
    if (!a->can_backward) {
        mb_fail(MB_EINVAL, "mb_backward: the last forward was not mb_forward with targets on "
                           "training acts");
        return;
    }
    const mb_config *c = &m->cfg;
    const mb_weights *w = &m->w;
    mb_weights g;
    if (mb_weights_bind(c, grads, &g)) return;
    int64_t BL = a->BL, d = c->d_model, nl = c->n_layer;
    /* cross-entropy: dlogits = dloss * (softmax - onehot)                 (BL, 256) */
    mb_crossentropy_backward(a->dlogits, a->logits, a->targets, BL, dloss);
    /* lm_head (tied: the embedding's gradient) */
    mb_matmul_backward_weight(g.lm_head, a->dlogits, MB_VOCAB, a->xf, d, BL, d, MB_VOCAB);
    mb_matmul_backward_input(a->du, d, a->dlogits, MB_VOCAB, w->lm_head, BL, d, MB_VOCAB, 0);
    /* norm_f: dres = gradient of the final residual                       (BL, d) */
    float *mf, *rf;
    float *resf = final_residual(a, &mf, &rf);
    mb_norm_backward(a->dres, g.norm_f_w, g.norm_f_b, a->du, resf, mf, rf, w->norm_f_w, BL, d, 0);
    for (int64_t l = nl - 1; l >= 0; l--) {
        layer_view v = layer_at(a, l);
        const mb_layer_weights *lw = &w->layers[l];
        /* residual_{l+1} = mixer(norm(residual_l)) + residual_l: dres feeds both paths */
        mixer_backward(m, a, l, &v, &g.layers[l]);
        mb_norm_backward(a->dres, g.layers[l].norm_w, g.layers[l].norm_b, a->du, v.res_in, v.mean,
                         v.rstd, lw->norm_w, BL, d, 1);
    }
    /* embedding rows: residual_0 = embedding[x]; column blocks keep a fixed summation order */
    float *ge = g.embedding;
    const float *dres = a->dres;
    const uint8_t *x = a->x;
    int64_t nblk = (d + 15) / 16;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t j0 = blk * 16, j1 = j0 + 16 < d ? j0 + 16 : d;
        for (int64_t i = 0; i < BL; i++) {
            float *row = ge + (int64_t)x[i] * d;
            for (int64_t j = j0; j < j1; j++)
                row[j] += dres[i * d + j];
        }
    }
    mb_weights_free(&g);
}
