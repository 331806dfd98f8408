/*
 * The client's groups on MLS (src/client/mlsgroups.c; docs/crypto.md "Groups on MLS in the
 * client"), end to end with a real missived: a group whose devices all have KeyPackages moves
 * to MLS, its members join from the Welcome, messages go as one application message and are
 * named by the sender's leaf; a device without a KeyPackage keeps the group on per-device
 * copies, and says so; a removed device cannot read what follows; a Welcome for a group never
 * told of, a replayed commit and a member adding a device no member has change nothing and are
 * told.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/client.h"
#include "client/conn.h"
#include "client/internal.h"
#include "client/safety.h"
#include "client/requests.h"
#include "missive/util.h"
#include "mls/member.h"
#include "helpers.h"
#include "server_harness.h"
#include "store/client_db.h"
#include "util/endian.h"
#include "wire/frame.h"

#define MLS_SUITE 160 /* Deliver.suite of an MlsDelivery */

static size_t receive_now(struct msv_client *c)
{
    size_t count = 0;

    c->receive_until_synced = 1; /* done once the server says all that was queued was pushed */
    assert_int_equal(msv_client_receive(c, 500, NULL, NULL, &count), MSV_OK);
    return count;
}

/* Runs check on every message of conversation that holds needle; how many there were. */
static size_t each_holding(struct msv_client *c, const char *conversation, const char *needle,
                           void (*check)(const struct msv_message_rec *, const void *),
                           const void *arg)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0, found = 0;

    assert_int_equal(msv_client_db_history(c->db, conversation, NULL, 0, &m, &n), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        if (strstr(m[i].text, needle) == NULL)
            continue;
        found++;
        check(&m[i], arg);
    }
    msv_messages_free(m, n);
    return found;
}

static void nothing_more(const struct msv_message_rec *m, const void *arg)
{
    (void)m;
    (void)arg;
}

static size_t history_count(struct msv_client *c, const char *conversation, const char *needle)
{
    return each_holding(c, conversation, needle, nothing_more, NULL);
}

static void dated_since(const struct msv_message_rec *m, const void *since)
{
    assert_in_range(m->sent_at_ms, *(const int64_t *)since, msv_wall_ms());
}

/* Every message of conversation that holds needle is dated from since to now (not 1970). */
static void assert_dated(struct msv_client *c, const char *conversation, const char *needle,
                         int64_t since)
{
    assert_true(each_holding(c, conversation, needle, dated_since, &since) > 0);
}

struct sent_by {
    const char *sender;
    uint64_t device;
};

static void sent_by(const struct msv_message_rec *m, const void *arg)
{
    const struct sent_by *by = arg;

    assert_string_equal(m->sender, by->sender);
    assert_int_equal(m->sender_device, by->device);
}

/* The sender of the one message of conversation that holds needle. */
static void assert_sent_by(struct msv_client *c, const char *conversation, const char *needle,
                           const char *sender, uint64_t device)
{
    struct sent_by by = {sender, device};

    assert_int_equal(each_holding(c, conversation, needle, sent_by, &by), 1);
}

/* r1, then r2, receive, and each holds the one message of conversation that holds needle, sent
 * by sender's device. */
static void both_read(struct msv_client *r1, struct msv_client *r2, const char *conversation,
                      const char *needle, const char *sender, uint64_t device)
{
    receive_now(r1);
    receive_now(r2);
    assert_sent_by(r1, conversation, needle, sender, device);
    assert_sent_by(r2, conversation, needle, sender, device);
}

/* Runs SQL on the server's database. */
static void server_sql(struct test_server *s, const char *sql)
{
    char path[160], *msg = NULL;
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* The server hands out no KeyPackage of c's device (those it holds now are gone). */
static void drop_key_packages(struct test_server *s, const struct msv_client *c)
{
    char sql[120];

    snprintf(sql, sizeof(sql), "DELETE FROM mls_key_packages WHERE device_id = %llu",
             (unsigned long long)c->device_id);
    server_sql(s, sql);
}

/* The MLS deliveries queued for device of kind (the last one in *out, caller frees). */
static size_t queued_mls(struct test_server *s, uint64_t device, int kind, uint8_t **out,
                         size_t *out_len)
{
    struct test_queued *rows = NULL;
    size_t n = test_server_queued(s, &rows), found = 0;

    for (size_t i = 0; i < n; i++) {
        Msv__Wire__MlsDelivery *d;

        if (rows[i].device_id != device || rows[i].suite != MLS_SUITE)
            continue;
        d = msv__wire__mls_delivery__unpack(NULL, rows[i].len, rows[i].ciphertext);
        assert_non_null(d);
        if ((int)d->kind == kind) {
            found++;
            if (out != NULL) {
                free(*out);
                *out = malloc(rows[i].len);
                memcpy(*out, rows[i].ciphertext, rows[i].len);
                *out_len = rows[i].len;
            }
        }
        msv__wire__mls_delivery__free_unpacked(d, NULL);
    }
    test_queued_free(rows, n);
    return found;
}

/* The MLS delivery wire queued again for to, from from, the server stopped meanwhile. */
static void requeue(struct test_server *s, struct msv_client *to, const struct msv_client *from,
                    const uint8_t *wire, size_t len)
{
    msv_conn_close(to->conn);
    to->conn = NULL;
    test_server_stop(s);
    test_server_enqueue(s, to->device_id, from->device_id, from->handle, MLS_SUITE, wire, len);
    test_server_start(s);
}

/* c takes one MLS delivery as if the server gave it (the notice it makes in *notice). */
static void take(struct msv_client *c, const uint8_t *d, size_t len, char notice[400])
{
    struct client_mls_in in;
    uint8_t digest[32];

    crypto_generichash(digest, sizeof(digest), d, len, NULL, 0);
    assert_int_equal(client_mls_take(c, d, len, "server's word", 1, digest, &in), MSV_OK);
    assert_null(in.pt);
    snprintf(notice, 400, "%s", in.notice);
}

/* How many of c's settings start with prefix. */
static size_t settings_count(struct msv_client *c, const char *prefix)
{
    struct msv_setting *s = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_settings(c->db, prefix, SIZE_MAX, &s, &n), MSV_OK);
    msv_settings_free(s, n);
    return n;
}

static size_t kp_kept(struct msv_client *c)
{
    return settings_count(c, "mls-kp:");
}

/*
 * What a member's patched client does: a commit of c's stored state removing device's leaf
 * (remove not 0) or adding device add with KeyPackage kp, sent to the delivery service as its
 * honest client would send one (its own state left as it was, the Welcome not sent).
 */
static void patched_commit_with(struct msv_client *c, const uint8_t gid[16], uint64_t remove,
                                const uint8_t *kp, size_t kp_len, uint64_t add, const uint8_t *ext,
                                size_t ext_len);

/* The MLS member c's stored state of group gid holds (free it with msv_mls_member_free()). */
static struct msv_mls_member *stored_member(struct msv_client *c, const uint8_t gid[16])
{
    char key[64], hex[33];
    uint8_t *v = NULL;
    size_t len = 0;
    const char *why = NULL;
    struct msv_mls_member *m = NULL;

    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "mls-group:%s", hex);
    assert_int_equal(msv_client_db_get(c->db, key, &v, &len), MSV_OK);
    assert_true(len >= 4 && msv_get_u32be(v) <= len - 4);
    assert_int_equal(msv_mls_member_load(v + 4 + msv_get_u32be(v), len - 4 - msv_get_u32be(v), NULL,
                                         0, &m, &why),
                     MSV_OK);
    msv_secret_free(v, len);
    return m;
}

static void patched_commit(struct msv_client *c, const uint8_t gid[16], uint64_t remove,
                           const uint8_t *kp, size_t kp_len, uint64_t add)
{
    patched_commit_with(c, gid, remove, kp, kp_len, add, NULL, 0);
}

/* The same, its commit setting the group context's extensions to ext too (unless NULL). */
static void patched_commit_with(struct msv_client *c, const uint8_t gid[16], uint64_t remove,
                                const uint8_t *kp, size_t kp_len, uint64_t add, const uint8_t *ext,
                                size_t ext_len)
{
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0;
    uint32_t leaf = UINT32_MAX;
    struct msv_mls_sent sent;
    const char *why = NULL;
    struct msv_mls_member *m = stored_member(c, gid);

    for (uint32_t i = 0; remove != 0 && i < m->tree.n_leaves; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const uint8_t *identity;
        size_t identity_len;
        uint64_t d = 0;

        if (x->type == 1 &&
            msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                        &d) == MSV_OK &&
            d == remove)
            leaf = i;
    }
    assert_true(remove == 0 || leaf != UINT32_MAX);
    {
        const uint8_t *kps[1] = {kp};
        struct msv_mls_commit_spec spec = {.key_packages = kps,
                                           .key_package_lens = &kp_len,
                                           .n_adds = kp != NULL,
                                           .removes = &leaf,
                                           .n_removes = remove != 0,
                                           .extensions = ext,
                                           .extensions_len = ext_len,
                                           .set_extensions = ext != NULL,
                                           .now = (uint64_t)(msv_wall_ms() / 1000)};
        struct msv_mls_send send = {.kind = MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT,
                                    .added = &add,
                                    .n_added = kp != NULL,
                                    .removed = &remove,
                                    .n_removed = remove != 0};

        assert_int_equal(msv_mls_member_commit_make(m, &spec, &commit, &commit_len, &welcome,
                                                    &welcome_len, &why),
                         MSV_OK);
        send.group_id = m->group_id;
        send.group_id_len = m->group_id_len;
        send.epoch = m->epoch;
        send.message = commit;
        send.message_len = commit_len;
        assert_int_equal(msv_client_connect(c), MSV_OK);
        if (msv_request_mls_send(c->conn, &send, 5000, &sent, &c->why) != MSV_OK)
            fail_msg("the patched commit was refused: %s", c->why.message);
    }
    msv_mls_member_free(m);
    free(commit);
    free(welcome);
}

struct club {
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t gid[16];
    char conversation[40];
};

/* The setting key prefix || hex of the club's group id, in key (80 bytes). */
static const char *club_key(const struct club *k, const char *prefix, char *key)
{
    char hex[33];

    assert_int_equal(msv_hex_encode(k->gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, 80, "%s%s", prefix, hex);
    return key;
}

/* c's setting key (len bytes) with the u64be wall ms at offset at moved back by ms. */
static void time_moved_back(struct msv_client *c, const char *key, size_t len, size_t at,
                            int64_t ms)
{
    uint8_t *v = NULL;
    size_t got = 0;

    assert_int_equal(msv_client_db_get(c->db, key, &v, &got), MSV_OK);
    assert_int_equal(got, len);
    assert_true(msv_get_u64be(v + at) != 0);
    msv_put_u64be(v + at, msv_get_u64be(v + at) - (uint64_t)ms);
    assert_int_equal(msv_client_db_set(c->db, key, v, got), MSV_OK);
    free(v);
}

/* c's next send founds the club's MLS group again (as after a member's commit it refused). */
static void founding_again_due(struct club *k, struct msv_client *c)
{
    char key[80];

    assert_int_equal(
        msv_client_db_set(c->db, club_key(k, "mls-refound:", key), (const uint8_t *)"", 0), MSV_OK);
}

/* missived's configuration for the next club (NULL: the default one). */
static const char *club_config = NULL;

/* A missived of configuration config (NULL: the default) and alice, bob and carol on it. */
static void club_people(struct club *k, const char *config)
{
    test_server_init(&k->s, config);
    test_server_start(&k->s);
    k->alice = test_client_for(&k->s, "alice", "alice@example.org");
    k->bob = test_client_for(&k->s, "bob", "bob@example.org");
    k->carol = test_client_for(&k->s, "carol", "carol@example.org");
}

/* alice's group "club" with bob and carol, on MLS, each having joined. */
/* The KeyPackage of c's device the server would hand out last: its last-resort one. */
static uint8_t *last_resort_kp(struct test_server *s, const struct msv_client *c, size_t *len)
{
    char path[160], sql[160];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    uint8_t *kp = NULL;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    snprintf(sql, sizeof(sql),
             "SELECT kp FROM mls_key_packages WHERE device_id = %llu AND last_resort = 1",
             (unsigned long long)c->device_id);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *len = (size_t)sqlite3_column_bytes(st, 0);
    kp = malloc(*len);
    assert_non_null(kp);
    memcpy(kp, sqlite3_column_blob(st, 0), *len);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return kp;
}

/*
 * club_on_mls; with bob_kp, bob's device is added from its last-resort KeyPackage (the server
 * holds no other of it), whose bytes go to *bob_kp (caller frees).
 */
static void club_on_mls_with(struct club *k, uint8_t **bob_kp, size_t *bob_kp_len)
{
    const char *two[2] = {"bob@example.org", "carol@example.org"};
    size_t bob_kps;

    club_people(k, club_config);
    bob_kps = kp_kept(k->bob);
    if (bob_kp != NULL) {
        char sql[120];

        snprintf(sql, sizeof(sql),
                 "DELETE FROM mls_key_packages WHERE device_id = %llu AND last_resort = 0",
                 (unsigned long long)k->bob->device_id);
        server_sql(&k->s, sql);
        *bob_kp = last_resort_kp(&k->s, k->bob, bob_kp_len);
    }
    assert_int_equal(msv_client_group_create(k->alice, "club", two, 2, k->gid), MSV_OK);
    msv_client_group_conversation(k->gid, k->conversation);
    assert_true(client_mls_is_on(k->alice, k->gid));
    /* the Welcome follows the signed group change that tells of the group */
    assert_int_equal(
        queued_mls(&k->s, k->bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    assert_int_equal(receive_now(k->bob), 1);
    assert_int_equal(receive_now(k->carol), 1);
    assert_true(client_mls_is_on(k->bob, k->gid));
    assert_true(client_mls_is_on(k->carol, k->gid));
    /* the KeyPackage's private part is gone once used (a last-resort one's is kept) */
    if (bob_kp == NULL)
        assert_int_equal(kp_kept(k->bob), bob_kps - 1);
    assert_int_equal(msv_client_group_accept(k->bob, k->conversation), MSV_OK);
    assert_int_equal(msv_client_group_accept(k->carol, k->conversation), MSV_OK);
}

static void club_on_mls(struct club *k)
{
    club_on_mls_with(k, NULL, NULL);
}

/* A device of owner's account linked by password, owner having received its request. */
static struct msv_client *link_waiting(struct test_server *s, struct msv_client *owner,
                                       const char *name)
{
    struct msv_client *d = NULL;
    uint8_t fp[32];
    char dir[128];

    snprintf(dir, sizeof(dir), "%s/%s", s->dir, name);
    assert_int_equal(msv_client_create(dir, owner->handle, "127.0.0.1", s->port, MSV_SUITE_MODERN,
                                       0, NULL, fp, &d),
                     MSV_OK);
    assert_int_equal(msv_client_link(d, TEST_PASSWORD), MSV_OK);
    receive_now(owner); /* the request to join, whose key the approval signs */
    return d;
}

/*
 * A device of owner's account, linked by password and approved by owner, its keys published
 * and owner's groups taken from the copies the approval sent.
 */
static struct msv_client *linked_device(struct test_server *s, struct msv_client *owner,
                                        const char *name)
{
    struct msv_client *d = link_waiting(s, owner, name);

    assert_int_equal(msv_client_approve_device(owner, d->device_id), MSV_OK);
    assert_string_equal(owner->why.message, "");
    receive_now(d); /* its groups, its keys published, its KeyPackages too */
    assert_true(kp_kept(d) > 0);
    return d;
}

static size_t joins_waiting(struct msv_client *c)
{
    return settings_count(c, "mls-join:");
}

/* The club on MLS, and alice's change removing carol made. */
/* bob writes to the club while the server is out of reach: the message waits in his outbox;
 * then the server is back (the others' connections, ended by its restart, are the caller's). */
static void bob_writes_while_away(struct club *k, const char *text)
{
    uint8_t id[16];

    test_server_stop(&k->s);
    msv_conn_close(k->bob->conn);
    k->bob->conn = NULL;
    assert_int_equal(msv_client_group_send(k->bob, "club", text, NULL, 0, NULL, id), MSV_ERR_IO);
    test_server_start(&k->s);
}

static void club_carol_removed(struct club *k)
{
    const char *carol_only[1] = {"carol@example.org"};

    club_on_mls(k);
    assert_int_equal(msv_client_group_change(k->alice, "club", NULL, NULL, 0, carol_only, 1),
                     MSV_OK);
}

static void club_free(struct club *k)
{
    msv_client_close(k->alice);
    msv_client_close(k->bob);
    msv_client_close(k->carol);
    test_server_cleanup(&k->s);
}

/*
 * A message goes as one application message (one copy per other device, all MLS), is read by
 * each member and named by the sender's leaf; a reply goes back the same way.
 */
static void test_create_join_and_talk(void **state)
{
    struct club k;
    uint8_t id[16], *msg = NULL;
    size_t len = 0;

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_send(k.alice, "club", "hello on mls", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, &msg, &len),
        1);
    assert_int_equal(receive_now(k.bob), 1);
    assert_int_equal(receive_now(k.carol), 1);
    assert_sent_by(k.bob, k.conversation, "hello on mls", "alice@example.org", k.alice->device_id);
    /* delivered again (its acknowledgement lost, say): nothing new, nothing unreadable */
    requeue(&k.s, k.bob, k.alice, msg, len);
    msv_conn_close(k.alice->conn);
    k.alice->conn = NULL;
    msv_conn_close(k.carol->conn);
    k.carol->conn = NULL;
    assert_int_equal(receive_now(k.bob), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 0);
    assert_int_equal(history_count(k.bob, k.alice->handle, "could not be read"), 0);
    free(msg);
    assert_sent_by(k.carol, k.conversation, "hello on mls", "alice@example.org",
                   k.alice->device_id);
    assert_int_equal(msv_client_reply(k.bob, id, k.conversation, "and back", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(receive_now(k.alice), 1);
    assert_int_equal(receive_now(k.carol), 1);
    assert_sent_by(k.alice, k.conversation, "and back", "bob@example.org", k.bob->device_id);
    assert_sent_by(k.carol, k.conversation, "and back", "bob@example.org", k.bob->device_id);
    club_free(&k);
}

/* A device with no KeyPackage keeps the group on per-device copies, and the creator is told. */
static void test_no_key_package_told(void **state)
{
    const char *one[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob;
    uint8_t gid[16], id[16];
    char conversation[40];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", "bob@example.org");
    drop_key_packages(&s, bob);
    assert_int_equal(msv_client_group_create(alice, "pair", one, 1, gid), MSV_OK);
    msv_client_group_conversation(gid, conversation);
    assert_false(client_mls_is_on(alice, gid));
    assert_int_equal(history_count(alice, conversation,
                                   "this group stays on per-device encryption, not MLS: 1 "
                                   "device cannot join it (bob@example.org's device"),
                     1);
    assert_int_equal(receive_now(bob), 1);
    assert_int_equal(msv_client_group_send(alice, "pair", "still per device", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(receive_now(bob), 1);
    assert_sent_by(bob, conversation, "still per device", "alice@example.org", alice->device_id);
    msv_client_close(alice);
    msv_client_close(bob);
    test_server_cleanup(&s);
}

/*
 * alice removes carol: the commit removes carol's leaf, bob follows it, and the next message,
 * given to carol's state all the same, cannot be read there.
 */
static void test_removed_cannot_read(void **state)
{
    const char *carol_only[1] = {"carol@example.org"};
    struct club k;
    uint8_t id[16], *msg = NULL;
    size_t len = 0;
    char notice[400];

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_change(k.alice, "club", NULL, NULL, 0, carol_only, 1),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 1);
    receive_now(k.bob);
    assert_int_equal(msv_client_group_send(k.alice, "club", "after carol", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        0);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, &msg, &len),
        1);
    take(k.carol, msg, len, notice);
    assert_non_null(strstr(notice, "could not be read"));
    assert_int_equal(receive_now(k.bob), 1);
    assert_sent_by(k.bob, k.conversation, "after carol", "alice@example.org", k.alice->device_id);
    free(msg);
    club_free(&k);
}

/*
 * A dishonest server: a Welcome for a group bob was never told of is refused (and he joins once
 * told); a commit given again is not applied twice. A hostile member: alice's patched client
 * adds mallory, whom the group's signed state does not name: bob refuses the commit, and his
 * state stays at its epoch.
 */
static void test_attacks_told(void **state)
{
    const char *one[1] = {"bob@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *mallory;
    uint8_t gid[16], id[16], *welcome = NULL, *commit = NULL;
    size_t welcome_len = 0, commit_len = 0;
    char conversation[40], notice[400];
    int64_t started = msv_wall_ms();

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", "bob@example.org");
    mallory = test_client_for(&s, "mallory", "mallory@example.org");
    assert_int_equal(msv_client_group_create(alice, "pair", one, 1, gid), MSV_OK);
    msv_client_group_conversation(gid, conversation);
    assert_int_equal(queued_mls(&s, bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, &welcome,
                                &welcome_len),
                     1);
    take(bob, welcome, welcome_len, notice);
    assert_string_equal(notice, "a Welcome to an MLS group this device was never told of was "
                                "refused");
    assert_false(client_mls_is_on(bob, gid));
    receive_now(bob);
    assert_true(client_mls_is_on(bob, gid));
    take(bob, welcome, welcome_len, notice);
    assert_string_equal(notice, "a Welcome to an MLS group this device is in already was ignored");

    /* alice's client, patched, names mallory a member without a signed change */
    assert_int_equal(msv_client_db_group_put(alice->db, gid, "pair",
                                             "alice@example.org\nbob@example.org\n"
                                             "mallory@example.org\n",
                                             1, msv_wall_ms()),
                     MSV_OK);
    assert_int_equal(client_mls_sync(alice, gid, 0), MSV_OK);
    assert_int_equal(
        queued_mls(&s, bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, &commit, &commit_len),
        1);
    take(bob, commit, commit_len, notice);
    assert_non_null(strstr(notice, "was refused, nothing changed"));
    assert_non_null(strstr(notice, "which no member has"));
    /* bob stays at the epoch before: a message of the epoch after cannot be read */
    assert_int_equal(msv_client_group_send(alice, "pair", "mallory listens", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(bob);
    assert_int_equal(history_count(bob, conversation, "mallory listens"), 0);
    /* told once, from the copy the queue brought (the direct take above told nobody): the
     * log's copy, read for the message after it, is refused again, and not told again */
    assert_int_equal(history_count(bob, conversation, "which no member has"), 1);
    assert_int_equal(history_count(bob, conversation, "could not be read"), 1);
    assert_dated(bob, conversation, "could not be read", started);
    /* the commit given again: looked at again, and not applied */
    take(bob, commit, commit_len, notice);
    assert_non_null(strstr(notice, "was refused, nothing changed"));
    assert_int_equal(msv_client_group_send(alice, "pair", "still not read", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(bob);
    assert_int_equal(history_count(bob, conversation, "still not read"), 0);
    free(welcome);
    free(commit);
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(mallory);
    test_server_cleanup(&s);
}

/*
 * carol, no admin, has her patched client commit bob's removal: the server takes it (it cannot
 * read it) and drops bob from its list, but alice refuses it (its committer is no admin), and
 * bob cannot follow it. alice's next message founds the group again (its next generation):
 * bob and carol join from alice's Welcome and read it.
 */
static void test_non_admin_commit_refused_and_refounded(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    /* her own client makes no such commit: it leaves removals to the admins */
    assert_int_equal(msv_client_db_group_put(k.carol->db, k.gid, "club",
                                             "alice@example.org\ncarol@example.org\n", 1,
                                             msv_wall_ms()),
                     MSV_OK);
    assert_int_equal(client_mls_sync(k.carol, k.gid, 0), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 0);
    assert_int_equal(msv_client_db_group_put(k.carol->db, k.gid, "club",
                                             "alice@example.org\nbob@example.org\n"
                                             "carol@example.org\n",
                                             1, msv_wall_ms()),
                     MSV_OK);
    /* a patched one does */
    patched_commit(k.carol, k.gid, k.bob->device_id, NULL, 0, 0);
    receive_now(k.alice);
    assert_int_equal(history_count(k.alice, k.conversation, "its committer is no admin"), 1);
    receive_now(k.bob);
    assert_int_equal(history_count(k.bob, k.conversation, "did not verify"), 1);
    assert_int_equal(msv_client_group_send(k.alice, "club", "founded again", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(receive_now(k.bob), 1);
    assert_int_equal(receive_now(k.carol), 1);
    assert_sent_by(k.bob, k.conversation, "founded again", "alice@example.org", k.alice->device_id);
    assert_sent_by(k.carol, k.conversation, "founded again", "alice@example.org",
                   k.alice->device_id);
    club_free(&k);
}

/*
 * carol, no admin, patches her client to remove bob's device and add it again from the very
 * KeyPackage its leaf came from: the tree is as it was, but bob's device is cut out of the
 * epochs that follow (its KeyPackage's init key is spent). alice refuses it as a removal by no
 * admin. Before, her client saw no leaf changed and took it, and bob read nothing more.
 */
static void test_leaf_put_back_is_a_removal(void **state)
{
    struct club k;
    uint8_t *kp = NULL, id[16];
    size_t kp_len = 0;
    msv_frame *f = NULL;
    char sql[120];

    (void)state;
    club_on_mls_with(&k, &kp, &kp_len);
    /* carol claims a KeyPackage of bob's device, as an add needs (the delivery service's
     * rule): his last-resort one again, the one his leaf came from */
    snprintf(sql, sizeof(sql),
             "DELETE FROM mls_key_packages WHERE device_id = %llu AND last_resort = 0",
             (unsigned long long)k.bob->device_id);
    server_sql(&k.s, sql);
    assert_int_equal(msv_client_connect(k.carol), MSV_OK);
    assert_int_equal(
        msv_request_mls_claim(k.carol->conn, "bob@example.org", 5000, &f, &k.carol->why), MSV_OK);
    msv_frame_free(f);
    patched_commit(k.carol, k.gid, k.bob->device_id, kp, kp_len, k.bob->device_id);
    receive_now(k.alice);
    assert_int_equal(history_count(k.alice, k.conversation, "its committer is no admin"), 1);
    /* and bob still reads what alice writes */
    assert_int_equal(msv_client_group_send(k.alice, "club", "still read", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "still read", "alice@example.org", k.alice->device_id);
    free(kp);
    club_free(&k);
}

/*
 * Two processes of alice's account send to the group at once, each from its own client: the
 * MLS lock serialises their use of the state, so no key is used twice and bob reads all of
 * them (without it, two that loaded one state would seal with the same generation, and one of
 * the two be lost; the window is narrow, and this test does not always hit it).
 */
static void test_two_processes_one_state(void **state)
{
    struct club k;
    struct msv_client *again = NULL;
    uint8_t id[16];
    char text[64];
    pid_t pid;
    int status = 0;

    (void)state;
    club_on_mls(&k);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int bad = msv_client_open(k.alice->dir, NULL, &again) != MSV_OK;

        for (int i = 0; !bad && i < 10; i++) {
            snprintf(text, sizeof(text), "from the second process %d", i);
            bad = msv_client_group_send(again, "club", text, NULL, 0, NULL, id) != MSV_OK;
        }
        _exit(bad);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof(text), "from the first process %d", i);
        assert_int_equal(msv_client_group_send(k.alice, "club", text, NULL, 0, NULL, id), MSV_OK);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    while (receive_now(k.bob) > 0)
        ;
    assert_int_equal(history_count(k.bob, k.conversation, "from the first process"), 10);
    assert_int_equal(history_count(k.bob, k.conversation, "from the second process"), 10);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 0);
    club_free(&k);
}

static int downloads; /* in a receiver_of process */

static void count_download(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    downloads += total > 0 && done == total;
}

/* A process of c's account that receives until 3 s bring nothing; its exit status: 10 + the
 * attachments it fetched, or less if it failed. */
static pid_t receiver_of(const struct msv_client *c)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        struct msv_client *again = NULL;
        size_t n = 0;
        msv_err err;

        if (msv_client_open(c->dir, NULL, &again) != MSV_OK)
            _exit(1);
        again->on_download = count_download;
        err = msv_client_receive(again, 3000, NULL, NULL, &n);
        msv_client_close(again);
        _exit(err == MSV_OK || err == MSV_ERR_IO ? 10 + downloads : 2); /* IO: replaced */
    }
    return pid;
}

/*
 * Two processes of bob's (a receive, then a second one whose connection replaces the first's)
 * get the same MLS delivery, the first one before it could acknowledge it: it is taken once,
 * its attachment fetched once (under the MLS lock, the second finds it read, or kept by the
 * first, whose connection is gone).
 */
static void test_two_receivers_take_mls_once(void **state)
{
    static const uint8_t photo[3000] = {1, 2, 3};
    const struct msv_file file = {"photo.bin", "application/octet-stream", photo, sizeof(photo)};
    struct club k;
    uint8_t id[16];
    char path[1100];
    pid_t first, second;
    int fd, status = 0, fetched = 0;

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_send(k.alice, "club", "only once", &file, 1, NULL, id),
                     MSV_OK);
    msv_conn_close(k.bob->conn);
    k.bob->conn = NULL;
    snprintf(path, sizeof(path), "%s/mls.lock", k.bob->dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    first = receiver_of(k.bob);
    usleep(1500 * 1000); /* the first has the delivery, and waits for the lock */
    /* the second goes past the deliveries lock the first's connection holds (as one made under
     * the MLS lock does): its file is made again */
    snprintf(path, sizeof(path), "%s/deliveries.lock", k.bob->dir);
    assert_int_equal(unlink(path), 0);
    second = receiver_of(k.bob);
    usleep(1500 * 1000); /* the second too, its connection replacing the first's */
    assert_int_equal(flock(fd, LOCK_UN), 0);
    close(fd);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(waitpid(i == 0 ? first : second, &status, 0), i == 0 ? first : second);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) >= 10);
        fetched += WEXITSTATUS(status) - 10;
    }
    assert_int_equal(fetched, 1); /* its attachment, once */
    assert_int_equal(history_count(k.bob, k.conversation, "only once"), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be"), 0);
    assert_int_equal(history_count(k.bob, k.alice->handle, "could not be"), 0);
    assert_int_equal(receive_now(k.bob), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be"), 0);
    club_free(&k);
}

/* Notices of one kind told, and a second process of the same account run within the first. */
struct nested_taker {
    struct msv_client *first;
    enum msv_incoming_kind kind;
    int told, nested, nested_err;
};

static void count_kind(void *ctx, const struct msv_incoming *in)
{
    struct nested_taker *t = ctx;

    t->told += in->kind == t->kind;
}

static void take_within(void *ctx, const struct msv_incoming *in)
{
    struct nested_taker *t = ctx;
    struct msv_client *again = NULL;
    char path[sizeof(again->dir) + 32];
    size_t n = 0;

    if (in->kind != t->kind)
        return;
    t->told++;
    if (t->nested++ > 0)
        return;
    /* while the first tells of it (taken, its delivery not yet recorded or acknowledged), a
     * second process starts a receive: it finds the message stored and not yet shown, and,
     * its connection replacing the first's, is offered the delivery again. It goes past the
     * deliveries lock the first's connection holds (as one under the MLS lock does): its file
     * is made again */
    snprintf(path, sizeof(path), "%s/deliveries.lock", t->first->dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(msv_client_open(t->first->dir, NULL, &again), MSV_OK);
    again->receive_until_synced = 1;
    again->mls_in_wait_ms = 500; /* the first holds its claim until this receive is over */
    t->nested_err = msv_client_receive(again, 500, count_kind, t, &n);
    msv_client_close(again);
}

/*
 * A second process of bob's that gets an MLS delivery while the first is taking what it gave
 * leaves it to the first: a typing notice (a control payload, applied and told) is told once,
 * and a message once. Before, the second took the typing notice kept for it as well, and told
 * it again; and showed the message the first was showing (stored, marked to be shown).
 */
static void test_kept_mls_payload_taken_once(void **state)
{
    static const enum msv_incoming_kind kinds[2] = {MSV_INCOMING_TYPING, MSV_INCOMING_MESSAGE};
    struct club k;
    uint8_t id[16];
    size_t n = 0;

    (void)state;
    club_on_mls(&k);
    for (int i = 0; i < 2; i++) {
        struct nested_taker t = {.first = k.bob, .kind = kinds[i]};
        msv_err err;

        if (i == 0)
            assert_int_equal(msv_client_typing(k.alice, k.conversation), MSV_OK);
        else
            assert_int_equal(
                msv_client_group_send(k.alice, "club", "shown once", NULL, 0, NULL, id), MSV_OK);
        k.bob->receive_until_synced = 1;
        err = msv_client_receive(k.bob, 500, take_within, &t, &n);
        /* the first's connection was replaced by the second's: it may find it gone */
        assert_true(err == MSV_OK || err == MSV_ERR_IO);
        assert_int_equal(t.nested, 1);
        assert_int_equal(t.nested_err, MSV_OK);
        assert_int_equal(t.told, 1);
        /* and nothing is left to take: a later receive tells nothing more (one of a new
         * program: the first, its connection replaced, takes none again while it runs) */
        msv_conn_close(k.bob->conn);
        k.bob->conn = NULL;
        free(k.bob->deliveries_taken);
        k.bob->deliveries_taken = NULL;
        t.told = 0;
        k.bob->receive_until_synced = 1;
        assert_int_equal(msv_client_receive(k.bob, 500, count_kind, &t, &n), MSV_OK);
        assert_int_equal(t.told, 0);
    }
    assert_int_equal(history_count(k.bob, k.conversation, "shown once"), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be"), 0);
    club_free(&k);
}

/* Messages told whose text holds ctx's needle (a struct told_text). */
struct told_text {
    const char *needle;
    int told;
};

static void count_text(void *ctx, const struct msv_incoming *in)
{
    struct told_text *t = ctx;

    t->told += in->kind == MSV_INCOMING_MESSAGE && strstr(in->message->text, t->needle) != NULL;
}

/*
 * A message bob's send reads on its way (alice's, queued behind the commit his send has to
 * read first) is told once: with an owner (the daemon: on_incoming), to it there; with none,
 * by his next receive. Before, it was marked shown there, told to nobody, and no receive ever
 * told it.
 */
static void read_within_a_send(int owner)
{
    struct club k;
    struct told_text t = {"after the change", 0};
    uint8_t id[16];
    size_t n = 0;

    club_carol_removed(&k);
    assert_int_equal(msv_client_group_send(k.alice, "club", "after the change", NULL, 0, NULL, id),
                     MSV_OK);
    if (owner) {
        k.bob->on_incoming = count_text;
        k.bob->incoming_ctx = &t;
    }
    assert_int_equal(msv_client_group_send(k.bob, "club", "crossing", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(history_count(k.bob, k.conversation, "after the change"), 1);
    assert_int_equal(t.told, owner ? 1 : 0);
    for (int i = 0; i < 2; i++) {
        k.bob->receive_until_synced = 1;
        assert_int_equal(msv_client_receive(k.bob, 500, count_text, &t, &n), MSV_OK);
        assert_int_equal(t.told, 1); /* once */
    }
    k.bob->on_incoming = NULL;
    k.bob->incoming_ctx = NULL;
    club_free(&k);
}

static void test_message_read_within_a_send_shown_later(void **state)
{
    (void)state;
    read_within_a_send(0);
}

static void test_message_read_within_a_send_told_to_the_owner(void **state)
{
    (void)state;
    read_within_a_send(1);
}

/*
 * The same within a receive: bob's group message, queued while the server was out of reach and
 * held back by a connection made under the session lock, goes as his next receive begins; the
 * group moved on meanwhile (alice removed carol, then wrote), so it reads the commit and alice's
 * message first. That receive shows alice's message. Before, it was marked shown unseen.
 */
static void test_message_read_within_a_flush_shown(void **state)
{
    const char *carol_only[1] = {"carol@example.org"};
    struct club k;
    struct told_text t = {"while bob was away", 0};
    uint8_t id[16];
    size_t n = 0;

    (void)state;
    club_on_mls(&k);
    bob_writes_while_away(&k, "written away");
    msv_conn_close(k.alice->conn); /* the server's restart ended it */
    k.alice->conn = NULL;
    assert_int_equal(msv_client_group_change(k.alice, "club", NULL, NULL, 0, carol_only, 1),
                     MSV_OK);
    assert_int_equal(
        msv_client_group_send(k.alice, "club", "while bob was away", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(client_sessions_hold(k.bob), MSV_OK);
    assert_int_equal(msv_client_connect(k.bob), MSV_OK);
    client_sessions_release(k.bob);
    assert_true(k.bob->outbox_deferred);
    k.bob->receive_until_synced = 0;
    assert_int_equal(msv_client_receive(k.bob, 500, count_text, &t, &n), MSV_OK);
    assert_false(k.bob->outbox_deferred);
    assert_int_equal(t.told, 1);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "written away", "bob@example.org", k.bob->device_id);
    club_free(&k);
}

/*
 * Self-updates: bob (no admin) commits an update of his leaf before his third message (every two
 * messages here), alice before her next one once her last commit is over 7 days old; the others
 * follow both commits and read every message.
 */
static void test_self_updates(void **state)
{
    struct club k;
    uint8_t id[16], old[8];
    char text[64], key[80];

    (void)state;
    club_on_mls(&k);
    k.bob->mls_update_messages = 2;
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof(text), "bob's message %d", i);
        assert_int_equal(msv_client_group_send(k.bob, "club", text, NULL, 0, NULL, id), MSV_OK);
    }
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 1);
    club_key(&k, "mls-updated:", key);
    msv_put_u64be(old, (uint64_t)(msv_wall_ms() / 1000) - 8 * 86400);
    assert_int_equal(msv_client_db_set(k.alice->db, key, old, sizeof(old)), MSV_OK);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "alice's, updated", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 2);
    receive_now(k.carol);
    receive_now(k.bob);
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof(text), "bob's message %d", i);
        assert_sent_by(k.alice, k.conversation, text, "bob@example.org", k.bob->device_id);
        assert_sent_by(k.carol, k.conversation, text, "bob@example.org", k.bob->device_id);
    }
    assert_sent_by(k.carol, k.conversation, "alice's, updated", "alice@example.org",
                   k.alice->device_id);
    assert_sent_by(k.bob, k.conversation, "alice's, updated", "alice@example.org",
                   k.alice->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "could not be read"), 0);
    assert_int_equal(history_count(k.carol, k.conversation, "refused"), 0);
    club_free(&k);
}

/* c's setting prefix || the club's group id set to v (u64be), then zeros to len bytes (at most
 * 16). */
static void club_put(struct club *k, struct msv_client *c, const char *prefix, uint64_t v,
                     size_t len)
{
    uint8_t value[16] = {0};
    char key[80];

    msv_put_u64be(value, v);
    assert_int_equal(msv_client_db_set(c->db, club_key(k, prefix, key), value, len), MSV_OK);
}

/* c's "mls-updated:" record of the club: its last commit 8 days ago (its update due). */
static void updated_long_ago(struct club *k, struct msv_client *c)
{
    club_put(k, c, "mls-updated:", (uint64_t)(msv_wall_ms() / 1000) - 8 * 86400, 8);
}

/*
 * bob only reads the club: once his leaf's update is due his receive commits it (else a device
 * that never writes would keep its first leaf key for good: no post-compromise security for
 * it), and the others follow.
 */
static void test_reader_renews_its_leaf(void **state)
{
    struct club k;
    uint8_t id[16];
    char key[80];

    (void)state;
    club_on_mls(&k);
    updated_long_ago(&k, k.bob);
    receive_now(k.bob);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 1);
    assert_int_equal(settings_count(k.bob, "mls-key-by:"), 0);
    assert_true(client_counter(k.bob, club_key(&k, "mls-updated:", key)) + 60 >=
                (uint64_t)(msv_wall_ms() / 1000));
    assert_int_equal(msv_client_mls_keyings_made(k.bob), 1);
    assert_int_equal(msv_client_mls_keyings_put_off(k.bob), 0);
    /* not again at the next receive */
    receive_now(k.bob);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 1);
    receive_now(k.alice);
    receive_now(k.carol);
    assert_int_equal(
        msv_client_group_send(k.alice, "club", "after bob's update", NULL, 0, NULL, id), MSV_OK);
    both_read(k.bob, k.carol, k.conversation, "after bob's update", "alice@example.org",
              k.alice->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "refused"), 0);
    club_free(&k);
}

/* Every record of prefix in c's state unset. */
static void settings_unset(struct msv_client *c, const char *prefix)
{
    struct msv_setting *s = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_settings(c->db, prefix, SIZE_MAX, &s, &n), MSV_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(msv_client_db_unset(c->db, s[i].key), MSV_OK);
    msv_settings_free(s, n);
}

/*
 * When bob's first commit owed from a receive falls due, which an owner that receives only
 * when pushed waits for: his leaf's renewal (the period and his offset after his last commit),
 * or a record's time; a record stands for its group's renewal; one set further ahead than any
 * wait (the clock went back) is due now; none, never.
 */
static void test_keys_next_says_when(void **state)
{
    struct club k;
    int64_t now, t = msv_wall_ms() / 1000 - 2 * 86400;

    (void)state;
    club_on_mls(&k);
    settings_unset(k.bob, "mls-key-by:");
    k.bob->mls_update_s = 7; /* a seventh of it: no offset */
    club_put(&k, k.bob, "mls-updated:", (uint64_t)t, 8);
    assert_int_equal(msv_client_mls_keys_next(k.bob), (t + 7) * 1000);
    k.bob->mls_update_s = 0; /* a week, and an offset within a day */
    assert_true(msv_client_mls_keys_next(k.bob) >= (t + 7 * 86400) * 1000);
    assert_true(msv_client_mls_keys_next(k.bob) < (t + 8 * 86400) * 1000);
    /* a record stands for the group's renewal, earlier or later */
    now = msv_wall_ms();
    club_put(&k, k.bob, "mls-key-by:", (uint64_t)(now + 5000), 10);
    assert_int_equal(msv_client_mls_keys_next(k.bob), now + 5000);
    k.bob->mls_update_s = 7;
    club_put(&k, k.bob, "mls-key-by:", (uint64_t)(now + 86400 * 1000LL), 10);
    assert_int_equal(msv_client_mls_keys_next(k.bob), now + 86400 * 1000LL);
    /* three days ahead: the clock went back */
    club_put(&k, k.bob, "mls-key-by:", (uint64_t)(now + 3 * 86400 * 1000LL), 10);
    assert_true(msv_client_mls_keys_next(k.bob) <= msv_wall_ms());
    settings_unset(k.bob, "mls-key-by:");
    settings_unset(k.bob, "mls-updated:");
    assert_int_equal(msv_client_mls_keys_next(k.bob), INT64_MAX);
    club_free(&k);
}

/*
 * An update due while the delivery service is past bob's epoch (a commit of alice's, his copy of
 * it gone from his queue): refused as stale, it is tried again a quarter of an hour later, not
 * at every receive.
 */
static void test_failed_update_backs_off(void **state)
{
    struct club k;
    uint8_t *v = NULL;
    size_t len = 0;
    char key[80], sql[120];

    (void)state;
    club_on_mls(&k);
    patched_commit(k.alice, k.gid, 0, NULL, 0, 0);
    msv_conn_close(k.bob->conn);
    k.bob->conn = NULL;
    test_server_stop(&k.s);
    snprintf(sql, sizeof(sql), "DELETE FROM queue WHERE device_id = %llu",
             (unsigned long long)k.bob->device_id);
    server_sql(&k.s, sql);
    test_server_start(&k.s);
    updated_long_ago(&k, k.bob);
    for (int i = 0; i < 3; i++) {
        receive_now(k.bob);
        assert_int_equal(
            queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL),
            1);
        assert_int_equal(msv_client_db_get(k.bob->db, club_key(&k, "mls-key-by:", key), &v, &len),
                         MSV_OK);
        assert_int_equal(len, 10);
        assert_int_equal(v[8], 1); /* the regular update */
        assert_int_equal(v[9], 1); /* one try failed */
        assert_true((int64_t)msv_get_u64be(v) > msv_wall_ms() + 14 * 60 * 1000);
        assert_int_equal(msv_client_mls_keyings_put_off(k.bob), 1);
        assert_int_equal(msv_client_mls_keyings_made(k.bob), 0);
        free(v);
        v = NULL;
    }
    club_free(&k);
}

/*
 * carol left the club, and no admin's device has committed her removal yet: her leaf's update
 * falling due makes no commit of hers (every member would refuse one from a leaf of no member,
 * and an admin's device would found the group again), nor a record of one owed.
 */
static void test_left_member_renews_nothing(void **state)
{
    struct club k;

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_leave(k.carol, k.conversation), MSV_OK);
    updated_long_ago(&k, k.carol);
    receive_now(k.carol);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 0);
    assert_int_equal(settings_count(k.carol, "mls-key-by:"), 0);
    /* nor is one said to be due (an owner would wake for it in vain) */
    assert_true(msv_client_mls_keys_next(k.carol) > msv_wall_ms());
    receive_now(k.carol);
    assert_int_equal(settings_count(k.carol, "mls-key-by:"), 0);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 0);
    club_free(&k);
}

/* Whether some node of the direct path of leaf i of m's tree resolves to more than one node
 * (test_mls_group checks the rule itself on known trees). */
static int leaf_path_unkeyed(const struct msv_mls_member *m, uint32_t i)
{
    return msv_mls_tree_path_unkeyed(&m->tree, i);
}

/*
 * alice founds a group of five devices: its tree has eight leaves, and the parent of leaves 2 and
 * 3 is blank (her founding commit keys her own path alone), so any commit encrypts to both. One
 * of the two keys it, once, from the end of its receive (the other, finding it keyed, does not);
 * then no leaf's path has a node resolving to more than one, and the group talks on.
 */
static void joiners_key(int renewal_owed)
{
    struct club k;
    struct msv_client *dave, *erin, *all[5];
    const char *four[4] = {"bob@example.org", "carol@example.org", "dave@example.org",
                           "erin@example.org"};
    uint8_t id[16];

    club_people(&k, NULL);
    dave = test_client_for(&k.s, "dave", "dave@example.org");
    erin = test_client_for(&k.s, "erin", "erin@example.org");
    all[0] = k.alice, all[1] = k.bob, all[2] = k.carol, all[3] = dave, all[4] = erin;
    for (int i = 0; i < 5; i++)
        all[i]->mls_key_spread_ms = 1;
    assert_int_equal(msv_client_group_create(k.alice, "club", four, 4, k.gid), MSV_OK);
    msv_client_group_conversation(k.gid, k.conversation);
    {
        struct msv_mls_member *m = stored_member(k.alice, k.gid);

        assert_int_equal(m->tree.n_leaves, 8);
        assert_true(leaf_path_unkeyed(m, 2) && leaf_path_unkeyed(m, 3));
        msv_mls_member_free(m);
    }
    for (int i = 1; i < 5 && renewal_owed; i++) {
        uint8_t v[10] = {0};
        char key[80];

        msv_put_u64be(v, (uint64_t)(msv_wall_ms() - 1000));
        v[8] = 1; /* the regular update */
        v[9] = 1; /* tried once */
        assert_int_equal(msv_client_db_set(all[i]->db, club_key(&k, "mls-key-by:", key), v, 10),
                         MSV_OK);
    }
    for (int i = 1; i < 5; i++) {
        receive_now(all[i]);
        assert_true(client_mls_is_on(all[i], k.gid));
        assert_int_equal(msv_client_group_accept(all[i], k.conversation), MSV_OK);
    }
    assert_int_equal(
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 1);
    for (int i = 0; i < 5; i++)
        receive_now(all[i]);
    for (int i = 0; i < 5; i++) {
        struct msv_mls_member *m = stored_member(all[i], k.gid);

        assert_int_equal(m->epoch, 2);
        for (uint32_t leaf = 0; leaf < 5; leaf++)
            assert_false(leaf_path_unkeyed(m, leaf));
        msv_mls_member_free(m);
        assert_int_equal(settings_count(all[i], "mls-key-by:"), 0);
    }
    assert_int_equal(msv_client_group_send(k.alice, "club", "on a keyed tree", NULL, 0, NULL, id),
                     MSV_OK);
    for (int i = 1; i < 5; i++) {
        receive_now(all[i]);
        assert_sent_by(all[i], k.conversation, "on a keyed tree", "alice@example.org",
                       k.alice->device_id);
    }
    /* and no commit more */
    receive_now(k.alice);
    {
        struct msv_mls_member *m = stored_member(k.alice, k.gid);

        assert_int_equal(m->epoch, 2);
        msv_mls_member_free(m);
    }
    msv_client_close(dave);
    msv_client_close(erin);
    club_free(&k);
}

static void test_joiners_key_their_paths(void **state)
{
    (void)state;
    joiners_key(0);
}

/*
 * The same, each joiner holding a regular update owed from before (put off after a failure, due
 * now): joining made it moot, but the path still wants its key, so it stays owed and keys it.
 */
static void test_renewal_owed_keys_a_new_path(void **state)
{
    (void)state;
    joiners_key(1);
}

/* Up to eleven people, each with one device whose keying commits fall within spread_ms, and alice's
 * group "eight" of the first `founding` of them. */
#define PEOPLE 11

struct eight {
    struct test_server s;
    struct msv_client *all[PEOPLE];
    char handles[PEOPLE][40];
    int n;
    uint8_t gid[16];
};

static void people_founded(struct eight *e, int n, int founding, int64_t spread_ms)
{
    static const char *const names[PEOPLE] = {"alice", "bob",   "carol", "dave", "erin", "frank",
                                              "grace", "heidi", "ivan",  "judy", "kate"};
    const char *others[PEOPLE];

    test_server_init(&e->s, "[accounts]\nregister_burst = 100\nregister_rate = 100\n");
    test_server_start(&e->s);
    e->n = n;
    for (int i = 0; i < n; i++) {
        snprintf(e->handles[i], sizeof(e->handles[i]), "%s@example.org", names[i]);
        e->all[i] = test_client_for(&e->s, names[i], e->handles[i]);
        e->all[i]->mls_key_spread_ms = spread_ms;
        if (i > 0)
            others[i - 1] = e->handles[i];
    }
    assert_int_equal(
        msv_client_group_create(e->all[0], "eight", others, (size_t)founding - 1, e->gid), MSV_OK);
}

static void eight_founded(struct eight *e, int64_t spread_ms)
{
    people_founded(e, 8, 8, spread_ms);
}

static void eight_free(struct eight *e)
{
    for (int i = 0; i < e->n; i++)
        msv_client_close(e->all[i]);
    test_server_cleanup(&e->s);
}

/*
 * alice founds a group of eight devices, which key their tree (three keying commits: one under
 * each blank parent of two). She then removes the device at leaf 5: her commit blanks the
 * parents of leaves 4-5 and 4-7, and the second resolves to two nodes. The device at leaf 4
 * alone, the first beneath it, owes a commit to key it; those at leaves 6 and 7, whose paths
 * meet it too, owe none (in a group of thousands, every leaf beneath a blanked node would).
 */
static void test_removal_keyed_by_one(void **state)
{
    struct eight e;
    struct msv_client **all = e.all;
    const char *removed_handle[1];
    int at[8], removed = -1, owing = 0;

    (void)state;
    eight_founded(&e, 1);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 8; i++)
            receive_now(all[i]);
    for (int i = 0; i < 8; i++) {
        struct msv_mls_member *m = stored_member(all[i], e.gid);

        assert_int_equal(m->epoch, 4); /* the founding and three keying commits */
        for (uint32_t leaf = 0; leaf < 8; leaf++)
            assert_false(leaf_path_unkeyed(m, leaf));
        at[i] = (int)m->me;
        removed = m->me == 5 ? i : removed;
        msv_mls_member_free(m);
        assert_int_equal(settings_count(all[i], "mls-key-by:"), 0);
        all[i]->mls_key_spread_ms = 3600 * 1000; /* from now on recorded, not yet due */
    }
    assert_true(removed > 0);
    removed_handle[0] = e.handles[removed];
    assert_int_equal(msv_client_group_change(all[0], "eight", NULL, NULL, 0, removed_handle, 1),
                     MSV_OK);
    for (int i = 1; i < 8; i++) {
        if (i == removed)
            continue;
        receive_now(all[i]);
        if (settings_count(all[i], "mls-key-by:") > 0) {
            owing++;
            assert_int_equal(at[i], 4);
        }
    }
    assert_int_equal(owing, 1);
    eight_free(&e);
}

/*
 * alice founds a group of eight devices with a spread of 80 seconds: its first 40 are left to the
 * joining, the rest cut in eight slots of 5 seconds, one for each place in the order that keys the
 * tree from the top. Each joiner whose path is not keyed (leaves 2 to 7; leaf 1 shares alice's
 * path) owes its commit within its leaf's slot: leaf 4 first (it keys the right half), then 2 and
 * 6, then 5, 3 and 7, so that the top of the tree holds keys after the fewest commits.
 */
static void test_keying_in_order(void **state)
{
    static const uint32_t place[8] = {0, 4, 2, 6, 1, 5, 3, 7}; /* leaf 4 is first, ... */
    struct eight e;
    struct msv_client **all = e.all;
    char key[80], hex[33];
    int owing = 0;

    (void)state;
    eight_founded(&e, 80 * 1000);
    assert_int_equal(msv_hex_encode(e.gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "mls-key-by:%s", hex);
    for (int i = 1; i < 8; i++) {
        int64_t before = msv_wall_ms(), after, due, from, to;
        struct msv_mls_member *m;
        uint8_t *v = NULL;
        size_t len = 0;
        uint32_t leaf;

        receive_now(all[i]);
        after = msv_wall_ms();
        m = stored_member(all[i], e.gid);
        leaf = m->me;
        assert_int_equal(m->tree.n_leaves, 8);
        assert_int_equal(msv_mls_tree_key_order(leaf, 8), place[leaf]);
        msv_mls_member_free(m);
        if (leaf == 1) {
            assert_int_equal(settings_count(all[i], "mls-key-by:"), 0);
            continue;
        }
        assert_int_equal(msv_client_db_get(all[i]->db, key, &v, &len), MSV_OK);
        assert_int_equal(len, 10);
        assert_int_equal(v[8], 0); /* a keying */
        due = (int64_t)msv_get_u64be(v);
        free(v);
        from = before + 40 * 1000 + (int64_t)place[leaf] * 5000;
        to = after + 40 * 1000 + (int64_t)(place[leaf] + 1) * 5000;
        if (due < from || due >= to)
            fail_msg("leaf %u: due %lld ms after its receive, its slot from %lld to %lld",
                     (unsigned)leaf, (long long)(due - after), (long long)(from - after),
                     (long long)(to - after));
        owing++;
    }
    assert_int_equal(owing, 6);
    eight_free(&e);
}

/* c's keying owed to group gid ("mls-key-by:"): when due (wall ms), why and the tries; 0 if none.
 */
static int key_by_of(struct msv_client *c, const uint8_t gid[16], int64_t *due, uint8_t *why,
                     uint8_t *tries)
{
    char key[80], hex[33];
    uint8_t *v = NULL;
    size_t len = 0;

    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "mls-key-by:%s", hex);
    if (msv_client_db_get(c->db, key, &v, &len) != MSV_OK)
        return 0;
    assert_int_equal(len, 10);
    *due = (int64_t)msv_get_u64be(v);
    *why = v[8];
    *tries = v[9];
    free(v);
    return 1;
}

static void key_by_put(struct msv_client *c, const uint8_t gid[16], int64_t due, uint8_t why,
                       uint8_t tries)
{
    char key[80], hex[33];
    uint8_t v[10] = {0};

    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "mls-key-by:%s", hex);
    msv_put_u64be(v, (uint64_t)due);
    v[8] = why;
    v[9] = tries;
    assert_int_equal(msv_client_db_set(c->db, key, v, sizeof(v)), MSV_OK);
}

/* The device of e that holds leaf in group e->gid's tree (the index in e->all), -1 if none. */
static int at_leaf(struct eight *e, int n, uint32_t leaf)
{
    for (int i = 0; i < n; i++) {
        struct msv_mls_member *m = stored_member(e->all[i], e->gid);
        uint32_t me = m->me;

        msv_mls_member_free(m);
        if (me == leaf)
            return i;
    }
    return -1;
}

/*
 * A group founded in several commits of adds (more devices than one commit adds): the devices of
 * the first commits owe their keyings from their join, in a narrower tree. alice founds a group
 * of six (eight leaves: the devices at leaves 2 to 5 owe one), spread 400 s; their records are
 * then brought to: leaf 2, a minute ahead and counted again three times already; leaf 3, 600 s
 * ahead; leaf 4, a minute ahead but counted again four times already; leaf 5, a minute ahead and
 * tried once. alice's next commit adds four (sixteen leaves). Leaf 2's is counted again from it
 * in the wider tree's slots (from 200 s, then 12.5 s a place: its place there is 4), so that the
 * adds go first and every device keys in the one order, and marked counted again four times;
 * leaf 3's (place 12: due by 362.5 s) is not made sooner than it was to be, and marked counted
 * again once; the other two stay. A commit that adds without widening the
 * tree moves nothing.
 */
static void test_keying_counted_again_when_wider(void **state)
{
    const char *four[4], *one[1];
    struct eight e;
    int at[6];
    int64_t due, before, after, soon, later;
    uint8_t why, tries;

    (void)state;
    people_founded(&e, 11, 6, 400 * 1000);
    for (int i = 1; i < 6; i++)
        receive_now(e.all[i]);
    for (uint32_t leaf = 2; leaf < 6; leaf++) {
        at[leaf] = at_leaf(&e, 6, leaf);
        assert_true(at[leaf] > 0);
        assert_true(key_by_of(e.all[at[leaf]], e.gid, &due, &why, &tries) && why == 0 &&
                    tries == 0);
    }
    soon = msv_wall_ms() + 60 * 1000;
    later = msv_wall_ms() + 600 * 1000;
    key_by_put(e.all[at[2]], e.gid, soon, 4, 0); /* counted again 3 times */
    key_by_put(e.all[at[3]], e.gid, later, 0, 0);
    key_by_put(e.all[at[4]], e.gid, soon, 5, 0); /* counted again 4 times */
    key_by_put(e.all[at[5]], e.gid, soon, 0, 1);
    for (int i = 0; i < 4; i++)
        four[i] = e.handles[6 + i];
    assert_int_equal(msv_client_group_change(e.all[0], "eight", NULL, four, 4, NULL, 0), MSV_OK);
    before = msv_wall_ms();
    for (uint32_t leaf = 2; leaf < 6; leaf++)
        receive_now(e.all[at[leaf]]);
    after = msv_wall_ms();
    {
        struct msv_mls_member *m = stored_member(e.all[at[2]], e.gid);

        assert_int_equal(m->tree.n_leaves, 16);
        assert_int_equal(m->epoch, 2);
        assert_int_equal(msv_mls_tree_key_order(2, 16), 4);
        msv_mls_member_free(m);
    }
    assert_true(key_by_of(e.all[at[2]], e.gid, &due, &why, &tries) && why == 5 && tries == 0);
    if (due < before + 200 * 1000 + 4 * 12500 || due >= after + 200 * 1000 + 5 * 12500)
        fail_msg("leaf 2's keying due %lld ms after the wider commit", (long long)(due - after));
    assert_true(key_by_of(e.all[at[3]], e.gid, &due, &why, &tries) && due == later && why == 2);
    assert_true(key_by_of(e.all[at[4]], e.gid, &due, &why, &tries) && due == soon && why == 5);
    assert_true(key_by_of(e.all[at[5]], e.gid, &due, &why, &tries) && due == soon && tries == 1);
    /* kate added: sixteen leaves still */
    soon = msv_wall_ms() + 60 * 1000;
    key_by_put(e.all[at[2]], e.gid, soon, 0, 0);
    one[0] = e.handles[10];
    assert_int_equal(msv_client_group_change(e.all[0], "eight", NULL, one, 1, NULL, 0), MSV_OK);
    receive_now(e.all[at[2]]);
    {
        struct msv_mls_member *m = stored_member(e.all[at[2]], e.gid);

        assert_int_equal(m->tree.n_leaves, 16);
        assert_int_equal(m->epoch, 3);
        msv_mls_member_free(m);
    }
    assert_true(key_by_of(e.all[at[2]], e.gid, &due, &why, &tries) && due == soon && why == 0);
    eight_free(&e);
}

/*
 * bob sends while alice's commit (carol removed) waits in his queue: the server's answer shows
 * the group past his epoch, so he reads the commit and sends again at the new epoch; alice,
 * past it already, reads the second copy.
 */
static void test_message_crossing_a_commit(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_carol_removed(&k);
    assert_int_equal(msv_client_group_send(k.bob, "club", "crossing", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        2);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "crossing", "bob@example.org", k.bob->device_id);
    club_free(&k);
}

/*
 * The server withholds alice's commit removing carol from bob: bob, told of the removal by the
 * signed change, holds a tree with carol's leaf still in it, and refuses to seal for it (told,
 * the message kept queued) rather than send what carol could read.
 */
static void test_removed_reads_when_commit_withheld(void **state)
{
    const char *carol_only[1] = {"carol@example.org"};
    struct club k;
    char sql[300];
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_change(k.alice, "club", NULL, NULL, 0, carol_only, 1),
                     MSV_OK);
    msv_conn_close(k.bob->conn);
    k.bob->conn = NULL;
    test_server_stop(&k.s);
    snprintf(sql, sizeof(sql), "DELETE FROM queue WHERE device_id = %llu AND suite = %d",
             (unsigned long long)k.bob->device_id, MLS_SUITE);
    server_sql(&k.s, sql);
    test_server_start(&k.s);
    msv_conn_close(k.alice->conn);
    k.alice->conn = NULL;
    msv_conn_close(k.carol->conn);
    k.carol->conn = NULL;
    receive_now(k.bob); /* the signed change: carol is out */
    assert_int_not_equal(
        msv_client_group_send(k.bob, "club", "carol must not read this", NULL, 0, NULL, id),
        MSV_OK);
    assert_int_equal(history_count(k.bob, k.conversation, "still holds a removed member"), 1);
    assert_int_equal(
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        0);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        0);
    club_free(&k);
}

/*
 * A group of per-device copies (carol has no KeyPackage). bob, an admin then demoted, has not
 * read the demotion: his client founds the MLS group without carol, and alice refuses his
 * Welcome (the commit that added her is no admin's), her message going to carol too; carol,
 * never an admin, cannot found it at all.
 */
static void test_non_admin_founding(void **state)
{
    const char *two[2] = {"bob@example.org", "carol@example.org"};
    struct test_server s;
    struct msv_client *alice, *bob, *carol;
    uint8_t gid[16], id[16];
    char conversation[40];

    (void)state;
    test_server_init(&s, NULL);
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", "bob@example.org");
    carol = test_client_for(&s, "carol", "carol@example.org");
    drop_key_packages(&s, carol);
    assert_int_equal(msv_client_group_create(alice, "club", two, 2, gid), MSV_OK);
    msv_client_group_conversation(gid, conversation);
    assert_false(client_mls_is_on(alice, gid)); /* per-device: carol has no KeyPackage */
    receive_now(bob);
    receive_now(carol);
    assert_int_equal(msv_client_group_accept(bob, conversation), MSV_OK);
    assert_int_equal(msv_client_group_accept(carol, conversation), MSV_OK);
    drop_key_packages(&s, carol); /* those carol published again */
    assert_int_equal(msv_client_group_admin(alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(bob);
    assert_int_equal(msv_client_group_admin(alice, "club", "bob@example.org", 0), MSV_OK);
    /* bob, his demotion unread, leaves carol out and founds the MLS group */
    assert_int_equal(msv_client_db_group_put(bob->db, gid, "club",
                                             "alice@example.org\nbob@example.org\n", 1,
                                             msv_wall_ms()),
                     MSV_OK);
    assert_int_equal(client_mls_sync(bob, gid, 1), MSV_OK);
    assert_true(client_mls_is_on(bob, gid));
    receive_now(alice);
    assert_false(client_mls_is_on(alice, gid));
    assert_int_equal(history_count(alice, conversation, "no admin's"), 1);
    assert_int_equal(msv_client_group_send(alice, "club", "for all three of us", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(carol);
    assert_int_equal(history_count(carol, conversation, "for all three of us"), 1);
    /* carol's own client founds nothing */
    assert_int_equal(client_mls_sync(carol, gid, 1), MSV_ERR_AUTH);
    assert_false(client_mls_is_on(carol, gid));
    msv_client_close(alice);
    msv_client_close(bob);
    msv_client_close(carol);
    test_server_cleanup(&s);
}

/* The club on MLS, and dave added by alice without a KeyPackage (no leaf); bob has taken the
 * change. dave, returned, is closed by the caller. */
static struct msv_client *club_with_dave_outside(struct club *k)
{
    const char *dave_only[1] = {"dave@example.org"};
    struct msv_client *dave;

    club_on_mls(k);
    dave = test_client_for(&k->s, "dave", "dave@example.org");
    drop_key_packages(&k->s, dave);
    assert_int_equal(msv_client_group_change(k->alice, "club", NULL, dave_only, 1, NULL, 0),
                     MSV_OK);
    receive_now(dave);
    receive_now(k->bob);
    return dave;
}

/*
 * dave, added to a group on MLS, has no KeyPackage, so no leaf: bob's message goes to the
 * MLS group and to dave as per-device copies, and dave reads it.
 */
static void test_added_without_key_package(void **state)
{
    struct club k;
    struct msv_client *dave;
    uint8_t id[16];

    (void)state;
    dave = club_with_dave_outside(&k);
    assert_int_equal(msv_client_group_accept(dave, k.conversation), MSV_OK);
    assert_false(client_mls_is_on(dave, k.gid));
    assert_int_equal(msv_client_group_send(k.bob, "club", "welcome dave", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(dave);
    assert_sent_by(dave, k.conversation, "welcome dave", "bob@example.org", k.bob->device_id);
    /* alice, on MLS, reads it once */
    receive_now(k.alice);
    assert_int_equal(history_count(k.alice, k.conversation, "welcome dave"), 1);
    msv_client_close(dave);
    club_free(&k);
}

/* c's record of its last look at the club's members: when (wall ms), and the looks in a row that
 * left a device out. */
static int64_t members_at(struct msv_client *c, const struct club *k, uint8_t *misses)
{
    char key[80];
    uint8_t *v = NULL;
    size_t len = 0;
    int64_t at;

    assert_int_equal(msv_client_db_get(c->db, club_key(k, "mls-members-at:", key), &v, &len),
                     MSV_OK);
    assert_int_equal(len, 9);
    at = (int64_t)msv_get_u64be(v);
    *misses = v[8];
    free(v);
    return at;
}

static uint64_t club_epoch(struct msv_client *c, const struct club *k)
{
    struct msv_mls_member *m = stored_member(c, k->gid);
    uint64_t epoch = m->epoch;

    msv_mls_member_free(m);
    return epoch;
}

/*
 * dave, added to the club on MLS while he had no KeyPackage, has no leaf. An admin's device looks
 * at its group's members at most hourly from the end of a receive: alice's first receive records
 * the look for an hour later. Her look an hour on finds dave's device without a KeyPackage: it
 * adds nobody, tells nothing, and waits two hours for the next (each such look claims a
 * KeyPackage of every device of dave's account). bob's device, no admin's, commits nothing. dave
 * then publishes KeyPackages and sends nothing: an hour later alice still waits; two hours on
 * her look adds dave's device, which joins from the Welcome and reads bob's next message on MLS.
 * The next look, with nothing to change, commits nothing and waits an hour again.
 */
static void test_admin_adds_devices_hourly(void **state)
{
    struct club k;
    struct msv_client *dave;
    char key[80];
    uint64_t epoch;
    int64_t looked;
    size_t told;
    uint8_t id[16], misses = 0;

    (void)state;
    dave = club_with_dave_outside(&k);
    assert_int_equal(msv_client_group_accept(dave, k.conversation), MSV_OK);
    drop_key_packages(&k.s, dave); /* those dave published again */
    receive_now(k.alice);
    receive_now(k.bob);
    epoch = club_epoch(k.alice, &k);
    club_key(&k, "mls-members-at:", key);
    (void)members_at(k.alice, &k, &misses);
    assert_int_equal(misses, 0);
    /* an hour on: dave's device cannot be added */
    told = history_count(k.alice, k.conversation, "could not be added"); /* by her change */
    time_moved_back(k.alice, key, 9, 0, 3600 * 1000LL);
    looked = msv_wall_ms();
    receive_now(k.alice);
    assert_true(members_at(k.alice, &k, &misses) >= looked);
    assert_int_equal(misses, 1);
    assert_int_equal(club_epoch(k.alice, &k), epoch);
    assert_int_equal(history_count(k.alice, k.conversation, "could not be added"), told);
    time_moved_back(k.bob, key, 9, 0, 2 * 3600 * 1000LL);
    receive_now(k.bob);
    assert_int_equal(msv_mlskeys_publish(dave), MSV_OK);
    /* an hour on, of the two it waits: nothing */
    time_moved_back(k.alice, key, 9, 0, 3600 * 1000LL);
    receive_now(k.alice);
    assert_int_equal(club_epoch(k.alice, &k), epoch);
    assert_int_equal(
        queued_mls(&k.s, dave->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    /* two hours on: dave's device added */
    time_moved_back(k.alice, key, 9, 0, 3600 * 1000LL);
    receive_now(k.alice);
    assert_int_equal(
        queued_mls(&k.s, dave->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    assert_int_equal(club_epoch(k.alice, &k), epoch + 1);
    (void)members_at(k.alice, &k, &misses);
    assert_int_equal(misses, 0);
    receive_now(dave);
    assert_true(client_mls_is_on(dave, k.gid));
    receive_now(k.bob);
    assert_int_equal(msv_client_group_send(k.bob, "club", "on MLS for dave", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, dave->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        1);
    receive_now(dave);
    assert_sent_by(dave, k.conversation, "on MLS for dave", "bob@example.org", k.bob->device_id);
    /* the next look (its record made to say one left a device out: two hours on) finds nothing
     * to change: no commit, and an hour's wait again */
    {
        uint8_t v[9];

        msv_put_u64be(v, (uint64_t)(msv_wall_ms() - 2 * 3600 * 1000LL));
        v[8] = 1;
        assert_int_equal(msv_client_db_set(k.alice->db, key, v, sizeof(v)), MSV_OK);
    }
    receive_now(k.alice);
    assert_true(members_at(k.alice, &k, &misses) > 0);
    assert_int_equal(misses, 0);
    assert_int_equal(club_epoch(k.alice, &k), epoch + 1);
    msv_client_close(dave);
    club_free(&k);
}

/*
 * dave, added without a KeyPackage (outside the MLS tree: sent per-device copies), deletes his
 * account: bob's messages to the club still go (on MLS to alice and carol), and bob is told
 * once in the group that dave has no account. Before, bob's send failed (dave's copy refused
 * alone), and the next flush sent the MLS message again and marked it failed.
 */
static void test_member_gone_outside_the_tree(void **state)
{
    struct club k;
    struct msv_client *dave;
    struct msv_message_rec *m = NULL;
    uint8_t id[16];

    (void)state;
    dave = club_with_dave_outside(&k);
    assert_int_equal(msv_client_delete_account(dave, TEST_PASSWORD), MSV_OK);
    for (const char **text = (const char *[]){"one", "two", NULL}; *text; text++) {
        assert_int_equal(msv_client_group_send(k.bob, "club", *text, NULL, 0, NULL, id), MSV_OK);
        assert_int_equal(msv_client_db_message_get(k.bob->db, id, &m), MSV_OK);
        assert_string_equal(m->status, "sent");
        msv_messages_free(m, 1);
        receive_now(k.carol);
        assert_sent_by(k.carol, k.conversation, *text, "bob@example.org", k.bob->device_id);
    }
    assert_int_equal(history_count(k.bob, k.conversation,
                                   "not sent to dave@example.org: dave@example.org "
                                   "deleted their account"),
                     1);
    {
        struct msv_outbox_rec *o = NULL;
        size_t n = 0;

        assert_int_equal(msv_client_db_outbox(k.bob->db, &o, &n), MSV_OK);
        msv_outbox_free(o, n);
        assert_int_equal(n, 0); /* nothing owed to dave, nothing held */
    }
    msv_client_close(dave);
    club_free(&k);
}

/*
 * carol deletes her account and someone registers her handle again; alice, an admin, learns of
 * it and her commit gives the new account's device a leaf. bob's group message, queued while the
 * server was out of reach, before he learnt of it, goes with his next connection: the delivery
 * service is past his epoch, and the commit he reads then tells him of the new account, so the
 * message goes again as per-device copies to the others rather than at the new epoch, and his
 * history says carol did not get it. The new account's device holds only the first copy, at an
 * epoch before its leaf, which it has no key of. What bob writes after that goes on MLS again.
 * Before, the message went again on MLS at the new epoch, which the new account's leaf can read.
 */
static void test_queued_not_for_a_new_member_account(void **state)
{
    const int app = MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION;
    struct club k;
    struct msv_client *again;
    msv_frame *devs = NULL;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    bob_writes_while_away(&k, "written before");
    for (struct msv_client **c = (struct msv_client *[]){k.alice, k.carol, NULL}; *c; c++) {
        msv_conn_close((*c)->conn); /* the server's restart ended it */
        (*c)->conn = NULL;
    }
    assert_int_equal(msv_client_delete_account(k.carol, TEST_PASSWORD), MSV_OK);
    again = test_client_for(&k.s, "carol-again", "carol@example.org");
    assert_int_equal(msv_client_devices(k.alice, "carol@example.org", &devs), MSV_OK);
    msv_frame_free(devs);
    assert_int_equal(client_mls_sync(k.alice, k.gid, 0), MSV_OK);
    receive_now(again);
    assert_int_equal(queued_mls(&k.s, again->device_id, app, NULL, NULL), 0);

    assert_int_equal(msv_client_connect(k.bob), MSV_OK); /* the outbox goes with it */
    assert_int_equal(queued_mls(&k.s, again->device_id, app, NULL, NULL), 1);
    assert_int_equal(history_count(k.bob, k.conversation,
                                   "not sent to carol@example.org: carol@example.org is a new "
                                   "account"),
                     1);
    receive_now(k.alice);
    assert_int_equal(history_count(k.alice, k.conversation, "written before"), 1);
    assert_int_equal(msv_client_group_send(k.bob, "club", "written after", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(queued_mls(&k.s, again->device_id, app, NULL, NULL), 2);
    assert_int_equal(history_count(k.bob, k.conversation, "is a new account"), 1);
    msv_client_close(again);
    club_free(&k);
}

/*
 * carol, removed and added again, takes the new Welcome (at the same generation, a later
 * epoch) in place of the state she held, and reads what follows.
 */
static void test_readded_member_reads(void **state)
{
    const char *carol_only[1] = {"carol@example.org"};
    struct club k;
    uint8_t id[16];

    (void)state;
    club_carol_removed(&k);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_change(k.alice, "club", NULL, carol_only, 1, NULL, 0),
                     MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_accept(k.carol, k.conversation), MSV_OK);
    assert_int_equal(history_count(k.carol, k.conversation, "is in already was ignored"), 0);
    assert_int_equal(msv_client_group_send(k.alice, "club", "carol is back", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "carol is back"), 1);
    club_free(&k);
}

/*
 * alice's update commit reaches bob while the directory refuses his lookups (rate limited):
 * the receive fails with MSV_ERR_IO and the commit stays queued, unacknowledged, for the next
 * receive, rather than being dropped as one that could not be taken.
 */
static void test_commit_during_rate_limit(void **state)
{
    const char *all[3] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    struct club k;
    uint8_t id[16];
    size_t count = 0;
    int drained = 0;

    (void)state;
    club_config = "[directory]\nlookup_rate = 0.01\nlookup_burst = 300\n";
    club_on_mls(&k);
    club_config = NULL;
    for (int i = 0; i < 200 && !drained; i++) {
        msv_frame *f = NULL;

        drained = client_verified_lookup(k.bob, all, 3, &f) != MSV_OK;
        msv_frame_free(f);
    }
    assert_true(drained);
    k.alice->mls_update_messages = 1;
    assert_int_equal(msv_client_group_send(k.alice, "club", "before", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        msv_client_group_send(k.alice, "club", "after alice's update", NULL, 0, NULL, id), MSV_OK);
    /* the receive ends at the commit it cannot take yet, and says so */
    assert_int_equal(msv_client_receive(k.bob, 500, NULL, NULL, &count), MSV_ERR_IO);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be taken"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 0);
    assert_true(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL) >= 1);
    club_free(&k);
}

/* The club on MLS, and bob's laptop linked and approved by his phone, waiting to join it. */
static struct msv_client *club_bob_laptop(struct club *k)
{
    struct msv_client *laptop;

    club_on_mls(k);
    laptop = linked_device(&k->s, k->bob, "bob-laptop");
    assert_int_equal(joins_waiting(k->bob), 1);
    assert_false(client_mls_is_on(laptop, k->gid));
    return laptop;
}

/*
 * bob, no admin, links his laptop: his next receive adds it to the club's MLS group (his own
 * account's device), alice and carol take his commit, the laptop joins from his Welcome and
 * reads carol's next message; its own message reaches the others named as bob's laptop.
 */
static void test_linked_device_joins(void **state)
{
    struct club k;
    struct msv_client *laptop;
    uint8_t id[16];

    (void)state;
    laptop = club_bob_laptop(&k);
    receive_now(k.bob);
    assert_int_equal(joins_waiting(k.bob), 0);
    assert_int_equal(
        queued_mls(&k.s, laptop->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.alice);
    receive_now(k.carol);
    receive_now(laptop);
    assert_true(client_mls_is_on(laptop, k.gid));
    assert_int_equal(history_count(k.alice, k.conversation, "refused"), 0);
    assert_int_equal(history_count(k.carol, k.conversation, "refused"), 0);
    assert_int_equal(history_count(laptop, k.conversation, "refused"), 0);
    assert_int_equal(msv_client_group_send(k.carol, "club", "hello laptop", NULL, 0, NULL, id),
                     MSV_OK);
    both_read(laptop, k.bob, k.conversation, "hello laptop", "carol@example.org",
              k.carol->device_id);
    assert_int_equal(msv_client_group_send(laptop, "club", "from bob's laptop", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "from bob's laptop", "bob@example.org",
                   laptop->device_id);
    msv_client_close(laptop);
    club_free(&k);
}

/*
 * bob, no admin, removes his laptop from his account: his device commits its leaf out of the
 * club's MLS group at once, alice and carol take the commit, and carol's next message goes on
 * MLS to a tree without it (before: the leaf stayed until an admin's next change). His phone,
 * which is in no MLS group yet, removes his tablet: bob's next receive, told of it, commits the
 * removal. His patched client removing a device his account still lists is refused.
 */
static int tree_holds(struct msv_client *c, const uint8_t gid[16], uint64_t device);

/* How many removed devices c's removal record names (-1: no record). */
static int out_record_ids(struct msv_client *c)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int n = -1;

    if (msv_client_db_get(c->db, "mls-out", &v, &len) == MSV_OK)
        n = (int)(len - 16) / 8;
    free(v);
    return n;
}

static void test_removed_own_device_committed_out(void **state)
{
    struct club k;
    struct msv_client *laptop, *tablet, *tablet2, *phone, *desk;
    uint8_t id[16];

    (void)state;
    club_config = "[accounts]\nregister_burst = 40\n"; /* five devices linked by password */
    laptop = club_bob_laptop(&k);
    club_config = NULL;
    receive_now(k.bob);
    receive_now(k.alice);
    receive_now(k.carol);
    receive_now(laptop);
    assert_true(tree_holds(k.alice, k.gid, laptop->device_id));
    assert_int_equal(msv_client_remove_device(k.bob, laptop->device_id), MSV_OK);
    assert_false(tree_holds(k.bob, k.gid, laptop->device_id));
    assert_int_equal(settings_count(k.bob, "mls-out"), 0);
    receive_now(k.alice);
    receive_now(k.carol);
    assert_false(tree_holds(k.alice, k.gid, laptop->device_id));
    assert_false(tree_holds(k.carol, k.gid, laptop->device_id));
    assert_int_equal(history_count(k.alice, k.conversation, "refused"), 0);
    assert_int_equal(history_count(k.carol, k.conversation, "refused"), 0);
    assert_int_equal(
        msv_client_group_send(k.carol, "club", "without the laptop", NULL, 0, NULL, id), MSV_OK);
    both_read(k.alice, k.bob, k.conversation, "without the laptop", "carol@example.org",
              k.carol->device_id);

    /* removed by a device holding no MLS state: the others of the account commit it */
    tablet = linked_device(&k.s, k.bob, "bob-tablet");
    receive_now(k.bob);
    receive_now(k.alice);
    receive_now(k.carol);
    receive_now(tablet);
    assert_true(client_mls_is_on(tablet, k.gid));
    phone = linked_device(&k.s, tablet, "bob-phone"); /* the tablet would add it */
    assert_int_equal(msv_client_remove_device(phone, tablet->device_id), MSV_OK);
    assert_int_equal(settings_count(phone, "mls-out"), 0); /* nothing of its own to commit */
    assert_true(tree_holds(k.bob, k.gid, tablet->device_id));
    receive_now(k.bob);
    assert_false(tree_holds(k.bob, k.gid, tablet->device_id));
    assert_int_equal(settings_count(k.bob, "mls-out"), 0);
    receive_now(k.alice);
    assert_false(tree_holds(k.alice, k.gid, tablet->device_id));
    assert_int_equal(history_count(k.alice, k.conversation, "refused"), 0);

    /* told of a removal, bob's next message commits it first, before it goes */
    tablet2 = linked_device(&k.s, k.bob, "bob-tablet2");
    receive_now(k.bob);
    receive_now(k.alice);
    receive_now(k.carol);
    receive_now(tablet2);
    assert_true(tree_holds(k.alice, k.gid, tablet2->device_id));
    assert_int_equal(msv_client_remove_device(phone, tablet2->device_id), MSV_OK);
    assert_int_equal(
        msv_client_db_set(k.bob->db, "mls-out", (const uint8_t *)"0123456789abcdef", 16),
        MSV_OK); /* as the server's notice, not read yet, would record it */
    assert_int_equal(msv_client_group_send(k.bob, "club", "after tablet2", NULL, 0, NULL, id),
                     MSV_OK);
    assert_false(tree_holds(k.bob, k.gid, tablet2->device_id));
    receive_now(k.alice);
    assert_false(tree_holds(k.alice, k.gid, tablet2->device_id));
    assert_sent_by(k.alice, k.conversation, "after tablet2", "bob@example.org", k.bob->device_id);

    /* a device of his account it lists still: his patched client's removal is refused */
    desk = linked_device(&k.s, k.bob, "bob-desk");
    receive_now(k.bob);
    receive_now(k.alice);
    assert_true(tree_holds(k.alice, k.gid, desk->device_id));
    /* a removal the server refused is waited for no more; one of a device the directory still
     * lists (it has not caught up) keeps the record, and nothing is taken out meanwhile */
    assert_int_not_equal(msv_client_remove_device(k.bob, 999999), MSV_OK);
    assert_true(out_record_ids(k.bob) <= 0);
    {
        uint8_t v[24];

        msv_put_u64be(v, (uint64_t)msv_wall_ms());
        msv_put_u64be(v + 8, 0);
        msv_put_u64be(v + 16, desk->device_id);
        assert_int_equal(msv_client_db_set(k.bob->db, "mls-out", v, sizeof(v)), MSV_OK);
    }
    receive_now(k.bob);
    assert_int_equal(out_record_ids(k.bob), 1);
    assert_true(tree_holds(k.bob, k.gid, desk->device_id));
    assert_int_equal(msv_client_db_unset(k.bob->db, "mls-out"), MSV_OK);
    patched_commit(k.bob, k.gid, desk->device_id, NULL, 0, 0);
    receive_now(k.alice);
    assert_int_equal(
        history_count(k.alice, k.conversation, "nor changes only its own account's devices"), 1);
    assert_true(tree_holds(k.alice, k.gid, desk->device_id));

    msv_client_close(laptop);
    msv_client_close(tablet);
    msv_client_close(phone);
    msv_client_close(tablet2);
    msv_client_close(desk);
    club_free(&k);
}

/*
 * bob's laptop, added to the club by his phone, writes before it has read its queue, where its
 * Welcome waits: the send takes the Welcome first, and the message goes on MLS. Before, it
 * went as per-device copies asking to be added again, and alice's device replaced the leaf the
 * Welcome had just given it (one more commit, and the first Welcome wasted).
 */
static void test_writes_before_its_welcome(void **state)
{
    struct club k;
    struct msv_client *laptop;
    uint8_t id[16];
    size_t commits;

    (void)state;
    laptop = club_bob_laptop(&k);
    receive_now(k.bob);
    receive_now(k.alice);
    receive_now(k.carol);
    assert_int_equal(
        queued_mls(&k.s, laptop->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    assert_false(client_mls_is_on(laptop, k.gid));
    commits =
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL);
    assert_int_equal(msv_client_group_send(laptop, "club", "laptop first", NULL, 0, NULL, id),
                     MSV_OK);
    assert_true(client_mls_is_on(laptop, k.gid));
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        1);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "laptop first", "bob@example.org", laptop->device_id);
    /* nobody asked to be added again, and no leaf was replaced */
    assert_int_equal(settings_count(k.alice, "mls-rejoin:"), 0);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL),
        commits);
    receive_now(k.carol);
    assert_sent_by(k.carol, k.conversation, "laptop first", "bob@example.org", laptop->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "could not be read"), 0);
    msv_client_close(laptop);
    club_free(&k);
}

/* A group state's encoding (docs/groups.md) of gid at epoch: name, members, admins. */
static uint8_t *state_of(const uint8_t gid[16], uint64_t epoch, const char *name,
                         const char *const *members, size_t n_members, const char *const *admins,
                         size_t n_admins, size_t *len)
{
    const char *magic = "MSV-group-state-v1";
    size_t cap = 64 + strlen(name), at = 0;
    uint8_t *v;

    for (size_t i = 0; i < n_members; i++)
        cap += 2 + strlen(members[i]);
    for (size_t i = 0; i < n_admins; i++)
        cap += 2 + strlen(admins[i]);
    v = malloc(cap);
    assert_non_null(v);
    memcpy(v, magic, strlen(magic));
    at = strlen(magic);
    memcpy(v + at, gid, 16);
    msv_put_u64be(v + at + 16, epoch);
    at += 24;
    v[at] = (uint8_t)(strlen(name) >> 8);
    v[at + 1] = (uint8_t)strlen(name);
    memcpy(v + at + 2, name, strlen(name));
    at += 2 + strlen(name);
    for (int l = 0; l < 2; l++) {
        const char *const *list = l == 0 ? members : admins;
        size_t n = l == 0 ? n_members : n_admins;

        msv_put_u32be(v + at, (uint32_t)n);
        at += 4;
        for (size_t i = 0; i < n; i++) {
            v[at] = (uint8_t)(strlen(list[i]) >> 8);
            v[at + 1] = (uint8_t)strlen(list[i]);
            memcpy(v + at + 2, list[i], strlen(list[i]));
            at += 2 + strlen(list[i]);
        }
    }
    *len = at;
    return v;
}

/* from sends to's devices (its own account's too) a GROUP_COPY of gid holding state. */
static void send_copy(struct msv_client *from, const char *to, const uint8_t gid[16],
                      uint8_t *state, size_t len)
{
    struct msv_payload p = {.kind = MSV_KIND_GROUP_COPY,
                            .has_group = true,
                            .group_state = state,
                            .group_state_len = len,
                            .group_accepted = true};
    uint8_t id[16];

    memcpy(p.group_id, gid, 16);
    assert_int_equal(client_send_payload(from, &to, 1, &p, NULL, NULL, NULL, 0, NULL, id), MSV_OK);
}

/* c holds a group of a new id (in gid) as a signed state (its key in key) and a record. */
static void hold_group(struct msv_client *c, uint8_t gid[16], const char *name,
                       const char *const *members, size_t n_members, const char *const *admins,
                       size_t n_admins, int accepted, char key[80])
{
    char hex[33];
    size_t len = 0;
    uint8_t *v;

    msv_random_bytes(gid, 16);
    v = state_of(gid, 1, name, members, n_members, admins, n_admins, &len);
    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, 80, "group-state:%s", hex);
    assert_int_equal(msv_client_db_set(c->db, key, v, len), MSV_OK);
    assert_int_equal(msv_client_db_group_put(c->db, gid, name, "", accepted, msv_wall_ms()),
                     MSV_OK);
    free(v);
}

static int holds_group(struct msv_client *c, const uint8_t gid[16], struct msv_group_rec *g)
{
    struct msv_group_rec none = {0};
    msv_err err = msv_client_db_group_get(c->db, gid, NULL, g != NULL ? g : &none);

    assert_true(err == MSV_OK || err == MSV_ERR_NOT_FOUND);
    msv_group_clear(&none);
    return err == MSV_OK;
}

/* c holds group gid under name. */
static void assert_group_named(struct msv_client *c, const uint8_t gid[16], const char *name)
{
    struct msv_group_rec g = {0};

    assert_true(holds_group(c, gid, &g));
    assert_string_equal(g.name, name);
    msv_group_clear(&g);
}

/*
 * A copy of a group is taken only from this account's own device, only by a device that holds
 * no signed state of the group, and only if it names this account a member; a refusal is kept
 * in the group's history. A state over 4 KiB goes by the attachment store, and a group not
 * accepted stays a request on the new device.
 */
static void test_group_copies(void **state)
{
    const char *bob = "bob@example.org", *alice = "alice@example.org";
    const char *bob_only[1] = {bob}, *alice_only[1] = {alice};
    char **many = calloc(300, sizeof(*many)), key[80], left_key[80], conversation[40];
    struct club k;
    struct msv_client *laptop, *tablet;
    struct msv_group_rec g = {0};
    uint8_t other[16], mismatched[16], *v, *held = NULL, *copied = NULL;
    int created = 0;
    size_t len = 0, held_len = 0, copied_len = 0;

    (void)state;
    assert_non_null(many);
    laptop = club_bob_laptop(&k);
    /* the club came to the laptop as bob's phone holds it, accepted */
    assert_true(holds_group(laptop, k.gid, &g));
    assert_string_equal(g.name, "club");
    assert_true(g.accepted);
    msv_group_clear(&g);
    /* carol's copy of a group naming bob: another account's word, taken by none of his */
    msv_random_bytes(other, 16);
    v = state_of(other, 1, "carols", bob_only, 1, bob_only, 1, &len);
    send_copy(k.carol, bob, other, v, len);
    free(v);
    receive_now(k.bob);
    receive_now(laptop);
    assert_false(holds_group(k.bob, other, NULL));
    assert_false(holds_group(laptop, other, NULL));
    /* his phone's copy of the club under another name: the laptop holds the club already */
    v = state_of(k.gid, 1, "renamed", bob_only, 1, bob_only, 1, &len);
    send_copy(k.bob, bob, k.gid, v, len);
    free(v);
    receive_now(laptop);
    assert_true(holds_group(laptop, k.gid, &g));
    assert_string_equal(g.name, "club");
    msv_group_clear(&g);
    /* a copy saying the account took a group the laptop holds as a request: taken now */
    hold_group(laptop, other, "asked", bob_only, 1, bob_only, 1, 0, key);
    v = state_of(other, 1, "asked", bob_only, 1, bob_only, 1, &len);
    send_copy(k.bob, bob, other, v, len);
    free(v);
    receive_now(laptop);
    assert_true(holds_group(laptop, other, &g));
    assert_true(g.accepted);
    msv_group_clear(&g);
    msv_random_bytes(other, 16);
    /* a copy of a group that does not name bob, and one of another group's id: refused, told */
    v = state_of(other, 1, "not bob's", alice_only, 1, alice_only, 1, &len);
    send_copy(k.bob, bob, other, v, len);
    free(v);
    v = state_of(k.gid, 1, "mismatched", bob_only, 1, bob_only, 1, &len);
    msv_random_bytes(mismatched, 16);
    send_copy(k.bob, bob, mismatched, v, len);
    free(v);
    receive_now(laptop);
    assert_false(holds_group(laptop, other, NULL));
    msv_client_group_conversation(other, conversation);
    assert_int_equal(history_count(laptop, conversation, "it does not name this account"), 1);
    assert_false(holds_group(laptop, mismatched, NULL));
    msv_client_group_conversation(mismatched, conversation);
    assert_int_equal(history_count(laptop, conversation, "its state is malformed"), 1);
    assert_int_equal(history_count(laptop, conversation, "was refused"), 1);
    /* a group of 300 (its state past 4 KiB), not accepted, as the phone holds it */
    for (int i = 0; i < 300; i++) {
        many[i] = malloc(32);
        assert_non_null(many[i]);
        snprintf(many[i], 32, "member%03d@example.org", i);
    }
    snprintf(many[299], 32, "%s", bob);
    hold_group(k.bob, other, "big", (const char *const *)many, 300, alice_only, 1, 0, key);
    assert_int_equal(msv_client_db_get(k.bob->db, key, &held, &held_len), MSV_OK);
    assert_true(held_len > MSV_GROUP_STATE_INLINE_MAX);
    /* and a group bob left: nothing to copy */
    hold_group(k.bob, mismatched, "left", alice_only, 1, alice_only, 1, 1, left_key);
    tablet = linked_device(&k.s, k.bob, "bob-tablet");
    assert_false(holds_group(tablet, mismatched, NULL));
    receive_now(laptop);
    msv_client_group_conversation(mismatched, conversation);
    assert_int_equal(history_count(tablet, conversation, "refused"), 0);
    assert_int_equal(history_count(laptop, conversation, "refused"), 0);
    assert_true(holds_group(tablet, other, &g));
    assert_string_equal(g.name, "big");
    assert_false(g.accepted);
    msv_group_clear(&g);
    assert_int_equal(msv_client_db_get(tablet->db, key, &copied, &copied_len), MSV_OK);
    assert_int_equal(copied_len, held_len);
    assert_memory_equal(copied, held, held_len);
    free(held);
    free(copied);
    assert_int_equal(settings_count(k.bob, "group-copy-"), 0);
    /* copies owed (the phone stopped after the approval, say) go after its next command */
    hold_group(k.bob, other, "late", bob_only, 1, bob_only, 1, 1, key);
    assert_int_equal(client_groups_copy_owe(k.bob, &created), MSV_OK);
    assert_true(created);
    assert_int_equal(settings_count(k.bob, "group-copy-all"), 1);
    assert_int_equal(msv_client_sync_flush(k.bob, NULL), MSV_OK);
    assert_int_equal(settings_count(k.bob, "group-copy-"), 0);
    receive_now(tablet);
    assert_true(holds_group(tablet, other, &g));
    assert_string_equal(g.name, "late");
    assert_true(g.accepted);
    msv_group_clear(&g);
    for (int i = 0; i < 300; i++)
        free(many[i]);
    free(many);
    msv_client_close(tablet);
    msv_client_close(laptop);
    club_free(&k);
}

/*
 * The club on MLS, and bob's tablet holding a copy behind it: alice renamed the club to
 * "club 2" while the tablet waited for approval (so neither her change nor its Welcome reached
 * it) and his phone approved before it read the change.
 */
static struct msv_client *club_tablet_behind(struct club *k)
{
    struct msv_client *tablet;

    club_on_mls(k);
    tablet = link_waiting(&k->s, k->bob, "bob-tablet");
    assert_int_equal(msv_client_group_change(k->alice, "club", "club 2", NULL, 0, NULL, 0), MSV_OK);
    assert_int_equal(msv_client_approve_device(k->bob, tablet->device_id), MSV_OK);
    receive_now(tablet);
    assert_group_named(tablet, k->gid, "club"); /* as the phone held it */
    return tablet;
}

/*
 * A copy behind the group (club_tablet_behind): the tablet takes alice's next change whole,
 * on her word as the club's admin, but not a change of carol's, who is no admin of the copy.
 */
static void test_group_copy_behind(void **state)
{
    const char *three[3] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    const char *carol_only[1] = {"carol@example.org"};
    struct club k;
    struct msv_client *tablet;
    uint8_t *forged;
    size_t len = 0;
    char key[80];

    (void)state;
    tablet = club_tablet_behind(&k);
    /* carol, no admin, patched to hold a state of a later epoch naming her admin: her change
     * does not follow the copy, and she is no admin of it: refused there as everywhere */
    receive_now(k.carol);
    forged = state_of(k.gid, 50, "club 2", three, 3, carol_only, 1, &len);
    assert_int_equal(msv_client_db_set(k.carol->db, club_key(&k, "group-state:", key), forged, len),
                     MSV_OK);
    free(forged);
    assert_int_equal(msv_client_group_change(k.carol, "club 2", "carol's", NULL, 0, NULL, 0),
                     MSV_OK);
    receive_now(tablet);
    assert_group_named(tablet, k.gid, "club");
    receive_now(k.bob);
    assert_int_equal(msv_client_group_change(k.alice, "club 2", "club 3", NULL, 0, NULL, 0),
                     MSV_OK);
    receive_now(tablet);
    assert_group_named(tablet, k.gid, "club 3");
    assert_int_equal(settings_count(tablet, "group-copied:"), 0); /* taken: a copy no more */
    msv_client_close(tablet);
    club_free(&k);
}

/* The copied mark lasts a week from when the copy was made: past it, a change that does not
 * follow the copy is refused as with any held state. */
static void test_group_copy_mark_lasts_a_week(void **state)
{
    struct club k;
    struct msv_client *tablet;
    char key[80];

    (void)state;
    tablet = club_tablet_behind(&k);
    time_moved_back(tablet, club_key(&k, "group-copied:", key), 8, 0, 7LL * 24 * 3600 * 1000);
    receive_now(k.bob);
    assert_int_equal(msv_client_group_change(k.alice, "club 2", "club 3", NULL, 0, NULL, 0),
                     MSV_OK);
    receive_now(tablet);
    assert_group_named(tablet, k.gid, "club");
    assert_int_equal(history_count(tablet, k.conversation, "out of order"), 1);
    msv_client_close(tablet);
    club_free(&k);
}

/*
 * A copy that cannot be made (the state's upload refused: uploads past 2,000 bytes here) is
 * told by the approval and stays owed; a command within the hour does not try it again.
 */
static void test_group_copy_not_made_is_told(void **state)
{
    const char *bob_only[1] = {"bob@example.org"};
    char **many = calloc(300, sizeof(*many)), key[80], hex[33], due[80];
    struct club k;
    struct msv_client *tablet;
    uint8_t other[16], *before = NULL, *after = NULL;
    size_t len = 0;

    (void)state;
    assert_non_null(many);
    club_config = "[blobs]\nmax_size = 2000\n";
    club_on_mls(&k);
    club_config = NULL;
    for (int i = 0; i < 300; i++) {
        many[i] = malloc(32);
        assert_non_null(many[i]);
        snprintf(many[i], 32, i == 0 ? "bob@example.org" : "member%03d@example.org", i);
    }
    hold_group(k.bob, other, "big", (const char *const *)many, 300, bob_only, 1, 1, key);
    tablet = link_waiting(&k.s, k.bob, "bob-tablet");
    assert_int_equal(msv_client_approve_device(k.bob, tablet->device_id), MSV_OK);
    assert_non_null(strstr(k.bob->why.message, "1 group could not be copied to device"));
    assert_non_null(strstr(k.bob->why.message, "tried again hourly, after a command"));
    assert_int_equal(settings_count(k.bob, "group-copy-all"), 0);
    assert_int_equal(settings_count(k.bob, "group-copy-due:"), 1);
    assert_int_equal(msv_hex_encode(other, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(due, sizeof(due), "group-copy-due:%s", hex);
    assert_int_equal(msv_client_db_get(k.bob->db, due, &before, &len), MSV_OK);
    assert_int_equal(len, 16);
    /* within the hour, not tried again */
    assert_int_equal(msv_client_sync_flush(k.bob, NULL), MSV_OK);
    assert_int_equal(msv_client_db_get(k.bob->db, due, &after, &len), MSV_OK);
    assert_memory_equal(after, before, 16);
    free(after);
    /* an hour on, tried again (failing again: still owed, from the first time) */
    time_moved_back(k.bob, due, 16, 8, 3600 * 1000);
    assert_int_equal(msv_client_sync_flush(k.bob, NULL), MSV_OK);
    assert_int_equal(msv_client_db_get(k.bob->db, due, &after, &len), MSV_OK);
    assert_memory_equal(after, before, 8);
    assert_true(msv_get_u64be(after + 8) >= msv_get_u64be(before + 8));
    free(after);
    free(before);
    /* a week on, given up */
    time_moved_back(k.bob, due, 16, 0, 8LL * 24 * 3600 * 1000);
    assert_int_equal(msv_client_sync_flush(k.bob, NULL), MSV_OK);
    assert_int_equal(settings_count(k.bob, "group-copy-"), 0);
    receive_now(tablet);
    assert_true(holds_group(tablet, k.gid, NULL)); /* the club's copy went */
    assert_false(holds_group(tablet, other, NULL));
    for (int i = 0; i < 300; i++)
        free(many[i]);
    free(many);
    msv_client_close(tablet);
    club_free(&k);
}

/*
 * What is owed of copies, kept and bounded: a refused approval forgets a copy of every group it
 * recorded itself, and keeps one owed from before (a stopped process's); owed copies are tried
 * only after a command that connected, and at most COPY_DUE_PER_ROUND (64) of them after one.
 */
static void test_group_copies_owed_kept_and_bounded(void **state)
{
    struct club k;
    struct msv_client *tablet;
    uint8_t v[16], *got = NULL, gid[16];
    size_t len = 0;
    char key[80], hex[33];

    (void)state;
    club_on_mls(&k);
    tablet = link_waiting(&k.s, k.bob, "bob-tablet");
    assert_int_equal(msv_client_remove_device(k.bob, tablet->device_id), MSV_OK);
    /* refused (the device no longer waits), nothing owed before: nothing owed after */
    assert_int_equal(msv_client_approve_device(k.bob, tablet->device_id), MSV_ERR_NOT_FOUND);
    assert_non_null(strstr(k.bob->why.message, "waits for approval"));
    assert_int_equal(settings_count(k.bob, "group-copy-"), 0);
    /* refused, a copy of every group owed from before: still owed, as it was */
    msv_put_u64be(v, (uint64_t)msv_wall_ms() - 1000);
    assert_int_equal(msv_client_db_set(k.bob->db, "group-copy-all", v, 8), MSV_OK);
    assert_int_equal(msv_client_approve_device(k.bob, tablet->device_id), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_get(k.bob->db, "group-copy-all", &got, &len), MSV_OK);
    assert_int_equal(len, 8);
    assert_memory_equal(got, v, 8);
    free(got);
    assert_int_equal(msv_client_db_unset(k.bob->db, "group-copy-all"), MSV_OK);

    /* 70 copies owed (of groups since forgotten: each try drops one), last tried hours ago */
    msv_put_u64be(v, (uint64_t)msv_wall_ms() - 1000);
    msv_put_u64be(v + 8, (uint64_t)msv_wall_ms() - 2 * 3600 * 1000);
    for (int i = 0; i < 70; i++) {
        memset(gid, 0xA0, sizeof(gid));
        gid[15] = (uint8_t)i;
        assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
        snprintf(key, sizeof(key), "group-copy-due:%s", hex);
        assert_int_equal(msv_client_db_set(k.bob->db, key, v, 16), MSV_OK);
    }
    /* a command that made no connection tries none */
    msv_conn_close(k.bob->conn);
    k.bob->conn = NULL;
    assert_int_equal(msv_client_sync_flush(k.bob, NULL), MSV_OK);
    assert_int_equal(settings_count(k.bob, "group-copy-due:"), 70);
    /* one that did tries 64, and the next the 6 left */
    assert_int_equal(msv_client_connect(k.bob), MSV_OK);
    assert_int_equal(msv_client_sync_flush(k.bob, NULL), MSV_OK);
    assert_int_equal(settings_count(k.bob, "group-copy-due:"), 6);
    assert_int_equal(msv_client_sync_flush(k.bob, NULL), MSV_OK);
    assert_int_equal(settings_count(k.bob, "group-copy-due:"), 0);
    msv_client_close(tablet);
    club_free(&k);
}

/*
 * A device that has no KeyPackage yet is tried again quietly, every retry interval, and joins
 * once it has one; a non-admin's commits add no other account's device (bob's self-update
 * leaves carol's new tablet out, and his patched client's commit adding it is refused by every
 * member); a device not added in MSV_MLS_JOIN_DAYS is given up, and that is told.
 */
static void test_linked_device_waits_and_others_refused(void **state)
{
    struct club k;
    struct msv_client *laptop, *tablet, *phone;
    msv_frame *f = NULL;
    const uint8_t *kp = NULL;
    size_t kp_len = 0;
    uint8_t id[16], v[16];
    char key[64];

    (void)state;
    club_on_mls(&k);
    laptop = linked_device(&k.s, k.bob, "bob-laptop");
    drop_key_packages(&k.s, laptop);
    k.bob->mls_join_retry_ms = 1;
    receive_now(k.bob);
    assert_int_equal(joins_waiting(k.bob), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be added"), 0);
    assert_int_equal(
        queued_mls(&k.s, laptop->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    assert_int_equal(msv_mlskeys_publish(laptop), MSV_OK);
    receive_now(k.bob);
    assert_int_equal(joins_waiting(k.bob), 0);
    receive_now(laptop);
    assert_true(client_mls_is_on(laptop, k.gid));

    /* bob's phone, without a KeyPackage for a week: given up, and told */
    phone = linked_device(&k.s, k.bob, "bob-phone");
    drop_key_packages(&k.s, phone);
    snprintf(key, sizeof(key), "mls-join:%016llx", (unsigned long long)phone->device_id);
    msv_put_u64be(v, (uint64_t)(msv_wall_ms() - 8 * 86400000LL));
    msv_put_u64be(v + 8, 0);
    assert_int_equal(msv_client_db_set(k.bob->db, key, v, sizeof(v)), MSV_OK);
    assert_int_equal(msv_client_mls_waits_given_up(k.bob), 0);
    receive_now(k.bob);
    assert_int_equal(joins_waiting(k.bob), 0);
    assert_int_equal(
        history_count(k.bob, k.conversation, "was not added to this MLS group (in 7 days"), 1);
    assert_int_equal(msv_client_mls_waits_given_up(k.bob), 1); /* counted too */
    assert_false(client_mls_is_on(phone, k.gid));

    /* carol's tablet: bob's self-update does not add it */
    tablet = linked_device(&k.s, k.carol, "carol-tablet");
    receive_now(k.alice);
    k.bob->mls_update_messages = 1;
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob once", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob twice", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, tablet->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "bob twice", "bob@example.org", k.bob->device_id);
    assert_int_equal(history_count(k.alice, k.conversation, "refused"), 0);
    /* nor does his patched client get it in */
    assert_int_equal(msv_client_connect(k.bob), MSV_OK);
    assert_int_equal(msv_request_mls_claim(k.bob->conn, "carol@example.org", 5000, &f, &k.bob->why),
                     MSV_OK);
    for (size_t i = 0; i < f->mls_key_packages->n_key_packages; i++)
        if (f->mls_key_packages->key_packages[i]->device_id == tablet->device_id) {
            kp = f->mls_key_packages->key_packages[i]->key_package.data;
            kp_len = f->mls_key_packages->key_packages[i]->key_package.len;
        }
    assert_non_null(kp);
    patched_commit(k.bob, k.gid, 0, kp, kp_len, tablet->device_id);
    msv_frame_free(f);
    receive_now(k.alice);
    assert_int_equal(
        history_count(k.alice, k.conversation, "nor changes only its own account's devices"), 1);
    receive_now(k.carol);
    assert_int_equal(
        history_count(k.carol, k.conversation, "nor changes only its own account's devices"), 1);

    msv_client_close(laptop);
    msv_client_close(tablet);
    msv_client_close(phone);
    club_free(&k);
}

/* A delivery of kind to c's group gid (its MLS group of generation gen) at epoch whose message
 * is msg. */
static void take_crafted_of(struct msv_client *c, const uint8_t gid[16], uint32_t gen, int kind,
                            uint64_t epoch, const uint8_t *msg, size_t msg_len, char notice[400])
{
    Msv__Wire__MlsDelivery d = MSV__WIRE__MLS_DELIVERY__INIT;
    uint8_t id[20], *wire;
    size_t len;

    memcpy(id, gid, 16);
    msv_put_u32be(id + 16, gen);
    d.group_id = (ProtobufCBinaryData){sizeof(id), id};
    d.kind = kind;
    d.epoch = epoch;
    d.message = (ProtobufCBinaryData){msg_len, (uint8_t *)msg};
    len = msv__wire__mls_delivery__get_packed_size(&d);
    wire = malloc(len);
    assert_non_null(wire);
    msv__wire__mls_delivery__pack(&d, wire);
    take(c, wire, len, notice);
    free(wire);
}

static void take_crafted(struct msv_client *c, const uint8_t gid[16], int kind, uint64_t epoch,
                         const uint8_t *msg, size_t msg_len, char notice[400])
{
    take_crafted_of(c, gid, 0, kind, epoch, msg, msg_len, notice);
}

/*
 * A commit or Welcome larger than one send goes by reference through the attachment store
 * (here, past 300 bytes: every one): the group is founded, its members join, a removal is
 * followed, messages read. A reference the server altered (another blob, a wrong hash, a
 * malformed one, a blob it does not have) changes nothing and is told.
 */
static void test_large_by_reference(void **state)
{
    const char *two[2] = {"bob@example.org", "carol@example.org"};
    const char *carol_only[1] = {"carol@example.org"};
    struct club k;
    uint8_t id[16], *commit = NULL, ref[102], bad[102];
    size_t commit_len = 0;
    char notice[400];
    Msv__Wire__MlsDelivery *d;

    (void)state;
    club_people(&k, NULL);
    k.alice->mls_inline_max = 300;
    assert_int_equal(msv_client_group_create(k.alice, "club", two, 2, k.gid), MSV_OK);
    msv_client_group_conversation(k.gid, k.conversation);
    assert_true(client_mls_is_on(k.alice, k.gid));
    assert_int_equal(receive_now(k.bob), 1);
    assert_int_equal(receive_now(k.carol), 1);
    assert_true(client_mls_is_on(k.bob, k.gid));
    assert_true(client_mls_is_on(k.carol, k.gid));
    assert_int_equal(msv_client_group_accept(k.bob, k.conversation), MSV_OK);
    assert_int_equal(msv_client_group_accept(k.carol, k.conversation), MSV_OK);
    assert_int_equal(msv_client_group_send(k.alice, "club", "all of you", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "all of you", "alice@example.org", k.alice->device_id);

    /* the removal's commit goes by reference too; bob follows it, carol cannot read on */
    assert_int_equal(msv_client_group_change(k.alice, "club", NULL, NULL, 0, carol_only, 1),
                     MSV_OK);
    assert_int_equal(queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT,
                                &commit, &commit_len),
                     1);
    d = msv__wire__mls_delivery__unpack(NULL, commit_len, commit);
    assert_non_null(d);
    assert_int_equal(d->message.len, sizeof(ref));
    assert_int_equal(d->message.data[0], 0xff);
    memcpy(ref, d->message.data, sizeof(ref));
    msv__wire__mls_delivery__free_unpacked(d, NULL);

    /* before bob takes it: what the server could make of the reference */
    memcpy(bad, ref, sizeof(bad));
    bad[sizeof(bad) - 1] ^= 1; /* the hash */
    take_crafted(k.bob, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, 1, bad, sizeof(bad), notice);
    assert_non_null(strstr(notice, "failed its integrity check"));
    memcpy(bad, ref, sizeof(bad));
    bad[10] ^= 1; /* another blob, which the server does not have */
    take_crafted(k.bob, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, 1, bad, sizeof(bad), notice);
    assert_non_null(strstr(notice, "could not be fetched"));
    take_crafted(k.bob, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, 1, ref, sizeof(ref) - 1,
                 notice);
    assert_non_null(strstr(notice, "malformed reference"));
    memcpy(bad, ref, sizeof(bad));
    bad[2] = 0x7f; /* a size past what a member fetches */
    take_crafted(k.bob, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, 0, bad, sizeof(bad), notice);
    assert_non_null(strstr(notice, "malformed reference"));

    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(history_count(k.bob, k.conversation, "refused"), 0);
    assert_int_equal(msv_client_group_send(k.alice, "club", "carol is out", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_sent_by(k.bob, k.conversation, "carol is out", "alice@example.org", k.alice->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "carol is out"), 0);
    free(commit);
    club_free(&k);
}

/* Keeps wire's Welcome on c for the group, as if its send had not happened yet. */
static void keep_welcome(struct msv_client *c, const uint8_t gid[16], const uint8_t *wire,
                         size_t len, uint64_t device)
{
    Msv__Wire__MlsDelivery *d = msv__wire__mls_delivery__unpack(NULL, len, wire);
    uint8_t *v;
    char key[64], hex[33];

    assert_non_null(d);
    v = malloc(16 + 8 + d->message.len);
    assert_non_null(v);
    msv_put_u32be(v, 0);
    msv_put_u64be(v + 4, d->epoch);
    msv_put_u32be(v + 12, 1);
    msv_put_u64be(v + 16, device);
    memcpy(v + 24, d->message.data, d->message.len);
    assert_int_equal(msv_hex_encode(gid, 16, hex, sizeof(hex)), MSV_OK);
    snprintf(key, sizeof(key), "mls-welcome:%s", hex);
    assert_int_equal(msv_client_db_set(c->db, key, v, 24 + d->message.len), MSV_OK);
    free(v);
    msv__wire__mls_delivery__free_unpacked(d, NULL);
}

/*
 * The Welcome to bob's laptop is lost after his commit added it (a crash, a failed send): kept
 * from before the commit, it goes at his next receive and the laptop joins; kept while the
 * group moved on (alice's update), it can no longer be used, and that is told.
 */
static void test_welcome_kept_until_sent(void **state)
{
    struct club k;
    struct msv_client *laptop;
    uint8_t id[16], *w = NULL;
    size_t w_len = 0;
    char sql[120];

    (void)state;
    club_on_mls(&k);
    laptop = linked_device(&k.s, k.bob, "bob-laptop");
    receive_now(k.bob);
    assert_int_equal(settings_count(k.bob, "mls-welcome:"), 0); /* sent, forgotten */
    assert_int_equal(
        queued_mls(&k.s, laptop->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, &w, &w_len), 1);
    snprintf(sql, sizeof(sql), "DELETE FROM queue WHERE device_id = %llu",
             (unsigned long long)laptop->device_id);
    server_sql(&k.s, sql);
    keep_welcome(k.bob, k.gid, w, w_len, laptop->device_id);
    receive_now(k.bob);
    assert_int_equal(settings_count(k.bob, "mls-welcome:"), 0);
    receive_now(laptop);
    assert_true(client_mls_is_on(laptop, k.gid));
    assert_int_equal(msv_client_group_send(k.carol, "club", "laptop reads", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(laptop);
    assert_sent_by(laptop, k.conversation, "laptop reads", "carol@example.org", k.carol->device_id);

    /* kept past the group's next epoch: told, forgotten */
    receive_now(k.alice);
    keep_welcome(k.bob, k.gid, w, w_len, laptop->device_id);
    k.alice->mls_update_messages = 1;
    assert_int_equal(msv_client_group_send(k.alice, "club", "one", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(k.alice, "club", "two", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.bob);
    assert_int_equal(settings_count(k.bob, "mls-welcome:"), 0);
    assert_int_equal(
        history_count(k.bob, k.conversation, "did not get the Welcome before the group moved on"),
        1);

    /* one the server refuses (to a device that is no member): told, forgotten, never retried */
    {
        uint8_t *now_w = NULL;
        size_t now_len = 0;
        Msv__Wire__MlsDelivery *d;
        uint64_t epoch = 0;

        assert_true(queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT,
                               &now_w, &now_len) >= 1);
        d = msv__wire__mls_delivery__unpack(NULL, now_len, now_w);
        assert_non_null(d);
        epoch = d->epoch + 1; /* the epoch that commit made, where bob is now */
        msv__wire__mls_delivery__free_unpacked(d, NULL);
        free(now_w);
        d = msv__wire__mls_delivery__unpack(NULL, w_len, w);
        assert_non_null(d);
        d->epoch = epoch;
        now_len = msv__wire__mls_delivery__get_packed_size(d);
        now_w = malloc(now_len);
        assert_non_null(now_w);
        msv__wire__mls_delivery__pack(d, now_w);
        msv__wire__mls_delivery__free_unpacked(d, NULL);
        keep_welcome(k.bob, k.gid, now_w, now_len, 999999);
        free(now_w);
    }
    receive_now(k.bob);
    assert_int_equal(settings_count(k.bob, "mls-welcome:"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "was refused by the server"), 1);
    free(w);
    msv_client_close(laptop);
    club_free(&k);
}

/* The server drops the MLS deliveries queued for c (withheld, or expired from its queue). */
/* The club's server stopped (every member's connection closed), sql run on its database and
 * extra set as its [testing] lines (each if not NULL), and started again. */
static void club_restart(struct club *k, const char *sql, const char *extra)
{
    for (struct msv_client **o = (struct msv_client *[]){k->alice, k->bob, k->carol, NULL}; *o;
         o++) {
        msv_conn_close((*o)->conn);
        (*o)->conn = NULL;
    }
    test_server_stop(&k->s);
    if (sql != NULL)
        server_sql(&k->s, sql);
    if (extra != NULL)
        snprintf(k->s.extra, sizeof(k->s.extra), "%s", extra);
    test_server_start(&k->s);
}

/* What c was sent on MLS gone from the server: dropped from its queue, and the groups' commit
 * logs emptied (as once the commits expire from both). */
static void drop_mls_queue(struct club *k, struct msv_client *c)
{
    char sql[200];

    snprintf(sql, sizeof(sql),
             "DELETE FROM queue WHERE device_id = %llu AND suite = %d; DELETE FROM mls_commit_log;",
             (unsigned long long)c->device_id, MLS_SUITE);
    club_restart(k, sql, NULL);
}

/* c's "mls-behind:" mark of the club moved days back (ahead, if negative), as if made then;
 * the time it held is returned. */
static int64_t behind_marked_days_ago(struct club *k, struct msv_client *c, int days)
{
    char key[80];
    uint8_t *v = NULL;
    size_t len = 0;
    int64_t was;

    assert_int_equal(msv_client_db_get(c->db, club_key(k, "mls-behind:", key), &v, &len), MSV_OK);
    assert_int_equal(len, 20);
    was = (int64_t)msv_get_u64be(v + 12);
    msv_put_u64be(v + 12, (uint64_t)(msv_wall_ms() - (int64_t)days * 86400 * 1000));
    assert_int_equal(msv_client_db_set(c->db, key, v, len), MSV_OK);
    free(v);
    return was;
}

/* The club on MLS, alice updating at each message: two commits of hers never reach bob, whose
 * message "bob behind" then finds him behind for good, told. */
static void club_bob_behind(struct club *k)
{
    uint8_t id[16];

    club_on_mls(k);
    k->alice->mls_update_messages = 1;
    assert_int_equal(msv_client_group_send(k->alice, "club", "a1", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(k->alice, "club", "a2", NULL, 0, NULL, id), MSV_OK);
    drop_mls_queue(k, k->bob);
    assert_int_equal(msv_client_group_send(k->bob, "club", "bob behind", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(history_count(k->bob, k->conversation, "behind its MLS group"), 1);
}

/* bob, behind the club, writes "bob asks": alice reads it and adds his device again, and bob
 * reads the Welcome. */
static void bob_asks(struct club *k)
{
    uint8_t id[16];

    assert_int_equal(msv_client_group_send(k->bob, "club", "bob asks", NULL, 0, NULL, id), MSV_OK);
    receive_now(k->alice);
    assert_sent_by(k->alice, k->conversation, "bob asks", "bob@example.org", k->bob->device_id);
    assert_int_equal(
        queued_mls(&k->s, k->bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k->bob);
}

/*
 * A commit never reaches bob (no admin): his message is sent at an epoch the others are past,
 * so it is told, and it and his next ones go as per-device copies, which every member reads,
 * sending nothing on MLS until he catches up; a day on, his next message tries MLS again. The
 * same befalls alice, an admin: she founds the group again at once, and her message is read;
 * bob joins the new generation and writes on MLS again.
 */
static void test_behind_for_good(void **state)
{
    struct club k;
    uint8_t id[16];
    size_t before;

    (void)state;
    club_bob_behind(&k);
    before =
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob again", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        before);

    /* the one MLS copy is recorded as unreadable; both messages read from their copies */
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "could not be read"), 1);
    assert_sent_by(k.carol, k.conversation, "bob behind", "bob@example.org", k.bob->device_id);
    assert_sent_by(k.carol, k.conversation, "bob again", "bob@example.org", k.bob->device_id);

    /* a mark dated ahead of the clock (it went back since) is counted from now, and so
     * recorded: it ends a day on all the same */
    behind_marked_days_ago(&k, k.bob, -30);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob ahead", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        0);
    assert_true(behind_marked_days_ago(&k, k.bob, 0) <= msv_wall_ms());
    receive_now(k.carol);
    assert_sent_by(k.carol, k.conversation, "bob ahead", "bob@example.org", k.bob->device_id);

    /* a day on, MLS is tried again: still behind, told again */
    behind_marked_days_ago(&k, k.bob, 2);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob a day on", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        1);
    assert_int_equal(history_count(k.bob, k.conversation, "behind its MLS group"), 2);
    receive_now(k.carol);
    assert_sent_by(k.carol, k.conversation, "bob a day on", "bob@example.org", k.bob->device_id);

    /* alice (her update not due) misses carol's */
    k.alice->mls_update_messages = 0;
    k.carol->mls_update_messages = 1;
    assert_int_equal(msv_client_group_send(k.carol, "club", "c1", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(k.carol, "club", "c2", NULL, 0, NULL, id), MSV_OK);
    drop_mls_queue(&k, k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "alice founds", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(history_count(k.alice, k.conversation, "behind its MLS group"), 0);
    both_read(k.carol, k.bob, k.conversation, "alice founds", "alice@example.org",
              k.alice->device_id);
    before =
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob is back", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        before + 1);
    assert_int_equal(settings_count(k.bob, "mls-behind:"), 0);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "bob is back", "bob@example.org", k.bob->device_id);
    club_free(&k);
}

/* c's MLS state of the club forgotten, as a restore from a backup (which holds none) leaves it. */
static void state_lost(struct club *k, struct msv_client *c)
{
    char key[80];

    assert_int_equal(msv_client_db_unset(c->db, club_key(k, "mls-group:", key)), MSV_OK);
    assert_false(client_mls_is_on(c, k->gid));
}

/* c's record of the replacement of device's leaf in the club (done, or waiting) moved back by
 * ms: the time it was done or last tried. */
static void rejoin_moved_back(struct club *k, struct msv_client *c, uint64_t device, int done,
                              int64_t ms)
{
    char key[80];
    uint8_t *v = NULL;
    size_t len = 0;

    snprintf(key + strlen(club_key(k, "mls-rejoin:", key)), 17, "%016llx",
             (unsigned long long)device);
    assert_int_equal(msv_client_db_get(c->db, key, &v, &len), MSV_OK);
    assert_int_equal(len, 49);
    assert_int_equal(v[16], done);
    free(v);
    time_moved_back(c, key, 49, 8, ms);
}

/*
 * bob's device loses the club's MLS state (as a restore from a backup does): his messages go as
 * per-device copies that say so; alice, an admin, reading them replaces his leaf (a removal and
 * an add in one commit, once for both), carol (no admin) takes that commit, and bob joins from
 * its Welcome, reading and writing on MLS again. Asked again within the hour, nothing is
 * replaced; an hour on, it is.
 */
static void test_lost_state_joins_again(void **state)
{
    struct club k;
    uint8_t id[16];
    size_t before;

    (void)state;
    club_on_mls(&k);
    state_lost(&k, k.bob);
    before =
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob restored", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob again", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        before);
    receive_now(k.carol);
    assert_sent_by(k.carol, k.conversation, "bob restored", "bob@example.org", k.bob->device_id);
    assert_int_equal(settings_count(k.carol, "mls-rejoin:"), 0); /* no admin */
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "bob again", "bob@example.org", k.bob->device_id);
    assert_int_equal(settings_count(k.alice, "mls-rejoin:"), 1);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "refused"), 0);
    /* marks to found the group again (as a device of its only admin would have made) are moot
     * once a Welcome adds the device again */
    {
        char key[80];

        assert_int_equal(msv_client_db_set(k.bob->db, club_key(&k, "mls-lost:", key),
                                           (const uint8_t *)"\0\0\0\0", 4),
                         MSV_OK);
        founding_again_due(&k, k.bob);
    }
    receive_now(k.bob);
    assert_true(client_mls_is_on(k.bob, k.gid));
    assert_int_equal(history_count(k.bob, k.conversation, "Welcome"), 0);
    assert_int_equal(settings_count(k.bob, "mls-lost:"), 0);
    assert_int_equal(settings_count(k.bob, "mls-refound:"), 0);

    /* on MLS again both ways */
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob on MLS", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        before + 1);
    receive_now(k.carol);
    assert_sent_by(k.carol, k.conversation, "bob on MLS", "bob@example.org", k.bob->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "could not be read"), 0);
    assert_int_equal(msv_client_group_send(k.alice, "club", "welcome back", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "welcome back", "alice@example.org", k.alice->device_id);

    /* lost again within the hour: asked, not replaced */
    receive_now(k.alice);
    state_lost(&k, k.bob);
    assert_int_equal(msv_client_group_send(k.bob, "club", "lost twice", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "lost twice", "bob@example.org", k.bob->device_id);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    /* an hour on, asked again: replaced */
    rejoin_moved_back(&k, k.alice, k.bob->device_id, 1, 3601LL * 1000);
    assert_int_equal(msv_client_group_send(k.bob, "club", "an hour on", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.bob);
    assert_true(client_mls_is_on(k.bob, k.gid));

    /* 256 asks already kept on alice's device (of devices with no leaf): bob's is not, and
     * that is counted */
    receive_now(k.alice);
    assert_int_equal(msv_client_mls_rejoins_held(k.alice), 0);
    for (uint64_t d = 1; d <= 256; d++) {
        char key[80];
        uint8_t v[49] = {0};

        snprintf(key + strlen(club_key(&k, "mls-rejoin:", key)), 17, "%016llx",
                 (unsigned long long)(d << 40));
        msv_put_u64be(v, (uint64_t)msv_wall_ms());
        assert_int_equal(msv_client_db_set(k.alice->db, key, v, sizeof(v)), MSV_OK);
    }
    rejoin_moved_back(&k, k.alice, k.bob->device_id, 1, 3601LL * 1000);
    state_lost(&k, k.bob);
    assert_int_equal(msv_client_group_send(k.bob, "club", "one too many", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "one too many", "bob@example.org", k.bob->device_id);
    assert_int_equal(msv_client_mls_rejoins_held(k.alice), 1);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    club_free(&k);
}

/*
 * The club on MLS with carol promoted to admin, bob and carol having read it; carol's setting
 * what || hex of the group id (its key in key, 80 bytes) returned as she holds it then (caller
 * frees).
 */
static uint8_t *club_carol_promoted(struct club *k, const char *what, char *key, size_t *len)
{
    uint8_t *v = NULL;

    club_on_mls(k);
    assert_int_equal(msv_client_group_admin(k->alice, "club", "carol@example.org", 1), MSV_OK);
    receive_now(k->carol);
    receive_now(k->bob);
    assert_int_equal(msv_client_db_get(k->carol->db, club_key(k, what, key), &v, len), MSV_OK);
    return v;
}

/*
 * bob's device, its state lost, asks to be added again, and the group's two admins' devices
 * (alice's, and carol's once promoted) take his ask at once, each in a receive of its own
 * process that replaces his leaf at its end: whichever commit the delivery service takes
 * first, the other is refused as stale and its device reads the first at its next receive,
 * finding nothing left to do. bob joins from one Welcome, nobody is told of a refusal, and the
 * group talks on MLS after.
 */
static void test_two_admins_replace_at_once(void **state)
{
    struct club k;
    char key[80];
    size_t len = 0;
    uint8_t id[16];
    pid_t receivers[2];

    (void)state;
    free(club_carol_promoted(&k, "mls-group:", key, &len));
    receive_now(k.alice);
    state_lost(&k, k.bob);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob asks", NULL, 0, NULL, id), MSV_OK);
    for (int i = 0; i < 2; i++) {
        struct msv_client *admin = i == 0 ? k.alice : k.carol;

        msv_conn_close(admin->conn);
        admin->conn = NULL;
    }
    receivers[0] = receiver_of(k.alice);
    receivers[1] = receiver_of(k.carol);
    for (int i = 0; i < 2; i++) {
        int status = 0;

        assert_int_equal(waitpid(receivers[i], &status, 0), receivers[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) >= 10);
    }
    receive_now(k.alice);
    receive_now(k.carol);
    assert_int_equal(history_count(k.alice, k.conversation, "bob asks"), 1);
    assert_int_equal(history_count(k.carol, k.conversation, "bob asks"), 1);
    /* one replacement: one Welcome for bob, and both admins at the same epoch */
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.bob);
    assert_true(client_mls_is_on(k.bob, k.gid));
    for (int i = 0; i < 3; i++) {
        struct msv_client *c = i == 0 ? k.alice : i == 1 ? k.bob : k.carol;

        assert_int_equal(history_count(c, k.conversation, "refused"), 0);
        assert_int_equal(history_count(c, k.conversation, "could not be read"), 0);
    }
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob back", NULL, 0, NULL, id), MSV_OK);
    both_read(k.alice, k.carol, k.conversation, "bob back", "bob@example.org", k.bob->device_id);
    assert_int_equal(msv_client_group_send(k.carol, "club", "carol after", NULL, 0, NULL, id),
                     MSV_OK);
    both_read(k.alice, k.bob, k.conversation, "carol after", "carol@example.org",
              k.carol->device_id);
    club_free(&k);
}

/*
 * bob's lost state asks while he has no KeyPackage on the server: alice's device cannot replace
 * his leaf, keeps his ask, and does not try again at his next message within 15 minutes; once
 * they passed, his next message has her replace it.
 */
static void test_rejoin_without_key_package(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    state_lost(&k, k.bob);
    assert_int_equal(msv_client_group_send(k.bob, "club", "no KeyPackage", NULL, 0, NULL, id),
                     MSV_OK);
    drop_key_packages(&k.s, k.bob);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "no KeyPackage", "bob@example.org", k.bob->device_id);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    assert_int_equal(settings_count(k.alice, "mls-rejoin:"), 1);
    /* asked again at once, his KeyPackages published again (his next connection does): not
     * tried again yet */
    msv_conn_close(k.bob->conn);
    k.bob->conn = NULL;
    assert_int_equal(msv_client_group_send(k.bob, "club", "still none", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    /* 15 minutes on */
    rejoin_moved_back(&k, k.alice, k.bob->device_id, 0, 16LL * 60 * 1000);
    assert_int_equal(msv_client_group_send(k.bob, "club", "a while on", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.bob);
    assert_true(client_mls_is_on(k.bob, k.gid));
    club_free(&k);
}

/*
 * carol, an admin too, is replaced while she still holds the club's state (her ask was sent
 * before an earlier Welcome was read: here her state is put back after alice's commit): she
 * refuses the commit that removes her leaf, an admin's, without marking the group to be
 * founded again, joins from its Welcome, and her next message goes on MLS with no founding.
 */
static void test_replaced_admin_holding_state(void **state)
{
    struct club k;
    char key[80];
    uint8_t *held = NULL, id[16];
    size_t held_len = 0;

    (void)state;
    held = club_carol_promoted(&k, "mls-group:", key, &held_len);
    state_lost(&k, k.carol);
    assert_int_equal(msv_client_group_send(k.carol, "club", "carol asks", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.alice);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    assert_int_equal(msv_client_db_set(k.carol->db, key, held, held_len), MSV_OK);
    free(held);
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "removed this device's leaf"), 1);
    assert_int_equal(history_count(k.carol, k.conversation, "did not verify"), 0);
    assert_int_equal(settings_count(k.carol, "mls-refound:"), 0);
    receive_now(k.bob);
    assert_int_equal(msv_client_group_send(k.carol, "club", "carol on MLS", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "carol on MLS", "carol@example.org", k.carol->device_id);
    club_free(&k);
}

/*
 * bob (no admin) misses alice's commits for good: once marked behind, his per-device copies say
 * so, and alice's device, reading one, replaces his leaf; its Welcome brings him to the group's
 * epoch (the mark forgotten), and he writes on MLS again without the group being founded again.
 */
static void test_behind_member_joins_again(void **state)
{
    struct club k;
    uint8_t id[16];
    size_t before;

    (void)state;
    club_bob_behind(&k);
    k.alice->mls_update_messages = 0;
    bob_asks(&k);
    assert_int_equal(history_count(k.bob, k.conversation, "Welcome"), 0);
    receive_now(k.carol);
    before =
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob caught up", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.carol->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        before + 1);
    assert_int_equal(settings_count(k.bob, "mls-behind:"), 0); /* forgotten: caught up */
    receive_now(k.carol);
    assert_sent_by(k.carol, k.conversation, "bob caught up", "bob@example.org", k.bob->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "refused"), 0);
    assert_int_equal(settings_count(k.alice, "mls-founded:"), 0); /* not founded again */
    club_free(&k);
}

/* How many Welcomes the server keeps. */
static int kept_welcomes(struct test_server *s)
{
    char path[160];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int n;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM mls_members WHERE welcome IS NOT NULL;", -1,
                           &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/*
 * bob, behind the club for good (the commits he missed gone from the log too), asks to be added
 * again; alice replaces his leaf while his queue is full, so its Welcome is kept for him. He
 * still holds the club's state, of the same generation: alice's next message, which the log
 * cannot bring him to (its commits stop at the one that removed his leaf), makes him ask for
 * the Welcome kept, join from it and read the message. Before, a device holding a state asked
 * for none, and stayed behind until it was replaced again (at most hourly).
 */
static void test_replaced_while_full_joins_from_kept(void **state)
{
    const char *to_bob[1] = {"bob@example.org"};
    struct club k;
    uint8_t id[16];

    (void)state;
    club_config = "[relay]\nqueue_max_envelopes = 4\n";
    club_bob_behind(&k);
    club_config = NULL;
    k.alice->mls_update_messages = 0;
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob asks", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.bob);
    for (int i = 0; i < 4; i++)
        assert_int_equal(msv_client_send(k.carol, to_bob, 1, "filling", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "bob asks", "bob@example.org", k.bob->device_id);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    assert_int_equal(test_server_metric(&k.s, "mls_welcomes_kept_total"), 1);
    receive_now(k.carol);
    receive_now(k.bob);
    assert_true(client_mls_is_on(k.bob, k.gid));
    assert_int_equal(msv_client_group_send(k.alice, "club", "after his leaf", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_int_equal(test_server_metric(&k.s, "mls_welcome_reads_total"), 1);
    assert_int_equal(kept_welcomes(&k.s), 0); /* joined from it: dropped */
    assert_sent_by(k.bob, k.conversation, "after his leaf", "alice@example.org",
                   k.alice->device_id);
    club_free(&k);
}

/*
 * bob's device leaves its queue unread until it is full: alice's messages still reach carol,
 * and alice is told which device they missed; an update commit that misses bob leaves him
 * behind, and once he writes he reads it from the delivery service's log and catches up. Before,
 * bob's full queue
 * made the server refuse every send to the group, so one member's unread queue stopped
 * everyone's messages.
 */
static void test_full_queue_holds_up_nobody(void **state)
{
    struct club k;
    uint8_t id[16];
    char text[32], key[80];

    (void)state;
    club_config = "[relay]\nqueue_max_envelopes = 4\n";
    club_on_mls(&k);
    club_config = NULL;
    k.alice->mls_update_messages = 1000;
    receive_now(k.alice);
    for (int i = 0; i < 6; i++) {
        snprintf(text, sizeof(text), "full %d", i);
        assert_int_equal(msv_client_group_send(k.alice, "club", text, NULL, 0, NULL, id), MSV_OK);
        receive_now(k.carol);
        assert_sent_by(k.carol, k.conversation, text, "alice@example.org", k.alice->device_id);
        receive_now(k.alice);
    }
    /* told once in the hour, however many messages missed him */
    assert_int_equal(
        history_count(k.alice, k.conversation, "did not reach 1 of the group's devices"), 1);
    assert_int_equal(history_count(k.alice, k.conversation, "bob@example.org's device"), 1);
    time_moved_back(k.alice, club_key(&k, "mls-full-said:", key), 8, 0, 3600 * 1000);
    assert_int_equal(msv_client_group_send(k.alice, "club", "full again", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        history_count(k.alice, k.conversation, "did not reach 1 of the group's devices"), 2);
    receive_now(k.carol);
    receive_now(k.alice);
    /* a commit bob's queue has no room for: taken, carol reads what follows it */
    k.alice->mls_update_messages = 1;
    assert_int_equal(msv_client_group_send(k.alice, "club", "after an update", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.carol);
    assert_sent_by(k.carol, k.conversation, "after an update", "alice@example.org",
                   k.alice->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "refused"), 0);
    k.alice->mls_update_messages = 1000;
    /* bob reads what his queue held: the first messages, not those it had no room for */
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "full 0", "alice@example.org", k.alice->device_id);
    assert_int_equal(history_count(k.bob, k.conversation, "full 5"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "after an update"), 0);
    /* now carol leaves her queue unread until it is full */
    receive_now(k.alice);
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof(text), "carol full %d", i);
        assert_int_equal(msv_client_group_send(k.alice, "club", text, NULL, 0, NULL, id), MSV_OK);
        receive_now(k.alice);
    }
    /* bob's queue is full again too: a message no other device has room for fails */
    assert_int_equal(msv_client_group_send(k.alice, "club", "no room", NULL, 0, NULL, id),
                     MSV_ERR_TOO_BIG);
    assert_non_null(strstr(k.alice->why.message, "other devices are full; nothing was sent"));
    receive_now(k.bob);
    /* bob missed the update commit: his message finds the group past him, and he reads the
     * commit from the delivery service's log and writes on MLS at the group's epoch, to alice
     * (who read her queue), carol's full queue leaving her out (before, he was behind for good,
     * his messages went as per-device copies, and an admin had to add him again) */
    receive_now(k.alice);
    if (msv_client_group_send(k.bob, "club", "bob is back", NULL, 0, NULL, id) != MSV_OK)
        fail_msg("bob's message: %s", k.bob->why.message);
    assert_int_equal(history_count(k.bob, k.conversation, "behind its MLS group"), 0);
    assert_int_equal(settings_count(k.bob, "mls-behind:"), 0);
    assert_int_equal(test_server_metric(&k.s, "mls_log_commits_served_total"), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "did not reach 1 of the group's devices"),
                     1);
    assert_int_equal(history_count(k.bob, k.conversation, "carol@example.org's device"), 1);
    assert_int_equal(
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        1);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "bob is back", "bob@example.org", k.bob->device_id);
    assert_int_equal(history_count(k.alice, k.conversation, "could not be read"), 0);
    /* carol reads her queue, then everyone reads what follows */
    receive_now(k.carol);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "all read it", NULL, 0, NULL, id),
                     MSV_OK);
    both_read(k.bob, k.carol, k.conversation, "all read it", "alice@example.org",
              k.alice->device_id);
    assert_int_equal(history_count(k.bob, k.conversation, "refused"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "replay"), 0);
    club_free(&k);
}

/*
 * The club on MLS with bob's queue holding 4: alice's messages fill it, and her update commit
 * (sent by reference if by_ref) and the message after it miss him; he then reads his queue,
 * which holds neither.
 */
static void club_bob_misses_a_commit(struct club *k, int by_ref)
{
    uint8_t id[16];
    char text[32];

    club_config = "[relay]\nqueue_max_envelopes = 4\n";
    club_on_mls(k);
    club_config = NULL;
    k->alice->mls_update_messages = 1000;
    k->alice->mls_inline_max = by_ref ? 64 : 0;
    receive_now(k->bob);
    receive_now(k->alice);
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof(text), "filling %d", i);
        assert_int_equal(msv_client_group_send(k->alice, "club", text, NULL, 0, NULL, id), MSV_OK);
        receive_now(k->carol);
        receive_now(k->alice);
    }
    k->alice->mls_update_messages = 1; /* an update commit first, which misses bob */
    assert_int_equal(msv_client_group_send(k->alice, "club", "missed", NULL, 0, NULL, id), MSV_OK);
    k->alice->mls_update_messages = 1000;
    receive_now(k->carol);
    receive_now(k->alice);
    receive_now(k->bob);
    assert_int_equal(history_count(k->bob, k->conversation, "missed"), 0);
}

/*
 * The club's commit log rewritten (to NULL), or its newest commit queued to device `to` as the
 * server's queue would bring it: each delivery with its kind set to kind (0: as it is) and its
 * message to message (NULL: as it is). The server is stopped meanwhile.
 */
#define SQL_ROOM (1 << 16)
static void log_rows(struct club *k, int kind, const char *message, struct msv_client *to)
{
    char path[160], *sql = calloc(1, SQL_ROOM), *at = sql;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    size_t n = 0;

    assert_non_null(sql);
    for (struct msv_client **o = (struct msv_client *[]){k->alice, k->bob, k->carol, NULL}; *o;
         o++) {
        msv_conn_close((*o)->conn);
        (*o)->conn = NULL;
    }
    test_server_stop(&k->s);
    snprintf(path, sizeof(path), "%s/data/missive.db", k->s.dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        to != NULL ? "SELECT epoch, sender_device, delivery"
                                                     " FROM mls_commit_log ORDER BY epoch DESC"
                                                     " LIMIT 1;"
                                                   : "SELECT epoch, sender_device, delivery"
                                                     " FROM mls_commit_log;",
                                        -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        Msv__Wire__MlsDelivery *d = msv__wire__mls_delivery__unpack(
            NULL, (size_t)sqlite3_column_bytes(st, 2), sqlite3_column_blob(st, 2));
        ProtobufCBinaryData was;
        uint8_t packed[8192];
        char hex[2 * sizeof(packed) + 1];
        size_t len;

        assert_non_null(d);
        was = d->message;
        if (kind != 0)
            d->kind = (Msv__Wire__MlsKind)kind;
        if (message != NULL)
            d->message = (ProtobufCBinaryData){strlen(message), (uint8_t *)message};
        len = msv__wire__mls_delivery__get_packed_size(d);
        assert_true(len < sizeof(packed));
        msv__wire__mls_delivery__pack(d, packed);
        d->message = was;
        msv__wire__mls_delivery__free_unpacked(d, NULL);
        if (to != NULL) {
            test_server_enqueue(&k->s, to->device_id, (uint64_t)sqlite3_column_int64(st, 1),
                                "alice@example.org", MLS_SUITE, packed, len);
        } else {
            assert_int_equal(msv_hex_encode(packed, len, hex, sizeof(hex)), MSV_OK);
            at += snprintf(at, (size_t)(sql + SQL_ROOM - at),
                           "UPDATE mls_commit_log SET delivery = X'%s' WHERE epoch = %lld;", hex,
                           (long long)sqlite3_column_int64(st, 0));
            assert_true(at < sql + SQL_ROOM);
        }
        n++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_true(n > 0);
    if (sql[0] != '\0')
        server_sql(&k->s, sql);
    free(sql);
    test_server_start(&k->s);
}

static void forge_log(struct club *k, int kind, const char *message)
{
    log_rows(k, kind, message, NULL);
}

/*
 * The Welcome the server keeps for device d rewritten: its message set to message. The server
 * runs meanwhile (one statement of SQLite's).
 */
static void kept_welcome_rewritten(struct test_server *s, uint64_t d, const char *message)
{
    char path[160], sql[2 * 8192 + 200], hex[2 * 8192 + 1];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    Msv__Wire__MlsDelivery *w;
    uint8_t packed[8192];
    size_t len;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT welcome FROM mls_members WHERE device_id = ?;",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)d);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    w = msv__wire__mls_delivery__unpack(NULL, (size_t)sqlite3_column_bytes(st, 0),
                                        sqlite3_column_blob(st, 0));
    assert_non_null(w);
    sqlite3_finalize(st);
    sqlite3_close(db);
    {
        ProtobufCBinaryData was = w->message;

        w->message = (ProtobufCBinaryData){strlen(message), (uint8_t *)message};
        len = msv__wire__mls_delivery__get_packed_size(w);
        assert_true(len < sizeof(packed));
        msv__wire__mls_delivery__pack(w, packed);
        w->message = was;
    }
    msv__wire__mls_delivery__free_unpacked(w, NULL);
    assert_int_equal(msv_hex_encode(packed, len, hex, sizeof(hex)), MSV_OK);
    snprintf(sql, sizeof(sql), "UPDATE mls_members SET welcome = X'%s' WHERE device_id = %llu;",
             hex, (unsigned long long)d);
    server_sql(s, sql);
}

/*
 * dave is added to the club on MLS while his queue has room for the group change that tells of
 * the group and none for the Welcome after it: the delivery service keeps the Welcome for him,
 * and alice is told of nothing missed. Once dave has read his queue, the first message of the
 * group he cannot read makes him ask for it: he joins, reads that message, and writes on MLS.
 * Before, the Welcome was dropped, and dave read nothing of the group until an admin's device
 * added him again. With lie set, the server gives a Welcome it made up instead: refused, told
 * once however many messages ask again, and nothing joined.
 */
static void welcome_kept_for_a_full_queue(int lie)
{
    const char *dave_only[1] = {"dave@example.org"}, *to_dave[1] = {"dave@example.org"};
    struct club k;
    struct msv_client *dave;
    uint8_t id[16];

    club_config = "[relay]\nqueue_max_envelopes = 4\n";
    club_on_mls(&k);
    club_config = NULL;
    dave = test_client_for(&k.s, "dave", "dave@example.org");
    receive_now(dave);
    for (int i = 0; i < 3; i++)
        assert_int_equal(msv_client_send(k.carol, to_dave, 1, "filling", NULL, 0, NULL, id),
                         MSV_OK);
    assert_int_equal(msv_client_group_change(k.alice, "club", NULL, dave_only, 1, NULL, 0), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, dave->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    assert_int_equal(test_server_metric(&k.s, "mls_welcomes_kept_total"), 1);
    assert_int_equal(history_count(k.alice, k.conversation, "did not reach"), 0);
    assert_int_equal(kept_welcomes(&k.s), 1);
    if (lie)
        kept_welcome_rewritten(&k.s, dave->device_id, "made up by the server");
    receive_now(k.bob);
    receive_now(k.carol);
    receive_now(dave);
    assert_false(client_mls_is_on(dave, k.gid));
    assert_int_equal(msv_client_group_accept(dave, k.conversation), MSV_OK);
    assert_int_equal(msv_client_group_send(k.alice, "club", "hello dave", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(dave);
    assert_int_equal(test_server_metric(&k.s, "mls_welcome_reads_total"), 1);
    if (lie) {
        assert_false(client_mls_is_on(dave, k.gid));
        assert_int_equal(history_count(dave, k.conversation, "names none of this device"), 1);
        /* asked again once the quiet minute is over: the same Welcome is not told again */
        memset(dave->mls_quiet, 0, sizeof(dave->mls_quiet));
        assert_int_equal(msv_client_group_send(k.alice, "club", "again", NULL, 0, NULL, id),
                         MSV_OK);
        receive_now(dave);
        assert_int_equal(test_server_metric(&k.s, "mls_welcome_reads_total"), 2);
        assert_int_equal(history_count(dave, k.conversation, "names none of this device"), 1);
        assert_false(client_mls_is_on(dave, k.gid));
        assert_int_equal(kept_welcomes(&k.s), 1); /* not taken: not dropped */
        msv_client_close(dave);
        club_free(&k);
        return;
    }
    assert_true(client_mls_is_on(dave, k.gid));
    assert_int_equal(kept_welcomes(&k.s), 0); /* dropped once he joined */
    assert_sent_by(dave, k.conversation, "hello dave", "alice@example.org", k.alice->device_id);
    assert_int_equal(history_count(dave, k.conversation, "could not be read"), 0);
    assert_int_equal(history_count(dave, k.conversation, "refused"), 0);
    /* the commit that added him, given to him after all (as a queue still holding it when he
     * joined would): of before he joined, not told as a fork */
    msv_conn_close(dave->conn);
    dave->conn = NULL;
    log_rows(&k, 0, NULL, dave);
    receive_now(dave);
    assert_int_equal(history_count(dave, k.conversation, "a replay, or a fork"), 0);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_send(dave, "club", "dave on mls", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        1);
    both_read(k.alice, k.bob, k.conversation, "dave on mls", "dave@example.org", dave->device_id);
    msv_client_close(dave);
    club_free(&k);
}

static void test_welcome_kept_for_a_full_queue(void **state)
{
    (void)state;
    welcome_kept_for_a_full_queue(0);
}

static void test_kept_welcome_made_up(void **state)
{
    (void)state;
    welcome_kept_for_a_full_queue(1);
}

/*
 * bob's full queue leaves him out of alice's update commit (sent by reference) and the message
 * after it; once he has read his queue, alice's next message, at the epoch he missed, reaches
 * him: he reads the commit from the delivery service's log first and then the message. Before,
 * it "could not be read", and bob stayed behind until he wrote.
 */
static void test_missed_commit_read_from_log(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_bob_misses_a_commit(&k, 1);
    assert_int_equal(msv_client_group_send(k.alice, "club", "after the commit", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "after the commit", "alice@example.org",
                   k.alice->device_id);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 0);
    assert_int_equal(test_server_metric(&k.s, "mls_log_commits_served_total"), 1);
    /* the commit the log gave, brought later by the queue (as when another process of the
     * account reads it meanwhile): no replay told; another commit for that epoch is (a fork) */
    log_rows(&k, 0, NULL, k.bob);
    receive_now(k.bob);
    assert_int_equal(history_count(k.bob, k.conversation, "a replay, or a fork"), 0);
    log_rows(&k, 0, "another commit", k.bob);
    receive_now(k.bob);
    assert_int_equal(history_count(k.bob, k.conversation, "a replay, or a fork"), 1);
    /* and he writes on MLS at once, without catching up again (the queues his receipts
     * filled read first) */
    receive_now(k.carol);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob answers", NULL, 0, NULL, id),
                     MSV_OK);
    both_read(k.alice, k.carol, k.conversation, "bob answers", "bob@example.org", k.bob->device_id);
    assert_int_equal(history_count(k.bob, k.conversation, "behind its MLS group"), 0);
    assert_int_equal(test_server_metric(&k.s, "mls_log_reads_total"), 0); /* since the restart */
    club_free(&k);
}

/*
 * bob misses alice's update commit; his queue then holds carol's and alice's messages after
 * it, carol's update commit and carol's message after that. Reading the first, he catches up
 * from the log only as far as its epoch, so that the second, carol's commit (from his queue)
 * and carol's last message are read in turn. Before, the catch-up took every commit the log
 * held, carol's too, and the messages before her commit could no longer be read.
 */
static void test_catch_up_stops_at_the_message(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_bob_misses_a_commit(&k, 0);
    k.carol->mls_update_messages = 1000;
    receive_now(k.carol);
    assert_int_equal(msv_client_group_send(k.carol, "club", "carol first", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(msv_client_group_send(k.alice, "club", "alice next", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.carol);
    k.carol->mls_update_messages = 1; /* an update commit first (her message since her last) */
    assert_int_equal(msv_client_group_send(k.carol, "club", "carol next", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 1);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "carol first", "carol@example.org", k.carol->device_id);
    assert_sent_by(k.bob, k.conversation, "alice next", "alice@example.org", k.alice->device_id);
    assert_sent_by(k.bob, k.conversation, "carol next", "carol@example.org", k.carol->device_id);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "a replay, or a fork"), 0);
    assert_int_equal(test_server_metric(&k.s, "mls_log_reads_total"), 1);
    club_free(&k);
}

/*
 * alice's client, patched, sends the club a message claiming an epoch five past the group's,
 * while bob is behind by a commit he missed; after it come her real message at the group's
 * epoch, her update commit and her message after that. bob catches up from the log no further
 * than the group's epoch when the server took the patched message (MlsDelivery.group_epoch),
 * so her real message, her commit (from his queue) and her last message are read in turn.
 * Trusting the claim, he took both commits from the log, and her real message could not be
 * read.
 */
static void test_claimed_epoch_goes_no_further(void **state)
{
    struct club k;
    uint8_t id[16], group[64];
    char path[160];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    size_t group_len;
    uint64_t epoch;
    struct msv_mls_sent sent;

    (void)state;
    club_bob_misses_a_commit(&k, 0);
    snprintf(path, sizeof(path), "%s/data/missive.db", k.s.dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT group_id, epoch FROM mls_groups;", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    group_len = (size_t)sqlite3_column_bytes(st, 0);
    assert_true(group_len <= sizeof(group));
    memcpy(group, sqlite3_column_blob(st, 0), group_len);
    epoch = (uint64_t)sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_int_equal(msv_client_connect(k.alice), MSV_OK);
    assert_int_equal(msv_request_mls_send(
                         k.alice->conn,
                         &(struct msv_mls_send){.group_id = group,
                                                .group_id_len = group_len,
                                                .kind = MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION,
                                                .epoch = epoch + 5,
                                                .message = (const uint8_t *)"claims",
                                                .message_len = 6},
                         5000, &sent, NULL),
                     MSV_OK);
    assert_int_equal(msv_client_group_send(k.alice, "club", "alice real", NULL, 0, NULL, id),
                     MSV_OK);
    k.alice->mls_update_messages = 1; /* her update commit first */
    assert_int_equal(msv_client_group_send(k.alice, "club", "alice updated", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "alice real", "alice@example.org", k.alice->device_id);
    assert_sent_by(k.bob, k.conversation, "alice updated", "alice@example.org", k.alice->device_id);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 1); /* claims */
    club_free(&k);
}

/*
 * A dishonest delivery service's commit log: a delivery that is no commit is not taken (bob
 * stays where he was, the message after it recorded unreadable); a commit that does not
 * verify is refused as one from the queue, told once, however often the log gives it again;
 * a read that brought nothing is not made again within the minute.
 */
static void test_log_lies(void **state)
{
    struct club k;
    uint8_t id[16];
    unsigned long long reads;

    (void)state;
    club_bob_misses_a_commit(&k, 0);
    forge_log(&k, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, "not a commit");
    assert_int_equal(msv_client_group_send(k.alice, "club", "after a lie", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_int_equal(history_count(k.bob, k.conversation, "after a lie"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 1);
    assert_int_equal(test_server_metric(&k.s, "mls_log_commits_served_total"), 1); /* the lie */
    assert_int_equal(history_count(k.bob, k.conversation, "not a commit"), 0);
    reads = test_server_metric(&k.s, "mls_log_reads_total");
    assert_int_equal(reads, 1);
    /* a commit that does not verify: refused, told once */
    forge_log(&k, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, "not an MLS commit");
    receive_now(k.carol);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "after a forgery", NULL, 0, NULL, id),
                     MSV_OK);
    memset(k.bob->mls_quiet, 0, sizeof(k.bob->mls_quiet)); /* the minute passed */
    receive_now(k.bob);
    assert_int_equal(history_count(k.bob, k.conversation, "did not verify"), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 2);
    assert_int_equal(test_server_metric(&k.s, "mls_log_reads_total"), 1); /* a restart: anew */
    /* within the minute, the next message reads nothing; past it, the same refused commit
     * comes again and is not told again */
    receive_now(k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "within the minute", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_int_equal(test_server_metric(&k.s, "mls_log_reads_total"), 1);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "past the minute", NULL, 0, NULL, id),
                     MSV_OK);
    memset(k.bob->mls_quiet, 0, sizeof(k.bob->mls_quiet));
    receive_now(k.bob);
    assert_int_equal(test_server_metric(&k.s, "mls_log_reads_total"), 2);
    assert_int_equal(history_count(k.bob, k.conversation, "did not verify"), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 4);
    club_free(&k);
}

/*
 * alice (an admin) misses carol's update commit, her queue full; once she has read her queue,
 * her own update, due before her next message, finds the group past her: she reads carol's
 * commit from the log, commits her update at the group's epoch and sends; the group is not
 * founded again. Before, her update was refused as stale three times and she founded the
 * group again.
 */
static void test_admin_update_catches_up(void **state)
{
    struct club k;
    uint8_t id[16];
    char text[32];

    (void)state;
    club_config = "[relay]\nqueue_max_envelopes = 4\n";
    club_on_mls(&k);
    club_config = NULL;
    k.alice->mls_update_messages = 1000;
    k.carol->mls_update_messages = 1000;
    receive_now(k.alice);
    receive_now(k.bob);
    receive_now(k.carol);
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof(text), "filling %d", i);
        assert_int_equal(msv_client_group_send(k.carol, "club", text, NULL, 0, NULL, id), MSV_OK);
        receive_now(k.bob);
        receive_now(k.carol);
    }
    /* a message of alice's since her last commit: her update is due before her next */
    assert_int_equal(msv_client_group_send(k.alice, "club", "alice before", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    k.carol->mls_update_messages = 1; /* an update commit first, which misses alice */
    assert_int_equal(msv_client_group_send(k.carol, "club", "carol updated", NULL, 0, NULL, id),
                     MSV_OK);
    k.carol->mls_update_messages = 1000;
    receive_now(k.bob);
    receive_now(k.carol);
    receive_now(k.alice);
    assert_int_equal(history_count(k.alice, k.conversation, "carol updated"), 0);
    receive_now(k.bob); /* her receipts read */
    receive_now(k.carol);
    k.alice->mls_update_messages = 1;
    if (msv_client_group_send(k.alice, "club", "alice after", NULL, 0, NULL, id) != MSV_OK)
        fail_msg("alice's message: %s", k.alice->why.message);
    assert_int_equal(settings_count(k.alice, "mls-founded:"), 0);
    assert_int_equal(history_count(k.alice, k.conversation, "behind its MLS group"), 0);
    assert_int_equal(test_server_metric(&k.s, "mls_log_commits_served_total"), 1);
    both_read(k.bob, k.carol, k.conversation, "alice after", "alice@example.org",
              k.alice->device_id);
    assert_int_equal(history_count(k.bob, k.conversation, "refused"), 0);
    /* her message went once, at the group's epoch, after her update: nothing unreadable */
    assert_int_equal(history_count(k.bob, k.conversation, "could not be read"), 0);
    assert_int_equal(history_count(k.carol, k.conversation, "could not be read"), 0);
    club_free(&k);
}

/*
 * A message to bob, whose only device's queue is full, reaches nobody, whether its sender has
 * another device of its own or not: the relay refuses it whole, and it fails with "the
 * recipient's queue is full"; the sender's other device gets no copy of it (before the relay
 * counted a send as reaching someone only through another account's device, alice's tablet
 * took it while it failed, and took it again at each try).
 */
static void test_full_recipient_reaches_nobody(void **state)
{
    struct test_server s;
    struct msv_client *alice, *bob, *carol, *tablet;
    const char *to_bob[1] = {"bob@example.org"};
    uint8_t id[16];

    (void)state;
    test_server_init(&s, "[relay]\nqueue_max_envelopes = 3\n");
    test_server_start(&s);
    alice = test_client_for(&s, "alice", "alice@example.org");
    bob = test_client_for(&s, "bob", "bob@example.org");
    carol = test_client_for(&s, "carol", "carol@example.org");
    tablet = linked_device(&s, alice, "alice-tablet");
    receive_now(bob);
    for (int i = 0; i < 3; i++)
        assert_int_equal(msv_client_send(carol, to_bob, 1, "filling", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_send(carol, to_bob, 1, "refused", NULL, 0, NULL, id),
                     MSV_ERR_TOO_BIG);
    assert_non_null(strstr(carol->why.message, "the recipient's queue is full"));
    assert_int_equal(msv_client_send(alice, to_bob, 1, "nobody has it", NULL, 0, NULL, id),
                     MSV_ERR_TOO_BIG);
    assert_non_null(strstr(alice->why.message, "the recipient's queue is full"));
    receive_now(tablet);
    assert_int_equal(history_count(tablet, "bob@example.org", "nobody has it"), 0);
    /* once bob reads, alice's next message reaches him and her tablet */
    receive_now(bob);
    receive_now(bob);
    assert_int_equal(msv_client_send(alice, to_bob, 1, "now he has room", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(bob);
    receive_now(tablet);
    assert_sent_by(bob, "alice@example.org", "now he has room", "alice@example.org",
                   alice->device_id);
    assert_int_equal(history_count(tablet, "bob@example.org", "now he has room"), 1);
    msv_client_close(tablet);
    msv_client_close(carol);
    msv_client_close(bob);
    msv_client_close(alice);
    test_server_cleanup(&s);
}

/* c's record of its last founding of the club again moved back by ms. */
static void founded_moved_back(struct club *k, struct msv_client *c, int64_t ms)
{
    char key[80];

    time_moved_back(c, club_key(k, "mls-founded:", key), 8, 0, ms);
}

/* c's next receive makes the club's MLS group follow at once (its wait after a failure over). */
static void follow_due_now(struct club *k, struct msv_client *c)
{
    assert_int_equal(client_mls_follow_due(c, k->gid), MSV_OK);
}

/*
 * alice, the club's only admin, loses its MLS state (a restore): nobody else may add her
 * device again, so at the first MLS delivery she cannot read her device founds the group
 * again past that generation, every device added anew; bob and carol join the new generation
 * and all three write on MLS again. The next such delivery within the hour founds nothing.
 */
static void test_sole_admin_lost_state_founds_again(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    state_lost(&k, k.alice);
    assert_int_equal(msv_client_group_send(k.bob, "club", "unread by alice", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.alice);
    assert_int_equal(history_count(k.alice, k.conversation, "founds it again"), 1);
    assert_true(client_mls_is_on(k.alice, k.gid));
    assert_int_equal(settings_count(k.alice, "mls-lost:"), 0);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(history_count(k.bob, k.conversation, "refused"), 0);
    assert_int_equal(msv_client_group_send(k.bob, "club", "all on MLS", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.alice->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        1);
    both_read(k.alice, k.carol, k.conversation, "all on MLS", "bob@example.org", k.bob->device_id);
    /* lost again within the hour: held back, and counted; the founding stays due */
    state_lost(&k, k.alice);
    assert_int_equal(msv_client_group_send(k.bob, "club", "unread again", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.alice);
    assert_false(client_mls_is_on(k.alice, k.gid));
    assert_int_equal(msv_client_mls_refoundings_held(k.alice), 1);
    assert_int_equal(settings_count(k.alice, "mls-follow:"), 1);
    /* an hour on, carol without a KeyPackage: not founded, and still due */
    founded_moved_back(&k, k.alice, 3601LL * 1000);
    drop_key_packages(&k.s, k.carol);
    follow_due_now(&k, k.alice);
    receive_now(k.alice);
    assert_false(client_mls_is_on(k.alice, k.gid));
    assert_int_equal(settings_count(k.alice, "mls-follow:"), 1);
    /* an hour on again, carol's KeyPackages published again: founded */
    founded_moved_back(&k, k.alice, 3601LL * 1000);
    msv_conn_close(k.carol->conn);
    k.carol->conn = NULL;
    receive_now(k.carol);
    follow_due_now(&k, k.alice);
    receive_now(k.alice);
    assert_true(client_mls_is_on(k.alice, k.gid));
    assert_int_equal(settings_count(k.alice, "mls-lost:"), 0);
    club_free(&k);
}

/*
 * bob's laptop, not in the club (his phone gave its wait up, say), links his tablet: his phone,
 * told by the server that the tablet was added to his account, adds it to the club at the end
 * of its receive, as a device it approved itself (the directory lists it under bob); the tablet
 * joins and reads the club on MLS, without writing first or waiting for an admin's change. A
 * notice of a device the directory does not list records nothing. Before, the tablet waited
 * for an admin's next change, or its own first message.
 */
static void test_device_linked_elsewhere_joins(void **state)
{
    struct club k;
    struct msv_client *laptop, *tablet;
    uint8_t id[16];

    (void)state;
    laptop = club_bob_laptop(&k);
    assert_int_equal(msv_client_db_unset_prefix(k.bob->db, "mls-join:"), MSV_OK);
    tablet = link_waiting(&k.s, laptop, "bob-tablet");
    assert_int_equal(msv_client_approve_device(laptop, tablet->device_id), MSV_OK);
    receive_now(tablet); /* its groups, from the laptop's copies, and its KeyPackages */
    receive_now(k.bob);
    assert_int_equal(
        queued_mls(&k.s, tablet->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    assert_int_equal(joins_waiting(k.bob), 0); /* added: nothing waits */
    receive_now(tablet);
    assert_true(client_mls_is_on(tablet, k.gid));
    receive_now(k.alice);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_send(k.carol, "club", "hello tablet", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(tablet);
    assert_sent_by(tablet, k.conversation, "hello tablet", "carol@example.org", k.carol->device_id);
    /* a device the directory does not list (a server's made-up notice): nothing recorded */
    assert_int_equal(client_mls_join_noticed(k.bob, 987654321), MSV_OK);
    assert_int_equal(joins_waiting(k.bob), 0);
    msv_client_close(tablet);
    msv_client_close(laptop);
    club_free(&k);
}

/*
 * bob's laptop, linked and approved, is not added by his phone (its wait given up, say): its
 * message to the club goes as per-device copies (it holds no MLS state) that ask to be added,
 * and alice's device adds it, as the verified directory lists it for bob; the laptop joins and
 * reads the club on MLS.
 */
static void test_linked_device_asks_to_join(void **state)
{
    struct club k;
    struct msv_client *laptop;
    uint8_t id[16];
    char sql[120];

    (void)state;
    laptop = club_bob_laptop(&k);
    assert_int_equal(msv_client_db_unset_prefix(k.bob->db, "mls-join:"), MSV_OK);
    /* nor told again by the server's notice of the approval (withheld) */
    snprintf(sql, sizeof(sql), "DELETE FROM queue WHERE device_id = %llu AND suite = 0",
             (unsigned long long)k.bob->device_id);
    server_sql(&k.s, sql);
    assert_int_equal(msv_client_group_send(laptop, "club", "laptop here", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.bob);
    assert_int_equal(
        queued_mls(&k.s, laptop->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 0);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "laptop here", "bob@example.org", laptop->device_id);
    assert_int_equal(
        queued_mls(&k.s, laptop->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(laptop);
    assert_true(client_mls_is_on(laptop, k.gid));
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_send(k.carol, "club", "hello laptop", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(laptop);
    assert_sent_by(laptop, k.conversation, "hello laptop", "carol@example.org", k.carol->device_id);
    msv_client_close(laptop);
    club_free(&k);
}

/*
 * carol, an admin demoted whose client still takes itself for one (its state from before the
 * demotion, given the epoch the group context names, as a patched client would: an honest one
 * holding an older state goes by the context, which names her no admin), replaces
 * bob's leaf when his lost state asks for it: alice refuses her commit (no admin's, and not only
 * adds of her own account's devices) and bob her Welcome; alice, an admin, founds the group
 * again with bob in it, and he writes on MLS again.
 */
static void test_replacement_by_no_admin_refused(void **state)
{
    struct club k;
    char key[80];
    uint8_t *promoted = NULL, id[16];
    size_t promoted_len = 0;

    (void)state;
    promoted = club_carol_promoted(&k, "group-state:", key, &promoted_len);
    assert_int_equal(msv_client_group_admin(k.alice, "club", "carol@example.org", 0), MSV_OK);
    receive_now(k.carol);
    receive_now(k.bob);
    /* the epoch after "MSV-group-state-v1" and the group id */
    assert_true(promoted_len > 18 + 16 + 8);
    msv_put_u64be(promoted + 18 + 16, msv_get_u64be(promoted + 18 + 16) + 1);
    assert_int_equal(msv_client_db_set(k.carol->db, key, promoted, promoted_len), MSV_OK);
    free(promoted);

    state_lost(&k, k.bob);
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob restored", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.carol);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.alice);
    assert_int_equal(
        history_count(k.alice, k.conversation, "nor changes only its own account's devices"), 1);
    receive_now(k.bob);
    assert_int_equal(history_count(k.bob, k.conversation, "no admin's"), 1);
    assert_true(client_mls_is_on(k.bob, k.gid));
    assert_int_equal(msv_client_group_send(k.bob, "club", "bob on MLS", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "bob on MLS", "bob@example.org", k.bob->device_id);
    club_free(&k);
}

/*
 * An ask to join again is taken only when written within the hour and from a device the roster
 * names under its sender's handle: an older one (held back by the server, or sent again from an
 * outbox) and one naming another account's device record nothing.
 */
static void test_stale_or_misnamed_ask_changes_nothing(void **state)
{
    struct club k;
    int64_t now;

    (void)state;
    club_on_mls(&k);
    now = msv_wall_ms();
    assert_int_equal(client_mls_rejoin_asked(k.alice, k.gid, "bob@example.org", k.bob->device_id,
                                             (uint64_t)(now - 3601LL * 1000)),
                     MSV_OK);
    assert_int_equal(settings_count(k.alice, "mls-rejoin:"), 0);
    assert_int_equal(client_mls_rejoin_asked(k.alice, k.gid, "carol@example.org", k.bob->device_id,
                                             (uint64_t)now),
                     MSV_OK);
    assert_int_equal(settings_count(k.alice, "mls-rejoin:"), 0);
    assert_int_equal(client_mls_rejoin_asked(k.alice, k.gid, "bob@example.org", k.bob->device_id,
                                             (uint64_t)(now - 3500LL * 1000)),
                     MSV_OK);
    assert_int_equal(settings_count(k.alice, "mls-rejoin:"), 1);
    club_free(&k);
}

/* c takes an application delivery of the club's MLS group naming generation gen. */
static void take_of_generation(struct club *k, struct msv_client *c, uint32_t gen, char notice[400])
{
    uint8_t msg[64];

    memset(msg, 0x5a, sizeof(msg));
    take_crafted_of(c, k->gid, gen, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, 1, msg, sizeof(msg),
                    notice);
}

/*
 * The only admin's device that lost its state founds the group again past the highest
 * generation a delivery named, which the server chooses: one naming 2^31 - 1 or more is founded
 * past by nobody; 2^31 - 2 is (its Welcome names 2^31 - 1), and a lower one named later lowers
 * nothing.
 */
static void test_lost_generation_at_the_top(void **state)
{
    struct club k;
    char notice[400], key[80];
    uint8_t *v = NULL;
    size_t len = 0;

    (void)state;
    club_on_mls(&k);
    state_lost(&k, k.alice);
    take_of_generation(&k, k.alice, 0x7fffffffu, notice);
    assert_non_null(strstr(notice, "not in could not be read"));
    assert_null(strstr(notice, "founds it again"));
    assert_int_equal(settings_count(k.alice, "mls-lost:"), 0);
    assert_int_equal(settings_count(k.alice, "mls-refound:"), 0);
    take_of_generation(&k, k.alice, 0xffffffffu, notice);
    assert_int_equal(settings_count(k.alice, "mls-lost:"), 0);

    take_of_generation(&k, k.alice, 0x7ffffffeu, notice);
    assert_non_null(strstr(notice, "founds it again"));
    take_of_generation(&k, k.alice, 5, notice);
    assert_int_equal(msv_client_db_get(k.alice->db, club_key(&k, "mls-lost:", key), &v, &len),
                     MSV_OK);
    assert_int_equal(len, 4);
    assert_int_equal(msv_get_u32be(v), 0x7ffffffeu);
    free(v);
    v = NULL;
    assert_int_equal(settings_count(k.alice, "mls-refound:"), 1);
    receive_now(k.alice);
    assert_true(client_mls_is_on(k.alice, k.gid));
    assert_int_equal(settings_count(k.alice, "mls-lost:"), 0);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, &v, &len), 1);
    {
        Msv__Wire__MlsDelivery *d = msv__wire__mls_delivery__unpack(NULL, len, v);

        assert_non_null(d);
        assert_int_equal(d->group_id.len, 20);
        assert_int_equal(msv_get_u32be(d->group_id.data + 16), 0x7fffffffu); /* the generation */
        msv__wire__mls_delivery__free_unpacked(d, NULL);
    }
    free(v);
    receive_now(k.bob);
    assert_true(client_mls_is_on(k.bob, k.gid));
    club_free(&k);
}

/*
 * bob (no admin) sends while alice, having committed twice, founds the group again: the
 * delivery service answers his message with the old generation's epoch, past his; reading the
 * queue brings him into the new generation, where his message goes again and is read (he is
 * not marked behind in a generation he is not behind in).
 */
static void test_send_crossing_a_founding_again(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    k.alice->mls_update_messages = 1;
    assert_int_equal(msv_client_group_send(k.alice, "club", "a1", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(k.alice, "club", "a2", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(k.alice, "club", "a3", NULL, 0, NULL, id), MSV_OK);
    founding_again_due(&k, k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "founded", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(msv_client_group_send(k.bob, "club", "crossing", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(settings_count(k.bob, "mls-behind:"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "behind its MLS group"), 0);
    assert_sent_by(k.bob, k.conversation, "founded", "alice@example.org", k.alice->device_id);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "crossing", "bob@example.org", k.bob->device_id);
    assert_int_equal(msv_client_group_send(k.bob, "club", "and on", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "and on", "bob@example.org", k.bob->device_id);
    club_free(&k);
}

/* The count the server's database answers sql with (blob, if not NULL, bound to its ?). */
static size_t server_count(struct test_server *s, const char *sql, const uint8_t *blob,
                           size_t blob_len)
{
    char path[160];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    size_t n;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (blob != NULL)
        assert_int_equal(sqlite3_bind_blob(st, 1, blob, (int)blob_len, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* How many rows of table (mls_members: member devices; mls_groups: groups) the delivery service
 * holds for generation gen of the group gid's MLS group. */
static size_t ds_rows(struct test_server *s, const char *table, const uint8_t gid[16], uint32_t gen)
{
    char sql[120];
    uint8_t id[20];

    memcpy(id, gid, 16);
    msv_put_u32be(id + 16, gen);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s WHERE group_id = ?", table);
    return server_count(s, sql, id, sizeof(id));
}

/* How many claims of one of c's device's KeyPackages the server holds open. */
static size_t claims_of(struct test_server *s, const struct msv_client *c)
{
    char sql[120];

    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM mls_claims WHERE device_id = %llu",
             (unsigned long long)c->device_id);
    return server_count(s, sql, NULL, 0);
}

/* c's records of generations to leave dated a day and a second back, so that they are due; how
 * many there were. */
static size_t leaves_aged(struct msv_client *c)
{
    struct msv_setting *v = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_settings(c->db, "mls-leave:", SIZE_MAX, &v, &n), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        assert_true(v[i].len > 24);
        msv_put_u64be(v[i].value, msv_get_u64be(v[i].value) - 86401000);
        assert_int_equal(msv_client_db_set(c->db, v[i].key, v[i].value, v[i].len), MSV_OK);
    }
    msv_settings_free(v, n);
    return n;
}

/*
 * Founding the group again moves its devices on to the next generation, and each leaves the
 * generation it moved on from at the delivery service a day later (its own Remove proposal
 * there): the old one keeps no member and goes, so that foundings again do not fill the 1,000
 * groups a device may be in there. A leave with no answer is tried again; the leaves are told to
 * nobody. Before, every device stayed a member of every generation.
 */
static void test_superseded_generation_left(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, 0), 3);
    founding_again_due(&k, k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "founded", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, 1), 3);
    both_read(k.bob, k.carol, k.conversation, "founded", "alice@example.org", k.alice->device_id);
    /* each keeps the old generation for a day (a device that has not read its queue yet may
     * write there meanwhile) */
    receive_now(k.alice);
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, 0), 3);
    assert_int_equal(leaves_aged(k.bob), 1);
    assert_int_equal(leaves_aged(k.carol), 1);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(settings_count(k.bob, "mls-leave:"), 0);
    assert_int_equal(settings_count(k.carol, "mls-leave:"), 0);
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, 0), 1); /* alice's alone */
    /* alice's leave finds no server: kept, and tried again at her next receive */
    assert_int_equal(leaves_aged(k.alice), 1);
    k.alice->mls_join_retry_ms = 1;
    for (struct msv_client **o = (struct msv_client *[]){k.alice, k.bob, k.carol, NULL}; *o; o++) {
        msv_conn_close((*o)->conn);
        (*o)->conn = NULL;
    }
    test_server_stop(&k.s);
    client_mls_joins(k.alice);
    assert_int_equal(settings_count(k.alice, "mls-leave:"), 1);
    test_server_start(&k.s);
    usleep(5000);
    receive_now(k.alice);
    assert_int_equal(settings_count(k.alice, "mls-leave:"), 0);
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, 0), 0);
    assert_int_equal(ds_rows(&k.s, "mls_groups", k.gid, 0), 0); /* gone with its last member */
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, 1), 3);
    /* the group goes on in its new generation, and nobody was told of the leaves */
    assert_int_equal(msv_client_group_send(k.bob, "club", "still here", NULL, 0, NULL, id), MSV_OK);
    both_read(k.alice, k.carol, k.conversation, "still here", "bob@example.org", k.bob->device_id);
    assert_int_equal(history_count(k.alice, k.conversation, "proposal"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "proposal"), 0);
    assert_int_equal(history_count(k.carol, k.conversation, "proposal"), 0);
    club_free(&k);
}

/*
 * c, who knows the group's id (a member's patched client, or one removed), makes generation gen
 * of its MLS group at the delivery service first: a group of its own, with into's device in it
 * too unless into is NULL (from a KeyPackage c claims).
 */
static void squat(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                  const struct msv_client *into)
{
    uint8_t id[20], seed[32], *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0, kp_len = 0;
    const uint8_t *kp = NULL;
    uint64_t now_s = (uint64_t)(msv_wall_ms() / 1000), added = 0;
    struct msv_mls_member *m = NULL;
    struct msv_mls_sent sent;
    msv_frame *claimed = NULL;
    const char *why = NULL;

    memcpy(id, gid, 16);
    msv_put_u32be(id + 16, gen);
    randombytes_buf(seed, sizeof(seed));
    assert_int_equal(msv_client_connect(c), MSV_OK);
    if (into != NULL) {
        assert_int_equal(msv_request_mls_claim(c->conn, into->handle, 5000, &claimed, &c->why),
                         MSV_OK);
        for (size_t i = 0; i < claimed->mls_key_packages->n_key_packages; i++) {
            const Msv__Wire__MlsKeyPackage *x = claimed->mls_key_packages->key_packages[i];

            if (x->device_id == into->device_id) {
                kp = x->key_package.data;
                kp_len = x->key_package.len;
                added = x->device_id;
            }
        }
        assert_non_null(kp);
    }
    assert_int_equal(msv_mls_member_create(MSV_MLS_SUITE_X25519_AES128GCM, id, sizeof(id), seed,
                                           (const uint8_t *)"squatter", 8, now_s - 60,
                                           now_s + 86400, &m),
                     MSV_OK);
    {
        struct msv_mls_commit_spec spec = {
            .key_packages = &kp, .key_package_lens = &kp_len, .n_adds = kp != NULL, .now = now_s};
        struct msv_mls_send send = {.group_id = id,
                                    .group_id_len = sizeof(id),
                                    .kind = MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT,
                                    .added = &added,
                                    .n_added = kp != NULL};

        assert_int_equal(msv_mls_member_commit_make(m, &spec, &commit, &commit_len, &welcome,
                                                    &welcome_len, &why),
                         MSV_OK);
        send.message = commit;
        send.message_len = commit_len;
        assert_int_equal(msv_request_mls_send(c->conn, &send, 5000, &sent, &c->why), MSV_OK);
    }
    msv_mls_member_free(m);
    msv_frame_free(claimed);
    free(commit);
    free(welcome);
}

/* The generation of the club's MLS group c holds. */
static uint32_t held_gen(struct msv_client *c, const uint8_t gid[16])
{
    struct msv_mls_member *m = stored_member(c, gid);
    uint32_t gen = msv_get_u32be(m->group_id + 16);

    msv_mls_member_free(m);
    return gen;
}

/*
 * carol, away for over a day while alice founds the club again, writes in the generation the
 * others have left before she reads her queue: nobody there takes it, so her device reads its queue
 * (the Welcome) and the message goes again in the new generation, where bob and alice read it.
 * Before, it went to nobody, and nobody was told.
 */
static void test_writes_where_nobody_is_left(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    founding_again_due(&k, k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "founded", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.bob);
    assert_int_equal(leaves_aged(k.bob), 1);
    assert_int_equal(leaves_aged(k.alice), 1);
    receive_now(k.bob);
    receive_now(k.alice);
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, 0), 1); /* carol's alone */
    assert_int_equal(msv_client_group_send(k.carol, "club", "from behind", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(held_gen(k.carol, k.gid), 1);
    both_read(k.bob, k.alice, k.conversation, "from behind", "carol@example.org",
              k.carol->device_id);
    club_free(&k);
}

/*
 * carol, a member who knows the club's id, makes its MLS group's next generation at the
 * delivery service before alice founds it again: alice's founding, which that group does not
 * have her device in, goes past it by a distance nobody can guess, and the club goes on on MLS.
 * Before, her founding was refused at every try ("not a member of the group").
 */
static void test_squatted_generation_founded_past(void **state)
{
    struct club k;
    uint8_t id[16];
    uint32_t gen;

    (void)state;
    club_on_mls(&k);
    squat(k.carol, k.gid, 1, NULL);
    founding_again_due(&k, k.alice);
    assert_int_equal(msv_client_group_send(k.alice, "club", "founded past", NULL, 0, NULL, id),
                     MSV_OK);
    gen = held_gen(k.alice, k.gid);
    assert_in_range(gen, 2, 1 + (1u << 16));
    assert_int_equal(settings_count(k.alice, "mls-gen-taken:"), 0);
    both_read(k.bob, k.carol, k.conversation, "founded past", "alice@example.org",
              k.alice->device_id);
    assert_int_equal(held_gen(k.bob, k.gid), gen);
    assert_int_equal(held_gen(k.carol, k.gid), gen);
    assert_int_equal(ds_rows(&k.s, "mls_members", k.gid, gen), 3);
    club_free(&k);
}

/*
 * The same, the squatter's group holding alice's device too (as another admin's founding at the
 * same moment would): refused as stale, her founding waits a minute for that founding's Welcome
 * (her message waits in the outbox meanwhile, said), then goes past it.
 */
static void test_squatted_generation_with_her_waits_a_minute(void **state)
{
    struct club k;
    uint8_t id[16];
    char key[80];
    size_t claims;

    (void)state;
    club_on_mls(&k);
    squat(k.carol, k.gid, 1, k.alice);
    founding_again_due(&k, k.alice);
    claims = claims_of(&k.s, k.bob);
    assert_int_equal(msv_client_group_send(k.alice, "club", "held back", NULL, 0, NULL, id),
                     MSV_ERR_IO);
    assert_non_null(strstr(k.alice->why.message, "waits a minute"));
    assert_int_equal(held_gen(k.alice, k.gid), 0);
    assert_int_equal(settings_count(k.alice, "mls-gen-taken:"), 1);
    /* one founding tried, not one a try: nothing more claimed while she waits */
    assert_int_equal(claims_of(&k.s, k.bob), claims + 1);
    assert_int_equal(msv_client_group_send(k.alice, "club", "still held", NULL, 0, NULL, id),
                     MSV_ERR_IO);
    assert_int_equal(claims_of(&k.s, k.bob), claims + 1);
    time_moved_back(k.alice, club_key(&k, "mls-gen-taken:", key), 13, 5, 61000);
    msv_conn_close(k.alice->conn); /* the next connection sends what waits in the outbox */
    k.alice->conn = NULL;
    assert_int_equal(msv_client_group_send(k.alice, "club", "past it", NULL, 0, NULL, id), MSV_OK);
    assert_true(held_gen(k.alice, k.gid) > 1);
    both_read(k.bob, k.carol, k.conversation, "past it", "alice@example.org", k.alice->device_id);
    assert_sent_by(k.bob, k.conversation, "held back", "alice@example.org", k.alice->device_id);
    assert_sent_by(k.bob, k.conversation, "still held", "alice@example.org", k.alice->device_id);
    assert_int_equal(held_gen(k.bob, k.gid), held_gen(k.alice, k.gid));
    club_free(&k);
}

/* The delivery service's every MLS group moved on by five epochs no member was sent. */
static void epochs_moved_on(struct club *k)
{
    club_restart(k, "UPDATE mls_groups SET epoch = epoch + 5", NULL);
}

/*
 * A delivery service that says the group moved on (its commits withheld, or a lie) makes
 * alice, an admin, found the group again once; said again within the hour, her message goes as
 * per-device copies, told, and nothing is founded again (a server or a member cannot make her
 * device found the group at every message).
 */
static void test_founding_again_at_most_hourly(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    epochs_moved_on(&k);
    assert_int_equal(msv_client_group_send(k.alice, "club", "first", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "first", "alice@example.org", k.alice->device_id);
    receive_now(k.carol);
    epochs_moved_on(&k);
    /* the next ones go the same way, told once */
    for (const char **text = (const char *[]){"second", "third", NULL}; *text; text++) {
        assert_int_equal(msv_client_group_send(k.alice, "club", *text, NULL, 0, NULL, id), MSV_OK);
        assert_int_equal(
            queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL),
            0);
        assert_int_equal(history_count(k.alice, k.conversation, "at most hourly"), 1);
        receive_now(k.bob);
        assert_sent_by(k.bob, k.conversation, *text, "alice@example.org", k.alice->device_id);
    }
    assert_int_equal(msv_client_mls_refoundings_held(k.alice), 2); /* each held back, counted */
    club_free(&k);
}

/*
 * Two processes of alice's device send to the club at once while the delivery service says the
 * group moved on. The server keeps one connection per device that takes deliveries, so the two
 * processes' reads of the queue wait for each other (the deliveries lock) or, made under the MLS
 * lock, end each other's connection: a send that loses its connection stays in the outbox (it
 * goes with the next connection). However they cross, the group is founded again once (one Welcome
 * for bob), and bob reads both messages once alice's outbox is flushed. (The connections ending
 * each other mostly keep the two apart: this passes with the MLS lock taken out too, so it is no
 * test of that lock's window itself.)
 */
static void test_two_processes_found_once(void **state)
{
    struct club k;
    pid_t pid[2];
    int go[2], status;
    char text[2][32];

    (void)state;
    club_on_mls(&k);
    epochs_moved_on(&k);
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < 2; i++) {
        snprintf(text[i], sizeof(text[i]), "from process %d", i);
        pid[i] = fork();
        assert_true(pid[i] >= 0);
        if (pid[i] == 0) {
            struct msv_client *c = NULL;
            uint8_t id[16], b;
            msv_err err;

            close(go[1]);
            if (msv_client_open(k.alice->dir, NULL, &c) != MSV_OK)
                _exit(2);
            (void)!read(go[0], &b, 1); /* both start once both are open */
            err = msv_client_group_send(c, "club", text[i], NULL, 0, NULL, id);
            _exit(err == MSV_OK || err == MSV_ERR_IO ? 0 : 3);
        }
    }
    close(go[0]);
    nanosleep(&(struct timespec){0, 300000000}, NULL); /* both open */
    close(go[1]);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    msv_conn_close(k.alice->conn);
    k.alice->conn = NULL;
    assert_int_equal(msv_client_connect(k.alice), MSV_OK); /* what is still queued goes */
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME, NULL, NULL), 1);
    receive_now(k.bob);
    for (int i = 0; i < 2; i++)
        assert_sent_by(k.bob, k.conversation, text[i], "alice@example.org", k.alice->device_id);
    club_free(&k);
}

/*
 * carol leaves the club: bob (no admin) cannot send while her leaf is in the tree, and alice's
 * device, an admin's, commits her removal at the end of the receive that took her leaving,
 * without waiting for a send of its own; bob then writes again, and carol cannot read it.
 */
static void test_leave_followed_by_admin(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_leave(k.carol, k.conversation), MSV_OK);
    receive_now(k.bob);
    assert_int_not_equal(msv_client_group_send(k.bob, "club", "too soon", NULL, 0, NULL, id),
                         MSV_OK);
    receive_now(k.alice);
    assert_int_equal(settings_count(k.alice, "mls-follow:"), 0);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, NULL, NULL), 1);
    receive_now(k.bob);
    assert_int_equal(msv_client_group_send(k.bob, "club", "carol has gone", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(k.alice);
    receive_now(k.carol);
    assert_sent_by(k.alice, k.conversation, "carol has gone", "bob@example.org", k.bob->device_id);
    assert_int_equal(history_count(k.carol, k.conversation, "carol has gone"), 0);
    club_free(&k);
}

/*
 * alice's device cannot commit carol's leaving (the delivery service says the group moved on):
 * it tries again later, not at every receive (the record says when), and gives up after a
 * week, told in the group.
 */
static void test_follow_backs_off(void **state)
{
    struct club k;
    struct msv_setting *st = NULL;
    size_t n = 0;
    uint8_t v[16];
    int64_t now;

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_leave(k.carol, k.conversation), MSV_OK);
    epochs_moved_on(&k);
    now = msv_wall_ms();
    receive_now(k.alice);
    assert_int_equal(msv_client_db_settings(k.alice->db, "mls-follow:", SIZE_MAX, &st, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(st[0].len, 16);
    assert_true((int64_t)msv_get_u64be(st[0].value + 8) >= now + 60 * 1000);
    /* not due: the next receive leaves it as it is (a try would set its next time again) */
    memcpy(v, st[0].value, sizeof(v));
    msv_settings_free(st, n);
    receive_now(k.alice);
    assert_int_equal(msv_client_db_settings(k.alice->db, "mls-follow:", SIZE_MAX, &st, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(st[0].value, v, sizeof(v));
    /* a week on, given up and told */
    msv_put_u64be(v, (uint64_t)(now - 8LL * 86400 * 1000));
    msv_put_u64be(v + 8, 0);
    assert_int_equal(msv_client_db_set(k.alice->db, st[0].key, v, sizeof(v)), MSV_OK);
    msv_settings_free(st, n);
    assert_int_equal(msv_client_mls_waits_given_up(k.alice), 0);
    receive_now(k.alice);
    assert_int_equal(settings_count(k.alice, "mls-follow:"), 0);
    assert_int_equal(history_count(k.alice, k.conversation, "could not commit the removal"), 1);
    assert_int_equal(msv_client_mls_waits_given_up(k.alice), 1); /* counted too */
    club_free(&k);
}

/*
 * A founding again that cannot be made (carol's device has no KeyPackage, as a hostile member
 * can arrange, and the delivery service says the group moved on) counts toward the hourly
 * limit: alice's messages after the first go as per-device copies without claiming every
 * member's KeyPackages again, and the delivery service is not said to have taken a commit it
 * never got.
 */
static void test_failed_founding_again_counted(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    drop_key_packages(&k.s, k.carol);
    epochs_moved_on(&k);
    for (const char **text = (const char *[]){"one", "two", "three", NULL}; *text; text++)
        assert_int_equal(msv_client_group_send(k.alice, "club", *text, NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(history_count(k.alice, k.conversation, "could not be founded again"), 1);
    assert_int_equal(history_count(k.alice, k.conversation, "yet took this device's commit"), 0);
    assert_int_equal(history_count(k.alice, k.conversation, "behind its MLS group"), 1);
    receive_now(k.bob);
    for (const char **text = (const char *[]){"one", "two", "three", NULL}; *text; text++)
        assert_sent_by(k.bob, k.conversation, *text, "alice@example.org", k.alice->device_id);
    club_free(&k);
}

/*
 * A server that answers alice's MLS message "stale devices" (a refusal no honest delivery
 * service gives one) makes it fail and stay queued: it is not sent as per-device copies (which
 * a server could otherwise make every member fall back to, unseen).
 */
static void test_stale_devices_not_a_fallback(void **state)
{
    struct club k;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    club_restart(&k, NULL, "mls_stale_devices = true");
    assert_int_not_equal(msv_client_group_send(k.alice, "club", "not so", NULL, 0, NULL, id),
                         MSV_OK);
    assert_int_equal(receive_now(k.bob), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "not so"), 0);
    assert_int_equal(settings_count(k.alice, "mls-behind:"), 0);
    club_free(&k);
}

/* Sets c's by-reference hour of device as begun ago_ms ago, with nothing fetched. */
static void by_ref_hour(struct msv_client *c, uint64_t device, int64_t ago_ms)
{
    char key[64];
    uint8_t v[16] = {0};

    snprintf(key, sizeof(key), "mls-by-ref:%llu", (unsigned long long)device);
    msv_put_u64be(v, (uint64_t)(msv_wall_ms() - ago_ms));
    assert_int_equal(msv_client_db_set(c->db, key, v, sizeof(v)), MSV_OK);
}

/*
 * References to commits of 8 MiB each (the largest a reference may name) from one device: the
 * first eight are fetched (the server has none of them: told so), the ninth is past the 64 MiB
 * that device may have fetched in an hour: not fetched, told so, counted. The hours of other
 * devices that ended are forgotten when a device's hour begins; one still running is kept.
 */
static void test_by_reference_allowance(void **state)
{
    struct club k;
    uint8_t ref[102];
    char notice[400];
    uint8_t *v = NULL;
    size_t len = 0;

    (void)state;
    club_on_mls(&k);
    by_ref_hour(k.bob, 90001, 2 * 3600 * 1000);  /* ended an hour ago */
    by_ref_hour(k.bob, 90002, 3600 * 1000 + 1);  /* just ended */
    by_ref_hour(k.bob, 90003, 10 * 60 * 1000);   /* 50 minutes left */
    by_ref_hour(k.bob, 90004, -2 * 3600 * 1000); /* two hours ahead: the clock was set back */
    for (int i = 0; i < 9; i++) {
        ref[0] = 0xff;
        ref[1] = 1;
        ref[2] = 0;
        ref[3] = 0x80; /* 8 MiB, big-endian */
        ref[4] = 0;
        ref[5] = 0;
        randombytes_buf(ref + 6, sizeof(ref) - 6);
        take_crafted(k.bob, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, 1, ref, sizeof(ref),
                     notice);
        assert_non_null(strstr(notice, i < 8 ? "the server does not have it"
                                             : "more than 64 MiB by reference within the hour"));
    }
    assert_int_equal(msv_client_mls_by_ref_held(k.bob), 1);
    assert_int_equal(settings_count(k.bob, "mls-by-ref:"), 2); /* 90003's and alice's */
    assert_int_equal(msv_client_db_get(k.bob->db, "mls-by-ref:90003", &v, &len), MSV_OK);
    free(v);
    club_free(&k);
}

/* carol marks bob's devices as now listed verified */
static void verify_bob(struct club *k)
{
    char number[MSV_SAFETY_DIGITS + 1];
    uint8_t digest[32];

    assert_int_equal(msv_client_safety_number(k->carol, "bob@example.org", 1, number, digest),
                     MSV_OK);
    assert_int_equal(msv_client_mark_verified(k->carol, "bob@example.org", digest), MSV_OK);
}

/*
 * A member's verified mark holds on MLS as on per-device copies: carol verified bob; his new
 * laptop joins the group, and carol's message is refused (nothing goes) until she accepts his
 * devices again. Once he removed it, its leaf stays in the tree until an admin's commit: carol's
 * messages then go as per-device copies to the devices she verified, told once.
 */
static void test_verified_member_held_on_mls(void **state)
{
    struct club k;
    struct msv_client *laptop;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    verify_bob(&k);
    assert_int_equal(msv_client_group_send(k.carol, "club", "bob verified", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(
        queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
        1);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "bob verified", "carol@example.org", k.carol->device_id);
    laptop = linked_device(&k.s, k.bob, "bob-laptop");
    receive_now(k.bob); /* his commit adds the laptop */
    receive_now(k.carol);
    receive_now(laptop);
    assert_true(client_mls_is_on(laptop, k.gid));
    assert_int_not_equal(msv_client_group_send(k.carol, "club", "held back", NULL, 0, NULL, id),
                         MSV_OK);
    assert_int_equal(k.carol->why.code, MSV_REFUSAL_KEY_CHANGE);
    assert_non_null(strstr(k.carol->why.message, "changed since you verified them"));
    receive_now(laptop);
    receive_now(k.bob);
    assert_int_equal(history_count(laptop, k.conversation, "held back"), 0);
    assert_int_equal(history_count(k.bob, k.conversation, "held back"), 0);
    assert_int_equal(history_count(k.carol, k.conversation, "removed member"), 0);
    verify_bob(&k); /* accepted */
    assert_int_equal(msv_client_group_send(k.carol, "club", "laptop too", NULL, 0, NULL, id),
                     MSV_OK);
    receive_now(laptop);
    receive_now(k.bob);
    assert_sent_by(laptop, k.conversation, "laptop too", "carol@example.org", k.carol->device_id);
    /* the laptop removed: refused again, then accepted; its leaf stays in the tree until an
     * admin's commit (or the server withholds that from carol) */
    assert_int_equal(msv_client_remove_device(k.bob, laptop->device_id), MSV_OK);
    assert_int_not_equal(msv_client_group_send(k.carol, "club", "after removal", NULL, 0, NULL, id),
                         MSV_OK);
    assert_int_equal(k.carol->why.code, MSV_REFUSAL_KEY_CHANGE);
    verify_bob(&k);
    for (int i = 0; i < 2; i++) {
        char text[32];

        snprintf(text, sizeof(text), "copies %d", i);
        assert_int_equal(msv_client_group_send(k.carol, "club", text, NULL, 0, NULL, id), MSV_OK);
        assert_int_equal(queued_mls(&k.s, k.bob->device_id,
                                    MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL, NULL),
                         0);
        receive_now(k.bob);
        assert_sent_by(k.bob, k.conversation, text, "carol@example.org", k.carol->device_id);
    }
    assert_int_equal(
        history_count(k.carol, k.conversation, "is not one of the devices you verified"), 1);
    assert_int_equal(settings_count(k.carol, "mls-behind:"), 0);
    /* alice verified nobody: hers still go on MLS */
    assert_int_equal(msv_client_group_send(k.alice, "club", "alice on mls", NULL, 0, NULL, id),
                     MSV_OK);
    assert_true(queued_mls(&k.s, k.bob->device_id, MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION, NULL,
                           NULL) >= 1);
    receive_now(k.bob);
    assert_sent_by(k.bob, k.conversation, "alice on mls", "alice@example.org", k.alice->device_id);
    /* bob deletes his account: carol's messages are not held back (nothing to accept), they
     * go as per-device copies to the others while his leaf stays */
    assert_int_equal(msv_client_delete_account(k.bob, TEST_PASSWORD), MSV_OK);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_send(k.carol, "club", "bob gone", NULL, 0, NULL, id), MSV_OK);
    receive_now(k.alice);
    assert_sent_by(k.alice, k.conversation, "bob gone", "carol@example.org", k.carol->device_id);
    msv_client_close(laptop);
    club_free(&k);
}

/* The group context c's MLS state of the club carries (present). */
static void club_context(const struct club *k, struct msv_client *c, struct client_group_ctx *g)
{
    assert_int_equal(client_mls_group_ctx(c, k->gid, g), MSV_OK);
    assert_true(g->present);
}

/* c's held signed state of the club is the one its group context names. */
static void context_names_state(const struct club *k, struct msv_client *c,
                                const struct client_group_ctx *g)
{
    uint64_t epoch = 0;
    uint8_t hash[32];

    assert_int_equal(client_group_state_digest(c, k->gid, &epoch, hash, NULL), MSV_OK);
    assert_int_equal(g->state_epoch, epoch);
    assert_memory_equal(g->state_hash, hash, 32);
}

/*
 * The admins go into the group context from the founding on, and every member holds the same:
 * alice alone, then bob too once she made him an admin (her change's commit carries it).
 */
static void test_context_carries_admins(void **state)
{
    struct msv_client *members[3];
    struct club k;
    struct client_group_ctx g;

    (void)state;
    club_on_mls(&k);
    members[0] = k.alice;
    members[1] = k.bob;
    members[2] = k.carol;
    for (size_t i = 0; i < 3; i++) {
        club_context(&k, members[i], &g);
        assert_string_equal(g.admins, "alice@example.org\n");
        assert_int_equal(g.link_version, 0);
        context_names_state(&k, members[i], &g);
        client_group_ctx_clear(&g);
    }
    assert_int_equal(msv_client_group_admin(k.alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    for (size_t i = 0; i < 3; i++) {
        club_context(&k, members[i], &g);
        assert_int_equal(g.n_admins, 2);
        assert_true(client_group_ctx_admin(&g, "alice@example.org"));
        assert_true(client_group_ctx_admin(&g, "bob@example.org"));
        context_names_state(&k, members[i], &g);
        client_group_ctx_clear(&g);
    }
    club_free(&k);
}

/* The server withholds from c every delivery but MLS ones (signed changes, link settings). */
static void withhold_all_but_mls(struct club *k, struct msv_client *c)
{
    char sql[160];
    struct msv_client *all[3] = {k->alice, k->bob, k->carol};

    for (size_t i = 0; i < 3; i++) {
        msv_conn_close(all[i]->conn);
        all[i]->conn = NULL;
    }
    test_server_stop(&k->s);
    snprintf(sql, sizeof(sql), "DELETE FROM queue WHERE device_id = %llu AND suite != %d",
             (unsigned long long)c->device_id, MLS_SUITE);
    server_sql(&k->s, sql);
    test_server_start(&k->s);
}

/*
 * bob was an admin, and alice took it back; the server withholds the signed change from carol,
 * who still holds bob as an admin, but not the commit that carried the admins into the group
 * context. bob's patched client then removes alice's device: carol refuses it by the context's
 * admins (by her own copy of the state she would have taken it).
 */
static void test_context_admins_over_a_withheld_change(void **state)
{
    struct club k;
    char *admins = NULL;

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_admin(k.alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_admin(k.alice, "club", "bob@example.org", 0), MSV_OK);
    withhold_all_but_mls(&k, k.carol);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_admins(k.carol, k.gid, &admins), MSV_OK);
    assert_non_null(strstr(admins, "bob@example.org")); /* her copy of the state is behind */
    free(admins);
    receive_now(k.bob);
    patched_commit(k.bob, k.gid, k.alice->device_id, NULL, 0, 0);
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "its committer is no admin"), 1);
    /* alice, whose leaf it removes, cannot apply it, and does not take it as an admin's */
    receive_now(k.alice);
    assert_int_equal(history_count(k.alice, k.conversation, "did not verify"), 1);
    club_free(&k);
}

/* A group context extension naming admin as the only admin, of signed state epoch epoch. */
static void context_naming(const char *admin, uint64_t epoch, uint8_t **ext, size_t *len)
{
    struct msv_buf w;
    uint8_t zero[32] = {0};
    size_t data, list;

    msv_buf_init(&w, 4096);
    assert_int_equal(msv_buf_put_u16be(&w, MSV_MLS_EXT_GROUP), MSV_OK);
    data = msv_mls_vec_begin(&w);
    assert_int_equal(msv_buf_put_u8(&w, 1), MSV_OK);
    msv_mls_put_u64(&w, epoch);
    assert_int_equal(msv_buf_put(&w, zero, 32), MSV_OK);
    list = msv_mls_vec_begin(&w);
    msv_mls_put_vec(&w, (const uint8_t *)admin, strlen(admin));
    msv_mls_vec_end(&w, list);
    msv_mls_put_u64(&w, 0);
    assert_int_equal(msv_buf_put_u8(&w, 0), MSV_OK);
    assert_int_equal(msv_buf_put(&w, zero, 32), MSV_OK);
    msv_mls_vec_end(&w, data);
    assert_int_equal(msv_buf_finish(&w, ext, len), MSV_OK);
}

/* by's patched client commits a group context naming admin the only admin of the signed state
 * offset epochs from the one bob's context names (a made-up hash). */
static void made_up_context(struct club *k, struct msv_client *by, const char *admin,
                            int64_t offset)
{
    struct client_group_ctx g;
    uint8_t *ext = NULL;
    size_t ext_len = 0;

    club_context(k, k->bob, &g);
    context_naming(admin, (uint64_t)((int64_t)g.state_epoch + offset), &ext, &ext_len);
    client_group_ctx_clear(&g);
    patched_commit_with(by, k->gid, 0, NULL, 0, 0, ext, ext_len);
    free(ext);
}

/*
 * carol, no admin, commits a group context naming her the only admin (her patched client):
 * alice and bob refuse it, though it adds and removes nobody. An admin's commit taking the
 * context back to an earlier signed state is refused too.
 */
static void test_context_changed_by_no_admin_refused(void **state)
{
    struct club k;
    struct client_group_ctx g;

    (void)state;
    club_on_mls(&k);
    made_up_context(&k, k.carol, "carol@example.org", 1);
    receive_now(k.alice);
    receive_now(k.bob);
    assert_int_equal(history_count(k.alice, k.conversation, "changes the group context"), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "changes the group context"), 1);
    club_context(&k, k.bob, &g);
    assert_string_equal(g.admins, "alice@example.org\n");
    client_group_ctx_clear(&g);
    /* alice's founding again, once she took carol's commit as moving the group on: her own
     * context carries on; a patched one of hers going back a version is refused */
    assert_int_equal(client_mls_sync(k.alice, k.gid, 0), MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    club_context(&k, k.bob, &g);
    assert_true(g.state_epoch > 0);
    client_group_ctx_clear(&g);
    made_up_context(&k, k.alice, "alice@example.org", -1);
    receive_now(k.bob);
    assert_int_equal(history_count(k.bob, k.conversation, "back to an earlier version"), 1);
    club_free(&k);
}

/*
 * bob and alice are admins; alice makes an invite link, then makes a new one. The server
 * withholds the new link's settings from bob's device, which holds the old link, but not the
 * commit carrying the new one into the group context: a request under the old link, which bob's
 * device would have granted, is refused by it as by alice's.
 */
static void test_context_link_over_a_withheld_change(void **state)
{
    struct club k;
    struct msv_client *dave;
    struct msv_group_rec g = {0};
    char *old_uri = NULL, *new_uri = NULL;

    (void)state;
    club_on_mls(&k);
    dave = test_client_for(&k.s, "dave", "dave@example.org");
    assert_int_equal(msv_client_group_admin(k.alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(msv_client_group_invite(k.alice, "club", MSV_INVITE_SHOW, 0, &old_uri),
                     MSV_OK);
    receive_now(k.bob);
    assert_int_equal(msv_client_group_invite(k.alice, "club", MSV_INVITE_RESET, 0, &new_uri),
                     MSV_OK);
    withhold_all_but_mls(&k, k.bob);
    receive_now(k.bob);
    msv_conn_close(dave->conn);
    dave->conn = NULL;
    assert_int_equal(msv_client_group_join(dave, old_uri), MSV_OK);
    receive_now(k.bob);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_find(k.bob, "club", &g), MSV_OK);
    assert_null(strstr(g.members, "dave@example.org"));
    msv_group_clear(&g);
    assert_int_equal(msv_client_group_find(k.alice, "club", &g), MSV_OK);
    assert_null(strstr(g.members, "dave@example.org"));
    msv_group_clear(&g);
    /* the new link is granted */
    assert_int_equal(msv_client_group_join(dave, new_uri), MSV_OK);
    receive_now(k.alice);
    assert_int_equal(msv_client_group_find(k.alice, "club", &g), MSV_OK);
    assert_non_null(strstr(g.members, "dave@example.org"));
    msv_group_clear(&g);
    free(old_uri);
    free(new_uri);
    msv_client_close(dave);
    club_free(&k);
}

/* Whether the tree of c's stored state of group gid has a leaf of device. */
static int tree_holds(struct msv_client *c, const uint8_t gid[16], uint64_t device)
{
    struct msv_mls_member *m = stored_member(c, gid);
    int found = 0;

    for (uint32_t i = 0; i < m->tree.n_leaves && !found; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const uint8_t *identity;
        size_t identity_len;
        uint64_t d = 0;

        found = x->type == 1 &&
                msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                            &d) == MSV_OK &&
                d == device;
    }
    msv_mls_member_free(m);
    return found;
}

/* c's code of the club, its generation 0 checked, its epoch in *epoch. */
static void club_code(const struct club *k, struct msv_client *c, uint64_t *epoch,
                      char code[MSV_GROUP_CODE_LEN + 1])
{
    uint32_t generation = 1;

    assert_int_equal(msv_client_group_code(c, k->gid, &generation, epoch, code), MSV_OK);
    assert_int_equal(generation, 0);
    assert_int_equal(strlen(code), MSV_GROUP_CODE_LEN);
}

/* A commit of c's stored state (an update of its leaf), made and not sent nor merged. */
static void unsent_update(struct msv_client *c, const uint8_t gid[16], uint8_t **commit,
                          size_t *len, uint64_t *epoch)
{
    struct msv_mls_member *m = stored_member(c, gid);
    struct msv_mls_commit_spec spec = {.now = (uint64_t)(msv_wall_ms() / 1000)};
    uint8_t *welcome = NULL;
    size_t welcome_len = 0;
    const char *why = NULL;

    assert_int_equal(
        msv_mls_member_commit_make(m, &spec, commit, len, &welcome, &welcome_len, &why), MSV_OK);
    assert_null(welcome);
    *epoch = m->epoch;
    msv_mls_member_free(m);
}

/*
 * Every member sees one code at an epoch. A server that forks the group leaves bob and carol at
 * the same epoch with different codes, which is what comparing shows them: it told alice's
 * device that its commit came too late, so her client made another of the same epoch, and gave
 * one to bob and the other to carol (here both made at once). A group not on MLS has none.
 */
static void test_group_code_shows_a_fork(void **state)
{
    struct club k;
    char a[MSV_GROUP_CODE_LEN + 1], b[MSV_GROUP_CODE_LEN + 1], c[MSV_GROUP_CODE_LEN + 1],
        notice[400];
    uint8_t *x = NULL, *y = NULL, other[16];
    size_t x_len = 0, y_len = 0;
    uint64_t ea = 0, eb = 0, ec = 0, epoch = 0;
    uint32_t generation = 0;

    (void)state;
    club_on_mls(&k);
    club_code(&k, k.alice, &ea, a);
    club_code(&k, k.bob, &eb, b);
    club_code(&k, k.carol, &ec, c);
    assert_true(ea == eb && eb == ec);
    assert_string_equal(a, b);
    assert_string_equal(b, c);

    unsent_update(k.alice, k.gid, &x, &x_len, &epoch);
    unsent_update(k.alice, k.gid, &y, &y_len, &epoch);
    assert_int_equal(epoch, ea);
    take_crafted(k.bob, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, epoch, x, x_len, notice);
    take_crafted(k.carol, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, epoch, y, y_len, notice);
    club_code(&k, k.bob, &eb, b);
    club_code(&k, k.carol, &ec, c);
    assert_int_equal(eb, ea + 1);
    assert_int_equal(ec, ea + 1);
    assert_string_not_equal(b, c); /* the fork, shown */
    assert_string_not_equal(b, a);
    free(x);
    free(y);
    memset(other, 0, sizeof(other));
    assert_int_equal(msv_client_group_code(k.alice, other, &generation, &epoch, c),
                     MSV_ERR_NOT_FOUND);
    club_free(&k);
}

/*
 * A hostile member's ReInit: it would close the group for everyone (nothing more sent in it). bob
 * refuses it, nothing changed, and reads what follows.
 */
static void test_reinit_refused(void **state)
{
    struct club k;
    struct msv_mls_member *m;
    struct msv_mls_commit_spec spec = {.now = (uint64_t)(msv_wall_ms() / 1000),
                                       .reinit = 1,
                                       .reinit_group_id = (const uint8_t *)"elsewhere",
                                       .reinit_group_id_len = 9,
                                       .reinit_suite = MSV_MLS_SUITE_X25519_AES128GCM};
    uint8_t *commit = NULL, *welcome = NULL, id[16];
    size_t commit_len = 0, welcome_len = 0;
    uint64_t before = 0, after = 0;
    const char *why = NULL;
    char code[MSV_GROUP_CODE_LEN + 1], notice[400];

    (void)state;
    club_on_mls(&k);
    club_code(&k, k.bob, &before, code);
    m = stored_member(k.carol, k.gid);
    assert_int_equal(
        msv_mls_member_commit_make(m, &spec, &commit, &commit_len, &welcome, &welcome_len, &why),
        MSV_OK);
    take_crafted(k.bob, k.gid, MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT, m->epoch, commit, commit_len,
                 notice);
    assert_non_null(strstr(notice, "reinitializes the group"));
    club_code(&k, k.bob, &after, code);
    assert_int_equal(after, before);
    assert_int_equal(msv_client_group_send(k.alice, "club", "still open", NULL, 0, NULL, id),
                     MSV_OK);
    assert_int_equal(receive_now(k.bob), 1);
    assert_sent_by(k.bob, k.conversation, "still open", "alice@example.org", k.alice->device_id);
    msv_mls_member_free(m);
    free(commit);
    free(welcome);
    club_free(&k);
}

/*
 * alice, the group's only admin, leaves: her change hands the group to bob and commits nothing
 * (she is gone). bob's device removes her leaf at its receive, its commit carrying him as the
 * admin; carol, whose copy of the signed state is newer than the group context (which names
 * alice until then), takes it by that copy, and reads on (by the context alone, every member
 * refused it).
 */
static void test_last_admin_leaving_hands_over(void **state)
{
    struct club k;
    struct client_group_ctx g;
    uint8_t id[16];

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_leave(k.alice, k.conversation), MSV_OK);
    receive_now(k.carol);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "was refused"), 0);
    club_context(&k, k.carol, &g);
    assert_string_equal(g.admins, "bob@example.org\n");
    client_group_ctx_clear(&g);
    assert_false(tree_holds(k.carol, k.gid, k.alice->device_id));
    assert_int_equal(msv_client_group_send(k.bob, "club", "still here", NULL, 0, NULL, id), MSV_OK);
    assert_int_equal(receive_now(k.carol), 1);
    assert_sent_by(k.carol, k.conversation, "still here", "bob@example.org", k.bob->device_id);
    club_free(&k);
}

/* A KeyPackage of c's device, bound to it, whose leaf cannot carry the group context (as the
 * device made them before the context existed). */
static void plain_key_package(struct msv_client *c, uint8_t **kp, size_t *len)
{
    uint8_t seed[32], identity[MSV_MLSKEYS_IDENTITY_MAX], init_sk[32], leaf_sk[32];
    size_t identity_len = 0;
    uint64_t now = (uint64_t)(msv_wall_ms() / 1000);

    assert_int_equal(msv_mlskeys_credential_make(c, seed, identity, &identity_len), MSV_OK);
    assert_int_equal(msv_mls_key_package_make_plain(MSV_MLS_SUITE_X25519_AES128GCM, seed, identity,
                                                    identity_len, now - 3600, now + 86400, init_sk,
                                                    leaf_sk, kp, len),
                     MSV_OK);
}

/*
 * A member could freeze the group context (every admin's commit changing it refused for a leaf
 * that cannot carry it) by adding a device whose leaf cannot: carol's patched client adds her
 * newly linked laptop from such a KeyPackage, and alice and bob refuse the commit (an add of
 * her own device, which they would have taken before); alice's next change still carries the
 * context. carol's own client leaves such a KeyPackage out, told.
 */
static void test_leaf_without_context_refused(void **state)
{
    struct club k;
    struct msv_client *laptop;
    struct client_group_ctx g;
    uint8_t *kp = NULL;
    size_t kp_len = 0;

    (void)state;
    club_on_mls(&k);
    laptop = link_waiting(&k.s, k.carol, "carol-laptop");
    assert_int_equal(msv_client_approve_device(k.carol, laptop->device_id), MSV_OK);
    plain_key_package(laptop, &kp, &kp_len);
    /* the laptop's only KeyPackage at the server, claimed as a commit adding it must be */
    assert_int_equal(msv_client_connect(laptop), MSV_OK);
    {
        const uint8_t *kps[1] = {kp};
        struct msv_mls_kp_counts held = {0};
        msv_frame *f = NULL;

        assert_int_equal(msv_request_mls_key_packages(laptop->conn, kps, &kp_len, 1, NULL, 0, 1,
                                                      5000, &held, &laptop->why),
                         MSV_OK);
        assert_int_equal(msv_client_connect(k.carol), MSV_OK);
        assert_int_equal(
            msv_request_mls_claim(k.carol->conn, "carol@example.org", 5000, &f, &k.carol->why),
            MSV_OK);
        msv_frame_free(f);
    }
    patched_commit(k.carol, k.gid, 0, kp, kp_len, laptop->device_id);
    free(kp);
    receive_now(k.alice);
    receive_now(k.bob);
    assert_int_equal(history_count(k.alice, k.conversation, "cannot carry the group context"), 1);
    assert_int_equal(history_count(k.bob, k.conversation, "cannot carry the group context"), 1);
    assert_false(tree_holds(k.bob, k.gid, laptop->device_id));
    assert_int_equal(msv_client_group_admin(k.alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(k.bob);
    club_context(&k, k.bob, &g);
    assert_int_equal(g.n_admins, 2);
    client_group_ctx_clear(&g);
    msv_client_close(laptop);
    club_free(&k);
}

/*
 * alice and bob are admins. alice's patched client commits a group context naming a signed
 * state of the next epoch with a made-up hash and herself the only admin: bob and carol take it
 * (an admin's), and it cannot take the group from bob, whose own commit removing carol is still
 * taken as an admin's (a context never makes an admin, and is heeded only for removals of admins
 * the copy has not seen, while it names a state past the copy's). A context naming a state more
 * than 8 epochs ahead is refused.
 */
static void test_made_up_context_takes_nothing(void **state)
{
    const char *carol_only[1] = {"carol@example.org"};
    struct club k;
    struct client_group_ctx g;

    (void)state;
    club_on_mls(&k);
    assert_int_equal(msv_client_group_admin(k.alice, "club", "bob@example.org", 1), MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    made_up_context(&k, k.alice, "alice@example.org", 9);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(history_count(k.bob, k.conversation, "far past the one"), 1);
    assert_int_equal(history_count(k.carol, k.conversation, "far past the one"), 1);
    /* the refusal made the group move on without bob: alice founds it again */
    assert_int_equal(receive_now(k.alice), 0);
    founding_again_due(&k, k.alice);
    assert_int_equal(client_mls_sync(k.alice, k.gid, 0), MSV_OK);
    receive_now(k.bob);
    receive_now(k.carol);
    made_up_context(&k, k.alice, "alice@example.org", 1);
    receive_now(k.bob);
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "was refused"), 1); /* the first */
    club_context(&k, k.carol, &g);
    assert_string_equal(g.admins, "alice@example.org\n");
    client_group_ctx_clear(&g);
    /* bob, an admin by every member's copy, removes carol: alice's made-up context changes
     * nothing of that (carol, whose leaf it removes, takes it as an admin's; alice's patched
     * client stayed behind its own commit) */
    assert_int_equal(msv_client_group_change(k.bob, "club", NULL, NULL, 0, carol_only, 1), MSV_OK);
    assert_false(tree_holds(k.bob, k.gid, k.carol->device_id));
    receive_now(k.carol);
    assert_int_equal(history_count(k.carol, k.conversation, "an admin's device"), 1);
    club_free(&k);
}

/*
 * alice makes the invite link while the server is out of reach: the link is hers, but no commit
 * carried it into the group context. Showing it again once the server is back commits it, and
 * bob's context names it.
 */
static void test_context_link_committed_when_shown_again(void **state)
{
    struct club k;
    struct client_group_ctx g;
    char *uri = NULL;

    (void)state;
    club_on_mls(&k);
    test_server_stop(&k.s);
    msv_conn_close(k.alice->conn);
    k.alice->conn = NULL;
    assert_int_not_equal(msv_client_group_invite(k.alice, "club", MSV_INVITE_RESET, 0, &uri),
                         MSV_OK);
    free(uri);
    uri = NULL;
    test_server_start(&k.s);
    msv_conn_close(k.bob->conn);
    k.bob->conn = NULL;
    receive_now(k.bob);
    club_context(&k, k.bob, &g);
    assert_int_equal(g.link_version, 0);
    client_group_ctx_clear(&g);
    assert_int_equal(msv_client_group_invite(k.alice, "club", MSV_INVITE_SHOW, 0, &uri), MSV_OK);
    assert_non_null(uri);
    free(uri);
    receive_now(k.bob);
    club_context(&k, k.bob, &g);
    assert_int_equal(g.link_version, 1);
    assert_int_equal(g.link_flags & 1, 1);
    client_group_ctx_clear(&g);
    club_free(&k);
}

int main(void)
{
    struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_join_and_talk),
        cmocka_unit_test(test_no_key_package_told),
        cmocka_unit_test(test_removed_cannot_read),
        cmocka_unit_test(test_attacks_told),
        cmocka_unit_test(test_non_admin_commit_refused_and_refounded),
        cmocka_unit_test(test_leaf_put_back_is_a_removal),
        cmocka_unit_test(test_two_processes_one_state),
        cmocka_unit_test(test_two_receivers_take_mls_once),
        cmocka_unit_test(test_kept_mls_payload_taken_once),
        cmocka_unit_test(test_self_updates),
        cmocka_unit_test(test_reader_renews_its_leaf),
        cmocka_unit_test(test_keys_next_says_when),
        cmocka_unit_test(test_failed_update_backs_off),
        cmocka_unit_test(test_left_member_renews_nothing),
        cmocka_unit_test(test_joiners_key_their_paths),
        cmocka_unit_test(test_renewal_owed_keys_a_new_path),
        cmocka_unit_test(test_removal_keyed_by_one),
        cmocka_unit_test(test_keying_in_order),
        cmocka_unit_test(test_keying_counted_again_when_wider),
        cmocka_unit_test(test_admin_adds_devices_hourly),
        cmocka_unit_test(test_message_crossing_a_commit),
        cmocka_unit_test(test_message_read_within_a_send_shown_later),
        cmocka_unit_test(test_message_read_within_a_send_told_to_the_owner),
        cmocka_unit_test(test_message_read_within_a_flush_shown),
        cmocka_unit_test(test_removed_reads_when_commit_withheld),
        cmocka_unit_test(test_non_admin_founding),
        cmocka_unit_test(test_added_without_key_package),
        cmocka_unit_test(test_member_gone_outside_the_tree),
        cmocka_unit_test(test_queued_not_for_a_new_member_account),
        cmocka_unit_test(test_readded_member_reads),
        cmocka_unit_test(test_commit_during_rate_limit),
        cmocka_unit_test(test_linked_device_joins),
        cmocka_unit_test(test_removed_own_device_committed_out),
        cmocka_unit_test(test_writes_before_its_welcome),
        cmocka_unit_test(test_group_copies),
        cmocka_unit_test(test_group_copy_behind),
        cmocka_unit_test(test_group_copy_mark_lasts_a_week),
        cmocka_unit_test(test_group_copy_not_made_is_told),
        cmocka_unit_test(test_group_copies_owed_kept_and_bounded),
        cmocka_unit_test(test_linked_device_waits_and_others_refused),
        cmocka_unit_test(test_large_by_reference),
        cmocka_unit_test(test_welcome_kept_until_sent),
        cmocka_unit_test(test_behind_for_good),
        cmocka_unit_test(test_lost_state_joins_again),
        cmocka_unit_test(test_behind_member_joins_again),
        cmocka_unit_test(test_full_queue_holds_up_nobody),
        cmocka_unit_test(test_missed_commit_read_from_log),
        cmocka_unit_test(test_welcome_kept_for_a_full_queue),
        cmocka_unit_test(test_kept_welcome_made_up),
        cmocka_unit_test(test_replaced_while_full_joins_from_kept),
        cmocka_unit_test(test_log_lies),
        cmocka_unit_test(test_catch_up_stops_at_the_message),
        cmocka_unit_test(test_claimed_epoch_goes_no_further),
        cmocka_unit_test(test_admin_update_catches_up),
        cmocka_unit_test(test_full_recipient_reaches_nobody),
        cmocka_unit_test(test_rejoin_without_key_package),
        cmocka_unit_test(test_replaced_admin_holding_state),
        cmocka_unit_test(test_two_admins_replace_at_once),
        cmocka_unit_test(test_sole_admin_lost_state_founds_again),
        cmocka_unit_test(test_linked_device_asks_to_join),
        cmocka_unit_test(test_device_linked_elsewhere_joins),
        cmocka_unit_test(test_replacement_by_no_admin_refused),
        cmocka_unit_test(test_stale_or_misnamed_ask_changes_nothing),
        cmocka_unit_test(test_lost_generation_at_the_top),
        cmocka_unit_test(test_send_crossing_a_founding_again),
        cmocka_unit_test(test_superseded_generation_left),
        cmocka_unit_test(test_writes_where_nobody_is_left),
        cmocka_unit_test(test_squatted_generation_founded_past),
        cmocka_unit_test(test_squatted_generation_with_her_waits_a_minute),
        cmocka_unit_test(test_founding_again_at_most_hourly),
        cmocka_unit_test(test_two_processes_found_once),
        cmocka_unit_test(test_leave_followed_by_admin),
        cmocka_unit_test(test_follow_backs_off),
        cmocka_unit_test(test_failed_founding_again_counted),
        cmocka_unit_test(test_stale_devices_not_a_fallback),
        cmocka_unit_test(test_verified_member_held_on_mls),
        cmocka_unit_test(test_by_reference_allowance),
        cmocka_unit_test(test_context_carries_admins),
        cmocka_unit_test(test_context_admins_over_a_withheld_change),
        cmocka_unit_test(test_context_changed_by_no_admin_refused),
        cmocka_unit_test(test_context_link_over_a_withheld_change),
        cmocka_unit_test(test_group_code_shows_a_fork),
        cmocka_unit_test(test_last_admin_leaving_hands_over),
        cmocka_unit_test(test_reinit_refused),
        cmocka_unit_test(test_leaf_without_context_refused),
        cmocka_unit_test(test_made_up_context_takes_nothing),
        cmocka_unit_test(test_context_link_committed_when_shown_again),
    };

    signal(SIGPIPE, SIG_IGN); /* a connection of a stopped server's */
    return test_run_group("mls_groups", tests, sizeof(tests) / sizeof(tests[0]));
}
