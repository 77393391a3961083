/* Byte sampler in the style of llama2.c's run.c: argmax at temperature 0, otherwise
 * softmax(logits / T) restricted by top-k and then top-p (nucleus, Holtzman et al. 2019),
 * renormalised, and drawn with the library's xoshiro256** generator. */
#include "infer/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Cumulative probability counts as reaching top_p when within this of it (the logits are
 * fp32, so a set with exact probability p may sum to p - 1e-8). */
#define MB_TOP_P_SLACK 1e-6

int mb_sampler_check(float temperature, int top_k, float top_p) {
    if (!(temperature >= 0.0f) || isinf(temperature))
        return mb_fail(MB_EINVAL, "sampler: temperature must be a finite value >= 0 (got %g)",
                       (double)temperature);
    if (top_k < 0 || top_k > MB_VOCAB)
        return mb_fail(MB_EINVAL, "sampler: top_k must be in 0..%d (0 = off), got %d", MB_VOCAB,
                       top_k);
    if (!(top_p > 0.0f && top_p <= 1.0f))
        return mb_fail(MB_EINVAL, "sampler: top_p must be in (0, 1] (1 = off), got %g",
                       (double)top_p);
    return MB_OK;
}

/* Settings are stored as given (check them with mb_sampler_check first); out-of-range values
 * act as "off" in mb_sample (temperature <= 0: argmax; top_k outside 1..255 and top_p
 * outside (0, 1): no truncation). The rng is seeded with `seed`: the same seed and logits
 * give the same bytes. If the workspace cannot be allocated, mb_sample uses stack buffers. */
void mb_sampler_init(mb_sampler *s, float temperature, int top_k, float top_p, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    mb_rng_seed(&s->rng, seed);
    s->probs = malloc(MB_VOCAB * sizeof(float));
    s->idx = malloc(MB_VOCAB * sizeof(int));
    if (!s->probs || !s->idx) {
        free(s->probs);
        free(s->idx);
        s->probs = NULL;
        s->idx = NULL;
    }
}

/* Free the workspace (safe to call twice). */
void mb_sampler_free(mb_sampler *s) {
    if (!s) return;
    free(s->probs);
    free(s->idx);
    s->probs = NULL;
    s->idx = NULL;
}

/* Lowest index of the largest logit (NaN never wins unless every logit is NaN). */
static int argmax(const float *logits) {
    int best = 0;
    for (int i = 1; i < MB_VOCAB; i++)
        if (logits[i] > logits[best] || (isnan(logits[best]) && !isnan(logits[i]))) best = i;
    return best;
}

/* Stable merge sort of idx[0..n) by probs descending (ties keep ascending index order). */
static void sort_desc(int *idx, const float *probs, int n) {
    int tmp[MB_VOCAB];
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            int a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                tmp[o++] = probs[idx[b]] > probs[idx[a]] ? idx[b++] : idx[a++];
            while (a < mid)
                tmp[o++] = idx[a++];
            while (b < hi)
                tmp[o++] = idx[b++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof(int));
    }
}

/* Draw one byte from 256 logits (not modified). */
int mb_sample(mb_sampler *s, const float *logits) {
    /* one rng draw per call at T > 0, none otherwise (mb_sample_draw then takes the argmax) */
    return mb_sample_draw(s, logits, s->temperature > 0.0f ? mb_rng_double(&s->rng) : 0.0);
}

int mb_sample_draw(mb_sampler *s, const float *logits, double u) {
    if (!(s->temperature > 0.0f)) return argmax(logits);

    float probs_stack[MB_VOCAB];
    int idx_stack[MB_VOCAB];
    float *probs = s->probs ? s->probs : probs_stack;
    int *idx = s->idx ? s->idx : idx_stack;

    /* softmax(logits / T), max-subtracted, accumulated in double */
    const float maxl = logits[argmax(logits)];
    const double invT = 1.0 / (double)s->temperature;
    double sum = 0.0;
    for (int i = 0; i < MB_VOCAB; i++) {
        double e = exp(((double)logits[i] - (double)maxl) * invT);
        probs[i] = (float)e;
        sum += e;
    }
    for (int i = 0; i < MB_VOCAB; i++)
        probs[i] = (float)(probs[i] / sum);

    const int use_k = s->top_k > 0 && s->top_k < MB_VOCAB;
    const int use_p = s->top_p > 0.0f && s->top_p < 1.0f;
    int n = MB_VOCAB;
    for (int i = 0; i < MB_VOCAB; i++)
        idx[i] = i;
    if (use_k || use_p) {
        sort_desc(idx, probs, MB_VOCAB);
        if (use_k) n = s->top_k; /* the k most probable bytes */
        if (use_p) {
            /* smallest prefix of the (renormalised) top-k set whose mass reaches p,
             * including the byte that crosses p */
            double kept = 0.0, cum = 0.0;
            for (int i = 0; i < n; i++)
                kept += probs[idx[i]];
            const double target = ((double)s->top_p - MB_TOP_P_SLACK) * kept;
            for (int i = 0; i < n; i++) {
                cum += probs[idx[i]];
                if (cum >= target) {
                    n = i + 1;
                    break;
                }
            }
        }
    }
    double mass = 0.0;
    for (int i = 0; i < n; i++)
        mass += probs[idx[i]];

    /* inverse-CDF draw over the kept set, renormalised to its mass */
    const double r = u * mass;
    double cdf = 0.0;
    for (int i = 0; i < n; i++) {
        cdf += probs[idx[i]];
        if (r < cdf) return idx[i];
    }
    for (int i = n - 1; i > 0; i--) /* rounding: the last kept byte of nonzero probability */
        if (probs[idx[i]] > 0.0f) return idx[i];
    return idx[0];
}
