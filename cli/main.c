/* mambabyte: command-line entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

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

int main(int argc, char **argv) {
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
