/*
 * The storage operations, through the ops table: against the SQLite backend
 * in a fresh temporary directory, then, when MSV_TEST_PG_ADMIN names a
 * PostgreSQL server (scripts/services.sh), against the PostgreSQL backend in
 * a fresh database per test, with the tests of what several nodes sharing
 * one database rely on.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "missive/util.h"
#include "missive/crypto.h"
#include "missive/kt.h"
#include "server/blob_backend.h"
#include "store/store.h"

struct fixture {
    int pg;          /* the PostgreSQL backend */
    char dir[64];    /* SQLite: the temporary directory */
    char path[128];  /* SQLite: the database; PostgreSQL: the conninfo */
    char dbname[64]; /* PostgreSQL: the test's database */
    struct msv_store *store;
};

/* SQL run on the PostgreSQL server's admin database (CREATE/DROP DATABASE). */
static int pg_admin(const char *sql)
{
    PGconn *db = PQconnectdb(getenv("MSV_TEST_PG_ADMIN"));
    PGresult *r = PQexec(db, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

    if (!ok)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);
    return ok ? 0 : -1;
}

/* Opens the fixture's store again (as another node, or after a restart would). */
static msv_err open_store(struct fixture *f, struct msv_store **out)
{
    char why[256];

    *out = NULL;
    if (!f->pg)
        return msv_store_open_sqlite(f->path, out);
    return msv_store_open_postgres(f->path, 4, 5000, 0, why, sizeof(why), out);
}

static void reopen(struct fixture *f)
{
    msv_store_close(f->store);
    f->store = NULL;
    assert_int_equal(open_store(f, &f->store), MSV_OK);
}

static void raw_exec(struct fixture *f, const char *sql);

static int count_cb(void *arg, int n, char **vals, char **names)
{
    (void)n;
    (void)names;
    *(long long *)arg = vals[0] != NULL ? atoll(vals[0]) : 0;
    return 0;
}

/* The first column of the first row SQL gives, as a number, read directly. */
static long long count_rows(struct fixture *f, const char *sql)
{
    long long v = -1;

    if (f->pg) {
        PGconn *db = PQconnectdb(f->path);
        PGresult *r = PQexec(db, sql);

        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
            fail_msg("%s: %s", sql, PQerrorMessage(db));
        v = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        PQfinish(db);
    } else {
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, sql, count_cb, &v, NULL), SQLITE_OK);
        sqlite3_close(db);
    }
    return v;
}

/* An open MLS claim of device by account, as a KeyPackage claim records it. */
static void seed_claim(struct fixture *f, uint64_t account, uint64_t device, int64_t expires_ms)
{
    char sql[160];

    snprintf(
        sql, sizeof(sql),
        "INSERT INTO mls_claims (account_id, device_id, expires_ms) VALUES (%llu, %llu, %lld);",
        (unsigned long long)account, (unsigned long long)device, (long long)expires_ms);
    raw_exec(f, sql);
}

/* Runs SQL on the backend's database directly (the store closed or not). */
static void raw_exec(struct fixture *f, const char *sql)
{
    if (f->pg) {
        PGconn *db = PQconnectdb(f->path);
        PGresult *r = PQexec(db, sql);

        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail_msg("%s: %s", sql, PQerrorMessage(db));
        PQclear(r);
        PQfinish(db);
    } else {
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
    }
}

static int setup_backend(void **state, int pg)
{
    static unsigned serial;
    struct fixture *f = calloc(1, sizeof(*f));
    char sql[128];

    if (f == NULL)
        return -1;
    f->pg = pg;
    if (pg) {
        snprintf(f->dbname, sizeof(f->dbname), "store_test_%ld_%u", (long)getpid(), serial++);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s;", f->dbname);
        if (pg_admin(sql) != 0)
            return -1;
        snprintf(f->path, sizeof(f->path), "%s", getenv("MSV_TEST_PG_ADMIN"));
        /* the same server, the test's database (a later dbname= wins) */
        snprintf(f->path + strlen(f->path), sizeof(f->path) - strlen(f->path), " dbname=%s",
                 f->dbname);
    } else {
        snprintf(f->dir, sizeof(f->dir), "/tmp/msv-store-XXXXXX");
        if (mkdtemp(f->dir) == NULL)
            return -1;
        snprintf(f->path, sizeof(f->path), "%s/missive.db", f->dir);
    }
    if (open_store(f, &f->store) != MSV_OK)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_backend(state, 0);
}

static int setup_pg(void **state)
{
    return setup_backend(state, 1);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    int rc;

    msv_store_close(f->store);
    if (f->pg) {
        snprintf(cmd, sizeof(cmd), "DROP DATABASE %s;", f->dbname);
        rc = pg_admin(cmd);
    } else {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        rc = system(cmd) == 0 ? 0 : -1;
    }
    free(f);
    return rc;
}

#define OPS(f) ((f)->store->ops)
#define IMPL(f) ((f)->store->impl)

static uint64_t make_account(struct fixture *f, const char *handle)
{
    uint64_t id = 0;

    assert_int_equal(OPS(f)->account_create(IMPL(f), handle, "$argon2id$x", 1000, &id), MSV_OK);
    return id;
}

static uint64_t make_device(struct fixture *f, uint64_t account)
{
    uint64_t id = 0;

    assert_int_equal(OPS(f)->device_add(IMPL(f), account, 3, (const uint8_t *)"identity", 8,
                                        (const uint8_t *)"token", 5, 1, 2000, NULL, NULL, &id),
                     MSV_OK);
    return id;
}

/* Devices of the given ids (a queue's recipients), approved, straight into the store. */
static void raw_devices(struct fixture *f, const uint64_t *ids, size_t n)
{
    uint64_t account = make_account(f, "raw-devices");
    char sql[256];

    for (size_t i = 0; i < n; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO devices (id, account_id, suite, identity, push_token, created_ms,"
                 " approved) VALUES (%llu, %llu, 3, %s, %s, 0, %s);",
                 (unsigned long long)ids[i], (unsigned long long)account,
                 f->pg ? "'\\x00'::BYTEA" : "x'00'", f->pg ? "''::BYTEA" : "x''",
                 f->pg ? "TRUE" : "1");
        raw_exec(f, sql);
    }
}

static void test_accounts(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "alice@example.org"), b = 0, got = 0;
    char *hash = NULL, *handle = NULL;

    assert_int_equal(OPS(f)->account_create(IMPL(f), "alice@example.org", "x", 1, &b),
                     MSV_ERR_EXISTS);
    assert_int_equal(OPS(f)->account_get(IMPL(f), "alice@example.org", &got, &hash), MSV_OK);
    assert_int_equal(got, a);
    assert_string_equal(hash, "$argon2id$x");
    free(hash);
    assert_int_equal(OPS(f)->account_get(IMPL(f), "nobody@example.org", &got, NULL),
                     MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->account_handle(IMPL(f), a, &handle), MSV_OK);
    assert_string_equal(handle, "alice@example.org");
    free(handle);
    assert_int_equal(OPS(f)->account_handle(IMPL(f), a + 100, &handle), MSV_ERR_NOT_FOUND);
}

/* A password change replaces the hash of that account only; an unknown account changes nothing. */
static void test_account_password(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "alice@example.org"), b = make_account(f, "bob@example.org");
    uint64_t got = 0;
    char *hash = NULL;

    assert_int_equal(OPS(f)->account_set_password(IMPL(f), a, "$argon2id$new"), MSV_OK);
    assert_int_equal(OPS(f)->account_get(IMPL(f), "alice@example.org", &got, &hash), MSV_OK);
    assert_int_equal(got, a);
    assert_string_equal(hash, "$argon2id$new");
    free(hash);
    hash = NULL;
    assert_int_equal(OPS(f)->account_get(IMPL(f), "bob@example.org", &got, &hash), MSV_OK);
    assert_int_equal(got, b);
    assert_string_equal(hash, "$argon2id$x");
    free(hash);
    assert_int_equal(OPS(f)->account_set_password(IMPL(f), a + b + 100, "$argon2id$y"),
                     MSV_ERR_NOT_FOUND);
}

/*
 * Deleting an account takes everything of it in one go — devices, what waits for them, their
 * prekeys and attachments' records, its reports — and leaves a tombstone in the log; other
 * accounts keep what they have, and the handle registers again as a new account.
 */
static void test_account_delete(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "alice@x"), d1 = make_device(f, a), d2 = make_device(f, a);
    uint64_t b = make_account(f, "bob@x"), e = make_device(f, b), ids[2], again = 0, rid = 0;
    struct msv_queue_in in[2] = {{.device_id = d1,
                                  .sender_device = e,
                                  .sender_handle = "bob@x",
                                  .suite = 3,
                                  .ciphertext = (const uint8_t *)"to alice",
                                  .ciphertext_len = 8},
                                 {.device_id = e,
                                  .sender_device = d1,
                                  .sender_handle = "alice@x",
                                  .suite = 3,
                                  .ciphertext = (const uint8_t *)"to bob",
                                  .ciphertext_len = 6}};
    struct msv_blob_rec blob = {.owner_device = d2, .size = 10, .expires_ms = 5000}, got;
    struct msv_prekey_upload up = {.has_signed = 1, .signed_id = 1};
    struct msv_account_deleted del = {0};
    struct msv_device_rec dev = {0};
    struct msv_queue_rec *q = NULL;
    struct msv_kt_rec leaf = {0};
    struct msv_kt_entry entry;
    uint8_t hash[32];
    size_t n = 0;
    uint32_t left = 0;
    uint64_t tomb = 0;
    uint32_t has_signed = 0;

    memset(hash, 7, sizeof(hash));
    memset(blob.id, 0xa1, MSV_BLOB_ID_LEN);
    assert_int_equal(OPS(f)->queue_put(IMPL(f), in, 2, 0, 10000, ids), MSV_OK);
    assert_int_equal(OPS(f)->blob_create(IMPL(f), &blob), MSV_OK);
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d1, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(OPS(f)->delivery_token_set(IMPL(f), d2, hash), MSV_OK);
    assert_int_equal(OPS(f)->report_add(IMPL(f), a, "bob@x", "spam", "", 1000, 0, 5, &rid), MSV_OK);

    assert_int_equal(OPS(f)->account_delete(IMPL(f), "alice@x", 9000, &del), MSV_OK);
    assert_int_equal(del.account_id, a);
    assert_int_equal(del.n_devices, 2);
    assert_true((del.devices[0] == d1 && del.devices[1] == d2) ||
                (del.devices[0] == d2 && del.devices[1] == d1));
    assert_int_equal(del.n_blobs, 1);
    assert_memory_equal(del.blobs[0], blob.id, MSV_BLOB_ID_LEN);
    msv_account_deleted_clear(&del);

    assert_int_equal(OPS(f)->account_get(IMPL(f), "alice@x", &again, NULL), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->device_get(IMPL(f), d1, &dev), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->device_get(IMPL(f), d2, &dev), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->blob_get(IMPL(f), blob.id, &got), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), d1, 0, 0, 10, &q, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_queue_recs_free(q, n);
    assert_int_equal(OPS(f)->report_get(IMPL(f), rid, &(struct msv_report *){NULL}),
                     MSV_ERR_NOT_FOUND);
    /* bob keeps what alice sent him before */
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), e, 0, 0, 10, &q, &n), MSV_OK);
    assert_int_equal(n, 1);
    msv_queue_recs_free(q, n);
    /* the log's newest leaf for the handle is its tombstone */
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "alice@x", &leaf), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(leaf.leaf, leaf.leaf_len, &entry), MSV_OK);
    assert_true(entry.deleted);
    assert_int_equal(entry.n_devices, 0);
    assert_string_equal(entry.handle, "alice@x");
    free(leaf.leaf);

    assert_int_equal(OPS(f)->account_delete(IMPL(f), "alice@x", 9100, &del), MSV_ERR_NOT_FOUND);
    assert_int_equal(del.n_devices, 0);
    /* the handle is free again: a new account, never the old one's id (not even the newest's) */
    assert_int_equal(OPS(f)->account_delete(IMPL(f), "bob@x", 9200, &del), MSV_OK);
    msv_account_deleted_clear(&del);
    again = make_account(f, "alice@x");
    assert_int_not_equal(again, b);
    assert_int_not_equal(again, a);
    assert_int_equal(make_device(f, again) > d2, 1);
    /* the new account's leaf is the handle's newest; its tombstone is still found */
    assert_int_equal(OPS(f)->kt_tombstone_latest(IMPL(f), "alice@x", &leaf), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(leaf.leaf, leaf.leaf_len, &entry), MSV_OK);
    assert_true(entry.deleted);
    tomb = leaf.index;
    free(leaf.leaf);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "alice@x", &leaf), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(leaf.leaf, leaf.leaf_len, &entry), MSV_OK);
    assert_false(entry.deleted);
    assert_true(leaf.index > tomb);
    free(leaf.leaf);
    assert_int_equal(OPS(f)->kt_tombstone_latest(IMPL(f), "nobody@x", &leaf), MSV_ERR_NOT_FOUND);
    /* the handle's versions for its owner: its leaves in order, from an index on, at most max */
    {
        struct msv_kt_rec *recs = NULL;
        size_t count = 0;

        assert_int_equal(OPS(f)->kt_handle_read(IMPL(f), "alice@x", 0, 100, &recs, &count), MSV_OK);
        assert_true(count >= 3);
        for (size_t i = 1; i < count; i++)
            assert_true(recs[i].index > recs[i - 1].index);
        for (size_t i = 0; i < count; i++) {
            assert_int_equal(msv_kt_leaf_parse(recs[i].leaf, recs[i].leaf_len, &entry), MSV_OK);
            assert_string_equal(entry.handle, "alice@x");
        }
        {
            int has_tomb = 0;

            for (size_t i = 0; i < count; i++)
                has_tomb |= recs[i].index == tomb;
            assert_true(has_tomb && recs[count - 1].index > tomb);
        }
        msv_kt_recs_free(recs, count);
        assert_int_equal(OPS(f)->kt_handle_read(IMPL(f), "alice@x", tomb, 1, &recs, &count),
                         MSV_OK);
        assert_int_equal(count, 1);
        assert_int_equal(recs[0].index, tomb);
        msv_kt_recs_free(recs, count);
        assert_int_equal(OPS(f)->kt_handle_read(IMPL(f), "nobody@x", 0, 10, &recs, &count), MSV_OK);
        assert_int_equal(count, 0);
        msv_kt_recs_free(recs, count);
    }
}

static void test_codes(void **state)
{
    struct fixture *f = *state;
    uint8_t right[32], wrong[32];

    memset(right, 1, 32);
    memset(wrong, 2, 32);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 0, 3), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", right, 0, 5000), MSV_OK);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", wrong, 100, 3), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 100, 3), MSV_OK);
    /* consumed */
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 100, 3), MSV_ERR_NOT_FOUND);
    /* too many wrong attempts burn the code, even the right one afterwards */
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", right, 0, 5000), MSV_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(OPS(f)->code_take(IMPL(f), "h", wrong, 100, 3), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 100, 3), MSV_ERR_NOT_FOUND);
    /* a burnt code still holds its place until it expires */
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", wrong, 4999, 9000), MSV_ERR_EXISTS);
    /* expired */
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", right, 5000, 9000), MSV_OK);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 9000, 3), MSV_ERR_NOT_FOUND);
    /* a pending code is kept: a second one is refused and the first still works */
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", right, 9000, 20000), MSV_OK);
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", wrong, 9001, 20000), MSV_ERR_EXISTS);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", wrong, 9002, 3), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 9002, 3), MSV_OK);
    /* once it has expired a new one takes its place, with its attempts counted afresh */
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", wrong, 9003, 10000), MSV_OK);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 9004, 3), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->code_put(IMPL(f), "h", right, 10000, 20000), MSV_OK);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", wrong, 10001, 3), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->code_take(IMPL(f), "h", right, 10001, 3), MSV_OK);
}

static void test_devices(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "a"), b = make_account(f, "b");
    uint64_t d1 = make_device(f, a), d2 = make_device(f, a), d3 = make_device(f, b);
    struct msv_device_list list = {0};
    struct msv_device_rec rec;
    uint64_t order[3] = {0};

    /* connections are numbered in the order they came, each above the one before */
    assert_int_equal(OPS(f)->connection_order(IMPL(f), &order[0]), MSV_OK);
    assert_int_equal(OPS(f)->connection_order(IMPL(f), &order[1]), MSV_OK);
    assert_true(order[0] > 0 && order[1] > order[0]);
    assert_int_equal(OPS(f)->devices_of_account(IMPL(f), a, &list), MSV_OK);
    assert_int_equal(list.count, 2);
    assert_int_equal(list.items[0].id, d1);
    assert_int_equal(list.items[1].id, d2);
    assert_int_equal(list.items[0].suite, 3);
    assert_memory_equal(list.items[0].identity, "identity", 8);
    assert_memory_equal(list.items[0].push_token, "token", 5);
    msv_device_list_clear(&list);
    assert_int_equal(OPS(f)->device_get(IMPL(f), d3, &rec), MSV_OK);
    assert_int_equal(rec.account_id, b);
    msv_device_rec_clear(&rec);
    /* an account cannot remove another account's device */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d3), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d2), MSV_OK);
    assert_int_equal(OPS(f)->device_get(IMPL(f), d2, &rec), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->devices_of_account(IMPL(f), a, &list), MSV_OK);
    assert_int_equal(list.count, 1);
    msv_device_list_clear(&list);
    /* the newest device removed: its id is not given out again, even across a reopen */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), b, d3), MSV_OK);
    reopen(f);
    assert_true(make_device(f, a) > d3);
    /* PostgreSQL's numbers are the cluster's, and go on after a restart (a SQLite store's
     * node counts anew: its connections ended with it) */
    assert_int_equal(OPS(f)->connection_order(IMPL(f), &order[2]), MSV_OK);
    assert_true(order[2] > (f->pg ? order[1] : 0));
    if (f->pg) {
        /* at least the clock in microseconds: a database restored from a backup, its sequence
         * put back, still numbers above what it gave before */
        assert_true(order[0] >= (uint64_t)(msv_wall_ms() - 600000) * 1000);
        raw_exec(f, "ALTER SEQUENCE connection_order RESTART WITH 5;");
        reopen(f);
        assert_int_equal(OPS(f)->connection_order(IMPL(f), &order[0]), MSV_OK);
        assert_true(order[0] > order[2]);
    }
}

/* A database from before v3 (device ids could come back) keeps its devices and ids. */
static void test_migration_to_v3(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "a"), d1 = make_device(f, a), d2 = make_device(f, a);
    struct msv_device_rec rec;
    sqlite3 *db = NULL;

    msv_store_close(f->store);
    f->store = NULL;
    /* back to the v2 layout: no AUTOINCREMENT on devices */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(
            db,
            "CREATE TABLE d2 (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, "
            "suite INTEGER NOT NULL, identity BLOB NOT NULL, push_token BLOB NOT NULL, "
            "created_ms BIGINT NOT NULL, approved INTEGER NOT NULL DEFAULT 1);"
            "INSERT INTO d2 SELECT id, account_id, suite, identity, push_token, "
            "created_ms, approved FROM devices;"
            "DROP TABLE devices; ALTER TABLE d2 RENAME TO devices;"
            "DELETE FROM sqlite_sequence WHERE name = 'devices';"
            "DROP TABLE kt_log; DROP TABLE signed_prekeys; DROP TABLE one_time_prekeys;"
            "ALTER TABLE accounts DROP COLUMN suspended;"
            "DROP INDEX blobs_by_owner;"
            "DROP TABLE queue_usage; DROP TRIGGER queue_usage_in;"
            "DROP TRIGGER queue_usage_out; DROP TABLE reports; DROP TABLE invites;"
            "DROP TRIGGER queue_bodies_out; DROP TABLE queue_bodies;"
            "ALTER TABLE queue DROP COLUMN body_id; ALTER TABLE queue DROP COLUMN body_len;"
            "DROP TABLE queue_refusals;"
            "DROP TRIGGER account_seq_up; DROP TABLE account_seq;"
            "DROP TABLE account_handles; DROP TABLE kem_prekeys; DROP TABLE kt_labels;"
            "ALTER TABLE accounts DROP COLUMN username_changed_ms;"
            "DROP TABLE mls_key_packages; DROP TABLE mls_groups; DROP TABLE mls_members;"
            "DROP TABLE mls_claims; DROP TABLE device_approvals;"
            "DROP TABLE mls_commit_log;"
            "DROP INDEX blobs_by_account; ALTER TABLE blobs DROP COLUMN account_id;"
            "DELETE FROM schema_version WHERE version >= 3;",
            NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(msv_store_open_sqlite(f->path, &f->store), MSV_OK);
    assert_int_equal(OPS(f)->device_get(IMPL(f), d1, &rec), MSV_OK);
    assert_int_equal(rec.account_id, a);
    assert_memory_equal(rec.identity, "identity", 8);
    msv_device_rec_clear(&rec);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d2), MSV_OK);
    assert_true(make_device(f, a) > d2);
}

/* The devices of a leaf, as "id,id,..." */
static void leaf_devices(const struct msv_kt_rec *r, const char *handle, char *out, size_t len)
{
    struct msv_kt_entry e;
    size_t o = 0;

    assert_int_equal(msv_kt_leaf_parse(r->leaf, r->leaf_len, &e), MSV_OK);
    assert_string_equal(e.handle, handle);
    out[0] = '\0';
    for (size_t i = 0; i < e.n_devices; i++) {
        o += (size_t)snprintf(out + o, len - o, "%s%llu", i ? "," : "",
                              (unsigned long long)e.devices[i].device_id);
        assert_memory_equal(e.devices[i].identity, "identity", 8);
    }
}

/* A labeler for the tests: version, then the handle; fails while *ctx is set. */
static msv_err fake_labeler(void *ctx, const char *handle, uint32_t version, uint8_t label[32])
{
    if (*(int *)ctx)
        return MSV_ERR_CRYPTO;
    memset(label, 0, 32);
    label[0] = (uint8_t)version;
    snprintf((char *)label + 1, 31, "%s", handle);
    return MSV_OK;
}

/* Checks that every entry of the log has its label: its handle's version n (n-th entry). */
static void assert_labels(struct fixture *f, size_t want)
{
    struct msv_kt_rec *recs = NULL, *labels = NULL;
    size_t n = 0, n_labels = 0;

    assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 100, &recs, &n), MSV_OK);
    assert_int_equal(OPS(f)->kt_labels_read(IMPL(f), 0, 100, &labels, &n_labels), MSV_OK);
    assert_int_equal(n, want);
    assert_int_equal(n_labels, n);
    for (size_t i = 0; i < n; i++) {
        struct msv_kt_entry *e = calloc(1, sizeof(*e));
        unsigned version = 0;

        assert_non_null(e);
        assert_int_equal(msv_kt_leaf_parse(recs[i].leaf, recs[i].leaf_len, e), MSV_OK);
        for (size_t k = 0; k <= i; k++) {
            struct msv_kt_entry *o = calloc(1, sizeof(*o));

            assert_int_equal(msv_kt_leaf_parse(recs[k].leaf, recs[k].leaf_len, o), MSV_OK);
            version += strcmp(o->handle, e->handle) == 0;
            free(o);
        }
        assert_int_equal(labels[i].index, recs[i].index);
        assert_int_equal(labels[i].leaf[0], version);
        assert_string_equal((const char *)labels[i].leaf + 1, e->handle);
        free(e);
    }
    msv_kt_recs_free(recs, n);
    msv_kt_recs_free(labels, n_labels);
}

/*
 * With a labeler set (missived's key directory), every device set appended to the log gets its
 * label in the same transaction; a labeler that fails fails the change, which leaves nothing.
 */
static void test_kt_labels_in_transaction(void **state)
{
    struct fixture *f = *state;
    struct msv_kt_rec *recs = NULL;
    int fail = 0;
    size_t n = 0;
    uint64_t a, b, a1;

    OPS(f)->kt_set_labeler(IMPL(f), fake_labeler, &fail);
    a = make_account(f, "a@x");
    b = make_account(f, "b@x");
    a1 = make_device(f, a);
    (void)make_device(f, b);
    (void)make_device(f, a);
    assert_labels(f, 3);
    fail = 1;
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, a1), MSV_ERR_CRYPTO);
    assert_labels(f, 3);
    fail = 0;
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, a1), MSV_OK);
    assert_labels(f, 4);
    /* without a labeler (missive-admin, or before missived's key directory is open): no label,
     * which the next start computes */
    OPS(f)->kt_set_labeler(IMPL(f), NULL, NULL);
    (void)make_device(f, b);
    assert_int_equal(OPS(f)->kt_labels_read(IMPL(f), 0, 100, &recs, &n), MSV_OK);
    assert_int_equal(n, 4);
    msv_kt_recs_free(recs, n);
}

/* d's identity bytes and suite, for a store's device row, from key k */
static const uint8_t *key_bytes(const struct msv_identity *k, size_t *len)
{
    return msv_public_identity_bytes(msv_identity_public(k), len);
}

/* A device of account with key k, approved at once (approval) or pending (NULL). */
static uint64_t keyed_device(struct fixture *f, uint64_t account, const struct msv_identity *k,
                             int approved, const struct msv_kt_approval *approval)
{
    uint64_t id = 0;
    size_t len = 0;
    const uint8_t *pub = key_bytes(k, &len);

    assert_int_equal(OPS(f)->device_add(IMPL(f), account, MSV_SUITE_MODERN, pub, len, NULL, 0,
                                        approved, 2000, NULL, approval, &id),
                     MSV_OK);
    return id;
}

/* signer's approval of the device of id with key k (kind 2), or its own (kinds 1, 3) */
static void approval_of(const struct msv_identity *signer, uint8_t kind, uint64_t id,
                        const struct msv_identity *k, uint64_t approver,
                        uint8_t sig[MSV_KT_APPROVAL_SIG_MAX], struct msv_kt_approval *out)
{
    uint8_t hash[32];
    size_t len = 0;

    msv_public_identity_hash(msv_identity_public(k), hash);
    assert_int_equal(msv_kt_approval_sign(signer, kind, id, hash, approver, sig, &len), MSV_OK);
    *out = (struct msv_kt_approval){kind, kind == MSV_KT_APPROVED ? approver : 0, sig, len};
}

/* The chains of handle's newest device set; returns its leaf's version byte. */
static int latest_chains(struct fixture *f, const char *handle, struct msv_kt_entry *e,
                         struct msv_kt_devlist *r, struct msv_kt_rec *latest)
{
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), handle, latest), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(latest->leaf, latest->leaf_len, e), MSV_OK);
    assert_int_equal(msv_kt_devlist_check(e, r), MSV_OK);
    return latest->leaf[0];
}

/*
 * Signed device lists (docs/transparency.md): each approved device's approval goes into the
 * log's device sets from the change that approves it on, a removed approver's record stays as
 * a chain record while a listed device's chain names it, and a set with no signed record is a
 * version-1 leaf as before.
 */
static void test_signed_device_sets(void **state)
{
    struct fixture *f = *state;
    static struct msv_kt_entry e;
    struct msv_identity *k[4] = {NULL};
    uint8_t sig[3][MSV_KT_APPROVAL_SIG_MAX];
    struct msv_kt_approval a;
    struct msv_kt_devlist r;
    struct msv_kt_rec latest;
    uint64_t acc = make_account(f, "signed@x"), root, p, q, legacy;

    for (size_t i = 0; i < 4; i++)
        assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &k[i]), MSV_OK);
    approval_of(k[0], MSV_KT_ROOT, 0, k[0], 0, sig[0], &a);
    root = keyed_device(f, acc, k[0], 1, &a);
    assert_int_equal(latest_chains(f, "signed@x", &e, &r, &latest), 6);
    free(latest.leaf);
    assert_int_equal(r.n_signed, 1);
    assert_int_equal(r.root_id, root);
    /* p approved by the root, q by p; then p removed: its record stays for q's chain */
    p = keyed_device(f, acc, k[1], 0, NULL);
    approval_of(k[0], MSV_KT_APPROVED, p, k[1], root, sig[1], &a);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), acc, p, &a), MSV_OK);
    q = keyed_device(f, acc, k[2], 0, NULL);
    approval_of(k[1], MSV_KT_APPROVED, q, k[2], p, sig[2], &a);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), acc, q, &a), MSV_OK);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), acc, p), MSV_OK);
    assert_int_equal(latest_chains(f, "signed@x", &e, &r, &latest), 6);
    assert_int_equal(e.n_devices, 2);
    assert_int_equal(e.n_chain, 1);
    assert_int_equal(e.chain[0].device_id, p);
    assert_int_equal(r.n_signed, 2);
    free(latest.leaf);
    /* the root removed too: q's chain runs through both records */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), acc, root), MSV_OK);
    assert_int_equal(latest_chains(f, "signed@x", &e, &r, &latest), 6);
    assert_int_equal(e.n_chain, 2);
    assert_int_equal(r.n_signed, 1);
    assert_int_equal(r.root_id, root);
    free(latest.leaf);
    /* a device approved without an approval (an older client) is unsigned */
    legacy = keyed_device(f, acc, k[3], 1, NULL);
    assert_int_equal(latest_chains(f, "signed@x", &e, &r, &latest), 6);
    assert_int_equal(r.n_unsigned, 1);
    assert_int_equal(r.end[1], legacy);
    free(latest.leaf);
    /* q removed: nothing signed is left, a version-1 set; the records no chain names are
     * forgotten, so signing again starts from the unsigned device */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), acc, q), MSV_OK);
    assert_int_equal(latest_chains(f, "signed@x", &e, &r, &latest), 1);
    free(latest.leaf);
    p = keyed_device(f, acc, k[1], 0, NULL);
    approval_of(k[3], MSV_KT_APPROVED, p, k[1], legacy, sig[1], &a);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), acc, p, &a), MSV_OK);
    assert_int_equal(latest_chains(f, "signed@x", &e, &r, &latest), 6);
    assert_int_equal(e.n_chain, 0);
    assert_int_equal(r.n_unsigned, 2);
    assert_int_equal(r.end[1], legacy);
    free(latest.leaf);
    for (size_t i = 0; i < 4; i++)
        msv_identity_free(k[i]);
}

/*
 * An account has at most MSV_STORE_PENDING_MAX devices waiting for approval: one more is refused
 * whole (each pending device takes a notice of every change of the account's devices, and reads
 * none until approved: without a bound, one account linking devices without end filled the disk
 * with notices); approving or removing one makes room.
 */
static void test_pending_devices_bounded(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "pending@x"), first = 0, id = 0;

    (void)make_device(f, a);
    for (int i = 0; i < MSV_STORE_PENDING_MAX; i++)
        assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8, NULL, 0,
                                            0, 3000, NULL, NULL, i == 0 ? &first : &id),
                         MSV_OK);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM devices"), 1 + MSV_STORE_PENDING_MAX);
    assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8, NULL, 0, 0,
                                        3000, NULL, NULL, &id),
                     MSV_ERR_TOO_BIG);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM devices"), 1 + MSV_STORE_PENDING_MAX);
    /* another account is not held back by this one's */
    (void)make_device(f, make_account(f, "other@x"));
    /* approved ones do not count */
    assert_int_equal(OPS(f)->device_approve(IMPL(f), a, first, NULL), MSV_OK);
    assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8, NULL, 0, 0,
                                        3000, NULL, NULL, &id),
                     MSV_OK);
    assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8, NULL, 0, 0,
                                        3000, NULL, NULL, &first),
                     MSV_ERR_TOO_BIG);
    /* nor do removed ones */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, id), MSV_OK);
    assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8, NULL, 0, 0,
                                        3000, NULL, NULL, &id),
                     MSV_OK);
}

/*
 * missived checks ApproveDevice.chain_approval against the approver's key before the store's
 * transaction; a removal of that approver committing in between must not leave the new
 * device approved by a device that is gone (its record forgotten: no chain). The store
 * refuses the approval (MSV_ERR_AUTH), the device still pending and the log unchanged.
 */
static void test_approve_races_removal(void **state)
{
    struct fixture *f = *state;
    static struct msv_kt_entry e;
    struct msv_identity *k[3] = {NULL};
    uint8_t sig[3][MSV_KT_APPROVAL_SIG_MAX];
    struct msv_kt_approval a;
    struct msv_kt_devlist r;
    struct msv_kt_rec latest;
    struct msv_device_rec dev = {0};
    uint64_t acc = make_account(f, "race@x"), root, p, x, before;
    msv_err err;

    for (size_t i = 0; i < 3; i++)
        assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &k[i]), MSV_OK);
    approval_of(k[0], MSV_KT_ROOT, 0, k[0], 0, sig[0], &a);
    root = keyed_device(f, acc, k[0], 1, &a);
    p = keyed_device(f, acc, k[1], 0, NULL);
    approval_of(k[0], MSV_KT_APPROVED, p, k[1], root, sig[1], &a);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), acc, p, &a), MSV_OK);
    x = keyed_device(f, acc, k[2], 0, NULL);
    /* the handler has checked p's approval of x; then p is removed */
    approval_of(k[1], MSV_KT_APPROVED, x, k[2], p, sig[2], &a);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), acc, p), MSV_OK);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "race@x", &latest), MSV_OK);
    before = latest.index;
    free(latest.leaf);
    err = OPS(f)->device_approve(IMPL(f), acc, x, &a);
    assert_int_equal(err, MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->device_get(IMPL(f), x, &dev), MSV_OK);
    assert_int_equal(dev.approved, 0);
    msv_device_rec_clear(&dev);
    assert_int_equal(latest_chains(f, "race@x", &e, &r, &latest), 6);
    assert_int_equal(latest.index, before);
    assert_int_equal(r.n_unapproved, 0);
    free(latest.leaf);
    for (size_t i = 0; i < 3; i++)
        msv_identity_free(k[i]);
}

/*
 * A user who approves a new phone with the old one and then removes the old one, again and
 * again: each removed phone's record stays, a chain record on the new phone's chain. The
 * approval that would make the set hold more than MSV_KT_APPROVED_SET_MAX records is refused
 * (MSV_ERR_TOO_BIG, the phone still pending), so every removal fits in a set: the last phone
 * and the pending one can still be removed.
 */
static void test_chain_growth_removal_fits(void **state)
{
    struct fixture *f = *state;
    static struct msv_identity *k[MSV_KT_APPROVED_SET_MAX + 1];
    static uint8_t sig[MSV_KT_APPROVED_SET_MAX + 1][MSV_KT_APPROVAL_SIG_MAX];
    static uint64_t id[MSV_KT_APPROVED_SET_MAX + 1];
    static struct msv_kt_entry e;
    struct msv_kt_approval a;
    struct msv_kt_devlist r;
    struct msv_kt_rec latest;
    struct msv_device_rec dev = {0};
    uint64_t acc = make_account(f, "rotate@x");
    msv_err err = MSV_OK;
    size_t i;

    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &k[0]), MSV_OK);
    approval_of(k[0], MSV_KT_ROOT, 0, k[0], 0, sig[0], &a);
    id[0] = keyed_device(f, acc, k[0], 1, &a);
    for (i = 1; i <= MSV_KT_APPROVED_SET_MAX; i++) {
        assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &k[i]), MSV_OK);
        id[i] = keyed_device(f, acc, k[i], 0, NULL);
        approval_of(k[i - 1], MSV_KT_APPROVED, id[i], k[i], id[i - 1], sig[i], &a);
        err = OPS(f)->device_approve(IMPL(f), acc, id[i], &a);
        if (err != MSV_OK)
            break;
        assert_int_equal(OPS(f)->device_remove(IMPL(f), acc, id[i - 1]), MSV_OK);
    }
    /* phone i - 1 listed behind i - 1 chain records; phone i would make i + 1 records */
    assert_int_equal(err, MSV_ERR_TOO_BIG);
    assert_int_equal(i, MSV_KT_APPROVED_SET_MAX);
    assert_int_equal(OPS(f)->device_get(IMPL(f), id[i], &dev), MSV_OK);
    assert_int_equal(dev.approved, 0);
    msv_device_rec_clear(&dev);
    assert_int_equal(latest_chains(f, "rotate@x", &e, &r, &latest), 6);
    assert_int_equal(e.n_devices, 1);
    assert_int_equal(e.n_chain, MSV_KT_DEVICES_MAX);
    assert_int_equal(r.n_signed, 1);
    free(latest.leaf);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), acc, id[i]), MSV_OK);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), acc, id[i - 1]), MSV_OK);
    for (size_t j = 0; j <= i; j++)
        msv_identity_free(k[j]);
}

/*
 * Two password recoveries of an account with no device left, at once: both requests saw no
 * device, and both ask for their device approved by itself. The store decides in its
 * transaction: the first is the set's root, the second waits as pending with no approval kept,
 * so the set has one root and checks out.
 */
static void test_two_recoveries_one_root(void **state)
{
    struct fixture *f = *state;
    static struct msv_kt_entry e;
    struct msv_identity *k[2] = {NULL};
    uint8_t sig[2][MSV_KT_APPROVAL_SIG_MAX];
    struct msv_kt_approval a[2];
    struct msv_kt_devlist r;
    struct msv_kt_rec latest;
    struct msv_device_rec dev = {0};
    uint64_t acc = make_account(f, "twice@x"), first, second;
    msv_err err;

    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &k[i]), MSV_OK);
        approval_of(k[i], MSV_KT_RECOVERY, 0, k[i], 0, sig[i], &a[i]);
    }
    /* both requests saw no device: both ask for approved, each with its recovery record */
    first = keyed_device(f, acc, k[0], 1, &a[0]);
    second = keyed_device(f, acc, k[1], 1, &a[1]);
    assert_int_equal(OPS(f)->device_get(IMPL(f), first, &dev), MSV_OK);
    assert_int_equal(dev.approved, 1);
    msv_device_rec_clear(&dev);
    assert_int_equal(OPS(f)->device_get(IMPL(f), second, &dev), MSV_OK);
    assert_int_equal(dev.approved, 0);
    msv_device_rec_clear(&dev);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "twice@x", &latest), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(latest.leaf, latest.leaf_len, &e), MSV_OK);
    assert_int_equal(latest.leaf[0], 6);
    err = msv_kt_devlist_check(&e, &r);
    free(latest.leaf);
    for (size_t i = 0; i < 2; i++)
        msv_identity_free(k[i]);
    assert_int_equal(err, MSV_OK);
    assert_int_equal(e.n_devices, 1);
    assert_int_equal(e.devices[0].device_id, first);
}

/*
 * Every change to a handle's approved devices appends the whole set to the
 * log, in the same transaction; pending devices are not in it; accounts
 * from before the log get their first leaf when the store opens.
 */
static void test_transparency_log(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "a@x"), b = make_account(f, "b@x"), a1 = make_device(f, a),
             b1 = make_device(f, b), pending = 0, a2;
    struct msv_kt_rec latest, *recs = NULL;
    char want[64], got[64];
    size_t n = 0;

    assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8, NULL, 0, 0,
                                        3000, NULL, NULL, &pending),
                     MSV_OK);
    assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 100, &recs, &n), MSV_OK);
    assert_int_equal(n, 2); /* a1, b1; the pending device changed nothing */
    msv_kt_recs_free(recs, n);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), a, pending, NULL), MSV_OK);
    a2 = make_device(f, a);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, a1), MSV_OK);
    assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 100, &recs, &n), MSV_OK);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(recs[i].index, i);
    snprintf(want, sizeof(want), "%llu,%llu", (unsigned long long)a1, (unsigned long long)pending);
    leaf_devices(&recs[2], "a@x", got, sizeof(got));
    assert_string_equal(got, want);
    msv_kt_recs_free(recs, n);
    assert_int_equal(OPS(f)->kt_read(IMPL(f), 3, 1, &recs, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].index, 3);
    msv_kt_recs_free(recs, n);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "a@x", &latest), MSV_OK);
    assert_int_equal(latest.index, 4);
    snprintf(want, sizeof(want), "%llu,%llu", (unsigned long long)pending, (unsigned long long)a2);
    leaf_devices(&latest, "a@x", got, sizeof(got));
    assert_string_equal(got, want);
    free(latest.leaf);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "b@x", &latest), MSV_OK);
    snprintf(want, sizeof(want), "%llu", (unsigned long long)b1);
    leaf_devices(&latest, "b@x", got, sizeof(got));
    assert_string_equal(got, want);
    free(latest.leaf);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "nobody@x", &latest), MSV_ERR_NOT_FOUND);
    /* a failed change leaves no leaf */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), b, a2), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 100, &recs, &n), MSV_OK);
    assert_int_equal(n, 5);
    msv_kt_recs_free(recs, n);
    /* a leaf of no handle (a key rotation) goes in only where the log ends */
    assert_int_equal(OPS(f)->kt_append(IMPL(f), 4, (const uint8_t *)"rotation", 8), MSV_ERR_EXISTS);
    assert_int_equal(OPS(f)->kt_append(IMPL(f), 6, (const uint8_t *)"rotation", 8), MSV_ERR_EXISTS);
    assert_int_equal(OPS(f)->kt_append(IMPL(f), 5, (const uint8_t *)"rotation", 8), MSV_OK);
    assert_int_equal(OPS(f)->kt_append(IMPL(f), 5, (const uint8_t *)"again", 5), MSV_ERR_EXISTS);
    assert_int_equal(OPS(f)->kt_read(IMPL(f), 5, 100, &recs, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].index, 5);
    assert_int_equal(recs[0].leaf_len, 8);
    assert_memory_equal(recs[0].leaf, "rotation", 8);
    msv_kt_recs_free(recs, n);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "a@x", &latest), MSV_OK);
    assert_int_equal(latest.index, 4); /* no handle's entry */
    free(latest.leaf);
    /* a database from before the log: its accounts are logged on opening */
    raw_exec(f, "DELETE FROM kt_log;");
    reopen(f);
    assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 100, &recs, &n), MSV_OK);
    assert_int_equal(n, 2);
    msv_kt_recs_free(recs, n);
    assert_int_equal(OPS(f)->kt_latest(IMPL(f), "a@x", &latest), MSV_OK);
    leaf_devices(&latest, "a@x", got, sizeof(got));
    snprintf(want, sizeof(want), "%llu,%llu", (unsigned long long)pending, (unsigned long long)a2);
    assert_string_equal(got, want);
    free(latest.leaf);
    /* a leaf holds at most 64 devices: the 65th is refused whole, no device and no leaf */
    {
        uint64_t c = make_account(f, "c@x"), extra = 0;
        struct msv_device_list list = {0};

        for (int i = 0; i < MSV_KT_DEVICES_MAX; i++)
            (void)make_device(f, c);
        assert_int_equal(OPS(f)->device_add(IMPL(f), c, 3, (const uint8_t *)"identity", 8, NULL, 0,
                                            1, 4000, NULL, NULL, &extra),
                         MSV_ERR_TOO_BIG);
        assert_int_equal(OPS(f)->devices_of_account(IMPL(f), c, &list), MSV_OK);
        assert_int_equal(list.count, MSV_KT_DEVICES_MAX);
        msv_device_list_clear(&list);
        assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 1000, &recs, &n), MSV_OK);
        assert_int_equal(n, 2 + MSV_KT_DEVICES_MAX); /* the two logged on opening, and c's */
        msv_kt_recs_free(recs, n);
    }
}

static void assert_handles(struct fixture *f, uint64_t account, const char *want)
{
    char **h = NULL, got[256] = "";
    size_t n = 0, o = 0;

    assert_int_equal(OPS(f)->handles_of_account(IMPL(f), account, &h, &n), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%s", i ? "," : "", h[i]);
        free(h[i]);
    }
    free(h);
    assert_string_equal(got, want);
}

/* 1 if handle's newest leaf is its tombstone; the devices it lists otherwise go to devs. */
static int newest_leaf(struct fixture *f, const char *handle, char *devs, size_t len)
{
    struct msv_kt_rec leaf = {0};
    struct msv_kt_entry e;
    int deleted;

    assert_int_equal(OPS(f)->kt_latest(IMPL(f), handle, &leaf), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(leaf.leaf, leaf.leaf_len, &e), MSV_OK);
    deleted = e.deleted;
    if (!deleted)
        leaf_devices(&leaf, handle, devs, len);
    free(leaf.leaf);
    return deleted;
}

/*
 * The username's change stamp: at most one change per interval, checked and set at once; a
 * stamp put back (interval < 0) restores the one before; an unknown account is not found.
 */
static void test_username_stamp(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "u@x");
    int64_t last = -1;

    assert_int_equal(OPS(f)->username_stamp(IMPL(f), a, 100000, 50000, &last), MSV_OK);
    assert_int_equal(last, 0);
    assert_int_equal(OPS(f)->username_stamp(IMPL(f), a, 120000, 50000, &last), MSV_ERR_AGAIN);
    assert_int_equal(last, 100000);
    assert_int_equal(OPS(f)->username_stamp(IMPL(f), a, 150000, 50000, &last), MSV_OK);
    assert_int_equal(last, 100000);
    assert_int_equal(OPS(f)->username_stamp(IMPL(f), a, 100000, -1, &last), MSV_OK);
    assert_int_equal(OPS(f)->username_stamp(IMPL(f), a, 149999, 50000, &last), MSV_ERR_AGAIN);
    assert_int_equal(OPS(f)->username_stamp(IMPL(f), a + 1000, 1, 0, &last), MSV_ERR_NOT_FOUND);
}

/*
 * Several handles of one account: each finds the account, each has its leaf of the account's
 * devices, a device change writes every handle's leaf, a removed handle gets its tombstone,
 * the last one stays, a taken one is refused, the cap holds; deletion tombstones them all.
 */
static void test_handles(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "a@x"), b = make_account(f, "b@x"), d1 = make_device(f, a), d2,
             got = 0;
    struct msv_account_deleted del = {0};
    char devs[64], want[64];

    assert_handles(f, a, "a@x");
    assert_int_equal(OPS(f)->handle_add(IMPL(f), a, "+15550001", 3, 5000), MSV_OK);
    assert_int_equal(OPS(f)->handle_add(IMPL(f), a, "a2@x", 3, 5001), MSV_OK);
    assert_handles(f, a, "a@x,+15550001,a2@x");
    assert_int_equal(OPS(f)->account_get(IMPL(f), "+15550001", &got, NULL), MSV_OK);
    assert_int_equal(got, a);
    /* operators and reports find the account by any of its handles */
    {
        uint64_t rid = 0;
        int suspended = 0;

        assert_int_equal(OPS(f)->report_add(IMPL(f), b, "+15550001", "spam", "", 1000, 0, 5, &rid),
                         MSV_OK);
        assert_int_equal(OPS(f)->account_set_suspended(IMPL(f), "a2@x", 1), MSV_OK);
        assert_int_equal(OPS(f)->account_suspended(IMPL(f), a, &suspended), MSV_OK);
        assert_true(suspended);
        assert_int_equal(OPS(f)->account_set_suspended(IMPL(f), "+15550001", 0), MSV_OK);
    }
    /* the new handle's leaf lists the account's devices at once */
    snprintf(want, sizeof(want), "%llu", (unsigned long long)d1);
    assert_false(newest_leaf(f, "+15550001", devs, sizeof(devs)));
    assert_string_equal(devs, want);
    /* taken (by this account or another), over the cap: refused, nothing changed */
    assert_int_equal(OPS(f)->handle_add(IMPL(f), a, "b@x", 5, 5002), MSV_ERR_EXISTS);
    assert_int_equal(OPS(f)->handle_add(IMPL(f), b, "a2@x", 5, 5002), MSV_ERR_EXISTS);
    assert_int_equal(OPS(f)->handle_add(IMPL(f), a, "a3@x", 3, 5002), MSV_ERR_TOO_BIG);
    assert_int_equal(OPS(f)->account_get(IMPL(f), "a3@x", &got, NULL), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->account_create(IMPL(f), "+15550001", "$argon2id$x", 1, &got),
                     MSV_ERR_EXISTS);
    /* a device change writes a leaf for every handle */
    d2 = make_device(f, a);
    snprintf(want, sizeof(want), "%llu,%llu", (unsigned long long)d1, (unsigned long long)d2);
    assert_false(newest_leaf(f, "a@x", devs, sizeof(devs)));
    assert_string_equal(devs, want);
    assert_false(newest_leaf(f, "a2@x", devs, sizeof(devs)));
    assert_string_equal(devs, want);
    /* removing: not the account's, then the first one (the next oldest takes its place) */
    assert_int_equal(OPS(f)->handle_remove(IMPL(f), b, "a@x", 6000), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->handle_remove(IMPL(f), a, "a@x", 6000), MSV_OK);
    assert_handles(f, a, "+15550001,a2@x");
    assert_true(newest_leaf(f, "a@x", devs, sizeof(devs)));
    assert_int_equal(OPS(f)->account_get(IMPL(f), "a@x", &got, NULL), MSV_ERR_NOT_FOUND);
    {
        char *first = NULL;

        assert_int_equal(OPS(f)->account_handle(IMPL(f), a, &first), MSV_OK);
        assert_string_equal(first, "+15550001");
        free(first);
    }
    assert_int_equal(OPS(f)->handle_remove(IMPL(f), a, "a2@x", 6001), MSV_OK);
    /* never the last */
    assert_int_equal(OPS(f)->handle_remove(IMPL(f), a, "+15550001", 6002), MSV_ERR_INVALID);
    assert_handles(f, a, "+15550001");
    /* a removed handle is free: another account may prove it */
    assert_int_equal(OPS(f)->handle_add(IMPL(f), b, "a@x", 3, 6003), MSV_OK);
    assert_false(newest_leaf(f, "a@x", devs, sizeof(devs)));
    /* deleting the account tombstones every handle it has */
    assert_int_equal(OPS(f)->handle_add(IMPL(f), a, "a4@x", 3, 6004), MSV_OK);
    assert_int_equal(OPS(f)->account_delete(IMPL(f), "a4@x", 7000, &del), MSV_OK);
    assert_int_equal(del.account_id, a);
    msv_account_deleted_clear(&del);
    assert_true(newest_leaf(f, "+15550001", devs, sizeof(devs)));
    assert_true(newest_leaf(f, "a4@x", devs, sizeof(devs)));
    assert_int_equal(OPS(f)->account_get(IMPL(f), "+15550001", &got, NULL), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->handles_of_account(IMPL(f), a, &(char **){NULL}, &(size_t){0}),
                     MSV_ERR_NOT_FOUND);
    assert_handles(f, b, "b@x,a@x");
}

static void test_device_approval(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "a"), b = make_account(f, "b"), d = 0;
    struct msv_device_rec rec;

    assert_int_equal(
        OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"id", 2, NULL, 0, 0, 10, NULL, NULL, &d),
        MSV_OK);
    assert_int_equal(OPS(f)->device_get(IMPL(f), d, &rec), MSV_OK);
    assert_int_equal(rec.approved, 0);
    msv_device_rec_clear(&rec);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), b, d, NULL), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), a, d, NULL), MSV_OK);
    assert_int_equal(OPS(f)->device_approve(IMPL(f), a, d, NULL), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->device_get(IMPL(f), d, &rec), MSV_OK);
    assert_int_equal(rec.approved, 1);
    msv_device_rec_clear(&rec);
}

static void test_queue(void **state)
{
    struct fixture *f = *state;
    uint64_t ids[5], acked[2];
    struct msv_queue_in in[5];
    struct msv_queue_rec *recs = NULL;
    size_t n = 0, deleted = 0, expired = 0;
    uint64_t depth = 0, last = 99;
    char body[5][16];

    for (int i = 0; i < 5; i++) {
        snprintf(body[i], sizeof(body[i]), "msg-%d", i);
        in[i] = (struct msv_queue_in){.device_id = i < 3 ? 10 : 20,
                                      .sender_device = 7,
                                      .sender_handle = "alice",
                                      .suite = 3,
                                      .ciphertext = (const uint8_t *)body[i],
                                      .ciphertext_len = 5};
    }
    assert_int_equal(OPS(f)->queue_put(IMPL(f), in, 5, 1000, 9000, ids), MSV_OK);
    for (int i = 1; i < 5; i++)
        assert_true(ids[i] > ids[i - 1]);
    assert_int_equal(OPS(f)->queue_depth(IMPL(f), &depth), MSV_OK);
    assert_int_equal(depth, 5);
    /* the last id waiting for a device (a QueueSync's end), 0 for none */
    assert_int_equal(OPS(f)->queue_last_id(IMPL(f), 10, 2000, &last), MSV_OK);
    assert_int_equal(last, ids[2]);
    assert_int_equal(OPS(f)->queue_last_id(IMPL(f), 20, 2000, &last), MSV_OK);
    assert_int_equal(last, ids[4]);
    assert_int_equal(OPS(f)->queue_last_id(IMPL(f), 30, 2000, &last), MSV_OK);
    assert_int_equal(last, 0);
    assert_int_equal(OPS(f)->queue_last_id(IMPL(f), 10, 9000, &last), MSV_OK);
    assert_int_equal(last, 0); /* expired: never delivered */

    /* in order, paged */
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 10, 0, 2000, 2, &recs, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(recs[0].id, ids[0]);
    assert_memory_equal(recs[1].ciphertext, "msg-1", 5);
    assert_string_equal(recs[1].sender_handle, "alice");
    assert_int_equal(recs[1].enqueued_ms, 1000);
    msv_queue_recs_free(recs, n);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 10, ids[1], 2000, 10, &recs, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].id, ids[2]);
    msv_queue_recs_free(recs, n);

    /* a device can only acknowledge its own envelopes */
    acked[0] = ids[0];
    acked[1] = ids[3];
    assert_int_equal(OPS(f)->queue_ack(IMPL(f), 10, acked, 2, &deleted), MSV_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(OPS(f)->queue_ack(IMPL(f), 10, acked, 2, &deleted), MSV_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 20, 0, 2000, 10, &recs, &n), MSV_OK);
    assert_int_equal(n, 2);
    msv_queue_recs_free(recs, n);

    /* expired envelopes are not delivered, then swept */
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 20, 0, 9000, 10, &recs, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_queue_recs_free(recs, n);
    assert_int_equal(OPS(f)->queue_expire(IMPL(f), 8999, &expired), MSV_OK);
    assert_int_equal(expired, 0);
    assert_int_equal(OPS(f)->queue_expire(IMPL(f), 9000, &expired), MSV_OK);
    assert_int_equal(expired, 4);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 10, 0, 0, 0, &recs, &n), MSV_ERR_INVALID);
    /* with the queue empty, a new envelope still gets a larger id than any before */
    assert_int_equal(OPS(f)->queue_depth(IMPL(f), &depth), MSV_OK);
    assert_int_equal(depth, 0);
    assert_int_equal(OPS(f)->queue_put(IMPL(f), in, 1, 1000, 99999, acked), MSV_OK);
    assert_true(acked[0] > ids[4]);
}

/*
 * An envelope may carry its own expiry (a disappearing message's copies):
 * from then it is never fetched, and the sweep deletes it, while the others
 * of the same put keep the put's expiry. Through queue_commit too.
 */
static void test_queue_item_expiry(void **state)
{
    struct fixture *f = *state;
    struct msv_queue_in in[3];
    struct msv_queue_rec *recs = NULL;
    struct msv_queue_read reads[1] = {{.device_id = 30, .limit = 10}};
    uint64_t ids[3];
    size_t n = 0, expired = 0;

    raw_devices(f, (const uint64_t[]){30}, 1);
    for (int i = 0; i < 3; i++)
        in[i] = (struct msv_queue_in){.device_id = 30,
                                      .sender_device = 7,
                                      .sender_handle = "alice",
                                      .suite = 3,
                                      .ciphertext = (const uint8_t *)"vanish",
                                      .ciphertext_len = 6,
                                      .expires_ms = i == 1 ? 5000 : 0};
    assert_int_equal(OPS(f)->queue_put(IMPL(f), in, 2, 1000, 90000, ids), MSV_OK);
    assert_int_equal(OPS(f)->queue_commit(IMPL(f), in + 1, 1, 1000, 90000, ids + 2, NULL, 0),
                     MSV_OK);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 30, 0, 4999, 10, &recs, &n), MSV_OK);
    assert_int_equal(n, 3);
    msv_queue_recs_free(recs, n);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 30, 0, 5000, 10, &recs, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].id, ids[0]);
    msv_queue_recs_free(recs, n);
    assert_int_equal(OPS(f)->queue_fetch_many(IMPL(f), reads, 1, 5000), MSV_OK);
    assert_int_equal(reads[0].count, 1);
    msv_queue_recs_free(reads[0].recs, reads[0].count);
    assert_int_equal(OPS(f)->queue_expire(IMPL(f), 5000, &expired), MSV_OK);
    assert_int_equal(expired, 2);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 30, 0, 1000, 10, &recs, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].id, ids[0]);
    msv_queue_recs_free(recs, n);
}

/* The relay's group commit: new envelopes and acknowledgements in one transaction. */
/* Several devices' reads at once give what each read alone gives. */
static void test_queue_fetch_many(void **state)
{
    struct fixture *f = *state;
    uint64_t ids[6];
    struct msv_queue_in in[6];
    const uint64_t devs[6] = {10, 20, 10, 30, 10, 20};
    struct msv_queue_read reads[4] = {
        {.device_id = 10, .after_id = 0, .limit = 2},
        {.device_id = 20, .after_id = 0, .limit = 64},
        {.device_id = 40, .after_id = 0, .limit = 64}, /* nothing queued */
        {.device_id = 10, .after_id = 0, .limit = 64}, /* set below: after the first */
    };

    for (int i = 0; i < 6; i++)
        in[i] = (struct msv_queue_in){.device_id = devs[i],
                                      .sender_device = 7,
                                      .sender_handle = i == 3 ? "" : "alice",
                                      .suite = 3,
                                      .ciphertext = (const uint8_t *)"abcdef" + i,
                                      .ciphertext_len = 1};
    assert_int_equal(OPS(f)->queue_put(IMPL(f), in, 6, 1000, 9000, ids), MSV_OK);
    reads[3].after_id = ids[0];
    assert_int_equal(OPS(f)->queue_fetch_many(IMPL(f), reads, 4, 2000), MSV_OK);
    assert_int_equal(reads[0].count, 2);
    assert_int_equal(reads[0].recs[0].id, ids[0]);
    assert_int_equal(reads[0].recs[1].id, ids[2]);
    assert_int_equal(reads[1].count, 2);
    assert_int_equal(reads[1].recs[0].id, ids[1]);
    assert_int_equal(reads[1].recs[1].id, ids[5]);
    assert_memory_equal(reads[1].recs[1].ciphertext, "f", 1);
    assert_string_equal(reads[1].recs[1].sender_handle, "alice");
    assert_int_equal(reads[1].recs[1].device_id, 20);
    assert_int_equal(reads[2].count, 0);
    assert_int_equal(reads[3].count, 2);
    assert_int_equal(reads[3].recs[0].id, ids[2]);
    assert_int_equal(reads[3].recs[1].id, ids[4]);
    for (int i = 0; i < 4; i++)
        msv_queue_recs_free(reads[i].recs, reads[i].count);
    /* expired envelopes are not read; a read of nothing is no error */
    assert_int_equal(OPS(f)->queue_fetch_many(IMPL(f), reads, 1, 9000), MSV_OK);
    assert_int_equal(reads[0].count, 0);
    msv_queue_recs_free(reads[0].recs, 0);
    assert_int_equal(OPS(f)->queue_fetch_many(IMPL(f), reads, 0, 2000), MSV_OK);
    reads[1].limit = 0;
    assert_int_equal(OPS(f)->queue_fetch_many(IMPL(f), reads, 2, 2000), MSV_ERR_INVALID);
    assert_null(reads[0].recs);
    assert_null(reads[1].recs);
}

static void test_queue_commit(void **state)
{
    struct fixture *f = *state;
    struct msv_queue_in in[2];
    uint64_t first[2], next[2], depth = 0, ids10[2], ids20[1];
    struct msv_queue_ack acks[2];
    struct msv_queue_rec *recs = NULL;
    size_t n = 0;

    raw_devices(f, (const uint64_t[]){10, 20}, 2);
    for (int i = 0; i < 2; i++)
        in[i] = (struct msv_queue_in){.device_id = i == 0 ? 10 : 20,
                                      .sender_device = 7,
                                      .sender_handle = "alice",
                                      .suite = 3,
                                      .ciphertext = (const uint8_t *)"hello",
                                      .ciphertext_len = 5};
    assert_int_equal(OPS(f)->queue_commit(IMPL(f), in, 2, 1000, 9000, first, NULL, 0), MSV_OK);
    /* device 10 acknowledges its envelope and claims device 20's; device 20 acknowledges
     * its own; two more arrive in the same commit */
    ids10[0] = first[0];
    ids10[1] = first[1];
    ids20[0] = first[1];
    acks[0] = (struct msv_queue_ack){.device_id = 10, .ids = ids10, .n = 2, .deleted = 99};
    acks[1] = (struct msv_queue_ack){.device_id = 20, .ids = ids20, .n = 1, .deleted = 99};
    assert_int_equal(OPS(f)->queue_commit(IMPL(f), in, 2, 1000, 9000, next, acks, 2), MSV_OK);
    assert_int_equal(acks[0].deleted, 1);
    assert_int_equal(acks[1].deleted, 1);
    assert_true(next[0] > first[1] && next[1] > next[0]);
    assert_int_equal(OPS(f)->queue_depth(IMPL(f), &depth), MSV_OK);
    assert_int_equal(depth, 2);
    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), 10, 0, 2000, 10, &recs, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].id, next[0]);
    msv_queue_recs_free(recs, n);
    /* acknowledgements alone */
    acks[0] = (struct msv_queue_ack){.device_id = 10, .ids = next, .n = 1};
    assert_int_equal(OPS(f)->queue_commit(IMPL(f), NULL, 0, 1000, 9000, NULL, acks, 1), MSV_OK);
    assert_int_equal(acks[0].deleted, 1);
    assert_int_equal(OPS(f)->queue_depth(IMPL(f), &depth), MSV_OK);
    assert_int_equal(depth, 1);
}

static void test_device_removal_drops_queue(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "q"), d = make_device(f, a), id = 0, depth = 0;
    struct msv_queue_in in = {.device_id = d,
                              .sender_device = 1,
                              .sender_handle = "x",
                              .suite = 3,
                              .ciphertext = (const uint8_t *)"c",
                              .ciphertext_len = 1};

    assert_int_equal(OPS(f)->queue_put(IMPL(f), &in, 1, 0, 100, &id), MSV_OK);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d), MSV_OK);
    assert_int_equal(OPS(f)->queue_depth(IMPL(f), &depth), MSV_OK);
    assert_int_equal(depth, 0);
}

/* What queue_usage says of device d equals what is queued for it. */
static void assert_usage(struct fixture *f, uint64_t d, uint64_t envelopes, uint64_t bytes)
{
    struct msv_queue_usage u = {.device_id = d};

    assert_int_equal(OPS(f)->queue_usage(IMPL(f), &u, 1), MSV_OK);
    assert_int_equal(u.envelopes, envelopes);
    assert_int_equal(u.bytes, bytes);
}

/*
 * The per-device queue counters follow every path that adds or takes envelopes: put, commit
 * (with acknowledgements), acknowledgement, expiry and device removal; and reading them does
 * not scan the queue (SQLite: its CPU time is measured in this process).
 */
/* Refused sends are counted per device and handed out once. */
static void test_queue_refusals(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "r"), d = make_device(f, a), e = make_device(f, a), n = 99;

    assert_int_equal(OPS(f)->queue_refusal_take(IMPL(f), d, &n), MSV_OK);
    assert_int_equal(n, 0);
    assert_int_equal(OPS(f)->queue_refusal_add(IMPL(f), &(uint64_t){d}, 1), MSV_OK);
    assert_int_equal(OPS(f)->queue_refusal_add(IMPL(f), &(uint64_t){d}, 1), MSV_OK);
    assert_int_equal(OPS(f)->queue_refusal_add(IMPL(f), &(uint64_t){e}, 1), MSV_OK);
    assert_int_equal(OPS(f)->queue_refusal_take(IMPL(f), d, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(OPS(f)->queue_refusal_take(IMPL(f), d, &n), MSV_OK);
    assert_int_equal(n, 0);
    /* several devices at once (an MLS send that left them out), in one transaction */
    assert_int_equal(OPS(f)->queue_refusal_add(IMPL(f), (const uint64_t[]){d, e}, 2), MSV_OK);
    assert_int_equal(OPS(f)->queue_refusal_take(IMPL(f), d, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(OPS(f)->queue_refusal_take(IMPL(f), e, &n), MSV_OK);
    assert_int_equal(n, 2);
}

struct faults {
    int n[4];
    char state[6], message[256];
};

static void keep_fault(void *ctx, enum msv_store_fault kind, const char *sqlstate,
                       const char *message)
{
    struct faults *r = ctx;

    r->n[kind]++;
    snprintf(r->state, sizeof(r->state), "%s", sqlstate);
    snprintf(r->message, sizeof(r->message), "%s", message);
}

/* An envelope put while the next `times` inserts into the queue fail with SQLSTATE state (a
 * sequence counts them: it does not roll back with the failed transaction). */
static msv_err put_with_fault(struct fixture *f, const char *state, int times)
{
    struct msv_queue_in in = {.device_id = 5,
                              .sender_device = 7,
                              .sender_handle = "alice",
                              .suite = 3,
                              .ciphertext = (const uint8_t *)"x",
                              .ciphertext_len = 1};
    uint64_t id = 0;
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT setval('fault_seq', 1, false); DELETE FROM fault_plan;"
             " INSERT INTO fault_plan VALUES ('%s', %d);",
             state, times);
    raw_exec(f, sql);
    return OPS(f)->queue_put(IMPL(f), &in, 1, 1000, 9000, &id);
}

/*
 * PostgreSQL's failures are told by kind with their SQLSTATE and words (the server logs and
 * counts them): a serialization failure or a deadlock runs the transaction again, up to three
 * tries, so two of them in a row do not fail the enqueue; a disk full, a shutdown and an
 * unknown failure are told as such. Before, every one was a bare MSV_ERR_IO, with no retry.
 */
static void test_pg_faults(void **state)
{
    struct fixture *f = *state;
    struct faults r = {{0}, "", ""};

    raw_exec(f, "CREATE TABLE fault_plan (state TEXT, times INT); CREATE SEQUENCE fault_seq;"
                "CREATE FUNCTION fault_raise() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE"
                "  p fault_plan; BEGIN SELECT * INTO p FROM fault_plan;"
                "  IF p.state IS NOT NULL AND nextval('fault_seq') <= p.times THEN"
                "    RAISE EXCEPTION 'injected %', p.state USING ERRCODE = p.state; END IF;"
                "  RETURN NEW; END $$;"
                "CREATE TRIGGER fault_on_queue BEFORE INSERT ON queue FOR EACH ROW"
                "  EXECUTE FUNCTION fault_raise();");
    OPS(f)->set_fault_hook(IMPL(f), keep_fault, &r);
    /* two serialization failures: the third try goes through */
    assert_int_equal(put_with_fault(f, "40001", 2), MSV_OK);
    assert_int_equal(r.n[MSV_STORE_FAULT_BUSY], 2);
    assert_string_equal(r.state, "40001");
    assert_non_null(strstr(r.message, "injected 40001"));
    /* deadlocks that go on: three tries, then the failure */
    assert_int_equal(put_with_fault(f, "40P01", 100), MSV_ERR_IO);
    assert_int_equal(r.n[MSV_STORE_FAULT_BUSY], 5);
    assert_string_equal(r.state, "40P01");
    /* disk full: not tried again, told as such */
    assert_int_equal(put_with_fault(f, "53100", 100), MSV_ERR_IO);
    assert_int_equal(r.n[MSV_STORE_FAULT_FULL], 1);
    assert_string_equal(r.state, "53100");
    assert_non_null(strstr(r.message, "injected 53100"));
    /* the server shutting down: the database unavailable */
    assert_int_equal(put_with_fault(f, "57P01", 100), MSV_ERR_IO);
    assert_int_equal(r.n[MSV_STORE_FAULT_UNAVAILABLE], 1);
    assert_string_equal(r.state, "57P01");
    /* anything else: other, with its words; a constraint violation is no fault */
    assert_int_equal(put_with_fault(f, "P0001", 100), MSV_ERR_IO);
    assert_int_equal(r.n[MSV_STORE_FAULT_OTHER], 1);
    assert_int_equal(put_with_fault(f, "23505", 100), MSV_ERR_EXISTS);
    assert_int_equal(r.n[MSV_STORE_FAULT_OTHER], 1);
    assert_int_equal(r.n[MSV_STORE_FAULT_BUSY], 5);
    assert_int_equal(put_with_fault(f, "40001", 0), MSV_OK);
    OPS(f)->set_fault_hook(IMPL(f), NULL, NULL);
}

static void test_queue_usage_counters(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "u"), d = make_device(f, a), e = make_device(f, a), ids[4];
    struct msv_queue_in in[4];
    struct msv_queue_ack ack = {.device_id = d, .ids = ids, .n = 1};
    size_t deleted = 0, expired = 0;

    for (size_t i = 0; i < 4; i++)
        in[i] = (struct msv_queue_in){.device_id = i < 3 ? d : e,
                                      .sender_device = e,
                                      .sender_handle = "u",
                                      .suite = 3,
                                      .ciphertext = (const uint8_t *)"0123456789",
                                      .ciphertext_len = 1 + i};
    assert_int_equal(OPS(f)->queue_put(IMPL(f), in, 3, 0, 100, ids), MSV_OK);
    assert_usage(f, d, 3, 1 + 2 + 3);
    assert_usage(f, e, 0, 0);
    /* a commit of one new envelope for e (expiring later) and the acknowledgement of d's first */
    assert_int_equal(OPS(f)->queue_commit(IMPL(f), &in[3], 1, 0, 500, &ids[3], &ack, 1), MSV_OK);
    assert_int_equal(ack.deleted, 1);
    assert_usage(f, d, 2, 2 + 3);
    assert_usage(f, e, 1, 4);
    /* an acknowledgement of what is not there changes nothing */
    assert_int_equal(OPS(f)->queue_ack(IMPL(f), d, ids, 1, &deleted), MSV_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(OPS(f)->queue_ack(IMPL(f), e, &ids[1], 1, &deleted), MSV_OK);
    assert_int_equal(deleted, 0);
    assert_usage(f, d, 2, 5);
    assert_int_equal(OPS(f)->queue_ack(IMPL(f), d, &ids[1], 1, &deleted), MSV_OK);
    assert_usage(f, d, 1, 3);
    assert_int_equal(OPS(f)->queue_expire(IMPL(f), 100, &expired), MSV_OK);
    assert_int_equal(expired, 1);
    assert_usage(f, d, 0, 0);
    assert_usage(f, e, 1, 4);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, e), MSV_OK);
    assert_usage(f, e, 0, 0);
    if (f->pg) {
        /* expiry across more devices than one transaction can hold locks for (200,000) */
        raw_exec(f, "INSERT INTO queue (device_id, sender_device, sender_handle, suite,"
                    " ciphertext, enqueued_ms, expires_ms) SELECT g, 1, 'u', 3, '\\x0102', 0,"
                    " 200 FROM generate_series(1000000, 1199999) AS g;");
        assert_usage(f, 1000007, 1, 2);
        assert_int_equal(OPS(f)->queue_expire(IMPL(f), 200, &expired), MSV_OK);
        assert_int_equal(expired, 200000);
        assert_usage(f, 1000007, 0, 0);
        assert_usage(f, 1199999, 0, 0);
    }
    if (!f->pg) {
        static struct msv_queue_in many[20000];
        static uint64_t many_ids[20000];
        clock_t t0;

        for (size_t i = 0; i < 20000; i++)
            many[i] = in[0];
        assert_int_equal(OPS(f)->queue_put(IMPL(f), many, 20000, 0, 100000, many_ids), MSV_OK);
        t0 = clock();
        for (int i = 0; i < 2000; i++)
            assert_usage(f, d, 20000, 20000);
        /* a scan of 20,000 rows per call takes seconds here; a counter, milliseconds */
        assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 0.5);
    }
}

/* The body of one fetched envelope of device d, read alone and in a read of several. */
static void assert_queued(struct fixture *f, uint64_t d, size_t n, const char *body, size_t len)
{
    struct msv_queue_rec *recs = NULL;
    struct msv_queue_read rd = {.device_id = d, .limit = 10};
    size_t got = 0;

    assert_int_equal(OPS(f)->queue_fetch(IMPL(f), d, 0, 0, 10, &recs, &got), MSV_OK);
    assert_int_equal(got, n);
    for (size_t i = 0; i < got; i++) {
        assert_int_equal(recs[i].ciphertext_len, len);
        assert_memory_equal(recs[i].ciphertext, body, len);
    }
    msv_queue_recs_free(recs, got);
    assert_int_equal(OPS(f)->queue_fetch_many(IMPL(f), &rd, 1, 0), MSV_OK);
    assert_int_equal(rd.count, n);
    for (size_t i = 0; i < rd.count; i++)
        assert_memory_equal(rd.recs[i].ciphertext, body, len);
    msv_queue_recs_free(rd.recs, rd.count);
}

/*
 * A group's copies of one message (msv_queue_in.shared) keep one body between them: each device
 * reads it whole and counts its length in its usage, and the body goes with the last copy,
 * whichever path takes the copies (acknowledgement, commit, device removal, expiry).
 */
static void test_queue_shared_bodies(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "g"), d[4], ids[8];
    static const char body[] = "one MLS delivery for every member device of the group";
    size_t len = sizeof(body) - 1, deleted = 0, expired = 0;
    struct msv_queue_in in[8];
    struct msv_queue_ack ack;
    struct msv_store_stats st;

    for (size_t i = 0; i < 4; i++)
        d[i] = make_device(f, a);
    for (size_t i = 0; i < 8; i++)
        in[i] = (struct msv_queue_in){.device_id = d[i % 4],
                                      .sender_device = d[0],
                                      .sender_handle = "g",
                                      .suite = 160,
                                      .ciphertext = (const uint8_t *)body,
                                      .ciphertext_len = len,
                                      .shared = 1};
    /* items 0-3: one body for four copies; 4: a private ciphertext; 5: a run of one is kept in
     * its row; 6-7: a second body (expiring earlier) */
    in[4].shared = 0;
    in[5].ciphertext = (const uint8_t *)"five";
    in[5].ciphertext_len = 4;
    in[6].expires_ms = in[7].expires_ms = 50;
    assert_int_equal(OPS(f)->queue_put(IMPL(f), in, 8, 0, 100, ids), MSV_OK);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM queue_bodies"), 2);
    assert_int_equal(count_rows(f, "SELECT SUM(refs) FROM queue_bodies"), 6);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM queue WHERE body_id IS NOT NULL"), 6);
    assert_int_equal(count_rows(f, "SELECT MAX(LENGTH(ciphertext)) FROM queue WHERE body_id IS NOT"
                                   " NULL"),
                     0);
    assert_usage(f, d[0], 2, 2 * len);
    assert_usage(f, d[1], 2, len + 4);
    assert_usage(f, d[2], 2, 2 * len);
    assert_usage(f, d[3], 2, 2 * len);
    assert_int_equal(OPS(f)->stats(IMPL(f), &st), MSV_OK);
    assert_int_equal(st.queued, 8);
    assert_int_equal(st.queued_bytes, 2 * len + len + 4); /* the bodies once, the private one */
    assert_queued(f, d[2], 2, body, len);
    /* the second body expires with its two copies, the first stays */
    assert_int_equal(OPS(f)->queue_expire(IMPL(f), 60, &expired), MSV_OK);
    assert_int_equal(expired, 2);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM queue_bodies"), 1);
    assert_queued(f, d[3], 1, body, len);
    /* device 0's copy and its private one acknowledged: the body stays for the others */
    assert_int_equal(OPS(f)->queue_ack(IMPL(f), d[0], (uint64_t[]){ids[0], ids[4]}, 2, &deleted),
                     MSV_OK);
    assert_int_equal(deleted, 2);
    assert_int_equal(count_rows(f, "SELECT SUM(refs) FROM queue_bodies"), 3);
    assert_usage(f, d[0], 0, 0);
    /* device 1 removed: its copy goes */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d[1]), MSV_OK);
    assert_int_equal(count_rows(f, "SELECT SUM(refs) FROM queue_bodies"), 2);
    assert_queued(f, d[2], 1, body, len);
    /* the last two in one group commit: the body goes with them */
    ack = (struct msv_queue_ack){.device_id = d[2], .ids = &ids[2], .n = 1};
    assert_int_equal(OPS(f)->queue_commit(IMPL(f), NULL, 0, 0, 100, NULL, &ack, 1), MSV_OK);
    assert_int_equal(ack.deleted, 1);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM queue_bodies"), 1);
    assert_int_equal(OPS(f)->queue_ack(IMPL(f), d[3], &ids[3], 1, &deleted), MSV_OK);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM queue_bodies"), 0);
    assert_int_equal(OPS(f)->stats(IMPL(f), &st), MSV_OK);
    assert_int_equal(st.queued, 0); /* device 1's own one went with the device */
    assert_int_equal(st.queued_bytes, 0);
}

struct mls_racer {
    struct fixture *f;
    struct msv_mls_commit c;
    msv_err err;
};

static void *mls_commit_racer(void *arg)
{
    struct mls_racer *r = arg;
    uint64_t epoch = 0;

    r->err = OPS(r->f)->mls_commit(IMPL(r->f), &r->c, &epoch);
    return NULL;
}

/*
 * An MLS commit and a device's deletion on PostgreSQL: the deletion (as an account's takes
 * them) holds the device's advisory lock, then deletes its row; the commit names the device.
 * The commit takes every advisory lock before any row lock, so it waits without holding the
 * row, and the deletion goes through. Before, the commit held the row (FOR KEY SHARE) while it
 * waited for the advisory lock, a deadlock that cost the deletion (detected first here, with
 * a short deadlock_timeout on its side).
 */
static void test_mls_commit_lock_order(void **state)
{
    struct fixture *f = *state;
    uint64_t ids[2] = {20, 21}, added = 21, epoch = 0, ids_out[1];
    struct msv_queue_in item = {.device_id = 21,
                                .sender_device = 20,
                                .sender_handle = "a",
                                .suite = 160,
                                .ciphertext = (const uint8_t *)"commit",
                                .ciphertext_len = 6};
    struct mls_racer r = {.f = f};
    pthread_t t;
    PGconn *db;
    PGresult *res;

    raw_devices(f, ids, 2);
    seed_claim(f, count_rows(f, "SELECT account_id FROM devices WHERE id = 20"), 21, 5000);
    r.c = (struct msv_mls_commit){
        .group_id = (const uint8_t *)"race",
        .group_len = 4,
        .epoch = 0,
        .sender = 20,
        .added = &added,
        .n_added = 1,
        .max_members = 10,
        .max_groups = 10,
        .claimer = (uint64_t)count_rows(f, "SELECT account_id FROM devices WHERE id = 20"),
        .now_ms = 1};
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &r.c, &epoch), MSV_OK);
    db = PQconnectdb(f->path);
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    res = PQexec(db, "BEGIN; SET LOCAL deadlock_timeout = '100ms';"
                     " SELECT pg_advisory_xact_lock(21);");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    r.c.epoch = 1;
    r.c.n_added = 0;
    r.c.items = &item;
    r.c.n_items = 1;
    r.c.ids = ids_out;
    assert_int_equal(pthread_create(&t, NULL, mls_commit_racer, &r), 0);
    usleep(500 * 1000); /* the commit is waiting on the lock now */
    res = PQexec(db, "DELETE FROM devices WHERE id = 21;");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("the deletion failed: %s", PQerrorMessage(db));
    PQclear(res);
    res = PQexec(db, "COMMIT;");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* the commit then finds the device gone: refused, nothing queued for it */
    assert_int_not_equal(r.err, MSV_OK);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM queue WHERE device_id = 21"), 0);
    PQfinish(db);
}

/* Prekeys: uploads add and replace, claims hand each one-time prekey out once, a full
 * device refuses more and keeps what it had, removal drops them; delivery tokens. */
/*
 * The MLS delivery service's store: KeyPackages handed out once each, oldest first, then the
 * last-resort one, which stays; the cap refuses a whole upload; a group starts at epoch 0,
 * takes one commit per epoch (a stale one, a non-member's, one past max_members change
 * nothing), and a commit's copies are queued with it.
 */
/* Four approved devices of a new account of handle, with the ids first to first + 3. */
static void four_devices(struct fixture *f, const char *handle, uint64_t first)
{
    char sql[512];
    unsigned long long a = (unsigned long long)make_account(f, handle);

    for (uint64_t id = first; id < first + 4; id++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO devices (id, account_id, suite, identity, push_token, created_ms,"
                 " approved) VALUES (%llu, %llu, 3, %s, %s, 0, %s);",
                 (unsigned long long)id, a, f->pg ? "'\\x00'::BYTEA" : "x'00'",
                 f->pg ? "''::BYTEA" : "x''", f->pg ? "TRUE" : "1");
        raw_exec(f, sql);
    }
}

/* Whether the group of that id is still kept (its row), and how many commits its log keeps. */
static int mls_group_kept(struct fixture *f, const char *group, long long *logged)
{
    uint64_t epoch = 0, *members = NULL;
    size_t n = 0;
    char sql[160];
    msv_err err =
        OPS(f)->mls_group_get(IMPL(f), (const uint8_t *)group, strlen(group), &epoch, &members, &n);

    free(members);
    assert_true(err == MSV_OK || err == MSV_ERR_NOT_FOUND);
    snprintf(sql, sizeof(sql),
             f->pg ? "SELECT COUNT(*) FROM mls_commit_log WHERE group_id = '%s'::BYTEA"
                   : "SELECT COUNT(*) FROM mls_commit_log WHERE group_id = CAST('%s' AS BLOB)",
             group);
    *logged = count_rows(f, sql);
    return err == MSV_OK;
}

/* A commit of group by sender at epoch (its log kept), adding and removing the devices given. */
static msv_err mls_commit_logged(struct fixture *f, const char *group, uint64_t epoch,
                                 uint64_t sender, uint64_t claimer, const uint64_t *added,
                                 size_t n_added, const uint64_t *removed, size_t n_removed)
{
    uint64_t now = 0;
    struct msv_mls_commit c = {.group_id = (const uint8_t *)group,
                               .group_len = strlen(group),
                               .epoch = epoch,
                               .sender = sender,
                               .added = added,
                               .n_added = n_added,
                               .removed = removed,
                               .n_removed = n_removed,
                               .max_members = 10,
                               .max_groups = 10,
                               .claimer = claimer,
                               .now_ms = 1,
                               .expires_ms = 1000000,
                               .log = (const uint8_t *)"commit",
                               .log_len = 6,
                               .log_keep = 10,
                               .log_account_max = 100,
                               .log_expires_ms = 1000000};

    for (size_t i = 0; i < n_added; i++)
        seed_claim(f, claimer, added[i], 1000000);
    return OPS(f)->mls_commit(IMPL(f), &c, &now);
}

/*
 * A group whose last member goes goes with it, and its commit log too, whichever way the member
 * goes: its leave, a commit removing it, its device's removal, its account's deletion. A group
 * a member is left in stays. Before, every such group stayed for good, and an account could make
 * rows without end by starting groups and leaving them.
 */
static void test_mls_empty_groups_dropped(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "drop-a"), b = make_account(f, "drop-b");
    uint64_t a1 = make_device(f, a), a2 = make_device(f, a), b1 = make_device(f, b);
    uint64_t both[2] = {a1, b1};
    struct msv_account_deleted del = {0};
    long long logged = 0;

    /* a leave: the last one takes the group, the one before does not */
    assert_int_equal(mls_commit_logged(f, "g1", 0, a1, a, &b1, 1, NULL, 0), MSV_OK);
    assert_int_equal(OPS(f)->mls_leave(IMPL(f), (const uint8_t *)"g1", 2, a1, NULL, 0, 1, 2, NULL),
                     MSV_OK);
    assert_true(mls_group_kept(f, "g1", &logged));
    assert_int_equal(logged, 1);
    assert_int_equal(OPS(f)->mls_leave(IMPL(f), (const uint8_t *)"g1", 2, b1, NULL, 0, 1, 2, NULL),
                     MSV_OK);
    assert_false(mls_group_kept(f, "g1", &logged));
    assert_int_equal(logged, 0);
    /* its id can be started again, from epoch 0 */
    assert_int_equal(mls_commit_logged(f, "g1", 0, b1, b, NULL, 0, NULL, 0), MSV_OK);
    assert_true(mls_group_kept(f, "g1", &logged));
    assert_int_equal(logged, 1);

    /* a commit removing one member keeps the group, one removing every member does not */
    assert_int_equal(mls_commit_logged(f, "g2", 0, a1, a, &b1, 1, NULL, 0), MSV_OK);
    assert_int_equal(mls_commit_logged(f, "g2", 1, a1, a, NULL, 0, &b1, 1), MSV_OK);
    assert_true(mls_group_kept(f, "g2", &logged));
    assert_int_equal(logged, 2);
    assert_int_equal(mls_commit_logged(f, "g2", 2, a1, a, &b1, 1, NULL, 0), MSV_OK);
    assert_int_equal(mls_commit_logged(f, "g2", 3, a1, a, NULL, 0, both, 2), MSV_OK);
    assert_false(mls_group_kept(f, "g2", &logged));
    assert_int_equal(logged, 0);

    /* a device's removal takes the groups it alone was in */
    assert_int_equal(mls_commit_logged(f, "g3", 0, a1, a, NULL, 0, NULL, 0), MSV_OK);
    assert_int_equal(mls_commit_logged(f, "g4", 0, a1, a, &b1, 1, NULL, 0), MSV_OK);
    assert_int_equal(mls_commit_logged(f, "g5", 0, a2, a, NULL, 0, NULL, 0), MSV_OK);
    assert_int_equal(mls_commit_logged(f, "g6", 0, a2, a, &b1, 1, NULL, 0), MSV_OK);
    assert_int_equal(mls_commit_logged(f, "g7", 0, a1, a, &a2, 1, NULL, 0), MSV_OK);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, a1), MSV_OK);
    assert_false(mls_group_kept(f, "g3", &logged));
    assert_int_equal(logged, 0);
    assert_true(mls_group_kept(f, "g4", &logged));
    assert_int_equal(logged, 1);
    assert_true(mls_group_kept(f, "g7", &logged));

    /* an account's deletion takes the groups only its devices were in */
    assert_int_equal(OPS(f)->account_delete(IMPL(f), "drop-a", 9000, &del), MSV_OK);
    msv_account_deleted_clear(&del);
    assert_false(mls_group_kept(f, "g5", &logged));
    assert_int_equal(logged, 0);
    assert_false(mls_group_kept(f, "g7", &logged));
    assert_int_equal(logged, 0);
    assert_true(mls_group_kept(f, "g6", &logged)); /* the account's commits went, as before */
    assert_true(mls_group_kept(f, "g4", &logged));
    assert_true(mls_group_kept(f, "g1", &logged));
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_groups"), 3);
}

struct mls_goer {
    struct fixture *f;
    uint64_t account, device; /* account set: the device's removal; else its leave */
    msv_err err;
};

static void *mls_goer_run(void *arg)
{
    struct mls_goer *g = arg;

    g->err = g->account != 0 ? OPS(g->f)->device_remove(IMPL(g->f), g->account, g->device)
                             : OPS(g->f)->mls_leave(IMPL(g->f), (const uint8_t *)"pair", 4,
                                                    g->device, NULL, 0, 1, 2, NULL);
    return NULL;
}

struct reporter {
    struct fixture *f;
    uint64_t account;
    msv_err err;
};

static void *reporter_run(void *arg)
{
    struct reporter *r = arg;
    uint64_t id = 0;

    r->err = OPS(r->f)->report_add(IMPL(r->f), r->account, "rep-b@x", "spam", "", 1000, 0, 1, &id);
    return NULL;
}

/*
 * Two reports of one account at once on PostgreSQL, with room for one, the first slow to write
 * its row (a trigger sleeps before it): only one is taken. Before, the second counted the
 * reports without the first's, not committed yet (READ COMMITTED), and both went in.
 */
static void test_reports_at_once(void **state)
{
    struct fixture *f = *state;
    struct reporter one = {.f = f, .account = make_account(f, "rep-a@x")}, two = one;
    pthread_t t1, t2;
    PGconn *db;
    PGresult *res;

    make_account(f, "rep-b@x");
    db = PQconnectdb(f->path);
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    res = PQexec(db, "CREATE FUNCTION slow_report() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "PERFORM pg_sleep(1); RETURN NEW; END $$; CREATE TRIGGER slow BEFORE INSERT "
                     "ON reports FOR EACH ROW EXECUTE FUNCTION slow_report();");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    assert_int_equal(pthread_create(&t1, NULL, reporter_run, &one), 0);
    usleep(300 * 1000); /* the first has counted, and sleeps before its row */
    assert_int_equal(pthread_create(&t2, NULL, reporter_run, &two), 0);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    res = PQexec(db, "DROP TRIGGER slow ON reports; DROP FUNCTION slow_report();");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(db);
    assert_true((one.err == MSV_OK && two.err == MSV_ERR_AGAIN) ||
                (one.err == MSV_ERR_AGAIN && two.err == MSV_OK));
}

/*
 * The last two members of a group go at once on PostgreSQL: one's device is removed while the
 * other leaves. Each used to look at the group while the other's going was not committed, both
 * saw a member left, and the empty group stayed for good. Now both take the group's row first,
 * so the second sees the first gone. The removal is held midway here (a claim of its device
 * locked by another session) while the leave comes.
 */
static void test_mls_last_two_go_at_once(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "pair-a"), b = make_account(f, "pair-b");
    uint64_t d = make_device(f, a), e = make_device(f, b);
    struct mls_goer removal = {.f = f, .account = a, .device = d}, leave = {.f = f, .device = e};
    pthread_t t1, t2;
    long long logged = 0;
    PGconn *db;
    PGresult *res;
    char sql[160];

    assert_int_equal(mls_commit_logged(f, "pair", 0, d, a, &e, 1, NULL, 0), MSV_OK);
    seed_claim(f, b, d, 5000);
    db = PQconnectdb(f->path);
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    snprintf(sql, sizeof(sql), "BEGIN; SELECT 1 FROM mls_claims WHERE device_id = %llu FOR UPDATE;",
             (unsigned long long)d);
    res = PQexec(db, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    assert_int_equal(pthread_create(&t1, NULL, mls_goer_run, &removal), 0);
    usleep(500 * 1000); /* the removal waits on the claim, its group looked at */
    assert_int_equal(pthread_create(&t2, NULL, mls_goer_run, &leave), 0);
    usleep(500 * 1000);
    res = PQexec(db, "COMMIT;");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    PQfinish(db);
    assert_int_equal(removal.err, MSV_OK);
    assert_int_equal(leave.err, MSV_OK);
    assert_false(mls_group_kept(f, "pair", &logged));
    assert_int_equal(logged, 0);
}

static void test_mls_store(void **state)
{
    struct fixture *f = *state;
    const uint8_t *kps[3] = {(const uint8_t *)"k1", (const uint8_t *)"k2", (const uint8_t *)"k3"};
    size_t lens[3] = {2, 2, 2}, len = 0, n = 0;
    struct msv_mls_key_package_upload up = {.kps = kps,
                                            .lens = lens,
                                            .n = 2,
                                            .last_resort = (const uint8_t *)"LR",
                                            .last_resort_len = 2};
    uint64_t added[2] = {11, 12}, removed[1] = {11}, ids[2], epoch = 0, *members = NULL;
    struct msv_queue_in items[1] = {{.device_id = 12,
                                     .sender_device = 10,
                                     .sender_handle = "a",
                                     .suite = 160,
                                     .ciphertext = (const uint8_t *)"commit",
                                     .ciphertext_len = 6}};
    struct msv_mls_commit c = {.group_id = (const uint8_t *)"group",
                               .group_len = 5,
                               .epoch = 0,
                               .sender = 10,
                               .added = added,
                               .n_added = 2,
                               .max_members = 3,
                               .max_groups = 2,
                               .now_ms = 1,
                               .expires_ms = 1000,
                               .claimer = 5,
                               .ids = ids};
    uint64_t unclaimed = 0;
    uint32_t left = 0;
    int lr = 0;
    uint8_t *kp = NULL;

    /* a commit adds only devices that exist and are approved: 11 to 13 (10 its sender) */
    four_devices(f, "mls-members", 10);
    assert_int_equal(OPS(f)->mls_key_packages_put(IMPL(f), 7, &up, 3, &left, &lr), MSV_OK);
    assert_int_equal(left, 2);
    assert_true(lr);
    up.n = 3; /* 5 would be kept */
    assert_int_equal(OPS(f)->mls_key_packages_put(IMPL(f), 7, &up, 3, &left, &lr), MSV_ERR_TOO_BIG);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(
            OPS(f)->mls_key_package_claim(IMPL(f), 7, 0, 1, 0, 1000, 10, &kp, &len, &lr), MSV_OK);
        assert_int_equal(len, 2);
        assert_memory_equal(kp, i == 0 ? "k1" : i == 1 ? "k2" : "LR", 2);
        assert_int_equal(lr, i >= 2);
        free(kp);
        kp = NULL;
    }
    up = (struct msv_mls_key_package_upload){.kps = kps, .lens = lens, .n = 1};
    assert_int_equal(OPS(f)->mls_key_packages_put(IMPL(f), 7, &up, 3, &left, &lr), MSV_OK);
    assert_int_equal(OPS(f)->mls_key_package_claim(IMPL(f), 7, 1, 1, 0, 1000, 10, &kp, &len, &lr),
                     MSV_OK);
    assert_memory_equal(kp, "LR", 2); /* only the last-resort one, asked for */
    free(kp);
    kp = NULL;
    assert_int_equal(OPS(f)->mls_key_package_claim(IMPL(f), 8, 0, 1, 0, 1000, 10, &kp, &len, &lr),
                     MSV_ERR_NOT_FOUND);
    /* a claim of account 5, open until 1000, is used by its commit: the four of device 7
     * above were account 1's, and a fifth drops the oldest (at most 4 open) */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            OPS(f)->mls_key_package_claim(IMPL(f), 7, 0, 5, 0, 1000, 4, &kp, &len, &lr), MSV_OK);
        free(kp);
        kp = NULL;
    }
    assert_int_equal(OPS(f)->mls_key_package_claim(IMPL(f), 7, 0, 1, 0, 1000, 4, &kp, &len, &lr),
                     MSV_OK);
    free(kp);
    kp = NULL;
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_claims WHERE account_id = 1"), 4);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_claims WHERE account_id = 5"), 2);
    /* claims expired by now_ms go at the next claim */
    assert_int_equal(OPS(f)->mls_key_package_claim(IMPL(f), 7, 0, 5, 1000, 2000, 4, &kp, &len, &lr),
                     MSV_OK);
    free(kp);
    kp = NULL;
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_claims"), 1);
    raw_exec(f, "DELETE FROM mls_claims;");

    /* the group */
    assert_int_equal(OPS(f)->mls_group_get(IMPL(f), c.group_id, 5, &epoch, &members, &n),
                     MSV_ERR_NOT_FOUND);
    c.epoch = 1;
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_ERR_NOT_FOUND);
    c.epoch = 0;
    /* no claim of device 12 by account 5 (one of 11 is, one of 12 by account 6, one of 12
     * by 5 expired at now_ms): refused, and nothing changed, not even the claim of 11 */
    c.unclaimed = &unclaimed;
    seed_claim(f, 5, 11, 2);
    seed_claim(f, 6, 12, 2);
    seed_claim(f, 5, 12, 1);
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_ERR_INVALID);
    assert_int_equal(unclaimed, 12);
    assert_int_equal(OPS(f)->mls_group_get(IMPL(f), c.group_id, 5, &epoch, &members, &n),
                     MSV_ERR_NOT_FOUND);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_claims"), 3);
    seed_claim(f, 5, 12, 2);
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
    assert_int_equal(epoch, 1);
    /* each claim used once: the claims of 11 and 12 by 5 are gone, the others stay */
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_claims WHERE account_id = 5 AND"
                                   " expires_ms = 2"),
                     0);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_claims"), 2);
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_ERR_EXISTS);
    assert_int_equal(epoch, 1);
    c.epoch = 1;
    c.sender = 99;
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_ERR_AUTH);
    c.sender = 10;
    added[0] = 13; /* a fourth member */
    seed_claim(f, 5, 13, 2);
    seed_claim(f, 5, 12, 2);
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_ERR_TOO_BIG);
    assert_int_equal(epoch, 1);
    c.n_added = 0;
    c.removed = removed;
    c.n_removed = 1;
    c.items = items;
    c.n_items = 1;
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
    assert_int_equal(epoch, 2);
    assert_int_equal(OPS(f)->mls_group_get(IMPL(f), c.group_id, 5, &epoch, &members, &n), MSV_OK);
    assert_int_equal(epoch, 2);
    assert_int_equal(n, 2);
    assert_int_equal(members[0], 10);
    assert_int_equal(members[1], 12);
    free(members);
    assert_usage(f, 12, 1, 6);
    /* device 12 starts a second group, not a third (max_groups 2): nothing of it is kept */
    c = (struct msv_mls_commit){.group_id = (const uint8_t *)"group2",
                                .group_len = 6,
                                .sender = 12,
                                .max_members = 3,
                                .max_groups = 2,
                                .ids = ids};
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
    c.group_id = (const uint8_t *)"group3";
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_ERR_TOO_BIG);
    assert_int_equal(OPS(f)->mls_group_get(IMPL(f), c.group_id, 6, &epoch, &members, &n),
                     MSV_ERR_NOT_FOUND);
    {
        /* a removed device's KeyPackages and memberships go with it */
        uint64_t a = make_account(f, "mls"), d = make_device(f, a);

        up = (struct msv_mls_key_package_upload){.kps = kps, .lens = lens, .n = 1};
        assert_int_equal(OPS(f)->mls_key_packages_put(IMPL(f), d, &up, 3, &left, &lr), MSV_OK);
        seed_claim(f, 5, d, 2);
        c = (struct msv_mls_commit){.group_id = (const uint8_t *)"group4",
                                    .group_len = 6,
                                    .sender = 10,
                                    .claimer = 5,
                                    .now_ms = 1,
                                    .added = &d,
                                    .n_added = 1,
                                    .max_members = 3,
                                    .max_groups = 2,
                                    .ids = ids};
        assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
        assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d), MSV_OK);
        assert_int_equal(
            OPS(f)->mls_key_package_claim(IMPL(f), d, 0, 1, 0, 1000, 10, &kp, &len, &lr),
            MSV_ERR_NOT_FOUND);
        assert_int_equal(OPS(f)->mls_group_get(IMPL(f), c.group_id, 6, &epoch, &members, &n),
                         MSV_OK);
        assert_int_equal(n, 1);
        assert_int_equal(members[0], 10);
        free(members);
    }
    /* leaving: the epoch stays, the leave's copy is queued in the same call; a device that is
     * no member cannot leave, and nothing of its leave is queued */
    items[0].device_id = 10;
    items[0].sender_device = 12;
    assert_usage(f, 10, 0, 0);
    assert_int_equal(
        OPS(f)->mls_leave(IMPL(f), (const uint8_t *)"group", 5, 12, items, 1, 1000, 2000, ids),
        MSV_OK);
    assert_usage(f, 10, 1, 6);
    assert_int_equal(
        OPS(f)->mls_leave(IMPL(f), (const uint8_t *)"group", 5, 12, items, 1, 1000, 2000, ids),
        MSV_ERR_NOT_FOUND);
    assert_usage(f, 10, 1, 6);
    assert_int_equal(
        OPS(f)->mls_group_get(IMPL(f), (const uint8_t *)"group", 5, &epoch, &members, &n), MSV_OK);
    assert_int_equal(epoch, 2);
    assert_int_equal(n, 1);
    free(members);
}

/* The commits of group "log" kept for epochs from `from` on, as device asks: "d<epoch>" each. */
static size_t log_read(struct fixture *f, uint64_t device, uint64_t from, int64_t now, size_t max,
                       size_t max_bytes, msv_err want, uint64_t first, int want_more)
{
    struct msv_mls_logged *l = NULL;
    size_t n = 0;
    uint64_t epoch = 0;
    int more = -1;

    assert_int_equal(OPS(f)->mls_commits_since(IMPL(f), (const uint8_t *)"log", 3, device, from,
                                               now, max, max_bytes, &l, &n, &epoch, &more),
                     want);
    if (want != MSV_OK)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char d[8];

        snprintf(d, sizeof(d), "d%llu", (unsigned long long)(first + i));
        assert_int_equal(l[i].epoch, first + i);
        assert_int_equal(l[i].sender, 20);
        assert_int_equal(l[i].len, strlen(d));
        assert_memory_equal(l[i].delivery, d, strlen(d));
    }
    assert_int_equal(epoch, 4);
    assert_int_equal(more, want_more);
    msv_mls_logged_free(l, n);
    return n;
}

/*
 * A group's commit log: each commit kept with its epoch and sender, read by a member from the
 * epoch after the commit that added it (never before), up to a number and a size per read;
 * the group's newest log_keep and the account's newest log_account_max kept, nothing after it
 * expires, and the queue's expiry takes it away.
 */
static void test_mls_commit_log(void **state)
{
    struct fixture *f = *state;
    uint64_t add21 = 21, add22 = 22, ids[1], epoch = 0;
    char d[8];
    struct msv_mls_commit c = {.group_id = (const uint8_t *)"log",
                               .group_len = 3,
                               .sender = 20,
                               .max_members = 10,
                               .max_groups = 10,
                               .now_ms = 1,
                               .expires_ms = 1000,
                               .claimer = 5,
                               .ids = ids,
                               .log_keep = 3,
                               .log_account_max = 4};

    four_devices(f, "mls-log", 20);
    seed_claim(f, 5, 21, 2);
    seed_claim(f, 5, 22, 2);
    for (uint64_t e = 0; e < 4; e++) { /* 21 added by the commit for epoch 0, 22 by that for 2 */
        snprintf(d, sizeof(d), "d%llu", (unsigned long long)e);
        c.epoch = e;
        c.added = e == 0 ? &add21 : &add22;
        c.n_added = e == 0 || e == 2;
        c.log = (const uint8_t *)d;
        c.log_len = strlen(d);
        c.log_expires_ms = 500 + (int64_t)e;
        assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
        assert_int_equal(epoch, e + 1);
    }
    /* the group's 3 newest; 21 reads from epoch 1 on, 22 from 3 on, whatever they ask */
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_commit_log"), 3);
    assert_int_equal(log_read(f, 21, 0, 1, 10, 100, MSV_OK, 1, 0), 3);
    assert_int_equal(log_read(f, 22, 0, 1, 10, 100, MSV_OK, 3, 0), 1);
    assert_int_equal(log_read(f, 21, 3, 1, 10, 100, MSV_OK, 3, 0), 1);
    assert_int_equal(log_read(f, 21, 4, 1, 10, 100, MSV_OK, 4, 0), 0);
    assert_int_equal(log_read(f, 20, 0, 1, 10, 100, MSV_OK, 1, 0), 3);
    /* no member, or no group: nothing */
    log_read(f, 23, 0, 1, 10, 100, MSV_ERR_AUTH, 0, 0);
    assert_int_equal(OPS(f)->mls_commits_since(IMPL(f), (const uint8_t *)"nolog", 5, 20, 0, 1, 10,
                                               100, &(struct msv_mls_logged *){NULL}, &(size_t){0},
                                               &epoch, &(int){0}),
                     MSV_ERR_NOT_FOUND);
    /* a read gives at most max commits, and max_bytes of them (the first always) */
    assert_int_equal(log_read(f, 21, 0, 1, 2, 100, MSV_OK, 1, 1), 2);
    assert_int_equal(log_read(f, 21, 0, 1, 10, 3, MSV_OK, 1, 1), 1);
    assert_int_equal(log_read(f, 21, 0, 1, 10, 1, MSV_OK, 1, 1), 1);
    assert_int_equal(log_read(f, 21, 0, 1, 10, 4, MSV_OK, 1, 1), 2);
    /* none expired: d1 at 501 */
    assert_int_equal(log_read(f, 21, 0, 501, 10, 100, MSV_OK, 2, 0), 2);
    assert_int_equal(log_read(f, 21, 0, 503, 10, 100, MSV_OK, 4, 0), 0);
    /* the account's 4 newest: of two commits to another group, the second drops d1 */
    c.group_id = (const uint8_t *)"log2";
    c.group_len = 4;
    c.n_added = 0;
    c.log = (const uint8_t *)"x";
    c.log_len = 1;
    for (uint64_t e = 0; e < 2; e++) {
        c.epoch = e;
        c.log_expires_ms = 600 + (int64_t)e;
        assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
        assert_int_equal(log_read(f, 21, 0, 1, 10, 100, MSV_OK, 1 + e, 0), 3 - e);
    }
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_commit_log"), 4);
    /* the queue's expiry takes the expired */
    {
        size_t expired = 0;

        assert_int_equal(OPS(f)->queue_expire(IMPL(f), 600, &expired), MSV_OK);
        assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_commit_log"), 1);
    }
}

/* The Welcome kept for device in group "wel": its delivery and sender, or the error. */
static void kept_read(struct fixture *f, uint64_t device, int64_t now, msv_err want,
                      const char *delivery, uint64_t sender)
{
    uint8_t *d = NULL;
    size_t len = 7;
    uint64_t got = 0;

    assert_int_equal(
        OPS(f)->mls_welcome_get(IMPL(f), (const uint8_t *)"wel", 3, device, now, &d, &len, &got),
        want);
    if (want == MSV_OK) {
        assert_int_equal(len, strlen(delivery));
        assert_memory_equal(d, delivery, len);
        assert_int_equal(got, sender);
    } else {
        assert_null(d);
        assert_int_equal(len, 0);
    }
    free(d);
}

/*
 * A Welcome kept for the members its copies left out: for those the sender's commit added
 * alone, in place of one kept before, with the copies in the same transaction; read by that
 * member until it expires (the queue's expiry takes it); dropped when a commit adds the device
 * again; gone with the membership.
 */
static void test_mls_welcome_kept(void **state)
{
    struct fixture *f = *state;
    uint64_t add[2] = {21, 22}, ids[1], epoch = 0, again = 21, out[1];
    uint8_t kept[3];
    struct msv_queue_in copy = {.device_id = 22,
                                .sender_device = 20,
                                .sender_handle = "x",
                                .suite = 160,
                                .ciphertext = (const uint8_t *)"copy",
                                .ciphertext_len = 4};
    struct msv_mls_commit c = {.group_id = (const uint8_t *)"wel",
                               .group_len = 3,
                               .sender = 20,
                               .added = add,
                               .n_added = 2,
                               .max_members = 10,
                               .max_groups = 10,
                               .now_ms = 1,
                               .expires_ms = 1000,
                               .claimer = 5,
                               .ids = ids};
    struct msv_mls_welcome w = {.group_id = (const uint8_t *)"wel",
                                .group_len = 3,
                                .sender = 20,
                                .items = &copy,
                                .n_items = 1,
                                .now_ms = 1,
                                .expires_ms = 500,
                                .ids = out,
                                .left_out = (const uint64_t[]){21, 23, 20},
                                .n_left_out = 3,
                                .delivery = (const uint8_t *)"w1",
                                .len = 2,
                                .kept = kept};

    four_devices(f, "mls-wel", 20);
    seed_claim(f, 5, 21, 2);
    seed_claim(f, 5, 21, 2); /* for its second and third additions */
    seed_claim(f, 5, 21, 2);
    seed_claim(f, 5, 22, 2);
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
    /* kept for 21 alone: 23 is no member, 20 (the founder) was added by no commit */
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    assert_memory_equal(kept, ((const uint8_t[]){1, 0, 0}), 3);
    assert_usage(f, 22, 1, 4);
    kept_read(f, 21, 2, MSV_OK, "w1", 20);
    kept_read(f, 22, 2, MSV_ERR_NOT_FOUND, NULL, 0);
    kept_read(f, 20, 2, MSV_ERR_NOT_FOUND, NULL, 0);
    kept_read(f, 23, 2, MSV_ERR_AUTH, NULL, 0);
    /* another member's Welcome keeps nothing in its place; the adder's next one does */
    w.sender = 22;
    w.n_items = 0;
    w.delivery = (const uint8_t *)"forged";
    w.len = 6;
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    assert_memory_equal(kept, ((const uint8_t[]){0, 0, 0}), 3);
    kept_read(f, 21, 2, MSV_OK, "w1", 20);
    w.sender = 20;
    w.delivery = (const uint8_t *)"w2";
    w.len = 2;
    w.n_left_out = 1;
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    assert_int_equal(kept[0], 1);
    kept_read(f, 21, 2, MSV_OK, "w2", 20);
    /* expired: not given, and the queue's expiry takes it */
    kept_read(f, 21, 500, MSV_ERR_NOT_FOUND, NULL, 0);
    {
        size_t expired = 0;

        assert_int_equal(OPS(f)->queue_expire(IMPL(f), 500, &expired), MSV_OK);
        assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_members WHERE welcome IS NOT"
                                       " NULL OR welcome_expires_ms <> 0"),
                         0);
    }
    /* kept again; another member's commit naming 21 as added changes nothing of it (nor who
     * added it), then 20's adding it again (its leaf replaced) drops it */
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    kept_read(f, 21, 2, MSV_OK, "w2", 20);
    c.epoch = 1;
    c.sender = 22;
    c.added = &again;
    c.n_added = 1;
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
    kept_read(f, 21, 2, MSV_OK, "w2", 20);
    c.epoch = 2;
    c.sender = 20;
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
    kept_read(f, 21, 2, MSV_ERR_NOT_FOUND, NULL, 0);
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    kept_read(f, 21, 2, MSV_OK, "w2", 20);
    /* dropped once 21 joined from it, only if it is the one kept still (none kept: nothing) */
    assert_int_equal(
        OPS(f)->mls_welcome_drop(IMPL(f), (const uint8_t *)"wel", 3, 21, (const uint8_t *)"w1", 2),
        MSV_OK);
    kept_read(f, 21, 2, MSV_OK, "w2", 20);
    assert_int_equal(
        OPS(f)->mls_welcome_drop(IMPL(f), (const uint8_t *)"wel", 3, 21, (const uint8_t *)"w2", 2),
        MSV_OK);
    kept_read(f, 21, 2, MSV_ERR_NOT_FOUND, NULL, 0);
    assert_int_equal(
        OPS(f)->mls_welcome_drop(IMPL(f), (const uint8_t *)"wel", 3, 21, (const uint8_t *)"w2", 2),
        MSV_OK);
    /* kept again, then the sender's next Welcome queued for 21 (not full): the one kept goes */
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    kept_read(f, 21, 2, MSV_OK, "w2", 20);
    copy.device_id = 21;
    w.n_items = 1;
    w.n_left_out = 0;
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    kept_read(f, 21, 2, MSV_ERR_NOT_FOUND, NULL, 0);
    w.n_items = 0;
    w.n_left_out = 1;
    assert_int_equal(OPS(f)->mls_welcome_put(IMPL(f), &w), MSV_OK);
    assert_int_equal(kept[0], 1);
    kept_read(f, 21, 2, MSV_OK, "w2", 20);
    /* removed: no member, nothing kept */
    c.epoch = 3;
    c.n_added = 0;
    c.removed = &again;
    c.n_removed = 1;
    assert_int_equal(OPS(f)->mls_commit(IMPL(f), &c, &epoch), MSV_OK);
    kept_read(f, 21, 2, MSV_ERR_AUTH, NULL, 0);
}

static void test_prekeys_and_tokens(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "p"), d = make_device(f, a), b = make_account(f, "other");
    struct msv_one_time_prekey otk[3] = {{.id = 7}, {.id = 5}, {.id = 9}};
    struct msv_prekey_upload up = {
        .has_signed = 1, .signed_id = 1, .one_time = otk, .n_one_time = 3};
    struct msv_prekey_claimed c;
    uint32_t left = 0;
    uint32_t has_signed = 0;
    uint8_t hash[32], other[32];

    for (size_t i = 0; i < 3; i++)
        memset(otk[i].key, (int)otk[i].id, 32);
    memset(up.signed_key, 0x51, 32);
    memset(up.signed_sig, 0x52, 64);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(left, 3);
    assert_int_equal(has_signed, 1); /* the id of the signed prekey held */
    /* the same ids again add nothing; two new ones would make 5 > 4: refused, nothing kept */
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(left, 3);
    otk[0].id = 100;
    otk[1].id = 101;
    up.signed_id = 2;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_ERR_TOO_BIG);
    /* claims: the signed prekey is the old one still, one-time prekeys lowest id first */
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_OK);
    assert_int_equal(c.signed_id, 1);
    assert_int_equal(c.signed_key[0], 0x51);
    assert_int_equal(c.signed_sig[63], 0x52);
    assert_int_equal(c.one_time_id, 5);
    assert_int_equal(c.one_time_key[31], 5);
    /* without a one-time prekey: the signed prekey, and the one-time prekeys stay */
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 0, &c), MSV_OK);
    assert_int_equal(c.signed_id, 1);
    assert_int_equal(c.signed_key[0], 0x51);
    assert_int_equal(c.one_time_id, 0);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_OK);
    assert_int_equal(c.one_time_id, 7);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_OK);
    assert_int_equal(c.one_time_id, 9);
    /* none left: the signed prekey alone */
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_OK);
    assert_int_equal(c.one_time_id, 0);
    /* a new signed prekey replaces the old */
    up.n_one_time = 1;
    memset(up.signed_key, 0x61, 32);
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(left, 1);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_OK);
    assert_int_equal(c.signed_id, 2);
    assert_int_equal(c.signed_key[0], 0x61);
    assert_int_equal(c.one_time_id, 100);
    /* a restored device's upload drops the one-time prekeys whose secrets it lacks */
    otk[0].id = 200;
    otk[1].id = 201;
    otk[2].id = 202;
    up.has_signed = 0;
    up.n_one_time = 3;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(left, 3);
    otk[0].id = 300;
    otk[1].id = 301;
    up.n_one_time = 2;
    up.replace_one_time = 1;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(left, 2); /* 5 without the old three: no longer over 4 */
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_OK);
    assert_int_equal(c.one_time_id, 300);
    assert_int_equal(c.signed_id, 2);

    /* delivery tokens: only the account's own approved devices' tokens pass */
    memset(hash, 0xA1, 32);
    memset(other, 0xA2, 32);
    assert_int_equal(OPS(f)->delivery_token_check(IMPL(f), a, hash), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->delivery_token_set(IMPL(f), d, hash), MSV_OK);
    assert_int_equal(OPS(f)->delivery_token_check(IMPL(f), a, hash), MSV_OK);
    assert_int_equal(OPS(f)->delivery_token_check(IMPL(f), a, other), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->delivery_token_check(IMPL(f), b, hash), MSV_ERR_AUTH);
    assert_int_equal(OPS(f)->delivery_token_set(IMPL(f), 999999, hash), MSV_ERR_NOT_FOUND);

    /* removal drops the prekeys and the token */
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d), MSV_OK);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, &c), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->delivery_token_check(IMPL(f), a, hash), MSV_ERR_AUTH);
}

struct kem_claimer {
    struct msv_store *store;
    uint64_t device;
    uint32_t got[64];
    size_t n_got, last_resort;
};

static void *claim_kem_rounds(void *arg)
{
    struct kem_claimer *k = arg;
    struct msv_prekey_claimed *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(k->store->ops->prekey_claim(k->store->impl, k->device, 1, c), MSV_OK);
        if (c->kem_last_resort)
            k->last_resort++;
        else
            k->got[k->n_got++] = c->kem_id;
    }
    free(c);
    return NULL;
}

/*
 * KEM prekeys: a claim hands out a one-time KEM prekey once (lowest id
 * first, with the X25519 ones in the same transaction), then the last-resort
 * one; uploads replace the last-resort one and are bounded; two stores on
 * one database claiming at once never hand out the same key; removal drops
 * them.
 */
/*
 * A device and its first prekeys are stored together or not at all: storing its KEM prekey
 * fails (a trigger refuses the row), and neither the device, nor its signed prekey, nor a log
 * entry for it is left (a crash between the two used to leave a post-quantum device listed
 * without the keys every sender needs). Both backends.
 */
static void test_device_with_first_prekeys_atomic(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "atomic"), id = 0;
    struct msv_kem_prekey_rec *last = calloc(1, sizeof(*last));
    struct msv_prekey_upload first = {.has_signed = 1, .signed_id = 7, .kem_last_resort = last};
    long long devices, signed_keys, log;

    assert_non_null(last);
    last->id = 8;
    devices = count_rows(f, "SELECT count(*) FROM devices");
    signed_keys = count_rows(f, "SELECT count(*) FROM signed_prekeys");
    log = count_rows(f, "SELECT count(*) FROM kt_log");
    raw_exec(f, f->pg ? "CREATE FUNCTION refuse_kem() RETURNS trigger AS $$ BEGIN RAISE "
                        "EXCEPTION 'refused'; END $$ LANGUAGE plpgsql; CREATE TRIGGER refuse_kem "
                        "BEFORE INSERT ON kem_prekeys FOR EACH ROW EXECUTE FUNCTION refuse_kem();"
                      : "CREATE TRIGGER refuse_kem BEFORE INSERT ON kem_prekeys BEGIN SELECT "
                        "RAISE(ABORT, 'refused'); END;");
    assert_int_not_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8,
                                            (const uint8_t *)"token", 5, 1, 2000, &first, NULL,
                                            &id),
                         MSV_OK);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM devices"), devices);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM signed_prekeys"), signed_keys);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM kt_log"), log);
    /* without the trigger the same call stores both */
    raw_exec(f, f->pg ? "DROP TRIGGER refuse_kem ON kem_prekeys;" : "DROP TRIGGER refuse_kem;");
    assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8,
                                        (const uint8_t *)"token", 5, 1, 2000, &first, NULL, &id),
                     MSV_OK);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM devices"), devices + 1);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM signed_prekeys"), signed_keys + 1);
    assert_int_equal(count_rows(f, "SELECT count(*) FROM kem_prekeys WHERE last_resort = 1"), 1);
    free(last);
}

static void test_kem_prekeys(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "k"), d = make_device(f, a);
    struct msv_kem_prekey_rec *kem = calloc(64, sizeof(*kem)), last = {.id = 1000};
    struct msv_prekey_upload up = {.has_signed = 1, .signed_id = 1, .kem_last_resort = &last};
    struct msv_prekey_claimed *c = calloc(1, sizeof(*c));
    struct msv_store *other = NULL;
    struct kem_claimer k[2];
    pthread_t threads[2];
    uint32_t left = 0, kem_left = 0;
    uint32_t has_signed = 0, has_last = 0, seen[64] = {0};

    assert_non_null(kem);
    assert_non_null(c);
    memset(last.key, 0x4c, sizeof(last.key));
    memset(last.sig, 0x4d, sizeof(last.sig));
    for (uint32_t i = 0; i < 64; i++) {
        kem[i].id = 10 + i;
        memset(kem[i].key, (int)i, sizeof(kem[i].key));
        memset(kem[i].sig, (int)i + 1, sizeof(kem[i].sig));
    }
    memset(up.signed_key, 0x51, 32);
    memset(up.signed_sig, 0x52, 64);
    /* no KEM prekey yet: the bundle has none */
    up.kem_last_resort = NULL;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, c), MSV_OK);
    assert_int_equal(c->kem_id, 0);
    up.kem_last_resort = &last;
    up.kem_one_time = kem;
    up.n_kem_one_time = 3;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(OPS(f)->kem_prekey_state(IMPL(f), d, &kem_left, &has_last), MSV_OK);
    assert_int_equal(kem_left, 3);
    assert_int_equal(has_last, 1000); /* the id of the last-resort KEM prekey held */
    /* two more would make 5 > 4: refused, nothing kept (also not the new last-resort key) */
    up.kem_one_time = kem + 3;
    up.n_kem_one_time = 2;
    last.id = 2000;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_ERR_TOO_BIG);
    last.id = 1000;
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, c), MSV_OK);
        assert_int_equal(c->kem_id, 10 + i);
        assert_false(c->kem_last_resort);
        assert_int_equal(c->kem_key[1183], (uint8_t)i);
        assert_int_equal(c->kem_sig[0], (uint8_t)(i + 1));
    }
    /* none left: the last-resort one, as often as asked; a throttled claim gets it too */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, i, c), MSV_OK);
        assert_int_equal(c->kem_id, 1000);
        assert_true(c->kem_last_resort);
        assert_int_equal(c->kem_key[0], 0x4c);
        assert_int_equal(c->kem_sig[63], 0x4d);
    }
    /* a new last-resort key replaces the old */
    last.id = 1001;
    memset(last.key, 0x5c, sizeof(last.key));
    up.n_kem_one_time = 0;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, c), MSV_OK);
    assert_int_equal(c->kem_id, 1001);
    assert_int_equal(c->kem_key[0], 0x5c);
    /* two stores claim at once: each one-time key goes to exactly one of them */
    up.kem_one_time = kem;
    up.n_kem_one_time = 64;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 100, &left, &has_signed), MSV_OK);
    assert_int_equal(open_store(f, &other), MSV_OK);
    for (int i = 0; i < 2; i++) {
        memset(&k[i], 0, sizeof(k[i]));
        k[i].store = i ? other : f->store;
        k[i].device = d;
        assert_int_equal(pthread_create(&threads[i], NULL, claim_kem_rounds, &k[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    assert_int_equal(k[0].n_got + k[1].n_got, 64);
    assert_int_equal(k[0].last_resort + k[1].last_resort, 16);
    for (int i = 0; i < 2; i++) {
        for (size_t j = 0; j < k[i].n_got; j++) {
            assert_true(k[i].got[j] >= 10 && k[i].got[j] < 74);
            assert_int_equal(seen[k[i].got[j] - 10]++, 0);
        }
    }
    msv_store_close(other);
    /* a restored device's upload drops its one-time KEM prekeys too */
    up.n_kem_one_time = 2;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    up.kem_one_time = kem + 5;
    up.replace_one_time = 1;
    assert_int_equal(OPS(f)->prekeys_put(IMPL(f), d, &up, 4, &left, &has_signed), MSV_OK);
    assert_int_equal(OPS(f)->kem_prekey_state(IMPL(f), d, &kem_left, &has_last), MSV_OK);
    assert_int_equal(kem_left, 2);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), d, 1, c), MSV_OK);
    assert_int_equal(c->kem_id, 15);
    /* removal drops them */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d), MSV_OK);
    assert_int_equal(OPS(f)->kem_prekey_state(IMPL(f), d, &kem_left, &has_last), MSV_OK);
    assert_int_equal(kem_left, 0);
    assert_false(has_last);
    free(kem);
    free(c);
}

/* What operators see and change: accounts with their devices and queues, suspension, totals. */
static void test_operator_views(void **state)
{
    struct fixture *f = *state;
    uint64_t b = make_account(f, "b@x"), a = make_account(f, "a@x"), d = make_device(f, a), id = 0;
    struct msv_account_summary *list = NULL;
    struct msv_store_stats st;
    struct msv_queue_in in = {.device_id = d,
                              .sender_device = 1,
                              .sender_handle = "b@x",
                              .suite = 3,
                              .ciphertext = (const uint8_t *)"12345",
                              .ciphertext_len = 5};
    size_t n = 0;
    int suspended = -1;

    struct msv_queue_usage use[3] = {{.device_id = d}, {.device_id = 999999}, {.device_id = d}};
    struct msv_prekey_upload first = {.has_signed = 1, .signed_id = 77};
    struct msv_prekey_claimed claimed;

    in.sender_device = make_device(f, b);
    /* a device comes with its first prekeys, in the same transaction */
    assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8,
                                        (const uint8_t *)"token", 5, 0, 2000, &first, NULL, &id),
                     MSV_OK);
    assert_int_equal(OPS(f)->prekey_claim(IMPL(f), id, 0, &claimed), MSV_OK);
    assert_int_equal(claimed.signed_id, 77);
    assert_int_equal(OPS(f)->queue_put(IMPL(f), &in, 1, 1500, 100000, &id), MSV_OK);
    /* what waits for each device, for the queue caps (a device may be named twice) */
    assert_int_equal(OPS(f)->queue_usage(IMPL(f), use, 3), MSV_OK);
    assert_int_equal(use[0].envelopes, 1);
    assert_int_equal(use[0].bytes, 5);
    assert_int_equal(use[1].envelopes + use[1].bytes, 0);
    assert_int_equal(use[2].bytes, 5);
    assert_int_equal(OPS(f)->queue_usage(IMPL(f), use, 0), MSV_OK);
    assert_int_equal(OPS(f)->account_list(IMPL(f), &list, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].handle, "a@x");
    assert_int_equal(list[0].devices, 1);
    assert_int_equal(list[0].pending, 1);
    assert_int_equal(list[0].queued, 1);
    assert_int_equal(list[0].queued_bytes, 5);
    assert_int_equal(list[0].sending + list[0].sending_bytes, 0);
    assert_int_equal(list[0].created_ms, 1000);
    assert_string_equal(list[1].handle, "b@x");
    assert_int_equal(list[1].devices, 1);
    assert_int_equal(list[1].pending + list[1].queued + list[1].queued_bytes, 0);
    /* b's device sent it: b's totals say so */
    assert_int_equal(list[1].sending, 1);
    assert_int_equal(list[1].sending_bytes, 5);
    assert_int_equal(list[0].attachment_bytes, 0);
    msv_account_summaries_free(list, n);
    assert_int_equal(OPS(f)->account_suspended(IMPL(f), a, &suspended), MSV_OK);
    assert_int_equal(suspended, 0);
    assert_int_equal(OPS(f)->account_set_suspended(IMPL(f), "a@x", 1), MSV_OK);
    assert_int_equal(OPS(f)->account_suspended(IMPL(f), a, &suspended), MSV_OK);
    assert_int_equal(suspended, 1);
    assert_int_equal(OPS(f)->account_set_suspended(IMPL(f), "nobody@x", 1), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->account_suspended(IMPL(f), 999999, &suspended), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->stats(IMPL(f), &st), MSV_OK);
    assert_int_equal(st.accounts, 2);
    assert_int_equal(st.suspended, 1);
    assert_int_equal(st.devices, 2);
    assert_int_equal(st.pending_devices, 1);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.queued_bytes, 5);
    assert_int_equal(st.oldest_queued_ms, 1500);
    assert_true(st.database_bytes >= 4096); /* a page at least, whatever the backend */
    assert_int_equal(OPS(f)->account_set_suspended(IMPL(f), "a@x", 0), MSV_OK);
    assert_int_equal(OPS(f)->stats(IMPL(f), &st), MSV_OK);
    assert_int_equal(st.suspended, 0);
}

/* Abuse reports: only about an account that exists, bounded per reporter over a window. */
static void test_reports(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "a@x"), id1 = 0, id2 = 0, id3 = 0, none = 0;
    struct msv_report *list = NULL, *one = NULL;
    size_t n = 0;

    make_account(f, "b@x");
    assert_int_equal(OPS(f)->report_add(IMPL(f), a, "b@x", "spam", "buy now", 1000, 0, 2, &id1),
                     MSV_OK);
    assert_int_equal(OPS(f)->report_add(IMPL(f), a, "nobody@x", "", "", 1100, 0, 2, &none),
                     MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->report_add(IMPL(f), a, "b@x", "", "", 1200, 0, 2, &id2), MSV_OK);
    /* two within the window: the third waits until the first leaves it */
    assert_int_equal(OPS(f)->report_add(IMPL(f), a, "b@x", "", "", 1300, 900, 2, &none),
                     MSV_ERR_AGAIN);
    assert_int_equal(OPS(f)->report_add(IMPL(f), a, "b@x", "again", "", 2100, 1100, 2, &id3),
                     MSV_OK);
    assert_true(id1 < id2 && id2 < id3 && none == 0);
    assert_int_equal(OPS(f)->report_list(IMPL(f), 2, &list, &n), MSV_OK);
    assert_int_equal(n, 2); /* the newest first, at most the limit */
    assert_int_equal(list[0].id, id3);
    assert_int_equal(list[1].id, id2);
    assert_string_equal(list[0].reason, "again");
    msv_reports_free(list, n);
    assert_int_equal(OPS(f)->report_get(IMPL(f), id1, &one), MSV_OK);
    assert_string_equal(one->reporter, "a@x");
    assert_string_equal(one->reported, "b@x");
    assert_string_equal(one->reason, "spam");
    assert_string_equal(one->text, "buy now");
    assert_int_equal(one->created_ms, 1000);
    assert_string_equal(one->state, "open");
    msv_reports_free(one, 1);
    one = NULL;
    assert_int_equal(OPS(f)->report_set_state(IMPL(f), id1, "dismissed"), MSV_OK);
    assert_int_equal(OPS(f)->report_get(IMPL(f), id1, &one), MSV_OK);
    assert_string_equal(one->state, "dismissed");
    msv_reports_free(one, 1);
    one = NULL;
    assert_int_equal(OPS(f)->report_get(IMPL(f), id3 + 100, &one), MSV_ERR_NOT_FOUND);
    assert_null(one);
    assert_int_equal(OPS(f)->report_set_state(IMPL(f), id3 + 100, "open"), MSV_ERR_NOT_FOUND);
}

struct invite_taker {
    struct msv_store *store;
    const uint8_t *hash;
    int taken;
};

static void *take_invites(void *arg)
{
    struct invite_taker *t = arg;

    for (int i = 0; i < 20; i++)
        if (t->store->ops->invite_take(t->store->impl, t->hash, 5000, 0) == MSV_OK)
            t->taken++;
    return NULL;
}

static void test_invites(void **state)
{
    struct fixture *f = *state;
    uint8_t h1[32], h2[32], h3[32], unknown[32];
    uint64_t id1 = 0, id2 = 0, id3 = 0;
    struct msv_invite *list = NULL;
    struct msv_store *other = NULL;
    struct invite_taker t[4];
    pthread_t threads[4];
    size_t n = 0;
    int taken = 0;

    memset(h1, 1, 32);
    memset(h2, 2, 32);
    memset(h3, 3, 32);
    memset(unknown, 9, 32);
    assert_int_equal(OPS(f)->invite_add(IMPL(f), h1, "for the book club", 2, 1000, 0, &id1),
                     MSV_OK);
    assert_int_equal(OPS(f)->invite_add(IMPL(f), h2, "", 1, 1000, 3000, &id2), MSV_OK);
    assert_int_equal(OPS(f)->invite_add(IMPL(f), h3, "", 5, 1000, 0, &id3), MSV_OK);
    assert_int_equal(OPS(f)->invite_add(IMPL(f), h3, "", 1, 1000, 0, &id3), MSV_ERR_EXISTS);
    assert_true(id1 < id2 && id2 < id3);
    /* a dry run takes nothing */
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h1, 2000, 1), MSV_OK);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h1, 2000, 1), MSV_OK);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h1, 2000, 0), MSV_OK);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h1, 2000, 0), MSV_OK);
    /* two uses, then none; a use given back can be taken again */
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h1, 2000, 1), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h1, 2000, 0), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->invite_give_back(IMPL(f), h1), MSV_OK);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h1, 2000, 0), MSV_OK);
    /* expired at its time */
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h2, 3000, 1), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h2, 3000, 0), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), unknown, 2000, 0), MSV_ERR_NOT_FOUND);
    /* revoked: nothing more, whatever is left */
    assert_int_equal(OPS(f)->invite_revoke(IMPL(f), id2), MSV_OK);
    assert_int_equal(OPS(f)->invite_take(IMPL(f), h2, 2000, 0), MSV_ERR_NOT_FOUND);
    assert_int_equal(OPS(f)->invite_revoke(IMPL(f), id3 + 100), MSV_ERR_NOT_FOUND);
    /* four takers on two stores of one database: five uses, five registrations */
    assert_int_equal(open_store(f, &other), MSV_OK);
    for (int i = 0; i < 4; i++) {
        t[i] = (struct invite_taker){i % 2 ? other : f->store, h3, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, take_invites, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        taken += t[i].taken;
    }
    msv_store_close(other);
    assert_int_equal(taken, 5);
    assert_int_equal(OPS(f)->invite_list(IMPL(f), &list, &n), MSV_OK);
    assert_int_equal(n, 3);
    assert_int_equal(list[0].id, id1);
    assert_string_equal(list[0].note, "for the book club");
    assert_int_equal(list[0].uses_left, 0);
    assert_int_equal(list[0].used, 2);
    assert_int_equal(list[0].created_ms, 1000);
    assert_int_equal(list[0].expires_ms, 0);
    assert_false(list[0].revoked);
    assert_int_equal(list[1].expires_ms, 3000);
    assert_true(list[1].revoked);
    assert_int_equal(list[2].uses_left, 0);
    assert_int_equal(list[2].used, 5);
    msv_invites_free(list, n);
}

static void test_blobs(void **state)
{
    struct fixture *f = *state;
    struct msv_blob_rec r = {.owner_device = 4, .size = 1000, .expires_ms = 500}, got;
    uint8_t(*ids)[MSV_BLOB_ID_LEN] = NULL;
    size_t n = 0;

    memset(r.id, 0xab, MSV_BLOB_ID_LEN);
    assert_int_equal(OPS(f)->blob_create(IMPL(f), &r), MSV_OK);
    assert_int_equal(OPS(f)->blob_create(IMPL(f), &r), MSV_ERR_EXISTS);
    r.received = 1000;
    r.complete = 1;
    memset(r.sha256, 0x5c, 32);
    r.expires_ms = 400; /* moved, here earlier: the update writes it */
    assert_int_equal(OPS(f)->blob_update(IMPL(f), &r), MSV_OK);
    assert_int_equal(OPS(f)->blob_get(IMPL(f), r.id, &got), MSV_OK);
    assert_int_equal(got.received, 1000);
    assert_true(got.complete);
    assert_int_equal(got.owner_device, 4);
    assert_int_equal(got.expires_ms, 400);
    assert_memory_equal(got.sha256, r.sha256, 32);
    r.expires_ms = 500;
    assert_int_equal(OPS(f)->blob_update(IMPL(f), &r), MSV_OK);
    assert_int_equal(OPS(f)->blob_expire(IMPL(f), 499, 10, &ids, &n), MSV_OK);
    assert_int_equal(n, 0);
    free(ids);
    /* two more due: at most max go at once, the soonest due first */
    {
        struct msv_blob_rec more = r;

        for (int i = 0; i < 2; i++) {
            more.id[0] = (uint8_t)(0xe0 + i);
            more.expires_ms = 300 + i;
            assert_int_equal(OPS(f)->blob_create(IMPL(f), &more), MSV_OK);
        }
        assert_int_equal(OPS(f)->blob_expire(IMPL(f), 500, 2, &ids, &n), MSV_OK);
        assert_int_equal(n, 2);
        assert_true((ids[0][0] == 0xe0 && ids[1][0] == 0xe1) ||
                    (ids[0][0] == 0xe1 && ids[1][0] == 0xe0));
        free(ids);
    }
    assert_int_equal(OPS(f)->blob_expire(IMPL(f), 500, 2, &ids, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(ids[0], r.id, MSV_BLOB_ID_LEN);
    free(ids);
    assert_int_equal(OPS(f)->blob_get(IMPL(f), r.id, &got), MSV_ERR_NOT_FOUND);
    r.id[0] = 1;
    assert_int_equal(OPS(f)->blob_update(IMPL(f), &r), MSV_ERR_NOT_FOUND);
}

/* What a device and its account hold: unfinished uploads and bytes, expired ones not counted. */
static void test_blob_usage(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "a@x"), b = make_account(f, "b@x");
    uint64_t d1 = make_device(f, a), d2 = make_device(f, a), e = make_device(f, b);
    struct msv_blob_rec r[4] = {{.owner_device = d1, .size = 100, .expires_ms = 1000},
                                {.owner_device = d1, .size = 20, .expires_ms = 2000, .complete = 1},
                                {.owner_device = d2, .size = 3, .expires_ms = 2000},
                                {.owner_device = e, .size = 7000, .expires_ms = 2000}};
    struct msv_blob_usage u;
    struct msv_account_summary *list = NULL;
    size_t n = 0;

    for (int i = 0; i < 4; i++) {
        memset(r[i].id, i + 1, MSV_BLOB_ID_LEN);
        assert_int_equal(OPS(f)->blob_create(IMPL(f), &r[i]), MSV_OK);
    }
    assert_int_equal(OPS(f)->blob_usage(IMPL(f), d1, 500, &u), MSV_OK);
    assert_int_equal(u.open, 1);
    assert_int_equal(u.device_bytes, 120);
    assert_int_equal(u.account_bytes, 123);
    assert_int_equal(OPS(f)->blob_usage(IMPL(f), d2, 500, &u), MSV_OK);
    assert_int_equal(u.open, 1);
    assert_int_equal(u.device_bytes, 3);
    assert_int_equal(u.account_bytes, 123);
    /* the first has expired by 1000 */
    assert_int_equal(OPS(f)->blob_usage(IMPL(f), d1, 1000, &u), MSV_OK);
    assert_int_equal(u.open, 0);
    assert_int_equal(u.device_bytes, 20);
    assert_int_equal(u.account_bytes, 23);
    assert_int_equal(OPS(f)->blob_usage(IMPL(f), 999999, 500, &u), MSV_OK);
    assert_int_equal(u.open + u.device_bytes + u.account_bytes, 0);
    /* operators see each account's attachment bytes (until the sweep, expired ones too) */
    assert_int_equal(OPS(f)->account_list(IMPL(f), &list, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].attachment_bytes, 123);
    assert_int_equal(list[1].attachment_bytes, 7000);
    msv_account_summaries_free(list, n);
    /* a removed device's attachments stay its account's: in its quota, its operator's view,
     * and its deletion (before, removing the device freed them from the account's quota and
     * its deletion left them, readable by their ids) */
    assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d2), MSV_OK);
    assert_int_equal(OPS(f)->blob_usage(IMPL(f), d1, 500, &u), MSV_OK);
    assert_int_equal(u.account_bytes, 123);
    assert_int_equal(OPS(f)->account_list(IMPL(f), &list, &n), MSV_OK);
    assert_int_equal(list[0].attachment_bytes, 123);
    msv_account_summaries_free(list, n);
    {
        struct msv_account_deleted del = {0};
        struct msv_blob_rec got;

        assert_int_equal(OPS(f)->account_delete(IMPL(f), "a@x", 9000, &del), MSV_OK);
        assert_int_equal(del.n_blobs, 3);
        msv_account_deleted_clear(&del);
        assert_int_equal(OPS(f)->blob_get(IMPL(f), r[2].id, &got), MSV_ERR_NOT_FOUND);
        assert_int_equal(OPS(f)->blob_get(IMPL(f), r[3].id, &got), MSV_OK);
    }
}

/*
 * PostgreSQL: an attachment a node of an older missived wrote during a rolling upgrade (no
 * account) is given its device's account when a store opens, so that its account's quota and
 * deletion count it.
 */
static void test_blob_account_backfilled(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "older@x"), d = make_device(f, a);
    struct msv_blob_usage u;
    char sql[256];

    snprintf(sql, sizeof(sql),
             "INSERT INTO blobs (id, owner_device, size, received, complete, sha256, expires_ms,"
             " account_id) VALUES ('\\x0102'::BYTEA, %llu, 77, 77, TRUE, '\\x00'::BYTEA, 5000, 0);",
             (unsigned long long)d);
    raw_exec(f, sql);
    assert_int_equal(OPS(f)->blob_usage(IMPL(f), d, 500, &u), MSV_OK);
    assert_int_equal(u.account_bytes, 0);
    reopen(f);
    assert_int_equal(OPS(f)->blob_usage(IMPL(f), d, 500, &u), MSV_OK);
    assert_int_equal(u.account_bytes, 77);
}

/* What was committed survives closing; a database from a newer schema is refused. */
static void test_reopen_and_schema(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_account(f, "persist@example.org"), got = 0, d = make_device(f, a);
    const char *table = f->pg ? "missive_schema" : "schema_version";
    char sql[128];

    reopen(f);
    assert_int_equal(OPS(f)->account_get(IMPL(f), "persist@example.org", &got, NULL), MSV_OK);
    assert_int_equal(got, a);
    msv_store_close(f->store);
    f->store = NULL;
    snprintf(sql, sizeof(sql), "INSERT INTO %s VALUES (99);", table);
    raw_exec(f, sql);
    assert_int_equal(open_store(f, &f->store), MSV_ERR_UNSUPPORTED);
    assert_null(f->store);
    /* the teardown needs a store to close */
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE version = 99;", table);
    raw_exec(f, sql);
    /*
     * a database of version 6 gets version 7's index of attachments by owner, version 8's
     * queue counters, which start from what is queued, version 9's reports, version 10's
     * invites, version 11's refused sends, version 13's handles, which start from the
     * accounts' own, version 15's key directory labels, version 16's username stamps,
     * which start at never, version 18's published leaves, version 19's approval
     * records, unsigned for the devices approved before, version 20's MLS commit logs, and
     * (PostgreSQL) version 22's order of connections
     */
    reopen(f);
    assert_int_equal(OPS(f)->queue_put(IMPL(f),
                                       &(struct msv_queue_in){.device_id = 42,
                                                              .sender_device = 1,
                                                              .sender_handle = "x",
                                                              .suite = 3,
                                                              .ciphertext = (const uint8_t *)"abc",
                                                              .ciphertext_len = 3},
                                       1, 0, 100, &got),
                     MSV_OK);
    msv_store_close(f->store);
    f->store = NULL;
    raw_exec(
        f, f->pg ? "DROP INDEX blobs_by_owner; DROP TABLE queue_usage;"
                   " DROP TRIGGER queue_usage_in ON queue; DROP TRIGGER queue_usage_out ON queue;"
                   " DROP FUNCTION queue_usage_add; DROP FUNCTION queue_usage_sub;"
                   " DROP TRIGGER queue_bodies_out ON queue; DROP FUNCTION queue_bodies_sub;"
                   " DROP TABLE queue_bodies; ALTER TABLE queue DROP COLUMN body_id,"
                   " DROP COLUMN body_len;"
                   " DROP TABLE reports; DROP TABLE invites; DROP TABLE queue_refusals;"
                   " DROP TABLE account_handles; DROP TABLE kem_prekeys; DROP TABLE kt_labels;"
                   " ALTER TABLE accounts DROP COLUMN username_changed_ms;"
                   " DROP TABLE mls_key_packages; DROP TABLE mls_groups; DROP TABLE mls_members;"
                   " DROP TABLE mls_claims; ALTER TABLE kt_log DROP COLUMN pub;"
                   " DROP TABLE device_approvals; DROP TABLE mls_commit_log;"
                   " DROP SEQUENCE connection_order; ALTER TABLE blobs DROP COLUMN account_id;"
                   " UPDATE missive_schema SET version = 6;"
                 : "DROP INDEX blobs_by_owner; DROP TABLE queue_usage;"
                   " DROP TRIGGER queue_usage_in; DROP TRIGGER queue_usage_out;"
                   " DROP TRIGGER queue_bodies_out; DROP TABLE queue_bodies;"
                   " ALTER TABLE queue DROP COLUMN body_id; ALTER TABLE queue DROP COLUMN body_len;"
                   " DROP TABLE reports; DROP TABLE invites; DROP TABLE queue_refusals;"
                   " DROP TRIGGER account_seq_up; DROP TABLE account_seq;"
                   " DROP TABLE account_handles; DROP TABLE kem_prekeys; DROP TABLE kt_labels;"
                   " ALTER TABLE accounts DROP COLUMN username_changed_ms;"
                   " DROP TABLE mls_key_packages; DROP TABLE mls_groups; DROP TABLE mls_members;"
                   " DROP TABLE mls_claims; ALTER TABLE kt_log DROP COLUMN pub;"
                   " DROP TABLE device_approvals; DROP TABLE mls_commit_log;"
                   " DROP INDEX blobs_by_account; ALTER TABLE blobs DROP COLUMN account_id;"
                   " DELETE FROM schema_version WHERE version >= 7;");
    reopen(f);
    raw_exec(f, "DROP INDEX blobs_by_owner; CREATE INDEX blobs_by_owner ON blobs(owner_device);");
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM mls_commit_log"), 0);
    assert_int_equal(count_rows(f, "SELECT COUNT(since_epoch) FROM mls_members"), 0);
    assert_int_equal(count_rows(f, "SELECT COUNT(welcome) + COUNT(added_by) FROM mls_members"), 0);
    assert_int_equal(count_rows(f, "SELECT COUNT(added_by_account) FROM mls_members"), 0);
    {
        uint64_t order = 0;

        assert_int_equal(OPS(f)->connection_order(IMPL(f), &order), MSV_OK);
        assert_true(order > 0);
    }
    assert_usage(f, 42, 1, 3);
    assert_int_equal(OPS(f)->report_add(IMPL(f), a, "persist@example.org", "", "", 1, 0, 1, &got),
                     MSV_OK);
    {
        uint8_t h[32] = {7};

        assert_int_equal(OPS(f)->invite_add(IMPL(f), h, "", 1, 1, 0, &got), MSV_OK);
        assert_int_equal(OPS(f)->invite_take(IMPL(f), h, 2, 0), MSV_OK);
    }
    {
        /* version 15's key directory labels: kept, read back in order, one replaced */
        struct msv_kt_rec put[3] = {
            {.index = 4, .leaf = (uint8_t *)"0123456789abcdef0123456789abcdef", .leaf_len = 32},
            {.index = 1, .leaf = (uint8_t *)"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", .leaf_len = 32},
            {.index = 4, .leaf = (uint8_t *)"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", .leaf_len = 32}};
        struct msv_kt_rec *recs = NULL;
        size_t n = 0;

        assert_int_equal(OPS(f)->kt_labels_read(IMPL(f), 0, 10, &recs, &n), MSV_OK);
        assert_int_equal(n, 0);
        msv_kt_recs_free(recs, n);
        assert_int_equal(OPS(f)->kt_labels_put(IMPL(f), put, 3), MSV_OK);
        assert_int_equal(OPS(f)->kt_labels_read(IMPL(f), 0, 10, &recs, &n), MSV_OK);
        assert_int_equal(n, 2);
        assert_int_equal(recs[0].index, 1);
        assert_int_equal(recs[1].index, 4);
        assert_int_equal(recs[1].leaf_len, 32);
        assert_memory_equal(recs[1].leaf, put[2].leaf, 32);
        msv_kt_recs_free(recs, n);
        assert_int_equal(OPS(f)->kt_labels_read(IMPL(f), 2, 10, &recs, &n), MSV_OK);
        assert_int_equal(n, 1);
        msv_kt_recs_free(recs, n);
    }
    {
        /* version 18's published leaves: kept once, read with the entry */
        struct msv_kt_rec *recs = NULL;
        size_t n = 0, m = 0;

        assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 1000, &recs, &n), MSV_OK);
        msv_kt_recs_free(recs, n);
        assert_int_equal(OPS(f)->kt_append(IMPL(f), n, (const uint8_t *)"entry", 5), MSV_OK);
        assert_int_equal(OPS(f)->kt_publish(IMPL(f), n, (const uint8_t *)"published", 9), MSV_OK);
        assert_int_equal(OPS(f)->kt_publish(IMPL(f), n, (const uint8_t *)"other", 5), MSV_OK);
        assert_int_equal(OPS(f)->kt_read(IMPL(f), n, 10, &recs, &m), MSV_OK);
        assert_int_equal(m, 1);
        assert_int_equal(recs[0].leaf_len, 5);
        assert_int_equal(recs[0].pub_len, 9);
        assert_memory_equal(recs[0].pub, "published", 9);
        msv_kt_recs_free(recs, m);
    }
    {
        /* version 19's approval records: a device approved before has an unsigned one, kept as
         * a chain record when it approved a device and is removed */
        static struct msv_kt_entry e;
        struct msv_kt_approval by_d = {MSV_KT_APPROVED, d, (const uint8_t *)"s", 1};
        struct msv_kt_rec latest;
        uint64_t q = 0;

        assert_int_equal(OPS(f)->device_add(IMPL(f), a, 3, (const uint8_t *)"identity", 8, NULL, 0,
                                            0, 3000, NULL, NULL, &q),
                         MSV_OK);
        assert_int_equal(OPS(f)->device_approve(IMPL(f), a, q, &by_d), MSV_OK);
        assert_int_equal(OPS(f)->device_remove(IMPL(f), a, d), MSV_OK);
        assert_int_equal(OPS(f)->kt_latest(IMPL(f), "persist@example.org", &latest), MSV_OK);
        assert_int_equal(msv_kt_leaf_parse(latest.leaf, latest.leaf_len, &e), MSV_OK);
        assert_int_equal(e.n_chain, 1);
        assert_int_equal(e.chain[0].device_id, d);
        assert_int_equal(e.chain[0].approval.kind, MSV_KT_UNSIGNED);
        free(latest.leaf);
    }
    {
        uint64_t refused = 0;

        assert_int_equal(OPS(f)->queue_refusal_add(IMPL(f), &(uint64_t){42}, 1), MSV_OK);
        assert_int_equal(OPS(f)->queue_refusal_take(IMPL(f), 42, &refused), MSV_OK);
        assert_int_equal(refused, 1);
    }
    {
        int64_t last = -1;

        assert_int_equal(OPS(f)->username_stamp(IMPL(f), a, 5000, 1000, &last), MSV_OK);
        assert_int_equal(last, 0);
    }
    {
        /* version 17's MLS tables: a KeyPackage kept and claimed, a group started */
        const uint8_t *kp[1] = {(const uint8_t *)"kp"};
        size_t len = 2;
        uint32_t left = 0;
        int lr = 0;
        uint64_t epoch = 9, ids[1];
        uint8_t *kp_got = NULL;

        raw_devices(f, (const uint64_t[]){42}, 1); /* the group's first member */
        assert_int_equal(OPS(f)->mls_key_packages_put(
                             IMPL(f), 42,
                             &(struct msv_mls_key_package_upload){.kps = kp, .lens = &len, .n = 1},
                             10, &left, &lr),
                         MSV_OK);
        assert_int_equal(left, 1);
        assert_int_equal(
            OPS(f)->mls_key_package_claim(IMPL(f), 42, 0, 1, 0, 1000, 10, &kp_got, &len, &lr),
            MSV_OK);
        free(kp_got);
        assert_int_equal(OPS(f)->mls_commit(IMPL(f),
                                            &(struct msv_mls_commit){.group_id = (uint8_t *)"g",
                                                                     .group_len = 1,
                                                                     .sender = 42,
                                                                     .max_members = 10,
                                                                     .max_groups = 10,
                                                                     .ids = ids},
                                            &epoch),
                         MSV_OK);
        assert_int_equal(epoch, 1);
    }
    if (f->pg) {
        struct msv_store *none = NULL;
        char why[256];

        assert_int_equal(msv_store_open_postgres("host=127.0.0.1 port=1 connect_timeout=2", 1, 0, 0,
                                                 why, sizeof(why), &none),
                         MSV_ERR_IO);
        assert_true(strlen(why) > 0); /* what libpq said: "connection refused" or the like */
        assert_null(none);
    } else {
        assert_int_equal(msv_store_open_sqlite("/nonexistent-dir/x.db", &f->store), MSV_ERR_IO);
    }
}

/*
 * Nodes sharing one PostgreSQL database: four writers (two store handles, as
 * two nodes, two threads each) enqueue for the same devices while a reader
 * follows each device with queue_fetch(after the last id it saw); it must
 * see every envelope exactly once, in id order, which holds only if ids
 * become visible in commit order per device. Log appends from both handles
 * keep indexes dense.
 */
struct writer {
    struct msv_store *store;
    uint64_t devices[2];
    int rounds;
    _Atomic int *running;
};

static void *write_rounds(void *arg)
{
    struct writer *w = arg;
    uint8_t text[32] = {1};

    for (int i = 0; i < w->rounds; i++) {
        struct msv_queue_in in[3] = {
            {w->devices[0], 7, "a", 4, text, sizeof(text), 0, 0},
            {w->devices[1], 7, "a", 4, text, sizeof(text), 0, 0},
            {w->devices[i % 2], 7, "", 4, text, 1, 0, 0},
        };
        uint64_t ids[3];

        if (w->store->ops->queue_put(w->store->impl, in, 3, 1, 1LL << 50, ids) != MSV_OK)
            break;
    }
    (*w->running)--;
    return NULL;
}

/* One side of a race on an account: a handle added, or the account deleted, or a device removed. */
struct racer {
    struct msv_store *store;
    pthread_barrier_t *start;
    uint64_t account, device;
    const char *handle; /* handle_add's; account_delete's (the account's) */
    int what;           /* 0: handle_add, 1: account_delete, 2: device_remove */
    msv_err err;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct msv_account_deleted del = {0};

    pthread_barrier_wait(r->start);
    if (r->what == 0)
        r->err = r->store->ops->handle_add(r->store->impl, r->account, r->handle, 10, 5000);
    else if (r->what == 1)
        r->err = r->store->ops->account_delete(r->store->impl, r->handle, 5000, &del);
    else
        r->err = r->store->ops->device_remove(r->store->impl, r->account, r->device);
    msv_account_deleted_clear(&del);
    return NULL;
}

/* Runs a and b at once, each on its own store (connection). */
static void run_race(struct racer *a, struct racer *b)
{
    pthread_barrier_t start;
    pthread_t t[2];

    assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
    a->start = b->start = &start;
    assert_int_equal(pthread_create(&t[0], NULL, race, a), 0);
    assert_int_equal(pthread_create(&t[1], NULL, race, b), 0);
    assert_int_equal(pthread_join(t[0], NULL), 0);
    assert_int_equal(pthread_join(t[1], NULL), 0);
    pthread_barrier_destroy(&start);
}

/*
 * A handle added while its account is deleted, or while a device of it is removed (which
 * writes every handle's leaf), on two connections at once: whichever comes first, the result is
 * one order of the two. No handle is left of a deleted account, and its newest log entry is its
 * tombstone; every handle's newest leaf lists the account's devices as they are.
 */
static void test_handle_races(void **state)
{
    struct fixture *f = *state;
    struct msv_store *other = NULL;
    char name[64], added[64], devs[64], want[64];

    assert_int_equal(open_store(f, &other), MSV_OK);
    for (int i = 0; i < 40; i++) {
        uint64_t acc, d1, d2, got = 0;
        struct racer add = {f->store, NULL, 0, 0, added, 0, 0}, other_side;

        snprintf(name, sizeof(name), "r%d@x", i);
        snprintf(added, sizeof(added), "h%d@x", i);
        acc = make_account(f, name);
        d1 = make_device(f, acc);
        d2 = make_device(f, acc);
        add.account = acc;
        other_side = (struct racer){other, NULL, acc, d2, name, 1 + i % 2, 0};
        run_race(&add, &other_side);
        assert_int_equal(other_side.err, MSV_OK);
        if (other_side.what == 1) {
            /* deleted: nothing of the account is found by the new handle, whose log says so */
            assert_int_equal(OPS(f)->account_get(IMPL(f), added, &got, NULL), MSV_ERR_NOT_FOUND);
            if (add.err == MSV_OK)
                assert_true(newest_leaf(f, added, devs, sizeof(devs)));
            continue;
        }
        assert_int_equal(add.err, MSV_OK);
        snprintf(want, sizeof(want), "%llu", (unsigned long long)d1);
        assert_false(newest_leaf(f, name, devs, sizeof(devs)));
        assert_string_equal(devs, want);
        assert_false(newest_leaf(f, added, devs, sizeof(devs)));
        assert_string_equal(devs, want);
    }
    msv_store_close(other);
}

static void test_nodes_share_database(void **state)
{
    struct fixture *f = *state;
    uint64_t acc = make_account(f, "a"), dev[2] = {make_device(f, acc), make_device(f, acc)};
    struct msv_store *other = NULL;
    struct writer w[4];
    pthread_t threads[4];
    uint64_t last[2] = {0, 0}, seen[2] = {0, 0};
    const uint64_t want = 4 * 200 + 4 * 100; /* per device: 2 each round, and the third half */
    struct msv_kt_rec *recs = NULL;
    size_t n = 0;
    _Atomic int running = 4;

    assert_int_equal(open_store(f, &other), MSV_OK);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){i % 2 ? other : f->store, {dev[0], dev[1]}, 200, &running};
        assert_int_equal(pthread_create(&threads[i], NULL, write_rounds, &w[i]), 0);
    }
    while (seen[0] + seen[1] < 2 * want && running > 0) {
        for (int d = 0; d < 2; d++) {
            struct msv_queue_rec *q = NULL;
            size_t count = 0;

            assert_int_equal(OPS(f)->queue_fetch(IMPL(f), dev[d], last[d], 2, 1000, &q, &count),
                             MSV_OK);
            for (size_t i = 0; i < count; i++) {
                assert_true(q[i].id > last[d]);
                last[d] = q[i].id;
            }
            seen[d] += count;
            msv_queue_recs_free(q, count);
        }
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    /* whatever the race left: a last read finds the rest, which must not be below what was seen */
    for (int d = 0; d < 2; d++) {
        struct msv_queue_rec *q = NULL;
        size_t count = 0;
        uint64_t total = 0;

        assert_int_equal(OPS(f)->queue_fetch(IMPL(f), dev[d], last[d], 2, 100000, &q, &count),
                         MSV_OK);
        seen[d] += count;
        msv_queue_recs_free(q, count);
        assert_int_equal(seen[d], want);
        assert_int_equal(OPS(f)->queue_fetch(IMPL(f), dev[d], 0, 2, 100000, &q, &count), MSV_OK);
        total = count;
        msv_queue_recs_free(q, count);
        assert_int_equal(total, want);
    }
    /* device changes through both handles: the log's indexes stay 0, 1, 2, ... */
    for (int i = 0; i < 10; i++) {
        struct msv_store *s = i % 2 ? other : f->store;
        uint64_t id = 0;

        assert_int_equal(s->ops->device_add(s->impl, acc, 3, (const uint8_t *)"identity", 8, NULL,
                                            0, 1, 3000, NULL, NULL, &id),
                         MSV_OK);
    }
    assert_int_equal(OPS(f)->kt_read(IMPL(f), 0, 100, &recs, &n), MSV_OK);
    assert_int_equal(n, 12);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(recs[i].index, i);
    msv_kt_recs_free(recs, n);
    msv_store_close(other);
}

/*
 * The attachment files the orphan sweep looks at: those last written before a time, the lowest
 * ids above the last one given, in order, so that a walk going on from where the last batch
 * ended reaches every old file, however many there are before it. Before, each sweep listed the
 * same first files the directory gave, recorded ones too, and never got past them.
 */
static void test_blob_dir_walk(void **state)
{
    struct fixture *f = *state;
    struct msv_blob_backend *b = NULL;
    uint8_t ids[10][MSV_BLOB_ID_LEN], after[MSV_BLOB_ID_LEN];
    const struct timespec old[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    char dir[128], path[200], hex[2 * MSV_BLOB_ID_LEN + 1];
    size_t walked = 0, batches = 0;
    int have_after = 0;

    snprintf(dir, sizeof(dir), "%s/blobs", f->dir);
    assert_int_equal(msv_blob_backend_open_dir(dir, &b), MSV_OK);
    for (int i = 0; i < 11; i++) {
        uint8_t id[MSV_BLOB_ID_LEN];

        msv_random_bytes(id, sizeof(id));
        assert_int_equal(b->ops->create(b->impl, id), MSV_OK);
        assert_int_equal(b->ops->write_at(b->impl, id, 0, (const uint8_t *)"x", 1), MSV_OK);
        if (i % 2 == 0)
            assert_int_equal(b->ops->publish(b->impl, id), MSV_OK);
        if (i == 10)
            break; /* the eleventh is new: not listed */
        memcpy(ids[i], id, sizeof(id));
        assert_int_equal(msv_hex_encode(id, sizeof(id), hex, sizeof(hex)), MSV_OK);
        snprintf(path, sizeof(path), "%s/%s%s", dir, hex, i % 2 == 0 ? "" : ".part");
        assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);
    }
    for (;;) {
        uint8_t(*got)[MSV_BLOB_ID_LEN] = NULL;
        size_t n = 0;

        assert_int_equal(
            b->ops->list_before(b->impl, time(NULL) - 600, have_after ? after : NULL, 3, &got, &n),
            MSV_OK);
        assert_true(n <= 3);
        batches++;
        for (size_t k = 0; k < n; k++) {
            int found = -1;

            /* in order, each above the batch before's last: none given twice */
            if (k > 0)
                assert_true(memcmp(got[k - 1], got[k], MSV_BLOB_ID_LEN) < 0);
            if (k == 0 && have_after)
                assert_true(memcmp(after, got[k], MSV_BLOB_ID_LEN) < 0);
            for (int i = 0; i < 10; i++)
                if (memcmp(ids[i], got[k], MSV_BLOB_ID_LEN) == 0)
                    found = i;
            assert_true(found >= 0);
            walked++;
        }
        if (n > 0) {
            memcpy(after, got[n - 1], MSV_BLOB_ID_LEN);
            have_after = 1;
        }
        free(got);
        if (n < 3)
            break;
    }
    assert_int_equal(walked, 10);
    assert_int_equal(batches, 4);
    msv_blob_backend_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blob_dir_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_account_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_account_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_devices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_to_v3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transparency_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signed_device_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approve_races_removal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_devices_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_recoveries_one_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_growth_removal_fits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kt_labels_in_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_username_stamp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_approval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_item_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_fetch_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_removal_drops_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_usage_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_shared_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prekeys_and_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mls_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mls_empty_groups_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mls_commit_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mls_welcome_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kem_prekeys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_with_first_prekeys_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operator_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invites, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blob_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_and_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_share_database, setup, teardown),
    };

    /* the same operations against PostgreSQL (the SQLite migration test is SQLite's alone) */
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test_setup_teardown(test_accounts, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_codes, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_account_password, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_account_delete, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_devices, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_transparency_log, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_signed_device_sets, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_two_recoveries_one_root, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_reports_at_once, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_chain_growth_removal_fits, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_approve_races_removal, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pending_devices_bounded, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_kt_labels_in_transaction, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_handles, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_username_stamp, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_handle_races, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_device_approval, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_queue, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_queue_item_expiry, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_queue_fetch_many, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_queue_commit, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_device_removal_drops_queue, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_queue_usage_counters, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_queue_shared_bodies, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_queue_refusals, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pg_faults, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_prekeys_and_tokens, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_mls_store, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_mls_empty_groups_dropped, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_mls_commit_log, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_mls_welcome_kept, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_mls_commit_lock_order, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_mls_last_two_go_at_once, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_blob_account_backfilled, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_kem_prekeys, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_device_with_first_prekeys_atomic, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_operator_views, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_blobs, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_reports, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_invites, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_blob_usage, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_and_schema, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_share_database, setup_pg, teardown),
    };

    /* with a PostgreSQL server given, only its group runs (the plain run covers SQLite) */
    if (getenv("MSV_TEST_PG_ADMIN") != NULL)
        return cmocka_run_group_tests_name("store_postgres", pg_tests, NULL, NULL);
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
