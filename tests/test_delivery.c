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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/client.h"
#include "missive/util.h"
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

static void expect_status(struct msv_client *c, const uint8_t id[16], const char *status)
{
    struct msv_message_rec *m = NULL;

    assert_int_equal(msv_client_db_message_get(c->db, id, &m), MSV_OK);
    assert_string_equal(m->status, status);
    msv_messages_free(m, 1);
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
    assert_int_equal(msv_client_send(alice, to, 1, "while the server dies", NULL, 0, NULL, id),
                     MSV_OK);
    seen.kill_on_message = &s;
    assert_int_equal(msv_client_receive(bob, 2000, on_incoming, &seen, &count), MSV_ERR_IO);
    assert_int_equal(seen.messages, 1);
    assert_string_equal(seen.last_text, "while the server dies");
    test_server_start(&s);
    msv_conn_close(bob->conn);
    bob->conn = NULL;
    assert_int_equal(msv_client_receive(bob, 1000, on_incoming, &seen, &count), MSV_OK);
    assert_int_equal(seen.messages, 1); /* the redelivery is recognised */
    msv_conn_close(alice->conn);
    alice->conn = NULL;
    assert_int_equal(msv_client_receive(alice, 1000, on_incoming, &seen, &count), MSV_OK);
    assert_int_equal(seen.receipts, 1);
    expect_status(alice, id, "delivered");
    msv_client_close(alice);
    msv_client_close(bob);
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

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, "carol@example.org", &d);
    c = test_connect(&s);
    assert_int_equal(kill(s.pid, SIGSTOP), 0);
    assert_int_equal(msv_conn_auth(c, d.handle, d.device_id, d.id, 300, why, sizeof(why)),
                     MSV_ERR_IO);
    assert_int_equal(kill(s.pid, SIGCONT), 0);
    msv_conn_close(c);
    test_device_free(&d);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_gone_mid_receive),
        cmocka_unit_test(test_silent_server),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
