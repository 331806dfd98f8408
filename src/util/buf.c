#include "util/buf.h"

#include <stdlib.h>
#include <string.h>

#include "missive/util.h"

void msv_buf_init(struct msv_buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void msv_buf_clear(struct msv_buf *b)
{
    msv_secret_free(b->data, b->cap);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

/* Grows geometrically; the old block is wiped because buffers may hold secrets. */
static msv_err buf_reserve(struct msv_buf *b, size_t extra)
{
    size_t need, cap;
    uint8_t *p;

    if (extra > b->max - b->len)
        return MSV_ERR_TOO_BIG;
    need = b->len + extra;
    if (need <= b->cap)
        return MSV_OK;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max)
        cap = b->max;
    p = malloc(cap);
    if (p == NULL)
        return MSV_ERR_NOMEM;
    if (b->len > 0)
        memcpy(p, b->data, b->len);
    msv_secret_free(b->data, b->cap);
    b->data = p;
    b->cap = cap;
    return MSV_OK;
}

msv_err msv_buf_put(struct msv_buf *b, const void *p, size_t n)
{
    msv_err err;

    if (b->failed)
        return b->failed;
    if (n == 0)
        return MSV_OK;
    err = buf_reserve(b, n);
    if (err != MSV_OK) {
        b->failed = err;
        return err;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return MSV_OK;
}

msv_err msv_buf_put_u8(struct msv_buf *b, uint8_t v)
{
    return msv_buf_put(b, &v, 1);
}

msv_err msv_buf_put_u16be(struct msv_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};

    return msv_buf_put(b, x, sizeof(x));
}

msv_err msv_buf_put_u32be(struct msv_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

    return msv_buf_put(b, x, sizeof(x));
}

msv_err msv_buf_finish(struct msv_buf *b, uint8_t **out, size_t *out_len)
{
    msv_err err = b->failed;

    if (err == MSV_OK && b->data == NULL) {
        /* An empty result is still a valid allocation, so callers can free() it. */
        b->data = malloc(1);
        b->cap = 1;
        if (b->data == NULL)
            err = MSV_ERR_NOMEM;
    }
    if (err != MSV_OK) {
        msv_buf_clear(b);
        return err;
    }
    *out = b->data;
    *out_len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return MSV_OK;
}

void msv_reader_init(struct msv_reader *r, const uint8_t *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->off = 0;
}

size_t msv_reader_left(const struct msv_reader *r)
{
    return r->len - r->off;
}

msv_err msv_reader_bytes(struct msv_reader *r, size_t n, const uint8_t **p)
{
    if (n > msv_reader_left(r))
        return MSV_ERR_PARSE;
    *p = r->data + r->off;
    r->off += n;
    return MSV_OK;
}

msv_err msv_reader_u8(struct msv_reader *r, uint8_t *v)
{
    const uint8_t *p;
    msv_err err = msv_reader_bytes(r, 1, &p);

    if (err == MSV_OK)
        *v = p[0];
    return err;
}

msv_err msv_reader_u16be(struct msv_reader *r, uint16_t *v)
{
    const uint8_t *p;
    msv_err err = msv_reader_bytes(r, 2, &p);

    if (err == MSV_OK)
        *v = (uint16_t)((p[0] << 8) | p[1]);
    return err;
}

msv_err msv_reader_u32be(struct msv_reader *r, uint32_t *v)
{
    const uint8_t *p;
    msv_err err = msv_reader_bytes(r, 4, &p);

    if (err == MSV_OK)
        *v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return err;
}
