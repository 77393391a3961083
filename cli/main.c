/* mambabyte: command-line entry point and subcommand dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "mambabyte.h"

static void usage(FILE *f) {
    fprintf(f, "mambabyte: byte-level language modelling with Mamba (MambaByte)\n"
               "\n"
               "usage: mambabyte <command> [options]   (mambabyte <command> --help for details)\n"
               "       mambabyte --version\n"
               "\n"
               "commands:\n"
               "  train     train a model on a file, directory tree or JSON lines\n"
               "  eval      bits per byte of a checkpoint on held-out data\n"
               "  generate  sample bytes in recurrent mode\n"
               "  info      config, parameter count and recurrent-state size\n"
               "  export    write a checkpoint in the Hugging Face or mamba_ssm layout\n");
}

/* Settings the OpenMP and OpenBLAS runtimes read once, before main, so that when one is unset
 * we set it and run ourselves again (once: the second run finds them set; MB_NO_BLAS_REEXEC=1
 * skips this):
 * - OMP_WAIT_POLICY=passive: idle OpenMP threads sleep instead of spinning. With another busy
 *   process on the machine, spinning threads took the cores from the working ones (a tiny
 *   training run on 2 cores: 5.4 s against 2.1 s passive); alone, passive measured as fast
 *   (the small preset at ctx 512: 8.4-9.2 s against 9.1-9.4 s per 30 steps).
 * - OPENBLAS_CORETYPE: OpenBLAS 0.3.21 (Debian 12) picks its kernels from the CPU model and
 *   falls back to the SSE3 "Prescott" kernels for models it does not know (recent Xeons, many
 *   VMs): 2-5x slower here. We choose a core type from the CPU's features.
 * Set either variable to override. */
static void tune_runtime_env(char **argv) {
    if (getenv("MB_NO_BLAS_REEXEC")) return;
    int changed = 0;
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        changed = 1;
    }
#if defined(__x86_64__)
    if (!getenv("OPENBLAS_CORETYPE")) {
        __builtin_cpu_init();
        const char *core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                           : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                             : NULL;
        if (core) {
            setenv("OPENBLAS_CORETYPE", core, 1);
            changed = 1;
        }
    }
#endif
    if (changed) execv("/proc/self/exe", argv); /* on failure, carry on as we are */
}

/* The command's exit status, or 1 where it succeeded but its output to stdout was lost (a full
 * disk): every byte a command prints goes through stdio, so a final flush and the stream's
 * error flag cover all of them. */
static int check_stdout(int rc) {
    if (rc) return rc; /* (the command has said why it failed) */
    errno = 0;
    const int flush_failed = fflush(stdout) != 0;
    const int e = errno;
    if (flush_failed || ferror(stdout)) {
        fprintf(stderr, "mambabyte: writing the output to stdout failed: %s\n",
                flush_failed && e ? strerror(e) : "a write error");
        return 1;
    }
    return rc;
}

int main(int argc, char **argv) {
    tune_runtime_env(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "train")) return check_stdout(cmd_train(argc - 1, argv + 1));
    if (!strcmp(c, "eval")) return check_stdout(cmd_eval(argc - 1, argv + 1));
    if (!strcmp(c, "generate")) return check_stdout(cmd_generate(argc - 1, argv + 1));
    if (!strcmp(c, "info")) return check_stdout(cmd_info(argc - 1, argv + 1));
    if (!strcmp(c, "export")) return check_stdout(cmd_export(argc - 1, argv + 1));
    if (!strcmp(c, "--version") || !strcmp(c, "version")) {
        printf("mambabyte %s\n", MB_VERSION);
        return check_stdout(0);
    }
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) {
        usage(stdout);
        return check_stdout(0);
    }
    fprintf(stderr, "mambabyte: unknown command '%s'\n", c);
    usage(stderr);
    return 2;
}
