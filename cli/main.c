/* mambabyte: command-line entry point and subcommand dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

static void usage(FILE *f) {
    fprintf(f, "mambabyte: byte-level language modelling with Mamba (MambaByte)\n"
               "\n"
               "usage: mambabyte <command> [options]   (mambabyte <command> --help for details)\n"
               "\n"
               "commands:\n"
               "  train     train a model on a file, directory tree or JSON lines\n"
               "  eval      bits per byte of a checkpoint on held-out data\n"
               "  generate  sample bytes in recurrent mode\n"
               "  info      config, parameter count and recurrent-state size\n"
               "  export    write a checkpoint in the Hugging Face or mamba_ssm layout\n");
}

/* OpenBLAS 0.3.21 (Debian 12) picks its kernels from the CPU model and falls back to the SSE3
 * "Prescott" kernels for models it does not know (recent Xeons, many VMs): 2-5x slower here.
 * It reads OPENBLAS_CORETYPE once, before main, so when that is unset we choose a core type from
 * the CPU's features and run ourselves again with it. Set OPENBLAS_CORETYPE to override. */
static void choose_blas_kernels(char **argv) {
#if defined(__x86_64__)
    if (getenv("OPENBLAS_CORETYPE") || getenv("MB_NO_BLAS_REEXEC")) return;
    __builtin_cpu_init();
    const char *core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                         : NULL;
    if (!core) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    execv("/proc/self/exe", argv); /* on failure, carry on with the default kernels */
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    choose_blas_kernels(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(c, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(c, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(c, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(c, "export")) return cmd_export(argc - 1, argv + 1);
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "mambabyte: unknown command '%s'\n", c);
    usage(stderr);
    return 2;
}
