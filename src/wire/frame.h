/*
 * Encoding and decoding of msv.wire.Frame messages (proto/frame.proto) for
 * the server and client modules; the framing itself is in missive/wire.h.
 */
#ifndef MSV_WIRE_FRAME_H
#define MSV_WIRE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "frame.pb-c.h"
#include "missive/wire.h"

typedef Msv__Wire__Frame msv_frame;

/*
 * Decodes a frame body as msv_frame_split() returned it. A body that is not
 * a valid Frame, or a Frame that carries no message, is MSV_ERR_PARSE.
 * Caller frees *out with msv_frame_free().
 */
MSV_MUST_CHECK msv_err msv_frame_decode(const uint8_t *body, size_t len, msv_frame **out);
void msv_frame_free(msv_frame *f);

/*
 * Encodes f with its header into one buffer of at most max body bytes.
 * *out: caller frees with free().
 */
MSV_MUST_CHECK msv_err msv_frame_encode(const msv_frame *f, size_t max, uint8_t **out,
                                        size_t *out_len);

/*
 * What a device signs to authenticate on a TLS connection (docs/wire.md):
 *   "MSV-auth-v1" || the server's 32-byte nonce || the connection's TLS
 *   exporter ("EXPORTER-missive-auth", 32 bytes)
 * so a signature is good for this nonce on this connection only. A nonce of
 * another length is MSV_ERR_PARSE; a failing exporter MSV_ERR_CRYPTO.
 */
#define MSV_AUTH_MESSAGE_LEN (11 + 32 + 32)
MSV_MUST_CHECK msv_err msv_auth_message(SSL *ssl, const uint8_t *nonce, size_t nonce_len,
                                        uint8_t out[MSV_AUTH_MESSAGE_LEN]);

#endif
