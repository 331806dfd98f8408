/*
 * The PostgreSQL storage backend (libpq), for several missived nodes sharing
 * one database. A small pool of connections serves the callers; statements
 * are prepared once per connection and answer in binary. The tables are the
 * SQLite backend's, in PostgreSQL's types.
 *
 * What several writers change for the contract of store.h:
 *  - queue ids must appear in commit order for each device (a reader that saw
 *    id N has seen every committed envelope of that device below N). A
 *    sequence alone does not give that across concurrent transactions, so an
 *    enqueue first takes a transaction-scoped advisory lock on each recipient
 *    device (in ascending order, so two commits cannot deadlock);
 *  - the transparency log's next index is MAX + 1, taken under one advisory
 *    lock held to the commit, so indexes stay dense and in commit order;
 *  - an account's handles and devices change under its row's lock (lock_account), taken
 *    first by every transaction that reads its handles to write the log (a device change, a
 *    handle added or removed, a deletion), so none writes the log from a stale list; locks
 *    are taken in one order: the account's row, then the log's, then devices';
 *  - migrations run under a session advisory lock, so nodes starting together
 *    migrate once.
 *
 * What a server that fails does to a node is bounded: with a timeout, every
 * connection is made within it (connect_timeout), every statement runs
 * within it on the server (statement_timeout) and is waited for at most that
 * long here (a paused or unreachable server cannot be cancelled), and a
 * connection that timed out, or was left inside a transaction, is closed at
 * once and made again when it is next taken from the pool. A connection the
 * server closed while it sat in the pool (a restart, a terminated backend)
 * is found before use and made again, so no operation fails for it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "missive/kt.h"
#include "missive/util.h"
#include "store/store.h"
#include "util/endian.h"

#define STATEMENTS_MAX 192 /* above the number of statement texts here (about 110) */
#define PARAMS_MAX 12      /* the most one statement binds is 9 (queue_put) */
/*
 * Advisory locks: a device's id (the bigint key space) while envelopes for it
 * are enqueued; (19795, 1) while migrating and (19795, 2) while appending to
 * the transparency log (the two-integer space, which never meets the other).
 */

struct pg_conn {
    PGconn *db;                           /* NULL: closed, made again when taken */
    const char *prepared[STATEMENTS_MAX]; /* statement i is named "m<i>" */
    size_t n_prepared;
    unsigned timeout_ms; /* the store's; 0: none */
    int broken;          /* an answer was not waited for: the connection cannot be used */
    int busy;            /* the last failure was a serialization failure or a deadlock */
    struct pg_conn *next_free;
    struct pg_store *store;
};

struct pg_store {
    pthread_mutex_t lock;
    pthread_cond_t freed;  /* on CLOCK_MONOTONIC */
    unsigned pool_wait_ms; /* the longest wait for a free connection; 0: no bound */
    char *conninfo;
    unsigned timeout_ms;
    char connect_timeout[16], options[48]; /* libpq parameters derived from timeout_ms */
    struct pg_conn *conns;
    size_t n_conns;
    struct pg_conn *free_list;
    msv_kt_labeler labeler; /* kt_set_labeler: the log's appends label their entries */
    void *labeler_ctx;
    msv_store_fault_fn fault; /* set_fault_hook: told of the database's failures */
    void *fault_ctx;
};

/* The parameters of one statement: integers as text, bytes in binary. */
struct args {
    int n;
    const char *v[PARAMS_MAX];
    int len[PARAMS_MAX];
    int fmt[PARAMS_MAX];
    char num[PARAMS_MAX][24];
};

/* A statement binding more than PARAMS_MAX parameters is this file's mistake: stop at once. */
static void a_room(const struct args *a)
{
    if (a->n >= PARAMS_MAX) {
        fprintf(stderr, "missive store: a PostgreSQL statement binds more than %d parameters\n",
                PARAMS_MAX);
        abort();
    }
}

static void a_i64(struct args *a, int64_t v)
{
    a_room(a);
    snprintf(a->num[a->n], sizeof(a->num[a->n]), "%lld", (long long)v);
    a->v[a->n] = a->num[a->n];
    a->len[a->n] = 0;
    a->fmt[a->n++] = 0;
}

static void a_text(struct args *a, const char *s)
{
    a_room(a);
    a->v[a->n] = s;
    a->len[a->n] = 0;
    a->fmt[a->n++] = 0;
}

static void a_bytes(struct args *a, const void *p, size_t n)
{
    a_room(a);
    a->v[a->n] = n > 0 ? p : "";
    a->len[a->n] = (int)n;
    a->fmt[a->n++] = 1;
}

/* The kind of failure SQLSTATE state is (PostgreSQL's appendix A, "Error Codes"). */
static enum msv_store_fault fault_kind(const char *state)
{
    if (state[0] == '\0' || strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return MSV_STORE_FAULT_UNAVAILABLE; /* connection exception, shutdown, cannot connect */
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0 ||
        strcmp(state, "57014") == 0)
        return MSV_STORE_FAULT_BUSY; /* serialization, deadlock, lock not got, timed out */
    if (strncmp(state, "53", 2) == 0)
        return MSV_STORE_FAULT_FULL; /* disk full, out of memory, too many connections */
    return MSV_STORE_FAULT_OTHER;
}

/* Tells the store's fault hook of a failure (state "" when no SQLSTATE came). */
static void tell_fault(struct pg_conn *c, const char *state, const char *message)
{
    struct pg_store *s = c->store;
    msv_store_fault_fn fn;
    void *ctx;

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    fn = s->fault;
    ctx = s->fault_ctx;
    pthread_mutex_unlock(&s->lock);
    if (fn != NULL)
        fn(ctx, fault_kind(state), state, message != NULL ? message : "");
}

/* The connection failed (no answer, or none in time): the database is out of reach. */
static msv_err conn_err(struct pg_conn *c)
{
    const char *why = c->db != NULL ? PQerrorMessage(c->db) : "no connection";

    tell_fault(c, "", why[0] != '\0' ? why : "no answer in time");
    return MSV_ERR_IO;
}

/* Maps a failed result to msv_err: constraint violations (SQLSTATE class 23) are EXISTS. */
static msv_err state_err(const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    if (r == NULL)
        return MSV_ERR_NOMEM;
    if (state != NULL && strncmp(state, "23", 2) == 0)
        return MSV_ERR_EXISTS;
    if (state != NULL && strcmp(state, "54000") == 0)
        return MSV_ERR_TOO_BIG;
    return MSV_ERR_IO;
}

/*
 * state_err, and an IO failure is told to the fault hook with its SQLSTATE and words
 * (c->busy marks what running the transaction again may cure).
 */
static msv_err result_err(struct pg_conn *c, const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    msv_err err = state_err(r);

    if (err != MSV_ERR_IO)
        return err;
    if (state != NULL && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0))
        c->busy = 1;
    tell_fault(c, state != NULL ? state : "", PQresultErrorMessage(r));
    return err;
}

/*
 * The result of what was just sent, waited for at most the connection's
 * timeout (caller PQclear()s it); NULL, with the connection marked broken,
 * if it did not come or the connection failed.
 */
static PGresult *answer(struct pg_conn *c)
{
    int64_t deadline = msv_mono_ms() + (int64_t)c->timeout_ms;
    PGresult *r, *last = NULL;

    while (PQisBusy(c->db)) {
        struct pollfd p = {PQsocket(c->db), POLLIN, 0};
        int64_t left = deadline - msv_mono_ms();

        if (c->timeout_ms > 0 && left <= 0) {
            c->broken = 1;
            return NULL;
        }
        if ((poll(&p, 1, c->timeout_ms > 0 ? (int)left : -1) < 0 && errno != EINTR) ||
            !PQconsumeInput(c->db)) {
            c->broken = 1;
            return NULL;
        }
    }
    while ((r = PQgetResult(c->db)) != NULL) {
        PQclear(last);
        last = r;
    }
    return last;
}

/*
 * Runs sql (a string literal: its address names the prepared statement) with
 * a's parameters. *out, if not NULL, gets the result (caller PQclear()s it).
 */
static msv_err query(struct pg_conn *c, const char *sql, const struct args *a, PGresult **out)
{
    static const struct args none;
    PGresult *r;
    char name[16];
    size_t i;
    msv_err err;

    if (a == NULL)
        a = &none;
    for (i = 0; i < c->n_prepared && c->prepared[i] != sql; i++)
        ;
    if (i == STATEMENTS_MAX)
        return MSV_ERR_INVALID; /* more statement texts than the cache holds: a build error */
    snprintf(name, sizeof(name), "m%zu", i);
    if (c->db == NULL || c->broken || PQstatus(c->db) != CONNECTION_OK)
        return conn_err(c);
    if (i == c->n_prepared) {
        r = PQsendPrepare(c->db, name, sql, a->n, NULL) ? answer(c) : NULL;
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            err = r != NULL ? result_err(c, r) : conn_err(c);
            PQclear(r);
            return err;
        }
        PQclear(r);
        c->prepared[c->n_prepared++] = sql;
    }
    r = PQsendQueryPrepared(c->db, name, a->n, a->v, a->len, a->fmt, 1) ? answer(c) : NULL;
    if (r == NULL)
        return conn_err(c);
    switch (PQresultStatus(r)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
        if (out != NULL)
            *out = r;
        else
            PQclear(r);
        return MSV_OK;
    default:
        err = result_err(c, r);
        PQclear(r);
        return err;
    }
}

/* A statement whose outcome is only success or failure. */
static msv_err run(struct pg_conn *c, const char *sql, const struct args *a)
{
    return query(c, sql, a, NULL);
}

/* How many rows an INSERT, UPDATE or DELETE changed (from its result, which it clears). */
static size_t changed(PGresult *r)
{
    size_t n = (size_t)strtoull(PQcmdTuples(r), NULL, 10);

    PQclear(r);
    return n;
}

/* A statement that changes rows: *n counts them. */
static msv_err run_count(struct pg_conn *c, const char *sql, const struct args *a, size_t *n)
{
    PGresult *r = NULL;
    msv_err err = query(c, sql, a, &r);

    if (err == MSV_OK)
        *n = changed(r);
    return err;
}

/* ---- columns, in binary ------------------------------------------------------------ */

static int64_t col_i64(const PGresult *r, int row, int col)
{
    const uint8_t *p = (const uint8_t *)PQgetvalue(r, row, col);

    switch (PQgetlength(r, row, col)) {
    case 8:
        return (int64_t)msv_get_u64be(p);
    case 4:
        return (int32_t)msv_get_u32be(p);
    case 2:
        return (int16_t)((p[0] << 8) | p[1]);
    case 1:
        return p[0]; /* a boolean */
    default:
        return 0; /* NULL */
    }
}

static size_t col_len(const PGresult *r, int row, int col)
{
    return (size_t)PQgetlength(r, row, col);
}

static const uint8_t *col_ptr(const PGresult *r, int row, int col)
{
    return (const uint8_t *)PQgetvalue(r, row, col);
}

static uint8_t *col_bytes(const PGresult *r, int row, int col, size_t *len)
{
    uint8_t *p;

    *len = col_len(r, row, col);
    if ((p = malloc(*len ? *len : 1)) != NULL)
        memcpy(p, col_ptr(r, row, col), *len);
    return p;
}

static char *col_text(const PGresult *r, int row, int col)
{
    size_t len = col_len(r, row, col);
    char *p = malloc(len + 1);

    if (p != NULL) {
        memcpy(p, col_ptr(r, row, col), len);
        p[len] = '\0';
    }
    return p;
}

/* Copies a fixed-size byte column; 0 if it has another size. */
static int col_fixed(const PGresult *r, int row, int col, void *out, size_t n)
{
    if (col_len(r, row, col) != n)
        return 0;
    memcpy(out, col_ptr(r, row, col), n);
    return 1;
}

/* ---- the pool ----------------------------------------------------------------------- */

static void quiet_notice(void *arg, const char *message);

/* A new session (nothing prepared) with the store's timeouts; its status says if it failed. */
static void connect_conn(struct pg_store *s, struct pg_conn *c)
{
    /* dbname last: what the operator's connection string sets wins over the defaults */
    const char *keys[] = {"connect_timeout", "options", "dbname", NULL};
    const char *values[] = {s->connect_timeout, s->options, s->conninfo, NULL};
    int first = s->timeout_ms > 0 ? 0 : 2;

    c->db = PQconnectdbParams(keys + first, values + first, 1);
    c->n_prepared = 0;
    c->broken = 0;
    c->timeout_ms = s->timeout_ms;
    c->store = s;
    if (c->db != NULL)
        PQsetNoticeProcessor(c->db, quiet_notice, NULL);
}

/*
 * 1 if c cannot serve: closed, failed, or closed by the server while it sat in the
 * pool. An idle connection has nothing to read unless the server ended it (a restart,
 * a terminated backend): that is seen without a round trip.
 */
static int is_stale(const struct pg_conn *c)
{
    struct pollfd p = {c->db != NULL ? PQsocket(c->db) : -1, POLLIN, 0};

    if (c->db == NULL || PQstatus(c->db) != CONNECTION_OK || p.fd < 0)
        return 1;
    return poll(&p, 1, 0) != 0;
}

/* The monotonic time ms from now, for pthread_cond_timedwait on the pool's condition. */
static struct timespec deadline_in(unsigned ms)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/*
 * A connection of the pool, waited for at most pool_wait_ms: NULL (told to the fault hook as
 * MSV_STORE_FAULT_POOL) if none came free by then, so that a caller on an event loop answers
 * "busy, try again" instead of stopping every connection of its worker behind a slow database.
 */
static struct pg_conn *acquire(struct pg_store *s)
{
    struct timespec until = deadline_in(s->pool_wait_ms);
    struct pg_conn *c;
    msv_store_fault_fn fn = NULL;
    void *ctx = NULL;

    pthread_mutex_lock(&s->lock);
    while (s->free_list == NULL) {
        if (s->pool_wait_ms == 0)
            pthread_cond_wait(&s->freed, &s->lock);
        else if (pthread_cond_timedwait(&s->freed, &s->lock, &until) != 0 && s->free_list == NULL)
            break;
    }
    c = s->free_list;
    if (c != NULL)
        s->free_list = c->next_free;
    else {
        fn = s->fault;
        ctx = s->fault_ctx;
    }
    pthread_mutex_unlock(&s->lock);
    if (c == NULL) {
        if (fn != NULL)
            fn(ctx, MSV_STORE_FAULT_POOL, "", "no connection of the pool came free in time");
        return NULL;
    }
    if (is_stale(c)) {
        /* the server restarted or the network broke: a new session */
        PQfinish(c->db);
        connect_conn(s, c);
    }
    return c;
}

static void give_back(struct pg_store *s, struct pg_conn *c)
{
    /* never hand on a connection inside a transaction or with an answer outstanding: closing
     * it ends the transaction (and its locks) on the server */
    if (c->db != NULL && (c->broken || PQtransactionStatus(c->db) != PQTRANS_IDLE)) {
        PQfinish(c->db);
        c->db = NULL;
    }
    pthread_mutex_lock(&s->lock);
    c->next_free = s->free_list;
    s->free_list = c;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}

static msv_err begin(struct pg_conn *c)
{
    return run(c, "BEGIN;", NULL);
}

/* Commits if err is MSV_OK, else rolls back; returns the first error. */
static msv_err finish(struct pg_conn *c, msv_err err)
{
    if (err == MSV_OK && (err = run(c, "COMMIT;", NULL)) == MSV_OK)
        return MSV_OK;
    (void)run(c, "ROLLBACK;", NULL);
    return err;
}

/* One statement (or several that may commit apart): a connection from the pool. */
#define POOLED(call)                        \
    do {                                    \
        struct pg_conn *c_ = acquire(impl); \
        msv_err err_;                       \
        if (c_ == NULL)                     \
            return MSV_ERR_IO;              \
        err_ = (call);                      \
        give_back(impl, c_);                \
        return err_;                        \
    } while (0)

/* Several statements: one transaction, run again (TRIES in all) when a serialization
 * failure or a deadlock ended it, which the database rolled back whole. */
#define TRIES 3
#define TRANSACTION(call)                                      \
    do {                                                       \
        struct pg_conn *c_ = acquire(impl);                    \
        msv_err err_ = MSV_ERR_IO;                             \
        if (c_ == NULL)                                        \
            return MSV_ERR_IO;                                 \
        for (int try_ = 0; try_ < TRIES; try_++) {             \
            c_->busy = 0;                                      \
            err_ = begin(c_);                                  \
            if (err_ == MSV_OK)                                \
                err_ = finish(c_, (call));                     \
            if (err_ != MSV_ERR_IO || !c_->busy || c_->broken) \
                break;                                         \
        }                                                      \
        give_back(impl, c_);                                   \
        return err_;                                           \
    } while (0)

/* ---- schema ------------------------------------------------------------------------- */

/*
 * The schema of store.h's MSV_STORE_SCHEMA_VERSION in one step: a new
 * database starts at the current version. A database made by an older
 * missived (PG_SCHEMA_FIRST, when this backend began, or later) is brought
 * up by upgrades[], which take version PG_SCHEMA_FIRST + i to + i + 1.
 */
#define PG_SCHEMA_FIRST 6
/* Approval records of devices (docs/transparency.md, "Signed device lists"). */
#define DEVICE_APPROVALS_SCHEMA             \
    "CREATE TABLE device_approvals ("       \
    "  device_id BIGINT PRIMARY KEY,"       \
    "  account_id BIGINT NOT NULL,"         \
    "  suite INTEGER NOT NULL,"             \
    "  identity BYTEA NOT NULL,"            \
    "  kind INTEGER NOT NULL,"              \
    "  approver BIGINT NOT NULL DEFAULT 0," \
    "  signature BYTEA);"                   \
    "CREATE INDEX device_approvals_by_account ON device_approvals(account_id);"

/* The key directory's labels beside the log (docs/transparency.md, "The tree stored"). */
#define KT_LABELS_SCHEMA        \
    "CREATE TABLE kt_labels ("  \
    "  idx BIGINT PRIMARY KEY," \
    "  label BYTEA NOT NULL);"
/*
 * What waits for each device, kept by statement triggers on every path that adds to or takes
 * from the queue, so that a send checks the recipients' queue caps without scanning. Counter
 * rows change in ascending device order within a statement; the callers that change several
 * devices' queues in one transaction take those devices' advisory locks first (queue_commit,
 * queue_expire), so two of them cannot deadlock on the counters.
 */
#define QUEUE_USAGE_SCHEMA                                                                     \
    "CREATE TABLE queue_usage ("                                                               \
    "  device_id BIGINT PRIMARY KEY,"                                                          \
    "  envelopes BIGINT NOT NULL,"                                                             \
    "  bytes BIGINT NOT NULL);"                                                                \
    "CREATE FUNCTION queue_usage_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"           \
    "  INSERT INTO queue_usage SELECT device_id, COUNT(*), SUM(octet_length(ciphertext))"      \
    "  FROM added GROUP BY device_id ORDER BY device_id ON CONFLICT (device_id) DO UPDATE SET" \
    "  envelopes = queue_usage.envelopes + excluded.envelopes,"                                \
    "  bytes = queue_usage.bytes + excluded.bytes; RETURN NULL; END $$;"                       \
    "CREATE FUNCTION queue_usage_sub() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"           \
    "  INSERT INTO queue_usage SELECT device_id, -COUNT(*), -SUM(octet_length(ciphertext))"    \
    "  FROM gone GROUP BY device_id ORDER BY device_id ON CONFLICT (device_id) DO UPDATE SET"  \
    "  envelopes = queue_usage.envelopes + excluded.envelopes,"                                \
    "  bytes = queue_usage.bytes + excluded.bytes; RETURN NULL; END $$;"                       \
    "CREATE TRIGGER queue_usage_in AFTER INSERT ON queue REFERENCING NEW TABLE AS added"       \
    "  FOR EACH STATEMENT EXECUTE FUNCTION queue_usage_add();"                                 \
    "CREATE TRIGGER queue_usage_out AFTER DELETE ON queue REFERENCING OLD TABLE AS gone"       \
    "  FOR EACH STATEMENT EXECUTE FUNCTION queue_usage_sub();"

/*
 * A group's copies of one message share its body, stored once (queue_bodies); each copy's row
 * names it (body_id) and counts its length (body_len) in its device's usage. A body goes with
 * its last copy (refs, taken down by a statement trigger, which a delete of no shared copy
 * leaves at one look at what it deleted): the bodies a statement touches are locked in
 * ascending order first, so that two deletes of copies cannot deadlock on them.
 */
#define QUEUE_BODIES_SCHEMA                                                                     \
    "CREATE TABLE queue_bodies ("                                                               \
    "  id BIGSERIAL PRIMARY KEY,"                                                               \
    "  body BYTEA NOT NULL,"                                                                    \
    "  refs BIGINT NOT NULL);"                                                                  \
    "ALTER TABLE queue ADD COLUMN body_id BIGINT;"                                              \
    "ALTER TABLE queue ADD COLUMN body_len BIGINT NOT NULL DEFAULT 0;"                          \
    "CREATE OR REPLACE FUNCTION queue_usage_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN" \
    "  INSERT INTO queue_usage SELECT device_id, COUNT(*),"                                     \
    "  SUM(octet_length(ciphertext) + body_len) FROM added GROUP BY device_id"                  \
    "  ORDER BY device_id ON CONFLICT (device_id) DO UPDATE SET"                                \
    "  envelopes = queue_usage.envelopes + excluded.envelopes,"                                 \
    "  bytes = queue_usage.bytes + excluded.bytes; RETURN NULL; END $$;"                        \
    "CREATE OR REPLACE FUNCTION queue_usage_sub() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN" \
    "  INSERT INTO queue_usage SELECT device_id, -COUNT(*),"                                    \
    "  -SUM(octet_length(ciphertext) + body_len) FROM gone GROUP BY device_id"                  \
    "  ORDER BY device_id ON CONFLICT (device_id) DO UPDATE SET"                                \
    "  envelopes = queue_usage.envelopes + excluded.envelopes,"                                 \
    "  bytes = queue_usage.bytes + excluded.bytes; RETURN NULL; END $$;"                        \
    "CREATE FUNCTION queue_bodies_sub() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"           \
    "  IF NOT EXISTS (SELECT 1 FROM gone WHERE body_id IS NOT NULL) THEN RETURN NULL; END IF;"  \
    "  PERFORM 1 FROM queue_bodies WHERE id IN (SELECT body_id FROM gone) ORDER BY id"          \
    "  FOR UPDATE;"                                                                             \
    "  UPDATE queue_bodies b SET refs = b.refs - g.n FROM (SELECT body_id, COUNT(*) AS n"       \
    "  FROM gone WHERE body_id IS NOT NULL GROUP BY body_id) AS g WHERE b.id = g.body_id;"      \
    "  DELETE FROM queue_bodies WHERE refs <= 0 AND id IN (SELECT body_id FROM gone);"          \
    "  RETURN NULL; END $$;"                                                                    \
    "CREATE TRIGGER queue_bodies_out AFTER DELETE ON queue REFERENCING OLD TABLE AS gone"       \
    "  FOR EACH STATEMENT EXECUTE FUNCTION queue_bodies_sub();"

/* Abuse reports (missive report; missive-admin reports). */
#define REPORTS_SCHEMA               \
    "CREATE TABLE reports ("         \
    "  id BIGSERIAL PRIMARY KEY,"    \
    "  reporter_id BIGINT NOT NULL," \
    "  reported_id BIGINT NOT NULL," \
    "  reason TEXT NOT NULL,"        \
    "  text TEXT NOT NULL,"          \
    "  created_ms BIGINT NOT NULL,"  \
    "  state TEXT NOT NULL);"        \
    "CREATE INDEX reports_by_reporter ON reports(reporter_id, created_ms);"

/* Registration invites (missive-admin invites), by the hash of their code. */
#define INVITES_SCHEMA                   \
    "CREATE TABLE invites ("             \
    "  id BIGSERIAL PRIMARY KEY,"        \
    "  code_hash BYTEA NOT NULL UNIQUE," \
    "  note TEXT NOT NULL,"              \
    "  uses_left BIGINT NOT NULL,"       \
    "  used BIGINT NOT NULL DEFAULT 0,"  \
    "  created_ms BIGINT NOT NULL,"      \
    "  expires_ms BIGINT NOT NULL,"      \
    "  revoked BOOLEAN NOT NULL DEFAULT FALSE);"

/* Sends refused because a device's queue was full, until its account asks (account usage). */
#define KEM_PREKEYS_SCHEMA            \
    "CREATE TABLE kem_prekeys ("      \
    "  device_id BIGINT NOT NULL,"    \
    "  key_id BIGINT NOT NULL,"       \
    "  last_resort INTEGER NOT NULL," \
    "  pk BYTEA NOT NULL,"            \
    "  sig BYTEA NOT NULL,"           \
    "  PRIMARY KEY (device_id, last_resort, key_id));"
#define QUEUE_REFUSALS_SCHEMA         \
    "CREATE TABLE queue_refusals ("   \
    "  device_id BIGINT PRIMARY KEY," \
    "  refused BIGINT NOT NULL);"

/* Every handle of every account, the first one (accounts.handle) too (docs/missived.md). */
#define ACCOUNT_HANDLES_SCHEMA       \
    "CREATE TABLE account_handles (" \
    "  handle TEXT PRIMARY KEY,"     \
    "  account_id BIGINT NOT NULL,"  \
    "  added_ms BIGINT NOT NULL);"   \
    "CREATE INDEX account_handles_by_account ON account_handles(account_id, added_ms);"

/* When the account's username last changed (at most once per [directory] username_interval_s). */
/* The MLS delivery service: KeyPackages (opaque), groups' epochs, their member devices. */
#define MLS_SCHEMA                                                                             \
    "CREATE TABLE mls_key_packages ("                                                          \
    "  id BIGSERIAL PRIMARY KEY,"                                                              \
    "  device_id BIGINT NOT NULL,"                                                             \
    "  last_resort INTEGER NOT NULL,"                                                          \
    "  kp BYTEA NOT NULL);"                                                                    \
    "CREATE INDEX mls_key_packages_by_device ON mls_key_packages(device_id, last_resort, id);" \
    "CREATE TABLE mls_groups ("                                                                \
    "  group_id BYTEA PRIMARY KEY,"                                                            \
    "  epoch BIGINT NOT NULL);"                                                                \
    "CREATE TABLE mls_members ("                                                               \
    "  group_id BYTEA NOT NULL,"                                                               \
    "  device_id BIGINT NOT NULL,"                                                             \
    "  PRIMARY KEY (group_id, device_id));"                                                    \
    "CREATE INDEX mls_members_by_device ON mls_members(device_id);"                            \
    "CREATE TABLE mls_claims ("                                                                \
    "  id BIGSERIAL PRIMARY KEY,"                                                              \
    "  account_id BIGINT NOT NULL,"                                                            \
    "  device_id BIGINT NOT NULL,"                                                             \
    "  expires_ms BIGINT NOT NULL);"                                                           \
    "CREATE INDEX mls_claims_by_account ON mls_claims(account_id, device_id, id);"             \
    "CREATE INDEX mls_claims_by_expiry ON mls_claims(expires_ms);"
/* Each MLS group's commit log, for members that missed a commit, and the epoch from which each
 * member may read it. */
#define MLS_LOG_SCHEMA                                                                  \
    "CREATE TABLE mls_commit_log ("                                                     \
    "  group_id BYTEA NOT NULL,"                                                        \
    "  epoch BIGINT NOT NULL,"                                                          \
    "  account_id BIGINT NOT NULL,"                                                     \
    "  sender_device BIGINT NOT NULL,"                                                  \
    "  expires_ms BIGINT NOT NULL,"                                                     \
    "  delivery BYTEA NOT NULL,"                                                        \
    "  PRIMARY KEY (group_id, epoch));"                                                 \
    "CREATE INDEX mls_commit_log_by_account ON mls_commit_log(account_id, expires_ms);" \
    "CREATE INDEX mls_commit_log_by_expiry ON mls_commit_log(expires_ms);"              \
    "ALTER TABLE mls_members ADD COLUMN since_epoch BIGINT NOT NULL DEFAULT 0;"
/* The device whose commit added each MLS member, and the Welcome kept for a member its queue
 * (full) left out. */
#define MLS_WELCOME_SCHEMA                                                             \
    "ALTER TABLE mls_members ADD COLUMN added_by BIGINT NOT NULL DEFAULT 0;"           \
    "ALTER TABLE mls_members ADD COLUMN welcome_expires_ms BIGINT NOT NULL DEFAULT 0;" \
    "ALTER TABLE mls_members ADD COLUMN welcome BYTEA;"                                \
    "CREATE INDEX mls_members_by_welcome_expiry ON mls_members(welcome_expires_ms)"    \
    " WHERE welcome_expires_ms > 0;"
/* The order in which devices' connections authenticated, on whichever node (connection_order;
 * a sequence, not a table: nothing of it is copied from a SQLite store), and the account whose
 * device added each MLS member of another account (mls_groups_bounded). */
#define CONNECTION_ORDER_SCHEMA         \
    "CREATE SEQUENCE connection_order;" \
    "ALTER TABLE mls_members ADD COLUMN added_by_account BIGINT NOT NULL DEFAULT 0;"
/* The account of each attachment's uploading device, kept after the device is removed, so
 * that the account's quota and deletion count it (0: a device removed before). */
#define BLOB_ACCOUNT_SCHEMA                                                             \
    "ALTER TABLE blobs ADD COLUMN account_id BIGINT NOT NULL DEFAULT 0;"                \
    "UPDATE blobs SET account_id = COALESCE((SELECT account_id FROM devices WHERE id =" \
    " blobs.owner_device), 0);"                                                         \
    "CREATE INDEX blobs_by_account ON blobs(account_id);"
#define USERNAME_SCHEMA \
    "ALTER TABLE accounts ADD COLUMN username_changed_ms BIGINT NOT NULL DEFAULT 0;"

static const char schema[] =
    "CREATE TABLE accounts ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  handle TEXT NOT NULL UNIQUE,"
    "  password_hash TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  suspended BOOLEAN NOT NULL DEFAULT FALSE);"
    "CREATE TABLE codes ("
    "  handle TEXT PRIMARY KEY,"
    "  code_hash BYTEA NOT NULL,"
    "  expires_ms BIGINT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE devices ("
    "  id BIGSERIAL PRIMARY KEY," /* a sequence never gives an id out twice */
    "  account_id BIGINT NOT NULL REFERENCES accounts(id),"
    "  suite INTEGER NOT NULL,"
    "  identity BYTEA NOT NULL,"
    "  push_token BYTEA NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  approved BOOLEAN NOT NULL DEFAULT TRUE,"
    "  delivery_token BYTEA);"
    "CREATE INDEX devices_by_account ON devices(account_id);"
    "CREATE TABLE queue ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  device_id BIGINT NOT NULL,"
    "  sender_device BIGINT NOT NULL,"
    "  sender_handle TEXT NOT NULL,"
    "  suite INTEGER NOT NULL,"
    "  ciphertext BYTEA NOT NULL,"
    "  enqueued_ms BIGINT NOT NULL,"
    "  expires_ms BIGINT NOT NULL);"
    "CREATE INDEX queue_by_device ON queue(device_id, id);"
    "CREATE INDEX queue_by_expiry ON queue(expires_ms);"
    "CREATE TABLE blobs ("
    "  id BYTEA PRIMARY KEY,"
    "  owner_device BIGINT NOT NULL,"
    "  size BIGINT NOT NULL,"
    "  received BIGINT NOT NULL,"
    "  complete BOOLEAN NOT NULL,"
    "  sha256 BYTEA NOT NULL,"
    "  expires_ms BIGINT NOT NULL);"
    "CREATE INDEX blobs_by_expiry ON blobs(expires_ms);"
    "CREATE INDEX blobs_by_owner ON blobs(owner_device);"
    "CREATE TABLE kt_log ("
    "  idx BIGINT PRIMARY KEY,"
    "  handle TEXT NOT NULL,"
    "  leaf BYTEA NOT NULL,"
    "  pub BYTEA);"
    "CREATE INDEX kt_log_by_handle ON kt_log(handle, idx);" KT_LABELS_SCHEMA
    "CREATE TABLE signed_prekeys ("
    "  device_id BIGINT PRIMARY KEY,"
    "  key_id BIGINT NOT NULL,"
    "  pk BYTEA NOT NULL,"
    "  sig BYTEA NOT NULL);"
    "CREATE TABLE one_time_prekeys ("
    "  device_id BIGINT NOT NULL,"
    "  key_id BIGINT NOT NULL,"
    "  pk BYTEA NOT NULL,"
    "  PRIMARY KEY (device_id, key_id));" QUEUE_USAGE_SCHEMA REPORTS_SCHEMA INVITES_SCHEMA
        QUEUE_REFUSALS_SCHEMA ACCOUNT_HANDLES_SCHEMA KEM_PREKEYS_SCHEMA USERNAME_SCHEMA MLS_SCHEMA
            DEVICE_APPROVALS_SCHEMA MLS_LOG_SCHEMA MLS_WELCOME_SCHEMA CONNECTION_ORDER_SCHEMA
                BLOB_ACCOUNT_SCHEMA QUEUE_BODIES_SCHEMA;

static const char *const upgrades[] = {
    /* 6 -> 7: attachment quotas sum a device's attachments */
    "CREATE INDEX blobs_by_owner ON blobs(owner_device);",
    /* 7 -> 8: per-device queue counters, from what is queued now */
    QUEUE_USAGE_SCHEMA "INSERT INTO queue_usage SELECT device_id, COUNT(*),"
                       " SUM(octet_length(ciphertext)) FROM queue GROUP BY device_id;",
    /* 8 -> 9: abuse reports */
    REPORTS_SCHEMA,
    /* 9 -> 10: registration invites */
    INVITES_SCHEMA,
    /* 10 -> 11: sends refused for a full queue */
    QUEUE_REFUSALS_SCHEMA,
    /* 11 -> 12: SQLite's account ids stop coming back (BIGSERIAL's never did) */
    "SELECT 1;",
    /* 12 -> 13: several handles per account */
    ACCOUNT_HANDLES_SCHEMA
    "INSERT INTO account_handles SELECT handle, id, created_ms FROM accounts;",
    /* 13 -> 14: ML-KEM-768 prekeys of devices that speak post-quantum sessions */
    KEM_PREKEYS_SCHEMA,
    /* 14 -> 15: the key directory's labels beside the log; missived fills it at its next start */
    KT_LABELS_SCHEMA,
    /* 15 -> 16: when the account's username last changed */
    USERNAME_SCHEMA,
    /* 16 -> 17: the MLS delivery service */
    MLS_SCHEMA,
    /* 17 -> 18: the version-4 leaf each entry after the log's cut-over publishes */
    "ALTER TABLE kt_log ADD COLUMN pub BYTEA;",
    /* 18 -> 19: approval records; the devices approved before are unsigned */
    DEVICE_APPROVALS_SCHEMA
    "INSERT INTO device_approvals (device_id, account_id, suite, identity, kind) "
    "SELECT id, account_id, suite, identity, 0 FROM devices WHERE approved;",
    /* 19 -> 20: the MLS groups' commit logs */
    MLS_LOG_SCHEMA,
    /* 20 -> 21: who added each MLS member, and the Welcomes kept */
    MLS_WELCOME_SCHEMA,
    /* 21 -> 22: the order of connections across nodes, and who added members of others */
    CONNECTION_ORDER_SCHEMA,
    /* 22 -> 23: each attachment's account */
    BLOB_ACCOUNT_SCHEMA,
    /* 23 -> 24: a group's copies of one message share its body */
    QUEUE_BODIES_SCHEMA,
};
_Static_assert(sizeof(upgrades) / sizeof(upgrades[0]) == MSV_STORE_SCHEMA_VERSION - PG_SCHEMA_FIRST,
               "an upgrade for every schema version");

/* Runs SQL text that may hold several statements (no parameters, not prepared). */
static msv_err exec_script(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    msv_err err = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK
                      ? MSV_OK
                      : state_err(r);

    PQclear(r);
    return err;
}

/* The recorded schema version (0 for an empty database). */
static msv_err schema_version(PGconn *db, long *version)
{
    PGresult *r;
    msv_err err = exec_script(db, "CREATE TABLE IF NOT EXISTS missive_schema (version INTEGER);");

    if (err != MSV_OK)
        return err;
    r = PQexec(db, "SELECT COALESCE(MAX(version), 0) FROM missive_schema;");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        *version = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    else
        err = state_err(r);
    PQclear(r);
    return err;
}

static msv_err set_version(PGconn *db, long version)
{
    char sql[96];

    snprintf(sql, sizeof(sql),
             "DELETE FROM missive_schema; INSERT INTO missive_schema VALUES (%ld);", version);
    return exec_script(db, sql);
}

static msv_err migrate(PGconn *db)
{
    long version = 0;
    msv_err err = exec_script(db, "SELECT pg_advisory_lock(19795, 1);");

    if (err != MSV_OK)
        return err;
    err = schema_version(db, &version);
    if (err == MSV_OK && version > MSV_STORE_SCHEMA_VERSION)
        err = MSV_ERR_UNSUPPORTED; /* written by a newer missived */
    if (err == MSV_OK && version == 0) {
        err = exec_script(db, "BEGIN;");
        if (err == MSV_OK)
            err = exec_script(db, schema);
        if (err == MSV_OK)
            err = set_version(db, MSV_STORE_SCHEMA_VERSION);
        err = exec_script(db, err == MSV_OK ? "COMMIT;" : "ROLLBACK;") == MSV_OK ? err : MSV_ERR_IO;
        version = MSV_STORE_SCHEMA_VERSION;
    }
    if (err == MSV_OK && version < PG_SCHEMA_FIRST)
        err = MSV_ERR_UNSUPPORTED;
    for (; err == MSV_OK && version < MSV_STORE_SCHEMA_VERSION; version++) {
        const char *step = upgrades[version - PG_SCHEMA_FIRST];

        err = exec_script(db, "BEGIN;");
        if (err == MSV_OK)
            err = exec_script(db, step);
        if (err == MSV_OK)
            err = set_version(db, version + 1);
        (void)exec_script(db, err == MSV_OK ? "COMMIT;" : "ROLLBACK;");
    }
    /* the order of connections (connection_order) starts at least at the database's clock in
     * microseconds: a database restored from a backup, its sequence put back, numbers above
     * what it gave before; once as the store opens, under the lock above */
    if (err == MSV_OK)
        err = exec_script(db, "SELECT setval('connection_order', GREATEST(nextval("
                              "'connection_order'), (extract(epoch FROM clock_timestamp()) *"
                              " 1000000)::BIGINT));");
    /* attachments a node of an older missived made during a rolling upgrade (no account
     * written): given their device's account as the store opens (best effort: the next open
     * tries again) */
    if (err == MSV_OK)
        (void)exec_script(db, "UPDATE blobs SET account_id = d.account_id FROM devices d WHERE"
                              " blobs.account_id = 0 AND d.id = blobs.owner_device;");
    (void)exec_script(db, "SELECT pg_advisory_unlock(19795, 1);");
    return err;
}

/* ---- accounts and codes --------------------------------------------------------------- */

/* Records handle as account_id's; MSV_ERR_EXISTS if it is anyone's (the primary key). */
static msv_err handle_insert(struct pg_conn *c, uint64_t account_id, const char *handle,
                             int64_t now_ms)
{
    struct args a = {0};

    a_text(&a, handle);
    a_i64(&a, (int64_t)account_id);
    a_i64(&a, now_ms);
    return run(c, "INSERT INTO account_handles (handle, account_id, added_ms) VALUES ($1, $2, $3);",
               &a);
}

/* In a transaction (p_account_create). */
static msv_err account_create(struct pg_conn *c, const char *handle, const char *password_hash,
                              int64_t now_ms, uint64_t *account_id)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_text(&a, handle);
    a_text(&a, password_hash);
    a_i64(&a, now_ms);
    err = query(c,
                "INSERT INTO accounts (handle, password_hash, created_ms) VALUES ($1, $2, $3) "
                "RETURNING id;",
                &a, &r);
    if (err == MSV_OK) {
        *account_id = (uint64_t)col_i64(r, 0, 0);
        PQclear(r);
    }
    return err == MSV_OK ? handle_insert(c, *account_id, handle, now_ms) : err;
}

static msv_err account_get(struct pg_conn *c, const char *handle, uint64_t *account_id,
                           char **password_hash)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_text(&a, handle);
    err = query(c,
                "SELECT a.id, a.password_hash FROM account_handles h JOIN accounts a ON a.id = "
                "h.account_id WHERE h.handle = $1;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 0) {
        err = MSV_ERR_NOT_FOUND;
    } else {
        *account_id = (uint64_t)col_i64(r, 0, 0);
        if (password_hash != NULL && (*password_hash = col_text(r, 0, 1)) == NULL)
            err = MSV_ERR_NOMEM;
    }
    PQclear(r);
    return err;
}

static msv_err account_handle(struct pg_conn *c, uint64_t account_id, char **handle)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)account_id);
    err = query(c, "SELECT handle FROM accounts WHERE id = $1;", &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 0)
        err = MSV_ERR_NOT_FOUND;
    else if ((*handle = col_text(r, 0, 0)) == NULL)
        err = MSV_ERR_NOMEM;
    PQclear(r);
    return err;
}

static msv_err account_list(struct pg_conn *c, struct msv_account_summary **out, size_t *n)
{
    PGresult *r = NULL;
    struct msv_account_summary *list;
    size_t rows;
    msv_err err =
        query(c,
              "SELECT a.handle, a.created_ms, a.suspended,"
              " (SELECT COUNT(*) FROM devices d WHERE d.account_id = a.id AND d.approved),"
              " (SELECT COUNT(*) FROM devices d WHERE d.account_id = a.id"
              "  AND NOT d.approved),"
              " (SELECT COUNT(*) FROM queue q JOIN devices d ON q.device_id = d.id"
              "  WHERE d.account_id = a.id),"
              " (SELECT COALESCE(SUM(octet_length(q.ciphertext) + q.body_len), 0)::BIGINT"
              "  FROM queue q"
              "  JOIN devices d ON q.device_id = d.id WHERE d.account_id = a.id),"
              " (SELECT COUNT(*) FROM queue q JOIN devices d ON q.sender_device = d.id"
              "  WHERE d.account_id = a.id),"
              " (SELECT COALESCE(SUM(octet_length(q.ciphertext) + q.body_len), 0)::BIGINT"
              "  FROM queue q"
              "  JOIN devices d ON q.sender_device = d.id WHERE d.account_id = a.id),"
              " (SELECT COALESCE(SUM(b.size), 0)::BIGINT FROM blobs b WHERE b.account_id = a.id)"
              " FROM accounts a ORDER BY a.handle;",
              NULL, &r);

    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    list = calloc(rows ? rows : 1, sizeof(*list));
    for (size_t i = 0; list != NULL && i < rows; i++) {
        list[i] = (struct msv_account_summary){.handle = col_text(r, (int)i, 0),
                                               .created_ms = col_i64(r, (int)i, 1),
                                               .suspended = (int)col_i64(r, (int)i, 2),
                                               .devices = (uint64_t)col_i64(r, (int)i, 3),
                                               .pending = (uint64_t)col_i64(r, (int)i, 4),
                                               .queued = (uint64_t)col_i64(r, (int)i, 5),
                                               .queued_bytes = (uint64_t)col_i64(r, (int)i, 6),
                                               .sending = (uint64_t)col_i64(r, (int)i, 7),
                                               .sending_bytes = (uint64_t)col_i64(r, (int)i, 8),
                                               .attachment_bytes = (uint64_t)col_i64(r, (int)i, 9)};
        if (list[i].handle == NULL)
            err = MSV_ERR_NOMEM;
    }
    PQclear(r);
    if (list == NULL || err != MSV_OK) {
        msv_account_summaries_free(list, rows);
        return MSV_ERR_NOMEM;
    }
    *out = list;
    *n = rows;
    return MSV_OK;
}

static msv_err report_add(struct pg_conn *c, uint64_t reporter_account, const char *reported,
                          const char *reason, const char *text, int64_t now_ms, int64_t since_ms,
                          unsigned max_recent, uint64_t *id)
{
    struct args a = {0};
    PGresult *r = NULL;
    uint64_t other = 0;
    msv_err err;

    a_i64(&a, (int64_t)reporter_account);
    a_text(&a, reported);
    a_text(&a, reason);
    a_text(&a, text);
    a_i64(&a, now_ms);
    a_i64(&a, since_ms);
    a_i64(&a, (int64_t)max_recent);
    err = query(c,
                "INSERT INTO reports (reporter_id, reported_id, reason, text, created_ms, state)"
                " SELECT $1, account_id, $3, $4, $5, 'open' FROM account_handles WHERE handle = $2"
                " AND (SELECT COUNT(*) FROM reports WHERE reporter_id = $1"
                " AND created_ms >= $6) < $7 RETURNING id;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 1)
        *id = (uint64_t)col_i64(r, 0, 0);
    else /* nobody of that handle, or too many of the reporter's lately */
        err = account_get(c, reported, &other, NULL) == MSV_ERR_NOT_FOUND ? MSV_ERR_NOT_FOUND
                                                                          : MSV_ERR_AGAIN;
    PQclear(r);
    return err;
}

#define REPORT_COLUMNS                                                                        \
    "SELECT r.id, a.handle, b.handle, r.reason, r.text, r.created_ms, r.state FROM reports r" \
    " JOIN accounts a ON a.id = r.reporter_id JOIN accounts b ON b.id = r.reported_id"

static msv_err report_rows(PGresult *r, struct msv_report **out, size_t *n)
{
    size_t rows = (size_t)PQntuples(r);
    struct msv_report *list = calloc(rows ? rows : 1, sizeof(*list));
    msv_err err = list ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; list != NULL && i < rows; i++) {
        int row = (int)i;

        list[i] = (struct msv_report){.id = (uint64_t)col_i64(r, row, 0),
                                      .reporter = col_text(r, row, 1),
                                      .reported = col_text(r, row, 2),
                                      .reason = col_text(r, row, 3),
                                      .text = col_text(r, row, 4),
                                      .created_ms = col_i64(r, row, 5),
                                      .state = col_text(r, row, 6)};
        if (!list[i].reporter || !list[i].reported || !list[i].reason || !list[i].text ||
            !list[i].state)
            err = MSV_ERR_NOMEM;
    }
    PQclear(r);
    if (err != MSV_OK) {
        msv_reports_free(list, list ? rows : 0);
        return err;
    }
    *out = list;
    *n = rows;
    return MSV_OK;
}

static msv_err report_list(struct pg_conn *c, size_t limit, struct msv_report **out, size_t *n)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)limit);
    err = query(c, REPORT_COLUMNS " ORDER BY r.id DESC LIMIT $1;", &a, &r);
    return err == MSV_OK ? report_rows(r, out, n) : err;
}

static msv_err report_get(struct pg_conn *c, uint64_t id, struct msv_report **out)
{
    struct args a = {0};
    PGresult *r = NULL;
    size_t n = 0;
    msv_err err;

    a_i64(&a, (int64_t)id);
    err = query(c, REPORT_COLUMNS " WHERE r.id = $1;", &a, &r);
    if (err == MSV_OK)
        err = report_rows(r, out, &n);
    if (err == MSV_OK && n == 0) {
        msv_reports_free(*out, 0);
        *out = NULL;
        err = MSV_ERR_NOT_FOUND;
    }
    return err;
}

static msv_err report_set_state(struct pg_conn *c, uint64_t id, const char *state)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_text(&a, state);
    a_i64(&a, (int64_t)id);
    err = run_count(c, "UPDATE reports SET state = $1 WHERE id = $2;", &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err invite_add(struct pg_conn *c, const uint8_t hash[32], const char *note,
                          uint32_t uses, int64_t now_ms, int64_t expires_ms, uint64_t *id)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_bytes(&a, hash, 32);
    a_text(&a, note);
    a_i64(&a, uses);
    a_i64(&a, now_ms);
    a_i64(&a, expires_ms);
    err = query(c,
                "INSERT INTO invites (code_hash, note, uses_left, created_ms, expires_ms)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id;",
                &a, &r);
    if (err == MSV_OK)
        *id = (uint64_t)col_i64(r, 0, 0);
    PQclear(r);
    return err;
}

static msv_err invite_list(struct pg_conn *c, struct msv_invite **out, size_t *n)
{
    PGresult *r = NULL;
    struct msv_invite *v;
    size_t rows;
    msv_err err = query(c,
                        "SELECT id, note, uses_left, used, created_ms, expires_ms, revoked"
                        " FROM invites ORDER BY id;",
                        NULL, &r);

    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    v = calloc(rows ? rows : 1, sizeof(*v));
    for (size_t i = 0; v != NULL && i < rows; i++) {
        int row = (int)i;

        v[i] = (struct msv_invite){.id = (uint64_t)col_i64(r, row, 0),
                                   .note = col_text(r, row, 1),
                                   .uses_left = (uint32_t)col_i64(r, row, 2),
                                   .used = (uint32_t)col_i64(r, row, 3),
                                   .created_ms = col_i64(r, row, 4),
                                   .expires_ms = col_i64(r, row, 5),
                                   .revoked = (int)col_i64(r, row, 6)};
        if (v[i].note == NULL)
            err = MSV_ERR_NOMEM;
    }
    PQclear(r);
    if (v == NULL || err != MSV_OK) {
        msv_invites_free(v, v ? rows : 0);
        return MSV_ERR_NOMEM;
    }
    *out = v;
    *n = rows;
    return MSV_OK;
}

static msv_err invite_revoke(struct pg_conn *c, uint64_t id)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_i64(&a, (int64_t)id);
    err = run_count(c, "UPDATE invites SET revoked = TRUE WHERE id = $1;", &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err invite_take(struct pg_conn *c, const uint8_t hash[32], int64_t now_ms, int dry_run)
{
    static const char *const sql[2] = {
        "UPDATE invites SET uses_left = uses_left - 1, used = used + 1 WHERE code_hash = $1"
        " AND NOT revoked AND uses_left > 0 AND (expires_ms = 0 OR expires_ms > $2);",
        "SELECT 1 FROM invites WHERE code_hash = $1"
        " AND NOT revoked AND uses_left > 0 AND (expires_ms = 0 OR expires_ms > $2);",
    };
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_bytes(&a, hash, 32);
    a_i64(&a, now_ms);
    err = run_count(c, sql[dry_run != 0], &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err invite_give_back(struct pg_conn *c, const uint8_t hash[32])
{
    struct args a = {0};
    size_t n = 0;

    a_bytes(&a, hash, 32);
    return run_count(c,
                     "UPDATE invites SET uses_left = uses_left + 1, used = used - 1"
                     " WHERE code_hash = $1 AND used > 0;",
                     &a, &n);
}

static msv_err account_set_suspended(struct pg_conn *c, const char *handle, int suspended)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_text(&a, suspended ? "t" : "f");
    a_text(&a, handle);
    err = run_count(c,
                    "UPDATE accounts SET suspended = $1 WHERE id = "
                    "(SELECT account_id FROM account_handles WHERE handle = $2);",
                    &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err account_set_password(struct pg_conn *c, uint64_t account_id,
                                    const char *password_hash)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_text(&a, password_hash);
    a_i64(&a, (int64_t)account_id);
    err = run_count(c, "UPDATE accounts SET password_hash = $1 WHERE id = $2;", &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_NOT_FOUND : err;
}

/* One integer column (sql selects it WHERE id = $1) of account_id's row into *v. */
static msv_err account_column(struct pg_conn *c, const char *sql, uint64_t account_id, int64_t *v)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)account_id);
    err = query(c, sql, &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 0)
        err = MSV_ERR_NOT_FOUND;
    else
        *v = col_i64(r, 0, 0);
    PQclear(r);
    return err;
}

static msv_err account_suspended(struct pg_conn *c, uint64_t account_id, int *suspended)
{
    int64_t v = 0;
    msv_err err =
        account_column(c, "SELECT suspended FROM accounts WHERE id = $1;", account_id, &v);

    if (err == MSV_OK)
        *suspended = (int)v;
    return err;
}

/* The stamp read, then written only if it is still the one read: a compare-and-set. */
static msv_err username_stamp(struct pg_conn *c, uint64_t account_id, int64_t now_ms,
                              int64_t interval_ms, int64_t *last_ms)
{
    struct args a = {0};
    size_t n = 0;
    int64_t last = 0;
    msv_err err = account_column(c, "SELECT username_changed_ms FROM accounts WHERE id = $1;",
                                 account_id, &last);

    if (err == MSV_OK)
        *last_ms = last;
    if (err != MSV_OK)
        return err;
    if (interval_ms >= 0 && last > now_ms - interval_ms)
        return MSV_ERR_AGAIN;
    a_i64(&a, now_ms);
    a_i64(&a, (int64_t)account_id);
    a_i64(&a, last);
    err = run_count(c,
                    "UPDATE accounts SET username_changed_ms = $1 WHERE id = $2 AND"
                    " username_changed_ms = $3;",
                    &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_AGAIN : err; /* another stamp came first */
}

static msv_err stats(struct pg_conn *c, struct msv_store_stats *out)
{
    PGresult *r = NULL;
    msv_err err = query(
        c,
        "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM accounts WHERE suspended),"
        " (SELECT COUNT(*) FROM devices WHERE approved),"
        " (SELECT COUNT(*) FROM devices WHERE NOT approved),"
        " (SELECT COUNT(*) FROM queue),"
        " (SELECT COALESCE(SUM(LENGTH(ciphertext)), 0)::BIGINT FROM queue)"
        " + (SELECT COALESCE(SUM(LENGTH(body)), 0)::BIGINT FROM queue_bodies),"
        " (SELECT COALESCE(MIN(enqueued_ms), 0) FROM queue),"
        " (SELECT COUNT(*) FROM blobs), (SELECT COALESCE(SUM(size), 0)::BIGINT FROM blobs),"
        " (SELECT COUNT(*) FROM kt_log), (SELECT COUNT(*) FROM one_time_prekeys),"
        " pg_database_size(current_database());",
        NULL, &r);

    if (err != MSV_OK)
        return err;
    out->accounts = (uint64_t)col_i64(r, 0, 0);
    out->suspended = (uint64_t)col_i64(r, 0, 1);
    out->devices = (uint64_t)col_i64(r, 0, 2);
    out->pending_devices = (uint64_t)col_i64(r, 0, 3);
    out->queued = (uint64_t)col_i64(r, 0, 4);
    out->queued_bytes = (uint64_t)col_i64(r, 0, 5);
    out->oldest_queued_ms = col_i64(r, 0, 6);
    out->blobs = (uint64_t)col_i64(r, 0, 7);
    out->blob_bytes = (uint64_t)col_i64(r, 0, 8);
    out->log_leaves = (uint64_t)col_i64(r, 0, 9);
    out->one_time_prekeys = (uint64_t)col_i64(r, 0, 10);
    out->database_bytes = (uint64_t)col_i64(r, 0, 11);
    PQclear(r);
    return MSV_OK;
}

static msv_err code_put(struct pg_conn *c, const char *handle, const uint8_t hash[32],
                        int64_t now_ms, int64_t expires_ms)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_text(&a, handle);
    a_bytes(&a, hash, 32);
    a_i64(&a, expires_ms);
    a_i64(&a, now_ms);
    err = run_count(c,
                    "INSERT INTO codes (handle, code_hash, expires_ms, attempts) "
                    "VALUES ($1, $2, $3, 0) ON CONFLICT (handle) DO UPDATE SET "
                    "code_hash = excluded.code_hash, expires_ms = excluded.expires_ms, "
                    "attempts = 0 WHERE codes.expires_ms <= $4;",
                    &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_EXISTS : err;
}

static msv_err code_take(struct pg_conn *c, const char *handle, const uint8_t hash[32],
                         int64_t now_ms, unsigned max_attempts)
{
    struct args a = {0};
    PGresult *r = NULL;
    int match, expired;
    int64_t attempts;
    msv_err err;

    a_text(&a, handle);
    err =
        query(c, "SELECT code_hash, expires_ms, attempts FROM codes WHERE handle = $1 FOR UPDATE;",
              &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return MSV_ERR_NOT_FOUND;
    }
    match = col_len(r, 0, 0) == 32 && msv_equal_ct(col_ptr(r, 0, 0), hash, 32);
    expired = col_i64(r, 0, 1) <= now_ms;
    attempts = col_i64(r, 0, 2);
    PQclear(r);
    if (expired || (match && attempts < (int64_t)max_attempts)) {
        err = run(c, "DELETE FROM codes WHERE handle = $1;", &a);
        return err != MSV_OK ? err : expired ? MSV_ERR_NOT_FOUND : MSV_OK;
    }
    err = run(c, "UPDATE codes SET attempts = attempts + 1 WHERE handle = $1;", &a);
    return err != MSV_OK                       ? err
           : attempts >= (int64_t)max_attempts ? MSV_ERR_NOT_FOUND
                                               : MSV_ERR_AUTH;
}

/* ---- the transparency log ------------------------------------------------------------ */

/* Appends the account's approved devices, as they are now, to the log (inside a transaction). */
/* Appends e's leaf as the log's next entry, for handle (under the log's advisory lock). */
/*
 * Labels the entry just appended for handle (inside its transaction, which holds the log's
 * advisory lock): its version is the handle's number of entries, its index the log's last.
 */
static msv_err kt_label_last(struct pg_conn *c, const char *handle)
{
    struct args a = {0}, b = {0};
    PGresult *r = NULL;
    uint8_t label[32];
    int64_t idx = 0, version = 0;
    msv_err err;

    a_text(&a, handle);
    err = query(c, "SELECT MAX(idx), COUNT(*) FROM kt_log WHERE handle = $1;", &a, &r);
    if (err == MSV_OK && (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)))
        err = MSV_ERR_IO;
    if (err == MSV_OK) {
        idx = col_i64(r, 0, 0);
        version = col_i64(r, 0, 1);
    }
    PQclear(r);
    if (err == MSV_OK && (version < 1 || version > UINT32_MAX))
        err = MSV_ERR_INVALID;
    if (err == MSV_OK)
        err = c->store->labeler(c->store->labeler_ctx, handle, (uint32_t)version, label);
    a_i64(&b, idx);
    a_bytes(&b, label, sizeof(label));
    if (err == MSV_OK)
        err = run(c,
                  "INSERT INTO kt_labels (idx, label) VALUES ($1, $2) "
                  "ON CONFLICT (idx) DO UPDATE SET label = EXCLUDED.label;",
                  &b);
    return err;
}

static msv_err kt_insert(struct pg_conn *c, const char *handle, const struct msv_kt_entry *e)
{
    struct args a = {0};
    uint8_t *leaf = NULL;
    size_t len = 0;
    msv_err err = msv_kt_leaf_encode(e, &leaf, &len);

    a_text(&a, handle);
    a_bytes(&a, leaf, len);
    if (err == MSV_OK)
        err = run(c,
                  "INSERT INTO kt_log (idx, handle, leaf) "
                  "VALUES ((SELECT COALESCE(MAX(idx) + 1, 0) FROM kt_log), $1, $2);",
                  &a);
    free(leaf);
    return err == MSV_OK && c->store->labeler != NULL ? kt_label_last(c, handle) : err;
}

/* The account's handles, the first one first (handles_of_account). */
static msv_err handles_of_account(struct pg_conn *c, uint64_t account_id, char ***out, size_t *n)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;
    int rows;

    a_i64(&a, (int64_t)account_id);
    err = query(c,
                "SELECT h.handle FROM account_handles h WHERE h.account_id = $1 ORDER BY "
                "h.handle <> (SELECT handle FROM accounts WHERE id = $1), h.added_ms, h.handle;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    rows = PQntuples(r);
    *n = 0;
    *out = calloc(rows ? (size_t)rows : 1, sizeof(**out));
    for (int i = 0; *out != NULL && i < rows && err == MSV_OK; i++)
        if (((*out)[(*n)++] = col_text(r, i, 0)) == NULL)
            err = MSV_ERR_NOMEM;
    PQclear(r);
    if (*out == NULL)
        err = MSV_ERR_NOMEM;
    else if (err == MSV_OK && rows == 0)
        err = MSV_ERR_NOT_FOUND;
    if (err != MSV_OK) {
        for (size_t i = 0; *out != NULL && i < *n; i++)
            free((*out)[i]);
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return err;
}

static void free_texts(char **list, size_t n)
{
    for (size_t i = 0; list != NULL && i < n; i++)
        free(list[i]);
    free(list);
}

/*
 * Locks account_id's row for the transaction: its handles and its devices change one
 * transaction at a time, and whatever reads its handles to write the log (kt_append, a
 * deletion's tombstones) reads them under this lock. One lock order everywhere: the account's
 * row first (before any row that references it: an insert's foreign key check would take a
 * share lock on it first), then the log's advisory lock, then devices' advisory locks.
 */
static msv_err lock_account(struct pg_conn *c, uint64_t account_id)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)account_id);
    err = query(c, "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE;", &a, &r);
    if (err == MSV_OK && PQntuples(r) == 0)
        err = MSV_ERR_NOT_FOUND;
    PQclear(r);
    return err;
}

/* Rows id, suite, identity, kind, approver, signature as records borrowing from r (max). */
static msv_err get_records(PGresult *r, struct msv_kt_device *out, size_t max, size_t *n)
{
    int rows = PQntuples(r);

    if (rows < 0 || (size_t)rows > max)
        return MSV_ERR_TOO_BIG;
    for (int i = 0; i < rows; i++) {
        struct msv_kt_device *d = &out[i];

        memset(d, 0, sizeof(*d));
        d->device_id = (uint64_t)col_i64(r, i, 0);
        d->suite = (uint32_t)col_i64(r, i, 1);
        d->identity = col_ptr(r, i, 2);
        d->identity_len = col_len(r, i, 2);
        d->approval.kind = (uint8_t)col_i64(r, i, 3);
        d->approval.approver = (uint64_t)col_i64(r, i, 4);
        if (d->approval.kind != MSV_KT_UNSIGNED && !PQgetisnull(r, i, 5)) {
            d->approval.sig = col_ptr(r, i, 5);
            d->approval.sig_len = col_len(r, i, 5);
        }
    }
    *n = (size_t)rows;
    return MSV_OK;
}

/* Forgets the approval records of removed devices that no listed device's chain names. */
static msv_err drop_unused_records(struct pg_conn *c, const struct msv_kt_device *records,
                                   const uint8_t *keep, size_t n)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct args a = {0};

        if (keep[i])
            continue;
        a_i64(&a, (int64_t)records[i].device_id);
        err = run(c, "DELETE FROM device_approvals WHERE device_id = $1;", &a);
    }
    return err;
}

/*
 * The account's approved devices as they are now, as handle's leaf (in a transaction), each with
 * its approval and the chain records of removed approvers (sqlite.c kt_append_handle).
 */
static msv_err kt_append_handle(struct pg_conn *c, uint64_t account_id, const char *handle,
                                int64_t now_ms, size_t max_records)
{
    struct msv_kt_entry *e = calloc(1, sizeof(*e));
    struct msv_kt_device *removed = calloc(2 * MSV_KT_DEVICES_MAX, sizeof(*removed));
    uint8_t keep[2 * MSV_KT_DEVICES_MAX] = {0};
    struct args a = {0};
    PGresult *r = NULL, *kept = NULL;
    size_t n_removed = 0;
    msv_err err = e != NULL && removed != NULL ? MSV_OK : MSV_ERR_NOMEM;

    if (err == MSV_OK)
        err = run(c, "SELECT pg_advisory_xact_lock(19795, 2);", NULL);
    a_i64(&a, (int64_t)account_id);
    if (err == MSV_OK)
        err = query(c,
                    "SELECT d.id, d.suite, d.identity, COALESCE(a.kind, 0), "
                    "COALESCE(a.approver, 0), a.signature FROM devices d LEFT JOIN "
                    "device_approvals a ON a.device_id = d.id WHERE d.account_id = $1 AND "
                    "d.approved ORDER BY d.id;",
                    &a, &r);
    if (err == MSV_OK)
        err = query(c,
                    "SELECT device_id, suite, identity, kind, approver, signature FROM "
                    "device_approvals WHERE account_id = $1 AND device_id NOT IN (SELECT id FROM "
                    "devices WHERE account_id = $1 AND approved) ORDER BY device_id;",
                    &a, &kept);
    if (err == MSV_OK) {
        e->time_ms = now_ms;
        snprintf(e->handle, sizeof(e->handle), "%s", handle);
        /* the results outlive the encoding */
        err = get_records(r, e->devices, MSV_KT_DEVICES_MAX, &e->n_devices);
    }
    if (err == MSV_OK)
        err = get_records(kept, removed, 2 * MSV_KT_DEVICES_MAX, &n_removed);
    if (err == MSV_OK)
        err = msv_kt_devlist_complete(e, removed, n_removed, keep);
    if (err == MSV_OK && e->n_devices + e->n_chain > max_records)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = kt_insert(c, handle, e);
    if (err == MSV_OK)
        err = drop_unused_records(c, removed, keep, n_removed);
    PQclear(r);
    PQclear(kept);
    free(removed);
    free(e);
    return err;
}

/* Every handle of the account gets a leaf of its devices as they are now (in a transaction;
 * under the account's lock, so that no handle added meanwhile misses the change). */
static msv_err kt_append_bounded(struct pg_conn *c, uint64_t account_id, int64_t now_ms,
                                 size_t max_records)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = lock_account(c, account_id);

    if (err == MSV_OK)
        err = handles_of_account(c, account_id, &handles, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = kt_append_handle(c, account_id, handles[i], now_ms, max_records);
    free_texts(handles, n);
    return err;
}

static msv_err kt_append(struct pg_conn *c, uint64_t account_id, int64_t now_ms)
{
    return kt_append_bounded(c, account_id, now_ms, SIZE_MAX);
}

/* The handle's tombstone: a leaf without devices that says its account was deleted. */
static msv_err kt_tombstone(struct pg_conn *c, const char *handle, int64_t now_ms)
{
    struct msv_kt_entry *e = calloc(1, sizeof(*e));
    msv_err err =
        e != NULL ? run(c, "SELECT pg_advisory_xact_lock(19795, 2);", NULL) : MSV_ERR_NOMEM;

    if (err == MSV_OK) {
        e->deleted = 1;
        e->time_ms = now_ms;
        snprintf(e->handle, sizeof(e->handle), "%s", handle);
        err = kt_insert(c, handle, e);
    }
    free(e);
    return err;
}

/* What account_delete hands back: the account's device ids and attachment ids. */
static msv_err account_deleted_read(struct pg_conn *c, struct msv_account_deleted *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;
    int rows;

    a_i64(&a, (int64_t)out->account_id);
    /* in ascending order, before any queue counter changes (see QUEUE_USAGE_SCHEMA) */
    err = query(c,
                "SELECT d, pg_advisory_xact_lock(d) FROM (SELECT id AS d FROM devices"
                " WHERE account_id = $1 ORDER BY id) AS s;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    rows = PQntuples(r);
    out->devices = calloc(rows ? (size_t)rows : 1, sizeof(*out->devices));
    for (int i = 0; out->devices != NULL && i < rows; i++)
        out->devices[out->n_devices++] = (uint64_t)col_i64(r, i, 0);
    PQclear(r);
    if (out->devices == NULL)
        return MSV_ERR_NOMEM;
    err = query(c,
                "SELECT id FROM blobs WHERE account_id = $1 OR owner_device IN (SELECT id FROM"
                " devices WHERE account_id = $1);",
                &a, &r);
    if (err != MSV_OK)
        return err;
    rows = PQntuples(r);
    out->blobs = calloc(rows ? (size_t)rows : 1, sizeof(*out->blobs));
    for (int i = 0; out->blobs != NULL && i < rows; i++) {
        if (col_len(r, i, 0) != MSV_BLOB_ID_LEN)
            continue;
        memcpy(out->blobs[out->n_blobs++], col_ptr(r, i, 0), MSV_BLOB_ID_LEN);
    }
    PQclear(r);
    return out->blobs != NULL ? MSV_OK : MSV_ERR_NOMEM;
}

/*
 * The groups of the devices IN names (a subquery or a list), for their removal: first their
 * rows locked, in one order, after the devices' (as a commit and a leave take a group's row),
 * so that no member comes or goes meanwhile; then, in one statement, those whose every member
 * is among them go with their commit logs. Once empty a group stays empty (a commit needs a
 * member), so its row and its log go with its last member instead of staying for good.
 */
#define MLS_GROUPS_OF(in) "SELECT group_id FROM mls_members WHERE device_id IN (" in ")"
#define MLS_GROUPS_LOCK(in)                                                                    \
    "SELECT 1 FROM mls_groups WHERE group_id IN (" MLS_GROUPS_OF(in) ") ORDER BY group_id FOR" \
                                                                     " UPDATE;"
#define MLS_GROUPS_DROP(in)                                                                        \
    "WITH gone AS (DELETE FROM mls_groups g WHERE g.group_id IN (" MLS_GROUPS_OF(                  \
        in) ") AND NOT EXISTS (SELECT 1 FROM mls_members o WHERE o.group_id = g.group_id AND"      \
            " o.device_id NOT IN (" in ")) RETURNING g.group_id) DELETE FROM mls_commit_log WHERE" \
            " group_id IN (SELECT group_id FROM gone);"

static msv_err account_delete(struct pg_conn *c, const char *handle, int64_t now_ms,
                              struct msv_account_deleted *out)
{
    /* $1: the account; the devices' rows go before the devices themselves */
    static const char *const drops[] = {
        "DELETE FROM queue WHERE device_id IN (SELECT id FROM devices WHERE account_id = $1);",
        "DELETE FROM queue_usage WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = $1);",
        "DELETE FROM signed_prekeys WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = $1);",
        "DELETE FROM one_time_prekeys WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = $1);",
        "DELETE FROM kem_prekeys WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = $1);",
        "DELETE FROM mls_key_packages WHERE device_id IN "
        "(SELECT id FROM devices WHERE account_id = $1);",
        /* their groups' rows (no commit naming a device of the account runs meanwhile: it
         * holds the device's advisory lock, which account_deleted_read took), and those only
         * they were in go, with their logs (MLS_GROUPS_DROP) */
        MLS_GROUPS_LOCK("SELECT id FROM devices WHERE account_id = $1"),
        MLS_GROUPS_DROP("SELECT id FROM devices WHERE account_id = $1"),
        "DELETE FROM mls_members WHERE device_id IN (SELECT id FROM devices WHERE account_id = "
        "$1);",
        "DELETE FROM mls_claims WHERE account_id = $1 OR device_id IN "
        "(SELECT id FROM devices WHERE account_id = $1);",
        "DELETE FROM mls_commit_log WHERE account_id = $1;",
        "DELETE FROM blobs WHERE account_id = $1 OR owner_device IN (SELECT id FROM devices WHERE"
        " account_id = $1);",
        "DELETE FROM reports WHERE reporter_id = $1 OR reported_id = $1;",
        "DELETE FROM devices WHERE account_id = $1;",
        "DELETE FROM device_approvals WHERE account_id = $1;",
        "DELETE FROM account_handles WHERE account_id = $1;",
        "DELETE FROM accounts WHERE id = $1;",
    };
    struct args a = {0};
    char **handles = NULL;
    size_t n_handles = 0;
    msv_err err = account_get(c, handle, &out->account_id, NULL);

    /* the account first: a handle added meanwhile is either in the list or waits for this */
    if (err == MSV_OK)
        err = lock_account(c, out->account_id);
    if (err == MSV_OK)
        err = handles_of_account(c, out->account_id, &handles, &n_handles);
    if (err == MSV_OK)
        err = account_deleted_read(c, out);
    a_i64(&a, (int64_t)out->account_id);
    for (size_t i = 0; err == MSV_OK && i < sizeof(drops) / sizeof(drops[0]); i++)
        err = run(c, drops[i], &a);
    /* every handle of the account: its pending code goes, its tombstone is written */
    for (size_t i = 0; err == MSV_OK && i < n_handles; i++) {
        a.n = 0;
        a_text(&a, handles[i]);
        err = run(c, "DELETE FROM codes WHERE handle = $1;", &a);
        if (err == MSV_OK)
            err = kt_tombstone(c, handles[i], now_ms);
    }
    free_texts(handles, n_handles);
    return err;
}

static msv_err handle_add(struct pg_conn *c, uint64_t account_id, const char *handle, size_t max,
                          int64_t now_ms)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = lock_account(c, account_id);

    if (err == MSV_OK)
        err = handles_of_account(c, account_id, &handles, &n);
    free_texts(handles, n);
    if (err == MSV_OK && n >= max)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = handle_insert(c, account_id, handle, now_ms);
    return err == MSV_OK ? kt_append_handle(c, account_id, handle, now_ms, SIZE_MAX) : err;
}

static msv_err handle_remove(struct pg_conn *c, uint64_t account_id, const char *handle,
                             int64_t now_ms)
{
    struct args a = {0};
    char **handles = NULL;
    size_t n = 0, at = 0;
    msv_err err = lock_account(c, account_id);

    if (err == MSV_OK)
        err = handles_of_account(c, account_id, &handles, &n);
    while (err == MSV_OK && at < n && strcmp(handles[at], handle) != 0)
        at++;
    if (err == MSV_OK && at == n)
        err = MSV_ERR_NOT_FOUND;
    else if (err == MSV_OK && n == 1)
        err = MSV_ERR_INVALID; /* never the last: an account is found by its handles */
    a_text(&a, handle);
    if (err == MSV_OK)
        err = run(c, "DELETE FROM account_handles WHERE handle = $1;", &a);
    /* the first handle goes: the oldest of the others is the account's first from now on */
    if (err == MSV_OK && at == 0) {
        a.n = 0;
        a_text(&a, handles[1]);
        a_i64(&a, (int64_t)account_id);
        err = run(c, "UPDATE accounts SET handle = $1 WHERE id = $2;", &a);
    }
    if (err == MSV_OK)
        err = kt_tombstone(c, handle, now_ms);
    free_texts(handles, n);
    return err;
}

static msv_err kt_recs(PGresult *r, struct msv_kt_rec **out, size_t *count)
{
    size_t rows = (size_t)PQntuples(r);
    struct msv_kt_rec *recs = calloc(rows ? rows : 1, sizeof(*recs));
    msv_err err = recs != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && i < rows; i++) {
        recs[i].index = (uint64_t)col_i64(r, (int)i, 0);
        if ((recs[i].leaf = col_bytes(r, (int)i, 1, &recs[i].leaf_len)) == NULL)
            err = MSV_ERR_NOMEM;
        /* kt_log's reads give the published leaf too, when the entry has one */
        else if (PQnfields(r) > 2 && !PQgetisnull(r, (int)i, 2) &&
                 (recs[i].pub = col_bytes(r, (int)i, 2, &recs[i].pub_len)) == NULL)
            err = MSV_ERR_NOMEM;
    }
    PQclear(r);
    if (err != MSV_OK) {
        msv_kt_recs_free(recs, rows);
        return err;
    }
    *out = recs;
    *count = rows;
    return MSV_OK;
}

static msv_err kt_read(struct pg_conn *c, uint64_t start, size_t max, struct msv_kt_rec **out,
                       size_t *count)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)start);
    a_i64(&a, (int64_t)max);
    err = query(c, "SELECT idx, leaf, pub FROM kt_log WHERE idx >= $1 ORDER BY idx LIMIT $2;", &a,
                &r);
    return err == MSV_OK ? kt_recs(r, out, count) : err;
}

static msv_err kt_handle_read(struct pg_conn *c, const char *handle, uint64_t start, size_t max,
                              struct msv_kt_rec **out, size_t *count)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_text(&a, handle);
    a_i64(&a, (int64_t)start);
    a_i64(&a, (int64_t)max);
    err = query(c,
                "SELECT idx, leaf, pub FROM kt_log WHERE handle = $1 AND idx >= $2 ORDER BY idx "
                "LIMIT $3;",
                &a, &r);
    return err == MSV_OK ? kt_recs(r, out, count) : err;
}

static msv_err kt_labels_read(struct pg_conn *c, uint64_t start, size_t max,
                              struct msv_kt_rec **out, size_t *count)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)start);
    a_i64(&a, (int64_t)max);
    err =
        query(c, "SELECT idx, label FROM kt_labels WHERE idx >= $1 ORDER BY idx LIMIT $2;", &a, &r);
    return err == MSV_OK ? kt_recs(r, out, count) : err;
}

static msv_err kt_labels_put(struct pg_conn *c, const struct msv_kt_rec *recs, size_t n)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct args a = {0};

        a_i64(&a, (int64_t)recs[i].index);
        a_bytes(&a, recs[i].leaf, recs[i].leaf_len);
        err = run(c,
                  "INSERT INTO kt_labels (idx, label) VALUES ($1, $2) "
                  "ON CONFLICT (idx) DO UPDATE SET label = EXCLUDED.label;",
                  &a);
    }
    return err;
}

static msv_err kt_append_at(struct pg_conn *c, uint64_t index, const uint8_t *leaf, size_t len)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_i64(&a, (int64_t)index);
    a_bytes(&a, leaf, len);
    err = run_count(c,
                    "INSERT INTO kt_log (idx, handle, leaf) SELECT $1, '', $2 "
                    "WHERE (SELECT COUNT(*) FROM kt_log) = $1;",
                    &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_EXISTS : err;
}

static msv_err kt_publish(struct pg_conn *c, uint64_t index, const uint8_t *pub, size_t len)
{
    struct args a = {0};

    a_i64(&a, (int64_t)index);
    a_bytes(&a, pub, len);
    return run(c, "UPDATE kt_log SET pub = $2 WHERE idx = $1 AND pub IS NULL;", &a);
}

/* The newest leaf of handle, or (tombstone) its newest tombstone (version byte 3). */
static msv_err kt_latest(struct pg_conn *c, const char *handle, int tombstone,
                         struct msv_kt_rec *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    struct msv_kt_rec *recs = NULL;
    size_t n = 0;
    msv_err err;

    a_text(&a, handle);
    err = query(c,
                tombstone ? "SELECT idx, leaf, pub FROM kt_log WHERE handle = $1 AND "
                            "get_byte(leaf, 0) = 3 ORDER BY idx DESC LIMIT 1;"
                          : "SELECT idx, leaf, pub FROM kt_log WHERE handle = $1 ORDER BY idx DESC "
                            "LIMIT 1;",
                &a, &r);
    if (err == MSV_OK)
        err = kt_recs(r, &recs, &n);
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

/* ---- devices -------------------------------------------------------------------------- */

/* Keeps approved device device_id's approval record (unsigned for approval NULL). */
static msv_err approval_put(struct pg_conn *c, uint64_t device_id,
                            const struct msv_kt_approval *approval)
{
    int is_signed = approval != NULL && approval->kind != MSV_KT_UNSIGNED;
    struct args a = {0};

    a_i64(&a, (int64_t)device_id);
    a_i64(&a, is_signed ? approval->kind : MSV_KT_UNSIGNED);
    a_i64(&a, is_signed ? (int64_t)approval->approver : 0);
    a_bytes(&a, is_signed ? approval->sig : NULL, is_signed ? approval->sig_len : 0);
    return run(c,
               "INSERT INTO device_approvals (device_id, account_id, suite, identity, kind, "
               "approver, signature) SELECT id, account_id, suite, identity, $2, $3, $4 FROM "
               "devices WHERE id = $1 ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, "
               "approver = excluded.approver, signature = excluded.signature;",
               &a);
}

static msv_err device_add(struct pg_conn *c, uint64_t account_id, uint32_t suite,
                          const uint8_t *identity, size_t identity_len, const uint8_t *push_token,
                          size_t push_token_len, int approved, int64_t now_ms,
                          const struct msv_kt_approval *approval, uint64_t *device_id)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err = lock_account(c, account_id); /* before the insert's share lock on it */

    if (err != MSV_OK)
        return err;
    a_i64(&a, (int64_t)account_id);
    /* a device approving itself (a root, a recovery) is approved only while the account has
     * no approved device, decided under the account's lock: else it waits as pending */
    if (approved && self_approved(approval)) {
        err = query(c, "SELECT COUNT(*) FROM devices WHERE account_id = $1 AND approved;", &a, &r);
        if (err != MSV_OK)
            return err;
        approved = col_i64(r, 0, 0) == 0;
        PQclear(r);
        r = NULL;
    }
    /* at most MSV_STORE_PENDING_MAX wait for approval at once, counted under the lock */
    if (!approved) {
        int64_t pending;

        err = query(c, "SELECT COUNT(*) FROM devices WHERE account_id = $1 AND NOT approved;", &a,
                    &r);
        if (err != MSV_OK)
            return err;
        pending = col_i64(r, 0, 0);
        PQclear(r);
        r = NULL;
        if (pending >= MSV_STORE_PENDING_MAX)
            return MSV_ERR_TOO_BIG;
    }
    a_i64(&a, suite);
    a_bytes(&a, identity, identity_len);
    a_bytes(&a, push_token, push_token != NULL ? push_token_len : 0);
    a_i64(&a, now_ms);
    a_text(&a, approved ? "t" : "f");
    err = query(c,
                "INSERT INTO devices (account_id, suite, identity, push_token, created_ms, "
                "approved) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    *device_id = (uint64_t)col_i64(r, 0, 0);
    PQclear(r);
    if (approved)
        err = approval_put(c, *device_id, approval);
    /* a pending device is not in the directory, so not in the log, until approved */
    return err == MSV_OK && approved ? kt_append(c, account_id, now_ms) : err;
}

static msv_err device_approve(struct pg_conn *c, uint64_t account_id, uint64_t device_id,
                              const struct msv_kt_approval *approval)
{
    struct args a = {0};
    PGresult *r = NULL;
    size_t n = 0;
    msv_err err = lock_account(c, account_id);

    if (err != MSV_OK)
        return err;
    a_i64(&a, (int64_t)device_id);
    a_i64(&a, (int64_t)account_id);
    /* the approver is still an approved device of the account, under the account's lock: one
     * removed since its approval was checked would leave the device with no chain */
    if (approval != NULL && approval->kind == MSV_KT_APPROVED) {
        struct args b = {0};

        a_i64(&b, (int64_t)approval->approver);
        a_i64(&b, (int64_t)account_id);
        err =
            query(c, "SELECT COUNT(*) FROM devices WHERE id = $1 AND account_id = $2 AND approved;",
                  &b, &r);
        if (err != MSV_OK)
            return err;
        n = (size_t)col_i64(r, 0, 0);
        PQclear(r);
        if (n == 0)
            return MSV_ERR_AUTH;
    }
    err = run_count(c,
                    "UPDATE devices SET approved = TRUE WHERE id = $1 AND account_id = $2 "
                    "AND NOT approved;",
                    &a, &n);
    if (err == MSV_OK && n == 0)
        return MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        err = approval_put(c, device_id, approval);
    /* refused past MSV_KT_APPROVED_SET_MAX records, so that a removal always fits */
    return err == MSV_OK ? kt_append_bounded(c, account_id, msv_wall_ms(), MSV_KT_APPROVED_SET_MAX)
                         : err;
}

static msv_err device_remove(struct pg_conn *c, uint64_t account_id, uint64_t device_id)
{
    /* what was the device's goes with it: its queue and its prekeys */
    static const char *const drops[] = {
        "DELETE FROM queue WHERE device_id = $1;",
        "DELETE FROM signed_prekeys WHERE device_id = $1;",
        "DELETE FROM one_time_prekeys WHERE device_id = $1;",
        "DELETE FROM kem_prekeys WHERE device_id = $1;",
        "DELETE FROM mls_key_packages WHERE device_id = $1;",
        /* its groups' rows (its own row deleted first: no commit of its runs meanwhile), and
         * those it alone was in go, with their logs (MLS_GROUPS_DROP) */
        MLS_GROUPS_LOCK("$1"),
        MLS_GROUPS_DROP("$1"),
        "DELETE FROM mls_members WHERE device_id = $1;",
        "DELETE FROM mls_claims WHERE device_id = $1;",
    };
    struct args a = {0};
    size_t n = 0;
    msv_err err = lock_account(c, account_id);

    a_i64(&a, (int64_t)device_id);
    /* the device's advisory lock before any row, as an account's deletion takes its devices':
     * a commit, Welcome or leave with a copy for it takes that lock first too, so none holds
     * its queue counter or membership while this waits for their group */
    if (err == MSV_OK)
        err = run(c, "SELECT pg_advisory_xact_lock($1);", &a);
    if (err != MSV_OK)
        return err;
    a_i64(&a, (int64_t)account_id);
    err = run_count(c, "DELETE FROM devices WHERE id = $1 AND account_id = $2;", &a, &n);
    if (err == MSV_OK && n == 0)
        return MSV_ERR_NOT_FOUND;
    a.n = 1;
    for (size_t i = 0; err == MSV_OK && i < sizeof(drops) / sizeof(drops[0]); i++)
        err = run(c, drops[i], &a);
    return err == MSV_OK ? kt_append(c, account_id, msv_wall_ms()) : err;
}

static msv_err read_device(const PGresult *r, int row, struct msv_device_rec *d)
{
    memset(d, 0, sizeof(*d));
    d->id = (uint64_t)col_i64(r, row, 0);
    d->account_id = (uint64_t)col_i64(r, row, 1);
    d->suite = (uint32_t)col_i64(r, row, 2);
    d->identity = col_bytes(r, row, 3, &d->identity_len);
    d->push_token = col_bytes(r, row, 4, &d->push_token_len);
    d->created_ms = col_i64(r, row, 5);
    d->approved = (int)col_i64(r, row, 6);
    if (d->identity == NULL || d->push_token == NULL) {
        msv_device_rec_clear(d);
        return MSV_ERR_NOMEM;
    }
    return MSV_OK;
}

#define DEVICE_COLUMNS "id, account_id, suite, identity, push_token, created_ms, approved"

static msv_err device_get(struct pg_conn *c, uint64_t device_id, struct msv_device_rec *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    err = query(c, "SELECT " DEVICE_COLUMNS " FROM devices WHERE id = $1;", &a, &r);
    if (err != MSV_OK)
        return err;
    err = PQntuples(r) == 0 ? MSV_ERR_NOT_FOUND : read_device(r, 0, out);
    PQclear(r);
    return err;
}

static msv_err devices_of_account(struct pg_conn *c, uint64_t account_id,
                                  struct msv_device_list *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    size_t rows;
    msv_err err;

    memset(out, 0, sizeof(*out));
    a_i64(&a, (int64_t)account_id);
    err = query(c, "SELECT " DEVICE_COLUMNS " FROM devices WHERE account_id = $1 ORDER BY id;", &a,
                &r);
    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    if (rows > 0 && (out->items = calloc(rows, sizeof(*out->items))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < rows; i++)
        if ((err = read_device(r, (int)i, &out->items[i])) == MSV_OK)
            out->count++;
    PQclear(r);
    if (err != MSV_OK)
        msv_device_list_clear(out);
    return err;
}

/* ---- prekeys and delivery tokens ---------------------------------------------------------- */

static msv_err kem_prekey_state(struct pg_conn *c, uint64_t device_id, uint32_t *left,
                                uint32_t *last_resort_id)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    err = query(c,
                "SELECT (SELECT COUNT(*) FROM kem_prekeys WHERE device_id = $1 AND"
                " last_resort = 0), COALESCE((SELECT key_id FROM kem_prekeys WHERE"
                " device_id = $1 AND last_resort = 1), 0);",
                &a, &r);
    if (err != MSV_OK)
        return err;
    *left = (uint32_t)col_i64(r, 0, 0);
    *last_resort_id = (uint32_t)col_i64(r, 0, 1);
    PQclear(r);
    return MSV_OK;
}

static msv_err kem_prekey_insert(struct pg_conn *c, uint64_t device_id,
                                 const struct msv_kem_prekey_rec *k, int last_resort)
{
    struct args a = {0};
    msv_err err = MSV_OK;

    a_i64(&a, (int64_t)device_id);
    if (last_resort)
        err = run(c, "DELETE FROM kem_prekeys WHERE device_id = $1 AND last_resort = 1;", &a);
    a_i64(&a, k->id);
    a_i64(&a, last_resort);
    a_bytes(&a, k->key, sizeof(k->key));
    a_bytes(&a, k->sig, sizeof(k->sig));
    if (err == MSV_OK)
        err = run(c,
                  "INSERT INTO kem_prekeys (device_id, key_id, last_resort, pk, sig)"
                  " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING;",
                  &a);
    return err;
}

/* The KEM part of an upload, in the same transaction as the rest. */
static msv_err kem_prekeys_put(struct pg_conn *c, uint64_t device_id,
                               const struct msv_prekey_upload *u, size_t max_one_time)
{
    struct args a = {0};
    uint32_t left = 0, last_resort_id = 0;
    msv_err err = MSV_OK;

    a_i64(&a, (int64_t)device_id);
    if (u->replace_one_time)
        err = run(c, "DELETE FROM kem_prekeys WHERE device_id = $1 AND last_resort = 0;", &a);
    if (err == MSV_OK && u->kem_last_resort != NULL)
        err = kem_prekey_insert(c, device_id, u->kem_last_resort, 1);
    for (size_t i = 0; err == MSV_OK && i < u->n_kem_one_time; i++)
        err = kem_prekey_insert(c, device_id, &u->kem_one_time[i], 0);
    if (err == MSV_OK)
        err = kem_prekey_state(c, device_id, &left, &last_resort_id);
    return err == MSV_OK && left > max_one_time ? MSV_ERR_TOO_BIG : err;
}

static msv_err prekeys_put(struct pg_conn *c, uint64_t device_id, const struct msv_prekey_upload *u,
                           size_t max_one_time, uint32_t *left, uint32_t *signed_id)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err = MSV_OK;

    if (u->has_signed) {
        a_i64(&a, (int64_t)device_id);
        a_i64(&a, u->signed_id);
        a_bytes(&a, u->signed_key, 32);
        a_bytes(&a, u->signed_sig, 64);
        err =
            run(c,
                "INSERT INTO signed_prekeys (device_id, key_id, pk, sig) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (device_id) DO UPDATE SET key_id = excluded.key_id, pk = excluded.pk,"
                " sig = excluded.sig;",
                &a);
    }
    if (err == MSV_OK && u->replace_one_time) {
        a.n = 0;
        a_i64(&a, (int64_t)device_id);
        err = run(c, "DELETE FROM one_time_prekeys WHERE device_id = $1;", &a);
    }
    for (size_t i = 0; err == MSV_OK && i < u->n_one_time; i++) {
        a.n = 0;
        a_i64(&a, (int64_t)device_id);
        a_i64(&a, u->one_time[i].id);
        a_bytes(&a, u->one_time[i].key, 32);
        err = run(c,
                  "INSERT INTO one_time_prekeys (device_id, key_id, pk) VALUES ($1, $2, $3) "
                  "ON CONFLICT DO NOTHING;",
                  &a);
    }
    if (err == MSV_OK)
        err = kem_prekeys_put(c, device_id, u, max_one_time);
    a.n = 0;
    a_i64(&a, (int64_t)device_id);
    if (err == MSV_OK)
        err = query(c,
                    "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE device_id = $1),"
                    " COALESCE((SELECT key_id FROM signed_prekeys WHERE device_id = $1), 0);",
                    &a, &r);
    if (err != MSV_OK)
        return err;
    *left = (uint32_t)col_i64(r, 0, 0);
    *signed_id = (uint32_t)col_i64(r, 0, 1);
    PQclear(r);
    return *left > max_one_time ? MSV_ERR_TOO_BIG : MSV_OK; /* the transaction rolls back */
}

static msv_err prekey_claim(struct pg_conn *c, uint64_t device_id, int one_time,
                            struct msv_prekey_claimed *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;
    int ok;

    memset(out, 0, sizeof(*out));
    a_i64(&a, (int64_t)device_id);
    err = query(c, "SELECT key_id, pk, sig FROM signed_prekeys WHERE device_id = $1;", &a, &r);
    if (err != MSV_OK)
        return err;
    ok = PQntuples(r) == 1 && col_fixed(r, 0, 1, out->signed_key, 32) &&
         col_fixed(r, 0, 2, out->signed_sig, 64);
    if (ok)
        out->signed_id = (uint32_t)col_i64(r, 0, 0);
    PQclear(r);
    if (!ok)
        return MSV_ERR_NOT_FOUND;
    if (!one_time)
        return MSV_OK;
    /* two nodes claiming at once take different keys: the first row not locked by the other */
    err = query(c,
                "DELETE FROM one_time_prekeys WHERE (device_id, key_id) = (SELECT device_id, key_id"
                " FROM one_time_prekeys WHERE device_id = $1 ORDER BY key_id LIMIT 1"
                " FOR UPDATE SKIP LOCKED) RETURNING key_id, pk;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 1 && col_fixed(r, 0, 1, out->one_time_key, 32))
        out->one_time_id = (uint32_t)col_i64(r, 0, 0);
    PQclear(r);
    return MSV_OK;
}

/* A KEM prekey row (key_id, pk, sig) into out; 0 if there is none. */
static int kem_row(const PGresult *r, struct msv_prekey_claimed *out)
{
    if (PQntuples(r) != 1 || !col_fixed(r, 0, 1, out->kem_key, sizeof(out->kem_key)) ||
        !col_fixed(r, 0, 2, out->kem_sig, sizeof(out->kem_sig)))
        return 0;
    out->kem_id = (uint32_t)col_i64(r, 0, 0);
    return 1;
}

/* A one-time KEM prekey (deleted as it is handed out), else the last-resort one. */
static msv_err kem_claim(struct pg_conn *c, uint64_t device_id, int one_time,
                         struct msv_prekey_claimed *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    if (one_time) {
        /* two nodes claiming at once take different keys, as for X25519 one-time prekeys */
        err = query(c,
                    "DELETE FROM kem_prekeys WHERE (device_id, last_resort, key_id) ="
                    " (SELECT device_id, last_resort, key_id FROM kem_prekeys WHERE device_id = $1"
                    " AND last_resort = 0 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    " RETURNING key_id, pk, sig;",
                    &a, &r);
        if (err != MSV_OK)
            return err;
        (void)kem_row(r, out);
        PQclear(r);
        if (out->kem_id != 0)
            return MSV_OK;
    }
    err = query(c,
                "SELECT key_id, pk, sig FROM kem_prekeys WHERE device_id = $1 AND"
                " last_resort = 1;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    out->kem_last_resort = kem_row(r, out);
    PQclear(r);
    return MSV_OK;
}

static msv_err prekey_and_kem_claim(struct pg_conn *c, uint64_t device_id, int one_time,
                                    struct msv_prekey_claimed *out)
{
    msv_err err = prekey_claim(c, device_id, one_time, out);

    return err == MSV_OK ? kem_claim(c, device_id, one_time, out) : err;
}

static msv_err delivery_token_set(struct pg_conn *c, uint64_t device_id, const uint8_t hash[32])
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_bytes(&a, hash, 32);
    a_i64(&a, (int64_t)device_id);
    err = run_count(c, "UPDATE devices SET delivery_token = $1 WHERE id = $2;", &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err delivery_token_check(struct pg_conn *c, uint64_t account_id, const uint8_t hash[32])
{
    struct args a = {0};
    PGresult *r = NULL;
    int found = 0;
    msv_err err;

    a_i64(&a, (int64_t)account_id);
    err = query(c,
                "SELECT delivery_token FROM devices WHERE account_id = $1 AND approved"
                " AND delivery_token IS NOT NULL;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    for (int i = 0; i < PQntuples(r); i++)
        if (col_len(r, i, 0) == 32 && msv_equal_ct(col_ptr(r, i, 0), hash, 32))
            found = 1;
    PQclear(r);
    return found ? MSV_OK : MSV_ERR_AUTH;
}

/* ---- the queue ------------------------------------------------------------------------ */

/* A PostgreSQL array literal of n values, each written by put(i) into a growing buffer. */
struct text_buf {
    char *p;
    size_t len, cap;
    int failed;
};

static void tb_put(struct text_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *bigger = realloc(b->p, cap);

        if (bigger == NULL) {
            b->failed = 1;
            return;
        }
        b->p = bigger;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void tb_str(struct text_buf *b, const char *s)
{
    tb_put(b, s, strlen(s));
}

static void tb_i64(struct text_buf *b, int64_t v)
{
    char num[24];

    tb_put(b, num, (size_t)snprintf(num, sizeof(num), "%lld", (long long)v));
}

/* A quoted array element: the text with backslashes and double quotes escaped. */
static void tb_quoted(struct text_buf *b, const char *s)
{
    tb_put(b, "\"", 1);
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            tb_put(b, "\\", 1);
        tb_put(b, s, 1);
    }
    tb_put(b, "\"", 1);
}

/* A bytea array element in hex: "\\x..." (the array literal's backslash escaped). */
static void tb_hex(struct text_buf *b, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char pair[2];

    tb_put(b, "\"\\\\x", 4);
    for (size_t i = 0; i < n; i++) {
        pair[0] = digits[p[i] >> 4];
        pair[1] = digits[p[i] & 15];
        tb_put(b, pair, 2);
    }
    tb_put(b, "\"", 1);
}

static msv_err mls_ids(struct args *a, const uint64_t *ids, size_t n, struct text_buf *b);

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The shared bodies of items (msv_queue_in.shared): body[i] the row of item i's, 0 if none. */
static msv_err bodies_put(struct pg_conn *c, const struct msv_queue_in *items, size_t n,
                          int64_t *body)
{
    msv_err err = MSV_OK;

    for (size_t i = 0, run; i < n && err == MSV_OK; i += run) {
        struct args a = {0};
        PGresult *r = NULL;

        if ((run = msv_queue_shared_run(items, n, i)) == 1)
            continue;
        a_bytes(&a, items[i].ciphertext, items[i].ciphertext_len);
        a_i64(&a, (int64_t)run);
        err =
            query(c, "INSERT INTO queue_bodies (body, refs) VALUES ($1, $2) RETURNING id;", &a, &r);
        if (err != MSV_OK)
            break;
        if (PQntuples(r) == 1)
            for (size_t k = 0; k < run; k++)
                body[i + k] = col_i64(r, 0, 0);
        else
            err = MSV_ERR_IO;
        PQclear(r);
    }
    return err;
}

static msv_err queue_put(struct pg_conn *c, const struct msv_queue_in *items, size_t n,
                         int64_t now_ms, int64_t expires_ms, uint64_t *ids)
{
    struct text_buf devs = {0}, senders = {0}, handles = {0}, suites = {0}, texts = {0};
    struct text_buf expiries = {0}, bodies = {0}, lens = {0};
    struct args a = {0};
    PGresult *r = NULL;
    int64_t *body;
    msv_err err = MSV_OK;

    if (n == 0)
        return MSV_OK;
    if ((body = calloc(n, sizeof(*body))) == NULL)
        return MSV_ERR_NOMEM;
    if ((err = bodies_put(c, items, n, body)) != MSV_OK) {
        free(body);
        return err;
    }
    tb_str(&devs, "{");
    tb_str(&senders, "{");
    tb_str(&handles, "{");
    tb_str(&suites, "{");
    tb_str(&texts, "{");
    tb_str(&expiries, "{");
    tb_str(&bodies, "{");
    tb_str(&lens, "{");
    for (size_t i = 0; i < n; i++) {
        const char *sep = i + 1 < n ? "," : "}";

        tb_i64(&devs, (int64_t)items[i].device_id);
        tb_str(&devs, sep);
        tb_i64(&senders, (int64_t)items[i].sender_device);
        tb_str(&senders, sep);
        tb_quoted(&handles, items[i].sender_handle != NULL ? items[i].sender_handle : "");
        tb_str(&handles, sep);
        tb_i64(&suites, items[i].suite);
        tb_str(&suites, sep);
        /* a copy of a shared body holds none of it */
        tb_hex(&texts, items[i].ciphertext, body[i] != 0 ? 0 : items[i].ciphertext_len);
        tb_str(&texts, sep);
        if (body[i] != 0)
            tb_i64(&bodies, body[i]);
        else
            tb_str(&bodies, "NULL");
        tb_str(&bodies, sep);
        tb_i64(&lens, body[i] != 0 ? (int64_t)items[i].ciphertext_len : 0);
        tb_str(&lens, sep);
        tb_i64(&expiries, items[i].expires_ms != 0 ? items[i].expires_ms : expires_ms);
        tb_str(&expiries, sep);
    }
    if (devs.failed || senders.failed || handles.failed || suites.failed || texts.failed ||
        expiries.failed || bodies.failed || lens.failed)
        err = MSV_ERR_NOMEM;
    a_text(&a, devs.p);
    /* the recipients' locks first, in ascending order: ids then follow commit order per device */
    if (err == MSV_OK)
        err = run(c,
                  "SELECT pg_advisory_xact_lock(d) FROM (SELECT DISTINCT d FROM"
                  " unnest($1::BIGINT[]) AS t(d) ORDER BY d) AS s;",
                  &a);
    a_text(&a, senders.p);
    a_text(&a, handles.p);
    a_text(&a, suites.p);
    a_text(&a, texts.p);
    a_i64(&a, now_ms);
    a_text(&a, expiries.p);
    a_text(&a, bodies.p);
    a_text(&a, lens.p);
    /* rows go in in ordinal order, so the sequence gives the k-th row the k-th smallest id */
    if (err == MSV_OK)
        err = query(c,
                    "INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext,"
                    " enqueued_ms, expires_ms, body_id, body_len) SELECT d, s, h, u, x, $6, e, b, l"
                    " FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::INTEGER[],"
                    " $5::BYTEA[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[]) WITH ORDINALITY AS"
                    " t(d, s, h, u, x, e, b, l, o) ORDER BY o RETURNING id;",
                    &a, &r);
    if (err == MSV_OK) {
        if ((size_t)PQntuples(r) != n) {
            err = MSV_ERR_IO;
        } else {
            for (size_t i = 0; i < n; i++)
                ids[i] = (uint64_t)col_i64(r, (int)i, 0);
            qsort(ids, n, sizeof(*ids), cmp_u64);
        }
        PQclear(r);
    }
    free(devs.p);
    free(senders.p);
    free(handles.p);
    free(suites.p);
    free(texts.p);
    free(expiries.p);
    free(bodies.p);
    free(lens.p);
    free(body);
    return err;
}

static msv_err queue_rows(const PGresult *r, size_t first, size_t n, int col,
                          struct msv_queue_rec **out);

static msv_err queue_fetch(struct pg_conn *c, uint64_t device_id, uint64_t after_id, int64_t now_ms,
                           size_t limit, struct msv_queue_rec **out, size_t *count)
{
    struct args a = {0};
    PGresult *r = NULL;
    size_t rows;
    msv_err err;

    if (limit == 0 || limit > 100000)
        return MSV_ERR_INVALID;
    a_i64(&a, (int64_t)device_id);
    a_i64(&a, (int64_t)after_id);
    a_i64(&a, now_ms);
    a_i64(&a, (int64_t)limit);
    err = query(c,
                "SELECT q.id, q.device_id, q.sender_device, q.sender_handle, q.suite, CASE WHEN"
                " q.body_id IS NULL THEN q.ciphertext ELSE b.body END, q.enqueued_ms FROM queue q"
                " LEFT JOIN queue_bodies b ON b.id = q.body_id WHERE q.device_id = $1 AND q.id >"
                " $2 AND q.expires_ms > $3 ORDER BY q.id LIMIT $4;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    err = queue_rows(r, 0, rows, 0, out);
    PQclear(r);
    if (err == MSV_OK)
        *count = rows;
    return err;
}

/* Rows first..first+n of r as queue records (the columns from column col on); all or nothing. */
static msv_err queue_rows(const PGresult *r, size_t first, size_t n, int col,
                          struct msv_queue_rec **out)
{
    struct msv_queue_rec *recs = calloc(n ? n : 1, sizeof(*recs));
    msv_err err = recs != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct msv_queue_rec *q = &recs[i];
        int row = (int)(first + i);

        q->id = (uint64_t)col_i64(r, row, col);
        q->device_id = (uint64_t)col_i64(r, row, col + 1);
        q->sender_device = (uint64_t)col_i64(r, row, col + 2);
        q->sender_handle = col_text(r, row, col + 3);
        q->suite = (uint32_t)col_i64(r, row, col + 4);
        q->ciphertext = col_bytes(r, row, col + 5, &q->ciphertext_len);
        q->enqueued_ms = col_i64(r, row, col + 6);
        if (q->sender_handle == NULL || q->ciphertext == NULL)
            err = MSV_ERR_NOMEM;
    }
    if (err != MSV_OK) {
        msv_queue_recs_free(recs, n);
        return err;
    }
    *out = recs;
    return MSV_OK;
}

/* Each device's reads in one statement: the newest ids per device, LIMIT per device (LATERAL). */
static msv_err queue_fetch_many(struct pg_conn *c, struct msv_queue_read *reads, size_t n,
                                int64_t now_ms)
{
    struct text_buf devs = {0}, afters = {0}, limits = {0};
    struct args a = {0};
    PGresult *r = NULL;
    size_t row = 0, rows, i;
    msv_err err = MSV_OK;

    for (i = 0; i < n; i++) {
        reads[i].recs = NULL;
        reads[i].count = 0;
        if (reads[i].limit == 0 || reads[i].limit > 100000)
            return MSV_ERR_INVALID;
    }
    if (n == 0)
        return MSV_OK;
    tb_str(&devs, "{");
    tb_str(&afters, "{");
    tb_str(&limits, "{");
    for (i = 0; i < n; i++) {
        const char *sep = i + 1 < n ? "," : "}";

        tb_i64(&devs, (int64_t)reads[i].device_id);
        tb_str(&devs, sep);
        tb_i64(&afters, (int64_t)reads[i].after_id);
        tb_str(&afters, sep);
        tb_i64(&limits, (int64_t)reads[i].limit);
        tb_str(&limits, sep);
    }
    if (devs.failed || afters.failed || limits.failed)
        err = MSV_ERR_NOMEM;
    a_text(&a, devs.p);
    a_text(&a, afters.p);
    a_text(&a, limits.p);
    a_i64(&a, now_ms);
    if (err == MSV_OK)
        err = query(c,
                    "SELECT w.o, q.id, q.device_id, q.sender_device, q.sender_handle, q.suite,"
                    " CASE WHEN q.body_id IS NULL THEN q.ciphertext ELSE b.body END, q.enqueued_ms"
                    " FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) WITH ORDINALITY AS"
                    " w(d, after, lim, o) CROSS JOIN LATERAL (SELECT * FROM queue WHERE device_id"
                    " = w.d AND id > w.after AND expires_ms > $4 ORDER BY id LIMIT w.lim) AS q"
                    " LEFT JOIN queue_bodies b ON b.id = q.body_id ORDER BY w.o, q.id;",
                    &a, &r);
    free(devs.p);
    free(afters.p);
    free(limits.p);
    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    for (i = 0; i < n && err == MSV_OK; i++) {
        size_t first = row;

        while (row < rows && (size_t)col_i64(r, (int)row, 0) == i + 1)
            row++;
        err = queue_rows(r, first, row - first, 1, &reads[i].recs);
        if (err == MSV_OK)
            reads[i].count = row - first;
    }
    PQclear(r);
    while (err != MSV_OK && i-- > 0) {
        msv_queue_recs_free(reads[i].recs, reads[i].count);
        reads[i].recs = NULL;
        reads[i].count = 0;
    }
    return err;
}

static msv_err ids_literal(const uint64_t *ids, size_t n, struct text_buf *b)
{
    tb_str(b, "{");
    for (size_t i = 0; i < n; i++) {
        tb_i64(b, (int64_t)ids[i]);
        if (i + 1 < n)
            tb_str(b, ",");
    }
    tb_str(b, "}");
    return b->failed ? MSV_ERR_NOMEM : MSV_OK;
}

static msv_err queue_ack(struct pg_conn *c, uint64_t device_id, const uint64_t *ids, size_t n,
                         size_t *deleted)
{
    struct text_buf list = {0};
    struct args a = {0};
    msv_err err = ids_literal(ids, n, &list);

    *deleted = 0;
    a_i64(&a, (int64_t)device_id);
    /* the device's lock first, as a commit takes its recipients' (QUEUE_USAGE_SCHEMA): the
     * delete then locks shared bodies and the device's counter in the order a commit does */
    if (err == MSV_OK && n > 0)
        err = run(c, "SELECT pg_advisory_xact_lock($1);", &a);
    a_text(&a, list.p);
    if (err == MSV_OK && n > 0)
        err = run_count(c, "DELETE FROM queue WHERE device_id = $1 AND id = ANY ($2::BIGINT[]);",
                        &a, deleted);
    free(list.p);
    return err;
}

/*
 * Every acknowledgement of a commit in one statement (one round trip, however many devices
 * acknowledged): rows of (device, id, which acknowledgement), deleted where they match, and
 * each acknowledgement's count of deleted envelopes read back.
 */
static msv_err queue_ack_all(struct pg_conn *c, struct msv_queue_ack *acks, size_t n_acks)
{
    struct text_buf devs = {0}, ids = {0}, which = {0};
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;
    size_t rows = 0;

    tb_str(&devs, "{");
    tb_str(&ids, "{");
    tb_str(&which, "{");
    for (size_t k = 0; k < n_acks; k++) {
        acks[k].deleted = 0;
        for (size_t i = 0; i < acks[k].n; i++) {
            const char *sep = rows++ > 0 ? "," : "";

            tb_str(&devs, sep);
            tb_i64(&devs, (int64_t)acks[k].device_id);
            tb_str(&ids, sep);
            tb_i64(&ids, (int64_t)acks[k].ids[i]);
            tb_str(&which, sep);
            tb_i64(&which, (int64_t)k);
        }
    }
    tb_str(&devs, "}");
    tb_str(&ids, "}");
    tb_str(&which, "}");
    a_text(&a, devs.p);
    a_text(&a, ids.p);
    a_text(&a, which.p);
    err = devs.failed || ids.failed || which.failed ? MSV_ERR_NOMEM : MSV_OK;
    if (err == MSV_OK && rows > 0)
        err = query(c,
                    "WITH t AS (SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[])"
                    " AS t(d, id, k)), gone AS (DELETE FROM queue q USING t WHERE"
                    " q.device_id = t.d AND q.id = t.id RETURNING t.k)"
                    " SELECT k, COUNT(*) FROM gone GROUP BY k;",
                    &a, &r);
    for (int row = 0; err == MSV_OK && r != NULL && row < PQntuples(r); row++) {
        int64_t k = col_i64(r, row, 0);

        if (k >= 0 && (size_t)k < n_acks)
            acks[k].deleted = (size_t)col_i64(r, row, 1);
    }
    PQclear(r);
    free(devs.p);
    free(ids.p);
    free(which.p);
    return err;
}

/* The advisory locks of the n devices in ids (repeats allowed), in ascending order. */
static msv_err lock_devices(struct pg_conn *c, const uint64_t *ids, size_t n)
{
    struct text_buf devs = {0};
    struct args a = {0};
    msv_err err;

    tb_str(&devs, "{");
    for (size_t i = 0; i < n; i++) {
        tb_i64(&devs, (int64_t)ids[i]);
        tb_str(&devs, i + 1 < n ? "," : "");
    }
    tb_str(&devs, "}");
    a_text(&a, devs.p);
    err = devs.failed ? MSV_ERR_NOMEM
                      : run(c,
                            "SELECT pg_advisory_xact_lock(d) FROM (SELECT DISTINCT d FROM"
                            " unnest($1::BIGINT[]) AS t(d) ORDER BY d) AS s;",
                            &a);
    free(devs.p);
    return err;
}

/*
 * The advisory locks of every device a commit enqueues for or acknowledges, in ascending
 * order, before any queue counter changes (see QUEUE_USAGE_SCHEMA).
 */
static msv_err lock_commit_devices(struct pg_conn *c, const struct msv_queue_in *items, size_t n,
                                   const struct msv_queue_ack *acks, size_t n_acks)
{
    uint64_t *ids = malloc((n + n_acks) * sizeof(*ids));
    msv_err err;

    if (ids == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < n + n_acks; i++)
        ids[i] = i < n ? items[i].device_id : acks[i - n].device_id;
    err = lock_devices(c, ids, n + n_acks);
    free(ids);
    return err;
}

/*
 * The rows of the n devices in ids (repeats allowed), locked against deletion (FOR KEY SHARE,
 * in ascending order) until the transaction ends: a device being removed by a transaction not
 * yet committed is waited for. MSV_ERR_AGAIN if one of them no longer exists.
 */
static msv_err devices_hold(struct pg_conn *c, const uint64_t *ids, size_t n)
{
    struct text_buf devs = {0};
    struct args a = {0};
    PGresult *r = NULL;
    uint64_t *sorted = malloc((n ? n : 1) * sizeof(*sorted));
    size_t distinct = 0;
    msv_err err = sorted == NULL ? MSV_ERR_NOMEM : MSV_OK;

    if (err == MSV_OK) {
        memcpy(sorted, ids, n * sizeof(*sorted));
        qsort(sorted, n, sizeof(*sorted), cmp_u64);
        for (size_t i = 0; i < n; i++)
            distinct += i == 0 || sorted[i] != sorted[i - 1];
        err = mls_ids(&a, sorted, n, &devs);
    }
    if (err == MSV_OK)
        err = query(c,
                    "SELECT id FROM devices WHERE id = ANY($1::BIGINT[]) ORDER BY id FOR KEY"
                    " SHARE;",
                    &a, &r);
    if (err == MSV_OK && (size_t)PQntuples(r) != distinct)
        err = MSV_ERR_AGAIN;
    PQclear(r);
    free(devs.p);
    free(sorted);
    return err;
}

/* devices_hold of the recipients of n items. */
static msv_err recipients_hold(struct pg_conn *c, const struct msv_queue_in *items, size_t n)
{
    uint64_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    msv_err err;

    if (ids == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        ids[i] = items[i].device_id;
    err = devices_hold(c, ids, n);
    free(ids);
    return err;
}

static msv_err queue_commit(struct pg_conn *c, const struct msv_queue_in *items, size_t n,
                            int64_t now_ms, int64_t expires_ms, uint64_t *ids,
                            struct msv_queue_ack *acks, size_t n_acks)
{
    msv_err err = n + n_acks > 0 ? lock_commit_devices(c, items, n, acks, n_acks) : MSV_OK;

    /* a recipient removed meanwhile (its removal may be committing now, through another
     * node): nothing is queued for a device that no longer exists, nor answered Ok */
    if (err == MSV_OK && n > 0)
        err = recipients_hold(c, items, n);
    if (err == MSV_OK)
        err = queue_put(c, items, n, now_ms, expires_ms, ids);
    if (err == MSV_OK && n_acks > 0)
        err = queue_ack_all(c, acks, n_acks);
    return err;
}

/* ---- MLS delivery service: KeyPackages and groups (docs/missived.md, "MLS groups") ------- */

static msv_err mls_kp_state(struct pg_conn *c, uint64_t device_id, uint32_t *left,
                            int *has_last_resort)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    err = query(c,
                "SELECT (SELECT COUNT(*) FROM mls_key_packages WHERE device_id = $1 AND"
                " last_resort = 0), EXISTS (SELECT 1 FROM mls_key_packages WHERE device_id = $1"
                " AND last_resort = 1);",
                &a, &r);
    if (err != MSV_OK)
        return err;
    *left = (uint32_t)col_i64(r, 0, 0);
    *has_last_resort = col_i64(r, 0, 1) != 0;
    PQclear(r);
    return MSV_OK;
}

static msv_err mls_kp_insert(struct pg_conn *c, uint64_t device_id, const uint8_t *kp, size_t len,
                             int last_resort)
{
    struct args a = {0};

    a_i64(&a, (int64_t)device_id);
    a_i64(&a, last_resort);
    a_bytes(&a, kp, len);
    return run(c, "INSERT INTO mls_key_packages (device_id, last_resort, kp) VALUES ($1, $2, $3);",
               &a);
}

static msv_err mls_kp_put(struct pg_conn *c, uint64_t device_id,
                          const struct msv_mls_key_package_upload *up, size_t max, uint32_t *left,
                          int *has_last_resort)
{
    struct args a = {0};
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    /* the device's lock: two uploads at once cannot both pass the cap */
    err = run(c, "SELECT pg_advisory_xact_lock($1);", &a);
    if (err == MSV_OK && up->replace)
        err = run(c, "DELETE FROM mls_key_packages WHERE device_id = $1 AND last_resort = 0;", &a);
    if (err == MSV_OK && up->last_resort != NULL) {
        err = run(c, "DELETE FROM mls_key_packages WHERE device_id = $1 AND last_resort = 1;", &a);
        if (err == MSV_OK)
            err = mls_kp_insert(c, device_id, up->last_resort, up->last_resort_len, 1);
    }
    for (size_t i = 0; err == MSV_OK && i < up->n; i++)
        err = mls_kp_insert(c, device_id, up->kps[i], up->lens[i], 0);
    if (err == MSV_OK)
        err = mls_kp_state(c, device_id, left, has_last_resort);
    return err == MSV_OK && *left > max ? MSV_ERR_TOO_BIG : err;
}

static msv_err mls_kp_claim(struct pg_conn *c, uint64_t device_id, int only_last_resort,
                            uint8_t **kp, size_t *len, int *last_resort)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err = MSV_OK;

    a_i64(&a, (int64_t)device_id);
    /* two nodes claiming at once take different ones: the first row not locked by the other */
    if (!only_last_resort)
        err =
            query(c,
                  "DELETE FROM mls_key_packages WHERE id = (SELECT id FROM mls_key_packages WHERE"
                  " device_id = $1 AND last_resort = 0 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                  " RETURNING kp;",
                  &a, &r);
    if (err == MSV_OK && (r == NULL || PQntuples(r) == 0)) {
        PQclear(r);
        r = NULL;
        err = query(
            c, "SELECT kp FROM mls_key_packages WHERE device_id = $1 AND last_resort = 1 LIMIT 1;",
            &a, &r);
        *last_resort = 1;
    } else {
        *last_resort = 0;
    }
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 0)
        err = MSV_ERR_NOT_FOUND;
    else if ((*kp = col_bytes(r, 0, 0, len)) == NULL)
        err = MSV_ERR_NOMEM;
    PQclear(r);
    return err;
}

/* The claim recorded, the expired ones and the claimer's oldest beyond max dropped. */
static msv_err mls_claim(struct pg_conn *c, uint64_t device_id, int only_last_resort,
                         uint64_t claimer, int64_t now_ms, int64_t expires_ms, size_t max,
                         uint8_t **kp, size_t *len, int *last_resort)
{
    struct args a = {0}, b = {0}, d = {0};
    msv_err err = mls_kp_claim(c, device_id, only_last_resort, kp, len, last_resort);

    a_i64(&a, now_ms);
    if (err == MSV_OK)
        err = run(c, "DELETE FROM mls_claims WHERE expires_ms <= $1;", &a);
    a_i64(&b, (int64_t)claimer);
    a_i64(&b, (int64_t)device_id);
    a_i64(&b, expires_ms);
    if (err == MSV_OK)
        err = run(c,
                  "INSERT INTO mls_claims (account_id, device_id, expires_ms) VALUES ($1, $2, $3);",
                  &b);
    a_i64(&d, (int64_t)claimer);
    a_i64(&d, (int64_t)max);
    if (err == MSV_OK)
        err = run(c,
                  "DELETE FROM mls_claims WHERE account_id = $1 AND id NOT IN (SELECT id FROM"
                  " mls_claims WHERE account_id = $1 ORDER BY id DESC LIMIT $2);",
                  &d);
    if (err != MSV_OK && *kp != NULL) {
        free(*kp);
        *kp = NULL;
    }
    return err;
}

/* One open claim of each device added, used; MSV_ERR_INVALID if one has none. */
static msv_err mls_claims_use(struct pg_conn *c, const struct msv_mls_commit *m)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; i < m->n_added && err == MSV_OK; i++) {
        struct args a = {0};
        size_t n = 0;

        a_i64(&a, (int64_t)m->claimer);
        a_i64(&a, (int64_t)m->added[i]);
        a_i64(&a, m->now_ms);
        err = run_count(c,
                        "DELETE FROM mls_claims WHERE id = (SELECT id FROM mls_claims WHERE"
                        " account_id = $1 AND device_id = $2 AND expires_ms > $3 ORDER BY id"
                        " LIMIT 1 FOR UPDATE SKIP LOCKED);",
                        &a, &n);
        if (err == MSV_OK && n == 0) {
            if (m->unclaimed != NULL)
                *m->unclaimed = m->added[i];
            err = MSV_ERR_INVALID;
        }
    }
    return err;
}

static msv_err mls_group_get(struct pg_conn *c, const uint8_t *group_id, size_t group_len,
                             uint64_t *epoch, uint64_t **members, size_t *n)
{
    struct args a = {0};
    PGresult *r = NULL;
    uint64_t *list;
    size_t rows;
    msv_err err;

    a_bytes(&a, group_id, group_len);
    /* one statement: the epoch and the members of one snapshot */
    err = query(c,
                "SELECT g.epoch, m.device_id FROM mls_groups g LEFT JOIN mls_members m ON"
                " m.group_id = g.group_id WHERE g.group_id = $1 ORDER BY m.device_id;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    if (rows == 0) {
        PQclear(r);
        return MSV_ERR_NOT_FOUND;
    }
    *epoch = (uint64_t)col_i64(r, 0, 0);
    list = malloc(rows * sizeof(*list));
    if (list == NULL) {
        PQclear(r);
        return MSV_ERR_NOMEM;
    }
    *n = 0;
    for (size_t i = 0; i < rows; i++) {
        if (!PQgetisnull(r, (int)i, 1))
            list[(*n)++] = (uint64_t)col_i64(r, (int)i, 1);
    }
    PQclear(r);
    *members = list;
    return MSV_OK;
}

/* ids as an array literal for $2 of a */
static msv_err mls_ids(struct args *a, const uint64_t *ids, size_t n, struct text_buf *b)
{
    tb_str(b, "{");
    for (size_t i = 0; i < n; i++) {
        tb_i64(b, (int64_t)ids[i]);
        tb_str(b, i + 1 < n ? "," : "");
    }
    tb_str(b, "}");
    a_text(a, b->p);
    return b->failed ? MSV_ERR_NOMEM : MSV_OK;
}

static msv_err mls_members_change(struct pg_conn *c, const struct msv_mls_commit *m)
{
    struct text_buf added = {0}, removed = {0};
    struct args a = {0};
    msv_err err;

    a_bytes(&a, m->group_id, m->group_len);
    err = mls_ids(&a, m->added, m->n_added, &added);
    a_i64(&a, (int64_t)(m->epoch + 1)); /* their first epoch, from which they read the log */
    a_i64(&a, (int64_t)m->sender);
    a_i64(&a, (int64_t)m->claimer); /* kept for a device of another account (groups_bounded) */
    /* one added again (its leaf replaced) stays a member, added by the same device as before:
     * if this commit is that device's, a Welcome it kept from before is stale (another's
     * changes nothing: the server cannot tell a replacement from a commit naming members it
     * does not add) */
    if (err == MSV_OK)
        err = run(c,
                  "INSERT INTO mls_members (group_id, device_id, since_epoch, added_by,"
                  " added_by_account) SELECT $1, d.id, $3, $4, CASE WHEN d.account_id = $5 THEN 0"
                  " ELSE $5 END FROM devices d WHERE d.id = ANY($2::BIGINT[]) AND d.approved"
                  " ON CONFLICT (group_id, device_id) DO UPDATE SET welcome = NULL,"
                  " welcome_expires_ms = 0 WHERE mls_members.added_by = EXCLUDED.added_by;",
                  &a);
    a.n = 1;
    if (err == MSV_OK)
        err = mls_ids(&a, m->removed, m->n_removed, &removed);
    if (err == MSV_OK)
        err =
            run(c, "DELETE FROM mls_members WHERE group_id = $1 AND device_id = ANY($2::BIGINT[]);",
                &a);
    free(added.p);
    free(removed.p);
    return err;
}

/* The group goes with its commit log if it has no member left (MLS_GROUPS_DROP); its row is
 * locked by the caller, so no member comes or goes meanwhile. */
static msv_err mls_group_drop(struct pg_conn *c, const uint8_t *group_id, size_t group_len)
{
    struct args a = {0};

    a_bytes(&a, group_id, group_len);
    return run(c,
               "WITH gone AS (DELETE FROM mls_groups WHERE group_id = $1 AND NOT EXISTS (SELECT 1"
               " FROM mls_members WHERE group_id = $1) RETURNING group_id) DELETE FROM"
               " mls_commit_log WHERE group_id IN (SELECT group_id FROM gone);",
               &a);
}

/* The group's row, locked until the end of the transaction (created at epoch 0 if it is
 * unknown and m->epoch is 0, the sender its first member); *epoch its epoch. */
static msv_err mls_group_lock(struct pg_conn *c, const struct msv_mls_commit *m, uint64_t *epoch)
{
    struct args a = {0};
    PGresult *r = NULL;
    size_t created = 0;
    msv_err err = MSV_OK;

    a_bytes(&a, m->group_id, m->group_len);
    if (m->epoch == 0)
        err = run_count(c,
                        "INSERT INTO mls_groups (group_id, epoch) VALUES ($1, 0)"
                        " ON CONFLICT DO NOTHING;",
                        &a, &created);
    if (err == MSV_OK && created == 1) {
        a_i64(&a, (int64_t)m->sender);
        err = run(c, "INSERT INTO mls_members (group_id, device_id) VALUES ($1, $2);", &a);
        a.n = 1;
    }
    if (err == MSV_OK)
        err = query(c, "SELECT epoch FROM mls_groups WHERE group_id = $1 FOR UPDATE;", &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 1)
        *epoch = (uint64_t)col_i64(r, 0, 0);
    else
        err = MSV_ERR_NOT_FOUND;
    PQclear(r);
    return err;
}

/* Whether device_id is a member of m's group (*member), and how many members it has. */
static msv_err mls_membership(struct pg_conn *c, const struct msv_mls_commit *m, uint64_t device_id,
                              int *member, size_t *count)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_bytes(&a, m->group_id, m->group_len);
    a_i64(&a, (int64_t)device_id);
    err = query(c,
                "SELECT EXISTS (SELECT 1 FROM mls_members WHERE group_id = $1 AND device_id = $2),"
                " (SELECT COUNT(*) FROM mls_members WHERE group_id = $1);",
                &a, &r);
    if (err != MSV_OK)
        return err;
    *member = col_i64(r, 0, 0) != 0;
    *count = (size_t)col_i64(r, 0, 1);
    PQclear(r);
    return MSV_OK;
}

/* MSV_ERR_TOO_BIG if the sender or a device m adds is in more than m->max_groups groups, or a
 * device it adds in more than m->max_groups_by_account that the claimer's account added it to
 * (added_by_account: 0 for its own account's). */
static msv_err mls_groups_bounded(struct pg_conn *c, const struct msv_mls_commit *m)
{
    struct text_buf ids = {0};
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err = mls_ids(&a, m->added, m->n_added, &ids);

    a_i64(&a, (int64_t)m->sender);
    a_i64(&a, (int64_t)m->max_groups);
    a_i64(&a, (int64_t)m->claimer);
    a_i64(&a, (int64_t)m->max_groups_by_account);
    if (err == MSV_OK)
        err = query(c,
                    "SELECT COUNT(*) FROM (SELECT device_id FROM mls_members WHERE device_id ="
                    " ANY($1::BIGINT[] || $2::BIGINT) GROUP BY device_id HAVING COUNT(*) > $3"
                    " OR ($5 > 0 AND device_id = ANY($1::BIGINT[]) AND COUNT(*) FILTER (WHERE"
                    " added_by_account = $4) > $5)) AS t;",
                    &a, &r);
    free(ids.p);
    if (err != MSV_OK)
        return err;
    err = col_i64(r, 0, 0) > 0 ? MSV_ERR_TOO_BIG : MSV_OK;
    PQclear(r);
    return err;
}

/* The devices a commit names: the sender first, then those added and removed and the copies'
 * recipients (free() it); *n their number. NULL if out of memory. */
static uint64_t *mls_named(const struct msv_mls_commit *m, size_t *n)
{
    uint64_t *ids = malloc((1 + m->n_added + m->n_removed + m->n_items) * sizeof(*ids));

    *n = 0;
    if (ids == NULL)
        return NULL;
    ids[(*n)++] = m->sender;
    for (size_t i = 0; i < m->n_added; i++)
        ids[(*n)++] = m->added[i];
    for (size_t i = 0; i < m->n_removed; i++)
        ids[(*n)++] = m->removed[i];
    for (size_t i = 0; i < m->n_items; i++)
        ids[(*n)++] = m->items[i].device_id;
    return ids;
}

/*
 * devices_hold of the sender (MSV_ERR_AUTH if it is gone: a removed device is no member, and
 * would otherwise become the first of a group it starts), then of the devices added and
 * removed and the copies' recipients, of which one already gone is no failure here
 * (mls_members_change adds only those still there; queue_commit refuses a copy for one).
 */
static msv_err mls_devices_hold(struct pg_conn *c, const struct msv_mls_commit *m)
{
    size_t n = 0;
    uint64_t *ids = mls_named(m, &n);
    msv_err err = devices_hold(c, &m->sender, 1);

    if (err != MSV_OK || ids == NULL) {
        free(ids);
        return err == MSV_ERR_AGAIN ? MSV_ERR_AUTH : err != MSV_OK ? err : MSV_ERR_NOMEM;
    }
    err = devices_hold(c, ids + 1, n - 1);
    free(ids);
    return err == MSV_ERR_AGAIN ? MSV_OK : err;
}

/* lock_devices of every device the commit names. */
static msv_err mls_devices_lock(struct pg_conn *c, const struct msv_mls_commit *m)
{
    size_t n = 0;
    uint64_t *ids = mls_named(m, &n);
    msv_err err = ids != NULL ? lock_devices(c, ids, n) : MSV_ERR_NOMEM;

    free(ids);
    return err;
}

/* The commit into its group's log, and what either bound no longer keeps out of it (two of an
 * account's commits at one moment through two nodes may each keep one past its bound: the
 * account's next commit drops it). */
static msv_err mls_log_put(struct pg_conn *c, const struct msv_mls_commit *m)
{
    struct args a = {0}, b = {0};
    msv_err err;

    if (m->log == NULL)
        return MSV_OK;
    a_bytes(&a, m->group_id, m->group_len);
    a_i64(&a, (int64_t)m->epoch);
    a_i64(&a, (int64_t)m->claimer);
    a_i64(&a, (int64_t)m->sender);
    a_i64(&a, m->log_expires_ms);
    a_bytes(&a, m->log, m->log_len);
    err = run(c,
              "INSERT INTO mls_commit_log (group_id, epoch, account_id, sender_device, expires_ms,"
              " delivery) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (group_id, epoch) DO UPDATE"
              " SET account_id = EXCLUDED.account_id, sender_device = EXCLUDED.sender_device,"
              " expires_ms = EXCLUDED.expires_ms, delivery = EXCLUDED.delivery;",
              &a);
    a.n = 1;
    a_i64(&a, (int64_t)(m->epoch - m->log_keep));
    if (err == MSV_OK && m->epoch >= m->log_keep) /* the group's log_keep newest: a key range */
        err = run(c, "DELETE FROM mls_commit_log WHERE group_id = $1 AND epoch <= $2;", &a);
    a_i64(&b, (int64_t)m->claimer);
    a_i64(&b, (int64_t)m->log_account_max);
    if (err == MSV_OK) /* the account's log_account_max newest */
        err = run(c,
                  "DELETE FROM mls_commit_log WHERE (group_id, epoch) IN (SELECT group_id, epoch"
                  " FROM mls_commit_log WHERE account_id = $1 ORDER BY expires_ms DESC, epoch"
                  " DESC OFFSET $2);",
                  &b);
    return err;
}

static msv_err mls_commit(struct pg_conn *c, const struct msv_mls_commit *m, uint64_t *epoch_now)
{
    struct args a = {0};
    size_t count = 0;
    int member = 0;
    msv_err err;

    *epoch_now = 0;
    /* the advisory locks of every device the commit names first, in ascending order, as an
     * account's deletion and a relay commit take them before any row lock: holding a row lock
     * while waiting for an advisory lock would deadlock with a deletion holding that lock */
    err = mls_devices_lock(c, m);
    /* then, before any lock a device's removal waits for: the devices the commit names
     * cannot be deleted until it ends, or it waits for their removal to end (then an added
     * one that is gone is no member, and a copy for a gone one refuses the commit) */
    if (err == MSV_OK)
        err = mls_devices_hold(c, m);
    if (err == MSV_OK)
        err = mls_group_lock(c, m, epoch_now);
    if (err != MSV_OK)
        return err;
    if (*epoch_now != m->epoch)
        return MSV_ERR_EXISTS;
    err = mls_membership(c, m, m->sender, &member, &count);
    if (err == MSV_OK && !member)
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = mls_claims_use(c, m);
    if (err == MSV_OK)
        err = mls_members_change(c, m);
    if (err == MSV_OK)
        err = mls_membership(c, m, m->sender, &member, &count);
    if (err == MSV_OK && count > m->max_members)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = mls_groups_bounded(c, m);
    a_bytes(&a, m->group_id, m->group_len);
    if (err == MSV_OK)
        err = run(c, "UPDATE mls_groups SET epoch = epoch + 1 WHERE group_id = $1;", &a);
    if (err == MSV_OK && m->n_items > 0)
        err = queue_commit(c, m->items, m->n_items, m->now_ms, m->expires_ms, m->ids, NULL, 0);
    if (err == MSV_OK)
        err = mls_log_put(c, m);
    if (err == MSV_OK && m->n_removed > 0)
        err = mls_group_drop(c, m->group_id, m->group_len);
    if (err == MSV_OK)
        *epoch_now = m->epoch + 1;
    return err;
}

static msv_err mls_commits_since(struct pg_conn *c, const uint8_t *group_id, size_t group_len,
                                 uint64_t device_id, uint64_t from, int64_t now_ms, size_t max,
                                 size_t max_bytes, struct msv_mls_logged **out, size_t *n,
                                 uint64_t *epoch, int *more)
{
    struct args a = {0};
    PGresult *r = NULL;
    struct msv_mls_logged *l;
    size_t rows, bytes = 0;
    msv_err err;

    *out = NULL;
    *n = 0;
    *more = 0;
    a_bytes(&a, group_id, group_len);
    a_i64(&a, (int64_t)device_id);
    /* an epoch past any a group reaches (2^63 and on) gives nothing, never the whole log */
    a_i64(&a, from > INT64_MAX ? INT64_MAX : (int64_t)from);
    a_i64(&a, now_ms);
    a_i64(&a, (int64_t)max + 1);
    a_i64(&a, (int64_t)max_bytes);
    /* one statement: the group, the membership and the log of one snapshot; of the log only
     * the first two commits and those whose earlier ones take at most max_bytes (their sizes
     * summed first, without reading them): one past what is answered says there is more, and
     * nothing after it is read */
    err = query(c,
                "SELECT g.epoch, m.since_epoch, l.epoch, l.sender_device, l.delivery FROM"
                " mls_groups g LEFT JOIN mls_members m ON m.group_id = g.group_id AND"
                " m.device_id = $2 LEFT JOIN LATERAL (SELECT x.epoch, x.sender_device,"
                " x.delivery FROM (SELECT epoch, ROW_NUMBER() OVER (ORDER BY epoch) AS k,"
                " SUM(octet_length(delivery)) OVER (ORDER BY"
                " epoch) - octet_length(delivery) AS before FROM mls_commit_log WHERE group_id ="
                " g.group_id AND m.device_id IS NOT NULL AND epoch >= GREATEST($3,"
                " m.since_epoch) AND expires_ms > $4 ORDER BY epoch LIMIT $5) w JOIN"
                " mls_commit_log x ON x.group_id = g.group_id AND x.epoch = w.epoch WHERE"
                " (w.before <= $6 OR w.k <= 2)) l ON TRUE WHERE g.group_id = $1 ORDER BY l.epoch;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    if (rows == 0 || PQgetisnull(r, 0, 1)) {
        PQclear(r);
        return rows == 0 ? MSV_ERR_NOT_FOUND : MSV_ERR_AUTH;
    }
    *epoch = (uint64_t)col_i64(r, 0, 0);
    if ((l = calloc(rows, sizeof(*l))) == NULL) {
        PQclear(r);
        return MSV_ERR_NOMEM;
    }
    for (size_t i = 0; i < rows && !PQgetisnull(r, (int)i, 2); i++) {
        size_t len = (size_t)PQgetlength(r, (int)i, 4);

        if (*n == max || (*n > 0 && bytes + len > max_bytes)) {
            *more = 1;
            break;
        }
        l[*n].epoch = (uint64_t)col_i64(r, (int)i, 2);
        l[*n].sender = (uint64_t)col_i64(r, (int)i, 3);
        if ((l[*n].delivery = col_bytes(r, (int)i, 4, &l[*n].len)) == NULL) {
            err = MSV_ERR_NOMEM;
            break;
        }
        bytes += l[*n].len;
        (*n)++;
    }
    PQclear(r);
    if (err != MSV_OK) {
        msv_mls_logged_free(l, *n);
        *n = 0;
        *more = 0;
        return err;
    }
    *out = l;
    return MSV_OK;
}

/* Devices whose expired envelopes one transaction of queue_expire removes (one lock each). */
#define EXPIRE_DEVICES 256

/*
 * Removes the expired envelopes of the EXPIRE_DEVICES lowest devices that have any, after
 * taking their locks in ascending order, as a commit takes them; *devices says how many.
 */
static msv_err expire_some(struct pg_conn *c, int64_t now_ms, size_t *devices, size_t *expired)
{
    struct args a = {0}, b = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, now_ms);
    a_i64(&a, EXPIRE_DEVICES);
    err = query(c,
                "SELECT COUNT(*), COALESCE(MAX(d), 0) FROM (SELECT d, pg_advisory_xact_lock(d)"
                " FROM (SELECT DISTINCT device_id AS d FROM queue WHERE expires_ms <= $1"
                " ORDER BY d LIMIT $2) AS s) AS l;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    *devices = (size_t)col_i64(r, 0, 0);
    a_i64(&b, now_ms);
    a_i64(&b, col_i64(r, 0, 1));
    PQclear(r);
    /* every device up to the highest locked one with expired envelopes is locked, or done */
    return run_count(c, "DELETE FROM queue WHERE expires_ms <= $1 AND device_id <= $2;", &b,
                     expired);
}

static msv_err queue_usage(struct pg_conn *c, struct msv_queue_usage *u, size_t n)
{
    struct text_buf devs = {0};
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    if (n == 0)
        return MSV_OK;
    tb_str(&devs, "{");
    for (size_t i = 0; i < n; i++) {
        tb_i64(&devs, (int64_t)u[i].device_id);
        tb_str(&devs, i + 1 < n ? "," : "}");
    }
    a_text(&a, devs.p);
    err = devs.failed ? MSV_ERR_NOMEM
                      : query(c,
                              "SELECT COALESCE(u.envelopes, 0), COALESCE(u.bytes, 0) FROM"
                              " unnest($1::BIGINT[]) WITH ORDINALITY AS w(d, o) LEFT JOIN"
                              " queue_usage u ON u.device_id = w.d ORDER BY w.o;",
                              &a, &r);
    free(devs.p);
    if (err != MSV_OK)
        return err;
    if ((size_t)PQntuples(r) != n)
        err = MSV_ERR_IO;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        u[i].envelopes = (uint64_t)col_i64(r, (int)i, 0);
        u[i].bytes = (uint64_t)col_i64(r, (int)i, 1);
    }
    PQclear(r);
    return err;
}

/* One statement for all n devices (one round trip), their rows taken in ascending order. */
static msv_err queue_refusal_add(struct pg_conn *c, const uint64_t *device_ids, size_t n)
{
    struct text_buf devs = {0};
    struct args a = {0};
    msv_err err;

    if (n == 0)
        return MSV_OK;
    tb_str(&devs, "{");
    for (size_t i = 0; i < n; i++) {
        tb_i64(&devs, (int64_t)device_ids[i]);
        tb_str(&devs, i + 1 < n ? "," : "}");
    }
    if (devs.failed) {
        free(devs.p);
        return MSV_ERR_NOMEM;
    }
    a_text(&a, devs.p);
    err = run(c,
              "INSERT INTO queue_refusals SELECT d, count(*) FROM unnest($1::BIGINT[]) AS t(d)"
              " GROUP BY d ORDER BY d ON CONFLICT (device_id) DO UPDATE"
              " SET refused = queue_refusals.refused + EXCLUDED.refused;",
              &a);
    free(devs.p);
    return err;
}

static msv_err queue_refusal_take(struct pg_conn *c, uint64_t device_id, uint64_t *refused)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    /* one statement: the count read is the one deleted */
    err = query(c, "DELETE FROM queue_refusals WHERE device_id = $1 RETURNING refused;", &a, &r);
    if (err == MSV_OK)
        *refused = PQntuples(r) == 1 ? (uint64_t)col_i64(r, 0, 0) : 0;
    PQclear(r);
    return err;
}

static msv_err queue_last_id(struct pg_conn *c, uint64_t device_id, int64_t now_ms, uint64_t *last)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    a_i64(&a, now_ms);
    err =
        query(c, "SELECT COALESCE(MAX(id), 0) FROM queue WHERE device_id = $1 AND expires_ms > $2;",
              &a, &r);
    if (err == MSV_OK) {
        *last = (uint64_t)col_i64(r, 0, 0);
        PQclear(r);
    }
    return err;
}

static msv_err connection_order(struct pg_conn *c, uint64_t *out)
{
    PGresult *r = NULL;
    /* above the last one (the sequence starts at the clock as the store opens: migrate) */
    msv_err err = query(c, "SELECT nextval('connection_order');", NULL, &r);

    if (err == MSV_OK) {
        *out = (uint64_t)col_i64(r, 0, 0);
        PQclear(r);
    }
    return err;
}

static msv_err queue_depth(struct pg_conn *c, uint64_t *count)
{
    PGresult *r = NULL;
    msv_err err = query(c, "SELECT COUNT(*) FROM queue;", NULL, &r);

    if (err == MSV_OK) {
        *count = (uint64_t)col_i64(r, 0, 0);
        PQclear(r);
    }
    return err;
}

/* ---- blobs ---------------------------------------------------------------------------- */

static msv_err blob_create(struct pg_conn *c, const struct msv_blob_rec *b)
{
    struct args a = {0};

    a_bytes(&a, b->id, MSV_BLOB_ID_LEN);
    a_i64(&a, (int64_t)b->owner_device);
    a_i64(&a, (int64_t)b->size);
    a_i64(&a, (int64_t)b->received);
    a_text(&a, b->complete ? "t" : "f");
    a_bytes(&a, b->sha256, 32);
    a_i64(&a, b->expires_ms);
    return run(c,
               "INSERT INTO blobs (id, owner_device, size, received, complete, sha256, expires_ms,"
               " account_id) VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE((SELECT account_id FROM"
               " devices WHERE id = $2), 0));",
               &a);
}

static msv_err blob_get(struct pg_conn *c, const uint8_t id[MSV_BLOB_ID_LEN],
                        struct msv_blob_rec *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_bytes(&a, id, MSV_BLOB_ID_LEN);
    err = query(c,
                "SELECT owner_device, size, received, complete, sha256, expires_ms FROM blobs"
                " WHERE id = $1;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) == 1 && col_fixed(r, 0, 4, out->sha256, 32)) {
        memcpy(out->id, id, MSV_BLOB_ID_LEN);
        out->owner_device = (uint64_t)col_i64(r, 0, 0);
        out->size = (uint64_t)col_i64(r, 0, 1);
        out->received = (uint64_t)col_i64(r, 0, 2);
        out->complete = (int)col_i64(r, 0, 3);
        out->expires_ms = col_i64(r, 0, 5);
    } else {
        err = MSV_ERR_NOT_FOUND;
    }
    PQclear(r);
    return err;
}

static msv_err blob_update(struct pg_conn *c, const struct msv_blob_rec *b)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    a_i64(&a, (int64_t)b->received);
    a_text(&a, b->complete ? "t" : "f");
    a_bytes(&a, b->sha256, 32);
    a_i64(&a, b->expires_ms);
    a_bytes(&a, b->id, MSV_BLOB_ID_LEN);
    err = run_count(c,
                    "UPDATE blobs SET received = $1, complete = $2, sha256 = $3, expires_ms = $4"
                    " WHERE id = $5;",
                    &a, &n);
    return err == MSV_OK && n == 0 ? MSV_ERR_NOT_FOUND : err;
}

static msv_err blob_usage(struct pg_conn *c, uint64_t device_id, int64_t now_ms,
                          struct msv_blob_usage *out)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    a_i64(&a, (int64_t)device_id);
    a_i64(&a, now_ms);
    err = query(c,
                "SELECT (SELECT COUNT(*) FROM blobs WHERE owner_device = $1 AND NOT complete"
                "  AND expires_ms > $2),"
                " (SELECT COALESCE(SUM(size), 0)::BIGINT FROM blobs WHERE owner_device = $1"
                "  AND expires_ms > $2),"
                " a.bytes, a.n FROM (SELECT COALESCE(SUM(size), 0)::BIGINT AS bytes, COUNT(*) AS n"
                "  FROM blobs WHERE account_id = (SELECT account_id FROM devices WHERE id = $1)"
                "  AND expires_ms > $2) AS a;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    *out = (struct msv_blob_usage){.open = (uint64_t)col_i64(r, 0, 0),
                                   .device_bytes = (uint64_t)col_i64(r, 0, 1),
                                   .account_bytes = (uint64_t)col_i64(r, 0, 2),
                                   .account_count = (uint64_t)col_i64(r, 0, 3)};
    PQclear(r);
    return MSV_OK;
}

static msv_err blob_expire(struct pg_conn *c, int64_t now_ms, size_t max,
                           uint8_t (**ids)[MSV_BLOB_ID_LEN], size_t *count)
{
    struct args a = {0};
    PGresult *r = NULL;
    uint8_t(*list)[MSV_BLOB_ID_LEN];
    size_t n = 0;
    msv_err err;

    a_i64(&a, now_ms);
    a_i64(&a, (int64_t)max);
    err =
        query(c,
              "DELETE FROM blobs WHERE id IN (SELECT id FROM blobs WHERE expires_ms <= $1 ORDER BY"
              " expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id;",
              &a, &r);
    if (err != MSV_OK)
        return err;
    list = malloc((size_t)(PQntuples(r) ? PQntuples(r) : 1) * MSV_BLOB_ID_LEN);
    for (int i = 0; list != NULL && i < PQntuples(r); i++)
        if (col_fixed(r, i, 0, list[n], MSV_BLOB_ID_LEN))
            n++;
    PQclear(r);
    if (list == NULL)
        return MSV_ERR_NOMEM;
    *ids = list;
    *count = n;
    return MSV_OK;
}

/* ---- the operations table -------------------------------------------------------------- */

static msv_err p_account_create(void *impl, const char *handle, const char *password_hash,
                                int64_t now_ms, uint64_t *account_id)
{
    TRANSACTION(account_create(c_, handle, password_hash, now_ms, account_id));
}

static msv_err p_account_get(void *impl, const char *handle, uint64_t *account_id,
                             char **password_hash)
{
    POOLED(account_get(c_, handle, account_id, password_hash));
}

static msv_err p_account_handle(void *impl, uint64_t account_id, char **handle)
{
    POOLED(account_handle(c_, account_id, handle));
}

static msv_err p_account_list(void *impl, struct msv_account_summary **out, size_t *n)
{
    POOLED(account_list(c_, out, n));
}

static msv_err p_account_set_suspended(void *impl, const char *handle, int suspended)
{
    POOLED(account_set_suspended(c_, handle, suspended));
}

static msv_err p_account_set_password(void *impl, uint64_t account_id, const char *password_hash)
{
    POOLED(account_set_password(c_, account_id, password_hash));
}

static msv_err p_account_suspended(void *impl, uint64_t account_id, int *suspended)
{
    POOLED(account_suspended(c_, account_id, suspended));
}

static msv_err p_username_stamp(void *impl, uint64_t account_id, int64_t now_ms,
                                int64_t interval_ms, int64_t *last_ms)
{
    POOLED(username_stamp(c_, account_id, now_ms, interval_ms, last_ms));
}

/* report_add under the reporter's account lock: two reports at once (two nodes, two workers)
 * count each other, so [reports] per_day holds (READ COMMITTED alone let both see the count
 * before either and pass it). */
static msv_err report_add_locked(struct pg_conn *c, uint64_t reporter_account, const char *reported,
                                 const char *reason, const char *text, int64_t now_ms,
                                 int64_t since_ms, unsigned max_recent, uint64_t *id)
{
    msv_err err = lock_account(c, reporter_account);

    return err == MSV_OK ? report_add(c, reporter_account, reported, reason, text, now_ms, since_ms,
                                      max_recent, id)
                         : err;
}

static msv_err p_report_add(void *impl, uint64_t reporter_account, const char *reported,
                            const char *reason, const char *text, int64_t now_ms, int64_t since_ms,
                            unsigned max_recent, uint64_t *id)
{
    TRANSACTION(report_add_locked(c_, reporter_account, reported, reason, text, now_ms, since_ms,
                                  max_recent, id));
}

static msv_err p_report_list(void *impl, size_t limit, struct msv_report **out, size_t *n)
{
    POOLED(report_list(c_, limit, out, n));
}

static msv_err p_report_get(void *impl, uint64_t id, struct msv_report **out)
{
    POOLED(report_get(c_, id, out));
}

static msv_err p_report_set_state(void *impl, uint64_t id, const char *state)
{
    POOLED(report_set_state(c_, id, state));
}

static msv_err p_invite_add(void *impl, const uint8_t hash[32], const char *note, uint32_t uses,
                            int64_t now_ms, int64_t expires_ms, uint64_t *id)
{
    POOLED(invite_add(c_, hash, note, uses, now_ms, expires_ms, id));
}

static msv_err p_invite_list(void *impl, struct msv_invite **out, size_t *n)
{
    POOLED(invite_list(c_, out, n));
}

static msv_err p_invite_revoke(void *impl, uint64_t id)
{
    POOLED(invite_revoke(c_, id));
}

static msv_err p_invite_take(void *impl, const uint8_t hash[32], int64_t now_ms, int dry_run)
{
    POOLED(invite_take(c_, hash, now_ms, dry_run));
}

static msv_err p_invite_give_back(void *impl, const uint8_t hash[32])
{
    POOLED(invite_give_back(c_, hash));
}

static msv_err p_stats(void *impl, struct msv_store_stats *out)
{
    POOLED(stats(c_, out));
}

static msv_err p_code_put(void *impl, const char *handle, const uint8_t hash[32], int64_t now_ms,
                          int64_t expires_ms)
{
    POOLED(code_put(c_, handle, hash, now_ms, expires_ms));
}

static msv_err p_code_take(void *impl, const char *handle, const uint8_t hash[32], int64_t now_ms,
                           unsigned max_attempts)
{
    struct pg_conn *c = acquire(impl);
    msv_err err, result = MSV_OK;

    if (c == NULL)
        return MSV_ERR_IO;
    err = begin(c);

    /* a wrong code must still commit its attempt count, so the outcome is not the tx's */
    if (err == MSV_OK) {
        result = code_take(c, handle, hash, now_ms, max_attempts);
        err = finish(c, result == MSV_ERR_AUTH || result == MSV_ERR_NOT_FOUND ? MSV_OK : result);
    }
    give_back(impl, c);
    return err == MSV_OK ? result : err;
}

/* A device and its first prekeys, in one transaction (sqlite.c device_add_logged). */
static msv_err device_add_with_prekeys(struct pg_conn *c, uint64_t account_id, uint32_t suite,
                                       const uint8_t *identity, size_t identity_len,
                                       const uint8_t *push_token, size_t push_token_len,
                                       int approved, int64_t now_ms,
                                       const struct msv_prekey_upload *first,
                                       const struct msv_kt_approval *approval, uint64_t *device_id)
{
    uint32_t left = 0, signed_id = 0;
    msv_err err = device_add(c, account_id, suite, identity, identity_len, push_token,
                             push_token_len, approved, now_ms, approval, device_id);

    if (err == MSV_OK && first != NULL)
        err = prekeys_put(c, *device_id, first, SIZE_MAX, &left, &signed_id);
    return err;
}

static msv_err p_device_add(void *impl, uint64_t account_id, uint32_t suite,
                            const uint8_t *identity, size_t identity_len, const uint8_t *push_token,
                            size_t push_token_len, int approved, int64_t now_ms,
                            const struct msv_prekey_upload *first,
                            const struct msv_kt_approval *approval, uint64_t *device_id)
{
    TRANSACTION(device_add_with_prekeys(c_, account_id, suite, identity, identity_len, push_token,
                                        push_token_len, approved, now_ms, first, approval,
                                        device_id));
}

static msv_err p_device_approve(void *impl, uint64_t account_id, uint64_t device_id,
                                const struct msv_kt_approval *approval)
{
    TRANSACTION(device_approve(c_, account_id, device_id, approval));
}

static msv_err p_device_remove(void *impl, uint64_t account_id, uint64_t device_id)
{
    TRANSACTION(device_remove(c_, account_id, device_id));
}

static msv_err p_handles_of_account(void *impl, uint64_t account_id, char ***out, size_t *n)
{
    POOLED(handles_of_account(c_, account_id, out, n));
}

static msv_err p_handle_add(void *impl, uint64_t account_id, const char *handle, size_t max,
                            int64_t now_ms)
{
    TRANSACTION(handle_add(c_, account_id, handle, max, now_ms));
}

static msv_err p_handle_remove(void *impl, uint64_t account_id, const char *handle, int64_t now_ms)
{
    TRANSACTION(handle_remove(c_, account_id, handle, now_ms));
}

static msv_err p_account_delete(void *impl, const char *handle, int64_t now_ms,
                                struct msv_account_deleted *out)
{
    struct pg_conn *c_ = acquire(impl);
    msv_err err;

    memset(out, 0, sizeof(*out));
    if (c_ == NULL)
        return MSV_ERR_IO;
    /* run again, as TRANSACTION does, when a deadlock or serialization failure ended it */
    for (int try_ = 0; try_ < TRIES; try_++) {
        c_->busy = 0;
        msv_account_deleted_clear(out);
        err = begin(c_);
        if (err == MSV_OK)
            err = finish(c_, account_delete(c_, handle, now_ms, out));
        if (err != MSV_ERR_IO || !c_->busy || c_->broken)
            break;
    }
    give_back(impl, c_);
    if (err != MSV_OK)
        msv_account_deleted_clear(out);
    return err;
}

static msv_err p_device_get(void *impl, uint64_t device_id, struct msv_device_rec *out)
{
    POOLED(device_get(c_, device_id, out));
}

static msv_err p_devices_of_account(void *impl, uint64_t account_id, struct msv_device_list *out)
{
    POOLED(devices_of_account(c_, account_id, out));
}

static msv_err p_connection_order(void *impl, uint64_t *out)
{
    POOLED(connection_order(c_, out));
}

static msv_err p_queue_put(void *impl, const struct msv_queue_in *items, size_t n, int64_t now_ms,
                           int64_t expires_ms, uint64_t *ids)
{
    TRANSACTION(queue_put(c_, items, n, now_ms, expires_ms, ids));
}

static msv_err p_queue_fetch(void *impl, uint64_t device_id, uint64_t after_id, int64_t now_ms,
                             size_t limit, struct msv_queue_rec **out, size_t *count)
{
    POOLED(queue_fetch(c_, device_id, after_id, now_ms, limit, out, count));
}

static msv_err p_queue_fetch_many(void *impl, struct msv_queue_read *reads, size_t n,
                                  int64_t now_ms)
{
    POOLED(queue_fetch_many(c_, reads, n, now_ms));
}

static msv_err p_queue_last_id(void *impl, uint64_t device_id, int64_t now_ms, uint64_t *last)
{
    POOLED(queue_last_id(c_, device_id, now_ms, last));
}

static msv_err p_queue_ack(void *impl, uint64_t device_id, const uint64_t *ids, size_t n,
                           size_t *deleted)
{
    TRANSACTION(queue_ack(c_, device_id, ids, n, deleted));
}

static msv_err p_queue_commit(void *impl, const struct msv_queue_in *items, size_t n,
                              int64_t now_ms, int64_t expires_ms, uint64_t *ids,
                              struct msv_queue_ack *acks, size_t n_acks)
{
    TRANSACTION(queue_commit(c_, items, n, now_ms, expires_ms, ids, acks, n_acks));
}

static msv_err p_expire_some(void *impl, int64_t now_ms, size_t *devices, size_t *expired)
{
    TRANSACTION(expire_some(c_, now_ms, devices, expired));
}

static msv_err mls_log_expire(struct pg_conn *c, int64_t now_ms)
{
    struct args a = {0};

    a_i64(&a, now_ms);
    return run(c, "DELETE FROM mls_commit_log WHERE expires_ms <= $1;", &a);
}

/* The Welcomes kept that expired (mls_welcome_put), MLS_WELCOMES_SWEPT a statement, so that
 * each holds few row locks; *n: how many the last swept. */
#define MLS_WELCOMES_SWEPT 1000
static msv_err mls_welcomes_sweep(struct pg_conn *c, int64_t now_ms, size_t *n)
{
    struct args a = {0};

    a_i64(&a, now_ms);
    a_i64(&a, MLS_WELCOMES_SWEPT);
    return run_count(c,
                     "UPDATE mls_members SET welcome = NULL, welcome_expires_ms = 0 WHERE"
                     " (group_id, device_id) IN (SELECT group_id, device_id FROM mls_members"
                     " WHERE welcome_expires_ms > 0 AND welcome_expires_ms <= $1 LIMIT $2 FOR"
                     " UPDATE SKIP LOCKED) AND welcome_expires_ms > 0 AND welcome_expires_ms <="
                     " $1;",
                     &a, n);
}

static msv_err p_mls_welcomes_sweep(void *impl, int64_t now_ms, size_t *n)
{
    POOLED(mls_welcomes_sweep(c_, now_ms, n));
}

static msv_err p_mls_log_expire(void *impl, int64_t now_ms)
{
    POOLED(mls_log_expire(c_, now_ms));
}

/* In transactions of EXPIRE_DEVICES devices, so that the locks held stay few. */
static msv_err p_queue_expire(void *impl, int64_t now_ms, size_t *expired)
{
    size_t devices = EXPIRE_DEVICES, some = 0;
    msv_err err = p_mls_log_expire(impl, now_ms); /* the MLS commit logs expire with the queue */

    *expired = 0;
    while (err == MSV_OK && devices == EXPIRE_DEVICES) {
        err = p_expire_some(impl, now_ms, &devices, &some);
        *expired += err == MSV_OK ? some : 0;
    }
    /* and so do the Welcomes kept, once the queue is swept (a failure here is returned with
     * the queue swept all the same, and those are swept at the next) */
    for (size_t swept = MLS_WELCOMES_SWEPT; err == MSV_OK && swept == MLS_WELCOMES_SWEPT;)
        err = p_mls_welcomes_sweep(impl, now_ms, &swept);
    return err;
}

static msv_err p_queue_usage(void *impl, struct msv_queue_usage *u, size_t n)
{
    POOLED(queue_usage(c_, u, n));
}

static msv_err p_queue_refusal_add(void *impl, const uint64_t *device_ids, size_t n)
{
    POOLED(queue_refusal_add(c_, device_ids, n));
}

static msv_err p_queue_refusal_take(void *impl, uint64_t device_id, uint64_t *refused)
{
    POOLED(queue_refusal_take(c_, device_id, refused));
}

static msv_err p_queue_depth(void *impl, uint64_t *count)
{
    POOLED(queue_depth(c_, count));
}

static msv_err p_blob_create(void *impl, const struct msv_blob_rec *rec)
{
    POOLED(blob_create(c_, rec));
}

static msv_err p_blob_get(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], struct msv_blob_rec *out)
{
    POOLED(blob_get(c_, id, out));
}

static msv_err p_blob_update(void *impl, const struct msv_blob_rec *rec)
{
    POOLED(blob_update(c_, rec));
}

static msv_err p_blob_usage(void *impl, uint64_t device_id, int64_t now_ms,
                            struct msv_blob_usage *out)
{
    POOLED(blob_usage(c_, device_id, now_ms, out));
}

static msv_err p_blob_expire(void *impl, int64_t now_ms, size_t max,
                             uint8_t (**ids)[MSV_BLOB_ID_LEN], size_t *count)
{
    POOLED(blob_expire(c_, now_ms, max, ids, count));
}

static msv_err p_kt_read(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                         size_t *count)
{
    POOLED(kt_read(c_, start, max, out, count));
}

static msv_err p_kt_handle_read(void *impl, const char *handle, uint64_t start, size_t max,
                                struct msv_kt_rec **out, size_t *count)
{
    POOLED(kt_handle_read(c_, handle, start, max, out, count));
}

static msv_err p_kt_latest(void *impl, const char *handle, struct msv_kt_rec *out)
{
    POOLED(kt_latest(c_, handle, 0, out));
}

static msv_err p_kt_tombstone_latest(void *impl, const char *handle, struct msv_kt_rec *out)
{
    POOLED(kt_latest(c_, handle, 1, out));
}

static msv_err p_kt_append(void *impl, uint64_t index, const uint8_t *leaf, size_t len)
{
    POOLED(kt_append_at(c_, index, leaf, len));
}

static msv_err p_kt_labels_read(void *impl, uint64_t start, size_t max, struct msv_kt_rec **out,
                                size_t *count)
{
    POOLED(kt_labels_read(c_, start, max, out, count));
}

static msv_err p_kt_labels_put(void *impl, const struct msv_kt_rec *recs, size_t n)
{
    TRANSACTION(kt_labels_put(c_, recs, n));
}

static msv_err p_kt_publish(void *impl, uint64_t index, const uint8_t *pub, size_t len)
{
    POOLED(kt_publish(c_, index, pub, len));
}

static void p_set_fault_hook(void *impl, msv_store_fault_fn fn, void *ctx)
{
    struct pg_store *s = impl;

    pthread_mutex_lock(&s->lock);
    s->fault = fn;
    s->fault_ctx = ctx;
    pthread_mutex_unlock(&s->lock);
}

static void p_kt_set_labeler(void *impl, msv_kt_labeler fn, void *ctx)
{
    struct pg_store *s = impl;

    pthread_mutex_lock(&s->lock);
    s->labeler = fn;
    s->labeler_ctx = ctx;
    pthread_mutex_unlock(&s->lock);
}

static msv_err p_prekeys_put(void *impl, uint64_t device_id, const struct msv_prekey_upload *u,
                             size_t max_one_time, uint32_t *left, uint32_t *signed_id)
{
    TRANSACTION(prekeys_put(c_, device_id, u, max_one_time, left, signed_id));
}

static msv_err p_prekey_claim(void *impl, uint64_t device_id, int one_time,
                              struct msv_prekey_claimed *out)
{
    TRANSACTION(prekey_and_kem_claim(c_, device_id, one_time, out));
}

static msv_err p_kem_prekey_state(void *impl, uint64_t device_id, uint32_t *left,
                                  uint32_t *last_resort_id)
{
    TRANSACTION(kem_prekey_state(c_, device_id, left, last_resort_id));
}

static msv_err p_delivery_token_set(void *impl, uint64_t device_id, const uint8_t hash[32])
{
    POOLED(delivery_token_set(c_, device_id, hash));
}

static msv_err p_delivery_token_check(void *impl, uint64_t account_id, const uint8_t hash[32])
{
    POOLED(delivery_token_check(c_, account_id, hash));
}

static msv_err p_mls_key_packages_put(void *impl, uint64_t device_id,
                                      const struct msv_mls_key_package_upload *up, size_t max,
                                      uint32_t *left, int *has_last_resort)
{
    TRANSACTION(mls_kp_put(c_, device_id, up, max, left, has_last_resort));
}

static msv_err p_mls_key_package_claim(void *impl, uint64_t device_id, int only_last_resort,
                                       uint64_t claimer, int64_t now_ms, int64_t expires_ms,
                                       size_t max_claims, uint8_t **kp, size_t *len,
                                       int *last_resort)
{
    *kp = NULL;
    TRANSACTION(mls_claim(c_, device_id, only_last_resort, claimer, now_ms, expires_ms, max_claims,
                          kp, len, last_resort));
}

static msv_err p_mls_group_get(void *impl, const uint8_t *group_id, size_t group_len,
                               uint64_t *epoch, uint64_t **members, size_t *n)
{
    POOLED(mls_group_get(c_, group_id, group_len, epoch, members, n));
}

static msv_err mls_groups_of_device(struct pg_conn *c, uint64_t device_id, size_t max,
                                    struct msv_mls_group_rec **groups, size_t *n)
{
    struct args a = {0};
    PGresult *r = NULL;
    struct msv_mls_group_rec *out;
    size_t rows;
    msv_err err;

    *n = 0;
    a_i64(&a, (int64_t)device_id);
    a_i64(&a, (int64_t)max);
    err = query(c,
                "SELECT g.group_id, g.epoch FROM mls_members m JOIN mls_groups g ON g.group_id ="
                " m.group_id WHERE m.device_id = $1 ORDER BY g.group_id LIMIT $2;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    rows = (size_t)PQntuples(r);
    out = calloc(rows ? rows : 1, sizeof(*out));
    for (size_t i = 0; out != NULL && i < rows && err == MSV_OK; i++) {
        size_t len = 0;
        uint8_t *id = col_bytes(r, (int)i, 0, &len);

        if (id == NULL) {
            err = MSV_ERR_NOMEM;
            break;
        }
        if (len > sizeof(out[i].group_id))
            len = sizeof(out[i].group_id);
        memcpy(out[i].group_id, id, len);
        free(id);
        out[i].group_len = len;
        out[i].epoch = (uint64_t)col_i64(r, (int)i, 1);
    }
    PQclear(r);
    if (out == NULL || err != MSV_OK) {
        free(out);
        return out == NULL ? MSV_ERR_NOMEM : err;
    }
    *groups = out;
    *n = rows;
    return MSV_OK;
}

static msv_err p_mls_groups_of_device(void *impl, uint64_t device_id, size_t max,
                                      struct msv_mls_group_rec **groups, size_t *n)
{
    POOLED(mls_groups_of_device(c_, device_id, max, groups, n));
}

static msv_err mls_leave(struct pg_conn *c, const uint8_t *group_id, size_t group_len,
                         uint64_t device_id, const struct msv_queue_in *items, size_t n_items,
                         int64_t now_ms, int64_t expires_ms, uint64_t *ids)
{
    struct args a = {0};
    size_t n = 0;
    msv_err err;

    /* the recipients' locks first (queue_put), then the group's row, as a commit takes them:
     * two leaves of a group's last members follow each other, and the second sees it empty */
    err = n_items > 0 ? queue_put(c, items, n_items, now_ms, expires_ms, ids) : MSV_OK;
    a_bytes(&a, group_id, group_len);
    if (err == MSV_OK)
        err = run(c, "SELECT 1 FROM mls_groups WHERE group_id = $1 FOR UPDATE;", &a);
    a_i64(&a, (int64_t)device_id);
    if (err == MSV_OK)
        err =
            run_count(c, "DELETE FROM mls_members WHERE group_id = $1 AND device_id = $2;", &a, &n);
    if (err == MSV_OK && n == 0)
        return MSV_ERR_NOT_FOUND;
    return err == MSV_OK ? mls_group_drop(c, group_id, group_len) : err;
}

static msv_err p_mls_leave(void *impl, const uint8_t *group_id, size_t group_len,
                           uint64_t device_id, const struct msv_queue_in *items, size_t n,
                           int64_t now_ms, int64_t expires_ms, uint64_t *ids)
{
    TRANSACTION(mls_leave(c_, group_id, group_len, device_id, items, n, now_ms, expires_ms, ids));
}

static msv_err p_mls_commit(void *impl, const struct msv_mls_commit *c, uint64_t *epoch_now)
{
    TRANSACTION(mls_commit(c_, c, epoch_now));
}

/*
 * The advisory locks of every device it names (its copies' and those left out) first, in
 * ascending order, as a commit and an account's deletion take them before any row lock;
 * then the members' rows, then the queue.
 */
static msv_err mls_welcome_put(struct pg_conn *c, const struct msv_mls_welcome *w)
{
    struct text_buf ids = {0};
    struct args a = {0};
    PGresult *r = NULL;
    uint64_t *named = malloc((w->n_items + w->n_left_out + 1) * sizeof(*named));
    msv_err err = named == NULL ? MSV_ERR_NOMEM : MSV_OK;

    memset(w->kept, 0, w->n_left_out);
    for (size_t i = 0; err == MSV_OK && i < w->n_items + w->n_left_out; i++)
        named[i] = i < w->n_items ? w->items[i].device_id : w->left_out[i - w->n_items];
    if (err == MSV_OK)
        err = lock_devices(c, named, w->n_items + w->n_left_out);
    free(named);
    a_bytes(&a, w->group_id, w->group_len);
    if (err == MSV_OK && w->n_left_out > 0) {
        err = mls_ids(&a, w->left_out, w->n_left_out, &ids);
        a_i64(&a, (int64_t)w->sender);
        a_bytes(&a, w->delivery, w->len);
        a_i64(&a, w->expires_ms);
        if (err == MSV_OK)
            err = query(c,
                        "UPDATE mls_members SET welcome = $4, welcome_expires_ms = $5 WHERE"
                        " group_id = $1 AND device_id = ANY($2::BIGINT[]) AND added_by = $3 AND"
                        " added_by <> 0 RETURNING device_id;",
                        &a, &r);
        for (int i = 0; err == MSV_OK && i < PQntuples(r); i++) {
            uint64_t kept = (uint64_t)col_i64(r, i, 0);

            for (size_t k = 0; k < w->n_left_out; k++)
                if (w->left_out[k] == kept)
                    w->kept[k] = 1;
        }
        PQclear(r);
    }
    free(ids.p);
    /* a recipient it is queued for: the sender's Welcome kept for it before is stale */
    if (err == MSV_OK && w->n_items > 0) {
        struct text_buf to = {0};
        struct args b = {0};
        uint64_t *devs = malloc(w->n_items * sizeof(*devs));

        err = devs == NULL ? MSV_ERR_NOMEM : MSV_OK;
        for (size_t i = 0; err == MSV_OK && i < w->n_items; i++)
            devs[i] = w->items[i].device_id;
        a_bytes(&b, w->group_id, w->group_len);
        if (err == MSV_OK)
            err = mls_ids(&b, devs, w->n_items, &to);
        a_i64(&b, (int64_t)w->sender);
        if (err == MSV_OK)
            err = run(c,
                      "UPDATE mls_members SET welcome = NULL, welcome_expires_ms = 0 WHERE"
                      " group_id = $1 AND device_id = ANY($2::BIGINT[]) AND added_by = $3 AND"
                      " welcome_expires_ms > 0;",
                      &b);
        free(to.p);
        free(devs);
    }
    return err == MSV_OK ? queue_put(c, w->items, w->n_items, w->now_ms, w->expires_ms, w->ids)
                         : err;
}

static msv_err p_mls_welcome_put(void *impl, const struct msv_mls_welcome *w)
{
    TRANSACTION(mls_welcome_put(c_, w));
}

static msv_err mls_welcome_get(struct pg_conn *c, const uint8_t *group_id, size_t group_len,
                               uint64_t device_id, int64_t now_ms, uint8_t **delivery, size_t *len,
                               uint64_t *sender)
{
    struct args a = {0};
    PGresult *r = NULL;
    msv_err err;

    *delivery = NULL;
    *len = 0;
    a_bytes(&a, group_id, group_len);
    a_i64(&a, (int64_t)device_id);
    a_i64(&a, now_ms);
    err = query(c,
                "SELECT welcome_expires_ms > $3 AND welcome IS NOT NULL, added_by, welcome FROM"
                " mls_members WHERE group_id = $1 AND device_id = $2;",
                &a, &r);
    if (err != MSV_OK)
        return err;
    if (PQntuples(r) != 1)
        err = MSV_ERR_AUTH; /* no member */
    else if (col_i64(r, 0, 0) == 0)
        err = MSV_ERR_NOT_FOUND;
    else if ((*delivery = col_bytes(r, 0, 2, len)) == NULL)
        err = MSV_ERR_NOMEM;
    else
        *sender = (uint64_t)col_i64(r, 0, 1);
    PQclear(r);
    return err;
}

static msv_err mls_welcome_drop(struct pg_conn *c, const uint8_t *group_id, size_t group_len,
                                uint64_t device_id, const uint8_t *delivery, size_t len)
{
    struct args a = {0};

    a_bytes(&a, group_id, group_len);
    a_i64(&a, (int64_t)device_id);
    a_bytes(&a, delivery, len);
    return run(c,
               "UPDATE mls_members SET welcome = NULL, welcome_expires_ms = 0 WHERE group_id = $1"
               " AND device_id = $2 AND welcome = $3;",
               &a);
}

static msv_err p_mls_welcome_drop(void *impl, const uint8_t *group_id, size_t group_len,
                                  uint64_t device_id, const uint8_t *delivery, size_t len)
{
    POOLED(mls_welcome_drop(c_, group_id, group_len, device_id, delivery, len));
}

static msv_err p_mls_welcome_get(void *impl, const uint8_t *group_id, size_t group_len,
                                 uint64_t device_id, int64_t now_ms, uint8_t **delivery,
                                 size_t *len, uint64_t *sender)
{
    POOLED(mls_welcome_get(c_, group_id, group_len, device_id, now_ms, delivery, len, sender));
}

static msv_err p_mls_commits_since(void *impl, const uint8_t *group_id, size_t group_len,
                                   uint64_t device_id, uint64_t from, int64_t now_ms, size_t max,
                                   size_t max_bytes, struct msv_mls_logged **out, size_t *n,
                                   uint64_t *epoch, int *more)
{
    POOLED(mls_commits_since(c_, group_id, group_len, device_id, from, now_ms, max, max_bytes, out,
                             n, epoch, more));
}

static void pg_close(void *impl)
{
    struct pg_store *s = impl;

    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_conns; i++)
        if (s->conns[i].db != NULL)
            PQfinish(s->conns[i].db);
    free(s->conns);
    free(s->conninfo);
    pthread_cond_destroy(&s->freed);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const struct msv_store_ops pg_ops = {
    .name = "postgres",
    .close = pg_close,
    .account_create = p_account_create,
    .account_get = p_account_get,
    .account_handle = p_account_handle,
    .account_list = p_account_list,
    .account_set_suspended = p_account_set_suspended,
    .account_set_password = p_account_set_password,
    .account_delete = p_account_delete,
    .handles_of_account = p_handles_of_account,
    .handle_add = p_handle_add,
    .handle_remove = p_handle_remove,
    .report_add = p_report_add,
    .report_list = p_report_list,
    .report_get = p_report_get,
    .report_set_state = p_report_set_state,
    .invite_add = p_invite_add,
    .invite_list = p_invite_list,
    .invite_revoke = p_invite_revoke,
    .invite_take = p_invite_take,
    .invite_give_back = p_invite_give_back,
    .account_suspended = p_account_suspended,
    .username_stamp = p_username_stamp,
    .stats = p_stats,
    .code_put = p_code_put,
    .code_take = p_code_take,
    .device_add = p_device_add,
    .device_approve = p_device_approve,
    .device_remove = p_device_remove,
    .device_get = p_device_get,
    .devices_of_account = p_devices_of_account,
    .connection_order = p_connection_order,
    .queue_put = p_queue_put,
    .queue_fetch = p_queue_fetch,
    .queue_fetch_many = p_queue_fetch_many,
    .queue_last_id = p_queue_last_id,
    .queue_ack = p_queue_ack,
    .queue_commit = p_queue_commit,
    .queue_expire = p_queue_expire,
    .queue_depth = p_queue_depth,
    .queue_usage = p_queue_usage,
    .queue_refusal_add = p_queue_refusal_add,
    .queue_refusal_take = p_queue_refusal_take,
    .blob_create = p_blob_create,
    .blob_get = p_blob_get,
    .blob_update = p_blob_update,
    .blob_usage = p_blob_usage,
    .blob_expire = p_blob_expire,
    .kt_read = p_kt_read,
    .kt_latest = p_kt_latest,
    .kt_handle_read = p_kt_handle_read,
    .kt_tombstone_latest = p_kt_tombstone_latest,
    .kt_append = p_kt_append,
    .kt_labels_read = p_kt_labels_read,
    .kt_labels_put = p_kt_labels_put,
    .kt_set_labeler = p_kt_set_labeler,
    .kt_publish = p_kt_publish,
    .set_fault_hook = p_set_fault_hook,
    .prekeys_put = p_prekeys_put,
    .prekey_claim = p_prekey_claim,
    .kem_prekey_state = p_kem_prekey_state,
    .delivery_token_set = p_delivery_token_set,
    .delivery_token_check = p_delivery_token_check,
    .mls_key_packages_put = p_mls_key_packages_put,
    .mls_key_package_claim = p_mls_key_package_claim,
    .mls_group_get = p_mls_group_get,
    .mls_commit = p_mls_commit,
    .mls_commits_since = p_mls_commits_since,
    .mls_welcome_put = p_mls_welcome_put,
    .mls_welcome_get = p_mls_welcome_get,
    .mls_welcome_drop = p_mls_welcome_drop,
    .mls_leave = p_mls_leave,
    .mls_groups_of_device = p_mls_groups_of_device,
};

/* Logs the device set of every account that has approved devices and no leaf yet. */
static msv_err backfill_log(struct pg_conn *c)
{
    PGresult *r = NULL;
    msv_err err = query(c,
                        "SELECT a.id FROM accounts a WHERE EXISTS (SELECT 1 FROM devices d WHERE"
                        " d.account_id = a.id AND d.approved) AND NOT EXISTS (SELECT 1 FROM kt_log"
                        " k WHERE k.handle = a.handle);",
                        NULL, &r);

    for (int i = 0; err == MSV_OK && i < PQntuples(r); i++) {
        err = begin(c);
        if (err == MSV_OK)
            err = finish(c, kt_append(c, (uint64_t)col_i64(r, i, 0), msv_wall_ms()));
    }
    PQclear(r);
    return err;
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "relation already exists, skipping" and the like */
}

msv_err msv_store_open_postgres(const char *conninfo, unsigned connections, unsigned timeout_ms,
                                unsigned pool_wait_ms, char *why, size_t why_len,
                                struct msv_store **out)
{
    struct pg_store *s = calloc(1, sizeof(*s));
    struct msv_store *store = calloc(1, sizeof(*store));
    pthread_condattr_t monotonic;
    msv_err err = MSV_ERR_NOMEM;

    if (why_len > 0)
        why[0] = '\0';
    if (connections == 0 || connections > 256)
        connections = 4;
    if (s == NULL || store == NULL)
        goto fail;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&s->freed, &monotonic);
    pthread_condattr_destroy(&monotonic);
    s->pool_wait_ms = pool_wait_ms;
    if ((s->conninfo = strdup(conninfo)) == NULL ||
        (s->conns = calloc(connections, sizeof(*s->conns))) == NULL)
        goto fail;
    s->timeout_ms = timeout_ms;
    /* libpq counts whole seconds, at least 2 */
    snprintf(s->connect_timeout, sizeof(s->connect_timeout), "%u",
             timeout_ms < 2000 ? 2 : (timeout_ms + 999) / 1000);
    snprintf(s->options, sizeof(s->options), "-c statement_timeout=%u", timeout_ms);
    for (; s->n_conns < connections; s->n_conns++) {
        struct pg_conn *c = &s->conns[s->n_conns];

        connect_conn(s, c);
        if (c->db == NULL || PQstatus(c->db) != CONNECTION_OK) {
            if (c->db != NULL) {
                snprintf(why, why_len, "%s", PQerrorMessage(c->db));
                why[strcspn(why, "\n")] = '\0';
                PQfinish(c->db);
                c->db = NULL;
            }
            err = MSV_ERR_IO;
            goto fail;
        }
        c->next_free = s->free_list;
        s->free_list = c;
    }
    err = migrate(s->conns[0].db);
    if (err == MSV_OK)
        err = backfill_log(&s->conns[0]);
    if (err != MSV_OK) {
        snprintf(why, why_len, "%s",
                 err == MSV_ERR_UNSUPPORTED ? "the database's schema is newer than this missived's"
                                            : PQerrorMessage(s->conns[0].db));
        why[strcspn(why, "\n")] = '\0';
        goto fail;
    }
    store->ops = &pg_ops;
    store->impl = s;
    *out = store;
    return MSV_OK;
fail:
    pg_close(s);
    free(store);
    return err;
}
