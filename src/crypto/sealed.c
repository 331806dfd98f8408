/*
 * Sealed sender: the outer envelope that hides the sender from the relay and
 * proves it to the recipient (missive/sealed.h, docs/crypto.md "Sealed
 * sender"). Two layers: the first, keyed by the ephemeral key alone, names
 * the sender; the second is keyed by the ephemeral and the sender's static
 * X25519 key together, so only that sender can have made it.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"

#define ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define EPH_AT 1
#define HEAD_AT 33                  /* 0x07 || E */
#define HEAD_PT (1 + 255 + 8)       /* u8 len || handle padded to 255 || u64be device */
#define HEAD_CT (HEAD_PT + ABYTES)  /* the first layer */
#define BODY_AT (HEAD_AT + HEAD_CT) /* the second layer */
#define INNER_MAX (MSV_PLAINTEXT_MAX + 1024)
#define KN_LEN 56 /* XChaCha20-Poly1305 key || nonce */

static const char salt_head[] = "MSV-sealed-v2";
static const char salt_body[] = "MSV-sealed-v2-static";

/* K1 || N1 = HKDF(ikm X25519(e, R), salt "MSV-sealed-v2", info E || R). */
static msv_err head_key(const uint8_t shared_e[32], const uint8_t eph[32], const uint8_t r[32],
                        uint8_t kn[KN_LEN])
{
    return msv_x25519_hkdf(shared_e, eph, r, salt_head, kn, KN_LEN);
}

/* K2 || N2 = HKDF(ikm X25519(e, R) || X25519(s, R), salt "MSV-sealed-v2-static", info E || R || S).
 */
static msv_err body_key(const uint8_t shared_e[32], const uint8_t shared_s[32],
                        const uint8_t eph[32], const uint8_t r[32], const uint8_t s[32],
                        uint8_t kn[KN_LEN])
{
    uint8_t ikm[64], info[96];
    msv_err err;

    memcpy(ikm, shared_e, 32);
    memcpy(ikm + 32, shared_s, 32);
    memcpy(info, eph, 32);
    memcpy(info + 32, r, 32);
    memcpy(info + 64, s, 32);
    err = msv_hkdf_sha256(ikm, sizeof(ikm), (const uint8_t *)salt_body, sizeof(salt_body) - 1, info,
                          sizeof(info), kn, KN_LEN);
    sodium_memzero(ikm, sizeof(ikm));
    return err;
}

/* The first layer's ad: 0x07 || E || H(R). */
static void head_ad(const uint8_t *wire, const uint8_t r_hash[32], uint8_t ad[HEAD_AT + 32])
{
    memcpy(ad, wire, HEAD_AT);
    memcpy(ad + HEAD_AT, r_hash, 32);
}

/* The second layer's ad: 0x07 || E || first layer || H(R) || H(S). */
static void body_ad(const uint8_t *wire, const uint8_t r_hash[32], const uint8_t s_hash[32],
                    uint8_t ad[BODY_AT + 64])
{
    memcpy(ad, wire, BODY_AT);
    memcpy(ad + BODY_AT, r_hash, 32);
    memcpy(ad + BODY_AT + 32, s_hash, 32);
}

msv_err msv_sealed_wrap(const struct msv_identity *sender,
                        const struct msv_public_identity *recipient, const char *sender_handle,
                        uint64_t sender_device, const uint8_t *envelope, size_t len, uint8_t **out,
                        size_t *out_len)
{
    size_t hl = sender_handle ? strlen(sender_handle) : 0;
    uint8_t eph_sk[32], shared_e[32], shared_s[32], kn[KN_LEN], head[HEAD_PT], ad[BODY_AT + 64],
        *wire = NULL;
    msv_err err = MSV_ERR_CRYPTO;

    if (sender == NULL || sender->modern == NULL || recipient == NULL ||
        !(recipient->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) || hl == 0 || hl > 255 ||
        envelope == NULL || len == 0 || out == NULL)
        return MSV_ERR_INVALID;
    if (len > INNER_MAX)
        return MSV_ERR_TOO_BIG;
    wire = malloc(BODY_AT + len + ABYTES);
    if (wire == NULL)
        return MSV_ERR_NOMEM;
    memset(head, 0, sizeof(head));
    head[0] = (uint8_t)hl;
    memcpy(head + 1, sender_handle, hl);
    msv_put_u64be(head + 1 + 255, sender_device);
    wire[0] = MSV_WIRE_SEALED;
    randombytes_buf(eph_sk, sizeof(eph_sk));
    if (crypto_scalarmult_base(wire + EPH_AT, eph_sk) != 0 ||
        crypto_scalarmult(shared_e, eph_sk, recipient->x_pk) != 0 ||
        crypto_scalarmult(shared_s, sender->modern->x_sk, recipient->x_pk) != 0 ||
        head_key(shared_e, wire + EPH_AT, recipient->x_pk, kn) != MSV_OK)
        goto out;
    head_ad(wire, recipient->hash, ad);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(wire + HEAD_AT, NULL, head, sizeof(head), ad,
                                                   HEAD_AT + 32, NULL, kn + 32, kn) != 0 ||
        body_key(shared_e, shared_s, wire + EPH_AT, recipient->x_pk, sender->pub->x_pk, kn) !=
            MSV_OK)
        goto out;
    body_ad(wire, recipient->hash, sender->pub->hash, ad);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(wire + BODY_AT, NULL, envelope, len, ad,
                                                   sizeof(ad), NULL, kn + 32, kn) != 0)
        goto out;
    *out = wire;
    *out_len = BODY_AT + len + ABYTES;
    wire = NULL;
    err = MSV_OK;
out:
    sodium_memzero(eph_sk, sizeof(eph_sk));
    sodium_memzero(shared_e, sizeof(shared_e));
    sodium_memzero(shared_s, sizeof(shared_s));
    sodium_memzero(kn, sizeof(kn));
    sodium_memzero(head, sizeof(head));
    free(wire);
    return err;
}

static int well_formed(const struct msv_identity *recipient, const uint8_t *wire, size_t len)
{
    return recipient != NULL && recipient->modern != NULL && wire != NULL &&
           len >= BODY_AT + ABYTES + 1 && wire[0] == MSV_WIRE_SEALED &&
           len - BODY_AT - ABYTES <= INNER_MAX;
}

msv_err msv_sealed_sender(const struct msv_identity *recipient, const uint8_t *wire, size_t len,
                          char handle[256], uint64_t *sender_device)
{
    uint8_t shared_e[32], kn[KN_LEN], head[HEAD_PT], ad[HEAD_AT + 32];
    size_t hl;
    msv_err err = MSV_ERR_AUTH;

    if (!well_formed(recipient, wire, len))
        return MSV_ERR_AUTH;
    if (crypto_scalarmult(shared_e, recipient->modern->x_sk, wire + EPH_AT) != 0 ||
        head_key(shared_e, wire + EPH_AT, recipient->pub->x_pk, kn) != MSV_OK)
        goto out;
    head_ad(wire, recipient->pub->hash, ad);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(head, NULL, NULL, wire + HEAD_AT, HEAD_CT, ad,
                                                   sizeof(ad), kn + 32, kn) != 0)
        goto out;
    hl = head[0];
    if (hl == 0 || memchr(head + 1, 0, hl) != NULL)
        goto out;
    memcpy(handle, head + 1, hl);
    handle[hl] = '\0';
    *sender_device = msv_get_u64be(head + 1 + 255);
    err = MSV_OK;
out:
    sodium_memzero(shared_e, sizeof(shared_e));
    sodium_memzero(kn, sizeof(kn));
    sodium_memzero(head, sizeof(head));
    return err;
}

msv_err msv_sealed_unwrap(const struct msv_identity *recipient,
                          const struct msv_public_identity *sender, const uint8_t *wire, size_t len,
                          uint8_t **envelope, size_t *envelope_len)
{
    uint8_t shared_e[32], shared_s[32], kn[KN_LEN], ad[BODY_AT + 64], *inner = NULL;
    size_t inner_len;
    msv_err err = MSV_ERR_AUTH;

    if (sender == NULL || !(sender->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) ||
        !well_formed(recipient, wire, len))
        return MSV_ERR_AUTH;
    inner_len = len - BODY_AT - ABYTES;
    if (crypto_scalarmult(shared_e, recipient->modern->x_sk, wire + EPH_AT) != 0 ||
        crypto_scalarmult(shared_s, recipient->modern->x_sk, sender->x_pk) != 0 ||
        body_key(shared_e, shared_s, wire + EPH_AT, recipient->pub->x_pk, sender->x_pk, kn) !=
            MSV_OK)
        goto out;
    inner = malloc(inner_len);
    if (inner == NULL) {
        err = MSV_ERR_NOMEM;
        goto out;
    }
    body_ad(wire, recipient->pub->hash, sender->hash, ad);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(inner, NULL, NULL, wire + BODY_AT, len - BODY_AT,
                                                   ad, sizeof(ad), kn + 32, kn) != 0)
        goto out;
    *envelope = inner;
    *envelope_len = inner_len;
    inner = NULL;
    err = MSV_OK;
out:
    sodium_memzero(shared_e, sizeof(shared_e));
    sodium_memzero(shared_s, sizeof(shared_s));
    sodium_memzero(kn, sizeof(kn));
    free(inner);
    return err;
}
