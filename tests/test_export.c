/* `mambabyte export` (cli/cmd_export.c) through the CLI binary (MB_CLI): the hf and mamba_ssm
 * layouts read back bit-exact (f32) or as the rounded values (f16 / bf16), with the HF
 * embedding name, a tied head left out, identical logits; LayerNorm refused for hf with a
 * message naming the reason and the way out, and nothing written; an existing OUT_DIR kept
 * unless --force; a failed export (a value beyond f16's range) leaves OUT_DIR's previous export
 * and no staging directory; a training run's directory refused as OUT_DIR; bad arguments give
 * exit status 2 and a missing checkpoint 1. The
 * Hugging Face side of the round trip (from_pretrained) is ref/hf_roundtrip.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "mambabyte.h"
#include "support/tmpdir.h"

static char g_dir[256];
static char g_err[8192];

static int setup(void **st) {
    (void)st;
    return mb_test_mkdtemp(g_dir, sizeof g_dir, "export");
}

static int teardown(void **st) {
    (void)st;
    return mb_test_rmtree(g_dir);
}

/* Run `mambabyte export ARGS` (ARGS formatted); returns the exit status, stderr in g_err. */
static int export_cli(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int export_cli(const char *fmt, ...) {
    const char *cli = getenv("MB_CLI");
    if (!cli || !cli[0]) fail_msg("MB_CLI is not set (run through ctest)");
    char args[2048], cmd[4096], errf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(errf, sizeof errf, "%s/stderr.txt", g_dir);
    snprintf(cmd, sizeof cmd, "'%s' export %s >/dev/null 2>'%s'", cli, args, errf);
    int st = system(cmd);
    assert_true(st != -1 && WIFEXITED(st));
    FILE *f = fopen(errf, "rb");
    assert_non_null(f);
    size_t n = fread(g_err, 1, sizeof g_err - 1, f);
    g_err[n] = 0;
    fclose(f);
    return WEXITSTATUS(st);
}

static void make_model(mb_model *m, int rms, int tie, uint64_t seed) {
    mb_config c;
    mb_config_default(&c, 12, 2);
    c.d_state = 4;
    c.rms_norm = rms;
    c.tie_embeddings = tie;
    assert_int_equal(mb_config_finalize(&c), 0);
    assert_int_equal(mb_model_create(m, &c), 0);
    mb_model_init(m, seed);
    /* move the norms and D off their init so every tensor is distinguishable */
    for (int64_t i = 0; i < m->n_params; i++)
        m->params[i] += 1e-3f * (float)((i * 7919) % 13);
}

static void path(char *buf, const char *name) {
    snprintf(buf, 512, "%s/%s", g_dir, name);
}

static float rounded(float a, mb_dtype t) {
    if (t == MB_DT_F16) return mb_f16_to_f32(mb_f32_to_f16(a));
    if (t == MB_DT_BF16) return mb_bf16_to_f32(mb_f32_to_bf16(a));
    return a;
}

/* load dir and compare with m (values rounded through dtype); returns the load info */
static mb_checkpoint_info expect_same(const char *dir, const mb_model *m, mb_dtype dt) {
    mb_model b;
    mb_checkpoint_info info;
    if (mb_checkpoint_load(dir, &b, &info)) fail_msg("%s", mb_last_error());
    assert_int_equal(b.n_params, m->n_params);
    assert_int_equal(b.cfg.rms_norm, m->cfg.rms_norm);
    assert_int_equal(b.cfg.tie_embeddings, m->cfg.tie_embeddings);
    assert_int_equal(b.cfg.d_state, m->cfg.d_state);
    int64_t changed = 0;
    for (int64_t i = 0; i < m->n_params; i++) {
        float want = rounded(m->params[i], dt);
        if (memcmp(&want, &b.params[i], sizeof want))
            fail_msg("%s: parameter %lld is %.9g, wanted %.9g", dir, (long long)i,
                     (double)b.params[i], (double)want);
        changed += want != m->params[i];
    }
    if (dt != MB_DT_F32) assert_true(changed > m->n_params / 2); /* rounding really happened */
    mb_model_free(&b);
    return info;
}

static void test_hf_and_mamba_ssm(void **st) {
    (void)st;
    for (int tie = 0; tie <= 1; tie++) {
        mb_model m;
        make_model(&m, 1, tie, 11 + (uint64_t)tie);
        char src[512], hf[512], hf16[512], ssm[512], f[600];
        path(src, tie ? "src_tied" : "src_untied");
        path(hf, tie ? "hf_tied" : "hf_untied");
        path(hf16, tie ? "hfbf16_tied" : "hfbf16_untied");
        path(ssm, tie ? "ssmf16_tied" : "ssmf16_untied");
        assert_int_equal(mb_checkpoint_save(src, &m, MB_CKPT_MAMBA_SSM), 0);

        if (export_cli("-m '%s' --format hf '%s'", src, hf)) fail_msg("%s", g_err);
        mb_checkpoint_info info = expect_same(hf, &m, MB_DT_F32);
        assert_int_equal(info.names, MB_CKPT_HF);
        assert_int_equal(info.config_flavour, MB_CFG_HF);
        assert_string_equal(info.dtype, "F32");
        assert_int_equal(info.lm_head_stored, !tie);
        snprintf(f, sizeof f, "%s/model.safetensors", hf);
        mb_st_file sf;
        assert_int_equal(mb_st_open(&sf, f), 0);
        assert_non_null(mb_st_find(&sf, "backbone.embeddings.weight"));
        assert_null(mb_st_find(&sf, "backbone.embedding.weight"));
        assert_true((mb_st_find(&sf, "lm_head.weight") == NULL) == tie);
        mb_st_close(&sf);

        if (export_cli("-m '%s' --format hf --dtype bf16 '%s'", src, hf16)) fail_msg("%s", g_err);
        info = expect_same(hf16, &m, MB_DT_BF16);
        assert_string_equal(info.dtype, "BF16");

        /* from the HF export back to mamba_ssm, as f16 */
        if (export_cli("-m '%s' --format mamba_ssm --dtype f16 '%s'", hf, ssm))
            fail_msg("%s", g_err);
        info = expect_same(ssm, &m, MB_DT_F16);
        assert_int_equal(info.names, MB_CKPT_MAMBA_SSM);
        assert_int_equal(info.config_flavour, MB_CFG_MAMBA_SSM);
        assert_string_equal(info.dtype, "F16");
        mb_model_free(&m);
    }
}

static void test_layernorm(void **st) {
    (void)st;
    mb_model m;
    make_model(&m, 0, 0, 5);
    char src[512], hf[512], ssm[512], f[600];
    path(src, "ln_src");
    path(hf, "ln_hf");
    path(ssm, "ln_ssm");
    assert_int_equal(mb_checkpoint_save(src, &m, MB_CKPT_MAMBA_SSM), 0);
    assert_int_equal(export_cli("-m '%s' --format hf '%s'", src, hf), 1);
    assert_non_null(strstr(g_err, "LayerNorm"));
    assert_non_null(strstr(g_err, "RMSNorm"));
    assert_non_null(strstr(g_err, "--format mamba_ssm"));
    assert_non_null(strstr(g_err, src));
    snprintf(f, sizeof f, "%s/config.json", hf);
    assert_int_not_equal(access(f, F_OK), 0); /* nothing written */
    snprintf(f, sizeof f, "%s/model.safetensors", hf);
    assert_int_not_equal(access(f, F_OK), 0);

    if (export_cli("-m '%s' --format mamba_ssm '%s'", src, ssm)) fail_msg("%s", g_err);
    expect_same(ssm, &m, MB_DT_F32);
    /* same logits from the export as from the source model */
    mb_model b;
    assert_int_equal(mb_checkpoint_load(ssm, &b, NULL), 0);
    uint8_t x[9] = {'M', 'a', 'm', 'b', 'a', 0, 255, '\n', 'x'};
    float l1[9 * 256], l2[9 * 256];
    mb_acts *a = mb_acts_create(&m.cfg, 1, 9);
    assert_non_null(a);
    mb_forward(&m, a, x, NULL, l1);
    mb_forward(&b, a, x, NULL, l2);
    assert_memory_equal(l1, l2, sizeof l1);
    mb_acts_free(a);
    mb_model_free(&b);
    mb_model_free(&m);
}

static void test_existing_and_bad_args(void **st) {
    (void)st;
    mb_model m;
    make_model(&m, 1, 1, 9);
    char src[512], out[512], missing[512];
    path(src, "args_src");
    path(out, "args_out");
    path(missing, "no_such_checkpoint");
    assert_int_equal(mb_checkpoint_save(src, &m, MB_CKPT_MAMBA_SSM), 0);
    if (export_cli("-m '%s' --format hf '%s'", src, out)) fail_msg("%s", g_err);
    assert_int_equal(export_cli("-m '%s' --format hf '%s'", src, out), 1);
    assert_non_null(strstr(g_err, "--force"));
    assert_int_equal(export_cli("-m '%s' --format mamba_ssm --force '%s'", src, out), 0);
    mb_checkpoint_info info = expect_same(out, &m, MB_DT_F32);
    assert_int_equal(info.config_flavour, MB_CFG_MAMBA_SSM);

    assert_int_equal(export_cli("-m '%s' '%s/x'", src, g_dir), 2); /* no --format */
    assert_int_equal(export_cli("-m '%s' --format onnx '%s/x'", src, g_dir), 2);
    assert_non_null(strstr(g_err, "onnx"));
    assert_int_equal(export_cli("-m '%s' --format hf --dtype q8 '%s/x'", src, g_dir), 2);
    assert_non_null(strstr(g_err, "q8"));
    assert_int_equal(export_cli("-m '%s' --format hf --bogus '%s/x'", src, g_dir), 2);
    assert_int_equal(export_cli("-m '%s' --format hf '%s/x'", missing, g_dir), 1);
    assert_non_null(strstr(g_err, "no_such_checkpoint"));
    assert_int_equal(export_cli("--help"), 0);
    mb_model_free(&m);
}

/* entries of dir whose name starts with prefix */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void test_failed_export_keeps_out(void **st) {
    (void)st;
    mb_model m, big;
    make_model(&m, 1, 0, 21);
    make_model(&big, 1, 0, 22);
    big.params[big.n_params / 2] = 1e6f; /* beyond f16's 65504 */
    char src[512], bigsrc[512], out[512], run[512], f[600];
    path(src, "keep_src");
    path(bigsrc, "keep_big");
    path(out, "keep_out");
    path(run, "keep_run");
    assert_int_equal(mb_checkpoint_save(src, &m, MB_CKPT_MAMBA_SSM), 0);
    assert_int_equal(mb_checkpoint_save(bigsrc, &big, MB_CKPT_MAMBA_SSM), 0);
    if (export_cli("-m '%s' --format mamba_ssm --dtype f16 '%s'", src, out)) fail_msg("%s", g_err);
    /* the f16 overflow is refused before anything is written: the previous export stays */
    assert_int_equal(export_cli("-m '%s' --format mamba_ssm --dtype f16 --force '%s'", bigsrc, out),
                     1);
    assert_non_null(strstr(g_err, "does not fit in f16"));
    expect_same(out, &m, MB_DT_F16);
    /* bf16 holds it: the export replaces the old one, and no staging directory is left */
    if (export_cli("-m '%s' --format mamba_ssm --dtype bf16 --force '%s'", bigsrc, out))
        fail_msg("%s", g_err);
    expect_same(out, &big, MB_DT_BF16);
    assert_int_equal(count_prefixed(out, ".mambabyte-export"), 0);
    /* a training run's directory is refused, even with --force, and left as it was */
    assert_int_equal(mb_checkpoint_save(run, &m, MB_CKPT_MAMBA_SSM), 0);
    snprintf(f, sizeof f, "%s/train_state.safetensors", run);
    FILE *ts = fopen(f, "wb");
    assert_non_null(ts);
    fclose(ts);
    assert_int_equal(
        export_cli("-m '%s' --format mamba_ssm --dtype bf16 --force '%s'", bigsrc, run), 1);
    assert_non_null(strstr(g_err, "training run"));
    expect_same(run, &m, MB_DT_F32);
    mb_model_free(&big);
    mb_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_and_mamba_ssm),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_existing_and_bad_args),
        cmocka_unit_test(test_failed_export_keeps_out),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
