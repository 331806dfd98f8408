/* The directory blob backend: <hex id>.part while uploading, <hex id> once published. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "missive/util.h"
#include "server/blob_backend.h"
#include "util/buf.h"

struct blob_dir {
    char dir[1024];
};

static void path_of(const struct blob_dir *d, const uint8_t id[MSV_BLOB_ID_LEN], int partial,
                    char *out, size_t len)
{
    char hex[2 * MSV_BLOB_ID_LEN + 1];

    if (msv_hex_encode(id, MSV_BLOB_ID_LEN, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0'; /* cannot happen: the buffer fits */
    snprintf(out, len, "%s/%s%s", d->dir, hex, partial ? ".part" : "");
}

static msv_err dir_create(void *impl, const uint8_t id[MSV_BLOB_ID_LEN])
{
    char path[1200];
    int fd;

    path_of(impl, id, 1, path, sizeof(path));
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? MSV_ERR_EXISTS : MSV_ERR_IO;
    return close(fd) == 0 ? MSV_OK : MSV_ERR_IO;
}

static msv_err dir_write_at(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], uint64_t offset,
                            const uint8_t *data, size_t len)
{
    char path[1200];
    ssize_t n = -1;
    int fd;

    path_of(impl, id, 1, path, sizeof(path));
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = pwrite(fd, data, len, (off_t)offset);
        if (close(fd) != 0)
            n = -1;
    }
    return n == (ssize_t)len ? MSV_OK : MSV_ERR_IO;
}

static msv_err dir_digest(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], uint8_t sha256[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char path[1200];
    uint8_t buf[65536];
    msv_err err = MSV_ERR_IO;
    ssize_t n;
    int fd;

    path_of(impl, id, 1, path, sizeof(path));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        /* published already, its record not yet saying so (a failure or a crash between the
         * two): the finish is made again from the published bytes */
        path_of(impl, id, 0, path, sizeof(path));
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (ctx == NULL || fd < 0 || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
            goto out;
    }
    if (n == 0 && fdatasync(fd) == 0 && EVP_DigestFinal_ex(ctx, sha256, NULL) == 1)
        err = MSV_OK;
out:
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(ctx);
    return err;
}

/*
 * The upload under its final name, the directory synced so that the rename outlives a power
 * loss before the record says it is complete. Published already (the record's update failed
 * after, and the finish is made again): done.
 */
static msv_err dir_publish(void *impl, const uint8_t id[MSV_BLOB_ID_LEN])
{
    const struct blob_dir *d = impl;
    char part[1200], done[1200];
    struct stat st;
    int fd, ok;

    path_of(impl, id, 1, part, sizeof(part));
    path_of(impl, id, 0, done, sizeof(done));
    if (rename(part, done) != 0 &&
        !(errno == ENOENT && stat(done, &st) == 0 && S_ISREG(st.st_mode)))
        return MSV_ERR_IO;
    fd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ok = fd >= 0 && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    return ok ? MSV_OK : MSV_ERR_IO;
}

static msv_err dir_read_at(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], uint64_t offset,
                           uint8_t *data, size_t len)
{
    char path[1200];
    ssize_t n = -1;
    int fd;

    path_of(impl, id, 0, path, sizeof(path));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = pread(fd, data, len, (off_t)offset);
        close(fd);
    }
    return n == (ssize_t)len ? MSV_OK : MSV_ERR_IO;
}

/* The id a file of the directory names ("<hex id>" or "<hex id>.part"): 1, or 0 for another. */
static int id_of(const char *name, uint8_t id[MSV_BLOB_ID_LEN])
{
    char hex[2 * MSV_BLOB_ID_LEN + 1];
    size_t len = strlen(name), n = 0;

    if (len == 2 * MSV_BLOB_ID_LEN + 5 && strcmp(name + 2 * MSV_BLOB_ID_LEN, ".part") == 0)
        len -= 5;
    if (len != 2 * MSV_BLOB_ID_LEN)
        return 0;
    memcpy(hex, name, len);
    hex[len] = '\0';
    return msv_hex_decode(hex, id, MSV_BLOB_ID_LEN, &n) == MSV_OK && n == MSV_BLOB_ID_LEN;
}

typedef uint8_t blob_id[MSV_BLOB_ID_LEN];

/* Moves heap[i] down the max-heap of n ids (the highest at the top). */
static void heap_down(blob_id *heap, size_t n, size_t i)
{
    for (;;) {
        size_t top = i, l = 2 * i + 1, r = 2 * i + 2;
        blob_id t;

        if (l < n && memcmp(heap[l], heap[top], MSV_BLOB_ID_LEN) > 0)
            top = l;
        if (r < n && memcmp(heap[r], heap[top], MSV_BLOB_ID_LEN) > 0)
            top = r;
        if (top == i)
            return;
        memcpy(t, heap[i], MSV_BLOB_ID_LEN);
        memcpy(heap[i], heap[top], MSV_BLOB_ID_LEN);
        memcpy(heap[top], t, MSV_BLOB_ID_LEN);
        i = top;
    }
}

static void heap_up(blob_id *heap, size_t i)
{
    while (i > 0 && memcmp(heap[(i - 1) / 2], heap[i], MSV_BLOB_ID_LEN) < 0) {
        blob_id t;

        memcpy(t, heap[i], MSV_BLOB_ID_LEN);
        memcpy(heap[i], heap[(i - 1) / 2], MSV_BLOB_ID_LEN);
        memcpy(heap[(i - 1) / 2], t, MSV_BLOB_ID_LEN);
        i = (i - 1) / 2;
    }
}

/*
 * One pass over the directory keeps the max lowest ids above after in a max-heap (an id is
 * compared before its file is looked at, so a pass stats few files more than it keeps), then
 * sorts them.
 */
static msv_err dir_list_before(void *impl, int64_t before_s, const uint8_t *after, size_t max,
                               uint8_t (**ids)[MSV_BLOB_ID_LEN], size_t *count)
{
    const struct blob_dir *d = impl;
    blob_id *heap = max > 0 ? calloc(max, sizeof(*heap)) : NULL;
    DIR *dir = opendir(d->dir);
    struct dirent *e;
    size_t n = 0;
    msv_err err = dir == NULL ? MSV_ERR_IO : heap == NULL && max > 0 ? MSV_ERR_NOMEM : MSV_OK;

    while (err == MSV_OK && max > 0 && (e = readdir(dir)) != NULL) {
        blob_id id;
        struct stat st;

        if (!id_of(e->d_name, id) || (after != NULL && memcmp(id, after, MSV_BLOB_ID_LEN) <= 0) ||
            (n == max && memcmp(id, heap[0], MSV_BLOB_ID_LEN) >= 0) ||
            fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
            st.st_mtime >= before_s)
            continue;
        /* (a .part and a published file never share an id for long: the publishing renames
         * one to the other; should both be there, the id is given twice, which is harmless) */
        if (n < max) {
            memcpy(heap[n], id, MSV_BLOB_ID_LEN);
            heap_up(heap, n++);
        } else {
            memcpy(heap[0], id, MSV_BLOB_ID_LEN);
            heap_down(heap, n, 0);
        }
    }
    if (dir != NULL)
        closedir(dir);
    if (err != MSV_OK) {
        free(heap);
        return err;
    }
    /* the heap sorted in place: the highest to the end, one at a time */
    for (size_t end = n; end > 1; end--) {
        blob_id t;

        memcpy(t, heap[0], MSV_BLOB_ID_LEN);
        memcpy(heap[0], heap[end - 1], MSV_BLOB_ID_LEN);
        memcpy(heap[end - 1], t, MSV_BLOB_ID_LEN);
        heap_down(heap, end - 1, 0);
    }
    if (n == 0) {
        free(heap);
        heap = NULL;
    }
    *ids = (uint8_t(*)[MSV_BLOB_ID_LEN])heap;
    *count = n;
    return MSV_OK;
}

static void dir_remove(void *impl, const uint8_t id[MSV_BLOB_ID_LEN])
{
    char path[1200];

    path_of(impl, id, 0, path, sizeof(path));
    unlink(path);
    path_of(impl, id, 1, path, sizeof(path));
    unlink(path);
}

static void dir_close(void *impl)
{
    free(impl);
}

static const struct msv_blob_backend_ops dir_ops = {
    .name = "dir",
    .create = dir_create,
    .write_at = dir_write_at,
    .digest = dir_digest,
    .publish = dir_publish,
    .read_at = dir_read_at,
    .list_before = dir_list_before,
    .remove = dir_remove,
    .close = dir_close,
};

msv_err msv_blob_backend_open_dir(const char *dir, struct msv_blob_backend **out)
{
    struct blob_dir *d = calloc(1, sizeof(*d));
    struct msv_blob_backend *b = calloc(1, sizeof(*b));

    if (d == NULL || b == NULL || strlen(dir) >= sizeof(d->dir)) {
        free(d);
        free(b);
        return d == NULL || b == NULL ? MSV_ERR_NOMEM : MSV_ERR_INVALID;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        free(d);
        free(b);
        return MSV_ERR_IO;
    }
    snprintf(d->dir, sizeof(d->dir), "%s", dir);
    b->ops = &dir_ops;
    b->impl = d;
    *out = b;
    return MSV_OK;
}

void msv_blob_backend_close(struct msv_blob_backend *b)
{
    if (b == NULL)
        return;
    b->ops->close(b->impl);
    free(b);
}
