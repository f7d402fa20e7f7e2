// cmd.h: the commands of the nsa binary, one file each in cmd/, dispatched by cmd/main.c.
// Each parses its arguments into a plain options struct, validates them in one place and
// calls its engine in data/, train/ or eval/. argv[0] is the command's own name.
// Exit status: 0 success, 1 failure, 2 bad usage (124 comes from the watchdog's thread).
#ifndef NSA_CMD_H
#define NSA_CMD_H

// What a command's parse step returns to go on; anything else is the exit status (0 after
// --help, 2 after a usage error).
#define CMD_GO (-1)

int cmd_prepare(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_hangcheck(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
