/*
 * Key transparency: the directory's append-only log of device sets.
 *
 * Every change to a handle's device set appends a leaf holding the whole new
 * set; the leaves form a Merkle tree hashed as RFC 6962/9162 do (leaf:
 * SHA-256(0x00 || leaf), node: SHA-256(0x01 || left || right)). The server
 * signs tree heads with an Ed25519 log key; clients check that what the
 * directory tells them is in the log (inclusion proofs) and that the log only
 * grows (consistency proofs). See docs/transparency.md for the byte layouts.
 */
#ifndef MISSIVE_KT_H
#define MISSIVE_KT_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

#define MSV_KT_HASH_LEN 32
#define MSV_KT_KEY_LEN 32 /* Ed25519 public key */
#define MSV_KT_SIG_LEN 64
/* Longest proof for a tree of up to 2^63 leaves (consistency proofs need the most). */
#define MSV_KT_PROOF_MAX 128
#define MSV_KT_DEVICES_MAX 64
/*
 * The records (listed devices and chain records) a set may hold after an approval: one more
 * than a set's chain records, so that removing devices never needs more chain records than a
 * set carries (what a removal leaves needs only records of the set before it).
 */
#define MSV_KT_APPROVED_SET_MAX (MSV_KT_DEVICES_MAX + 1)
/* The most leaves one LogRead answers with. */
#define MSV_KT_READ_MAX 256

/* ---- Merkle tree -------------------------------------------------------------------- */

void msv_kt_leaf_hash(const uint8_t *leaf, size_t len, uint8_t out[MSV_KT_HASH_LEN]);

/*
 * The log's tree: leaf hashes and every complete subtree above them, so the
 * root and the proofs of any earlier size cost O(log^2 n) hashes. Not
 * thread-safe, reading included (it caches the subtrees that end at the
 * current size); the caller locks.
 */
struct msv_merkle;
MSV_MUST_CHECK msv_err msv_merkle_new(struct msv_merkle **out);
void msv_merkle_free(struct msv_merkle *t);
MSV_MUST_CHECK msv_err msv_merkle_append(struct msv_merkle *t,
                                         const uint8_t leaf_hash[MSV_KT_HASH_LEN]);
uint64_t msv_merkle_size(const struct msv_merkle *t);
/* The hash of leaf index (index < size). */
MSV_MUST_CHECK msv_err msv_merkle_leaf(const struct msv_merkle *t, uint64_t index,
                                       uint8_t out[MSV_KT_HASH_LEN]);
/* The root of the first size leaves (size <= msv_merkle_size; 0 gives SHA-256 of nothing). */
MSV_MUST_CHECK msv_err msv_merkle_root(const struct msv_merkle *t, uint64_t size,
                                       uint8_t out[MSV_KT_HASH_LEN]);
/* The audit path of leaf index in the tree of size leaves; *n hashes, leaf upwards. */
MSV_MUST_CHECK msv_err msv_merkle_inclusion(const struct msv_merkle *t, uint64_t index,
                                            uint64_t size, uint8_t proof[][MSV_KT_HASH_LEN],
                                            size_t *n);
/* The proof that the tree of old_size leaves is a prefix of the tree of size leaves. */
MSV_MUST_CHECK msv_err msv_merkle_consistency(const struct msv_merkle *t, uint64_t old_size,
                                              uint64_t size, uint8_t proof[][MSV_KT_HASH_LEN],
                                              size_t *n);

/* RFC 9162 verification: MSV_OK, or MSV_ERR_AUTH when the proof does not hold. */
MSV_MUST_CHECK msv_err msv_merkle_verify_inclusion(const uint8_t leaf_hash[MSV_KT_HASH_LEN],
                                                   uint64_t index, uint64_t size,
                                                   const uint8_t proof[][MSV_KT_HASH_LEN], size_t n,
                                                   const uint8_t root[MSV_KT_HASH_LEN]);
MSV_MUST_CHECK msv_err msv_merkle_verify_consistency(uint64_t old_size, uint64_t size,
                                                     const uint8_t old_root[MSV_KT_HASH_LEN],
                                                     const uint8_t root[MSV_KT_HASH_LEN],
                                                     const uint8_t proof[][MSV_KT_HASH_LEN],
                                                     size_t n);

/* ---- leaves and tree heads -------------------------------------------------------------- */

/*
 * A device's approval record in a signed device list (a version-6 leaf, docs/transparency.md
 * "Signed device lists"): unsigned (approved before approvals were kept), the account's root
 * (self-signed at registration), approved by another device of the set or its chain records,
 * or a recovery by the account's password (self-signed).
 */
enum msv_kt_approval_kind {
    MSV_KT_UNSIGNED = 0,
    MSV_KT_ROOT = 1,
    MSV_KT_APPROVED = 2,
    MSV_KT_RECOVERY = 3,
};

struct msv_kt_approval {
    uint8_t kind;       /* enum msv_kt_approval_kind */
    uint64_t approver;  /* MSV_KT_APPROVED only: the approving device's id */
    const uint8_t *sig; /* borrowed (from the leaf bytes, when parsed); none when unsigned */
    size_t sig_len;     /* 1 to MSV_KT_APPROVAL_SIG_MAX, 0 when unsigned */
};
#define MSV_KT_APPROVAL_SIG_MAX 72

struct msv_kt_device {
    uint64_t device_id;
    uint32_t suite;
    const uint8_t *identity; /* borrowed (from the leaf bytes, when parsed) */
    size_t identity_len;
    struct msv_kt_approval approval; /* signed lists only */
};

/*
 * A handle's device set as the log holds it (devices in ascending id order); deleted: a
 * tombstone, the handle's account was deleted (no devices; docs/transparency.md).
 */
struct msv_kt_entry {
    int deleted;
    int64_t time_ms;
    char handle[256];
    size_t n_devices;
    struct msv_kt_device devices[MSV_KT_DEVICES_MAX];
    /* a signed device list (version 6): each device's approval, and the chain records of
     * removed devices that approved a listed one (ascending ids, none a listed device's) */
    int signed_list;
    size_t n_chain;
    struct msv_kt_device chain[MSV_KT_DEVICES_MAX];
};

/* Encodes e (devices sorted by id; ids must be distinct). Caller frees *out. */
MSV_MUST_CHECK msv_err msv_kt_leaf_encode(const struct msv_kt_entry *e, uint8_t **out, size_t *len);
/* Parses a leaf; the device identities point into leaf. MSV_ERR_PARSE for bad bytes. */
MSV_MUST_CHECK msv_err msv_kt_leaf_parse(const uint8_t *leaf, size_t len, struct msv_kt_entry *e);

/*
 * What an approval signs (63 bytes): "MSV-devlist-v1" || u8 kind || u64be device id ||
 * identity hash (32) || u64be approver id; a root or recovery signs device id and approver 0.
 */
#define MSV_KT_APPROVAL_MSG_LEN 63
void msv_kt_approval_message(uint8_t kind, uint64_t device_id, const uint8_t hash[32],
                             uint64_t approver, uint8_t out[MSV_KT_APPROVAL_MSG_LEN]);
/*
 * Signs an approval with signer's key: kind 2, of device device_id whose identity hash is hash,
 * approver the signer's device id; kinds 1 and 3, of the signer itself (device_id, hash and
 * approver ignored: its own hash, ids 0). sig holds MSV_KT_APPROVAL_SIG_MAX bytes.
 */
struct msv_identity;
MSV_MUST_CHECK msv_err msv_kt_approval_sign(const struct msv_identity *signer, uint8_t kind,
                                            uint64_t device_id, const uint8_t hash[32],
                                            uint64_t approver, uint8_t sig[MSV_KT_APPROVAL_SIG_MAX],
                                            size_t *sig_len);
/*
 * Checks d's approval signature: by approver's key (kind 2; approver's id must be d's approver)
 * or by d's own (kinds 1 and 3; approver NULL). MSV_OK, MSV_ERR_AUTH for a signature that does
 * not hold, MSV_ERR_INVALID for an unsigned record.
 */
MSV_MUST_CHECK msv_err msv_kt_approval_verify(const struct msv_kt_device *d,
                                              const struct msv_kt_device *approver);

/* What the chain of a listed device is (msv_kt_devlist_check). */
enum msv_kt_chain {
    MSV_KT_CHAIN_SIGNED = 0,     /* ends at the set's root (or recovery) record, every step valid */
    MSV_KT_CHAIN_UNSIGNED = 1,   /* ends at an unsigned record, every step valid */
    MSV_KT_CHAIN_UNAPPROVED = 2, /* a signature fails, an approver is missing, or a cycle */
};

struct msv_kt_devlist {
    uint8_t chain[MSV_KT_DEVICES_MAX]; /* enum msv_kt_chain, per listed device */
    uint64_t end[MSV_KT_DEVICES_MAX];  /* the id of the record its chain ends at (0: none) */
    size_t n_signed, n_unsigned, n_unapproved;
    int has_root;      /* the signed devices' one root record */
    uint8_t root_kind; /* MSV_KT_ROOT or MSV_KT_RECOVERY */
    uint64_t root_id;
    uint8_t root_hash[32]; /* its identity hash */
    size_t n_verified;     /* signatures checked: at most one per record */
};

/*
 * Checks the approval chains of a device set (docs/transparency.md "Signed device lists",
 * "Checking a version-6 set"): a version-1 leaf's devices are all unsigned. MSV_OK with *out
 * filled; MSV_ERR_AUTH if the set as a whole does not check out (a chain record no listed
 * device's chain passes through, two roots) or is a tombstone.
 */
MSV_MUST_CHECK msv_err msv_kt_devlist_check(const struct msv_kt_entry *e,
                                            struct msv_kt_devlist *out);

/*
 * Completes a device set as a directory builds it (its devices, ascending, each with its
 * approval; kind 0 for none): the chain records its devices' chains name, taken from records
 * (the account's kept approvals of devices not listed, any order), in id order, and
 * e->signed_list when the set holds a signed record. keep[i] is set for each of records used.
 * MSV_ERR_TOO_BIG over MSV_KT_DEVICES_MAX chain records; e's records borrow from records.
 */
MSV_MUST_CHECK msv_err msv_kt_devlist_complete(struct msv_kt_entry *e,
                                               const struct msv_kt_device *records, size_t n,
                                               uint8_t *keep);

struct msv_kt_head {
    uint64_t size;
    int64_t time_ms;
    uint8_t root[MSV_KT_HASH_LEN];
    uint8_t signature[MSV_KT_SIG_LEN];
};

/* Signs head (size, time and root set) with the log's Ed25519 secret key (libsodium's 64 bytes). */
MSV_MUST_CHECK msv_err msv_kt_head_sign(struct msv_kt_head *head, const uint8_t secret_key[64]);
/* MSV_OK if the head's signature is the log key's; MSV_ERR_AUTH if not. */
MSV_MUST_CHECK msv_err msv_kt_head_verify(const struct msv_kt_head *head,
                                          const uint8_t log_key[MSV_KT_KEY_LEN]);

/*
 * A log key rotation: the old log key signs
 * "MSV-kt-key-v1" || old key (32) || new key (32) || u64be size, the log size
 * from which heads are signed by the new key (docs/transparency.md, "Rotating
 * the log key"). sign: the old secret key (libsodium's 64 bytes); verify:
 * MSV_OK if old_key signed it, MSV_ERR_AUTH if not.
 */
MSV_MUST_CHECK msv_err msv_kt_rotation_sign(const uint8_t old_secret_key[64],
                                            const uint8_t new_key[MSV_KT_KEY_LEN], uint64_t size,
                                            uint8_t signature[MSV_KT_SIG_LEN]);
MSV_MUST_CHECK msv_err msv_kt_rotation_verify(const uint8_t old_key[MSV_KT_KEY_LEN],
                                              const uint8_t new_key[MSV_KT_KEY_LEN], uint64_t size,
                                              const uint8_t signature[MSV_KT_SIG_LEN]);

/*
 * A rotation entry of the log (leaf version 2, docs/transparency.md "Rotating
 * the log key"): 0x02 || u64be time || old key || new key || u64be size ||
 * signature, the statement above signed by the old key. Its leaf sits at
 * index size - 1: heads of size or more leaves are the new key's.
 */
struct msv_kt_rotation {
    int64_t time_ms;
    uint8_t old_key[MSV_KT_KEY_LEN];
    uint8_t new_key[MSV_KT_KEY_LEN];
    uint64_t size;
    uint8_t signature[MSV_KT_SIG_LEN];
};

#define MSV_KT_ROTATION_LEAF_LEN 145

/* Encodes r (not checked: see msv_kt_rotation_follow). Caller frees *out. */
MSV_MUST_CHECK msv_err msv_kt_rotation_leaf_encode(const struct msv_kt_rotation *r, uint8_t **out,
                                                   size_t *len);
/* Parses a rotation entry; MSV_ERR_PARSE for any other bytes (device set leaves included). */
MSV_MUST_CHECK msv_err msv_kt_rotation_leaf_parse(const uint8_t *leaf, size_t len,
                                                  struct msv_kt_rotation *r);

/* One rotation entry as an answer carries it: the leaf, its index, its inclusion path. */
struct msv_kt_rotation_proof {
    const uint8_t *leaf; /* borrowed */
    size_t leaf_len;
    uint64_t index;
    const uint8_t (*path)[MSV_KT_HASH_LEN]; /* borrowed, n_path hashes */
    size_t n_path;
};

/*
 * Whether head may be trusted by a device that pinned the log key pinned,
 * following the rotation entries chain[0..n) in log order: each is signed by
 * the key in force (pinned, then each new key in turn), sits at index size - 1
 * (indexes ascending) and is proven in head; head is signed by the last new
 * key (pinned when n is 0). MSV_OK and *key_out = the key that signed head;
 * MSV_ERR_AUTH otherwise (a key not signed by the one before, an entry not in
 * the log, a head under an earlier key), key_out untouched.
 */
MSV_MUST_CHECK msv_err msv_kt_rotation_follow(const uint8_t pinned[MSV_KT_KEY_LEN],
                                              const struct msv_kt_rotation_proof *chain, size_t n,
                                              const struct msv_kt_head *head,
                                              uint8_t key_out[MSV_KT_KEY_LEN]);

/* ---- leaves that name no handle (docs/transparency.md, "Leaves that name no handle") ------- */

/*
 * A version-4 leaf: u8 4 || u64be time || label (32) || value (32), the key directory's entry
 * of a handle's version (its VRF label and its commitment to the version's device set or
 * tombstone, the "data": a version-1 or version-3 leaf) and nothing else.
 */
#define MSV_KT_V4_LEAF_LEN 73
struct msv_kt_v4_leaf {
    int64_t time_ms;
    uint8_t label[32];
    uint8_t value[32];
};
void msv_kt_v4_leaf_encode(const struct msv_kt_v4_leaf *l, uint8_t out[MSV_KT_V4_LEAF_LEN]);
/* MSV_ERR_PARSE for any other bytes. */
MSV_MUST_CHECK msv_err msv_kt_v4_leaf_parse(const uint8_t *leaf, size_t len,
                                            struct msv_kt_v4_leaf *l);

/*
 * The cut-over entry: u8 5 || u64be time || u8 4, from which entry on the log's device sets and
 * tombstones are version-4 leaves. It names no one and adds nothing to the key directory.
 */
#define MSV_KT_CUTOVER_LEAF_LEN 10
void msv_kt_cutover_leaf_encode(int64_t time_ms, uint8_t out[MSV_KT_CUTOVER_LEAF_LEN]);
/* MSV_OK if leaf is a cut-over entry; MSV_ERR_PARSE if not. */
MSV_MUST_CHECK msv_err msv_kt_cutover_leaf_parse(const uint8_t *leaf, size_t len);

/*
 * Opens a version-4 leaf: data (a device set or tombstone, version 1 or 3) is version `version`
 * of its handle, as the leaf says: pi is the VRF proof, under vrf_pk, of (handle, version)
 * whose label is the leaf's, the value is the commitment to data under opening, and the times
 * agree. MSV_OK and *e parsed from data (identities point into data); MSV_ERR_AUTH otherwise.
 */
MSV_MUST_CHECK msv_err msv_kt_v4_open(const uint8_t vrf_pk[32], const uint8_t *leaf, size_t len,
                                      const uint8_t *data, size_t data_len, uint32_t version,
                                      const uint8_t opening[32], const uint8_t pi[80],
                                      struct msv_kt_entry *e);

#endif
