/*
 * Encoding and decoding of msv.wire.Frame messages (proto/frame.proto) for
 * the server and client modules; the framing itself is in missive/wire.h.
 */
#ifndef MSV_WIRE_FRAME_H
#define MSV_WIRE_FRAME_H

#include <stddef.h>
#include <stdint.h>

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

#endif
