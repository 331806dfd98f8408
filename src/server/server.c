#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/thread.h>
#include <sodium.h>

#include "missive/ptree.h"
#include "missive/util.h"
#include "server/control.h"
#include "server/log.h"
#include "server/notify.h"
#include "server/tls.h"
#include "util/privdir.h"

#define OUTPUT_HIGH (256u * 1024u) /* stop pushing deliveries above this much unsent output */
#define OUTPUT_MAX (1u << 20)      /* stop reading requests above this: answers must drain first */
#define DIRCACHE_ENTRIES 100000    /* handles whose devices sends are checked against */
#define FETCH_RETRY_MS 1000        /* a failed queue read is tried again this much later */
#define RECHECK_WAIT_MS 1000       /* a device's check the store could not answer: asked again */
#define RECHECK_WAIT_MAX_MS 30000  /* the wait doubling while the store keeps failing */
#define RECHECK_IDS_MAX 4096       /* devices waiting for their check again, per worker */
#define STOP_DRAIN_MS 2000         /* a stop waits this long at most for answers to be written */

#define ACCEPT_LOG_INTERVAL_MS 10000  /* accept failures are logged at most this often */
#define DB_FAULT_LOG_INTERVAL_MS 1000 /* each kind of database failure at most this often */

int64_t msv_server_now_ms(struct msv_server *s)
{
    return msv_config_now_ms(&s->cfg);
}

/* ---- output --------------------------------------------------------------------------- */

size_t msv_server_answer_max(const struct msv_server *s)
{
    return s->cfg.frame_max < MSV_FRAME_MAX_DEFAULT ? (size_t)s->cfg.frame_max
                                                    : MSV_FRAME_MAX_DEFAULT;
}

void msv_conn_send_frame(struct msv_conn_state *c, const msv_frame *f)
{
    size_t max = f->body_case == MSV__WIRE__FRAME__BODY_DELIVER ? c->w->srv->cfg.frame_max
                                                                : msv_server_answer_max(c->w->srv);
    uint8_t *buf = NULL;
    size_t len = 0;

    if (msv_frame_encode(f, max, &buf, &len) != MSV_OK) {
        /* an answer too large for a frame is refused in words, never dropped in silence */
        atomic_fetch_add(&c->w->srv->m.answers_too_big, 1);
        msv_log(MSV_LOG_ERROR, "answer_too_big", "peer=%s body=%d", c->peer, (int)f->body_case);
        if (f->body_case != MSV__WIRE__FRAME__BODY_ERROR)
            msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                                "the answer would be larger than the largest frame; ask for less "
                                "at a time");
        return;
    }
    bufferevent_write(c->bev, buf, len);
    free(buf);
}

/* An Error; replaced: it closes c because a newer connection of its device took its
 * deliveries (Error.replaced). */
static void send_error_frame(struct msv_conn_state *c, uint64_t request_id, int code,
                             const char *message, int replaced)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Error e = MSV__WIRE__ERROR__INIT;

    /* clients know the codes of ErrorCode only (docs/wire.md) */
    if (protobuf_c_enum_descriptor_get_value(&msv__wire__error_code__descriptor, code) == NULL) {
        msv_log(MSV_LOG_ERROR, "error_code_unknown", "code=%d", code);
        code = E_INVALID;
    }
    e.code = (Msv__Wire__ErrorCode)code;
    e.message.data = (uint8_t *)message;
    e.message.len = strlen(message);
    e.replaced = replaced != 0;
    f.request_id = request_id;
    f.body_case = MSV__WIRE__FRAME__BODY_ERROR;
    f.error = &e;
    msv_conn_send_frame(c, &f);
}

void msv_conn_send_error(struct msv_conn_state *c, uint64_t request_id, int code,
                         const char *message)
{
    send_error_frame(c, request_id, code, message, 0);
}

void msv_conn_send_ok(struct msv_conn_state *c, uint64_t request_id)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Ok ok = MSV__WIRE__OK__INIT;

    f.request_id = request_id;
    f.body_case = MSV__WIRE__FRAME__BODY_OK;
    f.ok = &ok;
    msv_conn_send_frame(c, &f);
}

/* ---- connections ---------------------------------------------------------------------- */

/* Counts a connection of key in map in (+1) or out (-1); 0 if key has limit (not counted). */
static int count_in(struct msv_server *s, struct msv_u64map *map, uint64_t key, uintptr_t limit,
                    int delta)
{
    uintptr_t n;
    int ok = 1;

    pthread_mutex_lock(&s->limits_lock);
    n = (uintptr_t)msv_u64map_get(map, key);
    if (delta > 0 && n >= limit)
        ok = 0;
    else if (delta > 0)
        ok = msv_u64map_put(map, key, (void *)(n + 1)) == MSV_OK;
    else if (n <= 1)
        msv_u64map_del(map, key);
    else if (msv_u64map_put(map, key, (void *)(n - 1)) != MSV_OK)
        ok = 0; /* cannot happen: replacing a present key allocates nothing */
    pthread_mutex_unlock(&s->limits_lock);
    return ok;
}

/* Counts a connection from address key in (+1) or out (-1); 0 if key is at its limit. */
static int count_address(struct msv_server *s, uint64_t key, int delta)
{
    return count_in(s, &s->conns_per_address, key, s->cfg.max_conns_per_address, delta);
}

int msv_server_count_requests_only(struct msv_server *s, uint64_t device_id, int delta)
{
    int ok = count_in(s, &s->requests_only_per_device, device_id, s->cfg.max_request_conns, delta);

    if (ok && delta > 0)
        atomic_fetch_add(&s->m.requests_only_open, 1);
    else if (delta < 0)
        atomic_fetch_sub(&s->m.requests_only_open, 1);
    else
        atomic_fetch_add(&s->m.requests_only_refused, 1);
    /* the cluster tells this node of the device's removal on another */
    if (ok || delta < 0)
        msv_cluster_watch(s->cluster, device_id, delta > 0);
    return ok;
}

static void forget_inflight(struct msv_worker *w, const struct msv_conn_state *c);
static int backlog_full(const struct msv_worker *w);

static void stop_when_written(struct msv_worker *w);

static void conn_free(struct msv_conn_state *c)
{
    struct msv_worker *w = c->w;
    struct msv_server *s = w->srv;

    count_address(s, c->peer_key, -1);
    if (c->requests_only != 0)
        (void)msv_server_count_requests_only(s, c->requests_only, -1);
    msv_provision_shared_forget(s, c);
    msv_provision_forget(&s->provisions, c);
    if (c->device_id != 0) {
        pthread_mutex_lock(&s->registry_lock);
        if (msv_u64map_get(&s->registry, c->device_id) == c) {
            msv_u64map_del(&s->registry, c->device_id);
            msv_cluster_offline(s->cluster, c->device_id);
        }
        pthread_mutex_unlock(&s->registry_lock);
    }
    for (struct msv_pending_send *p = w->pending_head; p != NULL; p = p->next) {
        if (p->c == c)
            p->c = NULL; /* the send still commits; only its answer is lost */
    }
    for (struct msv_pending_ack *a = w->acks_head; a != NULL; a = a->next) {
        if (a->c == c)
            a->c = NULL;
    }
    forget_inflight(w, c); /* its commit still goes through whole; nobody is answered */
    if (c->commit_paused)
        w->commit_paused--;
    msv_blob_jobs_forget(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->auth_deadline != NULL)
        event_free(c->auth_deadline);
    bufferevent_free(c->bev);
    free(c->handle);
    free(c);
    atomic_fetch_sub(&s->m.connections_open, 1);
}

static void close_after_write(struct bufferevent *bev, void *arg)
{
    struct msv_conn_state *c = arg;

    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void conn_event(struct bufferevent *bev, short what, void *arg);

void msv_conn_close_soon(struct msv_conn_state *c)
{
    /* a peer that stops reading cannot hold the connection open: 10 s to drain */
    struct timeval drain = {10, 0};

    c->closing = 1; /* no pause ends in reading again (commit_answered, resume_paused) */
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_set_timeouts(c->bev, NULL, &drain);
    bufferevent_setcb(c->bev, NULL, close_after_write, conn_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
}

/*
 * The next complete frame in the input buffer: MSV_OK with *f decoded and
 * *used bytes to drain, MSV_ERR_AGAIN if it has not all arrived, or why the
 * stream is unusable.
 */
static msv_err next_frame(struct msv_conn_state *c, struct evbuffer *in, msv_frame **f,
                          size_t *used)
{
    size_t have = evbuffer_get_length(in);
    size_t head = have < MSV_FRAME_HEADER_LEN ? have : MSV_FRAME_HEADER_LEN;
    size_t frame_max = c->w->srv->cfg.frame_max, body_len = 0, need;
    const uint8_t *body = NULL;
    uint8_t *p;
    msv_err err;

    if (have == 0)
        return MSV_ERR_AGAIN;
    /* the header alone first: a bad version or length is refused before any body is kept */
    p = evbuffer_pullup(in, (ssize_t)head);
    err = msv_frame_split(p, head, frame_max, &body, &body_len, used);
    if (err != MSV_ERR_AGAIN || have < MSV_FRAME_HEADER_LEN)
        return err;
    need = MSV_FRAME_HEADER_LEN + ((size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
    if (have < need)
        return MSV_ERR_AGAIN;
    p = evbuffer_pullup(in, (ssize_t)need);
    err = msv_frame_split(p, need, frame_max, &body, &body_len, used);
    return err == MSV_OK ? msv_frame_decode(body, body_len, f) : err;
}

/* The ErrorCode for a frame the stream cannot go on past (msv_frame_split, msv_frame_decode). */
static int frame_error_code(msv_err err)
{
    switch (err) {
    case MSV_ERR_TOO_BIG:
        return E_TOO_BIG;
    case MSV_ERR_PARSE:
        return MSV__WIRE__ERROR_CODE__ERROR_PARSE;
    default: /* an unknown version byte, an empty body */
        return E_INVALID;
    }
}

/*
 * Whether f must wait for c's commits: answers come in the order of the requests, and a
 * request sees what c's earlier sends and acknowledgements changed. An acknowledgement
 * without a request id is never answered and changes nothing a send reads: it and a send
 * behind such acknowledgements only need the answered ones before them answered first.
 */
static int must_wait(const struct msv_conn_state *c, const msv_frame *f)
{
    if (f->body_case == MSV__WIRE__FRAME__BODY_ACK && f->request_id == 0)
        return 0;
    if (f->body_case == MSV__WIRE__FRAME__BODY_SEND)
        return c->answers_waiting > 0;
    return c->commits_waiting > 0;
}

/* Handles every complete frame in the input buffer. */
static void conn_read(struct bufferevent *bev, void *arg)
{
    struct msv_conn_state *c = arg;
    struct msv_server *s = c->w->srv;
    struct evbuffer *in = bufferevent_get_input(bev);

    /* the read timeout ends a silent connection; this one ends a slow one (slowloris) */
    if (c->device_id == 0 &&
        msv_server_now_ms(s) > (c->waits_until_ms > 0
                                    ? c->waits_until_ms
                                    : c->accepted_ms + (int64_t)s->cfg.auth_timeout_s * 1000)) {
        msv_log(MSV_LOG_INFO, "auth_timeout", "peer=%s", c->peer);
        evbuffer_drain(in, evbuffer_get_length(in));
        msv_conn_close_soon(c);
        return;
    }
    for (;;) {
        msv_frame *f = NULL;
        size_t used = 0;
        msv_err err;

        if (evbuffer_get_length(bufferevent_get_output(bev)) > OUTPUT_MAX) {
            /* a client that asks without reading the answers waits for them to drain */
            bufferevent_disable(bev, EV_READ);
            c->reading_paused = 1;
            atomic_fetch_add(&s->m.reads_paused, 1);
            return;
        }
        if (c->w->stopping) {
            /* stopping: what was read is committed and answered; nothing more is read */
            bufferevent_disable(bev, EV_READ);
            return;
        }
        if (backlog_full(c->w)) {
            /* the next group commit is full: this request waits for it to go (commit_start) */
            bufferevent_disable(bev, EV_READ);
            if (!c->commit_paused) {
                c->commit_paused = 1;
                c->w->commit_paused++;
                atomic_fetch_add(&s->m.commit_backlog_paused, 1);
            }
            return;
        }
        err = next_frame(c, in, &f, &used);
        if (err == MSV_ERR_AGAIN)
            return;
        if (err == MSV_OK && must_wait(c, f)) {
            /* answered only after this connection's sends and acknowledgements waiting for
             * their commit, whose answers come first (answer_sends, answer_acks) */
            msv_frame_free(f);
            bufferevent_disable(bev, EV_READ);
            c->order_paused = 1;
            return;
        }
        if (err != MSV_OK) {
            /* the stream cannot be trusted past a bad frame: say why, then hang up */
            atomic_fetch_add(&s->m.frames_rejected, 1);
            msv_log(MSV_LOG_INFO, "frame_rejected", "peer=%s reason=\"%s\"", c->peer,
                    msv_strerror(err));
            msv_conn_send_error(c, 0, frame_error_code(err), msv_strerror(err));
            msv_conn_close_soon(c);
            return;
        }
        evbuffer_drain(in, used);
        atomic_fetch_add(&s->m.frames_in, 1);
        msv_handle_frame(c, f);
        msv_frame_free(f);
        if ((bufferevent_get_enabled(bev) & EV_READ) == 0)
            return; /* the handler is closing the connection */
    }
}

static void conn_write(struct bufferevent *bev, void *arg)
{
    struct msv_conn_state *c = arg;

    if (c->reading_paused) {
        c->reading_paused = 0;
        bufferevent_enable(bev, EV_READ);
        conn_read(bev, c); /* requests that waited in the input buffer */
    }
    if (c->device_id != 0)
        msv_conn_pump(c);
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    struct msv_conn_state *c = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & BEV_EVENT_TIMEOUT)
        msv_log(MSV_LOG_DEBUG, "conn_timeout", "peer=%s", c->peer);
    msv_log(MSV_LOG_DEBUG, "conn_close", "peer=%s device=%llu", c->peer,
            (unsigned long long)c->device_id);
    conn_free(c);
}

static uint64_t address_key(const struct sockaddr *sa, char *text, size_t text_len)
{
    uint8_t h[8];
    uint64_t k = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &in->sin_addr, text, (socklen_t)text_len);
        crypto_generichash(h, sizeof(h), (const uint8_t *)&in->sin_addr, 4, NULL, 0);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, text, (socklen_t)text_len);
        /* an IPv6 client controls its /64: limit per /64 */
        crypto_generichash(h, sizeof(h), (const uint8_t *)&in6->sin6_addr, 8, NULL, 0);
    } else {
        snprintf(text, text_len, "unknown");
        return 1;
    }
    for (int i = 0; i < 8; i++)
        k = k << 8 | h[i];
    return k ? k : 1;
}

/*
 * auth_timeout_s after accept, a connection that has not authenticated ends,
 * wherever it is: a TLS handshake trickled a byte at a time never reaches
 * conn_read, and each byte would restart the read timeout (slowloris).
 */
static void on_auth_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct msv_conn_state *c = arg;

    (void)fd;
    (void)what;
    if (c->device_id != 0)
        return;
    atomic_fetch_add(&c->w->srv->m.auth_timeouts, 1);
    msv_log(MSV_LOG_INFO, "auth_timeout", "peer=%s", c->peer);
    conn_free(c);
}

void msv_conn_waits_for_link(struct msv_conn_state *c, int64_t ms)
{
    struct timeval wait = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    c->waits_until_ms = msv_server_now_ms(c->w->srv) + ms;
    if (c->auth_deadline != NULL)
        (void)evtimer_add(c->auth_deadline, &wait); /* moved: the pending deadline is replaced */
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct msv_worker *w = arg;
    struct msv_server *s = w->srv;
    struct msv_conn_state *c = calloc(1, sizeof(*c));
    SSL *ssl = SSL_new(s->tls);
    struct timeval handshake = {(time_t)s->cfg.auth_timeout_s, 0};

    (void)l;
    (void)len;
    if (c == NULL || ssl == NULL || atomic_load(&s->stopping)) {
        free(c);
        SSL_free(ssl);
        evutil_closesocket(fd);
        return;
    }
    c->w = w;
    c->accepted_ms = msv_server_now_ms(s);
    c->peer_key = address_key(sa, c->peer, sizeof(c->peer));
    if (!count_address(s, c->peer_key, +1)) {
        /* a flood from one address: it cannot hold more of the server */
        atomic_fetch_add(&s->m.connections_refused, 1);
        msv_log(MSV_LOG_DEBUG, "connection_refused", "peer=%s", c->peer);
        SSL_free(ssl);
        evutil_closesocket(fd);
        free(c);
        return;
    }
    /* frames are small and each is awaited: no Nagle delay (it cost 40 ms at p99) */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    c->bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    c->auth_deadline = evtimer_new(w->base, on_auth_deadline, c);
    if (c->bev == NULL || c->auth_deadline == NULL || evtimer_add(c->auth_deadline, &handshake)) {
        count_address(s, c->peer_key, -1);
        if (c->auth_deadline != NULL)
            event_free(c->auth_deadline);
        if (c->bev != NULL) {
            bufferevent_free(c->bev); /* closes fd and frees ssl */
        } else {
            SSL_free(ssl);
            evutil_closesocket(fd);
        }
        free(c);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, conn_read, conn_write, conn_event, c);
    /* stop reading once a full frame is buffered and not yet handled */
    bufferevent_setwatermark(c->bev, EV_READ, 0, s->cfg.frame_max + MSV_FRAME_HEADER_LEN);
    bufferevent_setwatermark(c->bev, EV_WRITE, OUTPUT_HIGH / 4, 0);
    bufferevent_set_timeouts(c->bev, &handshake, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add(&s->m.connections_open, 1);
    atomic_fetch_add(&s->m.connections_total, 1);
}

/*
 * accept() failed with something other than "try again" (EMFILE, ENFILE,
 * ENOBUFS...): the listening socket stays readable, so accepting again at
 * once would spin. Accepting rests for accept_pause_ms while connections
 * close and descriptors come back; the log gets one line per interval.
 */
void msv_server_accept_failed(struct msv_server *s, struct evconnlistener *l,
                              struct msv_accept_pause *p, const char *which)
{
    int err = EVUTIL_SOCKET_ERROR();
    int64_t now = msv_server_now_ms(s);
    struct timeval pause = {(time_t)(s->cfg.accept_pause_ms / 1000),
                            (suseconds_t)(s->cfg.accept_pause_ms % 1000) * 1000};

    evconnlistener_disable(l);
    if (evtimer_add(p->resume, &pause) != 0)
        evconnlistener_enable(l); /* cannot happen: the timer was made with the listener */
    atomic_fetch_add(&s->m.accept_paused, 1);
    p->unlogged++;
    if (p->logged_ms == 0 || now - p->logged_ms >= ACCEPT_LOG_INTERVAL_MS) {
        msv_log(MSV_LOG_ERROR, "accept_paused", "port=%s reason=\"%s\" pauses=%llu pause_ms=%u",
                which, strerror(err), (unsigned long long)p->unlogged, s->cfg.accept_pause_ms);
        p->logged_ms = now;
        p->unlogged = 0;
    }
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct msv_worker *w = arg;

    msv_server_accept_failed(w->srv, l, &w->accept_pause, "client");
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct msv_worker *w = arg;

    (void)fd;
    (void)what;
    if (w->listener != NULL && !atomic_load(&w->srv->stopping))
        evconnlistener_enable(w->listener);
}

/* ---- the database's failures ----------------------------------------------------------- */

static const char *const db_fault_names[MSV_STORE_FAULT_KINDS] = {
    "busy", "database unavailable", "storage full", "other",
    "no connection of the pool free within [store] pool_wait_ms"};

/*
 * The store's fault hook: counted by kind (database_faults_*_total), and logged with the
 * SQLSTATE and the database's words, each kind at most once a second (the line counts those
 * left out since), so that a database down under load does not flood the log.
 */
static void on_db_fault(void *ctx, enum msv_store_fault kind, const char *sqlstate,
                        const char *message)
{
    struct msv_server *s = ctx;
    char words[301];
    size_t i;
    int64_t now = msv_mono_ms(), last;

    if ((unsigned)kind >= MSV_STORE_FAULT_KINDS)
        kind = MSV_STORE_FAULT_OTHER;
    atomic_fetch_add(&s->m.db_faults[kind], 1);
    last = atomic_load(&s->db_fault_logged_ms[kind]);
    if ((last != 0 && now - last < DB_FAULT_LOG_INTERVAL_MS) ||
        !atomic_compare_exchange_strong(&s->db_fault_logged_ms[kind], &last, now)) {
        atomic_fetch_add(&s->db_fault_unlogged[kind], 1);
        return;
    }
    /* one line, no quotes: libpq's words end in a newline and may hold anything */
    for (i = 0; i + 1 < sizeof(words) && message[i] != '\0'; i++)
        words[i] = message[i] == '"' ? '\'' : (unsigned char)message[i] < 0x20 ? ' ' : message[i];
    while (i > 0 && words[i - 1] == ' ')
        i--;
    words[i] = '\0';
    msv_log(MSV_LOG_ERROR, "database_error",
            "cause=\"%s\" sqlstate=%s message=\"%s\" unlogged=%llu", db_fault_names[kind],
            sqlstate[0] != '\0' ? sqlstate : "none", words,
            (unsigned long long)atomic_exchange(&s->db_fault_unlogged[kind], 0));
}

/* ---- delivery ------------------------------------------------------------------------- */

/* Pushes what a read brought (recs is freed); the read was asked for limit records. */
static void push_recs(struct msv_conn_state *c, struct msv_queue_rec *recs, size_t n, size_t limit)
{
    c->more = n == limit; /* a full read: there may be more behind it */
    for (size_t i = 0; i < n; i++) {
        Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
        Msv__Wire__Deliver d = MSV__WIRE__DELIVER__INIT;

        d.queue_id = recs[i].id;
        d.sender_device = recs[i].sender_device;
        d.sender_handle.data = (uint8_t *)recs[i].sender_handle;
        d.sender_handle.len = strlen(recs[i].sender_handle);
        d.suite = recs[i].suite;
        d.ciphertext.data = recs[i].ciphertext;
        d.ciphertext.len = recs[i].ciphertext_len;
        d.enqueued_at_ms = (uint64_t)recs[i].enqueued_ms;
        f.body_case = MSV__WIRE__FRAME__BODY_DELIVER;
        f.deliver = &d;
        msv_conn_send_frame(c, &f);
        c->last_sent = recs[i].id;
        c->inflight++;
    }
    atomic_fetch_add(&c->w->srv->m.envelopes_delivered, n);
    msv_queue_recs_free(recs, n);
    /* a QueueSync is answered after the last envelope the queue held when it came: a short
     * read, or one that reached that envelope (under steady inflow every read can be full) */
    if (c->sync_request != 0 && (!c->more || c->last_sent >= c->sync_last)) {
        msv_conn_send_ok(c, c->sync_request);
        c->sync_request = 0;
    }
}

/* Whether c's queue is to be read now: it may hold more, and c has room for it. */
static int wants_read(const struct msv_conn_state *c)
{
    return c->device_id != 0 && c->requests_only == 0 && c->more &&
           c->inflight < c->w->srv->cfg.delivery_window &&
           evbuffer_get_length(bufferevent_get_output(c->bev)) <= OUTPUT_HIGH;
}

/*
 * Pushes the queues of n connections of one worker, read together: one
 * round trip to the store for all of them (a PostgreSQL store is a network
 * away). Connections with nothing new to read are skipped; cs is reordered.
 */
static void pump_all(struct msv_conn_state **cs, size_t n)
{
    struct msv_queue_read one, *reads = n > 1 ? calloc(n, sizeof(*reads)) : &one;
    struct msv_server *s;
    size_t k = 0;

    if (n == 0 || reads == NULL)
        return; /* out of memory: the next wake-up or acknowledgement reads them */
    s = cs[0]->w->srv;
    /* the ones to read move to the front of cs, in step with reads */
    for (size_t i = 0; i < n; i++) {
        if (!wants_read(cs[i]))
            continue;
        reads[k] = (struct msv_queue_read){.device_id = cs[i]->device_id,
                                           .after_id = cs[i]->last_sent,
                                           .limit = s->cfg.delivery_window - cs[i]->inflight};
        cs[k++] = cs[i];
    }
    if (k > 0 &&
        s->store->ops->queue_fetch_many(s->store->impl, reads, k, msv_server_now_ms(s)) != MSV_OK) {
        struct timeval later = {FETCH_RETRY_MS / 1000, (FETCH_RETRY_MS % 1000) * 1000};

        atomic_store(&s->fetch_failing, 1); /* /health says so until a read succeeds */
        atomic_fetch_add(&s->m.queue_fetch_failures, 1);
        msv_log(MSV_LOG_ERROR, "queue_fetch_failed", "devices=%zu retry_ms=%d", k, FETCH_RETRY_MS);
        /* no wake-up may come for what is waiting: the worker reads every queue again soon */
        if (!evtimer_pending(cs[0]->w->fetch_retry_ev, NULL))
            evtimer_add(cs[0]->w->fetch_retry_ev, &later);
        k = 0;
    } else if (k > 0) {
        atomic_store(&s->fetch_failing, 0);
    }
    for (size_t i = 0; i < k; i++)
        push_recs(cs[i], reads[i].recs, reads[i].count, reads[i].limit);
    if (reads != &one)
        free(reads);
}

/* Sets one of w's flags read by on_wake (under wake_lock) and wakes it. */
static void wake_flagged(struct msv_worker *w, int *flag)
{
    pthread_mutex_lock(&w->wake_lock);
    *flag = 1;
    pthread_mutex_unlock(&w->wake_lock);
    event_active(w->wake_ev, EV_READ, 0);
}

/* A queue read failed a while ago: every connection of the worker reads its queue again. */
static void on_fetch_retry(evutil_socket_t fd, short what, void *arg)
{
    struct msv_worker *w = arg;

    (void)fd;
    (void)what;
    wake_flagged(w, &w->wake_lost);
}

void msv_conn_pump(struct msv_conn_state *c)
{
    /* nothing new since the last read came back short: no read (every wake-up sets more) */
    pump_all(&c, 1);
}

/* Wakes the worker holding device_id's connection; 0 if no worker of this node holds it. */
static int wake_worker(struct msv_server *s, uint64_t device_id)
{
    struct msv_conn_state *c;
    struct msv_worker *w = NULL;

    pthread_mutex_lock(&s->registry_lock);
    c = msv_u64map_get(&s->registry, device_id);
    if (c != NULL)
        w = c->w;
    pthread_mutex_unlock(&s->registry_lock);
    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->wake_lock);
    if (w->wake_count == w->wake_cap) {
        size_t cap = w->wake_cap ? w->wake_cap * 2 : 64;
        uint64_t *bigger = realloc(w->wake_devices, cap * sizeof(*bigger));

        if (bigger == NULL) {
            w->wake_lost = 1; /* every connection of the worker reads its queue instead */
            pthread_mutex_unlock(&w->wake_lock);
            event_active(w->wake_ev, EV_READ, 0);
            return 1;
        }
        w->wake_devices = bigger;
        w->wake_cap = cap;
    }
    w->wake_devices[w->wake_count++] = device_id;
    pthread_mutex_unlock(&w->wake_lock);
    event_active(w->wake_ev, EV_READ, 0);
    return 1;
}

/* Why a connection is closed under a device, as its Error says (compared by address). */
const char msv_server_removed_text[] = "this device was removed from its account";
static const char suspended_text[] = "this account is suspended";
static const char disconnected_text[] = "the server's operator closed this connection";
static const char deleted_text[] = "this account was deleted";
static const char replaced_text[] =
    "this device connected again, and the newer connection takes its deliveries (another "
    "program of it, or one whose connection was lost): this one is closed";

/* Hands one worker an order; 0 if there was no memory for it. */
static int post_close(struct msv_worker *w, const struct msv_close_order *o)
{
    int ok = 1;

    pthread_mutex_lock(&w->wake_lock);
    if (w->close_count == w->close_cap) {
        size_t cap = w->close_cap ? w->close_cap * 2 : 16;
        struct msv_close_order *bigger = realloc(w->closes, cap * sizeof(*bigger));

        if (bigger != NULL) {
            w->closes = bigger;
            w->close_cap = cap;
        }
    }
    if (w->close_count < w->close_cap)
        w->closes[w->close_count++] = *o;
    else
        ok = 0;
    pthread_mutex_unlock(&w->wake_lock);
    return ok;
}

/* Every worker checks each of its connections against the store (its next wake-up). */
void msv_server_recheck_all(struct msv_server *s)
{
    for (unsigned i = 0; i < s->worker_count; i++)
        wake_flagged(&s->workers[i], &s->workers[i].recheck);
}

/*
 * Connections live on the worker that accepted them, and only its thread may
 * touch them: each worker gets the order and carries it out on its wake-up.
 */
static void post_close_all(struct msv_server *s, const struct msv_close_order *o)
{
    int lost = 0;

    for (unsigned i = 0; i < s->worker_count; i++) {
        lost |= !post_close(&s->workers[i], o);
        event_active(s->workers[i].wake_ev, EV_READ, 0);
    }
    if (lost) /* no memory for the order: every connection is checked against the store */
        msv_server_recheck_all(s);
}

void msv_server_close_conns(struct msv_server *s, uint64_t device_id, uint64_t account_id,
                            const struct msv_conn_state *keep, const char *why)
{
    struct msv_close_order o = {.device_id = device_id,
                                .account_id = account_id,
                                .keep = keep,
                                .keep_seq = keep != NULL ? keep->seq : 0,
                                .why = why};

    post_close_all(s, &o);
}

void msv_server_close_older(struct msv_server *s, uint64_t device_id, uint64_t order)
{
    struct msv_close_order o = {.device_id = device_id, .before_order = order};

    post_close_all(s, &o);
}

void msv_server_recheck_device(struct msv_server *s, uint64_t device_id)
{
    struct msv_close_order o = {.device_id = device_id, .check = 1};

    post_close_all(s, &o);
}

void msv_server_account_suspended(struct msv_server *s, uint64_t account_id)
{
    atomic_fetch_add(&s->m.suspensions_in, 1);
    /* a connection between two frames looks at its account once more */
    atomic_fetch_add(&s->suspension_gen, 1);
    msv_server_close_conns(s, 0, account_id, NULL, suspended_text);
}

void msv_server_account_disconnect(struct msv_server *s, uint64_t account_id)
{
    msv_server_close_conns(s, 0, account_id, NULL, disconnected_text);
}

void msv_server_wake_local(struct msv_server *s, uint64_t device_id)
{
    (void)wake_worker(s, device_id); /* offline: the queue waits for its next connection */
}

void msv_server_wake(struct msv_server *s, uint64_t device_id)
{
    if (device_id & MSV_WAKE_CLOSE) {
        /* here, and on every other node: a connection may be open on any of them */
        msv_server_close_conns(s, device_id & ~MSV_WAKE_CLOSE, 0, NULL, msv_server_removed_text);
        if (s->cluster != NULL)
            msv_cluster_wake(s->cluster, device_id & ~MSV_WAKE_CLOSE, 1);
        return;
    }
    /* not here: perhaps on another node, which the cluster tells */
    if (!wake_worker(s, device_id) && s->cluster != NULL)
        msv_cluster_wake(s->cluster, device_id, 0);
}

/* Ends an authenticated connection at once: it leaves the registry, then says why and closes. */
static void revoke_conn(struct msv_conn_state *c, const char *why)
{
    struct msv_server *s = c->w->srv;

    pthread_mutex_lock(&s->registry_lock);
    if (msv_u64map_get(&s->registry, c->device_id) == c) {
        msv_u64map_del(&s->registry, c->device_id);
        msv_cluster_offline(s->cluster, c->device_id);
    }
    pthread_mutex_unlock(&s->registry_lock);
    atomic_fetch_add(&s->m.connections_revoked, 1);
    /* a device reconnecting replaces its connection often: that is no news */
    msv_log(why != NULL ? MSV_LOG_INFO : MSV_LOG_DEBUG,
            why == NULL                ? "conn_replaced"
            : why == suspended_text    ? "suspended_closed"
            : why == disconnected_text ? "disconnected_closed"
            : why == deleted_text      ? "deleted_closed"
                                       : "removed_closed",
            "peer=%s device=%llu", c->peer, (unsigned long long)c->device_id);
    c->device_id = 0;
    /* replaced: said so apart from the words, which are for people */
    send_error_frame(c, 0, E_AUTH, why != NULL ? why : replaced_text, why == NULL);
    msv_conn_close_soon(c);
}

/*
 * Closes c if its device was removed or (with suspension) its account suspended, the store's
 * word; MSV_OK once the store answered.
 */
static msv_err recheck_conn(struct msv_conn_state *c, int suspension)
{
    struct msv_store *st = c->w->srv->store;
    struct msv_device_rec dev = {0};
    int suspended = 0;
    msv_err err = st->ops->device_get(st->impl, c->device_id, &dev);

    if (err == MSV_ERR_NOT_FOUND || (err == MSV_OK && dev.account_id != c->account_id)) {
        revoke_conn(c, msv_server_removed_text);
        err = MSV_OK;
    } else if (err == MSV_OK && suspension &&
               (err = st->ops->account_suspended(st->impl, c->account_id, &suspended)) == MSV_OK &&
               suspended) {
        revoke_conn(c, suspended_text);
    }
    msv_device_rec_clear(&dev);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err; /* an account gone: its devices went too */
}

/*
 * A device's check the store could not answer is asked again (recheck_retry_ev), after
 * RECHECK_WAIT_MS, the wait doubling while the store keeps failing up to RECHECK_WAIT_MAX_MS;
 * at most RECHECK_IDS_MAX devices a worker (past that one is given up, logged: its connection
 * waits for a sweep or its end).
 */
static void recheck_later(struct msv_worker *w, uint64_t device_id)
{
    size_t i = 0;

    while (i < w->recheck_n && w->recheck_ids[i] != device_id)
        i++;
    if (i == w->recheck_n) {
        uint64_t *ids = w->recheck_n < RECHECK_IDS_MAX
                            ? realloc(w->recheck_ids, (w->recheck_n + 1) * sizeof(*ids))
                            : NULL;

        if (ids == NULL) {
            atomic_fetch_add(&w->srv->m.device_checks_given_up, 1);
            msv_log(MSV_LOG_ERROR, "recheck_given_up", "device=%llu waiting=%zu",
                    (unsigned long long)device_id, w->recheck_n);
            return;
        }
        w->recheck_ids = ids;
        w->recheck_ids[w->recheck_n++] = device_id;
        atomic_fetch_add(&w->srv->m.device_checks_waiting, 1);
    }
    atomic_fetch_add(&w->srv->m.device_checks_failed, 1);
    if (!evtimer_pending(w->recheck_retry_ev, NULL)) {
        struct timeval later;

        if (w->recheck_wait_ms < RECHECK_WAIT_MS)
            w->recheck_wait_ms = RECHECK_WAIT_MS;
        later.tv_sec = w->recheck_wait_ms / 1000;
        later.tv_usec = (w->recheck_wait_ms % 1000) * 1000;
        msv_log(MSV_LOG_ERROR, "recheck_failed", "devices=%zu retry_ms=%d", w->recheck_n,
                w->recheck_wait_ms);
        evtimer_add(w->recheck_retry_ev, &later);
    }
}

/* Checks device_id's connections on w against the store; MSV_OK once it answered for all. */
static msv_err recheck_device_here(struct msv_worker *w, uint64_t device_id)
{
    msv_err err = MSV_OK;

    /* revoking may free c: its successor is taken first */
    for (struct msv_conn_state *c = w->conns, *next; err == MSV_OK && c != NULL; c = next) {
        next = c->next;
        if (c->device_id == device_id)
            err = recheck_conn(c, 0); /* suspensions have their own channel, always listened to */
    }
    return err;
}

/* The devices whose check failed, asked about again; the first failure stops the round. */
static void on_recheck_retry(evutil_socket_t fd, short what, void *arg)
{
    struct msv_worker *w = arg;
    uint64_t *ids = w->recheck_ids;
    size_t n = w->recheck_n;
    msv_err err = MSV_OK;

    (void)fd;
    (void)what;
    w->recheck_ids = NULL;
    w->recheck_n = 0;
    atomic_fetch_sub(&w->srv->m.device_checks_waiting, n);
    w->recheck_wait_ms =
        w->recheck_wait_ms * 2 < RECHECK_WAIT_MAX_MS ? w->recheck_wait_ms * 2 : RECHECK_WAIT_MAX_MS;
    for (size_t i = 0; i < n; i++)
        if (err != MSV_OK || (err = recheck_device_here(w, ids[i])) != MSV_OK)
            recheck_later(w, ids[i]);
    if (w->recheck_n == 0)
        w->recheck_wait_ms = RECHECK_WAIT_MS;
    free(ids);
}

static void run_close_order(struct msv_worker *w, const struct msv_close_order *o)
{
    struct msv_store *st = w->srv->store;
    const char *why = o->why;
    int suspended = 0;
    msv_err err;

    if (o->check) { /* the store decides whether the device is gone */
        if (o->device_id != 0 && recheck_device_here(w, o->device_id) != MSV_OK)
            recheck_later(w, o->device_id);
        return;
    }
    /* an account's suspension is told by missive-admin or another node: the store decides */
    if (o->device_id == 0 && o->why == suspended_text) {
        err = st->ops->account_suspended(st->impl, o->account_id, &suspended);
        if (err == MSV_ERR_NOT_FOUND) {
            /* deleted (missive-admin delete): what this node keeps of it goes too */
            msv_dircache_drop_all(&w->srv->dir);
            msv_kt_log_grown(&w->srv->kt);
            why = deleted_text;
        } else if (err != MSV_OK || !suspended) {
            return;
        }
    }
    /* revoking may free c: its successor is taken first */
    for (struct msv_conn_state *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->device_id == 0 || c == o->keep || (o->keep_seq != 0 && c->seq > o->keep_seq))
            continue;
        /* a newer connection replaces the one that takes deliveries, not those for requests */
        if (why == NULL && c->requests_only != 0)
            continue;
        /* announced by another node: a connection here that authenticated after it stays */
        if (o->before_order != 0 && c->device_id == o->device_id && c->order >= o->before_order) {
            atomic_fetch_add(&w->srv->m.cluster_older_announced, 1);
            continue;
        }
        if ((o->device_id != 0 && c->device_id == o->device_id) ||
            (o->device_id == 0 && c->account_id == o->account_id))
            revoke_conn(c, why);
    }
}

/* Closes the connections whose device was removed or whose account was suspended. */
static void recheck_conns(struct msv_worker *w)
{
    for (struct msv_conn_state *c = w->conns, *next; c != NULL; c = next) {
        next = c->next; /* revoking may free c */
        if (c->device_id != 0)
            (void)recheck_conn(c, 1); /* a sweep's, made again by the next one */
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct msv_worker *w = arg;
    struct msv_server *s = w->srv;
    struct msv_conn_state **pumps;
    struct msv_close_order *closes;
    uint64_t *devices;
    size_t n, n_pumps = 0, all = 0, n_closes;
    int lost, recheck;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&w->wake_lock);
    devices = w->wake_devices;
    n = w->wake_count;
    lost = w->wake_lost;
    w->wake_devices = NULL;
    w->wake_count = w->wake_cap = 0;
    w->wake_lost = 0;
    closes = w->closes;
    n_closes = w->close_count;
    recheck = w->recheck;
    w->closes = NULL;
    w->close_count = w->close_cap = 0;
    w->recheck = 0;
    pthread_mutex_unlock(&w->wake_lock);
    /* closes first: a connection closed here is neither registered nor pumped below */
    for (size_t i = 0; i < n_closes; i++)
        run_close_order(w, &closes[i]);
    free(closes);
    if (recheck)
        recheck_conns(w);
    /* the connections to read, each once, all in one store round trip */
    for (struct msv_conn_state *c = w->conns; lost && c != NULL; c = c->next)
        all++;
    pumps = calloc(n + all + 1, sizeof(*pumps));
    for (struct msv_conn_state *c = w->conns; lost && c != NULL; c = c->next) {
        c->more = 1;
        if (pumps != NULL) {
            c->pump_listed = 1;
            pumps[n_pumps++] = c;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct msv_conn_state *c;

        pthread_mutex_lock(&s->registry_lock);
        c = msv_u64map_get(&s->registry, devices[i]);
        if (c != NULL && c->w != w)
            c = NULL; /* moved to another worker since; that one was woken too */
        pthread_mutex_unlock(&s->registry_lock);
        /* connections are freed only on this thread, so c stays valid here */
        if (c != NULL) {
            c->more = 1;
            if (pumps == NULL)
                msv_conn_pump(c);
            else if (!c->pump_listed) {
                c->pump_listed = 1;
                pumps[n_pumps++] = c;
            }
        }
    }
    for (size_t i = 0; i < n_pumps; i++)
        pumps[i]->pump_listed = 0;
    pump_all(pumps, n_pumps);
    free(pumps);
    free(devices);
}

/* ---- group commit --------------------------------------------------------------------- */

/*
 * A batch handed to the committer thread. The committer reads only the
 * arrays (built on the event loop before the hand-over; the ciphertexts they
 * point at belong to the pending sends, which are not freed until the batch
 * comes back) and writes ids, acks[].deleted and err.
 */
struct msv_commit_batch {
    struct msv_pending_send *sends; /* the event loop's: connections are never read elsewhere */
    struct msv_pending_ack *acks_list;
    struct msv_queue_in *all;    /* every send's envelopes; the committer keeps the accepted */
    struct msv_queue_usage *use; /* the recipients' queues, one per envelope of all */
    size_t *counts;              /* envelopes of each send, in order */
    size_t *kept;                /* of them, those in all (the others left out: left_out) */
    uint8_t *left_out; /* one per envelope of use: its device's queue full, the send taken */
    uint8_t *own;      /* one per envelope of use: its device is of the sender's account */
    /* each send: 0 accepted (some envelopes perhaps left out), 1 no other account's device has
     * room, -1 not read, 2 a device gone */
    int *refused;
    uint64_t *ids;
    struct msv_queue_ack *acks;
    size_t total, n_sends, n_acks, n_all;
    int64_t now, expires;
    msv_err err;
};

/* c is being freed: the batch in flight (read only here) no longer names it. */
static void forget_inflight(struct msv_worker *w, const struct msv_conn_state *c)
{
    if (w->inflight == NULL)
        return;
    for (struct msv_pending_send *p = w->inflight->sends; p != NULL; p = p->next)
        if (p->c == c)
            p->c = NULL;
    for (struct msv_pending_ack *a = w->inflight->acks_list; a != NULL; a = a->next)
        if (a->c == c)
            a->c = NULL;
}

void msv_pending_send_free(struct msv_pending_send *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->count; i++)
        free(p->ciphertexts[i]);
    free(p->ciphertexts);
    free(p->items);
    free(p->own);
    free(p->sender_handle);
    free(p);
}

void msv_worker_queue_send(struct msv_worker *w, struct msv_pending_send *p)
{
    if (w->pending_tail != NULL)
        w->pending_tail->next = p;
    else
        w->pending_head = p;
    w->pending_tail = p;
    if (p->c != NULL) {
        p->c->commits_waiting++;
        p->c->answers_waiting++;
    }
    w->backlog_items += p->count;
    for (size_t i = 0; i < p->count; i++)
        w->backlog_bytes += p->items[i].ciphertext_len;
    /* runs after this loop iteration's reads: every send read meanwhile joins the batch */
    event_active(w->commit_ev, EV_WRITE, 0);
}

void msv_pending_ack_free(struct msv_pending_ack *a)
{
    free(a->ids);
    free(a);
}

void msv_worker_queue_ack(struct msv_worker *w, struct msv_pending_ack *a)
{
    if (w->acks_tail != NULL)
        w->acks_tail->next = a;
    else
        w->acks_head = a;
    w->acks_tail = a;
    if (a->c != NULL) {
        a->c->commits_waiting++;
        a->c->answers_waiting += a->request_id != 0;
    }
    w->backlog_items += a->ack.n;
    w->backlog_bytes += a->ack.n * sizeof(*a->ids);
    event_active(w->commit_ev, EV_WRITE, 0);
}

/* Whether the next group commit holds as much as may wait (reading pauses until it goes). */
static int backlog_full(const struct msv_worker *w)
{
    const struct msv_config *cfg = &w->srv->cfg;

    return w->backlog_items >= cfg->commit_backlog ||
           w->backlog_bytes >= (size_t)cfg->commit_backlog_kib * 1024;
}

/* One of c's commits was answered (answered: it had an answer): requests read after it may
 * be handled now. */
static void commit_answered(struct msv_conn_state *c, int answered)
{
    if (c->commits_waiting > 0)
        c->commits_waiting--;
    if (answered && c->answers_waiting > 0)
        c->answers_waiting--;
    if (!c->order_paused)
        return;
    c->order_paused = 0;
    if (c->reading_paused || c->commit_paused || c->closing)
        return; /* conn_write or resume_paused reads on */
    bufferevent_enable(c->bev, EV_READ);
    conn_read(c->bev, c); /* may pause again; frees no connection: closing is left to
                             callbacks */
}

#define QUEUE_FULL_TEXT "the recipient's queue is full; nothing was sent, try again later"

/*
 * Answers send p naming the devices full marks (one flag per envelope: their queues full),
 * refused whole (ERROR_TOO_BIG) or taken without them (Ok); then each one's refusal is counted
 * and its account told (account usage). How many it named.
 */
static size_t answer_full(struct msv_server *s, struct msv_pending_send *p,
                          const struct msv_queue_usage *use, const uint8_t *full, int whole)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Error e = MSV__WIRE__ERROR__INIT;
    Msv__Wire__Ok ok = MSV__WIRE__OK__INIT;
    uint64_t *devices = calloc(p->count ? p->count : 1, sizeof(*devices));
    size_t n = 0;

    for (size_t i = 0; devices != NULL && i < p->count; i++)
        if (full[i])
            devices[n++] = use[i].device_id;
    f.request_id = p->request_id;
    if (whole) {
        e.code = MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG;
        e.message = (ProtobufCBinaryData){sizeof(QUEUE_FULL_TEXT) - 1, (uint8_t *)QUEUE_FULL_TEXT};
        e.n_full_devices = n;
        e.full_devices = devices;
        f.body_case = MSV__WIRE__FRAME__BODY_ERROR;
        f.error = &e;
    } else {
        ok.n_full_devices = n;
        ok.full_devices = devices;
        f.body_case = MSV__WIRE__FRAME__BODY_OK;
        f.ok = &ok;
    }
    if (p->c != NULL)
        msv_conn_send_frame(p->c, &f);
    msv_server_queue_refused(s, devices, n);
    free(devices);
    return n;
}

/*
 * A send a queue cap refused: nothing of it was stored; the full queues' accounts are told. Its
 * tokens come back only when the server failed it (storage, a device removed meanwhile): a send
 * refused for full queues keeps them, so that sends to full queues, each told to an account and
 * counted in the store, go no faster than the account's rate.
 */
static void refuse_send(struct msv_server *s, struct msv_pending_send *p,
                        const struct msv_queue_usage *use, const uint8_t *full_flags, int refused)
{
    if (p->account_id != 0 && refused != 1)
        msv_server_refund_token(s, MSV_LIMIT_SEND, p->account_id, (double)p->count);
    if (refused < 0) {
        if (p->c != NULL)
            msv_conn_send_error(p->c, p->request_id, MSV__WIRE__ERROR_CODE__ERROR_IO,
                                "storage failed");
        return;
    }
    if (refused == 2) {
        atomic_fetch_add(&s->m.sends_device_gone, 1);
        if (p->c != NULL)
            msv_conn_send_error(p->c, p->request_id, MSV__WIRE__ERROR_CODE__ERROR_IO,
                                "a recipient device was removed meanwhile; nothing was sent, try "
                                "again");
        return;
    }
    atomic_fetch_add(&s->m.queue_full, 1);
    /* no other account's recipient queue had room (check_caps) */
    answer_full(s, p, use, full_flags, 1);
}

/*
 * A send taken with some of its envelopes left out (left_out, one per envelope: their devices'
 * queues full): their tokens given back, answered as answer_full says.
 */
static void answer_left_out(struct msv_server *s, struct msv_pending_send *p,
                            const struct msv_queue_usage *use, const uint8_t *left_out)
{
    size_t n = answer_full(s, p, use, left_out, 0);

    if (p->account_id != 0 && n > 0)
        msv_server_refund_token(s, MSV_LIMIT_SEND, p->account_id, (double)n);
    atomic_fetch_add(&s->m.envelopes_left_out, n);
}

/*
 * After the commit: each sender hears whether its envelopes are on disk (or which queue cap
 * refused them: b, NULL without a batch); recipients are woken.
 */
static void answer_sends(struct msv_server *s, struct msv_pending_send *head,
                         const struct msv_commit_batch *b, msv_err err)
{
    size_t k = 0, at = 0;

    while (head != NULL) {
        struct msv_pending_send *p = head;
        int refused = b != NULL && err == MSV_OK ? b->refused[k] : 0;

        head = p->next;
        if (refused != 0)
            refuse_send(s, p, b->use + at, b->left_out + at, refused);
        else if (err == MSV_OK && b != NULL && b->kept[k] < p->count)
            answer_left_out(s, p, b->use + at, b->left_out + at);
        else if (p->c != NULL && err == MSV_OK)
            msv_conn_send_ok(p->c, p->request_id);
        else if (p->c != NULL)
            msv_conn_send_error(p->c, p->request_id, MSV__WIRE__ERROR_CODE__ERROR_IO,
                                "storage failed; the message was not accepted");
        if (p->c != NULL)
            commit_answered(p->c, 1);
        if (err == MSV_OK && refused == 0) {
            for (size_t i = 0; i < p->count; i++)
                if (b == NULL || !b->left_out[at + i])
                    msv_server_wake(s, p->items[i].device_id);
        }
        at += p->count;
        k++;
        msv_pending_send_free(p);
    }
}

/*
 * After the commit: acknowledged envelopes free their devices' delivery windows, and the
 * queues behind them are read for all of those connections at once (one store round trip).
 */
static void answer_acks(struct msv_server *s, struct msv_pending_ack *head, msv_err err)
{
    struct msv_conn_state **pumps = NULL;
    size_t n = 0, n_pumps = 0;

    for (struct msv_pending_ack *a = head; a != NULL && err == MSV_OK; a = a->next)
        n++;
    if (n > 1)
        pumps = calloc(n, sizeof(*pumps)); /* without memory: one read per connection */
    while (head != NULL) {
        struct msv_pending_ack *a = head;
        struct msv_conn_state *c = a->c;

        head = a->next;
        if (c != NULL)
            c->acks_pending = a->window >= c->acks_pending ? 0 : c->acks_pending - a->window;
        if (c != NULL && err == MSV_OK) {
            atomic_fetch_add(&s->m.envelopes_acked, a->ack.deleted);
            /* what was pushed here and acknowledged, whether this ack or an earlier connection's
             * deleted it: a count of deleted rows would keep the window shut after a reconnect */
            c->inflight = a->window >= c->inflight ? 0 : c->inflight - a->window;
            if (a->request_id != 0)
                msv_conn_send_ok(c, a->request_id);
            if (pumps == NULL)
                msv_conn_pump(c);
            else if (!c->pump_listed) {
                c->pump_listed = 1;
                pumps[n_pumps++] = c;
            }
        } else if (c != NULL && a->request_id != 0) {
            /* not deleted: delivered again on the next connection, and recognised there */
            msv_conn_send_error(c, a->request_id, MSV__WIRE__ERROR_CODE__ERROR_IO,
                                "storage failed");
        }
        if (c != NULL) /* frees no connection: pumps stays valid */
            commit_answered(c, a->request_id != 0);
        msv_pending_ack_free(a);
    }
    for (size_t i = 0; i < n_pumps; i++)
        pumps[i]->pump_listed = 0;
    pump_all(pumps, n_pumps);
    free(pumps);
}

static void batch_free(struct msv_commit_batch *b)
{
    if (b == NULL)
        return;
    free(b->use);
    free(b->counts);
    free(b->refused);
    free(b->kept);
    free(b->left_out);
    free(b->own);
    free(b->all);
    free(b->ids);
    free(b->acks);
    free(b);
}

/* The worker's next batch as the committer reads it; NULL (nothing taken) without memory. */
static struct msv_commit_batch *batch_make(struct msv_worker *w)
{
    struct msv_server *s = w->srv;
    struct msv_commit_batch *b = calloc(1, sizeof(*b));
    struct msv_pending_send *p;
    struct msv_pending_ack *a;
    size_t at = 0;

    if (b == NULL)
        return NULL;
    for (p = w->pending_head; p != NULL; p = p->next) {
        b->total += p->count;
        b->n_sends++;
    }
    for (a = w->acks_head; a != NULL; a = a->next)
        b->n_acks++;
    b->n_all = b->total;
    b->all = calloc(b->total ? b->total : 1, sizeof(*b->all));
    b->use = calloc(b->total ? b->total : 1, sizeof(*b->use));
    b->ids = calloc(b->total ? b->total : 1, sizeof(*b->ids));
    b->counts = calloc(b->n_sends ? b->n_sends : 1, sizeof(*b->counts));
    b->kept = calloc(b->n_sends ? b->n_sends : 1, sizeof(*b->kept));
    b->left_out = calloc(b->total ? b->total : 1, 1);
    b->own = calloc(b->total ? b->total : 1, 1);
    b->refused = calloc(b->n_sends ? b->n_sends : 1, sizeof(*b->refused));
    b->acks = calloc(b->n_acks ? b->n_acks : 1, sizeof(*b->acks));
    if (b->all == NULL || b->use == NULL || b->ids == NULL || b->counts == NULL ||
        b->kept == NULL || b->left_out == NULL || b->own == NULL || b->refused == NULL ||
        b->acks == NULL) {
        batch_free(b);
        return NULL;
    }
    for (p = w->pending_head; p != NULL; p = p->next) {
        memcpy(b->all + at, p->items, p->count * sizeof(*b->all));
        if (p->own != NULL)
            memcpy(b->own + at, p->own, p->count);
        for (size_t i = 0; i < p->count; i++)
            b->use[at + i].device_id = p->items[i].device_id;
        at += p->count;
    }
    at = 0;
    for (p = w->pending_head; p != NULL; p = p->next) {
        b->kept[at] = p->count;
        b->counts[at++] = p->count;
    }
    at = 0;
    for (a = w->acks_head; a != NULL; a = a->next)
        b->acks[at++] = a->ack;
    b->now = msv_server_now_ms(s);
    b->expires = b->now + (int64_t)atomic_load(&s->queue_ttl_ms);
    b->sends = w->pending_head;
    b->acks_list = w->acks_head;
    w->pending_head = w->pending_tail = NULL;
    w->acks_head = w->acks_tail = NULL;
    w->backlog_items = w->backlog_bytes = 0;
    return b;
}

void msv_server_failing(struct msv_server *s, _Atomic int *flag, int failed)
{
    /* numbers from 1 to INT_MAX: a failure is never 0, and two in a row differ */
    atomic_store(flag, failed ? (int)(atomic_fetch_add(&s->failure_seq, 1) % INT_MAX) + 1 : 0);
}

/*
 * On the committer thread, before the commit: every recipient queue's usage in one store
 * read; the envelopes that would pass a cap left out of their sends (b->left_out, b->kept),
 * and the sends none of whose envelopes for another account's devices has room taken out of
 * the batch (b->refused 1: nothing would reach anyone; b->own marks the sender's own
 * devices, which do not count). The envelopes accepted
 * earlier in the batch count against the later ones (a batch grows while a commit is in
 * flight: thousands of sends to one device must not all pass a cap of a few); other workers'
 * and nodes' batches committing at the same moment still can, by one batch's worth each.
 * b->all keeps the accepted envelopes, b->total their number.
 */
static void check_caps(struct msv_server *s, struct msv_commit_batch *b)
{
    size_t at = 0, kept = 0, n_seen = 0;
    struct msv_u64map seen; /* device id -> 1 + its index in added */
    struct msv_queue_usage *added = NULL;
    int failed;

    if (b->n_all == 0)
        return;
    msv_u64map_init(&seen);
    added = calloc(b->n_all, sizeof(*added));
    failed =
        added == NULL || s->store->ops->queue_usage(s->store->impl, b->use, b->n_all) != MSV_OK;
    /* every send of the batch is refused: /health says so until a read succeeds again */
    msv_server_failing(s, &s->usage_failing, failed);
    for (size_t k = 0; k < b->n_sends; k++) {
        size_t full = 0, others = 0, others_full = 0;

        for (size_t i = 0; i < b->counts[k] && !failed; i++) {
            struct msv_queue_usage u = b->use[at + i];
            uintptr_t slot = (uintptr_t)msv_u64map_get(&seen, u.device_id);

            if (slot != 0) {
                u.envelopes += added[slot - 1].envelopes;
                u.bytes += added[slot - 1].bytes;
            }
            b->left_out[at + i] =
                (uint8_t)msv_server_queue_is_full(s, &u, b->all[at + i].ciphertext_len);
            full += b->left_out[at + i];
            others += !b->own[at + i];
            others_full += !b->own[at + i] && b->left_out[at + i];
        }
        /* every recipient of another account full (or, to the sender's own devices alone,
         * every one): refused whole, as it would reach nobody; else the full devices alone are
         * left out, and the others' copies go */
        b->refused[k] = failed       ? -1
                        : others > 0 ? others_full == others
                                     : full > 0 && full == b->counts[k];
        b->kept[k] = 0;
        for (size_t i = 0; i < b->counts[k] && b->refused[k] == 0; i++) {
            uint64_t device = b->use[at + i].device_id;
            uintptr_t slot;

            if (b->left_out[at + i])
                continue;
            slot = (uintptr_t)msv_u64map_get(&seen, device);
            if (slot == 0) {
                slot = ++n_seen;
                failed = msv_u64map_put(&seen, device, (void *)slot) != MSV_OK;
                if (failed) { /* this send and the rest: refused, nothing of them kept */
                    b->refused[k] = -1;
                    kept -= b->kept[k];
                    b->kept[k] = 0;
                    break;
                }
            }
            added[slot - 1].envelopes++;
            added[slot - 1].bytes += b->all[at + i].ciphertext_len;
            b->all[kept++] = b->all[at + i];
            b->kept[k]++;
        }
        at += b->counts[k];
    }
    b->total = kept;
    msv_u64map_clear(&seen);
    free(added);
}

/* Commits tried again after taking out the sends to devices removed meanwhile. */
#define GONE_RETRIES 3

/*
 * On the committer thread, after the store refused the batch because a recipient device no
 * longer exists (MSV_ERR_AGAIN: removed after its send was checked, by this node or another):
 * every send that addresses a device the store no longer has is taken out of b->all
 * (b->refused[k] = 2, answered ERROR_IO: nothing of it is stored, and the sender, trying
 * again, learns the device set changed). MSV_OK, or the store's failure.
 */
static msv_err drop_gone(struct msv_server *s, struct msv_commit_batch *b)
{
    size_t at = 0, kept = 0;
    msv_err err = MSV_OK;

    for (size_t k = 0; k < b->n_sends; k++) {
        int gone = 0;

        if (b->refused[k] != 0)
            continue; /* not in b->all */
        for (size_t i = 0; i < b->kept[k] && !gone && err == MSV_OK; i++) {
            struct msv_device_rec d = {0};
            msv_err e = s->store->ops->device_get(s->store->impl, b->all[at + i].device_id, &d);

            msv_device_rec_clear(&d);
            if (e == MSV_ERR_NOT_FOUND)
                gone = 1;
            else if (e != MSV_OK)
                err = e;
        }
        if (err != MSV_OK)
            return err;
        if (gone) {
            b->refused[k] = 2;
        } else {
            memmove(b->all + kept, b->all + at, b->kept[k] * sizeof(*b->all));
            kept += b->kept[k];
        }
        at += b->kept[k];
    }
    b->total = kept;
    return MSV_OK;
}

/* The committer thread: one batch at a time, in one transaction; the event loop answers. */
static void *committer_main(void *arg)
{
    struct msv_worker *w = arg;
    struct msv_server *s = w->srv;

    pthread_mutex_lock(&w->commit_lock);
    for (;;) {
        struct msv_commit_batch *b;

        while (w->job == NULL && !w->committer_quit)
            pthread_cond_wait(&w->commit_cond, &w->commit_lock);
        if (w->job == NULL)
            break; /* quit, with nothing handed over */
        b = w->job;
        pthread_mutex_unlock(&w->commit_lock);
        if (s->cfg.commit_delay_ms != 0) /* tests: a commit that takes long */
            usleep((useconds_t)s->cfg.commit_delay_ms * 1000);
        check_caps(s, b);
        b->err = s->store->ops->queue_commit(s->store->impl, b->all, b->total, b->now, b->expires,
                                             b->ids, b->acks, b->n_acks);
        for (int again = 0; b->err == MSV_ERR_AGAIN && again < GONE_RETRIES; again++) {
            b->err = drop_gone(s, b);
            if (b->err == MSV_OK)
                b->err = s->store->ops->queue_commit(s->store->impl, b->all, b->total, b->now,
                                                     b->expires, b->ids, b->acks, b->n_acks);
        }
        if (b->err == MSV_ERR_AGAIN)
            b->err = MSV_ERR_IO; /* devices removed faster than the commit could go */
        pthread_mutex_lock(&w->commit_lock);
        w->job = NULL;
        /* the loop takes the batch back, with what the store wrote into it, under the lock */
        event_active(w->commit_done_ev, EV_READ, 0);
    }
    pthread_mutex_unlock(&w->commit_lock);
    return NULL;
}

/* Connections that paused for a full batch read again: the batch went. */
static void resume_paused(struct msv_worker *w)
{
    /* reading may free no connection (conn_read only queues closes), but take next first */
    for (struct msv_conn_state *c = w->conns, *next; w->commit_paused > 0 && c != NULL; c = next) {
        next = c->next;
        if (!c->commit_paused)
            continue;
        c->commit_paused = 0;
        w->commit_paused--;
        if (c->reading_paused || c->closing)
            continue; /* its answers must drain first (conn_write resumes it), or it closes */
        bufferevent_enable(c->bev, EV_READ);
        conn_read(c->bev, c); /* requests that waited in the input buffer */
    }
}

/*
 * Hands the worker's next batch to its committer, if none is in flight and
 * there is one. Without memory for it, the batch is answered ERROR_IO.
 */
static void commit_start(struct msv_worker *w)
{
    struct msv_commit_batch *b;

    if (w->inflight != NULL || (w->pending_head == NULL && w->acks_head == NULL))
        return;
    b = batch_make(w);
    if (b == NULL) {
        struct msv_pending_send *sends = w->pending_head;
        struct msv_pending_ack *acks = w->acks_head;

        w->pending_head = w->pending_tail = NULL;
        w->acks_head = w->acks_tail = NULL;
        w->backlog_items = w->backlog_bytes = 0;
        atomic_fetch_add(&w->srv->m.commit_failures, 1);
        msv_log(MSV_LOG_ERROR, "commit_failed", "reason=\"%s\"", msv_strerror(MSV_ERR_NOMEM));
        answer_sends(w->srv, sends, NULL, MSV_ERR_NOMEM);
        answer_acks(w->srv, acks, MSV_ERR_NOMEM);
        resume_paused(w);
        return;
    }
    w->inflight = b;
    atomic_fetch_add(&w->srv->m.commits_in_flight, 1);
    pthread_mutex_lock(&w->commit_lock);
    w->job = b;
    pthread_cond_signal(&w->commit_cond);
    pthread_mutex_unlock(&w->commit_lock);
    resume_paused(w);
}

/* The committer's batch came back: count it, answer it, and hand over the next one. */
static void on_commit_done(evutil_socket_t fd, short what, void *arg)
{
    struct msv_worker *w = arg;
    struct msv_server *s = w->srv;
    struct msv_commit_batch *b = w->inflight;
    struct msv_pending_ack *a;
    size_t at = 0;
    int busy;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&w->commit_lock);
    busy = w->job != NULL;
    pthread_mutex_unlock(&w->commit_lock);
    if (b == NULL || busy)
        return;
    w->inflight = NULL;
    atomic_fetch_sub(&s->m.commits_in_flight, 1);
    /* what was read meanwhile is the next batch: the committer writes it while this one is
     * answered (its own answers come after these, in the next call) */
    commit_start(w);
    for (a = b->acks_list; a != NULL; a = a->next)
        a->ack.deleted = b->acks[at++].deleted;
    atomic_fetch_add(&s->m.commit_batches, 1);
    atomic_store(&s->commit_failing, b->err != MSV_OK);
    if (b->err != MSV_OK) {
        atomic_fetch_add(&s->m.commit_failures, 1);
        msv_log(MSV_LOG_ERROR, "commit_failed", "envelopes=%zu acks=%zu reason=\"%s\"", b->total,
                b->n_acks, msv_strerror(b->err));
    } else {
        atomic_fetch_add(&s->m.envelopes_enqueued, b->total);
    }
    answer_sends(s, b->sends, b, b->err);
    answer_acks(s, b->acks_list, b->err);
    batch_free(b);
    if (w->stopping && w->inflight == NULL)
        stop_when_written(w);
}

static void on_commit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    commit_start(arg);
}

static void free_pending(struct msv_pending_send *sends, struct msv_pending_ack *acks)
{
    while (sends != NULL) {
        struct msv_pending_send *p = sends;

        sends = p->next;
        msv_pending_send_free(p);
    }
    while (acks != NULL) {
        struct msv_pending_ack *a = acks;

        acks = a->next;
        msv_pending_ack_free(a);
    }
}

/* The committer thread of a worker, waiting for batches. */
static msv_err committer_begin(struct msv_worker *w)
{
    if (pthread_create(&w->committer, NULL, committer_main, w) != 0)
        return MSV_ERR_NOMEM;
    w->committer_started = 1;
    return MSV_OK;
}

/* Ends the committer once the batch it holds (if any) is committed. */
static void committer_end(struct msv_worker *w)
{
    if (!w->committer_started)
        return;
    pthread_mutex_lock(&w->commit_lock);
    w->committer_quit = 1;
    pthread_cond_signal(&w->commit_cond);
    pthread_mutex_unlock(&w->commit_lock);
    pthread_join(w->committer, NULL);
    w->committer_started = 0;
}

/* ---- rate limits ---------------------------------------------------------------------- */

/* how long send tokens leased from Redis may be spent here */
#define LEASE_MS 1000
/* the share of the burst leased with a send that leaves the bucket at least half full */
#define LEASE_SHARE (1.0 / 64)

static void limit_rate(const struct msv_config *c, enum msv_limit limit, double *rate,
                       double *burst)
{
    switch (limit) {
    case MSV_LIMIT_LOOKUP:
        *rate = c->lookup_rate;
        *burst = c->lookup_burst;
        break;
    case MSV_LIMIT_REGISTER:
        *rate = c->register_rate;
        *burst = c->register_burst;
        break;
    case MSV_LIMIT_LOG:
        *rate = c->log_read_rate;
        *burst = c->log_read_burst;
        break;
    case MSV_LIMIT_CODE: /* verification codes sent to one handle per day */
        *rate = (double)c->codes_per_handle_per_day / 86400.0;
        *burst = (double)c->codes_per_handle_per_day;
        break;
    case MSV_LIMIT_GUESS_ADDRESS: /* wrong codes for one handle from one address, per code life */
        *rate = (double)c->code_guesses_per_address / 600.0;
        *burst = (double)c->code_guesses_per_address;
        break;
    case MSV_LIMIT_GUESS: /* wrong codes for one handle from anywhere, per code life */
        *rate = (double)c->code_guesses_per_handle / 600.0;
        *burst = (double)c->code_guesses_per_handle;
        break;
    case MSV_LIMIT_SEND:
        *rate = c->send_rate;
        *burst = c->send_burst;
        break;
    case MSV_LIMIT_CLAIM:     /* one one-time prekey per claimer and device per interval */
    case MSV_LIMIT_MLS_CLAIM: /* one KeyPackage likewise, in a bucket of its own */
        *rate = 1.0 / (double)(c->prekey_claim_interval_s ? c->prekey_claim_interval_s : 1);
        *burst = c->prekey_claim_interval_s ? 1.0 : 1e9;
        break;
    case MSV_LIMIT_MLS_UPLOAD: /* mls_ds.c */
        *rate = 10.0 / 3600;
        *burst = 10.0;
        break;
    case MSV_LIMIT_PREKEY_UPLOAD: /* handlers.c: each may cost 101 signature checks */
        *rate = 0.1;
        *burst = 100.0;
        break;
    case MSV_LIMIT_MLS_LOG: /* mls_ds.c: a catch-up reads at most 4 times */
        *rate = 2.0;
        *burst = 600.0;
        break;
    case MSV_LIMIT_UNKNOWN:
        *rate = c->unknown_lookup_rate;
        *burst = c->unknown_lookup_burst;
        break;
    case MSV_LIMIT_BLOB_FINISH:
        *rate = c->blob_finish_fail_rate;
        *burst = c->blob_finish_fail_burst;
        break;
    default:
        *rate = c->sealed_rate;
        *burst = c->sealed_burst;
        break;
    }
}

/* The name of limit's buckets in Redis when the cluster shares it; NULL: counted per node. */
static const char *shared_name(const struct msv_server *s, enum msv_limit limit)
{
    if (s->shared_limits == NULL)
        return NULL;
    switch (limit) {
    case MSV_LIMIT_CODE:
        return "code";
    case MSV_LIMIT_GUESS_ADDRESS:
        return "guess-address";
    case MSV_LIMIT_GUESS:
        return "guess";
    case MSV_LIMIT_CLAIM:
        return "claim";
    case MSV_LIMIT_MLS_CLAIM:
        return "mls-claim";
    case MSV_LIMIT_MLS_UPLOAD:
        return "mls-upload";
    case MSV_LIMIT_MLS_LOG:
        return "mls-log";
    case MSV_LIMIT_PREKEY_UPLOAD:
        return "prekey-upload";
    case MSV_LIMIT_SEND:
        return "send";
    case MSV_LIMIT_UNKNOWN:
        return "unknown-lookup";
    default:
        return NULL;
    }
}

/* key's bucket in map, made with tokens at now if there is none; NULL without memory. */
static struct msv_bucket *bucket_of(struct msv_u64map *map, uint64_t key, double tokens,
                                    int64_t now)
{
    struct msv_bucket *b = msv_u64map_get(map, key);

    if (b == NULL && (b = calloc(1, sizeof(*b))) != NULL) {
        b->tokens = tokens;
        b->updated_ms = now;
        if (msv_u64map_put(map, key, b) != MSV_OK) {
            free(b);
            b = NULL;
        }
    }
    return b;
}

/*
 * Send tokens an account's sends took from Redis ahead, spent here without asking it; a lease
 * not spent within LEASE_MS is dropped (Redis refills the bucket meanwhile). Adds tokens to
 * key's lease (negative: spends them); 0 when it does not hold enough.
 */
static int lease_add(struct msv_server *s, uint64_t key, double tokens, int64_t now)
{
    struct msv_bucket *b;
    int ok = 0;

    pthread_mutex_lock(&s->limits_lock);
    b = tokens < 0 ? msv_u64map_get(&s->send_leases, key) : bucket_of(&s->send_leases, key, 0, now);
    if (b != NULL && now - b->updated_ms >= LEASE_MS)
        b->tokens = 0;
    if (b != NULL && b->tokens + tokens >= 0) {
        b->tokens += tokens;
        if (tokens > 0)
            b->updated_ms = now;
        ok = 1;
    }
    pthread_mutex_unlock(&s->limits_lock);
    return ok;
}

/*
 * Takes cost (negative: gives it back) from the cluster's bucket of limit, and for sends a lease
 * of LEASE_SHARE of the burst with it while the bucket is far from empty; UNAVAILABLE (counted,
 * and logged at most every 10 s) when limit is not shared or Redis does not answer in time.
 */
static enum msv_shared_take take_shared(struct msv_server *s, enum msv_limit limit, uint64_t key,
                                        double cost)
{
    struct msv_shared_bucket b = {shared_name(s, limit), key, 0, 0};
    int64_t now = msv_server_now_ms(s), mono, last;
    enum msv_shared_take res;
    double leased = 0;

    if (b.name == NULL)
        return MSV_SHARED_UNAVAILABLE;
    pthread_mutex_lock(&s->limits_lock);
    limit_rate(&s->cfg, limit, &b.rate, &b.burst);
    pthread_mutex_unlock(&s->limits_lock);
    res = msv_shared_limits_take(s->shared_limits, &b, cost,
                                 limit == MSV_LIMIT_SEND && cost > 0 ? b.burst * LEASE_SHARE : 0,
                                 now, &leased);
    if (leased > 0)
        (void)lease_add(s, key, leased, now);
    if (res != MSV_SHARED_UNAVAILABLE)
        return res;
    atomic_fetch_add(&s->m.shared_limits_fallback, 1);
    mono = msv_mono_ms();
    last = atomic_load(&s->shared_fallback_logged);
    if ((last == 0 || mono - last >= 10000) &&
        atomic_compare_exchange_strong(&s->shared_fallback_logged, &last, mono))
        msv_log(MSV_LOG_WARN, "shared_limits_fallback",
                "redis=%s limit=%s reason=\"no answer within %u ms: this node's bucket counts\"",
                s->cfg.redis, b.name, s->cfg.redis_timeout_ms);
    return res;
}

void msv_server_refund_token(struct msv_server *s, enum msv_limit limit, uint64_t key, double cost)
{
    struct msv_bucket *b;

    /* a send's tokens go back to the lease: no round trip for a refused send */
    if (limit == MSV_LIMIT_SEND && shared_name(s, limit) != NULL &&
        lease_add(s, key, cost, msv_server_now_ms(s)))
        return;
    if (limit != MSV_LIMIT_SEND && take_shared(s, limit, key, -cost) == MSV_SHARED_TAKEN)
        return;
    pthread_mutex_lock(&s->limits_lock);
    b = msv_u64map_get(&s->buckets[limit], key);
    if (b != NULL)
        b->tokens += cost; /* the next take caps it at the burst again */
    pthread_mutex_unlock(&s->limits_lock);
}

uint64_t msv_server_key(const struct msv_server *s, const void *data, size_t len)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t k = 0;

    crypto_shorthash(h, data, len, s->limit_key);
    memcpy(&k, h, sizeof(k));
    return k != 0 ? k : 1; /* 0 marks an empty slot of the map */
}

/*
 * Refills key's bucket of limit and takes from it: cost when it holds that
 * much (or, with partial, as many whole tokens as it holds up to cost); a
 * negative cost gives tokens back. Returns what was taken.
 */
static double take_tokens(struct msv_server *s, enum msv_limit limit, uint64_t key, double cost,
                          int partial)
{
    int64_t now = msv_server_now_ms(s);
    struct msv_bucket *b;
    double rate, burst, taken = 0;

    if (limit == MSV_LIMIT_SEND && shared_name(s, limit) != NULL && lease_add(s, key, -cost, now))
        return 1;
    switch (take_shared(s, limit, key, cost)) {
    case MSV_SHARED_TAKEN:
        return 1;
    case MSV_SHARED_REFUSED:
        atomic_fetch_add(&s->m.rate_limited, 1);
        return 0;
    default:
        break; /* not shared, or Redis silent: this node's bucket */
    }
    /* the rates are read under the lock that SIGHUP's reload writes them under */
    pthread_mutex_lock(&s->limits_lock);
    limit_rate(&s->cfg, limit, &rate, &burst);
    b = bucket_of(&s->buckets[limit], key, burst, now);
    if (b != NULL) {
        b->tokens += (double)(now - b->updated_ms) / 1000.0 * rate;
        if (b->tokens > burst)
            b->tokens = burst;
        b->updated_ms = now;
        if (b->tokens >= cost)
            taken = cost;
        else if (partial)
            taken = b->tokens >= 1 ? (double)(long)b->tokens : 0;
        b->tokens -= taken;
        if (b->tokens > burst)
            b->tokens = burst;
    }
    pthread_mutex_unlock(&s->limits_lock);
    if (cost > 0 && taken <= 0)
        atomic_fetch_add(&s->m.rate_limited, 1);
    return taken;
}

int msv_server_take_token(struct msv_server *s, enum msv_limit limit, uint64_t key, double cost)
{
    return take_tokens(s, limit, key, cost, 0) > 0 || cost <= 0;
}

size_t msv_server_take_upto(struct msv_server *s, enum msv_limit limit, uint64_t key, long want)
{
    double taken = take_tokens(s, limit, key, (double)want, 1);

    return taken > 0 ? (size_t)taken : 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int bind_listener(const char *host, uint16_t port, uint16_t *bound)
{
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    int fd, one = 1;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        ss_len = sizeof(*in);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        ss_len = sizeof(*in6);
    } else {
        errno = EINVAL;
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* every worker binds the same port; the kernel spreads new connections across them */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, ss_len) != 0 || listen(fd, 1024) != 0) {
        close(fd);
        return -1;
    }
    ss_len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &ss_len) != 0) {
        close(fd);
        return -1;
    }
    *bound = ntohs(ss.ss_family == AF_INET ? in->sin_port : in6->sin6_port);
    return fd;
}

/*
 * The loop ends once every answer is written out (the last ones were written into buffers
 * a moment ago; ending the loop now would drop them), or STOP_DRAIN_MS after the last
 * commit returned, whichever is first: a client that does not read cannot hold the stop.
 */
static void stop_when_written(struct msv_worker *w)
{
    struct timeval again = {0, 10 * 1000};
    int waiting = 0;

    if (w->stop_deadline_ms == 0)
        w->stop_deadline_ms = msv_mono_ms() + STOP_DRAIN_MS;
    for (struct msv_conn_state *c = w->conns; c != NULL && !waiting; c = c->next)
        waiting = evbuffer_get_length(bufferevent_get_output(c->bev)) > 0;
    if (waiting && msv_mono_ms() < w->stop_deadline_ms && evtimer_add(w->stop_ev, &again) == 0)
        return;
    event_base_loopexit(w->base, NULL);
}

static void stop_worker(struct msv_worker *w)
{
    if (w->listener != NULL) {
        evconnlistener_free(w->listener);
        w->listener = NULL;
    }
    /* sends already read are committed and answered before the loop ends (on_commit_done):
     * the commit in flight first, then what was read meanwhile */
    w->stopping = 1;
    commit_start(w);
    if (w->inflight == NULL)
        stop_when_written(w);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct msv_worker *w = arg;

    (void)fd;
    (void)what;
    if (!w->stopping)
        stop_worker(w);
    else if (w->inflight == NULL)
        stop_when_written(w); /* answers still being written */
}

static void begin_stop(struct msv_server *s, const char *why)
{
    if (atomic_exchange(&s->stopping, 1))
        return;
    msv_log(MSV_LOG_INFO, "stopping", "reason=%s", why);
    msv_notify("STOPPING=1");
    for (unsigned i = 0; i < s->worker_count; i++)
        event_active(s->workers[i].stop_ev, 0, 0);
}

static void reload(struct msv_server *s)
{
    struct msv_config c;
    char err[512], state[96];
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000);
    msv_notify(state);
    /* a log file renamed by logrotate is let go: the path is opened again */
    if (s->cfg.log_file[0] != '\0' && msv_log_open(s->cfg.log_file) != 0)
        msv_log(MSV_LOG_ERROR, "log_reopen_failed", "file=\"%s\" reason=\"%s\"", s->cfg.log_file,
                strerror(errno));
    msv_config_defaults(&c);
    if (msv_config_load(&c, s->config_path[0] ? s->config_path : NULL, err, sizeof(err)) !=
        MSV_OK) {
        msv_log(MSV_LOG_ERROR, "reload_failed", "reason=\"%s\"", err);
        msv_notify("READY=1\nSTATUS=serving; the last reload failed (see the log)");
        return;
    }
    /* what can change while running; listeners, paths and workers need a restart */
    msv_log_set_level(c.log_level);
    atomic_store(&s->payload_limit, c.payload_limit);
    atomic_store(&s->queue_ttl_ms, c.queue_ttl_ms);
    pthread_mutex_lock(&s->limits_lock);
    s->cfg.lookup_rate = c.lookup_rate;
    s->cfg.lookup_burst = c.lookup_burst;
    s->cfg.register_rate = c.register_rate;
    s->cfg.register_burst = c.register_burst;
    s->cfg.sealed_rate = c.sealed_rate;
    s->cfg.sealed_burst = c.sealed_burst;
    s->cfg.log_read_rate = c.log_read_rate;
    s->cfg.log_read_burst = c.log_read_burst;
    s->cfg.codes_per_handle_per_day = c.codes_per_handle_per_day;
    s->cfg.reports_per_day = c.reports_per_day;
    s->cfg.report_text_max = c.report_text_max;
    s->cfg.code_guesses_per_address = c.code_guesses_per_address;
    s->cfg.code_guesses_per_handle = c.code_guesses_per_handle;
    s->cfg.send_rate = c.send_rate;
    s->cfg.send_burst = c.send_burst;
    s->cfg.prekey_claim_interval_s = c.prekey_claim_interval_s;
    s->cfg.unknown_lookup_rate = c.unknown_lookup_rate;
    s->cfg.unknown_lookup_burst = c.unknown_lookup_burst;
    s->cfg.blob_finish_fail_rate = c.blob_finish_fail_rate;
    s->cfg.blob_finish_fail_burst = c.blob_finish_fail_burst;
    pthread_mutex_unlock(&s->limits_lock);
    atomic_fetch_add(&s->suspension_gen, 1);
    /* a suspended account's connections close now, not when they next send */
    msv_server_recheck_all(s);
    msv_log(MSV_LOG_INFO, "reloaded", "payload_limit=%llu", (unsigned long long)c.payload_limit);
    msv_notify("READY=1\nSTATUS=serving");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    if (sig == SIGHUP)
        reload(arg);
    else
        begin_stop(arg, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* missive-admin's orders on the control socket (control.h). */
static void on_control(evutil_socket_t fd, short what, void *arg)
{
    struct msv_server *s = arg;
    uint64_t account_id;
    msv_err err;

    (void)what;
    while ((err = msv_control_read(fd, &account_id)) != MSV_ERR_AGAIN) {
        if (err == MSV_OK) {
            msv_log(MSV_LOG_INFO, "suspension_told", "account=%llu",
                    (unsigned long long)account_id);
            msv_server_account_suspended(s, account_id);
        } else if (err == MSV_ERR_PARSE) {
            msv_log(MSV_LOG_WARN, "control_refused", "reason=\"not an order\"");
        } else {
            break;
        }
    }
}

static void start_control(struct msv_server *s, struct event_base *base)
{
    if (msv_control_open(s->cfg.data_dir, &s->control_fd, s->control_path,
                         sizeof(s->control_path)) != MSV_OK) {
        /* suspensions then reach connected devices at the next reload */
        msv_log(MSV_LOG_WARN, "control_failed", "file=\"%s/missived.ctl\" reason=\"%s\"",
                s->cfg.data_dir, strerror(errno));
        s->control_fd = -1;
        return;
    }
    s->control_ev = event_new(base, s->control_fd, EV_READ | EV_PERSIST, on_control, s);
    if (s->control_ev == NULL || event_add(s->control_ev, NULL) != 0)
        msv_log(MSV_LOG_WARN, "control_failed", "reason=\"out of memory\"");
}

/* Drops rate-limit buckets that are full again, so idle keys cost no memory. */
static void prune_buckets(struct msv_u64map *map, double rate, double burst, int64_t now)
{
    for (size_t i = 0; i < map->cap; i++) {
        struct msv_bucket *b;

        if (map->keys[i] == 0)
            continue;
        b = map->values[i];
        if (b->tokens + (double)(now - b->updated_ms) / 1000.0 * rate >= burst) {
            free(msv_u64map_del(map, map->keys[i]));
            i--; /* the deletion may have shifted another key into slot i */
        }
    }
}

/* Drops the buckets of map not updated for age_ms (leases that can no longer be spent). */
static void prune_leases(struct msv_u64map *map, int64_t now, int64_t age_ms)
{
    for (size_t i = 0; i < map->cap; i++) {
        if (map->keys[i] != 0 &&
            now - ((struct msv_bucket *)map->values[i])->updated_ms >= age_ms) {
            free(msv_u64map_del(map, map->keys[i]));
            i--; /* the deletion may have shifted another key into slot i */
        }
    }
}

int msv_server_quota_notice_due(struct msv_server *s, uint64_t device_id)
{
    int64_t now = msv_server_now_ms(s);
    struct msv_bucket *b;
    int due = 0;

    pthread_mutex_lock(&s->limits_lock);
    b = msv_u64map_get(&s->quota_noticed, device_id);
    if (b == NULL && (b = calloc(1, sizeof(*b))) != NULL &&
        msv_u64map_put(&s->quota_noticed, device_id, b) != MSV_OK) {
        free(b);
        b = NULL;
    } else if (b != NULL && b->updated_ms == 0) {
        due = 1; /* new */
    }
    if (b != NULL && (due || now - b->updated_ms >= QUOTA_NOTICE_EVERY_MS)) {
        b->updated_ms = now;
        due = 1;
    }
    pthread_mutex_unlock(&s->limits_lock);
    return due;
}

static void on_expiry(evutil_socket_t fd, short what, void *arg)
{
    struct msv_server *s = arg;
    int64_t now = msv_server_now_ms(s);
    size_t expired = 0;

    (void)fd;
    (void)what;
    if (s->store->ops->queue_expire(s->store->impl, now, &expired) == MSV_OK && expired > 0) {
        atomic_fetch_add(&s->m.envelopes_expired, expired);
        msv_log(MSV_LOG_INFO, "queue_expired", "envelopes=%zu", expired);
    }
    msv_blobs_expire(s, now);
    if (msv_mono_ms() - s->blobs_swept_ms >= BLOB_SWEEP_EVERY_MS)
        msv_blobs_sweep(s);
    pthread_mutex_lock(&s->limits_lock);
    for (int l = 0; l < MSV_LIMIT_COUNT; l++) {
        double rate, burst;

        limit_rate(&s->cfg, (enum msv_limit)l, &rate, &burst);
        prune_buckets(&s->buckets[l], rate, burst, now);
    }
    prune_leases(&s->send_leases, now, LEASE_MS);
    prune_leases(&s->quota_noticed, now, QUOTA_NOTICE_EVERY_MS);
    pthread_mutex_unlock(&s->limits_lock);
}

/*
 * Refuses a directory of missived's that another user may write (or owns): they could replace
 * the database, the log key or an attachment's file, or link one elsewhere.
 */
static msv_err dir_private(const char *dir, char *err, size_t err_len)
{
    struct stat st;

    if (stat(dir, &st) != 0) {
        snprintf(err, err_len, "cannot use %s: %s", dir, strerror(errno));
        return MSV_ERR_IO;
    }
    if (msv_privdir_is_private(&st))
        return MSV_OK;
    snprintf(err, err_len,
             "%s is %s (mode %04o, owner %lu): other users could replace its files; make it "
             "owned by the user missived runs as, and writable by it alone (chmod 700)",
             dir, S_ISDIR(st.st_mode) ? "not private" : "not a directory",
             (unsigned)(st.st_mode & 07777), (unsigned long)st.st_uid);
    return MSV_ERR_INVALID;
}

static msv_err make_dirs(const struct msv_config *c, char *err, size_t err_len)
{
    const char *dirs[] = {c->data_dir, msv_config_shared_dir(c)};
    msv_err e = MSV_OK;

    for (size_t i = 0; i < 2 && e == MSV_OK; i++) {
        if (mkdir(dirs[i], 0700) != 0 && errno != EEXIST) {
            snprintf(err, err_len, "cannot create %s: %s", dirs[i], strerror(errno));
            return MSV_ERR_IO;
        }
        e = dir_private(dirs[i], err, err_len);
    }
    /* the attachments' directory too, if there is one, before anything is opened or made */
    if (e == MSV_OK) {
        char blobs[sizeof(c->data_dir) + 8];
        struct stat st;

        snprintf(blobs, sizeof(blobs), "%s/blobs", msv_config_shared_dir(c));
        if (lstat(blobs, &st) == 0)
            e = dir_private(blobs, err, err_len);
    }
    return e;
}

/*
 * The bucket keys' secret, from the log key every node of a cluster reads from shared_dir: the
 * same on all nodes, so that their keys for one handle meet in Redis, and unknown to clients.
 * With a Redis, the shared buckets.
 */
static msv_err limits_init(struct msv_server *s, char *err, size_t err_len)
{
    static const char domain[] = "missived bucket keys v1";
    crypto_generichash_state st;

    if (crypto_generichash_init(&st, s->kt.secret_key, 64, sizeof(s->limit_key)) != 0 ||
        crypto_generichash_update(&st, (const uint8_t *)domain, sizeof(domain) - 1) != 0 ||
        crypto_generichash_final(&st, s->limit_key, sizeof(s->limit_key)) != 0)
        return MSV_ERR_INVALID;
    if (s->cfg.redis[0] == '\0')
        return MSV_OK;
    if (msv_shared_limits_new(s->cfg.redis, s->cfg.redis_timeout_ms, &s->shared_limits) != MSV_OK) {
        snprintf(err, err_len, "[cluster] redis: expected HOST:PORT");
        return MSV_ERR_INVALID;
    }
    return MSV_OK;
}

static msv_err worker_init(struct msv_server *s, struct msv_worker *w, unsigned index, int fd)
{
    w->srv = s;
    w->index = index;
    pthread_mutex_init(&w->wake_lock, NULL);
    pthread_mutex_init(&w->commit_lock, NULL);
    pthread_cond_init(&w->commit_cond, NULL);
    {
        /*
         * epoll's change list: a write event enabled and disabled again within
         * one loop turn (a frame written out at once) costs no epoll_ctl
         */
        struct event_config *ec = event_config_new();

        if (ec != NULL)
            (void)event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        w->base = ec != NULL ? event_base_new_with_config(ec) : NULL;
        if (ec != NULL)
            event_config_free(ec);
    }
    if (w->base == NULL)
        return MSV_ERR_NOMEM;
    w->wake_ev = event_new(w->base, -1, EV_PERSIST, on_wake, w);
    w->commit_ev = event_new(w->base, -1, EV_PERSIST, on_commit, w);
    w->commit_done_ev = event_new(w->base, -1, EV_PERSIST, on_commit_done, w);
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->accept_pause.resume = evtimer_new(w->base, on_accept_resume, w);
    w->fetch_retry_ev = evtimer_new(w->base, on_fetch_retry, w);
    w->recheck_retry_ev = evtimer_new(w->base, on_recheck_retry, w);
    w->listener = evconnlistener_new(w->base, on_accept, w, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (w->wake_ev == NULL || w->commit_ev == NULL || w->commit_done_ev == NULL ||
        w->stop_ev == NULL || w->listener == NULL || w->accept_pause.resume == NULL ||
        w->fetch_retry_ev == NULL || w->recheck_retry_ev == NULL) {
        if (w->listener == NULL)
            close(fd);
        return MSV_ERR_NOMEM;
    }
    evconnlistener_set_error_cb(w->listener, on_accept_error);
    return committer_begin(w);
}

static msv_err start_listeners(struct msv_server *s, char *err, size_t err_len)
{
    uint16_t port = s->cfg.listen_port;

    for (unsigned i = 0; i < s->worker_count; i++) {
        int fd = bind_listener(s->cfg.listen_host, port, &port);
        msv_err e;

        if (fd < 0) {
            snprintf(err, err_len, "cannot listen on %s:%u: %s", s->cfg.listen_host, port,
                     strerror(errno));
            return MSV_ERR_IO;
        }
        s->port = port; /* with port 0, the later workers join the first one's port */
        e = worker_init(s, &s->workers[i], i, fd);
        if (e != MSV_OK) {
            snprintf(err, err_len, "cannot start worker %u", i);
            return e;
        }
    }
    return MSV_OK;
}

static msv_err write_ports(struct msv_server *s)
{
    char path[1100], tmp[1110];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/missived.ports", s->cfg.data_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL)
        return MSV_ERR_IO;
    ok = fprintf(f, "tls %u\nhttp %u\n", s->port, s->http_port) > 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? MSV_OK : MSV_ERR_IO;
}

/*
 * A start-up that failed on a full disk says so: the store's errors name the
 * file, not the cause. Appends to err when dir's file system has less than
 * 1 MiB left for missived.
 */
static void note_full_disk(const char *dir, char *err, size_t err_len)
{
    struct statvfs st;
    unsigned long long free_bytes;
    size_t used = strlen(err);

    if (statvfs(dir, &st) != 0)
        return;
    free_bytes = (unsigned long long)st.f_bavail * st.f_frsize;
    if (free_bytes < (1ull << 20) && used < err_len)
        snprintf(err + used, err_len - used,
                 "; the disk is full: the file system holding %s has %llu bytes free", dir,
                 free_bytes);
}

msv_err msv_server_new(const struct msv_config *cfg, const char *config_path,
                       struct msv_server **out, char *err, size_t err_len)
{
    struct msv_server *s = calloc(1, sizeof(*s));
    char db[1100];
    msv_err e;

    if (s == NULL)
        return MSV_ERR_NOMEM;
    /* the committer threads wake their event loops: libevent's locks are required */
    if (evthread_use_pthreads() != 0) {
        snprintf(err, err_len, "libevent has no thread support");
        free(s);
        return MSV_ERR_UNSUPPORTED;
    }
    s->control_fd = -1;
    s->cfg = *cfg;
    snprintf(s->config_path, sizeof(s->config_path), "%s", config_path ? config_path : "");
    atomic_store(&s->payload_limit, cfg->payload_limit);
    atomic_store(&s->queue_ttl_ms, cfg->queue_ttl_ms);
    pthread_mutex_init(&s->registry_lock, NULL);
    msv_dircache_init(&s->dir, DIRCACHE_ENTRIES);
    pthread_mutex_init(&s->limits_lock, NULL);
    msv_provisions_init(&s->provisions, &s->m.provision_expired);
    pthread_mutex_init(&s->blob_jobs_lock, NULL);
    pthread_cond_init(&s->blob_jobs_idle, NULL);
    msv_u64map_init(&s->registry);
    for (int l = 0; l < MSV_LIMIT_COUNT; l++)
        msv_u64map_init(&s->buckets[l]);
    msv_u64map_init(&s->conns_per_address);
    msv_u64map_init(&s->requests_only_per_device);
    msv_u64map_init(&s->send_leases);
    msv_u64map_init(&s->quota_noticed);
    msv_log_set_level(cfg->log_level);
    e = make_dirs(cfg, err, err_len);
    if (e != MSV_OK)
        goto fail;
    /* each worker's event loop and its committer thread take a connection at once */
    if (strcmp(cfg->store_backend, "postgres") == 0 && cfg->store_connections < 2 * cfg->workers)
        msv_log(MSV_LOG_WARN, "store_pool_small",
                "connections=%u workers=%u reason=\"[store] connections is below 2 x [server] "
                "workers: requests wait for a connection (at most pool_wait_ms=%u, then are "
                "refused ERROR_IO)\"",
                cfg->store_connections, cfg->workers, cfg->store_pool_wait_ms);
    /* an owner's history check costs a lookup and one per version it proves absent, per handle */
    if (cfg->lookup_burst < (double)(MSV_PT_ABSENT_MAX + 1) * ACCOUNT_HANDLES_MAX)
        msv_log(MSV_LOG_WARN, "lookup_burst_small",
                "lookup_burst=%.0f reason=\"[directory] lookup_burst is below %d: the monitor of "
                "an account with %d handles cannot check their history (each costs %d lookups); "
                "it raises its alarm after a day\"",
                cfg->lookup_burst, (MSV_PT_ABSENT_MAX + 1) * ACCOUNT_HANDLES_MAX,
                ACCOUNT_HANDLES_MAX, MSV_PT_ABSENT_MAX + 1);
    e = msv_config_open_store(cfg, &s->store, err, err_len);
    if (e != MSV_OK)
        goto fail;
    e = msv_kt_log_open(&s->kt, msv_config_shared_dir(cfg), s->store, cfg->trust_store_log,
                        cfg->append_proof_kib * 1024, err, err_len);
    if (e != MSV_OK)
        goto fail;
    s->kt.v4_leaf_fault = cfg->kt_v4_leaf_fault;
    s->kt.cutover_fault = cfg->log_cutover_fault;
    s->kt.read_gate = cfg->log_read_gate;
    s->kt.lookup_gate = cfg->lookup_gate;
    s->kt.keydir.v4_mismatch = cfg->keydir_v4_mismatch;
    if (cfg->leaf_version == 4 &&
        (e = msv_kt_log_cut_over(&s->kt, s->store, msv_server_now_ms(s), err, err_len)) != MSV_OK)
        goto fail;
    /* from now on the store labels each device set it appends, in the append's transaction */
    s->store->ops->kt_set_labeler(s->store->impl, msv_keydir_label, &s->kt.keydir);
    s->store->ops->set_fault_hook(s->store->impl, on_db_fault, s);
    /* under the log's lock: its prover thread keeps proofs in the same cache meanwhile */
    pthread_mutex_lock(&s->kt.lock);
    e = msv_keydir_test_dishonest(&s->kt.keydir, cfg->keydir_forge, cfg->keydir_skip);
    pthread_mutex_unlock(&s->kt.lock);
    if (e != MSV_OK) {
        snprintf(err, err_len, "[testing] keydir_forge and keydir_skip take HANDLE VERSION");
        goto fail;
    }
    pthread_mutex_lock(&s->kt.lock);
    e = msv_keydir_test_rewrite(&s->kt.keydir, cfg->keydir_rewrite);
    pthread_mutex_unlock(&s->kt.lock);
    if (e != MSV_OK) {
        snprintf(err, err_len,
                 "[testing] keydir_rewrite takes 'change INDEX' or 'remove INDEX' of a kept "
                 "entry of a handle");
        goto fail;
    }
    e = limits_init(s, err, err_len);
    if (e != MSV_OK)
        goto fail;
    snprintf(db, sizeof(db), "%s/blobs", msv_config_shared_dir(cfg));
    e = msv_blob_backend_open_dir(db, &s->blobs);
    if (e != MSV_OK) {
        snprintf(err, err_len, "cannot use %s for attachments", db);
        goto fail;
    }
    if ((e = dir_private(db, err, err_len)) != MSV_OK)
        goto fail;
    /* the sweeps start at a random id: a node restarted before its sweeps went round (a store
     * of more old files than a sweep looks at) still reaches every file, in time */
    msv_random_bytes(s->blobs_sweep_from, sizeof(s->blobs_sweep_from));
    s->blobs_sweep_has_from = 1;
    msv_blobs_sweep(s);
    e = msv_tls_server_ctx(cfg, &s->tls, s->fingerprint, err, err_len);
    if (e != MSV_OK)
        goto fail;
    s->worker_count = cfg->workers;
    s->workers = calloc(s->worker_count, sizeof(*s->workers));
    e = s->workers == NULL ? MSV_ERR_NOMEM : start_listeners(s, err, err_len);
    if (e != MSV_OK)
        goto fail;
    *out = s;
    return MSV_OK;
fail:
    note_full_disk(cfg->data_dir, err, err_len);
    if (strcmp(msv_config_shared_dir(cfg), cfg->data_dir) != 0)
        note_full_disk(msv_config_shared_dir(cfg), err, err_len);
    msv_server_free(s);
    return e;
}

static void *worker_main(void *arg)
{
    struct msv_worker *w = arg;

    event_base_dispatch(w->base);
    return NULL;
}

msv_err msv_server_run(struct msv_server *s)
{
    struct msv_worker *w0 = &s->workers[0];
    struct timeval every = {(time_t)(s->cfg.expiry_interval_ms / 1000),
                            (suseconds_t)(s->cfg.expiry_interval_ms % 1000) * 1000};
    char hex[65], log_key[65];

    s->sig_term = evsignal_new(w0->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(w0->base, SIGINT, on_signal, s);
    s->sig_hup = evsignal_new(w0->base, SIGHUP, on_signal, s);
    s->expiry_timer = event_new(w0->base, -1, EV_PERSIST, on_expiry, s);
    if (s->sig_term == NULL || s->sig_int == NULL || s->sig_hup == NULL ||
        s->expiry_timer == NULL || evsignal_add(s->sig_term, NULL) != 0 ||
        evsignal_add(s->sig_int, NULL) != 0 || evsignal_add(s->sig_hup, NULL) != 0 ||
        event_add(s->expiry_timer, &every) != 0)
        return MSV_ERR_NOMEM;
    signal(SIGPIPE, SIG_IGN);
    /* a file-size limit reached is a failed write (EFBIG) to report, like a full disk */
    signal(SIGXFSZ, SIG_IGN);
    if (s->cfg.http_enabled && msv_http_start(s) != MSV_OK) {
        msv_log(MSV_LOG_ERROR, "http_failed", "listen=%s:%u", s->cfg.http_host, s->cfg.http_port);
        return MSV_ERR_IO;
    }
    if (write_ports(s) != MSV_OK) {
        char why[1400];

        snprintf(why, sizeof(why), "%s", strerror(errno));
        note_full_disk(s->cfg.data_dir, why, sizeof(why));
        msv_log(MSV_LOG_ERROR, "start_failed", "file=\"%s/missived.ports\" reason=\"%s\"",
                s->cfg.data_dir, why);
        return MSV_ERR_IO;
    }
    start_control(s, w0->base);
    if (msv_hex_encode(s->fingerprint, 32, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    if (msv_hex_encode(s->kt.public_key, 32, log_key, sizeof(log_key)) != MSV_OK)
        log_key[0] = '\0';
    msv_log(MSV_LOG_INFO, "listening",
            "tls=%s:%u http=%s:%u workers=%u store=%s fingerprint=%s log_key=%s",
            s->cfg.listen_host, s->port, s->cfg.http_host, s->http_port, s->worker_count,
            s->store->ops->name, hex, log_key);
    if (s->cfg.redis[0] != '\0') {
        char node[160], why[256];

        if (s->cfg.node[0] != '\0')
            snprintf(node, sizeof(node), "%s", s->cfg.node);
        else
            snprintf(node, sizeof(node), "%.100s:%u", s->cfg.listen_host, s->port);
        if (msv_cluster_start(s, s->cfg.redis, node, &s->cluster, why, sizeof(why)) != MSV_OK) {
            msv_log(MSV_LOG_ERROR, "cluster_failed", "reason=\"%s\"", why);
            return MSV_ERR_IO;
        }
        msv_log(MSV_LOG_INFO, "cluster", "node=%s redis=%s", node, s->cfg.redis);
    }
    for (unsigned i = 1; i < s->worker_count; i++) {
        if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0)
            return MSV_ERR_NOMEM;
    }
    {
        char state[400];

        snprintf(state, sizeof(state), "READY=1\nSTATUS=serving on %s:%u\nMAINPID=%ld",
                 s->cfg.listen_host, s->port, (long)getpid());
        msv_notify(state);
    }
    event_base_dispatch(w0->base);
    for (unsigned i = 1; i < s->worker_count; i++)
        pthread_join(s->workers[i].thread, NULL);
    msv_log(MSV_LOG_INFO, "stopped", "workers=%u", s->worker_count);
    return MSV_OK;
}

void msv_server_free(struct msv_server *s)
{
    if (s == NULL)
        return;
    /* first: its thread wakes workers, whose events go below */
    msv_cluster_stop(s->cluster);
    s->cluster = NULL;
    msv_blob_jobs_drain(s); /* their threads post to the workers' bases, freed below */
    msv_http_stop(s);
    for (unsigned i = 0; s->workers != NULL && i < s->worker_count; i++) {
        struct msv_worker *w = &s->workers[i];

        /* a batch still with the committer (a run that failed) is committed, never answered:
         * its connections close below, which a client cannot tell from a crash */
        committer_end(w);
        if (w->inflight != NULL) {
            free_pending(w->inflight->sends, w->inflight->acks_list);
            batch_free(w->inflight);
            w->inflight = NULL;
        }
        while (w->conns != NULL)
            conn_free(w->conns);
        free_pending(w->pending_head, w->acks_head);
        w->pending_head = NULL;
        w->acks_head = NULL;
        if (w->listener != NULL)
            evconnlistener_free(w->listener);
        if (w->wake_ev != NULL)
            event_free(w->wake_ev);
        if (w->commit_ev != NULL)
            event_free(w->commit_ev);
        if (w->commit_done_ev != NULL)
            event_free(w->commit_done_ev);
        if (w->stop_ev != NULL)
            event_free(w->stop_ev);
        if (w->accept_pause.resume != NULL)
            event_free(w->accept_pause.resume);
        if (w->fetch_retry_ev != NULL)
            event_free(w->fetch_retry_ev);
        if (w->recheck_retry_ev != NULL)
            event_free(w->recheck_retry_ev);
        free(w->recheck_ids);
        if (i == 0) {
            if (s->sig_term)
                event_free(s->sig_term);
            if (s->sig_int)
                event_free(s->sig_int);
            if (s->sig_hup)
                event_free(s->sig_hup);
            if (s->expiry_timer)
                event_free(s->expiry_timer);
            if (s->control_ev)
                event_free(s->control_ev);
        }
        if (w->base != NULL)
            event_base_free(w->base);
        free(w->wake_devices);
        free(w->closes);
        pthread_mutex_destroy(&w->wake_lock);
        pthread_mutex_destroy(&w->commit_lock);
        pthread_cond_destroy(&w->commit_cond);
    }
    free(s->workers);
    if (s->control_fd >= 0) {
        close(s->control_fd);
        unlink(s->control_path);
    }
    for (int l = 0; l < MSV_LIMIT_COUNT; l++) {
        for (size_t i = 0; i < s->buckets[l].cap; i++)
            free(s->buckets[l].keys[i] ? s->buckets[l].values[i] : NULL);
        msv_u64map_clear(&s->buckets[l]);
    }
    for (size_t i = 0; i < s->send_leases.cap; i++)
        free(s->send_leases.keys[i] ? s->send_leases.values[i] : NULL);
    msv_u64map_clear(&s->send_leases);
    for (size_t i = 0; i < s->quota_noticed.cap; i++)
        free(s->quota_noticed.keys[i] ? s->quota_noticed.values[i] : NULL);
    msv_u64map_clear(&s->quota_noticed);
    msv_shared_limits_free(s->shared_limits);
    msv_u64map_clear(&s->conns_per_address);
    msv_u64map_clear(&s->requests_only_per_device);
    msv_u64map_clear(&s->registry);
    SSL_CTX_free(s->tls);
    msv_blob_backend_close(s->blobs);
    if (s->store != NULL && s->kt.tree != NULL)
        s->store->ops->kt_set_labeler(s->store->impl, NULL, NULL);
    if (s->store != NULL)
        s->store->ops->set_fault_hook(s->store->impl, NULL, NULL);
    if (s->kt.tree != NULL)
        msv_kt_log_close(&s->kt);
    msv_store_close(s->store);
    pthread_mutex_destroy(&s->registry_lock);
    msv_dircache_free(&s->dir);
    pthread_mutex_destroy(&s->limits_lock);
    msv_provisions_clear(&s->provisions);
    pthread_mutex_destroy(&s->blob_jobs_lock);
    pthread_cond_destroy(&s->blob_jobs_idle);
    free(s);
}
