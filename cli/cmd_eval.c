/* mambabyte eval: bits per byte of a checkpoint on a file, directory tree or JSON lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "eval/evaluate.h"
#include "mambabyte.h"
#include "model_load.h"
#include "train/backend.h"
#include "train/data.h"

static void help(FILE *f) {
    fprintf(
        f, "usage: mambabyte eval -m DIR PATH [--ctx N] [--stream] [--batch N] [--max-bytes N]\n"
           "                      [--format F] [--device D] [--json]\n"
           "\n"
           "Bits per byte (mean cross-entropy in nats per predicted byte / ln 2) of the model in\n"
           "DIR on every document of PATH (file, directory tree or *.jsonl). The first byte of\n"
           "each document is context only.\n"
           "\n"
           "  -m DIR         checkpoint directory (also --model DIR)\n"
           "  --ctx N        window length (default: the training context, else 1024)\n"
           "  --stream       carry the recurrent state from window to window: constant memory,\n"
           "                 context = the whole document so far (beyond the training context)\n"
           "  --batch N      windows per forward pass (default 8); not with --stream, which\n"
           "                 scores one window at a time, carrying the state to the next\n"
           "  --max-bytes N  stop after about N scored bytes (default 0: all)\n"
           "  --format F     auto | bytes | jsonl\n"
           "  --device D     auto | cuda | cpu (default auto: cuda when this build has CUDA and\n"
           "                 a GPU is present, else cpu); the GPU scores in fp32, streamed or not\n"
           "  --json         print the result as JSON: bpb, bytes (scored), nats, ctx, stream,\n"
           "                 documents (in PATH), documents_scored (those with a byte scored:\n"
           "                 fewer where --max-bytes stops early or a document has < 2 bytes)\n"
           "\n"
           "A window longer than the longest document is cut to it (the scores are the same): the\n"
           "ctx reported is the one used, with the one asked for beside it when they differ.\n"
           "Ends with 'bpb: <value> bytes: <count>'. '--' ends the options (for a PATH that\n"
           "starts with '-').\n");
}

typedef struct {
    double t0, last;
    int tty;
} progress_state;

static void progress(int64_t done, int64_t total, void *user) {
    progress_state *p = user;
    double now = now_seconds();
    if (done < total && now - p->last < (p->tty ? 0.2 : 10.0)) return;
    p->last = now;
    if (done > total) total = done; /* --max-bytes stops after whole windows */
    double frac = total > 0 ? (double)done / (double)total : 1.0;
    int w = 30, fill = (int)(frac * w + 0.5);
    char bar[64], eta[32];
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[w] = '\0';
    double rate = done / (now - p->t0 + 1e-9);
    fmt_duration(rate > 0 ? (double)(total - done) / rate : 0, eta, sizeof eta);
    fprintf(stderr, "%seval [%s] %5.1f%% %lld/%lld bytes %.1f kB/s ETA %s%s", p->tty ? "\r" : "",
            bar, 100.0 * frac, (long long)done, (long long)total, rate / 1000.0, eta,
            p->tty ? "" : "\n");
    if (p->tty && done >= total) fputc('\n', stderr);
}

/* The positional PATH a: taken into *input, or -1 after a message where one was given. */
static int take_path(const char **input, const char *a) {
    if (!*input) {
        *input = a;
        return 0;
    }
    fprintf(stderr, "mambabyte eval: more than one PATH ('%s', '%s')\n", *input, a);
    return -1;
}

int cmd_eval(int argc, char **argv) {
    const char *C = "eval", *dir = NULL, *input = NULL, *format = "auto", *device = "auto";
    int64_t ctx = 0, batch = 8, max_bytes = 0;
    int stream = 0, json = 0, batch_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = arg_flag(C, argv, i), *v;
        if (!a) return 2;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(dir = arg_path(C, a, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--ctx")) {
            if (!(v = arg_value(C, argc, argv, &i)) || arg_int64(C, a, v, 1, 1 << 24, &ctx))
                return 2;
        } else if (!strcmp(a, "--batch")) {
            if (!(v = arg_value(C, argc, argv, &i)) || arg_int64(C, a, v, 1, 1 << 16, &batch))
                return 2;
            batch_given = 1;
        } else if (!strcmp(a, "--max-bytes")) {
            if (!(v = arg_value(C, argc, argv, &i)) ||
                arg_int64(C, a, v, 0, INT64_MAX / 2, &max_bytes))
                return 2;
        } else if (!strcmp(a, "--format")) {
            if (!(format = arg_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--device")) {
            if (!(device = arg_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--stream")) {
            stream = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--")) { /* end of the options: what follows is a PATH */
            for (i++; i < argc; i++)
                if (take_path(&input, argv[i])) return 2;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "mambabyte eval: unknown argument '%s' (see --help)\n", a);
            return 2;
        } else if (take_path(&input, a)) {
            return 2;
        }
    }
    if (arg_flags_end(C)) return 2;
    if (input && arg_path_check(C, "PATH", input)) return 2;
    if (!dir || !input) {
        fprintf(stderr, "mambabyte eval: need -m DIR and a PATH to score (see --help)\n");
        return 2;
    }
    if (stream && batch_given) { /* the state of one window is the start of the next */
        fprintf(stderr, "mambabyte eval: --batch and --stream conflict: --stream scores one "
                        "window at a time (each continues the state of the one before); drop "
                        "--batch or --stream\n");
        return 2;
    }
    mb_data_format fmt;
    if (mb_data_format_parse(format, &fmt)) {
        fprintf(stderr, "mambabyte eval: --format: %s\n", mb_last_error());
        return 2;
    }
    /* the device before any work: --device cuda fails here when no GPU is usable */
    const mb_backend_ops *be_ops = &mb_backend_cpu;
    if (mb_backend_resolve(device, MB_BACKEND_CUDA_OPS, &be_ops, NULL, 0)) {
        fprintf(stderr, "mambabyte eval: %s\n", mb_last_error());
        return 2;
    }
    mb_model m;
    if (cli_load_model(C, dir, &m)) return 1;
    if (ctx == 0) ctx = cli_training_ctx(dir, 1024);

    /* pack the input into a private temporary directory (removed afterwards) */
    char tmpdir[] = "/tmp/mambabyte-eval-XXXXXX", pack_path[4200];
    if (!mkdtemp(tmpdir)) {
        perror("mambabyte eval: mkdtemp");
        mb_model_free(&m);
        return 1;
    }
    snprintf(pack_path, sizeof pack_path, "%s/eval.pack", tmpdir);
    /* the model's own directory inside the input tree is not data: its checkpoint files (and a
     * training run's pack and metrics) would be scored as text */
    char model_dir[4200];
    cli_model_dir(dir, model_dir, sizeof model_dir);
    mb_pack pack;
    int skipped = 0;
    int rc = mb_pack_build_skipping(input, fmt, pack_path, model_dir, &skipped);
    if (!rc) rc = mb_pack_open(&pack, pack_path);
    if (!rc && skipped)
        fprintf(stderr, "mambabyte eval: note: the model's directory %s inside %s is not scored\n",
                model_dir, input);
    unlink(pack_path);
    rmdir(tmpdir);
    if (rc) {
        fprintf(stderr, "mambabyte eval: %s\n", mb_last_error());
        mb_model_free(&m);
        return 1;
    }
    mb_doc *docs = calloc((size_t)pack.n_docs, sizeof *docs);
    if (!docs) {
        fprintf(stderr, "mambabyte eval: out of memory\n");
        mb_pack_close(&pack);
        mb_model_free(&m);
        return 1;
    }
    int64_t longest = 0, to_score = 0;
    for (int64_t i = 0; i < pack.n_docs; i++) {
        docs[i].bytes = mb_pack_doc(&pack, i, &docs[i].len);
        if (docs[i].len > longest) longest = docs[i].len;
        if (docs[i].len > 1) to_score += docs[i].len - 1;
    }
    if (to_score == 0) {
        fprintf(stderr,
                "mambabyte eval: %s has no byte to score (%s shorter than 2 bytes; the first "
                "byte of a document is context only)\n",
                input, pack.n_docs == 1 ? "the document is" : "every document is");
        free(docs);
        mb_pack_close(&pack);
        mb_model_free(&m);
        return 1;
    }
    /* a window longer than the longest document only costs memory: the scores are the same */
    const int64_t ctx_requested = ctx;
    if (ctx > longest - 1) ctx = longest - 1;
    progress_state ps = {.t0 = now_seconds(), .last = 0, .tty = isatty(2)};
    mb_eval_result r;
    if (be_ops == &mb_backend_cpu) {
        rc = mb_evaluate(&m, docs, pack.n_docs, ctx, batch, stream, max_bytes, progress, &ps, &r);
    } else { /* on the GPU: parameters uploaded once */
        mb_backend *be = NULL;
        memset(&r, 0, sizeof r);
        const mb_backend_flags flags = {MB_PRECISION_FP32, 0, 0.0}; /* exact scores */
        rc = be_ops->open(&be, &m, NULL, stream ? 1 : batch, ctx, 0, &flags);
        if (!rc && stream)
            rc = mb_evaluate_stream(be_ops->score_stream, be, docs, pack.n_docs, ctx, max_bytes,
                                    progress, &ps, &r);
        else if (!rc)
            rc = mb_evaluate_windows(be_ops->score, be, docs, pack.n_docs, ctx, batch, max_bytes,
                                     progress, &ps, &r);
        if (be) be_ops->close(be);
    }
    double secs = now_seconds() - ps.t0;
    if (rc) {
        fprintf(stderr, "mambabyte eval: %s\n", mb_last_error());
    } else if (json) {
        char req[48] = ""; /* the ctx asked for, where it was cut to the longest document */
        if (ctx != ctx_requested)
            snprintf(req, sizeof req, ", \"ctx_requested\": %lld", (long long)ctx_requested);
        printf("{\"bpb\": %.6f, \"bytes\": %lld, \"nats\": %.6f, \"ctx\": %lld%s, \"stream\": "
               "%s, \"documents\": %lld, \"documents_scored\": %lld, \"seconds\": %.3f}\n",
               mb_eval_bpb(&r), (long long)r.bytes, r.nats, (long long)ctx, req,
               stream ? "true" : "false", (long long)pack.n_docs, (long long)r.docs, secs);
    } else {
        char req[80] = "";
        if (ctx != ctx_requested)
            snprintf(req, sizeof req, " (requested %lld; cut to the longest document)",
                     (long long)ctx_requested);
        char scored[64] = ""; /* where --max-bytes stopped early or documents had < 2 bytes */
        if (r.docs != pack.n_docs)
            snprintf(scored, sizeof scored, " (%lld scored)", (long long)r.docs);
        fprintf(stderr, "%lld document%s%s, ctx %lld%s%s, %.1fs (%.1f kB/s)\n",
                (long long)pack.n_docs, mb_plural(pack.n_docs), scored, (long long)ctx, req,
                stream ? " streamed" : " windows", secs, r.bytes / (secs + 1e-9) / 1000.0);
        printf("bpb: %.6f bytes: %lld\n", mb_eval_bpb(&r), (long long)r.bytes);
    }
    free(docs);
    mb_pack_close(&pack);
    mb_model_free(&m);
    return rc ? 1 : 0;
}
