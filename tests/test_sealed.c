/*
 * Sealed sender's outer layer to post-quantum devices (docs/crypto.md,
 * "Hybrid sealed sender"): the hybrid version 0x09 round trip, every byte
 * changed, every length cut, the classical version refused by a device
 * whose identity has [8] (and the hybrid one by a device without it), a
 * KEM part stripped, and a KEM key that is not the recipient's.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/internal.h"
#include "helpers.h"
#include "missive/mlkem.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"

#define HEAD_LAYER (1 + 255 + 8 + 16)
#define KEM_PART (4 + MSV_MLKEM768_CT_LEN)

struct device {
    struct msv_identity *id;
    struct msv_kem_prekey *kem; /* its last-resort KEM prekey (post-quantum devices) */
    struct msv_sealing_key key; /* what a sender seals to */
};

static void device_new(struct device *d, int pq, uint32_t kem_id)
{
    uint8_t sig[64];

    memset(d, 0, sizeof(*d));
    assert_int_equal(
        msv_identity_generate_suites(MSV_SUITE_MODERN, pq ? MSV_IDENTITY_PQ : 0, 0, &d->id),
        MSV_OK);
    if (!pq)
        return;
    d->kem = calloc(1, sizeof(*d->kem));
    assert_non_null(d->kem);
    assert_int_equal(msv_kem_prekey_generate(d->id, kem_id, 1, d->kem, sig), MSV_OK);
    assert_int_equal(msv_kem_prekey_verify(msv_identity_public(d->id), kem_id, 1, d->kem->ek,
                                           sizeof(d->kem->ek), sig),
                     MSV_OK);
    d->key.id = kem_id;
    memcpy(d->key.ek, d->kem->ek, sizeof(d->key.ek));
}

static void device_free(struct device *d)
{
    msv_identity_free(d->id);
    free(d->kem);
}

/* A copy of pub whose [8] flag says otherwise: what a sender of an earlier version (or one
 * fooled into thinking so) would seal to, with the device's real keys and identity hash. */
static struct msv_public_identity *pq_flipped(const struct msv_public_identity *pub)
{
    struct msv_public_identity *copy = NULL;
    size_t len = 0;
    const uint8_t *bytes = msv_public_identity_bytes(pub, &len);

    assert_int_equal(msv_public_identity_parse(MSV_SUITE_MODERN, bytes, len, &copy), MSV_OK);
    copy->pq = !copy->pq;
    return copy;
}

/* MSV_OK if bob reads wire as sealed by alice (both layers), with the envelope env. */
static msv_err bob_reads(const struct device *bob, const struct device *alice, const uint8_t *wire,
                         size_t len, const uint8_t *env, size_t env_len)
{
    char handle[256];
    uint64_t device = 0;
    uint8_t *inner = NULL;
    size_t inner_len = 0;
    uint32_t kem_id = 0;
    uint8_t ss[32];
    msv_err err = msv_sealed_kem_id(wire, len, &kem_id);

    if (err == MSV_OK && kem_id != bob->key.id)
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = msv_sealed_sender_pq(bob->id, bob->kem->dk, wire, len, handle, &device, ss);
    if (err == MSV_OK && (strcmp(handle, "alice@example.org") != 0 || device != 7))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = msv_sealed_unwrap_pq(bob->id, bob->kem->dk, ss, msv_identity_public(alice->id), wire,
                                   len, &inner, &inner_len);
    if (err == MSV_OK && (inner_len != env_len || memcmp(inner, env, env_len) != 0))
        err = MSV_ERR_AUTH;
    if (err != MSV_OK)
        assert_null(inner);
    free(inner);
    return err;
}

static void test_hybrid_round_trip(void **state)
{
    struct device alice, bob;
    uint8_t env[100], *wire = NULL, *inner = NULL;
    size_t len = 0, inner_len = 0;

    (void)state;
    device_new(&alice, 1, 5);
    device_new(&bob, 1, 9);
    memset(env, 0x42, sizeof(env));
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), &bob.key,
                                        "alice@example.org", 7, env, sizeof(env), &wire, &len),
                     MSV_OK);
    assert_int_equal(wire[0], MSV_WIRE_SEALED_PQ);
    /* the classical layer plus the KEM id and ciphertext: 1,092 bytes more */
    assert_int_equal(len, 1 + 32 + KEM_PART + HEAD_LAYER + sizeof(env) + 16);
    assert_int_equal(bob_reads(&bob, &alice, wire, len, env, sizeof(env)), MSV_OK);
    /* the second layer alone decapsulates again */
    assert_int_equal(msv_sealed_unwrap_pq(bob.id, bob.kem->dk, NULL, msv_identity_public(alice.id),
                                          wire, len, &inner, &inner_len),
                     MSV_OK);
    assert_int_equal(inner_len, sizeof(env));
    assert_memory_equal(inner, env, sizeof(env));
    free(inner);
    free(wire);
    device_free(&alice);
    device_free(&bob);
}

/* Every byte changed, every length cut: neither layer opens. */
/*
 * The largest inner envelope a session makes: a hybrid first message's prefix and a
 * post-quantum ratchet header offering a KEM key around the largest plaintext, sealed and read;
 * 4 KiB beyond the plaintext limit is refused. Before, 1 KiB was the margin, less than the
 * prefix alone.
 */
static void test_largest_inner_envelope(void **state)
{
    struct device alice, bob;
    size_t big = MSV_PLAINTEXT_MAX + 1133 + 1234 + 16, len = 0;
    uint8_t *env = malloc(MSV_PLAINTEXT_MAX + 4097), *wire = NULL;

    (void)state;
    assert_non_null(env);
    device_new(&alice, 1, 5);
    device_new(&bob, 1, 9);
    memset(env, 0x2a, MSV_PLAINTEXT_MAX + 4097);
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), &bob.key,
                                        "alice@example.org", 7, env, big, &wire, &len),
                     MSV_OK);
    assert_int_equal(bob_reads(&bob, &alice, wire, len, env, big), MSV_OK);
    free(wire);
    wire = NULL;
    assert_int_not_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), &bob.key,
                                            "alice@example.org", 7, env, MSV_PLAINTEXT_MAX + 4097,
                                            &wire, &len),
                         MSV_OK);
    free(env);
    device_free(&alice);
    device_free(&bob);
}

static void test_hybrid_every_byte(void **state)
{
    struct device alice, bob;
    uint8_t env[20], *wire = NULL;
    size_t len = 0;
    char handle[256];
    uint64_t device = 0;

    (void)state;
    device_new(&alice, 1, 5);
    device_new(&bob, 1, 9);
    memset(env, 0x17, sizeof(env));
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), &bob.key,
                                        "alice@example.org", 7, env, sizeof(env), &wire, &len),
                     MSV_OK);
    for (size_t i = 0; i < len; i++) {
        wire[i] ^= 0x01;
        assert_int_equal(bob_reads(&bob, &alice, wire, len, env, sizeof(env)), MSV_ERR_AUTH);
        /* the first layer too, as far as it reaches */
        if (i < 1 + 32 + KEM_PART + HEAD_LAYER)
            assert_int_equal(
                msv_sealed_sender_pq(bob.id, bob.kem->dk, wire, len, handle, &device, NULL),
                MSV_ERR_AUTH);
        wire[i] ^= 0x01;
    }
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(bob_reads(&bob, &alice, wire, cut, env, sizeof(env)), MSV_ERR_AUTH);
    assert_int_equal(bob_reads(&bob, &alice, wire, len, env, sizeof(env)), MSV_OK);
    free(wire);
    device_free(&alice);
    device_free(&bob);
}

/*
 * No downgrade: the classical version, correctly made to the device's own
 * X25519 key and identity hash, is refused by a device with [8]; so is the
 * hybrid one with its KEM part stripped. And the library never makes either.
 */
static void test_classical_to_pq_refused(void **state)
{
    struct device alice, bob;
    struct msv_public_identity *old_view = NULL;
    uint8_t env[30], *wire = NULL, *inner = NULL, *stripped = NULL;
    size_t len = 0, inner_len = 0;
    char handle[256];
    uint64_t device = 0;

    (void)state;
    device_new(&alice, 1, 5);
    device_new(&bob, 1, 9);
    memset(env, 0x33, sizeof(env));
    /* the library refuses to seal classically to [8], and hybrid without a key */
    assert_int_equal(msv_sealed_wrap(alice.id, msv_identity_public(bob.id), "alice@example.org", 7,
                                     env, sizeof(env), &wire, &len),
                     MSV_ERR_INVALID);
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), NULL,
                                        "alice@example.org", 7, env, sizeof(env), &wire, &len),
                     MSV_ERR_INVALID);
    assert_null(wire);
    /* a sender that ignores [8] */
    old_view = pq_flipped(msv_identity_public(bob.id));
    assert_int_equal(
        msv_sealed_wrap(alice.id, old_view, "alice@example.org", 7, env, sizeof(env), &wire, &len),
        MSV_OK);
    assert_int_equal(wire[0], MSV_WIRE_SEALED);
    assert_int_equal(msv_sealed_sender(bob.id, wire, len, handle, &device), MSV_ERR_AUTH);
    assert_int_equal(msv_sealed_sender_pq(bob.id, bob.kem->dk, wire, len, handle, &device, NULL),
                     MSV_ERR_AUTH);
    assert_int_equal(
        msv_sealed_unwrap(bob.id, msv_identity_public(alice.id), wire, len, &inner, &inner_len),
        MSV_ERR_AUTH);
    assert_int_equal(msv_sealed_unwrap_pq(bob.id, bob.kem->dk, NULL, msv_identity_public(alice.id),
                                          wire, len, &inner, &inner_len),
                     MSV_ERR_AUTH);
    assert_null(inner);
    free(wire);
    wire = NULL;
    /* a hybrid one with its KEM id and ciphertext cut out, relabelled 0x07 */
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), &bob.key,
                                        "alice@example.org", 7, env, sizeof(env), &wire, &len),
                     MSV_OK);
    stripped = malloc(len - KEM_PART);
    assert_non_null(stripped);
    stripped[0] = MSV_WIRE_SEALED;
    memcpy(stripped + 1, wire + 1, 32);
    memcpy(stripped + 33, wire + 33 + KEM_PART, len - 33 - KEM_PART);
    assert_int_equal(msv_sealed_sender(bob.id, stripped, len - KEM_PART, handle, &device),
                     MSV_ERR_AUTH);
    assert_int_equal(
        msv_sealed_sender_pq(bob.id, bob.kem->dk, stripped, len - KEM_PART, handle, &device, NULL),
        MSV_ERR_AUTH);
    free(stripped);
    free(wire);
    msv_public_identity_free(old_view);
    device_free(&alice);
    device_free(&bob);
}

/* A device of an earlier version keeps the classical version and refuses the hybrid one. */
static void test_classical_device_stays_classical(void **state)
{
    struct device alice, carol, other;
    struct msv_public_identity *pq_view = NULL;
    uint8_t env[30], *wire = NULL, *inner = NULL;
    size_t len = 0, inner_len = 0;
    char handle[256];
    uint64_t device = 0;

    (void)state;
    device_new(&alice, 1, 5);
    device_new(&carol, 0, 0);
    device_new(&other, 1, 4);
    memset(env, 0x44, sizeof(env));
    assert_int_equal(msv_sealed_wrap(alice.id, msv_identity_public(carol.id), "alice@example.org",
                                     7, env, sizeof(env), &wire, &len),
                     MSV_OK);
    assert_int_equal(wire[0], MSV_WIRE_SEALED);
    assert_int_equal(msv_sealed_sender(carol.id, wire, len, handle, &device), MSV_OK);
    assert_int_equal(
        msv_sealed_unwrap(carol.id, msv_identity_public(alice.id), wire, len, &inner, &inner_len),
        MSV_OK);
    assert_memory_equal(inner, env, sizeof(env));
    free(inner);
    inner = NULL;
    free(wire);
    wire = NULL;
    /* hybrid to carol: the library refuses; a sender that does it anyway is refused by carol */
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(carol.id), &other.key,
                                        "alice@example.org", 7, env, sizeof(env), &wire, &len),
                     MSV_ERR_INVALID);
    pq_view = pq_flipped(msv_identity_public(carol.id));
    assert_int_equal(msv_sealed_wrap_pq(alice.id, pq_view, &other.key, "alice@example.org", 7, env,
                                        sizeof(env), &wire, &len),
                     MSV_OK);
    assert_int_equal(msv_sealed_sender(carol.id, wire, len, handle, &device), MSV_ERR_AUTH);
    assert_int_equal(
        msv_sealed_sender_pq(carol.id, other.kem->dk, wire, len, handle, &device, NULL),
        MSV_ERR_AUTH);
    free(wire);
    msv_public_identity_free(pq_view);
    device_free(&alice);
    device_free(&carol);
    device_free(&other);
}

/* Sealed to a KEM key that is not the recipient's (another device's, or its own older one
 * whose secret it does not use): nothing opens. */
static void test_wrong_kem_key(void **state)
{
    struct device alice, bob, mallory, bob_next;
    uint8_t env[30], *wire = NULL;
    size_t len = 0;
    char handle[256];
    uint64_t device = 0;

    (void)state;
    device_new(&alice, 1, 5);
    device_new(&bob, 1, 9);
    device_new(&mallory, 1, 9);
    memset(env, 0x55, sizeof(env));
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), &mallory.key,
                                        "alice@example.org", 7, env, sizeof(env), &wire, &len),
                     MSV_OK);
    assert_int_equal(bob_reads(&bob, &alice, wire, len, env, sizeof(env)), MSV_ERR_AUTH);
    assert_int_equal(msv_sealed_sender_pq(bob.id, bob.kem->dk, wire, len, handle, &device, NULL),
                     MSV_ERR_AUTH);
    /* mallory holds that KEM secret but not bob's X25519 key */
    assert_int_equal(
        msv_sealed_sender_pq(mallory.id, mallory.kem->dk, wire, len, handle, &device, NULL),
        MSV_ERR_AUTH);
    free(wire);
    wire = NULL;
    /* bob's own next KEM key, opened with this one: refused too */
    bob_next.kem = calloc(1, sizeof(*bob_next.kem));
    assert_non_null(bob_next.kem);
    assert_int_equal(msv_kem_prekey_generate(bob.id, 10, 1, bob_next.kem, (uint8_t[64]){0}),
                     MSV_OK);
    bob_next.key.id = 9; /* claims the id bob reads with */
    memcpy(bob_next.key.ek, bob_next.kem->ek, sizeof(bob_next.key.ek));
    assert_int_equal(msv_sealed_wrap_pq(alice.id, msv_identity_public(bob.id), &bob_next.key,
                                        "alice@example.org", 7, env, sizeof(env), &wire, &len),
                     MSV_OK);
    assert_int_equal(bob_reads(&bob, &alice, wire, len, env, sizeof(env)), MSV_ERR_AUTH);
    free(wire);
    free(bob_next.kem);
    device_free(&alice);
    device_free(&bob);
    device_free(&mallory);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hybrid_round_trip),
        cmocka_unit_test(test_hybrid_every_byte),
        cmocka_unit_test(test_largest_inner_envelope),
        cmocka_unit_test(test_classical_to_pq_refused),
        cmocka_unit_test(test_classical_device_stays_classical),
        cmocka_unit_test(test_wrong_kem_key),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
