/*
 * A Missive device as a program uses it: one account directory holding the
 * state database (store/client_db.h) with the device's keys sealed at rest,
 * the pinned server, and the operations a person performs.
 */
#ifndef MSV_CLIENT_CLIENT_H
#define MSV_CLIENT_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "client/conn.h"
#include "client/requests.h"
#include "missive/crypto.h"
#include "missive/payload.h"
#include "store/client_db.h"

struct msv_incoming; /* below: what a receive tells */

/* A commit's refusal (mlsgroups.c, "mls-refused:"), recorded once told if due. */
struct client_mls_refusal {
    uint8_t gid[16], seen[44];
    int due;
};

/* A group whose commit log a read found nothing new in, and when (msv_mono_ms; 0: unused). */
#define MSV_CLIENT_MLS_QUIET 128 /* groups' log reads and asks for a Welcome, the oldest out */
struct client_mls_quiet {
    uint8_t gid[16];
    uint32_t gen;
    uint64_t epoch;
    int64_t ms;
};

struct msv_client {
    char dir[1024];
    struct msv_client_db *db;
    struct msv_identity *id;
    char handle[257];
    char from[257];    /* msv_client_send_from(): the handle sends name this account by */
    char send_as[257]; /* while a send is made: the handle it names this account by ("": handle) */
    /* while a send is made: when its message was written (0: none); a handle found since to be
     * a new account gets none of it (docs/transparency.md, "A new account") */
    int64_t written_ms;
    uint64_t device_id; /* 0 until registered */
    char host[256];
    uint16_t port;
    char others[1024];  /* more addresses of the same service ("HOST:PORT,..."), tried in turn */
    unsigned preferred; /* the address that answered last: 0 is host:port, i others' i-th */
    uint8_t pin[32];
    struct msv_conn *conn;
    struct msv_conn *sealed_conn; /* not authenticated: sealed sends go here */
    /* conn was authenticated for requests alone (docs/wire.md, "Connections for requests"):
     * the server pushes nothing on it, so that processes of one device that send at once do
     * not take each other's connection; msv_client_receive() connects again to take */
    int conn_requests_only;
    /* conn takes deliveries only for a receive within a command that does not (a send reading
     * its queue first): once no receive runs, the next connect replaces it by one for requests
     * alone, so that it holds the deliveries lock (below) no longer than that receive */
    int conn_for_receive;
    /* the server's words as it closed this program's connection that took deliveries for a
     * newer one of the device's (Error.replaced), NULL if it did not: from then on this program
     * (not the owner, below) connects for requests alone, and its receives end with those
     * words, so that the two do not take the connection from each other */
    char *deliveries_taken;
    /* every connection takes deliveries, in a receive or not: set by a program that waits on
     * the connection's socket for them (the account's owner: daemon, chat, listen, web) */
    int takes_deliveries;
    int receiving; /* msv_client_receive() runs: its connections take deliveries */
    /* receives made within a change or send (a group's commit to read first), with nobody to
     * tell: the messages they store stay to be shown, by the next receive */
    unsigned receiving_within;
    /* the innermost msv_client_receive() under way: whom it tells */
    void (*receive_tells)(void *ctx, const struct msv_incoming *in);
    void *receive_ctx;
    struct msv_refusal why; /* the server's words for the last refusal */
    /* in a send: a post-quantum device the server gave no bundle for (a session's or a sealing
     * key's) was checked against the log once already (sessions.c, sealkeys.c) */
    int sealing_rechecked;
    /* told about device sets that changed since last seen; may be NULL */
    void (*on_key_change)(void *ctx, const char *handle);
    /* handle's account was deleted and the handle registered again: not the account known
     * before (docs/transparency.md, "A new account"); may be NULL */
    void (*on_account_new)(void *ctx, const char *handle);
    /* the owner's monitor found the key directory's history of this account's handle wrong
     * (docs/transparency.md, "The owner's history proof"), besides the monitor's alarm; may be
     * NULL */
    void (*on_kt_history)(void *ctx, const char *handle, const char *warning);
    /* the owner's monitor found a tombstone of this account's handle that none of its devices
     * asked for: the server took the handle away (log entry index), besides the monitor's
     * alarm; may be NULL */
    void (*on_handle_taken)(void *ctx, const char *handle, uint64_t index, const char *warning);
    /* a device of handle that speaks no suite this device speaks, left out of a send */
    void (*on_unreachable)(void *ctx, const char *handle, uint64_t device_id, const char *suites);
    /* a device that says post-quantum for which the server gave no checked KEM prekey: nothing
     * went to it (the send fails with why.code MSV_REFUSAL_PQ); may be NULL */
    void (*on_pq_refused)(void *ctx, const char *handle, uint64_t device_id, const char *warning);
    /*
     * sealed envelopes came that this device cannot open, naming nobody: sealed classically
     * to this post-quantum device (refused as a downgrade), or to a post-quantum key it does
     * not hold; and envelopes whose sending device the directory does not list for the handle
     * they name (msv_client_senders_unchecked); counted, and said at most once a minute (what a
     * minute holds back is said at a later receive's end); may be NULL
     */
    void (*on_unopened)(void *ctx, const char *warning);
    /* this post-quantum device read a classical envelope (modern, classic or ecies) from a
     * device of handle whose identity does not say post-quantum: read, counted per device
     * (msv_client_classical_read), and said each time; may be NULL */
    void (*on_classical)(void *ctx, const char *handle, uint64_t device_id, const char *warning);
    int64_t unopened_said_ms; /* when on_unopened was last called (monotonic ms) */
    /* this device's keys (prekeys, the delivery token, MLS KeyPackages) could not be published
     * when it connected (a refusal other than "slow down", or no answer): counted
     * (msv_client_keys_unpublished), tried again at the next connection; may be NULL */
    void (*on_keys_unpublished)(void *ctx, const char *warning);
    /* monotonic ms when a failed publishing is tried again on this connection (0: none failed),
     * and the wait before it: a minute, doubled at each failure up to an hour */
    int64_t keys_retry_at, keys_backoff_ms;
    /* a device of handle shown without a valid approval chain, left out of sends (device_id),
     * or handle's device list approved by a root other than the one pinned (device_id 0), as
     * docs/transparency.md "Signed device lists" says; may be NULL */
    void (*on_devlist)(void *ctx, const char *handle, uint64_t device_id, const char *warning);
    /* a message of conversation went to the others but not to handle: what the directory shows
     * of handle did not check out (warning says why and that it is tried again); kept as a
     * notice in the conversation's history too; may be NULL */
    void (*on_not_sent)(void *ctx, const char *conversation, const char *handle,
                        const char *warning);
    /* a message went to handle without sealed sender (the relay refused its delivery token) */
    void (*on_unsealed)(void *ctx, const char *handle);
    /* a received file's download, piece by piece; may be NULL */
    void (*on_download)(void *ctx, uint64_t done, uint64_t total);
    /* a send split in several (a big group's): recipients sent to so far; may be NULL */
    void (*on_send_progress)(void *ctx, uint64_t done, uint64_t total);
    /* a queued message (id) could not go when the outbox was sent, for reason; it stays
     * queued, and later messages of its conversation wait behind it; may be NULL */
    void (*on_outbox_held)(void *ctx, const uint8_t id[16], const char *reason);
    /* what a receive made within a send or change reads (a group's commit it had to read
     * first, and what was queued with it), when no receive of the caller's is under way to be
     * told it (then that receive's on_message is); NULL: its messages stay to be shown by the
     * next receive, and its notices are applied untold. A callback that itself sends to a
     * group may so be called again before it returns (once per delivery read, each told
     * once) */
    void (*on_incoming)(void *ctx, const struct msv_incoming *in);
    void *incoming_ctx;
    void *ctx;
    /* log heads that received messages carried, for msv_client_monitor() to compare */
    struct {
        char from[257];
        uint8_t head[MSV_LOG_HEAD_LEN];
        int has_epoch;
        uint8_t epoch[MSV_LOG_EPOCH_LEN]; /* the key directory's root at head's size, signed */
    } gossip[8];
    size_t n_gossip;
    /* the account's session lock (client/sessions.h): its descriptor while held, and how deep */
    int session_lock_fd;
    unsigned session_lock_depth;
    /* the account's lock of its MLS groups' states (mlsgroups.c), held as the session lock */
    int mls_lock_fd;
    unsigned mls_lock_depth;
    /* group invitations that may wait at once (0: CLIENT_INVITES_MAX; a test's smaller one) */
    size_t invites_max;
    /* tests only: called by a group's change once it has read the state it changes */
    void (*test_group_read)(void *arg);
    void *test_group_arg;
    /* what the next client_send_payload writes in the transaction that puts its payload in the
     * outbox (taken at its start, so that a send within it does not take it): a group's new
     * state, kept if and only if the change is queued to go */
    const struct client_outbox_with {
        msv_err (*write)(struct msv_client *c, void *arg);
        void *arg;
        int queue_only; /* queued, not sent: older messages of its group wait to go first */
    } * outbox_with;
    /* a connection made while one of those locks was held (its sends take the session lock,
     * which would wait under the MLS lock for a process waiting for the MLS lock under the
     * session lock), or within a flush, did not send the outbox: it goes once none is held,
     * before a receive waits or after the command (client_outbox_later) */
    int outbox_deferred;
    /* whether the last payload client_send_payload took was kept in the outbox (whatever its
     * send then did): a receipt not kept there stays owed */
    int last_queued;
    /* the sends under way, innermost first (their message ids: a flush leaves them to their
     * sends), and the flushes of the outbox under way (a connection made within one does not
     * flush again) */
    const struct client_in_flight {
        const uint8_t *id;
        const struct client_in_flight *up; /* the send this one is made within, or NULL */
    } * in_flight;
    unsigned flushing;
    /* the payloads of MLS deliveries this client is taking, innermost first (their digests: a
     * receive within one leaves it to it at once, rather than wait for a claim it holds) */
    const struct client_in_flight *mls_taking;
    /* groups on MLS: told why a group stays on per-device copies, or a member was not
     * added (conversation: the group's); may be NULL */
    void (*on_mls_notice)(void *ctx, const char *conversation, const char *notice);
    /* a group on MLS: this device commits an update of its leaf before a message once this
     * long (seconds) or this many messages passed since its last commit (0: the defaults) */
    uint64_t mls_update_s, mls_update_messages;
    /* a group on MLS whose tree has a node on this device's path that is not keyed (blank above
     * other members, or listing unmerged leaves): this device commits from the end of a receive
     * within this (milliseconds; 0: 20 seconds a member device, from 10 minutes to a day):
     * after its first 5 minutes (at most half of it), at a random time within its leaf's slot,
     * the leaves' slots in the order that keys the tree from the top; its leaf is renewed so
     * too once its update is due */
    int64_t mls_key_spread_ms;
    /* a device this one approved waits to be added to its MLS groups: tried again this often
     * (milliseconds; 0: MSV_MLS_JOIN_RETRY_MS, backing off); mls_joining while the tries run */
    int64_t mls_join_retry_ms;
    int mls_joining;
    unsigned mls_within; /* receives made within a sync (after a commit refused as stale) */
    /* changed whenever a commit owed from a receive is scheduled, or this device's last commit
     * to a group on MLS (or its joining) is recorded: an owner that reads
     * msv_client_mls_keys_next reads it again then */
    unsigned mls_keys_changed;
    unsigned mls_keyings_taken; /* commits owed from a receive taken (sync_once) */
    size_t mls_look_missing;    /* devices an admin's hourly look could not add (sync_once) */
    /* a commit or Welcome larger than this many bytes goes by reference through the attachment
     * store (0: 16 KiB, the server's default payload limit) */
    size_t mls_inline_max;
    /* how long a receive tries for the claim on an MLS payload another process of the account
     * is taking, to take over should it fail (milliseconds; 0: 5000) */
    int mls_in_wait_ms;
    /* the last reads of MLS groups' commit logs that brought nothing: not made again for
     * that group and epoch within MLS_CATCH_UP_QUIET_MS (mlsgroups.c, catch_up) */
    struct client_mls_quiet mls_quiet[MSV_CLIENT_MLS_QUIET];
    /* a commit refused, its "mls-refused:" record due once the refusal is told */
    struct client_mls_refusal mls_refusal;
    uint64_t mls_ds_epoch; /* the group's epoch a stale commit of this device was told */
    int mls_sent_nobody;   /* the last MLS message no device took (send_once) */
    /* how long msv_client_receive() goes on while frames keep coming, beyond its quiet
     * time (0: MSV_CLIENT_RECEIVE_MAX_MS) */
    int receive_max_ms;
    /* msv_client_receive() also returns as soon as the server says it pushed all that was
       queued (QueueSync), not only after timeout_ms without a delivery */
    int receive_until_synced;
    /* a send that finds the server out of reach, or is asked to slow down, tries again
     * RETRIES times, after this long and doubling (milliseconds; 0: 500) */
    int send_backoff_ms;
    /*
     * The server keeps one connection that takes deliveries per device and closes the older
     * when another comes, so two processes of a device that take them (two receives, say) go
     * one after the other: such a connection holds the lock on "<account>/deliveries.lock"
     * for as long as it lives. How long its making waits for another process's hold (ms; 0:
     * MSV_CLIENT_DELIVERIES_WAIT_MS; negative: not at all), then MSV_ERR_BUSY with why.message
     * naming the holder. With deliveries_take_over (the account's owner, which takes what
     * comes for as long as it runs), or under the session or MLS lock, or while the outbox
     * is sent, it does not wait: the connection goes without the lock, and the server closes
     * the holder's. on_deliveries_wait is called once as a wait starts, with the holder's pid
     * ("" if it wrote none) and the wait; may be NULL.
     */
    int deliveries_wait_ms, deliveries_take_over;
    void (*on_deliveries_wait)(void *ctx, const char *pid, int wait_ms);
};

#define MSV_CLIENT_RECEIVE_MAX_MS 30000
#define MSV_CLIENT_DELIVERIES_WAIT_MS 60000

/*
 * Creates an account directory with a fresh device identity for handle at
 * the server (whose certificate is pinned now: trust on first use; its
 * fingerprint goes to fingerprint): keys of suite, and of the suites in also
 * (MSV_SUITE_BIT each) for devices that speak nothing else, and with
 * MSV_IDENTITY_PQ in also a modern identity that says post-quantum sessions
 * (docs/crypto.md, "Post-quantum sessions"). passphrase seals
 * the keys (Argon2id); NULL or "" stores them unsealed in the 0600 database.
 * Caller frees with msv_client_close().
 */
MSV_MUST_CHECK msv_err msv_client_create(const char *dir, const char *handle, const char *host,
                                         uint16_t port, enum msv_suite suite, unsigned also,
                                         const char *passphrase, uint8_t fingerprint[32],
                                         struct msv_client **out);
/*
 * Opens an existing account directory; MSV_ERR_AUTH for a wrong passphrase.
 * Both this and msv_client_create() refuse (MSV_ERR_INVALID) a directory that
 * is not this user's or that others may write; received files are written
 * in it only through its own attachments/ directory, never through a link.
 */
MSV_MUST_CHECK msv_err msv_client_open(const char *dir, const char *passphrase,
                                       struct msv_client **out);
void msv_client_close(struct msv_client *c);
/*
 * Remembers more addresses of the same service (nodes of a cluster, which
 * show the pinned certificate): "HOST:PORT,HOST:PORT..." ("" for none). A
 * connection tries the address that answered last, then the others in turn.
 * MSV_ERR_INVALID for a malformed list, changing nothing.
 */
MSV_MUST_CHECK msv_err msv_client_set_servers(struct msv_client *c, const char *others);

/*
 * Registration: ask for a code, then create the account with it. On a server
 * that registers by invitation, msv_client_set_invite first keeps the invite
 * code (in the account's settings, until the account is created) for both.
 */
MSV_MUST_CHECK msv_err msv_client_set_invite(struct msv_client *c, const char *invite);
MSV_MUST_CHECK msv_err msv_client_register_start(struct msv_client *c);
MSV_MUST_CHECK msv_err msv_client_register_finish(struct msv_client *c, const char *code,
                                                  const char *password);
/* Adds this device to an existing account. */
MSV_MUST_CHECK msv_err msv_client_link(struct msv_client *c, const char *password);
/*
 * Changes the account's password from password (the current one) to new_password (8 to 1024
 * bytes): MSV_ERR_AUTH if password is wrong, MSV_ERR_INVALID for a new one out of range,
 * nothing changed either way. The account's other devices are told (MSV_INCOMING_ACCOUNT).
 */
MSV_MUST_CHECK msv_err msv_client_password_change(struct msv_client *c, const char *password,
                                                  const char *new_password);
/*
 * Sets handle's password to new_password with the code the server's operator had sent to the
 * handle (missive-admin reset-password), over a connection to host:port that pins nothing:
 * the code is what proves the handle. MSV_ERR_AUTH for a wrong or expired code (why, may be
 * NULL, gets the server's words). The account's devices are told (MSV_INCOMING_ACCOUNT).
 */
MSV_MUST_CHECK msv_err msv_client_password_reset(const char *host, uint16_t port,
                                                 const char *handle, const char *code,
                                                 const char *new_password, struct msv_refusal *why);

/*
 * The account's handles (docs/missive.md, "Handles"). handles: as the server lists them, the
 * first one first (free with msv_handles_free). handle_add: the server sends a code to handle
 * (MSV_ERR_EXISTS if an account has it, MSV_ERR_TOO_BIG at the account's limit);
 * handle_verify makes it the account's with that code (MSV_ERR_AUTH: wrong or expired).
 * handle_remove: never the last (MSV_ERR_INVALID; MSV_ERR_NOT_FOUND if not the account's);
 * if it was this device's own, the account's first handle becomes it. The account's other
 * devices are told (MSV_INCOMING_HANDLE). c->why holds the server's words for a refusal.
 * send_from: the handle the next sends (to one person) name this account by, from then on
 * for that person (MSV_ERR_NOT_FOUND if it is not the account's; NULL or "": the one used
 * with them before, else the account's own).
 */
MSV_MUST_CHECK msv_err msv_client_handles(struct msv_client *c, char ***out, size_t *n);
void msv_handles_free(char **handles, size_t n);
MSV_MUST_CHECK msv_err msv_client_handle_add(struct msv_client *c, const char *handle);
MSV_MUST_CHECK msv_err msv_client_handle_verify(struct msv_client *c, const char *handle,
                                                const char *code);
MSV_MUST_CHECK msv_err msv_client_handle_remove(struct msv_client *c, const char *handle);
MSV_MUST_CHECK msv_err msv_client_send_from(struct msv_client *c, const char *handle);

/*
 * The account's username (docs/missive.md, "Usernames"), a handle among the others that is no
 * contact detail. username: the account's as the server lists it (*out "" if it has none;
 * caller frees with free()). username_set: name (msv_username_normalise's grammar, else
 * MSV_ERR_INVALID without asking) becomes it, releasing the one before; username_remove
 * releases it (MSV_ERR_NOT_FOUND if there is none). The account's other devices are told
 * (MSV_INCOMING_HANDLE). c->why holds the server's words for a refusal.
 */
MSV_MUST_CHECK msv_err msv_client_username(struct msv_client *c, char **out);
MSV_MUST_CHECK msv_err msv_client_username_set(struct msv_client *c, const char *name);
MSV_MUST_CHECK msv_err msv_client_username_remove(struct msv_client *c);

/* Linking by QR code (client/link.h). */
struct msv_link_wait {
    void (*show)(void *ctx, const char *code);     /* the code to show (text) */
    void (*progress)(void *ctx, int seconds_left); /* while waiting; may be NULL */
    void *ctx;
    int wait_s; /* at most 600 (0: 600) */
};
struct msv_link_result {
    uint64_t device_id, approver_id;
    uint8_t approver_fingerprint[32];
    /* 1: imported; 0: none came; -1: not imported (history_err, c->why); 2: it comes later, in
     * the background (msv_client_receive imports it) */
    int history;
    msv_err history_err;
    uint64_t history_size;   /* its archive's bytes */
    size_t settings, groups; /* the account's state that came with the message */
    msv_err state_err;       /* not MSV_OK: linked, but not all of it is held (c->why) */
};
struct msv_incoming;
struct msv_link_add {
    int history; /* send this device's history and files too */
    void (*upload_progress)(uint64_t done, uint64_t total); /* may be NULL */
    /* the history's progress, done and failure (MSV_INCOMING_LINK_HISTORY); may be NULL */
    void (*on_event)(void *ctx, const struct msv_incoming *in);
    void *ctx;
};
struct msv_link_code;
/*
 * This device, not linked yet, opens a provisioning address, shows its code
 * and waits for a device of the account to send the provisioning message;
 * then checks it (sealed to this code, signed by a device the account's
 * log lists) and is a device of the account. MSV_ERR_AGAIN: none came in
 * time; MSV_ERR_AUTH: what came is refused (nothing is kept: try again).
 */
MSV_MUST_CHECK msv_err msv_client_link_by_code(struct msv_client *c, const struct msv_link_wait *w,
                                               struct msv_link_result *res);
/*
 * Imports the history a linked device was sent and has not imported yet (the
 * import failed or was stopped): downloaded again, its hash checked, only
 * what this device does not hold added. *size: the archive's bytes.
 * MSV_ERR_NOT_FOUND if none waits.
 */
MSV_MUST_CHECK msv_err msv_client_link_resume_history(struct msv_client *c, uint64_t *size);
/*
 * Adds the device whose code this is to the account, approves it and sends
 * it its provisioning message, with (how->history) this device's history and
 * files as an archive in the attachment store; *device_id receives its id.
 * The new device is told with its history, and imports it once linked.
 */
MSV_MUST_CHECK msv_err msv_client_link_add(struct msv_client *c, const struct msv_link_code *code,
                                           const struct msv_link_add *how, uint64_t *device_id);
/*
 * Builds, uploads and sends again the history this device owes device (an
 * upload that failed or was stopped at any point), under the key and archive
 * id its provisioning message named. MSV_ERR_NOT_FOUND if none is owed.
 */
MSV_MUST_CHECK msv_err msv_client_link_resume_send(struct msv_client *c, uint64_t device,
                                                   const struct msv_link_add *how);

/* Connects and authenticates (a no-op when connected). */
MSV_MUST_CHECK msv_err msv_client_connect(struct msv_client *c);

/* A file to send with a message. */
struct msv_file {
    const char *name; /* as the recipient sees it */
    const char *mime;
    const uint8_t *data;
    size_t len;
};

/* Text longer than this travels as an attachment, so every envelope stays small. */
#define MSV_CLIENT_INLINE_TEXT_MAX 8000

/*
 * Sends a message to the handles (and the account's other devices): uploads
 * the files, each encrypted under a fresh key, looks up the devices, seals
 * per device, sends; refreshes and retries when the device list was stale.
 * The message is in history as "queued" until the relay accepts it, then
 * "sent". progress (may be NULL) follows the uploads. message_id receives
 * the message's id.
 */
MSV_MUST_CHECK msv_err msv_client_send(struct msv_client *c, const char *const *handles, size_t n,
                                       const char *text, const struct msv_file *files,
                                       size_t n_files,
                                       void (*progress)(uint64_t done, uint64_t total),
                                       uint8_t message_id[16]);

/*
 * Groups: membership is kept by the clients. Creating, renaming and changing
 * members send a group change to every member's devices (removed members
 * included); this account's handle is always a member of a group it makes.
 */
MSV_MUST_CHECK msv_err msv_client_group_create(struct msv_client *c, const char *name,
                                               const char *const *members, size_t n,
                                               uint8_t group_id[16]);
/*
 * A group named by "group:<hex id>" (any group this device knows, an
 * invitation too) or by name (accepted groups only). MSV_ERR_NOT_FOUND if
 * none; MSV_ERR_EXISTS if several accepted groups have the name (name it by
 * its id). g: clear with msv_group_clear(). Creating a group, or renaming
 * one, to a name an accepted group has is MSV_ERR_EXISTS.
 */
MSV_MUST_CHECK msv_err msv_client_group_find(struct msv_client *c, const char *which,
                                             struct msv_group_rec *g);
/*
 * A group someone else made arrives as an invitation: its messages are kept,
 * but it is not named, changed or written to until accepted by its id
 * ("group:<hex>"); MSV_ERR_NOT_FOUND if there is no such group.
 */
MSV_MUST_CHECK msv_err msv_client_group_accept(struct msv_client *c, const char *which);
/*
 * name: as for msv_client_group_find(), an accepted group only. new_name NULL
 * keeps the name; add and remove list handles.
 */
MSV_MUST_CHECK msv_err msv_client_group_change(struct msv_client *c, const char *name,
                                               const char *new_name, const char *const *add,
                                               size_t n_add, const char *const *remove,
                                               size_t n_remove);
MSV_MUST_CHECK msv_err msv_client_group_send(struct msv_client *c, const char *name,
                                             const char *text, const struct msv_file *files,
                                             size_t n_files,
                                             void (*progress)(uint64_t done, uint64_t total),
                                             uint8_t message_id[16]);
/*
 * Admins of a group (docs/groups.md): admin 1 promotes member, 0 demotes
 * them; leave takes this account out of the group (the last admin leaving
 * hands the group to the first member left). Only admins change a group;
 * members may leave: MSV_ERR_AUTH if this account is not an admin,
 * MSV_ERR_NOT_FOUND if member is no member (or this account no longer is).
 */
MSV_MUST_CHECK msv_err msv_client_group_admin(struct msv_client *c, const char *which,
                                              const char *member, int admin);
MSV_MUST_CHECK msv_err msv_client_group_leave(struct msv_client *c, const char *which);
/*
 * The admins of a group as this device holds its signed state, one handle a
 * line (caller frees *admins with free()); MSV_ERR_NOT_FOUND for a group
 * without one (made before groups were signed).
 */
MSV_MUST_CHECK msv_err msv_client_group_admins(struct msv_client *c, const uint8_t group_id[16],
                                               char **admins);
/* Whether this device reads and writes the group on MLS (else per-device copies). */
int msv_client_group_on_mls(struct msv_client *c, const uint8_t group_id[16]);
/*
 * What members of a group on MLS compare out of band to know they hold one group state (a
 * server that forks the group, giving members different commits of one epoch, shows them
 * different codes; docs/crypto.md, "The group's code"): the MLS group's generation and epoch
 * this device holds, and 60 digits in twelve groups of five made from the epoch authenticator
 * (RFC 9420 8.7), which every member at that epoch shares and nobody else can work out.
 * MSV_ERR_NOT_FOUND for a group not on MLS on this device.
 */
#define MSV_GROUP_CODE_LEN 71 /* its characters, the NUL aside */
MSV_MUST_CHECK msv_err msv_client_group_code(struct msv_client *c, const uint8_t group_id[16],
                                             uint32_t *generation, uint64_t *epoch,
                                             char code[MSV_GROUP_CODE_LEN + 1]);
/*
 * Sends text (and files) as an answer to message reply_to, in the
 * conversation that message is in (its group, or the other person);
 * conversation, if not NULL, must be that one. MSV_ERR_NOT_FOUND if this
 * device does not have the message, MSV_ERR_INVALID if it is elsewhere or not
 * a message. Otherwise as msv_client_send.
 */
MSV_MUST_CHECK msv_err msv_client_reply(struct msv_client *c, const uint8_t reply_to[16],
                                        const char *conversation, const char *text,
                                        const struct msv_file *files, size_t n_files,
                                        void (*progress)(uint64_t done, uint64_t total),
                                        uint8_t message_id[16]);

/*
 * Invite links (docs/groups.md, "Invite links"). An admin's link
 * ("missive:join?g=HEX&s=BASE64URL&a=ADMIN,...", at most MSV_INVITE_URI_MAX
 * bytes, naming at most MSV_INVITE_ADMINS_MAX admins) lets whoever holds it
 * ask to join. group_invite: MSV_INVITE_SHOW makes the link if there is none
 * (and shares the settings with the admins again), RESET gives it a new secret
 * (old links are refused), OFF turns links off (*uri stays NULL); approval 1
 * or 0 sets whether an admin approves each request, -1 keeps it. *uri: caller
 * frees with free(). MSV_ERR_AUTH if this account is not an admin.
 */
#define MSV_INVITE_URI_MAX 2048
#define MSV_INVITE_ADMINS_MAX 8
#define MSV_JOIN_PENDING_MAX 256 /* requests waiting for an admin, per group */
enum msv_invite_action { MSV_INVITE_SHOW, MSV_INVITE_RESET, MSV_INVITE_OFF };
MSV_MUST_CHECK msv_err msv_client_group_invite(struct msv_client *c, const char *which,
                                               enum msv_invite_action act, int approval,
                                               char **uri);
/* A link as msv_invite_parse() reads it; clear with msv_invite_clear() (wipes the secret). */
struct msv_invite {
    uint8_t group_id[16];
    uint8_t secret[32];
    char *admins[MSV_INVITE_ADMINS_MAX];
    size_t n_admins;
};
/* MSV_ERR_PARSE for anything but a well-formed link, MSV_ERR_TOO_BIG past the limits. */
MSV_MUST_CHECK msv_err msv_invite_parse(const char *uri, struct msv_invite *inv);
void msv_invite_clear(struct msv_invite *inv);
/*
 * Asks the admins a link names to let this account in (nothing answers; the
 * group arrives when an admin adds it, and is then accepted). MSV_ERR_PARSE
 * for a malformed link, MSV_ERR_EXISTS if this account is in the group.
 */
MSV_MUST_CHECK msv_err msv_client_group_join(struct msv_client *c, const char *uri);
/*
 * The requests waiting for an admin (one handle a line, caller frees
 * *handles) and how many requests this device refused, for any group.
 * decide: approve 1 adds handle with a signed change, 0 drops the request
 * and tells nobody; MSV_ERR_NOT_FOUND if handle does not wait, MSV_ERR_AUTH
 * for a non-admin, MSV_ERR_EXISTS if handle is a member already.
 */
MSV_MUST_CHECK msv_err msv_client_group_requests(struct msv_client *c, const char *which,
                                                 char **handles, uint64_t *refused);
MSV_MUST_CHECK msv_err msv_client_group_decide(struct msv_client *c, const char *which,
                                               const char *handle, int approve);

/* The history conversation of a group: "group:" and its id in hex. */
void msv_client_group_conversation(const uint8_t group_id[16], char out[40]);

/*
 * Control messages. typing: a notice to a conversation (a handle or
 * "group:<hex>"). edit and unsend: change one of this account's messages for
 * everyone in its conversation (only the author's changes are applied by
 * receivers). mark_read: read receipts for the conversation's unread
 * messages (NULL: all); *count says how many. Delivery receipts go out by
 * themselves when a message is stored.
 */
MSV_MUST_CHECK msv_err msv_client_typing(struct msv_client *c, const char *conversation);
MSV_MUST_CHECK msv_err msv_client_edit(struct msv_client *c, const uint8_t id[16],
                                       const char *text);
MSV_MUST_CHECK msv_err msv_client_unsend(struct msv_client *c, const uint8_t id[16]);

/*
 * How long after sending a message may be edited ("edit") or unsent
 * ("unsend"), in seconds: 24 h unless the account set another (settings
 * "sync:window:edit" and "sync:window:unsend"). The sender refuses a change
 * outside its window (MSV_ERR_INVALID, why says "too late"); a receiver
 * refuses one made more than its own window (and MSV_CLOCK_SKEW_MS) after the
 * message, and says so. MSV_ERR_INVALID for another which or a window over
 * MSV_WINDOW_MAX_S.
 */
#define MSV_WINDOW_DEFAULT_S (24u * 3600u)
#define MSV_WINDOW_MAX_S (10u * 366u * 24u * 3600u)
#define MSV_CLOCK_SKEW_MS (5 * 60 * 1000)
MSV_MUST_CHECK msv_err msv_client_window(struct msv_client *c, const char *which,
                                         uint64_t *seconds);
MSV_MUST_CHECK msv_err msv_client_set_window(struct msv_client *c, const char *which,
                                             uint64_t seconds);
MSV_MUST_CHECK msv_err msv_client_mark_read(struct msv_client *c, const char *conversation,
                                            size_t *count);

/*
 * Reacts to a message of one's conversations with emoji
 * (msv_payload_reaction_is_valid), or takes one's reaction away (emoji NULL):
 * sent to the people of the message's conversation, each keeping one reaction
 * per person and message, the newest. MSV_ERR_INVALID for a bad emoji or a
 * message that is not a message (an unsent one, a group change);
 * MSV_ERR_NOT_FOUND if this device does not have it.
 */
MSV_MUST_CHECK msv_err msv_client_react(struct msv_client *c, const uint8_t id[16],
                                        const char *emoji);

/* A profile: a display name and an avatar (src/client/profiles.c). */
struct msv_profile {
    char *name;      /* 1..MSV_PROFILE_NAME_MAX bytes, msv_client_profile_name_is_valid() */
    uint8_t *avatar; /* avatar_len bytes (0: none), at most MSV_PROFILE_AVATAR_MAX */
    size_t avatar_len;
};
void msv_profile_free(struct msv_profile *p);
/* 1 for 1 to MSV_PROFILE_NAME_MAX bytes of UTF-8 without control or bidi characters. */
int msv_client_profile_name_is_valid(const char *name);
/*
 * Sets this account's profile: encrypted under its profile key, uploaded, and
 * pointed at by every message it sends from now on. keep_avatar: the avatar
 * the profile has now stays (avatar ignored); else avatar (avatar_len 0: none).
 * MSV_ERR_INVALID for a bad name, MSV_ERR_TOO_BIG for an avatar over 1 MiB.
 */
MSV_MUST_CHECK msv_err msv_client_profile_set(struct msv_client *c, const char *name,
                                              const uint8_t *avatar, size_t avatar_len,
                                              int keep_avatar);
/* This account's profile, fetched (caller frees with msv_profile_free); MSV_ERR_NOT_FOUND if none.
 */
MSV_MUST_CHECK msv_err msv_client_profile(struct msv_client *c, struct msv_profile **out);
/*
 * A contact's profile as last received: *name (caller frees), and the path of
 * its avatar file in avatar ("" if none; may be NULL). MSV_ERR_NOT_FOUND if none.
 */
MSV_MUST_CHECK msv_err msv_client_contact_profile(struct msv_client *c, const char *handle,
                                                  char **name, char *avatar, size_t avatar_len);
/*
 * What to call handle: the user's contact name for it, else its profile's
 * display name (unsafe for a terminal as it is). MSV_ERR_NOT_FOUND if neither.
 */
MSV_MUST_CHECK msv_err msv_client_sender_name(struct msv_client *c, const char *handle, char *out,
                                              size_t len);

/* The first line of text, cut to fit len bytes (NUL included) between characters. */
void msv_client_first_line(const char *text, char *out, size_t len);

/*
 * Conversations as the person arranged them: muted until a time (INT64_MAX
 * for good; their messages are stored and listed, but do not alert),
 * archived (left out of the list unless with_archived, or it is keep, until a
 * new message comes while not muted), pinned (listed first). Kept in the
 * settings "sync:conv:<conversation>:mute|archive|pin", which the account's
 * devices share. set: MSV_ERR_INVALID for an empty or over-long name or
 * control characters in it, or a mute without a time.
 */
enum msv_conversation_change {
    MSV_CONVERSATION_MUTE,
    MSV_CONVERSATION_UNMUTE,
    MSV_CONVERSATION_ARCHIVE,
    MSV_CONVERSATION_UNARCHIVE,
    MSV_CONVERSATION_PIN,
    MSV_CONVERSATION_UNPIN,
};
MSV_MUST_CHECK msv_err msv_client_conversation_set(struct msv_client *c, const char *conversation,
                                                   enum msv_conversation_change what,
                                                   int64_t mute_until_ms);
int msv_client_conversation_muted(struct msv_client *c, const char *conversation);
/* The conversations, pinned first, each part newest first; free with msv_conversations_free. */
MSV_MUST_CHECK msv_err msv_client_conversations(struct msv_client *c, int with_archived,
                                                const char *keep, struct msv_conversation_rec **out,
                                                size_t *count);

/* What msv_client_receive() reports, by kind. */
enum msv_incoming_kind {
    MSV_INCOMING_MESSAGE, /* message: a new message, stored */
    MSV_INCOMING_RECEIPT, /* target delivered or read (status), for a message this account sent */
    MSV_INCOMING_TYPING,  /* from is typing */
    MSV_INCOMING_EDIT,    /* from edited or unsent (status) target */
    MSV_INCOMING_DEVICE,  /* a device of this account was added, removed, or asks to join */
    MSV_INCOMING_SESSION, /* a session with a device of from was started anew, or a message
                             from it could not be read (notice) */
    /* from reacted to target with emoji ("" took it away) */
    MSV_INCOMING_REACTION,
    MSV_INCOMING_SYNC,         /* another device of this account synced changes here (notice) */
    MSV_INCOMING_BLOCKED,      /* something from, who is blocked, sent was dropped unanswered:
                                  status says what ("message", "receipt", "typing", ...) */
    MSV_INCOMING_GROUP,        /* after the message of a group change: what it did or why it was
                                  refused (notice), status "applied" or "refused" */
    MSV_INCOMING_CONVERSATION, /* conversation's state changed (status: "unarchived", ...) */
    MSV_INCOMING_TIMER,   /* from set the conversation's disappearing-message timer (timer_s) */
    MSV_INCOMING_EXPIRED, /* target (sent by from) disappeared from the conversation */
    MSV_INCOMING_PROFILE, /* from's profile changed, or could not be used (notice) */
    /* a request to join a group by its link (docs/groups.md): status "pending", "added",
       "full", or "refused" (then from and conversation are NULL: it names nobody) */
    MSV_INCOMING_JOIN_REQUEST,
    /* the account itself changed (notice; status "password_changed") */
    MSV_INCOMING_ACCOUNT,
    /* a send to this account was refused: a device's queue on the server is full (notice;
       status "queue_full") */
    MSV_INCOMING_QUOTA,
    /* a handle of this account was added or removed (status "added", "removed"; handle) */
    MSV_INCOMING_HANDLE,
    /* the history of a device link, in the background (docs/missive.md, "Linking a device by
       QR code"): status "progress" (done of total bytes), "done" or "failed" (notice) */
    MSV_INCOMING_LINK_HISTORY,
};

struct msv_incoming {
    enum msv_incoming_kind kind;
    const struct msv_message_rec *message; /* MSV_INCOMING_MESSAGE only */
    const char *notice;       /* the other kinds: a sentence for people (NULL for receipts) */
    const char *from;         /* the handle it came from (NULL for device notices) */
    const char *conversation; /* the conversation it is about (NULL if none) */
    const uint8_t *target;    /* receipts, edits: the message's id */
    /* receipts: "delivered" or "read"; edits: "edited", "unsent", or "refused" (made after the
     * window); group changes: "applied" or "refused" */
    const char *status;
    const char *emoji; /* reactions: the emoji, "" when taken away */
    uint32_t timer_s;  /* timers: the new value in seconds, 0 for off */
    /* MSV_INCOMING_HANDLE: the handle added or removed */
    const char *handle;
    /* MSV_INCOMING_LINK_HISTORY: the other device, and bytes done of total (progress) */
    uint64_t device_id, done, total;
};

/*
 * Handles deliveries until none arrives for timeout_ms: each is verified,
 * decrypted, stored (a redelivered message is recognised by its id and not
 * stored or reported twice), then acknowledged. on_message (may be NULL) sees
 * each new message. *count receives how many were new. However busy the
 * server keeps it, it returns within timeout_ms plus c->receive_max_ms; what
 * it did not take by then waits on the server for the next call.
 */
MSV_MUST_CHECK msv_err msv_client_receive(struct msv_client *c, int timeout_ms,
                                          void (*on_message)(void *ctx,
                                                             const struct msv_incoming *in),
                                          void *ctx, size_t *count);

/*
 * Disappearing messages. A conversation (a handle or "group:<hex>") has a
 * timer, 0 (off) or MSV_TIMER_MIN_S to MSV_TIMER_MAX_S seconds, that any
 * participant sets: timer_set sends the change to everyone in it (and this
 * account's other devices) and records it here; MSV_ERR_INVALID out of range.
 * Messages sent while a timer is in force carry it; each device deletes such
 * a message that long after it was read (msv_client_mark_read), or after it
 * was sent for this account's own messages. timer_get: the timer in force (0
 * if none). timer_parse: "off", or a number with an optional unit s, m, h, d
 * or w, in range; MSV_ERR_INVALID otherwise. timer_text: the shortest such
 * text for a value ("1h", "90s", "off").
 */
MSV_MUST_CHECK msv_err msv_client_timer_set(struct msv_client *c, const char *conversation,
                                            uint32_t timer_s);
MSV_MUST_CHECK msv_err msv_client_timer_get(struct msv_client *c, const char *conversation,
                                            uint32_t *timer_s);
MSV_MUST_CHECK msv_err msv_client_timer_parse(const char *text, uint32_t *timer_s);
void msv_client_timer_text(uint32_t timer_s, char out[16]);
/*
 * Deletes every message whose time has come (files it brought included) and
 * tells on_message (may be NULL) of each, MSV_INCOMING_EXPIRED; *count says
 * how many. msv_client_open() and msv_client_receive() call it; a program
 * that stays open calls it now and then too.
 */
MSV_MUST_CHECK msv_err msv_client_expire(struct msv_client *c,
                                         void (*on_message)(void *ctx,
                                                            const struct msv_incoming *in),
                                         void *ctx, size_t *count);

/*
 * Watches the transparency log for this account: reads the entries logged
 * since the last call (each proven against a head consistent with the ones
 * seen before) and calls on_alarm for every device they list for this
 * account that this device was never told of (by its own registration, the
 * account's device notices, or the directory when watching began; the first
 * call only records that). *alarms counts them; each device is reported once.
 * Run it after msv_client_receive(), so the notices are in.
 */
MSV_MUST_CHECK msv_err msv_client_monitor(struct msv_client *c,
                                          void (*on_alarm)(void *ctx, const char *warning),
                                          void *ctx, size_t *alarms);

/*
 * Contact verification. The safety number of the conversation with handle
 * (60 digits, the same on both sides: both accounts' devices as the
 * transparency-checked directory lists them), made under version
 * (MSV_SAFETY_VERSION, or 1 to recognise an older side's number); digest receives the digest of
 * handle's device set, which msv_client_mark_verified() records once the
 * number matched (or the user accepted it). A verified contact whose devices
 * change is then not written to: sends fail with MSV_ERR_AUTH and why.code
 * MSV_REFUSAL_KEY_CHANGE, and wait in the outbox, until it is marked again.
 * msv_client_verified(): MSV_OK if handle is verified with this digest,
 * MSV_ERR_AUTH if with another, MSV_ERR_NOT_FOUND if not verified.
 */
#define MSV_REFUSAL_KEY_CHANGE 1000 /* a why.code of the client's own, not the server's */
#define MSV_REFUSAL_PQ 1135 /* why.code: a post-quantum device without a checked KEM prekey */
MSV_MUST_CHECK msv_err msv_client_safety_number(struct msv_client *c, const char *handle,
                                                unsigned version, char number[61],
                                                uint8_t digest[32]);
MSV_MUST_CHECK msv_err msv_client_mark_verified(struct msv_client *c, const char *handle,
                                                const uint8_t digest[32]);
/*
 * What this device's lookups showed of handle's signed device list (docs/transparency.md,
 * "Signed device lists"): MSV_DEVLIST_SIGNED (approved from its root), MSV_DEVLIST_RECOVERED
 * (from a recovery by password), MSV_DEVLIST_UNSIGNED (an account from before approvals were
 * kept), or MSV_DEVLIST_UNKNOWN (not looked up since, or a record that does not read).
 */
enum msv_devlist_state {
    MSV_DEVLIST_UNKNOWN = 0,
    MSV_DEVLIST_SIGNED = 1,
    MSV_DEVLIST_UNSIGNED = 2,
    MSV_DEVLIST_RECOVERED = 3,
};
enum msv_devlist_state msv_client_devlist_state(struct msv_client *c, const char *handle);
MSV_MUST_CHECK msv_err msv_client_verified(struct msv_client *c, const char *handle,
                                           const uint8_t digest[32]);

/*
 * Blocking. A blocked handle's deliveries (messages, group messages and
 * invitations, receipts, typing notices, edits, unreadable ones) are
 * acknowledged to the relay and dropped without any answer, each counted;
 * sending to it is refused (MSV_ERR_INVALID, why.code MSV_REFUSAL_BLOCKED)
 * until it is unblocked. msv_client_block(): the handle must have an account
 * (MSV_ERR_NOT_FOUND otherwise, asking the directory); at most
 * MSV_BLOCKED_MAX handles (MSV_ERR_TOO_BIG); blocking again changes nothing.
 * msv_client_unblock(): MSV_ERR_NOT_FOUND if not blocked; the count goes.
 * msv_client_blocked(): *out (caller frees with free()) by handle.
 */
#define MSV_REFUSAL_BLOCKED 1001 /* why.code: blocking refused, or a send to a blocked handle */
/* why.code: a send to handles no account has (never registered, or deleted) alone: the message
 * is not queued, its history status "failed" */
#define MSV_REFUSAL_GONE 1004
#define MSV_REFUSAL_PRIVACY 1002 /* why.code: an unknown privacy setting or value */
#define MSV_BLOCKED_MAX 10000
struct msv_blocked {
    char handle[257];
    uint64_t dropped; /* deliveries dropped since it was blocked */
};
MSV_MUST_CHECK msv_err msv_client_block(struct msv_client *c, const char *handle);
MSV_MUST_CHECK msv_err msv_client_unblock(struct msv_client *c, const char *handle);
int msv_client_is_blocked(struct msv_client *c, const char *handle);
MSV_MUST_CHECK msv_err msv_client_blocked(struct msv_client *c, struct msv_blocked **out,
                                          size_t *count);

/*
 * Privacy settings, "on" unless turned "off": "read-receipts" (off: none is
 * sent, and those that arrive are not applied or shown) and "typing" (off:
 * msv_client_typing() refuses, and notices that arrive are not shown).
 * Delivery receipts always go. An unknown name is MSV_ERR_NOT_FOUND, a value
 * other than "on" or "off" MSV_ERR_INVALID (why.code MSV_REFUSAL_PRIVACY).
 * msv_client_privacy_name(i): the i-th setting's name, NULL past the last.
 */
MSV_MUST_CHECK msv_err msv_client_privacy_get(struct msv_client *c, const char *name, int *on);
MSV_MUST_CHECK msv_err msv_client_privacy_set(struct msv_client *c, const char *name,
                                              const char *value);
const char *msv_client_privacy_name(size_t i);

/*
 * Message requests (docs/missive.md, "Message requests"). The first message
 * from a handle that is not a contact, not in an accepted group of this
 * account's and never written to is a request: stored and shown, answered in
 * no way (no receipts, no typing notices) until accepted. Accepting (also
 * done by writing to the handle or adding it as a contact) sends the receipts
 * held back; deleting removes its messages (its next message is a request
 * again); blocking deletes and blocks. Each of these: MSV_ERR_NOT_FOUND (why
 * says so) if handle has no pending request. msv_client_requests(): at most
 * MSV_REQUESTS_MAX, by handle; free with msv_requests_free().
 */
#define MSV_REFUSAL_REQUEST 1003 /* why.code: no message request from that handle */
#define MSV_REQUESTS_MAX 10000
struct msv_request {
    char handle[256];
    size_t count;     /* messages held as the request */
    char *first_text; /* the first and last of them (NULL if none is left) */
    char *last_text;
    int64_t last_at_ms; /* when the last was stored */
};
MSV_MUST_CHECK msv_err msv_client_requests(struct msv_client *c, struct msv_request **out,
                                           size_t *count);
void msv_requests_free(struct msv_request *r, size_t count);
MSV_MUST_CHECK msv_err msv_client_request_accept(struct msv_client *c, const char *handle);
MSV_MUST_CHECK msv_err msv_client_request_delete(struct msv_client *c, const char *handle);
MSV_MUST_CHECK msv_err msv_client_request_block(struct msv_client *c, const char *handle);
/* Whether handle's conversation is a pending request. */
int msv_client_is_request(struct msv_client *c, const char *handle);
/* Whether m is a received message held as a pending request. */
int msv_client_message_is_request(struct msv_client *c, const struct msv_message_rec *m);

/*
 * Reports handle to the server's operator, with reason (NULL or "": none;
 * at most MSV_REPORT_REASON_MAX bytes) and, only if include_text, the text of
 * the n (at most MSV_REPORT_MESSAGES_MAX) stored messages named by ids, each
 * of which must be one handle sent (MSV_ERR_NOT_FOUND otherwise, why says
 * which). Without include_text no message text leaves the device. The server
 * refuses a handle without an account (MSV_ERR_NOT_FOUND) and too many
 * reports (MSV_ERR_INVALID, why.code ERROR_RATE_LIMITED).
 */
#define MSV_REFUSAL_REPORT 1003 /* why.code: a report refused before it was sent */
#define MSV_REPORT_REASON_MAX 1000
#define MSV_REPORT_MESSAGES_MAX 50
MSV_MUST_CHECK msv_err msv_client_report(struct msv_client *c, const char *handle,
                                         const char *reason, const uint8_t (*ids)[16], size_t n,
                                         int include_text);

/*
 * The account's use of the server against its limits: what waits for each of its devices
 * and what they hold of the attachment store, with the server's queue caps and attachment
 * quotas. *result (caller frees with msv_frame_free) has body usage.
 */
MSV_MUST_CHECK msv_err msv_client_usage(struct msv_client *c, msv_frame **result);

/* The devices registered for handle (NULL: this account) as the directory lists them. */
MSV_MUST_CHECK msv_err msv_client_devices(struct msv_client *c, const char *handle,
                                          msv_frame **result);
MSV_MUST_CHECK msv_err msv_client_remove_device(struct msv_client *c, uint64_t device_id);
/*
 * This device leaves its account: the server removes it (the account's other devices are
 * told), then msv_client_wipe(). Nothing is deleted here if the server does not remove it.
 */
MSV_MUST_CHECK msv_err msv_client_leave(struct msv_client *c);
/*
 * Deletes this device's local state: its account directory c->dir with the keys, the database
 * (messages, contacts, groups, settings, sessions) and the files received, never following a
 * link; c stays open on nothing (device_id 0) and is only to be closed. MSV_ERR_IO if some of
 * it could not be deleted (what could not stays).
 */
MSV_MUST_CHECK msv_err msv_client_wipe(struct msv_client *c);
/*
 * Deletes the account on the server with everything it holds of it (password: the account's;
 * MSV_ERR_AUTH if wrong, nothing changed), then msv_client_wipe(). Every other device of the
 * account is refused from then on (msv_client_account_deleted).
 */
MSV_MUST_CHECK msv_err msv_client_delete_account(struct msv_client *c, const char *password);
/* 1 if the server refused this device because its account was deleted (after a connect). */
int msv_client_account_deleted(const struct msv_client *c);
/*
 * Approves a device waiting to join this account (see the notice its link causes), and sends
 * it the synced state and a copy of each group this device holds. On MSV_OK, a non-empty
 * c->why.message tells of groups whose copy could not be made.
 */
MSV_MUST_CHECK msv_err msv_client_approve_device(struct msv_client *c, uint64_t device_id);

/*
 * Sends the changes of synced state (contacts, "sync:" settings) not yet sent
 * to the account's other devices; *sent (may be NULL) counts them. Run after
 * each command; what cannot be sent now stays pending or in the outbox.
 * Approving a device sends it the whole synced state. Also sends the group
 * copies owed to the account's devices, and the outbox when a connection made
 * under the session or MLS lock held it back (not sent at once then).
 */
MSV_MUST_CHECK msv_err msv_client_sync_flush(struct msv_client *c, size_t *sent);

/* How many sends went without sealed sender to a handle whose delivery token this device has. */
uint64_t msv_client_unsealed_sends(struct msv_client *c);
/*
 * Why queued message id could not go the last time the outbox was sent (*reason: caller frees
 * with free()); MSV_ERR_NOT_FOUND if it did not fail so (sent, or not tried yet).
 */
MSV_MUST_CHECK msv_err msv_client_outbox_held(struct msv_client *c, const uint8_t id[16],
                                              char **reason);
/* How many sealed envelopes made classically to this post-quantum device were refused. */
uint64_t msv_client_sealed_downgrades(struct msv_client *c);
/* How many sealed envelopes came sealed to a post-quantum key this device does not hold. */
uint64_t msv_client_sealed_unopenable(struct msv_client *c);
/* How many envelopes named a sending device the directory does not list (or whose answer did not
 * check out) for the handle they name: dropped, naming nobody, told through on_unopened. */
uint64_t msv_client_senders_unchecked(struct msv_client *c);
/* How many one-time prekey secrets of uploads whose answer was lost were deleted so far. */
uint64_t msv_client_prekeys_reclaimed(struct msv_client *c);
/* How many classical envelopes from device_id this post-quantum device read (on_classical). */
uint64_t msv_client_classical_read(struct msv_client *c, uint64_t device_id);
/* How many times this device's keys could not be published on connecting (on_keys_unpublished). */
uint64_t msv_client_keys_unpublished(struct msv_client *c);
/* How many messages owed to handles that never checked out were given up (MSV_OUTBOX_OWED_DAYS). */
uint64_t msv_client_owed_given_up(struct msv_client *c);
/* How many times a group's founding again on MLS was held back by its hourly limit. */
uint64_t msv_client_mls_refoundings_held(struct msv_client *c);
/* How many waits of a group on MLS were given up: a device of this account that never joined
 * (MSV_MLS_JOIN_DAYS, or MSV_MLS_JOINS_MAX waiting), a removal this device could not commit. */
uint64_t msv_client_mls_waits_given_up(struct msv_client *c);
/* Group invitations dropped: 20 from their inviter, or 1,000 in all, waited to be accepted. */
uint64_t msv_client_invitations_dropped(struct msv_client *c);
/* Edits and unsends of messages not here yet that were dropped unapplied: 32 from their author,
 * or 256 in all, waited for their message. */
uint64_t msv_client_early_changes_dropped(struct msv_client *c);
/* How many commits and Welcomes sent by reference were not fetched: their sending device had
 * sent more than MSV_MLS_BY_REF_HOURLY bytes by reference within the hour (told each time). */
#define MSV_MLS_BY_REF_HOURLY ((uint64_t)64 << 20)
uint64_t msv_client_mls_by_ref_held(struct msv_client *c);
/* How many requests of a member's device to be added to a group's MLS group again were not
 * kept: 256 already waited on this admin's device (docs/crypto.md, "Joining again"). */
uint64_t msv_client_mls_rejoins_held(struct msv_client *c);
/* Commits owed from a receive (keying a path, renewing a leaf) made, and tries of them that
 * failed and were put off. */
uint64_t msv_client_mls_keyings_made(struct msv_client *c);
uint64_t msv_client_mls_keyings_put_off(struct msv_client *c);
/* When the first commit owed from a receive falls due, in wall milliseconds (INT64_MAX: none):
 * a receive made then makes it. For an owner that receives only what the server pushes. */
int64_t msv_client_mls_keys_next(struct msv_client *c);
/*
 * Publishes this device's keys again on the open connection if publishing them failed and its
 * wait (keys_retry_at) has passed: for a process that stays connected (the daemon), which would
 * otherwise try again only when it reconnects. A failure is told and counted again.
 */
void msv_client_keys_retry(struct msv_client *c);
/* Tells on_unopened of such envelopes not told of yet (at most once a minute per process). */
void msv_client_tell_unopened(struct msv_client *c);

#endif
