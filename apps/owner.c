/*
 * The account's owner: one process owns an account (its state database and its
 * connection to the server), receives as messages arrive, and answers
 * JSON-RPC 2.0 on a Unix socket in the account's directory (and on standard
 * input and output with --stdio): one JSON text per line each way. Every
 * account command is a method (its operands in "args", its options by their
 * long names); "receive" returns what arrived since the last call, and
 * "subscribe" turns on a stream of "event" notifications. The plain commands
 * find the socket and run through it (daemon_forward). The daemon, listen
 * and the chat are this loop with their own hooks. docs/daemon.md is the
 * protocol; DAEMON_SCHEMA its version.
 */
#define _GNU_SOURCE /* ppoll, accept4, asprintf */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "missive/util.h"
#include "owner.h"
#include "rpc.h"
#include "term.h"

#define DAEMON_SCHEMA 2     /* the newest schema served; a connection starts at 1 */
#define DAEMON_SCHEMA_MIN 1 /* the oldest still served */
#define PEERS_MAX 64
#define LINE_MAX_BYTES (1u << 20)     /* a request line; longer ones are refused and skipped */
#define OUT_MAX_BYTES (16u << 20)     /* what a reader that does not read may leave waiting */
#define INBOX_MAX 10000               /* what arrived and no 'receive' took yet */
#define INBOX_BYTES_MAX (64u << 20)   /* and their size, as answers would carry them */
#define RECEIVE_ANSWER_MAX (8u << 20) /* one 'receive' answer: the rest waits for the next */
#define ANSWER_SLACK (64u << 10)      /* an answer's room for what is not its items */
#define DEFERRED_MAX 4096             /* events held while a request line runs (handle_line) */
#define BATCH_MAX 32                  /* requests in one batch; more: one error, none run */
#define MONITOR_INTERVAL_MS 300000    /* the transparency log is read this often, and on notices */
#define EXPIRE_INTERVAL_MS 1000       /* disappearing messages are looked for this often */
#define RETRY_MAX_MS 60000
/* commits owed to groups on MLS from a receive: looked for again at least this long after a
 * receive made for them that made none while one stays due, doubling up to the most; and at
 * most the most after any look (another process's records, a clock set anew) */
#define KEYS_FLOOR_MS 60000
#define KEYS_MOST_MS 3600000

struct inbox_item {
    json_t *json;                  /* as 'receive -o json' prints it */
    char *text;                    /* as 'receive' prints it */
    size_t json_bytes, text_bytes; /* each in an answer, as JSON */
};

struct peer {
    int in_fd, out_fd; /* one socket, or standard input and output */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_cap;
    int subscribed, eof;
    int read_done; /* its input ended: it goes once its answers are written */
    int schema;    /* the schema version this connection asked for (docs/daemon.md) */
    /* this connection's number (schema 2: in its subscribe answer and in the "changed" events
     * of the commands it ran), so that a client knows the changes it made itself */
    uint64_t number;
    int skipping; /* the rest of a line over LINE_MAX_BYTES is dropped */
    /* a 'receive' waiting until nothing arrives for quiet_ms */
    json_t *wait_id;
    int wait_text;
    int64_t wait_until, quiet_ms;
    /* items a 'receive' answer of this connection carries, out of the inbox but kept until
     * that answer is written to the socket (the byte of the stream it ends at: flushed, the
     * number of bytes written so far, is past it); back in the inbox if the connection goes
     * first */
    struct held_item {
        struct inbox_item it;
        uint64_t end;
    } * held;
    size_t n_held;
    uint64_t flushed;
};

struct owner {
    const struct cli *o;
    struct msv_client *c;
    int lock_fd, listen_fd;
    char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct peer *peers[PEERS_MAX];
    size_t n_peers;
    uint64_t peers_made; /* connections numbered so far */
    struct inbox_item *inbox;
    size_t inbox_len, inbox_dropped, inbox_bytes;
    size_t line_received; /* bytes of items the receives of the line running took */
    /* the inbox's first items a 'receive' answered: taken once that answer is written (a reader
     * let go before it leaves them for the next receive) */
    size_t answered, answered_dropped;
    int online, said_offline, monitor_due;
    /* a command ran: what the server pushed meanwhile is taken once its answer is written
     * (handle_line), so that no event is told before an answer read from older state */
    int pump_due;
    /* while a request line runs, events for the peers wait here and follow its answer: the
     * answer was read from the state before them (a history, then an unsend) */
    json_t *deferred;
    int deferring;
    int said_deleted; /* the server said the account was deleted (account_gone) */
    int64_t retry_at, retry_ms, monitor_at, monitor_every;
    int64_t expire_at; /* when to look for disappearing messages whose time came */
    /* when a commit owed to a group on MLS falls due (keys_plan), how long to wait while one
     * stays due that receives do not make, and the client's count of changes last read */
    int64_t keys_at, keys_idle_ms;
    unsigned keys_seen;
    char last_error[300];
    owner_hook hook;
    void *hook_ctx;
    /* while a command runs (run_command), its output goes to its answer: the streams the
     * hook writes to are these, the owner's own */
    FILE *own_out, *own_err;
    owner_status_fn status_fn; /* more of 'status' (the web client's counts) */
    void *status_ctx;
    const char *method_name; /* one more method, served by method (web-login) */
    owner_method method;
    void *method_ctx;
    sigset_t before, during; /* the signal mask outside and inside ppoll */
    int signals_caught;
};

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

/*
 * SIGINT, SIGTERM and SIGHUP stop the owner's user: they are blocked but
 * inside ppoll, so none arrives between a check of owner_stopping() and the
 * wait that follows it.
 */
static void catch_stop_signals(struct owner *ow)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigset_t block;

    sigemptyset(&block);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&block, sigs[i]);
    sigprocmask(SIG_BLOCK, &block, &ow->before);
    ow->during = ow->before;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigdelset(&ow->during, sigs[i]);
        sigaction(sigs[i], &sa, NULL);
    }
}

int owner_stopping(void)
{
    return stop_signal != 0;
}

/*
 * What the daemon's bounds turned away since it started, for 'status' (schema 2): connections
 * past PEERS_MAX, request lines over LINE_MAX_BYTES, batches over BATCH_MAX, readers let go with
 * OUT_MAX_BYTES unread, inbox items dropped past INBOX_MAX or INBOX_BYTES_MAX, and 'receive'
 * answers cut at RECEIVE_ANSWER_MAX ("more"). One daemon a process: kept here.
 */
static struct {
    uint64_t peers_refused, lines_refused, batches_refused, readers_let_go, inbox_dropped,
        answers_cut;
} limits;

/* ---- output to peers ------------------------------------------------------------------ */

/* j queued for p: 1, or 0 if p was let go instead (it does not read, or no memory). */
static int peer_write(struct peer *p, json_t *j)
{
    char *s;
    size_t len;

    if (p->eof)
        return 0; /* let go already: it is dropped on this turn */
    s = json_dumps(j, JSON_COMPACT);
    len = s ? strlen(s) : 0;

    if (s == NULL || p->out_len + len + 1 > OUT_MAX_BYTES) {
        if (s != NULL)
            limits.readers_let_go++; /* (once: a peer let go is written to no more, above) */
        p->eof = 1;                  /* it does not read what it asked for: let it go */
        free(s);
        return 0;
    }
    if (p->out_len + len + 1 > p->out_cap) {
        size_t cap = (p->out_len + len + 1) * 2;
        char *bigger = realloc(p->out, cap);

        if (bigger == NULL) {
            p->eof = 1;
            free(s);
            return 0;
        }
        p->out = bigger;
        p->out_cap = cap;
    }
    memcpy(p->out + p->out_len, s, len);
    p->out[p->out_len + len] = '\n';
    p->out_len += len + 1;
    free(s);
    return 1;
}

static void item_free(struct inbox_item *it)
{
    json_decref(it->json);
    free(it->text);
}

/* The held items whose answer has been written to the socket: gone for good. */
static void held_release(struct peer *p)
{
    size_t k = 0;

    while (k < p->n_held && p->held[k].end <= p->flushed)
        item_free(&p->held[k++].it);
    if (k == 0)
        return; /* (held may be NULL: nothing held yet) */
    memmove(p->held, p->held + k, (p->n_held - k) * sizeof(*p->held));
    p->n_held -= k;
}

static void peer_flush(struct peer *p)
{
    while (p->out_len > 0) {
        ssize_t n = write(p->out_fd, p->out, p->out_len);

        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                p->eof = 1;
            return;
        }
        memmove(p->out, p->out + n, p->out_len - (size_t)n);
        p->out_len -= (size_t)n;
        p->flushed += (uint64_t)n;
        held_release(p);
    }
}

/* A response carrying result (a reference is taken). */
static json_t *rpc_result(json_t *id, json_t *result)
{
    return json_pack("{s:s, s:O, s:O}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
                     result);
}

static json_t *rpc_error(json_t *id, int code, const char *message, json_t *data)
{
    /* the message may carry a cut character, or the server's words: made valid UTF-8 */
    json_t *e = json_pack("{s:i, s:o}", "code", code, "message", rpc_text(message ? message : ""));

    if (data != NULL)
        json_object_set_new(e, "data", data);
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", e);
}

/* ---- schema version 1 ------------------------------------------------------------------ */

/*
 * Schema 1 (docs/daemon-schema-1.json) is still served to connections that do
 * not ask for a newer one: events of types it did not know are not sent to
 * them, and the fields it did not know are left out of those it did.
 */
static const char *const schema1_events[] = {
    "message", "receipt",    "typing",      "edit",       "device",  "session",
    "alarm",   "key_change", "unreachable", "connection", "changed",
};
static const char *const schema1_event_fields[] = {
    "type",   "from",      "conversation", "message_id", "status", "notice", "message", "warning",
    "handle", "device_id", "suites",       "state",      "server", "error",  "method",
};
static const char *const schema1_message_fields[] = {
    "message_id", "conversation", "from", "from_device", "outgoing", "text", "sent_at_ms", "status",
};
static const char *const schema1_statuses[] = {
    "queued", "sent", "delivered", "read", "failed", "received", "edited", "unsent",
};

static const char *const schema2_statuses[] = {"refused"};

static int listed(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; s != NULL && i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return 1;
    return 0;
}

#define LISTED(s, list) listed((s), (list), sizeof(list) / sizeof((list)[0]))

/* A copy of o with only the keys in list (a new reference; NULL if out of memory). */
static json_t *only_fields(json_t *o, const char *const *list, size_t n)
{
    json_t *copy = json_object(), *v;
    const char *key;

    if (copy == NULL)
        return NULL;
    json_object_foreach(o, key, v)
    {
        if (listed(key, list, n))
            json_object_set(copy, key, v);
    }
    return copy;
}

/* A message object as schema 1 described it (a new reference). */
static json_t *schema1_message(json_t *m)
{
    json_t *old = only_fields(m, schema1_message_fields,
                              sizeof(schema1_message_fields) / sizeof(schema1_message_fields[0]));
    const char *status = json_string_value(json_object_get(old, "status"));

    if (old != NULL && !LISTED(status, schema1_statuses))
        json_object_set_new(
            old, "status",
            json_string(json_is_true(json_object_get(old, "outgoing")) ? "sent" : "received"));
    return old;
}

/* The notification carrying event as schema 1 has it; NULL if schema 1 has no such event. */
static json_t *schema1_event(json_t *event)
{
    json_t *old, *m, *note;

    if (!LISTED(json_string_value(json_object_get(event, "type")), schema1_events))
        return NULL;
    /* an edit refused for coming after the window: schema 1 knew no such status */
    if (LISTED(json_string_value(json_object_get(event, "status")), schema2_statuses))
        return NULL;
    old = only_fields(event, schema1_event_fields,
                      sizeof(schema1_event_fields) / sizeof(schema1_event_fields[0]));
    if (old == NULL)
        return NULL;
    m = json_object_get(old, "message");
    if (m != NULL)
        json_object_set_new(old, "message", schema1_message(m));
    note = json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "event", "params", old);
    return note;
}

/* The event written to every subscribed peer, in the form of the schema it chose. */
static void tell_peers(struct owner *ow, json_t *event)
{
    json_t *note =
        json_pack("{s:s, s:s, s:O}", "jsonrpc", "2.0", "method", "event", "params", event);
    json_t *old = NULL;
    int old_made = 0;

    if (note == NULL)
        return; /* out of memory: this event is not told */

    for (size_t i = 0; i < ow->n_peers; i++) {
        if (!ow->peers[i]->subscribed)
            continue;
        if (ow->peers[i]->schema == DAEMON_SCHEMA) {
            peer_write(ow->peers[i], note);
            continue;
        }
        if (!old_made) {
            old = schema1_event(event);
            old_made = 1;
        }
        if (old != NULL)
            peer_write(ow->peers[i], old);
    }
    json_decref(old);
    json_decref(note);
}

/* The events held while a request line ran, told in their order. */
static void tell_deferred(struct owner *ow)
{
    size_t i;
    json_t *event;

    json_array_foreach(ow->deferred, i, event)
    {
        tell_peers(ow, event);
    }
    json_array_clear(ow->deferred);
}

/* An event to every subscriber and to the owner's hook; takes the reference. */
static void broadcast(struct owner *ow, json_t *event, const struct msv_incoming *in)
{
    /* while a request line runs, after its answer (handle_line); past DEFERRED_MAX held (a
     * flood meanwhile) those held go at once, in their order */
    if (ow->deferring && json_array_size(ow->deferred) >= DEFERRED_MAX)
        tell_deferred(ow);
    if (!ow->deferring || json_array_append(ow->deferred, event) != 0)
        tell_peers(ow, event);
    if (ow->hook != NULL) {
        FILE *out = cli_out, *err = cli_err;

        /* within a command (what its send read on its way, say): to the owner's streams, not
         * the command's answer */
        if (ow->own_out != NULL) {
            cli_out = ow->own_out;
            cli_err = ow->own_err;
        }
        ow->hook(ow->hook_ctx, event, in);
        cli_out = out;
        cli_err = err;
    }
    json_decref(event);
}

/* ---- what the server's connection brings --------------------------------------------- */

static char *hex16(const uint8_t id[16], char out[33])
{
    if (msv_hex_encode(id, 16, out, 33) != MSV_OK)
        out[0] = '\0';
    return out;
}

/* What cli_print_message prints as text, as a string (the sender's name from c). */
static char *render_message(const struct cli *o, struct msv_client *c,
                            const struct msv_message_rec *m)
{
    struct cli as = *o;
    FILE *saved = cli_out;
    char *s = NULL;
    size_t len = 0;

    as.json = 0;
    as.client = c;
    cli_out = open_memstream(&s, &len);
    if (cli_out != NULL) {
        cli_print_message(&as, m);
        fclose(cli_out);
    }
    cli_out = saved;
    return s;
}

/* "PREFIX TEXT\n" as receive prints it, the text made safe for a terminal (NULL: no memory). */
static char *text_line(const char *prefix, const char *text)
{
    char *shown = term_safe(text, TERM_LINES), *line = NULL;

    if (shown == NULL || asprintf(&line, "%s%s\n", prefix, shown) < 0)
        line = NULL;
    free(shown);
    return line;
}

/* The bytes text takes as a JSON string in an answer (escapes included). */
static size_t json_text_bytes(const char *text)
{
    json_t *s = text != NULL ? rpc_text(text) : NULL;
    size_t n = s != NULL ? json_dumpb(s, NULL, 0, JSON_ENCODE_ANY) : 0;

    json_decref(s);
    return n;
}

/* Takes the first n items out of the inbox (into to, or freed if to is NULL). */
static void inbox_take_into(struct owner *ow, size_t n, struct held_item *to, uint64_t end)
{
    for (size_t i = 0; i < n; i++) {
        ow->inbox_bytes -= ow->inbox[i].json_bytes + ow->inbox[i].text_bytes;
        if (to != NULL) {
            to[i].it = ow->inbox[i];
            to[i].end = end;
        } else {
            item_free(&ow->inbox[i]);
        }
    }
    memmove(ow->inbox, ow->inbox + n, (ow->inbox_len - n) * sizeof(*ow->inbox));
    ow->inbox_len -= n;
}

static void inbox_take(struct owner *ow, size_t n)
{
    inbox_take_into(ow, n, NULL, 0);
}

/* A connection going with items its answers carried unwritten: they go back to the inbox's
 * front, as many as it has room for (the oldest of them dropped past it, said as any drop). */
static void held_return(struct owner *ow, struct peer *p)
{
    size_t room = INBOX_MAX - ow->inbox_len, skip = p->n_held > room ? p->n_held - room : 0;

    if (p->n_held == 0)
        return;

    for (size_t k = 0; k < skip; k++) {
        item_free(&p->held[k].it);
        ow->inbox_dropped++;
        limits.inbox_dropped++;
    }
    memmove(ow->inbox + (p->n_held - skip), ow->inbox, ow->inbox_len * sizeof(*ow->inbox));
    for (size_t k = skip; k < p->n_held; k++) {
        ow->inbox[k - skip] = p->held[k].it;
        ow->inbox_bytes += p->held[k].it.json_bytes + p->held[k].it.text_bytes;
    }
    ow->inbox_len += p->n_held - skip;
    p->n_held = 0;
}

static void inbox_add(struct owner *ow, json_t *json, char *text)
{
    struct inbox_item it = {json, text, json_dumpb(json, NULL, 0, JSON_COMPACT),
                            json_text_bytes(text)};

    /* the oldest go, past either bound: history keeps them */
    while (ow->inbox_len > 0 &&
           (ow->inbox_len == INBOX_MAX ||
            ow->inbox_bytes + it.json_bytes + it.text_bytes > INBOX_BYTES_MAX)) {
        inbox_take(ow, 1);
        ow->inbox_dropped++;
        limits.inbox_dropped++;
        if (ow->answered > 0)
            ow->answered--; /* an answered one: it goes with its answer all the same */
    }
    ow->inbox[ow->inbox_len++] = it;
    ow->inbox_bytes += it.json_bytes + it.text_bytes;
    /* a waiting 'receive' waits until it has been quiet again */
    for (size_t i = 0; i < ow->n_peers; i++)
        if (ow->peers[i]->wait_id != NULL)
            ow->peers[i]->wait_until = msv_mono_ms() + ow->peers[i]->quiet_ms;
}

static void on_incoming(void *ctx, const struct msv_incoming *in)
{
    static const char *const kinds[] = {
        [MSV_INCOMING_MESSAGE] = "message",
        [MSV_INCOMING_RECEIPT] = "receipt",
        [MSV_INCOMING_TYPING] = "typing",
        [MSV_INCOMING_EDIT] = "edit",
        [MSV_INCOMING_DEVICE] = "device",
        [MSV_INCOMING_SESSION] = "session",
        [MSV_INCOMING_REACTION] = "reaction",
        [MSV_INCOMING_SYNC] = "sync",
        [MSV_INCOMING_BLOCKED] = "blocked",
        [MSV_INCOMING_GROUP] = "group",
        [MSV_INCOMING_CONVERSATION] = "conversation",
        [MSV_INCOMING_TIMER] = "timer",
        [MSV_INCOMING_EXPIRED] = "expired",
        [MSV_INCOMING_PROFILE] = "profile",
        [MSV_INCOMING_JOIN_REQUEST] = "join_request",
        [MSV_INCOMING_ACCOUNT] = "account",
        [MSV_INCOMING_QUOTA] = "account_quota",
        [MSV_INCOMING_HANDLE] = "handle",
        [MSV_INCOMING_LINK_HISTORY] = "link_history",
    };
    struct owner *ow = ctx;
    json_t *event = json_pack("{s:s}", "type", kinds[in->kind]);
    char hex[33], *line;

    if (in->kind == MSV_INCOMING_HANDLE) { /* handle_added, handle_removed (schema 2 only) */
        json_object_set_new(
            event, "type",
            json_string(strcmp(in->status, "added") == 0 ? "handle_added" : "handle_removed"));
        json_object_set_new(event, "handle", rpc_text(in->handle));
    }

    if (in->kind == MSV_INCOMING_LINK_HISTORY) { /* link_history_progress, _done, _failed */
        char type[40];

        snprintf(type, sizeof(type), "link_history_%s", in->status);
        json_object_set_new(event, "type", json_string(type));
        json_object_set_new(event, "device_id", json_integer((json_int_t)in->device_id));
        json_object_set_new(event, "done", json_integer((json_int_t)in->done));
        json_object_set_new(event, "total", json_integer((json_int_t)in->total));
    }
    if (in->from != NULL)
        json_object_set_new(event, "from", rpc_text(in->from));
    if (in->conversation != NULL)
        json_object_set_new(event, "conversation", rpc_text(in->conversation));
    if (in->target != NULL)
        json_object_set_new(event, "message_id", json_string(hex16(in->target, hex)));
    if (in->status != NULL && in->kind != MSV_INCOMING_HANDLE &&
        in->kind != MSV_INCOMING_LINK_HISTORY)
        json_object_set_new(event, "status", rpc_text(in->status));
    if (in->notice != NULL)
        json_object_set_new(event, "notice", rpc_text(in->notice));
    if (in->emoji != NULL)
        json_object_set_new(event, "emoji", rpc_text(in->emoji));
    if (in->kind == MSV_INCOMING_TIMER)
        json_object_set_new(event, "timer_s", json_integer((json_int_t)in->timer_s));
    if (in->message != NULL) {
        json_t *message = cli_message_json_of(ow->c, in->message);

        json_object_set_new(event, "message", message ? message : json_null());
        inbox_add(ow, json_incref(json_object_get(event, "message")),
                  render_message(ow->o, ow->c, in->message));
    } else if (in->notice != NULL && in->kind != MSV_INCOMING_GROUP) { /* its message says it */
        line = text_line("notice: ", in->notice);
        inbox_add(ow, json_pack("{s:o}", "notice", rpc_text(in->notice)), line);
    }
    if (in->kind == MSV_INCOMING_DEVICE)
        ow->monitor_due = 1; /* the log is read after the notices that explain it */
    broadcast(ow, event, in);
    /* a message held as a request: said once more, for those who list requests */
    if (in->message != NULL && !in->message->outgoing &&
        (in->message->pending & MSV_MESSAGE_REQUEST) != 0)
        broadcast(ow,
                  json_pack("{s:s, s:o, s:o, s:s}", "type", "request", "from",
                            rpc_text(in->message->sender), "conversation",
                            rpc_text(in->message->conversation), "message_id",
                            hex16(in->message->message_id, hex)),
                  NULL);
}

static void on_alarm(void *ctx, const char *warning)
{
    struct owner *ow = ctx;
    char *line = text_line("missive: WARNING: ", warning);

    inbox_add(ow, json_pack("{s:o}", "alarm", rpc_text(warning)), line);
    broadcast(ow, json_pack("{s:s, s:o}", "type", "alarm", "warning", rpc_text(warning)), NULL);
}

static void on_key_change(void *ctx, const char *handle)
{
    struct owner *ow = ctx;

    cli_key_change_warning(NULL, handle);
    broadcast(ow, json_pack("{s:s, s:o}", "type", "key_change", "handle", rpc_text(handle)), NULL);
}

static void on_account_new(void *ctx, const char *handle)
{
    struct owner *ow = ctx;
    char text[800];

    cli_account_new_text(handle, text, sizeof(text));
    cli_account_new_notice(NULL, handle);
    broadcast(ow,
              json_pack("{s:s, s:o, s:o}", "type", "account_new", "handle", rpc_text(handle),
                        "notice", rpc_text(text)),
              NULL);
}

/* besides the alarm: which handle's key directory history is wrong (schema 2 only) */
static void on_kt_history(void *ctx, const char *handle, const char *warning)
{
    broadcast(ctx,
              json_pack("{s:s, s:o, s:o}", "type", "kt_history", "handle", rpc_text(handle),
                        "warning", rpc_text(warning)),
              NULL);
}

/* besides the alarm: the server took one of this account's handles away (schema 2 only) */
static void on_handle_taken(void *ctx, const char *handle, uint64_t index, const char *warning)
{
    (void)index;
    broadcast(ctx,
              json_pack("{s:s, s:o, s:o}", "type", "handle_taken", "handle", rpc_text(handle),
                        "warning", rpc_text(warning)),
              NULL);
}

static void on_unreachable(void *ctx, const char *handle, uint64_t device, const char *suites)
{
    struct owner *ow = ctx;

    cli_unreachable_warning(NULL, handle, device, suites);
    broadcast(ow,
              json_pack("{s:s, s:o, s:I, s:s}", "type", "unreachable", "handle", rpc_text(handle),
                        "device_id", (json_int_t)device, "suites", suites),
              NULL);
}

/* An event of type about one device of handle, with the warning the command line shows. */
static void device_warning_event(struct owner *ow, const char *type, const char *handle,
                                 uint64_t device, const char *warning)
{
    broadcast(ow,
              json_pack("{s:s, s:o, s:I, s:o}", "type", type, "handle", rpc_text(handle),
                        "device_id", (json_int_t)device, "warning", rpc_text(warning)),
              NULL);
}

/* A device that says post-quantum got nothing from a send: no checked KEM prekey for it. */
static void on_pq_refused(void *ctx, const char *handle, uint64_t device, const char *warning)
{
    cli_pq_refused_warning(NULL, handle, device, warning);
    device_warning_event(ctx, "pq_refused", handle, device, warning);
}

/* A contact's device left out for want of a valid approval, or a new root of its device list
 * (docs/transparency.md, "Signed device lists"; schema 2 only). */
static void on_devlist(void *ctx, const char *handle, uint64_t device, const char *warning)
{
    cli_devlist_warning(NULL, handle, device, warning);
    device_warning_event(ctx, "devlist", handle, device, warning);
}

/* A message went to the others of its conversation but not to handle: what the directory
 * shows of it did not check out (docs/transparency.md, "A send to handles that do not check
 * out"; schema 2 only). */
static void on_not_sent(void *ctx, const char *conversation, const char *handle,
                        const char *warning)
{
    cli_not_sent_warning(NULL, conversation, handle, warning);
    broadcast(ctx,
              json_pack("{s:s, s:o, s:o, s:o}", "type", "not_sent", "conversation",
                        rpc_text(conversation), "handle", rpc_text(handle), "warning",
                        rpc_text(warning)),
              NULL);
}

/* This post-quantum device read a classical envelope from a device of an earlier version. */
static void on_classical(void *ctx, const char *handle, uint64_t device, const char *warning)
{
    cli_pq_refused_warning(NULL, handle, device, warning); /* the same warning line */
    device_warning_event(ctx, "classical", handle, device, warning);
}

/* A queued message could not go when the outbox was sent: it stays queued (schema 2 only). */
static void on_outbox_held(void *ctx, const uint8_t id[16], const char *reason)
{
    char hex[33];

    cli_outbox_held_notice(NULL, id, reason);
    if (msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
        return;
    broadcast(ctx,
              json_pack("{s:s, s:s, s:s, s:o}", "type", "outbox_held", "message_id", hex, "status",
                        "queued", "warning", rpc_text(reason)),
              NULL);
}

/* Sealed envelopes this device cannot open came: counted, and they name nobody. */
static void on_unopened(void *ctx, const char *warning)
{
    cli_unopened_warning(NULL, warning);
    broadcast(ctx, json_pack("{s:s, s:o}", "type", "unopened", "warning", rpc_text(warning)), NULL);
}

/* This device's keys could not be published on connecting: counted, tried again next time. */
static void on_keys_unpublished(void *ctx, const char *warning)
{
    cli_unopened_warning(NULL, warning);
    broadcast(ctx,
              json_pack("{s:s, s:o}", "type", "keys_unpublished", "warning", rpc_text(warning)),
              NULL);
}

static void set_online(struct owner *ow, int online, const char *why)
{
    char server[300];

    if (online == ow->online && (online || ow->said_offline))
        return;
    ow->online = online;
    ow->said_offline = !online;
    snprintf(server, sizeof(server), "%s:%u", ow->c->host, ow->c->port);
    broadcast(ow,
              online ? json_pack("{s:s, s:s, s:s}", "type", "connection", "state", "online",
                                 "server", server)
                     : json_pack("{s:s, s:s, s:s, s:s}", "type", "connection", "state", "offline",
                                 "server", server, "error", why),
              NULL);
}

/* The next connection is tried after a second, then twice as long after each failure, up to
 * a minute; a receive that goes well starts again from a second. */
static void retry_later(struct owner *ow)
{
    ow->retry_ms = ow->retry_ms ? ow->retry_ms * 2 : 1000;
    if (ow->retry_ms > RETRY_MAX_MS)
        ow->retry_ms = RETRY_MAX_MS;
    ow->retry_at = msv_mono_ms() + ow->retry_ms;
}

/* Takes what the server pushed; on a broken connection, closes it to retry later. */
static void pump(struct owner *ow)
{
    struct msv_client *c = ow->c;
    size_t n = 0, alarms = 0;
    const char *monitor_why = NULL;
    msv_err err;

    if (c->conn == NULL)
        return;
    err = msv_client_receive(c, 0, on_incoming, ow, &n);
    if (err == MSV_OK && (ow->monitor_due || msv_mono_ms() >= ow->monitor_at)) {
        ow->monitor_due = 0;
        ow->monitor_at = msv_mono_ms() + ow->monitor_every;
        c->why.message[0] = '\0';
        err = msv_client_monitor(c, on_alarm, ow, &alarms);
        /* the monitor's reason (an entry not proven, say) is what the user is shown */
        if (err != MSV_OK && c->why.message[0] != '\0')
            monitor_why = c->why.message;
    }
    /* keys whose publishing failed on this connection are tried again once their wait passed */
    if (err == MSV_OK)
        msv_client_keys_retry(c);
    /* synced state written beside the commands (by the chat, say) goes to the other devices;
     * what cannot go now stays pending, and the connection stays */
    if (err == MSV_OK && msv_client_sync_flush(c, NULL) != MSV_OK)
        snprintf(ow->last_error, sizeof(ow->last_error), "synced changes wait to be sent");
    if (err == MSV_OK) {
        ow->retry_ms = ow->retry_at = 0; /* a connection closed after this one is tried at once */
        return;
    }
    /* a connection the receive closed itself (a receipt's retries gave it up) waits as any
     * other: a server that fails every receive is not connected to again at once */
    if (monitor_why != NULL)
        snprintf(ow->last_error, sizeof(ow->last_error), "the transparency log: %s", monitor_why);
    else
        snprintf(ow->last_error, sizeof(ow->last_error), "%s", msv_strerror(err));
    if (c->conn != NULL) {
        msv_conn_close(c->conn);
        c->conn = NULL;
    }
    retry_later(ow);
    set_online(ow, 0, ow->last_error);
}

/*
 * The account was deleted (the server refuses its devices): said once, as an 'account' event
 * and a notice; nothing is deleted here but on 'leave --yes', the person's choice.
 */
static void account_gone(struct owner *ow)
{
    char notice[400];

    if (!msv_client_account_deleted(ow->c) || ow->said_deleted)
        return;
    ow->said_deleted = 1;
    snprintf(notice, sizeof(notice),
             "the account %s was deleted (from one of its devices, or by the server's operator); "
             "delete this device's state here with: missive leave --yes",
             ow->c->handle);
    on_incoming(ow, &(struct msv_incoming){
                        .kind = MSV_INCOMING_ACCOUNT, .notice = notice, .status = "deleted"});
}

/* Connects when it is time to try (at start, then backing off to a minute). */
static void keep_connected(struct owner *ow)
{
    msv_err err;

    if (ow->c->conn != NULL) {
        set_online(ow, 1, NULL);
        return;
    }
    if (msv_mono_ms() < ow->retry_at)
        return;
    err = msv_client_connect(ow->c); /* also sends what the outbox holds */
    if (err != MSV_OK) {
        const char *why = ow->c->why.message[0] ? ow->c->why.message : msv_strerror(err);

        snprintf(ow->last_error, sizeof(ow->last_error), "%s", why);
        retry_later(ow);
        set_online(ow, 0, ow->last_error);
        account_gone(ow);
        return;
    }
    ow->monitor_due = 1;
    set_online(ow, 1, NULL);
    pump(ow);
}

/* ---- running a command for a request -------------------------------------------------- */

/* The first line of what a command said on its error stream, without "missive: ". */
static void first_line(const char *err, char *out, size_t len)
{
    const char *s = strncmp(err, "missive: ", 9) == 0 ? err + 9 : err;

    snprintf(out, len, "%.*s", (int)strcspn(s, "\n"), s);
    if (out[0] == '\0')
        snprintf(out, len, "the command failed");
}

/* 1 if the command only shows something (nothing for the others to reload). */
static int only_shows(const char *method, const struct cli *o)
{
    static const char *const shows[] = {"history", "edits", "fingerprint", "log-head", "blocked"};
    static const char *const lists[] = {"contacts", "groups", "devices", "conversations",
                                        "requests", "sync",   "settings"};
    const char *verb = o->argc > 0 ? o->argv[0] : "list";
    int operands = o->argc + (o->group != NULL);

    for (size_t i = 0; i < sizeof(shows) / sizeof(shows[0]); i++)
        if (strcmp(method, shows[i]) == 0)
            return 1;
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        if (strcmp(method, lists[i]) == 0)
            return strcmp(verb, "list") == 0 || strcmp(verb, "get") == 0;
    return (strcmp(method, "profile") == 0 && (o->argc == 0 || strcmp(verb, "show") == 0)) ||
           (strcmp(method, "verify") == 0 && o->argc == 1 && !o->accept) ||
           (strcmp(method, "timer") == 0 && operands == 1) ||
           (strcmp(method, "windows") == 0 && o->argc == 0);
}

/* Runs an account command for a request; the response to send. */
static json_t *run_command(struct owner *ow, const struct peer *p, json_t *id, const char *method,
                           json_t *params)
{
    struct rpc_argv b = {.n = 0};
    const char *command = NULL, *output = json_string_value(json_object_get(params, "output"));
    json_t *pass = json_object_get(params, "backup-passphrase"), *result, *response;
    json_t *pw = json_object_get(params, "password"),
           *new_pw = json_object_get(params, "new-password");
    char why[300] = "", *out = NULL, *err = NULL, message[300];
    size_t out_len = 0, err_len = 0;
    FILE *saved_out = cli_out, *saved_err = cli_err;
    struct cli o;
    int rc, shows = 0;

    if ((output != NULL && strcmp(output, "json") != 0 && strcmp(output, "text") != 0) ||
        (pass != NULL && !json_is_string(pass)) || (pw != NULL && !json_is_string(pw)) ||
        (new_pw != NULL && !json_is_string(new_pw))) {
        return rpc_error(id, -32602,
                         "'output' is \"json\" or \"text\"; 'backup-passphrase', 'password' and "
                         "'new-password' strings",
                         NULL);
    }
    if (rpc_build_argv(method, params, &b, why, sizeof(why)) != 0) {
        rpc_argv_free(&b);
        return rpc_error(id, -32602, why, NULL);
    }
    ow->own_out = saved_out;
    ow->own_err = saved_err;
    cli_out = open_memstream(&out, &out_len);
    cli_err = open_memstream(&err, &err_len);
    if (cli_out == NULL || cli_err == NULL) {
        rc = -1;
    } else {
        rc = cli_parse_args(b.n, b.v, &o, &command);
        if (rc == 0) {
            o.json = output == NULL || strcmp(output, "json") == 0;
            o.no_stdin = 1;
            o.secrets_from_request = 1;
            o.backup_passphrase = json_string_value(pass);
            o.password = json_string_value(pw);
            o.new_password = json_string_value(new_pw);
            o.on_incoming = on_incoming; /* what arrives meanwhile is the owner's */
            o.incoming_ctx = ow;
            shows = only_shows(method, &o);
            rc = cli_run(&o, method, ow->c);
        }
    }
    if (cli_out != NULL)
        fclose(cli_out);
    if (cli_err != NULL)
        fclose(cli_err);
    cli_out = saved_out;
    cli_err = saved_err;
    ow->own_out = ow->own_err = NULL;
    rpc_argv_free(&b);
    if (rc < 0) {
        free(out);
        free(err);
        return rpc_error(id, -32603, "out of memory", NULL);
    }
    result = json_pack("{s:o}", "stderr", rpc_text(err ? err : ""));
    if (output != NULL && strcmp(output, "text") == 0) {
        json_object_set_new(result, "text", rpc_text(out ? out : ""));
    } else {
        json_t *items = json_array();

        /* a JSON text per line; anything else (a QR code) as a string */
        for (char *line = out, *next; line != NULL && *line != '\0'; line = next) {
            json_t *item;

            next = line + strcspn(line, "\n");
            if (*next == '\n')
                *next++ = '\0';
            item = json_loads(line, JSON_DECODE_ANY, NULL);
            json_array_append_new(items, item ? item : rpc_text(line));
        }
        json_object_set_new(result, "items", items);
    }
    free(out);
    if (rc == 0) {
        response = rpc_result(id, result);
    } else {
        json_t *words;

        first_line(err ? err : "", message, sizeof(message));
        json_object_set_new(result, "exit_status", json_integer(rc));
        words = rpc_text(message);
        response = rpc_error(id, -32000 - rc, json_string_value(words), json_incref(result));
        json_decref(words);
    }
    json_decref(result);
    free(err);
    /* this device left its account (leave): nothing is left to own; the owner stops */
    if (ow->c->device_id == 0) {
        stop_signal = SIGTERM;
        return response;
    }
    /* what the server pushed meanwhile, and the command's requests set aside, are taken once
     * this answer is written (handle_line): a page that merges an answer read before them
     * would otherwise put back what an event told it (an unsent message shown again) */
    ow->pump_due = 1;
    if (rc == 0 && !shows)
        broadcast(ow,
                  json_pack("{s:s, s:s, s:I}", "type", "changed", "method", method, "connection",
                            (json_int_t)p->number),
                  NULL);
    return response;
}

/* ---- 'receive' ------------------------------------------------------------------------ */

/*
 * What the inbox holds after what the line answered already, oldest first, up to
 * RECEIVE_ANSWER_MAX bytes of answer (one item at least) and never more than p's output has room
 * for (none if the first does not fit: "more" says so): marked answered, taken once the answer
 * is written (receive_written); "more" says that others wait for the next call.
 */
static json_t *receive_result(struct owner *ow, struct peer *p)
{
    json_t *result = json_object();
    size_t n = 0, bytes = ow->line_received, at = ow->answered;
    size_t room =
        p->out_len + ANSWER_SLACK < OUT_MAX_BYTES ? OUT_MAX_BYTES - p->out_len - ANSWER_SLACK : 0;

    /* the receives of one batch share the bound: their answers go in one line */
    while (at + n < ow->inbox_len) {
        const struct inbox_item *it = &ow->inbox[at + n];
        size_t b = p->wait_text ? it->text_bytes : it->json_bytes;

        if (bytes + b > room ||
            ((n > 0 || ow->line_received > 0) && bytes + b > RECEIVE_ANSWER_MAX))
            break;
        bytes += b;
        n++;
    }
    ow->line_received = bytes;
    if (p->wait_text) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        for (size_t i = at; f != NULL && i < at + n; i++)
            if (ow->inbox[i].text != NULL)
                fputs(ow->inbox[i].text, f);
        if (f != NULL)
            fclose(f);
        json_object_set_new(result, "text", rpc_text(text ? text : ""));
        free(text);
    } else {
        json_t *items = json_array();

        for (size_t i = at; i < at + n; i++)
            json_array_append(items, ow->inbox[i].json);
        json_object_set_new(result, "items", items);
    }
    json_object_set_new(result, "stderr", json_string(""));
    if (ow->inbox_dropped > 0)
        json_object_set_new(result, "dropped", json_integer((json_int_t)ow->inbox_dropped));
    if (at + n < ow->inbox_len) {
        json_object_set_new(result, "more", json_true());
        /* an answer the bound stopped short (one of a batch after it carries none) */
        if (n > 0)
            limits.answers_cut++;
    }
    /* the next call of the line starts after these */
    ow->answered += n;
    ow->answered_dropped += ow->inbox_dropped;
    ow->inbox_dropped = 0;
    return result;
}

/* The answer carrying what the line's receives answered was queued for p (1) or not (0, p let
 * go): those items leave the inbox, held by p until the answer is written to its socket, or
 * stay for the next receive (and the drops it told of are told again). */
static void receive_written(struct owner *ow, struct peer *p, int written)
{
    struct held_item *grown = written && ow->answered > 0
                                  ? realloc(p->held, (p->n_held + ow->answered) * sizeof(*p->held))
                                  : NULL;

    if (grown != NULL) {
        p->held = grown;
        inbox_take_into(ow, ow->answered, p->held + p->n_held, p->flushed + p->out_len);
        p->n_held += ow->answered;
    } else if (written && ow->answered > 0) {
        inbox_take(ow, ow->answered); /* no memory to hold them: taken as before */
    }
    if (!written)
        ow->inbox_dropped += ow->answered_dropped;
    ow->answered = ow->answered_dropped = 0;
}

/* 'receive': returns at once what waits, or waits until quiet for "wait" seconds (2). */
static json_t *start_receive(struct owner *ow, struct peer *p, json_t *id, json_t *params,
                             int in_batch)
{
    json_t *wait = json_object_get(params, "wait"), *output = json_object_get(params, "output");
    const char *key;
    json_t *v;
    double s = 2;

    json_object_foreach(params, key, v)
    {
        if (strcmp(key, "wait") != 0 && strcmp(key, "output") != 0 &&
            !(strcmp(key, "args") == 0 && json_is_array(v) && json_array_size(v) == 0))
            return rpc_error(id, -32602, "receive takes 'wait' and 'output' only", NULL);
    }
    if (wait != NULL &&
        (!json_is_number(wait) || json_number_value(wait) < 0 || json_number_value(wait) > 86400))
        return rpc_error(id, -32602, "'wait' is seconds from 0 to 86400", NULL);
    if (output != NULL && (!json_is_string(output) || (strcmp(json_string_value(output), "text") &&
                                                       strcmp(json_string_value(output), "json"))))
        return rpc_error(id, -32602, "'output' is \"json\" or \"text\"", NULL);
    if (p->wait_id != NULL)
        return rpc_error(id, -32600, "a receive is already waiting on this connection", NULL);
    if (wait != NULL)
        s = json_number_value(wait);
    p->wait_text = output != NULL && strcmp(json_string_value(output), "text") == 0;
    /* offline, waiting out the back-off of failed receives: one asked for is tried now (a
     * failure doubles the wait as any does) */
    if (ow->c->conn == NULL) {
        ow->retry_at = 0;
        keep_connected(ow);
    }
    pump(ow);
    if (s == 0 || in_batch) {
        json_t *r = receive_result(ow, p);
        json_t *response = rpc_result(id, r);

        json_decref(r);
        return response;
    }
    p->wait_id = json_incref(id);
    p->quiet_ms = (int64_t)(s * 1000);
    p->wait_until = msv_mono_ms() + p->quiet_ms;
    return NULL; /* answered by finish_receives() */
}

static void finish_receives(struct owner *ow)
{
    for (size_t i = 0; i < ow->n_peers; i++) {
        struct peer *p = ow->peers[i];
        json_t *r, *response;

        if (p->wait_id == NULL || msv_mono_ms() < p->wait_until)
            continue;
        r = receive_result(ow, p);
        response = rpc_result(p->wait_id, r);
        receive_written(ow, p, peer_write(p, response));
        json_decref(response);
        json_decref(r);
        json_decref(p->wait_id);
        p->wait_id = NULL;
    }
}

/* ---- requests ------------------------------------------------------------------------- */

/* [1, 2, ...]: the schema versions this daemon serves. */
static json_t *schemas_served(void)
{
    json_t *list = json_array();

    for (int v = DAEMON_SCHEMA_MIN; v <= DAEMON_SCHEMA; v++)
        json_array_append_new(list, json_integer(v));
    return list;
}

static json_t *status(struct owner *ow, const struct peer *p)
{
    char server[300];
    json_t *s;

    snprintf(server, sizeof(server), "%s:%u", ow->c->host, ow->c->port);
    s = json_pack("{s:i, s:s, s:s, s:I, s:s, s:b, s:s, s:I, s:I}", "schema", p->schema, "version",
                  MSV_VERSION_TEXT, "account", ow->c->handle, "device_id",
                  (json_int_t)ow->c->device_id, "server", server, "online", ow->online,
                  "last_error", ow->online ? "" : ow->last_error, "waiting",
                  (json_int_t)ow->inbox_len, "unsealed_sends",
                  (json_int_t)msv_client_unsealed_sends(ow->c));
    if (s != NULL && p->schema >= 2) {
        json_object_set_new(s, "schemas", schemas_served());
        cli_own_counts_json(ow->c, s);
        json_object_set_new(s, "daemon_limits",
                            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "connections_refused",
                                      (json_int_t)limits.peers_refused, "lines_refused",
                                      (json_int_t)limits.lines_refused, "batches_refused",
                                      (json_int_t)limits.batches_refused, "readers_let_go",
                                      (json_int_t)limits.readers_let_go, "inbox_dropped",
                                      (json_int_t)limits.inbox_dropped, "answers_cut",
                                      (json_int_t)limits.answers_cut));
        if (ow->status_fn != NULL)
            ow->status_fn(ow->status_ctx, s);
    }
    return s;
}

/* 'schema': the connection speaks version params.version from its next line on. */
static json_t *choose_schema(struct peer *p, json_t *id, json_t *params)
{
    json_t *version = json_object_get(params, "version"), *r, *response;
    const char *key;
    json_t *v;

    json_object_foreach(params, key, v)
    {
        if (strcmp(key, "version") != 0)
            return rpc_error(id, -32602, "schema takes 'version' only", NULL);
    }
    if (!json_is_integer(version) || json_integer_value(version) < DAEMON_SCHEMA_MIN ||
        json_integer_value(version) > DAEMON_SCHEMA)
        return rpc_error(id, -32602, "'version' is a schema version this daemon serves",
                         json_pack("{s:o}", "schemas", schemas_served()));
    p->schema = (int)json_integer_value(version);
    r = json_pack("{s:i, s:o}", "schema", p->schema, "schemas", schemas_served());
    response = rpc_result(id, r);
    json_decref(r);
    return response;
}

/* One request; the response, or NULL for a notification or a receive that waits. */
static json_t *handle_request(struct owner *ow, struct peer *p, json_t *req, int in_batch)
{
    json_t *id = json_object_get(req, "id"), *params = json_object_get(req, "params");
    const char *method = json_string_value(json_object_get(req, "method"));
    json_t *response = NULL, *owned = NULL;
    int notification = json_is_object(req) && id == NULL;

    const char *why = NULL;
    int code = rpc_check_request(req, &why);

    /* a notification is answered never, not even with its params refused (JSON-RPC 2.0, 4.1) */
    if (code == -32602 && notification)
        return NULL;
    if (code != 0)
        return rpc_error(code == -32600 && !json_is_string(id) && !json_is_integer(id) ? NULL : id,
                         code, why, NULL);
    /* the rest of a line after 'leave' (or an account deleted): the device is gone */
    if (ow->c->device_id == 0) {
        json_t *data = json_pack("{s:s, s:[], s:i}", "stderr",
                                 "missive: this device left its account: nothing more runs\n",
                                 "items", "exit_status", 1);

        return notification
                   ? (json_decref(data), NULL)
                   : rpc_error(id, -32001, "this device left its account: nothing more runs", data);
    }
    if (params == NULL)
        params = owned = json_object();
    if (strcmp(method, "status") == 0) {
        json_t *s = status(ow, p);

        response = rpc_result(id, s);
        json_decref(s);
    } else if (strcmp(method, "subscribe") == 0 || strcmp(method, "unsubscribe") == 0) {
        p->subscribed = strcmp(method, "subscribe") == 0;
        json_t *r = json_pack("{s:b}", "subscribed", p->subscribed);

        if (p->schema >= 2)
            json_object_set_new(r, "connection", json_integer((json_int_t)p->number));

        response = rpc_result(id, r);
        json_decref(r);
    } else if (strcmp(method, "schema") == 0) {
        response = choose_schema(p, id, params);
    } else if (ow->method_name != NULL && strcmp(method, ow->method_name) == 0) {
        char failed[200] = "";
        json_t *r = ow->method(ow->method_ctx, params, failed, sizeof(failed));

        response = r ? rpc_result(id, r) : rpc_error(id, -32000, failed, NULL);
        json_decref(r);
    } else if (strcmp(method, "receive") == 0 && notification) {
        response = NULL; /* no answer to carry what arrived: it stays for the next receive */
    } else if (strcmp(method, "receive") == 0) {
        response = start_receive(ow, p, id, params, in_batch);
    } else if (strcmp(method, "listen") != 0 && cli_account_command(method)) {
        response = run_command(ow, p, id, method, params);
    } else {
        response = rpc_error(id, -32601, "no such method", NULL);
    }
    json_decref(owned);
    if (notification) {
        json_decref(response);
        return NULL;
    }
    return response;
}

static void handle_line(struct owner *ow, struct peer *p, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr), *response = NULL;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0) {
        json_decref(req);
        return; /* an empty line: nothing asked */
    }
    ow->deferring = 1;
    ow->line_received = 0;
    if (req == NULL) {
        response = rpc_error(NULL, -32700, "not JSON", json_string(jerr.text));
    } else if (json_is_array(req)) {
        size_t i;
        json_t *one;

        if (json_array_size(req) == 0) {
            response = rpc_error(NULL, -32600, "an empty batch", NULL);
        } else if (json_array_size(req) > BATCH_MAX) {
            limits.batches_refused++;
            response = rpc_error(NULL, -32600, "a batch of more than 32 requests", NULL);
        } else {
            response = json_array();
            json_array_foreach(req, i, one)
            {
                json_t *r = handle_request(ow, p, one, 1);

                if (r != NULL)
                    json_array_append_new(response, r);
            }
            if (json_array_size(response) == 0) {
                json_decref(response);
                response = NULL; /* notifications only */
            }
        }
    } else {
        response = handle_request(ow, p, req, 0);
    }
    receive_written(ow, p, response != NULL && peer_write(p, response));
    json_decref(response);
    json_decref(req);
    ow->deferring = 0;
    ow->line_received = 0; /* a waiting receive answers in a line of its own */
    tell_deferred(ow);
    if (ow->pump_due) {
        ow->pump_due = 0;
        pump(ow);
    }
}

static void peer_read(struct owner *ow, struct peer *p)
{
    ssize_t n;

    if (p->in_cap - p->in_len < 4096) {
        size_t cap = p->in_cap ? p->in_cap * 2 : 8192;
        char *bigger = cap > 2 * LINE_MAX_BYTES ? NULL : realloc(p->in, cap);

        if (bigger == NULL) {
            p->eof = 1;
            return;
        }
        p->in = bigger;
        p->in_cap = cap;
    }
    n = read(p->in_fd, p->in + p->in_len, p->in_cap - p->in_len);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            p->eof = 1;
        return;
    }
    if (n == 0) {
        /* the end of its input: a last line without its newline runs, and what it asked for
         * is answered before it goes (owner_step) */
        p->read_done = 1;
        if (p->in_len > 0 && !p->skipping && p->in_len <= LINE_MAX_BYTES)
            handle_line(ow, p, p->in, p->in_len);
        p->in_len = 0;
        return;
    }
    p->in_len += (size_t)n;
    for (;;) {
        char *nl = memchr(p->in, '\n', p->in_len);
        size_t used;

        if (nl != NULL && !p->skipping && (size_t)(nl - p->in) > LINE_MAX_BYTES) {
            /* a line over the bound whose end came in the same read: refused as one whose end
             * had not come yet, and dropped below */
            json_t *e = rpc_error(NULL, -32600, "a request line over 1 MiB", NULL);

            peer_write(p, e);
            json_decref(e);
            p->skipping = 1;
            limits.lines_refused++;
        }
        if (nl == NULL) {
            if (p->in_len > LINE_MAX_BYTES) {
                json_t *e = rpc_error(NULL, -32600, "a request line over 1 MiB", NULL);

                if (!p->skipping) {
                    peer_write(p, e);
                    limits.lines_refused++;
                }
                json_decref(e);
                p->skipping = 1;
                p->in_len = 0;
            }
            return;
        }
        used = (size_t)(nl - p->in) + 1;
        if (p->skipping)
            p->skipping = 0; /* the end of the line that was too long */
        else
            handle_line(ow, p, p->in, used - 1);
        memmove(p->in, p->in + used, p->in_len - used);
        p->in_len -= used;
    }
}

static int add_peer(struct owner *ow, int in_fd, int out_fd)
{
    struct peer *p;

    if (ow->n_peers == PEERS_MAX) {
        limits.peers_refused++;
        return -1;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return -1;
    p->in_fd = in_fd;
    p->out_fd = out_fd;
    p->schema = DAEMON_SCHEMA_MIN; /* what programs written before 'schema' existed expect */
    p->number = ++ow->peers_made;
    ow->peers[ow->n_peers++] = p;
    return 0;
}

static void drop_peer(struct owner *ow, size_t i)
{
    struct peer *p = ow->peers[i];

    peer_flush(p);
    held_return(ow, p); /* what its answers carried and did not reach it */
    free(p->held);
    if (p->in_fd > STDERR_FILENO)
        close(p->in_fd);
    json_decref(p->wait_id);
    free(p->in);
    free(p->out);
    free(p);
    ow->peers[i] = ow->peers[--ow->n_peers];
}

/* ---- the owner ------------------------------------------------------------------------ */

/* The owner's pid from the lock file fd ("" if it wrote none). */
static void lock_holder(int fd, char *pid, size_t len)
{
    ssize_t n = pread(fd, pid, len - 1, 0);

    pid[n > 0 ? strcspn(pid, "\n") : 0] = '\0';
}

int owner_running(const char *dir, char *pid, size_t pid_len)
{
    char path[1200];
    int fd, held;

    pid[0] = '\0';
    snprintf(path, sizeof(path), "%s/%s", dir, CLI_LOCK_FILE);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    held = flock(fd, LOCK_SH | LOCK_NB) != 0;
    if (held)
        lock_holder(fd, pid, pid_len);
    close(fd);
    return held;
}

static int take_lock(struct owner *ow)
{
    char path[1200], pid[32] = "";
    ssize_t n;

    snprintf(path, sizeof(path), "%s/%s", ow->c->dir, CLI_LOCK_FILE);
    ow->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (ow->lock_fd < 0) {
        fprintf(cli_err, "missive: %s: %s\n", path, strerror(errno));
        return EXIT_ERR;
    }
    if (flock(ow->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        lock_holder(ow->lock_fd, pid, sizeof(pid));
        fprintf(cli_err,
                "missive: %s is already owned by a missive daemon or chat%s%s%s; stop it first "
                "(other commands run through it)\n",
                ow->c->handle, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        return EXIT_ERR;
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(ow->lock_fd, 0) != 0 || pwrite(ow->lock_fd, pid, (size_t)n, 0) != n) {
        fprintf(cli_err, "missive: %s: %s\n", path, strerror(errno));
        return EXIT_ERR;
    }
    return 0;
}

static char *absolute(const char *path);

/* The socket's absolute path: --socket, or daemon.sock in the account's directory. */
static int socket_path(const struct cli *o, const char *dir, char *out, size_t len)
{
    char *where = absolute(o->socket != NULL ? o->socket : dir);
    int n = where == NULL       ? -1
            : o->socket != NULL ? snprintf(out, len, "%s", where)
                                : snprintf(out, len, "%s/%s", where, CLI_SOCKET_FILE);

    free(where);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static int bind_socket(struct owner *ow)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    mode_t old;

    if (socket_path(ow->o, ow->c->dir, ow->socket_path, sizeof(ow->socket_path)) != 0) {
        fprintf(cli_err,
                "missive: the socket's path would be longer than %zu bytes; give a shorter "
                "one with --socket\n",
                sizeof(ow->socket_path) - 1);
        return EXIT_USAGE;
    }
    memcpy(a.sun_path, ow->socket_path, strlen(ow->socket_path) + 1);
    ow->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ow->listen_fd < 0)
        goto fail;
    /* the lock is ours: a socket left there is a dead owner's */
    unlink(ow->socket_path);
    old = umask(0077);
    if (bind(ow->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        umask(old);
        goto fail;
    }
    umask(old);
    if (listen(ow->listen_fd, 16) != 0)
        goto fail;
    return 0;
fail:
    fprintf(cli_err, "missive: %s: %s\n", ow->socket_path, strerror(errno));
    ow->socket_path[0] = '\0';
    return EXIT_ERR;
}

int owner_start(const struct cli *o, struct msv_client *c, int with_stdio, struct owner **out)
{
    struct owner *ow = calloc(1, sizeof(*ow));
    int rc;

    if (ow == NULL || (ow->inbox = calloc(INBOX_MAX, sizeof(*ow->inbox))) == NULL ||
        (ow->deferred = json_array()) == NULL) {
        if (ow != NULL)
            free(ow->inbox);
        free(ow);
        return EXIT_ERR;
    }
    ow->o = o;
    ow->c = c;
    ow->lock_fd = ow->listen_fd = -1;
    ow->monitor_every = MONITOR_INTERVAL_MS;
    if (getenv("MISSIVE_TEST_MONITOR_MS") != NULL) {
        char *end = NULL;
        long long every = strtoll(getenv("MISSIVE_TEST_MONITOR_MS"), &end, 10);

        /* tests only: the log read more often (anything but a whole number of milliseconds
         * from a second up: the interval as it is) */
        if (end != NULL && *end == '\0' && every >= 1000 && every < MONITOR_INTERVAL_MS)
            ow->monitor_every = every;
    }
    c->takes_deliveries = 1; /* it waits on the connection's socket for them */
    /* it takes what comes for as long as it runs: a receive that ran before it started is
     * told its connection was closed (the commands run through the owner from now on) */
    c->deliveries_take_over = 1;
    c->ctx = ow;
    c->on_key_change = on_key_change;
    c->on_account_new = on_account_new;
    c->on_kt_history = on_kt_history;
    c->on_handle_taken = on_handle_taken;
    c->on_unreachable = on_unreachable;
    c->on_pq_refused = on_pq_refused;
    c->on_devlist = on_devlist;
    c->on_not_sent = on_not_sent;
    c->on_unopened = on_unopened;
    c->on_keys_unpublished = on_keys_unpublished;
    c->on_classical = on_classical;
    c->on_outbox_held = on_outbox_held;
    c->on_incoming = on_incoming; /* what a send within a command reads on its way */
    c->incoming_ctx = ow;
    rc = take_lock(ow);
    if (rc == 0)
        rc = bind_socket(ow);
    if (rc == 0 && with_stdio) {
        /* a reader that stops reading must not stop the daemon */
        fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
        fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
        rc = add_peer(ow, STDIN_FILENO, STDOUT_FILENO) == 0 ? 0 : EXIT_ERR;
    }
    if (rc != 0) {
        owner_stop(ow);
        return rc;
    }
    catch_stop_signals(ow);
    ow->signals_caught = 1;
    *out = ow;
    return 0;
}

void owner_set_status(struct owner *ow, owner_status_fn fn, void *ctx)
{
    ow->status_fn = fn;
    ow->status_ctx = ctx;
}

void owner_set_method(struct owner *ow, const char *name, owner_method method, void *ctx)
{
    ow->method_name = name;
    ow->method = method;
    ow->method_ctx = ctx;
}

int owner_add_peer(struct owner *ow, int fd)
{
    return add_peer(ow, fd, fd);
}

void owner_set_hook(struct owner *ow, owner_hook hook, void *ctx)
{
    ow->hook = hook;
    ow->hook_ctx = ctx;
}

int owner_online(const struct owner *ow)
{
    return ow->online;
}

const char *owner_socket(const struct owner *ow)
{
    return ow->socket_path;
}

void owner_pump(struct owner *ow)
{
    pump(ow);
}

/* Answers the receives whose wait is over, writes what waits, and lets go of the peers done. */
static void answer_and_drop(struct owner *ow)
{
    finish_receives(ow);
    for (size_t i = 0; i < ow->n_peers; i++)
        peer_flush(ow->peers[i]);
    for (size_t i = ow->n_peers; i-- > 0;) {
        struct peer *p = ow->peers[i];

        /* one whose input ended goes once it is answered, a waiting receive included */
        if (p->eof || (p->read_done && p->out_len == 0 && p->wait_id == NULL))
            drop_peer(ow, i);
    }
}

/*
 * When to receive for the commits owed to groups on MLS (keying a path, renewing a leaf): a
 * receive makes them at its end, and a quiet group has nothing pushed to it. made: a receive
 * made for them made one. One that stays due (more than a receive makes, or one no receive can
 * make) is looked at again after keys_idle_ms, which doubles while none is made.
 */
static void keys_plan(struct owner *ow, int flushed, int made)
{
    int64_t due = msv_client_mls_keys_next(ow->c), wall = msv_wall_ms(), now = msv_mono_ms();
    int64_t wait;

    ow->keys_seen = ow->c->mls_keys_changed;
    if (due > wall) {
        ow->keys_idle_ms = KEYS_FLOOR_MS;
        wait = due - wall < KEYS_MOST_MS ? due - wall : KEYS_MOST_MS;
    } else {
        if (ow->keys_idle_ms == 0 || made)
            ow->keys_idle_ms = KEYS_FLOOR_MS;
        wait = ow->keys_idle_ms;
        if (flushed && !made)
            ow->keys_idle_ms =
                ow->keys_idle_ms < KEYS_MOST_MS / 2 ? ow->keys_idle_ms * 2 : KEYS_MOST_MS;
        /* a change read meanwhile (a commit taken) does not put off a look already planned */
        if (!flushed && ow->keys_at < now + wait)
            wait = ow->keys_at > now ? ow->keys_at - now : 0;
    }
    ow->keys_at = now + wait;
}

int owner_step(struct owner *ow, int extra_fd, int max_wait_ms)
{
    struct pollfd fds[PEERS_MAX + 3];
    size_t n = 0, first_peer, server = SIZE_MAX, listener = SIZE_MAX, extra = SIZE_MAX;
    int64_t now, wake;
    struct timespec ts;
    int ready = 0;

    keep_connected(ow);
    answer_and_drop(ow);
    now = msv_mono_ms();
    if (now >= ow->expire_at) {
        size_t expired = 0;

        /* a message is gone on time while the owner runs; a failure is tried again */
        if (msv_client_expire(ow->c, on_incoming, ow, &expired) != MSV_OK)
            fprintf(stderr, "missive: deleting disappearing messages failed; trying again\n");
        ow->expire_at = msv_mono_ms() + EXPIRE_INTERVAL_MS; /* from its end: never back to back */
    }
    /* the transparency log's read, and the commits owed to groups on MLS, fall due while
     * nothing is pushed: a receive is made then (pump reads the log; the receive's end makes
     * the commits) */
    if (ow->c->conn != NULL && (now >= ow->keys_at || now >= ow->monitor_at)) {
        unsigned made = ow->c->mls_keyings_taken;
        int keys = now >= ow->keys_at;

        pump(ow);
        /* a receive that failed made none, and says nothing of them */
        if (keys)
            keys_plan(ow, ow->c->conn != NULL, ow->c->mls_keyings_taken != made);
    } else if (ow->c->mls_keys_changed != ow->keys_seen)
        keys_plan(ow, 0, 0);
    now = msv_mono_ms(); /* the expiry and the receive above took time */
    wake = now + max_wait_ms;
    if (ow->expire_at < wake)
        wake = ow->expire_at;
    if (ow->c->conn != NULL && ow->keys_at < wake)
        wake = ow->keys_at;
    if (ow->c->conn == NULL && ow->retry_at < wake)
        wake = ow->retry_at;
    if (ow->c->conn != NULL && ow->monitor_at < wake)
        wake = ow->monitor_at;
    if (extra_fd >= 0) {
        extra = n;
        fds[n++] = (struct pollfd){.fd = extra_fd, .events = POLLIN};
    }
    if (ow->listen_fd >= 0) {
        listener = n;
        fds[n++] = (struct pollfd){.fd = ow->listen_fd, .events = POLLIN};
    }
    if (ow->c->conn != NULL) {
        server = n;
        fds[n++] = (struct pollfd){.fd = msv_conn_fd(ow->c->conn), .events = POLLIN};
    }
    first_peer = n;
    for (size_t i = 0; i < ow->n_peers; i++) {
        struct peer *p = ow->peers[i];

        if (p->wait_id != NULL && p->wait_until < wake)
            wake = p->wait_until;
        /* answers waiting: writable is worth waking for, on the socket or on stdout; an input
         * that ended has nothing more to read (a standard input at its end is not watched: it
         * would wake the loop at once, every time) */
        if (!p->read_done || p->out_fd == p->in_fd)
            fds[n++] = (struct pollfd){
                .fd = p->in_fd,
                .events = (short)((p->read_done ? 0 : POLLIN) |
                                  (p->out_len > 0 && p->out_fd == p->in_fd ? POLLOUT : 0))};
        if (p->out_len > 0 && p->out_fd != p->in_fd)
            fds[n++] = (struct pollfd){.fd = p->out_fd, .events = POLLOUT};
    }
    wake -= now;
    if (wake < 0)
        wake = 0;
    ts.tv_sec = (time_t)(wake / 1000);
    ts.tv_nsec = (long)(wake % 1000) * 1000000;
    if (ppoll(fds, n, &ts, &ow->during) <= 0)
        return 0;
    if (server != SIZE_MAX && fds[server].revents)
        pump(ow);
    if (listener != SIZE_MAX && (fds[listener].revents & POLLIN)) {
        int fd = accept4(ow->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd >= 0 && add_peer(ow, fd, fd) != 0)
            close(fd); /* PEERS_MAX connections: this one waits for none */
    }
    /* peers in poll order: the set may change while requests run, so by descriptor */
    for (size_t k = first_peer; k < n; k++) {
        if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        for (size_t i = 0; i < ow->n_peers; i++) {
            if (ow->peers[i]->in_fd == fds[k].fd && !ow->peers[i]->eof) {
                /* a socket whose input ended and that hangs up has nobody left to answer */
                if (ow->peers[i]->read_done)
                    ow->peers[i]->eof = (fds[k].revents & (POLLHUP | POLLERR)) != 0;
                else
                    peer_read(ow, ow->peers[i]);
                break;
            }
        }
    }
    if (extra != SIZE_MAX && (fds[extra].revents & (POLLHUP | POLLERR | POLLNVAL)))
        ready = -1;
    else if (extra != SIZE_MAX && fds[extra].revents)
        ready = 1;
    /* a --stdio daemon whose input ended and is answered stops now, not a turn later */
    answer_and_drop(ow);
    return ready;
}

int owner_stdio_open(const struct owner *ow)
{
    for (size_t i = 0; i < ow->n_peers; i++)
        if (ow->peers[i]->in_fd == STDIN_FILENO)
            return !ow->peers[i]->eof;
    return 0;
}

void owner_stop(struct owner *ow)
{
    if (ow == NULL)
        return;
    while (ow->n_peers > 0)
        drop_peer(ow, ow->n_peers - 1);
    if (ow->listen_fd >= 0)
        close(ow->listen_fd);
    if (ow->socket_path[0] != '\0')
        unlink(ow->socket_path);
    if (ow->lock_fd >= 0)
        close(ow->lock_fd); /* the lock goes with it */
    for (size_t i = 0; i < ow->inbox_len; i++) {
        json_decref(ow->inbox[i].json);
        free(ow->inbox[i].text);
    }
    free(ow->inbox);
    json_decref(ow->deferred);
    ow->c->ctx = NULL;
    ow->c->on_incoming = NULL;
    ow->c->incoming_ctx = NULL;
    if (ow->signals_caught)
        sigprocmask(SIG_SETMASK, &ow->before, NULL);
    free(ow);
}

/* ---- the plain commands, through a running owner --------------------------------------- */

/* An absolute path for one the daemon, in another directory, should find. */
static char *absolute(const char *path)
{
    char cwd[PATH_MAX], *out = NULL;

    if (path[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
        return strdup(path);
    if (asprintf(&out, "%s/%s", cwd, path) < 0)
        return NULL;
    return out;
}

/* The request for o's command: its operands and options, by name. */
static json_t *forward_params(const struct cli *o, const char *command)
{
    json_t *params = json_object(), *args = json_array();

    for (int i = 0; i < o->argc; i++) {
        /* backup writes FILE where the daemon runs: the path is made absolute here */
        char *a = strcmp(command, "backup") == 0 ? absolute(o->argv[i]) : strdup(o->argv[i]);

        json_array_append_new(args, json_string(a ? a : o->argv[i]));
        free(a);
    }
    json_object_set_new(params, "args", args);
    json_object_set_new(params, "output", json_string(o->json ? "json" : "text"));
    if (o->text != NULL)
        json_object_set_new(params, "text", json_string(o->text));
    if (o->group != NULL)
        json_object_set_new(params, "group", json_string(o->group));
    if (o->search != NULL)
        json_object_set_new(params, "search", json_string(o->search));
    if (o->limit > 0)
        json_object_set_new(params, "limit", json_integer(o->limit));
    if (o->before != NULL)
        json_object_set_new(params, "before", json_string(o->before));
    if (strcmp(command, "receive") == 0 || o->wait_s != 2)
        json_object_set_new(params, "wait", json_real(o->wait_s));
    if (o->qr)
        json_object_set_new(params, "qr", json_true());
    if (o->accept)
        json_object_set_new(params, "accept", json_true());
    if (o->include_text)
        json_object_set_new(params, "include-text", json_true());
    if (o->reason != NULL)
        json_object_set_new(params, "reason", json_string(o->reason));
    if (o->code != NULL)
        json_object_set_new(params, "code", json_string(o->code));
    if (o->has_approval)
        json_object_set_new(params, "approval", json_string(o->approval ? "on" : "off"));
    if (o->reset)
        json_object_set_new(params, "reset", json_true());
    if (o->yes)
        json_object_set_new(params, "yes", json_true());
    if (o->resume_history)
        json_object_set_new(params, "resume-history", json_true());
    if (o->no_history)
        json_object_set_new(params, "no-history", json_true());
    if (o->off)
        json_object_set_new(params, "off", json_true());
    if (o->name != NULL)
        json_object_set_new(params, "name", json_string(o->name));
    if (o->avatar != NULL) {
        char *a = absolute(o->avatar);

        json_object_set_new(params, "avatar", json_string(a ? a : o->avatar));
        free(a);
    }
    if (o->kdf_memory_mib > 0)
        json_object_set_new(params, "kdf-memory", json_integer((json_int_t)o->kdf_memory_mib));
    if (o->kdf_passes > 0)
        json_object_set_new(params, "kdf-passes", json_integer((json_int_t)o->kdf_passes));
    if (o->file_count > 0) {
        json_t *files = json_array();

        for (size_t i = 0; i < o->file_count; i++) {
            char *a = absolute(o->files[i]);

            json_array_append_new(files, json_string(a ? a : o->files[i]));
            free(a);
        }
        json_object_set_new(params, "file", files);
    }
    return params;
}

/* Sends one request and waits for its response (notifications are skipped). */
static json_t *call(int fd, json_t *request, int timeout_ms)
{
    char *line = json_dumps(request, JSON_COMPACT), *buf = NULL;
    size_t len = 0, cap = 0, sent = 0, total = line ? strlen(line) : 0;
    int64_t deadline = msv_mono_ms() + timeout_ms;
    json_t *response = NULL;

    while (line != NULL && sent <= total) {
        ssize_t n = sent < total ? write(fd, line + sent, total - sent) : write(fd, "\n", 1);

        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    free(line);
    while (response == NULL && sent == total + 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - msv_mono_ms();
        char *nl;
        ssize_t n;

        if (left <= 0 || poll(&p, 1, (int)left) != 1)
            break;
        if (cap - len < 65536) {
            char *bigger = realloc(buf, cap + 65536 * 4);

            if (bigger == NULL)
                break;
            buf = bigger;
            cap += 65536 * 4;
        }
        n = read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        while (response == NULL && (nl = memchr(buf, '\n', len)) != NULL) {
            json_t *j = json_loadb(buf, (size_t)(nl - buf), 0, NULL);

            if (j != NULL && json_object_get(j, "id") != NULL)
                response = j;
            else
                json_decref(j);
            len -= (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, len);
        }
    }
    free(buf);
    return response;
}

static int utf8(const char *s)
{
    return s == NULL || msv_utf8_is_valid((const uint8_t *)s, strlen(s));
}

/* Whether every argument can travel in JSON as it is. */
static int forwardable(const struct cli *o)
{
    int ok = utf8(o->text) && utf8(o->group) && utf8(o->search) && utf8(o->backup_passphrase_file);

    for (int k = 0; k < o->argc; k++)
        ok &= utf8(o->argv[k]);
    for (size_t k = 0; k < o->file_count; k++)
        ok &= utf8(o->files[k]);
    return ok;
}

/* The passwords of a password change or an account deletion, read (or asked) here, go with
 * the request: -1 without them. */
static int forward_passwords(const struct cli *o, json_t *params)
{
    char *pw = NULL, *new_pw = NULL;
    int rc = -1;

    int change = o->argc == 1 && strcmp(o->argv[0], "change") == 0;
    int deletion = o->argc == 1 && strcmp(o->argv[0], "delete") == 0 && o->yes;

    if ((change || deletion) && (pw = cli_password(o)) != NULL &&
        (deletion || (new_pw = cli_new_password(o)) != NULL) && utf8(pw) && utf8(new_pw)) {
        json_object_set_new(params, "password", json_string(pw));
        if (change)
            json_object_set_new(params, "new-password", json_string(new_pw));
        rc = 0;
    }
    if (pw != NULL)
        msv_secret_free(pw, strlen(pw));
    if (new_pw != NULL)
        msv_secret_free(new_pw, strlen(new_pw));
    return change || deletion ? rc : 0;
}

int daemon_forward(const struct cli *o, const char *dir, const char *command, int *rc)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    json_t *params, *request, *response, *body, *items, *item;
    char path[sizeof(a.sun_path)];
    const char *text, *err;
    int fd, timeout_ms;
    size_t i;

    if (strcmp(command, "listen") == 0 || socket_path(o, dir, path, sizeof(path)) != 0)
        return 0;
    if (!forwardable(o)) {
        fprintf(stderr, "missive: an argument is not UTF-8, and the account's owner (a daemon or "
                        "chat) takes UTF-8 only\n");
        *rc = EXIT_USAGE;
        return 1;
    }
    memcpy(a.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return 0; /* nobody owns it: the command runs here */
    }
    params = forward_params(o, command);
    if (strcmp(command, "send") == 0 && o->text == NULL && o->file_count == 0) {
        char *t = cli_message_text(o);

        if (!utf8(t)) {
            fprintf(stderr, "missive: the message is not UTF-8\n");
            msv_secret_free(t, strlen(t));
            json_decref(params);
            close(fd);
            *rc = EXIT_USAGE;
            return 1;
        }
        json_object_set_new(params, "text", json_string(t ? t : ""));
        msv_secret_free(t, t ? strlen(t) : 0);
    }
    if (strcmp(command, "backup") == 0) {
        const char *env = getenv("MISSIVE_BACKUP_PASSPHRASE");

        if (o->backup_passphrase_file != NULL) {
            char *abs = absolute(o->backup_passphrase_file);

            json_object_set_new(params, "backup-passphrase-file", json_string(abs ? abs : ""));
            free(abs);
        } else if (env != NULL) {
            json_object_set_new(params, "backup-passphrase", json_string(env));
        }
    }
    if ((strcmp(command, "password") == 0 || strcmp(command, "account") == 0) &&
        forward_passwords(o, params) != 0) {
        json_decref(params);
        close(fd);
        *rc = EXIT_USAGE;
        return 1;
    }
    request = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 1, "method", command,
                        "params", params);
    /* receive waits as long as asked; a backup's key derivation can take a while */
    timeout_ms = strcmp(command, "receive") == 0 ? (int)(o->wait_s * 1000) + 600000 : 3600000;
    response = call(fd, request, timeout_ms);
    json_decref(request);
more:
    if (response == NULL) {
        fprintf(stderr, "missive: the daemon that owns this account did not answer\n");
        close(fd);
        *rc = EXIT_ERR;
        return 1;
    }
    body = json_object_get(response, "result");
    *rc = 0;
    if (body == NULL) {
        json_t *e = json_object_get(response, "error");

        body = json_object_get(e, "data");
        *rc = (int)json_integer_value(json_object_get(body, "exit_status"));
        if (*rc == 0) {
            /* refused by the daemon itself, not by the command */
            fprintf(stderr, "missive: %s\n", json_string_value(json_object_get(e, "message")));
            *rc = EXIT_USAGE;
        }
    }
    text = json_string_value(json_object_get(body, "text"));
    if (text != NULL)
        fputs(text, stdout);
    items = json_object_get(body, "items");
    json_array_foreach(items, i, item)
    {
        if (json_is_string(item)) {
            puts(json_string_value(item));
        } else {
            json_dumpf(item, stdout, JSON_COMPACT | JSON_ENSURE_ASCII); /* as emit_json */
            putchar('\n');
        }
    }
    err = json_string_value(json_object_get(body, "stderr"));
    if (err != NULL)
        fputs(err, stderr);
    /* an answer holds at most 8 MiB of what arrived: the rest is asked for at once */
    if (json_is_true(json_object_get(body, "more"))) {
        json_decref(response);
        request = json_pack("{s:s, s:i, s:s, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", 1, "method",
                            "receive", "params", "wait", 0, "output", o->json ? "json" : "text");
        response = request != NULL ? call(fd, request, 600000) : NULL;
        json_decref(request);
        goto more;
    }
    json_decref(response);
    close(fd);
    return 1;
}
