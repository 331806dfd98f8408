/*
 * The client library against a real missived: a message the relay delivers
 * twice (a sender's retry after a lost acknowledgement looks the same) is
 * stored and shown once, and both copies are acknowledged; and no message the
 * relay accepted is lost or shown twice while the server is killed with
 * SIGKILL again and again under load.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "client/client.h"
#include "client/internal.h"
#include "client/safety.h"
#include "client/sessions.h"
#include "client/transparency.h"
#include "missive/kt.h"
#include "missive/payload.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "helpers.h"
#include "server_harness.h"
#include "util/endian.h"

static void count_new(void *ctx, const struct msv_incoming *in)
{
    if (in->message != NULL)
        (*(int *)ctx)++;
}

/* Forgets c's connection: the next call that needs one opens a new one. */
static void drop_connection(struct msv_client *c)
{
    msv_conn_close(c->conn);
    c->conn = NULL;
}

static void reconnect(struct msv_client *c)
{
    drop_connection(c);
    assert_int_equal(msv_client_connect(c), MSV_OK);
}

static struct msv_client *client_for(struct test_server *s, const char *name, const char *handle)
{
    return test_client_for(s, name, handle);
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
        assert_int_equal(msv_request_send(alice->conn, send_id, to, 1, &out, 1, NULL,
                                          TEST_TIMEOUT_MS, NULL, NULL),
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
    drop_connection(bob);
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
#define TEXT_LEN 32

/* One sending client in its own thread: messages "s<sender>-<n>", and which the relay took. */
struct sender {
    struct msv_client *c;
    int index;
    size_t count;
    const char *const *to;
    size_t n_to;
    unsigned char *accepted; /* [count]: msv_client_send() said the relay has it */
    atomic_size_t done;      /* sends made so far, taken or not */
    size_t failed;
    msv_err last_err; /* the last failure, and the client's words for it */
    char last_why[256];
};

static void *send_all(void *arg)
{
    struct sender *t = arg;

    for (size_t i = 0; i < t->count; i++) {
        char text[TEXT_LEN];
        uint8_t id[16];

        snprintf(text, sizeof(text), "s%d-%zu", t->index, i);
        msv_err err = msv_client_send(t->c, t->to, t->n_to, text, NULL, 0, NULL, id);

        t->accepted[i] = err == MSV_OK;
        if (!t->accepted[i]) {
            t->failed++;
            t->last_err = err;
            snprintf(t->last_why, sizeof(t->last_why), "%s", t->c->why.message);
        }
        atomic_fetch_add(&t->done, 1);
    }
    return NULL;
}

/* Receives until a whole second brings nothing new. */
static void receive_all(struct msv_client *c)
{
    size_t count = 1;
    int shown = 0;

    c->receive_until_synced = 1; /* each round ends when the server says the queue was pushed */
    for (int rounds = 0; count > 0 && rounds < 200; rounds++) {
        assert_int_equal(msv_client_connect(c), MSV_OK);
        assert_int_equal(msv_client_receive(c, 1000, count_new, &shown, &count), MSV_OK);
    }
    assert_int_equal(count, 0);
}

/* Seals text for bob's device as alice and sends it, asking the relay to drop it after
 * expire_after_s. */
static void send_expiring(struct msv_client *alice, struct msv_client *bob, const char *text,
                          uint32_t expire_after_s)
{
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text};
    struct msv_outgoing out = {bob->device_id, MSV_SUITE_MODERN, NULL, 0};
    const char *to[1] = {bob->handle};
    uint8_t *pt = NULL, *wire = NULL, send_id[16];
    size_t pt_len = 0, wire_len = 0;

    msv_random_bytes(p.message_id, MSV_ID_LEN);
    p.sent_at_ms = (uint64_t)msv_wall_ms();
    assert_int_equal(msv_payload_encode(&p, &pt, &pt_len), MSV_OK);
    assert_int_equal(
        msv_seal(alice->id, msv_identity_public(bob->id), pt, pt_len, &wire, &wire_len), MSV_OK);
    out.ciphertext = wire;
    out.ciphertext_len = wire_len;
    msv_random_bytes(send_id, sizeof(send_id));
    assert_int_equal(msv_request_send_expiring(alice->conn, send_id, to, 1, &out, 1, NULL,
                                               expire_after_s, TEST_TIMEOUT_MS, NULL, NULL),
                     MSV_OK);
    free(wire);
    free(pt);
}

/*
 * A send that asks the relay to drop undelivered copies after a while (a
 * disappearing message): a copy still queued then is never delivered, the
 * sweep deletes it and counts it; a copy sent without an expiry still comes.
 */
static void test_relay_drops_expired_copies(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_message_rec *hist = NULL;
    struct timespec pause = {1, 500 * 1000000L};
    msv_frame *devs = NULL;
    size_t n = 0;

    (void)state;
    test_server_init(&s, "[relay]\nmin_expire_after_s = 1\nexpiry_interval_ms = 100\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_devices(alice, "bob@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    drop_connection(bob);
    send_expiring(alice, bob, "gone before bob comes", 1);
    send_expiring(alice, bob, "still there", 0);
    nanosleep(&pause, NULL);
    receive_all(bob);
    assert_int_equal(msv_client_db_history(bob->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_string_equal(hist[0].text, "still there");
    msv_messages_free(hist, n);
    assert_int_equal(test_server_metric(&s, "envelopes_expired_total"), 1);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
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
        char name[24], handle[40];

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
            /* the first two kills once a third and two thirds of the sends are made (however
             * fast the senders go), the others at random */
            size_t due = (size_t)(kills + 1) * SENDERS * per / 3, made = 0;

            if (kills >= 2)
                sleep_random_ms(150, 600);
            for (int polls = 0; kills < 2 && made < due && polls < 60000; polls++) {
                made = 0;
                for (int j = 0; j < SENDERS; j++)
                    made += atomic_load(&senders[j].done);
                if (made < due)
                    usleep(1000);
            }
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
        reconnect(senders[j].c);
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

/* ---- sessions and sealed sender ------------------------------------------------------------ */

/* 1 if c's history has an incoming message with this text. */
static int received_text(struct msv_client *c, const char *text)
{
    struct msv_message_rec *hist = NULL;
    size_t n = 0;
    int found = 0;

    assert_int_equal(msv_client_db_history(c->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    for (size_t i = 0; i < n; i++)
        found |= !hist[i].outgoing && hist[i].text != NULL && strcmp(hist[i].text, text) == 0;
    msv_messages_free(hist, n);
    return found;
}

struct notices {
    char text[4][600];
    size_t n;
};

static void keep_notice(void *ctx, const struct msv_incoming *in)
{
    struct notices *n = ctx;

    if (in->notice != NULL && n->n < 4)
        snprintf(n->text[n->n++], sizeof(n->text[0]), "%s", in->notice);
}

static void receive_notices(struct msv_client *c, struct notices *n)
{
    size_t count = 0;

    memset(n, 0, sizeof(*n));
    assert_int_equal(msv_client_receive(c, 1000, keep_notice, n, &count), MSV_OK);
}

/*
 * The newest envelope queued for device: its first byte, and for a sealed
 * one what the relay must not see: sender and inner envelope, opened with
 * the recipient's keys. *sealed says which it was.
 */
static uint8_t newest_envelope(struct test_server *s, struct msv_client *to,
                               struct msv_client *from, int *sealed, uint8_t *inner_kind)
{
    struct test_queued *rows = NULL;
    size_t n = test_server_queued(s, &rows);
    const struct test_queued *r = NULL;
    uint8_t kind;

    for (size_t i = 0; i < n; i++)
        if (rows[i].device_id == to->device_id)
            r = &rows[i];
    assert_non_null(r);
    kind = r->ciphertext[0];
    *sealed = r->suite == MSV_ENVELOPE_SEALED;
    *inner_kind = kind;
    if (*sealed) {
        char handle[256];
        uint64_t device = 0;
        uint8_t *inner = NULL;
        size_t inner_len = 0;

        /* the relay holds no sender; the recipient finds it inside */
        assert_int_equal(r->sender_device, 0);
        assert_string_equal(r->sender_handle, "");
        assert_int_equal(msv_sealed_sender(to->id, r->ciphertext, r->len, handle, &device), MSV_OK);
        assert_int_equal(device, from->device_id);
        assert_int_equal(msv_sealed_unwrap(to->id, msv_identity_public(from->id), r->ciphertext,
                                           r->len, &inner, &inner_len),
                         MSV_OK);
        *inner_kind = inner[0];
        free(inner);
    } else {
        assert_int_equal(r->sender_device, from->device_id);
    }
    test_queued_free(rows, n);
    return kind;
}

/*
 * Messages between modern devices travel in sessions: the first starts one
 * from the recipient's prekeys (and the one-time prekey's secret is gone
 * once read); once each side has the other's profile key, the relay no
 * longer learns who sends; a session that breaks is reset with a notice on
 * both sides, and the next message gets through.
 */
static void test_sessions_and_sealed_sender(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"}, *to_alice[1] = {"alice@example.org"};
    struct test_queued *rows = NULL;
    struct notices notes;
    uint8_t id[16], base[32], *v = NULL, inner;
    uint32_t spk_id = 0, opk_id = 0;
    size_t n, len = 0;
    int sealed;
    char key[32];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", to_alice[0]);
    bob = client_for(&s, "bob", to_bob[0]);
    test_acquaint(alice, bob);

    /* first contact: X3DH from bob's published prekeys; alice has no token for bob yet */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(newest_envelope(&s, bob, alice, &sealed, &inner), MSV_WIRE_PREKEY_MSG);
    assert_false(sealed);
    n = test_server_queued(&s, &rows);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].sender_handle, to_alice[0]);
    assert_int_equal(
        msv_prekey_message_info(rows[0].ciphertext, rows[0].len, &spk_id, &opk_id, base), MSV_OK);
    test_queued_free(rows, n);
    assert_true(opk_id != 0);
    snprintf(key, sizeof(key), "prekey:%u", opk_id);
    assert_int_equal(msv_client_db_get(bob->db, key, &v, &len), MSV_OK);
    msv_secret_free(v, len);
    receive_all(bob);
    assert_true(received_text(bob, "first"));
    /* forward secrecy: the one-time prekey's secret is deleted once used */
    assert_int_equal(msv_client_db_get(bob->db, key, &v, &len), MSV_ERR_NOT_FOUND);

    /* bob's delivery receipt: sealed (alice's profile key came with her message), in the
     * session her message started */
    assert_int_equal(newest_envelope(&s, alice, bob, &sealed, &inner), MSV_WIRE_SEALED);
    assert_true(sealed);
    assert_int_equal(inner, MSV_WIRE_RATCHET);
    receive_all(alice);
    /* and now alice's messages to bob are sealed too */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "second", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(newest_envelope(&s, bob, alice, &sealed, &inner), MSV_WIRE_SEALED);
    assert_int_equal(inner, MSV_WIRE_RATCHET);
    receive_all(bob);
    assert_true(received_text(bob, "second"));
    receive_all(alice);

    /* bob loses his session with alice's device: her next message cannot be read... */
    assert_int_equal(msv_sessions_forget(bob, alice->device_id), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "third", NULL, 0, NULL, id), MSV_OK);
    receive_notices(bob, &notes);
    assert_int_equal(notes.n, 1);
    assert_non_null(strstr(notes.text[0], "could not be decrypted; the session with that device "
                                          "was reset"));
    assert_false(received_text(bob, "third"));
    /* ...bob's reset starts a new session, alice is told, and her next message is read */
    assert_int_equal(newest_envelope(&s, alice, bob, &sealed, &inner), MSV_WIRE_SEALED);
    assert_int_equal(inner, MSV_WIRE_PREKEY_MSG);
    receive_notices(alice, &notes);
    assert_int_equal(notes.n, 1);
    assert_non_null(strstr(notes.text[0], "could not read a message from this device"));
    assert_int_equal(msv_client_send(alice, to_bob, 1, "fourth", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    assert_true(received_text(bob, "fourth"));

    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* 1 if c holds a current session with peer's device. */
static int has_session(struct msv_client *c, struct msv_client *peer)
{
    char key[MSV_SESSION_KEY_LEN];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    msv_sessions_key(peer->handle, peer->device_id, msv_identity_public(peer->id), 0, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    msv_secret_free(v, len);
    return err == MSV_OK;
}

/*
 * Sends wire to to's device sealed, as anyone holding to's delivery token can
 * (from: a device to has written to, so it knows the token).
 */
static void send_sealed_as_stranger(struct test_server *s, struct msv_client *from,
                                    struct msv_client *to, const uint8_t *wire, size_t len)
{
    struct msv_conn *anon = test_connect(s);
    struct msv_outgoing out = {to->device_id, MSV_ENVELOPE_SEALED, wire, len};
    struct msv_refusal why;
    const char *handle = to->handle;
    uint8_t token[16], id[16];

    assert_int_equal(msv_sessions_token_for(from, to->handle, token), MSV_OK);
    msv_random_bytes(id, sizeof(id));
    assert_int_equal(
        msv_request_send(anon, id, &handle, 1, &out, 1, token, TEST_TIMEOUT_MS, NULL, &why),
        MSV_OK);
    msv_conn_close(anon);
}

/*
 * A contact of bob (mallory, whom bob wrote to) seals bytes that claim to be
 * a session message from alice's device. The sealed layer does not open under
 * alice's key: bob drops it without a word, keeps his session with alice, names
 * nobody, sends no reset, and reads alice's next message.
 */
static void test_sealed_sender_forged(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *mallory;
    const char *to_bob[1] = {"bob@example.org"}, *to_mallory[1] = {"mallory@example.org"};
    struct notices notes;
    uint8_t id[16], garbage[80], *wire = NULL;
    size_t len = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to_bob[0]);
    mallory = client_for(&s, "mallory", to_mallory[0]);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "hello", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    receive_all(alice);
    assert_int_equal(msv_client_send(bob, to_mallory, 1, "hi", NULL, 0, NULL, id), MSV_OK);
    receive_all(mallory);
    receive_all(bob);
    assert_true(has_session(bob, alice));

    /* garbage in the form of a session message, claiming alice's device */
    msv_random_bytes(garbage, sizeof(garbage));
    garbage[0] = MSV_WIRE_RATCHET;
    assert_int_equal(msv_sealed_wrap(mallory->id, msv_identity_public(bob->id), alice->handle,
                                     alice->device_id, garbage, sizeof(garbage), &wire, &len),
                     MSV_OK);
    send_sealed_as_stranger(&s, mallory, bob, wire, len);
    free(wire);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "in flight", NULL, 0, NULL, id), MSV_OK);
    receive_notices(bob, &notes);
    for (size_t i = 0; i < notes.n; i++)
        assert_null(strstr(notes.text[i], "alice"));
    assert_true(received_text(bob, "in flight"));
    assert_true(has_session(bob, alice));
    /* no reset went to alice */
    receive_notices(alice, &notes);
    for (size_t i = 0; i < notes.n; i++)
        assert_null(strstr(notes.text[i], "could not read"));

    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

/* A server, alice and bob, and a session between them (alice wrote "start", bob answered). */
static void start_pair(struct test_server *s, struct msv_client **alice, struct msv_client **bob)
{
    const char *to_bob[1] = {"bob@example.org"};
    uint8_t id[16];

    test_server_init(s, NULL);
    test_server_start(s);
    *alice = client_for(s, "alice", "alice@example.org");
    *bob = client_for(s, "bob", to_bob[0]);
    test_acquaint(*alice, *bob);
    assert_int_equal(msv_client_send(*alice, to_bob, 1, "start", NULL, 0, NULL, id), MSV_OK);
    receive_all(*bob);
    receive_all(*alice);
}

struct held_send {
    struct msv_client *c;
    const char *to;
    volatile int done;
    msv_err err;
};

static void *send_one(void *arg)
{
    struct held_send *h = arg;
    uint8_t id[16];

    h->err = msv_client_send(h->c, &h->to, 1, "while locked", NULL, 0, NULL, id);
    h->done = 1;
    return NULL;
}

#define PARALLEL 4
#define PARALLEL_EACH 25

/*
 * Several processes of one account sending at once use its sessions one at
 * a time: a send waits while another holds the account's session lock, and
 * with four clients of alice's directory sending at once, bob reads every
 * message (none is sealed with a message key used already).
 */
static void test_parallel_sends_share_sessions(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *others[PARALLEL];
    struct sender t[PARALLEL];
    unsigned char accepted[PARALLEL][PARALLEL_EACH];
    pthread_t th[PARALLEL], one;
    struct held_send h;
    const char *to_bob[1] = {"bob@example.org"};
    const struct msv_conn *listening;
    unsigned long long revoked;
    uint8_t id[16];
    char path[200];
    int fd;

    (void)state;
    start_pair(&s, &alice, &bob);

    /* while another process holds the lock, a send does not touch the session */
    snprintf(path, sizeof(path), "%s/alice/sessions.lock", s.dir);
    fd = open(path, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    memset(&h, 0, sizeof(h));
    h.c = alice;
    h.to = to_bob[0];
    assert_int_equal(pthread_create(&one, NULL, send_one, &h), 0);
    usleep(1500 * 1000);
    assert_false(h.done);
    assert_int_equal(flock(fd, LOCK_UN), 0);
    close(fd);
    assert_int_equal(pthread_join(one, NULL), 0);
    assert_true(h.done);
    assert_int_equal(h.err, MSV_OK);

    /* alice's listener keeps its connection: the senders' connections are for requests
     * alone, and replace neither it nor each other */
    alice->takes_deliveries = 1;
    assert_int_equal(msv_client_connect(alice), MSV_OK);
    listening = alice->conn;
    revoked = test_server_metric(&s, "connections_revoked_total");
    for (int i = 0; i < PARALLEL; i++) {
        snprintf(path, sizeof(path), "%s/alice", s.dir);
        assert_int_equal(msv_client_open(path, NULL, &others[i]), MSV_OK);
        t[i] = (struct sender){.c = others[i],
                               .index = i,
                               .count = PARALLEL_EACH,
                               .to = to_bob,
                               .n_to = 1,
                               .accepted = accepted[i]};
        assert_int_equal(pthread_create(&th[i], NULL, send_all, &t[i]), 0);
    }
    for (int i = 0; i < PARALLEL; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (t[i].failed != 0)
            fail_msg("sender %d: %zu sends failed, the last with %s (%s)", i, t[i].failed,
                     msv_strerror(t[i].last_err), t[i].last_why);
        msv_client_close(others[i]);
    }
    assert_int_equal(test_server_metric(&s, "connections_revoked_total"), revoked);
    receive_all(bob);
    assert_true(received_text(bob, "while locked"));
    /* and bob's answer reaches alice's listener on the connection it had all along */
    assert_int_equal(
        msv_client_send(bob, (const char *[]){"alice@example.org"}, 1, "heard", NULL, 0, NULL, id),
        MSV_OK);
    receive_all(alice);
    assert_ptr_equal(alice->conn, listening);
    assert_true(received_text(alice, "heard"));
    for (int i = 0; i < PARALLEL; i++) {
        for (int k = 0; k < PARALLEL_EACH; k++) {
            char text[TEXT_LEN];

            snprintf(text, sizeof(text), "s%d-%d", i, k);
            assert_true(received_text(bob, text));
        }
    }
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A device whose connections for requests alone are as many as the server allows (dead ones
 * it has not noticed yet, say) is not locked out: the send connects with a connection that
 * takes deliveries instead, and goes.
 */
static void test_request_connections_used_up(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"};
    struct msv_conn *held;
    uint8_t id[16];

    (void)state;
    test_server_init(&s, "[server]\nmax_request_connections = 1\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to_bob[0]);
    test_acquaint(alice, bob);
    msv_conn_close(alice->conn);
    alice->conn = NULL;
    held = test_connect(&s);
    assert_int_equal(msv_conn_auth_as(held, alice->handle, alice->device_id, alice->id, 1,
                                      TEST_TIMEOUT_MS, NULL, 0),
                     MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "past the bound", NULL, 0, NULL, id),
                     MSV_OK);
    assert_false(alice->conn_requests_only);
    assert_int_equal(test_server_metric(&s, "connections_requests_only_refused_total"), 1);
    receive_all(bob);
    assert_true(received_text(bob, "past the bound"));
    msv_conn_close(held);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A message sealed with a message key that was used already (what two
 * processes sharing one stored session once did) cannot be read: bob records
 * it in history as unreadable and shows that, instead of dropping it without
 * a word.
 */
static void test_unreadable_message_recorded(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"};
    struct msv_message_rec *hist = NULL;
    struct notices notes;
    uint8_t id[16], *saved = NULL;
    size_t n = 0, saved_len = 0, unreadable = 0;
    char key[MSV_SESSION_KEY_LEN];

    (void)state;
    start_pair(&s, &alice, &bob);

    msv_sessions_key(bob->handle, bob->device_id, msv_identity_public(bob->id), 0, key);
    assert_int_equal(msv_client_db_get(alice->db, key, &saved, &saved_len), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "one", NULL, 0, NULL, id), MSV_OK);
    /* the session as it was before "one": "two" gets the same message key */
    assert_int_equal(msv_client_db_set(alice->db, key, saved, saved_len), MSV_OK);
    msv_secret_free(saved, saved_len);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "two", NULL, 0, NULL, id), MSV_OK);
    receive_notices(bob, &notes);
    assert_true(received_text(bob, "one"));
    assert_false(received_text(bob, "two"));
    assert_int_equal(notes.n, 1);
    assert_non_null(strstr(notes.text[0], "a message from alice@example.org"));
    assert_non_null(strstr(notes.text[0], "could not be read"));
    assert_int_equal(msv_client_db_history(bob->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    for (size_t i = 0; i < n; i++)
        unreadable += strcmp(hist[i].status, "unreadable") == 0;
    msv_messages_free(hist, n);
    assert_int_equal(unreadable, 1);
    /* and it was acknowledged: nothing more comes */
    receive_notices(bob, &notes);
    assert_int_equal(notes.n, 0);

    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* The signed prekey in use, as the client records it; its age set back by days_ago if > 0. */
static uint32_t spk_in_use(struct msv_client *c, int days_ago)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint32_t id;

    assert_int_equal(msv_client_db_get(c->db, "signed-prekey", &v, &len), MSV_OK);
    assert_int_equal(len, 12);
    id = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
    if (days_ago > 0) {
        uint64_t then = (uint64_t)(msv_wall_ms() - (int64_t)days_ago * 24 * 3600 * 1000);

        for (int i = 0; i < 8; i++)
            v[4 + i] = (uint8_t)(then >> (56 - 8 * i));
        assert_int_equal(msv_client_db_set(c->db, "signed-prekey", v, len), MSV_OK);
    }
    free(v);
    return id;
}

/* The signed prekey id the server hands out for device. */
static uint32_t spk_served(struct msv_client *asker, uint64_t device)
{
    msv_frame *r = NULL;
    uint32_t id;

    assert_int_equal(msv_client_connect(asker), MSV_OK);
    assert_int_equal(msv_request_prekey_claim(asker->conn, &device, 1, 0, 10000, &r, &asker->why),
                     MSV_OK);
    assert_int_equal(r->prekey_bundles->n_bundles, 1);
    id = r->prekey_bundles->bundles[0]->signed_->id;
    msv_frame_free(r);
    return id;
}

static int has_prekey_secret(struct msv_client *c, uint32_t id)
{
    char key[32];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    snprintf(key, sizeof(key), "prekey:%u", id);
    err = msv_client_db_get(c->db, key, &v, &len);
    msv_secret_free(v, len);
    return err == MSV_OK;
}

/* A week-old signed prekey is replaced at the next connection; the one before keeps its
 * secret until the replacement after, then it goes. */
static void test_signed_prekey_rotation(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    uint32_t first, second, third;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    first = spk_in_use(alice, 0);
    assert_int_equal(spk_served(bob, alice->device_id), first);
    /* not due yet: nothing changes */
    reconnect(alice);
    assert_int_equal(spk_in_use(alice, 6), first);
    reconnect(alice);
    assert_int_equal(spk_in_use(alice, 8), first);
    reconnect(alice);
    second = spk_in_use(alice, 0);
    assert_true(second != first);
    assert_int_equal(spk_served(bob, alice->device_id), second);
    assert_true(has_prekey_secret(alice, first));
    assert_int_equal(spk_in_use(alice, 8), second);
    reconnect(alice);
    third = spk_in_use(alice, 0);
    assert_true(third != second);
    assert_int_equal(spk_served(bob, alice->device_id), third);
    assert_false(has_prekey_secret(alice, first));
    assert_true(has_prekey_secret(alice, second));
    assert_true(has_prekey_secret(alice, third));
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* ---- a directory that lies ----------------------------------------------------------------- */

/* The server's SQLite database, open (the server stopped, or writing with it: a write of the
 * server's is waited for, as another node's would be, not failed as "database is locked"). */
static sqlite3 *server_db(struct test_server *s)
{
    char path[160];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_busy_timeout(db, 10000), SQLITE_OK);
    return db;
}

/* Runs SQL on the stopped server's database. */
static void server_sql(struct test_server *s, const char *sql)
{
    sqlite3 *db = server_db(s);
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* device's queue turned around (what came last is given first, as a server holding deliveries
 * back would; what is queued next comes after all of it), the server stopped meanwhile; the
 * connections of clients (NULL-ended), ended by it, closed first. */
static void queue_turned_around(struct test_server *s, struct msv_client **clients, uint64_t device)
{
    char sql[200];

    for (; *clients != NULL; clients++) {
        msv_conn_close((*clients)->conn);
        (*clients)->conn = NULL;
    }
    test_server_stop(s);
    snprintf(sql, sizeof(sql),
             "UPDATE queue SET id = 3000000 - id WHERE device_id = %llu;"
             "UPDATE sqlite_sequence SET seq = 3000000 WHERE name = 'queue';",
             (unsigned long long)device);
    server_sql(s, sql);
    test_server_start(s);
}

/* The number the stopped server's database gives for a query. */
static long long server_count(struct test_server *s, const char *sql)
{
    sqlite3 *db = server_db(s);
    sqlite3_stmt *st = NULL;
    long long n;

    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The text c holds for message id. */
static void assert_text(struct msv_client *c, const uint8_t id[16], const char *text)
{
    struct msv_message_rec *m = NULL;

    assert_int_equal(msv_client_db_message_get(c->db, id, &m), MSV_OK);
    assert_string_equal(m->text, text);
    msv_messages_free(m, 1);
}

/*
 * What a relay could do to the envelopes queued for device (the server
 * stopped): keep a copy in the table saved and queue them in reverse order;
 * then queue the saved copies again.
 */
static void queue_reversed(struct test_server *s, uint64_t device)
{
    char sql[400];

    snprintf(sql, sizeof(sql),
             "CREATE TABLE saved AS SELECT * FROM queue WHERE device_id = %llu;"
             "DELETE FROM queue WHERE device_id = %llu;"
             "INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext, "
             "enqueued_ms, expires_ms) SELECT device_id, sender_device, sender_handle, suite, "
             "ciphertext, enqueued_ms, expires_ms FROM saved ORDER BY id DESC;",
             (unsigned long long)device, (unsigned long long)device);
    server_sql(s, sql);
}

static void queue_replayed(struct test_server *s)
{
    server_sql(s, "INSERT INTO queue (device_id, sender_device, sender_handle, suite, "
                  "ciphertext, enqueued_ms, expires_ms) SELECT device_id, sender_device, "
                  "sender_handle, suite, ciphertext, enqueued_ms, expires_ms FROM saved;");
}

/*
 * A relay that reorders and replays control messages (here in the ecies
 * suite, whose envelopes have no session to refuse a replay): alice's two
 * edits delivered newest first leave her newest text, and the same edit and a
 * typing notice delivered again change nothing and show nothing.
 */
static void test_replayed_and_reordered_controls(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"};
    struct notices notes;
    uint8_t id[16];
    char sql[400];
    struct timespec pause = {0, 20 * 1000000L};

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_of_suites(&s, "alice", "alice@example.org", MSV_SUITE_ECIES, 0);
    bob = test_client_of_suites(&s, "bob", to_bob[0], MSV_SUITE_MODERN,
                                MSV_SUITE_BIT(MSV_SUITE_ECIES));
    assert_int_equal(msv_client_send(alice, to_bob, 1, "original", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    assert_text(bob, id, "original");

    /* while bob is away: a typing notice and two edits */
    drop_connection(bob);
    assert_int_equal(msv_client_typing(alice, to_bob[0]), MSV_OK);
    assert_int_equal(msv_client_edit(alice, id, "v1"), MSV_OK);
    nanosleep(&pause, NULL);
    assert_int_equal(msv_client_edit(alice, id, "v2"), MSV_OK);
    test_server_stop(&s);
    queue_reversed(&s, bob->device_id);
    assert_int_equal(server_count(&s, "SELECT count(*) FROM saved;"), 3);
    test_server_start(&s);
    receive_notices(bob, &notes);
    assert_text(bob, id, "v2");

    /* the same three again */
    drop_connection(bob);
    test_server_stop(&s);
    queue_replayed(&s);
    test_server_start(&s);
    receive_notices(bob, &notes);
    assert_int_equal(notes.n, 0);
    assert_text(bob, id, "v2");
    /* acknowledged, not offered again */
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM queue WHERE device_id = %llu;",
             (unsigned long long)bob->device_id);
    assert_int_equal(server_count(&s, sql), 0);

    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * Disappearing-message timers arrive out of order (a relay holding the first
 * change back, then replaying both): the newer change stays in force, the
 * older one changes nothing and shows nothing; a message sent then carries
 * the timer and counts down on the receiver only once read.
 */
static void test_timer_changes_in_order(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"}, *to_alice[1] = {"alice@example.org"};
    struct msv_message_rec *m = NULL;
    struct notices notes;
    uint32_t timer_s = 0;
    uint8_t id[16];
    struct timespec pause = {0, 20 * 1000000L};

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_of_suites(&s, "alice", to_alice[0], MSV_SUITE_MODERN, 0);
    bob = test_client_of_suites(&s, "bob", to_bob[0], MSV_SUITE_MODERN, 0);
    assert_int_equal(msv_client_timer_set(alice, to_bob[0], 10), MSV_ERR_INVALID);
    assert_int_equal(msv_client_timer_set(alice, to_bob[0], MSV_TIMER_MAX_S + 1), MSV_ERR_INVALID);
    drop_connection(bob);
    assert_int_equal(msv_client_timer_set(alice, to_bob[0], 3600), MSV_OK);
    nanosleep(&pause, NULL);
    assert_int_equal(msv_client_timer_set(alice, to_bob[0], 7200), MSV_OK);
    test_server_stop(&s);
    queue_reversed(&s, bob->device_id);
    assert_int_equal(server_count(&s, "SELECT count(*) FROM saved;"), 2);
    test_server_start(&s);
    receive_notices(bob, &notes);
    assert_int_equal(notes.n, 1);
    assert_string_equal(notes.text[0], "alice@example.org set disappearing messages to 2h");
    assert_int_equal(msv_client_timer_get(bob, to_alice[0], &timer_s), MSV_OK);
    assert_int_equal(timer_s, 7200);

    /* both again: nothing changes */
    drop_connection(bob);
    test_server_stop(&s);
    queue_replayed(&s);
    test_server_start(&s);
    receive_notices(bob, &notes);
    assert_int_equal(notes.n, 0);
    assert_int_equal(msv_client_timer_get(bob, to_alice[0], &timer_s), MSV_OK);
    assert_int_equal(timer_s, 7200);

    /* bob's answer goes under the timer; alice's copy counts down, bob's only once read */
    assert_int_equal(msv_client_send(bob, to_alice, 1, "under the timer", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(msv_client_db_message_get(bob->db, id, &m), MSV_OK);
    assert_int_equal(m->timer_s, 7200);
    assert_true(m->expires_at_ms >= m->sent_at_ms + 7200000);
    msv_messages_free(m, 1);
    drop_connection(alice); /* hers went with the server's restarts */
    receive_all(alice);
    assert_int_equal(msv_client_db_message_get(alice->db, id, &m), MSV_OK);
    assert_int_equal(m->timer_s, 7200);
    assert_int_equal(m->expires_at_ms, 0);
    msv_messages_free(m, 1);

    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* Sends wire as it is from one client to another's device (suite modern), as the relay gets it. */
static void send_raw(struct msv_client *from, struct msv_client *to, const uint8_t *wire,
                     size_t len)
{
    struct msv_outgoing out = {to->device_id, MSV_SUITE_MODERN, wire, len};
    const char *handle = to->handle;
    uint8_t send_id[16];

    msv_random_bytes(send_id, sizeof(send_id));
    assert_int_equal(msv_client_connect(from), MSV_OK);
    assert_int_equal(msv_request_send(from->conn, send_id, &handle, 1, &out, 1, NULL,
                                      TEST_TIMEOUT_MS, NULL, NULL),
                     MSV_OK);
}

/*
 * A contact whose client skips the signature check (the test signs with
 * bob's key to get past alice's own) starts a session naming one of bob's
 * one-time prekeys as the signed prekey: bob refuses it, since a one-time
 * prekey in that place would never be deleted.
 */
static void test_prekey_message_names_one_time_as_signed(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = "one-time as signed"};
    struct msv_prekey_bundle b = {0};
    struct msv_session *sess = NULL;
    const char *to[1] = {"bob@example.org"};
    msv_frame *r = NULL;
    uint8_t msg[10 + 4 + 32], sig[MSV_SIGNATURE_MAX], *pt = NULL, *wire = NULL;
    size_t sig_len = 0, pt_len = 0, wire_len = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to[0]);
    assert_int_equal(msv_client_connect(alice), MSV_OK);
    assert_int_equal(msv_request_prekey_claim(alice->conn, &bob->device_id, 1, 0, TEST_TIMEOUT_MS,
                                              &r, &alice->why),
                     MSV_OK);
    assert_non_null(r->prekey_bundles->bundles[0]->one_time);
    b.signed_id = r->prekey_bundles->bundles[0]->one_time->id;
    memcpy(b.signed_pk, r->prekey_bundles->bundles[0]->one_time->key.data, 32);
    msv_frame_free(r);
    memcpy(msg, "MSV-spk-v1", 10);
    msg[10] = (uint8_t)(b.signed_id >> 24);
    msg[11] = (uint8_t)(b.signed_id >> 16);
    msg[12] = (uint8_t)(b.signed_id >> 8);
    msg[13] = (uint8_t)b.signed_id;
    memcpy(msg + 14, b.signed_pk, 32);
    assert_int_equal(msv_identity_sign(bob->id, msg, sizeof(msg), sig, &sig_len), MSV_OK);
    assert_int_equal(sig_len, 64);
    memcpy(b.signed_sig, sig, 64);
    assert_int_equal(msv_session_initiate(alice->id, msv_identity_public(bob->id), &b, &sess),
                     MSV_OK);
    msv_random_bytes(p.message_id, MSV_ID_LEN);
    assert_int_equal(msv_payload_encode(&p, &pt, &pt_len), MSV_OK);
    assert_int_equal(msv_session_encrypt(sess, pt, pt_len, &wire, &wire_len), MSV_OK);
    send_raw(alice, bob, wire, wire_len);
    receive_all(bob);
    assert_false(received_text(bob, "one-time as signed"));
    assert_true(has_prekey_secret(bob, b.signed_id)); /* not taken for a signed prekey */
    msv_session_free(sess);
    free(wire);
    free(pt);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* Stops the server, runs sql on its database and starts it again; c1 and c2 reconnect. */
static void server_edit(struct test_server *s, const char *sql, struct msv_client *c1,
                        struct msv_client *c2)
{
    drop_connection(c1);
    drop_connection(c2);
    test_server_stop(s);
    server_sql(s, sql);
    test_server_start(s);
}

/*
 * alice's first two messages both carry the X3DH prefix (no one-time prekey
 * left). The relay holds the second back until bob's session with her is
 * gone, then delivers it: bob does not answer the same base key twice, so
 * no stale session comes back.
 */
static void test_replayed_first_message(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"};
    char sql[600];
    uint8_t id[16];
    unsigned long long bd;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to_bob[0]);
    bd = (unsigned long long)bob->device_id;
    snprintf(sql, sizeof(sql), "DELETE FROM one_time_prekeys WHERE device_id = %llu;", bd);
    server_edit(&s, sql, alice, bob);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "second", NULL, 0, NULL, id), MSV_OK);
    snprintf(sql, sizeof(sql),
             "CREATE TABLE held AS SELECT * FROM queue WHERE id = (SELECT max(id) FROM queue "
             "WHERE device_id = %llu);"
             "DELETE FROM queue WHERE id = (SELECT id FROM held);",
             bd);
    server_edit(&s, sql, alice, bob);
    receive_all(bob);
    assert_true(received_text(bob, "first"));
    assert_true(has_session(bob, alice));
    /* later, bob's session with alice is gone (a reset, say); then the held message comes */
    assert_int_equal(msv_sessions_forget(bob, alice->device_id), MSV_OK);
    server_edit(&s,
                "INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext, "
                "enqueued_ms, expires_ms) SELECT device_id, sender_device, sender_handle, suite, "
                "ciphertext, enqueued_ms, expires_ms FROM held;",
                alice, bob);
    receive_all(bob);
    assert_false(received_text(bob, "second"));
    assert_false(has_session(bob, alice));
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* A message payload with text, encoded (caller frees *pt). */
static void message_payload(const char *text, uint8_t **pt, size_t *pt_len)
{
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text};

    msv_random_bytes(p.message_id, MSV_ID_LEN);
    assert_int_equal(msv_payload_encode(&p, pt, pt_len), MSV_OK);
}

/*
 * Sessions belong to a peer: device id, handle and identity. Should the
 * directory list alice's session partner's device id under another handle
 * or identity (mallory's), alice does not seal for it with bob's session, and
 * bob does not open with his session with alice a message that claims
 * another sender for that device id.
 */
static void test_sessions_bound_to_peer(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *mallory;
    struct msv_session_update u;
    uint8_t *pt = NULL, *wire = NULL, *got = NULL;
    size_t pt_len = 0, wire_len = 0, got_len = 0;

    (void)state;
    start_pair(&s, &alice, &bob);
    mallory = client_for(&s, "mallory", "mallory@example.org");
    message_payload("for whom?", &pt, &pt_len);
    /* bob's device id, mallory's handle and key: not bob's session */
    assert_int_equal(msv_sessions_seal(alice, mallory->handle, bob->device_id,
                                       msv_identity_public(mallory->id), MSV_SUITE_MODERN, pt,
                                       pt_len, &wire, &wire_len),
                     MSV_OK);
    assert_int_not_equal(wire[0], MSV_WIRE_RATCHET);
    assert_int_not_equal(msv_sessions_open(bob, alice->handle, alice->device_id,
                                           msv_identity_public(alice->id), wire, wire_len, &got,
                                           &got_len, &u),
                         MSV_OK);
    msv_sessions_discard(&u);
    free(wire);
    /* a message in alice's session with bob, claimed for alice's device id by mallory */
    assert_int_equal(msv_sessions_seal(alice, bob->handle, bob->device_id,
                                       msv_identity_public(bob->id), MSV_SUITE_MODERN, pt, pt_len,
                                       &wire, &wire_len),
                     MSV_OK);
    assert_int_equal(wire[0], MSV_WIRE_RATCHET);
    assert_int_not_equal(msv_sessions_open(bob, mallory->handle, alice->device_id,
                                           msv_identity_public(mallory->id), wire, wire_len, &got,
                                           &got_len, &u),
                         MSV_OK);
    msv_sessions_discard(&u);
    /* the true sender reads */
    assert_int_equal(msv_sessions_open(bob, alice->handle, alice->device_id,
                                       msv_identity_public(alice->id), wire, wire_len, &got,
                                       &got_len, &u),
                     MSV_OK);
    msv_sessions_discard(&u);
    msv_secret_free(got, got_len);
    free(wire);
    free(pt);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

/*
 * A message sent in a session two sessions back (alice started anew twice
 * while it was on its way) is still read: bob keeps several earlier
 * sessions per peer and tries them all before any reset.
 */
static void test_earlier_sessions_kept(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"};
    struct notices notes;
    uint8_t *pt = NULL, *wire = NULL, id[16];
    size_t pt_len = 0, wire_len = 0;

    (void)state;
    start_pair(&s, &alice, &bob);
    message_payload("from long ago", &pt, &pt_len);
    assert_int_equal(msv_sessions_seal(alice, bob->handle, bob->device_id,
                                       msv_identity_public(bob->id), MSV_SUITE_MODERN, pt, pt_len,
                                       &wire, &wire_len),
                     MSV_OK);
    assert_int_equal(wire[0], MSV_WIRE_RATCHET);
    for (int i = 0; i < 2; i++) {
        char text[24];

        snprintf(text, sizeof(text), "anew %d", i);
        assert_int_equal(msv_sessions_forget(alice, bob->device_id), MSV_OK);
        assert_int_equal(msv_client_send(alice, to_bob, 1, text, NULL, 0, NULL, id), MSV_OK);
        receive_all(bob);
        assert_true(received_text(bob, text));
        receive_all(alice);
    }
    send_raw(alice, bob, wire, wire_len);
    receive_notices(bob, &notes);
    assert_int_equal(notes.n, 0);
    assert_true(received_text(bob, "from long ago"));
    free(wire);
    free(pt);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A message made longer ago than envelope digests are kept (a relay could
 * hold a copy that long and offer it again) is not taken: recorded as
 * unreadable instead.
 */
static void test_message_too_old(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = "from half a year ago"};
    const char *to[1] = {"bob@example.org"};
    uint8_t *pt = NULL, *wire = NULL;
    size_t pt_len = 0, wire_len = 0;
    struct notices notes;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to[0]);
    msv_random_bytes(p.message_id, MSV_ID_LEN);
    p.sent_at_ms = (uint64_t)(msv_wall_ms() - 181LL * 24 * 3600 * 1000);
    assert_int_equal(msv_payload_encode(&p, &pt, &pt_len), MSV_OK);
    assert_int_equal(
        msv_seal(alice->id, msv_identity_public(bob->id), pt, pt_len, &wire, &wire_len), MSV_OK);
    send_raw(alice, bob, wire, wire_len);
    receive_notices(bob, &notes);
    assert_false(received_text(bob, "from half a year ago"));
    assert_int_equal(notes.n, 1);
    assert_non_null(strstr(notes.text[0], "could not be read"));
    free(wire);
    free(pt);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* The newest leaf of handle, rewritten with its first device's key replaced by key (if not NULL).
 */
static void forge_leaf(struct test_server *s, const char *handle, const uint8_t *key,
                       size_t key_len, uint8_t **leaf, size_t *len, int64_t *index)
{
    static struct msv_kt_entry e;
    sqlite3 *db = server_db(s);
    sqlite3_stmt *st = NULL;

    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT idx, leaf FROM kt_log WHERE handle = ? ORDER BY "
                                        "idx DESC LIMIT 1;",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *index = sqlite3_column_int64(st, 0);
    assert_int_equal(
        msv_kt_leaf_parse(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), &e),
        MSV_OK);
    if (key != NULL) {
        e.devices[0].identity = key;
        e.devices[0].identity_len = key_len;
    }
    assert_int_equal(msv_kt_leaf_encode(&e, leaf, len), MSV_OK);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void replace_leaf(struct test_server *s, int64_t index, const uint8_t *leaf, size_t len)
{
    char *hex = malloc(2 * len + 1), *sql = malloc(2 * len + 128);

    assert_non_null(hex);
    assert_non_null(sql);
    assert_int_equal(msv_hex_encode(leaf, len, hex, 2 * len + 1), MSV_OK);
    snprintf(sql, 2 * len + 128, "UPDATE kt_log SET leaf = x'%s' WHERE idx = %lld;", hex,
             (long long)index);
    server_sql(s, sql);
    free(hex);
    free(sql);
}

/* Appends a leaf to the stopped server's log, as a change of handle's devices would. */
static void append_leaf(struct test_server *s, const char *handle, const uint8_t *leaf, size_t len)
{
    char *hex = malloc(2 * len + 1), *sql = malloc(2 * len + 256);

    assert_non_null(hex);
    assert_non_null(sql);
    assert_int_equal(msv_hex_encode(leaf, len, hex, 2 * len + 1), MSV_OK);
    snprintf(sql, 2 * len + 256,
             "INSERT INTO kt_log (idx, handle, leaf) VALUES ((SELECT max(idx) + 1 FROM kt_log), "
             "'%s', x'%s');",
             handle, hex);
    server_sql(s, sql);
    free(hex);
    free(sql);
}

/*
 * The server is made to hand out a key of its choosing for alice, three ways:
 * a device added behind the log's back (the relay then asks bob for a device
 * the log does not list), alice's logged key rewritten in place (the log's
 * history no longer extends what bob saw), and a new log key; and it shows
 * bob an old head (a frozen view). bob refuses each, with a clear reason,
 * and seals nothing to the forged key.
 */
static void test_malicious_directory(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_identity *mallory = NULL;
    const uint8_t *key;
    uint8_t id[16], *forged = NULL, *honest = NULL;
    size_t key_len = 0, forged_len = 0, honest_len = 0;
    int64_t index = 0, honest_index = 0;
    msv_frame *devs = NULL;
    char sql[1024], log_key[160], saved_key[160], key_hex[600];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, rewritten in the store below */
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_send(bob, to, 1, "hello", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &mallory), MSV_OK);
    key = msv_public_identity_bytes(msv_identity_public(mallory), &key_len);

    /* 1. a device for alice that is not in the log (mallory's key) */
    assert_int_equal(msv_hex_encode(key, key_len, key_hex, sizeof(key_hex)), MSV_OK);
    test_server_stop(&s);
    snprintf(sql, sizeof(sql),
             "INSERT INTO devices (account_id, suite, identity, push_token, created_ms, approved) "
             "SELECT account_id, suite, x'%s', x'', 0, 1 FROM devices WHERE id = %llu;",
             key_hex, (unsigned long long)alice->device_id);
    server_sql(&s, sql);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_send(bob, to, 1, "for alice only", NULL, 0, NULL, id),
                     MSV_ERR_AGAIN);
    assert_non_null(strstr(bob->why.message, "transparency log does not list"));
    test_server_stop(&s);
    /* nothing was sealed to the unlogged device (nor queued at all: the relay wanted it) */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM queue q JOIN devices d ON q.device_id = d.id WHERE "
             "d.identity = x'%s';",
             key_hex);
    assert_int_equal(server_count(&s, sql), 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM devices WHERE identity = x'%s';", key_hex);
    assert_int_equal(server_count(&s, sql), 1);
    snprintf(sql, sizeof(sql), "DELETE FROM devices WHERE identity = x'%s';", key_hex);
    server_sql(&s, sql);

    /* 2. alice's logged key replaced by mallory's: a rewritten history */
    forge_leaf(&s, to[0], key, key_len, &forged, &forged_len, &index);
    forge_leaf(&s, to[0], msv_public_identity_bytes(msv_identity_public(alice->id), &key_len),
               key_len, &honest, &honest_len, &honest_index);
    replace_leaf(&s, index, forged, forged_len);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "rewritten"));
    test_server_stop(&s);
    replace_leaf(&s, honest_index, honest, honest_len);

    /* 3. a new log key */
    snprintf(log_key, sizeof(log_key), "%s/data/log.key", s.dir);
    snprintf(saved_key, sizeof(saved_key), "%s/log.key.saved", s.dir);
    assert_int_equal(rename(log_key, saved_key), 0);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "not the one this device pinned"));
    test_server_stop(&s);
    assert_int_equal(rename(saved_key, log_key), 0);

    /* 4. a frozen view: heads signed two days ago */
    {
        struct timespec now;
        char clock[160];

        clock_gettime(CLOCK_REALTIME, &now);
        test_server_set_clock(&s, (int64_t)now.tv_sec * 1000 - 48LL * 3600 * 1000);
        test_server_start(&s);
        drop_connection(bob);
        assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_ERR_AUTH);
        assert_non_null(strstr(bob->why.message, "hours old"));
        test_server_stop(&s);
        snprintf(clock, sizeof(clock), "%s/clock", s.dir);
        assert_int_equal(unlink(clock), 0);
    }

    /* the honest directory again: bob accepts it and writes to alice */
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(msv_client_send(bob, to, 1, "all good", NULL, 0, NULL, id), MSV_OK);
    free(forged);
    free(honest);
    msv_identity_free(mallory);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* ---- the log key rotated ------------------------------------------------------------------- */

/* Reads (old != NULL) or writes the stopped server's log key. */
static void log_key_file(struct test_server *s, uint8_t *old, const uint8_t *replacement)
{
    char path[160];
    FILE *f;

    snprintf(path, sizeof(path), "%s/data/log.key", s->dir);
    f = fopen(path, old != NULL ? "rb" : "wb");
    assert_non_null(f);
    if (old != NULL)
        assert_int_equal(fread(old, 1, 64, f), 64);
    else
        assert_int_equal(fwrite(replacement, 1, 64, f), 64);
    assert_int_equal(fclose(f), 0);
}

/*
 * Plays the operator on the stopped server: appends a rotation entry from
 * the key in log.key to a new one, signed by the old key (or, forged, by the
 * new one), and puts the new key in log.key.
 */
static void rotate_log_key(struct test_server *s, int forged, uint8_t new_sk[64])
{
    struct msv_kt_rotation r = {.time_ms = msv_wall_ms()};
    uint8_t old_sk[64], *leaf = NULL;
    char sql[600], hex[2 * MSV_KT_ROTATION_LEAF_LEN + 1];
    size_t len = 0;
    long long n = server_count(s, "SELECT count(*) FROM kt_log;");

    log_key_file(s, old_sk, NULL);
    crypto_sign_keypair(r.new_key, new_sk);
    crypto_sign_ed25519_sk_to_pk(r.old_key, old_sk);
    r.size = (uint64_t)n + 1;
    assert_int_equal(msv_kt_rotation_sign(forged ? new_sk : old_sk, r.new_key, r.size, r.signature),
                     MSV_OK);
    assert_int_equal(msv_kt_rotation_leaf_encode(&r, &leaf, &len), MSV_OK);
    assert_int_equal(msv_hex_encode(leaf, len, hex, sizeof(hex)), MSV_OK);
    snprintf(sql, sizeof(sql), "INSERT INTO kt_log (idx, handle, leaf) VALUES (%lld, '', x'%s');",
             n, hex);
    server_sql(s, sql);
    log_key_file(s, NULL, new_sk);
    free(leaf);
}

/* 1 if c pinned the public half of sk as the log key. */
static int pinned_log_key(struct msv_client *c, const uint8_t sk[64])
{
    uint8_t pk[32], *key = NULL;
    size_t len = 0;
    int same;

    crypto_sign_ed25519_sk_to_pk(pk, sk);
    assert_int_equal(msv_client_db_get(c->db, "kt_log_key", &key, &len), MSV_OK);
    same = len == 32 && memcmp(key, pk, 32) == 0;
    free(key);
    return same;
}

/* The server rotates its log key: clients follow the announced key and messages still flow. */
static void test_log_key_rotation(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t k1[64], k2[64], id[16];
    msv_frame *devs = NULL;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_send(bob, to, 1, "before the rotation", NULL, 0, NULL, id), MSV_OK);
    test_server_stop(&s);
    log_key_file(&s, k1, NULL);
    assert_true(pinned_log_key(bob, k1));

    rotate_log_key(&s, 0, k2);
    test_server_start(&s);
    drop_connection(bob);
    drop_connection(alice);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    assert_true(pinned_log_key(bob, k2));
    assert_int_equal(msv_client_send(bob, to, 1, "after the rotation", NULL, 0, NULL, id), MSV_OK);
    receive_all(alice);
    assert_true(received_text(alice, "before the rotation"));
    assert_true(received_text(alice, "after the rotation"));
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A directory that serves what its store holds (trust_store_log): a new key
 * not signed by the pinned one is refused, and so is the old key once the
 * client followed a rotation.
 */
static void test_log_key_rotation_attacks(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t k1[64], k2[64], k3[64], id[16];
    msv_frame *devs = NULL;

    (void)state;
    test_server_init(&s, "trust_store_log = true");
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_send(bob, to, 1, "hello", NULL, 0, NULL, id), MSV_OK);
    test_server_stop(&s);
    log_key_file(&s, k1, NULL);

    /* a new key announced in the log, but signed by itself, not by the pinned key */
    rotate_log_key(&s, 1, k3);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "not the one this device pinned"));
    assert_true(pinned_log_key(bob, k1));
    test_server_stop(&s);
    server_sql(&s, "DELETE FROM kt_log WHERE handle = '' AND substr(leaf, 1, 1) = x'02';");
    log_key_file(&s, NULL, k1);

    /* an honest rotation is followed; then the old key again is refused */
    rotate_log_key(&s, 0, k2);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    devs = NULL;
    assert_true(pinned_log_key(bob, k2));
    test_server_stop(&s);
    log_key_file(&s, NULL, k1);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "not the one this device pinned"));
    assert_true(pinned_log_key(bob, k2));
    test_server_stop(&s);
    log_key_file(&s, NULL, k2);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_send(bob, to, 1, "still here", NULL, 0, NULL, id), MSV_OK);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

static struct msv_client *linked_device_of(struct test_server *s, struct msv_client *c,
                                           const char *name, const char *handle, unsigned also);

static struct msv_client *linked_device_as(struct test_server *s, struct msv_client *c,
                                           const char *name, const char *handle)
{
    return linked_device_of(s, c, name, handle, 0);
}

/* Links a second device of c's account and approves it from c. */
static struct msv_client *linked_device(struct test_server *s, struct msv_client *c,
                                        const char *name)
{
    return linked_device_as(s, c, name, c->handle);
}

/* Links a device of c's account that authenticates with handle (identity flags also),
 * approved from c. */
static struct msv_client *linked_device_of(struct test_server *s, struct msv_client *c,
                                           const char *name, const char *handle, unsigned also)
{
    struct msv_client *d = NULL;
    uint8_t fp[32];
    char dir[128];
    size_t count = 0;
    int shown = 0;

    snprintf(dir, sizeof(dir), "%s/%s", s->dir, name);
    assert_int_equal(
        msv_client_create(dir, handle, "127.0.0.1", s->port, MSV_SUITE_MODERN, also, NULL, fp, &d),
        MSV_OK);
    assert_int_equal(msv_client_link(d, TEST_PASSWORD), MSV_OK);
    /* approving needs the request to join, whose key the approval signs */
    reconnect(c);
    assert_int_equal(msv_client_receive(c, 300, count_new, &shown, &count), MSV_OK);
    assert_int_equal(msv_client_approve_device(c, d->device_id), MSV_OK);
    return d;
}

/* Restarts the server with handle's newest log entry hidden from lookups (the log and its tree
 * keep it): lookups answer the entry before it. */
static void hide_newest_entry(struct test_server *s, const char *handle)
{
    char sql[256];

    test_server_stop(s);
    snprintf(sql, sizeof(sql),
             "UPDATE kt_log SET handle = 'hidden' WHERE idx = (SELECT max(idx) FROM kt_log WHERE "
             "handle = '%s');",
             handle);
    server_sql(s, sql);
    test_server_start(s);
}

/* A new server with post-quantum alice@example.org and bob@example.org. */
static void pq_pair(struct test_server *s, struct msv_client **alice, struct msv_client **bob)
{
    test_server_init(s, NULL);
    test_server_start(s);
    *alice =
        test_client_of_suites(s, "alice", "alice@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    *bob = test_client_of_suites(s, "bob", "bob@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
}

/*
 * alice remembers bob's two post-quantum devices and has a session with neither; his laptop
 * leaves his account before she writes. The session start's claim has no bundle for the laptop:
 * alice learns bob's devices from the log again, once, and the message goes to his phone; a
 * device the log still lists would be refused as withheld (K30). The rule is applied where the
 * claim's answer is read, for the session start as for the sealing key.
 */
static void test_gone_device_rechecked(void **state)
{
    struct msv_client *alice, *bob, *laptop;
    const char *to_bob[1] = {"bob@example.org"};
    uint8_t id[16];
    msv_frame *devs = NULL;
    struct test_server s;

    (void)state;
    pq_pair(&s, &alice, &bob);
    laptop = linked_device_of(&s, bob, "bob-laptop", to_bob[0], MSV_IDENTITY_PQ);
    assert_int_equal(msv_client_devices(alice, to_bob[0], &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 2);
    msv_frame_free(devs);
    assert_int_equal(msv_client_remove_device(bob, laptop->device_id), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "to the phone", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    assert_true(received_text(bob, "to the phone"));
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(laptop);
    test_server_cleanup(&s);
}

/*
 * alice removes her laptop; the server then serves bob the leaf from before
 * the removal (still in the log, with a valid proof): bob refuses it, as he
 * saw a newer entry of alice's before, and the laptop does not come back. A
 * device set learnt over a day ago is looked up again before a send.
 */
static void test_removed_device_stays_removed(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *laptop, *bob;
    msv_frame *devs = NULL;
    uint8_t id[16], *v = NULL, old[16];
    size_t len = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 2);
    msv_frame_free(devs);
    assert_int_equal(msv_client_remove_device(alice, laptop->device_id), MSV_OK);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 1);
    msv_frame_free(devs);

    /* the newest leaf hidden from the lookup (it stays in the tree): the one before is served */
    hide_newest_entry(&s, to[0]);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "older device set of alice@example.org"));
    assert_null(devs);

    /* a set learnt two days ago is learnt again before bob sends */
    test_server_stop(&s);
    server_sql(&s, "UPDATE kt_log SET handle = 'alice@example.org' WHERE handle = 'hidden';");
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_send(bob, to, 1, "hi", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_db_get(bob->db, "kt_index:alice@example.org", &v, &len), MSV_OK);
    assert_int_equal(len, 16);
    memcpy(old, v, 8);
    memset(old + 8, 0, 8);
    free(v);
    msv_put_u64be(old + 8, (uint64_t)(msv_wall_ms() - 48LL * 3600 * 1000));
    assert_int_equal(msv_client_db_set(bob->db, "kt_index:alice@example.org", old, 16), MSV_OK);
    assert_int_equal(msv_client_send(bob, to, 1, "again", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_db_get(bob->db, "kt_index:alice@example.org", &v, &len), MSV_OK);
    assert_true((int64_t)msv_get_u64be(v + 8) > msv_wall_ms() - 60000);
    free(v);
    msv_client_close(laptop);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* The key directory's part of a lookup answer: its epoch and VRF key, then its version proofs. */
static msv_err check_keydir(struct msv_client_db *db, const Msv__Wire__LookupResponse *r,
                            const struct msv_kt_head *head, int *pin, char *why, size_t len)
{
    int keydir = 0;
    msv_err err = msv_kt_check_epoch(db, r, head, pin, &keydir, why, len);

    return err == MSV_OK && keydir ? msv_kt_check_versions(r, why, len) : err;
}

/*
 * The key directory proves which device set is a handle's newest, to a device that never saw
 * it: alice removes her laptop, then the server hides that entry from carol's first lookup of
 * alice and serves the set with the laptop (still in the log, with a valid inclusion proof).
 * carol has no earlier entry of alice's to compare with; the version proof refuses it. A new
 * VRF key on the server is refused too, and the honest directory is accepted afterwards.
 */
static void test_key_directory_newest_version(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *laptop, *carol;
    msv_frame *devs = NULL;
    uint8_t *pinned = NULL;
    size_t len = 0;
    char path[320];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    carol = client_for(&s, "carol", "carol@example.org");
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(msv_client_remove_device(alice, laptop->device_id), MSV_OK);

    hide_newest_entry(&s, to[0]);
    drop_connection(carol);
    assert_int_equal(msv_client_devices(carol, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(carol->why.message, "device set of alice@example.org it shows is the "
                                               "newest one in its key directory"));
    assert_null(devs);
    assert_int_equal(msv_client_db_get(carol->db, "kt_index:alice@example.org", &pinned, &len),
                     MSV_ERR_NOT_FOUND);

    /* the honest directory: the newest set, proven, and the VRF key pinned */
    test_server_stop(&s);
    server_sql(&s, "UPDATE kt_log SET handle = 'alice@example.org' WHERE handle = 'hidden';");
    test_server_start(&s);
    drop_connection(carol);
    assert_int_equal(msv_client_devices(carol, to[0], &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 1);
    assert_int_equal(msv_client_db_get(carol->db, "kt_vrf_key", &pinned, &len), MSV_OK);
    assert_int_equal(len, 32);
    free(pinned);
    /* that answer changed: a proof byte, the root's signature, the key directory left out */
    {
        Msv__Wire__LookupResponse *r = devs->lookup_result;
        Msv__Wire__HandleDevices *hd = r->results[0];
        struct msv_kt_head head = {.size = r->head->size};
        char why[400];
        int pin = -1;

        assert_int_equal(check_keydir(carol->db, r, &head, &pin, why, sizeof(why)), MSV_OK);
        assert_int_equal(pin, 0);
        hd->version_proof.data[hd->version_proof.len / 2] ^= 1;
        assert_int_equal(check_keydir(carol->db, r, &head, &pin, why, sizeof(why)), MSV_ERR_AUTH);
        assert_non_null(strstr(why, "newest one in its key directory"));
        hd->version_proof.data[hd->version_proof.len / 2] ^= 1;
        r->head->epoch_signature.data[0] ^= 1;
        assert_int_equal(check_keydir(carol->db, r, &head, &pin, why, sizeof(why)), MSV_ERR_AUTH);
        assert_non_null(strstr(why, "root is not signed by the transparency log key"));
        r->head->epoch_signature.data[0] ^= 1;
        head.size++;
        assert_int_equal(check_keydir(carol->db, r, &head, &pin, why, sizeof(why)), MSV_ERR_AUTH);
        head.size--;
        r->head->epoch_root.len = 0;
        r->head->epoch_signature.len = 0;
        r->vrf_key.len = 0;
        assert_int_equal(check_keydir(carol->db, r, &head, &pin, why, sizeof(why)), MSV_ERR_AUTH);
        assert_non_null(strstr(why, "no longer proves"));
    }
    msv_frame_free(devs);

    /* a server whose VRF key changed: its labels are not the pinned key's */
    test_server_stop(&s);
    snprintf(path, sizeof(path), "%s/data/vrf.key", s.dir);
    assert_int_equal(unlink(path), 0);
    test_server_start(&s);
    drop_connection(carol);
    assert_int_equal(msv_client_devices(carol, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(carol->why.message, "VRF key is not the one this device pinned"));
    msv_client_close(laptop);
    msv_client_close(alice);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* Forgets both of c's connections (after the server restarted). */
static void drop_both(struct msv_client *c)
{
    drop_connection(c);
    msv_conn_close(c->sealed_conn);
    c->sealed_conn = NULL;
}

static void count_unsealed(void *ctx, const char *handle)
{
    (void)handle;
    (*(int *)ctx)++;
}

/*
 * The relay refuses bob's delivery token: alice's message goes authenticated,
 * with a notice, counted; she keeps bob's profile key, so once the relay
 * takes the token again her next message is sealed (refusing a token once
 * does not turn sealed sender off for good).
 */
static void test_sealed_sender_not_stripped(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"};
    uint8_t id[16], inner;
    int sealed, notices = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to_bob[0]);
    test_acquaint(alice, bob);
    alice->on_unsealed = count_unsealed;
    alice->ctx = &notices;
    /* alice learns bob's profile key from his receipt */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    receive_all(alice);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "sealed", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(newest_envelope(&s, bob, alice, &sealed, &inner), MSV_WIRE_SEALED);
    receive_all(bob);
    receive_all(alice);

    test_server_stop(&s);
    server_sql(&s, "CREATE TABLE saved AS SELECT id, delivery_token FROM devices;"
                   "UPDATE devices SET delivery_token = zeroblob(32);");
    test_server_start(&s);
    drop_both(alice);
    drop_both(bob);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "refused", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(notices, 1);
    assert_int_equal(msv_client_unsealed_sends(alice), 1);
    newest_envelope(&s, bob, alice, &sealed, &inner);
    assert_false(sealed);
    receive_all(bob);
    assert_true(received_text(bob, "refused"));

    test_server_stop(&s);
    server_sql(&s, "UPDATE devices SET delivery_token = (SELECT delivery_token FROM saved WHERE "
                   "saved.id = devices.id); DROP TABLE saved;");
    test_server_start(&s);
    drop_both(alice);
    drop_both(bob);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "sealed again", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(newest_envelope(&s, bob, alice, &sealed, &inner), MSV_WIRE_SEALED);
    assert_int_equal(notices, 1);
    assert_int_equal(msv_client_unsealed_sends(alice), 1);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* The first byte of the newest envelope queued for device to, which must be sealed. */
static uint8_t newest_sealed_version(struct test_server *s, const struct msv_client *to)
{
    struct test_queued *rows = NULL;
    size_t n = test_server_queued(s, &rows);
    int at = -1;
    uint8_t v;

    for (size_t i = 0; i < n; i++)
        if (rows[i].device_id == to->device_id)
            at = (int)i;
    assert_true(at >= 0);
    assert_int_equal(rows[at].suite, MSV_ENVELOPE_SEALED);
    assert_int_equal(rows[at].sender_device, 0);
    v = rows[at].ciphertext[0];
    test_queued_free(rows, n);
    return v;
}

/*
 * Sealed sender between devices of both versions: to a device whose identity says
 * post-quantum the outer layer is hybrid (0x09), to one of an earlier version it stays
 * classical (0x07), whichever the sender is, and both are read.
 */
static void test_sealed_sender_hybrid_and_classical(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    const char *to_bob[1] = {"bob@example.org"}, *to_alice[1] = {"alice@example.org"};
    uint8_t id[16];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_of_suites(&s, "alice", to_alice[0], MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    bob = client_for(&s, "bob", to_bob[0]); /* an earlier version: no [8] */
    assert_true(msv_public_identity_is_pq(msv_identity_public(alice->id)));
    assert_false(msv_public_identity_is_pq(msv_identity_public(bob->id)));
    test_acquaint(alice, bob);
    /* each learns the other's profile key */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    assert_int_equal(msv_client_send(bob, to_alice, 1, "first back", NULL, 0, NULL, id), MSV_OK);
    receive_all(alice);
    receive_all(bob);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "classical outer", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(newest_sealed_version(&s, bob), MSV_WIRE_SEALED);
    receive_all(bob);
    assert_true(received_text(bob, "classical outer"));
    assert_int_equal(msv_client_send(bob, to_alice, 1, "hybrid outer", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(newest_sealed_version(&s, alice), MSV_WIRE_SEALED_PQ);
    receive_all(alice);
    assert_true(received_text(alice, "hybrid outer"));
    assert_int_equal(msv_client_sealed_downgrades(alice), 0);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

static void count_pq_refused(void *ctx, const char *handle, uint64_t device_id, const char *warning)
{
    (void)handle;
    (void)device_id;
    (void)warning;
    (*(int *)ctx)++;
}

/*
 * A started server and three post-quantum clients: alice knows bob and carol, and has a session
 * with bob (a message each way), none with carol.
 */
static void three_pq_clients(struct test_server *s, struct msv_client **alice,
                             struct msv_client **bob, struct msv_client **carol)
{
    uint8_t id[16];

    test_server_init(s, NULL);
    test_server_start(s);
    *alice =
        test_client_of_suites(s, "alice", "alice@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    *bob = test_client_of_suites(s, "bob", "bob@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    *carol =
        test_client_of_suites(s, "carol", "carol@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    test_acquaint(*alice, *bob);
    test_acquaint(*alice, *carol);
    assert_int_equal(
        msv_client_send(*alice, (const char *[]){"bob@example.org"}, 1, "first", NULL, 0, NULL, id),
        MSV_OK);
    receive_all(*bob);
    assert_int_equal(
        msv_client_send(*bob, (const char *[]){"alice@example.org"}, 1, "back", NULL, 0, NULL, id),
        MSV_OK);
    receive_all(*alice);
}

/*
 * A server that refuses to hand out a post-quantum device's keys (busy, or "slow down") withholds
 * nothing: the send fails as a failure to reach it, waits in the outbox and goes once the server
 * answers, and no pq_refused warning blames the server: the failure says the server is busy and
 * the message is tried again. Both paths: the sealing key of a device alice has a session with
 * (bob), and the prekeys of a session start (carol). Before, each was reported as a withheld key
 * (MSV_ERR_AUTH, MSV_REFUSAL_PQ, the warning), then with the server's words alone.
 */
static void test_claim_refused_is_not_withheld(void **state)
{
    const char *to_bob[1] = {"bob@example.org"}, *to_carol[1] = {"carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t id[16];
    int warned = 0;

    (void)state;
    three_pq_clients(&s, &alice, &bob, &carol);
    alice->on_pq_refused = count_pq_refused;
    alice->ctx = &warned;
    assert_int_equal(msv_client_db_unset_prefix(alice->db, "seal-kem:"), MSV_OK);

    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "refuse_prekey_claims = true");
    test_server_start(&s);
    drop_connection(alice);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "sealed, waits", NULL, 0, NULL, id),
                     MSV_ERR_IO);
    assert_int_not_equal(alice->why.code, MSV_REFUSAL_PQ);
    assert_non_null(strstr(alice->why.message, "did not give the post-quantum sealing key"));
    /* said as what it is: the server busy, the message tried again (not "withheld") */
    assert_non_null(strstr(alice->why.message, "now (busy: too many prekey claims"));
    assert_non_null(strstr(alice->why.message, "waits in the outbox and is tried again"));
    assert_int_equal(msv_client_send(alice, to_carol, 1, "session, waits", NULL, 0, NULL, id),
                     MSV_ERR_IO);
    assert_int_not_equal(alice->why.code, MSV_REFUSAL_PQ);
    assert_non_null(strstr(alice->why.message, "did not give the post-quantum prekeys"));
    assert_non_null(strstr(alice->why.message, "now (busy: too many prekey claims"));
    assert_non_null(strstr(alice->why.message, "waits in the outbox and is tried again"));
    assert_int_equal(warned, 0);

    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    reconnect(alice); /* the outbox goes with the connection */
    drop_connection(bob);
    drop_connection(carol);
    receive_all(bob);
    receive_all(carol);
    assert_true(received_text(bob, "sealed, waits"));
    assert_true(received_text(carol, "session, waits"));
    assert_int_equal(warned, 0);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

static size_t history_count(struct msv_client *c, const char *conversation, const char *needle);
static size_t receive_now(struct msv_client *c);

struct held_receive {
    struct msv_client *c;
    msv_err err;
    size_t count;
};

static void *receive_one(void *arg)
{
    struct held_receive *r = arg;

    r->err = msv_client_receive(r->c, 3000, NULL, NULL, &r->count);
    return NULL;
}

/*
 * Two processes of bob's (a receive, then a second one whose connection replaces the first's)
 * get the same delivery, the first one before it could acknowledge it: it is taken once. Before,
 * both asked whether it was read before either had recorded it, and the second, finding its
 * message key used, recorded the message as unreadable ("ask them to send it again").
 */
static void test_two_receivers_take_once(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *bob2;
    struct held_receive r1 = {0}, r2 = {0};
    pthread_t t1, t2;
    uint8_t id[16];
    char path[200];
    int fd;

    (void)state;
    start_pair(&s, &alice, &bob);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "only once", NULL, 0, NULL, id), MSV_OK);
    snprintf(path, sizeof(path), "%s/bob", s.dir);
    assert_int_equal(msv_client_open(path, NULL, &bob2), MSV_OK);
    snprintf(path, sizeof(path), "%s/bob/sessions.lock", s.dir);
    fd = open(path, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    r1.c = bob;
    assert_int_equal(pthread_create(&t1, NULL, receive_one, &r1), 0);
    usleep(1500 * 1000); /* the first has the delivery, and waits for the lock */
    r2.c = bob2;
    /* the second goes past the deliveries lock the first holds (as a program from before it
     * would): its file is made again */
    snprintf(path, sizeof(path), "%s/bob/deliveries.lock", s.dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(pthread_create(&t2, NULL, receive_one, &r2), 0);
    usleep(1500 * 1000); /* the second too, its connection replacing the first's */
    assert_int_equal(flock(fd, LOCK_UN), 0);
    close(fd);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    assert_int_equal(r1.count + r2.count, 1);
    assert_int_equal(history_count(bob, "alice@example.org", "only once"), 1);
    assert_int_equal(history_count(bob, "alice@example.org", "could not be"), 0);
    msv_client_close(bob2); /* its connection holds the deliveries lock */
    /* the one whose connection was replaced takes none again while it runs: a new program */
    msv_client_close(bob);
    snprintf(path, sizeof(path), "%s/bob", s.dir);
    assert_int_equal(msv_client_open(path, NULL, &bob), MSV_OK);
    receive_all(bob);
    assert_int_equal(history_count(bob, "alice@example.org", "could not be"), 0);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* on_deliveries_wait: counts the waits told, and keeps the pid told */
struct deliveries_told {
    int times;
    char pid[24];
};

static void deliveries_told(void *ctx, const char *pid, int wait_ms)
{
    struct deliveries_told *t = ctx;

    assert_int_equal(wait_ms, 400);
    t->times++;
    snprintf(t->pid, sizeof(t->pid), "%s", pid);
}

/*
 * Two processes of bob's that take deliveries go one after the other: the second's connection
 * waits for the first's (told once, naming the holder's pid), fails MSV_ERR_BUSY past its wait
 * and leaves the first's open, and is made once the first's is closed. A connection made for a
 * receive within a command lets the lock go once the receive is over. Under the MLS lock, or
 * for the account's owner, nothing waits: the connection goes, and the server closes the
 * first's, telling it why. Before, the second's connection closed the first's at once, which
 * ended its receive with "input/output error".
 */
static void test_deliveries_one_at_a_time(void **state)
{
    const char *to_bob[1] = {"bob@example.org"}, *to_alice[1] = {"alice@example.org"};
    struct deliveries_told told = {0};
    struct test_server s;
    struct msv_client *alice, *bob, *bob2;
    char path[200], own[24], words[300];
    msv_frame *f = NULL;
    int64_t started;
    uint8_t id[16];
    msv_err err;

    (void)state;
    start_pair(&s, &alice, &bob);
    snprintf(path, sizeof(path), "%s/bob", s.dir);
    assert_int_equal(msv_client_open(path, NULL, &bob2), MSV_OK);
    msv_conn_close(bob->conn);
    bob->conn = NULL;
    bob2->takes_deliveries = 1;
    bob2->deliveries_wait_ms = 400;
    bob2->ctx = &told;
    bob2->on_deliveries_wait = deliveries_told;
    /* the first receives; its connection holds the lock while it is open */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "to the first", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    assert_true(received_text(bob, "to the first"));
    assert_true(bob->conn_for_receive);
    started = msv_mono_ms();
    assert_int_equal(msv_client_connect(bob2), MSV_ERR_BUSY);
    assert_true(msv_mono_ms() - started >= 400);
    assert_null(bob2->conn);
    snprintf(own, sizeof(own), "%ld", (long)getpid());
    assert_int_equal(told.times, 1);
    assert_string_equal(told.pid, own);
    assert_non_null(strstr(bob2->why.message, "another program of this device (pid "));
    assert_non_null(strstr(bob2->why.message, own));
    /* a send after the receive connects for requests alone, and lets the lock go */
    assert_int_equal(msv_client_send(bob, to_alice, 1, "after it", NULL, 0, NULL, id), MSV_OK);
    assert_true(bob->conn_requests_only);
    told.times = 0;
    assert_int_equal(msv_client_connect(bob2), MSV_OK);
    assert_int_equal(told.times, 0);
    msv_conn_close(bob2->conn);
    bob2->conn = NULL;
    /* under the MLS lock, and for the owner, nothing waits: the first's connection is closed,
     * and told why */
    for (int i = 0; i < 2; i++) {
        bob->takes_deliveries = 1;
        assert_int_equal(msv_client_connect(bob), MSV_OK);
        assert_false(bob->conn_requests_only);
        if (i == 0)
            bob2->mls_lock_depth = 1;
        else
            bob2->deliveries_take_over = 1;
        assert_int_equal(msv_client_connect(bob2), MSV_OK);
        assert_int_equal(told.times, 0);
        bob2->mls_lock_depth = 0;
        bob2->deliveries_take_over = 0;
        words[0] = '\0';
        while ((err = msv_conn_recv(bob->conn, TEST_TIMEOUT_MS, &f)) == MSV_OK) {
            if (f->body_case == MSV__WIRE__FRAME__BODY_ERROR && f->request_id == 0)
                snprintf(words, sizeof(words), "%.*s", (int)f->error->message.len,
                         (const char *)f->error->message.data);
            msv_frame_free(f);
        }
        assert_int_equal(err, MSV_ERR_IO);
        assert_non_null(strstr(words, "this device connected again"));
        msv_conn_close(bob->conn);
        bob->conn = NULL;
        msv_conn_close(bob2->conn);
        bob2->conn = NULL;
    }
    receive_all(alice);
    assert_true(received_text(alice, "after it"));
    msv_client_close(bob2);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A program whose connection another program of the device took (an owner starting beside a
 * receive) does not take it back: before, a send's retries connected again taking deliveries,
 * and the two took the connection from each other for as long as the retries ran. Its send
 * goes on a connection for requests alone, and its receives end with the server's words.
 */
static void test_taken_connection_not_taken_back(void **state)
{
    const char *to_alice[1] = {"alice@example.org"}, *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *bob2;
    char path[200];
    msv_frame *f = NULL;
    uint8_t id[16];
    size_t n = 0;

    (void)state;
    start_pair(&s, &alice, &bob);
    snprintf(path, sizeof(path), "%s/bob", s.dir);
    assert_int_equal(msv_client_open(path, NULL, &bob2), MSV_OK);
    msv_conn_close(bob->conn);
    bob->conn = NULL;
    bob->takes_deliveries = 1;
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_false(bob->conn_requests_only);
    bob2->takes_deliveries = 1;
    bob2->deliveries_take_over = 1;
    assert_int_equal(msv_client_connect(bob2), MSV_OK);
    assert_int_equal(msv_client_send(bob, to_alice, 1, "while taken", NULL, 0, NULL, id), MSV_OK);
    assert_true(bob->conn_requests_only);
    /* the owner's connection was left alone: no closing words came on it */
    assert_int_equal(msv_conn_recv(bob2->conn, 300, &f), MSV_ERR_AGAIN);
    receive_all(alice);
    assert_true(received_text(alice, "while taken"));
    /* what comes is the owner's; the other's receive ends at once, saying why */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "to the owner", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_receive(bob, 200, NULL, NULL, &n), MSV_ERR_IO);
    assert_int_equal(n, 0);
    assert_non_null(strstr(bob->why.message, "this device connected again"));
    assert_int_equal(msv_conn_recv(bob2->conn, TEST_TIMEOUT_MS, &f), MSV_OK);
    assert_int_equal(f->body_case, MSV__WIRE__FRAME__BODY_DELIVER);
    msv_frame_free(f);
    msv_client_close(bob2);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

static size_t outbox_size(struct msv_client *c);

/*
 * A message with a disappearing-message timer whose timer runs out while it still waits in the
 * outbox (the server out of reach) is deleted unsent, outbox copy and all, and the conversation
 * says so. Before, it vanished unsent with nothing said, the conversation still showing it as
 * waiting to go.
 */
static void test_expired_in_outbox_is_said(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    char path[1200];
    sqlite3 *db = NULL;
    uint8_t id[16];
    size_t n = 0;

    (void)state;
    start_pair(&s, &alice, &bob);
    assert_int_equal(msv_client_timer_set(alice, to_bob[0], 60), MSV_OK);
    test_server_stop(&s);
    drop_connection(alice);
    assert_int_not_equal(msv_client_send(alice, to_bob, 1, "gone unsent", NULL, 0, NULL, id),
                         MSV_OK);
    assert_int_equal(outbox_size(alice), 1);
    /* its timer runs out */
    snprintf(path, sizeof(path), "%s/state.db", alice->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, TEST_TIMEOUT_MS);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE messages SET expires_at_ms = 1 WHERE text = "
                                  "'gone unsent';",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(msv_client_expire(alice, NULL, NULL, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(outbox_size(alice), 0);
    assert_int_equal(history_count(alice, NULL, "gone unsent"), 0);
    assert_int_equal(
        history_count(
            alice, NULL,
            "a message with a disappearing-message timer may not have reached bob@example.org"),
        1);
    /* said once: the next expiry finds nothing */
    assert_int_equal(msv_client_expire(alice, NULL, NULL, &n), MSV_OK);
    assert_int_equal(history_count(alice, NULL, "may not have reached bob@example.org"), 1);
    test_server_start(&s);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A connection made while the session lock (or the MLS lock) is held does not send the outbox:
 * its sends take the session lock, and under the MLS lock that waited for a process waiting for
 * the MLS lock under the session lock (a receive taking a group's delivery). It goes once the
 * lock is let go: before a receive waits, or after the command. Before, the reconnection sent
 * it at once; and then (a second defect) a receive left it for the command's end.
 */
static void test_outbox_not_sent_under_a_lock(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t id[16];
    size_t n = 0;

    (void)state;
    start_pair(&s, &alice, &bob);
    test_server_stop(&s);
    drop_connection(alice);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "queued", NULL, 0, NULL, id), MSV_ERR_IO);
    assert_int_equal(outbox_size(alice), 1);
    test_server_start(&s);
    for (int lock = 0; lock < 2; lock++) {
        if (lock == 0)
            assert_int_equal(client_sessions_hold(alice), MSV_OK);
        else
            assert_int_equal(
                client_lock_nested(alice, "mls.lock", &alice->mls_lock_fd, &alice->mls_lock_depth),
                MSV_OK);
        reconnect(alice);
        assert_int_equal(outbox_size(alice), 1);
        /* still held: after the command, it waits */
        assert_int_equal(msv_client_sync_flush(alice, NULL), MSV_OK);
        assert_int_equal(outbox_size(alice), 1);
        if (lock == 0)
            client_sessions_release(alice);
        else
            client_unlock_nested(&alice->mls_lock_fd, &alice->mls_lock_depth);
    }
    /* once the lock is let go, a receive (one that may wait long: the daemon's, a
     * "receive --wait") sends it before it waits; before, it waited for the command's end */
    alice->receive_until_synced = 0; /* one that waits: done after 200 ms of quiet */
    assert_int_equal(msv_client_receive(alice, 200, NULL, NULL, &n), MSV_OK);
    assert_int_equal(outbox_size(alice), 0);
    assert_int_equal(msv_client_sync_flush(alice, NULL), MSV_OK);
    assert_int_equal(outbox_size(alice), 0);
    drop_connection(bob); /* of the server before its restart */
    receive_all(bob);
    assert_true(received_text(bob, "queued"));
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A send told to slow down is tried again on a new connection, whose flush of the outbox must
 * leave that send's own message to it: the message is accepted once. Before, the flush sent it
 * (it was in the outbox, queued until accepted), and the send sent it again.
 */
static void test_retried_send_goes_once(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    unsigned long long before;
    uint8_t id[16];

    (void)state;
    test_server_init(&s, "[relay]\nsend_rate = 2\nsend_burst = 1\nsealed_rate = 2\n"
                         "sealed_burst = 1\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", to_bob[0]);
    test_acquaint(alice, bob);
    alice->send_backoff_ms = 400; /* 0.4, 0.8, 1.6 s: the bucket fills again within them */
    usleep(1000 * 1000);
    before = test_server_metric(&s, "envelopes_enqueued_total");
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "second", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(test_server_metric(&s, "envelopes_enqueued_total") - before, 2);
    assert_int_equal(outbox_size(alice), 0);
    receive_all(bob);
    assert_true(received_text(bob, "second"));
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A dishonest directory answers alice's lookup of bob with mallory's result, proven as
 * mallory's: alice refuses it (before, she sealed "to bob" for mallory's device, and no monitor
 * or auditor could see it: nothing in the log or the tree changed). Her message to bob and carol
 * goes to carol, and her history says why bob did not get it (before, it failed whole).
 */
static void test_lookup_for_another_handle_refused(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    const char *to_both[2] = {"bob@example.org", "carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *mallory, *carol;
    msv_frame *devs = NULL;
    uint8_t id[16];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    mallory = client_for(&s, "mallory", "mallory@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "lookup_substitute = bob@example.org mallory@example.org");
    test_server_start(&s);
    drop_connection(alice);
    assert_int_equal(msv_client_devices(alice, to_bob[0], &devs), MSV_ERR_AUTH);
    assert_null(devs);
    assert_non_null(strstr(alice->why.message, "another handle than the one asked"));
    assert_int_not_equal(msv_client_send(alice, to_bob, 1, "for bob alone", NULL, 0, NULL, id),
                         MSV_OK);
    assert_non_null(strstr(alice->why.message, "another handle than the one asked"));
    /* to bob and carol: carol's result stands, bob is refused and told of */
    assert_int_equal(msv_client_send(alice, to_both, 2, "for bob and carol", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(history_count(alice, "bob@example.org",
                                   "not sent to bob@example.org: the "
                                   "directory answered the lookup"),
                     1);
    drop_connection(mallory);
    receive_all(mallory);
    assert_false(received_text(mallory, "for bob alone"));
    assert_false(received_text(mallory, "for bob and carol"));
    drop_connection(carol);
    receive_all(carol);
    assert_true(received_text(carol, "for bob and carol"));
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(mallory);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* The history status of c's outgoing message text ("" if none). */
static void outgoing_status(struct msv_client *c, const char *text, char *status, size_t len)
{
    struct msv_message_rec *hist = NULL;
    size_t n = 0;

    status[0] = '\0';
    assert_int_equal(msv_client_db_history(c->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    for (size_t i = 0; i < n; i++)
        if (hist[i].outgoing && hist[i].text != NULL && strcmp(hist[i].text, text) == 0)
            snprintf(status, len, "%s", hist[i].status);
    msv_messages_free(hist, n);
}

struct held {
    uint8_t id[16];
    int n;
};

static void count_held(void *ctx, const uint8_t id[16], const char *reason)
{
    struct held *h = ctx;

    assert_non_null(strstr(reason, "did not give the post-quantum prekeys"));
    memcpy(h->id, id, 16);
    h->n++;
}

/* How many envelopes the relay holds for device. */
static size_t queued_for(struct test_server *s, uint64_t device)
{
    struct test_queued *rows = NULL;
    size_t n = test_server_queued(s, &rows), found = 0;

    for (size_t i = 0; i < n; i++)
        found += rows[i].device_id == device;
    test_queued_free(rows, n);
    return found;
}

/* c's outbox entry id, queued again at created_ms (its payload, and so its writing, as before). */
static void queued_later(struct msv_client *c, const uint8_t id[16], int64_t created_ms)
{
    struct msv_outbox_rec *o = NULL;
    size_t n = 0, found = 0;

    assert_int_equal(msv_client_db_outbox(c->db, &o, &n), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        if (memcmp(o[i].message_id, id, 16) != 0)
            continue;
        found++;
        assert_int_equal(msv_client_db_outbox_settle(c->db, id, NULL), MSV_OK);
        assert_int_equal(msv_client_db_outbox_put(c->db, NULL, id, o[i].recipients, o[i].payload,
                                                  o[i].payload_len, created_ms),
                         MSV_OK);
    }
    msv_outbox_free(o, n);
    assert_int_equal(found, 1);
}

/* alice's outbox entry id made owed to handle alone, queued days ago. */
static void owed_since(struct msv_client *alice, const uint8_t id[16], const char *handle, int days)
{
    char recipients[300];

    queued_later(alice, id, msv_wall_ms() - (int64_t)days * 86400000);
    snprintf(recipients, sizeof(recipients), "%s\n", handle);
    assert_int_equal(msv_client_db_outbox_owed(alice->db, id, recipients, NULL), MSV_OK);
}

/*
 * A message owed to a handle whose directory entry has not checked out for 30 days is given
 * up: the conversation says that handle never got it, and the outbox lets it go (before, it
 * was tried at every connection for ever). One owed for 29 days still goes once it can.
 */
static void test_owed_given_up_after_30_days(void **state)
{
    const char *to_bob[1] = {"bob@example.org"}, *to_carol[1] = {"carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    struct msv_outbox_rec *o = NULL;
    uint8_t old[16], recent[16];
    size_t n = 0;

    (void)state;
    three_pq_clients(&s, &alice, &bob, &carol);
    test_server_stop(&s);
    drop_connection(alice);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "owed too long", NULL, 0, NULL, old),
                     MSV_ERR_IO);
    assert_int_equal(msv_client_send(alice, to_carol, 1, "owed a while", NULL, 0, NULL, recent),
                     MSV_ERR_IO);
    owed_since(alice, old, "bob@example.org", 31);
    owed_since(alice, recent, "carol@example.org", 29);
    test_server_start(&s);
    assert_int_equal(msv_client_owed_given_up(alice), 0);
    reconnect(alice); /* the outbox goes with the connection */
    assert_int_equal(msv_client_db_outbox(alice->db, &o, &n), MSV_OK);
    msv_outbox_free(o, n);
    assert_int_equal(n, 0);
    assert_int_equal(msv_client_owed_given_up(alice), 1); /* counted, bob's alone */
    assert_int_equal(history_count(alice, "bob@example.org", "bob@example.org never got a message"),
                     1);
    assert_int_equal(history_count(alice, "carol@example.org", "never got"), 0);
    assert_int_equal(history_count(alice, "carol@example.org", "sent to carol@example.org now"), 1);
    drop_connection(bob);
    drop_connection(carol);
    receive_all(bob);
    assert_false(received_text(bob, "owed too long"));
    receive_all(carol);
    assert_true(received_text(carol, "owed a while"));
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * A message of the outbox that cannot go now does not hold back the other conversations: the
 * server refuses the prekeys carol's first message needs (a failure to reach, for the moment),
 * and bob's message, queued after it, goes in the same flush; carol's second one waits behind
 * her first (their order), and the failure is kept and told for her first alone. Before, the
 * flush stopped at carol's first message and bob's waited for the next command.
 */
static void test_outbox_goes_on_past_a_failure(void **state)
{
    const char *to_bob[1] = {"bob@example.org"}, *to_carol[1] = {"carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t carol1[16], carol2[16], bob1[16];
    struct held held = {{0}, 0};
    char status[16], *reason = NULL;

    (void)state;
    three_pq_clients(&s, &alice, &bob, &carol);
    alice->on_outbox_held = count_held;
    alice->ctx = &held;

    /* the server out of reach: all three wait in the outbox, carol's first oldest */
    test_server_stop(&s);
    drop_connection(alice);
    assert_int_equal(msv_client_send(alice, to_carol, 1, "carol one", NULL, 0, NULL, carol1),
                     MSV_ERR_IO);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "bob one", NULL, 0, NULL, bob1), MSV_ERR_IO);
    assert_int_equal(msv_client_send(alice, to_carol, 1, "carol two", NULL, 0, NULL, carol2),
                     MSV_ERR_IO);
    assert_int_equal(held.n, 0);

    snprintf(s.extra, sizeof(s.extra), "refuse_prekey_claims = true");
    test_server_start(&s);
    reconnect(alice); /* the outbox goes with the connection */
    drop_connection(bob);
    drop_connection(carol);
    receive_all(bob);
    assert_true(received_text(bob, "bob one"));
    outgoing_status(alice, "bob one", status, sizeof(status));
    assert_string_equal(status, "sent");
    receive_all(carol);
    assert_false(received_text(carol, "carol one"));
    assert_false(received_text(carol, "carol two"));
    outgoing_status(alice, "carol one", status, sizeof(status));
    assert_string_equal(status, "queued");
    outgoing_status(alice, "carol two", status, sizeof(status));
    assert_string_equal(status, "queued");
    /* told and kept for carol's first alone; her second was not tried */
    assert_int_equal(held.n, 1);
    assert_memory_equal(held.id, carol1, 16);
    assert_int_equal(msv_client_outbox_held(alice, carol1, &reason), MSV_OK);
    assert_non_null(strstr(reason, "did not give the post-quantum prekeys"));
    free(reason);
    assert_int_equal(msv_client_outbox_held(alice, carol2, &reason), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_outbox_held(alice, bob1, &reason), MSV_ERR_NOT_FOUND);

    /* once the server answers, both of carol's go, and the kept failure is forgotten */
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    reconnect(alice);
    drop_connection(carol);
    receive_all(carol);
    assert_true(received_text(carol, "carol one"));
    assert_true(received_text(carol, "carol two"));
    outgoing_status(alice, "carol two", status, sizeof(status));
    assert_string_equal(status, "sent");
    assert_int_equal(msv_client_outbox_held(alice, carol1, &reason), MSV_ERR_NOT_FOUND);
    assert_int_equal(held.n, 1);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* The u32be id a prekey setting of c begins with (0: none). */
static uint32_t prekey_setting(struct msv_client *c, const char *which)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint32_t id = 0;

    if (msv_client_db_get(c->db, which, &v, &len) == MSV_OK && len >= 4)
        id = msv_get_u32be(v);
    free(v);
    return id;
}

/*
 * Sets a prekey setting of c: id, and unless since is negative the u64be time in ms since it
 * is in use after it; id 0 deletes the setting.
 */
static void set_prekey_setting(struct msv_client *c, const char *which, uint32_t id, int64_t since)
{
    uint8_t v[12];

    msv_put_u32be(v, id);
    msv_put_u64be(v + 4, (uint64_t)(since < 0 ? 0 : since));
    if (id == 0)
        assert_int_equal(msv_client_db_unset(c->db, which), MSV_OK);
    else
        assert_int_equal(msv_client_db_set(c->db, which, v, since < 0 ? 4 : 12), MSV_OK);
}

/* Starts s (stopped) storing prekey uploads without answering them, and connects c to it. */
static void connect_answer_lost(struct test_server *s, struct msv_client *c)
{
    msv_err lost;

    snprintf(s->extra, sizeof(s->extra), "drop_prekey_answers = true");
    test_server_start(s);
    drop_connection(c);
    lost = msv_client_connect(c); /* publishes: stored, the answer lost */
    (void)lost;
    drop_connection(c);
}

/*
 * Post-quantum alice, bob and dave on a new server, alice and dave acquainted with bob, alice
 * holding bob's profile key (her sends to him are sealed).
 */
static void three_pq(struct test_server *s, struct msv_client **alice, struct msv_client **bob,
                     struct msv_client **dave)
{
    const char *to_alice[1] = {"alice@example.org"};
    uint8_t id[16];

    test_server_init(s, NULL);
    test_server_start(s);
    *alice = test_client_of_suites(s, "alice", to_alice[0], MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    *bob = test_client_of_suites(s, "bob", "bob@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    *dave = test_client_of_suites(s, "dave", "dave@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    test_acquaint(*alice, *bob);
    test_acquaint(*dave, *bob);
    assert_int_equal(msv_client_send(*bob, to_alice, 1, "hello", NULL, 0, NULL, id), MSV_OK);
    receive_all(*alice);
}

/* Sends bob a first message from dave (a session start) and a sealed one from alice, made with
 * the keys the server holds now (alice's kept sealing key of bob forgotten). */
static void send_with_new_keys(struct msv_client *alice, struct msv_client *dave)
{
    const char *to_bob[1] = {"bob@example.org"};
    uint8_t id[16];

    assert_int_equal(
        msv_client_send(dave, to_bob, 1, "a session with the new prekey", NULL, 0, NULL, id),
        MSV_OK);
    assert_int_equal(msv_client_db_unset_prefix(alice->db, "seal-kem:"), MSV_OK);
    assert_int_equal(
        msv_client_send(alice, to_bob, 1, "sealed to the new KEM prekey", NULL, 0, NULL, id),
        MSV_OK);
}

/*
 * bob's rotation of his signed prekey and last-resort KEM prekey reached the server, but the
 * answer was lost. Senders use the new keys at once: dave's first message (a session started
 * with the new signed prekey) and alice's sealed one (to the new KEM prekey) are read on
 * bob's same connection, before anything is settled; his next connection learns from the
 * server which keys it holds and records them as in use. Before, both were refused until the
 * next rotation, a week later.
 */
static void test_lost_prekey_answer(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *dave;
    uint32_t spk_new, spk_was, kem_new, kem_was;

    (void)state;
    three_pq(&s, &alice, &bob, &dave);

    /* in use for over a week: the next publish rotates both */
    spk_was = prekey_setting(bob, "signed-prekey");
    kem_was = prekey_setting(bob, "kem-last-resort");
    set_prekey_setting(bob, "signed-prekey", spk_was, 0);
    assert_int_equal(msv_sessions_publish(bob), MSV_OK);
    spk_new = prekey_setting(bob, "signed-prekey");
    kem_new = prekey_setting(bob, "kem-last-resort");
    assert_true(spk_new > spk_was && kem_new > kem_was);

    /* the answer lost: bob's records as they were before it, the new keys pending */
    set_prekey_setting(bob, "signed-prekey", spk_was, msv_wall_ms());
    set_prekey_setting(bob, "signed-prekey-old", 0, -1);
    set_prekey_setting(bob, "signed-prekey-pending", spk_new, msv_wall_ms());
    set_prekey_setting(bob, "kem-last-resort", kem_was, -1);
    set_prekey_setting(bob, "kem-last-resort-old", 0, -1);
    set_prekey_setting(bob, "kem-last-resort-pending", kem_new, -1);

    send_with_new_keys(alice, dave);
    receive_all(bob); /* on the same connection: nothing settled yet */
    assert_true(received_text(bob, "a session with the new prekey"));
    assert_true(received_text(bob, "sealed to the new KEM prekey"));

    reconnect(bob); /* publishes: the server holds the pending keys */
    assert_int_equal(prekey_setting(bob, "signed-prekey"), spk_new);
    assert_int_equal(prekey_setting(bob, "signed-prekey-old"), spk_was);
    assert_int_equal(prekey_setting(bob, "signed-prekey-pending"), 0);
    assert_int_equal(prekey_setting(bob, "kem-last-resort"), kem_new);
    assert_int_equal(prekey_setting(bob, "kem-last-resort-old"), kem_was);
    assert_int_equal(prekey_setting(bob, "kem-last-resort-pending"), 0);

    /* a publish that stopped after recording the keys, before it cleared them as pending:
     * settling them again changes nothing (it used to drop the keys before at once) */
    set_prekey_setting(bob, "signed-prekey-pending", spk_new, msv_wall_ms());
    set_prekey_setting(bob, "kem-last-resort-pending", kem_new, -1);
    reconnect(bob);
    assert_int_equal(prekey_setting(bob, "signed-prekey"), spk_new);
    assert_int_equal(prekey_setting(bob, "signed-prekey-old"), spk_was);
    assert_int_equal(prekey_setting(bob, "kem-last-resort-old"), kem_was);
    assert_int_equal(prekey_setting(bob, "signed-prekey-pending"), 0);
    assert_int_equal(prekey_setting(bob, "kem-last-resort-pending"), 0);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

/*
 * The same with a real lost answer: the server stores bob's rotation of his signed prekey and
 * last-resort KEM prekey and closes the connection unanswered ([testing] drop_prekey_answers).
 * The new keys stay pending (the old ones in use), senders get the new ones from the server, and
 * bob reads both a session started with the new signed prekey and an envelope sealed to the new
 * KEM prekey; his next connection records them as in use. Before the rotation was recorded ahead
 * of its upload, bob kept the old keys as his only ones and dropped both messages.
 */
static void test_rotation_answer_dropped(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *dave;
    uint32_t spk_new, spk_was, kem_new, kem_was;

    (void)state;
    three_pq(&s, &alice, &bob, &dave);
    test_server_stop(&s);
    kem_was = prekey_setting(bob, "kem-last-resort");
    spk_was = prekey_setting(bob, "signed-prekey");
    /* in use for over a week: bob's next connection rotates both, and the answer is lost */
    set_prekey_setting(bob, "signed-prekey", spk_was, 0);
    connect_answer_lost(&s, bob);
    spk_new = prekey_setting(bob, "signed-prekey-pending");
    kem_new = prekey_setting(bob, "kem-last-resort-pending");
    assert_true(spk_new > spk_was && kem_new > kem_was);
    assert_int_equal(prekey_setting(bob, "signed-prekey"), spk_was);
    assert_int_equal(prekey_setting(bob, "kem-last-resort"), kem_was);
    test_server_stop(&s);
    assert_int_equal(server_count(&s, "SELECT max(key_id) FROM signed_prekeys"), spk_new);

    s.extra[0] = '\0';
    test_server_start(&s);
    send_with_new_keys(alice, dave);
    receive_all(bob);
    assert_true(received_text(bob, "a session with the new prekey"));
    assert_true(received_text(bob, "sealed to the new KEM prekey"));
    assert_int_equal(msv_client_sealed_unopenable(bob), 0);
    /* settled: the new ones in use, the ones before kept, none pending */
    assert_int_equal(prekey_setting(bob, "kem-last-resort") + prekey_setting(bob, "signed-prekey"),
                     kem_new + spk_new);
    assert_int_equal(prekey_setting(bob, "kem-last-resort-old"), kem_was);
    assert_int_equal(prekey_setting(bob, "signed-prekey-old"), spk_was);
    assert_int_equal(prekey_setting(bob, "kem-last-resort-pending") +
                         prekey_setting(bob, "signed-prekey-pending"),
                     0);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

struct told {
    size_t n;
    char last[1200];
};

static void keys_unpublished_told(void *ctx, const char *warning)
{
    struct told *t = ctx;

    t->n++;
    snprintf(t->last, sizeof(t->last), "%s", warning);
}

/*
 * bob's keys cannot be published when he connects (the server stores his rotation and closes
 * the connection unanswered, [testing] drop_prekey_answers): he is told, with why, and it is
 * counted; on the same connection (a daemon's) it is tried again after a minute, then after two;
 * his next connection to an honest server publishes them, silently. Before, the failure of
 * msv_sessions_publish at connect was dropped unseen.
 */
static void test_keys_unpublished_told(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *dave;
    struct told told = {0};

    (void)state;
    three_pq(&s, &alice, &bob, &dave);
    test_server_stop(&s);
    bob->ctx = &told;
    bob->on_keys_unpublished = keys_unpublished_told;
    assert_int_equal(msv_client_keys_unpublished(bob), 0);
    /* in use for over a week: bob's next connection rotates his signed prekey */
    set_prekey_setting(bob, "signed-prekey", prekey_setting(bob, "signed-prekey"), 0);
    snprintf(s.extra, sizeof(s.extra), "drop_prekey_answers = true");
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_connect(bob), MSV_OK); /* publishes: stored, the answer lost */
    assert_int_equal(told.n, 1);
    if (strstr(told.last, "could not be published") == NULL ||
        strstr(told.last, "next connection, or on this one after 60 s") == NULL)
        fail_msg("told: %s", told.last);
    assert_int_equal(msv_client_keys_unpublished(bob), 1);
    /* on the same connection (the daemon's): not before its wait, then again, the wait doubled */
    msv_client_keys_retry(bob);
    assert_int_equal(told.n, 1);
    bob->keys_retry_at = msv_mono_ms() - 1;
    msv_client_keys_retry(bob);
    assert_int_equal(told.n, 2);
    assert_int_equal(bob->keys_backoff_ms, 2 * 60 * 1000);
    assert_int_equal(msv_client_keys_unpublished(bob), 2);
    drop_connection(bob);
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    reconnect(bob);
    assert_int_equal(told.n, 2);
    assert_int_equal(msv_client_keys_unpublished(bob), 2);
    assert_int_equal(bob->keys_retry_at, 0); /* published: nothing waits to be tried again */
    assert_int_equal(prekey_setting(bob, "signed-prekey-pending"), 0);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

/*
 * A server that says "slow down" to every upload of bob's keys of one kind (option: its
 * [testing] setting; key_packages: his MLS KeyPackages, his prekeys taken) keeps them out as
 * surely as one that fails: not told at first (a limit passes in minutes), nor when the first
 * "slow down" is dated ahead of the clock (counted from now), told once it has lasted over an
 * hour, and forgotten once they are published.
 */
static void keys_limited_told(const char *option, int key_packages)
{
    struct test_server s;
    struct msv_client *alice, *bob, *dave;
    struct told told = {0};
    uint8_t *v = NULL, old[8];
    size_t len = 0;
    char sql[120];

    three_pq(&s, &alice, &bob, &dave);
    test_server_stop(&s);
    bob->ctx = &told;
    bob->on_keys_unpublished = keys_unpublished_told;
    if (key_packages) {
        snprintf(sql, sizeof(sql), "DELETE FROM mls_key_packages WHERE device_id = %llu",
                 (unsigned long long)bob->device_id);
        server_sql(&s, sql);
    } else {
        set_prekey_setting(bob, "signed-prekey", prekey_setting(bob, "signed-prekey"), 0);
    }
    snprintf(s.extra, sizeof(s.extra), "%s = true", option);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(told.n, 0);
    assert_int_equal(msv_client_db_get(bob->db, "keys-limited-since", &v, &len), MSV_OK);
    free(v);
    /* set before the clock went back: from now, not told, and so recorded */
    msv_put_u64be(old, (uint64_t)(msv_wall_ms() + 30LL * 86400 * 1000));
    assert_int_equal(msv_client_db_set(bob->db, "keys-limited-since", old, sizeof(old)), MSV_OK);
    drop_connection(bob);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(told.n, 0);
    assert_int_equal(msv_client_db_get(bob->db, "keys-limited-since", &v, &len), MSV_OK);
    assert_int_equal(len, 8);
    assert_true((int64_t)msv_get_u64be(v) <= msv_wall_ms());
    free(v);
    /* the first "slow down" was over an hour ago */
    msv_put_u64be(old, (uint64_t)(msv_wall_ms() - 2 * 3600 * 1000));
    assert_int_equal(msv_client_db_set(bob->db, "keys-limited-since", old, sizeof(old)), MSV_OK);
    drop_connection(bob);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(told.n, 1);
    if (strstr(told.last, "slow down\" to every try for over an hour") == NULL)
        fail_msg("told: %s", told.last);
    assert_int_equal(msv_client_keys_unpublished(bob), 1);
    drop_connection(bob);
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    reconnect(bob);
    assert_int_equal(told.n, 1);
    v = NULL;
    assert_int_equal(msv_client_db_get(bob->db, "keys-limited-since", &v, &len), MSV_ERR_NOT_FOUND);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

/* Prekeys (K62; before, "slow down" was never told). */
static void test_keys_limited_told(void **state)
{
    (void)state;
    keys_limited_told("limit_prekey_uploads", 0);
}

/* KeyPackages (K63; before, their "slow down" was taken as a success and never told). */
static void test_key_packages_limited_told(void **state)
{
    (void)state;
    keys_limited_told("limit_key_package_uploads", 1);
}

/*
 * A signed last-resort KEM prekey carries no date: a server can serve an older one of bob's
 * again (here the one before his rotation, with his one-time KEM prekeys withheld). alice has
 * seen the newer one (as bob's sealing key), so a session start with the older one is refused
 * as a withheld key (MSV_REFUSAL_PQ), nothing sent. Before, alice started the session with it.
 */
static void test_old_last_resort_refused(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *dave;
    uint8_t id[16];

    (void)state;
    three_pq(&s, &alice, &bob, &dave);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    test_server_stop(&s);
    server_sql(&s, "CREATE TABLE old_lr AS SELECT * FROM kem_prekeys WHERE last_resort = 1;");
    test_server_start(&s);
    /* bob rotates; alice learns the new one as his sealing key */
    set_prekey_setting(bob, "signed-prekey", prekey_setting(bob, "signed-prekey"), 0);
    reconnect(bob);
    assert_int_equal(msv_client_db_unset_prefix(alice->db, "seal-kem:"), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "second", NULL, 0, NULL, id), MSV_OK);

    /* the server serves the older one again, and no one-time KEM prekey */
    test_server_stop(&s);
    server_sql(&s, "DELETE FROM kem_prekeys WHERE device_id IN (SELECT device_id FROM old_lr); "
                   "INSERT INTO kem_prekeys SELECT * FROM old_lr;");
    test_server_start(&s);
    assert_int_equal(msv_client_db_unset_prefix(alice->db, "session:"), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "to an old key", NULL, 0, NULL, id),
                     MSV_ERR_AUTH);
    assert_int_equal(alice->why.code, MSV_REFUSAL_PQ);
    drop_connection(bob); /* its server was restarted */
    receive_all(bob);
    assert_true(received_text(bob, "second"));
    assert_false(received_text(bob, "to an old key"));
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

/*
 * Stamps ms (u64be) at offset at of every record of setting key (a header of head bytes, then
 * records of stride bytes); the number of records.
 */
static size_t stamp_records(struct msv_client *c, const char *key, size_t head, size_t stride,
                            size_t at, int64_t ms)
{
    uint8_t *v = NULL;
    size_t len = 0, n = 0;

    assert_int_equal(msv_client_db_get(c->db, key, &v, &len), MSV_OK);
    assert_true(len >= head);
    for (size_t off = head; off + stride <= len; off += stride, n++)
        msv_put_u64be(v + off + at, (uint64_t)ms);
    assert_int_equal(msv_client_db_set(c->db, key, v, len), MSV_OK);
    free(v);
    return n;
}

/* Stamps every record of c's lost prekey batches as replaced at ms. */
static void stamp_unsettled(struct msv_client *c, int64_t ms)
{
    stamp_records(c, "prekeys-unsettled", 0, 17, 9, ms);
}

/* Whether c keeps the secret of one-time prekey id (a KEM one if kem). */
static int has_setting(struct msv_client *c, int kem, long long id)
{
    char key[64];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    snprintf(key, sizeof(key), "%s:%lld", kem ? "kem-prekey" : "prekey", id);
    err = msv_client_db_get(c->db, key, &v, &len);
    free(v);
    return err == MSV_OK;
}

static void count_unopened(void *ctx, const char *warning)
{
    assert_non_null(strstr(warning, "post-quantum key this device does not hold"));
    (*(int *)ctx)++;
}

/* on_unopened: the warning of envelopes whose sending device could not be checked */
static void count_unchecked(void *ctx, const char *warning)
{
    assert_non_null(strstr(warning, "1 message(s) came that this device could not check, naming "
                                    "nobody"));
    assert_null(strstr(warning, "alice"));
    (*(int *)ctx)++;
}

/*
 * An envelope naming as its sender a device the directory does not list for the handle it names
 * (a device removed since it sent, or one the server made up) is dropped, naming nobody, but no
 * longer silently: counted, and said once. Before, nothing told the user that anything came.
 */
static void test_unlisted_sender_said(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t junk[200];
    int told = 0;

    (void)state;
    start_pair(&s, &alice, &bob);
    test_server_stop(&s);
    msv_random_bytes(junk, sizeof(junk));
    test_server_enqueue(&s, bob->device_id, alice->device_id + 777, alice->handle, MSV_SUITE_MODERN,
                        junk, sizeof(junk));
    test_server_start(&s);
    drop_connection(bob);
    bob->on_unopened = count_unchecked;
    bob->ctx = &told;
    assert_int_equal(receive_now(bob), 0);
    assert_int_equal(msv_client_senders_unchecked(bob), 1);
    assert_int_equal(told, 1);
    /* acknowledged: it does not come again, and is said once */
    drop_connection(bob);
    assert_int_equal(receive_now(bob), 0);
    msv_client_tell_unopened(bob);
    assert_int_equal(msv_client_senders_unchecked(bob), 1);
    assert_int_equal(told, 1);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * alice keeps bob's sealing key for 3 days; meanwhile bob rotates twice, so he no longer holds
 * its secret. Her envelope sealed to it cannot be opened and names nobody: bob counts it
 * (sealed-unopenable) and is told, once, that something did not arrive; nothing is read.
 */
static void test_sealed_to_key_let_go(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *dave;
    uint32_t kem_first;
    uint8_t id[16];
    int told = 0;

    (void)state;
    three_pq(&s, &alice, &bob, &dave);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    receive_all(bob);
    kem_first = prekey_setting(bob, "kem-last-resort");
    for (int i = 0; i < 2; i++) {
        set_prekey_setting(bob, "signed-prekey", prekey_setting(bob, "signed-prekey"), 0);
        reconnect(bob);
    }
    assert_false(has_setting(bob, 1, kem_first));
    assert_int_equal(msv_client_send(alice, to_bob, 1, "to a key let go", NULL, 0, NULL, id),
                     MSV_OK);
    bob->on_unopened = count_unopened;
    bob->ctx = &told;
    receive_all(bob);
    assert_false(received_text(bob, "to a key let go"));
    assert_int_equal(msv_client_sealed_unopenable(bob), 1);
    assert_int_equal(told, 1);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

/*
 * bob's upload of one-time prekeys is stored but its answer is lost, so he cannot know whether
 * the server holds them: the batches are recorded, his next connection replaces every
 * one-time prekey the server holds (none of the lost ones is handed out after that), their
 * secrets stay for messages made with keys claimed before, then go once the bound has passed,
 * counted; at most MSV_PREKEYS_UNSETTLED_MAX batches wait. Before, such secrets stayed for good.
 */
static void test_lost_one_time_prekeys_reclaimed(void **state)
{
    struct test_server s;
    struct msv_client *bob;
    size_t batches = 9;
    uint64_t reclaimed = 9;
    char sql[200];
    long long x_first, kem_first;
    uint8_t rec[8 * 17], secret[64] = {1};

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    bob = test_client_of_suites(&s, "bob", "bob@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    test_server_stop(&s);
    server_sql(&s, "DELETE FROM one_time_prekeys; DELETE FROM kem_prekeys WHERE last_resort = 0;");
    connect_answer_lost(&s, bob); /* the upload is stored; its answer never comes */
    assert_int_equal(msv_sessions_prekeys_unsettled(bob, &batches, &reclaimed), MSV_OK);
    assert_int_equal(batches, 2); /* the X25519 batch and the KEM one */
    assert_int_equal(reclaimed, 0);
    test_server_stop(&s);
    x_first = server_count(&s, "SELECT min(key_id) FROM one_time_prekeys");
    kem_first = server_count(&s, "SELECT min(key_id) FROM kem_prekeys WHERE last_resort = 0");
    assert_true(has_setting(bob, 0, x_first));
    assert_true(has_setting(bob, 1, kem_first));

    /* the next connection: every one-time prekey the server holds is replaced */
    s.extra[0] = '\0';
    test_server_start(&s);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    drop_connection(bob);
    test_server_stop(&s);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM one_time_prekeys WHERE key_id <= %lld",
             x_first + MSV_PREKEYS_BATCH - 1);
    assert_int_equal(server_count(&s, sql), 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM kem_prekeys WHERE key_id <= %lld",
             kem_first + MSV_KEM_PREKEYS_BATCH - 1);
    assert_int_equal(server_count(&s, sql), 0);
    assert_int_equal(server_count(&s, "SELECT count(*) FROM one_time_prekeys"), MSV_PREKEYS_BATCH);
    /* kept for first messages on their way, made with keys claimed before */
    assert_true(has_setting(bob, 0, x_first + MSV_PREKEYS_BATCH - 1));
    assert_int_equal(msv_sessions_prekeys_unsettled(bob, &batches, &reclaimed), MSV_OK);
    assert_int_equal(batches, 2);

    /* the bound passed: the secrets go, counted */
    stamp_unsettled(bob, msv_wall_ms() - MSV_PREKEYS_UNSETTLED_MS - 1000);
    test_server_start(&s);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(msv_sessions_prekeys_unsettled(bob, &batches, &reclaimed), MSV_OK);
    assert_int_equal(batches, 0);
    assert_int_equal(reclaimed, MSV_PREKEYS_BATCH + MSV_KEM_PREKEYS_BATCH);
    for (long long i = 0; i < MSV_PREKEYS_BATCH; i++)
        assert_false(has_setting(bob, 0, x_first + i));
    for (long long i = 0; i < MSV_KEM_PREKEYS_BATCH; i++)
        assert_false(has_setting(bob, 1, kem_first + i));

    /* bounded: with MSV_PREKEYS_UNSETTLED_MAX batches waiting, a ninth and tenth lost one
     * take the two oldest's secrets at once */
    for (int i = 0; i < MSV_PREKEYS_UNSETTLED_MAX; i++) {
        rec[17 * i] = 0;
        msv_put_u32be(rec + 17 * i + 1, 4000000000u + 10u * (uint32_t)i);
        msv_put_u32be(rec + 17 * i + 5, 10);
        msv_put_u64be(rec + 17 * i + 9, 0);
    }
    assert_int_equal(msv_client_db_set(bob->db, "prekeys-unsettled", rec, sizeof(rec)), MSV_OK);
    assert_int_equal(msv_client_db_set(bob->db, "prekey:4000000003", secret, 64), MSV_OK);
    assert_int_equal(msv_client_db_set(bob->db, "prekey:4000000013", secret, 64), MSV_OK);
    assert_int_equal(msv_client_db_set(bob->db, "prekey:4000000023", secret, 64), MSV_OK);
    test_server_stop(&s);
    server_sql(&s, "DELETE FROM one_time_prekeys; DELETE FROM kem_prekeys WHERE last_resort = 0;");
    connect_answer_lost(&s, bob);
    assert_int_equal(msv_sessions_prekeys_unsettled(bob, &batches, &reclaimed), MSV_OK);
    assert_int_equal(batches, MSV_PREKEYS_UNSETTLED_MAX);
    assert_int_equal(reclaimed, MSV_PREKEYS_BATCH + MSV_KEM_PREKEYS_BATCH + 2);
    assert_false(has_setting(bob, 0, 4000000003LL));
    assert_false(has_setting(bob, 0, 4000000013LL));
    assert_true(has_setting(bob, 0, 4000000023LL));
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A last-resort KEM secret this device keeps but does not hold as in use (from an upload the
 * server refused, or replaced twice since) opens nothing: the server serves it as bob's
 * sealing key, and alice's envelope sealed to it is not read, but counted, and bob is told
 * (naming nobody: nothing in it authenticates); the next connection erases it. Before, any
 * kept last-resort secret opened a sealed envelope, and then such a secret was kept for good.
 */
static void test_stray_last_resort_opens_nothing(void **state)
{
    const char *to_bob[1] = {"bob@example.org"}, *to_alice[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint32_t kem_new, kem_was;
    uint8_t id[16];
    int told = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_of_suites(&s, "alice", to_alice[0], MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    bob = test_client_of_suites(&s, "bob", to_bob[0], MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    test_acquaint(alice, bob);
    assert_int_equal(msv_client_send(bob, to_alice, 1, "hello", NULL, 0, NULL, id), MSV_OK);
    receive_all(alice);
    /* bob's connection takes deliveries, as an owner's: his publishing and his receive below
     * keep it (one made for a receive alone goes with it) */
    bob->takes_deliveries = 1;
    receive_all(bob);
    kem_was = prekey_setting(bob, "kem-last-resort");
    set_prekey_setting(bob, "signed-prekey", prekey_setting(bob, "signed-prekey"), 0);
    assert_int_equal(msv_sessions_publish(bob), MSV_OK);
    kem_new = prekey_setting(bob, "kem-last-resort");
    assert_true(kem_new > kem_was);
    /* bob's device holds the older key as in use; the server serves the new one */
    set_prekey_setting(bob, "kem-last-resort", kem_was, -1);
    set_prekey_setting(bob, "kem-last-resort-old", 0, -1);
    assert_int_equal(msv_client_db_unset_prefix(alice->db, "seal-kem:"), MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "to a stray key", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "again", NULL, 0, NULL, id), MSV_OK);
    bob->on_unopened = count_unopened;
    bob->ctx = &told;
    receive_all(bob);
    assert_false(received_text(bob, "to a stray key"));
    assert_int_equal(msv_client_sealed_unopenable(bob), 2);
    assert_int_equal(told, 1); /* said once a minute: the second is held back */
    bob->unopened_said_ms -= 60001;
    msv_client_tell_unopened(bob);
    assert_int_equal(told, 2); /* a minute later, the second is told of */
    msv_client_tell_unopened(bob);
    assert_int_equal(told, 2); /* and only once */
    /* bob's next connection sees that the server holds another key than his: new ones; the
     * stray secret is erased (only the one in use and the one before are kept) */
    assert_true(has_setting(bob, 1, kem_new));
    reconnect(bob);
    assert_true(prekey_setting(bob, "kem-last-resort") > kem_new);
    assert_int_equal(prekey_setting(bob, "kem-last-resort-old"), kem_was);
    assert_false(has_setting(bob, 1, kem_new));
    assert_true(has_setting(bob, 1, kem_was));
    assert_true(has_setting(bob, 1, prekey_setting(bob, "kem-last-resort")));
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* 1 if c's history holds a message recorded as unreadable. */
static int has_unreadable(struct msv_client *c)
{
    struct msv_message_rec *hist = NULL;
    size_t n = 0;
    int found = 0;

    assert_int_equal(msv_client_db_history(c->db, NULL, NULL, 0, &hist, &n), MSV_OK);
    for (size_t i = 0; i < n; i++)
        found |= hist[i].status != NULL && strcmp(hist[i].status, "unreadable") == 0;
    msv_messages_free(hist, n);
    return found;
}

/* Queues wire for device at the server (stopped), as from sender's device, unsealed. */
static void queue_envelope(struct test_server *s, uint64_t device, const struct msv_client *sender,
                           int suite, const uint8_t *wire, size_t len)
{
    test_server_enqueue(s, device, sender->device_id, sender->handle, suite, wire, len);
}

static void count_classical(void *ctx, const char *handle, uint64_t device, const char *warning)
{
    (void)device;
    assert_string_equal(handle, "carol@example.org");
    assert_non_null(strstr(warning, "came in a classical envelope"));
    (*(int *)ctx)++;
}

/*
 * Between two post-quantum devices a classical modern envelope is a downgrade (a sender never
 * makes one: it refuses such a device without a post-quantum session, K30): bob does not read
 * alice's, records it as unreadable (alice proved she sent it) and so tells his user. Sent to
 * carol, whose identity is of an earlier version, the same envelope is read. Before, bob read
 * it without a word. carol's own classical envelope to bob (she can make no other) is read,
 * but never silently: counted for her device and said (on_classical). Before, without a word.
 */
static void test_classical_envelope_between_pq_devices(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t *pt = NULL, *wire = NULL;
    size_t pt_len = 0, len = 0;
    int told = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice =
        test_client_of_suites(&s, "alice", "alice@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    bob = test_client_of_suites(&s, "bob", "bob@example.org", MSV_SUITE_MODERN, MSV_IDENTITY_PQ);
    carol = client_for(&s, "carol", "carol@example.org");
    test_acquaint(bob, alice);
    test_acquaint(carol, alice);
    test_acquaint(bob, carol);
    drop_connection(alice);
    drop_connection(bob);
    drop_connection(carol);
    test_server_stop(&s);
    message_payload("classical to a post-quantum device", &pt, &pt_len);
    assert_int_equal(msv_seal_suite(alice->id, msv_identity_public(bob->id), MSV_SUITE_MODERN, pt,
                                    pt_len, &wire, &len),
                     MSV_OK);
    queue_envelope(&s, bob->device_id, alice, MSV_SUITE_MODERN, wire, len);
    free(wire);
    wire = NULL;
    free(pt);
    message_payload("classical to an earlier device", &pt, &pt_len);
    assert_int_equal(msv_seal_suite(alice->id, msv_identity_public(carol->id), MSV_SUITE_MODERN, pt,
                                    pt_len, &wire, &len),
                     MSV_OK);
    queue_envelope(&s, carol->device_id, alice, MSV_SUITE_MODERN, wire, len);
    free(wire);
    wire = NULL;
    free(pt);
    message_payload("from an earlier device", &pt, &pt_len);
    assert_int_equal(msv_seal_suite(carol->id, msv_identity_public(bob->id), MSV_SUITE_MODERN, pt,
                                    pt_len, &wire, &len),
                     MSV_OK);
    queue_envelope(&s, bob->device_id, carol, MSV_SUITE_MODERN, wire, len);
    free(wire);
    free(pt);
    test_server_start(&s);
    bob->on_classical = count_classical;
    bob->ctx = &told;
    receive_all(bob);
    receive_all(carol);
    assert_false(received_text(bob, "classical to a post-quantum device"));
    assert_true(has_unreadable(bob));
    assert_true(received_text(carol, "classical to an earlier device"));
    assert_true(received_text(bob, "from an earlier device"));
    assert_int_equal(told, 1);
    assert_int_equal(msv_client_classical_read(bob, carol->device_id), 1);
    assert_int_equal(msv_client_classical_read(bob, alice->device_id), 0);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * A group message (Deliver.suite 160, an MlsDelivery) that this version cannot read is recorded
 * as unreadable and shown, then acknowledged; before, it was acknowledged and dropped unseen.
 */
static void test_mls_group_message_recorded(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    struct notices notes;
    static const uint8_t mls[] = "an MlsDelivery this version cannot read";

    (void)state;
    start_pair(&s, &alice, &bob);
    drop_connection(alice);
    drop_connection(bob);
    test_server_stop(&s);
    queue_envelope(&s, bob->device_id, alice, 160, mls, sizeof(mls) - 1);
    test_server_start(&s);
    receive_notices(bob, &notes);
    assert_int_equal(notes.n, 1);
    assert_non_null(strstr(notes.text[0], "a group message from alice@example.org"));
    assert_non_null(strstr(notes.text[0], "cannot read yet"));
    assert_true(has_unreadable(bob));
    receive_notices(bob, &notes); /* acknowledged once stored: nothing more comes */
    assert_int_equal(notes.n, 0);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

static void count_alarm(void *ctx, const char *warning)
{
    char *last = ctx;

    snprintf(last, 400, "%s", warning);
}

/* The alarms one call of c's monitor raises; the last warning goes to last. */
static size_t monitor(struct msv_client *c, char last[400])
{
    size_t alarms = 0;
    size_t count = 0;
    int shown = 0;

    reconnect(c);
    assert_int_equal(msv_client_receive(c, 300, count_new, &shown, &count), MSV_OK);
    last[0] = '\0';
    assert_int_equal(msv_client_monitor(c, count_alarm, last, &alarms), MSV_OK);
    return alarms;
}

/*
 * The directory logs a device for alice that none of her devices added, and
 * sends her devices a notice that her laptop approved it: the log is
 * consistent, but her signed device list has no approval of it, so bob leaves
 * it out; and the notice's approval is not signed by the laptop,
 * so both of alice's devices raise the alarm when they next watch the log,
 * naming the device, once. A device she did add (linked and approved, the
 * approval signed) raises none, on either device.
 */
static void test_owner_monitor(void **state)
{
    static struct msv_kt_entry e;
    struct test_server s;
    struct msv_client *alice, *laptop = NULL, *bob;
    struct msv_identity *mallory = NULL;
    const uint8_t *key;
    uint8_t fp[32], *leaf = NULL, *old = NULL;
    size_t key_len = 0, len = 0, old_len = 0;
    int64_t index = 0;
    long long forged_id;
    msv_frame *devs = NULL;
    char dir[128], last[400], sql[512], *hex;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts */
    /* alice links her laptop and approves it: her own doing, no alarm */
    snprintf(dir, sizeof(dir), "%s/alice-laptop", s.dir);
    assert_int_equal(msv_client_create(dir, "alice@example.org", "127.0.0.1", s.port,
                                       MSV_SUITE_MODERN, 0, NULL, fp, &laptop),
                     MSV_OK);
    assert_int_equal(msv_client_link(laptop, TEST_PASSWORD), MSV_OK);
    /* approving needs the request, whose key the approval signs */
    assert_int_equal(msv_client_approve_device(alice, laptop->device_id), MSV_ERR_NOT_FOUND);
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(msv_client_approve_device(alice, laptop->device_id), MSV_OK);
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(monitor(laptop, last), 0);

    /* the operator adds mallory's key to alice's account, and logs it */
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &mallory), MSV_OK);
    key = msv_public_identity_bytes(msv_identity_public(mallory), &key_len);
    test_server_stop(&s);
    hex = malloc(2 * key_len + 1);
    assert_non_null(hex);
    assert_int_equal(msv_hex_encode(key, key_len, hex, 2 * key_len + 1), MSV_OK);
    snprintf(sql, sizeof(sql),
             "INSERT INTO devices (account_id, suite, identity, push_token, created_ms, approved) "
             "SELECT account_id, 3, x'%s', x'', 0, 1 FROM devices WHERE id = %llu;",
             hex, (unsigned long long)alice->device_id);
    free(hex);
    server_sql(&s, sql);
    forged_id = server_count(&s, "SELECT max(id) FROM devices;");
    forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
    assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
    e.devices[e.n_devices++] =
        (struct msv_kt_device){(uint64_t)forged_id, MSV_SUITE_MODERN, key, key_len, {0}};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    append_leaf(&s, "alice@example.org", leaf, len);
    /* ... and tells alice's devices that her laptop approved it (the signature is not the
     * laptop's: the server cannot make one) */
    {
        Msv__Wire__DeviceChange dc = MSV__WIRE__DEVICE_CHANGE__INIT;
        Msv__Wire__DeviceInfo info = MSV__WIRE__DEVICE_INFO__INIT;
        uint8_t junk[64], packed[1024];
        char *nhex, *q;
        size_t n;

        memset(junk, 0x5a, sizeof(junk));
        info.device_id = (uint64_t)forged_id;
        info.suite = MSV_SUITE_MODERN;
        info.identity = (ProtobufCBinaryData){key_len, (uint8_t *)key};
        dc.added = 1;
        dc.handle = (ProtobufCBinaryData){17, (uint8_t *)"alice@example.org"};
        dc.device = &info;
        dc.approver = laptop->device_id;
        dc.approval = (ProtobufCBinaryData){sizeof(junk), junk};
        n = msv__wire__device_change__get_packed_size(&dc);
        assert_true(n <= sizeof(packed));
        msv__wire__device_change__pack(&dc, packed);
        nhex = malloc(2 * n + 1);
        q = malloc(4 * n + 512);
        assert_non_null(nhex);
        assert_non_null(q);
        assert_int_equal(msv_hex_encode(packed, n, nhex, 2 * n + 1), MSV_OK);
        snprintf(q, 4 * n + 512,
                 "INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext, "
                 "enqueued_ms, expires_ms) VALUES (%llu, 0, '', 0, x'%s', 0, 9000000000000), "
                 "(%llu, 0, '', 0, x'%s', 0, 9000000000000);",
                 (unsigned long long)alice->device_id, nhex, (unsigned long long)laptop->device_id,
                 nhex);
        server_sql(&s, q);
        free(nhex);
        free(q);
    }
    test_server_start(&s);

    /* the log is consistent and lists it, but alice's signed list holds no approval of it:
     * bob leaves it out (test_devlist_sender) */
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 2);
    msv_frame_free(devs);
    /* alice's devices can, each of them, once */
    snprintf(sql, sizeof(sql), "device %lld ", forged_id);
    assert_int_equal(monitor(alice, last), 1);
    assert_non_null(strstr(last, sql));
    assert_non_null(strstr(last, "never told of it"));
    assert_int_equal(monitor(laptop, last), 1);
    assert_non_null(strstr(last, sql));
    assert_int_equal(monitor(alice, last), 0);
    free(leaf);
    free(old);
    msv_identity_free(mallory);
    msv_client_close(alice);
    msv_client_close(laptop);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* What on_devlist said since a lookup (each warning on a line), how often, the last device. */
static struct {
    int n;
    uint64_t device;
    char text[4000];
} devlist_said;

static void record_devlist(void *ctx, const char *handle, uint64_t device_id, const char *warning)
{
    size_t used = strlen(devlist_said.text);

    (void)ctx;
    (void)handle;
    devlist_said.n++;
    devlist_said.device = device_id;
    snprintf(devlist_said.text + used, sizeof(devlist_said.text) - used, "%s\n", warning);
}

/* The stopped server lists key under alice's account as device *id (approved), or takes all
 * her devices but it out of the directory (only). */
static void forged_device_row(struct test_server *s, uint64_t alice, const uint8_t *key,
                              size_t key_len, int only, uint64_t *id)
{
    char sql[1024], hex[600];

    assert_int_equal(msv_hex_encode(key, key_len, hex, sizeof(hex)), MSV_OK);
    snprintf(sql, sizeof(sql),
             "INSERT INTO devices (account_id, suite, identity, push_token, created_ms, approved) "
             "SELECT account_id, 3, x'%s', x'', 0, 1 FROM devices WHERE id = %llu;",
             hex, (unsigned long long)alice);
    server_sql(s, sql);
    *id = (uint64_t)server_count(s, "SELECT max(id) FROM devices;");
    if (only) {
        snprintf(sql, sizeof(sql),
                 "UPDATE devices SET approved = 0 WHERE account_id = (SELECT account_id FROM "
                 "devices WHERE id = %llu) AND id <> %llu;",
                 (unsigned long long)*id, (unsigned long long)*id);
        server_sql(s, sql);
    }
}

/* bob's lookup of alice after the server started again: how many devices he takes. */
static size_t bob_takes(struct test_server *s, struct msv_client *bob)
{
    msv_frame *devs = NULL;
    size_t n;

    test_server_start(s);
    drop_connection(bob);
    memset(&devlist_said, 0, sizeof(devlist_said));
    if (msv_client_devices(bob, "alice@example.org", &devs) != MSV_OK)
        fail_msg("bob's lookup: %s", bob->why.message);
    n = devs->lookup_result->results[0]->n_devices;
    msv_frame_free(devs);
    return n;
}

/* Logs e as alice's newest set on the stopped server, starts it, and readies bob to look. */
static void log_set_for_bob(struct test_server *s, struct msv_client *bob,
                            const struct msv_kt_entry *e)
{
    uint8_t *leaf = NULL;
    size_t len = 0;

    assert_int_equal(msv_kt_leaf_encode(e, &leaf, &len), MSV_OK);
    append_leaf(s, "alice@example.org", leaf, len);
    free(leaf);
    test_server_start(s);
    drop_connection(bob);
    memset(&devlist_said, 0, sizeof(devlist_said));
}

/*
 * Signed device lists (docs/transparency.md): the directory logs devices for alice that her
 * devices never approved, five ways, each in the log (consistent: the log alone cannot tell),
 * and bob, who knew her signed list, leaves each device out and is told: one with no approval,
 * one with an approval by alice's key that alice did not sign, one carrying the approval of her
 * laptop (another device id), a set re-rooted on a recovery shown as a root (the kind the
 * signature names changed); and a genuine recovery record for a new key is sent to, but told
 * as a recovery, like a changed safety number.
 */
static void test_devlist_sender(void **state)
{
    static struct msv_kt_entry e;
    struct test_server s;
    struct msv_client *alice, *laptop, *bob;
    const char *to[1] = {"alice@example.org"};
    struct msv_identity *m[4] = {NULL};
    const uint8_t *key;
    uint8_t *old = NULL, *leaf = NULL, hash[32], sig[MSV_KT_APPROVAL_SIG_MAX], junk[64];
    size_t key_len = 0, old_len = 0, len = 0, sig_len = 0;
    uint64_t forged = 0, ids[3];
    int64_t index = 0;
    char want[200], sql[200];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, appended to the store below */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    laptop = linked_device(&s, alice, "alice-laptop");
    bob = client_for(&s, "bob", "bob@example.org");
    bob->on_devlist = record_devlist;
    test_server_stop(&s);
    assert_int_equal(bob_takes(&s, bob), 2);
    assert_int_equal(devlist_said.n, 0);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &m[i]), MSV_OK);
    memset(junk, 0x5a, sizeof(junk));

    /* 1-3: a device added with no approval, a forged one, and the laptop's replayed */
    for (int way = 0; way < 3; way++) {
        struct msv_kt_device *d;

        test_server_stop(&s);
        key = msv_public_identity_bytes(msv_identity_public(m[way]), &key_len);
        forged_device_row(&s, alice->device_id, key, key_len, 0, &forged);
        ids[way] = forged;
        forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
        assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
        assert_true(e.signed_list);
        d = &e.devices[e.n_devices++];
        *d = (struct msv_kt_device){forged, MSV_SUITE_MODERN, key, key_len, {0}};
        if (way == 1)
            d->approval = (struct msv_kt_approval){MSV_KT_APPROVED, alice->device_id, junk, 64};
        else if (way == 2)
            d->approval = e.devices[1].approval; /* the laptop's, by alice */
        assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
        append_leaf(&s, "alice@example.org", leaf, len);
        free(leaf);
        free(old);
        assert_int_equal(bob_takes(&s, bob), 2);
        snprintf(want, sizeof(want), "device %llu of alice@example.org has no valid approval",
                 (unsigned long long)forged);
        assert_non_null(strstr(devlist_said.text, want));
        assert_int_equal(devlist_said.n, 1 + way); /* the earlier ones again, each */
    }
    /* nothing is sealed to them: the relay insists, and the send fails, told */
    assert_int_not_equal(msv_client_send(bob, to, 1, "hi", NULL, 0, NULL, hash), MSV_OK);
    assert_non_null(strstr(bob->why.message, "or that their account did not approve"));
    test_server_stop(&s);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM queue WHERE device_id IN (%llu, %llu, %llu);",
             (unsigned long long)ids[0], (unsigned long long)ids[1], (unsigned long long)ids[2]);
    assert_int_equal(server_count(&s, sql), 0);

    /* 4: the list re-rooted on m alone, a recovery record shown as a root */
    key = msv_public_identity_bytes(msv_identity_public(m[3]), &key_len);
    forged_device_row(&s, alice->device_id, key, key_len, 1, &forged);
    forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
    assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
    assert_int_equal(msv_kt_approval_sign(m[3], MSV_KT_RECOVERY, 0, hash, 0, sig, &sig_len),
                     MSV_OK);
    e.n_devices = 1;
    e.n_chain = 0;
    e.devices[0] = (struct msv_kt_device){
        forged, MSV_SUITE_MODERN, key, key_len, {MSV_KT_ROOT, 0, sig, sig_len}};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    append_leaf(&s, "alice@example.org", leaf, len);
    free(leaf);
    assert_int_equal(bob_takes(&s, bob), 0);
    assert_non_null(strstr(devlist_said.text, "has no valid approval"));
    /* 5: the recovery as it is: sent to, told as a recovery */
    test_server_stop(&s);
    e.devices[0].approval.kind = MSV_KT_RECOVERY;
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    append_leaf(&s, "alice@example.org", leaf, len);
    free(leaf);
    free(old);
    assert_int_equal(bob_takes(&s, bob), 1);
    assert_int_equal(devlist_said.device, 0);
    assert_non_null(strstr(devlist_said.text, "no longer approved by a device you knew: the "
                                              "account was recovered with its password"));
    /* a pin that does not read: the lookup refused (Y25) */
    {
        msv_frame *devs = NULL;

        assert_int_equal(
            msv_client_db_set(bob->db, "kt_devlist:alice@example.org", (const uint8_t *)"x", 1),
            MSV_OK);
        drop_connection(bob);
        assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_ERR_PARSE);
        assert_non_null(strstr(bob->why.message, "does not read"));
    }
    for (size_t i = 0; i < 4; i++)
        msv_identity_free(m[i]);
    msv_client_close(alice);
    msv_client_close(laptop);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * An account registered before approvals were kept (its device unsigned, its log entry a
 * version-1 set): bob's first lookup takes it as it is; a device its own device approves later
 * (a signed step up to the unsigned device bob knew) is taken too; a device the directory adds
 * with no approval is left out and told. carol, whose first look comes after, takes the set as
 * it is (docs/transparency.md, "What is not done yet").
 */
static void test_devlist_legacy(void **state)
{
    static struct msv_kt_entry e;
    struct test_server s;
    struct msv_client *alice, *laptop, *bob, *carol;
    struct msv_identity *m = NULL;
    const uint8_t *key;
    uint8_t *old = NULL, *leaf = NULL;
    size_t key_len = 0, old_len = 0, len = 0;
    uint64_t forged = 0;
    int64_t index = 0;
    char sql[200], want[200];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, appended to the store below */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    bob->on_devlist = record_devlist;
    /* alice's device as a server from before version 19 keeps it: unsigned */
    test_server_stop(&s);
    snprintf(sql, sizeof(sql),
             "UPDATE device_approvals SET kind = 0, signature = NULL WHERE device_id = %llu;",
             (unsigned long long)alice->device_id);
    server_sql(&s, sql);
    forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
    assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
    e.signed_list = 0;
    e.devices[0].approval = (struct msv_kt_approval){0};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    assert_int_equal(leaf[0], 1);
    append_leaf(&s, "alice@example.org", leaf, len);
    free(leaf);
    free(old);
    assert_int_equal(bob_takes(&s, bob), 1);
    assert_int_equal(devlist_said.n, 0);
    /* her laptop, approved by her (a signed step to the unsigned device bob knew) */
    reconnect(alice);
    laptop = linked_device(&s, alice, "alice-laptop");
    test_server_stop(&s);
    assert_int_equal(bob_takes(&s, bob), 2);
    assert_int_equal(devlist_said.n, 0);
    /* a device the directory adds with no approval */
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &m), MSV_OK);
    key = msv_public_identity_bytes(msv_identity_public(m), &key_len);
    test_server_stop(&s);
    forged_device_row(&s, alice->device_id, key, key_len, 0, &forged);
    forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
    assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
    assert_true(e.signed_list);
    e.devices[e.n_devices++] = (struct msv_kt_device){forged, MSV_SUITE_MODERN, key, key_len, {0}};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    append_leaf(&s, "alice@example.org", leaf, len);
    free(leaf);
    free(old);
    assert_int_equal(bob_takes(&s, bob), 2);
    snprintf(want, sizeof(want), "device %llu of alice@example.org has no valid approval",
             (unsigned long long)forged);
    assert_non_null(strstr(devlist_said.text, want));
    /* carol's first look at a set without a root: taken as it is */
    carol = client_for(&s, "carol", "carol@example.org");
    {
        msv_frame *devs = NULL;

        assert_int_equal(msv_client_devices(carol, "alice@example.org", &devs), MSV_OK);
        assert_int_equal(devs->lookup_result->results[0]->n_devices, 3);
        msv_frame_free(devs);
    }
    msv_identity_free(m);
    msv_client_close(alice);
    msv_client_close(laptop);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * A legacy account (alice and her laptop both unsigned): bob takes the set, accepting both as
 * ends of chains. The directory then lists alice and mallory's device X "approved by" the
 * laptop, the laptop kept as an unsigned chain record carrying mallory's key: the chain ends
 * at an id bob accepted, with another key. bob leaves X out and says so.
 */
static void test_devlist_chain_record_key_swap(void **state)
{
    static struct msv_kt_entry e;
    struct test_server s;
    struct msv_client *alice, *laptop, *bob;
    struct msv_identity *m = NULL;
    const uint8_t *key;
    uint8_t *old = NULL, *leaf = NULL, hash[32], sig[MSV_KT_APPROVAL_SIG_MAX];
    size_t key_len = 0, old_len = 0, len = 0, sig_len = 0;
    uint64_t forged = 0;
    int64_t index = 0;
    char sql[300];
    uint8_t pin[58], *got = NULL;
    size_t got_len = 0;
    msv_frame *devs = NULL;

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3;
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    laptop = linked_device(&s, alice, "alice-laptop");
    bob = client_for(&s, "bob", "bob@example.org");
    bob->on_devlist = record_devlist;
    test_server_stop(&s);
    server_sql(&s, "UPDATE device_approvals SET kind = 0, signature = NULL, approver = 0;");
    forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
    assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
    e.signed_list = 0;
    e.n_chain = 0;
    for (size_t i = 0; i < e.n_devices; i++)
        e.devices[i].approval = (struct msv_kt_approval){0};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    assert_int_equal(leaf[0], 1);
    append_leaf(&s, "alice@example.org", leaf, len);
    free(leaf);
    free(old);
    assert_int_equal(bob_takes(&s, bob), 2);
    assert_int_equal(devlist_said.n, 0);

    /* the attack */
    test_server_stop(&s);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &m), MSV_OK);
    key = msv_public_identity_bytes(msv_identity_public(m), &key_len);
    msv_public_identity_hash(msv_identity_public(m), hash);
    forged_device_row(&s, alice->device_id, key, key_len, 0, &forged);
    snprintf(sql, sizeof(sql), "UPDATE devices SET approved = 0 WHERE id = %llu;",
             (unsigned long long)laptop->device_id);
    server_sql(&s, sql);
    assert_int_equal(
        msv_kt_approval_sign(m, MSV_KT_APPROVED, forged, hash, laptop->device_id, sig, &sig_len),
        MSV_OK);
    forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
    assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
    assert_int_equal(e.n_devices, 2);
    e.signed_list = 1;
    e.n_devices = 0;
    e.devices[e.n_devices++] = (struct msv_kt_device){alice->device_id,
                                                      e.devices[0].suite,
                                                      e.devices[0].identity,
                                                      e.devices[0].identity_len,
                                                      {0}};
    e.devices[e.n_devices++] = (struct msv_kt_device){
        forged, MSV_SUITE_MODERN, key, key_len, {MSV_KT_APPROVED, laptop->device_id, sig, sig_len}};
    e.n_chain = 1;
    e.chain[0] = (struct msv_kt_device){laptop->device_id, MSV_SUITE_MODERN, key, key_len, {0}};
    log_set_for_bob(&s, bob, &e);
    free(old);
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_OK);
    /* X left out, and bob told */
    assert_int_equal(devs->lookup_result->results[0]->devices[0]->device_id, alice->device_id);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 1);
    assert_int_equal(devlist_said.n, 1);
    msv_frame_free(devs);
    /* a pin written before ends kept their keys (ids alone): the laptop's id is one, and the
     * device key pin still refuses its other key; the pin is written again with keys */
    memset(pin, 0, sizeof(pin));
    pin[41] = 2;
    msv_put_u64be(pin + 42, alice->device_id);
    msv_put_u64be(pin + 50, laptop->device_id);
    assert_int_equal(msv_client_db_set(bob->db, "kt_devlist:alice@example.org", pin, 58), MSV_OK);
    drop_connection(bob);
    memset(&devlist_said, 0, sizeof(devlist_said));
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 1);
    assert_int_equal(devlist_said.n, 1);
    msv_frame_free(devs);
    assert_int_equal(msv_client_db_get(bob->db, "kt_devlist:alice@example.org", &got, &got_len),
                     MSV_OK);
    assert_int_equal(got_len, 42 + 40); /* alice's end, with its key's hash */
    free(got);
    msv_identity_free(m);
    msv_client_close(alice);
    msv_client_close(laptop);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A set that does not check out as a whole (two roots: the directory adds a device rooted on
 * its own key next to alice's) leaves alice's devices out of bob's lookup of alice and carol,
 * tells bob, and carol's devices stand: the lookup of the other handles does not fail, and a
 * send to alice fails, told why, and stays queued, held with its reason (before, the next flush
 * let it go as failed).
 */
/*
 * The stopped server, alice's and bob's, logs for alice a set that does not check out as a whole
 * (a device rooted on the directory's own key next to alice's, two roots), bob knowing her set
 * before; it is started again. *honest: alice's set before (caller frees with free()); returns
 * the forged device's id.
 */
static uint64_t log_two_roots(struct test_server *s, struct msv_client *alice,
                              struct msv_client *bob, uint8_t **honest, size_t *honest_len)
{
    static struct msv_kt_entry e;
    struct msv_identity *m = NULL;
    const uint8_t *key;
    uint8_t hash[32], sig[MSV_KT_APPROVAL_SIG_MAX];
    size_t key_len = 0, sig_len = 0;
    uint64_t forged = 0;
    int64_t index = 0;

    test_server_stop(s);
    assert_int_equal(bob_takes(s, bob), 1);
    test_server_stop(s);
    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &m), MSV_OK);
    key = msv_public_identity_bytes(msv_identity_public(m), &key_len);
    msv_public_identity_hash(msv_identity_public(m), hash);
    assert_int_equal(msv_kt_approval_sign(m, MSV_KT_ROOT, 0, hash, 0, sig, &sig_len), MSV_OK);
    forged_device_row(s, alice->device_id, key, key_len, 0, &forged);
    forge_leaf(s, "alice@example.org", NULL, 0, honest, honest_len, &index);
    assert_int_equal(msv_kt_leaf_parse(*honest, *honest_len, &e), MSV_OK);
    assert_true(e.signed_list);
    e.devices[e.n_devices++] = (struct msv_kt_device){
        forged, MSV_SUITE_MODERN, key, key_len, {MSV_KT_ROOT, 0, sig, sig_len}};
    log_set_for_bob(s, bob, &e);
    msv_identity_free(m);
    return forged;
}

static void test_devlist_bad_set_other_handles(void **state)
{
    struct test_server s;
    struct msv_client *alice, *carol, *bob;
    const char *both[2] = {"alice@example.org", "carol@example.org"};
    const char *to[1] = {"alice@example.org"};
    uint8_t *old = NULL, hash[32];
    size_t old_len = 0;
    msv_frame *devs = NULL;
    char *reason = NULL;

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, appended to the store below */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    bob->on_devlist = record_devlist;
    (void)log_two_roots(&s, alice, bob, &old, &old_len);
    free(old);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(client_verified_lookup(bob, both, 2, &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->n_results, 2);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 0);
    assert_int_equal(devs->lookup_result->results[1]->n_devices, 1);
    assert_int_equal(devs->lookup_result->results[1]->devices[0]->device_id, carol->device_id);
    assert_int_equal(devlist_said.n, 1);
    assert_non_null(strstr(devlist_said.text, "device list of alice@example.org does not check "
                                              "out"));
    msv_frame_free(devs);
    assert_int_equal(msv_client_send(bob, to, 1, "hi", NULL, 0, NULL, hash), MSV_ERR_NOT_FOUND);
    assert_non_null(strstr(bob->why.message, "no device of alice@example.org has a valid"));
    /* it stays queued, held with its reason, for when her list checks out */
    drop_connection(bob);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(msv_client_outbox_held(bob, hash, &reason), MSV_OK);
    assert_non_null(strstr(reason, "no device of alice@example.org has a valid"));
    free(reason);
    msv_client_close(alice);
    msv_client_close(carol);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* Each alarm on a line of its own in ctx (2,000 bytes). */
static void alarm_lines(void *ctx, const char *warning)
{
    char *said = ctx;
    size_t used = strlen(said);

    snprintf(said + used, 2000 - used, "%s\n", warning);
}

/*
 * alice's laptop is removed (lost); its key, in a thief's hands, signs an approval of mallory's
 * device, and the directory logs it with the laptop's record kept as a chain record: the chain
 * holds, so bob, who sees the newest version only, takes it; alice's monitor, which checks each
 * version, finds the approver was not one of her devices then and raises the alarm.
 */
static void test_monitor_removed_approver(void **state)
{
    static struct msv_kt_entry with_laptop, e;
    struct test_server s;
    struct msv_client *alice, *laptop, *bob;
    struct msv_identity *mallory = NULL;
    const uint8_t *key;
    uint8_t *before = NULL, *old = NULL, *leaf = NULL, hash[32], sig[MSV_KT_APPROVAL_SIG_MAX];
    size_t before_len = 0, old_len = 0, len = 0, key_len = 0, sig_len = 0, alarms = 0;
    uint64_t forged = 0;
    int64_t index = 0;
    msv_frame *devs = NULL;
    char last[400], said[2000] = "";

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, appended to the store below */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts */
    laptop = linked_device(&s, alice, "alice-laptop");
    bob = client_for(&s, "bob", "bob@example.org");
    test_server_stop(&s);
    forge_leaf(&s, "alice@example.org", NULL, 0, &before, &before_len, &index);
    assert_int_equal(msv_kt_leaf_parse(before, before_len, &with_laptop), MSV_OK);
    assert_int_equal(with_laptop.n_devices, 2);
    test_server_start(&s);
    reconnect(alice);
    assert_int_equal(msv_client_remove_device(alice, laptop->device_id), MSV_OK);
    assert_int_equal(monitor(alice, last), 0);

    assert_int_equal(msv_identity_generate(MSV_SUITE_MODERN, 0, &mallory), MSV_OK);
    key = msv_public_identity_bytes(msv_identity_public(mallory), &key_len);
    msv_public_identity_hash(msv_identity_public(mallory), hash);
    test_server_stop(&s);
    forged_device_row(&s, alice->device_id, key, key_len, 0, &forged);
    assert_int_equal(msv_kt_approval_sign(laptop->id, MSV_KT_APPROVED, forged, hash,
                                          laptop->device_id, sig, &sig_len),
                     MSV_OK);
    forge_leaf(&s, "alice@example.org", NULL, 0, &old, &old_len, &index);
    assert_int_equal(msv_kt_leaf_parse(old, old_len, &e), MSV_OK);
    assert_int_equal(e.n_devices, 1);
    e.devices[e.n_devices++] = (struct msv_kt_device){
        forged, MSV_SUITE_MODERN, key, key_len, {MSV_KT_APPROVED, laptop->device_id, sig, sig_len}};
    e.chain[e.n_chain++] = with_laptop.devices[1];
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    append_leaf(&s, "alice@example.org", leaf, len);
    test_server_start(&s);
    /* the newest version alone holds: bob takes the device */
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 2);
    msv_frame_free(devs);
    /* alice's monitor: approved by a device that was not hers then */
    reconnect(alice);
    assert_int_equal(msv_client_monitor(alice, alarm_lines, said, &alarms), MSV_OK);
    assert_non_null(strstr(said, "approved by a device that was not one of the account's "
                                 "devices then"));
    free(leaf);
    free(old);
    free(before);
    msv_identity_free(mallory);
    msv_client_close(alice);
    msv_client_close(laptop);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * alice removes her laptop; the operator then logs her old device set again
 * (the laptop back, its key unchanged): her monitor raises the alarm, once,
 * though the laptop was hers. Then the directory serves her set from before
 * that entry: her monitor finds the entry served is not the newest it read.
 */
static void test_monitor_removed_device_returns(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop;
    char last[400], sql[512];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, one appended to the store below */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts */
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(msv_client_remove_device(alice, laptop->device_id), MSV_OK);
    assert_int_equal(monitor(alice, last), 0);

    test_server_stop(&s);
    snprintf(sql, sizeof(sql),
             "INSERT INTO kt_log (idx, handle, leaf) SELECT (SELECT max(idx) + 1 FROM kt_log), "
             "handle, leaf FROM kt_log WHERE handle = 'alice@example.org' ORDER BY idx DESC "
             "LIMIT 1 OFFSET 1;");
    server_sql(&s, sql);
    test_server_start(&s);
    assert_int_equal(monitor(alice, last), 1);
    snprintf(sql, sizeof(sql), "device %llu ", (unsigned long long)laptop->device_id);
    assert_non_null(strstr(last, sql));
    assert_non_null(strstr(last, "again, after it was removed"));
    assert_int_equal(monitor(alice, last), 0);

    /* the newest entry hidden from lookups (it stays in the tree) */
    test_server_stop(&s);
    server_sql(&s,
               "UPDATE kt_log SET handle = 'hidden' WHERE idx = (SELECT max(idx) FROM kt_log);");
    test_server_start(&s);
    /* the monitor looks its account's handles up every time it runs */
    assert_int_equal(monitor(alice, last), 1);
    assert_non_null(strstr(last, "older"));
    msv_client_close(laptop);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * The owner's history proof: a directory that puts a version of alice's handle in its key
 * directory without a log entry for it (version 8, the marker her version 1 proves absent)
 * passes every lookup of her (bob's too), but not her monitor's history proof; one that skips
 * versions (her second entry numbered 4) passes lookups and the proof, but not the count of
 * her entries her monitor read. Each alarm is raised once.
 */
static void test_owner_history_forged_version(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    msv_frame *devs = NULL;
    char last[400];

    (void)state;
    test_server_init(&s, "keydir_forge = alice@example.org 8");
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(monitor(alice, last), 1);
    assert_non_null(strstr(last, "does not prove the history of this account's handle "
                                 "alice@example.org"));
    assert_int_equal(monitor(bob, last), 0);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A directory that skips versions (alice's second entry numbered 4): lookups and the history
 * proof hold, but her monitor finds version 4 after 1, once; versions appended honestly after it
 * (the removal of her laptop, version 5) are taken from there, quietly. The removal's version-4
 * leaf is made by the lookup that first reads it (the monitor's): the owner's versions carried
 * its data in its place, which no head holds, and the monitor refused it.
 */
static void skipped_version(unsigned leaf_version)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *laptop, *bob;
    msv_frame *devs = NULL;
    char last[400];

    test_server_init(&s, "keydir_skip = alice@example.org 2");
    s.leaf_version = leaf_version;
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where counting starts: version 1 */
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 2);
    msv_frame_free(devs);
    assert_int_equal(monitor(alice, last), 1);
    assert_non_null(strstr(last, "holds version 4 of this account's handle alice@example.org, "
                                 "but its transparency log holds version 2"));
    assert_int_equal(monitor(alice, last), 0);
    /* versions appended honestly after it are counted from there */
    assert_int_equal(msv_client_remove_device(alice, laptop->device_id), MSV_OK);
    if (monitor(alice, last) != 0)
        fail_msg("the alarm: %s", last);
    msv_client_close(laptop);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

static void test_owner_history_skipped_version(void **state)
{
    (void)state;
    skipped_version(0); /* version-4 leaves, the default */
}

static void test_owner_history_skipped_version_v3(void **state)
{
    (void)state;
    skipped_version(3); /* leaves that name their handle */
}

/*
 * History proofs go to the account's own handles only, and each costs 65 lookups beyond its
 * own: with a bucket of 80, alice's first asks for hers (66 tokens), her second is limited,
 * and a plain lookup still fits; bob asking for alice's history gets none.
 */
static void test_owner_history_only_own_and_limited(void **state)
{
    const char *alice_h[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    msv_frame *r = NULL;

    (void)state;
    test_server_init(&s, "[directory]\nlookup_rate = 0.01\nlookup_burst = 80\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", alice_h[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(msv_request_lookup(bob->conn, alice_h, 1, 1, 0, TEST_TIMEOUT_MS, &r, NULL),
                     MSV_OK);
    assert_int_equal(r->lookup_result->results[0]->history_proof.len, 0);
    msv_frame_free(r);
    r = NULL;
    assert_int_equal(msv_client_connect(alice), MSV_OK);
    assert_int_equal(msv_request_lookup(alice->conn, alice_h, 1, 1, 0, TEST_TIMEOUT_MS, &r, NULL),
                     MSV_OK);
    assert_true(r->lookup_result->results[0]->history_proof.len > 0);
    msv_frame_free(r);
    r = NULL;
    assert_int_equal(
        msv_request_lookup(alice->conn, alice_h, 1, 1, 0, TEST_TIMEOUT_MS, &r, &alice->why),
        MSV_ERR_INVALID);
    assert_int_equal(alice->why.code, MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
    assert_int_equal(msv_request_lookup(alice->conn, alice_h, 1, 0, 0, TEST_TIMEOUT_MS, &r, NULL),
                     MSV_OK);
    msv_frame_free(r);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * Roots compared: the directory signs a second key directory root for a log size it already
 * signed one for (a version made in the tree only, nothing in the log). bob, who saw the first,
 * refuses a lookup under the second; carol, who never saw the first, accepts it, and her
 * message carries it to bob, whose monitor raises the alarm.
 */
static void test_epoch_roots_compared(void **state)
{
    const char *to_alice[1] = {"alice@example.org"}, *to_bob[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    msv_frame *devs = NULL;
    uint8_t id[16];
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", to_alice[0]);
    bob = client_for(&s, "bob", to_bob[0]);
    carol = client_for(&s, "carol", "carol@example.org");
    assert_int_equal(monitor(bob, last), 0);
    assert_int_equal(msv_client_devices(bob, "carol@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(msv_client_devices(bob, to_alice[0], &devs), MSV_OK);
    msv_frame_free(devs);
    devs = NULL;

    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "keydir_forge = nobody@example.org 3");
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, to_alice[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "two different key directory roots for one log size"));
    assert_null(devs);

    /* carol has seen no root for this size: she accepts it, and tells bob */
    assert_int_equal(msv_client_db_unset(carol->db, "kt_epoch"), MSV_OK);
    drop_connection(carol);
    assert_int_equal(msv_client_devices(carol, to_bob[0], &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(msv_client_send(carol, to_bob, 1, "hello bob", NULL, 0, NULL, id), MSV_OK);
    /* bob's own lookup is refused as above (an alarm), and carol's root does not fit his */
    assert_int_equal(monitor(bob, last), 2);
    assert_non_null(strstr(last, "carol@example.org's device saw"));
    msv_client_close(carol);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

static void count_account_new(void *ctx, const char *handle)
{
    int *n = ctx;

    assert_string_equal(handle, "alice@example.org");
    (*n)++;
}

/* The number of sessions c keeps with device_id. */
static size_t sessions_with(struct msv_client *c, uint64_t device_id)
{
    struct msv_setting *set = NULL;
    size_t n = 0;
    char prefix[40];

    snprintf(prefix, sizeof(prefix), "session:%llu:", (unsigned long long)device_id);
    assert_int_equal(msv_client_db_settings(c->db, prefix, 100, &set, &n), MSV_OK);
    msv_settings_free(set, n);
    return n;
}

/*
 * alice deletes her account and registers her handle again. bob, who wrote to
 * her and verified her, is told once when he next looks her up that this is a
 * new account: his sessions with her old device go, and his verified mark,
 * no longer matching, stops his sends until he accepts the new safety number
 * (before, it went, and his sends went on unchecked). Then
 * the directory hides her tombstone: carol, whose lookup showed it, refuses the
 * answer; erin, who never saw it, takes the new devices as a key change (no
 * monitor reads other accounts' entries: docs/transparency.md, "What is not
 * done yet"); carol refuses the old account's leaf served again.
 */
static void test_account_new(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol, *erin, *again;
    msv_frame *devs = NULL;
    uint8_t digest[32];
    char number[MSV_SAFETY_DIGITS + 1], last[400];
    uint64_t old_device;
    int told_bob = 0, told_erin = 0;

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 40\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    erin = client_for(&s, "erin", "erin@example.org");
    bob->ctx = &told_bob;
    bob->on_account_new = count_account_new;
    erin->ctx = &told_erin;
    erin->on_account_new = count_account_new;
    old_device = alice->device_id;
    assert_int_equal(msv_client_send(bob, to, 1, "hello alice", NULL, 0, NULL, (uint8_t[16]){0}),
                     MSV_OK);
    assert_int_equal(sessions_with(bob, old_device), 1);
    assert_int_equal(msv_client_safety_number(bob, to[0], 1, number, digest), MSV_OK);
    assert_int_equal(msv_client_mark_verified(bob, to[0], digest), MSV_OK);
    for (struct msv_client **c = (struct msv_client *[]){carol, erin, NULL}; *c; c++) {
        assert_int_equal(msv_client_devices(*c, to[0], &devs), MSV_OK);
        msv_frame_free(devs);
        assert_int_equal(monitor(*c, last), 0); /* where watching starts */
    }
    assert_int_equal(msv_client_delete_account(alice, TEST_PASSWORD), MSV_OK);
    msv_client_close(alice);
    /* carol looks alice up: her tombstone is the handle's newest entry */
    assert_int_equal(msv_client_devices(carol, to[0], &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 0);
    msv_frame_free(devs);
    devs = NULL;
    assert_int_equal(monitor(carol, last), 0);
    again = client_for(&s, "alice-again", to[0]);
    assert_true(again->device_id != old_device);

    /* honest: bob is told once, and his old sessions go; his verified mark stays, no longer
     * matching (the safety number changed), and stops his sends until he accepts the new one */
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(told_bob, 1);
    assert_int_equal(sessions_with(bob, old_device), 0);
    assert_int_equal(msv_client_safety_number(bob, to[0], 1, number, digest), MSV_OK);
    assert_int_equal(msv_client_verified(bob, to[0], digest), MSV_ERR_AUTH);
    assert_int_equal(msv_client_send(bob, to, 1, "hello again", NULL, 0, NULL, (uint8_t[16]){0}),
                     MSV_ERR_AUTH);
    assert_int_equal(bob->why.code, MSV_REFUSAL_KEY_CHANGE);
    assert_int_equal(msv_client_mark_verified(bob, to[0], digest), MSV_OK);
    assert_int_equal(msv_client_send(bob, to, 1, "hello again", NULL, 0, NULL, (uint8_t[16]){0}),
                     MSV_OK);
    assert_int_equal(receive_now(again), 1);
    assert_int_equal(told_bob, 1);

    /* the directory hides the tombstone (it stays in the tree) */
    test_server_stop(&s);
    server_sql(&s, "UPDATE kt_log SET handle = 'hidden' WHERE handle = 'alice@example.org' AND "
                   "substr(leaf, 1, 1) = x'03';");
    test_server_start(&s);
    drop_connection(carol);
    assert_int_equal(msv_client_devices(carol, to[0], &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(carol->why.message, "hides that the account alice@example.org was"));
    drop_connection(erin);
    assert_int_equal(msv_client_devices(erin, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(told_erin, 0);
    assert_int_equal(monitor(erin, last), 0);

    /* and then the new account's entries too: the old account's is served again */
    test_server_stop(&s);
    server_sql(&s, "UPDATE kt_log SET handle = 'hidden' WHERE handle = 'alice@example.org' AND "
                   "idx > (SELECT min(idx) FROM kt_log WHERE handle = 'hidden');");
    test_server_start(&s);
    drop_connection(carol);
    assert_int_equal(msv_client_devices(carol, to[0], &devs), MSV_ERR_AUTH);
    /* she accepted the tombstone itself as the handle's newest entry: older than that */
    if (strstr(carol->why.message, "as it was before it was deleted") == NULL &&
        strstr(carol->why.message, "shows an older device set of alice@example.org") == NULL)
        fail_msg("the refusal: %s", carol->why.message);
    for (struct msv_client **c = (struct msv_client *[]){bob, carol, erin, again, NULL}; *c; c++)
        msv_client_close(*c);
    test_server_cleanup(&s);
}

/*
 * The operator logs, under a handle it controls, an entry that lists alice's
 * device id with its own key, so that a first message "from" that device
 * would replace bob's session with alice's: bob, who knows the device as
 * alice's, refuses the answer; carol, who asks for both handles at once,
 * refuses it too.
 */
static void test_device_id_reused(void **state)
{
    static struct msv_kt_entry e;
    const char *both[2] = {"alice@example.org", "mallory@example.org"};
    struct test_server s;
    struct msv_client *alice, *mallory, *bob, *carol;
    msv_frame *devs = NULL;
    uint8_t *leaf = NULL, *forged = NULL;
    size_t len = 0, forged_len = 0;
    int64_t index = 0;
    char last[400];

    (void)state;
    /* the server plays a dishonest one: it serves the store's log unchecked */
    test_server_init(&s, "trust_store_log = true");
    test_server_start(&s);
    alice = client_for(&s, "alice", both[0]);
    mallory = client_for(&s, "mallory", both[1]);
    bob = client_for(&s, "bob", "bob@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    assert_int_equal(msv_client_devices(bob, both[0], &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(monitor(alice, last), 0); /* where watching starts */
    test_server_stop(&s);
    forge_leaf(&s, both[1], NULL, 0, &leaf, &len, &index);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &e), MSV_OK);
    e.devices[0].device_id = alice->device_id;
    assert_int_equal(msv_kt_leaf_encode(&e, &forged, &forged_len), MSV_OK);
    append_leaf(&s, both[1], forged, forged_len);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, both[1], &devs), MSV_ERR_AUTH);
    /* alice's device id with mallory's key: a device id keeps its key under every handle */
    assert_non_null(strstr(bob->why.message, "with another key than its log gave that device"));
    assert_int_equal(msv_client_connect(carol), MSV_OK);
    assert_int_equal(msv_client_send(carol, both, 2, "hi both", NULL, 0, NULL, (uint8_t[16]){0}),
                     MSV_ERR_AUTH);
    assert_non_null(strstr(carol->why.message, "with two keys"));
    /* alice's monitor reads only her own handles' versions: a missived that is not made
     * dishonest does not serve such a log at all (test_audit.sh) */
    assert_int_equal(monitor(alice, last), 0);
    free(leaf);
    free(forged);
    msv_client_close(alice);
    msv_client_close(mallory);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* The operator logs, for alice's handle, her newest device set with one device more (id
 * 999999, her key): her devices were never told of it. The server must be stopped. */
static void log_foreign_device(struct test_server *s, const char *handle)
{
    static struct msv_kt_entry e;
    uint8_t *leaf = NULL, *forged = NULL;
    size_t len = 0, forged_len = 0;
    int64_t index = 0;

    forge_leaf(s, handle, NULL, 0, &leaf, &len, &index);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &e), MSV_OK);
    e.devices[e.n_devices] = e.devices[0];
    e.devices[e.n_devices].approval = (struct msv_kt_approval){0}; /* none: no device made one */
    e.devices[e.n_devices++].device_id = 999999;
    assert_int_equal(msv_kt_leaf_encode(&e, &forged, &forged_len), MSV_OK);
    append_leaf(s, handle, forged, forged_len);
    free(leaf);
    free(forged);
}

/*
 * The owner's monitor reads no log leaf: a directory that gives the account's LogRead leaf
 * hashes for its own entries too, as it gives everyone else's, hides nothing from it. alice's
 * read of the log holds none of her entries' leaves, and her monitor still finds the device
 * logged for her behind her back, from the versions of her handle it asks for.
 */
static void test_monitor_reads_no_leaves(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    msv_frame *r = NULL;
    char last[400];

    (void)state;
    test_server_init(&s, "log_read_hash_fault = 3");
    s.leaf_version = 3; /* leaves that name their handle: the ones hidden from alice */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts */
    bob = client_for(&s, "bob", "bob@example.org");
    test_server_stop(&s);
    log_foreign_device(&s, "alice@example.org");
    test_server_start(&s);
    reconnect(alice);
    assert_int_equal(msv_request_log_read(alice->conn, 0, 256, 0, 0, TEST_TIMEOUT_MS, &r, NULL),
                     MSV_OK);
    for (size_t i = 0; i < r->log_entries->n_entries; i++)
        assert_int_equal(r->log_entries->entries[i]->leaf.len, 0);
    msv_frame_free(r);
    assert_int_equal(monitor(alice, last), 1);
    assert_non_null(strstr(last, "device 999999 "));
    assert_non_null(strstr(last, "never told of it"));
    assert_int_equal(monitor(alice, last), 0);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A new server (leaf_version: 0 for the default) where alice's monitor starts watching at her
 * version 1, then she links her laptop and removes it (versions 2 and 3) while it does not look.
 */
static void laptop_came_and_went(struct test_server *s, unsigned leaf_version,
                                 struct msv_client **alice, struct msv_client **laptop)
{
    char last[400];

    test_server_init(s, NULL);
    s->leaf_version = leaf_version;
    test_server_start(s);
    *alice = client_for(s, "alice", "alice@example.org");
    assert_int_equal(monitor(*alice, last), 0);
    *laptop = linked_device(s, *alice, "alice-laptop");
    assert_int_equal(msv_client_remove_device(*alice, (*laptop)->device_id), MSV_OK);
}

/*
 * A version left out of the monitor's read: alice links her laptop and removes it (versions 2
 * and 3 of her handle) while her phone does not look; the directory then keeps version 2 from
 * the versions it shows her phone (it stays in the log and the key directory). Her phone's
 * monitor finds version 3 after 1, and raises the alarm once.
 */
static void test_monitor_version_withheld(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop;
    char last[400];

    (void)state;
    laptop_came_and_went(&s, 0, &alice, &laptop);
    test_server_stop(&s);
    server_sql(&s, "UPDATE kt_log SET handle = 'hidden' WHERE idx = (SELECT min(idx) FROM kt_log "
                   "WHERE handle = 'alice@example.org' AND idx > (SELECT min(idx) FROM kt_log "
                   "WHERE handle = 'alice@example.org'));");
    test_server_start(&s);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "holds version 3 of this account's handle alice@example.org, but its "
                     "transparency log holds version 2") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(alice, last), 0);
    msv_client_close(laptop);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A directory that answers the owner's monitor "more versions follow" and gives none would keep
 * it from ever reaching the versions others are shown (each round read nothing; the monitor
 * ended its rounds quietly): alice links and removes her laptop, then the directory stalls her
 * monitor. The alarm names the handle.
 */
static void test_monitor_versions_stalled(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop;
    char last[400];

    (void)state;
    laptop_came_and_went(&s, 0, &alice, &laptop);
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "owner_versions_stall = true");
    test_server_start(&s);
    assert_true(monitor(alice, last) >= 1);
    if (strstr(last, "says versions of this account's handle alice@example.org follow but shows "
                     "none") == NULL)
        fail_msg("the alarm: %s", last);
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    assert_int_equal(monitor(alice, last), 0); /* an honest directory again: read and checked */
    msv_client_close(laptop);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A version whose data the key directory does not hold: alice links her laptop and removes it
 * (versions 2 and 3, log entries 1 and 2) while her phone does not look; the directory then
 * changes version 2's value in its tree (lookups of version 3 still hold: they open only 3).
 * Her phone's monitor cannot open version 2 against her entry and raises the alarm, checking
 * nothing past it, at every run while it lasts.
 */
static void test_monitor_version_unproven(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop;
    char last[400];

    (void)state;
    /* the tree's entries computed from the data (test_akd4.sh: version 4) */
    laptop_came_and_went(&s, 3, &alice, &laptop);
    assert_int_equal(server_count(&s, "SELECT count(*) FROM kt_log;"), 3);
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "keydir_rewrite = change 1");
    test_server_start(&s);
    /* the root her phone kept for this size is the honest one: a device that did not see it */
    assert_int_equal(msv_client_db_unset(alice->db, "kt_epoch"), MSV_OK);
    /* and the steps from the root her monitor pinned do not end at the one signed now (once) */
    assert_int_equal(monitor(alice, last), 2);
    if (strstr(last, "does not grow from the one this device checked at 1 log entries") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "does not prove version 2 of this account's handle alice@example.org") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(alice, last), 1);
    msv_client_close(laptop);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A monitor that read the log's leaves kept, per handle, the version last proven and the
 * entries read since: alice's phone read her laptop's joining and leaving (versions 2 and 3)
 * that way. Its state says so, and the versions it reads now start after them: nothing is read
 * twice (the laptop's version 2 read again would look like a removed device back).
 */
static void test_monitor_state_upgraded(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop;
    uint8_t old[24] = {0};
    uint32_t version = 0;
    uint64_t index = 0;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* the log an earlier monitor read: leaves that name their handle */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    assert_int_equal(monitor(alice, last), 0);
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(msv_client_remove_device(alice, laptop->device_id), MSV_OK);
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(client_history_get(alice, "alice@example.org", &version, &index), MSV_OK);
    assert_int_equal(version, 3);
    /* as the earlier monitor left it: version 1 (entry 0) proven, two entries read since */
    msv_put_u32be(old, 1);
    msv_put_u64be(old + 4, 0);
    msv_put_u32be(old + 12, 2);
    msv_put_u64be(old + 16, index);
    assert_int_equal(msv_client_db_set(alice->db, "kt_history:alice@example.org", old, 24), MSV_OK);
    assert_int_equal(client_history_get(alice, "alice@example.org", &version, &index), MSV_OK);
    assert_int_equal(version, 3);
    assert_int_equal(monitor(alice, last), 0);
    msv_client_close(laptop);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * After the log's cut-over its entries are version-4 leaves, which name no handle: the owner's
 * versions carry what opens each beside it, and the monitor checks them as before: alice's
 * laptop, linked and approved, raises nothing; a device logged behind her back raises the
 * alarm, once; a version left out of what her phone is shown raises it too.
 */
static void test_monitor_versions_after_cut_over(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop;
    msv_frame *r = NULL;
    char last[400];

    (void)state;
    test_server_init(&s, "[directory]\nleaf_version = 4\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts */
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(monitor(alice, last), 0);
    /* her own version-4 leaves, whole; the entries name no handle */
    reconnect(alice);
    assert_int_equal(msv_request_log_read(alice->conn, 0, 256, 0, 0, TEST_TIMEOUT_MS, &r, NULL),
                     MSV_OK);
    assert_int_equal(r->log_entries->entries[r->log_entries->n_entries - 1]->leaf.data[0], 4);
    msv_frame_free(r);
    test_server_stop(&s);
    log_foreign_device(&s, "alice@example.org");
    test_server_start(&s);
    assert_int_equal(monitor(alice, last), 1);
    assert_non_null(strstr(last, "device 999999 "));
    assert_int_equal(monitor(alice, last), 0);
    /* two more versions (the laptop removed, then the forged device again), the first of them
     * left out of what the directory shows her phone */
    assert_int_equal(msv_client_remove_device(alice, laptop->device_id), MSV_OK);
    test_server_stop(&s);
    log_foreign_device(&s, "alice@example.org");
    server_sql(&s, "UPDATE kt_log SET handle = 'hidden' WHERE idx = (SELECT max(idx) - 1 FROM "
                   "kt_log);");
    test_server_start(&s);
    assert_int_equal(monitor(alice, last), 1);
    assert_non_null(strstr(last, "but its transparency log holds version"));
    msv_client_close(laptop);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A handle deleted and registered again by another account: the new owner asking for the
 * handle's whole history (versions_from 1) gets the tombstone that ended the previous account
 * and its own version after it, nothing of the previous account's device sets (alice's phone
 * and laptop); its monitor, whose first read starts at that tombstone (version 3), raises no
 * alarm.
 */
static void test_recycled_handle_versions(void **state)
{
    static struct msv_kt_entry e;
    const char *h[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *laptop, *again;
    msv_frame *r = NULL;
    uint64_t from[1] = {1}, old[2], index = 0;
    uint32_t version = 0;
    char last[400];

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 40\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", h[0]);
    laptop = linked_device(&s, alice, "alice-laptop");
    old[0] = alice->device_id;
    old[1] = laptop->device_id;
    assert_int_equal(msv_client_delete_account(alice, TEST_PASSWORD), MSV_OK);
    msv_client_close(laptop);
    msv_client_close(alice);
    again = client_for(&s, "alice-again", h[0]);
    reconnect(again);
    assert_int_equal(
        msv_request_owner_lookup(again->conn, h, 1, 0, from, 0, TEST_TIMEOUT_MS, &r, NULL), MSV_OK);
    assert_int_equal(msv_kt_check_lookup(again->db, r->lookup_result, last, sizeof(last)), MSV_OK);
    assert_int_equal(r->lookup_result->results[0]->n_versions, 2);
    for (size_t i = 0; i < 2; i++) {
        const Msv__Wire__HandleVersion *v = r->lookup_result->results[0]->versions[i];

        assert_int_equal(msv_kt_check_owner_version(r->lookup_result, h[0], v, &e), MSV_OK);
        assert_int_equal(v->version, 3 + i);
        assert_int_equal(e.deleted, i == 0);
        for (size_t d = 0; d < e.n_devices; d++)
            assert_true(e.devices[d].device_id != old[0] && e.devices[d].device_id != old[1]);
    }
    assert_int_equal(e.n_devices, 1);
    assert_int_equal(e.devices[0].device_id, again->device_id);
    msv_frame_free(r);
    if (monitor(again, last) != 0)
        fail_msg("the alarm: %s", last);
    assert_int_equal(client_history_get(again, h[0], &version, &index), MSV_OK);
    assert_int_equal(version, 4);
    assert_int_equal(monitor(again, last), 0);
    msv_client_close(again);
    test_server_cleanup(&s);
}

/* Whether the packed LogEntries of r hold the bytes of c's public identity. */
static int log_read_names(const msv_frame *r, const struct msv_client *c)
{
    size_t key_len = 0, len = msv__wire__log_entries__get_packed_size(r->log_entries);
    const uint8_t *key = msv_public_identity_bytes(msv_identity_public(c->id), &key_len);
    uint8_t *packed = malloc(len);
    int found;

    assert_non_null(packed);
    msv__wire__log_entries__pack(r->log_entries, packed);
    found = memmem(packed, len, key, key_len) != NULL;
    free(packed);
    return found;
}

/*
 * On a log of leaves that name their handle, the new owner of a deleted account's handle reads
 * in LogRead its own entries of the handle from the tombstone on, and the previous account's as
 * leaf hashes: alice's key is not in its answer, its own is.
 */
static void test_recycled_handle_log_read(void **state)
{
    struct test_server s;
    struct msv_client *alice, *again;
    msv_frame *r = NULL;

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 40\n");
    s.leaf_version = 3; /* leaves that name their handle */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    reconnect(alice);
    assert_int_equal(msv_request_log_read(alice->conn, 0, 256, 0, 0, TEST_TIMEOUT_MS, &r, NULL),
                     MSV_OK);
    assert_true(log_read_names(r, alice)); /* her own entry, hers to read */
    msv_frame_free(r);
    r = NULL;
    assert_int_equal(msv_client_delete_account(alice, TEST_PASSWORD), MSV_OK);
    again = client_for(&s, "alice-again", "alice@example.org");
    reconnect(again);
    assert_int_equal(msv_request_log_read(again->conn, 0, 256, 0, 0, TEST_TIMEOUT_MS, &r, NULL),
                     MSV_OK);
    assert_int_equal(r->log_entries->n_entries, 3);
    assert_true(log_read_names(r, again));
    assert_false(log_read_names(r, alice));
    assert_int_equal(r->log_entries->entries[0]->leaf.len, 0);     /* alice's: its hash */
    assert_int_equal(r->log_entries->entries[1]->leaf.data[0], 3); /* the tombstone, whole */
    msv_frame_free(r);
    msv_client_close(alice);
    msv_client_close(again);
    test_server_cleanup(&s);
}

struct log_read_job {
    struct msv_client *c;
    msv_frame *r;
    msv_err err;
};

static void *log_read_job(void *arg)
{
    struct log_read_job *j = arg;

    j->err = msv_request_log_read(j->c->conn, 0, 256, 0, 0, TEST_TIMEOUT_MS, &j->r, NULL);
    return NULL;
}

/*
 * In the store, as another node would: handle leaves its account (its tombstone logged) and is
 * logged for the account of handle to, whose newest device set it takes.
 */
static void give_handle_away(struct test_server *s, const char *handle, const char *to)
{
    static struct msv_kt_entry e, tomb;
    uint8_t *leaf = NULL, *forged = NULL, *gone = NULL;
    size_t len = 0, forged_len = 0, gone_len = 0;
    int64_t index = 0;
    char sql[300];

    forge_leaf(s, to, NULL, 0, &leaf, &len, &index);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &e), MSV_OK);
    snprintf(e.handle, sizeof(e.handle), "%s", handle);
    tomb = e;
    tomb.deleted = 1;
    tomb.n_devices = 0;
    tomb.signed_list = 0; /* a tombstone lists no device, signed or not */
    tomb.n_chain = 0;
    assert_int_equal(msv_kt_leaf_encode(&tomb, &gone, &gone_len), MSV_OK);
    assert_int_equal(msv_kt_leaf_encode(&e, &forged, &forged_len), MSV_OK);
    snprintf(sql, sizeof(sql), "DELETE FROM account_handles WHERE handle = '%s';", handle);
    server_sql(s, sql);
    append_leaf(s, handle, gone, gone_len);
    append_leaf(s, handle, forged, forged_len);
    free(leaf);
    free(forged);
    free(gone);
}

/* A server whose reads of kind key ("log_read_gate", "lookup_gate") wait at s->dir/gate, with
 * alice and mallory, alice holding +15550001 too; the gate file is made. */
static void racing_server(struct test_server *s, const char *key, char gate[200],
                          struct msv_client **alice, struct msv_client **mallory)
{
    char code[7];
    FILE *f;

    test_server_init(s, NULL);
    s->leaf_version = 3; /* leaves that name their handle */
    snprintf(gate, 200, "%s/gate", s->dir);
    snprintf(s->extra, sizeof(s->extra), "trust_store_log = true\n%s = %s", key, gate);
    test_server_start(s);
    *alice = client_for(s, "alice", "alice@example.org");
    *mallory = client_for(s, "mallory", "mallory@example.org");
    assert_int_equal(msv_client_handle_add(*alice, "+15550001"), MSV_OK);
    test_server_code(s, "+15550001", code);
    assert_int_equal(msv_client_handle_verify(*alice, "+15550001", code), MSV_OK);
    reconnect(*alice);
    assert_non_null(f = fopen(gate, "w"));
    fclose(f);
}

/*
 * Runs job (a read of alice's) at s, held at gate; meanwhile alice's +15550001 is given to mallory
 * in the store, as another node would; then the read goes on and must succeed.
 */
static void race_handle_away(struct test_server *s, const char *gate, void *(*job)(void *),
                             struct log_read_job *j)
{
    char reached[220];
    pthread_t t;

    snprintf(reached, sizeof(reached), "%s.reached", gate);
    assert_int_equal(pthread_create(&t, NULL, job, j), 0);
    for (int i = 0; i < 1000 && access(reached, F_OK) != 0; i++)
        usleep(10 * 1000);
    assert_int_equal(access(reached, F_OK), 0);
    give_handle_away(s, "+15550001", "mallory@example.org");
    assert_int_equal(unlink(gate), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(j->err, MSV_OK);
}

/*
 * On a log of leaves that name their handle, alice's LogRead has read her handles when her second
 * one is removed from her account and logged for mallory ([testing] log_read_gate holds the read
 * while the test changes the store as another node would): the read starts over, and mallory's
 * entry is a leaf hash to alice. Before, it was read whole as hers: her handles were read once,
 * before the entries.
 */
static void test_log_read_racing_handle_removal(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory;
    struct log_read_job job = {0};
    char gate[200];

    (void)state;
    racing_server(&s, "log_read_gate", gate, &alice, &mallory);
    job.c = alice;
    race_handle_away(&s, gate, log_read_job, &job);
    assert_true(job.r->log_entries->n_entries >= 5); /* what the test appended was read */
    assert_true(log_read_names(job.r, alice));
    assert_false(log_read_names(job.r, mallory));
    msv_frame_free(job.r);
    msv_client_close(alice);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

static void *owner_lookup_job(void *arg)
{
    static const char *const h[1] = {"+15550001"};
    static const uint64_t from[1] = {1};
    struct log_read_job *j = arg;

    j->err = msv_request_owner_lookup(j->c->conn, h, 1, 1, from, 0, TEST_TIMEOUT_MS, &j->r, NULL);
    return NULL;
}

/*
 * The same race for the owner's lookup: alice asks for her second handle's versions and history
 * proof, and the server has read that it is hers ([testing] lookup_gate holds the lookup) when it
 * is removed from her account and logged for mallory. The lookup starts over (counted in
 * lookups_again_total): mallory's devices are the handle's, as anyone's lookup shows them, but
 * alice gets neither mallory's versions nor the history proof that would let her link the
 * handle's later versions. Before, she got both: her handles were read once, before the lookup.
 */
static void test_lookup_racing_handle_removal(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory;
    struct log_read_job job = {0};
    const Msv__Wire__HandleDevices *hd;
    char gate[200];

    (void)state;
    racing_server(&s, "lookup_gate", gate, &alice, &mallory);
    job.c = alice;
    race_handle_away(&s, gate, owner_lookup_job, &job);
    assert_int_equal(job.r->lookup_result->n_results, 1);
    hd = job.r->lookup_result->results[0];
    assert_int_equal(hd->n_devices, 1);
    assert_int_equal(hd->devices[0]->device_id, mallory->device_id);
    assert_int_equal(hd->n_versions, 0);
    assert_int_equal(hd->history_proof.len, 0);
    assert_int_equal(test_server_metric(&s, "lookups_again_total"), 1);
    msv_frame_free(job.r);
    msv_client_close(alice);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

/*
 * A monitor that starts late: alice registers and does not look; the operator logs a device
 * for her behind her back (version 2), then her laptop is linked and approved, which drops it
 * from the set (version 3). Her phone's first run reads her versions from her first one and
 * raises the alarm for the forged device (it was taken as hers, from the set listed now, before
 * it read them); her laptop's first run takes what came before it was linked, and raises none.
 */
static void test_monitor_starts_late(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    test_server_stop(&s);
    log_foreign_device(&s, "alice@example.org");
    test_server_start(&s);
    laptop = linked_device(&s, alice, "alice-laptop");
    if (monitor(laptop, last) != 0)
        fail_msg("the laptop's alarm: %s", last);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "device 999999 ") == NULL || strstr(last, "never told of it") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(monitor(laptop, last), 0);
    msv_client_close(laptop);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A directory that answers the owner's monitor "slow down" every time would hide every version
 * from it: alice's lookups are limited (a bucket of 40, refilled once in 100 seconds), and
 * she empties it. A limited run waits for the next while the last complete read is recent; once
 * it is more than a day old (setting kt_monitor_complete set back 25 hours), the alarm, once:
 * said again a day later, not on every run. An honest bucket again: read, no alarm.
 */
static void test_monitor_rate_limited_alarm(void **state)
{
    const char *h[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice;
    msv_frame *r = NULL;
    uint8_t when[8];
    char last[400];
    int limited = 0;

    (void)state;
    test_server_init(&s, "[directory]\nlookup_rate = 0.01\nlookup_burst = 80\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", h[0]);
    assert_int_equal(monitor(alice, last), 0); /* a complete read */
    reconnect(alice);
    for (int i = 0; i < 80 && !limited; i++) {
        msv_err err = msv_request_lookup(alice->conn, h, 1, 0, 0, TEST_TIMEOUT_MS, &r, &alice->why);

        msv_frame_free(r);
        r = NULL;
        limited =
            err == MSV_ERR_INVALID && alice->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED;
    }
    assert_true(limited);
    assert_int_equal(monitor(alice, last), 0); /* limited, but read a moment ago */
    msv_put_u64be(when, (uint64_t)(msv_wall_ms() - 25LL * 3600 * 1000));
    assert_int_equal(msv_client_db_set(alice->db, "kt_monitor_complete", when, 8), MSV_OK);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "has not let this device check its account's handles for 25 hours") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(alice, last), 0); /* said again a day later */
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "[directory]\nlookup_burst = 1000\n");
    test_server_start(&s);
    msv_put_u64be(when, (uint64_t)(msv_wall_ms() - 25LL * 3600 * 1000));
    assert_int_equal(msv_client_db_set(alice->db, "kt_monitor_complete", when, 8), MSV_OK);
    assert_int_equal(monitor(alice, last), 0); /* read to the newest: no alarm */
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A key directory that forks: alice's monitor pins its root when it first runs; missived then
 * changes bob's entry in its tree (the log untouched) and grows from there (carol registers), so
 * that no root is signed twice for one size and every lookup of alice holds. Her monitor checks
 * the steps from the root it pinned, finds they start from another tree, and raises the alarm,
 * once; bob's monitor, on an honest directory, raises none.
 */
static void test_monitor_lineage_fork(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts: the root pinned */
    carol = client_for(&s, "carol", "carol@example.org");
    assert_int_equal(monitor(alice, last), 0); /* an honest step */
    assert_int_equal(monitor(bob, last), 0);
    assert_int_equal(monitor(bob, last), 0);
    msv_client_close(carol);
    /* entry 0 is the cut-over, 1 alice's, 2 bob's */
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "keydir_rewrite = change 2");
    test_server_start(&s);
    carol = client_for(&s, "dave", "dave@example.org");
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "does not grow from the one this device checked") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(alice, last), 0);
    msv_client_close(carol);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/* The lineage a device's monitor holds: setting kt_monitor_epoch, u64be size || root. */
static void lineage_of(struct msv_client *c, uint64_t *size, uint8_t root[32])
{
    uint8_t *v = NULL;
    size_t len = 0;

    assert_int_equal(msv_client_db_get(c->db, "kt_monitor_epoch", &v, &len), MSV_OK);
    assert_int_equal(len, 40);
    *size = msv_get_u64be(v);
    memcpy(root, v + 8, 32);
    free(v);
}

/*
 * A LogRead answer without a signed root whose head is newer than the last lookup's (the log grew
 * between them; a dishonest directory chooses it): the alarm, and the lineage goes on from the
 * root the last lookup accepted with that root's own size, so the honest directory's next steps
 * raise nothing. It used to move to the new head's size with the old size's root, a pair that is
 * no tree of the log, and the next honest answer raised a second, false alarm.
 */
static void test_monitor_lineage_no_root_newer_head(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    char last[400] = "";
    size_t alarms = 0;
    uint64_t size0, size1;
    uint8_t root0[32], root1[32];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(alice, last), 0);
    lineage_of(alice, &size0, root0);
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "log_read_epoch_fault = true");
    test_server_start(&s);
    carol = client_for(&s, "carol", "carol@example.org");
    reconnect(alice);
    /* the lineage alone: no lookup of alice's since the log grew */
    assert_int_equal(client_lineage_check(alice, count_alarm, last, &alarms), MSV_OK);
    assert_int_equal(alarms, 1);
    lineage_of(alice, &size1, root1);
    assert_true(size1 == size0 && memcmp(root1, root0, 32) == 0);
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    msv_client_close(client_for(&s, "dave", "dave@example.org"));
    reconnect(alice);
    alarms = 0;
    assert_int_equal(client_lineage_check(alice, count_alarm, last, &alarms), MSV_OK);
    if (alarms != 0)
        fail_msg("an honest directory raised the alarm: %s", last);
    msv_client_close(carol);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A LogRead answer whose head carries no key directory root ([testing] log_read_epoch_fault):
 * alice's monitor raises the lineage alarm, once, and goes on from the root her last lookup
 * accepted (so the honest directory's next steps hold). Before, it copied 32 bytes of the missing
 * root: read from nowhere (the monitor crashed) or pinned as the lineage.
 */
static void test_monitor_lineage_no_root(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    msv_frame *devs = NULL;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts: the root pinned */
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "log_read_epoch_fault = true");
    test_server_start(&s);
    carol = client_for(&s, "carol", "carol@example.org");
    drop_connection(alice);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "carries no key directory root") == NULL)
        fail_msg("the alarm: %s", last);
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    drop_connection(alice);
    /* a lookup keeps the honest root: the lineage goes on from there */
    assert_int_equal(msv_client_devices(alice, "carol@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    msv_client_close(client_for(&s, "dave", "dave@example.org"));
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(monitor(alice, last), 0);
    msv_client_close(carol);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * The log's cut-over, checked by every client's monitor as missive-audit checks it: alice's
 * lineage reads the cut-over (entry 0) that LogEntries.cutover names, then the directory names
 * the entry after it instead ([testing] log_cutover_fault): her monitor raises the lineage alarm,
 * once. Before, clients took LogEntries.cutover unread: only auditors saw the cut-over move.
 */
static void test_monitor_cutover_moved(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t *v = NULL;
    size_t len = 0;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts: the root pinned */
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(alice, last), 0); /* a step read: the cut-over named with it */
    assert_int_equal(msv_client_db_get(alice->db, "kt_cutover", &v, &len), MSV_OK);
    assert_int_equal(len, 8);
    assert_int_equal(msv_get_u64be(v), 0);
    free(v);
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "log_cutover_fault = true");
    test_server_start(&s);
    msv_client_close(client_for(&s, "carol", "carol@example.org"));
    drop_connection(alice);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "cut-over") == NULL)
        fail_msg("the alarm: %s", last);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * Starts s with alice and bob, pins bob's lineage, registers the first n of carol, erin and frank,
 * then has the directory show bob, looking alice up, a tree that holds a version of hers no log
 * entry is (`[testing] keydir_forge`); s is left stopped.
 */
static void forged_root_shown(struct test_server *s, struct msv_client **alice,
                              struct msv_client **bob, size_t n)
{
    const char *to[1] = {"alice@example.org"};
    const char *names[3][2] = {{"carol", "carol@example.org"},
                               {"erin", "erin@example.org"},
                               {"frank", "frank@example.org"}};
    msv_frame *devs = NULL;
    char last[400];

    test_server_init(s, NULL);
    test_server_start(s);
    *alice = client_for(s, "alice", to[0]);
    *bob = client_for(s, "bob", "bob@example.org");
    assert_int_equal(monitor(*bob, last), 0); /* where bob's lineage starts */
    for (size_t i = 0; i < n && i < 3; i++)
        msv_client_close(client_for(s, names[i][0], names[i][1]));
    test_server_stop(s);
    snprintf(s->extra, sizeof(s->extra), "keydir_forge = alice@example.org 8");
    test_server_start(s);
    drop_connection(*bob);
    assert_int_equal(msv_client_devices(*bob, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    test_server_stop(s);
}

/*
 * A lineage shown to a sender only: bob's monitor pins the key directory's root; the directory
 * then shows bob, looking alice up, a tree that holds a version of hers no log entry is (a root
 * signed for a size his monitor never ran at), and goes back to the honest tree, growing past
 * that size. Bob's monitor checks the steps from its pin and finds that they do not build, at
 * that size, the root his lookup was shown: the alarm, once (before, the root was never checked).
 */
static void test_monitor_lineage_sender_only(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *other;
    char last[400];

    (void)state;
    forged_root_shown(&s, &alice, &bob, 1);
    s.extra[0] = '\0';
    test_server_start(&s);
    other = client_for(&s, "dave", "dave@example.org");
    assert_int_equal(monitor(bob, last), 1);
    if (strstr(last, "the root a lookup showed this device for") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(bob, last), 0);
    msv_client_close(other);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A directory that shows bob a forged root at a size his monitor's next run does not reach (its
 * LogRead limited to one answer, then refused) is still caught by a later run: the roots lookups
 * showed him are kept until his lineage reaches their size.
 */
static void test_monitor_lineage_seen_kept(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *other;
    char last[400];
    size_t first, second;

    (void)state;
    forged_root_shown(&s, &alice, &bob, 3);
    /* the honest tree again, but LogRead limited to one answer and then refused */
    snprintf(s.extra, sizeof(s.extra), "%s",
             "[directory]\nlog_read_burst = 1\nlog_read_rate = 0.01");
    test_server_start(&s);
    other = client_for(&s, "dave", "dave@example.org");
    drop_connection(bob);
    first = monitor(bob, last);
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    drop_connection(bob);
    second = monitor(bob, last);
    assert_int_equal(first, 0);
    assert_int_equal(second, 1);
    if (strstr(last, "the root a lookup showed this device for") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(bob, last), 0); /* once */
    msv_client_close(other);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/* Sets the time every root kept for c's lineage was kept (or last told) to hours ago. */
static size_t seen_roots_age(struct msv_client *c, int64_t hours)
{
    return stamp_records(c, "kt_seen_roots", 4, 48, 40, msv_wall_ms() - hours * 3600 * 1000);
}

/*
 * A lineage that cannot advance is not silent: roots lookups showed bob that his monitor cannot
 * check (the directory limits his LogRead) are told once they wait a day, and again a day later;
 * once the directory lets him read, they are checked and nothing is said.
 */
static void test_monitor_lineage_stall_alarm(void **state)
{
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *other;
    msv_frame *devs = NULL;
    char last[400];
    int limited = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(bob, last), 0); /* where bob's lineage starts */
    other = client_for(&s, "carol", "carol@example.org");
    msv_client_close(other);
    assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
    msv_frame_free(devs);
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "%s",
             "[directory]\nlog_read_burst = 1\nlog_read_rate = 0.01");
    test_server_start(&s);
    reconnect(bob);
    for (int i = 0; i < 4 && !limited; i++) { /* the one read the limit lets through, spent */
        msv_frame *r = NULL;
        msv_err err = msv_request_log_read(bob->conn, 0, 1, 0, 1, TEST_TIMEOUT_MS, &r, &bob->why);

        msv_frame_free(r);
        limited = err == MSV_ERR_INVALID;
    }
    assert_true(limited);
    other = client_for(&s, "dave", "dave@example.org"); /* the directory grows past bob's root */
    msv_client_close(other);
    drop_connection(bob);
    assert_int_equal(monitor(bob, last), 0); /* limited, but shown a moment ago */
    assert_true(seen_roots_age(bob, 25) > 0);
    drop_connection(bob);
    assert_int_equal(monitor(bob, last), 1);
    if (strstr(last, "has not let this device check, for 25 hours") == NULL)
        fail_msg("the alarm: %s", last);
    drop_connection(bob);
    assert_int_equal(monitor(bob, last), 0); /* said again a day later */
    test_server_stop(&s);
    s.extra[0] = '\0';
    test_server_start(&s);
    seen_roots_age(bob, 25);
    drop_connection(bob);
    assert_int_equal(monitor(bob, last), 0); /* read to the newest: checked, no alarm */
    assert_int_equal(seen_roots_age(bob, 0), 0);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * The roots kept for the lineage are bounded: of 65 shown at sizes the log has not reached, the 64
 * smallest stay and the ones not kept are told, once; a setting that does not parse is told too.
 */
static void test_monitor_lineage_seen_bounded(void **state)
{
    struct test_server s;
    struct msv_client *bob;
    uint8_t root[32], *v = NULL;
    size_t len = 0;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(bob, last), 0); /* where bob's lineage starts */
    memset(root, 7, sizeof(root));
    for (uint64_t i = 0; i < 65; i++)
        assert_int_equal(msv_kt_seen_add(bob->db, 100064 - i, root), MSV_OK);
    assert_int_equal(msv_kt_seen_add(bob->db, 100000, root), MSV_OK); /* kept already */
    assert_int_equal(msv_client_db_get(bob->db, "kt_seen_roots", &v, &len), MSV_OK);
    assert_int_equal(len, 4 + 64 * 48);
    assert_int_equal(msv_get_u32be(v), 1);
    assert_int_equal(msv_get_u64be(v + 4), 100000);
    assert_int_equal(msv_get_u64be(v + 4 + 63 * 48), 100063);
    free(v);
    assert_int_equal(monitor(bob, last), 1);
    /* the monitor's own lookup kept the newest root, smaller, and made a second room */
    if (strstr(last, "2 key directory roots that lookups showed this device were not kept") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(monitor(bob, last), 0); /* once */
    assert_int_equal(msv_client_db_set(bob->db, "kt_seen_roots", root, 5), MSV_OK);
    assert_int_equal(monitor(bob, last), 1);
    assert_int_equal(monitor(bob, last), 0);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A directory whose answer to alice's monitor holds more versions of her handle than an answer may
 * (40 of them, [testing] owner_versions_max): refused, the alarm, and nothing of it taken. Before,
 * the monitor took them all (and 256 would have wrapped its count of versions taken to 0).
 */
static void test_owner_versions_too_many(void **state)
{
    struct test_server s;
    struct msv_client *alice;
    uint8_t *leaf = NULL;
    size_t len = 0;
    int64_t index = 0;
    uint32_t version = 0;
    uint64_t at = 0;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, appended below */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts: version 1 */
    test_server_stop(&s);
    forge_leaf(&s, "alice@example.org", NULL, 0, &leaf, &len, &index);
    for (int i = 0; i < 40; i++)
        append_leaf(&s, "alice@example.org", leaf, len);
    free(leaf);
    snprintf(s.extra, sizeof(s.extra), "owner_versions_max = 40");
    test_server_start(&s);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "more than the 32 an answer holds") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(client_history_get(alice, "alice@example.org", &version, &at), MSV_OK);
    assert_int_equal(version, 1);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * The owner's versions come a bounded number at a time: 40 versions of alice's handle logged
 * since her monitor last looked (her own device set each time) take an answer of 32 and one
 * more, and her monitor reads them all in one run, quietly. Nobody else gets them.
 */
static void test_owner_versions_paged(void **state)
{
    const char *alice_h[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    msv_frame *r = NULL;
    uint8_t *leaf = NULL;
    size_t len = 0;
    int64_t index = 0;
    uint64_t from[1] = {1};
    uint32_t version = 0;
    uint64_t newest = 0;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, forged and appended below */
    test_server_start(&s);
    alice = client_for(&s, "alice", alice_h[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(monitor(alice, last), 0); /* where watching starts: version 1 */
    test_server_stop(&s);
    forge_leaf(&s, alice_h[0], NULL, 0, &leaf, &len, &index);
    for (int i = 0; i < 40; i++)
        append_leaf(&s, alice_h[0], leaf, len);
    free(leaf);
    test_server_start(&s);
    reconnect(alice);
    assert_int_equal(
        msv_request_owner_lookup(alice->conn, alice_h, 1, 0, from, 0, TEST_TIMEOUT_MS, &r, NULL),
        MSV_OK);
    assert_int_equal(r->lookup_result->results[0]->n_versions, 32);
    assert_true(r->lookup_result->results[0]->versions_more);
    /* 1 asks for the whole history: alice's version 1 is entry 0 */
    assert_int_equal(r->lookup_result->results[0]->versions[0]->entry->index, 0);
    assert_int_equal(r->lookup_result->results[0]->versions[0]->version, 1);
    assert_int_equal(r->lookup_result->results[0]->versions[31]->version, 32);
    msv_frame_free(r);
    r = NULL;
    /* Y1: versions_from naming another number of indexes than handles */
    {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__LookupRequest q = MSV__WIRE__LOOKUP_REQUEST__INIT;
        ProtobufCBinaryData h = {strlen(alice_h[0]), (uint8_t *)alice_h[0]};
        uint64_t two[2] = {1, 1};

        q.n_handles = 1;
        q.handles = &h;
        q.n_versions_from = 2;
        q.versions_from = two;
        req.body_case = MSV__WIRE__FRAME__BODY_LOOKUP;
        req.lookup = &q;
        assert_int_equal(msv_conn_request(alice->conn, &req, TEST_TIMEOUT_MS, &r), MSV_OK);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_ERROR);
        assert_int_equal(r->error->code, MSV__WIRE__ERROR_CODE__ERROR_INVALID);
        msv_frame_free(r);
        r = NULL;
    }
    /* Y7: the own handle named twice with versions (or a history proof) would have the log's
     * lock make VRF proofs for each copy (62 copies held it about half a second) */
    {
        const char *twice[2] = {alice_h[0], alice_h[0]};
        uint64_t both[2] = {1, 1};

        assert_int_equal(
            msv_request_owner_lookup(alice->conn, twice, 2, 0, both, 0, TEST_TIMEOUT_MS, &r, NULL),
            MSV_ERR_INVALID);
        assert_null(r);
        assert_int_equal(
            msv_request_owner_lookup(alice->conn, twice, 2, 1, NULL, 0, TEST_TIMEOUT_MS, &r, NULL),
            MSV_ERR_INVALID);
        assert_null(r);
    }
    reconnect(bob);
    assert_int_equal(
        msv_request_owner_lookup(bob->conn, alice_h, 1, 0, from, 0, TEST_TIMEOUT_MS, &r, NULL),
        MSV_OK);
    assert_int_equal(r->lookup_result->results[0]->n_versions, 0);
    assert_false(r->lookup_result->results[0]->versions_more);
    msv_frame_free(r);
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(client_history_get(alice, alice_h[0], &version, &newest), MSV_OK);
    assert_int_equal(version, 41);
    /* version 1 by the monitor's first run, 32 asked for directly, then 40 by the monitor */
    assert_int_equal(test_server_metric(&s, "owner_versions_total"), 73);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/* alice with a second handle, +15550001, her monitor started; mallory registered. */
static void second_handle_setup(struct test_server *s, struct msv_client **alice,
                                struct msv_client **mallory)
{
    char last[400], code[7];

    test_server_init(s, "trust_store_log = true");
    test_server_start(s);
    *alice = client_for(s, "alice", "alice@example.org");
    *mallory = client_for(s, "mallory", "mallory@example.org");
    assert_int_equal(monitor(*alice, last), 0); /* where watching starts */
    assert_int_equal(msv_client_handle_add(*alice, "+15550001"), MSV_OK);
    test_server_code(s, "+15550001", code);
    assert_int_equal(msv_client_handle_verify(*alice, "+15550001", code), MSV_OK);
    assert_int_equal(monitor(*alice, last), 0); /* the new handle lists alice's own devices */
}

/*
 * Versions of two handles at once, more than an answer holds of either: 40 of alice's handle and
 * 40 of her second, one after the other in the log. Each answer gives each handle its share, the
 * monitor checks both in log order up to where one stops, and reads them all in one run.
 */
static void test_owner_versions_two_handles(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory;
    uint8_t *leaf = NULL, *second = NULL;
    size_t len = 0, second_len = 0;
    int64_t index = 0;
    uint32_t version = 0;
    uint64_t newest = 0;
    char last[400];

    (void)state;
    second_handle_setup(&s, &alice, &mallory);
    test_server_stop(&s);
    forge_leaf(&s, "alice@example.org", NULL, 0, &leaf, &len, &index);
    forge_leaf(&s, "+15550001", NULL, 0, &second, &second_len, &index);
    for (int i = 0; i < 40; i++) {
        append_leaf(&s, "alice@example.org", leaf, len);
        append_leaf(&s, "+15550001", second, second_len);
    }
    free(leaf);
    free(second);
    test_server_start(&s);
    drop_connection(alice);
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(client_history_get(alice, "alice@example.org", &version, &newest), MSV_OK);
    assert_int_equal(version, 41);
    assert_int_equal(client_history_get(alice, "+15550001", &version, &newest), MSV_OK);
    assert_int_equal(version, 41);
    msv_client_close(mallory);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * The check of the entries the directory serves covers every handle of the account, not only
 * the one this device goes by: once alice's monitor has checked a later version of her second
 * handle than the directory serves, the alarm names that handle. (A live directory that hides
 * the newest entry of a handle is caught first by the key directory's version proof, which a
 * lookup checks: here the monitor's record of what it read is moved ahead instead, as if the
 * directory had shown the monitor a version that it now withholds from lookups.)
 */
static void test_monitor_newest_second_handle(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory, *laptop;
    char last[400];
    uint8_t ahead[24];

    (void)state;
    second_handle_setup(&s, &alice, &mallory);
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(monitor(alice, last), 0);
    /* the version the monitor last checked of +15550001: moved to log entry 1000 */
    memset(ahead, 0, sizeof(ahead));
    msv_put_u32be(ahead, 2);
    msv_put_u64be(ahead + 4, 1000);
    assert_int_equal(msv_client_db_set(alice->db, "kt_history:+15550001", ahead, 24), MSV_OK);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "under +15550001 from an older log entry than entry 1000") == NULL)
        fail_msg("the alarm: %s", last);
    msv_client_close(laptop);
    msv_client_close(mallory);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/*
 * A tombstone of one of alice's handles: after her laptop removed it (the phone was told), her
 * phone's monitor ends the watch quietly; one the server wrote by itself, for a handle none of
 * her devices removed, raises the alarm, once, and the handle stays watched.
 */
static void test_monitor_unasked_tombstone(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory, *laptop;
    static struct msv_kt_entry e;
    char last[400], code[7];
    uint8_t *leaf = NULL, *v = NULL;
    size_t len = 0;

    (void)state;
    second_handle_setup(&s, &alice, &mallory);
    laptop = linked_device(&s, alice, "alice-laptop");
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(msv_client_handle_remove(laptop, "+15550001"), MSV_OK);
    assert_int_equal(monitor(alice, last), 0);
    assert_int_equal(msv_client_handle_add(alice, "+15550002"), MSV_OK);
    test_server_code(&s, "+15550002", code);
    assert_int_equal(msv_client_handle_verify(alice, "+15550002", code), MSV_OK);
    assert_int_equal(monitor(alice, last), 0);
    test_server_stop(&s);
    e.deleted = 1;
    e.time_ms = msv_wall_ms();
    snprintf(e.handle, sizeof(e.handle), "+15550002");
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    append_leaf(&s, "+15550002", leaf, len);
    free(leaf);
    server_sql(&s, "DELETE FROM account_handles WHERE handle = '+15550002';");
    test_server_start(&s);
    assert_int_equal(monitor(alice, last), 1);
    if (strstr(last, "handle +15550002 was removed") == NULL ||
        strstr(last, "none of its devices removed it") == NULL)
        fail_msg("the alarm: %s", last);
    assert_int_equal(msv_client_db_get(alice->db, "handles_watched", &v, &len), MSV_OK);
    assert_non_null(memmem(v, len, "+15550002\n", 10));
    free(v);
    assert_int_equal(monitor(alice, last), 0);
    msv_client_close(laptop);
    msv_client_close(mallory);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/* The stopped server logs mallory's device under +15550001; alice's monitor must alarm. */
static void forge_second_handle(struct test_server *s, struct msv_client *alice)
{
    static struct msv_kt_entry e;
    uint8_t *leaf = NULL, *forged = NULL;
    size_t len = 0, forged_len = 0;
    int64_t index = 0;
    char last[400];

    forge_leaf(s, "mallory@example.org", NULL, 0, &leaf, &len, &index);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &e), MSV_OK);
    snprintf(e.handle, sizeof(e.handle), "+15550001");
    assert_int_equal(msv_kt_leaf_encode(&e, &forged, &forged_len), MSV_OK);
    append_leaf(s, "+15550001", forged, forged_len);
    test_server_start(s);
    drop_connection(alice);
    /* mallory's device, and its approval: her root, not approved by one of alice's devices */
    assert_int_equal(monitor(alice, last), 2);
    assert_non_null(strstr(last, "for this account, and this device was never told of it"));
    free(leaf);
    free(forged);
}

/*
 * A dishonest directory logs mallory's device under alice's second handle: the log is
 * consistent, so others would accept it, but alice's monitor checks every handle of her
 * account and raises the alarm; the handle's honest first leaf raised none.
 */
static void test_forged_device_under_second_handle(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory;

    (void)state;
    second_handle_setup(&s, &alice, &mallory);
    test_server_stop(&s);
    forge_second_handle(&s, alice);
    msv_client_close(alice);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

static void all_alarms(void *ctx, const char *warning)
{
    char *all = ctx;
    size_t used = strlen(all);

    snprintf(all + used, 4000 - used, "%s | ", warning);
}

/*
 * The directory logs mallory's device under alice's second handle, and alice removes the handle
 * and adds it again before her monitor next looks: the versions between the one it checked last
 * and her own removal are still hers to judge, and it raises the alarm for mallory's device.
 * Before, the versions it was given started at the handle's newest tombstone, her removal, so the
 * forged version was never judged (and the removal, taken as the first version, was said to be
 * the server's).
 */
static void test_monitor_judges_before_own_removal(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory;
    static struct msv_kt_entry e;
    uint8_t *leaf = NULL, *forged = NULL;
    size_t len = 0, forged_len = 0, alarms = 0, count = 0;
    int64_t index = 0;
    int shown = 0;
    char code[7], all[4000] = "";

    (void)state;
    second_handle_setup(&s, &alice, &mallory);
    test_server_stop(&s);
    forge_leaf(&s, "mallory@example.org", NULL, 0, &leaf, &len, &index);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &e), MSV_OK);
    snprintf(e.handle, sizeof(e.handle), "+15550001");
    assert_int_equal(msv_kt_leaf_encode(&e, &forged, &forged_len), MSV_OK);
    append_leaf(&s, "+15550001", forged, forged_len);
    test_server_start(&s);
    drop_connection(alice);
    assert_int_equal(msv_client_handle_remove(alice, "+15550001"), MSV_OK);
    assert_int_equal(msv_client_handle_add(alice, "+15550001"), MSV_OK);
    test_server_code(&s, "+15550001", code);
    assert_int_equal(msv_client_handle_verify(alice, "+15550001", code), MSV_OK);
    reconnect(alice);
    assert_int_equal(msv_client_receive(alice, 300, count_new, &shown, &count), MSV_OK);
    assert_int_equal(msv_client_monitor(alice, all_alarms, all, &alarms), MSV_OK);
    /* (the forged set left out alice's phone: listed again after it, it is said to be back) */
    if (strstr(all, "for this account, and this device was never told of it") == NULL ||
        strstr(all, "took it away") != NULL)
        fail_msg("the alarms (%zu): %s", alarms, all);
    /* nothing more to judge: the next run is quiet */
    all[0] = '\0';
    assert_int_equal(msv_client_monitor(alice, all_alarms, all, &alarms), MSV_OK);
    if (alarms != 0)
        fail_msg("the alarms the next run (%zu): %s", alarms, all);
    free(leaf);
    free(forged);
    msv_client_close(alice);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

/*
 * A dishonest server drops alice's second handle from the list of her handles it answers, then
 * logs mallory's device under that handle: alice's device keeps its own list of the account's
 * handles, which only a tombstone it reads in the log (or its own removal) shrinks, so her
 * monitor still checks that handle and raises the alarm.
 */
static void test_monitor_keeps_dropped_handle(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory;
    char **handles = NULL;
    size_t n = 0;

    (void)state;
    second_handle_setup(&s, &alice, &mallory);
    test_server_stop(&s);
    /* the server's list of alice's handles loses the second one */
    server_sql(&s, "DELETE FROM account_handles WHERE handle = '+15550001';");
    test_server_start(&s);
    drop_connection(alice);
    assert_int_equal(msv_client_handles(alice, &handles, &n), MSV_OK);
    assert_int_equal(n, 1);
    msv_handles_free(handles, n);
    test_server_stop(&s);
    forge_second_handle(&s, alice);
    msv_client_close(alice);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

/*
 * While alice's laptop is away, her phone removes alice@example.org (the handle the laptop
 * authenticates with) and mallory registers it: the laptop still logs in, as alice's account
 * under its first handle, and learns the account's handles; mallory's account is not touched.
 */
static void test_away_device_handle_taken(void **state)
{
    struct test_server s;
    struct msv_client *alice, *laptop, *mallory;
    char **handles = NULL, code[7];
    size_t n = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    laptop = linked_device(&s, alice, "alice-laptop");
    drop_connection(laptop);
    assert_int_equal(msv_client_handle_add(alice, "+15550001"), MSV_OK);
    test_server_code(&s, "+15550001", code);
    assert_int_equal(msv_client_handle_verify(alice, "+15550001", code), MSV_OK);
    assert_int_equal(msv_client_handle_remove(alice, "alice@example.org"), MSV_OK);
    mallory = client_for(&s, "mallory", "alice@example.org");
    assert_string_equal(laptop->handle, "alice@example.org");
    assert_int_equal(msv_client_connect(laptop), MSV_OK);
    assert_int_equal(msv_client_handles(laptop, &handles, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_string_equal(handles[0], "+15550001");
    msv_handles_free(handles, n);
    n = 0;
    assert_int_equal(msv_client_handles(mallory, &handles, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_string_equal(handles[0], "alice@example.org");
    msv_handles_free(handles, n);
    msv_client_close(alice);
    msv_client_close(laptop);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

static void count_sync(void *ctx, const struct msv_incoming *in);

static void last_from(void *ctx, const struct msv_incoming *in)
{
    if (in->message != NULL && in->from != NULL)
        snprintf(ctx, 300, "%s", in->from);
}

/*
 * alice's laptop authenticates with her second handle: a message from it to bob, who wrote to
 * neither, goes as her first handle; and a sync from it sent as the second handle is applied
 * by her phone (one of the account's handles), as a sync from mallory is not.
 */
static void test_default_send_as_first_handle(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *laptop, *bob;
    char code[7], from[300] = "", **handles = NULL;
    uint8_t id[16], *v = NULL;
    size_t n = 0, count = 0, len = 0;
    int synced = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_handle_add(alice, "+15550001"), MSV_OK);
    test_server_code(&s, "+15550001", code);
    assert_int_equal(msv_client_handle_verify(alice, "+15550001", code), MSV_OK);
    laptop = linked_device_as(&s, alice, "alice-laptop", "+15550001");
    assert_int_equal(msv_client_handles(laptop, &handles, &n), MSV_OK);
    msv_handles_free(handles, n);
    assert_int_equal(msv_client_send(laptop, to, 1, "hello", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_receive(bob, 500, last_from, from, &count), MSV_OK);
    assert_string_equal(from, "alice@example.org");
    /* a sync the laptop sends as its own handle */
    assert_int_equal(msv_client_send_from(laptop, "+15550001"), MSV_OK);
    assert_int_equal(msv_client_db_set(laptop->db, "sync:privacy:typing", "off", 3), MSV_OK);
    assert_int_equal(msv_client_sync_flush(laptop, &n), MSV_OK);
    assert_int_equal(n, 1);
    reconnect(alice);
    assert_int_equal(msv_client_receive(alice, 500, count_sync, &synced, &count), MSV_OK);
    assert_int_equal(synced, 1);
    assert_int_equal(msv_client_db_get(alice->db, "sync:privacy:typing", &v, &len), MSV_OK);
    assert_memory_equal(v, "off", 3);
    free(v);
    msv_client_close(alice);
    msv_client_close(laptop);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A dishonest directory answers a lookup of alice's second handle with mallory's leaf (and
 * devices): the leaf names another handle than the one asked, so bob refuses the answer, and
 * his message to the handle reaches alice, nothing of it mallory.
 */
static void test_swapped_handle_answer(void **state)
{
    struct test_server s;
    struct msv_client *alice, *mallory, *bob;
    msv_frame *devs = NULL;
    uint8_t *leaf = NULL;
    size_t len = 0;
    int64_t index = 0;
    char code[7];

    (void)state;
    test_server_init(&s, "trust_store_log = true");
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    mallory = client_for(&s, "mallory", "mallory@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_handle_add(alice, "+15550001"), MSV_OK);
    test_server_code(&s, "+15550001", code);
    assert_int_equal(msv_client_handle_verify(alice, "+15550001", code), MSV_OK);
    assert_int_equal(msv_client_devices(bob, "+15550001", &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->devices[0]->device_id, alice->device_id);
    msv_frame_free(devs);
    devs = NULL;
    test_server_stop(&s);
    forge_leaf(&s, "mallory@example.org", NULL, 0, &leaf, &len, &index);
    append_leaf(&s, "+15550001", leaf, len); /* mallory's own leaf, served for alice's handle */
    test_server_start(&s);
    drop_connection(bob);
    drop_connection(alice);
    drop_connection(mallory);
    assert_int_equal(msv_client_devices(bob, "+15550001", &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "are not the ones its log holds"));
    /* what bob knew of the handle (alice's devices) still holds: mallory gets nothing */
    assert_int_equal(msv_client_send(bob, (const char *[]){"+15550001"}, 1, "hi", NULL, 0, NULL,
                                     (uint8_t[16]){0}),
                     MSV_OK);
    {
        size_t n = 0;

        assert_int_equal(msv_client_receive(mallory, 500, NULL, NULL, &n), MSV_OK);
        assert_int_equal(n, 0);
        assert_int_equal(msv_client_receive(alice, 2000, NULL, NULL, &n), MSV_OK);
        assert_int_equal(n, 1);
    }
    free(leaf);
    msv_client_close(alice);
    msv_client_close(mallory);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * The server signs heads dated two days ahead (a head that would look fresh
 * for two days more): bob refuses them and remembers nothing; a head a
 * minute ahead (clocks differ) is accepted.
 */
static void test_head_from_the_future(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_kt_head before, after;
    msv_frame *devs = NULL;
    char clock[160];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(msv_kt_known_head(bob->db, &before), MSV_OK);
    test_server_stop(&s);
    test_server_set_clock(&s, msv_wall_ms() + 48LL * 3600 * 1000);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "in the future"));
    assert_int_equal(msv_kt_known_head(bob->db, &after), MSV_OK);
    assert_int_equal(after.time_ms, before.time_ms);
    test_server_stop(&s);
    test_server_set_clock(&s, msv_wall_ms() + 60000);
    test_server_start(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    test_server_stop(&s);
    snprintf(clock, sizeof(clock), "%s/clock", s.dir);
    assert_int_equal(unlink(clock), 0);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * The server shows carol a log other than the one bob saw: bob's message
 * carries the head he accepted, carol has never seen the log before (so on
 * her own she has nothing to compare), and her monitor finds that the two
 * heads cannot be of one log. Heads that do fit raise nothing.
 */
static void test_gossip_reveals_fork(void **state)
{
    const char *to[1] = {"carol@example.org"};
    struct test_server s;
    struct msv_client *bob, *carol;
    uint8_t id[16], *leaf = NULL;
    size_t len = 0, alarms = 0, count = 0;
    int64_t index = 0;
    int shown = 0;
    char last[400];

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, one rewritten in the store below */
    test_server_start(&s);
    bob = client_for(&s, "bob", "bob@example.org");
    carol = client_for(&s, "carol", to[0]);
    assert_int_equal(msv_client_send(bob, to, 1, "hello carol", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_send(bob, to, 1, "same head", NULL, 0, NULL, id), MSV_OK);
    /* the log carol will see: the time in bob's leaf rewritten (his key unchanged) */
    test_server_stop(&s);
    forge_leaf(&s, "bob@example.org", NULL, 0, &leaf, &len, &index);
    leaf[1] ^= 1;
    replace_leaf(&s, index, leaf, len);
    test_server_start(&s);
    reconnect(carol);
    assert_int_equal(msv_client_receive(carol, 500, count_new, &shown, &count), MSV_OK);
    assert_int_equal(count, 2);
    last[0] = '\0';
    assert_int_equal(msv_client_monitor(carol, count_alarm, last, &alarms), MSV_OK);
    assert_int_equal(alarms, 1); /* two messages, one head: one alarm */
    assert_non_null(strstr(last, "bob@example.org's device saw"));
    assert_non_null(strstr(last, "different directories"));
    free(leaf);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* A head of size with root, signed now with the log key on the server's disk (the operator's). */
static void operator_head(struct test_server *s, uint64_t size, const uint8_t root[32],
                          struct msv_kt_head *h)
{
    char path[160];
    uint8_t sk[64];
    FILE *f;

    snprintf(path, sizeof(path), "%s/data/log.key", s->dir);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(sk, 1, sizeof(sk), f), sizeof(sk));
    fclose(f);
    h->size = size;
    h->time_ms = msv_wall_ms();
    memcpy(h->root, root, 32);
    assert_int_equal(msv_kt_head_sign(h, sk), MSV_OK);
}

static void set_known_head(struct msv_client *c, const struct msv_kt_head *h)
{
    uint8_t v[MSV_LOG_HEAD_LEN];

    msv_kt_head_encode(h, v);
    assert_int_equal(msv_client_db_set(c->db, "kt_head", v, sizeof(v)), MSV_OK);
}

/*
 * A gossiped head smaller than this device's is checked against the server's
 * current head, which must extend both: one that extends the gossiped head
 * but not the head this device was shown (a forked view) is a misfit; an
 * honest current head is adopted.
 */
static void test_gossip_checks_both_heads(void **state)
{
    struct test_server s;
    struct msv_client *bob, *carol, *dave, *erin, *frank;
    struct msv_kt_head g, mine, forged;
    msv_frame *devs = NULL;
    uint8_t root[32];
    int fits = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    bob = client_for(&s, "bob", "bob@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    assert_int_equal(msv_client_devices(bob, "carol@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(msv_kt_known_head(bob->db, &g), MSV_OK); /* what bob's messages carry */
    dave = client_for(&s, "dave", "dave@example.org");
    assert_int_equal(msv_client_devices(carol, "dave@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    erin = client_for(&s, "erin", "erin@example.org");

    /* honest: bob's smaller head fits, and carol adopts the server's newer one */
    assert_int_equal(msv_kt_known_head(carol->db, &mine), MSV_OK);
    assert_true(g.size < mine.size);
    assert_int_equal(msv_kt_check_gossip(carol->db, carol->conn, &g, &fits), MSV_OK);
    assert_int_equal(fits, 1);
    assert_int_equal(msv_kt_known_head(carol->db, &mine), MSV_OK);
    assert_int_equal(mine.size, g.size + 2);

    /* carol was shown a fork (a head of her size with another root); the log grows on */
    frank = client_for(&s, "frank", "frank@example.org");
    memset(root, 0x42, sizeof(root));
    operator_head(&s, mine.size, root, &forged);
    set_known_head(carol, &forged);
    assert_int_equal(msv_kt_check_gossip(carol->db, carol->conn, &g, &fits), MSV_OK);
    assert_int_equal(fits, 0);
    assert_int_equal(msv_kt_known_head(carol->db, &mine), MSV_OK);
    assert_memory_equal(mine.root, root, 32); /* nothing adopted */
    msv_client_close(bob);
    msv_client_close(carol);
    msv_client_close(dave);
    msv_client_close(erin);
    msv_client_close(frank);
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

/* Fills handle's account (registered through d) up to 64 devices of 3072-bit classic identities. */
static uint64_t fill_account(struct test_server *s, const char *handle, struct test_device *d,
                             const struct msv_identity *big)
{
    struct msv_refusal why = {0};
    struct msv_conn *c = test_connect(s);
    uint64_t dev = 0;

    for (int i = 1; i < 64; i++) {
        msv_frame *r;

        if (msv_request_add_device(c, handle, TEST_PASSWORD, big, NULL, "token", TEST_TIMEOUT_MS,
                                   &dev, &why) != MSV_OK)
            fail_msg("adding device %d to %s: %s", i, handle, why.message);
        r = test_approve_key(d, dev, big);
        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_OK);
        msv_frame_free(r);
    }
    msv_conn_close(c);
    return dev; /* the last one added */
}

/* carol's message to the big accounts: the envelopes queued for their 63 big devices each. */
static size_t send_to_big(struct test_server *s, struct msv_client *carol, const char **to,
                          const struct test_device *first, size_t n)
{
    struct test_queued *rows = NULL;
    size_t before, total, queued = 0;
    uint8_t id[16];

    test_queued_free(rows, before = test_server_queued(s, &rows));
    if (msv_client_send(carol, to, n, "to every device", NULL, 0, NULL, id) != MSV_OK)
        fail_msg("send to %zu big accounts: %s", n, carol->why.message);
    total = test_server_queued(s, &rows);
    for (size_t i = before; i < total; i++) {
        int big = 1;

        for (size_t k = 0; k < n; k++)
            big &= rows[i].device_id != first[k].device_id;
        queued += (size_t)big;
    }
    test_queued_free(rows, total);
    return queued;
}

/* d removes device (of its account) and approves a new big one in its place. */
static void replace_device(struct test_server *s, const char *handle, struct test_device *d,
                           uint64_t device, const struct msv_identity *big)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;
    struct msv_refusal why = {0};
    struct msv_conn *c = test_connect(s);
    uint64_t dev = 0;
    msv_frame *r;

    rm.device_id = device;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    r = test_request(d->conn, &req);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_OK);
    msv_frame_free(r);
    if (msv_request_add_device(c, handle, TEST_PASSWORD, big, NULL, "token", TEST_TIMEOUT_MS, &dev,
                               &why) != MSV_OK)
        fail_msg("adding a device to %s again: %s", handle, why.message);
    r = test_approve_key(d, dev, big);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_OK);
    msv_frame_free(r);
    msv_conn_close(c);
}

/*
 * Three accounts of 64 big devices each, identity_max just above their size
 * and the smallest frame_max it allows: the directory's answer about two or
 * three does not fit in the server's frames (it refuses it as too big), but
 * one about any one does. A message to all three is still sent, to all 192
 * devices. Then one device of each is replaced: the relay's list of the
 * current devices of all three does not fit in a frame either, so it names
 * the handles that fit and says it is partial; the client looks the handles
 * up and the send still reaches every device.
 */
static void test_send_to_big_accounts(void **state)
{
    struct test_server s;
    struct test_device first[3];
    struct msv_identity *big = NULL;
    struct msv_client *carol;
    const char *to[3] = {"alice@example.org", "bob@example.org", "dave@example.org"};
    uint64_t last[3];

    (void)state;
    /* 2 x 64 x (775 + 64) + 16 KiB = 123776 */
    test_server_init(&s, "[server]\nframe_max = 123776\n[relay]\npayload_limit = 65536\n"
                         "[accounts]\nidentity_max = 775\nregister_burst = 200\n"
                         "argon2_memlimit_kib = 8\n"
                         "argon2_opslimit = 1\n[directory]\nlookup_burst = 1000\n");
    test_server_start(&s);
    assert_int_equal(msv_identity_generate_suites(MSV_SUITE_CLASSIC,
                                                  MSV_SUITE_BIT(MSV_SUITE_ECIES) |
                                                      MSV_SUITE_BIT(MSV_SUITE_MODERN),
                                                  3072, &big),
                     MSV_OK);
    for (size_t k = 0; k < 3; k++) {
        test_register(&s, to[k], &first[k]);
        last[k] = fill_account(&s, to[k], &first[k], big);
    }
    carol = client_for(&s, "carol", "carol@example.org");
    assert_int_equal(send_to_big(&s, carol, to, first, 3), 3 * 63);
    assert_int_equal(test_server_metric(&s, "stale_answers_partial_total"), 0);
    for (size_t k = 0; k < 3; k++)
        replace_device(&s, to[k], &first[k], last[k], big);
    assert_int_equal(send_to_big(&s, carol, to, first, 3), 3 * 63);
    assert_true(test_server_metric(&s, "stale_answers_partial_total") >= 1);
    msv_client_close(carol);
    msv_identity_free(big);
    for (size_t k = 0; k < 3; k++)
        test_device_free(&first[k]);
    test_server_cleanup(&s);
}

/*
 * A send whose device sets the relay says are out of date looks up again only the handles whose
 * sets changed: the ones the relay's answer lists, and the one whose removed device it names.
 * Before, every handle of the send was looked up again, so a send to many costs twice.
 */
static void test_stale_send_looks_up_what_changed(void **state)
{
    struct test_server s;
    struct test_device a1, a2, b1, b2, d1;
    struct msv_client *carol;
    const char *to[3] = {"alice@example.org", "bob@example.org", "dave@example.org"};
    unsigned long long before;
    uint8_t id[16];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    test_register(&s, to[0], &a1);
    test_add_device(&s, to[0], &a1, &a2);
    test_register(&s, to[1], &b1);
    test_register(&s, to[2], &d1);
    carol = client_for(&s, "carol", "carol@example.org");
    assert_int_equal(msv_client_send(carol, to, 3, "one", NULL, 0, NULL, id), MSV_OK);
    /* bob links a device: bob alone is looked up again, and the new device gets the message */
    test_add_device(&s, to[1], &b1, &b2);
    before = test_server_metric(&s, "lookups_total");
    assert_int_equal(msv_client_send(carol, to, 3, "two", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(test_server_metric(&s, "lookups_total") - before, 1);
    assert_int_equal(queued_for(&s, b2.device_id), 1);
    /* alice removes a device: the relay names it, alice alone is looked up again */
    {
        msv_frame *r = test_remove_device(&a1, a2.device_id);

        assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_OK);
        msv_frame_free(r);
    }
    before = test_server_metric(&s, "lookups_total");
    assert_int_equal(msv_client_send(carol, to, 3, "three", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(test_server_metric(&s, "lookups_total") - before, 1);
    msv_client_close(carol);
    test_device_free(&a1);
    test_device_free(&a2);
    test_device_free(&b1);
    test_device_free(&b2);
    test_device_free(&d1);
    test_server_cleanup(&s);
}

/* ---- a hostile contact, a hostile group member, a dishonest server: what a receiver keeps -- */

/* How many of c's stored messages, in conversation (NULL: all), have text containing needle. */
static size_t history_count(struct msv_client *c, const char *conversation, const char *needle)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0, found = 0;

    assert_int_equal(msv_client_db_history(c->db, conversation, NULL, 0, &m, &n), MSV_OK);
    for (size_t i = 0; i < n; i++)
        found += strstr(m[i].text, needle) != NULL;
    msv_messages_free(m, n);
    return found;
}

static size_t receive_now(struct msv_client *c)
{
    size_t count = 0;

    assert_int_equal(msv_client_receive(c, 500, NULL, NULL, &count), MSV_OK);
    return count;
}

/* What on_not_sent said since it was cleared: how often, the last warning. */
static struct {
    int n;
    char text[2000];
} not_sent_said;

static void record_not_sent(void *ctx, const char *conversation, const char *handle,
                            const char *warning)
{
    (void)ctx;
    (void)conversation;
    (void)handle;
    not_sent_said.n++;
    snprintf(not_sent_said.text, sizeof(not_sent_said.text), "%s", warning);
}

/* bob's outbox: how many entries, each of them owed to alice alone. */
static size_t owed_to_alice(struct msv_client *bob)
{
    struct msv_outbox_rec *o = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_outbox(bob->db, &o, &n), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        assert_true(o[i].owed);
        assert_string_equal(o[i].recipients, "alice@example.org\n");
    }
    msv_outbox_free(o, n);
    return n;
}

/*
 * The directory shows bob a device list of alice's that does not check out (two roots) while he
 * sends to alice and carol, and to their group (per-device copies): carol gets both, alice
 * nothing, and bob is told, in each conversation's history and through on_not_sent. Both stay in
 * his outbox owed to alice alone: a flush while her list still fails keeps them and tells
 * nothing again; once the directory logs her honest set, the next flush sends them to her alone
 * and says so. Before, both sends failed whole and carol got nothing.
 */
static void test_send_goes_to_those_that_check_out(void **state)
{
    const char *both[2] = {"alice@example.org", "carol@example.org"};
    const char *members = "alice@example.org\nbob@example.org\ncarol@example.org\n";
    static struct msv_kt_entry e;
    struct test_server s;
    struct msv_client *alice, *carol, *bob;
    struct msv_message_rec *m = NULL;
    uint8_t gid[16], id[16], group_id[16], *honest = NULL;
    size_t honest_len = 0;
    char conversation[40], sql[200];
    uint64_t forged;

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3; /* leaves that name their handle, appended to the store below */
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    msv_random_bytes(gid, sizeof(gid));
    msv_client_group_conversation(gid, conversation);
    assert_int_equal(msv_client_db_group_put(alice->db, gid, "club", members, 1, 0), MSV_OK);
    assert_int_equal(msv_client_db_group_put(bob->db, gid, "club", members, 1, 0), MSV_OK);
    assert_int_equal(msv_client_db_group_put(carol->db, gid, "club", members, 1, 0), MSV_OK);
    forged = log_two_roots(&s, alice, bob, &honest, &honest_len);
    bob->on_not_sent = record_not_sent;
    memset(&not_sent_said, 0, sizeof(not_sent_said));

    assert_int_equal(msv_client_send(bob, both, 2, "hi both", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(bob, "club", "to the club", NULL, 0, NULL, group_id),
                     MSV_OK);
    assert_int_equal(receive_now(carol), 2);
    assert_int_equal(history_count(carol, NULL, "hi both"), 1);
    assert_int_equal(history_count(carol, conversation, "to the club"), 1);
    assert_int_equal(receive_now(alice), 0);
    assert_int_equal(not_sent_said.n, 2);
    assert_non_null(strstr(not_sent_said.text, "no device of alice@example.org has a valid"));
    assert_int_equal(history_count(bob, "alice@example.org", "not sent to alice@example.org"), 1);
    assert_int_equal(history_count(bob, conversation, "not sent to alice@example.org"), 1);
    assert_int_equal(msv_client_db_message_get(bob->db, id, &m), MSV_OK);
    assert_string_equal(m->status, "sent");
    msv_messages_free(m, 1);
    assert_int_equal(owed_to_alice(bob), 2);

    /* her list still fails: owed on, nothing said again, nothing to carol again */
    drop_connection(bob);
    assert_int_equal(msv_client_connect(bob), MSV_OK); /* connecting again flushes the outbox */
    assert_int_equal(owed_to_alice(bob), 2);
    assert_int_equal(not_sent_said.n, 2);
    assert_int_equal(history_count(bob, NULL, "not sent to alice@example.org"), 2);
    assert_int_equal(receive_now(alice), 0);

    /* her honest set again: the next flush sends both to her alone */
    test_server_stop(&s);
    snprintf(sql, sizeof(sql), "DELETE FROM devices WHERE id = %llu;", (unsigned long long)forged);
    server_sql(&s, sql);
    assert_int_equal(msv_kt_leaf_parse(honest, honest_len, &e), MSV_OK);
    log_set_for_bob(&s, bob, &e);
    drop_connection(alice);
    drop_connection(carol);
    assert_int_equal(msv_client_connect(bob), MSV_OK);
    assert_int_equal(owed_to_alice(bob), 0);
    assert_int_equal(receive_now(alice), 2);
    assert_int_equal(history_count(alice, NULL, "hi both"), 1);
    assert_int_equal(history_count(alice, conversation, "to the club"), 1);
    assert_int_equal(receive_now(carol), 0);
    assert_int_equal(history_count(bob, NULL, "sent to alice@example.org now"), 2);
    free(honest);
    msv_client_close(alice);
    msv_client_close(carol);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* How many entries c's outbox holds. */
static size_t outbox_size(struct msv_client *c)
{
    struct msv_outbox_rec *o = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_outbox(c->db, &o, &n), MSV_OK);
    msv_outbox_free(o, n);
    return n;
}

/* Message id's status in c's history. */
static void assert_status(struct msv_client *c, const uint8_t id[16], const char *status)
{
    struct msv_message_rec *m = NULL;

    assert_int_equal(msv_client_db_message_get(c->db, id, &m), MSV_OK);
    assert_string_equal(m->status, status);
    msv_messages_free(m, 1);
}

/*
 * bob writes to alice and to a handle no account has: alice gets it, bob is told in the
 * conversation and through on_not_sent that the other is not registered, and nothing is owed
 * to it. Then to alice and carol after carol deleted her account: alice gets it, carol is said
 * to have deleted hers. A message to a missing handle alone fails, settled as failed at once
 * (before, it stayed queued until the next flush). Before, the first two sends failed whole and
 * alice got nothing.
 */
static void test_send_past_unregistered_handle(void **state)
{
    const char *with_nobody[2] = {"alice@example.org", "nobody@example.org"};
    const char *with_carol[2] = {"alice@example.org", "carol@example.org"};
    const char *nobody[1] = {"nobody@example.org"};
    struct test_server s;
    struct msv_client *alice, *carol, *bob;
    uint8_t id[16];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    bob->on_not_sent = record_not_sent;
    memset(&not_sent_said, 0, sizeof(not_sent_said));

    assert_int_equal(msv_client_send(bob, with_nobody, 2, "hi you two", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(alice), 1);
    assert_int_equal(history_count(alice, NULL, "hi you two"), 1);
    assert_int_equal(not_sent_said.n, 1);
    assert_non_null(strstr(not_sent_said.text, "not sent to nobody@example.org: "
                                               "nobody@example.org is not registered"));
    assert_null(strstr(not_sent_said.text, "once what the directory shows"));
    assert_int_equal(history_count(bob, NULL, "not sent to nobody@example.org"), 1);
    assert_status(bob, id, "sent");
    assert_int_equal(outbox_size(bob), 0);

    /* carol deletes her account: a send to alice and carol reaches alice, carol's is said */
    assert_int_equal(msv_client_delete_account(carol, TEST_PASSWORD), MSV_OK);
    assert_int_equal(msv_client_send(bob, with_carol, 2, "after carol left", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(receive_now(alice), 1);
    assert_int_equal(history_count(alice, NULL, "after carol left"), 1);
    assert_int_equal(not_sent_said.n, 2);
    assert_non_null(strstr(not_sent_said.text, "carol@example.org deleted their account"));
    assert_status(bob, id, "sent");
    assert_int_equal(outbox_size(bob), 0);

    /* to a missing handle alone: the send fails, and the message with it, not queued */
    assert_int_equal(msv_client_send(bob, nobody, 1, "anyone?", NULL, 0, NULL, id),
                     MSV_ERR_NOT_FOUND);
    assert_non_null(strstr(bob->why.message, "nobody@example.org is not registered"));
    assert_int_equal(bob->why.code, MSV_REFUSAL_GONE);
    assert_status(bob, id, "failed");
    assert_int_equal(outbox_size(bob), 0);
    msv_client_close(alice);
    msv_client_close(carol);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A message owed to alice (her device list did not check out) while alice deletes her account:
 * the next flush finds her gone, says so, and the outbox lets the message go, its status "sent"
 * (carol has it). Before, the flush marked it failed, though carol had it, and said nothing.
 */
static void test_owed_to_a_deleted_account(void **state)
{
    const char *both[2] = {"alice@example.org", "carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *carol, *bob;
    uint8_t id[16], *honest = NULL;
    size_t honest_len = 0;

    (void)state;
    test_server_init(&s, NULL);
    s.leaf_version = 3;
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    (void)log_two_roots(&s, alice, bob, &honest, &honest_len);
    bob->on_not_sent = record_not_sent;
    memset(&not_sent_said, 0, sizeof(not_sent_said));
    assert_int_equal(msv_client_send(bob, both, 2, "hi both", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(carol), 1);
    assert_int_equal(owed_to_alice(bob), 1);
    assert_int_equal(not_sent_said.n, 1);

    assert_int_equal(msv_client_delete_account(alice, TEST_PASSWORD), MSV_OK);
    drop_connection(bob);
    assert_int_equal(msv_client_connect(bob), MSV_OK); /* connecting again flushes the outbox */
    assert_int_equal(outbox_size(bob), 0);
    assert_int_equal(not_sent_said.n, 2);
    assert_non_null(strstr(not_sent_said.text, "alice@example.org deleted their account"));
    assert_status(bob, id, "sent");
    free(honest);
    msv_client_close(alice);
    msv_client_close(carol);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * bob wrote to alice, then queued two messages while the server was out of reach, one to her
 * alone and one to her and carol; alice deleted her account and someone registered the handle
 * again. bob's next connection finds the new account: neither message goes to it (they were
 * written to the account deleted), each is said in the conversation, carol gets hers, and the
 * one to alice alone failed; what bob writes after he was told goes to the new account. dave,
 * whose first send after the deletion finds the new account, is refused the send with the reason
 * (the message failed), and his next one goes. Before, both queued messages and dave's first went
 * to the new account.
 */
static void test_queued_not_for_a_new_account(void **state)
{
    const char *to[1] = {"alice@example.org"};
    const char *both[2] = {"alice@example.org", "carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol, *dave, *erin, *again;
    msv_frame *devs = NULL;
    uint8_t alone[16], shared[16], id[16], note[16], first[16], photo[3000];
    const struct msv_file file = {"photo.bin", "application/octet-stream", photo, sizeof(photo)};
    int told = 0;

    (void)state;
    test_server_init(&s, "[accounts]\nregister_burst = 40\n");
    test_server_start(&s);
    alice = client_for(&s, "alice", to[0]);
    bob = client_for(&s, "bob", "bob@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    dave = client_for(&s, "dave", "dave@example.org");
    erin = client_for(&s, "erin", "erin@example.org");
    bob->ctx = &told;
    bob->on_account_new = count_account_new;
    bob->on_not_sent = record_not_sent;
    memset(&not_sent_said, 0, sizeof(not_sent_said));
    assert_int_equal(msv_client_send(bob, both, 2, "hello you two", NULL, 0, NULL, first), MSV_OK);
    for (struct msv_client **c = (struct msv_client *[]){dave, erin, NULL}; *c; c++) {
        assert_int_equal(msv_client_devices(*c, to[0], &devs), MSV_OK);
        msv_frame_free(devs);
    }
    test_server_stop(&s);
    drop_connection(bob);
    drop_connection(erin);
    assert_int_equal(msv_client_send(erin, to, 1, "erin's note", NULL, 0, NULL, note), MSV_ERR_IO);
    assert_int_equal(msv_client_send(bob, to, 1, "for alice alone", NULL, 0, NULL, alone),
                     MSV_ERR_IO);
    assert_int_equal(msv_client_send(bob, both, 2, "for both", NULL, 0, NULL, shared), MSV_ERR_IO);
    test_server_start(&s);
    assert_int_equal(msv_client_delete_account(alice, TEST_PASSWORD), MSV_OK);
    msv_client_close(alice);
    again = client_for(&s, "alice-again", to[0]);

    reconnect(bob); /* the outbox goes with the connection */
    assert_int_equal(outbox_size(bob), 0);
    assert_int_equal(told, 1);
    assert_status(bob, alone, "failed");
    assert_status(bob, shared, "sent");
    assert_int_equal(not_sent_said.n, 2);
    assert_int_equal(history_count(bob, to[0],
                                   "not sent to alice@example.org: alice@example.org "
                                   "is a new account"),
                     2);
    assert_int_equal(history_count(bob, NULL, "(the others have it)"), 1);
    assert_int_equal(receive_now(again), 0);
    receive_all(carol);
    assert_true(received_text(carol, "for both"));
    assert_int_equal(msv_client_send(bob, to, 1, "hello new alice", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(again), 1);
    assert_int_equal(told, 1);
    /* told again of the same entry (a crash before the telling ended, or a second process
     * telling at once): the time first learnt stays, so what bob wrote since still goes */
    {
        uint8_t *was = NULL, *now = NULL;
        size_t was_len = 0, now_len = 0;

        assert_int_equal(msv_client_db_get(bob->db, "renewed-at:alice@example.org", &was, &was_len),
                         MSV_OK);
        assert_int_equal(was_len, 16);
        assert_int_equal(msv_client_db_set(bob->db, "kt_renewed:alice@example.org", was + 8, 8),
                         MSV_OK);
        nanosleep(&(struct timespec){0, 5000000}, NULL);
        assert_int_equal(msv_client_devices(bob, to[0], &devs), MSV_OK);
        msv_frame_free(devs);
        assert_int_equal(told, 2);
        assert_int_equal(msv_client_db_get(bob->db, "renewed-at:alice@example.org", &now, &now_len),
                         MSV_OK);
        assert_int_equal(now_len, 16);
        assert_memory_equal(now, was, 16);
        free(was);
        free(now);
    }

    /* dave's send finds the new account: refused, and said why (he names her as he typed it) */
    assert_int_equal(msv_client_send(dave, (const char *[]){"Alice@Example.org"}, 1, "hi alice",
                                     NULL, 0, NULL, id),
                     MSV_ERR_NOT_FOUND);
    assert_non_null(strstr(dave->why.message,
                           "Alice@Example.org is a new account: the account this was written"));
    assert_int_equal(dave->why.code, MSV_REFUSAL_GONE);
    assert_status(dave, id, "failed");
    assert_int_equal(outbox_size(dave), 0);
    assert_int_equal(receive_now(again), 0);
    assert_int_equal(msv_client_send(dave, to, 1, "hi new alice", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(again), 1);

    /* bob reacts to what he wrote to alice before: dated by that message, the reaction is
     * refused for the new account, as anything about a message of the old account is */
    assert_int_equal(queued_for(&s, again->device_id), 0);
    assert_int_equal(msv_client_react(bob, first, "\xf0\x9f\x91\x8d"), MSV_ERR_NOT_FOUND);
    assert_non_null(strstr(bob->why.message, "is a new account: the account this was written"));
    assert_int_equal(queued_for(&s, again->device_id), 0);

    /* erin sends a file: its upload's connection flushes her queued note, which finds the new
     * account; the file, written before, does not go either */
    randombytes_buf(photo, sizeof(photo));
    assert_int_equal(msv_client_send(erin, to, 1, "a photo", &file, 1, NULL, id),
                     MSV_ERR_NOT_FOUND);
    assert_non_null(strstr(erin->why.message, "is a new account: the account this was written"));
    assert_status(erin, note, "failed");
    assert_status(erin, id, "failed");
    assert_int_equal(receive_now(again), 0);

    /*
     * The refusal is for what was written before the telling alone, dated by its writing: bob
     * learns of the new account (the time kept set by hand here, as a receive of another of his
     * processes would) between writing two messages, and the first is queued only after it (as
     * when the telling comes during the send's attempt to connect). One flush sends the second
     * to the new account, and not the first.
     */
    test_server_stop(&s);
    drop_connection(bob);
    assert_int_equal(msv_client_send(bob, to, 1, "written before", NULL, 0, NULL, alone),
                     MSV_ERR_IO);
    nanosleep(&(struct timespec){0, 20000000}, NULL);
    assert_int_equal(msv_client_send(bob, to, 1, "written after", NULL, 0, NULL, shared),
                     MSV_ERR_IO);
    {
        struct msv_message_rec *m = NULL;
        uint8_t at[16];

        /* written, told 10 ms later, queued 5 ms after that, the second written 20 ms after the
         * first: the flush takes the first first */
        assert_int_equal(msv_client_db_message_get(bob->db, alone, &m), MSV_OK);
        msv_put_u64be(at, (uint64_t)m->sent_at_ms + 10);
        msv_put_u64be(at + 8, 0);
        assert_int_equal(msv_client_db_set(bob->db, "renewed-at:alice@example.org", at, 16),
                         MSV_OK);
        queued_later(bob, alone, m->sent_at_ms + 15);
        msv_messages_free(m, 1);
    }
    test_server_start(&s);
    drop_connection(again);
    reconnect(bob);
    assert_int_equal(outbox_size(bob), 0);
    assert_status(bob, alone, "failed");
    assert_status(bob, shared, "sent");
    assert_int_equal(receive_now(again), 1);
    assert_true(received_text(again, "written after"));
    assert_false(received_text(again, "written before"));
    for (struct msv_client **c = (struct msv_client *[]){bob, carol, dave, erin, again, NULL}; *c;
         c++)
        msv_client_close(*c);
    test_server_cleanup(&s);
}

/*
 * A lookup whose result for alice does not hold (the key directory holds a version 2 of alice
 * that no log entry is, so her version 1 is not proven the newest): a send to alice and carol
 * goes to carol, and bob is told of alice, why in the words of the failed check, in the
 * conversation's history and through on_not_sent; the message stays owed to alice alone. A
 * send to alice alone fails, as before, and remembers nothing of the answer. Before, the send to
 * both failed whole.
 */
static void test_send_past_unproven_handle(void **state)
{
    const char *both[2] = {"alice@example.org", "carol@example.org"};
    const char *to[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *carol, *bob, *dave;
    uint8_t id[16], *pin = NULL;
    size_t pin_len = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    test_server_stop(&s);
    snprintf(s.extra, sizeof(s.extra), "keydir_forge = alice@example.org 2");
    test_server_start(&s);
    dave = client_for(&s, "dave", "dave@example.org"); /* the log grows: a root of a new size */
    drop_connection(bob);
    drop_connection(carol);
    bob->on_not_sent = record_not_sent;
    memset(&not_sent_said, 0, sizeof(not_sent_said));
    if (msv_client_send(bob, both, 2, "hi both", NULL, 0, NULL, id) != MSV_OK)
        fail_msg("the send: %s", bob->why.message);
    assert_int_equal(receive_now(carol), 1);
    assert_int_equal(history_count(carol, NULL, "hi both"), 1);
    assert_int_equal(not_sent_said.n, 1);
    assert_non_null(strstr(not_sent_said.text, "does not prove that the device set of "
                                               "alice@example.org it shows is the newest"));
    assert_int_equal(history_count(bob, "alice@example.org", "not sent to alice@example.org"), 1);
    assert_int_equal(owed_to_alice(bob), 1);
    /* to alice alone, with no key directory key pinned yet: the answer, none of whose results
     * checks out, is refused whole, and pins nothing */
    assert_int_equal(msv_client_db_unset(bob->db, "kt_vrf_key"), MSV_OK);
    assert_int_equal(msv_client_send(bob, to, 1, "hi alice", NULL, 0, NULL, id), MSV_ERR_AUTH);
    assert_non_null(strstr(bob->why.message, "does not prove that the device set of alice"));
    assert_int_equal(msv_client_db_get(bob->db, "kt_vrf_key", &pin, &pin_len), MSV_ERR_NOT_FOUND);
    drop_connection(alice);
    assert_int_equal(receive_now(alice), 0);
    msv_client_close(alice);
    msv_client_close(carol);
    msv_client_close(bob);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

/*
 * Mallory is no member of alice's group with bob, but knows its id; her own
 * database says otherwise, so her client writes to it as it would to any
 * group. Bob refuses (and acknowledges) the post, and a group she makes
 * without naming herself a member.
 */
static void test_non_member_group_post(void **state)
{
    const char *bob_only[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *mallory;
    struct msv_group_rec g = {0};
    uint8_t gid[16], id[16], other[16];
    char conversation[40], other_conversation[40];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    mallory = client_for(&s, "mallory", "mallory@example.org");
    assert_int_equal(msv_client_group_create(alice, "pair", bob_only, 1, gid), MSV_OK);
    assert_int_equal(receive_now(bob), 1);
    msv_client_group_conversation(gid, conversation);
    assert_int_equal(msv_client_db_group_put(mallory->db, gid, "pair",
                                             "alice@example.org\nbob@example.org\n"
                                             "mallory@example.org\n",
                                             1, 0),
                     MSV_OK);
    assert_int_equal(msv_client_group_send(mallory, "pair", "meet me outside", NULL, 0, NULL, id),
                     MSV_OK);
    /* a group of mallory's that she is not in herself */
    msv_random_bytes(other, sizeof(other));
    msv_client_group_conversation(other, other_conversation);
    assert_int_equal(
        msv_client_db_group_put(mallory->db, other, "ghosts", "bob@example.org\n", 1, 0), MSV_OK);
    assert_int_equal(msv_client_group_send(mallory, "ghosts", "boo", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(bob), 0);
    assert_int_equal(history_count(bob, NULL, "meet me outside"), 0);
    assert_int_equal(history_count(bob, NULL, "boo"), 0);
    assert_int_equal(msv_client_db_group_get(bob->db, other, NULL, &g), MSV_ERR_NOT_FOUND);
    /* the membership bob knows is unchanged, and both posts were acknowledged */
    assert_int_equal(msv_client_db_group_get(bob->db, gid, NULL, &g), MSV_OK);
    assert_string_equal(g.members, "alice@example.org\nbob@example.org\n");
    msv_group_clear(&g);
    drop_connection(bob);
    assert_int_equal(receive_now(bob), 0);
    /* a member's post is kept */
    assert_int_equal(msv_client_group_accept(bob, conversation), MSV_OK);
    assert_int_equal(msv_client_group_send(bob, "pair", "hi alice", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(alice), 1);
    assert_int_equal(history_count(alice, conversation, "hi alice"), 1);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

/* ---- signed group changes (docs/groups.md), made by hand as the format says ----------- */

static void put_handle(uint8_t *out, size_t *o, const char *s)
{
    size_t n = strlen(s);

    out[(*o)++] = (uint8_t)(n >> 8);
    out[(*o)++] = (uint8_t)n;
    memcpy(out + *o, s, n);
    *o += n;
}

static void put_u32(uint8_t *out, size_t *o, size_t v)
{
    for (int i = 3; i >= 0; i--)
        out[(*o)++] = (uint8_t)(v >> (8 * i));
}

/* SHA-256 of the state encoding: magic, id, epoch, name, members, admins. */
static void group_state_hash(const uint8_t gid[16], uint64_t epoch, const char *name,
                             const char *const *m, size_t nm, const char *const *a, size_t na,
                             uint8_t hash[32])
{
    uint8_t out[4096];
    size_t o = 0;

    memcpy(out, "MSV-group-state-v1", 18);
    o = 18;
    memcpy(out + o, gid, 16);
    o += 16;
    for (int i = 7; i >= 0; i--)
        out[o++] = (uint8_t)(epoch >> (8 * i));
    put_handle(out, &o, name);
    put_u32(out, &o, nm);
    for (size_t i = 0; i < nm; i++)
        put_handle(out, &o, m[i]);
    put_u32(out, &o, na);
    for (size_t i = 0; i < na; i++)
        put_handle(out, &o, a[i]);
    crypto_hash_sha256(hash, out, o);
}

/* The hash of the state c holds for gid, as stored. */
static void held_group_hash(struct msv_client *c, const uint8_t gid[16], uint8_t hash[32])
{
    char hex[33], key[64];
    uint8_t *v = NULL;
    size_t len = 0;

    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "group-state:%s", hex);
    assert_int_equal(msv_client_db_get(c->db, key, &v, &len), MSV_OK);
    crypto_hash_sha256(hash, v, len);
    free(v);
}

/*
 * Sends, as from, a group change to the state (epoch, members, admins) said to
 * follow prev, signed by from's device (spoiled: one bit of the signature flipped).
 */
/* from signs and sends to `to` a change of group gid to the state (name, m, a) at epoch after
 * prev (its signature spoiled if asked). */
static void send_named_change(struct msv_client *from, const uint8_t gid[16], uint64_t epoch,
                              const uint8_t prev[32], const char *name, const char *const *m,
                              size_t nm, const char *const *a, size_t na, const char *const *to,
                              size_t n_to, int spoiled)
{
    struct msv_payload p = {.kind = MSV_KIND_GROUP_CHANGE,
                            .has_group = true,
                            .group_name = (char *)name,
                            .participants = (char **)m,
                            .participant_count = nm,
                            .has_group_signature = true,
                            .group_admins = (char **)a,
                            .group_admin_count = na,
                            .group_epoch = epoch};
    uint8_t msg[19 + 16 + 8 + 32 + 32], hash[32], id[16];
    char conversation[40];

    memcpy(p.group_id, gid, 16);
    memcpy(p.group_prev_hash, prev, 32);
    group_state_hash(gid, epoch, name, m, nm, a, na, hash);
    memcpy(msg, "MSV-group-change-v1", 19);
    memcpy(msg + 19, gid, 16);
    for (int i = 7; i >= 0; i--)
        msg[35 + 7 - i] = (uint8_t)(epoch >> (8 * i));
    memcpy(msg + 43, prev, 32);
    memcpy(msg + 75, hash, 32);
    assert_int_equal(
        msv_identity_sign(from->id, msg, sizeof(msg), p.group_signature, &p.group_signature_len),
        MSV_OK);
    if (spoiled)
        p.group_signature[p.group_signature_len / 2] ^= 1;
    msv_client_group_conversation(gid, conversation);
    assert_int_equal(
        client_send_payload(from, to, n_to, &p, "forged", conversation, NULL, 0, NULL, id), MSV_OK);
}

static void send_signed_change(struct msv_client *from, const uint8_t gid[16], uint64_t epoch,
                               const uint8_t prev[32], const char *const *m, size_t nm,
                               const char *const *a, size_t na, int spoiled)
{
    send_named_change(from, gid, epoch, prev, "club", m, nm, a, na, m, nm, spoiled);
}

static void assert_members(struct msv_client *c, const uint8_t gid[16], const char *members)
{
    struct msv_group_rec g = {0};

    assert_int_equal(msv_client_db_group_get(c->db, gid, NULL, &g), MSV_OK);
    assert_string_equal(g.members, members);
    msv_group_clear(&g);
}

/*
 * Carol, a member but no admin, patches her own client to think herself one
 * (her signed state is gone, so it takes her for the admin of what she
 * holds) and removes bob: alice and bob refuse it and show why. Then
 * changes signed by alice herself that are spoiled, skip an epoch or replay
 * an old epoch are refused too; the state each holds does not move.
 */
/* A server, and alice's group "club" with bob and carol, who have accepted it. */
static void club_of_three(struct test_server *s, struct msv_client **alice, struct msv_client **bob,
                          struct msv_client **carol, uint8_t gid[16], char conversation[40])
{
    const char *two[2] = {"bob@example.org", "carol@example.org"};

    test_server_init(s, NULL);
    test_server_start(s);
    *alice = client_for(s, "alice", "alice@example.org");
    *bob = client_for(s, "bob", "bob@example.org");
    *carol = client_for(s, "carol", "carol@example.org");
    assert_int_equal(msv_client_group_create(*alice, "club", two, 2, gid), MSV_OK);
    msv_client_group_conversation(gid, conversation);
    assert_int_equal(receive_now(*bob), 1);
    assert_int_equal(receive_now(*carol), 1);
    assert_int_equal(msv_client_group_accept(*bob, conversation), MSV_OK);
    assert_int_equal(msv_client_group_accept(*carol, conversation), MSV_OK);
}

static void test_group_change_checked(void **state)
{
    const char *two[2] = {"bob@example.org", "carol@example.org"};
    const char *all[3] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    const char *alice_only[1] = {"alice@example.org"}, *alice_bob[2] = {all[0], all[1]};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t gid[16], id[16], held[32], before[32], zero[32] = {0};
    char conversation[40], key[64], hex[33];
    const char *members = "alice@example.org\nbob@example.org\ncarol@example.org\n";

    (void)state;
    club_of_three(&s, &alice, &bob, &carol, gid, conversation);
    assert_int_equal(history_count(bob, conversation, "alice@example.org created the group"), 1);
    /* carol's honest client refuses her */
    assert_int_equal(msv_client_group_change(carol, "club", NULL, NULL, 0, &two[0], 1),
                     MSV_ERR_AUTH);
    /* her patched one does not */
    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "group-state:%s", hex);
    assert_int_equal(msv_client_db_unset(carol->db, key), MSV_OK);
    assert_int_equal(msv_client_group_change(carol, "club", NULL, NULL, 0, &two[0], 1), MSV_OK);
    held_group_hash(alice, gid, before);
    for (int i = 0; i < 2; i++) {
        struct msv_client *c = i ? bob : alice;

        assert_int_equal(receive_now(c), 1);
        /* what her change does (as a delta) to the state each holds */
        assert_int_equal(history_count(c, conversation,
                                       "carol@example.org tried to change the group: removed "
                                       "bob@example.org: refused, not an admin"),
                         1);
        assert_members(c, gid, members);
        held_group_hash(c, gid, held);
        assert_memory_equal(held, before, 32);
    }
    /* alice's own signature, spoiled */
    send_signed_change(alice, gid, 2, before, alice_bob, 2, alice_only, 1, 1);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(history_count(bob, conversation,
                                   "alice@example.org sent a group change: refused, its "
                                   "signature does not verify"),
                     1);
    assert_members(bob, gid, members);
    /* an epoch skipped */
    send_signed_change(alice, gid, 3, before, alice_bob, 2, alice_only, 1, 0);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(
        history_count(bob, conversation, "alice@example.org sent a group change: refused, out of"),
        1);
    assert_members(bob, gid, members);
    /* a real change goes through; then the creation, signed again, comes back */
    assert_int_equal(msv_client_group_admin(alice, "club", "bob@example.org", 1), MSV_OK);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(history_count(bob, conversation,
                                   "alice@example.org changed the group: "
                                   "promoted bob@example.org"),
                     1);
    send_signed_change(alice, gid, 1, zero, all, 3, alice_only, 1, 0);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(
        history_count(bob, conversation, "alice@example.org sent a group change: refused, out of"),
        2);
    /* bob, an admin now, may do what carol could not */
    assert_int_equal(msv_client_group_change(bob, "club", NULL, NULL, 0, &two[1], 1), MSV_OK);
    assert_int_equal(receive_now(alice), 1);
    assert_members(alice, gid, "alice@example.org\nbob@example.org\n");
    (void)id;
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* An invite link's parser: the link as made, and every malformed one refused. */
static void test_invite_parse(void **state)
{
    static const char *const bad[] = {
        "",
        "missive:join?",
        "https://example.org/join?g=00112233445566778899aabbccddeeff",
        "missive:join?g=00112233445566778899aabbccddeeff&a=alice@example.org",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "missive:join?g=0011223344556677889&s=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x",
        "missive:join?g=00112233445566778899aabbccddeefg&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+&a=a@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB&a=a@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=nobody",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x,",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a%20b@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a%00@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x%4",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x&a=b@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x&x=1",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x ",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=\xc3\xa9@x",
        "missive:join?g=00112233445566778899aabbccddeeff&s="
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=a@x,b@x,"
        "c@x,d@x,e@x,f@x,g@x,h@x,i@x",
    };
    char longest[MSV_INVITE_URI_MAX + 64];
    struct msv_invite inv;
    size_t n;

    (void)state;
    assert_int_equal(msv_invite_parse("missive:join?g=00112233445566778899AABBCCDDEEFF&s="
                                      "_-_-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=al%2Cice@"
                                      "example.org,bob@example.org",
                                      &inv),
                     MSV_OK);
    assert_int_equal(inv.group_id[0], 0x00);
    assert_int_equal(inv.group_id[15], 0xff);
    assert_int_equal(inv.secret[0], 0xff);
    assert_int_equal(inv.n_admins, 2);
    assert_string_equal(inv.admins[0], "al,ice@example.org");
    assert_string_equal(inv.admins[1], "bob@example.org");
    msv_invite_clear(&inv);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msv_err err = msv_invite_parse(bad[i], &inv);

        if (err != MSV_ERR_PARSE && err != MSV_ERR_TOO_BIG)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(inv.n_admins, 0);
    }
    n = (size_t)snprintf(longest, sizeof(longest),
                         "missive:join?g=00112233445566778899aabbccddeeff&s="
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&a=");
    memset(longest + n, 'a', sizeof(longest) - n - 1);
    longest[sizeof(longest) - 1] = '\0';
    assert_int_equal(msv_invite_parse(longest, &inv), MSV_ERR_TOO_BIG);
    assert_int_equal(msv_invite_parse(NULL, &inv), MSV_ERR_PARSE);
}

struct join_seen {
    char status[16];
    int count;
};

static void note_join(void *ctx, const struct msv_incoming *in)
{
    struct join_seen *seen = ctx;

    if (in->kind != MSV_INCOMING_JOIN_REQUEST)
        return;
    snprintf(seen->status, sizeof(seen->status), "%s", in->status);
    seen->count++;
    /* a refused request names nobody and no group */
    if (strcmp(in->status, "refused") == 0)
        assert_true(in->from == NULL && in->conversation == NULL);
}

/* A request as a requester makes it, from the link's secret (docs/groups.md). */
static void join_request(const struct msv_invite *inv, const char *handle, struct msv_payload *p)
{
    crypto_auth_hmacsha256_state st;
    uint8_t len[2] = {(uint8_t)(strlen(handle) >> 8), (uint8_t)strlen(handle)};

    memset(p, 0, sizeof(*p));
    p->kind = MSV_KIND_GROUP_JOIN;
    p->has_group = true;
    memcpy(p->group_id, inv->group_id, 16);
    p->has_join_proof = true;
    crypto_auth_hmacsha256_init(&st, inv->secret, 32);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)"MSV-group-join-v1", 17);
    crypto_auth_hmacsha256_update(&st, inv->group_id, 16);
    crypto_auth_hmacsha256_update(&st, len, 2);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)handle, strlen(handle));
    crypto_auth_hmacsha256_final(&st, p->join_proof);
}

/*
 * The link's settings are the admins': carol, a member who is no admin,
 * sends alice's device settings of her own (a newer version, her secret) and
 * changes nothing: a request proven with her secret is refused, one with the
 * link's still waits. A request proven for another handle is refused; past
 * 256 waiting requests, one more is dropped as full.
 */
static void test_invite_settings_admins_only(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    struct msv_invite inv, forged;
    struct msv_payload p;
    struct join_seen seen = {{0}, 0};
    uint8_t gid[16], id[16], *before = NULL, *after = NULL;
    size_t before_len = 0, after_len = 0, lines = 0;
    char conversation[40], key[64], hex[33], *uri = NULL, *list = NULL, handle[64];
    uint64_t refused = 0;

    (void)state;
    club_of_three(&s, &alice, &bob, &carol, gid, conversation);
    assert_int_equal(msv_client_group_invite(carol, "club", MSV_INVITE_SHOW, 1, &uri),
                     MSV_ERR_AUTH);
    assert_null(uri);
    assert_int_equal(msv_client_group_invite(alice, "club", MSV_INVITE_SHOW, 1, &uri), MSV_OK);
    assert_int_equal(msv_invite_parse(uri, &inv), MSV_OK);
    assert_memory_equal(inv.group_id, gid, 16);
    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "group-link:%s", hex);
    assert_int_equal(msv_client_db_get(alice->db, key, &before, &before_len), MSV_OK);
    /* carol's forged settings, sent for real */
    forged = inv;
    memset(forged.secret, 0x42, 32);
    memset(&p, 0, sizeof(p));
    p.kind = MSV_KIND_GROUP_JOIN;
    p.has_group = true;
    memcpy(p.group_id, gid, 16);
    p.join_link_version = 99;
    p.has_join_link_secret = true;
    memcpy(p.join_link_secret, forged.secret, 32);
    assert_int_equal(client_send_payload(carol, (const char *const *)&inv.admins[0], 1, &p, NULL,
                                         NULL, NULL, 0, NULL, id),
                     MSV_OK);
    (void)receive_now(alice);
    assert_int_equal(msv_client_db_get(alice->db, key, &after, &after_len), MSV_OK);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    /* her secret proves nothing; the link's does */
    join_request(&forged, "dave@example.org", &p);
    assert_int_equal(client_take_join(alice, "dave@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "refused");
    join_request(&inv, "dave@example.org", &p);
    assert_int_equal(client_take_join(alice, "erin@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "refused"); /* dave's proof, erin's envelope */
    assert_int_equal(client_take_join(alice, "dave@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "pending");
    assert_int_equal(msv_client_group_requests(alice, "club", &list, &refused), MSV_OK);
    assert_string_equal(list, "dave@example.org\n");
    assert_int_equal(refused, 2);
    free(list);
    /* the waiting list is bounded */
    for (int i = 1; i < MSV_JOIN_PENDING_MAX; i++) {
        snprintf(handle, sizeof(handle), "person%d@example.org", i);
        join_request(&inv, handle, &p);
        assert_int_equal(client_take_join(alice, handle, &p, note_join, &seen), MSV_OK);
        assert_string_equal(seen.status, "pending");
    }
    join_request(&inv, "one-more@example.org", &p);
    assert_int_equal(client_take_join(alice, "one-more@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "full");
    assert_int_equal(msv_client_group_requests(alice, "club", &list, &refused), MSV_OK);
    for (char *c = list; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, MSV_JOIN_PENDING_MAX);
    assert_null(strstr(list, "one-more"));
    free(list);
    /* an admin's version beyond counting is ignored; a plausible one is taken */
    memset(&p, 0, sizeof(p));
    p.kind = MSV_KIND_GROUP_JOIN;
    p.has_group = true;
    memcpy(p.group_id, gid, 16);
    p.join_link_version = (uint64_t)UINT32_MAX + 1;
    assert_int_equal(client_take_join(bob, "alice@example.org", &p, NULL, NULL), MSV_OK);
    free(after);
    after = NULL;
    assert_int_equal(msv_client_db_get(bob->db, key, &after, &after_len), MSV_ERR_NOT_FOUND);
    p.join_link_version = 7;
    assert_int_equal(client_take_join(bob, "alice@example.org", &p, NULL, NULL), MSV_OK);
    assert_int_equal(msv_client_db_get(bob->db, key, &after, &after_len), MSV_OK);
    /* a member's client that is no admin takes no request */
    seen.count = 0;
    join_request(&inv, "frank@example.org", &p);
    assert_int_equal(client_take_join(carol, "frank@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "refused");
    free(before);
    free(after);
    free(uri);
    msv_invite_clear(&inv);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * Two admins rename the group at once, each on the same state: whatever the
 * order each device gets the two changes in, all end with the same state,
 * the change of the lower hash (docs/groups.md, "Two changes of one epoch").
 */
/* A group change held once it has read its state, until let go (client test_group_read). */
struct held_edit {
    struct msv_client *c;
    const char *add;
    int paused[2], go[2]; /* pipes: it says it read; it is let go */
    msv_err err;
};

static void edit_reads(void *arg)
{
    struct held_edit *h = arg;
    char byte = 1;

    assert_int_equal(write(h->paused[1], &byte, 1), 1);
    assert_int_equal(read(h->go[0], &byte, 1), 1);
}

static void *edit_adds(void *arg)
{
    struct held_edit *h = arg;
    const char *add[1] = {h->add};

    h->err = msv_client_group_change(h->c, "club", NULL, add, 1, NULL, 0);
    return NULL;
}

/* The members of c's group gid as its record lists them, one a line. */
static char *group_members(struct msv_client *c, const uint8_t gid[16])
{
    struct msv_group_rec g = {0};
    char *members;

    assert_int_equal(msv_client_db_group_get(c->db, gid, NULL, &g), MSV_OK);
    members = strdup(g.members);
    msv_group_clear(&g);
    assert_non_null(members);
    return members;
}

/* A server with alice, bob, carol and dave registered, and alice's group "club" with bob. */
static void club_start(struct test_server *s, struct msv_client **alice, struct msv_client **bob,
                       uint8_t gid[16])
{
    const char *one[1] = {"bob@example.org"};

    test_server_init(s, NULL);
    test_server_start(s);
    *alice = client_for(s, "alice", "alice@example.org");
    *bob = client_for(s, "bob", "bob@example.org");
    msv_client_close(client_for(s, "carol", "carol@example.org")); /* registered */
    msv_client_close(client_for(s, "dave", "dave@example.org"));
    assert_int_equal(msv_client_group_create(*alice, "club", one, 1, gid), MSV_OK);
}

/* a and b hold one state of the group, and listed's record of it names carol and dave. */
static void club_agreed(struct msv_client *a, struct msv_client *b, struct msv_client *listed,
                        const uint8_t gid[16])
{
    uint8_t ha[32], hb[32];
    char *members;

    held_group_hash(a, gid, ha);
    held_group_hash(b, gid, hb);
    assert_memory_equal(ha, hb, 32);
    members = group_members(listed, gid);
    assert_non_null(strstr(members, "carol@example.org"));
    assert_non_null(strstr(members, "dave@example.org"));
    free(members);
}

/*
 * Two processes of one account change a group at once: the second waits for the first to
 * queue its change, then changes the state the first made. Before, each changed the state both
 * had read, and the one held last replaced the other's: alice's device held a group without
 * dave, which bob held with him.
 */
static void test_group_changes_from_two_processes(void **state)
{
    struct test_server s;
    struct msv_client *alice, *alice2, *bob;
    struct held_edit first = {0}, second = {0};
    pthread_t t1, t2;
    uint8_t gid[16];
    char path[200], byte = 1;

    (void)state;
    club_start(&s, &alice, &bob, gid);
    snprintf(path, sizeof(path), "%s/alice", s.dir);
    assert_int_equal(msv_client_open(path, NULL, &alice2), MSV_OK);
    first.c = alice;
    first.add = "carol@example.org";
    assert_int_equal(pipe(first.paused), 0);
    assert_int_equal(pipe(first.go), 0);
    alice->test_group_read = edit_reads;
    alice->test_group_arg = &first;
    assert_int_equal(pthread_create(&t1, NULL, edit_adds, &first), 0);
    assert_int_equal(read(first.paused[0], &byte, 1), 1); /* the first has read the state */
    second.c = alice2;
    second.add = "dave@example.org";
    assert_int_equal(pthread_create(&t2, NULL, edit_adds, &second), 0);
    usleep(1000 * 1000); /* the second reads the state, or waits to */
    assert_int_equal(write(first.go[1], &byte, 1), 1);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    assert_int_equal(first.err, MSV_OK);
    assert_int_equal(second.err, MSV_OK);
    alice->test_group_read = NULL;
    receive_all(bob);
    club_agreed(alice, bob, alice, gid);
    for (int i = 0; i < 2; i++) {
        close(first.paused[i]);
        close(first.go[i]);
    }
    msv_client_close(alice2);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A change queued while the server was out of reach goes before a later one, even one that a
 * second process makes (its connection sends the queue first, and what still cannot go holds
 * the new change back behind it). Before, the later change went at once and the earlier one
 * after it: bob refused the later one as out of order, for good, and held another state than
 * alice.
 */
static void test_group_changes_keep_their_order(void **state)
{
    const char *carol[1] = {"carol@example.org"}, *dave[1] = {"dave@example.org"};
    struct test_server s;
    struct msv_client *alice, *alice2, *bob;
    uint8_t gid[16];
    char path[200];

    (void)state;
    club_start(&s, &alice, &bob, gid);
    receive_all(bob);
    drop_connection(alice);
    test_server_stop(&s);
    assert_int_not_equal(msv_client_group_change(alice, "club", NULL, carol, 1, NULL, 0), MSV_OK);
    assert_int_equal(outbox_size(alice), 1);
    test_server_start(&s);
    snprintf(path, sizeof(path), "%s/alice", s.dir);
    assert_int_equal(msv_client_open(path, NULL, &alice2), MSV_OK);
    assert_int_equal(msv_client_group_change(alice2, "club", NULL, dave, 1, NULL, 0), MSV_OK);
    assert_int_equal(outbox_size(alice2), 0);
    drop_connection(bob); /* to the server before its restart */
    receive_all(bob);
    club_agreed(alice2, bob, bob, gid);
    msv_client_close(alice2);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A change is held if and only if it is queued to go, in one transaction: when its queueing
 * fails (here the outbox refuses it), the device keeps the state before, and says so. Before,
 * it held the new state, which no member was ever told of.
 */
static void test_group_change_held_only_if_queued(void **state)
{
    const char *one[1] = {"bob@example.org"}, *add[1] = {"carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t gid[16], before[32], after[32], hb[32];
    char path[200], *members, *msg = NULL;
    sqlite3 *db = NULL;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    msv_client_close(client_for(&s, "carol", "carol@example.org")); /* registered */
    assert_int_equal(msv_client_group_create(alice, "club", one, 1, gid), MSV_OK);
    held_group_hash(alice, gid, before);
    snprintf(path, sizeof(path), "%s/alice/state.db", s.dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TRIGGER outbox_full BEFORE INSERT ON outbox BEGIN "
                                  "SELECT RAISE(ABORT, 'full'); END;",
                                  NULL, NULL, &msg),
                     SQLITE_OK);
    assert_int_not_equal(msv_client_group_change(alice, "club", NULL, add, 1, NULL, 0), MSV_OK);
    held_group_hash(alice, gid, after);
    assert_memory_equal(before, after, 32);
    members = group_members(alice, gid);
    assert_null(strstr(members, "carol@example.org"));
    free(members);
    assert_int_equal(sqlite3_exec(db, "DROP TRIGGER outbox_full;", NULL, NULL, &msg), SQLITE_OK);
    sqlite3_close(db);
    /* made again, it goes, and the members agree */
    assert_int_equal(msv_client_group_change(alice, "club", NULL, add, 1, NULL, 0), MSV_OK);
    receive_all(bob);
    held_group_hash(alice, gid, after);
    held_group_hash(bob, gid, hb);
    assert_memory_equal(after, hb, 32);
    members = group_members(bob, gid);
    assert_non_null(strstr(members, "carol@example.org"));
    free(members);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * One account invites bob to group after group: at most 20 of its invitations wait to be
 * accepted, the next are dropped (acknowledged, counted, told in its conversation once a day),
 * and once bob accepts one, one more is taken. Another's invitations still come. Blocking the
 * inviter deletes its invitations, and makes room. When the room in all is taken (by many
 * inviters), a new invitation is dropped, counted and told in no one's conversation. Before,
 * every invitation made a group on bob's device, without end.
 */
static void test_invitations_bounded(void **state)
{
    const char *bob_only[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *bob, *dave, *erin;
    struct msv_group_rec g = {0};
    uint8_t gid[16], first[16], last[3][16], erins[16];
    char name[32], conversation[40];
    size_t from = 0, all = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    bob = client_for(&s, "bob", "bob@example.org");
    dave = client_for(&s, "dave", "dave@example.org");
    erin = client_for(&s, "erin", "erin@example.org");
    for (int i = 0; i < CLIENT_INVITES_FROM_ONE + 2; i++) {
        snprintf(name, sizeof(name), "spam %d", i);
        assert_int_equal(msv_client_group_create(dave, name, bob_only, 1, gid), MSV_OK);
        if (i == 0)
            memcpy(first, gid, 16);
    }
    receive_all(bob);
    assert_int_equal(msv_client_db_invitations(bob->db, "dave@example.org", &from, &all), MSV_OK);
    assert_int_equal(from, CLIENT_INVITES_FROM_ONE);
    assert_int_equal(all, CLIENT_INVITES_FROM_ONE);
    assert_int_equal(msv_client_invitations_dropped(bob), 2);
    assert_int_equal(history_count(bob, "dave@example.org", "was dropped"), 1); /* told once */
    /* the notice is no message of bob's: dave's own messages are still requests */
    assert_int_equal(msv_client_send(dave, bob_only, 1, "hi", NULL, 0, NULL, gid), MSV_OK);
    receive_all(bob);
    assert_true(msv_client_is_request(bob, "dave@example.org"));
    /* another's invitation comes */
    assert_int_equal(msv_client_group_create(erin, "friends", bob_only, 1, erins), MSV_OK);
    receive_all(bob);
    assert_int_equal(msv_client_db_invitations(bob->db, "erin@example.org", &from, &all), MSV_OK);
    assert_int_equal(from, 1);
    assert_int_equal(all, CLIENT_INVITES_FROM_ONE + 1);
    /* one accepted: one more of dave's is taken */
    msv_client_group_conversation(first, conversation);
    assert_int_equal(msv_client_group_accept(bob, conversation), MSV_OK);
    assert_int_equal(msv_client_group_create(dave, "one more", bob_only, 1, gid), MSV_OK);
    receive_all(bob);
    assert_int_equal(msv_client_db_invitations(bob->db, "dave@example.org", &from, &all), MSV_OK);
    assert_int_equal(from, CLIENT_INVITES_FROM_ONE);
    assert_int_equal(msv_client_invitations_dropped(bob), 2);
    /* dave blocked: his invitations are gone, erin's stays */
    assert_int_equal(msv_client_block(bob, "dave@example.org"), MSV_OK);
    assert_int_equal(msv_client_db_invitations(bob->db, "dave@example.org", &from, &all), MSV_OK);
    assert_int_equal(from, 0);
    assert_int_equal(all, 1);
    assert_int_equal(msv_client_db_group_get(bob->db, erins, NULL, &g), MSV_OK);
    msv_group_clear(&g);
    /* room for 3 in all: erin's next two invitations take it, the third is dropped */
    bob->invites_max = 3;
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "more %d", i);
        assert_int_equal(msv_client_group_create(erin, name, bob_only, 1, last[i]), MSV_OK);
        receive_all(bob);
    }
    assert_int_equal(msv_client_db_invitations(bob->db, "erin@example.org", &from, &all), MSV_OK);
    assert_int_equal(all, 3);
    assert_int_equal(msv_client_db_group_get(bob->db, erins, NULL, &g), MSV_OK);
    msv_group_clear(&g);
    assert_int_equal(msv_client_db_group_get(bob->db, last[2], NULL, &g), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_invitations_dropped(bob), 3);
    /* told in no conversation of erin's: the room in all is no one inviter's doing */
    assert_int_equal(history_count(bob, "erin@example.org", "dropped"), 0);
    msv_client_close(bob);
    msv_client_close(dave);
    msv_client_close(erin);
    test_server_cleanup(&s);
}

static void test_group_concurrent_changes(void **state)
{
    const char *two[2] = {"bob@example.org", "carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    struct msv_group_rec ga = {0}, gb = {0}, gc = {0};
    uint8_t gid[16], ha[32], hb[32], hc[32];
    char conversation[40];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    carol = client_for(&s, "carol", "carol@example.org");
    assert_int_equal(msv_client_group_create(alice, "club", two, 2, gid), MSV_OK);
    msv_client_group_conversation(gid, conversation);
    assert_int_equal(msv_client_group_admin(alice, "club", "bob@example.org", 1), MSV_OK);
    assert_int_equal(receive_now(bob), 2);
    assert_int_equal(receive_now(carol), 2);
    assert_int_equal(msv_client_group_accept(bob, conversation), MSV_OK);
    /* both at epoch 2; each renames without having heard of the other */
    assert_int_equal(msv_client_group_change(alice, "club", "alice's club", NULL, 0, NULL, 0),
                     MSV_OK);
    assert_int_equal(msv_client_group_change(bob, conversation, "bob's club", NULL, 0, NULL, 0),
                     MSV_OK);
    assert_int_equal(receive_now(carol), 2);
    assert_int_equal(receive_now(alice), 1);
    assert_int_equal(receive_now(bob), 1);
    held_group_hash(alice, gid, ha);
    held_group_hash(bob, gid, hb);
    held_group_hash(carol, gid, hc);
    assert_memory_equal(ha, hb, 32);
    assert_memory_equal(ha, hc, 32);
    assert_int_equal(msv_client_db_group_get(alice->db, gid, NULL, &ga), MSV_OK);
    assert_int_equal(msv_client_db_group_get(bob->db, gid, NULL, &gb), MSV_OK);
    assert_int_equal(msv_client_db_group_get(carol->db, gid, NULL, &gc), MSV_OK);
    assert_string_equal(ga.name, gb.name);
    assert_string_equal(ga.name, gc.name);
    /* the loser's own device shows its change undone; the winner's refuses the other */
    assert_int_equal(history_count(strcmp(ga.name, "bob's club") == 0 ? alice : bob, conversation,
                                   "refused, out of order"),
                     0);
    assert_int_equal(history_count(strcmp(ga.name, "bob's club") == 0 ? bob : alice, conversation,
                                   "refused, out of order"),
                     1);
    msv_group_clear(&ga);
    msv_group_clear(&gb);
    msv_group_clear(&gc);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * carol leaves while alice renames the group, neither having heard of the other, and carol's
 * state wins the epoch (the lower hash). Every device ends at carol's leave: alice's took it
 * judged on the state both followed (a member may leave). Before, alice's device judged the
 * leave against her own rename, found a member undoing an admin's change, refused it, and
 * alice and bob held two states for good.
 */
static void test_group_leave_crossing_a_change(void **state)
{
    const char *left[2] = {"alice@example.org", "bob@example.org"};
    const char *all[3] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    const char *admins[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    struct msv_group_rec g = {0};
    uint8_t gid[16], leave[32], rename[32], ha[32], hb[32];
    char conversation[40], name[32];

    (void)state;
    club_of_three(&s, &alice, &bob, &carol, gid, conversation);
    group_state_hash(gid, 2, "club", left, 2, admins, 1, leave);
    for (int i = 0;; i++) { /* a new name whose state loses to the leave's */
        snprintf(name, sizeof(name), "club %d", i);
        group_state_hash(gid, 2, name, all, 3, admins, 1, rename);
        if (memcmp(rename, leave, 32) > 0)
            break;
    }
    assert_int_equal(msv_client_group_leave(carol, "club"), MSV_OK);
    assert_int_equal(msv_client_group_change(alice, "club", name, NULL, 0, NULL, 0), MSV_OK);
    receive_now(bob);
    receive_now(alice);
    held_group_hash(alice, gid, ha);
    held_group_hash(bob, gid, hb);
    assert_memory_equal(ha, leave, 32);
    assert_memory_equal(hb, leave, 32);
    assert_int_equal(msv_client_db_group_get(alice->db, gid, NULL, &g), MSV_OK);
    assert_string_equal(g.name, "club");
    assert_null(strstr(g.members, "carol"));
    msv_group_clear(&g);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * alice demotes bob; bob's patched client then signs, on the state before, a change that
 * removes alice and makes him the only admin, its name chosen so that its hash is lower than
 * the demotion's. It wins that epoch by the hash, but it is no leave: it is judged on the
 * state held too, where bob is no admin, and refused. (Judged on the state before alone, bob
 * took the group back whenever he liked.)
 */
static void test_demoted_admin_cannot_take_back(void **state)
{
    const char *kept[2] = {"bob@example.org", "carol@example.org"};
    const char *all[3] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    const char *alice_only[1] = {"alice@example.org"}, *bob_only[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t gid[16], before[32], demoted[32], taken[32], h[32];
    char conversation[40], name[32];
    const char *members = "alice@example.org\nbob@example.org\ncarol@example.org\n";

    (void)state;
    club_of_three(&s, &alice, &bob, &carol, gid, conversation);
    assert_int_equal(msv_client_group_admin(alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(bob);
    receive_now(carol);
    held_group_hash(carol, gid, before);
    assert_int_equal(msv_client_group_admin(alice, "club", "bob@example.org", 0), MSV_OK);
    receive_now(bob);
    receive_now(carol);
    group_state_hash(gid, 3, "club", all, 3, alice_only, 1, demoted);
    held_group_hash(carol, gid, h);
    assert_memory_equal(h, demoted, 32);
    for (int i = 0;; i++) {
        snprintf(name, sizeof(name), "bob's %d", i);
        group_state_hash(gid, 3, name, kept, 2, bob_only, 1, taken);
        if (memcmp(taken, demoted, 32) < 0)
            break;
    }
    send_named_change(bob, gid, 3, before, name, kept, 2, bob_only, 1, all, 3, 0);
    receive_now(carol);
    receive_now(alice);
    held_group_hash(carol, gid, h);
    assert_memory_equal(h, demoted, 32);
    held_group_hash(alice, gid, h);
    assert_memory_equal(h, demoted, 32);
    assert_members(carol, gid, members);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/*
 * alice demotes bob while carol leaves, and carol's leave wins the epoch by its hash. It is
 * not taken: it would bring bob back as an admin, undoing the demotion, so it is judged on the
 * state held too and refused, and every member left holds the demotion. (Judged on the state
 * before alone, any member's leave, or an accomplice's, undid an admin's removal or demotion
 * half the time.) A group is created until the leave's hash is the lower, as none is chosen.
 */
static void test_leave_does_not_undo_a_demotion(void **state)
{
    const char *two[2] = {"bob@example.org", "carol@example.org"};
    const char *all[3] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    const char *ab[2] = {"alice@example.org", "bob@example.org"};
    const char *alice_only[1] = {"alice@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t gid[16], demoted[32], left[32], h[32];
    char conversation[40], name[32];

    (void)state;
    club_of_three(&s, &alice, &bob, &carol, gid, conversation);
    for (int i = 0;; i++) {
        snprintf(name, sizeof(name), "club %d", i);
        assert_int_equal(msv_client_group_create(alice, name, two, 2, gid), MSV_OK);
        group_state_hash(gid, 3, name, all, 3, alice_only, 1, demoted);
        group_state_hash(gid, 3, name, ab, 2, ab, 2, left);
        if (memcmp(left, demoted, 32) < 0)
            break;
    }
    msv_client_group_conversation(gid, conversation);
    receive_now(bob);
    receive_now(carol);
    assert_int_equal(msv_client_group_accept(bob, conversation), MSV_OK);
    assert_int_equal(msv_client_group_accept(carol, conversation), MSV_OK);
    assert_int_equal(msv_client_group_admin(alice, name, "bob@example.org", 1), MSV_OK);
    receive_now(bob);
    receive_now(carol);
    /* at once: alice demotes bob, carol leaves */
    assert_int_equal(msv_client_group_admin(alice, name, "bob@example.org", 0), MSV_OK);
    assert_int_equal(msv_client_group_leave(carol, name), MSV_OK);
    receive_now(alice);
    receive_now(bob);
    held_group_hash(alice, gid, h);
    assert_memory_equal(h, demoted, 32);
    held_group_hash(bob, gid, h);
    assert_memory_equal(h, demoted, 32);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* The five of a squatted link: alice's club (with bob and carol) and its link (approval as
 * given), eve who holds the link too, and frank who uses it. */
struct squat {
    struct test_server s;
    struct msv_client *alice, *bob, *carol, *eve, *frank;
    uint8_t gid[16];
    char conversation[40], *uri;
};

static void squat_start(struct squat *q, int approval)
{
    memset(q, 0, sizeof(*q));
    club_of_three(&q->s, &q->alice, &q->bob, &q->carol, q->gid, q->conversation);
    q->eve = client_for(&q->s, "eve", "eve@example.org");
    q->frank = client_for(&q->s, "frank", "frank@example.org");
    assert_int_equal(msv_client_group_invite(q->alice, "club", MSV_INVITE_SHOW, approval, &q->uri),
                     MSV_OK);
}

/* eve's own group under the link's id, naming frank, at epoch (after the state prev). */
static void squat_send(struct squat *q, uint64_t epoch, const uint8_t prev[32])
{
    const char *ef[2] = {"eve@example.org", "frank@example.org"};
    const char *e[1] = {"eve@example.org"};

    send_signed_change(q->eve, q->gid, epoch, prev, ef, 2, e, 1, 0);
}

static void squat_end(struct squat *q)
{
    free(q->uri);
    msv_client_close(q->alice);
    msv_client_close(q->bob);
    msv_client_close(q->carol);
    msv_client_close(q->eve);
    msv_client_close(q->frank);
    test_server_cleanup(&q->s);
}

/*
 * eve holds alice's invite link and, before frank uses it, sends him a group of her own under
 * the link's group id. frank then joins by the link and alice adds him: frank's device takes
 * alice's change whole in the place of eve's group, which it never accepted, and accepts it.
 * eve's next change accepts nothing (she is no admin the link named). Before, frank's device
 * dropped alice's change unseen (she was no member of eve's group) and took eve's next change
 * as the group he asked to join.
 */
static void test_join_not_squatted(void **state)
{
    struct squat q;
    struct msv_group_rec g = {0};
    uint8_t zero[32] = {0}, h[32];
    const char *members =
        "alice@example.org\nbob@example.org\ncarol@example.org\nfrank@example.org\n";

    (void)state;
    squat_start(&q, 0);
    squat_send(&q, 1, zero);
    receive_now(q.frank);
    assert_int_equal(msv_client_group_join(q.frank, q.uri), MSV_OK);
    receive_now(q.alice);
    assert_members(q.alice, q.gid, members);
    receive_now(q.frank);
    assert_members(q.frank, q.gid, members);
    assert_int_equal(msv_client_db_group_get(q.frank->db, q.gid, NULL, &g), MSV_OK);
    assert_true(g.accepted);
    msv_group_clear(&g);
    /* eve's change on her own state changes nothing of it */
    held_group_hash(q.frank, q.gid, h);
    squat_send(&q, 2, h);
    receive_now(q.frank);
    assert_members(q.frank, q.gid, members);
    squat_end(&q);
}

/*
 * frank asks to join by alice's link (which names alice alone). Before alice's change adding
 * him reaches him, bob (an admin the link does not name) renames the group on it, and frank
 * takes that change first, whole, unaccepted. alice's older change then takes its place whole
 * and is accepted: frank is one epoch behind the group. The state so taken is marked as a copy
 * is, so alice's next change, which does not follow it, is taken whole and frank is level with
 * everyone again. Before, he held the older state for good, every later change refused as out
 * of order.
 */
static void test_join_taken_behind_catches_up(void **state)
{
    const char *four[4] = {"alice@example.org", "bob@example.org", "carol@example.org",
                           "frank@example.org"};
    const char *admins[2] = {"alice@example.org", "bob@example.org"};
    struct squat q;
    uint8_t added[32], h[32], ha[32];
    struct msv_group_rec g = {0};

    (void)state;
    squat_start(&q, 0);
    assert_int_equal(msv_client_group_admin(q.alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(q.bob);
    receive_now(q.carol);
    assert_int_equal(msv_client_group_join(q.frank, q.uri), MSV_OK);
    /* the state alice's add of frank makes, and bob's rename of it, sent before she makes it */
    group_state_hash(q.gid, 3, "club", four, 4, admins, 2, added);
    send_named_change(q.bob, q.gid, 4, added, "bob's club", four, 4, admins, 2, four, 4, 0);
    receive_now(q.frank);
    receive_now(q.alice); /* frank's request (she adds him), then bob's rename */
    receive_now(q.frank);
    assert_int_equal(msv_client_db_group_get(q.frank->db, q.gid, NULL, &g), MSV_OK);
    assert_true(g.accepted);
    msv_group_clear(&g);
    held_group_hash(q.frank, q.gid, h);
    assert_memory_equal(h, added, 32); /* one behind */
    assert_int_equal(msv_client_group_change(q.alice, "bob's club", "club again", NULL, 0, NULL, 0),
                     MSV_OK);
    receive_now(q.frank);
    held_group_hash(q.alice, q.gid, ha);
    held_group_hash(q.frank, q.gid, h);
    assert_memory_equal(h, ha, 32);
    squat_end(&q);
}

/*
 * The same link's group started by eve, who is no admin it names, is never accepted as the
 * group frank asked to join, though eve's changes reach him.
 */
static void test_join_not_accepted_from_another(void **state)
{
    struct squat q;
    struct msv_group_rec g = {0};
    uint8_t zero[32] = {0}, h[32];

    (void)state;
    squat_start(&q, 1); /* approval on: alice does not add frank; eve's group comes instead */
    assert_int_equal(msv_client_group_join(q.frank, q.uri), MSV_OK);
    squat_send(&q, 1, zero);
    receive_now(q.frank);
    held_group_hash(q.frank, q.gid, h);
    squat_send(&q, 2, h);
    receive_now(q.frank);
    assert_int_equal(msv_client_db_group_get(q.frank->db, q.gid, NULL, &g), MSV_OK);
    assert_false(g.accepted);
    msv_group_clear(&g);
    squat_end(&q);
}

/*
 * dave joins by alice's link (approval off) and alice removes him: his next request by the same
 * link waits for an admin instead of bringing him straight back, on the device of an admin who
 * did not remove him too (bob's). bob, who leaves by himself, is not held so. Before, dave was
 * added again at once.
 */
static void test_removed_member_waits_to_rejoin(void **state)
{
    const char *dave_handle[1] = {"dave@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol, *dave;
    struct msv_invite inv;
    struct msv_payload p;
    struct join_seen seen = {{0}, 0};
    uint8_t gid[16];
    char conversation[40], *uri = NULL;

    (void)state;
    club_of_three(&s, &alice, &bob, &carol, gid, conversation);
    dave = client_for(&s, "dave", "dave@example.org");
    assert_int_equal(msv_client_group_admin(alice, "club", "bob@example.org", 1), MSV_OK);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(msv_client_group_invite(alice, "club", MSV_INVITE_SHOW, 0, &uri), MSV_OK);
    assert_int_equal(msv_invite_parse(uri, &inv), MSV_OK);
    join_request(&inv, "dave@example.org", &p);
    assert_int_equal(client_take_join(alice, "dave@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "added");
    assert_int_equal(msv_client_group_change(alice, "club", NULL, NULL, 0, dave_handle, 1), MSV_OK);
    receive_now(bob);
    /* alice's device, which removed him, and bob's, which took her change */
    assert_int_equal(client_take_join(alice, "dave@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "pending");
    assert_int_equal(client_take_join(bob, "dave@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "pending");
    /* an admin's approval brings him back, and the mark goes with it */
    assert_int_equal(msv_client_group_decide(alice, "club", "dave@example.org", 1), MSV_OK);
    assert_members(alice, gid,
                   "alice@example.org\nbob@example.org\ncarol@example.org\ndave@example.org\n");
    /* carol leaves by herself: her ask by the link is let in as anyone's */
    receive_now(carol);
    assert_int_equal(msv_client_group_leave(carol, "club"), MSV_OK);
    receive_now(alice);
    assert_members(alice, gid, "alice@example.org\nbob@example.org\ndave@example.org\n");
    seen.status[0] = '\0';
    join_request(&inv, "carol@example.org", &p);
    assert_int_equal(client_take_join(alice, "carol@example.org", &p, note_join, &seen), MSV_OK);
    assert_string_equal(seen.status, "added");
    msv_invite_clear(&inv);
    free(uri);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    msv_client_close(dave);
    test_server_cleanup(&s);
}

static const char *status_of(struct msv_client *c, const uint8_t id[16])
{
    static char status[32];
    struct msv_message_rec *m = NULL;

    assert_int_equal(msv_client_db_message_get(c->db, id, &m), MSV_OK);
    snprintf(status, sizeof(status), "%s", m->status);
    msv_messages_free(m, 1);
    return status;
}

/* mallory's client sends text to bob under a message id she chose (one she saw). */
static void send_under_id(struct msv_client *mallory, const uint8_t id[16], const char *text)
{
    char *to[1] = {"bob@example.org"};
    struct msv_payload p = {
        .kind = MSV_KIND_MESSAGE, .text = (char *)text, .participants = to, .participant_count = 1};
    uint8_t *pt = NULL;
    size_t len = 0;

    memcpy(p.message_id, id, 16);
    p.sent_at_ms = (uint64_t)msv_wall_ms();
    assert_int_equal(msv_payload_encode(&p, &pt, &len), MSV_OK);
    assert_int_equal(msv_client_db_outbox_put(mallory->db, NULL, id, "", pt, len, msv_wall_ms()),
                     MSV_OK);
    free(pt);
    reconnect(mallory); /* the outbox goes with the connection */
}

static void count_sync(void *ctx, const struct msv_incoming *in)
{
    if (in->kind == MSV_INCOMING_SYNC)
        (*(int *)ctx)++;
}

/*
 * Synced state is shared only by an account's own devices: a SYNC payload
 * that mallory sends bob (a block of alice, a contact naming mallory "Alice",
 * the deletion of bob's own setting) changes nothing and is not reported,
 * though acknowledged; the same change from a device of bob's own account
 * applies.
 */
static void test_sync_from_another_account(void **state)
{
    char *to[1] = {"bob@example.org"};
    struct msv_sync_entry e[3] = {
        {.key = "sync:block:alice@example.org", .value = (uint8_t *)"1", .value_len = 1},
        {.key = "contact:Alice\nmallory@example.org"},
        {.key = "sync:privacy:typing", .deleted = true},
    };
    struct msv_payload p = {.kind = MSV_KIND_SYNC,
                            .sync = e,
                            .sync_count = 3,
                            .participants = to,
                            .participant_count = 1};
    struct test_server s;
    struct msv_client *bob, *mallory;
    struct msv_contact *c = NULL;
    uint8_t id[16], *pt = NULL, *v = NULL;
    size_t len = 0, n = 0;
    int synced = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    bob = client_for(&s, "bob", "bob@example.org");
    mallory = client_for(&s, "mallory", "mallory@example.org");
    assert_int_equal(msv_client_db_set(bob->db, "sync:privacy:typing", "off", 3), MSV_OK);
    for (size_t i = 0; i < 3; i++)
        e[i].stamp = (uint64_t)msv_wall_ms() + 60000;
    msv_random_bytes(id, sizeof(id));
    memcpy(p.message_id, id, 16);
    p.sent_at_ms = (uint64_t)msv_wall_ms();
    assert_int_equal(msv_payload_encode(&p, &pt, &len), MSV_OK);
    assert_int_equal(msv_client_db_outbox_put(mallory->db, NULL, id, "", pt, len, msv_wall_ms()),
                     MSV_OK);
    free(pt);
    reconnect(mallory); /* the outbox goes with the connection */
    assert_int_equal(msv_client_receive(bob, 500, count_sync, &synced, &n), MSV_OK);
    assert_int_equal(synced, 0);
    assert_int_equal(msv_client_db_get(bob->db, "sync:block:alice@example.org", &v, &len),
                     MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_get(bob->db, "sync:privacy:typing", &v, &len), MSV_OK);
    assert_memory_equal(v, "off", 3);
    free(v);
    assert_int_equal(msv_client_db_contacts(bob->db, "Alice", &c, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_contacts_free(c, n);
    /* acknowledged: it does not come again */
    drop_connection(bob);
    assert_int_equal(receive_now(bob), 0);
    msv_client_close(mallory);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

static void count_profile(void *ctx, const struct msv_incoming *in)
{
    if (in->kind == MSV_INCOMING_PROFILE)
        (*(int *)ctx)++;
}

/* Mallory sends bob a message whose profile pointer names blob (of len bytes) as ref says. */
static void send_profile_pointer(struct msv_client *mallory, const uint8_t *blob, size_t len,
                                 const uint8_t sha256[32], uint64_t size)
{
    char *to[1] = {"bob@example.org"}, uri[80], hex[65];
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE,
                            .text = "look at my profile",
                            .participants = to,
                            .participant_count = 1,
                            .has_profile_key = true,
                            .has_profile = true};
    struct msv_refusal why;
    uint8_t id[16], got[32], *pt = NULL;
    size_t pt_len = 0;

    assert_int_equal(msv_client_connect(mallory), MSV_OK);
    assert_int_equal(msv_request_blob_upload(mallory->conn, blob, len, 15000, NULL, got, &why),
                     MSV_OK);
    assert_int_equal(msv_hex_encode(got, 32, hex, sizeof(hex)), MSV_OK);
    snprintf(uri, sizeof(uri), "blob:%s", hex);
    p.profile.uri = uri;
    p.profile.size = size;
    memcpy(p.profile.sha256, sha256, 32);
    msv_random_bytes(p.profile.salt, sizeof(p.profile.salt));
    assert_int_equal(msv_sessions_profile_key(mallory, p.profile_key), MSV_OK);
    msv_random_bytes(id, sizeof(id));
    memcpy(p.message_id, id, 16);
    p.sent_at_ms = (uint64_t)msv_wall_ms();
    assert_int_equal(msv_payload_encode(&p, &pt, &pt_len), MSV_OK);
    assert_int_equal(msv_client_db_outbox_put(mallory->db, NULL, id, "", pt, pt_len, msv_wall_ms()),
                     MSV_OK);
    free(pt);
    reconnect(mallory); /* the outbox goes with the connection */
}

/*
 * A profile pointer that leads nowhere usable changes nothing: a blob larger
 * than any profile (whatever size the pointer claims), one that is not what
 * the pointer's hash says, and one that does not decrypt to a profile under
 * the sender's key are each ignored with a notice; the message itself is
 * stored, and a profile bob had stays.
 */
static void test_hostile_profile_pointer(void **state)
{
    size_t big_len = MSV_PROFILE_BLOB_MAX + 4096, n = 0;
    uint8_t *big = malloc(big_len), small[200], sha[32], other[32], id[16];
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *bob, *mallory;
    char *name = NULL;
    int told = 0;

    (void)state;
    assert_non_null(big);
    msv_random_bytes(big, big_len);
    msv_random_bytes(small, sizeof(small));
    test_server_init(&s, NULL);
    test_server_start(&s);
    bob = client_for(&s, "bob", "bob@example.org");
    mallory = client_for(&s, "mallory", "mallory@example.org");
    for (int round = 0; round < 2; round++) {
        /* too big: the download stops at the largest profile */
        assert_int_equal(crypto_hash_sha256(sha, big, big_len), 0);
        send_profile_pointer(mallory, big, big_len, sha, 1000);
        /* not the blob the hash names */
        msv_random_bytes(other, sizeof(other));
        send_profile_pointer(mallory, small, sizeof(small), other, sizeof(small));
        /* the right hash, but nothing that decrypts to a profile */
        assert_int_equal(crypto_hash_sha256(sha, small, sizeof(small)), 0);
        send_profile_pointer(mallory, small, sizeof(small), sha, sizeof(small));
        told = 0;
        assert_int_equal(msv_client_receive(bob, 500, count_profile, &told, &n), MSV_OK);
        assert_int_equal(n, 3); /* the messages are stored all the same */
        assert_int_equal(told, 3);
        if (round == 0) {
            assert_int_equal(msv_client_contact_profile(bob, "mallory@example.org", &name, NULL, 0),
                             MSV_ERR_NOT_FOUND);
            /* then a real profile, which the next hostile pointers leave alone */
            assert_int_equal(msv_client_profile_set(mallory, "Mallory", NULL, 0, 0), MSV_OK);
            assert_int_equal(msv_client_send(mallory, to, 1, "hi", NULL, 0, NULL, id), MSV_OK);
            assert_int_equal(msv_client_receive(bob, 500, NULL, NULL, &n), MSV_OK);
        }
        assert_int_equal(msv_client_contact_profile(bob, "mallory@example.org", &name, NULL, 0),
                         MSV_OK);
        assert_string_equal(name, "Mallory");
        free(name);
        name = NULL;
    }
    free(big);
    msv_client_close(mallory);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* A server with alice, bob and mallory registered: mallory reuses the ids of alice's messages. */
struct reuse {
    struct test_server s;
    struct msv_client *alice, *bob, *mallory;
};

static void reuse_start(struct reuse *r)
{
    test_server_init(&r->s, NULL);
    test_server_start(&r->s);
    r->alice = client_for(&r->s, "alice", "alice@example.org");
    r->bob = client_for(&r->s, "bob", "bob@example.org");
    r->mallory = client_for(&r->s, "mallory", "mallory@example.org");
}

static void reuse_free(struct reuse *r)
{
    msv_client_close(r->alice);
    msv_client_close(r->bob);
    msv_client_close(r->mallory);
    test_server_cleanup(&r->s);
}

/*
 * Message ids are the sender's: mallory, who saw the id of alice's message
 * to bob, sends her own message under it. Neither is dropped as the other's
 * redelivery: bob keeps both, the second with a note; a real redelivery of
 * either is still recognised.
 */
static void test_reused_message_id(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct reuse r;
    uint8_t id[16];

    (void)state;
    reuse_start(&r);
    assert_int_equal(msv_client_send(r.alice, to, 1, "alice's words", NULL, 0, NULL, id), MSV_OK);
    send_under_id(r.mallory, id, "mallory's words");
    assert_int_equal(receive_now(r.bob), 2);
    assert_int_equal(history_count(r.bob, "alice@example.org", "alice's words"), 1);
    assert_int_equal(history_count(r.bob, "mallory@example.org", "mallory's words"), 1);
    assert_int_equal(
        history_count(r.bob, "mallory@example.org",
                      "[sent under the id of an earlier message from alice@example.org"),
        1);
    assert_string_equal(status_of(r.bob, id), "received");
    /* mallory's message again, under the same id: a redelivery of hers, dropped */
    send_under_id(r.mallory, id, "mallory's words");
    assert_int_equal(receive_now(r.bob), 0);
    assert_int_equal(history_count(r.bob, NULL, "mallory's words"), 1);
    assert_int_equal(history_count(r.bob, NULL, "alice's words"), 1);
    reuse_free(&r);
}

/*
 * mallory's message under the id of alice's reaches bob first (a server held alice's back): bob
 * keeps alice's under an id of its own. alice's edit and unsend of it reach it there, and leave
 * mallory's alone. Before, both were taken as about mallory's message and dropped (she is not
 * its author): alice's message stayed as first written.
 */
static void test_changes_reach_a_message_under_a_reused_id(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct reuse r;
    struct msv_message_rec *m = NULL;
    uint8_t id[16], local[16];

    (void)state;
    reuse_start(&r);
    assert_int_equal(msv_client_send(r.alice, to, 1, "alice's words", NULL, 0, NULL, id), MSV_OK);
    send_under_id(r.mallory, id, "mallory's words");
    /* mallory's, the newer of the two in bob's queue, given first */
    queue_turned_around(&r.s, (struct msv_client *[]){r.alice, r.bob, r.mallory, NULL},
                        r.bob->device_id);
    assert_int_equal(receive_now(r.bob), 2);
    client_reused_id(id, "alice@example.org", r.alice->device_id, local);
    assert_int_equal(msv_client_db_message_get(r.bob->db, local, &m), MSV_OK);
    assert_string_equal(m->sender, "alice@example.org");
    msv_messages_free(m, 1);
    assert_int_equal(msv_client_edit(r.alice, id, "alice's new words"), MSV_OK);
    receive_now(r.bob);
    assert_int_equal(msv_client_db_message_get(r.bob->db, local, &m), MSV_OK);
    assert_non_null(strstr(m->text, "alice's new words"));
    msv_messages_free(m, 1);
    assert_int_equal(msv_client_unsend(r.alice, id), MSV_OK);
    receive_now(r.bob);
    assert_string_equal(status_of(r.bob, local), "unsent");
    assert_string_equal(status_of(r.bob, id), "received"); /* mallory's, as it was */
    assert_int_equal(history_count(r.bob, NULL, "mallory's words"), 1);
    reuse_free(&r);
}

/*
 * The same, and alice's unsend comes before her message too (bob's queue turned around): it
 * names an id mallory's message holds, so it is kept for alice's own, and her message, stored
 * under an id of its own, is shown unsent, its words nowhere. Before, the unsend was taken as
 * about mallory's message and dropped, and alice's message was shown whole.
 */
static void test_unsend_first_under_a_reused_id(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct reuse r;
    struct msv_message_rec *h = NULL;
    uint8_t id[16], local[16];
    size_t n = 0;

    (void)state;
    reuse_start(&r);
    assert_int_equal(msv_client_send(r.alice, to, 1, "alice's secret", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_unsend(r.alice, id), MSV_OK);
    send_under_id(r.mallory, id, "mallory's words");
    queue_turned_around(&r.s, (struct msv_client *[]){r.alice, r.bob, r.mallory, NULL},
                        r.bob->device_id);
    receive_now(r.bob);
    client_reused_id(id, "alice@example.org", r.alice->device_id, local);
    assert_string_equal(status_of(r.bob, local), "unsent");
    assert_string_equal(status_of(r.bob, id), "received"); /* mallory's */
    assert_int_equal(msv_client_db_history(r.bob->db, NULL, "secret", 0, &h, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_messages_free(h, n);
    reuse_free(&r);
}

/* Runs sql on c's own database beside it (waiting for its writes). */
static void client_sql(struct msv_client *c, const char *sql)
{
    char path[1100], *msg = NULL;
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/state.db", c->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, TEST_TIMEOUT_MS);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/*
 * bob's database refuses to queue his delivery receipt (his outbox cannot be written): the
 * message is his all the same, and its receipt stays owed, sent at his next receive. Before,
 * it was owed no more: alice's message stayed "sent".
 */
static void test_receipt_not_queued_stays_owed(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t id[16];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    test_acquaint(alice, bob);
    /* (an insert into a table that is not there: an error as the disk's, not a constraint's) */
    client_sql(bob, "CREATE TABLE doomed (x); CREATE TRIGGER no_outbox BEFORE INSERT ON outbox "
                    "BEGIN INSERT INTO doomed VALUES (1); END; DROP TABLE doomed;");
    assert_int_equal(msv_client_send(alice, to, 1, "for bob", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(bob), 1);
    receive_now(alice);
    assert_string_equal(status_of(alice, id), "sent");
    client_sql(bob, "DROP TRIGGER no_outbox;");
    receive_now(bob);
    receive_now(alice);
    assert_string_equal(status_of(alice, id), "delivered");
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * The server holds alice's two messages to bob back until after her changes of them, and hands
 * bob everything in the opposite order: her edit and her unsend come before their messages. bob
 * keeps them and applies them when the messages come: the unsent one is shown unsent, its words
 * nowhere in his history; the edited one with its new words. Before, bob dropped both changes
 * (messages he did not have) and showed the messages as first written.
 */
static void test_changes_before_their_messages(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_message_rec *m = NULL, *h = NULL;
    uint8_t gone[16], fixed[16];
    size_t n = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    test_acquaint(alice, bob);
    assert_int_equal(msv_client_send(alice, to, 1, "take this back", NULL, 0, NULL, gone), MSV_OK);
    assert_int_equal(msv_client_send(alice, to, 1, "frist words", NULL, 0, NULL, fixed), MSV_OK);
    assert_int_equal(msv_client_unsend(alice, gone), MSV_OK);
    assert_int_equal(msv_client_edit(alice, fixed, "first words"), MSV_OK);
    queue_turned_around(&s, (struct msv_client *[]){bob, NULL}, bob->device_id);
    receive_now(bob);
    assert_int_equal(msv_client_db_message_get(bob->db, gone, &m), MSV_OK);
    assert_string_equal(m->status, "unsent");
    assert_string_equal(m->text, "");
    msv_messages_free(m, 1);
    assert_int_equal(msv_client_db_message_get(bob->db, fixed, &m), MSV_OK);
    assert_string_equal(m->text, "first words");
    msv_messages_free(m, 1);
    assert_int_equal(msv_client_db_history(bob->db, NULL, "take", 0, &h, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_messages_free(h, n);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * Mallory learns the id of alice's message to bob and sends alice a read
 * receipt for it (her client believes it received the message: a line in
 * her own database). Alice takes receipts from bob only.
 */
static void test_receipts_only_from_recipients(void **state)
{
    const char *to[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *mallory;
    struct msv_message_rec fake = {.conversation = "alice@example.org",
                                   .sender = "alice@example.org",
                                   .kind = MSV_KIND_MESSAGE,
                                   .text = "",
                                   .status = "received"};
    struct msv_client *laptop = NULL;
    uint8_t id[16], gid[16], fp[32];
    char dir[128];
    size_t count = 0;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    test_acquaint(alice, bob);
    mallory = client_for(&s, "mallory", "mallory@example.org");
    assert_int_equal(msv_client_send(alice, to, 1, "for bob", NULL, 0, NULL, id), MSV_OK);
    memcpy(fake.message_id, id, 16);
    assert_int_equal(msv_client_db_message_put(mallory->db, &fake), MSV_OK);
    assert_int_equal(msv_client_mark_read(mallory, "alice@example.org", &count), MSV_OK);
    assert_int_equal(count, 1);
    receive_now(alice);
    assert_string_equal(status_of(alice, id), "sent");
    /* bob's receipts count */
    assert_int_equal(receive_now(bob), 1);
    receive_now(alice);
    assert_string_equal(status_of(alice, id), "delivered");
    assert_int_equal(msv_client_mark_read(bob, "alice@example.org", &count), MSV_OK);
    receive_now(alice);
    assert_string_equal(status_of(alice, id), "read");

    /* alice's laptop has a copy of her group message: bob's receipt counts there too */
    snprintf(dir, sizeof(dir), "%s/alice-laptop", s.dir);
    assert_int_equal(msv_client_create(dir, "alice@example.org", "127.0.0.1", s.port,
                                       MSV_SUITE_MODERN, 0, NULL, fp, &laptop),
                     MSV_OK);
    assert_int_equal(msv_client_link(laptop, TEST_PASSWORD), MSV_OK);
    receive_now(alice);
    assert_int_equal(msv_client_approve_device(alice, laptop->device_id), MSV_OK);
    assert_int_equal(msv_client_group_create(alice, "pair", to, 1, gid), MSV_OK);
    assert_int_equal(msv_client_group_send(alice, "pair", "to the group", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(laptop);
    assert_string_equal(status_of(laptop, id), "sent");
    receive_now(bob);
    receive_now(laptop);
    assert_string_equal(status_of(laptop, id), "delivered");
    msv_client_close(laptop);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

static void read_back(const char *path, const char *want)
{
    size_t len = 0;
    uint8_t *got = test_read_file(path, &len);

    assert_non_null(got);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    free(got);
}

/*
 * Two files of one name in one message are both kept; a name already taken
 * in bob's attachments/ (here a link planted to another file) is never
 * written through or over.
 */
static void test_received_files_kept(void **state)
{
    const char *to[1] = {"bob@example.org"};
    const struct msv_file files[2] = {
        {"notes.txt", "text/plain", (const uint8_t *)"first", 5},
        {"notes.txt", "text/plain", (const uint8_t *)"second", 6},
    };
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t id[16];
    char hex[33], path[1200], victim[400];
    FILE *f;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_send(alice, to, 1, "two notes", files, 2, NULL, id), MSV_OK);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(msv_hex_encode(id, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(path, sizeof(path), "%s/attachments/%s-notes.txt", bob->dir, hex);
    read_back(path, "first");
    snprintf(path, sizeof(path), "%s/attachments/%s-2-notes.txt", bob->dir, hex);
    read_back(path, "second");

    /* the next message's file name, taken by a link to a file of bob's */
    assert_int_equal(msv_client_send(alice, to, 1, "one note", files, 1, NULL, id), MSV_OK);
    assert_int_equal(msv_hex_encode(id, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(victim, sizeof(victim), "%s/victim", s.dir);
    f = fopen(victim, "w");
    assert_non_null(f);
    fputs("keep me", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/attachments/%s-notes.txt", bob->dir, hex);
    assert_int_equal(symlink(victim, path), 0);
    assert_int_equal(receive_now(bob), 1);
    read_back(victim, "keep me");
    snprintf(path, sizeof(path), "%s/attachments/%s-2-notes.txt", bob->dir, hex);
    read_back(path, "first");
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * A dishonest server says an attachment is 300 MiB (and serves that many
 * bytes): over what a client downloads. The message is kept with a note and
 * acknowledged, and the message queued behind it arrives.
 */
static void test_unfetchable_attachment(void **state)
{
    const char *to[1] = {"bob@example.org"};
    const struct msv_file file = {"big.bin", "application/octet-stream",
                                  (const uint8_t *)"not so big", 10};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t id[16];
    char dir[160], path[600];
    struct dirent *e;
    DIR *d;

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_send(alice, to, 1, "a big file", &file, 1, NULL, id), MSV_OK);
    assert_int_equal(msv_client_send(alice, to, 1, "and after it", NULL, 0, NULL, id), MSV_OK);
    test_server_stop(&s);
    server_sql(&s, "UPDATE blobs SET size = 314572800;");
    snprintf(dir, sizeof(dir), "%s/data/blobs", s.dir);
    d = opendir(dir);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        assert_int_equal(truncate(path, 314572800), 0); /* sparse: no disk taken */
    }
    closedir(d);
    test_server_start(&s);
    assert_int_equal(receive_now(bob), 2);
    assert_int_equal(history_count(bob, NULL, "[file big.bin not available: larger than"), 1);
    assert_int_equal(history_count(bob, NULL, "and after it"), 1);
    drop_connection(bob);
    assert_int_equal(receive_now(bob), 0); /* both acknowledged */
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * The server's store fails as an attachment is fetched: the server says so (ERROR_IO), and the
 * message waits, unacknowledged, until the fetch works. Before, any failure of the store was
 * "no such attachment", which a client takes as gone for good: the file was lost.
 */
static void test_attachment_store_failure_not_gone(void **state)
{
    const char *to[1] = {"bob@example.org"};
    const struct msv_file file = {"kept.txt", "text/plain", (const uint8_t *)"kept", 4};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t id[16];
    size_t n = 0;

    (void)state;
    start_pair(&s, &alice, &bob);
    assert_int_equal(msv_client_send(alice, to, 1, "a file", &file, 1, NULL, id), MSV_OK);
    test_server_stop(&s);
    /* a record the store cannot read (a fault of its own, not a missing attachment) */
    server_sql(&s, "CREATE TABLE saved AS SELECT id, sha256 FROM blobs;"
                   "UPDATE blobs SET sha256 = substr(sha256, 1, 31);");
    test_server_start(&s);
    drop_connection(bob);
    if (msv_client_receive(bob, 500, NULL, NULL, &n) == MSV_OK)
        assert_int_equal(n, 0); /* nothing taken */
    assert_int_equal(history_count(bob, NULL, "not available"), 0);
    test_server_stop(&s);
    {
        char sql[160];

        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM queue WHERE device_id = %llu",
                 (unsigned long long)bob->device_id);
        assert_int_equal(server_count(&s, sql), 1); /* not acknowledged: it comes again */
    }
    server_sql(&s, "UPDATE blobs SET sha256 = (SELECT sha256 FROM saved WHERE saved.id = blobs.id);"
                   "DROP TABLE saved;");
    test_server_start(&s);
    drop_connection(bob);
    receive_all(bob);
    assert_int_equal(history_count(bob, NULL, "not available"), 0);
    assert_int_equal(history_count(bob, NULL, "kept.txt (4 bytes)]"), 1);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* An account directory another user could write, or whose attachments/ is a link, is not used. */
static void test_account_directory_checked(void **state)
{
    const char *to[1] = {"bob@example.org"};
    const struct msv_file file = {"x.txt", "text/plain", (const uint8_t *)"x", 1};
    struct test_server s;
    struct msv_client *alice, *bob, *again = NULL;
    uint8_t id[16];
    char dir[1100], elsewhere[400], link[1200];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    snprintf(dir, sizeof(dir), "%s", bob->dir);
    /* someone else may write it: refused */
    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(msv_client_open(dir, NULL, &again), MSV_ERR_INVALID);
    assert_null(again);
    assert_int_equal(chmod(dir, 0700), 0);
    assert_int_equal(msv_client_open(dir, NULL, &again), MSV_OK);
    msv_client_close(again);
    /* attachments/ a link to another directory: nothing is written there */
    snprintf(elsewhere, sizeof(elsewhere), "%s/elsewhere", s.dir);
    assert_int_equal(mkdir(elsewhere, 0700), 0);
    snprintf(link, sizeof(link), "%s/attachments", dir);
    assert_int_equal(symlink(elsewhere, link), 0);
    assert_int_equal(msv_client_send(alice, to, 1, "a file", &file, 1, NULL, id), MSV_OK);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(history_count(bob, NULL, "[file x.txt not available: it could not be saved"),
                     1);
    assert_int_equal(rmdir(elsewhere), 0); /* still empty */
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/* The process's address space now, in bytes (VmSize). */
static size_t address_space(void)
{
    char line[256];
    size_t kib = 0;
    FILE *f = fopen("/proc/self/status", "r");

    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmSize:", 7) == 0)
            kib = strtoull(line + 7, NULL, 10);
    }
    fclose(f);
    return kib * 1024;
}

/*
 * A 96 MiB file is received by a process that may grow by 64 MiB only: it
 * goes to disk as it arrives, never whole (let alone twice) in memory.
 */
static void test_file_streamed_to_disk(void **state)
{
    const char *to[1] = {"bob@example.org"};
    const size_t size = (size_t)96 << 20;
    struct test_server s;
    struct msv_client *alice, *bob;
    struct msv_file file = {"big.bin", "application/octet-stream", NULL, size};
    uint8_t id[16], *data = malloc(size), *got;
    char hex[33], path[1200];
    size_t len = 0;
    int status = 0;
    pid_t pid;

    (void)state;
    assert_non_null(data);
    test_fill_pattern(data, size, 7);
    file.data = data;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = client_for(&s, "alice", "alice@example.org");
    bob = client_for(&s, "bob", "bob@example.org");
    assert_int_equal(msv_client_send(alice, to, 1, "a big one", &file, 1, NULL, id), MSV_OK);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit lim;
        size_t count = 0;

        drop_connection(bob);
        lim.rlim_cur = lim.rlim_max = address_space() + ((size_t)64 << 20);
        if (setrlimit(RLIMIT_AS, &lim) != 0 ||
            msv_client_receive(bob, 1000, NULL, NULL, &count) != MSV_OK || count != 1)
            _exit(1);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(msv_hex_encode(id, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(path, sizeof(path), "%s/attachments/%s-big.bin", bob->dir, hex);
    got = test_read_file(path, &len);
    assert_non_null(got);
    assert_int_equal(len, size);
    assert_memory_equal(got, data, size);
    free(got);
    free(data);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

int main(void)
{
    struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redelivery_shown_once),
        cmocka_unit_test(test_malicious_directory),
        cmocka_unit_test(test_devlist_sender),
        cmocka_unit_test(test_devlist_legacy),
        cmocka_unit_test(test_devlist_chain_record_key_swap),
        cmocka_unit_test(test_devlist_bad_set_other_handles),
        cmocka_unit_test(test_send_goes_to_those_that_check_out),
        cmocka_unit_test(test_send_past_unregistered_handle),
        cmocka_unit_test(test_owed_to_a_deleted_account),
        cmocka_unit_test(test_queued_not_for_a_new_account),
        cmocka_unit_test(test_send_past_unproven_handle),
        cmocka_unit_test(test_monitor_removed_approver),
        cmocka_unit_test(test_log_key_rotation),
        cmocka_unit_test(test_log_key_rotation_attacks),
        cmocka_unit_test(test_owner_monitor),
        cmocka_unit_test(test_gossip_reveals_fork),
        cmocka_unit_test(test_removed_device_stays_removed),
        cmocka_unit_test(test_key_directory_newest_version),
        cmocka_unit_test(test_device_id_reused),
        cmocka_unit_test(test_forged_device_under_second_handle),
        cmocka_unit_test(test_monitor_judges_before_own_removal),
        cmocka_unit_test(test_monitor_keeps_dropped_handle),
        cmocka_unit_test(test_away_device_handle_taken),
        cmocka_unit_test(test_default_send_as_first_handle),
        cmocka_unit_test(test_swapped_handle_answer),
        cmocka_unit_test(test_gossip_checks_both_heads),
        cmocka_unit_test(test_head_from_the_future),
        cmocka_unit_test(test_monitor_removed_device_returns),
        cmocka_unit_test(test_monitor_newest_second_handle),
        cmocka_unit_test(test_monitor_unasked_tombstone),
        cmocka_unit_test(test_monitor_reads_no_leaves),
        cmocka_unit_test(test_monitor_version_withheld),
        cmocka_unit_test(test_monitor_versions_stalled),
        cmocka_unit_test(test_monitor_version_unproven),
        cmocka_unit_test(test_monitor_state_upgraded),
        cmocka_unit_test(test_monitor_versions_after_cut_over),
        cmocka_unit_test(test_owner_versions_paged),
        cmocka_unit_test(test_owner_versions_too_many),
        cmocka_unit_test(test_owner_versions_two_handles),
        cmocka_unit_test(test_owner_history_forged_version),
        cmocka_unit_test(test_owner_history_skipped_version),
        cmocka_unit_test(test_owner_history_skipped_version_v3),
        cmocka_unit_test(test_recycled_handle_versions),
        cmocka_unit_test(test_recycled_handle_log_read),
        cmocka_unit_test(test_log_read_racing_handle_removal),
        cmocka_unit_test(test_lookup_racing_handle_removal),
        cmocka_unit_test(test_monitor_starts_late),
        cmocka_unit_test(test_monitor_rate_limited_alarm),
        cmocka_unit_test(test_monitor_lineage_fork),
        cmocka_unit_test(test_monitor_lineage_no_root),
        cmocka_unit_test(test_monitor_lineage_no_root_newer_head),
        cmocka_unit_test(test_monitor_cutover_moved),
        cmocka_unit_test(test_monitor_lineage_sender_only),
        cmocka_unit_test(test_monitor_lineage_seen_kept),
        cmocka_unit_test(test_monitor_lineage_stall_alarm),
        cmocka_unit_test(test_monitor_lineage_seen_bounded),
        cmocka_unit_test(test_epoch_roots_compared),
        cmocka_unit_test(test_owner_history_only_own_and_limited),
        cmocka_unit_test(test_account_new),
        cmocka_unit_test(test_sender_killed_mid_send),
        cmocka_unit_test(test_crash_consistency),
        cmocka_unit_test(test_sessions_and_sealed_sender),
        cmocka_unit_test(test_sealed_sender_not_stripped),
        cmocka_unit_test(test_sealed_sender_hybrid_and_classical),
        cmocka_unit_test(test_claim_refused_is_not_withheld),
        cmocka_unit_test(test_lookup_for_another_handle_refused),
        cmocka_unit_test(test_outbox_goes_on_past_a_failure),
        cmocka_unit_test(test_owed_given_up_after_30_days),
        cmocka_unit_test(test_lost_prekey_answer),
        cmocka_unit_test(test_rotation_answer_dropped),
        cmocka_unit_test(test_keys_unpublished_told),
        cmocka_unit_test(test_keys_limited_told),
        cmocka_unit_test(test_key_packages_limited_told),
        cmocka_unit_test(test_old_last_resort_refused),
        cmocka_unit_test(test_gone_device_rechecked),
        cmocka_unit_test(test_sealed_to_key_let_go),
        cmocka_unit_test(test_unlisted_sender_said),
        cmocka_unit_test(test_lost_one_time_prekeys_reclaimed),
        cmocka_unit_test(test_stray_last_resort_opens_nothing),
        cmocka_unit_test(test_classical_envelope_between_pq_devices),
        cmocka_unit_test(test_sealed_sender_forged),
        cmocka_unit_test(test_parallel_sends_share_sessions),
        cmocka_unit_test(test_two_receivers_take_once),
        cmocka_unit_test(test_deliveries_one_at_a_time),
        cmocka_unit_test(test_taken_connection_not_taken_back),
        cmocka_unit_test(test_attachment_store_failure_not_gone),
        cmocka_unit_test(test_expired_in_outbox_is_said),
        cmocka_unit_test(test_outbox_not_sent_under_a_lock),
        cmocka_unit_test(test_retried_send_goes_once),
        cmocka_unit_test(test_request_connections_used_up),
        cmocka_unit_test(test_unreadable_message_recorded),
        cmocka_unit_test(test_replayed_and_reordered_controls),
        cmocka_unit_test(test_timer_changes_in_order),
        cmocka_unit_test(test_relay_drops_expired_copies),
        cmocka_unit_test(test_prekey_message_names_one_time_as_signed),
        cmocka_unit_test(test_replayed_first_message),
        cmocka_unit_test(test_sessions_bound_to_peer),
        cmocka_unit_test(test_earlier_sessions_kept),
        cmocka_unit_test(test_message_too_old),
        cmocka_unit_test(test_signed_prekey_rotation),
        cmocka_unit_test(test_send_to_big_accounts),
        cmocka_unit_test(test_stale_send_looks_up_what_changed),
        cmocka_unit_test(test_non_member_group_post),
        cmocka_unit_test(test_group_change_checked),
        cmocka_unit_test(test_invite_parse),
        cmocka_unit_test(test_invite_settings_admins_only),
        cmocka_unit_test(test_group_concurrent_changes),
        cmocka_unit_test(test_invitations_bounded),
        cmocka_unit_test(test_group_changes_from_two_processes),
        cmocka_unit_test(test_group_change_held_only_if_queued),
        cmocka_unit_test(test_group_changes_keep_their_order),
        cmocka_unit_test(test_group_leave_crossing_a_change),
        cmocka_unit_test(test_demoted_admin_cannot_take_back),
        cmocka_unit_test(test_leave_does_not_undo_a_demotion),
        cmocka_unit_test(test_join_not_squatted),
        cmocka_unit_test(test_join_not_accepted_from_another),
        cmocka_unit_test(test_join_taken_behind_catches_up),
        cmocka_unit_test(test_removed_member_waits_to_rejoin),
        cmocka_unit_test(test_receipts_only_from_recipients),
        cmocka_unit_test(test_receipt_not_queued_stays_owed),
        cmocka_unit_test(test_changes_before_their_messages),
        cmocka_unit_test(test_changes_reach_a_message_under_a_reused_id),
        cmocka_unit_test(test_unsend_first_under_a_reused_id),
        cmocka_unit_test(test_reused_message_id),
        cmocka_unit_test(test_sync_from_another_account),
        cmocka_unit_test(test_hostile_profile_pointer),
        cmocka_unit_test(test_received_files_kept),
        cmocka_unit_test(test_unfetchable_attachment),
        cmocka_unit_test(test_account_directory_checked),
        cmocka_unit_test(test_file_streamed_to_disk),
        cmocka_unit_test(test_mls_group_message_recorded),
    };

    if (msv_init() != MSV_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN); /* servers are killed under the clients' feet */
    return test_run_group("client", tests, sizeof(tests) / sizeof(tests[0]));
}
