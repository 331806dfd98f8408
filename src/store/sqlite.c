/*
 * The SQLite storage backend: one connection in WAL mode with synchronous=FULL,
 * so that a commit that returned has reached the disk; a mutex serialises the
 * callers. The SQL is kept to what PostgreSQL also speaks.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "missive/kt.h"
#include "missive/util.h"
#include "store/sql.h"
#include "store/store.h"

#define STATEMENTS_MAX 48

struct sqlite_store {
    sqlite3 *db;
    pthread_mutex_t lock; /* held by every operation; the statements are shared */
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } statements[STATEMENTS_MAX];
    size_t n_statements;
    uint64_t connections;   /* connection_order's count: one node, in memory (under lock) */
    msv_kt_labeler labeler; /* kt_set_labeler: the log's appends label their entries */
    void *labeler_ctx;
};

/*
 * Statements are compiled once and kept: every SQL text here is a string
 * literal, so its address names it. Compiling on each call cost more CPU
 * than running the statement.
 */
static msv_err prepare(struct sqlite_store *s, const char *sql, sqlite3_stmt **st)
{
    msv_err err;

    for (size_t i = 0; i < s->n_statements; i++) {
        if (s->statements[i].sql == sql) {
            *st = s->statements[i].st;
            return MSV_OK;
        }
    }
    err = msv_sql_err(sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL));
    if (err == MSV_OK && s->n_statements < STATEMENTS_MAX) {
        s->statements[s->n_statements].sql = sql;
        s->statements[s->n_statements++].st = *st;
    }
    return err;
}

/* Done with a statement from prepare(): ready for its next use (or gone, if not kept). */
static void release(struct sqlite_store *s, sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < s->n_statements; i++) {
        if (s->statements[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    }
    sqlite3_finalize(st);
}

/* Steps a statement that returns no rows, then releases it. */
static msv_err run(struct sqlite_store *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    release(s, st);
    return rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
}

/* A statement without parameters, run at once. */
static msv_err exec(struct sqlite_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, sql, &st);

    return err == MSV_OK ? run(s, st) : err;
}

/* Each migration takes the schema from version i to i + 1. */
static const char *const migrations[] = {
    "CREATE TABLE accounts ("
    "  id INTEGER PRIMARY KEY,"
    "  handle TEXT NOT NULL UNIQUE,"
    "  password_hash TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL);"
    "CREATE TABLE codes ("
    "  handle TEXT PRIMARY KEY,"
    "  code_hash BLOB NOT NULL,"
    "  expires_ms BIGINT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE devices ("
    "  id INTEGER PRIMARY KEY,"
    "  account_id INTEGER NOT NULL REFERENCES accounts(id),"
    "  suite INTEGER NOT NULL,"
    "  identity BLOB NOT NULL,"
    "  push_token BLOB NOT NULL,"
    "  created_ms BIGINT NOT NULL);"
    "CREATE INDEX devices_by_account ON devices(account_id);"
    /* AUTOINCREMENT: ids never come back after deletes, so a connection that pushed up to
     * id N can ask for everything above N (see msv_store_ops.queue_fetch) */
    "CREATE TABLE queue ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  device_id INTEGER NOT NULL,"
    "  sender_device INTEGER NOT NULL,"
    "  sender_handle TEXT NOT NULL,"
    "  suite INTEGER NOT NULL,"
    "  ciphertext BLOB NOT NULL,"
    "  enqueued_ms BIGINT NOT NULL,"
    "  expires_ms BIGINT NOT NULL);"
    "CREATE INDEX queue_by_device ON queue(device_id, id);"
    "CREATE INDEX queue_by_expiry ON queue(expires_ms);"
    "CREATE TABLE blobs ("
    "  id BLOB PRIMARY KEY,"
    "  owner_device INTEGER NOT NULL,"
    "  size BIGINT NOT NULL,"
    "  received BIGINT NOT NULL,"
    "  complete INTEGER NOT NULL,"
    "  sha256 BLOB NOT NULL,"
    "  expires_ms BIGINT NOT NULL);"
    "CREATE INDEX blobs_by_expiry ON blobs(expires_ms);",
    /* v2: devices wait for approval from the account's other devices */
    "ALTER TABLE devices ADD COLUMN approved INTEGER NOT NULL DEFAULT 1;",
    /* v3: a device id is never given out again (AUTOINCREMENT): senders address devices by
     * id, and a new device under a removed one's id would receive what was sealed for the
     * old key. Ids removed above the highest one before this migration cannot be known. */
    "CREATE TABLE devices_v3 ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  account_id INTEGER NOT NULL REFERENCES accounts(id),"
    "  suite INTEGER NOT NULL,"
    "  identity BLOB NOT NULL,"
    "  push_token BLOB NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  approved INTEGER NOT NULL DEFAULT 1);"
    "INSERT INTO devices_v3 (id, account_id, suite, identity, push_token, created_ms, approved)"
    "  SELECT id, account_id, suite, identity, push_token, created_ms, approved FROM devices;"
    "DROP TABLE devices;"
    "ALTER TABLE devices_v3 RENAME TO devices;"
    "CREATE INDEX devices_by_account ON devices(account_id);",
    /* v4: the transparency log of device sets; accounts that have devices get their first
     * leaf when the store opens (backfill_log) */
    "CREATE TABLE kt_log ("
    "  idx INTEGER PRIMARY KEY,"
    "  handle TEXT NOT NULL,"
    "  leaf BLOB NOT NULL);"
    "CREATE INDEX kt_log_by_handle ON kt_log(handle, idx);",
    /* v5: prekeys for sessions, and delivery tokens (their SHA-256) for sealed sends */
    "CREATE TABLE signed_prekeys ("
    "  device_id INTEGER PRIMARY KEY,"
    "  key_id INTEGER NOT NULL,"
    "  pk BLOB NOT NULL,"
    "  sig BLOB NOT NULL);"
    "CREATE TABLE one_time_prekeys ("
    "  device_id INTEGER NOT NULL,"
    "  key_id INTEGER NOT NULL,"
    "  pk BLOB NOT NULL,"
    "  PRIMARY KEY (device_id, key_id));"
    "ALTER TABLE devices ADD COLUMN delivery_token BLOB;",
    /* v6: operators suspend accounts (missive-admin) */
    "ALTER TABLE accounts ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;",
    /* v7: attachment quotas sum a device's attachments */
    "CREATE INDEX blobs_by_owner ON blobs(owner_device);",
    /*
     * v8: what waits for each device, kept by triggers on every path that adds to or takes
     * from the queue, so that a send checks the recipients' queue caps without scanning
     */
    "CREATE TABLE queue_usage ("
    "  device_id INTEGER PRIMARY KEY,"
    "  envelopes INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL);"
    "INSERT INTO queue_usage SELECT device_id, COUNT(*), SUM(LENGTH(ciphertext)) FROM queue"
    "  GROUP BY device_id;"
    "CREATE TRIGGER queue_usage_in AFTER INSERT ON queue BEGIN"
    "  INSERT INTO queue_usage VALUES (new.device_id, 1, LENGTH(new.ciphertext))"
    "  ON CONFLICT (device_id) DO UPDATE SET envelopes = envelopes + 1,"
    "  bytes = bytes + excluded.bytes; END;"
    "CREATE TRIGGER queue_usage_out AFTER DELETE ON queue BEGIN"
    "  UPDATE queue_usage SET envelopes = envelopes - 1, bytes = bytes - LENGTH(old.ciphertext)"
    "  WHERE device_id = old.device_id; END;",
    /* 8 -> 9: abuse reports */
    "CREATE TABLE reports ("
    "  id INTEGER PRIMARY KEY,"
    "  reporter_id INTEGER NOT NULL,"
    "  reported_id INTEGER NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  text TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  state TEXT NOT NULL);"
    "CREATE INDEX reports_by_reporter ON reports(reporter_id, created_ms);",
    /* 9 -> 10: registration invites */
    "CREATE TABLE invites ("
    "  id INTEGER PRIMARY KEY,"
    "  code_hash BLOB NOT NULL UNIQUE,"
    "  note TEXT NOT NULL,"
    "  uses_left INTEGER NOT NULL,"
    "  used INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0);",
    /* 10 -> 11: sends refused because a device's queue was full, until its account asks */
    "CREATE TABLE queue_refusals ("
    "  device_id INTEGER PRIMARY KEY,"
    "  refused INTEGER NOT NULL);",
    /* 11 -> 12: an account id is never given out again (account_create takes the next one
     * from account_seq): a deleted account's connection that outlived it must not become a
     * new account's */
    "CREATE TABLE account_seq (last INTEGER NOT NULL);"
    "INSERT INTO account_seq SELECT COALESCE(MAX(id), 0) FROM accounts;"
    "CREATE TRIGGER account_seq_up AFTER INSERT ON accounts BEGIN"
    "  UPDATE account_seq SET last = new.id WHERE new.id > last; END;",
    /* every handle of every account, the first one (accounts.handle) too: a handle is of at
     * most one account (docs/missived.md, "Handles") */
    "CREATE TABLE account_handles ("
    "  handle TEXT PRIMARY KEY,"
    "  account_id INTEGER NOT NULL,"
    "  added_ms BIGINT NOT NULL);"
    "CREATE INDEX account_handles_by_account ON account_handles(account_id, added_ms);"
    "INSERT INTO account_handles SELECT handle, id, created_ms FROM accounts;",
    /* 13 -> 14: ML-KEM-768 prekeys of devices that speak post-quantum sessions: one-time ones and
     * one last-resort one per device */
    "CREATE TABLE kem_prekeys ("
    "  device_id INTEGER NOT NULL,"
    "  key_id INTEGER NOT NULL,"
    "  last_resort INTEGER NOT NULL,"
    "  pk BLOB NOT NULL,"
    "  sig BLOB NOT NULL,"
    "  PRIMARY KEY (device_id, last_resort, key_id));",
    /* 14 -> 15: the key directory's labels (VRF outputs) beside the log, so that a start reads
     * them instead of computing them; missived fills it on its first start after this */
    "CREATE TABLE kt_labels ("
    "  idx INTEGER PRIMARY KEY,"
    "  label BLOB NOT NULL);",
    /* 15 -> 16: when the account's username last changed (at most once per
     * [directory] username_interval_s) */
    "ALTER TABLE accounts ADD COLUMN username_changed_ms INTEGER NOT NULL DEFAULT 0;",
    /* 16 -> 17: the MLS delivery service's KeyPackages, groups and their member devices */
    "CREATE TABLE mls_key_packages ("
    "  id INTEGER PRIMARY KEY,"
    "  device_id INTEGER NOT NULL,"
    "  last_resort INTEGER NOT NULL,"
    "  kp BLOB NOT NULL);"
    "CREATE INDEX mls_key_packages_by_device ON mls_key_packages(device_id, last_resort, id);"
    "CREATE TABLE mls_groups ("
    "  group_id BLOB PRIMARY KEY,"
    "  epoch INTEGER NOT NULL);"
    "CREATE TABLE mls_members ("
    "  group_id BLOB NOT NULL,"
    "  device_id INTEGER NOT NULL,"
    "  PRIMARY KEY (group_id, device_id));"
    "CREATE INDEX mls_members_by_device ON mls_members(device_id);"
    /* each KeyPackage claim, open for its claimer's commit to add the device once */
    "CREATE TABLE mls_claims ("
    "  id INTEGER PRIMARY KEY,"
    "  account_id INTEGER NOT NULL,"
    "  device_id INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL);"
    "CREATE INDEX mls_claims_by_account ON mls_claims(account_id, device_id, id);"
    "CREATE INDEX mls_claims_by_expiry ON mls_claims(expires_ms);",
    /* 17 -> 18: the version-4 leaf each entry after the log's cut-over publishes in place of its
     * device set (docs/transparency.md, "Leaves that name no handle") */
    "ALTER TABLE kt_log ADD COLUMN pub BLOB;",
    /* 18 -> 19: each approved device's approval record, kept after the device is removed while
     * a listed device's chain names it (docs/transparency.md, "Signed device lists"); the devices
     * approved before are unsigned */
    "CREATE TABLE device_approvals ("
    "  device_id INTEGER PRIMARY KEY,"
    "  account_id INTEGER NOT NULL,"
    "  suite INTEGER NOT NULL,"
    "  identity BLOB NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  approver INTEGER NOT NULL DEFAULT 0,"
    "  signature BLOB);"
    "CREATE INDEX device_approvals_by_account ON device_approvals(account_id);"
    "INSERT INTO device_approvals (device_id, account_id, suite, identity, kind) "
    "SELECT id, account_id, suite, identity, 0 FROM devices WHERE approved = 1;",
    /* 19 -> 20: each MLS group's commit log, for members that missed a commit (docs/wire.md,
     * "MLS delivery"), and the epoch from which each member may read it */
    "CREATE TABLE mls_commit_log ("
    "  group_id BLOB NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  account_id INTEGER NOT NULL,"
    "  sender_device INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  delivery BLOB NOT NULL,"
    "  PRIMARY KEY (group_id, epoch));"
    "CREATE INDEX mls_commit_log_by_account ON mls_commit_log(account_id, expires_ms);"
    "CREATE INDEX mls_commit_log_by_expiry ON mls_commit_log(expires_ms);"
    "ALTER TABLE mls_members ADD COLUMN since_epoch INTEGER NOT NULL DEFAULT 0;",
    /* 20 -> 21: the device whose commit added each MLS member, and the Welcome kept for a
     * member its queue (full) left out (docs/wire.md, "MLS delivery") */
    "ALTER TABLE mls_members ADD COLUMN added_by INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE mls_members ADD COLUMN welcome_expires_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE mls_members ADD COLUMN welcome BLOB;"
    "CREATE INDEX mls_members_by_welcome_expiry ON mls_members(welcome_expires_ms)"
    " WHERE welcome_expires_ms > 0;",
    /* 21 -> 22: the account whose device added each member of another account (0: its own
     * account's, or added before), which adds a device to a bounded number of groups */
    "ALTER TABLE mls_members ADD COLUMN added_by_account INTEGER NOT NULL DEFAULT 0;",
    /* 22 -> 23: the account of each attachment's uploading device, kept after the device is
     * removed, so that the account's quota and deletion count it (0: a device removed before) */
    "ALTER TABLE blobs ADD COLUMN account_id INTEGER NOT NULL DEFAULT 0;"
    "UPDATE blobs SET account_id = COALESCE((SELECT account_id FROM devices WHERE id ="
    " blobs.owner_device), 0);"
    "CREATE INDEX blobs_by_account ON blobs(account_id);",
    /* 23 -> 24: a group's copies of one message share its body (queue_bodies), stored once;
     * each copy's row names it (body_id) and counts its length (body_len) in the device's usage;
     * the body goes with its last copy (refs) */
    "CREATE TABLE queue_bodies ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  body BLOB NOT NULL,"
    "  refs INTEGER NOT NULL);"
    "ALTER TABLE queue ADD COLUMN body_id INTEGER;"
    "ALTER TABLE queue ADD COLUMN body_len INTEGER NOT NULL DEFAULT 0;"
    "DROP TRIGGER queue_usage_in;"
    "DROP TRIGGER queue_usage_out;"
    "CREATE TRIGGER queue_usage_in AFTER INSERT ON queue BEGIN"
    "  INSERT INTO queue_usage VALUES (new.device_id, 1, LENGTH(new.ciphertext) + new.body_len)"
    "  ON CONFLICT (device_id) DO UPDATE SET envelopes = envelopes + 1,"
    "  bytes = bytes + excluded.bytes; END;"
    "CREATE TRIGGER queue_usage_out AFTER DELETE ON queue BEGIN"
    "  UPDATE queue_usage SET envelopes = envelopes - 1,"
    "  bytes = bytes - LENGTH(old.ciphertext) - old.body_len WHERE device_id = old.device_id; END;"
    "CREATE TRIGGER queue_bodies_out AFTER DELETE ON queue WHEN old.body_id IS NOT NULL BEGIN"
    "  UPDATE queue_bodies SET refs = refs - 1 WHERE id = old.body_id;"
    "  DELETE FROM queue_bodies WHERE id = old.body_id AND refs <= 0; END;",
};

/* ---- accounts and codes --------------------------------------------------------------- */

/* Records handle as account_id's (inside a transaction); MSV_ERR_EXISTS if it is anyone's. */
static msv_err handle_insert(struct sqlite_store *s, uint64_t account_id, const char *handle,
                             int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(
        s, "INSERT INTO account_handles (handle, account_id, added_ms) VALUES (?, ?, ?);", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
    sqlite3_bind_int64(st, 3, now_ms);
    return run(s, st);
}

/* Inside a transaction (l_account_create). */
static msv_err account_create(void *impl, const char *handle, const char *password_hash,
                              int64_t now_ms, uint64_t *account_id)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO accounts (id, handle, password_hash, created_ms) "
                          "VALUES ((SELECT last + 1 FROM account_seq), ?, ?, ?);",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, password_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, now_ms);
    err = run(s, st);
    if (err == MSV_OK)
        *account_id = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return err == MSV_OK ? handle_insert(s, *account_id, handle, now_ms) : err;
}

static msv_err account_get(void *impl, const char *handle, uint64_t *account_id,
                           char **password_hash)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "SELECT a.id, a.password_hash FROM account_handles h JOIN accounts a ON "
                          "a.id = h.account_id WHERE h.handle = ?;",
                          &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *account_id = (uint64_t)sqlite3_column_int64(st, 0);
        err = MSV_OK;
        if (password_hash != NULL && (*password_hash = msv_sql_text(st, 1)) == NULL)
            err = MSV_ERR_NOMEM;
    } else {
        err = rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    }
    release(s, st);
    return err;
}

void msv_account_summaries_free(struct msv_account_summary *a, size_t n)
{
    for (size_t i = 0; a != NULL && i < n; i++)
        free(a[i].handle);
    free(a);
}

static msv_err read_account_summary(sqlite3_stmt *st, void *item)
{
    struct msv_account_summary *a = item;

    *a = (struct msv_account_summary){.handle = msv_sql_text(st, 0),
                                      .created_ms = sqlite3_column_int64(st, 1),
                                      .suspended = sqlite3_column_int(st, 2),
                                      .devices = (uint64_t)sqlite3_column_int64(st, 3),
                                      .pending = (uint64_t)sqlite3_column_int64(st, 4),
                                      .queued = (uint64_t)sqlite3_column_int64(st, 5),
                                      .queued_bytes = (uint64_t)sqlite3_column_int64(st, 6),
                                      .sending = (uint64_t)sqlite3_column_int64(st, 7),
                                      .sending_bytes = (uint64_t)sqlite3_column_int64(st, 8),
                                      .attachment_bytes = (uint64_t)sqlite3_column_int64(st, 9)};
    return a->handle != NULL ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_account_summaries(void *list, size_t n)
{
    msv_account_summaries_free(list, n);
}

static msv_err account_list(void *impl, struct msv_account_summary **out, size_t *n)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(
        s,
        "SELECT a.handle, a.created_ms, a.suspended,"
        " (SELECT COUNT(*) FROM devices d WHERE d.account_id = a.id AND d.approved = 1),"
        " (SELECT COUNT(*) FROM devices d WHERE d.account_id = a.id AND d.approved = 0),"
        " (SELECT COUNT(*) FROM queue q JOIN devices d ON q.device_id = d.id"
        "  WHERE d.account_id = a.id),"
        " (SELECT COALESCE(SUM(LENGTH(q.ciphertext) + q.body_len), 0) FROM queue q JOIN devices d"
        "  ON q.device_id = d.id WHERE d.account_id = a.id),"
        " (SELECT COUNT(*) FROM queue q JOIN devices d ON q.sender_device = d.id"
        "  WHERE d.account_id = a.id),"
        " (SELECT COALESCE(SUM(LENGTH(q.ciphertext) + q.body_len), 0) FROM queue q JOIN devices d"
        "  ON q.sender_device = d.id WHERE d.account_id = a.id),"
        " (SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.account_id = a.id)"
        " FROM accounts a ORDER BY a.handle;",
        &st);

    if (err != MSV_OK)
        return err;
    err = msv_sql_rows(st, sizeof(**out), read_account_summary, drop_account_summaries,
                       (void **)out, n, NULL);
    release(s, st);
    return err;
}

static msv_err account_set_suspended(void *impl, const char *handle, int suspended)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "UPDATE accounts SET suspended = ? WHERE id = "
                          "(SELECT account_id FROM account_handles WHERE handle = ?);",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int(st, 1, suspended != 0);
    sqlite3_bind_text(st, 2, handle, -1, SQLITE_TRANSIENT);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err account_set_password(void *impl, uint64_t account_id, const char *password_hash)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "UPDATE accounts SET password_hash = ? WHERE id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, password_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

void msv_reports_free(struct msv_report *r, size_t n)
{
    for (size_t i = 0; r != NULL && i < n; i++) {
        free(r[i].reporter);
        free(r[i].reported);
        free(r[i].reason);
        free(r[i].text);
        free(r[i].state);
    }
    free(r);
}

static msv_err report_add(void *impl, uint64_t reporter_account, const char *reported,
                          const char *reason, const char *text, int64_t now_ms, int64_t since_ms,
                          unsigned max_recent, uint64_t *id)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    uint64_t other = 0;
    msv_err err = prepare(
        s,
        "INSERT INTO reports (reporter_id, reported_id, reason, text, created_ms,"
        " state) SELECT ?1, account_id, ?3, ?4, ?5, 'open' FROM account_handles WHERE handle = ?2"
        " AND (SELECT COUNT(*) FROM reports WHERE reporter_id = ?1"
        " AND created_ms >= ?6) < ?7;",
        &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)reporter_account);
    sqlite3_bind_text(st, 2, reported, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, reason, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, now_ms);
    sqlite3_bind_int64(st, 6, since_ms);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)max_recent);
    err = run(s, st);
    if (err == MSV_OK && sqlite3_changes(s->db) == 1) {
        *id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        return MSV_OK;
    }
    if (err == MSV_OK) /* nobody of that handle, or too many of the reporter's lately */
        err = account_get(impl, reported, &other, NULL) == MSV_ERR_NOT_FOUND ? MSV_ERR_NOT_FOUND
                                                                             : MSV_ERR_AGAIN;
    return err;
}

static msv_err read_report(sqlite3_stmt *st, void *item)
{
    struct msv_report *x = item;

    *x = (struct msv_report){.id = (uint64_t)sqlite3_column_int64(st, 0),
                             .reporter = msv_sql_text(st, 1),
                             .reported = msv_sql_text(st, 2),
                             .reason = msv_sql_text(st, 3),
                             .text = msv_sql_text(st, 4),
                             .created_ms = sqlite3_column_int64(st, 5),
                             .state = msv_sql_text(st, 6)};
    return x->reporter && x->reported && x->reason && x->text && x->state ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_reports(void *list, size_t n)
{
    msv_reports_free(list, n);
}

static msv_err report_rows(struct sqlite_store *s, sqlite3_stmt *st, struct msv_report **out,
                           size_t *n)
{
    msv_err err = msv_sql_rows(st, sizeof(**out), read_report, drop_reports, (void **)out, n, NULL);

    release(s, st);
    return err;
}

#define REPORT_COLUMNS                                                                        \
    "SELECT r.id, a.handle, b.handle, r.reason, r.text, r.created_ms, r.state FROM reports r" \
    " JOIN accounts a ON a.id = r.reporter_id JOIN accounts b ON b.id = r.reported_id"

static msv_err report_list(void *impl, size_t limit, struct msv_report **out, size_t *n)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, REPORT_COLUMNS " ORDER BY r.id DESC LIMIT ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)limit);
    return report_rows(s, st, out, n);
}

static msv_err report_get(void *impl, uint64_t id, struct msv_report **out)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    size_t n = 0;
    msv_err err = prepare(s, REPORT_COLUMNS " WHERE r.id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    err = report_rows(s, st, out, &n);
    if (err == MSV_OK && n == 0) {
        msv_reports_free(*out, 0);
        *out = NULL;
        err = MSV_ERR_NOT_FOUND;
    }
    return err;
}

static msv_err report_set_state(void *impl, uint64_t id, const char *state)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "UPDATE reports SET state = ? WHERE id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, state, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

/* ---- registration invites ----------------------------------------------------------- */

void msv_invites_free(struct msv_invite *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i].note);
    free(v);
}

static msv_err invite_add(void *impl, const uint8_t hash[32], const char *note, uint32_t uses,
                          int64_t now_ms, int64_t expires_ms, uint64_t *id)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO invites (code_hash, note, uses_left, created_ms, expires_ms)"
                          " VALUES (?, ?, ?, ?, ?);",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, note, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, uses);
    sqlite3_bind_int64(st, 4, now_ms);
    sqlite3_bind_int64(st, 5, expires_ms);
    err = run(s, st);
    if (err == MSV_OK)
        *id = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return err;
}

static msv_err read_invite(sqlite3_stmt *st, void *item)
{
    struct msv_invite *x = item;

    *x = (struct msv_invite){.id = (uint64_t)sqlite3_column_int64(st, 0),
                             .note = msv_sql_text(st, 1),
                             .uses_left = (uint32_t)sqlite3_column_int64(st, 2),
                             .used = (uint32_t)sqlite3_column_int64(st, 3),
                             .created_ms = sqlite3_column_int64(st, 4),
                             .expires_ms = sqlite3_column_int64(st, 5),
                             .revoked = sqlite3_column_int(st, 6)};
    return x->note != NULL ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_invites(void *list, size_t n)
{
    msv_invites_free(list, n);
}

static msv_err invite_list(void *impl, struct msv_invite **out, size_t *n)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "SELECT id, note, uses_left, used, created_ms, expires_ms, revoked"
                          " FROM invites ORDER BY id;",
                          &st);

    if (err != MSV_OK)
        return err;
    err = msv_sql_rows(st, sizeof(**out), read_invite, drop_invites, (void **)out, n, NULL);
    release(s, st);
    return err;
}

static msv_err invite_revoke(void *impl, uint64_t id)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "UPDATE invites SET revoked = 1 WHERE id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err invite_take(void *impl, const uint8_t hash[32], int64_t now_ms, int dry_run)
{
    static const char *const sql[2] = {
        "UPDATE invites SET uses_left = uses_left - 1, used = used + 1 WHERE code_hash = ?1"
        " AND revoked = 0 AND uses_left > 0 AND (expires_ms = 0 OR expires_ms > ?2);",
        "SELECT 1 FROM invites WHERE code_hash = ?1"
        " AND revoked = 0 AND uses_left > 0 AND (expires_ms = 0 OR expires_ms > ?2);",
    };
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, sql[dry_run != 0], &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now_ms);
    if (!dry_run) {
        err = run(s, st);
        return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_NOT_FOUND : err;
    }
    rc = sqlite3_step(st);
    release(s, st);
    if (rc == SQLITE_ROW)
        return MSV_OK;
    return rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
}

static msv_err invite_give_back(void *impl, const uint8_t hash[32])
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "UPDATE invites SET uses_left = uses_left + 1, used = used - 1"
                          " WHERE code_hash = ? AND used > 0;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_TRANSIENT);
    return run(s, st);
}

/* One integer column (sql selects it WHERE id = ?) of account_id's row into *v. */
static msv_err account_column(struct sqlite_store *s, const char *sql, uint64_t account_id,
                              int64_t *v)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, sql, &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    err = rc == SQLITE_ROW ? MSV_OK : rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    release(s, st);
    return err;
}

static msv_err account_suspended(void *impl, uint64_t account_id, int *suspended)
{
    int64_t v = 0;
    msv_err err =
        account_column(impl, "SELECT suspended FROM accounts WHERE id = ?;", account_id, &v);

    if (err == MSV_OK)
        *suspended = (int)v;
    return err;
}

/* Inside a transaction (l_username_stamp): the read and the write see one state. */
static msv_err username_stamp(void *impl, uint64_t account_id, int64_t now_ms, int64_t interval_ms,
                              int64_t *last_ms)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = account_column(s, "SELECT username_changed_ms FROM accounts WHERE id = ?;",
                                 account_id, last_ms);

    if (err == MSV_OK && interval_ms >= 0 && *last_ms > now_ms - interval_ms)
        err = MSV_ERR_AGAIN;
    if (err == MSV_OK)
        err = prepare(s, "UPDATE accounts SET username_changed_ms = ? WHERE id = ?;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
    return run(s, st);
}

static msv_err stats(void *impl, struct msv_store_stats *out)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(
        s,
        "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM accounts WHERE suspended),"
        " (SELECT COUNT(*) FROM devices WHERE approved = 1),"
        " (SELECT COUNT(*) FROM devices WHERE approved = 0),"
        " (SELECT COUNT(*) FROM queue), (SELECT COALESCE(SUM(LENGTH(ciphertext)), 0) FROM queue)"
        " + (SELECT COALESCE(SUM(LENGTH(body)), 0) FROM queue_bodies),"
        " (SELECT COALESCE(MIN(enqueued_ms), 0) FROM queue),"
        " (SELECT COUNT(*) FROM blobs), (SELECT COALESCE(SUM(size), 0) FROM blobs),"
        " (SELECT COUNT(*) FROM kt_log), (SELECT COUNT(*) FROM one_time_prekeys),"
        " (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size());",
        &st);
    int rc;

    if (err != MSV_OK)
        return err;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        uint64_t *counts[] = {&out->accounts,        &out->suspended, &out->devices,
                              &out->pending_devices, &out->queued,    &out->queued_bytes};

        for (int i = 0; i < 6; i++)
            *counts[i] = (uint64_t)sqlite3_column_int64(st, i);
        out->oldest_queued_ms = sqlite3_column_int64(st, 6);
        out->blobs = (uint64_t)sqlite3_column_int64(st, 7);
        out->blob_bytes = (uint64_t)sqlite3_column_int64(st, 8);
        out->log_leaves = (uint64_t)sqlite3_column_int64(st, 9);
        out->one_time_prekeys = (uint64_t)sqlite3_column_int64(st, 10);
        out->database_bytes = (uint64_t)sqlite3_column_int64(st, 11);
    }
    err = rc == SQLITE_ROW ? MSV_OK : msv_sql_err(rc);
    release(s, st);
    return err;
}

static msv_err account_handle(void *impl, uint64_t account_id, char **handle)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "SELECT handle FROM accounts WHERE id = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = (*handle = msv_sql_text(st, 0)) != NULL ? MSV_OK : MSV_ERR_NOMEM;
    else
        err = rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    release(s, st);
    return err;
}

static msv_err code_put(void *impl, const char *handle, const uint8_t hash[32], int64_t now_ms,
                        int64_t expires_ms)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO codes (handle, code_hash, expires_ms, attempts) "
                          "VALUES (?, ?, ?, 0) ON CONFLICT (handle) DO UPDATE SET "
                          "code_hash = excluded.code_hash, expires_ms = excluded.expires_ms, "
                          "attempts = 0 WHERE codes.expires_ms <= ?;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 2, hash, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, expires_ms);
    sqlite3_bind_int64(st, 4, now_ms);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_EXISTS : err;
}

static msv_err code_take_locked(struct sqlite_store *s, const char *handle, const uint8_t hash[32],
                                int64_t now_ms, unsigned max_attempts)
{
    sqlite3_stmt *st = NULL;
    msv_err err;
    int rc, attempts = 0, match = 0, expired = 0;

    err = prepare(s, "SELECT code_hash, expires_ms, attempts FROM codes WHERE handle = ?;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        release(s, st);
        return rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    }
    match = sqlite3_column_bytes(st, 0) == 32 && msv_equal_ct(sqlite3_column_blob(st, 0), hash, 32);
    expired = sqlite3_column_int64(st, 1) <= now_ms;
    attempts = sqlite3_column_int(st, 2);
    release(s, st);
    if (expired || (match && attempts < (int)max_attempts)) {
        err = prepare(s, "DELETE FROM codes WHERE handle = ?;", &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
        err = run(s, st);
        if (err != MSV_OK)
            return err;
        return expired ? MSV_ERR_NOT_FOUND : MSV_OK;
    }
    err = prepare(s, "UPDATE codes SET attempts = attempts + 1 WHERE handle = ?;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    err = run(s, st);
    return err != MSV_OK ? err : (attempts >= (int)max_attempts ? MSV_ERR_NOT_FOUND : MSV_ERR_AUTH);
}

/* ---- devices -------------------------------------------------------------------------- */

static msv_err device_add(void *impl, uint64_t account_id, uint32_t suite, const uint8_t *identity,
                          size_t identity_len, const uint8_t *push_token, size_t push_token_len,
                          int approved, int64_t now_ms, uint64_t *device_id)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO devices (account_id, suite, identity, push_token, "
                          "created_ms, approved) VALUES (?, ?, ?, ?, ?, ?);",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    sqlite3_bind_int(st, 2, (int)suite);
    sqlite3_bind_blob(st, 3, identity, (int)identity_len, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 4, push_token ? (const void *)push_token : "", (int)push_token_len,
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, now_ms);
    sqlite3_bind_int(st, 6, approved ? 1 : 0);
    err = run(s, st);
    if (err == MSV_OK)
        *device_id = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return err;
}

static msv_err device_approve(void *impl, uint64_t account_id, uint64_t device_id)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "UPDATE devices SET approved = 1 WHERE id = ? AND account_id = ? "
                          "AND approved = 0;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

/*
 * The groups whose every member is among the devices IN names (a subquery or a list): they are
 * empty once those go. Once empty a group stays empty (a commit needs a member), so its row and
 * its commit log go with its last member instead of staying for good. Each group is looked at
 * once, from the devices' memberships.
 */
#define MLS_ONLY_DEVICE(in)                                                                      \
    "SELECT g.group_id FROM mls_groups g WHERE g.group_id IN (SELECT group_id FROM mls_members"  \
    " WHERE device_id IN (" in ")) AND NOT EXISTS (SELECT 1 FROM mls_members o WHERE o.group_id" \
    " = g.group_id AND o.device_id NOT IN (" in "))"

static msv_err device_remove_locked(struct sqlite_store *s, uint64_t account_id, uint64_t device_id)
{
    /* what was the device's goes with it: its queue and its prekeys */
    static const char *const drops[] = {
        "DELETE FROM queue WHERE device_id = ?;",
        "DELETE FROM signed_prekeys WHERE device_id = ?;",
        "DELETE FROM one_time_prekeys WHERE device_id = ?;",
        "DELETE FROM kem_prekeys WHERE device_id = ?;",
        "DELETE FROM mls_key_packages WHERE device_id = ?;",
        /* the groups it alone was in go, with their logs (mls_group_drop) */
        "DELETE FROM mls_commit_log WHERE group_id IN (" MLS_ONLY_DEVICE("?1") ");",
        "DELETE FROM mls_groups WHERE group_id IN (" MLS_ONLY_DEVICE("?1") ");",
        "DELETE FROM mls_members WHERE device_id = ?;",
        "DELETE FROM mls_claims WHERE device_id = ?;",
    };
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "DELETE FROM devices WHERE id = ? AND account_id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
    err = run(s, st);
    if (err != MSV_OK)
        return err;
    if (sqlite3_changes(s->db) == 0)
        return MSV_ERR_NOT_FOUND;
    for (size_t i = 0; err == MSV_OK && i < sizeof(drops) / sizeof(drops[0]); i++) {
        err = prepare(s, drops[i], &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        err = run(s, st);
    }
    return err;
}

/* ---- prekeys and delivery tokens ---------------------------------------------------------- */

/* A count and a key id (0: none) about device_id (?1) that sql selects. */
static msv_err count_and_flag(struct sqlite_store *s, const char *sql, uint64_t device_id,
                              uint32_t *count, uint32_t *flag)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, sql, &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *count = (uint32_t)sqlite3_column_int64(st, 0);
        *flag = (uint32_t)sqlite3_column_int64(st, 1);
    } else {
        err = msv_sql_err(sqlite3_errcode(s->db));
    }
    release(s, st);
    return err;
}

static msv_err prekey_state(struct sqlite_store *s, uint64_t device_id, uint32_t *left,
                            uint32_t *signed_id)
{
    return count_and_flag(s,
                          "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE device_id = ?1),"
                          " COALESCE((SELECT key_id FROM signed_prekeys WHERE device_id = ?1), 0);",
                          device_id, left, signed_id);
}

static msv_err kem_prekey_state_locked(struct sqlite_store *s, uint64_t device_id, uint32_t *left,
                                       uint32_t *last_resort_id)
{
    return count_and_flag(s,
                          "SELECT (SELECT COUNT(*) FROM kem_prekeys WHERE device_id = ?1"
                          " AND last_resort = 0), COALESCE((SELECT key_id FROM kem_prekeys"
                          " WHERE device_id = ?1 AND last_resort = 1), 0);",
                          device_id, left, last_resort_id);
}

/* One KEM prekey row (a last-resort one replaces the device's). */
static msv_err kem_prekey_insert(struct sqlite_store *s, uint64_t device_id,
                                 const struct msv_kem_prekey_rec *k, int last_resort)
{
    sqlite3_stmt *st = NULL;
    msv_err err = MSV_OK;

    if (last_resort) {
        err = prepare(s, "DELETE FROM kem_prekeys WHERE device_id = ? AND last_resort = 1;", &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        err = run(s, st);
    }
    if (err == MSV_OK)
        err = prepare(s,
                      "INSERT OR IGNORE INTO kem_prekeys (device_id, key_id, last_resort, pk, sig)"
                      " VALUES (?, ?, ?, ?, ?);",
                      &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 2, k->id);
    sqlite3_bind_int(st, 3, last_resort);
    sqlite3_bind_blob(st, 4, k->key, sizeof(k->key), SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, k->sig, sizeof(k->sig), SQLITE_STATIC);
    return run(s, st);
}

/* The KEM part of an upload, in the same transaction as the rest. */
static msv_err kem_prekeys_put_locked(struct sqlite_store *s, uint64_t device_id,
                                      const struct msv_prekey_upload *u, size_t max_one_time)
{
    sqlite3_stmt *st = NULL;
    uint32_t left = 0, last_resort_id = 0;
    msv_err err = MSV_OK;

    if (u->replace_one_time) {
        err = prepare(s, "DELETE FROM kem_prekeys WHERE device_id = ? AND last_resort = 0;", &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        err = run(s, st);
    }
    if (err == MSV_OK && u->kem_last_resort != NULL)
        err = kem_prekey_insert(s, device_id, u->kem_last_resort, 1);
    for (size_t i = 0; err == MSV_OK && i < u->n_kem_one_time; i++)
        err = kem_prekey_insert(s, device_id, &u->kem_one_time[i], 0);
    if (err == MSV_OK)
        err = kem_prekey_state_locked(s, device_id, &left, &last_resort_id);
    return err == MSV_OK && left > max_one_time ? MSV_ERR_TOO_BIG : err;
}

static msv_err prekeys_put_locked(struct sqlite_store *s, uint64_t device_id,
                                  const struct msv_prekey_upload *u, size_t max_one_time,
                                  uint32_t *left, uint32_t *signed_id)
{
    sqlite3_stmt *st = NULL;
    msv_err err = MSV_OK;

    if (u->has_signed) {
        err = prepare(s,
                      "INSERT OR REPLACE INTO signed_prekeys (device_id, key_id, pk, sig) "
                      "VALUES (?, ?, ?, ?);",
                      &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        sqlite3_bind_int64(st, 2, u->signed_id);
        sqlite3_bind_blob(st, 3, u->signed_key, 32, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, u->signed_sig, 64, SQLITE_STATIC);
        err = run(s, st);
    }
    if (err == MSV_OK && u->replace_one_time) {
        err = prepare(s, "DELETE FROM one_time_prekeys WHERE device_id = ?;", &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        err = run(s, st);
    }
    for (size_t i = 0; err == MSV_OK && i < u->n_one_time; i++) {
        err = prepare(s,
                      "INSERT OR IGNORE INTO one_time_prekeys (device_id, key_id, pk) "
                      "VALUES (?, ?, ?);",
                      &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        sqlite3_bind_int64(st, 2, u->one_time[i].id);
        sqlite3_bind_blob(st, 3, u->one_time[i].key, 32, SQLITE_STATIC);
        err = run(s, st);
    }
    if (err == MSV_OK)
        err = kem_prekeys_put_locked(s, device_id, u, max_one_time);
    if (err == MSV_OK)
        err = prekey_state(s, device_id, left, signed_id);
    if (err == MSV_OK && *left > max_one_time)
        err = MSV_ERR_TOO_BIG; /* the transaction rolls back */
    return err;
}

static msv_err prekey_claim_locked(struct sqlite_store *s, uint64_t device_id, int one_time,
                                   struct msv_prekey_claimed *out)
{
    sqlite3_stmt *st = NULL;
    int rc;
    msv_err err =
        prepare(s, "SELECT key_id, pk, sig FROM signed_prekeys WHERE device_id = ?;", &st);

    if (err != MSV_OK)
        return err;
    memset(out, 0, sizeof(*out));
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW || sqlite3_column_bytes(st, 1) != 32 ||
        sqlite3_column_bytes(st, 2) != 64) {
        release(s, st);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    }
    out->signed_id = (uint32_t)sqlite3_column_int64(st, 0);
    memcpy(out->signed_key, sqlite3_column_blob(st, 1), 32);
    memcpy(out->signed_sig, sqlite3_column_blob(st, 2), 64);
    release(s, st);
    if (!one_time)
        return MSV_OK;
    err = prepare(s,
                  "DELETE FROM one_time_prekeys WHERE rowid = (SELECT rowid FROM one_time_prekeys"
                  " WHERE device_id = ? ORDER BY key_id LIMIT 1) RETURNING key_id, pk;",
                  &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 1) == 32) {
        out->one_time_id = (uint32_t)sqlite3_column_int64(st, 0);
        memcpy(out->one_time_key, sqlite3_column_blob(st, 1), 32);
    }
    /* a RETURNING statement is stepped to its end for the delete to finish */
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    release(s, st);
    return rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
}

/* Reads a KEM prekey row (key_id, pk, sig) of st into out; 0 if it is not one. */
static int kem_row(sqlite3_stmt *st, struct msv_prekey_claimed *out)
{
    if (sqlite3_column_bytes(st, 1) != sizeof(out->kem_key) ||
        sqlite3_column_bytes(st, 2) != sizeof(out->kem_sig))
        return 0;
    out->kem_id = (uint32_t)sqlite3_column_int64(st, 0);
    memcpy(out->kem_key, sqlite3_column_blob(st, 1), sizeof(out->kem_key));
    memcpy(out->kem_sig, sqlite3_column_blob(st, 2), sizeof(out->kem_sig));
    return 1;
}

/* A one-time KEM prekey (deleted as it is handed out), else the last-resort one. */
static msv_err kem_claim_locked(struct sqlite_store *s, uint64_t device_id, int one_time,
                                struct msv_prekey_claimed *out)
{
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_DONE;
    msv_err err;

    if (one_time) {
        err = prepare(s,
                      "DELETE FROM kem_prekeys WHERE rowid = (SELECT rowid FROM kem_prekeys"
                      " WHERE device_id = ? AND last_resort = 0 ORDER BY key_id LIMIT 1)"
                      " RETURNING key_id, pk, sig;",
                      &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            (void)kem_row(st, out);
        while (rc == SQLITE_ROW)
            rc = sqlite3_step(st);
        release(s, st);
        if (rc != SQLITE_DONE)
            return msv_sql_err(rc);
        if (out->kem_id != 0)
            return MSV_OK;
    }
    err = prepare(s,
                  "SELECT key_id, pk, sig FROM kem_prekeys WHERE device_id = ? AND"
                  " last_resort = 1;",
                  &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        out->kem_last_resort = kem_row(st, out);
    release(s, st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
}

static msv_err delivery_token_set(void *impl, uint64_t device_id, const uint8_t hash[32])
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "UPDATE devices SET delivery_token = ? WHERE id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err delivery_token_check(void *impl, uint64_t account_id, const uint8_t hash[32])
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    int found = 0, rc;
    msv_err err = prepare(s,
                          "SELECT delivery_token FROM devices WHERE account_id = ? AND approved = 1"
                          " AND delivery_token IS NOT NULL;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) == 32 && msv_equal_ct(sqlite3_column_blob(st, 0), hash, 32))
            found = 1;
    }
    release(s, st);
    if (rc != SQLITE_DONE)
        return msv_sql_err(rc);
    return found ? MSV_OK : MSV_ERR_AUTH;
}

/* ---- transparency log ------------------------------------------------------------------ */

/* Appends e's leaf as the log's next entry, for handle (inside a transaction). */
/*
 * Labels the entry just appended for handle (inside its transaction): its version is the
 * handle's number of entries, its index the log's last.
 */
static msv_err kt_label_last(struct sqlite_store *s, const char *handle)
{
    sqlite3_stmt *st = NULL;
    uint8_t label[32];
    int64_t idx = 0, version = 0;
    msv_err err = prepare(s, "SELECT MAX(idx), COUNT(*) FROM kt_log WHERE handle = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        idx = sqlite3_column_int64(st, 0);
        version = sqlite3_column_int64(st, 1);
    } else {
        err = MSV_ERR_IO;
    }
    release(s, st);
    if (err == MSV_OK && (version < 1 || version > UINT32_MAX))
        err = MSV_ERR_INVALID;
    if (err == MSV_OK)
        err = s->labeler(s->labeler_ctx, handle, (uint32_t)version, label);
    if (err == MSV_OK)
        err = prepare(s, "INSERT OR REPLACE INTO kt_labels (idx, label) VALUES (?, ?);", &st);
    if (err == MSV_OK) {
        sqlite3_bind_int64(st, 1, idx);
        sqlite3_bind_blob(st, 2, label, sizeof(label), SQLITE_TRANSIENT);
        err = run(s, st);
    }
    return err;
}

static msv_err kt_insert(struct sqlite_store *s, const char *handle, const struct msv_kt_entry *e)
{
    sqlite3_stmt *st = NULL;
    uint8_t *leaf = NULL;
    size_t len = 0;
    msv_err err = msv_kt_leaf_encode(e, &leaf, &len);

    if (err == MSV_OK)
        err = prepare(s,
                      "INSERT INTO kt_log (idx, handle, leaf) "
                      "VALUES ((SELECT COALESCE(MAX(idx) + 1, 0) FROM kt_log), ?, ?);",
                      &st);
    if (err == MSV_OK) {
        sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(st, 2, leaf, (int)len, SQLITE_TRANSIENT);
        err = run(s, st);
    }
    free(leaf);
    return err == MSV_OK && s->labeler != NULL ? kt_label_last(s, handle) : err;
}

static uint8_t *dup_bytes(const void *p, size_t len)
{
    uint8_t *out = malloc(len ? len : 1);

    if (out != NULL && len > 0)
        memcpy(out, p, len);
    return out;
}

/* A record from columns id, suite, identity, kind, approver, signature; frees with drop_record. */
static msv_err read_record(sqlite3_stmt *st, struct msv_kt_device *d)
{
    struct msv_kt_approval *a = &d->approval;
    size_t sig_len = (size_t)sqlite3_column_bytes(st, 5);

    memset(d, 0, sizeof(*d));
    d->device_id = (uint64_t)sqlite3_column_int64(st, 0);
    d->suite = (uint32_t)sqlite3_column_int(st, 1);
    d->identity_len = (size_t)sqlite3_column_bytes(st, 2);
    a->kind = (uint8_t)sqlite3_column_int(st, 3);
    a->approver = (uint64_t)sqlite3_column_int64(st, 4);
    a->sig_len = a->kind == MSV_KT_UNSIGNED ? 0 : sig_len;
    d->identity = dup_bytes(sqlite3_column_blob(st, 2), d->identity_len);
    a->sig = a->sig_len ? dup_bytes(sqlite3_column_blob(st, 5), a->sig_len) : NULL;
    return d->identity == NULL || (a->sig_len && a->sig == NULL) ? MSV_ERR_NOMEM : MSV_OK;
}

static void drop_record(struct msv_kt_device *d)
{
    free((uint8_t *)d->identity);
    free((uint8_t *)d->approval.sig);
}

/* Up to max records of sql (?1 the account) into out; MSV_ERR_TOO_BIG past max. */
static msv_err read_records(struct sqlite_store *s, const char *sql, uint64_t account_id,
                            struct msv_kt_device *out, size_t max, size_t *n)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, sql, &st);
    int rc = SQLITE_DONE;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    while (err == MSV_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == max)
            err = MSV_ERR_TOO_BIG;
        else
            err = read_record(st, &out[(*n)++]);
    }
    if (err == MSV_OK && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    release(s, st);
    return err;
}

/* Forgets the approval records of removed devices that no listed device's chain names. */
static msv_err drop_unused_records(struct sqlite_store *s, const struct msv_kt_device *records,
                                   const uint8_t *keep, size_t n)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        sqlite3_stmt *st = NULL;

        if (keep[i])
            continue;
        err = prepare(s, "DELETE FROM device_approvals WHERE device_id = ?;", &st);
        if (err == MSV_OK) {
            sqlite3_bind_int64(st, 1, (sqlite3_int64)records[i].device_id);
            err = run(s, st);
        }
    }
    return err;
}

/*
 * Appends the account's approved devices, as they are now, to the log as handle's leaf (inside a
 * transaction), each with its approval and the chain records of removed approvers
 * (docs/transparency.md, "Signed device lists").
 */
static msv_err kt_append_handle(struct sqlite_store *s, uint64_t account_id, const char *handle,
                                int64_t now_ms, size_t max_records)
{
    static struct msv_kt_entry e; /* the store's lock is held */
    static struct msv_kt_device removed[2 * MSV_KT_DEVICES_MAX];
    uint8_t keep[2 * MSV_KT_DEVICES_MAX] = {0};
    size_t n_removed = 0;
    msv_err err;

    memset(&e, 0, sizeof(e));
    e.time_ms = now_ms;
    snprintf(e.handle, sizeof(e.handle), "%s", handle);
    err = read_records(s,
                       "SELECT d.id, d.suite, d.identity, COALESCE(a.kind, 0), "
                       "COALESCE(a.approver, 0), a.signature FROM devices d LEFT JOIN "
                       "device_approvals a ON a.device_id = d.id WHERE d.account_id = ?1 AND "
                       "d.approved = 1 ORDER BY d.id;",
                       account_id, e.devices, MSV_KT_DEVICES_MAX, &e.n_devices);
    /* the kept records of removed devices: at most a set's chain records and a few removed
     * since (each leaf forgets those no chain names) */
    if (err == MSV_OK)
        err = read_records(s,
                           "SELECT device_id, suite, identity, kind, approver, signature FROM "
                           "device_approvals WHERE account_id = ?1 AND device_id NOT IN (SELECT "
                           "id FROM devices WHERE account_id = ?1 AND approved = 1) ORDER BY "
                           "device_id;",
                           account_id, removed, 2 * MSV_KT_DEVICES_MAX, &n_removed);
    if (err == MSV_OK)
        err = msv_kt_devlist_complete(&e, removed, n_removed, keep);
    if (err == MSV_OK && e.n_devices + e.n_chain > max_records)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = kt_insert(s, handle, &e);
    if (err == MSV_OK)
        err = drop_unused_records(s, removed, keep, n_removed);
    for (size_t i = 0; i < e.n_devices; i++)
        drop_record(&e.devices[i]);
    for (size_t i = 0; i < n_removed; i++)
        drop_record(&removed[i]);
    return err;
}

static msv_err read_text(sqlite3_stmt *st, void *item)
{
    return (*(char **)item = msv_sql_text(st, 0)) != NULL ? MSV_OK : MSV_ERR_NOMEM;
}

static void drop_texts(void *list, size_t n)
{
    for (size_t i = 0; list != NULL && i < n; i++)
        free(((char **)list)[i]);
    free(list);
}

/* The account's handles, the first one first (handles_of_account). */
static msv_err handles_of_account(void *impl, uint64_t account_id, char ***out, size_t *n)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "SELECT h.handle FROM account_handles h WHERE h.account_id = ?1 ORDER BY "
                          "h.handle <> (SELECT handle FROM accounts WHERE id = ?1), h.added_ms, "
                          "h.handle;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    err = msv_sql_rows(st, sizeof(char *), read_text, drop_texts, (void **)out, n, NULL);
    release(s, st);
    if (err == MSV_OK && *n == 0) {
        drop_texts(*out, 0);
        *out = NULL;
        err = MSV_ERR_NOT_FOUND;
    }
    return err;
}

/* Every handle of the account gets a leaf of its devices as they are now (in a transaction). */
/* Every handle's set as it is now; MSV_ERR_TOO_BIG over max_records records (listed, chain). */
static msv_err kt_append_bounded(struct sqlite_store *s, uint64_t account_id, int64_t now_ms,
                                 size_t max_records)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = handles_of_account(s, account_id, &handles, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = kt_append_handle(s, account_id, handles[i], now_ms, max_records);
    drop_texts(handles, n);
    return err;
}

static msv_err kt_append_locked(struct sqlite_store *s, uint64_t account_id, int64_t now_ms)
{
    return kt_append_bounded(s, account_id, now_ms, SIZE_MAX);
}

/* ---- deleting an account (docs/missived.md, "Deleting an account") ------------------------ */

static msv_err read_id(sqlite3_stmt *st, void *item)
{
    *(uint64_t *)item = (uint64_t)sqlite3_column_int64(st, 0);
    return MSV_OK;
}

static msv_err read_blob_id(sqlite3_stmt *st, void *item)
{
    if (sqlite3_column_bytes(st, 0) != MSV_BLOB_ID_LEN)
        return MSV_ERR_PARSE;
    memcpy(item, sqlite3_column_blob(st, 0), MSV_BLOB_ID_LEN);
    return MSV_OK;
}

static void drop_rows(void *list, size_t n)
{
    (void)n;
    free(list);
}

/* The rows of sql (one integer or blob-id column, ?1 the account) read by read_row. */
static msv_err account_rows(struct sqlite_store *s, const char *sql, uint64_t account_id,
                            size_t elem, msv_err (*read_row)(sqlite3_stmt *, void *), void **out,
                            size_t *n)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, sql, &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    err = msv_sql_rows(st, elem, read_row, drop_rows, out, n, NULL);
    release(s, st);
    return err;
}

/* The handle's tombstone: a leaf without devices that says its account was deleted. */
static msv_err kt_tombstone(struct sqlite_store *s, const char *handle, int64_t now_ms)
{
    static struct msv_kt_entry e; /* the store's lock is held */

    memset(&e, 0, sizeof(e));
    e.deleted = 1;
    e.time_ms = now_ms;
    snprintf(e.handle, sizeof(e.handle), "%s", handle);
    return kt_insert(s, handle, &e);
}

/* Inside a transaction (l_account_delete). */
static msv_err account_delete_locked(struct sqlite_store *s, const char *handle, int64_t now_ms,
                                     struct msv_account_deleted *out)
{
    /* ?1: the account; the devices' rows go before the devices themselves */
    static const char *const drops[] = {
        "DELETE FROM queue WHERE device_id IN (SELECT id FROM devices WHERE account_id = ?1);",
        "DELETE FROM queue_usage WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = ?1);",
        "DELETE FROM signed_prekeys WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = ?1);",
        "DELETE FROM one_time_prekeys WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = ?1);",
        "DELETE FROM kem_prekeys WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = ?1);",
        "DELETE FROM mls_key_packages WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = ?1);",
        /* the groups only its devices were in go, with their logs */
        "DELETE FROM mls_commit_log WHERE group_id IN (" MLS_ONLY_DEVICE(
            "SELECT id FROM devices WHERE account_id = ?1") ");",
        "DELETE FROM mls_groups WHERE group_id IN (" MLS_ONLY_DEVICE(
            "SELECT id FROM devices WHERE account_id = ?1") ");",
        "DELETE FROM mls_members WHERE device_id IN (SELECT id FROM devices WHERE account_id = "
        "?1);",
        "DELETE FROM mls_claims WHERE account_id = ?1 OR device_id IN "
        "(SELECT id FROM devices WHERE account_id = ?1);",
        "DELETE FROM mls_commit_log WHERE account_id = ?1;",
        "DELETE FROM blobs WHERE account_id = ?1 OR owner_device IN (SELECT id FROM devices WHERE"
        " account_id = ?1);",
        "DELETE FROM reports WHERE reporter_id = ?1 OR reported_id = ?1;",
        "DELETE FROM devices WHERE account_id = ?1;",
        "DELETE FROM device_approvals WHERE account_id = ?1;",
        "DELETE FROM account_handles WHERE account_id = ?1;",
        "DELETE FROM accounts WHERE id = ?1;",
    };
    sqlite3_stmt *st = NULL;
    char **handles = NULL;
    size_t n_handles = 0;
    msv_err err = account_get(s, handle, &out->account_id, NULL);

    if (err == MSV_OK)
        err = handles_of_account(s, out->account_id, &handles, &n_handles);
    if (err == MSV_OK)
        err = account_rows(s, "SELECT id FROM devices WHERE account_id = ?1;", out->account_id,
                           sizeof(*out->devices), read_id, (void **)&out->devices, &out->n_devices);
    if (err == MSV_OK)
        err = account_rows(s,
                           "SELECT id FROM blobs WHERE account_id = ?1 OR owner_device IN "
                           "(SELECT id FROM devices WHERE account_id = ?1);",
                           out->account_id, sizeof(*out->blobs), read_blob_id, (void **)&out->blobs,
                           &out->n_blobs);
    for (size_t i = 0; err == MSV_OK && i < sizeof(drops) / sizeof(drops[0]); i++) {
        err = prepare(s, drops[i], &st);
        if (err == MSV_OK) {
            sqlite3_bind_int64(st, 1, (sqlite3_int64)out->account_id);
            err = run(s, st);
        }
    }
    /* every handle of the account: its pending code goes, its tombstone is written */
    for (size_t i = 0; err == MSV_OK && i < n_handles; i++) {
        err = prepare(s, "DELETE FROM codes WHERE handle = ?;", &st);
        if (err == MSV_OK) {
            sqlite3_bind_text(st, 1, handles[i], -1, SQLITE_TRANSIENT);
            err = run(s, st);
        }
        if (err == MSV_OK)
            err = kt_tombstone(s, handles[i], now_ms);
    }
    drop_texts(handles, n_handles);
    return err;
}

/* Inside a transaction (l_handle_add). */
static msv_err handle_add_locked(struct sqlite_store *s, uint64_t account_id, const char *handle,
                                 size_t max, int64_t now_ms)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = handles_of_account(s, account_id, &handles, &n);

    drop_texts(handles, n);
    if (err == MSV_OK && n >= max)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = handle_insert(s, account_id, handle, now_ms);
    return err == MSV_OK ? kt_append_handle(s, account_id, handle, now_ms, SIZE_MAX) : err;
}

/* Inside a transaction (l_handle_remove). */
static msv_err handle_remove_locked(struct sqlite_store *s, uint64_t account_id, const char *handle,
                                    int64_t now_ms)
{
    char **handles = NULL;
    size_t n = 0, at = 0;
    sqlite3_stmt *st = NULL;
    msv_err err = handles_of_account(s, account_id, &handles, &n);

    while (err == MSV_OK && at < n && strcmp(handles[at], handle) != 0)
        at++;
    if (err == MSV_OK && at == n)
        err = MSV_ERR_NOT_FOUND;
    else if (err == MSV_OK && n == 1)
        err = MSV_ERR_INVALID; /* never the last: an account is found by its handles */
    if (err == MSV_OK)
        err = prepare(s, "DELETE FROM account_handles WHERE handle = ?;", &st);
    if (err == MSV_OK) {
        sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
        err = run(s, st);
    }
    /* the first handle goes: the oldest of the others is the account's first from now on */
    if (err == MSV_OK && at == 0)
        err = prepare(s, "UPDATE accounts SET handle = ? WHERE id = ?;", &st);
    if (err == MSV_OK && at == 0) {
        sqlite3_bind_text(st, 1, handles[1], -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        err = run(s, st);
    }
    if (err == MSV_OK)
        err = kt_tombstone(s, handle, now_ms);
    drop_texts(handles, n);
    return err;
}

void msv_account_deleted_clear(struct msv_account_deleted *d)
{
    free(d->devices);
    free(d->blobs);
    memset(d, 0, sizeof(*d));
}

static msv_err kt_read_recs(struct sqlite_store *s, sqlite3_stmt *st, size_t max,
                            struct msv_kt_rec **out, size_t *count)
{
    struct msv_kt_rec *recs = calloc(max ? max : 1, sizeof(*recs));
    msv_err err = recs != NULL ? MSV_OK : MSV_ERR_NOMEM;
    size_t n = 0;
    int rc = SQLITE_DONE;

    while (err == MSV_OK && n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        recs[n].index = (uint64_t)sqlite3_column_int64(st, 0);
        recs[n].leaf = msv_sql_blob(st, 1, &recs[n].leaf_len);
        if (recs[n].leaf == NULL)
            err = MSV_ERR_NOMEM;
        /* kt_log's reads give the published leaf too, when the entry has one */
        if (err == MSV_OK && sqlite3_column_count(st) > 2 &&
            sqlite3_column_type(st, 2) != SQLITE_NULL &&
            (recs[n].pub = msv_sql_blob(st, 2, &recs[n].pub_len)) == NULL)
            err = MSV_ERR_NOMEM;
        n++;
    }
    if (err == MSV_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    release(s, st);
    if (err != MSV_OK) {
        msv_kt_recs_free(recs, n);
        return err;
    }
    *out = recs;
    *count = n;
    return MSV_OK;
}

static msv_err kt_read(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                       size_t *count)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err =
        prepare(s, "SELECT idx, leaf, pub FROM kt_log WHERE idx >= ? ORDER BY idx LIMIT ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)start);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    return kt_read_recs(s, st, max, out, count);
}

static msv_err kt_handle_read(void *impl, const char *handle, uint64_t start, size_t max,
                              struct msv_kt_rec **out, size_t *count)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(
        s, "SELECT idx, leaf, pub FROM kt_log WHERE handle = ? AND idx >= ? ORDER BY idx LIMIT ?;",
        &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)start);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)max);
    return kt_read_recs(s, st, max, out, count);
}

static msv_err kt_labels_read(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                              size_t *count)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err =
        prepare(s, "SELECT idx, label FROM kt_labels WHERE idx >= ? ORDER BY idx LIMIT ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)start);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    return kt_read_recs(s, st, max, out, count);
}

static msv_err kt_labels_put(void *impl, const struct msv_kt_rec *recs, size_t n)
{
    struct sqlite_store *s = impl;
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        sqlite3_stmt *st = NULL;

        err = prepare(s, "INSERT OR REPLACE INTO kt_labels (idx, label) VALUES (?, ?);", &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)recs[i].index);
        sqlite3_bind_blob(st, 2, recs[i].leaf, (int)recs[i].leaf_len, SQLITE_TRANSIENT);
        err = run(s, st);
    }
    return err;
}

static msv_err kt_append(void *impl, uint64_t index, const uint8_t *leaf, size_t len)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO kt_log (idx, handle, leaf) SELECT ?1, '', ?2 "
                          "WHERE (SELECT COUNT(*) FROM kt_log) = ?1;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)index);
    sqlite3_bind_blob(st, 2, leaf, (int)len, SQLITE_TRANSIENT);
    err = run(s, st);
    return err == MSV_OK && sqlite3_changes(s->db) == 0 ? MSV_ERR_EXISTS : err;
}

static msv_err kt_publish(void *impl, uint64_t index, const uint8_t *pub, size_t len)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "UPDATE kt_log SET pub = ?2 WHERE idx = ?1 AND pub IS NULL;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)index);
    sqlite3_bind_blob(st, 2, pub, (int)len, SQLITE_TRANSIENT);
    return run(s, st);
}

/* The newest leaf of handle, or (tombstone) its newest tombstone (version byte 3). */
static msv_err kt_latest(void *impl, const char *handle, int tombstone, struct msv_kt_rec *out)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    struct msv_kt_rec *recs = NULL;
    size_t n = 0;
    msv_err err = prepare(s,
                          "SELECT idx, leaf, pub FROM kt_log WHERE handle = ?1 AND "
                          "(?2 = 0 OR substr(leaf, 1, 1) = x'03') ORDER BY idx DESC LIMIT 1;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_text(st, 1, handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, tombstone);
    err = kt_read_recs(s, st, 1, &recs, &n);
    if (err == MSV_OK && n == 0)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK) {
        *out = recs[0];
        recs[0].leaf = NULL;
        recs[0].pub = NULL;
    }
    msv_kt_recs_free(recs, n);
    return err;
}

static msv_err read_device(sqlite3_stmt *st, struct msv_device_rec *d)
{
    memset(d, 0, sizeof(*d));
    d->id = (uint64_t)sqlite3_column_int64(st, 0);
    d->account_id = (uint64_t)sqlite3_column_int64(st, 1);
    d->suite = (uint32_t)sqlite3_column_int(st, 2);
    d->identity = msv_sql_blob(st, 3, &d->identity_len);
    d->push_token = msv_sql_blob(st, 4, &d->push_token_len);
    d->created_ms = sqlite3_column_int64(st, 5);
    d->approved = sqlite3_column_int(st, 6);
    if (d->identity == NULL || d->push_token == NULL) {
        msv_device_rec_clear(d);
        return MSV_ERR_NOMEM;
    }
    return MSV_OK;
}

#define DEVICE_COLUMNS "id, account_id, suite, identity, push_token, created_ms, approved"

static msv_err device_get(void *impl, uint64_t device_id, struct msv_device_rec *out)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "SELECT " DEVICE_COLUMNS " FROM devices WHERE id = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_device(st, out);
    else
        err = rc == SQLITE_DONE ? MSV_ERR_NOT_FOUND : msv_sql_err(rc);
    release(s, st);
    return err;
}

static msv_err devices_of_account(void *impl, uint64_t account_id, struct msv_device_list *out)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    msv_err err = prepare(s,
                          "SELECT " DEVICE_COLUMNS " FROM devices WHERE account_id = ? "
                          "ORDER BY id;",
                          &st);
    int rc;

    if (err != MSV_OK)
        return err;
    memset(out, 0, sizeof(*out));
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    while (err == MSV_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->count == cap) {
            struct msv_device_rec *bigger;

            cap = cap ? cap * 2 : 4;
            bigger = realloc(out->items, cap * sizeof(*bigger));
            if (bigger == NULL) {
                err = MSV_ERR_NOMEM;
                break;
            }
            out->items = bigger;
        }
        err = read_device(st, &out->items[out->count]);
        if (err == MSV_OK)
            out->count++;
    }
    if (err == MSV_OK && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    release(s, st);
    if (err != MSV_OK)
        msv_device_list_clear(out);
    return err;
}

/* ---- the queue ------------------------------------------------------------------------ */

/* How many items from items[i] on form one run of a shared body (1: stored in the row). */
size_t msv_queue_shared_run(const struct msv_queue_in *items, size_t n, size_t i)
{
    size_t k = 1;

    while (items[i].shared && i + k < n && items[i + k].shared &&
           items[i + k].ciphertext == items[i].ciphertext &&
           items[i + k].ciphertext_len == items[i].ciphertext_len)
        k++;
    return k;
}

/* A body that refs rows of the queue share; *id its row. */
static msv_err body_put(struct sqlite_store *s, const uint8_t *body, size_t len, size_t refs,
                        sqlite3_int64 *id)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "INSERT INTO queue_bodies (body, refs) VALUES (?, ?);", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, body, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)refs);
    rc = sqlite3_step(st);
    err = rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
    *id = sqlite3_last_insert_rowid(s->db);
    release(s, st);
    return err;
}

static msv_err queue_put_locked(struct sqlite_store *s, const struct msv_queue_in *items, size_t n,
                                int64_t now_ms, int64_t expires_ms, uint64_t *ids)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO queue (device_id, sender_device, sender_handle, suite, "
                          "ciphertext, enqueued_ms, expires_ms, body_id, body_len) VALUES (?, ?, "
                          "?, ?, ?, ?, ?, ?, ?);",
                          &st);
    size_t run = 0; /* items of the current shared body still to come */
    sqlite3_int64 body = 0;

    if (err != MSV_OK)
        return err;
    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        int rc;

        if (run == 0 && (run = msv_queue_shared_run(items, n, i)) > 1)
            err = body_put(s, items[i].ciphertext, items[i].ciphertext_len, run, &body);
        if (err != MSV_OK)
            break;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)items[i].device_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)items[i].sender_device);
        sqlite3_bind_text(st, 3, items[i].sender_handle, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, (int)items[i].suite);
        if (body != 0) { /* a copy of a shared body: the row holds none of it */
            sqlite3_bind_zeroblob(st, 5, 0);
            sqlite3_bind_int64(st, 8, body);
            sqlite3_bind_int64(st, 9, (sqlite3_int64)items[i].ciphertext_len);
        } else {
            sqlite3_bind_blob(st, 5, items[i].ciphertext, (int)items[i].ciphertext_len,
                              SQLITE_STATIC);
            sqlite3_bind_null(st, 8);
            sqlite3_bind_int64(st, 9, 0);
        }
        sqlite3_bind_int64(st, 6, now_ms);
        sqlite3_bind_int64(st, 7, items[i].expires_ms != 0 ? items[i].expires_ms : expires_ms);
        rc = sqlite3_step(st);
        err = rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
        ids[i] = (uint64_t)sqlite3_last_insert_rowid(s->db);
        if (--run == 0)
            body = 0;
    }
    release(s, st);
    return err;
}

static msv_err queue_fetch(void *impl, uint64_t device_id, uint64_t after_id, int64_t now_ms,
                           size_t limit, struct msv_queue_rec **out, size_t *count)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    struct msv_queue_rec *recs;
    size_t n = 0;
    msv_err err;
    int rc = SQLITE_DONE;

    if (limit == 0 || limit > 100000)
        return MSV_ERR_INVALID;
    recs = calloc(limit, sizeof(*recs));
    if (recs == NULL)
        return MSV_ERR_NOMEM;
    err = prepare(s,
                  "SELECT q.id, q.device_id, q.sender_device, q.sender_handle, q.suite, CASE"
                  " WHEN q.body_id IS NULL THEN q.ciphertext ELSE b.body END, q.enqueued_ms"
                  " FROM queue q LEFT JOIN queue_bodies b ON b.id = q.body_id WHERE"
                  " q.device_id = ? AND q.id > ? AND q.expires_ms > ? ORDER BY q.id LIMIT ?;",
                  &st);
    if (err == MSV_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)after_id);
        sqlite3_bind_int64(st, 3, now_ms);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)limit);
    }
    while (err == MSV_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct msv_queue_rec *r = &recs[n];

        r->id = (uint64_t)sqlite3_column_int64(st, 0);
        r->device_id = (uint64_t)sqlite3_column_int64(st, 1);
        r->sender_device = (uint64_t)sqlite3_column_int64(st, 2);
        r->sender_handle = msv_sql_text(st, 3);
        r->suite = (uint32_t)sqlite3_column_int(st, 4);
        r->ciphertext = msv_sql_blob(st, 5, &r->ciphertext_len);
        r->enqueued_ms = sqlite3_column_int64(st, 6);
        n++;
        if (r->sender_handle == NULL || r->ciphertext == NULL)
            err = MSV_ERR_NOMEM;
    }
    if (err == MSV_OK && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    release(s, st);
    if (err != MSV_OK) {
        msv_queue_recs_free(recs, n);
        return err;
    }
    *out = recs;
    *count = n;
    return MSV_OK;
}

static msv_err queue_ack_locked(struct sqlite_store *s, uint64_t device_id, const uint64_t *ids,
                                size_t n, size_t *deleted)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "DELETE FROM queue WHERE id = ? AND device_id = ?;", &st);

    *deleted = 0;
    if (err != MSV_OK)
        return err;
    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        int rc;

        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)ids[i]);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
        rc = sqlite3_step(st);
        err = rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
        *deleted += (size_t)sqlite3_changes(s->db);
    }
    release(s, st);
    return err;
}

/* MSV_OK if device_id exists (in this transaction), MSV_ERR_AGAIN if not. */
static msv_err device_exists_locked(struct sqlite_store *s, uint64_t device_id)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "SELECT 1 FROM devices WHERE id = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    err = rc == SQLITE_ROW ? MSV_OK : rc == SQLITE_DONE ? MSV_ERR_AGAIN : msv_sql_err(rc);
    release(s, st);
    return err;
}

/*
 * MSV_ERR_AGAIN if the recipient of one of n items no longer exists (removed after the send
 * was checked): nothing is queued for it, nor answered Ok.
 */
static msv_err recipients_exist_locked(struct sqlite_store *s, const struct msv_queue_in *items,
                                       size_t n)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        if (i == 0 || items[i].device_id != items[i - 1].device_id)
            err = device_exists_locked(s, items[i].device_id);
    }
    return err;
}

static msv_err queue_commit_locked(struct sqlite_store *s, const struct msv_queue_in *items,
                                   size_t n, int64_t now_ms, int64_t expires_ms, uint64_t *ids,
                                   struct msv_queue_ack *acks, size_t n_acks)
{
    msv_err err = recipients_exist_locked(s, items, n);

    if (err == MSV_OK && n > 0)
        err = queue_put_locked(s, items, n, now_ms, expires_ms, ids);

    for (size_t i = 0; i < n_acks && err == MSV_OK; i++)
        err = queue_ack_locked(s, acks[i].device_id, acks[i].ids, acks[i].n, &acks[i].deleted);
    return err;
}

static msv_err count_changes(struct sqlite_store *s, sqlite3_stmt *st, size_t *changed)
{
    msv_err err = run(s, st);

    if (err == MSV_OK)
        *changed = (size_t)sqlite3_changes(s->db);
    return err;
}

static msv_err queue_expire(void *impl, int64_t now_ms, size_t *expired)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "DELETE FROM mls_commit_log WHERE expires_ms <= ?;", &st);

    if (err == MSV_OK) { /* the MLS commit logs expire with the queue */
        sqlite3_bind_int64(st, 1, now_ms);
        err = run(s, st);
    }
    if (err == MSV_OK)
        err = prepare(s, "DELETE FROM queue WHERE expires_ms <= ?;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, now_ms);
    err = count_changes(s, st, expired);
    /* and so do the Welcomes kept, once the queue is swept (a failure here is returned with
     * the queue swept all the same, and those are swept at the next) */
    if (err == MSV_OK)
        err = prepare(s,
                      "UPDATE mls_members SET welcome = NULL, welcome_expires_ms = 0 WHERE"
                      " welcome_expires_ms > 0 AND welcome_expires_ms <= ?;",
                      &st);
    if (err == MSV_OK) {
        sqlite3_bind_int64(st, 1, now_ms);
        err = run(s, st);
    }
    return err;
}

static msv_err queue_usage(void *impl, struct msv_queue_usage *u, size_t n)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        int rc;

        err = prepare(s, "SELECT envelopes, bytes FROM queue_usage WHERE device_id = ?;", &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)u[i].device_id);
        rc = sqlite3_step(st);
        u[i].envelopes = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        u[i].bytes = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 1) : 0;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            err = MSV_ERR_IO;
        release(s, st);
    }
    return err;
}

static msv_err queue_refusal_add_locked(void *impl, const uint64_t *device_ids, size_t n)
{
    struct sqlite_store *s = impl;
    msv_err err = MSV_OK;

    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        sqlite3_stmt *st = NULL;

        err = prepare(s,
                      "INSERT INTO queue_refusals VALUES (?, 1) ON CONFLICT (device_id) DO"
                      " UPDATE SET refused = refused + 1;",
                      &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_ids[i]);
        err = run(s, st);
    }
    return err;
}

/* Inside a transaction: the read and the reset are one. */
static msv_err queue_refusal_take_locked(void *impl, uint64_t device_id, uint64_t *refused)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "SELECT refused FROM queue_refusals WHERE device_id = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    *refused = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    err = rc == SQLITE_ROW || rc == SQLITE_DONE ? MSV_OK : MSV_ERR_IO;
    release(s, st);
    if (err != MSV_OK || *refused == 0)
        return err;
    err = prepare(s, "DELETE FROM queue_refusals WHERE device_id = ?;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    return run(s, st);
}

static msv_err queue_last_id(void *impl, uint64_t device_id, int64_t now_ms, uint64_t *last)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "SELECT COALESCE(MAX(id), 0) FROM queue WHERE device_id = ? AND "
                          "expires_ms > ?;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 2, now_ms);
    if (sqlite3_step(st) == SQLITE_ROW)
        *last = (uint64_t)sqlite3_column_int64(st, 0);
    else
        err = MSV_ERR_IO;
    release(s, st);
    return err;
}

static msv_err queue_depth(void *impl, uint64_t *count)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "SELECT COUNT(*) FROM queue;", &st);

    if (err != MSV_OK)
        return err;
    if (sqlite3_step(st) == SQLITE_ROW)
        *count = (uint64_t)sqlite3_column_int64(st, 0);
    else
        err = MSV_ERR_IO;
    release(s, st);
    return err;
}

/* ---- blobs ---------------------------------------------------------------------------- */

static msv_err blob_create(void *impl, const struct msv_blob_rec *r)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO blobs (id, owner_device, size, received, complete, "
                          "sha256, expires_ms, account_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                          "COALESCE((SELECT account_id FROM devices WHERE id = ?2), 0));",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, r->id, MSV_BLOB_ID_LEN, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)r->owner_device);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)r->size);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)r->received);
    sqlite3_bind_int(st, 5, r->complete);
    sqlite3_bind_blob(st, 6, r->sha256, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 7, r->expires_ms);
    return run(s, st);
}

static msv_err blob_usage(void *impl, uint64_t device_id, int64_t now_ms,
                          struct msv_blob_usage *out)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(
        s,
        "SELECT (SELECT COUNT(*) FROM blobs WHERE owner_device = ?1 AND complete = 0"
        "  AND expires_ms > ?2),"
        " (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner_device = ?1 AND expires_ms > ?2),"
        " a.bytes, a.n FROM (SELECT COALESCE(SUM(size), 0) AS bytes, COUNT(*) AS n FROM blobs"
        "  WHERE account_id = (SELECT account_id FROM devices WHERE id = ?1)"
        "  AND expires_ms > ?2) AS a;",
        &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 2, now_ms);
    if (sqlite3_step(st) == SQLITE_ROW)
        *out = (struct msv_blob_usage){.open = (uint64_t)sqlite3_column_int64(st, 0),
                                       .device_bytes = (uint64_t)sqlite3_column_int64(st, 1),
                                       .account_bytes = (uint64_t)sqlite3_column_int64(st, 2),
                                       .account_count = (uint64_t)sqlite3_column_int64(st, 3)};
    else
        err = MSV_ERR_IO;
    release(s, st);
    return err;
}

static msv_err blob_get(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], struct msv_blob_rec *out)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "SELECT owner_device, size, received, complete, sha256, expires_ms "
                          "FROM blobs WHERE id = ?;",
                          &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, id, MSV_BLOB_ID_LEN, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 4) == 32) {
        memcpy(out->id, id, MSV_BLOB_ID_LEN);
        out->owner_device = (uint64_t)sqlite3_column_int64(st, 0);
        out->size = (uint64_t)sqlite3_column_int64(st, 1);
        out->received = (uint64_t)sqlite3_column_int64(st, 2);
        out->complete = sqlite3_column_int(st, 3);
        memcpy(out->sha256, sqlite3_column_blob(st, 4), 32);
        out->expires_ms = sqlite3_column_int64(st, 5);
    } else {
        /* a row whose digest is not 32 bytes is not a record this store wrote: a fault, not
         * an absence (and never an answer made of nothing) */
        err = rc == SQLITE_DONE  ? MSV_ERR_NOT_FOUND
              : rc == SQLITE_ROW ? MSV_ERR_IO
                                 : msv_sql_err(rc);
    }
    release(s, st);
    return err;
}

static msv_err blob_update(void *impl, const struct msv_blob_rec *r)
{
    struct sqlite_store *s = impl;
    sqlite3_stmt *st = NULL;
    size_t changed = 0;
    msv_err err = prepare(s,
                          "UPDATE blobs SET received = ?, complete = ?, sha256 = ?, expires_ms = ?"
                          " WHERE id = ?;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)r->received);
    sqlite3_bind_int(st, 2, r->complete);
    sqlite3_bind_blob(st, 3, r->sha256, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, r->expires_ms);
    sqlite3_bind_blob(st, 5, r->id, MSV_BLOB_ID_LEN, SQLITE_TRANSIENT);
    err = count_changes(s, st, &changed);
    return err == MSV_OK && changed == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err blob_expire_locked(struct sqlite_store *s, int64_t now_ms, size_t max,
                                  uint8_t (**ids)[MSV_BLOB_ID_LEN], size_t *count)
{
    sqlite3_stmt *st = NULL;
    uint8_t(*list)[MSV_BLOB_ID_LEN] = NULL;
    size_t n = 0, cap = 0;
    msv_err err =
        prepare(s, "SELECT id FROM blobs WHERE expires_ms <= ? ORDER BY expires_ms LIMIT ?;", &st);
    int rc = SQLITE_DONE;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != MSV_BLOB_ID_LEN)
            continue;
        if (n == cap) {
            void *bigger = realloc(list, (cap = cap ? cap * 2 : 16) * MSV_BLOB_ID_LEN);

            if (bigger == NULL) {
                err = MSV_ERR_NOMEM;
                break;
            }
            list = bigger;
        }
        memcpy(list[n++], sqlite3_column_blob(st, 0), MSV_BLOB_ID_LEN);
    }
    if (err == MSV_OK && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    release(s, st);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = prepare(s, "DELETE FROM blobs WHERE id = ?;", &st);
        if (err == MSV_OK) {
            sqlite3_bind_blob(st, 1, list[i], MSV_BLOB_ID_LEN, SQLITE_STATIC);
            err = run(s, st);
        }
    }
    if (err != MSV_OK) {
        free(list);
        return err;
    }
    *ids = list;
    *count = n;
    return MSV_OK;
}

/* ---- MLS delivery service: KeyPackages and groups (docs/missived.md, "MLS groups") ------- */

static msv_err mls_kp_state(struct sqlite_store *s, uint64_t device_id, uint32_t *left,
                            int *has_last_resort)
{
    uint32_t flag = 0;
    msv_err err =
        count_and_flag(s,
                       "SELECT (SELECT COUNT(*) FROM mls_key_packages WHERE device_id = ?1"
                       " AND last_resort = 0), EXISTS (SELECT 1 FROM mls_key_packages"
                       " WHERE device_id = ?1 AND last_resort = 1);",
                       device_id, left, &flag);

    *has_last_resort = flag != 0;
    return err;
}

/* Runs sql, whose only parameter (?1) is device_id. */
static msv_err run_for_device(struct sqlite_store *s, const char *sql, uint64_t device_id)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, sql, &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    return run(s, st);
}

static msv_err mls_kp_insert(struct sqlite_store *s, uint64_t device_id, const uint8_t *kp,
                             size_t len, int last_resort)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT INTO mls_key_packages (device_id, last_resort, kp)"
                          " VALUES (?, ?, ?);",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int(st, 2, last_resort);
    sqlite3_bind_blob(st, 3, kp, (int)len, SQLITE_STATIC);
    return run(s, st);
}

static msv_err mls_kp_put_locked(struct sqlite_store *s, uint64_t device_id,
                                 const struct msv_mls_key_package_upload *up, size_t max,
                                 uint32_t *left, int *has_last_resort)
{
    msv_err err = MSV_OK;

    if (up->replace)
        err = run_for_device(
            s, "DELETE FROM mls_key_packages WHERE device_id = ?1 AND last_resort = 0;", device_id);
    if (err == MSV_OK && up->last_resort != NULL) {
        err = run_for_device(
            s, "DELETE FROM mls_key_packages WHERE device_id = ?1 AND last_resort = 1;", device_id);
        if (err == MSV_OK)
            err = mls_kp_insert(s, device_id, up->last_resort, up->last_resort_len, 1);
    }
    for (size_t i = 0; err == MSV_OK && i < up->n; i++)
        err = mls_kp_insert(s, device_id, up->kps[i], up->lens[i], 0);
    if (err == MSV_OK)
        err = mls_kp_state(s, device_id, left, has_last_resort);
    return err == MSV_OK && *left > max ? MSV_ERR_TOO_BIG : err;
}

/* The oldest KeyPackage of the device, deleted, else its last-resort one. */
static msv_err mls_kp_claim_locked(struct sqlite_store *s, uint64_t device_id, int only_last_resort,
                                   uint8_t **kp, size_t *len, int *last_resort)
{
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    msv_err err = prepare(s,
                          "SELECT id, kp, last_resort FROM mls_key_packages WHERE device_id = ?"
                          " AND last_resort >= ? ORDER BY last_resort, id LIMIT 1;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int(st, 2, only_last_resort != 0);
    if (sqlite3_step(st) == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
        *last_resort = sqlite3_column_int(st, 2);
        *kp = msv_sql_blob(st, 1, len);
        if (*kp == NULL)
            err = MSV_ERR_NOMEM;
    } else {
        err = MSV_ERR_NOT_FOUND;
    }
    release(s, st);
    if (err == MSV_OK && !*last_resort) {
        err = prepare(s, "DELETE FROM mls_key_packages WHERE id = ?;", &st);
        if (err == MSV_OK) {
            sqlite3_bind_int64(st, 1, id);
            err = run(s, st);
        }
        if (err != MSV_OK) {
            free(*kp);
            *kp = NULL;
        }
    }
    return err;
}

static msv_err read_member(sqlite3_stmt *st, void *item)
{
    *(uint64_t *)item = (uint64_t)sqlite3_column_int64(st, 0);
    return MSV_OK;
}

static void drop_members(void *items, size_t n)
{
    (void)n;
    free(items);
}

static msv_err mls_group_get_locked(struct sqlite_store *s, const uint8_t *group_id,
                                    size_t group_len, uint64_t *epoch, uint64_t **members,
                                    size_t *n)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "SELECT epoch FROM mls_groups WHERE group_id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        *epoch = (uint64_t)sqlite3_column_int64(st, 0);
    else
        err = MSV_ERR_NOT_FOUND;
    release(s, st);
    if (err != MSV_OK || members == NULL)
        return err;
    err =
        prepare(s, "SELECT device_id FROM mls_members WHERE group_id = ? ORDER BY device_id;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
    err = msv_sql_rows(st, sizeof(**members), read_member, drop_members, (void **)members, n, NULL);
    release(s, st);
    return err;
}

/* Adds (add) or removes the devices of ids to or from the group's members. */
static msv_err mls_members_change(struct sqlite_store *s, const struct msv_mls_commit *c,
                                  const uint64_t *ids, size_t n, int add)
{
    sqlite3_stmt *st = NULL;
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = prepare(s,
                      /* only a device that still exists and is approved, in this transaction */
                      /* one added again (its leaf replaced) stays a member, added by the
                       * same device as before: if this commit is that device's, a Welcome
                       * it kept from before is stale (another's changes nothing: the server
                       * cannot tell a replacement from a commit naming members it does not
                       * add) */
                      add ? "INSERT INTO mls_members (group_id, device_id, since_epoch,"
                            " added_by, added_by_account) SELECT ?1, id, ?3, ?4, CASE WHEN"
                            " account_id = ?5 THEN 0 ELSE ?5 END FROM devices WHERE id = ?2 AND"
                            " approved = 1 ON CONFLICT (group_id, device_id) DO UPDATE SET"
                            " welcome = NULL, welcome_expires_ms = 0 WHERE"
                            " mls_members.added_by = excluded.added_by;"
                          : "DELETE FROM mls_members WHERE group_id = ? AND device_id = ?;",
                      &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_blob(st, 1, c->group_id, (int)c->group_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)ids[i]);
        if (add) { /* its first epoch in the group, from which it may read the commit log */
            sqlite3_bind_int64(st, 3, (sqlite3_int64)(c->epoch + 1));
            sqlite3_bind_int64(st, 4, (sqlite3_int64)c->sender);
            sqlite3_bind_int64(st, 5, (sqlite3_int64)c->claimer);
        }
        err = run(s, st);
    }
    return err;
}

/* The commit into its group's log, and what either bound no longer keeps out of it. */
static msv_err mls_log_put(struct sqlite_store *s, const struct msv_mls_commit *c)
{
    sqlite3_stmt *st = NULL;
    msv_err err;

    if (c->log == NULL)
        return MSV_OK;
    err = prepare(s,
                  "INSERT OR REPLACE INTO mls_commit_log (group_id, epoch, account_id,"
                  " sender_device, expires_ms, delivery) VALUES (?, ?, ?, ?, ?, ?);",
                  &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, c->group_id, (int)c->group_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)c->epoch);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)c->claimer);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)c->sender);
    sqlite3_bind_int64(st, 5, c->log_expires_ms);
    sqlite3_bind_blob(st, 6, c->log, (int)c->log_len, SQLITE_STATIC);
    err = run(s, st);
    /* the group's log_keep newest (a range of its key) */
    if (err == MSV_OK && c->epoch >= c->log_keep) {
        err = prepare(s, "DELETE FROM mls_commit_log WHERE group_id = ? AND epoch <= ?;", &st);
        if (err == MSV_OK) {
            sqlite3_bind_blob(st, 1, c->group_id, (int)c->group_len, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)(c->epoch - c->log_keep));
            err = run(s, st);
        }
    }
    /* the sender's account's log_account_max newest (by expiry: the order they went in) */
    if (err == MSV_OK) {
        err = prepare(s,
                      "DELETE FROM mls_commit_log WHERE rowid IN (SELECT rowid FROM"
                      " mls_commit_log WHERE account_id = ?1 ORDER BY expires_ms DESC, rowid"
                      " DESC LIMIT -1 OFFSET ?2);",
                      &st);
        if (err == MSV_OK) {
            sqlite3_bind_int64(st, 1, (sqlite3_int64)c->claimer);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)c->log_account_max);
            err = run(s, st);
        }
    }
    return err;
}

/* 1 if device_id is a member of the commit's group, 0 if not, -1 on failure. */
static int mls_is_member(struct sqlite_store *s, const struct msv_mls_commit *c, uint64_t device_id,
                         size_t *count)
{
    sqlite3_stmt *st = NULL;
    int member = -1;

    if (prepare(s,
                "SELECT EXISTS (SELECT 1 FROM mls_members WHERE group_id = ?1 AND device_id = ?2),"
                " (SELECT COUNT(*) FROM mls_members WHERE group_id = ?1);",
                &st) != MSV_OK)
        return -1;
    sqlite3_bind_blob(st, 1, c->group_id, (int)c->group_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        member = sqlite3_column_int(st, 0);
        *count = (size_t)sqlite3_column_int64(st, 1);
    }
    release(s, st);
    return member;
}

/*
 * MSV_ERR_TOO_BIG if the sender or a device the commit adds is in more than max_groups groups,
 * or a device it adds in more than max_groups_by_account that the claimer's account added it
 * to (added_by_account: 0 for its own account's).
 */
static msv_err mls_groups_bounded(struct sqlite_store *s, const struct msv_mls_commit *c)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i <= c->n_added; i++) {
        sqlite3_stmt *st = NULL;
        int added = i < c->n_added;

        err = prepare(s,
                      "SELECT COUNT(*), SUM(added_by_account = ?2) FROM mls_members WHERE"
                      " device_id = ?1;",
                      &st);
        if (err != MSV_OK)
            return err;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)(added ? c->added[i] : c->sender));
        sqlite3_bind_int64(st, 2, (sqlite3_int64)c->claimer);
        if (sqlite3_step(st) != SQLITE_ROW)
            err = msv_sql_err(sqlite3_errcode(s->db));
        else if ((size_t)sqlite3_column_int64(st, 0) > c->max_groups ||
                 (added && c->max_groups_by_account > 0 &&
                  (size_t)sqlite3_column_int64(st, 1) > c->max_groups_by_account))
            err = MSV_ERR_TOO_BIG;
        release(s, st);
    }
    return err;
}

/* The group goes with its commit log if it has no member left (MLS_ONLY_DEVICE). */
static msv_err mls_group_drop(struct sqlite_store *s, const uint8_t *group_id, size_t group_len)
{
    static const char *const drops[] = {
        "DELETE FROM mls_groups WHERE group_id = ?1 AND NOT EXISTS (SELECT 1 FROM mls_members"
        " WHERE group_id = ?1);",
        "DELETE FROM mls_commit_log WHERE group_id = ?1;",
    };
    sqlite3_stmt *st = NULL;
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < sizeof(drops) / sizeof(drops[0]); i++) {
        err = prepare(s, drops[i], &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
        err = run(s, st);
        if (err == MSV_OK && i == 0 && sqlite3_changes(s->db) == 0)
            break; /* members left: the log stays */
    }
    return err;
}

/* Epoch 0 of an unknown group: it starts, with the sender as its first member. */
static msv_err mls_group_create(struct sqlite_store *s, const struct msv_mls_commit *c)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "INSERT INTO mls_groups (group_id, epoch) VALUES (?, 0);", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, c->group_id, (int)c->group_len, SQLITE_STATIC);
    err = run(s, st);
    if (err == MSV_OK) /* the sender is the connection's own device (as on PostgreSQL) */
        err = prepare(s, "INSERT INTO mls_members (group_id, device_id) VALUES (?, ?);", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, c->group_id, (int)c->group_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)c->sender);
    return run(s, st);
}

/* One open claim of each device added, used; MSV_ERR_INVALID if one has none. */
static msv_err mls_claims_use(struct sqlite_store *s, const struct msv_mls_commit *c)
{
    sqlite3_stmt *st = NULL;
    msv_err err = MSV_OK;

    for (size_t i = 0; i < c->n_added && err == MSV_OK; i++) {
        err = prepare(s,
                      "DELETE FROM mls_claims WHERE id = (SELECT id FROM mls_claims WHERE"
                      " account_id = ?1 AND device_id = ?2 AND expires_ms > ?3 ORDER BY id"
                      " LIMIT 1);",
                      &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)c->claimer);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)c->added[i]);
        sqlite3_bind_int64(st, 3, c->now_ms);
        err = run(s, st);
        if (err == MSV_OK && sqlite3_changes(s->db) == 0) {
            if (c->unclaimed != NULL)
                *c->unclaimed = c->added[i];
            err = MSV_ERR_INVALID;
        }
    }
    return err;
}

static msv_err mls_commit_locked(struct sqlite_store *s, const struct msv_mls_commit *c,
                                 uint64_t *epoch_now)
{
    sqlite3_stmt *st = NULL;
    size_t count = 0;
    int member;
    msv_err err = device_exists_locked(s, c->sender);

    /* a removed device is no member, and does not become the first of a group it starts */
    if (err != MSV_OK)
        return err == MSV_ERR_AGAIN ? MSV_ERR_AUTH : err;
    err = mls_group_get_locked(s, c->group_id, c->group_len, epoch_now, NULL, NULL);
    if (err == MSV_ERR_NOT_FOUND && c->epoch == 0) {
        *epoch_now = 0;
        err = mls_group_create(s, c);
    }
    if (err != MSV_OK)
        return err;
    if (*epoch_now != c->epoch)
        return MSV_ERR_EXISTS;
    member = mls_is_member(s, c, c->sender, &count);
    if (member != 1)
        return member == 0 ? MSV_ERR_AUTH : MSV_ERR_IO;
    err = mls_claims_use(s, c);
    if (err == MSV_OK)
        err = mls_members_change(s, c, c->added, c->n_added, 1);
    if (err == MSV_OK)
        err = mls_members_change(s, c, c->removed, c->n_removed, 0);
    if (err == MSV_OK && mls_is_member(s, c, c->sender, &count) < 0)
        err = MSV_ERR_IO;
    if (err == MSV_OK && count > c->max_members)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = mls_groups_bounded(s, c);
    if (err == MSV_OK)
        err = prepare(s, "UPDATE mls_groups SET epoch = epoch + 1 WHERE group_id = ?;", &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, c->group_id, (int)c->group_len, SQLITE_STATIC);
    err = run(s, st);
    if (err == MSV_OK)
        err = recipients_exist_locked(s, c->items, c->n_items);
    if (err == MSV_OK && c->n_items > 0)
        err = queue_put_locked(s, c->items, c->n_items, c->now_ms, c->expires_ms, c->ids);
    if (err == MSV_OK)
        err = mls_log_put(s, c);
    if (err == MSV_OK && c->n_removed > 0)
        err = mls_group_drop(s, c->group_id, c->group_len);
    if (err == MSV_OK)
        *epoch_now = c->epoch + 1;
    return err;
}

/* ---- locking and transactions --------------------------------------------------------- */

static void lock(struct sqlite_store *s)
{
    pthread_mutex_lock(&s->lock);
}

static void unlock(struct sqlite_store *s)
{
    pthread_mutex_unlock(&s->lock);
}

static msv_err begin(struct sqlite_store *s)
{
    return exec(s, "BEGIN IMMEDIATE;");
}

/* Commits if err is MSV_OK, else rolls back; returns the first error. */
static msv_err finish(struct sqlite_store *s, msv_err err)
{
    if (err == MSV_OK) {
        err = exec(s, "COMMIT;");
        if (err == MSV_OK)
            return MSV_OK;
    }
    (void)exec(s, "ROLLBACK;");
    return err;
}

/* Statements that run alone commit by themselves; they only need the lock. */
#define LOCKED(call)   \
    do {               \
        msv_err err_;  \
        lock(impl);    \
        err_ = (call); \
        unlock(impl);  \
        return err_;   \
    } while (0)

/* Several statements: one transaction. */
#define TRANSACTION(call)                \
    do {                                 \
        msv_err err_;                    \
        lock(impl);                      \
        err_ = begin(impl);              \
        if (err_ == MSV_OK)              \
            err_ = finish(impl, (call)); \
        unlock(impl);                    \
        return err_;                     \
    } while (0)

/* Reads of several devices: one read transaction, so that the file locks (fcntl on the
 * database and its WAL index) are taken once for all of them, not once per statement. */
#define READ_TOGETHER(n, call)                                   \
    do {                                                         \
        msv_err err_;                                            \
        lock(impl);                                              \
        err_ = (n) > 1 ? exec(impl, "BEGIN DEFERRED;") : MSV_OK; \
        if (err_ == MSV_OK)                                      \
            err_ = (n) > 1 ? finish(impl, (call)) : (call);      \
        unlock(impl);                                            \
        return err_;                                             \
    } while (0)

static msv_err l_account_create(void *impl, const char *handle, const char *password_hash,
                                int64_t now_ms, uint64_t *account_id)
{
    TRANSACTION(account_create(impl, handle, password_hash, now_ms, account_id));
}

static msv_err l_account_list(void *impl, struct msv_account_summary **out, size_t *n)
{
    LOCKED(account_list(impl, out, n));
}

static msv_err l_account_set_suspended(void *impl, const char *handle, int suspended)
{
    LOCKED(account_set_suspended(impl, handle, suspended));
}

static msv_err l_account_set_password(void *impl, uint64_t account_id, const char *password_hash)
{
    LOCKED(account_set_password(impl, account_id, password_hash));
}

static msv_err l_account_suspended(void *impl, uint64_t account_id, int *suspended)
{
    LOCKED(account_suspended(impl, account_id, suspended));
}

static msv_err l_username_stamp(void *impl, uint64_t account_id, int64_t now_ms,
                                int64_t interval_ms, int64_t *last_ms)
{
    TRANSACTION(username_stamp(impl, account_id, now_ms, interval_ms, last_ms));
}

static msv_err l_report_add(void *impl, uint64_t reporter_account, const char *reported,
                            const char *reason, const char *text, int64_t now_ms, int64_t since_ms,
                            unsigned max_recent, uint64_t *id)
{
    LOCKED(report_add(impl, reporter_account, reported, reason, text, now_ms, since_ms, max_recent,
                      id));
}

static msv_err l_report_list(void *impl, size_t limit, struct msv_report **out, size_t *n)
{
    LOCKED(report_list(impl, limit, out, n));
}

static msv_err l_report_get(void *impl, uint64_t id, struct msv_report **out)
{
    LOCKED(report_get(impl, id, out));
}

static msv_err l_report_set_state(void *impl, uint64_t id, const char *state)
{
    LOCKED(report_set_state(impl, id, state));
}

static msv_err l_invite_add(void *impl, const uint8_t hash[32], const char *note, uint32_t uses,
                            int64_t now_ms, int64_t expires_ms, uint64_t *id)
{
    LOCKED(invite_add(impl, hash, note, uses, now_ms, expires_ms, id));
}

static msv_err l_invite_list(void *impl, struct msv_invite **out, size_t *n)
{
    LOCKED(invite_list(impl, out, n));
}

static msv_err l_invite_revoke(void *impl, uint64_t id)
{
    LOCKED(invite_revoke(impl, id));
}

static msv_err l_invite_take(void *impl, const uint8_t hash[32], int64_t now_ms, int dry_run)
{
    LOCKED(invite_take(impl, hash, now_ms, dry_run));
}

static msv_err l_invite_give_back(void *impl, const uint8_t hash[32])
{
    LOCKED(invite_give_back(impl, hash));
}

static msv_err l_stats(void *impl, struct msv_store_stats *out)
{
    LOCKED(stats(impl, out));
}

static msv_err l_account_get(void *impl, const char *handle, uint64_t *account_id,
                             char **password_hash)
{
    LOCKED(account_get(impl, handle, account_id, password_hash));
}

static msv_err l_account_handle(void *impl, uint64_t account_id, char **handle)
{
    LOCKED(account_handle(impl, account_id, handle));
}

static msv_err l_code_put(void *impl, const char *handle, const uint8_t hash[32], int64_t now_ms,
                          int64_t expires_ms)
{
    LOCKED(code_put(impl, handle, hash, now_ms, expires_ms));
}

static msv_err l_code_take(void *impl, const char *handle, const uint8_t hash[32], int64_t now_ms,
                           unsigned max_attempts)
{
    msv_err err, result;

    /* a wrong code must still commit its attempt count, so the outcome is not the tx's */
    lock(impl);
    err = begin(impl);
    if (err == MSV_OK) {
        result = code_take_locked(impl, handle, hash, now_ms, max_attempts);
        err = finish(impl, result == MSV_ERR_AUTH || result == MSV_ERR_NOT_FOUND ? MSV_OK : result);
        if (err == MSV_OK)
            err = result;
    }
    unlock(impl);
    return err;
}

/* Keeps approved device device_id's approval record (unsigned for approval NULL). */
static msv_err approval_put(struct sqlite_store *s, uint64_t device_id,
                            const struct msv_kt_approval *approval)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "INSERT OR REPLACE INTO device_approvals (device_id, account_id, suite, "
                          "identity, kind, approver, signature) SELECT id, account_id, suite, "
                          "identity, ?, ?, ? FROM devices WHERE id = ?;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int(st, 1, approval != NULL ? approval->kind : MSV_KT_UNSIGNED);
    sqlite3_bind_int64(st, 2, approval != NULL ? (sqlite3_int64)approval->approver : 0);
    if (approval != NULL && approval->kind != MSV_KT_UNSIGNED)
        sqlite3_bind_blob(st, 3, approval->sig, (int)approval->sig_len, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)device_id);
    return run(s, st);
}

/* How many of account_id's devices are approved (approved 1) or pending (0) (device_id 0), or
 * whether device_id is one of them (1). */
static msv_err devices_counted(struct sqlite_store *s, uint64_t account_id, int approved,
                               uint64_t device_id, uint32_t *n)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "SELECT COUNT(*) FROM devices WHERE account_id = ?1 AND approved = ?3 "
                          "AND (?2 = 0 OR id = ?2);",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    sqlite3_bind_int(st, 3, approved ? 1 : 0);
    if (sqlite3_step(st) == SQLITE_ROW)
        *n = (uint32_t)sqlite3_column_int64(st, 0);
    else
        err = msv_sql_err(sqlite3_errcode(s->db));
    release(s, st);
    return err;
}

static msv_err device_add_logged(void *impl, uint64_t account_id, uint32_t suite,
                                 const uint8_t *identity, size_t identity_len,
                                 const uint8_t *push_token, size_t push_token_len, int approved,
                                 int64_t now_ms, const struct msv_prekey_upload *first,
                                 const struct msv_kt_approval *approval, uint64_t *device_id)
{
    uint32_t left = 0, signed_id = 0, n_approved = 0, n_pending = 0;
    msv_err err = MSV_OK;

    /* a device approving itself (a root, a recovery) is approved only while the account has
     * no approved device, decided in this transaction: else it waits as pending */
    if (approved && self_approved(approval)) {
        err = devices_counted(impl, account_id, 1, 0, &n_approved);
        approved = n_approved == 0;
    }
    /* at most MSV_STORE_PENDING_MAX wait for approval at once */
    if (err == MSV_OK && !approved &&
        (err = devices_counted(impl, account_id, 0, 0, &n_pending)) == MSV_OK &&
        n_pending >= MSV_STORE_PENDING_MAX)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = device_add(impl, account_id, suite, identity, identity_len, push_token,
                         push_token_len, approved, now_ms, device_id);

    /* listed with its prekeys or not at all: a crash between would leave a post-quantum
     * device that senders refuse until it connects */
    if (err == MSV_OK && first != NULL)
        err = prekeys_put_locked(impl, *device_id, first, SIZE_MAX, &left, &signed_id);
    if (err == MSV_OK && approved)
        err = approval_put(impl, *device_id, approval);

    /* a pending device is not in the directory, so not in the log, until approved */
    return err == MSV_OK && approved ? kt_append_locked(impl, account_id, now_ms) : err;
}

static msv_err device_approve_logged(void *impl, uint64_t account_id, uint64_t device_id,
                                     const struct msv_kt_approval *approval)
{
    uint32_t approver = 1;
    msv_err err = MSV_OK;

    /* the approver is still an approved device of the account, in this transaction: one
     * removed since its approval was checked would leave the device with no chain */
    if (approval != NULL && approval->kind == MSV_KT_APPROVED)
        err = devices_counted(impl, account_id, 1, approval->approver, &approver);
    if (err == MSV_OK && approver == 0)
        return MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = device_approve(impl, account_id, device_id);

    if (err == MSV_OK)
        err = approval_put(impl, device_id, approval);

    /* refused past MSV_KT_APPROVED_SET_MAX records, so that a removal always fits */
    return err == MSV_OK
               ? kt_append_bounded(impl, account_id, msv_wall_ms(), MSV_KT_APPROVED_SET_MAX)
               : err;
}

static msv_err device_remove_logged(void *impl, uint64_t account_id, uint64_t device_id)
{
    msv_err err = device_remove_locked(impl, account_id, device_id);

    return err == MSV_OK ? kt_append_locked(impl, account_id, msv_wall_ms()) : err;
}

static msv_err l_kt_read(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                         size_t *count)
{
    LOCKED(kt_read(impl, start, max, out, count));
}

static msv_err l_kt_handle_read(void *impl, const char *handle, uint64_t start, size_t max,
                                struct msv_kt_rec **out, size_t *count)
{
    LOCKED(kt_handle_read(impl, handle, start, max, out, count));
}

static msv_err l_kt_latest(void *impl, const char *handle, struct msv_kt_rec *out)
{
    LOCKED(kt_latest(impl, handle, 0, out));
}

static msv_err l_kt_tombstone_latest(void *impl, const char *handle, struct msv_kt_rec *out)
{
    LOCKED(kt_latest(impl, handle, 1, out));
}

static msv_err l_kt_append(void *impl, uint64_t index, const uint8_t *leaf, size_t len)
{
    LOCKED(kt_append(impl, index, leaf, len));
}

static msv_err l_kt_labels_read(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                                size_t *count)
{
    LOCKED(kt_labels_read(impl, start, max, out, count));
}

static msv_err l_kt_labels_put(void *impl, const struct msv_kt_rec *recs, size_t n)
{
    TRANSACTION(kt_labels_put(impl, recs, n));
}

static msv_err l_kt_publish(void *impl, uint64_t index, const uint8_t *pub, size_t len)
{
    TRANSACTION(kt_publish(impl, index, pub, len));
}

static void l_set_fault_hook(void *impl, msv_store_fault_fn fn, void *ctx)
{
    (void)impl; /* SQLite's failures are files' failures: MSV_ERR_IO says it */
    (void)fn;
    (void)ctx;
}

static void l_kt_set_labeler(void *impl, msv_kt_labeler fn, void *ctx)
{
    struct sqlite_store *s = impl;

    lock(s);
    s->labeler = fn;
    s->labeler_ctx = ctx;
    unlock(s);
}

static msv_err prekey_and_kem_claim_locked(struct sqlite_store *s, uint64_t device_id, int one_time,
                                           struct msv_prekey_claimed *out)
{
    msv_err err = prekey_claim_locked(s, device_id, one_time, out);

    return err == MSV_OK ? kem_claim_locked(s, device_id, one_time, out) : err;
}

static msv_err l_kem_prekey_state(void *impl, uint64_t device_id, uint32_t *left,
                                  uint32_t *last_resort_id)
{
    /* under the store's lock, as every other operation: the workers share one connection */
    LOCKED(kem_prekey_state_locked(impl, device_id, left, last_resort_id));
}

static msv_err l_prekeys_put(void *impl, uint64_t device_id, const struct msv_prekey_upload *u,
                             size_t max_one_time, uint32_t *left, uint32_t *signed_id)
{
    TRANSACTION(prekeys_put_locked(impl, device_id, u, max_one_time, left, signed_id));
}

static msv_err l_prekey_claim(void *impl, uint64_t device_id, int one_time,
                              struct msv_prekey_claimed *out)
{
    TRANSACTION(prekey_and_kem_claim_locked(impl, device_id, one_time, out));
}

static msv_err l_delivery_token_set(void *impl, uint64_t device_id, const uint8_t hash[32])
{
    LOCKED(delivery_token_set(impl, device_id, hash));
}

static msv_err l_delivery_token_check(void *impl, uint64_t account_id, const uint8_t hash[32])
{
    LOCKED(delivery_token_check(impl, account_id, hash));
}

static msv_err l_mls_key_packages_put(void *impl, uint64_t device_id,
                                      const struct msv_mls_key_package_upload *up, size_t max,
                                      uint32_t *left, int *has_last_resort)
{
    TRANSACTION(mls_kp_put_locked(impl, device_id, up, max, left, has_last_resort));
}

/* The claim recorded, the expired ones and the claimer's oldest beyond max dropped. */
static msv_err mls_claim_record(struct sqlite_store *s, uint64_t claimer, uint64_t device_id,
                                int64_t now_ms, int64_t expires_ms, size_t max)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "DELETE FROM mls_claims WHERE expires_ms <= ?;", &st);

    if (err == MSV_OK) {
        sqlite3_bind_int64(st, 1, now_ms);
        err = run(s, st);
    }
    if (err == MSV_OK)
        err = prepare(s,
                      "INSERT INTO mls_claims (account_id, device_id, expires_ms)"
                      " VALUES (?, ?, ?);",
                      &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)claimer);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 3, expires_ms);
    err = run(s, st);
    if (err == MSV_OK)
        err = prepare(s,
                      "DELETE FROM mls_claims WHERE account_id = ?1 AND id NOT IN (SELECT id"
                      " FROM mls_claims WHERE account_id = ?1 ORDER BY id DESC LIMIT ?2);",
                      &st);
    if (err != MSV_OK)
        return err;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)claimer);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    return run(s, st);
}

static msv_err mls_claim_locked(struct sqlite_store *s, uint64_t device_id, int only_last_resort,
                                uint64_t claimer, int64_t now_ms, int64_t expires_ms, size_t max,
                                uint8_t **kp, size_t *len, int *last_resort)
{
    msv_err err = mls_kp_claim_locked(s, device_id, only_last_resort, kp, len, last_resort);

    if (err == MSV_OK)
        err = mls_claim_record(s, claimer, device_id, now_ms, expires_ms, max);
    if (err != MSV_OK && *kp != NULL) {
        free(*kp);
        *kp = NULL;
    }
    return err;
}

static msv_err l_mls_key_package_claim(void *impl, uint64_t device_id, int only_last_resort,
                                       uint64_t claimer, int64_t now_ms, int64_t expires_ms,
                                       size_t max_claims, uint8_t **kp, size_t *len,
                                       int *last_resort)
{
    *kp = NULL;
    TRANSACTION(mls_claim_locked(impl, device_id, only_last_resort, claimer, now_ms, expires_ms,
                                 max_claims, kp, len, last_resort));
}

static msv_err l_mls_group_get(void *impl, const uint8_t *group_id, size_t group_len,
                               uint64_t *epoch, uint64_t **members, size_t *n)
{
    LOCKED(mls_group_get_locked(impl, group_id, group_len, epoch, members, n));
}

static msv_err mls_groups_of_device_locked(struct sqlite_store *s, uint64_t device_id, size_t max,
                                           struct msv_mls_group_rec **groups, size_t *n)
{
    sqlite3_stmt *st = NULL;
    struct msv_mls_group_rec *out = calloc(max ? max : 1, sizeof(*out));
    msv_err err = out == NULL ? MSV_ERR_NOMEM
                              : prepare(s,
                                        "SELECT g.group_id, g.epoch FROM mls_members m JOIN"
                                        " mls_groups g ON g.group_id = m.group_id WHERE"
                                        " m.device_id = ? ORDER BY g.group_id LIMIT ?;",
                                        &st);
    int rc;

    *n = 0;
    if (err != MSV_OK) {
        free(out);
        return err;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        const void *id = sqlite3_column_blob(st, 0);

        if (len > sizeof(out[*n].group_id))
            len = sizeof(out[*n].group_id);
        if (len > 0 && id != NULL)
            memcpy(out[*n].group_id, id, len);
        out[*n].group_len = len;
        out[*n].epoch = (uint64_t)sqlite3_column_int64(st, 1);
        (*n)++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = MSV_ERR_IO;
    release(s, st);
    if (err != MSV_OK) {
        free(out);
        *n = 0;
        return err;
    }
    *groups = out;
    return MSV_OK;
}

static msv_err l_mls_groups_of_device(void *impl, uint64_t device_id, size_t max,
                                      struct msv_mls_group_rec **groups, size_t *n)
{
    LOCKED(mls_groups_of_device_locked(impl, device_id, max, groups, n));
}

static msv_err mls_leave_locked(struct sqlite_store *s, const uint8_t *group_id, size_t group_len,
                                uint64_t device_id, const struct msv_queue_in *items, size_t n,
                                int64_t now_ms, int64_t expires_ms, uint64_t *ids)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s, "DELETE FROM mls_members WHERE group_id = ? AND device_id = ?;", &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    err = run(s, st);
    if (err == MSV_OK && sqlite3_changes(s->db) == 0)
        return MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        err = mls_group_drop(s, group_id, group_len);
    return err == MSV_OK && n > 0 ? queue_put_locked(s, items, n, now_ms, expires_ms, ids) : err;
}

static msv_err l_mls_leave(void *impl, const uint8_t *group_id, size_t group_len,
                           uint64_t device_id, const struct msv_queue_in *items, size_t n,
                           int64_t now_ms, int64_t expires_ms, uint64_t *ids)
{
    TRANSACTION(
        mls_leave_locked(impl, group_id, group_len, device_id, items, n, now_ms, expires_ms, ids));
}

static msv_err l_mls_commit(void *impl, const struct msv_mls_commit *c, uint64_t *epoch_now)
{
    TRANSACTION(mls_commit_locked(impl, c, epoch_now));
}

/* Whether device_id is a member of the group (*since: the first epoch it may read), in a read. */
static msv_err mls_member_since(struct sqlite_store *s, const uint8_t *group_id, size_t group_len,
                                uint64_t device_id, uint64_t *since)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(
        s, "SELECT since_epoch FROM mls_members WHERE group_id = ? AND device_id = ?;", &st);
    int rc;

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *since = (uint64_t)sqlite3_column_int64(st, 0);
    err = rc == SQLITE_ROW ? MSV_OK : rc == SQLITE_DONE ? MSV_ERR_AUTH : MSV_ERR_IO;
    release(s, st);
    return err;
}

static msv_err mls_commits_since_locked(struct sqlite_store *s, const uint8_t *group_id,
                                        size_t group_len, uint64_t device_id, uint64_t from,
                                        int64_t now_ms, size_t max, size_t max_bytes,
                                        struct msv_mls_logged **out, size_t *n, uint64_t *epoch,
                                        int *more)
{
    sqlite3_stmt *st = NULL;
    struct msv_mls_logged *l = NULL;
    uint64_t since = 0;
    size_t bytes = 0;
    int rc = SQLITE_DONE;
    msv_err err = mls_group_get_locked(s, group_id, group_len, epoch, NULL, NULL);

    *out = NULL;
    *n = 0;
    *more = 0;
    if (err == MSV_OK)
        err = mls_member_since(s, group_id, group_len, device_id, &since);
    if (err == MSV_OK && (l = calloc(max ? max : 1, sizeof(*l))) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = prepare(s,
                      "SELECT epoch, sender_device, delivery FROM mls_commit_log WHERE"
                      " group_id = ? AND epoch >= ? AND expires_ms > ? ORDER BY epoch LIMIT ?;",
                      &st);
    if (err != MSV_OK) {
        free(l);
        return err;
    }
    sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
    /* an epoch past any a group reaches (2^63 and on) gives nothing, never the whole log */
    from = from > since ? from : since;
    sqlite3_bind_int64(st, 2, from > INT64_MAX ? INT64_MAX : (sqlite3_int64)from);
    sqlite3_bind_int64(st, 3, now_ms);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)max + 1);
    while (err == MSV_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        const void *d = sqlite3_column_blob(st, 2);

        if (*n == max || (*n > 0 && bytes + len > max_bytes)) {
            *more = 1;
            break;
        }
        l[*n].epoch = (uint64_t)sqlite3_column_int64(st, 0);
        l[*n].sender = (uint64_t)sqlite3_column_int64(st, 1);
        l[*n].delivery = malloc(len ? len : 1);
        if (l[*n].delivery == NULL) {
            err = MSV_ERR_NOMEM;
            break;
        }
        if (len > 0)
            memcpy(l[*n].delivery, d, len);
        l[*n].len = len;
        bytes += len;
        (*n)++;
    }
    if (err == MSV_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = MSV_ERR_IO;
    release(s, st);
    if (err != MSV_OK) {
        msv_mls_logged_free(l, *n);
        *n = 0;
        *more = 0;
        return err;
    }
    *out = l;
    return MSV_OK;
}

static msv_err mls_welcome_put_locked(struct sqlite_store *s, const struct msv_mls_welcome *w)
{
    int stale = 0;
    msv_err err = w->n_items > 0
                      ? queue_put_locked(s, w->items, w->n_items, w->now_ms, w->expires_ms, w->ids)
                      : MSV_OK;

    /* a recipient it is queued for: the sender's Welcome kept for it before is stale (looked
     * for by recipient only when the group has one kept of the sender's: seldom) */
    if (err == MSV_OK && w->n_items > 0) {
        sqlite3_stmt *st = NULL;

        err = prepare(s,
                      "SELECT EXISTS (SELECT 1 FROM mls_members WHERE welcome_expires_ms > 0 AND"
                      " group_id = ? AND added_by = ?);",
                      &st);
        if (err == MSV_OK) {
            sqlite3_bind_blob(st, 1, w->group_id, (int)w->group_len, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)w->sender);
            if (sqlite3_step(st) == SQLITE_ROW)
                stale = sqlite3_column_int(st, 0);
            else
                err = MSV_ERR_IO;
            release(s, st);
        }
    }
    for (size_t i = 0; err == MSV_OK && stale && i < w->n_items; i++) {
        sqlite3_stmt *st = NULL;

        err = prepare(s,
                      "UPDATE mls_members SET welcome = NULL, welcome_expires_ms = 0 WHERE"
                      " group_id = ? AND device_id = ? AND added_by = ? AND"
                      " welcome_expires_ms > 0;",
                      &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_blob(st, 1, w->group_id, (int)w->group_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)w->items[i].device_id);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)w->sender);
        err = run(s, st);
    }

    for (size_t i = 0; err == MSV_OK && i < w->n_left_out; i++) {
        sqlite3_stmt *st = NULL;

        err = prepare(s,
                      "UPDATE mls_members SET welcome = ?1, welcome_expires_ms = ?2 WHERE"
                      " group_id = ?3 AND device_id = ?4 AND added_by = ?5 AND added_by <> 0;",
                      &st);
        if (err != MSV_OK)
            break;
        sqlite3_bind_blob(st, 1, w->delivery, (int)w->len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, w->expires_ms);
        sqlite3_bind_blob(st, 3, w->group_id, (int)w->group_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)w->left_out[i]);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)w->sender);
        err = run(s, st);
        w->kept[i] = err == MSV_OK && sqlite3_changes(s->db) > 0;
    }
    return err;
}

static msv_err l_mls_welcome_put(void *impl, const struct msv_mls_welcome *w)
{
    TRANSACTION(mls_welcome_put_locked(impl, w));
}

static msv_err mls_welcome_get_locked(struct sqlite_store *s, const uint8_t *group_id,
                                      size_t group_len, uint64_t device_id, int64_t now_ms,
                                      uint8_t **delivery, size_t *len, uint64_t *sender)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "SELECT welcome_expires_ms > ?3 AND welcome IS NOT NULL, added_by,"
                          " welcome FROM mls_members WHERE group_id = ?1 AND device_id = ?2;",
                          &st);
    int rc;

    *delivery = NULL;
    *len = 0;
    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    sqlite3_bind_int64(st, 3, now_ms);
    rc = sqlite3_step(st);
    err = rc == SQLITE_ROW    ? MSV_OK
          : rc == SQLITE_DONE ? MSV_ERR_AUTH /* no member */
                              : MSV_ERR_IO;
    if (err == MSV_OK && sqlite3_column_int(st, 0) == 0)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK) {
        size_t n = (size_t)sqlite3_column_bytes(st, 2);
        const void *d = sqlite3_column_blob(st, 2);

        *sender = (uint64_t)sqlite3_column_int64(st, 1);
        if ((*delivery = malloc(n ? n : 1)) == NULL)
            err = MSV_ERR_NOMEM;
        else if (n > 0)
            memcpy(*delivery, d, n);
        *len = err == MSV_OK ? n : 0;
    }
    release(s, st);
    return err;
}

static msv_err mls_welcome_drop_locked(struct sqlite_store *s, const uint8_t *group_id,
                                       size_t group_len, uint64_t device_id,
                                       const uint8_t *delivery, size_t len)
{
    sqlite3_stmt *st = NULL;
    msv_err err = prepare(s,
                          "UPDATE mls_members SET welcome = NULL, welcome_expires_ms = 0 WHERE"
                          " group_id = ? AND device_id = ? AND welcome = ?;",
                          &st);

    if (err != MSV_OK)
        return err;
    sqlite3_bind_blob(st, 1, group_id, (int)group_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
    sqlite3_bind_blob(st, 3, delivery, (int)len, SQLITE_STATIC);
    return run(s, st);
}

static msv_err l_mls_welcome_drop(void *impl, const uint8_t *group_id, size_t group_len,
                                  uint64_t device_id, const uint8_t *delivery, size_t len)
{
    LOCKED(mls_welcome_drop_locked(impl, group_id, group_len, device_id, delivery, len));
}

static msv_err l_mls_welcome_get(void *impl, const uint8_t *group_id, size_t group_len,
                                 uint64_t device_id, int64_t now_ms, uint8_t **delivery,
                                 size_t *len, uint64_t *sender)
{
    LOCKED(mls_welcome_get_locked(impl, group_id, group_len, device_id, now_ms, delivery, len,
                                  sender));
}

static msv_err l_mls_commits_since(void *impl, const uint8_t *group_id, size_t group_len,
                                   uint64_t device_id, uint64_t from, int64_t now_ms, size_t max,
                                   size_t max_bytes, struct msv_mls_logged **out, size_t *n,
                                   uint64_t *epoch, int *more)
{
    READ_TOGETHER(2, mls_commits_since_locked(impl, group_id, group_len, device_id, from, now_ms,
                                              max, max_bytes, out, n, epoch, more));
}

static msv_err l_device_add(void *impl, uint64_t account_id, uint32_t suite,
                            const uint8_t *identity, size_t identity_len, const uint8_t *push_token,
                            size_t push_token_len, int approved, int64_t now_ms,
                            const struct msv_prekey_upload *first,
                            const struct msv_kt_approval *approval, uint64_t *device_id)
{
    TRANSACTION(device_add_logged(impl, account_id, suite, identity, identity_len, push_token,
                                  push_token_len, approved, now_ms, first, approval, device_id));
}

static msv_err l_device_approve(void *impl, uint64_t account_id, uint64_t device_id,
                                const struct msv_kt_approval *approval)
{
    TRANSACTION(device_approve_logged(impl, account_id, device_id, approval));
}

static msv_err l_device_remove(void *impl, uint64_t account_id, uint64_t device_id)
{
    TRANSACTION(device_remove_logged(impl, account_id, device_id));
}

static msv_err l_account_delete(void *impl, const char *handle, int64_t now_ms,
                                struct msv_account_deleted *out)
{
    struct sqlite_store *s = impl;
    msv_err err;

    memset(out, 0, sizeof(*out));
    lock(s);
    err = begin(s);
    if (err == MSV_OK)
        err = account_delete_locked(s, handle, now_ms, out);
    err = finish(s, err);
    /* what the account was goes from the write-ahead log too (secure_delete zeroes it in the
     * database's pages): its frames are copied back and the file cut to nothing */
    if (err == MSV_OK)
        (void)exec(s, "PRAGMA wal_checkpoint(TRUNCATE);");
    unlock(s);
    if (err != MSV_OK)
        msv_account_deleted_clear(out);
    return err;
}

static msv_err l_handles_of_account(void *impl, uint64_t account_id, char ***out, size_t *n)
{
    LOCKED(handles_of_account(impl, account_id, out, n));
}

static msv_err l_handle_add(void *impl, uint64_t account_id, const char *handle, size_t max,
                            int64_t now_ms)
{
    TRANSACTION(handle_add_locked(impl, account_id, handle, max, now_ms));
}

static msv_err l_handle_remove(void *impl, uint64_t account_id, const char *handle, int64_t now_ms)
{
    TRANSACTION(handle_remove_locked(impl, account_id, handle, now_ms));
}

static msv_err l_device_get(void *impl, uint64_t device_id, struct msv_device_rec *out)
{
    LOCKED(device_get(impl, device_id, out));
}

static msv_err l_devices_of_account(void *impl, uint64_t account_id, struct msv_device_list *out)
{
    LOCKED(devices_of_account(impl, account_id, out));
}

static msv_err l_connection_order(void *impl, uint64_t *out)
{
    lock(impl);
    *out = ++((struct sqlite_store *)impl)->connections;
    unlock(impl);
    return MSV_OK;
}

static msv_err l_queue_put(void *impl, const struct msv_queue_in *items, size_t n, int64_t now_ms,
                           int64_t expires_ms, uint64_t *ids)
{
    TRANSACTION(queue_put_locked(impl, items, n, now_ms, expires_ms, ids));
}

static msv_err l_queue_fetch(void *impl, uint64_t device_id, uint64_t after_id, int64_t now_ms,
                             size_t limit, struct msv_queue_rec **out, size_t *count)
{
    LOCKED(queue_fetch(impl, device_id, after_id, now_ms, limit, out, count));
}

static msv_err fetch_many(void *impl, struct msv_queue_read *reads, size_t n, int64_t now_ms)
{
    msv_err err = MSV_OK;
    size_t i;

    for (i = 0; i < n && err == MSV_OK; i++) {
        reads[i].recs = NULL;
        reads[i].count = 0;
        err = queue_fetch(impl, reads[i].device_id, reads[i].after_id, now_ms, reads[i].limit,
                          &reads[i].recs, &reads[i].count);
    }
    while (err != MSV_OK && i-- > 0) {
        msv_queue_recs_free(reads[i].recs, reads[i].count);
        reads[i].recs = NULL;
        reads[i].count = 0;
    }
    return err;
}

static msv_err l_queue_fetch_many(void *impl, struct msv_queue_read *reads, size_t n,
                                  int64_t now_ms)
{
    READ_TOGETHER(n, fetch_many(impl, reads, n, now_ms));
}

static msv_err l_queue_ack(void *impl, uint64_t device_id, const uint64_t *ids, size_t n,
                           size_t *deleted)
{
    TRANSACTION(queue_ack_locked(impl, device_id, ids, n, deleted));
}

static msv_err l_queue_commit(void *impl, const struct msv_queue_in *items, size_t n,
                              int64_t now_ms, int64_t expires_ms, uint64_t *ids,
                              struct msv_queue_ack *acks, size_t n_acks)
{
    TRANSACTION(queue_commit_locked(impl, items, n, now_ms, expires_ms, ids, acks, n_acks));
}

static msv_err l_queue_expire(void *impl, int64_t now_ms, size_t *expired)
{
    LOCKED(queue_expire(impl, now_ms, expired));
}

static msv_err l_queue_usage(void *impl, struct msv_queue_usage *u, size_t n)
{
    READ_TOGETHER(n, queue_usage(impl, u, n));
}

static msv_err l_queue_refusal_add(void *impl, const uint64_t *device_ids, size_t n)
{
    TRANSACTION(queue_refusal_add_locked(impl, device_ids, n));
}

static msv_err l_queue_refusal_take(void *impl, uint64_t device_id, uint64_t *refused)
{
    TRANSACTION(queue_refusal_take_locked(impl, device_id, refused));
}

static msv_err l_queue_last_id(void *impl, uint64_t device_id, int64_t now_ms, uint64_t *last)
{
    LOCKED(queue_last_id(impl, device_id, now_ms, last));
}

static msv_err l_queue_depth(void *impl, uint64_t *count)
{
    LOCKED(queue_depth(impl, count));
}

static msv_err l_blob_create(void *impl, const struct msv_blob_rec *rec)
{
    LOCKED(blob_create(impl, rec));
}

static msv_err l_blob_get(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], struct msv_blob_rec *out)
{
    LOCKED(blob_get(impl, id, out));
}

static msv_err l_blob_update(void *impl, const struct msv_blob_rec *rec)
{
    LOCKED(blob_update(impl, rec));
}

static msv_err l_blob_usage(void *impl, uint64_t device_id, int64_t now_ms,
                            struct msv_blob_usage *out)
{
    LOCKED(blob_usage(impl, device_id, now_ms, out));
}

static msv_err l_blob_expire(void *impl, int64_t now_ms, size_t max,
                             uint8_t (**ids)[MSV_BLOB_ID_LEN], size_t *count)
{
    TRANSACTION(blob_expire_locked(impl, now_ms, max, ids, count));
}

static void sqlite_close(void *impl)
{
    struct sqlite_store *s = impl;

    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_statements; i++)
        sqlite3_finalize(s->statements[i].st);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const struct msv_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .account_create = l_account_create,
    .account_get = l_account_get,
    .account_list = l_account_list,
    .account_set_suspended = l_account_set_suspended,
    .account_set_password = l_account_set_password,
    .account_delete = l_account_delete,
    .report_add = l_report_add,
    .report_list = l_report_list,
    .report_get = l_report_get,
    .report_set_state = l_report_set_state,
    .invite_add = l_invite_add,
    .invite_list = l_invite_list,
    .invite_revoke = l_invite_revoke,
    .invite_take = l_invite_take,
    .invite_give_back = l_invite_give_back,
    .account_suspended = l_account_suspended,
    .username_stamp = l_username_stamp,
    .stats = l_stats,
    .account_handle = l_account_handle,
    .handles_of_account = l_handles_of_account,
    .handle_add = l_handle_add,
    .handle_remove = l_handle_remove,
    .code_put = l_code_put,
    .code_take = l_code_take,
    .device_add = l_device_add,
    .device_approve = l_device_approve,
    .device_remove = l_device_remove,
    .device_get = l_device_get,
    .devices_of_account = l_devices_of_account,
    .connection_order = l_connection_order,
    .queue_put = l_queue_put,
    .queue_fetch = l_queue_fetch,
    .queue_fetch_many = l_queue_fetch_many,
    .queue_last_id = l_queue_last_id,
    .queue_ack = l_queue_ack,
    .queue_commit = l_queue_commit,
    .queue_expire = l_queue_expire,
    .queue_depth = l_queue_depth,
    .queue_usage = l_queue_usage,
    .queue_refusal_add = l_queue_refusal_add,
    .queue_refusal_take = l_queue_refusal_take,
    .blob_create = l_blob_create,
    .blob_get = l_blob_get,
    .blob_update = l_blob_update,
    .blob_usage = l_blob_usage,
    .blob_expire = l_blob_expire,
    .kt_read = l_kt_read,
    .kt_latest = l_kt_latest,
    .kt_handle_read = l_kt_handle_read,
    .kt_tombstone_latest = l_kt_tombstone_latest,
    .kt_append = l_kt_append,
    .kt_labels_read = l_kt_labels_read,
    .kt_labels_put = l_kt_labels_put,
    .kt_set_labeler = l_kt_set_labeler,
    .kt_publish = l_kt_publish,
    .set_fault_hook = l_set_fault_hook,
    .prekeys_put = l_prekeys_put,
    .prekey_claim = l_prekey_claim,
    .kem_prekey_state = l_kem_prekey_state,
    .delivery_token_set = l_delivery_token_set,
    .delivery_token_check = l_delivery_token_check,
    .mls_key_packages_put = l_mls_key_packages_put,
    .mls_key_package_claim = l_mls_key_package_claim,
    .mls_group_get = l_mls_group_get,
    .mls_commit = l_mls_commit,
    .mls_leave = l_mls_leave,
    .mls_commits_since = l_mls_commits_since,
    .mls_welcome_put = l_mls_welcome_put,
    .mls_welcome_get = l_mls_welcome_get,
    .mls_welcome_drop = l_mls_welcome_drop,
    .mls_groups_of_device = l_mls_groups_of_device,
};

/* Logs the device set of every account that has approved devices and no leaf yet. */
static msv_err backfill_log(struct sqlite_store *s)
{
    sqlite3_stmt *st = NULL;
    uint64_t ids[64];
    size_t n;
    msv_err err;

    do {
        n = 0;
        err = prepare(s,
                      "SELECT a.id FROM accounts a WHERE EXISTS (SELECT 1 FROM devices d WHERE "
                      "d.account_id = a.id AND d.approved = 1) AND NOT EXISTS (SELECT 1 FROM "
                      "kt_log k WHERE k.handle = a.handle) LIMIT 64;",
                      &st);
        if (err != MSV_OK)
            return err;
        while (n < 64 && sqlite3_step(st) == SQLITE_ROW)
            ids[n++] = (uint64_t)sqlite3_column_int64(st, 0);
        release(s, st);
        err = n > 0 ? begin(s) : MSV_OK;
        for (size_t i = 0; err == MSV_OK && i < n; i++)
            err = kt_append_locked(s, ids[i], msv_wall_ms());
        if (n > 0)
            err = finish(s, err);
    } while (err == MSV_OK && n == 64);
    return err;
}

void msv_store_sqlite_tune(void)
{
    /* without memory statistics SQLite's allocator takes no global mutex at every call */
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

msv_err msv_store_open_sqlite(const char *path, struct msv_store **out)
{
    struct sqlite_store *s = calloc(1, sizeof(*s));
    struct msv_store *store = calloc(1, sizeof(*store));
    msv_err err = MSV_ERR_NOMEM;

    if (s == NULL || store == NULL)
        goto fail;
    pthread_mutex_init(&s->lock, NULL);
    /* the workers and their committer threads call in turn (under s->lock), so the connection
     * needs no mutex of its own (SQLITE_OPEN_NOMUTEX: about 5% of missived's CPU under load
     * went to taking and releasing it); a library built single-threaded (SQLITE_THREADSAFE=0)
     * would still share its global state between connections unguarded */
    err = MSV_ERR_UNSUPPORTED;
    if (sqlite3_threadsafe() == 0)
        goto fail;
    err = msv_sql_open(path, migrations, sizeof(migrations) / sizeof(migrations[0]),
                       SQLITE_OPEN_NOMUTEX, &s->db);
    if (err != MSV_OK)
        goto fail;
    sqlite3_extended_result_codes(s->db, 0);
    /* what is deleted (a deleted account, acknowledged envelopes) is zeroed in the file too */
    err = msv_sql_exec(s->db, "PRAGMA secure_delete = ON;");
    if (err == MSV_OK)
        err = backfill_log(s);
    if (err != MSV_OK)
        goto fail;
    store->ops = &sqlite_ops;
    store->impl = s;
    *out = store;
    return MSV_OK;
fail:
    sqlite_close(s);
    free(store);
    return err;
}

/* Opens path read-only, waiting up to 5 s for a writer's lock. */
static msv_err open_read_only(const char *path, sqlite3 **db)
{
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
        return MSV_ERR_IO;
    }
    sqlite3_busy_timeout(*db, 5000);
    return MSV_OK;
}

/* Runs the backup from src's open read transaction into dst, step by step. */
static msv_err backup_steps(sqlite3 *src, sqlite3 *dst,
                            void (*progress)(void *arg, int done, int total), void *arg)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    int rc = SQLITE_OK;

    if (b == NULL)
        return msv_sql_err(sqlite3_errcode(dst));
    while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
        rc = sqlite3_backup_step(b, MSV_SQLITE_BACKUP_STEP);
        if (progress != NULL)
            progress(arg, sqlite3_backup_pagecount(b) - sqlite3_backup_remaining(b),
                     sqlite3_backup_pagecount(b));
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
            sqlite3_sleep(50);
    }
    if (sqlite3_backup_finish(b) != SQLITE_OK || rc != SQLITE_DONE)
        return rc == SQLITE_NOMEM ? MSV_ERR_NOMEM : MSV_ERR_IO;
    return MSV_OK;
}

msv_err msv_store_sqlite_backup(const char *src_path, const char *dst_path,
                                void (*progress)(void *arg, int done, int total), void *arg)
{
    sqlite3 *src = NULL, *dst = NULL;
    int fd = open(dst_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    msv_err err = fd >= 0 ? open_read_only(src_path, &src) : MSV_ERR_EXISTS;

    if (fd >= 0)
        close(fd);
    if (err == MSV_OK && sqlite3_open_v2(dst_path, &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        err = MSV_ERR_IO;
    /* one snapshot for every step: a write elsewhere would otherwise restart the copy */
    if (err == MSV_OK)
        err = msv_sql_exec(src, "BEGIN; SELECT count(*) FROM sqlite_master;");
    if (err == MSV_OK)
        err = backup_steps(src, dst, progress, arg);
    if (src != NULL)
        (void)msv_sql_exec(src, "COMMIT;");
    if (err == MSV_OK)
        err = msv_sql_exec(dst, "PRAGMA journal_mode = WAL;");
    if (sqlite3_close(dst) != SQLITE_OK && err == MSV_OK)
        err = MSV_ERR_IO;
    sqlite3_close(src);
    if (err != MSV_OK && fd >= 0)
        unlink(dst_path);
    return err;
}

/* The first row's text of sql on db, into out; "" if there is none. */
static msv_err first_text(sqlite3 *db, const char *sql, char *out, size_t len)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(db, sql, &st);
    int rc = err == MSV_OK ? sqlite3_step(st) : SQLITE_ERROR;

    out[0] = '\0';
    if (err == MSV_OK && rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
    else if (err == MSV_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    sqlite3_finalize(st);
    return err;
}

msv_err msv_store_sqlite_check(const char *path, char *why, size_t why_len)
{
    sqlite3 *db = NULL;
    char text[256];
    long version;
    msv_err err = open_read_only(path, &db);

    snprintf(why, why_len, "%s cannot be opened", path);
    if (err == MSV_OK &&
        (err = first_text(db, "PRAGMA integrity_check(1);", text, sizeof(text))) != MSV_OK)
        snprintf(why, why_len, "%s is not a SQLite database", path);
    else if (err == MSV_OK && strcmp(text, "ok") != 0)
        snprintf(why, why_len, "%s fails SQLite's integrity check: %s", path, text);
    if (err == MSV_OK && strcmp(text, "ok") != 0)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK &&
        first_text(db, "SELECT MAX(version) FROM schema_version;", text, sizeof(text)) != MSV_OK) {
        snprintf(why, why_len, "%s is not a missived database", path);
        err = MSV_ERR_PARSE;
    }
    version = err == MSV_OK ? strtol(text, NULL, 10) : 0;
    if (err == MSV_OK &&
        (version < 1 || version > (long)(sizeof(migrations) / sizeof(migrations[0])))) {
        snprintf(why, why_len, "%s has schema version %s, which this missived cannot read", path,
                 text[0] ? text : "(none)");
        err = MSV_ERR_UNSUPPORTED;
    }
    sqlite3_close(db);
    return err;
}

static msv_err read_blob_file(sqlite3_stmt *st, void *row)
{
    struct msv_blob_file *b = row;

    if (sqlite3_column_bytes(st, 0) != MSV_BLOB_ID_LEN || sqlite3_column_bytes(st, 2) != 32)
        return MSV_ERR_PARSE;
    memcpy(b->id, sqlite3_column_blob(st, 0), MSV_BLOB_ID_LEN);
    b->size = (uint64_t)sqlite3_column_int64(st, 1);
    memcpy(b->sha256, sqlite3_column_blob(st, 2), 32);
    b->expires_ms = sqlite3_column_int64(st, 3);
    return MSV_OK;
}

static void drop_blob_files(void *list, size_t n)
{
    (void)n;
    free(list);
}

msv_err msv_store_sqlite_blob_files(const char *path, struct msv_blob_file **out, size_t *n)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    msv_err err = open_read_only(path, &db);

    if (err == MSV_OK)
        err = msv_sql_prepare(
            db, "SELECT id, size, sha256, expires_ms FROM blobs WHERE complete = 1;", &st);
    if (err == MSV_OK)
        err =
            msv_sql_rows(st, sizeof(**out), read_blob_file, drop_blob_files, (void **)out, n, NULL);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return err;
}

int msv_store_sqlite_blob_kept(const char *path, const uint8_t id[MSV_BLOB_ID_LEN], int64_t now_ms)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    msv_err err = open_read_only(path, &db);
    int kept = -1, rc;

    if (err == MSV_OK)
        err = msv_sql_prepare(
            db, "SELECT 1 FROM blobs WHERE id = ? AND complete = 1 AND expires_ms > ?;", &st);
    if (err == MSV_OK) {
        sqlite3_bind_blob(st, 1, id, MSV_BLOB_ID_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now_ms);
        rc = sqlite3_step(st);
        kept = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return kept;
}

msv_err msv_store_sqlite_blob_forget(const char *path, const uint8_t id[MSV_BLOB_ID_LEN])
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    msv_err err = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK
                      ? msv_sql_prepare(db, "DELETE FROM blobs WHERE id = ?;", &st)
                      : MSV_ERR_IO;

    if (err == MSV_OK) {
        sqlite3_bind_blob(st, 1, id, MSV_BLOB_ID_LEN, SQLITE_STATIC);
        err = msv_sql_run(st);
    }
    sqlite3_close(db);
    return err;
}

void msv_store_close(struct msv_store *s)
{
    if (s == NULL)
        return;
    s->ops->close(s->impl);
    free(s);
}

void msv_mls_logged_free(struct msv_mls_logged *l, size_t n)
{
    for (size_t i = 0; l != NULL && i < n; i++)
        free(l[i].delivery);
    free(l);
}

void msv_device_rec_clear(struct msv_device_rec *d)
{
    free(d->identity);
    free(d->push_token);
    d->identity = d->push_token = NULL;
}

void msv_device_list_clear(struct msv_device_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        msv_device_rec_clear(&l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

void msv_kt_recs_free(struct msv_kt_rec *recs, size_t n)
{
    if (recs == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(recs[i].leaf);
        free(recs[i].pub);
    }
    free(recs);
}

void msv_queue_recs_free(struct msv_queue_rec *recs, size_t n)
{
    if (recs == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(recs[i].sender_handle);
        free(recs[i].ciphertext);
    }
    free(recs);
}
