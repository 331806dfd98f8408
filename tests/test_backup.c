/*
 * Encrypted backups: a round trip of an account directory, the passphrase
 * and every part of the file checked (a wrong passphrase, any changed,
 * missing or added byte is refused), and forged archives that try to write
 * outside the restore directory or twice.
 */
#define _GNU_SOURCE /* fmemopen, memmem */
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

#include "client/backup.h"
#include "client/sessions.h"
#include "helpers.h"
#include "missive/util.h"
#include "store/client_db.h"
#include "util/endian.h"

#define PASS "a passphrase for tests"
#define ATTACHMENT_LEN (200 * 1024 + 17) /* more than three chunks */

static const struct msv_backup_kdf quick = {1, MSV_BACKUP_MEM_WRITE_MIN_KIB};
/* a one-time prekey's secret and public key, and the signed prekey's, as sessions.c keeps them */
#define ONE_TIME_PREKEY "ONE-TIME-PREKEY-SECRET-32-BYTES!one-time-prekey-public-32-bytes!"
#define SIGNED_PREKEY "SIGNED-PREKEY-SECRET-32-BYTES-..signed-prekey-public-32-bytes-.."

struct fixture {
    char dir[64], account[96], backup[128], restore[96];
    uint8_t attachment[ATTACHMENT_LEN];
    uint8_t *file;
    size_t file_len;
};

static void put_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* An account directory with settings, a session and a received file, and its backup. */
static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct msv_client_db *db = NULL;
    char path[160];

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/msv-backup-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->account, sizeof(f->account), "%s/account", f->dir);
    snprintf(f->backup, sizeof(f->backup), "%s/account.msvb", f->dir);
    snprintf(f->restore, sizeof(f->restore), "%s/restore", f->dir);
    snprintf(path, sizeof(path), "%s/attachments", f->account);
    if (mkdir(f->account, 0700) != 0 || mkdir(path, 0700) != 0)
        return -1;
    test_fill_pattern(f->attachment, sizeof(f->attachment), 7);
    snprintf(path, sizeof(path), "%s/attachments/0011-photo.jpg", f->account);
    put_file(path, f->attachment, sizeof(f->attachment));
    snprintf(path, sizeof(path), "%s/state.db", f->account);
    if (msv_client_db_open(path, &db) != MSV_OK ||
        msv_client_db_set(db, "handle", "alice@example.org", 17) != MSV_OK ||
        msv_client_db_set(db, "session:9", "SESSION-SECRET-BYTES", 20) != MSV_OK ||
        msv_client_db_set(db, "session-prev:9", "PREVIOUS-SESSION-BYTES", 22) != MSV_OK ||
        msv_client_db_set(db, "prekey:41", ONE_TIME_PREKEY, 64) != MSV_OK ||
        msv_client_db_set(db, "prekey:40", SIGNED_PREKEY, 64) != MSV_OK ||
        msv_client_db_set(db, "signed-prekey", "\0\0\0\x28\0\0\0\0\0\0\0\x01", 12) != MSV_OK ||
        msv_client_db_set(db, "prekey-next", "\0\0\0\x2a", 4) != MSV_OK ||
        msv_backup_write(f->account, db, f->backup, PASS, &quick, NULL, NULL, 0) != MSV_OK)
        return -1;
    msv_client_db_close(db);
    f->file = test_read_file(f->backup, &f->file_len);
    if (f->file == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f->file);
    free(f);
    return 0;
}

/* Restores bytes into a fresh f->restore; the directory is gone again unless it worked. */
static msv_err restore_bytes(struct fixture *f, const uint8_t *bytes, size_t len, const char *pass,
                             const uint8_t *key, char *why, size_t why_len)
{
    FILE *in = fmemopen((void *)bytes, len, "rb");
    msv_err err;

    assert_non_null(in);
    assert_int_equal(mkdir(f->restore, 0700), 0);
    err = msv_backup_unpack(in, pass, key, f->restore, NULL, why, why_len);
    fclose(in);
    if (err != MSV_OK) {
        msv_backup_discard(f->restore);
        assert_int_not_equal(access(f->restore, F_OK), 0);
    }
    return err;
}

static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    struct msv_client_db *db = NULL;
    uint8_t *v = NULL, *got, *raw;
    size_t len = 0;
    char path[160], why[256] = "";
    struct stat sb;

    /* nothing of the account in clear, and the file is private */
    assert_null(memmem(f->file, f->file_len, "alice@example.org", 17));
    assert_null(memmem(f->file, f->file_len, f->attachment + 5000, 64));
    assert_int_equal(stat(f->backup, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(restore_bytes(f, f->file, f->file_len, PASS, NULL, why, sizeof(why)), MSV_OK);
    snprintf(path, sizeof(path), "%s/attachments/0011-photo.jpg", f->restore);
    got = test_read_file(path, &len);
    assert_int_equal(len, ATTACHMENT_LEN);
    assert_memory_equal(got, f->attachment, ATTACHMENT_LEN);
    free(got);
    /* the settings came back; the sessions stayed behind, not even in the file's free pages */
    snprintf(path, sizeof(path), "%s/state.db", f->restore);
    raw = test_read_file(path, &len);
    assert_null(memmem(raw, len, "SESSION-SECRET-BYTES", 20));
    assert_null(memmem(raw, len, "PREVIOUS-SESSION-BYTES", 22));
    /* nor any prekey secret, one-time or signed */
    assert_null(memmem(raw, len, ONE_TIME_PREKEY, 32));
    assert_null(memmem(raw, len, SIGNED_PREKEY, 32));
    free(raw);
    assert_int_equal(msv_client_db_open(path, &db), MSV_OK);
    assert_int_equal(msv_client_db_get(db, "handle", &v, &len), MSV_OK);
    assert_memory_equal(v, "alice@example.org", 17);
    free(v);
    assert_int_equal(msv_client_db_get(db, "session:9", &v, &len), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_get(db, "prekey:41", &v, &len), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_get(db, "prekey:40", &v, &len), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_client_db_get(db, "signed-prekey", &v, &len), MSV_ERR_NOT_FOUND);
    /* the restored device's prekey ids start far past any the original may hand out since */
    assert_int_equal(msv_client_db_get(db, "prekey-next", &v, &len), MSV_OK);
    assert_int_equal(len, 4);
    assert_int_equal(msv_get_u32be(v), 42 + MSV_PREKEY_RESTORE_GAP);
    free(v);
    /* and it replaces what the server holds at its first connection */
    assert_int_equal(msv_client_db_get(db, MSV_PREKEYS_RESTORED, &v, &len), MSV_OK);
    free(v);
    msv_client_db_close(db);
    /* the account it came from is as it was; no copy of its database is left behind */
    snprintf(path, sizeof(path), "%s/backup-copy.db", f->account);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s.partial", f->backup);
    assert_int_not_equal(access(path, F_OK), 0);
}

struct progress_seen {
    uint64_t calls, last_done, total;
    int backwards;
};

static void note_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct progress_seen *p = ctx;

    p->backwards |= done < p->last_done || done > total;
    p->calls++;
    p->last_done = done;
    p->total = total;
}

/* Both ways, progress goes forward and ends at the whole. */
static void test_progress(void **state)
{
    struct fixture *f = *state;
    struct progress_seen w = {0}, r = {0};
    struct msv_backup_progress pw = {note_progress, &w}, pr = {note_progress, &r};
    struct msv_client_db *db = NULL;
    char path[160], why[256] = "";
    FILE *in;

    snprintf(path, sizeof(path), "%s/state.db", f->account);
    assert_int_equal(msv_client_db_open(path, &db), MSV_OK);
    snprintf(path, sizeof(path), "%s/again.msvb", f->dir);
    assert_int_equal(msv_backup_write(f->account, db, path, PASS, &quick, &pw, why, sizeof(why)),
                     MSV_OK);
    msv_client_db_close(db);
    assert_true(w.calls >= 4); /* the attachment alone is more than three chunks */
    assert_false(w.backwards);
    assert_int_equal(w.last_done, w.total);
    assert_true(w.total > ATTACHMENT_LEN);
    in = fopen(path, "rb");
    assert_non_null(in);
    assert_int_equal(mkdir(f->restore, 0700), 0);
    assert_int_equal(msv_backup_unpack(in, PASS, NULL, f->restore, &pr, why, sizeof(why)), MSV_OK);
    fclose(in);
    assert_true(r.calls >= 4);
    assert_false(r.backwards);
    assert_int_equal(r.last_done, r.total);
}

static void test_refusals_when_writing(void **state)
{
    struct fixture *f = *state;
    struct msv_client_db *db = NULL;
    struct msv_backup_kdf huge = {1, MSV_BACKUP_MEM_MAX_KIB + 1};
    struct msv_backup_kdf cheap = {4, MSV_BACKUP_MEM_WRITE_MIN_KIB - 1};
    char path[160], why[256];

    snprintf(path, sizeof(path), "%s/state.db", f->account);
    assert_int_equal(msv_client_db_open(path, &db), MSV_OK);
    /* never over an existing file (the backup made in setup) */
    assert_int_equal(
        msv_backup_write(f->account, db, f->backup, PASS, &quick, NULL, why, sizeof(why)),
        MSV_ERR_EXISTS);
    snprintf(path, sizeof(path), "%s/other.msvb", f->dir);
    assert_int_equal(
        msv_backup_write(f->account, db, path, "short", &quick, NULL, why, sizeof(why)),
        MSV_ERR_INVALID);
    assert_int_equal(
        msv_backup_write(f->account, db, path, "11 for that", &quick, NULL, why, sizeof(why)),
        MSV_ERR_INVALID); /* 11 characters: 12 at the least */
    assert_int_equal(msv_backup_write(f->account, db, path,
                                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", &quick,
                                      NULL, why, sizeof(why)),
                     MSV_ERR_INVALID); /* characters are counted, not bytes: 6 in 12 bytes */
    assert_true(msv_backup_passphrase_is_long_enough("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                     "\xc3\xa9\xc3\xa9"));
    assert_int_equal(msv_backup_write(f->account, db, path, PASS, &cheap, NULL, why, sizeof(why)),
                     MSV_ERR_INVALID); /* under 64 MiB of Argon2id memory */
    assert_int_equal(msv_backup_write(f->account, db, path, PASS, &huge, NULL, why, sizeof(why)),
                     MSV_ERR_INVALID);
    assert_int_not_equal(access(path, F_OK), 0);
    msv_client_db_close(db);
}

static void test_wrong_passphrase(void **state)
{
    struct fixture *f = *state;
    char why[256] = "";

    assert_int_equal(
        restore_bytes(f, f->file, f->file_len, "another passphrase", NULL, why, sizeof(why)),
        MSV_ERR_AUTH);
    assert_string_equal(why, "wrong passphrase, or not a Missive backup");
}

/* Any byte changed, any length cut off, anything appended: refused. */
static void test_damage(void **state)
{
    struct fixture *f = *state;
    uint8_t *copy = malloc(f->file_len + 1);
    size_t positions[] = {0,
                          7,
                          9,
                          15,
                          16,
                          20,
                          31,
                          32,
                          40,
                          55,
                          56,
                          59,
                          60,
                          1000,
                          70000,
                          f->file_len / 2,
                          f->file_len - 40,
                          f->file_len - 1};
    size_t cuts[] = {0, 10, 56, 60, 1000, 65600, f->file_len - 17, f->file_len - 1};
    char why[256];

    assert_non_null(copy);
    for (size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++) {
        memcpy(copy, f->file, f->file_len);
        copy[positions[i]] ^= 0x20;
        if (restore_bytes(f, copy, f->file_len, PASS, NULL, why, sizeof(why)) == MSV_OK)
            fail_msg("a change at byte %zu of %zu went unnoticed", positions[i], f->file_len);
    }
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        if (restore_bytes(f, f->file, cuts[i], PASS, NULL, why, sizeof(why)) == MSV_OK)
            fail_msg("a backup cut to %zu bytes was taken", cuts[i]);
    }
    memcpy(copy, f->file, f->file_len);
    copy[f->file_len] = 0;
    assert_int_equal(restore_bytes(f, copy, f->file_len + 1, PASS, NULL, why, sizeof(why)),
                     MSV_ERR_PARSE);
    free(copy);
}

/* Parameters a backup may not ask of the restoring machine. */
static void test_kdf_bounds(void **state)
{
    struct fixture *f = *state;
    uint8_t *copy = malloc(f->file_len);
    char why[256];

    assert_non_null(copy);
    memcpy(copy, f->file, f->file_len);
    copy[12] = 0xFF; /* memlimit: 4 TiB */
    assert_int_equal(restore_bytes(f, copy, f->file_len, PASS, NULL, why, sizeof(why)),
                     MSV_ERR_UNSUPPORTED);
    assert_non_null(strstr(why, "beyond what is allowed"));
    memcpy(copy, f->file, f->file_len);
    copy[11] = 0; /* no passes */
    assert_int_equal(restore_bytes(f, copy, f->file_len, PASS, NULL, why, sizeof(why)),
                     MSV_ERR_UNSUPPORTED);
    free(copy);
}

static size_t record(uint8_t *out, const char *name, const char *data)
{
    size_t n = strlen(name), len = strlen(data), o = 0;

    out[o++] = 1;
    out[o++] = (uint8_t)(n >> 8);
    out[o++] = (uint8_t)n;
    memcpy(out + o, name, n);
    o += n;
    for (int i = 0; i < 8; i++)
        out[o++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    memcpy(out + o, data, len);
    return o + len;
}

/* Archives a writer would not make, sealed under a known key: each is refused. */
static void test_forged_archives(void **state)
{
    static const uint8_t key[32] = {9};
    static const char *const bad_names[] = {
        "../escape",    "/etc/passwd",         "attachments/../../x",
        "attachments/", "attachments/.hidden", "attachments/a/b",
        "other.db",     "state.db/x"};
    struct fixture *f = *state;
    uint8_t archive[512], *file = NULL;
    size_t len, file_len = 0;
    char why[256], path[160];

    /* a well-formed one is taken (the key works) */
    len = record(archive, "state.db", "db");
    len += record(archive + len, "attachments/a", "x");
    archive[len++] = 0;
    assert_int_equal(msv_backup_seal(key, archive, len, &file, &file_len), MSV_OK);
    assert_int_equal(restore_bytes(f, file, file_len, NULL, key, why, sizeof(why)), MSV_OK);
    free(file);
    msv_backup_discard(f->restore);
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        len = record(archive, "state.db", "db");
        len += record(archive + len, bad_names[i], "x");
        archive[len++] = 0;
        assert_int_equal(msv_backup_seal(key, archive, len, &file, &file_len), MSV_OK);
        assert_int_equal(restore_bytes(f, file, file_len, NULL, key, why, sizeof(why)),
                         MSV_ERR_PARSE);
        free(file);
    }
    snprintf(path, sizeof(path), "%s/escape", f->dir);
    assert_int_not_equal(access(path, F_OK), 0);
    /* twice the same file; no database; no end record; an unknown record; a short file */
    len = record(archive, "state.db", "db");
    len += record(archive + len, "state.db", "db");
    archive[len++] = 0;
    assert_int_equal(msv_backup_seal(key, archive, len, &file, &file_len), MSV_OK);
    assert_int_equal(restore_bytes(f, file, file_len, NULL, key, why, sizeof(why)), MSV_ERR_PARSE);
    assert_string_equal(why, "the backup holds state.db twice");
    free(file);
    len = record(archive, "attachments/a", "x");
    archive[len++] = 0;
    assert_int_equal(msv_backup_seal(key, archive, len, &file, &file_len), MSV_OK);
    assert_int_equal(restore_bytes(f, file, file_len, NULL, key, why, sizeof(why)), MSV_ERR_PARSE);
    free(file);
    len = record(archive, "state.db", "db");
    assert_int_equal(msv_backup_seal(key, archive, len, &file, &file_len), MSV_OK);
    assert_int_equal(restore_bytes(f, file, file_len, NULL, key, why, sizeof(why)), MSV_ERR_PARSE);
    free(file);
    len = record(archive, "state.db", "db");
    archive[len++] = 2;
    archive[len++] = 0;
    assert_int_equal(msv_backup_seal(key, archive, len, &file, &file_len), MSV_OK);
    assert_int_equal(restore_bytes(f, file, file_len, NULL, key, why, sizeof(why)), MSV_ERR_PARSE);
    free(file);
    len = record(archive, "state.db", "db");
    archive[len - 3] = 0xFF; /* the size says more than the archive holds */
    archive[len++] = 0;
    assert_int_equal(msv_backup_seal(key, archive, len, &file, &file_len), MSV_OK);
    assert_int_equal(restore_bytes(f, file, file_len, NULL, key, why, sizeof(why)), MSV_ERR_PARSE);
    free(file);
}

/*
 * A restore writes only into a directory of this user's that nobody else may
 * write, and never through a link planted at attachments/: nothing lands in
 * the directory the link names, and discarding the restore leaves it alone.
 */
static void test_restore_directory_checked(void **state)
{
    struct fixture *f = *state;
    char why[256] = "", victim[128], link_at[128], path[160];
    struct stat sb;

    snprintf(victim, sizeof(victim), "%s/victim", f->dir);
    assert_int_equal(mkdir(victim, 0700), 0);
    snprintf(path, sizeof(path), "%s/keep.txt", victim);
    put_file(path, "mine", 4);
    /* attachments/ a link to someone's directory */
    assert_int_equal(mkdir(f->restore, 0700), 0);
    snprintf(link_at, sizeof(link_at), "%s/attachments", f->restore);
    assert_int_equal(symlink(victim, link_at), 0);
    {
        FILE *in = fmemopen(f->file, f->file_len, "rb");

        assert_non_null(in);
        assert_int_equal(msv_backup_unpack(in, PASS, NULL, f->restore, NULL, why, sizeof(why)),
                         MSV_ERR_INVALID);
        fclose(in);
    }
    assert_non_null(strstr(why, "attachments/ must be your own directory"));
    snprintf(path, sizeof(path), "%s/0011-photo.jpg", victim);
    assert_int_not_equal(access(path, F_OK), 0);
    msv_backup_discard(f->restore);
    assert_int_not_equal(lstat(f->restore, &sb), 0);
    snprintf(path, sizeof(path), "%s/keep.txt", victim);
    assert_int_equal(access(path, F_OK), 0);
    /* a directory others may write is not restored into */
    assert_int_equal(mkdir(f->restore, 0700), 0);
    assert_int_equal(chmod(f->restore, 0777), 0);
    {
        FILE *in = fmemopen(f->file, f->file_len, "rb");

        assert_non_null(in);
        assert_int_equal(msv_backup_unpack(in, PASS, NULL, f->restore, NULL, why, sizeof(why)),
                         MSV_ERR_INVALID);
        fclose(in);
    }
    snprintf(path, sizeof(path), "%s/state.db", f->restore);
    assert_int_not_equal(access(path, F_OK), 0);
    msv_backup_discard(f->restore);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_when_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_passphrase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kdf_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_archives, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_directory_checked, setup, teardown),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests_name("backup", tests, NULL, NULL);
}
