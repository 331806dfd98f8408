/*
 * missived end to end: each test starts a real server process on loopback
 * with its own data directory, and drives it as devices with real sealed
 * envelopes through the client connection.
 */
#define _GNU_SOURCE /* prlimit */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "missive/kt.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "missive/vrf.h"
#include "server_harness.h"

#define QUICK_MS 700

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A request round trip on d's connection, so that everything sent before it was handled. */
static void sync_conn(struct test_device *d)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LookupRequest q = MSV__WIRE__LOOKUP_REQUEST__INIT;
    ProtobufCBinaryData h = {strlen(d->handle), (uint8_t *)d->handle};
    msv_frame *resp;

    q.n_handles = 1;
    q.handles = &h;
    req.body_case = MSV__WIRE__FRAME__BODY_LOOKUP;
    req.lookup = &q;
    resp = test_request(d->conn, &req);
    msv_frame_free(resp);
}

static int error_code(const msv_frame *f)
{
    return f->body_case == MSV__WIRE__FRAME__BODY_ERROR ? (int)f->error->code : 0;
}

static void expect_ok(msv_frame *f)
{
    if (f->body_case != MSV__WIRE__FRAME__BODY_OK)
        fail_msg("expected Ok, got body %d (error %d)", f->body_case, error_code(f));
    msv_frame_free(f);
}

static void expect_error(msv_frame *f, int code)
{
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_ERROR);
    assert_int_equal(f->error->code, code);
    msv_frame_free(f);
}

static msv_frame *lookup(struct msv_conn *c, const char *handle);

/* d is still served: a lookup of handle (one device) is answered. */
static void expect_served(struct test_device *d, const char *handle)
{
    msv_frame *r = lookup(d->conn, handle);

    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
    assert_int_equal(r->lookup_result->results[0]->n_devices, 1);
    msv_frame_free(r);
}

/* A lookup of one handle, with the tree head size the asker knows (0: none). */
static msv_frame *lookup_from(struct msv_conn *c, const char *handle, uint64_t known_size)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LookupRequest q = MSV__WIRE__LOOKUP_REQUEST__INIT;
    ProtobufCBinaryData h = {strlen(handle), (uint8_t *)handle};

    q.n_handles = 1;
    q.handles = &h;
    q.known_size = known_size;
    req.body_case = MSV__WIRE__FRAME__BODY_LOOKUP;
    req.lookup = &q;
    return test_request(c, &req);
}

static msv_frame *lookup(struct msv_conn *c, const char *handle)
{
    return lookup_from(c, handle, 0);
}

static msv_frame *report(struct msv_conn *c, const char *reported, const char *reason,
                         const char *text)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ReportRequest r = MSV__WIRE__REPORT_REQUEST__INIT;

    r.reported = (char *)reported;
    r.reason = (char *)reason;
    r.text = (char *)text;
    req.body_case = MSV__WIRE__FRAME__BODY_REPORT;
    req.report = &r;
    return test_request(c, &req);
}

/* Abuse reports: authenticated, about an account that exists, bounded; nothing else stored. */
static void test_report_request(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct msv_conn *c;
    char reason[1002];

    (void)state;
    test_server_init(&s, "[reports]\nper_day = 2\ntext_max = 16\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    c = test_connect(&s);
    expect_error(report(c, "bob@example.org", "", ""),
                 MSV__WIRE__ERROR_CODE__ERROR_UNAUTHENTICATED);
    msv_conn_close(c);
    expect_error(report(a1.conn, "", "", ""), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    expect_error(report(a1.conn, "nobody@example.org", "", ""),
                 MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    expect_error(report(a1.conn, "bob@example.org", "", "seventeen bytes.."),
                 MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    memset(reason, 'x', 1001);
    reason[1001] = '\0';
    expect_error(report(a1.conn, "bob@example.org", reason, ""),
                 MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    expect_error(report(a1.conn, "bob@example.org", "\xff\xfe", ""),
                 MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    assert_int_equal(test_server_metric(&s, "reports_total"), 0);
    test_expect_ok(report(a1.conn, "bob@example.org", "spam", "sixteen bytes..."));
    test_expect_ok(report(a1.conn, "bob@example.org", "", ""));
    /* per_day: the third of the day is refused; bob's own allowance is his */
    expect_error(report(a1.conn, "bob@example.org", "", ""),
                 MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    test_expect_ok(report(b1.conn, "alice@example.org", "", ""));
    assert_int_equal(test_server_metric(&s, "reports_total"), 3);
    assert_int_equal(test_server_metric(&s, "reports_refused_total"), 6);
    expect_served(&a1, "bob@example.org");
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/* Reports of usernames draw on the bucket of lookups of usernames nobody has, whoever has them. */
static void test_report_usernames_bounded(void **state)
{
    struct test_server s;
    struct test_device a1;

    (void)state;
    test_server_init(&s, "[directory]\nunknown_lookup_burst = 2\nunknown_lookup_rate = 0.001\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    expect_error(report(a1.conn, "nobodyone", "", ""), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    expect_error(report(a1.conn, "nobodytwo", "", ""), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    expect_error(report(a1.conn, "nobodythree", "", ""), MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    /* not a username: a lookup token only */
    expect_error(report(a1.conn, "nobody@example.org", "", ""),
                 MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

static void test_online_and_offline_delivery(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2;
    struct test_device *to[2] = {&b1, &b2};
    const char *handles[2] = {"bob@example.org", "alice@example.org"};
    msv_frame *r;
    uint64_t q;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_add_device(&s, "bob@example.org", &b1, &b2);
    msv_conn_close(b2.conn); /* b2 goes offline */
    b2.conn = NULL;

    /* the directory lists both of bob's devices with their identities */
    r = lookup(a1.conn, "Bob@Example.org");
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
    assert_int_equal(r->lookup_result->n_results, 1);
    assert_int_equal(r->lookup_result->results[0]->n_devices, 2);
    assert_int_equal(r->lookup_result->results[0]->devices[0]->device_id, b1.device_id);
    assert_int_equal(r->lookup_result->results[0]->devices[1]->device_id, b2.device_id);
    {
        size_t len;
        const uint8_t *pub = msv_public_identity_bytes(msv_identity_public(b2.id), &len);

        assert_int_equal(r->lookup_result->results[0]->devices[1]->identity.len, len);
        assert_memory_equal(r->lookup_result->results[0]->devices[1]->identity.data, pub, len);
    }
    msv_frame_free(r);

    /* acknowledged only after the commit; the online device gets it at once */
    expect_ok(test_send(&a1, handles, 2, to, 2, "hello bob"));
    q = test_expect_message(&b1, &a1, "hello bob", TEST_TIMEOUT_MS);
    assert_true(q != 0);
    test_ack(&b1, q);
    sync_conn(&b1);
    /* the offline device gets it when it connects, and not before it acknowledges, again */
    test_device_connect(&s, &b2);
    q = test_expect_message(&b2, &a1, "hello bob", TEST_TIMEOUT_MS);
    assert_true(q != 0);
    test_device_connect(&s, &b2);
    assert_int_equal(test_expect_message(&b2, &a1, "hello bob", TEST_TIMEOUT_MS), q);
    test_ack(&b2, q);
    sync_conn(&b2);
    assert_int_equal(test_server_metric(&s, "queue_depth"), 0);
    assert_int_equal(test_expect_message(&b1, &a1, "", QUICK_MS), 0);
    /* with every queue empty, the next message still reaches a device that stayed online */
    expect_ok(test_send(&a1, handles, 2, to, 2, "and again"));
    q = test_expect_message(&b1, &a1, "and again", TEST_TIMEOUT_MS);
    assert_true(q != 0);
    assert_int_equal(test_expect_message(&b2, &a1, "and again", TEST_TIMEOUT_MS) > q, 1);

    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_cleanup(&s);
}

/* Sends a QueueSync on c without waiting; its request id. */
static uint64_t queue_sync(struct msv_conn *c)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__QueueSync q = MSV__WIRE__QUEUE_SYNC__INIT;
    uint64_t id = 0;

    req.body_case = MSV__WIRE__FRAME__BODY_QUEUE_SYNC;
    req.queue_sync = &q;
    assert_int_equal(msv_conn_send_request(c, &req, &id), MSV_OK);
    return id;
}

/* A QueueSync on c, waiting for its answer (pushes meanwhile are set aside). */
static msv_frame *queue_sync_answer(struct msv_conn *c)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__QueueSync q = MSV__WIRE__QUEUE_SYNC__INIT;

    req.body_case = MSV__WIRE__FRAME__BODY_QUEUE_SYNC;
    req.queue_sync = &q;
    return test_request(c, &req);
}

/* The next frame on d's connection (a push, or an answer set aside). */
static msv_frame *next_frame(struct test_device *d)
{
    msv_frame *f = NULL;

    assert_int_equal(msv_conn_recv(d->conn, TEST_TIMEOUT_MS, &f), MSV_OK);
    return f;
}

/*
 * QueueSync is answered right after the queue's last envelope, across the delivery window
 * (two here: three envelopes wait, the third comes once the first two are acknowledged), and
 * at once when nothing more waits; a second one while one waits is refused, and none is
 * answered before authentication.
 */
static void test_queue_sync(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *handles[1] = {"bob@example.org"};
    uint64_t sync, q[3];
    struct msv_conn *c;
    msv_frame *f;

    (void)state;
    test_server_init(&s, "[relay]\ndelivery_window = 2\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    expect_ok(test_send(&a1, handles, 1, to, 1, "one"));
    expect_ok(test_send(&a1, handles, 1, to, 1, "two"));
    expect_ok(test_send(&a1, handles, 1, to, 1, "three"));
    test_device_connect(&s, &b1);
    sync = queue_sync(b1.conn);
    for (int i = 0; i < 2; i++) {
        f = next_frame(&b1);
        assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_DELIVER);
        q[i] = f->deliver->queue_id;
        msv_frame_free(f);
    }
    /* the window is full and the first sync waits: a second one is refused */
    expect_error(queue_sync_answer(b1.conn), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    test_ack(&b1, q[0]);
    test_ack(&b1, q[1]);
    f = next_frame(&b1);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_DELIVER);
    q[2] = f->deliver->queue_id;
    msv_frame_free(f);
    f = next_frame(&b1); /* after the last one, the answer */
    assert_int_equal(f->request_id, sync);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_OK);
    msv_frame_free(f);
    test_ack(&b1, q[2]);
    /* nothing waits: answered at once */
    sync = queue_sync(b1.conn);
    f = next_frame(&b1);
    assert_int_equal(f->request_id, sync);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_OK);
    msv_frame_free(f);
    c = test_connect(&s);
    expect_error(queue_sync_answer(c), MSV__WIRE__ERROR_CODE__ERROR_UNAUTHENTICATED);
    msv_conn_close(c);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * A QueueSync is answered in bounded time under steady inflow: while a sender keeps sending and
 * the receiver acknowledges as it goes, every read of the queue can be full (the window is two),
 * yet the answer comes once the envelopes queued before the request are pushed. Before, it
 * waited for a read that came back short, which the inflow never allowed.
 */
static void test_queue_sync_under_inflow(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *handles[1] = {"bob@example.org"};
    uint64_t sync, first_after = 0, last_before = 0, q;
    int answered = 0, pushed_before = 0, round;
    msv_frame *f;

    (void)state;
    test_server_init(&s, "[relay]\ndelivery_window = 2\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    for (int i = 0; i < 4; i++)
        expect_ok(test_send(&a1, handles, 1, to, 1, "before"));
    test_device_connect(&s, &b1);
    sync = queue_sync(b1.conn);
    for (round = 0; round < 30 && !answered; round++) {
        /* two more each round, while bob takes at most a window's worth */
        expect_ok(test_send(&a1, handles, 1, to, 1, "after"));
        expect_ok(test_send(&a1, handles, 1, to, 1, "after"));
        for (int k = 0; k < 2 && !answered; k++) {
            f = next_frame(&b1);
            if (f->body_case == MSV__WIRE__FRAME__BODY_DELIVER) {
                q = f->deliver->queue_id;
                if (pushed_before < 4) {
                    pushed_before++;
                    last_before = q;
                }
                test_ack(&b1, q);
            } else {
                assert_int_equal(f->request_id, sync);
                assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_OK);
                answered = 1;
            }
            msv_frame_free(f);
        }
    }
    assert_true(answered);
    assert_int_equal(pushed_before, 4); /* the four queued before it came first */
    assert_true(round <= 6);
    /* the inflow goes on after the answer, in order */
    f = next_frame(&b1);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_DELIVER);
    first_after = f->deliver->queue_id;
    msv_frame_free(f);
    assert_true(first_after > last_before);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

static void test_stale_device_list_and_limits(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2, b3;
    struct test_device *one[1] = {&b1}, *both[2] = {&b1, &b2}, *all3[3] = {&b1, &b2, &b3};
    const char *bob[1] = {"bob@example.org"};
    char *big = malloc(20001);
    msv_frame *r;
    unsigned long long enqueued;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_add_device(&s, "bob@example.org", &b1, &b2);
    enqueued = test_server_metric(&s, "envelopes_enqueued_total");

    /* one of bob's two devices: refused, and the answer lists both */
    r = test_send(&a1, bob, 1, one, 1, "only one?");
    assert_int_equal(error_code(r), MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    assert_int_equal(r->error->n_current, 1);
    assert_int_equal(r->error->current[0]->n_devices, 2);
    msv_frame_free(r);
    /* an envelope over the 16 KiB payload limit */
    assert_non_null(big);
    memset(big, 'x', 20000);
    big[20000] = '\0';
    expect_error(test_send(&a1, bob, 1, both, 2, big), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    /* an unknown handle has no devices: an envelope for bob's device does not match it */
    {
        const char *nobody[1] = {"nobody@example.org"};

        expect_error(test_send(&a1, nobody, 1, one, 1, "hi"),
                     MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    }
    assert_int_equal(test_server_metric(&s, "envelopes_enqueued_total"), enqueued);
    /* the corrected send goes through */
    expect_ok(test_send(&a1, bob, 1, both, 2, "to both"));
    assert_int_equal(test_server_metric(&s, "envelopes_enqueued_total"), enqueued + 2);
    /* the relay remembers bob's devices for checking sends; a new device changes them at once */
    test_add_device(&s, "bob@example.org", &b1, &b3);
    r = test_send(&a1, bob, 1, both, 2, "to both again");
    assert_int_equal(error_code(r), MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    assert_int_equal(r->error->current[0]->n_devices, 3);
    msv_frame_free(r);
    expect_ok(test_send(&a1, bob, 1, all3, 3, "to all three"));
    free(big);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_device_free(&b3);
    test_server_cleanup(&s);
}

/*
 * A stale answer names what changed: the lists of the handles whose devices the send did not
 * address right, not the others', and the devices it addressed that are no handle's (one
 * removed), so that the client looks up only those again.
 */
static void test_stale_answer_names_what_changed(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2, c1, c2;
    struct test_device *sent[3] = {&b1, &c1, &c2}, *now[3] = {&b1, &b2, &c1};
    const char *handles[2] = {"bob@example.org", "carol@example.org"};
    msv_frame *r;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    test_add_device(&s, "carol@example.org", &c1, &c2);
    expect_ok(test_send(&a1, handles, 2, sent, 3, "to both"));
    /* bob links a device: only bob's list comes */
    test_add_device(&s, "bob@example.org", &b1, &b2);
    r = test_send(&a1, handles, 2, sent, 3, "bob has two now");
    assert_int_equal(error_code(r), MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    assert_int_equal(r->error->n_current, 1);
    assert_memory_equal(r->error->current[0]->handle.data, "bob@example.org", 15);
    assert_int_equal(r->error->current[0]->n_devices, 2);
    assert_int_equal(r->error->n_unknown_devices, 0);
    assert_false(r->error->partial);
    msv_frame_free(r);
    /* carol removes a device: no list changed that the send missed, the removed one is named */
    expect_ok(test_remove_device(&c1, c2.device_id));
    r = test_send(&a1, handles, 2, (struct test_device *[]){&b1, &b2, &c1, &c2}, 4, "c2 gone");
    assert_int_equal(error_code(r), MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    assert_int_equal(r->error->n_current, 0);
    assert_int_equal(r->error->n_unknown_devices, 1);
    assert_int_equal(r->error->unknown_devices[0], c2.device_id);
    msv_frame_free(r);
    /* both at once: one list and the unknown device */
    r = test_send(&a1, handles, 2, (struct test_device *[]){&b1, &c1, &c2}, 3, "both wrong");
    assert_int_equal(error_code(r), MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    assert_int_equal(r->error->n_current, 1);
    assert_memory_equal(r->error->current[0]->handle.data, "bob@example.org", 15);
    assert_int_equal(r->error->n_unknown_devices, 1);
    msv_frame_free(r);
    /* a device addressed twice: its handle's list */
    r = test_send(&a1, handles, 2, (struct test_device *[]){&b1, &b2, &c1, &c1}, 4, "twice");
    assert_int_equal(error_code(r), MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    assert_int_equal(r->error->n_current, 1);
    assert_memory_equal(r->error->current[0]->handle.data, "carol@example.org", 17);
    msv_frame_free(r);
    expect_ok(test_send(&a1, handles, 2, now, 3, "right"));
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_device_free(&c1);
    test_device_free(&c2);
    test_server_cleanup(&s);
}

/* Reads c until the server closes it (frames sent before are skipped); 0 if it stays open. */
static int closed_by_server(struct msv_conn *c)
{
    msv_frame *f = NULL;
    msv_err err;

    while ((err = msv_conn_recv(c, TEST_TIMEOUT_MS, &f)) == MSV_OK)
        msv_frame_free(f);
    return err == MSV_ERR_IO;
}

static void test_device_change_notices(void **state)
{
    struct test_server s;
    struct test_device b1, b2;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;
    Msv__Wire__DeviceChange *dc;
    msv_frame *f = NULL;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "bob@example.org", &b1);
    test_add_device(&s, "bob@example.org", &b1, &b2);
    /* b1 is told, by the server, that b2 asked to join and then that it joined */
    for (int pending = 1; pending >= 0; pending--) {
        assert_int_equal(msv_conn_recv(b1.conn, TEST_TIMEOUT_MS, &f), MSV_OK);
        assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_DELIVER);
        assert_int_equal(f->deliver->sender_device, 0);
        dc = msv__wire__device_change__unpack(NULL, f->deliver->ciphertext.len,
                                              f->deliver->ciphertext.data);
        assert_non_null(dc);
        assert_true(dc->added);
        assert_int_equal(dc->pending, pending);
        assert_int_equal(dc->device->device_id, b2.device_id);
        test_ack(&b1, f->deliver->queue_id);
        msv__wire__device_change__free_unpacked(dc, NULL);
        msv_frame_free(f);
    }

    /* b1 removes b2: b2's connection ends, and b2 can no longer authenticate */
    rm.device_id = b2.device_id;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    expect_ok(test_request(b1.conn, &req));
    assert_true(closed_by_server(b2.conn)); /* after frames sent before the removal */
    msv_conn_close(b2.conn);
    b2.conn = test_connect(&s);
    assert_int_equal(
        msv_conn_auth(b2.conn, b2.handle, b2.device_id, b2.id, TEST_TIMEOUT_MS, NULL, 0),
        MSV_ERR_AUTH);
    /* removing it again, or a device of another account, is refused */
    expect_error(test_request(b1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_cleanup(&s);
}

/* A connection of d authenticated for requests alone (Auth.requests_only); its result. */
static msv_err connect_requests_only(struct test_server *s, const struct test_device *d,
                                     struct msv_conn **out)
{
    msv_err err;

    *out = test_connect(s);
    err = msv_conn_auth_as(*out, d->handle, d->device_id, d->id, 1, TEST_TIMEOUT_MS, NULL, 0);
    if (err != MSV_OK) {
        msv_conn_close(*out);
        *out = NULL;
    }
    return err;
}

/*
 * Connections for requests alone: several processes of one device use them at once without
 * taking each other's connection or the one that takes deliveries; nothing is pushed on them;
 * a device has at most max_request_connections of them; removing the device closes them too.
 */
static void test_requests_only_connections(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2, ro;
    struct test_device *to_bob[1] = {&b1}, *to_alice[1] = {&a1};
    const char *bob[1] = {"bob@example.org"}, *alice[1] = {"alice@example.org"};
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__QueueSync sync = MSV__WIRE__QUEUE_SYNC__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;
    struct msv_conn *ro1, *ro2, *ro3, *full;
    msv_frame *f = NULL;
    uint64_t q;
    int again;

    (void)state;
    test_server_init(&s, "[server]\nmax_request_connections = 2\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    assert_int_equal(connect_requests_only(&s, &a1, &ro1), MSV_OK);
    assert_int_equal(connect_requests_only(&s, &a1, &ro2), MSV_OK);
    /* a third is one too many: refused as a rate, the device not refused */
    assert_int_equal(connect_requests_only(&s, &a1, &ro3), MSV_ERR_AGAIN);
    assert_int_equal(test_server_metric(&s, "connections_requests_only"), 2);
    assert_int_equal(test_server_metric(&s, "connections_requests_only_refused_total"), 1);

    /* a newer connection that takes deliveries replaces the older one, not these */
    full = test_connect(&s);
    assert_int_equal(msv_conn_auth(full, a1.handle, a1.device_id, a1.id, TEST_TIMEOUT_MS, NULL, 0),
                     MSV_OK);
    assert_true(closed_by_server(a1.conn));
    msv_conn_close(a1.conn);
    a1.conn = full;
    ro = a1;
    ro.conn = ro1;
    expect_ok(test_send(&ro, bob, 1, to_bob, 1, "from a request connection"));
    assert_int_not_equal(
        test_expect_message(&b1, &a1, "from a request connection", TEST_TIMEOUT_MS), 0);
    /* what comes for alice goes to the connection that takes it, nothing to the others */
    expect_ok(test_send(&b1, alice, 1, to_alice, 1, "to alice"));
    q = test_expect_message(&a1, &b1, "to alice", TEST_TIMEOUT_MS);
    assert_int_not_equal(q, 0);
    test_ack(&a1, q);
    assert_int_equal(msv_conn_recv(ro1, 300, &f), MSV_ERR_AGAIN);
    assert_int_equal(msv_conn_recv(ro2, 300, &f), MSV_ERR_AGAIN);
    req.body_case = MSV__WIRE__FRAME__BODY_QUEUE_SYNC;
    req.queue_sync = &sync;
    expect_error(test_request(ro1, &req), MSV__WIRE__ERROR_CODE__ERROR_INVALID);

    /* one closed makes room for another (once the server has seen it go) */
    msv_conn_close(ro2);
    again = 0;
    while (connect_requests_only(&s, &a1, &ro2) == MSV_ERR_AGAIN && again++ < 50)
        usleep(100 * 1000);
    assert_non_null(ro2);
    msv_conn_close(ro2);

    /* a removed device's connections for requests close with the others */
    test_add_device(&s, "bob@example.org", &b1, &b2);
    while (msv_conn_recv(b1.conn, 300, &f) == MSV_OK) { /* the notices of b2's joining */
        if (f->body_case == MSV__WIRE__FRAME__BODY_DELIVER)
            test_ack(&b1, f->deliver->queue_id);
        msv_frame_free(f);
    }
    assert_int_equal(connect_requests_only(&s, &b2, &ro3), MSV_OK);
    rm.device_id = b2.device_id;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    expect_ok(test_request(b1.conn, &req));
    assert_true(closed_by_server(ro3));
    msv_conn_close(ro3);
    assert_int_equal(connect_requests_only(&s, &b2, &ro3), MSV_ERR_AUTH);
    msv_conn_close(ro1);
    /* each is counted out as it goes: none left open */
    for (again = 0; test_server_metric(&s, "connections_requests_only") != 0 && again < 50; again++)
        usleep(100 * 1000);
    assert_int_equal(test_server_metric(&s, "connections_requests_only"), 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_cleanup(&s);
}

/* A new device of an account waits for approval from one of its devices. */
static void test_device_approval(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2;
    struct msv_conn *c;
    msv_frame *r;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    memset(&b2, 0, sizeof(b2));
    snprintf(b2.handle, sizeof(b2.handle), "bob@example.org");
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &b2.id), MSV_OK);
    c = test_connect(&s);
    assert_int_equal(msv_request_add_device(c, "bob@example.org", TEST_PASSWORD, b2.id, NULL, "",
                                            TEST_TIMEOUT_MS, &b2.device_id, NULL),
                     MSV_OK);
    msv_conn_close(c);
    /* pending: it cannot authenticate, nobody can look it up or address it */
    c = test_connect(&s);
    assert_int_equal(
        msv_conn_auth(c, "bob@example.org", b2.device_id, b2.id, TEST_TIMEOUT_MS, NULL, 0),
        MSV_ERR_AUTH);
    msv_conn_close(c);
    r = lookup(a1.conn, "bob@example.org");
    assert_int_equal(r->lookup_result->results[0]->n_devices, 1);
    msv_frame_free(r);
    /* another account cannot approve it; the account's own device can, once */
    expect_error(test_approve(&a1, b2.device_id), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    expect_ok(test_approve(&b1, b2.device_id));
    expect_error(test_approve(&b1, b2.device_id), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    test_device_connect(&s, &b2);
    r = lookup(a1.conn, "bob@example.org");
    assert_int_equal(r->lookup_result->results[0]->n_devices, 2);
    msv_frame_free(r);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_cleanup(&s);
}

static void test_lookup_rate_limit(void **state)
{
    struct test_server s;
    struct test_device a1;
    msv_frame *r;

    (void)state;
    test_server_init(&s, "[directory]\nlookup_rate = 0.01\nlookup_burst = 5\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    for (int i = 0; i < 5; i++) {
        r = lookup(a1.conn, "someone@example.org");
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
        assert_int_equal(r->lookup_result->results[0]->n_devices, 0);
        msv_frame_free(r);
    }
    expect_error(lookup(a1.conn, "someone@example.org"), MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_true(test_server_metric(&s, "rate_limited_total") >= 1);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/*
 * A send answered with the current devices, or one addressing no device, tells who has devices
 * as a lookup does and draws on the same bucket, with no push token in the lists; a send that
 * addresses the right devices does not. So does an abuse report, which tells whether an account
 * has the handle: past the bucket, the same refusal whether one has it or not.
 */
static void test_probes_cost_lookups(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *one[1] = {&b1};
    const char *bob[1] = {"bob@example.org"}, *nobody[1] = {"nobody@example.org"};
    msv_frame *r;

    (void)state;
    test_server_init(&s, "[directory]\nlookup_rate = 0.01\nlookup_burst = 3\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    r = test_send(&a1, bob, 1, NULL, 0, "to none of bob's devices");
    assert_int_equal(error_code(r), MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    assert_int_equal(r->error->current[0]->n_devices, 1);
    assert_int_equal(r->error->current[0]->devices[0]->push_token.len, 0);
    msv_frame_free(r);
    expect_ok(test_send(&a1, nobody, 1, NULL, 0, "to nobody"));
    r = lookup(a1.conn, "bob@example.org");
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
    assert_int_equal(r->lookup_result->results[0]->devices[0]->push_token.len, 0);
    msv_frame_free(r);
    /* three handles looked up: the bucket is empty for sends that probe, not for one that
     * addresses bob's device */
    expect_error(test_send(&a1, nobody, 1, NULL, 0, "to nobody again"),
                 MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    expect_error(test_send(&a1, bob, 1, NULL, 0, "stale again"),
                 MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    expect_ok(test_send(&a1, bob, 1, one, 1, "to bob's device"));
    expect_error(report(a1.conn, "bob@example.org", "", ""),
                 MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    expect_error(report(a1.conn, "nobody@example.org", "", ""),
                 MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(test_server_metric(&s, "reports_total"), 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

static void test_unauthenticated_and_malformed(void **state)
{
    struct test_server s;
    struct test_device a1, b1, fake;
    struct msv_conn *c;
    msv_frame *f = NULL;
    uint8_t wrong_pin[32] = {0};
    unsigned long long rejected;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    rejected = test_server_metric(&s, "frames_rejected_total");

    /* requests before authentication are refused without effect */
    c = test_connect(&s);
    expect_error(lookup(c, "alice@example.org"), MSV__WIRE__ERROR_CODE__ERROR_UNAUTHENTICATED);
    /* a frame of an unknown protocol version: an error, then the server hangs up */
    assert_int_equal(msv_conn_send_raw(c, (const uint8_t *)"\x09\x00\x00\x02\x30\x00", 6), MSV_OK);
    assert_int_equal(msv_conn_recv(c, TEST_TIMEOUT_MS, &f), MSV_OK);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_ERROR);
    /* with a code of ErrorCode, which clients know */
    assert_int_equal(f->error->code, MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    msv_frame_free(f);
    assert_int_equal(msv_conn_recv(c, TEST_TIMEOUT_MS, &f), MSV_ERR_IO);
    msv_conn_close(c);
    /* a body that is not protobuf */
    c = test_connect(&s);
    assert_int_equal(msv_conn_send_raw(c, (const uint8_t *)"\x01\x00\x00\x03\xff\xff\xff", 7),
                     MSV_OK);
    assert_int_equal(msv_conn_recv(c, TEST_TIMEOUT_MS, &f), MSV_OK);
    msv_frame_free(f);
    assert_int_equal(msv_conn_recv(c, TEST_TIMEOUT_MS, &f), MSV_ERR_IO);
    msv_conn_close(c);
    assert_int_equal(test_server_metric(&s, "frames_rejected_total"), rejected + 2);

    /*
     * a device of another account naming alice's handle is its own account's, never alice's
     * (a device away while its handle moved to another account logs in so); a key that is not
     * the device's cannot authenticate
     */
    c = test_connect(&s);
    assert_int_equal(
        msv_conn_auth(c, "alice@example.org", b1.device_id, b1.id, TEST_TIMEOUT_MS, NULL, 0),
        MSV_OK);
    {
        msv_frame *list = NULL;
        struct msv_refusal why;

        assert_int_equal(msv_request_handle_list(c, TEST_TIMEOUT_MS, &list, &why), MSV_OK);
        assert_int_equal(list->handle_list->n_handles, 1);
        assert_memory_equal(list->handle_list->handles[0].data, "bob@example.org", 15);
        msv_frame_free(list);
    }
    msv_conn_close(c);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &fake.id), MSV_OK);
    c = test_connect(&s);
    assert_int_equal(
        msv_conn_auth(c, "alice@example.org", a1.device_id, fake.id, TEST_TIMEOUT_MS, NULL, 0),
        MSV_ERR_AUTH);
    msv_conn_close(c);
    msv_identity_free(fake.id);
    /* a client that pins another certificate does not talk to this server */
    c = NULL;
    assert_int_equal(msv_conn_open("127.0.0.1", s.port, wrong_pin, TEST_TIMEOUT_MS, &c),
                     MSV_ERR_AUTH);
    assert_null(c);

    /* frames only the server sends are refused, without effect */
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__Ok ok = MSV__WIRE__OK__INIT;

        req.body_case = MSV__WIRE__FRAME__BODY_OK;
        req.ok = &ok;
        expect_error(test_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    }
    /* and everyone else was served throughout */
    expect_served(&a1, "bob@example.org");
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

static void test_registration_errors(void **state)
{
    struct test_server s;
    struct test_device a1;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RegisterStart start = MSV__WIRE__REGISTER_START__INIT;
    Msv__Wire__AddDevice add = MSV__WIRE__ADD_DEVICE__INIT;
    Msv__Wire__RegisterFinish fin = MSV__WIRE__REGISTER_FINISH__INIT;
    struct msv_conn *c;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    c = test_connect(&s);
    req.body_case = MSV__WIRE__FRAME__BODY_REGISTER_START;
    req.register_start = &start;
    start.handle.data = (uint8_t *)"not a handle";
    start.handle.len = 12;
    expect_error(test_request(c, &req), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    start.handle.data = (uint8_t *)"alice@example.org";
    start.handle.len = 17;
    expect_error(test_request(c, &req), MSV__WIRE__ERROR_CODE__ERROR_EXISTS);
    /* a wrong code */
    start.handle.data = (uint8_t *)"carol@example.org";
    expect_ok(test_request(c, &req));
    fin.handle = start.handle;
    fin.code.data = (uint8_t *)"000000";
    fin.code.len = 6;
    fin.password.data = (uint8_t *)TEST_PASSWORD;
    fin.password.len = strlen(TEST_PASSWORD);
    {
        Msv__Wire__NewDevice nd = MSV__WIRE__NEW_DEVICE__INIT;
        size_t len;
        char code[7];

        nd.suite = MSV_SUITE_MODERN;
        nd.identity.data = (uint8_t *)msv_public_identity_bytes(msv_identity_public(a1.id), &len);
        nd.identity.len = len;
        fin.device = &nd;
        req.body_case = MSV__WIRE__FRAME__BODY_REGISTER_FINISH;
        req.register_finish = &fin;
        test_server_code(&s, "carol@example.org", code);
        if (strcmp(code, "000000") == 0)
            fin.code.data = (uint8_t *)"000001";
        expect_error(test_request(c, &req), MSV__WIRE__ERROR_CODE__ERROR_AUTH);
        /* an identity that does not parse */
        fin.code.data = (uint8_t *)code;
        nd.identity.len = len - 1;
        expect_error(test_request(c, &req), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    }
    /* a wrong password for a new device */
    add.handle.data = (uint8_t *)"alice@example.org";
    add.handle.len = 17;
    add.password.data = (uint8_t *)"wrong password";
    add.password.len = 14;
    {
        Msv__Wire__NewDevice nd = MSV__WIRE__NEW_DEVICE__INIT;
        size_t len;

        nd.suite = MSV_SUITE_MODERN;
        nd.identity.data = (uint8_t *)msv_public_identity_bytes(msv_identity_public(a1.id), &len);
        nd.identity.len = len;
        add.device = &nd;
        req.body_case = MSV__WIRE__FRAME__BODY_ADD_DEVICE;
        req.add_device = &add;
        expect_error(test_request(c, &req), MSV__WIRE__ERROR_CODE__ERROR_AUTH);
    }
    assert_int_equal(test_server_metric(&s, "devices_added_total"), 1);
    msv_conn_close(c);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

static void test_expiry_with_clock(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *bob[1] = {"bob@example.org"};
    int64_t t0 = wall_ms();

    (void)state;
    test_server_init(&s, "[relay]\nqueue_ttl_days = 1\n");
    test_server_set_clock(&s, t0);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    expect_ok(test_send(&a1, bob, 1, to, 1, "soon stale"));
    assert_int_equal(test_server_metric(&s, "queue_depth"), 1);
    /* a day and a bit later the sweep deletes it, and the device never sees it */
    test_server_set_clock(&s, t0 + 86400 * 1000 + 1000);
    for (int i = 0; i < 50 && test_server_metric(&s, "envelopes_expired_total") == 0; i++)
        usleep(100 * 1000);
    assert_int_equal(test_server_metric(&s, "envelopes_expired_total"), 1);
    assert_int_equal(test_server_metric(&s, "queue_depth"), 0);
    test_device_connect(&s, &b1);
    assert_int_equal(test_expect_message(&b1, &a1, "", QUICK_MS), 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/* An attachment past its lifetime is gone: metadata and file. */
static void test_attachment_expiry(void **state)
{
    struct test_server s;
    struct test_device a1;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobCreate create = MSV__WIRE__BLOB_CREATE__INIT;
    Msv__Wire__BlobStatus status = MSV__WIRE__BLOB_STATUS__INIT;
    char cmd[256];
    int64_t t0 = wall_ms();
    msv_frame *r;

    (void)state;
    test_server_init(&s, "[blobs]\nttl_days = 2\n");
    test_server_set_clock(&s, t0);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    create.size = 10;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CREATE;
    req.blob_create = &create;
    r = test_request(a1.conn, &req);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_CREATED);
    status.blob_id.len = 32;
    status.blob_id.data = malloc(32);
    assert_non_null(status.blob_id.data);
    memcpy(status.blob_id.data, r->blob_created->blob_id.data, 32);
    msv_frame_free(r);
    snprintf(cmd, sizeof(cmd), "test $(ls %s/data/blobs | wc -l) -eq 1", s.dir);
    assert_int_equal(system(cmd), 0);
    test_server_set_clock(&s, t0 + 3 * 86400 * 1000LL);
    for (int i = 0; i < 50 && test_server_metric(&s, "blobs_expired_total") == 0; i++)
        usleep(100 * 1000);
    assert_int_equal(test_server_metric(&s, "blobs_expired_total"), 1);
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_STATUS;
    req.blob_status = &status;
    expect_error(test_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    snprintf(cmd, sizeof(cmd), "test $(ls %s/data/blobs | wc -l) -eq 0", s.dir);
    assert_int_equal(system(cmd), 0);
    free(status.blob_id.data);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* SIGHUP applies a changed payload limit without a restart or a dropped connection. */
static void test_reload_on_sighup(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *bob[1] = {"bob@example.org"};
    char text[3000];

    (void)state;
    memset(text, 'r', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    expect_ok(test_send(&a1, bob, 1, to, 1, text));
    {
        char config[128];
        FILE *f;

        /* rewrite the file the server reads, as an operator would */
        snprintf(config, sizeof(config), "%s/missived.conf", s.dir);
        f = fopen(config, "a");
        assert_non_null(f);
        fprintf(f, "[relay]\npayload_limit = 2048\n");
        assert_int_equal(fclose(f), 0);
    }
    assert_int_equal(kill(s.pid, SIGHUP), 0);
    for (int i = 0; i < 50; i++) {
        msv_frame *r = test_send(&a1, bob, 1, to, 1, text);
        int refused = error_code(r) == MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG;

        msv_frame_free(r);
        if (refused)
            break;
        assert_true(i < 49);
        usleep(100 * 1000);
    }
    expect_ok(test_send(&a1, bob, 1, to, 1, "short is fine"));
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

static void test_restart_keeps_queue(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *bob[1] = {"bob@example.org"};
    uint64_t q1, q2;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    expect_ok(test_send(&a1, bob, 1, to, 1, "before a clean stop"));
    msv_conn_close(a1.conn);
    a1.conn = NULL;
    test_server_stop(&s);
    test_server_start(&s);
    test_device_connect(&s, &a1);
    /* an acknowledged send survives even SIGKILL straight after the acknowledgement */
    expect_ok(test_send(&a1, bob, 1, to, 1, "before a crash"));
    test_server_kill(&s);
    test_server_start(&s);
    test_device_connect(&s, &b1);
    q1 = test_expect_message(&b1, &a1, "before a clean stop", TEST_TIMEOUT_MS);
    q2 = test_expect_message(&b1, &a1, "before a crash", TEST_TIMEOUT_MS);
    assert_true(q1 != 0 && q2 > q1);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

static msv_frame *blob_request(struct msv_conn *c, Msv__Wire__Frame *req)
{
    return test_request(c, req);
}

static void test_attachments(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobCreate create = MSV__WIRE__BLOB_CREATE__INIT;
    Msv__Wire__BlobChunk chunk = MSV__WIRE__BLOB_CHUNK__INIT;
    Msv__Wire__BlobStatus status = MSV__WIRE__BLOB_STATUS__INIT;
    Msv__Wire__BlobFinish finish = MSV__WIRE__BLOB_FINISH__INIT;
    Msv__Wire__BlobGet get = MSV__WIRE__BLOB_GET__INIT;
    const size_t size = 600000;
    uint8_t *data = malloc(size), *back = malloc(size), id[32], sha[32], bad[32];
    size_t chunk_max, off = 0;
    msv_frame *r;

    (void)state;
    assert_true(data && back);
    msv_random_bytes(data, size);
    SHA256(data, size, sha);
    test_server_init(&s, "[blobs]\nmax_size = 1000000\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);

    create.size = 2000000;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CREATE;
    req.blob_create = &create;
    expect_error(blob_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    create.size = size;
    r = blob_request(a1.conn, &req);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_CREATED);
    assert_int_equal(r->blob_created->blob_id.len, 32);
    memcpy(id, r->blob_created->blob_id.data, 32);
    chunk_max = r->blob_created->chunk_max;
    msv_frame_free(r);
    assert_true(chunk_max >= 4096 && chunk_max < size);

    chunk.blob_id.data = id;
    chunk.blob_id.len = 32;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CHUNK;
    req.blob_chunk = &chunk;
    /* the first chunk, then a gap: refused, and the status says where to resume */
    chunk.offset = 0;
    chunk.data.data = data;
    chunk.data.len = chunk_max;
    r = blob_request(a1.conn, &req);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_PROGRESS);
    msv_frame_free(r);
    chunk.offset = chunk_max + 10;
    expect_error(blob_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    /* only the uploader may add to it */
    expect_error(blob_request(b1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    status.blob_id = chunk.blob_id;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_STATUS;
    req.blob_status = &status;
    r = blob_request(a1.conn, &req);
    assert_int_equal(r->blob_progress->received, chunk_max);
    off = r->blob_progress->received;
    msv_frame_free(r);
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CHUNK;
    req.blob_chunk = &chunk; /* the body is a union: set the member with its case */
    while (off < size) {
        size_t n = size - off < chunk_max ? size - off : chunk_max;

        chunk.offset = off;
        chunk.data.data = data + off;
        chunk.data.len = n;
        r = blob_request(a1.conn, &req);
        if (r->body_case == MSV__WIRE__FRAME__BODY_ERROR)
            fail_msg("chunk at %zu: %.*s", off, (int)r->error->message.len,
                     (const char *)r->error->message.data);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_PROGRESS);
        msv_frame_free(r);
        off += n;
    }
    /* it becomes readable only under its true SHA-256 */
    memcpy(bad, sha, 32);
    bad[0] ^= 1;
    finish.blob_id = chunk.blob_id;
    finish.sha256.data = bad;
    finish.sha256.len = 32;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_FINISH;
    req.blob_finish = &finish;
    expect_error(blob_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_AUTH);
    get.blob_id = chunk.blob_id;
    get.offset = 0;
    get.length = 1000;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_GET;
    req.blob_get = &get;
    expect_error(blob_request(b1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    finish.sha256.data = sha;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_FINISH;
    req.blob_finish = &finish;
    expect_ok(blob_request(a1.conn, &req));
    /* anyone holding the id (from a message) downloads it */
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_GET;
    req.blob_get = &get;
    for (off = 0; off < size;) {
        get.offset = off;
        get.length = (uint32_t)chunk_max;
        r = blob_request(b1.conn, &req);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_DATA);
        assert_int_equal(r->blob_data->size, size);
        assert_true(r->blob_data->data.len > 0);
        memcpy(back + off, r->blob_data->data.data, r->blob_data->data.len);
        off += r->blob_data->data.len;
        msv_frame_free(r);
    }
    assert_memory_equal(back, data, size);
    id[0] ^= 1;
    expect_error(blob_request(b1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    assert_int_equal(test_server_metric(&s, "blob_bytes_in_total"), size);
    free(data);
    free(back);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * A client that sends many requests (50 MiB of answers) before reading any
 * answer: every request is answered, in order. The server stops reading such
 * a client while its unsent answers are over a bound and resumes as they
 * drain; whether the bound is reached here depends on how much the loopback
 * socket buffers absorb first.
 */
static void test_pipelined_requests_are_all_answered(void **state)
{
    struct test_server s;
    struct test_device a1;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobGet get = MSV__WIRE__BLOB_GET__INIT;
    const size_t size = 256 * 1024, count = 200;
    uint8_t *data = malloc(size), id[32];
    struct msv_refusal why;

    (void)state;
    assert_non_null(data);
    msv_random_bytes(data, size);
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    assert_int_equal(msv_request_blob_upload(a1.conn, data, size, TEST_TIMEOUT_MS, NULL, id, &why),
                     MSV_OK);
    get.blob_id.data = id;
    get.blob_id.len = 32;
    get.length = (uint32_t)size;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_GET;
    req.blob_get = &get;
    for (size_t i = 0; i < count; i++) {
        req.request_id = 1000 + i;
        assert_int_equal(msv_conn_send(a1.conn, &req), MSV_OK);
    }
    for (size_t i = 0; i < count;) {
        msv_frame *f = NULL;

        assert_int_equal(msv_conn_recv(a1.conn, TEST_TIMEOUT_MS, &f), MSV_OK);
        if (f->request_id >= 1000) {
            assert_int_equal(f->request_id, 1000 + i);
            assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_BLOB_DATA);
            i++;
        }
        msv_frame_free(f);
    }
    free(data);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/*
 * Sends raw bytes on a fresh connection (authenticated as d unless NULL) and
 * expects an Error frame with code (none if 0), then the server hanging up.
 */
static void expect_hangup(struct test_server *s, struct test_device *d, const char *bytes,
                          size_t len, int code)
{
    struct msv_conn *c = test_connect(s);
    msv_frame *f = NULL;

    if (d != NULL)
        assert_int_equal(msv_conn_auth(c, d->handle, d->device_id, d->id, TEST_TIMEOUT_MS, NULL, 0),
                         MSV_OK);
    assert_int_equal(msv_conn_send_raw(c, (const uint8_t *)bytes, len), MSV_OK);
    if (code != 0) {
        assert_int_equal(msv_conn_recv(c, TEST_TIMEOUT_MS, &f), MSV_OK);
        assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_ERROR);
        assert_int_equal(f->error->code, code);
        msv_frame_free(f);
    }
    assert_int_equal(msv_conn_recv(c, TEST_TIMEOUT_MS, &f), MSV_ERR_IO);
    msv_conn_close(c);
}

/*
 * docs/bad-input.md, the server's rows: each bad input is refused with the
 * error the table gives, and changes nothing; other clients are served
 * throughout. (Rows about envelopes, keys and payloads are tested in
 * test_crypto.c and test_wire.c, and fuzzed.)
 */
static void test_bad_input_catalogue(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1;
    struct test_device *wrong[1] = {&c1}, *right[1] = {&b1};
    const char *bob[1] = {"bob@example.org"};
    unsigned long long enqueued, rejected;
    struct msv_conn *c;

    (void)state;
    test_server_init(&s, "[blobs]\nmax_size = 1000000\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    enqueued = test_server_metric(&s, "envelopes_enqueued_total");
    rejected = test_server_metric(&s, "frames_rejected_total");

    /* authenticated bad frames come from carol's device: a device's newest connection
     * replaces its older one, and alice's stays in use below */
    /* F1 a truncated frame, then the client hangs up: dropped */
    c = test_connect(&s);
    assert_int_equal(msv_conn_send_raw(c, (const uint8_t *)"\x01\x00\x00\x0a\x1a\x00", 6), MSV_OK);
    msv_conn_close(c);
    /* F2 a declared length over frame_max: TOO_BIG, hang-up (before the body is read) */
    expect_hangup(&s, NULL, "\x01\xff\xff\xff", 4, MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    /* F3 a zero length: PARSE, hang-up */
    expect_hangup(&s, NULL, "\x01\x00\x00\x00", 4, MSV__WIRE__ERROR_CODE__ERROR_PARSE);
    /* F4 a length that runs into the next frame: the merged bytes are no Frame */
    expect_hangup(&s, &c1, "\x01\x00\x00\x06\x08\x01\x01\x00\x00\x02\x08\x01", 12,
                  MSV__WIRE__ERROR_CODE__ERROR_PARSE);
    /* F5 valid protobuf, no message in it (only a request id): PARSE, hang-up */
    expect_hangup(&s, &c1, "\x01\x00\x00\x02\x08\x05", 6, MSV__WIRE__ERROR_CODE__ERROR_PARSE);
    /* F6 an unknown message type (field 99): PARSE, hang-up */
    expect_hangup(&s, &c1, "\x01\x00\x00\x03\x98\x06\x01", 7, MSV__WIRE__ERROR_CODE__ERROR_PARSE);
    assert_int_equal(test_server_metric(&s, "frames_rejected_total"), rejected + 5);

    /* R1 a handle that is not UTF-8: INVALID, the connection stays */
    expect_error(lookup(a1.conn, "\xff\xfe@example.org"), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    /* R2 an envelope for a device the named handle does not have: STALE, nothing queued */
    expect_error(test_send(&a1, bob, 1, wrong, 1, "misaddressed"),
                 MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES);
    /* R3 a message id that is not 16 bytes: INVALID */
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__SendRequest q = MSV__WIRE__SEND_REQUEST__INIT;
        Msv__Wire__Envelope e = MSV__WIRE__ENVELOPE__INIT, *ep = &e;
        ProtobufCBinaryData h = {strlen(bob[0]), (uint8_t *)bob[0]};

        e.recipient_device = b1.device_id;
        e.suite = MSV_SUITE_MODERN;
        e.ciphertext = (ProtobufCBinaryData){5, (uint8_t *)"bytes"};
        q.message_id = (ProtobufCBinaryData){5, (uint8_t *)"short"};
        q.n_recipient_handles = 1;
        q.recipient_handles = &h;
        q.n_envelopes = 1;
        q.envelopes = &ep;
        req.body_case = MSV__WIRE__FRAME__BODY_SEND;
        req.send = &q;
        expect_error(test_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    }
    /* R4 more acknowledgements than one frame may carry: TOO_BIG */
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__Ack ack = MSV__WIRE__ACK__INIT;
        uint64_t *ids = calloc(5000, sizeof(*ids));

        assert_non_null(ids);
        ack.n_queue_ids = 5000;
        ack.queue_ids = ids;
        req.body_case = MSV__WIRE__FRAME__BODY_ACK;
        req.ack = &ack;
        expect_error(test_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
        free(ids);
    }
    /* R5 an attachment over the server's limit: TOO_BIG, nothing created */
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__BlobCreate bc = MSV__WIRE__BLOB_CREATE__INIT;

        bc.size = 1000001;
        req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CREATE;
        req.blob_create = &bc;
        expect_error(test_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    }
    /* R6 removing another account's device: NOT_FOUND, the device stays */
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;

        rm.device_id = b1.device_id;
        req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
        req.remove_device = &rm;
        expect_error(test_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    }
    /* R7 a signature that is not the device's: AUTH, hang-up */
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__Hello hello = MSV__WIRE__HELLO__INIT;
        Msv__Wire__Auth auth = MSV__WIRE__AUTH__INIT;
        uint8_t sig[64];
        msv_frame *f;

        c = test_connect(&s);
        hello.protocol_version = 1;
        req.body_case = MSV__WIRE__FRAME__BODY_HELLO;
        req.hello = &hello;
        f = test_request(c, &req);
        assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_CHALLENGE);
        msv_frame_free(f);
        msv_random_bytes(sig, sizeof(sig));
        auth.handle = (ProtobufCBinaryData){strlen(a1.handle), (uint8_t *)a1.handle};
        auth.device_id = a1.device_id;
        auth.signature = (ProtobufCBinaryData){sizeof(sig), sig};
        req.body_case = MSV__WIRE__FRAME__BODY_AUTH;
        req.auth = &auth;
        expect_error(test_request(c, &req), MSV__WIRE__ERROR_CODE__ERROR_AUTH);
        assert_int_equal(msv_conn_recv(c, TEST_TIMEOUT_MS, &f), MSV_ERR_IO);
        msv_conn_close(c);
    }

    /* nothing was queued by any of it, and everyone is still served */
    assert_int_equal(test_server_metric(&s, "envelopes_enqueued_total"), enqueued);
    expect_ok(test_send(&a1, bob, 1, right, 1, "still here"));
    assert_true(test_expect_message(&b1, &a1, "still here", TEST_TIMEOUT_MS) != 0);
    expect_served(&a1, "bob@example.org");
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

/*
 * A connection flood from one address: past max_connections_per_address new
 * connections are closed at once, while the connections already open (other
 * clients' included) are served; a closed one makes room again.
 */
static void test_connection_flood(void **state)
{
    struct test_server s;
    struct test_device a1;
    struct msv_conn *extra[8] = {NULL};
    size_t opened = 0;
    uint8_t pin[32];

    (void)state;
    test_server_init(&s, "[server]\nmax_connections_per_address = 4\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1); /* one connection */
    memcpy(pin, s.fingerprint, 32);
    for (size_t i = 0; i < 8; i++) {
        if (msv_conn_open("127.0.0.1", s.port, pin, 2000, &extra[opened]) == MSV_OK)
            opened++;
    }
    assert_int_equal(opened, 3);
    assert_true(test_server_metric(&s, "connections_refused_total") >= 5);
    /* alice is served throughout */
    expect_served(&a1, "alice@example.org");
    /* one goes away: there is room for one more */
    msv_conn_close(extra[--opened]);
    for (int i = 0; i < 50 && test_server_metric(&s, "connections_open") > 3; i++)
        usleep(20 * 1000);
    assert_int_equal(msv_conn_open("127.0.0.1", s.port, pin, 2000, &extra[opened]), MSV_OK);
    opened++;
    while (opened > 0)
        msv_conn_close(extra[--opened]);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/*
 * Slowloris: a connection that keeps sending a byte now and then but never
 * authenticates is closed once 15 seconds have passed since it opened.
 */
static void test_slow_authentication(void **state)
{
    struct test_server s;
    struct test_device a1;
    struct msv_conn *slow;
    msv_frame *f = NULL;
    int64_t t0 = wall_ms();

    (void)state;
    test_server_init(&s, NULL);
    test_server_set_clock(&s, t0);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    slow = test_connect(&s);
    /* the first bytes of a frame, in time: the connection waits for the rest */
    assert_int_equal(msv_conn_send_raw(slow, (const uint8_t *)"\x01", 1), MSV_OK);
    assert_int_equal(msv_conn_recv(slow, 300, &f), MSV_ERR_AGAIN);
    /* sixteen seconds later, one more byte: too late */
    test_server_set_clock(&s, t0 + 16 * 1000);
    assert_int_equal(msv_conn_send_raw(slow, (const uint8_t *)"\x00", 1), MSV_OK);
    assert_int_equal(msv_conn_recv(slow, TEST_TIMEOUT_MS, &f), MSV_ERR_IO);
    msv_conn_close(slow);
    /* an authenticated device is not bound by it */
    expect_served(&a1, "alice@example.org");
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* A plain TCP connection to the server's TLS port (no handshake). */
static int raw_connect_port(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static int raw_connect(struct test_server *s)
{
    return raw_connect_port(s->port);
}

/* 1 if the server has closed fd (end of stream or reset), 0 if it is open after wait_ms. */
static int raw_is_closed(int fd, int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b[256];

    while (poll(&p, 1, wait_ms) == 1) {
        ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);

        if (n <= 0)
            return 1;
    }
    return 0;
}

/*
 * Slowloris in the TLS handshake: a ClientHello trickled a byte at a time
 * never reaches the frame reader, and each byte would restart the read
 * timeout. The connection is closed auth_timeout_s after it was accepted.
 */
static void test_tls_handshake_deadline(void **state)
{
    static const uint8_t hello_start[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc,
                                          0x03, 0x03, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
                                          0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
    struct test_server s;
    struct test_device a1;
    int64_t t0;
    int fd, closed = 0;

    (void)state;
    test_server_init(&s, "[server]\nauth_timeout_s = 2\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    fd = raw_connect(&s);
    t0 = wall_ms();
    /* one byte every 200 ms: well inside any idle timeout, never a whole ClientHello */
    for (size_t i = 0; i < sizeof(hello_start) && !closed; i++) {
        if (send(fd, &hello_start[i], 1, MSG_NOSIGNAL) != 1)
            closed = 1;
        else
            closed = raw_is_closed(fd, 200);
    }
    if (!closed)
        closed = raw_is_closed(fd, 0);
    assert_true(closed);
    /* closed at the deadline, not at some later timeout */
    assert_true(wall_ms() - t0 < 4000);
    close(fd);
    assert_true(test_server_metric(&s, "auth_timeouts_total") >= 1);
    /* an authenticated device is not bound by it */
    sleep(3);
    expect_served(&a1, "alice@example.org");
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* Clock ticks of CPU time the process has used (user and system). */
static unsigned long long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long user = 0, sys = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may hold spaces */
    assert_non_null(p);
    /* after ") ": state, then fields 4..13, then utime (14) and stime (15) */
    assert_int_equal(
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &user, &sys), 2);
    return user + sys;
}

static unsigned open_files(pid_t pid)
{
    char path[64];
    unsigned n = 0;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    assert_non_null(d);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 2; /* . and .. */
}

/* Sets one of missived's soft resource limits (RLIM_INFINITY lifts it). */
static void set_soft_limit(struct test_server *s, __rlimit_resource_t resource, rlim_t value)
{
    struct rlimit now, want;

    assert_int_equal(prlimit(s->pid, resource, NULL, &now), 0);
    want.rlim_cur = value;
    want.rlim_max = now.rlim_max;
    assert_int_equal(prlimit(s->pid, resource, &want, NULL), 0);
}

/*
 * Out of descriptors: accept() fails with EMFILE while connections wait in
 * the backlog. The server rests instead of retrying at once (no spinning, a
 * log line per interval, counted), and serves again when descriptors return.
 */
/*
 * Connections to port arrive while missived has one descriptor left: it must
 * neither spin nor fill its log, and accept again once descriptors return.
 */
static void expect_accept_paused(struct test_server *s, uint16_t port)
{
    rlim_t saved;
    struct rlimit now;
    int fds[8];
    unsigned long long t0, used;
    off_t log0, grown;
    struct stat st;

    assert_int_equal(prlimit(s->pid, RLIMIT_NOFILE, NULL, &now), 0);
    saved = now.rlim_cur;
    set_soft_limit(s, RLIMIT_NOFILE, open_files(s->pid) + 1);
    for (size_t i = 0; i < 8; i++)
        fds[i] = raw_connect_port(port); /* the kernel completes them; missived has room for one */
    usleep(300 * 1000);
    assert_int_equal(stat(s->log, &st), 0);
    log0 = st.st_size;
    t0 = cpu_ticks(s->pid);
    sleep(2);
    used = cpu_ticks(s->pid) - t0;
    assert_int_equal(stat(s->log, &st), 0);
    grown = st.st_size - log0;
    /* retrying accept() at once would take a core and write a line each time */
    if (used * 100 > 2ull * (unsigned long long)sysconf(_SC_CLK_TCK) * 25)
        fail_msg("missived used %llu ticks of CPU in 2 s while out of descriptors", used);
    assert_true(grown < 2048);
    /* descriptors come back: the waiting connections and new ones are served */
    set_soft_limit(s, RLIMIT_NOFILE, saved);
    for (size_t i = 0; i < 8; i++)
        close(fds[i]);
    assert_true(test_server_metric(s, "accept_paused_total") >= 1);
}

static void test_accept_out_of_descriptors(void **state)
{
    struct test_server s;
    struct test_device a1, b1;

    (void)state;
    test_server_init(&s, "[server]\naccept_pause_ms = 100\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    expect_accept_paused(&s, s.port);
    test_register(&s, "bob@example.org", &b1);
    expect_served(&b1, "alice@example.org");
    test_device_free(&b1);
    expect_served(&a1, "alice@example.org");
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* The same on the /health and /metrics port, whose listener evhttp owns. */
static void test_http_accept_out_of_descriptors(void **state)
{
    struct test_server s;
    struct test_device a1;
    char body[4096];

    (void)state;
    test_server_init(&s, "[server]\naccept_pause_ms = 100\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    expect_accept_paused(&s, s.http_port);
    assert_int_equal(test_server_http(&s, "/health", body, sizeof(body)), 200);
    expect_served(&a1, "alice@example.org");
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* Sets missived's limit on the size of the files it writes (soft limit; RLIM_INFINITY lifts it). */
static void limit_file_size(struct test_server *s, rlim_t bytes)
{
    set_soft_limit(s, RLIMIT_FSIZE, bytes);
}

static off_t file_size(const char *dir, const char *name)
{
    char path[256];
    struct stat st;

    snprintf(path, sizeof(path), "%s/data/%s", dir, name);
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* ---- key transparency ------------------------------------------------------------------ */

static void read_log_key(struct test_server *s, uint8_t key[MSV_KT_KEY_LEN])
{
    char path[128], hex[80];
    size_t n = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/data/log.pub", s->dir);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%79s", hex), 1);
    fclose(f);
    assert_int_equal(msv_hex_decode(hex, key, MSV_KT_KEY_LEN, &n), MSV_OK);
}

static void head_of(const Msv__Wire__TreeHead *w, struct msv_kt_head *h)
{
    assert_non_null(w);
    assert_int_equal(w->root.len, MSV_KT_HASH_LEN);
    assert_int_equal(w->signature.len, MSV_KT_SIG_LEN);
    h->size = w->size;
    h->time_ms = (int64_t)w->time_ms;
    memcpy(h->root, w->root.data, MSV_KT_HASH_LEN);
    memcpy(h->signature, w->signature.data, MSV_KT_SIG_LEN);
}

/*
 * The proof holds: the leaf is in the tree of head, and lists exactly hd's devices (a version-4
 * leaf: the data beside it, which it opens to under vrf_key).
 */
static void expect_proven(const Msv__Wire__HandleDevices *hd, const struct msv_kt_head *head,
                          const ProtobufCBinaryData *vrf_key)
{
    static uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    static struct msv_kt_entry e;
    struct msv_kt_v4_leaf v4;
    const Msv__Wire__LogProof *p = hd->proof;
    uint8_t h[MSV_KT_HASH_LEN];

    assert_non_null(p);
    assert_true(p->n_path <= MSV_KT_PROOF_MAX);
    for (size_t i = 0; i < p->n_path; i++) {
        assert_int_equal(p->path[i].len, MSV_KT_HASH_LEN);
        memcpy(path[i], p->path[i].data, MSV_KT_HASH_LEN);
    }
    msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
    assert_int_equal(
        msv_merkle_verify_inclusion(h, p->index, head->size, path, p->n_path, head->root), MSV_OK);
    if (msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &v4) == MSV_OK) {
        assert_int_equal(vrf_key->len, MSV_VRF_PUBLIC_KEY_LEN);
        assert_int_equal(msv_kt_v4_open(vrf_key->data, p->leaf.data, p->leaf.len, p->data.data,
                                        p->data.len, p->version, p->opening.data, p->vrf_proof.data,
                                        &e),
                         MSV_OK);
    } else {
        assert_int_equal(msv_kt_leaf_parse(p->leaf.data, p->leaf.len, &e), MSV_OK);
    }
    assert_int_equal(strlen(e.handle), hd->handle.len);
    assert_memory_equal(e.handle, hd->handle.data, hd->handle.len);
    assert_int_equal(e.n_devices, hd->n_devices);
    for (size_t i = 0; i < e.n_devices; i++) {
        assert_int_equal(e.devices[i].device_id, hd->devices[i]->device_id);
        assert_int_equal(e.devices[i].suite, hd->devices[i]->suite);
        assert_int_equal(e.devices[i].identity_len, hd->devices[i]->identity.len);
        assert_memory_equal(e.devices[i].identity, hd->devices[i]->identity.data,
                            e.devices[i].identity_len);
    }
}

static void expect_consistent(const Msv__Wire__LookupResponse *r, const struct msv_kt_head *old,
                              const struct msv_kt_head *head)
{
    static uint8_t proof[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];

    assert_true(r->n_consistency <= MSV_KT_PROOF_MAX);
    for (size_t i = 0; i < r->n_consistency; i++)
        memcpy(proof[i], r->consistency[i].data, MSV_KT_HASH_LEN);
    assert_int_equal(msv_merkle_verify_consistency(old->size, head->size, old->root, head->root,
                                                   proof, r->n_consistency),
                     MSV_OK);
}

/*
 * Lookups come from the transparency log: a signed head, the handle's newest
 * leaf with its inclusion proof, the consistency proof from the head the
 * client knew; device changes grow the log; the log can be read without an
 * account, every leaf with its proof; the log and its key survive a restart.
 */
static void test_transparency(void **state)
{
    struct test_server s;
    struct test_device a1, b1, b2;
    struct msv_kt_head h1, h2, h3;
    uint8_t key[MSV_KT_KEY_LEN];
    msv_frame *r;
    struct msv_conn *anon;

    (void)state;
    /* the log's entry 0 is its cut-over to version-4 leaves (the default) */
    test_server_init(&s, NULL);
    test_server_start(&s);
    read_log_key(&s, key);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    r = lookup_from(a1.conn, "bob@example.org", 0);
    assert_non_null(r->lookup_result->log_key.data);
    assert_memory_equal(r->lookup_result->log_key.data, key, MSV_KT_KEY_LEN);
    head_of(r->lookup_result->head, &h1);
    assert_int_equal(msv_kt_head_verify(&h1, key), MSV_OK);
    assert_int_equal(h1.size, 3);
    expect_proven(r->lookup_result->results[0], &h1, &r->lookup_result->vrf_key);
    assert_int_equal(r->lookup_result->results[0]->proof->index, 2);
    msv_frame_free(r);
    /* a minute later the same log gets a new head: same size and root, a fresh signed time */
    test_server_set_clock(&s, h1.time_ms + 61000);
    r = lookup_from(a1.conn, "bob@example.org", h1.size);
    head_of(r->lookup_result->head, &h3);
    assert_int_equal(msv_kt_head_verify(&h3, key), MSV_OK);
    assert_int_equal(h3.size, h1.size);
    assert_memory_equal(h3.root, h1.root, MSV_KT_HASH_LEN);
    assert_int_equal(h3.time_ms, h1.time_ms + 61000);
    expect_consistent(r->lookup_result, &h1, &h3);
    msv_frame_free(r);
    /* a handle never registered: no devices, nothing to prove */
    r = lookup_from(a1.conn, "nobody@example.org", 0);
    assert_int_equal(r->lookup_result->results[0]->n_devices, 0);
    assert_null(r->lookup_result->results[0]->proof);
    msv_frame_free(r);
    /* bob adds a device (pending, then approved): one leaf, at approval */
    test_add_device(&s, "bob@example.org", &b1, &b2);
    r = lookup_from(a1.conn, "bob@example.org", h1.size);
    head_of(r->lookup_result->head, &h2);
    assert_int_equal(msv_kt_head_verify(&h2, key), MSV_OK);
    assert_int_equal(h2.size, 4);
    assert_int_equal(r->lookup_result->results[0]->n_devices, 2);
    expect_proven(r->lookup_result->results[0], &h2, &r->lookup_result->vrf_key);
    expect_consistent(r->lookup_result, &h1, &h2);
    msv_frame_free(r);
    /* the log read without an account: every leaf proven against the head */
    anon = test_connect(&s);
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__LogRead q = MSV__WIRE__LOG_READ__INIT;

        q.start = 0;
        q.count = 1000;
        q.known_size = h1.size;
        req.body_case = MSV__WIRE__FRAME__BODY_LOG_READ;
        req.log_read = &q;
        r = test_request(anon, &req);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOG_ENTRIES);
        head_of(r->log_entries->head, &h3);
        assert_int_equal(h3.size, h2.size);
        assert_memory_equal(h3.root, h2.root, MSV_KT_HASH_LEN);
        assert_int_equal(r->log_entries->n_entries, 4);
        for (size_t i = 0; i < 4; i++) {
            static uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
            const Msv__Wire__LogProof *p = r->log_entries->entries[i];
            struct msv_kt_v4_leaf v4;
            uint8_t h[MSV_KT_HASH_LEN];

            assert_int_equal(p->index, i);
            for (size_t k = 0; k < p->n_path; k++)
                memcpy(path[k], p->path[k].data, MSV_KT_HASH_LEN);
            /* the cut-over, then version-4 leaves: they name no one, so are given whole */
            if (i == 0)
                assert_int_equal(msv_kt_cutover_leaf_parse(p->leaf.data, p->leaf.len), MSV_OK);
            else
                assert_int_equal(msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &v4), MSV_OK);
            assert_int_equal(p->leaf_hash.len, 0);
            msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
            assert_int_equal(msv_merkle_verify_inclusion(h, i, h3.size, path, p->n_path, h3.root),
                             MSV_OK);
        }
        msv_frame_free(r);
        q.start = 4; /* past the end: nothing, but the head */
        r = test_request(anon, &req);
        assert_int_equal(r->log_entries->n_entries, 0);
        msv_frame_free(r);
    }
    msv_conn_close(anon);
    /* a restart keeps the log and its key: the same head, proven consistent later */
    test_server_stop(&s);
    test_server_start(&s);
    read_log_key(&s, key);
    assert_int_equal(msv_kt_head_verify(&h2, key), MSV_OK);
    test_device_connect(&s, &a1);
    r = lookup_from(a1.conn, "bob@example.org", h1.size);
    head_of(r->lookup_result->head, &h3);
    assert_int_equal(h3.size, h2.size);
    assert_memory_equal(h3.root, h2.root, MSV_KT_HASH_LEN);
    expect_consistent(r->lookup_result, &h1, &h3);
    msv_frame_free(r);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_cleanup(&s);
}

/* A storage fault missived meets while alice sends to an offline bob. */
struct storage_fault {
    void (*start)(struct test_server *s, void *ctx);
    void (*end)(struct test_server *s, void *ctx);
    void *ctx;
};

/*
 * alice sends to bob (offline) until a send is refused while the fault
 * lasts: the refusal is ERROR_IO and says the message was not accepted.
 * Once the fault ends the server goes on without a restart, and bob gets
 * everything acknowledged before, in order, and not the refused message.
 */
static void expect_storage_fault_handled(const struct storage_fault *fault)
{
    struct test_server s;
    struct test_device a1, b1;
    struct test_device *to[1] = {&b1};
    const char *bob[1] = {"bob@example.org"};
    char text[8200], accepted[64][16], health[1024];
    size_t n_accepted = 0;
    int refused = 0;

    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    msv_conn_close(b1.conn); /* offline: everything waits in the queue */
    b1.conn = NULL;
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    memcpy(text, "m00", 3);
    expect_ok(test_send(&a1, bob, 1, to, 1, text));
    snprintf(accepted[n_accepted++], sizeof(accepted[0]), "m00");
    fault->start(&s, fault->ctx);
    for (int i = 1; i < 64 && !refused; i++) {
        msv_frame *r;

        snprintf(accepted[n_accepted], sizeof(accepted[0]), "m%02d", i);
        memcpy(text, accepted[n_accepted], 3);
        r = test_send(&a1, bob, 1, to, 1, text);
        if (r->body_case == MSV__WIRE__FRAME__BODY_OK) {
            n_accepted++;
        } else {
            assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_ERROR);
            assert_int_equal(r->error->code, MSV__WIRE__ERROR_CODE__ERROR_IO);
            assert_non_null(strstr((const char *)r->error->message.data, "not accepted"));
            refused = 1;
        }
        msv_frame_free(r);
    }
    assert_true(refused);
    assert_true(test_server_metric(&s, "commit_failures_total") >= 1);
    /* reads still work, but a server that cannot commit is not healthy */
    assert_int_equal(test_server_http(&s, "/health", health, sizeof(health)), 503);
    assert_non_null(strstr(health, "\"commits\":\"failing\""));
    fault->end(&s, fault->ctx);
    memcpy(text, "end", 3);
    expect_ok(test_send(&a1, bob, 1, to, 1, text));
    assert_int_equal(test_server_http(&s, "/health", health, sizeof(health)), 200);
    /* everything acknowledged arrives, in order, and the refused message does not */
    test_device_connect(&s, &b1);
    for (size_t i = 0; i < n_accepted; i++) {
        uint64_t q;

        memcpy(text, accepted[i], 3);
        q = test_expect_message(&b1, &a1, text, TEST_TIMEOUT_MS);
        assert_true(q != 0);
        test_ack(&b1, q);
    }
    memcpy(text, "end", 3);
    assert_true(test_expect_message(&b1, &a1, text, TEST_TIMEOUT_MS) != 0);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

static void disk_fills(struct test_server *s, void *ctx)
{
    off_t room = file_size(s->dir, "missive.db-wal");

    (void)ctx;
    if (file_size(s->dir, "missive.db") > room)
        room = file_size(s->dir, "missive.db");
    limit_file_size(s, (rlim_t)room + 64 * 1024);
}

static void disk_has_room(struct test_server *s, void *ctx)
{
    (void)ctx;
    limit_file_size(s, RLIM_INFINITY);
}

/* The disk fills up (a file-size limit on missived stands in for it). */
static void test_disk_full(void **state)
{
    const struct storage_fault fault = {disk_fills, disk_has_room, NULL};

    (void)state;
    expect_storage_fault_handled(&fault);
}

/* tests/faulty_io.c in missived: writes and syncs of its database fail with EIO while *ctx exists.
 */
static void disk_fails(struct test_server *s, void *ctx)
{
    FILE *f;

    (void)s;
    f = fopen(ctx, "w");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
}

static void disk_recovers(struct test_server *s, void *ctx)
{
    (void)s;
    assert_int_equal(unlink(ctx), 0);
}

/*
 * missived started on a full disk (tests/faulty_io.c: writes fail with
 * ENOSPC, statvfs reports no room) does not start, and says why.
 */
static void test_start_on_full_disk(void **state)
{
    struct test_server s;
    char config[160], trigger[160], cmd[1024], out[4096];
    FILE *f;
    size_t n;
    int status;

    (void)state;
    test_server_init(&s, NULL);
    snprintf(config, sizeof(config), "%s/full.conf", s.dir);
    snprintf(trigger, sizeof(trigger), "%s/full", s.dir);
    f = fopen(config, "w");
    assert_non_null(f);
    fprintf(f, "[server]\nlisten_port = 0\ndata_dir = %s/data\n[http]\nlisten_port = 0\n", s.dir);
    assert_int_equal(fclose(f), 0);
    f = fopen(trigger, "w");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
    snprintf(cmd, sizeof(cmd),
             "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0 LD_PRELOAD='%s' "
             "MSV_FAULTY_IO_MATCH='%s/data' MSV_FAULTY_IO_TRIGGER='%s' "
             "MSV_FAULTY_IO_FULL=1 timeout 20 '%s' --config '%s' > '%s/full.out' 2>&1",
             MSV_FAULTY_IO, s.dir, trigger, MSV_MISSIVED, config, s.dir);
    status = system(cmd);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    snprintf(cmd, sizeof(cmd), "%s/full.out", s.dir);
    f = fopen(cmd, "r");
    assert_non_null(f);
    n = fread(out, 1, sizeof(out) - 1, f);
    fclose(f);
    out[n] = '\0';
    if (strstr(out, "the disk is full") == NULL)
        fail_msg("missived on a full disk said: %s", out);
    test_server_cleanup(&s);
}

/*
 * The disk fails (tests/faulty_io.c preloaded into missived): writes and
 * syncs of the database and its journal fail with EIO for a while.
 */
static void test_io_errors(void **state)
{
    const char *asan = getenv("ASAN_OPTIONS"), *was = getenv("LD_PRELOAD");
    char trigger[64], options[1024], preload[1024];
    const struct storage_fault fault = {disk_fails, disk_recovers, trigger};

    (void)state;
    /* what the test run preloads (scripts/test.sh: eatmydata), put back afterwards */
    snprintf(preload, sizeof(preload), "%s", was != NULL ? was : "");
    snprintf(trigger, sizeof(trigger), "/tmp/msv-faulty-io-%ld", (long)getpid());
    /* the shim comes before the sanitizer runtime in sanitizer builds; that is fine here */
    snprintf(options, sizeof(options), "%s%sverify_asan_link_order=0", asan ? asan : "",
             asan ? ":" : "");
    assert_int_equal(setenv("ASAN_OPTIONS", options, 1), 0);
    assert_int_equal(setenv("LD_PRELOAD", MSV_FAULTY_IO, 1), 0);
    assert_int_equal(setenv("MSV_FAULTY_IO_MATCH", "/missive.db", 1), 0);
    assert_int_equal(setenv("MSV_FAULTY_IO_TRIGGER", trigger, 1), 0);
    expect_storage_fault_handled(&fault);
    if (was != NULL)
        setenv("LD_PRELOAD", preload, 1);
    else
        unsetenv("LD_PRELOAD");
    unsetenv("MSV_FAULTY_IO_TRIGGER");
    if (asan != NULL)
        setenv("ASAN_OPTIONS", asan, 1);
    else
        unsetenv("ASAN_OPTIONS");
}

/* Publishes a signed prekey (id 1) and n one-time prekeys (ids 2..) for d; returns the answer. */
static msv_err upload_prekeys(struct test_device *d, const struct msv_identity *signer, size_t n,
                              uint32_t *left, int *has_signed, struct msv_refusal *why)
{
    struct msv_prekey keys[8];
    struct msv_prekey_counts held = {0};
    uint8_t sig[64];
    msv_err err;

    assert_true(n < 8);
    for (size_t i = 0; i <= n; i++)
        assert_int_equal(msv_prekey_generate(signer, (uint32_t)i + 1, &keys[i], i ? NULL : sig),
                         MSV_OK);
    err = msv_request_prekey_upload(
        d->conn,
        &(struct msv_prekey_set){
            .signed_key = &keys[0], .signed_sig = sig, .one_time = keys + 1, .n_one_time = n},
        TEST_TIMEOUT_MS, &held, why);
    *left = held.one_time_left;
    *has_signed = held.has_signed;
    return err;
}

/*
 * Uploads that carry keys (each one's signatures checked, its rows written) are bounded per
 * device: past 100 in a row, ERROR_RATE_LIMITED and nothing changed; one that only asks what
 * the server holds is answered all the same.
 */
static void test_prekey_uploads_bounded(void **state)
{
    struct test_server s;
    struct test_device b1;
    struct msv_refusal why = {0};
    struct msv_prekey_counts held = {0};
    uint32_t left = 0;
    int has_signed = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "bob@example.org", &b1);
    for (int i = 0; i < 100; i++)
        assert_int_equal(upload_prekeys(&b1, b1.id, 0, &left, &has_signed, &why), MSV_OK);
    /* refused within a few more (the bucket gains one every 10 s: a slow machine's first 100
     * may have taken some of that) */
    for (int i = 0; upload_prekeys(&b1, b1.id, 0, &left, &has_signed, &why) == MSV_OK; i++)
        assert_true(i < 10);
    assert_int_equal(why.code, MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(msv_request_prekey_upload(b1.conn, &(struct msv_prekey_set){0},
                                               TEST_TIMEOUT_MS, &held, &why),
                     MSV_OK);
    assert_true(held.has_signed);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * Prekeys are published signed and handed out once; a sealed send on a
 * connection that never authenticated reaches the recipient with the token
 * its devices registered, and the relay keeps and delivers it without any
 * sender; a wrong token, an unknown handle and a plain envelope are refused.
 */
static void test_prekeys_and_sealed_sender(void **state)
{
    struct test_server s;
    struct test_device a1, b1;
    struct msv_refusal why = {0};
    const char *bob = "bob@example.org", *nobody = "nobody@example.org";
    uint8_t token[16], wrong[16], id[16], *env = NULL, *inner_buf = NULL, *pt = NULL;
    size_t env_len = 0, inner_len = 0, pt_len = 0;
    struct msv_conn *anon;
    struct test_queued *rows = NULL;
    char handle[256];
    uint64_t sender_device = 0, q;
    uint32_t left = 0;
    int has_signed = 0;
    msv_frame *r = NULL, *f = NULL;

    (void)state;
    test_server_init(&s, "[directory]\nprekey_claim_interval_s = 0\n"); /* claims below repeat */
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, bob, &b1);

    /* a signed prekey signed by another key is refused and nothing is kept */
    assert_int_equal(upload_prekeys(&b1, a1.id, 3, &left, &has_signed, &why), MSV_ERR_AUTH);
    assert_int_equal(
        msv_request_prekey_claim(a1.conn, &b1.device_id, 1, 0, TEST_TIMEOUT_MS, &r, &why), MSV_OK);
    assert_int_equal(r->prekey_bundles->n_bundles, 0);
    msv_frame_free(r);
    assert_int_equal(upload_prekeys(&b1, b1.id, 2, &left, &has_signed, &why), MSV_OK);
    assert_int_equal(left, 2);
    assert_true(has_signed);
    /* each one-time prekey goes once; then the signed prekey alone */
    for (uint32_t want = 2; want <= 4; want++) {
        const Msv__Wire__PrekeyBundle *b;

        assert_int_equal(
            msv_request_prekey_claim(a1.conn, &b1.device_id, 1, 0, TEST_TIMEOUT_MS, &r, &why),
            MSV_OK);
        assert_int_equal(r->prekey_bundles->n_bundles, 1);
        b = r->prekey_bundles->bundles[0];
        assert_int_equal(b->device_id, b1.device_id);
        assert_int_equal(b->signed_->id, 1);
        assert_int_equal(msv_signed_prekey_verify(msv_identity_public(b1.id), 1,
                                                  b->signed_->key.data, b->signed_->signature.data),
                         MSV_OK);
        if (want < 4)
            assert_int_equal(b->one_time->id, want);
        else
            assert_null(b->one_time);
        msv_frame_free(r);
    }

    /* bob's token; a sealed send must name one handle and carry 16 bytes of token */
    msv_random_bytes(token, sizeof(token));
    memcpy(wrong, token, sizeof(wrong));
    wrong[0] ^= 1;
    assert_int_equal(msv_request_set_delivery_token(b1.conn, token, TEST_TIMEOUT_MS, &why), MSV_OK);
    msv_conn_close(b1.conn); /* bob offline: the envelope is queued */
    b1.conn = NULL;
    assert_int_equal(msv_seal(a1.id, msv_identity_public(b1.id), (const uint8_t *)"psst", 4,
                              &inner_buf, &inner_len),
                     MSV_OK);
    assert_int_equal(msv_sealed_wrap(a1.id, msv_identity_public(b1.id), a1.handle, a1.device_id,
                                     inner_buf, inner_len, &env, &env_len),
                     MSV_OK);
    free(inner_buf);
    inner_buf = NULL;
    anon = test_connect(&s);
    msv_random_bytes(id, sizeof(id));
    {
        struct msv_outgoing sealed = {b1.device_id, MSV_ENVELOPE_SEALED, env, env_len};
        struct msv_outgoing plain = {b1.device_id, MSV_SUITE_MODERN, env, env_len};

        assert_int_equal(
            msv_request_send(anon, id, &bob, 1, &sealed, 1, wrong, TEST_TIMEOUT_MS, NULL, &why),
            MSV_ERR_AUTH);
        assert_string_equal(why.message, "the delivery token is not valid");
        /* an unknown handle gets the same answer: tokens do not probe for accounts */
        assert_int_equal(
            msv_request_send(anon, id, &nobody, 1, &sealed, 1, token, TEST_TIMEOUT_MS, NULL, &why),
            MSV_ERR_AUTH);
        assert_string_equal(why.message, "the delivery token is not valid");
        assert_int_equal(
            msv_request_send(anon, id, &bob, 1, &sealed, 1, NULL, TEST_TIMEOUT_MS, NULL, &why),
            MSV_ERR_AUTH);
        assert_int_equal(test_server_metric(&s, "queue_depth"), 0);
        /* an envelope that is not marked sealed would not hide anything */
        assert_int_equal(
            msv_request_send(anon, id, &bob, 1, &plain, 1, token, TEST_TIMEOUT_MS, &r, &why),
            MSV_ERR_AGAIN);
        msv_frame_free(r);
        r = NULL;
        assert_int_equal(
            msv_request_send(anon, id, &bob, 1, &sealed, 1, token, TEST_TIMEOUT_MS, NULL, &why),
            MSV_OK);
        /* an authenticated device does not send with a token */
        assert_int_equal(
            msv_request_send(a1.conn, id, &bob, 1, &sealed, 1, token, TEST_TIMEOUT_MS, NULL, &why),
            MSV_ERR_INVALID);
    }
    msv_conn_close(anon);
    assert_int_equal(test_server_metric(&s, "sealed_sends_total"), 1);
    /* what the relay keeps names no sender */
    assert_int_equal(test_server_queued(&s, &rows), 1);
    assert_int_equal(rows[0].device_id, b1.device_id);
    assert_int_equal(rows[0].sender_device, 0);
    assert_string_equal(rows[0].sender_handle, "");
    assert_int_equal(rows[0].suite, MSV_ENVELOPE_SEALED);
    test_queued_free(rows, 1);
    /* bob gets it from nobody the relay knows, and finds alice inside */
    test_device_connect(&s, &b1);
    do {
        msv_frame_free(f);
        assert_int_equal(msv_conn_recv(b1.conn, TEST_TIMEOUT_MS, &f), MSV_OK);
    } while (f->body_case != MSV__WIRE__FRAME__BODY_DELIVER);
    assert_int_equal(f->deliver->sender_device, 0);
    assert_int_equal(f->deliver->sender_handle.len, 0);
    assert_int_equal(f->deliver->suite, MSV_ENVELOPE_SEALED);
    q = f->deliver->queue_id;
    assert_int_equal(msv_sealed_sender(b1.id, f->deliver->ciphertext.data,
                                       f->deliver->ciphertext.len, handle, &sender_device),
                     MSV_OK);
    assert_string_equal(handle, a1.handle);
    assert_int_equal(sender_device, a1.device_id);
    assert_int_equal(msv_sealed_unwrap(b1.id, msv_identity_public(a1.id),
                                       f->deliver->ciphertext.data, f->deliver->ciphertext.len,
                                       &inner_buf, &inner_len),
                     MSV_OK);
    assert_int_equal(
        msv_open(b1.id, msv_identity_public(a1.id), inner_buf, inner_len, NULL, &pt, &pt_len),
        MSV_OK);
    assert_memory_equal(pt, "psst", 4);
    msv_secret_free(pt, pt_len);
    free(inner_buf);
    msv_frame_free(f);
    test_ack(&b1, q);
    sync_conn(&b1);
    assert_int_equal(test_server_metric(&s, "queue_depth"), 0);
    /* the server's log does not tie the sealed send to alice */
    {
        FILE *log = fopen(s.log, "r");
        char line[1024];

        assert_non_null(log);
        while (fgets(line, sizeof(line), log) != NULL) {
            if (strstr(line, "send") != NULL && strstr(line, "sealed") != NULL)
                assert_null(strstr(line, "alice"));
        }
        fclose(log);
    }
    free(env);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * Suites per device: a send addresses each device in a suite both speak, and
 * leaves out the devices that speak none of the sender's; an envelope in a
 * suite the sender or the recipient lacks is refused.
 */
static void test_suites_per_device(void **state)
{
    struct test_server s;
    struct test_device alice, bob, carol;
    struct test_device *to_carol[1] = {&carol}, *to_bob[1] = {&bob};
    const char *bob_h[1] = {"bob@example.org"}, *carol_h[1] = {"carol@example.org"};
    uint8_t id[16], *wire = NULL;
    size_t len = 0;
    uint64_t q;
    msv_frame *r = NULL;
    struct msv_refusal why = {0};

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &alice); /* modern only */
    test_register_suites(&s, bob_h[0], &bob, MSV_SUITE_CLASSIC, 0);
    test_register_suites(&s, carol_h[0], &carol, MSV_SUITE_CLASSIC,
                         MSV_SUITE_BIT(MSV_SUITE_MODERN));
    /* alice and bob share no suite: a send to bob addresses nobody, and is taken */
    expect_ok(test_send(&alice, bob_h, 1, NULL, 0, "to nobody"));
    /* alice and carol share modern; carol and bob classic */
    expect_ok(test_send(&alice, carol_h, 1, to_carol, 1, "in modern"));
    q = test_expect_message(&carol, &alice, "in modern", TEST_TIMEOUT_MS);
    assert_true(q != 0);
    test_ack(&carol, q);
    expect_ok(test_send(&carol, bob_h, 1, to_bob, 1, "in classic"));
    q = test_expect_message(&bob, &carol, "in classic", TEST_TIMEOUT_MS);
    assert_true(q != 0);
    test_ack(&bob, q);
    /* classic from carol to alice, who has no classic keys: refused, with the current devices */
    msv_random_bytes(id, sizeof(id));
    assert_int_equal(msv_seal_suite(carol.id, msv_identity_public(carol.id), MSV_SUITE_CLASSIC,
                                    (const uint8_t *)"x", 1, &wire, &len),
                     MSV_OK);
    {
        struct msv_outgoing classic = {alice.device_id, MSV_SUITE_CLASSIC, wire, len};
        const char *alice_h = "alice@example.org";

        assert_int_equal(msv_request_send(carol.conn, id, &alice_h, 1, &classic, 1, NULL,
                                          TEST_TIMEOUT_MS, &r, &why),
                         MSV_ERR_AGAIN);
        msv_frame_free(r);
        r = NULL;
        /* nor may alice use a suite she does not speak herself */
        classic.device_id = carol.device_id;
        assert_int_equal(msv_request_send(alice.conn, id, carol_h, 1, &classic, 1, NULL,
                                          TEST_TIMEOUT_MS, &r, &why),
                         MSV_ERR_AGAIN);
        msv_frame_free(r);
    }
    free(wire);
    test_device_free(&alice);
    test_device_free(&bob);
    test_device_free(&carol);
    test_server_cleanup(&s);
}

/* Which queued envelope names whom: the sender handle of the newest one. */
static void newest_sender(struct test_server *s, char *out, size_t len, size_t *count)
{
    struct test_queued *rows = NULL;
    size_t n = test_server_queued(s, &rows);

    snprintf(out, len, "%s", n > 0 ? rows[n - 1].sender_handle : "");
    *count = n;
    test_queued_free(rows, n);
}

/*
 * A handle of the account added with the code sent to it; sends name the sender by the
 * from_handle the device asks for, only one of its account's: another account's, an unknown
 * one and a removed one are refused and queue nothing.
 */
static void test_handles_and_from_handle(void **state)
{
    struct test_server s;
    struct test_device alice = {0}, bob = {0};
    const char *bob_h = "bob@example.org";
    uint8_t id[16], *wire = NULL;
    size_t len = 0, queued = 0, before = 0;
    char code[7], sender[128];
    struct msv_refusal why;
    struct msv_outgoing out;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &alice);
    test_register(&s, bob_h, &bob);
    assert_int_equal(msv_request_handle_change(alice.conn, MSV_HANDLE_ADD, "+15550001", NULL,
                                               TEST_TIMEOUT_MS, &why),
                     MSV_OK);
    test_server_code(&s, "+15550001", code);
    assert_int_equal(msv_request_handle_change(alice.conn, MSV_HANDLE_VERIFY, "+15550001", code,
                                               TEST_TIMEOUT_MS, &why),
                     MSV_OK);
    assert_int_equal(msv_seal_suite(alice.id, msv_identity_public(bob.id), MSV_SUITE_MODERN,
                                    (const uint8_t *)"x", 1, &wire, &len),
                     MSV_OK);
    out = (struct msv_outgoing){bob.device_id, MSV_SUITE_MODERN, wire, len};
    {
        struct msv_send_as as = {.from = "+15550001"};

        msv_random_bytes(id, sizeof(id));
        assert_int_equal(msv_request_send_as(alice.conn, id, &bob_h, 1, &out, 1, &as,
                                             TEST_TIMEOUT_MS, NULL, &why),
                         MSV_OK);
        newest_sender(&s, sender, sizeof(sender), &before);
        assert_string_equal(sender, "+15550001");
        /* not alice's: refused, nothing queued */
        as.from = bob_h;
        assert_int_equal(msv_request_send_as(alice.conn, id, &bob_h, 1, &out, 1, &as,
                                             TEST_TIMEOUT_MS, NULL, &why),
                         MSV_ERR_INVALID);
        assert_non_null(strstr(why.message, "not this account's"));
        as.from = "nobody@example.org";
        assert_int_equal(msv_request_send_as(alice.conn, id, &bob_h, 1, &out, 1, &as,
                                             TEST_TIMEOUT_MS, NULL, &why),
                         MSV_ERR_INVALID);
        /* removed: no longer alice's */
        assert_int_equal(msv_request_handle_change(alice.conn, MSV_HANDLE_REMOVE, "+15550001", NULL,
                                                   TEST_TIMEOUT_MS, &why),
                         MSV_OK);
        as.from = "+15550001";
        assert_int_equal(msv_request_send_as(alice.conn, id, &bob_h, 1, &out, 1, &as,
                                             TEST_TIMEOUT_MS, NULL, &why),
                         MSV_ERR_INVALID);
        newest_sender(&s, sender, sizeof(sender), &queued);
        assert_int_equal(queued, before);
    }
    free(wire);
    test_device_free(&alice);
    test_device_free(&bob);
    test_server_cleanup(&s);
}

/* A UsernameSet of the len bytes at name (len 0: release). */
static msv_frame *username_set(struct msv_conn *c, const char *name, size_t len)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__UsernameSet u = MSV__WIRE__USERNAME_SET__INIT;

    u.username = (ProtobufCBinaryData){len, (uint8_t *)name};
    req.body_case = MSV__WIRE__FRAME__BODY_USERNAME_SET;
    req.username_set = &u;
    return test_request(c, &req);
}

#define USERNAME(c, name) username_set((c), (name), strlen(name))

/* 1 if a lookup of handle by d finds devices. */
static int found(struct test_device *d, const char *handle)
{
    msv_frame *r = lookup(d->conn, handle);
    int n;

    if (r->body_case != MSV__WIRE__FRAME__BODY_LOOKUP_RESULT)
        fail_msg("lookup of %s: error %d", handle, error_code(r));
    n = r->lookup_result->results[0]->n_devices > 0;
    msv_frame_free(r);
    return n;
}

/*
 * Usernames (U1-U7 of docs/bad-input.md): anything but the grammar is refused and changes
 * nothing; a username needs no code but is no contact handle (HandleAdd and RegisterStart refuse
 * it, UsernameSet refuses an address); one per account; a change within the interval is refused;
 * a released one is held from every account until the hold ends; lookups of usernames nobody
 * has are limited per account while those of known ones go on.
 */
static void test_usernames(void **state)
{
    static const char *const bad[] = {
        "al.42",     "1alice.42", "alice.4",   "alice.1234567890", "alice42",
        "alice.4x",  "al_ice.42", "alice..42", "alice.42.1",       "abcdefghijklmnopqrstuvwxy.42",
        "alice .42",
    };
    struct test_server s;
    struct test_device a = {0}, b = {0};
    struct msv_conn *anon;
    struct msv_refusal why;
    int64_t now = 1900000000000;

    (void)state;
    test_server_init(&s, "[directory]\nusername_interval_s = 60\nusername_hold_s = 600\n"
                         "unknown_lookup_rate = 0.0001\nunknown_lookup_burst = 5\n"
                         "[accounts]\nregister_burst = 100\n");
    test_server_start(&s);
    test_server_set_clock(&s, now);
    test_register(&s, "alice@example.org", &a);
    test_register(&s, "bob@example.org", &b);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error(USERNAME(a.conn, bad[i]), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    expect_error(username_set(a.conn, "ali\0e.42", 9), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    expect_error(USERNAME(a.conn, "carol@example.org"), MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    expect_error(username_set(a.conn, "", 0), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    anon = test_connect(&s);
    expect_error(USERNAME(anon, "alice.42"), MSV__WIRE__ERROR_CODE__ERROR_UNAUTHENTICATED);
    msv_conn_close(anon);
    assert_int_equal(
        msv_request_handle_change(a.conn, MSV_HANDLE_ADD, "alice.42", NULL, TEST_TIMEOUT_MS, &why),
        MSV_ERR_INVALID);
    assert_non_null(strstr(why.message, "needs no code"));
    assert_int_equal(test_server_metric(&s, "usernames_set_total"), 0);
    /* set (case folded), found by an exact lookup only */
    expect_ok(USERNAME(a.conn, "Alice.42"));
    assert_true(found(&b, "alice.42"));
    assert_true(found(&b, "ALICE.42"));
    expect_error(USERNAME(b.conn, "alice.42"), MSV__WIRE__ERROR_CODE__ERROR_EXISTS);
    expect_error(USERNAME(a.conn, "alice.42"), MSV__WIRE__ERROR_CODE__ERROR_EXISTS);
    /* within the interval: refused, nothing changes */
    test_server_set_clock(&s, now + 59000);
    expect_error(USERNAME(a.conn, "alice.43"), MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_true(found(&b, "alice.42"));
    assert_false(found(&b, "alice.43"));
    /* a change: the old one is released and held from everyone until the hold ends */
    test_server_set_clock(&s, now + 61000);
    expect_ok(USERNAME(a.conn, "alice.43"));
    assert_true(found(&b, "alice.43"));
    assert_false(found(&b, "alice.42"));
    expect_error(USERNAME(b.conn, "alice.42"), MSV__WIRE__ERROR_CODE__ERROR_EXISTS);
    test_server_set_clock(&s, now + 61000 + 599000);
    expect_error(USERNAME(b.conn, "alice.42"), MSV__WIRE__ERROR_CODE__ERROR_EXISTS);
    test_server_set_clock(&s, now + 61000 + 601000);
    expect_ok(USERNAME(b.conn, "alice.42"));
    /* released without a new one */
    expect_ok(username_set(a.conn, "", 0));
    assert_false(found(&b, "alice.43"));
    assert_int_equal(test_server_metric(&s, "usernames_released_total"), 2);
    assert_true(test_server_metric(&s, "usernames_refused_total") >= 5);
    /* guessing: five usernames nobody had (three of them above), then refused; known ones and
     * addresses go on */
    assert_false(found(&b, "zed.11"));
    assert_false(found(&b, "zed.12"));
    expect_error(lookup(b.conn, "zed.13"), MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(test_server_metric(&s, "unknown_lookups_refused_total"), 1);
    assert_true(found(&a, "alice.42"));
    assert_true(found(&b, "alice@example.org"));
    assert_false(found(&b, "nobody@example.org"));
    test_device_free(&a);
    test_device_free(&b);
    test_server_cleanup(&s);
}

/* An unauthenticated LogRead of up to count leaves from start. */
static msv_frame *log_read(struct msv_conn *c, uint64_t start, uint32_t count)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LogRead q = MSV__WIRE__LOG_READ__INIT;

    q.start = start;
    q.count = count;
    req.body_case = MSV__WIRE__FRAME__BODY_LOG_READ;
    req.log_read = &q;
    return test_request(c, &req);
}

/*
 * Reading the log without an account is limited by entries, not by requests:
 * each costs its inclusion proof, so the log cannot be read faster than
 * log_read_rate. A short bucket answers with what it holds.
 */
static void test_log_read_rate(void **state)
{
    struct test_server s;
    struct test_device d[7];
    struct msv_conn *anon;
    msv_frame *r;
    char handle[64];

    (void)state;
    test_server_init(&s, "[directory]\nlog_read_rate = 0.01\nlog_read_burst = 5\n"
                         "[accounts]\nregister_burst = 20\n");
    test_server_start(&s);
    for (size_t i = 0; i < 7; i++) {
        snprintf(handle, sizeof(handle), "user%zu@example.org", i);
        test_register(&s, handle, &d[i]);
    }
    anon = test_connect(&s);
    /* 256 asked, 5 tokens: 5 entries (of 8: the cut-over entry, then 7 device sets) */
    r = log_read(anon, 0, 256);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOG_ENTRIES);
    assert_int_equal(r->log_entries->head->size, 8);
    assert_int_equal(r->log_entries->n_entries, 5);
    msv_frame_free(r);
    /* the bucket is empty: the rest of the directory waits */
    r = log_read(anon, 5, 256);
    expect_error(r, MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    msv_conn_close(anon);
    for (size_t i = 0; i < 7; i++)
        test_device_free(&d[i]);
    test_server_cleanup(&s);
}

/* 1 if the len bytes at needle occur in the frame f as it travels. */
static int frame_holds(const msv_frame *f, const void *needle, size_t len)
{
    size_t n = msv__wire__frame__get_packed_size(f);
    uint8_t *bytes = malloc(n);
    int found_it;

    assert_non_null(bytes);
    assert_int_equal(msv__wire__frame__pack(f, bytes), n);
    found_it = memmem(bytes, n, needle, len) != NULL;
    free(bytes);
    return found_it;
}

/* 1 if the frame f holds d's public identity. */
static int holds_identity(const msv_frame *f, const struct test_device *d)
{
    size_t len;
    const uint8_t *id = msv_public_identity_bytes(msv_identity_public(d->id), &len);

    return frame_holds(f, id, len);
}

/* d's account adds handle, verified by the code the server sent. */
static void add_handle(struct test_server *s, struct test_device *d, const char *handle)
{
    struct msv_refusal why = {0};
    char code[7];

    assert_int_equal(
        msv_request_handle_change(d->conn, MSV_HANDLE_ADD, handle, NULL, TEST_TIMEOUT_MS, &why),
        MSV_OK);
    test_server_code(s, handle, code);
    assert_int_equal(
        msv_request_handle_change(d->conn, MSV_HANDLE_VERIFY, handle, code, TEST_TIMEOUT_MS, &why),
        MSV_OK);
}

/*
 * The log read without an account reveals nothing of who is registered: after registrations, a
 * second handle, a username and a removed handle (its tombstone), the answer to the whole log
 * holds no handle, username or identity key, and each device set or tombstone is its leaf hash
 * only (the same length whoever it names), proven in the head. An account reads its own
 * handles' leaves and no one else's.
 */
static void test_log_read_names_no_handle(void **state)
{
    static const char *const names[] = {"alice@example.org",
                                        "bob@example.org",
                                        "carol@example.org",
                                        "alice2@example.org",
                                        "carol2@example.org",
                                        "alice.42",
                                        "alice",
                                        "example.org"};
    struct test_server s;
    struct test_device a, b, c;
    struct msv_refusal why = {0};
    struct msv_conn *anon;
    msv_frame *r;
    uint64_t size;

    (void)state;
    /* leaves that name their handles (version 3): the reader sees their hashes only */
    test_server_init(&s, "[directory]\nleaf_version = 3\n[accounts]\nregister_burst = 20\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a);
    test_register(&s, "bob@example.org", &b);
    test_register(&s, "carol@example.org", &c);
    msv_frame_free(USERNAME(a.conn, "alice.42"));
    assert_true(found(&b, "alice.42"));
    add_handle(&s, &a, "alice2@example.org");
    assert_true(found(&b, "alice2@example.org"));
    /* a handle removed: its tombstone */
    add_handle(&s, &c, "carol2@example.org");
    assert_int_equal(msv_request_handle_change(c.conn, MSV_HANDLE_REMOVE, "carol2@example.org",
                                               NULL, TEST_TIMEOUT_MS, &why),
                     MSV_OK);
    assert_false(found(&b, "carol2@example.org"));
    anon = test_connect(&s);
    r = log_read(anon, 0, 256);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOG_ENTRIES);
    size = r->log_entries->head->size;
    assert_true(size >= 7);
    assert_int_equal(r->log_entries->n_entries, size);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (frame_holds(r, names[i], strlen(names[i])))
            fail_msg("the log read without an account names %s", names[i]);
    assert_false(holds_identity(r, &a) || holds_identity(r, &b) || holds_identity(r, &c));
    for (size_t i = 0; i < r->log_entries->n_entries; i++) {
        static uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
        const Msv__Wire__LogProof *p = r->log_entries->entries[i];
        uint8_t root[MSV_KT_HASH_LEN];

        assert_int_equal(p->leaf.len, 0);
        assert_int_equal(p->leaf_hash.len, MSV_KT_HASH_LEN);
        for (size_t k = 0; k < p->n_path; k++)
            memcpy(path[k], p->path[k].data, MSV_KT_HASH_LEN);
        memcpy(root, r->log_entries->head->root.data, MSV_KT_HASH_LEN);
        assert_int_equal(
            msv_merkle_verify_inclusion(p->leaf_hash.data, i, size, path, p->n_path, root), MSV_OK);
    }
    msv_frame_free(r);
    msv_conn_close(anon);
    /* an account reads its own entries whole and nobody else's: bob finds none of alice's or
     * carol's handles, username or keys, only his own */
    r = log_read(b.conn, 0, 256);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOG_ENTRIES);
    assert_int_equal(r->log_entries->n_entries, size);
    for (size_t i = 0; i < 6; i++) /* the handles and the username */
        if (i != 1 && frame_holds(r, names[i], strlen(names[i])))
            fail_msg("the log read by bob's account names %s", names[i]);
    assert_false(holds_identity(r, &a) || holds_identity(r, &c));
    assert_true(frame_holds(r, names[1], strlen(names[1])) && holds_identity(r, &b));
    for (size_t i = 0; i < r->log_entries->n_entries; i++)
        assert_int_equal(r->log_entries->entries[i]->leaf.len > 0,
                         r->log_entries->entries[i]->leaf_hash.len == 0);
    msv_frame_free(r);
    /* alice reads her own three: so the needles above are the bytes a leaf holds */
    r = log_read(a.conn, 0, 256);
    for (size_t i = 0; i < 6; i++)
        if (frame_holds(r, names[i], strlen(names[i])) != (i == 0 || i == 3 || i == 5))
            fail_msg("the log read by alice's account: %s", names[i]);
    assert_true(holds_identity(r, &a));
    assert_false(holds_identity(r, &b) || holds_identity(r, &c));
    msv_frame_free(r);
    test_device_free(&a);
    test_device_free(&b);
    test_device_free(&c);
    test_server_cleanup(&s);
}

/*
 * A device id belongs to one account: alice cannot approve bob's device waiting to join his
 * account (nor remove one of his: R6), so no leaf of her handles ever lists it; the log does
 * not grow until bob approves it himself, and then lists it under his handle only.
 */
static void test_device_of_another_account(void **state)
{
    struct test_server s;
    struct test_device a, b1, b2;
    msv_frame *r;
    uint64_t size;

    (void)state;
    /* leaves that name their handles (version 3): bob's is read as his */
    test_server_init(&s, "[directory]\nleaf_version = 3\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a);
    test_register(&s, "bob@example.org", &b1);
    test_enroll_pending(&s, "bob@example.org", &b2);
    r = log_read(a.conn, 0, 256);
    size = r->log_entries->head->size;
    msv_frame_free(r);
    expect_error(test_approve(&a, b2.device_id), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    r = log_read(a.conn, 0, 256);
    assert_int_equal(r->log_entries->head->size, size);
    msv_frame_free(r);
    expect_ok(test_approve(&b1, b2.device_id));
    r = log_read(b1.conn, 0, 256);
    assert_int_equal(r->log_entries->head->size, size + 1);
    {
        static struct msv_kt_entry e;
        const Msv__Wire__LogProof *p = r->log_entries->entries[size];

        assert_int_equal(msv_kt_leaf_parse(p->leaf.data, p->leaf.len, &e), MSV_OK);
        assert_string_equal(e.handle, "bob@example.org");
        assert_int_equal(e.n_devices, 2);
    }
    msv_frame_free(r);
    test_device_free(&a);
    test_device_free(&b1);
    test_device_free(&b2);
    test_server_cleanup(&s);
}

/* The newest entry of r (a LogEntries answer), parsed into e, and its chains checked into out. */
static void newest_chains(const msv_frame *r, struct msv_kt_entry *e, struct msv_kt_devlist *out)
{
    const Msv__Wire__LogProof *p = r->log_entries->entries[r->log_entries->n_entries - 1];

    assert_int_equal(msv_kt_leaf_parse(p->leaf.data, p->leaf.len, e), MSV_OK);
    assert_int_equal(msv_kt_devlist_check(e, out), MSV_OK);
}

/* A registration whose device's approval of itself (root_signature) is sig. */
static msv_frame *register_with_root(struct test_server *s, const char *handle,
                                     const struct msv_identity *id, ProtobufCBinaryData sig)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RegisterFinish fin = MSV__WIRE__REGISTER_FINISH__INIT;
    Msv__Wire__NewDevice nd = MSV__WIRE__NEW_DEVICE__INIT;
    struct msv_conn *c = test_connect(s);
    struct msv_refusal why = {0};
    size_t len = 0;
    char code[7];
    msv_frame *r;

    assert_int_equal(msv_request_register_start(c, handle, NULL, TEST_TIMEOUT_MS, &why), MSV_OK);
    test_server_code(s, handle, code);
    nd.suite = MSV_SUITE_MODERN;
    nd.identity.data = (uint8_t *)msv_public_identity_bytes(msv_identity_public(id), &len);
    nd.identity.len = len;
    nd.root_signature = sig;
    fin.handle = (ProtobufCBinaryData){strlen(handle), (uint8_t *)handle};
    fin.code = (ProtobufCBinaryData){6, (uint8_t *)code};
    fin.password = (ProtobufCBinaryData){strlen(TEST_PASSWORD), (uint8_t *)TEST_PASSWORD};
    fin.device = &nd;
    req.body_case = MSV__WIRE__FRAME__BODY_REGISTER_FINISH;
    req.register_finish = &fin;
    r = test_request(c, &req);
    msv_conn_close(c);
    return r;
}

/*
 * Signed device lists (docs/transparency.md): a registration keeps its device's approval of
 * itself as the list's root, an approval keeps the approver's record, and each goes into the
 * log's device sets; a record whose signature does not hold is refused (ERROR_BAD_APPROVAL)
 * with nothing changed: a root signed by another key, an approval signed by the new device
 * itself. A device added by the password to an account with no device left is a recovery.
 */
static void test_signed_approvals(void **state)
{
    static struct msv_kt_entry e;
    struct test_server s;
    struct test_device a1, a2;
    struct msv_identity *other = NULL;
    struct msv_kt_devlist chains;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ApproveDevice ap = MSV__WIRE__APPROVE_DEVICE__INIT;
    uint8_t hash[32] = {0}, sig[MSV_KT_APPROVAL_SIG_MAX];
    size_t sig_len = 0;
    uint64_t size;
    msv_frame *r;

    (void)state;
    test_server_init(&s, "[directory]\nleaf_version = 3\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    r = log_read(a1.conn, 0, 256);
    newest_chains(r, &e, &chains);
    assert_true(e.signed_list);
    assert_int_equal(chains.n_signed, 1);
    assert_int_equal(chains.root_kind, MSV_KT_ROOT);
    assert_int_equal(chains.root_id, a1.device_id);
    size = r->log_entries->head->size;
    msv_frame_free(r);
    /* a root signed by another key than the device's */
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &other), MSV_OK);
    assert_int_equal(msv_kt_approval_sign(a1.id, MSV_KT_ROOT, 0, hash, 0, sig, &sig_len), MSV_OK);
    r = register_with_root(&s, "mallory@example.org", other, (ProtobufCBinaryData){sig_len, sig});
    expect_error(r, MSV__WIRE__ERROR_CODE__ERROR_BAD_APPROVAL);
    /* a2 waits; an approval a2 signed itself, in a1's name, is refused */
    test_enroll_pending(&s, "alice@example.org", &a2);
    msv_public_identity_hash(msv_identity_public(a2.id), hash);
    assert_int_equal(msv_kt_approval_sign(a2.id, MSV_KT_APPROVED, a2.device_id, hash, a1.device_id,
                                          sig, &sig_len),
                     MSV_OK);
    ap.device_id = a2.device_id;
    ap.chain_approval = (ProtobufCBinaryData){sig_len, sig};
    req.body_case = MSV__WIRE__FRAME__BODY_APPROVE_DEVICE;
    req.approve_device = &ap;
    expect_error(test_request(a1.conn, &req), MSV__WIRE__ERROR_CODE__ERROR_BAD_APPROVAL);
    r = log_read(a1.conn, 0, 256);
    assert_int_equal(r->log_entries->head->size, size);
    msv_frame_free(r);
    /* a1's own approval is kept: a2's chain runs to the root */
    assert_int_equal(msv_kt_approval_sign(a1.id, MSV_KT_APPROVED, a2.device_id, hash, a1.device_id,
                                          sig, &sig_len),
                     MSV_OK);
    ap.chain_approval = (ProtobufCBinaryData){sig_len, sig};
    expect_ok(test_request(a1.conn, &req));
    r = log_read(a1.conn, 0, 256);
    assert_int_equal(r->log_entries->head->size, size + 1);
    newest_chains(r, &e, &chains);
    assert_int_equal(e.n_devices, 2);
    assert_int_equal(e.devices[1].approval.kind, MSV_KT_APPROVED);
    assert_int_equal(e.devices[1].approval.approver, a1.device_id);
    assert_int_equal(chains.n_signed, 2);
    msv_frame_free(r);
    /* every device gone: the next one added with the password is a recovery, so marked */
    {
        Msv__Wire__Frame rm_req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;
        struct test_device a3;

        rm_req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
        rm_req.remove_device = &rm;
        rm.device_id = a2.device_id;
        expect_ok(test_request(a1.conn, &rm_req));
        rm.device_id = a1.device_id;
        msv_frame_free(test_request(a1.conn, &rm_req)); /* its connection ends with it */
        test_enroll_pending(&s, "alice@example.org", &a3);
        test_device_connect(&s, &a3);
        r = log_read(a3.conn, 0, 256);
        newest_chains(r, &e, &chains);
        assert_int_equal(e.n_devices, 1);
        assert_int_equal(chains.root_kind, MSV_KT_RECOVERY);
        assert_int_equal(chains.root_id, a3.device_id);
        msv_frame_free(r);
        test_device_free(&a3);
    }
    msv_identity_free(other);
    test_device_free(&a1);
    test_device_free(&a2);
    test_server_cleanup(&s);
}

/* 1 if the frame f holds, beside names, any of the identities of d[0..n-1]. */
static int names_anyone(const msv_frame *f, const char *const *names, size_t n_names,
                        const struct test_device *d, size_t n)
{
    for (size_t i = 0; i < n_names; i++)
        if (frame_holds(f, names[i], strlen(names[i])))
            return 1;
    for (size_t i = 0; i < n; i++)
        if (holds_identity(f, &d[i]))
            return 1;
    return 0;
}

/*
 * With [directory] leaf_version = 4 the log cuts over (its entry 1, after the account
 * registered before) to leaves that name no handle: after registrations, a second handle, a
 * username and a removed handle (a tombstone), the whole log read, without an account and by
 * one, holds none of them and none of their identity keys; every entry after the cut-over is a
 * version-4 leaf given whole, proven in the head; a lookup shows the device set beside it. The
 * account registered before the cut-over keeps its old leaf.
 */
static void test_log_read_v4_names_no_handle(void **state)
{
    static const char *const names[] = {"bob@example.org",
                                        "carol@example.org",
                                        "carol2@example.org",
                                        "bob2@example.org",
                                        "bob.42",
                                        "bob"};
    struct test_server s;
    struct test_device d[3];
    struct msv_refusal why = {0};
    struct msv_conn *anon;
    msv_frame *r;

    (void)state;
    /* alice registers on a log of version-3 leaves, then it cuts over */
    test_server_init(&s, "[directory]\nleaf_version = 3\n[accounts]\nregister_burst = 20\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &d[0]);
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra),
             "[directory]\nleaf_version = 4\n[accounts]\n"
             "register_burst = 20\n");
    test_server_start(&s);
    test_device_connect(&s, &d[0]);
    test_register(&s, "bob@example.org", &d[1]);
    test_register(&s, "carol@example.org", &d[2]);
    msv_frame_free(USERNAME(d[1].conn, "bob.42"));
    assert_true(found(&d[0], "bob.42"));
    add_handle(&s, &d[1], "bob2@example.org");
    add_handle(&s, &d[2], "carol2@example.org");
    assert_int_equal(msv_request_handle_change(d[2].conn, MSV_HANDLE_REMOVE, "carol2@example.org",
                                               NULL, TEST_TIMEOUT_MS, &why),
                     MSV_OK);
    anon = test_connect(&s);
    for (int by_account = 0; by_account < 2; by_account++) {
        const Msv__Wire__LogEntries *e;

        r = log_read(by_account ? d[0].conn : anon, 0, 256);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOG_ENTRIES);
        e = r->log_entries;
        assert_true(e->head->size >= 8);
        assert_int_equal(e->n_entries, e->head->size);
        if (names_anyone(r, names, sizeof(names) / sizeof(names[0]), &d[1], 2))
            fail_msg("the log read %s names an account registered after the cut-over",
                     by_account ? "by an account" : "without an account");
        /* the cut-over at entry 1; then version-4 leaves, each proven in the head */
        assert_int_equal(
            msv_kt_cutover_leaf_parse(e->entries[1]->leaf.data, e->entries[1]->leaf.len), MSV_OK);
        for (size_t i = 2; i < e->n_entries; i++) {
            static uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
            const Msv__Wire__LogProof *p = e->entries[i];
            struct msv_kt_v4_leaf l;
            uint8_t h[MSV_KT_HASH_LEN];

            assert_int_equal(msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &l), MSV_OK);
            assert_int_equal(p->leaf_hash.len, 0);
            for (size_t k = 0; k < p->n_path; k++)
                memcpy(path[k], p->path[k].data, MSV_KT_HASH_LEN);
            msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
            assert_int_equal(msv_merkle_verify_inclusion(h, i, e->head->size, path, p->n_path,
                                                         e->head->root.data),
                             MSV_OK);
        }
        /* alice's entry from before the cut-over stays (to an account: her leaf) */
        assert_int_equal(frame_holds(r, "alice@example.org", 17), by_account);
        msv_frame_free(r);
    }
    msv_conn_close(anon);
    /* a lookup shows the device set beside its version-4 leaf, with what opens it */
    r = lookup(d[0].conn, "bob@example.org");
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
    {
        const Msv__Wire__LogProof *p = r->lookup_result->results[0]->proof;
        struct msv_kt_entry *e = malloc(sizeof(*e));

        assert_non_null(p);
        assert_non_null(e);
        assert_int_equal(msv_kt_v4_open(r->lookup_result->vrf_key.data, p->leaf.data, p->leaf.len,
                                        p->data.data, p->data.len, p->version, p->opening.data,
                                        p->vrf_proof.data, e),
                         MSV_OK);
        assert_string_equal(e->handle, "bob@example.org");
        assert_int_equal(e->n_devices, 1);
        /* another version, or another device set, does not open it */
        assert_int_equal(msv_kt_v4_open(r->lookup_result->vrf_key.data, p->leaf.data, p->leaf.len,
                                        p->data.data, p->data.len, p->version + 1, p->opening.data,
                                        p->vrf_proof.data, e),
                         MSV_ERR_AUTH);
        p->data.data[p->data.len - 1] ^= 1;
        assert_int_equal(msv_kt_v4_open(r->lookup_result->vrf_key.data, p->leaf.data, p->leaf.len,
                                        p->data.data, p->data.len, p->version, p->opening.data,
                                        p->vrf_proof.data, e),
                         MSV_ERR_AUTH);
        free(e);
    }
    msv_frame_free(r);
    for (size_t i = 0; i < 3; i++)
        test_device_free(&d[i]);
    test_server_cleanup(&s);
}

/* n lookups of the same handle in one request. */
static msv_frame *lookup_many(struct msv_conn *c, const char *handle, size_t n)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LookupRequest q = MSV__WIRE__LOOKUP_REQUEST__INIT;
    ProtobufCBinaryData h[256];

    assert_true(n <= 256);
    for (size_t i = 0; i < n; i++)
        h[i] = (ProtobufCBinaryData){strlen(handle), (uint8_t *)handle};
    q.n_handles = n;
    q.handles = h;
    req.body_case = MSV__WIRE__FRAME__BODY_LOOKUP;
    req.lookup = &q;
    return test_request(c, &req);
}

/*
 * One account of 64 devices with 3072-bit identities: its log leaves add up
 * to more than a frame. LogRead answers every page, bounded by bytes, and the
 * whole log is read by paging (by an account: a reader without one gets leaf
 * hashes, one answer); a lookup of the account is answered; a lookup
 * whose answer cannot fit in a frame is refused with ERROR_TOO_BIG instead of
 * going unanswered; identities over identity_max are refused.
 */
static void test_big_account_answers(void **state)
{
    struct test_server s;
    struct test_device a1;
    struct msv_identity *big = NULL;
    struct msv_refusal why = {0};
    struct msv_conn *c, *anon;
    uint64_t next = 0, size = 0, dev = 0;
    size_t pages = 0;
    msv_frame *r;

    (void)state;
    /* a server that takes frames larger than clients read still answers within 1 MiB */
    test_server_init(&s, "[server]\nframe_max = 4194304\n"
                         "[accounts]\nregister_burst = 200\nargon2_memlimit_kib = 8\n"
                         "argon2_opslimit = 1\n[directory]\nlookup_burst = 1000\n"
                         "leaf_version = 3\n"); /* leaves that hold the device sets */
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_CLASSIC,
                                                  MSV_SUITE_BIT(MSV_SUITE_ECIES) |
                                                      MSV_SUITE_BIT(MSV_SUITE_MODERN),
                                                  3072, &big),
                     MSV_OK);
    c = test_connect(&s);
    for (int i = 1; i < 64; i++) {
        if (msv_request_add_device(c, "alice@example.org", TEST_PASSWORD, big, NULL, "token",
                                   TEST_TIMEOUT_MS, &dev, &why) != MSV_OK)
            fail_msg("adding device %d: %s", i, why.message);
        expect_ok(test_approve(&a1, dev));
    }
    /* the log, read from the start by the account (as its monitor does), page by page */
    do {
        r = log_read(a1.conn, next, 256);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOG_ENTRIES);
        size = r->log_entries->head->size;
        assert_true(r->log_entries->n_entries > 0);
        next += r->log_entries->n_entries;
        pages++;
        msv_frame_free(r);
    } while (next < size);
    assert_int_equal(next, size);
    assert_true(size >= 64);
    assert_true(pages > 1); /* more than a frame's worth */
    /* without an account, leaf hashes only: one answer */
    anon = test_connect(&s);
    r = log_read(anon, 0, 256);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOG_ENTRIES);
    assert_int_equal(r->log_entries->n_entries, size);
    msv_frame_free(r);
    /* the account itself fits in an answer */
    r = lookup(a1.conn, "alice@example.org");
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT);
    assert_int_equal(r->lookup_result->results[0]->n_devices, 64);
    msv_frame_free(r);
    /* 256 times over it does not: refused in words, and the connection goes on */
    expect_error(lookup_many(a1.conn, "alice@example.org", 256),
                 MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    /* an answer under frame_max but over what clients read: refused as well */
    expect_error(lookup_many(a1.conn, "alice@example.org", 30),
                 MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_true(test_server_metric(&s, "answers_too_big_total") >= 2);
    sync_conn(&a1);
    msv_conn_close(anon);
    msv_conn_close(c);
    /* an identity over identity_max is refused, nothing added */
    test_server_stop(&s);
    snprintf(s.extra + strlen(s.extra), sizeof(s.extra) - strlen(s.extra),
             "[accounts]\nidentity_max = 512\n");
    test_server_start(&s);
    c = test_connect(&s);
    assert_int_not_equal(msv_request_add_device(c, "alice@example.org", TEST_PASSWORD, big, NULL,
                                                "token", TEST_TIMEOUT_MS, &dev, &why),
                         MSV_OK);
    assert_int_equal(why.code, MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    msv_conn_close(c);
    msv_identity_free(big);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* Opens n more authenticated connections of d (d->conn stays the last one's). */
static void connect_again(struct test_server *s, struct test_device *d, struct msv_conn **conns,
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        d->conn = NULL;
        test_device_connect(s, d);
        conns[i] = d->conn;
    }
}

/* 1 if the server closed c within timeout_ms (frames pushed before that are read past). */
static int conn_closed(struct msv_conn *c, int timeout_ms)
{
    int64_t end = wall_ms() + timeout_ms;

    for (;;) {
        msv_frame *f = NULL;
        int64_t left = end - wall_ms();
        msv_err err = msv_conn_recv(c, left > 0 ? (int)left : 0, &f);

        msv_frame_free(f);
        if (err == MSV_ERR_AGAIN)
            return 0;
        if (err != MSV_OK)
            return 1;
    }
}

/*
 * A device connected several times, over both workers: a newer connection
 * closes the older ones wherever they are, and removing the device closes
 * every one at once. Suspending an account (missive-admin, then a reload)
 * closes its connections without waiting for them to send anything.
 */
static void test_revoked_connections_closed(void **state)
{
    struct test_server s;
    struct test_device a1, a2, b1;
    struct msv_conn *conns[10], *others[4];
    char cmd[512];

    (void)state;
    test_server_init(&s, "[server]\nworkers = 2\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_add_device(&s, "alice@example.org", &a1, &a2);
    conns[0] = a2.conn;
    connect_again(&s, &a2, conns + 1, 9);
    /* the kernel spreads them over both workers; only the newest stays */
    for (size_t i = 0; i < 9; i++)
        assert_true(conn_closed(conns[i], TEST_TIMEOUT_MS));
    assert_false(conn_closed(conns[9], QUICK_MS));
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;

        rm.device_id = a2.device_id;
        req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
        req.remove_device = &rm;
        expect_ok(test_request(a1.conn, &req));
    }
    assert_true(conn_closed(conns[9], TEST_TIMEOUT_MS));
    for (size_t i = 0; i < 10; i++)
        msv_conn_close(conns[i]);
    a2.conn = NULL;
    expect_served(&a1, "alice@example.org");
    /* suspended: every connection of the account closes at the reload, idle or not */
    test_register(&s, "bob@example.org", &b1);
    others[0] = b1.conn;
    connect_again(&s, &b1, others + 1, 1);
    snprintf(cmd, sizeof(cmd), "'%s' --data-dir '%s/data' suspend bob@example.org >/dev/null",
             MSV_ADMIN, s.dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(kill(s.pid, SIGHUP), 0);
    assert_true(conn_closed(others[1], TEST_TIMEOUT_MS));
    assert_true(test_server_metric(&s, "connections_revoked_total") >= 10);
    msv_conn_close(others[0]);
    msv_conn_close(others[1]);
    b1.conn = NULL;
    expect_served(&a1, "alice@example.org");
    test_device_free(&b1);
    test_device_free(&a2);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

static void test_health_and_metrics(void **state)
{
    struct test_server s;
    char body[16384];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    assert_int_equal(test_server_http(&s, "/health", body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"status\":\"ok\""));
    assert_int_equal(test_server_http(&s, "/metrics", body, sizeof(body)), 200);
    assert_non_null(strstr(body, "# TYPE missived_envelopes_enqueued_total counter"));
    assert_int_equal(test_server_http(&s, "/nothing-here", body, sizeof(body)), 404);
    test_server_cleanup(&s);
}

/* Registers handle with id and first prekeys first; the answer's refusal in why. */
static msv_err register_with(struct test_server *s, const char *handle, struct msv_identity *id,
                             const struct msv_prekey_set *first, uint64_t *device,
                             struct msv_refusal *why)
{
    struct msv_conn *c = test_connect(s);
    char code[7];
    msv_err err;

    memset(why, 0, sizeof(*why));
    err = msv_request_register_start(c, handle, NULL, TEST_TIMEOUT_MS, why);
    if (err != MSV_OK)
        fail_msg("register_start %s: %s", handle, why->message);
    test_server_code(s, handle, code);
    err = msv_request_register_finish(c, handle, NULL, code, TEST_PASSWORD, id, first, "",
                                      TEST_TIMEOUT_MS, device, why);
    msv_conn_close(c);
    return err;
}

/*
 * A device whose identity says post-quantum brings its signed prekey and
 * last-resort KEM prekey with its registration, signed by it and nothing
 * more; the server holds them before the device ever connects, so a claim
 * finds its bundle at once.
 */
static void test_first_prekeys(void **state)
{
    struct test_server s;
    struct test_device alice = {0};
    struct msv_identity *pq = NULL, *other = NULL;
    struct msv_prekey spk, opk;
    struct msv_kem_prekey *kem = calloc(2, sizeof(*kem));
    uint8_t sig[64], kem_sig[2][64];
    struct msv_prekey_set first = {.signed_key = &spk, .signed_sig = sig};
    struct msv_refusal why;
    uint64_t device = 0;
    msv_frame *got = NULL;

    (void)state;
    assert_non_null(kem);
    test_server_init(&s, "[accounts]\nregister_burst = 40\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &alice);
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &pq),
                     MSV_OK);
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &other),
                     MSV_OK);
    assert_int_equal(msv_prekey_generate(pq, 1, &spk, sig), MSV_OK);
    assert_int_equal(msv_prekey_generate(pq, 2, &opk, NULL), MSV_OK);
    assert_int_equal(msv_kem_prekey_generate(pq, 3, 1, &kem[0], kem_sig[0]), MSV_OK);
    assert_int_equal(msv_kem_prekey_generate(other, 3, 1, &kem[1], kem_sig[1]), MSV_OK);
    /* none, or no KEM prekey: refused */
    assert_int_equal(register_with(&s, "bob1@example.org", pq, NULL, &device, &why),
                     MSV_ERR_INVALID);
    assert_non_null(strstr(why.message, "post-quantum"));
    assert_int_equal(register_with(&s, "bob2@example.org", pq, &first, &device, &why),
                     MSV_ERR_INVALID);
    /* a one-time one beside them: refused (they follow at the first connection) */
    first.kem_last_resort = &kem[0];
    first.kem_last_resort_sig = kem_sig[0];
    first.one_time = &opk;
    first.n_one_time = 1;
    assert_int_equal(register_with(&s, "bob3@example.org", pq, &first, &device, &why),
                     MSV_ERR_INVALID);
    first.n_one_time = 0;
    /* another identity's KEM prekey: refused */
    first.kem_last_resort = &kem[1];
    first.kem_last_resort_sig = kem_sig[1];
    assert_int_equal(register_with(&s, "bob4@example.org", pq, &first, &device, &why),
                     MSV_ERR_AUTH);
    first.kem_last_resort = &kem[0];
    first.kem_last_resort_sig = kem_sig[0];
    assert_int_equal(register_with(&s, "bob5@example.org", pq, &first, &device, &why), MSV_OK);
    /* bob's device never connected: its bundle is there all the same, its KEM prekey with it */
    assert_int_equal(
        msv_request_prekey_claim(alice.conn, &device, 1, 0, TEST_TIMEOUT_MS, &got, &why), MSV_OK);
    assert_int_equal(got->prekey_bundles->n_bundles, 1);
    assert_int_equal(got->prekey_bundles->bundles[0]->signed_->id, 1);
    assert_non_null(got->prekey_bundles->bundles[0]->kem);
    assert_int_equal(got->prekey_bundles->bundles[0]->kem->id, 3);
    assert_true(got->prekey_bundles->bundles[0]->kem->last_resort);
    msv_frame_free(got);
    /* a NewDevice swollen with unknown fields is refused, not kept whole at an address */
    for (int swollen = 0; swollen < 2; swollen++) {
        static uint8_t filler[8192];
        struct msv_conn *c = test_connect(&s);
        msv_frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__ProvisionOpen po = MSV__WIRE__PROVISION_OPEN__INIT;
        Msv__Wire__NewDevice nd = MSV__WIRE__NEW_DEVICE__INIT;
        ProtobufCMessageUnknownField extra = {.tag = 1000,
                                              .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                                              .len = sizeof(filler),
                                              .data = filler};
        size_t len = 0;
        const uint8_t *pub = msv_public_identity_bytes(msv_identity_public(pq), &len);

        filler[0] = 0xfe; /* protobuf-c keeps a field's length with its bytes: 8190 */
        filler[1] = 0x3f;
        nd.suite = MSV_SUITE_MODERN;
        nd.identity = (ProtobufCBinaryData){len, (uint8_t *)pub};
        if (swollen) {
            nd.base.n_unknown_fields = 1;
            nd.base.unknown_fields = &extra;
        }
        po.device = &nd;
        req.body_case = MSV__WIRE__FRAME__BODY_PROVISION_OPEN;
        req.provision_open = &po;
        /* without its first prekeys the small one is refused for that, the swollen one for its size
         */
        expect_error(test_request(c, &req), swollen ? MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG
                                                    : MSV__WIRE__ERROR_CODE__ERROR_INVALID);
        msv_conn_close(c);
    }
    msv_identity_free(pq);
    msv_identity_free(other);
    free(kem);
    test_device_free(&alice);
    test_server_cleanup(&s);
}

/*
 * A device waiting to be linked asks for its message about once a second; faster, its question
 * is refused unlooked-at (ERROR_RATE_LIMITED, counted). Before, each one, from a connection that
 * never authenticated, took the addresses' lock and, in a cluster, a round trip to Redis under
 * the lock every worker's shared limits take, as fast as it could send them.
 */
static void test_provision_take_paced(void **state)
{
    struct test_server s;
    struct msv_identity *id = NULL;
    struct msv_refusal why = {0};
    struct msv_conn *c;
    uint8_t address[16], *msg = NULL;
    size_t len = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    c = test_connect(&s);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &id), MSV_OK);
    assert_int_equal(msv_request_provision_open(c, id, NULL, TEST_TIMEOUT_MS, address, &why),
                     MSV_OK);
    assert_int_equal(msv_request_provision_take(c, TEST_TIMEOUT_MS, &msg, &len, &why),
                     MSV_ERR_NOT_FOUND);
    for (int i = 0; i < 20; i++) {
        assert_int_not_equal(msv_request_provision_take(c, TEST_TIMEOUT_MS, &msg, &len, &why),
                             MSV_OK);
        assert_int_equal(why.code, MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    }
    assert_int_equal(test_server_metric(&s, "provision_takes_early_total"), 20);
    usleep(600 * 1000);
    assert_int_equal(msv_request_provision_take(c, TEST_TIMEOUT_MS, &msg, &len, &why),
                     MSV_ERR_NOT_FOUND);
    msv_identity_free(id);
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/*
 * An authentication that fails under a handle whose account was deleted says so whatever device
 * id it names. Before, the answer told whether the id was another account's approved device
 * ("authentication failed") or not ("this account was deleted"): anyone could find, without an
 * account, which device ids exist.
 */
static void test_auth_names_no_device(void **state)
{
    struct test_server s;
    struct test_device alice, bob;
    struct msv_refusal why = {0};
    uint64_t ids[2];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &alice);
    test_register(&s, "bob@example.org", &bob);
    assert_int_equal(msv_request_account_delete(bob.conn, TEST_PASSWORD, TEST_TIMEOUT_MS, &why),
                     MSV_OK);
    ids[0] = alice.device_id; /* exists, approved, another account's */
    ids[1] = alice.device_id + 1000;
    for (int i = 0; i < 2; i++) {
        struct msv_conn *c = test_connect(&s);
        char words[200] = "";
        msv_err err = msv_conn_auth(c, "bob@example.org", ids[i], bob.id, TEST_TIMEOUT_MS, words,
                                    sizeof(words));

        if (err != MSV_ERR_NOT_FOUND)
            fail_msg("device %d: %s (%s)", i, msv_strerror(err), words);
        msv_conn_close(c);
    }
    test_device_free(&alice);
    test_device_free(&bob);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_online_and_offline_delivery),
        cmocka_unit_test(test_queue_sync),
        cmocka_unit_test(test_queue_sync_under_inflow),
        cmocka_unit_test(test_stale_device_list_and_limits),
        cmocka_unit_test(test_stale_answer_names_what_changed),
        cmocka_unit_test(test_device_change_notices),
        cmocka_unit_test(test_requests_only_connections),
        cmocka_unit_test(test_device_approval),
        cmocka_unit_test(test_lookup_rate_limit),
        cmocka_unit_test(test_probes_cost_lookups),
        cmocka_unit_test(test_report_usernames_bounded),
        cmocka_unit_test(test_prekey_uploads_bounded),
        cmocka_unit_test(test_unauthenticated_and_malformed),
        cmocka_unit_test(test_report_request),
        cmocka_unit_test(test_registration_errors),
        cmocka_unit_test(test_expiry_with_clock),
        cmocka_unit_test(test_attachment_expiry),
        cmocka_unit_test(test_reload_on_sighup),
        cmocka_unit_test(test_restart_keeps_queue),
        cmocka_unit_test(test_attachments),
        cmocka_unit_test(test_pipelined_requests_are_all_answered),
        cmocka_unit_test(test_bad_input_catalogue),
        cmocka_unit_test(test_connection_flood),
        cmocka_unit_test(test_slow_authentication),
        cmocka_unit_test(test_tls_handshake_deadline),
        cmocka_unit_test(test_accept_out_of_descriptors),
        cmocka_unit_test(test_http_accept_out_of_descriptors),
        cmocka_unit_test(test_transparency),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_start_on_full_disk),
        cmocka_unit_test(test_prekeys_and_sealed_sender),
        cmocka_unit_test(test_provision_take_paced),
        cmocka_unit_test(test_auth_names_no_device),
        cmocka_unit_test(test_suites_per_device),
        cmocka_unit_test(test_log_read_rate),
        cmocka_unit_test(test_log_read_names_no_handle),
        cmocka_unit_test(test_device_of_another_account),
        cmocka_unit_test(test_signed_approvals),
        cmocka_unit_test(test_log_read_v4_names_no_handle),
        cmocka_unit_test(test_big_account_answers),
        cmocka_unit_test(test_revoked_connections_closed),
        cmocka_unit_test(test_health_and_metrics),
        cmocka_unit_test(test_handles_and_from_handle),
        cmocka_unit_test(test_usernames),
        cmocka_unit_test(test_first_prekeys),
    };

    if (msv_init() != MSV_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);       /* servers are killed under the clients' feet */
    if (getenv("MSV_TEST") != NULL) /* one test by name (or a pattern), for a closer look */
        cmocka_set_test_filter(getenv("MSV_TEST"));
    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
