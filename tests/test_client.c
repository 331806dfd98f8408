/*
 * The client library against a real missived: a message the relay delivers
 * twice (a sender's retry after a lost acknowledgement looks the same) is
 * stored and shown once, and both copies are acknowledged; and no message the
 * relay accepted is lost or shown twice while the server is killed with
 * SIGKILL again and again under load.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* ---- crash consistency ------------------------------------------------------------------ */

#define SENDERS 2
#define TEXT_LEN 24

/* One sending client in its own thread: messages "s<sender>-<n>", and which the relay took. */
struct sender {
    struct msv_client *c;
    int index;
    size_t count;
    const char *const *to;
    size_t n_to;
    unsigned char *accepted; /* [count]: msv_client_send() said the relay has it */
    size_t failed;
};

static void *send_all(void *arg)
{
    struct sender *t = arg;

    for (size_t i = 0; i < t->count; i++) {
        char text[TEXT_LEN];
        uint8_t id[16];

        snprintf(text, sizeof(text), "s%d-%zu", t->index, i);
        t->accepted[i] = msv_client_send(t->c, t->to, t->n_to, text, NULL, 0, NULL, id) == MSV_OK;
        if (!t->accepted[i])
            t->failed++;
    }
    return NULL;
}

/* Receives until a whole second brings nothing new. */
static void receive_all(struct msv_client *c)
{
    size_t count = 1;
    int shown = 0;

    for (int rounds = 0; count > 0 && rounds < 200; rounds++) {
        assert_int_equal(msv_client_connect(c), MSV_OK);
        assert_int_equal(msv_client_receive(c, 1000, count_new, &shown, &count), MSV_OK);
    }
    assert_int_equal(count, 0);
}

/* How often each sent text is in c's history (texts[k] counts "s<j>-<i>" at j*per + i). */
static void count_texts(struct msv_client *c, size_t per, unsigned *seen)
{
    struct msv_message_rec *hist = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_history(c->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    memset(seen, 0, SENDERS * per * sizeof(*seen));
    for (size_t i = 0; i < n; i++) {
        int j;
        size_t k;

        if (hist[i].outgoing || hist[i].text == NULL ||
            sscanf(hist[i].text, "s%d-%zu", &j, &k) != 2 || j < 0 || j >= SENDERS || k >= per)
            continue;
        seen[(size_t)j * per + k]++;
    }
    msv_messages_free(hist, n);
}

static void sleep_random_ms(unsigned lo, unsigned hi)
{
    unsigned r;
    struct timespec ts;

    msv_random_bytes(&r, sizeof(r));
    r = lo + r % (hi - lo + 1);
    ts.tv_sec = r / 1000;
    ts.tv_nsec = (long)(r % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/*
 * A receiving client killed with SIGKILL mid-receive, again and again: it
 * acknowledges only what it has committed, so nothing is lost (and what it
 * committed but did not get to acknowledge comes again and is recognised).
 */
static void receive_with_kills(const char *dir, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        pid_t pid = fork();
        int status;

        assert_true(pid >= 0);
        if (pid == 0) {
            struct msv_client *c = NULL;
            size_t count = 0;
            int shown = 0;

            if (msv_client_open(dir, NULL, &c) != MSV_OK)
                _exit(2);
            for (int i = 0; i < 50; i++) {
                if (msv_client_receive(c, 200, count_new, &shown, &count) != MSV_OK)
                    sleep_random_ms(10, 20); /* not connected yet: try again */
            }
            _exit(0);
        }
        sleep_random_ms(30, 250);
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    }
}

/*
 * Two clients send MSV_CRASH_MESSAGES messages (default 400) each to two
 * recipients while missived is killed with SIGKILL and restarted every few
 * hundred milliseconds; one recipient is then killed mid-receive several
 * times. Afterwards every message the relay accepted reached both recipients,
 * and nothing is shown twice (lost = 0, duplicates = 0); the senders' outboxes
 * deliver the rest, so in the end every message is there exactly once.
 */
static void test_crash_consistency(void **state)
{
    const char *env = getenv("MSV_CRASH_MESSAGES");
    size_t per = env != NULL ? (size_t)strtoul(env, NULL, 10) : 400, accepted = 0, lost = 0,
           dup = 0, missing = 0;
    const char *to[2] = {"bob@example.org", "dave@example.org"};
    struct test_server s;
    struct sender senders[SENDERS];
    pthread_t threads[SENDERS];
    struct msv_client *rcpt[2];
    unsigned *seen;
    int kills = 0, running = SENDERS;

    (void)state;
    assert_true(per > 0 && per < 1000000);
    test_server_init(&s, NULL);
    test_server_start(&s);
    rcpt[0] = client_for(&s, "bob", to[0]);
    rcpt[1] = client_for(&s, "dave", to[1]);
    for (int j = 0; j < SENDERS; j++) {
        char name[16], handle[32];

        snprintf(name, sizeof(name), "sender%d", j);
        snprintf(handle, sizeof(handle), "sender%d@example.org", j);
        senders[j] = (struct sender){.c = client_for(&s, name, handle),
                                     .index = j,
                                     .count = per,
                                     .to = to,
                                     .n_to = 2,
                                     .accepted = calloc(per, 1)};
        assert_non_null(senders[j].accepted);
    }
    for (int j = 0; j < SENDERS; j++)
        assert_int_equal(pthread_create(&threads[j], NULL, send_all, &senders[j]), 0);
    /* kill while the senders run; a kill mid-commit or mid-answer is the point */
    {
        int joined[SENDERS] = {0};

        while (running > 0) {
            sleep_random_ms(150, 600);
            for (int j = 0; j < SENDERS; j++) {
                if (!joined[j] && pthread_tryjoin_np(threads[j], NULL) == 0) {
                    joined[j] = 1;
                    running--;
                }
            }
            if (running == 0)
                break;
            test_server_kill(&s);
            kills++;
            test_server_start(&s);
        }
    }
    /* what failed waits in the senders' outboxes and goes with the next connection */
    for (int j = 0; j < SENDERS; j++) {
        msv_conn_close(senders[j].c->conn);
        senders[j].c->conn = NULL;
        assert_int_equal(msv_client_connect(senders[j].c), MSV_OK);
    }
    seen = calloc(SENDERS * per, sizeof(*seen));
    assert_non_null(seen);
    {
        char dir[128];

        snprintf(dir, sizeof(dir), "%s/dave", s.dir);
        msv_client_close(rcpt[1]);
        receive_with_kills(dir, 6);
        assert_int_equal(msv_client_open(dir, NULL, &rcpt[1]), MSV_OK);
    }
    for (int r = 0; r < 2; r++) {
        receive_all(rcpt[r]);
        count_texts(rcpt[r], per, seen);
        for (int j = 0; j < SENDERS; j++) {
            for (size_t i = 0; i < per; i++) {
                unsigned n = seen[(size_t)j * per + i];

                if (senders[j].accepted[i] && n == 0)
                    lost++;
                if (n > 1)
                    dup++;
                if (n == 0)
                    missing++; /* not even from an outbox */
            }
        }
    }
    for (int j = 0; j < SENDERS; j++)
        for (size_t i = 0; i < per; i++)
            accepted += senders[j].accepted[i];
    printf("crash consistency: %zu messages, %zu accepted at once, %d server kills, "
           "6 receiver kills; lost %zu, shown twice %zu, missing in the end %zu\n",
           SENDERS * per, accepted, kills, lost, dup, missing);
    assert_true(kills >= 2);
    assert_true(accepted > 0);
    assert_int_equal(lost, 0);
    assert_int_equal(dup, 0);
    assert_int_equal(missing, 0);
    free(seen);
    for (int j = 0; j < SENDERS; j++) {
        free(senders[j].accepted);
        msv_client_close(senders[j].c);
    }
    msv_client_close(rcpt[0]);
    msv_client_close(rcpt[1]);
    test_server_cleanup(&s);
}

/* ---- a sender killed mid-send ------------------------------------------------------------ */

#define KILL_ROUNDS 8
#define KILL_PER_ROUND 2000

/* What the killed sender's history and the recipient's say of "k<round>-<n>". */
static void count_kill_texts(struct msv_client *c, int outgoing, unsigned (*seen)[KILL_PER_ROUND],
                             unsigned char (*sent)[KILL_PER_ROUND])
{
    struct msv_message_rec *hist = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_history(c->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        int r, k;

        if (hist[i].outgoing != outgoing || hist[i].text == NULL ||
            sscanf(hist[i].text, "k%d-%d", &r, &k) != 2 || r < 0 || r >= KILL_ROUNDS || k < 0 ||
            k >= KILL_PER_ROUND)
            continue;
        seen[r][k]++;
        if (sent != NULL && strcmp(hist[i].status, "sent") == 0)
            sent[r][k] = 1;
    }
    msv_messages_free(hist, n);
}

/*
 * A sending client is killed with SIGKILL at random moments, again and again
 * (before, during and after the outbox commit and the relay's answer). Every
 * message its history holds is delivered once its outbox is flushed, exactly
 * once; every message the recipient got is in the sender's history; every
 * send that returned is in it.
 */
static void test_sender_killed_mid_send(void **state)
{
    static unsigned returned[KILL_ROUNDS][KILL_PER_ROUND], stored[KILL_ROUNDS][KILL_PER_ROUND],
        got[KILL_ROUNDS][KILL_PER_ROUND];
    static unsigned char sent[KILL_ROUNDS][KILL_PER_ROUND];
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    size_t in_history = 0, in_flight = 0;
    char dir[128];
    int fds[2];

    (void)state;
    memset(returned, 0, sizeof(returned));
    memset(stored, 0, sizeof(stored));
    memset(got, 0, sizeof(got));
    memset(sent, 0, sizeof(sent));
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to[0]);
    msv_client_close(alice);
    snprintf(dir, sizeof(dir), "%s/alice", s.dir);
    assert_int_equal(pipe(fds), 0);
    for (int r = 0; r < KILL_ROUNDS; r++) {
        pid_t pid = fork();
        int status;
        uint16_t k;

        assert_true(pid >= 0);
        if (pid == 0) {
            struct msv_client *c = NULL;

            close(fds[0]);
            if (msv_client_open(dir, NULL, &c) != MSV_OK)
                _exit(2);
            for (k = 0; k < KILL_PER_ROUND; k++) {
                char text[TEXT_LEN];
                uint8_t id[16];

                snprintf(text, sizeof(text), "k%d-%u", r, (unsigned)k);
                if (msv_client_send(c, to, 1, text, NULL, 0, NULL, id) == MSV_OK &&
                    write(fds[1], &k, sizeof(k)) != sizeof(k))
                    _exit(3);
            }
            _exit(0);
        }
        sleep_random_ms(100, 600);
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_false(WIFEXITED(status) && WEXITSTATUS(status) != 0);
        /* the sends that returned before the kill: a pipe of 64 KiB holds a round's */
        for (;;) {
            struct timespec none = {0, 0};
            fd_set rd;

            FD_ZERO(&rd);
            FD_SET(fds[0], &rd);
            if (pselect(fds[0] + 1, &rd, NULL, NULL, &none, NULL) != 1)
                break;
            assert_int_equal(read(fds[0], &k, sizeof(k)), sizeof(k));
            assert_true(k < KILL_PER_ROUND);
            returned[r][k] = 1;
        }
    }
    close(fds[0]);
    close(fds[1]);
    /* the next start of the sender flushes its outbox */
    assert_int_equal(msv_client_open(dir, NULL, &alice), MSV_OK);
    assert_int_equal(msv_client_connect(alice), MSV_OK);
    count_kill_texts(alice, 1, stored, sent);
    receive_all(bob);
    count_kill_texts(bob, 0, got, NULL);
    for (int r = 0; r < KILL_ROUNDS; r++) {
        for (int k = 0; k < KILL_PER_ROUND; k++) {
            if (returned[r][k] && stored[r][k] != 1)
                fail_msg("k%d-%d returned but is in the sender's history %u times", r, k,
                         stored[r][k]);
            if (stored[r][k] > 1)
                fail_msg("k%d-%d is in the sender's history %u times", r, k, stored[r][k]);
            if (stored[r][k] == 1 && !sent[r][k])
                fail_msg("k%d-%d is still queued after the outbox was flushed", r, k);
            if (got[r][k] != stored[r][k])
                fail_msg("k%d-%d: in the sender's history %u times, received %u times", r, k,
                         stored[r][k], got[r][k]);
            in_history += stored[r][k];
            in_flight += stored[r][k] && !returned[r][k];
        }
    }
    printf("sender killed mid-send: %d kills, %zu messages stored by the sender, %zu of them "
           "caught in flight; each received exactly once\n",
           KILL_ROUNDS, in_history, in_flight);
    assert_true(in_history > 0);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redelivery_shown_once),
        cmocka_unit_test(test_sender_killed_mid_send),
        cmocka_unit_test(test_crash_consistency),
    };

    if (msv_init() != MSV_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN); /* servers are killed under the clients' feet */
    return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
