/*
 * The load generator (load.h). One event loop on the loader core; connections
 * start a bounded number at a time so that the servers' accept queues never
 * overflow; sends are closed loop (a window of requests in flight on every
 * connection) or open loop (a fixed rate spread round-robin).
 */
#define _GNU_SOURCE
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "bench.h"
#include "crypto/internal.h"
#include "missive/util.h"

#define PENDING_MAX 128 /* handshakes in progress at once */
#define REQ_HELLO 1
#define REQ_AUTH 2
#define REQ_FIRST 10
#define ACKS_MAX 512
#define XMPP_DOMAIN "bench" /* the XMPP servers' one virtual host (bench/xmpp) */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static double mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void note_error(struct load *L, const char *what, const uint8_t *msg, size_t len)
{
    L->errors++;
    if (L->first_error[0] == '\0')
        snprintf(L->first_error, sizeof(L->first_error), "%s: %.*s", what, (int)len,
                 (const char *)msg);
}

static void conn_ready(struct lconn *c)
{
    c->state = CS_READY;
    c->L->ready++;
    c->L->pending--;
}

static void conn_lost(struct lconn *c)
{
    struct load *L = c->L;

    if (c->state == CS_STARTING) {
        L->failed++;
        L->pending--;
    } else if (c->state == CS_READY) {
        L->lost++;
        L->ready--;
    }
    c->state = CS_CLOSED;
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
}

/* ---- Missive -------------------------------------------------------------------------- */

static void send_frame(struct lconn *c, Msv__Wire__Frame *f)
{
    uint8_t *buf = NULL;
    size_t len = 0;

    if (msv_frame_encode(f, MSV_FRAME_MAX_LIMIT, &buf, &len) != MSV_OK)
        die("cannot encode a frame");
    bufferevent_write(c->bev, buf, len);
    free(buf);
}

static void put_stamp(uint8_t *p)
{
    uint64_t t = (uint64_t)mono_ns();

    memcpy(p, &t, sizeof(t));
}

static void take_latency(struct load *L, const uint8_t *p, size_t len)
{
    uint64_t t;

    L->delivered++;
    if (!L->record || len < sizeof(t))
        return;
    memcpy(&t, p, sizeof(t));
    if (L->lat_n == L->lat_cap) {
        size_t cap = L->lat_cap ? L->lat_cap * 2 : 65536;
        double *n = realloc(L->lat, cap * sizeof(*n));

        if (n == NULL)
            return;
        L->lat = n;
        L->lat_cap = cap;
    }
    L->lat[L->lat_n++] = (mono_ns() - (double)t) / 1e6;
}

/* An MLS application message to t's group: opaque to the delivery service, which copies it
 * to every member device but the sender (the stamp first, for the latency). */
static void missive_mls_send(struct lconn *c, const struct target *t)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsSend q = MSV__WIRE__MLS_SEND__INIT;
    uint8_t *message = calloc(1, t->mls_len);

    if (message == NULL || t->mls_len < 8)
        die("an MLS message the load generator cannot make");
    put_stamp(message);
    q.group_id = (ProtobufCBinaryData){t->mls_group_len, (uint8_t *)t->mls_group};
    q.kind = MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION;
    q.message = (ProtobufCBinaryData){t->mls_len, message};
    f.request_id = c->next_req++;
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_SEND;
    f.mls_send = &q;
    send_frame(c, &f);
    free(message);
    c->outstanding++;
    c->L->sent++;
}

static void missive_send(struct lconn *c)
{
    const struct target *t = c->to_n > 0 ? &c->to_list[c->to_next++ % c->to_n] : c->to;
    struct load *L = c->L;
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__SendRequest q = MSV__WIRE__SEND_REQUEST__INIT;
    Msv__Wire__Envelope env[128], *envp[128];
    ProtobufCBinaryData handles[64];
    uint8_t id[16] = {0}, *payload;

    if (t->mls_group != NULL) {
        missive_mls_send(c, t);
        return;
    }
    payload = calloc(1, L->payload);
    if (payload == NULL || t->n_devices > 128 || t->n_handles > 64)
        die("a send too large for the load generator");
    put_stamp(payload);
    memcpy(id, &c->next_req, sizeof(c->next_req));
    memcpy(id + 8, &c->device_id, sizeof(c->device_id));
    for (size_t i = 0; i < t->n_handles; i++)
        handles[i] = (ProtobufCBinaryData){strlen(t->handles[i]), (uint8_t *)t->handles[i]};
    for (size_t i = 0; i < t->n_devices; i++) {
        msv__wire__envelope__init(&env[i]);
        env[i].recipient_device = t->devices[i];
        env[i].suite = MSV_SUITE_MODERN;
        env[i].ciphertext = (ProtobufCBinaryData){L->payload, payload};
        envp[i] = &env[i];
    }
    q.message_id = (ProtobufCBinaryData){sizeof(id), id};
    q.n_recipient_handles = t->n_handles;
    q.recipient_handles = handles;
    q.n_envelopes = t->n_devices;
    q.envelopes = envp;
    f.request_id = c->next_req++;
    f.body_case = MSV__WIRE__FRAME__BODY_SEND;
    f.send = &q;
    send_frame(c, &f);
    free(payload);
    c->outstanding++;
    L->sent++;
}

static void missive_lookup(struct lconn *c)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LookupRequest q = MSV__WIRE__LOOKUP_REQUEST__INIT;
    ProtobufCBinaryData h;
    char handle[32];

    seed_handle((size_t)random() % c->L->lookup_space, handle);
    h = (ProtobufCBinaryData){strlen(handle), (uint8_t *)handle};
    q.n_handles = 1;
    q.handles = &h;
    f.request_id = c->next_req++;
    f.body_case = MSV__WIRE__FRAME__BODY_LOOKUP;
    f.lookup = &q;
    send_frame(c, &f);
    c->outstanding++;
}

static void mqtt_publish(struct lconn *c);
static void xmpp_publish(struct lconn *c);

static void send_one(struct lconn *c)
{
    if (c->proto == LP_MQTT)
        mqtt_publish(c);
    else if (c->proto == LP_XMPP)
        xmpp_publish(c);
    else if (c->lookups)
        missive_lookup(c);
    else
        missive_send(c);
}

static void keep_window(struct lconn *c)
{
    struct load *L = c->L;

    if (!L->closed_loop || c->state != CS_READY || (c->to == NULL && c->to_n == 0 && !c->lookups))
        return;
    while (c->outstanding < L->window && (L->send_limit == 0 || L->sent < L->send_limit))
        send_one(c);
}

static void missive_hello(struct lconn *c)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Hello h = MSV__WIRE__HELLO__INIT;

    h.protocol_version = MSV_PROTOCOL_VERSION;
    f.request_id = REQ_HELLO;
    f.body_case = MSV__WIRE__FRAME__BODY_HELLO;
    f.hello = &h;
    send_frame(c, &f);
}

static void missive_auth(struct lconn *c, const Msv__Wire__Challenge *ch)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Auth a = MSV__WIRE__AUTH__INIT;
    uint8_t msg[MSV_AUTH_MESSAGE_LEN], sig[MSV_SIGNATURE_MAX];
    size_t sig_len = 0;

    if (msv_auth_message(bufferevent_openssl_get_ssl(c->bev), ch->nonce.data, ch->nonce.len, msg) !=
            MSV_OK ||
        msv_identity_sign(c->L->key, msg, sizeof(msg), sig, &sig_len) != MSV_OK)
        die("cannot sign the challenge");
    a.handle = (ProtobufCBinaryData){strlen(c->handle), (uint8_t *)c->handle};
    a.device_id = c->device_id;
    a.signature = (ProtobufCBinaryData){sig_len, sig};
    f.request_id = REQ_AUTH;
    f.body_case = MSV__WIRE__FRAME__BODY_AUTH;
    f.auth = &a;
    send_frame(c, &f);
}

static void send_acks(struct lconn *c, uint64_t *ids, size_t n)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Ack a = MSV__WIRE__ACK__INIT;

    if (n == 0)
        return;
    a.n_queue_ids = n;
    a.queue_ids = ids;
    f.body_case = MSV__WIRE__FRAME__BODY_ACK; /* request id 0: no answer */
    f.ack = &a;
    send_frame(c, &f);
}

static void blob_step(struct lconn *c, const msv_frame *f);

static void missive_frame(struct lconn *c, const msv_frame *f, uint64_t *acks, size_t *n_acks)
{
    struct load *L = c->L;

    switch (f->body_case) {
    case MSV__WIRE__FRAME__BODY_CHALLENGE:
        missive_auth(c, f->challenge);
        return;
    case MSV__WIRE__FRAME__BODY_DELIVER:
        take_latency(L, f->deliver->ciphertext.data, f->deliver->ciphertext.len);
        acks[(*n_acks)++] = f->deliver->queue_id;
        return;
    case MSV__WIRE__FRAME__BODY_ERROR:
        note_error(L, "missived", f->error->message.data, f->error->message.len);
        if (f->request_id == REQ_AUTH || f->request_id == REQ_HELLO) {
            conn_lost(c);
            return;
        }
        break;
    case MSV__WIRE__FRAME__BODY_OK:
        if (f->request_id == REQ_AUTH) {
            conn_ready(c);
            keep_window(c);
            return;
        }
        L->accepted++;
        break;
    case MSV__WIRE__FRAME__BODY_LOOKUP_RESULT:
        L->lookups_done++;
        break;
    case MSV__WIRE__FRAME__BODY_MLS_SENT:
        L->accepted++;
        L->mls_queued += f->mls_sent->queued;
        break;
    case MSV__WIRE__FRAME__BODY_DEVICE_CHANGE:
        return;
    default:
        break;
    }
    if (c->job != NULL) {
        blob_step(c, f);
        return;
    }
    if (f->request_id >= REQ_FIRST && c->outstanding > 0)
        c->outstanding--;
    keep_window(c);
}

static void missive_read(struct lconn *c, struct evbuffer *in)
{
    uint64_t acks[ACKS_MAX];
    size_t n_acks = 0;

    while (c->state != CS_CLOSED) {
        size_t avail = evbuffer_get_length(in), body_len = 0, used = 0;
        uint8_t hdr[MSV_FRAME_HEADER_LEN];
        const uint8_t *body = NULL;
        msv_frame *f = NULL;
        size_t want;
        uint8_t *p;

        if (avail < sizeof(hdr))
            break;
        evbuffer_copyout(in, hdr, sizeof(hdr));
        want = sizeof(hdr) + ((size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3]);
        if (avail < want)
            break;
        p = evbuffer_pullup(in, (ev_ssize_t)want);
        if (p == NULL ||
            msv_frame_split(p, want, MSV_FRAME_MAX_LIMIT, &body, &body_len, &used) != MSV_OK ||
            msv_frame_decode(body, body_len, &f) != MSV_OK)
            die("missived sent a frame the load generator cannot read");
        missive_frame(c, f, acks, &n_acks);
        msv_frame_free(f);
        evbuffer_drain(in, used);
        if (n_acks == ACKS_MAX) {
            send_acks(c, acks, n_acks);
            n_acks = 0;
        }
    }
    if (c->state != CS_CLOSED)
        send_acks(c, acks, n_acks);
}

/* ---- attachments over Missive ----------------------------------------------------------- */

#define BLOB_WINDOW 4

static void blob_request(struct lconn *c, Msv__Wire__Frame *f)
{
    f->request_id = c->next_req++;
    send_frame(c, f);
    c->job->inflight++;
}

static void blob_more(struct lconn *c)
{
    struct job *j = c->job;

    while (j->inflight < BLOB_WINDOW && j->sent < j->size) {
        Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
        size_t n = j->size - j->sent < j->chunk_max ? j->size - j->sent : j->chunk_max;

        if (j->upload) {
            Msv__Wire__BlobChunk ch = MSV__WIRE__BLOB_CHUNK__INIT;

            ch.blob_id = (ProtobufCBinaryData){32, j->blob_id};
            ch.offset = j->sent;
            ch.data = (ProtobufCBinaryData){n, (uint8_t *)j->data + j->sent};
            f.body_case = MSV__WIRE__FRAME__BODY_BLOB_CHUNK;
            f.blob_chunk = &ch;
            blob_request(c, &f);
        } else {
            Msv__Wire__BlobGet g = MSV__WIRE__BLOB_GET__INIT;

            g.blob_id = (ProtobufCBinaryData){32, j->blob_id};
            g.offset = j->sent;
            g.length = (uint32_t)n;
            f.body_case = MSV__WIRE__FRAME__BODY_BLOB_GET;
            f.blob_get = &g;
            blob_request(c, &f);
        }
        j->sent += n;
    }
}

/* Starts c->job: an upload creates the blob first; a download needs blob_id set. */
void blob_start(struct lconn *c)
{
    struct job *j = c->job;
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobCreate bc = MSV__WIRE__BLOB_CREATE__INIT;

    j->sent = j->done_bytes = 0;
    j->inflight = 0;
    j->done = j->failed = 0;
    if (!j->upload) {
        j->stage = 1;
        blob_more(c);
        return;
    }
    j->stage = 0;
    bc.size = j->size;
    f.body_case = MSV__WIRE__FRAME__BODY_BLOB_CREATE;
    f.blob_create = &bc;
    blob_request(c, &f);
}

static void blob_step(struct lconn *c, const msv_frame *f)
{
    struct job *j = c->job;

    j->inflight--;
    switch (f->body_case) {
    case MSV__WIRE__FRAME__BODY_BLOB_CREATED:
        if (f->blob_created->blob_id.len != 32 || f->blob_created->chunk_max == 0)
            break;
        memcpy(j->blob_id, f->blob_created->blob_id.data, 32);
        if (j->chunk_max > f->blob_created->chunk_max)
            j->chunk_max = f->blob_created->chunk_max;
        j->stage = 1;
        blob_more(c);
        return;
    case MSV__WIRE__FRAME__BODY_BLOB_PROGRESS:
        j->done_bytes = f->blob_progress->received;
        if (j->done_bytes < j->size) {
            blob_more(c);
        } else if (j->inflight == 0) {
            Msv__Wire__Frame fin = MSV__WIRE__FRAME__INIT;
            Msv__Wire__BlobFinish bf = MSV__WIRE__BLOB_FINISH__INIT;

            bf.blob_id = (ProtobufCBinaryData){32, j->blob_id};
            bf.sha256 = (ProtobufCBinaryData){32, j->sha256};
            fin.body_case = MSV__WIRE__FRAME__BODY_BLOB_FINISH;
            fin.blob_finish = &bf;
            j->stage = 2;
            blob_request(c, &fin);
        }
        return;
    case MSV__WIRE__FRAME__BODY_OK:
        if (j->stage == 2)
            j->done = 1;
        return;
    case MSV__WIRE__FRAME__BODY_BLOB_DATA:
        if (j->done_bytes + f->blob_data->data.len > j->size ||
            memcmp(j->data + j->done_bytes, f->blob_data->data.data, f->blob_data->data.len) != 0)
            break;
        j->done_bytes += f->blob_data->data.len;
        if (j->done_bytes == j->size)
            j->done = 1;
        else
            blob_more(c);
        return;
    default:
        break;
    }
    j->failed = j->done = 1;
}

/* ---- MQTT 3.1.1 --------------------------------------------------------------------------- */

static void mqtt_packet(struct lconn *c, uint8_t type, const uint8_t *var, size_t var_len,
                        const uint8_t *payload, size_t payload_len)
{
    uint8_t hdr[5];
    size_t rem = var_len + payload_len, n = 1;

    hdr[0] = type;
    do {
        hdr[n] = (uint8_t)(rem % 128);
        rem /= 128;
        if (rem > 0)
            hdr[n] |= 0x80;
        n++;
    } while (rem > 0 && n < sizeof(hdr));
    bufferevent_write(c->bev, hdr, n);
    bufferevent_write(c->bev, var, var_len);
    if (payload_len > 0)
        bufferevent_write(c->bev, payload, payload_len);
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);

    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    memcpy(p + 2, s, n);
    return n + 2;
}

static uint16_t next_pid(struct lconn *c)
{
    c->mqtt_pid = (uint16_t)(c->mqtt_pid + 1 == 0 ? 1 : c->mqtt_pid + 1);
    return c->mqtt_pid;
}

static void mqtt_hello(struct lconn *c)
{
    static const uint8_t connect_hdr[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0};
    uint8_t buf[96];
    char id[24];
    size_t n;
    uint16_t pid = next_pid(c);

    /* CONNECT: clean session, no keep-alive (idle connections stay idle) */
    snprintf(id, sizeof(id), "b%zu", c->idx);
    memcpy(buf, connect_hdr, sizeof(connect_hdr));
    n = sizeof(connect_hdr) + put_str(buf + sizeof(connect_hdr), id);
    mqtt_packet(c, 0x10, buf, n, NULL, 0);
    /* SUBSCRIBE to the device's own topic at QoS 1 */
    buf[0] = (uint8_t)(pid >> 8);
    buf[1] = (uint8_t)pid;
    n = 2 + put_str(buf + 2, c->topic_in);
    buf[n++] = 1;
    mqtt_packet(c, 0x82, buf, n, NULL, 0);
}

static void mqtt_publish(struct lconn *c)
{
    struct load *L = c->L;
    uint8_t var[64], *payload = calloc(1, L->payload);
    uint16_t pid = next_pid(c);
    size_t n;

    if (payload == NULL)
        die("out of memory");
    put_stamp(payload);
    n = put_str(var, c->to->topic);
    var[n++] = (uint8_t)(pid >> 8);
    var[n++] = (uint8_t)pid;
    mqtt_packet(c, 0x32, var, n, payload, L->payload);
    free(payload);
    c->outstanding++;
    L->sent++;
}

static void mqtt_read(struct lconn *c, struct evbuffer *in)
{
    struct load *L = c->L;

    while (c->state != CS_CLOSED) {
        size_t avail = evbuffer_get_length(in), rem = 0, hlen = 1, total;
        uint8_t hdr[5], *p;
        int complete = 0;

        if (avail < 2)
            break;
        evbuffer_copyout(in, hdr, avail < sizeof(hdr) ? avail : sizeof(hdr));
        for (size_t mul = 1; hlen < 5 && hlen < avail; mul *= 128) {
            rem += (size_t)(hdr[hlen] & 0x7f) * mul;
            if ((hdr[hlen++] & 0x80) == 0) {
                complete = 1;
                break;
            }
        }
        if (!complete) {
            if (hlen >= 5)
                die("mosquitto sent a packet with a bad length");
            break;
        }
        total = hlen + rem;
        if (avail < total)
            break;
        p = evbuffer_pullup(in, (ev_ssize_t)total);
        switch (p[0] >> 4) {
        case 2: /* CONNACK */
        case 9: /* SUBACK */
            if (rem < 2 || (p[0] >> 4 == 2 && p[hlen + 1] != 0) ||
                (p[0] >> 4 == 9 && (rem < 3 || p[hlen + 2] > 2))) {
                note_error(L, "mosquitto", (const uint8_t *)"refused", 7);
                evbuffer_drain(in, total);
                conn_lost(c);
                return;
            }
            if (++c->mqtt_acks == 2) {
                conn_ready(c);
                keep_window(c);
            }
            break;
        case 4: /* PUBACK */
            L->accepted++;
            if (c->outstanding > 0)
                c->outstanding--;
            keep_window(c);
            break;
        case 3: { /* PUBLISH at QoS 1 */
            size_t tlen = rem >= 2 ? ((size_t)p[hlen] << 8 | p[hlen + 1]) : rem, off;
            uint8_t ack[2];

            if (tlen + 4 > rem || ((p[0] >> 1) & 3) != 1)
                die("mosquitto sent a PUBLISH the load generator cannot read");
            off = hlen + 2 + tlen;
            ack[0] = p[off];
            ack[1] = p[off + 1];
            take_latency(L, p + off + 2, total - off - 2);
            mqtt_packet(c, 0x40, ack, 2, NULL, 0);
            break;
        }
        default:
            break;
        }
        evbuffer_drain(in, total);
    }
}

/* ---- XMPP (direct TLS, XEP-0368) ------------------------------------------------------------ */

/* Log-in stages: each waits for the server's answer to what the one before sent. */
enum { XS_FEATURES, XS_REGISTER, XS_AUTH, XS_FEATURES2, XS_BIND, XS_ENABLE, XS_READY };

static void xmpp_write(struct lconn *c, const char *s)
{
    bufferevent_write(c->bev, s, strlen(s));
}

static void xmpp_stream_open(struct lconn *c)
{
    xmpp_reader_reset(&c->xr);
    xmpp_write(c, "<?xml version='1.0'?><stream:stream to='" XMPP_DOMAIN "' version='1.0' "
                  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
}

static void xmpp_hello(struct lconn *c)
{
    c->xstage = XS_FEATURES;
    c->x_in = c->x_acked = 0;
    xmpp_stream_open(c);
}

/* The account's password: made from its name (the bench's accounts are its own). */
static void xmpp_password(const struct lconn *c, char *out, size_t len)
{
    snprintf(out, len, "pw-%s", c->topic_in);
}

static void xmpp_register(struct lconn *c)
{
    char pw[64], iq[256];

    xmpp_password(c, pw, sizeof(pw));
    snprintf(iq, sizeof(iq),
             "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>%s</username>"
             "<password>%s</password></query></iq>",
             c->topic_in, pw);
    xmpp_write(c, iq);
}

static void xmpp_auth(struct lconn *c)
{
    char pw[64], plain[160], b64[256], out[400];
    size_t n;

    xmpp_password(c, pw, sizeof(pw));
    /* SASL PLAIN: authzid (empty) NUL authcid NUL password */
    n = (size_t)snprintf(plain, sizeof(plain), "%c%s%c%s", 0, c->topic_in, 0, pw);
    if (n >= sizeof(plain))
        die("an XMPP account name too long for the load generator");
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)plain, (int)n);
    snprintf(out, sizeof(out),
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
    xmpp_write(c, out);
}

static void xmpp_publish(struct lconn *c)
{
    struct load *L = c->L;
    size_t cap = L->payload + 256, n;
    char *m = malloc(cap);
    uint8_t stamp[8];

    if (m == NULL || L->payload < 2 * sizeof(stamp))
        die("out of memory, or a payload too short for its send time");
    put_stamp(stamp);
    n = (size_t)snprintf(m, cap, "<message to='%s' type='chat' id='m%u'><body>", c->to->topic,
                         (unsigned)c->next_req++);
    /* the body: the send time in hex, then filler, payload bytes in all */
    for (size_t i = 0; i < sizeof(stamp); i++)
        n += (size_t)snprintf(m + n, cap - n, "%02x", stamp[i]);
    memset(m + n, 'x', L->payload - 2 * sizeof(stamp));
    n += L->payload - 2 * sizeof(stamp);
    n += (size_t)snprintf(m + n, cap - n, "</body></message><r xmlns='urn:xmpp:sm:3'/>");
    bufferevent_write(c->bev, m, n);
    free(m);
    c->outstanding++;
    L->sent++;
}

static int unhex(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static void xmpp_delivered(struct load *L, const struct xmpp_elem *e)
{
    uint8_t stamp[8];

    if (e->body_len < 2 * sizeof(stamp)) {
        take_latency(L, NULL, 0);
        return;
    }
    for (size_t i = 0; i < sizeof(stamp); i++) {
        int hi = unhex(e->body[2 * i]), lo = unhex(e->body[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            take_latency(L, NULL, 0);
            return;
        }
        stamp[i] = (uint8_t)(hi << 4 | lo);
    }
    take_latency(L, stamp, sizeof(stamp));
}

/* The server refused or ended something: the connection is no use any more. */
static void xmpp_fail(struct lconn *c, const char *what, const struct xmpp_elem *e)
{
    char text[200];

    snprintf(text, sizeof(text), "%s (<%s> %s%s)", what, e->name, e->child,
             e->type[0] ? e->type : "");
    note_error(c->L, c->L->peer_name, (const uint8_t *)text, strlen(text));
    conn_lost(c);
}

static void xmpp_element(struct lconn *c, const struct xmpp_elem *e)
{
    struct load *L = c->L;
    int stanza = strcmp(e->name, "message") == 0 || strcmp(e->name, "presence") == 0 ||
                 strcmp(e->name, "iq") == 0;

    if (stanza && c->xstage >= XS_READY)
        c->x_in++; /* XEP-0198: every stanza after <enabled/> counts */
    if (strcmp(e->name, "stream:features") == 0) {
        if (c->xstage == XS_FEATURES) {
            c->xstage = XS_REGISTER;
            xmpp_register(c);
        } else if (c->xstage == XS_FEATURES2) {
            c->xstage = XS_BIND;
            xmpp_write(c, "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          "<resource>bench</resource></bind></iq>");
        }
    } else if (strcmp(e->name, "iq") == 0 && c->xstage == XS_REGISTER && !strcmp(e->id, "reg")) {
        /* registered now, or before (a conflict): logging in says which */
        c->xstage = XS_AUTH;
        xmpp_auth(c);
    } else if (strcmp(e->name, "success") == 0 && c->xstage == XS_AUTH) {
        c->xstage = XS_FEATURES2;
        c->x_restart = 1;
    } else if (strcmp(e->name, "iq") == 0 && c->xstage == XS_BIND && !strcmp(e->id, "bind")) {
        if (strcmp(e->type, "result") != 0) {
            xmpp_fail(c, "resource binding refused", e);
            return;
        }
        c->xstage = XS_ENABLE;
        xmpp_write(c, "<enable xmlns='urn:xmpp:sm:3'/>");
    } else if (strcmp(e->name, "enabled") == 0 && c->xstage == XS_ENABLE) {
        /* available: a message to the bare JID reaches this resource */
        c->xstage = XS_READY;
        xmpp_write(c, "<presence/>");
        c->x_acked = 1; /* the presence: acknowledged with the first message */
        conn_ready(c);
        keep_window(c);
    } else if (strcmp(e->name, "r") == 0 && c->xstage >= XS_READY) {
        char a[80];

        snprintf(a, sizeof(a), "<a xmlns='urn:xmpp:sm:3' h='%u'/>", (unsigned)c->x_in);
        xmpp_write(c, a);
    } else if (strcmp(e->name, "a") == 0 && c->xstage >= XS_READY) {
        char *end;
        unsigned long h = strtoul(e->h, &end, 10);
        uint32_t acked = (uint32_t)h - c->x_acked;

        if (e->h[0] == '\0' || *end != '\0' || h > UINT32_MAX || acked > c->outstanding) {
            xmpp_fail(c, "an acknowledgement of stanzas never sent", e);
            return;
        }
        c->x_acked = (uint32_t)h;
        c->outstanding -= acked;
        L->accepted += acked;
        keep_window(c);
    } else if (strcmp(e->name, "message") == 0 && e->body != NULL) {
        xmpp_delivered(L, e);
    } else if (strcmp(e->name, "failure") == 0 || strcmp(e->name, "failed") == 0 ||
               strcmp(e->name, "stream:error") == 0) {
        xmpp_fail(c, "refused", e);
    }
}

static void xmpp_read(struct lconn *c, struct evbuffer *in)
{
    while (c->state != CS_CLOSED) {
        size_t avail = evbuffer_get_length(in), len = 0;
        const char *why = "";
        struct xmpp_elem e;
        int kind = 0, rc;
        uint8_t *p;

        if (avail == 0)
            break;
        if (avail > XMPP_ITEM_MAX + 1)
            avail = XMPP_ITEM_MAX + 1; /* one byte past the limit: an item over it is refused */
        p = evbuffer_pullup(in, (ev_ssize_t)avail);
        rc = p != NULL ? xmpp_next(&c->xr, p, avail, &kind, &len, &why) : -1;
        if (rc < 0) {
            note_error(c->L, c->L->peer_name, (const uint8_t *)why, strlen(why));
            conn_lost(c);
            return;
        }
        if (rc == 0)
            break;
        if (kind == XK_CLOSE) {
            note_error(c->L, c->L->peer_name, (const uint8_t *)"closed the stream", 17);
            conn_lost(c);
            return;
        }
        if (kind == XK_ELEM) {
            if (xmpp_elem_read(p, len, &e) != 0) {
                note_error(c->L, c->L->peer_name, (const uint8_t *)"an unreadable element", 21);
                conn_lost(c);
                return;
            }
            xmpp_element(c, &e);
        }
        if (c->state == CS_CLOSED)
            return;
        evbuffer_drain(in, len);
        if (c->x_restart) {
            c->x_restart = 0;
            xmpp_stream_open(c);
        }
    }
}

/* ---- HTTP/1.1 (one transfer per connection) ---------------------------------------------- */

#define HTTP_CHUNK (256u * 1024u)

static void http_fill(struct bufferevent *bev, void *arg)
{
    struct lconn *c = arg;
    struct job *j = c->job;

    while (j->upload && j->sent < j->size &&
           evbuffer_get_length(bufferevent_get_output(bev)) < 4 * HTTP_CHUNK) {
        size_t n = j->size - j->sent < HTTP_CHUNK ? j->size - j->sent : HTTP_CHUNK;

        bufferevent_write(bev, j->data + j->sent, n);
        j->sent += n;
    }
}

void http_start(struct lconn *c)
{
    struct job *j = c->job;
    char req[512];

    j->sent = j->done_bytes = 0;
    j->done = j->failed = 0;
    c->http_header_len = c->http_body_len = 0;
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n",
             j->upload ? "PUT" : "GET", j->path, j->upload ? j->size : (size_t)0);
    bufferevent_write(c->bev, req, strlen(req));
    bufferevent_setcb(c->bev, on_read, http_fill, on_event, c);
    http_fill(c->bev, c);
}

static void http_read(struct lconn *c, struct evbuffer *in)
{
    struct job *j = c->job;

    if (j == NULL || j->done)
        return;
    if (c->http_header_len == 0) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        char *head, *cl;
        int status = 0;

        if (end.pos < 0)
            return;
        head = calloc(1, (size_t)end.pos + 1);
        if (head == NULL)
            die("out of memory");
        evbuffer_remove(in, head, (size_t)end.pos);
        evbuffer_drain(in, 4);
        c->http_header_len = (size_t)end.pos + 4;
        if (sscanf(head, "HTTP/1.1 %d", &status) != 1)
            status = 0;
        cl = strcasestr(head, "\r\nContent-Length:");
        c->http_body_len = cl != NULL ? strtoull(cl + 17, NULL, 10) : 0;
        free(head);
        if (status < 200 || status > 299 || (!j->upload && c->http_body_len != j->size)) {
            j->failed = j->done = 1;
            return;
        }
    }
    while (evbuffer_get_length(in) > 0 && j->done_bytes < c->http_body_len) {
        uint8_t buf[65536];
        int n = evbuffer_remove(in, buf, sizeof(buf));

        if (n <= 0)
            break;
        if (!j->upload && memcmp(j->data + j->done_bytes, buf, (size_t)n) != 0)
            j->failed = 1;
        j->done_bytes += (size_t)n;
    }
    if (j->done_bytes >= c->http_body_len)
        j->done = 1;
}

/* ---- connections ------------------------------------------------------------------------ */

static void on_read(struct bufferevent *bev, void *arg)
{
    struct lconn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (c->proto == LP_MISSIVE)
        missive_read(c, in);
    else if (c->proto == LP_MQTT)
        mqtt_read(c, in);
    else if (c->proto == LP_XMPP)
        xmpp_read(c, in);
    else
        http_read(c, in);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct lconn *c = arg;
    (void)bev;

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;

        setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (c->proto == LP_MISSIVE)
            missive_hello(c);
        else if (c->proto == LP_MQTT)
            mqtt_hello(c);
        else if (c->proto == LP_XMPP)
            xmpp_hello(c);
        else
            conn_ready(c);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        unsigned long e = bufferevent_get_openssl_error(c->bev);
        char text[160];

        if (e != 0)
            ERR_error_string_n(e, text, sizeof(text));
        else
            snprintf(text, sizeof(text), "%s", strerror(errno));
        if (c->state == CS_STARTING)
            note_error(c->L, "connect", (const uint8_t *)text, strlen(text));
        if (c->job != NULL && !c->job->done)
            c->job->failed = c->job->done = 1;
        conn_lost(c);
    }
}

static void start_one(struct load *L, struct lconn *c)
{
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons(c->port ? c->port : L->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    SSL *ssl;

    c->L = L;
    c->state = CS_STARTING;
    c->next_req = REQ_FIRST;
    L->pending++;
    if (fd < 0) {
        note_error(L, "socket", (const uint8_t *)strerror(errno), strlen(strerror(errno)));
        conn_lost(c);
        return;
    }
    if (L->sources > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};

        src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + (uint32_t)(c->idx % L->sources));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0)
            die("cannot bind to 127.0.0.%u: %s", 2 + (unsigned)(c->idx % L->sources),
                strerror(errno));
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        note_error(L, "connect", (const uint8_t *)strerror(errno), strlen(strerror(errno)));
        close(fd);
        conn_lost(c);
        return;
    }
    ssl = SSL_new(L->ctx);
    if (ssl != NULL && c->proto == LP_XMPP)
        SSL_set_tlsext_host_name(ssl, XMPP_DOMAIN); /* direct TLS names the domain (XEP-0368) */
    c->bev = ssl != NULL ? bufferevent_openssl_socket_new(
                               L->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE)
                         : NULL;
    if (c->bev == NULL)
        die("cannot create a TLS connection");
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void open_loop(struct load *L, double now)
{
    double due;

    if (L->rate <= 0 || L->n == 0) {
        L->rate_last = now;
        return;
    }
    due = L->rate_due + (now - L->rate_last) * L->rate;
    L->rate_last = now;
    for (size_t scanned = 0; due >= 1 && scanned < L->n; scanned++) {
        struct lconn *c = &L->c[L->rr++ % L->n];

        if (c->state != CS_READY || c->to == NULL || c->outstanding > 1000)
            continue;
        send_one(c);
        due -= 1;
        scanned = 0;
    }
    L->rate_due = due < 1 ? due : 0; /* what could not go out is not owed later */
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct load *L = arg;
    double now = now_s();
    (void)fd;
    (void)what;

    while (L->next_start < L->n && L->pending < PENDING_MAX)
        start_one(L, &L->c[L->next_start++]);
    open_loop(L, now);
    if (now >= L->deadline || (L->until != NULL && L->until(L)))
        event_base_loopbreak(L->base);
}

void load_init(struct load *L, uint16_t port, const struct msv_identity *key)
{
    struct timeval ms = {0, 1000};

    memset(L, 0, sizeof(*L));
    L->port = port;
    L->key = key;
    L->sources = 1;
    L->window = 1;
    L->payload = 256;
    L->peer_name = "xmpp server";
    L->base = event_base_new();
    L->ctx = SSL_CTX_new(TLS_client_method());
    if (L->base == NULL || L->ctx == NULL)
        die("cannot set up the load generator");
    /* TLS 1.3 like every Missive client; the servers are ours, on loopback: no pinning */
    SSL_CTX_set_min_proto_version(L->ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(L->ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(L->ctx, SSL_VERIFY_NONE, NULL);
    L->tick = event_new(L->base, -1, EV_PERSIST, on_tick, L);
    if (L->tick == NULL || event_add(L->tick, &ms) != 0)
        die("cannot start the load generator's timer");
}

struct lconn *load_alloc(struct load *L, size_t n)
{
    load_close(L);
    free(L->c);
    L->c = calloc(n ? n : 1, sizeof(*L->c));
    if (L->c == NULL)
        die("out of memory");
    L->n = n;
    for (size_t i = 0; i < n; i++)
        L->c[i].idx = i;
    L->next_start = L->pending = L->ready = L->failed = L->lost = 0;
    return L->c;
}

static int all_started(struct load *L)
{
    return L->next_start == L->n && L->pending == 0;
}

void load_run(struct load *L, double seconds)
{
    L->deadline = now_s() + seconds;
    L->rate_last = now_s();
    event_base_dispatch(L->base);
}

size_t load_connect(struct load *L, double timeout_s)
{
    int (*saved)(struct load *) = L->until;

    L->until = all_started;
    load_run(L, timeout_s);
    L->until = saved;
    return L->ready;
}

void load_kick(struct load *L)
{
    for (size_t i = 0; i < L->n; i++)
        keep_window(&L->c[i]);
}

void load_close(struct load *L)
{
    for (size_t i = 0; i < L->n; i++) {
        if (L->c[i].bev != NULL) {
            bufferevent_free(L->c[i].bev);
            L->c[i].bev = NULL;
        }
        L->c[i].state = CS_CLOSED;
    }
    L->ready = L->pending = 0;
}

void load_sort_latencies(struct load *L)
{
    sort_doubles(L->lat, L->lat_n);
}

void load_free(struct load *L)
{
    load_close(L);
    free(L->c);
    free(L->lat);
    event_free(L->tick);
    SSL_CTX_free(L->ctx);
    event_base_free(L->base);
    memset(L, 0, sizeof(*L));
}
