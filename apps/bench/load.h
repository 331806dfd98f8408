/*
 * The load generator: many TLS 1.3 connections on one libevent loop, each
 * speaking Missive's protocol (authenticated devices that send, receive and
 * acknowledge), MQTT 3.1.1 at QoS 1, or one HTTP/1.1 transfer. Sends carry
 * their send time, so deliveries give latencies.
 */
#ifndef MSV_BENCH_LOAD_H
#define MSV_BENCH_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "missive/crypto.h"
#include "wire/frame.h"
#include "xmpp.h"

enum lproto { LP_MISSIVE, LP_MQTT, LP_HTTP, LP_XMPP };
enum lstate { CS_IDLE, CS_STARTING, CS_READY, CS_CLOSED };

/* Where one connection's messages go. */
struct target {
    /* Missive: recipient handles and every device address (the sender's own excluded) */
    size_t n_handles;
    char (*handles)[32];
    size_t n_devices;
    uint64_t *devices;
    /* MQTT: the topic; XMPP: the recipient's bare JID */
    char topic[40];
    /* MLS: an application message of mls_len bytes to this group (at epoch 0) instead */
    const uint8_t *mls_group;
    size_t mls_group_len, mls_len;
};

struct load;
struct lconn;

/* One transfer on a connection (attachments, HTTP); done is set when it ends. */
struct job {
    int upload;          /* 1: send the bytes; 0: fetch them */
    const uint8_t *data; /* upload: the bytes; download: what they must be */
    size_t size;
    uint8_t sha256[32];
    const char *path; /* HTTP: the path */
    /* progress */
    uint8_t blob_id[32];
    size_t chunk_max;
    size_t sent, done_bytes;
    unsigned inflight;
    int stage;
    int done, failed;
};

struct lconn {
    struct load *L;
    struct bufferevent *bev;
    enum lproto proto;
    int state;
    size_t idx;
    uint16_t port;   /* the server's port; 0: L->port */
    char handle[32]; /* Missive: who authenticates */
    uint64_t device_id;
    char topic_in[40]; /* MQTT: what it subscribes to */
    int mqtt_acks;     /* CONNACK and SUBACK seen */
    /* XMPP: topic_in is the account's local part (its password derives from it) */
    struct xmpp_reader xr;
    int xstage;                   /* where the log-in is */
    uint32_t x_in, x_acked;       /* stanzas handled (XEP-0198 h), the server's last h */
    int x_restart;                /* a new stream starts after this element */
    const struct target *to;      /* NULL: receives only */
    const struct target *to_list; /* when set: sends go to each of to_n in turn */
    size_t to_n, to_next;
    int lookups; /* sends lookups instead of messages */
    unsigned outstanding;
    uint64_t next_req;
    uint16_t mqtt_pid;
    struct job *job;
    size_t http_header_len, http_body_len; /* HTTP response in progress */
};

struct load {
    struct event_base *base;
    SSL_CTX *ctx;
    uint16_t port;
    unsigned sources; /* source addresses 127.0.0.1 .. 127.0.0.<sources> */
    struct lconn *c;
    size_t n, next_start, pending, ready, failed, lost;
    const struct msv_identity *key; /* every Missive device signs with it */

    /* traffic */
    unsigned window; /* closed loop: requests in flight per connection */
    int closed_loop; /* keep window requests in flight */
    double rate;     /* open loop: messages per second in all (0: off) */
    double rate_due, rate_last;
    size_t rr;
    size_t payload;
    size_t lookup_space; /* lookups ask for one of this many accounts */
    uint64_t send_limit; /* closed loop stops after this many sends (0: no limit) */
    uint64_t sent, accepted, delivered, errors, lookups_done;
    uint64_t mls_queued; /* copies the MLS sends taken were queued for (MlsSent.queued) */
    int record;
    double *lat;
    size_t lat_n, lat_cap;
    char first_error[240];
    const char *peer_name; /* XMPP: the server's name in errors */
    struct event *tick;
    int (*until)(struct load *L);
    double deadline;
};

void load_init(struct load *L, uint16_t port, const struct msv_identity *key);
void load_free(struct load *L);
/* Connects L->c[0..n) (filled by the caller: proto, handle, device, topic, target). */
struct lconn *load_alloc(struct load *L, size_t n);
/* Starts the connections and runs until all are ready (or failed). Returns the ready count. */
size_t load_connect(struct load *L, double timeout_s);
/* Runs the loop for seconds, or until until(L) is true (when set). */
void load_run(struct load *L, double seconds);
/* Closes every connection. */
void load_close(struct load *L);
/* Starts sending on every connection with a target (closed loop) */
void load_kick(struct load *L);
/* Starts c->job: an attachment transfer over Missive (an upload creates the blob; a
 * download needs blob_id), or an HTTP request for c->job->path. */
void blob_start(struct lconn *c);
void http_start(struct lconn *c);
/* Sorts the recorded latencies (milliseconds). */
void load_sort_latencies(struct load *L);

#endif
