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
#include <sqlite3.h>

#include "client/client.h"
#include "client/sessions.h"
#include "missive/kt.h"
#include "missive/payload.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "server_harness.h"

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
    struct msv_client *c = NULL;
    uint8_t fp[32];
    char dir[128], code[7];

    snprintf(dir, sizeof(dir), "%s/%s", s->dir, name);
    assert_int_equal(
        msv_client_create(dir, handle, "127.0.0.1", s->port, MSV_SUITE_MODERN, 0, NULL, fp, &c),
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
static uint8_t newest_envelope(struct test_server *s, struct msv_client *to, uint64_t from_device,
                               int *sealed, uint8_t *inner_kind)
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
        uint8_t *buf = NULL;
        const uint8_t *inner = NULL;
        size_t inner_len = 0;

        /* the relay holds no sender; the recipient finds it inside */
        assert_int_equal(r->sender_device, 0);
        assert_string_equal(r->sender_handle, "");
        assert_int_equal(msv_sealed_unwrap(to->id, r->ciphertext, r->len, handle, &device, &buf,
                                           &inner, &inner_len),
                         MSV_OK);
        assert_int_equal(device, from_device);
        *inner_kind = inner[0];
        free(buf);
    } else {
        assert_int_equal(r->sender_device, from_device);
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

    /* first contact: X3DH from bob's published prekeys; alice has no token for bob yet */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "first", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(newest_envelope(&s, bob, alice->device_id, &sealed, &inner),
                     MSV_WIRE_PREKEY_MSG);
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
    assert_int_equal(newest_envelope(&s, alice, bob->device_id, &sealed, &inner), MSV_WIRE_SEALED);
    assert_true(sealed);
    assert_int_equal(inner, MSV_WIRE_RATCHET);
    receive_all(alice);
    /* and now alice's messages to bob are sealed too */
    assert_int_equal(msv_client_send(alice, to_bob, 1, "second", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(newest_envelope(&s, bob, alice->device_id, &sealed, &inner), MSV_WIRE_SEALED);
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
    assert_int_equal(newest_envelope(&s, alice, bob->device_id, &sealed, &inner), MSV_WIRE_SEALED);
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
    assert_int_equal(msv_request_prekey_claim(asker->conn, &device, 1, 10000, &r, &asker->why),
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

/* Runs SQL on the stopped server's database. */
static void server_sql(struct test_server *s, const char *sql)
{
    char path[160];
    sqlite3 *db = NULL;
    char *msg = NULL;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* The number the stopped server's database gives for a query. */
static long long server_count(struct test_server *s, const char *sql)
{
    char path[160];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long n;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The newest leaf of handle, rewritten with its first device's key replaced by key (if not NULL).
 */
static void forge_leaf(struct test_server *s, const char *handle, const uint8_t *key,
                       size_t key_len, uint8_t **leaf, size_t *len, int64_t *index)
{
    static struct msv_kt_entry e;
    char path[160];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
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
 * consistent, so bob accepts it, but the approval is not signed by the laptop,
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
        (struct msv_kt_device){(uint64_t)forged_id, MSV_SUITE_MODERN, key, key_len};
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

    /* bob cannot tell: the log is consistent and lists it */
    drop_connection(bob);
    assert_int_equal(msv_client_devices(bob, "alice@example.org", &devs), MSV_OK);
    assert_int_equal(devs->lookup_result->results[0]->n_devices, 3);
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

        if (msv_request_add_device(c, handle, TEST_PASSWORD, big, "token", TEST_TIMEOUT_MS, &dev,
                                   &why) != MSV_OK)
            fail_msg("adding device %d to %s: %s", i, handle, why.message);
        r = test_approve(d, dev);
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
    if (msv_request_add_device(c, handle, TEST_PASSWORD, big, "token", TEST_TIMEOUT_MS, &dev,
                               &why) != MSV_OK)
        fail_msg("adding a device to %s again: %s", handle, why.message);
    r = test_approve(d, dev);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redelivery_shown_once),
        cmocka_unit_test(test_malicious_directory),
        cmocka_unit_test(test_owner_monitor),
        cmocka_unit_test(test_gossip_reveals_fork),
        cmocka_unit_test(test_sender_killed_mid_send),
        cmocka_unit_test(test_crash_consistency),
        cmocka_unit_test(test_sessions_and_sealed_sender),
        cmocka_unit_test(test_signed_prekey_rotation),
        cmocka_unit_test(test_send_to_big_accounts),
    };

    if (msv_init() != MSV_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);       /* servers are killed under the clients' feet */
    if (getenv("MSV_TEST") != NULL) /* one test by name (or a pattern), for a closer look */
        cmocka_set_test_filter(getenv("MSV_TEST"));
    return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
