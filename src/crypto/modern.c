/*
 * Suite modern: X25519 + XChaCha20-Poly1305 with the Ed25519 signature sealed
 * inside, so the relay sees neither the sender nor its signature
 * (docs/crypto.md). Between devices that share a session, its messages
 * (ratchet.c, version bytes 0x05 and 0x06) take the place of this one.
 *
 *   e, E  = ephemeral X25519 key pair
 *   K     = HKDF-SHA256(ikm X25519(e, R), salt "MSV-modern-v1", info E || R, 32 bytes)
 *   sig   = Ed25519(sender, "MSV-modern-sig-v1" || E || H(recipient) || P)
 *   C     = XChaCha20-Poly1305(K, nonce N, ad 0x04 || E, sig || P)
 *   wire  = 0x04 || E (32) || N (24) || C
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"

#define EPH_LEN 32
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define SIG_LEN crypto_sign_BYTES
#define HEADER_LEN (1 + EPH_LEN + NONCE_LEN)

static const char hkdf_salt[] = "MSV-modern-v1";
static const char sig_context[] = "MSV-modern-sig-v1";

/* Ed25519 over context || E || H(recipient) || P, through the multi-part API. */
static int signature_op(int verify, uint8_t sig[SIG_LEN], const uint8_t *key, const uint8_t *eph,
                        const uint8_t *recipient_hash, const uint8_t *pt, size_t pt_len)
{
    /* crypto_sign_*_detached has no multi-part form for plain Ed25519, so the
     * message is assembled once; its length is bounded by MSV_PLAINTEXT_MAX. */
    size_t ctx_len = sizeof(sig_context) - 1;
    size_t len = ctx_len + EPH_LEN + MSV_IDENTITY_HASH_LEN + pt_len;
    uint8_t *msg = malloc(len);
    int rc;

    if (msg == NULL)
        return -2;
    memcpy(msg, sig_context, ctx_len);
    memcpy(msg + ctx_len, eph, EPH_LEN);
    memcpy(msg + ctx_len + EPH_LEN, recipient_hash, MSV_IDENTITY_HASH_LEN);
    if (pt_len > 0)
        memcpy(msg + ctx_len + EPH_LEN + MSV_IDENTITY_HASH_LEN, pt, pt_len);
    if (verify)
        rc = crypto_sign_verify_detached(sig, msg, len, key);
    else
        rc = crypto_sign_detached(sig, NULL, msg, len, key);
    msv_secret_free(msg, len);
    return rc;
}

msv_err msv_modern_seal(const struct msv_identity *sender,
                        const struct msv_public_identity *recipient, const uint8_t *pt,
                        size_t pt_len, const struct msv_rng *rng, uint8_t **out, size_t *out_len)
{
    uint8_t eph_sk[32], shared[32], key[32];
    size_t inner_len = SIG_LEN + pt_len, wire_len = HEADER_LEN + inner_len + ABYTES;
    uint8_t *inner = NULL, *wire = NULL;
    unsigned long long ct_len = 0;
    msv_err err = MSV_ERR_CRYPTO;

    if (pt_len > MSV_PLAINTEXT_MAX)
        return MSV_ERR_TOO_BIG;
    inner = malloc(inner_len);
    wire = malloc(wire_len);
    if (inner == NULL || wire == NULL) {
        err = MSV_ERR_NOMEM;
        goto out;
    }
    wire[0] = MSV_WIRE_MODERN;
    rng->fill(rng->ctx, eph_sk, sizeof(eph_sk));
    rng->fill(rng->ctx, wire + 1 + EPH_LEN, NONCE_LEN);
    if (crypto_scalarmult_base(wire + 1, eph_sk) != 0 ||
        crypto_scalarmult(shared, eph_sk, recipient->x_pk) != 0)
        goto out;
    if (msv_x25519_hkdf(shared, wire + 1, recipient->x_pk, hkdf_salt, key, 32) != MSV_OK)
        goto out;
    if (signature_op(0, inner, sender->modern->ed_sk, wire + 1, recipient->hash, pt, pt_len) != 0)
        goto out;
    if (pt_len > 0)
        memcpy(inner + SIG_LEN, pt, pt_len);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(wire + HEADER_LEN, &ct_len, inner, inner_len,
                                                   wire, 1 + EPH_LEN, NULL, wire + 1 + EPH_LEN,
                                                   key) != 0)
        goto out;
    *out = wire;
    *out_len = HEADER_LEN + (size_t)ct_len;
    wire = NULL;
    err = MSV_OK;
out:
    sodium_memzero(eph_sk, sizeof(eph_sk));
    sodium_memzero(shared, sizeof(shared));
    sodium_memzero(key, sizeof(key));
    msv_secret_free(inner, inner_len);
    free(wire);
    return err;
}

msv_err msv_modern_open(const struct msv_identity *recipient,
                        const struct msv_public_identity *sender, const uint8_t *wire,
                        size_t wire_len, uint8_t **out, size_t *out_len, uint8_t replay_id[32])
{
    uint8_t shared[32], key[32];
    uint8_t *inner = NULL, *pt = NULL;
    size_t inner_len = 0, pt_len = 0;
    unsigned long long dec_len = 0;
    msv_err err = MSV_ERR_AUTH;

    if (wire_len < HEADER_LEN + ABYTES + SIG_LEN || wire[0] != MSV_WIRE_MODERN ||
        wire_len - HEADER_LEN - ABYTES - SIG_LEN > MSV_PLAINTEXT_MAX)
        return MSV_ERR_AUTH;
    inner_len = wire_len - HEADER_LEN - ABYTES;
    /* crypto_scalarmult fails on an all-zero result, i.e. a small-order point */
    if (crypto_scalarmult(shared, recipient->modern->x_sk, wire + 1) != 0)
        goto out;
    if (msv_x25519_hkdf(shared, wire + 1, recipient->pub->x_pk, hkdf_salt, key, 32) != MSV_OK)
        goto out;
    inner = malloc(inner_len);
    if (inner == NULL) {
        err = MSV_ERR_NOMEM;
        goto out;
    }
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(inner, &dec_len, NULL, wire + HEADER_LEN,
                                                   wire_len - HEADER_LEN, wire, 1 + EPH_LEN,
                                                   wire + 1 + EPH_LEN, key) != 0)
        goto out;
    pt_len = inner_len - SIG_LEN;
    if (signature_op(1, inner, sender->ed_pk, wire + 1, recipient->pub->hash, inner + SIG_LEN,
                     pt_len) != 0)
        goto out;
    pt = malloc(pt_len + 1);
    if (pt == NULL) {
        err = MSV_ERR_NOMEM;
        goto out;
    }
    if (pt_len > 0)
        memcpy(pt, inner + SIG_LEN, pt_len);
    err = msv_replay_id(MSV_WIRE_MODERN, wire + 1, EPH_LEN, replay_id);
    if (err != MSV_OK)
        goto out;
    *out = pt;
    *out_len = pt_len;
    pt = NULL;
out:
    sodium_memzero(shared, sizeof(shared));
    sodium_memzero(key, sizeof(key));
    msv_secret_free(inner, inner_len);
    msv_secret_free(pt, pt_len + 1);
    return err;
}
