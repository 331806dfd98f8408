/*
 * A received message's files: receive.c saves each under attachments/ as
 * <message id>-<name> (or <message id>-<n>-<name>) and appends a line
 * "[file: PATH (N bytes)]" to the message's text. The lines are read here
 * only as an order; every path is checked to be a file of that message
 * directly under attachments/ and opened without following a link, so a
 * sender who writes such lines into a text reaches nothing else.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/files.h"
#include "client/internal.h"
#include "missive/util.h"
#include "util/privdir.h"

/* A browser shows these inline; everything else is a download. */
static const char *sniff_mime(int fd)
{
    uint8_t b[12] = {0};
    ssize_t n = pread(fd, b, sizeof(b), 0);

    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (n >= 3 && memcmp(b, "\xff\xd8\xff", 3) == 0)
        return "image/jpeg";
    if (n >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
        return "image/gif";
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return "image/webp";
    return "application/octet-stream";
}

/* Opens attachments/<file> if file is one of id's; fills f. -1 if not. */
static int open_file(int dir, const char *hex, const char *file, size_t len,
                     struct msv_message_file *f)
{
    struct stat st;
    int fd;

    if (len < 34 || len >= sizeof(f->file) || strncmp(file, hex, 32) != 0 || file[32] != '-' ||
        memchr(file, '/', len) != NULL || memchr(file, '\0', len) != NULL)
        return -1;
    memcpy(f->file, file, len);
    f->file[len] = '\0';
    fd = openat(dir, f->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    snprintf(f->name, sizeof(f->name), "%s", f->file + 33);
    f->size = (uint64_t)st.st_size;
    f->mime = sniff_mime(fd);
    return fd;
}

/*
 * Walks m's file lines; for each that names a file of m, calls found (which
 * returns nonzero to stop). The descriptor passed is the caller's to keep or close.
 */
static msv_err each_file(struct msv_client *c, const struct msv_message_rec *m,
                         int (*found)(void *ctx, int fd, const struct msv_message_file *f),
                         void *ctx)
{
    char hex[33], prefix[1100], adir[1100];
    const char *p = m->text;
    size_t plen;
    int dir;

    if (msv_hex_encode(m->message_id, 16, hex, sizeof(hex)) != MSV_OK)
        return MSV_ERR_INVALID;
    snprintf(adir, sizeof(adir), "%s/attachments", c->dir);
    plen = (size_t)snprintf(prefix, sizeof(prefix), "\n[file: %s/", adir);
    if (p == NULL || plen >= sizeof(prefix))
        return MSV_OK;
    dir = msv_privdir_open(AT_FDCWD, adir, 0);
    if (dir < 0)
        return MSV_OK; /* nothing received yet */
    while ((p = strstr(p, prefix)) != NULL) {
        const char *name = p + plen, *end = strstr(name, " (");
        struct msv_message_file f;
        int fd;

        p = name;
        if (end == NULL)
            break;
        fd = open_file(dir, hex, name, (size_t)(end - name), &f);
        if (fd >= 0 && found(ctx, fd, &f))
            break;
    }
    close(dir);
    return MSV_OK;
}

struct file_list {
    struct msv_message_file *out;
    size_t max, n;
};

static int list_one(void *ctx, int fd, const struct msv_message_file *f)
{
    struct file_list *l = ctx;

    close(fd);
    l->out[l->n++] = *f;
    return l->n == l->max;
}

msv_err msv_client_message_files(struct msv_client *c, const struct msv_message_rec *m,
                                 struct msv_message_file *out, size_t max, size_t *n)
{
    struct file_list l = {out, max, 0};
    msv_err err = max > 0 ? each_file(c, m, list_one, &l) : MSV_OK;

    *n = l.n;
    return err;
}

struct file_pick {
    unsigned index, at;
    int fd;
    struct msv_message_file *f;
};

static int pick_one(void *ctx, int fd, const struct msv_message_file *f)
{
    struct file_pick *k = ctx;

    if (k->at++ != k->index) {
        close(fd);
        return 0;
    }
    k->fd = fd;
    *k->f = *f;
    return 1;
}

msv_err msv_client_message_file_open(struct msv_client *c, const uint8_t id[16], unsigned index,
                                     struct msv_message_file *f, int *fd)
{
    struct msv_message_rec *m = NULL;
    struct file_pick k = {index, 0, -1, f};
    msv_err err = msv_client_db_message_get(c->db, id, &m);

    if (err == MSV_OK)
        err = each_file(c, m, pick_one, &k);
    if (err == MSV_OK && k.fd < 0)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        *fd = k.fd;
    msv_messages_free(m, m ? 1 : 0);
    return err;
}
