/*
 * Suite ecies: the iOS 13+ style envelope over P-256 (docs/crypto.md).
 *
 *   e, E  = ephemeral P-256 key pair
 *   Z     = ECDH(e, recipient prekey)                     32-byte x coordinate
 *   K||IV = HKDF-SHA256(ikm Z, salt "LastPawn-MessageKeys", info "", 48 bytes)
 *   C     = AES-256-CTR(K, IV, P)
 *   sig   = ECDSA-P256-SHA256(sender, Z || prekey || E || H(recipient) || C), DER
 *   wire  = 0x03 || E (65) || u32be len(C) || C || u8 len(sig) || sig
 *
 * The signature binds the shared secret, so only the recipient can check it:
 * the receiver derives Z, verifies, and only then decrypts.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "crypto/internal.h"
#include "missive/util.h"
#include "util/buf.h"

static const char hkdf_salt[] = "LastPawn-MessageKeys";

static msv_err derive_keys(const uint8_t z[32], uint8_t okm[48])
{
    return msv_hkdf_sha256(z, 32, (const uint8_t *)hkdf_salt, sizeof(hkdf_salt) - 1, NULL, 0, okm,
                           48);
}

/* The signed message: Z || prekey || E || H(recipient) || C. */
static void signed_parts(const uint8_t *z, const struct msv_public_identity *recipient,
                         const uint8_t *eph, const uint8_t *ct, size_t ct_len,
                         const uint8_t *parts[5], size_t lens[5])
{
    parts[0] = z;
    lens[0] = 32;
    parts[1] = recipient->prekey_point;
    lens[1] = MSV_P256_POINT_LEN;
    parts[2] = eph;
    lens[2] = MSV_P256_POINT_LEN;
    parts[3] = recipient->hash;
    lens[3] = MSV_IDENTITY_HASH_LEN;
    parts[4] = ct;
    lens[4] = ct_len;
}

msv_err msv_ecies_seal(const struct msv_identity *sender,
                       const struct msv_public_identity *recipient, const uint8_t *pt,
                       size_t pt_len, const struct msv_rng *rng, uint8_t **out, size_t *out_len)
{
    uint8_t scalar[32], eph[MSV_P256_POINT_LEN], z[32], okm[48], sig[72];
    const uint8_t *parts[5];
    size_t lens[5], sig_len = 0;
    EVP_PKEY *eph_sk = NULL;
    uint8_t *ct = NULL;
    struct msv_buf b;
    msv_err err;

    if (pt_len > MSV_PLAINTEXT_MAX)
        return MSV_ERR_TOO_BIG;
    msv_buf_init(&b, 1 + MSV_P256_POINT_LEN + 4 + MSV_PLAINTEXT_MAX + 1 + 72);
    ct = malloc(pt_len + 1);
    if (ct == NULL)
        return MSV_ERR_NOMEM;
    err = msv_p256_random_scalar(rng, scalar);
    if (err == MSV_OK)
        err = msv_p256_from_scalar(scalar, &eph_sk, eph);
    if (err == MSV_OK)
        err = msv_p256_ecdh(eph_sk, recipient->prekey_pk, z);
    if (err == MSV_OK)
        err = derive_keys(z, okm);
    if (err == MSV_OK)
        err = msv_aes_ctr(okm, 32, okm + 32, pt, pt_len, ct);
    if (err != MSV_OK)
        goto out;
    signed_parts(z, recipient, eph, ct, pt_len, parts, lens);
    err = msv_ecdsa_sign(sender->sign_sk, EVP_sha256(), parts, lens, 5, sig, &sig_len);
    if (err != MSV_OK)
        goto out;
    msv_buf_put_u8(&b, MSV_WIRE_ECIES);
    msv_buf_put(&b, eph, sizeof(eph));
    msv_buf_put_u32be(&b, (uint32_t)pt_len);
    msv_buf_put(&b, ct, pt_len);
    msv_buf_put_u8(&b, (uint8_t)sig_len);
    msv_buf_put(&b, sig, sig_len);
    err = msv_buf_finish(&b, out, out_len);
out:
    OPENSSL_cleanse(scalar, sizeof(scalar));
    OPENSSL_cleanse(z, sizeof(z));
    OPENSSL_cleanse(okm, sizeof(okm));
    EVP_PKEY_free(eph_sk);
    msv_buf_clear(&b);
    free(ct);
    return err;
}

struct ecies_wire {
    const uint8_t *eph;
    const uint8_t *ct;
    size_t ct_len;
    const uint8_t *sig;
    size_t sig_len;
};

static msv_err parse_wire(const uint8_t *wire, size_t wire_len, struct ecies_wire *w)
{
    struct msv_reader r;
    uint8_t version;
    uint32_t ct_len;

    msv_reader_init(&r, wire, wire_len);
    if (msv_reader_u8(&r, &version) != MSV_OK || version != MSV_WIRE_ECIES)
        return MSV_ERR_AUTH;
    if (msv_reader_bytes(&r, MSV_P256_POINT_LEN, &w->eph) != MSV_OK)
        return MSV_ERR_AUTH;
    if (msv_reader_u32be(&r, &ct_len) != MSV_OK || ct_len > MSV_PLAINTEXT_MAX ||
        msv_reader_bytes(&r, ct_len, &w->ct) != MSV_OK)
        return MSV_ERR_AUTH;
    w->ct_len = ct_len;
    return msv_read_signature_trailer(&r, &w->sig, &w->sig_len);
}

msv_err msv_ecies_open(const struct msv_identity *recipient,
                       const struct msv_public_identity *sender, const uint8_t *wire,
                       size_t wire_len, uint8_t **out, size_t *out_len, uint8_t replay_id[32])
{
    uint8_t z[32], okm[48];
    const uint8_t *parts[5];
    size_t lens[5];
    struct ecies_wire w;
    EVP_PKEY *eph_pk = NULL;
    uint8_t *pt = NULL;
    msv_err err = MSV_ERR_AUTH;

    if (parse_wire(wire, wire_len, &w) != MSV_OK)
        return MSV_ERR_AUTH;
    if (msv_p256_from_point(w.eph, MSV_P256_POINT_LEN, &eph_pk) != MSV_OK)
        return MSV_ERR_AUTH;
    if (msv_p256_ecdh(recipient->prekey_sk, eph_pk, z) != MSV_OK)
        goto out;
    signed_parts(z, recipient->pub, w.eph, w.ct, w.ct_len, parts, lens);
    if (msv_ecdsa_verify(sender->sign_pk, EVP_sha256(), parts, lens, 5, w.sig, w.sig_len) != MSV_OK)
        goto out;
    pt = malloc(w.ct_len + 1);
    if (pt == NULL) {
        err = MSV_ERR_NOMEM;
        goto out;
    }
    if (derive_keys(z, okm) != MSV_OK ||
        msv_aes_ctr(okm, 32, okm + 32, w.ct, w.ct_len, pt) != MSV_OK)
        goto out;
    err = msv_replay_id(MSV_WIRE_ECIES, w.eph, MSV_P256_POINT_LEN, replay_id);
    if (err != MSV_OK)
        goto out;
    *out = pt;
    *out_len = w.ct_len;
    pt = NULL;
out:
    msv_secret_free(pt, w.ct_len + 1);
    OPENSSL_cleanse(z, sizeof(z));
    OPENSSL_cleanse(okm, sizeof(okm));
    EVP_PKEY_free(eph_pk);
    return err;
}
