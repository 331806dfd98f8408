/*
 * missived's side of key transparency: the log's Merkle tree kept in memory
 * (built from the store's leaves at start, caught up after every device
 * change), its Ed25519 key, signed tree heads, and the answers that carry
 * proofs: directory lookups and LogRead.
 */
#ifndef MSV_SERVER_KT_LOG_H
#define MSV_SERVER_KT_LOG_H

#include <pthread.h>
#include <stdatomic.h>

#include "missive/kt.h"
#include "server/keydir.h"
#include "server/u64map.h"
#include "store/store.h"
#include "wire/frame.h"

/* A head is signed again, with the time, when the last one is this old. */
#define MSV_KT_HEAD_INTERVAL_MS 60000

struct msv_kt_log {
    pthread_mutex_t lock;
    struct msv_merkle *tree;
    uint8_t public_key[MSV_KT_KEY_LEN];
    uint8_t *secret_key;     /* 64 bytes, guarded memory */
    struct msv_kt_head head; /* the newest signed head; size 0 before the first */
    atomic_int grown;        /* the store's log may have leaves the tree has not */
    /* device id -> SHA-256 of the handle the log first listed it under (32 bytes, malloc) */
    struct msv_u64map owners;
    uint8_t zero_owner[MSV_KT_HASH_LEN]; /* device id 0, which the map cannot hold */
    int has_zero_owner;
    int trust_store; /* tests only: serve the store's leaves unchecked, as a dishonest server */
    /* the log's rotation entries in log order (docs/transparency.md "Rotating the log key") */
    struct msv_kt_rotation_rec {
        uint64_t index;
        uint8_t leaf[MSV_KT_ROTATION_LEAF_LEN];
        uint8_t new_key[MSV_KT_KEY_LEN];
    } * rotations;
    size_t n_rotations;
    char *data_dir;           /* where log.key is read again after a rotation */
    struct msv_keydir keydir; /* the prefix tree of the log's versions (keydir.h) */
    pthread_t prover;         /* proves the next versions of the handles read at start */
    int has_prover;
    atomic_int stop_prover;
    /* the log's cut-over entry (docs/transparency.md, "Leaves that name no handle"): from it on
     * device sets and tombstones are published as version-4 leaves; -1 before it */
    int64_t cutover;
    uint8_t cutover_leaf[MSV_KT_CUTOVER_LEAF_LEN];
    int cutover_fault; /* tests only: LogRead names the entry after the cut-over as it */
    int v4_leaf_fault; /* tests only: a lookup shows the entry before its version-4 leaf's */
    /* tests only: while this file exists, an account's LogRead waits (10 s at most) once it has
     * read its handles, having made PATH.reached; then it reads the store's log again */
    const char *read_gate;
    /* tests only: the same for a lookup that asks for the asking account's history proofs or
     * versions, once the server has read which of its handles are the account's */
    const char *lookup_gate;
};

/* The store's log grew (a device change committed): the next head reads the new leaves. */
void msv_kt_log_grown(struct msv_kt_log *log);

/*
 * Loads the log key from DATA_DIR/log.key (made, mode 0600, if missing;
 * its public half goes to DATA_DIR/log.pub in hex) and builds the tree. A
 * device id has one key forever (under every handle of its account): a leaf
 * that lists one with another key than the first leaf that listed it is never
 * added to the tree (MSV_ERR_EXISTS; no head covers it), unless trust_store (tests that
 * play a dishonest server). So is a rotation entry not signed by the key in
 * force before it (MSV_ERR_AUTH). After a rotation entry, heads are signed by
 * the key it names: log.key is read again, and no head is signed while it
 * holds another key (MSV_ERR_AUTH). steps_max: the bytes of the key directory's entry steps
 * kept for auditors (keydir.h).
 */
MSV_MUST_CHECK msv_err msv_kt_log_open(struct msv_kt_log *log, const char *data_dir,
                                       struct msv_store *store, int trust_store, uint64_t steps_max,
                                       char *err, size_t err_len);
void msv_kt_log_close(struct msv_kt_log *log);

/*
 * [directory] leaf_version = 4: appends the cut-over entry where the log ends, unless the log
 * has one; from it on every device set and tombstone is published as a version-4 leaf, which
 * names no handle. MSV_OK if the log has cut over; err says why not.
 */
MSV_MUST_CHECK msv_err msv_kt_log_cut_over(struct msv_kt_log *log, struct msv_store *store,
                                           int64_t now_ms, char *err, size_t err_len);

/*
 * Catches the tree up with the store and gives a head signed for its size:
 * a new one (time now_ms) if the log grew or the last is a minute old.
 */
MSV_MUST_CHECK msv_err msv_kt_log_head(struct msv_kt_log *log, struct msv_store *store,
                                       int64_t now_ms, struct msv_kt_head *out);

/* What a lookup or LogRead answer points into; freed after the answer is sent. */
struct msv_kt_answer;
void msv_kt_answer_free(struct msv_kt_answer *a);

/* The versions of one handle an owner's lookup gives at most (docs/transparency.md, "The
 * owner's versions"). */
#define MSV_KT_VERSIONS_MAX 32

/* What the owner's monitor asks of its own account's handles beyond a lookup. */
struct msv_kt_owner_ask {
    const uint8_t *history; /* per handle: 1 for its history proof (NULL: none) */
    /* per handle: the first log index of the versions wanted, 0 for none (NULL: none) */
    const uint64_t *versions_from;
    size_t versions_max;   /* the versions given in all, at most */
    size_t bytes_max;      /* their encoded bytes in all, at most (past the first) */
    size_t versions_given; /* set by msv_kt_lookup */
    /* the versions of one handle an answer holds, at most: MSV_KT_VERSIONS_MAX (0 says it too);
     * more for tests only ([testing] owner_versions_max, a dishonest server) */
    size_t handle_max;
    /* the asking account: its own removal of a handle does not hide from it the versions
     * before it (0: nobody's) */
    uint64_t account_id;
};

/*
 * Where the entries of handle are its present account's: the log index of its newest tombstone
 * (*index; 0 when it has none), what came before being a previous account's or the account's own
 * before it removed the handle. A handle taken from an account and given back moves it.
 */
MSV_MUST_CHECK msv_err msv_kt_owned_from(struct msv_store *store, const char *handle,
                                         uint64_t *index);

/*
 * Answers a lookup of n normalised handles from the log: each result lists
 * the devices of the handle's newest leaf, with that leaf and its inclusion
 * proof (no devices and no proof for a handle the log has never seen); the
 * head, the log key, the consistency proof from known_size and the log's
 * rotation entries with their proofs go into resp. ask (NULL: none; only for
 * the handles of the asker's own account): a result whose history flag is set
 * also gets the handle's history proof, and one with versions_from its
 * versions from that log index on, each with its entry and presence proof (at
 * most MSV_KT_VERSIONS_MAX, within ask's bounds; versions_more when more
 * follow).
 */
MSV_MUST_CHECK msv_err msv_kt_lookup(struct msv_kt_log *log, struct msv_store *store,
                                     int64_t now_ms, const char *const *handles, size_t n,
                                     struct msv_kt_owner_ask *ask, uint64_t known_size,
                                     Msv__Wire__LookupResponse *resp, struct msv_kt_answer **owner);

/*
 * Answers LogRead: leaves start.. (at most 256) with proofs, head, key,
 * consistency. The entries take at most max_bytes encoded, but the first is
 * always given: the reader asks again from where the answer stops. With append_proof, the
 * entries' steps in the key directory too: MSV_ERR_NOT_FOUND when they are no longer kept
 * (*proofs_from: the first entry whose step is). hide (a reader without an account:
 * MSV_KT_HIDE_HANDLES): a device set or tombstone, which names its handle, is given as its leaf
 * hash only; MSV_KT_HIDE_OTHERS (account_id's read): the same for every entry of a handle that
 * is not the account's, or of one of its handles from before the handle's newest tombstone; the
 * two faults are for tests ([testing] log_read_hash_fault). The account's handles and their
 * tombstones are read before the entries and again after: MSV_ERR_AGAIN, nothing answered, if
 * they changed meanwhile (a handle removed and taken by another account between the two: its
 * first entries would have been read as this account's).
 */
enum msv_kt_hide {
    MSV_KT_SHOW_LEAVES,
    MSV_KT_HIDE_HANDLES,
    MSV_KT_HIDE_OTHERS,      /* an account: its own handles' entries whole, the others' hashes */
    MSV_KT_HIDE_FAULT_SHORT, /* a dishonest server: leaf hashes of 31 bytes */
    MSV_KT_HIDE_FAULT_BOTH,  /* a dishonest server: the leaf hash beside the leaf */
    MSV_KT_HIDE_FAULT_V4,    /* a dishonest server: version-4 leaves as hashes too */
};
MSV_MUST_CHECK msv_err msv_kt_read(struct msv_kt_log *log, struct msv_store *store, int64_t now_ms,
                                   const Msv__Wire__LogRead *q, enum msv_kt_hide hide,
                                   uint64_t account_id, size_t max_bytes,
                                   Msv__Wire__LogEntries *resp, struct msv_kt_answer **owner,
                                   uint64_t *proofs_from);

#endif
