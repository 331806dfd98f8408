#include "server/u64map.h"

#include <stdlib.h>

/* splitmix64's finaliser: device and account ids are sequential, so they need spreading. */
static size_t slot_of(const struct msv_u64map *m, uint64_t k)
{
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ull;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebull;
    k ^= k >> 31;
    return (size_t)k & (m->cap - 1);
}

void msv_u64map_init(struct msv_u64map *m)
{
    m->keys = NULL;
    m->values = NULL;
    m->cap = m->count = 0;
}

void msv_u64map_clear(struct msv_u64map *m)
{
    free(m->keys);
    free(m->values);
    msv_u64map_init(m);
}

static msv_err grow(struct msv_u64map *m)
{
    struct msv_u64map bigger;
    size_t cap = m->cap ? m->cap * 2 : 64;

    bigger.keys = calloc(cap, sizeof(*bigger.keys));
    bigger.values = calloc(cap, sizeof(*bigger.values));
    bigger.cap = cap;
    bigger.count = 0;
    if (bigger.keys == NULL || bigger.values == NULL) {
        free(bigger.keys);
        free(bigger.values);
        return MSV_ERR_NOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] != 0) {
            size_t s = slot_of(&bigger, m->keys[i]);

            while (bigger.keys[s] != 0)
                s = (s + 1) & (cap - 1);
            bigger.keys[s] = m->keys[i];
            bigger.values[s] = m->values[i];
            bigger.count++;
        }
    }
    free(m->keys);
    free(m->values);
    *m = bigger;
    return MSV_OK;
}

msv_err msv_u64map_put(struct msv_u64map *m, uint64_t key, void *value)
{
    size_t s;

    if (key == 0)
        return MSV_ERR_INVALID;
    if ((m->count + 1) * 2 > m->cap && grow(m) != MSV_OK)
        return MSV_ERR_NOMEM;
    s = slot_of(m, key);
    while (m->keys[s] != 0 && m->keys[s] != key)
        s = (s + 1) & (m->cap - 1);
    if (m->keys[s] == 0)
        m->count++;
    m->keys[s] = key;
    m->values[s] = value;
    return MSV_OK;
}

void *msv_u64map_get(const struct msv_u64map *m, uint64_t key)
{
    size_t s;

    if (m->cap == 0 || key == 0)
        return NULL;
    for (s = slot_of(m, key); m->keys[s] != 0; s = (s + 1) & (m->cap - 1)) {
        if (m->keys[s] == key)
            return m->values[s];
    }
    return NULL;
}

void *msv_u64map_del(struct msv_u64map *m, uint64_t key)
{
    size_t s, next;
    void *value;

    if (m->cap == 0 || key == 0)
        return NULL;
    for (s = slot_of(m, key); m->keys[s] != key; s = (s + 1) & (m->cap - 1)) {
        if (m->keys[s] == 0)
            return NULL;
    }
    value = m->values[s];
    m->keys[s] = 0;
    m->values[s] = NULL;
    m->count--;
    /* backward-shift deletion keeps every probe chain unbroken without tombstones */
    for (next = (s + 1) & (m->cap - 1); m->keys[next] != 0; next = (next + 1) & (m->cap - 1)) {
        size_t home = slot_of(m, m->keys[next]);

        if (((next - home) & (m->cap - 1)) >= ((next - s) & (m->cap - 1))) {
            m->keys[s] = m->keys[next];
            m->values[s] = m->values[next];
            m->keys[next] = 0;
            m->values[next] = NULL;
            s = next;
        }
    }
    return value;
}
