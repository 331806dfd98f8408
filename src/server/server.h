/*
 * missived's core: worker threads, each with its own libevent base and
 * SO_REUSEPORT listener; the registry of connected devices; group commit of
 * sends; and the wake-ups that move deliveries to the worker holding a
 * device's connection. libevent is used only in src/server/.
 */
#ifndef MSV_SERVER_SERVER_H
#define MSV_SERVER_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "server/blob_backend.h"
#include "server/cluster.h"
#include "server/shared_limits.h"
#include "server/config.h"
#include "server/dircache.h"
#include "server/kt_log.h"
#include "server/provision.h"
#include "server/u64map.h"
#include "store/store.h"
#include "wire/frame.h"

struct msv_server;
struct msv_worker;

/* One client connection; owned and freed only by its worker's thread. */
struct msv_conn_state {
    struct msv_worker *w;
    struct bufferevent *bev;
    char peer[64];
    uint64_t peer_key;           /* rate-limit key of the peer address */
    int64_t accepted_ms;         /* authentication must follow within auth_timeout_s */
    int64_t waits_until_ms;      /* a device waiting to be linked: unauthenticated until then */
    int64_t next_take_ms;        /* its next ProvisionTake is looked at from then on */
    struct event *auth_deadline; /* fires auth_timeout_s after accept, handshake or not */
    uint8_t nonce[32];
    int challenged;
    uint64_t device_id; /* 0 until authenticated */
    uint64_t seq;       /* order of registration among all connections (registry_lock) */
    uint64_t order;     /* in a cluster, connection_order at authentication; else 0 */
    /* authenticated for requests alone (Auth.requests_only): the device it is counted for in
     * requests_only_per_device (kept when a revocation zeroes device_id); 0 otherwise */
    uint64_t requests_only;
    uint64_t account_id;
    char *handle;
    unsigned suites;             /* the authenticated device's suites (MSV_SUITE_BIT each) */
    uint64_t suspension_checked; /* the server's suspension_gen when the account was looked at */
    uint64_t last_sent;          /* highest queue id pushed on this connection */
    int more;        /* the queue may hold envelopes past last_sent: set by wake-ups, cleared by a
                        read that found fewer than it asked for */
    int pump_listed; /* on_wake's list of connections to read holds it already */
    uint64_t sync_request; /* a QueueSync waiting for a read that finds the queue's end (0: none) */
    uint64_t sync_last;    /* its answer is due once last_sent reaches this queue id */
    unsigned inflight;     /* pushed, not yet acknowledged */
    unsigned acks_pending; /* of those, acknowledged ids waiting for their commit */
    int reading_paused;    /* too much unsent output: requests wait */
    int finishing;         /* a BlobFinish of this connection is being checked (blobs.c) */
    int commit_paused;     /* the worker's next commit is full: requests wait for it to go */
    /*
     * This connection's sends and acknowledgements waiting for their commit (all of them), and
     * those of them that will be answered (an acknowledgement without a request id is not).
     * Its next request waits until it may be answered in order and sees what they changed
     * (server.c must_wait).
     */
    unsigned commits_waiting, answers_waiting;
    int order_paused; /* reading waits for must_wait to be false */
    int closing;      /* msv_conn_close_soon: nothing more is read */
    struct msv_conn_state *prev, *next;
};

/* A send waiting for its worker's next group commit. */
struct msv_pending_send {
    struct msv_conn_state *c; /* NULL once the connection is gone */
    uint64_t request_id;
    struct msv_queue_in *items;
    uint8_t **ciphertexts; /* owned copies the items point into */
    size_t count;
    char *sender_handle;
    uint64_t account_id; /* the sender's send tokens, given back if a queue cap refuses it */
    uint8_t *own;        /* [count]: the item's device is of the sender's account (NULL: none) */
    struct msv_pending_send *next;
};

/* An acknowledgement waiting for the worker's next group commit. */
struct msv_pending_ack {
    struct msv_conn_state *c; /* NULL once the connection is gone */
    uint64_t request_id;
    struct msv_queue_ack ack; /* ack.ids points at ids */
    unsigned window;          /* of ack.n, how many were pushed and unacknowledged here */
    uint64_t *ids;
    struct msv_pending_ack *next;
};

/*
 * Closes every authenticated connection of a device (device_id) or of an
 * account (account_id) on a worker, except keep (the newest connection) and
 * any registered after it: orders reach the workers in no set order, and one
 * from an older connection must not close a newer one.
 */
struct msv_close_order {
    uint64_t device_id, account_id;
    const struct msv_conn_state *keep; /* compared, never followed */
    uint64_t keep_seq;                 /* keep's registration number; 0 without keep */
    const char *why;                   /* a static text sent before closing; NULL: none */
    int check; /* device_id's connections are closed only if the store says it is gone */
    /* nonzero: only the connections that authenticated before it (their order) close */
    uint64_t before_order;
};
struct msv_blob_job;

/* A group commit handed to a worker's committer thread (server.c). */
struct msv_commit_batch;

/* A listener whose accept() failed rests; the log gets one line per interval. */
struct msv_accept_pause {
    struct event *resume; /* its callback enables the listener again */
    int64_t logged_ms;    /* the last accept_paused log line */
    uint64_t unlogged;    /* pauses since then */
};

struct msv_worker {
    struct msv_server *srv;
    unsigned index;
    pthread_t thread;
    struct event_base *base;
    struct evconnlistener *listener;
    struct msv_accept_pause accept_pause;
    struct event *wake_ev;
    struct event *commit_ev;
    struct event *stop_ev;
    struct event *fetch_retry_ev; /* a failed queue read is tried again (FETCH_RETRY_MS) */
    /* devices whose check after their channel was listened to (msv_server_recheck_device) the
     * store could not answer: asked again later, the wait doubling (server.c); this thread's */
    struct event *recheck_retry_ev;
    uint64_t *recheck_ids;
    size_t recheck_n;
    int recheck_wait_ms;
    pthread_mutex_t wake_lock;
    uint64_t *wake_devices;
    size_t wake_count, wake_cap;
    struct msv_close_order *closes; /* connections to close (wake_lock) */
    size_t close_count, close_cap;
    int recheck;   /* close connections whose device is gone or account suspended (wake_lock) */
    int wake_lost; /* a wake-up found no memory: every connection reads its queue (wake_lock) */
    /* the next group commit: what was read since the last one was handed over */
    struct msv_pending_send *pending_head, *pending_tail;
    struct msv_pending_ack *acks_head, *acks_tail;
    size_t backlog_items, backlog_bytes; /* its envelopes and acknowledged ids, its bytes */
    unsigned commit_paused;              /* connections whose reading waits for it to go */
    /*
     * The group commit in flight, on the committer thread (one at a time). The event loop
     * hands a batch over and takes it back when commit_done_ev fires; the committer sees
     * only the batch's arrays, never a connection.
     */
    struct msv_commit_batch *inflight; /* event loop's; NULL: none */
    struct event *commit_done_ev;
    pthread_t committer;
    int committer_started;
    pthread_mutex_t commit_lock; /* job and committer_quit */
    pthread_cond_t commit_cond;
    struct msv_commit_batch *job; /* for the committer to take (commit_lock) */
    int committer_quit;           /* the committer ends (commit_lock) */
    int stopping;                 /* SIGTERM: the loop ends once nothing waits for a commit */
    int64_t stop_deadline_ms;     /* monotonic: answers not written by then are not waited for
                                     (0: the last commit has not returned yet) */
    struct msv_conn_state *conns;
    struct msv_blob_job *blob_jobs; /* BlobFinish checks running on their own threads */
};

struct msv_metrics {
    _Atomic uint64_t connections_open, connections_total, frames_in, frames_rejected;
    _Atomic uint64_t auth_ok, auth_failed, registrations, devices_added, devices_removed;
    _Atomic uint64_t devices_refused_full; /* add_device: too many pending, or devices */
    _Atomic uint64_t hooks_refused;        /* codes not sent: as many hooks run as may */
    _Atomic uint64_t registrations_refused, invites_used;
    _Atomic uint64_t handles_added, handles_removed, handles_refused;
    _Atomic uint64_t usernames_set, usernames_released, usernames_refused, unknown_lookups_refused;
    _Atomic uint64_t owner_versions; /* versions given to their owners' monitors */
    _Atomic uint64_t lookups, sends, sealed_sends, envelopes_enqueued, envelopes_left_out,
        envelopes_delivered, envelopes_acked;
    _Atomic uint64_t envelopes_expired, commit_batches, commit_failures, rate_limited;
    _Atomic uint64_t health_retries; /* /health's own retries of a failed usage read */
    _Atomic uint64_t commits_in_flight, commit_backlog_paused;
    _Atomic uint64_t blob_bytes_in, blob_bytes_out, blobs_expired, blobs_swept, reads_paused;
    _Atomic uint64_t connections_refused, auth_timeouts, accept_paused, answers_too_big;
    _Atomic uint64_t connections_revoked, suspensions_in, stale_partial;
    _Atomic uint64_t requests_only_open, requests_only_refused; /* Auth.requests_only */
    _Atomic uint64_t cluster_wakes_out, cluster_wakes_in, cluster_connects, cluster_timeouts;
    _Atomic uint64_t cluster_sweeps_out, cluster_sweeps_in;
    /* another node's announcement found a device's connection here newer than its own */
    _Atomic uint64_t cluster_older_announced;
    _Atomic uint64_t store_unavailable, queue_fetch_failures, sends_device_gone;
    /* a device's check the store could not answer: asked again, given up, waiting (gauge) */
    _Atomic uint64_t device_checks_failed, device_checks_given_up, device_checks_waiting;
    _Atomic uint64_t log_reads_again; /* an account's LogRead read again: its handles changed */
    _Atomic uint64_t lookups_again;   /* an owner's Lookup read again: its handles changed */
    _Atomic uint64_t db_faults[MSV_STORE_FAULT_KINDS]; /* by enum msv_store_fault */
    _Atomic uint64_t http_refused, http_timeouts;
    _Atomic uint64_t reports, reports_refused;
    _Atomic uint64_t codes_refused, code_guesses_refused, sends_rate_limited, queue_full,
        quota_notices, claims_refused, claims_throttled, prekeys_exhausted, blobs_refused,
        blob_finish_failed, blob_finish_busy;
    _Atomic uint64_t shared_limits_fallback;
    _Atomic uint64_t admin_requests, admin_unauthorized;
    _Atomic uint64_t provision_opened, provision_refused, provision_delivered, provision_expired;
    _Atomic uint64_t provision_takes_early;
    _Atomic uint64_t mls_key_packages_claimed, mls_last_resort_claims, mls_claims_throttled;
    _Atomic uint64_t mls_commits, mls_stale, mls_messages, mls_copies, mls_refused, mls_skipped,
        mls_log_reads, mls_log_served, mls_welcomes_kept, mls_welcome_reads;
};

struct msv_bucket {
    double tokens;
    int64_t updated_ms;
};

/*
 * Keys: LOOKUP and SEND an account id; REGISTER and SEALED an address key; LOG either; CODE and
 * GUESS a handle's msv_server_key; GUESS_ADDRESS the msv_server_key of (handle's key, address
 * key); CLAIM the msv_server_key of (claiming account, claimed device); BLOB_FINISH a device id;
 * UNKNOWN (lookups of usernames no account has) an account id.
 */
enum msv_limit {
    MSV_LIMIT_LOOKUP,
    MSV_LIMIT_REGISTER,
    MSV_LIMIT_SEALED,
    MSV_LIMIT_LOG,
    MSV_LIMIT_CODE,
    MSV_LIMIT_GUESS_ADDRESS,
    MSV_LIMIT_GUESS,
    MSV_LIMIT_SEND,
    MSV_LIMIT_CLAIM,
    MSV_LIMIT_BLOB_FINISH,
    MSV_LIMIT_UNKNOWN,
    MSV_LIMIT_MLS_CLAIM,     /* MLS KeyPackages, per claimer and device: as MSV_LIMIT_CLAIM */
    MSV_LIMIT_MLS_UPLOAD,    /* MLS KeyPackage uploads, per device */
    MSV_LIMIT_MLS_LOG,       /* reads of MLS commit logs, per account */
    MSV_LIMIT_PREKEY_UPLOAD, /* prekey uploads that carry keys, per device */
    MSV_LIMIT_COUNT
};

struct msv_server {
    struct msv_config cfg;
    char config_path[1024];
    struct msv_store *store;
    struct msv_blob_backend *blobs;
    int64_t blobs_swept_ms; /* monotonic: the last sweep of files no record names */
    /* where the next sweep goes on (the last id the one before looked at), if anywhere */
    uint8_t blobs_sweep_from[MSV_BLOB_ID_LEN];
    int blobs_sweep_has_from;
    SSL_CTX *tls;
    uint8_t fingerprint[32];
    struct msv_worker *workers;
    unsigned worker_count;
    uint16_t port, http_port;

    struct msv_cluster *cluster; /* NULL for a node alone */
    struct msv_dircache dir;     /* handle -> devices, for checking sends */
    struct msv_kt_log kt;        /* the transparency log lookups are answered from */

    pthread_mutex_t registry_lock;
    struct msv_u64map registry; /* device id -> struct msv_conn_state * */
    uint64_t registered;        /* connections registered so far (registry_lock) */

    pthread_mutex_t limits_lock;
    pthread_mutex_t blob_jobs_lock; /* the two counts below, and blob_jobs_idle */
    pthread_cond_t blob_jobs_idle;
    unsigned blob_jobs_running; /* digest threads alive (msv_blob_jobs_drain waits for none) */
    unsigned blob_checks_busy;  /* checks not yet done: held to [blobs] finish_checks */
    uint8_t
        limit_key[16]; /* what msv_server_key hashes with; from the log key: alike on all nodes */
    struct msv_shared_limits *shared_limits;    /* the cluster's buckets; NULL for a node alone */
    _Atomic int64_t shared_fallback_logged;     /* when a fallback was last logged (mono ms) */
    struct msv_u64map buckets[MSV_LIMIT_COUNT]; /* key -> struct msv_bucket * */
    struct msv_u64map conns_per_address;        /* address key -> open connections (as a pointer) */
    struct msv_u64map requests_only_per_device; /* device -> its connections for requests alone */
    struct msv_u64map send_leases; /* account -> struct msv_bucket *: send tokens from Redis */
    /* device -> struct msv_bucket *: when its account was last told its queue is full */
    struct msv_u64map quota_noticed;

    /* settings SIGHUP may change while workers run */
    _Atomic uint64_t payload_limit, queue_ttl_ms;
    /* bumped on reload: connected devices' accounts are checked for suspension again */
    _Atomic uint64_t suspension_gen;

    struct msv_metrics m;
    /* the database's failures of each kind: when one was last logged, and how many were not */
    _Atomic int64_t db_fault_logged_ms[MSV_STORE_FAULT_KINDS];
    _Atomic uint64_t db_fault_unlogged[MSV_STORE_FAULT_KINDS];
    struct msv_provisions provisions; /* addresses of devices being linked by QR code */
    _Atomic int commit_failing;       /* the last group commit failed: /health answers 503 */
    /*
     * The last read of the recipients' queue usage (check_caps) failed: sends are refused. 0 or
     * the failure's number (msv_server_failing), so that /health's own retry clears only the
     * failure it retried, never a newer one (http.c, retry_failed).
     */
    _Atomic int usage_failing;
    _Atomic uint32_t failure_seq; /* numbers the failures of usage_failing */
    _Atomic int fetch_failing;    /* the last queue read failed: deliveries wait (pump_all) */
    _Atomic int stopping;
    struct evhttp *http;
    struct msv_http_conns *http_conns;    /* http.c's: the port's connections and their deadlines */
    struct evconnlistener *http_listener; /* owned by http */
    struct msv_accept_pause http_pause;   /* owned here; its timer's argument is the server */
    struct event *sig_term, *sig_int, *sig_hup, *expiry_timer;
    int control_fd;         /* missive-admin's control socket; -1: none */
    char control_path[108]; /* its file, removed at the end */
    struct event *control_ev;
};

/* Creates the server: data directory, store, TLS, listeners. Nothing runs yet. */
MSV_MUST_CHECK msv_err msv_server_new(const struct msv_config *cfg, const char *config_path,
                                      struct msv_server **out, char *err, size_t err_len);
/* Runs the workers until SIGTERM/SIGINT (or msv_server_stop); returns after a clean stop. */
MSV_MUST_CHECK msv_err msv_server_run(struct msv_server *s);
void msv_server_free(struct msv_server *s);

int64_t msv_server_now_ms(struct msv_server *s);

/*
 * A wake-up with this bit set closes the device's connections instead (the
 * device was removed): every one, on every worker, and on the other nodes.
 */
#define MSV_WAKE_CLOSE (1ull << 63)

/* Counts a connection of device_id for requests alone in (+1) or out (-1); 0 if the device
 * has [server] max_request_connections of them on this node already (refused, counted). */
int msv_server_count_requests_only(struct msv_server *s, uint64_t device_id, int delta);
/*
 * Closes every connection of device_id (or, with device_id 0, of
 * account_id) on every worker of this node but keep (may be NULL), after
 * sending why (a static text; NULL: nothing) as an Error; with no why (a
 * newer connection replaces them), not those for requests alone.
 */
void msv_server_close_conns(struct msv_server *s, uint64_t device_id, uint64_t account_id,
                            const struct msv_conn_state *keep, const char *why);
/* Closes device_id's connections here that take deliveries and authenticated before the one
 * of order (connection_order) another node announced; a newer one stays. */
void msv_server_close_older(struct msv_server *s, uint64_t device_id, uint64_t order);
/*
 * account_id was suspended (missive-admin said so, here or on another node):
 * its connections on every worker close now, if the store agrees.
 */
void msv_server_account_suspended(struct msv_server *s, uint64_t account_id);
/*
 * The operator asked that account_id's connections end (POST /admin/disconnect, here or on
 * another node): they close now on every worker, whatever the store says; the devices may
 * connect again at once.
 */
void msv_server_account_disconnect(struct msv_server *s, uint64_t account_id);
/*
 * Every worker checks each of its connections against the store (device
 * still there, account not suspended) and closes those that fail.
 */
void msv_server_recheck_all(struct msv_server *s);
/* Closes device_id's connections here if the store says it was removed: for a removal told on
 * Redis before this node listened to the device's channel (asked again while the store fails). */
void msv_server_recheck_device(struct msv_server *s, uint64_t device_id);
/* The why of a removed device's connections (the log tells it by its address). */
extern const char msv_server_removed_text[];

/*
 * Tells the worker holding device_id's connection to push its queue; a
 * device connected to another node is woken through the cluster.
 */
void msv_server_wake(struct msv_server *s, uint64_t device_id);
/* The same for this node's connections only (what the cluster calls). */
void msv_server_wake_local(struct msv_server *s, uint64_t device_id);

/* ---- used by the request handlers (handlers.c, blobs.c) ---- */

/* Short names for the wire's error codes. */
enum {
    E_INVALID = MSV__WIRE__ERROR_CODE__ERROR_INVALID,
    E_AUTH = MSV__WIRE__ERROR_CODE__ERROR_AUTH,
    E_TOO_BIG = MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG,
    E_IO = MSV__WIRE__ERROR_CODE__ERROR_IO,
    E_NOT_FOUND = MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND,
    E_EXISTS = MSV__WIRE__ERROR_CODE__ERROR_EXISTS,
    E_UNAUTH = MSV__WIRE__ERROR_CODE__ERROR_UNAUTHENTICATED,
    E_RATE = MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED,
    E_PROOF_GONE = MSV__WIRE__ERROR_CODE__ERROR_PROOF_GONE,
    E_STALE = MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES,
    E_BAD_APPROVAL = MSV__WIRE__ERROR_CODE__ERROR_BAD_APPROVAL,
};

/*
 * The largest answer: frame_max, but no more than every client reads
 * (MSV_FRAME_MAX_DEFAULT). An answer that does not fit is sent as
 * ERROR_TOO_BIG instead; deliveries are bounded by payload_limit.
 */
size_t msv_server_answer_max(const struct msv_server *s);
void msv_conn_send_frame(struct msv_conn_state *c, const msv_frame *f);
void msv_conn_send_error(struct msv_conn_state *c, uint64_t request_id, int code,
                         const char *message);
void msv_conn_send_ok(struct msv_conn_state *c, uint64_t request_id);
/* Pushes queued envelopes up to the delivery window (if the queue may hold more). */
void msv_conn_pump(struct msv_conn_state *c);
/* Closes after the output drains. */
void msv_conn_close_soon(struct msv_conn_state *c);
/* Takes cost tokens from key's bucket of that limit; 0 if there are not enough. */
int msv_server_take_token(struct msv_server *s, enum msv_limit limit, uint64_t key, double cost);
/*
 * Takes as many whole tokens as key's bucket holds, up to want; returns how
 * many (0: none, counted as rate-limited). A negative want gives -want back.
 */
size_t msv_server_take_upto(struct msv_server *s, enum msv_limit limit, uint64_t key, long want);
/* Gives back cost tokens taken for a request that then did nothing. */
void msv_server_refund_token(struct msv_server *s, enum msv_limit limit, uint64_t key, double cost);
/*
 * A non-zero bucket key for len bytes (a handle, a pair of ids), keyed with a secret that
 * clients do not know, so that they cannot choose colliding inputs, and that every node of a
 * cluster derives alike from the log key they share, so that their shared buckets agree.
 */
uint64_t msv_server_key(const struct msv_server *s, const void *data, size_t len);
/* Queues a send for the worker's next group commit (takes ownership of p). */
void msv_worker_queue_send(struct msv_worker *w, struct msv_pending_send *p);
void msv_pending_send_free(struct msv_pending_send *p);
/* Queues an acknowledgement for the same commit (takes ownership of a). */
void msv_worker_queue_ack(struct msv_worker *w, struct msv_pending_ack *a);
void msv_pending_ack_free(struct msv_pending_ack *a);

/* The normalised handle of b into out (MSV_HANDLE_MAX + 1); 0 if b is not a handle. */
int msv_server_handle_normalise(ProtobufCBinaryData b, char *out);
/* Sets flag (usage_failing) to a new failure's number if failed, else to 0. */
void msv_server_failing(struct msv_server *s, _Atomic int *flag, int failed);
/* 1 if one more envelope of len bytes would pass the queue caps of u's device. */
int msv_server_queue_is_full(const struct msv_server *s, const struct msv_queue_usage *u,
                             size_t len);
/* A send refused (or left out, MLS) for the full queues of n devices: counted for each, in one
 * transaction, and their accounts told (handlers.c); device_ids is sorted in place. */
void msv_server_queue_refused(struct msv_server *s, uint64_t *device_ids, size_t n);

/* mls_ds.c: the MLS delivery service's requests (docs/wire.md, "MLS delivery"). */
void msv_mls_key_package_upload(struct msv_conn_state *c, const msv_frame *f);
void msv_mls_key_package_claim(struct msv_conn_state *c, const msv_frame *f);
void msv_mls_send(struct msv_conn_state *c, const msv_frame *f);
void msv_mls_groups_list(struct msv_conn_state *c, const msv_frame *f);
void msv_mls_commits_get(struct msv_conn_state *c, const msv_frame *f);
void msv_mls_welcome_get(struct msv_conn_state *c, const msv_frame *f);

/* handlers.c: one decoded frame from c. */
void msv_handle_frame(struct msv_conn_state *c, const msv_frame *f);
/* Connection c holds a provisioning address: it may stay unauthenticated, waiting to be linked,
 * as long as the address lasts (server.c). */
void msv_conn_waits_for_link(struct msv_conn_state *c, int64_t ms);
/* In a cluster: connection c's provisioning address leaves Redis with c (handlers.c). */
void msv_provision_shared_forget(struct msv_server *s, const void *c);
/* With pending: the device was added with the account password (AddDevice). */
#define MSV_NOTIFY_BY_PASSWORD 2
/*
 * Enqueues a DeviceChange notice to every device of account except
 * except_device. pending: added, and waiting for one of the account's devices
 * to approve it (or'ed with MSV_NOTIFY_BY_PASSWORD); approver and approval (empty: none): who
 * approved it, with the signature the approving device sent.
 */
/* Deletes handle's account and cuts its devices off (handlers.c); MSV_ERR_NOT_FOUND if none. */
MSV_MUST_CHECK msv_err msv_server_delete_account(struct msv_server *s, const char *handle);
void msv_notify_device_change(struct msv_server *s, uint64_t account_id, const char *handle,
                              uint64_t except_device, int added, int pending,
                              const struct msv_device_rec *dev, uint64_t approver,
                              ProtobufCBinaryData approval);

/* blobs.c: the attachment requests */
void msv_blob_create(struct msv_conn_state *c, const msv_frame *f);
void msv_blob_chunk(struct msv_conn_state *c, const msv_frame *f);
void msv_blob_status(struct msv_conn_state *c, const msv_frame *f);
void msv_blob_finish(struct msv_conn_state *c, const msv_frame *f);
void msv_blob_get(struct msv_conn_state *c, const msv_frame *f);
void msv_blobs_expire(struct msv_server *s, int64_t now_ms);
/* The most handles an account has (docs/missive.md, "Several handles"). */
#define ACCOUNT_HANDLES_MAX 10
/* The account of a device whose queue is full is told at most this often (per node). */
#define QUOTA_NOTICE_EVERY_MS (10LL * 60 * 1000)
/* 1 if device_id's account is to be told now that its queue is full (and noted as told). */
int msv_server_quota_notice_due(struct msv_server *s, uint64_t device_id);
/* Removes attachment files that no record names (left by a crash); at start, then hourly. */
void msv_blobs_sweep(struct msv_server *s);
#define BLOB_ORPHAN_AGE_S 600
#define BLOB_SWEEP_MAX 65536
/* attachments deleted at expiry in one tick of the expiry timer, at most */
#define BLOB_EXPIRE_MAX 5000
#define BLOB_SWEEP_EVERY_MS (3600LL * 1000)
/* A connection goes: the answers of its BlobFinish checks still running are dropped. */
void msv_blob_jobs_forget(struct msv_conn_state *c);
/* Waits for every BlobFinish check to end and frees what the stopped workers still hold. */
void msv_blob_jobs_drain(struct msv_server *s);

/*
 * accept() on l failed with something other than "try again": l is disabled
 * and p->resume runs accept_pause_ms later; counted in accept_paused_total,
 * logged with which (the port's name) at most once per interval.
 */
void msv_server_accept_failed(struct msv_server *s, struct evconnlistener *l,
                              struct msv_accept_pause *p, const char *which);

/* http.c */
/* Opens the HTTP port ([http]) and serves it on a thread of its own until msv_http_stop. */
MSV_MUST_CHECK msv_err msv_http_start(struct msv_server *s);
/* Closes the HTTP port and its connections; nothing if it was not started. */
void msv_http_stop(struct msv_server *s);

#endif
