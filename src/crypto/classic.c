/*
 * Suite classic: the iMessage "pair" envelope, byte for byte (docs/crypto.md).
 *
 *   seed = 11 random bytes
 *   tag  = HMAC-SHA256(seed, P || 0x02 || H(sender) || H(recipient))[0:5]
 *   K    = seed || tag                                   AES-128 key
 *   C    = AES-128-CTR(K, 0^15 || 0x01, P)
 *   R    = RSA-OAEP-SHA1(recipient RSA key, K || C[0:100])
 *   body = R || C[100:]
 *   sig  = ECDSA-P256(SHA-1(body)), DER
 *   wire = 0x02 || u16be len(body) || body || u8 len(sig) || sig
 *
 * A receiver verifies the signature, then decrypts, then recomputes the tag
 * with the sender the signature verified under; every failure is MSV_ERR_AUTH.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/rsa.h>

#include "crypto/internal.h"
#include "missive/util.h"
#include "util/buf.h"

#define SEED_LEN 11
#define TAG_LEN 5
#define KEY_LEN (SEED_LEN + TAG_LEN)
#define INLINE_CT 100 /* ciphertext bytes that ride inside the RSA block */
#define SHA1_LEN 20
#define BODY_MAX 0xFFFFu

static const uint8_t ctr_iv[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

size_t msv_classic_plaintext_max(const struct msv_public_identity *recipient)
{
    size_t k = (size_t)EVP_PKEY_get_size(recipient->rsa_pk);

    return BODY_MAX - k + INLINE_CT;
}

/* tag = HMAC-SHA256(seed, P || 0x02 || H(sender) || H(recipient))[0:5] */
static msv_err compute_tag(const uint8_t seed[SEED_LEN], const uint8_t *pt, size_t pt_len,
                           const struct msv_public_identity *sender,
                           const struct msv_public_identity *recipient, uint8_t tag[TAG_LEN])
{
    static const uint8_t version = MSV_WIRE_CLASSIC;
    const uint8_t *parts[4] = {pt, &version, sender->hash, recipient->hash};
    size_t lens[4] = {pt_len, 1, MSV_IDENTITY_HASH_LEN, MSV_IDENTITY_HASH_LEN};
    uint8_t mac[32];
    msv_err err;

    err = msv_hmac_sha256_parts(seed, SEED_LEN, parts, lens, 4, mac);
    if (err == MSV_OK)
        memcpy(tag, mac, TAG_LEN);
    OPENSSL_cleanse(mac, sizeof(mac));
    return err;
}

/* MGF1 with SHA-1 (RFC 8017 B.2.1), XORed into out. */
static msv_err mgf1_sha1_xor(const uint8_t *seed, size_t seed_len, uint8_t *out, size_t len)
{
    uint8_t block[SHA1_LEN], counter[4];
    size_t done = 0;
    uint32_t i = 0;

    while (done < len) {
        const uint8_t *parts[2] = {seed, counter};
        size_t lens[2] = {seed_len, 4};
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int ok;

        counter[0] = (uint8_t)(i >> 24);
        counter[1] = (uint8_t)(i >> 16);
        counter[2] = (uint8_t)(i >> 8);
        counter[3] = (uint8_t)i;
        if (ctx == NULL)
            return MSV_ERR_NOMEM;
        ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, parts[0], lens[0]) == 1 &&
             EVP_DigestUpdate(ctx, parts[1], lens[1]) == 1 &&
             EVP_DigestFinal_ex(ctx, block, NULL) == 1;
        EVP_MD_CTX_free(ctx);
        if (!ok)
            return MSV_ERR_CRYPTO;
        for (size_t j = 0; j < SHA1_LEN && done < len; j++)
            out[done++] ^= block[j];
        i++;
    }
    return MSV_OK;
}

/*
 * RSAES-OAEP-ENCRYPT (RFC 8017 7.1.1) with SHA-1, MGF1-SHA-1 and an empty
 * label. The encoding is done here so that the seed comes from rng (fixed in
 * known-answer tests); the modular exponentiation is OpenSSL's.
 */
msv_err msv_rsa_oaep_sha1_encrypt(EVP_PKEY *pk, const uint8_t *m, size_t m_len,
                                  const struct msv_rng *rng, uint8_t *out)
{
    size_t k = (size_t)EVP_PKEY_get_size(pk), db_len = k - SHA1_LEN - 1, out_len = k;
    uint8_t em[512];
    uint8_t *seed = em + 1, *db = em + 1 + SHA1_LEN;
    EVP_PKEY_CTX *ctx = NULL;
    msv_err err;

    if (k > sizeof(em) || m_len > k - 2 * SHA1_LEN - 2)
        return MSV_ERR_INVALID;
    memset(em, 0, k);
    err = msv_sha1(NULL, 0, db); /* lHash of the empty label */
    if (err != MSV_OK)
        return err;
    db[db_len - m_len - 1] = 0x01;
    memcpy(db + db_len - m_len, m, m_len);
    rng->fill(rng->ctx, seed, SHA1_LEN);
    err = mgf1_sha1_xor(seed, SHA1_LEN, db, db_len);
    if (err == MSV_OK)
        err = mgf1_sha1_xor(db, db_len, seed, SHA1_LEN);
    if (err != MSV_OK)
        goto out;
    err = MSV_ERR_CRYPTO;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (ctx == NULL || EVP_PKEY_encrypt_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING) != 1)
        goto out;
    if (EVP_PKEY_encrypt(ctx, out, &out_len, em, k) != 1 || out_len != k)
        goto out;
    err = MSV_OK;
out:
    OPENSSL_cleanse(em, sizeof(em));
    EVP_PKEY_CTX_free(ctx);
    return err;
}

/* RSAES-OAEP-DECRYPT with SHA-1/MGF1-SHA-1; OpenSSL's implementation is constant time. */
msv_err msv_rsa_oaep_sha1_decrypt(EVP_PKEY *sk, const uint8_t *in, size_t in_len, uint8_t *out,
                                  size_t *out_len)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, sk, NULL);
    msv_err err = MSV_ERR_AUTH;

    if (ctx == NULL)
        return MSV_ERR_NOMEM;
    if (EVP_PKEY_decrypt_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha1()) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha1()) != 1)
        goto out;
    if (EVP_PKEY_decrypt(ctx, out, out_len, in, in_len) == 1)
        err = MSV_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    return err;
}

msv_err msv_classic_seal(const struct msv_identity *sender,
                         const struct msv_public_identity *recipient, const uint8_t *pt,
                         size_t pt_len, const struct msv_rng *rng, uint8_t **out, size_t *out_len)
{
    size_t k = (size_t)EVP_PKEY_get_size(recipient->rsa_pk);
    size_t inline_len = pt_len < INLINE_CT ? pt_len : INLINE_CT;
    uint8_t key[KEY_LEN + INLINE_CT], sig[72];
    uint8_t *ct = NULL, *rsa_block = NULL;
    size_t sig_len = 0;
    struct msv_buf b;
    msv_err err;

    if (pt_len > msv_classic_plaintext_max(recipient))
        return MSV_ERR_TOO_BIG;
    msv_buf_init(&b, 1 + 2 + BODY_MAX + 1 + 72);
    ct = malloc(pt_len + 1);
    rsa_block = malloc(k);
    err = MSV_ERR_NOMEM;
    if (ct == NULL || rsa_block == NULL)
        goto out;
    rng->fill(rng->ctx, key, SEED_LEN);
    err = compute_tag(key, pt, pt_len, sender->pub, recipient, key + SEED_LEN);
    if (err == MSV_OK)
        err = msv_aes_ctr(key, KEY_LEN, ctr_iv, pt, pt_len, ct);
    if (err != MSV_OK)
        goto out;
    memcpy(key + KEY_LEN, ct, inline_len);
    err = msv_rsa_oaep_sha1_encrypt(recipient->rsa_pk, key, KEY_LEN + inline_len, rng, rsa_block);
    if (err != MSV_OK)
        goto out;
    msv_buf_put_u8(&b, MSV_WIRE_CLASSIC);
    msv_buf_put_u16be(&b, (uint16_t)(k + pt_len - inline_len));
    msv_buf_put(&b, rsa_block, k);
    msv_buf_put(&b, ct + inline_len, pt_len - inline_len);
    if (b.failed) {
        err = b.failed;
        goto out;
    }
    {
        const uint8_t *body = b.data + 3;
        size_t body_len = b.len - 3;

        err = msv_ecdsa_sign(sender->sign_sk, EVP_sha1(), &body, &body_len, 1, sig, &sig_len);
    }
    if (err != MSV_OK)
        goto out;
    msv_buf_put_u8(&b, (uint8_t)sig_len);
    msv_buf_put(&b, sig, sig_len);
    err = msv_buf_finish(&b, out, out_len);
out:
    OPENSSL_cleanse(key, sizeof(key));
    msv_buf_clear(&b);
    free(ct);
    free(rsa_block);
    return err;
}

struct classic_wire {
    const uint8_t *body;
    size_t body_len;
    const uint8_t *sig;
    size_t sig_len;
};

static msv_err parse_wire(const uint8_t *wire, size_t wire_len, struct classic_wire *w)
{
    struct msv_reader r;
    uint8_t version;
    uint16_t body_len;

    msv_reader_init(&r, wire, wire_len);
    if (msv_reader_u8(&r, &version) != MSV_OK || version != MSV_WIRE_CLASSIC)
        return MSV_ERR_AUTH;
    if (msv_reader_u16be(&r, &body_len) != MSV_OK ||
        msv_reader_bytes(&r, body_len, &w->body) != MSV_OK)
        return MSV_ERR_AUTH;
    w->body_len = body_len;
    return msv_read_signature_trailer(&r, &w->sig, &w->sig_len);
}

msv_err msv_classic_verify(const struct msv_public_identity *sender, const uint8_t *wire,
                           size_t wire_len)
{
    struct classic_wire w;

    if (parse_wire(wire, wire_len, &w) != MSV_OK)
        return MSV_ERR_AUTH;
    if (msv_ecdsa_verify(sender->sign_pk, EVP_sha1(), &w.body, &w.body_len, 1, w.sig, w.sig_len) !=
        MSV_OK)
        return MSV_ERR_AUTH;
    return MSV_OK;
}

/* Decrypts a verified body into *pt; checks the tag against sender and recipient. */
static msv_err decrypt_body(const struct msv_identity *recipient,
                            const struct msv_public_identity *sender, const struct classic_wire *w,
                            uint8_t *pt, size_t *pt_len)
{
    size_t k = (size_t)EVP_PKEY_get_size(recipient->pub->rsa_pk);
    uint8_t block[512], tag[TAG_LEN];
    size_t block_len = sizeof(block), inline_len, total;
    msv_err err = MSV_ERR_AUTH;

    if (w->body_len < k ||
        msv_rsa_oaep_sha1_decrypt(recipient->rsa_sk, w->body, k, block, &block_len) != MSV_OK)
        goto out;
    /* The RSA block carries the key and up to 100 ciphertext bytes; only a full block
     * may be followed by more ciphertext. */
    if (block_len < KEY_LEN || block_len > KEY_LEN + INLINE_CT)
        goto out;
    inline_len = block_len - KEY_LEN;
    if (inline_len < INLINE_CT && w->body_len != k)
        goto out;
    total = inline_len + (w->body_len - k);
    memcpy(pt, block + KEY_LEN, inline_len);
    memcpy(pt + inline_len, w->body + k, w->body_len - k);
    if (msv_aes_ctr(block, KEY_LEN, ctr_iv, pt, total, pt) != MSV_OK)
        goto out;
    if (compute_tag(block, pt, total, sender, recipient->pub, tag) != MSV_OK)
        goto out;
    if (!msv_equal_ct(tag, block + SEED_LEN, TAG_LEN))
        goto out;
    *pt_len = total;
    err = MSV_OK;
out:
    OPENSSL_cleanse(block, sizeof(block));
    return err;
}

msv_err msv_classic_open(const struct msv_identity *recipient,
                         const struct msv_public_identity *sender, const uint8_t *wire,
                         size_t wire_len, uint8_t **out, size_t *out_len, uint8_t replay_id[32])
{
    size_t k = (size_t)EVP_PKEY_get_size(recipient->pub->rsa_pk);
    struct classic_wire w;
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    msv_err err;

    /* 1. signature first: nothing is decrypted for an unauthenticated sender */
    if (parse_wire(wire, wire_len, &w) != MSV_OK)
        return MSV_ERR_AUTH;
    if (msv_ecdsa_verify(sender->sign_pk, EVP_sha1(), &w.body, &w.body_len, 1, w.sig, w.sig_len) !=
        MSV_OK)
        return MSV_ERR_AUTH;
    /* 2. decrypt, 3. tag check against the sender just verified */
    pt = malloc(w.body_len + INLINE_CT + 1);
    if (pt == NULL)
        return MSV_ERR_NOMEM;
    err = decrypt_body(recipient, sender, &w, pt, &pt_len);
    if (err != MSV_OK) {
        msv_secret_free(pt, w.body_len + INLINE_CT + 1);
        return MSV_ERR_AUTH;
    }
    err = msv_replay_id(MSV_WIRE_CLASSIC, w.body, k, replay_id);
    if (err != MSV_OK) {
        msv_secret_free(pt, w.body_len + INLINE_CT + 1);
        return err;
    }
    *out = pt;
    *out_len = pt_len;
    return MSV_OK;
}
