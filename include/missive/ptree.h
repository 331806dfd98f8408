/*
 * The key directory's prefix tree: a compressed binary Merkle trie over 32-byte labels, each
 * holding a 32-byte value, that proves the newest version of a handle's entry and shows nobody
 * else which handles it holds.
 *
 * A label is the first 32 bytes of the VRF output of a handle and a version (RFC 9381, suite
 * ECVRF-EDWARDS25519-SHA512-ELL2, include/missive/vrf.h); a value is a commitment (HMAC-SHA256
 * under a random 32-byte opening) to the handle, the version and that version's device set.
 * Inner nodes branch on one bit of the label and commit to their depth and to the bits above
 * it, so that a proof names exactly one place for a label: a label is either proven in the tree
 * with one value, or proven absent, never both. Byte layouts, the hashing and the version
 * scheme: docs/transparency.md, "The prefix tree".
 */
#ifndef MISSIVE_PTREE_H
#define MISSIVE_PTREE_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"
#include "missive/vrf.h"

#define MSV_PT_LABEL_LEN 32
#define MSV_PT_VALUE_LEN 32
#define MSV_PT_HASH_LEN 32
#define MSV_PT_OPENING_LEN 32
/* The most branch points on one path: one per bit (a proof holds at most this many siblings). */
#define MSV_PT_PATH_MAX 256
/* The most entries one epoch may add (an append-only proof holds at most this many). */
#define MSV_PT_BATCH_MAX 1000000
/*
 * The most versions a lookup proves present (one per nonzero digit of a 32-bit version: three
 * digits of four bits, then twenty of one) and the most a history proves absent (fifteen per
 * four-bit digit, one per one-bit digit).
 */
#define MSV_PT_PRESENT_MAX 23
#define MSV_PT_ABSENT_MAX 65
/*
 * The longest version proof an honest directory makes: 37 bytes of head, 66 versions of a VRF
 * proof, a leaf descriptor (at most 65) and at most 256 siblings (33 each, each given once),
 * and a node count for each of at most 2 x 66 - 1 nodes.
 */
#define MSV_PT_VERSION_PROOF_MAX              \
    (37 + (2 * (MSV_PT_ABSENT_MAX + 1) - 1) + \
     (MSV_PT_ABSENT_MAX + 1) * (MSV_VRF_PROOF_LEN + 65 + MSV_PT_PATH_MAX * 33))
/* The VRF suite of the directory's labels. */
#define MSV_PT_VRF_SUITE MSV_VRF_EDWARDS25519_SHA512_ELL2

/* ---- the tree (server side) --------------------------------------------------------------- */

/* One entry to add: a label and its value. */
struct msv_pt_entry {
    uint8_t label[MSV_PT_LABEL_LEN];
    uint8_t value[MSV_PT_VALUE_LEN];
};

/*
 * The whole tree in memory (about 160 bytes per entry). Entries are only ever added: no
 * function changes or removes one. Not thread-safe; the caller locks.
 */
struct msv_ptree;
MSV_MUST_CHECK msv_err msv_ptree_new(struct msv_ptree **out);
void msv_ptree_free(struct msv_ptree *t);
size_t msv_ptree_size(const struct msv_ptree *t);

/* Adds one entry. MSV_ERR_EXISTS if the label is in the tree (the tree is unchanged). */
MSV_MUST_CHECK msv_err msv_ptree_insert(struct msv_ptree *t, const struct msv_pt_entry *e);

/*
 * Adds the n entries of an epoch (in any order; they are added in ascending label order) and
 * makes the append-only proof from the tree as it was to the tree as it is
 * (msv_pt_verify_append). Nothing is added (MSV_ERR_EXISTS) if a label is in the tree or twice
 * in entries; MSV_ERR_TOO_BIG if n exceeds MSV_PT_BATCH_MAX. proof may be NULL (no proof
 * made); else caller frees *proof.
 */
MSV_MUST_CHECK msv_err msv_ptree_insert_batch(struct msv_ptree *t, const struct msv_pt_entry *e,
                                              size_t n, uint8_t **proof, size_t *proof_len);

/* The root: the epoch's commitment to every entry (32 zero bytes for the empty tree). */
MSV_MUST_CHECK msv_err msv_ptree_root(struct msv_ptree *t, uint8_t root[MSV_PT_HASH_LEN]);

/*
 * The proof, against the current root, that label is in the tree with its value, or that it
 * is not (docs/transparency.md, "Path proofs"). *found says which. Caller frees *proof.
 */
MSV_MUST_CHECK msv_err msv_ptree_prove(struct msv_ptree *t, const uint8_t label[MSV_PT_LABEL_LEN],
                                       uint8_t **proof, size_t *proof_len, int *found);

/*
 * Multi-path proofs (docs/transparency.md, "Version proofs"): the presence or absence of up to
 * MSV_PT_MULTI_MAX labels in one proof, each sibling hash given once and none that the other
 * labels' paths give. Caller frees *proof. MSV_ERR_TOO_BIG in a tree where a node has more than
 * 255 nodes above it on the way to one of the leaves and none of the others.
 */
#define MSV_PT_MULTI_MAX (MSV_PT_ABSENT_MAX + 1)
MSV_MUST_CHECK msv_err msv_ptree_prove_multi(struct msv_ptree *t,
                                             const uint8_t (*labels)[MSV_PT_LABEL_LEN], size_t n,
                                             uint8_t **proof, size_t *proof_len);

/* ---- verification (client and auditor side: only roots needed) ---------------------------- */

/*
 * Checks a multi-path proof of exactly len bytes for the n labels against root: found[i] = 1
 * and values[i] its value when it proves labels[i] present, 0 absent. MSV_ERR_PARSE for bytes
 * that are not such a proof, MSV_ERR_AUTH when it does not hold for these labels and root.
 */
MSV_MUST_CHECK msv_err msv_pt_verify_multi(const uint8_t root[MSV_PT_HASH_LEN],
                                           const uint8_t (*labels)[MSV_PT_LABEL_LEN], size_t n,
                                           const uint8_t *in, size_t len, int *found,
                                           uint8_t (*values)[MSV_PT_VALUE_LEN]);

/*
 * Checks a path proof of exactly len bytes for label against root. MSV_OK with *found = 1 and
 * value (may be NULL) set when it proves the label in the tree, *found = 0 when it proves the
 * label absent; MSV_ERR_PARSE for bytes that are not a path proof; MSV_ERR_AUTH when it does
 * not hold for this label and root.
 */
MSV_MUST_CHECK msv_err msv_pt_verify_path(const uint8_t root[MSV_PT_HASH_LEN],
                                          const uint8_t label[MSV_PT_LABEL_LEN],
                                          const uint8_t *proof, size_t len, int *found,
                                          uint8_t value[MSV_PT_VALUE_LEN]);

/* The length of the path proof that starts at in (len bytes at most); 0 if none does. */
size_t msv_pt_path_len(const uint8_t *in, size_t len);

/*
 * Checks an append-only proof: the tree of new_root holds every entry of the tree of old_root,
 * each with the same value, and only new entries besides (*added of them). MSV_ERR_PARSE for
 * bytes that are not such a proof; MSV_ERR_AUTH when it does not hold.
 */
MSV_MUST_CHECK msv_err msv_pt_verify_append(const uint8_t old_root[MSV_PT_HASH_LEN],
                                            const uint8_t new_root[MSV_PT_HASH_LEN],
                                            const uint8_t *proof, size_t len, size_t *added);

/*
 * Entry steps (docs/transparency.md, "Append-only proofs between epochs"): the proof that one
 * log entry only added to the tree, made as the entry goes in. A step is
 *
 *   u8 0: the entry adds nothing (a log key rotation)
 *   u8 1 || label (32) || value (32) || path proof of the label's absence before it
 *
 * and a run of them u32be n || n steps (n at most MSV_PT_STEPS_MAX).
 */
#define MSV_PT_STEPS_MAX 4096
#define MSV_PT_STEP_MAX (1 + 64 + 3 + 64 + MSV_PT_PATH_MAX * 33)

/* Inserts e and gives its step (*step, malloc'd): its absence from the tree before. */
MSV_MUST_CHECK msv_err msv_ptree_insert_step(struct msv_ptree *t, const struct msv_pt_entry *e,
                                             uint8_t **step, size_t *step_len);

/* Why a run of steps does not hold (msv_pt_verify_steps). */
enum msv_pt_step_fault {
    MSV_PT_STEP_OK,
    MSV_PT_STEP_ADDS_NOTHING, /* a step of kind 0 where the entry is a version (kind 1) */
    MSV_PT_STEP_ADDS,         /* a step of kind 1 where the entry adds nothing */
    MSV_PT_STEP_NOT_ABSENT,   /* its label is not proven absent: the path is not one for it */
    MSV_PT_STEP_OTHER_TREE,   /* it starts from another tree than the steps before it made */
};

/*
 * Checks a run of n steps (adds[i]: 1 when entry i is a version, 0 when it adds nothing) from
 * the tree of root (when *have_root; otherwise from the tree the first step that adds names,
 * and *have_root is set), and leaves in root the tree after them. MSV_ERR_PARSE for bytes that
 * are not n steps; MSV_ERR_AUTH when they do not hold: *bad the step, *fault why.
 */
MSV_MUST_CHECK msv_err msv_pt_verify_steps(const uint8_t *proof, size_t len, const uint8_t *adds,
                                           size_t n, int *have_root, uint8_t root[MSV_PT_HASH_LEN],
                                           size_t *bad, enum msv_pt_step_fault *fault);

/*
 * The entries n steps add (checked by msv_pt_verify_steps) against the version-4 leaves a log
 * read gave: want[i] (label then value), when has[i], must be what step i adds. MSV_ERR_PARSE
 * for bytes that are not n steps; MSV_ERR_AUTH (*bad the step) when one adds another entry.
 */
MSV_MUST_CHECK msv_err msv_pt_steps_match(
    const uint8_t *proof, size_t len, size_t n,
    const uint8_t (*want)[MSV_PT_LABEL_LEN + MSV_PT_VALUE_LEN], const uint8_t *has, size_t *bad);

/* Tests only: the tree again, with the entry of label given value (NULL: without it). */
MSV_MUST_CHECK msv_err msv_ptree_test_rewrite(struct msv_ptree **t,
                                              const uint8_t label[MSV_PT_LABEL_LEN],
                                              const uint8_t *value);

/* ---- labels, values and versions ----------------------------------------------------------- */

/* The VRF input of (handle, version): u8 handle length || handle || u32be version. */
MSV_MUST_CHECK msv_err msv_pt_vrf_input(const char *handle, uint32_t version, uint8_t *out,
                                        size_t cap, size_t *len);

/* The label of a VRF output: its first 32 bytes. */
void msv_pt_label(const uint8_t beta[MSV_VRF_OUTPUT_LEN], uint8_t label[MSV_PT_LABEL_LEN]);

/*
 * The value committing to (handle, version, data): HMAC-SHA256 keyed with opening over
 * "MSV-pt-commit-v1" || u8 handle length || handle || u32be version || data. data is the
 * version's device set (a transparency log leaf); may be NULL when data_len is 0.
 */
MSV_MUST_CHECK msv_err msv_pt_commit(const uint8_t opening[MSV_PT_OPENING_LEN], const char *handle,
                                     uint32_t version, const uint8_t *data, size_t data_len,
                                     uint8_t value[MSV_PT_VALUE_LEN]);

/*
 * Versions are read as 23 digits, lowest first d_0 ... d_22: three of four bits (bits 0-3, 4-7,
 * 8-11), then one per bit from bit 12 up. The versions a lookup of version v proves present: v,
 * then v with its lowest nonzero digit cleared, one digit at a time, down to its highest digit
 * alone (none for v = 0; at most MSV_PT_PRESENT_MAX). The versions the owner of version v
 * proves absent: for every digit position k and every digit j above d_k, v with digits k and
 * below cleared plus j in digit k, ascending (none above 2^32 - 1, which is no version; at most
 * MSV_PT_ABSENT_MAX). Any version w > v presented by a lookup then proves present one
 * version the owner proves absent (docs/transparency.md, "Versions"). Each returns the count.
 */
size_t msv_pt_versions_present(uint32_t v, uint32_t out[MSV_PT_PRESENT_MAX]);
size_t msv_pt_versions_absent(uint32_t v, uint32_t out[MSV_PT_ABSENT_MAX]);

enum msv_pt_proof_kind {
    MSV_PT_LOOKUP = 1,   /* present: msv_pt_versions_present(v); absent: v + 1 */
    MSV_PT_HISTORY = 2,  /* present: v; absent: msv_pt_versions_absent(v) */
    MSV_PT_PRESENCE = 3, /* present: v alone (v > 0): one version shown to its owner */
};

/*
 * Makes a version proof for handle at version v (the handle's newest; 0 for a handle never
 * added) from the tree and the VRF secret key: the VRF proofs and path proofs of the versions
 * kind names, and, when v > 0, the opening of version v. Caller frees *proof.
 */
MSV_MUST_CHECK msv_err msv_ptree_prove_versions(struct msv_ptree *t, enum msv_pt_proof_kind kind,
                                                const uint8_t vrf_sk[MSV_VRF_SECRET_KEY_LEN],
                                                const char *handle, uint32_t v,
                                                const uint8_t opening[MSV_PT_OPENING_LEN],
                                                uint8_t **proof, size_t *proof_len);

/* Gives the VRF proof of (handle, version) under the directory's key and the label it proves
 * (e.g. from a cache). */
typedef msv_err (*msv_pt_vrf_prover)(void *ctx, const char *handle, uint32_t version,
                                     uint8_t pi[MSV_VRF_PROOF_LEN],
                                     uint8_t label[MSV_PT_LABEL_LEN]);

/* msv_ptree_prove_versions with the VRF proofs from prove(ctx, ...). */
MSV_MUST_CHECK msv_err msv_ptree_prove_versions_by(struct msv_ptree *t, enum msv_pt_proof_kind kind,
                                                   msv_pt_vrf_prover prove, void *ctx,
                                                   const char *handle, uint32_t v,
                                                   const uint8_t opening[MSV_PT_OPENING_LEN],
                                                   uint8_t **proof, size_t *proof_len);

/*
 * Checks a version proof against root and the directory's VRF public key: that version
 * *version of handle is in the tree committing to data (data may be NULL when data_len is 0;
 * not checked when *version is 0), that the other versions kind names are present or absent as
 * it says, each label the VRF output of its version. MSV_OK and *version (0: the handle is not
 * in the tree); MSV_ERR_UNSUPPORTED for a proof of another format (first byte kind + 16 f, f
 * not 3: another release's, never accepted); MSV_ERR_PARSE for bytes that are not a version proof;
 * MSV_ERR_AUTH when it does not hold.
 */
MSV_MUST_CHECK msv_err msv_pt_verify_versions(const uint8_t root[MSV_PT_HASH_LEN],
                                              const uint8_t vrf_pk[MSV_VRF_PUBLIC_KEY_LEN],
                                              enum msv_pt_proof_kind kind, const char *handle,
                                              const uint8_t *data, size_t data_len,
                                              const uint8_t *proof, size_t len, uint32_t *version);

/* ---- epochs in the signed log ---------------------------------------------------------------- */

#define MSV_PT_SIG_LEN 64

/*
 * The log key's signature of the prefix tree's root at the log size of a tree head:
 * "MSV-kt-epoch-v1" || u64be size || root, Ed25519 (secret_key: libsodium's 64 bytes). verify:
 * MSV_OK if public_key signed it, MSV_ERR_AUTH if not.
 */
MSV_MUST_CHECK msv_err msv_pt_epoch_sign(const uint8_t secret_key[64], uint64_t size,
                                         const uint8_t root[MSV_PT_HASH_LEN],
                                         uint8_t signature[MSV_PT_SIG_LEN]);
MSV_MUST_CHECK msv_err msv_pt_epoch_verify(const uint8_t public_key[32], uint64_t size,
                                           const uint8_t root[MSV_PT_HASH_LEN],
                                           const uint8_t signature[MSV_PT_SIG_LEN]);

#endif
