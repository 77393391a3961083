/* mambabyte train: parse flags into mb_train_opts and run the training loop. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "commands.h"
#include "mambabyte.h"
#include "train/backend.h"
#include "train/data.h"
#include "train/trainer.h"

/* Model fields a flag can set, for the note on --resume: the flag that set each one last. */
enum { F_D_MODEL, F_N_LAYER, F_D_STATE, F_D_CONV, F_EXPAND, F_DT_RANK, F_NORM, F_TIE, F_COUNT };

/* What the command line asked for, to report on --resume which of its run settings (model, data,
 * optimizer, validation cadence: fixed for a run) differ from the run's saved ones, which the
 * run goes on with. */
typedef struct {
    mb_train_opts want;           /* the options as given (model config finalized) */
    const char *preset;           /* the last --preset NAME */
    const char *cfg_src[F_COUNT]; /* per model field: "--preset", its own flag, or NULL */
    int ctx, batch, accum, lr, lr_min, warmup, weight_decay, clip, seed, val_fraction, eval_every;
    int64_t dt_rank; /* the last --dt-rank as given (0: auto, ceil(d_model / 16)) */
} given_settings;

/* v with the fewest %g digits (6..17) that read back as v: a value as it was typed, so that
 * two values that differ never print the same ("--lr 0.00030000001 (saved 0.0003)") */
static const char *fmt_double(char *buf, size_t n, double v) {
    for (int p = 6; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

/* "--flag V (saved S)" appended to buf, comma-separated */
static void add_ignored(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_ignored(char *buf, size_t n, const char *fmt, ...) {
    size_t len = strlen(buf);
    if (len + 2 >= n) return;
    if (len) strcat(buf, ", "), len += 2;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
}

/* Record flag a (a run setting or not) as given. */
static void mark_given(given_settings *g, const char *a) {
    static const struct {
        const char *flag;
        int field;
    } cfg_flags[] = {{"--d-model", F_D_MODEL}, {"--n-layer", F_N_LAYER}, {"--d-state", F_D_STATE},
                     {"--d-conv", F_D_CONV},   {"--expand", F_EXPAND},   {"--dt-rank", F_DT_RANK},
                     {"--rms-norm", F_NORM},   {"--layer-norm", F_NORM}, {"--tie", F_TIE},
                     {"--untie", F_TIE}};
    if (!strcmp(a, "--preset"))
        for (int f = 0; f < F_COUNT; f++)
            g->cfg_src[f] = "--preset";
    for (size_t k = 0; k < sizeof cfg_flags / sizeof *cfg_flags; k++)
        if (!strcmp(a, cfg_flags[k].flag)) g->cfg_src[cfg_flags[k].field] = cfg_flags[k].flag;
    const struct {
        const char *flag;
        int *given;
    } run_flags[] = {{"--ctx", &g->ctx},
                     {"--batch", &g->batch},
                     {"--accum", &g->accum},
                     {"--lr", &g->lr},
                     {"--lr-min", &g->lr_min},
                     {"--warmup", &g->warmup},
                     {"--weight-decay", &g->weight_decay},
                     {"--clip", &g->clip},
                     {"--seed", &g->seed},
                     {"--val-fraction", &g->val_fraction},
                     {"--eval-every", &g->eval_every}};
    for (size_t k = 0; k < sizeof run_flags / sizeof *run_flags; k++)
        if (!strcmp(a, run_flags[k].flag)) *run_flags[k].given = 1;
}

/* mb_train_opts.on_resume: once the checkpoint has loaded, the note on the options given that
 * differ from the run's saved settings (none: no note). */
static void note_ignored(const mb_train_opts *saved, const mb_config *cfg, void *user) {
    const given_settings *g = user;
    const mb_train_opts *w = &g->want;
    char buf[1024] = "";
    const size_t n = sizeof buf;
    const int64_t want_cfg[F_COUNT] = {w->cfg.d_model,  w->cfg.n_layer,       w->cfg.d_state,
                                       w->cfg.d_conv,   w->cfg.expand,        w->cfg.dt_rank,
                                       w->cfg.rms_norm, w->cfg.tie_embeddings};
    const int64_t have_cfg[F_COUNT] = {cfg->d_model,  cfg->n_layer,       cfg->d_state,
                                       cfg->d_conv,   cfg->expand,        cfg->dt_rank,
                                       cfg->rms_norm, cfg->tie_embeddings};
    static const char *const names[F_COUNT] = {"d_model", "n_layer", "d_state", "d_conv",
                                               "expand",  "dt_rank", NULL,      NULL};
    int preset_differs = 0;
    for (int f = 0; f < F_COUNT; f++) {
        if (!g->cfg_src[f]) continue;
        if (f == F_DT_RANK && !strcmp(g->cfg_src[f], "--dt-rank")) {
            /* as given; 0 (auto) resolved against the saved d_model */
            const int64_t given_rank = g->dt_rank ? g->dt_rank : (cfg->d_model + 15) / 16;
            if (given_rank != cfg->dt_rank)
                add_ignored(buf, n, "--dt-rank %lld (saved dt_rank %lld)", (long long)g->dt_rank,
                            (long long)cfg->dt_rank);
            continue;
        }
        if (want_cfg[f] == have_cfg[f]) continue;
        if (!strcmp(g->cfg_src[f], "--preset"))
            preset_differs = 1;
        else if (f == F_NORM)
            add_ignored(buf, n, "%s (saved: %s)", g->cfg_src[f],
                        cfg->rms_norm ? "RMSNorm" : "LayerNorm");
        else if (f == F_TIE)
            add_ignored(buf, n, "%s (saved: %s)", g->cfg_src[f],
                        cfg->tie_embeddings ? "tied" : "untied");
        else
            add_ignored(buf, n, "%s %lld (saved %s %lld)", g->cfg_src[f], (long long)want_cfg[f],
                        names[f], (long long)have_cfg[f]);
    }
    if (preset_differs)
        add_ignored(buf, n, "--preset %s (the saved model differs from it)", g->preset);
#define I64(flag, field)                                                                           \
    if (g->field && w->field != saved->field)                                                      \
    add_ignored(buf, n, flag " %lld (saved %lld)", (long long)w->field, (long long)saved->field)
    char v1[32], v2[32];
#define F64(flag, field)                                                                           \
    if (g->field && w->field != saved->field)                                                      \
    add_ignored(buf, n, flag " %s (saved %s)", fmt_double(v1, sizeof v1, w->field),                \
                fmt_double(v2, sizeof v2, saved->field))
    I64("--ctx", ctx);
    I64("--batch", batch);
    I64("--accum", accum);
    F64("--lr", lr);
    F64("--lr-min", lr_min);
    I64("--warmup", warmup);
    F64("--weight-decay", weight_decay);
    F64("--clip", clip);
    if (g->seed && w->seed != saved->seed)
        add_ignored(buf, n, "--seed %llu (saved %llu)", (unsigned long long)w->seed,
                    (unsigned long long)saved->seed);
    F64("--val-fraction", val_fraction);
    I64("--eval-every", eval_every);
#undef I64
#undef F64
    if (buf[0])
        fprintf(stderr,
                "mambabyte train: --resume continues with the run's saved settings; ignoring %s\n",
                buf);
}

static void help(FILE *f) {
    fprintf(
        f,
        "usage: mambabyte train --data PATH --out DIR [options]\n"
        "\n"
        "Train a byte-level Mamba model. PATH is a file (one document), a directory tree\n"
        "(each file one document) or JSON lines with a \"text\" field (*.jsonl).\n"
        "\n"
        "  --data PATH          training input (required)\n"
        "  --val PATH           separate validation input (default: hold out documents)\n"
        "  --val-fraction X     fraction of documents held out (default 0.01; one document\n"
        "                       is split by bytes)\n"
        "  --format F           auto | bytes | jsonl (default auto: by extension)\n"
        "  --out DIR            checkpoint directory (required)\n"
        "  --preset NAME        model preset: %s (default small)\n"
        "  --d-model N --n-layer N --d-state N --d-conv N --expand N --dt-rank N\n"
        "                       override preset sizes (--dt-rank 0: ceil(d_model / 16))\n"
        "  --rms-norm | --layer-norm   norm variant (default LayerNorm, as MambaByte)\n"
        "  --tie | --untie      tie lm_head to the embedding (default untied)\n"
        "  --ctx N              bytes per training sequence (default 1024)\n"
        "  --batch N            sequences per micro-batch (default 8)\n"
        "  --accum N            gradient accumulation steps (default 1)\n"
        "  --steps N            total optimizer steps (schedule length; with --resume a\n"
        "                       larger N stretches the schedule from the saved step on)\n"
        "  --time-limit S       stop after S seconds of wall time (schedule fitted to it)\n"
        "  --stop-after N       stop (with a checkpoint) after N steps of this run\n"
        "  --lr X               peak learning rate (default 4e-4); --lr-min X (default lr/10)\n"
        "  --warmup N           warm-up steps (default 500, at most 10%% of the run)\n"
        "  --weight-decay X     AdamW weight decay on matrices (default 0.1)\n"
        "  --clip X             global gradient-norm clip (default 1.0; 0 = off)\n"
        "  --seed S             one seed for init, data order and sampling (default 1337)\n"
        "  --eval-every N       validation every N steps (default 100; 0 = end only; saved\n"
        "                       with the run, as the settings --resume keeps)\n"
        "  --eval-bytes N       validation bytes per evaluation (default 262144; 0 = all;\n"
        "                       saved with the run; given with --resume, it replaces the\n"
        "                       saved value)\n"
        "  --final-eval-bytes N validation bytes for the final val_bpb (default 4194304; 0 = all;\n"
        "                       saved and replaced as --eval-bytes)\n"
        "  --ckpt-every N       checkpoint every N steps (default: at the end)\n"
        "  --resume             continue the run in --out exactly where it stopped (its saved\n"
        "                       model, data and optimizer settings and --eval-every are used;\n"
        "                       given ones that differ are named and ignored)\n"
        "  --force              replace a checkpoint already in --out\n"
        "  --quiet              no per-step progress lines\n"
        "  --device D           auto | cuda | cpu (default auto: cuda when this build has CUDA\n"
        "                       and a GPU is present, else cpu); checkpoints are the same on\n"
        "                       both, and a run may resume on the other device\n"
        "  --precision P        auto | fp32 | bf16 (default auto: bf16 mixed precision on a GPU,\n"
        "                       i.e. bf16 matrix products with fp32 master weights, AdamW\n"
        "                       moments, scan, norms and loss; fp32 on the CPU)\n"
        "  --recompute on|off|auto  recompute each layer's activations in the backward instead\n"
        "                       of storing them (GPU only: 'on' needs --device cuda; default\n"
        "                       auto: on when they would not fit)\n"
        "  --gpu-memory GIB     keep the GPU's memory in use (as nvidia-smi counts it) under\n"
        "                       GIB: the activation plan (recomputation, and how many layers'\n"
        "                       activations it keeps) is chosen to fit (default: 90%% of the\n"
        "                       free memory)\n"
        "\n"
        "Prints one progress line per step (stderr), appends DIR/metrics.jsonl and ends with\n"
        "'val_bpb: <value>' on stdout.\n",
        mb_config_preset_names());
}

/* the library's training messages start "train: ", which the program's prefix already says */
static const char *unprefixed(const char *msg) {
    return strncmp(msg, "train: ", 7) == 0 ? msg + 7 : msg;
}
static int conflict(const char *a, const char *b) {
    fprintf(stderr, "mambabyte train: %s and %s conflict: give one\n", a, b);
    return 2;
}
/* 1 when both paths name the same existing file or directory */
static int same_file(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int cmd_train(int argc, char **argv) {
    const char *C = "train";
    mb_train_opts o;
    mb_train_opts_default(&o);
    int lr_min_given = 0, dt_rank_given = 0;
    /* either-or flags given both ways are errors; a value flag given twice takes its last value
     * (as in every subcommand) */
    int norm_given = 0, tie_given = 0, vfrac_given = 0;
    const char *device = "auto";
    mb_config *c = &o.cfg;
    given_settings given;
    memset(&given, 0, sizeof given);
    for (int i = 1; i < argc; i++) {
        const char *a = arg_flag(C, argv, i), *v;
        if (!a) return 2;
        mark_given(&given, a);
        int64_t n;
        double d;
#define VAL()                                                                                      \
    if (!(v = arg_value(C, argc, argv, &i))) return 2
#define INT(lo, hi, dst)                                                                           \
    do {                                                                                           \
        VAL();                                                                                     \
        if (arg_int64(C, a, v, lo, hi, &n)) return 2;                                              \
        dst = n;                                                                                   \
    } while (0)
#define FLT(lo, hi, dst)                                                                           \
    do {                                                                                           \
        VAL();                                                                                     \
        if (arg_float(C, a, v, lo, hi, &d)) return 2;                                              \
        dst = d;                                                                                   \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--data")) {
            if (!(v = arg_path(C, a, argc, argv, &i))) return 2;
            o.data = v;
        } else if (!strcmp(a, "--val")) {
            if (!(v = arg_path(C, a, argc, argv, &i))) return 2;
            o.val = v;
        } else if (!strcmp(a, "--format")) {
            VAL();
            mb_data_format f;
            if (mb_data_format_parse(v, &f)) {
                fprintf(stderr, "mambabyte train: --format: %s\n", mb_last_error());
                return 2;
            }
            o.format = v;
        } else if (!strcmp(a, "--out")) {
            if (!(v = arg_path(C, a, argc, argv, &i))) return 2;
            o.out = v;
        } else if (!strcmp(a, "--preset")) {
            VAL();
            if (mb_config_preset(c, v)) {
                fprintf(stderr, "mambabyte train: --preset: %s\n", mb_last_error());
                return 2;
            }
            given.preset = v;
        } else if (!strcmp(a, "--d-model"))
            INT(1, 65536, c->d_model);
        else if (!strcmp(a, "--n-layer"))
            INT(1, 4096, c->n_layer);
        else if (!strcmp(a, "--d-state"))
            INT(1, 256, c->d_state);
        else if (!strcmp(a, "--d-conv"))
            INT(1, 64, c->d_conv);
        else if (!strcmp(a, "--expand"))
            INT(1, 64, c->expand);
        else if (!strcmp(a, "--dt-rank")) {
            INT(0, 65536, c->dt_rank);
            dt_rank_given = 1;
            given.dt_rank = c->dt_rank;
        } else if (!strcmp(a, "--rms-norm") || !strcmp(a, "--layer-norm")) {
            const int want = !strcmp(a, "--rms-norm") ? 1 : 2;
            if (norm_given && norm_given != want) return conflict("--rms-norm", "--layer-norm");
            norm_given = want;
            c->rms_norm = want == 1;
        } else if (!strcmp(a, "--tie") || !strcmp(a, "--untie")) {
            const int want = !strcmp(a, "--tie") ? 1 : 2;
            if (tie_given && tie_given != want) return conflict("--tie", "--untie");
            tie_given = want;
            c->tie_embeddings = want == 1;
        } else if (!strcmp(a, "--ctx"))
            INT(1, 1 << 24, o.ctx);
        else if (!strcmp(a, "--batch"))
            INT(1, 1 << 16, o.batch);
        else if (!strcmp(a, "--accum"))
            INT(1, 1 << 16, o.accum);
        else if (!strcmp(a, "--steps"))
            INT(1, INT64_MAX / 2, o.steps);
        else if (!strcmp(a, "--time-limit"))
            FLT(1e-3, 1e9, o.time_limit);
        else if (!strcmp(a, "--stop-after"))
            INT(1, INT64_MAX / 2, o.stop_after);
        else if (!strcmp(a, "--lr"))
            FLT(0, 10, o.lr);
        else if (!strcmp(a, "--lr-min")) {
            FLT(0, 10, o.lr_min);
            lr_min_given = 1;
        } else if (!strcmp(a, "--warmup"))
            INT(0, INT64_MAX / 2, o.warmup);
        else if (!strcmp(a, "--weight-decay"))
            FLT(0, 10, o.weight_decay);
        else if (!strcmp(a, "--clip"))
            FLT(0, 1e9, o.clip);
        else if (!strcmp(a, "--seed")) {
            int64_t s;
            VAL();
            if (arg_int64(C, a, v, 0, INT64_MAX, &s)) return 2;
            o.seed = (uint64_t)s;
        } else if (!strcmp(a, "--val-fraction")) {
            FLT(0, 0.999, o.val_fraction);
            vfrac_given = 1;
        } else if (!strcmp(a, "--eval-every"))
            INT(0, INT64_MAX / 2, o.eval_every);
        else if (!strcmp(a, "--eval-bytes")) {
            INT(0, INT64_MAX / 2, o.eval_bytes);
            o.eval_bytes_given = 1;
        } else if (!strcmp(a, "--final-eval-bytes")) {
            INT(0, INT64_MAX / 2, o.final_eval_bytes);
            o.final_eval_bytes_given = 1;
        } else if (!strcmp(a, "--ckpt-every"))
            INT(0, INT64_MAX / 2, o.ckpt_every);
        else if (!strcmp(a, "--force"))
            o.force = 1;
        else if (!strcmp(a, "--resume"))
            o.resume = 1;
        else if (!strcmp(a, "--quiet"))
            o.quiet = 1;
        else if (!strcmp(a, "--device")) {
            VAL();
            device = v;
        } else if (!strcmp(a, "--precision")) {
            VAL();
            if (mb_precision_parse(v) < 0) {
                fprintf(stderr,
                        "mambabyte train: --precision must be auto, fp32 or bf16, not '%s'\n", v);
                return 2;
            }
            o.precision = v;
        } else if (!strcmp(a, "--recompute")) {
            VAL();
            if (!strcmp(v, "on"))
                o.recompute = 1;
            else if (!strcmp(v, "off"))
                o.recompute = 0;
            else if (!strcmp(v, "auto"))
                o.recompute = -1;
            else {
                fprintf(stderr, "mambabyte train: --recompute must be on, off or auto, not '%s'\n",
                        v);
                return 2;
            }
        } else if (!strcmp(a, "--gpu-memory")) {
            VAL();
            char *end = NULL;
            const double g = strtod(v, &end);
            if (!end || *end || isspace((unsigned char)v[0]) || !(g > 0.0) || !(g < 1e6)) {
                fprintf(stderr,
                        "mambabyte train: --gpu-memory must be a positive number of GiB, not "
                        "'%s'\n",
                        v);
                return 2;
            }
            o.gpu_memory = g;
        } else {
            fprintf(stderr, "mambabyte train: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
#undef VAL
#undef INT
#undef FLT
    }
    if (arg_flags_end(C)) return 2;
    if (!o.data || !o.out) {
        fprintf(stderr, "mambabyte train: --data and --out are required (see --help)\n");
        return 2;
    }
    if (o.val && vfrac_given) return conflict("--val", "--val-fraction");
    if (o.resume && o.force) return conflict("--resume", "--force");
    if (o.val && same_file(o.val, o.data))
        fprintf(stderr,
                "mambabyte train: warning: --val %s is the --data input: the validation "
                "bpb is measured on training data\n",
                o.val);
    if (!o.resume && o.steps <= 0 && o.time_limit <= 0) {
        fprintf(stderr, "mambabyte train: give --steps N or --time-limit SECONDS\n");
        return 2;
    }
    if (!lr_min_given) o.lr_min = o.lr / 10.0;
    if (!o.resume && o.lr_min > o.lr) {
        fprintf(stderr,
                "mambabyte train: --lr-min %g is above --lr %g (the schedule decays from --lr "
                "to --lr-min)\n",
                o.lr_min, o.lr);
        return 2;
    }
    if (!dt_rank_given) c->dt_rank = 0; /* auto: ceil(d_model / 16), derived below */
    if (mb_config_finalize(c)) {
        fprintf(stderr, "mambabyte train: %s\n", unprefixed(mb_last_error()));
        return 2;
    }
    if (o.resume) { /* the note on options that differ from the run's, once it has loaded */
        given.want = o;
        o.on_resume = note_ignored;
        o.on_resume_user = &given;
    }
    const mb_backend_ops *be;
    if (mb_backend_resolve(device, MB_BACKEND_CUDA_OPS, &be, NULL, 0)) {
        fprintf(stderr, "mambabyte train: %s\n", unprefixed(mb_last_error()));
        return 2;
    }
    if (be == &mb_backend_cpu && mb_precision_parse(o.precision) == MB_PRECISION_BF16) {
        fprintf(stderr, "mambabyte train: --precision bf16 needs --device cuda (the CPU path "
                        "computes in fp32)\n");
        return 2;
    }
    if (be == &mb_backend_cpu && o.gpu_memory > 0.0) {
        fprintf(stderr, "mambabyte train: --gpu-memory needs --device cuda\n");
        return 2;
    }
    if (be == &mb_backend_cpu && o.recompute == 1) {
        fprintf(stderr, "mambabyte train: --recompute on needs --device cuda (activation "
                        "recomputation exists only on the GPU; the CPU keeps every activation)\n");
        return 2;
    }
    const int rc = mb_train_with_backend(&o, be);
    if (rc) {
        fprintf(stderr, "mambabyte train: %s\n", unprefixed(mb_last_error()));
        return rc == MB_EINTR ? 130 : 1; /* the shell's status for SIGINT */
    }
    char rss[32];
    fprintf(stderr, "peak memory %s\n", fmt_bytes(peak_rss_bytes(), rss, sizeof rss));
    return 0;
}
