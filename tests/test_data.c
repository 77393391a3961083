/* Data pipeline: packing (directory tree, JSON lines), pack cache and validation, split,
 * training sampler (bounds, weighting, determinism, exact resume), evaluation iterator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mambabyte.h"
#include "support/tmpdir.h"
#include "train/data.h"

/* ---------------------------------------------------------------- helpers */
static char g_tmp[256];

static int setup(void **st) {
    (void)st;
    return mb_test_mkdtemp(g_tmp, sizeof g_tmp, "data");
}

static int teardown(void **st) {
    (void)st;
    return mb_test_rmtree(g_tmp);
}

static const char *tp(const char *rel) {
    static char buf[8][512];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, rel);
    return buf[k];
}

/* a path under the temporary directory held in a local array */
#define TMPPATH(var, rel)                                                                          \
    char var[512];                                                                                 \
    snprintf(var, sizeof var, "%s/%s", g_tmp, rel)

static void write_file(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void mkd(const char *path) {
    assert_int_equal(mkdir(path, 0755), 0);
}

static void expect_doc(const mb_pack *p, int64_t i, const void *b, int64_t n) {
    int64_t len;
    const uint8_t *d = mb_pack_doc(p, i, &len);
    assert_int_equal(len, n);
    assert_memory_equal(d, b, (size_t)n);
}

/* a split over caller-owned documents (no pack needed) */
static void split_of(mb_split *s, const mb_span *train, int64_t nt, const mb_span *val,
                     int64_t nv) {
    memset(s, 0, sizeof *s);
    s->train = (mb_span *)train;
    s->n_train = nt;
    s->val = (mb_span *)val;
    s->n_val = nv;
}

/* ---------------------------------------------------------------- packing */
static void test_pack_directory(void **st) {
    (void)st;
    char root[512];
    snprintf(root, sizeof root, "%s", tp("tree"));
    mkd(root);
    mkd(tp("tree/a"));
    mkd(tp("tree/a/sub"));
    mkd(tp("tree/.git"));
    const uint8_t bin[] = {0x00, 0xFF, 0x00, 0x41, 0xFF, 0x0A, 0x00};
    write_file(tp("tree/a/x.bin"), bin, sizeof bin);
    write_file(tp("tree/a/sub/y"), "yy", 2);
    write_file(tp("tree/b.txt"), "hello\n", 6);
    write_file(tp("tree/a.txt"), "A", 1);
    write_file(tp("tree/.hidden"), "no", 2);
    write_file(tp("tree/.git/obj"), "no", 2);
    write_file(tp("tree/z_empty"), "", 0);
    /* loops: a link to the root and a link to an already visited directory */
    assert_int_equal(symlink(".", tp("tree/loop")), 0);
    assert_int_equal(symlink("a/sub", tp("tree/zlink")), 0);
    assert_int_equal(symlink("missing", tp("tree/dangling")), 0);

    char pack[512];
    snprintf(pack, sizeof pack, "%s", tp("tree.mbpack"));
    char defpath[512];
    assert_int_equal(mb_data_pack_path(tp("tree/"), NULL, defpath, sizeof defpath), 0);
    assert_string_equal(defpath, pack);
    mb_pack p;
    int rebuilt = -1;
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    /* sorted relative paths: a.txt < a/sub/y < a/x.bin < b.txt < z_empty */
    assert_int_equal(p.n_docs, 5);
    expect_doc(&p, 0, "A", 1);
    expect_doc(&p, 1, "yy", 2);
    expect_doc(&p, 2, bin, sizeof bin);
    expect_doc(&p, 3, "hello\n", 6);
    expect_doc(&p, 4, "", 0);
    assert_int_equal(p.total_bytes, 1 + 2 + 7 + 6);
    mb_pack_close(&p);
}

/* auto format judges every file of a tree on its own: "*.jsonl" as JSON lines, others bytes */
static void test_pack_directory_mixed(void **st) {
    (void)st;
    char root[512];
    snprintf(root, sizeof root, "%s", tp("mix"));
    mkd(root);
    mkd(tp("mix/sub"));
    const char a[] = "{\"text\": \"first\"}\n"
                     "\n"
                     "{\"id\": 2, \"text\": \"x\\u0000y\\u00e9\"}\n";
    const char b[] = "{\"text\": \"not parsed\"}\n";
    const char c[] = "{\"text\":\"deep\"}";
    write_file(tp("mix/a.jsonl"), a, sizeof a - 1);
    write_file(tp("mix/b.txt"), b, sizeof b - 1);
    write_file(tp("mix/sub/c.jsonl"), c, sizeof c - 1);

    mb_pack p;
    int rebuilt = -1;
    /* sorted relative paths: a.jsonl (2 lines) < b.txt (1 raw document) < sub/c.jsonl */
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_AUTO, tp("mix.pack"), &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    assert_int_equal(p.n_docs, 4);
    expect_doc(&p, 0, "first", 5);
    const uint8_t d1[] = {'x', 0x00, 'y', 0xC3, 0xA9};
    expect_doc(&p, 1, d1, sizeof d1);
    expect_doc(&p, 2, b, sizeof b - 1);
    expect_doc(&p, 3, "deep", 4);
    assert_int_equal(p.total_bytes, 5 + 5 + (int64_t)(sizeof b - 1) + 4);
    mb_pack_close(&p);
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_AUTO, tp("mix.pack"), &rebuilt), 0);
    assert_int_equal(rebuilt, 0); /* reused */
    assert_int_equal(p.n_docs, 4);
    mb_pack_close(&p);

    /* explicit bytes: every file is one raw document, the .jsonl ones included; a pack of the
     * same tree read as bytes (as an older build read it in auto format) is not reused */
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_BYTES, tp("mix.pack"), &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    assert_int_equal(p.n_docs, 3);
    expect_doc(&p, 0, a, sizeof a - 1);
    expect_doc(&p, 1, b, sizeof b - 1);
    expect_doc(&p, 2, c, sizeof c - 1);
    mb_pack_close(&p);
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_AUTO, tp("mix.pack"), &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    assert_int_equal(p.n_docs, 4);
    mb_pack_close(&p);

    /* explicit jsonl: every file is JSON lines (b.txt parses as one line) */
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_JSONL, tp("mix.pack"), &rebuilt), 0);
    assert_int_equal(p.n_docs, 4);
    expect_doc(&p, 2, "not parsed", 10);
    mb_pack_close(&p);

    /* only .jsonl files: the same documents as --format jsonl */
    mkd(tp("alljs"));
    write_file(tp("alljs/s0.jsonl"), a, sizeof a - 1);
    write_file(tp("alljs/s1.jsonl"), c, sizeof c - 1);
    assert_int_equal(mb_pack_load(&p, tp("alljs"), MB_DATA_AUTO, tp("alljs.pack"), NULL), 0);
    assert_int_equal(p.n_docs, 3);
    expect_doc(&p, 0, "first", 5);
    expect_doc(&p, 1, d1, sizeof d1);
    expect_doc(&p, 2, "deep", 4);
    mb_pack_close(&p);

    /* a malformed .jsonl inside a tree: the same error as for a single file */
    const char bad[] = "{\"text\":\"ok\"}\n{\"body\":\"x\"}\n";
    write_file(tp("mix/sub/d.jsonl"), bad, sizeof bad - 1);
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_AUTO, tp("bad.pack"), NULL), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), tp("mix/sub/d.jsonl")));
    assert_non_null(strstr(mb_last_error(), "line 2: no \"text\" field"));
    assert_int_equal(access(tp("bad.pack"), F_OK), -1);
    /* ... while bytes mode still reads it as one document */
    assert_int_equal(mb_pack_load(&p, root, MB_DATA_BYTES, tp("bad.pack"), NULL), 0);
    assert_int_equal(p.n_docs, 4);
    expect_doc(&p, 3, bad, sizeof bad - 1);
    mb_pack_close(&p);
}

static void test_pack_jsonl(void **st) {
    (void)st;
    TMPPATH(in, "d.jsonl");
    const char text[] =
        "{\"text\": \"plain\"}\n"
        "\n"
        "   \r\n"
        "{\"id\": 1, \"meta\": {\"text\": \"nested\"}, \"text\": \"a\\u0000b\\u00ffc\"}\n"
        "{\"text\":\"\\ud83d\\ude00\\n\\t\\\"\\\\\\/\", \"text2\": [1, \"x\"]}\r\n"
        "{\"te\\u0078t\": \"esc-key\", \"n\": null}\n"
        "{\"text\": \"raw\xff\"}"; /* no final newline */
    write_file(in, text, sizeof text - 1);
    mb_pack p;
    int rebuilt;
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, tp("d.pack"), &rebuilt), 0);
    assert_int_equal(p.n_docs, 5);
    expect_doc(&p, 0, "plain", 5);
    const uint8_t d1[] = {'a', 0x00, 'b', 0xC3, 0xBF, 'c'};
    expect_doc(&p, 1, d1, sizeof d1);
    const uint8_t d2[] = {0xF0, 0x9F, 0x98, 0x80, '\n', '\t', '"', '\\', '/'};
    expect_doc(&p, 2, d2, sizeof d2);
    expect_doc(&p, 3, "esc-key", 7);
    const uint8_t d4[] = {'r', 'a', 'w', 0xFF};
    expect_doc(&p, 4, d4, sizeof d4);
    assert_int_equal(p.total_bytes, 5 + 6 + 9 + 7 + 4);
    mb_pack_close(&p);

    /* --format bytes on the same file: one raw document */
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_BYTES, tp("d.raw.pack"), &rebuilt), 0);
    assert_int_equal(p.n_docs, 1);
    expect_doc(&p, 0, text, sizeof text - 1);
    mb_pack_close(&p);

    /* lone surrogate escapes (Python's json writes them for broken text) read as U+FFFD
     * (EF BF BD); a pair stays one code point; an escaped backslash before "ud800" is text */
    const char sur[] = "{\"text\":\"a\\ud800b\\udc00c\\ud800\\ud800\\n\\ud83d\\ude00\\\\ud800\"}\n";
    write_file(tp("sur.jsonl"), sur, sizeof sur - 1);
    assert_int_equal(mb_pack_load(&p, tp("sur.jsonl"), MB_DATA_AUTO, tp("s.pack"), NULL), 0);
    assert_int_equal(p.n_docs, 1);
    const uint8_t ds[] = {'a',  0xEF, 0xBF, 0xBD, 'b',  0xEF, 0xBF, 0xBD, 'c',
                          0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD, '\n', 0xF0, 0x9F,
                          0x98, 0x80, '\\', 'u',  'd',  '8',  '0',  '0'};
    expect_doc(&p, 0, ds, sizeof ds);
    mb_pack_close(&p);

    /* --format jsonl on a file without the extension */
    write_file(tp("plain.txt"), "{\"text\":\"q\"}\n", 13);
    assert_int_equal(mb_pack_load(&p, tp("plain.txt"), MB_DATA_JSONL, tp("q.pack"), NULL), 0);
    assert_int_equal(p.n_docs, 1);
    expect_doc(&p, 0, "q", 1);
    mb_pack_close(&p);

    /* a UTF-8 byte order mark before the first line is not part of the JSON */
    write_file(tp("bom.jsonl"), "\xEF\xBB\xBF{\"text\":\"b\"}\n", 15);
    assert_int_equal(mb_pack_load(&p, tp("bom.jsonl"), MB_DATA_AUTO, tp("b.pack"), NULL), 0);
    assert_int_equal(p.n_docs, 1);
    expect_doc(&p, 0, "b", 1);
    mb_pack_close(&p);

    mb_data_format f;
    assert_int_equal(mb_data_format_parse("jsonl", &f), 0);
    assert_int_equal(f, MB_DATA_JSONL);
    assert_int_equal(mb_data_format_parse("raw", &f), 0);
    assert_int_equal(f, MB_DATA_BYTES);
    assert_int_equal(mb_data_format_parse("csv", &f), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "csv"));
}

static void test_jsonl_errors(void **st) {
    (void)st;
    struct {
        const char *text, *want;
    } cases[] = {
        {"{\"text\":\"ok\"}\n\n{\"text\": \"unterminated}\n", "line 3: invalid JSON"},
        {"{\"text\":\"ok\"}\n{\"body\":\"x\"}\n", "line 2: no \"text\" field"},
        {"{\"text\":5}\n", "line 1: \"text\" is not a string"},
        /* twice, also through an escaped key: ambiguous (Python takes the last) */
        {"{\"text\":\"ok\"}\n{\"text\":\"a\",\"n\":1,\"te\\u0078t\":\"b\"}\n",
         "line 2: the \"text\" field appears twice"},
        {"{\"text\":\"ok\"}\n[1,2]\n", "line 2: not a JSON object"},
        {"{\"text\":\"a\"} {\"text\":\"b\"}\n", "line 1: trailing"},
        {"{\"text\":\"\\ud80\"}\n", "line 1: invalid JSON"}, /* 3 hex digits */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TMPPATH(in, "bad.jsonl");
        write_file(in, cases[i].text, strlen(cases[i].text));
        assert_int_equal(mb_pack_build(in, MB_DATA_AUTO, tp("bad.pack")), MB_EFORMAT);
        assert_non_null(strstr(mb_last_error(), cases[i].want));
        assert_non_null(strstr(mb_last_error(), in));
        assert_int_equal(access(tp("bad.pack"), F_OK), -1); /* nothing left behind */
    }
    /* no temporary file (hidden, in the pack's directory) is left behind */
    DIR *d = opendir(g_tmp);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        assert_null(strstr(de->d_name, ".tmp."));
    closedir(d);
}

static void test_empty_inputs(void **st) {
    (void)st;
    mb_pack p;
    write_file(tp("empty.bin"), "", 0);
    assert_int_equal(mb_pack_load(&p, tp("empty.bin"), MB_DATA_AUTO, tp("e.pack"), NULL),
                     MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), tp("empty.bin")));
    assert_non_null(strstr(mb_last_error(), "empty"));

    mkd(tp("edir"));
    assert_int_equal(mb_pack_load(&p, tp("edir"), MB_DATA_AUTO, tp("e.pack"), NULL), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), tp("edir")));
    assert_non_null(strstr(mb_last_error(), "empty"));

    /* only hidden files, or only empty files: still empty */
    write_file(tp("edir/.x"), "abc", 3);
    assert_int_equal(mb_pack_load(&p, tp("edir"), MB_DATA_AUTO, tp("e.pack"), NULL), MB_EINVAL);
    write_file(tp("edir/zero"), "", 0);
    assert_int_equal(mb_pack_load(&p, tp("edir"), MB_DATA_AUTO, tp("e.pack"), NULL), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "0 bytes"));

    write_file(tp("blank.jsonl"), "\n  \n\n", 5);
    assert_int_equal(mb_pack_load(&p, tp("blank.jsonl"), MB_DATA_AUTO, tp("e.pack"), NULL),
                     MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), tp("blank.jsonl")));

    assert_int_equal(mb_pack_load(&p, tp("nope"), MB_DATA_AUTO, tp("e.pack"), NULL), MB_EIO);
    assert_non_null(strstr(mb_last_error(), tp("nope")));
    assert_int_equal(access(tp("e.pack"), F_OK), -1);
}

static void test_cache_and_rebuild(void **st) {
    (void)st;
    TMPPATH(in, "one.txt");
    TMPPATH(pack, "out.pack");
    write_file(in, "abcdef", 6);
    mb_pack p;
    int rebuilt = -1;
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    expect_doc(&p, 0, "abcdef", 6);
    struct stat s0;
    assert_int_equal(stat(pack, &s0), 0);
    mb_pack_close(&p);

    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 0);
    struct stat s1;
    assert_int_equal(stat(pack, &s1), 0);
    assert_int_equal(s0.st_ino, s1.st_ino); /* same file, not rewritten */
    mb_pack_close(&p);

    /* content changed, size changed */
    write_file(in, "abcdefgh", 8);
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    expect_doc(&p, 0, "abcdefgh", 8);
    mb_pack_close(&p);

    /* same size, only mtime differs */
    write_file(in, "ABCDEFGH", 8);
    struct timespec ts[2] = {{1000000, 5}, {1000000, 5}};
    assert_int_equal(utimensat(AT_FDCWD, in, ts, 0), 0);
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    expect_doc(&p, 0, "ABCDEFGH", 8);
    mb_pack_close(&p);

    /* a different --format for the same pack path rebuilds */
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_BYTES, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 0);
    mb_pack_close(&p);

    /* directory: adding a file rebuilds; the pack inside the tree is not a document */
    mkd(tp("cd"));
    write_file(tp("cd/1"), "one", 3);
    char inpack[512];
    assert_int_equal(mb_data_pack_path(tp("cd"), tp("cd"), inpack, sizeof inpack), 0);
    assert_int_equal(mb_pack_load(&p, tp("cd"), MB_DATA_AUTO, inpack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    assert_int_equal(p.n_docs, 1);
    mb_pack_close(&p);
    assert_int_equal(mb_pack_load(&p, tp("cd"), MB_DATA_AUTO, inpack, &rebuilt), 0);
    assert_int_equal(rebuilt, 0);
    assert_int_equal(p.n_docs, 1);
    mb_pack_close(&p);
    write_file(tp("cd/2"), "two!", 4);
    assert_int_equal(mb_pack_load(&p, tp("cd"), MB_DATA_AUTO, inpack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    assert_int_equal(p.n_docs, 2);
    expect_doc(&p, 1, "two!", 4);
    mb_pack_close(&p);
}

/* overwrite bytes at `off` of a file */
static void poke(const char *path, long off, const void *b, size_t n) {
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, n, off), (ssize_t)n);
    close(fd);
}

static void test_pack_validation(void **st) {
    (void)st;
    mkd(tp("v"));
    write_file(tp("v/a"), "aaaa", 4);
    write_file(tp("v/b"), "bbbbbb", 6);
    TMPPATH(pack, "v.pack");
    assert_int_equal(mb_pack_build(tp("v"), MB_DATA_AUTO, pack), 0);
    mb_pack p;
    assert_int_equal(mb_pack_open(&p, pack), 0);
    assert_int_equal(p.n_docs, 2);
    assert_int_equal(p.total_bytes, 10);
    /* layout: 72-byte header, 2 x 16 index, then data */
    assert_int_equal(p.map_len, 72 + 32 + 10);
    assert_memory_equal(p.map + 104, "aaaabbbbbb", 10);
    mb_pack_close(&p);

    /* truncated: one data byte missing */
    assert_int_equal(truncate(pack, 72 + 32 + 9), 0);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), pack));
    assert_non_null(strstr(mb_last_error(), "truncated"));
    assert_int_equal(truncate(pack, 20), 0);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "truncated"));
    /* load rebuilds a corrupt pack */
    int rebuilt;
    assert_int_equal(mb_pack_load(&p, tp("v"), MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    mb_pack_close(&p);

    poke(pack, 0, "XX", 2);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "bad magic"));
    assert_non_null(strstr(mb_last_error(), pack));
    assert_int_equal(mb_pack_build(tp("v"), MB_DATA_AUTO, pack), 0);

    /* index entry 1: length 7 runs past the 10 data bytes */
    int64_t bad = 7;
    poke(pack, 72 + 16 + 8, &bad, 8);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "index entry 1"));
    assert_non_null(strstr(mb_last_error(), pack));
    /* negative offset in entry 0 */
    assert_int_equal(mb_pack_build(tp("v"), MB_DATA_AUTO, pack), 0);
    bad = -3;
    poke(pack, 72, &bad, 8);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "index entry 0"));
    /* header field changed: header hash catches it */
    assert_int_equal(mb_pack_build(tp("v"), MB_DATA_AUTO, pack), 0);
    int64_t ndocs = 1000;
    poke(pack, 24, &ndocs, 8);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "header"));
    /* trailing garbage */
    assert_int_equal(mb_pack_build(tp("v"), MB_DATA_AUTO, pack), 0);
    FILE *f = fopen(pack, "ab");
    fputc('!', f);
    fclose(f);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "trailing"));
    assert_int_equal(mb_pack_open(&p, tp("absent.pack")), MB_EIO);
    assert_non_null(strstr(mb_last_error(), "absent.pack"));
}

/* The documents are covered by the content hash in the header: a damaged body (header intact)
 * is refused by open and rebuilt from the input by load; with the input gone, load fails
 * naming it; a pack of the previous format version is rebuilt. */
static void test_pack_content_hash(void **st) {
    (void)st;
    enum { N = 3000 };
    char body[N];
    for (int i = 0; i < N; i++)
        body[i] = (char)('a' + i % 23);
    TMPPATH(in, "ch.txt");
    TMPPATH(pack, "ch.pack");
    write_file(in, body, N);
    mb_pack p;
    int rebuilt = -1;
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    const uint64_t h0 = p.content_hash;
    const int64_t data_off = 72 + 16;
    mb_pack_close(&p);

    /* the hash depends on the content (same length, one byte changed) and is deterministic */
    TMPPATH(in2, "ch2.txt");
    TMPPATH(pack2, "ch2.pack");
    body[N / 2] ^= 1;
    write_file(in2, body, N);
    assert_int_equal(mb_pack_load(&p, in2, MB_DATA_AUTO, pack2, NULL), 0);
    assert_true(p.content_hash != h0);
    mb_pack_close(&p);
    body[N / 2] ^= 1;
    write_file(in2, body, N);
    assert_int_equal(mb_pack_build(in2, MB_DATA_AUTO, pack2), 0);
    assert_int_equal(mb_pack_open(&p, pack2), 0);
    assert_int_equal(p.content_hash, h0);
    mb_pack_close(&p);

    /* body overwritten, header intact: open refuses, load rebuilds with the original bytes */
    char z[N - 1100];
    memset(z, 'Z', sizeof z);
    poke(pack, 1000, z, sizeof z);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "content hash"));
    assert_non_null(strstr(mb_last_error(), pack));
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    expect_doc(&p, 0, body, N);
    assert_int_equal(p.content_hash, h0);
    mb_pack_close(&p);
    /* a single flipped bit in the last (partial-word) data byte */
    char c = (char)(body[N - 1] ^ 0x40);
    poke(pack, data_off + N - 1, &c, 1);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    expect_doc(&p, 0, body, N);
    mb_pack_close(&p);
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 0);
    mb_pack_close(&p);

    /* an older version's pack is rebuilt, not misread */
    uint32_t v1 = 1;
    poke(pack, 8, &v1, 4);
    assert_int_equal(mb_pack_open(&p, pack), MB_EFORMAT);
    assert_non_null(strstr(mb_last_error(), "version 1"));
    assert_int_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_int_equal(rebuilt, 1);
    mb_pack_close(&p);

    /* damaged pack, input gone: a clear error naming the input, the pack is not used */
    poke(pack, 1000, z, sizeof z);
    assert_int_equal(unlink(in), 0);
    assert_int_not_equal(mb_pack_load(&p, in, MB_DATA_AUTO, pack, &rebuilt), 0);
    assert_non_null(strstr(mb_last_error(), in));
    assert_null(p.map);
}

/* ---------------------------------------------------------------- split */
static void test_split(void **st) {
    (void)st;
    enum { N = 300 };
    mkd(tp("s"));
    mkd(tp("s2"));
    for (int i = 0; i < N; i++) {
        char name[64], body[64];
        snprintf(name, sizeof name, "s/doc%03d", i);
        int n = snprintf(body, sizeof body, "document number %d with some text", i);
        write_file(tp(name), body, (size_t)n);
        /* same contents under reversed names */
        snprintf(name, sizeof name, "s2/doc%03d", N - 1 - i);
        write_file(tp(name), body, (size_t)n);
    }
    mb_pack p, p2;
    assert_int_equal(mb_pack_load(&p, tp("s"), MB_DATA_AUTO, tp("s.pack"), NULL), 0);
    assert_int_equal(mb_pack_load(&p2, tp("s2"), MB_DATA_AUTO, tp("s2.pack"), NULL), 0);
    mb_split a, b, c;
    assert_int_equal(mb_split_make(&a, &p, NULL, 0.1), 0);
    assert_int_equal(mb_split_make(&b, &p, NULL, 0.1), 0);
    assert_int_equal(mb_split_make(&c, &p2, NULL, 0.1), 0);
    assert_int_equal(a.n_train + a.n_val, N);
    /* binomial(300, 0.1): mean 30, sd 5.2 */
    assert_in_range(a.n_val, 10, 50);
    assert_int_equal(a.n_val, b.n_val);
    assert_int_equal(a.n_val, c.n_val);
    int side[N];
    for (int i = 0; i < N; i++)
        side[i] = -1;
    for (int64_t i = 0; i < a.n_val; i++) {
        assert_int_equal(a.val[i].doc, b.val[i].doc);
        assert_int_equal(side[a.val[i].doc], -1);
        side[a.val[i].doc] = 1;
        /* content based: the reversed tree puts the same document in validation */
        assert_int_equal(c.val[a.n_val - 1 - i].doc, N - 1 - a.val[i].doc);
    }
    for (int64_t i = 0; i < a.n_train; i++) {
        assert_int_equal(side[a.train[i].doc], -1); /* disjoint */
        side[a.train[i].doc] = 0;
    }
    for (int i = 0; i < N; i++)
        assert_int_not_equal(side[i], -1); /* covering */
    mb_split_free(&a);
    mb_split_free(&b);
    mb_split_free(&c);

    /* fraction 0: no validation; tiny fraction: still one validation document */
    assert_int_equal(mb_split_make(&a, &p, NULL, 0.0), 0);
    assert_int_equal(a.n_val, 0);
    assert_int_equal(a.n_train, N);
    mb_split_free(&a);
    assert_int_equal(mb_split_make(&a, &p, NULL, 1e-9), 0);
    assert_int_equal(a.n_val, 1);
    assert_int_equal(a.n_train, N - 1);
    mb_split_free(&a);
    assert_int_equal(mb_split_make(&a, &p, NULL, 1.0), MB_EINVAL);

    /* explicit validation pack: everything of it is validation */
    assert_int_equal(mb_split_make(&a, &p, &p2, 0.5), 0);
    assert_int_equal(a.n_train, N);
    assert_int_equal(a.n_val, N);
    assert_ptr_equal(a.val[0].data, p2.bytes);
    assert_int_equal(a.n_val_identical, N); /* the same documents under other names */
    mb_split_free(&a);
    mb_pack_close(&p);
    mb_pack_close(&p2);

    /* single document: split by bytes, the last fraction is validation */
    uint8_t big[10000];
    for (int i = 0; i < 10000; i++)
        big[i] = (uint8_t)(i * 7);
    write_file(tp("big.bin"), big, sizeof big);
    assert_int_equal(mb_pack_load(&p, tp("big.bin"), MB_DATA_AUTO, tp("big.pack"), NULL), 0);
    assert_int_equal(mb_split_make(&a, &p, NULL, 0.05), 0);
    assert_int_equal(a.by_bytes, 1);
    assert_int_equal(a.n_train, 1);
    assert_int_equal(a.n_val, 1);
    assert_int_equal(a.train[0].len, 9500);
    assert_int_equal(a.val[0].len, 500);
    assert_int_equal(a.val[0].offset, 9500);
    assert_ptr_equal(a.val[0].data, a.train[0].data + 9500);
    assert_memory_equal(a.val[0].data, big + 9500, 500);
    mb_split_free(&a);
    mb_pack_close(&p);
}

/* 1 when some validation span has the bytes of some training span */
static int shares_content(const mb_split *s) {
    for (int64_t v = 0; v < s->n_val; v++)
        for (int64_t t = 0; t < s->n_train; t++)
            if (s->val[v].len == s->train[t].len &&
                memcmp(s->val[v].data, s->train[t].data, (size_t)s->val[v].len) == 0)
                return 1;
    return 0;
}

/* Identical documents never end up on both sides of a held-out split, also where the split
 * forces its one validation document (a tiny fraction) or its one training document (all
 * documents under the fraction); with a separate validation pack the validation documents
 * identical to a training document are counted. */
static void test_split_identical(void **st) {
    (void)st;
    enum { N = 10 };
    mkd(tp("dup"));
    for (int i = 0; i < N; i++) { /* every content twice */
        char name[64], body[64];
        int n = snprintf(body, sizeof body, "twin document %d and its text", i);
        snprintf(name, sizeof name, "dup/a%02d", i);
        write_file(tp(name), body, (size_t)n);
        snprintf(name, sizeof name, "dup/b%02d", i);
        write_file(tp(name), body, (size_t)n);
    }
    mb_pack p;
    assert_int_equal(mb_pack_load(&p, tp("dup"), MB_DATA_AUTO, tp("dup.pack"), NULL), 0);
    mb_split a;
    /* the forced validation document comes with its twin */
    assert_int_equal(mb_split_make(&a, &p, NULL, 1e-9), 0);
    assert_int_equal(a.n_val, 2);
    assert_int_equal(a.n_train, 2 * N - 2);
    assert_memory_equal(a.val[0].data, a.val[1].data, (size_t)a.val[0].len);
    assert_false(shares_content(&a));
    mb_split_free(&a);
    /* the forced training document too */
    assert_int_equal(mb_split_make(&a, &p, NULL, 0.999), 0);
    assert_int_equal(a.n_train, 2);
    assert_int_equal(a.n_val, 2 * N - 2);
    assert_false(shares_content(&a));
    mb_split_free(&a);
    mb_pack_close(&p);

    /* a separate validation pack: counted, not dropped (the user chose it) */
    mkd(tp("tr"));
    mkd(tp("va"));
    write_file(tp("tr/1"), "alpha beta gamma", 16);
    write_file(tp("tr/2"), "delta epsilon", 13);
    write_file(tp("tr/3"), "x", 1);
    write_file(tp("va/1"), "alpha beta gamma", 16); /* identical */
    write_file(tp("va/2"), "alpha beta gamma", 16); /* identical */
    write_file(tp("va/3"), "alpha beta gammA", 16); /* same length, other bytes */
    write_file(tp("va/4"), "delta epsilon", 13);    /* identical */
    write_file(tp("va/5"), "x", 1);                 /* identical, but nothing to score */
    write_file(tp("va/6"), "zeta", 4);
    mb_pack tr, va;
    assert_int_equal(mb_pack_load(&tr, tp("tr"), MB_DATA_AUTO, tp("tr.pack"), NULL), 0);
    assert_int_equal(mb_pack_load(&va, tp("va"), MB_DATA_AUTO, tp("va.pack"), NULL), 0);
    assert_int_equal(mb_split_make(&a, &tr, &va, 0.01), 0);
    assert_int_equal(a.n_val, 6);
    assert_int_equal(a.n_val_identical, 3);
    mb_split_free(&a);
    assert_int_equal(mb_split_make(&a, &va, &tr, 0.01), 0); /* the other way round */
    assert_int_equal(a.n_val_identical, 2);
    mb_split_free(&a);
    mb_pack_close(&tr);
    mb_pack_close(&va);
}

/* documents of one length that share their first 1100 bytes (fixed-size records with a common
 * header) and differ after it: held out independently (both sides non-empty at 10%, as with
 * unrelated documents), while the copies of one record stay on one side */
static void test_split_shared_prefix(void **st) {
    (void)st;
    enum { N = 60, HEAD = 1100, LEN = 1400 };
    mkd(tp("rec"));
    uint8_t body[LEN];
    for (int i = 0; i < HEAD; i++)
        body[i] = (uint8_t)(i * 7 + 3);
    for (int i = 0; i < N; i++) {
        for (int j = HEAD; j < LEN; j++)
            body[j] = (uint8_t)(i * 131 + j * 17 + (i * j) % 251);
        char name[64];
        snprintf(name, sizeof name, "rec/r%02d", i);
        write_file(tp(name), body, LEN);
        if (i % 10 == 0) { /* and a copy of every tenth record */
            snprintf(name, sizeof name, "rec/s%02d", i);
            write_file(tp(name), body, LEN);
        }
    }
    mb_pack p;
    assert_int_equal(mb_pack_load(&p, tp("rec"), MB_DATA_AUTO, tp("rec.pack"), NULL), 0);
    assert_int_equal(p.n_docs, N + N / 10);
    mb_split a;
    assert_int_equal(mb_split_make(&a, &p, NULL, 0.1), 0);
    assert_true(a.n_val >= 2 && a.n_val <= 20); /* ~7 of 66 */
    assert_int_equal(a.n_val + a.n_train, N + N / 10);
    assert_false(shares_content(&a));
    mb_split_free(&a);
    mb_pack_close(&p);
}

/* ---------------------------------------------------------------- sampler */
static void test_sampler_short_docs(void **st) {
    (void)st;
    uint8_t buf[200] = {0};
    mb_span d[4] = {{buf, 5, 0, 0}, {buf, 100, 1, 0}, {buf, 3, 2, 0}, {buf, 50, 3, 0}};
    mb_split sp;
    split_of(&sp, d, 4, NULL, 0);
    mb_train_sampler s;
    assert_int_equal(mb_train_sampler_init(&s, &sp, 10, 1), 0);
    assert_int_equal(s.n_skipped, 2);
    assert_int_equal(s.skipped_bytes, 8);
    assert_int_equal(s.n_used, 2);
    /* visits: round(100 / 11) = 9, round(50 / 11) = 5 */
    assert_int_equal(s.n_slots, 14);
    for (int i = 0; i < 500; i++) {
        int64_t k, start;
        mb_train_sampler_next(&s, NULL, &k, &start);
        assert_true(k == 1 || k == 3);
    }
    mb_train_sampler_free(&s);

    assert_int_equal(mb_train_sampler_init(&s, &sp, 200, 1), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "ctx 200"));
    assert_non_null(strstr(mb_last_error(), "longest training document 100"));
    /* exactly ctx + 1 is long enough */
    assert_int_equal(mb_train_sampler_init(&s, &sp, 99, 1), 0);
    assert_int_equal(s.n_used, 1);
    assert_int_equal(s.n_skipped, 3);
    mb_train_sampler_free(&s);
}

static void test_sampler_bounds_exact_len(void **st) {
    (void)st;
    enum { CTX = 16, ND = 40 };
    static uint8_t buf[ND * (CTX + 1)];
    mb_span d[ND];
    for (int i = 0; i < ND; i++) {
        /* doc i is all byte (i * 6 + 1): a window mixing documents would not be uniform */
        memset(buf + i * (CTX + 1), i * 6 + 1, CTX + 1);
        d[i] = (mb_span){buf + i * (CTX + 1), CTX + 1, i, 0};
    }
    mb_split sp;
    split_of(&sp, d, ND, NULL, 0);
    mb_train_sampler s;
    assert_int_equal(mb_train_sampler_init(&s, &sp, CTX, 7), 0);
    assert_int_equal(s.n_slots, ND);
    uint8_t w[CTX + 1];
    for (int e = 0; e < 100; e++) {
        int seen[ND] = {0};
        for (int i = 0; i < ND; i++) {
            int64_t k, start;
            mb_train_sampler_next(&s, w, &k, &start);
            assert_int_equal(start, 0);
            assert_in_range(k, 0, ND - 1);
            for (int t = 0; t <= CTX; t++)
                assert_int_equal(w[t], k * 6 + 1);
            seen[k]++;
        }
        /* one epoch visits every document exactly once */
        for (int i = 0; i < ND; i++)
            assert_int_equal(seen[i], 1);
        assert_int_equal(s.epoch, e);
    }
    mb_train_sampler_free(&s);

    /* mixed lengths: window within bounds, matches the document, starts cover the range */
    static uint8_t txt[5000];
    for (int i = 0; i < 5000; i++)
        txt[i] = (uint8_t)(i * 131 + 7);
    mb_span m[3] = {{txt, 17, 0, 0}, {txt + 17, 40, 1, 0}, {txt + 57, 4943, 2, 0}};
    split_of(&sp, m, 3, NULL, 0);
    assert_int_equal(mb_train_sampler_init(&s, &sp, CTX, 9), 0);
    /* visits 1, round(40/17) = 2, round(4943/17) = 291 */
    assert_int_equal(s.n_slots, 294);
    int hit1[24] = {0}, count[3] = {0};
    for (int i = 0; i < 294 * 200; i++) {
        int64_t k, start;
        mb_train_sampler_next(&s, w, &k, &start);
        assert_true(start >= 0 && start + CTX + 1 <= m[k].len);
        assert_memory_equal(w, m[k].data + start, CTX + 1);
        if (k == 1) hit1[start]++;
        count[k]++;
    }
    assert_int_equal(count[0], 200);
    assert_int_equal(count[1], 400);
    assert_int_equal(count[2], 291 * 200);
    for (int i = 0; i <= 40 - 17; i++)
        assert_true(hit1[i] > 0); /* every start reachable */

    /* batch: targets are inputs shifted by one */
    uint8_t x[4 * CTX], y[4 * CTX];
    mb_train_sampler_batch(&s, 4, x, y);
    for (int b = 0; b < 4; b++)
        assert_memory_equal(x + b * CTX + 1, y + b * CTX, CTX - 1);
    mb_train_sampler_free(&s);
}

static void test_sampler_determinism_resume(void **st) {
    (void)st;
    static uint8_t txt[3000];
    for (int i = 0; i < 3000; i++)
        txt[i] = (uint8_t)(i * 37 + i / 256);
    mb_span m[5] = {{txt, 100, 0, 0},
                    {txt + 100, 700, 1, 0},
                    {txt + 800, 33, 2, 0},
                    {txt + 833, 2000, 3, 0},
                    {txt + 2833, 167, 4, 0}};
    mb_split sp;
    split_of(&sp, m, 5, NULL, 0);
    enum { CTX = 32, N = 600 };
    mb_train_sampler a, b, c;
    assert_int_equal(mb_train_sampler_init(&a, &sp, CTX, 42), 0);
    assert_int_equal(mb_train_sampler_init(&b, &sp, CTX, 42), 0);
    assert_int_equal(mb_train_sampler_init(&c, &sp, CTX, 43), 0);
    int64_t ka[N], sa[N];
    int differ = 0;
    for (int i = 0; i < N; i++) {
        int64_t kb, sb, kc, sc;
        mb_train_sampler_next(&a, NULL, &ka[i], &sa[i]);
        mb_train_sampler_next(&b, NULL, &kb, &sb);
        mb_train_sampler_next(&c, NULL, &kc, &sc);
        assert_int_equal(ka[i], kb);
        assert_int_equal(sa[i], sb);
        differ += ka[i] != kc || sa[i] != sc;
    }
    assert_true(differ > N / 2);
    assert_true(a.epoch >= 3); /* the run crossed epoch boundaries */

    /* resume from a state taken mid-epoch (and one exactly at an epoch end) */
    int cuts[3] = {137, (int)a.n_slots, 2 * (int)a.n_slots - 1};
    for (int ci = 0; ci < 3; ci++) {
        mb_train_sampler r;
        assert_int_equal(mb_train_sampler_init(&r, &sp, CTX, 42), 0);
        for (int i = 0; i < cuts[ci]; i++)
            mb_train_sampler_next(&r, NULL, NULL, NULL);
        mb_train_sampler_state state;
        mb_train_sampler_get_state(&r, &state);
        mb_train_sampler_free(&r);
        /* a fresh sampler with a different seed, restored */
        mb_train_sampler q;
        assert_int_equal(mb_train_sampler_init(&q, &sp, CTX, 999), 0);
        assert_int_equal(mb_train_sampler_set_state(&q, &state), 0);
        for (int i = cuts[ci]; i < N; i++) {
            int64_t k, s0;
            mb_train_sampler_next(&q, NULL, &k, &s0);
            assert_int_equal(k, ka[i]);
            assert_int_equal(s0, sa[i]);
        }
        mb_train_sampler_free(&q);
    }
    /* state of another ctx is refused */
    mb_train_sampler_state state;
    mb_train_sampler_get_state(&a, &state);
    mb_train_sampler q;
    assert_int_equal(mb_train_sampler_init(&q, &sp, CTX + 1, 1), 0);
    assert_int_equal(mb_train_sampler_set_state(&q, &state), MB_EINVAL);
    assert_non_null(strstr(mb_last_error(), "ctx"));
    mb_train_sampler_free(&q);
    mb_train_sampler_free(&a);
    mb_train_sampler_free(&b);
    mb_train_sampler_free(&c);
}

/* ---------------------------------------------------------------- evaluation */
static void test_eval_iter(void **st) {
    (void)st;
    enum { CTX = 8 };
    static uint8_t txt[200];
    for (int i = 0; i < 200; i++)
        txt[i] = (uint8_t)i;
    int64_t lens[] = {1, 2, CTX, CTX + 1, CTX + 2, 2 * CTX + 1, 3 * CTX + 1, 50};
    enum { NV = sizeof lens / sizeof *lens };
    mb_span v[NV];
    int64_t off = 0, expect = 0;
    for (int i = 0; i < NV; i++) {
        v[i] = (mb_span){txt + off, lens[i], i, 0};
        off += lens[i];
        expect += lens[i] - 1;
    }
    mb_split sp;
    split_of(&sp, NULL, 0, v, NV);
    assert_int_equal(mb_eval_predicted_bytes(&sp), expect);
    int hits[NV][64];
    memset(hits, 0, sizeof hits);
    mb_eval_iter it;
    mb_eval_iter_init(&it, &sp, CTX);
    mb_eval_window w;
    int64_t predicted = 0, windows = 0, last_span = -1;
    while (mb_eval_iter_next(&it, &w)) {
        windows++;
        assert_in_range(w.len, 2, CTX + 1);
        assert_true(w.span >= last_span); /* in order */
        last_span = w.span;
        assert_true(w.offset >= 0 && w.offset + w.len <= v[w.span].len); /* in bounds */
        assert_ptr_equal(w.bytes, v[w.span].data + w.offset);
        for (int64_t t = 1; t < w.len; t++)
            hits[w.span][w.offset + t]++;
        predicted += w.len - 1;
    }
    assert_int_equal(predicted, expect);
    for (int i = 0; i < NV; i++) {
        assert_int_equal(hits[i][0], 0);
        for (int64_t t = 1; t < lens[i]; t++)
            assert_int_equal(hits[i][t], 1);
    }
    /* windows per span: ceil((len - 1) / ctx) = 0,1,1,1,2,2,3,7 */
    assert_int_equal(windows, 0 + 1 + 1 + 1 + 2 + 2 + 3 + 7);
    /* a second walk gives the same result (re-init) */
    mb_eval_iter_init(&it, &sp, CTX);
    int64_t again = 0;
    while (mb_eval_iter_next(&it, &w))
        again += w.len - 1;
    assert_int_equal(again, expect);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pack_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pack_directory_mixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pack_jsonl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_and_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pack_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pack_content_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_identical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_shared_prefix, setup, teardown),
        cmocka_unit_test(test_sampler_short_docs),
        cmocka_unit_test(test_sampler_bounds_exact_len),
        cmocka_unit_test(test_sampler_determinism_resume),
        cmocka_unit_test(test_eval_iter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
