/* A device's local state in SQLite (client_db.h). */
#include "store/client_db.h"

#include <stdlib.h>
#include <string.h>

#include "missive/util.h"
#include "store/sql.h"

struct msv_client_db {
    sqlite3 *db;
};

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
    /* v9: disappearing messages: the timer a message came under, when it is to be deleted */
    "ALTER TABLE messages ADD COLUMN timer_s INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE messages ADD COLUMN expires_at_ms BIGINT;"
    "CREATE INDEX messages_expiring ON messages(expires_at_ms) WHERE expires_at_ms IS NOT NULL;",
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
    err = msv_sql_open(path, migrations, sizeof(migrations) / sizeof(migrations[0]), &db->db);
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
static msv_err grow(void **items, size_t elem, size_t count, size_t *cap)
{
    void *bigger;

    if (count < *cap)
        return MSV_OK;
    *cap = *cap ? *cap * 2 : 8;
    bigger = realloc(*items, *cap * elem);
    if (bigger == NULL)
        return MSV_ERR_NOMEM;
    memset((char *)bigger + count * elem, 0, (*cap - count) * elem);
    *items = bigger;
    return MSV_OK;
}

/*
 * Steps st to its end, reading each row into one more element of elem bytes
 * (zeroed first) with read_row, then finalizes st. On success the list goes
 * to *out and *count; on failure drop frees the rows read (a half-read one
 * included) and nothing is returned. *rc (may be NULL) receives the last
 * step's SQLite code.
 */
static msv_err collect(sqlite3_stmt *st, size_t elem, msv_err (*read_row)(sqlite3_stmt *, void *),
                       void (*drop)(void *, size_t), void **out, size_t *count, int *rc)
{
    char *list = NULL;
    size_t n = 0, cap = 0;
    msv_err err = MSV_OK;
    int last = SQLITE_DONE;

    while (err == MSV_OK && (last = sqlite3_step(st)) == SQLITE_ROW) {
        err = grow((void **)&list, elem, n, &cap);
        if (err == MSV_OK)
            err = read_row(st, list + elem * n++);
    }
    if (err == MSV_OK && last != SQLITE_DONE)
        err = msv_sql_err(last);
    sqlite3_finalize(st);
    if (rc != NULL)
        *rc = last;
    if (err != MSV_OK) {
        drop(list, n);
        return err;
    }
    *out = list;
    *count = n;
    return MSV_OK;
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

/* Ends the transaction BEGIN IMMEDIATE opened: COMMIT if err is MSV_OK, else ROLLBACK. */
static msv_err finish_transaction(struct msv_client_db *db, msv_err err)
{
    if (err == MSV_OK)
        err = msv_sql_exec(db->db, "COMMIT;");
    if (err != MSV_OK)
        msv_sql_exec(db->db, "ROLLBACK;");
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
    err = msv_sql_exec(db->db, "BEGIN IMMEDIATE;");
    if (err == MSV_OK)
        err = replace_locked(db, handle, devs, n, now_ms);
    return finish_transaction(db, err);
}

/* ---- messages ------------------------------------------------------------------------- */

msv_err msv_client_db_message_put(struct msv_client_db *db, const struct msv_message_rec *m)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(
        db->db,
        "INSERT INTO messages (message_id, conversation, outgoing, sender, sender_device, kind, "
        "text, sent_at_ms, stored_at_ms, status, pending, timer_s, expires_at_ms) VALUES (?, ?, ?, "
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?);",
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
    sqlite3_bind_int64(st, 12, (sqlite3_int64)m->timer_s);
    if (m->expires_at_ms != 0)
        sqlite3_bind_int64(st, 13, m->expires_at_ms);
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
    msv_err err =
        msv_sql_prepare(db->db, "UPDATE messages SET status = ? WHERE message_id = ?;", &st);

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
    m->timer_s = (uint32_t)sqlite3_column_int64(st, 12);
    m->expires_at_ms = sqlite3_column_int64(st, 13); /* NULL reads as 0 */
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

msv_err msv_client_db_message_rewrite(struct msv_client_db *db, const uint8_t message_id[16],
                                      const char *text, const char *status)
{
    sqlite3_stmt *st = NULL;
    msv_err err;

    /* the messages_au trigger keeps the search index in step */
    err = msv_sql_prepare(db->db, "UPDATE messages SET text = ?, status = ? WHERE message_id = ?;",
                          &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 3, message_id, 16, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    if (err == MSV_OK && sqlite3_changes(db->db) == 0)
        return MSV_ERR_NOT_FOUND;
    /*
     * The old text's words stay in the search index's older segments until they
     * are merged: merge them all (an unsend or edit is rare), then drop the
     * pages they were in, as for secrets.
     */
    if (err == MSV_OK)
        err = msv_sql_exec(db->db, "INSERT INTO messages_fts(messages_fts) VALUES ('optimize');");
    if (err == MSV_OK)
        drop_old_pages(db);
    return err;
}

msv_err msv_client_db_history(struct msv_client_db *db, const char *conversation,
                              const char *search, size_t limit, struct msv_message_rec **out,
                              size_t *count)
{
    /* newest `limit` rows, returned oldest first */
    static const char *const sql[2][2] = {
        {"SELECT * FROM (SELECT m.* FROM messages m ORDER BY m.row DESC LIMIT ?3) ORDER BY row;",
         "SELECT * FROM (SELECT m.* FROM messages m WHERE m.conversation = ?1 ORDER BY m.row "
         "DESC LIMIT ?3) ORDER BY row;"},
        {"SELECT * FROM (SELECT m.* FROM messages m JOIN messages_fts f ON f.rowid = m.row "
         "WHERE messages_fts MATCH ?2 ORDER BY m.row DESC LIMIT ?3) ORDER BY row;",
         "SELECT * FROM (SELECT m.* FROM messages m JOIN messages_fts f ON f.rowid = m.row "
         "WHERE messages_fts MATCH ?2 AND m.conversation = ?1 ORDER BY m.row DESC LIMIT ?3) "
         "ORDER BY row;"},
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

/* Runs sql, which deletes what refers to ?1, a message id. */
static msv_err delete_by_id(struct msv_client_db *db, const char *sql, const uint8_t id[16])
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db->db, sql, &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, id, 16, SQLITE_TRANSIENT);
    return msv_sql_run(st);
}

msv_err msv_client_db_message_delete(struct msv_client_db *db, const uint8_t message_id[16])
{
    /* everything that holds the message or refers to it; the messages_ad trigger takes its
     * words out of the search index */
    static const char *const sql[] = {
        "DELETE FROM messages WHERE message_id = ?1;",
        "DELETE FROM message_recipients WHERE message_id = ?1;",
        "DELETE FROM outbox WHERE message_id = ?1;",
        "DELETE FROM settings WHERE key = 'changed-at:' || lower(hex(?1));",
    };
    msv_err err = msv_sql_exec(db->db, "BEGIN IMMEDIATE;");

    for (size_t i = 0; err == MSV_OK && i < sizeof(sql) / sizeof(sql[0]); i++)
        err = delete_by_id(db, sql[i], message_id);
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

msv_err msv_client_db_group_accept(struct msv_client_db *db, const uint8_t group_id[16])
{
    sqlite3_stmt *st = NULL;
    msv_err err =
        msv_sql_prepare(db->db, "UPDATE groups SET accepted = 1 WHERE group_id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, 16, SQLITE_TRANSIENT);
    err = msv_sql_run(st);
    if (err == MSV_OK && sqlite3_changes(db->db) == 0)
        err = MSV_ERR_NOT_FOUND;
    return err;
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
    msv_err err = msv_sql_prepare(db->db,
                                  "INSERT OR IGNORE INTO own_devices (device_id, identity_hash, "
                                  "alarmed, suite, identity) VALUES (?, ?, ?, ?, ?);",
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
    msv_err err = msv_sql_exec(db->db, "BEGIN IMMEDIATE;");

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
    msv_err err = msv_sql_exec(db->db, "BEGIN IMMEDIATE;");

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

static msv_err read_outbox(sqlite3_stmt *st, void *item)
{
    struct msv_outbox_rec *o = item;

    if (sqlite3_column_bytes(st, 0) == 16)
        memcpy(o->message_id, sqlite3_column_blob(st, 0), 16);
    o->recipients = msv_sql_text(st, 1);
    o->payload = msv_sql_blob(st, 2, &o->payload_len);
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
                                  "SELECT message_id, recipients, payload FROM outbox ORDER BY "
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
