/* Data pipeline: packing (file / directory tree / JSON lines), the memory-mapped pack,
 * the deterministic validation split, the resumable training sampler and the evaluation
 * iterator. Layouts and behaviours are documented in data.h. */
#include "train/data.h"

#include "io/regular_file.h"
#include "plural.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the pack format is little-endian; this file assumes a little-endian host"
#endif

#define PACK_MAGIC "MBPACK\0\1"
#define PACK_VERSION 2u
#define PACK_HEADER 72
#define SRC_DIR 0x100u

/* ---------------------------------------------------------------- hashing */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Content hash of a pack (data.h): a stream of bytes read as little-endian 8-byte words, each
 * folded in by h = rotl64(h ^ w * K1, 31) * K2; a last partial word is zero-padded; the result
 * is mix64(h ^ stream length). One multiply on the dependency chain per 8 bytes: several GB/s.
 * Streamed (the pack is written in pieces): up to 7 bytes wait in `tail`. */
typedef struct {
    uint64_t h, n;
    uint8_t tail[8];
    unsigned nt;
} chash;
#define CHASH_K1 0x9e3779b97f4a7c15ULL
#define CHASH_K2 0xff51afd7ed558ccdULL

static inline uint64_t chash_word(uint64_t h, uint64_t w) {
    h ^= w * CHASH_K1;
    h = (h << 31) | (h >> 33);
    return h * CHASH_K2;
}

static void chash_init(chash *c) {
    memset(c, 0, sizeof *c);
    c->h = 0x6d62706b68617368ULL; /* "mbpkhash" */
}

static void chash_update(chash *c, const void *p, size_t n) {
    const uint8_t *b = p;
    c->n += n;
    if (c->nt) {
        size_t k = 8 - c->nt < n ? 8 - c->nt : n;
        memcpy(c->tail + c->nt, b, k);
        c->nt += (unsigned)k;
        b += k;
        n -= k;
        if (c->nt < 8) return;
        uint64_t w;
        memcpy(&w, c->tail, 8);
        c->h = chash_word(c->h, w);
        c->nt = 0;
    }
    uint64_t h = c->h;
    for (; n >= 8; b += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = chash_word(h, w);
    }
    c->h = h;
    memcpy(c->tail, b, n);
    c->nt = (unsigned)n;
}

static uint64_t chash_final(const chash *c) {
    uint64_t h = c->h;
    if (c->nt) {
        uint64_t w = 0;
        memcpy(&w, c->tail, c->nt);
        h = chash_word(h, w);
    }
    return mix64(h ^ c->n);
}

int mb_data_format_parse(const char *name, mb_data_format *out) {
    if (!name || !out) return mb_fail(MB_EINVAL, "data format: NULL argument");
    if (!strcmp(name, "auto"))
        *out = MB_DATA_AUTO;
    else if (!strcmp(name, "bytes") || !strcmp(name, "raw") || !strcmp(name, "text"))
        *out = MB_DATA_BYTES;
    else if (!strcmp(name, "jsonl"))
        *out = MB_DATA_JSONL;
    else
        return mb_fail(MB_EINVAL, "data format '%s': expected one of auto, bytes, jsonl", name);
    return 0;
}

int mb_data_pack_path(const char *input, const char *out_dir, char *buf, int64_t n) {
    if (!input || !buf || n <= 0) return mb_fail(MB_EINVAL, "pack path: NULL argument");
    int w;
    if (out_dir) {
        w = snprintf(buf, (size_t)n, "%s/data.pack", out_dir);
    } else {
        size_t len = strlen(input);
        while (len > 1 && input[len - 1] == '/')
            len--;
        w = snprintf(buf, (size_t)n, "%.*s.mbpack", (int)len, input);
    }
    if (w < 0 || w >= n) return mb_fail(MB_EINVAL, "pack path for '%s': too long", input);
    return 0;
}

/* ---------------------------------------------------------------- input listing */
typedef struct {
    char *path; /* full path (input + relative) */
    const char *rel;
    int64_t size;
    int64_t mtime_s, mtime_ns;
    int jsonl; /* read as JSON lines (else one raw document) */
} in_file;

typedef struct {
    in_file *f;
    int64_t n, cap;
    dev_t *vdev; /* visited directories */
    ino_t *vino;
    int64_t nv, capv;
    int skip_valid; /* pack file to skip */
    dev_t skip_dev;
    ino_t skip_ino;
    /* directories not walked: the pack's (a run's --out inside --data) and the caller's extra
     * one (eval: the model's directory) */
    int n_skipdir;
    dev_t skipdir_dev[2];
    ino_t skipdir_ino[2];
    int64_t skipped_dirs;    /* how many of them the walk met */
    int64_t skipped_special; /* entries neither file nor directory: dangling links, FIFOs... */
    size_t root_len;
} in_list;

static void in_list_free(in_list *l) {
    for (int64_t i = 0; i < l->n; i++)
        free(l->f[i].path);
    free(l->f);
    free(l->vdev);
    free(l->vino);
    memset(l, 0, sizeof *l);
}

static int in_list_add(in_list *l, const char *path, const struct stat *st) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        in_file *f = realloc(l->f, (size_t)cap * sizeof *f);
        if (!f) return mb_fail(MB_ENOMEM, "listing input files: out of memory");
        l->f = f;
        l->cap = cap;
    }
    in_file *e = &l->f[l->n];
    e->path = strdup(path);
    if (!e->path) return mb_fail(MB_ENOMEM, "listing input files: out of memory");
    e->rel = e->path + l->root_len;
    while (*e->rel == '/')
        e->rel++;
    e->size = (int64_t)st->st_size;
    e->mtime_s = (int64_t)st->st_mtim.tv_sec;
    e->mtime_ns = (int64_t)st->st_mtim.tv_nsec;
    e->jsonl = 0;
    l->n++;
    return 0;
}

static int visited_add(in_list *l, const struct stat *st) {
    for (int64_t i = 0; i < l->nv; i++)
        if (l->vdev[i] == st->st_dev && l->vino[i] == st->st_ino) return 1;
    if (l->nv == l->capv) {
        int64_t cap = l->capv ? 2 * l->capv : 16;
        dev_t *d = realloc(l->vdev, (size_t)cap * sizeof *d);
        if (!d) return mb_fail(MB_ENOMEM, "listing input files: out of memory");
        l->vdev = d;
        ino_t *n = realloc(l->vino, (size_t)cap * sizeof *n);
        if (!n) return mb_fail(MB_ENOMEM, "listing input files: out of memory");
        l->vino = n;
        l->capv = cap;
    }
    l->vdev[l->nv] = st->st_dev;
    l->vino[l->nv] = st->st_ino;
    l->nv++;
    return 0;
}

static int cmp_dirent(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* A training run's output directory (mambabyte train --out): its data pack or train state. */
static int is_run_dir(const char *dir) {
    static const char *const marks[] = {"data.pack", "train_state.safetensors"};
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++) {
        char p[4200];
        struct stat st;
        if (snprintf(p, sizeof p, "%s/%s", dir, marks[i]) < (int)sizeof p && stat(p, &st) == 0 &&
            S_ISREG(st.st_mode))
            return 1;
    }
    return 0;
}

/* Depth-first in bytewise name order, so which path reaches a directory first (when links
 * lead to it twice) does not depend on readdir order. */
static int walk_dir(in_list *l, const char *dir) {
    struct dirent **ents = NULL;
    int ne = scandir(dir, &ents, NULL, cmp_dirent);
    if (ne < 0) return mb_fail(MB_EIO, "data directory %s: %s", dir, strerror(errno));
    int rc = 0;
    size_t dlen = strlen(dir);
    char *path = NULL;
    for (int k = 0; k < ne && !rc; k++) {
        const char *name = ents[k]->d_name;
        if (name[0] == '.') continue; /* hidden, ".", ".." */
        size_t n = dlen + 1 + strlen(name) + 1;
        free(path);
        path = malloc(n);
        if (!path) {
            rc = mb_fail(MB_ENOMEM, "listing %s: out of memory", dir);
            break;
        }
        snprintf(path, n, "%s/%s", dir, name);
        struct stat st;
        if (stat(path, &st) != 0) {
            struct stat lst;
            if (errno == ENOENT && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
                l->skipped_special++; /* dangling symbolic link */
                continue;
            }
            rc = mb_fail(MB_EIO, "data file %s: %s", path, strerror(errno));
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            int skip = 0;
            for (int k = 0; k < l->n_skipdir; k++)
                skip |= st.st_dev == l->skipdir_dev[k] && st.st_ino == l->skipdir_ino[k];
            if (skip) { /* a run's own output directory (checkpoints, metrics), or the model's */
                l->skipped_dirs++;
                continue;
            }
            if (is_run_dir(path)) { /* another run's output: checkpoints and a copy of its data */
                fprintf(stderr, "note: %s skipped: a mambabyte run directory (%s)\n", path,
                        "it holds data.pack or train_state.safetensors");
                l->skipped_dirs++;
                continue;
            }
            int v = visited_add(l, &st);
            if (v < 0)
                rc = v;
            else if (v == 0)
                rc = walk_dir(l, path); /* v == 1: already visited (link loop) */
        } else if (S_ISREG(st.st_mode)) {
            if (l->skip_valid && st.st_dev == l->skip_dev && st.st_ino == l->skip_ino) continue;
            rc = in_list_add(l, path, &st);
        } else {
            l->skipped_special++; /* FIFO, socket, device: not a document */
        }
    }
    free(path);
    for (int k = 0; k < ne; k++)
        free(ents[k]);
    free(ents);
    return rc;
}

static int cmp_rel(const void *a, const void *b) {
    return strcmp(((const in_file *)a)->rel, ((const in_file *)b)->rel);
}

/* The "auto" rule, the same for a single input file and for a file of a directory tree: a
 * path ending in ".jsonl" is JSON lines. */
static int has_jsonl_ext(const char *path) {
    size_t n = strlen(path);
    return n >= 6 && !strcmp(path + n - 6, ".jsonl");
}

/* List the input's files and compute its fingerprint. *is_dir set for a directory input.
 * Every file's format is resolved (in_file.jsonl); the input's format (BYTES/JSONL, or AUTO
 * for a directory mixing both in auto mode) is returned in *fmt_out. */
static void skip_dir_add(in_list *l, const char *dir) {
    struct stat dst;
    if (l->n_skipdir < 2 && stat(dir, &dst) == 0 && S_ISDIR(dst.st_mode)) {
        l->skipdir_dev[l->n_skipdir] = dst.st_dev;
        l->skipdir_ino[l->n_skipdir++] = dst.st_ino;
    }
}

static int list_input(const char *input, mb_data_format fmt, const char *pack_path,
                      const char *skip_dir, in_list *l, int *is_dir, mb_data_format *fmt_out,
                      uint64_t *fp) {
    memset(l, 0, sizeof *l);
    struct stat st;
    if (stat(input, &st) != 0) return mb_fail(MB_EIO, "data input %s: %s", input, strerror(errno));
    struct stat pst;
    if (pack_path && stat(pack_path, &pst) == 0) {
        l->skip_valid = 1;
        l->skip_dev = pst.st_dev;
        l->skip_ino = pst.st_ino;
    }
    if (pack_path) { /* the directory the pack is written to, whether or not it exists yet */
        char dir[4096];
        const char *slash = strrchr(pack_path, '/');
        const size_t n = slash ? (size_t)(slash - pack_path) : 0;
        if (n > 0 && n < sizeof dir) {
            memcpy(dir, pack_path, n);
            dir[n] = 0;
            skip_dir_add(l, dir);
        }
    }
    if (skip_dir) skip_dir_add(l, skip_dir);
    int rc;
    if (S_ISDIR(st.st_mode)) {
        *is_dir = 1;
        l->root_len = strlen(input);
        rc = visited_add(l, &st);
        if (rc < 0) return rc;
        rc = walk_dir(l, input);
        if (rc) {
            in_list_free(l);
            return rc;
        }
        if (l->skipped_special)
            fprintf(stderr,
                    "note: data directory %s: %lld entr%s skipped that %s not a regular file or "
                    "directory (dangling link, FIFO, socket or device)\n",
                    input, (long long)l->skipped_special, l->skipped_special == 1 ? "y" : "ies",
                    l->skipped_special == 1 ? "is" : "are");
        if (l->n == 0) {
            const int64_t sk = l->skipped_dirs;
            in_list_free(l);
            if (sk > 0) /* (the walk has noted them, or they are the run's own / the model's) */
                return mb_fail(MB_EINVAL,
                               "data directory %s has no documents: no regular, non-hidden "
                               "files besides %lld director%s skipped as mambabyte run or "
                               "model director%s",
                               input, (long long)sk, sk == 1 ? "y" : "ies", sk == 1 ? "y" : "ies");
            return mb_fail(MB_EINVAL, "data directory %s is empty (no regular, non-hidden files)",
                           input);
        }
        qsort(l->f, (size_t)l->n, sizeof *l->f, cmp_rel);
    } else if (S_ISREG(st.st_mode)) {
        *is_dir = 0;
        l->root_len = strlen(input);
        rc = in_list_add(l, input, &st);
        if (rc) {
            in_list_free(l);
            return rc;
        }
    } else {
        return mb_fail(MB_EINVAL, "data input %s: not a regular file or directory", input);
    }
    int64_t n_jsonl = 0;
    for (int64_t i = 0; i < l->n; i++) {
        in_file *f = &l->f[i];
        f->jsonl = fmt == MB_DATA_JSONL || (fmt == MB_DATA_AUTO && has_jsonl_ext(f->path));
        n_jsonl += f->jsonl;
    }
    /* AUTO (0) only for a mix: the source field and the fingerprint then differ from a pack
     * that read the same tree all as bytes, so such a pack is rebuilt */
    *fmt_out = n_jsonl == 0 ? MB_DATA_BYTES : n_jsonl == l->n ? MB_DATA_JSONL : MB_DATA_AUTO;
    uint64_t h = FNV_INIT;
    char *real = realpath(input, NULL);
    if (real) {
        h = fnv1a(h, real, strlen(real) + 1);
        free(real);
    }
    uint32_t src = (uint32_t)*fmt_out | (*is_dir ? SRC_DIR : 0);
    h = fnv1a(h, &src, sizeof src);
    int64_t cnt = l->n;
    h = fnv1a(h, &cnt, sizeof cnt);
    for (int64_t i = 0; i < l->n; i++) {
        const in_file *f = &l->f[i];
        h = fnv1a(h, f->rel, strlen(f->rel) + 1);
        h = fnv1a(h, &f->size, 8);
        h = fnv1a(h, &f->mtime_s, 8);
        h = fnv1a(h, &f->mtime_ns, 8);
    }
    *fp = mix64(h);
    return 0;
}

/* list_input, and an error naming the file where a single input file is empty */
static int list_input_nonempty(const char *input, mb_data_format fmt, const char *pack_path,
                               const char *skip_dir, in_list *l, int *is_dir,
                               mb_data_format *fmt_out, uint64_t *fp) {
    int rc = list_input(input, fmt, pack_path, skip_dir, l, is_dir, fmt_out, fp);
    if (rc) return rc;
    if (!*is_dir && l->f[0].size == 0) {
        in_list_free(l);
        return mb_fail(MB_EINVAL, "data file %s is empty", input);
    }
    return MB_OK;
}

/* ---------------------------------------------------------------- pack writer */
typedef struct {
    FILE *f;
    const char *tmp;
    int64_t *index; /* (cap, 2) */
    int64_t n, cap;
    int64_t total;
    chash hash; /* of the document bytes so far */
} pack_writer;

static int pw_doc(pack_writer *w, int64_t n) {
    if (w->n == w->cap) {
        int64_t cap = w->cap ? 2 * w->cap : 256;
        int64_t *ix = realloc(w->index, (size_t)cap * 2 * sizeof *ix);
        if (!ix) return mb_fail(MB_ENOMEM, "pack %s: out of memory for the index", w->tmp);
        w->index = ix;
        w->cap = cap;
    }
    w->index[2 * w->n] = w->total;
    w->index[2 * w->n + 1] = n;
    w->n++;
    return 0;
}

static int pw_bytes(pack_writer *w, const void *b, int64_t n) {
    if (n > 0 && fwrite(b, 1, (size_t)n, w->f) != (size_t)n)
        return mb_fail(MB_EIO, "pack %s: write failed: %s", w->tmp, strerror(errno));
    if (n > 0) chash_update(&w->hash, b, (size_t)n);
    w->total += n;
    return 0;
}

/* Decode the JSON string at p (pointing at '"'). Writes the bytes to out (if non-NULL) and the
 * length to *n. Returns the pointer after the closing quote, or NULL if malformed. */
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
static int hex4(const char *p, const char *end, uint32_t *v) {
    if (end - p < 4) return -1;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        r = r << 4 | (uint32_t)h;
    }
    *v = r;
    return 0;
}
static const char *json_string(const char *p, const char *end, uint8_t *out, int64_t *n) {
    int64_t k = 0;
    if (p >= end || *p != '"') return NULL;
    p++;
    while (p < end && *p != '"') {
        if (*p != '\\') {
            if (out) out[k] = (uint8_t)*p;
            k++;
            p++;
            continue;
        }
        if (end - p < 2) return NULL;
        char c = p[1];
        p += 2;
        uint8_t one = 0;
        switch (c) {
        case '"':
            one = '"';
            break;
        case '\\':
            one = '\\';
            break;
        case '/':
            one = '/';
            break;
        case 'b':
            one = '\b';
            break;
        case 'f':
            one = '\f';
            break;
        case 'n':
            one = '\n';
            break;
        case 'r':
            one = '\r';
            break;
        case 't':
            one = '\t';
            break;
        case 'u': {
            uint32_t cp;
            if (hex4(p, end, &cp)) return NULL;
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return NULL; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return NULL;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            uint8_t u[4];
            int m;
            if (cp < 0x80) {
                u[0] = (uint8_t)cp;
                m = 1;
            } else if (cp < 0x800) {
                u[0] = (uint8_t)(0xC0 | cp >> 6);
                u[1] = (uint8_t)(0x80 | (cp & 0x3F));
                m = 2;
            } else if (cp < 0x10000) {
                u[0] = (uint8_t)(0xE0 | cp >> 12);
                u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (uint8_t)(0x80 | (cp & 0x3F));
                m = 3;
            } else {
                u[0] = (uint8_t)(0xF0 | cp >> 18);
                u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                u[3] = (uint8_t)(0x80 | (cp & 0x3F));
                m = 4;
            }
            if (out) memcpy(out + k, u, (size_t)m);
            k += m;
            continue;
        }
        default:
            return NULL;
        }
        if (out) out[k] = one;
        k++;
    }
    if (p >= end) return NULL;
    *n = k;
    return p + 1;
}

static const char *json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Skip one JSON value (already validated by cJSON). */
static const char *json_skip(const char *p, const char *end) {
    int64_t n;
    if (p >= end) return NULL;
    if (*p == '"') return json_string(p, end, NULL, &n);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = json_string(p, end, NULL, &n);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                depth--;
                if (depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\r' && *p != '\n')
        p++;
    return p;
}

/* Find the top-level key exactly "text" of the object in [p, end). Returns a pointer to its
 * value, or NULL when absent (*dup = 0) or when the key appears twice (*dup = 1: which one is
 * meant is ambiguous; Python's json takes the last, a streaming reader the first). */
static const char *json_find_text(const char *p, const char *end, int *dup) {
    const char *found = NULL;
    *dup = 0;
    p = json_ws(p, end);
    if (p >= end || *p != '{') return NULL;
    p = json_ws(p + 1, end);
    while (p < end && *p == '"') {
        int64_t klen;
        const char *q = json_string(p, end, NULL, &klen);
        if (!q) return found;
        int is_text = 0;
        if (klen == 4) {
            uint8_t key[4];
            json_string(p, end, key, &klen);
            is_text = !memcmp(key, "text", 4);
        }
        p = json_ws(q, end);
        if (p >= end || *p != ':') return found;
        p = json_ws(p + 1, end);
        if (is_text) {
            if (found) {
                *dup = 1;
                return NULL;
            }
            found = p;
        }
        p = json_skip(p, end);
        if (!p) return found;
        p = json_ws(p, end);
        if (p < end && *p == ',') p = json_ws(p + 1, end);
    }
    return found;
}

static int is_blank(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r') return 0;
    return 1;
}

/* Map a whole file read-only (size > 0). */
static int map_file(const char *path, int64_t expect, const uint8_t **map, int64_t *len) {
    int fd = -1;
    int64_t size = 0;
    int orc = mb_open_regular(path, "data file", &fd, &size);
    if (orc) return orc;
    if (size != expect) {
        close(fd);
        return mb_fail(MB_EIO, "data file %s changed while packing (size %lld, listed %lld)", path,
                       (long long)size, (long long)expect);
    }
    *len = expect;
    *map = NULL;
    if (expect == 0) {
        close(fd);
        return 0;
    }
    void *m = mmap(NULL, (size_t)expect, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return mb_fail(MB_EIO, "data file %s: mmap: %s", path, strerror(e));
    *map = m;
    return 0;
}

/* A lone UTF-16 surrogate escape (\uD800-\uDFFF not in a high-low pair), which Python's json
 * writes for text that held one and cJSON refuses, becomes \uFFFD (the replacement character,
 * what a UTF-8 encoder makes of it) in place: same length. Returns how many were replaced. */
static int64_t fix_lone_surrogates(char *s, int64_t n) {
    int64_t fixed = 0;
    for (int64_t i = 0; i < n;) {
        if (s[i] != '\\' || i + 1 >= n) {
            i++;
            continue;
        }
        uint32_t cp, lo;
        if (s[i + 1] != 'u' || hex4(s + i + 2, s + n, &cp)) {
            i += 2; /* another escape (or a bad one, left to the parser) */
            continue;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 12 <= n && s[i + 6] == '\\' && s[i + 7] == 'u' &&
            !hex4(s + i + 8, s + n, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
            i += 12; /* a pair */
            continue;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) {
            memcpy(s + i + 2, "fffd", 4);
            fixed++;
        }
        i += 6;
    }
    return fixed;
}

static int pack_jsonl(pack_writer *w, const in_file *f) {
    const uint8_t *map;
    int64_t len;
    int rc = map_file(f->path, f->size, &map, &len);
    if (rc) return rc;
    const char *s = (const char *)map, *end = s + len;
    if (len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3; /* UTF-8 byte order mark */
    int64_t cap = 0;
    char *line = NULL;
    uint8_t *dec = NULL;
    int64_t lineno = 0, n_fixed = 0;
    const char *p = s;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        int64_t n = le - p;
        if (!is_blank(p, le)) {
            if (n + 1 > cap) {
                cap = n + 1 > 2 * cap ? n + 1 : 2 * cap;
                free(line);
                free(dec);
                line = malloc((size_t)cap);
                dec = malloc((size_t)cap);
                if (!line || !dec) {
                    rc = mb_fail(MB_ENOMEM, "%s: line %lld: out of memory", f->path,
                                 (long long)lineno);
                    break;
                }
            }
            memcpy(line, p, (size_t)n);
            line[n] = 0;
            const int64_t fixed = fix_lone_surrogates(line, n);
            if (fixed && !n_fixed++)
                fprintf(stderr,
                        "note: %s: line %lld: a lone UTF-16 surrogate escape, read as U+FFFD "
                        "(also any later ones in this file)\n",
                        f->path, (long long)lineno);
            const char *pe = NULL;
            cJSON *j = cJSON_ParseWithLengthOpts(line, (size_t)n, &pe, 0);
            if (!j) {
                long long col = pe ? (long long)(pe - line) + 1 : 0;
                rc = mb_fail(MB_EFORMAT, "%s: line %lld: invalid JSON (near column %lld)", f->path,
                             (long long)lineno, col);
                break;
            }
            int is_obj = cJSON_IsObject(j);
            cJSON_Delete(j);
            if (pe && !is_blank(pe, line + n)) {
                rc = mb_fail(MB_EFORMAT, "%s: line %lld: trailing characters after JSON value",
                             f->path, (long long)lineno);
                break;
            }
            if (!is_obj) {
                rc = mb_fail(MB_EFORMAT, "%s: line %lld: not a JSON object", f->path,
                             (long long)lineno);
                break;
            }
            int dup;
            const char *v = json_find_text(line, line + n, &dup);
            if (!v) {
                rc = mb_fail(MB_EFORMAT,
                             dup ? "%s: line %lld: the \"text\" field appears twice (which one "
                                   "is meant is ambiguous)"
                                 : "%s: line %lld: no \"text\" field",
                             f->path, (long long)lineno);
                break;
            }
            int64_t dn;
            if (*v != '"' || !json_string(v, line + n, dec, &dn)) {
                rc = mb_fail(MB_EFORMAT, "%s: line %lld: \"text\" is not a string", f->path,
                             (long long)lineno);
                break;
            }
            if ((rc = pw_doc(w, dn)) || (rc = pw_bytes(w, dec, dn))) break;
        }
        p = nl ? nl + 1 : end;
    }
    free(line);
    free(dec);
    munmap((void *)map, (size_t)len);
    return rc;
}

static int pack_raw(pack_writer *w, const in_file *f) {
    int fd = -1;
    int rc = mb_open_regular(f->path, "data file", &fd, NULL);
    if (rc) return rc;
    rc = pw_doc(w, 0);
    if (rc) {
        close(fd);
        return rc;
    }
    enum { CH = 1 << 20 };
    uint8_t *buf = malloc(CH);
    if (!buf) {
        close(fd);
        return mb_fail(MB_ENOMEM, "data file %s: out of memory", f->path);
    }
    int64_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf, CH);
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = mb_fail(MB_EIO, "data file %s: read: %s", f->path, strerror(errno));
            break;
        }
        if (r == 0) break;
        if ((rc = pw_bytes(w, buf, r))) break;
        got += r;
    }
    free(buf);
    close(fd);
    if (!rc && got != f->size)
        rc = mb_fail(MB_EIO, "data file %s changed while packing (read %lld byte%s, listed %lld)",
                     f->path, (long long)got, mb_plural(got), (long long)f->size);
    if (!rc) w->index[2 * (w->n - 1) + 1] = got;
    return rc;
}

static void put_header(uint8_t *h, uint32_t src, uint64_t fp, int64_t n_docs, int64_t total,
                       uint64_t content) {
    memset(h, 0, PACK_HEADER);
    memcpy(h, PACK_MAGIC, 8);
    uint32_t ver = PACK_VERSION;
    memcpy(h + 8, &ver, 4);
    memcpy(h + 12, &src, 4);
    memcpy(h + 16, &fp, 8);
    memcpy(h + 24, &n_docs, 8);
    memcpy(h + 32, &total, 8);
    int64_t io = PACK_HEADER, dof = PACK_HEADER + 16 * n_docs;
    memcpy(h + 40, &io, 8);
    memcpy(h + 48, &dof, 8);
    memcpy(h + 56, &content, 8);
    uint64_t hh = fnv1a(FNV_INIT, h, 64);
    memcpy(h + 64, &hh, 8);
}

static int build_listed(const char *input, const in_list *l, int is_dir, mb_data_format fmt,
                        uint64_t fp, const char *pack_path) {
    /* hidden temporary beside the pack: same file system for rename, skipped by listings */
    const char *slash = strrchr(pack_path, '/');
    size_t dlen = slash ? (size_t)(slash - pack_path) + 1 : 0;
    const char *base = slash ? slash + 1 : pack_path;
    size_t tn = strlen(pack_path) + 48;
    char *tmp = malloc(tn);
    if (!tmp) return mb_fail(MB_ENOMEM, "pack %s: out of memory", pack_path);
    snprintf(tmp, tn, "%.*s.%s.tmp.%ld", (int)dlen, pack_path, base, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = mb_fail(MB_EIO, "pack %s: cannot create %s: %s", pack_path, tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    pack_writer w = {0};
    w.tmp = tmp;
    chash_init(&w.hash);
    w.f = fdopen(fd, "wb");
    int rc = 0;
    if (!w.f) {
        close(fd);
        rc = mb_fail(MB_EIO, "pack %s: fdopen: %s", tmp, strerror(errno));
        goto fail;
    }
    /* The document count fixes where the data start (after the index): a raw file is one
     * document; JSON lines files are pre-counted (non-blank lines). Header and index are
     * written last, once the index is known. */
    int64_t n_docs = 0;
    for (int64_t i = 0; i < l->n; i++) {
        if (!l->f[i].jsonl) {
            n_docs++;
        } else {
            const uint8_t *map;
            int64_t len;
            rc = map_file(l->f[i].path, l->f[i].size, &map, &len);
            if (rc) goto fail;
            const char *p = (const char *)map, *end = p + len;
            if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3;
            while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *le = nl ? nl : end;
                if (!is_blank(p, le)) n_docs++;
                p = nl ? nl + 1 : end;
            }
            if (map) munmap((void *)map, (size_t)len);
        }
    }
    if (n_docs == 0) {
        rc = mb_fail(MB_EINVAL, "data input %s is empty (no documents)", input);
        goto fail;
    }
    int64_t data_off = PACK_HEADER + 16 * n_docs;
    if (fseeko(w.f, (off_t)data_off, SEEK_SET) != 0) {
        rc = mb_fail(MB_EIO, "pack %s: seek: %s", tmp, strerror(errno));
        goto fail;
    }
    for (int64_t i = 0; i < l->n; i++) {
        rc = l->f[i].jsonl ? pack_jsonl(&w, &l->f[i]) : pack_raw(&w, &l->f[i]);
        if (rc) goto fail;
    }
    if (w.n != n_docs) {
        rc = mb_fail(MB_EIO, "data input %s changed while packing (%lld document%s, counted %lld)",
                     input, (long long)w.n, mb_plural(w.n), (long long)n_docs);
        goto fail;
    }
    if (w.total == 0) {
        rc = mb_fail(MB_EINVAL, "data input %s is empty (%lld document%s, 0 bytes)", input,
                     (long long)n_docs, mb_plural(n_docs));
        goto fail;
    }
    uint8_t hdr[PACK_HEADER];
    chash_update(&w.hash, w.index, (size_t)n_docs * 16); /* then the index: data || index */
    put_header(hdr, (uint32_t)fmt | (is_dir ? SRC_DIR : 0), fp, n_docs, w.total,
               chash_final(&w.hash));
    if (fseeko(w.f, 0, SEEK_SET) != 0 || fwrite(hdr, 1, PACK_HEADER, w.f) != PACK_HEADER ||
        fwrite(w.index, 16, (size_t)n_docs, w.f) != (size_t)n_docs || fflush(w.f) != 0 ||
        fsync(fileno(w.f)) != 0) {
        rc = mb_fail(MB_EIO, "pack %s: write failed: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fclose(w.f) != 0) {
        w.f = NULL;
        rc = mb_fail(MB_EIO, "pack %s: close failed: %s", tmp, strerror(errno));
        goto fail;
    }
    w.f = NULL;
    if (rename(tmp, pack_path) != 0) {
        rc = mb_fail(MB_EIO, "pack %s: rename from %s: %s", pack_path, tmp, strerror(errno));
        goto fail;
    }
    {
        char *dir = strndup(pack_path, dlen ? dlen : 0);
        int dfd = open(dlen ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd); /* best effort: some file systems refuse directory fsync */
            close(dfd);
        }
        free(dir);
    }
    free(w.index);
    free(tmp);
    return 0;
fail:
    if (w.f) fclose(w.f);
    unlink(tmp);
    free(w.index);
    free(tmp);
    return rc;
}

int mb_pack_build(const char *input, mb_data_format fmt, const char *pack_path) {
    return mb_pack_build_skipping(input, fmt, pack_path, NULL, NULL);
}

int mb_pack_build_skipping(const char *input, mb_data_format fmt, const char *pack_path,
                           const char *skip_dir, int *skipped) {
    if (skipped) *skipped = 0;
    if (!input || !pack_path) return mb_fail(MB_EINVAL, "mb_pack_build: NULL path");
    in_list l;
    int is_dir;
    mb_data_format rf;
    uint64_t fp;
    int rc = list_input_nonempty(input, fmt, pack_path, skip_dir, &l, &is_dir, &rf, &fp);
    if (rc) return rc;
    if (skipped) *skipped = l.skipped_dirs > 0;
    rc = build_listed(input, &l, is_dir, rf, fp, pack_path);
    in_list_free(&l);
    return rc;
}

/* ---------------------------------------------------------------- pack reader */
/* The documents and index against the header's content hash (one pass over the pack). */
static int pack_verify_content(const mb_pack *p) {
    chash c;
    chash_init(&c);
    chash_update(&c, p->bytes, (size_t)p->total_bytes);
    chash_update(&c, p->index, (size_t)p->n_docs * 16);
    uint64_t got = chash_final(&c);
    if (got != p->content_hash)
        return mb_fail(MB_EFORMAT,
                       "pack %s: content hash mismatch (documents damaged: %016llx, header "
                       "says %016llx)",
                       p->path, (unsigned long long)got, (unsigned long long)p->content_hash);
    return 0;
}

/* *damaged (may be NULL) is set to 1 when the file is a mambabyte pack of this version whose
 * header, index or (with verify) documents fail their checks (truncated, hash mismatch), else
 * 0. Without verify the content hash is left to pack_verify_content. */
static int pack_open(mb_pack *p, const char *pack_path, int *damaged, int verify) {
    if (damaged) *damaged = 0;
    memset(p, 0, sizeof *p);
    if (!pack_path) return mb_fail(MB_EINVAL, "mb_pack_open: NULL path");
    snprintf(p->path, sizeof p->path, "%s", pack_path);
    int fd = -1;
    int64_t size = 0;
    int orc = mb_open_regular(pack_path, "pack", &fd, &size);
    if (orc) return orc;
    if (size < PACK_HEADER) {
        close(fd);
        if (damaged) *damaged = 1; /* (packs are written whole: never this short) */
        return mb_fail(MB_EFORMAT, "pack %s: truncated (%lld byte%s, header needs %d)", pack_path,
                       (long long)size, mb_plural(size), PACK_HEADER);
    }
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return mb_fail(MB_EIO, "pack %s: mmap: %s", pack_path, strerror(e));
    p->map = m;
    p->map_len = size;
    const uint8_t *h = m;
    int rc = 0;
    uint32_t ver;
    int64_t io, dof;
    uint64_t hh;
    memcpy(&ver, h + 8, 4);
    memcpy(&p->source, h + 12, 4);
    memcpy(&p->fingerprint, h + 16, 8);
    memcpy(&p->n_docs, h + 24, 8);
    memcpy(&p->total_bytes, h + 32, 8);
    memcpy(&io, h + 40, 8);
    memcpy(&dof, h + 48, 8);
    memcpy(&p->content_hash, h + 56, 8);
    memcpy(&hh, h + 64, 8);
    if (memcmp(h, PACK_MAGIC, 8) != 0) {
        rc = mb_fail(MB_EFORMAT, "pack %s: bad magic (not a mambabyte pack)", pack_path);
    } else if (ver != PACK_VERSION) {
        rc = mb_fail(MB_EFORMAT, "pack %s: version %u, expected %u", pack_path, ver, PACK_VERSION);
    } else if (hh != fnv1a(FNV_INIT, h, 64)) {
        rc = mb_fail(MB_EFORMAT, "pack %s: header hash mismatch (corrupt header)", pack_path);
    } else if (p->n_docs < 0 || p->n_docs > (INT64_MAX - PACK_HEADER) / 16 || p->total_bytes < 0 ||
               io != PACK_HEADER || dof != PACK_HEADER + 16 * p->n_docs ||
               p->total_bytes > INT64_MAX - dof) {
        rc = mb_fail(MB_EFORMAT,
                     "pack %s: inconsistent header (n_docs %lld, total_bytes %lld, index %lld, "
                     "data %lld)",
                     pack_path, (long long)p->n_docs, (long long)p->total_bytes, (long long)io,
                     (long long)dof);
    } else if (size < dof + p->total_bytes) {
        rc = mb_fail(MB_EFORMAT, "pack %s: truncated (%lld bytes, expected %lld)", pack_path,
                     (long long)size, (long long)(dof + p->total_bytes));
    } else if (size > dof + p->total_bytes) {
        rc = mb_fail(MB_EFORMAT, "pack %s: %lld trailing byte%s after the data", pack_path,
                     (long long)(size - dof - p->total_bytes),
                     mb_plural(size - dof - p->total_bytes));
    }
    if (!rc) {
        p->index = (const int64_t *)(h + io);
        p->bytes = h + dof;
        int64_t run = 0;
        for (int64_t i = 0; i < p->n_docs; i++) {
            int64_t off = p->index[2 * i], len = p->index[2 * i + 1];
            if (off != run || len < 0 || len > p->total_bytes - off) {
                rc = mb_fail(MB_EFORMAT,
                             "pack %s: index entry %lld out of range (offset %lld, length %lld, "
                             "expected offset %lld, data %lld byte%s)",
                             pack_path, (long long)i, (long long)off, (long long)len,
                             (long long)run, (long long)p->total_bytes, mb_plural(p->total_bytes));
                break;
            }
            run += len;
        }
        if (!rc && run != p->total_bytes)
            rc = mb_fail(MB_EFORMAT, "pack %s: documents cover %lld of %lld data byte%s", pack_path,
                         (long long)run, (long long)p->total_bytes, mb_plural(p->total_bytes));
    }
    if (!rc && verify) rc = pack_verify_content(p);
    if (rc) {
        if (damaged) *damaged = memcmp(h, PACK_MAGIC, 8) == 0 && ver == PACK_VERSION;
        munmap(p->map, (size_t)p->map_len);
        memset(p, 0, sizeof *p);
    }
    return rc;
}

int mb_pack_open(mb_pack *p, const char *pack_path) {
    return pack_open(p, pack_path, NULL, 1);
}

void mb_pack_close(mb_pack *p) {
    if (p->map) munmap(p->map, (size_t)p->map_len);
    memset(p, 0, sizeof *p);
}

const uint8_t *mb_pack_doc(const mb_pack *p, int64_t i, int64_t *len) {
    *len = p->index[2 * i + 1];
    return p->bytes + p->index[2 * i];
}

int mb_pack_load(mb_pack *p, const char *input, mb_data_format fmt, const char *pack_path,
                 int *rebuilt) {
    if (rebuilt) *rebuilt = 0;
    if (!p || !input || !pack_path) return mb_fail(MB_EINVAL, "mb_pack_load: NULL argument");
    in_list l;
    int is_dir;
    mb_data_format rf;
    uint64_t fp;
    int rc = list_input_nonempty(input, fmt, pack_path, NULL, &l, &is_dir, &rf, &fp);
    if (rc) return rc;
    uint32_t src = (uint32_t)rf | (is_dir ? SRC_DIR : 0);
    int damaged = 0;
    if (pack_open(p, pack_path, &damaged, 0) == 0) { /* the content hash once it is the one */
        if (p->fingerprint == fp && p->source == src) {
            if (pack_verify_content(p) == 0) {
                in_list_free(&l);
                return 0;
            }
            damaged = 1;
        }
        mb_pack_close(p);
    }
    if (damaged) {
        fprintf(stderr, "note: the cached pack is damaged (%s); rebuilding it from %s\n",
                mb_last_error(), input);
    }
    rc = build_listed(input, &l, is_dir, rf, fp, pack_path);
    in_list_free(&l);
    if (rc) return rc;
    if (rebuilt) *rebuilt = 1;
    return mb_pack_open(p, pack_path);
}

/* ---------------------------------------------------------------- split */
static uint64_t doc_hash(const uint8_t *b, int64_t len) {
    uint64_t h = fnv1a(FNV_INIT, &len, 8);
    h = fnv1a(h, b, (size_t)(len < 1024 ? len : 1024));
    return mix64(h);
}

static uint64_t content_hash(const uint8_t *b, int64_t len) {
    chash c;
    chash_init(&c);
    chash_update(&c, b, (size_t)len);
    return chash_final(&c);
}

/* doc_hash keys the split by a document's length and first 1024 bytes (cheap, and the split of
 * a corpus stays as it was); documents that share that key but differ further on (fixed-size
 * records with a common header, JSON lines alike up to their last field) are told apart by
 * their whole content: each one's key becomes mix64(key ^ content hash), so identical
 * documents still share a key (and a side of the split) and different ones are placed
 * independently. Keys without such a collision are unchanged. Returns 1 when out of memory. */
typedef struct {
    uint64_t h;
    int64_t i;
} hkey;
static int cmp_hkey(const void *a, const void *b) {
    const hkey *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}
static int split_collisions(const mb_pack *p, uint64_t *hs, int64_t n) {
    hkey *k = malloc((size_t)n * sizeof *k);
    if (!k) return 1;
    for (int64_t i = 0; i < n; i++)
        k[i] = (hkey){hs[i], i};
    qsort(k, (size_t)n, sizeof *k, cmp_hkey);
    for (int64_t a = 0; a < n;) {
        int64_t e = a + 1;
        while (e < n && k[e].h == k[a].h)
            e++;
        if (e - a > 1) { /* a shared key: the whole contents decide */
            int64_t len0;
            const uint8_t *b0 = mb_pack_doc(p, k[a].i, &len0);
            int differ = 0;
            for (int64_t j = a + 1; j < e && !differ; j++) {
                int64_t len;
                const uint8_t *b = mb_pack_doc(p, k[j].i, &len);
                differ = len != len0 || memcmp(b, b0, (size_t)len) != 0;
            }
            for (int64_t j = a; differ && j < e; j++) {
                int64_t len;
                const uint8_t *b = mb_pack_doc(p, k[j].i, &len);
                hs[k[j].i] = mix64(k[j].h ^ content_hash(b, len));
            }
        }
        a = e;
    }
    free(k);
    return 0;
}

/* s->n_val_identical: the validation spans of at least 2 bytes (shorter ones score nothing)
 * byte-identical to a training span. The validation spans go into two open-addressing tables:
 * their distinct lengths, and one representative per distinct content (by content hash, equal
 * length and memcmp); a training span is hashed only when its length is in the first. */
static int count_identical(mb_split *s) {
    s->n_val_identical = 0;
    const int64_t nv = s->n_val;
    if (nv == 0 || s->n_train == 0) return MB_OK;
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)nv)
        cap <<= 1;
    const uint64_t mask = cap - 1;
    int64_t *by_len = malloc(cap * sizeof *by_len), *by_content = malloc(cap * sizeof *by_content);
    int64_t *rep = malloc((size_t)nv * sizeof *rep);
    uint64_t *vh = malloc((size_t)nv * sizeof *vh);
    uint8_t *hit = calloc((size_t)nv, 1);
    if (!by_len || !by_content || !rep || !vh || !hit) {
        free(by_len), free(by_content), free(rep), free(vh), free(hit);
        return mb_fail(MB_ENOMEM, "split: out of memory comparing the validation documents");
    }
    memset(by_len, 0xff, cap * sizeof *by_len); /* -1: empty */
    memset(by_content, 0xff, cap * sizeof *by_content);
    for (int64_t v = 0; v < nv; v++) {
        const mb_span *a = &s->val[v];
        rep[v] = -1;
        if (a->len < 2) continue;
        uint64_t k = mix64((uint64_t)a->len) & mask;
        while (by_len[k] >= 0 && by_len[k] != a->len)
            k = (k + 1) & mask;
        by_len[k] = a->len;
        vh[v] = content_hash(a->data, a->len);
        for (k = vh[v] & mask; by_content[k] >= 0; k = (k + 1) & mask) {
            const mb_span *r = &s->val[by_content[k]];
            if (vh[by_content[k]] == vh[v] && r->len == a->len &&
                memcmp(r->data, a->data, (size_t)a->len) == 0) {
                rep[v] = by_content[k];
                break;
            }
        }
        if (rep[v] < 0) by_content[k] = rep[v] = v;
    }
    for (int64_t t = 0; t < s->n_train; t++) {
        const mb_span *a = &s->train[t];
        if (a->len < 2) continue;
        uint64_t k = mix64((uint64_t)a->len) & mask;
        while (by_len[k] >= 0 && by_len[k] != a->len)
            k = (k + 1) & mask;
        if (by_len[k] < 0) continue; /* no validation span of this length */
        const uint64_t h = content_hash(a->data, a->len);
        for (k = h & mask; by_content[k] >= 0; k = (k + 1) & mask) {
            const int64_t r = by_content[k];
            if (vh[r] == h && s->val[r].len == a->len &&
                memcmp(s->val[r].data, a->data, (size_t)a->len) == 0) {
                hit[r] = 1;
                break;
            }
        }
    }
    for (int64_t v = 0; v < nv; v++)
        s->n_val_identical += rep[v] >= 0 && hit[rep[v]];
    free(by_len), free(by_content), free(rep), free(vh), free(hit);
    return MB_OK;
}

int mb_split_make(mb_split *s, const mb_pack *p, const mb_pack *val_pack, double val_fraction) {
    memset(s, 0, sizeof *s);
    if (!p || p->n_docs < 1) return mb_fail(MB_EINVAL, "split: empty pack");
    if (!val_pack && !(val_fraction >= 0.0 && val_fraction < 1.0))
        return mb_fail(MB_EINVAL, "split: validation fraction %g not in [0, 1)", val_fraction);
    int64_t n = p->n_docs;
    int64_t nv_cap = val_pack ? val_pack->n_docs : n;
    s->train = calloc((size_t)(n + 1), sizeof *s->train);
    s->val = calloc((size_t)(nv_cap + 1), sizeof *s->val);
    if (!s->train || !s->val) {
        mb_split_free(s);
        return mb_fail(MB_ENOMEM, "split: out of memory");
    }
    if (val_pack) {
        for (int64_t i = 0; i < n; i++) {
            int64_t len;
            const uint8_t *b = mb_pack_doc(p, i, &len);
            s->train[s->n_train++] = (mb_span){b, len, i, 0};
        }
        for (int64_t i = 0; i < val_pack->n_docs; i++) {
            int64_t len;
            const uint8_t *b = mb_pack_doc(val_pack, i, &len);
            s->val[s->n_val++] = (mb_span){b, len, i, 0};
        }
        const int rc = count_identical(s);
        if (rc) mb_split_free(s);
        return rc;
    }
    if (n == 1) {
        int64_t len;
        const uint8_t *b = mb_pack_doc(p, 0, &len);
        int64_t v = (int64_t)llround(val_fraction * (double)len);
        if (val_fraction > 0 && v < 2) v = 2;
        if (v > len - 1) v = len - 1;
        if (v < 0) v = 0;
        s->by_bytes = 1;
        s->train[s->n_train++] = (mb_span){b, len - v, 0, 0};
        if (v > 0) s->val[s->n_val++] = (mb_span){b + (len - v), v, 0, len - v};
        return 0;
    }
    uint8_t *isval = calloc((size_t)n, 1);
    uint64_t *hs = malloc((size_t)n * sizeof *hs);
    if (!isval || !hs) {
        free(isval);
        free(hs);
        mb_split_free(s);
        return mb_fail(MB_ENOMEM, "split: out of memory");
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t len;
        const uint8_t *b = mb_pack_doc(p, i, &len);
        hs[i] = doc_hash(b, len);
    }
    if (split_collisions(p, hs, n)) {
        free(isval);
        free(hs);
        mb_split_free(s);
        return mb_fail(MB_ENOMEM, "split: out of memory");
    }
    int64_t nval = 0, imin = -1, imax = -1;
    uint64_t hmin = UINT64_MAX, hmax = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len;
        (void)mb_pack_doc(p, i, &len);
        const uint64_t h = hs[i];
        double u = (double)(h >> 11) * (1.0 / 9007199254740992.0);
        if (u < val_fraction) {
            isval[i] = 1;
            nval++;
        }
        if (len >= 2 && (imin < 0 || h < hmin)) {
            hmin = h;
            imin = i;
        }
        if (imax < 0 || h >= hmax) {
            hmax = h;
            imax = i;
        }
    }
    /* the forced picks take the documents of their hash along (identical documents have one
     * hash): no document has a copy on the other side */
    if (val_fraction > 0 && nval == 0) {
        if (imin < 0) {
            isval[0] = 1;
            nval = 1;
        }
        for (int64_t i = 0; imin >= 0 && i < n; i++)
            if (hs[i] == hmin) isval[i] = 1, nval++;
    }
    if (nval == n)
        for (int64_t i = 0; i < n; i++)
            if (hs[i] == hmax) isval[i] = 0, nval--;
    for (int64_t i = 0; i < n; i++) {
        int64_t len;
        const uint8_t *b = mb_pack_doc(p, i, &len);
        if (isval[i])
            s->val[s->n_val++] = (mb_span){b, len, i, 0};
        else
            s->train[s->n_train++] = (mb_span){b, len, i, 0};
    }
    free(isval);
    free(hs);
    return 0;
}

void mb_split_free(mb_split *s) {
    free(s->train);
    free(s->val);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- training sampler */
static void sampler_canonical(mb_train_sampler *s) {
    int64_t k = 0, ctx1 = s->ctx + 1;
    for (int64_t i = 0; i < s->n_used + s->n_skipped; i++) {
        int64_t len = s->spans[i].len;
        if (len < ctx1) continue;
        int64_t v = (len + ctx1 / 2) / ctx1;
        if (v < 1) v = 1;
        for (int64_t j = 0; j < v; j++)
            s->slots[k++] = (uint32_t)i;
    }
}

static void sampler_shuffle(mb_train_sampler *s) {
    sampler_canonical(s);
    s->epoch_rng = s->rng;
    for (int64_t i = s->n_slots - 1; i > 0; i--) {
        int64_t j = (int64_t)mb_rng_below(&s->rng, (uint64_t)(i + 1));
        uint32_t t = s->slots[i];
        s->slots[i] = s->slots[j];
        s->slots[j] = t;
    }
    s->pos = 0;
}

int mb_train_sampler_init(mb_train_sampler *s, const mb_split *sp, int64_t ctx, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (!sp || ctx < 1)
        return mb_fail(MB_EINVAL, "train sampler: ctx %lld must be >= 1", (long long)ctx);
    if (sp->n_train < 1) return mb_fail(MB_EINVAL, "train sampler: no training documents");
    if (sp->n_train > (int64_t)UINT32_MAX)
        return mb_fail(MB_EINVAL, "train sampler: %lld training documents (max %u)",
                       (long long)sp->n_train, UINT32_MAX);
    s->spans = sp->train;
    s->ctx = ctx;
    int64_t ctx1 = ctx + 1, longest = 0, slots = 0;
    for (int64_t i = 0; i < sp->n_train; i++) {
        int64_t len = sp->train[i].len;
        if (len > longest) longest = len;
        if (len < ctx1) {
            s->n_skipped++;
            s->skipped_bytes += len;
            continue;
        }
        s->n_used++;
        int64_t v = (len + ctx1 / 2) / ctx1;
        slots += v < 1 ? 1 : v;
    }
    if (s->n_used == 0 && sp->n_train == 1)
        return mb_fail(MB_EINVAL,
                       "train sampler: the training document does not have ctx + 1 = %lld bytes "
                       "(ctx %lld; it has %lld byte%s)",
                       (long long)ctx1, (long long)ctx, (long long)longest, mb_plural(longest));
    if (s->n_used == 0)
        return mb_fail(MB_EINVAL,
                       "train sampler: no training document has ctx + 1 = %lld bytes (ctx %lld, "
                       "longest training document %lld byte%s, %lld documents)",
                       (long long)ctx1, (long long)ctx, (long long)longest, mb_plural(longest),
                       (long long)sp->n_train);
    s->n_slots = slots;
    s->slots = malloc((size_t)slots * sizeof *s->slots);
    if (!s->slots)
        return mb_fail(MB_ENOMEM, "train sampler: out of memory (%lld slots)", (long long)slots);
    mb_rng_seed(&s->rng, seed);
    s->epoch = 0;
    sampler_shuffle(s);
    return 0;
}

void mb_train_sampler_free(mb_train_sampler *s) {
    free(s->slots);
    memset(s, 0, sizeof *s);
}

void mb_train_sampler_next(mb_train_sampler *s, uint8_t *window, int64_t *span, int64_t *start) {
    if (s->pos >= s->n_slots) {
        s->epoch++;
        sampler_shuffle(s);
    }
    int64_t i = s->slots[s->pos++];
    const mb_span *d = &s->spans[i];
    int64_t st = (int64_t)mb_rng_below(&s->rng, (uint64_t)(d->len - s->ctx));
    if (window) memcpy(window, d->data + st, (size_t)(s->ctx + 1));
    if (span) *span = i;
    if (start) *start = st;
}

void mb_train_sampler_batch(mb_train_sampler *s, int64_t B, uint8_t *x, uint8_t *y) {
    int64_t T = s->ctx;
    for (int64_t b = 0; b < B; b++) {
        int64_t i, st;
        mb_train_sampler_next(s, NULL, &i, &st);
        const uint8_t *w = s->spans[i].data + st;
        memcpy(x + b * T, w, (size_t)T);
        memcpy(y + b * T, w + 1, (size_t)T);
    }
}

void mb_train_sampler_get_state(const mb_train_sampler *s, mb_train_sampler_state *st) {
    memcpy(st->rng, s->rng.s, sizeof st->rng);
    memcpy(st->epoch_rng, s->epoch_rng.s, sizeof st->epoch_rng);
    st->epoch = s->epoch;
    st->pos = s->pos;
    st->ctx = s->ctx;
    st->n_slots = s->n_slots;
}

int mb_train_sampler_set_state(mb_train_sampler *s, const mb_train_sampler_state *st) {
    if (st->ctx != s->ctx || st->n_slots != s->n_slots)
        return mb_fail(MB_EINVAL,
                       "train sampler state: ctx %lld / %lld slots, sampler has ctx %lld / %lld "
                       "slots: the data differ from the run's (resume with the same --data and "
                       "--val it was started with, unchanged)",
                       (long long)st->ctx, (long long)st->n_slots, (long long)s->ctx,
                       (long long)s->n_slots);
    if (st->epoch < 0 || st->pos < 0 || st->pos > st->n_slots)
        return mb_fail(MB_EINVAL, "train sampler state: epoch %lld / pos %lld out of range",
                       (long long)st->epoch, (long long)st->pos);
    memcpy(s->rng.s, st->epoch_rng, sizeof st->epoch_rng);
    sampler_shuffle(s); /* reproduces this epoch's order, sets epoch_rng */
    memcpy(s->rng.s, st->rng, sizeof st->rng);
    s->epoch = st->epoch;
    s->pos = st->pos;
    return 0;
}

void mb_train_sampler_restart(mb_train_sampler *s, const mb_train_sampler_state *st) {
    memcpy(s->rng.s, st->rng, sizeof st->rng);
    s->epoch = st->epoch + 1;
    sampler_shuffle(s);
}

/* ---------------------------------------------------------------- evaluation */
void mb_eval_iter_init(mb_eval_iter *it, const mb_split *sp, int64_t ctx) {
    it->sp = sp;
    it->ctx = ctx < 1 ? 1 : ctx;
    it->span = 0;
    it->offset = 0;
}

int mb_eval_iter_next(mb_eval_iter *it, mb_eval_window *w) {
    while (it->span < it->sp->n_val) {
        const mb_span *d = &it->sp->val[it->span];
        int64_t rem = d->len - it->offset;
        if (rem >= 2) {
            int64_t n = rem < it->ctx + 1 ? rem : it->ctx + 1;
            w->bytes = d->data + it->offset;
            w->len = n;
            w->span = it->span;
            w->offset = it->offset;
            it->offset += it->ctx; /* next window starts at this one's last byte */
            return 1;
        }
        it->span++;
        it->offset = 0;
    }
    return 0;
}

int64_t mb_eval_predicted_bytes(const mb_split *sp) {
    int64_t n = 0;
    for (int64_t i = 0; i < sp->n_val; i++)
        if (sp->val[i].len > 1) n += sp->val[i].len - 1;
    return n;
}
