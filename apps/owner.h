/*
 * An owner of an account: the loop that the daemon and the chat share. It
 * holds the account's lock, keeps the connection to the server (reconnecting
 * with backoff), takes what arrives, and answers JSON-RPC on the account's
 * socket, so that plain commands run through it.
 */
#ifndef MSV_APPS_OWNER_H
#define MSV_APPS_OWNER_H

#include <jansson.h>

#include "commands.h"

struct owner;

/*
 * Told of every event, as subscribers get it (docs/daemon.md): in is what the
 * client reported, NULL for the owner's own events (connection, alarm,
 * key_change, unreachable, changed).
 */
typedef void (*owner_hook)(void *ctx, json_t *event, const struct msv_incoming *in);

/* Takes the lock and the socket (and standard input and output with with_stdio). */
int owner_start(const struct cli *o, struct msv_client *c, int with_stdio, struct owner **out);
void owner_set_hook(struct owner *ow, owner_hook hook, void *ctx);
/*
 * One more method beside the commands (name is borrowed and outlives ow): its
 * result (a new reference), or NULL with why filled for an error.
 */
typedef json_t *(*owner_method)(void *ctx, json_t *params, char *why, size_t why_len);
void owner_set_method(struct owner *ow, const char *name, owner_method method, void *ctx);
/* Adds what the owner's user counts to 'status' in schema 2 (fields of status). */
typedef void (*owner_status_fn)(void *ctx, json_t *status);
void owner_set_status(struct owner *ow, owner_status_fn fn, void *ctx);
/*
 * A connected socket (non-blocking; the owner takes it and closes it) becomes
 * a connection like one to the account's socket; -1 when the owner already has
 * its most connections (the caller keeps fd).
 */
int owner_add_peer(struct owner *ow, int fd);
/*
 * One turn: connects if it is time, waits at most max_wait_ms for the
 * server, the socket's clients, extra_fd (-1: none) and the signals that stop
 * the owner, and handles what is ready. 1 when extra_fd is readable, -1 when
 * it hung up.
 */
int owner_step(struct owner *ow, int extra_fd, int max_wait_ms);
/* Whether SIGINT, SIGTERM or SIGHUP arrived (they are caught from owner_start on). */
int owner_stopping(void);
/* Takes what arrived during a request the owner's user made itself. */
void owner_pump(struct owner *ow);
int owner_online(const struct owner *ow);
const char *owner_socket(const struct owner *ow);
/* With --stdio: whether standard input is still open. */
int owner_stdio_open(const struct owner *ow);
void owner_stop(struct owner *ow);

/* The lock an owner (daemon, chat) holds on the account directory, and its socket. */
#define CLI_LOCK_FILE "daemon.lock"
#define CLI_SOCKET_FILE "daemon.sock"

/*
 * If a daemon or chat owns the account in dir, runs the command through it,
 * printing what it printed, and returns 1 with *rc its exit status; 0 if none
 * owns it (run the command here).
 */
int daemon_forward(const struct cli *o, const char *dir, const char *command, int *rc);
/* 1 if a daemon or chat holds the account in dir (its pid, if it wrote one, to pid). */
int owner_running(const char *dir, char *pid, size_t pid_len);

/* The account's owners, each until a signal (daemon.c, chat.c). */
/* missive daemon: also until the end of standard input with --stdio. */
int daemon_main(const struct cli *o, struct msv_client *c);
/* missive listen: prints what arrives as receive does. */
int listen_main(const struct cli *o, struct msv_client *c);
int chat_main(const struct cli *o, struct msv_client *c);
/* missive web: the daemon, and the web client on HTTP and WebSocket (web.c). */
int web_main(const struct cli *o, struct msv_client *c);

#endif
