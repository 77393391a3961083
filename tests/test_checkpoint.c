/* Checkpoints and config.json: bit-exact save/load round trips (RMSNorm/LayerNorm, tied/untied,
 * mamba_ssm/HF layouts, module. prefix, F16/BF16 export), both config flavours, and every bad
 * input rejected with a return code and a message naming the file (and field or tensor). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/safetensors.h"
#include "mambabyte.h"
#include "support/tmpdir.h"

static char g_dir[256];

static int setup(void **st) {
    (void)st;
    return mb_test_mkdtemp(g_dir, sizeof g_dir, "ckpt");
}

static int teardown(void **st) {
    (void)st;
    return mb_test_rmtree(g_dir);
}

static void sub(char *buf, const char *name) {
    snprintf(buf, 512, "%s/%s", g_dir, name);
}

static void write_text(const char *p, const char *s) {
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

/* assert rc and that the message contains each needle (NULL-terminated) */
static void expect_err(int rc, int want, ...) {
    if (rc != want) fail_msg("rc %d, wanted %d: %s", rc, want, mb_last_error());
    va_list ap;
    va_start(ap, want);
    const char *s;
    while ((s = va_arg(ap, const char *)))
        if (!strstr(mb_last_error(), s)) fail_msg("message lacks '%s': %s", s, mb_last_error());
    va_end(ap);
}

static void make_model(mb_model *m, int rms, int tie, uint64_t seed) {
    mb_config c;
    mb_config_default(&c, 24, 2);
    c.d_state = 4;
    c.rms_norm = rms;
    c.tie_embeddings = tie;
    assert_int_equal(mb_config_finalize(&c), 0);
    assert_int_equal(mb_model_create(m, &c), 0);
    mb_model_init(m, seed);
    /* make every tensor distinctive (norms and D are constant after init) */
    for (int64_t i = 0; i < m->n_params; i++)
        m->params[i] += 1e-3f * (float)(i % 97);
}

static void assert_same_model(const mb_model *a, const mb_model *b) {
    assert_int_equal(a->cfg.d_model, b->cfg.d_model);
    assert_int_equal(a->cfg.n_layer, b->cfg.n_layer);
    assert_int_equal(a->cfg.d_state, b->cfg.d_state);
    assert_int_equal(a->cfg.d_conv, b->cfg.d_conv);
    assert_int_equal(a->cfg.expand, b->cfg.expand);
    assert_int_equal(a->cfg.dt_rank, b->cfg.dt_rank);
    assert_int_equal(a->cfg.d_inner, b->cfg.d_inner);
    assert_int_equal(a->cfg.rms_norm, b->cfg.rms_norm);
    assert_int_equal(a->cfg.tie_embeddings, b->cfg.tie_embeddings);
    assert_true(a->cfg.norm_eps == b->cfg.norm_eps);
    assert_true(a->cfg.dt_min == b->cfg.dt_min && a->cfg.dt_max == b->cfg.dt_max);
    assert_true(a->cfg.dt_init_floor == b->cfg.dt_init_floor);
    assert_int_equal(a->n_params, b->n_params);
    assert_memory_equal(a->params, b->params, (size_t)a->n_params * sizeof(float));
}

/* ------------------------------------------------------------------ weight rewriting */

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[MB_ST_MAX_DIMS];
    float *data;
} wt;

typedef struct {
    wt t[512];
    int n;
} wlist;

static void load_list(const char *path, wlist *l) {
    mb_st_file f;
    assert_int_equal(mb_st_open(&f, path), 0);
    l->n = f.n_tensors;
    for (int i = 0; i < f.n_tensors; i++) {
        const mb_st_tensor *t = &f.tensors[i];
        snprintf(l->t[i].name, sizeof l->t[i].name, "%s", t->name);
        l->t[i].ndim = t->ndim;
        memcpy(l->t[i].shape, t->shape, sizeof t->shape);
        l->t[i].data = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
        assert_int_equal(mb_st_read_f32(&f, t, 0, NULL, 0, l->t[i].data), 0);
    }
    mb_st_close(&f);
}

static void save_list(const char *path, wlist *l) {
    mb_st_wtensor w[512];
    for (int i = 0; i < l->n; i++) {
        w[i].name = l->t[i].name;
        w[i].ndim = l->t[i].ndim;
        memcpy(w[i].shape, l->t[i].shape, sizeof w[i].shape);
        w[i].data = l->t[i].data;
    }
    assert_int_equal(mb_st_write(path, w, l->n, NULL, 0, MB_DT_F32), 0);
    for (int i = 0; i < l->n; i++)
        free(l->t[i].data);
    l->n = 0;
}

static wt *find(wlist *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->t[i].name, name) == 0) return &l->t[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

static void drop(wlist *l, const char *name) {
    wt *t = find(l, name);
    free(t->data);
    *t = l->t[--l->n];
}

static void add_copy(wlist *l, const char *name, const wt *src) {
    wt *t = &l->t[l->n++];
    *t = *src;
    snprintf(t->name, sizeof t->name, "%s", name);
    int64_t n = 1;
    for (int i = 0; i < src->ndim; i++)
        n *= src->shape[i];
    t->data = malloc((size_t)n * sizeof(float));
    memcpy(t->data, src->data, (size_t)n * sizeof(float));
}

/* Fresh checkpoint directory `name` holding model m (mamba_ssm layout). */
static void fresh(char *dir, const char *name, const mb_model *m, mb_ckpt_format fmt) {
    sub(dir, name);
    assert_int_equal(mb_checkpoint_save(dir, m, fmt), 0);
}

static void weights_of(char *p, const char *dir) {
    snprintf(p, 600, "%s/model.safetensors", dir);
}

static void config_of(char *p, const char *dir) {
    snprintf(p, 600, "%s/config.json", dir);
}

/* ------------------------------------------------------------------ round trips */

static void test_roundtrip(void **st) {
    (void)st;
    for (int rms = 0; rms < 2; rms++) {
        for (int tie = 0; tie < 2; tie++) {
            for (int fmt = 0; fmt < 2; fmt++) {
                mb_model m, r;
                make_model(&m, rms, tie, 100 + 10 * rms + tie);
                char dir[512];
                snprintf(dir, sizeof dir, "%s/rt/r%d_t%d_f%d", g_dir, rms, tie, fmt); /* nested */
                int rc = mb_checkpoint_save(dir, &m, (mb_ckpt_format)fmt);
                if (fmt == MB_CKPT_HF && !rms) {
                    expect_err(rc, MB_EINVAL, dir, "RMSNorm", NULL);
                    mb_model_free(&m);
                    continue;
                }
                assert_int_equal(rc, 0);
                mb_checkpoint_info info;
                assert_int_equal(mb_checkpoint_load(dir, &r, &info), 0);
                assert_same_model(&m, &r);
                assert_string_equal(info.format, fmt ? "hf" : "mamba_ssm");
                assert_int_equal(info.config_flavour, fmt ? MB_CFG_HF : MB_CFG_MAMBA_SSM);
                assert_string_equal(info.dtype, "F32");
                assert_int_equal(info.lm_head_stored, !tie);
                assert_int_equal(info.module_prefix, 0);
                assert_true(r.w.lm_head == (tie ? r.w.embedding : r.w.lm_head));
                /* the stored conv1d weight is (Di, 1, K); the file path form loads too */
                char wp[600];
                weights_of(wp, dir);
                mb_st_file f;
                assert_int_equal(mb_st_open(&f, wp), 0);
                const mb_st_tensor *cw = mb_st_find(&f, "backbone.layers.1.mixer.conv1d.weight");
                assert_non_null(cw);
                assert_int_equal(cw->ndim, 3);
                assert_int_equal(cw->shape[0], m.cfg.d_inner);
                assert_int_equal(cw->shape[1], 1);
                assert_int_equal(cw->shape[2], m.cfg.d_conv);
                assert_string_equal(mb_st_meta(&f, "format"), "pt");
                assert_non_null(mb_st_find(&f, fmt ? "backbone.embeddings.weight"
                                                   : "backbone.embedding.weight"));
                mb_st_close(&f);
                mb_model_free(&r);
                assert_int_equal(mb_checkpoint_load(wp, &r, NULL), 0);
                assert_same_model(&m, &r);
                mb_model_free(&r);
                mb_model_free(&m);
            }
        }
    }
}

static void test_prefix_and_hf_names(void **st) {
    (void)st;
    for (int hf = 0; hf < 2; hf++) {
        mb_model m, r;
        make_model(&m, 1, 0, 7 + hf);
        char dir[512], wp[600];
        fresh(dir, hf ? "prefix_hf" : "prefix_ssm", &m, hf ? MB_CKPT_HF : MB_CKPT_MAMBA_SSM);
        weights_of(wp, dir);
        wlist *l = calloc(1, sizeof *l);
        load_list(wp, l);
        for (int i = 0; i < l->n; i++) {
            char *n = l->t[i].name;
            size_t len = strlen(n);
            assert_true(len + 8 < sizeof l->t[i].name);
            memmove(n + 7, n, len + 1);
            memcpy(n, "module.", 7);
        }
        save_list(wp, l);
        mb_checkpoint_info info;
        assert_int_equal(mb_checkpoint_load(dir, &r, &info), 0);
        assert_same_model(&m, &r);
        assert_int_equal(info.module_prefix, 1);
        assert_string_equal(info.format, hf ? "hf+module." : "mamba_ssm+module.");
        mb_model_free(&r);
        /* a prefix on only some keys is an error naming a tensor without it */
        load_list(wp, l);
        snprintf(find(l, "module.backbone.norm_f.weight")->name, 128, "backbone.norm_f.weight");
        save_list(wp, l);
        expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "backbone.norm_f.weight",
                   "module.", NULL);
        /* torch.compile's "_orig_mod." prefix, alone and under DDP's */
        static const char *const wraps[] = {"_orig_mod.", "module._orig_mod."};
        for (int w = 0; w < 2; w++) {
            fresh(dir, hf ? "prefix_hf" : "prefix_ssm", &m, hf ? MB_CKPT_HF : MB_CKPT_MAMBA_SSM);
            load_list(wp, l);
            const size_t pl = strlen(wraps[w]);
            for (int i = 0; i < l->n; i++) {
                char *n = l->t[i].name;
                size_t len = strlen(n);
                assert_true(len + pl + 1 < sizeof l->t[i].name);
                memmove(n + pl, n, len + 1);
                memcpy(n, wraps[w], pl);
            }
            save_list(wp, l);
            assert_int_equal(mb_checkpoint_load(dir, &r, &info), 0);
            assert_same_model(&m, &r);
            assert_string_equal(info.prefix, wraps[w]);
            char want[64];
            snprintf(want, sizeof want, "%s+%s", hf ? "hf" : "mamba_ssm", wraps[w]);
            assert_string_equal(info.format, want);
            mb_model_free(&r);
        }
        free(l);
        mb_model_free(&m);
    }
    /* HF layout with a mamba_ssm config (and vice versa) loads: names and flavour independent */
    mb_model m, r;
    make_model(&m, 1, 1, 3);
    char dir[512], cp[600];
    fresh(dir, "hfnames_ssmcfg", &m, MB_CKPT_HF);
    config_of(cp, dir);
    assert_int_equal(mb_config_json_write(cp, &m.cfg, MB_CFG_MAMBA_SSM), 0);
    mb_checkpoint_info info;
    assert_int_equal(mb_checkpoint_load(dir, &r, &info), 0);
    assert_same_model(&m, &r);
    assert_string_equal(info.format, "hf");
    assert_int_equal(info.config_flavour, MB_CFG_MAMBA_SSM);
    mb_model_free(&r);
    mb_model_free(&m);
}

static void test_half_precision(void **st) {
    (void)st;
    for (int k = 0; k < 2; k++) {
        mb_dtype dt = k ? MB_DT_BF16 : MB_DT_F16;
        mb_model m, r;
        make_model(&m, 0, 0, 11);
        char dir[512];
        sub(dir, k ? "bf16" : "f16");
        assert_int_equal(mb_checkpoint_save_dtype(dir, &m, MB_CKPT_MAMBA_SSM, dt), 0);
        mb_checkpoint_info info;
        assert_int_equal(mb_checkpoint_load(dir, &r, &info), 0);
        assert_string_equal(info.dtype, k ? "BF16" : "F16");
        int64_t changed = 0;
        for (int64_t i = 0; i < m.n_params; i++) {
            float x = m.params[i];
            float want = k ? mb_bf16_to_f32(mb_f32_to_bf16(x)) : (float)(_Float16)x;
            assert_true(r.params[i] == want);
            /* within half an ulp of the 16-bit format */
            float tol = fabsf(x) * (k ? 1.0f / 256 : 1.0f / 2048) + (k ? 0 : 3e-8f);
            assert_true(fabsf(r.params[i] - x) <= tol);
            changed += r.params[i] != x;
        }
        assert_true(changed > m.n_params / 2); /* really rounded */
        mb_model_free(&r);
        mb_model_free(&m);
    }
}

/* A prepared checkpoint (weights in a finished temporary file) replaces nothing until it is
 * published: aborted, the previous model.safetensors stays as it was and no temporary file is
 * left (the trainer prepares its weights and train state, then publishes both, so that a write
 * error leaves the previous checkpoint whole). HF configs name the stored dtype. */
static void test_prepare_publish(void **st) {
    (void)st;
    mb_model a, b, r;
    make_model(&a, 1, 0, 21);
    make_model(&b, 1, 0, 22);
    char dir[512];
    sub(dir, "twophase");
    assert_int_equal(mb_checkpoint_save(dir, &a, MB_CKPT_MAMBA_SSM), 0);
    mb_atomic_file w;
    assert_int_equal(mb_checkpoint_prepare(dir, &b, MB_CKPT_MAMBA_SSM, MB_DT_F32, &w), 0);
    assert_non_null(w.tmp);
    assert_true(access(w.tmp, F_OK) == 0);
    assert_int_equal(mb_checkpoint_load(dir, &r, NULL), 0); /* still a's weights */
    assert_memory_equal(r.params, a.params, (size_t)a.n_params * sizeof(float));
    mb_model_free(&r);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s", w.tmp);
    mb_atomic_abort(&w);
    assert_true(access(tmp, F_OK) != 0);
    assert_int_equal(mb_checkpoint_load(dir, &r, NULL), 0);
    assert_memory_equal(r.params, a.params, (size_t)a.n_params * sizeof(float));
    mb_model_free(&r);
    /* published: b's weights */
    assert_int_equal(mb_checkpoint_prepare(dir, &b, MB_CKPT_MAMBA_SSM, MB_DT_F32, &w), 0);
    assert_int_equal(mb_atomic_publish(&w), 0);
    assert_null(w.tmp);
    assert_int_equal(mb_checkpoint_load(dir, &r, NULL), 0);
    assert_memory_equal(r.params, b.params, (size_t)b.n_params * sizeof(float));
    mb_model_free(&r);
    /* a failed prepare (its directory is a file) leaves *weights zeroed */
    char bad[512];
    sub(bad, "twophase/model.safetensors");
    expect_err(mb_checkpoint_prepare(bad, &b, MB_CKPT_MAMBA_SSM, MB_DT_F32, &w), MB_EIO, bad, NULL);
    assert_null(w.tmp);
    assert_null(w.f);
    /* torch_dtype of an HF export follows the stored dtype */
    const char *names[3] = {"float32", "float16", "bfloat16"};
    for (int k = 0; k < 3; k++) {
        char hd[512], cp[600], want[64];
        snprintf(hd, sizeof hd, "%s/hf%d", g_dir, k);
        assert_int_equal(mb_checkpoint_save_dtype(hd, &b, MB_CKPT_HF, (mb_dtype)k), 0);
        snprintf(cp, sizeof cp, "%s/config.json", hd);
        FILE *f = fopen(cp, "rb");
        assert_non_null(f);
        char text[4096];
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = 0;
        snprintf(want, sizeof want, "\"torch_dtype\": \"%s\"", names[k]);
        if (!strstr(text, want)) fail_msg("%s lacks %s", cp, want);
    }
    mb_model_free(&a);
    mb_model_free(&b);
}

/* ------------------------------------------------------------------ config.json */

static void test_config_flavours(void **st) {
    (void)st;
    char p[512];
    sub(p, "config.json");
    mb_config c;
    mb_config_flavour fl;
    /* the released MambaByte-972M config */
    write_text(p, "{\"d_model\":1792,\"n_layer\":48,\"vocab_size\":256,\"ssm_cfg\":{\"expand\":2},"
                  "\"rms_norm\":false,\"residual_in_fp32\":true,\"fused_add_norm\":true,"
                  "\"pad_vocab_size_multiple\":8,\"tie_embeddings\":false}");
    assert_int_equal(mb_config_json_read(p, &c, &fl), 0);
    assert_int_equal(fl, MB_CFG_MAMBA_SSM);
    assert_int_equal(c.d_model, 1792);
    assert_int_equal(c.n_layer, 48);
    assert_int_equal(c.d_inner, 3584);
    assert_int_equal(c.dt_rank, 112);
    assert_int_equal(c.d_state, 16);
    assert_int_equal(c.d_conv, 4);
    assert_int_equal(c.rms_norm, 0);
    assert_int_equal(c.tie_embeddings, 0);
    /* mamba_ssm MambaConfig defaults: rms_norm and tie_embeddings true */
    write_text(p, "{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,"
                  "\"ssm_cfg\":{\"d_state\":8,\"dt_rank\":\"auto\",\"layer\":\"Mamba1\"}}");
    assert_int_equal(mb_config_json_read(p, &c, &fl), 0);
    assert_int_equal(c.rms_norm, 1);
    assert_int_equal(c.tie_embeddings, 1);
    assert_int_equal(c.d_state, 8);
    assert_int_equal(c.dt_rank, 4);
    /* vocab 250 padded to a multiple of 8 is 256 */
    write_text(p, "{\"d_model\":64,\"n_layer\":2,\"vocab_size\":250,\"ssm_cfg\":{\"dt_rank\":7}}");
    assert_int_equal(mb_config_json_read(p, &c, &fl), 0);
    assert_int_equal(c.vocab_size, 256);
    assert_int_equal(c.dt_rank, 7);
    /* HF flavour with its defaults; unknown generic keys are ignored */
    write_text(p, "{\"model_type\":\"mamba\",\"hidden_size\":32,\"num_hidden_layers\":3,"
                  "\"vocab_size\":256,\"layer_norm_epsilon\":1e-6,\"time_step_min\":0.002,"
                  "\"some_future_key\":[1,2],\"time_step_rank\":\"auto\"}");
    assert_int_equal(mb_config_json_read(p, &c, &fl), 0);
    assert_int_equal(fl, MB_CFG_HF);
    assert_int_equal(c.d_model, 32);
    assert_int_equal(c.n_layer, 3);
    assert_int_equal(c.d_state, 16);
    assert_int_equal(c.rms_norm, 1);
    assert_int_equal(c.tie_embeddings, 1);
    assert_true(c.norm_eps == 1e-6f);
    assert_true(c.dt_min == 0.002f);
    /* writer/reader round trip in both flavours, and the HF keys transformers needs */
    mb_config a;
    mb_config_default(&a, 40, 3);
    a.rms_norm = 1;
    a.d_state = 12;
    a.dt_rank = 5;
    a.dt_min = 0.0005f;
    assert_int_equal(mb_config_finalize(&a), 0);
    for (int f = 0; f < 2; f++) {
        assert_int_equal(mb_config_json_write(p, &a, (mb_config_flavour)f), 0);
        assert_int_equal(mb_config_json_read(p, &c, &fl), 0);
        assert_int_equal((int)fl, f);
        assert_memory_equal(&a, &c, sizeof a);
    }
    char *s = mb_config_json_string(&a, MB_CFG_HF);
    const char *keys[] = {"\"architectures\": [\"MambaForCausalLM\"]",
                          "\"model_type\": \"mamba\"",
                          "\"intermediate_size\": 80",
                          "\"time_step_rank\": 5",
                          "\"hidden_act\": \"silu\"",
                          "\"use_conv_bias\": true",
                          "\"time_step_min\": 0.0005",
                          "\"torch_dtype\": \"float32\"",
                          "\"time_step_init_scheme\": \"random\"",
                          "\"eos_token_id\": 0"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(strstr(s, keys[i]));
    free(s);
    /* LayerNorm cannot be written as HF */
    a.rms_norm = 0;
    expect_err(mb_config_json_write(p, &a, MB_CFG_HF), MB_EINVAL, p, "RMSNorm", NULL);
}

static void test_config_errors(void **st) {
    (void)st;
    char p[512];
    sub(p, "bad_config.json");
    mb_config c;
    struct {
        const char *text, *needle1, *needle2;
    } cases[] = {
        {"{\"d_model\":64,\"n_layers\":2,\"vocab_size\":256}", "n_layers", "did you mean n_layer"},
        {"{\"d_modle\":64,\"n_layer\":2,\"vocab_size\":256}", "d_modle", "did you mean d_model"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"colour\":1}", "colour", "unknown"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"ssm_cfg\":{\"d_sate\":8}}",
         "ssm_cfg.d_sate", "did you mean ssm_cfg.d_state"},
        {"{\"n_layer\":2,\"vocab_size\":256}", "d_model", "missing"},
        {"{\"d_model\":64,\"vocab_size\":256}", "n_layer", "missing"},
        {"{\"d_model\":64,\"n_layer\":2}", "vocab_size", "missing"},
        {"{\"d_model\":\"64\",\"n_layer\":2,\"vocab_size\":256}", "d_model", "integer"},
        {"{\"d_model\":64.5,\"n_layer\":2,\"vocab_size\":256}", "d_model", "integer"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"rms_norm\":1}", "rms_norm",
         "true or false"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"ssm_cfg\":[]}", "ssm_cfg", "object"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":512}", "vocab_size", "256"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":250,\"pad_vocab_size_multiple\":3}",
         "vocab_size 250", "256"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"ssm_cfg\":{\"dt_rank\":\"big\"}}",
         "ssm_cfg.dt_rank", "auto"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"ssm_cfg\":{\"layer\":\"Mamba2\"}}",
         "ssm_cfg.layer", "Mamba2"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"ssm_cfg\":{\"bias\":true}}",
         "ssm_cfg.bias", "bias"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256,\"d_intermediate\":128}",
         "d_intermediate", "MLP"},
        {"{\"d_model\":64,\"n_layer\":0,\"vocab_size\":256}", "n_layer", "1..4096"},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256", "not valid JSON", NULL},
        {"[1]", "JSON object", NULL},
        {"{\"d_model\":64,\"n_layer\":2,\"vocab_size\":256} x", "trailing", NULL},
        /* HF */
        {"{\"model_type\":\"mamba\",\"hidden_size\":32,\"num_hidden_layers\":2,\"vocab_size\":256,"
         "\"state_sise\":8}",
         "state_sise", "did you mean state_size"},
        {"{\"model_type\":\"mamba\",\"num_hidden_layers\":2,\"vocab_size\":256}", "hidden_size",
         "missing"},
        {"{\"model_type\":\"mamba\",\"hidden_size\":32,\"vocab_size\":256}", "num_hidden_layers",
         "missing"},
        {"{\"model_type\":\"mamba2\",\"hidden_size\":32,\"num_hidden_layers\":2,\"vocab_size\":"
         "256}",
         "model_type", "mamba2"},
        {"{\"model_type\":\"mamba\",\"hidden_size\":32,\"num_hidden_layers\":2,\"vocab_size\":"
         "50280}",
         "vocab_size", "256"},
        {"{\"model_type\":\"mamba\",\"hidden_size\":32,\"num_hidden_layers\":2,\"vocab_size\":256,"
         "\"use_bias\":true}",
         "use_bias", "bias"},
        {"{\"model_type\":\"mamba\",\"hidden_size\":32,\"num_hidden_layers\":2,\"vocab_size\":256,"
         "\"tie_word_embeddings\":\"yes\"}",
         "tie_word_embeddings", "true or false"},
        {"{\"model_type\":\"mamba\",\"hidden_size\":32,\"num_hidden_layers\":2,\"vocab_size\":256,"
         "\"hidden_act\":\"gelu\"}",
         "hidden_act", "silu"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(p, cases[i].text);
        int rc = mb_config_json_read(p, &c, NULL);
        if (rc != MB_EFORMAT) fail_msg("case %zu: rc %d (%s)", i, rc, mb_last_error());
        expect_err(rc, MB_EFORMAT, p, cases[i].needle1, cases[i].needle2, NULL);
    }
    sub(p, "no_such_config.json");
    expect_err(mb_config_json_read(p, &c, NULL), MB_EIO, p, "No such file", NULL);
}

/* ------------------------------------------------------------------ bad checkpoints */

static void copy_prefix(const char *src, const char *dst, int64_t n) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    assert_non_null(a);
    assert_non_null(b);
    for (int64_t i = 0; i < n; i++)
        fputc(fgetc(a), b);
    fclose(a);
    fclose(b);
}

static void test_truncated_weights(void **st) {
    (void)st;
    mb_model m, r;
    make_model(&m, 0, 0, 5);
    char dir[512], wp[600], full[600];
    fresh(dir, "trunc", &m, MB_CKPT_MAMBA_SSM);
    weights_of(wp, dir);
    snprintf(full, sizeof full, "%s/full.bin", g_dir);
    rename(wp, full);
    struct stat sb;
    assert_int_equal(stat(full, &sb), 0);
    FILE *f = fopen(full, "rb");
    uint8_t h[8];
    assert_int_equal(fread(h, 1, 8, f), 8);
    fclose(f);
    int64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl * 256 + h[i];
    int64_t size = (int64_t)sb.st_size;
    int64_t cuts[] = {0, 8, 8 + hl / 2, 8 + hl + (size - 8 - hl) / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        copy_prefix(full, wp, cuts[i]);
        expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, NULL);
        assert_null(r.params);
        if (cuts[i] > 8 + hl) /* data truncated: a tensor is named */
            assert_non_null(strstr(mb_last_error(), "tensor "));
    }
    copy_prefix(full, wp, size); /* control */
    assert_int_equal(mb_checkpoint_load(dir, &r, NULL), 0);
    assert_same_model(&m, &r);
    mb_model_free(&r);
    /* a missing weights file, a missing config, a PyTorch pickle */
    unlink(wp);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EIO, wp, NULL);
    write_text(full, "x");
    char pb[600];
    snprintf(pb, sizeof pb, "%s/pytorch_model.bin", dir);
    write_text(pb, "x");
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, pb, "convert", NULL);
    fresh(dir, "noconfig", &m, MB_CKPT_MAMBA_SSM);
    char cp[600];
    config_of(cp, dir);
    unlink(cp);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EIO, cp, NULL);
    mb_model_free(&m);
}

/* Save m to `name`, then overwrite its config.json with cfg (mamba_ssm flavour). */
static void with_config(char *dir, const char *name, const mb_model *m, const mb_config *cfg) {
    fresh(dir, name, m, MB_CKPT_MAMBA_SSM);
    char cp[600];
    config_of(cp, dir);
    assert_int_equal(mb_config_json_write(cp, cfg, MB_CFG_MAMBA_SSM), 0);
}

static void test_config_disagrees(void **st) {
    (void)st;
    mb_model m, r;
    make_model(&m, 0, 0, 9);
    char dir[512], wp[600], cp[600];
    mb_config c;
    /* each hyper-parameter changed in the config: the error names the files, the quantity and
     * the tensor it was derived from */
    for (int k = 0; k < 5; k++) {
        c = m.cfg;
        const char *what = NULL, *tensor = NULL;
        switch (k) {
        case 0:
            c.d_state = 8, what = "d_state", tensor = "mixer.A_log";
            break;
        case 1:
            c.d_model = 32, c.dt_rank = 2, what = "d_model", tensor = "backbone.embedding.weight";
            break;
        case 2:
            c.expand = 3, what = "2*d_inner", tensor = "mixer.in_proj.weight";
            break;
        case 3:
            c.dt_rank = 5, what = "dt_rank", tensor = "mixer.dt_proj.weight";
            break;
        case 4:
            c.d_conv = 3, what = "d_conv", tensor = "mixer.conv1d.weight";
            break;
        }
        assert_int_equal(mb_config_finalize(&c), 0);
        with_config(dir, "disagree", &m, &c);
        weights_of(wp, dir);
        expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, what, tensor, NULL);
        assert_null(r.params);
    }
    /* n_layer: config 3, keys 2; and config 1, keys 2 */
    for (int64_t nl = 1; nl <= 3; nl += 2) {
        c = m.cfg;
        c.n_layer = nl;
        with_config(dir, "nlayer", &m, &c);
        config_of(cp, dir);
        weights_of(wp, dir);
        char a[64];
        snprintf(a, sizeof a, "n_layer = %lld", (long long)nl);
        expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, cp, wp, a, "have 2 layers", NULL);
    }
    /* norm kind */
    c = m.cfg;
    c.rms_norm = 1;
    with_config(dir, "normkind", &m, &c);
    weights_of(wp, dir);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "norm_f.bias", "rms_norm", NULL);
    /* untied in the weights, tied in the config: the untied head differs -> error */
    c = m.cfg;
    c.tie_embeddings = 1;
    with_config(dir, "tiedcfg", &m, &c);
    weights_of(wp, dir);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "lm_head.weight",
               "differs from the embedding", NULL);
    mb_model_free(&m);
}

static void test_bad_tensors(void **st) {
    (void)st;
    mb_model m, r;
    char dir[512], wp[600];
    wlist *l = calloc(1, sizeof *l);
    const char *victim = "backbone.layers.1.mixer.x_proj.weight";
    /* NaN and inf in a weight */
    for (int k = 0; k < 3; k++) {
        make_model(&m, 1, 0, 21);
        fresh(dir, "nonfinite", &m, MB_CKPT_MAMBA_SSM);
        weights_of(wp, dir);
        load_list(wp, l);
        find(l, victim)->data[5] = k == 0 ? NAN : k == 1 ? INFINITY : -INFINITY;
        save_list(wp, l);
        expect_err(mb_checkpoint_load(dir, &r, NULL), MB_ENONFINITE, wp, victim,
                   k == 0 ? "NaN" : "inf", NULL);
        assert_null(r.params);
        mb_model_free(&m);
    }
    /* tied head: stored and bit-equal loads; differing in one bit fails */
    make_model(&m, 1, 1, 22);
    fresh(dir, "tied", &m, MB_CKPT_MAMBA_SSM);
    weights_of(wp, dir);
    load_list(wp, l);
    add_copy(l, "lm_head.weight", find(l, "backbone.embedding.weight"));
    save_list(wp, l);
    mb_checkpoint_info info;
    assert_int_equal(mb_checkpoint_load(dir, &r, &info), 0);
    assert_int_equal(info.lm_head_stored, 1);
    assert_same_model(&m, &r);
    mb_model_free(&r);
    load_list(wp, l);
    uint32_t u;
    float *v = &find(l, "lm_head.weight")->data[77];
    memcpy(&u, v, 4);
    u ^= 1;
    memcpy(v, &u, 4);
    save_list(wp, l);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "lm_head.weight", "index 77",
               NULL);
    mb_model_free(&m);
    /* untied: lm_head required */
    make_model(&m, 0, 0, 23);
    fresh(dir, "untied", &m, MB_CKPT_MAMBA_SSM);
    weights_of(wp, dir);
    load_list(wp, l);
    drop(l, "lm_head.weight");
    save_list(wp, l);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "lm_head.weight", "missing",
               NULL);
    /* a missing layer tensor, an unexpected extra tensor, a wrong shape in a later layer */
    fresh(dir, "untied", &m, MB_CKPT_MAMBA_SSM);
    load_list(wp, l);
    drop(l, "backbone.layers.1.mixer.D");
    save_list(wp, l);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "backbone.layers.1.mixer.D",
               "missing", NULL);
    fresh(dir, "untied", &m, MB_CKPT_MAMBA_SSM);
    load_list(wp, l);
    add_copy(l, "backbone.layers.1.mixer.extra", find(l, "backbone.layers.1.mixer.D"));
    save_list(wp, l);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "backbone.layers.1.mixer.extra",
               "unexpected", NULL);
    fresh(dir, "untied", &m, MB_CKPT_MAMBA_SSM);
    load_list(wp, l);
    wt *t = find(l, "backbone.layers.1.mixer.out_proj.weight");
    int64_t s0 = t->shape[0], s1 = t->shape[1];
    t->shape[0] = s1, t->shape[1] = s0; /* transposed */
    save_list(wp, l);
    char want[96];
    snprintf(want, sizeof want, "expected (%lld, %lld)", (long long)s0, (long long)s1);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp,
               "backbone.layers.1.mixer.out_proj.weight", want, NULL);
    /* both embedding names */
    fresh(dir, "untied", &m, MB_CKPT_MAMBA_SSM);
    load_list(wp, l);
    add_copy(l, "backbone.embeddings.weight", find(l, "backbone.embedding.weight"));
    save_list(wp, l);
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, "backbone.embeddings.weight",
               NULL);
    /* a file that is not safetensors at all */
    write_text(wp, "{\"this is\": \"json, not safetensors\"}");
    expect_err(mb_checkpoint_load(dir, &r, NULL), MB_EFORMAT, wp, NULL);
    free(l);
    mb_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),        cmocka_unit_test(test_prefix_and_hf_names),
        cmocka_unit_test(test_half_precision),   cmocka_unit_test(test_config_flavours),
        cmocka_unit_test(test_config_errors),    cmocka_unit_test(test_truncated_weights),
        cmocka_unit_test(test_config_disagrees), cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_prepare_publish),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
