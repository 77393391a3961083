/* Parameter layout (one flat fp32 vector, mamba_ssm tensor names), views and
 * initialisation (model.md "Initialisation", mamba_ssm defaults). */
#include "mambabyte.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mb_tensor_info *t;
    int n, cap;
    int64_t off;
} table_builder;

static int add(table_builder *b, int decay, int ndim, int64_t s0, int64_t s1, int64_t s2,
               const char *fmt, int layer) {
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        mb_tensor_info *t = realloc(b->t, (size_t)cap * sizeof *t);
        if (!t) return mb_fail(MB_ENOMEM, "out of memory building the tensor table");
        b->t = t;
        b->cap = cap;
    }
    mb_tensor_info *ti = &b->t[b->n++];
    memset(ti, 0, sizeof *ti);
    snprintf(ti->name, sizeof ti->name, fmt, layer);
    ti->ndim = ndim;
    ti->shape[0] = s0;
    ti->shape[1] = s1;
    ti->shape[2] = s2;
    ti->numel = s0 * (ndim > 1 ? s1 : 1) * (ndim > 2 ? s2 : 1);
    ti->offset = b->off;
    ti->weight_decay = decay;
    b->off += ti->numel;
    return MB_OK;
}

int mb_tensor_table(const mb_config *c, mb_tensor_info **out, int *n_out) {
    int64_t d = c->d_model, Di = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    int64_t V = c->vocab_size;
    table_builder b = {0};
    int rc = add(&b, 0, 2, V, d, 0, "backbone.embedding.weight", 0);
    for (int64_t i = 0; rc == MB_OK && i < c->n_layer; i++) {
        int l = (int)i;
        rc |= add(&b, 0, 1, d, 0, 0, "backbone.layers.%d.norm.weight", l);
        if (!c->rms_norm) rc |= add(&b, 0, 1, d, 0, 0, "backbone.layers.%d.norm.bias", l);
        rc |= add(&b, 1, 2, 2 * Di, d, 0, "backbone.layers.%d.mixer.in_proj.weight", l);
        rc |= add(&b, 1, 3, Di, 1, K, "backbone.layers.%d.mixer.conv1d.weight", l);
        rc |= add(&b, 0, 1, Di, 0, 0, "backbone.layers.%d.mixer.conv1d.bias", l);
        rc |= add(&b, 1, 2, R + 2 * N, Di, 0, "backbone.layers.%d.mixer.x_proj.weight", l);
        rc |= add(&b, 1, 2, Di, R, 0, "backbone.layers.%d.mixer.dt_proj.weight", l);
        rc |= add(&b, 0, 1, Di, 0, 0, "backbone.layers.%d.mixer.dt_proj.bias", l);
        rc |= add(&b, 0, 2, Di, N, 0, "backbone.layers.%d.mixer.A_log", l);
        rc |= add(&b, 0, 1, Di, 0, 0, "backbone.layers.%d.mixer.D", l);
        rc |= add(&b, 1, 2, d, Di, 0, "backbone.layers.%d.mixer.out_proj.weight", l);
    }
    if (rc == MB_OK) rc = add(&b, 0, 1, d, 0, 0, "backbone.norm_f.weight", 0);
    if (rc == MB_OK && !c->rms_norm) rc = add(&b, 0, 1, d, 0, 0, "backbone.norm_f.bias", 0);
    if (rc == MB_OK && !c->tie_embeddings) rc = add(&b, 1, 2, V, d, 0, "lm_head.weight", 0);
    if (rc != MB_OK) {
        free(b.t);
        return rc;
    }
    *out = b.t;
    *n_out = b.n;
    return MB_OK;
}

int mb_weights_bind(const mb_config *c, float *base, mb_weights *w) {
    int64_t d = c->d_model, Di = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    int64_t V = c->vocab_size;
    memset(w, 0, sizeof *w);
    w->layers = calloc((size_t)c->n_layer, sizeof *w->layers);
    if (!w->layers) return mb_fail(MB_ENOMEM, "out of memory binding weights");
    float *p = base;
    w->embedding = p;
    p += V * d;
    for (int64_t i = 0; i < c->n_layer; i++) {
        mb_layer_weights *l = &w->layers[i];
        l->norm_w = p, p += d;
        if (!c->rms_norm) l->norm_b = p, p += d;
        l->in_proj_w = p, p += 2 * Di * d;
        l->conv_w = p, p += Di * K;
        l->conv_b = p, p += Di;
        l->x_proj_w = p, p += (R + 2 * N) * Di;
        l->dt_proj_w = p, p += Di * R;
        l->dt_proj_b = p, p += Di;
        l->A_log = p, p += Di * N;
        l->D = p, p += Di;
        l->out_proj_w = p, p += d * Di;
    }
    w->norm_f_w = p, p += d;
    if (!c->rms_norm) w->norm_f_b = p, p += d;
    if (c->tie_embeddings) {
        w->lm_head = w->embedding;
    } else {
        w->lm_head = p;
        p += V * d;
    }
    return MB_OK;
}

void mb_weights_free(mb_weights *w) {
    free(w->layers);
    w->layers = NULL;
}

int mb_model_create(mb_model *m, const mb_config *c) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    int rc = mb_config_finalize(&m->cfg);
    if (rc) return rc;
    m->n_params = mb_config_n_params(&m->cfg);
    size_t bytes = ((size_t)m->n_params * sizeof(float) + 63) & ~(size_t)63;
    m->params = aligned_alloc(64, bytes);
    if (!m->params)
        return mb_fail(MB_ENOMEM, "out of memory allocating %lld parameters",
                       (long long)m->n_params);
    memset(m->params, 0, bytes);
    rc = mb_weights_bind(&m->cfg, m->params, &m->w);
    if (rc == MB_OK) rc = mb_tensor_table(&m->cfg, &m->tensors, &m->n_tensors);
    if (rc) mb_model_free(m);
    return rc;
}

void mb_model_free(mb_model *m) {
    free(m->params);
    mb_weights_free(&m->w);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

static void fill_uniform(mb_rng *r, float *p, int64_t n, double bound) {
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)((2.0 * mb_rng_double(r) - 1.0) * bound);
}

void mb_model_init(mb_model *m, uint64_t seed) {
    const mb_config *c = &m->cfg;
    int64_t d = c->d_model, Di = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    int64_t V = c->vocab_size;
    mb_rng r;
    mb_rng_seed(&r, seed);
    mb_weights *w = &m->w;
    for (int64_t i = 0; i < V * d; i++)
        w->embedding[i] = (float)(0.02 * mb_rng_normal(&r));
    for (int64_t i = 0; i < c->n_layer; i++) {
        mb_layer_weights *l = &w->layers[i];
        for (int64_t j = 0; j < d; j++)
            l->norm_w[j] = 1.0f;
        if (l->norm_b) memset(l->norm_b, 0, (size_t)d * sizeof(float));
        /* kaiming-uniform(a = sqrt 5) gives the bound 1 / sqrt(fan_in) */
        fill_uniform(&r, l->in_proj_w, 2 * Di * d, 1.0 / sqrt((double)d));
        fill_uniform(&r, l->conv_w, Di * K, 1.0 / sqrt((double)K));
        fill_uniform(&r, l->conv_b, Di, 1.0 / sqrt((double)K));
        fill_uniform(&r, l->x_proj_w, (R + 2 * N) * Di, 1.0 / sqrt((double)Di));
        fill_uniform(&r, l->dt_proj_w, Di * R, 1.0 / sqrt((double)R));
        double lo = log((double)c->dt_min), hi = log((double)c->dt_max);
        for (int64_t j = 0; j < Di; j++) {
            double dt = exp(mb_rng_double(&r) * (hi - lo) + lo);
            if (dt < c->dt_init_floor) dt = c->dt_init_floor;
            l->dt_proj_b[j] = (float)(dt + log(-expm1(-dt))); /* inverse softplus */
        }
        for (int64_t j = 0; j < Di; j++)
            for (int64_t n = 0; n < N; n++)
                l->A_log[j * N + n] = (float)log((double)(n + 1));
        for (int64_t j = 0; j < Di; j++)
            l->D[j] = 1.0f;
        fill_uniform(&r, l->out_proj_w, d * Di, 1.0 / sqrt((double)Di) / sqrt((double)c->n_layer));
    }
    for (int64_t j = 0; j < d; j++)
        w->norm_f_w[j] = 1.0f;
    if (w->norm_f_b) memset(w->norm_f_b, 0, (size_t)d * sizeof(float));
    if (!c->tie_embeddings) fill_uniform(&r, w->lm_head, V * d, 1.0 / sqrt((double)d));
}
