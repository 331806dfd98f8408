/*
 * A stopped server's SQLite store copied into PostgreSQL (missive-admin migrate --to-postgres).
 *
 * Both backends keep the same tables under the same names and columns (postgres.c), so the
 * copy is generic: every SQLite table, its rows as they are, into the table of that name, all
 * in one PostgreSQL transaction that commits only if every table then holds as many rows on
 * both sides. Integers and text go as text (PostgreSQL reads 0/1 as booleans), blobs in
 * binary as bytea. Two things are not plain rows: queue_usage, which PostgreSQL's triggers
 * fill as the queue is copied, is emptied and copied last so that it is SQLite's; and each
 * id sequence starts past the highest id SQLite ever gave (sqlite_sequence), so that no
 * device id, once removed, is given out again.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "store/sql.h"
#include "store/store.h"

#define MIGRATE_TABLES_MAX 64
#define MIGRATE_COLUMNS_MAX 32

struct migration {
    sqlite3 *lite;
    PGconn *pg;
    char *why;
    size_t why_len;
};

/* Says what failed (libpq's words if any) and returns err. */
static msv_err failed(struct migration *m, msv_err err, const char *what, const char *table)
{
    const char *pq = m->pg != NULL ? PQerrorMessage(m->pg) : "";

    snprintf(m->why, m->why_len, "%s%s%s%s%s", what, table ? " " : "", table ? table : "",
             pq[0] ? ": " : "", pq);
    m->why[strcspn(m->why, "\n")] = '\0';
    return err;
}

/* Runs sql (no parameters) on PostgreSQL; *out (may be NULL) keeps its rows, else cleared. */
static msv_err pg_run(struct migration *m, const char *sql, PGresult **out)
{
    PGresult *r = PQexec(m->pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (ok && out != NULL)
        *out = r;
    else
        PQclear(r);
    return ok ? MSV_OK : MSV_ERR_IO;
}

/* One number sql answers on PostgreSQL (its first row and column). */
static msv_err pg_number(struct migration *m, const char *sql, long long *v)
{
    PGresult *r = NULL;
    msv_err err = pg_run(m, sql, &r);

    if (err == MSV_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        *v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else if (err == MSV_OK)
        err = MSV_ERR_PARSE;
    PQclear(r);
    return err;
}

/* One number sql answers on SQLite; 0 when there is no row (or no such table, if missing_ok). */
static msv_err lite_number(struct migration *m, const char *sql, int missing_ok, long long *v)
{
    sqlite3_stmt *st = NULL;
    msv_err err = msv_sql_prepare(m->lite, sql, &st);
    int rc = err == MSV_OK ? sqlite3_step(st) : SQLITE_ERROR;

    *v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (err == MSV_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = msv_sql_err(rc);
    sqlite3_finalize(st);
    return err != MSV_OK && missing_ok ? MSV_OK : err;
}

/*
 * fmt with its arguments into out, if table (one of them) is a plain name, as the backends'
 * own tables and columns are (lower case, digits, _): so it needs no quoting anywhere.
 */
__attribute__((format(printf, 4, 5))) static int with_table(char *out, size_t len,
                                                            const char *table, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (const char *p = table; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9')))
            return 0;
    va_start(ap, fmt);
    n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n >= 0 && n < (int)len;
}

/*
 * The names of the tables of each side, in copy order (accounts first, queue_usage last).
 * account_seq is SQLite's record of the account ids given out, which PostgreSQL keeps in the
 * accounts id sequence (move_sequences).
 */
static msv_err lite_tables(struct migration *m, struct msv_migrated_table *t, size_t *n)
{
    sqlite3_stmt *st = NULL;
    msv_err err =
        msv_sql_prepare(m->lite,
                        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT"
                        " LIKE 'sqlite_%' AND name NOT IN ('schema_version', 'account_seq')"
                        " ORDER BY name <>"
                        " 'accounts', name = 'queue_usage', name;",
                        &st);

    *n = 0;
    while (err == MSV_OK && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == MIGRATE_TABLES_MAX)
            err = MSV_ERR_TOO_BIG;
        else
            snprintf(t[(*n)++].name, sizeof(t->name), "%s", sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return err;
}

/* PostgreSQL has every table SQLite has and no other; each of them is empty. */
static msv_err check_target(struct migration *m, const struct msv_migrated_table *t, size_t n)
{
    char sql[256];
    PGresult *r = NULL;
    long long rows = 0;
    msv_err err = pg_run(m,
                         "SELECT table_name FROM information_schema.tables WHERE table_schema ="
                         " current_schema() AND table_type = 'BASE TABLE' AND table_name <>"
                         " 'missive_schema';",
                         &r);

    if (err != MSV_OK)
        return failed(m, err, "reading PostgreSQL's tables", NULL);
    if ((size_t)PQntuples(r) != n)
        err = failed(m, MSV_ERR_UNSUPPORTED, "the two stores do not have the same tables", NULL);
    PQclear(r);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (!with_table(sql, sizeof(sql), t[i].name,
                        "SELECT COUNT(*) FROM (SELECT 1 FROM \"%s\" LIMIT 1) x;", t[i].name))
            return failed(m, MSV_ERR_INVALID, "an unexpected table name", t[i].name);
        err = pg_number(m, sql, &rows);
        if (err != MSV_OK)
            return failed(m, err, "PostgreSQL has no table", t[i].name);
        if (rows != 0)
            return failed(m, MSV_ERR_EXISTS,
                          "the target is not empty (migrate only into a new database): table",
                          t[i].name);
    }
    return err;
}

/* The INSERT for st's columns into table, prepared on PostgreSQL as "copy". */
static msv_err prepare_insert(struct migration *m, sqlite3_stmt *st, const char *table)
{
    char sql[4096];
    int cols = sqlite3_column_count(st), len, ok;
    PGresult *r;

    if (cols < 1 || cols > MIGRATE_COLUMNS_MAX)
        return MSV_ERR_TOO_BIG;
    len = snprintf(sql, sizeof(sql), "INSERT INTO \"%s\" (", table);
    for (int c = 0; c < cols && len < (int)sizeof(sql); c++)
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, "%s\"%s\"", c ? ", " : "",
                        sqlite3_column_name(st, c));
    for (int c = 0; c < cols && len < (int)sizeof(sql); c++)
        len +=
            snprintf(sql + len, sizeof(sql) - (size_t)len, "%s$%d", c ? ", " : ") VALUES (", c + 1);
    if (len + 2 >= (int)sizeof(sql))
        return MSV_ERR_TOO_BIG;
    memcpy(sql + len, ")", 2);
    r = PQprepare(m->pg, "copy", sql, cols, NULL);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? MSV_OK : MSV_ERR_IO;
}

/* Sends the SQLite row st is on as one execution of "copy". */
static msv_err insert_row(struct migration *m, sqlite3_stmt *st)
{
    char numbers[MIGRATE_COLUMNS_MAX][32];
    const char *values[MIGRATE_COLUMNS_MAX];
    int lengths[MIGRATE_COLUMNS_MAX], formats[MIGRATE_COLUMNS_MAX];
    int cols = sqlite3_column_count(st), ok;
    PGresult *r;

    for (int c = 0; c < cols; c++) {
        int type = sqlite3_column_type(st, c);

        formats[c] = type == SQLITE_BLOB; /* bytea in binary: its bytes as they are */
        lengths[c] = sqlite3_column_bytes(st, c);
        values[c] = type == SQLITE_BLOB ? (const char *)sqlite3_column_blob(st, c)
                                        : (const char *)sqlite3_column_text(st, c);
        if (type == SQLITE_INTEGER) {
            snprintf(numbers[c], sizeof(numbers[c]), "%lld",
                     (long long)sqlite3_column_int64(st, c));
            values[c] = numbers[c];
        }
        if (type == SQLITE_NULL)
            values[c] = NULL;
        if (type == SQLITE_BLOB && values[c] == NULL)
            values[c] = ""; /* an empty blob */
    }
    r = PQexecPrepared(m->pg, "copy", cols, values, lengths, formats, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? MSV_OK : MSV_ERR_IO;
}

static msv_err copy_table(struct migration *m, const char *table)
{
    char sql[256];
    sqlite3_stmt *st = NULL;
    msv_err err = MSV_OK;
    int rc;

    /* PostgreSQL's triggers counted the queue as it came: SQLite's counters replace them */
    if (strcmp(table, "queue_usage") == 0 && pg_run(m, "DELETE FROM queue_usage;", NULL) != MSV_OK)
        return failed(m, MSV_ERR_IO, "emptying", table);
    if (!with_table(sql, sizeof(sql), table, "SELECT * FROM \"%s\";", table) ||
        msv_sql_prepare(m->lite, sql, &st) != MSV_OK)
        return failed(m, MSV_ERR_IO, "reading SQLite's table", table);
    if (prepare_insert(m, st, table) != MSV_OK)
        err = failed(m, MSV_ERR_IO, "preparing the copy of", table);
    while (err == MSV_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        if (insert_row(m, st) != MSV_OK)
            err = failed(m, MSV_ERR_IO, "copying a row of", table);
    if (err == MSV_OK && rc != SQLITE_DONE)
        err = failed(m, msv_sql_err(rc), "reading SQLite's table", table);
    sqlite3_finalize(st);
    if (pg_run(m, "DEALLOCATE copy;", NULL) != MSV_OK && err == MSV_OK)
        err = failed(m, MSV_ERR_IO, "after copying", table);
    return err;
}

/* Each id sequence of table goes on past the highest id SQLite has or ever gave out. */
static msv_err move_sequences(struct migration *m, const char *table)
{
    char sql[512];
    PGresult *r = NULL;
    long long given = 0, highest = 0;
    msv_err err;

    if (!with_table(sql, sizeof(sql), table,
                    "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                    " current_schema() AND table_name = '%s' AND column_default LIKE 'nextval%%';",
                    table) ||
        pg_run(m, sql, &r) != MSV_OK)
        return failed(m, MSV_ERR_IO, "reading the sequences of", table);
    err = with_table(sql, sizeof(sql), table, "SELECT seq FROM sqlite_sequence WHERE name = '%s';",
                     table)
              ? lite_number(m, sql, 1, &given)
              : MSV_ERR_INVALID;
    if (err == MSV_OK && strcmp(table, "accounts") == 0) {
        long long seq = 0; /* a deleted account's id is never given out again */

        err = lite_number(m, "SELECT MAX(last) FROM account_seq;", 1, &seq);
        if (seq > given)
            given = seq;
    }
    for (int i = 0; err == MSV_OK && i < PQntuples(r); i++) {
        char max[256], *column = PQgetvalue(r, i, 0);

        if (!with_table(max, sizeof(max), column, "%s", column) ||
            snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(\"%s\"), 0) FROM \"%s\";", max,
                     table) >= (int)sizeof(sql) ||
            pg_number(m, sql, &highest) != MSV_OK)
            err = MSV_ERR_IO;
        if (err == MSV_OK)
            snprintf(sql, sizeof(sql),
                     "SELECT setval(pg_get_serial_sequence('\"%s\"', '%s'), %lld, false);", table,
                     max, (highest > given ? highest : given) + 1);
        if (err == MSV_OK)
            err = pg_run(m, sql, NULL);
    }
    PQclear(r);
    return err != MSV_OK ? failed(m, err, "setting the sequences of", table) : MSV_OK;
}

/* Fills in each table's rows on both sides; MSV_ERR_PARSE (said) if any differ. */
static msv_err count_rows(struct migration *m, struct msv_migrated_table *t, size_t n)
{
    char sql[256];
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        long long from = 0, to = 0;

        err = with_table(sql, sizeof(sql), t[i].name, "SELECT COUNT(*) FROM \"%s\";", t[i].name)
                  ? lite_number(m, sql, 0, &from)
                  : MSV_ERR_INVALID;
        if (err == MSV_OK)
            err = pg_number(m, sql, &to);
        if (err != MSV_OK)
            return failed(m, err, "counting the rows of", t[i].name);
        t[i].from = (uint64_t)from;
        t[i].to = (uint64_t)to;
        if (from != to)
            err = failed(m, MSV_ERR_PARSE, "the row counts differ in", t[i].name);
    }
    return err;
}

/* The copy itself, inside one transaction that commits only when everything matched. */
static msv_err copy_all(struct migration *m, struct msv_migrated_table *t, size_t n)
{
    msv_err err = pg_run(m, "BEGIN ISOLATION LEVEL SERIALIZABLE;", NULL);

    if (err != MSV_OK)
        return failed(m, err, "beginning the transaction", NULL);
    err = check_target(m, t, n);
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = copy_table(m, t[i].name);
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = move_sequences(m, t[i].name);
    if (err == MSV_OK)
        err = count_rows(m, t, n);
    if (err == MSV_OK && pg_run(m, "COMMIT;", NULL) != MSV_OK)
        err = failed(m, MSV_ERR_IO, "committing", NULL);
    if (err != MSV_OK)
        (void)pg_run(m, "ROLLBACK;", NULL);
    return err;
}

/* Brings both stores to this missived's schema (SQLite's upgraded, PostgreSQL's created). */
static msv_err make_schemas(const char *sqlite_path, const char *conninfo, unsigned timeout_ms,
                            char *why, size_t why_len)
{
    struct msv_store *s = NULL;
    msv_err err = msv_store_sqlite_check(sqlite_path, why, why_len);

    if (err == MSV_OK && (err = msv_store_open_sqlite(sqlite_path, &s)) != MSV_OK)
        snprintf(why, why_len, "%s cannot be opened: %s", sqlite_path, msv_strerror(err));
    msv_store_close(s);
    s = NULL;
    if (err == MSV_OK &&
        (err = msv_store_open_postgres(conninfo, 1, timeout_ms, 0, why, why_len, &s)) != MSV_OK &&
        why[0] == '\0')
        snprintf(why, why_len, "PostgreSQL: %s", msv_strerror(err));
    msv_store_close(s);
    return err;
}

msv_err msv_store_migrate_to_postgres(const char *sqlite_path, const char *conninfo,
                                      unsigned timeout_ms, struct msv_migrated_table **tables,
                                      size_t *n_tables, char *why, size_t why_len)
{
    struct migration m = {.why = why, .why_len = why_len};
    struct msv_migrated_table *t = calloc(MIGRATE_TABLES_MAX, sizeof(*t));
    size_t n = 0;
    msv_err err = t == NULL ? MSV_ERR_NOMEM : MSV_OK;

    why[0] = '\0';
    if (err == MSV_OK)
        err = make_schemas(sqlite_path, conninfo, timeout_ms, why, why_len);
    if (err == MSV_OK && sqlite3_open_v2(sqlite_path, &m.lite, SQLITE_OPEN_READONLY, NULL) != 0)
        err = failed(&m, MSV_ERR_IO, "opening", sqlite_path);
    if (err == MSV_OK && lite_tables(&m, t, &n) != MSV_OK)
        err = failed(&m, MSV_ERR_IO, "listing SQLite's tables", NULL);
    if (err == MSV_OK && (m.pg = PQconnectdb(conninfo)) != NULL && PQstatus(m.pg) != CONNECTION_OK)
        err = failed(&m, MSV_ERR_IO, "connecting to PostgreSQL", NULL);
    if (err == MSV_OK && m.pg == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = copy_all(&m, t, n);
    PQfinish(m.pg);
    sqlite3_close(m.lite);
    if (err != MSV_OK) {
        free(t);
        return err;
    }
    *tables = t;
    *n_tables = n;
    return MSV_OK;
}
