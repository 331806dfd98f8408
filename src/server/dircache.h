/*
 * The relay's cache of who has which devices: for each handle, its account
 * and the ids and suites of its approved devices, which is all a send needs to
 * check its envelopes' addresses. Every change of a device set goes through
 * msv_notify_device_change(), which drops the handle; a generation count keeps
 * a lookup that raced with a change from putting the old list back.
 */
#ifndef MSV_SERVER_DIRCACHE_H
#define MSV_SERVER_DIRCACHE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "server/u64map.h"

struct msv_dir_device {
    uint64_t id;
    uint32_t suite;  /* its own */
    unsigned suites; /* every suite it speaks (MSV_SUITE_BIT each) */
};

struct msv_dircache {
    pthread_mutex_t lock;
    struct msv_u64map map; /* hash of the handle -> struct dir_entry * */
    uint64_t generation;   /* grows with every drop */
    size_t max_entries;
};

void msv_dircache_init(struct msv_dircache *c, size_t max_entries);
void msv_dircache_free(struct msv_dircache *c);
/*
 * Copies handle's devices (at most max) to out and returns 1 if it is cached
 * with at most max devices; otherwise returns 0 and the generation to pass to
 * msv_dircache_put() after reading the store.
 */
int msv_dircache_get(struct msv_dircache *c, const char *handle, uint64_t *account,
                     struct msv_dir_device *out, size_t max, size_t *n, uint64_t *generation);
/* Caches what the store said, unless a drop happened since generation was read. */
void msv_dircache_put(struct msv_dircache *c, const char *handle, uint64_t account,
                      const struct msv_dir_device *devs, size_t n, uint64_t generation);
void msv_dircache_drop(struct msv_dircache *c, const char *handle);
/* Forgets every handle (changes may have been missed: another node's, while Redis was away). */
void msv_dircache_drop_all(struct msv_dircache *c);

#endif
