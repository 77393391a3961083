/* One recurrent step of the MambaByte LM for a batch of sequences (model.md "Recurrent
 * step"; mamba_ssm `Mamba.step` and `MambaLMHeadModel` with inference_params). The SSM update,
 * C-contraction, D skip and z gate are one fused loop over (d_inner, d_state), as in
 * kroggen/mamba.c; each line names the mamba_ssm line it implements. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu/fastmath.h"
#include "infer/state.h"

static inline float silu(float v) {
    return v / (1.0f + expf(-v));
}

/* mamba_ssm: F.softplus with threshold 20 */
static inline float softplus(float v) {
    return v > 20.0f ? v : log1pf(expf(v));
}

/* out (S, d) = Norm(in) per row: RMSNorm (b == NULL) or LayerNorm with bias. */
static void norm_rows(const float *in, float *out, const float *w, const float *b, int64_t S,
                      int64_t d, float eps) {
    for (int64_t s = 0; s < S; s++) {
        const float *x = in + s * d;
        float *o = out + s * d;
        if (b) {
            double mean = 0.0, var = 0.0;
            for (int64_t j = 0; j < d; j++)
                mean += x[j];
            mean /= (double)d;
            for (int64_t j = 0; j < d; j++)
                var += ((double)x[j] - mean) * ((double)x[j] - mean);
            var /= (double)d;
            float rstd = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
            for (int64_t j = 0; j < d; j++)
                o[j] = (x[j] - m) * rstd * w[j] + b[j];
        } else {
            double ss = 0.0;
            for (int64_t j = 0; j < d; j++)
                ss += (double)x[j] * x[j];
            float rstd = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
            for (int64_t j = 0; j < d; j++)
                o[j] = x[j] * rstd * w[j];
        }
    }
}

/* out (S, M) = in (S, K) @ W^T, W (M, K) row-major: gemv for one sequence, gemm otherwise. */
static void matmul_t(const float *in, const float *W, float *out, int64_t S, int64_t M, int64_t K) {
    if (S == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)M, (int)K, 1.0f, W, (int)K, in, 1, 0.0f, out,
                    1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)S, (int)M, (int)K, 1.0f, in,
                    (int)K, W, (int)K, 0.0f, out, (int)M);
}

/* Mixer of layer l for every sequence: u (S, d) -> hidden (S, d); updates the states. */
static void mixer_step(const mb_config *c, const mb_layer_weights *lw, mb_state *st, int64_t l,
                       mb_step_scratch *v) {
    const int64_t S = st->n_seq, d = c->d_model, Di = c->d_inner, N = c->d_state;
    const int64_t K = c->d_conv, R = c->dt_rank, W = R + 2 * N;

    /* xz = self.in_proj(hidden_states.squeeze(1)) */
    matmul_t(v->u, lw->in_proj_w, v->xz, S, 2 * Di, d);

    /* conv_state: roll, write x, sum(conv_state * conv1d.weight) + conv1d.bias, then SiLU.
     * The window holds the K-1 previous inputs (oldest first); the new x is tap K-1. */
    float *conv_l = st->conv + l * S * (K - 1) * Di;
#pragma omp parallel for schedule(static) if (S * Di >= 4096)
    for (int64_t i = 0; i < S * Di; i++) {
        const int64_t s = i / Di, ch = i % Di;
        float *win = conv_l + s * (K - 1) * Di + ch; /* element k at win[k * Di] */
        const float *wc = lw->conv_w + ch * K;
        const float xn = v->xz[s * 2 * Di + ch];
        float acc = lw->conv_b[ch];
        for (int64_t k = 0; k < K - 1; k++)
            acc += wc[k] * win[k * Di];
        acc += wc[K - 1] * xn;
        for (int64_t k = 0; k + 1 < K - 1; k++)
            win[k * Di] = win[(k + 1) * Di];
        if (K > 1) win[(K - 2) * Di] = xn;
        v->xc[s * Di + ch] = silu(acc); /* x = self.act(x) */
    }

    /* x_db = self.x_proj(x); dt, B, C = torch.split(x_db, [R, N, N]) */
    matmul_t(v->xc, lw->x_proj_w, v->dbc, S, W, Di);
    /* dt = F.linear(dt, self.dt_proj.weight)  (bias added with the softplus below) */
    if (S == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)Di, (int)R, 1.0f, lw->dt_proj_w, (int)R,
                    v->dbc, 1, 0.0f, v->delta, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)S, (int)Di, (int)R, 1.0f, v->dbc,
                    (int)W, lw->dt_proj_w, (int)R, 0.0f, v->delta, (int)Di);

    /* The fused selective-state update (selective_state_update / Mamba.step):
     *   dt = softplus(dt + dt_bias); dA = exp(dt * A); dB = dt * B
     *   ssm_state = ssm_state * dA + x * dB;  y = ssm_state @ C + D * x;  y = y * SiLU(z) */
    float *ssm_l = st->ssm + l * S * Di * N;
#pragma omp parallel for schedule(static) if (S * Di * N >= 16384)
    for (int64_t i = 0; i < S * Di; i++) {
        const int64_t s = i / Di, ch = i % Di;
        const float *Bv = v->dbc + s * W + R, *Cv = Bv + N;
        const float *Alog = lw->A_log + ch * N;
        float *h = ssm_l + (s * Di + ch) * N;
        const float dt = softplus(v->delta[s * Di + ch] + lw->dt_proj_b[ch]);
        const float x = v->xc[s * Di + ch];
        const float dtx = dt * x;
        float y = 0.0f;
#pragma omp simd reduction(+ : y)
        for (int64_t n = 0; n < N; n++) {
            /* exp(dt * A), A = -exp(A_log); the scan's vectorisable exp */
            const float dA = mb_fast_expf(-dt * mb_fast_expf(Alog[n]));
            const float hn = dA * h[n] + dtx * Bv[n];
            h[n] = hn;
            y += hn * Cv[n];
        }
        y += lw->D[ch] * x;
        v->delta[s * Di + ch] = dt;
        v->y[s * Di + ch] = y * silu(v->xz[s * 2 * Di + Di + ch]);
    }

    /* out = self.out_proj(y) */
    matmul_t(v->y, lw->out_proj_w, v->hidden, S, d, Di);
}

/* One step for all n_seq sequences of s: bytes (n_seq) in, logits (n_seq, 256) out (fp32,
 * row-major). Follows model.md "Forward" for one position, carrying the conv window and SSM
 * state: the result equals mb_forward at the same position. Residual stream in fp32
 * (residual_in_fp32). Bad arguments (NULL pointers; a state created for another config) set
 * the error (MB_EINVAL, see mb_last_error) and leave the state untouched; for a config
 * mismatch the logits are filled with NaN. */
void mb_step(const mb_model *m, mb_state *s, const uint8_t *bytes, float *logits) {
    if (!m || !s || !bytes || !logits || !s->conv || !s->ssm || !s->scratch) {
        mb_fail(MB_EINVAL, "mb_step: model, state, bytes or logits is NULL");
        return;
    }
    const mb_config *c = &m->cfg, *sc = &s->cfg;
    const int64_t S = s->n_seq, d = c->d_model, V = c->vocab_size;
    if (sc->d_model != c->d_model || sc->n_layer != c->n_layer || sc->d_inner != c->d_inner ||
        sc->d_state != c->d_state || sc->d_conv != c->d_conv || sc->dt_rank != c->dt_rank) {
        mb_fail(MB_EINVAL,
                "mb_step: state was created for a different config (d_model %lld, "
                "n_layer %lld; model has %lld, %lld)",
                (long long)sc->d_model, (long long)sc->n_layer, (long long)c->d_model,
                (long long)c->n_layer);
        for (int64_t i = 0; i < S * V; i++)
            logits[i] = NAN;
        return;
    }
    mb_step_scratch v;
    mb_step_scratch_bind(s, &v);

    /* hidden_states = self.embedding(input_ids) */
    for (int64_t i = 0; i < S; i++)
        memcpy(v.hidden + i * d, m->w.embedding + (int64_t)bytes[i] * d, (size_t)d * sizeof(float));
    memset(v.resid, 0, (size_t)(S * d) * sizeof(float));

    for (int64_t l = 0; l < c->n_layer; l++) {
        const mb_layer_weights *lw = &m->w.layers[l];
        /* Block: residual = hidden + residual (fp32); hidden = norm(residual) */
        for (int64_t i = 0; i < S * d; i++)
            v.resid[i] += v.hidden[i];
        norm_rows(v.resid, v.u, lw->norm_w, lw->norm_b, S, d, c->norm_eps);
        mixer_step(c, lw, s, l, &v);
    }
    /* norm_f(hidden + residual); lm_head */
    for (int64_t i = 0; i < S * d; i++)
        v.resid[i] += v.hidden[i];
    norm_rows(v.resid, v.u, m->w.norm_f_w, m->w.norm_f_b, S, d, c->norm_eps);
    matmul_t(v.u, m->w.lm_head, logits, S, V, d);
}
