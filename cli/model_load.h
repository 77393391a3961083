/* Loading a checkpoint for the inference subcommands, with errors printed for the user. */
#ifndef MB_CLI_MODEL_LOAD_H
#define MB_CLI_MODEL_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include "mambabyte.h"

/* Load -m DIR (any supported checkpoint format); prints "mambabyte <cmd>: <error>" on failure. */
int cli_load_model(const char *cmd, const char *dir, mb_model *m);
/* The directory a -m argument stands for: DIR itself, or the directory of a file given with -m
 * (DIR/config.json, a .safetensors), as the checkpoint loader reads it. */
void cli_model_dir(const char *dir, char *buf, size_t n);
/* The training context stored in DIR/train_state.safetensors (DIR: -m as given, or the
 * directory of a file given with -m), or `fallback`. */
int64_t cli_training_ctx(const char *dir, int64_t fallback);

#endif
