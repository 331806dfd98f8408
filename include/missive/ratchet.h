/*
 * Sessions between two modern devices: an X3DH key agreement with the
 * recipient's signed prekey and (when one is left) a one-time prekey, then a
 * Double Ratchet, which gives forward secrecy and post-compromise security.
 * docs/crypto.md ("Sessions") has the byte layouts and the key derivations.
 *
 * A session is a value: it can be exported, stored and imported. Decryption
 * changes a session only when it succeeds, so a forged or damaged message
 * leaves it as it was.
 */
#ifndef MISSIVE_RATCHET_H
#define MISSIVE_RATCHET_H

#include <stddef.h>
#include <stdint.h>

#include "missive/crypto.h"

#define MSV_WIRE_RATCHET 0x05       /* a message of an established session */
#define MSV_WIRE_PREKEY_MSG 0x06    /* the session's first messages: X3DH data, then a 0x05 */
#define MSV_WIRE_PQ_PREKEY_MSG 0x08 /* a hybrid session's first messages: X3DH + ML-KEM, a 0x0A */
#define MSV_WIRE_PQ_RATCHET 0x0A    /* a message of a post-quantum session: a 0x05 with KEM steps */

/* Messages a single message may skip over in one chain, and skipped keys a session keeps. */
#define MSV_RATCHET_MAX_SKIP 1000
#define MSV_RATCHET_MAX_SKIPPED 2000

/* Bytes a session adds around a plaintext at most: the prekey prefix, the header (with an
 * ML-KEM encapsulation key and a ciphertext in a post-quantum one) and the tag. */
#define MSV_RATCHET_OVERHEAD (1133 + 46 + 4 + 1184 + 4 + 1088 + 16)

/* Post-quantum ratchet: a party offers a fresh ML-KEM-768 key after this many messages sent
 * since its last KEM step, or this long; an offered key or a ciphertext rides again on every
 * MSV_PQ_REPEAT-th message until it is answered, one of them per message at most. docs/crypto.md,
 * "The post-quantum ratchet". */
#define MSV_PQ_REKEY_MESSAGES 50
#define MSV_PQ_REKEY_MS (24 * 3600 * 1000LL)
#define MSV_PQ_REPEAT 32

/* An X25519 prekey pair; the secret is only ever in the owner's store. */
struct msv_prekey {
    uint32_t id;
    uint8_t pk[32];
    uint8_t sk[32];
};

/*
 * Generates a prekey; for a signed prekey, sig receives the identity's
 * Ed25519 signature of "MSV-spk-v1" || u32be id || pk (sig may be NULL for
 * one-time prekeys). The identity must be modern.
 */
MSV_MUST_CHECK msv_err msv_prekey_generate(const struct msv_identity *id, uint32_t key_id,
                                           struct msv_prekey *out, uint8_t sig[64]);
/* MSV_OK if sig is the identity's signature of the signed prekey; MSV_ERR_AUTH otherwise. */
MSV_MUST_CHECK msv_err msv_signed_prekey_verify(const struct msv_public_identity *pub,
                                                uint32_t key_id, const uint8_t pk[32],
                                                const uint8_t sig[64]);

/*
 * An ML-KEM-768 prekey of a device that speaks post-quantum sessions: a
 * one-time one (claimed once) or its last-resort one (handed out when none
 * is left). The decapsulation key is only ever in the owner's store.
 */
struct msv_kem_prekey {
    uint32_t id;
    int last_resort;
    uint8_t ek[1184];
    uint8_t dk[2400];
};

/*
 * Generates a KEM prekey and sig, the identity's Ed25519 signature of
 * "MSV-kem-prekey-v1" || u32be id || u8 last_resort || ek. The identity must
 * be modern. Caller wipes out->dk.
 */
MSV_MUST_CHECK msv_err msv_kem_prekey_generate(const struct msv_identity *id, uint32_t key_id,
                                               int last_resort, struct msv_kem_prekey *out,
                                               uint8_t sig[64]);
/* MSV_OK if sig is pub's signature of this KEM prekey; MSV_ERR_AUTH otherwise. */
MSV_MUST_CHECK msv_err msv_kem_prekey_verify(const struct msv_public_identity *pub, uint32_t key_id,
                                             int last_resort, const uint8_t *ek, size_t ek_len,
                                             const uint8_t sig[64]);

/* What the directory hands a sender for one device. */
struct msv_prekey_bundle {
    uint32_t signed_id;
    uint8_t signed_pk[32];
    uint8_t signed_sig[64];
    uint32_t one_time_id; /* 0: none left */
    uint8_t one_time_pk[32];
    /* the KEM prekey: required when the peer speaks post-quantum sessions, else unused */
    int has_kem;
    uint32_t kem_id;
    int kem_last_resort;
    uint8_t kem_pk[1184];
    uint8_t kem_sig[64];
};

struct msv_session;

/*
 * Starts a session with peer (its identity from the transparency-checked
 * directory) from its bundle; checks the prekey's signature first
 * (MSV_ERR_AUTH). Until the peer answers, every message carries the X3DH
 * prefix so that any of them can start the session at the other end. A
 * peer whose identity says post-quantum gets a hybrid session (X3DH and an
 * ML-KEM-768 encapsulation to the bundle's KEM prekey) or none:
 * MSV_ERR_AUTH when the bundle has no KEM prekey or its signature fails.
 */
MSV_MUST_CHECK msv_err msv_session_initiate(const struct msv_identity *me,
                                            const struct msv_public_identity *peer,
                                            const struct msv_prekey_bundle *bundle,
                                            struct msv_session **out);

/* Encrypts pt (at most MSV_PLAINTEXT_MAX bytes) and advances the sending chain. */
MSV_MUST_CHECK msv_err msv_session_encrypt(struct msv_session *s, const uint8_t *pt, size_t len,
                                           uint8_t **out, size_t *out_len);

/*
 * Decrypts a 0x05 or 0x06 message of this session. MSV_ERR_REPLAY for a
 * message whose key was used already (a duplicate), MSV_ERR_AUTH for
 * anything else that does not decrypt, MSV_ERR_TOO_BIG when it would skip
 * more than MSV_RATCHET_MAX_SKIP messages; the session is unchanged then.
 * *pt: caller frees with msv_secret_free(*pt, *pt_len).
 */
MSV_MUST_CHECK msv_err msv_session_decrypt(struct msv_session *s, const uint8_t *wire, size_t len,
                                           uint8_t **pt, size_t *pt_len);

/* The prekeys a 0x06 or 0x08 message was made for, and its base key; MSV_ERR_PARSE otherwise. */
MSV_MUST_CHECK msv_err msv_prekey_message_info(const uint8_t *wire, size_t len, uint32_t *signed_id,
                                               uint32_t *one_time_id, uint8_t base_key[32]);
/* The KEM prekey a 0x08 message was made for; MSV_ERR_PARSE for anything else. */
MSV_MUST_CHECK msv_err msv_prekey_message_kem_id(const uint8_t *wire, size_t len, uint32_t *kem_id);
/* 1 if s is a hybrid (post-quantum) session. */
int msv_session_is_pq(const struct msv_session *s);
/* The KEM steps mixed into s's root key since it began (both directions). */
uint32_t msv_session_pq_steps(const struct msv_session *s);
/*
 * 1 if wire is a message s refuses as a downgrade: a classical (0x05) header
 * in a post-quantum session, but for the chains a session stored before the
 * post-quantum ratchet had begun already.
 */
int msv_session_is_downgrade(const struct msv_session *s, const uint8_t *wire, size_t len);

/*
 * A session message's header (after any prekey prefix), as read from wire:
 *   0x05 || DH (32) || u32be PN || u32be N
 *   0x0A || DH (32) || u32be PN || u32be N || u32be KEM step (0: none) || u8 flags
 *        || [u32be key id || ML-KEM-768 encapsulation key]  (flags bit 0)
 *        || [u32be key id || ML-KEM-768 ciphertext]         (flags bit 1)
 * followed by at least the AEAD tag. Pointers point into wire.
 */
struct msv_ratchet_header {
    uint8_t version;
    const uint8_t *dh;
    uint32_t pn, n, step;
    uint32_t ek_id, ct_id; /* 0: not carried */
    const uint8_t *ek, *ct;
    size_t len; /* bytes of header */
};
/* Parses the header at wire; MSV_ERR_PARSE for anything malformed (docs/bad-input.md Q1-Q4). */
MSV_MUST_CHECK msv_err msv_ratchet_header_parse(const uint8_t *wire, size_t len,
                                                struct msv_ratchet_header *h);

/*
 * Answers a 0x06 or 0x08 message from peer: the X3DH from our side with the
 * secrets of the prekeys it names (one_time NULL when it names none; kem the
 * KEM prekey a 0x08 names, NULL for a 0x06), then its first message
 * decrypted. MSV_ERR_AUTH if it does not decrypt, and for a 0x06 to a device
 * whose identity says post-quantum (a downgrade).
 */
MSV_MUST_CHECK msv_err msv_session_respond(const struct msv_identity *me,
                                           const struct msv_public_identity *peer,
                                           const struct msv_prekey *signed_prekey,
                                           const struct msv_prekey *one_time,
                                           const struct msv_kem_prekey *kem, const uint8_t *wire,
                                           size_t len, struct msv_session **out, uint8_t **pt,
                                           size_t *pt_len);

/* 1 if s was answered from a 0x06 message with this base key (a later copy of the prefix). */
int msv_session_has_base_key(const struct msv_session *s, const uint8_t base_key[32]);

/* Serialises s (secret bytes: free with msv_secret_free) and reads it back. */
MSV_MUST_CHECK msv_err msv_session_export(const struct msv_session *s, uint8_t **out,
                                          size_t *out_len);
MSV_MUST_CHECK msv_err msv_session_import(const uint8_t *in, size_t len, struct msv_session **out);
/* A copy of s. */
MSV_MUST_CHECK msv_err msv_session_dup(const struct msv_session *s, struct msv_session **out);
void msv_session_free(struct msv_session *s);

#endif
