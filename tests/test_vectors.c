/*
 * Known-answer tests: every case of the vendored Wycheproof files for the
 * primitives the suites use, published vectors where Wycheproof has none
 * (RFC 6979 A.2.5 for ECDSA P-256/SHA-1, NIST SP 800-38A F.5 for AES-CTR),
 * and Missive's own fixed vectors for each suite (tests/vectors/missive_kat.json).
 *
 * `test_vectors --generate` prints a fresh missive_kat.json; the committed one
 * must not be replaced unless the format itself changes on purpose.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "client/safety.h"
#include "crypto/internal.h"
#include "helpers.h"
#include "wycheproof.h"
#include "missive/crypto.h"
#include "missive/util.h"

/* ---- RSA-OAEP SHA-1 -------------------------------------------------------------------- */

static void test_wycheproof_rsa_oaep_sha1(void **state)
{
    json_t *root = wp_load("wycheproof/rsa_oaep_2048_sha1_mgf1sha1_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t der_len, ct_len, msg_len, label_len, out_len = 512;
        uint8_t *der = wp_hex(group, "privateKeyPkcs8", &der_len);
        uint8_t *ct = wp_hex(test, "ct", &ct_len), *msg = wp_hex(test, "msg", &msg_len);
        uint8_t *label = wp_hex(test, "label", &label_len), out[512];
        const unsigned char *p = der;
        EVP_PKEY *sk = d2i_AutoPrivateKey(NULL, &p, (long)der_len);
        int want = wp_expected(test, &t), got;

        assert_non_null(sk);
        if (label_len > 0) {
            /* the classic format has no label; labelled cases must not decrypt */
            got = 0;
            assert_int_equal(msv_rsa_oaep_sha1_decrypt(sk, ct, ct_len, out, &out_len),
                             MSV_ERR_AUTH);
        } else {
            got = msv_rsa_oaep_sha1_decrypt(sk, ct, ct_len, out, &out_len) == MSV_OK &&
                  out_len == msg_len && memcmp(out, msg, msg_len) == 0;
        }
        wp_check(test, label_len > 0 ? 0 : want, got);
        if (want == 1 && label_len == 0) {
            /* our encoder, under the same key, round-trips the same message */
            uint8_t again[512];
            size_t again_len = sizeof(again);

            assert_int_equal(msv_rsa_oaep_sha1_encrypt(sk, msg, msg_len, &msv_rng_system, out),
                             MSV_OK);
            assert_int_equal(msv_rsa_oaep_sha1_decrypt(sk, out, (size_t)EVP_PKEY_get_size(sk),
                                                       again, &again_len),
                             MSV_OK);
            assert_int_equal(again_len, msg_len);
            assert_memory_equal(again, msg, msg_len);
        }
        EVP_PKEY_free(sk);
        free(der);
        free(ct);
        free(msg);
        free(label);
    }
    wp_report("RSA-OAEP-SHA1", &t, 36);
    json_decref(root);
}

/* ---- ECDSA P-256 SHA-256 (DER) ---------------------------------------------------------- */

static void test_wycheproof_ecdsa_p256_sha256(void **state)
{
    json_t *root = wp_load("wycheproof/ecdsa_secp256r1_sha256_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t pt_len, msg_len, sig_len;
        uint8_t *point = wp_hex(json_object_get(group, "publicKey"), "uncompressed", &pt_len);
        uint8_t *msg = wp_hex(test, "msg", &msg_len), *sig = wp_hex(test, "sig", &sig_len);
        const uint8_t *parts[1] = {msg};
        EVP_PKEY *pk = NULL;
        int want = wp_expected(test, &t), got = 0;

        if (msv_p256_from_point(point, pt_len, &pk) == MSV_OK)
            got = msv_ecdsa_verify(pk, EVP_sha256(), parts, &msg_len, 1, sig, sig_len) == MSV_OK;
        wp_check(test, want, got);
        EVP_PKEY_free(pk);
        free(point);
        free(msg);
        free(sig);
    }
    wp_report("ECDSA-P256-SHA256", &t, 484);
    json_decref(root);
}

/* ---- ECDH P-256 ------------------------------------------------------------------------- */

/*
 * The Wycheproof public key is a SubjectPublicKeyInfo; Missive's identities
 * carry a bare uncompressed point of the named curve P-256. Only SPKIs that
 * name P-256 are turned into such a point (compressed ones are expanded);
 * explicit curve parameters are never accepted, as in Missive itself.
 */
static int spki_to_point(const uint8_t *der, size_t len, uint8_t point[65])
{
    static const uint8_t prefix[] = {0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
                                     0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                     0xce, 0x3d, 0x03, 0x01, 0x07, 0x03};
    EC_GROUP *group;
    EC_POINT *pt;
    size_t n;
    int ok = 0;

    /* SEQUENCE { AlgorithmIdentifier { ecPublicKey, prime256v1 }, BIT STRING } */
    if (len < 2 + sizeof(prefix) + 2 || der[0] != 0x30 || der[1] != len - 2 ||
        memcmp(der + 2, prefix, sizeof(prefix)) != 0)
        return 0;
    n = der[2 + sizeof(prefix)];
    if (n + 3 + sizeof(prefix) != len || n < 2 || der[3 + sizeof(prefix)] != 0)
        return 0;
    der += 4 + sizeof(prefix);
    n -= 1;
    if (n == 65) {
        memcpy(point, der, 65);
        return 1;
    }
    group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    pt = EC_POINT_new(group);
    if (pt != NULL && EC_POINT_oct2point(group, pt, der, n, NULL) == 1 &&
        EC_POINT_point2oct(group, pt, POINT_CONVERSION_UNCOMPRESSED, point, 65, NULL) == 65)
        ok = 1;
    EC_POINT_free(pt);
    EC_GROUP_free(group);
    return ok;
}

static void test_wycheproof_ecdh_p256(void **state)
{
    json_t *root = wp_load("wycheproof/ecdh_secp256r1_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t pub_len, priv_len, shared_len;
        uint8_t *pub = wp_hex(test, "public", &pub_len);
        uint8_t *priv = wp_hex(test, "private", &priv_len);
        uint8_t *shared = wp_hex(test, "shared", &shared_len);
        uint8_t point[65], scalar[32] = {0}, z[32];
        EVP_PKEY *sk = NULL, *peer = NULL;
        int want = wp_expected(test, &t), got = 0;
        size_t skip = 0;

        /* private keys are big-endian integers, sometimes with a leading zero byte */
        while (priv_len - skip > 32 && priv[skip] == 0)
            skip++;
        assert_true(priv_len - skip <= 32);
        memcpy(scalar + 32 - (priv_len - skip), priv + skip, priv_len - skip);
        assert_int_equal(msv_p256_from_scalar(scalar, &sk, NULL), MSV_OK);
        if (spki_to_point(pub, pub_len, point) &&
            msv_p256_from_point(point, sizeof(point), &peer) == MSV_OK &&
            msv_p256_ecdh(sk, peer, z) == MSV_OK)
            got = shared_len == 32 && memcmp(z, shared, 32) == 0;
        if (want < 0 && got == 0 && shared_len == 32 && peer != NULL)
            fail_msg("acceptable case computed a different secret");
        wp_check(test, want, got);
        EVP_PKEY_free(sk);
        EVP_PKEY_free(peer);
        free(pub);
        free(priv);
        free(shared);
    }
    wp_report("ECDH-P256", &t, 612);
    json_decref(root);
}

/* ---- X25519, Ed25519 -------------------------------------------------------------------- */

static void test_wycheproof_x25519(void **state)
{
    json_t *root = wp_load("wycheproof/x25519_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t pub_len, priv_len, shared_len;
        uint8_t *pub = wp_hex(test, "public", &pub_len);
        uint8_t *priv = wp_hex(test, "private", &priv_len);
        uint8_t *shared = wp_hex(test, "shared", &shared_len), out[32];
        int want = wp_expected(test, &t), rc;

        assert_int_equal(pub_len, 32);
        assert_int_equal(priv_len, 32);
        rc = crypto_scalarmult(out, priv, pub);
        if (rc == 0) {
            /* whatever libsodium computes must be the expected secret */
            assert_memory_equal(out, shared, 32);
        } else {
            /* it refuses only an all-zero result (small-order points), never a valid case */
            assert_int_not_equal(want, 1);
            assert_true(sodium_is_zero(shared, 32));
        }
        wp_check(test, want, rc == 0);
        free(pub);
        free(priv);
        free(shared);
    }
    wp_report("X25519", &t, 518);
    json_decref(root);
}

static void test_wycheproof_ed25519(void **state)
{
    json_t *root = wp_load("wycheproof/ed25519_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t pk_len, msg_len, sig_len;
        uint8_t *pk = wp_hex(json_object_get(group, "publicKey"), "pk", &pk_len);
        uint8_t *msg = wp_hex(test, "msg", &msg_len), *sig = wp_hex(test, "sig", &sig_len);
        int want = wp_expected(test, &t);
        int got = pk_len == 32 && sig_len == 64 &&
                  crypto_sign_verify_detached(sig, msg, msg_len, pk) == 0;

        wp_check(test, want, got);
        free(pk);
        free(msg);
        free(sig);
    }
    wp_report("Ed25519", &t, 151);
    json_decref(root);
}

/* ---- AEADs ------------------------------------------------------------------------------ */

typedef int (*aead_decrypt_fn)(unsigned char *, unsigned long long *, unsigned char *,
                               const unsigned char *, unsigned long long, const unsigned char *,
                               unsigned long long, const unsigned char *, const unsigned char *);
typedef int (*aead_encrypt_fn)(unsigned char *, unsigned long long *, const unsigned char *,
                               unsigned long long, const unsigned char *, unsigned long long,
                               const unsigned char *, const unsigned char *, const unsigned char *);

static void run_aead(const char *file, const char *name, size_t nonce_len, aead_encrypt_fn enc,
                     aead_decrypt_fn dec, int minimum)
{
    json_t *root = wp_load(file);
    struct wp_tally t = {0};

    WP_FOR_EACH(root, group, test)
    {
        size_t key_len, iv_len, aad_len, msg_len, ct_len, tag_len;
        uint8_t *key = wp_hex(test, "key", &key_len), *iv = wp_hex(test, "iv", &iv_len);
        uint8_t *aad = wp_hex(test, "aad", &aad_len), *msg = wp_hex(test, "msg", &msg_len);
        uint8_t *ct = wp_hex(test, "ct", &ct_len), *tag = wp_hex(test, "tag", &tag_len);
        uint8_t *joined = malloc(ct_len + tag_len + 1), *out = malloc(ct_len + tag_len + 1);
        unsigned long long out_len = 0;
        int want = wp_expected(test, &t), got = 0;

        assert_true(joined && out);
        memcpy(joined, ct, ct_len);
        memcpy(joined + ct_len, tag, tag_len);
        if (iv_len == nonce_len && key_len == 32 && tag_len == 16) {
            got = dec(out, &out_len, NULL, joined, ct_len + tag_len, aad, aad_len, iv, key) == 0 &&
                  out_len == msg_len && memcmp(out, msg, msg_len) == 0;
            if (want == 1) {
                assert_int_equal(enc(out, &out_len, msg, msg_len, aad, aad_len, NULL, iv, key), 0);
                assert_int_equal(out_len, ct_len + tag_len);
                assert_memory_equal(out, joined, ct_len + tag_len);
            }
        }
        wp_check(test, want, got);
        free(key);
        free(iv);
        free(aad);
        free(msg);
        free(ct);
        free(tag);
        free(joined);
        free(out);
    }
    wp_report(name, &t, minimum);
    json_decref(root);
}

static void test_wycheproof_xchacha20_poly1305(void **state)
{
    (void)state;
    run_aead("wycheproof/xchacha20_poly1305_test.json", "XChaCha20-Poly1305",
             crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
             crypto_aead_xchacha20poly1305_ietf_encrypt, crypto_aead_xchacha20poly1305_ietf_decrypt,
             315);
}

static void test_wycheproof_chacha20_poly1305(void **state)
{
    (void)state;
    run_aead("wycheproof/chacha20_poly1305_test.json", "ChaCha20-Poly1305",
             crypto_aead_chacha20poly1305_ietf_NPUBBYTES, crypto_aead_chacha20poly1305_ietf_encrypt,
             crypto_aead_chacha20poly1305_ietf_decrypt, 325);
}

/* ---- HKDF, HMAC ------------------------------------------------------------------------- */

static void test_wycheproof_hkdf_sha256(void **state)
{
    json_t *root = wp_load("wycheproof/hkdf_sha256_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t ikm_len, salt_len, info_len, okm_len;
        uint8_t *ikm = wp_hex(test, "ikm", &ikm_len), *salt = wp_hex(test, "salt", &salt_len);
        uint8_t *info = wp_hex(test, "info", &info_len), *okm = wp_hex(test, "okm", &okm_len);
        size_t size = (size_t)json_integer_value(json_object_get(test, "size"));
        uint8_t *out = malloc(size + 1);
        int want = wp_expected(test, &t), got;

        assert_non_null(out);
        got = msv_hkdf_sha256(ikm, ikm_len, salt, salt_len, info, info_len, out, size) == MSV_OK &&
              okm_len == size && memcmp(out, okm, size) == 0;
        wp_check(test, want, got);
        free(ikm);
        free(salt);
        free(info);
        free(okm);
        free(out);
    }
    wp_report("HKDF-SHA256", &t, 86);
    json_decref(root);
}

static void test_wycheproof_hmac_sha256(void **state)
{
    json_t *root = wp_load("wycheproof/hmac_sha256_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t key_len, msg_len, tag_len;
        size_t tag_size = (size_t)json_integer_value(json_object_get(group, "tagSize")) / 8;
        uint8_t *key = wp_hex(test, "key", &key_len), *msg = wp_hex(test, "msg", &msg_len);
        uint8_t *tag = wp_hex(test, "tag", &tag_len), mac[32];
        const uint8_t *parts[1] = {msg};
        int want = wp_expected(test, &t), got;

        got = msv_hmac_sha256_parts(key, key_len, parts, &msg_len, 1, mac) == MSV_OK &&
              tag_len == tag_size && memcmp(mac, tag, tag_size) == 0;
        wp_check(test, want, got);
        free(key);
        free(msg);
        free(tag);
    }
    wp_report("HMAC-SHA256", &t, 174);
    json_decref(root);
}

/* ---- published vectors ------------------------------------------------------------------ */

/*
 * RFC 6979 appendix A.2.5: P-256 key and the signatures with SHA-1 of the
 * messages "sample" and "test". Verification only: OpenSSL signs with random
 * nonces, so the check is that these published signatures verify and that
 * altered ones do not.
 */
static void test_rfc6979_p256_sha1(void **state)
{
    static const char *qx = "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6";
    static const char *qy = "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";
    static const char *x = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
    static const struct {
        const char *msg, *r, *s;
    } cases[] = {
        {"sample", "61340c88c3aaebeb4f6d667f672ca9759a6ccaa9fa8811313039ee4a35471d32",
         "6d7f147dac089441bb2e2fe8f7a3fa264b9c475098fdcf6e00d7c996e1b8b7eb"},
        {"test", "0cbcc86fd6abd1d99e703e1ec50069ee5c0b4ba4b9ac60e409e8ec5910d81a89",
         "01b9d7b73dfaa60d5651ec4591a0136f87653e0fd780c3b1bc872ffdeae479b1"},
    };
    char point_hex[131];
    uint8_t point[65], scalar[32], derived[65];
    size_t n;
    EVP_PKEY *pk = NULL, *sk = NULL;

    (void)state;
    snprintf(point_hex, sizeof(point_hex), "04%s%s", qx, qy);
    assert_int_equal(msv_hex_decode(point_hex, point, sizeof(point), &n), MSV_OK);
    assert_int_equal(msv_hex_decode(x, scalar, sizeof(scalar), &n), MSV_OK);
    assert_int_equal(msv_p256_from_point(point, sizeof(point), &pk), MSV_OK);
    /* the published private key yields the published public key */
    assert_int_equal(msv_p256_from_scalar(scalar, &sk, derived), MSV_OK);
    assert_memory_equal(derived, point, 65);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ECDSA_SIG *sig = ECDSA_SIG_new();
        BIGNUM *r = NULL, *s = NULL;
        unsigned char *der = NULL;
        const uint8_t *msg = (const uint8_t *)cases[i].msg;
        size_t msg_len = strlen(cases[i].msg);
        int der_len;

        assert_true(BN_hex2bn(&r, cases[i].r) > 0 && BN_hex2bn(&s, cases[i].s) > 0);
        assert_int_equal(ECDSA_SIG_set0(sig, r, s), 1);
        der_len = i2d_ECDSA_SIG(sig, &der);
        assert_true(der_len > 0);
        assert_int_equal(msv_ecdsa_verify(pk, EVP_sha1(), &msg, &msg_len, 1, der, (size_t)der_len),
                         MSV_OK);
        /* the same signature under SHA-256, or over another message, fails */
        assert_int_equal(
            msv_ecdsa_verify(pk, EVP_sha256(), &msg, &msg_len, 1, der, (size_t)der_len),
            MSV_ERR_AUTH);
        msg_len--;
        assert_int_equal(msv_ecdsa_verify(pk, EVP_sha1(), &msg, &msg_len, 1, der, (size_t)der_len),
                         MSV_ERR_AUTH);
        OPENSSL_free(der);
        ECDSA_SIG_free(sig);
    }
    {
        /* and signatures made with that key through our signer verify there too */
        static const uint8_t m[] = "sample";
        const uint8_t *mp = m;
        size_t ml = 6, sl = 0;
        uint8_t sig[72];

        assert_int_equal(msv_ecdsa_sign(sk, EVP_sha1(), &mp, &ml, 1, sig, &sl), MSV_OK);
        assert_int_equal(msv_ecdsa_verify(pk, EVP_sha1(), &mp, &ml, 1, sig, sl), MSV_OK);
    }
    EVP_PKEY_free(pk);
    EVP_PKEY_free(sk);
}

/* NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt) and F.5.5 (CTR-AES256.Encrypt). */
static void test_sp800_38a_aes_ctr(void **state)
{
    static const char *pt_hex = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                                "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    static const char *iv_hex = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    static const struct {
        const char *key, *ct;
    } cases[] = {
        {"2b7e151628aed2a6abf7158809cf4f3c",
         "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
         "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee"},
        {"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
         "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
         "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"},
    };

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        size_t key_len, pt_len, ct_len, iv_len;
        uint8_t *key = test_unhex(cases[i].key, &key_len), *pt = test_unhex(pt_hex, &pt_len);
        uint8_t *ct = test_unhex(cases[i].ct, &ct_len), *iv = test_unhex(iv_hex, &iv_len);
        uint8_t out[64];

        assert_int_equal(msv_aes_ctr(key, key_len, iv, pt, pt_len, out), MSV_OK);
        assert_memory_equal(out, ct, ct_len);
        /* a message that does not end on a block boundary */
        assert_int_equal(msv_aes_ctr(key, key_len, iv, pt, 37, out), MSV_OK);
        assert_memory_equal(out, ct, 37);
        free(key);
        free(pt);
        free(ct);
        free(iv);
    }
}

/* ---- Missive's own suite vectors --------------------------------------------------------- */

static struct msv_identity *import_hex(const char *hex)
{
    size_t len;
    uint8_t *bytes = test_unhex(hex, &len);
    struct msv_identity *id = NULL;

    assert_int_equal(msv_identity_import(bytes, len, &id), MSV_OK);
    msv_secret_free(bytes, len);
    return id;
}

/* Bytes of the wire that do not depend on the (randomised) ECDSA signature. */
static size_t deterministic_prefix(enum msv_suite suite, const uint8_t *wire, size_t len)
{
    switch (suite) {
    case MSV_SUITE_CLASSIC:
        return 3 + ((size_t)wire[1] << 8 | wire[2]);
    case MSV_SUITE_ECIES:
        return 1 + 65 + 4 +
               ((size_t)wire[66] << 24 | (size_t)wire[67] << 16 | (size_t)wire[68] << 8 | wire[69]);
    default:
        return len;
    }
}

static void test_missive_suite_vectors(void **state)
{
    json_t *root = wp_load("missive_kat.json"), *cases = json_object_get(root, "envelopes");
    size_t count = 0;

    (void)state;
    assert_true(json_array_size(cases) >= 6);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        enum msv_suite suite;
        struct msv_identity *sender = import_hex(wp_str(c, "sender_secret"));
        struct msv_identity *recipient = import_hex(wp_str(c, "recipient_secret"));
        size_t pt_len, wire_len, out_len = 0, again_len = 0, prefix;
        uint8_t *pt = wp_hex(c, "plaintext", &pt_len), *wire = wp_hex(c, "wire", &wire_len);
        uint8_t *out = NULL, *again = NULL;
        struct test_rng_state rs;
        struct msv_rng rng;

        assert_int_equal(msv_suite_from_name(wp_str(c, "suite"), &suite), MSV_OK);
        assert_int_equal(msv_identity_suite(sender), suite);
        /* the fixed envelope opens to the fixed plaintext */
        assert_int_equal(
            msv_open(recipient, msv_identity_public(sender), wire, wire_len, NULL, &out, &out_len),
            MSV_OK);
        assert_int_equal(out_len, pt_len);
        assert_memory_equal(out, pt, pt_len);
        /* and sealing again with the same randomness reproduces it byte for byte */
        test_rng_init(&rs, &rng, wp_str(c, "rng_label"));
        assert_int_equal(msv_seal_rng(sender, msv_identity_public(recipient), pt, pt_len, &rng,
                                      &again, &again_len),
                         MSV_OK);
        prefix = deterministic_prefix(suite, wire, wire_len);
        assert_true(again_len >= prefix);
        assert_memory_equal(again, wire, prefix);
        if (suite == MSV_SUITE_MODERN)
            assert_int_equal(again_len, wire_len);
        msv_secret_free(out, out_len);
        free(again);
        free(pt);
        free(wire);
        msv_identity_free(sender);
        msv_identity_free(recipient);
        count++;
    }
    printf("# missive suite vectors: %zu envelopes\n", count);
    json_decref(root);
}

static void test_missive_identity_vectors(void **state)
{
    json_t *root = wp_load("missive_kat.json"), *ids = json_object_get(root, "identities");

    (void)state;
    assert_true(json_array_size(ids) >= 1);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *c = json_array_get(ids, i);
        struct test_rng_state rs;
        struct msv_rng rng;
        struct msv_identity *id = NULL;
        enum msv_suite suite;
        size_t want_len, got_len;
        uint8_t *want = wp_hex(c, "public", &want_len), hash[32];
        const uint8_t *got;
        char fp[MSV_FINGERPRINT_TEXT_LEN];

        assert_int_equal(msv_suite_from_name(wp_str(c, "suite"), &suite), MSV_OK);
        test_rng_init(&rs, &rng, wp_str(c, "rng_label"));
        assert_int_equal(msv_identity_generate_rng(suite, 0, &rng, &id), MSV_OK);
        got = msv_public_identity_bytes(msv_identity_public(id), &got_len);
        assert_int_equal(got_len, want_len);
        assert_memory_equal(got, want, want_len);
        msv_public_identity_hash(msv_identity_public(id), hash);
        msv_fingerprint_text(hash, fp);
        assert_string_equal(fp, wp_str(c, "fingerprint"));
        free(want);
        msv_identity_free(id);
    }
    json_decref(root);
}

/* ---- generator for missive_kat.json ------------------------------------------------------ */

static char *hex_of(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);

    if (s == NULL || msv_hex_encode(p, n, s, 2 * n + 1) != MSV_OK)
        abort();
    return s;
}

static json_t *export_hex(const struct msv_identity *id)
{
    uint8_t *e = NULL;
    size_t n = 0;
    char *h;
    json_t *j;

    if (msv_identity_export(id, &e, &n) != MSV_OK)
        abort();
    h = hex_of(e, n);
    j = json_string(h);
    free(h);
    msv_secret_free(e, n);
    return j;
}

static int generate(void)
{
    static const size_t sizes[] = {0, 42, 100, 300};
    json_t *root = json_object(), *envs = json_array(), *ids = json_array();

    if (msv_init() != MSV_OK)
        return 1;
    for (int s = MSV_SUITE_CLASSIC; s <= MSV_SUITE_MODERN; s++) {
        struct msv_identity *a = NULL, *b = NULL;

        if (msv_identity_generate((enum msv_suite)s, 0, &a) != MSV_OK ||
            msv_identity_generate((enum msv_suite)s, 0, &b) != MSV_OK)
            return 1;
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            char label[64];
            uint8_t pt[300], *wire = NULL;
            size_t wire_len = 0;
            struct test_rng_state rs;
            struct msv_rng rng;
            json_t *c = json_object();
            char *h;

            snprintf(label, sizeof(label), "missive-kat-%s-%zu", msv_suite_name(s), sizes[i]);
            test_fill_pattern(pt, sizes[i], (unsigned)i);
            test_rng_init(&rs, &rng, label);
            if (msv_seal_rng(a, msv_identity_public(b), pt, sizes[i], &rng, &wire, &wire_len) !=
                MSV_OK)
                return 1;
            json_object_set_new(c, "suite", json_string(msv_suite_name(s)));
            json_object_set_new(c, "rng_label", json_string(label));
            json_object_set_new(c, "sender_secret", export_hex(a));
            json_object_set_new(c, "recipient_secret", export_hex(b));
            h = hex_of(pt, sizes[i]);
            json_object_set_new(c, "plaintext", json_string(h));
            free(h);
            h = hex_of(wire, wire_len);
            json_object_set_new(c, "wire", json_string(h));
            free(h);
            free(wire);
            json_array_append_new(envs, c);
        }
        msv_identity_free(a);
        msv_identity_free(b);
    }
    {
        /* modern identities are a pure function of the random bytes */
        struct test_rng_state rs;
        struct msv_rng rng;
        struct msv_identity *id = NULL;
        const uint8_t *pub;
        size_t n;
        uint8_t hash[32];
        char fp[MSV_FINGERPRINT_TEXT_LEN], *h;
        json_t *c = json_object();

        test_rng_init(&rs, &rng, "missive-kat-identity-modern");
        if (msv_identity_generate_rng(MSV_SUITE_MODERN, 0, &rng, &id) != MSV_OK)
            return 1;
        pub = msv_public_identity_bytes(msv_identity_public(id), &n);
        msv_public_identity_hash(msv_identity_public(id), hash);
        msv_fingerprint_text(hash, fp);
        h = hex_of(pub, n);
        json_object_set_new(c, "suite", json_string("modern"));
        json_object_set_new(c, "rng_label", json_string("missive-kat-identity-modern"));
        json_object_set_new(c, "public", json_string(h));
        json_object_set_new(c, "fingerprint", json_string(fp));
        json_array_append_new(ids, c);
        free(h);
        msv_identity_free(id);
    }
    json_object_set_new(root, "about",
                        json_string("Missive suite known-answer vectors. Random bytes come from "
                                    "the stream SHA-256(rng_label || u32be counter), counter "
                                    "from 0, consumed in the order docs/crypto.md gives. "
                                    "Signatures by ECDSA are randomised; compare the bytes "
                                    "before them and verify the rest."));
    json_object_set_new(root, "envelopes", envs);
    json_object_set_new(root, "identities", ids);
    json_dumpf(root, stdout, JSON_INDENT(1));
    putchar('\n');
    json_decref(root);
    return 0;
}

/*
 * Safety numbers (src/client/safety.c), computed independently with
 * Python's hashlib: version 2 iterates SHA-512 5,200 times from a first
 * block that names the version; version 1 is one SHA-256. Each set digest
 * here is 32 counting bytes (0..31 for alice, 32..63 for bob).
 */
static void test_safety_number_vectors(void **state)
{
    uint8_t alice[32], bob[32];
    char out[MSV_SAFETY_DIGITS + 1], swapped[MSV_SAFETY_DIGITS + 1];

    (void)state;
    for (int i = 0; i < 32; i++) {
        alice[i] = (uint8_t)i;
        bob[i] = (uint8_t)(32 + i);
    }
    msv_safety_number(2, "bob@example.org", bob, "alice@example.org", alice, out);
    assert_string_equal(out, "340844671504391674529432671269"
                             "756613763684782201179177162379");
    msv_safety_number(2, "alice@example.org", alice, "bob@example.org", bob, swapped);
    assert_string_equal(out, swapped); /* the same on both sides */
    msv_safety_number(1, "alice@example.org", alice, "bob@example.org", bob, out);
    assert_string_equal(out, "948350489027798311204701064532"
                             "306982859843313605597058182626");
    assert_int_equal(MSV_SAFETY_VERSION, 2);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wycheproof_rsa_oaep_sha1),
        cmocka_unit_test(test_wycheproof_ecdsa_p256_sha256),
        cmocka_unit_test(test_wycheproof_ecdh_p256),
        cmocka_unit_test(test_wycheproof_x25519),
        cmocka_unit_test(test_wycheproof_ed25519),
        cmocka_unit_test(test_wycheproof_xchacha20_poly1305),
        cmocka_unit_test(test_wycheproof_chacha20_poly1305),
        cmocka_unit_test(test_wycheproof_hkdf_sha256),
        cmocka_unit_test(test_wycheproof_hmac_sha256),
        cmocka_unit_test(test_rfc6979_p256_sha1),
        cmocka_unit_test(test_sp800_38a_aes_ctr),
        cmocka_unit_test(test_missive_suite_vectors),
        cmocka_unit_test(test_missive_identity_vectors),
        cmocka_unit_test(test_safety_number_vectors),
    };

    if (argc == 2 && strcmp(argv[1], "--generate") == 0)
        return generate();
    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests_name("vectors", tests, NULL, NULL);
}
