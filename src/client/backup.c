/* Encrypted backups of an account directory (client/backup.h). */
#define _GNU_SOURCE /* open_memstream */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "client/backup.h"
#include "client/sessions.h"
#include "missive/util.h"
#include "util/endian.h"
#include "util/privdir.h"

#define MAGIC "MSVBACK1"
#define MAGIC_LEN 8
#define SALT_LEN 16
#define HEADER_LEN (MAGIC_LEN + 4 + 4 + SALT_LEN)
#define STREAM_HEADER_LEN crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define AD_LEN (HEADER_LEN + STREAM_HEADER_LEN)
#define CHUNK (64 * 1024)
#define SEALED_CHUNK (CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES)
#define NAME_MAX_LEN 300
#define RECORD_FILE 1
#define RECORD_END 0
#define STATE_DB "state.db"
#define ATTACHMENTS "attachments"

static msv_err say(char *why, size_t len, msv_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static msv_err say(char *why, size_t len, msv_err err, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && len > 0) {
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
    return err;
}

static msv_err derive_key(const char *passphrase, const uint8_t salt[SALT_LEN], uint32_t ops,
                          uint32_t mem_kib, uint8_t key[32])
{
    if (crypto_pwhash(key, 32, passphrase, strlen(passphrase), salt, ops, (size_t)mem_kib * 1024u,
                      crypto_pwhash_ALG_ARGON2ID13) != 0)
        return MSV_ERR_NOMEM; /* the memory the parameters ask for is not there */
    return MSV_OK;
}

/* ---- writing ---------------------------------------------------------------------------- */

struct writer {
    FILE *f;
    crypto_secretstream_xchacha20poly1305_state st;
    uint8_t ad[AD_LEN];
    uint8_t buf[CHUNK];
    size_t used;
    uint8_t out[4 + SEALED_CHUNK];
    uint64_t done, total;
    const struct msv_backup_progress *progress;
};

static msv_err push_chunk(struct writer *w, uint8_t tag)
{
    unsigned long long len = 0;

    if (crypto_secretstream_xchacha20poly1305_push(&w->st, w->out + 4, &len, w->buf, w->used, w->ad,
                                                   sizeof(w->ad), tag) != 0)
        return MSV_ERR_CRYPTO;
    msv_put_u32be(w->out, (uint32_t)len);
    w->used = 0;
    return fwrite(w->out, 1, 4 + (size_t)len, w->f) == 4 + (size_t)len ? MSV_OK : MSV_ERR_IO;
}

static msv_err put(struct writer *w, const void *data, size_t n)
{
    const uint8_t *p = data;
    msv_err err = MSV_OK;

    while (n > 0 && err == MSV_OK) {
        size_t take = CHUNK - w->used < n ? CHUNK - w->used : n;

        memcpy(w->buf + w->used, p, take);
        w->used += take;
        p += take;
        n -= take;
        if (w->used == CHUNK)
            err = push_chunk(w, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    }
    return err;
}

/* The file's header, and the stream started under key. */
static msv_err start_stream(struct writer *w, const uint8_t key[32],
                            const struct msv_backup_kdf *kdf, const uint8_t salt[SALT_LEN])
{
    memcpy(w->ad, MAGIC, MAGIC_LEN);
    msv_put_u32be(w->ad + MAGIC_LEN, kdf->opslimit);
    msv_put_u32be(w->ad + MAGIC_LEN + 4, kdf->memlimit_kib);
    memcpy(w->ad + MAGIC_LEN + 8, salt, SALT_LEN);
    if (crypto_secretstream_xchacha20poly1305_init_push(&w->st, w->ad + HEADER_LEN, key) != 0)
        return MSV_ERR_CRYPTO;
    return fwrite(w->ad, 1, AD_LEN, w->f) == AD_LEN ? MSV_OK : MSV_ERR_IO;
}

/* One file as a record; its size must not change while it is read. */
static msv_err put_file(struct writer *w, const char *name, const char *path, char *why,
                        size_t why_len)
{
    uint8_t head[1 + 2 + NAME_MAX_LEN + 8], piece[CHUNK];
    size_t name_len = strlen(name), o = 0, got;
    uint64_t size, left;
    struct stat sb;
    FILE *f = fopen(path, "rb");
    msv_err err = MSV_OK;

    if (f == NULL || fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (f != NULL)
            fclose(f);
        return say(why, why_len, MSV_ERR_IO, "cannot read %s", path);
    }
    size = (uint64_t)sb.st_size;
    head[o++] = RECORD_FILE;
    head[o++] = (uint8_t)(name_len >> 8);
    head[o++] = (uint8_t)name_len;
    memcpy(head + o, name, name_len);
    o += name_len;
    msv_put_u64be(head + o, size);
    o += 8;
    err = put(w, head, o);
    for (left = size; err == MSV_OK && left > 0; left -= got) {
        got = fread(piece, 1, left < sizeof(piece) ? (size_t)left : sizeof(piece), f);
        if (got == 0)
            err = say(why, why_len, MSV_ERR_IO, "%s changed while it was read", path);
        else
            err = put(w, piece, got);
        w->done += got;
        if (w->progress != NULL && w->progress->fn != NULL)
            w->progress->fn(w->progress->ctx, w->done, w->total);
    }
    if (err == MSV_OK && fgetc(f) != EOF)
        err = say(why, why_len, MSV_ERR_IO, "%s changed while it was read", path);
    fclose(f);
    return err;
}

/* The attachments kept (regular files of a sensible name); calls fn for each. */
static msv_err each_attachment(const char *account_dir,
                               msv_err (*fn)(void *ctx, const char *name, const char *path),
                               void *ctx)
{
    char dir[1100], path[1500];
    struct dirent *e;
    DIR *d;
    msv_err err = MSV_OK;

    snprintf(dir, sizeof(dir), "%s/%s", account_dir, ATTACHMENTS);
    if ((d = opendir(dir)) == NULL)
        return errno == ENOENT ? MSV_OK : MSV_ERR_IO;
    while (err == MSV_OK && (e = readdir(d)) != NULL) {
        struct stat sb;

        if (e->d_name[0] == '.' || strlen(e->d_name) > 255)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            err = fn(ctx, e->d_name, path);
    }
    closedir(d);
    return err;
}

struct attach_ctx {
    const char *account_dir;
    struct writer *w;
    char *why;
    size_t why_len;
    struct msv_message_rec *left_out; /* disappearing messages: their files stay out too */
    size_t n_left_out;
};

/* 1 if name is a file of one of the messages left out (attachments/<message id>-...). */
static int is_left_out(const struct attach_ctx *a, const char *name)
{
    char hex[33];

    for (size_t i = 0; i < a->n_left_out; i++) {
        if (msv_hex_encode(a->left_out[i].message_id, 16, hex, sizeof(hex)) == MSV_OK &&
            strncmp(name, hex, 32) == 0 && name[32] == '-')
            return 1;
    }
    return 0;
}

static msv_err add_size(void *ctx, const char *name, const char *path)
{
    struct attach_ctx *a = ctx;
    struct stat sb;

    if (!is_left_out(a, name) && stat(path, &sb) == 0)
        a->w->total += (uint64_t)sb.st_size;
    return MSV_OK;
}

static msv_err add_attachment(void *ctx, const char *name, const char *path)
{
    struct attach_ctx *a = ctx;
    char full[NAME_MAX_LEN];

    if (is_left_out(a, name))
        return MSV_OK;
    snprintf(full, sizeof(full), "%s/%s", ATTACHMENTS, name);
    return put_file(a->w, full, path, a->why, a->why_len);
}

static void remove_db(const char *path)
{
    char side[1300];

    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

/*
 * A copy of the state database without sessions or prekeys (backups hold no
 * message keys), nor disappearing messages (*left_out: those left out, whose
 * files stay out too; free with msv_messages_free).
 */
static msv_err snapshot(struct msv_client_db *db, const char *path, struct attach_ctx *a,
                        int for_link, char *why, size_t why_len)
{
    struct msv_client_db *copy = NULL;
    msv_err err = msv_client_db_snapshot(db, path);

    if (err == MSV_OK)
        err = msv_client_db_open(path, &copy);
    if (err == MSV_OK)
        err = msv_client_db_messages_disappearing(copy, &a->left_out, &a->n_left_out);
    for (size_t i = 0; err == MSV_OK && i < a->n_left_out; i++)
        err = msv_client_db_message_delete(copy, a->left_out[i].message_id);
    if (err == MSV_OK)
        err = msv_client_db_unset_prefix(copy, "session:");
    if (err == MSV_OK)
        err = msv_client_db_unset_prefix(copy, "session-prev:");
    if (err == MSV_OK)
        err = msv_sessions_strip_backup_copy(copy); /* nor prekey secrets */
    /* a linked device has keys of its own: this device's stay here; its messages name their
     * files under this directory, which the linked device reads them from under its own */
    if (err == MSV_OK && for_link)
        err = msv_client_db_unset(copy, "identity");
    if (err == MSV_OK && for_link)
        err = msv_client_db_set(copy, MSV_LINK_SOURCE_DIR, (const uint8_t *)a->account_dir,
                                strlen(a->account_dir));
    if (err == MSV_OK)
        err = msv_client_db_compact(copy); /* and no trace of them in free pages */
    msv_client_db_close(copy);
    return err == MSV_OK ? MSV_OK
                         : say(why, why_len, err, "cannot take a copy of the account's database");
}

static msv_err write_archive(struct attach_ctx *a, const char *account_dir, const char *db_copy)
{
    struct writer *w = a->w;
    char *why = a->why;
    size_t why_len = a->why_len;
    uint8_t end = RECORD_END;
    struct stat sb;
    msv_err err;

    w->total = stat(db_copy, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    err = each_attachment(account_dir, add_size, a);
    if (err == MSV_OK)
        err = put_file(w, STATE_DB, db_copy, why, why_len);
    if (err == MSV_OK)
        err = each_attachment(account_dir, add_attachment, a);
    if (err == MSV_OK)
        err = put(w, &end, 1);
    if (err == MSV_OK)
        err = push_chunk(w, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    return err;
}

static msv_err write_backup(const char *account_dir, struct msv_client_db *db, const char *path,
                            const char *passphrase, const uint8_t *key_in,
                            const struct msv_backup_kdf *kdf,
                            const struct msv_backup_progress *progress, char *why, size_t why_len);

int msv_backup_passphrase_is_long_enough(const char *passphrase)
{
    size_t chars = 0;

    for (const char *p = passphrase; *p != '\0'; p++)
        chars += ((unsigned char)*p & 0xc0) != 0x80; /* a byte that starts a character */
    return chars >= MSV_BACKUP_PASSPHRASE_MIN;
}

msv_err msv_backup_write(const char *account_dir, struct msv_client_db *db, const char *path,
                         const char *passphrase, const struct msv_backup_kdf *kdf,
                         const struct msv_backup_progress *progress, char *why, size_t why_len)
{
    if (!msv_backup_passphrase_is_long_enough(passphrase))
        return say(why, why_len, MSV_ERR_INVALID, "the backup passphrase needs %d characters",
                   MSV_BACKUP_PASSPHRASE_MIN);
    if (kdf->opslimit < 1 || kdf->opslimit > MSV_BACKUP_OPS_MAX ||
        kdf->memlimit_kib < MSV_BACKUP_MEM_WRITE_MIN_KIB ||
        kdf->memlimit_kib > MSV_BACKUP_MEM_MAX_KIB)
        return say(why, why_len, MSV_ERR_INVALID,
                   "Argon2id parameters out of range (64 to 4096 MiB, 1 to 32 passes)");
    return write_backup(account_dir, db, path, passphrase, NULL, kdf, progress, why, why_len);
}

msv_err msv_backup_write_for_link(const char *account_dir, struct msv_client_db *db,
                                  const char *path, const uint8_t key[32],
                                  const struct msv_backup_progress *progress, char *why,
                                  size_t why_len)
{
    static const struct msv_backup_kdf none = {1, MSV_BACKUP_MEM_MIN_KIB}; /* not used */

    return write_backup(account_dir, db, path, NULL, key, &none, progress, why, why_len);
}

/* A backup under the passphrase's key, or (passphrase NULL) under key_in, for a linked device. */
static msv_err write_backup(const char *account_dir, struct msv_client_db *db, const char *path,
                            const char *passphrase, const uint8_t *key_in,
                            const struct msv_backup_kdf *kdf,
                            const struct msv_backup_progress *progress, char *why, size_t why_len)
{
    struct writer *w = NULL;
    struct attach_ctx a = {.account_dir = account_dir, .why = why, .why_len = why_len};
    char tmp[1200], db_copy[1200];
    uint8_t key[32], salt[SALT_LEN];
    int fd = -1;
    msv_err err = MSV_OK;

    if (access(path, F_OK) == 0)
        return say(why, why_len, MSV_ERR_EXISTS, "%s exists; choose another name", path);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.partial", path) >= sizeof(tmp) ||
        (size_t)snprintf(db_copy, sizeof(db_copy), "%s/backup-copy.db", account_dir) >=
            sizeof(db_copy))
        return say(why, why_len, MSV_ERR_INVALID, "path too long");
    if ((w = calloc(1, sizeof(*w))) == NULL)
        return MSV_ERR_NOMEM;
    w->progress = progress;
    a.w = w;
    remove_db(db_copy); /* left by a backup that was killed */
    err = snapshot(db, db_copy, &a, passphrase == NULL, why, why_len);
    if (err == MSV_OK) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        w->f = fd >= 0 ? fdopen(fd, "wb") : NULL;
        if (w->f == NULL) {
            err = say(why, why_len, MSV_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
            if (fd >= 0)
                close(fd);
        }
    }
    if (err == MSV_OK) {
        randombytes_buf(salt, SALT_LEN);
        if (passphrase != NULL)
            err = derive_key(passphrase, salt, kdf->opslimit, kdf->memlimit_kib, key);
        else
            memcpy(key, key_in, 32);
    }
    if (err == MSV_OK)
        err = start_stream(w, key, kdf, salt);
    sodium_memzero(key, sizeof(key));
    if (err == MSV_OK)
        err = write_archive(&a, account_dir, db_copy);
    if (w->f != NULL) {
        if (err == MSV_OK && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
            err = say(why, why_len, MSV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        if (fclose(w->f) != 0 && err == MSV_OK)
            err = say(why, why_len, MSV_ERR_IO, "cannot write %s", tmp);
        if (err == MSV_OK && link(tmp, path) != 0) /* never over a file made meanwhile */
            err = say(why, why_len, errno == EEXIST ? MSV_ERR_EXISTS : MSV_ERR_IO,
                      "cannot create %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    remove_db(db_copy);
    msv_messages_free(a.left_out, a.n_left_out);
    sodium_memzero(w, sizeof(*w));
    free(w);
    return err;
}

msv_err msv_backup_seal(const uint8_t key[32], const uint8_t *archive, size_t len, uint8_t **out,
                        size_t *out_len)
{
    static const struct msv_backup_kdf kdf = {1, MSV_BACKUP_MEM_MIN_KIB};
    static const uint8_t salt[SALT_LEN];
    struct writer *w = calloc(1, sizeof(*w));
    char *buf = NULL;
    size_t buf_len = 0;
    msv_err err = w != NULL ? MSV_OK : MSV_ERR_NOMEM;

    if (err == MSV_OK && (w->f = open_memstream(&buf, &buf_len)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = start_stream(w, key, &kdf, salt);
    if (err == MSV_OK)
        err = put(w, archive, len);
    if (err == MSV_OK)
        err = push_chunk(w, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    if (w != NULL && w->f != NULL && fclose(w->f) != 0 && err == MSV_OK)
        err = MSV_ERR_NOMEM;
    free(w);
    if (err != MSV_OK) {
        free(buf);
        return err;
    }
    *out = (uint8_t *)buf;
    *out_len = buf_len;
    return MSV_OK;
}

/* ---- reading ---------------------------------------------------------------------------- */

struct reader {
    FILE *f;
    crypto_secretstream_xchacha20poly1305_state st;
    uint8_t ad[AD_LEN];
    uint8_t in[SEALED_CHUNK];
    uint8_t buf[CHUNK];
    size_t len, pos;
    int final;
    int dir;              /* the directory restored into */
    uint64_t done, total; /* bytes of the file read, and its size (0: unknown) */
    const struct msv_backup_progress *progress;
    char *why;
    size_t why_len;
};

static msv_err damaged(struct reader *r)
{
    return say(r->why, r->why_len, MSV_ERR_PARSE, "the backup is damaged or incomplete");
}

static msv_err pull_chunk(struct reader *r, int first)
{
    uint8_t len_be[4], tag = 0;
    unsigned long long len = 0;
    uint32_t clen;

    if (r->final || fread(len_be, 1, 4, r->f) != 4)
        return damaged(r);
    clen = msv_get_u32be(len_be);
    if (clen < crypto_secretstream_xchacha20poly1305_ABYTES || clen > SEALED_CHUNK ||
        fread(r->in, 1, clen, r->f) != clen)
        return damaged(r);
    if (crypto_secretstream_xchacha20poly1305_pull(&r->st, r->buf, &len, &tag, r->in, clen, r->ad,
                                                   sizeof(r->ad)) != 0) {
        if (first)
            return say(r->why, r->why_len, MSV_ERR_AUTH,
                       "wrong passphrase, or not a Missive backup");
        return damaged(r);
    }
    r->done += 4 + clen;
    if (r->progress != NULL && r->progress->fn != NULL && r->total > 0)
        r->progress->fn(r->progress->ctx, r->done, r->total);
    if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
        r->final = 1;
    else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
        return damaged(r);
    r->len = (size_t)len;
    r->pos = 0;
    return MSV_OK;
}

/* Exactly n bytes of the archive. */
static msv_err get(struct reader *r, void *out, size_t n)
{
    uint8_t *p = out;
    msv_err err = MSV_OK;

    while (n > 0 && err == MSV_OK) {
        size_t take;

        if (r->pos == r->len) {
            err = pull_chunk(r, 0);
            continue;
        }
        take = r->len - r->pos < n ? r->len - r->pos : n;
        memcpy(p, r->buf + r->pos, take);
        r->pos += take;
        p += take;
        n -= take;
    }
    return err;
}

/* "state.db" or "attachments/NAME": 1 if the name may be written, and whether it is the db. */
static int name_allowed(const char *name, int *is_db)
{
    const char *base;

    *is_db = strcmp(name, STATE_DB) == 0;
    if (*is_db)
        return 1;
    if (strncmp(name, ATTACHMENTS "/", sizeof(ATTACHMENTS)) != 0)
        return 0;
    base = name + sizeof(ATTACHMENTS);
    return base[0] != '\0' && base[0] != '.' && strchr(base, '/') == NULL;
}

/*
 * Creates name (checked by name_allowed()) under the restore's directory:
 * attachments/ must be private (util/privdir.h) and the file new, never
 * reached through a link. A descriptor, -2 if attachments/ is not private
 * or is a link, or -1 with errno set.
 */
static int create_restored(int dir, const char *name, int is_db)
{
    int sub = is_db ? dir : msv_privdir_open(dir, ATTACHMENTS, 1), fd;
    int saved;

    if (sub < 0)
        return errno == EPERM || errno == ELOOP || errno == ENOTDIR ? -2 : -1;
    fd = openat(sub, is_db ? name : name + sizeof(ATTACHMENTS),
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    saved = errno;
    if (sub != dir)
        close(sub);
    errno = saved;
    return fd;
}

static msv_err unpack_file(struct reader *r, int dir, int *have_db)
{
    uint8_t len_be[2], size_be[8], piece[CHUNK];
    char name[NAME_MAX_LEN + 1];
    size_t name_len;
    uint64_t size = 0;
    int is_db, fd;
    FILE *out;
    msv_err err = get(r, len_be, 2);

    name_len = (size_t)len_be[0] << 8 | len_be[1];
    if (err == MSV_OK && (name_len == 0 || name_len > NAME_MAX_LEN))
        err = damaged(r);
    if (err == MSV_OK)
        err = get(r, name, name_len);
    if (err == MSV_OK)
        err = get(r, size_be, 8);
    if (err != MSV_OK)
        return err;
    name[name_len] = '\0';
    size = msv_get_u64be(size_be);
    if (strlen(name) != name_len || !name_allowed(name, &is_db))
        return say(r->why, r->why_len, MSV_ERR_PARSE, "the backup names a file it may not write");
    fd = create_restored(dir, name, is_db);
    if (fd < 0 && errno == EEXIST)
        return say(r->why, r->why_len, MSV_ERR_PARSE, "the backup holds %s twice", name);
    if (fd == -2)
        return say(r->why, r->why_len, MSV_ERR_INVALID,
                   ATTACHMENTS "/ must be your own directory, writable by you only, not a link");
    if (fd < 0)
        return say(r->why, r->why_len, MSV_ERR_IO, "cannot create %s", name);
    if ((out = fdopen(fd, "wb")) == NULL) {
        close(fd);
        return MSV_ERR_NOMEM;
    }
    while (err == MSV_OK && size > 0) {
        size_t n = size < sizeof(piece) ? (size_t)size : sizeof(piece);

        err = get(r, piece, n);
        if (err == MSV_OK && fwrite(piece, 1, n, out) != n)
            err = say(r->why, r->why_len, MSV_ERR_IO, "cannot write %s", name);
        size -= n;
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0)
        err = err != MSV_OK ? err : say(r->why, r->why_len, MSV_ERR_IO, "cannot write %s", name);
    fclose(out);
    *have_db |= is_db;
    sodium_memzero(piece, sizeof(piece));
    return err;
}

static msv_err read_header(struct reader *r, const char *passphrase, const uint8_t *key_in)
{
    uint8_t key[32];
    uint32_t ops, mem;
    msv_err err = MSV_OK;

    if (fread(r->ad, 1, AD_LEN, r->f) != AD_LEN || memcmp(r->ad, MAGIC, MAGIC_LEN) != 0)
        return say(r->why, r->why_len, MSV_ERR_PARSE, "not a Missive backup");
    ops = msv_get_u32be(r->ad + MAGIC_LEN);
    mem = msv_get_u32be(r->ad + MAGIC_LEN + 4);
    if (ops < 1 || ops > MSV_BACKUP_OPS_MAX || mem < MSV_BACKUP_MEM_MIN_KIB ||
        mem > MSV_BACKUP_MEM_MAX_KIB)
        return say(r->why, r->why_len, MSV_ERR_UNSUPPORTED,
                   "the backup asks for Argon2id parameters beyond what is allowed "
                   "(%u passes, %u KiB)",
                   ops, mem);
    if (key_in != NULL)
        memcpy(key, key_in, 32);
    else
        err = derive_key(passphrase, r->ad + MAGIC_LEN + 8, ops, mem, key);
    if (err == MSV_OK &&
        crypto_secretstream_xchacha20poly1305_init_pull(&r->st, r->ad + HEADER_LEN, key) != 0)
        err = damaged(r);
    sodium_memzero(key, sizeof(key));
    return err;
}

msv_err msv_backup_unpack(FILE *in, const char *passphrase, const uint8_t *key, const char *dir,
                          const struct msv_backup_progress *progress, char *why, size_t why_len)
{
    struct reader *r = calloc(1, sizeof(*r));
    struct stat sb;
    int have_db = 0;
    uint8_t kind = RECORD_FILE;
    msv_err err;

    if (r == NULL)
        return MSV_ERR_NOMEM;
    r->f = in;
    r->dir = -1;
    r->why = why;
    r->why_len = why_len;
    r->progress = progress;
    if (fileno(in) >= 0 && fstat(fileno(in), &sb) == 0 && S_ISREG(sb.st_mode))
        r->total = (uint64_t)sb.st_size;
    r->done = AD_LEN;
    err = read_header(r, passphrase, key);
    if (err == MSV_OK && (r->dir = msv_privdir_open(AT_FDCWD, dir, 0)) < 0)
        err = say(why, why_len, MSV_ERR_INVALID,
                  "%s must be your own directory, writable by you only", dir);
    /* the first chunk decides the passphrase before anything is written */
    if (err == MSV_OK)
        err = pull_chunk(r, 1);
    while (err == MSV_OK) {
        err = get(r, &kind, 1);
        if (err != MSV_OK || kind == RECORD_END)
            break;
        err = kind == RECORD_FILE ? unpack_file(r, r->dir, &have_db) : damaged(r);
    }
    /* the end record closes the last chunk, and nothing follows */
    if (err == MSV_OK && (r->pos != r->len || !r->final || fgetc(in) != EOF))
        err = damaged(r);
    if (err == MSV_OK && !have_db)
        err = say(why, why_len, MSV_ERR_PARSE, "the backup holds no account database");
    if (r->dir >= 0)
        close(r->dir);
    sodium_memzero(r, sizeof(*r));
    free(r);
    return err;
}

/* Unlinks what dir holds (files only), then dir itself. */
static void remove_flat(const char *dir)
{
    char path[1500];
    struct dirent *e;
    DIR *d = opendir(dir);

    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
}

void msv_backup_discard(const char *dir)
{
    char sub[1200];

    struct stat st;

    snprintf(sub, sizeof(sub), "%s/%s", dir, ATTACHMENTS);
    if (lstat(sub, &st) == 0 && S_ISLNK(st.st_mode))
        unlink(sub); /* a link planted there: what it points to is not the restore's */
    else
        remove_flat(sub);
    remove_flat(dir);
}
