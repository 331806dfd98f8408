/*
 * A failing disk for tests, loaded into missived with LD_PRELOAD: while the
 * file named by MSV_FAULTY_IO_TRIGGER exists, every write and sync of a
 * regular file whose path contains MSV_FAULTY_IO_MATCH fails with EIO,
 * as a disk with bad sectors or a lost network volume answers. Sockets,
 * pipes and other files are not touched. With MSV_FAULTY_IO_FULL set, the
 * disk is full instead: the same calls fail with ENOSPC, and statvfs() of
 * a matching path reports no free space. MSV_FAULTY_IO_CRASH_AFTER (below) makes
 * a crash instead.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

/* 1 if fd is a regular file whose path contains MSV_FAULTY_IO_MATCH. */
static int matching(int fd)
{
    const char *match = getenv("MSV_FAULTY_IO_MATCH");
    char link[64], path[4096];
    struct stat st;
    ssize_t n;

    if (match == NULL || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    return strstr(path, match) != NULL;
}

/*
 * With MSV_FAULTY_IO_CRASH_AFTER=N, the process dies (status 137, as if killed) at its matching
 * write or sync number N + 1, before it happens: a crash at that point of its work. Tests run
 * a command for N = 0, 1, 2 ... until it finishes, and check what each crash left. With
 * MSV_FAULTY_IO_CRASH_RENAMES set too, a rename() or link() whose new name contains the match
 * is such a point as well.
 */
static void crash_count(void)
{
    static long done;

    if (done++ == strtol(getenv("MSV_FAULTY_IO_CRASH_AFTER"), NULL, 10))
        _exit(137);
}

static void crash_point(int fd)
{
    if (getenv("MSV_FAULTY_IO_CRASH_AFTER") != NULL && matching(fd))
        crash_count();
}

static void crash_point_name(const char *path)
{
    const char *match = getenv("MSV_FAULTY_IO_MATCH");

    if (getenv("MSV_FAULTY_IO_CRASH_AFTER") != NULL &&
        getenv("MSV_FAULTY_IO_CRASH_RENAMES") != NULL && match != NULL &&
        strstr(path, match) != NULL)
        crash_count();
}

static int failing(int fd)
{
    const char *trigger = getenv("MSV_FAULTY_IO_TRIGGER");

    crash_point(fd);
    if (trigger == NULL || access(trigger, F_OK) != 0 || !matching(fd))
        return 0;
    errno = getenv("MSV_FAULTY_IO_FULL") != NULL ? ENOSPC : EIO;
    return 1;
}

/* The next definition of name after this library's (libc's). */
static void *next(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);

    if (f == NULL)
        abort();
    return f;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);

    if (failing(fd))
        return -1;
    if (real == NULL)
        real = (ssize_t(*)(int, const void *, size_t))next("write");
    return real(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);

    if (failing(fd))
        return -1;
    if (real == NULL)
        real = (ssize_t(*)(int, const void *, size_t, off_t))next("pwrite");
    return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);

    if (failing(fd))
        return -1;
    if (real == NULL)
        real = (ssize_t(*)(int, const void *, size_t, off_t))next("pwrite64");
    return real(fd, buf, n, off);
}

int fsync(int fd)
{
    static int (*real)(int);

    if (failing(fd))
        return -1;
    if (real == NULL)
        real = (int (*)(int))next("fsync");
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);

    if (failing(fd))
        return -1;
    if (real == NULL)
        real = (int (*)(int))next("fdatasync");
    return real(fd);
}

int rename(const char *from, const char *to)
{
    static int (*real)(const char *, const char *);

    crash_point_name(to);
    if (real == NULL)
        real = (int (*)(const char *, const char *))next("rename");
    return real(from, to);
}

int link(const char *from, const char *to)
{
    static int (*real)(const char *, const char *);

    crash_point_name(to);
    if (real == NULL)
        real = (int (*)(const char *, const char *))next("link");
    return real(from, to);
}

/* Whether statvfs of path is to report a full disk. */
static int full_path(const char *path)
{
    const char *trigger = getenv("MSV_FAULTY_IO_TRIGGER");
    const char *match = getenv("MSV_FAULTY_IO_MATCH");

    return getenv("MSV_FAULTY_IO_FULL") != NULL && trigger != NULL && match != NULL &&
           access(trigger, F_OK) == 0 && strstr(path, match) != NULL;
}

int statvfs(const char *path, struct statvfs *buf)
{
    static int (*real)(const char *, struct statvfs *);
    int r;

    if (real == NULL)
        real = (int (*)(const char *, struct statvfs *))next("statvfs");
    r = real(path, buf);
    if (r == 0 && full_path(path))
        buf->f_bavail = buf->f_bfree = 0;
    return r;
}

/* what a program built with 64-bit file offsets calls */
int statvfs64(const char *path, struct statvfs64 *buf)
{
    static int (*real)(const char *, struct statvfs64 *);
    int r;

    if (real == NULL)
        real = (int (*)(const char *, struct statvfs64 *))next("statvfs64");
    r = real(path, buf);
    if (r == 0 && full_path(path))
        buf->f_bavail = buf->f_bfree = 0;
    return r;
}
