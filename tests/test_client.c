/*
 * The client library against a real missived: a message the relay delivers
 * twice (a sender's retry after a lost acknowledgement looks the same) is
 * stored and shown once, and both copies are acknowledged.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/client.h"
#include "missive/payload.h"
#include "missive/util.h"
#include "server_harness.h"

static void count_new(void *ctx, const struct msv_incoming *in)
{
    if (in->message != NULL)
        (*(int *)ctx)++;
}

static struct msv_client *client_for(struct test_server *s, const char *name, const char *handle)
{
    struct msv_client *c = NULL;
    uint8_t fp[32];
    char dir[128], code[7];

    snprintf(dir, sizeof(dir), "%s/%s", s->dir, name);
    assert_int_equal(
        msv_client_create(dir, handle, "127.0.0.1", s->port, MSV_SUITE_MODERN, NULL, fp, &c),
        MSV_OK);
    assert_memory_equal(fp, s->fingerprint, 32); /* trust on first use pinned this server */
    assert_int_equal(msv_client_register_start(c), MSV_OK);
    test_server_code(s, handle, code);
    assert_int_equal(msv_client_register_finish(c, code, TEST_PASSWORD), MSV_OK);
    return c;
}

static void test_redelivery_shown_once(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = "only once, please"};
    struct msv_message_rec *hist = NULL;
    const char *to[1] = {"bob@example.org"};
    msv_frame *devs = NULL;
    uint8_t *pt = NULL, *wire = NULL;
    size_t pt_len = 0, wire_len = 0, n = 0, count = 0;
    int shown = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_devices(alice, "bob@example.org", &devs), MSV_OK);
    msv_random_bytes(p.message_id, MSV_ID_LEN);
    assert_int_equal(msv_payload_encode(&p, &pt, &pt_len), MSV_OK);
    assert_int_equal(
        msv_seal(alice->id, msv_identity_public(bob->id), pt, pt_len, &wire, &wire_len), MSV_OK);
    /* the same message reaches the relay twice */
    for (int i = 0; i < 2; i++) {
        struct msv_outgoing out = {bob->device_id, MSV_SUITE_MODERN, wire, wire_len};
        uint8_t send_id[16];

        msv_random_bytes(send_id, sizeof(send_id));
        assert_int_equal(
            msv_request_send(alice->conn, send_id, to, 1, &out, 1, TEST_TIMEOUT_MS, NULL, NULL),
            MSV_OK);
    }
    assert_int_equal(msv_client_receive(bob, 1000, count_new, &shown, &count), MSV_OK);
    assert_int_equal(count, 1);
    assert_int_equal(shown, 1);
    assert_int_equal(msv_client_db_history(bob->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_string_equal(hist[0].text, "only once, please");
    msv_messages_free(hist, n);
    /* both copies were acknowledged: nothing comes back on the next connection */
    msv_conn_close(bob->conn);
    bob->conn = NULL;
    assert_int_equal(msv_client_receive(bob, 700, count_new, &shown, &count), MSV_OK);
    assert_int_equal(count, 0);
    msv_frame_free(devs);
    free(wire);
    free(pt);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redelivery_shown_once),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
