/* Private directories: see privdir.h. */
#include <errno.h>
#include <fcntl.h>
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
