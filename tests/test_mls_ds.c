/*
 * The MLS delivery service of missived (docs/wire.md, "MLS delivery"): KeyPackages claimed
 * once each, one commit per epoch (also when two race through two workers, or two nodes on
 * PostgreSQL), Welcomes routed, application messages uploaded once and fanned out.
 *
 * Run alone it uses SQLite; under scripts/services.sh (MSV_TEST_POSTGRES, MSV_TEST_REDIS set)
 * every server is a node of one PostgreSQL store and one Redis, and the races run through two
 * nodes.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <sqlite3.h>

#include "server_harness.h"
#include "wire/frame.h"

#define KIND(k) MSV__WIRE__MLS_KIND__MLS_KIND_##k
#define ERR(k) MSV__WIRE__ERROR_CODE__ERROR_##k

static char shared_dir[64];
static char pg_conninfo[512]; /* the running test's database */

static int on_postgres(void)
{
    return getenv("MSV_TEST_PG_ADMIN") != NULL && getenv("MSV_TEST_REDIS") != NULL;
}

/* SQL on the PostgreSQL server: its admin database (conninfo NULL) or the test's. */
static void pg_exec(const char *conninfo, const char *sql)
{
    PGconn *db = PQconnectdb(conninfo ? conninfo : getenv("MSV_TEST_PG_ADMIN"));
    PGresult *r = PQexec(db, sql);

    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);
}

/* A fresh database for the test that starts (its servers share it). */
static void pg_fresh(void)
{
    static unsigned serial;
    char sql[128], name[64];

    snprintf(name, sizeof(name), "mls_test_%ld_%u", (long)getpid(), serial++);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s;", name);
    pg_exec(NULL, sql);
    snprintf(pg_conninfo, sizeof(pg_conninfo), "%s dbname=%s", getenv("MSV_TEST_PG_ADMIN"), name);
}

/* The configuration of a server: on PostgreSQL and Redis when the services are there. */
static void node_init(struct test_server *s, const char *more)
{
    char extra[1024];

    if (!on_postgres()) {
        snprintf(extra, sizeof(extra),
                 "[accounts]\nregister_burst = 100\ncodes_per_handle_per_day = 1000\n%s",
                 more ? more : "");
    } else {
        if (shared_dir[0] == '\0') {
            snprintf(shared_dir, sizeof(shared_dir), "/tmp/msv-mls-shared-XXXXXX");
            assert_non_null(mkdtemp(shared_dir));
        }
        snprintf(extra, sizeof(extra),
                 "[server]\nshared_dir = %s\n[store]\nbackend = postgres\npostgres = %s\n"
                 "connections = 4\n[cluster]\nredis = %s\n[accounts]\nregister_burst = "
                 "100\ncodes_per_handle_per_day = 1000\n%s",
                 shared_dir, pg_conninfo, getenv("MSV_TEST_REDIS"), more ? more : "");
    }
    test_server_init(s, extra);
}

/*
 * Each test on a store of its own, and with rate limits of its own: the shared buckets in
 * the run's own Redis are keyed by account and device ids, which every fresh store reuses.
 */
static int setup(void **state)
{
    char cmd[160];
    const char *redis = getenv("MSV_TEST_REDIS"), *colon;

    (void)state;
    if (!on_postgres())
        return 0;
    pg_fresh();
    colon = strrchr(redis, ':');
    assert_non_null(colon);
    snprintf(cmd, sizeof(cmd), "redis-cli -h %.*s -p %s FLUSHALL >/dev/null", (int)(colon - redis),
             redis, colon + 1);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static msv_frame *kp_upload(struct test_device *d, const char **kps, size_t n,
                            const char *last_resort, int replace)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsKeyPackageUpload u = MSV__WIRE__MLS_KEY_PACKAGE_UPLOAD__INIT;
    ProtobufCBinaryData b[128];

    assert_true(n <= 128);
    for (size_t i = 0; i < n; i++)
        b[i] = (ProtobufCBinaryData){strlen(kps[i]), (uint8_t *)kps[i]};
    u.n_key_packages = n;
    u.key_packages = b;
    if (last_resort != NULL)
        u.last_resort = (ProtobufCBinaryData){strlen(last_resort), (uint8_t *)last_resort};
    u.replace = replace;
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_UPLOAD;
    f.mls_key_package_upload = &u;
    return test_request(d->conn, &f);
}

/* The device's KeyPackages left (an empty upload asks); -1 if the answer is no state. */
static int kp_left(struct test_device *d, int *has_last_resort)
{
    msv_frame *r = kp_upload(d, NULL, 0, NULL, 0);
    int left = -1;

    if (r->body_case == MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_STATE) {
        left = (int)r->mls_key_package_state->left;
        if (has_last_resort != NULL)
            *has_last_resort = r->mls_key_package_state->has_last_resort;
    }
    msv_frame_free(r);
    return left;
}

static msv_frame *kp_claim(struct msv_conn *c, const char *handle)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsKeyPackageClaim q = MSV__WIRE__MLS_KEY_PACKAGE_CLAIM__INIT;

    q.handle = (ProtobufCBinaryData){strlen(handle), (uint8_t *)handle};
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_CLAIM;
    f.mls_key_package_claim = &q;
    return test_request(c, &f);
}

/* The KeyPackage claimed for device (NULL if none) in r, as text; *last_resort its kind. */
static const char *claimed_for(const msv_frame *r, uint64_t device, int *last_resort)
{
    static char text[256];

    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGES);
    for (size_t i = 0; i < r->mls_key_packages->n_key_packages; i++) {
        const Msv__Wire__MlsKeyPackage *k = r->mls_key_packages->key_packages[i];

        if (k->device_id != device)
            continue;
        assert_true(k->key_package.len < sizeof(text));
        memcpy(text, k->key_package.data, k->key_package.len);
        text[k->key_package.len] = '\0';
        if (last_resort != NULL)
            *last_resort = k->last_resort;
        return text;
    }
    return NULL;
}

/*
 * What a commit of claimer's adding target needs: target publishes a last-resort KeyPackage
 * (never used up), and claimer claims one of it (through target's handle).
 */
static void may_add(struct test_device *claimer, struct test_device *target, const char *handle)
{
    const char *kp = "kp";
    msv_frame *r = kp_upload(target, &kp, 1, "kp-last", 0);

    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_STATE);
    msv_frame_free(r);
    r = kp_claim(claimer->conn, handle);
    assert_non_null(claimed_for(r, target->device_id, NULL));
    msv_frame_free(r);
}

/* An MLS send; ids (may be NULL) are added, removed or recipients after the kind. */
struct send_args {
    const char *group;
    int kind;
    uint64_t epoch;
    const char *message;
    const uint64_t *added, *removed, *recipients;
    size_t n_added, n_removed, n_recipients;
};

static void build_send(const struct send_args *a, Msv__Wire__Frame *f, Msv__Wire__MlsSend *q)
{
    msv__wire__frame__init(f);
    msv__wire__mls_send__init(q);
    q->group_id = (ProtobufCBinaryData){strlen(a->group), (uint8_t *)a->group};
    q->kind = a->kind;
    q->epoch = a->epoch;
    q->message = (ProtobufCBinaryData){strlen(a->message), (uint8_t *)a->message};
    q->added = (uint64_t *)a->added;
    q->n_added = a->n_added;
    q->removed = (uint64_t *)a->removed;
    q->n_removed = a->n_removed;
    q->recipients = (uint64_t *)a->recipients;
    q->n_recipients = a->n_recipients;
    f->body_case = MSV__WIRE__FRAME__BODY_MLS_SEND;
    f->mls_send = q;
}

static msv_frame *mls_send(struct test_device *d, const struct send_args *a)
{
    Msv__Wire__Frame f;
    Msv__Wire__MlsSend q;

    build_send(a, &f, &q);
    return test_request(d->conn, &f);
}

/* Expects MlsSent with the epoch now and the copies queued; frees r. */
/* An MlsSent at epoch, queued for queued devices and leaving out the one device full (0: none). */
static void expect_sent_but(msv_frame *r, uint64_t epoch, uint32_t queued, uint64_t full)
{
    if (r->body_case != MSV__WIRE__FRAME__BODY_MLS_SENT)
        fail_msg("expected MlsSent, got body %d (error %d: %.*s)", r->body_case, test_error_code(r),
                 r->error ? (int)r->error->message.len : 0,
                 r->error ? (const char *)r->error->message.data : "");
    if (r->mls_sent->epoch != epoch || r->mls_sent->queued != queued ||
        r->mls_sent->full != (full != 0))
        fail_msg("MlsSent epoch %llu queued %u full %u; expected %llu, %u, %d",
                 (unsigned long long)r->mls_sent->epoch, r->mls_sent->queued, r->mls_sent->full,
                 (unsigned long long)epoch, queued, full != 0);
    assert_int_equal(r->mls_sent->n_full_devices, full != 0);
    if (full != 0)
        assert_int_equal(r->mls_sent->full_devices[0], full);
    msv_frame_free(r);
}

static void expect_sent(msv_frame *r, uint64_t epoch, uint32_t queued)
{
    expect_sent_but(r, epoch, queued, 0);
}

static void expect_stale(msv_frame *r, uint64_t epoch)
{
    assert_int_equal(test_error_code(r), ERR(MLS_STALE_EPOCH));
    assert_int_equal(r->error->mls_epoch, epoch);
    msv_frame_free(r);
}

/*
 * Waits for the next MLS delivery on d and checks it (message NULL: any); returns its queue
 * id after acknowledging it, 0 if none came within timeout_ms.
 */
static uint64_t expect_mls(struct test_device *d, uint64_t sender, int kind, uint64_t epoch,
                           const char *message, int timeout_ms)
{
    msv_frame *f = NULL;
    uint64_t id = 0;

    while (msv_conn_recv(d->conn, timeout_ms, &f) == MSV_OK) {
        Msv__Wire__MlsDelivery *m;

        if (f->body_case != MSV__WIRE__FRAME__BODY_DELIVER || f->deliver->suite != 160) {
            if (f->body_case == MSV__WIRE__FRAME__BODY_DELIVER)
                test_ack(d, f->deliver->queue_id); /* a notice from the server */
            msv_frame_free(f);
            continue;
        }
        m = msv__wire__mls_delivery__unpack(NULL, f->deliver->ciphertext.len,
                                            f->deliver->ciphertext.data);
        assert_non_null(m);
        assert_int_equal(f->deliver->sender_device, sender);
        assert_int_equal(m->kind, kind);
        assert_int_equal(m->epoch, epoch);
        if (message != NULL) {
            assert_int_equal(m->message.len, strlen(message));
            assert_memory_equal(m->message.data, message, strlen(message));
        }
        id = f->deliver->queue_id;
        msv__wire__mls_delivery__free_unpacked(m, NULL);
        msv_frame_free(f);
        test_ack(d, id);
        return id;
    }
    return 0;
}

/* Whether an application message with text reaches d within 5 s (other deliveries acked). */
static int application_arrives(struct test_device *d, const char *text)
{
    msv_frame *f = NULL;
    int found = 0;

    while (!found && msv_conn_recv(d->conn, 5000, &f) == MSV_OK) {
        if (f->body_case == MSV__WIRE__FRAME__BODY_DELIVER) {
            Msv__Wire__MlsDelivery *m = msv__wire__mls_delivery__unpack(
                NULL, f->deliver->ciphertext.len, f->deliver->ciphertext.data);

            found = m != NULL && m->kind == KIND(APPLICATION) && m->message.len == strlen(text) &&
                    memcmp(m->message.data, text, m->message.len) == 0;
            msv__wire__mls_delivery__free_unpacked(m, NULL);
            test_ack(d, f->deliver->queue_id);
        }
        msv_frame_free(f);
        f = NULL;
    }
    return found;
}

/*
 * KeyPackages: each handed out once, one per device of the account; the last-resort one
 * when none is left, kept; the owner sees the count; limits refuse whole uploads.
 */
static void test_key_packages(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2;
    const char *three[] = {"kp-b1-1", "kp-b1-2", "kp-b1-3"}, *one[] = {"kp-b2-1"};
    const char *many[101];
    char big[8194];
    msv_frame *r;
    int lr = 0;

    (void)state;
    node_init(&s, "[directory]\nprekey_claim_interval_s = 0\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_add_device(&s, "bob@example.org", &b1, &b2);
    r = kp_upload(&b1, three, 3, "kp-b1-last", 0);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_STATE);
    assert_int_equal(r->mls_key_package_state->left, 3);
    assert_true(r->mls_key_package_state->has_last_resort);
    msv_frame_free(r);
    msv_frame_free(kp_upload(&b2, one, 1, NULL, 0));
    assert_int_equal(kp_left(&b2, &lr), 1);
    assert_false(lr);

    /* one per device, oldest first, none twice */
    r = kp_claim(a1.conn, "Bob@example.org");
    assert_string_equal(claimed_for(r, b1.device_id, &lr), "kp-b1-1");
    assert_false(lr);
    assert_string_equal(claimed_for(r, b2.device_id, &lr), "kp-b2-1");
    msv_frame_free(r);
    r = kp_claim(a1.conn, "bob@example.org");
    assert_string_equal(claimed_for(r, b1.device_id, NULL), "kp-b1-2");
    assert_null(claimed_for(r, b2.device_id, NULL)); /* none left, no last resort */
    msv_frame_free(r);
    r = kp_claim(a1.conn, "bob@example.org");
    assert_string_equal(claimed_for(r, b1.device_id, NULL), "kp-b1-3");
    msv_frame_free(r);
    assert_int_equal(kp_left(&b1, &lr), 0);
    assert_true(lr);
    for (int i = 0; i < 2; i++) { /* the last-resort one, again and again */
        r = kp_claim(a1.conn, "bob@example.org");
        assert_string_equal(claimed_for(r, b1.device_id, &lr), "kp-b1-last");
        assert_true(lr);
        msv_frame_free(r);
    }
    assert_int_equal(kp_left(&b1, &lr), 0);
    assert_true(lr);
    assert_int_equal(test_server_metric(&s, "mls_key_packages_claimed_total"), 4);
    assert_int_equal(test_server_metric(&s, "mls_last_resort_claims_total"), 2);
    /* an unknown handle: nothing; not a handle: refused */
    r = kp_claim(a1.conn, "nobody@example.org");
    assert_int_equal(r->mls_key_packages->n_key_packages, 0);
    msv_frame_free(r);
    test_expect_error(kp_claim(a1.conn, "not a handle"), ERR(INVALID));

    /* J1-J3: limits refuse the whole upload */
    for (size_t i = 0; i < 101; i++)
        many[i] = "kp";
    test_expect_error(kp_upload(&b1, many, 101, NULL, 0), ERR(TOO_BIG));
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    many[0] = big;
    test_expect_error(kp_upload(&b1, many, 1, NULL, 0), ERR(TOO_BIG));
    test_expect_error(kp_upload(&b1, NULL, 0, big, 0), ERR(TOO_BIG));
    many[0] = "";
    test_expect_error(kp_upload(&b1, many, 1, NULL, 0), ERR(INVALID));
    many[0] = "kp";
    msv_frame_free(kp_upload(&b1, many, 60, NULL, 0));
    test_expect_error(kp_upload(&b1, many, 41, NULL, 0), ERR(TOO_BIG)); /* 101 kept */
    assert_int_equal(kp_left(&b1, NULL), 60);
    r = kp_upload(&b1, many, 2, NULL, 1); /* replace */
    assert_int_equal(r->mls_key_package_state->left, 2);
    msv_frame_free(r);
    assert_true(test_server_metric(&s, "mls_refused_total") >= 6);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_cleanup(&s);
}

/* Claims bob's KeyPackages from n connections at once; counts what each got. */
static void claim_race(struct msv_conn **conns, size_t n, uint64_t bob, size_t *fresh, size_t *last,
                       char (*seen)[32], size_t *n_seen)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsKeyPackageClaim q = MSV__WIRE__MLS_KEY_PACKAGE_CLAIM__INIT;
    uint64_t id;

    q.handle = (ProtobufCBinaryData){15, (uint8_t *)"bob@example.org"};
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_CLAIM;
    f.mls_key_package_claim = &q;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(msv_conn_send_request(conns[i], &f, &id), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        msv_frame *r = NULL;
        const char *kp;
        int lr = 0;

        do {
            msv_frame_free(r);
            r = NULL;
            assert_int_equal(msv_conn_recv(conns[i], TEST_TIMEOUT_MS, &r), MSV_OK);
        } while (r->request_id == 0);
        kp = claimed_for(r, bob, &lr);
        assert_non_null(kp);
        if (lr) {
            ++*last;
        } else {
            ++*fresh;
            for (size_t k = 0; k < *n_seen; k++)
                assert_string_not_equal(seen[k], kp); /* nobody got one twice */
            snprintf(seen[(*n_seen)++], 32, "%s", kp);
        }
        msv_frame_free(r);
    }
}

/*
 * Six devices (on two workers, or two nodes) claim bob's five KeyPackages at once, four
 * times over: five are handed out once each, the rest get the last-resort one.
 */
static void test_claim_race(void **state)
{
    static const char *const names[6] = {"alice", "carol", "dave", "erin", "frank", "grace"};
    struct test_server s1, s2;
    struct test_device claimers[6], b1;
    struct msv_conn *conns[6];
    const char *five[] = {"race-1", "race-2", "race-3", "race-4", "race-5"};
    char seen[32][32], handle[64];
    size_t fresh = 0, last = 0, n_seen = 0;
    int two = on_postgres();

    (void)state;
    node_init(&s1, "[directory]\nprekey_claim_interval_s = 0\n");
    test_server_start(&s1);
    if (two) {
        node_init(&s2, "[directory]\nprekey_claim_interval_s = 0\n");
        test_server_start(&s2);
    }
    test_register(&s1, "bob@example.org", &b1);
    msv_frame_free(kp_upload(&b1, five, 5, "race-last", 0));
    for (size_t i = 0; i < 6; i++) {
        snprintf(handle, sizeof(handle), "%s@example.org", names[i]);
        test_register(&s1, handle, &claimers[i]);
        if (two && i % 2)
            test_device_connect(&s2, &claimers[i]);
        conns[i] = claimers[i].conn;
    }
    for (int round = 0; round < 4; round++)
        claim_race(conns, 6, b1.device_id, &fresh, &last, seen, &n_seen);
    assert_int_equal(fresh, 5);
    assert_int_equal(last, 19);
    assert_int_equal(kp_left(&b1, NULL), 0);
    for (size_t i = 0; i < 6; i++)
        test_device_free(&claimers[i]);
    test_device_free(&b1);
    test_server_cleanup(&s1);
    if (two)
        test_server_cleanup(&s2);
}

/*
 * The group's life: created by a commit for epoch 0, a Welcome to the device added, commits
 * accepted at the current epoch only (a late one refused with the epoch), proposals and
 * application messages to every member but the sender, removal.
 */
static void test_group_ordering(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1;
    uint64_t bob[1], carol[1];

    (void)state;
    node_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    bob[0] = b1.device_id;
    carol[0] = c1.device_id;

    /* J4: shapes refused before anything is read */
    test_expect_error(mls_send(&a1,
                               &(struct send_args){
                                   .group = "", .kind = KIND(COMMIT), .epoch = 0, .message = "c"}),
                      ERR(INVALID));
    test_expect_error(
        mls_send(&a1,
                 &(struct send_args){.group = "0123456789012345678901234567890123456789012345678901"
                                              "234567890123456",
                                     .kind = KIND(COMMIT),
                                     .epoch = 0,
                                     .message = "c"}),
        ERR(INVALID));
    test_expect_error(
        mls_send(&a1, &(struct send_args){.group = "g", .kind = 9, .epoch = 0, .message = "c"}),
        ERR(INVALID));
    test_expect_error(mls_send(&a1,
                               &(struct send_args){
                                   .group = "g", .kind = KIND(COMMIT), .epoch = 0, .message = ""}),
                      ERR(INVALID));
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 0,
                                                        .message = "m",
                                                        .added = bob,
                                                        .n_added = 1}),
                      ERR(INVALID));
    test_expect_error(
        mls_send(
            &a1,
            &(struct send_args){.group = "g", .kind = KIND(WELCOME), .epoch = 1, .message = "w"}),
        ERR(INVALID));
    /* J5: no such group; a commit adding an unknown device; removing oneself */
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 0,
                                                        .message = "m"}),
                      ERR(NOT_FOUND));
    test_expect_error(mls_send(&a1,
                               &(struct send_args){
                                   .group = "g", .kind = KIND(COMMIT), .epoch = 3, .message = "c"}),
                      ERR(NOT_FOUND));
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                        .kind = KIND(COMMIT),
                                                        .epoch = 0,
                                                        .message = "c",
                                                        .added = (uint64_t[]){999999},
                                                        .n_added = 1}),
                      ERR(INVALID));
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                        .kind = KIND(COMMIT),
                                                        .epoch = 0,
                                                        .message = "c",
                                                        .removed = &a1.device_id,
                                                        .n_removed = 1}),
                      ERR(INVALID));

    /* alice starts the group with bob: nobody to tell yet; then her Welcome reaches bob */
    may_add(&a1, &b1, "bob@example.org");
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 0,
                                                  .message = "commit-0",
                                                  .added = bob,
                                                  .n_added = 1}),
                1, 0);
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                        .kind = KIND(WELCOME),
                                                        .epoch = 1,
                                                        .message = "w",
                                                        .recipients = carol,
                                                        .n_recipients = 1}),
                      ERR(INVALID)); /* carol is no member */
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(WELCOME),
                                                  .epoch = 1,
                                                  .message = "welcome",
                                                  .recipients = bob,
                                                  .n_recipients = 1}),
                1, 1);
    assert_int_not_equal(expect_mls(&b1, a1.device_id, KIND(WELCOME), 1, "welcome", 5000), 0);
    {
        /* J5, J7: a recipient twice; too many recipients or changes; too large a message */
        static uint64_t many[1001];
        static char large[16 * 1024 + 2];
        uint64_t twice[2] = {b1.device_id, b1.device_id};

        for (size_t i = 0; i < 1001; i++)
            many[i] = b1.device_id;
        memset(large, 'm', sizeof(large) - 1);
        test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                            .kind = KIND(WELCOME),
                                                            .epoch = 1,
                                                            .message = "w",
                                                            .recipients = twice,
                                                            .n_recipients = 2}),
                          ERR(INVALID));
        test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                            .kind = KIND(WELCOME),
                                                            .epoch = 1,
                                                            .message = "w",
                                                            .recipients = many,
                                                            .n_recipients = 1001}),
                          ERR(TOO_BIG));
        test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                            .kind = KIND(COMMIT),
                                                            .epoch = 1,
                                                            .message = "c",
                                                            .added = many,
                                                            .n_added = 1001}),
                          ERR(TOO_BIG));
        test_expect_error(mls_send(&a1, &(struct send_args){.group = "g",
                                                            .kind = KIND(APPLICATION),
                                                            .epoch = 1,
                                                            .message = large}),
                          ERR(TOO_BIG));
        assert_int_equal(expect_mls(&b1, 0, 0, 0, NULL, 200), 0); /* nothing was queued */
    }
    /* another device cannot take the group over by its id, nor learn its epoch */
    test_expect_error(mls_send(&c1, &(struct send_args){.group = "g",
                                                        .kind = KIND(COMMIT),
                                                        .epoch = 0,
                                                        .message = "squat"}),
                      ERR(MLS_NOT_MEMBER));

    /* bob commits for epoch 1; alice's late commit for 1 is refused with epoch 2 */
    expect_sent(mls_send(&b1, &(struct send_args){.group = "g",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 1,
                                                  .message = "commit-1"}),
                2, 1);
    expect_stale(mls_send(&a1,
                          &(struct send_args){
                              .group = "g", .kind = KIND(COMMIT), .epoch = 1, .message = "late"}),
                 2);
    expect_stale(mls_send(&a1,
                          &(struct send_args){
                              .group = "g", .kind = KIND(PROPOSAL), .epoch = 1, .message = "late"}),
                 2);
    assert_int_not_equal(expect_mls(&a1, b1.device_id, KIND(COMMIT), 1, "commit-1", 5000), 0);
    /* re-based: a proposal and application messages, the epoch unchanged */
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(PROPOSAL),
                                                  .epoch = 2,
                                                  .message = "proposal"}),
                2, 1);
    assert_int_not_equal(expect_mls(&b1, a1.device_id, KIND(PROPOSAL), 2, "proposal", 5000), 0);
    expect_sent(mls_send(&b1, &(struct send_args){.group = "g",
                                                  .kind = KIND(APPLICATION),
                                                  .epoch = 2,
                                                  .message = "hello"}),
                2, 1);
    assert_int_not_equal(expect_mls(&a1, b1.device_id, KIND(APPLICATION), 2, "hello", 5000), 0);
    assert_int_equal(expect_mls(&b1, 0, 0, 0, NULL, 300), 0); /* not to its sender */
    /* J6: carol is no member */
    test_expect_error(mls_send(&c1, &(struct send_args){.group = "g",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 2,
                                                        .message = "spam"}),
                      ERR(MLS_NOT_MEMBER));
    test_expect_error(mls_send(&c1, &(struct send_args){.group = "g",
                                                        .kind = KIND(COMMIT),
                                                        .epoch = 2,
                                                        .message = "coup",
                                                        .added = carol,
                                                        .n_added = 1}),
                      ERR(MLS_NOT_MEMBER));
    /* alice removes bob: he gets that commit, and is out */
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 2,
                                                  .message = "remove-bob",
                                                  .removed = bob,
                                                  .n_removed = 1}),
                3, 1);
    assert_int_not_equal(expect_mls(&b1, a1.device_id, KIND(COMMIT), 2, "remove-bob", 5000), 0);
    test_expect_error(mls_send(&b1, &(struct send_args){.group = "g",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 3,
                                                        .message = "still?"}),
                      ERR(MLS_NOT_MEMBER));
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(APPLICATION),
                                                  .epoch = 3,
                                                  .message = "alone"}),
                3, 0);
    /* carol, added, leaves by a proposal removing herself (not anyone else) */
    may_add(&a1, &c1, "carol@example.org");
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 3,
                                                  .message = "add-carol",
                                                  .added = carol,
                                                  .n_added = 1}),
                4, 0);
    test_expect_error(mls_send(&c1, &(struct send_args){.group = "g",
                                                        .kind = KIND(PROPOSAL),
                                                        .epoch = 4,
                                                        .message = "remove alice",
                                                        .removed = &a1.device_id,
                                                        .n_removed = 1}),
                      ERR(INVALID));
    expect_sent(mls_send(&c1, &(struct send_args){.group = "g",
                                                  .kind = KIND(PROPOSAL),
                                                  .epoch = 4,
                                                  .message = "carol leaves",
                                                  .removed = carol,
                                                  .n_removed = 1}),
                4, 1);
    assert_int_not_equal(expect_mls(&a1, c1.device_id, KIND(PROPOSAL), 4, "carol leaves", 5000), 0);
    test_expect_error(mls_send(&c1, &(struct send_args){.group = "g",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 4,
                                                        .message = "gone"}),
                      ERR(MLS_NOT_MEMBER));
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(APPLICATION),
                                                  .epoch = 4,
                                                  .message = "alone again"}),
                4, 0);
    assert_int_equal(test_server_metric(&s, "mls_commits_total"), 4);
    assert_int_equal(test_server_metric(&s, "mls_stale_epoch_total"), 2);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

/*
 * The answer to the request d sent last; what another device's send at the same moment
 * delivers to d first is taken and acknowledged.
 */
static msv_frame *answer_acking(struct test_device *d)
{
    msv_frame *r = NULL;

    for (;;) {
        assert_int_equal(msv_conn_recv(d->conn, TEST_TIMEOUT_MS, &r), MSV_OK);
        if (r->request_id != 0)
            return r;
        if (r->body_case == MSV__WIRE__FRAME__BODY_DELIVER)
            test_ack(d, r->deliver->queue_id);
        msv_frame_free(r);
    }
}

/*
 * Two members commit for the same epoch at the same moment, from two connections (two
 * workers, or two nodes): exactly one is accepted, the other refused with the new epoch.
 */
static void test_commit_race(void **state)
{
    struct test_server s1, s2;
    struct test_device a1, b1;
    uint64_t bob[1];
    int two = on_postgres();
    uint64_t epoch = 1;

    (void)state;
    /* both read the group before either writes: the store's own check must decide */
    node_init(&s1, "[testing]\nmls_commit_pause_ms = 100\n");
    test_server_start(&s1);
    if (two) {
        node_init(&s2, "[testing]\nmls_commit_pause_ms = 100\n");
        test_server_start(&s2);
    }
    test_register(&s1, "alice@example.org", &a1);
    test_register(&s1, "bob@example.org", &b1);
    if (two)
        test_device_connect(&s2, &b1);
    bob[0] = b1.device_id;
    may_add(&a1, &b1, "bob@example.org");
    expect_sent(mls_send(&a1, &(struct send_args){.group = "race",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 0,
                                                  .message = "c0",
                                                  .added = bob,
                                                  .n_added = 1}),
                1, 0);
    for (int round = 0; round < 20; round++, epoch++) {
        struct test_device *who[2] = {&a1, &b1};
        Msv__Wire__Frame f[2];
        Msv__Wire__MlsSend q[2];
        int won = 0, lost = 0;
        uint64_t id;

        build_send(
            &(struct send_args){
                .group = "race", .kind = KIND(COMMIT), .epoch = epoch, .message = "from alice"},
            &f[0], &q[0]);
        build_send(
            &(struct send_args){
                .group = "race", .kind = KIND(COMMIT), .epoch = epoch, .message = "from bob"},
            &f[1], &q[1]);
        for (int i = 0; i < 2; i++)
            assert_int_equal(msv_conn_send_request(who[i]->conn, &f[i], &id), MSV_OK);
        for (int i = 0; i < 2; i++) {
            /* the winner's commit may reach the loser before its answer */
            msv_frame *r = answer_acking(who[i]);

            if (r->body_case == MSV__WIRE__FRAME__BODY_MLS_SENT) {
                assert_int_equal(r->mls_sent->epoch, epoch + 1);
                won++;
            } else {
                assert_int_equal(test_error_code(r), ERR(MLS_STALE_EPOCH));
                assert_int_equal(r->error->mls_epoch, epoch + 1);
                lost++;
            }
            msv_frame_free(r);
        }
        assert_int_equal(won, 1);
        assert_int_equal(lost, 1);
    }
    /* an application message reaches bob wherever he is connected (another node: Redis) */
    expect_sent(mls_send(&a1, &(struct send_args){.group = "race",
                                                  .kind = KIND(APPLICATION),
                                                  .epoch = epoch,
                                                  .message = "after the race"}),
                epoch, 1);
    assert_true(application_arrives(&b1, "after the race"));
    assert_int_equal(test_server_metric(&s1, "mls_commits_total") +
                         (two ? test_server_metric(&s2, "mls_commits_total") : 0),
                     21);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s1);
    if (two)
        test_server_cleanup(&s2);
}

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* SQL on the test's store (SQLite or PostgreSQL). */
static void store_exec(struct test_server *s, const char *sql)
{
    char path[128];
    sqlite3 *db = NULL;

    if (on_postgres()) {
        pg_exec(pg_conninfo, sql);
        return;
    }
    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, TEST_TIMEOUT_MS);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Devices first..first+n-1 of account, approved, straight into the store. */
static void add_raw_devices(struct test_server *s, uint64_t account, uint64_t first, size_t n)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "INSERT INTO devices (id, account_id, suite, identity, push_token, created_ms,"
             " approved) SELECT i, %llu, 3, '\\x00'::BYTEA, ''::BYTEA, 0, TRUE FROM"
             " generate_series(%llu, %llu) AS i;",
             (unsigned long long)account, (unsigned long long)first,
             (unsigned long long)(first + n - 1));
    if (!on_postgres())
        snprintf(sql, sizeof(sql),
                 "WITH RECURSIVE k(i) AS (SELECT %llu UNION ALL SELECT i + 1 FROM k WHERE i < "
                 "%llu) INSERT INTO devices (id, account_id, suite, identity, push_token,"
                 " created_ms, approved) SELECT i, %llu, 3, x'00', x'', 0, 1 FROM k;",
                 (unsigned long long)first, (unsigned long long)(first + n - 1),
                 (unsigned long long)account);
    store_exec(s, sql);
}

/*
 * Open claims, straight into the store, by the account of device claimer of devices
 * first..first+n-1 (added to the store directly, without KeyPackages).
 */
static void seed_claims(struct test_server *s, uint64_t claimer, uint64_t first, size_t n)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "INSERT INTO mls_claims (account_id, device_id, expires_ms) SELECT (SELECT"
             " account_id FROM devices WHERE id = %llu), id, 9000000000000000 FROM devices"
             " WHERE id BETWEEN %llu AND %llu;",
             (unsigned long long)claimer, (unsigned long long)first,
             (unsigned long long)(first + n - 1));
    store_exec(s, sql);
}

/* The MLS copies queued for devices first..last. */
/* The number sql counts in s's store (SQLite or PostgreSQL). */
static size_t store_count(struct test_server *s, const char *sql)
{
    char path[128];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    size_t n = 0;

    if (on_postgres()) {
        PGconn *pg = PQconnectdb(pg_conninfo);
        PGresult *r = PQexec(pg, sql);

        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        n = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        PQfinish(pg);
        return n;
    }
    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static size_t queued_for_range(struct test_server *s, uint64_t first, uint64_t last)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM queue WHERE suite = 160 AND device_id BETWEEN %llu AND %llu;",
             (unsigned long long)first, (unsigned long long)last);
    return store_count(s, sql);
}

/*
 * A group of 10,000 devices: built by ten commits of 1,000 additions, then one application
 * message uploaded once is queued for the 9,999 others (timed); one more device is refused.
 */
static void test_fanout_10000(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    uint64_t *ids = calloc(1000, sizeof(*ids)), first = 1000000, extra;
    double t0, t1;

    (void)state;
    char *big = malloc(16001);

    assert_non_null(big);
    memset(big, 'x', 16000);
    big[16000] = '\0';
    /* every copy takes a send token: 45,000 for the commits, 9,999 for the message */
    node_init(&s, "[relay]\nqueue_max_envelopes = 100\nsend_burst = 100000\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    add_raw_devices(&s, 2, first, 9999);
    seed_claims(&s, a1.device_id, first, 9999);
    for (uint64_t e = 0; e < 10; e++) {
        size_t n = e < 9 ? 1000 : 999;

        for (size_t i = 0; i < n; i++)
            ids[i] = first + e * 1000 + i;
        expect_sent(mls_send(&a1, &(struct send_args){.group = "big",
                                                      .kind = KIND(COMMIT),
                                                      .epoch = e,
                                                      .message = "grow",
                                                      .added = ids,
                                                      .n_added = n}),
                    e + 1, (uint32_t)(e * 1000));
    }
    t0 = now_s();
    expect_sent(mls_send(&a1, &(struct send_args){.group = "big",
                                                  .kind = KIND(APPLICATION),
                                                  .epoch = 10,
                                                  .message = "to everyone"}),
                10, 9999);
    t1 = now_s();
    print_message("one application message to 10,000 devices: %.1f ms (9,999 copies queued)\n",
                  (t1 - t0) * 1000.0);
    /* commit e went to the e * 1000 devices before it, the message to all 9,999 */
    assert_int_equal(queued_for_range(&s, first, first + 9998), 45000 + 9999);
    /* 6,000 bytes to 9,999 devices is 60 MB as copies: its body is stored once, the copies'
     * rows hold none of it */
    big[6000] = '\0';
    t0 = now_s();
    expect_sent(mls_send(&a1, &(struct send_args){.group = "big",
                                                  .kind = KIND(APPLICATION),
                                                  .epoch = 10,
                                                  .message = big}),
                10, 9999);
    t1 = now_s();
    print_message("6,000 bytes to 10,000 devices: %.1f ms (one body, 9,999 copies)\n",
                  (t1 - t0) * 1000.0);
    assert_int_equal(queued_for_range(&s, first, first + 9998), 45000 + 2 * 9999);
    assert_int_equal(store_count(&s, "SELECT COUNT(*) FROM queue_bodies WHERE LENGTH(body) > 6000"),
                     1);
    assert_int_equal(store_count(&s, "SELECT COALESCE(SUM(LENGTH(ciphertext)), 0) FROM queue"
                                     " WHERE body_id IS NOT NULL"),
                     0);
    /* each copy counts its length in its device's queue usage, as a copy of its own would */
    assert_int_equal(store_count(&s, "SELECT COUNT(*) FROM queue_usage WHERE bytes > 6000"), 9999);
    /* J10: 16,000 bytes to 9,999 devices is 160 MB of copies, past the 64 MiB a send may make
     * (each copy is read and pushed whole): refused, nothing queued */
    big[6000] = 'x';
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "big",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 10,
                                                        .message = big}),
                      ERR(TOO_BIG));
    assert_int_equal(queued_for_range(&s, first, first + 9998), 45000 + 2 * 9999);
    free(big);
    /* J7: the 10,001st device */
    extra = first + 20000;
    add_raw_devices(&s, 2, extra, 1);
    seed_claims(&s, a1.device_id, extra, 1);
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "big",
                                                        .kind = KIND(COMMIT),
                                                        .epoch = 10,
                                                        .message = "one more",
                                                        .added = &extra,
                                                        .n_added = 1}),
                      ERR(TOO_BIG));
    free(ids);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/* Waits (up to 5 s) until device's MLS copies were all acknowledged: an acknowledgement is
 * committed with the server's next batch, after the device sent it. */
static void wait_acked(struct test_server *s, uint64_t device)
{
    for (int i = 0; i < 500 && queued_for_range(s, device, device) != 0; i++)
        usleep(10000);
    assert_int_equal(queued_for_range(s, device, device), 0);
}

/*
 * The relay's queue caps hold for MLS copies, and one member's full queue holds up nobody
 * else: its copies are left out (the sender told which, the member's account told, the
 * refusals counted), the other members get theirs, and a commit is taken. Before, a member
 * whose queue was full made every send to the group refused, so that any member could stop a
 * group by leaving its queue unread.
 */
static void test_full_queue(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1;
    uint64_t added[2];
    double tokens;

    (void)state;
    node_init(&s, "[relay]\nqueue_max_envelopes = 2\nsend_burst = 12\nsend_rate = 0.01\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    added[0] = b1.device_id;
    added[1] = c1.device_id;
    may_add(&a1, &b1, "bob@example.org");
    may_add(&a1, &c1, "carol@example.org");
    msv_conn_close(b1.conn); /* bob is away: his queue fills */
    b1.conn = NULL;
    expect_sent(mls_send(&a1, &(struct send_args){.group = "q",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 0,
                                                  .message = "c0",
                                                  .added = added,
                                                  .n_added = 2}),
                1, 0);
    for (int i = 0; i < 2; i++) { /* carol reads hers */
        expect_sent(mls_send(&a1, &(struct send_args){.group = "q",
                                                      .kind = KIND(APPLICATION),
                                                      .epoch = 1,
                                                      .message = "m"}),
                    1, 2);
        assert_true(expect_mls(&c1, a1.device_id, KIND(APPLICATION), 1, "m", 5000) != 0);
        wait_acked(&s, c1.device_id);
    }
    assert_int_equal(test_server_metric(&s, "queue_full_total"), 0);
    expect_sent_but(mls_send(&a1, &(struct send_args){.group = "q",
                                                      .kind = KIND(APPLICATION),
                                                      .epoch = 1,
                                                      .message = "one too many for bob"}),
                    1, 1, b1.device_id);
    assert_true(expect_mls(&c1, a1.device_id, KIND(APPLICATION), 1, "one too many for bob", 5000) !=
                0);
    wait_acked(&s, c1.device_id);
    expect_sent_but(mls_send(&a1,
                             &(struct send_args){
                                 .group = "q", .kind = KIND(COMMIT), .epoch = 1, .message = "c1"}),
                    2, 1, b1.device_id);
    assert_true(expect_mls(&c1, a1.device_id, KIND(COMMIT), 1, "c1", 5000) != 0);
    wait_acked(&s, c1.device_id);
    /* a Welcome too (to members already in: the server checks no more), kept for bob instead,
     * alice's commit having added him (test_welcome_kept) */
    {
        msv_frame *r = mls_send(&a1, &(struct send_args){.group = "q",
                                                         .kind = KIND(WELCOME),
                                                         .epoch = 2,
                                                         .message = "w",
                                                         .recipients = added,
                                                         .n_recipients = 2});

        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_SENT);
        assert_int_equal(r->mls_sent->queued, 1);
        assert_int_equal(r->mls_sent->full, 0);
        assert_int_equal(r->mls_sent->kept, 1);
        msv_frame_free(r);
    }
    assert_true(expect_mls(&c1, a1.device_id, KIND(WELCOME), 2, "w", 5000) != 0);
    wait_acked(&s, c1.device_id);
    assert_int_equal(queued_for_range(&s, b1.device_id, b1.device_id), 2); /* not 3 or 5 */
    assert_int_equal(test_server_metric(&s, "queue_full_total"), 0);       /* no send refused */
    assert_int_equal(test_server_metric(&s, "mls_copies_skipped_total"), 2);
    assert_true(test_server_metric(&s, "quota_notices_total") >= 1);  /* bob told */
    assert_int_equal(test_server_metric(&s, "mls_commits_total"), 2); /* epoch 2 */
    /* the copies left out were given back (counted on one node: with Redis a node takes
     * tokens ahead, docs/missived.md "Limits across nodes") */
    if (!on_postgres()) {
        /* 1 + 4 + 1 + 1 + 2 of 12 tokens spent (the Welcome's copy kept for bob costs its
         * token, as one queued); a send takes a token for every copy before
         * the queues are read and gives back those left out, so with 3 left two more sends go
         * (2 taken, 1 given back, each) and the third is refused for the rate (without the
         * tokens given back, none would go) */
        tokens = 0;
        for (int i = 0; i < 3; i++) {
            msv_frame *r = mls_send(
                &a1, &(struct send_args){
                         .group = "q", .kind = KIND(APPLICATION), .epoch = 2, .message = "m2"});

            if (r->body_case == MSV__WIRE__FRAME__BODY_MLS_SENT) {
                tokens++;
                assert_true(expect_mls(&c1, a1.device_id, KIND(APPLICATION), 2, "m2", 5000) != 0);
                wait_acked(&s, c1.device_id);
            } else {
                assert_int_equal(test_error_code(r), ERR(RATE_LIMITED));
            }
            msv_frame_free(r);
        }
        if (tokens != 2)
            fail_msg("%g sends went", tokens);
    }
    expect_stale(mls_send(&c1,
                          &(struct send_args){
                              .group = "q", .kind = KIND(PROPOSAL), .epoch = 1, .message = "p"}),
                 2);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

/* Device d's read of group's commit log from `from` on; the answer (caller frees). */
static msv_frame *log_get(struct test_device *d, const char *group, uint64_t from)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsCommitsGet q = MSV__WIRE__MLS_COMMITS_GET__INIT;

    q.group_id = (ProtobufCBinaryData){strlen(group), (uint8_t *)group};
    q.from_epoch = from;
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_COMMITS_GET;
    f.mls_commits_get = &q;
    return test_request(d->conn, &f);
}

/* Expects n commits from epoch first on, each "c<epoch>" by sender, the group at epoch. */
static void expect_log(msv_frame *r, uint64_t epoch, uint64_t first, size_t n, uint64_t sender,
                       int more)
{
    if (r->body_case != MSV__WIRE__FRAME__BODY_MLS_COMMITS)
        fail_msg("expected MlsCommits, got body %d (error %d)", r->body_case, test_error_code(r));
    assert_int_equal(r->mls_commits->epoch, epoch);
    assert_int_equal(r->mls_commits->n_commits, n);
    assert_int_equal(r->mls_commits->more, more);
    for (size_t i = 0; i < n; i++) {
        const Msv__Wire__MlsLogged *l = r->mls_commits->commits[i];
        Msv__Wire__MlsDelivery *m =
            msv__wire__mls_delivery__unpack(NULL, l->delivery.len, l->delivery.data);
        char text[24];

        snprintf(text, sizeof(text), "c%llu", (unsigned long long)(first + i));
        assert_non_null(m);
        assert_int_equal(l->epoch, first + i);
        assert_int_equal(l->sender_device, sender);
        assert_int_equal(m->kind, KIND(COMMIT));
        assert_int_equal(m->epoch, first + i);
        assert_int_equal(m->message.len, strlen(text));
        assert_memory_equal(m->message.data, text, strlen(text));
        msv__wire__mls_delivery__free_unpacked(m, NULL);
    }
    msv_frame_free(r);
}

static void commit_n(struct test_device *d, const char *group, uint64_t first, uint64_t n,
                     const uint64_t *added, size_t n_added, uint32_t queued)
{
    for (uint64_t e = first; e < first + n; e++) {
        char text[24];

        snprintf(text, sizeof(text), "c%llu", (unsigned long long)e);
        expect_sent(mls_send(d, &(struct send_args){.group = group,
                                                    .kind = KIND(COMMIT),
                                                    .epoch = e,
                                                    .message = text,
                                                    .added = e == first ? added : NULL,
                                                    .n_added = e == first ? n_added : 0}),
                    e + 1, e == first && n_added ? queued - (uint32_t)n_added : queued);
    }
}

/*
 * A group's commit log: bob, whose full queue left him out of two commits, reads them from
 * the log and catches up; carol, added later, reads only the commits since she was added;
 * dave, no member, and bob once removed, read nothing; a read gives at most 64 commits (more
 * said), and the log keeps a group's 256 newest. Before, a commit a member missed was gone
 * for it, and it could only ask to be added again.
 */
static void test_commit_log(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1, d1;
    uint64_t bob, carol;
    msv_frame *r;

    (void)state;
    node_init(&s, "[relay]\nqueue_max_envelopes = 1\nsend_burst = 5000\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    test_register(&s, "dave@example.org", &d1);
    bob = b1.device_id;
    carol = c1.device_id;
    may_add(&a1, &b1, "bob@example.org");
    commit_n(&a1, "g", 0, 1, &bob, 1, 1); /* bob in from epoch 1 */
    commit_n(&a1, "g", 1, 1, NULL, 0, 1); /* bob's queue holds 1: the next two miss him */
    expect_sent_but(mls_send(&a1,
                             &(struct send_args){
                                 .group = "g", .kind = KIND(COMMIT), .epoch = 2, .message = "c2"}),
                    3, 0, bob);
    may_add(&a1, &c1, "carol@example.org");
    expect_sent_but(mls_send(&a1, &(struct send_args){.group = "g",
                                                      .kind = KIND(COMMIT),
                                                      .epoch = 3,
                                                      .message = "c3",
                                                      .added = &carol,
                                                      .n_added = 1}),
                    4, 0, bob);
    /* bob read c0? no: the commit that added him is not his to read; c1 to c3 are */
    expect_log(log_get(&b1, "g", 0), 4, 1, 3, a1.device_id, 0);
    expect_log(log_get(&b1, "g", 2), 4, 2, 2, a1.device_id, 0);
    expect_log(log_get(&b1, "g", 4), 4, 4, 0, a1.device_id, 0);
    /* carol, added by c3, reads nothing before epoch 4, also asking from an epoch past any a
     * group reaches (which was read as a negative one, so the whole log) */
    expect_log(log_get(&c1, "g", 0), 4, 4, 0, a1.device_id, 0);
    expect_log(log_get(&c1, "g", UINT64_MAX), 4, 4, 0, a1.device_id, 0);
    expect_log(log_get(&c1, "g", UINT64_C(1) << 63), 4, 4, 0, a1.device_id, 0);
    expect_log(log_get(&a1, "g", 0), 4, 0, 4, a1.device_id, 0);
    r = log_get(&d1, "g", 0);
    assert_int_equal(test_error_code(r), ERR(MLS_NOT_MEMBER));
    msv_frame_free(r);
    r = log_get(&d1, "nosuchgroup", 0);
    assert_int_equal(test_error_code(r), ERR(NOT_FOUND));
    msv_frame_free(r);
    r = log_get(&d1, "", 0);
    assert_int_equal(test_error_code(r), ERR(INVALID));
    msv_frame_free(r);
    assert_int_equal(test_server_metric(&s, "mls_log_commits_served_total"), 3 + 2 + 4);
    /* reads cost a bucket of the account's own (600, 2 a second): dave's account runs out,
     * for his second device too (2 a second refill while the loop runs: at most a few more) */
    {
        struct test_device d2;
        int went = 0;

        for (; went < 2000; went++) {
            r = log_get(&d1, "g", 0);
            if (test_error_code(r) == ERR(RATE_LIMITED))
                break;
            assert_int_equal(test_error_code(r), ERR(MLS_NOT_MEMBER));
            msv_frame_free(r);
        }
        msv_frame_free(r);
        if (went < 590 || went > 700)
            fail_msg("%d reads went before the rate", went);
        test_add_device(&s, "dave@example.org", &d1, &d2);
        for (int i = 0; i < 100; i++) { /* what refilled while it was added, spent */
            r = log_get(&d1, "g", 0);
            went = test_error_code(r) == ERR(RATE_LIMITED);
            msv_frame_free(r);
            if (went)
                break;
        }
        r = log_get(&d2, "g", 0);
        assert_int_equal(test_error_code(r), ERR(RATE_LIMITED));
        msv_frame_free(r);
        test_device_free(&d2);
    }
    /* bob removed: he reads no more of it */
    expect_sent_but(mls_send(&a1, &(struct send_args){.group = "g",
                                                      .kind = KIND(COMMIT),
                                                      .epoch = 4,
                                                      .message = "c4",
                                                      .removed = &bob,
                                                      .n_removed = 1}),
                    5, 1, bob);
    r = log_get(&b1, "g", 0);
    assert_int_equal(test_error_code(r), ERR(MLS_NOT_MEMBER));
    msv_frame_free(r);
    /* at most 64 a read, and a group's 256 newest kept: of epochs 0 to 299, 44 on */
    commit_n(&a1, "big", 0, 300, NULL, 0, 0);
    expect_log(log_get(&a1, "big", 0), 300, 44, 64, a1.device_id, 1);
    expect_log(log_get(&a1, "big", 44 + 64 * 3), 300, 44 + 64 * 3, 64, a1.device_id, 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_device_free(&d1);
    test_server_cleanup(&s);
}

/* Device d's ask for the Welcome kept for it in group; the answer (caller frees). */
static msv_frame *welcome_get(struct test_device *d, const char *group)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsWelcomeGet q = MSV__WIRE__MLS_WELCOME_GET__INIT;

    q.group_id = (ProtobufCBinaryData){strlen(group), (uint8_t *)group};
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_WELCOME_GET;
    f.mls_welcome_get = &q;
    return test_request(d->conn, &f);
}

/* Expects the Welcome kept for d in group: message by sender, as a queue would bring it. */
static void expect_kept(struct test_device *d, const char *group, uint64_t sender,
                        const char *message)
{
    msv_frame *r = welcome_get(d, group);
    Msv__Wire__MlsDelivery *m;

    if (r->body_case != MSV__WIRE__FRAME__BODY_MLS_WELCOME_KEPT)
        fail_msg("expected MlsWelcomeKept, got body %d (error %d)", r->body_case,
                 test_error_code(r));
    assert_int_equal(r->mls_welcome_kept->sender_device, sender);
    m = msv__wire__mls_delivery__unpack(NULL, r->mls_welcome_kept->delivery.len,
                                        r->mls_welcome_kept->delivery.data);
    assert_non_null(m);
    assert_int_equal(m->kind, KIND(WELCOME));
    assert_int_equal(m->group_id.len, strlen(group));
    assert_memory_equal(m->group_id.data, group, strlen(group));
    assert_int_equal(m->message.len, strlen(message));
    assert_memory_equal(m->message.data, message, strlen(message));
    msv__wire__mls_delivery__free_unpacked(m, NULL);
    msv_frame_free(r);
}

static void expect_no_kept(struct test_device *d, const char *group, int code)
{
    msv_frame *r = welcome_get(d, group);

    assert_int_equal(test_error_code(r), code);
    msv_frame_free(r);
}

/* A Welcome from d to the recipients of group, which should be kept for `kept` of them. */
static void welcome_sent(struct test_device *d, const char *group, const char *message,
                         const uint64_t *recipients, size_t n, uint32_t queued, uint32_t kept)
{
    msv_frame *r = mls_send(d, &(struct send_args){.group = group,
                                                   .kind = KIND(WELCOME),
                                                   .epoch = 1,
                                                   .message = message,
                                                   .recipients = recipients,
                                                   .n_recipients = n});

    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_SENT);
    assert_int_equal(r->mls_sent->queued, queued);
    assert_int_equal(r->mls_sent->full, 0);
    assert_int_equal(r->mls_sent->n_full_devices, 0);
    assert_int_equal(r->mls_sent->kept, kept);
    msv_frame_free(r);
}

/*
 * A Welcome that bob's full queue has no room for is kept for him, by the device whose commit
 * added him: alice is told nothing missed him (kept, not full), his account is told of no
 * refused copy, and he asks for it. Another member's Welcome to him keeps nothing in its place;
 * a commit adding him again drops it, and his removal ends it. Only a member asks. Before, the
 * Welcome was dropped, and bob could not join until an admin added him again.
 */
static void test_welcome_kept(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1, d1;
    uint64_t added[2], bob;

    (void)state;
    node_init(&s, "[relay]\nqueue_max_envelopes = 1\nsend_burst = 5000\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    test_register(&s, "dave@example.org", &d1);
    bob = added[0] = b1.device_id;
    added[1] = c1.device_id;
    may_add(&a1, &b1, "bob@example.org");
    may_add(&a1, &c1, "carol@example.org");
    commit_n(&a1, "w", 0, 1, added, 2, 2);
    /* bob's queue (1) filled by a message he does not acknowledge */
    expect_sent(mls_send(&a1,
                         &(struct send_args){
                             .group = "w", .kind = KIND(APPLICATION), .epoch = 1, .message = "m"}),
                1, 2);
    assert_true(expect_mls(&c1, a1.device_id, KIND(APPLICATION), 1, "m", 5000) != 0);
    wait_acked(&s, c1.device_id);
    welcome_sent(&a1, "w", "welcome", added, 2, 1, 1);
    assert_true(expect_mls(&c1, a1.device_id, KIND(WELCOME), 1, "welcome", 5000) != 0);
    wait_acked(&s, c1.device_id);
    assert_int_equal(test_server_metric(&s, "mls_welcomes_kept_total"), 1);
    assert_int_equal(test_server_metric(&s, "mls_copies_skipped_total"), 0);
    expect_kept(&b1, "w", a1.device_id, "welcome");
    assert_int_equal(test_server_metric(&s, "mls_welcome_reads_total"), 1);
    /* carol's was queued; dave is no member; a group id of nothing is no group id */
    expect_no_kept(&c1, "w", ERR(NOT_FOUND));
    expect_no_kept(&d1, "w", ERR(MLS_NOT_MEMBER));
    expect_no_kept(&d1, "nosuchgroup", ERR(MLS_NOT_MEMBER));
    expect_no_kept(&d1, "", ERR(INVALID));
    /* carol's Welcome to bob: left out as any copy, and alice's kept */
    expect_sent_but(mls_send(&c1, &(struct send_args){.group = "w",
                                                      .kind = KIND(WELCOME),
                                                      .epoch = 1,
                                                      .message = "forged",
                                                      .recipients = &bob,
                                                      .n_recipients = 1}),
                    1, 0, bob);
    assert_int_equal(test_server_metric(&s, "mls_copies_skipped_total"), 1);
    expect_kept(&b1, "w", a1.device_id, "welcome");
    /* alice's next one takes its place; her commit adding bob again drops it */
    welcome_sent(&a1, "w", "welcome again", &bob, 1, 0, 1);
    expect_kept(&b1, "w", a1.device_id, "welcome again");
    may_add(&a1, &b1, "bob@example.org");
    expect_sent_but(mls_send(&a1, &(struct send_args){.group = "w",
                                                      .kind = KIND(COMMIT),
                                                      .epoch = 1,
                                                      .message = "c1",
                                                      .added = &bob,
                                                      .n_added = 1}),
                    2, 1, bob);
    assert_true(expect_mls(&c1, a1.device_id, KIND(COMMIT), 1, "c1", 5000) != 0);
    wait_acked(&s, c1.device_id);
    expect_no_kept(&b1, "w", ERR(NOT_FOUND));
    /* kept again; bob, having joined from it, has it dropped, and only it: a digest of another
     * (one kept before this) drops nothing; one not of 32 bytes is refused */
    welcome_sent(&a1, "w", "welcome third", &bob, 1, 0, 1);
    {
        msv_frame *r = welcome_get(&b1, "w");
        uint8_t digest[32], other[32];
        Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
        Msv__Wire__MlsWelcomeGet q = MSV__WIRE__MLS_WELCOME_GET__INIT;

        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_WELCOME_KEPT);
        crypto_hash_sha256(digest, r->mls_welcome_kept->delivery.data,
                           r->mls_welcome_kept->delivery.len);
        msv_frame_free(r);
        memcpy(other, digest, 32);
        other[0] ^= 1;
        q.group_id = (ProtobufCBinaryData){1, (uint8_t *)"w"};
        f.body_case = MSV__WIRE__FRAME__BODY_MLS_WELCOME_GET;
        f.mls_welcome_get = &q;
        q.taken = (ProtobufCBinaryData){31, digest};
        test_expect_error(test_request(b1.conn, &f), ERR(INVALID));
        q.taken = (ProtobufCBinaryData){32, other};
        test_expect_ok(test_request(b1.conn, &f));
        expect_kept(&b1, "w", a1.device_id, "welcome third");
        q.taken = (ProtobufCBinaryData){32, digest};
        test_expect_ok(test_request(b1.conn, &f));
    }
    expect_no_kept(&b1, "w", ERR(NOT_FOUND));
    /* removed: bob asks as no member */
    expect_sent_but(mls_send(&a1, &(struct send_args){.group = "w",
                                                      .kind = KIND(COMMIT),
                                                      .epoch = 2,
                                                      .message = "c2",
                                                      .removed = &bob,
                                                      .n_removed = 1}),
                    3, 1, bob);
    expect_no_kept(&b1, "w", ERR(MLS_NOT_MEMBER));
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_device_free(&d1);
    test_server_cleanup(&s);
}

/*
 * A Welcome and a commit of one group at once, round after round, from two member devices
 * (alice commits; bob, who added carol, welcomes her while her queue is full): both go, every
 * time, the Welcome kept for carol and the commit leaving her out. (On PostgreSQL both take
 * their devices' advisory locks first; this does not catch the order they once took, which
 * could deadlock: a deadlock is tried again, and the window is narrow.)
 */
static void test_welcome_and_commit_at_once(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1;
    uint64_t bob, carol, to[2], epoch = 2, id;
    const char *to_carol[1] = {"carol@example.org"};
    struct test_device *carol_dev[1] = {&c1};
    int io = 0;

    (void)state;
    node_init(&s, "[relay]\nqueue_max_envelopes = 200\nsend_burst = 100000\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    bob = b1.device_id;
    carol = c1.device_id;
    to[0] = a1.device_id;
    to[1] = carol;
    may_add(&a1, &b1, "bob@example.org");
    commit_n(&a1, "wr", 0, 1, &bob, 1, 1);
    may_add(&b1, &c1, "carol@example.org");
    expect_sent(mls_send(&b1, &(struct send_args){.group = "wr",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 1,
                                                  .message = "c1",
                                                  .added = &carol,
                                                  .n_added = 1}),
                2, 1);
    /* carol's queue full, so that each Welcome is kept for her */
    for (int i = 0; i < 200; i++) {
        msv_frame *r = test_send(&a1, to_carol, 1, carol_dev, 1, "filling");

        test_expect_ok(r);
    }
    for (int round = 0; round < 50; round++, epoch++) {
        struct test_device *who[2] = {&a1, &b1};
        Msv__Wire__Frame f[2];
        Msv__Wire__MlsSend q[2];

        build_send(
            &(struct send_args){
                .group = "wr", .kind = KIND(COMMIT), .epoch = epoch, .message = "commit"},
            &f[0], &q[0]);
        build_send(&(struct send_args){.group = "wr",
                                       .kind = KIND(WELCOME),
                                       .epoch = epoch,
                                       .message = "welcome",
                                       .recipients = to,
                                       .n_recipients = 2},
                   &f[1], &q[1]);
        for (int i = 0; i < 2; i++)
            assert_int_equal(msv_conn_send_request(who[i]->conn, &f[i], &id), MSV_OK);
        for (int i = 0; i < 2; i++) {
            msv_frame *r = answer_acking(who[i]); /* what the other sent may come first */

            if (r->body_case != MSV__WIRE__FRAME__BODY_MLS_SENT) {
                assert_int_equal(test_error_code(r), ERR(IO));
                io++;
            } else {
                assert_int_equal(r->mls_sent->kept, i == 1);
                assert_int_equal(r->mls_sent->full, i == 0);
            }
            msv_frame_free(r);
        }
    }
    if (io > 0)
        fail_msg("%d of 100 sends failed for storage", io);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

/*
 * What a send costs (J11): a send token per copy, as a pairwise send (it was one per 64), and
 * refused work is paid for: a commit adding a device that does not exist takes its token
 * (it was refunded, so such commits were free, and never ran out).
 */
static void test_send_costs(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    uint64_t ids[6], first = 2000000, none = 9000000;
    int refused = 0;

    (void)state;
    node_init(&s, "[relay]\nsend_burst = 5\nsend_rate = 0.01\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    add_raw_devices(&s, 2, first, 6);
    seed_claims(&s, a1.device_id, first, 6);
    for (size_t i = 0; i < 6; i++)
        ids[i] = first + i;
    /* no copies: one token (4 left) */
    expect_sent(mls_send(&a1, &(struct send_args){.group = "cost",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 0,
                                                  .message = "c0",
                                                  .added = ids,
                                                  .n_added = 6}),
                1, 0);
    /* six copies need six tokens: refused, nothing queued */
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "cost",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 1,
                                                        .message = "to six"}),
                      ERR(RATE_LIMITED));
    assert_int_equal(queued_for_range(&s, first, first + 5), 0);
    /* a group of alice alone: each refused commit takes its token, then the rate refuses */
    expect_sent(mls_send(&a1,
                         &(struct send_args){
                             .group = "solo", .kind = KIND(COMMIT), .epoch = 0, .message = "s"}),
                1, 0);
    for (;;) {
        msv_frame *r = mls_send(&a1, &(struct send_args){.group = "solo",
                                                         .kind = KIND(COMMIT),
                                                         .epoch = 1,
                                                         .message = "add nobody",
                                                         .added = &none,
                                                         .n_added = 1});
        int code = test_error_code(r);

        msv_frame_free(r);
        if (code == ERR(RATE_LIMITED))
            break;
        assert_int_equal(code, ERR(INVALID));
        /* at most the three tokens left (fewer on a cluster, where a node leases some) */
        assert_true(++refused <= 3);
    }
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * A member leaves while another keeps committing: its self-remove proposal for an epoch
 * that has passed is taken, queued with that epoch, and it is a member no more (it was refused
 * with ERROR_MLS_STALE_EPOCH, for ever if the other never stops).
 */
static void test_leave_any_epoch(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    uint64_t bob;

    (void)state;
    node_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    bob = b1.device_id;
    may_add(&a1, &b1, "bob@example.org");
    expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 0,
                                                  .message = "c0",
                                                  .added = &bob,
                                                  .n_added = 1}),
                1, 0);
    for (uint64_t e = 1; e < 3; e++)
        expect_sent(mls_send(&a1, &(struct send_args){.group = "g",
                                                      .kind = KIND(COMMIT),
                                                      .epoch = e,
                                                      .message = "update"}),
                    e + 1, 1);
    /* bob, at epoch 1 still, leaves */
    expect_sent(mls_send(&b1, &(struct send_args){.group = "g",
                                                  .kind = KIND(PROPOSAL),
                                                  .epoch = 1,
                                                  .message = "bye",
                                                  .removed = &bob,
                                                  .n_removed = 1}),
                3, 1);
    assert_true(expect_mls(&a1, bob, KIND(PROPOSAL), 1, "bye", 5000) != 0);
    test_expect_error(mls_send(&b1, &(struct send_args){.group = "g",
                                                        .kind = KIND(APPLICATION),
                                                        .epoch = 3,
                                                        .message = "still here?"}),
                      ERR(MLS_NOT_MEMBER));
    /* another's removal is still a commit's, and a stale one is still refused */
    expect_stale(mls_send(&a1,
                          &(struct send_args){
                              .group = "g", .kind = KIND(PROPOSAL), .epoch = 1, .message = "p"}),
                 3);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * Claims and uploads of KeyPackages are never free (J12, J13): a claim for a handle that no
 * account has takes a token of the unknown-handle bucket (it took none), refusals are counted,
 * and a device uploads KeyPackages at most 10 times before it must wait.
 */
static void test_kp_rates(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    const char *one[1] = {"kp"};
    msv_frame *r;

    (void)state;
    node_init(&s, "[directory]\nunknown_lookup_burst = 2\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    for (int i = 0; i < 2; i++) {
        r = kp_claim(a1.conn, "nobody@example.org");
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGES);
        assert_int_equal(r->mls_key_packages->n_key_packages, 0);
        msv_frame_free(r);
    }
    test_expect_error(kp_claim(a1.conn, "nobody@example.org"), ERR(RATE_LIMITED));
    assert_int_equal(test_server_metric(&s, "mls_refused_total"), 1);
    /* a handle someone has is claimed as before */
    r = kp_claim(a1.conn, "bob@example.org");
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGES);
    msv_frame_free(r);
    for (int i = 0; i < 10; i++) {
        r = kp_upload(&b1, one, 1, NULL, 0);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_STATE);
        msv_frame_free(r);
    }
    test_expect_error(kp_upload(&b1, one, 1, NULL, 0), ERR(RATE_LIMITED));
    assert_int_equal(kp_left(&b1, NULL), 10); /* asking what is left is free */
    assert_int_equal(test_server_metric(&s, "mls_refused_total"), 2);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * alice (a1) and bob (b1) on a node whose MLS commits pause a second before the store: a1 sends
 * a commit starting group, adding gone (a device of bob's account put straight into the store,
 * with a1's claim), which has been checked and waits for the store when this returns.
 */
static void commit_adding(struct test_server *s, struct test_device *a1, struct test_device *b1,
                          const char *group, uint64_t gone)
{
    Msv__Wire__Frame f;
    Msv__Wire__MlsSend q;
    uint64_t id;

    node_init(s, "[testing]\nmls_commit_pause_ms = 1000\n");
    test_server_start(s);
    test_register(s, "alice@example.org", a1);
    test_register(s, "bob@example.org", b1);
    add_raw_devices(s, 2, gone, 1);
    seed_claims(s, a1->device_id, gone, 1);
    build_send(&(struct send_args){.group = group,
                                   .kind = KIND(COMMIT),
                                   .epoch = 0,
                                   .message = "c0",
                                   .added = &gone,
                                   .n_added = 1},
               &f, &q);
    assert_int_equal(msv_conn_send_request(a1->conn, &f, &id), MSV_OK);
    usleep(300 * 1000);
}

/*
 * A device removed while a commit adding it waits to be stored does not become a member:
 * the commit's transaction adds only devices that still exist and are approved (it added
 * the device id all the same, a member row nobody could remove).
 */
static void test_added_device_removed(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    uint64_t gone = 3000000;
    char sql[128];
    msv_frame *r = NULL;

    (void)state;
    commit_adding(&s, &a1, &b1, "gone", gone);
    snprintf(sql, sizeof(sql), "DELETE FROM devices WHERE id = %llu;", (unsigned long long)gone);
    store_exec(&s, sql);
    assert_int_equal(msv_conn_recv(a1.conn, TEST_TIMEOUT_MS, &r), MSV_OK);
    expect_sent(r, 1, 0);
    /* the group holds alice alone: a message to it goes to nobody */
    expect_sent(mls_send(&a1, &(struct send_args){.group = "gone",
                                                  .kind = KIND(APPLICATION),
                                                  .epoch = 1,
                                                  .message = "anyone?"}),
                1, 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/* The removal of a device as missived's transaction makes it, slowed down (a thread's job). */
static void *slow_removal(void *arg)
{
    char sql[384];

    snprintf(sql, sizeof(sql),
             "BEGIN; DELETE FROM devices WHERE id = %1$llu; DELETE FROM mls_members WHERE"
             " device_id = %1$llu; SELECT pg_sleep(2); DELETE FROM mls_claims WHERE device_id ="
             " %1$llu; COMMIT;",
             (unsigned long long)*(const uint64_t *)arg);
    pg_exec(pg_conninfo, sql);
    return NULL;
}

/*
 * J16: on PostgreSQL, a device's removal committing at the very moment a commit adding it is
 * stored (another node's transaction has deleted the device and its memberships and sleeps
 * before it commits): the commit waits for the removal and does not make the device a member
 * (it is refused: the device's claim went with it). The commit's insert read the device as it
 * was before the removal, and left a member row for a device that no longer existed.
 */
static void test_added_device_removal_racing(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    uint64_t gone = 3000000;
    pthread_t remover;
    msv_frame *r = NULL;
    PGconn *db;
    PGresult *res;
    char sql[128];

    (void)state;
    if (!on_postgres())
        skip(); /* SQLite's transactions do not interleave: test_added_device_removed */
    commit_adding(&s, &a1, &b1, "racing", gone);
    assert_int_equal(pthread_create(&remover, NULL, slow_removal, &gone), 0);
    assert_int_equal(msv_conn_recv(a1.conn, 3 * TEST_TIMEOUT_MS, &r), MSV_OK);
    assert_int_equal(pthread_join(remover, NULL), 0);
    assert_int_equal(test_error_code(r), ERR(INVALID));
    msv_frame_free(r);
    db = PQconnectdb(pg_conninfo);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM mls_members WHERE device_id = %llu;",
             (unsigned long long)gone);
    res = PQexec(db, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    PQfinish(db);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/* A claim of handle's KeyPackages by d, then d's commit starting group with device added. */
static msv_frame *claim_and_add(struct test_device *d, const char *handle, const char *group,
                                uint64_t added)
{
    msv_frame_free(kp_claim(d->conn, handle));
    return mls_send(d, &(struct send_args){.group = group,
                                           .kind = KIND(COMMIT),
                                           .epoch = 0,
                                           .message = "c0",
                                           .added = &added,
                                           .n_added = 1});
}

/*
 * One account adds another account's device to at most 250 groups (claims, last-resort ones
 * too, being cheap): the 251st is refused whole, ERROR_TOO_BIG, the device's other slots left
 * to others, also once the device that added them is removed and another of the account's
 * tries; another account still adds it, and so does the device's own account.
 */
static void test_groups_by_one_account_bounded(void **state)
{
    struct test_server s;
    struct test_device a1, a2, b1, b2, c1;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;
    const char *kp = "kp";
    char group[32];

    (void)state;
    node_init(&s, "[relay]\nsend_burst = 100000\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_add_device(&s, "alice@example.org", &a1, &a2);
    test_register(&s, "bob@example.org", &b1);
    test_add_device(&s, "bob@example.org", &b1, &b2);
    test_register(&s, "carol@example.org", &c1);
    msv_frame_free(kp_upload(&b1, &kp, 1, "kp-last", 0));
    for (int i = 0; i < 250; i++) {
        snprintf(group, sizeof(group), "g%d", i);
        expect_sent(claim_and_add(&a1, "bob@example.org", group, b1.device_id), 1, 0);
    }
    test_expect_error(claim_and_add(&a1, "bob@example.org", "g250", b1.device_id), ERR(TOO_BIG));
    rm.device_id = a1.device_id;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    test_expect_ok(test_request(a2.conn, &req));
    test_expect_error(claim_and_add(&a2, "bob@example.org", "g251", b1.device_id), ERR(TOO_BIG));
    /* nothing of the refused one: its group was not started */
    expect_sent(mls_send(&a2,
                         &(struct send_args){
                             .group = "g250", .kind = KIND(COMMIT), .epoch = 0, .message = "c0"}),
                1, 0);
    expect_sent(claim_and_add(&c1, "bob@example.org", "carol's", b1.device_id), 1, 0);
    expect_sent(claim_and_add(&b2, "bob@example.org", "bob's", b1.device_id), 1, 0);
    test_device_free(&a1);
    test_device_free(&a2);
    test_device_free(&b1);
    test_device_free(&b2);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

/*
 * J15: a commit adds only a device whose KeyPackage its account claimed and has not used
 * (RFC 9420: an Add carries the KeyPackage), so that nobody fills a stranger's device with
 * groups it never learns of: a claim by another account, a claim used already and an
 * expired one do not do; each refusal names the device and changes nothing.
 */
static void test_add_needs_claim(void **state)
{
    struct test_server s;
    struct test_device a1, b1, m1;
    uint64_t bob;
    char name[32], text[256];
    msv_frame *r;

    (void)state;
    node_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "mallory@example.org", &m1);
    bob = b1.device_id;
    may_add(&a1, &b1, "bob@example.org"); /* alice's claim, not mallory's */
    r = mls_send(&m1, &(struct send_args){.group = "trap",
                                          .kind = KIND(COMMIT),
                                          .epoch = 0,
                                          .message = "c0",
                                          .added = &bob,
                                          .n_added = 1});
    assert_int_equal(test_error_code(r), ERR(INVALID));
    snprintf(name, sizeof(name), "device %llu", (unsigned long long)bob);
    assert_true(r->error->message.len < sizeof(text));
    memcpy(text, r->error->message.data, r->error->message.len);
    text[r->error->message.len] = '\0';
    assert_non_null(strstr(text, name));
    msv_frame_free(r);
    /* nothing changed: the group was not started (its epoch 0 is still free) */
    expect_sent(mls_send(&m1,
                         &(struct send_args){
                             .group = "trap", .kind = KIND(COMMIT), .epoch = 0, .message = "c0"}),
                1, 0);
    /* alice's claim adds bob once */
    expect_sent(mls_send(&a1, &(struct send_args){.group = "one",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 0,
                                                  .message = "c0",
                                                  .added = &bob,
                                                  .n_added = 1}),
                1, 0);
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "two",
                                                        .kind = KIND(COMMIT),
                                                        .epoch = 0,
                                                        .message = "c0",
                                                        .added = &bob,
                                                        .n_added = 1}),
                      ERR(INVALID));
    /* an expired claim does not do */
    may_add(&a1, &b1, "bob@example.org");
    store_exec(&s, "UPDATE mls_claims SET expires_ms = 1;");
    test_expect_error(mls_send(&a1, &(struct send_args){.group = "two",
                                                        .kind = KIND(COMMIT),
                                                        .epoch = 0,
                                                        .message = "c0",
                                                        .added = &bob,
                                                        .n_added = 1}),
                      ERR(INVALID));
    /* a fresh one does; bob is in one group, then two, and gets the next commits */
    may_add(&a1, &b1, "bob@example.org");
    expect_sent(mls_send(&a1, &(struct send_args){.group = "two",
                                                  .kind = KIND(COMMIT),
                                                  .epoch = 0,
                                                  .message = "c0",
                                                  .added = &bob,
                                                  .n_added = 1}),
                1, 0);
    expect_sent(mls_send(&a1,
                         &(struct send_args){
                             .group = "two", .kind = KIND(COMMIT), .epoch = 1, .message = "c1"}),
                2, 1);
    /* bob lists the groups he is in: "one" at epoch 1 and "two" at 2, not mallory's "trap" */
    {
        Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
        Msv__Wire__MlsGroupsList q = MSV__WIRE__MLS_GROUPS_LIST__INIT;
        const Msv__Wire__MlsGroups *g;

        f.body_case = MSV__WIRE__FRAME__BODY_MLS_GROUPS_LIST;
        f.mls_groups_list = &q;
        r = test_request(b1.conn, &f);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_GROUPS);
        g = r->mls_groups;
        assert_int_equal(g->n_groups, 2);
        assert_int_equal(g->groups[0]->group_id.len, 3);
        assert_memory_equal(g->groups[0]->group_id.data, "one", 3);
        assert_int_equal(g->groups[0]->epoch, 1);
        assert_memory_equal(g->groups[1]->group_id.data, "two", 3);
        assert_int_equal(g->groups[1]->epoch, 2);
        msv_frame_free(r);
        r = test_request(m1.conn, &f); /* mallory: her own group alone */
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_MLS_GROUPS);
        assert_int_equal(r->mls_groups->n_groups, 1);
        assert_memory_equal(r->mls_groups->groups[0]->group_id.data, "trap", 4);
        msv_frame_free(r);
    }
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&m1);
    test_server_cleanup(&s);
}

/*
 * MLS KeyPackage claims and pairwise prekey claims are paced in buckets of their own: a
 * KeyPackage claimed for bob's device leaves alice's next prekey claim of it unthrottled
 * (they shared one, so the one throttled the other).
 */
static void test_claim_buckets_apart(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    const char *one[1] = {"kp-b1"};
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__PrekeyClaim q = MSV__WIRE__PREKEY_CLAIM__INIT;
    uint64_t bob;
    msv_frame *r;

    (void)state;
    node_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    bob = b1.device_id;
    msv_frame_free(kp_upload(&b1, one, 1, NULL, 0));
    r = kp_claim(a1.conn, "bob@example.org");
    assert_string_equal(claimed_for(r, bob, NULL), "kp-b1");
    msv_frame_free(r);
    q.n_device_ids = 1;
    q.device_ids = &bob;
    f.body_case = MSV__WIRE__FRAME__BODY_PREKEY_CLAIM;
    f.prekey_claim = &q;
    msv_frame_free(test_request(a1.conn, &f));
    assert_int_equal(test_server_metric(&s, "prekey_claims_throttled_total"), 0);
    assert_int_equal(test_server_metric(&s, "mls_key_package_claims_throttled_total"), 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_key_packages, setup),
        cmocka_unit_test_setup(test_claim_race, setup),
        cmocka_unit_test_setup(test_group_ordering, setup),
        cmocka_unit_test_setup(test_commit_race, setup),
        cmocka_unit_test_setup(test_fanout_10000, setup),
        cmocka_unit_test_setup(test_full_queue, setup),
        cmocka_unit_test_setup(test_commit_log, setup),
        cmocka_unit_test_setup(test_welcome_kept, setup),
        cmocka_unit_test_setup(test_welcome_and_commit_at_once, setup),
        cmocka_unit_test_setup(test_send_costs, setup),
        cmocka_unit_test_setup(test_leave_any_epoch, setup),
        cmocka_unit_test_setup(test_kp_rates, setup),
        cmocka_unit_test_setup(test_added_device_removed, setup),
        cmocka_unit_test_setup(test_added_device_removal_racing, setup),
        cmocka_unit_test_setup(test_claim_buckets_apart, setup),
        cmocka_unit_test_setup(test_add_needs_claim, setup),
        cmocka_unit_test_setup(test_groups_by_one_account_bounded, setup),
    };
    int rc;

    if (getenv("MSV_TEST") != NULL)
        cmocka_set_test_filter(getenv("MSV_TEST"));
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (shared_dir[0] != '\0') {
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", shared_dir);
        if (system(cmd) != 0)
            rc = 1;
    }
    return rc;
}
