/* A hash map from non-zero 64-bit keys to pointers (open addressing, linear probing). */
#ifndef MSV_SERVER_U64MAP_H
#define MSV_SERVER_U64MAP_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

struct msv_u64map {
    uint64_t *keys; /* 0 marks an empty slot */
    void **values;
    size_t cap, count;
};

void msv_u64map_init(struct msv_u64map *m);
void msv_u64map_clear(struct msv_u64map *m);
/* Inserts or replaces; key must not be 0. */
MSV_MUST_CHECK msv_err msv_u64map_put(struct msv_u64map *m, uint64_t key, void *value);
void *msv_u64map_get(const struct msv_u64map *m, uint64_t key);
/* Removes key; returns its value or NULL. */
void *msv_u64map_del(struct msv_u64map *m, uint64_t key);

#endif
