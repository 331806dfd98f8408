#include "store/sql.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

msv_err msv_sql_err(int rc)
{
    switch (rc) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return MSV_OK;
    case SQLITE_NOMEM:
        return MSV_ERR_NOMEM;
    case SQLITE_CONSTRAINT:
        return MSV_ERR_EXISTS;
    case SQLITE_TOOBIG:
        return MSV_ERR_TOO_BIG;
    default:
        return MSV_ERR_IO; /* disk full, I/O error, corruption, busy */
    }
}

msv_err msv_sql_exec(sqlite3 *db, const char *sql)
{
    return msv_sql_err(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

msv_err msv_sql_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    return msv_sql_err(sqlite3_prepare_v2(db, sql, -1, st, NULL));
}

msv_err msv_sql_run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? MSV_OK : msv_sql_err(rc);
}

char *msv_sql_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    char *out = malloc(n + 1);

    if (out != NULL) {
        if (n > 0)
            memcpy(out, t, n);
        out[n] = '\0';
    }
    return out;
}

uint8_t *msv_sql_blob(sqlite3_stmt *st, int col, size_t *len)
{
    const void *b = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    uint8_t *out = malloc(n ? n : 1);

    if (out != NULL && n > 0)
        memcpy(out, b, n);
    *len = n;
    return out;
}

static msv_err migrate(sqlite3 *db, const char *const *migrations, size_t n)
{
    sqlite3_stmt *st = NULL;
    int version = 0;
    msv_err err;

    err = msv_sql_exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);");
    if (err == MSV_OK)
        err = msv_sql_prepare(db, "SELECT MAX(version) FROM schema_version;", &st);
    if (err != MSV_OK)
        return err;
    if (sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > (int)n)
        return MSV_ERR_UNSUPPORTED; /* written by a newer version */
    for (size_t v = (size_t)version; v < n; v++) {
        char bump[96];

        snprintf(bump, sizeof(bump), "INSERT INTO schema_version VALUES (%zu);", v + 1);
        err = msv_sql_exec(db, "BEGIN IMMEDIATE;");
        if (err == MSV_OK)
            err = msv_sql_exec(db, migrations[v]);
        if (err == MSV_OK)
            err = msv_sql_exec(db, bump);
        if (err == MSV_OK)
            err = msv_sql_exec(db, "COMMIT;");
        if (err != MSV_OK) {
            (void)msv_sql_exec(db, "ROLLBACK;");
            return err;
        }
    }
    return MSV_OK;
}

msv_err msv_sql_open(const char *path, const char *const *migrations, size_t n, int flags,
                     sqlite3 **out)
{
    sqlite3 *db = NULL;
    msv_err err;
    int fd;

    /* create the file ourselves, so that it is private from the first byte */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return MSV_ERR_IO;
    close(fd);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | flags, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return MSV_ERR_IO;
    }
    sqlite3_busy_timeout(db, 5000);
    /* WAL + FULL: every commit is on disk before it returns; readers do not block the writer */
    err = msv_sql_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                           "PRAGMA foreign_keys = ON;");
    if (err == MSV_OK)
        err = migrate(db, migrations, n);
    if (err != MSV_OK) {
        sqlite3_close(db);
        return err;
    }
    *out = db;
    return MSV_OK;
}

/* Room for one more element of elem bytes (zeroed) after count in *items. */
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

msv_err msv_sql_rows(sqlite3_stmt *st, size_t elem, msv_err (*read_row)(sqlite3_stmt *, void *),
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
