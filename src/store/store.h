/*
 * Server storage behind an operations table, so that backends (SQLite now,
 * PostgreSQL for scale-out) are interchangeable. Every operation is atomic;
 * one that reports MSV_OK has been committed durably. Implementations are
 * safe to call from several threads.
 */
#ifndef MSV_STORE_H
#define MSV_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"
#include "missive/kt.h"

/* Devices an account may have waiting for approval at once (each takes a notice of every change
 * of the account's devices, and reads none until approved) */
#define MSV_STORE_PENDING_MAX 8

struct msv_device_rec {
    uint64_t id;
    uint64_t account_id;
    uint32_t suite;
    uint8_t *identity;
    size_t identity_len;
    uint8_t *push_token;
    size_t push_token_len;
    int64_t created_ms;
    int approved; /* 0 while waiting for approval from another device of the account */
};

struct msv_device_list {
    struct msv_device_rec *items;
    size_t count;
};

/* Frees what a device record or list owns; the structure itself is reusable. */
void msv_device_rec_clear(struct msv_device_rec *d);
void msv_device_list_clear(struct msv_device_list *l);

/* What a failure of the database was (PostgreSQL's SQLSTATE classes), for logs and metrics. */
enum msv_store_fault {
    MSV_STORE_FAULT_BUSY,        /* serialization failure or deadlock (class 40), or lock waits */
    MSV_STORE_FAULT_UNAVAILABLE, /* connection lost or refused, server shutting down (08, 57P) */
    MSV_STORE_FAULT_FULL,        /* disk full, out of memory or connections (class 53) */
    MSV_STORE_FAULT_OTHER,       /* anything else the database refused */
    MSV_STORE_FAULT_POOL,        /* no connection of the pool came free within pool_wait_ms */
};
#define MSV_STORE_FAULT_KINDS 5

/*
 * Told of every failure of the database but constraint violations and "too big" (answered as
 * such): its kind, SQLSTATE ("" when the connection failed before one came) and the database's
 * own words. Called from any thread that uses the store.
 */
typedef void (*msv_store_fault_fn)(void *ctx, enum msv_store_fault kind, const char *sqlstate,
                                   const char *message);

/* One envelope to enqueue (borrowed pointers). */
struct msv_queue_in {
    uint64_t device_id;
    uint64_t sender_device;
    const char *sender_handle;
    uint32_t suite;
    const uint8_t *ciphertext;
    size_t ciphertext_len;
    int64_t expires_ms; /* when it may be dropped undelivered; 0: the put's expires_ms */
    /* stored once for a run of consecutive items of one put that all set it and point at the
     * same ciphertext (a group's copies of one message): each copy's row names the one body */
    int shared;
};

struct msv_queue_rec {
    uint64_t id;
    uint64_t device_id;
    uint64_t sender_device;
    char *sender_handle;
    uint32_t suite;
    uint8_t *ciphertext;
    size_t ciphertext_len;
    int64_t enqueued_ms;
};

/* Acknowledged envelopes of one device, for queue_commit. */
struct msv_queue_ack {
    uint64_t device_id;
    const uint64_t *ids;
    size_t n;
    size_t deleted; /* set by queue_commit: how many of ids were device_id's and deleted */
};

/* Frees n records and the array. */
void msv_queue_recs_free(struct msv_queue_rec *recs, size_t n);
/* How many items from items[i] on share one stored body (msv_queue_in.shared); 1: none. */
size_t msv_queue_shared_run(const struct msv_queue_in *items, size_t n, size_t i);

/* One device's part of queue_fetch_many. */
struct msv_queue_read {
    uint64_t device_id, after_id;
    size_t limit;
    struct msv_queue_rec *recs; /* set by queue_fetch_many; free with msv_queue_recs_free() */
    size_t count;
};

#define MSV_BLOB_ID_LEN 32

struct msv_blob_rec {
    uint8_t id[MSV_BLOB_ID_LEN];
    uint64_t owner_device;
    uint64_t size;
    uint64_t received;
    int complete;
    uint8_t sha256[32];
    int64_t expires_ms;
};

/* What one device, and all devices of its account, hold of the attachment store. */
struct msv_blob_usage {
    uint64_t open;          /* the device's unfinished uploads */
    uint64_t device_bytes;  /* the device's attachments, finished or not, at their declared size */
    uint64_t account_bytes; /* the same for every device of its account */
    uint64_t account_count; /* its account's attachments, finished or not */
};

/* A leaf of the transparency log (include/missive/kt.h). */
/* The key directory's label of version of handle (the store's kt_labels; keydir.c gives it). */
typedef msv_err (*msv_kt_labeler)(void *ctx, const char *handle, uint32_t version,
                                  uint8_t label[32]);

struct msv_kt_rec {
    uint64_t index;
    uint8_t *leaf; /* the device set, tombstone or other entry (a label, for kt_labels) */
    size_t leaf_len;
    /* after the log's cut-over entry: the version-4 leaf the log publishes in its place
     * (kt_log.pub, store schema 18; NULL until missived writes it: kt_publish) */
    uint8_t *pub;
    size_t pub_len;
};

void msv_kt_recs_free(struct msv_kt_rec *recs, size_t n);

/* KeyPackages a device publishes (borrowed pointers). */
struct msv_mls_key_package_upload {
    const uint8_t *const *kps;
    const size_t *lens;
    size_t n;
    const uint8_t *last_resort; /* NULL: the device's last-resort one is unchanged */
    size_t last_resort_len;
    int replace;
};

/*
 * A commit to a group (borrowed pointers): for epoch, by sender, adding and removing devices,
 * and the envelopes that carry it to the members it had before (queued as by queue_put).
 */
struct msv_mls_commit {
    const uint8_t *group_id;
    size_t group_len;
    uint64_t epoch, sender;
    const uint64_t *added, *removed;
    size_t n_added, n_removed, max_members;
    size_t max_groups; /* of the sender and of each device added */
    /* of each device added of another account than the claimer's: the groups it is in that
     * devices of the claimer's account added it to (0: no bound) */
    size_t max_groups_by_account;
    uint64_t claimer;    /* the sender's account: each device added uses one of its claims */
    uint64_t *unclaimed; /* NULL or out: a device added without an open claim */
    const struct msv_queue_in *items;
    size_t n_items;
    int64_t now_ms, expires_ms;
    uint64_t *ids; /* n_items */
    /* the MlsDelivery its members get, kept in the group's commit log for members that missed
     * it (mls_commits_since) until log_expires_ms; NULL: not kept. The log keeps a group's
     * log_keep newest commits and log_account_max of the sender's account (c->claimer), the
     * oldest of either dropped as this one goes in. */
    const uint8_t *log;
    size_t log_len, log_keep, log_account_max;
    int64_t log_expires_ms;
};

/*
 * A Welcome to a group (borrowed pointers) by device sender: its copies queued (items, as by
 * queue_put), and for each device of left_out (its queue full) that is a member added by
 * sender's commit, the Welcome's MlsDelivery (delivery) kept in its membership until
 * expires_ms, in place of one kept before; kept[i] (out) says whether left_out[i] was. A
 * recipient it is queued for has the sender's Welcome kept before dropped (it is stale).
 */
struct msv_mls_welcome {
    const uint8_t *group_id;
    size_t group_len;
    uint64_t sender;
    const struct msv_queue_in *items;
    size_t n_items;
    int64_t now_ms, expires_ms;
    uint64_t *ids; /* n_items */
    const uint64_t *left_out;
    size_t n_left_out;
    const uint8_t *delivery;
    size_t len;
    uint8_t *kept; /* n_left_out */
};

/* A commit kept in a group's log: for epoch, by device sender, its MlsDelivery. */
struct msv_mls_logged {
    uint64_t epoch, sender;
    uint8_t *delivery;
    size_t len;
};
void msv_mls_logged_free(struct msv_mls_logged *l, size_t n);

/* A group a device is a member of. */
struct msv_mls_group_rec {
    uint8_t group_id[64];
    size_t group_len;
    uint64_t epoch;
};

/* A device's published prekeys, as a prekey upload brings them (borrowed pointers). */
struct msv_one_time_prekey {
    uint32_t id;
    uint8_t key[32];
};

/* An ML-KEM-768 prekey as the device signed it (docs/crypto.md, "Post-quantum sessions"). */
struct msv_kem_prekey_rec {
    uint32_t id;
    uint8_t key[1184];
    uint8_t sig[64];
};

struct msv_prekey_upload {
    int has_signed;
    uint32_t signed_id;
    uint8_t signed_key[32];
    uint8_t signed_sig[64];
    const struct msv_one_time_prekey *one_time;
    size_t n_one_time;
    int replace_one_time; /* the device's unclaimed one-time prekeys (both kinds) go first */
    const struct msv_kem_prekey_rec *kem_last_resort; /* NULL: unchanged */
    const struct msv_kem_prekey_rec *kem_one_time;
    size_t n_kem_one_time;
};

/*
 * What a claim hands out for one device; one_time_id 0 when none was left;
 * kem_id 0 when the device has no KEM prekey, kem_last_resort when its one-time
 * ones were gone (or not asked for).
 */
struct msv_prekey_claimed {
    uint32_t signed_id;
    uint8_t signed_key[32];
    uint8_t signed_sig[64];
    uint32_t one_time_id;
    uint8_t one_time_key[32];
    uint32_t kem_id;
    int kem_last_resort;
    uint8_t kem_key[1184];
    uint8_t kem_sig[64];
};

/* One account as an operator sees it (missive-admin accounts). */
struct msv_account_summary {
    char *handle;
    int64_t created_ms;
    int suspended;
    uint64_t devices, pending, queued;
    uint64_t queued_bytes;           /* ciphertext bytes of queued, each copy counted */
    uint64_t sending, sending_bytes; /* envelopes its devices sent that wait for others */
    uint64_t attachment_bytes;       /* its devices' attachments, finished or not */
};

void msv_account_summaries_free(struct msv_account_summary *a, size_t n);

/* An abuse report (missive report), as an operator sees it (missive-admin reports). */
struct msv_report {
    uint64_t id;
    char *reporter, *reported; /* handles */
    char *reason;              /* "" if none was given */
    char *text;                /* the reported messages' text, if the reporter chose to send it */
    int64_t created_ms;
    char *state; /* "open", "suspended" or "dismissed" */
};

void msv_reports_free(struct msv_report *r, size_t n);

/*
 * A registration invite (missive-admin invites), as an operator sees it. The
 * store keeps only the hash of its code (docs/missived.md, "Registration").
 */
struct msv_invite {
    uint64_t id;
    char *note;                     /* "" if none was given */
    uint32_t uses_left, used;       /* registrations it still allows, and made */
    int64_t created_ms, expires_ms; /* expires_ms 0: never */
    int revoked;
};

void msv_invites_free(struct msv_invite *v, size_t n);

/* What waits for one device (queue_usage). */
struct msv_queue_usage {
    uint64_t device_id;
    uint64_t envelopes, bytes; /* set by queue_usage; bytes of ciphertext */
};

/* What the store holds (missive-admin stats). */
struct msv_store_stats {
    uint64_t accounts, suspended, devices, pending_devices;
    uint64_t queued, queued_bytes; /* queued_bytes as stored: a shared body once */
    int64_t oldest_queued_ms;      /* 0 if the queue is empty */
    uint64_t blobs, blob_bytes, log_leaves, one_time_prekeys;
    uint64_t database_bytes; /* the database's size (SQLite: its main file; PostgreSQL: on disk) */
};

/* What account_delete removed that lives outside the database, or is still connected. */
struct msv_account_deleted {
    uint64_t account_id;
    uint64_t *devices; /* the account's devices, pending ones too */
    size_t n_devices;
    uint8_t (*blobs)[MSV_BLOB_ID_LEN]; /* its devices' attachments, for the blob backend */
    size_t n_blobs;
};

void msv_account_deleted_clear(struct msv_account_deleted *d);

/* Whether approval (may be NULL) is a device's approval of itself: a root or a recovery. */
static inline int self_approved(const struct msv_kt_approval *approval)
{
    return approval != NULL && (approval->kind == MSV_KT_ROOT || approval->kind == MSV_KT_RECOVERY);
}

struct msv_store_ops {
    const char *name;
    void (*close)(void *impl);

    /* accounts: MSV_ERR_EXISTS if the handle is taken */
    msv_err (*account_create)(void *impl, const char *handle, const char *password_hash,
                              int64_t now_ms, uint64_t *account_id);
    /* *password_hash: caller frees with free(); MSV_ERR_NOT_FOUND for an unknown handle */
    msv_err (*account_get)(void *impl, const char *handle, uint64_t *account_id,
                           char **password_hash);
    msv_err (*account_handle)(void *impl, uint64_t account_id, char **handle);
    /*
     * Handles (docs/missived.md, "Handles"): an account has one or more, each of at most one
     * account, and account_get finds it by any; its first one is account_handle's.
     * handles_of_account: the first one first, then in the order they were added (*out: free
     * each and the array; MSV_ERR_NOT_FOUND for an unknown account). handle_add gives
     * account_id one more, unless it has max already (MSV_ERR_TOO_BIG) or any account holds it
     * (MSV_ERR_EXISTS), and appends its leaf (the account's approved devices) to the log, in
     * one transaction. handle_remove takes one away and appends its tombstone (as a deleted
     * account's, docs/transparency.md) in one transaction; the oldest of the others becomes the
     * first if it was: MSV_ERR_NOT_FOUND if it is not account_id's, MSV_ERR_INVALID if it is
     * the last. Nothing changes on failure.
     */
    msv_err (*handles_of_account)(void *impl, uint64_t account_id, char ***out, size_t *n);
    msv_err (*handle_add)(void *impl, uint64_t account_id, const char *handle, size_t max,
                          int64_t now_ms);
    msv_err (*handle_remove)(void *impl, uint64_t account_id, const char *handle, int64_t now_ms);
    /*
     * Stamps account_id's username change (accounts.username_changed_ms, 0 if never) with
     * now_ms, unless the last one is less than interval_ms before now_ms: then MSV_ERR_AGAIN and
     * nothing changes. Either way *last_ms is the stamp it found. With interval_ms < 0 it sets
     * now_ms as it is (to put back a stamp whose change failed). MSV_ERR_NOT_FOUND for an unknown
     * account. One statement: two devices stamping at once cannot both pass.
     */
    msv_err (*username_stamp)(void *impl, uint64_t account_id, int64_t now_ms, int64_t interval_ms,
                              int64_t *last_ms);
    /* Operators: every account (by handle); suspend or restore one (MSV_ERR_NOT_FOUND). */
    msv_err (*account_list)(void *impl, struct msv_account_summary **out, size_t *n);
    msv_err (*account_set_suspended)(void *impl, const char *handle, int suspended);
    /*
     * Deletes handle's account and everything that is its, in one transaction: its devices,
     * the envelopes queued for them, their prekeys and delivery tokens, their attachments'
     * records, its verification code, the reports it made or that name it; and appends a
     * tombstone leaf for the handle to the log (docs/transparency.md). *out (clear with
     * msv_account_deleted_clear) says what was deleted. MSV_ERR_NOT_FOUND for an unknown
     * handle, nothing changed.
     */
    msv_err (*account_delete)(void *impl, const char *handle, int64_t now_ms,
                              struct msv_account_deleted *out);
    /* Replaces account_id's password hash (MSV_ERR_NOT_FOUND for an unknown account). */
    msv_err (*account_set_password)(void *impl, uint64_t account_id, const char *password_hash);
    /* *suspended for account_id (MSV_ERR_NOT_FOUND for an unknown account). */
    msv_err (*account_suspended)(void *impl, uint64_t account_id, int *suspended);
    msv_err (*stats)(void *impl, struct msv_store_stats *out);

    /*
     * Abuse reports. report_add stores one from reporter_account about the
     * account of reported (MSV_ERR_NOT_FOUND if there is none) as "open",
     * unless the reporter made max_recent or more since since_ms
     * (MSV_ERR_AGAIN, nothing stored). report_list: the newest first, at most
     * limit. report_get: one (free with msv_reports_free(r, 1)). Both
     * MSV_ERR_NOT_FOUND for an unknown id; report_set_state records what the
     * operator decided.
     */
    msv_err (*report_add)(void *impl, uint64_t reporter_account, const char *reported,
                          const char *reason, const char *text, int64_t now_ms, int64_t since_ms,
                          unsigned max_recent, uint64_t *id);
    msv_err (*report_list)(void *impl, size_t limit, struct msv_report **out, size_t *n);
    msv_err (*report_get)(void *impl, uint64_t id, struct msv_report **out);
    msv_err (*report_set_state)(void *impl, uint64_t id, const char *state);

    /*
     * Registration invites, kept by the hash of their code. invite_take uses
     * one use of the invite whose code hashes to hash, if it is usable at
     * now_ms (not revoked, not expired, a use left), atomically across
     * workers and nodes: MSV_OK; MSV_ERR_NOT_FOUND otherwise, nothing
     * changed. With dry_run it only says whether it could. invite_give_back
     * returns a use taken for a registration that did not happen.
     * invite_revoke: MSV_ERR_NOT_FOUND for an unknown id.
     */
    msv_err (*invite_add)(void *impl, const uint8_t hash[32], const char *note, uint32_t uses,
                          int64_t now_ms, int64_t expires_ms, uint64_t *id);
    msv_err (*invite_list)(void *impl, struct msv_invite **out, size_t *n);
    msv_err (*invite_revoke)(void *impl, uint64_t id);
    msv_err (*invite_take)(void *impl, const uint8_t hash[32], int64_t now_ms, int dry_run);
    msv_err (*invite_give_back)(void *impl, const uint8_t hash[32]);

    /*
     * verification codes: one per handle, kept until it expires (or is used up): while one
     * unexpired at now_ms is stored, code_put changes nothing and answers MSV_ERR_EXISTS
     */
    msv_err (*code_put)(void *impl, const char *handle, const uint8_t hash[32], int64_t now_ms,
                        int64_t expires_ms);
    /*
     * MSV_OK and the code is consumed if hash matches an unexpired code;
     * MSV_ERR_AUTH counts a failed attempt (the code is dropped after
     * max_attempts); MSV_ERR_NOT_FOUND if there is no usable code.
     */
    msv_err (*code_take)(void *impl, const char *handle, const uint8_t hash[32], int64_t now_ms,
                         unsigned max_attempts);

    /*
     * devices: every change to a handle's set of approved devices (adding an
     * approved device, approving, removing) appends that set to the
     * transparency log in the same transaction
     */
    /*
     * first (may be NULL): the device's first prekeys, stored in the same transaction.
     * approval (may be NULL: unsigned): an approved device's approval record, its signature
     * checked by the caller, kept (table device_approvals) and carried by the log's device sets
     * from then on, and after the device is removed while a listed device's chain names it
     * (docs/transparency.md, "Signed device lists"). A device approved by itself (a root or
     * a recovery record) is approved only if the account has no approved device when the
     * transaction runs; otherwise it is added pending, with no approval kept (two recoveries
     * at once make one root, never two): device_get says which. A device that would be
     * pending while the account has MSV_STORE_PENDING_MAX pending devices already is not
     * added: MSV_ERR_TOO_BIG, nothing changed (decided in the transaction).
     */
    msv_err (*device_add)(void *impl, uint64_t account_id, uint32_t suite, const uint8_t *identity,
                          size_t identity_len, const uint8_t *push_token, size_t push_token_len,
                          int approved, int64_t now_ms, const struct msv_prekey_upload *first,
                          const struct msv_kt_approval *approval, uint64_t *device_id);
    /* Approves a pending device of account_id with approval (as device_add's; may be NULL);
     * MSV_ERR_NOT_FOUND if there is none; MSV_ERR_AUTH, nothing changed, if approval names an
     * approver that is not (or no longer, in this transaction) an approved device of the
     * account. */
    msv_err (*device_approve)(void *impl, uint64_t account_id, uint64_t device_id,
                              const struct msv_kt_approval *approval);
    /* Removes a device of account_id and drops its queue; MSV_ERR_NOT_FOUND otherwise. */
    msv_err (*device_remove)(void *impl, uint64_t account_id, uint64_t device_id);
    msv_err (*device_get)(void *impl, uint64_t device_id, struct msv_device_rec *out);
    msv_err (*devices_of_account)(void *impl, uint64_t account_id, struct msv_device_list *out);
    /*
     * A number above every one this store gave before, whichever node asks (PostgreSQL: a
     * sequence, raised to the database's clock in microseconds as the store opens, so that a
     * restored backup still numbers above; a SQLite store serves one node, which counts in
     * memory):
     * the order in which a device's connections authenticated across a cluster's nodes, so
     * that news of an older one, late, does not close a newer one (docs/missived.md).
     */
    msv_err (*connection_order)(void *impl, uint64_t *out);

    /*
     * Enqueues n envelopes in one transaction (the server's group commit);
     * ids[i] receives the queue id of items[i]. All or nothing.
     */
    msv_err (*queue_put)(void *impl, const struct msv_queue_in *items, size_t n, int64_t now_ms,
                         int64_t expires_ms, uint64_t *ids);
    /*
     * Up to limit unexpired envelopes for device_id with id > after_id, oldest
     * first. Queue ids only grow, never reused, in commit order: a reader that
     * saw id N has seen every committed envelope below N.
     */
    msv_err (*queue_fetch)(void *impl, uint64_t device_id, uint64_t after_id, int64_t now_ms,
                           size_t limit, struct msv_queue_rec **out, size_t *count);
    /*
     * queue_fetch for each of n devices (one round trip where the backend is
     * a server). All or nothing: on failure no read holds records.
     */
    msv_err (*queue_fetch_many)(void *impl, struct msv_queue_read *reads, size_t n, int64_t now_ms);
    /*
     * The highest id of an unexpired envelope waiting for device_id, 0 if none: where a
     * QueueSync's answer goes (every envelope committed before the call is at or below it).
     */
    msv_err (*queue_last_id)(void *impl, uint64_t device_id, int64_t now_ms, uint64_t *last);
    /* Deletes those of ids that belong to device_id; *deleted counts them. */
    msv_err (*queue_ack)(void *impl, uint64_t device_id, const uint64_t *ids, size_t n,
                         size_t *deleted);
    /*
     * The relay's group commit: queue_put of n items and queue_ack of every
     * entry of acks, in one transaction (one durable write). All or nothing:
     * MSV_ERR_AGAIN, nothing written, if the device of an item no longer exists
     * (removed since the send was checked, also by a removal committing at the
     * same moment through another node: the commit waits for it).
     */
    msv_err (*queue_commit)(void *impl, const struct msv_queue_in *items, size_t n, int64_t now_ms,
                            int64_t expires_ms, uint64_t *ids, struct msv_queue_ack *acks,
                            size_t n_acks);
    msv_err (*queue_expire)(void *impl, int64_t now_ms, size_t *expired);
    msv_err (*queue_depth)(void *impl, uint64_t *count);
    /* The envelopes and ciphertext bytes waiting for each of n devices (expired ones too). */
    msv_err (*queue_usage)(void *impl, struct msv_queue_usage *u, size_t n);
    /* One more send refused for each of n devices because its queue was full (table
     * queue_refusals), in one transaction. */
    msv_err (*queue_refusal_add)(void *impl, const uint64_t *device_ids, size_t n);
    /* The sends refused for device_id's full queue since last taken, and the count back to 0. */
    msv_err (*queue_refusal_take)(void *impl, uint64_t device_id, uint64_t *refused);

    /* attachment metadata (the bytes live in the blob backend) */
    msv_err (*blob_create)(void *impl, const struct msv_blob_rec *rec);
    msv_err (*blob_get)(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], struct msv_blob_rec *out);
    /* Writes received, complete, sha256 and expires_ms. */
    msv_err (*blob_update)(void *impl, const struct msv_blob_rec *rec);
    /* device_id's usage (see the struct), counting attachments not expired at now_ms. */
    msv_err (*blob_usage)(void *impl, uint64_t device_id, int64_t now_ms,
                          struct msv_blob_usage *out);
    /* Removes at most max expired blobs (complete or not), the soonest expired first; their
     * ids go to *ids (caller frees). */
    msv_err (*blob_expire)(void *impl, int64_t now_ms, size_t max, uint8_t (**ids)[MSV_BLOB_ID_LEN],
                           size_t *count);

    /* the transparency log: at most max leaves from index start on, in order */
    msv_err (*kt_read)(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                       size_t *count);
    /* The newest leaf of handle's device sets; MSV_ERR_NOT_FOUND if the log has none. */
    msv_err (*kt_latest)(void *impl, const char *handle, struct msv_kt_rec *out);
    /* The newest tombstone of handle (its account was deleted); MSV_ERR_NOT_FOUND if none. */
    msv_err (*kt_tombstone_latest)(void *impl, const char *handle, struct msv_kt_rec *out);
    /* At most max leaves of handle (its device sets and tombstones) from index start on, in
     * order (its versions, for the owner's monitor). */
    msv_err (*kt_handle_read)(void *impl, const char *handle, uint64_t start, size_t max,
                              struct msv_kt_rec **out, size_t *count);
    /*
     * Appends a leaf that is no handle's device set (a log key rotation) as
     * leaf index, if the log has exactly index leaves: MSV_ERR_EXISTS if not
     * (it grew meanwhile), nothing written.
     */
    msv_err (*kt_append)(void *impl, uint64_t index, const uint8_t *leaf, size_t len);
    /*
     * The key directory's labels kept beside the log (table kt_labels, docs/transparency.md
     * "The tree stored"): at most max from log index start on, in order, each a record whose
     * leaf is the 32-byte label of the version that log entry is.
     */
    msv_err (*kt_labels_read)(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                              size_t *count);
    /* Keeps the labels of n log entries (one replaces what an index had), in one transaction. */
    msv_err (*kt_labels_put)(void *impl, const struct msv_kt_rec *recs, size_t n);
    /*
     * From now on every device set appended to the log (a tombstone included) gets its label in
     * kt_labels in the same transaction: fn(ctx, handle, version) gives it, version the entry's
     * number among the handle's (1 for its first). fn must be safe to call from any thread.
     */
    void (*kt_set_labeler)(void *impl, msv_kt_labeler fn, void *ctx);
    /*
     * Keeps pub as the version-4 leaf that log entry index publishes in place of its device set
     * (docs/transparency.md, "Leaves that name no handle"), unless it has one already (pub is a
     * function of the entry and the directory's keys: every node writes the same bytes).
     */
    msv_err (*kt_publish)(void *impl, uint64_t index, const uint8_t *pub, size_t len);
    /*
     * From now on fn(ctx, ...) hears of the database's failures (NULL: nobody). A PostgreSQL
     * transaction that fails with a serialization failure or a deadlock is run again (at most
     * three times in all) before its failure (MSV_ERR_IO) is returned. SQLite reports nothing.
     */
    void (*set_fault_hook)(void *impl, msv_store_fault_fn fn, void *ctx);

    /*
     * Prekeys: the upload replaces the signed prekey (if it has one) and the
     * last-resort KEM prekey (if it has one) and adds the one-time prekeys of
     * both kinds whose ids are new, after dropping those the device has if
     * replace_one_time; MSV_ERR_TOO_BIG, changing nothing, if the device would
     * then hold more than max_one_time of either kind.
     * *left and *signed_id (the id of its signed prekey, 0 if none) describe the device
     * afterwards.
     */
    msv_err (*prekeys_put)(void *impl, uint64_t device_id, const struct msv_prekey_upload *u,
                           size_t max_one_time, uint32_t *left, uint32_t *signed_id);
    /*
     * The signed prekey and, if one_time, one one-time prekey, which is deleted,
     * and one one-time KEM prekey, deleted too (else the last-resort one), all
     * in one transaction: no key is handed out twice, also by two servers at
     * once; MSV_ERR_NOT_FOUND if the device has no signed prekey.
     */
    msv_err (*prekey_claim)(void *impl, uint64_t device_id, int one_time,
                            struct msv_prekey_claimed *out);
    /* The device's one-time KEM prekeys left and the id of its last-resort one (0: none). */
    msv_err (*kem_prekey_state)(void *impl, uint64_t device_id, uint32_t *left,
                                uint32_t *last_resort_id);
    /* Sealed sender: the SHA-256 of a device's delivery token, and the check of one. */
    msv_err (*delivery_token_set)(void *impl, uint64_t device_id, const uint8_t hash[32]);
    /* MSV_OK if an approved device of account_id registered this token; MSV_ERR_AUTH otherwise. */
    msv_err (*delivery_token_check)(void *impl, uint64_t account_id, const uint8_t hash[32]);

    /*
     * MLS delivery service (docs/missived.md, "MLS groups"). KeyPackages are opaque bytes.
     * mls_key_packages_put: adds up's KeyPackages of device_id (after dropping its unclaimed
     * ones if up->replace) and replaces its last-resort one if up has one, in one
     * transaction; MSV_ERR_TOO_BIG (nothing changed) if more than max would be kept.
     * *left and *has_last_resort then describe what the device has.
     */
    msv_err (*mls_key_packages_put)(void *impl, uint64_t device_id,
                                    const struct msv_mls_key_package_upload *up, size_t max,
                                    uint32_t *left, int *has_last_resort);
    /*
     * One KeyPackage of device_id, deleted as it is handed out (no two claims, even on two
     * servers, get the same one), else (or if only_last_resort) its last-resort one, which
     * stays; MSV_ERR_NOT_FOUND if it has neither. In the same transaction a claim of
     * device_id by account claimer, open until expires_ms, is recorded (a commit by that
     * account may then add the device once), claims expired at now_ms are dropped, and the
     * account's oldest ones beyond max_claims too. *kp: caller frees with free().
     */
    msv_err (*mls_key_package_claim)(void *impl, uint64_t device_id, int only_last_resort,
                                     uint64_t claimer, int64_t now_ms, int64_t expires_ms,
                                     size_t max_claims, uint8_t **kp, size_t *len,
                                     int *last_resort);
    /*
     * The group's epoch and member devices (*members: caller frees with free(), ascending);
     * MSV_ERR_NOT_FOUND if the server has no such group. Read in one snapshot.
     */
    msv_err (*mls_group_get)(void *impl, const uint8_t *group_id, size_t group_len, uint64_t *epoch,
                             uint64_t **members, size_t *n);
    /*
     * Accepts a commit (see the struct), atomically: MSV_ERR_EXISTS if c->epoch is not the
     * group's epoch (two commits for one epoch: one wins), MSV_ERR_AUTH if c->sender is not a
     * member, MSV_ERR_NOT_FOUND for an unknown group and an epoch other than 0,
     * MSV_ERR_TOO_BIG if the group would pass c->max_members or the sender or a device
     * added would be in more than c->max_groups groups, MSV_ERR_INVALID if c->claimer has
     * no open claim (unexpired at c->now_ms, unused) of a device added (*c->unclaimed names
     * it; each device added uses one claim), MSV_ERR_AUTH also if c->sender no longer exists,
     * MSV_ERR_AGAIN if the device of an item no longer exists (removed meanwhile: the members
     * the items were made for changed); in all of these nothing
     * changed, and *epoch_now is the group's epoch (0 if none). A device added that no longer
     * exists (removed meanwhile, also by a removal committing at the same moment) is not
     * made a member. On MSV_OK the epoch is
     * c->epoch + 1 (*epoch_now), the members changed, and c->items are queued with their
     * ids in c->ids, all in the same transaction.
     */
    msv_err (*mls_commit)(void *impl, const struct msv_mls_commit *c, uint64_t *epoch_now);
    /*
     * device_id leaves the group's members (the epoch unchanged) and items (its leave's copies)
     * are queued with their ids in ids, in one transaction; MSV_ERR_NOT_FOUND if it was no
     * member (nothing queued).
     */
    /*
     * The groups device_id is a member of, at most max, ordered by group id (*groups: caller
     * frees with free()); *n 0 if none.
     */
    msv_err (*mls_groups_of_device)(void *impl, uint64_t device_id, size_t max,
                                    struct msv_mls_group_rec **groups, size_t *n);
    msv_err (*mls_leave)(void *impl, const uint8_t *group_id, size_t group_len, uint64_t device_id,
                         const struct msv_queue_in *items, size_t n, int64_t now_ms,
                         int64_t expires_ms, uint64_t *ids);
    /*
     * The commits the group's log keeps (mls_commit) for epochs from `from` on, for a member
     * device, and only those since it became one (the epoch after the commit that added it):
     * at most max, oldest first, none expired at now_ms; their deliveries at most max_bytes in
     * all (the first always). *epoch: the group's epoch; *more: more are kept after the last
     * given. MSV_ERR_NOT_FOUND for an unknown group, MSV_ERR_AUTH if device_id is no member;
     * *out (caller frees with msv_mls_logged_free) and *n 0 if none. Read in one snapshot.
     */
    msv_err (*mls_commits_since)(void *impl, const uint8_t *group_id, size_t group_len,
                                 uint64_t device_id, uint64_t from, int64_t now_ms, size_t max,
                                 size_t max_bytes, struct msv_mls_logged **out, size_t *n,
                                 uint64_t *epoch, int *more);
    /*
     * A Welcome (see the struct), in one transaction: all or nothing. A commit that adds a
     * device (again) makes its sender the one whose Welcome it keeps, and drops any kept.
     */
    msv_err (*mls_welcome_put)(void *impl, const struct msv_mls_welcome *w);
    /*
     * The Welcome kept for member device_id of the group (mls_welcome_put), unexpired at
     * now_ms: *delivery (caller frees with free()) and *sender. MSV_ERR_AUTH if device_id is
     * no member, MSV_ERR_NOT_FOUND if none is kept.
     */
    msv_err (*mls_welcome_get)(void *impl, const uint8_t *group_id, size_t group_len,
                               uint64_t device_id, int64_t now_ms, uint8_t **delivery, size_t *len,
                               uint64_t *sender);
    /* Drops the Welcome kept for member device_id of the group if it is delivery still. */
    msv_err (*mls_welcome_drop)(void *impl, const uint8_t *group_id, size_t group_len,
                                uint64_t device_id, const uint8_t *delivery, size_t len);
};

struct msv_store {
    const struct msv_store_ops *ops;
    void *impl;
};

/*
 * Opens (creating if needed, and migrating to the current schema) the SQLite
 * database at path. *out: caller frees with msv_store_close().
 */
MSV_MUST_CHECK msv_err msv_store_open_sqlite(const char *path, struct msv_store **out);
/* Once, at a server's start, before any other use of SQLite in the process: SQLite keeps
 * no memory statistics, so that its allocator takes no global mutex (SQLite's
 * sqlite3_config, which is not safe while another thread uses it). */
void msv_store_sqlite_tune(void);
/*
 * Connects to PostgreSQL (libpq conninfo: "host=... dbname=..." or a URI)
 * with a pool of connections (0: 4), creating or migrating the schema. With
 * timeout_ms (0: none), connecting, and each statement, fail with
 * MSV_ERR_IO after that long (connect_timeout and statement_timeout, which
 * the conninfo may set otherwise). An operation that finds every connection
 * of the pool taken waits at most pool_wait_ms (0: without bound) for one,
 * then fails with MSV_ERR_IO, told to the fault hook as MSV_STORE_FAULT_POOL.
 * On failure, why (why_len bytes) says what PostgreSQL said. Only missived
 * and its tools link this backend.
 */
MSV_MUST_CHECK msv_err msv_store_open_postgres(const char *conninfo, unsigned connections,
                                               unsigned timeout_ms, unsigned pool_wait_ms,
                                               char *why, size_t why_len, struct msv_store **out);
void msv_store_close(struct msv_store *s);

/* One table of a migration: its rows in SQLite and, after the copy, in PostgreSQL. */
struct msv_migrated_table {
    char name[64];
    uint64_t from, to;
};
/*
 * Copies every table of the SQLite store at sqlite_path (no missived running on it; brought to
 * this missived's schema first) into the PostgreSQL database at conninfo (its schema made
 * there) in one transaction, which commits only if PostgreSQL then holds as many rows as
 * SQLite in every table. Refuses a target that holds any row (MSV_ERR_EXISTS) or whose tables
 * are not SQLite's. On success *tables (caller frees with free()) lists the n tables with
 * both counts; on failure why says what went wrong and PostgreSQL is left as it was.
 */
MSV_MUST_CHECK msv_err msv_store_migrate_to_postgres(const char *sqlite_path, const char *conninfo,
                                                     unsigned timeout_ms,
                                                     struct msv_migrated_table **tables,
                                                     size_t *n_tables, char *why, size_t why_len);

/* ---- an operator's copies of the SQLite store (missive-admin backup and restore) ---- */

/*
 * Copies the SQLite store at src_path to dst_path, which must not exist (made
 * with mode 0600; removed again on failure), with SQLite's online backup API,
 * MSV_SQLITE_BACKUP_STEP pages per step, all from one read transaction: the
 * copy is the database as one commit left it, however much a running missived
 * writes meanwhile, and no writer waits for it. progress (may be NULL) is
 * called after every step with the pages copied and the pages in all.
 */
#define MSV_SQLITE_BACKUP_STEP 256
MSV_MUST_CHECK msv_err msv_store_sqlite_backup(const char *src_path, const char *dst_path,
                                               void (*progress)(void *arg, int done, int total),
                                               void *arg);
/*
 * MSV_OK if path holds a SQLite store that passes SQLite's integrity check and
 * that this missived can open (a schema no newer than its own); otherwise an
 * error and, in why, what is wrong. Opens path read-only.
 */
MSV_MUST_CHECK msv_err msv_store_sqlite_check(const char *path, char *why, size_t why_len);

/* A finished attachment as the store records it. */
struct msv_blob_file {
    uint8_t id[MSV_BLOB_ID_LEN];
    uint64_t size;
    uint8_t sha256[32];
    int64_t expires_ms;
};
/*
 * Every finished attachment the SQLite store at path records (read-only).
 * *out: caller frees with free().
 */
MSV_MUST_CHECK msv_err msv_store_sqlite_blob_files(const char *path, struct msv_blob_file **out,
                                                   size_t *n);
/* Whether the SQLite store at path (read-only) still records attachment id complete and
 * unexpired at now_ms: 1, 0, or -1 if it cannot be read. */
int msv_store_sqlite_blob_kept(const char *path, const uint8_t id[MSV_BLOB_ID_LEN], int64_t now_ms);
/* Deletes the record of attachment id from the SQLite store at path (a backup's copy). */
MSV_MUST_CHECK msv_err msv_store_sqlite_blob_forget(const char *path,
                                                    const uint8_t id[MSV_BLOB_ID_LEN]);

/* The schema version this build writes. */
#define MSV_STORE_SCHEMA_VERSION 24

#endif
