/* safetensors reader and writer (format: github.com/huggingface/safetensors, model.md
 * "Checkpoint formats"). A file is an 8-byte little-endian header length n, n bytes of JSON
 * mapping each tensor name to {dtype, shape, data_offsets: [begin, end]} (plus an optional
 * "__metadata__" object of strings), then the raw little-endian data; offsets are relative
 * to the end of the header and the tensors tile the data region exactly.
 *
 * The reader mmaps the file and validates everything before any tensor is used; every error
 * message names the file and, where relevant, the tensor. F32, F16 and BF16 are read (and
 * converted to fp32); other dtypes are rejected by name. The writer writes F32 (or F16/BF16
 * rounded to nearest even from fp32) through the atomic file writer. Little-endian hosts. */
#ifndef MB_IO_SAFETENSORS_H
#define MB_IO_SAFETENSORS_H

#include <stdint.h>

#include "io/atomic_file.h"

typedef enum { MB_DT_F32 = 0, MB_DT_F16 = 1, MB_DT_BF16 = 2 } mb_dtype;

#define MB_ST_MAX_DIMS 8
/* Largest header accepted (the reference implementation's limit is 100 MB). */
#define MB_ST_MAX_HEADER ((int64_t)100 * 1000 * 1000)

typedef struct {
    char *name;
    mb_dtype dtype;
    int ndim; /* 0..MB_ST_MAX_DIMS; a scalar has ndim 0 and numel 1 */
    int64_t shape[MB_ST_MAX_DIMS];
    int64_t numel;
    int64_t begin, end;  /* byte offsets into the data region */
    const uint8_t *data; /* begin of the tensor's bytes in the mapping (unaligned) */
} mb_st_tensor;

typedef struct {
    char *path;
    int fd;
    uint8_t *map; /* whole file, read-only */
    int64_t file_size;
    int64_t header_len;
    const uint8_t *data_region; /* map + 8 + header_len */
    int64_t data_size;
    mb_st_tensor *tensors; /* in header order */
    int n_tensors;
    int *by_name; /* indices of tensors sorted by name (binary search) */
    char **meta_keys, **meta_vals;
    int n_meta;
} mb_st_file;

/* Name of a dtype as written in headers ("F32", "F16", "BF16"), size in bytes. */
const char *mb_dtype_name(mb_dtype t);
int64_t mb_dtype_size(mb_dtype t);
/* Parse "F32" / "F16" / "BF16" (case-sensitive); MB_EINVAL names the string otherwise. */
int mb_dtype_parse(const char *s, mb_dtype *out);

/* IEEE binary16 / bfloat16 <-> fp32. fp32 -> 16 bit rounds to nearest, ties to even;
 * overflow gives inf, NaN stays NaN (quiet), subnormals are handled exactly. */
float mb_f16_to_f32(uint16_t h);
float mb_bf16_to_f32(uint16_t h);
uint16_t mb_f32_to_f16(float f);
uint16_t mb_f32_to_bf16(float f);

/* Open, mmap and fully validate `path`. On failure returns MB_EIO (open/stat/mmap, with
 * errno text) or MB_EFORMAT (anything malformed) naming the file (and the tensor) and leaves
 * f closed. Close with mb_st_close. */
int mb_st_open(mb_st_file *f, const char *path);
void mb_st_close(mb_st_file *f);

/* Tensor by exact name, or NULL. O(log n). */
const mb_st_tensor *mb_st_find(const mb_st_file *f, const char *name);
/* Value of a "__metadata__" key, or NULL. */
const char *mb_st_meta(const mb_st_file *f, const char *key);

/* Copy tensor t into out (numel floats, fp32, row-major), converting F16/BF16. If
 * expect_shape is non-NULL the tensor must have exactly expect_ndim dims of those sizes
 * (MB_EFORMAT naming file, tensor, both shapes). If check_finite, any NaN/inf gives
 * MB_ENONFINITE naming file, tensor and the first bad flat index. */
int mb_st_read_f32(const mb_st_file *f, const mb_st_tensor *t, int expect_ndim,
                   const int64_t *expect_shape, int check_finite, float *out);

/* Format a shape as "(a, b, c)" into buf. */
void mb_st_shape_str(char *buf, int n, int ndim, const int64_t *shape);

/* One tensor to write: fp32 data, row-major, numel = product of shape. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[MB_ST_MAX_DIMS];
    const float *data;
} mb_st_wtensor;

/* Write a safetensors file atomically: tensors in the given order, stored as `dtype`
 * (F32 verbatim; F16/BF16 rounded to nearest even), header padded with spaces to a multiple
 * of 8, "__metadata__" of meta_kv[2*i] -> meta_kv[2*i+1] (n_meta pairs; none when 0).
 * Names must be unique and non-empty (MB_EINVAL). I/O errors: MB_EIO naming the path. */
int mb_st_write(const char *path, const mb_st_wtensor *tensors, int n, const char *const *meta_kv,
                int n_meta, mb_dtype dtype);

/* The same, up to a finished temporary file (mb_atomic_finish) in *out, for the caller to
 * publish (mb_atomic_publish) together with other files, or abort. *out is zeroed on failure. */
int mb_st_write_prepared(const char *path, const mb_st_wtensor *tensors, int n,
                         const char *const *meta_kv, int n_meta, mb_dtype dtype,
                         mb_atomic_file *out);

#endif
