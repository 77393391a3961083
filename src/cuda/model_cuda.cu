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
#include "cuda/bf16_cuda.h"
#include "cuda/conv1d_cuda.h"
#include "cuda/crossentropy_cuda.h"
#include "cuda/cuda_check.h"
#include "cuda/dt_proj_cuda.h"
#include "cuda/embedding_cuda.h"
#include "cuda/matmul_cuda.h"
#include "cuda/norm_cuda.h"
#include "cuda/profile_cuda.h"
#include "cuda/scan_cuda.h"
#include "cuda/softplus_cuda.h"

/* MB_TRY with the call's GPU time attributed to a profile category (profile_cuda.h) */
#define PT(cat, expr)                                                                              \
    do {                                                                                           \
        const int slot_ = mb_prof_begin(cat, dm->stream);                                          \
        const int rc_ = (expr);                                                                    \
        mb_prof_end(slot_, dm->stream);                                                            \
        if (rc_) return rc_;                                                                       \
    } while (0)

struct mb_cuda_acts {
    mb_config cfg;
    int64_t B, L, BL;
    int64_t chunk, n_chunks; /* the scan's chunk and chunk count in the layers not dense */
    int train, can_backward, recompute, keep_scan, bf16;
    int dense;       /* MB_CUDA_ACTS_DENSE_SCAN in effect in n_dense > 0 layers */
    int64_t n_dense; /* layers 0 .. n_dense - 1 run the dense scan: chunk dchunk (8), their
                        states every dchunk positions and their y_pregate in slots of their
                        own; the others the plain form (chunk, n_chunks) */
    int64_t dchunk, dn_chunks; /* the dense layers' chunk and chunk count */
    int dt_fused; /* bf16 + fused scan: the dt projection writes softplus(. + bias) itself
                     (dt_proj_cuda.h) and the scan takes delta as effective (MB_CUDA_DT_FUSED=0:
                     the cuBLASLt product and the scan's own bias + softplus) */
    int fused;    /* softplus(delta + dt_proj.bias) inside the scan, whose bf16 mode writes the bf16
                     copies of y, ddelta and dz itself (MB_CUDA_SCAN_FUSED=0: separate kernels) */
    int xsplit;   /* bf16 training with the fused scan (MB_CUDA_XSPLIT=0: off): the conv's input x
                     and its gradient travel as bf16 only (as mamba_ssm's autocast activations):
                     in_proj writes x as bf16 into the first 2Di bytes of each xz row (row stride
                     4Di bf16; the rest of the x half unused) and z as fp32 in place; the scan
                     writes its part of dxc as bf16 (dxcb), the x_proj product its part (dxc2b),
                     and the conv adds them in fp32 (x in a contiguous buffer of its own measured
                     the same) */
    int in16;  /* xsplit with the fused dt projection (MB_CUDA_SCAN_IN16=0: off): the scan reads x
                  (the conv's bf16 output xcb) and delta (the dt projection's bf16 output deltab)
                  as bf16, as mamba_ssm's autocast passes them, so neither is stored in fp32; the
                  fp32 xc and delta keep one slot only for the stateful forward of a B 1
                  workspace (streamed scoring) */
    int z16;   /* in16 (MB_CUDA_SCAN_Z16=0: off): in_proj writes x and z as bf16 (xzb, one
                  product), the scan reads z, and in the backward dy (out_proj's input gradient,
                  dyb), as bf16, as mamba_ssm's autocast passes them; the fp32 xz keeps one slot
                  only for the stateful forward of a B 1 workspace, and there is no fp32 dy */
    int h16;   /* bf16 training at a d_model the bf16-input norms take (MB_CUDA_NORM_IN16=0: off):
                  out_proj writes its output (houtb) and in_proj's input-gradient product du (dub)
                  as bf16, which the norms read (as mamba_ssm's autocast; residual and its
                  gradient stay fp32); not for the stateful forward */
    int yp;    /* in16, unless every layer is dense (MB_CUDA_SCAN_YP=0: off): the scan forward
                  writes its output before the gate (with the D skip) as bf16 into the kept yb
                  slot (the dense layers: instead of the fp32 y_pregate) and the gated output
                  into the one ygb slot, which out_proj reads;
                  the scan backward reads the former instead of recomputing it, and writes the
                  gated output into ygb again for out_proj's weight gradient (as mamba_ssm keeps
                  its scan's `out` and recomputes out_z) */
    int cs16;  /* in16 (MB_CUDA_STATES_H16=0: off): the other layers' chunk states (every 64
                  positions) stored as bf16 too (mb_scan_cuda_opts.chunk_states_bf16), half the
                  bytes: with recomputation, 3.3 GiB at 353m's shape, room for more kept in_proj
                  outputs */
    int hc16;  /* dense with bf16 (MB_CUDA_DENSE_H16=0: off): the scan's states every 8 positions
                  stored as bf16 (mb_scan_cuda_opts.dense_states_bf16), half the bytes */
    int ukeep; /* bf16 training without recomputation (MB_CUDA_KEEP_U=0: off): the forward keeps
                  each layer's bf16 norm output (ub, one slot per layer) for the backward's
                  in_proj weight gradient, instead of the backward recomputing it from the
                  residual and statistics (mb_norm_cuda_apply: a read of the fp32 residual and a
                  write of ub per layer) */
    int64_t lstride_mul; /* mixer buffers: 1 when training without recomputation, else 0 */
    int64_t kstride_mul; /* scan chunk states and the y the backward reads: 1 when training
                            without recomputation or with MB_CUDA_ACTS_KEEP_SCAN, else 0 */
    int64_t rstride_mul; /* residual stream / norm statistics: 1 when training, else 0 */
    int64_t slot_layer;  /* recompute: layer whose mixer activations the slot holds (-1) */
    int64_t keep_xz;     /* recompute: layers 0 .. keep_xz - 1 keep their in_proj output (xz or
                            xzb) and x_proj output (dbc, dbcb) in a slot each, so the re-run
                            skips those products; the others share one slot
                            (MB_CUDA_ACTS_KEEP_XZ) */
    int64_t n_xz_rerun;  /* in_proj products re-run by the last mb_cuda_backward (tests) */
    void *mem;           /* the one device allocation */
    int64_t bytes;
    /* device buffers, shapes as in mb_acts (src/cpu/model.c) */
    float *residual;          /* (n_layer + 1, B, L, d) norm inputs; last slot feeds norm_f */
    float *mean;              /* (n_layer + 1, B, L) */
    float *rstd;              /* (n_layer + 1, B, L) */
    float *xz;                /* (n_layer, B, L, 2Di); recomputation: kept layers + 1 */
    float *xc;                /* (n_layer, B, L, Di) conv output after SiLU */
    float *dbc;               /* (n_layer, B, L, R+2N) */
    float *delta;             /* (n_layer, B, L, Di) */
    float *y;                 /* (n_layer, B, L, Di) gated scan output */
    float *h_chunks;          /* (n_layer, B, Di, n_chunks, N) (training only; kept slots) */
    float *y_pregate;         /* (n_layer, B, L, Di) scan output before the gate (dense only) */
    float *xf;                /* (B, L, d) norm_f output */
    float *logits;            /* (B, L, 256) */
    float *losses;            /* (B, L) */
    float *u;                 /* (B, L, d) */
    float *hout;              /* (B, L, d) */
    float *dres, *du;         /* (B, L, d) (training only) */
    float *dxz;               /* (B, L, 2Di) */
    float *dxc, *ddelta, *dy; /* (B, L, Di); ddelta NULL in fused bf16 mode, dxc with xsplit */
    float *ddbc;              /* (B, L, R+2N) */
    float *dlogits;           /* (B, L, 256) */
    double *loss_sum;         /* (1) */
    double *scratch;          /* (MB_CUDA_REDUCE_SCRATCH) */
    uint8_t *x, *targets;     /* (B, L) */
    float *conv_next;         /* (B, K-1, Di) next conv state (stateful forward) */
    float *h0;                /* (B, Di, N) entering SSM state (stateful forward) */
    /* bf16 operand copies (bf16 mode only), same row strides as their fp32 sources */
    uint16_t *ub;           /* (n_slot_u, B, L, d): n_layer slots with ukeep, else 1 */
    uint16_t *xfb;          /* (B, L, d) */
    uint16_t *xcb, *yb;     /* (n_slot, B, L, Di) */
    uint16_t *dbcb;         /* (n_slot, B, L, R+2N): the dt_low columns */
    uint16_t *dresb;        /* (B, L, d) */
    uint16_t *dxzb;         /* (B, L, 2Di) */
    uint16_t *ddeltab;      /* (B, L, Di) */
    uint16_t *deltab;       /* (n_slot, B, L, Di) the effective delta (in16 only) */
    uint16_t *xzb;          /* (n_slot, B, L, 2Di) in_proj's output (z16 only) */
    uint16_t *dyb;          /* (B, L, Di) the gradient of the scan's gated output (z16 only) */
    uint16_t *ygb;          /* (B, L, Di) the forward's gated scan output (yp only) */
    uint16_t *houtb, *dub;  /* (B, L, d) (h16 only) */
    uint16_t *dxcb, *dxc2b; /* (B, L, Di) (xsplit only) */
    uint16_t *ddbcb;        /* (B, L, R+2N) */
    uint16_t *dlogitsb;     /* (B, L, 256) */
};

/* ------------------------------------------------------------------ carving */

typedef struct {
    void **ptr;
    int64_t bytes;
} carve_item;

static int64_t mb_min_i64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

static int64_t round256(int64_t n) {
    return (n + 255) & ~(int64_t)255;
}

#define F(n) ((int64_t)(n) * (int64_t)sizeof(float))

/* bytes of one dense layer's scan states (hc16: bf16, half the floats' bytes) */
static int64_t dense_states_bytes(const mb_cuda_acts *a) {
    return F(a->B * a->cfg.d_inner * a->dn_chunks * a->cfg.d_state) / (a->hc16 ? 2 : 1);
}

/* bytes of one other layer's chunk states (cs16: bf16) */
static int64_t chunk_states_bytes(const mb_cuda_acts *a) {
    return F(a->B * a->cfg.d_inner * a->n_chunks * a->cfg.d_state) / (a->cs16 ? 2 : 1);
}

static int acts_table(mb_cuda_acts *a, carve_item *t) {
    const mb_config *c = &a->cfg;
    const int64_t BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    const int64_t nr = a->train ? c->n_layer : 1;                  /* residual slots - 1 */
    const int64_t nl = a->train && !a->recompute ? c->n_layer : 1; /* mixer slots */
    const int64_t nk = a->kstride_mul ? c->n_layer : 1;            /* kept scan slots */
    /* in_proj output slots: with recomputation the kept layers' plus one shared by the rest */
    const int64_t nxz = a->recompute ? mb_min_i64(a->keep_xz + 1, c->n_layer) : nl;
    /* fp32 y: in bf16 mode the backward reads the bf16 copy, which the fused scan writes */
    const int64_t ny = a->bf16 ? (a->fused ? 0 : nl) : nk;
    const int64_t tr = a->train ? 1 : 0, hb = a->bf16 ? 1 : 0, P = R + 2 * N;
    int k = 0;
    t[k++] = (carve_item){(void **)&a->residual, F((nr + 1) * BL * d)};
    t[k++] = (carve_item){(void **)&a->mean, F((nr + 1) * BL)};
    t[k++] = (carve_item){(void **)&a->rstd, F((nr + 1) * BL)};
    /* z16: in_proj's output as bf16 (xzb); an fp32 one for a B 1 stateful forward only */
    t[k++] = (carve_item){(void **)&a->xz, F((a->z16 ? (a->B == 1 ? 1 : 0) : nxz) * BL * 2 * Di)};
    /* in16: the scan reads bf16 x and delta; fp32 ones for a B 1 stateful forward only */
    const int64_t nx = a->in16 ? (a->B == 1 ? 1 : 0) : nl;
    t[k++] = (carve_item){(void **)&a->xc, F(nx * BL * Di)};
    t[k++] = (carve_item){(void **)&a->dbc, F(nxz * BL * (R + 2 * N))};
    t[k++] = (carve_item){(void **)&a->delta, F(nx * BL * Di)};
    t[k++] = (carve_item){(void **)&a->y, F(ny * BL * Di)};
    /* (hc16: bf16 states, half the bytes) */
    t[k++] = (carve_item){(void **)&a->h_chunks, tr * (a->n_dense * dense_states_bytes(a) +
                                                       (nk - a->n_dense) * chunk_states_bytes(a))};
    t[k++] = (carve_item){(void **)&a->y_pregate, F((a->yp ? 0 : a->n_dense) * BL * Di)};
    /* the fp32 norm outputs feed only fp32 products: bf16 mode keeps their bf16 copies alone */
    t[k++] = (carve_item){(void **)&a->xf, F((1 - hb) * BL * d)};
    t[k++] = (carve_item){(void **)&a->logits, F(BL * MB_VOCAB)};
    t[k++] = (carve_item){(void **)&a->losses, F(BL)};
    t[k++] = (carve_item){(void **)&a->u, F((1 - hb) * BL * d)};
    t[k++] = (carve_item){(void **)&a->hout, F(BL * d)};
    t[k++] = (carve_item){(void **)&a->dres, F(tr * BL * d)};
    t[k++] = (carve_item){(void **)&a->du, F(tr * BL * d)};
    /* fp32 dxz: in bf16 mode with the fused scan nothing reads it (the scan writes dz and the
     * conv dx as bf16 only, which the in_proj products take) */
    t[k++] = (carve_item){(void **)&a->dxz, F((a->bf16 && a->fused ? 0 : tr) * BL * 2 * Di)};
    t[k++] = (carve_item){(void **)&a->dxc, F((a->xsplit ? 0 : tr) * BL * Di)};
    /* fp32 ddelta: not needed when the fused bf16 scan writes only its bf16 copy */
    t[k++] = (carve_item){(void **)&a->ddelta, F((a->bf16 && a->fused ? 0 : tr) * BL * Di)};
    t[k++] = (carve_item){(void **)&a->ddbc, F(tr * BL * (R + 2 * N))};
    t[k++] = (carve_item){(void **)&a->dy, F((a->z16 ? 0 : tr) * BL * Di)};
    t[k++] = (carve_item){(void **)&a->dlogits, F(tr * BL * MB_VOCAB)};
    t[k++] = (carve_item){(void **)&a->loss_sum, (int64_t)sizeof(double)};
    t[k++] = (carve_item){(void **)&a->scratch, MB_CUDA_REDUCE_SCRATCH * (int64_t)sizeof(double)};
    t[k++] = (carve_item){(void **)&a->x, BL};
    t[k++] = (carve_item){(void **)&a->targets, BL};
    t[k++] = (carve_item){(void **)&a->conv_next, F(a->B * (c->d_conv - 1) * Di)};
    t[k++] = (carve_item){(void **)&a->h0, F(a->B * Di * N)};
#define H(n) ((int64_t)(n) * (int64_t)sizeof(uint16_t))
    t[k++] = (carve_item){(void **)&a->ub, H(hb * (a->ukeep ? c->n_layer : 1) * BL * d)};
    t[k++] = (carve_item){(void **)&a->xfb, H(hb * BL * d)};
    t[k++] = (carve_item){(void **)&a->xcb, H(hb * nl * BL * Di)};
    t[k++] = (carve_item){(void **)&a->yb, H(hb * nk * BL * Di)};
    t[k++] = (carve_item){(void **)&a->dbcb, H(hb * nxz * BL * P)};
    t[k++] = (carve_item){(void **)&a->dresb, H(hb * tr * BL * d)};
    t[k++] = (carve_item){(void **)&a->dxzb, H(hb * tr * BL * 2 * Di)};
    t[k++] = (carve_item){(void **)&a->ddeltab, H(hb * tr * BL * Di)};
    t[k++] = (carve_item){(void **)&a->deltab, H(a->in16 * nl * BL * Di)};
    t[k++] = (carve_item){(void **)&a->xzb, H(a->z16 * nxz * BL * 2 * Di)};
    t[k++] = (carve_item){(void **)&a->dyb, H(a->z16 * tr * BL * Di)};
    t[k++] = (carve_item){(void **)&a->ygb, H(a->yp * BL * Di)};
    t[k++] = (carve_item){(void **)&a->houtb, H(a->h16 * BL * d)};
    t[k++] = (carve_item){(void **)&a->dub, H(a->h16 * BL * d)};
    t[k++] = (carve_item){(void **)&a->dxcb, H(a->xsplit * tr * BL * Di)};
    t[k++] = (carve_item){(void **)&a->dxc2b, H(a->xsplit * tr * BL * Di)};
    t[k++] = (carve_item){(void **)&a->ddbcb, H(hb * tr * BL * P)};
    t[k++] = (carve_item){(void **)&a->dlogitsb, H(hb * tr * BL * MB_VOCAB)};
#undef H
    return k;
}

#define ACTS_MAX_ITEMS 64 /* (acts_table has 47 items; it writes them without a check) */

/* 1 when the environment variable name is set to "0" (a lab knob turning a form off) */
static int knob_off(const char *name) {
    const char *v = getenv(name);
    return v && !strcmp(v, "0");
}

static int acts_shape(mb_cuda_acts *a, const mb_config *c, int64_t B, int64_t L, int flags,
                      int64_t chunk) {
    const int train = flags & MB_CUDA_ACTS_TRAIN;
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
    a->train = train ? 1 : 0;
    a->recompute = a->train && (flags & MB_CUDA_ACTS_RECOMPUTE) ? 1 : 0;
    a->keep_scan = a->recompute && (flags & MB_CUDA_ACTS_KEEP_SCAN) ? 1 : 0;
    a->bf16 = flags & MB_CUDA_ACTS_BF16 ? 1 : 0;
    a->fused = !knob_off("MB_CUDA_SCAN_FUSED");
    /* only where the scan backward takes the dense form (else its memory buys nothing) */
    a->dense = a->train && !a->recompute && a->fused && (flags & MB_CUDA_ACTS_DENSE_SCAN) &&
               !chunk &&
               mb_scan_cuda_dense_supported(B, L, a->cfg.d_inner, a->cfg.d_state, a->cfg.dt_rank);
    if (a->dense) {
        const int64_t nd = MB_CUDA_ACTS_DENSE_LAYERS_OF(flags);
        a->n_dense = nd > 0 ? mb_min_i64(nd, a->cfg.n_layer) : a->cfg.n_layer;
    }
    a->chunk = chunk ? chunk : mb_scan_cuda_preferred_chunk();
    if (a->chunk > L) a->chunk = L;
    a->n_chunks = (L + a->chunk - 1) / a->chunk;
    a->dchunk = mb_min_i64(mb_scan_cuda_dense_chunk(), L);
    a->dn_chunks = (L + a->dchunk - 1) / a->dchunk;
    a->xsplit = a->train && a->bf16 && a->fused &&
                mb_conv1d_cuda_bf16in_supported(B, L, a->cfg.d_conv) && !knob_off("MB_CUDA_XSPLIT");
    a->dt_fused =
        a->bf16 && a->fused &&
        mb_dt_proj_softplus_supported(a->cfg.dt_rank, a->cfg.dt_rank + 2 * a->cfg.d_state) &&
        !knob_off("MB_CUDA_DT_FUSED");
    a->in16 = a->xsplit && a->dt_fused &&
              mb_scan_cuda_bf16in_supported(B, L, a->cfg.d_inner, a->cfg.d_state) &&
              !knob_off("MB_CUDA_SCAN_IN16");
    a->z16 = a->in16 && !knob_off("MB_CUDA_SCAN_Z16");
    a->h16 = a->train && a->bf16 && mb_norm_cuda_bf16in_supported(a->cfg.d_model) &&
             !knob_off("MB_CUDA_NORM_IN16");
    a->ukeep = a->train && a->bf16 && !a->recompute && !knob_off("MB_CUDA_KEEP_U");
    a->hc16 = a->dense && a->bf16 && !knob_off("MB_CUDA_DENSE_H16");
    a->cs16 = a->in16 && a->chunk % 32 == 0 && mb_scan_cuda_preferred_chunk() % a->chunk == 0 &&
              !knob_off("MB_CUDA_STATES_H16");
    /* (not where every layer is dense: there the fp32 y_pregate's form was faster, medium's
     * step 133.5 against 136.4 ms; YP is for the layers in the plain form, where it is the
     * faster, and for fitting more dense layers, at half the pre-gate output's bytes) */
    a->yp =
        a->in16 && (a->recompute || a->n_dense < a->cfg.n_layer) && !knob_off("MB_CUDA_SCAN_YP");
    a->keep_xz = a->recompute ? mb_min_i64(MB_CUDA_ACTS_KEEP_XZ_OF(flags), a->cfg.n_layer) : 0;
    a->lstride_mul = a->train && !a->recompute;
    a->kstride_mul = a->train && (!a->recompute || a->keep_scan);
    a->rstride_mul = a->train;
    a->slot_layer = -1;
    carve_item t[ACTS_MAX_ITEMS] = {};
    const int n = acts_table(a, t);
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += round256(t[i].bytes);
    a->bytes = total;
    return MB_OK;
}

extern "C" int64_t mb_cuda_acts_bytes_ex(const mb_config *c, int64_t B, int64_t L, int flags,
                                         int64_t chunk) {
    mb_cuda_acts a;
    if (acts_shape(&a, c, B, L, flags, chunk)) return -1;
    return a.bytes;
}

/* f | flag when the environment variable env forces it (env_knobs; "0": not, anything else:
 * yes), else when the workspace with it fits in budget bytes */
static int with_if_fits(const mb_config *c, int64_t B, int64_t L, int f, int flag, const char *env,
                        int env_knobs, double budget) {
    const char *e = env_knobs ? getenv(env) : NULL;
    if (e && *e) return strcmp(e, "0") != 0 ? f | flag : f;
    const int64_t bytes = mb_cuda_acts_bytes_ex(c, B, L, f | flag, 0);
    return bytes >= 0 && (double)bytes <= budget ? f | flag : f;
}

/* The flags a layer count n selects: KEEP_XZ(n), or for the dense scan none (0), every layer
 * (n >= n_layer) or DENSE_SCAN | DENSE_LAYERS(n) */
static int count_flags(const mb_config *c, int dense, int64_t n) {
    if (!dense) return MB_CUDA_ACTS_KEEP_XZ(n);
    if (n <= 0) return 0;
    return MB_CUDA_ACTS_DENSE_SCAN | (n >= c->n_layer ? 0 : MB_CUDA_ACTS_DENSE_LAYERS(n));
}

/* f | count_flags(n) for the most layers n in 0 .. nmax whose workspace fits in budget (bytes
 * grow with n), or for the count the environment variable env forces (env_knobs; a number;
 * anything else: the automatic choice) */
static int most_layers_that_fit(const mb_config *c, int64_t B, int64_t L, int f, int dense,
                                int64_t nmax, const char *env, int env_knobs, double budget) {
    const char *e = env_knobs ? getenv(env) : NULL;
    char *end = NULL;
    const long long v = e && *e ? strtoll(e, &end, 10) : -1;
    if (e && *e && end && !*end && v >= 0) return f | count_flags(c, dense, mb_min_i64(v, nmax));
    int64_t lo = 0, hi = nmax; /* invariant: lo fits, or lo == 0 */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        const int64_t b = mb_cuda_acts_bytes_ex(c, B, L, f | count_flags(c, dense, mid), 0);
        if (b >= 0 && (double)b <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    return f | count_flags(c, dense, lo);
}

extern "C" int mb_cuda_acts_plan(const mb_config *c, int64_t B, int64_t L, int base, int recompute,
                                 double budget, int env_knobs, int *flags, int *fits) {
    if (!flags) return mb_fail(MB_EINVAL, "mb_cuda_acts_plan: flags is NULL");
    base &= MB_CUDA_ACTS_TRAIN | MB_CUDA_ACTS_BF16;
    *flags = base;
    const int64_t full = mb_cuda_acts_bytes_ex(c, B, L, base, 0);
    if (full < 0) return MB_EINVAL; /* (message set by acts_shape) */
    int f = base;
    if (base & MB_CUDA_ACTS_TRAIN) {
        if (recompute == 0 || (recompute < 0 && (double)full <= budget)) {
            /* the dense scan in every layer, else in the most that fit (counts past 127 are
             * not expressed: all or up to 127) */
            const char *e = env_knobs ? getenv("MB_CUDA_DENSE_LAYERS") : NULL;
            f = with_if_fits(c, B, L, f, MB_CUDA_ACTS_DENSE_SCAN, "MB_CUDA_DENSE_SCAN", env_knobs,
                             budget);
            if (!(f & MB_CUDA_ACTS_DENSE_SCAN) || (e && *e)) {
                const char *k = env_knobs ? getenv("MB_CUDA_DENSE_SCAN") : NULL;
                if (!(k && !strcmp(k, "0")))
                    f = most_layers_that_fit(c, B, L, f & ~MB_CUDA_ACTS_DENSE_SCAN, 1,
                                             mb_min_i64(c->n_layer, 127), "MB_CUDA_DENSE_LAYERS",
                                             env_knobs, budget);
            }
        } else {
            f = with_if_fits(c, B, L, f | MB_CUDA_ACTS_RECOMPUTE, MB_CUDA_ACTS_KEEP_SCAN,
                             "MB_CUDA_KEEP_SCAN", env_knobs, budget);
            /* the most layers whose in_proj output fits */
            f = most_layers_that_fit(c, B, L, f, 0, mb_min_i64(c->n_layer, 0xffff),
                                     "MB_CUDA_KEEP_XZ", env_knobs, budget);
        }
    }
    *flags = f;
    if (fits) *fits = (double)mb_cuda_acts_bytes_ex(c, B, L, f, 0) <= budget;
    return MB_OK;
}

extern "C" int mb_cuda_acts_dense(const mb_cuda_acts *a) {
    return a ? a->dense : 0;
}

extern "C" int64_t mb_cuda_acts_dense_layers(const mb_cuda_acts *a) {
    return a ? a->n_dense : 0;
}

extern "C" int mb_cuda_acts_in16(const mb_cuda_acts *a) {
    return a ? a->in16 : 0;
}

extern "C" int mb_cuda_acts_z16(const mb_cuda_acts *a) {
    return a ? a->z16 : 0;
}

extern "C" int mb_cuda_acts_h16(const mb_cuda_acts *a) {
    return a ? a->h16 : 0;
}

extern "C" int mb_cuda_acts_yp(const mb_cuda_acts *a) {
    return a ? a->yp : 0;
}

extern "C" int mb_cuda_acts_hc16(const mb_cuda_acts *a) {
    return a ? a->hc16 : 0;
}

extern "C" int64_t mb_cuda_acts_xz_kept(const mb_cuda_acts *a) {
    return a ? a->keep_xz : 0;
}

extern "C" int64_t mb_cuda_acts_xz_reruns(const mb_cuda_acts *a) {
    return a ? a->n_xz_rerun : 0;
}

extern "C" int mb_cuda_acts_ukeep(const mb_cuda_acts *a) {
    return a ? a->ukeep : 0;
}

extern "C" int64_t mb_cuda_acts_bytes(const mb_config *c, int64_t B, int64_t L, int for_training,
                                      int64_t chunk) {
    return mb_cuda_acts_bytes_ex(c, B, L, for_training ? MB_CUDA_ACTS_TRAIN : 0, chunk);
}

extern "C" mb_cuda_acts *mb_cuda_acts_create(const mb_config *c, int64_t B, int64_t L,
                                             int for_training, int64_t chunk) {
    return mb_cuda_acts_create_ex(c, B, L, for_training ? MB_CUDA_ACTS_TRAIN : 0, chunk);
}

extern "C" mb_cuda_acts *mb_cuda_acts_create_ex(const mb_config *c, int64_t B, int64_t L, int flags,
                                                int64_t chunk) {
    mb_cuda_acts *a = (mb_cuda_acts *)malloc(sizeof *a);
    if (!a) {
        mb_fail(MB_ENOMEM, "mb_cuda_acts_create: out of host memory");
        return NULL;
    }
    if (acts_shape(a, c, B, L, flags, chunk)) {
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
    if (dm->cublaslt) mb_cublaslt_destroy(dm->cublaslt);
    if (dm->params_bf16) cudaFree(dm->params_bf16);
    if (dm->mem) cudaFree(dm->mem);
    mb_weights_free(&dm->w);
    mb_weights_free(&dm->g);
    free(dm->tensors);
    memset(dm, 0, sizeof *dm);
}

extern "C" int mb_cuda_model_create(mb_cuda_model *dm, const mb_config *c, int allow_tf32) {
    return mb_cuda_model_create_ex(dm, c, allow_tf32, 0);
}

extern "C" int mb_cuda_model_create_ex(mb_cuda_model *dm, const mb_config *c, int allow_tf32,
                                       int flags) {
    if (!dm || !c) return mb_fail(MB_EINVAL, "mb_cuda_model_create: NULL argument");
    const int infer = (flags & MB_CUDA_MODEL_INFERENCE) != 0;
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
    const int64_t nfl = infer ? 1 : 4; /* params (+ grads, adam_m, adam_v) */
    const int64_t total = nfl * fl + scratch + (infer ? 0 : round256(n));
    e = cudaMalloc(&dm->mem, (size_t)total);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        dm->mem = NULL;
        const int rc =
            mb_fail(e == cudaErrorMemoryAllocation ? MB_ENOMEM : MB_EIO,
                    "mb_cuda_model_create: cannot allocate %.3f GiB of device memory "
                    "for %lld parameters (%s): %s",
                    (double)total / (1 << 30), (long long)n,
                    infer ? "weights" : "weights, gradients, AdamW moments", cudaGetErrorString(e));
        mb_cuda_model_free(dm);
        return rc;
    }
    char *p = (char *)dm->mem;
    dm->params = (float *)p;
    if (!infer) {
        dm->grads = (float *)(p + fl);
        dm->adam_m = (float *)(p + 2 * fl);
        dm->adam_v = (float *)(p + 3 * fl);
        dm->decay = (uint8_t *)(p + 4 * fl + scratch);
    }
    dm->scratch = (double *)(p + nfl * fl);
    int rc = mb_weights_bind(&dm->cfg, dm->params, &dm->w);
    if (!rc && !infer) rc = mb_weights_bind(&dm->cfg, dm->grads, &dm->g);
    if (!rc) rc = mb_tensor_table(&dm->cfg, &dm->tensors, &dm->n_tensors);
    uint8_t *mask = rc || infer ? NULL : (uint8_t *)calloc((size_t)(n > 0 ? n : 1), 1);
    if (!rc && !infer && !mask) rc = mb_fail(MB_ENOMEM, "mb_cuda_model_create: out of host memory");
    if (!rc) {
        if (mask)
            for (int i = 0; i < dm->n_tensors; i++)
                if (dm->tensors[i].weight_decay)
                    memset(mask + dm->tensors[i].offset, 1, (size_t)dm->tensors[i].numel);
        e = cudaMemset(dm->mem, 0, (size_t)(nfl * fl + scratch));
        if (e == cudaSuccess && mask)
            e = cudaMemcpy(dm->decay, mask, (size_t)n, cudaMemcpyHostToDevice);
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

/* params_bf16 = bf16(params) when in bf16 mode */
static int refresh_bf16(mb_cuda_model *dm) {
    if (!dm->bf16) return MB_OK;
    return mb_bf16_from_f32_flat_cuda(dm->params_bf16, dm->params, dm->n_params, dm->stream);
}

extern "C" int mb_cuda_model_set_bf16(mb_cuda_model *dm, int on) {
    if (!dm || !dm->params) return mb_fail(MB_EINVAL, "mb_cuda_model_set_bf16: NULL model");
    if (on && !dm->params_bf16) {
        cudaError_t e = cudaMalloc(&dm->params_bf16, (size_t)dm->n_params * sizeof(uint16_t));
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            dm->params_bf16 = NULL;
            return mb_fail(e == cudaErrorMemoryAllocation ? MB_ENOMEM : MB_EIO,
                           "mb_cuda_model_set_bf16: cannot allocate %.3f GiB for the bf16 "
                           "weights: %s",
                           (double)dm->n_params * 2 / (1 << 30), cudaGetErrorString(e));
        }
    }
    if (on && !dm->cublaslt) {
        MB_TRY(mb_cublaslt_create(&dm->cublaslt, dm->stream));
        /* MB_CUDA_GEMM_TUNE=1: time cuBLASLt's candidates for each product's shape (training
         * sessions turn it on unless MB_CUDA_GEMM_TUNE=0, trainer_cuda.cu) */
        const char *t = getenv("MB_CUDA_GEMM_TUNE");
        mb_cublaslt_set_tune(dm->cublaslt, t && !strcmp(t, "1"));
    }
    dm->bf16 = on ? 1 : 0;
    return refresh_bf16(dm);
}

extern "C" int mb_cuda_model_upload(mb_cuda_model *dm, const mb_model *m) {
    if (!dm || !m || !m->params || !dm->params)
        return mb_fail(MB_EINVAL, "mb_cuda_model_upload: NULL argument");
    if (!mb_config_same_shape(&dm->cfg, &m->cfg) || m->n_params != dm->n_params)
        return mb_fail(MB_EINVAL, "mb_cuda_model_upload: model has a different config");
    MB_CUDA_TRY(cudaMemcpy(dm->params, m->params, (size_t)F(dm->n_params), cudaMemcpyHostToDevice),
                "mb_cuda_model_upload");
    return refresh_bf16(dm);
}

extern "C" int mb_cuda_model_download(const mb_cuda_model *dm, mb_model *m) {
    if (!dm || !m || !m->params || !dm->params)
        return mb_fail(MB_EINVAL, "mb_cuda_model_download: NULL argument");
    if (!mb_config_same_shape(&dm->cfg, &m->cfg) || m->n_params != dm->n_params)
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
    float *y_pregate; /* dense scan only */
    int dense;        /* this layer runs the dense scan (y_pregate set) */
    int yp;        /* this layer's yb slot holds the bf16 pre-gate output (a->yp; dense or not) */
    int64_t chunk; /* its scan chunk */
    uint16_t *xcb, *yb, *dbcb; /* bf16 copies (bf16 mode) */
    uint16_t *deltab;          /* in16 only */
    uint16_t *xzb;             /* z16 only */
    uint16_t *ub;              /* the norm output's bf16 copy (bf16 mode; ukeep: per layer) */
} layer_view;

static layer_view layer_at(const mb_cuda_acts *a, int64_t l) {
    const mb_config *c = &a->cfg;
    const int64_t BL = a->BL, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    const int64_t s = l * a->lstride_mul, r = l * a->rstride_mul, k = l * a->kstride_mul;
    const int64_t sy = a->bf16 ? s : k;
    layer_view v;
    v.res_in = a->residual + r * BL * d;
    v.mean = a->mean + r * BL;
    v.rstd = a->rstd + r * BL;
    /* in_proj and x_proj outputs: with recomputation, a slot per kept layer, the rest share the
     * next */
    const int64_t sxz = a->recompute ? mb_min_i64(l, a->keep_xz) : s;
    v.xz = a->xz ? a->xz + (a->z16 ? 0 : sxz) * BL * 2 * Di : NULL; /* (z16: the one slot) */
    v.xzb = a->xzb ? a->xzb + sxz * BL * 2 * Di : NULL;
    const int64_t sx = a->in16 ? 0 : s; /* (in16: the stateful forward's one slot, if any) */
    v.xc = a->xc ? a->xc + sx * BL * Di : NULL;
    v.dbc = a->dbc + sxz * BL * (R + 2 * N);
    v.delta = a->delta ? a->delta + sx * BL * Di : NULL;
    v.deltab = a->deltab ? a->deltab + s * BL * Di : NULL;
    v.y = a->y ? a->y + sy * BL * Di : NULL;
    /* the dense layers' state slots (hc16: bf16 states), then the others' (fp32) */
    v.dense = l < a->n_dense;
    v.chunk = v.dense ? a->dchunk : a->chunk;
    const int64_t kd = mb_min_i64(k, a->n_dense), kp = k - kd;
    const int64_t hoff = kd * dense_states_bytes(a) + kp * chunk_states_bytes(a);
    v.h_chunks = a->h_chunks ? (float *)((char *)a->h_chunks + hoff) : NULL;
    v.yp = a->yp;
    v.y_pregate = v.dense && !v.yp ? a->y_pregate + l * BL * Di : NULL;
    v.xcb = a->xcb ? a->xcb + s * BL * Di : NULL;
    v.yb = a->yb ? a->yb + k * BL * Di : NULL;
    v.dbcb = a->dbcb ? a->dbcb + sxz * BL * (R + 2 * N) : NULL;
    v.ub = a->ub ? a->ub + (a->ukeep ? l : 0) * BL * d : NULL;
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
    /* (z16 above batch 1: v->xz NULL, so z NULL; the scan reads xzb's z, scan_opts) */
    return mb_scan_layer_args(&a->cfg, a->B, a->L, v->chunk, v->xc, v->delta, v->dbc, v->xz,
                              lw->A_log, lw->D, v->h_chunks);
}

/* Scan options of the fused path: bias + softplus of delta inside the scan (g: the backward's
 * gradients, for the bias gradient) and, in bf16 mode, the bf16 copies written by the scan
 * (yb: the forward's y copy, or with ypre16 the backward's recomputed one; the backward's ddelta
 * and dz copies go to a->ddeltab, a->dxzb); ypre16: the bf16 pre-gate output (a->yp), written
 * by the forward and read by the backward. */
static mb_scan_cuda_opts scan_opts(const mb_cuda_model *dm, const mb_cuda_acts *a,
                                   const mb_layer_weights *lw, const mb_layer_weights *g,
                                   uint16_t *yb, float *y_pregate, const layer_view *in16,
                                   uint16_t *ypre16, int dense, int states) {
    mb_scan_cuda_opts o;
    memset(&o, 0, sizeof o);
    if (!a->fused) return o;
    if (in16) { /* (a->in16: the conv's and the dt projection's bf16 outputs) */
        o.x_bf16 = in16->xcb;
        o.x_bf16_stride = a->cfg.d_inner;
        o.delta_bf16 = in16->deltab;
        if (a->z16) {
            o.z_bf16 = in16->xzb + a->cfg.d_inner;
            o.z_bf16_stride = 2 * a->cfg.d_inner;
            o.dy_bf16 = g ? a->dyb : NULL;
        }
    }
    o.y_pregate = y_pregate; /* dense: written by the forward, read by the backward */
    o.dense_states_bf16 = dense && (y_pregate || ypre16) && a->hc16;
    o.chunk_states_bf16 = !dense && states && a->cs16;
    o.dt_bias = lw->dt_proj_b;
    o.dt_softplus = 1;
    if (g) o.ddt_bias = g->dt_proj_b;
    if (a->dt_fused) { /* delta holds softplus(. + bias) already (dt_proj_cuda.h) */
        if (g)
            o.delta_is_eff = 1;
        else
            o.dt_bias = NULL, o.dt_softplus = 0;
    }
    o.y_pregate_bf16 = ypre16;
    if (dm->bf16) {
        o.y_bf16 = yb;
        if (g) {
            o.ddelta_bf16 = a->ddeltab;
            o.dz_bf16 = a->dxzb + a->cfg.d_inner;
            o.dx_bf16 = a->xsplit ? a->dxcb : NULL;
        }
    }
    return o;
}

static int check_pair(const mb_cuda_model *dm, const mb_cuda_acts *a, const char *fn) {
    if (!dm || !a || !dm->params) return mb_fail(MB_EINVAL, "%s: model or acts is NULL", fn);
    const mb_config *x = &dm->cfg, *y = &a->cfg;
    if (!mb_config_same_shape(x, y))
        return mb_fail(MB_EINVAL, "%s: acts were created for a different config", fn);
    if (dm->bf16 != a->bf16) /* bf16 acts hold no fp32 norm outputs for fp32 products */
        return mb_fail(MB_EINVAL, "%s: the model is in %s mode but the acts were created %s", fn,
                       dm->bf16 ? "bf16" : "fp32",
                       a->bf16 ? "with MB_CUDA_ACTS_BF16" : "without MB_CUDA_ACTS_BF16");
    return MB_OK;
}

/* ------------------------------------------------------------------ precision dispatch */

/* bf16 shadow of a weight tensor (a pointer into dm->params) */
static const uint16_t *wb(const mb_cuda_model *dm, const float *W) {
    return dm->params_bf16 + (W - dm->params);
}

/* dst = bf16(src) (rows, cols; both with row stride ld) in bf16 mode; no-op in fp32 mode */
static int to_bf16(const mb_cuda_model *dm, uint16_t *dst, const float *src, int64_t ld,
                   int64_t rows, int64_t cols) {
    if (!dm->bf16) return MB_OK;
    return mb_bf16_from_f32_cuda(dst, ld, src, ld, rows, cols, dm->stream);
}

/* y (=, += acc) x @ W^T: fp32 SGEMM on x, or bf16 (xb, W's shadow) with fp32 accumulate */
static int mm_fwd(const mb_cuda_model *dm, float *y, int64_t ldy, const float *x,
                  const uint16_t *xb, int64_t ldx, const float *W, int64_t rows, int64_t n_in,
                  int64_t n_out, int acc) {
    if (dm->bf16)
        return mb_matmul_bf16_forward(dm->cublaslt, y, ldy, xb, ldx, wb(dm, W), rows, n_in, n_out,
                                      acc);
    return mb_matmul_cuda_forward(dm->cublas, y, ldy, x, ldx, W, rows, n_in, n_out, acc);
}

/* dx (=, += acc) dy @ W */
static int mm_bwd_in(const mb_cuda_model *dm, float *dx, int64_t lddx, const float *dy,
                     const uint16_t *dyb, int64_t lddy, const float *W, int64_t rows, int64_t n_in,
                     int64_t n_out, int acc) {
    if (dm->bf16)
        return mb_matmul_bf16_backward_input(dm->cublaslt, dx, lddx, dyb, lddy, wb(dm, W), rows,
                                             n_in, n_out, acc);
    return mb_matmul_cuda_backward_input(dm->cublas, dx, lddx, dy, lddy, W, rows, n_in, n_out, acc);
}

/* bf16 mode only: the same two products with a bf16 output (xsplit) */
static int mm_fwd16(const mb_cuda_model *dm, uint16_t *y, int64_t ldy, const uint16_t *xb,
                    int64_t ldx, const float *W, int64_t rows, int64_t n_in, int64_t n_out) {
    return mb_matmul_bf16_forward_out16(dm->cublaslt, y, ldy, xb, ldx, wb(dm, W), rows, n_in,
                                        n_out);
}
static int mm_bwd_in16(const mb_cuda_model *dm, uint16_t *dx, int64_t lddx, const uint16_t *dyb,
                       int64_t lddy, const float *W, int64_t rows, int64_t n_in, int64_t n_out) {
    return mb_matmul_bf16_backward_input_out16(dm->cublaslt, dx, lddx, dyb, lddy, wb(dm, W), rows,
                                               n_in, n_out);
}

/* dW += dy^T x */
static int mm_bwd_w(const mb_cuda_model *dm, float *dW, const float *dy, const uint16_t *dyb,
                    int64_t lddy, const float *x, const uint16_t *xb, int64_t ldx, int64_t rows,
                    int64_t n_in, int64_t n_out) {
    if (dm->bf16)
        return mb_matmul_bf16_backward_weight(dm->cublaslt, dW, dyb, lddy, xb, ldx, rows, n_in,
                                              n_out);
    return mb_matmul_cuda_backward_weight(dm->cublas, dW, dy, lddy, x, ldx, rows, n_in, n_out);
}

/* ------------------------------------------------------------------ forward */

/* Carried recurrent states of a stateful forward (DEVICE, mb_state layouts). */
typedef struct {
    float *conv; /* (n_layer, B, K-1, Di) */
    float *ssm;  /* (n_layer, B, Di, N) */
} carried_state;

/* Mixer of layer l on u = a->u (and its bf16 copy v->ub in bf16 mode; model.md "Mixer"),
 * output into a->hout. cs (may be NULL): conv and scan start from and update these states.
 * recomputing: the backward's re-run, which needs only what mixer_backward reads: no out_proj
 * product, with kept scan states (MB_CUDA_ACTS_KEEP_SCAN) no scan either, and for the layers
 * whose in_proj and x_proj outputs were kept (MB_CUDA_ACTS_KEEP_XZ) neither product. */
static int mixer_forward(mb_cuda_model *dm, mb_cuda_acts *a, int64_t l, const layer_view *v,
                         const carried_state *cs, int recomputing) {
    const mb_config *c = &dm->cfg;
    const mb_layer_weights *lw = &dm->w.layers[l];
    const int64_t B = a->B, L = a->L, BL = a->BL, d = c->d_model, Di = c->d_inner;
    const int64_t N = c->d_state, R = c->dt_rank, K = c->d_conv, P = R + 2 * N;
    void *st = dm->stream;
    /* xz = u @ in_proj^T                                   (BL, 2Di); with xsplit x as bf16 */
    const int xsplit = a->xsplit && !cs, in16 = a->in16 && !cs, z16 = a->z16 && !cs;
    /* xsplit: x (BL, Di) bf16, row stride 4Di in the fp32 xz; z16: x and z in xzb (stride 2Di) */
    uint16_t *xb = z16 ? v->xzb : (uint16_t *)v->xz;
    const int64_t ldxb = z16 ? 2 * Di : 4 * Di;
    /* (a re-run of a layer that kept its in_proj and x_proj outputs, MB_CUDA_ACTS_KEEP_XZ,
     * reuses them) */
    const int kept = recomputing && l < a->keep_xz;
    if (!kept) {
        if (z16) {
            PT(MB_PROF_GEMM, mm_fwd16(dm, v->xzb, 2 * Di, v->ub, d, lw->in_proj_w, BL, d, 2 * Di));
        } else if (xsplit) {
            PT(MB_PROF_GEMM, mm_fwd16(dm, xb, 4 * Di, v->ub, d, lw->in_proj_w, BL, d, Di));
            PT(MB_PROF_GEMM, mm_fwd(dm, v->xz + Di, 2 * Di, a->u, v->ub, d, lw->in_proj_w + Di * d,
                                    BL, d, Di, 0));
        } else {
            PT(MB_PROF_GEMM,
               mm_fwd(dm, v->xz, 2 * Di, a->u, v->ub, d, lw->in_proj_w, BL, d, 2 * Di, 0));
        }
        if (recomputing) a->n_xz_rerun++;
    }
    /* xc = SiLU(causal depthwise conv(x) + b)              (BL, Di) */
    float *conv_s = cs ? cs->conv + l * B * (K - 1) * Di : NULL;
    float *ssm_s = cs ? cs->ssm + l * B * Di * N : NULL;
    if (cs) {
        PT(MB_PROF_CONV, mb_conv1d_cuda_forward_state(v->xc, v->xz, 2 * Di, lw->conv_w, lw->conv_b,
                                                      conv_s, a->conv_next, B, L, Di, K, st));
        if (K > 1)
            MB_CUDA_TRY(cudaMemcpyAsync(conv_s, a->conv_next, (size_t)F(B * (K - 1) * Di),
                                        cudaMemcpyDeviceToDevice, (cudaStream_t)st),
                        "stateful forward: conv state");
        MB_CUDA_TRY(cudaMemcpyAsync(a->h0, ssm_s, (size_t)F(B * Di * N), cudaMemcpyDeviceToDevice,
                                    (cudaStream_t)st),
                    "stateful forward: ssm state");
        PT(MB_PROF_CVT, to_bf16(dm, v->xcb, v->xc, Di, BL, Di));
    } else if (xsplit) {
        PT(MB_PROF_CONV, mb_conv1d_cuda_forward_bf16in(in16 ? NULL : v->xc, v->xcb, xb, ldxb,
                                                       lw->conv_w, lw->conv_b, B, L, Di, K, st));
    } else { /* the bf16 copy of xc written by the conv itself in bf16 mode */
        PT(MB_PROF_CONV, mb_conv1d_cuda_forward_ex(v->xc, dm->bf16 ? v->xcb : NULL, v->xz, 2 * Di,
                                                   lw->conv_w, lw->conv_b, NULL, B, L, Di, K, st));
    }
    /* dbc = xc @ x_proj^T                                  (BL, R+2N) */
    if (!kept) {
        PT(MB_PROF_GEMM, mm_fwd(dm, v->dbc, P, v->xc, v->xcb, Di, lw->x_proj_w, BL, Di, P, 0));
        PT(MB_PROF_CVT, to_bf16(dm, v->dbcb, v->dbc, P, BL, R));
    }
    /* delta = softplus(dt_low @ dt_proj_w^T + dt_proj_b)   (BL, Di); fused: the scan applies
     * the bias and softplus to the raw product */
    if (a->dt_fused)
        PT(MB_PROF_GEMM,
           mb_dt_proj_softplus_cuda_ex(in16 ? NULL : v->delta, in16 ? v->deltab : NULL, v->dbcb, P,
                                       wb(dm, lw->dt_proj_w), lw->dt_proj_b, BL, R, Di, st));
    else
        PT(MB_PROF_GEMM, mm_fwd(dm, v->delta, Di, v->dbc, v->dbcb, P, lw->dt_proj_w, BL, R, Di, 0));
    if (!a->fused)
        PT(MB_PROF_SOFTPLUS, mb_softplus_bias_cuda_forward(v->delta, lw->dt_proj_b, BL, Di, st));
    if (recomputing && a->keep_scan) return MB_OK;
    /* y = scan(xc, delta, A, B, C, D) * SiLU(z)            (BL, Di) */
    mb_scan_args sa = scan_args(a, lw, v);
    if (cs) { /* (no chunk states: no backward follows, and with hc16 the training acts' slots
               * are sized for bf16 ones, which only the dense form's forward writes) */
        sa.h0 = a->h0;
        sa.h_last = ssm_s;
        sa.h_chunks = NULL;
    }
    if (in16) sa.x = NULL, sa.delta = NULL;
    if (z16) sa.z = NULL;
    /* yp: the pre-gate output into the kept slot, the gated one into the shared ygb */
    const int yp = v->yp && !cs;
    uint16_t *yg = yp ? a->ygb : v->yb;
    const mb_scan_cuda_opts so =
        scan_opts(dm, a, lw, NULL, yg, cs ? NULL : v->y_pregate, in16 ? v : NULL, yp ? v->yb : NULL,
                  v->dense && !cs, !cs);
    if (v->dense && a->hc16 && sa.h_chunks && !so.dense_states_bf16) /* (bf16 state slots) */
        return mb_fail(MB_EINVAL,
                       "mb_cuda_forward: internal: fp32 scan states into the bf16 "
                       "state slots of layer %lld",
                       (long long)l);
    PT(MB_PROF_SCAN_FWD, mb_scan_cuda_forward_ex(&sa, &so, v->y, st));
    if (!so.y_bf16) PT(MB_PROF_CVT, to_bf16(dm, v->yb, v->y, Di, BL, Di));
    if (recomputing) return MB_OK;
    /* hout = y @ out_proj^T                                (BL, d); h16: as bf16 (houtb) */
    if (a->h16 && !cs)
        PT(MB_PROF_GEMM, mm_fwd16(dm, a->houtb, d, yg, Di, lw->out_proj_w, BL, Di, d));
    else
        PT(MB_PROF_GEMM, mm_fwd(dm, a->hout, d, v->y, yg, Di, lw->out_proj_w, BL, Di, d, 0));
    return MB_OK;
}

static int forward_impl(mb_cuda_model *dm, mb_cuda_acts *a, const carried_state *cs,
                        const uint8_t *x, const uint8_t *targets, float *loss, float *logits) {
    if (!x) return mb_fail(MB_EINVAL, "mb_cuda_forward: x is NULL");
    const mb_config *c = &dm->cfg;
    const mb_weights *w = &dm->w;
    const int64_t BL = a->BL, d = c->d_model, nl = c->n_layer;
    const float eps = c->norm_eps;
    cudaStream_t st = (cudaStream_t)dm->stream;
    const int h16 = a->h16 && !cs; /* (mixer_forward's out_proj wrote houtb) */
    a->can_backward = 0;
    a->slot_layer = -1;
    mb_prof_phase(MB_PHASE_FWD);
    if (loss) *loss = 0.0f;
    MB_CUDA_TRY(cudaMemcpyAsync(a->x, x, (size_t)BL, cudaMemcpyHostToDevice, st),
                "mb_cuda_forward: copying x");
    if (targets)
        MB_CUDA_TRY(cudaMemcpyAsync(a->targets, targets, (size_t)BL, cudaMemcpyHostToDevice, st),
                    "mb_cuda_forward: copying targets");
    /* residual_0 = h = embedding[x]                        (BL, d) */
    PT(MB_PROF_EMBED, mb_embedding_cuda_forward(a->residual, a->x, w->embedding, BL, d, st));
    for (int64_t l = 0; l < nl; l++) {
        const mb_layer_weights *lw = &w->layers[l];
        layer_view v = layer_at(a, l);
        if (l == 0)
            PT(MB_PROF_NORM, mb_norm_cuda_forward_ex(v.res_in, a->u, v.ub, v.mean, v.rstd, v.res_in,
                                                     NULL, lw->norm_w, lw->norm_b, BL, d, eps, st));
        else if (h16) /* residual_l = h_{l-1} + residual_{l-1}, fused into the norm */
            PT(MB_PROF_NORM, mb_norm_cuda_forward_bf16in(v.res_in, v.ub, v.mean, v.rstd, a->houtb,
                                                         layer_at(a, l - 1).res_in, lw->norm_w,
                                                         lw->norm_b, BL, d, eps, st));
        else
            PT(MB_PROF_NORM, mb_norm_cuda_forward_ex(v.res_in, a->u, v.ub, v.mean, v.rstd, a->hout,
                                                     layer_at(a, l - 1).res_in, lw->norm_w,
                                                     lw->norm_b, BL, d, eps, st));
        MB_TRY(mixer_forward(dm, a, l, &v, cs, 0));
    }
    a->slot_layer = nl - 1;
    float *mf, *rf;
    float *resf = final_residual(a, &mf, &rf);
    if (h16)
        PT(MB_PROF_NORM,
           mb_norm_cuda_forward_bf16in(resf, a->xfb, mf, rf, a->houtb, layer_at(a, nl - 1).res_in,
                                       w->norm_f_w, w->norm_f_b, BL, d, eps, st));
    else
        PT(MB_PROF_NORM,
           mb_norm_cuda_forward_ex(resf, a->xf, a->xfb, mf, rf, a->hout, layer_at(a, nl - 1).res_in,
                                   w->norm_f_w, w->norm_f_b, BL, d, eps, st));
    /* logits = xf @ lm_head^T                              (BL, 256) */
    PT(MB_PROF_GEMM,
       mm_fwd(dm, a->logits, MB_VOCAB, a->xf, a->xfb, d, w->lm_head, BL, d, MB_VOCAB, 0));
    if (logits)
        MB_CUDA_TRY(cudaMemcpyAsync(logits, a->logits, (size_t)F(BL * MB_VOCAB),
                                    cudaMemcpyDeviceToHost, st),
                    "mb_cuda_forward: copying logits");
    double sum = 0.0;
    if (targets) {
        PT(MB_PROF_LOSS,
           mb_crossentropy_cuda(a->losses, NULL, a->logits, a->targets, BL, 0.0f, st));
        PT(MB_PROF_LOSS, mb_reduce_sum_cuda(a->loss_sum, a->scratch, a->losses, BL, 0, st));
        MB_CUDA_TRY(cudaMemcpyAsync(&sum, a->loss_sum, sizeof sum, cudaMemcpyDeviceToHost, st),
                    "mb_cuda_forward: copying the loss");
    } else {
        MB_CUDA_TRY(cudaMemsetAsync(a->losses, 0, (size_t)F(BL), st), "mb_cuda_forward");
    }
    MB_CUDA_TRY(cudaStreamSynchronize(st), "mb_cuda_forward");
    mb_prof_collect(0);
    if (targets) {
        if (loss) *loss = (float)(sum / (double)BL);
        a->can_backward = a->train && !cs;
    }
    return MB_OK;
}

extern "C" int mb_cuda_forward(mb_cuda_model *dm, mb_cuda_acts *a, const uint8_t *x,
                               const uint8_t *targets, float *loss, float *logits) {
    MB_TRY(check_pair(dm, a, "mb_cuda_forward"));
    return forward_impl(dm, a, NULL, x, targets, loss, logits);
}

extern "C" int mb_cuda_forward_stateful(mb_cuda_model *dm, mb_cuda_acts *a, float *conv_state,
                                        float *ssm_state, const uint8_t *x, const uint8_t *targets,
                                        float *loss, float *logits) {
    MB_TRY(check_pair(dm, a, "mb_cuda_forward_stateful"));
    if (!ssm_state || (!conv_state && dm->cfg.d_conv > 1))
        return mb_fail(MB_EINVAL, "mb_cuda_forward_stateful: state is NULL");
    if (!a->xc) /* (training acts whose scan reads bf16 inputs keep fp32 ones at B 1 only) */
        return mb_fail(MB_EINVAL,
                       "mb_cuda_forward_stateful: these training activations (batch "
                       "%lld, bf16 scan inputs) have no fp32 conv output; create "
                       "the workspace without MB_CUDA_ACTS_TRAIN",
                       (long long)a->B);
    const carried_state cs = {conv_state, ssm_state};
    return forward_impl(dm, a, &cs, x, targets, loss, logits);
}

/* ------------------------------------------------------------------ backward */

/* Backward of the mixer of layer l: a->dres (BL, d) is the gradient of its output; writes the
 * gradient of its input u into a->du and accumulates the parameter gradients into g.
 * u_ready: a->u (and v->ub) already hold this layer's norm output. */
static int mixer_backward(mb_cuda_model *dm, mb_cuda_acts *a, int64_t l, const layer_view *v,
                          const mb_layer_weights *g, int u_ready) {
    const mb_config *c = &dm->cfg;
    const mb_layer_weights *lw = &dm->w.layers[l];
    const int64_t B = a->B, L = a->L, BL = a->BL, d = c->d_model, Di = c->d_inner;
    const int64_t N = c->d_state, R = c->dt_rank, K = c->d_conv, P = R + 2 * N;
    void *st = dm->stream;
    /* out_proj: h = y @ out_proj^T (a->dresb: written with a->dres by the norm backward); in yp
     * layers its weight gradient after the scan, which writes the gated y into a->ygb */
    if (!v->yp)
        PT(MB_PROF_GEMM,
           mm_bwd_w(dm, g->out_proj_w, a->dres, a->dresb, d, v->y, v->yb, Di, BL, Di, d));
    if (a->z16) /* (the scan reads dy as bf16) */
        PT(MB_PROF_GEMM, mm_bwd_in16(dm, a->dyb, Di, a->dresb, d, lw->out_proj_w, BL, Di, d));
    else
        PT(MB_PROF_GEMM,
           mm_bwd_in(dm, a->dy, Di, a->dres, a->dresb, d, lw->out_proj_w, BL, Di, d, 0));
    /* scan: dxc, ddelta, dB, dC, dz (=); dA_log, dD (+=) */
    mb_scan_args sa = scan_args(a, lw, v);
    if (a->in16) sa.x = NULL, sa.delta = NULL;
    if (a->z16) sa.z = NULL;
    /* (yp: the gated output recomputed into ygb; the pre-gate one stays, for another backward) */
    const mb_scan_cuda_opts so = scan_opts(dm, a, lw, g, v->yp ? a->ygb : NULL, v->y_pregate,
                                           a->in16 ? v : NULL, v->yp ? v->yb : NULL, v->dense, 1);
    PT(MB_PROF_SCAN_BWD,
       mb_scan_cuda_backward_ex(&sa, &so, a->dy, a->dxc, a->ddelta, g->A_log, a->ddbc + R,
                                a->ddbc + R + N, g->D, a->dxz ? a->dxz + Di : NULL, st));
    if (v->yp)
        PT(MB_PROF_GEMM,
           mm_bwd_w(dm, g->out_proj_w, a->dres, a->dresb, d, v->y, a->ygb, Di, BL, Di, d));
    /* softplus and dt_proj bias (fused: done by the scan): d pre = d delta * (-expm1(-delta)) */
    if (!a->fused)
        PT(MB_PROF_SOFTPLUS, mb_softplus_bias_cuda_backward_ex(a->ddelta, a->ddeltab, g->dt_proj_b,
                                                               v->delta, BL, Di, st));
    /* dt_proj: pre = dt_low @ dt_proj_w^T + dt_proj_b */
    PT(MB_PROF_GEMM,
       mm_bwd_w(dm, g->dt_proj_w, a->ddelta, a->ddeltab, Di, v->dbc, v->dbcb, P, BL, R, Di));
    PT(MB_PROF_GEMM,
       mm_bwd_in(dm, a->ddbc, P, a->ddelta, a->ddeltab, Di, lw->dt_proj_w, BL, R, Di, 0));
    /* x_proj: dbc = xc @ x_proj^T; dxc already holds the scan's part (with xsplit: dxcb, and the
     * product's part goes to dxc2b) */
    PT(MB_PROF_CVT, to_bf16(dm, a->ddbcb, a->ddbc, P, BL, P));
    PT(MB_PROF_GEMM, mm_bwd_w(dm, g->x_proj_w, a->ddbc, a->ddbcb, P, v->xc, v->xcb, Di, BL, Di, P));
    /* conv1d + SiLU -> x half of dxz (and of its bf16 copy); the z half's copy from the scan's dz
     */
    if (a->xsplit) { /* x and the two parts of dxc in bf16 (the scan wrote dxcb) */
        PT(MB_PROF_GEMM, mm_bwd_in16(dm, a->dxc2b, Di, a->ddbcb, P, lw->x_proj_w, BL, Di, P));
        PT(MB_PROF_CONV, mb_conv1d_cuda_backward_bf16in(
                             a->dxzb, 2 * Di, g->conv_w, g->conv_b, a->dxcb, a->dxc2b,
                             a->z16 ? v->xzb : (const uint16_t *)v->xz, a->z16 ? 2 * Di : 4 * Di,
                             lw->conv_w, lw->conv_b, B, L, Di, K, st));
    } else {
        PT(MB_PROF_GEMM,
           mm_bwd_in(dm, a->dxc, Di, a->ddbc, a->ddbcb, P, lw->x_proj_w, BL, Di, P, 1));
        PT(MB_PROF_CONV, mb_conv1d_cuda_backward_ex(a->dxz, dm->bf16 ? a->dxzb : NULL, 2 * Di,
                                                    g->conv_w, g->conv_b, a->dxc, v->xz, 2 * Di,
                                                    lw->conv_w, lw->conv_b, B, L, Di, K, st));
    }
    if (!so.dz_bf16)
        PT(MB_PROF_CVT, to_bf16(dm, a->dxzb ? a->dxzb + Di : NULL, a->dxz + Di, 2 * Di, BL, Di));
    /* in_proj: xz = u @ in_proj^T, u kept by the forward (ukeep) or recomputed from the stored
     * norm input and statistics */
    if (!u_ready && !a->ukeep) {
        PT(MB_PROF_NORM, mb_norm_cuda_apply_ex(a->u, v->ub, v->res_in, v->mean, v->rstd, lw->norm_w,
                                               lw->norm_b, BL, d, st));
    }
    PT(MB_PROF_GEMM,
       mm_bwd_w(dm, g->in_proj_w, a->dxz, a->dxzb, 2 * Di, a->u, v->ub, d, BL, d, 2 * Di));
    if (a->h16) /* (the norm backward reads du as bf16) */
        PT(MB_PROF_GEMM, mm_bwd_in16(dm, a->dub, d, a->dxzb, 2 * Di, lw->in_proj_w, BL, d, 2 * Di));
    else
        PT(MB_PROF_GEMM,
           mm_bwd_in(dm, a->du, d, a->dxz, a->dxzb, 2 * Di, lw->in_proj_w, BL, d, 2 * Di, 0));
    return MB_OK;
}

extern "C" int mb_cuda_backward(mb_cuda_model *dm, mb_cuda_acts *a, float dloss) {
    MB_TRY(check_pair(dm, a, "mb_cuda_backward"));
    if (!dm->grads)
        return mb_fail(MB_EINVAL, "mb_cuda_backward: the model was created for inference only");
    if (!a->can_backward)
        return mb_fail(MB_EINVAL, "mb_cuda_backward: the last forward was not mb_cuda_forward "
                                  "with targets on training acts");
    const mb_config *c = &dm->cfg;
    const mb_weights *w = &dm->w;
    const mb_weights *g = &dm->g;
    const int64_t BL = a->BL, d = c->d_model, nl = c->n_layer;
    void *st = dm->stream;
    mb_prof_phase(MB_PHASE_BWD);
    a->n_xz_rerun = 0;
    /* cross-entropy: dlogits = dloss * (softmax - onehot)                 (BL, 256) */
    PT(MB_PROF_LOSS, mb_crossentropy_cuda(NULL, a->dlogits, a->logits, a->targets, BL, dloss, st));
    PT(MB_PROF_CVT, to_bf16(dm, a->dlogitsb, a->dlogits, MB_VOCAB, BL, MB_VOCAB));
    /* lm_head (tied: the embedding's gradient) */
    PT(MB_PROF_GEMM, mm_bwd_w(dm, g->lm_head, a->dlogits, a->dlogitsb, MB_VOCAB, a->xf, a->xfb, d,
                              BL, d, MB_VOCAB));
    PT(MB_PROF_GEMM,
       mm_bwd_in(dm, a->du, d, a->dlogits, a->dlogitsb, MB_VOCAB, w->lm_head, BL, d, MB_VOCAB, 0));
    /* norm_f: dres = gradient of the final residual                       (BL, d) */
    float *mf, *rf;
    float *resf = final_residual(a, &mf, &rf);
    PT(MB_PROF_NORM, mb_norm_cuda_backward_ex(a->dres, a->dresb, g->norm_f_w, g->norm_f_b, a->du,
                                              resf, mf, rf, w->norm_f_w, BL, d, 0, st));
    for (int64_t l = nl - 1; l >= 0; l--) {
        layer_view v = layer_at(a, l);
        const mb_layer_weights *lw = &w->layers[l];
        int u_ready = 0;
        if (a->recompute) {
            /* the layer's mixer activations: the slot still holds the last layer's after the
             * forward (and a->u its norm output); every other layer is re-run */
            u_ready = a->slot_layer == l;
            if (!u_ready) {
                PT(MB_PROF_NORM, mb_norm_cuda_apply_ex(a->u, v.ub, v.res_in, v.mean, v.rstd,
                                                       lw->norm_w, lw->norm_b, BL, d, st));
                mb_prof_phase(MB_PHASE_RECOMPUTE);
                MB_TRY(mixer_forward(dm, a, l, &v, NULL, 1));
                mb_prof_phase(MB_PHASE_BWD);
                u_ready = 1;
            }
            a->slot_layer = l;
        }
        /* residual_{l+1} = mixer(norm(residual_l)) + residual_l: dres feeds both paths */
        MB_TRY(mixer_backward(dm, a, l, &v, &g->layers[l], u_ready));
        if (a->h16)
            PT(MB_PROF_NORM, mb_norm_cuda_backward_bf16in(
                                 a->dres, a->dresb, g->layers[l].norm_w, g->layers[l].norm_b,
                                 a->dub, v.res_in, v.mean, v.rstd, lw->norm_w, BL, d, 1, st));
        else
            PT(MB_PROF_NORM,
               mb_norm_cuda_backward_ex(a->dres, a->dresb, g->layers[l].norm_w, g->layers[l].norm_b,
                                        a->du, v.res_in, v.mean, v.rstd, lw->norm_w, BL, d, 1, st));
    }
    /* embedding rows: residual_0 = embedding[x] */
    PT(MB_PROF_EMBED, mb_embedding_cuda_backward(g->embedding, a->x, a->dres, BL, d, st));
    MB_CUDA_TRY(cudaStreamSynchronize((cudaStream_t)st), "mb_cuda_backward");
    mb_prof_collect(0);
    return MB_OK;
}

/* ------------------------------------------------------------------ optimizer */

extern "C" int mb_cuda_grad_norm(mb_cuda_model *dm, double *norm) {
    if (!dm || !dm->grads) return mb_fail(MB_EINVAL, "mb_cuda_grad_norm: NULL model");
    cudaStream_t st = (cudaStream_t)dm->stream;
    double *out = dm->scratch + MB_CUDA_REDUCE_SCRATCH - 1;
    mb_prof_phase(MB_PHASE_OPT);
    PT(MB_PROF_OPT, mb_reduce_sum_cuda(out, dm->scratch, dm->grads, dm->n_params, 1, st));
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
        PT(MB_PROF_OPT,
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
    if (!dm || !dm->params || !dm->grads)
        return mb_fail(MB_EINVAL, "mb_cuda_adamw_update: NULL model, or one for inference only");
    dm->adam_step++;
    PT(MB_PROF_OPT, mb_adamw_cuda_update(dm->params, dm->grads, dm->adam_m, dm->adam_v, dm->decay,
                                         dm->n_params, dm->adam_step, lr, dm->beta1, dm->beta2,
                                         dm->eps, dm->weight_decay, dm->stream));
    PT(MB_PROF_OPT, refresh_bf16(dm));
    MB_CUDA_TRY(cudaStreamSynchronize((cudaStream_t)dm->stream), "mb_cuda_adamw_update");
    mb_prof_collect(1);
    return MB_OK;
}
