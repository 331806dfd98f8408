/* A device's local state in SQLite (client_db.h). */
#include "store/client_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "missive/util.h"
#include "store/sql.h"
#include "util/buf.h"
#include "util/endian.h"

struct msv_client_db {
    sqlite3 *db;
    /* transactions open (msv_client_db_begin, and each operation's own): the outermost is
     * BEGIN IMMEDIATE, the ones within it savepoints */
    unsigned depth;
};

/* Unix milliseconds in SQL, the stamps of synced state. */
#define SYNC_NOW "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
/* A contact's synced key: "contact:" NAME "\n" HANDLE, of row (new, old or the table). */
#define SYNC_CONTACT(row) "'contact:' || " row ".name || char(10) || " row ".handle"
/* Records a change of key (pending, stamped above the key's last stamp). */
#define SYNC_RECORD(key, value, deleted)                                                       \
    "INSERT INTO sync_state (key, value, deleted, stamp, pending) VALUES (" key ", " value     \
    ", " deleted ", " SYNC_NOW ", 1) ON CONFLICT (key) DO UPDATE SET value = excluded.value, " \
    "deleted = excluded.deleted, stamp = max(stamp + 1, excluded.stamp), pending = 1;"

static const char *const migrations[] = {
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
    "CREATE TABLE contacts (name TEXT NOT NULL, handle TEXT NOT NULL,"
    "  PRIMARY KEY (name, handle));"
    "CREATE TABLE known_devices (handle TEXT NOT NULL, device_id BIGINT NOT NULL,"
    "  suite INTEGER NOT NULL, identity BLOB NOT NULL, first_seen_ms BIGINT NOT NULL,"
    "  PRIMARY KEY (handle, device_id));"
    "CREATE TABLE messages (row INTEGER PRIMARY KEY, message_id BLOB NOT NULL UNIQUE,"
    "  conversation TEXT NOT NULL, outgoing INTEGER NOT NULL, sender TEXT NOT NULL,"
    "  sender_device BIGINT NOT NULL, kind INTEGER NOT NULL, text TEXT NOT NULL,"
    "  sent_at_ms BIGINT NOT NULL, stored_at_ms BIGINT NOT NULL, status TEXT NOT NULL);"
    "CREATE INDEX messages_by_conversation ON messages(conversation, row);"
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='row');"
    "CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN"
    "  INSERT INTO messages_fts(rowid, text) VALUES (new.row, new.text); END;"
    "CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN"
    "  INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.row, old.text);"
    "  END;"
    "CREATE TABLE outbox (message_id BLOB PRIMARY KEY, recipients TEXT NOT NULL,"
    "  payload BLOB NOT NULL, created_ms BIGINT NOT NULL);",
    "CREATE TABLE groups (group_id BLOB PRIMARY KEY, name TEXT NOT NULL,"
    "  members TEXT NOT NULL, updated_ms BIGINT NOT NULL);",
    /* edits change a message's text: its search index follows */
    "CREATE TRIGGER messages_au AFTER UPDATE OF text ON messages BEGIN"
    "  INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.row, old.text);"
    "  INSERT INTO messages_fts(rowid, text) VALUES (new.row, new.text); END;",
    /* v2: the devices of this account that this device was told of (transparency monitor) */
    "CREATE TABLE own_devices (device_id BIGINT NOT NULL, identity_hash BLOB NOT NULL,"
    "  alarmed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (device_id, identity_hash));",
    /* v3: their public identities, to check the approvals they sign */
    "ALTER TABLE own_devices ADD COLUMN suite INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE own_devices ADD COLUMN identity BLOB;",
    /* v4 (sessions): digests of the envelopes this device has read, so that none is read twice */
    "CREATE TABLE seen_envelopes (digest BLOB PRIMARY KEY, seen_ms BIGINT NOT NULL);"
    "CREATE INDEX seen_envelopes_by_time ON seen_envelopes (seen_ms);",
    /* v5 (sessions): sessions stored by device id alone go; they are kept per peer now */
    "DELETE FROM settings WHERE key GLOB 'session-prev:*' OR (key GLOB 'session:*' AND key NOT "
    "GLOB 'session:*:*');",
    /* v6: what a received message still needs (MSV_MESSAGE_TO_SHOW, _RECEIPT_OWED) */
    "ALTER TABLE messages ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX messages_pending ON messages(row) WHERE pending != 0;",
    /* v7: groups someone else made are invitations until accepted; groups known before stay */
    "ALTER TABLE groups ADD COLUMN accepted INTEGER NOT NULL DEFAULT 1;",
    /* v8: who each sent message went to: only they may mark it delivered or read */
    "CREATE TABLE message_recipients (message_id BLOB NOT NULL, handle TEXT NOT NULL,"
    "  PRIMARY KEY (message_id, handle));",
    /* v9: reactions: each person's newest one per message (emoji '' once taken away, so that an
       older one replayed does not come back) */
    "CREATE TABLE reactions (message_id BLOB NOT NULL, handle TEXT NOT NULL,"
    "  emoji TEXT NOT NULL, sent_at_ms BIGINT NOT NULL, reaction_id BLOB NOT NULL,"
    "  PRIMARY KEY (message_id, handle));",
    /* v10: each version of an edited message (edit 0 the original), for its edit history */
    "CREATE TABLE message_versions (message_id BLOB NOT NULL, edit_number INTEGER NOT NULL,"
    "  text TEXT NOT NULL, at_ms BIGINT NOT NULL, PRIMARY KEY (message_id, edit_number));",
    /* v11: state synced between the account's own devices (docs/missive.md, "Sync"): every
     * change of a "sync:" setting or a contact is recorded with a stamp, pending until sent;
     * changes applied from another device (sync_applying holds a row meanwhile) are not */
    "CREATE TABLE sync_state (key TEXT PRIMARY KEY, value BLOB NOT NULL, deleted INTEGER NOT "
    "  NULL, stamp BIGINT NOT NULL, pending INTEGER NOT NULL);"
    "CREATE TABLE sync_applying (applying INTEGER);"
    "CREATE TRIGGER settings_sync_ai AFTER INSERT ON settings WHEN new.key GLOB 'sync:*' AND NOT "
    "  EXISTS (SELECT 1 FROM sync_applying) BEGIN " SYNC_RECORD(
        "new.key", "new.value",
        "0") " END;"
             "CREATE TRIGGER settings_sync_au AFTER UPDATE OF value ON settings WHEN new.key GLOB "
             "'sync:*' "
             "  AND new.value IS NOT old.value AND NOT EXISTS (SELECT 1 FROM sync_applying) "
             "BEGIN " SYNC_RECORD(
                 "new.key", "new.value",
                 "0") " END;"
                      "CREATE TRIGGER settings_sync_ad AFTER DELETE ON settings WHEN old.key GLOB "
                      "'sync:*' AND NOT "
                      "  EXISTS (SELECT 1 FROM sync_applying) BEGIN " SYNC_RECORD(
                          "old.key", "x''",
                          "1") " END;"
                               "CREATE TRIGGER contacts_sync_ai AFTER INSERT ON contacts WHEN NOT "
                               "EXISTS (SELECT 1 FROM "
                               "  sync_applying) BEGIN " SYNC_RECORD(
                                   SYNC_CONTACT("new"), "x''",
                                   "0") " END;"
                                        "CREATE TRIGGER contacts_sync_ad AFTER DELETE ON contacts "
                                        "WHEN NOT EXISTS (SELECT 1 FROM "
                                        "  sync_applying) BEGIN " SYNC_RECORD(
                                            SYNC_CONTACT("old"), "x''",
                                            "1") " END;"
                                                 "INSERT INTO sync_state SELECT key, value, "
                                                 "0, " SYNC_NOW ", 1 FROM settings WHERE key GLOB "
                                                 "  'sync:*';"
                                                 "INSERT OR IGNORE INTO sync_state "
                                                 "SELECT " SYNC_CONTACT(
                                                     "contacts") ", x'', 0, " SYNC_NOW
                                                                 ", 1 FROM contacts;",
    /* v10: one profile key per account, synced between its devices (client/sessions.h) */
    "INSERT INTO settings (key, value) SELECT 'sync:secret:profile-key', value FROM settings "
    "  WHERE key = 'profile-key';"
    "DELETE FROM settings WHERE key = 'profile-key';",
    /* the message a message answers (its payload's reply_to), NULL if none */
    "ALTER TABLE messages ADD COLUMN reply_to BLOB;",
    /* the people a group message names (checked members when it arrived) */
    "CREATE TABLE mentions (message_id BLOB NOT NULL, start INTEGER NOT NULL,"
    "  length INTEGER NOT NULL, handle TEXT NOT NULL);"
    "CREATE INDEX mentions_by_message ON mentions(message_id);",
    /* disappearing messages: the timer a message came under, when it is to be deleted */
    "ALTER TABLE messages ADD COLUMN timer_s INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE messages ADD COLUMN expires_at_ms BIGINT;"
    "CREATE INDEX messages_expiring ON messages(expires_at_ms) WHERE expires_at_ms IS NOT NULL;",
    /* an outbox entry that the others have, owed to its recipients only (msv_outbox_rec) */
    "ALTER TABLE outbox ADD COLUMN owed INTEGER NOT NULL DEFAULT 0;",
    /* who invited this account to a group it has not accepted (msv_client_db_invitations) */
    "ALTER TABLE groups ADD COLUMN invited_by TEXT;"
    "CREATE INDEX groups_invited ON groups(invited_by) WHERE accepted = 0;",
};

/*
 * Settings hold the device's secrets: one-time prekey secrets, sessions, the
 * profile key. One deleted or replaced must not stay in the files. With
 * secure_delete SQLite zeroes what a write frees in the pages it writes; a
 * checkpoint that truncates the write-ahead log then copies those pages over
 * the old ones in the database file and empties the log, which held the
 * older copies. Best effort: a reader in another process can keep the log
 * for a while (the busy timeout), and the next write tries again.
 */
static void drop_old_pages(struct msv_client_db *db)
{
    (void)sqlite3_wal_checkpoint_v2(db->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
}

msv_err msv_client_db_open(const char *path, struct msv_client_db **out)
{
    struct msv_client_db *db = calloc(1, sizeof(*db));
    msv_err err;

    if (db == NULL)
        return MSV_ERR_NOMEM;
    err = msv_sql_open(path, migrations, sizeof(migrations) / sizeof(migrations[0]), 0, &db->db);
    if (err == MSV_OK)
        err = msv_sql_exec(db->db, "PRAGMA secure_delete = ON;");
    if (err != MSV_OK) {
        sqlite3_close(db->db);
        free(db);
        return err;
    }
    drop_old_pages(db); /* what an earlier version or a crash left in the log */
    *out = db;
    return MSV_OK;
}

void msv_client_db_close(struct msv_client_db *db)
{
    if (db == NULL)
        return;
    drop_old_pages(db);
    sqlite3_close(db->db);
    free(db);
}

/* ---- settings ------------------------------------------------------------------------- */

/* Runs sql with ?1 the key and ?2 the value. */
static msv_err put_setting(struct msv_client_db *db, const char *sql, const char *key,
                           const void *value, size_t len)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, sql, &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 2, len ? value : "", (int)len, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_set(struct msv_client_db *db, const char *key, const void *value, size_t len)
{
    msv_err err =
        put_setting(db, "UPDATE settings SET value = ?2 WHERE key = ?1;", key, value, len);

    if (err == MSV_OK && sqlite3_changes(db->db) > 0) {
        drop_old_pages(db); /* the value it replaced (a session's last state) */
        return MSV_OK;
    }
    /* a new key (a new prekey): nothing old to drop */
    return err != MSV_OK ? err
                         : put_setting(db,
                                       "INSERT INTO settings (key, value) VALUES (?1, ?2) ON "
                                       "CONFLICT (key) DO UPDATE SET value = excluded.value;",
                                       key, value, len);
}

static msv_err transaction_begin(struct msv_client_db *db);
static msv_err finish_transaction(struct msv_client_db *db, msv_err err);

msv_err msv_client_db_set2(struct msv_client_db *db, const char *key, const void *value, size_t len,
                           const char *key2, const void *value2, size_t len2)
{
    msv_err err = transaction_begin(db);

    if (err != MSV_OK)
        return err;
    err = msv_client_db_set(db, key, value, len);
    if (err == MSV_OK)
        err = msv_client_db_set(db, key2, value2, len2);
    err = finish_transaction(db, err);
    if (err == MSV_OK)
        drop_old_pages(db); /* what the values replaced, once committed */
    return err;
}

msv_err msv_client_db_unset(struct msv_client_db *db, const char *key)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "DELETE FROM settings WHERE key = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    if (err == MSV_OK)
        drop_old_pages(db);
    return err;
}

msv_err msv_client_db_unset_prefix(struct msv_client_db *db, const char *prefix)
{
    sqlite3_stmt *st = NULL;
    msv_err err =
        msv_sql_prepare(db->db, "DELETE FROM settings WHERE substr(key, 1, ?1) = ?2;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int(st, 1, (int)strlen(prefix));
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    if (err == MSV_OK)
        drop_old_pages(db);
    return err;
}

msv_err msv_client_db_unset_prefix_outside(struct msv_client_db *db, const char *prefix,
                                           uint64_t lo, uint64_t hi)
{
    sqlite3_stmt *st = NULL;
    uint8_t lo_be[8], hi_be[8];
    /* blobs compare as bytes: big-endian numbers compare as numbers */
    msv_err err = msv_sql_prepare(db->db,
                                  "DELETE FROM settings WHERE substr(key, 1, ?1) = ?2 AND "
                                  "(length(value) < 8 OR substr(value, 1, 8) < ?3 OR "
                                  "substr(value, 1, 8) > ?4);",
                                  &st);

    if (err != MSV_OK)
        return err;
    msv_put_u64be(lo_be, lo);
    msv_put_u64be(hi_be, hi);
    sqlite3_bind_int(st, 1, (int)strlen(prefix));
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 3, lo_be, sizeof(lo_be), SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 4, hi_be, sizeof(hi_be), SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    if (err == MSV_OK && sqlite3_changes(db->db) > 0)
        drop_old_pages(db);
    return err;
}

msv_err msv_client_db_snapshot(struct msv_client_db *db, const char *path)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "VACUUM INTO ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_compact(struct msv_client_db *db)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "VACUUM;", &st);

    return err == MSV_OK ? msv_sql_run(st) : err;
}

msv_err msv_client_db_get(struct msv_client_db *db, const char *key, uint8_t **value, size_t *len)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "SELECT value FROM settings WHERE key = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = (*value = msv_sql_blob(st, 0, len)) != NULL ? MSV_OK : MSV_ERR_NOMEM;
    else
        err = rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    sqlite3_finalize(st);
    return err;
}

/* ---- contacts ------------------------------------------------------------------------- */

msv_err msv_client_db_contact_add(struct msv_client_db *db, const char *name, const char *handle)
{
    sqlite3_stmt *st = NULL;
    msv_err err =
        msv_sql_prepare(db->db, "INSERT INTO contacts (name, handle) VALUES (?, ?);", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, handle, -1, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_contact_remove(struct msv_client_db *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "DELETE FROM contacts WHERE name = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    return err == MSV_OK && sqlite3_changes(db->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

/* Grows *items (of size elem) to hold one more; MSV_ERR_NOMEM if it cannot. */
/* msv_sql_rows, then st finalized. */
static msv_err collect(sqlite3_stmt *st, size_t elem, msv_err (*read_row)(sqlite3_stmt *, void *),
                       void (*drop)(void *, size_t), void **out, size_t *count, int *rc)
{
    msv_err err = msv_sql_rows(st, elem, read_row, drop, out, count, rc);

    sqlite3_finalize(st);
    return err;
}

static msv_err read_contact(sqlite3_stmt *st, void *item)
{
    struct msv_contact *c = item;

    c->name = msv_sql_text(st, 0);
    c->handle = msv_sql_text(st, 1);
    return c->name && c->handle ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_contacts(void *list, size_t n)
{
    msv_contacts_free(list, n);
}

msv_err msv_client_db_contacts(struct msv_client_db *db, const char *name, struct msv_contact **out,
                               size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  name ? "SELECT name, handle FROM contacts WHERE name = ? "
                                         "ORDER BY name, handle;"
                                       : "SELECT name, handle FROM contacts ORDER BY name, handle;",
                                  &st);

    if (err != MSV_OK)
        return err;
    if (name != NULL)
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    return collect(st, sizeof(**out), read_contact, drop_contacts, (void **)out, count, NULL);
}

void msv_contacts_free(struct msv_contact *c, size_t count)
{
    for (size_t i = 0; c != NULL && i < count; i++) {
        free(c[i].name);
        free(c[i].handle);
    }
    free(c);
}

static msv_err read_setting(sqlite3_stmt *st, void *item)
{
    struct msv_setting *s = item;

    s->key = msv_sql_text(st, 0);
    s->value = msv_sql_blob(st, 1, &s->len);
    return s->key && s->value ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_settings(void *list, size_t n)
{
    msv_settings_free(list, n);
}

msv_err msv_client_db_settings(struct msv_client_db *db, const char *prefix, size_t max,
                               struct msv_setting **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    size_t n = strlen(prefix);
    /* the keys from prefix up to the next prefix of its length (the key's index read as a
     * range, not the whole table): its last byte one higher, unless it is the highest. Keys
     * compare byte by byte (BINARY), so every key in that range starts with prefix */
    int ranged = n > 0 && (unsigned char)prefix[n - 1] < 0xff;
    char *upper = ranged ? malloc(n + 1) : NULL;
    msv_err err = ranged && upper == NULL
                      ? MSV_ERR_NOMEM
                      : msv_sql_prepare(db->db,
                                        ranged ? "SELECT key, value FROM settings WHERE key >= ?2 "
                                                 "AND key < ?4 ORDER BY key LIMIT ?3;"
                                               : "SELECT key, value FROM settings WHERE "
                                                 "substr(key, 1, ?1) = ?2 ORDER BY key LIMIT ?3;",
                                        &st);

    if (err != MSV_OK) {
        free(upper);
        return err;
    }
    sqlite3_bind_int(st, 1, (int)n);
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)max);
    if (ranged) {
        memcpy(upper, prefix, n + 1);
        upper[n - 1] = (char)((unsigned char)upper[n - 1] + 1);
        sqlite3_bind_text(st, 4, upper, -1, SQLITE_TRANSIENT);
    }
    free(upper);
    return collect(st, sizeof(**out), read_setting, drop_settings, (void **)out, count, NULL);
}

void msv_settings_free(struct msv_setting *s, size_t count)
{
    for (size_t i = 0; s != NULL && i < count; i++) {
        free(s[i].key);
        free(s[i].value);
    }
    free(s);
}

/* ---- known devices -------------------------------------------------------------------- */

static msv_err read_known_device(sqlite3_stmt *st, void *item)
{
    struct msv_known_device *d = item;

    d->device_id = (uint64_t)sqlite3_column_int64(st, 0);
    d->suite = (uint32_t)sqlite3_column_int(st, 1);
    d->identity = msv_sql_blob(st, 2, &d->identity_len);
    d->first_seen_ms = sqlite3_column_int64(st, 3);
    return d->identity ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_known_devices(void *list, size_t n)
{
    msv_known_devices_free(list, n);
}

msv_err msv_client_db_known_devices(struct msv_client_db *db, const char *handle,
                                    struct msv_known_device **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT device_id, suite, identity, first_seen_ms FROM "
                                  "known_devices WHERE handle = ? ORDER BY device_id;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    return collect(st, sizeof(**out), read_known_device, drop_known_devices, (void **)out, count,
                   NULL);
}

void msv_known_devices_free(struct msv_known_device *d, size_t count)
{
    for (size_t i = 0; d != NULL && i < count; i++)
        free(d[i].identity);
    free(d);
}

/* 1 if the two sets hold the same ids with the same identities. */
static int same_devices(const struct msv_known_device *a, size_t na,
                        const struct msv_known_device *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        size_t k;

        for (k = 0; k < nb && b[k].device_id != a[i].device_id; k++)
            ;
        if (k == nb || a[i].identity_len != b[k].identity_len ||
            memcmp(a[i].identity, b[k].identity, a[i].identity_len) != 0)
            return 0;
    }
    return 1;
}

static msv_err replace_locked(struct msv_client_db *db, const char *handle,
                              const struct msv_known_device *devs, size_t n, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "DELETE FROM known_devices WHERE handle = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    err = msv_sql_run(st); /* finalises st */
    st = NULL;
    if (err == MSV_OK)
        err = msv_sql_prepare(db->db,
                              "INSERT INTO known_devices (handle, device_id, suite, identity, "
                              "first_seen_ms) VALUES (?, ?, ?, ?, ?);",
                              &st);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        int rc;

        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)devs[i].device_id);
        sqlite3_bind_int(st, 3, (int)devs[i].suite);
        sqlite3_bind_blob(st, 4, devs[i].identity, (int)devs[i].identity_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, devs[i].first_seen_ms ? devs[i].first_seen_ms : now_ms);
        rc = sqlite3_step(st);
        err = rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
    }
    if (st != NULL)
        sqlite3_finalize(st);
    return err;
}

/*
 * Opens a transaction: BEGIN IMMEDIATE, or within one already open a savepoint, so that an
 * operation with a transaction of its own can be part of a caller's (msv_client_db_begin).
 */
static msv_err transaction_begin(struct msv_client_db *db)
{
    msv_err err;

    /* an outer transaction SQLite undid by itself (a full disk, say): nothing joins it, or a
     * savepoint would open a transaction of its own and keep its writes alone */
    if (db->depth > 0 && sqlite3_get_autocommit(db->db))
        return MSV_ERR_IO;
    err = msv_sql_exec(db->db, db->depth == 0 ? "BEGIN IMMEDIATE;" : "SAVEPOINT inner;");

    if (err == MSV_OK)
        db->depth++;
    return err;
}

/*
 * Ends what transaction_begin opened: kept if err is MSV_OK, else undone. Within an outer
 * transaction a failure is undone back to the savepoint, and the outer one decides the rest.
 */
static msv_err finish_transaction(struct msv_client_db *db, msv_err err)
{
    if (db->depth == 0)
        return err == MSV_OK ? MSV_ERR_INVALID : err;
    if (--db->depth > 0) {
        msv_err released;

        if (sqlite3_get_autocommit(db->db))
            return err == MSV_OK ? MSV_ERR_IO : err; /* the outer one was undone by SQLite */
        if (err != MSV_OK && msv_sql_exec(db->db, "ROLLBACK TO inner;") != MSV_OK)
            return err; /* the outer one must not keep the writes: it fails with this */
        released = msv_sql_exec(db->db, "RELEASE inner;");
        return err == MSV_OK ? released : err;
    }
    if (err == MSV_OK && sqlite3_get_autocommit(db->db))
        err = MSV_ERR_IO; /* undone by SQLite already */
    if (err == MSV_OK)
        err = msv_sql_exec(db->db, "COMMIT;");
    if (err != MSV_OK)
        msv_sql_exec(db->db, "ROLLBACK;");
    return err;
}

msv_err msv_client_db_begin(struct msv_client_db *db)
{
    return transaction_begin(db);
}

msv_err msv_client_db_end(struct msv_client_db *db, msv_err err)
{
    int outer = db->depth == 1;

    err = finish_transaction(db, err);
    if (err == MSV_OK && outer)
        drop_old_pages(db); /* what the writes replaced, once committed */
    return err;
}

msv_err msv_client_db_known_replace(struct msv_client_db *db, const char *handle,
                                    const struct msv_known_device *devs, size_t n, int64_t now_ms,
                                    int *changed)
{
    struct msv_known_device *old = NULL;
    size_t old_n = 0;
    msv_err err = msv_client_db_known_devices(db, handle, &old, &old_n);

    if (err != MSV_OK)
        return err;
    *changed = old_n > 0 && !same_devices(old, old_n, devs, n);
    msv_known_devices_free(old, old_n);
    err = transaction_begin(db);
    if (err != MSV_OK)
        return err;
    return finish_transaction(db, replace_locked(db, handle, devs, n, now_ms));
}

/* ---- messages ------------------------------------------------------------------------- */

msv_err msv_client_db_message_put(struct msv_client_db *db, const struct msv_message_rec *m)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db,
        "INSERT INTO messages (message_id, conversation, outgoing, sender, sender_device, kind, "
        "text, sent_at_ms, stored_at_ms, status, pending, reply_to, timer_s, expires_at_ms) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);",
        &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, m->message_id, 16, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, m->conversation, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, m->outgoing);
    sqlite3_bind_text(st, 4, m->sender, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)m->sender_device);
    sqlite3_bind_int(st, 6, m->kind);
    sqlite3_bind_text(st, 7, m->text ? m->text : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 8, m->sent_at_ms);
    sqlite3_bind_int64(st, 9, m->stored_at_ms);
    sqlite3_bind_text(st, 10, m->status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 11, (int)m->pending);
    if (m->has_reply_to)
        sqlite3_bind_blob(st, 12, m->reply_to, 16, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 13, (sqlite3_int64)m->timer_s);
    if (m->expires_at_ms != 0)
        sqlite3_bind_int64(st, 14, m->expires_at_ms);
    /* the message id is UNIQUE: a redelivered message is MSV_ERR_EXISTS and changes nothing */
    return msv_sql_run(st);
}

msv_err msv_client_db_message_known(struct msv_client_db *db, const uint8_t message_id[16])
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "SELECT 1 FROM messages WHERE message_id = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return MSV_OK;
    return rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
}

msv_err msv_client_db_message_status(struct msv_client_db *db, const uint8_t message_id[16],
                                     const char *status)
{
    sqlite3_stmt *st = NULL;
    /* an unsend is final: a receipt or an outbox's settling that comes after it (the receiver
     * got the message before the unsend) leaves it unsent */
    msv_err err = msv_sql_prepare(db->db,
                                  "UPDATE messages SET status = CASE status WHEN 'unsent' THEN"
                                  " 'unsent' ELSE ? END WHERE message_id = ?;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 2, message_id, 16, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    return err == MSV_OK && sqlite3_changes(db->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err read_message(sqlite3_stmt *st, struct msv_message_rec *m)
{
    m->row = sqlite3_column_int64(st, 0);
    if (sqlite3_column_bytes(st, 1) == 16)
        memcpy(m->message_id, sqlite3_column_blob(st, 1), 16);
    m->conversation = msv_sql_text(st, 2);
    m->outgoing = sqlite3_column_int(st, 3);
    m->sender = msv_sql_text(st, 4);
    m->sender_device = (uint64_t)sqlite3_column_int64(st, 5);
    m->kind = sqlite3_column_int(st, 6);
    m->text = msv_sql_text(st, 7);
    m->sent_at_ms = sqlite3_column_int64(st, 8);
    m->stored_at_ms = sqlite3_column_int64(st, 9);
    m->status = msv_sql_text(st, 10);
    m->pending = (unsigned)sqlite3_column_int(st, 11);
    /* by name: columns that later versions add come after it */
    for (int i = 12; i < sqlite3_column_count(st); i++) {
        const char *name = sqlite3_column_name(st, i);

        if (strcmp(name, "reply_to") == 0 && sqlite3_column_bytes(st, i) == 16) {
            m->has_reply_to = 1;
            memcpy(m->reply_to, sqlite3_column_blob(st, i), 16);
        } else if (strcmp(name, "timer_s") == 0) {
            m->timer_s = (uint32_t)sqlite3_column_int64(st, i);
        } else if (strcmp(name, "expires_at_ms") == 0) {
            m->expires_at_ms = sqlite3_column_int64(st, i); /* NULL reads as 0 */
        }
    }
    return m->conversation && m->sender && m->text && m->status ? MSV_OK : MSV_ERR_NOMEM;
}

static msv_err read_message_row(sqlite3_stmt *st, void *item)
{
    return read_message(st, item);
}

static void drop_messages(void *list, size_t n)
{
    msv_messages_free(list, n);
}

msv_err msv_client_db_message_get(struct msv_client_db *db, const uint8_t message_id[16],
                                  struct msv_message_rec **out)
{
    sqlite3_stmt *st = NULL;
    struct msv_message_rec *m = calloc(1, sizeof(*m));
    msv_err err = m ? msv_sql_prepare(db->db, "SELECT * FROM messages WHERE message_id = ?;", &st)
                    : MSV_ERR_NOMEM;
    int rc;

    if (err != MSV_OK) {
        free(m);
        return err;
    }
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_message(st, m);
    else
        err = rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    sqlite3_finalize(st);
    if (err != MSV_OK) {
        msv_messages_free(m, 1);
        return err;
    }
    *out = m;
    return MSV_OK;
}

/* Runs sql with ?1 the message id. */
static msv_err message_run(struct msv_client_db *db, const char *sql, const uint8_t message_id[16])
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, sql, &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

/* The text and status of a message, inside a transaction; an unsend takes its versions too. */
static msv_err rewrite_locked(struct msv_client_db *db, const uint8_t message_id[16],
                              const char *text, const char *status)
{
    sqlite3_stmt *st = NULL;
    msv_err err;

    /* the messages_au trigger keeps the search index in step */
    err = msv_sql_prepare(db->db,
                          "UPDATE messages SET text = ?1, status = ?2 WHERE message_id = ?3 AND "
                          "(status != 'unsent' OR ?2 = 'unsent');",
                          &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 3, message_id, 16, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    if (err == MSV_OK && sqlite3_changes(db->db) == 0)
        return MSV_ERR_NOT_FOUND;
    if (err == MSV_OK && strcmp(status, "unsent") == 0)
        err = message_run(db, "DELETE FROM message_versions WHERE message_id = ?1;", message_id);
    return err;
}

/*
 * The old text's words stay in the search index's older segments until they
 * are merged: merge them all (an unsend or edit is rare), then drop the pages
 * they were in, as for secrets.
 */
static msv_err forget_old_text(struct msv_client_db *db, msv_err err)
{
    if (err == MSV_OK)
        err = msv_sql_exec(db->db, "INSERT INTO messages_fts(messages_fts) VALUES ('optimize');");
    if (err == MSV_OK)
        drop_old_pages(db);
    return err;
}

msv_err msv_client_db_message_rewrite(struct msv_client_db *db, const uint8_t message_id[16],
                                      const char *text, const char *status)
{
    msv_err err = transaction_begin(db);

    if (err != MSV_OK)
        return err;
    err = rewrite_locked(db, message_id, text, status);
    return forget_old_text(db, finish_transaction(db, err));
}

/* Keeps the original as edit 0 the first time, then the new version. */
static msv_err versions_put_locked(struct msv_client_db *db, const uint8_t message_id[16],
                                   uint32_t edit_number, const char *text, int64_t at_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = message_run(db,
                              "INSERT OR IGNORE INTO message_versions (message_id, edit_number, "
                              "text, at_ms) SELECT message_id, 0, text, sent_at_ms FROM messages "
                              "WHERE message_id = ?1 AND status != 'unsent';",
                              message_id);

    if (err == MSV_OK)
        err = msv_sql_prepare(db->db,
                              "INSERT INTO message_versions (message_id, edit_number, text, at_ms) "
                              "VALUES (?, ?, ?, ?);",
                              &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, edit_number);
    sqlite3_bind_text(st, 3, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, at_ms);
    return msv_sql_run(st);
}

msv_err msv_client_db_message_edit(struct msv_client_db *db, const uint8_t message_id[16],
                                   uint32_t edit_number, const char *text, int64_t at_ms)
{
    msv_err err = transaction_begin(db);

    if (err != MSV_OK)
        return err;
    err = versions_put_locked(db, message_id, edit_number, text, at_ms);
    if (err == MSV_OK)
        err = rewrite_locked(db, message_id, text, "edited");
    return forget_old_text(db, finish_transaction(db, err));
}

msv_err msv_client_db_edit_number(struct msv_client_db *db, const uint8_t message_id[16],
                                  uint32_t *edit_number)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db, "SELECT coalesce(max(edit_number), 0) FROM message_versions WHERE message_id = ?;",
        &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *edit_number = (uint32_t)sqlite3_column_int64(st, 0);
    err = rc == SQLITE_ROW ? MSV_OK : msv_sql_err(rc);
    sqlite3_finalize(st);
    return err;
}

static msv_err read_version(sqlite3_stmt *st, void *item)
{
    struct msv_message_version *v = item;

    v->edit_number = (uint32_t)sqlite3_column_int64(st, 0);
    v->text = msv_sql_text(st, 1);
    v->at_ms = sqlite3_column_int64(st, 2);
    return v->text ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_versions(void *list, size_t n)
{
    msv_message_versions_free(list, n);
}

msv_err msv_client_db_message_versions(struct msv_client_db *db, const uint8_t message_id[16],
                                       struct msv_message_version **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT edit_number, text, at_ms FROM message_versions WHERE "
                                  "message_id = ? ORDER BY edit_number;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    return collect(st, sizeof(**out), read_version, drop_versions, (void **)out, count, NULL);
}

void msv_message_versions_free(struct msv_message_version *v, size_t count)
{
    for (size_t i = 0; v != NULL && i < count; i++)
        msv_secret_free(v[i].text, v[i].text ? strlen(v[i].text) : 0);
    free(v);
}

msv_err msv_client_db_history(struct msv_client_db *db, const char *conversation,
                              const char *search, size_t limit, struct msv_message_rec **out,
                              size_t *count)
{
    return msv_client_db_history_before(db, conversation, search, INT64_MAX, limit, out, count);
}

msv_err msv_client_db_history_before(struct msv_client_db *db, const char *conversation,
                                     const char *search, int64_t before_row, size_t limit,
                                     struct msv_message_rec **out, size_t *count)
{
    /* newest `limit` rows, returned oldest first */
    static const char *const sql[2][2] = {
        {"SELECT * FROM (SELECT m.* FROM messages m WHERE m.row < ?4 ORDER BY m.row DESC LIMIT "
         "?3) ORDER BY row;",
         "SELECT * FROM (SELECT m.* FROM messages m WHERE m.conversation = ?1 AND m.row < ?4 "
         "ORDER BY m.row DESC LIMIT ?3) ORDER BY row;"},
        {"SELECT * FROM (SELECT m.* FROM messages m JOIN messages_fts f ON f.rowid = m.row "
         "WHERE messages_fts MATCH ?2 AND m.row < ?4 ORDER BY m.row DESC LIMIT ?3) ORDER BY row;",
         "SELECT * FROM (SELECT m.* FROM messages m JOIN messages_fts f ON f.rowid = m.row "
         "WHERE messages_fts MATCH ?2 AND m.conversation = ?1 AND m.row < ?4 ORDER BY m.row "
         "DESC LIMIT ?3) ORDER BY row;"},
    };
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, sql[search != NULL][conversation != NULL], &st);
    int rc = SQLITE_DONE;

    if (err != MSV_OK)
        return err == MSV_ERR_IO ? MSV_ERR_INVALID : err;
    if (conversation != NULL)
        sqlite3_bind_text(st, 1, conversation, -1, SQLITE_TRANSIENT);
    if (search != NULL)
        sqlite3_bind_text(st, 2, search, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)(limit ? limit : 1000000));
    sqlite3_bind_int64(st, 4, (sqlite3_int64)before_row);
    err = collect(st, sizeof(**out), read_message_row, drop_messages, (void **)out, count, &rc);
    /* a search text that FTS5 cannot parse is the caller's error, not the disk's */
    return err != MSV_OK && search != NULL && rc == SQLITE_ERROR ? MSV_ERR_INVALID : err;
}

msv_err msv_client_db_message_done(struct msv_client_db *db, const uint8_t message_id[16],
                                   unsigned steps)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db, "UPDATE messages SET pending = pending & ~? WHERE message_id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int(st, 1, (int)steps);
    sqlite3_bind_blob(st, 2, message_id, 16, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_messages_pending(struct msv_client_db *db, struct msv_message_rec **out,
                                       size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err =
        msv_sql_prepare(db->db, "SELECT * FROM messages WHERE pending != 0 ORDER BY row;", &st);

    if (err != MSV_OK)
        return err;
    return collect(st, sizeof(**out), read_message_row, drop_messages, (void **)out, count, NULL);
}

msv_err msv_client_db_message_expiry_start(struct msv_client_db *db, const uint8_t message_id[16],
                                           int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "UPDATE messages SET expires_at_ms = ?1 + timer_s * 1000 WHERE "
                                  "message_id = ?2 AND timer_s > 0 AND expires_at_ms IS NULL;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_blob(st, 2, message_id, 16, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_messages_expired(struct msv_client_db *db, int64_t now_ms, size_t limit,
                                       struct msv_message_rec **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT * FROM messages WHERE expires_at_ms IS NOT NULL AND "
                                  "expires_at_ms <= ? ORDER BY expires_at_ms, row LIMIT ?;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
    return collect(st, sizeof(**out), read_message_row, drop_messages, (void **)out, count, NULL);
}

msv_err msv_client_db_messages_disappearing(struct msv_client_db *db, struct msv_message_rec **out,
                                            size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err =
        msv_sql_prepare(db->db, "SELECT * FROM messages WHERE timer_s > 0 ORDER BY row;", &st);

    if (err != MSV_OK)
        return err;
    return collect(st, sizeof(**out), read_message_row, drop_messages, (void **)out, count, NULL);
}

msv_err msv_client_db_messages_delete(struct msv_client_db *db, const uint8_t (*ids)[16], size_t n)
{
    /* everything that holds a message or refers to it; the messages_ad trigger takes its
     * words out of the search index */
    static const char *const sql[] = {
        "DELETE FROM messages WHERE message_id = ?1;",
        "DELETE FROM message_recipients WHERE message_id = ?1;",
        "DELETE FROM outbox WHERE message_id = ?1;",
        "DELETE FROM settings WHERE key = 'changed-at:' || lower(hex(?1));",
        "DELETE FROM message_versions WHERE message_id = ?1;",
        "DELETE FROM reactions WHERE message_id = ?1;",
        "DELETE FROM mentions WHERE message_id = ?1;",
    };
    msv_err err = transaction_begin(db);

    if (err != MSV_OK)
        return err;
    for (size_t k = 0; err == MSV_OK && k < n; k++)
        for (size_t i = 0; err == MSV_OK && i < sizeof(sql) / sizeof(sql[0]); i++)
            err = message_run(db, sql[i], ids[k]);
    err = finish_transaction(db, err);
    /*
     * A deleted entry stays in the search index's older segments until they are
     * merged: merge them all, so that the pages holding its words are freed (and,
     * with secure_delete, zeroed), then drop the old pages from the log. (FTS5's
     * own secure-delete option needs SQLite 3.42; Debian bookworm has 3.40.)
     */
    if (err == MSV_OK)
        err = msv_sql_exec(db->db, "INSERT INTO messages_fts(messages_fts) VALUES ('optimize');");
    if (err == MSV_OK)
        drop_old_pages(db);
    return err;
}

msv_err msv_client_db_message_delete(struct msv_client_db *db, const uint8_t message_id[16])
{
    return msv_client_db_messages_delete(db, (const uint8_t(*)[16])message_id, 1);
}

msv_err msv_client_db_has_outgoing(struct msv_client_db *db, const char *conversation)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db,
        "SELECT 1 FROM messages WHERE conversation = ? AND outgoing = 1 AND status != 'notice' "
        "LIMIT 1;",
        &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, conversation, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return MSV_OK;
    return rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
}

void msv_messages_free(struct msv_message_rec *m, size_t count)
{
    for (size_t i = 0; m != NULL && i < count; i++) {
        free(m[i].conversation);
        free(m[i].sender);
        msv_secret_free(m[i].text, m[i].text ? strlen(m[i].text) : 0);
        free(m[i].status);
    }
    free(m);
}

/* ---- reactions ------------------------------------------------------------------------ */

msv_err msv_client_db_reaction_put(struct msv_client_db *db, const struct msv_reaction_rec *r)
{
    sqlite3_stmt *st = NULL;
    /* the newer by (sent_at_ms, reaction id) wins, whatever order they arrive in */
    msv_err err = msv_sql_prepare(
        db->db,
        "INSERT INTO reactions (message_id, handle, emoji, sent_at_ms, reaction_id) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (message_id, handle) DO UPDATE SET "
        "emoji = excluded.emoji, sent_at_ms = excluded.sent_at_ms, "
        "reaction_id = excluded.reaction_id WHERE (excluded.sent_at_ms, excluded.reaction_id) "
        "> "
        "(reactions.sent_at_ms, reactions.reaction_id);",
        &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, r->message_id, 16, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, r->handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, r->emoji ? r->emoji : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, r->sent_at_ms);
    sqlite3_bind_blob(st, 5, r->reaction_id, 16, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    return err == MSV_OK && sqlite3_changes(db->db) == 0 ? MSV_ERR_EXISTS : err;
}

static msv_err read_reaction(sqlite3_stmt *st, void *item)
{
    struct msv_reaction_rec *r = item;

    if (sqlite3_column_bytes(st, 0) == 16)
        memcpy(r->message_id, sqlite3_column_blob(st, 0), 16);
    r->handle = msv_sql_text(st, 1);
    r->emoji = msv_sql_text(st, 2);
    r->sent_at_ms = sqlite3_column_int64(st, 3);
    if (sqlite3_column_bytes(st, 4) == 16)
        memcpy(r->reaction_id, sqlite3_column_blob(st, 4), 16);
    return r->handle && r->emoji ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_reactions(void *list, size_t n)
{
    msv_reactions_free(list, n);
}

msv_err msv_client_db_reactions(struct msv_client_db *db, const uint8_t message_id[16],
                                struct msv_reaction_rec **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    /* grouped by emoji, the emoji first given first */
    msv_err err = msv_sql_prepare(
        db->db,
        "SELECT r.message_id, r.handle, r.emoji, r.sent_at_ms, r.reaction_id FROM reactions r "
        "JOIN (SELECT emoji, MIN(sent_at_ms) AS first FROM reactions WHERE message_id = ?1 AND "
        "emoji != '' GROUP BY emoji) e ON e.emoji = r.emoji WHERE r.message_id = ?1 "
        "ORDER BY e.first, r.emoji, r.sent_at_ms, r.handle;",
        &st);

    *out = NULL;
    *count = 0;
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    return collect(st, sizeof(**out), read_reaction, drop_reactions, (void **)out, count, NULL);
}

void msv_reactions_free(struct msv_reaction_rec *r, size_t count)
{
    for (size_t i = 0; r != NULL && i < count; i++) {
        free(r[i].handle);
        free(r[i].emoji);
    }
    free(r);
}

/* ---- mentions ------------------------------------------------------------------------- */

msv_err msv_client_db_mentions_put(struct msv_client_db *db, const uint8_t message_id[16],
                                   const struct msv_mention *m, size_t n)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        sqlite3_stmt *st = NULL;

        err = msv_sql_prepare(
            db->db, "INSERT INTO mentions (message_id, start, length, handle) VALUES (?, ?, ?, ?);",
            &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, m[i].start);
        sqlite3_bind_int64(st, 3, m[i].length);
        sqlite3_bind_text(st, 4, m[i].handle, -1, SQLITE_TRANSIENT);
        err = msv_sql_run(st);
    }
    return err;
}

static msv_err read_mention(sqlite3_stmt *st, void *item)
{
    struct msv_mention *m = item;

    m->start = (uint32_t)sqlite3_column_int64(st, 0);
    m->length = (uint32_t)sqlite3_column_int64(st, 1);
    m->handle = msv_sql_text(st, 2);
    return m->handle ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_mentions(void *list, size_t n)
{
    msv_mentions_free(list, n);
}

msv_err msv_client_db_mentions(struct msv_client_db *db, const uint8_t message_id[16],
                               struct msv_mention **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db, "SELECT start, length, handle FROM mentions WHERE message_id = ? ORDER BY start;",
        &st);

    *out = NULL;
    *count = 0;
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    return collect(st, sizeof(**out), read_mention, drop_mentions, (void **)out, count, NULL);
}

msv_err msv_client_db_mentioned_unread(struct msv_client_db *db, const char *conversation,
                                       const char *handle)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db,
        "SELECT 1 FROM messages m JOIN mentions n ON n.message_id = m.message_id WHERE "
        "m.conversation = ? AND m.outgoing = 0 AND m.status = 'received' AND n.handle = ? "
        "LIMIT 1;",
        &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, conversation, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, handle, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return MSV_OK;
    return rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
}

void msv_mentions_free(struct msv_mention *m, size_t count)
{
    for (size_t i = 0; m != NULL && i < count; i++)
        free(m[i].handle);
    free(m);
}

static msv_err read_conversation(sqlite3_stmt *st, void *item)
{
    struct msv_conversation_rec *c = item;

    c->conversation = msv_sql_text(st, 0);
    c->last_row = sqlite3_column_int64(st, 1);
    c->last_ms = sqlite3_column_int64(st, 2);
    c->unread = (size_t)sqlite3_column_int64(st, 3);
    return c->conversation ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_conversations(void *list, size_t n)
{
    msv_conversations_free(list, n);
}

msv_err msv_client_db_conversations(struct msv_client_db *db, struct msv_conversation_rec **out,
                                    size_t *count)
{
    static const char sql[] = "SELECT conversation, MAX(row), MAX(sent_at_ms),"
                              "  SUM(outgoing = 0 AND status = 'received') FROM messages"
                              "  GROUP BY conversation ORDER BY MAX(row) DESC;";
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, sql, &st);

    if (err != MSV_OK)
        return err;
    return collect(st, sizeof(**out), read_conversation, drop_conversations, (void **)out, count,
                   NULL);
}

void msv_conversations_free(struct msv_conversation_rec *c, size_t count)
{
    for (size_t i = 0; c != NULL && i < count; i++)
        free(c[i].conversation);
    free(c);
}

/* ---- groups -------------------------------------------------------------------------- */

msv_err msv_client_db_group_put(struct msv_client_db *db, const uint8_t group_id[16],
                                const char *name, const char *members, int accepted, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "INSERT INTO groups (group_id, name, members, updated_ms, "
                                  "accepted) VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id) DO "
                                  "UPDATE SET name = excluded.name, members = excluded.members, "
                                  "updated_ms = excluded.updated_ms;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, 16, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, members, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, now_ms);
    sqlite3_bind_int(st, 5, accepted != 0);
    return msv_sql_run(st);
}

/* Runs sql on the group group_id (its one parameter): MSV_ERR_NOT_FOUND if no row changed. */
static msv_err group_row_change(struct msv_client_db *db, const char *sql,
                                const uint8_t group_id[16])
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, sql, &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, 16, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    return err == MSV_OK && sqlite3_changes(db->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

msv_err msv_client_db_group_accept(struct msv_client_db *db, const uint8_t group_id[16])
{
    return group_row_change(db, "UPDATE groups SET accepted = 1 WHERE group_id = ?;", group_id);
}

msv_err msv_client_db_group_invited(struct msv_client_db *db, const uint8_t group_id[16],
                                    const char *handle)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db, "UPDATE groups SET invited_by = ?2 WHERE group_id = ?1 AND accepted = 0;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, 16, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, handle, -1, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_invitations(struct msv_client_db *db, const char *handle, size_t *from,
                                  size_t *all)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT count(*), count(*) FILTER (WHERE invited_by = ?) FROM "
                                  "groups WHERE accepted = 0 AND invited_by IS NOT NULL;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *all = (size_t)sqlite3_column_int64(st, 0);
        *from = (size_t)sqlite3_column_int64(st, 1);
    } else {
        err = MSV_ERR_IO;
    }
    sqlite3_finalize(st);
    return err;
}

msv_err msv_client_db_invitations_by(struct msv_client_db *db, const char *handle,
                                     uint8_t (**ids)[16], size_t *n)
{
    sqlite3_stmt *st = NULL;
    struct msv_buf out;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc;
    msv_err err = msv_sql_prepare(
        db->db, "SELECT group_id FROM groups WHERE accepted = 0 AND invited_by = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    msv_buf_init(&out, (size_t)16 * 65536);
    while (err == MSV_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == 16)
            err = msv_buf_put(&out, sqlite3_column_blob(st, 0), 16);
    if (err == MSV_OK && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    sqlite3_finalize(st);
    if (err == MSV_OK)
        err = msv_buf_finish(&out, &bytes, &len);
    msv_buf_clear(&out);
    if (err != MSV_OK)
        return err;
    *ids = (uint8_t(*)[16])bytes;
    *n = len / 16;
    return MSV_OK;
}

msv_err msv_client_db_invitation_drop(struct msv_client_db *db, const uint8_t group_id[16])
{
    return group_row_change(db, "DELETE FROM groups WHERE group_id = ? AND accepted = 0;",
                            group_id);
}

static msv_err read_group(sqlite3_stmt *st, struct msv_group_rec *g)
{
    if (sqlite3_column_bytes(st, 0) != 16)
        return MSV_ERR_PARSE;
    memcpy(g->group_id, sqlite3_column_blob(st, 0), 16);
    g->name = msv_sql_text(st, 1);
    g->members = msv_sql_text(st, 2);
    g->accepted = sqlite3_column_int(st, 3);
    return g->name && g->members ? MSV_OK : MSV_ERR_NOMEM;
}

msv_err msv_client_db_group_get(struct msv_client_db *db, const uint8_t *group_id, const char *name,
                                struct msv_group_rec *out)
{
    sqlite3_stmt *st = NULL;
    /* a name stands for an accepted group only, and only when no other has it */
    msv_err err = msv_sql_prepare(db->db,
                                  group_id ? "SELECT group_id, name, members, accepted FROM groups "
                                             "WHERE group_id = ?;"
                                           : "SELECT group_id, name, members, accepted FROM groups "
                                             "WHERE name = ? AND accepted = 1 LIMIT 2;",
                                  &st);
    int rc;

    if (err != MSV_OK)
        return err;
    if (group_id != NULL)
        sqlite3_bind_blob(st, 1, group_id, 16, SQLITE_TRANSIENT);
    else
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    memset(out, 0, sizeof(*out));
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_group(st, out);
    else
        err = rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    if (err == MSV_OK && sqlite3_step(st) == SQLITE_ROW)
        err = MSV_ERR_EXISTS; /* two groups of this name: which one is not for us to guess */
    sqlite3_finalize(st);
    if (err != MSV_OK)
        msv_group_clear(out);
    return err;
}

static msv_err read_group_row(sqlite3_stmt *st, void *item)
{
    return read_group(st, item);
}

static void drop_groups(void *list, size_t n)
{
    msv_groups_free(list, n);
}

msv_err msv_client_db_groups(struct msv_client_db *db, struct msv_group_rec **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db, "SELECT group_id, name, members, accepted FROM groups ORDER BY name;", &st);

    if (err != MSV_OK)
        return err;
    return collect(st, sizeof(**out), read_group_row, drop_groups, (void **)out, count, NULL);
}

void msv_group_clear(struct msv_group_rec *g)
{
    free(g->name);
    free(g->members);
    g->name = g->members = NULL;
}

void msv_groups_free(struct msv_group_rec *g, size_t count)
{
    for (size_t i = 0; g != NULL && i < count; i++)
        msv_group_clear(&g[i]);
    free(g);
}

/* ---- recipients of sent messages ------------------------------------------------------ */

msv_err msv_client_db_recipients_put(struct msv_client_db *db, const uint8_t message_id[16],
                                     const char *const *handles, size_t n)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "INSERT OR IGNORE INTO message_recipients (message_id, handle) "
                                  "VALUES (?, ?);",
                                  &st);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        int rc;

        sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, handles[i], -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        err = rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return err;
}

msv_err msv_client_db_is_recipient(struct msv_client_db *db, const uint8_t message_id[16],
                                   const char *handle)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT COUNT(*), COALESCE(SUM(handle = ?), 0) FROM "
                                  "message_recipients WHERE message_id = ?;",
                                  &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 2, message_id, 16, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        err = msv_sql_err(rc);
    else if (sqlite3_column_int64(st, 0) == 0)
        err = MSV_ERR_NOT_FOUND;
    else
        err = sqlite3_column_int64(st, 1) > 0 ? MSV_OK : MSV_ERR_AUTH;
    sqlite3_finalize(st);
    return err;
}

/* ---- own devices ----------------------------------------------------------------------- */

msv_err msv_client_db_own_device_put(struct msv_client_db *db, uint64_t device_id,
                                     const uint8_t identity_hash[32], uint32_t suite,
                                     const uint8_t *identity, size_t identity_len, int alarmed)
{
    sqlite3_stmt *st = NULL;
    /* one told of (alarmed 0) that the monitor alarmed on first, or recorded without its
     * identity, is counted as told of now, with its identity (its approvals then check out) */
    msv_err err = msv_sql_prepare(
        db->db,
        "INSERT INTO own_devices (device_id, identity_hash, alarmed, suite, identity) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device_id, identity_hash) DO UPDATE SET "
        "alarmed = 0, suite = excluded.suite, identity = COALESCE(excluded.identity, identity) "
        "WHERE ?3 = 0 AND (alarmed <> 0 OR identity IS NULL);",
        &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_blob(st, 2, identity_hash, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, alarmed ? 1 : 0);
    sqlite3_bind_int(st, 4, (int)suite);
    if (identity != NULL)
        sqlite3_bind_blob(st, 5, identity, (int)identity_len, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_own_device_identity(struct msv_client_db *db, uint64_t device_id,
                                          uint32_t *suite, uint8_t **identity, size_t *len)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT suite, identity FROM own_devices WHERE device_id = ? "
                                  "AND alarmed = 0 AND identity IS NOT NULL LIMIT 1;",
                                  &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *suite = (uint32_t)sqlite3_column_int(st, 0);
        *identity = msv_sql_blob(st, 1, len);
        err = *identity != NULL ? MSV_OK : MSV_ERR_NOMEM;
    } else {
        err = rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    }
    sqlite3_finalize(st);
    return err;
}

msv_err msv_client_db_own_device_get(struct msv_client_db *db, uint64_t device_id,
                                     const uint8_t identity_hash[32], int *alarmed)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT alarmed FROM own_devices WHERE device_id = ? AND "
                                  "identity_hash = ?;",
                                  &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_blob(st, 2, identity_hash, 32, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *alarmed = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return MSV_OK;
    return rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
}

/* ---- outbox --------------------------------------------------------------------------- */

static msv_err outbox_insert(struct msv_client_db *db, const uint8_t message_id[16],
                             const char *recipients, const uint8_t *payload, size_t len,
                             int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "INSERT INTO outbox (message_id, recipients, payload, "
                                  "created_ms) VALUES (?, ?, ?, ?);",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, recipients, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 3, len ? (const void *)payload : "", (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, now_ms);
    return msv_sql_run(st);
}

msv_err msv_client_db_outbox_put(struct msv_client_db *db, const struct msv_message_rec *history,
                                 const uint8_t message_id[16], const char *recipients,
                                 const uint8_t *payload, size_t len, int64_t now_ms)
{
    msv_err err = transaction_begin(db);

    if (err != MSV_OK)
        return err;
    if (history != NULL)
        err = msv_client_db_message_put(db, history);
    if (err == MSV_OK)
        err = outbox_insert(db, message_id, recipients, payload, len, now_ms);
    return finish_transaction(db, err);
}

msv_err msv_client_db_outbox_settle(struct msv_client_db *db, const uint8_t message_id[16],
                                    const char *status)
{
    sqlite3_stmt *st = NULL;
    msv_err err = transaction_begin(db);

    if (err != MSV_OK)
        return err;
    if (status != NULL) {
        err = msv_client_db_message_status(db, message_id, status);
        if (err == MSV_ERR_NOT_FOUND)
            err = MSV_OK; /* not in history (a control message) */
    }
    if (err == MSV_OK)
        err = msv_sql_prepare(db->db, "DELETE FROM outbox WHERE message_id = ?;", &st);
    if (err == MSV_OK) {
        sqlite3_bind_blob(st, 1, message_id, 16, SQLITE_TRANSIENT);
        err = msv_sql_run(st);
    }
    return finish_transaction(db, err);
}

msv_err msv_client_db_outbox_owed(struct msv_client_db *db, const uint8_t message_id[16],
                                  const char *recipients, const char *status)
{
    sqlite3_stmt *st = NULL;
    msv_err err = transaction_begin(db);

    if (err != MSV_OK)
        return err;
    if (status != NULL)
        err = msv_client_db_message_status(db, message_id, status);
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK; /* not in history (a control message) */
    if (err == MSV_OK)
        err = msv_sql_prepare(
            db->db, "UPDATE outbox SET recipients = ?, owed = 1 WHERE message_id = ?;", &st);
    if (err == MSV_OK) {
        sqlite3_bind_text(st, 1, recipients, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(st, 2, message_id, 16, SQLITE_TRANSIENT);
        err = msv_sql_run(st);
    }
    return finish_transaction(db, err);
}

static msv_err read_outbox(sqlite3_stmt *st, void *item)
{
    struct msv_outbox_rec *o = item;

    if (sqlite3_column_bytes(st, 0) == 16)
        memcpy(o->message_id, sqlite3_column_blob(st, 0), 16);
    o->recipients = msv_sql_text(st, 1);
    o->payload = msv_sql_blob(st, 2, &o->payload_len);
    o->owed = sqlite3_column_int(st, 3) != 0;
    o->created_ms = sqlite3_column_int64(st, 4);
    return o->recipients && o->payload ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_outbox(void *list, size_t n)
{
    msv_outbox_free(list, n);
}

msv_err msv_client_db_outbox(struct msv_client_db *db, struct msv_outbox_rec **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT message_id, recipients, payload, owed, created_ms "
                                  "FROM outbox "
                                  "ORDER BY "
                                  "created_ms, rowid;",
                                  &st);

    if (err != MSV_OK)
        return err;
    return collect(st, sizeof(**out), read_outbox, drop_outbox, (void **)out, count, NULL);
}

void msv_outbox_free(struct msv_outbox_rec *o, size_t count)
{
    for (size_t i = 0; o != NULL && i < count; i++) {
        free(o[i].recipients);
        msv_secret_free(o[i].payload, o[i].payload_len);
    }
    free(o);
}

/* ---- envelopes read ------------------------------------------------------------------- */

msv_err msv_client_db_envelope_seen(struct msv_client_db *db, const uint8_t digest[32])
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "SELECT 1 FROM seen_envelopes WHERE digest = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, digest, 32, SQLITE_STATIC);
    rc = sqlite3_step(st);
    err = rc == SQLITE_ROW ? MSV_OK : rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    sqlite3_finalize(st);
    return err;
}

msv_err msv_client_db_envelope_read(struct msv_client_db *db, const uint8_t digest[32],
                                    int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db, "INSERT OR IGNORE INTO seen_envelopes (digest, seen_ms) VALUES (?, ?);", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, digest, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    return msv_sql_run(st);
}

msv_err msv_client_db_envelopes_forget(struct msv_client_db *db, int64_t before_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, "DELETE FROM seen_envelopes WHERE seen_ms < ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, before_ms);
    return msv_sql_run(st);
}

/* ---- synced state --------------------------------------------------------------------- */

static msv_err read_sync(sqlite3_stmt *st, void *item)
{
    struct msv_sync_entry *e = item;

    e->key = msv_sql_text(st, 0);
    e->value = msv_sql_blob(st, 1, &e->value_len);
    e->deleted = sqlite3_column_int(st, 2) != 0;
    e->stamp = (uint64_t)sqlite3_column_int64(st, 3);
    return e->key && e->value ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_sync(void *list, size_t n)
{
    msv_sync_entries_free(list, n);
}

void msv_sync_entries_free(struct msv_sync_entry *e, size_t count)
{
    for (size_t i = 0; e != NULL && i < count; i++) {
        free(e[i].key);
        msv_secret_free(e[i].value, e[i].value_len);
    }
    free(e);
}

msv_err msv_client_db_sync_list(struct msv_client_db *db, int pending_only, size_t max,
                                struct msv_sync_entry **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT key, value, deleted, stamp FROM sync_state WHERE "
                                  "pending != 0 OR ?1 = 0 ORDER BY stamp, key LIMIT ?2;",
                                  &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int(st, 1, pending_only);
    sqlite3_bind_int64(st, 2, max > INT64_MAX ? INT64_MAX : (sqlite3_int64)max);
    return collect(st, sizeof(**out), read_sync, drop_sync, (void **)out, count, NULL);
}

msv_err msv_client_db_sync_sent(struct msv_client_db *db, const struct msv_sync_entry *e)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db, "UPDATE sync_state SET pending = 0 WHERE key = ? AND stamp = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, e->key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)e->stamp);
    return msv_sql_run(st);
}

msv_err msv_client_db_sync_resend_all(struct msv_client_db *db)
{
    return msv_sql_exec(db->db, "UPDATE sync_state SET pending = 1;");
}

/* Whether e is newer than what this device holds for its key (ties: the greater value wins). */
static msv_err sync_is_newer(struct msv_client_db *db, const struct msv_sync_entry *e, int *newer)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db,
                                  "SELECT stamp < ?2 OR (stamp = ?2 AND (deleted > ?3 OR (deleted "
                                  "= ?3 AND value < ?4))) FROM sync_state WHERE key = ?1;",
                                  &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, e->key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)e->stamp);
    sqlite3_bind_int(st, 3, e->deleted);
    sqlite3_bind_blob(st, 4, e->value_len ? (const void *)e->value : "", (int)e->value_len,
                      SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    *newer = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 1;
    err = rc == SQLITE_ROW || rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
    sqlite3_finalize(st);
    return err;
}

/* Writes e into settings or contacts (the triggers see sync_applying and record nothing). */
static msv_err sync_write(struct msv_client_db *db, const struct msv_sync_entry *e)
{
    static const char *const sql[2][2] = {
        {"INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET "
         "value = excluded.value;",
         "DELETE FROM settings WHERE key = ?1;"},
        {"INSERT OR IGNORE INTO contacts (name, handle) VALUES (?1, ?3);",
         "DELETE FROM contacts WHERE name = ?1 AND handle = ?3;"},
    };
    int contact = strncmp(e->key, "contact:", 8) == 0;
    const char *name = contact ? e->key + 8 : e->key, *nl = strchr(name, '\n');
    sqlite3_stmt *st = NULL;
    msv_err err;

    if (contact && nl == NULL)
        return MSV_ERR_INVALID;
    err = msv_sql_prepare(db->db, sql[contact][e->deleted], &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, name, contact ? (int)(nl - name) : -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 2, e->value_len ? (const void *)e->value : "", (int)e->value_len,
                      SQLITE_TRANSIENT);
    if (contact)
        sqlite3_bind_text(st, 3, nl + 1, -1, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

static msv_err sync_apply_locked(struct msv_client_db *db, const struct msv_sync_entry *e,
                                 int *applied)
{
    sqlite3_stmt *st = NULL;
    msv_err err = sync_is_newer(db, e, applied);

    if (err != MSV_OK || !*applied)
        return err;
    err = msv_sql_exec(db->db, "INSERT INTO sync_applying VALUES (1);");
    if (err == MSV_OK)
        err = sync_write(db, e);
    if (err == MSV_OK)
        err = msv_sql_prepare(db->db,
                              "INSERT INTO sync_state (key, value, deleted, stamp, pending) VALUES "
                              "(?, ?, ?, ?, 0) ON CONFLICT (key) DO UPDATE SET value = "
                              "excluded.value, deleted = excluded.deleted, stamp = "
                              "excluded.stamp, pending = 0;",
                              &st);
    if (err == MSV_OK) {
        sqlite3_bind_text(st, 1, e->key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(st, 2, e->value_len ? (const void *)e->value : "", (int)e->value_len,
                          SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 3, e->deleted);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)e->stamp);
        err = msv_sql_run(st);
    }
    if (err == MSV_OK)
        err = msv_sql_exec(db->db, "DELETE FROM sync_applying;");
    return err;
}

msv_err msv_client_db_sync_apply(struct msv_client_db *db, const struct msv_sync_entry *e,
                                 int *applied)
{
    msv_err err = transaction_begin(db);

    *applied = 0;
    if (err != MSV_OK)
        return err;
    err = finish_transaction(db, sync_apply_locked(db, e, applied));
    if (err != MSV_OK)
        *applied = 0;
    return err;
}

/* ---- history brought to a linked device ------------------------------------------------ */

/* What a linked device takes from the approving device's copy: history and groups. */
static const char *const history_tables[] = {
    "messages", "message_recipients", "message_versions", "mentions", "reactions", "groups",
};

/* "a, b, c": the columns of main.table but its own row number, which the copy's rows do not keep.
 */
static msv_err history_columns(struct msv_client_db *db, const char *table, char *out, size_t len)
{
    char sql[96];
    sqlite3_stmt *st = NULL;
    size_t o = 0;
    msv_err err;
    int rc;

    snprintf(sql, sizeof(sql), "SELECT name FROM pragma_table_info('%s', 'main');", table);
    err = msv_sql_prepare(db->db, sql, &st);
    out[0] = '\0';
    while (err == MSV_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);

        if (name == NULL || strcmp(name, "row") == 0)
            continue;
        o += (size_t)snprintf(out + o, len > o ? len - o : 0, "%s\"%s\"", o ? ", " : "", name);
        if (o >= len)
            err = MSV_ERR_TOO_BIG;
    }
    if (err == MSV_OK && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    if (st != NULL)
        sqlite3_finalize(st);
    return err == MSV_OK && o == 0 ? MSV_ERR_PARSE : err;
}

static msv_err import_tables(struct msv_client_db *db)
{
    char cols[2048], sql[4400];
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < sizeof(history_tables) / sizeof(history_tables[0]);
         i++) {
        err = history_columns(db, history_tables[i], cols, sizeof(cols));
        /* oldest first, and nothing this device holds already is replaced */
        if (err == MSV_OK)
            snprintf(sql, sizeof(sql),
                     "INSERT OR IGNORE INTO main.\"%s\" (%s) SELECT %s FROM copy.\"%s\" ORDER BY "
                     "rowid;",
                     history_tables[i], cols, cols, history_tables[i]);
        if (err == MSV_OK)
            err = msv_sql_exec(db->db, sql);
    }
    if (err == MSV_OK) /* the groups' signed states */
        err = msv_sql_exec(db->db, "INSERT OR IGNORE INTO main.settings SELECT * FROM "
                                   "copy.settings WHERE key GLOB 'group-state:*' OR key GLOB "
                                   "'group-prev:*';");
    return err;
}

/* The imported messages' file lines name files under dir instead of the copy's directory. */
static msv_err move_file_lines(struct msv_client_db *db, const char *dir)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db,
        "UPDATE main.messages SET text = replace(text, char(10) || '[file: ' || (SELECT "
        "CAST(value AS TEXT) FROM copy.settings WHERE key = '" MSV_LINK_SOURCE_DIR "') || "
        "'/attachments/', char(10) || '[file: ' || ? || '/attachments/') WHERE message_id IN "
        "(SELECT message_id FROM copy.messages) AND EXISTS (SELECT 1 FROM copy.settings WHERE "
        "key = '" MSV_LINK_SOURCE_DIR "');",
        &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, dir, -1, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_import_history(struct msv_client_db *db, const char *path, const char *dir)
{
    struct msv_client_db *copy = NULL;
    sqlite3_stmt *st = NULL;
    msv_err err = msv_client_db_open(path, &copy); /* brought to this version's schema */

    msv_client_db_close(copy);
    if (err == MSV_OK)
        err = msv_sql_prepare(db->db, "ATTACH DATABASE ? AS copy;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    if (err != MSV_OK)
        return err;
    err = transaction_begin(db);
    if (err == MSV_OK) {
        err = import_tables(db);
        if (err == MSV_OK)
            err = move_file_lines(db, dir);
        err = finish_transaction(db, err);
    }
    msv_sql_exec(db->db, "DETACH DATABASE copy;");
    return err;
}
