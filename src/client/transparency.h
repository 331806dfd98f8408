/*
 * The client's side of key transparency: every directory answer is checked
 * against the log before its devices are used (docs/transparency.md).
 */
#ifndef MSV_CLIENT_TRANSPARENCY_H
#define MSV_CLIENT_TRANSPARENCY_H

#include <stddef.h>
#include <stdint.h>

#include "client/conn.h"
#include "missive/kt.h"
#include "missive/payload.h"
#include "store/client_db.h"
#include "wire/frame.h"

/* A tree head as 112 bytes (u64be size, u64be time, root, signature): settings, payloads. */
void msv_kt_head_encode(const struct msv_kt_head *h, uint8_t out[MSV_LOG_HEAD_LEN]);
void msv_kt_head_decode(const uint8_t in[MSV_LOG_HEAD_LEN], struct msv_kt_head *h);

/* The newest tree head this device accepted; MSV_ERR_NOT_FOUND if none yet. */
/*
 * Whether head, signed by head_key, follows from the pinned log key along an
 * answer's rotation entries (LookupResponse/LogEntries.rotations, log order):
 * the chain from the entry whose old key is pinned to the last, at most 16,
 * checked by msv_kt_rotation_follow, must end at head_key. MSV_OK, or
 * MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_kt_follow_rotations(const uint8_t pinned[MSV_KT_KEY_LEN],
                                               Msv__Wire__LogProof *const *rotations,
                                               size_t n_rotations, const struct msv_kt_head *head,
                                               const uint8_t head_key[MSV_KT_KEY_LEN]);
MSV_MUST_CHECK msv_err msv_kt_known_head(struct msv_client_db *db, struct msv_kt_head *h);
/* A head older than this is refused: the server signs a fresh one at least every minute. */
#define MSV_KT_HEAD_MAX_AGE_MS (24LL * 3600 * 1000)
/* A head dated later than this past this device's clock is refused: it would seem fresh for
 * longer than it is (clocks differ by a little, not by more). */
#define MSV_KT_HEAD_MAX_SKEW_MS (10LL * 60 * 1000)

/* The size of the newest tree head this device accepted (0: none yet). */
uint64_t msv_kt_known_size(struct msv_client_db *db);

/* A handle's device set learnt longer ago than this is looked up again before use. */
#define MSV_KT_RELOOKUP_MS (24LL * 3600 * 1000)

/* 1 if handle's devices were never looked up through the log, or not in the last day. */
int msv_kt_lookup_is_due(struct msv_client_db *db, const char *handle, int64_t now_ms);

/*
 * The device set or tombstone a lookup's log proof stands for: a version-4 leaf's data
 * (LogProof.data, which msv_kt_check_lookup opened against the leaf), else the leaf itself.
 */
ProtobufCBinaryData msv_kt_proof_entry(const Msv__Wire__LogProof *p);

/*
 * Checks a lookup answer: the head is signed by the log key this device
 * pinned (the first one it saw), at most a day old and at most ten minutes
 * in the future, it extends the head accepted before
 * (consistency proof; never smaller, never a different root for the same
 * size), and every result that names devices comes with its log leaf, whose
 * devices are exactly those, proven in the head's tree; no handle's entry is
 * older than the newest one accepted for it before (a removed device would
 * come back), and no device id is listed under a handle other than the one
 * the log gave it to first. On success the head, each handle's entry index
 * and each device id's handle are remembered. MSV_ERR_AUTH (why says what failed) if anything does
 * not hold; nothing is remembered then.
 */
MSV_MUST_CHECK msv_err msv_kt_check_lookup(struct msv_client_db *db,
                                           const Msv__Wire__LookupResponse *r, char *why,
                                           size_t why_len);
/*
 * msv_kt_check_lookup, and when a check of one result alone fails (its proofs, its entry older
 * than the one accepted, a device's key other than the log gave it), *bad its index; SIZE_MAX
 * when the answer as a whole fails (its head, its key directory's root, a device shown with two
 * keys in it) or for another error. Nothing is remembered unless every result holds.
 */
MSV_MUST_CHECK msv_err msv_kt_check_lookup_at(struct msv_client_db *db,
                                              const Msv__Wire__LookupResponse *r, size_t *bad,
                                              char *why, size_t why_len);
/* The next send to handle looks it up again (its pin's time set back); the pin is kept. */
MSV_MUST_CHECK msv_err msv_kt_lookup_make_due(struct msv_client_db *db, const char *handle);

/*
 * *differs 1 if this device pinned another key for device_id than identity (kt_device_key:ID,
 * written for each listed device an answer showed): a device id has one key forever.
 */
MSV_MUST_CHECK msv_err msv_kt_device_key_differs(struct msv_client_db *db, uint64_t device_id,
                                                 const uint8_t *identity, size_t identity_len,
                                                 int *differs);

/*
 * A handle's account deleted and registered again (docs/transparency.md, "A new account"):
 * msv_kt_check_lookup marks a handle this device knew whose answer shows its tombstone at or
 * after the entry it knew, then a later entry; msv_kt_renewed_index says so (1), with the log
 * index of that entry (*index), until msv_kt_renewed_told, once the user was told.
 */
int msv_kt_renewed_index(struct msv_client_db *db, const char *handle, uint64_t *index);
MSV_MUST_CHECK msv_err msv_kt_renewed_told(struct msv_client_db *db, const char *handle);
/*
 * Checks the key directory's part of a lookup answer whose head passed the log's checks, before
 * any of its leaves is opened with its VRF key: the prefix tree's root is signed by the answer's
 * log key for head's size and the VRF key is the one this device pinned (or *pin is set: none
 * pinned yet); *keydir is set if the answer has a key directory. An answer without one is
 * accepted only while none was ever seen (*pin and *keydir 0). MSV_ERR_AUTH, why saying what
 * failed; nothing is remembered (msv_kt_pin_vrf_key does).
 */
MSV_MUST_CHECK msv_err msv_kt_check_epoch(struct msv_client_db *db,
                                          const Msv__Wire__LookupResponse *r,
                                          const struct msv_kt_head *head, int *pin, int *keydir,
                                          char *why, size_t why_len);
/*
 * Every result's version proof, against the answer's epoch root and VRF key (checked by
 * msv_kt_check_epoch), shows its devices' leaf as the handle's newest version (version 0 for a
 * handle without devices). MSV_ERR_AUTH, why saying what failed.
 */
MSV_MUST_CHECK msv_err msv_kt_check_versions(const Msv__Wire__LookupResponse *r, char *why,
                                             size_t why_len);
/* msv_kt_check_versions, and *bad the index of the result whose proof does not hold. */
MSV_MUST_CHECK msv_err msv_kt_check_versions_at(const Msv__Wire__LookupResponse *r, size_t *bad,
                                                char *why, size_t why_len);
MSV_MUST_CHECK msv_err msv_kt_pin_vrf_key(struct msv_client_db *db,
                                          const Msv__Wire__LookupResponse *r);

/*
 * One version of one of this account's handles shown to its monitor (HandleVersion, in r, an
 * answer msv_kt_check_lookup accepted): its entry is proven in r's head and is a device set or
 * tombstone of handle (parsed into *e), and the key directory's version v->version of handle
 * commits to it (presence proof against r's epoch root). MSV_OK or MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_kt_check_owner_version(const Msv__Wire__LookupResponse *r,
                                                  const char *handle,
                                                  const Msv__Wire__HandleVersion *v,
                                                  struct msv_kt_entry *e);
/* The version a checked lookup result shows as its handle's newest (0: none, or no key
 * directory). */
uint32_t msv_kt_result_version(const Msv__Wire__HandleDevices *hd);

/*
 * Roots compared (docs/transparency.md, "Gossip of tree heads"): keep_epoch remembers the key
 * directory's root of an accepted answer for its head's size (setting kt_epoch: u64be size,
 * root, signature; an answer without one changes nothing) and keeps it for the monitor's
 * lineage (msv_kt_seen_add); known_epoch gives the root and
 * signature kept for size (MSV_LOG_EPOCH_LEN bytes; MSV_ERR_NOT_FOUND for another size);
 * check_gossip_epoch sets *fits to 0 when epoch (a root and signature another device saw for
 * size) is signed by the pinned log key and differs from the root this device keeps for size.
 */
MSV_MUST_CHECK msv_err msv_kt_keep_epoch(struct msv_client_db *db,
                                         const Msv__Wire__LookupResponse *r,
                                         const struct msv_kt_head *head);
/*
 * Keeps root, which a lookup showed this device for a log of size entries, until the monitor's
 * lineage reaches that size and checks it (lineage.c; docs/transparency.md, "The monitor's
 * lineage"); at most 64 wait, the smallest sizes, the others counted and told.
 */
MSV_MUST_CHECK msv_err msv_kt_seen_add(struct msv_client_db *db, uint64_t size,
                                       const uint8_t root[32]);
/* The key directory root the last accepted lookup kept, with its log size. */
MSV_MUST_CHECK msv_err msv_kt_kept_epoch(struct msv_client_db *db, uint64_t *size,
                                         uint8_t epoch[MSV_LOG_EPOCH_LEN]);
MSV_MUST_CHECK msv_err msv_kt_known_epoch(struct msv_client_db *db, uint64_t size,
                                          uint8_t epoch[MSV_LOG_EPOCH_LEN]);
MSV_MUST_CHECK msv_err msv_kt_check_gossip_epoch(struct msv_client_db *db, uint64_t size,
                                                 const uint8_t epoch[MSV_LOG_EPOCH_LEN], int *fits);

/*
 * The log's cut-over an answer names (LogEntries.cutover, docs/transparency.md "Leaves that name
 * no handle"), against the head it was checked with and the cut-over the reader knows (*cutover:
 * its index, -1 if none): a cut-over entry proven in head, the one known, and not an entry of
 * [from, read) the reader was given as another; left out only while none is known below head's
 * size. MSV_OK (*cutover set to the one named), or MSV_ERR_AUTH with why said. Shared by
 * missive-audit and every client's monitor (lineage.c).
 */
MSV_MUST_CHECK msv_err msv_kt_check_cutover(const Msv__Wire__LogEntries *r,
                                            const struct msv_kt_head *head, uint64_t from,
                                            uint64_t read, int64_t *cutover, char *why,
                                            size_t why_len);
/*
 * 1 if log entry p may stand where it is given the cut-over at index cutover (-1: none known):
 * after it, only a rotation or a version-4 leaf given whole (a hash would hide what the key
 * directory holds, another leaf names a handle); a cut-over entry only at cutover, given whole.
 */
int msv_kt_fits_cutover(const Msv__Wire__LogProof *p, int64_t cutover);

/*
 * Checks a LogEntries answer to a read from start: its head as above, and
 * every entry proven at its index (start, start + 1, ...) in head's tree.
 * head receives the answer's head.
 */
MSV_MUST_CHECK msv_err msv_kt_check_entries(struct msv_client_db *db,
                                            const Msv__Wire__LogEntries *r, uint64_t start,
                                            struct msv_kt_head *head, char *why, size_t why_len);

/*
 * A head someone else's device accepted (gossiped in a message) against the
 * server's current one, asked on conn: that head is checked as every answer's
 * (key, signature, age, extends this device's head) and adopted. *fits is 0
 * if the current head does not extend this device's, or the gossiped one
 * cannot be a head of the same log — the same size with another root, a
 * larger size, or a smaller one the server cannot prove a prefix of its log.
 * A head not signed by the pinned log key is no evidence and fits.
 */
MSV_MUST_CHECK msv_err msv_kt_check_gossip(struct msv_client_db *db, struct msv_conn *conn,
                                           const struct msv_kt_head *g, int *fits);

#endif
