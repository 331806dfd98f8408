/*
 * The missive commands (commands.c): options, usage, output, and the work of
 * each command. Everything else in the command line (the main, the account's
 * owners: daemon, listen, chat) is built on this module, never under it.
 */
#ifndef MSV_APPS_COMMANDS_H
#define MSV_APPS_COMMANDS_H

#include <stdio.h>

#include <jansson.h>

#include "client/client.h"

/* EXIT_STORAGE: the server answered, but could not store what it was given (ERROR_IO) */
enum { EXIT_ERR = 1, EXIT_USAGE = 2, EXIT_AUTH = 3, EXIT_NET = 4, EXIT_STORAGE = 5 };

struct cli {
    const char *account, *data_dir, *server, *suite, *code, *text, *search, *passphrase_file,
        *password_file, *group, *backup_passphrase_file, *compat, *socket;
    const char *backup_passphrase;       /* given in a request to the daemon */
    const char *password, *new_password; /* password change: given in a request to the daemon */
    unsigned long kdf_memory_mib, kdf_passes;
    const char *files[8];
    size_t file_count;
    const char *reply_to; /* send: the message id (hex) answered */
    int remove;           /* react: take one's reaction away */
    int json, help, qr, accept, stdio, no_stdin, include_text, archived;
    /* run for a request to the account's owner: a secret comes from the request (or a file it
     * names), never from the owner's environment, which is not the caller's */
    int secrets_from_request;
    const char *reason;        /* report --reason */
    const char *name, *avatar; /* profile set --name, --avatar */
    const char *invite;        /* register --invite */
    const char *png, *image;   /* link --png, devices add --image */
    int yes;                   /* devices add, devices remove, leave, account delete: --yes */
    int no_history;            /* devices add --no-history */
    int resume_history;        /* link --resume-history */
    int approval, has_approval, reset, off;  /* groups invite --approval on|off, --reset, --off */
    const char *listen, *tls_cert, *tls_key; /* web --listen, --tls-cert, --tls-key */
    int open_browser, url;                   /* web --open, --url */
    /* web --session-hours, --idle-minutes, --token-minutes (0: the defaults) */
    double session_hours, idle_minutes, token_minutes;
    const char *before;        /* history --before MESSAGE_ID */
    const char *from;          /* send --from HANDLE */
    struct msv_client *client; /* the open account while a command runs (names of senders) */
    double wait_s;
    int wait_given; /* --wait was on the command line */
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
/* "HANDLE is a new account: ..." into text, and that line on stderr. */
void cli_account_new_text(const char *handle, char *text, size_t len);
void cli_account_new_notice(void *ctx, const char *handle);
void cli_devlist_warning(void *ctx, const char *handle, uint64_t device, const char *warning);
void cli_unreachable_warning(void *ctx, const char *handle, uint64_t device, const char *suites);
/* A device that says post-quantum got nothing: the server gave no checked KEM prekey for it. */
void cli_pq_refused_warning(void *ctx, const char *handle, uint64_t device, const char *warning);
/* A message went to the others but not to handle (its directory entry did not check out). */
void cli_not_sent_warning(void *ctx, const char *conversation, const char *handle,
                          const char *warning);
/* Sealed envelopes this device cannot open came (client.h on_unopened), on stderr. */
void cli_unopened_warning(void *ctx, const char *warning);
/* "post-quantum", "classical" or "none": a MSV_SESSION_* kind (client/sessions.h). */
const char *cli_session_kind_name(int kind);
/* This device's own counts (missive devices' own row, the daemon's status) set in j. */
void cli_own_counts_json(struct msv_client *c, json_t *j);
void cli_unsealed_notice(void *ctx, const char *handle);
void cli_outbox_held_notice(void *ctx, const uint8_t id[16], const char *reason);
/* A message as 'receive' and 'history' print it (-o json: one object per line). */
void cli_print_message(const struct cli *o, const struct msv_message_rec *m);
/* The object -o json prints for a message (a new reference; NULL if out of memory). */
json_t *cli_message_json(const struct msv_message_rec *m);
/* cli_message_json with what the account holds about the message: "reactions". */
json_t *cli_message_json_of(struct msv_client *c, const struct msv_message_rec *m);
/* What a reply answers, as a line ("↪ HANDLE: FIRST LINE" or "↪ original not found";
 * caller frees), NULL for a message that answers none. */
char *cli_quote_line(struct msv_client *c, const struct msv_message_rec *m);
/* A message's reactions as a line ("👍 2  ❤ 1"; caller frees), NULL if none. */
char *cli_reactions_line(struct msv_client *c, const uint8_t id[16]);
/* A message or notice as 'receive' prints it; ctx is the struct cli. */
void cli_print_incoming(void *ctx, const struct msv_incoming *in);
/*
 * The same, for a command in a process of its own (not the owner's): output that cannot be
 * written (a closed pipe, a full disk) ends the process with EXIT_ERR before the message is
 * recorded as shown, so that the next receive shows it.
 */
void cli_show_or_stop(void *ctx, const struct msv_incoming *in);
/* A transparency alarm as 'receive' prints it (on cli_err, and -o json on cli_out). */
void cli_print_alarm(void *ctx, const char *warning);
/*
 * The account password: the daemon request's, --password-file's or MISSIVE_PASSWORD; the new
 * one: the request's, MISSIVE_NEW_PASSWORD, or asked twice on the terminal (unless no_stdin).
 * NULL after saying why; caller frees with msv_secret_free(p, strlen(p)).
 */
char *cli_password(const struct cli *o);
char *cli_new_password(const struct cli *o);
/* Asks for a secret on the terminal without echoing it; NULL without one. Caller frees. */
char *cli_ask_secret(const char *prompt);
/* The list of commands, as 'missive --help' prints it. */
void cli_usage_all(FILE *f);
/* Opens the account in dir as o asks (passphrase, callbacks); 0 or an exit status. */
int cli_open(const struct cli *o, const char *dir, struct msv_client **c);
/* Runs register, link or restore (no account open yet); -1 for any other command. */
int cli_run_unopened(const struct cli *o, const char *command);

#endif
