/* mambabyte: command-line entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "mambabyte.h"

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "mambabyte: not yet\n");
    return 1;
}
