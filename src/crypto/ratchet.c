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
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/ratchet.h"
#include "missive/util.h"
#include "util/buf.h"
#include "util/endian.h"

#define HEADER_LEN 41 /* 0x05 || DH || PN || N */
#define PREFIX_LEN 41 /* 0x06 || EK || SPK id || OPK id */
#define ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define PREV_CHAINS 32 /* receiving chains remembered to tell a duplicate from a forgery */

static const char x3dh_info[] = "MSV-x3dh-v1";
static const char root_info[] = "MSV-ratchet-v1";
static const char msg_info[] = "MSV-ratchet-msg-v1";
static const char spk_context[] = "MSV-spk-v1";
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
                         const uint8_t *pt, size_t len, uint8_t *ct)
{
    uint8_t kn[56], aad[64 + HEADER_LEN];
    msv_err err = msv_hkdf_sha256(mk, 32, zero_salt, 32, (const uint8_t *)msg_info,
                                  sizeof(msg_info) - 1, kn, sizeof(kn));

    memcpy(aad, ad, 64);
    memcpy(aad + 64, header, HEADER_LEN);
    if (err == MSV_OK && crypto_aead_xchacha20poly1305_ietf_encrypt(
                             ct, NULL, pt, len, aad, sizeof(aad), NULL, kn + 32, kn) != 0)
        err = MSV_ERR_CRYPTO;
    sodium_memzero(kn, sizeof(kn));
    return err;
}

static msv_err open_with(const uint8_t mk[32], const uint8_t ad[64], const uint8_t *header,
                         const uint8_t *ct, size_t ct_len, uint8_t *pt)
{
    uint8_t kn[56], aad[64 + HEADER_LEN];
    msv_err err = msv_hkdf_sha256(mk, 32, zero_salt, 32, (const uint8_t *)msg_info,
                                  sizeof(msg_info) - 1, kn, sizeof(kn));

    memcpy(aad, ad, 64);
    memcpy(aad + 64, header, HEADER_LEN);
    if (err == MSV_OK && crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, ct, ct_len, aad,
                                                                    sizeof(aad), kn + 32, kn) != 0)
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

/* ---- X3DH ---- */

/* SK from the four (or three) DH outputs, in the initiator's order. */
static msv_err x3dh_secret(const uint8_t dhs[4][32], int n, uint8_t sk[32])
{
    uint8_t ikm[32 + 4 * 32];
    msv_err err;

    memset(ikm, 0xff, 32);
    for (int i = 0; i < n; i++)
        memcpy(ikm + 32 + 32 * i, dhs[i], 32);
    err = msv_hkdf_sha256(ikm, 32 + 32 * (size_t)n, zero_salt, 32, (const uint8_t *)x3dh_info,
                          sizeof(x3dh_info) - 1, sk, 32);
    sodium_memzero(ikm, sizeof(ikm));
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
    new_key_pair(rng, ek_sk, s->base_key);
    err = dh(dhs[0], me->modern->x_sk, b->signed_pk);
    if (err == MSV_OK)
        err = dh(dhs[1], ek_sk, peer->x_pk);
    if (err == MSV_OK)
        err = dh(dhs[2], ek_sk, b->signed_pk);
    if (err == MSV_OK && n == 4)
        err = dh(dhs[3], ek_sk, b->one_time_pk);
    if (err == MSV_OK)
        err = x3dh_secret(dhs, n, sk);
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

msv_err msv_prekey_message_info(const uint8_t *wire, size_t len, uint32_t *signed_id,
                                uint32_t *one_time_id, uint8_t base_key[32])
{
    if (wire == NULL || len < PREFIX_LEN + HEADER_LEN + ABYTES || wire[0] != MSV_WIRE_PREKEY_MSG ||
        wire[PREFIX_LEN] != MSV_WIRE_RATCHET)
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

msv_err msv_session_encrypt(struct msv_session *s, const uint8_t *pt, size_t len, uint8_t **out,
                            size_t *out_len)
{
    size_t pre = s->pending ? PREFIX_LEN : 0, total = pre + HEADER_LEN + len + ABYTES;
    uint8_t mk[32], ck[32], *wire, *h;
    msv_err err;

    if (s == NULL || (pt == NULL && len > 0) || out == NULL)
        return MSV_ERR_INVALID;
    if (len > MSV_PLAINTEXT_MAX)
        return MSV_ERR_TOO_BIG;
    if (!s->has_cks)
        return MSV_ERR_INVALID; /* a responder sends once it has received */
    if (s->ns == UINT32_MAX)
        return MSV_ERR_TOO_BIG;
    wire = malloc(total);
    if (wire == NULL)
        return MSV_ERR_NOMEM;
    if (s->pending) {
        wire[0] = MSV_WIRE_PREKEY_MSG;
        memcpy(wire + 1, s->base_key, 32);
        msv_put_u32be(wire + 33, s->spk_id);
        msv_put_u32be(wire + 37, s->opk_id);
    }
    h = wire + pre;
    h[0] = MSV_WIRE_RATCHET;
    memcpy(h + 1, s->dhs_pk, 32);
    msv_put_u32be(h + 33, s->pn);
    msv_put_u32be(h + 37, s->ns);
    memcpy(ck, s->cks, 32);
    err = kdf_ck(ck, mk);
    if (err == MSV_OK)
        err = seal_with(mk, s->ad, h, pt, len, h + HEADER_LEN);
    if (err == MSV_OK) {
        memcpy(s->cks, ck, 32);
        s->ns++;
        *out = wire;
        *out_len = total;
        wire = NULL;
    }
    sodium_memzero(mk, sizeof(mk));
    sodium_memzero(ck, sizeof(ck));
    free(wire);
    return err;
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

static msv_err dh_ratchet(struct msv_session *s, const uint8_t their[32], const struct msv_rng *rng)
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
        err = kdf_rk(s->rk, dh_out, s->ckr);
    if (err == MSV_OK) {
        s->has_ckr = 1;
        new_key_pair(rng, s->dhs_sk, s->dhs_pk);
        err = dh(dh_out, s->dhs_sk, s->dhr);
    }
    if (err == MSV_OK)
        err = kdf_rk(s->rk, dh_out, s->cks);
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

/* Decrypts header || ciphertext into a copy of s, which replaces s on success. */
static msv_err decrypt_message(struct msv_session *s, const uint8_t *h, size_t len,
                               const struct msv_rng *rng, uint8_t **pt, size_t *pt_len)
{
    const uint8_t *dh_pk = h + 1;
    uint32_t pn, n;
    size_t ct_len, out_len;
    struct msv_session *t = NULL;
    uint8_t mk[32], *out = NULL;
    msv_err err;

    if (len < HEADER_LEN + ABYTES || h[0] != MSV_WIRE_RATCHET ||
        len - HEADER_LEN - ABYTES > MSV_PLAINTEXT_MAX)
        return MSV_ERR_AUTH;
    pn = msv_get_u32be(h + 33);
    n = msv_get_u32be(h + 37);
    ct_len = len - HEADER_LEN;
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

        if (k->n != n || sodium_memcmp(k->dh, dh_pk, 32) != 0)
            continue;
        err = open_with(k->mk, t->ad, h, h + HEADER_LEN, ct_len, out);
        if (err == MSV_OK) {
            sodium_memzero(k, sizeof(*k));
            memmove(k, k + 1, (t->n_skipped - i - 1) * sizeof(*k));
            t->n_skipped--;
        }
        goto done;
    }
    if (used_before(t, dh_pk, n)) {
        err = MSV_ERR_REPLAY;
        goto done;
    }
    if (!t->has_dhr || sodium_memcmp(dh_pk, t->dhr, 32) != 0 || !t->has_ckr) {
        err = skip_keys(t, pn);
        if (err == MSV_OK)
            err = dh_ratchet(t, dh_pk, rng);
        if (err != MSV_OK)
            goto done;
    }
    err = skip_keys(t, n);
    if (err == MSV_OK)
        err = kdf_ck(t->ckr, mk);
    if (err == MSV_OK)
        err = open_with(mk, t->ad, h, h + HEADER_LEN, ct_len, out);
    if (err == MSV_OK)
        t->nr++;
done:
    sodium_memzero(mk, sizeof(mk));
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
    if (wire[0] == MSV_WIRE_PREKEY_MSG) {
        /* a later copy of the prefix of the message that started this session */
        if (len < PREFIX_LEN || !msv_session_has_base_key(s, wire + 1) ||
            msv_get_u32be(wire + 33) != s->spk_id || msv_get_u32be(wire + 37) != s->opk_id)
            return MSV_ERR_AUTH;
        wire += PREFIX_LEN;
        len -= PREFIX_LEN;
    }
    return decrypt_message(s, wire, len, rng, pt, pt_len);
}

msv_err msv_session_decrypt(struct msv_session *s, const uint8_t *wire, size_t len, uint8_t **pt,
                            size_t *pt_len)
{
    return msv_session_decrypt_rng(s, wire, len, &msv_rng_system, pt, pt_len);
}

msv_err msv_session_respond_rng(const struct msv_identity *me,
                                const struct msv_public_identity *peer,
                                const struct msv_prekey *spk, const struct msv_prekey *opk,
                                const uint8_t *wire, size_t len, const struct msv_rng *rng,
                                struct msv_session **out, uint8_t **pt, size_t *pt_len)
{
    uint8_t base[32], dhs[4][32], sk[32];
    uint32_t spk_id, opk_id;
    struct msv_session *s = NULL;
    msv_err err;

    if (me == NULL || me->modern == NULL || peer == NULL ||
        !(peer->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) || spk == NULL)
        return MSV_ERR_INVALID;
    if (msv_prekey_message_info(wire, len, &spk_id, &opk_id, base) != MSV_OK || spk_id != spk->id ||
        (opk_id != 0) != (opk != NULL) || (opk && opk->id != opk_id))
        return MSV_ERR_AUTH;
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
    if (err == MSV_OK)
        err = x3dh_secret(dhs, opk != NULL ? 4 : 3, sk);
    if (err == MSV_OK) {
        memcpy(s->rk, sk, 32);
        memcpy(s->dhs_sk, spk->sk, 32);
        memcpy(s->dhs_pk, spk->pk, 32);
        s->has_their_base = 1;
        memcpy(s->their_base, base, 32);
        s->spk_id = spk_id; /* what later copies of the prefix must name */
        s->opk_id = opk_id;
        err = decrypt_message(s, wire + PREFIX_LEN, len - PREFIX_LEN, rng, pt, pt_len);
    }
    if (err == MSV_OK) {
        *out = s;
        s = NULL;
    } else if (err != MSV_ERR_NOMEM) {
        err = MSV_ERR_AUTH;
    }
    sodium_memzero(dhs, sizeof(dhs));
    sodium_memzero(sk, sizeof(sk));
    msv_session_free(s);
    return err;
}

msv_err msv_session_respond(const struct msv_identity *me, const struct msv_public_identity *peer,
                            const struct msv_prekey *signed_prekey,
                            const struct msv_prekey *one_time, const uint8_t *wire, size_t len,
                            struct msv_session **out, uint8_t **pt, size_t *pt_len)
{
    if (out == NULL || pt == NULL || pt_len == NULL)
        return MSV_ERR_INVALID;
    return msv_session_respond_rng(me, peer, signed_prekey, one_time, wire, len, &msv_rng_system,
                                   out, pt, pt_len);
}

/* ---- storage ---- */

#define STATE_MAGIC "MSVR"
#define STATE_VERSION 1
#define FLAG_DHR 1u
#define FLAG_CKS 2u
#define FLAG_CKR 4u
#define FLAG_PENDING 8u
#define FLAG_THEIR_BASE 16u

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
    bad |= msv_reader_u8(&r, &s->n_prev) != MSV_OK;
    if (bad || memcmp(magic, STATE_MAGIC, 4) != 0 || version != STATE_VERSION ||
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
