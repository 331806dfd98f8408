/*
 * Thin wrappers over OpenSSL 3 for the primitives the suites use, so that
 * the suite files read like their specifications and every OpenSSL failure
 * becomes one msv_err.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"

static void system_fill(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    randombytes_buf(out, n);
}

const struct msv_rng msv_rng_system = {system_fill, NULL};

msv_err msv_digest_parts(const EVP_MD *md, const uint8_t *const *parts, const size_t *lens,
                         size_t n, uint8_t *out, size_t out_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    msv_err err = MSV_ERR_CRYPTO;

    if (ctx == NULL)
        return MSV_ERR_NOMEM;
    if (EVP_DigestInit_ex(ctx, md, NULL) != 1)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (EVP_DigestUpdate(ctx, parts[i], lens[i]) != 1)
            goto out;
    }
    if ((EVP_MD_get_flags(md) & EVP_MD_FLAG_XOF) != 0) {
        if (EVP_DigestFinalXOF(ctx, out, out_len) != 1)
            goto out;
    } else if (EVP_DigestFinal_ex(ctx, out, NULL) != 1) {
        goto out;
    }
    err = MSV_OK;
out:
    EVP_MD_CTX_free(ctx);
    return err;
}

static msv_err digest_parts(const EVP_MD *md, const uint8_t *const *parts, const size_t *lens,
                            size_t n, uint8_t *out)
{
    return msv_digest_parts(md, parts, lens, n, out, (size_t)EVP_MD_get_size(md));
}

msv_err msv_sha256_parts(const uint8_t *const *parts, const size_t *lens, size_t n, uint8_t out[32])
{
    return digest_parts(EVP_sha256(), parts, lens, n, out);
}

msv_err msv_sha256(const uint8_t *in, size_t len, uint8_t out[32])
{
    return digest_parts(EVP_sha256(), &in, &len, 1, out);
}

msv_err msv_sha1(const uint8_t *in, size_t len, uint8_t out[20])
{
    return digest_parts(EVP_sha1(), &in, &len, 1, out);
}

msv_err msv_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                        const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = NULL;
    OSSL_PARAM params[5], *p = params;
    msv_err err = MSV_ERR_CRYPTO;

    if (kdf == NULL)
        return MSV_ERR_CRYPTO;
    ctx = EVP_KDF_CTX_new(kdf);
    if (ctx == NULL)
        goto out;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    /* OpenSSL treats an absent salt as HashLen zero bytes, as RFC 5869 2.2 says. */
    if (salt_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, out, out_len, params) != 1)
        goto out;
    err = MSV_OK;
out:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return err;
}

msv_err msv_x25519_hkdf(const uint8_t shared[32], const uint8_t eph[32],
                        const uint8_t recipient[32], const char *salt, uint8_t *out, size_t out_len)
{
    uint8_t info[64];

    memcpy(info, eph, 32);
    memcpy(info + 32, recipient, 32);
    return msv_hkdf_sha256(shared, 32, (const uint8_t *)salt, strlen(salt), info, sizeof(info), out,
                           out_len);
}

msv_err msv_aes_ctr(const uint8_t *key, size_t key_len, const uint8_t iv[16], const uint8_t *in,
                    size_t len, uint8_t *out)
{
    const EVP_CIPHER *cipher = key_len == 16 ? EVP_aes_128_ctr() : EVP_aes_256_ctr();
    EVP_CIPHER_CTX *ctx;
    msv_err err = MSV_ERR_CRYPTO;
    int outl;

    if ((key_len != 16 && key_len != 32) || len > INT32_MAX)
        return MSV_ERR_INVALID;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return MSV_ERR_NOMEM;
    if (EVP_EncryptInit_ex(ctx, cipher, NULL, key, iv) != 1)
        goto out;
    if (len > 0 && EVP_EncryptUpdate(ctx, out, &outl, in, (int)len) != 1)
        goto out;
    err = MSV_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return err;
}

/* P-256 group order n, big-endian (SEC 2, 2.4.2). */
static const uint8_t p256_order[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
};

/* 1 if a < b for big-endian 32-byte numbers; branches only on public loop indices. */
static int be32_less(const uint8_t a[32], const uint8_t b[32])
{
    int lt = 0, gt = 0;

    for (int i = 0; i < 32; i++) {
        int x = a[i], y = b[i];
        int d_lt = ((x - y) >> 8) & 1; /* x < y */
        int d_gt = ((y - x) >> 8) & 1; /* x > y */

        lt |= d_lt & ~gt & 1;
        gt |= d_gt & ~lt & 1;
    }
    return lt;
}

msv_err msv_p256_random_scalar(const struct msv_rng *rng, uint8_t scalar[MSV_P256_SCALAR_LEN])
{
    static const uint8_t zero[32];

    /* Each draw is rejected with probability about 2^-32, so this ends. */
    for (;;) {
        rng->fill(rng->ctx, scalar, MSV_P256_SCALAR_LEN);
        if (be32_less(scalar, p256_order) && !msv_equal_ct(scalar, zero, 32))
            return MSV_OK;
    }
}

static msv_err p256_build(const uint8_t *scalar, const uint8_t *point, size_t point_len,
                          EVP_PKEY **out)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *priv = NULL;
    msv_err err = MSV_ERR_CRYPTO;
    int selection = scalar ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY;

    if (bld == NULL)
        return MSV_ERR_NOMEM;
    if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, SN_X9_62_prime256v1, 0))
        goto out;
    if (!OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, point_len))
        goto out;
    if (scalar != NULL) {
        priv = BN_secure_new();
        if (priv == NULL || BN_bin2bn(scalar, MSV_P256_SCALAR_LEN, priv) == NULL)
            goto out;
        if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv))
            goto out;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1)
        goto out;
    /* fromdata decodes the point with EC_POINT_oct2point, which rejects points off the curve */
    if (EVP_PKEY_fromdata(ctx, out, selection, params) != 1) {
        err = MSV_ERR_PARSE;
        goto out;
    }
    err = MSV_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(priv);
    return err;
}

msv_err msv_p256_from_scalar(const uint8_t scalar[MSV_P256_SCALAR_LEN], EVP_PKEY **out,
                             uint8_t point[MSV_P256_POINT_LEN])
{
    EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    EC_POINT *pub = NULL;
    BIGNUM *k = BN_secure_new();
    uint8_t pt[MSV_P256_POINT_LEN];
    msv_err err = MSV_ERR_CRYPTO;

    if (group == NULL || k == NULL)
        goto out;
    pub = EC_POINT_new(group);
    if (pub == NULL || BN_bin2bn(scalar, MSV_P256_SCALAR_LEN, k) == NULL)
        goto out;
    BN_set_flags(k, BN_FLG_CONSTTIME);
    if (BN_is_zero(k) || BN_cmp(k, EC_GROUP_get0_order(group)) >= 0) {
        err = MSV_ERR_PARSE;
        goto out;
    }
    if (EC_POINT_mul(group, pub, k, NULL, NULL, NULL) != 1)
        goto out;
    if (EC_POINT_point2oct(group, pub, POINT_CONVERSION_UNCOMPRESSED, pt, sizeof(pt), NULL) !=
        sizeof(pt))
        goto out;
    err = p256_build(scalar, pt, sizeof(pt), out);
    if (err == MSV_OK && point != NULL)
        memcpy(point, pt, sizeof(pt));
out:
    BN_clear_free(k);
    EC_POINT_free(pub);
    EC_GROUP_free(group);
    return err;
}

msv_err msv_p256_scalar(const EVP_PKEY *sk, uint8_t scalar[MSV_P256_SCALAR_LEN])
{
    BIGNUM *priv = NULL;
    msv_err err = MSV_ERR_CRYPTO;

    if (EVP_PKEY_get_bn_param(sk, OSSL_PKEY_PARAM_PRIV_KEY, &priv) != 1)
        return MSV_ERR_CRYPTO;
    if (BN_bn2binpad(priv, scalar, MSV_P256_SCALAR_LEN) == MSV_P256_SCALAR_LEN)
        err = MSV_OK;
    BN_clear_free(priv);
    return err;
}

msv_err msv_p256_from_point(const uint8_t *point, size_t len, EVP_PKEY **out)
{
    /* Only the uncompressed form; this also excludes the point at infinity. */
    if (len != MSV_P256_POINT_LEN || point[0] != 0x04)
        return MSV_ERR_PARSE;
    return p256_build(NULL, point, len, out);
}

msv_err msv_p256_ecdh(EVP_PKEY *sk, EVP_PKEY *peer, uint8_t out[32])
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, sk, NULL);
    size_t len = 32;
    msv_err err = MSV_ERR_CRYPTO;

    if (ctx == NULL)
        return MSV_ERR_NOMEM;
    if (EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, peer) != 1)
        goto out;
    if (EVP_PKEY_derive(ctx, out, &len) != 1 || len != 32)
        goto out;
    err = MSV_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    return err;
}

msv_err msv_ecdsa_sign(EVP_PKEY *sk, const EVP_MD *md, const uint8_t *const *parts,
                       const size_t *lens, size_t n, uint8_t sig[72], size_t *sig_len)
{
    uint8_t digest[EVP_MAX_MD_SIZE];
    EVP_PKEY_CTX *ctx = NULL;
    size_t len = 72;
    msv_err err;

    err = digest_parts(md, parts, lens, n, digest);
    if (err != MSV_OK)
        return err;
    err = MSV_ERR_CRYPTO;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, sk, NULL);
    if (ctx == NULL || EVP_PKEY_sign_init(ctx) != 1 || EVP_PKEY_CTX_set_signature_md(ctx, md) != 1)
        goto out;
    if (EVP_PKEY_sign(ctx, sig, &len, digest, (size_t)EVP_MD_get_size(md)) != 1)
        goto out;
    *sig_len = len;
    err = MSV_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    return err;
}

msv_err msv_ecdsa_verify(EVP_PKEY *pk, const EVP_MD *md, const uint8_t *const *parts,
                         const size_t *lens, size_t n, const uint8_t *sig, size_t sig_len)
{
    uint8_t digest[EVP_MAX_MD_SIZE];
    EVP_PKEY_CTX *ctx = NULL;
    msv_err err;

    err = digest_parts(md, parts, lens, n, digest);
    if (err != MSV_OK)
        return err;
    err = MSV_ERR_AUTH;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (ctx == NULL)
        return MSV_ERR_NOMEM;
    if (EVP_PKEY_verify_init(ctx) != 1 || EVP_PKEY_CTX_set_signature_md(ctx, md) != 1)
        goto out;
    /* OpenSSL re-encodes the parsed signature and rejects anything but strict DER. */
    if (EVP_PKEY_verify(ctx, sig, sig_len, digest, (size_t)EVP_MD_get_size(md)) == 1)
        err = MSV_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    return err;
}

msv_err msv_hmac_sha256_parts(const uint8_t *key, size_t key_len, const uint8_t *const *parts,
                              const size_t *lens, size_t n, uint8_t out[32])
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t out_len = 0;
    msv_err err = MSV_ERR_CRYPTO;

    if (mac == NULL)
        return MSV_ERR_CRYPTO;
    ctx = EVP_MAC_CTX_new(mac);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx == NULL || EVP_MAC_init(ctx, key, key_len, params) != 1)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (EVP_MAC_update(ctx, parts[i], lens[i]) != 1)
            goto out;
    }
    if (EVP_MAC_final(ctx, out, &out_len, 32) != 1 || out_len != 32)
        goto out;
    err = MSV_OK;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return err;
}
