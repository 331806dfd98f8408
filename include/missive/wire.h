/*
 * Framing of the client-server protocol (docs/wire.md).
 *
 * A frame is a 4-byte header, u8 protocol version then u24be body length,
 * followed by the body: one protobuf message msv.wire.Frame (proto/frame.proto).
 * Every reader enforces a maximum body length before it buffers anything.
 */
#ifndef MISSIVE_WIRE_H
#define MISSIVE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

#define MSV_FRAME_HEADER_LEN 4
#define MSV_PROTOCOL_VERSION 1
#define MSV_FRAME_MAX_DEFAULT (1u << 20) /* 1 MiB */
#define MSV_FRAME_MAX_LIMIT 0xFFFFFFu    /* the most a u24 length can say */

/*
 * Writes the header for a body of body_len bytes. MSV_ERR_TOO_BIG if body_len
 * exceeds max (or MSV_FRAME_MAX_LIMIT); MSV_ERR_INVALID for an empty body.
 */
MSV_MUST_CHECK msv_err msv_frame_header_write(size_t body_len, size_t max,
                                              uint8_t hdr[MSV_FRAME_HEADER_LEN]);

/*
 * Finds one complete frame at the start of the len bytes at buf.
 *   MSV_OK: *body points into buf, *body_len is its length, *consumed the
 *           bytes to drop (header and body).
 *   MSV_ERR_AGAIN: incomplete; read more and call again (nothing consumed).
 *   MSV_ERR_UNSUPPORTED: unknown protocol version byte.
 *   MSV_ERR_TOO_BIG: the declared length exceeds max.
 *   MSV_ERR_PARSE: a zero-length body.
 * Errors other than MSV_ERR_AGAIN mean the stream cannot be resynchronised.
 */
MSV_MUST_CHECK msv_err msv_frame_split(const uint8_t *buf, size_t len, size_t max,
                                       const uint8_t **body, size_t *body_len, size_t *consumed);

#endif
