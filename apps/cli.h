/*
 * The missive command line's parts: the commands (missive.c), the daemon
 * that owns an account and answers JSON-RPC (daemon.c), and the full-screen
 * chat (chat.c), which owns the account the same way.
 */
#ifndef MSV_APPS_CLI_H
#define MSV_APPS_CLI_H

#include <stdio.h>

#include <jansson.h>

#include "client/client.h"

/* EXIT_STORAGE: the server answered, but could not store what it was given (ERROR_IO) */
enum { EXIT_ERR = 1, EXIT_USAGE = 2, EXIT_AUTH = 3, EXIT_NET = 4, EXIT_STORAGE = 5 };

struct cli {
    const char *account, *data_dir, *server, *suite, *code, *text, *search, *passphrase_file,
        *password_file, *group, *backup_passphrase_file, *compat, *socket;
    const char *backup_passphrase; /* given in a request to the daemon */
    unsigned long kdf_memory_mib, kdf_passes;
    const char *files[8];
    size_t file_count;
    int json, help, qr, accept, stdio, no_stdin;
    double wait_s;
    long limit;
    int argc;
    char **argv; /* the command's operands */
    /* what arrives while a command waits for something (NULL: printed as 'receive' does) */
    void (*on_incoming)(void *ctx, const struct msv_incoming *in);
    void *incoming_ctx;
};

/* Where commands write: stdout and stderr, or a daemon request's buffers. */
extern FILE *cli_out, *cli_err;

/* Fills o from argv; *command: the command's name (NULL if none). 0 or EXIT_USAGE. */
int cli_parse_args(int argc, char **argv, struct cli *o, const char **command);
/* The account's handle and directory as o names it; 0, or an exit status after saying why. */
int cli_account(const struct cli *o, char *handle, size_t handle_len, char *dir, size_t dir_len);
/* 1 for a command that works on an open account (everything but register, link, restore). */
int cli_account_command(const char *command);
/* Runs an account command on c; its exit status. */
int cli_run(const struct cli *o, const char *command, struct msv_client *c);
/* The command's usage on f (cli_err: an error, EXIT_USAGE); 0 if it is known. */
int cli_usage(const char *command, FILE *f);
/* The message's text: --text, or standard input (unless no_stdin); NULL after saying why. */
char *cli_message_text(const struct cli *o);
/* The warnings a send prints on cli_err: a contact's devices changed; a device left out. */
void cli_key_change_warning(void *ctx, const char *handle);
void cli_unreachable_warning(void *ctx, const char *handle, uint64_t device, const char *suites);
void cli_unsealed_notice(void *ctx, const char *handle);
/* A message as 'receive' and 'history' print it (-o json: one object per line). */
void cli_print_message(const struct cli *o, const struct msv_message_rec *m);
/* The object -o json prints for a message (a new reference; NULL if out of memory). */
json_t *cli_message_json(const struct msv_message_rec *m);
/* The lock an owner (daemon, chat) holds on the account directory, and its socket. */
#define CLI_LOCK_FILE "daemon.lock"
#define CLI_SOCKET_FILE "daemon.sock"

/* daemon.c */
/* missive daemon: owns the account in c until a signal or end of standard input. */
int daemon_main(const struct cli *o, struct msv_client *c);
/*
 * If a daemon or chat owns the account in dir, runs the command through it,
 * printing what it printed, and returns 1 with *rc its exit status; 0 if none
 * owns it (run the command here).
 */
int daemon_forward(const struct cli *o, const char *dir, const char *command, int *rc);
/* 1 if a daemon or chat holds the account in dir (its pid, if it wrote one, to pid). */
int owner_running(const char *dir, char *pid, size_t pid_len);

/* chat.c */
int chat_main(const struct cli *o, struct msv_client *c);

#endif
