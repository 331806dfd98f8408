/*
 * The TLS presentation language as RFC 9420 2.1 uses it, over util/buf.h:
 * big-endian integers, and variable-size vectors whose length is a 1-, 2- or
 * 4-byte prefix (the top two bits of the first byte give the size: 00, 01,
 * 10; 11 is invalid). A length must use the shortest form (2.1.2), so that
 * every structure has exactly one encoding.
 */
#include <string.h>

#include "mls/mls.h"

void msv_mls_put_u64(struct msv_buf *w, uint64_t v)
{
    (void)msv_buf_put_u32be(w, (uint32_t)(v >> 32));
    (void)msv_buf_put_u32be(w, (uint32_t)v);
}

static size_t varint_size(uint64_t v)
{
    if (v < 0x40)
        return 1;
    if (v < 0x4000)
        return 2;
    return 4;
}

/* The prefix of length v (at most 2^30-1) in out; returns its size. */
static size_t varint_encode(uint64_t v, uint8_t out[4])
{
    size_t k = varint_size(v);
    static const uint8_t marker[5] = {0, 0x00, 0x40, 0, 0x80};

    for (size_t i = 0; i < k; i++)
        out[i] = (uint8_t)(v >> (8 * (k - 1 - i)));
    out[0] |= marker[k];
    return k;
}

void msv_mls_put_varint(struct msv_buf *w, uint64_t v)
{
    uint8_t b[4];

    if (v > MSV_MLS_VEC_MAX) {
        if (!w->failed)
            w->failed = MSV_ERR_TOO_BIG;
        return;
    }
    (void)msv_buf_put(w, b, varint_encode(v, b));
}

void msv_mls_put_vec(struct msv_buf *w, const uint8_t *p, size_t n)
{
    msv_mls_put_varint(w, n);
    (void)msv_buf_put(w, p, n);
}

size_t msv_mls_vec_begin(const struct msv_buf *w)
{
    return w->len;
}

void msv_mls_vec_end(struct msv_buf *w, size_t mark)
{
    uint8_t prefix[4];
    size_t n, k;

    if (w->failed)
        return;
    n = w->len - mark;
    if (n > MSV_MLS_VEC_MAX) {
        w->failed = MSV_ERR_TOO_BIG;
        return;
    }
    k = varint_encode(n, prefix);
    /* grow by k bytes, then move the contents up to make room for the prefix */
    if (msv_buf_put(w, prefix, k) != MSV_OK)
        return;
    memmove(w->data + mark + k, w->data + mark, n);
    memcpy(w->data + mark, prefix, k);
}

int msv_mls_reader_is_done(const struct msv_reader *r)
{
    return msv_reader_left(r) == 0;
}

msv_err msv_mls_get_u64(struct msv_reader *r, uint64_t *v)
{
    const uint8_t *p;
    uint64_t x = 0;

    if (msv_reader_bytes(r, 8, &p) != MSV_OK)
        return MSV_ERR_PARSE;
    for (size_t i = 0; i < 8; i++)
        x = x << 8 | p[i];
    *v = x;
    return MSV_OK;
}

msv_err msv_mls_get_varint(struct msv_reader *r, uint32_t *v)
{
    const uint8_t *p;
    size_t k;
    uint32_t x;

    if (msv_reader_left(r) == 0)
        return MSV_ERR_PARSE;
    k = (size_t)1 << (r->data[r->off] >> 6);
    if (k == 8 || k > msv_reader_left(r))
        return MSV_ERR_PARSE;
    p = r->data + r->off;
    x = p[0] & 0x3f;
    for (size_t i = 1; i < k; i++)
        x = x << 8 | p[i];
    if (varint_size(x) != k)
        return MSV_ERR_PARSE; /* RFC 9420 2.1.2: the minimum number of bytes */
    r->off += k;
    *v = x;
    return MSV_OK;
}

msv_err msv_mls_get_vec(struct msv_reader *r, const uint8_t **p, size_t *n)
{
    size_t start = r->off;
    uint32_t len;

    if (msv_mls_get_varint(r, &len) != MSV_OK)
        return MSV_ERR_PARSE;
    if (msv_reader_bytes(r, len, p) != MSV_OK) {
        r->off = start;
        return MSV_ERR_PARSE;
    }
    *n = len;
    return MSV_OK;
}

msv_err msv_mls_get_sub(struct msv_reader *r, struct msv_reader *sub)
{
    const uint8_t *p;
    size_t n;

    if (msv_mls_get_vec(r, &p, &n) != MSV_OK)
        return MSV_ERR_PARSE;
    msv_reader_init(sub, p, n);
    return MSV_OK;
}

msv_err msv_mls_get_optional(struct msv_reader *r, int *present)
{
    if (msv_reader_left(r) == 0 || r->data[r->off] > 1)
        return MSV_ERR_PARSE;
    *present = r->data[r->off++];
    return MSV_OK;
}
