/* Private directories: see privdir.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "util/privdir.h"

int msv_privdir_is_private(const struct stat *st)
{
    return S_ISDIR(st->st_mode) && st->st_uid == geteuid() && (st->st_mode & 022) == 0;
}

int msv_privdir_open(int at, const char *name, int create)
{
    struct stat st;
    int fd;

    if (create && mkdirat(at, name, 0700) != 0 && errno != EEXIST)
        return -1;
    fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 && fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    if (fd >= 0 && !msv_privdir_is_private(&st)) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

/* Removes everything in the directory open as fd (closed here); 0 or -1. */
static int remove_below(int fd, int depth)
{
    DIR *d = fdopendir(fd);
    struct dirent *e;
    struct stat st;
    int rc = 0, sub;

    if (d == NULL) {
        close(fd);
        return -1;
    }
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = -1;
        } else if (S_ISDIR(st.st_mode)) {
            sub = depth < 16
                      ? openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                      : -1;
            rc = sub < 0 ? -1 : remove_below(sub, depth + 1);
            if (rc == 0 && unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) != 0)
                rc = -1;
        } else if (unlinkat(dirfd(d), e->d_name, 0) != 0) {
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

int msv_privdir_remove(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return -1;
    if (remove_below(fd, 0) != 0)
        return -1;
    return rmdir(path);
}
