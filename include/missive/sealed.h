/*
 * Sealed sender: an outer envelope to the recipient device's X25519 identity
 * key that hides who sent the inner envelope from the relay and proves it to
 * the recipient (docs/crypto.md, "Sealed sender"). The first layer names the
 * sender; the second is keyed with the sender's static X25519 identity key
 * too, so nobody else can make one that opens under that sender's key.
 *
 *   e, E  = ephemeral X25519 key pair; R, S = recipient's and sender's X25519 identity keys
 *   K1||N1 = HKDF-SHA256(ikm X25519(e, R), salt "MSV-sealed-v2", info E || R, 56 bytes)
 *   head  = u8 len(handle) || handle, zero-padded to 255 bytes || u64be sender device
 *   c1    = XChaCha20-Poly1305(K1, N1, ad 0x07 || E || H(R), head)            (280 bytes)
 *   K2||N2 = HKDF-SHA256(ikm X25519(e, R) || X25519(s, R), salt "MSV-sealed-v2-static",
 *                        info E || R || S, 56 bytes)
 *   c2    = XChaCha20-Poly1305(K2, N2, ad 0x07 || E || c1 || H(R) || H(S), envelope)
 *   wire  = 0x07 || E || c1 || c2
 *
 * To a recipient whose identity says post-quantum ([8]) the hybrid version
 * instead (docs/crypto.md, "Hybrid sealed sender"): an ML-KEM-768 key SS
 * encapsulated (CT) to its signed last-resort KEM prekey P, number id, joins both
 * agreements:
 *   K1||N1 = HKDF-SHA256(ikm X25519(e, R) || SS, salt "MSV-sealed-pq-v1",
 *                        info E || R || SHA-256(P) || SHA-256(CT) || H(recipient), 56)
 *   K2||N2 = HKDF-SHA256(ikm X25519(e, R) || X25519(s, R) || SS, salt "MSV-sealed-pq-v1-static",
 *                        info E || R || S || SHA-256(P) || SHA-256(CT) || H(recipient), 56)
 *   wire  = 0x09 || E || u32be id || CT (1088) || c1 || c2   (each ad: all before || H(R) [||
 * H(S)]) Each side uses the one version the recipient's identity calls for.
 */
#ifndef MISSIVE_SEALED_H
#define MISSIVE_SEALED_H

#include <stddef.h>
#include <stdint.h>

#include "missive/crypto.h"

#define MSV_WIRE_SEALED 0x07
#define MSV_WIRE_SEALED_PQ 0x09
/* Envelope.suite and Deliver.suite of a sealed envelope. */
#define MSV_ENVELOPE_SEALED 4

/* The signed last-resort KEM prekey of a post-quantum device that a hybrid sealed envelope
 * is sealed to (the caller has checked its signature with msv_kem_prekey_verify()). */
struct msv_sealing_key {
    uint32_t id;
    uint8_t ek[1184];
};

/* Wraps envelope (of at most MSV_PLAINTEXT_MAX + 4 KiB bytes) from a modern sender for a
 * modern recipient of an earlier version (no [8]: MSV_ERR_INVALID for one with it).
 * *out: caller frees with free(). */
MSV_MUST_CHECK msv_err msv_sealed_wrap(const struct msv_identity *sender,
                                       const struct msv_public_identity *recipient,
                                       const char *sender_handle, uint64_t sender_device,
                                       const uint8_t *envelope, size_t len, uint8_t **out,
                                       size_t *out_len);

/* The same for a post-quantum recipient, hybrid, to its KEM key kem (borrowed). */
MSV_MUST_CHECK msv_err msv_sealed_wrap_pq(const struct msv_identity *sender,
                                          const struct msv_public_identity *recipient,
                                          const struct msv_sealing_key *kem,
                                          const char *sender_handle, uint64_t sender_device,
                                          const uint8_t *envelope, size_t len, uint8_t **out,
                                          size_t *out_len);

/* The id of the KEM prekey a hybrid (0x09) envelope names; MSV_ERR_AUTH for anything else. */
MSV_MUST_CHECK msv_err msv_sealed_kem_id(const uint8_t *wire, size_t len, uint32_t *id);

/*
 * Reads the first layer: the sender a sealed envelope claims (handle: 256
 * bytes with the NUL). Only a claim: msv_sealed_unwrap() with that device's
 * key proves it. Anything else is MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_sealed_sender(const struct msv_identity *recipient, const uint8_t *wire,
                                         size_t len, char handle[256], uint64_t *sender_device);
/*
 * The same for a post-quantum recipient, with the decapsulation key (2400
 * bytes, borrowed) of the KEM prekey the envelope names; when kem_ss is not
 * NULL, the KEM shared key goes there, for msv_sealed_unwrap_pq() to use
 * instead of decapsulating again (caller wipes it). A post-quantum recipient
 * refuses 0x07 and every other recipient 0x09: MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_sealed_sender_pq(const struct msv_identity *recipient,
                                            const uint8_t *kem_dk, const uint8_t *wire, size_t len,
                                            char handle[256], uint64_t *sender_device,
                                            uint8_t kem_ss[32]);

/*
 * Opens the second layer with the claimed sender's public identity: the
 * inner envelope (*envelope: caller frees with free()) if, and only if, the
 * holder of that identity's secret key sealed it. Anything else is
 * MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_sealed_unwrap(const struct msv_identity *recipient,
                                         const struct msv_public_identity *sender,
                                         const uint8_t *wire, size_t len, uint8_t **envelope,
                                         size_t *envelope_len);
/* The same for a post-quantum recipient, with the KEM prekey's decapsulation key and, if
 * not NULL, the shared key msv_sealed_sender_pq() gave for this envelope (else it
 * decapsulates). */
MSV_MUST_CHECK msv_err msv_sealed_unwrap_pq(const struct msv_identity *recipient,
                                            const uint8_t *kem_dk, const uint8_t *kem_ss,
                                            const struct msv_public_identity *sender,
                                            const uint8_t *wire, size_t len, uint8_t **envelope,
                                            size_t *envelope_len);

#endif
