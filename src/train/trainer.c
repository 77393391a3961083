/* The training loop: data -> forward/backward -> clip -> AdamW, with validation, metrics,
 * atomic checkpoints and exact resume. */
#include "train/trainer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "eval/evaluate.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/printable.h"
#include "io/safetensors.h"
#include "plural.h"
#include "train/adamw.h"
#include "train/backend.h"
#include "train/data.h"
#include "train/schedule.h"

#define TRAIN_STATE_FILE "train_state.safetensors"
#define TRAIN_STATE_VERSION "1"

void mb_train_opts_default(mb_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->format = "auto";
    mb_config_preset(&o->cfg, "small");
    o->ctx = 1024;
    o->batch = 8;
    o->accum = 1;
    o->lr = 4e-4;
    o->lr_min = 4e-5;
    o->warmup = 500;
    o->weight_decay = 0.1;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-8;
    o->clip = 1.0;
    o->seed = 1337;
    o->val_fraction = 0.01;
    o->eval_every = 100;
    o->eval_bytes = 256 * 1024;
    o->final_eval_bytes = 4 * 1024 * 1024;
    o->precision = "auto";
    o->recompute = -1;
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return mb_fail(MB_EINVAL, "--out: path too long");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) && errno != EEXIST)
            return mb_fail(MB_EIO, "cannot create directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST)
        return mb_fail(MB_EIO, "cannot create directory %s: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) || !S_ISDIR(st.st_mode))
        return mb_fail(MB_EINVAL, "--out %s exists and is not a directory", buf);
    return MB_OK;
}

/* One run per checkpoint directory at a time: an exclusive flock on DIR/.lock, held until the
 * process exits. Returns the descriptor, or -1 with the error set. */
static int lock_out_dir(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return mb_fail(MB_EIO, "cannot open %s: %s", path, strerror(errno)), -1;
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        close(fd);
        return mb_fail(MB_EINVAL, "%s is in use by another training run (lock %s)", dir, path), -1;
    }
    return fd;
}

/* 1 when paths a and b name the same file or directory (through links, "dir/.") */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* 1 when another process holds dir/.lock (a training run in progress); creates nothing */
static int out_dir_locked(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/.lock", dir);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    const int held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

/* One line of metrics.jsonl read back: 1 when it is a whole line (newline-terminated) holding
 * one JSON object with an integer "step" >= 0 (*step), *final and *val set from its "final" and
 * "val_bpb" fields; 0 for anything else (a torn last line, text that is not ours). */
static int metrics_record(const char *line, size_t len, int64_t *step, int *final, int *val) {
    if (len == 0 || line[len - 1] != '\n') return 0;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!j) return 0;
    int ok = cJSON_IsObject(j) && end;
    for (const char *q = end; ok && q < line + len; q++)
        ok = *q == ' ' || *q == '\t' || *q == '\r' || *q == '\n';
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
    ok = ok && cJSON_IsNumber(s) && s->valuedouble >= 0 && s->valuedouble <= 9e15 &&
         s->valuedouble == floor(s->valuedouble);
    if (ok) {
        *step = (int64_t)s->valuedouble;
        *final = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "final"));
        *val = cJSON_GetObjectItemCaseSensitive(j, "val_bpb") != NULL;
    }
    cJSON_Delete(j);
    return ok;
}

/* Keep only the metrics records of steps <= step (a resumed run rewrites what came after its
 * checkpoint), without the final validation line of `step`; lines that are not records (a
 * torn last line of a killed run, other text) are dropped, with a note. When a line is to be
 * dropped the file is replaced atomically (temporary file with the file's permission bits,
 * fsync, rename; a symlink's target is rewritten, the link stays); otherwise it is left as it
 * is. *have_val: 1 when a periodic validation line of `step` is kept. Missing file: nothing to
 * do. */
static int truncate_metrics(const char *path, int64_t step, int *have_val) {
    *have_val = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? MB_OK
                               : mb_fail(MB_EIO, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long long unreadable = 0, later = 0;
    int rc = MB_OK, writing = 0;
    mb_atomic_file af;
    char *target = NULL;
    /* pass 1 counts what would be dropped; pass 2 (only then) writes what is kept */
    for (int pass = 1; pass <= 2 && rc == MB_OK; pass++) {
        if (pass == 2) {
            if (!unreadable && !later) break;
            struct stat st;
            target = realpath(path, NULL); /* (a symlink: its target is rewritten) */
            if (!target) {
                rc = mb_fail(MB_EIO, "cannot resolve %s: %s", path, strerror(errno));
                break;
            }
            if (fstat(fileno(f), &st)) {
                rc = mb_fail(MB_EIO, "cannot stat %s: %s", path, strerror(errno));
                break;
            }
            if ((rc = mb_atomic_open(&af, target))) break;
            writing = 1;
            if (fchmod(fileno(af.f), st.st_mode & 07777)) {
                rc = mb_fail(MB_EIO, "cannot set the permissions of %s: %s", af.tmp,
                             strerror(errno));
                break;
            }
            rewind(f);
        }
        while (rc == MB_OK && (len = getline(&line, &cap, f)) > 0) {
            int64_t s;
            int final, val;
            if (!metrics_record(line, (size_t)len, &s, &final, &val)) {
                if (pass == 1) unreadable++;
                continue;
            }
            if (s > step || (s == step && final)) {
                if (pass == 1) later++;
                continue;
            }
            if (pass == 1 && s == step && val) *have_val = 1;
            if (pass == 2) rc = mb_atomic_write(&af, line, len);
        }
        if (rc == MB_OK && ferror(f))
            rc = mb_fail(MB_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    free(line);
    fclose(f);
    if (rc) {
        if (writing) mb_atomic_abort(&af);
        free(target);
        return rc;
    }
    if (unreadable)
        fprintf(stderr, "note: %s: dropped %lld line%s that %s not a metrics record\n", path,
                unreadable, unreadable == 1 ? "" : "s", unreadable == 1 ? "is" : "are");
    rc = writing ? mb_atomic_commit(&af) : MB_OK;
    free(target);
    return rc;
}

/* metrics.jsonl.prev: the log of the run whose checkpoint a fresh run (--force) found in --out,
 * kept until the new run's first checkpoint replaces that checkpoint, so that the log on disk
 * always goes with the checkpoint on disk. metrics.jsonl.prev.ckpt records which checkpoint that
 * is (the device and inode of its model.safetensors, which every checkpoint replaces by a
 * rename), so that a run killed between its first checkpoint and the removal of the .prev does
 * not get the earlier log back on --resume. */
static void prev_metrics_path(char *buf, size_t n, const char *metrics) {
    snprintf(buf, n, "%s.prev", metrics);
}
static void prev_ckpt_path(char *buf, size_t n, const char *metrics) {
    snprintf(buf, n, "%s.prev.ckpt", metrics);
}

/* 1 when the .prev log goes with the checkpoint whose model file is `model`: the recorded
 * identity is that file's, or there is no readable record (a .prev of an earlier version) */
static int prev_goes_with(const char *metrics, const char *model) {
    char rec[4300];
    prev_ckpt_path(rec, sizeof rec, metrics);
    FILE *f = fopen(rec, "r");
    if (!f) return 1;
    unsigned long long dev = 0, ino = 0;
    const int n = fscanf(f, "model %llu %llu", &dev, &ino);
    fclose(f);
    struct stat st;
    if (n != 2) return 1;
    return stat(model, &st) == 0 && (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino;
}

/* The .prev log and its record go (best effort: a record without its log is ignored). */
static void drop_prev_metrics(const char *metrics) {
    char prev[4300], rec[4300];
    prev_metrics_path(prev, sizeof prev, metrics);
    prev_ckpt_path(rec, sizeof rec, metrics);
    const int had = unlink(prev) == 0;
    if (unlink(rec) == 0 || had) (void)mb_atomic_sync_dir(prev);
}

/* A fresh run over an earlier run's checkpoint (model file `model`): the earlier log becomes
 * metrics.jsonl.prev, after the record of the checkpoint it goes with (written atomically; then
 * the rename and an fsync of the directory) before this run starts its own. A .prev already there
 * that goes with the checkpoint (a --force run that stopped before its first checkpoint left it,
 * and its own metrics.jsonl goes with no checkpoint) stays, and metrics.jsonl is replaced; one
 * that does not (the checkpoint is a later run's, whose log is metrics.jsonl) is dropped first. */
static int keep_prev_metrics(const char *path, const char *model) {
    char prev[4300], rec[4300];
    prev_metrics_path(prev, sizeof prev, path);
    prev_ckpt_path(rec, sizeof rec, path);
    if (access(prev, F_OK) == 0) {
        if (prev_goes_with(path, model)) return MB_OK;
        drop_prev_metrics(path);
    }
    struct stat st;
    if (stat(model, &st)) return mb_fail(MB_EIO, "cannot stat %s: %s", model, strerror(errno));
    char id[64];
    const int n = snprintf(id, sizeof id, "model %llu %llu\n", (unsigned long long)st.st_dev,
                           (unsigned long long)st.st_ino);
    int rc = mb_atomic_write_file(rec, id, n);
    if (rc) return rc;
    if (rename(path, prev)) {
        const int e = errno;
        unlink(rec);
        if (e == ENOENT) return MB_OK; /* (the earlier run left no log) */
        return mb_fail(MB_EIO, "cannot rename %s to %s: %s", path, prev, strerror(e));
    }
    return mb_atomic_sync_dir(path);
}

/* --resume: a metrics.jsonl.prev that goes with the checkpoint on disk means the run that left
 * metrics.jsonl stopped before its first checkpoint, so the checkpoint is the earlier run's: its
 * log is put back. One that does not (that run was stopped between its first checkpoint and the
 * removal of the .prev) is dropped: metrics.jsonl is the checkpoint's log. */
static int restore_prev_metrics(const char *path, const char *model) {
    char prev[4300], rec[4300];
    prev_metrics_path(prev, sizeof prev, path);
    prev_ckpt_path(rec, sizeof rec, path);
    if (access(prev, F_OK) != 0) {
        if (unlink(rec) == 0) (void)mb_atomic_sync_dir(rec); /* (a record without its log) */
        return MB_OK;
    }
    if (!prev_goes_with(path, model)) {
        drop_prev_metrics(path);
        fprintf(stderr,
                "note: %s removed (the run that replaced it had written its first checkpoint; "
                "%s goes with that checkpoint)\n",
                prev, path);
        return MB_OK;
    }
    if (rename(prev, path))
        return mb_fail(MB_EIO, "cannot rename %s to %s: %s", prev, path, strerror(errno));
    (void)unlink(rec);
    int rc = mb_atomic_sync_dir(path);
    if (rc) return rc;
    fprintf(stderr,
            "note: %s restored from %s (the run that replaced it stopped before its first "
            "checkpoint; the checkpoint is the earlier run's)\n",
            path, prev);
    return MB_OK;
}

/* FNV-1a over the parameter bits: ties train_state to the model file it was written with. */
static uint64_t params_hash(const mb_model *m) {
    const uint8_t *p = (const uint8_t *)m->params;
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i < m->n_params * (int64_t)sizeof(float); i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* ------------------------------------------------------------------ train state file */
typedef struct {
    int64_t step;        /* optimizer steps done */
    int64_t total_steps; /* schedule length */
    int64_t bytes_seen;
    double elapsed;
    mb_train_sampler_state sampler;
    /* content hashes of the packs trained on (data.h): saved as metadata "data_hash"
     * ("train=<hex16> val=<hex16>", val=none when validation is split from --data) so that a
     * resume notices other data; have_data_hash 0 for a train state written without it */
    int have_data_hash, has_val_hash;
    uint64_t train_hash, val_hash;
} run_state;

static int save_train_state(const char *dir, const mb_train_opts *o, const mb_model *m,
                            const mb_adamw *opt, const run_state *rs, mb_atomic_file *af) {
    char path[4200], k[16][32], v[16][512];
    snprintf(path, sizeof path, "%s/%s", dir, TRAIN_STATE_FILE);
    const mb_train_sampler_state *s = &rs->sampler;
    int n = 0;
#define META(key, ...)                                                                             \
    (snprintf(k[n], sizeof k[n], "%s", key), snprintf(v[n], sizeof v[n], __VA_ARGS__), n++)
    META("version", TRAIN_STATE_VERSION);
    META("step", "%" PRId64, rs->step);
    META("total_steps", "%" PRId64, rs->total_steps);
    META("bytes_seen", "%" PRId64, rs->bytes_seen);
    META("elapsed", "%.17g", rs->elapsed);
    META("params_hash", "%016" PRIx64, params_hash(m));
    if (rs->has_val_hash)
        META("data_hash", "train=%016" PRIx64 " val=%016" PRIx64, rs->train_hash, rs->val_hash);
    else
        META("data_hash", "train=%016" PRIx64 " val=none", rs->train_hash);
    META("sampler",
         "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
         " %" PRIu64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64,
         s->rng[0], s->rng[1], s->rng[2], s->rng[3], s->epoch_rng[0], s->epoch_rng[1],
         s->epoch_rng[2], s->epoch_rng[3], s->epoch, s->pos, s->ctx, s->n_slots);
    META("data",
         "ctx=%" PRId64 " batch=%" PRId64 " accum=%" PRId64 " seed=%" PRIu64 " val_fraction=%.17g",
         o->ctx, o->batch, o->accum, o->seed, o->val_fraction);
    META("optim",
         "lr=%.17g lr_min=%.17g warmup=%" PRId64 " weight_decay=%.17g beta1=%.17g "
         "beta2=%.17g eps=%.17g clip=%.17g adam_step=%" PRId64,
         o->lr, o->lr_min, o->warmup, o->weight_decay, o->beta1, o->beta2, o->eps, o->clip,
         opt->step);
    META("eval", "eval_every=%" PRId64 " eval_bytes=%" PRId64 " final_eval_bytes=%" PRId64,
         o->eval_every, o->eval_bytes, o->final_eval_bytes);
#undef META
    const char *kv[32];
    for (int i = 0; i < n; i++)
        kv[2 * i] = k[i], kv[2 * i + 1] = v[i];
    mb_st_wtensor t[2] = {
        {.name = "adamw.exp_avg", .ndim = 1, .shape = {opt->n}, .data = opt->m},
        {.name = "adamw.exp_avg_sq", .ndim = 1, .shape = {opt->n}, .data = opt->v},
    };
    return mb_st_write_prepared(path, t, 2, kv, n, MB_DT_F32, af);
}

/* s (up to the end or a space) as a whole decimal integer in [lo, hi] / a finite number in
 * [lo, hi]; -1 for anything else ("7x", "", "nan", out of range) */
static int parse_i64_token(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (end == s || errno || (*end && *end != ' ') || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}
static int parse_f64_token(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (end == s || errno || (*end && *end != ' ') || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}
static int parse_kv_i64(const char *s, const char *key, int64_t *out) {
    const char *p = strstr(s, key);
    return p ? parse_i64_token(p + strlen(key), INT64_MIN, INT64_MAX, out) : -1;
}
static int parse_kv_f64(const char *s, const char *key, double *out) {
    const char *p = strstr(s, key);
    return p ? parse_f64_token(p + strlen(key), -DBL_MAX, DBL_MAX, out) : -1;
}

/* A validation size on resume (it does not change the training): the one given replaces the
 * saved one, with a note where they differ; else the saved one (have_saved: the train state
 * holds it) */
static void resume_eval_size(int64_t *v, int given, int64_t saved, int have_saved,
                             const char *field) {
    if (!given)
        *v = saved;
    else if (have_saved && *v != saved)
        fprintf(stderr, "note: %s %lld as given (the run saved %lld)\n", field, (long long)*v,
                (long long)saved);
}

/* Load train state; restores the data and optimizer options into *o (exact resume). */
static int load_train_state(const char *dir, mb_train_opts *o, const mb_model *m, mb_adamw *opt,
                            run_state *rs) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, TRAIN_STATE_FILE);
    mb_st_file f;
    int rc = mb_st_open(&f, path);
    if (rc) return rc;
    rc = mb_fail(MB_EFORMAT, "%s: missing or malformed metadata", path);
    const char *ver = mb_st_meta(&f, "version"), *step = mb_st_meta(&f, "step"),
               *tot = mb_st_meta(&f, "total_steps"), *seen = mb_st_meta(&f, "bytes_seen"),
               *el = mb_st_meta(&f, "elapsed"), *ph = mb_st_meta(&f, "params_hash"),
               *smp = mb_st_meta(&f, "sampler"), *data = mb_st_meta(&f, "data"),
               *optim = mb_st_meta(&f, "optim");
    const mb_st_tensor *tm = mb_st_find(&f, "adamw.exp_avg"),
                       *tv = mb_st_find(&f, "adamw.exp_avg_sq");
    if (!ver || !step || !tot || !seen || !el || !ph || !smp || !data || !optim) goto out;
    if (strcmp(ver, TRAIN_STATE_VERSION) != 0) {
        char shown[MB_PRINTABLE_BUF];
        rc = mb_fail(MB_EFORMAT, "%s: unsupported train state version '%s'", path,
                     mb_printable(ver, shown));
        goto out;
    }
    if (!tm || !tv) {
        rc = mb_fail(MB_EFORMAT, "%s: tensor adamw.exp_avg / adamw.exp_avg_sq missing", path);
        goto out;
    }
    if (strtoull(ph, NULL, 16) != params_hash(m)) {
        rc = mb_fail(MB_EFORMAT,
                     "%s: written with other weights than %s/model.safetensors (a checkpoint "
                     "interrupted between its two files, with no matching %s.tmp.* to "
                     "complete it); cannot resume exactly: start again with --force (or another "
                     "--out), or restore both files of one checkpoint from a backup",
                     path, dir, TRAIN_STATE_FILE);
        goto out;
    }
    int64_t shape[1] = {m->n_params};
    if ((rc = mb_st_read_f32(&f, tm, 1, shape, 1, opt->m)) ||
        (rc = mb_st_read_f32(&f, tv, 1, shape, 1, opt->v)))
        goto out;
    /* exp_avg_sq as AdamW's update needs it: >= 0 (the reader has refused non-finite values; a
     * negative one would give the sqrt of a negative number, caught only a step later as NaN) */
    for (int64_t i = 0; i < m->n_params; i++)
        if (opt->v[i] < 0.0f) {
            rc = mb_fail(MB_EFORMAT,
                         "%s: tensor adamw.exp_avg_sq: negative value (%g) at flat index %lld (it "
                         "must be >= 0)",
                         path, (double)opt->v[i], (long long)i);
            goto out;
        }
    {
        const char *bad = NULL, *val = NULL;
        if (parse_i64_token(step, 0, INT64_MAX / 4, &rs->step))
            bad = "step", val = step;
        else if (parse_i64_token(tot, 0, INT64_MAX / 4, &rs->total_steps))
            bad = "total_steps", val = tot;
        else if (parse_i64_token(seen, 0, INT64_MAX, &rs->bytes_seen))
            bad = "bytes_seen", val = seen;
        else if (parse_f64_token(el, 0.0, 1e15, &rs->elapsed))
            bad = "elapsed", val = el;
        if (bad) {
            char shown[MB_PRINTABLE_BUF];
            rc = mb_fail(MB_EFORMAT, "%s: metadata '%s' is not a non-negative number ('%s')", path,
                         bad, mb_printable(val, shown));
            goto out;
        }
    }
    mb_train_sampler_state *s = &rs->sampler;
    if (sscanf(smp,
               "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
               " %" SCNu64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64,
               &s->rng[0], &s->rng[1], &s->rng[2], &s->rng[3], &s->epoch_rng[0], &s->epoch_rng[1],
               &s->epoch_rng[2], &s->epoch_rng[3], &s->epoch, &s->pos, &s->ctx,
               &s->n_slots) != 12) {
        rc = mb_fail(MB_EFORMAT, "%s: metadata 'sampler' is malformed", path);
        goto out;
    }
    int64_t seed, adam_step;
    if (parse_kv_i64(data, "ctx=", &o->ctx) || parse_kv_i64(data, "batch=", &o->batch) ||
        parse_kv_i64(data, "accum=", &o->accum) || parse_kv_i64(data, "seed=", &seed) ||
        parse_kv_f64(data, "val_fraction=", &o->val_fraction) ||
        parse_kv_f64(optim, "lr=", &o->lr) || parse_kv_f64(optim, "lr_min=", &o->lr_min) ||
        parse_kv_i64(optim, "warmup=", &o->warmup) ||
        parse_kv_f64(optim, "weight_decay=", &o->weight_decay) ||
        parse_kv_f64(optim, "beta1=", &o->beta1) || parse_kv_f64(optim, "beta2=", &o->beta2) ||
        parse_kv_f64(optim, "eps=", &o->eps) || parse_kv_f64(optim, "clip=", &o->clip) ||
        parse_kv_i64(optim, "adam_step=", &adam_step)) {
        rc = mb_fail(MB_EFORMAT, "%s: metadata 'data' or 'optim' is malformed", path);
        goto out;
    }
    {
        /* the settings within the limits train's options have (cmd_train.c), so a hand-edited
         * or corrupt state is refused here, named, instead of training with a negative lr */
        const struct {
            const char *meta, *key;
            double v, lo, hi;
        } r[] = {
            {"data", "ctx", (double)o->ctx, 1, 1 << 24},
            {"data", "batch", (double)o->batch, 1, 1 << 16},
            {"data", "accum", (double)o->accum, 1, 1 << 16},
            {"data", "val_fraction", o->val_fraction, 0, 0.999},
            {"optim", "lr", o->lr, 0, 10},
            {"optim", "lr_min", o->lr_min, 0, 10}, /* (above lr in runs started before the
                                                    * CLI refused that: they still resume) */
            {"optim", "warmup", (double)o->warmup, 0, (double)(INT64_MAX / 2)},
            {"optim", "weight_decay", o->weight_decay, 0, 10},
            {"optim", "beta1", o->beta1, 0, 0.9999999},
            {"optim", "beta2", o->beta2, 0, 0.9999999},
            {"optim", "eps", o->eps, 1e-30, 1},
            {"optim", "clip", o->clip, 0, 1e9},
            {"optim", "adam_step", (double)adam_step, 0, (double)(INT64_MAX / 4)},
        };
        for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
            if (!(r[i].v >= r[i].lo && r[i].v <= r[i].hi)) {
                rc = mb_fail(MB_EFORMAT, "%s: metadata '%s': %s=%.17g is outside [%g, %g]", path,
                             r[i].meta, r[i].key, r[i].v, r[i].lo, r[i].hi);
                goto out;
            }
    }
    o->seed = (uint64_t)seed;
    opt->step = adam_step;
    /* the validation cadence and sizes (absent in older train states: the caller's values
     * stay; eval_bytes and final_eval_bytes are saved since session 36) */
    const char *ev = mb_st_meta(&f, "eval");
    if (ev) {
        const char *p = strstr(ev, "eval_every=");
        const char *pb = strstr(ev, " eval_bytes="), *pf = strstr(ev, " final_eval_bytes=");
        int64_t every, eb = o->eval_bytes, fb = o->final_eval_bytes;
        if (!p || parse_i64_token(p + 11, 0, INT64_MAX / 2, &every) ||
            (pb && parse_i64_token(pb + 12, 0, INT64_MAX / 2, &eb)) ||
            (pf && parse_i64_token(pf + 18, 0, INT64_MAX / 2, &fb))) {
            char shown[MB_PRINTABLE_BUF];
            rc = mb_fail(MB_EFORMAT, "%s: metadata 'eval' is malformed ('%s')", path,
                         mb_printable(ev, shown));
            goto out;
        }
        o->eval_every = every;
        resume_eval_size(&o->eval_bytes, o->eval_bytes_given, eb, pb != NULL, "eval_bytes");
        resume_eval_size(&o->final_eval_bytes, o->final_eval_bytes_given, fb, pf != NULL,
                         "final_eval_bytes");
    }
    const char *dh = mb_st_meta(&f, "data_hash"); /* (absent in older train states) */
    if (dh) {
        const char *tp = strstr(dh, "train="), *vp = strstr(dh, "val=");
        char *e1 = NULL, *e2 = NULL;
        if (tp) rs->train_hash = strtoull(tp + 6, &e1, 16);
        if (vp && strncmp(vp + 4, "none", 4) != 0) {
            rs->val_hash = strtoull(vp + 4, &e2, 16);
            rs->has_val_hash = 1;
        }
        if (!tp || !vp || e1 != tp + 22 || (rs->has_val_hash && e2 != vp + 20)) {
            rc = mb_fail(MB_EFORMAT, "%s: metadata 'data_hash' is malformed", path);
            goto out;
        }
        rs->have_data_hash = 1;
    }
    opt->beta1 = (float)o->beta1, opt->beta2 = (float)o->beta2, opt->eps = (float)o->eps;
    opt->weight_decay = (float)o->weight_decay;
    rc = MB_OK;
out:
    mb_st_close(&f);
    return rc;
}

/* Is name "<base>.tmp.<digits>" (a temporary file of mb_atomic_open)? */
static int is_tmp_of(const char *name, const char *base) {
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) return 0;
    const char *p = name + n + 5;
    if (!*p) return 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

/* Roll an interrupted checkpoint forward: save_checkpoint renames the model, then the train
 * state, both complete and fsynced under temporary names before the first rename; a kill
 * between the renames leaves the new model beside the old train state and the new train state
 * as DIR/train_state.safetensors.tmp.PID. When train_state.safetensors does not name the
 * loaded model's hash (or is missing), the temporary one that does is renamed into place.
 * None matching is not an error here: load_train_state reports the mismatch. */
static int roll_forward_train_state(const char *dir, const mb_model *m) {
    char path[4200], cand[4200], found[4200] = "";
    snprintf(path, sizeof path, "%s/%s", dir, TRAIN_STATE_FILE);
    const uint64_t want = params_hash(m);
    mb_st_file f;
    if (mb_st_open(&f, path) == MB_OK) {
        const char *ph = mb_st_meta(&f, "params_hash");
        const int match = ph && strtoull(ph, NULL, 16) == want;
        mb_st_close(&f);
        if (match) return MB_OK;
    }
    DIR *d = opendir(dir);
    if (!d) return MB_OK;
    long long step = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_tmp_of(e->d_name, TRAIN_STATE_FILE)) continue;
        if (snprintf(cand, sizeof cand, "%s/%s", dir, e->d_name) >= (int)sizeof cand) continue;
        if (mb_st_open(&f, cand)) continue; /* a torn temporary (killed while writing) */
        const char *ph = mb_st_meta(&f, "params_hash"), *st = mb_st_meta(&f, "step");
        if (ph && st && strtoull(ph, NULL, 16) == want && strtoll(st, NULL, 10) > step) {
            step = strtoll(st, NULL, 10);
            snprintf(found, sizeof found, "%s", cand);
        }
        mb_st_close(&f);
    }
    closedir(d);
    if (!found[0]) return MB_OK;
    if (rename(found, path))
        return mb_fail(MB_EIO, "cannot complete the interrupted checkpoint: rename %s to %s: %s",
                       found, path, strerror(errno));
    (void)mb_atomic_sync_dir(path); /* (best effort: the rename is done) */
    fprintf(stderr, "note: completed the interrupted checkpoint at step %lld from %s\n", step,
            found);
    return MB_OK;
}

/* Delete the temporary files of checkpoints interrupted by a kill (the caller holds the
 * directory's lock, so no other run is writing them). */
static void remove_stale_tmp(const char *dir) {
    static const char *const bases[] = {"model.safetensors", TRAIN_STATE_FILE, "config.json",
                                        "metrics.jsonl",     ".data.pack",     ".val.pack"};
    char p[4200];
    int n = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        for (size_t i = 0; i < sizeof bases / sizeof *bases; i++)
            if (is_tmp_of(e->d_name, bases[i]) &&
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p && unlink(p) == 0)
                n++;
    closedir(d);
    if (n)
        fprintf(stderr, "note: removed %d leftover temporary file%s in %s\n", n, n == 1 ? "" : "s",
                dir);
}

/* What a stop on a non-finite value leaves in --out, for its message. */
static void ckpt_on_disk(char *buf, size_t n, const char *out, int64_t saved_step, int earlier) {
    if (saved_step >= 0)
        snprintf(buf, n, "the last checkpoint in %s (step %lld) is intact", out,
                 (long long)saved_step);
    else if (earlier)
        snprintf(buf, n,
                 "no checkpoint of this run was written yet (the one in %s is an earlier "
                 "run's)",
                 out);
    else
        snprintf(buf, n, "no checkpoint was written yet (%s holds none)", out);
}

/* Steps that fit in `left` seconds at the speed of `done` steps in `spent` seconds (0 when no
 * time is left or no step was timed; at most 1e15) */
static int64_t steps_left(double left, double spent, int64_t done) {
    if (!(left > 0) || done <= 0 || !(spent > 0)) return 0;
    return (int64_t)fmin(left / (spent / (double)done), 1e15);
}

/* rc with the last error message set to before + message + after ("--val: data file ...") */
static int fail_wrap(int rc, const char *before, const char *after) {
    char msg[8192]; /* mb_last_error()'s size: a long path keeps the reason after it */
    snprintf(msg, sizeof msg, "%s", mb_last_error());
    return mb_fail(rc, "%s%s%s", before, msg, after);
}

static int save_checkpoint(const mb_train_opts *o, const mb_model *m, const mb_adamw *opt,
                           const run_state *rs) {
    /* Both files complete on disk (temporary names, fsynced) before either replaces the old
     * one, so that a write error (a full disk) leaves the previous checkpoint whole; then the
     * model, then the train state that names its hash: a crash between the two renames is
     * detected on resume instead of silently mixing steps. */
    mb_atomic_file w, ts;
    int rc = mb_checkpoint_prepare(o->out, m, MB_CKPT_MAMBA_SSM, MB_DT_F32, &w);
    if (rc) return rc;
    rc = save_train_state(o->out, o, m, opt, rs, &ts);
    if (rc) {
        mb_atomic_abort(&w);
        return rc;
    }
    rc = mb_atomic_publish(&w);
    if (rc) {
        mb_atomic_abort(&ts);
        return rc;
    }
    return mb_atomic_publish(&ts);
}

/* ------------------------------------------------------------------ validation */
typedef struct {
    mb_doc *docs;
    int64_t n;
} doc_list;

/* SIGINT / SIGTERM / SIGHUP / SIGPIPE during training: the loop finishes its step (a validation
 * pass stops at its next window), writes a checkpoint and stops. A second signal prints one line
 * (write(2): async-signal-safe) saying what is on disk, and ends the process at once by the
 * signal's default action; the last checkpoint written, if any, is intact. The line is prepared
 * outside the handler (set_second_signal_note) in one of two buffers, g_note_cur naming the
 * complete one. */
static const int k_train_signals[4] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
static volatile sig_atomic_t g_signal = 0, g_pipe = 0;
/* the signal that stops the run (SIGPIPE where only the pipe closed), 0 while none has come */
static int stop_signal(void) {
    return g_signal ? (int)g_signal : g_pipe ? SIGPIPE : 0;
}
static char g_note[2][4600];
static volatile sig_atomic_t g_note_cur = 0, g_note_len[2];
static void set_second_signal_note(const char *out, int64_t saved_step, int earlier) {
    char on_disk[4400];
    ckpt_on_disk(on_disk, sizeof on_disk, out, saved_step, earlier);
    const int k = !g_note_cur;
    const int n = snprintf(g_note[k], sizeof g_note[k],
                           "mambabyte: second signal: stopping now; %s\n", on_disk);
    g_note_len[k] = n < (int)sizeof g_note[k] ? n : (int)sizeof g_note[k] - 1;
    g_note_cur = k;
}
static void on_signal(int signo) {
    if (signo == SIGPIPE) { /* the reader of stderr / stdout has gone: stop after this step as
                             * for SIGINT; later writes fail with EPIPE instead of ending the
                             * process, so the checkpoint is still written. Not counted as a
                             * first signal: a later SIGINT / SIGTERM still stops with it */
        g_pipe = 1;
        return;
    }
    if (g_signal) {
        const int k = g_note_cur;
        ssize_t w = write(STDERR_FILENO, g_note[k], (size_t)g_note_len[k]);
        (void)w;
        signal(signo, SIG_DFL);
        raise(signo); /* blocked until this handler returns, then the default action */
        return;
    }
    g_signal = signo;
}

/* The backend's scorer, stopped (MB_EINTR) before the next window once a signal has come. */
static int score_unless_signalled(void *user, const uint8_t *x, const uint8_t *y, int64_t B,
                                  int64_t L, double *nats) {
    mb_backend *be = user;
    if (stop_signal())
        return mb_fail(MB_EINTR, "validation interrupted by signal %d", stop_signal());
    return be->ops->score(be, x, y, B, L, nats);
}

/* Validation bpb through the session's scorer (on a GPU in the training precision) into *bpb
 * (NaN without validation documents). A scorer error (device out of memory, CUDA error) is
 * returned, never turned into a NaN; MB_EINTR when a signal stopped the pass. */
static int validate(mb_backend *be, const doc_list *val, const mb_train_opts *o, int64_t max_bytes,
                    double *bpb, int64_t *scored) {
    mb_eval_result r;
    *scored = 0;
    *bpb = NAN;
    if (val->n == 0) return MB_OK;
    int rc = mb_evaluate_windows(score_unless_signalled, be, val->docs, val->n, o->ctx, o->batch,
                                 max_bytes, NULL, NULL, &r);
    if (rc == MB_ENONFINITE) { /* logged as val_bpb nan, as before eval refused it; the
                                * training loss has its own stop */
        fprintf(stderr, "validation: %s; val_bpb logged as nan\n", mb_last_error());
        return MB_OK;
    }
    if (rc) return rc;
    *scored = r.bytes;
    *bpb = mb_eval_bpb(&r);
    return MB_OK;
}

/* Write the checkpoint of the current step (device state synced to the host first). */
static int checkpoint(const mb_train_opts *o, const mb_model *m, const mb_adamw *opt, run_state *rs,
                      const mb_train_sampler *sampler, mb_backend *be, const mb_backend_ops *be_ops,
                      double t0) {
    mb_train_sampler_get_state(sampler, &rs->sampler);
    double el = rs->elapsed;
    rs->elapsed += wall() - t0;
    int rc = be_ops->sync(be); /* device -> host parameters and moments */
    if (rc == MB_OK) {
        rc = save_checkpoint(o, m, opt, rs);
        if (rc) { /* (the files are replaced only once both are written) */
            char before[64], after[4200];
            snprintf(before, sizeof before,
                     "checkpoint at step %lld not written: ", (long long)rs->step);
            snprintf(after, sizeof after, "; the previous one in %s, if any, is unchanged", o->out);
            rc = fail_wrap(rc, before, after);
        }
    }
    rs->elapsed = el;
    return rc;
}

/* After a signal, once the checkpoint of rs->step is on disk: the note and MB_EINTR. */
static int interrupted(const run_state *rs, const char *out) {
    fprintf(stderr, "interrupted (signal %d) at step %lld: checkpoint saved in %s\n", stop_signal(),
            (long long)rs->step, out);
    return mb_fail(MB_EINTR,
                   "interrupted by signal %d at step %lld; the checkpoint in %s is complete: "
                   "continue with --resume",
                   stop_signal(), (long long)rs->step, out);
}

static void log_json(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_json(FILE *f, const char *fmt, ...) {
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fflush(f);
}

static void fmt_eta(double s, char *buf, size_t n) {
    long t = isfinite(s) && s > 0 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

/* ------------------------------------------------------------------ the loop */
int mb_train(const mb_train_opts *o) {
    return mb_train_with_backend(o, &mb_backend_cpu);
}

int mb_train_with_backend(const mb_train_opts *opts_in, const mb_backend_ops *be_ops) {
    mb_train_opts o = *opts_in;
    mb_model m = {0};
    mb_adamw opt = {0};
    mb_pack pack = {0}, vpack = {0};
    mb_split split = {0};
    mb_train_sampler sampler = {0};
    mb_backend *be = NULL;
    uint8_t *x = NULL, *y = NULL;
    FILE *metrics = NULL;
    doc_list val = {0};
    run_state rs = {0};
    int rc, have_pack = 0, have_vpack = 0, have_split = 0, have_sampler = 0, have_handlers = 0;
    struct sigaction old_act[4];
    char path[4200], model_path[4200]; /* model_path: --out's model.safetensors */

    if (!o.out) return mb_fail(MB_EINVAL, "train: --out is required");
    if (!o.data) return mb_fail(MB_EINVAL, "train: --data is required");
    if (o.val_fraction <= 0.0 && !o.val)
        return mb_fail(MB_EINVAL, "train: --val-fraction 0 leaves no validation data; give --val "
                                  "PATH or a positive --val-fraction");
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", o.out);
    if (o.resume) { /* nothing to resume: say so, creating nothing (no directory, no lock) */
        struct stat st;
        const int r = stat(o.out, &st);
        if ((r != 0 && errno == ENOENT) ||
            (r == 0 && S_ISDIR(st.st_mode) && access(model_path, F_OK) != 0 && errno == ENOENT)) {
            if (r == 0 && out_dir_locked(o.out))
                return mb_fail(MB_EINVAL,
                               "%s is in use by another training run (lock %s/.lock) that has "
                               "not written a checkpoint yet: nothing to resume",
                               o.out, o.out);
            return mb_fail(MB_EINVAL, "%s holds no checkpoint to resume", o.out);
        }
    }
    if ((rc = mkdir_p(o.out))) return rc;
    /* the run writes into --out: it cannot also be the data directory (an --out inside --data
     * is skipped when the data are listed), nor --val (the run's own files would be scored) */
    if (same_file(o.out, o.data))
        return mb_fail(MB_EINVAL,
                       "train: --out %s is the --data directory; checkpoints would become "
                       "training data (use another --out)",
                       o.out);
    if (o.val && same_file(o.out, o.val))
        return mb_fail(MB_EINVAL,
                       "train: --val %s is the --out directory; its files (the packed "
                       "training data, checkpoints, logs) are not validation data (give "
                       "the held-out data's path)",
                       o.val);
    int lock_fd = lock_out_dir(o.out); /* released when the process exits */
    if (lock_fd < 0) return mb_last_error()[0] ? MB_EINVAL : MB_EIO;
    /* --force over an earlier run: its checkpoint stays until this run writes one */
    const int earlier_ckpt = !o.resume && access(model_path, F_OK) == 0;
    if (!o.resume && !o.force && earlier_ckpt) {
        close(lock_fd);
        return mb_fail(MB_EINVAL,
                       "%s already holds a checkpoint: --resume to continue it, --force to "
                       "replace it, or another --out",
                       o.out);
    }
    if (!o.resume && !o.force) { /* an earlier run's files without its model (a run stopped
                                  * before its first checkpoint, or files of the user's): a
                                  * fresh run would overwrite them */
        static const char *const own[] = {"config.json", TRAIN_STATE_FILE, "metrics.jsonl"};
        for (size_t i = 0; i < sizeof own / sizeof *own; i++) {
            char p[4200];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", o.out, own[i]);
            if (stat(p, &st) == 0 && (st.st_size > 0 || strcmp(own[i], "metrics.jsonl") != 0)) {
                close(lock_fd);
                return mb_fail(MB_EINVAL,
                               "%s holds %s (and no model.safetensors) "
                               "that this run would overwrite: --force to replace it, or "
                               "another --out",
                               o.out, own[i]);
            }
        }
    }

    /* model and optimizer state */
    if (o.resume) {
        if ((rc = mb_checkpoint_load(o.out, &m, NULL))) goto done;
        if ((rc = mb_adamw_init(&opt, &m, 0.9f, 0.95f, 1e-8f, 0.1f))) goto done;
        if ((rc = roll_forward_train_state(o.out, &m))) goto done;
        if ((rc = load_train_state(o.out, &o, &m, &opt, &rs))) goto done;
        if (opts_in->steps > 0 && opts_in->steps < rs.step) {
            rc = mb_fail(MB_EINVAL,
                         "--steps %lld is below the run's step %lld (%s): a finished step cannot "
                         "be taken back; give --steps N with N >= %lld",
                         (long long)opts_in->steps, (long long)rs.step, o.out, (long long)rs.step);
            goto done;
        }
        if (opts_in->steps > 0) rs.total_steps = opts_in->steps;
        fprintf(stderr,
                "resuming %s at step %lld of %lld (ctx %lld, batch %lld, seed %llu from "
                "the train state)\n",
                o.out, (long long)rs.step, (long long)rs.total_steps, (long long)o.ctx,
                (long long)o.batch, (unsigned long long)o.seed);
        if (rs.total_steps > 0 && rs.step >= rs.total_steps)
            fprintf(stderr,
                    "note: this run is complete (step %lld of %lld): nothing to train; give "
                    "--steps N with N > %lld to train further (the final validation runs "
                    "again)\n",
                    (long long)rs.step, (long long)rs.total_steps, (long long)rs.step);
        if (o.on_resume) o.on_resume(&o, &m.cfg, o.on_resume_user);
    } else {
        if ((rc = mb_model_create(&m, &o.cfg))) goto done;
        mb_model_init(&m, o.seed);
        if ((rc = mb_adamw_init(&opt, &m, (float)o.beta1, (float)o.beta2, (float)o.eps,
                                (float)o.weight_decay)))
            goto done;
        rs.total_steps = o.steps;
    }
    remove_stale_tmp(o.out);
    int64_t saved_step = o.resume ? rs.step : -1; /* the checkpoint of this run on disk */
    char on_disk[4400];
    if (o.ctx < 1 || o.batch < 1 || o.accum < 1) {
        rc = mb_fail(MB_EINVAL, "train: ctx, batch and accum must be positive");
        goto done;
    }

    /* data */
    mb_data_format fmt;
    if ((rc = mb_data_format_parse(o.format, &fmt))) goto done;
    if ((rc = mb_data_pack_path(o.data, o.out, path, sizeof path))) goto done;
    int rebuilt = 0;
    if ((rc = mb_pack_load(&pack, o.data, fmt, path, &rebuilt))) {
        rc = fail_wrap(rc, "--data: ", "");
        goto done;
    }
    have_pack = 1;
    if (o.val) {
        snprintf(path, sizeof path, "%s/val.pack", o.out);
        if ((rc = mb_pack_load(&vpack, o.val, fmt, path, NULL))) {
            rc = fail_wrap(rc, "--val: ", "");
            goto done;
        }
        have_vpack = 1;
    }
    if ((rc = mb_split_make(&split, &pack, o.val ? &vpack : NULL, o.val_fraction))) goto done;
    have_split = 1;
    if ((rc = mb_train_sampler_init(&sampler, &split, o.ctx, o.seed + 1))) goto done;
    have_sampler = 1;
    if (o.resume) {
        /* other data than the run was trained on: allowed (more data is a legitimate use),
         * with a warning, as the sampler state refers to the old data */
        int data_changed = 0;
        if (rs.have_data_hash && rs.train_hash != pack.content_hash) {
            data_changed = 1;
            fprintf(stderr,
                    "warning: --data %s differs from the data this run was trained on (content "
                    "hash %016" PRIx64 ", the checkpoint's %016" PRIx64
                    "): the run continues on the new data, but it is no longer an exact "
                    "continuation\n",
                    o.data, pack.content_hash, rs.train_hash);
        }
        /* --val given now and not then, or the reverse: the training split is other documents
         * (all of --data, or --data less the held-out ones) */
        const int split_changed = rs.have_data_hash && rs.has_val_hash != (o.val != NULL);
        if (rs.have_data_hash &&
            (rs.has_val_hash != (o.val != NULL) || (o.val && rs.val_hash != vpack.content_hash))) {
            if (o.val && rs.has_val_hash)
                fprintf(stderr,
                        "warning: --val %s differs from the validation data this run was "
                        "started with (content hash %016" PRIx64 ", the checkpoint's %016" PRIx64
                        "): the run continues on the new data, but it is no longer an exact "
                        "continuation (its val_bpb is not comparable with the earlier ones)\n",
                        o.val, vpack.content_hash, rs.val_hash);
            else
                fprintf(stderr,
                        "warning: %s: the run continues on the new validation data, but it is "
                        "no longer an exact continuation (its val_bpb is not comparable with the "
                        "earlier ones)\n",
                        o.val ? "--val is given, but this run was started without one"
                              : "--val is not given, but this run was started with one");
        }
        if (split_changed || (rc = mb_train_sampler_set_state(&sampler, &rs.sampler))) {
            if (!data_changed && !split_changed) goto done;
            /* the saved slot order does not fit the new data (or refers to other documents of
             * another split): a new epoch over them */
            mb_train_sampler_restart(&sampler, &rs.sampler);
            fprintf(stderr, "note: the data sampler starts a new epoch over the new %s\n",
                    data_changed ? "data"
                    : o.val      ? "training split (all of --data, none of it held out now)"
                                 : "training split (--data less the documents held out now)");
            rc = MB_OK;
        }
    }
    rs.have_data_hash = 1;
    rs.train_hash = pack.content_hash;
    rs.has_val_hash = o.val != NULL;
    rs.val_hash = o.val ? vpack.content_hash : 0;
    int64_t train_bytes = 0, val_bytes = 0;
    for (int64_t i = 0; i < split.n_train; i++)
        train_bytes += split.train[i].len;
    val.docs = calloc((size_t)(split.n_val ? split.n_val : 1), sizeof *val.docs);
    if (!val.docs) {
        rc = mb_fail(MB_ENOMEM, "train: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < split.n_val; i++) {
        val.docs[i].bytes = split.val[i].data;
        val.docs[i].len = split.val[i].len;
        val_bytes += split.val[i].len;
    }
    val.n = split.n_val;
    int64_t val_scored = 0;
    for (int64_t i = 0; i < val.n; i++)
        if (val.docs[i].len > 1) val_scored += val.docs[i].len - 1;
    if (val_scored == 0 && !o.val && split.n_val == 0 && split.n_train > 1) {
        /* the held-out split keeps identical documents together: all alike, none is held out */
        rc = mb_fail(MB_EINVAL,
                     "train: every document of %s has the same content, so none can be held out "
                     "without a copy left in training; give --val FILE",
                     o.data);
        goto done;
    }
    if (val_scored == 0) {
        rc = mb_fail(MB_EINVAL,
                     "train: the validation data (%s) has no byte to score (documents "
                     "of at least 2 bytes are needed)",
                     o.val ? o.val : o.data);
        goto done;
    }
    if (split.n_val_identical > 0) /* (kept: the user chose the file) */
        fprintf(stderr,
                "warning: --val %s: %lld of its %lld document%s %s byte-identical to a --data "
                "document: %s not held out (%s bpb is measured on training data)\n",
                o.val, (long long)split.n_val_identical, (long long)split.n_val,
                mb_plural(split.n_val), split.n_val_identical == 1 ? "is" : "are",
                split.n_val_identical == 1 ? "it is" : "they are",
                split.n_val_identical == 1 ? "its" : "their");
    if (!o.val && 10 * val_bytes > train_bytes + val_bytes)
        fprintf(stderr,
                "note: the held-out documents are %.0f%% of the bytes (%lld document%s in all); "
                "give --val PATH to choose the validation text\n",
                100.0 * (double)val_bytes / (double)(train_bytes + val_bytes),
                (long long)pack.n_docs, mb_plural(pack.n_docs));
    fprintf(stderr,
            "data: %s (%s pack, %lld document%s): train %lld doc%s / %lld byte%s, val %lld doc%s / "
            "%lld byte%s%s",
            o.data, rebuilt ? "new" : "cached", (long long)pack.n_docs, mb_plural(pack.n_docs),
            (long long)split.n_train, mb_plural(split.n_train), (long long)train_bytes,
            mb_plural(train_bytes), (long long)split.n_val, mb_plural(split.n_val),
            (long long)val_bytes, mb_plural(val_bytes),
            split.by_bytes ? " (one document: split by bytes)" : "");
    if (sampler.n_skipped)
        fprintf(stderr, "; skipped %lld training doc%s shorter than ctx+1 = %lld (%lld byte%s)",
                (long long)sampler.n_skipped, mb_plural(sampler.n_skipped), (long long)o.ctx + 1,
                (long long)sampler.skipped_bytes, mb_plural(sampler.skipped_bytes));
    fprintf(stderr, "\nmodel: d_model %lld, n_layer %lld, d_state %lld, %s, %s head, %lld params\n",
            (long long)m.cfg.d_model, (long long)m.cfg.n_layer, (long long)m.cfg.d_state,
            m.cfg.rms_norm ? "RMSNorm" : "LayerNorm", m.cfg.tie_embeddings ? "tied" : "untied",
            (long long)m.n_params);

    /* buffers; the backend session (on a GPU: parameters and AdamW state uploaded) */
    if (!be_ops) be_ops = &mb_backend_cpu;
    const mb_backend_flags flags = {mb_precision_parse(o.precision), o.recompute, o.gpu_memory};
    if (flags.precision < 0) {
        rc = mb_fail(MB_EINVAL, "--precision: '%s' is not auto, fp32 or bf16", o.precision);
        goto done;
    }
    if ((rc = be_ops->open(&be, &m, &opt, o.batch, o.ctx, 1, &flags))) goto done;
    if (be_ops != &mb_backend_cpu) {
        char desc[256];
        be_ops->probe(desc, sizeof desc);
        fprintf(stderr, "device: %s (%s); %s\n", be_ops->name, desc, be->numerics);
    }
    x = malloc((size_t)(o.batch * o.ctx));
    y = malloc((size_t)(o.batch * o.ctx));
    if (!x || !y) {
        rc = mb_fail(MB_ENOMEM, "train: out of memory for batch %lld x ctx %lld",
                     (long long)o.batch, (long long)o.ctx);
        goto done;
    }
    snprintf(path, sizeof path, "%s/metrics.jsonl", o.out);
    int have_val_line = 0; /* the periodic validation of the resumed step is in the log */
    if (o.resume && (rc = restore_prev_metrics(path, model_path))) goto done;
    if (!o.resume && earlier_ckpt && (rc = keep_prev_metrics(path, model_path))) goto done;
    if (o.resume && (rc = truncate_metrics(path, rs.step, &have_val_line))) goto done;
    metrics = fopen(path, o.resume ? "a" : "w");
    if (!metrics) {
        rc = mb_fail(MB_EIO, "cannot open %s: %s", path, strerror(errno));
        goto done;
    }

    const int64_t bytes_per_step = o.batch * o.ctx * o.accum;
    {
        /* SIGHUP: the terminal or ssh session closed; SIGPIPE: a pipe on stderr closed. A
         * signal the caller ignores (nohup, a shell's background job) stays ignored. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal; /* (stays installed: it handles the second signal too) */
        sigemptyset(&sa.sa_mask);
        for (int i = 0; i < 4; i++)
            sigaddset(&sa.sa_mask, k_train_signals[i]);
        g_signal = 0, g_pipe = 0;
        set_second_signal_note(o.out, saved_step, earlier_ckpt);
        for (int i = 0; i < 4; i++) {
            sigaction(k_train_signals[i], NULL, &old_act[i]);
            if (old_act[i].sa_handler != SIG_IGN) sigaction(k_train_signals[i], &sa, NULL);
        }
        have_handlers = 1;
    }
    const double t0 = wall();
    const int64_t start_step = rs.step;
    double last_val = NAN;
    int64_t scored;
    /* bpb before training, for the curve. A resumed run scores the validation due at its step
     * unless the log has it (the loop skips it at a run's last step, stopped by --stop-after,
     * --time-limit or a signal, and a signal can cut the pass short), as a run that did not stop
     * there logs it; a run resumed at its end has only the final validation. */
    const int resumed_eval = o.resume && !have_val_line && o.eval_every > 0 &&
                             rs.step % o.eval_every == 0 &&
                             (rs.total_steps <= 0 || rs.step < rs.total_steps);
    if ((!o.resume && o.eval_every > 0) || resumed_eval) {
        rc = validate(be, &val, &o, o.eval_bytes, &last_val, &scored);
        if (rc == MB_EINTR) { /* a checkpoint of this step, as for an interrupted step */
            if ((rc = checkpoint(&o, &m, &opt, &rs, &sampler, be, be_ops, t0))) goto done;
            if (!o.resume) drop_prev_metrics(path);
            set_second_signal_note(o.out, rs.step, earlier_ckpt);
            rc = interrupted(&rs, o.out);
            goto done;
        }
        if (rc) goto done;
        fprintf(stderr, "step %lld: val_bpb %.4f (%lld byte%s)\n", (long long)rs.step, last_val,
                (long long)scored, mb_plural(scored));
        log_json(metrics, "{\"step\":%lld,\"val_bpb\":%.6f,\"val_bytes\":%lld}", (long long)rs.step,
                 last_val, (long long)scored);
    }
    const double t_loop = wall();   /* per-step timing excludes the initial evaluation */
    int64_t total = rs.total_steps; /* 0 until estimated from the time limit */
    if (total <= 0 && o.time_limit <= 0) {
        rc = mb_fail(MB_EINVAL, "train: give --steps or --time-limit");
        goto done;
    }
    mb_schedule sched = {
        .lr_max = (float)o.lr, .lr_min = (float)o.lr_min, .warmup = o.warmup, .total = total};
    int64_t warmup_cap = 0;
    int stop = 0;
    /* test hook: poison the loss at this 1-based step to exercise the NaN stop */
    const char *nan_env = getenv("MB_DEBUG_NAN_AT_STEP");
    const int64_t nan_at = nan_env ? strtoll(nan_env, NULL, 10) : 0;
    const int time_limited = total <= 0;
    while (!stop && (time_limited || rs.step < total)) {
        double ts = wall();
        if ((rc = be_ops->zero_grads(be))) goto done;
        double loss = 0.0;
        for (int64_t a = 0; a < o.accum; a++) {
            mb_train_sampler_batch(&sampler, o.batch, x, y);
            float l;
            if ((rc = be_ops->forward(be, x, y, &l))) goto done;
            if (nan_at > 0 && rs.step + 1 == nan_at) l = NAN;
            if (!isfinite(l)) {
                ckpt_on_disk(on_disk, sizeof on_disk, o.out, saved_step, earlier_ckpt);
                rc = mb_fail(MB_ENONFINITE, "step %lld: non-finite loss (%g); stopped, %s",
                             (long long)rs.step + 1, (double)l, on_disk);
                goto done;
            }
            if ((rc = be_ops->backward(be, 1.0f / (float)(o.batch * o.ctx * o.accum)))) goto done;
            loss += l / (double)o.accum;
        }
        double gnorm;
        if ((rc = be_ops->clip(be, o.clip, &gnorm))) goto done;
        if (!isfinite(gnorm)) {
            ckpt_on_disk(on_disk, sizeof on_disk, o.out, saved_step, earlier_ckpt);
            rc = mb_fail(MB_ENONFINITE, "step %lld: non-finite gradient norm (%g); stopped, %s",
                         (long long)rs.step + 1, gnorm, on_disk);
            goto done;
        }
        /* warm-up is capped at 10% of the run so short runs still decay */
        if (total > 0 && !warmup_cap) {
            warmup_cap = 1;
            if (sched.warmup > total / 10) sched.warmup = total / 10;
        }
        /* before the length is known (time limit only): the warm-up ramp, capped at lr */
        float lr = total > 0 ? mb_schedule_lr(&sched, rs.step)
                             : fminf((float)o.lr, (float)o.lr * (float)(rs.step + 1) /
                                                      (float)(sched.warmup > 0 ? sched.warmup : 1));
        if ((rc = be_ops->update(be, lr))) goto done;
        rs.step++;
        rs.bytes_seen += bytes_per_step;
        double now = wall(), dt = now - ts;
        double run_elapsed = now - t0;
        /* with only a time limit, the schedule length follows the measured speed: re-estimated
         * every step from the average step time so far (evaluations included), so the cosine
         * ends at the limit even when the machine's speed drifts */
        if (time_limited && rs.step - start_step >= 3) {
            int first = total <= 0;
            total = rs.step +
                    steps_left(o.time_limit - run_elapsed, now - t_loop, rs.step - start_step);
            rs.total_steps = total;
            sched.total = total;
            if (first) {
                if (sched.warmup > total / 10) sched.warmup = total / 10;
                warmup_cap = 1;
                fprintf(stderr, "time limit %.10gs: %.2fs/step -> about %lld step%s in all\n",
                        o.time_limit, (now - t_loop) / (double)(rs.step - start_step),
                        (long long)total, mb_plural(total));
            }
        }
        int64_t remaining = total > 0 ? total - rs.step : 0;
        double avg = run_elapsed / (double)(rs.step - start_step);
        char eta[32];
        fmt_eta(avg * (double)remaining, eta, sizeof eta);
        if (!o.quiet) {
            char of[24] = "?"; /* (a time limit's first steps: the length is not known yet) */
            if (total > 0) snprintf(of, sizeof of, "%lld", (long long)total);
            fprintf(stderr,
                    "step %6lld/%s | loss %.4f | bpb %.4f | lr %.2e | gnorm %.3f | %.1f kB/s | "
                    "ETA %s\n",
                    (long long)rs.step, of, loss, loss / M_LN2, lr, gnorm,
                    (double)bytes_per_step / dt / 1000.0, eta);
        }
        log_json(metrics,
                 "{\"step\":%lld,\"loss\":%.6f,\"bpb\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,"
                 "\"bytes_per_s\":%.1f,\"elapsed\":%.3f}",
                 (long long)rs.step, loss, loss / M_LN2, lr, gnorm, (double)bytes_per_step / dt,
                 rs.elapsed + run_elapsed);
        int signalled = stop_signal() != 0;
        int last = (!time_limited && rs.step >= total) ||
                   (o.stop_after > 0 && rs.step - start_step >= o.stop_after) ||
                   (o.time_limit > 0 && run_elapsed >= o.time_limit) || signalled;
        if (o.eval_every > 0 && rs.step % o.eval_every == 0 && !last) {
            rc = validate(be, &val, &o, o.eval_bytes, &last_val, &scored);
            if (rc == MB_EINTR) { /* stopped mid-pass: checkpoint this step and stop */
                signalled = last = 1;
                rc = MB_OK;
            } else if (rc) {
                goto done;
            } else {
                fprintf(stderr, "step %lld: val_bpb %.4f (%lld byte%s)\n", (long long)rs.step,
                        last_val, (long long)scored, mb_plural(scored));
                log_json(metrics, "{\"step\":%lld,\"val_bpb\":%.6f,\"val_bytes\":%lld}",
                         (long long)rs.step, last_val, (long long)scored);
            }
        }
        if (last || (o.ckpt_every > 0 && rs.step % o.ckpt_every == 0)) {
            /* a time-limited run that ends before its length was estimated (under 3 steps):
             * at its limit, the schedule's length is what ran, so a resume knows where it
             * stands; stopped earlier (a signal, --stop-after), the length its limit gives at
             * the speed so far, as the estimate would have, so that --resume goes on */
            if (last && rs.total_steps <= 0)
                rs.total_steps = rs.step + steps_left(o.time_limit - run_elapsed, now - t_loop,
                                                      rs.step - start_step);
            if ((rc = checkpoint(&o, &m, &opt, &rs, &sampler, be, be_ops, t0))) goto done;
            /* test hook: killed between the first checkpoint and the removal of the .prev */
            if (!o.resume && saved_step < 0 && earlier_ckpt && getenv("MB_DEBUG_KILL_AFTER_CKPT"))
                raise(SIGKILL);
            if (!o.resume && saved_step < 0) drop_prev_metrics(path);
            saved_step = rs.step;
            set_second_signal_note(o.out, saved_step, earlier_ckpt);
        }
        stop = last;
        if (signalled) {
            rc = interrupted(&rs, o.out);
            goto done;
        }
    }
    rs.elapsed += wall() - t0;
    /* final validation on the held-out set (up to final_eval_bytes) */
    rc = validate(be, &val, &o, o.final_eval_bytes, &last_val, &scored);
    if (rc == MB_EINTR) { /* the checkpoint of the last step is on disk */
        rc = interrupted(&rs, o.out);
        goto done;
    }
    if (rc) goto done;
    log_json(metrics, "{\"step\":%lld,\"val_bpb\":%.6f,\"val_bytes\":%lld,\"final\":true}",
             (long long)rs.step, last_val, (long long)scored);
    if (rs.step > start_step && start_step > 0) /* (a resumed run) */
        fprintf(stderr,
                "trained to step %lld, %lld step%s in this run in %.1fs (%lld byte%s and %.1fs "
                "of training in all, final validations aside); checkpoint in %s\n",
                (long long)rs.step, (long long)(rs.step - start_step),
                mb_plural(rs.step - start_step), wall() - t0, (long long)rs.bytes_seen,
                mb_plural(rs.bytes_seen), rs.elapsed, o.out);
    else if (rs.step == start_step && start_step > 0) /* a finished run resumed */
        fprintf(stderr, "no step trained: the run was at step %lld already; checkpoint in %s\n",
                (long long)rs.step, o.out);
    else
        fprintf(stderr, "trained %lld step%s (%lld byte%s) in %.1fs; checkpoint in %s\n",
                (long long)rs.step, mb_plural(rs.step), (long long)rs.bytes_seen,
                mb_plural(rs.bytes_seen), rs.elapsed, o.out);
    errno = 0;
    if (printf("val_bpb: %.4f\n", last_val) < 0 || fflush(stdout) != 0) {
        rc = mb_fail(MB_EIO, "writing the output to stdout failed: %s",
                     errno ? strerror(errno) : "a write error");
        goto done;
    }
    rc = MB_OK;
done:
    if (have_handlers) {
        for (int i = 0; i < 4; i++)
            sigaction(k_train_signals[i], &old_act[i], NULL);
    }
    if (metrics) fclose(metrics);
    free(val.docs);
    free(x);
    free(y);
    if (be) be_ops->close(be);
    if (have_sampler) mb_train_sampler_free(&sampler);
    if (have_split) mb_split_free(&split);
    if (have_vpack) mb_pack_close(&vpack);
    if (have_pack) mb_pack_close(&pack);
    mb_adamw_free(&opt);
    if (m.params) mb_model_free(&m);
    return rc;
}
