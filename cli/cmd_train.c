/* mambabyte train: parse flags into mb_train_opts and run the training loop. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "commands.h"
#include "mambabyte.h"
#include "train/backend.h"
#include "train/data.h"
#include "train/trainer.h"

/* Flags that set the model, data or optimizer: fixed for a run, so --resume ignores them. */
static const char *const k_run_settings[] = {
    "--preset",  "--d-model",  "--n-layer",      "--d-state", "--d-conv", "--expand",
    "--dt-rank", "--rms-norm", "--layer-norm",   "--tie",     "--untie",  "--ctx",
    "--batch",   "--accum",    "--lr",           "--lr-min",  "--warmup", "--weight-decay",
    "--clip",    "--seed",     "--val-fraction", NULL};

static void note_setting(const char *a, char *ignored, size_t n) {
    for (int k = 0; k_run_settings[k]; k++)
        if (!strcmp(a, k_run_settings[k]) && strlen(ignored) + strlen(a) + 2 < n) {
            strcat(ignored, " ");
            strcat(ignored, a);
        }
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
        "  --eval-every N       validation every N steps (default 100; 0 = end only)\n"
        "  --eval-bytes N       validation bytes per evaluation (default 262144; 0 = all)\n"
        "  --final-eval-bytes N validation bytes for the final val_bpb (default 4194304; 0 = all)\n"
        "  --ckpt-every N       checkpoint every N steps (default: at the end)\n"
        "  --resume             continue the run in --out exactly where it stopped (its saved\n"
        "                       model, data and optimizer settings are used)\n"
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
    char ignored[512] = "";
    for (int i = 1; i < argc; i++) {
        const char *a = arg_flag(C, argv, i), *v;
        if (!a) return 2;
        note_setting(a, ignored, sizeof ignored);
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
        else if (!strcmp(a, "--eval-bytes"))
            INT(0, INT64_MAX / 2, o.eval_bytes);
        else if (!strcmp(a, "--final-eval-bytes"))
            INT(0, INT64_MAX / 2, o.final_eval_bytes);
        else if (!strcmp(a, "--ckpt-every"))
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
    if (o.resume && ignored[0])
        fprintf(stderr,
                "mambabyte train: --resume continues with the run's saved settings; "
                "ignoring%s\n",
                ignored);
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
