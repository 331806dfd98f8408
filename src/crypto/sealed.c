/* Sealed sender: the outer envelope that hides the sender from the relay (missive/sealed.h). */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"

#define ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define HEADER_LEN 33 /* 0x07 || E */
#define INNER_MAX (MSV_PLAINTEXT_MAX + 1024)

static const char salt[] = "MSV-sealed-v1";

static void additional_data(const uint8_t *header, const uint8_t hash[32], uint8_t ad[65])
{
    memcpy(ad, header, HEADER_LEN);
    memcpy(ad + HEADER_LEN, hash, 32);
}

msv_err msv_sealed_wrap(const struct msv_public_identity *recipient, const char *sender_handle,
                        uint64_t sender_device, const uint8_t *envelope, size_t len, uint8_t **out,
                        size_t *out_len)
{
    size_t hl = sender_handle ? strlen(sender_handle) : 0, inner_len = 1 + hl + 8 + len;
    uint8_t eph_sk[32], shared[32], kn[56], ad[65], *inner = NULL, *wire = NULL;
    msv_err err = MSV_ERR_CRYPTO;

    if (recipient == NULL || !(recipient->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) || hl == 0 ||
        hl > 255 || envelope == NULL || len == 0 || out == NULL)
        return MSV_ERR_INVALID;
    if (len > INNER_MAX)
        return MSV_ERR_TOO_BIG;
    inner = malloc(inner_len);
    wire = malloc(HEADER_LEN + inner_len + ABYTES);
    if (inner == NULL || wire == NULL) {
        err = MSV_ERR_NOMEM;
        goto out;
    }
    inner[0] = (uint8_t)hl;
    memcpy(inner + 1, sender_handle, hl);
    msv_put_u64be(inner + 1 + hl, sender_device);
    memcpy(inner + 1 + hl + 8, envelope, len);
    wire[0] = MSV_WIRE_SEALED;
    randombytes_buf(eph_sk, sizeof(eph_sk));
    if (crypto_scalarmult_base(wire + 1, eph_sk) != 0 ||
        crypto_scalarmult(shared, eph_sk, recipient->x_pk) != 0 ||
        msv_x25519_hkdf(shared, wire + 1, recipient->x_pk, salt, kn, sizeof(kn)) != MSV_OK)
        goto out;
    additional_data(wire, recipient->hash, ad);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(wire + HEADER_LEN, NULL, inner, inner_len, ad,
                                                   sizeof(ad), NULL, kn + 32, kn) != 0)
        goto out;
    *out = wire;
    *out_len = HEADER_LEN + inner_len + ABYTES;
    wire = NULL;
    err = MSV_OK;
out:
    sodium_memzero(eph_sk, sizeof(eph_sk));
    sodium_memzero(shared, sizeof(shared));
    sodium_memzero(kn, sizeof(kn));
    msv_secret_free(inner, inner_len);
    free(wire);
    return err;
}

msv_err msv_sealed_unwrap(const struct msv_identity *recipient, const uint8_t *wire, size_t len,
                          char handle[256], uint64_t *sender_device, uint8_t **inner_buf,
                          const uint8_t **envelope, size_t *envelope_len)
{
    uint8_t shared[32], kn[56], ad[65], *inner = NULL;
    size_t inner_len, hl;
    msv_err err = MSV_ERR_AUTH;

    if (recipient == NULL || recipient->modern == NULL || wire == NULL)
        return MSV_ERR_INVALID;
    if (len < HEADER_LEN + ABYTES + 1 + 1 + 8 + 1 || wire[0] != MSV_WIRE_SEALED ||
        len - HEADER_LEN - ABYTES > INNER_MAX + 1 + 255 + 8)
        return MSV_ERR_AUTH;
    inner_len = len - HEADER_LEN - ABYTES;
    if (crypto_scalarmult(shared, recipient->modern->x_sk, wire + 1) != 0 ||
        msv_x25519_hkdf(shared, wire + 1, recipient->pub->x_pk, salt, kn, sizeof(kn)) != MSV_OK)
        goto out;
    inner = malloc(inner_len);
    if (inner == NULL) {
        err = MSV_ERR_NOMEM;
        goto out;
    }
    additional_data(wire, recipient->pub->hash, ad);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(inner, NULL, NULL, wire + HEADER_LEN,
                                                   len - HEADER_LEN, ad, sizeof(ad), kn + 32,
                                                   kn) != 0)
        goto out;
    hl = inner[0];
    if (hl == 0 || 1 + hl + 8 >= inner_len || memchr(inner + 1, 0, hl) != NULL)
        goto out;
    memcpy(handle, inner + 1, hl);
    handle[hl] = '\0';
    *sender_device = msv_get_u64be(inner + 1 + hl);
    *envelope = inner + 1 + hl + 8;
    *envelope_len = inner_len - 1 - hl - 8;
    *inner_buf = inner;
    inner = NULL;
    err = MSV_OK;
out:
    sodium_memzero(shared, sizeof(shared));
    sodium_memzero(kn, sizeof(kn));
    msv_secret_free(inner, inner_len);
    return err;
}
