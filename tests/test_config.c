/* Config presets, closed-form parameter count against the tensor table, state bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "io/config_json.h"
#include "mambabyte.h"

static void test_presets_sizes(void **st) {
    (void)st;
    mb_config c;
    assert_int_equal(mb_config_preset(&c, "353m"), 0);
    assert_int_equal(c.d_model, 1024);
    assert_int_equal(c.n_layer, 53);
    assert_int_equal(c.d_inner, 2048);
    assert_int_equal(c.dt_rank, 64);
    assert_int_equal(c.rms_norm, 0);
    assert_int_equal(c.tie_embeddings, 0);
    assert_int_equal(mb_config_preset(&c, "972m"), 0);
    assert_int_equal(c.dt_rank, 112);
    assert_int_equal(c.d_inner, 3584);
    /* model.md: 48 x 3584 x (3 + 16) floats */
    assert_int_equal(mb_config_state_bytes(&c), (int64_t)48 * 3584 * 19 * 4);
    assert_int_not_equal(mb_config_preset(&c, "nope"), 0);
    assert_non_null(strstr(mb_last_error(), "nope"));
}

static void check_table(const mb_config *c) {
    mb_tensor_info *t;
    int n;
    assert_int_equal(mb_tensor_table(c, &t, &n), 0);
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(t[i].offset, sum);
        sum += t[i].numel;
    }
    assert_int_equal(sum, mb_config_n_params(c));
    int per_layer = c->rms_norm ? 10 : 11;
    assert_int_equal(n, 1 + per_layer * c->n_layer + (c->rms_norm ? 1 : 2) + !c->tie_embeddings);
    free(t);
}

static void test_param_count(void **st) {
    (void)st;
    mb_config c;
    /* 353m by hand: d=1024, Di=2048, N=16, K=4, R=64, LayerNorm, untied */
    assert_int_equal(mb_config_preset(&c, "353m"), 0);
    int64_t layer = 2 * 1024 + 2 * 2048 * 1024 + 2048 * 4 + 2048 + (64 + 32) * 2048 + 2048 * 64 +
                    2048 + 2048 * 16 + 2048 + 1024 * 2048;
    assert_int_equal(mb_config_n_params(&c), 256 * 1024 * 2 + 53 * layer + 2 * 1024);
    check_table(&c);
    mb_config_default(&c, 37, 3);
    c.rms_norm = 1;
    c.tie_embeddings = 1;
    c.d_state = 4;
    assert_int_equal(mb_config_finalize(&c), 0);
    assert_int_equal(c.dt_rank, 3);
    check_table(&c);
}

static void test_model_init(void **st) {
    (void)st;
    mb_config c;
    mb_config_default(&c, 32, 2);
    mb_model m;
    assert_int_equal(mb_model_create(&m, &c), 0);
    mb_model_init(&m, 7);
    /* A_log = log(n + 1), D = 1, dt bias = inverse softplus of dt in [1e-3, 1e-1] */
    for (int64_t n = 0; n < c.d_state; n++)
        assert_float_equal(m.w.layers[1].A_log[5 * c.d_state + n], logf((float)n + 1), 1e-6);
    assert_float_equal(m.w.layers[0].D[3], 1.0f, 0);
    for (int64_t j = 0; j < c.d_inner; j++) {
        float b = m.w.layers[0].dt_proj_b[j];
        float dt = log1pf(expf(b));
        assert_true(dt >= 0.9e-3f && dt <= 1.01e-1f);
    }
    mb_model m2;
    assert_int_equal(mb_model_create(&m2, &c), 0);
    mb_model_init(&m2, 7);
    assert_memory_equal(m.params, m2.params, (size_t)m.n_params * sizeof(float));
    mb_model_init(&m2, 8);
    assert_memory_not_equal(m.params, m2.params, (size_t)m.n_params * sizeof(float));
    mb_model_free(&m);
    mb_model_free(&m2);
}

/* fuzzing found a dt_max that overflows float to inf, then written back as invalid JSON */
static void test_config_json_float_overflow(void **st) {
    (void)st;
    const char *j = "{\"d_model\": 64, \"n_layer\": 2, \"vocab_size\": 256, "
                    "\"ssm_cfg\": {\"dt_max\": 1e300}}";
    mb_config c;
    assert_int_equal(mb_config_json_parse(j, (int64_t)strlen(j), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "dt_max"));
    assert_non_null(strstr(mb_last_error(), "x/config.json"));
    const char *ok = "{\"d_model\": 64, \"n_layer\": 2, \"vocab_size\": 256, "
                     "\"ssm_cfg\": {\"dt_max\": 0.2}}";
    assert_int_equal(mb_config_json_parse(ok, (int64_t)strlen(ok), "x/config.json", &c, NULL), 0);
    assert_float_equal(c.dt_max, 0.2f, 1e-7);
    /* numbers past the double range (cJSON reads inf) or not integers: the value named, not
     * "must be a number (got a number)" */
    const struct {
        const char *json, *msg;
    } bad[] = {
        {"{\"d_model\": 64, \"n_layer\": 2, \"vocab_size\": 256, \"ssm_cfg\": {\"dt_min\": 1e999}}",
         "field ssm_cfg.dt_min must be a finite number (got inf)"},
        {"{\"model_type\": \"mamba\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
         "\"vocab_size\": 256, \"layer_norm_epsilon\": -1e999}",
         "field layer_norm_epsilon must be a finite number (got -inf)"},
        {"{\"d_model\": 64.5, \"n_layer\": 2, \"vocab_size\": 256}",
         "field d_model must be an integer up to 1e15 (got 64.5)"},
        {"{\"d_model\": 1e999, \"n_layer\": 2, \"vocab_size\": 256}",
         "field d_model must be an integer up to 1e15 (got inf)"},
        {"{\"d_model\": \"64\", \"n_layer\": 2, \"vocab_size\": 256}",
         "field d_model must be an integer (got a string)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(mb_config_json_parse(bad[i].json, (int64_t)strlen(bad[i].json),
                                              "x/config.json", &c, NULL),
                         MB_EFORMAT);
        if (!strstr(mb_last_error(), bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, mb_last_error(), bad[i].msg);
    }
}

/* the delta initialisation range: 0 = default; negative, NaN, inf or min > max refused (a
 * negative dt_max was silently replaced by 0.1 and written back by export) */
static void test_config_dt_range(void **st) {
    (void)st;
    mb_config c;
    mb_config_default(&c, 64, 2);
    assert_int_equal(mb_config_finalize(&c), 0);
    assert_float_equal(c.dt_min, 1e-3f, 0);
    assert_float_equal(c.dt_max, 1e-1f, 0);
    assert_float_equal(c.dt_init_floor, 1e-4f, 0);
    const float bad[] = {-5.0f, NAN, INFINITY};
    for (int f = 0; f < 3; f++)
        for (int i = 0; i < 3; i++) {
            mb_config_default(&c, 64, 2);
            float *v = f == 0 ? &c.dt_min : f == 1 ? &c.dt_max : &c.dt_init_floor;
            *v = bad[i];
            assert_int_equal(mb_config_finalize(&c), MB_EINVAL);
            assert_non_null(strstr(mb_last_error(), f == 0   ? "dt_min"
                                                    : f == 1 ? "dt_max"
                                                             : "dt_init_floor"));
        }
    mb_config_default(&c, 64, 2);
    c.dt_min = 0.5f, c.dt_max = 0.1f;
    assert_int_equal(mb_config_finalize(&c), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "above dt_max"));
    mb_config_default(&c, 64, 2);
    c.dt_min = 0.2f; /* above the default dt_max: refused too */
    assert_int_equal(mb_config_finalize(&c), MB_EINVAL);
    c.dt_max = 0.2f;
    assert_int_equal(mb_config_finalize(&c), 0);
}

/* A transformers config without model_type is still read as one (it was refused as a
 * mamba_ssm config with an unknown field "architectures"); a wrong model_type is named. */
static void test_config_json_hf_without_model_type(void **st) {
    (void)st;
    const char *j = "{\"architectures\": [\"MambaForCausalLM\"], \"hidden_size\": 64, "
                    "\"num_hidden_layers\": 2, \"vocab_size\": 256}";
    mb_config c;
    mb_config_flavour fl = MB_CFG_MAMBA_SSM;
    assert_int_equal(mb_config_json_parse(j, (int64_t)strlen(j), "x/config.json", &c, &fl), 0);
    assert_int_equal(fl, MB_CFG_HF);
    assert_int_equal(c.d_model, 64);
    assert_int_equal(c.n_layer, 2);
    const char *bad = "{\"model_type\": \"llama\", \"hidden_size\": 64, "
                      "\"num_hidden_layers\": 2, \"vocab_size\": 256}";
    assert_int_equal(mb_config_json_parse(bad, (int64_t)strlen(bad), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "model_type"));
}

/* 1 when every byte of s is printable ASCII (no control byte, no byte >= 0x80) */
static int all_printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) return 0;
    return 1;
}

/* Keys and string values of a corrupt config.json reach the error message escaped (\xNN) and
 * cut to 64 bytes: no control byte or invalid UTF-8 goes to the terminal. */
/* A key given twice is refused and named, at the top level and inside ssm_cfg; the same
 * config without the repeat parses. */
/* HF intermediate_size: transformers builds d_inner from it, so expand follows it (192 / 64 =
 * 3); one that is not a multiple of hidden_size is refused; equal to expand x hidden_size it
 * changes nothing */
static void test_config_json_hf_intermediate_size(void **st) {
    (void)st;
    const char *j = "{\"model_type\": \"mamba\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                    "\"vocab_size\": 256, \"expand\": 2, \"intermediate_size\": 192}";
    mb_config c;
    assert_int_equal(mb_config_json_parse(j, (int64_t)strlen(j), "x/config.json", &c, NULL), 0);
    assert_int_equal(c.expand, 3);
    assert_int_equal(c.d_inner, 192);
    const char *same = "{\"model_type\": \"mamba\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                       "\"vocab_size\": 256, \"intermediate_size\": 128}";
    assert_int_equal(mb_config_json_parse(same, (int64_t)strlen(same), "x/config.json", &c, NULL),
                     0);
    assert_int_equal(c.expand, 2);
    const char *bad = "{\"model_type\": \"mamba\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                      "\"vocab_size\": 256, \"intermediate_size\": 100}";
    assert_int_equal(mb_config_json_parse(bad, (int64_t)strlen(bad), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(
        strstr(mb_last_error(),
               "field intermediate_size 100 is not a positive multiple of hidden_size 64"));
    /* sizes whose product would overflow int64: no product is formed (UBSan) */
    const char *huge =
        "{\"model_type\": \"mamba\", \"hidden_size\": 1000000000000000, "
        "\"num_hidden_layers\": 2, \"vocab_size\": 256, \"expand\": 1000000000000000, "
        "\"intermediate_size\": 1}";
    assert_int_equal(mb_config_json_parse(huge, (int64_t)strlen(huge), "x/config.json", &c, NULL),
                     MB_EFORMAT);
}

static void test_config_json_duplicate_keys(void **st) {
    (void)st;
    mb_config c;
    const char *top = "{\"d_model\": 64, \"n_layer\": 2, \"n_layer\": 3, \"vocab_size\": 256}";
    assert_int_equal(mb_config_json_parse(top, (int64_t)strlen(top), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "x/config.json: field n_layer given twice"));
    const char *nested = "{\"d_model\": 64, \"n_layer\": 2, \"vocab_size\": 256, "
                         "\"ssm_cfg\": {\"d_state\": 16, \"d_state\": 8}}";
    assert_int_equal(
        mb_config_json_parse(nested, (int64_t)strlen(nested), "x/config.json", &c, NULL),
        MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "field d_state given twice"));
    const char *ok = "{\"d_model\": 64, \"n_layer\": 3, \"vocab_size\": 256, "
                     "\"ssm_cfg\": {\"d_state\": 8}}";
    assert_int_equal(mb_config_json_parse(ok, (int64_t)strlen(ok), "x/config.json", &c, NULL),
                     MB_OK);
    assert_int_equal(c.n_layer, 3);
    assert_int_equal(c.d_state, 8);
}

static void test_config_json_escaped_strings(void **st) {
    (void)st;
    mb_config c;
    /* an unknown key with an escape sequence (ESC [31m) and a raw invalid UTF-8 byte */
    const char *j = "{\"d_model\": 64, \"n_layer\": 2, \"vocab_size\": 256, "
                    "\"\\u001b[31mevil\xff\": 1}";
    assert_int_equal(mb_config_json_parse(j, (int64_t)strlen(j), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "unknown field \\x1b[31mevil\\xff"));
    assert_true(all_printable(mb_last_error()));
    /* a string value: a 300-byte model_type is shown as its first 64 bytes and "..." */
    char big[512], msg[1024];
    char val[301];
    memset(val, 'a', 300);
    val[0] = '\x01';
    val[300] = '\0';
    snprintf(big, sizeof big,
             "{\"model_type\": \"%s\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
             "\"vocab_size\": 256}",
             val);
    assert_int_equal(mb_config_json_parse(big, (int64_t)strlen(big), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    snprintf(msg, sizeof msg, "%s", mb_last_error());
    assert_true(all_printable(msg));
    char want[128];
    snprintf(want, sizeof want, "is \"\\x01%.63s...\"", val + 1);
    assert_non_null(strstr(msg, want));
    /* an ordinary value is shown as it is */
    const char *plain = "{\"model_type\": \"llama\", \"hidden_size\": 64, "
                        "\"num_hidden_layers\": 2, \"vocab_size\": 256}";
    assert_int_equal(mb_config_json_parse(plain, (int64_t)strlen(plain), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "\"llama\""));
}

/* cJSON keeps strings NUL-terminated: a NUL byte in a key (escaped \u0000 or raw) cut the key
 * short, so that "d_model\u0000x" read as d_model and an unknown key was named by its first part
 * only. Such a key is refused, named as written, saying it holds a NUL byte. */
static void test_config_json_nul_in_key(void **st) {
    (void)st;
    mb_config c;
    const char *esc = "{\"d_model\\u0000x\": 64, \"n_layer\": 2, \"vocab_size\": 256}";
    assert_int_equal(mb_config_json_parse(esc, (int64_t)strlen(esc), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(),
                           "x/config.json: field name \"d_model\\u0000x\" (byte 2) contains a NUL "
                           "byte"));
    /* a raw NUL byte in an unknown key: the whole key is shown, the NUL as \x00 */
    const char raw[] = "{\"d_model\": 64, \"n_layer\": 2, \"vocab_size\": 256, \"ab\0cd\": 1}";
    assert_int_equal(mb_config_json_parse(raw, (int64_t)sizeof raw - 1, "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "field name \"ab\\x00cd\""));
    assert_non_null(strstr(mb_last_error(), "contains a NUL byte"));
    assert_true(all_printable(mb_last_error()));
    /* in a string value too ("mamba\u0000..." read as "mamba") */
    const char *val = "{\"model_type\": \"mamba\\u0000x\", \"hidden_size\": 64, "
                      "\"num_hidden_layers\": 2, \"vocab_size\": 256}";
    assert_int_equal(mb_config_json_parse(val, (int64_t)strlen(val), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "string \"mamba\\u0000x\""));
    /* an escaped backslash before "u0000" is no NUL */
    const char *ok = "{\"d_model\": 64, \"n_layer\": 2, \"vocab_size\": 256, "
                     "\"ssm_cfg\": {\"dt_init\": \"random\"}, \"attn_cfg\": {}}";
    assert_int_equal(mb_config_json_parse(ok, (int64_t)strlen(ok), "x/config.json", &c, NULL), 0);
    const char *bs = "{\"model_type\": \"a\\\\u0000\", \"hidden_size\": 64, "
                     "\"num_hidden_layers\": 2, \"vocab_size\": 256}";
    assert_int_equal(mb_config_json_parse(bs, (int64_t)strlen(bs), "x/config.json", &c, NULL),
                     MB_EFORMAT);
    assert_null(strstr(mb_last_error(), "NUL"));
    assert_non_null(strstr(mb_last_error(), "model_type"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_sizes),
        cmocka_unit_test(test_param_count),
        cmocka_unit_test(test_model_init),
        cmocka_unit_test(test_config_json_float_overflow),
        cmocka_unit_test(test_config_dt_range),
        cmocka_unit_test(test_config_json_hf_without_model_type),
        cmocka_unit_test(test_config_json_escaped_strings),
        cmocka_unit_test(test_config_json_hf_intermediate_size),
        cmocka_unit_test(test_config_json_duplicate_keys),
        cmocka_unit_test(test_config_json_nul_in_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
