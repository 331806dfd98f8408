#include "wire/frame.h"

#include <stdlib.h>
#include <string.h>

msv_err msv_frame_header_write(size_t body_len, size_t max, uint8_t hdr[MSV_FRAME_HEADER_LEN])
{
    if (body_len == 0)
        return MSV_ERR_INVALID;
    if (body_len > max || body_len > MSV_FRAME_MAX_LIMIT)
        return MSV_ERR_TOO_BIG;
    hdr[0] = MSV_PROTOCOL_VERSION;
    hdr[1] = (uint8_t)(body_len >> 16);
    hdr[2] = (uint8_t)(body_len >> 8);
    hdr[3] = (uint8_t)body_len;
    return MSV_OK;
}

msv_err msv_frame_split(const uint8_t *buf, size_t len, size_t max, const uint8_t **body,
                        size_t *body_len, size_t *consumed)
{
    size_t n;

    /* The version byte is judged as soon as it arrives, the length as soon as it is
     * complete, so a peer cannot make us wait for (or buffer) a frame we will refuse. */
    if (len >= 1 && buf[0] != MSV_PROTOCOL_VERSION)
        return MSV_ERR_UNSUPPORTED;
    if (len < MSV_FRAME_HEADER_LEN)
        return MSV_ERR_AGAIN;
    n = (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3];
    if (n == 0)
        return MSV_ERR_PARSE;
    if (n > max)
        return MSV_ERR_TOO_BIG;
    if (len - MSV_FRAME_HEADER_LEN < n)
        return MSV_ERR_AGAIN;
    *body = buf + MSV_FRAME_HEADER_LEN;
    *body_len = n;
    *consumed = MSV_FRAME_HEADER_LEN + n;
    return MSV_OK;
}

msv_err msv_frame_decode(const uint8_t *body, size_t len, msv_frame **out)
{
    msv_frame *f = msv__wire__frame__unpack(NULL, len, body);

    if (f == NULL)
        return MSV_ERR_PARSE;
    if (f->body_case == MSV__WIRE__FRAME__BODY__NOT_SET) {
        msv__wire__frame__free_unpacked(f, NULL);
        return MSV_ERR_PARSE;
    }
    *out = f;
    return MSV_OK;
}

void msv_frame_free(msv_frame *f)
{
    if (f != NULL)
        msv__wire__frame__free_unpacked(f, NULL);
}

msv_err msv_frame_encode(const msv_frame *f, size_t max, uint8_t **out, size_t *out_len)
{
    size_t n = msv__wire__frame__get_packed_size(f);
    uint8_t *buf;
    msv_err err;

    if (f->body_case == MSV__WIRE__FRAME__BODY__NOT_SET)
        return MSV_ERR_INVALID;
    if (n > max || n > MSV_FRAME_MAX_LIMIT)
        return MSV_ERR_TOO_BIG;
    buf = malloc(MSV_FRAME_HEADER_LEN + n);
    if (buf == NULL)
        return MSV_ERR_NOMEM;
    err = msv_frame_header_write(n, max, buf);
    if (err != MSV_OK) {
        free(buf);
        return err;
    }
    if (msv__wire__frame__pack(f, buf + MSV_FRAME_HEADER_LEN) != n) {
        free(buf);
        return MSV_ERR_INVALID;
    }
    *out = buf;
    *out_len = MSV_FRAME_HEADER_LEN + n;
    return MSV_OK;
}

msv_err msv_auth_message(SSL *ssl, const uint8_t *nonce, size_t nonce_len,
                         uint8_t out[MSV_AUTH_MESSAGE_LEN])
{
    static const char context[] = "MSV-auth-v1", label[] = "EXPORTER-missive-auth";

    if (nonce_len != 32)
        return MSV_ERR_PARSE;
    memcpy(out, context, sizeof(context) - 1);
    memcpy(out + sizeof(context) - 1, nonce, 32);
    if (ssl == NULL || SSL_export_keying_material(ssl, out + sizeof(context) - 1 + 32, 32, label,
                                                  sizeof(label) - 1, NULL, 0, 0) != 1)
        return MSV_ERR_CRYPTO;
    return MSV_OK;
}
