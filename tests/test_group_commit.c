/*
 * The group commit off the event loop (docs/missived.md, "Group commit"): each
 * worker's commit runs on a committer thread of its own while the worker goes
 * on reading. [testing] commit_delay_ms makes every commit take that long, so
 * that a connection can close, and SIGTERM can come, while one is in flight.
 * Runs on SQLite, and on PostgreSQL under scripts/services.sh (ctest
 * group_commit_postgres), where MSV_TEST_POSTGRES names the database.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "client/requests.h"
#include "missive/util.h"
#include "server_harness.h"

#define DELAY_MS 1500

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* A server whose every group commit takes DELAY_MS, on PostgreSQL when the services run. */
static void start_slow(struct test_server *s, const char *more)
{
    char extra[900];
    const char *pg = getenv("MSV_TEST_POSTGRES");

    snprintf(extra, sizeof(extra), "commit_delay_ms = %d\n%s%s%s%s", DELAY_MS,
             pg != NULL ? "[store]\nbackend = postgres\npostgres = " : "", pg != NULL ? pg : "",
             pg != NULL ? "\n" : "", more != NULL ? more : "");
    test_server_init(s, extra);
    test_server_start(s);
}

/* Waits (10 s at most) until the server's metric name is at least want. */
static void wait_metric(struct test_server *s, const char *name, unsigned long long want)
{
    for (int i = 0; i < 500; i++) {
        if (test_server_metric(s, name) >= want)
            return;
        sleep_ms(20);
    }
    fail_msg("metric %s did not reach %llu", name, want);
}

/* The answer to request_id on d's connection (other frames are skipped); caller frees. */
static msv_frame *answer_to(struct test_device *d, uint64_t request_id)
{
    for (;;) {
        msv_frame *f = NULL;

        assert_int_equal(msv_conn_recv(d->conn, 3 * DELAY_MS + TEST_TIMEOUT_MS, &f), MSV_OK);
        if (f->request_id == request_id)
            return f;
        msv_frame_free(f);
    }
}

/* Handles of their own per test: on PostgreSQL the tests share one database. */
static void two_devices(struct test_server *s, const char *test, struct test_device *a,
                        struct test_device *b)
{
    char ha[64], hb[64];

    snprintf(ha, sizeof(ha), "alice.%s@example.org", test);
    snprintf(hb, sizeof(hb), "bob.%s@example.org", test);
    test_register(s, ha, a);
    test_register(s, hb, b);
}

/*
 * A sender that hangs up while its send is being committed: the envelope is
 * still committed (the recipient gets it), nothing is written to the freed
 * connection (a use after free that the sanitizer build catches, and that
 * crashes or corrupts the worker otherwise), and the worker goes on serving.
 */
static void test_close_while_committing(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *bob[1];
    uint64_t q;

    (void)state;
    start_slow(&s, NULL);
    two_devices(&s, "close", &a1, &b1);
    bob[0] = b1.handle;
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    test_send_begin(&a1, &b1, "sent, then gone", 7001);
    wait_metric(&s, "commits_in_flight", 1);
    msv_conn_close(a1.conn);
    a1.conn = NULL;
    /* the commit returns while the connection is gone; the node still answers */
    sleep_ms(DELAY_MS + 300);
    test_device_connect(&s, &a1);
    test_expect_ok(test_send(&a1, bob, 1, to, 1, "after the close"));
    test_device_connect(&s, &b1);
    q = test_expect_message(&b1, &a1, "sent, then gone", TEST_TIMEOUT_MS);
    assert_true(q != 0);
    test_ack(&b1, q);
    assert_true(test_expect_message(&b1, &a1, "after the close", TEST_TIMEOUT_MS) > q);
    assert_int_equal(test_server_metric(&s, "commit_failures_total"), 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_stop(&s); /* a clean exit: the worker survived */
    test_server_cleanup(&s);
}

/* The device of bob.TEST@example.org, registered and then offline. */
static void recipient(struct test_server *s, const char *test, struct test_device *b)
{
    char h[64];

    snprintf(h, sizeof(h), "bob.%s@example.org", test);
    test_register(s, h, b);
}

/* n devices of their own handles, sender.TEST.i@example.org, connected. */
static void senders(struct test_server *s, const char *test, struct test_device *d, int n)
{
    for (int i = 0; i < n; i++) {
        char h[64];

        snprintf(h, sizeof(h), "sender%d.%s@example.org", i, test);
        test_register(s, h, &d[i]);
    }
}

static void expect_answer_ok(struct test_device *d, uint64_t request_id)
{
    msv_frame *f = answer_to(d, request_id);

    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_OK);
    msv_frame_free(f);
}

/*
 * SIGTERM while a commit is in flight and another send waits for the next
 * one: the stop waits for the first, commits the second, answers both (each
 * Ok only once stored) and exits 0; both are there after a restart.
 */
static void test_stop_while_committing(void **state)
{
    struct test_server s;
    struct test_device a[2], b1;
    int status = 0;

    (void)state;
    start_slow(&s, "[server]\nworkers = 1\n"); /* both sends on the one worker */
    senders(&s, "stop", a, 2);
    recipient(&s, "stop", &b1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    test_send_begin(&a[0], &b1, "in flight at the stop", 7101);
    wait_metric(&s, "commits_in_flight", 1);
    test_send_begin(&a[1], &b1, "waiting at the stop", 7102);
    wait_metric(&s, "sends_total", 2); /* read: it waits for the next commit */
    assert_int_equal(kill(s.pid, SIGTERM), 0);
    expect_answer_ok(&a[0], 7101);
    expect_answer_ok(&a[1], 7102);
    assert_int_equal(waitpid(s.pid, &status, 0), s.pid);
    s.pid = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    test_server_start(&s);
    test_device_connect(&s, &b1);
    assert_true(test_expect_message(&b1, &a[0], "in flight at the stop", TEST_TIMEOUT_MS) != 0);
    assert_true(test_expect_message(&b1, &a[1], "waiting at the stop", TEST_TIMEOUT_MS) != 0);
    for (int i = 0; i < 2; i++)
        test_device_free(&a[i]);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/* Sends a lookup of handle on d's connection (request rid), not waiting for its answer. */
static void lookup_begin(struct test_device *d, const char *handle, uint64_t rid)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LookupRequest q = MSV__WIRE__LOOKUP_REQUEST__INIT;
    ProtobufCBinaryData h = {.data = (uint8_t *)handle, .len = strlen(handle)};

    q.n_handles = 1;
    q.handles = &h;
    req.body_case = MSV__WIRE__FRAME__BODY_LOOKUP;
    req.lookup = &q;
    req.request_id = rid;
    assert_int_equal(msv_conn_send(d->conn, &req), MSV_OK);
}

/* A lookup on d's connection, answered. */
static void lookup(struct test_device *d, const char *handle, uint64_t rid)
{
    msv_frame *f;

    lookup_begin(d, handle, rid);
    f = answer_to(d, rid);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
    msv_frame_free(f);
}

/*
 * Answers on one connection come in the order of its requests: a lookup sent
 * after a send is answered after the send's Ok, once the send's commit
 * returned, though the lookup needs no commit.
 */
static void test_answers_in_order(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    msv_frame *f = NULL;

    (void)state;
    start_slow(&s, NULL);
    two_devices(&s, "order", &a1, &b1);
    test_send_begin(&a1, &b1, "first", 7301);
    lookup_begin(&a1, b1.handle, 7302);
    do {
        msv_frame_free(f);
        f = NULL;
        assert_int_equal(msv_conn_recv(a1.conn, 3 * DELAY_MS + TEST_TIMEOUT_MS, &f), MSV_OK);
    } while (f->request_id == 0);
    assert_int_equal(f->request_id, 7301);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_OK);
    msv_frame_free(f);
    f = answer_to(&a1, 7302);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
    msv_frame_free(f);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/*
 * The next batch is bounded ([store] commit_backlog): past it the worker
 * stops reading requests until the commit in flight returns
 * (commit_backlog_paused_total), then reads and answers every one.
 */
static void test_backlog_bounded(void **state)
{
    struct test_server s;
    struct test_device a[4], b1;
    const char *texts[4] = {"one", "two", "three", "four"};

    (void)state;
    start_slow(&s, "[server]\nworkers = 1\n[store]\ncommit_backlog = 1\n");
    senders(&s, "backlog", a, 4);
    recipient(&s, "backlog", &b1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    test_send_begin(&a[0], &b1, texts[0], 7200);
    wait_metric(&s, "commits_in_flight", 1);
    test_send_begin(&a[1], &b1, texts[1], 7201);
    wait_metric(&s, "sends_total", 2); /* the next batch holds one envelope: full */
    for (int i = 2; i < 4; i++)
        test_send_begin(&a[i], &b1, texts[i], 7200 + (uint64_t)i);
    wait_metric(&s, "commit_backlog_paused_total", 1);
    assert_int_equal(test_server_metric(&s, "sends_total"), 2); /* the others wait unread */
    for (int i = 0; i < 4; i++)
        expect_answer_ok(&a[i], 7200 + (uint64_t)i);
    test_device_connect(&s, &b1);
    for (int i = 0; i < 4; i++) {
        msv_frame *f = NULL;

        assert_int_equal(msv_conn_recv(b1.conn, TEST_TIMEOUT_MS, &f), MSV_OK);
        assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_DELIVER);
        if (i < 2) /* the first two in commit order; the others in either order */
            assert_int_equal(f->deliver->sender_device, a[i].device_id);
        msv_frame_free(f);
    }
    for (int i = 0; i < 4; i++)
        test_device_free(&a[i]);
    test_device_free(&b1);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/*
 * Acknowledgements of ids never pushed on the connection (made up) do not join the worker's
 * commit: 40 x 4096 of them used to fill its backlog, so that every other connection of the
 * worker waited for a commit per request (commit_backlog_paused_total rose by two a commit).
 */
static void test_ack_flood(void **state)
{
    struct test_server s;
    struct test_device v, a;
    static uint64_t ids[4096];

    (void)state;
    test_server_init(&s, "commit_delay_ms = 200\n[server]\nworkers = 1\n");
    test_server_start(&s);
    recipient(&s, "floodv", &v);
    recipient(&s, "flooda", &a);
    for (int i = 0; i < 4096; i++)
        ids[i] = 1000000000ull + (uint64_t)i;
    for (int k = 0; k < 40; k++)
        assert_int_equal(msv_request_ack(a.conn, ids, 4096), MSV_OK);
    for (int k = 0; k < 5; k++)
        lookup(&v, a.handle, 9001 + (uint64_t)k);
    lookup(&a, v.handle, 9100); /* read after every acknowledgement of a */
    assert_int_equal(test_server_metric(&s, "commit_backlog_paused_total"), 0);
    test_device_free(&v);
    test_device_free(&a);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/*
 * A queue capped at 3 envelopes: one send is committing while 11 more to the same device
 * arrive; they form one batch, whose sends count against each other (all 11 passed before).
 */
static void test_cap_within_batch(void **state)
{
    struct test_server s;
    struct test_device a[12], b1;
    int got = 0;

    (void)state;
    start_slow(&s, "[server]\nworkers = 1\n[relay]\nqueue_max_envelopes = 3\n[accounts]\n"
                   "register_burst = 1000\nregister_rate = 1000\n");
    senders(&s, "cap", a, 12);
    recipient(&s, "cap", &b1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    test_send_begin(&a[0], &b1, "m", 7400);
    wait_metric(&s, "commits_in_flight", 1);
    for (int i = 1; i < 12; i++)
        test_send_begin(&a[i], &b1, "m", 7400 + (uint64_t)i);
    for (int i = 0; i < 12; i++) {
        msv_frame *f = answer_to(&a[i], 7400 + (uint64_t)i);

        got += f->body_case == MSV__WIRE__FRAME__BODY_OK;
        msv_frame_free(f);
    }
    assert_int_equal(got, 3);
    for (int i = 0; i < 12; i++)
        test_device_free(&a[i]);
    test_device_free(&b1);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/*
 * An envelope acknowledged on a connection just before the device reconnects is pushed again
 * on the new connection while that acknowledgement waits for its commit; the new connection's
 * own acknowledgement then deletes nothing, and must still free its delivery window (it stayed
 * shut: the next message never came).
 */
static void test_window_after_reconnect(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *bob[1];
    uint64_t q, q2;

    (void)state;
    start_slow(&s, "[server]\nworkers = 1\n[relay]\ndelivery_window = 1\n");
    two_devices(&s, "leak", &a1, &b1);
    bob[0] = b1.handle;
    test_expect_ok(test_send(&a1, bob, 1, to, 1, "one"));
    q = test_expect_message(&b1, &a1, "one", TEST_TIMEOUT_MS);
    test_ack(&b1, q);             /* waits for its commit */
    test_device_connect(&s, &b1); /* the device reconnects meanwhile */
    q2 = test_expect_message(&b1, &a1, "one", TEST_TIMEOUT_MS); /* pushed again */
    assert_int_equal(q2, q);
    test_ack(&b1, q2);
    test_expect_ok(test_send(&a1, bob, 1, to, 1, "two"));
    assert_true(test_expect_message(&b1, &a1, "two", 3 * DELAY_MS + TEST_TIMEOUT_MS) != 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/* Runs sql on the test's PostgreSQL database (MSV_TEST_POSTGRES), as the tests' own session. */
static void pg_exec(const char *sql)
{
    PGconn *db = PQconnectdb(getenv("MSV_TEST_POSTGRES"));
    PGresult *r = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(r);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);
}

/*
 * Z2: the recipients' queue usage cannot be read (PostgreSQL: its table renamed away, while
 * the queue itself, which /health reads, is still there): every send is refused ERROR_IO,
 * so /health says 503 with the reason until a read succeeds again (it said ok: the batch,
 * emptied of its refused sends, committed nothing and so "succeeded"); with no send, /health
 * makes the read again itself (before, it stayed 503 until a send came).
 */
static void test_health_usage_fails(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *bob[1];
    char health[1024];
    msv_frame *r;

    (void)state;
    if (getenv("MSV_TEST_POSTGRES") == NULL)
        skip();
    start_slow(&s, "[server]\nworkers = 1\n");
    two_devices(&s, "usage", &a1, &b1);
    bob[0] = b1.handle;
    pg_exec("ALTER TABLE queue_usage RENAME TO queue_usage_away;");
    r = test_send(&a1, bob, 1, to, 1, "refused");
    assert_int_equal(test_error_code(r), MSV__WIRE__ERROR_CODE__ERROR_IO);
    msv_frame_free(r);
    assert_int_equal(test_server_http(&s, "/health", health, sizeof(health)), 503);
    assert_non_null(strstr(health, "\"commits\":\"failing\""));
    if (strstr(health, "queue usage could not be read") == NULL)
        fail_msg("/health: %s", health);
    pg_exec("ALTER TABLE queue_usage_away RENAME TO queue_usage;");
    /* with no send to make the read again, /health makes it itself (once a second): an idle node
     * out of its load balancer for that 503 would otherwise never get one */
    for (int i = 0; i < 50 && test_server_http(&s, "/health", health, sizeof(health)) != 200; i++)
        sleep_ms(100);
    if (strstr(health, "\"status\":\"ok\"") == NULL)
        fail_msg("/health with no send after the usage read recovered: %s", health);
    assert_true(test_server_metric(&s, "health_retries_total") >= 1);
    test_expect_ok(test_send(&a1, bob, 1, to, 1, "accepted"));
    assert_int_equal(test_server_http(&s, "/health", health, sizeof(health)), 200);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/*
 * Z3: a pool of one PostgreSQL connection, which the group commit holds for 4 s (a trigger
 * sleeps in every insert into the queue): a request that needs the store waits at most
 * [store] pool_wait_ms (200 ms here), then is refused ERROR_IO (try again) and counted in
 * store_pool_timeouts_total. It waited for the commit, and with it every connection of the
 * worker; the send being committed still commits.
 */
static void test_pool_wait_bounded(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct msv_refusal why;
    msv_frame *answer = NULL;
    int64_t asked;

    (void)state;
    if (getenv("MSV_TEST_POSTGRES") == NULL)
        skip();
    start_slow(&s, "[server]\nworkers = 1\n[store]\nconnections = 1\npool_wait_ms = 200\n");
    two_devices(&s, "pool", &a1, &b1);
    pg_exec("CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " PERFORM pg_sleep(4); RETURN NULL; END $$; CREATE TRIGGER test_slow AFTER INSERT"
            " ON queue FOR EACH STATEMENT EXECUTE FUNCTION test_slow();");
    test_send_begin(&a1, &b1, "slow", 7601);
    wait_metric(&s, "commits_in_flight", 1);
    sleep_ms(DELAY_MS + 500); /* the commit holds the pool's one connection in the trigger */
    asked = msv_mono_ms();
    assert_int_equal(msv_request_handle_list(b1.conn, TEST_TIMEOUT_MS, &answer, &why), MSV_ERR_IO);
    assert_int_equal(why.code, MSV__WIRE__ERROR_CODE__ERROR_IO);
    assert_true(msv_mono_ms() - asked < 2000);
    expect_answer_ok(&a1, 7601);
    assert_true(test_server_metric(&s, "store_pool_timeouts_total") >= 1);
    pg_exec("DROP TRIGGER test_slow ON queue; DROP FUNCTION test_slow();");
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/*
 * A server whose commits take DELAY_MS; a1 (alice.TEST) sends "to both" of bob.TEST's devices,
 * b1 and b2 (request_id), and the send's commit is in flight when this returns.
 */
static void send_to_pair(struct test_server *s, const char *test, struct test_device *a1,
                         struct test_device *b1, struct test_device *b2, uint64_t request_id)
{
    struct test_device *to[2] = {b1, b2};
    const char *bob[1];

    start_slow(s, NULL);
    two_devices(s, test, a1, b1);
    test_add_device(s, b1->handle, b1, b2);
    bob[0] = b1->handle;
    test_send_many_begin(a1, bob, 1, to, 2, "to both", request_id);
    wait_metric(s, "commits_in_flight", 1);
}

/*
 * Z4: a send to bob's two devices whose commit waits (commit_delay_ms) while bob's first device
 * removes the second: nothing is queued for the removed device and the sender is not told Ok
 * (ERROR_IO, nothing of the send stored: trying again, it learns bob's devices changed;
 * sends_device_gone_total); bob's remaining device gets nothing of it. The envelope was queued
 * for a device that no longer existed, and the send answered Ok.
 */
static void test_send_to_removed_device(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;
    msv_frame *f;

    (void)state;
    send_to_pair(&s, "gone", &a1, &b1, &b2, 7701);
    rm.device_id = b2.device_id;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    test_expect_ok(test_request(b1.conn, &req));
    f = answer_to(&a1, 7701);
    assert_int_equal(test_error_code(f), MSV__WIRE__ERROR_CODE__ERROR_IO);
    assert_non_null(strstr((const char *)f->error->message.data, "removed"));
    msv_frame_free(f);
    assert_int_equal(test_server_metric(&s, "sends_device_gone_total"), 1);
    assert_int_equal(test_expect_message(&b1, &a1, "to both", 1000), 0);
    if (getenv("MSV_TEST_POSTGRES") == NULL) {
        struct test_queued *rows = NULL;
        size_t n = test_server_queued(&s, &rows);

        for (size_t i = 0; i < n; i++)
            assert_int_not_equal(rows[i].device_id, b2.device_id);
        test_queued_free(rows, n);
    }
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

/* A device's removal as another node's transaction makes it, slowed down (a thread's job). */
static void *slow_removal(void *arg)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "BEGIN; DELETE FROM devices WHERE id = %1$llu; SELECT pg_sleep(2); DELETE FROM queue"
             " WHERE device_id = %1$llu; COMMIT;",
             (unsigned long long)*(const uint64_t *)arg);
    pg_exec(sql);
    return NULL;
}

/*
 * Z4 on PostgreSQL, the removal committing at the very moment of the commit (another node's
 * transaction has deleted the device, and commits 2 s later): the commit waits for it, then
 * refuses the send (ERROR_IO, nothing stored). It went through beside the removal, and the
 * sender was told Ok for a device that no longer existed.
 */
static void test_send_racing_removal(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2;
    pthread_t remover;
    msv_frame *f;

    (void)state;
    if (getenv("MSV_TEST_POSTGRES") == NULL)
        skip();
    send_to_pair(&s, "racing", &a1, &b1, &b2, 7901);
    assert_int_equal(pthread_create(&remover, NULL, slow_removal, &b2.device_id), 0);
    f = answer_to(&a1, 7901);
    assert_int_equal(pthread_join(remover, NULL), 0);
    assert_int_equal(test_error_code(f), MSV__WIRE__ERROR_CODE__ERROR_IO);
    assert_non_null(strstr((const char *)f->error->message.data, "removed"));
    msv_frame_free(f);
    assert_int_equal(test_expect_message(&b1, &a1, "to both", 1000), 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_stop(&s);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_while_committing),
        cmocka_unit_test(test_stop_while_committing),
        cmocka_unit_test(test_answers_in_order),
        cmocka_unit_test(test_backlog_bounded),
        cmocka_unit_test(test_window_after_reconnect),
        cmocka_unit_test(test_cap_within_batch),
        cmocka_unit_test(test_ack_flood),
        cmocka_unit_test(test_health_usage_fails),
        cmocka_unit_test(test_pool_wait_bounded),
        cmocka_unit_test(test_send_to_removed_device),
        cmocka_unit_test(test_send_racing_removal),
    };

    if (msv_init() != MSV_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    if (getenv("MSV_TEST") != NULL)
        cmocka_set_test_filter(getenv("MSV_TEST"));
    return cmocka_run_group_tests_name("group_commit", tests, NULL, NULL);
}
