/*
 * The device's sessions with other modern devices (missive/ratchet.h), its
 * prekeys, and its delivery token for sealed sends, kept in the account's
 * state database.
 *
 * Sending seals for a device with its session when there is one (started
 * from the device's prekeys when it has published some), else with the
 * suite's own envelope. Receiving opens session messages; what a message
 * changes in the session is stored only after the message itself, so a
 * message that could not be stored is read again when it comes again.
 * Sessions are loaded and stored under the account's session lock, which
 * every process of the account takes, so that no two of them seal with the
 * same stored session.
 */
#ifndef MSV_CLIENT_SESSIONS_H
#define MSV_CLIENT_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "missive/crypto.h"
#include "missive/payload.h"
#include "wire/frame.h"

struct msv_client;
struct msv_session;

/* Keeps one-time prekeys at the server above this many (refilled to the upload size). */
#define MSV_PREKEYS_LOW 20
#define MSV_PREKEYS_BATCH 100
/* KEM prekeys (37 times the size of an X25519 one): fewer at a time, refilled the same way */
#define MSV_KEM_PREKEYS_LOW 10
#define MSV_KEM_PREKEYS_BATCH 40
/* The signed prekey is replaced when it is older than this (a week); the one before it keeps
 * its secret until the next replacement, for first messages still on their way. */
#define MSV_SIGNED_PREKEY_AGE_MS (7LL * 24 * 3600 * 1000)
/*
 * One-time prekeys of an upload whose answer was lost (the server may hold them or not): each
 * such batch is recorded (setting "prekeys-unsettled"), and the next publish replaces every
 * one-time prekey the server holds (replace_one_time) with a fresh batch, so that no key of
 * the lost batch is handed out after that answer. Their secrets stay for first messages made
 * with keys claimed before it, MSV_PREKEYS_UNSETTLED_MS (longer than the relay's default
 * queue life of 30 days), then go; at most MSV_PREKEYS_UNSETTLED_MAX batches are kept (the
 * oldest goes first). Secrets deleted so are counted ("prekeys-reclaimed").
 */
#define MSV_PREKEYS_UNSETTLED_MAX 8
#define MSV_PREKEYS_UNSETTLED_MS (35LL * 24 * 3600 * 1000)
/* The lost batches recorded now, and the secrets reclaimed so far ("prekeys-reclaimed"). */
struct msv_client;
MSV_MUST_CHECK msv_err msv_sessions_prekeys_unsettled(struct msv_client *c, size_t *batches,
                                                      uint64_t *reclaimed);

/*
 * After authentication: publishes a signed prekey when the server has none
 * or the one in use is due for replacement, one-time prekeys when the
 * server holds too few, and the delivery token when it was not registered
 * yet. Modern devices only (others: nothing to do). Best effort:
 * what fails is tried again at the next connection.
 */
msv_err msv_sessions_publish(struct msv_client *c);

/*
 * The first prekeys a new device carries in its registration or link request
 * (NewDevice.prekeys), so that no sender finds it listed without a bundle:
 * its signed prekey and, when its identity says post-quantum, its last-resort
 * KEM prekey, made, stored and recorded as in use. *out stays NULL for an
 * identity that does not speak modern (no prekeys); free with
 * msv_sessions_first_prekeys_free. The set borrows from f (NULL for NULL).
 */
struct msv_first_prekeys;
struct msv_prekey_set;
MSV_MUST_CHECK msv_err msv_sessions_first_prekeys(struct msv_client *c,
                                                  struct msv_first_prekeys **out);
const struct msv_prekey_set *msv_sessions_first_prekeys_set(const struct msv_first_prekeys *f);
void msv_sessions_first_prekeys_free(struct msv_first_prekeys *f);

/*
 * In the copy of a state database that goes into a backup: drops every
 * prekey secret (one-time and signed), moves the next prekey id
 * MSV_PREKEY_RESTORE_GAP further, past any id the original device can hand
 * out after the backup, and marks the copy (MSV_PREKEYS_RESTORED) so that a
 * device restored from it replaces its published prekeys and its signed
 * prekey at its first connection (docs/missive.md, "Backups").
 */
#define MSV_PREKEYS_RESTORED "prekeys-restored"
#define MSV_PREKEY_RESTORE_GAP (1u << 24)
struct msv_client_db;
MSV_MUST_CHECK msv_err msv_sessions_strip_backup_copy(struct msv_client_db *copy);
/* Moves the next prekey id count further; *first: the id it was (ids are never reused). */
MSV_MUST_CHECK msv_err msv_sessions_take_prekey_ids(struct msv_client_db *db, uint32_t count,
                                                    uint32_t *first);

/*
 * KEM prekeys (client/pqkeys.c), for a device whose identity says
 * post-quantum (others: nothing to do). Preparing makes and stores the KEM
 * part of one upload into set: one-time ones topping up what the server
 * holds (held; NULL: a new device, which carries none) and a new last-resort
 * one when rotate (with the signed prekey) or the server has none (*batch:
 * the keys set points into, msv_pqkeys_batch_free; left NULL when nothing is
 * due); msv_pqkeys_uploaded records the upload's last-resort one as the one
 * in use. Loading reads a KEM prekey's secret; a used one-time one's secret
 * is deleted (msv_pqkeys_used), a last-resort one's is kept.
 */
struct msv_kem_prekey;
struct msv_kem_batch;
struct msv_prekey_set;
struct msv_prekey_counts;
MSV_MUST_CHECK msv_err msv_pqkeys_prepare(struct msv_client *c, int rotate, int replace,
                                          const struct msv_prekey_counts *held,
                                          struct msv_kem_batch **batch, struct msv_prekey_set *set);
MSV_MUST_CHECK msv_err msv_pqkeys_uploaded(struct msv_client *c, const struct msv_prekey_set *set);
void msv_pqkeys_batch_free(struct msv_kem_batch *batch);
MSV_MUST_CHECK msv_err msv_pqkeys_load(struct msv_client *c, uint32_t id, struct msv_kem_prekey *k);
MSV_MUST_CHECK msv_err msv_pqkeys_used(struct msv_client *c, uint32_t id);
/*
 * A KEM prekey's secret, if it may open something: a one-time one not used yet, or a
 * last-resort one in use, the one before, or one uploaded whose answer has not come
 * (MSV_ERR_NOT_FOUND for any other, also a kept secret of an upload the server refused).
 */
MSV_MUST_CHECK msv_err msv_pqkeys_load_usable(struct msv_client *c, uint32_t id,
                                              struct msv_kem_prekey *k);
/* The server refused the upload of set (it answered): the secrets it carried go. */
MSV_MUST_CHECK msv_err msv_pqkeys_refused(struct msv_client *c, const struct msv_prekey_set *set);
/* The setting that holds the secret of KEM prekey id. */
void msv_pqkeys_name(uint32_t id, char key[40]);
/*
 * What the server says it holds (held: its last-resort KEM prekey's id, 0 none) settles an
 * upload whose answer was lost: the pending key, if it holds it, is recorded as the one in
 * use; else its secret goes. *stale is set when the server holds another key than the one in
 * use here; has with held 0: a server that does not say which, and nothing is settled.
 */
MSV_MUST_CHECK msv_err msv_pqkeys_reconcile(struct msv_client *c, uint32_t held, int has,
                                            int *stale);
MSV_MUST_CHECK msv_err msv_pqkeys_strip_backup_copy(struct msv_client_db *copy);

/*
 * The account's profile key (made on first use), one for all of its devices:
 * a synced setting (docs/missive.md, "Sync between your devices"), so a
 * linked device gets it. The delivery token is derived from it.
 */
#define MSV_PROFILE_KEY_SETTING "sync:secret:profile-key"
MSV_MUST_CHECK msv_err msv_sessions_profile_key(struct msv_client *c,
                                                uint8_t key[MSV_PROFILE_KEY_LEN]);
void msv_sessions_delivery_token(const uint8_t key[MSV_PROFILE_KEY_LEN], uint8_t token[16]);
/* The profile key changed (here or from another device): registers the new delivery token now
 * (connecting), else at the next connection. */
MSV_MUST_CHECK msv_err msv_sessions_profile_key_changed(struct msv_client *c);
/* A new profile key for the account (stamped now: the account's other devices take it). */
MSV_MUST_CHECK msv_err msv_sessions_new_profile_key(struct msv_client *c);
/* A new profile key for the account, its delivery token registered (the old one then fails). */
MSV_MUST_CHECK msv_err msv_sessions_rotate_profile_key(struct msv_client *c);
/* The delivery token for handle, from the profile key its devices sent; MSV_ERR_NOT_FOUND. */
MSV_MUST_CHECK msv_err msv_sessions_token_for(struct msv_client *c, const char *handle,
                                              uint8_t token[16]);
/* Remembers (or with key NULL forgets) the profile key a handle's device sent. */
MSV_MUST_CHECK msv_err msv_sessions_learn_profile(struct msv_client *c, const char *handle,
                                                  const uint8_t *key);

/*
 * Starts sessions with the modern devices of hds that have none (not this
 * one): claims their prekey bundles in one request, checks each signed
 * prekey against the device's identity as listed, stores the sessions.
 * Devices without prekeys are left to the suite's envelope.
 */
MSV_MUST_CHECK msv_err msv_sessions_prepare(struct msv_client *c,
                                            Msv__Wire__HandleDevices *const *hds, size_t n);

/*
 * Seals pt for device device_id of handle (identity pub) in suite (one both
 * speak): with its session with exactly that peer (stored advanced) when the
 * suite is modern and there is one, else the suite's envelope.
 */
MSV_MUST_CHECK msv_err msv_sessions_seal(struct msv_client *c, const char *handle,
                                         uint64_t device_id, const struct msv_public_identity *pub,
                                         enum msv_suite suite, const uint8_t *pt, size_t len,
                                         uint8_t **out, size_t *out_len);

/*
 * Sessions are stored per peer: a device id, the handle it belongs to and its
 * identity, so a session is only ever used with the peer it was made with.
 * Slot 0 is the current session; slots 1 to MSV_SESSIONS_KEPT - 1 the ones
 * before it, newest first, still tried for messages sent in them.
 */
#define MSV_SESSIONS_KEPT 4
#define MSV_SESSION_KEY_LEN 80
/* The setting of a session: "session:<device>:<hex of H(handle || 0 || identity hash)>:<slot>". */
void msv_sessions_key(const char *handle, uint64_t device_id, const struct msv_public_identity *pub,
                      unsigned slot, char key[MSV_SESSION_KEY_LEN]);

/* What opening a session message changes, stored by msv_sessions_commit(). */
struct msv_session_update {
    char base[MSV_SESSION_KEY_LEN]; /* the peer's sessions: the key without its slot */
    unsigned slot;                  /* which one read the message */
    struct msv_session *s;
    uint32_t used_one_time; /* a one-time prekey secret to delete, or 0 */
    uint32_t used_kem;      /* the KEM prekey a hybrid session was answered with, or 0 */
    int is_new;             /* a new current session (the others step back one) */
    struct msv_client *c;   /* set while the update holds the session lock */
    /* is_new: the digest of the answered base key, remembered on commit */
    uint8_t base_digest[32];
};

/*
 * The session this device holds with device d of handle (as the directory
 * lists it): none, classical (X3DH), or post-quantum (hybrid).
 */
#define MSV_SESSION_NONE 0
#define MSV_SESSION_CLASSICAL 1
#define MSV_SESSION_PQ 2
int msv_sessions_kind(struct msv_client *c, const char *handle, const Msv__Wire__DeviceInfo *d);
/* The post-quantum ratchet's KEM steps in that session so far (0: none, or no session). */
uint32_t msv_sessions_kem_steps(struct msv_client *c, const char *handle,
                                const Msv__Wire__DeviceInfo *d);

/* 1 if the envelope is a session message (0x05, 0x06, 0x08 or 0x0A). */
int msv_sessions_is_session_message(const uint8_t *wire, size_t len);
/*
 * Messages from device_id refused as a downgrade: a classical header where the
 * current session with it is post-quantum (msv_sessions_open fails them with
 * MSV_ERR_AUTH; they are recorded as unreadable and shown as such).
 */
uint64_t msv_sessions_downgrades(struct msv_client *c, uint64_t device_id);

/*
 * Opens a session message from device device_id of handle (identity pub),
 * with the sessions made with exactly that peer, current first.
 * MSV_ERR_REPLAY for a duplicate of one read before, MSV_ERR_AUTH if none of
 * them reads it. *pt: caller frees with msv_secret_free(). The account's session
 * lock (every process of it) is held from here until msv_sessions_commit()
 * or msv_sessions_discard(), which the caller calls whatever this returned.
 */
MSV_MUST_CHECK msv_err msv_sessions_open(struct msv_client *c, const char *handle,
                                         uint64_t device_id, const struct msv_public_identity *pub,
                                         const uint8_t *wire, size_t len, uint8_t **pt,
                                         size_t *pt_len, struct msv_session_update *u);
MSV_MUST_CHECK msv_err msv_sessions_commit(struct msv_client *c, struct msv_session_update *u);
void msv_sessions_discard(struct msv_session_update *u);

/* Forgets every session with device: the next message to it starts a new one. */
MSV_MUST_CHECK msv_err msv_sessions_forget(struct msv_client *c, uint64_t device_id);

#endif
