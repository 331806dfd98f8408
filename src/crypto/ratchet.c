/*
 * X3DH and the Double Ratchet over X25519, HKDF-SHA256, HMAC-SHA256 and
 * XChaCha20-Poly1305 (docs/crypto.md, "Sessions").
 *
 *   SK      = HKDF(ikm 0xFF*32 || DH1 || DH2 || DH3 [|| DH4], salt 0*32,
 *                  info "MSV-x3dh-v1", 32 bytes)
 *             DH1 = DH(IKa, SPKb), DH2 = DH(EKa, IKb), DH3 = DH(EKa, SPKb),
 *             DH4 = DH(EKa, OPKb)
 *   AD      = H(initiator identity) || H(responder identity)
 *   KDF_RK  = HKDF(ikm DH output, salt RK, info "MSV-ratchet-v1", 64) -> RK' || CK
 *   KDF_CK  = MK = HMAC(CK, 0x01), CK' = HMAC(CK, 0x02)
 *   key, nonce = HKDF(ikm MK, salt 0*32, info "MSV-ratchet-msg-v1", 56 bytes)
 *   message = 0x05 || DH (32) || u32be PN || u32be N
 *             || XChaCha20-Poly1305(ad AD || header, P)
 *   prekey message = 0x06 || EKa (32) || u32be SPK id || u32be OPK id (0: none)
 *             || message
 *
 * Hybrid (post-quantum) start, "Post-quantum sessions":
 *   CT, SS  = ML-KEM-768.Encaps(KEM prekey)
 *   SK      = HKDF(ikm 0xFF*32 || DH1 || DH2 || DH3 [|| DH4] || SS, salt 0*32,
 *                  info "MSV-pqxdh-v1" || u32be KEM id || SHA-256(KEM prekey) || SHA-256(CT))
 *   prekey message = 0x08 || EKa || u32be SPK id || u32be OPK id || u32be KEM id || CT
 *             || PQ message
 *
 * Post-quantum ratchet, "The post-quantum ratchet": a hybrid session's messages are
 *   PQ message = 0x0A || DH || u32be PN || u32be N || u32be step || u8 flags
 *             [|| u32be EK id || EK] [|| u32be CT id || CT] || AEAD(ad AD || header, P)
 *   a party that decapsulated the peer's CT to its EK mixes the secret into the root key at
 *   its next sending chain, and names the EK id in that chain's step field:
 *   KDF_RK_PQ = HKDF(ikm DH output || SS, salt RK, info "MSV-pqratchet-v1" || u32be id, 64)
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/mlkem.h"
#include "missive/ratchet.h"
#include "missive/util.h"
#include "util/buf.h"
#include "util/endian.h"

#define HEADER_LEN 41    /* 0x05 || DH || PN || N */
#define PQ_HEADER_LEN 46 /* ... || step || flags */
#define PQ_HEADER_MAX (PQ_HEADER_LEN + 8 + MSV_MLKEM768_EK_LEN + MSV_MLKEM768_CT_LEN)
#define FLAG_EK 1u
#define FLAG_CT 2u
#define PREFIX_LEN 41                                        /* 0x06 || EK || SPK id || OPK id */
#define PQ_PREFIX_LEN (PREFIX_LEN + 4 + MSV_MLKEM768_CT_LEN) /* 0x08 || ... || KEM id || CT */
#define ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define PREV_CHAINS 32 /* receiving chains remembered to tell a duplicate from a forgery */

static const char x3dh_info[] = "MSV-x3dh-v1";
static const char root_info[] = "MSV-ratchet-v1";
static const char msg_info[] = "MSV-ratchet-msg-v1";
static const char pqxdh_info[] = "MSV-pqxdh-v1";
static const char pq_root_info[] = "MSV-pqratchet-v1";
static const char spk_context[] = "MSV-spk-v1";
static const char kem_context[] = "MSV-kem-prekey-v1";
static const uint8_t zero_salt[32];

struct skipped_key {
    uint8_t dh[32];
    uint32_t n;
    uint8_t mk[32];
};

struct msv_session {
    uint8_t ad[64];
    uint8_t rk[32];
    uint8_t dhs_sk[32], dhs_pk[32];
    uint8_t dhr[32];
    uint8_t cks[32], ckr[32];
    uint8_t has_dhr, has_cks, has_ckr;
    uint32_t ns, nr, pn;
    /* initiator, until the first answer: the prefix every message carries (the
     * prekey ids are the responder's too, to check later copies against) */
    uint8_t pending;
    uint8_t base_key[32];
    uint32_t spk_id, opk_id;
    /* hybrid: the KEM prekey id and the SHA-256 of the ciphertext (both sides); the
     * initiator keeps the ciphertext for the prefix until the first answer */
    uint8_t pq;
    uint32_t kem_id;
    uint8_t kem_ct_hash[32];
    uint8_t kem_ct[MSV_MLKEM768_CT_LEN];
    /* post-quantum ratchet (pq sessions): legacy: stored before it began, whose earlier
     * chains may still bring 0x05 messages */
    uint8_t legacy;
    uint32_t cks_step; /* the KEM step the current sending chain names (0: none) */
    uint32_t steps;    /* KEM steps mixed so far */
    /* our offer: a fresh KEM key until the peer's ciphertext to it comes */
    uint8_t offering;
    uint32_t my_kem_id, offer_age;
    uint8_t my_ek[MSV_MLKEM768_EK_LEN], my_dk[MSV_MLKEM768_DK_LEN];
    /* decapsulated from the peer's ciphertext: mixed at our next sending chain */
    uint8_t has_mix;
    uint32_t mix_id;
    uint8_t mix_ss[32];
    /* our encapsulation to the peer's offer, carried until its chain names it */
    uint8_t has_enc;
    uint32_t enc_id, peer_kem_done, enc_age;
    uint8_t enc_ct[MSV_MLKEM768_CT_LEN], enc_ss[32];
    /* when the next offer is due: messages sent and the time since our last KEM step */
    uint32_t sent_since_step;
    int64_t step_ms; /* 0: set at the next message sent */
    /* responder: the base key the session was answered from */
    uint8_t has_their_base;
    uint8_t their_base[32];
    /* receiving chains before the current one, and where each stopped */
    uint8_t n_prev;
    uint8_t prev_dh[PREV_CHAINS][32];
    uint32_t prev_nr[PREV_CHAINS];
    size_t n_skipped;
    struct skipped_key *skipped; /* oldest first */
};

void msv_session_free(struct msv_session *s)
{
    if (s == NULL)
        return;
    msv_secret_free(s->skipped, s->n_skipped * sizeof(*s->skipped));
    msv_secret_free(s, sizeof(*s));
}

msv_err msv_session_dup(const struct msv_session *s, struct msv_session **out)
{
    struct msv_session *d = malloc(sizeof(*d));

    if (d == NULL)
        return MSV_ERR_NOMEM;
    *d = *s;
    d->skipped = NULL;
    if (s->n_skipped > 0) {
        d->skipped = malloc(s->n_skipped * sizeof(*s->skipped));
        if (d->skipped == NULL) {
            msv_secret_free(d, sizeof(*d));
            return MSV_ERR_NOMEM;
        }
        memcpy(d->skipped, s->skipped, s->n_skipped * sizeof(*s->skipped));
    }
    *out = d;
    return MSV_OK;
}

/* ---- key derivations ---- */

static msv_err kdf_rk(uint8_t rk[32], const uint8_t dh_out[32], uint8_t ck[32])
{
    uint8_t okm[64];
    msv_err err = msv_hkdf_sha256(dh_out, 32, rk, 32, (const uint8_t *)root_info,
                                  sizeof(root_info) - 1, okm, sizeof(okm));

    if (err == MSV_OK) {
        memcpy(rk, okm, 32);
        memcpy(ck, okm + 32, 32);
    }
    sodium_memzero(okm, sizeof(okm));
    return err;
}

/* A root step that mixes the KEM secret of step id in with the DH output. */
static msv_err kdf_rk_pq(uint8_t rk[32], const uint8_t dh_out[32], const uint8_t ss[32],
                         uint32_t id, uint8_t ck[32])
{
    uint8_t ikm[64], info[sizeof(pq_root_info) + 3], okm[64];
    msv_err err;

    memcpy(ikm, dh_out, 32);
    memcpy(ikm + 32, ss, 32);
    memcpy(info, pq_root_info, sizeof(pq_root_info) - 1);
    msv_put_u32be(info + sizeof(pq_root_info) - 1, id);
    err = msv_hkdf_sha256(ikm, sizeof(ikm), rk, 32, info, sizeof(info), okm, sizeof(okm));
    if (err == MSV_OK) {
        memcpy(rk, okm, 32);
        memcpy(ck, okm + 32, 32);
    }
    sodium_memzero(ikm, sizeof(ikm));
    sodium_memzero(okm, sizeof(okm));
    return err;
}

static msv_err kdf_ck(uint8_t ck[32], uint8_t mk[32])
{
    static const uint8_t one = 1, two = 2;
    const uint8_t *p1[1] = {&one}, *p2[1] = {&two};
    size_t l[1] = {1};
    uint8_t next[32];
    msv_err err = msv_hmac_sha256_parts(ck, 32, p1, l, 1, mk);

    if (err == MSV_OK)
        err = msv_hmac_sha256_parts(ck, 32, p2, l, 1, next);
    if (err == MSV_OK)
        memcpy(ck, next, 32);
    sodium_memzero(next, sizeof(next));
    return err;
}

static msv_err dh(uint8_t out[32], const uint8_t sk[32], const uint8_t pk[32])
{
    /* fails on an all-zero result: a small-order point */
    return crypto_scalarmult(out, sk, pk) == 0 ? MSV_OK : MSV_ERR_AUTH;
}

static void new_key_pair(const struct msv_rng *rng, uint8_t sk[32], uint8_t pk[32])
{
    rng->fill(rng->ctx, sk, 32);
    crypto_scalarmult_base(pk, sk);
}

/* AEAD under a message key; ad = AD || header. */
static msv_err seal_with(const uint8_t mk[32], const uint8_t ad[64], const uint8_t *header,
                         size_t h_len, const uint8_t *pt, size_t len, uint8_t *ct)
{
    uint8_t kn[56], aad[64 + PQ_HEADER_MAX];
    msv_err err = msv_hkdf_sha256(mk, 32, zero_salt, 32, (const uint8_t *)msg_info,
                                  sizeof(msg_info) - 1, kn, sizeof(kn));

    memcpy(aad, ad, 64);
    memcpy(aad + 64, header, h_len);
    if (err == MSV_OK && crypto_aead_xchacha20poly1305_ietf_encrypt(
                             ct, NULL, pt, len, aad, 64 + h_len, NULL, kn + 32, kn) != 0)
        err = MSV_ERR_CRYPTO;
    sodium_memzero(kn, sizeof(kn));
    return err;
}

static msv_err open_with(const uint8_t mk[32], const uint8_t ad[64],
                         const struct msv_ratchet_header *h, const uint8_t *ct, size_t ct_len,
                         uint8_t *pt)
{
    uint8_t kn[56], aad[64 + PQ_HEADER_MAX];
    const uint8_t *header = h->dh - 1;
    msv_err err = msv_hkdf_sha256(mk, 32, zero_salt, 32, (const uint8_t *)msg_info,
                                  sizeof(msg_info) - 1, kn, sizeof(kn));

    memcpy(aad, ad, 64);
    memcpy(aad + 64, header, h->len);
    if (err == MSV_OK && crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, ct, ct_len, aad,
                                                                    64 + h->len, kn + 32, kn) != 0)
        err = MSV_ERR_AUTH;
    sodium_memzero(kn, sizeof(kn));
    return err;
}

/* ---- prekeys ---- */

static void spk_message(uint32_t key_id, const uint8_t pk[32],
                        uint8_t msg[sizeof(spk_context) + 35])
{
    memcpy(msg, spk_context, sizeof(spk_context) - 1);
    msv_put_u32be(msg + sizeof(spk_context) - 1, key_id);
    memcpy(msg + sizeof(spk_context) + 3, pk, 32);
}

msv_err msv_prekey_generate_rng(const struct msv_identity *id, uint32_t key_id,
                                const struct msv_rng *rng, struct msv_prekey *out, uint8_t sig[64])
{
    uint8_t msg[sizeof(spk_context) + 35];

    if (id == NULL || id->modern == NULL || out == NULL || key_id == 0)
        return MSV_ERR_INVALID;
    out->id = key_id;
    new_key_pair(rng, out->sk, out->pk);
    if (sig == NULL)
        return MSV_OK;
    spk_message(key_id, out->pk, msg);
    return crypto_sign_detached(sig, NULL, msg, sizeof(msg), id->modern->ed_sk) == 0
               ? MSV_OK
               : MSV_ERR_CRYPTO;
}

msv_err msv_prekey_generate(const struct msv_identity *id, uint32_t key_id, struct msv_prekey *out,
                            uint8_t sig[64])
{
    return msv_prekey_generate_rng(id, key_id, &msv_rng_system, out, sig);
}

msv_err msv_signed_prekey_verify(const struct msv_public_identity *pub, uint32_t key_id,
                                 const uint8_t pk[32], const uint8_t sig[64])
{
    uint8_t msg[sizeof(spk_context) + 35];

    if (pub == NULL || !(pub->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return MSV_ERR_INVALID;
    spk_message(key_id, pk, msg);
    return crypto_sign_verify_detached(sig, msg, sizeof(msg), pub->ed_pk) == 0 ? MSV_OK
                                                                               : MSV_ERR_AUTH;
}

/* "MSV-kem-prekey-v1" || u32be id || u8 last_resort || ek, what a KEM prekey's signature covers */
static msv_err kem_message(uint32_t key_id, int last_resort, const uint8_t *ek, uint8_t **msg,
                           size_t *len)
{
    size_t n = sizeof(kem_context) - 1 + 5 + MSV_MLKEM768_EK_LEN;
    uint8_t *m = malloc(n);

    if (m == NULL)
        return MSV_ERR_NOMEM;
    memcpy(m, kem_context, sizeof(kem_context) - 1);
    msv_put_u32be(m + sizeof(kem_context) - 1, key_id);
    m[sizeof(kem_context) + 3] = last_resort ? 1 : 0;
    memcpy(m + sizeof(kem_context) + 4, ek, MSV_MLKEM768_EK_LEN);
    *msg = m;
    *len = n;
    return MSV_OK;
}

msv_err msv_kem_prekey_generate_rng(const struct msv_identity *id, uint32_t key_id, int last_resort,
                                    const struct msv_rng *rng, struct msv_kem_prekey *out,
                                    uint8_t sig[64])
{
    uint8_t seed[MSV_MLKEM768_SEED_LEN], *msg = NULL;
    size_t len = 0;
    msv_err err;

    if (id == NULL || id->modern == NULL || out == NULL || sig == NULL || key_id == 0)
        return MSV_ERR_INVALID;
    rng->fill(rng->ctx, seed, sizeof(seed));
    out->id = key_id;
    out->last_resort = last_resort ? 1 : 0;
    err = msv_mlkem768_keygen_seed(seed, sizeof(seed), out->ek, out->dk);
    sodium_memzero(seed, sizeof(seed));
    if (err == MSV_OK)
        err = kem_message(key_id, last_resort, out->ek, &msg, &len);
    if (err == MSV_OK && crypto_sign_detached(sig, NULL, msg, len, id->modern->ed_sk) != 0)
        err = MSV_ERR_CRYPTO;
    free(msg);
    return err;
}

msv_err msv_kem_prekey_generate(const struct msv_identity *id, uint32_t key_id, int last_resort,
                                struct msv_kem_prekey *out, uint8_t sig[64])
{
    return msv_kem_prekey_generate_rng(id, key_id, last_resort, &msv_rng_system, out, sig);
}

msv_err msv_kem_prekey_verify(const struct msv_public_identity *pub, uint32_t key_id,
                              int last_resort, const uint8_t *ek, size_t ek_len,
                              const uint8_t sig[64])
{
    uint8_t *msg = NULL;
    size_t len = 0;
    msv_err err;

    if (pub == NULL || !(pub->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) || ek == NULL ||
        sig == NULL)
        return MSV_ERR_INVALID;
    if (ek_len != MSV_MLKEM768_EK_LEN || key_id == 0)
        return MSV_ERR_AUTH;
    err = kem_message(key_id, last_resort, ek, &msg, &len);
    if (err == MSV_OK && crypto_sign_verify_detached(sig, msg, len, pub->ed_pk) != 0)
        err = MSV_ERR_AUTH;
    free(msg);
    return err;
}

/* ---- X3DH ---- */

/*
 * The hybrid part of SK's derivation (NULL for a classical session): the KEM
 * shared secret joins the DH outputs, and the info binds the KEM prekey's id,
 * its key and the ciphertext.
 */
struct kem_part {
    uint32_t id;
    uint8_t ss[MSV_MLKEM768_SS_LEN];
    uint8_t ek_hash[32];
    uint8_t ct_hash[32];
};

/* SK from the four (or three) DH outputs, in the initiator's order, and the KEM secret. */
static msv_err x3dh_secret(const uint8_t dhs[4][32], int n, const struct kem_part *kem,
                           uint8_t sk[32])
{
    uint8_t ikm[32 + 5 * 32], info[sizeof(pqxdh_info) - 1 + 4 + 64];
    size_t ikm_len = 32 + 32 * (size_t)n, info_len = sizeof(x3dh_info) - 1;
    msv_err err;

    memset(ikm, 0xff, 32);
    for (int i = 0; i < n; i++)
        memcpy(ikm + 32 + 32 * i, dhs[i], 32);
    memcpy(info, x3dh_info, info_len);
    if (kem != NULL) {
        memcpy(ikm + ikm_len, kem->ss, 32);
        ikm_len += 32;
        info_len = sizeof(pqxdh_info) - 1;
        memcpy(info, pqxdh_info, info_len);
        msv_put_u32be(info + info_len, kem->id);
        memcpy(info + info_len + 4, kem->ek_hash, 32);
        memcpy(info + info_len + 36, kem->ct_hash, 32);
        info_len += 68;
    }
    err = msv_hkdf_sha256(ikm, ikm_len, zero_salt, 32, info, info_len, sk, 32);
    sodium_memzero(ikm, sizeof(ikm));
    return err;
}

static msv_err sha256(const uint8_t *in, size_t len, uint8_t out[32])
{
    const uint8_t *parts[1] = {in};
    size_t lens[1] = {len};

    return msv_sha256_parts(parts, lens, 1, out);
}

/* The initiator's encapsulation to the bundle's KEM prekey, after checking its signature. */
static msv_err kem_encaps(const struct msv_public_identity *peer, const struct msv_prekey_bundle *b,
                          const struct msv_rng *rng, struct kem_part *kem,
                          uint8_t ct[MSV_MLKEM768_CT_LEN])
{
    uint8_t coins[MSV_MLKEM768_COINS_LEN];
    msv_err err;

    if (!b->has_kem)
        return MSV_ERR_AUTH; /* a post-quantum peer gets a hybrid session or none */
    err = msv_kem_prekey_verify(peer, b->kem_id, b->kem_last_resort, b->kem_pk, sizeof(b->kem_pk),
                                b->kem_sig);
    if (err != MSV_OK)
        return MSV_ERR_AUTH;
    rng->fill(rng->ctx, coins, sizeof(coins));
    err = msv_mlkem768_encaps_coins(b->kem_pk, sizeof(b->kem_pk), coins, ct, kem->ss);
    sodium_memzero(coins, sizeof(coins));
    if (err == MSV_ERR_PARSE)
        return MSV_ERR_AUTH;
    kem->id = b->kem_id;
    if (err == MSV_OK)
        err = sha256(b->kem_pk, sizeof(b->kem_pk), kem->ek_hash);
    if (err == MSV_OK)
        err = sha256(ct, MSV_MLKEM768_CT_LEN, kem->ct_hash);
    return err;
}

static msv_err session_new(const struct msv_public_identity *initiator,
                           const struct msv_public_identity *responder, struct msv_session **out)
{
    struct msv_session *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return MSV_ERR_NOMEM;
    memcpy(s->ad, initiator->hash, 32);
    memcpy(s->ad + 32, responder->hash, 32);
    *out = s;
    return MSV_OK;
}

msv_err msv_session_initiate_rng(const struct msv_identity *me,
                                 const struct msv_public_identity *peer,
                                 const struct msv_prekey_bundle *b, const struct msv_rng *rng,
                                 struct msv_session **out)
{
    uint8_t ek_sk[32], dhs[4][32], sk[32], dh_out[32];
    struct msv_session *s = NULL;
    struct kem_part kem = {0};
    int n = b->one_time_id != 0 ? 4 : 3;
    msv_err err;

    if (me == NULL || me->modern == NULL || peer == NULL ||
        !(peer->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return MSV_ERR_INVALID;
    err = msv_signed_prekey_verify(peer, b->signed_id, b->signed_pk, b->signed_sig);
    if (err == MSV_OK)
        err = session_new(me->pub, peer, &s);
    if (err != MSV_OK)
        return err;
    if (peer->pq) {
        s->pq = 1;
        err = kem_encaps(peer, b, rng, &kem, s->kem_ct);
        if (err != MSV_OK) {
            sodium_memzero(&kem, sizeof(kem)); /* a shared secret made before a hash failed */
            msv_session_free(s);
            return err;
        }
        s->kem_id = kem.id;
        memcpy(s->kem_ct_hash, kem.ct_hash, 32);
    }
    new_key_pair(rng, ek_sk, s->base_key);
    err = dh(dhs[0], me->modern->x_sk, b->signed_pk);
    if (err == MSV_OK)
        err = dh(dhs[1], ek_sk, peer->x_pk);
    if (err == MSV_OK)
        err = dh(dhs[2], ek_sk, b->signed_pk);
    if (err == MSV_OK && n == 4)
        err = dh(dhs[3], ek_sk, b->one_time_pk);
    if (err == MSV_OK)
        err = x3dh_secret(dhs, n, s->pq ? &kem : NULL, sk);
    if (err == MSV_OK) {
        /* the first sending chain: a fresh ratchet key against the signed prekey */
        memcpy(s->rk, sk, 32);
        new_key_pair(rng, s->dhs_sk, s->dhs_pk);
        memcpy(s->dhr, b->signed_pk, 32);
        s->has_dhr = 1;
        err = dh(dh_out, s->dhs_sk, s->dhr);
    }
    if (err == MSV_OK)
        err = kdf_rk(s->rk, dh_out, s->cks);
    if (err == MSV_OK) {
        s->has_cks = 1;
        s->pending = 1;
        s->spk_id = b->signed_id;
        s->opk_id = b->one_time_id;
        *out = s;
        s = NULL;
    }
    sodium_memzero(ek_sk, sizeof(ek_sk));
    sodium_memzero(dhs, sizeof(dhs));
    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(dh_out, sizeof(dh_out));
    sodium_memzero(&kem, sizeof(kem));
    msv_session_free(s);
    return err;
}

msv_err msv_session_initiate(const struct msv_identity *me, const struct msv_public_identity *peer,
                             const struct msv_prekey_bundle *bundle, struct msv_session **out)
{
    if (bundle == NULL || out == NULL)
        return MSV_ERR_INVALID;
    return msv_session_initiate_rng(me, peer, bundle, &msv_rng_system, out);
}

/* The length of a prekey message's prefix, 0 if wire does not begin with one. */
static size_t prefix_len(const uint8_t *wire, size_t len)
{
    size_t n = 0;

    if (len > 0 && wire[0] == MSV_WIRE_PREKEY_MSG)
        n = PREFIX_LEN;
    else if (len > 0 && wire[0] == MSV_WIRE_PQ_PREKEY_MSG)
        n = PQ_PREFIX_LEN;
    /* a 0x06 starts a classical session (0x05 messages), a 0x08 a post-quantum one (0x0A) */
    if (n == 0 || len < n + HEADER_LEN + ABYTES ||
        wire[n] != (wire[0] == MSV_WIRE_PREKEY_MSG ? MSV_WIRE_RATCHET : MSV_WIRE_PQ_RATCHET))
        return 0;
    return n;
}

/* A u32be id (0 is not one: Q3) and n bytes of a 0x0A header's KEM part, at *at. */
static msv_err kem_part(const uint8_t *wire, size_t len, size_t *at, size_t n, uint32_t *id,
                        const uint8_t **p)
{
    if (len - *at < 4 + n || msv_get_u32be(wire + *at) == 0)
        return MSV_ERR_PARSE;
    *id = msv_get_u32be(wire + *at);
    *p = wire + *at + 4;
    *at += 4 + n;
    return MSV_OK;
}

msv_err msv_ratchet_header_parse(const uint8_t *wire, size_t len, struct msv_ratchet_header *h)
{
    struct msv_ratchet_header x = {0};
    size_t at;

    if (wire == NULL || h == NULL || len < HEADER_LEN ||
        (wire[0] != MSV_WIRE_RATCHET && wire[0] != MSV_WIRE_PQ_RATCHET))
        return MSV_ERR_PARSE;
    x.version = wire[0];
    x.dh = wire + 1;
    x.pn = msv_get_u32be(wire + 33);
    x.n = msv_get_u32be(wire + 37);
    at = HEADER_LEN;
    if (x.version == MSV_WIRE_PQ_RATCHET) {
        uint8_t flags;

        if (len < PQ_HEADER_LEN)
            return MSV_ERR_PARSE;
        x.step = msv_get_u32be(wire + 41);
        flags = wire[45];
        at = PQ_HEADER_LEN;
        if (flags & ~(FLAG_EK | FLAG_CT))
            return MSV_ERR_PARSE; /* Q2 */
        if ((flags & FLAG_EK) &&
            kem_part(wire, len, &at, MSV_MLKEM768_EK_LEN, &x.ek_id, &x.ek) != MSV_OK)
            return MSV_ERR_PARSE;
        if ((flags & FLAG_CT) &&
            kem_part(wire, len, &at, MSV_MLKEM768_CT_LEN, &x.ct_id, &x.ct) != MSV_OK)
            return MSV_ERR_PARSE;
    }
    /* Q4: room for the tag, and no more than the largest plaintext */
    if (len - at < ABYTES || len - at - ABYTES > MSV_PLAINTEXT_MAX)
        return MSV_ERR_PARSE;
    x.len = at;
    *h = x;
    return MSV_OK;
}

msv_err msv_prekey_message_kem_id(const uint8_t *wire, size_t len, uint32_t *kem_id)
{
    if (wire == NULL || kem_id == NULL || prefix_len(wire, len) != PQ_PREFIX_LEN)
        return MSV_ERR_PARSE;
    *kem_id = msv_get_u32be(wire + PREFIX_LEN);
    return MSV_OK;
}

int msv_session_is_pq(const struct msv_session *s)
{
    return s->pq;
}

uint32_t msv_session_pq_steps(const struct msv_session *s)
{
    return s->steps;
}

msv_err msv_prekey_message_info(const uint8_t *wire, size_t len, uint32_t *signed_id,
                                uint32_t *one_time_id, uint8_t base_key[32])
{
    if (wire == NULL || prefix_len(wire, len) == 0)
        return MSV_ERR_PARSE;
    memcpy(base_key, wire + 1, 32);
    *signed_id = msv_get_u32be(wire + 33);
    *one_time_id = msv_get_u32be(wire + 37);
    return MSV_OK;
}

int msv_session_has_base_key(const struct msv_session *s, const uint8_t base_key[32])
{
    return s->has_their_base && sodium_memcmp(s->their_base, base_key, 32) == 0;
}

/* ---- sending ---- */

/* A fresh KEM key to offer when one is due: MSV_PQ_REKEY_MESSAGES sent or MSV_PQ_REKEY_MS. */
static msv_err maybe_offer(struct msv_session *s, const struct msv_rng *rng, int64_t now_ms)
{
    uint8_t seed[MSV_MLKEM768_SEED_LEN];
    msv_err err;

    if (s->step_ms == 0)
        s->step_ms = now_ms;
    if (s->offering || s->has_mix ||
        (s->sent_since_step < MSV_PQ_REKEY_MESSAGES && now_ms - s->step_ms < MSV_PQ_REKEY_MS))
        return MSV_OK;
    rng->fill(rng->ctx, seed, sizeof(seed));
    err = msv_mlkem768_keygen_seed(seed, sizeof(seed), s->my_ek, s->my_dk);
    sodium_memzero(seed, sizeof(seed));
    if (err != MSV_OK)
        return err;
    s->offering = 1;
    s->my_kem_id++;
    s->offer_age = MSV_PQ_REPEAT; /* on this message */
    return MSV_OK;
}

/* Writes a 0x0A header for message n of the sending chain; its length. */
static size_t put_pq_header(struct msv_session *s, uint8_t *h, int with_ek, int with_ct)
{
    size_t at = PQ_HEADER_LEN;

    h[0] = MSV_WIRE_PQ_RATCHET;
    memcpy(h + 1, s->dhs_pk, 32);
    msv_put_u32be(h + 33, s->pn);
    msv_put_u32be(h + 37, s->ns);
    msv_put_u32be(h + 41, s->cks_step);
    h[45] = (uint8_t)((with_ek ? FLAG_EK : 0) | (with_ct ? FLAG_CT : 0));
    if (with_ek) {
        msv_put_u32be(h + at, s->my_kem_id);
        memcpy(h + at + 4, s->my_ek, MSV_MLKEM768_EK_LEN);
        at += 4 + MSV_MLKEM768_EK_LEN;
    }
    if (with_ct) {
        msv_put_u32be(h + at, s->enc_id);
        memcpy(h + at + 4, s->enc_ct, MSV_MLKEM768_CT_LEN);
        at += 4 + MSV_MLKEM768_CT_LEN;
    }
    return at;
}

msv_err msv_session_encrypt_at(struct msv_session *s, const uint8_t *pt, size_t len,
                               const struct msv_rng *rng, int64_t now_ms, uint8_t **out,
                               size_t *out_len)
{
    size_t pre, h_len = HEADER_LEN, total;
    uint8_t mk[32], ck[32], *wire, *h;
    int with_ek = 0, with_ct = 0;
    msv_err err;

    if (s == NULL || (pt == NULL && len > 0) || out == NULL)
        return MSV_ERR_INVALID;
    if (len > MSV_PLAINTEXT_MAX)
        return MSV_ERR_TOO_BIG;
    if (!s->has_cks)
        return MSV_ERR_INVALID; /* a responder sends once it has received */
    if (s->ns == UINT32_MAX)
        return MSV_ERR_TOO_BIG;
    if (s->pq) {
        err = maybe_offer(s, rng, now_ms);
        if (err != MSV_OK)
            return err;
        /* one KEM part per message at most, the ciphertext first (it completes the peer's
         * step): a party that is both offering and answering and never hears back still
         * adds at most (1188 + 1092) / MSV_PQ_REPEAT + 5 bytes per message */
        with_ct = s->has_enc && s->enc_age >= MSV_PQ_REPEAT;
        with_ek = s->offering && s->offer_age >= MSV_PQ_REPEAT && !with_ct;
        h_len = PQ_HEADER_LEN + (with_ek ? 4 + MSV_MLKEM768_EK_LEN : 0) +
                (with_ct ? 4 + MSV_MLKEM768_CT_LEN : 0);
    }
    pre = s->pending ? (s->pq ? PQ_PREFIX_LEN : PREFIX_LEN) : 0;
    total = pre + h_len + len + ABYTES;
    wire = malloc(total);
    if (wire == NULL)
        return MSV_ERR_NOMEM;
    if (s->pending) {
        wire[0] = s->pq ? MSV_WIRE_PQ_PREKEY_MSG : MSV_WIRE_PREKEY_MSG;
        memcpy(wire + 1, s->base_key, 32);
        msv_put_u32be(wire + 33, s->spk_id);
        msv_put_u32be(wire + 37, s->opk_id);
        if (s->pq) {
            msv_put_u32be(wire + PREFIX_LEN, s->kem_id);
            memcpy(wire + PREFIX_LEN + 4, s->kem_ct, MSV_MLKEM768_CT_LEN);
        }
    }
    h = wire + pre;
    if (s->pq) {
        (void)put_pq_header(s, h, with_ek, with_ct);
    } else {
        h[0] = MSV_WIRE_RATCHET;
        memcpy(h + 1, s->dhs_pk, 32);
        msv_put_u32be(h + 33, s->pn);
        msv_put_u32be(h + 37, s->ns);
    }
    memcpy(ck, s->cks, 32);
    err = kdf_ck(ck, mk);
    if (err == MSV_OK)
        err = seal_with(mk, s->ad, h, h_len, pt, len, h + h_len);
    if (err == MSV_OK) {
        memcpy(s->cks, ck, 32);
        s->ns++;
        s->sent_since_step += s->sent_since_step < UINT32_MAX;
        s->offer_age = with_ek ? 1 : s->offer_age + (s->offer_age < UINT32_MAX);
        s->enc_age = with_ct ? 1 : s->enc_age + (s->enc_age < UINT32_MAX);
        *out = wire;
        *out_len = total;
        wire = NULL;
    }
    sodium_memzero(mk, sizeof(mk));
    sodium_memzero(ck, sizeof(ck));
    free(wire);
    return err;
}

msv_err msv_session_encrypt(struct msv_session *s, const uint8_t *pt, size_t len, uint8_t **out,
                            size_t *out_len)
{
    return msv_session_encrypt_at(s, pt, len, &msv_rng_system, msv_wall_ms(), out, out_len);
}

/* ---- receiving ---- */

static msv_err skip_keys(struct msv_session *s, uint32_t until)
{
    if (!s->has_ckr)
        return MSV_OK;
    if (until > s->nr && until - s->nr > MSV_RATCHET_MAX_SKIP)
        return MSV_ERR_TOO_BIG;
    while (s->nr < until) {
        struct skipped_key *k;

        if (s->n_skipped == MSV_RATCHET_MAX_SKIPPED) {
            /* the oldest key goes: that message can no longer be read */
            sodium_memzero(&s->skipped[0], sizeof(s->skipped[0]));
            memmove(s->skipped, s->skipped + 1, (s->n_skipped - 1) * sizeof(*s->skipped));
            s->n_skipped--;
        } else {
            struct skipped_key *grown =
                realloc(s->skipped, (s->n_skipped + 1) * sizeof(*s->skipped));

            if (grown == NULL)
                return MSV_ERR_NOMEM;
            s->skipped = grown;
        }
        k = &s->skipped[s->n_skipped];
        memcpy(k->dh, s->dhr, 32);
        k->n = s->nr;
        if (kdf_ck(s->ckr, k->mk) != MSV_OK)
            return MSV_ERR_CRYPTO;
        s->n_skipped++;
        s->nr++;
    }
    return MSV_OK;
}

/*
 * The receiving root step of a new chain: with the secret of our encapsulation
 * that the chain's header names (step), or without one (step 0). A step we did
 * not encapsulate for is a forgery.
 */
static msv_err receiving_root_step(struct msv_session *s, const uint8_t dh_out[32], uint32_t step)
{
    msv_err err;

    if (step == 0)
        return kdf_rk(s->rk, dh_out, s->ckr);
    if (!s->has_enc || s->enc_id != step)
        return MSV_ERR_AUTH;
    err = kdf_rk_pq(s->rk, dh_out, s->enc_ss, step, s->ckr);
    if (err == MSV_OK) {
        s->has_enc = 0;
        sodium_memzero(s->enc_ss, sizeof(s->enc_ss));
        s->steps++;
    }
    return err;
}

/* The sending root step of our new chain: with the secret we decapsulated, if one waits. */
static msv_err sending_root_step(struct msv_session *s, const uint8_t dh_out[32])
{
    msv_err err;

    s->cks_step = 0;
    if (!s->pq || !s->has_mix)
        return kdf_rk(s->rk, dh_out, s->cks);
    err = kdf_rk_pq(s->rk, dh_out, s->mix_ss, s->mix_id, s->cks);
    if (err == MSV_OK) {
        s->cks_step = s->mix_id;
        s->has_mix = 0;
        sodium_memzero(s->mix_ss, sizeof(s->mix_ss));
        s->steps++;
        s->sent_since_step = 0;
        s->step_ms = 0; /* counted from the next message sent */
    }
    return err;
}

static msv_err dh_ratchet(struct msv_session *s, const uint8_t their[32], uint32_t step,
                          const struct msv_rng *rng)
{
    uint8_t dh_out[32];
    msv_err err;

    if (s->has_ckr) { /* remember where the old chain stopped */
        memmove(s->prev_dh[1], s->prev_dh[0], (PREV_CHAINS - 1) * 32);
        memmove(s->prev_nr + 1, s->prev_nr, (PREV_CHAINS - 1) * sizeof(uint32_t));
        memcpy(s->prev_dh[0], s->dhr, 32);
        s->prev_nr[0] = s->nr;
        if (s->n_prev < PREV_CHAINS)
            s->n_prev++;
    }
    s->pn = s->ns;
    s->ns = 0;
    s->nr = 0;
    memcpy(s->dhr, their, 32);
    s->has_dhr = 1;
    err = dh(dh_out, s->dhs_sk, s->dhr);
    if (err == MSV_OK)
        err = receiving_root_step(s, dh_out, step);
    if (err == MSV_OK) {
        s->has_ckr = 1;
        new_key_pair(rng, s->dhs_sk, s->dhs_pk);
        err = dh(dh_out, s->dhs_sk, s->dhr);
    }
    if (err == MSV_OK)
        err = sending_root_step(s, dh_out);
    if (err == MSV_OK)
        s->has_cks = 1;
    sodium_memzero(dh_out, sizeof(dh_out));
    return err;
}

/* A message key used already: an earlier chain or an earlier place in this one. */
static int used_before(const struct msv_session *s, const uint8_t *dh_pk, uint32_t n)
{
    if (s->has_ckr && sodium_memcmp(dh_pk, s->dhr, 32) == 0)
        return n < s->nr;
    for (unsigned i = 0; i < s->n_prev; i++) {
        if (sodium_memcmp(dh_pk, s->prev_dh[i], 32) == 0)
            return n < s->prev_nr[i];
    }
    return 0;
}

/* 1 if dh_pk names a receiving chain s has: the current one, an earlier one or a skipped key's. */
static int known_chain(const struct msv_session *s, const uint8_t *dh_pk)
{
    if (s->has_ckr && sodium_memcmp(dh_pk, s->dhr, 32) == 0)
        return 1;
    for (unsigned i = 0; i < s->n_prev; i++) {
        if (sodium_memcmp(dh_pk, s->prev_dh[i], 32) == 0)
            return 1;
    }
    for (size_t i = 0; i < s->n_skipped; i++) {
        if (sodium_memcmp(dh_pk, s->skipped[i].dh, 32) == 0)
            return 1;
    }
    return 0;
}

/* The header kind s accepts: 0x0A in a post-quantum session (0x05 only in the chains of a
 * legacy one), 0x05 in a classical one. */
static int header_allowed(const struct msv_session *s, const struct msv_ratchet_header *h)
{
    if (!s->pq)
        return h->version == MSV_WIRE_RATCHET;
    return h->version == MSV_WIRE_PQ_RATCHET || (s->legacy && known_chain(s, h->dh));
}

int msv_session_is_downgrade(const struct msv_session *s, const uint8_t *wire, size_t len)
{
    struct msv_ratchet_header h;
    size_t pre = 0;

    if (s == NULL || wire == NULL || len == 0 || !s->pq)
        return 0;
    if (wire[0] == MSV_WIRE_PREKEY_MSG)
        return 1; /* a classical start in place of ours */
    if (wire[0] == MSV_WIRE_PQ_PREKEY_MSG)
        pre = PQ_PREFIX_LEN;
    if (len < pre || msv_ratchet_header_parse(wire + pre, len - pre, &h) != MSV_OK)
        return 0;
    return !header_allowed(s, &h);
}

/*
 * A ciphertext to our offer is decapsulated (into the copy of the session a
 * message is read with, before its DH step: a new chain of ours then mixes
 * it in at once); its secret waits for our next sending chain. Copies that
 * come again change nothing.
 */
static msv_err take_ciphertext(struct msv_session *s, const struct msv_ratchet_header *h)
{
    msv_err err;

    if (h->ct == NULL || !s->offering || h->ct_id != s->my_kem_id)
        return MSV_OK;
    err = msv_mlkem768_decaps(s->my_dk, sizeof(s->my_dk), h->ct, MSV_MLKEM768_CT_LEN, s->mix_ss);
    if (err != MSV_OK)
        return MSV_ERR_AUTH;
    s->has_mix = 1;
    s->mix_id = h->ct_id;
    s->offering = 0;
    sodium_memzero(s->my_dk, sizeof(s->my_dk));
    return MSV_OK;
}

/*
 * After a message read: an offered key we have not answered yet gets our
 * encapsulation, carried from our next message on. Copies that come again,
 * and keys older than one answered, change nothing.
 */
static msv_err take_offer(struct msv_session *s, const struct msv_ratchet_header *h,
                          const struct msv_rng *rng)
{
    uint8_t coins[MSV_MLKEM768_COINS_LEN];
    msv_err err = MSV_OK;

    if (h->ek != NULL && h->ek_id > s->peer_kem_done && !s->has_enc) {
        rng->fill(rng->ctx, coins, sizeof(coins));
        /* FIPS 203 7.2's input check: a key that fails it is the peer's forgery */
        err = msv_mlkem768_encaps_coins(h->ek, MSV_MLKEM768_EK_LEN, coins, s->enc_ct, s->enc_ss);
        sodium_memzero(coins, sizeof(coins));
        if (err != MSV_OK)
            return MSV_ERR_AUTH;
        s->has_enc = 1;
        s->enc_id = h->ek_id;
        s->peer_kem_done = h->ek_id;
        s->enc_age = MSV_PQ_REPEAT; /* on our next message */
    }
    return err;
}

/* Decrypts header || ciphertext into a copy of s, which replaces s on success. */
static msv_err decrypt_message(struct msv_session *s, const uint8_t *wire, size_t len,
                               const struct msv_rng *rng, uint8_t **pt, size_t *pt_len)
{
    struct msv_ratchet_header h;
    const uint8_t *body;
    size_t ct_len, out_len;
    struct msv_session *t = NULL;
    uint8_t mk[32], *out = NULL;
    msv_err err;

    if (msv_ratchet_header_parse(wire, len, &h) != MSV_OK || !header_allowed(s, &h))
        return MSV_ERR_AUTH;
    body = wire + h.len;
    ct_len = len - h.len;
    out_len = ct_len - ABYTES;
    out = malloc(out_len + 1);
    if (out == NULL)
        return MSV_ERR_NOMEM;
    err = msv_session_dup(s, &t);
    if (err != MSV_OK) {
        free(out);
        return err;
    }
    /* a key kept for a message that was skipped */
    for (size_t i = 0; i < t->n_skipped; i++) {
        struct skipped_key *k = &t->skipped[i];

        if (k->n != h.n || sodium_memcmp(k->dh, h.dh, 32) != 0)
            continue;
        err = open_with(k->mk, t->ad, &h, body, ct_len, out);
        if (err == MSV_OK) {
            sodium_memzero(k, sizeof(*k));
            memmove(k, k + 1, (t->n_skipped - i - 1) * sizeof(*k));
            t->n_skipped--;
        }
        goto done;
    }
    if (used_before(t, h.dh, h.n)) {
        err = MSV_ERR_REPLAY;
        goto done;
    }
    if (t->pq) {
        err = take_ciphertext(t, &h);
        if (err != MSV_OK)
            goto done;
    }
    if (!t->has_dhr || sodium_memcmp(h.dh, t->dhr, 32) != 0 || !t->has_ckr) {
        err = skip_keys(t, h.pn);
        if (err == MSV_OK)
            err = dh_ratchet(t, h.dh, h.step, rng);
        if (err != MSV_OK)
            goto done;
    }
    err = skip_keys(t, h.n);
    if (err == MSV_OK)
        err = kdf_ck(t->ckr, mk);
    if (err == MSV_OK)
        err = open_with(mk, t->ad, &h, body, ct_len, out);
    if (err == MSV_OK)
        t->nr++;
done:
    sodium_memzero(mk, sizeof(mk));
    if (err == MSV_OK && t->pq) {
        err = take_ciphertext(t, &h); /* carried by a message read with a skipped key */
        if (err == MSV_OK)
            err = take_offer(t, &h, rng);
    }
    if (err == MSV_OK) {
        t->pending = 0; /* the peer answered: the session is established */
        /* t takes s's place: swap the contents, then free what was s */
        struct msv_session tmp = *s;

        *s = *t;
        *t = tmp;
        *pt = out;
        *pt_len = out_len;
        out = NULL;
    } else if (err == MSV_ERR_CRYPTO) {
        err = MSV_ERR_AUTH;
    }
    msv_session_free(t);
    msv_secret_free(out, out_len + 1);
    return err;
}

msv_err msv_session_decrypt_rng(struct msv_session *s, const uint8_t *wire, size_t len,
                                const struct msv_rng *rng, uint8_t **pt, size_t *pt_len)
{
    if (s == NULL || wire == NULL || pt == NULL || pt_len == NULL || len == 0)
        return MSV_ERR_INVALID;
    if (wire[0] == MSV_WIRE_PREKEY_MSG || wire[0] == MSV_WIRE_PQ_PREKEY_MSG) {
        /* a later copy of the prefix of the message that started this session: the same
         * kind, base key, prekeys and KEM ciphertext */
        size_t pre = prefix_len(wire, len);
        uint8_t ct_hash[32];

        if (pre == 0 || (wire[0] == MSV_WIRE_PQ_PREKEY_MSG) != (s->pq != 0) ||
            !msv_session_has_base_key(s, wire + 1) || msv_get_u32be(wire + 33) != s->spk_id ||
            msv_get_u32be(wire + 37) != s->opk_id)
            return MSV_ERR_AUTH;
        if (s->pq && (msv_get_u32be(wire + PREFIX_LEN) != s->kem_id ||
                      sha256(wire + PREFIX_LEN + 4, MSV_MLKEM768_CT_LEN, ct_hash) != MSV_OK ||
                      sodium_memcmp(ct_hash, s->kem_ct_hash, 32) != 0))
            return MSV_ERR_AUTH;
        wire += pre;
        len -= pre;
    }
    return decrypt_message(s, wire, len, rng, pt, pt_len);
}

msv_err msv_session_decrypt(struct msv_session *s, const uint8_t *wire, size_t len, uint8_t **pt,
                            size_t *pt_len)
{
    return msv_session_decrypt_rng(s, wire, len, &msv_rng_system, pt, pt_len);
}

/* The responder's side of the KEM: decapsulates the ciphertext a 0x08 prefix carries. */
static msv_err kem_decaps(const struct msv_kem_prekey *kem, const uint8_t *wire,
                          struct kem_part *part)
{
    const uint8_t *ct = wire + PREFIX_LEN + 4;
    msv_err err;

    /* a changed ciphertext decapsulates to an unrelated key (implicit rejection): SK then
     * differs and the first message does not decrypt */
    err = msv_mlkem768_decaps(kem->dk, sizeof(kem->dk), ct, MSV_MLKEM768_CT_LEN, part->ss);
    part->id = kem->id;
    if (err == MSV_OK)
        err = sha256(kem->ek, sizeof(kem->ek), part->ek_hash);
    if (err == MSV_OK)
        err = sha256(ct, MSV_MLKEM768_CT_LEN, part->ct_hash);
    return err;
}

/* The prefix names these prekeys (and a KEM prekey exactly when it is a 0x08 one). */
static int prefix_matches(const uint8_t *wire, size_t len, const struct msv_prekey *spk,
                          const struct msv_prekey *opk, const struct msv_kem_prekey *kem,
                          uint8_t base[32])
{
    uint32_t spk_id, opk_id, kem_id = 0;

    if (msv_prekey_message_info(wire, len, &spk_id, &opk_id, base) != MSV_OK || spk_id != spk->id ||
        (opk_id != 0) != (opk != NULL) || (opk && opk->id != opk_id))
        return 0;
    if ((wire[0] == MSV_WIRE_PQ_PREKEY_MSG) != (kem != NULL))
        return 0;
    return kem == NULL || (msv_prekey_message_kem_id(wire, len, &kem_id) == MSV_OK &&
                           kem_id == kem->id && kem_id != 0);
}

msv_err msv_session_respond_rng(const struct msv_identity *me,
                                const struct msv_public_identity *peer,
                                const struct msv_prekey *spk, const struct msv_prekey *opk,
                                const struct msv_kem_prekey *kem, const uint8_t *wire, size_t len,
                                const struct msv_rng *rng, struct msv_session **out, uint8_t **pt,
                                size_t *pt_len)
{
    uint8_t base[32], dhs[4][32], sk[32];
    struct kem_part part = {0};
    struct msv_session *s = NULL;
    size_t pre;
    msv_err err;

    if (me == NULL || me->modern == NULL || peer == NULL ||
        !(peer->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) || spk == NULL || wire == NULL)
        return MSV_ERR_INVALID;
    if (!prefix_matches(wire, len, spk, opk, kem, base))
        return MSV_ERR_AUTH;
    /* a device whose identity says post-quantum answers hybrid first messages only (every
     * sender sees that in its identity): a classical one is a downgrade; a device that does
     * not say it publishes no KEM prekeys */
    if ((kem != NULL) != (me->pub->pq != 0))
        return MSV_ERR_AUTH;
    pre = prefix_len(wire, len);
    err = session_new(peer, me->pub, &s);
    if (err != MSV_OK)
        return err;
    err = dh(dhs[0], spk->sk, peer->x_pk);
    if (err == MSV_OK)
        err = dh(dhs[1], me->modern->x_sk, base);
    if (err == MSV_OK)
        err = dh(dhs[2], spk->sk, base);
    if (err == MSV_OK && opk != NULL)
        err = dh(dhs[3], opk->sk, base);
    if (err == MSV_OK && kem != NULL)
        err = kem_decaps(kem, wire, &part);
    if (err == MSV_OK)
        err = x3dh_secret(dhs, opk != NULL ? 4 : 3, kem != NULL ? &part : NULL, sk);
    if (err == MSV_OK) {
        memcpy(s->rk, sk, 32);
        memcpy(s->dhs_sk, spk->sk, 32);
        memcpy(s->dhs_pk, spk->pk, 32);
        s->has_their_base = 1;
        memcpy(s->their_base, base, 32);
        s->spk_id = spk->id; /* what later copies of the prefix must name */
        s->opk_id = opk != NULL ? opk->id : 0;
        if (kem != NULL) {
            s->pq = 1;
            s->kem_id = kem->id;
            memcpy(s->kem_ct_hash, part.ct_hash, 32);
        }
        err = decrypt_message(s, wire + pre, len - pre, rng, pt, pt_len);
    }
    if (err == MSV_OK) {
        *out = s;
        s = NULL;
    } else if (err != MSV_ERR_NOMEM) {
        err = MSV_ERR_AUTH;
    }
    sodium_memzero(dhs, sizeof(dhs));
    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(&part, sizeof(part));
    msv_session_free(s);
    return err;
}

msv_err msv_session_respond(const struct msv_identity *me, const struct msv_public_identity *peer,
                            const struct msv_prekey *signed_prekey,
                            const struct msv_prekey *one_time, const struct msv_kem_prekey *kem,
                            const uint8_t *wire, size_t len, struct msv_session **out, uint8_t **pt,
                            size_t *pt_len)
{
    if (out == NULL || pt == NULL || pt_len == NULL)
        return MSV_ERR_INVALID;
    return msv_session_respond_rng(me, peer, signed_prekey, one_time, kem, wire, len,
                                   &msv_rng_system, out, pt, pt_len);
}

/* ---- storage ---- */

#define STATE_MAGIC "MSVR"
/* 1: no hybrid part (read as a classical session); 2: no post-quantum ratchet (a hybrid one
 * is read as a legacy post-quantum ratchet session) */
#define STATE_VERSION 3
#define FLAG_DHR 1u
#define FLAG_CKS 2u
#define FLAG_CKR 4u
#define FLAG_PENDING 8u
#define FLAG_THEIR_BASE 16u

#define PQ_OFFERING 1u
#define PQ_MIX 2u
#define PQ_ENC 4u
#define PQ_LEGACY 8u

/* Version 3's post-quantum ratchet part (docs/crypto.md, "The post-quantum ratchet"). */
static void export_pq_ratchet(const struct msv_session *s, struct msv_buf *b)
{
    msv_buf_put_u8(b, (uint8_t)((s->offering ? PQ_OFFERING : 0) | (s->has_mix ? PQ_MIX : 0) |
                                (s->has_enc ? PQ_ENC : 0) | (s->legacy ? PQ_LEGACY : 0)));
    msv_buf_put_u32be(b, s->cks_step);
    msv_buf_put_u32be(b, s->steps);
    msv_buf_put_u32be(b, s->my_kem_id);
    msv_buf_put_u32be(b, s->offer_age);
    if (s->offering) {
        msv_buf_put(b, s->my_ek, MSV_MLKEM768_EK_LEN);
        msv_buf_put(b, s->my_dk, MSV_MLKEM768_DK_LEN);
    }
    msv_buf_put_u32be(b, s->mix_id);
    if (s->has_mix)
        msv_buf_put(b, s->mix_ss, 32);
    msv_buf_put_u32be(b, s->enc_id);
    msv_buf_put_u32be(b, s->peer_kem_done);
    msv_buf_put_u32be(b, s->enc_age);
    if (s->has_enc) {
        msv_buf_put(b, s->enc_ct, MSV_MLKEM768_CT_LEN);
        msv_buf_put(b, s->enc_ss, 32);
    }
    msv_buf_put_u32be(b, s->sent_since_step);
    msv_buf_put_u32be(b, (uint32_t)((uint64_t)s->step_ms >> 32));
    msv_buf_put_u32be(b, (uint32_t)s->step_ms);
}

msv_err msv_session_export(const struct msv_session *s, uint8_t **out, size_t *out_len)
{
    struct msv_buf b;
    uint8_t flags = (uint8_t)((s->has_dhr ? FLAG_DHR : 0) | (s->has_cks ? FLAG_CKS : 0) |
                              (s->has_ckr ? FLAG_CKR : 0) | (s->pending ? FLAG_PENDING : 0) |
                              (s->has_their_base ? FLAG_THEIR_BASE : 0));

    msv_buf_init(&b, 1u << 20);
    msv_buf_put(&b, STATE_MAGIC, 4);
    msv_buf_put_u8(&b, STATE_VERSION);
    msv_buf_put_u8(&b, flags);
    msv_buf_put(&b, s->ad, 64);
    msv_buf_put(&b, s->rk, 32);
    msv_buf_put(&b, s->dhs_sk, 32);
    msv_buf_put(&b, s->dhr, 32);
    msv_buf_put(&b, s->cks, 32);
    msv_buf_put(&b, s->ckr, 32);
    msv_buf_put_u32be(&b, s->ns);
    msv_buf_put_u32be(&b, s->nr);
    msv_buf_put_u32be(&b, s->pn);
    msv_buf_put(&b, s->base_key, 32);
    msv_buf_put_u32be(&b, s->spk_id);
    msv_buf_put_u32be(&b, s->opk_id);
    msv_buf_put(&b, s->their_base, 32);
    msv_buf_put_u8(&b, s->pq);
    msv_buf_put_u32be(&b, s->kem_id);
    msv_buf_put(&b, s->kem_ct_hash, 32);
    if (s->pq && s->pending)
        msv_buf_put(&b, s->kem_ct, MSV_MLKEM768_CT_LEN);
    export_pq_ratchet(s, &b);
    msv_buf_put_u8(&b, s->n_prev);
    for (unsigned i = 0; i < s->n_prev; i++) {
        msv_buf_put(&b, s->prev_dh[i], 32);
        msv_buf_put_u32be(&b, s->prev_nr[i]);
    }
    msv_buf_put_u32be(&b, (uint32_t)s->n_skipped);
    for (size_t i = 0; i < s->n_skipped; i++) {
        msv_buf_put(&b, s->skipped[i].dh, 32);
        msv_buf_put_u32be(&b, s->skipped[i].n);
        msv_buf_put(&b, s->skipped[i].mk, 32);
    }
    return msv_buf_finish(&b, out, out_len);
}

static msv_err read_fixed(struct msv_reader *r, void *to, size_t n)
{
    const uint8_t *p;

    if (msv_reader_bytes(r, n, &p) != MSV_OK)
        return MSV_ERR_PARSE;
    memcpy(to, p, n);
    return MSV_OK;
}

static msv_err import_pq_ratchet(struct msv_reader *r, struct msv_session *s)
{
    uint8_t f = 0;
    uint32_t hi = 0, lo = 0;
    uint64_t when;
    int bad = msv_reader_u8(r, &f) != MSV_OK || f > 15;

    bad |= msv_reader_u32be(r, &s->cks_step) != MSV_OK;
    bad |= msv_reader_u32be(r, &s->steps) != MSV_OK;
    bad |= msv_reader_u32be(r, &s->my_kem_id) != MSV_OK;
    bad |= msv_reader_u32be(r, &s->offer_age) != MSV_OK;
    if (!bad && (f & PQ_OFFERING)) {
        bad |= read_fixed(r, s->my_ek, MSV_MLKEM768_EK_LEN) != MSV_OK;
        bad |= read_fixed(r, s->my_dk, MSV_MLKEM768_DK_LEN) != MSV_OK;
    }
    bad |= msv_reader_u32be(r, &s->mix_id) != MSV_OK;
    if (!bad && (f & PQ_MIX))
        bad |= read_fixed(r, s->mix_ss, 32) != MSV_OK;
    bad |= msv_reader_u32be(r, &s->enc_id) != MSV_OK;
    bad |= msv_reader_u32be(r, &s->peer_kem_done) != MSV_OK;
    bad |= msv_reader_u32be(r, &s->enc_age) != MSV_OK;
    if (!bad && (f & PQ_ENC)) {
        bad |= read_fixed(r, s->enc_ct, MSV_MLKEM768_CT_LEN) != MSV_OK;
        bad |= read_fixed(r, s->enc_ss, 32) != MSV_OK;
    }
    bad |= msv_reader_u32be(r, &s->sent_since_step) != MSV_OK;
    bad |= msv_reader_u32be(r, &hi) != MSV_OK;
    bad |= msv_reader_u32be(r, &lo) != MSV_OK;
    when = (uint64_t)hi << 32 | lo;
    s->offering = (f & PQ_OFFERING) != 0;
    s->has_mix = (f & PQ_MIX) != 0;
    s->has_enc = (f & PQ_ENC) != 0;
    s->legacy = (f & PQ_LEGACY) != 0;
    s->step_ms = (int64_t)(when & INT64_MAX);
    return bad ? MSV_ERR_PARSE : MSV_OK;
}

msv_err msv_session_import(const uint8_t *in, size_t len, struct msv_session **out)
{
    struct msv_session *s = calloc(1, sizeof(*s));
    struct msv_reader r;
    uint8_t magic[4], version = 0, flags = 0;
    uint32_t n_skipped = 0;
    int bad = 0;

    if (s == NULL)
        return MSV_ERR_NOMEM;
    msv_reader_init(&r, in, len);
    bad |= read_fixed(&r, magic, 4) != MSV_OK;
    bad |= msv_reader_u8(&r, &version) != MSV_OK;
    bad |= msv_reader_u8(&r, &flags) != MSV_OK;
    bad |= read_fixed(&r, s->ad, 64) != MSV_OK;
    bad |= read_fixed(&r, s->rk, 32) != MSV_OK;
    bad |= read_fixed(&r, s->dhs_sk, 32) != MSV_OK;
    bad |= read_fixed(&r, s->dhr, 32) != MSV_OK;
    bad |= read_fixed(&r, s->cks, 32) != MSV_OK;
    bad |= read_fixed(&r, s->ckr, 32) != MSV_OK;
    bad |= msv_reader_u32be(&r, &s->ns) != MSV_OK;
    bad |= msv_reader_u32be(&r, &s->nr) != MSV_OK;
    bad |= msv_reader_u32be(&r, &s->pn) != MSV_OK;
    bad |= read_fixed(&r, s->base_key, 32) != MSV_OK;
    bad |= msv_reader_u32be(&r, &s->spk_id) != MSV_OK;
    bad |= msv_reader_u32be(&r, &s->opk_id) != MSV_OK;
    bad |= read_fixed(&r, s->their_base, 32) != MSV_OK;
    if (!bad && version >= 2) {
        bad |= msv_reader_u8(&r, &s->pq) != MSV_OK || s->pq > 1;
        bad |= msv_reader_u32be(&r, &s->kem_id) != MSV_OK;
        bad |= read_fixed(&r, s->kem_ct_hash, 32) != MSV_OK;
        if (!bad && s->pq && (flags & FLAG_PENDING))
            bad |= read_fixed(&r, s->kem_ct, MSV_MLKEM768_CT_LEN) != MSV_OK;
    }
    if (!bad && version == STATE_VERSION)
        bad |= import_pq_ratchet(&r, s) != MSV_OK;
    else if (!bad && s->pq)
        s->legacy = 1; /* its chains so far bring 0x05 messages; new ones are post-quantum */
    bad |= msv_reader_u8(&r, &s->n_prev) != MSV_OK;
    if (bad || memcmp(magic, STATE_MAGIC, 4) != 0 || version < 1 || version > STATE_VERSION ||
        s->n_prev > PREV_CHAINS || flags > 31)
        goto bad;
    for (unsigned i = 0; i < s->n_prev; i++) {
        if (read_fixed(&r, s->prev_dh[i], 32) != MSV_OK ||
            msv_reader_u32be(&r, &s->prev_nr[i]) != MSV_OK)
            goto bad;
    }
    if (msv_reader_u32be(&r, &n_skipped) != MSV_OK || n_skipped > MSV_RATCHET_MAX_SKIPPED ||
        msv_reader_left(&r) != (size_t)n_skipped * 68)
        goto bad;
    if (n_skipped > 0) {
        s->skipped = malloc(n_skipped * sizeof(*s->skipped));
        if (s->skipped == NULL) {
            msv_session_free(s);
            return MSV_ERR_NOMEM;
        }
        s->n_skipped = n_skipped;
        for (uint32_t i = 0; i < n_skipped; i++) {
            if (read_fixed(&r, s->skipped[i].dh, 32) != MSV_OK ||
                msv_reader_u32be(&r, &s->skipped[i].n) != MSV_OK ||
                read_fixed(&r, s->skipped[i].mk, 32) != MSV_OK)
                goto bad;
        }
    }
    s->has_dhr = (flags & FLAG_DHR) != 0;
    s->has_cks = (flags & FLAG_CKS) != 0;
    s->has_ckr = (flags & FLAG_CKR) != 0;
    s->pending = (flags & FLAG_PENDING) != 0;
    s->has_their_base = (flags & FLAG_THEIR_BASE) != 0;
    crypto_scalarmult_base(s->dhs_pk, s->dhs_sk);
    *out = s;
    return MSV_OK;
bad:
    msv_session_free(s);
    return MSV_ERR_PARSE;
}
