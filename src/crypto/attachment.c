/*
 * Attachment encryption: AES-256-CTR under a fresh random key per file. The
 * key is never reused, so the counter starts at zero; integrity comes from
 * the SHA-256 of the ciphertext that the signed message carries, checked
 * before anything is decrypted. SHA-1 is computed too because the classic
 * message format names it.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"

struct msv_attachment_cipher {
    EVP_CIPHER_CTX *ctx;
};

struct msv_attachment_hasher {
    EVP_MD_CTX *sha256;
    EVP_MD_CTX *sha1;
    int finished;
};

void msv_attachment_key_generate(uint8_t key[MSV_ATTACHMENT_KEY_LEN])
{
    randombytes_buf(key, MSV_ATTACHMENT_KEY_LEN);
}

msv_err msv_attachment_cipher_new(const uint8_t key[MSV_ATTACHMENT_KEY_LEN],
                                  struct msv_attachment_cipher **out)
{
    static const uint8_t iv[16];
    struct msv_attachment_cipher *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return MSV_ERR_NOMEM;
    c->ctx = EVP_CIPHER_CTX_new();
    if (c->ctx == NULL || EVP_EncryptInit_ex(c->ctx, EVP_aes_256_ctr(), NULL, key, iv) != 1) {
        msv_attachment_cipher_free(c);
        return MSV_ERR_CRYPTO;
    }
    *out = c;
    return MSV_OK;
}

msv_err msv_attachment_cipher_update(struct msv_attachment_cipher *c, const uint8_t *in, size_t len,
                                     uint8_t *out)
{
    /* EVP takes int lengths: go in pieces of 1 GiB at most */
    while (len > 0) {
        int piece = len > (1u << 30) ? (1 << 30) : (int)len, outl = 0;

        if (EVP_EncryptUpdate(c->ctx, out, &outl, in, piece) != 1 || outl != piece)
            return MSV_ERR_CRYPTO;
        in += piece;
        out += piece;
        len -= (size_t)piece;
    }
    return MSV_OK;
}

void msv_attachment_cipher_free(struct msv_attachment_cipher *c)
{
    if (c == NULL)
        return;
    EVP_CIPHER_CTX_free(c->ctx); /* wipes the key schedule */
    free(c);
}

msv_err msv_attachment_hasher_new(struct msv_attachment_hasher **out)
{
    struct msv_attachment_hasher *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return MSV_ERR_NOMEM;
    h->sha256 = EVP_MD_CTX_new();
    h->sha1 = EVP_MD_CTX_new();
    if (h->sha256 == NULL || h->sha1 == NULL ||
        EVP_DigestInit_ex(h->sha256, EVP_sha256(), NULL) != 1 ||
        EVP_DigestInit_ex(h->sha1, EVP_sha1(), NULL) != 1) {
        msv_attachment_hasher_free(h);
        return MSV_ERR_CRYPTO;
    }
    *out = h;
    return MSV_OK;
}

msv_err msv_attachment_hasher_update(struct msv_attachment_hasher *h, const uint8_t *in, size_t len)
{
    if (h->finished)
        return MSV_ERR_INVALID;
    if (EVP_DigestUpdate(h->sha256, in, len) != 1 || EVP_DigestUpdate(h->sha1, in, len) != 1)
        return MSV_ERR_CRYPTO;
    return MSV_OK;
}

msv_err msv_attachment_hasher_final(struct msv_attachment_hasher *h,
                                    struct msv_attachment_digest *digest)
{
    if (h->finished)
        return MSV_ERR_INVALID;
    h->finished = 1;
    if (EVP_DigestFinal_ex(h->sha256, digest->sha256, NULL) != 1 ||
        EVP_DigestFinal_ex(h->sha1, digest->sha1, NULL) != 1)
        return MSV_ERR_CRYPTO;
    return MSV_OK;
}

void msv_attachment_hasher_free(struct msv_attachment_hasher *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->sha256);
    EVP_MD_CTX_free(h->sha1);
    free(h);
}

msv_err msv_attachment_encrypt(const uint8_t key[MSV_ATTACHMENT_KEY_LEN], const uint8_t *pt,
                               size_t len, uint8_t *ct, struct msv_attachment_digest *digest)
{
    struct msv_attachment_cipher *c = NULL;
    struct msv_attachment_hasher *h = NULL;
    msv_err err;

    err = msv_attachment_cipher_new(key, &c);
    if (err == MSV_OK)
        err = msv_attachment_hasher_new(&h);
    if (err == MSV_OK)
        err = msv_attachment_cipher_update(c, pt, len, ct);
    if (err == MSV_OK)
        err = msv_attachment_hasher_update(h, ct, len);
    if (err == MSV_OK)
        err = msv_attachment_hasher_final(h, digest);
    msv_attachment_cipher_free(c);
    msv_attachment_hasher_free(h);
    return err;
}

msv_err msv_attachment_decrypt(const uint8_t key[MSV_ATTACHMENT_KEY_LEN], const uint8_t sha256[32],
                               const uint8_t *ct, size_t len, uint8_t *pt)
{
    struct msv_attachment_cipher *c = NULL;
    uint8_t actual[32];
    msv_err err;

    err = msv_sha256(ct, len, actual);
    if (err != MSV_OK)
        return err;
    if (!msv_equal_ct(actual, sha256, sizeof(actual)))
        return MSV_ERR_AUTH;
    err = msv_attachment_cipher_new(key, &c);
    if (err == MSV_OK)
        err = msv_attachment_cipher_update(c, ct, len, pt);
    msv_attachment_cipher_free(c);
    return err;
}
