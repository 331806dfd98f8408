/*
 * The receiving end of the message path against a real missived, when things
 * go wrong: the server goes away while a message is being taken, the
 * receiving process dies between storing a message and showing it, a server
 * floods the client with frames it did not ask for, and a server that never
 * answers. Each message is shown once and its delivery receipt goes once the
 * message is stored, whatever happens in between.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "client/client.h"
#include "missive/util.h"
#include "wire/frame.h"
#include "server_harness.h"

/* What a receive showed: messages by text, and receipts. */
struct seen {
    int messages, receipts;
    char last_text[128];
    struct test_server *kill_on_message; /* the server dies as the first message is shown */
};

static void on_incoming(void *ctx, const struct msv_incoming *in)
{
    struct seen *s = ctx;

    if (in->kind == MSV_INCOMING_MESSAGE) {
        s->messages++;
        snprintf(s->last_text, sizeof(s->last_text), "%s", in->message->text);
        if (s->kill_on_message != NULL)
            test_server_kill(s->kill_on_message);
        s->kill_on_message = NULL;
    } else if (in->kind == MSV_INCOMING_RECEIPT) {
        s->receipts++;
    }
}

/* A receive on a new connection: what the relay still holds comes again. */
static void receive_again(struct msv_client *c, struct seen *seen)
{
    size_t count = 0;

    msv_conn_close(c->conn);
    c->conn = NULL;
    assert_int_equal(msv_client_receive(c, 1000, on_incoming, seen, &count), MSV_OK);
}

/* bob showed alice's message id once, and alice got its delivery receipt. */
static void shown_once_and_receipted(struct msv_client *alice, struct msv_client *bob,
                                     const uint8_t id[16])
{
    struct seen seen = {0};
    struct msv_message_rec *m = NULL;

    receive_again(bob, &seen);
    assert_int_equal(seen.messages, 0); /* the redelivery is recognised */
    receive_again(alice, &seen);
    assert_int_equal(seen.receipts, 1);
    assert_int_equal(msv_client_db_message_get(alice->db, id, &m), MSV_OK);
    assert_string_equal(m->status, "delivered");
    msv_messages_free(m, 1);
    msv_client_close(alice);
    msv_client_close(bob);
}

/*
 * The server dies while a message is being taken, and stays away longer
 * than the delivery receipt's retries: the receive reports a lost
 * connection (it used to acknowledge on the connection the retries had
 * closed). Once the server is back, the message is not shown again, and the
 * receipt reaches the sender.
 */
static void test_server_gone_mid_receive(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    struct seen seen = {0};
    uint8_t id[16];
    size_t count = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", to[0]);
    test_acquaint(alice, bob); /* no message request: bob owes the delivery receipt */
    assert_int_equal(msv_client_send(alice, to, 1, "while the server dies", NULL, 0, NULL, id),
                     MSV_OK);
    seen.kill_on_message = &s;
    assert_int_equal(msv_client_receive(bob, 2000, on_incoming, &seen, &count), MSV_ERR_IO);
    assert_int_equal(seen.messages, 1);
    assert_string_equal(seen.last_text, "while the server dies");
    test_server_start(&s);
    shown_once_and_receipted(alice, bob, id);
    test_server_cleanup(&s);
}

/*
 * A server that takes the connection and then says nothing: the request
 * times out as an unreachable server (MSV_ERR_IO, which the command line
 * reports with exit status 4), not as a request for more input.
 */
static void test_silent_server(void **state)
{
    struct test_server s;
    struct test_device d;
    struct msv_conn *c;
    char why[64] = "";
    int status = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "carol@example.org", &d);
    c = test_connect(&s);
    assert_int_equal(kill(s.pid, SIGSTOP), 0);
    /* stopped once every thread is: until then, a worker scheduled before the one that takes
     * the signal (a loaded machine) still answers */
    assert_int_equal(waitpid(s.pid, &status, WUNTRACED), s.pid);
    assert_true(WIFSTOPPED(status));
    assert_int_equal(msv_conn_auth(c, d.handle, d.device_id, d.id, 300, why, sizeof(why)),
                     MSV_ERR_IO);
    assert_int_equal(kill(s.pid, SIGCONT), 0);
    msv_conn_close(c);
    test_device_free(&d);
    test_server_cleanup(&s);
}

static void exit_when_shown(void *ctx, const struct msv_incoming *in)
{
    (void)ctx;
    if (in->kind == MSV_INCOMING_MESSAGE)
        _exit(0); /* killed after the message was stored, before it was shown */
}

/*
 * The receiving process dies between storing a message and showing it. The
 * next receive shows it (the redelivery alone would be recognised as stored
 * and dropped) and sends the delivery receipt the dead process owed.
 */
static void test_killed_before_shown(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    struct seen seen = {0};
    char dir[128];
    uint8_t id[16];
    size_t count = 0;
    int status = 0;
    pid_t pid;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", to[0]);
    test_acquaint(alice, bob);
    msv_client_close(bob);
    assert_int_equal(msv_client_send(alice, to, 1, "shown at last", NULL, 0, NULL, id), MSV_OK);
    snprintf(dir, sizeof(dir), "%s/bob", s.dir);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (msv_client_open(dir, NULL, &bob) != MSV_OK ||
            msv_client_receive(bob, 2000, exit_when_shown, NULL, &count) != MSV_OK)
            _exit(2);
        _exit(3); /* nothing was shown */
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(msv_client_open(dir, NULL, &bob), MSV_OK);
    assert_int_equal(msv_client_receive(bob, 1000, on_incoming, &seen, &count), MSV_OK);
    assert_int_equal(seen.messages, 1);
    assert_int_equal(count, 1);
    assert_string_equal(seen.last_text, "shown at last");
    shown_once_and_receipted(alice, bob, id);
    test_server_cleanup(&s);
}

/* ---- a dishonest server, on the real server's certificate ------------------------------ */

struct flood {
    int frames;     /* how many pushes it sends */
    size_t size;    /* the ciphertext of each (0: an Ok frame instead of a Deliver) */
    size_t empty;   /* or else a lookup answer of this many empty results (2 bytes each) */
    int gap_ms;     /* between two */
    int unframed;   /* or else, to the first request, one byte that no frame starts with */
    int wrong_kind; /* or else, to the first request, a lookup answer under its request id */
    uint16_t port;  /* where it listens */
    pid_t pid;
};

static void flood_serve(struct test_server *s, int fd, const struct flood *fl)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Deliver d = MSV__WIRE__DELIVER__INIT;
    Msv__Wire__Ok ok = MSV__WIRE__OK__INIT;
    Msv__Wire__LookupResponse lookup = MSV__WIRE__LOOKUP_RESPONSE__INIT;
    Msv__Wire__HandleDevices none = MSV__WIRE__HANDLE_DEVICES__INIT;
    char cert[128], key[128], hello[256];
    uint8_t *junk = calloc(1, fl->size + 1), *wire = NULL;
    size_t len = 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL *ssl;
    int conn = accept(fd, NULL, NULL);

    snprintf(cert, sizeof(cert), "%s/data/server.crt", s->dir);
    snprintf(key, sizeof(key), "%s/data/server.key", s->dir);
    if (junk == NULL || ctx == NULL || conn < 0 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        _exit(2);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, conn);
    if (SSL_accept(ssl) != 1)
        _exit(3);
    if (fl->size > 0 || fl->empty > 0 || fl->unframed) { /* a request comes first; it is never
                                                            answered */
        if (SSL_read(ssl, hello, sizeof(hello)) <= 0)
            _exit(4);
    }
    if (fl->wrong_kind) { /* the first request read whole, answered with the wrong kind */
        uint8_t req[1 << 16];
        const uint8_t *body = NULL;
        size_t got = 0, body_len = 0, used = 0;
        msv_frame *asked = NULL;
        int n;

        while (msv_frame_split(req, got, sizeof(req), &body, &body_len, &used) == MSV_ERR_AGAIN &&
               got < sizeof(req) && (n = SSL_read(ssl, req + got, (int)(sizeof(req) - got))) > 0)
            got += (size_t)n;
        if (msv_frame_decode(body, body_len, &asked) != MSV_OK)
            _exit(6);
        f.request_id = asked->request_id;
        f.body_case = MSV__WIRE__FRAME__BODY_LOOKUP_RESULT;
        f.lookup_result = &lookup;
        if (msv_frame_encode(&f, MSV_FRAME_MAX_DEFAULT, &wire, &len) != MSV_OK ||
            SSL_write(ssl, wire, (int)len) != (int)len)
            _exit(7);
        while (SSL_read(ssl, hello, sizeof(hello)) > 0)
            ;
        _exit(0);
    }
    if (fl->unframed) { /* then says nothing more until the client hangs up */
        if (SSL_write(ssl, "", 1) != 1)
            _exit(5);
        while (SSL_read(ssl, hello, sizeof(hello)) > 0)
            ;
        _exit(0);
    }
    if (fl->empty > 0) {
        lookup.n_results = fl->empty;
        lookup.results = calloc(fl->empty, sizeof(*lookup.results));
        for (size_t i = 0; lookup.results != NULL && i < fl->empty; i++)
            lookup.results[i] = &none;
        f.body_case = MSV__WIRE__FRAME__BODY_LOOKUP_RESULT;
        f.lookup_result = &lookup;
    } else if (fl->size > 0) {
        d.queue_id = 1;
        d.ciphertext.data = junk;
        d.ciphertext.len = fl->size;
        f.body_case = MSV__WIRE__FRAME__BODY_DELIVER;
        f.deliver = &d;
    } else {
        f.body_case = MSV__WIRE__FRAME__BODY_OK;
        f.ok = &ok;
    }
    if (msv_frame_encode(&f, MSV_FRAME_MAX_DEFAULT, &wire, &len) != MSV_OK)
        _exit(5);
    for (int i = 0; i < fl->frames; i++) {
        struct timespec gap = {fl->gap_ms / 1000, (long)(fl->gap_ms % 1000) * 1000000L};

        if (SSL_write(ssl, wire, (int)len) != (int)len)
            break; /* the client hung up */
        nanosleep(&gap, NULL);
    }
    _exit(0);
}

/* Starts the dishonest server for one connection. */
static void flood_start(struct test_server *s, struct flood *fl)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    fl->port = ntohs(a.sin_port);
    fl->pid = fork();
    assert_true(fl->pid >= 0);
    if (fl->pid == 0)
        flood_serve(s, fd, fl);
    close(fd);
}

static void flood_stop(struct flood *fl)
{
    kill(fl->pid, SIGKILL);
    waitpid(fl->pid, NULL, 0);
}

/*
 * A server pushes frame after frame while a request waits for its answer
 * (100 MB here): the client keeps at most 16 MiB of them and drops the rest
 * unacknowledged, instead of holding all of it until the request times out.
 * The client runs in a child whose peak memory is measured.
 */
static void flooded_client(const struct flood *fl, long max_kib)
{
    struct test_server s;
    struct flood run = *fl;
    struct rusage ru;
    int status = 0;
    pid_t client;

    test_server_init(&s, NULL);
    test_server_start(&s);
    flood_start(&s, &run);
    client = fork();
    assert_true(client >= 0);
    if (client == 0) {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__Hello hello = MSV__WIRE__HELLO__INIT;
        struct msv_conn *c = NULL;
        msv_frame *resp = NULL, *f = NULL;

        req.body_case = MSV__WIRE__FRAME__BODY_HELLO;
        req.hello = &hello;
        if (msv_conn_open("127.0.0.1", run.port, s.fingerprint, TEST_TIMEOUT_MS, &c) != MSV_OK)
            _exit(10);
        /* the flood ends with the connection: no answer */
        if (msv_conn_request(c, &req, 60000, &resp) != MSV_ERR_IO)
            _exit(11);
        if (!msv_conn_has_dropped(c)) /* the rest comes again on a new connection */
            _exit(12);
        for (int kept = 0; msv_conn_recv(c, 100, &f) == MSV_OK; kept++) {
            msv_frame_free(f);
            if (kept >= 1024)
                _exit(13);
        }
        msv_conn_close(c);
        _exit(0);
    }
    assert_int_equal(wait4(client, &status, 0, &ru), client);
    flood_stop(&run);
    printf("peak memory of the flooded client: %ld KiB\n", ru.ru_maxrss);
#ifdef __SANITIZE_ADDRESS__
    /* the sanitizer's shadow memory and quarantine hold freed memory: the bound is looser */
    max_kib *= 8;
#endif
    assert_true(ru.ru_maxrss < max_kib);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    test_server_cleanup(&s);
}

/*
 * alice's sealed send to bob goes through a dishonest server that answers fl's way: the
 * connection is given up as a lost one, and the send goes again, sealed, on a new one to the
 * real server (then the caller's checks, with alice and the server given back).
 */
static void answer_keeps_sealed(struct test_server *s, struct flood *fl, struct msv_client **a,
                                struct msv_client **b)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct msv_client *alice, *bob;
    struct seen seen = {0};
    struct test_queued *rows = NULL;
    uint8_t id[16];
    size_t n;

    test_server_init(s, NULL);
    test_server_start(s);
    alice = test_client_for(s, "alice", "alice@example.org");
    bob = test_client_for(s, "bob", to_bob[0]);
    test_acquaint(alice, bob);
    /* alice learns bob's profile key from his receipt: her next send to him is sealed */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    receive_again(bob, &seen);
    receive_again(alice, &seen);
    assert_int_equal(seen.receipts, 1);
    flood_start(s, fl);
    msv_conn_close(alice->sealed_conn);
    alice->sealed_conn = NULL;
    assert_int_equal(
        msv_conn_open("127.0.0.1", fl->port, s->fingerprint, TEST_TIMEOUT_MS, &alice->sealed_conn),
        MSV_OK);
    alice->send_backoff_ms = 100;
    assert_int_equal(msv_client_send(alice, to_bob, 1, "sealed all the same", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(msv_client_unsealed_sends(alice), 0);
    n = test_server_queued(s, &rows);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].device_id, bob->device_id);
    assert_int_equal(rows[0].sender_device, 0); /* sealed: the relay knows no sender */
    test_queued_free(rows, n);
    receive_again(bob, &seen);
    assert_string_equal(seen.last_text, "sealed all the same");
    flood_stop(fl);
    *a = alice;
    *b = bob;
}

/*
 * A server whose answer cannot be framed (its first byte is not the protocol's version). Before,
 * the byte, never consumed, read as "this device cannot open sealed envelopes" at every later
 * request: the message went unsealed, told to nobody, and so did every later sealed send on
 * that connection.
 */
static void test_unframed_answer_keeps_sealed(void **state)
{
    struct test_server s;
    struct flood fl = {.unframed = 1};
    struct msv_client *alice, *bob;
    msv_frame *resp = NULL;

    (void)state;
    answer_keeps_sealed(&s, &fl, &alice, &bob);
    /* and a connection past such a byte fails every request as a lost one, at once */
    flood_start(&s, &fl);
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__Hello hello = MSV__WIRE__HELLO__INIT;
        struct msv_conn *c = NULL;
        int64_t started;

        req.body_case = MSV__WIRE__FRAME__BODY_HELLO;
        req.hello = &hello;
        assert_int_equal(msv_conn_open("127.0.0.1", fl.port, s.fingerprint, TEST_TIMEOUT_MS, &c),
                         MSV_OK);
        assert_int_equal(msv_conn_request(c, &req, TEST_TIMEOUT_MS, &resp), MSV_ERR_IO);
        started = msv_mono_ms();
        assert_int_equal(msv_conn_request(c, &req, TEST_TIMEOUT_MS, &resp), MSV_ERR_IO);
        assert_true(msv_mono_ms() - started < 1000);
        msv_conn_close(c);
    }
    flood_stop(&fl);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A server that answers a sealed send with a frame of another kind under its request id (a
 * lookup's answer): taken as a lost connection, and the send goes again. Before, it read as a
 * refusal that could not be parsed: the message failed.
 */
static void test_wrong_kind_answer_keeps_sealed(void **state)
{
    struct test_server s;
    struct flood fl = {.wrong_kind = 1};
    struct msv_client *alice, *bob;

    (void)state;
    answer_keeps_sealed(&s, &fl, &alice, &bob);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

static void test_pushes_bounded(void **state)
{
    struct flood fl = {.frames = 400, .size = 256 * 1024};

    (void)state;
    flooded_client(&fl, 64 * 1024);
}

/*
 * The same with pushes that take far more memory decoded than on the wire
 * (a lookup answer of 500,000 empty results: 1 MB sent, some 40 MB
 * decoded): what is set aside is kept as it came, and decoded only when
 * taken, so the bound holds in memory, not only on the wire.
 */
static void test_pushes_bounded_decoded(void **state)
{
    struct flood fl = {.frames = 40, .empty = 500000};

    (void)state;
    /* one frame decoded at a time, besides the 16 MiB kept (it was 750 MB) */
    flooded_client(&fl, 128 * 1024);
}

/*
 * A server that never falls quiet: a frame every 50 ms. receive returns once
 * its time is up (here 1 s beyond the quiet time) instead of running as long
 * as the server keeps sending.
 */
static void test_receive_deadline(void **state)
{
    struct test_server s;
    struct flood fl = {.frames = 600, .size = 0, .gap_ms = 50};
    struct msv_client *c;
    size_t count = 0;
    int64_t started;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    c = test_client_for(&s, "dave", "dave@example.org");
    flood_start(&s, &fl);
    msv_conn_close(c->conn);
    c->conn = NULL;
    assert_int_equal(msv_conn_open("127.0.0.1", fl.port, s.fingerprint, TEST_TIMEOUT_MS, &c->conn),
                     MSV_OK);
    c->receive_max_ms = 1000;
    started = msv_mono_ms();
    assert_int_equal(msv_client_receive(c, 500, NULL, NULL, &count), MSV_OK);
    assert_true(msv_mono_ms() - started < 5000);
    flood_stop(&fl);
    msv_client_close(c);
    test_server_cleanup(&s);
}

/*
 * An honest server whose delivery window is larger than what the client sets
 * aside during a request (2,000 here, against 1,024 frames): it pushes the
 * whole backlog at once, and the first request the client makes while taking
 * a message sees more pushes than it keeps. The client drops the surplus
 * unacknowledged and hangs up once it has taken what it kept, so the relay
 * offers the rest on the next connection: every message arrives, none twice.
 */
static void test_backlog_beyond_the_bound(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    struct seen seen = {0};
    uint8_t id[16];
    struct msv_message_rec *m = NULL;
    size_t count = 0;
    char text[32];
    int tries = 0;

    (void)state;
    test_server_init(&s, "[relay]\ndelivery_window = 2000\n");
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", to[0]);
    msv_conn_close(bob->conn);
    bob->conn = NULL;
    for (int i = 0; i < 1100; i++) {
        snprintf(text, sizeof(text), "backlog %d", i);
        assert_int_equal(msv_client_send(alice, to, 1, text, NULL, 0, NULL, id), MSV_OK);
    }
    while (seen.messages < 1100 && tries++ < 6) {
        msv_err err = msv_client_receive(bob, 1000, on_incoming, &seen, &count);

        assert_true(err == MSV_OK || err == MSV_ERR_IO);
    }
    assert_int_equal(seen.messages, 1100);
    assert_string_equal(seen.last_text, "backlog 1099");
    /* shown as often as stored: none twice */
    assert_int_equal(msv_client_db_history(bob->db, "alice@example.org", NULL, 2000, &m, &count),
                     MSV_OK);
    assert_int_equal(count, 1100);
    msv_messages_free(m, count);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_gone_mid_receive),
        cmocka_unit_test(test_silent_server),
        cmocka_unit_test(test_killed_before_shown),
        cmocka_unit_test(test_pushes_bounded),
        cmocka_unit_test(test_pushes_bounded_decoded),
        cmocka_unit_test(test_receive_deadline),
        cmocka_unit_test(test_backlog_beyond_the_bound),
        cmocka_unit_test(test_unframed_answer_keeps_sealed),
        cmocka_unit_test(test_wrong_kind_answer_keeps_sealed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
