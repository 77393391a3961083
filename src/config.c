/* Model configuration: defaults, presets and closed-form sizes (model.md "Sizes and symbols"). */
#include "mambabyte.h"

#include <math.h>
#include <string.h>

void mb_config_default(mb_config *c, int64_t d_model, int64_t n_layer) {
    memset(c, 0, sizeof *c);
    c->d_model = d_model;
    c->n_layer = n_layer;
    c->vocab_size = MB_VOCAB;
    c->d_state = 16;
    c->d_conv = 4;
    c->expand = 2;
    c->dt_rank = 0; /* auto */
    c->rms_norm = 0;
    c->tie_embeddings = 0;
    c->residual_in_fp32 = 1;
    c->norm_eps = 1e-5f;
    c->dt_min = 1e-3f;
    c->dt_max = 1e-1f;
    c->dt_init_floor = 1e-4f;
    mb_config_finalize(c);
}

int mb_config_finalize(mb_config *c) {
    if (c->d_model <= 0 || c->d_model > (1 << 16))
        return mb_fail(MB_EINVAL, "config: d_model must be in 1..65536 (got %lld)",
                       (long long)c->d_model);
    if (c->n_layer <= 0 || c->n_layer > 4096)
        return mb_fail(MB_EINVAL, "config: n_layer must be in 1..4096 (got %lld)",
                       (long long)c->n_layer);
    if (c->vocab_size != MB_VOCAB)
        return mb_fail(MB_EINVAL, "config: vocab_size must be 256 (bytes), got %lld",
                       (long long)c->vocab_size);
    if (c->d_state <= 0 || c->d_state > 256)
        return mb_fail(MB_EINVAL, "config: d_state must be in 1..256 (got %lld)",
                       (long long)c->d_state);
    if (c->d_conv <= 0 || c->d_conv > 64)
        return mb_fail(MB_EINVAL, "config: d_conv must be in 1..64 (got %lld)",
                       (long long)c->d_conv);
    if (c->expand <= 0 || c->expand > 64)
        return mb_fail(MB_EINVAL, "config: expand must be in 1..64 (got %lld)",
                       (long long)c->expand);
    if (c->dt_rank < 0 || c->dt_rank > (1 << 16))
        return mb_fail(MB_EINVAL, "config: dt_rank must be 0 (auto) or in 1..65536 (got %lld)",
                       (long long)c->dt_rank);
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return mb_fail(MB_EINVAL,
                       "config: norm_eps (layer_norm_epsilon in Hugging Face configs) must be in "
                       "(0, 1) (got %g)",
                       (double)c->norm_eps);
    if (c->dt_rank == 0) c->dt_rank = (c->d_model + 15) / 16;
    c->d_inner = c->expand * c->d_model;
    c->rms_norm = c->rms_norm ? 1 : 0;
    c->tie_embeddings = c->tie_embeddings ? 1 : 0;
    c->residual_in_fp32 = 1;
    /* the initialisation range of delta (mamba_ssm's dt_min / dt_max / dt_init_floor, Hugging
     * Face's time_step_min / max / floor): 0 = the default; negative, NaN, inf or min > max is
     * refused (they were silently replaced, or drew dt from an empty or infinite range) */
    const struct {
        const char *name, *hf;
        float v;
    } dts[3] = {{"dt_min", "time_step_min", c->dt_min},
                {"dt_max", "time_step_max", c->dt_max},
                {"dt_init_floor", "time_step_floor", c->dt_init_floor}};
    for (int i = 0; i < 3; i++)
        if (!(dts[i].v >= 0.0f) || isinf(dts[i].v))
            return mb_fail(MB_EINVAL,
                           "config: %s (%s in Hugging Face configs) must be a finite value >= 0 "
                           "(0 = the default; got %g)",
                           dts[i].name, dts[i].hf, (double)dts[i].v);
    if (c->dt_min == 0.0f) c->dt_min = 1e-3f;
    if (c->dt_max == 0.0f) c->dt_max = 1e-1f;
    if (c->dt_init_floor == 0.0f) c->dt_init_floor = 1e-4f;
    if (c->dt_min > c->dt_max)
        return mb_fail(MB_EINVAL, "config: dt_min %g is above dt_max %g (time_step_min / max)",
                       (double)c->dt_min, (double)c->dt_max);
    return MB_OK;
}

typedef struct {
    const char *name;
    int64_t d_model, n_layer, d_state;
    int rms_norm, tie;
} preset;

/* tiny/small/medium train on a CPU; 353m and 972m are the paper's MambaByte sizes
 * (LayerNorm, untied, as the released configs). */
static const preset k_presets[] = {
    {"tiny", 64, 2, 16, 0, 0},    {"small", 128, 4, 16, 0, 0},  {"medium", 512, 8, 16, 0, 0},
    {"353m", 1024, 53, 16, 0, 0}, {"972m", 1792, 48, 16, 0, 0},
};

const char *mb_config_preset_names(void) {
    return "tiny, small, medium, 353m, 972m";
}

int mb_config_preset(mb_config *c, const char *name) {
    for (size_t i = 0; i < sizeof k_presets / sizeof k_presets[0]; i++) {
        const preset *p = &k_presets[i];
        if (strcmp(p->name, name) == 0) {
            mb_config_default(c, p->d_model, p->n_layer);
            c->d_state = p->d_state;
            c->rms_norm = p->rms_norm;
            c->tie_embeddings = p->tie;
            return mb_config_finalize(c);
        }
    }
    return mb_fail(MB_EINVAL, "unknown preset '%s' (known: %s)", name, mb_config_preset_names());
}

int mb_config_same_shape(const mb_config *a, const mb_config *b) {
    return a->d_model == b->d_model && a->n_layer == b->n_layer && a->d_state == b->d_state &&
           a->d_conv == b->d_conv && a->d_inner == b->d_inner && a->dt_rank == b->dt_rank &&
           a->rms_norm == b->rms_norm;
}

int64_t mb_config_n_params(const mb_config *c) {
    int64_t d = c->d_model, Di = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    int64_t V = c->vocab_size;
    int64_t norm = c->rms_norm ? d : 2 * d;
    int64_t layer =
        norm + 2 * Di * d + Di * K + Di + (R + 2 * N) * Di + Di * R + Di + Di * N + Di + d * Di;
    int64_t n = V * d + c->n_layer * layer + norm;
    if (!c->tie_embeddings) n += V * d;
    return n;
}

int64_t mb_config_state_bytes(const mb_config *c) {
    return c->n_layer * c->d_inner * (c->d_conv - 1 + c->d_state) * (int64_t)sizeof(float);
}
