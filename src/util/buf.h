/*
 * Byte buffers for building and reading binary formats.
 *
 * A writer grows up to a hard maximum set at creation; a reader never reads
 * past its end. Both report failure through their return value and leave
 * their state unchanged on failure, so callers can chain calls and check once.
 */
#ifndef MSV_UTIL_BUF_H
#define MSV_UTIL_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

struct msv_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* len never exceeds max */
    int failed; /* sticky: set by the first failed append */
};

/* Starts an empty writer that will hold at most max bytes. Allocates nothing yet. */
void msv_buf_init(struct msv_buf *b, size_t max);

/* Wipes and frees the contents; the buffer is empty afterwards. */
void msv_buf_clear(struct msv_buf *b);

/* Appends; on failure marks the buffer failed and returns the error. */
msv_err msv_buf_put(struct msv_buf *b, const void *p, size_t n);
msv_err msv_buf_put_u8(struct msv_buf *b, uint8_t v);
msv_err msv_buf_put_u16be(struct msv_buf *b, uint16_t v);
msv_err msv_buf_put_u32be(struct msv_buf *b, uint32_t v);

/*
 * Hands the bytes over: *out receives the data (caller frees with free(), or
 * msv_secret_free() for secrets) and *out_len its length. Returns the
 * buffer's first error if any append failed; the buffer is empty afterwards.
 */
MSV_MUST_CHECK msv_err msv_buf_finish(struct msv_buf *b, uint8_t **out, size_t *out_len);

struct msv_reader {
    const uint8_t *data;
    size_t len;
    size_t off;
};

void msv_reader_init(struct msv_reader *r, const uint8_t *data, size_t len);
size_t msv_reader_left(const struct msv_reader *r);

/* Each returns MSV_ERR_PARSE, reading nothing, when fewer bytes are left than asked for. */
MSV_MUST_CHECK msv_err msv_reader_u8(struct msv_reader *r, uint8_t *v);
MSV_MUST_CHECK msv_err msv_reader_u16be(struct msv_reader *r, uint16_t *v);
MSV_MUST_CHECK msv_err msv_reader_u32be(struct msv_reader *r, uint32_t *v);
/* Points *p at the next n bytes (borrowed from the reader's data) and skips them. */
MSV_MUST_CHECK msv_err msv_reader_bytes(struct msv_reader *r, size_t n, const uint8_t **p);

#endif
