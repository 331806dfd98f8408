/*
 * Private directories: an account's directory and its attachments/ are
 * written only when this user owns them and nobody else may write them,
 * and they are opened without following a link. Anyone who may write such
 * a directory could replace or link any file in it.
 */
#ifndef MSV_UTIL_PRIVDIR_H
#define MSV_UTIL_PRIVDIR_H

#include <sys/stat.h>

/* 1 if st is a directory this user owns and no group or other user may write. */
int msv_privdir_is_private(const struct stat *st);

/*
 * Opens the directory name (relative to the directory at, or AT_FDCWD),
 * made with mode 0700 first when create is set and it is missing, never
 * through a link. Returns its descriptor (caller closes it), or -1 with
 * errno set (EPERM if the directory is not private).
 */
int msv_privdir_open(int at, const char *name, int create);

/*
 * Removes the private directory path and everything below it (at most 16 levels deep),
 * never through a link: a link is removed, not followed. 0, or -1 with errno set (what
 * could not be removed stays).
 */
int msv_privdir_remove(const char *path);

#endif
