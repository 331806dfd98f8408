/*
 * Sessions: the known-answer vectors of the independent reference
 * (tests/ratchet_reference.py), then properties under loss, reordering and
 * duplication, a key compromise, forgeries and the stored form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "helpers.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"

#include <sodium.h>

static json_t *load(const char *name)
{
    char path[512];
    json_error_t e;
    json_t *root;

    snprintf(path, sizeof(path), "%s/%s", MSV_VECTOR_DIR, name);
    root = json_load_file(path, 0, &e);
    if (root == NULL)
        fail_msg("%s: %s", path, e.text);
    return root;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));

    assert_non_null(s);
    return s;
}

static struct msv_identity *identity_from(const char *label)
{
    struct test_rng_state rs;
    struct msv_rng rng;
    struct msv_identity *id = NULL;

    test_rng_init(&rs, &rng, label);
    assert_int_equal(msv_identity_generate_rng(MSV_SUITE_MODERN, 0, &rng, &id), MSV_OK);
    return id;
}

static void assert_hex(const char *hex, const uint8_t *p, size_t len)
{
    size_t want_len;
    uint8_t *want = test_unhex(hex, &want_len);

    assert_int_equal(len, want_len);
    assert_memory_equal(p, want, len);
    free(want);
}

#define KAT_MESSAGES 32

/* Replays each script of the reference and compares every byte sent and every text read. */
static void test_known_answers(void **state)
{
    json_t *root = load("ratchet_kat.json"), *cases = json_object_get(root, "cases");
    size_t count = 0;

    (void)state;
    assert_true(json_array_size(cases) >= 2);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i), *steps = json_object_get(c, "steps");
        json_t *spk_j = json_object_get(c, "signed_prekey");
        json_t *opk_j = json_object_get(c, "one_time_prekey");
        json_t *rngs = json_object_get(c, "session_rng");
        struct msv_identity *alice = identity_from(str(c, "alice_rng"));
        struct msv_identity *bob = identity_from(str(c, "bob_rng"));
        struct test_rng_state ks, as, bs;
        struct msv_rng krng, arng, brng;
        struct msv_prekey spk, opk;
        struct msv_prekey_bundle bundle = {0};
        struct msv_session *sa = NULL, *sb = NULL;
        uint8_t *wires[KAT_MESSAGES] = {0}, sig[64];
        size_t wire_lens[KAT_MESSAGES] = {0}, n_wires = 0, len;
        const uint8_t *pub;

        pub = msv_public_identity_bytes(msv_identity_public(alice), &len);
        assert_hex(str(c, "alice_public"), pub, len);
        pub = msv_public_identity_bytes(msv_identity_public(bob), &len);
        assert_hex(str(c, "bob_public"), pub, len);
        test_rng_init(&ks, &krng, str(c, "prekey_rng"));
        assert_int_equal(msv_prekey_generate_rng(bob, 1, &krng, &spk, sig), MSV_OK);
        assert_hex(str(spk_j, "public"), spk.pk, 32);
        assert_hex(str(spk_j, "signature"), sig, 64);
        bundle.signed_id = spk.id;
        memcpy(bundle.signed_pk, spk.pk, 32);
        memcpy(bundle.signed_sig, sig, 64);
        if (json_is_object(opk_j)) {
            assert_int_equal(msv_prekey_generate_rng(bob, 7, &krng, &opk, NULL), MSV_OK);
            assert_hex(str(opk_j, "public"), opk.pk, 32);
            bundle.one_time_id = opk.id;
            memcpy(bundle.one_time_pk, opk.pk, 32);
        }
        test_rng_init(&as, &arng, str(rngs, "a"));
        test_rng_init(&bs, &brng, str(rngs, "b"));
        assert_int_equal(
            msv_session_initiate_rng(alice, msv_identity_public(bob), &bundle, &arng, &sa), MSV_OK);
        for (size_t k = 0; k < json_array_size(steps); k++) {
            json_t *st = json_array_get(steps, k);
            int a_side = strcmp(str(st, "side"), "a") == 0;
            uint8_t *pt = NULL;
            size_t pt_len = 0;

            if (strcmp(str(st, "op"), "send") == 0) {
                const char *text = str(st, "text");

                assert_true(n_wires < KAT_MESSAGES);
                assert_int_equal(msv_session_encrypt(a_side ? sa : sb, (const uint8_t *)text,
                                                     strlen(text), &wires[n_wires],
                                                     &wire_lens[n_wires]),
                                 MSV_OK);
                assert_hex(str(st, "wire"), wires[n_wires], wire_lens[n_wires]);
                n_wires++;
                continue;
            }
            size_t m = (size_t)json_integer_value(json_object_get(st, "message"));

            assert_true(m < n_wires);
            if (!a_side && sb == NULL)
                assert_int_equal(msv_session_respond_rng(bob, msv_identity_public(alice), &spk,
                                                         json_is_object(opk_j) ? &opk : NULL, NULL,
                                                         wires[m], wire_lens[m], &brng, &sb, &pt,
                                                         &pt_len),
                                 MSV_OK);
            else
                assert_int_equal(msv_session_decrypt_rng(a_side ? sa : sb, wires[m], wire_lens[m],
                                                         a_side ? &arng : &brng, &pt, &pt_len),
                                 MSV_OK);
            assert_int_equal(pt_len, strlen(str(st, "text")));
            assert_memory_equal(pt, str(st, "text"), pt_len);
            msv_secret_free(pt, pt_len);
            count++;
        }
        for (size_t k = 0; k < n_wires; k++)
            free(wires[k]);
        msv_session_free(sa);
        msv_session_free(sb);
        msv_identity_free(alice);
        msv_identity_free(bob);
    }
    printf("# session vectors: %zu messages read as the reference wrote them\n", count);
    json_decref(root);
}

/* ---- a pair of devices talking through a lossy, shuffling, duplicating network ---- */

struct peer {
    struct msv_identity *id;
    struct msv_prekey spk, opk;
    uint8_t spk_sig[64];
    struct msv_session *s;
    struct msv_kem_prekey *kem; /* devices that speak post-quantum sessions */
    uint8_t kem_sig[64];
};

static void peers_init(struct peer *a, struct peer *b)
{
    memset(a, 0, sizeof(*a));
    memset(b, 0, sizeof(*b));
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &a->id), MSV_OK);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &b->id), MSV_OK);
    assert_int_equal(msv_prekey_generate(b->id, 3, &b->spk, b->spk_sig), MSV_OK);
    assert_int_equal(msv_prekey_generate(b->id, 9, &b->opk, NULL), MSV_OK);
}

/* Two devices that speak post-quantum sessions; b has a one-time KEM prekey. */
static void peers_init_pq(struct peer *a, struct peer *b)
{
    unsigned pq = MSV_IDENTITY_PQ;

    memset(a, 0, sizeof(*a));
    memset(b, 0, sizeof(*b));
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_MODERN, pq, 0, &a->id), MSV_OK);
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_MODERN, pq, 0, &b->id), MSV_OK);
    assert_true(msv_public_identity_is_pq(msv_identity_public(b->id)));
    assert_int_equal(msv_prekey_generate(b->id, 3, &b->spk, b->spk_sig), MSV_OK);
    assert_int_equal(msv_prekey_generate(b->id, 9, &b->opk, NULL), MSV_OK);
    b->kem = calloc(1, sizeof(*b->kem));
    assert_non_null(b->kem);
    assert_int_equal(msv_kem_prekey_generate(b->id, 11, 0, b->kem, b->kem_sig), MSV_OK);
}

static struct msv_prekey_bundle bundle_of(const struct peer *b)
{
    struct msv_prekey_bundle x = {.signed_id = b->spk.id, .one_time_id = b->opk.id};

    memcpy(x.signed_pk, b->spk.pk, 32);
    memcpy(x.signed_sig, b->spk_sig, 64);
    memcpy(x.one_time_pk, b->opk.pk, 32);
    if (b->kem != NULL) {
        x.has_kem = 1;
        x.kem_id = b->kem->id;
        x.kem_last_resort = b->kem->last_resort;
        memcpy(x.kem_pk, b->kem->ek, sizeof(x.kem_pk));
        memcpy(x.kem_sig, b->kem_sig, 64);
    }
    return x;
}

static void peers_free(struct peer *a, struct peer *b)
{
    msv_session_free(a->s);
    msv_session_free(b->s);
    msv_identity_free(a->id);
    msv_identity_free(b->id);
    free(a->kem);
    free(b->kem);
}

/* b receives wire from a: answers the session's first message, decrypts later ones. */
static msv_err receive(struct peer *b, const struct peer *a, const uint8_t *wire, size_t len,
                       uint8_t **pt, size_t *pt_len)
{
    if (b->s == NULL)
        return msv_session_respond(b->id, msv_identity_public(a->id), &b->spk, &b->opk, b->kem,
                                   wire, len, &b->s, pt, pt_len);
    return msv_session_decrypt(b->s, wire, len, pt, pt_len);
}

struct sent {
    uint8_t *wire;
    size_t len;
    uint32_t serial;
    int from_a;
};

static uint32_t lcg(uint32_t *x)
{
    *x = *x * 1103515245u + 12345u;
    return *x >> 8;
}

/*
 * Both sides send in bursts; the network drops 10% of messages, delivers the
 * rest in random order (a window of up to 40 in flight) and duplicates 10%.
 * Every delivered message must decrypt exactly once, to what was sent, and
 * every duplicate must be refused as a replay; lost messages are just gone.
 */
static void loss_reorder_duplicates(int pq)
{
    struct peer a, b;
    struct msv_prekey_bundle bb;
    struct sent flight[64];
    size_t n_flight = 0, delivered = 0, replays = 0, duplicates = 0, dropped = 0;
    uint32_t rnd = 12345, serial = 0, *seen = calloc(4000, sizeof(*seen));

    if (pq)
        peers_init_pq(&a, &b);
    else
        peers_init(&a, &b);
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    while (serial < 3000 || n_flight > 0) {
        int can_b = b.s != NULL;
        uint32_t r = lcg(&rnd) % 100;

        if (serial < 3000 && n_flight < 40 && (r < 55 || n_flight == 0)) {
            int from_a = !can_b || (lcg(&rnd) & 1);
            struct sent *m = &flight[n_flight];
            char text[32];

            snprintf(text, sizeof(text), "message %u", serial);
            assert_int_equal(msv_session_encrypt(from_a ? a.s : b.s, (const uint8_t *)text,
                                                 strlen(text), &m->wire, &m->len),
                             MSV_OK);
            m->serial = serial++;
            m->from_a = from_a;
            if (lcg(&rnd) % 10 == 0) { /* lost on the way */
                free(m->wire);
                dropped++;
                continue;
            }
            n_flight++;
            continue;
        }
        /* deliver a random one of those in flight */
        size_t i = lcg(&rnd) % n_flight;
        struct sent m = flight[i];
        uint8_t *pt = NULL;
        size_t pt_len = 0;
        char want[32];
        msv_err err = m.from_a ? receive(&b, &a, m.wire, m.len, &pt, &pt_len)
                               : receive(&a, &b, m.wire, m.len, &pt, &pt_len);

        snprintf(want, sizeof(want), "message %u", m.serial);
        if (seen[m.serial]) {
            /* refused; a replay as such while its chain is among those remembered */
            assert_true(err == MSV_ERR_REPLAY || err == MSV_ERR_AUTH);
            replays += err == MSV_ERR_REPLAY;
            duplicates++;
        } else {
            assert_int_equal(err, MSV_OK);
            assert_int_equal(pt_len, strlen(want));
            assert_memory_equal(pt, want, pt_len);
            seen[m.serial] = 1;
            delivered++;
            msv_secret_free(pt, pt_len);
        }
        if (lcg(&rnd) % 10 != 0) {
            flight[i] = flight[--n_flight];
            free(m.wire);
        } /* else: stays in flight, to arrive again */
    }
    printf("# 3000 messages: %zu delivered, %zu lost, %zu duplicates refused (%zu as replays)\n",
           delivered, dropped, duplicates, replays);
    assert_int_equal(delivered + dropped, 3000);
    if (pq) { /* KEM steps kept happening through loss, reordering and simultaneous sends */
        printf("# KEM steps: %u (a), %u (b)\n", msv_session_pq_steps(a.s),
               msv_session_pq_steps(b.s));
        assert_true(msv_session_pq_steps(a.s) >= 20);
    }
    assert_true(duplicates > 50);
    assert_true(replays * 10 >= duplicates * 9);
    free(seen);
    peers_free(&a, &b);
}

static void test_loss_reorder_duplicates(void **state)
{
    (void)state;
    loss_reorder_duplicates(0);
}

/* The same network with hybrid sessions. */
static void test_pq_loss_reorder_duplicates(void **state)
{
    (void)state;
    loss_reorder_duplicates(1);
}

static uint8_t *send_text(struct peer *from, const char *text, size_t *len)
{
    uint8_t *wire = NULL;

    assert_int_equal(msv_session_encrypt(from->s, (const uint8_t *)text, strlen(text), &wire, len),
                     MSV_OK);
    return wire;
}

static void expect_text(struct peer *to, const struct peer *from, const uint8_t *wire, size_t len,
                        const char *text)
{
    uint8_t *pt = NULL;
    size_t pt_len = 0;

    assert_int_equal(receive(to, from, wire, len, &pt, &pt_len), MSV_OK);
    assert_int_equal(pt_len, strlen(text));
    assert_memory_equal(pt, text, pt_len);
    msv_secret_free(pt, pt_len);
}

static msv_err try_with(const uint8_t *state, size_t state_len, const uint8_t *wire, size_t len)
{
    struct msv_session *s = NULL;
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    msv_err err;

    assert_int_equal(msv_session_import(state, state_len, &s), MSV_OK);
    err = msv_session_decrypt(s, wire, len, &pt, &pt_len);
    msv_secret_free(pt, pt_len);
    msv_session_free(s);
    return err;
}

/*
 * An attacker copies bob's whole session state. Messages bob read before
 * stay unreadable with it (forward secrecy); messages alice sends on the
 * current chain are readable, until bob has answered once and alice has sent
 * again: then the copy is useless (post-compromise security).
 */
static void test_compromise(void **state)
{
    struct peer a, b;
    struct msv_prekey_bundle bb;
    uint8_t *old[3], *leak = NULL, *w;
    size_t old_len[3], leak_len, len;

    (void)state;
    peers_init(&a, &b);
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    for (int i = 0; i < 3; i++) {
        old[i] = send_text(&a, "before the leak", &old_len[i]);
        expect_text(&b, &a, old[i], old_len[i], "before the leak");
    }
    w = send_text(&b, "reply", &len);
    expect_text(&a, &b, w, len, "reply");
    free(w);
    assert_int_equal(msv_session_export(b.s, &leak, &leak_len), MSV_OK);
    /* forward secrecy: what bob read before the leak cannot be read with it */
    for (int i = 0; i < 3; i++)
        assert_int_not_equal(try_with(leak, leak_len, old[i], old_len[i]), MSV_OK);
    /* the chain alice sends on now is compromised */
    w = send_text(&a, "during", &len);
    assert_int_equal(try_with(leak, leak_len, w, len), MSV_OK);
    expect_text(&b, &a, w, len, "during");
    free(w);
    /* one round trip later it heals: bob's new ratchet key, alice's new one */
    w = send_text(&b, "heal", &len);
    expect_text(&a, &b, w, len, "heal");
    free(w);
    w = send_text(&a, "after", &len);
    assert_int_equal(try_with(leak, leak_len, w, len), MSV_ERR_AUTH);
    expect_text(&b, &a, w, len, "after");
    free(w);
    for (int i = 0; i < 3; i++)
        free(old[i]);
    msv_secret_free(leak, leak_len);
    peers_free(&a, &b);
}

/* Forged, damaged and foreign messages are refused and leave the session as it was. */
static void test_forgeries_change_nothing(void **state)
{
    struct peer a, b, eve;
    struct msv_prekey_bundle bb;
    uint8_t *w, *before = NULL, *after = NULL;
    size_t len, before_len, after_len;

    (void)state;
    peers_init(&a, &b);
    memset(&eve, 0, sizeof(eve));
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &eve.id), MSV_OK);
    bb = bundle_of(&b);
    /* a bundle whose signed prekey the identity did not sign */
    bb.signed_sig[5] ^= 1;
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s),
                     MSV_ERR_AUTH);
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    w = send_text(&a, "first", &len);
    /* eve cannot start a session in alice's name: her identity key is not alice's */
    {
        struct msv_session *s = NULL;
        uint8_t *pt = NULL;
        size_t pt_len = 0;

        assert_int_equal(msv_session_respond(b.id, msv_identity_public(eve.id), &b.spk, &b.opk,
                                             NULL, w, len, &s, &pt, &pt_len),
                         MSV_ERR_AUTH);
        assert_null(s);
    }
    expect_text(&b, &a, w, len, "first");
    free(w);
    w = send_text(&a, "second", &len);
    assert_int_equal(msv_session_export(b.s, &before, &before_len), MSV_OK);
    for (size_t i = 0; i < len; i += 7) {
        uint8_t *pt = NULL;
        size_t pt_len = 0;

        w[i] ^= 0x40;
        assert_int_not_equal(msv_session_decrypt(b.s, w, len, &pt, &pt_len), MSV_OK);
        w[i] ^= 0x40;
    }
    assert_int_equal(msv_session_export(b.s, &after, &after_len), MSV_OK);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    expect_text(&b, &a, w, len, "second");
    free(w);
    msv_secret_free(before, before_len);
    msv_secret_free(after, after_len);
    peers_free(&a, &b);
    msv_identity_free(eve.id);
}

/* A gap over the bound is refused; within it, the skipped messages still arrive later. */
static void test_skip_bound(void **state)
{
    struct peer a, b;
    struct msv_prekey_bundle bb;
    uint8_t *first, *w, *pt = NULL;
    size_t first_len, len, pt_len;

    (void)state;
    peers_init(&a, &b);
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    first = send_text(&a, "0", &first_len);
    expect_text(&b, &a, first, first_len, "0");
    for (int i = 0; i < MSV_RATCHET_MAX_SKIP + 1; i++)
        free(send_text(&a, "lost", &len));
    w = send_text(&a, "too far", &len);
    assert_int_equal(msv_session_decrypt(b.s, w, len, &pt, &pt_len), MSV_ERR_TOO_BIG);
    free(w);
    free(first);
    peers_free(&a, &b);
}

/* The stored form reads back to a session that goes on where it stopped; damage is refused. */
static void test_export_import(void **state)
{
    struct peer a, b;
    struct msv_prekey_bundle bb;
    struct msv_session *copy = NULL;
    uint8_t *st = NULL, *w, *skipped;
    size_t st_len, len, skipped_len;

    (void)state;
    peers_init(&a, &b);
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    w = send_text(&a, "one", &len);
    skipped = send_text(&a, "two", &skipped_len);
    free(w);
    w = send_text(&a, "three", &len);
    expect_text(&b, &a, w, len, "three"); /* "one" and "two" skipped; their keys kept */
    free(w);
    assert_int_equal(msv_session_export(b.s, &st, &st_len), MSV_OK);
    for (size_t cut = 0; cut < st_len; cut += 13)
        assert_int_equal(msv_session_import(st, cut, &copy), MSV_ERR_PARSE);
    assert_int_equal(msv_session_import(st, st_len, &copy), MSV_OK);
    msv_session_free(b.s);
    b.s = copy;
    expect_text(&b, &a, skipped, skipped_len, "two");
    w = send_text(&b, "back", &len);
    expect_text(&a, &b, w, len, "back");
    free(w);
    free(skipped);
    msv_secret_free(st, st_len);
    peers_free(&a, &b);
}

/*
 * Sealed sender proves the sender: the second layer opens only under the
 * key of the device that sealed it, so a sealed envelope that claims another
 * sender is refused, and any byte changed is refused.
 */
static void test_sealed_sender_proves_sender(void **state)
{
    struct msv_identity *alice = identity_from("sealed alice"), *bob = identity_from("sealed bob"),
                        *mallory = identity_from("sealed mallory");
    const struct msv_public_identity *pa = msv_identity_public(alice);
    uint8_t env[40], *wire = NULL, *inner = NULL;
    size_t len = 0, inner_len = 0;
    char handle[256];
    uint64_t device = 0;

    (void)state;
    memset(env, 0x05, sizeof(env));
    assert_int_equal(msv_sealed_wrap(alice, msv_identity_public(bob), "alice@example.org", 7, env,
                                     sizeof(env), &wire, &len),
                     MSV_OK);
    assert_int_equal(msv_sealed_sender(bob, wire, len, handle, &device), MSV_OK);
    assert_string_equal(handle, "alice@example.org");
    assert_int_equal(device, 7);
    assert_int_equal(msv_sealed_unwrap(bob, pa, wire, len, &inner, &inner_len), MSV_OK);
    assert_int_equal(inner_len, sizeof(env));
    assert_memory_equal(inner, env, sizeof(env));
    free(inner);
    inner = NULL;
    /* not for mallory, and not from mallory */
    assert_int_equal(msv_sealed_sender(mallory, wire, len, handle, &device), MSV_ERR_AUTH);
    assert_int_equal(
        msv_sealed_unwrap(bob, msv_identity_public(mallory), wire, len, &inner, &inner_len),
        MSV_ERR_AUTH);
    for (size_t i = 0; i < len; i++) {
        wire[i] ^= 0x20;
        assert_int_not_equal(msv_sealed_unwrap(bob, pa, wire, len, &inner, &inner_len), MSV_OK);
        assert_null(inner);
        wire[i] ^= 0x20;
    }
    free(wire);
    /* mallory claims to be alice: the claim reads, the proof does not */
    assert_int_equal(msv_sealed_wrap(mallory, msv_identity_public(bob), "alice@example.org", 7, env,
                                     sizeof(env), &wire, &len),
                     MSV_OK);
    assert_int_equal(msv_sealed_sender(bob, wire, len, handle, &device), MSV_OK);
    assert_string_equal(handle, "alice@example.org");
    assert_int_equal(msv_sealed_unwrap(bob, pa, wire, len, &inner, &inner_len), MSV_ERR_AUTH);
    assert_null(inner);
    free(wire);
    msv_identity_free(alice);
    msv_identity_free(bob);
    msv_identity_free(mallory);
}

/*
 * A hybrid session: the first messages carry the KEM ciphertext (0x08), both
 * sides say post-quantum, and the stored form keeps the prefix.
 */
static void test_pq_session(void **state)
{
    struct peer a, b;
    struct msv_prekey_bundle bb;
    struct msv_session *copy = NULL;
    uint8_t *w, *st = NULL;
    size_t len, st_len;
    uint32_t kem_id = 0;

    (void)state;
    peers_init_pq(&a, &b);
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    assert_true(msv_session_is_pq(a.s));
    assert_int_equal(msv_session_export(a.s, &st, &st_len), MSV_OK);
    assert_int_equal(msv_session_import(st, st_len, &copy), MSV_OK);
    msv_secret_free(st, st_len);
    msv_session_free(a.s);
    a.s = copy;
    w = send_text(&a, "hello", &len);
    assert_int_equal(w[0], MSV_WIRE_PQ_PREKEY_MSG);
    assert_int_equal(len, 1133 + 46 + 5 + 16);
    assert_int_equal(msv_prekey_message_kem_id(w, len, &kem_id), MSV_OK);
    assert_int_equal(kem_id, 11);
    expect_text(&b, &a, w, len, "hello");
    assert_true(msv_session_is_pq(b.s));
    free(w);
    w = send_text(&a, "again", &len); /* still the prefix: any of them starts the session */
    assert_int_equal(w[0], MSV_WIRE_PQ_PREKEY_MSG);
    expect_text(&b, &a, w, len, "again");
    free(w);
    w = send_text(&b, "back", &len);
    expect_text(&a, &b, w, len, "back");
    free(w);
    w = send_text(&a, "settled", &len);
    assert_int_equal(w[0], MSV_WIRE_PQ_RATCHET);
    expect_text(&b, &a, w, len, "settled");
    free(w);
    peers_free(&a, &b);
}

/*
 * A dishonest server cannot downgrade a device that says post-quantum: a
 * bundle without a KEM prekey, with an unsigned one, one signed for another
 * id or kind, or another device's, starts no session at all.
 */
static void test_pq_downgrade_refused(void **state)
{
    struct peer a, b, eve, unused;
    struct msv_prekey_bundle bb, good;
    struct msv_kem_prekey *other = calloc(1, sizeof(*other));
    uint8_t other_sig[64];

    (void)state;
    assert_non_null(other);
    peers_init_pq(&a, &b);
    peers_init_pq(&unused, &eve);
    good = bundle_of(&b);
    bb = good;
    bb.has_kem = 0; /* withheld */
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s),
                     MSV_ERR_AUTH);
    assert_null(a.s);
    bb = good;
    memset(bb.kem_sig, 0, 64); /* unsigned */
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s),
                     MSV_ERR_AUTH);
    bb = good;
    bb.kem_pk[100] ^= 1; /* another key under the signature */
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s),
                     MSV_ERR_AUTH);
    bb = good;
    bb.kem_id++; /* another id */
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s),
                     MSV_ERR_AUTH);
    bb = good;
    bb.kem_last_resort = 1; /* signed as a one-time prekey */
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s),
                     MSV_ERR_AUTH);
    /* eve's KEM prekey, rightly signed by eve, served as b's */
    bb = good;
    assert_int_equal(msv_kem_prekey_generate(eve.id, 11, 0, other, other_sig), MSV_OK);
    memcpy(bb.kem_pk, other->ek, sizeof(bb.kem_pk));
    memcpy(bb.kem_sig, other_sig, 64);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s),
                     MSV_ERR_AUTH);
    assert_null(a.s);
    /* the honest bundle works */
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &good, &a.s), MSV_OK);
    free(other);
    peers_free(&a, &b);
    peers_free(&unused, &eve);
}

/*
 * A network attacker who changes the KEM ciphertext (or its id, or the kind
 * byte) gets no session: implicit rejection gives the responder another
 * secret and the first message does not decrypt; a classical answer is
 * never tried. The untouched message then starts the session.
 */
static void test_pq_altered_ciphertext(void **state)
{
    struct peer a, b;
    struct msv_prekey_bundle bb;
    uint8_t *w, *pt = NULL;
    size_t len, pt_len = 0;
    const size_t at[] = {41, 44, 45, 600, 1132};

    (void)state;
    peers_init_pq(&a, &b);
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    w = send_text(&a, "hello", &len);
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        w[at[i]] ^= 0x10;
        assert_int_equal(receive(&b, &a, w, len, &pt, &pt_len), MSV_ERR_AUTH);
        assert_null(b.s);
        assert_null(pt);
        w[at[i]] ^= 0x10;
    }
    /* the same message as a classical one (the KEM part cut out) */
    {
        uint8_t *cut = malloc(len - 1092);

        assert_non_null(cut);
        memcpy(cut, w, 41);
        memcpy(cut + 41, w + 1133, len - 1133);
        cut[0] = MSV_WIRE_PREKEY_MSG;
        assert_int_equal(msv_session_respond(b.id, msv_identity_public(a.id), &b.spk, &b.opk, NULL,
                                             cut, len - 1092, &b.s, &pt, &pt_len),
                         MSV_ERR_AUTH);
        assert_null(b.s);
        free(cut);
    }
    expect_text(&b, &a, w, len, "hello");
    free(w);
    peers_free(&a, &b);
}

/*
 * Devices of earlier versions (identities without [8]) keep the classical
 * session: a post-quantum device writing to one starts a classical 0x06 one,
 * and is answered in it; the session says it is classical.
 */
static void test_pq_to_classical_device(void **state)
{
    struct peer a, b, classical_a, unused;
    struct msv_prekey_bundle bb;
    uint8_t *w;
    size_t len;

    (void)state;
    peers_init_pq(&a, &unused);
    peers_init(&classical_a, &b); /* b: no [8], no KEM prekey */
    bb = bundle_of(&b);
    assert_int_equal(msv_session_initiate(a.id, msv_identity_public(b.id), &bb, &a.s), MSV_OK);
    assert_false(msv_session_is_pq(a.s));
    w = send_text(&a, "to an older device", &len);
    assert_int_equal(w[0], MSV_WIRE_PREKEY_MSG);
    expect_text(&b, &a, w, len, "to an older device");
    assert_false(msv_session_is_pq(b.s));
    free(w);
    w = send_text(&b, "answered", &len);
    expect_text(&a, &b, w, len, "answered");
    free(w);
    peers_free(&a, &unused);
    peers_free(&classical_a, &b);
}

/* ---- the post-quantum ratchet (docs/crypto.md, "The post-quantum ratchet") ---- */

/* A post-quantum session between a and b, started and answered once each way. */
static void pq_pair(struct peer *a, struct peer *b)
{
    struct msv_prekey_bundle bb;
    uint8_t *w;
    size_t len;

    peers_init_pq(a, b);
    bb = bundle_of(b);
    assert_int_equal(msv_session_initiate(a->id, msv_identity_public(b->id), &bb, &a->s), MSV_OK);
    w = send_text(a, "start", &len);
    expect_text(b, a, w, len, "start");
    free(w);
    w = send_text(b, "answer", &len);
    expect_text(a, b, w, len, "answer");
    free(w);
}

/* Sends with a clock: a KEM key is offered on the first message once the time is due. */
static uint8_t *send_at(struct peer *from, const char *text, int64_t now, size_t *len)
{
    uint8_t *wire = NULL;

    assert_int_equal(msv_session_encrypt_at(from->s, (const uint8_t *)text, strlen(text),
                                            &msv_rng_system, now, &wire, len),
                     MSV_OK);
    return wire;
}

static int flags_of(const uint8_t *w, size_t len)
{
    struct msv_ratchet_header h;

    assert_int_equal(msv_ratchet_header_parse(w, len, &h), MSV_OK);
    return (h.ek != NULL ? 1 : 0) | (h.ct != NULL ? 2 : 0) | (h.step != 0 ? 4 : 0);
}

/*
 * The steps of one KEM exchange: a offers a key (time due), b's next message
 * carries its ciphertext, a's next chain names the step, and both count it.
 * Averaged over 1,000 messages each way (ping-pong in bursts, then 1,000 one
 * way with no answer) the bytes beyond the classical header stay under 100.
 */
static void test_pq_ratchet_steps(void **state)
{
    struct peer a, b;
    uint8_t *w;
    size_t len, extra = 0, n = 0;
    int64_t t0;

    (void)state;
    pq_pair(&a, &b);
    t0 = msv_wall_ms() + 1;
    w = send_at(&a, "t0", t0, &len); /* the clock starts */
    assert_int_equal(flags_of(w, len), 0);
    expect_text(&b, &a, w, len, "t0");
    free(w);
    w = send_at(&a, "a day later", t0 + MSV_PQ_REKEY_MS, &len);
    assert_int_equal(flags_of(w, len), 1); /* a's key */
    assert_int_equal(len, 46 + 4 + 1184 + strlen("a day later") + 16);
    expect_text(&b, &a, w, len, "a day later");
    free(w);
    w = send_at(&b, "ct", t0, &len);
    assert_int_equal(flags_of(w, len), 2); /* b's ciphertext to it */
    assert_int_equal(msv_session_pq_steps(a.s), 0);
    expect_text(&a, &b, w, len, "ct");
    free(w);
    /* mixed into a's new sending chain as it was made (reading b's new chain) */
    assert_int_equal(msv_session_pq_steps(a.s), 1);
    assert_int_equal(msv_session_pq_steps(b.s), 0);
    w = send_at(&a, "mixed", t0, &len);
    assert_int_equal(flags_of(w, len), 4); /* a's new chain names the step */
    expect_text(&b, &a, w, len, "mixed");
    assert_int_equal(msv_session_pq_steps(b.s), 1);
    free(w);
    /* 1,000 messages, in bursts of 1 to 7 each way */
    for (uint32_t r = 7; n < 1000; r = r * 1103515245u + 12345u) {
        struct peer *from = (r >> 9) & 1 ? &a : &b, *to = from == &a ? &b : &a;

        for (unsigned k = 0; k <= ((r >> 4) % 7) && n < 1000; k++, n++) {
            w = send_text(from, "steady", &len);
            extra += len - strlen("steady") - 16 - 41;
            expect_text(to, from, w, len, "steady");
            free(w);
        }
    }
    printf("# ping-pong: %zu bytes beyond the classical header per message; KEM steps %u\n",
           extra / n, msv_session_pq_steps(a.s));
    assert_true(extra / n <= 100);
    assert_true(msv_session_pq_steps(a.s) >= 15);
    extra = 0;
    for (n = 0; n < 1000; n++) { /* b never answers */
        w = send_text(&a, "one way", &len);
        extra += len - strlen("one way") - 16 - 41;
        expect_text(&b, &a, w, len, "one way");
        free(w);
    }
    printf("# one way: %zu bytes beyond the classical header per message\n", extra / n);
    assert_true(extra / n <= 100);
    peers_free(&a, &b);
    /* the worst case: a's offer is lost, b offers, and a, offering and answering, sends 1,000
     * that b never answers, carrying both its key and its ciphertext again and again */
    pq_pair(&a, &b);
    t0 = msv_wall_ms() + 1;
    free(send_at(&a, "clock", t0, &len));                     /* lost */
    free(send_at(&b, "clock", t0, &len));                     /* lost */
    free(send_at(&a, "a's key", t0 + MSV_PQ_REKEY_MS, &len)); /* lost */
    w = send_at(&b, "b's key", t0 + MSV_PQ_REKEY_MS, &len);
    assert_int_equal(flags_of(w, len), 1);
    expect_text(&a, &b, w, len, "b's key");
    free(w);
    extra = 0;
    for (n = 0; n < 1000; n++) {
        w = send_at(&a, "both", t0 + MSV_PQ_REKEY_MS, &len);
        assert_true(flags_of(w, len) != 3); /* one KEM part per message at most */
        extra += len - strlen("both") - 16 - 41;
        expect_text(&b, &a, w, len, "both");
        free(w);
    }
    printf("# one way, offering and answering: %zu bytes beyond the classical header per "
           "message\n",
           extra / n);
    assert_true(extra / n <= 100);
    peers_free(&a, &b);
}

static void export_of(const struct msv_session *s, uint8_t **st, size_t *len)
{
    assert_int_equal(msv_session_export(s, st, len), MSV_OK);
}

/* b's session is byte for byte what it was. */
static void assert_unchanged(const struct peer *b, const uint8_t *st, size_t st_len)
{
    uint8_t *now = NULL;
    size_t now_len = 0;

    export_of(b->s, &now, &now_len);
    assert_int_equal(now_len, st_len);
    assert_memory_equal(now, st, st_len);
    msv_secret_free(now, now_len);
}

/*
 * Every byte of the header of w (from from to to) changed in turn, and w cut
 * at every length: each refused, and to's session byte for byte unchanged;
 * then w itself reads, once, and again it is a replay.
 */
static void tamper_every_byte(struct peer *to, const struct peer *from, uint8_t *w, size_t len,
                              const char *text)
{
    uint8_t *st = NULL, *pt = NULL;
    size_t st_len = 0, pt_len = 0, h_len = len - strlen(text) - 16;

    export_of(to->s, &st, &st_len);
    for (size_t i = 0; i < h_len; i++) {
        w[i] ^= 0x01;
        assert_int_not_equal(msv_session_decrypt(to->s, w, len, &pt, &pt_len), MSV_OK);
        w[i] ^= 0x01;
    }
    for (size_t cut = 0; cut < len; cut += cut < h_len + 20 ? 1 : 97)
        assert_int_not_equal(msv_session_decrypt(to->s, w, cut, &pt, &pt_len), MSV_OK);
    assert_null(pt);
    assert_unchanged(to, st, st_len);
    msv_secret_free(st, st_len);
    expect_text(to, from, w, len, text);
    assert_int_equal(msv_session_decrypt(to->s, w, len, &pt, &pt_len), MSV_ERR_REPLAY);
}

/*
 * The headers of a KEM step, tampered with: one that carries an offered key,
 * one that names a step and carries a ciphertext (tamper_every_byte).
 */
static void test_pq_header_tampering(void **state)
{
    struct peer a, b;
    uint8_t *w;
    size_t len;
    int64_t t0;

    (void)state;
    pq_pair(&a, &b);
    t0 = msv_wall_ms() + 1;
    free(send_at(&a, "clock", t0, &len)); /* lost */
    free(send_at(&b, "clock", t0, &len)); /* lost */
    w = send_at(&b, "offer", t0 + MSV_PQ_REKEY_MS, &len);
    expect_text(&a, &b, w, len, "offer");
    free(w);
    w = send_at(&a, "ciphertext", t0 + MSV_PQ_REKEY_MS, &len);
    assert_int_equal(flags_of(w, len), 2); /* a's offer waits: one KEM part per message */
    expect_text(&b, &a, w, len, "ciphertext");
    free(w);
    w = send_at(&a, "offer", t0 + MSV_PQ_REKEY_MS, &len);
    assert_int_equal(flags_of(w, len), 1);
    tamper_every_byte(&b, &a, w, len, "offer");
    free(w);
    w = send_at(&b, "step", t0 + MSV_PQ_REKEY_MS, &len);
    assert_int_equal(flags_of(w, len), 6); /* b names its step and answers a's key */
    tamper_every_byte(&a, &b, w, len, "step");
    free(w);
    /* b's step (a's encapsulation), and a's own (b's ciphertext) in a's new chain */
    assert_int_equal(msv_session_pq_steps(a.s), 2);
    peers_free(&a, &b);
}

/*
 * No silent downgrade: a post-quantum session refuses a classical header
 * (the same message with the step and flags cut out, with the tag still
 * right for the shorter header or not), and says so.
 */
static void test_pq_ratchet_downgrade(void **state)
{
    struct peer a, b;
    uint8_t *w, *cut, *st = NULL, *pt = NULL;
    size_t len, st_len, pt_len = 0;

    (void)state;
    pq_pair(&a, &b);
    w = send_text(&a, "pq", &len);
    assert_int_equal(w[0], MSV_WIRE_PQ_RATCHET);
    cut = malloc(len - 5);
    assert_non_null(cut);
    memcpy(cut, w, 41);
    memcpy(cut + 41, w + 46, len - 46);
    cut[0] = MSV_WIRE_RATCHET;
    export_of(b.s, &st, &st_len);
    assert_true(msv_session_is_downgrade(b.s, cut, len - 5));
    assert_false(msv_session_is_downgrade(b.s, w, len));
    assert_int_equal(msv_session_decrypt(b.s, cut, len - 5, &pt, &pt_len), MSV_ERR_AUTH);
    assert_unchanged(&b, st, st_len);
    /* and a 0x0A in a classical session is refused the same way */
    {
        struct peer c, d;
        struct msv_prekey_bundle dd;
        uint8_t *x;
        size_t x_len;

        peers_init(&c, &d);
        dd = bundle_of(&d);
        assert_int_equal(msv_session_initiate(c.id, msv_identity_public(d.id), &dd, &c.s), MSV_OK);
        x = send_text(&c, "classical", &x_len);
        expect_text(&d, &c, x, x_len, "classical");
        free(x);
        x = send_text(&d, "answer", &x_len);
        expect_text(&c, &d, x, x_len, "answer");
        free(x);
        x = send_text(&c, "again", &x_len);
        assert_int_equal(x[0], MSV_WIRE_RATCHET);
        assert_false(msv_session_is_downgrade(d.s, x, x_len));
        x[0] = MSV_WIRE_PQ_RATCHET;
        assert_int_equal(msv_session_decrypt(d.s, x, x_len, &pt, &pt_len), MSV_ERR_AUTH);
        x[0] = MSV_WIRE_RATCHET;
        expect_text(&d, &c, x, x_len, "again");
        free(x);
        peers_free(&c, &d);
    }
    expect_text(&b, &a, w, len, "pq");
    free(w);
    free(cut);
    msv_secret_free(st, st_len);
    peers_free(&a, &b);
}

/* Offset of the post-quantum ratchet block in a version 3 state (not pending, see export). */
#define STATE_PQ_AT (4 + 1 + 1 + 64 + 5 * 32 + 12 + 32 + 8 + 32 + 1 + 4 + 32)
#define STATE_PQ_EMPTY 45

/*
 * A session stored before the post-quantum ratchet (state version 2, a hybrid
 * start and a classical ratchet) is read back: its chains so far still bring
 * 0x05 messages, every new chain must be post-quantum, and it goes on to KEM
 * steps.
 */
static void test_pq_ratchet_from_v2(void **state)
{
    struct peer a, b;
    uint8_t *st = NULL, *w, *pt = NULL;
    size_t st_len, len, pt_len = 0;
    struct msv_session *s = NULL, *classical_a = NULL;

    (void)state;
    pq_pair(&a, &b);
    w = send_text(&a, "on a's chain", &len);
    expect_text(&b, &a, w, len, "on a's chain");
    free(w);
    /* both states as version 2 wrote them: no post-quantum ratchet block */
    for (int side = 0; side < 2; side++) {
        struct peer *p = side ? &b : &a;

        export_of(p->s, &st, &st_len);
        assert_int_equal(st[4], 3);
        assert_int_equal(st[STATE_PQ_AT - 37], 1); /* pq */
        st[4] = 2;
        memmove(st + STATE_PQ_AT, st + STATE_PQ_AT + STATE_PQ_EMPTY,
                st_len - STATE_PQ_AT - STATE_PQ_EMPTY);
        assert_int_equal(msv_session_import(st, st_len - STATE_PQ_EMPTY, &s), MSV_OK);
        assert_true(msv_session_is_pq(s));
        msv_session_free(p->s);
        p->s = s;
        s = NULL;
        if (side == 0) { /* a as an old device would send: classical headers on its chain */
            st[STATE_PQ_AT - 37] = 0;
            assert_int_equal(msv_session_import(st, st_len - STATE_PQ_EMPTY, &classical_a), MSV_OK);
        }
        msv_secret_free(st, st_len);
    }
    w = NULL;
    assert_int_equal(msv_session_encrypt(classical_a, (const uint8_t *)"old", 3, &w, &len), MSV_OK);
    assert_int_equal(w[0], MSV_WIRE_RATCHET);
    assert_false(msv_session_is_downgrade(b.s, w, len)); /* a chain b knows from before */
    expect_text(&b, &a, w, len, "old");
    free(w);
    w = send_text(&b, "new chain", &len);
    assert_int_equal(w[0], MSV_WIRE_PQ_RATCHET);
    expect_text(&a, &b, w, len, "new chain");
    free(w);
    msv_session_free(classical_a);
    /* a's new chain: post-quantum only */
    w = send_text(&a, "after", &len);
    assert_int_equal(w[0], MSV_WIRE_PQ_RATCHET);
    {
        uint8_t *cut = malloc(len - 5);

        assert_non_null(cut);
        memcpy(cut, w, 41);
        memcpy(cut + 41, w + 46, len - 46);
        cut[0] = MSV_WIRE_RATCHET;
        assert_true(msv_session_is_downgrade(b.s, cut, len - 5));
        assert_int_equal(msv_session_decrypt(b.s, cut, len - 5, &pt, &pt_len), MSV_ERR_AUTH);
        free(cut);
    }
    expect_text(&b, &a, w, len, "after");
    free(w);
    for (int i = 0; i < 120; i++) { /* and KEM steps follow */
        struct peer *from = i % 2 ? &a : &b, *to = i % 2 ? &b : &a;

        w = send_text(from, "x", &len);
        expect_text(to, from, w, len, "x");
        free(w);
    }
    assert_true(msv_session_pq_steps(a.s) >= 2);
    peers_free(&a, &b);
}

/*
 * A peer that offers a key failing FIPS 203's input check (a coefficient of
 * 3329 or more) in an authentic message: refused, the receiver's session
 * unchanged; the same peer with its key as drawn is read.
 */
static void test_pq_ratchet_bad_offer(void **state)
{
    struct peer a, b;
    uint8_t *st = NULL, *mine = NULL, *w, *pt = NULL;
    size_t st_len = 0, mine_len = 0, len, pt_len = 0;
    struct msv_session *bad = NULL;
    int64_t t0;

    (void)state;
    pq_pair(&a, &b);
    t0 = msv_wall_ms() + 1;
    w = send_at(&a, "clock", t0, &len);
    expect_text(&b, &a, w, len, "clock");
    free(w);
    w = send_at(&a, "offer", t0 + MSV_PQ_REKEY_MS, &len);
    assert_int_equal(flags_of(w, len), 1);
    free(w); /* lost; a keeps offering its key */
    export_of(a.s, &mine, &mine_len);
    assert_int_equal(mine[STATE_PQ_AT] & 1, 1); /* offering */
    mine[STATE_PQ_AT + 16] = MSV_PQ_REPEAT;     /* offer_age (low byte): its key rides now */
    mine[STATE_PQ_AT + 17] = 0xff;              /* the key's first 12-bit coefficient: 4095 */
    mine[STATE_PQ_AT + 18] |= 0x0f;
    assert_int_equal(msv_session_import(mine, mine_len, &bad), MSV_OK);
    w = NULL;
    assert_int_equal(msv_session_encrypt_at(bad, (const uint8_t *)"bad", 3, &msv_rng_system,
                                            t0 + MSV_PQ_REKEY_MS, &w, &len),
                     MSV_OK);
    assert_int_equal(flags_of(w, len), 1);
    export_of(b.s, &st, &st_len);
    assert_int_equal(msv_session_decrypt(b.s, w, len, &pt, &pt_len), MSV_ERR_AUTH);
    assert_null(pt);
    assert_unchanged(&b, st, st_len);
    free(w);
    msv_session_free(bad);
    msv_secret_free(mine, mine_len);
    msv_secret_free(st, st_len);
    /* a's own key rides again on its 32nd message after the lost one, and is answered */
    for (int i = 0; i < MSV_PQ_REPEAT; i++) {
        w = send_at(&a, "again", t0 + MSV_PQ_REKEY_MS, &len);
        assert_int_equal(flags_of(w, len), i == MSV_PQ_REPEAT - 1 ? 1 : 0);
        expect_text(&b, &a, w, len, "again");
        free(w);
    }
    w = send_at(&b, "answer", t0, &len);
    assert_int_equal(flags_of(w, len), 2);
    expect_text(&a, &b, w, len, "answer");
    free(w);
    peers_free(&a, &b);
}

/*
 * The hybrid start and one KEM step of the post-quantum ratchet, replayed from
 * tests/vectors/pq_ratchet_kat.json, which tests/ratchet_reference.py computes
 * from the documentation with its own ML-KEM-768 (tests/mlkem_reference.py):
 * every byte of every message must be the reference's.
 */
static void test_pq_ratchet_known_answer(void **state)
{
    json_t *root = load("pq_ratchet_kat.json"), *msgs = json_object_get(root, "messages");
    json_t *rngs = json_object_get(root, "session_rng"),
           *steps = json_object_get(root, "kem_steps");
    struct test_rng_state s1, s2, s3, s4, s5;
    struct msv_rng r1, r2, r3, r4, r5;
    struct msv_identity *alice = NULL, *bob = NULL;
    struct msv_prekey spk;
    struct msv_kem_prekey *kem = calloc(1, sizeof(*kem));
    struct msv_prekey_bundle bb = {0};
    struct msv_session *sa = NULL, *sb = NULL;
    uint8_t sig[64], *w = NULL, *pt = NULL;
    size_t len, pt_len;

    (void)state;
    assert_non_null(kem);
    assert_int_equal(json_array_size(msgs), 5);
    test_rng_init(&s1, &r1, str(root, "alice_rng"));
    test_rng_init(&s2, &r2, str(root, "bob_rng"));
    test_rng_init(&s3, &r3, str(root, "prekey_rng"));
    test_rng_init(&s4, &r4, str(rngs, "a"));
    test_rng_init(&s5, &r5, str(rngs, "b"));
    assert_int_equal(
        msv_identity_generate_suites_rng(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &r1, &alice),
        MSV_OK);
    assert_int_equal(
        msv_identity_generate_suites_rng(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &r2, &bob), MSV_OK);
    bb.signed_id = (uint32_t)json_integer_value(json_object_get(root, "signed_prekey_id"));
    bb.kem_id = (uint32_t)json_integer_value(json_object_get(root, "kem_prekey_id"));
    assert_int_equal(msv_prekey_generate_rng(bob, bb.signed_id, &r3, &spk, sig), MSV_OK);
    memcpy(bb.signed_pk, spk.pk, 32);
    memcpy(bb.signed_sig, sig, 64);
    assert_int_equal(msv_kem_prekey_generate_rng(bob, bb.kem_id, 1, &r3, kem, bb.kem_sig), MSV_OK);
    assert_hex(str(root, "kem_prekey"), kem->ek, sizeof(kem->ek));
    bb.has_kem = 1;
    bb.kem_last_resort = 1;
    memcpy(bb.kem_pk, kem->ek, sizeof(bb.kem_pk));
    assert_int_equal(msv_session_initiate_rng(alice, msv_identity_public(bob), &bb, &r4, &sa),
                     MSV_OK);
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        int from_a = strcmp(str(m, "side"), "a") == 0;
        const char *text = str(m, "text");

        assert_int_equal(msv_session_encrypt_at(from_a ? sa : sb, (const uint8_t *)text,
                                                strlen(text), from_a ? &r4 : &r5,
                                                json_integer_value(json_object_get(m, "now_ms")),
                                                &w, &len),
                         MSV_OK);
        assert_hex(str(m, "wire"), w, len);
        pt = NULL;
        if (sb == NULL)
            assert_int_equal(msv_session_respond_rng(bob, msv_identity_public(alice), &spk, NULL,
                                                     kem, w, len, &r5, &sb, &pt, &pt_len),
                             MSV_OK);
        else
            assert_int_equal(
                msv_session_decrypt_rng(from_a ? sb : sa, w, len, from_a ? &r5 : &r4, &pt, &pt_len),
                MSV_OK);
        assert_int_equal(pt_len, strlen(text));
        assert_memory_equal(pt, text, pt_len);
        msv_secret_free(pt, pt_len);
        free(w);
    }
    assert_int_equal(msv_session_pq_steps(sa), json_integer_value(json_object_get(steps, "a")));
    assert_int_equal(msv_session_pq_steps(sb), json_integer_value(json_object_get(steps, "b")));
    assert_int_equal(msv_session_pq_steps(sa), 1);
    msv_session_free(sa);
    msv_session_free(sb);
    msv_identity_free(alice);
    msv_identity_free(bob);
    free(kem);
    json_decref(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_loss_reorder_duplicates),
        cmocka_unit_test(test_pq_session),
        cmocka_unit_test(test_pq_downgrade_refused),
        cmocka_unit_test(test_pq_altered_ciphertext),
        cmocka_unit_test(test_pq_to_classical_device),
        cmocka_unit_test(test_pq_loss_reorder_duplicates),
        cmocka_unit_test(test_compromise),
        cmocka_unit_test(test_forgeries_change_nothing),
        cmocka_unit_test(test_skip_bound),
        cmocka_unit_test(test_export_import),
        cmocka_unit_test(test_sealed_sender_proves_sender),
        cmocka_unit_test(test_pq_ratchet_steps),
        cmocka_unit_test(test_pq_header_tampering),
        cmocka_unit_test(test_pq_ratchet_downgrade),
        cmocka_unit_test(test_pq_ratchet_from_v2),
        cmocka_unit_test(test_pq_ratchet_known_answer),
        cmocka_unit_test(test_pq_ratchet_bad_offer),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
