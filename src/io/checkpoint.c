/* Checkpoint save/load (checkpoint.h): config.json + model.safetensors, mamba_ssm / HF. */
#include "io/checkpoint.h"

#include "io/printable.h"
#include "plural.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EMB_SSM "backbone.embedding.weight"
#define EMB_HF "backbone.embeddings.weight"
#define LM_HEAD "lm_head.weight"
#define PREFIX "module."

int mb_ckpt_format_parse(const char *s, mb_ckpt_format *out) {
    if (s && strcmp(s, "mamba_ssm") == 0)
        *out = MB_CKPT_MAMBA_SSM;
    else if (s && strcmp(s, "hf") == 0)
        *out = MB_CKPT_HF;
    else
        return mb_fail(MB_EINVAL, "unknown checkpoint format '%s' (known: mamba_ssm, hf)",
                       s ? s : "(null)");
    return MB_OK;
}

const char *mb_ckpt_format_name(mb_ckpt_format f) {
    return f == MB_CKPT_HF ? "hf" : "mamba_ssm";
}

/* mkdir -p */
static int make_dirs(const char *dir) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return mb_fail(MB_EINVAL, "directory %s: path too long", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return mb_fail(MB_EIO, "directory %s: cannot create %s: %s", dir, buf,
                               strerror(errno));
            *p = c;
            if (c == '\0') break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return mb_fail(MB_EIO, "directory %s: exists but is not a directory", dir);
    return MB_OK;
}

int mb_checkpoint_save_dtype(const char *dir, const mb_model *m, mb_ckpt_format format,
                             mb_dtype dtype) {
    mb_atomic_file w;
    int rc = mb_checkpoint_prepare(dir, m, format, dtype, &w);
    return rc ? rc : mb_atomic_publish(&w);
}

int mb_checkpoint_prepare(const char *dir, const mb_model *m, mb_ckpt_format format, mb_dtype dtype,
                          mb_atomic_file *weights) {
    memset(weights, 0, sizeof *weights);
    if (!dir || !*dir) return mb_fail(MB_EINVAL, "checkpoint save: empty directory name");
    if (format == MB_CKPT_HF && !m->cfg.rms_norm)
        return mb_fail(MB_EINVAL,
                       "checkpoint %s: the Hugging Face Mamba format supports RMSNorm "
                       "only (this model uses LayerNorm); save in mamba_ssm format",
                       dir);
    char cfg_path[PATH_MAX], st_path[PATH_MAX];
    if (snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir) >= (int)sizeof cfg_path ||
        snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir) >= (int)sizeof st_path)
        return mb_fail(MB_EINVAL, "checkpoint %s: path too long", dir);
    int rc = make_dirs(dir);
    if (rc) return rc;
    mb_st_wtensor *wt = calloc((size_t)m->n_tensors + 1, sizeof *wt);
    if (!wt) return mb_fail(MB_ENOMEM, "checkpoint %s: out of memory", dir);
    for (int i = 0; i < m->n_tensors; i++) {
        const mb_tensor_info *t = &m->tensors[i];
        wt[i].name = t->name;
        if (format == MB_CKPT_HF && strcmp(t->name, EMB_SSM) == 0) wt[i].name = EMB_HF;
        wt[i].ndim = t->ndim;
        for (int j = 0; j < t->ndim; j++)
            wt[i].shape[j] = t->shape[j];
        wt[i].data = m->params + t->offset;
    }
    const char *meta[] = {"format", "pt", "mambabyte.layout", mb_ckpt_format_name(format)};
    rc = mb_st_write_prepared(st_path, wt, m->n_tensors, meta, 2, dtype, weights);
    free(wt);
    if (rc == MB_OK) {
        rc = mb_config_json_write_dtype(cfg_path, &m->cfg,
                                        format == MB_CKPT_HF ? MB_CFG_HF : MB_CFG_MAMBA_SSM,
                                        dtype == MB_DT_BF16  ? "bfloat16"
                                        : dtype == MB_DT_F16 ? "float16"
                                                             : "float32");
        if (rc) mb_atomic_abort(weights);
    }
    return rc;
}

int mb_checkpoint_save(const char *dir, const mb_model *m, mb_ckpt_format format) {
    return mb_checkpoint_save_dtype(dir, m, format, MB_DT_F32);
}

/* ------------------------------------------------------------------ load */

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int resolve_paths(const char *path, mb_checkpoint_info *in) {
    struct stat st;
    if (stat(path, &st) != 0)
        return mb_fail(MB_EIO, "checkpoint %s: cannot access: %s", path, strerror(errno));
    size_t cap = sizeof in->config_path;
    if (S_ISDIR(st.st_mode)) {
        if ((size_t)snprintf(in->config_path, cap, "%s/config.json", path) >= cap ||
            (size_t)snprintf(in->weights_path, cap, "%s/model.safetensors", path) >= cap)
            return mb_fail(MB_EINVAL, "checkpoint %s: path too long", path);
        if (!file_exists(in->weights_path)) {
            if (errno != ENOENT) /* e.g. no permission */
                return mb_fail(MB_EIO, "checkpoint %s: cannot access %s: %s", path,
                               in->weights_path, strerror(errno));
            char alt[sizeof in->config_path + 64];
            snprintf(alt, sizeof alt, "%s/model.safetensors.index.json", path);
            if (file_exists(alt))
                return mb_fail(MB_EFORMAT,
                               "checkpoint %s: sharded safetensors (%s) are not "
                               "supported; merge the shards into model.safetensors",
                               path, alt);
            snprintf(alt, sizeof alt, "%s/pytorch_model.bin", path);
            if (file_exists(alt))
                return mb_fail(MB_EFORMAT,
                               "checkpoint %s: %s is a PyTorch pickle; convert it to "
                               "model.safetensors first",
                               path, alt);
            return mb_fail(MB_EIO, "checkpoint %s: file %s not found", path, in->weights_path);
        }
    } else {
        if ((size_t)snprintf(in->weights_path, cap, "%s", path) >= cap)
            return mb_fail(MB_EINVAL, "checkpoint %s: path too long", path);
        const char *slash = strrchr(path, '/');
        int dl = slash ? (int)(slash - path) : 1;
        if ((size_t)snprintf(in->config_path, cap, "%.*s/config.json", dl, slash ? path : ".") >=
            cap)
            return mb_fail(MB_EINVAL, "checkpoint %s: path too long", path);
        if (slash == path) snprintf(in->config_path, cap, "/config.json");
        const char *base = slash ? slash + 1 : path;
        const size_t bl = strlen(base);
        if (strcmp(base, "config.json") != 0 &&
            !(bl >= 12 && strcmp(base + bl - 12, ".safetensors") == 0))
            return mb_fail(MB_EINVAL,
                           "checkpoint %s: not a checkpoint directory, a .safetensors file or a "
                           "config.json",
                           path);
        if (strcmp(base, "config.json") == 0) { /* -m DIR/config.json means DIR */
            if ((size_t)snprintf(in->weights_path, cap, "%.*s/model.safetensors", dl,
                                 slash ? path : ".") >= cap)
                return mb_fail(MB_EINVAL, "checkpoint %s: path too long", path);
            if (!file_exists(in->weights_path))
                return mb_fail(MB_EIO, "checkpoint %s: %s: %s", path, in->weights_path,
                               errno == ENOENT ? "file not found" : strerror(errno));
        }
    }
    return MB_OK;
}

/* Parse "backbone.layers.<i>." at the start of name; returns i or -1. */
static int64_t layer_index(const char *name) {
    static const char pre[] = "backbone.layers.";
    if (strncmp(name, pre, sizeof pre - 1) != 0) return -1;
    const char *p = name + sizeof pre - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return -1;
    int64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > 1000000) return -1;
        p++;
    }
    return *p == '.' ? v : -1;
}

typedef struct {
    const mb_st_file *st;
    const char *prefix; /* "" or a wrapper's prefix ("module.", "_orig_mod.", both) */
    const char *emb;    /* EMB_SSM or EMB_HF */
} keymap;

/* File tensor holding canonical (mamba_ssm) name `canon`, or NULL. */
static const mb_st_tensor *lookup(const keymap *k, const char *canon) {
    char buf[256];
    if (strcmp(canon, EMB_SSM) == 0) canon = k->emb;
    if ((size_t)snprintf(buf, sizeof buf, "%s%s", k->prefix, canon) >= sizeof buf) return NULL;
    return mb_st_find(k->st, buf);
}

static int dim_mismatch(const char *file, const mb_st_tensor *t, const char *what, int64_t cfg,
                        int64_t got) {
    char s[160];
    mb_st_shape_str(s, sizeof s, t->ndim, t->shape);
    return mb_fail(MB_EFORMAT,
                   "file %s: tensor %s has shape %s, so %s = %" PRId64
                   ", but the config says %s = %" PRId64,
                   file, t->name, s, what, got, what, cfg);
}

/* Cross-check the config against the keys and shapes of the file. */
static int check_structure(const mb_st_file *st, const keymap *k, const mb_config *c,
                           const mb_checkpoint_info *in) {
    const char *wp = in->weights_path;
    /* layers counted from the keys */
    int64_t max_layer = -1;
    for (int i = 0; i < st->n_tensors; i++) {
        int64_t l = layer_index(st->tensors[i].name + strlen(k->prefix));
        if (l > max_layer) max_layer = l;
    }
    if (max_layer + 1 != c->n_layer)
        return mb_fail(MB_EFORMAT,
                       "checkpoint: config %s says n_layer = %" PRId64
                       " but the weights in %s have %" PRId64 " layer%s (backbone.layers.N keys)",
                       in->config_path, c->n_layer, wp, max_layer + 1, mb_plural(max_layer + 1));
    const mb_st_tensor *t = lookup(k, EMB_SSM);
    if (!t->ndim || t->ndim != 2)
        return mb_fail(MB_EFORMAT, "file %s: tensor %s must be 2-D (vocab, d_model)", wp, t->name);
    if (t->shape[0] != MB_VOCAB)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s has %" PRId64 " row%s; a byte model needs "
                       "256",
                       wp, t->name, t->shape[0], mb_plural(t->shape[0]));
    if (t->shape[1] != c->d_model) return dim_mismatch(wp, t, "d_model", c->d_model, t->shape[1]);
    struct {
        const char *suffix;
        int ndim, axis;
        const char *what;
        int64_t want;
    } derive[] = {
        {"mixer.in_proj.weight", 2, 0, "2*d_inner", 2 * c->d_inner},
        {"mixer.A_log", 2, 1, "d_state", c->d_state},
        {"mixer.dt_proj.weight", 2, 1, "dt_rank", c->dt_rank},
        {"mixer.conv1d.weight", 3, 2, "d_conv", c->d_conv},
    };
    for (size_t i = 0; i < sizeof derive / sizeof derive[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "backbone.layers.0.%s", derive[i].suffix);
        t = lookup(k, name);
        if (!t) continue;                        /* reported as missing later */
        if (t->ndim != derive[i].ndim) continue; /* reported by the shape check */
        if (t->shape[derive[i].axis] != derive[i].want)
            return dim_mismatch(wp, t, derive[i].what, derive[i].want, t->shape[derive[i].axis]);
    }
    const mb_st_tensor *nb = lookup(k, "backbone.norm_f.bias");
    if (c->rms_norm && nb)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s present (LayerNorm) but config %s says "
                       "rms_norm",
                       wp, nb->name, in->config_path);
    if (!c->rms_norm && !nb)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %sbackbone.norm_f.bias missing but config %s "
                       "says LayerNorm (rms_norm false)",
                       wp, k->prefix, in->config_path);
    return MB_OK;
}

int mb_checkpoint_load(const char *path, mb_model *m, mb_checkpoint_info *info) {
    memset(m, 0, sizeof *m);
    mb_checkpoint_info in;
    memset(&in, 0, sizeof in);
    if (!path) return mb_fail(MB_EINVAL, "checkpoint load: NULL path");
    int rc = resolve_paths(path, &in);
    if (rc) return rc;
    mb_config cfg;
    rc = mb_config_json_read(in.config_path, &cfg, &in.config_flavour);
    if (rc) return rc;
    mb_st_file st;
    rc = mb_st_open(&st, in.weights_path);
    if (rc) return rc;
    const char *wp = in.weights_path;
    char *used = calloc((size_t)st.n_tensors + 1, 1);
    float *head = NULL;
    if (!used) {
        rc = mb_fail(MB_ENOMEM, "file %s: out of memory", wp);
        goto done;
    }
    in.n_tensors = st.n_tensors;
    /* a wrapper's prefix (DDP "module.", torch.compile "_orig_mod.", or both): all keys or
     * none; the longest that the first key carries */
    static const char *const wrappers[] = {"module._orig_mod.", "_orig_mod.module.", "_orig_mod.",
                                           PREFIX};
    const char *pre = "";
    for (size_t w = 0; w < sizeof wrappers / sizeof *wrappers && st.n_tensors > 0; w++)
        if (strncmp(st.tensors[0].name, wrappers[w], strlen(wrappers[w])) == 0) {
            pre = wrappers[w];
            break;
        }
    int n_pre = 0;
    if (!*pre) { /* the first key has none: then no key may (counted for the message) */
        for (size_t w = 0; w < sizeof wrappers / sizeof *wrappers && !n_pre; w++)
            for (int i = 0; i < st.n_tensors; i++)
                if (strncmp(st.tensors[i].name, wrappers[w], strlen(wrappers[w])) == 0) {
                    pre = wrappers[w];
                    n_pre++;
                }
    } else {
        for (int i = 0; i < st.n_tensors; i++)
            n_pre += strncmp(st.tensors[i].name, pre, strlen(pre)) == 0;
    }
    if (n_pre && n_pre != st.n_tensors) {
        for (int i = 0; i < st.n_tensors; i++)
            if (strncmp(st.tensors[i].name, pre, strlen(pre)) != 0) {
                char nm[MB_PRINTABLE_BUF];
                rc = mb_fail(MB_EFORMAT,
                             "file %s: tensor %s lacks the \"%s\" prefix that "
                             "%d other tensors carry",
                             wp, mb_printable(st.tensors[i].name, nm), pre, n_pre);
                goto done;
            }
    }
    if (!n_pre) pre = "";
    keymap k = {&st, pre, EMB_SSM};
    in.module_prefix = n_pre > 0;
    snprintf(in.prefix, sizeof in.prefix, "%s", pre);
    {
        char a[128], b[128];
        snprintf(a, sizeof a, "%s%s", k.prefix, EMB_SSM);
        snprintf(b, sizeof b, "%s%s", k.prefix, EMB_HF);
        int has_a = mb_st_find(&st, a) != NULL, has_b = mb_st_find(&st, b) != NULL;
        if (has_a && has_b) {
            rc = mb_fail(MB_EFORMAT, "file %s: both %s and %s present; which is the embedding?", wp,
                         a, b);
            goto done;
        }
        if (!has_a && !has_b) {
            rc = mb_fail(MB_EFORMAT, "file %s: no embedding tensor (%s or %s)", wp, a, b);
            goto done;
        }
        k.emb = has_b ? EMB_HF : EMB_SSM;
        in.names = has_b ? MB_CKPT_HF : MB_CKPT_MAMBA_SSM;
    }
    snprintf(in.format, sizeof in.format, "%s%s%s", mb_ckpt_format_name(in.names),
             in.module_prefix ? "+" : "", in.prefix);
    if ((rc = check_structure(&st, &k, &cfg, &in))) goto done;
    if ((rc = mb_model_create(m, &cfg))) goto done;
    /* every table tensor present; nothing else except a tied lm_head */
    const mb_st_tensor **src = calloc((size_t)m->n_tensors + 1, sizeof *src);
    if (!src) {
        rc = mb_fail(MB_ENOMEM, "file %s: out of memory", wp);
        goto done;
    }
    for (int i = 0; i < m->n_tensors && rc == MB_OK; i++) {
        src[i] = lookup(&k, m->tensors[i].name);
        if (!src[i])
            rc = mb_fail(MB_EFORMAT, "file %s: tensor %s%s missing", wp, k.prefix,
                         strcmp(m->tensors[i].name, EMB_SSM) ? m->tensors[i].name : k.emb);
        else
            used[src[i] - st.tensors] = 1;
    }
    const mb_st_tensor *lm = lookup(&k, LM_HEAD);
    in.lm_head_stored = lm != NULL;
    if (lm) used[lm - st.tensors] = 1;
    for (int i = 0; i < st.n_tensors && rc == MB_OK; i++)
        if (!used[i]) {
            char nm[MB_PRINTABLE_BUF];
            rc = mb_fail(MB_EFORMAT,
                         "file %s: unexpected tensor %s (not part of a %" PRId64 "-layer %s model)",
                         wp, mb_printable(st.tensors[i].name, nm), cfg.n_layer,
                         cfg.rms_norm ? "RMSNorm" : "LayerNorm");
        }
    /* data: shapes as in the table, finite */
    for (int i = 0; i < m->n_tensors && rc == MB_OK; i++) {
        const mb_tensor_info *t = &m->tensors[i];
        rc = mb_st_read_f32(&st, src[i], t->ndim, t->shape, 1, m->params + t->offset);
    }
    free(src);
    if (rc == MB_OK && cfg.tie_embeddings && lm) {
        int64_t shape[2] = {MB_VOCAB, cfg.d_model};
        int64_t n = MB_VOCAB * cfg.d_model;
        head = malloc((size_t)n * sizeof(float));
        if (!head) rc = mb_fail(MB_ENOMEM, "file %s: out of memory", wp);
        if (rc == MB_OK) rc = mb_st_read_f32(&st, lm, 2, shape, 1, head);
        if (rc == MB_OK && memcmp(head, m->w.embedding, (size_t)n * sizeof(float)) != 0) {
            int64_t j = 0;
            while (j < n && memcmp(&head[j], &m->w.embedding[j], sizeof(float)) == 0)
                j++;
            rc = mb_fail(MB_EFORMAT,
                         "file %s: tensor %s differs from the embedding %s (first at flat index "
                         "%" PRId64 ") but config %s ties them (tie_embeddings)",
                         wp, lm->name, lookup(&k, EMB_SSM)->name, j, in.config_path);
        }
    }
    if (rc == MB_OK) {
        mb_dtype d0 = st.n_tensors ? st.tensors[0].dtype : MB_DT_F32;
        int mixed = 0;
        for (int i = 0; i < st.n_tensors; i++)
            mixed |= st.tensors[i].dtype != d0;
        snprintf(in.dtype, sizeof in.dtype, "%s", mixed ? "mixed" : mb_dtype_name(d0));
    }
done:
    free(head);
    free(used);
    mb_st_close(&st);
    if (rc != MB_OK) {
        if (m->params) mb_model_free(m);
        memset(m, 0, sizeof *m);
    } else if (info) {
        *info = in;
    }
    return rc;
}
