/* Training / evaluation data pipeline: pack raw bytes once, memory-map, split, sample.
 *
 * Inputs (bytes are bytes: 0x00 and 0xFF are ordinary bytes, binary files are accepted):
 *   - a single file: one document (format "bytes"), or JSON lines (format "jsonl", chosen for
 *     a `*.jsonl` name in "auto" mode): one document per non-blank line, the line's top-level
 *     object must have a string field "text"; its decoded UTF-8 bytes are the document
 *     (\u0000 escapes give real 0x00 bytes; a lone UTF-16 surrogate escape, as Python's json
 *     writes for broken text, gives U+FFFD's bytes with a note; a blank line is skipped).
 *   - a directory tree: each regular file is judged on its own by the single-file rule
 *     above (in "auto" format a `*.jsonl` file is read as JSON lines, any other file is one
 *     document; "bytes" / "jsonl" apply to every file). Paths are collected recursively and
 *     sorted bytewise (strcmp on the path relative to the input) for determinism. Names
 *     starting with '.' (files and directories) are skipped. Symbolic links are followed, but
 *     a directory already visited (same device and inode) is not entered again, so link loops
 *     end; dangling links, FIFOs, sockets and devices are skipped. The pack file itself is
 *     skipped if it lies inside the tree (its temporary file is hidden).
 *
 * Pack file (little-endian), built once, written atomically (hidden temporary file in the
 * pack's directory, fsync, rename, fsync of the directory), then memory-mapped read-only:
 *   off  0  char[8]  magic "MBPACK\0\1"
 *   off  8  u32      version (2; a pack of another version is rebuilt, never read)
 *   off 12  u32      source format (1 bytes, 2 jsonl, 0 a directory mixing both in "auto"
 *                    format) | 0x100 when the input was a directory
 *   off 16  u64      input fingerprint: hash of the input's real path, the format, and for
 *                    every input file its relative path, size and mtime (s and ns)
 *   off 24  i64      n_docs
 *   off 32  i64      total_bytes (sum of document lengths)
 *   off 40  i64      index offset (= 72)
 *   off 48  i64      data offset (= 72 + 16 * n_docs)
 *   off 56  u64      content hash of the documents: the stream of the data bytes followed by
 *                    the index, read as little-endian 8-byte words (a last partial word
 *                    zero-padded), each folded in by h = rotl64(h ^ w * 0x9e3779b97f4a7c15, 31)
 *                    * 0xff51afd7ed558ccd from h = 0x6d62706b68617368; the hash is then
 *                    splitmix64's finalizer of h ^ (stream length in bytes). Checked on every
 *                    open (one pass over the data, several GB/s).
 *   off 64  u64      FNV-1a hash of bytes 0..63 (header check)
 *   off 72  i64[n_docs][2]  (offset, length) of each document, in bytes from the data offset;
 *                    documents tile the data in order (offset_i = sum of earlier lengths)
 *   then    u8[total_bytes]  the documents, concatenated
 * The file size must be exactly data offset + total_bytes.
 */
#ifndef MB_TRAIN_DATA_H
#define MB_TRAIN_DATA_H

#include <stdint.h>

#include "mambabyte.h"

typedef enum {
    MB_DATA_AUTO = 0,  /* per file, also in a directory: "*.jsonl" -> jsonl; else bytes */
    MB_DATA_BYTES = 1, /* raw bytes, one document per file */
    MB_DATA_JSONL = 2, /* JSON lines with a "text" string per line */
} mb_data_format;

/* Parse a --format value: "auto", "bytes" (alias "raw", "text"), "jsonl". MB_EINVAL names the
 * value and the accepted names. */
int mb_data_format_parse(const char *name, mb_data_format *out);

/* ---------------------------------------------------------------- pack */
typedef struct {
    char path[4096];
    uint8_t *map; /* whole file, read-only mapping */
    int64_t map_len;
    int64_t n_docs;
    int64_t total_bytes;
    const int64_t *index; /* (n_docs, 2): offset, length in bytes into `bytes` */
    const uint8_t *bytes; /* total_bytes */
    uint64_t fingerprint;
    uint64_t content_hash; /* header field at offset 56, verified against the documents */
    uint32_t source;       /* header field at offset 12 */
} mb_pack;

/* Default pack location: "<out_dir>/data.pack" when out_dir is non-NULL, else "<input>.mbpack"
 * beside the input (trailing '/' of a directory removed). MB_EINVAL if it does not fit in n. */
int mb_data_pack_path(const char *input, const char *out_dir, char *buf, int64_t n);

/* Pack `input` into `pack_path` unconditionally (atomic replace). Errors: MB_EIO (names the
 * path), MB_EFORMAT for a bad JSON line ("<file>: line N: ..."), MB_EINVAL for an empty input
 * (empty file, directory without regular files, no bytes at all: names the input path). */
int mb_pack_build(const char *input, mb_data_format fmt, const char *pack_path);
/* mb_pack_build, not walking into the directory skip_dir (may be NULL) where the input tree
 * holds it (eval: the model's own directory, so that its checkpoint files are not scored as
 * data). *skipped (may be NULL) is set to 1 when the walk met and skipped it. */
int mb_pack_build_skipping(const char *input, mb_data_format fmt, const char *pack_path,
                           const char *skip_dir, int *skipped);

/* Map and validate a pack (magic, version, header hash, sizes, every index entry, content
 * hash). Errors name the pack path: MB_EIO (cannot open/map), MB_EFORMAT (truncated, bad magic,
 * bad version, index entry out of range or not tiling the data, content hash mismatch). */
int mb_pack_open(mb_pack *p, const char *pack_path);
void mb_pack_close(mb_pack *p);

/* Open the pack for `input`, (re)building it first when it is missing, unreadable, invalid,
 * or its stored fingerprint/format differs from the input's current one (size/mtime of every
 * input file). A pack of this version that fails its checks (damaged: truncated, header or
 * content hash mismatch) is rebuilt with a note on stderr naming the pack and the input.
 * The input is listed first: when it is gone, the error names it (a cached pack is never used
 * without its input). *rebuilt (may be NULL) is set to 1 when it was built, 0 when reused. */
int mb_pack_load(mb_pack *p, const char *input, mb_data_format fmt, const char *pack_path,
                 int *rebuilt);

/* Bytes of document i (0 <= i < n_docs); *len set to its length in bytes. */
const uint8_t *mb_pack_doc(const mb_pack *p, int64_t i, int64_t *len);

/* ---------------------------------------------------------------- split */
/* A document (or, for a single-document input, a byte range of it) used for training or
 * validation. */
typedef struct {
    const uint8_t *data; /* first byte */
    int64_t len;         /* bytes */
    int64_t doc;         /* document index in its pack */
    int64_t offset;      /* byte offset of `data` within that document */
} mb_span;

typedef struct {
    mb_span *train;
    int64_t n_train;
    mb_span *val;
    int64_t n_val;
    int by_bytes; /* 1: single document split by bytes */
    /* with a validation pack: its documents of at least 2 bytes that are byte-identical to a
     * training document (kept: the caller warns); 0 for a held-out split (none there) */
    int64_t n_val_identical;
} mb_split;

/* Split `p` into training and validation, deterministically and independently of any seed.
 *   - val_pack non-NULL: every document of p is training, every document of val_pack is
 *     validation (val_fraction ignored); those identical to a training document are counted in
 *     n_val_identical (hash table of the validation documents by length and content hash, a
 *     training document hashed only when its length occurs there, equality by memcmp: at most
 *     one pass over the bytes, memory O(validation documents)).
 *   - p has >= 2 documents: document i is validation when
 *       h = mix(FNV-1a(len as 8 LE bytes, first min(len, 1024) bytes)),  h / 2^64 < val_fraction
 *     (content based, so identical documents land on the same side and adding files does not
 *     move others). With val_fraction > 0 at least one document is validation (the non-empty
 *     one of smallest hash) and at least one stays training (the one of largest hash); the
 *     documents of that hash move with it, so that identical documents stay on one side.
 *   - p has 1 document of n bytes: by bytes. The last v = round(val_fraction * n) bytes
 *     (at least 2 when val_fraction > 0, at most n - 1) are the validation span, the first
 *     n - v bytes the training span.
 * val_fraction in [0, 1) else MB_EINVAL. Spans point into the mapped packs (keep them open). */
int mb_split_make(mb_split *s, const mb_pack *p, const mb_pack *val_pack, double val_fraction);
void mb_split_free(mb_split *s);

/* ---------------------------------------------------------------- training sampler */
/* Random windows of ctx + 1 bytes (inputs = first ctx, targets = the same shifted by one).
 * Documents shorter than ctx + 1 are skipped (counted in n_skipped); never padded.
 * Weighting: training span i gets visits_i = max(1, round(len_i / (ctx + 1))) slots per epoch,
 * so every byte is seen about once per epoch whatever the document lengths. Each epoch the
 * slot list (canonical order: span 0's slots, span 1's, ...) is shuffled with mb_rng
 * (Fisher-Yates) and walked in order; each slot draws a start uniformly in [0, len - ctx - 1]
 * (mb_rng_below(len - ctx)), so the window always lies inside one document. */
typedef struct {
    const mb_span *spans;
    int64_t ctx;
    uint32_t *slots; /* span index per slot, shuffled for the current epoch */
    int64_t n_slots;
    int64_t n_used, n_skipped; /* training spans used / skipped as shorter than ctx + 1 */
    int64_t skipped_bytes;
    mb_rng rng;       /* draws starts and the next epoch's shuffle */
    mb_rng epoch_rng; /* rng state just before this epoch's shuffle */
    int64_t epoch;    /* 0-based */
    int64_t pos;      /* next slot of this epoch */
} mb_train_sampler;

/* Resumable state: plain integers only. ctx and n_slots are checked by set_state. */
typedef struct {
    uint64_t rng[4];
    uint64_t epoch_rng[4];
    int64_t epoch;
    int64_t pos;
    int64_t ctx;
    int64_t n_slots;
} mb_train_sampler_state;

/* ctx >= 1. MB_EINVAL when no training span has ctx + 1 bytes (message names ctx and the
 * longest training document length), or when the split has no training spans. The split
 * must outlive the sampler. Epoch 0 is shuffled here from `seed`. */
int mb_train_sampler_init(mb_train_sampler *s, const mb_split *sp, int64_t ctx, uint64_t seed);
void mb_train_sampler_free(mb_train_sampler *s);
/* Next window: copies ctx + 1 bytes into `window` (may be NULL); *span / *start (may be NULL)
 * receive the span index and the start offset within the span. Moves to the next epoch
 * (reshuffling) when this one is exhausted. */
void mb_train_sampler_next(mb_train_sampler *s, uint8_t *window, int64_t *span, int64_t *start);
/* B windows: x (B, ctx) inputs and y (B, ctx) targets (y[b][t] = byte after x[b][t]). */
void mb_train_sampler_batch(mb_train_sampler *s, int64_t B, uint8_t *x, uint8_t *y);
void mb_train_sampler_get_state(const mb_train_sampler *s, mb_train_sampler_state *st);
/* Restore a state from get_state (same split and ctx): the following windows are identical.
 * MB_EINVAL when ctx / n_slots differ or epoch/pos are out of range. */
int mb_train_sampler_set_state(mb_train_sampler *s, const mb_train_sampler_state *st);
/* Continue a saved state's random stream on other data (a resume whose data changed): starts
 * epoch st->epoch + 1, shuffled from st->rng, at its first slot. Not an exact continuation. */
void mb_train_sampler_restart(mb_train_sampler *s, const mb_train_sampler_state *st);

/* ---------------------------------------------------------------- evaluation iterator */
/* Walks validation spans in order; span j of n bytes yields windows starting at 0, ctx, 2ctx,
 * ... of min(ctx + 1, n - start) bytes, skipping windows of fewer than 2 bytes. Consecutive
 * windows overlap by one byte, so every byte of a span except its first is a target exactly
 * once (n - 1 predictions per span). The caller predicts bytes[1..len) from bytes[0..len-1)
 * and scores only those len - 1 real bytes. offset == 0 marks the start of a span. */
typedef struct {
    const uint8_t *bytes;
    int64_t len;    /* 2..ctx+1 */
    int64_t span;   /* validation span index */
    int64_t offset; /* start of the window within the span */
} mb_eval_window;

typedef struct {
    const mb_split *sp;
    int64_t ctx;
    int64_t span;
    int64_t offset;
} mb_eval_iter;

void mb_eval_iter_init(mb_eval_iter *it, const mb_split *sp, int64_t ctx);
/* 1 and fills *w while windows remain, 0 at the end. */
int mb_eval_iter_next(mb_eval_iter *it, mb_eval_window *w);
/* Number of predicted bytes over all validation spans: sum of max(0, len - 1). */
int64_t mb_eval_predicted_bytes(const mb_split *sp);

#endif
