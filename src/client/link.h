/*
 * Linking a device by QR code, without the password (docs/missive.md,
 * "Linking a device by QR code"; docs/crypto.md, "Linking").
 *
 * The new device shows a code:
 *
 *   missive-link:1:ADDRESS:EPHEMERAL:FINGERPRINT
 *
 * in lowercase hex: the 16-byte provisioning address the server holds for
 * the new device's connection, its one-time X25519 public key, and the
 * identity hash of its keys. A device of the account that reads it adds the
 * device and leaves one sealed message at the address:
 *
 *   sealed = "MSVL" || 0x01 || E[32] || nonce[24] || XChaCha20-Poly1305(key, nonce, ad, pt)
 *   key    = HKDF-SHA256(ikm X25519(e, P), salt "MSV-link-v1",
 *                        info E || P || address || fingerprint)[0..32]
 *   ad     = "MSVL" || 0x01 || E || address || fingerprint
 *
 * P is the code's ephemeral key, e/E a fresh pair of the sender's. pt is a
 * frame.proto Provision whose signature, by the approving device, covers
 * "MSV-link-sign-v1" || address || fingerprint || the Provision packed
 * without its signature.
 */
#ifndef MSV_CLIENT_LINK_H
#define MSV_CLIENT_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"
#include "wire/frame.h"

#define MSV_LINK_PREFIX "missive-link:1:"
#define MSV_LINK_CODE_LEN (15 + 32 + 1 + 64 + 1 + 64)
#define MSV_LINK_SEALED_MAX (64 * 1024)

struct msv_link_code {
    uint8_t address[16];
    uint8_t ephemeral[32];
    uint8_t fingerprint[32];
};

/* The code as text (MSV_LINK_CODE_LEN characters and a NUL). */
void msv_link_code_format(const struct msv_link_code *code, char out[MSV_LINK_CODE_LEN + 1]);

/*
 * Parses a code (surrounding spaces and a final newline allowed). MSV_ERR_PARSE
 * for anything else, MSV_ERR_INVALID for a code of another version.
 */
MSV_MUST_CHECK msv_err msv_link_code_parse(const char *text, struct msv_link_code *out);

/* Seals pt (at most MSV_LINK_SEALED_MAX - 85 bytes) for code; *out: caller frees. */
MSV_MUST_CHECK msv_err msv_link_seal(const struct msv_link_code *code, const uint8_t *pt,
                                     size_t len, uint8_t **out, size_t *out_len);

/*
 * Opens what msv_link_seal made for code with the ephemeral secret key;
 * MSV_ERR_AUTH for anything else (another code, altered, replayed to a new
 * code). *pt: caller frees with msv_secret_free.
 */
MSV_MUST_CHECK msv_err msv_link_open(const struct msv_link_code *code,
                                     const uint8_t ephemeral_sk[32], const uint8_t *in, size_t len,
                                     uint8_t **pt, size_t *pt_len);

/*
 * What the approving device's signature over a Provision covers: the
 * context, address, fingerprint and packed (signature-less) Provision.
 * *out: caller frees.
 */
MSV_MUST_CHECK msv_err msv_link_signed_bytes(const struct msv_link_code *code,
                                             const uint8_t *packed, size_t len, uint8_t **out,
                                             size_t *out_len);

/*
 * Parses a provisioning message's plaintext and checks its fields (version
 * 1, a handle, distinct device ids, a 32-byte fingerprint, a signature, and
 * a history reference whole or absent). *out: caller frees with
 * msv__wire__provision__free_unpacked. MSV_ERR_PARSE otherwise.
 */
MSV_MUST_CHECK msv_err msv_link_provision_parse(const uint8_t *pt, size_t len,
                                                Msv__Wire__Provision **out);

struct msv_client;

/*
 * The account's state for p (settings and groups, src/client/link_state.c),
 * at most budget bytes of it; *settings_left and *groups_left: how many did
 * not fit. Free what it adds with msv_link_state_clear (also after a failure).
 */
MSV_MUST_CHECK msv_err msv_link_state_gather(struct msv_client *c, size_t budget,
                                             Msv__Wire__Provision *p, size_t *settings_left,
                                             size_t *groups_left);
void msv_link_state_clear(Msv__Wire__Provision *p);
/* Whether p's settings and groups keep the rules (bounded; every entry as a sync would carry). */
int msv_link_state_is_valid(const Msv__Wire__Provision *p);
/* Holds what p carries on this new device, as synced from p's approver. */
MSV_MUST_CHECK msv_err msv_link_state_apply(struct msv_client *c, const Msv__Wire__Provision *p);

/* The history in the background (src/client/link_history.c). */
#define MSV_LINK_HISTORY_OWED_MAX 4 /* histories an approving device owes at once */
/* Keeps (this new device) the history p announces or names, until imported. */
MSV_MUST_CHECK msv_err msv_link_history_pending_save(struct msv_client *c,
                                                     const Msv__Wire__Provision *p);
/* Imports the history p names (only what this device does not hold), then forgets it. */
MSV_MUST_CHECK msv_err msv_link_history_take(struct msv_client *c, const Msv__Wire__Provision *p);
/* MSV_ERR_TOO_BIG (c->why says it) if this device owes MSV_LINK_HISTORY_OWED_MAX histories. */
MSV_MUST_CHECK msv_err msv_link_history_room(struct msv_client *c);
/* Keeps (the approving device) that it owes device a history: a fresh key and archive id. */
MSV_MUST_CHECK msv_err msv_link_history_owe(struct msv_client *c, uint64_t device, uint8_t key[32],
                                            uint8_t archive[16]);
/* Forgets the history owed to device (none is a no-op). */
MSV_MUST_CHECK msv_err msv_link_history_forget(struct msv_client *c, uint64_t device);

#endif
