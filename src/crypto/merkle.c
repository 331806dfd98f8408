/*
 * The transparency log's Merkle tree (RFC 6962 section 2.1 hashing; proofs
 * and their verification as RFC 9162 sections 2.1.3 and 2.1.4 describe).
 *
 * levels[k] holds the hashes of the complete, aligned subtrees of 2^k
 * leaves; any subtree the recursive definition needs is either one of them
 * or splits into one of them and a smaller right part.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/kt.h"

#define LEVELS 64

struct level {
    uint8_t (*h)[MSV_KT_HASH_LEN];
    uint64_t n, cap;
};

/* The subtrees that end at the tree's current size, by start: every proof against the newest
 * head needs some of them, and only LEVELS of them exist for one size. */
struct memo {
    uint64_t lo;
    uint8_t h[MSV_KT_HASH_LEN];
};

struct msv_merkle {
    struct level levels[LEVELS];
    struct memo memo[LEVELS];
    size_t n_memo; /* entries valid for the current size; append empties it */
};

typedef uint8_t hash_t[MSV_KT_HASH_LEN];

void msv_kt_leaf_hash(const uint8_t *leaf, size_t len, uint8_t out[MSV_KT_HASH_LEN])
{
    crypto_hash_sha256_state st;
    const uint8_t prefix = 0x00;

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, &prefix, 1);
    crypto_hash_sha256_update(&st, leaf, len);
    crypto_hash_sha256_final(&st, out);
}

static void node_hash(const uint8_t l[MSV_KT_HASH_LEN], const uint8_t r[MSV_KT_HASH_LEN],
                      uint8_t out[MSV_KT_HASH_LEN])
{
    crypto_hash_sha256_state st;
    const uint8_t prefix = 0x01;

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, &prefix, 1);
    crypto_hash_sha256_update(&st, l, MSV_KT_HASH_LEN);
    crypto_hash_sha256_update(&st, r, MSV_KT_HASH_LEN);
    crypto_hash_sha256_final(&st, out);
}

msv_err msv_merkle_new(struct msv_merkle **out)
{
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? MSV_OK : MSV_ERR_NOMEM;
}

void msv_merkle_free(struct msv_merkle *t)
{
    if (t == NULL)
        return;
    for (int k = 0; k < LEVELS; k++)
        free(t->levels[k].h);
    free(t);
}

uint64_t msv_merkle_size(const struct msv_merkle *t)
{
    return t->levels[0].n;
}

msv_err msv_merkle_leaf(const struct msv_merkle *t, uint64_t index, uint8_t out[MSV_KT_HASH_LEN])
{
    if (index >= msv_merkle_size(t))
        return MSV_ERR_INVALID;
    memcpy(out, t->levels[0].h[index], MSV_KT_HASH_LEN);
    return MSV_OK;
}

static msv_err level_push(struct level *l, const uint8_t h[MSV_KT_HASH_LEN])
{
    if (l->n == l->cap) {
        uint64_t cap = l->cap ? l->cap * 2 : 64;
        void *p = realloc(l->h, cap * MSV_KT_HASH_LEN);

        if (p == NULL)
            return MSV_ERR_NOMEM;
        l->h = p;
        l->cap = cap;
    }
    memcpy(l->h[l->n++], h, MSV_KT_HASH_LEN);
    return MSV_OK;
}

msv_err msv_merkle_append(struct msv_merkle *t, const uint8_t leaf_hash[MSV_KT_HASH_LEN])
{
    hash_t h;
    msv_err err = level_push(&t->levels[0], leaf_hash);

    t->n_memo = 0;
    /* each level that now ends in a complete pair gets their parent */
    for (int k = 0; err == MSV_OK && k + 1 < LEVELS && t->levels[k].n % 2 == 0; k++) {
        const struct level *l = &t->levels[k];

        node_hash(l->h[l->n - 2], l->h[l->n - 1], h);
        err = level_push(&t->levels[k + 1], h);
    }
    return err;
}

/* The largest power of two smaller than n (n >= 2). */
static uint64_t split(uint64_t n)
{
    uint64_t k = 1;

    while (k << 1 < n)
        k <<= 1;
    return k;
}

/* MTH(D[lo:hi]) for 0 <= lo < hi <= size. The tree is const to callers; the memo is a cache. */
static void subtree(const struct msv_merkle *t, uint64_t lo, uint64_t hi, hash_t out)
{
    struct msv_merkle *cache = (struct msv_merkle *)t;
    int at_end = hi == msv_merkle_size(t);
    uint64_t n = hi - lo, k;
    hash_t l, r;

    if ((n & (n - 1)) == 0 && lo % n == 0) {
        int level = __builtin_ctzll(n);

        memcpy(out, t->levels[level].h[lo >> level], MSV_KT_HASH_LEN);
        return;
    }
    for (size_t i = 0; at_end && i < t->n_memo; i++) {
        if (t->memo[i].lo == lo) {
            memcpy(out, t->memo[i].h, MSV_KT_HASH_LEN);
            return;
        }
    }
    k = split(n);
    subtree(t, lo, lo + k, l);
    subtree(t, lo + k, hi, r);
    node_hash(l, r, out);
    if (at_end && cache->n_memo < LEVELS) {
        cache->memo[cache->n_memo].lo = lo;
        memcpy(cache->memo[cache->n_memo++].h, out, MSV_KT_HASH_LEN);
    }
}

msv_err msv_merkle_root(const struct msv_merkle *t, uint64_t size, uint8_t out[MSV_KT_HASH_LEN])
{
    if (size > msv_merkle_size(t))
        return MSV_ERR_INVALID;
    if (size == 0) {
        crypto_hash_sha256(out, (const uint8_t *)"", 0);
        return MSV_OK;
    }
    subtree(t, 0, size, out);
    return MSV_OK;
}

/* PATH(m, D[lo:hi]), appended leaf upwards. */
static void path(const struct msv_merkle *t, uint64_t m, uint64_t lo, uint64_t hi,
                 uint8_t proof[][MSV_KT_HASH_LEN], size_t *n)
{
    uint64_t k;

    if (hi - lo == 1)
        return;
    k = split(hi - lo);
    if (m < k) {
        path(t, m, lo, lo + k, proof, n);
        subtree(t, lo + k, hi, proof[(*n)++]);
    } else {
        path(t, m - k, lo + k, hi, proof, n);
        subtree(t, lo, lo + k, proof[(*n)++]);
    }
}

msv_err msv_merkle_inclusion(const struct msv_merkle *t, uint64_t index, uint64_t size,
                             uint8_t proof[][MSV_KT_HASH_LEN], size_t *n)
{
    *n = 0;
    if (size > msv_merkle_size(t) || index >= size)
        return MSV_ERR_INVALID;
    path(t, index, 0, size, proof, n);
    return MSV_OK;
}

/* SUBPROOF(m, D[lo:hi], whole). */
static void subproof(const struct msv_merkle *t, uint64_t m, uint64_t lo, uint64_t hi, int whole,
                     uint8_t proof[][MSV_KT_HASH_LEN], size_t *n)
{
    uint64_t k;

    if (m == hi - lo) {
        if (!whole)
            subtree(t, lo, hi, proof[(*n)++]);
        return;
    }
    k = split(hi - lo);
    if (m <= k) {
        subproof(t, m, lo, lo + k, whole, proof, n);
        subtree(t, lo + k, hi, proof[(*n)++]);
    } else {
        subproof(t, m - k, lo + k, hi, 0, proof, n);
        subtree(t, lo, lo + k, proof[(*n)++]);
    }
}

msv_err msv_merkle_consistency(const struct msv_merkle *t, uint64_t old_size, uint64_t size,
                               uint8_t proof[][MSV_KT_HASH_LEN], size_t *n)
{
    *n = 0;
    if (size > msv_merkle_size(t) || old_size > size)
        return MSV_ERR_INVALID;
    if (old_size > 0 && old_size < size)
        subproof(t, old_size, 0, size, 1, proof, n);
    return MSV_OK;
}

msv_err msv_merkle_verify_inclusion(const uint8_t leaf_hash[MSV_KT_HASH_LEN], uint64_t index,
                                    uint64_t size, const uint8_t proof[][MSV_KT_HASH_LEN], size_t n,
                                    const uint8_t root[MSV_KT_HASH_LEN])
{
    uint64_t fn = index, sn;
    hash_t r;

    if (index >= size)
        return MSV_ERR_AUTH;
    sn = size - 1;
    memcpy(r, leaf_hash, MSV_KT_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        if (sn == 0)
            return MSV_ERR_AUTH;
        if ((fn & 1) || fn == sn) {
            node_hash(proof[i], r, r);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            node_hash(r, proof[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && sodium_memcmp(r, root, MSV_KT_HASH_LEN) == 0 ? MSV_OK : MSV_ERR_AUTH;
}

msv_err msv_merkle_verify_consistency(uint64_t old_size, uint64_t size,
                                      const uint8_t old_root[MSV_KT_HASH_LEN],
                                      const uint8_t root[MSV_KT_HASH_LEN],
                                      const uint8_t proof[][MSV_KT_HASH_LEN], size_t n)
{
    uint64_t fn, sn;
    hash_t fr, sr;
    size_t i = 0;

    if (old_size > size)
        return MSV_ERR_AUTH;
    if (old_size == size) /* the same tree: the same root, and nothing to prove */
        return n == 0 && sodium_memcmp(old_root, root, MSV_KT_HASH_LEN) == 0 ? MSV_OK
                                                                             : MSV_ERR_AUTH;
    if (old_size == 0) /* the empty tree is a prefix of every tree */
        return n == 0 ? MSV_OK : MSV_ERR_AUTH;
    if (n == 0)
        return MSV_ERR_AUTH;
    fn = old_size - 1;
    sn = size - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    if ((old_size & (old_size - 1)) == 0) { /* a power of two: the old root starts the path */
        memcpy(fr, old_root, MSV_KT_HASH_LEN);
    } else {
        memcpy(fr, proof[0], MSV_KT_HASH_LEN);
        i = 1;
    }
    memcpy(sr, fr, MSV_KT_HASH_LEN);
    for (; i < n; i++) {
        if (sn == 0)
            return MSV_ERR_AUTH;
        if ((fn & 1) || fn == sn) {
            node_hash(proof[i], fr, fr);
            node_hash(proof[i], sr, sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            node_hash(sr, proof[i], sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && sodium_memcmp(fr, old_root, MSV_KT_HASH_LEN) == 0 &&
                   sodium_memcmp(sr, root, MSV_KT_HASH_LEN) == 0
               ? MSV_OK
               : MSV_ERR_AUTH;
}
