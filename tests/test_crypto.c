/*
 * The crypto module: identities, the three suites' envelopes, the replay
 * cache and attachment encryption, through the public API (and the internal
 * one where a test must look behind a uniform error).
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "crypto/internal.h"
#include "helpers.h"
#include "missive/crypto.h"
#include "missive/util.h"

struct party {
    struct msv_identity *id;
    const struct msv_public_identity *pub;
};

struct suite_fixture {
    enum msv_suite suite;
    struct party alice, bob, carol;
};

static struct suite_fixture fixtures[3];

static void make_party(enum msv_suite suite, struct party *p)
{
    assert_int_equal(msv_identity_generate(suite, 0, &p->id), MSV_OK);
    p->pub = msv_identity_public(p->id);
}

static int setup(void **state)
{
    (void)state;
    if (msv_init() != MSV_OK)
        return -1;
    for (int i = 0; i < 3; i++) {
        fixtures[i].suite = (enum msv_suite)(MSV_SUITE_CLASSIC + i);
        make_party(fixtures[i].suite, &fixtures[i].alice);
        make_party(fixtures[i].suite, &fixtures[i].bob);
        make_party(fixtures[i].suite, &fixtures[i].carol);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        msv_identity_free(fixtures[i].alice.id);
        msv_identity_free(fixtures[i].bob.id);
        msv_identity_free(fixtures[i].carol.id);
    }
    return 0;
}

/* Seals from alice to bob and opens as bob; returns the wire for further checks. */
static uint8_t *seal_open_ok(const struct suite_fixture *f, const uint8_t *pt, size_t len,
                             size_t *wire_len)
{
    uint8_t *wire = NULL, *out = NULL;
    size_t out_len = 0;

    assert_int_equal(msv_seal(f->alice.id, f->bob.pub, pt, len, &wire, wire_len), MSV_OK);
    assert_int_equal(msv_open(f->bob.id, f->alice.pub, wire, *wire_len, NULL, &out, &out_len),
                     MSV_OK);
    assert_int_equal(out_len, len);
    if (len > 0)
        assert_memory_equal(out, pt, len);
    msv_secret_free(out, out_len);
    return wire;
}

static void expect_auth_failure(const struct suite_fixture *f, const uint8_t *wire, size_t len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;

    assert_int_equal(msv_open(f->bob.id, f->alice.pub, wire, len, NULL, &out, &out_len),
                     MSV_ERR_AUTH);
    assert_null(out);
}

static void test_round_trip_sizes(void **state)
{
    static const size_t sizes[] = {0,   1,   15,   16,   99,    100,   101,   115,  116,
                                   117, 255, 1000, 4096, 16384, 65475, 65476, 65536};
    uint8_t *pt = malloc(65536);

    (void)state;
    assert_non_null(pt);
    test_fill_pattern(pt, 65536, 7);
    for (int s = 0; s < 3; s++) {
        const struct suite_fixture *f = &fixtures[s];
        size_t max = msv_plaintext_max(f->bob.pub);

        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            uint8_t *wire = NULL;
            size_t wire_len = 0;

            if (sizes[i] > max) {
                /* classic's u16 body length cannot carry it: refused, not truncated */
                assert_int_equal(f->suite, MSV_SUITE_CLASSIC);
                assert_int_equal(msv_seal(f->alice.id, f->bob.pub, pt, sizes[i], &wire, &wire_len),
                                 MSV_ERR_TOO_BIG);
                assert_null(wire);
                continue;
            }
            wire = seal_open_ok(f, pt, sizes[i], &wire_len);
            free(wire);
        }
    }
    /* classic with RSA-1280 carries 64 KiB less its 60 bytes of overhead */
    assert_int_equal(msv_plaintext_max(fixtures[0].bob.pub), 65475);
    free(pt);
}

/* Every single-byte change, every truncation and any extension of the wire is refused. */
static void test_tamper_every_byte(void **state)
{
    uint8_t pt[300];

    (void)state;
    test_fill_pattern(pt, sizeof(pt), 11);
    for (int s = 0; s < 3; s++) {
        const struct suite_fixture *f = &fixtures[s];
        size_t len = 0;
        uint8_t *wire = seal_open_ok(f, pt, sizeof(pt), &len);
        uint8_t *longer = malloc(len + 1);

        for (size_t i = 0; i < len; i++) {
            for (int flip = 0x01; flip <= 0x80; flip <<= 7) {
                wire[i] ^= (uint8_t)flip;
                expect_auth_failure(f, wire, len);
                wire[i] ^= (uint8_t)flip;
            }
        }
        for (size_t cut = 0; cut < len; cut++)
            expect_auth_failure(f, wire, cut);
        assert_non_null(longer);
        memcpy(longer, wire, len);
        longer[len] = 0;
        expect_auth_failure(f, longer, len + 1);
        free(longer);
        free(wire);
    }
}

/* One round from a to b in whatever suite they agree on; returns that suite's version byte. */
static uint8_t negotiated_round(const struct msv_identity *a, const struct msv_identity *b)
{
    static const uint8_t pt[] = "which suite?";
    uint8_t *wire = NULL, *out = NULL, version;
    size_t len = 0, out_len = 0;

    assert_int_equal(msv_seal(a, msv_identity_public(b), pt, sizeof(pt), &wire, &len), MSV_OK);
    assert_int_equal(msv_open(b, msv_identity_public(a), wire, len, NULL, &out, &out_len), MSV_OK);
    assert_memory_equal(out, pt, sizeof(pt));
    version = wire[0];
    msv_secret_free(out, out_len);
    free(wire);
    return version;
}

/*
 * A device may carry the keys of other suites besides its own: its identity
 * is then the union of whole suite layouts, and two devices use the best
 * suite they share; a partial layout, or a suite claimed without its keys,
 * is refused.
 */
static void test_multi_suite_identities(void **state)
{
    const unsigned all = MSV_SUITE_BIT(MSV_SUITE_CLASSIC) | MSV_SUITE_BIT(MSV_SUITE_ECIES) |
                         MSV_SUITE_BIT(MSV_SUITE_MODERN);
    struct msv_identity *multi = NULL, *modern_ecies = NULL, *again = NULL;
    struct msv_public_identity *pub = NULL;
    struct msv_elem elems[MSV_ELEM_MAX];
    const uint8_t *enc;
    uint8_t *exp = NULL, *exp2 = NULL, *partial = NULL;
    size_t len, exp_len = 0, exp2_len = 0, n, partial_len = 0;

    (void)state;
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_MODERN,
                                                  MSV_SUITE_BIT(MSV_SUITE_CLASSIC) |
                                                      MSV_SUITE_BIT(MSV_SUITE_ECIES),
                                                  0, &multi),
                     MSV_OK);
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_MODERN, MSV_SUITE_BIT(MSV_SUITE_ECIES),
                                                  0, &modern_ecies),
                     MSV_OK);
    assert_int_equal(msv_identity_suite(multi), MSV_SUITE_MODERN);
    assert_int_equal(msv_identity_suites(multi), all);
    /* every element once, the signing key shared by classic and ecies */
    enc = msv_public_identity_bytes(msv_identity_public(multi), &len);
    assert_int_equal(msv_elems_parse(enc, len, elems, MSV_ELEM_MAX, &n), MSV_OK);
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(elems[i].tag, i + 1);
    assert_int_equal(msv_identity_suites_of(enc, len), all);
    /* the device's own suite is the one it is listed under; any it has keys for will do */
    assert_int_equal(msv_public_identity_parse(MSV_SUITE_CLASSIC, enc, len, &pub), MSV_OK);
    assert_int_equal(msv_public_identity_suite(pub), MSV_SUITE_CLASSIC);
    assert_int_equal(msv_public_identity_suites(pub), all);
    msv_public_identity_free(pub);
    pub = NULL;
    enc = msv_public_identity_bytes(msv_identity_public(modern_ecies), &len);
    assert_int_equal(msv_public_identity_parse(MSV_SUITE_CLASSIC, enc, len, &pub), MSV_ERR_PARSE);
    /* stored and read back whole */
    assert_int_equal(msv_identity_export(multi, &exp, &exp_len), MSV_OK);
    assert_int_equal(msv_identity_import(exp, exp_len, &again), MSV_OK);
    assert_int_equal(msv_identity_suites(again), all);
    assert_int_equal(msv_identity_export(again, &exp2, &exp2_len), MSV_OK);
    assert_int_equal(exp_len, exp2_len);
    assert_memory_equal(exp, exp2, exp_len);
    /* negotiation: the best shared suite, each way */
    for (int s = 0; s < 3; s++) {
        const uint8_t want = (uint8_t)(MSV_WIRE_CLASSIC + s);

        assert_int_equal(negotiated_round(multi, fixtures[s].bob.id), want);
        assert_int_equal(negotiated_round(fixtures[s].bob.id, again), want);
    }
    assert_int_equal(negotiated_round(multi, modern_ecies), MSV_WIRE_MODERN);
    assert_int_equal(
        msv_suite_common(MSV_SUITE_BIT(MSV_SUITE_CLASSIC), MSV_SUITE_BIT(MSV_SUITE_MODERN)),
        MSV_SUITE_ANY);
    {
        uint8_t *wire = NULL, *out = NULL;
        size_t wire_len = 0, out_len = 0;

        /* a chosen suite both speak; one of them lacks: refused */
        assert_int_equal(msv_seal_suite(multi, msv_identity_public(again), MSV_SUITE_CLASSIC,
                                        (const uint8_t *)"x", 1, &wire, &wire_len),
                         MSV_OK);
        assert_int_equal(wire[0], MSV_WIRE_CLASSIC);
        assert_int_equal(
            msv_open(again, msv_identity_public(multi), wire, wire_len, NULL, &out, &out_len),
            MSV_OK);
        msv_secret_free(out, out_len);
        /* an ecies-and-modern device cannot read classic, whoever claims to send it */
        assert_int_equal(msv_open(modern_ecies, msv_identity_public(multi), wire, wire_len, NULL,
                                  &out, &out_len),
                         MSV_ERR_AUTH);
        free(wire);
        wire = NULL;
        assert_int_equal(msv_seal_suite(multi, msv_identity_public(modern_ecies), MSV_SUITE_CLASSIC,
                                        (const uint8_t *)"x", 1, &wire, &wire_len),
                         MSV_ERR_INVALID);
    }
    /* partial layouts: a suite's elements without the rest of them */
    enc = msv_public_identity_bytes(msv_identity_public(multi), &len);
    assert_int_equal(msv_elems_parse(enc, len, elems, MSV_ELEM_MAX, &n), MSV_OK);
    {
        static const unsigned drops[] = {1, 3, 4, 5, 6, 7};

        for (size_t d = 0; d < sizeof(drops) / sizeof(drops[0]); d++) {
            struct msv_elem keep[7];
            size_t k = 0;

            for (size_t i = 0; i < n; i++) {
                if (elems[i].tag != drops[d])
                    keep[k++] = elems[i];
            }
            assert_int_equal(msv_elems_encode(keep, k, &partial, &partial_len), MSV_OK);
            assert_int_equal(msv_public_identity_parse(MSV_SUITE_ANY, partial, partial_len, &pub),
                             MSV_ERR_PARSE);
            assert_int_equal(msv_identity_suites_of(partial, partial_len), 0);
            free(partial);
            partial = NULL;
        }
    }
    /* classic signs outside; an envelope of another suite the sender speaks is signed inside */
    {
        static const uint8_t ecies_byte = MSV_WIRE_ECIES;

        assert_int_equal(msv_verify_outer(fixtures[0].alice.pub, &ecies_byte, 1), MSV_ERR_AUTH);
        assert_int_equal(msv_verify_outer(fixtures[0].alice.pub, &ecies_byte, 0), MSV_ERR_AUTH);
        assert_int_equal(msv_verify_outer(msv_identity_public(multi), &ecies_byte, 1),
                         MSV_ERR_UNSUPPORTED);
        assert_int_equal(msv_verify_outer(fixtures[2].alice.pub, &ecies_byte, 1),
                         MSV_ERR_UNSUPPORTED);
    }
    msv_secret_free(exp, exp_len);
    msv_secret_free(exp2, exp2_len);
    msv_identity_free(multi);
    msv_identity_free(modern_ecies);
    msv_identity_free(again);
}

static void test_wrong_parties(void **state)
{
    static const uint8_t pt[] = "meet at noon";

    (void)state;
    for (int s = 0; s < 3; s++) {
        const struct suite_fixture *f = &fixtures[s];
        const struct suite_fixture *other = &fixtures[(s + 1) % 3];
        uint8_t *wire = NULL, *out = NULL;
        size_t len = 0, out_len = 0;

        assert_int_equal(msv_seal(f->alice.id, f->bob.pub, pt, sizeof(pt), &wire, &len), MSV_OK);
        /* an envelope for another device */
        assert_int_equal(msv_open(f->carol.id, f->alice.pub, wire, len, NULL, &out, &out_len),
                         MSV_ERR_AUTH);
        /* claimed to come from someone else */
        assert_int_equal(msv_open(f->bob.id, f->carol.pub, wire, len, NULL, &out, &out_len),
                         MSV_ERR_AUTH);
        /* a sender without keys of the envelope's suite did not send it */
        assert_int_equal(msv_open(f->bob.id, other->alice.pub, wire, len, NULL, &out, &out_len),
                         MSV_ERR_AUTH);
        free(wire);
        wire = NULL;
        /* devices with no suite in common cannot write to each other */
        assert_int_equal(msv_seal(f->alice.id, other->bob.pub, pt, sizeof(pt), &wire, &len),
                         MSV_ERR_INVALID);
        assert_null(out);
        assert_null(wire);
    }
}

/*
 * An attacker who intercepts alice's classic envelope to bob re-signs its body
 * with his own key and presents it as his. The signature verifies under his
 * identity and the RSA block still decrypts, so only the 40-bit tag, bound to
 * alice's identity hash, can refuse it.
 */
static void test_classic_resigned_rejected_by_tag(void **state)
{
    const struct suite_fixture *f = &fixtures[0];
    static const uint8_t pt[] = "the re-signing attack";
    struct msv_identity *mallory = NULL;
    uint8_t *wire = NULL, *forged = NULL, *out = NULL, sig[72];
    size_t len = 0, sig_len = 0, body_len, out_len = 0, forged_len;
    const uint8_t *body;

    (void)state;
    assert_int_equal(msv_identity_generate(MSV_SUITE_CLASSIC, 0, &mallory), MSV_OK);
    assert_int_equal(msv_seal(f->alice.id, f->bob.pub, pt, sizeof(pt), &wire, &len), MSV_OK);
    body_len = (size_t)wire[1] << 8 | wire[2];
    body = wire + 3;
    assert_int_equal(
        msv_ecdsa_sign(mallory->sign_sk, EVP_sha1(), &body, &body_len, 1, sig, &sig_len), MSV_OK);
    forged_len = 3 + body_len + 1 + sig_len;
    forged = malloc(forged_len);
    assert_non_null(forged);
    memcpy(forged, wire, 3 + body_len);
    forged[3 + body_len] = (uint8_t)sig_len;
    memcpy(forged + 4 + body_len, sig, sig_len);

    assert_int_equal(msv_verify_outer(msv_identity_public(mallory), forged, forged_len), MSV_OK);
    assert_int_equal(msv_verify_outer(f->alice.pub, forged, forged_len), MSV_ERR_AUTH);
    assert_int_equal(
        msv_open(f->bob.id, msv_identity_public(mallory), forged, forged_len, NULL, &out, &out_len),
        MSV_ERR_AUTH);
    assert_null(out);
    /* the untouched original still opens as alice's */
    assert_int_equal(msv_open(f->bob.id, f->alice.pub, wire, len, NULL, &out, &out_len), MSV_OK);
    msv_secret_free(out, out_len);
    free(forged);
    free(wire);
    msv_identity_free(mallory);
}

/* Replaces the DER signature (r, s) with the equally valid (r, n - s). */
static uint8_t *malleate_classic_signature(const uint8_t *wire, size_t len, size_t *out_len)
{
    size_t body_len = (size_t)wire[1] << 8 | wire[2], sig_off = 4 + body_len;
    const unsigned char *p = wire + sig_off;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)(len - sig_off));
    EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    BIGNUM *s2 = BN_new();
    unsigned char *der = NULL;
    uint8_t *out;
    int der_len;

    assert_non_null(sig);
    assert_non_null(s2);
    assert_int_equal(BN_sub(s2, EC_GROUP_get0_order(group), ECDSA_SIG_get0_s(sig)), 1);
    assert_int_equal(ECDSA_SIG_set0(sig, BN_dup(ECDSA_SIG_get0_r(sig)), s2), 1);
    der_len = i2d_ECDSA_SIG(sig, &der);
    assert_true(der_len > 0);
    out = malloc(sig_off + (size_t)der_len);
    assert_non_null(out);
    memcpy(out, wire, sig_off);
    out[sig_off - 1] = (uint8_t)der_len;
    memcpy(out + sig_off, der, (size_t)der_len);
    *out_len = sig_off + (size_t)der_len;
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    EC_GROUP_free(group);
    return out;
}

static void test_replay_cache(void **state)
{
    static const uint8_t pt[] = "once only";

    (void)state;
    for (int s = 0; s < 3; s++) {
        const struct suite_fixture *f = &fixtures[s];
        struct msv_replay_cache *cache = NULL;
        uint8_t *wire = NULL, *other = NULL, *out = NULL;
        size_t len = 0, other_len = 0, out_len = 0;

        assert_int_equal(msv_replay_cache_new(64, &cache), MSV_OK);
        assert_int_equal(msv_seal(f->alice.id, f->bob.pub, pt, sizeof(pt), &wire, &len), MSV_OK);
        assert_int_equal(msv_open(f->bob.id, f->alice.pub, wire, len, cache, &out, &out_len),
                         MSV_OK);
        msv_secret_free(out, out_len);
        out = NULL;
        assert_int_equal(msv_open(f->bob.id, f->alice.pub, wire, len, cache, &out, &out_len),
                         MSV_ERR_REPLAY);
        assert_null(out);
        if (f->suite == MSV_SUITE_CLASSIC) {
            /* a second valid signature over the same body is still the same message */
            uint8_t *twin = NULL;
            size_t twin_len = 0;

            twin = malleate_classic_signature(wire, len, &twin_len);
            assert_memory_not_equal(twin + twin_len - 8, wire + len - 8, 8);
            assert_int_equal(
                msv_open(f->bob.id, f->alice.pub, twin, twin_len, cache, &out, &out_len),
                MSV_ERR_REPLAY);
            free(twin);
        }
        /* the same plaintext sealed again is a new message */
        assert_int_equal(msv_seal(f->alice.id, f->bob.pub, pt, sizeof(pt), &other, &other_len),
                         MSV_OK);
        assert_int_equal(msv_open(f->bob.id, f->alice.pub, other, other_len, cache, &out, &out_len),
                         MSV_OK);
        msv_secret_free(out, out_len);
        free(wire);
        free(other);
        msv_replay_cache_free(cache);
    }
}

static void test_replay_cache_eviction(void **state)
{
    struct msv_replay_cache *cache = NULL;
    uint8_t ids[5][32];

    (void)state;
    assert_int_equal(msv_replay_cache_new(0, &cache), MSV_ERR_INVALID);
    assert_int_equal(msv_replay_cache_new(3, &cache), MSV_OK);
    for (int i = 0; i < 5; i++)
        test_fill_pattern(ids[i], 32, (unsigned)i + 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(msv_replay_cache_add(cache, ids[i]), MSV_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(msv_replay_cache_add(cache, ids[i]), MSV_ERR_REPLAY);
    /* a fourth id evicts the oldest, and only the oldest */
    assert_int_equal(msv_replay_cache_add(cache, ids[3]), MSV_OK);
    assert_int_equal(msv_replay_cache_add(cache, ids[1]), MSV_ERR_REPLAY);
    assert_int_equal(msv_replay_cache_add(cache, ids[2]), MSV_ERR_REPLAY);
    assert_int_equal(msv_replay_cache_add(cache, ids[0]), MSV_OK);
    assert_int_equal(msv_replay_cache_add(cache, ids[1]), MSV_OK);
    assert_int_equal(msv_replay_cache_add(cache, ids[4]), MSV_OK);
    assert_int_equal(msv_replay_cache_add(cache, ids[4]), MSV_ERR_REPLAY);
    msv_replay_cache_free(cache);
    msv_replay_cache_free(NULL);
}

/* Walks one element of the classic identity: tag byte, DER length, u16 length, value. */
static const uint8_t *classic_elem(const uint8_t *p, uint8_t tag, size_t *contents_len)
{
    size_t n;

    assert_int_equal(p[0], tag);
    if (p[1] < 0x80) {
        n = p[1];
        p += 2;
    } else if (p[1] == 0x81) {
        n = p[2];
        p += 3;
    } else {
        assert_int_equal(p[1], 0x82);
        n = (size_t)p[2] << 8 | p[3];
        p += 4;
    }
    assert_int_equal(((size_t)p[0] << 8 | p[1]) + 2, n);
    *contents_len = n;
    return p;
}

/* The classic public identity is laid out as the iMessage format: SEQUENCE { [1], [2] }. */
static void test_classic_identity_layout(void **state)
{
    const struct msv_public_identity *pub = fixtures[0].alice.pub;
    const uint8_t *enc, *c1, *c2, *parts[2];
    size_t len, n1, n2, lens[2];
    uint8_t want[32], got[32];

    (void)state;
    enc = msv_public_identity_bytes(pub, &len);
    assert_int_equal(enc[0], 0x30);
    c1 = classic_elem(enc + (enc[1] == 0x82 ? 4 : 3), 0x81, &n1);
    assert_int_equal(n1, 2 + 65);
    assert_int_equal(c1[2], 0x04);
    c2 = classic_elem(c1 + n1, 0x82, &n2);
    assert_ptr_equal(c2 + n2, enc + len);
    /* [2] holds a PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER 65537 } */
    assert_int_equal(c2[2], 0x30);
    assert_memory_equal(c2 + n2 - 5, "\x02\x03\x01\x00\x01", 5);
    parts[0] = c1;
    lens[0] = n1;
    parts[1] = c2;
    lens[1] = n2;
    assert_int_equal(msv_sha256_parts(parts, lens, 2, want), MSV_OK);
    msv_public_identity_hash(pub, got);
    assert_memory_equal(got, want, 32);
}

static void test_identity_export_import(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        const struct suite_fixture *f = &fixtures[s];
        struct msv_identity *copy = NULL, *bad = NULL;
        uint8_t *exp = NULL, *exp_other = NULL, *wire = NULL, *out = NULL;
        size_t exp_len = 0, other_len = 0, a_len, b_len, wire_len = 0, out_len = 0;
        const uint8_t *a, *b;
        uint8_t h1[32], h2[32];
        static const uint8_t pt[] = "after a restart";

        assert_int_equal(msv_identity_export(f->alice.id, &exp, &exp_len), MSV_OK);
        assert_int_equal(msv_identity_import(exp, exp_len, &copy), MSV_OK);
        a = msv_public_identity_bytes(f->alice.pub, &a_len);
        b = msv_public_identity_bytes(msv_identity_public(copy), &b_len);
        assert_int_equal(a_len, b_len);
        assert_memory_equal(a, b, a_len);
        msv_public_identity_hash(f->alice.pub, h1);
        msv_public_identity_hash(msv_identity_public(copy), h2);
        assert_memory_equal(h1, h2, 32);
        assert_int_equal(msv_identity_suite(copy), f->suite);
        /* the imported keys work both ways */
        assert_int_equal(msv_seal(copy, f->bob.pub, pt, sizeof(pt), &wire, &wire_len), MSV_OK);
        assert_int_equal(msv_open(f->bob.id, f->alice.pub, wire, wire_len, NULL, &out, &out_len),
                         MSV_OK);
        msv_secret_free(out, out_len);

        /* secrets of one identity under the public part of another are refused */
        assert_int_equal(msv_identity_export(f->bob.id, &exp_other, &other_len), MSV_OK);
        {
            size_t pub_len =
                (size_t)exp[6] << 24 | (size_t)exp[7] << 16 | (size_t)exp[8] << 8 | exp[9];
            size_t other_pub = (size_t)exp_other[6] << 24 | (size_t)exp_other[7] << 16 |
                               (size_t)exp_other[8] << 8 | exp_other[9];
            size_t mixed_len = 10 + pub_len + (other_len - 10 - other_pub);
            uint8_t *mixed = malloc(mixed_len);

            assert_non_null(mixed);
            memcpy(mixed, exp, 10 + pub_len);
            memcpy(mixed + 10 + pub_len, exp_other + 10 + other_pub, other_len - 10 - other_pub);
            assert_int_equal(msv_identity_import(mixed, mixed_len, &bad), MSV_ERR_PARSE);
            assert_null(bad);
            msv_secret_free(mixed, mixed_len);
        }
        /* a damaged private key (here: the last byte, inside the RSA CRT coefficient or the
         * X25519/P-256 scalar) is refused rather than imported half-working */
        exp[exp_len - 1] ^= 0x01;
        assert_int_equal(msv_identity_import(exp, exp_len, &bad), MSV_ERR_PARSE);
        assert_null(bad);
        exp[exp_len - 1] ^= 0x01;
        /* every truncation is refused */
        for (size_t cut = 0; cut < exp_len; cut++) {
            assert_int_not_equal(msv_identity_import(exp, cut, &bad), MSV_OK);
            assert_null(bad);
        }
        free(wire);
        msv_secret_free(exp, exp_len);
        msv_secret_free(exp_other, other_len);
        msv_identity_free(copy);
    }
}

static void test_public_identity_parse(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        const struct suite_fixture *f = &fixtures[s];
        struct msv_public_identity *pub = NULL;
        size_t len;
        const uint8_t *enc = msv_public_identity_bytes(f->alice.pub, &len);
        uint8_t *copy = malloc(len + 1);

        assert_int_equal(msv_public_identity_parse(MSV_SUITE_ANY, enc, len, &pub), MSV_OK);
        assert_int_equal(msv_public_identity_suite(pub), f->suite);
        msv_public_identity_free(pub);
        pub = NULL;
        assert_int_equal(msv_public_identity_parse(f->suite, enc, len, &pub), MSV_OK);
        msv_public_identity_free(pub);
        pub = NULL;
        assert_int_equal(
            msv_public_identity_parse((enum msv_suite)(1 + (s + 1) % 3), enc, len, &pub),
            MSV_ERR_PARSE);
        for (size_t cut = 0; cut < len; cut++)
            assert_int_equal(msv_public_identity_parse(MSV_SUITE_ANY, enc, cut, &pub),
                             MSV_ERR_PARSE);
        assert_non_null(copy);
        memcpy(copy, enc, len);
        copy[len] = 0;
        assert_int_equal(msv_public_identity_parse(MSV_SUITE_ANY, copy, len + 1, &pub),
                         MSV_ERR_PARSE);
        /* a changed last byte (classic: the RSA exponent; else the self-signature) is refused */
        copy[len - 1] ^= 1;
        assert_int_equal(msv_public_identity_parse(MSV_SUITE_ANY, copy, len, &pub), MSV_ERR_PARSE);
        assert_null(pub);
        free(copy);
    }
}

static void test_classic_rsa_sizes(void **state)
{
    static const unsigned bits[] = {2048, 3072};
    uint8_t pt[500];
    struct msv_identity *bad = NULL;

    (void)state;
    test_fill_pattern(pt, sizeof(pt), 3);
    assert_int_equal(msv_identity_generate(MSV_SUITE_CLASSIC, 1024, &bad), MSV_ERR_INVALID);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 2048, &bad), MSV_ERR_INVALID);
    assert_null(bad);
    for (size_t i = 0; i < 2; i++) {
        struct suite_fixture f = {.suite = MSV_SUITE_CLASSIC};
        uint8_t *wire;
        size_t len = 0;

        assert_int_equal(msv_identity_generate(MSV_SUITE_CLASSIC, bits[i], &f.bob.id), MSV_OK);
        f.bob.pub = msv_identity_public(f.bob.id);
        f.alice = fixtures[0].alice; /* a 1280-bit sender can write to a 3072-bit device */
        wire = seal_open_ok(&f, pt, sizeof(pt), &len);
        /* the RSA block is as long as the recipient's modulus */
        assert_int_equal((size_t)wire[1] << 8 | wire[2], bits[i] / 8 + sizeof(pt) - 100);
        free(wire);
        msv_identity_free(f.bob.id);
    }
}

static void test_fingerprint_text(void **state)
{
    uint8_t hash[32];
    char text[MSV_FINGERPRINT_TEXT_LEN];

    (void)state;
    for (int i = 0; i < 32; i++)
        hash[i] = (uint8_t)(i * 17);
    msv_fingerprint_text(hash, text);
    assert_string_equal(text, "0011 2233 4455 6677 8899 aabb ccdd eeff "
                              "1021 3243 5465 7687 98a9 bacb dced fe0f");
    assert_int_equal(strlen(text), MSV_FINGERPRINT_TEXT_LEN - 1);
}

static void test_attachment_round_trip(void **state)
{
    static const size_t sizes[] = {0, 1, 16, 17, 1000, 1u << 20};
    uint8_t key[32];

    (void)state;
    msv_attachment_key_generate(key);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        uint8_t *pt = malloc(n + 1), *ct = malloc(n + 1), *back = malloc(n + 1);
        struct msv_attachment_digest d;
        uint8_t sha256[32], sha1[20];

        assert_true(pt && ct && back);
        test_fill_pattern(pt, n, (unsigned)i);
        assert_int_equal(msv_attachment_encrypt(key, pt, n, ct, &d), MSV_OK);
        assert_int_equal(msv_sha256(ct, n, sha256), MSV_OK);
        assert_int_equal(msv_sha1(ct, n, sha1), MSV_OK);
        assert_memory_equal(d.sha256, sha256, 32);
        assert_memory_equal(d.sha1, sha1, 20);
        if (n >= 16)
            assert_memory_not_equal(ct, pt, 16);
        assert_int_equal(msv_attachment_decrypt(key, d.sha256, ct, n, back), MSV_OK);
        if (n > 0)
            assert_memory_equal(back, pt, n);
        if (n > 0) {
            /* a changed ciphertext is refused before anything is decrypted */
            memset(back, 0xAA, n);
            ct[n / 2] ^= 0x20;
            assert_int_equal(msv_attachment_decrypt(key, d.sha256, ct, n, back), MSV_ERR_AUTH);
            for (size_t k = 0; k < n; k++)
                assert_int_equal(back[k], 0xAA);
        }
        free(pt);
        free(ct);
        free(back);
    }
}

/* Streaming in uneven pieces gives the same bytes and digests as one shot. */
static void test_attachment_streaming(void **state)
{
    const size_t n = 100003;
    uint8_t key[32], *pt = malloc(n), *one = malloc(n), *many = malloc(n);
    struct msv_attachment_cipher *c = NULL;
    struct msv_attachment_hasher *h = NULL;
    struct msv_attachment_digest d1, d2;
    size_t off = 0, piece = 1;

    (void)state;
    assert_true(pt && one && many);
    test_fill_pattern(key, 32, 5);
    test_fill_pattern(pt, n, 6);
    assert_int_equal(msv_attachment_encrypt(key, pt, n, one, &d1), MSV_OK);
    assert_int_equal(msv_attachment_cipher_new(key, &c), MSV_OK);
    assert_int_equal(msv_attachment_hasher_new(&h), MSV_OK);
    while (off < n) {
        size_t take = piece < n - off ? piece : n - off;

        assert_int_equal(msv_attachment_cipher_update(c, pt + off, take, many + off), MSV_OK);
        assert_int_equal(msv_attachment_hasher_update(h, many + off, take), MSV_OK);
        off += take;
        piece = piece * 3 + 1;
    }
    assert_int_equal(msv_attachment_hasher_final(h, &d2), MSV_OK);
    assert_int_equal(msv_attachment_hasher_final(h, &d2), MSV_ERR_INVALID);
    assert_memory_equal(one, many, n);
    assert_memory_equal(&d1, &d2, sizeof(d1));
    msv_attachment_cipher_free(c);
    msv_attachment_hasher_free(h);
    free(pt);
    free(one);
    free(many);
}

static void test_device_signatures(void **state)
{
    static const uint8_t msg[] = "MSV-auth-v1 challenge";

    (void)state;
    for (int s = 0; s < 3; s++) {
        const struct suite_fixture *f = &fixtures[s];
        uint8_t sig[MSV_SIGNATURE_MAX];
        size_t len = 0;

        assert_int_equal(msv_identity_sign(f->alice.id, msg, sizeof(msg), sig, &len), MSV_OK);
        assert_true(len > 0 && len <= MSV_SIGNATURE_MAX);
        assert_int_equal(msv_public_identity_verify(f->alice.pub, msg, sizeof(msg), sig, len),
                         MSV_OK);
        assert_int_equal(msv_public_identity_verify(f->bob.pub, msg, sizeof(msg), sig, len),
                         MSV_ERR_AUTH);
        assert_int_equal(msv_public_identity_verify(f->alice.pub, msg, sizeof(msg) - 1, sig, len),
                         MSV_ERR_AUTH);
        sig[len - 1] ^= 1;
        assert_int_equal(msv_public_identity_verify(f->alice.pub, msg, sizeof(msg), sig, len),
                         MSV_ERR_AUTH);
        assert_int_equal(msv_public_identity_verify(f->alice.pub, msg, sizeof(msg), sig, 0),
                         MSV_ERR_AUTH);
    }
}

static void test_suite_names(void **state)
{
    enum msv_suite s = MSV_SUITE_ANY;

    (void)state;
    assert_int_equal(msv_suite_from_name("modern", &s), MSV_OK);
    assert_int_equal(s, MSV_SUITE_MODERN);
    assert_int_equal(msv_suite_from_name("classic", &s), MSV_OK);
    assert_int_equal(s, MSV_SUITE_CLASSIC);
    assert_int_equal(msv_suite_from_name("rot13", &s), MSV_ERR_UNSUPPORTED);
    assert_string_equal(msv_suite_name(MSV_SUITE_ECIES), "ecies");
    assert_string_equal(msv_strerror(MSV_ERR_AUTH), "message could not be authenticated");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_sizes),
        cmocka_unit_test(test_tamper_every_byte),
        cmocka_unit_test(test_wrong_parties),
        cmocka_unit_test(test_multi_suite_identities),
        cmocka_unit_test(test_classic_resigned_rejected_by_tag),
        cmocka_unit_test(test_replay_cache),
        cmocka_unit_test(test_replay_cache_eviction),
        cmocka_unit_test(test_classic_identity_layout),
        cmocka_unit_test(test_identity_export_import),
        cmocka_unit_test(test_public_identity_parse),
        cmocka_unit_test(test_classic_rsa_sizes),
        cmocka_unit_test(test_fingerprint_text),
        cmocka_unit_test(test_attachment_round_trip),
        cmocka_unit_test(test_attachment_streaming),
        cmocka_unit_test(test_device_signatures),
        cmocka_unit_test(test_suite_names),
    };

    return cmocka_run_group_tests_name("crypto", tests, setup, teardown);
}
