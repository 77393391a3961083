/* The subcommands of the mambabyte program. Each returns the process exit status. */
#ifndef MB_CLI_COMMANDS_H
#define MB_CLI_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
