#include "server/dircache.h"

#include <stdlib.h>
#include <string.h>

struct dir_entry {
    char *handle;
    uint64_t account;
    size_t n;
    struct msv_dir_device devs[];
};

/* FNV-1a; a collision only costs a miss, as the entry keeps its handle. */
static uint64_t handle_key(const char *handle)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (const unsigned char *p = (const unsigned char *)handle; *p != '\0'; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return h != 0 ? h : 1;
}

static void entry_free(struct dir_entry *e)
{
    if (e != NULL) {
        free(e->handle);
        free(e);
    }
}

static void clear_all(struct msv_dircache *c)
{
    for (size_t i = 0; i < c->map.cap; i++) {
        if (c->map.keys[i] != 0)
            entry_free(c->map.values[i]);
    }
    msv_u64map_clear(&c->map); /* empty and ready for use */
}

void msv_dircache_init(struct msv_dircache *c, size_t max_entries)
{
    pthread_mutex_init(&c->lock, NULL);
    msv_u64map_init(&c->map);
    c->generation = 1;
    c->max_entries = max_entries;
}

void msv_dircache_free(struct msv_dircache *c)
{
    clear_all(c);
    pthread_mutex_destroy(&c->lock);
}

int msv_dircache_get(struct msv_dircache *c, const char *handle, uint64_t *account,
                     struct msv_dir_device *out, size_t max, size_t *n, uint64_t *generation)
{
    const struct dir_entry *e;
    int hit = 0;

    pthread_mutex_lock(&c->lock);
    e = msv_u64map_get(&c->map, handle_key(handle));
    if (e != NULL && strcmp(e->handle, handle) == 0 && e->n <= max) {
        memcpy(out, e->devs, e->n * sizeof(*out));
        *n = e->n;
        *account = e->account;
        hit = 1;
    }
    *generation = c->generation;
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void msv_dircache_put(struct msv_dircache *c, const char *handle, uint64_t account,
                      const struct msv_dir_device *devs, size_t n, uint64_t generation)
{
    struct dir_entry *e = malloc(sizeof(*e) + n * sizeof(e->devs[0]));
    uint64_t key = handle_key(handle);

    if (e == NULL || (e->handle = strdup(handle)) == NULL) {
        free(e);
        return;
    }
    e->account = account;
    e->n = n;
    memcpy(e->devs, devs, n * sizeof(e->devs[0]));
    pthread_mutex_lock(&c->lock);
    if (generation != c->generation) {
        pthread_mutex_unlock(&c->lock);
        entry_free(e);
        return;
    }
    if (c->map.count >= c->max_entries)
        clear_all(c); /* bounded; refills from the store as sends come */
    entry_free(msv_u64map_get(&c->map, key));
    if (msv_u64map_put(&c->map, key, e) != MSV_OK) {
        msv_u64map_del(&c->map, key);
        entry_free(e);
    }
    pthread_mutex_unlock(&c->lock);
}

void msv_dircache_drop(struct msv_dircache *c, const char *handle)
{
    pthread_mutex_lock(&c->lock);
    entry_free(msv_u64map_del(&c->map, handle_key(handle)));
    c->generation++;
    pthread_mutex_unlock(&c->lock);
}

void msv_dircache_drop_all(struct msv_dircache *c)
{
    pthread_mutex_lock(&c->lock);
    clear_all(c);
    c->generation++;
    pthread_mutex_unlock(&c->lock);
}
