/* missive-admin backup, restore and migrate of a SQLite data directory (apps/admin_backup.c). */
#ifndef MSV_ADMIN_BACKUP_H
#define MSV_ADMIN_BACKUP_H

#include "server/config.h"

/*
 * Copies cfg's data directory, with missived running or not, into dest, a new directory:
 * missive.db, the shared directory's log key, certificate and their public halves, blobs/
 * with every complete attachment the copy records, and backup.ok last. Progress and errors
 * on standard error; returns the exit status (0, or 1).
 */
int admin_backup(const struct msv_config *cfg, const char *dest, int json);
/*
 * Checks the backup in src (backup.ok, the database's integrity and schema, the log key, every
 * attachment's size and SHA-256), then copies it into cfg's data (and shared) directory, which
 * must not exist or be empty. Returns the exit status (0, or 1).
 */
int admin_restore(const struct msv_config *cfg, const char *src, int json);

/*
 * Copies cfg's SQLite store, missived stopped, into the empty PostgreSQL database at conninfo
 * and prints every table's rows on both sides. Returns the exit status (0, or 1).
 */
int admin_migrate(const struct msv_config *cfg, const char *conninfo, int json);

#endif
