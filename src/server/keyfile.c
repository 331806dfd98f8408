/* missived's key files (keyfile.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "missive/util.h"
#include "server/keyfile.h"

#define PATH_LEN 1200
#define PUBLIC_MAX 64

msv_err msv_keyfile_load(const char *dir, const char *name, const char *what, uint8_t *secret,
                         size_t len, void (*make)(uint8_t *secret, void *ctx), void *ctx, char *err,
                         size_t err_len)
{
    char path[PATH_LEN];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t got = read(fd, secret, len);

        close(fd);
        if (got != (ssize_t)len) {
            snprintf(err, err_len, "%s is not a %s (%zu bytes)", path, what, len);
            return MSV_ERR_PARSE;
        }
        return MSV_OK;
    }
    if (errno != ENOENT) {
        snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
        return MSV_ERR_IO;
    }
    make(secret, ctx);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || msv_write_all(fd, secret, len) != MSV_OK || fsync(fd) != 0) {
        if (fd >= 0)
            close(fd);
        snprintf(err, err_len, "cannot write %s: %s", path, strerror(errno));
        return MSV_ERR_IO;
    }
    close(fd);
    return MSV_OK;
}

msv_err msv_keyfile_write_public(const char *dir, const char *name, const uint8_t *pub, size_t len,
                                 char *err, size_t err_len)
{
    char path[PATH_LEN], hex[2 * PUBLIC_MAX + 2];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (len > PUBLIC_MAX || msv_hex_encode(pub, len, hex, sizeof(hex)) != MSV_OK)
        return MSV_ERR_INVALID;
    hex[2 * len] = '\n';
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || msv_write_all(fd, hex, 2 * len + 1) != MSV_OK) {
        if (fd >= 0)
            close(fd);
        snprintf(err, err_len, "cannot write %s", path);
        return MSV_ERR_IO;
    }
    close(fd);
    return MSV_OK;
}
