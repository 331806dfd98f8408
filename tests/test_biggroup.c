/*
 * Big groups (docs/groups.md, "Limits"): a group of hundreds of real
 * registered accounts is created, written to and changed through the client
 * library against a real missived; every member device gets its copy, the
 * changes travel as deltas that the members apply to the state they hold, a
 * new member takes the whole state from the attachment store, and deltas that
 * do not apply are refused without changing anything. MSV_BIGGROUP_MEMBERS
 * sets the size (260 by default: over 256, so that messages name no participants and
 * the whole state goes as an attachment; bench/RESULTS.md has 1,000).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sodium.h>

#include "client/client.h"
#include "client/internal.h"
#include "missive/payload.h"
#include "missive/util.h"
#include "util/endian.h"
#include "server_harness.h"

#define REAL 3 /* alice (the admin), bob and carol: client devices; the others register only */

struct big {
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    char **handles; /* every member but alice */
    size_t n;       /* of them */
    uint8_t gid[16];
    char hex[33];
};

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static size_t members_wanted(void)
{
    const char *v = getenv("MSV_BIGGROUP_MEMBERS");
    long n = v != NULL ? strtol(v, NULL, 10) : 260;

    return n >= 10 && n <= MEMBERS_MAX ? (size_t)n : 260;
}

/* The state a client holds for the group, as stored (caller frees). */
static uint8_t *held_state(struct msv_client *c, const struct big *b, size_t *len)
{
    char key[64];
    uint8_t *v = NULL;

    snprintf(key, sizeof(key), "group-state:%s", b->hex);
    if (msv_client_db_get(c->db, key, &v, len) != MSV_OK)
        return NULL;
    return v;
}

/* c holds the very state alice holds. */
static void same_state(struct msv_client *c, const struct big *b)
{
    size_t la = 0, lc = 0;
    uint8_t *a = held_state(b->alice, b, &la), *h = held_state(c, b, &lc);

    assert_non_null(a);
    assert_non_null(h);
    assert_int_equal(la, lc);
    assert_memory_equal(a, h, la);
    free(a);
    free(h);
}

static void receive_all(struct msv_client *c)
{
    size_t count = 0;

    assert_int_equal(msv_client_receive(c, 1500, NULL, NULL, &count), MSV_OK);
}

/* Envelopes queued for each raw member's device: every one has at least want. */
static void every_device_got(struct big *b, const uint64_t *devices, size_t n, size_t want)
{
    struct test_queued *rows = NULL;
    size_t k = test_server_queued(&b->s, &rows);

    for (size_t i = 0; i < n; i++) {
        size_t got = 0;

        for (size_t r = 0; r < k; r++)
            got += rows[r].device_id == devices[i];
        if (got < want)
            fail_msg("device %llu has %zu envelopes, not %zu", (unsigned long long)devices[i], got,
                     want);
    }
    test_queued_free(rows, k);
}

static int setup(void **state)
{
    struct big *b = calloc(1, sizeof(*b));
    size_t n = members_wanted();
    double t0 = now_s();

    assert_non_null(b);
    /* the directory's lookup rate as shipped: the burst covers a big group's lookups */
    test_server_init(&b->s, "[accounts]\nregister_burst = 5000\n");
    test_server_start(&b->s);
    b->alice = test_client_for(&b->s, "alice", "alice@example.org");
    b->bob = test_client_for(&b->s, "bob", "bob@example.org");
    b->carol = test_client_for(&b->s, "carol", "carol@example.org");
    b->handles = calloc(n, sizeof(*b->handles));
    assert_non_null(b->handles);
    b->handles[b->n++] = strdup("bob@example.org");
    b->handles[b->n++] = strdup("carol@example.org");
    while (b->n < n - 1) {
        char h[64];

        snprintf(h, sizeof(h), "m%04zu@example.org", b->n);
        b->handles[b->n++] = strdup(h);
    }
    *state = b;
    fprintf(stderr, "# %zu members: the server and %d clients in %.1f s\n", n, REAL, now_s() - t0);
    return 0;
}

static int teardown(void **state)
{
    struct big *b = *state;

    msv_client_close(b->alice);
    msv_client_close(b->bob);
    msv_client_close(b->carol);
    for (size_t i = 0; i < b->n; i++)
        free(b->handles[i]);
    free(b->handles);
    test_server_cleanup(&b->s);
    free(b);
    return 0;
}

/* Registers the members that have no client: real accounts, one device each. */
static uint64_t *register_rest(struct big *b)
{
    uint64_t *devices = calloc(b->n, sizeof(*devices));
    double t0 = now_s();

    assert_non_null(devices);
    for (size_t i = REAL - 1; i < b->n; i++) {
        struct test_device d;

        test_register(&b->s, b->handles[i], &d);
        devices[i] = d.device_id;
        test_device_free(&d);
    }
    fprintf(stderr, "# %zu accounts registered in %.1f s\n", b->n - (REAL - 1), now_s() - t0);
    return devices;
}

/* Signs a change of bob's group state from alice's device, as a patched client of hers would. */
static void sign_as_alice(struct big *b, struct msv_payload *p)
{
    uint8_t msg[19 + 16 + 8 + 32 + 32];

    memcpy(msg, "MSV-group-change-v1", 19);
    memcpy(msg + 19, b->gid, 16);
    msv_put_u64be(msg + 35, p->group_epoch);
    memcpy(msg + 43, p->group_prev_hash, 32);
    memcpy(msg + 75, p->group_state_hash, 32);
    p->has_group_signature = true;
    assert_int_equal(msv_identity_sign(b->alice->id, msg, sizeof(msg), p->group_signature,
                                       &p->group_signature_len),
                     MSV_OK);
}

/*
 * A delta from alice that does not apply to the state bob holds, or whose
 * result is not the state it signs: refused, and bob's state is as it was.
 */
static void bad_delta_refused(struct big *b, const char *list_name, enum msv_group_delta list,
                              const char *who, int keep_hash)
{
    char *one[1] = {(char *)who}, *text = NULL;
    uint8_t whole[8] = {1}, *before, *after;
    size_t lb = 0, la = 0;
    struct msv_payload p = {.kind = MSV_KIND_GROUP_CHANGE, .has_group = true};
    int applied = 1;

    before = held_state(b->bob, b, &lb);
    assert_non_null(before);
    memcpy(p.group_id, b->gid, 16);
    p.group_name = "big";
    p.group_epoch = msv_get_u64be(before + 18 + 16) + 1;
    crypto_hash_sha256(p.group_prev_hash, before, lb);
    p.has_group_state_hash = true;
    /* the hash of the state held: never what a real change makes */
    memcpy(p.group_state_hash, p.group_prev_hash, 32);
    if (!keep_hash)
        p.group_state_hash[0] ^= 1;
    p.group_delta[list] = one;
    p.group_delta_count[list] = 1;
    p.group_state = whole;
    p.group_state_len = sizeof(whole);
    sign_as_alice(b, &p);
    assert_int_equal(
        client_group_take(b->bob, b->alice->handle, b->alice->device_id, &p, &applied, &text),
        MSV_OK);
    if (applied || strstr(text, "refused, its state does not match") == NULL)
        fail_msg("%s %s: %s", list_name, who, text);
    /* it names nobody but its sender */
    assert_null(strstr(text, who));
    after = held_state(b->bob, b, &la);
    assert_int_equal(la, lb);
    assert_memory_equal(before, after, lb);
    free(before);
    free(after);
    free(text);
}

static void test_big_group(void **state)
{
    struct big *b = *state;
    struct msv_client *dave;
    struct msv_group_rec g = {0};
    const char *add[1] = {"dave@example.org"}, *drop[1];
    uint64_t *devices = register_rest(b);
    uint8_t id[16];
    double t0;
    size_t len = 0;
    uint8_t *whole;

    test_acquaint(b->alice, b->bob);
    test_acquaint(b->alice, b->carol);
    t0 = now_s();
    assert_int_equal(
        msv_client_group_create(b->alice, "big", (const char *const *)b->handles, b->n, b->gid),
        MSV_OK);
    fprintf(stderr, "# the creation to %zu members: %.2f s\n", b->n, now_s() - t0);
    assert_int_equal(msv_hex_encode(b->gid, 16, b->hex, sizeof(b->hex)), MSV_OK);
    /* the whole state is bigger than an envelope: it went through the attachment store */
    whole = held_state(b->alice, b, &len);
    assert_true(b->n < 250 || len > MSV_GROUP_STATE_INLINE_MAX);
    free(whole);
    receive_all(b->bob);
    receive_all(b->carol);
    same_state(b->bob, b);
    same_state(b->carol, b);
    {
        char conv[40];

        msv_client_group_conversation(b->gid, conv);
        assert_int_equal(msv_client_group_accept(b->bob, conv), MSV_OK);
        assert_int_equal(msv_client_group_accept(b->carol, conv), MSV_OK);
    }

    /* one message to everyone */
    t0 = now_s();
    assert_int_equal(msv_client_group_send(b->alice, "big", "hello, everyone", NULL, 0, NULL, id),
                     MSV_OK);
    fprintf(stderr, "# one message to %zu members: %.2f s\n", b->n, now_s() - t0);
    every_device_got(b, devices + REAL - 1, b->n - (REAL - 1), 2);
    {
        struct msv_message_rec *m = NULL;

        receive_all(b->bob);
        assert_int_equal(msv_client_db_message_get(b->bob->db, id, &m), MSV_OK);
        assert_string_equal(m->text, "hello, everyone");
        assert_int_equal(strncmp(m->conversation, "group:", 6), 0);
        msv_messages_free(m, 1);
    }
    {
        struct msv_message_rec *m = NULL;
        size_t read = 0;
        char conv[40];

        /* what members send about it goes to everyone too: a reaction, read receipts */
        msv_client_group_conversation(b->gid, conv);
        assert_int_equal(msv_client_react(b->bob, id, "\xf0\x9f\x91\x8d"), MSV_OK);
        assert_int_equal(msv_client_mark_read(b->bob, conv, &read), MSV_OK);
        assert_true(read >= 1);
        receive_all(b->carol);
        assert_int_equal(msv_client_db_message_get(b->carol->db, id, &m), MSV_OK);
        msv_messages_free(m, 1);
    }

    /* a change: one member more, as a delta; the new member takes the whole state */
    dave = test_client_for(&b->s, "dave", "dave@example.org");
    t0 = now_s();
    assert_int_equal(msv_client_group_change(b->alice, "big", NULL, add, 1, NULL, 0), MSV_OK);
    fprintf(stderr, "# one change (a member added) to %zu members: %.2f s\n", b->n + 1,
            now_s() - t0);
    receive_all(b->bob);
    receive_all(b->carol);
    receive_all(dave);
    same_state(b->bob, b);
    same_state(b->carol, b);
    same_state(dave, b);
    assert_int_equal(msv_client_db_group_get(dave->db, b->gid, NULL, &g), MSV_OK);
    assert_non_null(strstr(g.members, "m0005@example.org"));
    msv_group_clear(&g);

    /* and one fewer */
    drop[0] = b->handles[5];
    assert_int_equal(msv_client_group_change(b->alice, "big", NULL, NULL, 0, drop, 1), MSV_OK);
    receive_all(b->bob);
    receive_all(dave);
    same_state(b->bob, b);
    same_state(dave, b);
    assert_int_equal(msv_client_db_group_get(b->bob->db, b->gid, NULL, &g), MSV_OK);
    assert_null(strstr(g.members, b->handles[5]));
    msv_group_clear(&g);
    every_device_got(b, devices + 5, 1, 3); /* the removed member hears of it */

    /* deltas that do not apply, or do not make the state they sign, change nothing */
    bad_delta_refused(b, "removing the non-member", MSV_DELTA_REMOVED, "nobody@example.org", 1);
    bad_delta_refused(b, "adding the member", MSV_DELTA_ADDED, "m0007@example.org", 1);
    bad_delta_refused(b, "promoting the non-member", MSV_DELTA_PROMOTED, "nobody@example.org", 1);
    bad_delta_refused(b, "demoting the non-admin", MSV_DELTA_DEMOTED, "m0007@example.org", 1);
    bad_delta_refused(b, "a hash that does not match", MSV_DELTA_ADDED, "newbie@example.org", 0);
    msv_client_close(dave);
    free(devices);
}

/* A device that holds no state takes a change's whole state only if its hash is the one signed. */
static void test_whole_state_checked(void **state)
{
    struct big *b = *state;
    struct msv_client *erin = test_client_for(&b->s, "erin", "erin@example.org");
    struct msv_payload p = {.kind = MSV_KIND_GROUP_CHANGE, .has_group = true};
    struct msv_group_rec g = {0};
    size_t len = 0;
    uint8_t *whole = held_state(b->alice, b, &len);
    char *text = NULL;
    int applied = 1;

    assert_non_null(whole);
    memcpy(p.group_id, b->gid, 16);
    p.group_name = "big";
    p.group_epoch = msv_get_u64be(whole + 18 + 16);
    p.has_group_state_hash = true;
    crypto_hash_sha256(p.group_state_hash, whole, len);
    p.group_state_hash[31] ^= 1; /* signed, but not the state carried */
    p.group_state = whole;
    p.group_state_len = len;
    sign_as_alice(b, &p);
    assert_int_equal(
        client_group_take(erin, b->alice->handle, b->alice->device_id, &p, &applied, &text),
        MSV_OK);
    assert_false(applied);
    assert_non_null(strstr(text, "refused, its state does not match"));
    assert_int_equal(msv_client_db_group_get(erin->db, b->gid, NULL, &g), MSV_ERR_NOT_FOUND);
    free(text);
    /* the same state under its own hash is taken */
    p.group_state_hash[31] ^= 1;
    sign_as_alice(b, &p);
    assert_int_equal(
        client_group_take(erin, b->alice->handle, b->alice->device_id, &p, &applied, &text),
        MSV_OK);
    assert_true(applied);
    same_state(erin, b);
    free(text);
    free(whole);
    msv_client_close(erin);
}

/* Past the limits, nothing is signed, held or sent. */
static void test_limits(void **state)
{
    struct big *b = *state;
    char **many = calloc(MEMBERS_MAX, sizeof(char *));
    uint8_t *before, *after, gid[16];
    size_t lb = 0, la = 0;

    assert_non_null(many);
    for (size_t i = 0; i < MEMBERS_MAX; i++) {
        char h[64];

        snprintf(h, sizeof(h), "x%04zu@example.org", i);
        assert_non_null(many[i] = strdup(h));
    }
    before = held_state(b->alice, b, &lb);
    assert_int_equal(msv_client_group_change(b->alice, "big", NULL, (const char *const *)many,
                                             MSV_GROUP_DELTA_MAX + 1, NULL, 0),
                     MSV_ERR_TOO_BIG);
    /* too many at once, or (for a group of over 767) too many in all */
    assert_true(strstr(b->alice->why.message, "at most 256 people") != NULL ||
                strstr(b->alice->why.message, "holds at most 1024 people") != NULL);
    after = held_state(b->alice, b, &la);
    assert_int_equal(la, lb);
    assert_memory_equal(before, after, lb);
    /* with its maker, a group of MEMBERS_MAX others would be one too many */
    assert_int_equal(
        msv_client_group_create(b->alice, "huge", (const char *const *)many, MEMBERS_MAX, gid),
        MSV_ERR_INVALID);
    for (size_t i = 0; i < MEMBERS_MAX; i++)
        free(many[i]);
    free(many);
    free(before);
    free(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_group),
        cmocka_unit_test(test_whole_state_checked),
        cmocka_unit_test(test_limits),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
