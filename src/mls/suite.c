/*
 * The primitives of cipher suites 1 and 3 (RFC 9420 5.1, 17.1): SHA-256,
 * HMAC-SHA256 and HKDF (RFC 5869) on OpenSSL; Ed25519 on libsodium;
 * AES-128-GCM on OpenSSL and ChaCha20-Poly1305 (RFC 8439) on libsodium; and
 * the labelled derivations built from them (5.1.3, 5.2, 8, 9).
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "missive/util.h"
#include "mls/mls.h"

/* RFC 9420 5.1.3: every label is prefixed with the protocol's name and version. */
static const char label_prefix[] = "MLS 1.0 ";

int msv_mls_suite_is_supported(uint16_t suite)
{
    return suite == MSV_MLS_SUITE_X25519_AES128GCM ||
           suite == MSV_MLS_SUITE_X25519_CHACHA20POLY1305;
}

size_t msv_mls_suite_nk(enum msv_mls_suite suite)
{
    return suite == MSV_MLS_SUITE_X25519_AES128GCM ? 16 : 32;
}

msv_err msv_mls_hash(const uint8_t *in, size_t len, uint8_t out[MSV_MLS_NH])
{
    return EVP_Digest(in, len, out, NULL, EVP_sha256(), NULL) == 1 ? MSV_OK : MSV_ERR_CRYPTO;
}

msv_err msv_mls_mac(const uint8_t *key, size_t key_len, const uint8_t *in, size_t len,
                    uint8_t out[MSV_MLS_NH])
{
    static const uint8_t zero;
    size_t out_len = 0;

    /* EVP_Q_mac wants a key pointer even when the key is empty. */
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key_len > 0 ? key : &zero, key_len, in, len,
                  out, MSV_MLS_NH, &out_len) == NULL ||
        out_len != MSV_MLS_NH)
        return MSV_ERR_CRYPTO;
    return MSV_OK;
}

msv_err msv_mls_extract(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                        uint8_t out[MSV_MLS_NH])
{
    /* HMAC pads a short key with zeros, so an empty salt is Nh zero bytes (RFC 5869 2.2). */
    return msv_mls_mac(salt, salt_len, ikm, ikm_len, out);
}

msv_err msv_mls_expand(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                       uint8_t *out, size_t out_len)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    uint8_t t[MSV_MLS_NH];
    size_t t_len = 0, done = 0;
    msv_err err = MSV_ERR_CRYPTO;

    if (out_len > 255 * MSV_MLS_NH) {
        EVP_MAC_free(mac);
        return MSV_ERR_INVALID;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (mac == NULL || (ctx = EVP_MAC_CTX_new(mac)) == NULL)
        goto out;
    /* T(i) = HMAC(PRK, T(i-1) || info || i) */
    for (uint8_t i = 1; done < out_len; i++) {
        size_t n;

        if (EVP_MAC_init(ctx, prk, prk_len, params) != 1 || EVP_MAC_update(ctx, t, t_len) != 1 ||
            EVP_MAC_update(ctx, info, info_len) != 1 || EVP_MAC_update(ctx, &i, 1) != 1 ||
            EVP_MAC_final(ctx, t, &n, sizeof(t)) != 1)
            goto out;
        t_len = n;
        n = out_len - done < t_len ? out_len - done : t_len;
        memcpy(out + done, t, n);
        done += n;
    }
    err = MSV_OK;
out:
    sodium_memzero(t, sizeof(t));
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return err;
}

/* opaque label<V> = "MLS 1.0 " || label */
static void put_label(struct msv_buf *w, const uint8_t *label, size_t label_len)
{
    msv_mls_put_varint(w, sizeof(label_prefix) - 1 + label_len);
    (void)msv_buf_put(w, (const uint8_t *)label_prefix, sizeof(label_prefix) - 1);
    (void)msv_buf_put(w, label, label_len);
}

msv_err msv_mls_expand_label(const uint8_t *secret, size_t secret_len, const uint8_t *label,
                             size_t label_len, const uint8_t *context, size_t context_len,
                             uint8_t *out, size_t out_len)
{
    struct msv_buf w;
    uint8_t *info = NULL;
    size_t info_len = 0;
    msv_err err;

    if (out_len > UINT16_MAX)
        return MSV_ERR_INVALID;
    /* KDFLabel: uint16 length; opaque label<V>; opaque context<V> */
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, (uint16_t)out_len);
    put_label(&w, label, label_len);
    msv_mls_put_vec(&w, context, context_len);
    err = msv_buf_finish(&w, &info, &info_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_expand(secret, secret_len, info, info_len, out, out_len);
    msv_secret_free(info, info_len);
    return err;
}

msv_err msv_mls_derive_secret(const uint8_t *secret, size_t secret_len, const char *label,
                              uint8_t out[MSV_MLS_NH])
{
    return msv_mls_expand_label(secret, secret_len, (const uint8_t *)label, strlen(label), NULL, 0,
                                out, MSV_MLS_NH);
}

msv_err msv_mls_derive_tree_secret(const uint8_t *secret, size_t secret_len, const char *label,
                                   uint32_t generation, uint8_t *out, size_t out_len)
{
    uint8_t gen[4] = {(uint8_t)(generation >> 24), (uint8_t)(generation >> 16),
                      (uint8_t)(generation >> 8), (uint8_t)generation};

    return msv_mls_expand_label(secret, secret_len, (const uint8_t *)label, strlen(label), gen,
                                sizeof(gen), out, out_len);
}

msv_err msv_mls_ref_hash(const uint8_t *label, size_t label_len, const uint8_t *value,
                         size_t value_len, uint8_t out[MSV_MLS_NH])
{
    struct msv_buf w;
    uint8_t *in = NULL;
    size_t in_len = 0;
    msv_err err;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    msv_mls_put_vec(&w, label, label_len);
    msv_mls_put_vec(&w, value, value_len);
    err = msv_buf_finish(&w, &in, &in_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_hash(in, in_len, out);
    msv_secret_free(in, in_len);
    return err;
}

/* SignContent: opaque label<V> = "MLS 1.0 " || label; opaque content<V> */
static msv_err sign_content(const char *label, const uint8_t *content, size_t content_len,
                            uint8_t **out, size_t *out_len)
{
    struct msv_buf w;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX + 64);
    put_label(&w, (const uint8_t *)label, strlen(label));
    msv_mls_put_vec(&w, content, content_len);
    return msv_buf_finish(&w, out, out_len);
}

msv_err msv_mls_sign_label(const uint8_t seed[32], const char *label, const uint8_t *content,
                           size_t content_len, uint8_t sig[MSV_MLS_SIG_LEN])
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    uint8_t *tbs = NULL;
    size_t tbs_len = 0;
    msv_err err;

    err = sign_content(label, content, content_len, &tbs, &tbs_len);
    if (err != MSV_OK)
        return err;
    err = MSV_ERR_CRYPTO;
    if (crypto_sign_seed_keypair(pk, sk, seed) == 0 &&
        crypto_sign_detached(sig, NULL, tbs, tbs_len, sk) == 0)
        err = MSV_OK;
    sodium_memzero(sk, sizeof(sk));
    msv_secret_free(tbs, tbs_len);
    return err;
}

msv_err msv_mls_verify_label(const uint8_t *pk, size_t pk_len, const char *label,
                             const uint8_t *content, size_t content_len, const uint8_t *sig,
                             size_t sig_len)
{
    uint8_t *tbs = NULL;
    size_t tbs_len = 0;
    msv_err err;

    if (pk_len != crypto_sign_PUBLICKEYBYTES || sig_len != MSV_MLS_SIG_LEN)
        return MSV_ERR_AUTH;
    err = sign_content(label, content, content_len, &tbs, &tbs_len);
    if (err != MSV_OK)
        return err;
    /* libsodium rejects non-canonical S and small-order keys (RFC 8032 strict checks) */
    err = crypto_sign_verify_detached(sig, tbs, tbs_len, pk) == 0 ? MSV_OK : MSV_ERR_AUTH;
    msv_secret_free(tbs, tbs_len);
    return err;
}

static msv_err aes_gcm(int enc, const uint8_t *key, const uint8_t nonce[MSV_MLS_NN],
                       const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t in_len,
                       uint8_t *out)
{
    EVP_CIPHER_CTX *ctx;
    msv_err err = enc ? MSV_ERR_CRYPTO : MSV_ERR_AUTH;
    size_t body = enc ? in_len : in_len - MSV_MLS_TAG_LEN;
    int n;

    if (in_len > INT32_MAX - MSV_MLS_TAG_LEN || aad_len > INT32_MAX)
        return MSV_ERR_TOO_BIG;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return MSV_ERR_NOMEM;
    if (EVP_CipherInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, nonce, enc) != 1)
        goto out;
    if (aad_len > 0 && EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
        goto out;
    if (body > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)body) != 1)
        goto out;
    if (!enc &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, MSV_MLS_TAG_LEN, (void *)(in + body)) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, out + body, &n) != 1)
        goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, MSV_MLS_TAG_LEN, out + body) != 1)
        goto out;
    err = MSV_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return err;
}

msv_err msv_mls_aead_seal(enum msv_mls_suite suite, const uint8_t *key,
                          const uint8_t nonce[MSV_MLS_NN], const uint8_t *aad, size_t aad_len,
                          const uint8_t *pt, size_t pt_len, uint8_t *ct)
{
    if (suite == MSV_MLS_SUITE_X25519_AES128GCM)
        return aes_gcm(1, key, nonce, aad, aad_len, pt, pt_len, ct);
    if (crypto_aead_chacha20poly1305_ietf_encrypt(ct, NULL, pt, pt_len, aad, aad_len, NULL, nonce,
                                                  key) != 0)
        return MSV_ERR_CRYPTO;
    return MSV_OK;
}

msv_err msv_mls_aead_open(enum msv_mls_suite suite, const uint8_t *key,
                          const uint8_t nonce[MSV_MLS_NN], const uint8_t *aad, size_t aad_len,
                          const uint8_t *ct, size_t ct_len, uint8_t *pt)
{
    if (ct_len < MSV_MLS_TAG_LEN)
        return MSV_ERR_AUTH;
    if (suite == MSV_MLS_SUITE_X25519_AES128GCM)
        return aes_gcm(0, key, nonce, aad, aad_len, ct, ct_len, pt) == MSV_OK ? MSV_OK
                                                                              : MSV_ERR_AUTH;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(pt, NULL, NULL, ct, ct_len, aad, aad_len, nonce,
                                                  key) != 0)
        return MSV_ERR_AUTH;
    return MSV_OK;
}
