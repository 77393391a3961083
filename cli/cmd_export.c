/* mambabyte export: write a checkpoint in the Hugging Face (MambaForCausalLM) or mamba_ssm
 * (MambaLMHeadModel) layout, fp32 or rounded to f16 / bf16 (model.md "Checkpoint formats").
 * The export is written into a staging directory inside OUT_DIR, read back and checked against
 * the source there, and only then moved into place: a failed or interrupted export leaves
 * OUT_DIR as it was. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "mambabyte.h"

static void help(FILE *f) {
    fprintf(
        f, "usage: mambabyte export -m CKPT --format hf|mamba_ssm [--dtype f32|f16|bf16]\n"
           "                        [--force] OUT_DIR\n"
           "\n"
           "Write the model of CKPT (any format mambabyte loads) to OUT_DIR as config.json +\n"
           "model.safetensors:\n"
           "  hf         Hugging Face transformers: MambaForCausalLM.from_pretrained(OUT_DIR).\n"
           "             RMSNorm models only (transformers' Mamba has no LayerNorm variant).\n"
           "  mamba_ssm  state-spaces/mamba MambaLMHeadModel (config.json of MambaConfig,\n"
           "             tensors under their mamba_ssm names).\n"
           "\n"
           "  -m CKPT        checkpoint directory or .safetensors file with config.json beside it\n"
           "                 (also --model CKPT)\n"
           "  --format F     hf or mamba_ssm (required)\n"
           "  --dtype T      f32 (default, exact), f16 or bf16 (rounded to nearest even)\n"
           "  --force        overwrite config.json / model.safetensors already in OUT_DIR\n"
           "\n"
           "A tied lm_head is not stored (both libraries tie it on load). The files are written\n"
           "to a staging directory inside OUT_DIR, read back and compared with the source, and\n"
           "only then moved into place: a failed or interrupted (Ctrl-C, SIGTERM, SIGHUP)\n"
           "export leaves OUT_DIR as it was, and the next export removes what a killed one\n"
           "left. A training run's directory (train_state.safetensors) is refused as OUT_DIR.\n"
           "'--' ends the options (for an OUT_DIR that starts with '-').\n");
}

static int exists(const char *dir, const char *name) {
    char p[4200];
    struct stat s;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &s) == 0;
}

/* Value `a` after a round trip through dtype t. */
static float rounded(float a, mb_dtype t) {
    if (t == MB_DT_F16) return mb_f16_to_f32(mb_f32_to_f16(a));
    if (t == MB_DT_BF16) return mb_bf16_to_f32(mb_f32_to_bf16(a));
    return a;
}

/* 0 when every parameter of m stays finite in dtype t; else 1 with a message naming the first
 * tensor and element that would overflow (f16's largest finite value is 65504). */
static int check_range(const mb_model *m, mb_dtype t, const char *tname, const char *src) {
    for (int i = 0; i < m->n_tensors; i++) {
        const mb_tensor_info *ti = &m->tensors[i];
        for (int64_t j = 0; j < ti->numel; j++) {
            const float a = m->params[ti->offset + j];
            if (isfinite(a) && !isfinite(rounded(a, t))) {
                fprintf(stderr,
                        "mambabyte export: %s: %s[%lld] = %g does not fit in %s (it would become "
                        "inf); export as %s instead. Nothing was written.\n",
                        src, ti->name, (long long)j, (double)a, tname,
                        t == MB_DT_F16 ? "f32 or bf16" : "f32");
                return 1;
            }
        }
    }
    return 0;
}

/* Remove the staging directory dir and what an export wrote into it (best effort). */
static void remove_staging(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[4200];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

/* What a signal (SIGINT, SIGTERM, SIGHUP) during the export removes before the process ends as
 * the signal would end it: the staging directory's files (their names fixed before the export
 * writes them) and the directory, and OUT_DIR where the export created it (only if empty).
 * unlink / rmdir / signal / raise only: async-signal-safe. The moves into place run with these
 * signals blocked, so a signal never interrupts them half-way. */
enum { N_STAGED = 5 }; /* (index 2: model.safetensors.prev) */
static char g_staged[N_STAGED][4300], g_stage_dir[4200], g_made_out[4200];
static int g_keep_stage; /* a file the user needs was left in the staging directory */

static void on_export_signal(int signo) {
    for (int i = 0; i < N_STAGED; i++)
        if (g_staged[i][0]) unlink(g_staged[i]);
    if (g_stage_dir[0]) rmdir(g_stage_dir);
    if (g_made_out[0]) rmdir(g_made_out);
    signal(signo, SIG_DFL);
    raise(signo);
}

static const int k_signals[] = {SIGINT, SIGTERM, SIGHUP};
static struct sigaction g_old_action[3];
static int g_caught[3];

/* on: the handler for each of k_signals not ignored (an export under nohup, or started in the
 * background by a shell, stays immune as before), the previous actions kept; off: them back. */
static void export_signals(int on) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_export_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++) {
        if (on) {
            sigaction(k_signals[i], NULL, &g_old_action[i]);
            g_caught[i] = g_old_action[i].sa_handler != SIG_IGN;
            if (g_caught[i]) sigaction(k_signals[i], &sa, NULL);
        } else if (g_caught[i]) {
            sigaction(k_signals[i], &g_old_action[i], NULL);
            g_caught[i] = 0;
        }
    }
}

static void block_signals(int block, sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < 3; i++)
        sigaddset(&set, k_signals[i]);
    sigprocmask(block ? SIG_BLOCK : SIG_SETMASK, block ? &set : old, block ? old : NULL);
}

/* Remove the staging directories that exports killed outright (SIGKILL, a crash, a power cut)
 * left in out: .mambabyte-export.PID whose process is gone; each named in a note. */
static void remove_stale_staging(const char *out) {
    DIR *d = opendir(out);
    if (!d) return;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(d))) {
        const char *pre = ".mambabyte-export.";
        if (strncmp(e->d_name, pre, strlen(pre))) continue;
        char *end;
        errno = 0;
        const long pid = strtol(e->d_name + strlen(pre), &end, 10);
        if (errno || *end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* (alive, or not ours) */
        snprintf(p, sizeof p, "%s/%s", out, e->d_name);
        fprintf(stderr, "mambabyte export: removing %s, left by an export that was killed\n", p);
        remove_staging(p);
    }
    closedir(d);
}

/* 0 when out/name is absent, a regular file or a symbolic link (a rename replaces either: the
 * link itself, as in a Hugging Face cache snapshot), else 1 with a message (a directory, which
 * a rename of a file cannot replace, or a device, FIFO or socket). */
static int replaceable(const char *out, const char *name) {
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", out, name);
    if (lstat(p, &st) != 0 || S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) return 0;
    fprintf(stderr,
            "mambabyte export: %s exists and is %s; remove it or choose another OUT_DIR. Nothing "
            "was written.\n",
            p, S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
    return 1;
}

/* Put out's previous model, kept as prev, back at to_m after a failed move; where that rename
 * fails too, move it to out/model.safetensors.prev instead (out of the staging directory, which
 * is removed) and say where it is. */
static void put_back(const char *prev, const char *to_m, const char *out) {
    if (rename(prev, to_m) == 0) return;
    const int e = errno;
    char keep[4300];
    snprintf(keep, sizeof keep, "%s/model.safetensors.prev", out);
    if (rename(prev, keep) == 0) {
        fprintf(stderr,
                "mambabyte export: the previous %s could not be put back (%s); it is kept as %s\n",
                to_m, strerror(e), keep);
        g_staged[2][0] = '\0'; /* (no longer the staging file the signal handler removes) */
    } else {
        fprintf(stderr,
                "mambabyte export: the previous %s could not be put back (%s) nor moved to %s "
                "(%s); it is kept as %s\n",
                to_m, strerror(e), keep, strerror(errno), prev);
        g_staged[2][0] = '\0';
        g_keep_stage = 1; /* (the staging directory stays, with it) */
    }
}

/* Move stage/model.safetensors and stage/config.json over out's, both or neither: out's model
 * is first kept as stage/model.safetensors.prev and put back where a later move fails.
 * MB_DEBUG_EXPORT=config-move (a test hook) fails the config's move with EIO (and =signal
 * raises SIGTERM just before the moves).
 * 0, or 1 with a message (out's files then as they were). */
static int move_into_place(const char *stage, const char *out) {
    char from_m[4300], to_m[4300], prev[4300], from_c[4300], to_c[4300];
    snprintf(from_m, sizeof from_m, "%s/model.safetensors", stage);
    snprintf(to_m, sizeof to_m, "%s/model.safetensors", out);
    snprintf(prev, sizeof prev, "%s/model.safetensors.prev", stage);
    snprintf(from_c, sizeof from_c, "%s/config.json", stage);
    snprintf(to_c, sizeof to_c, "%s/config.json", out);
    struct stat st;
    const int had = lstat(to_m, &st) == 0;
    if (had && rename(to_m, prev) != 0) {
        fprintf(stderr, "mambabyte export: cannot move %s aside: %s\n", to_m, strerror(errno));
        return 1;
    }
    if (rename(from_m, to_m) != 0) {
        fprintf(stderr, "mambabyte export: cannot move %s to %s: %s\n", from_m, to_m,
                strerror(errno));
        if (had) put_back(prev, to_m, out);
        return 1;
    }
    const char *dbg = getenv("MB_DEBUG_EXPORT");
    const int fail_c = dbg && !strcmp(dbg, "config-move");
    if (fail_c) errno = EIO;
    if (fail_c || rename(from_c, to_c) != 0) {
        fprintf(stderr, "mambabyte export: cannot move %s to %s: %s; %s\n", from_c, to_c,
                strerror(errno),
                had ? "the previous model.safetensors is put back" : "model.safetensors removed");
        if (had)
            put_back(prev, to_m, out);
        else if (unlink(to_m) != 0)
            fprintf(stderr, "mambabyte export: and its removal failed (%s)\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* The positional OUT_DIR a: taken into *out, or -1 after a message where one was given. */
static int take_out_dir(const char **out, const char *a) {
    if (!*out) {
        *out = a;
        return 0;
    }
    fprintf(stderr, "mambabyte export: more than one OUT_DIR ('%s' and '%s')\n", *out, a);
    return -1;
}

int cmd_export(int argc, char **argv) {
    const char *src = NULL, *fmt = NULL, *dt = "f32", *out = NULL;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = arg_flag("export", argv, i);
        if (!a) return 2;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(src = arg_path("export", a, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--format")) {
            if (!(fmt = arg_value("export", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--dtype")) {
            if (!(dt = arg_value("export", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--")) { /* end of the options: what follows is OUT_DIR */
            for (i++; i < argc; i++)
                if (take_out_dir(&out, argv[i])) return 2;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "mambabyte export: unknown argument '%s' (see --help)\n", a);
            return 2;
        } else if (take_out_dir(&out, a)) {
            return 2;
        }
    }
    if (arg_flags_end("export")) return 2;
    if (out && arg_path_check("export", "OUT_DIR", out)) return 2; /* '' would be the root */
    if (!src || !fmt || !out) {
        fprintf(stderr, "mambabyte export: need -m CKPT, --format hf|mamba_ssm and OUT_DIR "
                        "(see --help)\n");
        return 2;
    }
    mb_ckpt_format format;
    if (mb_ckpt_format_parse(fmt, &format)) {
        fprintf(stderr, "mambabyte export: --format: %s\n", mb_last_error());
        return 2;
    }
    mb_dtype dtype;
    if (!strcasecmp(dt, "f32") || !strcasecmp(dt, "fp32") || !strcasecmp(dt, "float32")) {
        dtype = MB_DT_F32;
    } else if (!strcasecmp(dt, "f16") || !strcasecmp(dt, "fp16") || !strcasecmp(dt, "float16")) {
        dtype = MB_DT_F16;
    } else if (!strcasecmp(dt, "bf16") || !strcasecmp(dt, "bfloat16")) {
        dtype = MB_DT_BF16;
    } else {
        fprintf(stderr, "mambabyte export: --dtype: unknown dtype '%s' (f32, f16 or bf16)\n", dt);
        return 2;
    }
    if (!force && (exists(out, "config.json") || exists(out, "model.safetensors"))) {
        fprintf(stderr,
                "mambabyte export: %s already holds config.json or model.safetensors; choose "
                "another OUT_DIR or pass --force to overwrite\n",
                out);
        return 1;
    }
    if (replaceable(out, "model.safetensors") || replaceable(out, "config.json")) return 1;
    if (exists(out, "train_state.safetensors")) {
        fprintf(stderr,
                "mambabyte export: %s is a training run's directory (train_state.safetensors): "
                "replacing its model would stop `train --resume` of that run; choose another "
                "OUT_DIR\n",
                out);
        return 1;
    }
    mb_model m;
    mb_checkpoint_info info;
    if (mb_checkpoint_load(src, &m, &info)) {
        fprintf(stderr, "mambabyte export: %s\n", mb_last_error());
        return 1;
    }
    if (format == MB_CKPT_HF && !m.cfg.rms_norm) {
        fprintf(stderr,
                "mambabyte export: %s uses LayerNorm (rms_norm false, like the released MambaByte "
                "models); Hugging Face transformers' Mamba (MambaForCausalLM) supports RMSNorm "
                "only, so this model cannot be exported to the hf format. Use --format mamba_ssm "
                "instead.\n",
                src);
        mb_model_free(&m);
        return 1;
    }
    int rc = 1;
    mb_model back;
    memset(&back, 0, sizeof back);
    if (check_range(&m, dtype, dt, src)) {
        mb_model_free(&m);
        return 1;
    }
    /* write into a staging directory inside OUT_DIR (created with its parents), read back and
     * check there, then move the two files into place */
    char stage[4200];
    struct stat ost;
    const int made_out = stat(out, &ost) != 0;
    snprintf(stage, sizeof stage, "%s/.mambabyte-export.%ld", out, (long)getpid());
    if (!made_out && !S_ISDIR(ost.st_mode)) {
        fprintf(stderr, "mambabyte export: OUT_DIR %s exists and is not a directory\n", out);
        goto done;
    }
    remove_staging(stage); /* (a leftover of a killed export with this pid) */
    if (!made_out) remove_stale_staging(out);
    {
        const char *names[N_STAGED] = {"model.safetensors", "config.json", "model.safetensors.prev",
                                       "model.safetensors.tmp", "config.json.tmp"};
        for (int i = 0; i < N_STAGED; i++) {
            if (strstr(names[i], ".tmp"))
                snprintf(g_staged[i], sizeof g_staged[i], "%s/%s.%ld", stage, names[i],
                         (long)getpid());
            else
                snprintf(g_staged[i], sizeof g_staged[i], "%s/%s", stage, names[i]);
        }
        snprintf(g_stage_dir, sizeof g_stage_dir, "%s", stage);
        snprintf(g_made_out, sizeof g_made_out, "%s", made_out ? out : "");
        export_signals(1);
    }
    if (mb_checkpoint_save_dtype(stage, &m, format, dtype)) {
        fprintf(stderr, "mambabyte export: %s\n", mb_last_error());
        goto done;
    }
    /* read the export back: same config, every value the (rounded) source value */
    mb_checkpoint_info binfo;
    if (mb_checkpoint_load(stage, &back, &binfo)) {
        fprintf(stderr, "mambabyte export: reading the export back failed: %s\n", mb_last_error());
        goto done;
    }
    if (back.n_params != m.n_params || back.cfg.rms_norm != m.cfg.rms_norm ||
        back.cfg.tie_embeddings != m.cfg.tie_embeddings || back.cfg.d_state != m.cfg.d_state ||
        back.cfg.dt_rank != m.cfg.dt_rank || back.cfg.n_layer != m.cfg.n_layer) {
        fprintf(stderr, "mambabyte export: %s read back with a different config\n", out);
        goto done;
    }
    for (int64_t i = 0; i < m.n_params; i++) {
        float want = rounded(m.params[i], dtype);
        if (memcmp(&want, &back.params[i], sizeof want) != 0) {
            fprintf(stderr, "mambabyte export: %s: parameter %lld reads back as %g, not %g\n", out,
                    (long long)i, (double)back.params[i], (double)want);
            goto done;
        }
    }
    { /* test hook: a SIGTERM once the export is staged and checked, before the moves */
        const char *dbg = getenv("MB_DEBUG_EXPORT");
        if (dbg && !strcmp(dbg, "signal")) raise(SIGTERM);
    }
    {
        sigset_t old_mask;
        block_signals(1, &old_mask);
        const int moved = move_into_place(stage, out);
        g_made_out[0] = '\0'; /* (OUT_DIR holds the export now, or what it held before) */
        block_signals(0, &old_mask);
        if (moved) goto done;
    }
    {
        char moved[4200]; /* the renames made durable (best effort: they are done) */
        snprintf(moved, sizeof moved, "%s/config.json", out);
        (void)mb_atomic_sync_dir(moved);
    }
    printf("exported %s (%s, %s) -> %s (%s, %s): %d tensors, %lld parameters%s\n", src, info.format,
           info.dtype, out, mb_ckpt_format_name(format), mb_dtype_name(dtype), binfo.n_tensors,
           (long long)m.n_params, m.cfg.tie_embeddings ? ", lm_head tied (not stored)" : "");
    rc = 0;
done:
    if (!g_keep_stage) remove_staging(stage);
    if (rc && made_out) rmdir(out); /* (only when empty) */
    export_signals(0);
    mb_model_free(&back);
    mb_model_free(&m);
    return rc;
}
