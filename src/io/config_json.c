/* config.json reader/writer for the mamba_ssm and Hugging Face flavours (config_json.h). */
#include "io/config_json.h"

#include "io/atomic_file.h"
#include "io/json_check.h"
#include "io/json_type.h"
#include "io/printable.h"
#include "io/regular_file.h"
#include "plural.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *mb_config_flavour_name(mb_config_flavour f) {
    return f == MB_CFG_HF ? "hf" : "mamba_ssm";
}

/* ------------------------------------------------------------------ field access */

typedef struct {
    const char *path;
    const cJSON *obj;
    const char *where; /* "" or "ssm_cfg." for messages */
} jctx;

/* Integer field: *out untouched when absent. */
static int get_int(const jctx *x, const char *key, int64_t *out, int *present) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(x->obj, key);
    if (present) *present = v != NULL;
    if (!v) return MB_OK;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!cJSON_IsNumber(v))
        return mb_fail(MB_EFORMAT, "file %s: field %s%s must be an integer (got %s)", x->path,
                       x->where, key, mb_json_type(v));
    if (!isfinite(d) || d != floor(d) || fabs(d) > 1e15)
        return mb_fail(MB_EFORMAT, "file %s: field %s%s must be an integer up to 1e15 (got %g)",
                       x->path, x->where, key, d);
    *out = (int64_t)d;
    return MB_OK;
}

static int get_bool(const jctx *x, const char *key, int *out, int *present) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(x->obj, key);
    if (present) *present = v != NULL;
    if (!v) return MB_OK;
    if (!cJSON_IsBool(v))
        return mb_fail(MB_EFORMAT, "file %s: field %s%s must be true or false (got %s)", x->path,
                       x->where, key, mb_json_type(v));
    *out = cJSON_IsTrue(v);
    return MB_OK;
}

static int get_float(const jctx *x, const char *key, float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(x->obj, key);
    if (!v) return MB_OK;
    if (!cJSON_IsNumber(v))
        return mb_fail(MB_EFORMAT, "file %s: field %s%s must be a number (got %s)", x->path,
                       x->where, key, mb_json_type(v));
    if (!isfinite(v->valuedouble)) /* (a literal such as 1e999, past the double range) */
        return mb_fail(MB_EFORMAT, "file %s: field %s%s must be a finite number (got %g)", x->path,
                       x->where, key, v->valuedouble);
    float f = (float)v->valuedouble;
    if (!isfinite(f))
        return mb_fail(MB_EFORMAT, "file %s: field %s%s = %g is out of the float range", x->path,
                       x->where, key, v->valuedouble);
    *out = f;
    return MB_OK;
}

/* dt_rank / time_step_rank: "auto" (-> 0) or a positive integer. */
static int get_rank(const jctx *x, const char *key, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(x->obj, key);
    if (!v) return MB_OK;
    if (cJSON_IsString(v)) {
        char got[MB_PRINTABLE_BUF];
        if (strcmp(v->valuestring, "auto") != 0)
            return mb_fail(MB_EFORMAT,
                           "file %s: field %s%s must be \"auto\" or an integer (got \"%s\")",
                           x->path, x->where, key, mb_printable(v->valuestring, got));
        *out = 0;
        return MB_OK;
    }
    int rc = get_int(x, key, out, NULL);
    if (rc == MB_OK && *out <= 0)
        return mb_fail(MB_EFORMAT, "file %s: field %s%s must be \"auto\" or positive (got %lld)",
                       x->path, x->where, key, (long long)*out);
    return rc;
}

/* Required string value, if present, must equal `want`. */
static int expect_str(const jctx *x, const char *key, const char *want, const char *why) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(x->obj, key);
    if (!v) return MB_OK;
    if (!cJSON_IsString(v))
        return mb_fail(MB_EFORMAT, "file %s: field %s%s must be a string (got %s)", x->path,
                       x->where, key, mb_json_type(v));
    char got[MB_PRINTABLE_BUF];
    if (strcmp(v->valuestring, want) != 0)
        return mb_fail(MB_EFORMAT, "file %s: field %s%s is \"%s\"; only \"%s\" is supported%s",
                       x->path, x->where, key, mb_printable(v->valuestring, got), want, why);
    return MB_OK;
}

static int expect_bool(const jctx *x, const char *key, int want, const char *why) {
    int b = want, rc = get_bool(x, key, &b, NULL);
    if (rc) return rc;
    if (b != want)
        return mb_fail(MB_EFORMAT, "file %s: field %s%s is %s; only %s is supported (%s)", x->path,
                       x->where, key, b ? "true" : "false", want ? "true" : "false", why);
    return MB_OK;
}

static int levenshtein(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 99;
    int prev[64], cur[64];
    for (size_t j = 0; j <= m; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int c = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < c) c = prev[j] + 1;
            if (cur[j - 1] + 1 < c) c = cur[j - 1] + 1;
            cur[j] = c;
        }
        memcpy(prev, cur, sizeof cur);
    }
    return prev[m];
}

static int in_list(const char *k, const char *const *list) {
    for (; *list; list++)
        if (strcmp(k, *list) == 0) return 1;
    return 0;
}

/* Closest name in list within edit distance 2, or NULL. */
static const char *near(const char *k, const char *const *list) {
    const char *best = NULL;
    int bd = 3;
    for (; *list; list++) {
        int d = levenshtein(k, *list);
        if (d < bd) bd = d, best = *list;
    }
    return strlen(k) >= 4 ? best : NULL;
}

/* Every key of x->obj must be in `known`; the error names the key and a close match. */
static int check_keys_strict(const jctx *x, const char *const *known, const char *what) {
    const cJSON *v;
    cJSON_ArrayForEach(v, x->obj) {
        if (in_list(v->string, known)) continue;
        const char *s = near(v->string, known);
        char field[MB_PRINTABLE_BUF];
        mb_printable(v->string, field);
        if (s)
            return mb_fail(MB_EFORMAT, "file %s: unknown field %s%s (did you mean %s%s?)", x->path,
                           x->where, field, x->where, s);
        return mb_fail(MB_EFORMAT,
                       "file %s: unknown field %s%s (not a %s field this library "
                       "supports)",
                       x->path, x->where, field, what);
    }
    return MB_OK;
}

/* ------------------------------------------------------------------ parse */

static const char *const k_ssm_top[] = {"d_model",
                                        "d_intermediate",
                                        "n_layer",
                                        "vocab_size",
                                        "ssm_cfg",
                                        "attn_layer_idx",
                                        "attn_cfg",
                                        "rms_norm",
                                        "residual_in_fp32",
                                        "fused_add_norm",
                                        "pad_vocab_size_multiple",
                                        "tie_embeddings",
                                        NULL};
static const char *const k_ssm_cfg[] = {
    "layer",   "d_state",  "d_conv",        "expand",    "dt_rank", "dt_min",        "dt_max",
    "dt_init", "dt_scale", "dt_init_floor", "conv_bias", "bias",    "use_fast_path", NULL};
/* HF keys we read (a near-miss of one of these is an error) ... */
static const char *const k_hf_read[] = {"model_type",
                                        "vocab_size",
                                        "hidden_size",
                                        "intermediate_size",
                                        "state_size",
                                        "num_hidden_layers",
                                        "layer_norm_epsilon",
                                        "expand",
                                        "conv_kernel",
                                        "use_bias",
                                        "use_conv_bias",
                                        "hidden_act",
                                        "time_step_rank",
                                        "residual_in_fp32",
                                        "tie_word_embeddings",
                                        "time_step_min",
                                        "time_step_max",
                                        "time_step_floor",
                                        NULL};
/* ... and keys of transformers' MambaConfig / PretrainedConfig we accept and ignore. */
static const char *const k_hf_ignored[] = {"architectures",
                                           "pad_token_id",
                                           "bos_token_id",
                                           "eos_token_id",
                                           "initializer_range",
                                           "time_step_scale",
                                           "time_step_init_scheme",
                                           "rescale_prenorm_residual",
                                           "use_cache",
                                           "use_mambapy",
                                           "torch_dtype",
                                           "transformers_version",
                                           "_name_or_path",
                                           "n_layer",
                                           "d_model",
                                           NULL};

static int parse_mamba_ssm(const jctx *x, mb_config *c) {
    int rc, has_d, has_l, has_v;
    int64_t pad = 8, v = 0;
    if ((rc = check_keys_strict(x, k_ssm_top, "mamba_ssm MambaConfig"))) return rc;
    if ((rc = get_int(x, "d_model", &c->d_model, &has_d))) return rc;
    if ((rc = get_int(x, "n_layer", &c->n_layer, &has_l))) return rc;
    if (!has_d) return mb_fail(MB_EFORMAT, "file %s: required field d_model is missing", x->path);
    if (!has_l) return mb_fail(MB_EFORMAT, "file %s: required field n_layer is missing", x->path);
    if ((rc = get_int(x, "vocab_size", &v, &has_v))) return rc;
    if (!has_v)
        return mb_fail(MB_EFORMAT,
                       "file %s: field vocab_size is missing (mamba_ssm's default 50277 is not "
                       "a byte vocabulary; need 256)",
                       x->path);
    if ((rc = get_int(x, "pad_vocab_size_multiple", &pad, NULL))) return rc;
    if (pad <= 0)
        return mb_fail(MB_EFORMAT, "file %s: field pad_vocab_size_multiple must be positive",
                       x->path);
    if (v <= 0 || v > MB_VOCAB)
        return mb_fail(MB_EFORMAT, "file %s: field vocab_size is %lld; a byte model needs 256",
                       x->path, (long long)v);
    int64_t padded = v % pad ? v + pad - v % pad : v;
    if (padded != MB_VOCAB)
        return mb_fail(MB_EFORMAT,
                       "file %s: field vocab_size %lld padded to pad_vocab_size_multiple %lld "
                       "gives %lld row%s; a byte model needs 256",
                       x->path, (long long)v, (long long)pad, (long long)padded, mb_plural(padded));
    c->vocab_size = MB_VOCAB;
    int b = 0;
    if ((rc = get_bool(x, "rms_norm", &c->rms_norm, NULL))) return rc;
    if ((rc = get_bool(x, "tie_embeddings", &c->tie_embeddings, NULL))) return rc;
    if ((rc = get_bool(x, "residual_in_fp32", &b, NULL))) return rc;
    if ((rc = get_bool(x, "fused_add_norm", &b, NULL))) return rc;
    int64_t dint = 0;
    if ((rc = get_int(x, "d_intermediate", &dint, NULL))) return rc;
    if (dint != 0)
        return mb_fail(MB_EFORMAT,
                       "file %s: field d_intermediate is %lld; MLP blocks are not "
                       "supported (need 0)",
                       x->path, (long long)dint);
    const cJSON *ai = cJSON_GetObjectItemCaseSensitive(x->obj, "attn_layer_idx");
    if (ai && !(cJSON_IsArray(ai) && cJSON_GetArraySize(ai) == 0) && !cJSON_IsNull(ai))
        return mb_fail(MB_EFORMAT,
                       "file %s: field attn_layer_idx must be empty (attention "
                       "layers are not supported)",
                       x->path);
    const cJSON *ac = cJSON_GetObjectItemCaseSensitive(x->obj, "attn_cfg");
    if (ac && !(cJSON_IsObject(ac) && cJSON_GetArraySize(ac) == 0) && !cJSON_IsNull(ac))
        return mb_fail(MB_EFORMAT,
                       "file %s: field attn_cfg must be empty (attention layers are "
                       "not supported)",
                       x->path);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(x->obj, "ssm_cfg");
    if (s) {
        if (!cJSON_IsObject(s))
            return mb_fail(MB_EFORMAT, "file %s: field ssm_cfg must be an object (got %s)", x->path,
                           mb_json_type(s));
        jctx y = {x->path, s, "ssm_cfg."};
        if ((rc = check_keys_strict(&y, k_ssm_cfg, "Mamba-1 ssm_cfg"))) return rc;
        if ((rc = expect_str(&y, "layer", "Mamba1", " (Mamba-2 is not supported)"))) return rc;
        if ((rc = get_int(&y, "d_state", &c->d_state, NULL))) return rc;
        if ((rc = get_int(&y, "d_conv", &c->d_conv, NULL))) return rc;
        if ((rc = get_int(&y, "expand", &c->expand, NULL))) return rc;
        if ((rc = get_rank(&y, "dt_rank", &c->dt_rank))) return rc;
        if ((rc = get_float(&y, "dt_min", &c->dt_min))) return rc;
        if ((rc = get_float(&y, "dt_max", &c->dt_max))) return rc;
        if ((rc = get_float(&y, "dt_init_floor", &c->dt_init_floor))) return rc;
        float f = 0;
        if ((rc = get_float(&y, "dt_scale", &f))) return rc;
        if ((rc = get_bool(&y, "use_fast_path", &b, NULL))) return rc;
        const cJSON *di = cJSON_GetObjectItemCaseSensitive(s, "dt_init");
        if (di && !(cJSON_IsString(di) && (strcmp(di->valuestring, "random") == 0 ||
                                           strcmp(di->valuestring, "constant") == 0)))
            return mb_fail(MB_EFORMAT,
                           "file %s: field ssm_cfg.dt_init must be \"random\" or "
                           "\"constant\"",
                           x->path);
        if ((rc = expect_bool(&y, "conv_bias", 1, "the conv1d always has a bias"))) return rc;
        if ((rc = expect_bool(&y, "bias", 0, "in_proj/out_proj have no bias"))) return rc;
    }
    return MB_OK;
}

static int parse_hf(const jctx *x, mb_config *c) {
    int rc, has_d, has_l, has_v;
    const cJSON *v;
    cJSON_ArrayForEach(v, x->obj) {
        if (in_list(v->string, k_hf_read) || in_list(v->string, k_hf_ignored)) continue;
        const char *s = near(v->string, k_hf_read);
        char field[MB_PRINTABLE_BUF];
        if (s)
            return mb_fail(MB_EFORMAT, "file %s: unknown field %s (did you mean %s?)", x->path,
                           mb_printable(v->string, field), s);
    }
    if ((rc = expect_str(x, "model_type", "mamba", " (transformers MambaForCausalLM)"))) return rc;
    if ((rc = get_int(x, "hidden_size", &c->d_model, &has_d))) return rc;
    if ((rc = get_int(x, "num_hidden_layers", &c->n_layer, &has_l))) return rc;
    if (!has_d)
        return mb_fail(MB_EFORMAT, "file %s: required field hidden_size is missing", x->path);
    if (!has_l)
        return mb_fail(MB_EFORMAT, "file %s: required field num_hidden_layers is missing", x->path);
    int64_t vs = 0;
    if ((rc = get_int(x, "vocab_size", &vs, &has_v))) return rc;
    if (!has_v)
        return mb_fail(MB_EFORMAT,
                       "file %s: field vocab_size is missing (transformers' default "
                       "50280 is not a byte vocabulary; need 256)",
                       x->path);
    if (vs != MB_VOCAB)
        return mb_fail(MB_EFORMAT, "file %s: field vocab_size is %lld; a byte model needs 256",
                       x->path, (long long)vs);
    c->vocab_size = MB_VOCAB;
    c->rms_norm = 1; /* MambaRMSNorm only */
    int b = 0;
    if ((rc = get_int(x, "state_size", &c->d_state, NULL))) return rc;
    if ((rc = get_int(x, "expand", &c->expand, NULL))) return rc;
    /* transformers builds the mixer from intermediate_size where the file gives it (its
     * MambaConfig sets it from expand, then the file's keys over it): d_inner = it, so expand =
     * it / hidden_size, which must divide it */
    int64_t inter = 0;
    int has_inter = 0;
    if ((rc = get_int(x, "intermediate_size", &inter, &has_inter))) return rc;
    if (has_inter && !(c->d_model > 0 && inter > 0 && inter % c->d_model == 0 &&
                       inter / c->d_model == c->expand)) { /* (no product: it could overflow) */
        if (inter <= 0 || c->d_model <= 0 || inter % c->d_model != 0)
            return mb_fail(MB_EFORMAT,
                           "file %s: field intermediate_size %lld is not a positive multiple of "
                           "hidden_size %lld (mambabyte's d_inner is expand x d_model)",
                           x->path, (long long)inter, (long long)c->d_model);
        c->expand = inter / c->d_model;
    }
    if ((rc = get_int(x, "conv_kernel", &c->d_conv, NULL))) return rc;
    if ((rc = get_rank(x, "time_step_rank", &c->dt_rank))) return rc;
    if ((rc = get_float(x, "layer_norm_epsilon", &c->norm_eps))) return rc;
    if ((rc = get_float(x, "time_step_min", &c->dt_min))) return rc;
    if ((rc = get_float(x, "time_step_max", &c->dt_max))) return rc;
    if ((rc = get_float(x, "time_step_floor", &c->dt_init_floor))) return rc;
    if ((rc = get_bool(x, "tie_word_embeddings", &c->tie_embeddings, NULL))) return rc;
    if ((rc = get_bool(x, "residual_in_fp32", &b, NULL))) return rc;
    if ((rc = expect_bool(x, "use_bias", 0, "in_proj/out_proj have no bias"))) return rc;
    if ((rc = expect_bool(x, "use_conv_bias", 1, "the conv1d always has a bias"))) return rc;
    if ((rc = expect_str(x, "hidden_act", "silu", ""))) return rc;
    return MB_OK;
}

/* A key given twice in one object (at any depth): JSON leaves its meaning open (cJSON would read
 * the first, Python's json the last), so it is refused, named. */
static int check_duplicate_keys(const cJSON *o, const char *path) {
    for (const cJSON *a = o->child; a; a = a->next) {
        for (const cJSON *b = a->next; cJSON_IsObject(o) && b; b = b->next)
            if (a->string && b->string && strcmp(a->string, b->string) == 0) {
                char shown[MB_PRINTABLE_BUF];
                return mb_fail(MB_EFORMAT, "file %s: field %s given twice", path,
                               mb_printable(a->string, shown));
            }
        if (cJSON_IsObject(a) || cJSON_IsArray(a)) {
            const int rc = check_duplicate_keys(a, path);
            if (rc) return rc;
        }
    }
    return MB_OK;
}

int mb_config_json_parse(const char *text, int64_t len, const char *path, mb_config *c,
                         mb_config_flavour *flavour_out) {
    if (!path) path = "(config)";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)len, &end, 0);
    if (!root)
        return mb_fail(MB_EFORMAT, "file %s: not valid JSON (error near byte %lld)", path,
                       end ? (long long)(end - text) : -1LL);
    for (const char *q = end; q < text + len; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != '\0') {
            cJSON_Delete(root);
            return mb_fail(MB_EFORMAT,
                           "file %s: trailing characters after the JSON object "
                           "(byte %lld)",
                           path, (long long)(q - text));
        }
    }
    int rc;
    mb_config_flavour fl = MB_CFG_MAMBA_SSM;
    if (!cJSON_IsObject(root)) {
        rc = mb_fail(MB_EFORMAT, "file %s: top level is %s, expected a JSON object", path,
                     mb_json_type(root));
    } else if ((rc = mb_json_check_nul(text, (size_t)(end - text), path, 0)) != MB_OK) {
        /* (named) */
    } else if ((rc = check_duplicate_keys(root, path)) != MB_OK) {
        /* (named) */
    } else {
        /* Hugging Face flavour: model_type, or (without it) a field only transformers' config
         * has, so that a missing model_type is reported as such */
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
        if (!mt) mt = cJSON_GetObjectItemCaseSensitive(root, "hidden_size");
        if (!mt) mt = cJSON_GetObjectItemCaseSensitive(root, "architectures");
        mb_config_default(c, 1, 1);
        c->dt_rank = 0;
        c->d_model = c->n_layer = 0;
        jctx x = {path, root, ""};
        if (mt) {
            fl = MB_CFG_HF;
            c->tie_embeddings = 1; /* transformers default */
            rc = parse_hf(&x, c);
        } else {
            c->rms_norm = 1; /* mamba_ssm MambaConfig defaults */
            c->tie_embeddings = 1;
            rc = parse_mamba_ssm(&x, c);
        }
    }
    cJSON_Delete(root);
    if (rc == MB_OK) {
        rc = mb_config_finalize(c);
        if (rc != MB_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", mb_last_error());
            rc = mb_fail(MB_EFORMAT, "file %s (%s flavour): %s", path, mb_config_flavour_name(fl),
                         msg);
        }
    }
    if (rc == MB_OK && flavour_out) *flavour_out = fl;
    return rc;
}

int mb_config_json_read(const char *path, mb_config *c, mb_config_flavour *flavour_out) {
    int fd = -1;
    int orc = mb_open_regular(path, "file", &fd, NULL);
    if (orc) return orc;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        const int e = errno;
        close(fd);
        return mb_fail(MB_EIO, "file %s: cannot open: %s", path, strerror(e));
    }
    enum { MAX = 1 << 20 };
    char *buf = malloc(MAX + 1);
    if (!buf) {
        fclose(f);
        return mb_fail(MB_ENOMEM, "file %s: out of memory", path);
    }
    size_t n = fread(buf, 1, MAX + 1, f);
    int err = ferror(f);
    fclose(f);
    int rc;
    if (err)
        rc = mb_fail(MB_EIO, "file %s: read error", path);
    else if (n > MAX)
        rc = mb_fail(MB_EFORMAT, "file %s: larger than 1 MiB; not a config", path);
    else
        rc = mb_config_json_parse(buf, (int64_t)n, path, c, flavour_out);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ write */

/* Shortest decimal that reads back as the same float. */
static void fmt_float(char *buf, size_t n, float v) {
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", n - strlen(buf) - 1);
}

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sbf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || b->n + (size_t)k + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 1024;
        while (k >= 0 && cap < b->n + (size_t)k + 1)
            cap *= 2;
        char *p = k < 0 ? NULL : realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

char *mb_config_json_string(const mb_config *c, mb_config_flavour flavour) {
    return mb_config_json_string_dtype(c, flavour, "float32");
}

char *mb_config_json_string_dtype(const mb_config *c, mb_config_flavour flavour,
                                  const char *torch_dtype) {
    sbuf b = {0};
    char dmin[32], dmax[32], dfl[32], eps[32];
    fmt_float(dmin, sizeof dmin, c->dt_min);
    fmt_float(dmax, sizeof dmax, c->dt_max);
    fmt_float(dfl, sizeof dfl, c->dt_init_floor);
    fmt_float(eps, sizeof eps, c->norm_eps);
    const char *tf[2] = {"false", "true"};
    if (flavour == MB_CFG_HF) {
        sbf(&b,
            "{\n  \"architectures\": [\"MambaForCausalLM\"],\n  \"model_type\": \"mamba\",\n"
            "  \"vocab_size\": %d,\n  \"hidden_size\": %lld,\n  \"state_size\": %lld,\n"
            "  \"num_hidden_layers\": %lld,\n  \"layer_norm_epsilon\": %s,\n  \"expand\": %lld,\n"
            "  \"conv_kernel\": %lld,\n  \"use_bias\": false,\n  \"use_conv_bias\": true,\n"
            "  \"hidden_act\": \"silu\",\n  \"initializer_range\": 0.1,\n"
            "  \"time_step_rank\": %lld,\n  \"time_step_scale\": 1.0,\n"
            "  \"time_step_min\": %s,\n  \"time_step_max\": %s,\n"
            "  \"time_step_init_scheme\": \"random\",\n  \"time_step_floor\": %s,\n"
            "  \"rescale_prenorm_residual\": false,\n  \"residual_in_fp32\": true,\n"
            "  \"tie_word_embeddings\": %s,\n  \"pad_token_id\": 0,\n  \"bos_token_id\": 0,\n"
            "  \"eos_token_id\": 0,\n  \"intermediate_size\": %lld,\n  \"use_cache\": true,\n"
            "  \"torch_dtype\": \"%s\"\n}\n",
            MB_VOCAB, (long long)c->d_model, (long long)c->d_state, (long long)c->n_layer, eps,
            (long long)c->expand, (long long)c->d_conv, (long long)c->dt_rank, dmin, dmax, dfl,
            tf[!!c->tie_embeddings], (long long)c->d_inner, torch_dtype);
    } else {
        sbf(&b,
            "{\n  \"d_model\": %lld,\n  \"n_layer\": %lld,\n  \"vocab_size\": %d,\n"
            "  \"ssm_cfg\": {\n    \"d_state\": %lld,\n    \"d_conv\": %lld,\n"
            "    \"expand\": %lld,\n    \"dt_rank\": %lld,\n    \"dt_min\": %s,\n"
            "    \"dt_max\": %s,\n    \"dt_init_floor\": %s\n  },\n  \"rms_norm\": %s,\n"
            "  \"residual_in_fp32\": true,\n  \"fused_add_norm\": true,\n"
            "  \"pad_vocab_size_multiple\": 8,\n  \"tie_embeddings\": %s\n}\n",
            (long long)c->d_model, (long long)c->n_layer, MB_VOCAB, (long long)c->d_state,
            (long long)c->d_conv, (long long)c->expand, (long long)c->dt_rank, dmin, dmax, dfl,
            tf[!!c->rms_norm], tf[!!c->tie_embeddings]);
    }
    if (b.oom) {
        free(b.s);
        mb_fail(MB_ENOMEM, "out of memory writing config JSON");
        return NULL;
    }
    return b.s;
}

int mb_config_json_write(const char *path, const mb_config *c, mb_config_flavour flavour) {
    return mb_config_json_write_dtype(path, c, flavour, "float32");
}

int mb_config_json_write_dtype(const char *path, const mb_config *c, mb_config_flavour flavour,
                               const char *torch_dtype) {
    if (flavour == MB_CFG_HF && !c->rms_norm)
        return mb_fail(MB_EINVAL,
                       "file %s: the Hugging Face Mamba format supports RMSNorm only "
                       "(this model uses LayerNorm); save in mamba_ssm format",
                       path);
    if (flavour == MB_CFG_MAMBA_SSM && c->norm_eps != 1e-5f)
        return mb_fail(MB_EINVAL,
                       "file %s: mamba_ssm config.json cannot store norm_eps %g "
                       "(fixed at 1e-5); save in hf format",
                       path, (double)c->norm_eps);
    char *s = mb_config_json_string_dtype(c, flavour, torch_dtype);
    if (!s) return MB_ENOMEM;
    int rc = mb_atomic_write_file(path, s, (int64_t)strlen(s));
    free(s);
    return rc;
}
