/* missived configuration: INI file (libinih), then MISSIVED_<SECTION>_<KEY> environment overrides.
 */
#ifndef MSV_SERVER_CONFIG_H
#define MSV_SERVER_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "missive/error.h"

enum msv_log_level { MSV_LOG_DEBUG, MSV_LOG_INFO, MSV_LOG_WARN, MSV_LOG_ERROR };

struct msv_config {
    char listen_host[256];
    uint16_t listen_port;
    char data_dir[1024];
    char shared_dir[1024]; /* what a cluster's nodes share: log key, certificate, attachments */
    unsigned workers;
    char store_backend[16];      /* "sqlite" (DATA_DIR/missive.db) or "postgres" */
    char postgres[1024];         /* libpq connection string */
    unsigned store_connections;  /* PostgreSQL connections per node */
    unsigned store_timeout_ms;   /* PostgreSQL: connecting, and each statement */
    unsigned store_pool_wait_ms; /* PostgreSQL: the longest wait for a free pool connection */
    unsigned commit_backlog;     /* envelopes and acknowledged ids waiting for a worker's commit */
    unsigned commit_backlog_kib; /* their ciphertext bytes, in KiB */
    char redis[256];             /* HOST:PORT of the cluster's Redis; empty: a node alone */
    char node[160];              /* this node's name in the cluster (empty: HOST:PORT it serves) */
    unsigned redis_timeout_ms;   /* a Redis silent this long is given up on */
    char cert_file[1024];        /* empty: self-signed, generated into data_dir */
    char key_file[1024];
    uint64_t payload_limit;
    uint64_t queue_ttl_ms;
    uint64_t frame_max;
    unsigned delivery_window;
    uint64_t blob_max;
    uint64_t blob_ttl_ms;
    double lookup_rate; /* handles per second per account */
    double lookup_burst;
    double log_read_rate; /* log leaves per second per account (per address without one) */
    double log_read_burst;
    uint64_t append_proof_kib; /* the key directory's entry steps kept for auditors */
    uint32_t leaf_version;     /* 4: the log cuts over to leaves that name no handle */
    double register_rate;      /* registration and password attempts per second per address */
    double register_burst;
    unsigned identity_max; /* bytes of a device's public identity */
    double sealed_rate;    /* sealed sends per second per address */
    double sealed_burst;
    double send_rate; /* envelopes per second per account */
    double send_burst;
    uint64_t queue_max_envelopes; /* waiting for one device */
    uint64_t queue_max_bytes;
    double unknown_lookup_rate; /* lookups of usernames no account has, per second per account */
    double unknown_lookup_burst;
    unsigned username_interval_s;     /* an account's username changes at most this often */
    unsigned username_hold_s;         /* a released username is nobody's to take for this long */
    unsigned prekey_claim_interval_s; /* one one-time prekey per claimer and device; 0: off */
    unsigned codes_per_handle_per_day;
    unsigned reports_per_day; /* abuse reports per account in 24 hours */
    uint64_t report_text_max; /* bytes of reported messages' text in one report */
    /* wrong verification codes per 10 minutes: for a handle from one address, and in all */
    unsigned code_guesses_per_address, code_guesses_per_handle;
    unsigned blob_open_max;      /* unfinished uploads per device */
    uint64_t blob_device_bytes;  /* attachment bytes per device, finished or not */
    uint64_t blob_account_bytes; /* the same for all of an account's devices */
    unsigned blob_account_count; /* attachments kept for an account's devices at once */
    uint64_t blob_unfinished_ttl_ms;
    unsigned blob_finish_checks;  /* BlobFinish digests running at once (threads) */
    double blob_finish_fail_rate; /* failed BlobFinish per second per device */
    double blob_finish_fail_burst;
    char verification[16]; /* "dev" or "hook" */
    char registration[16]; /* who may create an account: "open", "invite" or "closed" */
    char verification_hook[1024];
    uint64_t argon2_memlimit;
    uint64_t argon2_opslimit;
    char http_host[256];
    uint16_t http_port; /* 0 with http_enabled: any free port */
    int http_enabled;
    unsigned http_max_header_bytes;   /* a request's line and headers, together */
    unsigned http_request_timeout_s;  /* an HTTP connection's whole life */
    char http_admin_token_file[1024]; /* the admin API's bearer token; empty: no admin API */
    enum msv_log_level log_level;
    char log_file[1024]; /* empty: standard error */
    uint64_t expiry_interval_ms;
    uint32_t min_expire_after_s; /* the shortest expiry a send may ask of queued copies */
    unsigned idle_timeout_s;
    unsigned max_conns_per_address; /* open connections from one address (IPv6: /64) */
    unsigned max_request_conns;     /* one device's connections for requests alone, per node */
    unsigned auth_timeout_s;        /* from accept to authentication (TLS handshake included) */
    unsigned accept_pause_ms;       /* accepting rests this long when descriptors run out */
    char clock_file[1024];          /* tests only: the current time in ms is read from this file */
    int trust_store_log;            /* tests only: serve the log's leaves unchecked (dishonest) */
    char keydir_forge[300];         /* tests only: "HANDLE VERSION" put in the key directory only */
    int owner_versions_stall;       /* tests only: owners' monitors told "more", given none */
    uint32_t owner_versions_max;    /* tests only: versions of a handle an answer holds (not 32) */
    char lookup_substitute[520];    /* tests only: "A B": lookups of A get B's result */
    char keydir_rewrite[300];       /* tests only: "change INDEX" or "remove INDEX" (keydir.h) */
    char keydir_skip[300];          /* tests only: "HANDLE VERSION" its next version's number */
    int refuse_prekey_claims;       /* tests only: every PrekeyClaim answered "slow down" */
    uint32_t log_read_hash_fault;   /* tests only: 1 leaf hashes of 31 bytes, 2 beside the leaf, 3
                                       leaf hashes of their own entries to accounts, 4 of
                                       version-4 leaves too */
    int kt_v4_leaf_fault;           /* tests only: a lookup shows the entry before its leaf's */
    int log_cutover_fault;          /* tests only: LogRead names another entry its cut-over */
    int log_read_epoch_fault;       /* tests only: LogRead's head with entries has no epoch root */
    char log_read_gate[300];        /* tests only: see msv_kt_log.read_gate */
    char lookup_gate[300];          /* tests only: see msv_kt_log.lookup_gate */
    uint64_t keydir_v4_mismatch;    /* tests only: log entry N's tree entry is not its leaf's (N
                                       appended while missived runs) */
    uint32_t mls_commit_pause_ms;   /* tests only: a pause between an MLS commit's read and write */
    char subscribe_gate[300];       /* tests only: devices' channels listened to once it is gone */
    uint32_t commit_delay_ms;       /* tests only: a pause before each group commit (its thread) */
    int drop_prekey_answers;        /* tests only: an upload that carries prekeys (one-time ones, a
                                     * rotation) is stored, then the connection closes unanswered
                                     * (a lost answer) */
    int limit_prekey_uploads;       /* tests only: every prekey upload is answered "slow down",
                                     * nothing stored (a server keeping a device's keys out) */
    int limit_key_package_uploads;  /* tests only: the same for every KeyPackage upload */
    int mls_stale_devices;          /* tests only: every MLS application message is answered
                                     * "stale devices" (a dishonest server) */
};

/* Fills c with the defaults. */
void msv_config_defaults(struct msv_config *c);
/* Now, in ms since the epoch: the wall clock, or [testing] clock_file when it is set. */
int64_t msv_config_now_ms(const struct msv_config *c);

/*
 * Reads path (NULL: defaults only), then the environment. On error, writes a
 * message naming the file, line or variable to err (err_len bytes) and
 * returns MSV_ERR_PARSE (bad syntax or value) or MSV_ERR_IO (unreadable).
 */
MSV_MUST_CHECK msv_err msv_config_load(struct msv_config *c, const char *path, char *err,
                                       size_t err_len);

/* shared_dir, or data_dir when it is not set (a node alone). */
const char *msv_config_shared_dir(const struct msv_config *c);

struct msv_store;
/* Opens the store the configuration names (missived, missive-admin); err says why not. */
MSV_MUST_CHECK msv_err msv_config_open_store(const struct msv_config *c, struct msv_store **out,
                                             char *err, size_t err_len);

/* Writes the effective configuration as INI (for --check-config). */
void msv_config_print(const struct msv_config *c, FILE *out);

#endif
