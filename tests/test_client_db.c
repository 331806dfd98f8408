/* A device's local state: settings, contacts, known devices, history with search, outbox. */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/client_db.h"

struct fixture {
    char dir[64], path[128];
    struct msv_client_db *db;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/msv-client-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
    if (msv_client_db_open(f->path, &f->db) != MSV_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    msv_client_db_close(f->db);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void test_settings_and_privacy(void **state)
{
    struct fixture *f = *state;
    uint8_t *v = NULL;
    size_t len = 0;
    struct stat st;

    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(msv_client_db_get(f->db, "handle", &v, &len), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_set(f->db, "handle", "a@x.org", 7), MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "handle", "b@x.org", 7), MSV_OK);
    assert_int_equal(msv_client_db_get(f->db, "handle", &v, &len), MSV_OK);
    assert_int_equal(len, 7);
    assert_memory_equal(v, "b@x.org", 7);
    free(v);
    /* reopening finds it */
    msv_client_db_close(f->db);
    assert_int_equal(msv_client_db_open(f->path, &f->db), MSV_OK);
    assert_int_equal(msv_client_db_get(f->db, "handle", &v, &len), MSV_OK);
    free(v);
}

/* Whether setting key holds value. */
static int holds(struct fixture *f, const char *key, const char *value)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int same = msv_client_db_get(f->db, key, &v, &len) == MSV_OK && len == strlen(value) &&
               memcmp(v, value, len) == 0;

    free(v);
    return same;
}

/*
 * A caller's transaction takes in the operations within it, their own transactions too (as
 * savepoints): all kept, or none. An inner operation's failure undoes its own writes only,
 * and the caller decides the rest.
 */
static void test_transactions_nest(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(msv_client_db_begin(f->db), MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "a", "1", 1), MSV_OK);
    assert_int_equal(msv_client_db_set2(f->db, "b", "2", 1, "c", "3", 1), MSV_OK);
    assert_int_equal(msv_client_db_end(f->db, MSV_ERR_IO), MSV_ERR_IO);
    assert_false(holds(f, "a", "1"));
    assert_false(holds(f, "b", "2"));
    assert_false(holds(f, "c", "3"));
    /* kept: every write, the inner transaction's too */
    assert_int_equal(msv_client_db_begin(f->db), MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "a", "1", 1), MSV_OK);
    assert_int_equal(msv_client_db_begin(f->db), MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "b", "2", 1), MSV_OK);
    assert_int_equal(msv_client_db_end(f->db, MSV_ERR_INVALID), MSV_ERR_INVALID);
    assert_int_equal(msv_client_db_set2(f->db, "c", "3", 1, "d", "4", 1), MSV_OK);
    assert_int_equal(msv_client_db_end(f->db, MSV_OK), MSV_OK);
    assert_true(holds(f, "a", "1"));
    assert_false(holds(f, "b", "2")); /* its own transaction failed */
    assert_true(holds(f, "c", "3"));
    assert_true(holds(f, "d", "4"));
    /* outside any, an end is refused, and the next begin is the outer one again */
    assert_int_equal(msv_client_db_end(f->db, MSV_OK), MSV_ERR_INVALID);
    assert_int_equal(msv_client_db_set2(f->db, "e", "5", 1, "f", "6", 1), MSV_OK);
    msv_client_db_close(f->db);
    assert_int_equal(msv_client_db_open(f->path, &f->db), MSV_OK);
    assert_true(holds(f, "c", "3"));
    assert_true(holds(f, "f", "6"));
}

static void test_contacts(void **state)
{
    struct fixture *f = *state;
    struct msv_contact *c = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_contact_add(f->db, "bob", "bob@example.org"), MSV_OK);
    assert_int_equal(msv_client_db_contact_add(f->db, "bob", "+15551234567"), MSV_OK);
    assert_int_equal(msv_client_db_contact_add(f->db, "bob", "+15551234567"), MSV_ERR_EXISTS);
    assert_int_equal(msv_client_db_contact_add(f->db, "carol", "carol@example.org"), MSV_OK);
    assert_int_equal(msv_client_db_contacts(f->db, "bob", &c, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_string_equal(c[0].handle, "+15551234567");
    msv_contacts_free(c, n);
    assert_int_equal(msv_client_db_contacts(f->db, NULL, &c, &n), MSV_OK);
    assert_int_equal(n, 3);
    assert_string_equal(c[2].name, "carol");
    msv_contacts_free(c, n);
    assert_int_equal(msv_client_db_contact_remove(f->db, "bob"), MSV_OK);
    assert_int_equal(msv_client_db_contact_remove(f->db, "bob"), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_contacts(f->db, "bob", &c, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_contacts_free(c, n);
}

/* The one entry of the synced state with key; fails if absent. */
static struct msv_sync_entry *sync_find(struct msv_sync_entry *list, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].key, key) == 0)
            return &list[i];
    fail_msg("no synced entry %s", key);
    return NULL;
}

/*
 * Writers only write: every change of a "sync:" setting or a contact is
 * recorded, stamped and pending; other settings are not. Changes from another
 * device apply only when newer, and are not recorded as pending (no echo).
 */
static void test_sync_state(void **state)
{
    struct fixture *f = *state;
    struct msv_sync_entry *list = NULL, *e, in = {.key = "sync:privacy:typing"};
    struct msv_contact *c = NULL;
    uint8_t *v = NULL;
    size_t n = 0, len = 0;
    uint64_t stamp;
    int applied = 0;

    assert_int_equal(msv_client_db_set(f->db, "profile-key", "k", 1), MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "sync:block:bob@x.org", "1", 1), MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "sync:privacy:typing", "off", 3), MSV_OK);
    assert_int_equal(msv_client_db_contact_add(f->db, "Bobby", "bob@x.org"), MSV_OK);
    assert_int_equal(msv_client_db_sync_list(f->db, 1, 100, &list, &n), MSV_OK);
    assert_int_equal(n, 3);
    assert_non_null(sync_find(list, n, "contact:Bobby\nbob@x.org"));
    e = sync_find(list, n, "sync:privacy:typing");
    stamp = e->stamp;
    assert_true(stamp > 0);
    /* sent: no longer pending, unless changed since */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(msv_client_db_sync_sent(f->db, &list[i]), MSV_OK);
    msv_sync_entries_free(list, n);
    assert_int_equal(msv_client_db_sync_list(f->db, 1, 100, &list, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_sync_entries_free(list, n);
    /* a deletion is a stamped tombstone, above the key's last stamp */
    assert_int_equal(msv_client_db_unset(f->db, "sync:block:bob@x.org"), MSV_OK);
    assert_int_equal(msv_client_db_contact_remove(f->db, "Bobby"), MSV_OK);
    assert_int_equal(msv_client_db_sync_list(f->db, 1, 100, &list, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_true(sync_find(list, n, "sync:block:bob@x.org")->deleted);
    assert_true(sync_find(list, n, "contact:Bobby\nbob@x.org")->deleted);
    msv_sync_entries_free(list, n);

    /* an older change from another device (a replay) undoes nothing */
    in.value = (uint8_t *)"on";
    in.value_len = 2;
    in.stamp = stamp - 1;
    assert_int_equal(msv_client_db_sync_apply(f->db, &in, &applied), MSV_OK);
    assert_int_equal(applied, 0);
    assert_int_equal(msv_client_db_get(f->db, "sync:privacy:typing", &v, &len), MSV_OK);
    assert_memory_equal(v, "off", 3);
    free(v);
    /* a newer one applies, and is not pending here */
    in.stamp = stamp + 10;
    assert_int_equal(msv_client_db_sync_apply(f->db, &in, &applied), MSV_OK);
    assert_int_equal(applied, 1);
    assert_int_equal(msv_client_db_get(f->db, "sync:privacy:typing", &v, &len), MSV_OK);
    assert_memory_equal(v, "on", 2);
    free(v);
    assert_int_equal(msv_client_db_sync_apply(f->db, &in, &applied), MSV_OK);
    assert_int_equal(applied, 0); /* the same again */
    in.key = "contact:Carol\ncarol@x.org";
    in.value_len = 0;
    assert_int_equal(msv_client_db_sync_apply(f->db, &in, &applied), MSV_OK);
    assert_int_equal(applied, 1);
    assert_int_equal(msv_client_db_contacts(f->db, "Carol", &c, &n), MSV_OK);
    assert_int_equal(n, 1);
    msv_contacts_free(c, n);
    in.deleted = true;
    in.stamp++;
    assert_int_equal(msv_client_db_sync_apply(f->db, &in, &applied), MSV_OK);
    assert_int_equal(msv_client_db_contacts(f->db, "Carol", &c, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_contacts_free(c, n);
    assert_int_equal(msv_client_db_sync_list(f->db, 1, 100, &list, &n), MSV_OK);
    assert_int_equal(n, 2); /* only the two local deletions */
    msv_sync_entries_free(list, n);
    /* a new device's snapshot: everything pending again */
    assert_int_equal(msv_client_db_sync_resend_all(f->db), MSV_OK);
    assert_int_equal(msv_client_db_sync_list(f->db, 1, 100, &list, &n), MSV_OK);
    assert_int_equal(n, 4);
    msv_sync_entries_free(list, n);
}

static void test_known_devices_changes(void **state)
{
    struct fixture *f = *state;
    struct msv_known_device d[2] = {
        {.device_id = 5, .suite = 3, .identity = (uint8_t *)"key-five", .identity_len = 8},
        {.device_id = 6, .suite = 3, .identity = (uint8_t *)"key-six", .identity_len = 7},
    };
    struct msv_known_device *got = NULL;
    size_t n = 0;
    int changed = -1;

    /* the first sighting is not a change */
    assert_int_equal(msv_client_db_known_replace(f->db, "bob", d, 1, 100, &changed), MSV_OK);
    assert_int_equal(changed, 0);
    assert_int_equal(msv_client_db_known_replace(f->db, "bob", d, 1, 200, &changed), MSV_OK);
    assert_int_equal(changed, 0);
    /* a new device is */
    assert_int_equal(msv_client_db_known_replace(f->db, "bob", d, 2, 300, &changed), MSV_OK);
    assert_int_equal(changed, 1);
    assert_int_equal(msv_client_db_known_devices(f->db, "bob", &got, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(got[1].device_id, 6);
    assert_memory_equal(got[1].identity, "key-six", 7);
    assert_int_equal(got[0].first_seen_ms, 300);
    msv_known_devices_free(got, n);
    /* so is the same device id with another key */
    d[1].identity = (uint8_t *)"key-SIX";
    assert_int_equal(msv_client_db_known_replace(f->db, "bob", d, 2, 400, &changed), MSV_OK);
    assert_int_equal(changed, 1);
}

/*
 * A device of this account the monitor alarmed on first (seen in the log before its approval was
 * told) is counted as told of once its approval comes: its identity kept, so that the approvals
 * it signs check out; an alarm afterwards changes nothing. Before, the alarmed row stayed, and
 * the device's approvals never checked out.
 */
static void test_own_device_told_after_its_alarm(void **state)
{
    struct fixture *f = *state;
    uint8_t h[32], *id = NULL;
    size_t len = 0;
    uint32_t suite = 0;
    int alarmed = -1;

    memset(h, 7, sizeof(h));
    assert_int_equal(msv_client_db_own_device_put(f->db, 9, h, 0, NULL, 0, 1), MSV_OK);
    assert_int_equal(msv_client_db_own_device_identity(f->db, 9, &suite, &id, &len),
                     MSV_ERR_NOT_FOUND);
    assert_int_equal(
        msv_client_db_own_device_put(f->db, 9, h, 3, (const uint8_t *)"key-nine", 8, 0), MSV_OK);
    assert_int_equal(msv_client_db_own_device_get(f->db, 9, h, &alarmed), MSV_OK);
    assert_int_equal(alarmed, 0);
    assert_int_equal(msv_client_db_own_device_identity(f->db, 9, &suite, &id, &len), MSV_OK);
    assert_int_equal(suite, 3);
    assert_memory_equal(id, "key-nine", 8);
    free(id);
    id = NULL;
    assert_int_equal(msv_client_db_own_device_put(f->db, 9, h, 0, NULL, 0, 1), MSV_OK);
    assert_int_equal(msv_client_db_own_device_get(f->db, 9, h, &alarmed), MSV_OK);
    assert_int_equal(alarmed, 0);
    assert_int_equal(msv_client_db_own_device_identity(f->db, 9, &suite, &id, &len), MSV_OK);
    free(id);
}

static void put_message(struct fixture *f, uint8_t id, const char *conv, const char *text)
{
    struct msv_message_rec m = {.conversation = (char *)conv,
                                .sender = (char *)conv,
                                .sender_device = 3,
                                .kind = 1,
                                .text = (char *)text,
                                .sent_at_ms = 1000 + id,
                                .stored_at_ms = 2000 + id,
                                .status = "received"};

    memset(m.message_id, id, 16);
    assert_int_equal(msv_client_db_message_put(f->db, &m), MSV_OK);
    /* a redelivery of the same message changes nothing */
    m.text = "different";
    assert_int_equal(msv_client_db_message_put(f->db, &m), MSV_ERR_EXISTS);
}

static void test_history_and_search(void **state)
{
    struct fixture *f = *state;
    struct msv_message_rec *m = NULL;
    size_t n = 0;
    uint8_t id[16];

    put_message(f, 1, "bob", "dinner at eight?");
    put_message(f, 2, "carol", "the train is late");
    put_message(f, 3, "bob", "see you at dinner");
    put_message(f, 4, "bob", "bring the wine");
    assert_int_equal(msv_client_db_history(f->db, "bob", NULL, 0, &m, &n), MSV_OK);
    assert_int_equal(n, 3);
    assert_string_equal(m[0].text, "dinner at eight?");
    assert_string_equal(m[2].text, "bring the wine");
    msv_messages_free(m, n);
    /* the newest two, still oldest first */
    assert_int_equal(msv_client_db_history(f->db, "bob", NULL, 2, &m, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].text, "see you at dinner");
    msv_messages_free(m, n);
    assert_int_equal(msv_client_db_history(f->db, NULL, "dinner", 0, &m, &n), MSV_OK);
    assert_int_equal(n, 2);
    msv_messages_free(m, n);
    assert_int_equal(msv_client_db_history(f->db, "carol", "dinner", 0, &m, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_messages_free(m, n);
    assert_int_equal(msv_client_db_history(f->db, NULL, "\"unbalanced", 0, &m, &n),
                     MSV_ERR_INVALID);
    memset(id, 3, 16);
    assert_int_equal(msv_client_db_message_status(f->db, id, "read"), MSV_OK);
    memset(id, 9, 16);
    assert_int_equal(msv_client_db_message_status(f->db, id, "read"), MSV_ERR_NOT_FOUND);
}

static void test_conversation_list(void **state)
{
    struct fixture *f = *state;
    struct msv_conversation_rec *list = NULL;
    size_t n = 0;
    uint8_t id[16];

    assert_int_equal(msv_client_db_conversations(f->db, &list, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_conversations_free(list, n);
    put_message(f, 1, "bob", "one");
    put_message(f, 2, "carol", "two");
    put_message(f, 3, "bob", "three");
    memset(id, 1, 16);
    assert_int_equal(msv_client_db_message_status(f->db, id, "read"), MSV_OK);
    assert_int_equal(msv_client_db_conversations(f->db, &list, &n), MSV_OK);
    /* the newest conversation first; bob's first message is read now */
    assert_int_equal(n, 2);
    assert_string_equal(list[0].conversation, "bob");
    assert_int_equal(list[0].unread, 1);
    assert_string_equal(list[1].conversation, "carol");
    assert_int_equal(list[1].unread, 1);
    assert_true(list[0].last_row > list[1].last_row);
    msv_conversations_free(list, n);
}

/* An outgoing history record for test_outbox, "queued". */
static struct msv_message_rec queued(const uint8_t id[16], const char *text)
{
    struct msv_message_rec m = {.conversation = "bob@x.org",
                                .outgoing = 1,
                                .sender = "me@x.org",
                                .sender_device = 1,
                                .kind = 1,
                                .text = (char *)text,
                                .sent_at_ms = 5,
                                .stored_at_ms = 5,
                                .status = "queued"};

    memcpy(m.message_id, id, 16);
    return m;
}

static void expect_status(struct msv_client_db *db, const uint8_t id[16], const char *status)
{
    struct msv_message_rec *m = NULL;

    if (status == NULL) {
        assert_int_equal(msv_client_db_message_get(db, id, &m), MSV_ERR_NOT_FOUND);
        return;
    }
    assert_int_equal(msv_client_db_message_get(db, id, &m), MSV_OK);
    assert_string_equal(m->status, status);
    msv_messages_free(m, 1);
}

/* 1 if the file holds the bytes anywhere (a missing file holds nothing). */
static int file_holds(const char *path, const uint8_t *needle, size_t n)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *data = NULL;
    size_t len = 0, cap = 0, got;
    int found = 0;

    if (fp == NULL)
        return 0;
    do {
        if (len == cap) {
            uint8_t *grown = realloc(data, cap = cap ? 2 * cap : 65536);

            assert_non_null(grown);
            data = grown;
        }
        got = fread(data + len, 1, cap - len, fp);
        len += got;
    } while (got > 0);
    fclose(fp);
    for (size_t i = 0; !found && i + n <= len; i++)
        found = memcmp(data + i, needle, n) == 0;
    free(data);
    return found;
}

static int files_hold(const struct fixture *f, const uint8_t *needle, size_t n)
{
    char path[160];
    int found = file_holds(f->path, needle, n);

    snprintf(path, sizeof(path), "%s-wal", f->path);
    found |= file_holds(path, needle, n);
    snprintf(path, sizeof(path), "%s-shm", f->path);
    return found | file_holds(path, needle, n);
}

/*
 * A one-time prekey secret deleted after its use, and a session state
 * replaced by the next, leave no copy in the database, its write-ahead log or
 * its shared memory file, while the database is open and after it is closed.
 */
static void test_deleted_secrets_leave_no_trace(void **state)
{
    struct fixture *f = *state;
    uint8_t prekey[64], old_session[300], session[300];

    for (size_t i = 0; i < sizeof(prekey); i++)
        prekey[i] = (uint8_t)(0xa5 ^ (i * 7));
    for (size_t i = 0; i < sizeof(session); i++) {
        old_session[i] = (uint8_t)(0x3c ^ (i * 13));
        session[i] = (uint8_t)(0x5a ^ (i * 11));
    }
    assert_int_equal(msv_client_db_set(f->db, "prekey:7", prekey, sizeof(prekey)), MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "session:5", old_session, sizeof(old_session)),
                     MSV_OK);
    assert_int_equal(msv_client_db_set(f->db, "handle", "a@x.org", 7), MSV_OK);
    assert_true(files_hold(f, prekey, sizeof(prekey))); /* the scan finds what is there */
    assert_int_equal(msv_client_db_set(f->db, "session:5", session, sizeof(session)), MSV_OK);
    assert_int_equal(msv_client_db_unset(f->db, "prekey:7"), MSV_OK);
    assert_false(files_hold(f, prekey, sizeof(prekey)));
    assert_false(files_hold(f, old_session, sizeof(old_session)));
    assert_true(files_hold(f, session, sizeof(session)));
    msv_client_db_close(f->db);
    f->db = NULL;
    assert_false(files_hold(f, prekey, sizeof(prekey)));
    assert_false(files_hold(f, old_session, sizeof(old_session)));
    assert_int_equal(msv_client_db_open(f->path, &f->db), MSV_OK);
}

/* An unsent or edited message's old words stay neither in the history nor in its search index. */
static void test_rewritten_messages_leave_no_trace(void **state)
{
    struct fixture *f = *state;
    static const char gone[] = "quokkazanzibar", kept[] = "wombatlisbon";
    uint8_t id[16];

    for (uint8_t i = 1; i <= 40; i++)
        put_message(f, i, "bob", i == 7 ? "meet at quokkazanzibar" : "an ordinary message");
    put_message(f, 41, "bob", "edited from quokkazanzibar");
    assert_true(files_hold(f, (const uint8_t *)gone, strlen(gone)));
    memset(id, 7, 16);
    assert_int_equal(msv_client_db_message_rewrite(f->db, id, "", "unsent"), MSV_OK);
    memset(id, 41, 16);
    assert_int_equal(msv_client_db_message_rewrite(f->db, id, "edited to wombatlisbon", "edited"),
                     MSV_OK);
    assert_false(files_hold(f, (const uint8_t *)gone, strlen(gone)));
    assert_true(files_hold(f, (const uint8_t *)kept, strlen(kept)));
}

/* An unsent message's earlier versions (its edit history) go as its text does. */
static void test_unsent_versions_leave_no_trace(void **state)
{
    struct fixture *f = *state;
    static const char gone[] = "kakapomontevideo", kept[] = "ordinarykept";
    struct msv_message_version *v = NULL;
    size_t n = 0;
    uint8_t id[16];

    for (uint8_t i = 1; i <= 40; i++)
        put_message(f, i, "bob", i == 9 ? "at kakapomontevideo" : "an ordinarykept message");
    memset(id, 9, 16);
    assert_int_equal(msv_client_db_message_edit(f->db, id, 1, "at kakapomontevideo, edited", 5),
                     MSV_OK);
    assert_int_equal(msv_client_db_message_edit(f->db, id, 2, "somewhere else", 6), MSV_OK);
    assert_int_equal(msv_client_db_message_versions(f->db, id, &v, &n), MSV_OK);
    assert_int_equal(n, 3);
    msv_message_versions_free(v, n);
    assert_true(files_hold(f, (const uint8_t *)gone, strlen(gone)));
    assert_int_equal(msv_client_db_message_rewrite(f->db, id, "", "unsent"), MSV_OK);
    assert_int_equal(msv_client_db_message_versions(f->db, id, &v, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_message_versions_free(v, n);
    assert_false(files_hold(f, (const uint8_t *)gone, strlen(gone)));
    assert_true(files_hold(f, (const uint8_t *)kept, strlen(kept)));
}

/*
 * Disappearing messages: one counts down only once read, then expires; its
 * deletion takes the row, its recipients, its outbox entry, its edit record
 * and its words in the search index, and leaves no copy in the files.
 */
static void test_expired_messages_leave_no_trace(void **state)
{
    struct fixture *f = *state;
    static const char gone[] = "pangolinreykjavik";
    struct msv_message_rec m = {.conversation = "bob",
                                .sender = "bob",
                                .kind = 1,
                                .text = "meet at pangolinreykjavik",
                                .sent_at_ms = 1000,
                                .stored_at_ms = 1000,
                                .status = "received",
                                .timer_s = 30};
    struct msv_message_rec *got = NULL;
    const char *to[] = {"bob"};
    uint8_t *v = NULL;
    size_t n = 0, len = 0;

    for (uint8_t i = 1; i <= 40; i++)
        put_message(f, i, "bob", "an ordinary message");
    memset(m.message_id, 0x77, 16);
    assert_int_equal(msv_client_db_message_put(f->db, &m), MSV_OK);
    assert_int_equal(msv_client_db_recipients_put(f->db, m.message_id, to, 1), MSV_OK);
    assert_int_equal(
        msv_client_db_set(f->db, "changed-at:77777777777777777777777777777777", "x", 1), MSV_OK);
    assert_true(files_hold(f, (const uint8_t *)gone, strlen(gone)));
    /* unread: not counting down, however late it is */
    assert_int_equal(msv_client_db_messages_expired(f->db, INT64_MAX / 2, 10, &got, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_messages_free(got, n);
    /* read at 5000: expires at 35000, and not before */
    assert_int_equal(msv_client_db_message_expiry_start(f->db, m.message_id, 5000), MSV_OK);
    assert_int_equal(msv_client_db_message_expiry_start(f->db, m.message_id, 9000), MSV_OK);
    assert_int_equal(msv_client_db_messages_expired(f->db, 34999, 10, &got, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_messages_free(got, n);
    assert_int_equal(msv_client_db_messages_expired(f->db, 35000, 10, &got, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(got[0].message_id, m.message_id, 16);
    assert_int_equal(got[0].timer_s, 30);
    assert_int_equal(got[0].expires_at_ms, 35000);
    msv_messages_free(got, n);
    /* a message without a timer never counts down */
    memset(m.message_id, 1, 16);
    assert_int_equal(msv_client_db_message_expiry_start(f->db, m.message_id, 5000), MSV_OK);
    memset(m.message_id, 0x77, 16);
    assert_int_equal(msv_client_db_message_delete(f->db, m.message_id), MSV_OK);
    assert_int_equal(msv_client_db_message_known(f->db, m.message_id), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_is_recipient(f->db, m.message_id, "bob"), MSV_ERR_NOT_FOUND);
    assert_int_equal(
        msv_client_db_get(f->db, "changed-at:77777777777777777777777777777777", &v, &len),
        MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_history(f->db, NULL, gone, 0, &got, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_messages_free(got, n);
    assert_int_equal(msv_client_db_messages_expired(f->db, 35000, 10, &got, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_messages_free(got, n);
    assert_false(files_hold(f, (const uint8_t *)gone, strlen(gone)));
    /* deleting what is not there is no error; the others stay */
    assert_int_equal(msv_client_db_message_delete(f->db, m.message_id), MSV_OK);
    assert_int_equal(msv_client_db_history(f->db, "bob", NULL, 0, &got, &n), MSV_OK);
    assert_int_equal(n, 40);
    msv_messages_free(got, n);
}

static void test_outbox(void **state)
{
    struct fixture *f = *state;
    struct msv_outbox_rec *o = NULL;
    struct msv_message_rec ma, mc;
    size_t n = 0;
    uint8_t a[16], b[16], c[16];

    memset(a, 0xa, 16);
    memset(b, 0xb, 16);
    memset(c, 0xc, 16);
    ma = queued(a, "hello");
    mc = queued(c, "never");
    assert_int_equal(
        msv_client_db_outbox_put(f->db, &ma, a, "bob@x.org\n", (const uint8_t *)"pa", 2, 5),
        MSV_OK);
    expect_status(f->db, a, "queued");
    /* a control message: in the outbox, not in history */
    assert_int_equal(
        msv_client_db_outbox_put(f->db, NULL, b, "carol@x.org\n", (const uint8_t *)"pb", 2, 6),
        MSV_OK);
    expect_status(f->db, b, NULL);
    /* one transaction: an outbox row that cannot be stored leaves no history record behind */
    assert_int_equal(msv_client_db_outbox_put(f->db, &mc, a, "x", (const uint8_t *)"p", 1, 7),
                     MSV_ERR_EXISTS);
    expect_status(f->db, c, NULL);
    assert_int_equal(msv_client_db_outbox(f->db, &o, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(o[0].message_id, a, 16);
    assert_false(o[0].owed);
    assert_string_equal(o[1].recipients, "carol@x.org\n");
    assert_memory_equal(o[1].payload, "pb", 2);
    msv_outbox_free(o, n);
    /* sent to all but some: owed to those alone, "sent" in the same transaction */
    assert_int_equal(msv_client_db_outbox_owed(f->db, a, "dave@x.org\n", "sent"), MSV_OK);
    expect_status(f->db, a, "sent");
    assert_int_equal(msv_client_db_outbox(f->db, &o, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_true(o[0].owed);
    assert_string_equal(o[0].recipients, "dave@x.org\n");
    assert_memory_equal(o[0].payload, "pa", 2);
    msv_outbox_free(o, n);
    /* settled: out of the outbox and "sent" together; settling again changes nothing */
    assert_int_equal(msv_client_db_outbox_settle(f->db, a, "sent"), MSV_OK);
    expect_status(f->db, a, "sent");
    assert_int_equal(msv_client_db_outbox_settle(f->db, a, NULL), MSV_OK);
    expect_status(f->db, a, "sent");
    assert_int_equal(msv_client_db_outbox_settle(f->db, b, "sent"), MSV_OK);
    assert_int_equal(msv_client_db_outbox(f->db, &o, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_outbox_free(o, n);
}

/* Envelopes read: remembered by digest, forgotten only once older than asked. */
static void test_envelopes_read(void **state)
{
    struct fixture *f = *state;
    uint8_t old[32], recent[32];

    memset(old, 1, sizeof(old));
    memset(recent, 2, sizeof(recent));
    assert_int_equal(msv_client_db_envelope_seen(f->db, old), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_envelope_read(f->db, old, 1000), MSV_OK);
    assert_int_equal(msv_client_db_envelope_read(f->db, recent, 5000), MSV_OK);
    assert_int_equal(msv_client_db_envelope_read(f->db, recent, 6000), MSV_OK); /* once only */
    assert_int_equal(msv_client_db_envelope_seen(f->db, old), MSV_OK);
    assert_int_equal(msv_client_db_envelopes_forget(f->db, 5000), MSV_OK);
    assert_int_equal(msv_client_db_envelope_seen(f->db, old), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_envelope_seen(f->db, recent), MSV_OK);
}

/* One reaction per person and message, the newest by send time then id, in any arrival order.
 */
static void test_reactions(void **state)
{
    struct fixture *f = *state;
    struct msv_reaction_rec r = {.handle = "bob", .emoji = "a", .sent_at_ms = 2000}, *got = NULL;
    uint8_t other[16];
    size_t n = 0;

    memset(r.message_id, 7, 16);
    memset(r.reaction_id, 1, 16);
    memset(other, 8, 16);
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_OK);
    r.emoji = "old"; /* an older one, arriving late */
    r.sent_at_ms = 1000;
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_ERR_EXISTS);
    r.emoji = "b"; /* the same time: the greater id wins */
    r.sent_at_ms = 2000;
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_ERR_EXISTS);
    memset(r.reaction_id, 2, 16);
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_OK);
    r.handle = "carol";
    r.sent_at_ms = 3000;
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_OK);
    r.handle = "dave";
    r.emoji = "c";
    r.sent_at_ms = 2500;
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_OK);
    assert_int_equal(msv_client_db_reactions(f->db, r.message_id, &got, &n), MSV_OK);
    /* grouped, the emoji given first first */
    assert_int_equal(n, 3);
    assert_string_equal(got[0].emoji, "b");
    assert_string_equal(got[0].handle, "bob");
    assert_string_equal(got[1].emoji, "b");
    assert_string_equal(got[1].handle, "carol");
    assert_string_equal(got[2].emoji, "c");
    msv_reactions_free(got, n);
    /* taken away: not shown, and an older one cannot come back */
    r.emoji = "";
    r.sent_at_ms = 4000;
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_OK);
    r.emoji = "c";
    r.sent_at_ms = 2600;
    assert_int_equal(msv_client_db_reaction_put(f->db, &r), MSV_ERR_EXISTS);
    assert_int_equal(msv_client_db_reactions(f->db, r.message_id, &got, &n), MSV_OK);
    assert_int_equal(n, 2);
    msv_reactions_free(got, n);
    assert_int_equal(msv_client_db_reactions(f->db, other, &got, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_reactions_free(got, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settings_and_privacy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions_nest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contacts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_known_devices_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_device_told_after_its_alarm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_and_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsent_versions_leave_no_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conversation_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_envelopes_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_secrets_leave_no_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewritten_messages_leave_no_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_messages_leave_no_trace, setup, teardown),
    };

    return cmocka_run_group_tests_name("client_db", tests, NULL, NULL);
}
