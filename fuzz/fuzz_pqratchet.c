/*
 * The post-quantum ratchet's header reader (docs/crypto.md, "The
 * post-quantum ratchet"), and the whole message against a post-quantum
 * session pair caught mid-exchange: each side offering a KEM key and holding
 * an encapsulation to the other's, so that a header's key, ciphertext and
 * step all meet code that acts on them. A parsed header must lie inside the
 * input and say what its flags say; a message that fails leaves nothing
 * allocated. Each input meets a fresh copy of the sessions.
 */
#include "common.h"
#include "crypto/internal.h"
#include "missive/mlkem.h"
#include "missive/ratchet.h"

/* A fixed stream of bytes for the keys the setup makes (not a secret: a fixture). */
static void counter_fill(void *ctx, uint8_t *out, size_t n)
{
    uint32_t *state = ctx;

    for (size_t i = 0; i < n; i++) {
        *state = *state * 1103515245u + 12345u;
        out[i] = (uint8_t)(*state >> 16);
    }
}

static struct msv_session *sa, *sb;
static uint32_t rng_state = 1;
static const struct msv_rng rng = {counter_fill, &rng_state};

/* from sends one message at time now, to reads it. */
static void pass(struct msv_session *from, struct msv_session *to, int64_t now)
{
    uint8_t *wire = NULL, *pt = NULL;
    size_t len = 0, pt_len = 0;

    if (msv_session_encrypt_at(from, (const uint8_t *)"x", 1, &rng, now, &wire, &len) != MSV_OK ||
        msv_session_decrypt_rng(to, wire, len, &rng, &pt, &pt_len) != MSV_OK)
        abort();
    free(wire);
    msv_secret_free(pt, pt_len);
}

static void setup(void)
{
    struct msv_identity *a = NULL, *b = NULL;
    struct msv_prekey spk;
    struct msv_kem_prekey *kem = calloc(1, sizeof(*kem));
    struct msv_prekey_bundle *bb = calloc(1, sizeof(*bb));
    uint8_t *wire = NULL, *pt = NULL;
    size_t len = 0, pt_len = 0;
    const int64_t t0 = 1000, later = t0 + MSV_PQ_REKEY_MS;

    if (kem == NULL || bb == NULL || msv_init() != MSV_OK ||
        msv_identity_generate_suites_rng(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &rng, &a) !=
            MSV_OK ||
        msv_identity_generate_suites_rng(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &rng, &b) !=
            MSV_OK ||
        msv_prekey_generate_rng(b, 1, &rng, &spk, bb->signed_sig) != MSV_OK ||
        msv_kem_prekey_generate_rng(b, 3, 1, &rng, kem, bb->kem_sig) != MSV_OK)
        abort();
    bb->signed_id = 1;
    memcpy(bb->signed_pk, spk.pk, 32);
    bb->has_kem = 1;
    bb->kem_id = 3;
    bb->kem_last_resort = 1;
    memcpy(bb->kem_pk, kem->ek, sizeof(bb->kem_pk));
    if (msv_session_initiate_rng(a, msv_identity_public(b), bb, &rng, &sa) != MSV_OK ||
        msv_session_encrypt_at(sa, (const uint8_t *)"x", 1, &rng, t0, &wire, &len) != MSV_OK ||
        msv_session_respond_rng(b, msv_identity_public(a), &spk, NULL, kem, wire, len, &rng, &sb,
                                &pt, &pt_len) != MSV_OK)
        abort();
    free(wire);
    msv_secret_free(pt, pt_len);
    pass(sb, sa, t0);    /* b's clock starts */
    pass(sa, sb, later); /* a offers */
    pass(sb, sa, later); /* b offers, and answers a's key */
    free(kem);
    free(bb);
    msv_identity_free(a);
    msv_identity_free(b);
}

static void check_header(const uint8_t *data, size_t size)
{
    struct msv_ratchet_header h;

    if (msv_ratchet_header_parse(data, size, &h) != MSV_OK)
        return;
    if (h.len > size || h.dh != data + 1 || (h.ek != NULL) != (h.ek_id != 0) ||
        (h.ct != NULL) != (h.ct_id != 0) ||
        (h.ek != NULL && (h.ek < data || h.ek + MSV_MLKEM768_EK_LEN > data + h.len)) ||
        (h.ct != NULL && (h.ct < data || h.ct + MSV_MLKEM768_CT_LEN > data + h.len)) ||
        (h.version == MSV_WIRE_RATCHET && (h.len != 41 || h.ek != NULL || h.ct != NULL)))
        abort();
}

/* The message against a copy of s: an error leaves nothing allocated. */
static void against(const struct msv_session *s, const uint8_t *data, size_t size)
{
    struct msv_session *copy = NULL;
    uint8_t *pt = NULL;
    size_t pt_len = 0;

    if (msv_session_dup(s, &copy) != MSV_OK)
        abort();
    rng_state = 7;
    (void)msv_session_is_downgrade(copy, data, size);
    if (msv_session_decrypt_rng(copy, data, size, &rng, &pt, &pt_len) == MSV_OK)
        msv_secret_free(pt, pt_len);
    else if (pt != NULL)
        abort();
    msv_session_free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (sa == NULL)
        setup();
    check_header(data, size);
    against(sa, data, size);
    against(sb, data, size);
    return 0;
}
