/*
 * missived's quotas and abuse limits, end to end against real server
 * processes: verification codes and handles, prekey claims, send rates and
 * queue caps, attachment quotas. Each test performs the abuse and checks that
 * it is refused with a clear error, that nothing else changed, and that the
 * refusal is counted in /metrics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "server_harness.h"

static msv_frame *register_start(struct msv_conn *c, const char *handle)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RegisterStart start = MSV__WIRE__REGISTER_START__INIT;

    start.handle.data = (uint8_t *)handle;
    start.handle.len = strlen(handle);
    req.body_case = MSV__WIRE__FRAME__BODY_REGISTER_START;
    req.register_start = &start;
    return test_request(c, &req);
}

static msv_frame *register_finish(struct msv_conn *c, const char *handle, const char *code)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RegisterFinish fin = MSV__WIRE__REGISTER_FINISH__INIT;
    Msv__Wire__NewDevice nd = MSV__WIRE__NEW_DEVICE__INIT;
    struct msv_identity *id = NULL;
    msv_frame *r;
    size_t len = 0;

    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &id), MSV_OK);
    nd.suite = MSV_SUITE_MODERN;
    nd.identity.data = (uint8_t *)msv_public_identity_bytes(msv_identity_public(id), &len);
    nd.identity.len = len;
    fin.handle.data = (uint8_t *)handle;
    fin.handle.len = strlen(handle);
    fin.code.data = (uint8_t *)code;
    fin.code.len = strlen(code);
    fin.password.data = (uint8_t *)TEST_PASSWORD;
    fin.password.len = strlen(TEST_PASSWORD);
    fin.device = &nd;
    req.body_case = MSV__WIRE__FRAME__BODY_REGISTER_FINISH;
    req.register_finish = &fin;
    r = test_request(c, &req);
    msv_identity_free(id);
    return r;
}

/* How many verification codes the server logged for handle. */
static int codes_logged(struct test_server *s, const char *handle)
{
    char line[1024], want[128];
    FILE *f = fopen(s->log, "r");
    int n = 0;

    assert_non_null(f);
    snprintf(want, sizeof(want), "event=verification_code handle=%s code=", handle);
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, want) != NULL;
    fclose(f);
    return n;
}

/*
 * The loopback address this process's next IPv4 connections come from (NULL: the kernel's
 * choice, 127.0.0.1), so that one test can play clients at several addresses: connect() is
 * taken over here, and binds the socket first. The server itself stays on 127.0.0.1.
 */
static const char *source_address;

int connect(int fd, const struct sockaddr *to, socklen_t len)
{
    if (source_address != NULL && to->sa_family == AF_INET) {
        struct sockaddr_in from = {.sin_family = AF_INET};

        if (inet_pton(AF_INET, source_address, &from.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0)
            return -1;
    }
    return (int)syscall(SYS_connect, fd, to, len);
}

static struct msv_conn *connect_from(struct test_server *s, const char *address)
{
    struct msv_conn *c;

    source_address = address;
    c = test_connect(s);
    source_address = NULL;
    return c;
}

/* A 6-digit code that is not code. */
static void wrong_code(const char code[7], char out[7])
{
    memcpy(out, code, 7);
    out[0] = out[0] == '9' ? '0' : (char)(out[0] + 1);
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * One account adding devices it never approves: past 8 waiting at once the server refuses the
 * next (ERROR_TOO_BIG, nothing added, counted). Before, nothing bounded them, and each took a
 * notice of every later change of the account's devices: n devices left about n * n / 2 notices,
 * which no cap on the queues counted, in queues nobody read.
 */
static void test_pending_devices_bounded(void **state)
{
    struct test_server s;
    struct test_device alice, pending[9];
    struct msv_refusal why = {0};
    struct msv_identity *id = NULL;
    struct msv_conn *c;
    uint64_t device = 0;

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 100\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &alice);
    for (int i = 0; i < 8; i++)
        test_enroll_pending(&s, "alice@example.org", &pending[i]);
    c = test_connect(&s);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &id), MSV_OK);
    assert_int_not_equal(msv_request_add_device(c, "alice@example.org", TEST_PASSWORD, id, NULL,
                                                "token", TEST_TIMEOUT_MS, &device, &why),
                         MSV_OK);
    assert_int_equal(why.code, MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_non_null(strstr(why.message, "8 devices waiting for approval"));
    assert_int_equal(test_server_metric(&s, "devices_refused_full_total"), 1);
    assert_int_equal(test_server_metric(&s, "devices_added_total"), 9);
    /* nor by QR code: the device waiting at an address is refused too */
    {
        struct msv_conn *waiting = test_connect(&s);
        struct msv_identity *other = NULL;
        msv_frame *linked = NULL;
        uint8_t address[16];

        assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &other), MSV_OK);
        assert_int_equal(
            msv_request_provision_open(waiting, other, NULL, TEST_TIMEOUT_MS, address, &why),
            MSV_OK);
        assert_int_not_equal(
            msv_request_link_device(alice.conn, address, TEST_TIMEOUT_MS, &linked, &why), MSV_OK);
        assert_null(linked);
        assert_int_equal(why.code, MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
        assert_int_equal(test_server_metric(&s, "devices_refused_full_total"), 2);
        msv_identity_free(other);
        msv_conn_close(waiting);
    }
    assert_int_equal(test_server_metric(&s, "devices_added_total"), 9);
    /* one removed makes room */
    test_expect_ok(test_remove_device(&alice, pending[0].device_id));
    test_enroll_pending(&s, "alice@example.org", &pending[8]);
    msv_identity_free(id);
    msv_conn_close(c);
    test_device_free(&alice);
    for (int i = 0; i < 9; i++)
        test_device_free(&pending[i]);
    test_server_cleanup(&s);
}

/*
 * A second RegisterStart for a handle whose code is pending changes nothing
 * and sends nothing: the first code still registers.
 */
static void test_pending_code_is_kept(void **state)
{
    struct test_server s;
    struct msv_conn *c;
    char code[7];

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 100\n");
    test_server_start(&s);
    c = test_connect(&s);
    test_expect_ok(register_start(c, "carol@example.org"));
    test_server_code(&s, "carol@example.org", code);
    /* someone else asks again for carol: refused, no second code */
    test_expect_error(register_start(c, "carol@example.org"),
                      MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    test_expect_error(register_start(c, "Carol@Example.org"),
                      MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(codes_logged(&s, "carol@example.org"), 1);
    assert_int_equal(test_server_metric(&s, "codes_refused_total"), 2);
    /* carol's code still works */
    {
        msv_frame *r = register_finish(c, "carol@example.org", code);

        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_REGISTERED);
        msv_frame_free(r);
    }
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/*
 * Wrong codes from one address are cut off after code_guesses_per_address (5), and the code
 * survives them: a stranger cannot spoil the owner's registration by guessing.
 */
static void test_wrong_codes_keep_the_code(void **state)
{
    struct test_server s;
    struct msv_conn *c, *stranger;
    char code[7], wrong[7];
    msv_frame *r;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    c = test_connect(&s);
    test_expect_ok(register_start(c, "frank@example.org"));
    test_server_code(&s, "frank@example.org", code);
    wrong_code(code, wrong);
    stranger = connect_from(&s, "127.0.0.2");
    for (int i = 0; i < 5; i++)
        test_expect_error(register_finish(stranger, "frank@example.org", wrong),
                          MSV__WIRE__ERROR_CODE__ERROR_AUTH);
    /* the sixth is not even checked: the right code would be refused as well */
    test_expect_error(register_finish(stranger, "frank@example.org", code),
                      MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(test_server_metric(&s, "code_guesses_refused_total"), 1);
    /* the owner, elsewhere, still registers with the code */
    r = register_finish(c, "frank@example.org", code);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_REGISTERED);
    msv_frame_free(r);
    msv_conn_close(stranger);
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/*
 * Wrong codes for one handle from all addresses together stop at code_guesses_per_handle (20)
 * a code's lifetime, which bounds guessing from many addresses; the allowance comes back over
 * the code's 10 minutes and the code is still good.
 */
static void test_wrong_codes_per_handle(void **state)
{
    static const char *const from[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
    struct test_server s;
    struct msv_conn *c;
    char code[7], wrong[7];
    int64_t t0 = wall_ms();
    msv_frame *r;

    (void)state;
    test_server_init(&s, NULL);
    test_server_set_clock(&s, t0);
    test_server_start(&s);
    c = test_connect(&s);
    test_expect_ok(register_start(c, "gina@example.org"));
    test_server_code(&s, "gina@example.org", code);
    msv_conn_close(c);
    wrong_code(code, wrong);
    for (size_t k = 0; k < 4; k++) {
        c = connect_from(&s, from[k]);
        for (int i = 0; i < 5; i++)
            test_expect_error(register_finish(c, "gina@example.org", wrong),
                              MSV__WIRE__ERROR_CODE__ERROR_AUTH);
        msv_conn_close(c);
    }
    c = connect_from(&s, "127.0.0.6");
    test_expect_error(register_finish(c, "gina@example.org", wrong),
                      MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    msv_conn_close(c);
    /* others' handles are not affected */
    c = test_connect(&s);
    test_expect_ok(register_start(c, "hank@example.org"));
    test_expect_error(register_finish(c, "hank@example.org", "000000"),
                      MSV__WIRE__ERROR_CODE__ERROR_AUTH);
    msv_conn_close(c);
    /* five minutes on, half the allowance is back, and the code still registers */
    test_server_set_clock(&s, t0 + 5 * 60 * 1000);
    c = test_connect(&s);
    r = register_finish(c, "gina@example.org", code);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_REGISTERED);
    msv_frame_free(r);
    assert_int_equal(test_server_metric(&s, "code_guesses_refused_total"), 1);
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/* A handle gets codes_per_handle_per_day codes a day, whoever asks. */
static void test_codes_per_handle(void **state)
{
    struct test_server s;
    struct msv_conn *c;
    int64_t t0 = wall_ms();

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 100\ncodes_per_handle_per_day = 2\n");
    test_server_set_clock(&s, t0);
    test_server_start(&s);
    c = test_connect(&s);
    /* dave: one code, it expires, a second one; the third of the day is refused */
    test_expect_ok(register_start(c, "dave@example.org"));
    /* (an unauthenticated connection does not outlive a clock moved by minutes) */
    msv_conn_close(c);
    test_server_set_clock(&s, t0 + 11 * 60 * 1000);
    c = test_connect(&s);
    test_expect_ok(register_start(c, "dave@example.org"));
    msv_conn_close(c);
    test_server_set_clock(&s, t0 + 22 * 60 * 1000);
    c = test_connect(&s);
    test_expect_error(register_start(c, "dave@example.org"),
                      MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(codes_logged(&s, "dave@example.org"), 2);
    /* others are not affected */
    test_expect_ok(register_start(c, "erin@example.org"));
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/* Handles outside the grammar are refused before anything is stored or sent. */
static void test_handle_grammar(void **state)
{
    static const char *const bad[] = {
        "-rf@example.org",  /* an option to whatever reads it */
        "a;id@example.org", /* shell metacharacters */
        "a$(id)@example.org",
        "a`id`@example.org",
        "a|b@example.org",
        "a b@example.org",
        "a\"b@example.org",
        "a'b@example.org",
        "a*@example.org",
        "a\\b@example.org",
        ".a@example.org",
        "a@-example.org",
        "a@example-.org",
        "a@example..org",
        "a@.example.org",
        "a@example.org.",
        "a@b@example.org",
        "@example.org",
        "alice@",
        "+12345",
        "+12345678901234567",
        "+1234567a",
        "alice@ex\xd0\xb0mple.org", /* a Cyrillic a: looks like example.org */
        "\xc3\xa9lise@example.org", /* non-ASCII */
        "a\xcc\x81@example.org",    /* a and a combining accent: not NFC-stable */
    };
    static const char *const good[] = {"a@x", "first.last+tag@mail.example.org", "O-K_1@a-b.c",
                                       "+4915112345678"};
    struct test_server s;
    struct msv_conn *c;

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 100\n");
    test_server_start(&s);
    c = test_connect(&s);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msv_frame *r = register_start(c, bad[i]);

        if (test_error_code(r) != MSV__WIRE__ERROR_CODE__ERROR_INVALID)
            fail_msg("handle \"%s\" was not refused", bad[i]);
        msv_frame_free(r);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        test_expect_ok(register_start(c, good[i]));
    assert_int_equal(test_server_metric(&s, "registrations_total"), 0);
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/* A verification hook in s's directory, a shell script running body; its path in hook. */
static void hook_written(struct test_server *s, const char *body, char hook[128])
{
    FILE *f;

    snprintf(hook, 128, "%s/hook.sh", s->dir);
    f = fopen(hook, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s", body);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(hook, 0700), 0);
}

/* The hook gets "--" before the handle, so a handle can never be read as an option. */
static void test_hook_arguments(void **state)
{
    struct test_server s;
    struct msv_conn *c;
    char extra[512], hook[128], out[128], body[512], got[256] = "";
    FILE *f;

    (void)state;
    test_server_init(&s, NULL);
    snprintf(out, sizeof(out), "%s/hook.out", s.dir);
    snprintf(body, sizeof(body), "printf '%%s|' \"$@\" > %s.tmp && mv %s.tmp %s\n", out, out, out);
    hook_written(&s, body, hook);
    snprintf(extra, sizeof(extra), "[accounts]\nverification = hook\nverification_hook = %s\n",
             hook);
    snprintf(s.extra, sizeof(s.extra), "%s", extra);
    test_server_start(&s);
    c = test_connect(&s);
    test_expect_ok(register_start(c, "frank@example.org"));
    for (int i = 0; i < 100 && (f = fopen(out, "r")) == NULL; i++)
        usleep(50 * 1000);
    assert_non_null(f);
    assert_non_null(fgets(got, sizeof(got), f));
    fclose(f);
    assert_int_equal(strncmp(got, "--|frank@example.org|", 21), 0);
    assert_int_equal(strlen(got), 21 + 7);
    /* the code goes to the hook alone: never to the log (anyone reading it could register) */
    assert_int_equal(codes_logged(&s, "frank@example.org"), 0);
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/*
 * A hook that hangs (a mail server that never answers), asked for code after code: at most 32
 * run at once; the next request is refused and counted, nothing kept for it. Before, each
 * request left one more process running, without end.
 */
static void test_hooks_bounded(void **state)
{
    struct test_server s;
    struct msv_conn *c;
    char hook[128], handle[64];
    msv_frame *r;

    (void)state;
    test_server_init(&s, NULL);
    hook_written(&s, "exec sleep 30\n", hook);
    snprintf(s.extra, sizeof(s.extra),
             "[accounts]\nverification = hook\nverification_hook = %s\nregister_burst = 100\n",
             hook);
    test_server_start(&s);
    c = test_connect(&s);
    for (int i = 0; i < 32; i++) {
        snprintf(handle, sizeof(handle), "hung%d@example.org", i);
        test_expect_ok(register_start(c, handle));
    }
    r = register_start(c, "one.more@example.org");
    assert_int_equal(test_error_code(r), MSV__WIRE__ERROR_CODE__ERROR_IO);
    assert_non_null(strstr((const char *)r->error->message.data, "too many on their way"));
    msv_frame_free(r);
    assert_int_equal(test_server_metric(&s, "hooks_refused_total"), 1);
    msv_conn_close(c);
    test_server_cleanup(&s);
}

/* d publishes a signed prekey (id 1) and n one-time prekeys (ids 2...); returns how many it holds.
 */
static uint32_t publish_prekeys(struct test_device *d, size_t n)
{
    struct msv_prekey keys[16];
    struct msv_refusal why = {0};
    struct msv_prekey_counts held = {0};
    uint8_t sig[64];

    assert_true(n < 16);
    for (size_t i = 0; i <= n; i++)
        assert_int_equal(msv_prekey_generate(d->id, (uint32_t)i + 1, &keys[i], i ? NULL : sig),
                         MSV_OK);
    assert_int_equal(msv_request_prekey_upload(d->conn,
                                               &(struct msv_prekey_set){.signed_key = &keys[0],
                                                                        .signed_sig = sig,
                                                                        .one_time = keys + 1,
                                                                        .n_one_time = n},
                                               TEST_TIMEOUT_MS, &held, &why),
                     MSV_OK);
    return held.one_time_left;
}

/* Claims the prekeys of n devices from d; returns the first bundle's one-time id (0: none). */
static uint32_t claim(struct test_device *d, const uint64_t *ids, size_t n, int *error)
{
    struct msv_refusal why = {0};
    msv_frame *r = NULL;
    uint32_t one_time = 0;
    msv_err err = msv_request_prekey_claim(d->conn, ids, n, 0, TEST_TIMEOUT_MS, &r, &why);

    *error = err == MSV_OK ? 0 : (int)why.code;
    if (err == MSV_OK) {
        assert_true(r->prekey_bundles->n_bundles >= 1);
        assert_non_null(r->prekey_bundles->bundles[0]->signed_);
        if (r->prekey_bundles->bundles[0]->one_time != NULL)
            one_time = r->prekey_bundles->bundles[0]->one_time->id;
    }
    msv_frame_free(r);
    return one_time;
}

/*
 * Draining a device's one-time prekeys: a claim naming it twice is refused
 * and takes nothing; claiming it again within the interval gives the signed
 * prekey alone; another account, or the same after the interval, gets one.
 */
static void test_prekey_claims(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1;
    uint64_t twice[64];
    int64_t t0 = wall_ms();
    int error = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_set_clock(&s, t0);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    assert_int_equal(publish_prekeys(&b1, 10), 10);
    for (size_t i = 0; i < 64; i++)
        twice[i] = b1.device_id;
    assert_int_equal(claim(&a1, twice, 64, &error), 0);
    assert_int_equal(error, MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    assert_int_equal(claim(&a1, twice, 2, &error), 0);
    assert_int_equal(error, MSV__WIRE__ERROR_CODE__ERROR_INVALID);
    assert_int_equal(publish_prekeys(&b1, 0), 10);
    assert_int_equal(test_server_metric(&s, "prekey_claims_refused_total"), 2);
    /* one one-time prekey for alice; then the signed prekey alone, however often she asks */
    assert_int_equal(claim(&a1, &b1.device_id, 1, &error), 2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(claim(&a1, &b1.device_id, 1, &error), 0);
        assert_int_equal(error, 0);
    }
    assert_int_equal(publish_prekeys(&b1, 0), 9);
    assert_int_equal(test_server_metric(&s, "prekey_claims_throttled_total"), 5);
    assert_int_equal(test_server_metric(&s, "rate_limited_total"), 0); /* none was refused */
    /* carol is another claimer */
    assert_int_equal(claim(&c1, &b1.device_id, 1, &error), 3);
    /* after the interval alice gets one again */
    test_server_set_clock(&s, t0 + 301 * 1000);
    assert_int_equal(claim(&a1, &b1.device_id, 1, &error), 4);
    assert_int_equal(publish_prekeys(&b1, 0), 7);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

static size_t queued_count(struct test_server *s)
{
    struct test_queued *rows = NULL;
    size_t n = test_server_queued(s, &rows);

    test_queued_free(rows, n);
    return n;
}

/*
 * Filling an offline device's queue: past queue_max_envelopes or
 * queue_max_bytes a send is refused whole ("the recipient's queue is full"),
 * nothing queued before is dropped, and the queue takes more once the device
 * has acknowledged some. An account's envelope rate is limited (send_rate).
 */
static void test_queue_caps_and_send_rate(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1;
    struct test_device *bob[1] = {&b1}, *carol[1] = {&c1};
    const char *bob_h[1] = {"bob@example.org"}, *carol_h[1] = {"carol@example.org"};
    char big[3001];
    uint64_t q;

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    test_server_init(&s, "[relay]\nqueue_max_envelopes = 3\nqueue_max_bytes = 4096\n"
                         "send_rate = 0.01\nsend_burst = 6\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    for (int i = 0; i < 3; i++)
        test_expect_ok(test_send(&a1, bob_h, 1, bob, 1, "small"));
    test_expect_error(test_send(&a1, bob_h, 1, bob, 1, "one too many"),
                      MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    /* the three, and the server's notice to bob's account that a send to it was refused */
    assert_int_equal(queued_count(&s), 4);
    assert_int_equal(test_server_metric(&s, "queue_full_total"), 1);
    assert_int_equal(test_server_metric(&s, "quota_notices_total"), 1);
    /* bob reads and acknowledges everything: room again */
    test_device_connect(&s, &b1);
    for (int i = 0; i < 3; i++) {
        q = test_expect_message(&b1, &a1, "small", TEST_TIMEOUT_MS);
        assert_true(q != 0);
        test_ack(&b1, q);
    }
    /* the notice, if it came after them, is acknowledged too (no message is left) */
    assert_int_equal(test_expect_message(&b1, &a1, "", 500), 0);
    for (int i = 0; i < 50 && queued_count(&s) != 0; i++)
        usleep(50 * 1000);
    assert_int_equal(queued_count(&s), 0);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    /* bytes: one envelope of 3 KB fits in 4 KiB, a second does not */
    test_expect_ok(test_send(&a1, bob_h, 1, bob, 1, big));
    test_expect_error(test_send(&a1, bob_h, 1, bob, 1, big), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_int_equal(queued_count(&s), 1);
    assert_int_equal(test_server_metric(&s, "queue_full_total"), 2);
    /* the rate: sends refused for full queues keep their tokens (before, they were free, and
     * a flood of them to a full queue went at any rate), so alice's 6 are spent */
    test_expect_error(test_send(&a1, carol_h, 1, carol, 1, "7"),
                      MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(test_server_metric(&s, "sends_rate_limited_total"), 1);
    assert_int_equal(queued_count(&s), 1);
    /* another account is not slowed down */
    test_expect_ok(test_send(&c1, (const char *[]){"alice@example.org"}, 1,
                             (struct test_device *[]){&a1}, 1, "hi"));
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

/* An Ok that names device (0: none) alone as left out for its full queue. */
static void expect_ok_left_out(msv_frame *f, uint64_t device)
{
    if (f->body_case != MSV__WIRE__FRAME__BODY_OK)
        fail_msg("expected Ok, got body %d (error %d)", f->body_case, test_error_code(f));
    assert_int_equal(f->ok->n_full_devices, device != 0);
    if (device != 0)
        assert_int_equal(f->ok->full_devices[0], device);
    msv_frame_free(f);
}

/*
 * A send to several devices one of whose queues is full leaves that device out: the others
 * get theirs, the sender learns which device was left out (Ok.full_devices) and gets its token
 * back, the device's account is told; a send whose every device is full is refused whole and
 * names them (Error.full_devices). Before, one full queue refused the whole send, so that one
 * device left unread stopped every message to a group, or to its owner's other devices.
 */
static void test_full_device_left_out(void **state)
{
    struct test_server s;
    struct test_device a1, b1, c1;
    struct test_device *bob[1] = {&b1}, *both[2] = {&b1, &c1};
    const char *bob_h[1] = {"bob@example.org"},
               *both_h[2] = {"bob@example.org", "carol@example.org"};
    const char *carol_h[1] = {"carol@example.org"};
    struct test_device *carol[1] = {&c1};
    msv_frame *r;
    uint64_t q;

    (void)state;
    test_server_init(&s, "[relay]\nqueue_max_envelopes = 2\nsend_rate = 0.01\nsend_burst = 6\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    test_register(&s, "carol@example.org", &c1);
    msv_conn_close(b1.conn); /* bob is away: his queue fills */
    b1.conn = NULL;
    for (int i = 0; i < 2; i++)
        expect_ok_left_out(test_send(&a1, bob_h, 1, bob, 1, "for bob"), 0);
    /* bob's device left out, carol's copy queued */
    expect_ok_left_out(test_send(&a1, both_h, 2, both, 2, "to both"), b1.device_id);
    q = test_expect_message(&c1, &a1, "to both", TEST_TIMEOUT_MS);
    assert_true(q != 0);
    test_ack(&c1, q);
    for (int k = 0; k < 100 && queued_count(&s) > 3; k++)
        usleep(20 * 1000);
    assert_int_equal(queued_count(&s), 3);
    assert_int_equal(test_server_metric(&s, "envelopes_left_out_total"), 1);
    assert_int_equal(test_server_metric(&s, "queue_full_total"), 0);    /* nothing refused */
    assert_int_equal(test_server_metric(&s, "quota_notices_total"), 1); /* bob's account told */
    /* every device full: refused whole, the devices named */
    r = test_send(&a1, bob_h, 1, bob, 1, "bob alone");
    assert_int_equal(test_error_code(r), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_int_equal(r->error->n_full_devices, 1);
    assert_int_equal(r->error->full_devices[0], b1.device_id);
    msv_frame_free(r);
    assert_int_equal(test_server_metric(&s, "queue_full_total"), 1);
    /* tokens: 2 + (2 - 1 given back) + 1 of 6 spent (the refused send keeps its own): 2 left
     * (carol reads each, and her acknowledgement is committed before the next) */
    for (int i = 0; i < 2; i++) {
        expect_ok_left_out(test_send(&a1, carol_h, 1, carol, 1, "to carol"), 0);
        q = test_expect_message(&c1, &a1, "to carol", TEST_TIMEOUT_MS);
        assert_true(q != 0);
        test_ack(&c1, q);
        for (int k = 0; k < 100 && queued_count(&s) > 3; k++) /* bob's two, his notice */
            usleep(20 * 1000);
    }
    test_expect_error(test_send(&a1, carol_h, 1, carol, 1, "one too many"),
                      MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    test_device_free(&a1);
    test_device_free(&b1);
    test_device_free(&c1);
    test_server_cleanup(&s);
}

/* BlobCreate of size from d; returns the answer (caller frees). */
static msv_frame *blob_create(struct test_device *d, uint64_t size)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobCreate create = MSV__WIRE__BLOB_CREATE__INIT;

    create.size = size;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CREATE;
    req.blob_create = &create;
    return test_request(d->conn, &req);
}

/* Creates an upload of size bytes; its id goes to id. */
static void blob_open(struct test_device *d, uint64_t size, uint8_t id[32])
{
    msv_frame *r = blob_create(d, size);

    if (r->body_case != MSV__WIRE__FRAME__BODY_BLOB_CREATED)
        fail_msg("BlobCreate of %llu refused (error %d)", (unsigned long long)size,
                 test_error_code(r));
    memcpy(id, r->blob_created->blob_id.data, 32);
    msv_frame_free(r);
}

/* Uploads len bytes (one chunk) to blob id. */
static void blob_upload(struct test_device *d, const uint8_t id[32], const uint8_t *data,
                        size_t len)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobChunk chunk = MSV__WIRE__BLOB_CHUNK__INIT;
    msv_frame *r;

    chunk.blob_id = (ProtobufCBinaryData){32, (uint8_t *)id};
    chunk.data = (ProtobufCBinaryData){len, (uint8_t *)data};
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CHUNK;
    req.blob_chunk = &chunk;
    r = test_request(d->conn, &req);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_PROGRESS);
    msv_frame_free(r);
}

/* Uploads size bytes to blob id in chunks. */
static void blob_upload_all(struct test_device *d, const uint8_t id[32], const uint8_t *data,
                            size_t size)
{
    const size_t chunk = 200000;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;

    for (size_t off = 0; off < size; off += chunk) {
        Msv__Wire__BlobChunk ch = MSV__WIRE__BLOB_CHUNK__INIT;
        msv_frame *r;

        ch.blob_id = (ProtobufCBinaryData){32, (uint8_t *)id};
        ch.offset = off;
        ch.data =
            (ProtobufCBinaryData){size - off < chunk ? size - off : chunk, (uint8_t *)data + off};
        req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CHUNK;
        req.blob_chunk = &ch;
        r = test_request(d->conn, &req);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_PROGRESS);
        msv_frame_free(r);
    }
}

/* 1 if blob id is finished (BlobStatus). */
static int blob_complete(struct test_device *d, const uint8_t id[32])
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobStatus status = MSV__WIRE__BLOB_STATUS__INIT;
    msv_frame *r;
    int complete;

    status.blob_id = (ProtobufCBinaryData){32, (uint8_t *)id};
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_STATUS;
    req.blob_status = &status;
    r = test_request(d->conn, &req);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_PROGRESS);
    complete = r->blob_progress->complete;
    msv_frame_free(r);
    return complete;
}

static void blob_finish_frame(Msv__Wire__Frame *req, Msv__Wire__BlobFinish *fin,
                              const uint8_t id[32], const uint8_t sha[32])
{
    msv__wire__blob_finish__init(fin);
    fin->blob_id = (ProtobufCBinaryData){32, (uint8_t *)id};
    fin->sha256 = (ProtobufCBinaryData){32, (uint8_t *)sha};
    req->body_case = MSV__WIRE__FRAME__BODY_BLOB_FINISH;
    req->blob_finish = fin;
}

/* BlobFinish naming sha; returns the answer (caller frees). */
static msv_frame *blob_finish(struct test_device *d, const uint8_t id[32], const uint8_t sha[32])
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobFinish fin;

    blob_finish_frame(&req, &fin, id, sha);
    return test_request(d->conn, &req);
}

/*
 * Holding the attachment store: unfinished uploads per device, bytes per
 * device and per account are capped (ERROR_TOO_BIG, nothing created), and an
 * upload never finished is gone within unfinished_ttl_hours while finished
 * ones stay.
 */
static void test_attachment_quotas(void **state)
{
    struct test_server s;
    struct test_device a1, a2;
    uint8_t id1[32], id2[32], id3[32], sha[32], data[1000];
    int64_t t0 = wall_ms();

    (void)state;
    memset(data, 0x42, sizeof(data));
    SHA256(data, sizeof(data), sha);
    test_server_init(&s, "[blobs]\nmax_size = 100000\nopen_uploads_per_device = 2\n"
                         "bytes_per_device = 5000\nbytes_per_account = 8000\n"
                         "unfinished_ttl_hours = 1\n");
    test_server_set_clock(&s, t0);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_add_device(&s, "alice@example.org", &a1, &a2);
    blob_open(&a1, 1000, id1);
    blob_open(&a1, 1000, id2);
    test_expect_error(blob_create(&a1, 10), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_int_equal(test_server_metric(&s, "blobs_refused_total"), 1);
    /* a finished upload is no longer open, but its bytes still count */
    blob_upload(&a1, id1, data, sizeof(data));
    test_expect_ok(blob_finish(&a1, id1, sha));
    test_expect_error(blob_create(&a1, 3500), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    blob_open(&a1, 2900, id3);
    /* the account's other device: its own bytes are few, the account's are not */
    blob_open(&a2, 3000, id3);
    test_expect_error(blob_create(&a2, 200), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_int_equal(test_server_metric(&s, "blobs_refused_total"), 3);
    /* past the largest size: refused and counted as well */
    test_expect_error(blob_create(&a2, 100001), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_int_equal(test_server_metric(&s, "blobs_refused_total"), 4);
    /* an hour on, the three unfinished uploads are gone; the finished one stays */
    test_server_set_clock(&s, t0 + 61 * 60 * 1000);
    for (int i = 0; i < 50 && test_server_metric(&s, "blobs_expired_total") < 3; i++)
        usleep(100 * 1000);
    assert_int_equal(test_server_metric(&s, "blobs_expired_total"), 3);
    test_expect_ok(blob_finish(&a1, id1, sha)); /* (finished already: Ok) */
    test_expect_error(blob_finish(&a1, id2, sha), MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND);
    blob_open(&a2, 5000, id3);
    test_device_free(&a1);
    test_device_free(&a2);
    test_server_cleanup(&s);
}

/*
 * However small, each attachment is a file and a record: an account keeps at most
 * attachments_per_account at once (R67), so tiny uploads cannot fill the disk's inodes or the
 * database under a byte quota they barely touch. Removing the device that uploaded them frees
 * none of them: they stay the account's.
 */
static void test_attachment_count_bounded(void **state)
{
    struct test_server s;
    struct test_device a1, a2, b1;
    uint8_t id[32], sha[32], data[1] = {7};

    (void)state;
    SHA256(data, sizeof(data), sha);
    test_server_init(&s, "[blobs]\nattachments_per_account = 3\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_add_device(&s, "alice@example.org", &a1, &a2);
    test_register(&s, "bob@example.org", &b1);
    for (int i = 0; i < 3; i++) {
        blob_open(i < 2 ? &a2 : &a1, 1, id);
        blob_upload(i < 2 ? &a2 : &a1, id, data, sizeof(data));
        test_expect_ok(blob_finish(i < 2 ? &a2 : &a1, id, sha));
    }
    test_expect_error(blob_create(&a1, 1), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_int_equal(test_server_metric(&s, "blobs_refused_total"), 1);
    /* the device that uploaded two goes: they are still the account's */
    test_expect_ok(test_remove_device(&a1, a2.device_id));
    test_expect_error(blob_create(&a1, 1), MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG);
    assert_int_equal(test_server_metric(&s, "blobs_refused_total"), 2);
    /* another account's own bound */
    blob_open(&b1, 1, id);
    test_device_free(&a1);
    test_device_free(&a2);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * An upload published (renamed from .part) whose record's update then failed, or a crash
 * between the two: its finish made again succeeds from the published bytes and the
 * attachment can be read. Before, every finish read .part, found none and answered "storage
 * failed" until the upload expired.
 */
static void test_finish_after_publish(void **state)
{
    struct test_server s;
    struct test_device a1;
    uint8_t id[32], sha[32], data[1000];
    char hex[65], part[512], done[512];

    (void)state;
    memset(data, 0x5a, sizeof(data));
    SHA256(data, sizeof(data), sha);
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    blob_open(&a1, sizeof(data), id);
    blob_upload(&a1, id, data, sizeof(data));
    assert_int_equal(msv_hex_encode(id, 32, hex, sizeof(hex)), MSV_OK);
    snprintf(part, sizeof(part), "%s/data/blobs/%s.part", s.dir, hex);
    snprintf(done, sizeof(done), "%s/data/blobs/%s", s.dir, hex);
    assert_int_equal(rename(part, done), 0); /* published; the record still says unfinished */
    test_expect_ok(blob_finish(&a1, id, sha));
    test_expect_ok(blob_finish(&a1, id, sha));
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__BlobGet get = MSV__WIRE__BLOB_GET__INIT;
        msv_frame *r;

        get.blob_id = (ProtobufCBinaryData){32, id};
        get.length = sizeof(data);
        req.body_case = MSV__WIRE__FRAME__BODY_BLOB_GET;
        req.blob_get = &get;
        r = test_request(a1.conn, &req);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_BLOB_DATA);
        assert_int_equal(r->blob_data->data.len, sizeof(data));
        assert_memory_equal(r->blob_data->data.data, data, sizeof(data));
        msv_frame_free(r);
    }
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* The request id of the next answer on d's connection (pushes skipped); its error to *code. */
static uint64_t next_answer_code(struct test_device *d, int *code)
{
    for (;;) {
        msv_frame *f = NULL;
        uint64_t id;

        assert_int_equal(msv_conn_recv(d->conn, TEST_TIMEOUT_MS, &f), MSV_OK);
        id = f->request_id;
        *code = test_error_code(f);
        msv_frame_free(f);
        if (id != 0)
            return id;
    }
}

/* The same for an answer that must not be an error. */
static uint64_t next_answer(struct test_device *d)
{
    int code = 0;
    uint64_t id = next_answer_code(d, &code);

    if (code != 0)
        fail_msg("request %llu refused (error %d)", (unsigned long long)id, code);
    return id;
}

/*
 * BlobFinish reads and syncs the whole upload on a thread of its own: a
 * request sent right after it on the same connection is answered first.
 * Finishes whose bytes do not match are limited per device.
 */
static void test_blob_finish_off_loop_and_throttled(void **state)
{
    const size_t size = 16u << 20;
    struct test_server s;
    struct test_device a1;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobFinish fin;
    Msv__Wire__BlobStatus status = MSV__WIRE__BLOB_STATUS__INIT;
    uint8_t *data = malloc(size), id[32], sha[32], wrong[32] = {0};

    (void)state;
    assert_non_null(data);
    msv_random_bytes(data, size);
    SHA256(data, size, sha);
    test_server_init(&s, "[blobs]\nmax_size = 20000000\nfinish_fail_burst = 2\n"
                         "finish_fail_rate = 0.0001\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    blob_open(&a1, size, id);
    blob_upload_all(&a1, id, data, size);
    /* Finish, then Status at once: the status comes back while the 16 MiB are checked */
    blob_finish_frame(&req, &fin, id, sha);
    req.request_id = 1001;
    assert_int_equal(msv_conn_send(a1.conn, &req), MSV_OK);
    status.blob_id = (ProtobufCBinaryData){32, id};
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_STATUS;
    req.blob_status = &status;
    req.request_id = 1002;
    assert_int_equal(msv_conn_send(a1.conn, &req), MSV_OK);
    assert_int_equal(next_answer(&a1), 1002);
    assert_int_equal(next_answer(&a1), 1001);
    test_expect_ok(blob_finish(&a1, id, sha)); /* published: finished already */

    /* the connection goes while its upload is checked: published all the same */
    blob_open(&a1, size, id);
    blob_upload_all(&a1, id, data, size);
    blob_finish_frame(&req, &fin, id, sha);
    req.request_id = 1003;
    assert_int_equal(msv_conn_send(a1.conn, &req), MSV_OK);
    test_device_connect(&s, &a1);
    /* up to 20 s: the check of 16 MiB waits for the processors on a loaded machine */
    for (int i = 0; i < 400 && !blob_complete(&a1, id); i++)
        usleep(50 * 1000);
    assert_true(blob_complete(&a1, id));

    /* two finishes with a wrong SHA-256 are checked; the third is not even read */
    blob_open(&a1, 1000, id);
    blob_upload(&a1, id, data, 1000);
    test_expect_error(blob_finish(&a1, id, wrong), MSV__WIRE__ERROR_CODE__ERROR_AUTH);
    test_expect_error(blob_finish(&a1, id, wrong), MSV__WIRE__ERROR_CODE__ERROR_AUTH);
    test_expect_error(blob_finish(&a1, id, wrong), MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(test_server_metric(&s, "blob_finish_failed_total"), 3); /* the refusal too */
    /* a stop while a check runs waits for it and exits cleanly (test_server_cleanup) */
    blob_open(&a1, size, id);
    blob_upload_all(&a1, id, data, size);
    blob_finish_frame(&req, &fin, id, sha);
    req.request_id = 1004;
    assert_int_equal(msv_conn_send(a1.conn, &req), MSV_OK);
    free(data);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/*
 * finish_checks = 1: while one device's upload is checked, another device's
 * BlobFinish is refused with ERROR_RATE_LIMITED, and succeeds when retried.
 * (The two must overlap: tried up to three times with fresh uploads.)
 */
static void test_blob_finish_checks_at_once(void **state)
{
    const size_t size = 16u << 20;
    struct test_server s;
    struct test_device a1, b1;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobFinish fin;
    uint8_t *data = malloc(size), ida[32], idb[32], sha[32];
    int refused = 0, code_a = 0, code_b = 0;

    (void)state;
    assert_non_null(data);
    msv_random_bytes(data, size);
    SHA256(data, size, sha);
    test_server_init(&s, "[blobs]\nmax_size = 20000000\nfinish_checks = 1\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    test_register(&s, "bob@example.org", &b1);
    for (int attempt = 0; attempt < 3 && !refused; attempt++) {
        msv_frame *r;

        blob_open(&a1, size, ida);
        blob_upload_all(&a1, ida, data, size);
        blob_open(&b1, size, idb);
        blob_upload_all(&b1, idb, data, size);
        blob_finish_frame(&req, &fin, ida, sha);
        req.request_id = 2001;
        assert_int_equal(msv_conn_send(a1.conn, &req), MSV_OK);
        r = blob_finish(&b1, idb, sha);
        code_b = test_error_code(r);
        msv_frame_free(r);
        assert_int_equal(next_answer_code(&a1, &code_a), 2001);
        /* whichever came second was refused, and goes through when retried */
        refused = code_a == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED ||
                  code_b == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED;
        assert_true(code_a == 0 || code_b == 0);
        test_expect_ok(blob_finish(code_a != 0 ? &a1 : &b1, code_a != 0 ? ida : idb, sha));
    }
    assert_true(refused);
    assert_true(test_server_metric(&s, "blob_finish_busy_total") >= 1);
    free(data);
    test_device_free(&a1);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

/*
 * A check's place is free once its answer is sent: with one check at a time,
 * finishes sent each on the answer of the one before are all taken.
 */
static void test_blob_finish_answer_frees_its_check(void **state)
{
    enum { count = 64, size = 4096 };
    struct test_server s;
    struct test_device a1;
    uint8_t ids[count][32], data[size], sha[32];

    (void)state;
    msv_random_bytes(data, sizeof(data));
    SHA256(data, sizeof(data), sha);
    test_server_init(&s, "[blobs]\nfinish_checks = 1\nopen_uploads_per_device = 100\n");
    test_server_start(&s);
    test_register(&s, "alice@example.org", &a1);
    for (int i = 0; i < count; i++) {
        blob_open(&a1, size, ids[i]);
        blob_upload_all(&a1, ids[i], data, size);
    }
    for (int i = 0; i < count; i++)
        test_expect_ok(blob_finish(&a1, ids[i], sha));
    assert_int_equal(test_server_metric(&s, "blob_finish_busy_total"), 0);
    test_device_free(&a1);
    test_server_cleanup(&s);
}

/* Sealed sends (no account to charge) are held to the recipient's queue cap all the same. */
static void test_sealed_sends_hit_queue_cap(void **state)
{
    struct test_server s;
    struct test_device b1;
    struct msv_refusal why = {0};
    const char *bob = "bob@example.org";
    uint8_t token[16], id[16], env[64];
    struct msv_outgoing sealed = {0, MSV_ENVELOPE_SEALED, env, sizeof(env)};
    struct msv_conn *anon;

    (void)state;
    test_server_init(&s, "[relay]\nqueue_max_envelopes = 2\n");
    test_server_start(&s);
    test_register(&s, bob, &b1);
    msv_random_bytes(token, sizeof(token));
    msv_random_bytes(env, sizeof(env));
    assert_int_equal(msv_request_set_delivery_token(b1.conn, token, TEST_TIMEOUT_MS, &why), MSV_OK);
    msv_conn_close(b1.conn);
    b1.conn = NULL;
    sealed.device_id = b1.device_id;
    anon = test_connect(&s);
    for (int i = 0; i < 2; i++) {
        msv_random_bytes(id, sizeof(id));
        assert_int_equal(
            msv_request_send(anon, id, &bob, 1, &sealed, 1, token, TEST_TIMEOUT_MS, NULL, &why),
            MSV_OK);
    }
    msv_random_bytes(id, sizeof(id));
    assert_int_equal(
        msv_request_send(anon, id, &bob, 1, &sealed, 1, token, TEST_TIMEOUT_MS, NULL, &why),
        MSV_ERR_TOO_BIG);
    assert_non_null(strstr(why.message, "queue is full"));
    assert_int_equal(queued_count(&s), 3); /* the two, and the notice to bob's account */
    assert_int_equal(test_server_metric(&s, "queue_full_total"), 1);
    msv_conn_close(anon);
    test_device_free(&b1);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pending_code_is_kept),
        cmocka_unit_test(test_pending_devices_bounded),
        cmocka_unit_test(test_codes_per_handle),
        cmocka_unit_test(test_wrong_codes_keep_the_code),
        cmocka_unit_test(test_wrong_codes_per_handle),
        cmocka_unit_test(test_handle_grammar),
        cmocka_unit_test(test_hook_arguments),
        cmocka_unit_test(test_hooks_bounded),
        cmocka_unit_test(test_prekey_claims),
        cmocka_unit_test(test_queue_caps_and_send_rate),
        cmocka_unit_test(test_full_device_left_out),
        cmocka_unit_test(test_sealed_sends_hit_queue_cap),
        cmocka_unit_test(test_attachment_quotas),
        cmocka_unit_test(test_attachment_count_bounded),
        cmocka_unit_test(test_finish_after_publish),
        cmocka_unit_test(test_blob_finish_off_loop_and_throttled),
        cmocka_unit_test(test_blob_finish_checks_at_once),
        cmocka_unit_test(test_blob_finish_answer_frees_its_check),
    };

    if (getenv("MSV_TEST") != NULL)
        cmocka_set_test_filter(getenv("MSV_TEST"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
