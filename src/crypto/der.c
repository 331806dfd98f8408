/*
 * The identity encoding: a DER SEQUENCE (X.690 8.9) of context-specific
 * primitive elements [n] (X.690 8.1.2), each holding a u16be length and that
 * many bytes, as the iMessage public identity does. Only definite, minimal
 * lengths up to 0xFFFF are accepted, which keeps one encoding per value.
 */
#include <string.h>

#include "crypto/internal.h"
#include "missive/util.h"
#include "util/buf.h"

#define DER_SEQUENCE 0x30
#define DER_CONTEXT_PRIMITIVE 0x80
#define DER_MAX_LEN 0xFFFFu

static msv_err der_read_header(struct msv_reader *r, uint8_t *tag, size_t *len)
{
    uint8_t first, b1, b2;

    if (msv_reader_u8(r, tag) != MSV_OK || msv_reader_u8(r, &first) != MSV_OK)
        return MSV_ERR_PARSE;
    if (first < 0x80) {
        *len = first;
    } else if (first == 0x81) {
        if (msv_reader_u8(r, &b1) != MSV_OK || b1 < 0x80)
            return MSV_ERR_PARSE; /* would fit the short form */
        *len = b1;
    } else if (first == 0x82) {
        if (msv_reader_u8(r, &b1) != MSV_OK || msv_reader_u8(r, &b2) != MSV_OK || b1 == 0)
            return MSV_ERR_PARSE; /* would fit one length byte */
        *len = (size_t)b1 << 8 | b2;
    } else {
        return MSV_ERR_PARSE;
    }
    return *len <= msv_reader_left(r) ? MSV_OK : MSV_ERR_PARSE;
}

static msv_err der_put_header(struct msv_buf *b, uint8_t tag, size_t len)
{
    if (len > DER_MAX_LEN)
        return MSV_ERR_TOO_BIG;
    msv_buf_put_u8(b, tag);
    if (len < 0x80) {
        msv_buf_put_u8(b, (uint8_t)len);
    } else if (len <= 0xFF) {
        msv_buf_put_u8(b, 0x81);
        msv_buf_put_u8(b, (uint8_t)len);
    } else {
        msv_buf_put_u8(b, 0x82);
        msv_buf_put_u16be(b, (uint16_t)len);
    }
    return b->failed;
}

msv_err msv_elems_parse(const uint8_t *in, size_t len, struct msv_elem *elems, size_t max,
                        size_t *count)
{
    struct msv_reader outer, seq;
    const uint8_t *body;
    size_t body_len, n = 0;
    uint8_t tag;
    unsigned last_tag = 0;

    msv_reader_init(&outer, in, len);
    if (der_read_header(&outer, &tag, &body_len) != MSV_OK || tag != DER_SEQUENCE)
        return MSV_ERR_PARSE;
    if (msv_reader_bytes(&outer, body_len, &body) != MSV_OK || msv_reader_left(&outer) != 0)
        return MSV_ERR_PARSE;
    msv_reader_init(&seq, body, body_len);
    while (msv_reader_left(&seq) > 0) {
        struct msv_reader inner;
        struct msv_elem e;
        uint16_t vlen;

        if (n == max || der_read_header(&seq, &tag, &e.contents_len) != MSV_OK)
            return MSV_ERR_PARSE;
        /* low-tag-number form only: tags 0..30 */
        if ((tag & 0xE0) != DER_CONTEXT_PRIMITIVE || (tag & 0x1F) == 0x1F)
            return MSV_ERR_PARSE;
        e.tag = tag & 0x1F;
        if (n > 0 && e.tag <= last_tag)
            return MSV_ERR_PARSE;
        if (msv_reader_bytes(&seq, e.contents_len, &e.contents) != MSV_OK)
            return MSV_ERR_PARSE;
        msv_reader_init(&inner, e.contents, e.contents_len);
        if (msv_reader_u16be(&inner, &vlen) != MSV_OK || vlen != msv_reader_left(&inner))
            return MSV_ERR_PARSE;
        if (msv_reader_bytes(&inner, vlen, &e.value) != MSV_OK)
            return MSV_ERR_PARSE;
        e.value_len = vlen;
        elems[n++] = e;
        last_tag = e.tag;
    }
    *count = n;
    return MSV_OK;
}

const struct msv_elem *msv_elems_find(const struct msv_elem *elems, size_t count, unsigned tag)
{
    for (size_t i = 0; i < count; i++) {
        if (elems[i].tag == tag)
            return &elems[i];
    }
    return NULL;
}

msv_err msv_elems_encode(const struct msv_elem *elems, size_t count, uint8_t **out, size_t *out_len)
{
    struct msv_buf body, whole;
    msv_err err;
    uint8_t *body_bytes = NULL;
    size_t body_len = 0;

    msv_buf_init(&body, DER_MAX_LEN);
    for (size_t i = 0; i < count; i++) {
        if (elems[i].tag > 30 || (i > 0 && elems[i].tag <= elems[i - 1].tag) ||
            elems[i].value_len > DER_MAX_LEN - 2) {
            msv_buf_clear(&body);
            return MSV_ERR_INVALID;
        }
        der_put_header(&body, (uint8_t)(DER_CONTEXT_PRIMITIVE | elems[i].tag),
                       elems[i].value_len + 2);
        msv_buf_put_u16be(&body, (uint16_t)elems[i].value_len);
        msv_buf_put(&body, elems[i].value, elems[i].value_len);
    }
    err = msv_buf_finish(&body, &body_bytes, &body_len);
    if (err != MSV_OK)
        return err;
    msv_buf_init(&whole, DER_MAX_LEN + 4);
    der_put_header(&whole, DER_SEQUENCE, body_len);
    msv_buf_put(&whole, body_bytes, body_len);
    /* body may hold secret keys */
    msv_secret_free(body_bytes, body_len);
    return msv_buf_finish(&whole, out, out_len);
}
