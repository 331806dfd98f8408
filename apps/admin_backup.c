/*
 * missive-admin backup, restore and migrate: a running server's SQLite store, its
 * transparency log key, its certificate and its attachments, copied into a new
 * directory, and such a directory put back into an empty data directory.
 *
 * Consistency: the database is copied first, from one read transaction (one
 * commit's state, whatever missived writes meanwhile). An attachment's file is
 * published (renamed from .part, synced) before its record says it is
 * complete, and never written again, only deleted at expiry; so the file of
 * every complete, unexpired attachment the copy records is there, with the
 * bytes its record's size and SHA-256 name, when the files are copied next.
 * Attachments finished after the copy, and unfinished uploads, are left out
 * (their records are not in the copy). backup.ok, written last, marks a backup
 * complete; restore refuses a directory without it.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "missive/util.h"
#include "admin_backup.h"
#include "server/control.h"
#include "store/store.h"

#define PATH_LEN 1400
#define COPY_CHUNK 65536

/* The files of the shared directory a backup carries beside the database and the blobs. */
static const char *const key_files[] = {
    "log.key", "log.pub", "server.crt", "server.key", "server.fingerprint", "vrf.key", "vrf.pub"};

/* Says what went wrong on standard error; returns 1, the exit status. */
__attribute__((format(printf, 1, 2))) static int say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "missive-admin: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int ok = fd >= 0 && fsync(fd) == 0;

    if (fd >= 0)
        close(fd);
    return ok;
}

/*
 * Copies src to dst (new, mode 0600, synced), or with dst NULL only reads it; *size and sha256
 * (both may be NULL) say what was read. Returns 0, or -1 with errno set (ENOENT if src does not
 * exist). A half-written dst is removed.
 */
static int copy_file(const char *src, const char *dst, uint64_t *size, uint8_t sha256[32])
{
    crypto_hash_sha256_state h;
    uint8_t *buf = malloc(COPY_CHUNK);
    int in = buf != NULL ? open(src, O_RDONLY | O_CLOEXEC) : -1, out = -1, ok;
    int saved = buf == NULL ? ENOMEM : errno;
    uint64_t total = 0;
    ssize_t n = -1;

    if (in >= 0 && dst != NULL)
        out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    crypto_hash_sha256_init(&h);
    ok = in >= 0 && (dst == NULL || out >= 0);
    while (ok && (n = read(in, buf, COPY_CHUNK)) > 0) {
        ok = out < 0 || write(out, buf, (size_t)n) == n;
        crypto_hash_sha256_update(&h, buf, (unsigned long long)n);
        total += (uint64_t)n;
    }
    ok = ok && n == 0 && (out < 0 || fsync(out) == 0);
    saved = ok ? 0 : errno ? errno : saved;
    if (out >= 0 && close(out) != 0)
        ok = 0;
    if (!ok && out >= 0)
        unlink(dst);
    if (in >= 0)
        close(in);
    free(buf);
    if (ok && size != NULL)
        *size = total;
    if (ok && sha256 != NULL)
        crypto_hash_sha256_final(&h, sha256);
    errno = saved;
    return ok ? 0 : -1;
}

/* Prints the database's copy every tenth of the way (and at its end) on standard error. */
static void show_progress(void *arg, int done, int total)
{
    int *shown = arg;
    int tenth = total > 0 ? done * 10 / total : 10;

    if (tenth <= *shown)
        return;
    *shown = tenth;
    fprintf(stderr, "missive-admin: database: %d of %d pages copied\n", done, total);
}

static void blob_name(const uint8_t id[MSV_BLOB_ID_LEN], char hex[2 * MSV_BLOB_ID_LEN + 1])
{
    if (msv_hex_encode(id, MSV_BLOB_ID_LEN, hex, 2 * MSV_BLOB_ID_LEN + 1) != MSV_OK)
        hex[0] = '\0'; /* cannot happen: the buffer fits */
}

/*
 * Copies the complete, unexpired attachments the database at db records from src_dir to
 * dst_dir (made, 0700), checking each one's size and SHA-256; with dst_dir NULL, only checks
 * them. Returns 0 and *count, or 1 (said). Copying into a backup (db its copy of the live
 * database, live), an attachment whose file is gone because the live database no longer
 * records it (it expired, or its account was deleted, since the database was copied) is left
 * out, its record deleted from the copy, and said; a file gone that live still records fails
 * the backup (a directory unmounted, a file lost).
 */
static int copy_blobs(const char *db, const char *live, const char *src_dir, const char *dst_dir,
                      int64_t now, size_t *count)
{
    struct msv_blob_file *list = NULL;
    char src[PATH_LEN], dst[PATH_LEN], hex[2 * MSV_BLOB_ID_LEN + 1];
    size_t n = 0, i;
    int rc = 0;

    *count = 0;
    if (msv_store_sqlite_blob_files(db, &list, &n) != MSV_OK)
        return say("%s: the attachments' records cannot be read", db);
    if (dst_dir != NULL && mkdir(dst_dir, 0700) != 0 && errno != EEXIST)
        rc = say("cannot make %s: %s", dst_dir, strerror(errno));
    for (i = 0; rc == 0 && i < n; i++) {
        uint8_t sha[32];
        uint64_t size = 0;
        int copied, failed, kept;

        if (list[i].expires_ms <= now)
            continue; /* the server deletes it at its next sweep */
        blob_name(list[i].id, hex);
        snprintf(src, sizeof(src), "%s/%s", src_dir, hex);
        snprintf(dst, sizeof(dst), "%s/%s", dst_dir ? dst_dir : "", hex);
        copied = copy_file(src, dst_dir ? dst : NULL, &size, sha) == 0;
        failed = copied ? 0 : errno;
        kept = !copied && failed == ENOENT && live != NULL
                   ? msv_store_sqlite_blob_kept(live, list[i].id, now)
                   : 1;
        if (kept < 0) {
            rc = say("attachment %s is gone, and %s cannot be read to tell whether it went "
                     "meanwhile",
                     src, live);
        } else if (kept == 0) {
            if (msv_store_sqlite_blob_forget(db, list[i].id) != MSV_OK)
                rc = say("%s: the record of attachment %s cannot be left out", db, hex);
            else
                fprintf(stderr,
                        "missive-admin: attachment %s went while the backup ran (it expired, or "
                        "its account was deleted): left out\n",
                        hex);
        } else if (!copied)
            rc = say("attachment %s cannot be copied: %s", src, strerror(failed));
        else if (size != list[i].size || sodium_memcmp(sha, list[i].sha256, 32) != 0)
            rc = say("attachment %s does not have the size and SHA-256 its record names", src);
        else
            (*count)++;
    }
    free(list);
    if (rc == 0 && dst_dir != NULL && !sync_dir(dst_dir))
        rc = say("cannot sync %s: %s", dst_dir, strerror(errno));
    return rc;
}

/* Copies the key files that exist in src_dir to dst_dir; log.key must be one. */
static int copy_keys(const char *src_dir, const char *dst_dir)
{
    char src[PATH_LEN], dst[PATH_LEN];

    for (size_t i = 0; i < sizeof(key_files) / sizeof(key_files[0]); i++) {
        snprintf(src, sizeof(src), "%s/%s", src_dir, key_files[i]);
        snprintf(dst, sizeof(dst), "%s/%s", dst_dir, key_files[i]);
        if (copy_file(src, dst, NULL, NULL) == 0 || (errno == ENOENT && i > 0))
            continue;
        return say("cannot copy %s: %s", src, strerror(errno));
    }
    return 0;
}

/* Writes backup.ok into dir, the mark of a complete backup, and syncs dir. */
static int mark_complete(const char *dir, size_t blobs)
{
    char path[PATH_LEN];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/backup.ok", dir);
    f = fopen(path, "wx");
    if (f == NULL)
        return say("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "missive-admin backup 1\nattachments %zu\n", blobs);
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0 || !ok || !sync_dir(dir))
        return say("cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* What a finished backup or restore says: one JSON object or one line. Returns 0. */
static int done(int json, const char *key, const char *dir, const char *verb, const char *a,
                const char *preposition, const char *b, size_t n)
{
    if (json) {
        json_t *j = json_pack("{s:s, s:I}", key, dir, "attachments", (json_int_t)n);

        json_dumpf(j, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(j);
        return 0;
    }
    printf("%s %s %s %s: the database, the log key and %zu attachments\n", verb, a, preposition, b,
           n);
    return 0;
}

static int is_sqlite(const struct msv_config *cfg, const char *what)
{
    if (strcmp(cfg->store_backend, "sqlite") == 0)
        return 1;
    fprintf(stderr,
            "missive-admin: %s works on the SQLite store; with PostgreSQL use pg_dump and "
            "pg_restore and copy the shared directory's files (docs/missived.md, Backups)\n",
            what);
    return 0;
}

int admin_backup(const struct msv_config *cfg, const char *dest, int json)
{
    char db[PATH_LEN], copy[PATH_LEN], blobs[PATH_LEN], dst_blobs[PATH_LEN];
    const char *shared = msv_config_shared_dir(cfg);
    size_t n = 0;
    int shown = -1;
    struct stat sb;
    msv_err err;

    if (!is_sqlite(cfg, "backup"))
        return 1;
    snprintf(db, sizeof(db), "%s/missive.db", cfg->data_dir);
    if (stat(db, &sb) != 0)
        return say("no missived database in %s (%s)", cfg->data_dir, strerror(errno));
    if (mkdir(dest, 0700) != 0)
        return say("cannot make %s: %s (a backup goes into a new directory)", dest,
                   strerror(errno));
    snprintf(copy, sizeof(copy), "%s/missive.db", dest);
    err = msv_store_sqlite_backup(db, copy, json ? NULL : show_progress, &shown);
    if (err != MSV_OK) {
        rmdir(dest);
        return say("copying %s failed: %s", db, msv_strerror(err));
    }
    snprintf(blobs, sizeof(blobs), "%s/blobs", shared);
    snprintf(dst_blobs, sizeof(dst_blobs), "%s/blobs", dest);
    /* tests only: a pause (at most 10 s) between the database's copy and the attachments',
     * for what the server does meanwhile, begun once DEST.paused exists (tests/test_ops.sh) */
    if (getenv("MISSIVE_ADMIN_TEST_PAUSE_MS") != NULL) {
        unsigned long ms = strtoul(getenv("MISSIVE_ADMIN_TEST_PAUSE_MS"), NULL, 10);
        char paused[PATH_LEN];
        FILE *f;

        snprintf(paused, sizeof(paused), "%s.paused", dest);
        if ((f = fopen(paused, "w")) != NULL)
            fclose(f);
        usleep((useconds_t)(ms < 10000 ? ms : 10000) * 1000);
    }
    if (copy_keys(shared, dest) != 0 ||
        copy_blobs(copy, db, blobs, dst_blobs, msv_config_now_ms(cfg), &n) != 0 ||
        mark_complete(dest, n) != 0) {
        fprintf(stderr, "missive-admin: %s is incomplete (no backup.ok): remove it\n", dest);
        return 1;
    }
    return done(json, "backup", dest, "backed up", cfg->data_dir, "into", dest, n);
}

/* 1 if dir does not exist or holds nothing; otherwise says why not and 0. */
static int is_empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int empty = 1;

    if (d == NULL && errno == ENOENT)
        return 1;
    if (d == NULL)
        return !say("cannot read %s: %s", dir, strerror(errno));
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    if (!empty)
        say("%s is not empty: restore only into an empty data directory", dir);
    return empty;
}

/* The backup's log.key is a key and log.pub, if there, its public half. */
static int check_log_key(const char *src)
{
    char path[PATH_LEN], hex[2 * crypto_sign_PUBLICKEYBYTES + 1], pub[2 * 32 + 2] = "";
    uint8_t *sk = sodium_malloc(crypto_sign_SECRETKEYBYTES), pk[crypto_sign_PUBLICKEYBYTES];
    FILE *f;
    int fd, ok;

    snprintf(path, sizeof(path), "%s/log.key", src);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ok = sk != NULL && fd >= 0 && read(fd, sk, crypto_sign_SECRETKEYBYTES) == 64;
    if (fd >= 0)
        close(fd);
    if (ok)
        crypto_sign_ed25519_sk_to_pk(pk, sk);
    sodium_free(sk);
    if (!ok)
        return say("%s is not a log key (64 bytes)", path);
    snprintf(path, sizeof(path), "%s/log.pub", src);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    ok = fgets(pub, sizeof(pub), f) != NULL;
    fclose(f);
    pub[strcspn(pub, "\n")] = '\0';
    if (!ok || msv_hex_encode(pk, sizeof(pk), hex, sizeof(hex)) != MSV_OK || strcmp(hex, pub) != 0)
        return say("%s is not the public half of log.key", path);
    return 0;
}

/* Checks what a restore would copy, before anything is written. */
static int check_backup(const struct msv_config *cfg, const char *src)
{
    char path[PATH_LEN], why[PATH_LEN + 200], tmp[PATH_LEN];
    struct stat sb;
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/backup.ok", src);
    if (stat(path, &sb) != 0)
        return say("%s is not a complete missive-admin backup (no backup.ok)", src);
    snprintf(path, sizeof(path), "%s/missive.db", src);
    if (msv_store_sqlite_check(path, why, sizeof(why)) != MSV_OK)
        return say("%s", why);
    if (check_log_key(src) != 0)
        return 1;
    snprintf(tmp, sizeof(tmp), "%s/blobs", src);
    return copy_blobs(path, NULL, tmp, NULL, msv_config_now_ms(cfg), &n);
}

int admin_restore(const struct msv_config *cfg, const char *src, int json)
{
    char db[PATH_LEN], copy[PATH_LEN], blobs[PATH_LEN], dst_blobs[PATH_LEN];
    const char *shared = msv_config_shared_dir(cfg);
    size_t n = 0;
    int shown = -1;
    msv_err err;

    if (!is_sqlite(cfg, "restore") || check_backup(cfg, src) != 0)
        return 1;
    if (!is_empty_dir(cfg->data_dir) || !is_empty_dir(shared))
        return 1;
    if ((mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) ||
        (mkdir(shared, 0700) != 0 && errno != EEXIST))
        return say("cannot make %s: %s", cfg->data_dir, strerror(errno));
    snprintf(db, sizeof(db), "%s/missive.db", src);
    snprintf(copy, sizeof(copy), "%s/missive.db", cfg->data_dir);
    snprintf(blobs, sizeof(blobs), "%s/blobs", src);
    snprintf(dst_blobs, sizeof(dst_blobs), "%s/blobs", shared);
    err = msv_store_sqlite_backup(db, copy, json ? NULL : show_progress, &shown);
    if (err != MSV_OK)
        return say("copying %s failed: %s", db, msv_strerror(err));
    if (copy_keys(src, shared) != 0 ||
        copy_blobs(db, NULL, blobs, dst_blobs, msv_config_now_ms(cfg), &n) != 0 ||
        !sync_dir(cfg->data_dir) || !sync_dir(shared)) {
        fprintf(stderr, "missive-admin: the restore into %s failed; empty it before trying again\n",
                cfg->data_dir);
        return 1;
    }
    return done(json, "restored", cfg->data_dir, "restored", cfg->data_dir, "from", src, n);
}

int admin_migrate(const struct msv_config *cfg, const char *conninfo, int json)
{
    struct msv_migrated_table *t = NULL;
    char db[PATH_LEN], why[1024];
    size_t n = 0;
    msv_err err;

    if (strcmp(cfg->store_backend, "sqlite") != 0)
        return say("migrate copies a SQLite store, and this configuration's is %s",
                   cfg->store_backend);
    if (msv_control_node_runs(cfg->data_dir))
        return say("missived runs on %s: stop it first (the copy must be its last state)",
                   cfg->data_dir);
    snprintf(db, sizeof(db), "%s/missive.db", cfg->data_dir);
    err = msv_store_migrate_to_postgres(db, conninfo, cfg->store_timeout_ms, &t, &n, why,
                                        sizeof(why));
    if (err != MSV_OK)
        return say("nothing was migrated: %s", why[0] ? why : msv_strerror(err));
    if (!json)
        printf("%-20s %12s %12s\n", "table", "sqlite", "postgres");
    for (size_t i = 0; i < n; i++) {
        json_t *j = json ? json_pack("{s:s, s:I, s:I}", "table", t[i].name, "sqlite",
                                     (json_int_t)t[i].from, "postgres", (json_int_t)t[i].to)
                         : NULL;

        if (j != NULL) {
            json_dumpf(j, stdout, JSON_COMPACT);
            putchar('\n');
            json_decref(j);
        } else if (!json) {
            printf("%-20s %12llu %12llu\n", t[i].name, (unsigned long long)t[i].from,
                   (unsigned long long)t[i].to);
        }
    }
    if (!json)
        printf("migrated %zu tables in one transaction; now set [store] backend = postgres and "
               "postgres = the same connection string, and start missived\n",
               n);
    free(t);
    return 0;
}
