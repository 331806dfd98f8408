/*
 * Sealed sender: the outer envelope that hides the sender from the relay and
 * proves it to the recipient (missive/sealed.h, docs/crypto.md "Sealed
 * sender"). Two layers: the first, keyed by the ephemeral key alone, names
 * the sender; the second is keyed by the ephemeral and the sender's static
 * X25519 key together, so only that sender can have made it.
 *
 * Two versions: 0x07 (X25519) for recipients of earlier versions, 0x09 for a
 * recipient whose identity says post-quantum ([8]): an ML-KEM-768 shared key,
 * encapsulated to the recipient's signed last-resort KEM prekey, goes into
 * both layers' keys beside the X25519 ones ("Hybrid sealed sender"). Each
 * version is refused where the other one is due.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/mlkem.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"

#define ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define EPH_AT 1
#define KEM_ID_AT 33                                 /* 0x09 || E */
#define KEM_CT_AT 37                                 /* 0x09 || E || u32be id */
#define HEAD_PT (1 + 255 + 8)                        /* u8 len || handle padded || device */
#define HEAD_CT (HEAD_PT + ABYTES)                   /* the first layer */
#define HEAD_AT_V7 33                                /* 0x07 || E */
#define HEAD_AT_V9 (KEM_CT_AT + MSV_MLKEM768_CT_LEN) /* 0x09 || E || id || CT */
#define BODY_AT_MAX (HEAD_AT_V9 + HEAD_CT)
/* the largest inner envelope: a hybrid session's first message (its 1,133-byte prefix) with a
 * post-quantum ratchet header offering a KEM key (1,234 bytes) around the largest plaintext */
#define INNER_MAX (MSV_PLAINTEXT_MAX + 4096)
#define KN_LEN 56     /* XChaCha20-Poly1305 key || nonce */
#define TAIL_LEN 96   /* SHA-256(KEM key) || SHA-256(CT) || H(recipient) */
#define DK_EK_AT 1152 /* FIPS 203: dk = dk_PKE (384 k) || ek || H(ek) || z */

static const char salt_head[] = "MSV-sealed-v2";
static const char salt_body[] = "MSV-sealed-v2-static";
static const char salt_head_pq[] = "MSV-sealed-pq-v1";
static const char salt_body_pq[] = "MSV-sealed-pq-v1-static";

/* The secrets and bindings of one envelope, on either side. */
struct seal_keys {
    int pq;
    uint8_t shared_e[32];   /* X25519(e, R) */
    uint8_t shared_s[32];   /* X25519(s, R) */
    uint8_t ss[32];         /* ML-KEM-768 shared key (pq) */
    uint8_t tail[TAIL_LEN]; /* what the pq info adds after the public keys */
    size_t head_at, body_at;
};

static void keys_clear(struct seal_keys *k)
{
    sodium_memzero(k, sizeof(*k));
}

static void keys_layout(struct seal_keys *k, int pq)
{
    k->pq = pq;
    k->head_at = pq ? HEAD_AT_V9 : HEAD_AT_V7;
    k->body_at = k->head_at + HEAD_CT;
}

/*
 * Both layers' key material: HKDF over the X25519 secrets (and the KEM key),
 * info E || R [|| S] (|| the pq tail).
 */
static msv_err layer_key(const struct seal_keys *k, int body, const uint8_t eph[32],
                         const uint8_t r[32], const uint8_t s[32], uint8_t kn[KN_LEN])
{
    uint8_t ikm[96], info[96 + TAIL_LEN];
    size_t ikm_len = 0, info_len = 0;
    const char *salt =
        k->pq ? (body ? salt_body_pq : salt_head_pq) : (body ? salt_body : salt_head);
    msv_err err;

    memcpy(ikm, k->shared_e, 32);
    ikm_len = 32;
    if (body) {
        memcpy(ikm + ikm_len, k->shared_s, 32);
        ikm_len += 32;
    }
    if (k->pq) {
        memcpy(ikm + ikm_len, k->ss, 32);
        ikm_len += 32;
    }
    memcpy(info, eph, 32);
    memcpy(info + 32, r, 32);
    info_len = 64;
    if (body) {
        memcpy(info + info_len, s, 32);
        info_len += 32;
    }
    if (k->pq) {
        memcpy(info + info_len, k->tail, TAIL_LEN);
        info_len += TAIL_LEN;
    }
    err = msv_hkdf_sha256(ikm, ikm_len, (const uint8_t *)salt, strlen(salt), info, info_len, kn,
                          KN_LEN);
    sodium_memzero(ikm, sizeof(ikm));
    return err;
}

/* The pq tail: SHA-256(KEM key) || SHA-256(CT) || H(recipient). */
static msv_err keys_tail(struct seal_keys *k, const uint8_t *ek, const uint8_t *ct,
                         const uint8_t r_hash[32])
{
    msv_err err = msv_sha256(ek, MSV_MLKEM768_EK_LEN, k->tail);

    if (err == MSV_OK)
        err = msv_sha256(ct, MSV_MLKEM768_CT_LEN, k->tail + 32);
    memcpy(k->tail + 64, r_hash, 32);
    return err;
}

/* The first layer's ad: everything before it || H(R). */
static size_t head_ad(const struct seal_keys *k, const uint8_t *wire, const uint8_t r_hash[32],
                      uint8_t *ad)
{
    memcpy(ad, wire, k->head_at);
    memcpy(ad + k->head_at, r_hash, 32);
    return k->head_at + 32;
}

/* The second layer's ad: everything before it || H(R) || H(S). */
static size_t body_ad(const struct seal_keys *k, const uint8_t *wire, const uint8_t r_hash[32],
                      const uint8_t s_hash[32], uint8_t *ad)
{
    memcpy(ad, wire, k->body_at);
    memcpy(ad + k->body_at, r_hash, 32);
    memcpy(ad + k->body_at + 32, s_hash, 32);
    return k->body_at + 64;
}

/* The sender's half of the agreements, written into wire's header. */
static msv_err wrap_keys(const struct msv_identity *sender,
                         const struct msv_public_identity *recipient,
                         const struct msv_sealing_key *kem, uint8_t *wire, struct seal_keys *k)
{
    uint8_t eph_sk[32];
    msv_err err = MSV_ERR_CRYPTO;

    keys_layout(k, kem != NULL);
    wire[0] = kem != NULL ? MSV_WIRE_SEALED_PQ : MSV_WIRE_SEALED;
    randombytes_buf(eph_sk, sizeof(eph_sk));
    if (crypto_scalarmult_base(wire + EPH_AT, eph_sk) != 0 ||
        crypto_scalarmult(k->shared_e, eph_sk, recipient->x_pk) != 0 ||
        crypto_scalarmult(k->shared_s, sender->modern->x_sk, recipient->x_pk) != 0)
        goto out;
    err = MSV_OK;
    if (kem != NULL) {
        msv_put_u32be(wire + KEM_ID_AT, kem->id);
        err = msv_mlkem768_encaps(kem->ek, sizeof(kem->ek), wire + KEM_CT_AT, k->ss);
        if (err == MSV_OK)
            err = keys_tail(k, kem->ek, wire + KEM_CT_AT, recipient->hash);
    }
out:
    sodium_memzero(eph_sk, sizeof(eph_sk));
    return err;
}

static msv_err wrap(const struct msv_identity *sender, const struct msv_public_identity *recipient,
                    const struct msv_sealing_key *kem, const char *sender_handle,
                    uint64_t sender_device, const uint8_t *envelope, size_t len, uint8_t **out,
                    size_t *out_len)
{
    size_t hl = sender_handle ? strlen(sender_handle) : 0, ad_len;
    uint8_t kn[KN_LEN], head[HEAD_PT], ad[BODY_AT_MAX + 64], *wire = NULL;
    struct seal_keys k;
    msv_err err;

    if (sender == NULL || sender->modern == NULL || recipient == NULL ||
        !(recipient->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) || hl == 0 || hl > 255 ||
        envelope == NULL || len == 0 || out == NULL ||
        (kem != NULL) != (msv_public_identity_is_pq(recipient) != 0))
        return MSV_ERR_INVALID; /* a post-quantum recipient gets 0x09 only, others 0x07 only */
    if (len > INNER_MAX)
        return MSV_ERR_TOO_BIG;
    wire = malloc(BODY_AT_MAX + len + ABYTES);
    if (wire == NULL)
        return MSV_ERR_NOMEM;
    memset(head, 0, sizeof(head));
    head[0] = (uint8_t)hl;
    memcpy(head + 1, sender_handle, hl);
    msv_put_u64be(head + 1 + 255, sender_device);
    err = wrap_keys(sender, recipient, kem, wire, &k);
    if (err == MSV_OK)
        err = layer_key(&k, 0, wire + EPH_AT, recipient->x_pk, NULL, kn);
    ad_len = head_ad(&k, wire, recipient->hash, ad);
    if (err == MSV_OK &&
        (crypto_aead_xchacha20poly1305_ietf_encrypt(wire + k.head_at, NULL, head, sizeof(head), ad,
                                                    ad_len, NULL, kn + 32, kn) != 0 ||
         layer_key(&k, 1, wire + EPH_AT, recipient->x_pk, sender->pub->x_pk, kn) != MSV_OK))
        err = MSV_ERR_CRYPTO;
    ad_len = body_ad(&k, wire, recipient->hash, sender->pub->hash, ad);
    if (err == MSV_OK &&
        crypto_aead_xchacha20poly1305_ietf_encrypt(wire + k.body_at, NULL, envelope, len, ad,
                                                   ad_len, NULL, kn + 32, kn) != 0)
        err = MSV_ERR_CRYPTO;
    if (err == MSV_OK) {
        *out = wire;
        *out_len = k.body_at + len + ABYTES;
        wire = NULL;
    }
    keys_clear(&k);
    sodium_memzero(kn, sizeof(kn));
    sodium_memzero(head, sizeof(head));
    free(wire);
    return err;
}

msv_err msv_sealed_wrap(const struct msv_identity *sender,
                        const struct msv_public_identity *recipient, const char *sender_handle,
                        uint64_t sender_device, const uint8_t *envelope, size_t len, uint8_t **out,
                        size_t *out_len)
{
    return wrap(sender, recipient, NULL, sender_handle, sender_device, envelope, len, out, out_len);
}

msv_err msv_sealed_wrap_pq(const struct msv_identity *sender,
                           const struct msv_public_identity *recipient,
                           const struct msv_sealing_key *kem, const char *sender_handle,
                           uint64_t sender_device, const uint8_t *envelope, size_t len,
                           uint8_t **out, size_t *out_len)
{
    if (kem == NULL)
        return MSV_ERR_INVALID;
    return wrap(sender, recipient, kem, sender_handle, sender_device, envelope, len, out, out_len);
}

msv_err msv_sealed_kem_id(const uint8_t *wire, size_t len, uint32_t *id)
{
    if (wire == NULL || len < HEAD_AT_V9 + HEAD_CT + ABYTES + 1 || wire[0] != MSV_WIRE_SEALED_PQ)
        return MSV_ERR_AUTH;
    *id = msv_get_u32be(wire + KEM_ID_AT);
    return *id != 0 ? MSV_OK : MSV_ERR_AUTH;
}

/*
 * The recipient's half: the version its identity calls for (0x09 with the KEM
 * secret given for a post-quantum one, 0x07 otherwise), a well-formed length,
 * then the agreements. MSV_ERR_AUTH for anything else.
 */
static msv_err open_keys(const struct msv_identity *recipient, const uint8_t *kem_dk,
                         const uint8_t *kem_ss, const uint8_t *wire, size_t len,
                         struct seal_keys *k)
{
    int pq;

    if (recipient == NULL || recipient->modern == NULL || wire == NULL || len < 1)
        return MSV_ERR_AUTH;
    pq = msv_public_identity_is_pq(recipient->pub) != 0;
    if (wire[0] != (pq ? MSV_WIRE_SEALED_PQ : MSV_WIRE_SEALED) || (pq && kem_dk == NULL))
        return MSV_ERR_AUTH; /* no downgrade, and no 0x09 where 0x07 is due */
    keys_layout(k, pq);
    if (len < k->body_at + ABYTES + 1 || len - k->body_at - ABYTES > INNER_MAX)
        return MSV_ERR_AUTH;
    if (crypto_scalarmult(k->shared_e, recipient->modern->x_sk, wire + EPH_AT) != 0)
        return MSV_ERR_AUTH;
    if (pq && kem_ss != NULL)
        memcpy(k->ss, kem_ss, sizeof(k->ss)); /* decapsulated for the first layer already */
    else if (pq && msv_mlkem768_decaps(kem_dk, MSV_MLKEM768_DK_LEN, wire + KEM_CT_AT,
                                       MSV_MLKEM768_CT_LEN, k->ss) != MSV_OK)
        return MSV_ERR_AUTH;
    if (pq && keys_tail(k, kem_dk + DK_EK_AT, wire + KEM_CT_AT, recipient->pub->hash) != MSV_OK)
        return MSV_ERR_AUTH;
    return MSV_OK;
}

static msv_err read_sender(const struct msv_identity *recipient, const uint8_t *kem_dk,
                           const uint8_t *wire, size_t len, char handle[256],
                           uint64_t *sender_device, uint8_t *kem_ss)
{
    uint8_t kn[KN_LEN], head[HEAD_PT], ad[HEAD_AT_V9 + 32];
    struct seal_keys k;
    size_t hl, ad_len;
    msv_err err = open_keys(recipient, kem_dk, NULL, wire, len, &k);

    if (err == MSV_OK)
        err = layer_key(&k, 0, wire + EPH_AT, recipient->pub->x_pk, NULL, kn);
    if (err == MSV_OK) {
        ad_len = head_ad(&k, wire, recipient->pub->hash, ad);
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(head, NULL, NULL, wire + k.head_at, HEAD_CT,
                                                       ad, ad_len, kn + 32, kn) != 0)
            err = MSV_ERR_AUTH;
    }
    hl = err == MSV_OK ? head[0] : 0;
    if (err == MSV_OK && (hl == 0 || memchr(head + 1, 0, hl) != NULL))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK) {
        memcpy(handle, head + 1, hl);
        handle[hl] = '\0';
        *sender_device = msv_get_u64be(head + 1 + 255);
        if (kem_ss != NULL)
            memcpy(kem_ss, k.ss, sizeof(k.ss));
    }
    keys_clear(&k);
    sodium_memzero(kn, sizeof(kn));
    sodium_memzero(head, sizeof(head));
    return err == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
}

msv_err msv_sealed_sender(const struct msv_identity *recipient, const uint8_t *wire, size_t len,
                          char handle[256], uint64_t *sender_device)
{
    return read_sender(recipient, NULL, wire, len, handle, sender_device, NULL);
}

msv_err msv_sealed_sender_pq(const struct msv_identity *recipient, const uint8_t *kem_dk,
                             const uint8_t *wire, size_t len, char handle[256],
                             uint64_t *sender_device, uint8_t kem_ss[32])
{
    return kem_dk == NULL
               ? MSV_ERR_AUTH
               : read_sender(recipient, kem_dk, wire, len, handle, sender_device, kem_ss);
}

static msv_err unwrap(const struct msv_identity *recipient, const uint8_t *kem_dk,
                      const uint8_t *kem_ss, const struct msv_public_identity *sender,
                      const uint8_t *wire, size_t len, uint8_t **envelope, size_t *envelope_len)
{
    uint8_t kn[KN_LEN], ad[BODY_AT_MAX + 64], *inner = NULL;
    struct seal_keys k;
    size_t inner_len = 0, ad_len;
    msv_err err = MSV_ERR_AUTH;

    if (sender == NULL || !(sender->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return MSV_ERR_AUTH;
    err = open_keys(recipient, kem_dk, kem_ss, wire, len, &k);
    if (err == MSV_OK && crypto_scalarmult(k.shared_s, recipient->modern->x_sk, sender->x_pk) != 0)
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = layer_key(&k, 1, wire + EPH_AT, recipient->pub->x_pk, sender->x_pk, kn);
    if (err == MSV_OK) {
        inner_len = len - k.body_at - ABYTES;
        inner = malloc(inner_len);
        err = inner == NULL ? MSV_ERR_NOMEM : MSV_OK;
    }
    if (err == MSV_OK) {
        ad_len = body_ad(&k, wire, recipient->pub->hash, sender->hash, ad);
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(
                inner, NULL, NULL, wire + k.body_at, len - k.body_at, ad, ad_len, kn + 32, kn) != 0)
            err = MSV_ERR_AUTH;
    }
    if (err == MSV_OK) {
        *envelope = inner;
        *envelope_len = inner_len;
        inner = NULL;
    }
    keys_clear(&k);
    sodium_memzero(kn, sizeof(kn));
    free(inner);
    return err == MSV_OK || err == MSV_ERR_NOMEM ? err : MSV_ERR_AUTH;
}

msv_err msv_sealed_unwrap(const struct msv_identity *recipient,
                          const struct msv_public_identity *sender, const uint8_t *wire, size_t len,
                          uint8_t **envelope, size_t *envelope_len)
{
    return unwrap(recipient, NULL, NULL, sender, wire, len, envelope, envelope_len);
}

msv_err msv_sealed_unwrap_pq(const struct msv_identity *recipient, const uint8_t *kem_dk,
                             const uint8_t *kem_ss, const struct msv_public_identity *sender,
                             const uint8_t *wire, size_t len, uint8_t **envelope,
                             size_t *envelope_len)
{
    return kem_dk == NULL
               ? MSV_ERR_AUTH
               : unwrap(recipient, kem_dk, kem_ss, sender, wire, len, envelope, envelope_len);
}
