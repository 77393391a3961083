/* safetensors reader (mmap + full validation) and writer; see safetensors.h. */
#include "io/safetensors.h"

#include "io/atomic_file.h"
#include "io/json_check.h"
#include "io/json_type.h"
#include "io/printable.h"
#include "io/regular_file.h"
#include "mambabyte.h"
#include "plural.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O assumes a little-endian host"
#endif

/* ------------------------------------------------------------------ dtypes */

const char *mb_dtype_name(mb_dtype t) {
    switch (t) {
    case MB_DT_F32:
        return "F32";
    case MB_DT_F16:
        return "F16";
    case MB_DT_BF16:
        return "BF16";
    }
    return "?";
}

int64_t mb_dtype_size(mb_dtype t) {
    return t == MB_DT_F32 ? 4 : 2;
}

int mb_dtype_parse(const char *s, mb_dtype *out) {
    if (s && strcmp(s, "F32") == 0)
        *out = MB_DT_F32;
    else if (s && strcmp(s, "F16") == 0)
        *out = MB_DT_F16;
    else if (s && strcmp(s, "BF16") == 0)
        *out = MB_DT_BF16;
    else {
        char shown[MB_PRINTABLE_BUF];
        return mb_fail(MB_EINVAL, "unsupported dtype '%s' (supported: F32, F16, BF16)",
                       mb_printable(s, shown));
    }
    return MB_OK;
}

static float bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

float mb_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in fp32 */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

float mb_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t mb_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu, mant = x & 0x7fffffu;
    if (exp == 0xff) /* inf, or NaN kept quiet with the top payload bits */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u); /* |f| >= 65536: inf */
    if (e <= 0) {
        /* half subnormal (or zero): value = (1.mant) * 2^(e-15); unit 2^-24 */
        if (e < -10) return (uint16_t)sign; /* below half the smallest subnormal */
        mant |= 0x800000u;
        int shift = 14 - e; /* 14..24 */
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++; /* may carry into the min normal */
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* carry may give inf: correct */
    return (uint16_t)(sign | h);
}

uint16_t mb_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ------------------------------------------------------------------ reader helpers */

void mb_st_shape_str(char *buf, int n, int ndim, const int64_t *shape) {
    int k = snprintf(buf, (size_t)n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += snprintf(buf + k, (size_t)(n - k), "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < n) snprintf(buf + k, (size_t)(n - k), "%s)", ndim == 1 ? "," : "");
}

/* An integer-valued JSON number of magnitude below 2^53 (so exact in a double). */
static int json_i64(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) >= 9007199254740992.0) return 0;
    *out = (int64_t)d;
    return 1;
}

typedef struct {
    int64_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx) {
    const mb_st_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

void mb_st_close(mb_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, (size_t)f->file_size);
    if (f->fd > 0) close(f->fd);
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

/* Parse one tensor entry `e` named `raw_name` into t. */
static int parse_entry(const mb_st_file *f, const char *raw_name, const cJSON *e, mb_st_tensor *t) {
    const char *p = f->path;
    char name_buf[MB_PRINTABLE_BUF], dtype_buf[MB_PRINTABLE_BUF];
    const char *name = mb_printable(raw_name, name_buf); /* (for the messages) */
    if (!cJSON_IsObject(e))
        return mb_fail(MB_EFORMAT, "file %s: tensor %s: header entry is %s, expected an object", p,
                       name, mb_json_type(e));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt) return mb_fail(MB_EFORMAT, "file %s: tensor %s: no \"dtype\"", p, name);
    if (!sh) return mb_fail(MB_EFORMAT, "file %s: tensor %s: no \"shape\"", p, name);
    if (!off) return mb_fail(MB_EFORMAT, "file %s: tensor %s: no \"data_offsets\"", p, name);
    if (!cJSON_IsString(dt))
        return mb_fail(MB_EFORMAT, "file %s: tensor %s: \"dtype\" is %s, expected a string", p,
                       name, mb_json_type(dt));
    if (mb_dtype_parse(dt->valuestring, &t->dtype) != MB_OK)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s: unsupported dtype '%s' (readable: F32, F16, BF16)", p,
                       name, mb_printable(dt->valuestring, dtype_buf));
    if (!cJSON_IsArray(sh))
        return mb_fail(MB_EFORMAT, "file %s: tensor %s: \"shape\" is %s, expected an array", p,
                       name, mb_json_type(sh));
    int nd = cJSON_GetArraySize(sh);
    if (nd > MB_ST_MAX_DIMS)
        return mb_fail(MB_EFORMAT, "file %s: tensor %s: %d dimensions (at most %d supported)", p,
                       name, nd, MB_ST_MAX_DIMS);
    t->ndim = nd;
    int64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *v = cJSON_GetArrayItem(sh, i);
        int64_t s;
        if (!json_i64(v, &s))
            return mb_fail(MB_EFORMAT,
                           "file %s: tensor %s: shape[%d] is not an integer in range (%s)", p, name,
                           i, mb_json_type(v));
        if (s < 0)
            return mb_fail(MB_EFORMAT,
                           "file %s: tensor %s: negative dimension shape[%d] = %" PRId64, p, name,
                           i, s);
        t->shape[i] = s;
        if (__builtin_mul_overflow(numel, s, &numel))
            return mb_fail(MB_EFORMAT, "file %s: tensor %s: number of elements overflows int64", p,
                           name);
    }
    t->numel = numel;
    int64_t nbytes;
    if (__builtin_mul_overflow(numel, mb_dtype_size(t->dtype), &nbytes))
        return mb_fail(MB_EFORMAT, "file %s: tensor %s: byte size overflows int64", p, name);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s: \"data_offsets\" must be an array [begin, end]", p,
                       name);
    if (!json_i64(cJSON_GetArrayItem(off, 0), &t->begin) ||
        !json_i64(cJSON_GetArrayItem(off, 1), &t->end))
        return mb_fail(MB_EFORMAT, "file %s: tensor %s: data_offsets are not integers in range", p,
                       name);
    if (t->begin < 0 || t->end < 0)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s: negative data_offsets [%" PRId64 ", %" PRId64 "]", p,
                       name, t->begin, t->end);
    if (t->end < t->begin)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s: data_offsets end %" PRId64 " < begin %" PRId64, p, name,
                       t->end, t->begin);
    if (t->end > f->data_size)
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s: data_offsets [%" PRId64 ", %" PRId64
                       "] run past the data region (%" PRId64 " byte%s; file truncated?)",
                       p, name, t->begin, t->end, f->data_size, mb_plural(f->data_size));
    if (t->end - t->begin != nbytes) {
        char s[160];
        mb_st_shape_str(s, sizeof s, t->ndim, t->shape);
        return mb_fail(MB_EFORMAT,
                       "file %s: tensor %s: data_offsets hold %" PRId64
                       " byte%s but dtype %s shape %s needs %" PRId64,
                       p, name, t->end - t->begin, mb_plural(t->end - t->begin),
                       mb_dtype_name(t->dtype), s, nbytes);
    }
    t->data = f->data_region + t->begin;
    return MB_OK;
}

static int parse_metadata(mb_st_file *f, const cJSON *m) {
    if (!cJSON_IsObject(m))
        return mb_fail(MB_EFORMAT, "file %s: \"__metadata__\" is %s, expected an object", f->path,
                       mb_json_type(m));
    int n = cJSON_GetArraySize(m);
    f->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    f->meta_vals = calloc((size_t)n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals)
        return mb_fail(MB_ENOMEM, "file %s: out of memory", f->path);
    const cJSON *v;
    cJSON_ArrayForEach(v, m) {
        char key[MB_PRINTABLE_BUF];
        if (!cJSON_IsString(v))
            return mb_fail(MB_EFORMAT, "file %s: __metadata__ key '%s' is %s, expected a string",
                           f->path, mb_printable(v->string, key), mb_json_type(v));
        f->meta_keys[f->n_meta] = strdup(v->string);
        f->meta_vals[f->n_meta] = strdup(v->valuestring);
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
            return mb_fail(MB_ENOMEM, "file %s: out of memory", f->path);
    }
    return MB_OK;
}

/* Validate the parsed header `root` and fill f->tensors. */
static int parse_header(mb_st_file *f, const cJSON *root) {
    const char *p = f->path;
    if (!cJSON_IsObject(root))
        return mb_fail(MB_EFORMAT, "file %s: header is %s, expected a JSON object", p,
                       mb_json_type(root));
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") != 0) n++;
    }
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    f->by_name = calloc((size_t)n + 1, sizeof(int));
    span *spans = calloc((size_t)n + 1, sizeof *spans);
    int rc = MB_OK;
    if (!f->tensors || !f->by_name || !spans) {
        free(spans);
        return mb_fail(MB_ENOMEM, "file %s: out of memory for %d tensors", p, n);
    }
    int seen_meta = 0;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++) {
                rc = mb_fail(MB_EFORMAT, "file %s: \"__metadata__\" appears twice", p);
                break;
            }
            if ((rc = parse_metadata(f, e)) != MB_OK) break;
            continue;
        }
        mb_st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(e->string);
        if (!t->name) {
            rc = mb_fail(MB_ENOMEM, "file %s: out of memory", p);
            break;
        }
        f->n_tensors++;
        if ((rc = parse_entry(f, t->name, e, t)) != MB_OK) break;
    }
    if (rc == MB_OK) { /* names first: a repeated one would also overlap itself */
        for (int i = 0; i < n; i++)
            f->by_name[i] = i;
        qsort_r(f->by_name, (size_t)n, sizeof(int), cmp_name_idx, f->tensors);
        char a[MB_PRINTABLE_BUF];
        for (int i = 1; i < n && rc == MB_OK; i++)
            if (strcmp(f->tensors[f->by_name[i]].name, f->tensors[f->by_name[i - 1]].name) == 0)
                rc = mb_fail(MB_EFORMAT, "file %s: tensor %s: appears twice in the header", p,
                             mb_printable(f->tensors[f->by_name[i]].name, a));
    }
    if (rc == MB_OK) {
        /* the tensors must tile the data region: sorted by offset, no overlap, no gap */
        for (int i = 0; i < n; i++)
            spans[i] = (span){f->tensors[i].begin, f->tensors[i].end, i};
        qsort(spans, (size_t)n, sizeof *spans, cmp_span);
        int64_t at = 0;
        for (int i = 0; i < n && rc == MB_OK; i++) {
            const mb_st_tensor *t = &f->tensors[spans[i].idx];
            char a[MB_PRINTABLE_BUF], b[MB_PRINTABLE_BUF];
            if (spans[i].begin < at)
                rc = mb_fail(MB_EFORMAT,
                             "file %s: tensor %s: data_offsets [%" PRId64 ", %" PRId64
                             "] overlap tensor %s (which ends at %" PRId64 ")",
                             p, mb_printable(t->name, a), t->begin, t->end,
                             mb_printable(f->tensors[spans[i - 1].idx].name, b), at);
            else if (spans[i].begin > at)
                rc = mb_fail(MB_EFORMAT,
                             "file %s: tensor %s: gap in the data region: bytes [%" PRId64
                             ", %" PRId64 ") before it belong to no tensor",
                             p, mb_printable(t->name, a), at, t->begin);
            at = spans[i].end;
        }
        if (rc == MB_OK && at != f->data_size)
            rc = mb_fail(MB_EFORMAT,
                         "file %s: data region has %" PRId64
                         " bytes but the tensors cover only %" PRId64
                         " (trailing bytes belong to no tensor)",
                         p, f->data_size, at);
    }
    free(spans);
    return rc;
}

int mb_st_open(mb_st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (!path) return mb_fail(MB_EINVAL, "safetensors: NULL path");
    f->path = strdup(path);
    if (!f->path) return mb_fail(MB_ENOMEM, "file %s: out of memory", path);
    int rc = MB_OK;
    int64_t size = 0;
    rc = mb_open_regular(path, "file", &f->fd, &size);
    if (rc) goto fail;
    if (size < 8) {
        rc = mb_fail(MB_EFORMAT,
                     "file %s: %" PRId64 " byte%s %s too short for a safetensors file (the "
                     "header length alone takes 8; truncated?)",
                     path, size, mb_plural(size), size == 1 ? "is" : "are");
        goto fail;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (map == MAP_FAILED) {
        rc = mb_fail(MB_EIO, "file %s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    f->file_size = size;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->map[i];
    if (hlen > (uint64_t)MB_ST_MAX_HEADER) {
        rc = mb_fail(MB_EFORMAT,
                     "file %s: header length %" PRIu64 " is absurd (limit %" PRId64
                     " bytes); not a safetensors file?",
                     path, hlen, MB_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > (uint64_t)(size - 8)) {
        rc = mb_fail(MB_EFORMAT,
                     "file %s: header length %" PRIu64 " runs past the end of the file (%" PRId64
                     " bytes; truncated?)",
                     path, hlen, size);
        goto fail;
    }
    if (hlen < 2) {
        rc = mb_fail(MB_EFORMAT, "file %s: header of %" PRIu64 " byte%s cannot hold a JSON object",
                     path, hlen, mb_plural((int64_t)hlen));
        goto fail;
    }
    f->header_len = (int64_t)hlen;
    f->data_region = f->map + 8 + f->header_len;
    f->data_size = size - 8 - f->header_len;
    const char *hdr = (const char *)f->map + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        long long at = end ? (long long)(end - hdr) : -1;
        rc = mb_fail(MB_EFORMAT,
                     "file %s: header is not valid JSON (error near byte %lld of %" PRIu64 ")",
                     path, at, hlen);
        goto fail;
    }
    for (const char *q = end; q < hdr + hlen; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            cJSON_Delete(root);
            rc = mb_fail(MB_EFORMAT,
                         "file %s: header has non-blank bytes after the JSON object (at byte %lld)",
                         path, (long long)(q - hdr));
            goto fail;
        }
    }
    /* (a tensor name holding \u0000 would otherwise be read cut at it) */
    rc = mb_json_check_nul(hdr, (size_t)(end - hdr), path, 8);
    if (rc == MB_OK) rc = parse_header(f, root);
    cJSON_Delete(root);
    if (rc != MB_OK) goto fail;
    return MB_OK;
fail:
    mb_st_close(f);
    return rc;
}

const mb_st_tensor *mb_st_find(const mb_st_file *f, const char *name) {
    int lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const mb_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

const char *mb_st_meta(const mb_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

int mb_st_read_f32(const mb_st_file *f, const mb_st_tensor *t, int expect_ndim,
                   const int64_t *expect_shape, int check_finite, float *out) {
    if (expect_shape) {
        int ok = t->ndim == expect_ndim;
        for (int i = 0; ok && i < expect_ndim; i++)
            ok = t->shape[i] == expect_shape[i];
        if (!ok) {
            char a[200], b[200], nm[MB_PRINTABLE_BUF];
            mb_st_shape_str(a, sizeof a, t->ndim, t->shape);
            mb_st_shape_str(b, sizeof b, expect_ndim, expect_shape);
            return mb_fail(MB_EFORMAT, "file %s: tensor %s: shape %s, expected %s", f->path,
                           mb_printable(t->name, nm), a, b);
        }
    }
    const uint8_t *src = t->data;
    int64_t n = t->numel;
    if (t->dtype == MB_DT_F32) {
        if (n) memcpy(out, src, (size_t)n * 4);
    } else {
        float (*cv)(uint16_t) = t->dtype == MB_DT_F16 ? mb_f16_to_f32 : mb_bf16_to_f32;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = cv(h);
        }
    }
    if (check_finite) {
        for (int64_t i = 0; i < n; i++) {
            char nm[MB_PRINTABLE_BUF];
            if (!isfinite(out[i]))
                return mb_fail(MB_ENONFINITE,
                               "file %s: tensor %s: non-finite value (%s) at flat index %" PRId64,
                               f->path, mb_printable(t->name, nm), isnan(out[i]) ? "NaN" : "inf",
                               i);
        }
    }
    return MB_OK;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k >= 0 && (size_t)k < sizeof tmp)
        sb_put(b, tmp, (size_t)k);
    else
        b->oom = 1;
}

/* JSON string literal with escapes. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            sb_printf(b, "\\u%04x", *p);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

int mb_st_write(const char *path, const mb_st_wtensor *tensors, int n, const char *const *meta_kv,
                int n_meta, mb_dtype dtype) {
    mb_atomic_file af;
    int rc = mb_st_write_prepared(path, tensors, n, meta_kv, n_meta, dtype, &af);
    return rc ? rc : mb_atomic_publish(&af);
}

int mb_st_write_prepared(const char *path, const mb_st_wtensor *tensors, int n,
                         const char *const *meta_kv, int n_meta, mb_dtype dtype,
                         mb_atomic_file *out) {
    memset(out, 0, sizeof *out);
    if (n < 0 || n_meta < 0) return mb_fail(MB_EINVAL, "file %s: negative tensor count", path);
    int64_t esize = mb_dtype_size(dtype);
    for (int i = 0; i < n; i++) {
        const mb_st_wtensor *t = &tensors[i];
        if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0)
            return mb_fail(MB_EINVAL, "file %s: tensor %d has an invalid name", path, i);
        if (t->ndim < 0 || t->ndim > MB_ST_MAX_DIMS)
            return mb_fail(MB_EINVAL, "file %s: tensor %s: ndim %d out of range", path, t->name,
                           t->ndim);
        for (int j = 0; j < i; j++)
            if (strcmp(tensors[j].name, t->name) == 0)
                return mb_fail(MB_EINVAL, "file %s: tensor %s: given twice", path, t->name);
    }
    sbuf h = {0};
    sb_put(&h, "{", 1);
    if (n_meta > 0) {
        sb_put(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_put(&h, ",", 1);
            sb_json_str(&h, meta_kv[2 * i]);
            sb_put(&h, ":", 1);
            sb_json_str(&h, meta_kv[2 * i + 1]);
        }
        sb_put(&h, "}", 1);
    }
    int64_t off = 0;
    int64_t *numel = calloc((size_t)n + 1, sizeof *numel);
    if (!numel) {
        free(h.s);
        return mb_fail(MB_ENOMEM, "file %s: out of memory", path);
    }
    for (int i = 0; i < n; i++) {
        const mb_st_wtensor *t = &tensors[i];
        int64_t ne = 1;
        for (int j = 0; j < t->ndim; j++) {
            if (t->shape[j] < 0 || __builtin_mul_overflow(ne, t->shape[j], &ne)) {
                free(h.s);
                free(numel);
                return mb_fail(MB_EINVAL, "file %s: tensor %s: invalid shape", path, t->name);
            }
        }
        numel[i] = ne;
        if (ne > 0 && !t->data) {
            free(h.s);
            free(numel);
            return mb_fail(MB_EINVAL, "file %s: tensor %s: NULL data", path, t->name);
        }
        if (n_meta > 0 || i > 0) sb_put(&h, ",", 1);
        sb_json_str(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", mb_dtype_name(dtype));
        for (int j = 0; j < t->ndim; j++)
            sb_printf(&h, "%s%" PRId64, j ? "," : "", t->shape[j]);
        sb_printf(&h, "],\"data_offsets\":[%" PRId64 ",%" PRId64 "]}", off, off + ne * esize);
        off += ne * esize;
    }
    sb_put(&h, "}", 1);
    while (!h.oom && h.n % 8 != 0)
        sb_put(&h, " ", 1);
    if (h.oom) {
        free(h.s);
        free(numel);
        return mb_fail(MB_ENOMEM, "file %s: out of memory building the header", path);
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    mb_atomic_file af;
    int rc = mb_atomic_open(&af, path);
    if (rc == MB_OK) rc = mb_atomic_write(&af, len, 8);
    if (rc == MB_OK) rc = mb_atomic_write(&af, h.s, (int64_t)h.n);
    free(h.s);
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = dtype == MB_DT_F32 ? NULL : malloc(CHUNK * sizeof(uint16_t));
    if (rc == MB_OK && dtype != MB_DT_F32 && !buf)
        rc = mb_fail(MB_ENOMEM, "file %s: out of memory", path);
    for (int i = 0; i < n && rc == MB_OK; i++) {
        const float *src = tensors[i].data;
        if (dtype == MB_DT_F32) {
            rc = mb_atomic_write(&af, src, numel[i] * 4);
            continue;
        }
        uint16_t (*cv)(float) = dtype == MB_DT_F16 ? mb_f32_to_f16 : mb_f32_to_bf16;
        for (int64_t k = 0; k < numel[i] && rc == MB_OK; k += CHUNK) {
            int64_t m = numel[i] - k < CHUNK ? numel[i] - k : CHUNK;
            for (int64_t j = 0; j < m; j++)
                buf[j] = cv(src[k + j]);
            rc = mb_atomic_write(&af, buf, m * 2);
        }
    }
    free(buf);
    free(numel);
    if (rc != MB_OK) {
        if (af.f) mb_atomic_abort(&af);
        return rc;
    }
    rc = mb_atomic_finish(&af);
    if (rc == MB_OK) *out = af;
    return rc;
}
