/*
 * Sealed sender: an outer envelope to the recipient device's X25519 identity
 * key that hides who sent the inner envelope (docs/crypto.md, "Sealed
 * sender"). The relay sees the recipient only; the recipient learns the
 * sender's handle and device, then authenticates the inner envelope with
 * that device's key from the directory: a session message (X3DH binds both
 * identities) or a modern envelope (signed inside).
 *
 *   e, E  = ephemeral X25519 key pair
 *   K||N  = HKDF-SHA256(ikm X25519(e, R), salt "MSV-sealed-v1", info E || R, 56 bytes)
 *   inner = u8 len(handle) || handle || u64be sender device || envelope
 *   wire  = 0x07 || E || XChaCha20-Poly1305(K, nonce N, ad 0x07 || E || H(recipient), inner)
 */
#ifndef MISSIVE_SEALED_H
#define MISSIVE_SEALED_H

#include <stddef.h>
#include <stdint.h>

#include "missive/crypto.h"

#define MSV_WIRE_SEALED 0x07
/* Envelope.suite and Deliver.suite of a sealed envelope. */
#define MSV_ENVELOPE_SEALED 4

/* Wraps envelope (of at most MSV_PLAINTEXT_MAX + 1 KiB bytes) for a modern recipient. */
MSV_MUST_CHECK msv_err msv_sealed_wrap(const struct msv_public_identity *recipient,
                                       const char *sender_handle, uint64_t sender_device,
                                       const uint8_t *envelope, size_t len, uint8_t **out,
                                       size_t *out_len);

/*
 * Opens a sealed envelope: the claimed sender (handle: 256 bytes with the
 * NUL) and the inner envelope, borrowed from *inner_buf, which the caller
 * frees with free(). The sender is only a claim until the inner envelope is
 * authenticated. Anything else is MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_sealed_unwrap(const struct msv_identity *recipient, const uint8_t *wire,
                                         size_t len, char handle[256], uint64_t *sender_device,
                                         uint8_t **inner_buf, const uint8_t **envelope,
                                         size_t *envelope_len);

#endif
