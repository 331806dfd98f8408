/*
 * missived's key directory: the prefix tree (include/missive/ptree.h) of every handle's
 * versions, kept beside the transparency log and built from it: the n-th device-set entry of a
 * handle in the log is its version n, under the label the directory's VRF key gives
 * (handle, n), committing to that entry's bytes. Each signed tree head carries the tree's root
 * at the head's size, signed by the log key, and each lookup result a version proof
 * (docs/transparency.md, "The prefix tree"). Called with the log's lock held.
 */
#ifndef MSV_SERVER_KEYDIR_H
#define MSV_SERVER_KEYDIR_H

#include <stdatomic.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "missive/ptree.h"
#include "server/u64map.h"
#include "store/store.h"

struct msv_keydir {
    struct msv_ptree *tree;
    uint8_t *secret; /* guarded: the VRF secret key (32), then the openings' key (32) */
    uint8_t vrf_key[MSV_VRF_PUBLIC_KEY_LEN];
    uint32_t *versions; /* by log index: the entry's version, 0 for a rotation entry */
    size_t n_versions, cap_versions;
    struct msv_u64map counts; /* handle (hashed, never 0) -> its number of versions */
    /* (handle, version) (hashed, never 0) -> its VRF proof and label (80 + 32, malloc): those a
     * lookup of each handle's newest version gives, made when the entry is appended (a proof costs
     * a third of a millisecond), so a lookup only copies them; bounded (keydir.c) */
    struct msv_u64map proofs;
    int prove_next;       /* set once the log read at start is in: appends also prove version + 1 */
    uint64_t proofs_made; /* VRF proofs made */
    /* the handles read at start whose newest version + 1 is not proven yet (malloc'd names),
     * proven by msv_keydir_prove_pending on a thread of its own while missived serves */
    char **pending;
    size_t n_pending, cap_pending;
    /* metrics, read without the log's lock: proofs kept, proofs made by lookups */
    _Atomic uint64_t proofs_kept, lookup_misses;
    uint64_t epoch_size; /* the log size the signed root below is for */
    uint8_t epoch_root[MSV_PT_HASH_LEN], epoch_signature[MSV_PT_SIG_LEN];
    /* by log index from steps_from on: the entry's step (msv_ptree_insert_step; NULL for a
     * rotation entry, which adds nothing), the append-only proof auditors read; the oldest are
     * dropped past steps_max bytes */
    uint8_t **steps;
    uint32_t *step_lens;
    size_t steps_from;
    uint64_t steps_bytes, steps_max;  /* steps_max: [directory] append_proof_kib */
    _Atomic uint64_t steps_kept_from; /* steps_from, for /metrics */
    /* the labels the store keeps (kt_labels), by ascending log index, read at start: used
     * instead of computing VRF outputs; the first one used is checked against the VRF key, and
     * if it does not match none is used (stored_bad) */
    struct msv_kt_rec *stored;
    size_t n_stored, stored_at;
    int stored_checked, stored_bad;
    /* labels computed that the store does not keep yet (leaf: the label), written by the log
     * after each sync (msv_keydir_take_fresh) */
    struct msv_kt_rec *fresh;
    size_t n_fresh, cap_fresh;
    uint64_t labels_computed; /* VRF outputs computed for entries read from the log */
    char skip_handle[256];    /* tests only: this handle's skip_version is numbered 2 higher */
    uint64_t v4_mismatch;     /* tests only: this log entry's tree value is not its leaf's */
    uint32_t skip_version;
};

/*
 * Loads the VRF key from DATA_DIR/vrf.key (32 bytes, made with mode 0600 if missing; the
 * public key goes to DATA_DIR/vrf.pub in hex). err says what failed.
 */
MSV_MUST_CHECK msv_err msv_keydir_open(struct msv_keydir *kd, const char *data_dir, char *err,
                                       size_t err_len);
void msv_keydir_close(struct msv_keydir *kd);

/*
 * Adds log entry rec->index (the next one: index == the entries added so far). v4: the entry is
 * after the log's cut-over: its tree entry is its published leaf's (rec->pub), or, when it has
 * none yet, made from its data and published in rec->pub (malloc'd; the caller keeps it in the
 * store). MSV_ERR_INVALID for a published leaf that is not a version-4 leaf of its data's time.
 */
MSV_MUST_CHECK msv_err msv_keydir_add(struct msv_keydir *kd, struct msv_kt_rec *rec, int v4);

/*
 * rec->pub (malloc'd): the version-4 leaf of log entry rec->index, added before, made again
 * from its data (nothing for an entry that is no version).
 */
MSV_MUST_CHECK msv_err msv_keydir_publish(struct msv_keydir *kd, struct msv_kt_rec *rec);

/*
 * What a lookup shows beside the version-4 leaf of log entry index, handle's: its version, the
 * opening of its commitment and the VRF proof of its label. MSV_ERR_INVALID for an entry that
 * is no version.
 */
MSV_MUST_CHECK msv_err msv_keydir_open_entry(struct msv_keydir *kd, const char *handle,
                                             uint64_t index, uint32_t *version,
                                             uint8_t opening[MSV_PT_OPENING_LEN],
                                             uint8_t pi[MSV_VRF_PROOF_LEN]);

/*
 * Makes, one at a time, the proofs of version + 1 of the handles read at start (kd->pending),
 * taking lock (the log's) only to pick a handle and keep its proof, until none is left or
 * *stop is set. Run on a thread of its own by missived.
 */
void msv_keydir_prove_pending(struct msv_keydir *kd, pthread_mutex_t *lock, const atomic_int *stop);

/*
 * The append-only proof of log entries start .. start + n - 1: u32be n and their steps
 * (include/missive/ptree.h; caller frees *out; n == 0: four zero bytes, whatever start).
 * MSV_ERR_NOT_FOUND when the steps of entries before kd->steps_from are asked for (no longer
 * kept), MSV_ERR_INVALID past the log.
 */
MSV_MUST_CHECK msv_err msv_keydir_steps(const struct msv_keydir *kd, uint64_t start, size_t n,
                                        uint8_t **out, size_t *len);

/* The bytes entry index's step takes in msv_keydir_steps' proof (0 if it is not kept). */
size_t msv_keydir_step_len(const struct msv_keydir *kd, uint64_t index);

/*
 * Tests only: [testing] keydir_rewrite, "change INDEX" or "remove INDEX": the tree's entry of
 * log entry INDEX gets another value, or leaves the tree, behind the log's back.
 * MSV_ERR_INVALID for an option of another shape or an entry that adds nothing or is no
 * longer kept.
 */
MSV_MUST_CHECK msv_err msv_keydir_test_rewrite(struct msv_keydir *kd, const char *rewrite);

/*
 * The label of version of handle (an msv_kt_labeler for the store: ctx is the key directory).
 * Reads only the VRF key: safe on any thread while kd is open.
 */
MSV_MUST_CHECK msv_err msv_keydir_label(void *ctx, const char *handle, uint32_t version,
                                        uint8_t label[MSV_PT_LABEL_LEN]);

/*
 * Hands the labels computed since the last call, which the store does not keep yet, to the
 * caller (*out, *n; free with msv_kt_recs_free).
 */
void msv_keydir_take_fresh(struct msv_keydir *kd, struct msv_kt_rec **out, size_t *n);

/* Signs the tree's root for a head of size entries with the log's secret key. */
MSV_MUST_CHECK msv_err msv_keydir_sign(struct msv_keydir *kd, uint64_t size,
                                       const uint8_t log_secret_key[64]);

/*
 * The version proof of kind (lookup, or history for the handle's owner) of handle whose newest
 * entry is log entry index (index < 0: the handle has none). Caller frees *proof.
 */
MSV_MUST_CHECK msv_err msv_keydir_prove(struct msv_keydir *kd, enum msv_pt_proof_kind kind,
                                        const char *handle, int64_t index, uint8_t **proof,
                                        size_t *len);

/*
 * Tests only: makes the directory dishonest as [testing] keydir_forge and keydir_skip say
 * ("HANDLE VERSION"; "" for none): forge puts that version of the handle in the tree, though no
 * log entry is it; skip numbers the handle's entry that is that version 2 higher, skipping two
 * (and the later ones follow it). MSV_ERR_INVALID for an option of another shape.
 */
MSV_MUST_CHECK msv_err msv_keydir_test_dishonest(struct msv_keydir *kd, const char *forge,
                                                 const char *skip);

#endif
