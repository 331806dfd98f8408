/*
 * A device's MLS KeyPackages (src/client/mlskeys.c, docs/crypto.md "MLS KeyPackages of a
 * device"): published when the device connects, kept topped up with a last-resort one, their
 * private parts kept for their lifetime and bounded, and each bound to its device by the
 * device identity's signature, so that a KeyPackage the server makes up is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sqlite3.h>

#include <sodium.h>

#include "client/client.h"
#include "client/conn.h"
#include "client/internal.h"
#include "client/requests.h"
#include "missive/crypto.h"
#include "missive/util.h"
#include "mls/mls.h"
#include "server_harness.h"
#include "store/client_db.h"
#include "util/endian.h"
#include "wire/frame.h"

static void reconnect(struct msv_client *c)
{
    if (c->conn != NULL)
        msv_conn_close(c->conn);
    c->conn = NULL;
    assert_int_equal(msv_client_connect(c), MSV_OK);
}

/* c's connection, made (and its keys published) if it has none */
static struct msv_conn *conn_of(struct msv_client *c)
{
    if (c->conn == NULL)
        assert_int_equal(msv_client_connect(c), MSV_OK);
    return c->conn;
}

/* What the server holds of c's KeyPackages (an empty upload asks). */
static struct msv_mls_kp_counts held(struct msv_client *c)
{
    struct msv_mls_kp_counts k = {0};
    struct msv_refusal why;

    assert_int_equal(
        msv_request_mls_key_packages(conn_of(c), NULL, NULL, 0, NULL, 0, 0, 15000, &k, &why),
        MSV_OK);
    return k;
}

/* The private parts c keeps; *last: how many of them are last-resort ones. */
static size_t kept(struct msv_client *c, size_t *last)
{
    struct msv_setting *s = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_settings(c->db, "mls-kp:", SIZE_MAX, &s, &n), MSV_OK);
    if (last != NULL) {
        *last = 0;
        for (size_t i = 0; i < n; i++)
            *last += s[i].len > 0 && (s[i].value[0] & 1);
    }
    msv_settings_free(s, n);
    return n;
}

/* A claim of handle's KeyPackages through c; the answer (msv_frame_free). */
static msv_frame *claim(struct msv_client *c, const char *handle)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsKeyPackageClaim q = MSV__WIRE__MLS_KEY_PACKAGE_CLAIM__INIT;
    msv_frame *r;

    q.handle = (ProtobufCBinaryData){strlen(handle), (uint8_t *)handle};
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_CLAIM;
    f.mls_key_package_claim = &q;
    r = test_request(conn_of(c), &f);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGES);
    return r;
}

/* Runs SQL on the stopped server's database. */
static void server_sql(struct test_server *s, const char *sql)
{
    char path[160], *msg = NULL;
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

static uint64_t now_s(void)
{
    return (uint64_t)(msv_wall_ms() / 1000);
}

/* Published on connecting: the server holds MSV_MLSKEYS_TARGET and a last-resort one, each
 * valid, of the device, bound to its identity; the device keeps each one's private part. */
static void test_published_and_bound(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    const struct msv_public_identity *alice_pub, *carol_pub;
    struct msv_mls_kp_counts k;
    const Msv__Wire__MlsKeyPackage *got = NULL;
    const char *why = NULL;
    size_t last = 0;
    msv_frame *r;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", "bob@example.org");
    carol = test_client_for(&s, "carol", "carol@example.org");
    k = held(alice);
    assert_int_equal(k.left, MSV_MLSKEYS_TARGET);
    assert_true(k.has_last_resort);
    assert_int_equal(kept(alice, &last), MSV_MLSKEYS_TARGET + 1);
    assert_int_equal(last, 1);

    r = claim(bob, "alice@example.org");
    for (size_t i = 0; i < r->mls_key_packages->n_key_packages; i++)
        if (r->mls_key_packages->key_packages[i]->device_id == alice->device_id)
            got = r->mls_key_packages->key_packages[i];
    assert_non_null(got);
    assert_false(got->last_resort);
    alice_pub = msv_identity_public(alice->id);
    carol_pub = msv_identity_public(carol->id);
    assert_int_equal(msv_mlskeys_credential_check(alice_pub, alice->device_id,
                                                  got->key_package.data, got->key_package.len,
                                                  now_s(), &why),
                     MSV_OK);
    /* another device's identity, another device id, a time past its lifetime: refused */
    assert_int_equal(msv_mlskeys_credential_check(carol_pub, alice->device_id,
                                                  got->key_package.data, got->key_package.len,
                                                  now_s(), &why),
                     MSV_ERR_AUTH);
    assert_string_equal(why, "its signature key is not signed by the device's identity");
    assert_int_equal(msv_mlskeys_credential_check(alice_pub, carol->device_id,
                                                  got->key_package.data, got->key_package.len,
                                                  now_s(), &why),
                     MSV_ERR_AUTH);
    assert_string_equal(why, "its credential names another device");
    assert_int_not_equal(msv_mlskeys_credential_check(alice_pub, alice->device_id,
                                                      got->key_package.data, got->key_package.len,
                                                      now_s() + 62 * 86400, &why),
                         MSV_OK);
    /* one claimed: the server holds one less, and a claim by the same account again gets the
     * last-resort one (the server's rule), also bound */
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET - 1);
    msv_frame_free(r);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * A KeyPackage the server made up for alice's device (valid as MLS, its credential naming her
 * device id, but signed by a key the server holds) is refused; so is one whose credential
 * carries alice's binding of another signature key.
 */
static void test_made_up_refused(void **state)
{
    struct test_server s;
    struct msv_client *alice;
    uint8_t seed[32], init_sk[32], leaf_sk[32], identity[8 + 64], *kp = NULL;
    const char *why = NULL;
    size_t len = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    randombytes_buf(seed, sizeof(seed));
    msv_put_u64be(identity, alice->device_id);
    randombytes_buf(identity + 8, 64);
    assert_int_equal(msv_mls_key_package_make(MSV_MLS_SUITE_X25519_AES128GCM, seed, identity,
                                              sizeof(identity), now_s() - 60, now_s() + 86400,
                                              init_sk, leaf_sk, &kp, &len),
                     MSV_OK);
    assert_int_equal(msv_mlskeys_credential_check(msv_identity_public(alice->id), alice->device_id,
                                                  kp, len, now_s(), &why),
                     MSV_ERR_AUTH);
    assert_string_equal(why, "its signature key is not signed by the device's identity");
    free(kp);
    /* any bit of a real one changed: refused (as MLS, or as a binding) */
    {
        struct msv_client *bob = test_client_for(&s, "bob", "bob@example.org");
        msv_frame *r = claim(bob, "alice@example.org");
        const Msv__Wire__MlsKeyPackage *got = r->mls_key_packages->key_packages[0];
        uint8_t *copy = malloc(got->key_package.len);

        assert_int_equal(got->device_id, alice->device_id);
        for (size_t bit = 0; bit < got->key_package.len * 8; bit += 61) {
            memcpy(copy, got->key_package.data, got->key_package.len);
            copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_int_not_equal(msv_mlskeys_credential_check(msv_identity_public(alice->id),
                                                              alice->device_id, copy,
                                                              got->key_package.len, now_s(), &why),
                                 MSV_OK);
        }
        free(copy);
        msv_frame_free(r);
        msv_client_close(bob);
    }
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * Topped up when the server holds fewer than MSV_MLSKEYS_LOW; a private part past its lifetime
 * is forgotten; the private parts kept stay within MSV_MLSKEYS_KEPT_MAX, the oldest forgotten
 * first; a last-resort one the server lost is published again.
 */
static void test_topped_up_and_bounded(void **state)
{
    struct test_server s;
    struct msv_client *alice;
    uint8_t rec[105];
    char key[80];
    size_t last = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    /* above the low mark: nothing made */
    test_server_stop(&s);
    server_sql(&s, "DELETE FROM mls_key_packages WHERE last_resort = 0 AND id IN (SELECT id FROM "
                   "mls_key_packages WHERE last_resort = 0 ORDER BY id LIMIT 30);");
    test_server_start(&s);
    reconnect(alice);
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET - 30);
    assert_int_equal(kept(alice, NULL), MSV_MLSKEYS_TARGET + 1);
    /* below it, and the last-resort one gone from the server: topped up, both */
    test_server_stop(&s);
    server_sql(&s, "DELETE FROM mls_key_packages WHERE last_resort = 1 OR id IN (SELECT id FROM "
                   "mls_key_packages WHERE last_resort = 0 ORDER BY id LIMIT 5);");
    test_server_start(&s);
    reconnect(alice);
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    assert_true(held(alice).has_last_resort);
    assert_int_equal(kept(alice, &last), MSV_MLSKEYS_TARGET + 1 + 35 + 1);
    assert_int_equal(last, 2);
    /* a private part past its lifetime is forgotten at the next publish */
    memset(rec, 7, sizeof(rec));
    rec[0] = 0;
    msv_put_u64be(rec + 1, now_s() - 31 * 86400); /* ended longer ago than the relay keeps */
    assert_int_equal(msv_client_db_set(alice->db, "mls-kp:expired", rec, sizeof(rec)), MSV_OK);
    msv_put_u64be(rec + 1, now_s() - 29 * 86400); /* a Welcome naming it may still come */
    assert_int_equal(msv_client_db_set(alice->db, "mls-kp:ended", rec, sizeof(rec)), MSV_OK);
    /* and many kept ones (uploads that got no answer, say) are bounded, the oldest going */
    for (int i = 0; i < MSV_MLSKEYS_KEPT_MAX; i++) {
        snprintf(key, sizeof(key), "mls-kp:old%04d", i);
        msv_put_u64be(rec + 1, now_s() + 1000 + (uint64_t)i);
        assert_int_equal(msv_client_db_set(alice->db, key, rec, sizeof(rec)), MSV_OK);
    }
    test_server_stop(&s);
    server_sql(&s, "DELETE FROM mls_key_packages WHERE last_resort = 0;");
    test_server_start(&s);
    reconnect(alice);
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    assert_int_equal(kept(alice, &last), MSV_MLSKEYS_KEPT_MAX);
    assert_int_equal(last, 2);
    {
        uint8_t *v = NULL;
        size_t v_len = 0;

        assert_int_equal(msv_client_db_get(alice->db, "mls-kp:expired", &v, &v_len),
                         MSV_ERR_NOT_FOUND);
        /* the oldest go first: the one that ended 29 days ago is the oldest of all */
        assert_int_equal(msv_client_db_get(alice->db, "mls-kp:ended", &v, &v_len),
                         MSV_ERR_NOT_FOUND);
        /* the oldest of the made-up ones went; the newest stayed */
        assert_int_equal(msv_client_db_get(alice->db, "mls-kp:old0000", &v, &v_len),
                         MSV_ERR_NOT_FOUND);
        snprintf(key, sizeof(key), "mls-kp:old%04d", MSV_MLSKEYS_KEPT_MAX - 1);
        assert_int_equal(msv_client_db_get(alice->db, key, &v, &v_len), MSV_OK);
        free(v);
    }
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/* The server's count for a query on its database (read while it runs). */
static long long server_count(struct test_server *s, const char *sql)
{
    char path[160];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long n;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* 1 if c keeps the private part of the KeyPackage MLSMessage kp. */
static int keeps_private_part(struct msv_client *c, const ProtobufCBinaryData *kp)
{
    uint8_t ref[MSV_MLS_NH], *v = NULL;
    char key[80] = "mls-kp:";
    size_t len = 0;
    msv_err err;

    assert_true(kp->len > 4);
    assert_int_equal(msv_mls_ref_hash((const uint8_t *)"MLS 1.0 KeyPackage Reference", 28,
                                      kp->data + 4, kp->len - 4, ref),
                     MSV_OK);
    assert_int_equal(msv_hex_encode(ref, sizeof(ref), key + 7, sizeof(key) - 7), MSV_OK);
    err = msv_client_db_get(c->db, key, &v, &len);
    free(v);
    return err == MSV_OK;
}

/* The server's ordinary KeyPackages of device whose id compares to id by op ("<=", ">"), or
 * their largest id (op NULL). */
static long long device_rows(struct test_server *s, uint64_t device, const char *op, long long id)
{
    char sql[200];

    if (op == NULL)
        snprintf(sql, sizeof(sql),
                 "SELECT MAX(id) FROM mls_key_packages WHERE last_resort = 0 AND device_id = %llu;",
                 (unsigned long long)device);
    else
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM mls_key_packages WHERE last_resort = 0 AND device_id = %llu"
                 " AND id %s %lld;",
                 (unsigned long long)device, op, id);
    return server_count(s, sql);
}

/* bob's claim of alice's KeyPackages: one, of the kind asked, whose private part she keeps. */
static void claim_held_privately(struct msv_client *bob, struct msv_client *alice, int last_resort)
{
    msv_frame *r = claim(bob, "alice@example.org");

    assert_int_equal(r->mls_key_packages->n_key_packages, 1);
    assert_int_equal(r->mls_key_packages->key_packages[0]->last_resort, last_resort);
    assert_true(keeps_private_part(alice, &r->mls_key_packages->key_packages[0]->key_package));
    msv_frame_free(r);
}

/*
 * The server keeps KeyPackages whose lifetime ended: the device replaces all its ordinary ones
 * (the server's unclaimed ones dropped) before theirs ends, and after a restore from a backup
 * (which holds no private part) at once; each one handed out then is one whose private part the
 * device keeps.
 */
static void test_replaced_in_time_and_after_restore(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    long long first;
    uint8_t when[8];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", "bob@example.org");
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    first = device_rows(&s, alice->device_id, NULL, 0);
    /* not due: a reconnect replaces nothing */
    reconnect(alice);
    assert_int_equal(device_rows(&s, alice->device_id, ">", first), 0);
    /* due (the time it was to be replaced by has come): all new, the old unclaimed dropped */
    msv_put_u64be(when, now_s() - 1);
    assert_int_equal(msv_client_db_set(alice->db, "mls-kp-renew-by-2", when, sizeof(when)), MSV_OK);
    reconnect(alice);
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    assert_int_equal(device_rows(&s, alice->device_id, "<=", first), 0);
    assert_true(held(alice).has_last_resort);
    /* restored from a backup: the private parts are gone, so all are replaced at once */
    assert_int_equal(msv_mlskeys_strip_backup_copy(alice->db), MSV_OK);
    assert_int_equal(kept(alice, NULL), 0);
    reconnect(alice);
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    claim_held_privately(bob, alice, 0);
    /* and the last-resort one is new too (bob's second claim within the interval gets it) */
    claim_held_privately(bob, alice, 1);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A device of the version before the group context (its KeyPackages' capabilities lack the
 * extension) held only the setting's earlier name, "mls-kp-renew-by": it replaces all of its
 * KeyPackages at its next publish, and forgets that name.
 */
static void test_replaced_after_upgrade(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    long long first;
    uint8_t when[8], *v = NULL;
    size_t len = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", "bob@example.org"); /* row ids past alice's stay in use */
    first = device_rows(&s, alice->device_id, NULL, 0);
    msv_put_u64be(when, now_s() + 30 * 86400);
    assert_int_equal(msv_client_db_set(alice->db, "mls-kp-renew-by", when, sizeof(when)), MSV_OK);
    assert_int_equal(msv_client_db_unset(alice->db, "mls-kp-renew-by-2"), MSV_OK);
    reconnect(alice);
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    assert_int_equal(device_rows(&s, alice->device_id, "<=", first), 0);
    assert_int_equal(msv_client_db_get(alice->db, "mls-kp-renew-by", &v, &len), MSV_ERR_NOT_FOUND);
    free(v);
    assert_int_equal(msv_client_db_get(alice->db, "mls-kp-renew-by-2", &v, &len), MSV_OK);
    free(v);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* A server that says, again and again, it has no last-resort KeyPackage: the device keeps two
 * last-resort private parts at most, and forgets no ordinary one for them. */
static void test_last_resort_bounded(void **state)
{
    struct test_server s;
    struct msv_client *alice;
    size_t last = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    assert_int_equal(held(alice).left, MSV_MLSKEYS_TARGET);
    for (int i = 0; i < 4; i++) {
        test_server_stop(&s);
        server_sql(&s, "DELETE FROM mls_key_packages WHERE last_resort = 1;");
        test_server_start(&s);
        reconnect(alice);
        assert_true(held(alice).has_last_resort);
    }
    assert_int_equal(kept(alice, &last), MSV_MLSKEYS_TARGET + 2);
    assert_int_equal(last, 2);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/* A backup's copy keeps no KeyPackage's private part, nor any group's MLS state or a record
 * kept beside it (each prefix of docs/crypto.md's list). */
static void test_backup_strips(void **state)
{
    static const char *const records[] = {
        "mls-group:",     "mls-refound:", "mls-updated:",    "mls-sent:",
        "mls-behind:",    "mls-founded:", "mls-follow:",     "mls-leave:",
        "mls-gen-taken:", "mls-key-by:",  "mls-members-at:", NULL};
    struct test_server s;
    struct msv_client *alice;
    size_t before;
    char key[80];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    before = kept(alice, NULL);
    assert_true(before > 0);
    for (const char *const *r = records; *r != NULL; r++) {
        snprintf(key, sizeof(key), "%s00112233445566778899aabbccddeeff", *r);
        assert_int_equal(msv_client_db_set(alice->db, key, (const uint8_t *)"x", 1), MSV_OK);
    }
    assert_int_equal(msv_mlskeys_strip_backup_copy(alice->db), MSV_OK);
    assert_int_equal(kept(alice, NULL), 0);
    for (const char *const *r = records; *r != NULL; r++) {
        struct msv_setting *set = NULL;
        size_t n = 0;

        assert_int_equal(msv_client_db_settings(alice->db, *r, SIZE_MAX, &set, &n), MSV_OK);
        msv_settings_free(set, n);
        if (n != 0)
            fail_msg("%s kept", *r);
    }
    msv_client_close(alice);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_and_bound),
        cmocka_unit_test(test_made_up_refused),
        cmocka_unit_test(test_topped_up_and_bounded),
        cmocka_unit_test(test_replaced_in_time_and_after_restore),
        cmocka_unit_test(test_replaced_after_upgrade),
        cmocka_unit_test(test_last_resort_bounded),
        cmocka_unit_test(test_backup_strips),
    };

    return cmocka_run_group_tests_name("mls_client", tests, NULL, NULL);
}
