#include "client/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "missive/util.h"

#define CONN_FRAME_MAX MSV_FRAME_MAX_DEFAULT
/*
 * Pushes set aside while a request waits for its answer. A server sends at
 * most its delivery window of them (64 by default, but configurable far
 * beyond this), and a dishonest one without end: beyond this, they are
 * dropped unacknowledged, and the relay offers them again on the next
 * connection (msv_conn_has_dropped).
 */
#define CONN_PUSHED_MAX_FRAMES 1024
#define CONN_PUSHED_MAX_BYTES (16u << 20)

/* kept encoded: decoded, a frame can take many times its size on the wire */
struct pushed {
    uint8_t *wire;
    size_t len;
    struct pushed *next;
};

struct msv_conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    uint8_t fingerprint[32];
    uint8_t *in;
    size_t in_len, in_cap;
    uint64_t next_request;
    struct pushed *pushed_head, *pushed_tail;
    size_t pushed_frames, pushed_bytes;
    int dropped; /* pushes were dropped: only a new connection brings them */
    /* the server's words as it closed this connection for a newer one of its device, which
     * took its deliveries (note_replaced) */
    char *ended_why;
    /* a frame that cannot be framed came (its version or length): nothing past it can be
     * trusted, so every read and write after it fails as a lost connection */
    int broken;
    int lock_fd; /* a lock held as long as the connection (msv_conn_hold), or -1 */
};

/* Waits until fd is ready for what SSL wants; MSV_ERR_AGAIN at the deadline. */
static msv_err wait_for(struct msv_conn *c, int ssl_err, int64_t deadline)
{
    struct pollfd p = {.fd = c->fd, .events = ssl_err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
    int64_t left = deadline - msv_mono_ms();
    int rc;

    if (ssl_err != SSL_ERROR_WANT_READ && ssl_err != SSL_ERROR_WANT_WRITE)
        return MSV_ERR_IO;
    if (left <= 0)
        return MSV_ERR_AGAIN;
    do {
        rc = poll(&p, 1, (int)left);
    } while (rc < 0 && errno == EINTR);
    return rc > 0 ? MSV_OK : rc == 0 ? MSV_ERR_AGAIN : MSV_ERR_IO;
}

static int tcp_connect(const char *host, uint16_t port, int timeout_ms)
{
    struct addrinfo hints = {0}, *res = NULL, *ai;
    char service[8];
    int fd = -1;

    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof(service), "%u", port);
    if (getaddrinfo(host, service, &hints, &res) != 0)
        return -1;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        struct pollfd p;
        int err = 0;
        socklen_t len = sizeof(err);

        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
            continue;
        }
        p.fd = fd;
        p.events = POLLOUT;
        if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
            err != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) /* small frames, each awaited: no Nagle delay */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    return fd;
}

msv_err msv_conn_open(const char *host, uint16_t port, const uint8_t pin[32], int timeout_ms,
                      struct msv_conn **out)
{
    struct msv_conn *c = calloc(1, sizeof(*c));
    int64_t deadline = msv_mono_ms() + timeout_ms;
    X509 *cert = NULL;
    unsigned int fp_len = 0;
    msv_err err = MSV_ERR_IO;
    int rc;

    if (c == NULL)
        return MSV_ERR_NOMEM;
    c->next_request = 1;
    c->lock_fd = -1;
    c->fd = tcp_connect(host, port, timeout_ms);
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->fd < 0 || c->ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* the certificate is checked by its pinned fingerprint below, not by a CA */
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        goto fail;
    SSL_set_tlsext_host_name(c->ssl, host);
    while ((rc = SSL_connect(c->ssl)) != 1) {
        /* a server that does not finish the handshake in time is as unreachable as one
         * that refuses the connection */
        if (wait_for(c, SSL_get_error(c->ssl, rc), deadline) != MSV_OK)
            goto fail;
    }
    cert = SSL_get1_peer_certificate(c->ssl);
    err = MSV_ERR_AUTH;
    if (cert == NULL || X509_digest(cert, EVP_sha256(), c->fingerprint, &fp_len) != 1 ||
        fp_len != 32 || (pin != NULL && !msv_equal_ct(pin, c->fingerprint, 32)))
        goto fail;
    X509_free(cert);
    *out = c;
    return MSV_OK;
fail:
    X509_free(cert);
    ERR_clear_error();
    msv_conn_close(c);
    return err;
}

static void drop_pushed(struct msv_conn *c)
{
    while (c->pushed_head != NULL) {
        struct pushed *p = c->pushed_head;

        c->pushed_head = p->next;
        free(p->wire);
        free(p);
    }
    c->pushed_tail = NULL;
    c->pushed_frames = c->pushed_bytes = 0;
}

void msv_conn_close(struct msv_conn *c)
{
    if (c == NULL)
        return;
    drop_pushed(c);
    free(c->ended_why);
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    if (c->lock_fd >= 0) {
        /* its holder's pid goes first: a waiter never names a program that let it go */
        if (ftruncate(c->lock_fd, 0) != 0) {
            /* the pid only names the holder to a waiter */
        }
        close(c->lock_fd); /* the lock goes with the last descriptor of its file */
    }
    free(c->in);
    free(c);
}

void msv_conn_hold(struct msv_conn *c, int lock_fd)
{
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    c->lock_fd = lock_fd;
}

void msv_conn_fingerprint(const struct msv_conn *c, uint8_t out[32])
{
    memcpy(out, c->fingerprint, 32);
}

msv_err msv_conn_send_raw(struct msv_conn *c, const uint8_t *p, size_t len)
{
    int64_t deadline = msv_mono_ms() + 30000;

    if (c->broken)
        return MSV_ERR_IO;
    while (len > 0) {
        int n = SSL_write(c->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (wait_for(c, SSL_get_error(c->ssl, n), deadline) != MSV_OK)
            return MSV_ERR_IO;
    }
    return MSV_OK;
}

void msv_conn_break(struct msv_conn *c)
{
    c->broken = 1;
}

int msv_conn_fd(const struct msv_conn *c)
{
    return c->fd;
}

msv_err msv_conn_send(struct msv_conn *c, const msv_frame *f)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    msv_err err = msv_frame_encode(f, CONN_FRAME_MAX, &buf, &len);

    if (err == MSV_OK)
        err = msv_conn_send_raw(c, buf, len);
    free(buf);
    return err;
}

/* A complete frame from the input buffer, if there is one. */
static msv_err take_frame(struct msv_conn *c, msv_frame **out)
{
    const uint8_t *body = NULL;
    size_t body_len = 0, used = 0;
    msv_err err = msv_frame_split(c->in, c->in_len, CONN_FRAME_MAX, &body, &body_len, &used);

    if (err != MSV_OK && err != MSV_ERR_AGAIN) {
        /* not consumed, it would be read again by every later request: the stream ends here,
         * as a server's that cannot be read (what was asked is tried again, not failed) */
        c->broken = 1;
        return MSV_ERR_IO;
    }
    if (err != MSV_OK)
        return err;
    err = msv_frame_decode(body, body_len, out);
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    return err;
}

static msv_err read_frame(struct msv_conn *c, int timeout_ms, msv_frame **out)
{
    int64_t deadline = msv_mono_ms() + timeout_ms;

    if (c->broken)
        return MSV_ERR_IO;
    for (;;) {
        msv_err err = take_frame(c, out);
        int n;

        if (err != MSV_ERR_AGAIN)
            return err;
        if (c->in_cap - c->in_len < 16384) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
            uint8_t *bigger;

            if (cap > 2 * (CONN_FRAME_MAX + MSV_FRAME_HEADER_LEN))
                return MSV_ERR_TOO_BIG;
            bigger = realloc(c->in, cap);
            if (bigger == NULL)
                return MSV_ERR_NOMEM;
            c->in = bigger;
            c->in_cap = cap;
        }
        n = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        err = wait_for(c, SSL_get_error(c->ssl, n), deadline);
        if (err != MSV_OK)
            return err;
    }
}

/* Keeps the server's words if f says it closes c because a newer connection of its device took
 * its deliveries (ERROR_AUTH under request id 0, replaced); the first such words stay. */
static void note_replaced(struct msv_conn *c, const msv_frame *f)
{
    if (f->request_id != 0 || f->body_case != MSV__WIRE__FRAME__BODY_ERROR ||
        f->error->code != MSV__WIRE__ERROR_CODE__ERROR_AUTH || !f->error->replaced ||
        c->ended_why != NULL)
        return;
    c->ended_why = f->error->message.len == 0
                       ? strdup("the server closed this connection")
                       : strndup((const char *)f->error->message.data,
                                 f->error->message.len < 512 ? f->error->message.len : 512);
}

msv_err msv_conn_recv(struct msv_conn *c, int timeout_ms, msv_frame **out)
{
    msv_err err;

    if (c->pushed_head != NULL) {
        struct pushed *p = c->pushed_head;
        const uint8_t *body = NULL;
        size_t body_len = 0, used = 0;

        err = msv_frame_split(p->wire, p->len, CONN_FRAME_MAX, &body, &body_len, &used);
        if (err == MSV_OK)
            err = msv_frame_decode(body, body_len, out);
        c->pushed_head = p->next;
        if (c->pushed_head == NULL)
            c->pushed_tail = NULL;
        c->pushed_frames--;
        c->pushed_bytes -= p->len;
        free(p->wire);
        free(p);
    } else {
        err = read_frame(c, timeout_ms, out);
    }
    if (err == MSV_OK)
        note_replaced(c, *out);
    return err;
}

/* Sets a push aside until msv_conn_recv(), within the bound (else drops it). */
static msv_err keep_pushed(struct msv_conn *c, msv_frame *f)
{
    struct pushed *p = NULL;
    uint8_t *wire = NULL;
    size_t len = 0;
    msv_err err = msv_frame_encode(f, CONN_FRAME_MAX, &wire, &len);

    msv_frame_free(f);
    if (err == MSV_ERR_NOMEM)
        return err;
    if (err != MSV_OK || c->pushed_frames >= CONN_PUSHED_MAX_FRAMES ||
        c->pushed_bytes + len > CONN_PUSHED_MAX_BYTES) {
        /* never acknowledged, so the relay keeps it for the next connection */
        c->dropped = 1;
        free(wire);
        return MSV_OK;
    }
    p = malloc(sizeof(*p));
    if (p == NULL) {
        free(wire);
        return MSV_ERR_NOMEM;
    }
    p->wire = wire;
    p->len = len;
    p->next = NULL;
    c->pushed_frames++;
    c->pushed_bytes += len;
    if (c->pushed_tail != NULL)
        c->pushed_tail->next = p;
    else
        c->pushed_head = p;
    c->pushed_tail = p;
    return MSV_OK;
}

msv_err msv_conn_send_request(struct msv_conn *c, msv_frame *req, uint64_t *id)
{
    *id = c->next_request++;
    req->request_id = *id;
    return msv_conn_send(c, req);
}

msv_err msv_conn_request(struct msv_conn *c, msv_frame *req, int timeout_ms, msv_frame **resp)
{
    int64_t deadline = msv_mono_ms() + timeout_ms;
    uint64_t id = c->next_request++;
    msv_err err;

    req->request_id = id;
    err = msv_conn_send(c, req);
    while (err == MSV_OK) {
        msv_frame *f = NULL;
        int64_t left = deadline - msv_mono_ms();

        err = left > 0 ? read_frame(c, (int)left, &f) : MSV_ERR_AGAIN;
        if (err != MSV_OK)
            break;
        if (f->request_id == id) {
            *resp = f;
            return MSV_OK;
        }
        note_replaced(c, f);
        err = keep_pushed(c, f);
    }
    return err == MSV_ERR_AGAIN ? MSV_ERR_IO : err; /* no answer: the server is unreachable */
}

int msv_conn_has_dropped(const struct msv_conn *c)
{
    return c->dropped;
}

const char *msv_conn_ended_why(const struct msv_conn *c)
{
    return c->ended_why;
}

msv_err msv_conn_auth(struct msv_conn *c, const char *handle, uint64_t device_id,
                      const struct msv_identity *id, int timeout_ms, char *why, size_t why_len)
{
    return msv_conn_auth_as(c, handle, device_id, id, 0, timeout_ms, why, why_len);
}

msv_err msv_conn_auth_as(struct msv_conn *c, const char *handle, uint64_t device_id,
                         const struct msv_identity *id, int requests_only, int timeout_ms,
                         char *why, size_t why_len)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Hello hello = MSV__WIRE__HELLO__INIT;
    Msv__Wire__Auth auth = MSV__WIRE__AUTH__INIT;
    uint8_t msg[MSV_AUTH_MESSAGE_LEN], sig[MSV_SIGNATURE_MAX];
    size_t sig_len = 0;
    msv_frame *resp = NULL;
    msv_err err;

    hello.protocol_version = 1;
    req.body_case = MSV__WIRE__FRAME__BODY_HELLO;
    req.hello = &hello;
    err = msv_conn_request(c, &req, timeout_ms, &resp);
    if (err != MSV_OK)
        return err;
    if (resp->body_case != MSV__WIRE__FRAME__BODY_CHALLENGE) {
        msv_frame_free(resp);
        return MSV_ERR_PARSE;
    }
    err = msv_auth_message(c->ssl, resp->challenge->nonce.data, resp->challenge->nonce.len, msg);
    msv_frame_free(resp);
    resp = NULL;
    if (err != MSV_OK)
        return err;
    err = msv_identity_sign(id, msg, sizeof(msg), sig, &sig_len);
    if (err != MSV_OK)
        return err;
    auth.handle.data = (uint8_t *)handle;
    auth.handle.len = strlen(handle);
    auth.device_id = device_id;
    auth.signature.data = sig;
    auth.signature.len = sig_len;
    auth.requests_only = requests_only != 0;
    req.body_case = MSV__WIRE__FRAME__BODY_AUTH;
    req.auth = &auth;
    err = msv_conn_request(c, &req, timeout_ms, &resp);
    if (err != MSV_OK)
        return err;
    err = resp->body_case == MSV__WIRE__FRAME__BODY_OK ? MSV_OK : MSV_ERR_AUTH;
    /* the server's storage failed: worth trying again, the device was not refused */
    if (resp->body_case == MSV__WIRE__FRAME__BODY_ERROR &&
        resp->error->code == MSV__WIRE__ERROR_CODE__ERROR_IO)
        err = MSV_ERR_IO;
    /* too many connections of the device for requests alone: not a refusal of the device */
    if (resp->body_case == MSV__WIRE__FRAME__BODY_ERROR &&
        resp->error->code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED)
        err = MSV_ERR_AGAIN;
    /* the account is gone (AccountDelete): no device of it will be let in again */
    if (resp->body_case == MSV__WIRE__FRAME__BODY_ERROR &&
        resp->error->code == MSV__WIRE__ERROR_CODE__ERROR_ACCOUNT_DELETED)
        err = MSV_ERR_NOT_FOUND;
    /* the server's reason ("authentication failed", "this account is suspended") */
    if (err != MSV_OK && why != NULL && why_len > 0 &&
        resp->body_case == MSV__WIRE__FRAME__BODY_ERROR)
        snprintf(why, why_len, "%.*s", (int)resp->error->message.len,
                 (const char *)resp->error->message.data);
    msv_frame_free(resp);
    return err;
}
