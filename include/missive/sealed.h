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
 */
#ifndef MISSIVE_SEALED_H
#define MISSIVE_SEALED_H

#include <stddef.h>
#include <stdint.h>

#include "missive/crypto.h"

#define MSV_WIRE_SEALED 0x07
/* Envelope.suite and Deliver.suite of a sealed envelope. */
#define MSV_ENVELOPE_SEALED 4

/* Wraps envelope (of at most MSV_PLAINTEXT_MAX + 1 KiB bytes) from a modern sender for a
 * modern recipient. *out: caller frees with free(). */
MSV_MUST_CHECK msv_err msv_sealed_wrap(const struct msv_identity *sender,
                                       const struct msv_public_identity *recipient,
                                       const char *sender_handle, uint64_t sender_device,
                                       const uint8_t *envelope, size_t len, uint8_t **out,
                                       size_t *out_len);

/*
 * Reads the first layer: the sender a sealed envelope claims (handle: 256
 * bytes with the NUL). Only a claim: msv_sealed_unwrap() with that device's
 * key proves it. Anything else is MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_sealed_sender(const struct msv_identity *recipient, const uint8_t *wire,
                                         size_t len, char handle[256], uint64_t *sender_device);

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

#endif
