/*
 * The session and sealed-sender readers, with fixed keys. The first input
 * byte picks the reader of the rest:
 *   0  a session message (0x05 or 0x06) to a fixed session, both ends
 *   1  a sealed envelope to the fixed recipient
 *   2  a stored session: what imports must export, and import again to the
 *      same bytes
 *   3  the X3DH prefix of a 0x06 or 0x08 message
 * With bit 2 of the first byte set, 0 and 3 meet a hybrid (post-quantum)
 * session instead: 0 both ends of it, 3 the responder answering the rest as
 * a 0x08 first message with its KEM prekey, and a KEM prekey bundle made of
 * the rest, whose signature must not verify.
 * Each input meets a fresh copy of the sessions, so runs do not depend on
 * the inputs before.
 */
#include "common.h"
#include "crypto/internal.h"
#include "fixtures.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"

/* A fixed stream of bytes for the keys the setup makes (not a secret: a fixture). */
static void counter_fill(void *ctx, uint8_t *out, size_t n)
{
    uint32_t *state = ctx;

    for (size_t i = 0; i < n; i++) {
        *state = *state * 1103515245u + 12345u;
        out[i] = (uint8_t)(*state >> 16);
    }
}

static struct msv_identity *alice, *bob, *pq_alice, *pq_bob;
static struct msv_session *initiator, *responder, *pq_initiator, *pq_responder;
static struct msv_prekey pq_spk, pq_opk;
static struct msv_kem_prekey pq_kem;
static uint32_t rng_state = 1;
static const struct msv_rng rng = {counter_fill, &rng_state};

static void setup(void)
{
    struct msv_prekey spk, opk;
    struct msv_prekey_bundle b = {0};
    uint8_t sig[64], *wire = NULL, *pt = NULL;
    size_t len = 0, pt_len = 0;

    alice = fuzz_identity(fixture_modern_sender);
    bob = fuzz_identity(fixture_modern_recipient);
    if (msv_prekey_generate_rng(bob, 1, &rng, &spk, sig) != MSV_OK ||
        msv_prekey_generate_rng(bob, 2, &rng, &opk, NULL) != MSV_OK)
        abort();
    b.signed_id = 1;
    memcpy(b.signed_pk, spk.pk, 32);
    memcpy(b.signed_sig, sig, 64);
    b.one_time_id = 2;
    memcpy(b.one_time_pk, opk.pk, 32);
    if (msv_session_initiate_rng(alice, msv_identity_public(bob), &b, &rng, &initiator) != MSV_OK ||
        msv_session_encrypt(initiator, (const uint8_t *)"hello", 5, &wire, &len) != MSV_OK ||
        msv_session_respond_rng(bob, msv_identity_public(alice), &spk, &opk, NULL, wire, len, &rng,
                                &responder, &pt, &pt_len) != MSV_OK)
        abort();
    free(wire);
    msv_secret_free(pt, pt_len);
}

/* The hybrid pair: post-quantum identities, a KEM prekey, one message answered. */
static void setup_pq(void)
{
    struct msv_prekey_bundle *b = calloc(1, sizeof(*b));
    uint8_t *wire = NULL, *pt = NULL;
    size_t len = 0, pt_len = 0;

    if (b == NULL ||
        msv_identity_generate_suites_rng(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &rng, &pq_alice) !=
            MSV_OK ||
        msv_identity_generate_suites_rng(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &rng, &pq_bob) !=
            MSV_OK ||
        msv_prekey_generate_rng(pq_bob, 1, &rng, &pq_spk, b->signed_sig) != MSV_OK ||
        msv_prekey_generate_rng(pq_bob, 2, &rng, &pq_opk, NULL) != MSV_OK ||
        msv_kem_prekey_generate_rng(pq_bob, 3, 0, &rng, &pq_kem, b->kem_sig) != MSV_OK)
        abort();
    b->signed_id = 1;
    memcpy(b->signed_pk, pq_spk.pk, 32);
    b->one_time_id = 2;
    memcpy(b->one_time_pk, pq_opk.pk, 32);
    b->has_kem = 1;
    b->kem_id = 3;
    memcpy(b->kem_pk, pq_kem.ek, sizeof(b->kem_pk));
    if (msv_session_initiate_rng(pq_alice, msv_identity_public(pq_bob), b, &rng, &pq_initiator) !=
            MSV_OK ||
        msv_session_encrypt(pq_initiator, (const uint8_t *)"hello", 5, &wire, &len) != MSV_OK ||
        msv_session_respond_rng(pq_bob, msv_identity_public(pq_alice), &pq_spk, &pq_opk, &pq_kem,
                                wire, len, &rng, &pq_responder, &pt, &pt_len) != MSV_OK)
        abort();
    free(wire);
    free(b);
    msv_secret_free(pt, pt_len);
}

/* A 0x08 first message to the hybrid responder, and the rest as a KEM prekey bundle. */
static void pq_first(const uint8_t *data, size_t size)
{
    struct msv_session *s = NULL;
    uint8_t *pt = NULL, sig[64] = {0};
    size_t pt_len = 0;
    uint32_t kem_id = 0;

    (void)msv_prekey_message_kem_id(data, size, &kem_id);
    if (msv_session_respond_rng(pq_bob, msv_identity_public(pq_alice), &pq_spk, &pq_opk, &pq_kem,
                                data, size, &rng, &s, &pt, &pt_len) == MSV_OK) {
        msv_secret_free(pt, pt_len);
        msv_session_free(s);
    } else if (s != NULL || pt != NULL) {
        abort();
    }
    if (size >= 64)
        memcpy(sig, data, 64);
    /* not the device's signature: only its own key signs */
    if (msv_kem_prekey_verify(msv_identity_public(pq_bob), kem_id, size & 1, data, size, sig) ==
        MSV_OK)
        abort();
}

/* A session message against a copy of s: an error leaves nothing allocated. */
static void against(const struct msv_session *s, const uint8_t *data, size_t size)
{
    struct msv_session *copy = NULL;
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    msv_err err;

    if (msv_session_dup(s, &copy) != MSV_OK)
        abort();
    rng_state = 7;
    err = msv_session_decrypt_rng(copy, data, size, &rng, &pt, &pt_len);
    if (err == MSV_OK)
        msv_secret_free(pt, pt_len);
    else if (pt != NULL)
        abort();
    msv_session_free(copy);
}

static void stored(const uint8_t *data, size_t size)
{
    struct msv_session *s = NULL, *t = NULL;
    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;

    if (msv_session_import(data, size, &s) != MSV_OK)
        return;
    if (msv_session_export(s, &a, &a_len) != MSV_OK || msv_session_import(a, a_len, &t) != MSV_OK ||
        msv_session_export(t, &b, &b_len) != MSV_OK || a_len != b_len || memcmp(a, b, a_len) != 0)
        abort();
    msv_secret_free(a, a_len);
    msv_secret_free(b, b_len);
    msv_session_free(s);
    msv_session_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char handle[256];
    uint64_t device = 0;
    uint8_t *buf = NULL, base[32];
    size_t inner_len = 0;
    uint32_t spk = 0, opk = 0;

    if (alice == NULL) {
        setup();
        setup_pq();
    }
    if (size < 1)
        return 0;
    switch (data[0] & 3) {
    case 0:
        against(data[0] & 4 ? pq_responder : responder, data + 1, size - 1);
        against(data[0] & 4 ? pq_initiator : initiator, data + 1, size - 1);
        break;
    case 1:
        if (msv_sealed_sender(bob, data + 1, size - 1, handle, &device) == MSV_OK &&
            strlen(handle) > 255)
            abort();
        if (msv_sealed_unwrap(bob, msv_identity_public(alice), data + 1, size - 1, &buf,
                              &inner_len) == MSV_OK) {
            if (inner_len + 1 + 32 + 280 + 16 != size - 1)
                abort();
            free(buf);
        } else if (buf != NULL) {
            abort();
        }
        break;
    case 2:
        stored(data + 1, size - 1);
        break;
    default:
        (void)msv_prekey_message_info(data + 1, size - 1, &spk, &opk, base);
        if (data[0] & 4)
            pq_first(data + 1, size - 1);
        break;
    }
    return 0;
}
