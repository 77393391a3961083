/* Float64 reference forward from model.md (see ref64.h). Deliberately naive: one sequence,
 * one position, one channel at a time, following the pseudo-code line by line. */
#include "support/ref64.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double *ref64_params(const mb_model *m) {
    double *p = malloc((size_t)m->n_params * sizeof(double));
    if (!p) return NULL;
    for (int64_t i = 0; i < m->n_params; i++)
        p[i] = m->params[i];
    return p;
}

/* pointer to the tensor called `name` (formatted with layer), or NULL */
static const double *find(const mb_tensor_info *t, int n, const double *params, const char *fmt,
                          int layer) {
    char name[128];
    snprintf(name, sizeof name, fmt, layer);
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return params + t[i].offset;
    return NULL;
}

static double silu(double v) {
    return v / (1.0 + exp(-v));
}

static double softplus(double v) {
    return v > 20.0 ? v : log1p(exp(v)); /* torch threshold 20 */
}

/* Norm of one row of d values: RMSNorm (b == NULL) or LayerNorm with bias. */
static void norm_row(double *out, const double *in, const double *w, const double *b, int64_t d,
                     double eps) {
    double mean = 0.0;
    if (b) {
        for (int64_t j = 0; j < d; j++)
            mean += in[j];
        mean /= (double)d;
    }
    double var = 0.0;
    for (int64_t j = 0; j < d; j++)
        var += (in[j] - mean) * (in[j] - mean);
    var /= (double)d;
    double r = 1.0 / sqrt(var + eps);
    for (int64_t j = 0; j < d; j++)
        out[j] = (in[j] - mean) * r * w[j] + (b ? b[j] : 0.0);
}

double ref64_forward(const mb_config *c, const double *params, int64_t B, int64_t L,
                     const uint8_t *x, const uint8_t *targets, const double *conv0,
                     const double *ssm0, double *logits, double *ce, double *conv_out,
                     double *ssm_out) {
    const int64_t d = c->d_model, Di = c->d_inner, N = c->d_state, K = c->d_conv;
    const int64_t R = c->dt_rank, V = 256, nl = c->n_layer;
    const double eps = (double)c->norm_eps;
    mb_tensor_info *t;
    int nt;
    if (mb_tensor_table(c, &t, &nt)) return NAN;
    double total = 0.0;
    /* per-sequence work buffers */
    double *h = calloc((size_t)(L * d), sizeof(double));             /* (L, d) block output */
    double *resid = calloc((size_t)(L * d), sizeof(double));         /* (L, d) residual */
    double *u = calloc((size_t)(L * d), sizeof(double));             /* (L, d) normed */
    double *xs = calloc((size_t)(L * Di), sizeof(double));           /* (L, Di) x half of xz */
    double *zs = calloc((size_t)(L * Di), sizeof(double));           /* (L, Di) z half */
    double *xc = calloc((size_t)(L * Di), sizeof(double));           /* (L, Di) conv + SiLU */
    double *dbc = calloc((size_t)(L * (R + 2 * N)), sizeof(double)); /* (L, R+2N) */
    double *delta = calloc((size_t)(L * Di), sizeof(double));        /* (L, Di) */
    double *y = calloc((size_t)(L * Di), sizeof(double));            /* (L, Di) */
    double *s = calloc((size_t)N, sizeof(double));                   /* one channel's state */
    double *xf = calloc((size_t)d, sizeof(double));
    if (!h || !resid || !u || !xs || !zs || !xc || !dbc || !delta || !y || !s || !xf) {
        total = NAN;
        goto done;
    }
    const double *emb = find(t, nt, params, "backbone.embedding.weight", 0);
    const double *head = c->tie_embeddings ? emb : find(t, nt, params, "lm_head.weight", 0);
    const double *nfw = find(t, nt, params, "backbone.norm_f.weight", 0);
    const double *nfb = c->rms_norm ? NULL : find(t, nt, params, "backbone.norm_f.bias", 0);
    if (!emb || !head || !nfw || (!c->rms_norm && !nfb)) {
        total = NAN;
        goto done;
    }
    for (int64_t b = 0; b < B; b++) {
        const uint8_t *xb = x + b * L;
        /* h = embedding[x]; residual = none */
        for (int64_t tt = 0; tt < L; tt++)
            for (int64_t j = 0; j < d; j++)
                h[tt * d + j] = emb[(int64_t)xb[tt] * d + j];
        for (int64_t l = 0; l < nl; l++) {
            int li = (int)l;
            const double *nw = find(t, nt, params, "backbone.layers.%d.norm.weight", li);
            const double *nb =
                c->rms_norm ? NULL : find(t, nt, params, "backbone.layers.%d.norm.bias", li);
            const double *in_w = find(t, nt, params, "backbone.layers.%d.mixer.in_proj.weight", li);
            const double *cw = find(t, nt, params, "backbone.layers.%d.mixer.conv1d.weight", li);
            const double *cb = find(t, nt, params, "backbone.layers.%d.mixer.conv1d.bias", li);
            const double *xp = find(t, nt, params, "backbone.layers.%d.mixer.x_proj.weight", li);
            const double *dtw = find(t, nt, params, "backbone.layers.%d.mixer.dt_proj.weight", li);
            const double *dtb = find(t, nt, params, "backbone.layers.%d.mixer.dt_proj.bias", li);
            const double *alog = find(t, nt, params, "backbone.layers.%d.mixer.A_log", li);
            const double *Dp = find(t, nt, params, "backbone.layers.%d.mixer.D", li);
            const double *ow = find(t, nt, params, "backbone.layers.%d.mixer.out_proj.weight", li);
            if (!nw || (!c->rms_norm && !nb) || !in_w || !cw || !cb || !xp || !dtw || !dtb ||
                !alog || !Dp || !ow) {
                total = NAN;
                goto done;
            }
            /* residual = h (+ residual); u = Norm(residual) */
            for (int64_t i = 0; i < L * d; i++)
                resid[i] = h[i] + (l > 0 ? resid[i] : 0.0);
            for (int64_t tt = 0; tt < L; tt++)
                norm_row(u + tt * d, resid + tt * d, nw, nb, d, eps);
            /* xz = u @ in_proj^T; x = xz[:, :Di], z = xz[:, Di:] */
            for (int64_t tt = 0; tt < L; tt++)
                for (int64_t o = 0; o < 2 * Di; o++) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < d; j++)
                        acc += u[tt * d + j] * in_w[o * d + j];
                    if (o < Di)
                        xs[tt * Di + o] = acc;
                    else
                        zs[tt * Di + o - Di] = acc;
                }
            /* x_t[c] = conv_b[c] + sum_k conv_w[c,k] x_{t-K+1+k}[c]; before t = 0 the
             * initial window (oldest first) or zeros; then SiLU */
            const double *cs0 = conv0 ? conv0 + (l * B + b) * (K - 1) * Di : NULL;
            for (int64_t tt = 0; tt < L; tt++)
                for (int64_t ch = 0; ch < Di; ch++) {
                    double acc = cb[ch];
                    for (int64_t k = 0; k < K; k++) {
                        int64_t p = tt - K + 1 + k;
                        double v = 0.0;
                        if (p >= 0)
                            v = xs[p * Di + ch];
                        else if (cs0)
                            v = cs0[(K - 1 + p) * Di + ch];
                        acc += cw[ch * K + k] * v;
                    }
                    xc[tt * Di + ch] = silu(acc);
                }
            if (conv_out) { /* the last K-1 conv inputs, oldest first */
                double *co = conv_out + (l * B + b) * (K - 1) * Di;
                for (int64_t r = 0; r < K - 1; r++) {
                    int64_t p = L - (K - 1) + r;
                    for (int64_t ch = 0; ch < Di; ch++)
                        co[r * Di + ch] =
                            p >= 0 ? xs[p * Di + ch] : (cs0 ? cs0[(K - 1 + p) * Di + ch] : 0.0);
                }
            }
            /* dbc = x @ x_proj^T -> dt_low (R), B (N), C (N) */
            for (int64_t tt = 0; tt < L; tt++)
                for (int64_t o = 0; o < R + 2 * N; o++) {
                    double acc = 0.0;
                    for (int64_t ch = 0; ch < Di; ch++)
                        acc += xc[tt * Di + ch] * xp[o * Di + ch];
                    dbc[tt * (R + 2 * N) + o] = acc;
                }
            /* delta = softplus(dt_low @ dt_proj_w^T + dt_proj_b) */
            for (int64_t tt = 0; tt < L; tt++)
                for (int64_t ch = 0; ch < Di; ch++) {
                    double acc = dtb[ch];
                    for (int64_t r = 0; r < R; r++)
                        acc += dbc[tt * (R + 2 * N) + r] * dtw[ch * R + r];
                    delta[tt * Di + ch] = softplus(acc);
                }
            /* selective scan per channel: A = -exp(A_log);
             * s_t = exp(delta_t A) s_{t-1} + delta_t B_t x_t;  y_t = C_t . s_t + D x_t;
             * y_t *= SiLU(z_t) */
            for (int64_t ch = 0; ch < Di; ch++) {
                for (int64_t n = 0; n < N; n++)
                    s[n] = ssm0 ? ssm0[((l * B + b) * Di + ch) * N + n] : 0.0;
                for (int64_t tt = 0; tt < L; tt++) {
                    const double *Bt = dbc + tt * (R + 2 * N) + R, *Ct = Bt + N;
                    double dl = delta[tt * Di + ch], xv = xc[tt * Di + ch];
                    double acc = 0.0;
                    for (int64_t n = 0; n < N; n++) {
                        double A = -exp(alog[ch * N + n]);
                        s[n] = exp(dl * A) * s[n] + dl * Bt[n] * xv;
                        acc += s[n] * Ct[n];
                    }
                    acc += Dp[ch] * xv;
                    y[tt * Di + ch] = acc * silu(zs[tt * Di + ch]);
                }
                if (ssm_out)
                    for (int64_t n = 0; n < N; n++)
                        ssm_out[((l * B + b) * Di + ch) * N + n] = s[n];
            }
            /* h = y @ out_proj^T */
            for (int64_t tt = 0; tt < L; tt++)
                for (int64_t j = 0; j < d; j++) {
                    double acc = 0.0;
                    for (int64_t ch = 0; ch < Di; ch++)
                        acc += y[tt * Di + ch] * ow[j * Di + ch];
                    h[tt * d + j] = acc;
                }
        }
        /* logits = lm_head(Norm_f(h + residual)); CE = logsumexp - logit[target] */
        for (int64_t tt = 0; tt < L; tt++) {
            double row[256];
            for (int64_t j = 0; j < d; j++)
                resid[tt * d + j] += h[tt * d + j];
            norm_row(xf, resid + tt * d, nfw, nfb, d, eps);
            double mx = -INFINITY;
            for (int64_t v = 0; v < V; v++) {
                double acc = 0.0;
                for (int64_t j = 0; j < d; j++)
                    acc += xf[j] * head[v * d + j];
                row[v] = acc;
                if (acc > mx) mx = acc;
                if (logits) logits[(b * L + tt) * V + v] = acc;
            }
            if (targets) {
                double se = 0.0;
                for (int64_t v = 0; v < V; v++)
                    se += exp(row[v] - mx);
                double l_ce = mx + log(se) - row[targets[b * L + tt]];
                if (ce) ce[b * L + tt] = l_ce;
                total += l_ce;
            }
        }
    }
done:
    free(h), free(resid), free(u), free(xs), free(zs), free(xc), free(dbc), free(delta), free(y);
    free(s), free(xf), free(t);
    return total;
}

void ref64_randomize(mb_model *m, uint64_t seed) {
    mb_model_init(m, seed);
    const mb_config *c = &m->cfg;
    int64_t d = c->d_model, Di = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    mb_rng r;
    mb_rng_seed(&r, seed ^ 0x5eed5eedULL);
    mb_weights *w = &m->w;
#define U(a) ((float)((2.0 * mb_rng_double(&r) - 1.0) * (a)))
#define G(a) ((float)(mb_rng_normal(&r) * (a)))
    for (int64_t i = 0; i < 256 * d; i++)
        w->embedding[i] = G(1.0);
    for (int64_t l = 0; l < c->n_layer; l++) {
        mb_layer_weights *lw = &w->layers[l];
        for (int64_t j = 0; j < d; j++)
            lw->norm_w[j] = 1.0f + G(0.3);
        if (lw->norm_b)
            for (int64_t j = 0; j < d; j++)
                lw->norm_b[j] = G(0.2);
        for (int64_t i = 0; i < 2 * Di * d; i++)
            lw->in_proj_w[i] *= 1.5f;
        for (int64_t i = 0; i < Di * K; i++)
            lw->conv_w[i] = U(1.0);
        for (int64_t i = 0; i < Di; i++)
            lw->conv_b[i] = U(0.5);
        for (int64_t i = 0; i < (R + 2 * N) * Di; i++)
            lw->x_proj_w[i] = U(2.0 / sqrt((double)Di));
        for (int64_t i = 0; i < Di * R; i++)
            lw->dt_proj_w[i] = U(1.0 / sqrt((double)R));
        for (int64_t i = 0; i < Di; i++)
            lw->dt_proj_b[i] = U(3.0) - 1.0f;
        lw->dt_proj_b[Di / 2] = 30.0f; /* softplus' linear branch (threshold 20) */
        for (int64_t i = 0; i < Di * N; i++)
            lw->A_log[i] = U(1.5) + 0.5f;
        for (int64_t i = 0; i < Di; i++)
            lw->D[i] = G(1.0);
        for (int64_t i = 0; i < d * Di; i++)
            lw->out_proj_w[i] = U(1.0 / sqrt((double)Di));
    }
    for (int64_t j = 0; j < d; j++)
        w->norm_f_w[j] = 1.0f + G(0.3);
    if (w->norm_f_b)
        for (int64_t j = 0; j < d; j++)
            w->norm_f_b[j] = G(0.2);
    if (!c->tie_embeddings)
        for (int64_t i = 0; i < 256 * d; i++)
            w->lm_head[i] = U(2.0 / sqrt((double)d));
    else /* tied: the embedding is also the head; keep logits O(1) */
        for (int64_t i = 0; i < 256 * d; i++)
            w->embedding[i] *= 0.5f;
#undef U
#undef G
}

double ref64_rel_err(const float *a, const double *ref, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        if (e > num || isnan(e)) num = isnan(e) ? INFINITY : e;
        if (fabs(ref[i]) > den) den = fabs(ref[i]);
    }
    return den > 0.0 ? num / den : num;
}
