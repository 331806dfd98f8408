/*
 * missive web (docs/web.md): the account's owner (owner.c, as the daemon
 * runs it) that also serves the web client. libwebsockets runs on a libuv
 * loop that is never run on its own: the loop's one descriptor is the
 * owner's extra_fd, so owner_step() wakes for the browser's connections as
 * for the socket's, and uv_run(UV_RUN_NOWAIT) then handles what is ready, in
 * the same thread, between two turns of the owner.
 *
 * Each WebSocket is bridged to one end of a socket pair whose other end the
 * owner takes as a connection like one to daemon.sock: a message from the
 * page is one request line, a line from the owner one message to the page.
 * A login token (one use, ten minutes) buys a session cookie; every other
 * path wants the cookie, the listening Host and, for the WebSocket and
 * uploads, the page's own Origin.
 */
#define _GNU_SOURCE /* asprintf */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libwebsockets.h>
#include <qrencode.h>
#include <sodium.h>
#include <uv.h>

#include "client/files.h"
#include "commands.h"
#include "missive/util.h"
#include "owner.h"
#include "qrimage.h"
#include "rpc.h"
#include "web.h"

extern char **environ;

#define SESSIONS_MAX 8
#define TOKENS_MAX 8
#define TOKEN_MINUTES 10          /* --token-minutes: a login URL is good this long */
#define SESSION_HOURS 12          /* --session-hours: a session ends this long after its login */
#define IDLE_MINUTES 60           /* --idle-minutes: or when unused this long */
#define CONNS_MAX 64              /* HTTP and WebSocket connections at once */
#define UNAUTH_MAX 16             /* of them, connections no request of which had a session yet */
#define UNAUTH_MS 10000           /* how long such a connection may stay */
#define OPEN_FILE_MS 60000        /* --open's forwarding page is deleted after this (or a login) */
#define CONN_LOG_MS 10000         /* refusals are logged at most this often */
#define WS_IN_MAX (1u << 20)      /* a message from the page: a request line's bound */
#define WS_OUT_MAX (16u << 20)    /* what waits for a page that does not read */
#define PAGE_BATCH_MAX 32         /* requests in a batch from the page, as the owner's bound */
#define FULL_WAIT_S 60            /* a page with WS_OUT_MAX waiting is let go unless it reads */
#define ENDED_WAIT_S 5            /* a WebSocket whose session ended is closed at the latest */
#define REQUEST_HEADERS_MAX 16384 /* a request's headers, all together */
#define TO_OWNER_MAX (4u << 20)   /* requests not yet taken by the owner */
#define UPLOAD_MAX (256ull << 20) /* one uploaded file */
#define UPLOAD_TTL_S 3600         /* an upload not sent is deleted after this */
#define SWEEP_INTERVAL_MS 60000   /* uploads are looked at this often */
#define QR_DATA_MAX 1024          /* the text of a QR code */
#define CHUNK 65536               /* a body is written this much at a time */
#define HEADERS_MAX 4096

#define CSP                                                                                      \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "      \
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action " \
    "'none'; frame-ancestors 'none'"
static const char csp[] = CSP;

struct secret {
    uint8_t v[WEB_SECRET_LEN];
    /*
     * A session's page key: the page holds it (sessionStorage, per origin, so
     * per port) and sends it with every request that reaches the account, as
     * the cookie alone does not prove the page: browsers send cookies to every
     * port of a host, where another local user may listen (docs/web.md).
     */
    uint8_t key[WEB_SECRET_LEN];
    /*
     * A session's proof key: the page holds it beside the page key but never sends it; each
     * WebSocket's first message proves with it that this server is the one the page came from
     * (what listens on the port once this one stopped knows the page key, which every request
     * carries, but not this).
     */
    uint8_t proof[WEB_SECRET_LEN];
    int64_t at_ms;   /* when it was made */
    int64_t used_ms; /* when a request last carried it */
    uint64_t serial; /* tells a slot's sessions apart */
    int live;
};

/* An HTTP or WebSocket connection, counted (docs/web.md, "Bounds"). */
struct conn {
    struct lws *wsi;
    int64_t at_ms;
    int authed;             /* a request on it had a session and its page key */
    int closing;            /* asked to close */
    struct secret *session; /* a WebSocket's, from its upgrade */
    uint64_t serial;
    uint8_t nonce[WEB_SECRET_LEN]; /* a WebSocket's n=, which its first message proves */
    int has_nonce;
};

/* A message for the page, with the room libwebsockets wants before it. */
struct ws_msg {
    struct ws_msg *next;
    size_t len;
    unsigned char data[];
};

/*
 * What the web client's bounds turned away since it started, beside the connections (struct
 * web's refused and dropped_unauth), for 'status' in schema 2 (web_status): messages from a
 * page over WS_IN_MAX or binary, pages that let WS_OUT_MAX wait (each let go after FULL_WAIT_S
 * unless it reads), a page's messages refused here (not JSON, a batch over PAGE_BATCH_MAX, a
 * method or parameter the page may not use, a request over 1 MiB as written for the owner),
 * pages closed with TO_OWNER_MAX of requests the owner did not take yet, and uploads and images
 * over their size (413). One web client a process: kept here.
 */
static struct {
    uint64_t messages_refused, pages_at_bound, requests_refused, bodies_too_big, backlogs_closed;
} web_limits;

/* A WebSocket and its end of the socket pair to the owner. */
struct bridge {
    struct bridge *next;
    struct lws *wsi;
    int fd;
    char *line; /* a line from the owner not yet whole */
    size_t line_len, line_cap;
    struct ws_msg *head, *tail;
    size_t queued;
    char *to_owner; /* request lines the socket pair did not take yet */
    size_t to_len, to_cap;
    char *rx; /* a message from the page arriving in fragments */
    size_t rx_len, rx_cap;
    int owner_gone;
    int session_ended; /* logged out or out of time: closed when next writable */
    int full;          /* WS_OUT_MAX waits for the page: it is let go unless it reads in time */
    int was_full;      /* it was, once: counted (web_limits.pages_at_bound) */
    struct secret *session;
    uint64_t serial; /* the session's, while its slot holds it */
    json_t *uploads; /* [[request id, [upload dirs]]...]: deleted once answered */
};

/* What one HTTP connection is answering. */
struct pss {
    int http; /* set up for an HTTP answer (its descriptors below are meaningful) */
    struct bridge *bridge;
    const unsigned char *mem; /* a body in memory (an asset, or owned) */
    char *owned;
    size_t len, off;
    int fd; /* or a file, streamed */
    int close_after;
    int up_fd; /* an upload arriving */
    uint64_t up_len, up_expected;
    char *up_path;
    int uploading, up_failed;
    int up_qr; /* a camera frame or picture to read a QR code from, not a file to keep */
};

struct web {
    const struct cli *o;
    struct msv_client *c;
    struct owner *ow;
    uv_loop_t loop;
    struct lws_context *ctx;
    char host[256];
    unsigned port;
    int tls, any_host;
    int loop_abandoned;  /* the loop is not to be run (libwebsockets failed half way) */
    char host_name[300]; /* the one Host value this server answers to: the URL's */
    char cookie_name[WEB_COOKIE_NAME_MAX]; /* WEB_COOKIE_PREFIX and the port (set_names) */
    int named_localhost;                   /* --listen localhost with TLS: the URL says localhost */
    char base[320];                        /* http(s)://HOST:PORT */
    struct secret tokens[TOKENS_MAX], sessions[SESSIONS_MAX];
    uint64_t serial;
    int64_t token_ms, session_ms, idle_ms;
    struct conn conns[CONNS_MAX];
    size_t n_conns;
    uint64_t refused, dropped_unauth; /* connections refused (all in use), closed before a login */
    int64_t conn_log_at;
    char open_file[1200]; /* --open's forwarding page, until deleted */
    int64_t open_file_until;
    pid_t open_pid; /* xdg-open while it runs: reaped in web_turn and at the end */
    struct bridge *bridges;
    char dir[1024];     /* the account's directory */
    char uploads[1100]; /* the account's uploads/ directory */
    int64_t sweep_at;
    /* QR codes read (POST /qr): a bucket of QR_RATE tokens, one taken per image */
    double qr_tokens;
    int64_t qr_at;
    uint64_t qr_refused; /* images refused for the rate */
};

/* ---- secrets --------------------------------------------------------------------------- */

/* Keeps a new secret in list (the oldest goes when it is full); its hex in hex. */
static struct secret *secret_new(struct web *w, struct secret *list, size_t n,
                                 char hex[WEB_SECRET_HEX + 1])
{
    size_t slot = 0;

    for (size_t i = 0; i < n; i++) {
        if (!list[i].live) {
            slot = i;
            break;
        }
        if (list[i].at_ms < list[slot].at_ms)
            slot = i;
    }
    msv_random_bytes(list[slot].v, WEB_SECRET_LEN);
    msv_random_bytes(list[slot].key, WEB_SECRET_LEN);
    msv_random_bytes(list[slot].proof, WEB_SECRET_LEN);
    list[slot].at_ms = list[slot].used_ms = msv_mono_ms();
    list[slot].serial = ++w->serial;
    list[slot].live = 1;
    if (msv_hex_encode(list[slot].v, WEB_SECRET_LEN, hex, WEB_SECRET_HEX + 1) != MSV_OK)
        hex[0] = '\0';
    return &list[slot];
}

/* Whether a secret is still good: within ttl_ms of its making and idle_ms of its last use. */
static int secret_live(const struct secret *s, int64_t ttl_ms, int64_t idle_ms)
{
    int64_t now = msv_mono_ms();

    return s->live && now - s->at_ms < ttl_ms && (idle_ms == 0 || now - s->used_ms < idle_ms);
}

/* The live secret equal to v (every one compared, each in constant time); NULL if none. */
static struct secret *secret_find(struct secret *list, size_t n, const uint8_t *v, int64_t ttl_ms,
                                  int64_t idle_ms)
{
    struct secret *found = NULL;

    for (size_t i = 0; i < n; i++)
        if (msv_equal_ct(list[i].v, v, WEB_SECRET_LEN) && secret_live(&list[i], ttl_ms, idle_ms))
            found = &list[i];
    return found;
}

/* Ends a session (logout, or its time is up): its id and key are forgotten at once. */
static void secret_end(struct secret *s)
{
    msv_wipe(s, sizeof(*s));
}

/* A fresh login URL (caller frees); NULL if out of memory. */
static char *login_url(struct web *w)
{
    char hex[WEB_SECRET_HEX + 1], *url = NULL;

    secret_new(w, w->tokens, TOKENS_MAX, hex);
    if (asprintf(&url, "%s/login?token=%s", w->base, hex) < 0)
        url = NULL;
    msv_wipe(hex, sizeof(hex));
    return url;
}

/* Deletes --open's forwarding page, if it is still there. */
static void open_file_remove(struct web *w)
{
    if (w->open_file[0] == '\0')
        return;
    unlink(w->open_file);
    w->open_file[0] = '\0';
}

/* ---- connections ----------------------------------------------------------------------- */

static struct conn *conn_of(struct web *w, struct lws *wsi)
{
    for (size_t i = 0; i < w->n_conns; i++)
        if (w->conns[i].wsi == wsi)
            return &w->conns[i];
    return NULL;
}

static void conn_close(struct conn *c)
{
    c->closing = 1;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* The web client's counts in 'status' (schema 2): web_limits and the connections'. */
static void web_status(void *ctx, json_t *status)
{
    const struct web *w = ctx;

    json_object_set_new(status, "web_limits",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "connections_refused",
                                  (json_int_t)w->refused, "closed_before_login",
                                  (json_int_t)w->dropped_unauth, "messages_refused",
                                  (json_int_t)web_limits.messages_refused, "pages_at_bound",
                                  (json_int_t)web_limits.pages_at_bound, "requests_refused",
                                  (json_int_t)web_limits.requests_refused, "bodies_too_big",
                                  (json_int_t)web_limits.bodies_too_big, "images_refused",
                                  (json_int_t)w->qr_refused, "backlogs_closed",
                                  (json_int_t)web_limits.backlogs_closed));
}

/* Says, at most each CONN_LOG_MS, how many connections were refused or let go. */
static void conn_log(struct web *w)
{
    int64_t now = msv_mono_ms();

    if (now < w->conn_log_at)
        return;
    w->conn_log_at = now + CONN_LOG_MS;
    fprintf(cli_err,
            "missive: web: %llu connections refused (all %d in use), %llu closed before a login "
            "(at most %d, each for %d s)\n",
            (unsigned long long)w->refused, CONNS_MAX, (unsigned long long)w->dropped_unauth,
            UNAUTH_MAX, UNAUTH_MS / 1000);
}

/*
 * A new connection, before libwebsockets reads a byte of it: refused (a short
 * 503 written as it is) when CONNS_MAX are open; when UNAUTH_MAX of them have
 * had no session yet, the oldest of those goes to make room, so that idle
 * sockets never keep a login out. 0 to take it, -1 to refuse it.
 */
static int conn_filter(struct web *w, const struct lws_filter_network_conn_args *a)
{
    static const char full[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
        "Content-Security-Policy: " CSP "\r\nX-Content-Type-Options: nosniff\r\n"
        "Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n"
        "Cross-Origin-Resource-Policy: same-origin\r\nCache-Control: no-store\r\n"
        "Connection: close\r\n\r\ntoo many connections\n";
    size_t unauth = 0, oldest = CONNS_MAX;

    for (size_t i = 0; i < w->n_conns; i++) {
        if (w->conns[i].authed || w->conns[i].closing)
            continue;
        unauth++;
        if (oldest == CONNS_MAX || w->conns[i].at_ms < w->conns[oldest].at_ms)
            oldest = i;
    }
    if (unauth >= UNAUTH_MAX) {
        conn_close(&w->conns[oldest]);
        w->dropped_unauth++;
        conn_log(w);
    }
    if (w->n_conns < CONNS_MAX)
        return 0;
    if (!w->tls) /* said when the socket takes it at once; the connection goes all the same */
        (void)send(a->accept_fd, full, sizeof(full) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    w->refused++;
    conn_log(w);
    return -1;
}

static void conn_add(struct web *w, struct lws *wsi)
{
    if (w->n_conns == CONNS_MAX) { /* conn_filter let no more in: not expected */
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    w->conns[w->n_conns++] = (struct conn){.wsi = wsi, .at_ms = msv_mono_ms()};
}

static void conn_remove(struct web *w, struct lws *wsi)
{
    struct conn *c = conn_of(w, wsi);

    if (c != NULL)
        *c = w->conns[--w->n_conns];
}

/* Connections that had no session within UNAUTH_MS go (again, if one outlived its close). */
static void conn_sweep(struct web *w)
{
    int64_t now = msv_mono_ms();

    for (size_t i = 0; i < w->n_conns; i++) {
        struct conn *c = &w->conns[i];

        if (c->authed || now - c->at_ms < UNAUTH_MS)
            continue;
        if (!c->closing)
            w->dropped_unauth++;
        c->at_ms = now; /* closed again after as long if it is still there */
        conn_close(c);
        conn_log(w);
    }
}

/* ---- answers --------------------------------------------------------------------------- */

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* The headers every answer carries (docs/web.md); no-store unless it is an asset. */
static int security_headers(struct lws *wsi, int asset, unsigned char **p, unsigned char *end)
{
    return add_header(wsi, "content-security-policy:", csp, p, end) ||
           add_header(wsi, "x-content-type-options:", "nosniff", p, end) ||
           add_header(wsi, "referrer-policy:", "no-referrer", p, end) ||
           add_header(wsi, "x-frame-options:", "DENY", p, end) ||
           /* no page of another origin (another port included) may embed what is served here */
           add_header(wsi, "cross-origin-resource-policy:", "same-origin", p, end) ||
           add_header(wsi, "cache-control:", asset ? "no-cache" : "no-store", p, end);
}

struct answer {
    unsigned status;
    const char *mime;
    uint64_t len;
    int asset;
    const char *names[3], *values[3]; /* more headers */
};

/* Writes an answer's headers; its body follows from the pss (mem or fd) when writable. */
static int answer_headers(struct lws *wsi, const struct answer *a)
{
    unsigned char buf[LWS_PRE + HEADERS_MAX], *start = buf + LWS_PRE, *p = start,
                                              *end = buf + sizeof(buf) - 1;

    if (lws_add_http_common_headers(wsi, a->status, a->mime, a->len, &p, end) ||
        security_headers(wsi, a->asset, &p, end))
        return -1;
    for (size_t i = 0; i < 3 && a->names[i] != NULL; i++)
        if (add_header(wsi, a->names[i], a->values[i], &p, end))
            return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    lws_callback_on_writable(wsi);
    return 0;
}

/* A short plain-text answer (an error, mostly). */
static int answer_text(struct lws *wsi, struct pss *s, unsigned status, const char *text)
{
    struct answer a = {.status = status, .mime = "text/plain; charset=utf-8", .len = strlen(text)};

    s->mem = (const unsigned char *)text;
    s->len = strlen(text);
    s->off = 0;
    return answer_headers(wsi, &a);
}

/* The next piece of a body; -1 to close, 1 when the answer is done. */
static int write_body(struct lws *wsi, struct pss *s)
{
    unsigned char buf[LWS_PRE + CHUNK], *data = buf + LWS_PRE;
    size_t n = 0;
    int last;

    if (s->fd >= 0) {
        ssize_t r = read(s->fd, data, CHUNK);

        if (r < 0)
            return -1;
        n = (size_t)r;
        s->off += n;
        last = s->off >= s->len || r == 0;
    } else {
        n = s->len - s->off < CHUNK ? s->len - s->off : CHUNK;
        if (n > 0)
            memcpy(data, s->mem + s->off, n);
        s->off += n;
        last = s->off >= s->len;
    }
    if (lws_write(wsi, data, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
        return -1;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    return 1;
}

static void pss_clear(struct pss *s)
{
    if (!s->http)
        return; /* a WebSocket's: nothing of an answer */
    if (s->fd >= 0)
        close(s->fd);
    if (s->up_fd >= 0)
        close(s->up_fd);
    free(s->owned);
    free(s->up_path);
    s->owned = s->up_path = NULL;
    s->fd = s->up_fd = -1;
    s->mem = NULL;
    s->len = s->off = 0;
    s->uploading = 0;
}

/* ---- who may ask ----------------------------------------------------------------------- */

static int header(struct lws *wsi, enum lws_token_indexes h, char *buf, size_t len)
{
    buf[0] = '\0';
    return lws_hdr_total_length(wsi, h) > 0 && lws_hdr_total_length(wsi, h) < (int)len &&
                   lws_hdr_copy(wsi, buf, (int)len, h) >= 0
               ? 0
               : -1;
}

/*
 * The Host is the name and port of the URL this server printed, and no other
 * (docs/web.md: DNS rebinding): not localhost for 127.0.0.1, nor the reverse.
 */
static int host_ok(struct web *w, struct lws *wsi)
{
    char host[300];

    if (header(wsi, WSI_TOKEN_HOST, host, sizeof(host)) != 0)
        return 0;
    return w->any_host || strcasecmp(host, w->host_name) == 0;
}

/* A header libwebsockets does not know by name ("sec-fetch-site:"); 0, or -1 if absent. */
static int custom_header(struct lws *wsi, const char *name, char *buf, size_t len)
{
    int n = lws_hdr_custom_length(wsi, name, (int)strlen(name));

    buf[0] = '\0';
    return n > 0 && n < (int)len &&
                   lws_hdr_custom_copy(wsi, buf, (int)len, name, (int)strlen(name)) >= 0
               ? 0
               : -1;
}

/*
 * Fetch metadata (docs/web.md): a browser says where a request comes from.
 * Another site's (cross-site, or same-site: another port or name of this
 * host) is refused, but for a top-level navigation to the page or to a login
 * link (a link followed from a mail, or --open's file). A request that says
 * nothing (not a browser, or an old one) is judged by the other rules.
 */
static int fetch_ok(struct lws *wsi, int get, const char *path)
{
    char site[32], mode[32], dest[32];

    if (custom_header(wsi, "sec-fetch-site:", site, sizeof(site)) != 0 ||
        strcmp(site, "same-origin") == 0 || strcmp(site, "none") == 0)
        return 1;
    return get && (strcmp(path, "/") == 0 || strcmp(path, "/login") == 0) &&
           custom_header(wsi, "sec-fetch-mode:", mode, sizeof(mode)) == 0 &&
           strcmp(mode, "navigate") == 0 &&
           custom_header(wsi, "sec-fetch-dest:", dest, sizeof(dest)) == 0 &&
           strcmp(dest, "document") == 0;
}

/* The Origin is this server's own: the page, not another site. */
static int origin_ok(struct web *w, struct lws *wsi)
{
    char origin[340], host[300], want[340];

    if (header(wsi, WSI_TOKEN_ORIGIN, origin, sizeof(origin)) != 0 ||
        header(wsi, WSI_TOKEN_HOST, host, sizeof(host)) != 0)
        return 0;
    snprintf(want, sizeof(want), "%s://%s", w->tls ? "https" : "http", host);
    return strcasecmp(origin, want) == 0;
}

/*
 * The live session whose cookie came; with need_key, also its page key as the
 * query's k= (every request that reaches the account: /ws, /upload, /logout,
 * /files, /qr.svg). NULL with *status 401 (no session: none, unknown, ended)
 * or 403 (no page key, or another). A session used is not idle.
 */
static struct secret *session_of(struct web *w, struct lws *wsi, int need_key, unsigned *status)
{
    /* lws_get_urlarg_by_name() copies each argument of the query in turn into arg */
    char cookie[REQUEST_HEADERS_MAX], arg[4096];
    const char *k;
    uint8_t id[WEB_SECRET_LEN], key[WEB_SECRET_LEN];
    struct secret *s = NULL;
    struct conn *conn;

    *status = 401;
    if (header(wsi, WSI_TOKEN_HTTP_COOKIE, cookie, sizeof(cookie)) != 0 ||
        web_cookie_session(cookie, w->cookie_name, id) != 0)
        return NULL;
    s = secret_find(w->sessions, SESSIONS_MAX, id, w->session_ms, w->idle_ms);
    msv_wipe(id, sizeof(id));
    if (s != NULL && need_key) {
        k = lws_get_urlarg_by_name(wsi, "k=", arg, sizeof(arg));
        if (k == NULL || web_parse_secret(k, strlen(k), key) != 0 ||
            !msv_equal_ct(key, s->key, WEB_SECRET_LEN)) {
            *status = 403;
            s = NULL;
        }
        msv_wipe(key, sizeof(key));
    }
    if (s != NULL) {
        s->used_ms = msv_mono_ms();
        /* only the page key proves the page: the cookie alone reaches every port of the host,
         * where another local user may listen, and would let such a user's connections stay
         * and fill every slot */
        if (need_key && (conn = conn_of(w, wsi)) != NULL)
            conn->authed = 1;
    }
    return s;
}

/* ---- the endpoints --------------------------------------------------------------------- */

/* GET /login?token=T: a session for an unused token, once. */
static int serve_login(struct web *w, struct lws *wsi, struct pss *s)
{
    char arg[200], hex[WEB_SECRET_HEX + 1], cookie[200], location[2 * WEB_SECRET_HEX + 12];
    const char *token = lws_get_urlarg_by_name(wsi, "token=", arg, sizeof(arg));
    uint8_t v[WEB_SECRET_LEN];
    struct secret *t = NULL, *session;
    struct answer a = {.status = 303, .mime = "text/plain; charset=utf-8"};

    if (token != NULL && web_parse_secret(token, strlen(token), v) == 0)
        t = secret_find(w->tokens, TOKENS_MAX, v, w->token_ms, 0);
    msv_wipe(v, sizeof(v));
    if (t == NULL)
        return answer_text(wsi, s, 403,
                           "This login link is not valid: it was used, it expired, or it is "
                           "wrong. Ask for a new one with: missive web --url\n");
    secret_end(t);       /* one use */
    open_file_remove(w); /* --open's page has done its work */
    session = secret_new(w, w->sessions, SESSIONS_MAX, hex);
    snprintf(cookie, sizeof(cookie), "%s=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%lld%s",
             w->cookie_name, hex, (long long)(w->session_ms / 1000), w->tls ? "; Secure" : "");
    /* the page key and the proof key in the fragment: they reach the page, never a server or
     * a Referer */
    memcpy(location, "/#k=", 4);
    if (msv_hex_encode(session->key, WEB_SECRET_LEN, location + 4, WEB_SECRET_HEX + 1) != MSV_OK)
        location[1] = '\0';
    memcpy(location + 4 + WEB_SECRET_HEX, "&p=", 3); /* over the key's terminating NUL */
    if (msv_hex_encode(session->proof, WEB_SECRET_LEN, location + 7 + WEB_SECRET_HEX,
                       WEB_SECRET_HEX + 1) != MSV_OK)
        location[1] = '\0';
    a.names[0] = "location:";
    a.values[0] = location;
    a.names[1] = "set-cookie:";
    a.values[1] = cookie;
    s->mem = (const unsigned char *)"";
    s->len = 0;
    return answer_headers(wsi, &a);
}

/* POST /logout: the session ends here and now; its cookie is taken back from the browser. */
static int serve_logout(struct web *w, struct lws *wsi, struct pss *s, struct secret *session)
{
    struct answer a = {.status = 204};
    char cookie[WEB_COOKIE_NAME_MAX + 64];

    s->close_after = 1; /* a body, if any, is not read */
    if (!origin_ok(w, wsi))
        return answer_text(wsi, s, 403, "a logout comes from the page itself\n");
    secret_end(session); /* its WebSockets close on the next turn (web_turn) */
    a.names[0] = "set-cookie:";
    snprintf(cookie, sizeof(cookie), "%s=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
             w->cookie_name);
    a.values[0] = cookie;
    s->mem = (const unsigned char *)"";
    s->len = 0;
    return answer_headers(wsi, &a);
}

static int serve_asset(struct lws *wsi, struct pss *s, const char *path)
{
    for (const struct web_asset *f = web_assets; f->path != NULL; f++) {
        if (strcmp(f->path, path) == 0) {
            struct answer a = {.status = 200, .mime = f->mime, .len = f->len, .asset = 1};

            s->mem = f->data;
            s->len = f->len;
            return answer_headers(wsi, &a);
        }
    }
    return answer_text(wsi, s, 404, "not found\n");
}

/* filename*=UTF-8''NAME, NAME percent-encoded but for unreserved characters (RFC 8187). */
static char *disposition(const char *name)
{
    static const char hexd[] = "0123456789ABCDEF";
    size_t len = strlen(name);
    char *d = malloc(len * 3 + 64), *p;

    if (d == NULL)
        return NULL;
    p = d + snprintf(d, 64, "attachment; filename*=UTF-8''");
    for (const unsigned char *c = (const unsigned char *)name; *c != '\0'; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            strchr("-._~", *c) != NULL) {
            *p++ = (char)*c;
        } else {
            *p++ = '%';
            *p++ = hexd[*c >> 4];
            *p++ = hexd[*c & 15];
        }
    }
    *p = '\0';
    return d;
}

/* GET /files/<message id>/<index>: a received file, found through the account's messages. */
static int serve_file(struct web *w, struct lws *wsi, struct pss *s, const char *path)
{
    struct msv_message_file f;
    uint8_t id[16];
    unsigned index;
    int fd = -1, rc;
    char *d = NULL;
    struct answer a = {.status = 200};

    if (web_parse_files_path(path, id, &index) != 0 ||
        msv_client_message_file_open(w->c, id, index, &f, &fd) != MSV_OK)
        return answer_text(wsi, s, 404, "no such file\n");
    a.mime = f.mime;
    a.len = f.size;
    if (strcmp(f.mime, "application/octet-stream") == 0) {
        d = disposition(f.name);
        a.names[0] = "content-disposition:";
        a.values[0] = d ? d : "attachment";
    }
    s->fd = fd;
    s->len = f.size;
    s->off = 0;
    rc = answer_headers(wsi, &a);
    free(d);
    return rc;
}

/* GET /qr.svg?data=TEXT: the QR code of TEXT, drawn with one path. */
static int serve_qr(struct lws *wsi, struct pss *s)
{
    char arg[QR_DATA_MAX + 8];
    const char *data = lws_get_urlarg_by_name(wsi, "data=", arg, sizeof(arg));
    QRcode *q = data != NULL && data[0] != '\0'
                    ? QRcode_encodeString(data, 0, QR_ECLEVEL_M, QR_MODE_8, 1)
                    : NULL;
    struct answer a = {.status = 200, .mime = "image/svg+xml"};
    char *svg = NULL;
    size_t len = 0;
    FILE *f;
    int side;

    if (q == NULL)
        return answer_text(wsi, s, 400, "data: text of 1 to 1024 bytes\n");
    side = q->width + 8; /* four modules of quiet zone each side */
    f = open_memstream(&svg, &len);
    if (f != NULL) {
        fprintf(f,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" "
                "shape-rendering=\"crispEdges\"><rect width=\"%d\" height=\"%d\" "
                "fill=\"#fff\"/><path fill=\"#000\" d=\"",
                side, side, side, side);
        for (int y = 0; y < q->width; y++)
            for (int x = 0; x < q->width; x++)
                if (q->data[y * q->width + x] & 1)
                    fprintf(f, "M%d %dh1v1h-1z", x + 4, y + 4);
        fputs("\"/></svg>\n", f);
        fclose(f);
    }
    QRcode_free(q);
    if (svg == NULL)
        return -1;
    s->owned = svg;
    s->mem = (const unsigned char *)svg;
    s->len = len;
    a.len = len;
    return answer_headers(wsi, &a);
}

/* ---- uploads --------------------------------------------------------------------------- */

/* Deletes an upload's directory (uploads/<random>/) and the file in it. */
static void remove_upload_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d != NULL) {
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

/* Deletes the uploads older than UPLOAD_TTL_S (all of them with older_than_s 0). */
static void sweep_uploads(struct web *w, long older_than_s)
{
    DIR *d = opendir(w->uploads);
    struct dirent *e;
    time_t now = time(NULL);

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        char path[1400];

        if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode) || now - st.st_mtime < older_than_s)
            continue;
        snprintf(path, sizeof(path), "%s/%s", w->uploads, e->d_name);
        remove_upload_dir(path);
    }
    closedir(d);
}

/* Whether the request comes from the page itself (its header and Origin). */
static int upload_from_page(struct web *w, struct lws *wsi)
{
    char flag[8];

    return lws_hdr_custom_length(wsi, "x-missive-upload:", 17) == 1 &&
           lws_hdr_custom_copy(wsi, flag, sizeof(flag), "x-missive-upload:", 17) >= 0 &&
           strcmp(flag, "1") == 0 && origin_ok(w, wsi);
}

/* The body's length, if it says one of at most max bytes; else answered (-2) or -1. */
static int body_length(struct lws *wsi, struct pss *s, uint64_t max, const char *too_big,
                       unsigned long long *len)
{
    char len_text[32], *end;

    if (header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, len_text, sizeof(len_text)) != 0)
        return answer_text(wsi, s, 411, "an upload says its length\n") == 0 ? -2 : -1;
    errno = 0;
    *len = strtoull(len_text, &end, 10);
    if (errno != 0 || *end != '\0' || len_text[0] == '-' || *len > max) {
        if (errno == 0 && *end == '\0' && len_text[0] != '-') /* a length, over the bound */
            web_limits.bodies_too_big++;
        return answer_text(wsi, s, 413, too_big) == 0 ? -2 : -1;
    }
    return 0;
}

static int store_body(struct web *w, struct lws *wsi, struct pss *s, const char *name,
                      unsigned long long len);

/* POST /upload?name=NAME: checked before a byte of the body is taken. */
static int start_upload(struct web *w, struct lws *wsi, struct pss *s)
{
    char arg[WEB_NAME_MAX * 3 + 16];
    const char *name = lws_get_urlarg_by_name(wsi, "name=", arg, sizeof(arg));
    unsigned long long len;
    int rc;

    s->close_after = 1; /* the body is not read: the connection goes after the answer */
    if (!upload_from_page(w, wsi))
        return answer_text(wsi, s, 403, "an upload comes from the page itself\n");
    if (name == NULL || !web_name_ok(name))
        return answer_text(wsi, s, 400, "name: a file name (no '/', at most 255 bytes)\n");
    if ((rc = body_length(wsi, s, UPLOAD_MAX, "a file is at most 256 MiB\n", &len)) != 0)
        return rc == -2 ? 0 : -1;
    return store_body(w, wsi, s, name, len);
}

#define QR_RATE 5.0 /* images read a second, at most (a camera sends a few) */

/*
 * POST /qr: a camera frame or a picture (PNG, at most 8 MiB and 4096 x 4096 pixels), read for
 * a QR code with libzbar as 'devices add --image' does; at most QR_RATE a second.
 */
static int start_qr(struct web *w, struct lws *wsi, struct pss *s)
{
    int64_t now = msv_mono_ms();
    unsigned long long len;
    int rc;

    s->close_after = 1;
    if (!upload_from_page(w, wsi))
        return answer_text(wsi, s, 403, "an image comes from the page itself\n");
    w->qr_tokens += (double)(now - w->qr_at) * QR_RATE / 1000.0;
    if (w->qr_tokens > QR_RATE)
        w->qr_tokens = QR_RATE;
    w->qr_at = now;
    if (w->qr_tokens < 1.0) {
        w->qr_refused++;
        return answer_text(wsi, s, 429, "too many images: at most 5 a second\n");
    }
    w->qr_tokens -= 1.0;
    if ((rc = body_length(wsi, s, QRIMAGE_FILE_MAX, "an image is at most 8 MiB\n", &len)) != 0)
        return rc == -2 ? 0 : -1;
    s->up_qr = 1;
    return store_body(w, wsi, s, "frame.png", len);
}

/* The body into a new uploads/<random>/name, as it arrives. */
static int store_body(struct web *w, struct lws *wsi, struct pss *s, const char *name,
                      unsigned long long len)
{
    char dir[1200], rnd[33];
    uint8_t r[16];

    msv_random_bytes(r, sizeof(r));
    if (msv_hex_encode(r, sizeof(r), rnd, sizeof(rnd)) != MSV_OK)
        return -1;
    snprintf(dir, sizeof(dir), "%s/%s", w->uploads, rnd);
    if ((mkdir(w->uploads, 0700) != 0 && errno != EEXIST) || mkdir(dir, 0700) != 0 ||
        asprintf(&s->up_path, "%s/%s", dir, name) < 0) {
        s->up_path = NULL;
        return answer_text(wsi, s, 500, "cannot store the upload\n");
    }
    s->up_fd = open(s->up_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (s->up_fd < 0) {
        rmdir(dir);
        return answer_text(wsi, s, 500, "cannot store the upload\n");
    }
    s->up_expected = len;
    s->up_len = 0;
    s->uploading = 1;
    s->close_after = 0;
    return 0; /* the body follows, then BODY_COMPLETION */
}

static void upload_body(struct pss *s, const void *in, size_t len)
{
    if (s->up_failed || s->up_len + len > s->up_expected ||
        msv_write_all(s->up_fd, in, len) != MSV_OK)
        s->up_failed = 1;
    else
        s->up_len += len;
}

/* A JSON answer (takes j). */
static int answer_json(struct lws *wsi, struct pss *s, unsigned status, json_t *j)
{
    char *json = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (json == NULL)
        return -1;
    struct answer a = {.status = status, .mime = "application/json", .len = strlen(json)};

    s->owned = json;
    s->mem = (const unsigned char *)json;
    s->len = strlen(json);
    return answer_headers(wsi, &a);
}

/* The QR code in the image just stored, which goes at once: {"code"}, or 422 {"error"}. */
static int finish_qr(struct lws *wsi, struct pss *s)
{
    char text[512], why[256], *slash;
    int found = qrimage_read(s->up_path, text, sizeof(text), why, sizeof(why)) == 0;

    slash = strrchr(s->up_path, '/');
    *slash = '\0';
    remove_upload_dir(s->up_path);
    s->close_after = 1;
    if (!found)
        return answer_json(wsi, s, 422, json_pack("{s:s}", "error", why));
    return answer_json(wsi, s, 200, json_pack("{s:s}", "code", text));
}

static int finish_upload(struct lws *wsi, struct pss *s)
{
    char *json = NULL, *slash;
    json_t *j;
    /* closed whatever happened: a descriptor kept would hold the blocks of a file removed */
    int closed = close(s->up_fd) == 0;
    int failed = s->up_failed || s->up_len != s->up_expected || !closed;

    s->up_fd = -1;
    s->uploading = 0;
    if (failed) {
        slash = strrchr(s->up_path, '/');
        *slash = '\0';
        remove_upload_dir(s->up_path);
        s->close_after = 1;
        return answer_text(wsi, s, 400, "the upload did not arrive whole\n");
    }
    if (s->up_qr)
        return finish_qr(wsi, s);
    j = json_pack("{s:s}", "file", s->up_path);
    json = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (json == NULL)
        return -1;
    struct answer a = {.status = 200, .mime = "application/json", .len = strlen(json)};

    s->owned = json;
    s->mem = (const unsigned char *)json;
    s->len = strlen(json);
    return answer_headers(wsi, &a);
}

/* ---- HTTP ------------------------------------------------------------------------------ */

static int serve_http(struct web *w, struct lws *wsi, struct pss *s, const char *path)
{
    int post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    int get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;

    struct secret *session;
    unsigned status;

    s->http = 1;
    s->fd = s->up_fd = -1;
    s->up_qr = 0;
    if (!host_ok(w, wsi)) {
        s->close_after = 1;
        return answer_text(wsi, s, 421, "this server does not answer to that name\n");
    }
    if (!fetch_ok(wsi, get, path)) {
        s->close_after = post;
        return answer_text(wsi, s, 403, "not from another site\n");
    }
    if (get && strcmp(path, "/login") == 0)
        return serve_login(w, wsi, s);
    session = session_of(
        w, wsi, post || strncmp(path, "/files/", 7) == 0 || strcmp(path, "/qr.svg") == 0, &status);
    if (session == NULL) {
        s->close_after = post;
        return answer_text(wsi, s, status,
                           status == 401
                               ? "not logged in: open a login link of missive web (missive web "
                                 "--url)\n"
                               : "this page has not the session's key\n");
    }
    if (post && strcmp(path, "/logout") == 0)
        return serve_logout(w, wsi, s, session);
    if (post && strcmp(path, "/upload") == 0)
        return start_upload(w, wsi, s);
    if (post && strcmp(path, "/qr") == 0)
        return start_qr(w, wsi, s);
    if (!get) {
        s->close_after = 1;
        return answer_text(wsi, s, 405, "not here\n");
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0)
        return serve_asset(wsi, s, "/index.html");
    if (strncmp(path, "/app/", 5) == 0)
        return serve_asset(wsi, s, path);
    if (strncmp(path, "/files/", 7) == 0)
        return serve_file(w, wsi, s, path);
    if (strcmp(path, "/qr.svg") == 0)
        return serve_qr(wsi, s);
    return answer_text(wsi, s, 404, "not found\n");
}

/* A WebSocket upgrade: the listening Host, the page's Origin, a session; else 403. */
static int confirm_upgrade(struct web *w, struct lws *wsi, struct pss *s)
{
    struct secret *session;
    struct conn *conn;
    unsigned status;

    s->fd = s->up_fd = -1;
    if (host_ok(w, wsi) && fetch_ok(wsi, 1, "/ws") && origin_ok(w, wsi) &&
        (session = session_of(w, wsi, 1, &status)) != NULL) {
        if ((conn = conn_of(w, wsi)) != NULL) {
            char arg[200];
            const char *n = lws_get_urlarg_by_name(wsi, "n=", arg, sizeof(arg));

            conn->session = session; /* the bridge ends with it */
            conn->serial = session->serial;
            conn->has_nonce = n != NULL && web_parse_secret(n, strlen(n), conn->nonce) == 0;
        }
        return 0;
    }
    /* answered here, whole: libwebsockets ends the transaction when this returns */
    static const char refused[] = "refused\n";
    unsigned char body[LWS_PRE + sizeof(refused)];

    if (answer_text(wsi, s, 403, refused) != 0)
        return -1;
    memcpy(body + LWS_PRE, refused, sizeof(refused) - 1);
    s->mem = NULL;
    s->len = 0;
    if (lws_write(wsi, body + LWS_PRE, sizeof(refused) - 1, LWS_WRITE_HTTP_FINAL) !=
        (int)sizeof(refused) - 1)
        return -1;
    return 1;
}

/* ---- WebSockets, bridged to the owner -------------------------------------------------- */

static void bridge_free(struct web *w, struct bridge *b)
{
    for (struct bridge **p = &w->bridges; *p != NULL; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            break;
        }
    }
    while (b->head != NULL) {
        struct ws_msg *m = b->head;

        b->head = m->next;
        free(m);
    }
    if (b->fd >= 0)
        close(b->fd); /* the owner sees the end and lets its connection go */
    json_decref(b->uploads);
    free(b->line);
    free(b->to_owner);
    free(b->rx);
    free(b);
}

static int queue_raw(struct bridge *b, const char *line, size_t len);

/*
 * The WebSocket's first message: {"jsonrpc":"2.0","method":"web-hello","params":{"proof":P}},
 * P the hex of HMAC-SHA256(the session's proof key, "missive web hello" || the page's nonce).
 */
static int hello_queue(struct bridge *b, const struct secret *session,
                       const uint8_t nonce[WEB_SECRET_LEN])
{
    static const char label[] = "missive web hello";
    crypto_auth_hmacsha256_state st;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    char hex[2 * sizeof(mac) + 1], line[200];
    int len;

    crypto_auth_hmacsha256_init(&st, session->proof, WEB_SECRET_LEN);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)label, sizeof(label) - 1);
    crypto_auth_hmacsha256_update(&st, nonce, WEB_SECRET_LEN);
    crypto_auth_hmacsha256_final(&st, mac);
    if (msv_hex_encode(mac, sizeof(mac), hex, sizeof(hex)) != MSV_OK)
        return -1;
    len = snprintf(line, sizeof(line),
                   "{\"jsonrpc\":\"2.0\",\"method\":\"web-hello\",\"params\":{\"proof\":\"%s\"}}",
                   hex);
    if (len < 0 || (size_t)len >= sizeof(line) || queue_raw(b, line, (size_t)len) != 0)
        return -1;
    lws_callback_on_writable(b->wsi);
    return 0;
}

static struct bridge *bridge_new(struct web *w, struct lws *wsi)
{
    struct bridge *b = calloc(1, sizeof(*b));
    struct conn *conn = conn_of(w, wsi);
    int sv[2];

    if (b == NULL)
        return NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        free(b);
        return NULL;
    }
    if (conn == NULL || conn->session == NULL ||
        owner_add_peer(w->ow, sv[1]) != 0) { /* the owner's most connections */
        close(sv[0]);
        close(sv[1]);
        free(b);
        return NULL;
    }
    b->session = conn->session;
    b->serial = conn->serial;
    b->fd = sv[0];
    b->wsi = wsi;
    b->uploads = json_array();
    b->next = w->bridges;
    w->bridges = b;
    /* the page's n= proved first, before anything the owner writes */
    if (conn->has_nonce && hello_queue(b, conn->session, conn->nonce) != 0) {
        bridge_free(w, b);
        return NULL;
    }
    return b;
}

/* Appends bytes to a growing buffer of at most max; -1 if it would pass it. */
static int append(char **buf, size_t *len, size_t *cap, const void *data, size_t n, size_t max)
{
    if (*len + n > max)
        return -1;
    if (*len + n > *cap) {
        size_t c = (*len + n) * 2 < max ? (*len + n) * 2 : max;
        char *bigger = realloc(*buf, c);

        if (bigger == NULL)
            return -1;
        *buf = bigger;
        *cap = c;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

/* Whether path is in a directory start_upload made: uploads/<32 hex>/NAME. */
static int uploaded(const struct web *w, const char *path)
{
    size_t ulen = strlen(w->uploads);

    return path != NULL && strncmp(path, w->uploads, ulen) == 0 && path[ulen] == '/' &&
           strspn(path + ulen + 1, "0123456789abcdef") == 32 && path[ulen + 33] == '/' &&
           strchr(path + ulen + 34, '/') == NULL && strcmp(path + ulen + 34, ".") != 0 &&
           strcmp(path + ulen + 34, "..") != 0 && path[ulen + 34] != '\0';
}

/* Upload directories a 'send' names, kept with its id to be deleted once it is answered. */
static void note_uploads(struct web *w, struct bridge *b, json_t *req)
{
    json_t *files = json_object_get(json_object_get(req, "params"), "file"), *f, *dirs;
    const char *method = json_string_value(json_object_get(req, "method"));
    size_t i, ulen = strlen(w->uploads);

    if (method == NULL || strcmp(method, "send") != 0 || !json_is_array(files) ||
        json_object_get(req, "id") == NULL || json_array_size(b->uploads) >= 64)
        return;
    dirs = json_array();
    json_array_foreach(files, i, f)
    {
        const char *p = json_string_value(f);

        /* uploads/<32 hex>/: a directory start_upload made, never one a path climbs to */
        if (uploaded(w, p))
            json_array_append_new(dirs, json_stringn(p, ulen + 33));
    }
    if (json_array_size(dirs) > 0)
        json_array_append_new(b->uploads, json_pack("[O, o]", json_object_get(req, "id"), dirs));
    else
        json_decref(dirs);
}

/* A response came: the uploads its 'send' named are deleted (sent or refused alike). */
static void answered(struct bridge *b, json_t *response)
{
    json_t *id = json_object_get(response, "id"), *entry, *dir;
    size_t i, k;

    if (id == NULL || json_array_size(b->uploads) == 0)
        return;
    json_array_foreach(b->uploads, i, entry)
    {
        if (json_equal(json_array_get(entry, 0), id)) {
            json_array_foreach(json_array_get(entry, 1), k, dir)
                remove_upload_dir(json_string_value(dir));
            json_array_remove(b->uploads, i);
            return;
        }
    }
}

/*
 * Why the page may not ask req of the owner (NULL: it may): a file it names is one it
 * uploaded, never another of this machine's (a page that ran someone's script must not send
 * or read the user's files); it makes no backup and restores none.
 */
static const char *page_refusal(const struct web *w, json_t *req)
{
    const char *method = json_string_value(json_object_get(req, "method")), *key;
    json_t *params = json_object_get(req, "params"), *v, *f;
    size_t i;

    if (method != NULL && (strcmp(method, "backup") == 0 || strcmp(method, "restore") == 0))
        return "the web page makes no backup and restores none; use the command line";
    /* a session would outlive its hours and its logout, and push out the owner's token */
    if (method != NULL && strcmp(method, "web-login") == 0)
        return "the web page makes no login links; use missive web --url";
    /* every parameter that names a file (a number would name one of the owner's working
     * directory: refused too, as no upload) */
    json_object_foreach(params, key, v)
    {
        const char *why = strcmp(key, "file") == 0 ? "a file the web page sends is one it uploaded"
                                                   : "a file the web page names is one it uploaded";

        if (!rpc_names_file(key))
            continue;
        if (strcmp(key, "file") == 0 && json_is_array(v)) {
            json_array_foreach(v, i, f)
            {
                if (!uploaded(w, json_string_value(f)))
                    return why;
            }
        } else if (!uploaded(w, json_string_value(v))) {
            return why;
        }
    }
    return NULL;
}

/* A JSON-RPC error of code for the page, with id (NULL: null). */
static json_t *page_error_of(json_t *id, int code, const char *why)
{
    return json_pack("{s:s, s:O?, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code", code,
                     "message", why);
}

/* The error the page gets for req, refused why. */
static json_t *page_error(json_t *req, const char *why)
{
    return page_error_of(json_object_get(req, "id"), -32602, why);
}

/* The refusals of req (a request or a batch) the page gets at once, or NULL if none. */
static json_t *page_refusals(const struct web *w, json_t *req)
{
    json_t *one, *out;
    size_t i, refused = 0;

    if (!json_is_array(req)) {
        const char *why = json_is_object(req) ? page_refusal(w, req) : NULL;

        return why == NULL ? NULL : page_error(req, why);
    }
    /* as the owner would (its bound): one answer, not one per request */
    if (json_array_size(req) > PAGE_BATCH_MAX)
        return page_error_of(NULL, -32600, "a batch holds at most 32 requests");
    /* one refused: none of the batch runs, each told why */
    out = json_array();
    json_array_foreach(req, i, one)
    {
        const char *why = json_is_object(one) ? page_refusal(w, one) : NULL;

        refused += why != NULL;
        json_array_append_new(
            out, page_error(one, why != NULL ? why : "another request of the batch was refused"));
    }
    if (refused == 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static int queue_raw(struct bridge *b, const char *line, size_t len);

/* A whole message from the page: one request line for the owner. */
static int from_page(struct web *w, struct bridge *b)
{
    json_t *req = json_loadb(b->rx, b->rx_len, 0, NULL);
    json_t *refused = req != NULL
                          ? page_refusals(w, req)
                          : page_error_of(NULL, -32700, "the message from the page is not JSON");
    char *line = req ? json_dumps(req, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    int rc;

    /* written again it may be longer than it came (numbers written out in full): past a
     * request line's bound it is refused here, as the owner would, with its id */
    if (refused == NULL && line != NULL && strlen(line) > WS_IN_MAX)
        refused = page_error_of(json_is_object(req) ? json_object_get(req, "id") : NULL, -32600,
                                "the request is over 1 MiB as written for the daemon (its "
                                "numbers written out in full)");

    /*
     * what this side cannot read is answered here, never passed on as it came: the owner reads
     * the line after its breaks are gone, and might take what the checks above never saw
     */
    if (refused != NULL) {
        char *answer = json_dumps(refused, JSON_COMPACT);

        web_limits.requests_refused++;
        /* not as an answer of the owner's: a pending send's uploads stay (answered); past the
         * bound the page does not read what it asks for, and is let go */
        rc = answer != NULL && b->queued + strlen(answer) <= WS_OUT_MAX
                 ? queue_raw(b, answer, strlen(answer))
                 : -1;
        free(answer);
        free(line);
        json_decref(refused);
        json_decref(req);
        b->rx_len = 0;
        return rc;
    }
    if (req != NULL && json_is_array(req)) {
        size_t i;
        json_t *one;

        json_array_foreach(req, i, one) note_uploads(w, b, one);
    } else if (req != NULL) {
        note_uploads(w, b, req);
    }
    json_decref(req);
    /* as this side read it (one line: JSON_COMPACT writes no line break) */
    rc = line != NULL
             ? append(&b->to_owner, &b->to_len, &b->to_cap, line, strlen(line), TO_OWNER_MAX)
             : -1;
    free(line);
    b->rx_len = 0;
    if (rc == 0)
        rc = append(&b->to_owner, &b->to_len, &b->to_cap, "\n", 1, TO_OWNER_MAX);
    /* TO_OWNER_MAX of requests the owner has not taken: the page is let go */
    if (rc != 0)
        web_limits.backlogs_closed++;
    return rc;
}

static void to_owner(struct bridge *b)
{
    while (b->to_len > 0) {
        ssize_t n = write(b->fd, b->to_owner, b->to_len);

        if (n <= 0)
            return; /* full: the owner takes it on its next turn */
        memmove(b->to_owner, b->to_owner + n, b->to_len - (size_t)n);
        b->to_len -= (size_t)n;
    }
}

/* A message for the page, queued as it is. */
static int queue_raw(struct bridge *b, const char *line, size_t len)
{
    struct ws_msg *m = malloc(sizeof(*m) + LWS_PRE + len);

    if (m == NULL)
        return -1;
    m->next = NULL;
    m->len = len;
    memcpy(m->data + LWS_PRE, line, len);
    if (b->tail != NULL)
        b->tail->next = m;
    else
        b->head = m;
    b->tail = m;
    b->queued += len;
    return 0;
}

/* A line from the owner becomes a message for the page. */
static int queue_line(struct bridge *b, const char *line, size_t len)
{
    json_t *j;

    if (json_array_size(b->uploads) > 0 && (j = json_loadb(line, len, 0, NULL)) != NULL) {
        if (json_is_array(j)) {
            size_t i;
            json_t *one;

            json_array_foreach(j, i, one) answered(b, one);
        } else {
            answered(b, j);
        }
        json_decref(j);
    }
    return queue_raw(b, line, len);
}

/* Takes what the owner wrote while the page keeps up; its end closes the WebSocket. */
static void from_owner(struct bridge *b)
{
    char buf[65536];

    while (b->queued < WS_OUT_MAX && !b->owner_gone) {
        ssize_t n = read(b->fd, buf, sizeof(buf));
        size_t start = 0;

        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            b->owner_gone = 1;
        if (n <= 0)
            break;
        for (size_t i = 0; i < (size_t)n; i++) {
            if (buf[i] != '\n')
                continue;
            if (append(&b->line, &b->line_len, &b->line_cap, buf + start, i - start, WS_OUT_MAX) !=
                    0 ||
                queue_line(b, b->line, b->line_len) != 0)
                b->owner_gone = 1;
            b->line_len = 0;
            start = i + 1;
        }
        if (append(&b->line, &b->line_len, &b->line_cap, buf + start, (size_t)n - start,
                   WS_OUT_MAX) != 0)
            b->owner_gone = 1;
    }
    /* a page that does not read goes after a while at the bound; one that reads stays */
    if (b->queued >= WS_OUT_MAX && !b->full) {
        b->full = 1;
        if (!b->was_full)
            web_limits.pages_at_bound++; /* each page once */
        b->was_full = 1;
        lws_set_timeout(b->wsi, PENDING_TIMEOUT_USER_OK, FULL_WAIT_S);
    }
    if (b->head != NULL || b->owner_gone)
        lws_callback_on_writable(b->wsi);
}

/* Whether the session a WebSocket was opened with still holds (not ended, not expired). */
static int bridge_session_live(struct web *w, struct bridge *b)
{
    return b->session->serial == b->serial && secret_live(b->session, w->session_ms, w->idle_ms);
}

static int ws_writable(struct bridge *b)
{
    struct ws_msg *m = b->head;

    if (b->session_ended)
        return -1; /* the page finds / answered 401 and stops reconnecting (rpc.js) */
    if (m == NULL)
        return b->owner_gone ? -1 : 0;
    if (lws_write(b->wsi, m->data + LWS_PRE, m->len, LWS_WRITE_TEXT) < (int)m->len)
        return -1;
    b->head = m->next;
    if (b->head == NULL)
        b->tail = NULL;
    b->queued -= m->len;
    free(m);
    /* the page reads: it has another minute, or none is counted once below the bound */
    if (b->full) {
        b->full = b->queued >= WS_OUT_MAX;
        lws_set_timeout(b->wsi, b->full ? PENDING_TIMEOUT_USER_OK : NO_PENDING_TIMEOUT,
                        b->full ? FULL_WAIT_S : 0);
    }
    if (b->head != NULL || b->owner_gone)
        lws_callback_on_writable(b->wsi);
    return 0;
}

static int ws_receive(struct web *w, struct lws *wsi, struct bridge *b, const void *in, size_t len)
{
    if (b->session_ended || !bridge_session_live(w, b)) {
        if (!b->session_ended) /* closed when writable, or at the latest in a few seconds */
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, ENDED_WAIT_S);
        b->session_ended = 1; /* ended, or out of time: nothing more reaches the owner */
        lws_callback_on_writable(wsi);
        return 0;
    }
    b->session->used_ms = msv_mono_ms();
    /* text only, and no longer than a request line may be */
    if (lws_frame_is_binary(wsi) ||
        append(&b->rx, &b->rx_len, &b->rx_cap, in, len, WS_IN_MAX) != 0) {
        web_limits.messages_refused++;
        return -1;
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
        return 0;
    if (from_page(w, b) != 0)
        return -1;
    to_owner(b);
    if (b->head != NULL) /* a refusal answered here */
        lws_callback_on_writable(wsi);
    return 0;
}

/* ---- the protocol's callback ----------------------------------------------------------- */

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    struct web *w = lws_context_user(lws_get_context(wsi));
    struct pss *s = user;
    int rc;

    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return conn_filter(w, user);
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        conn_add(w, wsi);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        conn_remove(w, wsi);
        return 0;
    case LWS_CALLBACK_HTTP:
        memset(s, 0, sizeof(*s));
        return serve_http(w, wsi, s, in) != 0 ? -1 : 0;
    case LWS_CALLBACK_HTTP_BODY:
        if (s->uploading)
            upload_body(s, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return s->uploading && finish_upload(wsi, s) != 0 ? -1 : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        /* an answer set up here only (not a refused upgrade's, written whole already, whose
         * connection may come back with a blank state): else nothing to write, and it closes */
        if (s == NULL || !s->http)
            return -1;
        if (s->uploading)
            return 0;
        rc = write_body(wsi, s);
        if (rc <= 0)
            return rc;
        pss_clear(s);
        if (s->close_after)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (s != NULL && s->http && s->up_path != NULL && s->uploading) {
            char *slash = strrchr(s->up_path, '/');

            *slash = '\0';
            remove_upload_dir(s->up_path); /* it never arrived whole */
        }
        if (s != NULL)
            pss_clear(s);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        struct pss none = {.fd = -1}; /* the connection has no pss of this protocol yet */

        return confirm_upgrade(w, wsi, &none);
    }
    case LWS_CALLBACK_ADD_HEADERS: {
        struct lws_process_html_args *a = in;
        unsigned char *p = (unsigned char *)a->p, *end = p + a->max_len;

        if (security_headers(wsi, 0, &p, end))
            return -1;
        a->max_len -= (int)(p - (unsigned char *)a->p);
        a->p = (char *)p;
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        s->bridge = bridge_new(w, wsi);
        return s->bridge == NULL ? -1 : 0;
    case LWS_CALLBACK_RECEIVE:
        return s->bridge == NULL ? -1 : ws_receive(w, wsi, s->bridge, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return s->bridge == NULL ? -1 : ws_writable(s->bridge);
    case LWS_CALLBACK_CLOSED:
        if (s->bridge != NULL)
            bridge_free(w, s->bridge);
        s->bridge = NULL;
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {"missive", on_lws, sizeof(struct pss), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- starting and running -------------------------------------------------------------- */

/* 'web-login' (and missive web --url): a fresh one-time login URL. */
static json_t *web_login(void *ctx, json_t *params, char *why, size_t why_len)
{
    struct web *w = ctx;
    const char *output = json_string_value(json_object_get(params, "output"));
    char *url = login_url(w), *line = NULL;
    json_t *r;

    if (url == NULL) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    if (output != NULL && strcmp(output, "text") == 0 && asprintf(&line, "%s\n", url) >= 0)
        r = json_pack("{s:s, s:s}", "text", line, "stderr", "");
    else
        r = json_pack("{s:[{s:s}], s:s}", "items", "url", url, "stderr", "");
    free(line);
    free(url);
    return r;
}

/* --listen, --tls-cert and --tls-key: where to listen, and whether that is allowed. */
static int web_options(const struct cli *o, struct web *w)
{
    if (web_parse_listen(o->listen ? o->listen : "127.0.0.1:0", w->host, sizeof(w->host),
                         &w->port) != 0) {
        fprintf(cli_err, "missive: --listen takes HOST:PORT ([ADDRESS]:PORT for IPv6)\n");
        return EXIT_USAGE;
    }
    if ((o->tls_cert == NULL) != (o->tls_key == NULL)) {
        fprintf(cli_err, "missive: --tls-cert and --tls-key go together\n");
        return EXIT_USAGE;
    }
    /* an address, for libwebsockets; the URL says localhost only with TLS: without it a
     * browser may take localhost for ::1 first, where another user of this machine could
     * listen on the same port and so be sent the login token */
    if (strcmp(w->host, "localhost") == 0) {
        snprintf(w->host, sizeof(w->host), "127.0.0.1");
        w->named_localhost = o->tls_cert != NULL;
    }
    w->token_ms = (int64_t)((o->token_minutes > 0 ? o->token_minutes : TOKEN_MINUTES) * 60000);
    w->session_ms = (int64_t)((o->session_hours > 0 ? o->session_hours : SESSION_HOURS) * 3600000);
    w->idle_ms = (int64_t)((o->idle_minutes > 0 ? o->idle_minutes : IDLE_MINUTES) * 60000);
    w->tls = o->tls_cert != NULL;
    if (!w->tls && !web_host_is_loopback(w->host)) {
        fprintf(cli_err,
                "missive: without TLS the web client listens on this machine only (127.0.0.1, "
                "::1, localhost): anyone on the network could read the session cookie; give "
                "--tls-cert and --tls-key to listen on %s\n",
                w->host);
        return EXIT_USAGE;
    }
    if (w->tls && (access(o->tls_cert, R_OK) != 0 || access(o->tls_key, R_OK) != 0)) {
        fprintf(cli_err, "missive: cannot read %s: %s\n",
                access(o->tls_cert, R_OK) != 0 ? o->tls_cert : o->tls_key, strerror(errno));
        return EXIT_ERR;
    }
    return 0;
}

/* The names this server answers to, and the base of its URLs, once its port is known. */
static void set_names(struct web *w)
{
    int v6 = strchr(w->host, ':') != NULL;
    const char *scheme = w->tls ? "https" : "http";

    snprintf(w->host_name, sizeof(w->host_name), v6 ? "[%s]:%u" : "%s:%u",
             w->named_localhost ? "localhost" : w->host, w->port);
    /* on every address, with TLS: the certificate is what names the server */
    w->any_host = w->tls && (strcmp(w->host, "0.0.0.0") == 0 || strcmp(w->host, "::") == 0);
    snprintf(w->base, sizeof(w->base), "%s://%s", scheme, w->host_name);
    snprintf(w->cookie_name, sizeof(w->cookie_name), WEB_COOKIE_PREFIX "%u", w->port);
}

static int web_listen(struct web *w)
{
    struct lws_context_creation_info info;
    void *loops[1] = {&w->loop};
    struct lws_vhost *vh;
    int wildcard = strcmp(w->host, "0.0.0.0") == 0 || strcmp(w->host, "::") == 0, port;

    memset(&info, 0, sizeof(info));
    info.port = (int)w->port;
    info.iface = wildcard ? NULL : w->host;
    info.protocols = protocols;
    info.user = w;
    info.foreign_loops = loops;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.alpn = "http/1.1";
    info.timeout_secs = UNAUTH_MS / 1000; /* for the headers of a request, among others */
    info.keepalive_timeout = 30;
    info.server_string = "missive";
    /* a browser sends a host's cookies of every port: other local sites' may fill the Cookie
     * header (libwebsockets' default for all the headers is 4 KiB) */
    info.max_http_header_data = REQUEST_HEADERS_MAX;
    if (w->tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = w->o->tls_cert;
        info.ssl_private_key_filepath = w->o->tls_key;
    }
    lws_set_log_level(LLL_ERR, NULL);
    w->ctx = lws_create_context(&info);
    if (w->ctx == NULL) {
        fprintf(cli_err, "missive: cannot serve the web client on %s:%u%s\n", w->host, w->port,
                w->tls ? " (is the certificate and its key right?)" : "");
        return EXIT_ERR;
    }
    vh = lws_get_vhost_by_name(w->ctx, "default");
    port = vh != NULL ? lws_get_vhost_listen_port(vh) : -1;
    if (port <= 0) { /* an address of no interface here, a port taken */
        fprintf(cli_err, "missive: cannot listen on %s:%u\n", w->host, w->port);
        /* a context without its vhost is gone at once, its handles with it: the loop is
         * not run again (libwebsockets' event library is unloaded by then) */
        lws_context_destroy(w->ctx);
        w->ctx = NULL;
        w->loop_abandoned = 1;
        return EXIT_ERR;
    }
    w->port = (unsigned)port;
    set_names(w);
    return 0;
}

/*
 * --open: the browser gets the login URL through a page only this user can
 * read (0600, in the account's directory), never on xdg-open's command line,
 * which every user of the machine sees in /proc. The page forwards with
 * <meta http-equiv=refresh> (no script) and is deleted at the first login or
 * after OPEN_FILE_MS.
 */
static void open_browser(struct web *w, const char *url)
{
    char rnd[17], *argv[] = {"xdg-open", w->open_file, NULL};
    uint8_t r[8];
    pid_t pid;
    FILE *f = NULL;
    int fd;

    msv_random_bytes(r, sizeof(r));
    if (msv_hex_encode(r, sizeof(r), rnd, sizeof(rnd)) != MSV_OK)
        return;
    snprintf(w->open_file, sizeof(w->open_file), "%s/web-login-%s.html", w->dir, rnd);
    fd = open(w->open_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0 && (f = fdopen(fd, "w")) == NULL)
        close(fd);
    /* the URL is made of [a-z0-9:/.?=[\]]: nothing in it needs escaping in an attribute */
    if (f == NULL ||
        fprintf(f,
                "<!doctype html>\n<meta charset=\"utf-8\">\n<meta name=\"referrer\" "
                "content=\"no-referrer\">\n<meta http-equiv=\"refresh\" content=\"0; "
                "url=%s\">\n<title>missive web</title>\n<a href=\"%s\">Open missive web</a>\n",
                url, url) < 0 ||
        fclose(f) != 0) {
        fprintf(cli_err, "missive: cannot write %s; open the URL above\n", w->open_file);
        open_file_remove(w);
        return;
    }
    w->open_file_until = msv_mono_ms() + OPEN_FILE_MS;
    if (posix_spawnp(&pid, "xdg-open", NULL, NULL, argv, environ) != 0) {
        fprintf(cli_err, "missive: cannot start a browser (xdg-open); open the URL above\n");
        open_file_remove(w);
        return;
    }
    w->open_pid = pid;
}

/* xdg-open hands the page to a browser and exits: it is reaped, not left a zombie. */
static void open_browser_reap(struct web *w)
{
    if (w->open_pid > 0 && waitpid(w->open_pid, NULL, WNOHANG) != 0)
        w->open_pid = 0;
}

/*
 * The libwebsockets context goes in two calls on a loop it does not own: the
 * first closes its handles, the loop runs their callbacks, the second frees
 * what is left (without it the context and its TLS state leak).
 */
static void web_close(struct web *w)
{
    if (w->loop_abandoned)
        return;
    if (w->ctx != NULL)
        lws_context_destroy(w->ctx);
    for (int i = 0; i < 1000 && uv_run(&w->loop, UV_RUN_NOWAIT) != 0; i++)
        ;
    if (w->ctx != NULL)
        lws_context_destroy(w->ctx);
    uv_loop_close(&w->loop);
}

static void web_turn(struct web *w)
{
    int64_t now;

    uv_run(&w->loop, UV_RUN_NOWAIT);
    for (struct bridge *b = w->bridges; b != NULL; b = b->next) {
        if (!b->session_ended && !bridge_session_live(w, b)) {
            b->session_ended = 1; /* logged out, or out of time: the WebSocket closes */
            lws_set_timeout(b->wsi, PENDING_TIMEOUT_USER_OK, ENDED_WAIT_S);
            lws_callback_on_writable(b->wsi);
        }
        if (b->session_ended)
            continue; /* nothing more goes either way: it closes */
        to_owner(b);
        from_owner(b);
    }
    conn_sweep(w);
    now = msv_mono_ms();
    if (w->open_file[0] != '\0' && now >= w->open_file_until)
        open_file_remove(w);
    open_browser_reap(w);
    if (now >= w->sweep_at) {
        sweep_uploads(w, UPLOAD_TTL_S);
        w->sweep_at = now + SWEEP_INTERVAL_MS;
    }
}

int web_main(const struct cli *o, struct msv_client *c)
{
    struct web *w = calloc(1, sizeof(*w));
    int rc;
    char *url = NULL;

    if (w == NULL)
        return EXIT_ERR;
    if (o->argc != 0) {
        free(w);
        return cli_usage("web", cli_err);
    }
    w->o = o;
    w->c = c;
    {
        /* the path given to send: absolute, as the owner may run anywhere */
        char *abs = realpath(c->dir, NULL);

        snprintf(w->dir, sizeof(w->dir), "%s", abs ? abs : c->dir);
        snprintf(w->uploads, sizeof(w->uploads), "%s/uploads", w->dir);
        free(abs);
    }
    rc = web_options(o, w);
    if (rc == 0)
        rc = owner_start(o, c, 0, &w->ow);
    if (rc != 0) {
        free(w);
        return rc;
    }
    uv_loop_init(&w->loop);
    rc = web_listen(w);
    if (rc == 0 && (url = login_url(w)) == NULL)
        rc = EXIT_ERR;
    if (rc == 0) {
        owner_set_method(w->ow, "web-login", web_login, w);
        owner_set_status(w->ow, web_status, w);
        sweep_uploads(w, UPLOAD_TTL_S);
        w->sweep_at = msv_mono_ms() + SWEEP_INTERVAL_MS;
        printf("web: %s\n", url);
        fflush(stdout);
        fprintf(cli_err, "missive: web client for %s (device %llu) on %s; daemon on %s\n",
                c->handle, (unsigned long long)c->device_id, w->base, owner_socket(w->ow));
        if (o->open_browser)
            open_browser(w, url);
    }
    free(url);
    while (rc == 0 && !owner_stopping()) {
        int t = uv_backend_timeout(&w->loop);

        /* at least each second: sessions and connections run out of time (web_turn) */
        owner_step(w->ow, uv_backend_fd(&w->loop), t < 0 || t > 1000 ? 1000 : t);
        web_turn(w);
    }
    open_file_remove(w);
    open_browser_reap(w);
    if (w->refused > 0 || w->dropped_unauth > 0) {
        w->conn_log_at = 0;
        conn_log(w);
    }
    if (w->qr_refused > 0)
        fprintf(stderr,
                "missive: web: %llu images refused for coming too fast (at most 5 a second)\n",
                (unsigned long long)w->qr_refused);
    web_close(w); /* the WebSockets close, and their bridges with them */
    while (w->bridges != NULL)
        bridge_free(w, w->bridges);
    owner_stop(w->ow);
    if (rc == 0)
        fprintf(cli_err, "missive: web client stopped\n");
    free(w);
    return rc;
}
