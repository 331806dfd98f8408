/* SQLite helpers shared by the store module's databases (server and client). */
#ifndef MSV_STORE_SQL_H
#define MSV_STORE_SQL_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "missive/error.h"

/* Maps an SQLite result code to msv_err (constraint violations are MSV_ERR_EXISTS). */
msv_err msv_sql_err(int rc);
/* Not must-check: a ROLLBACK after a failure is best effort. */
msv_err msv_sql_exec(sqlite3 *db, const char *sql);
MSV_MUST_CHECK msv_err msv_sql_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st);
/* Steps a statement that returns no rows, then finalises it. */
MSV_MUST_CHECK msv_err msv_sql_run(sqlite3_stmt *st);
/* Copies a column: text NUL-terminated, blob with its length (caller frees; NULL if out of memory).
 */
char *msv_sql_text(sqlite3_stmt *st, int col);
uint8_t *msv_sql_blob(sqlite3_stmt *st, int col, size_t *len);
/*
 * Steps st to its end, reading each row into one more element of elem bytes
 * (zeroed first) with read_row; st is left for the caller to finalize or
 * reset. On success the list goes to *out and *count; on failure drop frees
 * the rows read (a half-read one included) and nothing is returned. *rc (may
 * be NULL) receives the last step's SQLite code.
 */
MSV_MUST_CHECK msv_err msv_sql_rows(sqlite3_stmt *st, size_t elem,
                                    msv_err (*read_row)(sqlite3_stmt *, void *),
                                    void (*drop)(void *, size_t), void **out, size_t *count,
                                    int *rc);
/*
 * Opens path (creating it with mode 0600), sets WAL and synchronous=FULL, and
 * applies migrations[v] for every version v past the recorded one, each in
 * its own transaction. A database from a newer schema is MSV_ERR_UNSUPPORTED.
 * flags are added to sqlite3_open_v2's (SQLITE_OPEN_NOMUTEX for a connection its caller
 * serializes itself).
 */
MSV_MUST_CHECK msv_err msv_sql_open(const char *path, const char *const *migrations, size_t n,
                                    int flags, sqlite3 **out);

#endif
