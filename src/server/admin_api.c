/*
 * The admin API on the HTTP port (docs/missived.md, "The admin API"): what missive-admin does
 * on a data directory, for an operator who reaches the node over HTTP instead.
 *
 *   POST /admin/reload                 as SIGHUP
 *   POST /admin/disconnect {"handle"}  the account's connections close now, on every node
 *   GET  /admin/stats                  missive-admin stats, as JSON
 *   GET  /admin/accounts?limit=&after= missive-admin accounts, a page at a time
 *
 * Every request bears "Authorization: Bearer TOKEN", the token of [http] admin_token_file
 * (mode 0600, missived's own). The token is compared as BLAKE2b hashes with sodium_memcmp,
 * in time that does not depend on where they differ; a request without it or with another is
 * answered 401 and counted, and past ADMIN_FAILURES_MAX of them in a minute every request is
 * answered 429 unread until the minute is over. Each request is logged (method, path,
 * status, peer), never its token. Handlers run on the HTTP port's thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <sodium.h>

#include "missive/payload.h"
#include "missive/util.h"
#include "server/admin_api.h"
#include "server/cluster.h"
#include "server/log.h"
#include "server/server.h"

#define TOKEN_MIN 32
#define TOKEN_MAX (MSV_ADMIN_TOKEN_BUF - 4)
#define ADMIN_FAILURES_MAX 10 /* failed authentications a minute before 429 */
#define ADMIN_WINDOW_MS 60000
#define ADMIN_BODY_MAX 1024 /* a disconnect's body */
#define ACCOUNTS_PAGE_DEFAULT 100
#define ACCOUNTS_PAGE_MAX 1000

struct msv_admin_api {
    uint8_t token_hash[crypto_generichash_BYTES];
    struct msv_server *srv;
    int64_t window_start_ms; /* of the minute failures are counted in (HTTP thread only) */
    unsigned failures;
};

/* ---- the token --------------------------------------------------------------------------- */

static int is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* The token in fd's first line into buf; 0 if it is not one. */
static int read_token(int fd, char *buf, size_t cap, size_t *len)
{
    ssize_t n = read(fd, buf, cap - 1);
    size_t i = 0;

    if (n <= 0)
        return 0;
    buf[n] = '\0';
    while (i < (size_t)n && is_token_char(buf[i]))
        i++;
    *len = i;
    /* the line may end there, with \n (or \r\n); nothing else may follow on it */
    return i >= TOKEN_MIN && i <= TOKEN_MAX &&
           (buf[i] == '\0' || buf[i] == '\n' || (buf[i] == '\r' && buf[i + 1] == '\n'));
}

msv_err msv_admin_token_load(const char *path, char *buf, size_t cap, size_t *len, char *why,
                             size_t why_len)
{
    struct stat sb;
    msv_err err = MSV_ERR_INVALID;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0 && errno == ENOENT)
        err = MSV_ERR_NOT_FOUND;
    if (fd < 0)
        snprintf(why, why_len, "%s cannot be read: %s", path, strerror(errno));
    else if (fstat(fd, &sb) != 0 || (sb.st_mode & 077) != 0 || sb.st_uid != geteuid())
        snprintf(why, why_len, "%s must be your own file of mode 0600", path);
    else if (cap < TOKEN_MAX + 4 || !read_token(fd, buf, cap, len))
        snprintf(why, why_len, "%s must hold one line of %d to %d letters, digits, - and _", path,
                 TOKEN_MIN, TOKEN_MAX);
    else
        err = MSV_OK;
    if (fd >= 0)
        close(fd);
    return err;
}

msv_err msv_admin_api_open(const struct msv_config *cfg, struct msv_server *srv,
                           struct msv_admin_api **out, char *why, size_t why_len)
{
    char buf[MSV_ADMIN_TOKEN_BUF];
    struct msv_admin_api *a = NULL;
    size_t len = 0;
    msv_err err;

    *out = NULL;
    if (cfg->http_admin_token_file[0] == '\0')
        return MSV_OK;
    err = msv_admin_token_load(cfg->http_admin_token_file, buf, sizeof(buf), &len, why, why_len);
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK; /* no file: no admin API (logged by the caller) */
    if (err == MSV_OK && (a = calloc(1, sizeof(*a))) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        crypto_generichash(a->token_hash, sizeof(a->token_hash), (const uint8_t *)buf, len, NULL,
                           0);
        a->srv = srv;
        *out = a;
    }
    sodium_memzero(buf, sizeof(buf));
    return err;
}

void msv_admin_api_free(struct msv_admin_api *a)
{
    if (a != NULL)
        sodium_memzero(a->token_hash, sizeof(a->token_hash));
    free(a);
}

/* ---- replies ----------------------------------------------------------------------------- */

static const char *method_name(const struct evhttp_request *req)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    default:
        return "other";
    }
}

/* req's path for the log: at most 128 bytes, anything but URL characters shown as '?'. */
static void loggable_path(const struct evhttp_request *req, char out[129])
{
    const char *p = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    size_t i = 0;

    for (; p != NULL && p[i] != '\0' && i < 128; i++) {
        char c = p[i];
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    strchr("/._~%-", c) != NULL;

        out[i] = plain ? c : '?';
    }
    out[i] = '\0';
}

/* Sends body (taken; NULL: {"error": error}) with status, and logs the request. */
static void reply(struct msv_admin_api *a, struct evhttp_request *req, int status,
                  const char *error, json_t *body)
{
    struct evbuffer *out = evbuffer_new();
    char *text;
    char *peer = NULL, path[129];
    ev_uint16_t port = 0;

    if (body == NULL)
        body = json_pack("{s:s}", "error", error ? error : "");
    text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(body);
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
    loggable_path(req, path);
    msv_log(MSV_LOG_INFO, "admin_request", "method=%s path=\"%s\" status=%d peer=%s",
            method_name(req), path, status, peer != NULL ? peer : "-");
    atomic_fetch_add(&a->srv->m.admin_requests, 1);
    if (out == NULL || text == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
    } else {
        evbuffer_add_printf(out, "%s\n", text);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        evhttp_send_reply(req, status, NULL, out);
    }
    free(text);
    if (out != NULL)
        evbuffer_free(out);
}

/*
 * 1 if req bears the token and the method wanted; otherwise answered (401, 429 or 405) and 0.
 * The token is checked first, so that nothing about the API shows without it.
 */
static int admit(struct msv_admin_api *a, struct evhttp_request *req, enum evhttp_cmd_type want)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    uint8_t hash[crypto_generichash_BYTES];
    int64_t now = msv_mono_ms();
    int ok;

    if (now - a->window_start_ms >= ADMIN_WINDOW_MS) {
        a->window_start_ms = now;
        a->failures = 0;
    }
    if (a->failures >= ADMIN_FAILURES_MAX) {
        reply(a, req, 429, "too many failed authentications; wait a minute", NULL);
        return 0;
    }
    ok = auth != NULL && strncmp(auth, "Bearer ", 7) == 0;
    if (ok)
        crypto_generichash(hash, sizeof(hash), (const uint8_t *)auth + 7, strlen(auth + 7), NULL,
                           0);
    ok = ok && sodium_memcmp(hash, a->token_hash, sizeof(hash)) == 0;
    if (!ok) {
        a->failures++;
        atomic_fetch_add(&a->srv->m.admin_unauthorized, 1);
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"missived\"");
        reply(a, req, 401, "a valid bearer token is required", NULL);
        return 0;
    }
    if (evhttp_request_get_command(req) != want) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          want == EVHTTP_REQ_GET ? "GET" : "POST");
        reply(a, req, 405, want == EVHTTP_REQ_GET ? "use GET" : "use POST", NULL);
        return 0;
    }
    return 1;
}

/* ---- what the API and missive-admin show alike ------------------------------------------- */

static void iso_ms(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || gmtime_r(&t, &tm) == NULL)
        snprintf(out, 32, "-");
    else
        strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *msv_admin_stats_json(const struct msv_store_stats *st)
{
    char oldest[32];

    iso_ms(st->oldest_queued_ms, oldest);
    return json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:I}", "accounts",
        (json_int_t)st->accounts, "suspended", (json_int_t)st->suspended, "devices",
        (json_int_t)st->devices, "waiting_devices", (json_int_t)st->pending_devices, "queued",
        (json_int_t)st->queued, "queued_bytes", (json_int_t)st->queued_bytes, "oldest_queued",
        oldest, "attachments", (json_int_t)st->blobs, "attachment_bytes",
        (json_int_t)st->blob_bytes, "log_leaves", (json_int_t)st->log_leaves, "one_time_prekeys",
        (json_int_t)st->one_time_prekeys, "database_bytes", (json_int_t)st->database_bytes);
}

json_t *msv_admin_account_json(const struct msv_account_summary *x)
{
    char created[32];

    iso_ms(x->created_ms, created);
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "handle", x->handle,
                     "created", created, "devices", (json_int_t)x->devices, "waiting",
                     (json_int_t)x->pending, "queued", (json_int_t)x->queued, "queued_bytes",
                     (json_int_t)x->queued_bytes, "sending", (json_int_t)x->sending,
                     "sending_bytes", (json_int_t)x->sending_bytes, "attachment_bytes",
                     (json_int_t)x->attachment_bytes, "suspended", x->suspended);
}

/* ---- the endpoints ----------------------------------------------------------------------- */

static void on_reload(struct evhttp_request *req, void *arg)
{
    struct msv_admin_api *a = arg;

    if (!admit(a, req, EVHTTP_REQ_POST))
        return;
    /* the main loop's SIGHUP handler does the reload, exactly as for the signal */
    if (kill(getpid(), SIGHUP) != 0)
        reply(a, req, 500, "the reload could not be asked for", NULL);
    else
        reply(a, req, 202, NULL, json_pack("{s:s}", "reload", "requested"));
}

/* The handle a disconnect's body names, or NULL (and answered 400/413). */
static char *body_handle(struct msv_admin_api *a, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char body[ADMIN_BODY_MAX], *handle = NULL;
    json_t *j = NULL, *h;

    if (len > sizeof(body)) {
        reply(a, req, 413, "the body is at most 1024 bytes", NULL);
        return NULL;
    }
    if (evbuffer_copyout(in, body, len) == (ev_ssize_t)len)
        j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    h = json_is_object(j) && json_object_size(j) == 1 ? json_object_get(j, "handle") : NULL;
    if (json_is_string(h) && json_string_length(h) > 0 && json_string_length(h) <= MSV_HANDLE_MAX &&
        strlen(json_string_value(h)) == json_string_length(h))
        handle = strdup(json_string_value(h));
    json_decref(j);
    if (handle == NULL)
        reply(a, req, 400, "the body must be {\"handle\": HANDLE}", NULL);
    return handle;
}

static void on_disconnect(struct evhttp_request *req, void *arg)
{
    struct msv_admin_api *a = arg;
    struct msv_server *s = a->srv;
    struct msv_store *st = s->store;
    uint64_t account_id = 0;
    char *handle, *hash = NULL;
    int nodes = 1;
    msv_err err;

    if (!admit(a, req, EVHTTP_REQ_POST) || (handle = body_handle(a, req)) == NULL)
        return;
    err = st->ops->account_get(st->impl, handle, &account_id, &hash);
    free(hash);
    if (err == MSV_ERR_NOT_FOUND) {
        reply(a, req, 404, "no account has that handle", NULL);
    } else if (err != MSV_OK) {
        reply(a, req, 503, "storage is unavailable; try again later", NULL);
    } else {
        /* every node through the cluster's Redis (this one too), else this node alone */
        if (s->cfg.redis[0] == '\0' ||
            msv_cluster_publish_disconnect(s->cfg.redis, account_id, &nodes) != MSV_OK) {
            nodes = 1;
            msv_server_account_disconnect(s, account_id);
        }
        reply(a, req, 200, NULL,
              json_pack("{s:s, s:b, s:i}", "handle", handle, "disconnected", 1, "nodes", nodes));
    }
    free(handle);
}

static void on_stats(struct evhttp_request *req, void *arg)
{
    struct msv_admin_api *a = arg;
    struct msv_store *st = a->srv->store;
    struct msv_store_stats stats = {0};

    if (!admit(a, req, EVHTTP_REQ_GET))
        return;
    if (st->ops->stats(st->impl, &stats) != MSV_OK)
        reply(a, req, 503, "storage is unavailable; try again later", NULL);
    else
        reply(a, req, 200, NULL, msv_admin_stats_json(&stats));
}

/* limit and after of /admin/accounts' query; 0 (answered 400) if either is wrong. */
static int page_of(struct msv_admin_api *a, struct evhttp_request *req, size_t *limit, char *after,
                   size_t after_len)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params = {0};
    const char *v;
    char *end = NULL;
    int ok = 1;

    *limit = ACCOUNTS_PAGE_DEFAULT;
    after[0] = '\0';
    if (query != NULL && evhttp_parse_query_str(query, &params) != 0)
        ok = 0;
    if (ok && (v = evhttp_find_header(&params, "limit")) != NULL) {
        errno = 0;
        *limit = v[0] >= '0' && v[0] <= '9' ? strtoul(v, &end, 10) : 0;
        ok =
            end != NULL && *end == '\0' && errno == 0 && *limit >= 1 && *limit <= ACCOUNTS_PAGE_MAX;
    }
    if (ok && (v = evhttp_find_header(&params, "after")) != NULL)
        ok = strlen(v) < after_len && snprintf(after, after_len, "%s", v) >= 0;
    evhttp_clear_headers(&params);
    if (!ok)
        reply(a, req, 400, "limit is a number from 1 to 1000; after a handle", NULL);
    return ok;
}

static int by_handle(const void *x, const void *y)
{
    return strcmp(((const struct msv_account_summary *)x)->handle,
                  ((const struct msv_account_summary *)y)->handle);
}

static void on_accounts(struct evhttp_request *req, void *arg)
{
    struct msv_admin_api *a = arg;
    struct msv_store *st = a->srv->store;
    struct msv_account_summary *list = NULL;
    char after[MSV_HANDLE_MAX + 1];
    size_t n = 0, limit = 0, i = 0;
    json_t *page, *items;

    if (!admit(a, req, EVHTTP_REQ_GET) || !page_of(a, req, &limit, after, sizeof(after)))
        return;
    if (st->ops->account_list(st->impl, &list, &n) != MSV_OK) {
        reply(a, req, 503, "storage is unavailable; try again later", NULL);
        return;
    }
    qsort(list, n, sizeof(*list), by_handle);
    while (i < n && after[0] != '\0' && strcmp(list[i].handle, after) <= 0)
        i++;
    items = json_array();
    for (; items != NULL && i < n && json_array_size(items) < limit; i++)
        json_array_append_new(items, msv_admin_account_json(&list[i]));
    page = json_pack("{s:o, s:s?}", "accounts", items, "next",
                     i < n && i > 0 ? list[i - 1].handle : NULL);
    msv_account_summaries_free(list, n);
    if (page == NULL)
        reply(a, req, 500, "out of memory", NULL);
    else
        reply(a, req, 200, NULL, page);
}

/* Any other path: 404 (the admin API's paths without a token are 401 instead). */
static void on_unknown(struct evhttp_request *req, void *arg)
{
    struct msv_admin_api *a = arg;

    reply(a, req, 404, "no such path", NULL);
}

void msv_admin_api_register(struct msv_admin_api *a, struct evhttp *http)
{
    evhttp_set_cb(http, "/admin/reload", on_reload, a);
    evhttp_set_cb(http, "/admin/disconnect", on_disconnect, a);
    evhttp_set_cb(http, "/admin/stats", on_stats, a);
    evhttp_set_cb(http, "/admin/accounts", on_accounts, a);
    evhttp_set_gencb(http, on_unknown, a);
}
