/* safetensors reader/writer: fp16/bf16 conversions against independent references
 * (the compiler's _Float16, and a double-precision nearest-even search for bf16), bit-exact
 * write/read round trips, and every malformed input rejected with a message naming the file
 * (and the tensor). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "mambabyte.h"
#include "support/tmpdir.h"

static char g_dir[256];

static int setup(void **st) {
    (void)st;
    return mb_test_mkdtemp(g_dir, sizeof g_dir, "st");
}

static int teardown(void **st) {
    (void)st;
    return mb_test_rmtree(g_dir);
}

static void path_of(char *buf, const char *name) {
    snprintf(buf, 512, "%s/%s", g_dir, name);
}

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t g_rs = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd32(void) {
    g_rs ^= g_rs << 13, g_rs ^= g_rs >> 7, g_rs ^= g_rs << 17;
    return (uint32_t)(g_rs >> 16);
}

/* ------------------------------------------------------------------ conversions */

static void test_f16_to_f32_exhaustive(void **st) {
    (void)st;
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 ref;
        uint16_t hb = (uint16_t)h;
        memcpy(&ref, &hb, 2);
        float want = (float)ref, got = mb_f16_to_f32(hb);
        if (isnan(want)) {
            assert_true(isnan(got));
        } else {
            assert_int_equal(f2u(got), f2u(want));
        }
    }
    /* hand values */
    assert_true(mb_f16_to_f32(0x3c00) == 1.0f);
    assert_true(mb_f16_to_f32(0xc000) == -2.0f);
    assert_true(mb_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(mb_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(mb_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    assert_true(isinf(mb_f16_to_f32(0x7c00)));
    assert_int_equal(f2u(mb_f16_to_f32(0x8000)), 0x80000000u);
}

static void check_f32_to_f16(float x) {
    _Float16 ref = (_Float16)x; /* IEEE round to nearest even (libgcc) */
    uint16_t want;
    memcpy(&want, &ref, 2);
    uint16_t got = mb_f32_to_f16(x);
    if (isnan(x)) {
        assert_true((got & 0x7c00) == 0x7c00 && (got & 0x3ff) != 0);
        assert_int_equal(got & 0x8000, want & 0x8000);
    } else {
        assert_int_equal(got, want);
    }
}

static void test_f32_to_f16(void **st) {
    (void)st;
    /* ties to even, overflow, underflow, subnormal boundaries */
    assert_int_equal(mb_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);     /* tie -> even */
    assert_int_equal(mb_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02); /* tie -> even */
    assert_int_equal(mb_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(mb_f32_to_f16(65520.0f), 0x7c00);          /* rounds up to inf */
    assert_int_equal(mb_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie -> 0 */
    assert_int_equal(mb_f32_to_f16(ldexpf(1.0001f, -25)), 0x0001);
    assert_int_equal(mb_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* 1.5 ulp: tie -> even 2 */
    assert_int_equal(mb_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(mb_f32_to_f16(0.1f), 0x2e66);
    float special[] = {
        0.0f,      1e-8f, 6.1e-5f,           6.0975e-5f,          65504.0f, 1e6f, INFINITY,
        -INFINITY, NAN,   ldexpf(1.0f, -14), ldexpf(1023.5f, -24)};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        check_f32_to_f16(special[i]);
        check_f32_to_f16(-special[i]);
    }
    /* every f16 value and both neighbours of every midpoint */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        float v = mb_f16_to_f32((uint16_t)h);
        check_f32_to_f16(v);
        float mid = (v + mb_f16_to_f32((uint16_t)(h + 1))) * 0.5f; /* exact in fp32 */
        check_f32_to_f16(mid);
        check_f32_to_f16(nextafterf(mid, 0.0f));
        check_f32_to_f16(nextafterf(mid, INFINITY));
    }
    for (int i = 0; i < 2000000; i++)
        check_f32_to_f16(u2f(rnd32()));
}

/* Independent bf16 reference: pick the nearest of the two bracketing bf16 values in double,
 * ties to the even one. */
static uint16_t bf16_ref(float x) {
    uint32_t u = f2u(x);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40);
    uint16_t lo = (uint16_t)(u >> 16); /* truncation toward zero in magnitude */
    if ((u & 0xffff) == 0) return lo;
    uint16_t hi = (uint16_t)(lo + 1);
    double dx = fabs((double)x), dl = fabs((double)u2f((uint32_t)lo << 16));
    double dh = (hi & 0x7f80) == 0x7f80 ? ldexp(1.0, 128) : fabs((double)u2f((uint32_t)hi << 16));
    double el = dx - dl, eh = dh - dx;
    if (el < eh) return lo;
    if (eh < el) return hi;
    return (lo & 1) ? hi : lo;
}

static void test_bf16(void **st) {
    (void)st;
    assert_true(mb_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(mb_bf16_to_f32(0xc000) == -2.0f);
    assert_true(mb_bf16_to_f32(0x7f7f) == u2f(0x7f7f0000u));
    assert_int_equal(mb_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(mb_f32_to_bf16(u2f(0x3f808000u)), 0x3f80); /* tie -> even */
    assert_int_equal(mb_f32_to_bf16(u2f(0x3f818000u)), 0x3f82); /* tie -> even */
    assert_int_equal(mb_f32_to_bf16(u2f(0x3f808001u)), 0x3f81);
    assert_int_equal(mb_f32_to_bf16(u2f(0x7f7fffffu)), 0x7f80); /* overflow -> inf */
    assert_true(isnan(mb_bf16_to_f32(mb_f32_to_bf16(NAN))));
    assert_true(isnan(mb_bf16_to_f32(mb_f32_to_bf16(u2f(0x7f800001u))))); /* payload in low bits */
    for (int i = 0; i < 2000000; i++) {
        float x = u2f(rnd32());
        uint16_t got = mb_f32_to_bf16(x), want = bf16_ref(x);
        if (isnan(x))
            assert_true(isnan(mb_bf16_to_f32(got)));
        else
            assert_int_equal(got, want);
    }
}

/* ------------------------------------------------------------------ round trips */

static float g_a[6] = {1.0f, -2.5f, 3.25f, 0.1f, -0.0f, 1e-30f};
static float g_b[4] = {7.0f, 8.0f, 9.0f, 1e30f};
static float g_c[1] = {42.0f};

static int write_sample(const char *p, mb_dtype dt) {
    mb_st_wtensor t[3] = {
        {"a.weight", 2, {2, 3}, g_a},
        {"b", 1, {4}, g_b},
        {"scalar", 0, {0}, g_c},
    };
    const char *meta[] = {"format", "pt", "quote\"key", "line\nvalue"};
    return mb_st_write(p, t, 3, meta, 2, dt);
}

static void test_roundtrip_f32(void **st) {
    (void)st;
    char p[512];
    path_of(p, "rt.safetensors");
    assert_int_equal(write_sample(p, MB_DT_F32), 0);
    assert_int_equal(access(p, F_OK), 0);
    mb_st_file f;
    assert_int_equal(mb_st_open(&f, p), 0);
    assert_int_equal(f.header_len % 8, 0);
    assert_int_equal(f.n_tensors, 3);
    assert_string_equal(mb_st_meta(&f, "format"), "pt");
    assert_string_equal(mb_st_meta(&f, "quote\"key"), "line\nvalue");
    assert_null(mb_st_meta(&f, "nope"));
    assert_null(mb_st_find(&f, "nope"));
    const mb_st_tensor *a = mb_st_find(&f, "a.weight");
    assert_non_null(a);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->begin, 0);
    assert_int_equal(a->end, 24);
    float out[6];
    int64_t sh[2] = {2, 3};
    assert_int_equal(mb_st_read_f32(&f, a, 2, sh, 1, out), 0);
    assert_memory_equal(out, g_a, sizeof g_a);
    const mb_st_tensor *s = mb_st_find(&f, "scalar");
    assert_non_null(s);
    assert_int_equal(s->ndim, 0);
    assert_int_equal(s->numel, 1);
    assert_int_equal(mb_st_read_f32(&f, s, 0, sh, 1, out), 0);
    assert_true(out[0] == 42.0f);
    /* shape check: wrong expectation names file and tensor */
    int64_t bad[2] = {3, 2};
    assert_int_equal(mb_st_read_f32(&f, a, 2, bad, 1, out), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), p));
    assert_non_null(strstr(mb_last_error(), "a.weight"));
    /* finite check: 1e30 is finite */
    const mb_st_tensor *b = mb_st_find(&f, "b");
    assert_int_equal(mb_st_read_f32(&f, b, 1, (int64_t[]){4}, 1, out), 0);
    assert_memory_equal(out, g_b, sizeof g_b);
    mb_st_close(&f);
    /* no temporary left behind */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
}

static void test_roundtrip_f16_bf16(void **st) {
    (void)st;
    char p[512];
    for (int k = 0; k < 2; k++) {
        mb_dtype dt = k ? MB_DT_BF16 : MB_DT_F16;
        path_of(p, k ? "bf16.safetensors" : "f16.safetensors");
        assert_int_equal(write_sample(p, dt), 0);
        mb_st_file f;
        assert_int_equal(mb_st_open(&f, p), 0);
        const mb_st_tensor *a = mb_st_find(&f, "a.weight");
        assert_int_equal(a->dtype, dt);
        assert_int_equal(a->end - a->begin, 12);
        float out[6];
        assert_int_equal(mb_st_read_f32(&f, a, 2, (int64_t[]){2, 3}, 1, out), 0);
        for (int i = 0; i < 6; i++) {
            float want = k ? mb_bf16_to_f32(bf16_ref(g_a[i])) : (float)(_Float16)g_a[i];
            assert_int_equal(f2u(out[i]), f2u(want));
        }
        assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 3.25f);
        /* 1e30 overflows f16 -> inf: the finite check must catch it */
        const mb_st_tensor *b = mb_st_find(&f, "b");
        int rc = mb_st_read_f32(&f, b, 1, (int64_t[]){4}, 1, out);
        if (k == 0) {
            assert_int_equal(rc, MB_ENONFINITE);
            assert_non_null(strstr(mb_last_error(), p));
            assert_non_null(strstr(mb_last_error(), "tensor b"));
            assert_non_null(strstr(mb_last_error(), "index 3"));
        } else {
            assert_int_equal(rc, 0);
        }
        mb_st_close(&f);
    }
}

/* ------------------------------------------------------------------ malformed files */

/* Write 8-byte length `hlen`, then `hdr` (strlen bytes), then `ndata` bytes of data. */
static void write_raw(const char *p, uint64_t hlen, const char *hdr, int64_t ndata,
                      const void *data) {
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(hlen >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(hdr, 1, strlen(hdr), f);
    for (int64_t i = 0; i < ndata; i++) {
        uint8_t z = data ? ((const uint8_t *)data)[i] : 0;
        fwrite(&z, 1, 1, f);
    }
    fclose(f);
}

/* Header `hdr` with its true length, ndata zero bytes of data. */
static void write_hdr(const char *p, const char *hdr, int64_t ndata) {
    write_raw(p, strlen(hdr), hdr, ndata, NULL);
}

static void expect_bad(const char *p, int code, const char *needle) {
    mb_st_file f;
    int rc = mb_st_open(&f, p);
    if (rc != code) fail_msg("%s: rc %d, wanted %d (%s)", p, rc, code, mb_last_error());
    if (!strstr(mb_last_error(), p)) fail_msg("message lacks the file name: %s", mb_last_error());
    if (needle && !strstr(mb_last_error(), needle))
        fail_msg("message lacks '%s': %s", needle, mb_last_error());
}

static void truncate_copy(const char *src, const char *dst, int64_t n) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    assert_non_null(a);
    assert_non_null(b);
    for (int64_t i = 0; i < n; i++) {
        int c = fgetc(a);
        assert_true(c != EOF);
        fputc(c, b);
    }
    fclose(a);
    fclose(b);
}

static void test_truncated(void **st) {
    (void)st;
    char p[512], q[512];
    path_of(p, "full.safetensors");
    path_of(q, "trunc.safetensors");
    assert_int_equal(write_sample(p, MB_DT_F32), 0);
    mb_st_file f;
    assert_int_equal(mb_st_open(&f, p), 0);
    int64_t size = f.file_size, hl = f.header_len;
    mb_st_close(&f);
    truncate_copy(p, q, 0);
    expect_bad(q, MB_EFORMAT, "too short");
    truncate_copy(p, q, 7);
    expect_bad(q, MB_EFORMAT, "too short");
    truncate_copy(p, q, 8); /* header length only */
    expect_bad(q, MB_EFORMAT, "past the end");
    truncate_copy(p, q, 8 + hl / 2); /* mid-header */
    expect_bad(q, MB_EFORMAT, "past the end");
    truncate_copy(p, q, 8 + hl + 10); /* mid-data: names a tensor past the region */
    expect_bad(q, MB_EFORMAT, "run past the data region");
    truncate_copy(p, q, size - 1);
    expect_bad(q, MB_EFORMAT, "tensor ");
    truncate_copy(p, q, size); /* control: the intact copy opens */
    assert_int_equal(mb_st_open(&f, q), 0);
    mb_st_close(&f);
    /* missing file: MB_EIO with errno text */
    path_of(q, "does-not-exist.safetensors");
    expect_bad(q, MB_EIO, "No such file");
}

static void test_bad_header_length(void **st) {
    (void)st;
    char p[512];
    path_of(p, "hl.safetensors");
    write_raw(p, 1000, "{}", 0, NULL); /* beyond the file */
    expect_bad(p, MB_EFORMAT, "header length 1000");
    write_raw(p, (uint64_t)1 << 62, "{}", 0, NULL); /* absurd */
    expect_bad(p, MB_EFORMAT, "absurd");
    write_raw(p, UINT64_MAX, "{}", 0, NULL); /* would be negative as int64 */
    expect_bad(p, MB_EFORMAT, "absurd");
    write_raw(p, 0, "", 0, NULL);
    expect_bad(p, MB_EFORMAT, "header");
    /* control */
    write_hdr(p, "{}      ", 0);
    mb_st_file f;
    assert_int_equal(mb_st_open(&f, p), 0);
    assert_int_equal(f.n_tensors, 0);
    mb_st_close(&f);
}

static void test_bad_json(void **st) {
    (void)st;
    char p[512];
    path_of(p, "json.safetensors");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",", 0);
    expect_bad(p, MB_EFORMAT, "not valid JSON");
    write_hdr(p, "[1,2,3]", 0);
    expect_bad(p, MB_EFORMAT, "expected a JSON object");
    write_hdr(p, "{} x", 0);
    expect_bad(p, MB_EFORMAT, "non-blank");
    write_hdr(p, "{\"t\":5}", 0);
    expect_bad(p, MB_EFORMAT, "tensor t");
}

static void test_bad_entries(void **st) {
    (void)st;
    char p[512];
    path_of(p, "entry.safetensors");
    struct {
        const char *hdr;
        int64_t ndata;
        const char *needle;
    } cases[] = {
        {"{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "no \"dtype\""},
        {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "no \"shape\""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "no \"data_offsets\""},
        {"{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" is a number"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
         "\"shape\" is a string"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape[0]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}", 4, "data_offsets"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "data_offsets"},
        {"{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "'F64'"},
        {"{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "'Q4_K'"},
        {"{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'f32'"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
         "negative dimension"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}",
         4, "overflows"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,4]}}", 4,
         "byte size overflows"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[9007199254740993],\"data_offsets\":[0,4]}}", 4,
         "not an integer in range"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "shape[0]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "dimensions"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
         "run past the data region"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "end 0 < begin 4"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
         "negative data_offsets"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "needs 8"},
        {"{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "needs 4"},
        /* tiling */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "overlap tensor a"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
         12, "gap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "trailing"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "twice"},
        /* metadata */
        {"{\"__metadata__\":{\"format\":1}}", 0, "__metadata__ key 'format'"},
        {"{\"__metadata__\":[\"pt\"]}", 0, "__metadata__"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_hdr(p, cases[i].hdr, cases[i].ndata);
        expect_bad(p, MB_EFORMAT, cases[i].needle);
        /* tensor-level errors name the tensor */
        if (strstr(cases[i].hdr, "\"w\"") && !strstr(mb_last_error(), "tensor w"))
            fail_msg("case %zu: message lacks the tensor: %s", i, mb_last_error());
    }
    /* controls: a valid two-tensor file with a zero-size tensor and metadata opens */
    write_hdr(p,
              "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"BF16\",\"shape\":[2],"
              "\"data_offsets\":[0,4]},\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],"
              "\"data_offsets\":[4,4]},\"b\":{\"dtype\":\"F16\",\"shape\":[],"
              "\"data_offsets\":[4,6]}}",
              6);
    mb_st_file f;
    assert_int_equal(mb_st_open(&f, p), 0);
    assert_int_equal(f.n_tensors, 3);
    assert_string_equal(mb_st_meta(&f, "k"), "v");
    assert_int_equal(mb_st_find(&f, "e")->numel, 0);
    assert_int_equal(mb_st_find(&f, "b")->numel, 1);
    mb_st_close(&f);
}

/* Tensor names and dtype strings of a corrupt header reach the message escaped (\xNN) and cut
 * to 64 bytes: no control byte or invalid UTF-8 goes to the terminal. */
/* A tensor name given twice is named as such, whether the two entries overlap (the same data)
 * or tile the data region. */
static void test_duplicate_name(void **st) {
    (void)st;
    char p[512];
    path_of(p, "dup.safetensors");
    write_hdr(p,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              4);
    expect_bad(p, MB_EFORMAT, "tensor w: appears twice in the header");
    write_hdr(p,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              8);
    expect_bad(p, MB_EFORMAT, "tensor w: appears twice in the header");
    /* a name holding \u0000 is refused, not read cut at it (as "w", a duplicate here) */
    write_hdr(p,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w\\u0000junk\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              8);
    expect_bad(p, MB_EFORMAT, "field name \"w\\u0000junk\" (byte 63) contains a NUL byte");
    write_hdr(p,
              "{\"__metadata__\":{\"k\":\"v\\u0000\"},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              4);
    expect_bad(p, MB_EFORMAT, "string \"v\\u0000\"");
    /* "\\u0000" is a backslash and the text u0000: allowed (the writer's names never hold it,
     * so the reader only has to keep it whole) */
    write_hdr(p, "{\"w\\\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    mb_st_file f;
    assert_int_equal(mb_st_open(&f, p), 0);
    assert_string_equal(f.tensors[0].name, "w\\u0000");
    mb_st_close(&f);
}

static void test_escaped_names(void **st) {
    (void)st;
    char p[512];
    path_of(p, "names.safetensors");
    /* a name with ESC and BEL (JSON escapes) and a raw 0xff byte; a dtype with a control byte */
    write_hdr(p,
              "{\"w\\u001b[2J\\u0007\xff\":{\"dtype\":\"F6\\u00014\",\"shape\":[1],"
              "\"data_offsets\":[0,8]}}",
              8);
    expect_bad(p, MB_EFORMAT, "tensor w\\x1b[2J\\x07\\xff: unsupported dtype 'F6\\x014'");
    for (const char *c = mb_last_error(); *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            fail_msg("raw byte 0x%02x in the message: %s", (unsigned char)*c, mb_last_error());
    /* a 1000-byte name: its first 64 bytes and "..." */
    char hdr[1200], name[1001];
    memset(name, 'n', 1000);
    name[1000] = '\0';
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
             name);
    write_hdr(p, hdr, 4);
    char want[128];
    snprintf(want, sizeof want, "tensor %.64s...: data_offsets hold 4 bytes", name);
    expect_bad(p, MB_EFORMAT, want);
    assert_null(strstr(mb_last_error(), name + 935)); /* not 65 n's in a row */
    /* the same for a tensor that is read: shape mismatch names it escaped */
    write_hdr(p, "{\"a\\u0009b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    mb_st_file f;
    assert_int_equal(mb_st_open(&f, p), 0);
    const int64_t shape[1] = {2};
    float out[2];
    assert_int_equal(mb_st_read_f32(&f, &f.tensors[0], 1, shape, 0, out), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "tensor a\\x09b: shape"));
    mb_st_close(&f);
}

static void test_nonfinite(void **st) {
    (void)st;
    char p[512];
    path_of(p, "nan.safetensors");
    float vals[3][4] = {{1, 2, NAN, 4}, {1, INFINITY, 3, 4}, {-INFINITY, 0, 0, 0}};
    const char *kinds[3] = {"NaN", "inf", "inf"};
    int64_t idx[3] = {2, 1, 0};
    for (int k = 0; k < 3; k++) {
        mb_st_wtensor t = {"layer.w", 2, {2, 2}, vals[k]};
        assert_int_equal(mb_st_write(p, &t, 1, NULL, 0, MB_DT_F32), 0);
        mb_st_file f;
        assert_int_equal(mb_st_open(&f, p), 0);
        float out[4];
        int rc = mb_st_read_f32(&f, mb_st_find(&f, "layer.w"), 2, (int64_t[]){2, 2}, 1, out);
        assert_int_equal(rc, MB_ENONFINITE);
        assert_non_null(strstr(mb_last_error(), p));
        assert_non_null(strstr(mb_last_error(), "tensor layer.w"));
        assert_non_null(strstr(mb_last_error(), kinds[k]));
        char at[32];
        snprintf(at, sizeof at, "index %lld", (long long)idx[k]);
        assert_non_null(strstr(mb_last_error(), at));
        /* without the check the values come through */
        assert_int_equal(mb_st_read_f32(&f, mb_st_find(&f, "layer.w"), 0, NULL, 0, out), 0);
        mb_st_close(&f);
    }
}

static void test_writer_errors(void **st) {
    (void)st;
    char p[512];
    path_of(p, "w.safetensors");
    float x = 1;
    mb_st_wtensor dup[2] = {{"a", 1, {1}, &x}, {"a", 1, {1}, &x}};
    assert_int_equal(mb_st_write(p, dup, 2, NULL, 0, MB_DT_F32), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "tensor a"));
    mb_st_wtensor null_data = {"n", 1, {3}, NULL};
    assert_int_equal(mb_st_write(p, &null_data, 1, NULL, 0, MB_DT_F32), MB_EINVAL);
    /* unwritable directory: MB_EIO naming the path */
    assert_int_equal(mb_st_write("/nonexistent-dir/x.safetensors", dup, 1, NULL, 0, MB_DT_F32),
                     MB_EIO);
    assert_non_null(strstr(mb_last_error(), "/nonexistent-dir/x.safetensors"));
    assert_int_equal(mb_atomic_write_file("/nonexistent-dir/y", "x", 1), MB_EIO);
    assert_non_null(strstr(mb_last_error(), "No such file"));
    /* atomic replace of an existing file */
    assert_int_equal(mb_atomic_write_file(p, "old", 3), 0);
    assert_int_equal(mb_atomic_write_file(p, "new!", 4), 0);
    FILE *f = fopen(p, "rb");
    char buf[8] = {0};
    assert_int_equal(fread(buf, 1, 8, f), 4);
    fclose(f);
    assert_string_equal(buf, "new!");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_to_f32_exhaustive),
        cmocka_unit_test(test_f32_to_f16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_roundtrip_f32),
        cmocka_unit_test(test_roundtrip_f16_bf16),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bad_header_length),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_escaped_names),
        cmocka_unit_test(test_duplicate_name),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_writer_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
