/* Suite dispatch for sealing and opening per-device envelopes, and the replay cache. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"
#include "util/buf.h"

static size_t plaintext_max_in(const struct msv_public_identity *recipient, enum msv_suite suite)
{
    switch (suite) {
    case MSV_SUITE_CLASSIC:
        return msv_classic_plaintext_max(recipient);
    case MSV_SUITE_ECIES:
    case MSV_SUITE_MODERN:
        return MSV_PLAINTEXT_MAX;
    default:
        return 0;
    }
}

size_t msv_plaintext_max(const struct msv_public_identity *recipient)
{
    size_t max = 0;

    /* whichever suite a sender ends up using */
    for (int s = MSV_SUITE_CLASSIC; s <= MSV_SUITE_MODERN; s++) {
        size_t m = plaintext_max_in(recipient, (enum msv_suite)s);

        if ((recipient->suites & MSV_SUITE_BIT(s)) && (max == 0 || m < max))
            max = m;
    }
    return max;
}

msv_err msv_seal_suite_rng(const struct msv_identity *sender,
                           const struct msv_public_identity *recipient, enum msv_suite suite,
                           const uint8_t *pt, size_t pt_len, const struct msv_rng *rng,
                           uint8_t **out, size_t *out_len)
{
    if (sender == NULL || recipient == NULL || (pt == NULL && pt_len > 0))
        return MSV_ERR_INVALID;
    if (!(sender->pub->suites & recipient->suites & MSV_SUITE_BIT(suite)))
        return MSV_ERR_INVALID;
    switch (suite) {
    case MSV_SUITE_CLASSIC:
        return msv_classic_seal(sender, recipient, pt, pt_len, rng, out, out_len);
    case MSV_SUITE_ECIES:
        return msv_ecies_seal(sender, recipient, pt, pt_len, rng, out, out_len);
    case MSV_SUITE_MODERN:
        return msv_modern_seal(sender, recipient, pt, pt_len, rng, out, out_len);
    default:
        return MSV_ERR_INVALID;
    }
}

msv_err msv_seal_rng(const struct msv_identity *sender, const struct msv_public_identity *recipient,
                     const uint8_t *pt, size_t pt_len, const struct msv_rng *rng, uint8_t **out,
                     size_t *out_len)
{
    if (sender == NULL || recipient == NULL)
        return MSV_ERR_INVALID;
    return msv_seal_suite_rng(sender, recipient,
                              msv_suite_common(sender->pub->suites, recipient->suites), pt, pt_len,
                              rng, out, out_len);
}

msv_err msv_seal(const struct msv_identity *sender, const struct msv_public_identity *recipient,
                 const uint8_t *pt, size_t pt_len, uint8_t **out, size_t *out_len)
{
    return msv_seal_rng(sender, recipient, pt, pt_len, &msv_rng_system, out, out_len);
}

msv_err msv_seal_suite(const struct msv_identity *sender,
                       const struct msv_public_identity *recipient, enum msv_suite suite,
                       const uint8_t *pt, size_t pt_len, uint8_t **out, size_t *out_len)
{
    return msv_seal_suite_rng(sender, recipient, suite, pt, pt_len, &msv_rng_system, out, out_len);
}

enum msv_suite msv_envelope_suite(const uint8_t *wire, size_t len)
{
    if (len == 0)
        return MSV_SUITE_ANY;
    switch (wire[0]) {
    case MSV_WIRE_CLASSIC:
        return MSV_SUITE_CLASSIC;
    case MSV_WIRE_ECIES:
        return MSV_SUITE_ECIES;
    case MSV_WIRE_MODERN:
        return MSV_SUITE_MODERN;
    default:
        return MSV_SUITE_ANY;
    }
}

msv_err msv_open(const struct msv_identity *recipient, const struct msv_public_identity *sender,
                 const uint8_t *wire, size_t wire_len, struct msv_replay_cache *replay,
                 uint8_t **out, size_t *out_len)
{
    uint8_t id[32], *pt = NULL;
    size_t pt_len = 0;
    enum msv_suite suite;
    msv_err err;

    if (recipient == NULL || sender == NULL || (wire == NULL && wire_len > 0))
        return MSV_ERR_INVALID;
    /* the suite the envelope says, if both devices have its keys */
    suite = msv_envelope_suite(wire, wire_len);
    if (!(recipient->pub->suites & sender->suites & MSV_SUITE_BIT(suite)))
        return MSV_ERR_AUTH;
    switch (suite) {
    case MSV_SUITE_CLASSIC:
        err = msv_classic_open(recipient, sender, wire, wire_len, &pt, &pt_len, id);
        break;
    case MSV_SUITE_ECIES:
        err = msv_ecies_open(recipient, sender, wire, wire_len, &pt, &pt_len, id);
        break;
    default:
        err = msv_modern_open(recipient, sender, wire, wire_len, &pt, &pt_len, id);
        break;
    }
    if (err != MSV_OK)
        return err == MSV_ERR_NOMEM ? err : MSV_ERR_AUTH;
    /* Only authentic envelopes enter the cache, so a forger cannot evict or poison it. */
    if (replay != NULL) {
        err = msv_replay_cache_add(replay, id);
        if (err != MSV_OK) {
            msv_secret_free(pt, pt_len);
            return err;
        }
    }
    *out = pt;
    *out_len = pt_len;
    return MSV_OK;
}

msv_err msv_replay_id(uint8_t suite_byte, const uint8_t *unique, size_t len, uint8_t out[32])
{
    const uint8_t *parts[2] = {&suite_byte, unique};
    size_t lens[2] = {1, len};

    return msv_sha256_parts(parts, lens, 2, out);
}

msv_err msv_read_signature_trailer(struct msv_reader *r, const uint8_t **sig, size_t *sig_len)
{
    uint8_t n;

    if (msv_reader_u8(r, &n) != MSV_OK || msv_reader_bytes(r, n, sig) != MSV_OK ||
        msv_reader_left(r) != 0)
        return MSV_ERR_AUTH;
    *sig_len = n;
    return MSV_OK;
}

msv_err msv_verify_outer(const struct msv_public_identity *sender, const uint8_t *wire,
                         size_t wire_len)
{
    enum msv_suite suite;

    if (sender == NULL || (wire == NULL && wire_len > 0))
        return MSV_ERR_INVALID;
    suite = msv_envelope_suite(wire, wire_len);
    if (!(sender->suites & MSV_SUITE_BIT(MSV_SUITE_CLASSIC)))
        return MSV_ERR_UNSUPPORTED;
    /* the other suites sign inside the encryption; anything else is a classic forgery */
    if (suite != MSV_SUITE_ANY && suite != MSV_SUITE_CLASSIC &&
        (sender->suites & MSV_SUITE_BIT(suite)))
        return MSV_ERR_UNSUPPORTED;
    return msv_classic_verify(sender, wire, wire_len);
}

/*
 * The replay cache: a ring of digests in arrival order, indexed by a hash
 * table with chaining. Bucket choice uses SipHash under a random per-cache
 * key, so even a legitimate sender grinding ephemeral keys cannot build long
 * chains.
 */
#define NIL UINT32_MAX

struct msv_replay_cache {
    size_t capacity, count, next; /* next: ring slot written next */
    size_t mask;                  /* buckets - 1 */
    uint8_t (*ids)[32];
    uint32_t *chain;   /* per slot: next slot in the same bucket */
    uint32_t *buckets; /* per bucket: first slot */
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
};

msv_err msv_replay_cache_new(size_t capacity, struct msv_replay_cache **out)
{
    struct msv_replay_cache *c;
    size_t buckets = 16;

    if (capacity == 0 || capacity > (1u << 26))
        return MSV_ERR_INVALID;
    while (buckets < capacity * 2)
        buckets *= 2;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return MSV_ERR_NOMEM;
    c->capacity = capacity;
    c->mask = buckets - 1;
    c->ids = calloc(capacity, sizeof(*c->ids));
    c->chain = calloc(capacity, sizeof(*c->chain));
    c->buckets = malloc(buckets * sizeof(*c->buckets));
    if (c->ids == NULL || c->chain == NULL || c->buckets == NULL) {
        msv_replay_cache_free(c);
        return MSV_ERR_NOMEM;
    }
    memset(c->buckets, 0xff, buckets * sizeof(*c->buckets));
    randombytes_buf(c->hash_key, sizeof(c->hash_key));
    *out = c;
    return MSV_OK;
}

void msv_replay_cache_free(struct msv_replay_cache *c)
{
    if (c == NULL)
        return;
    free(c->ids);
    free(c->chain);
    free(c->buckets);
    free(c);
}

static size_t bucket_of(const struct msv_replay_cache *c, const uint8_t id[32])
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v = 0;

    crypto_shorthash(h, id, 32, c->hash_key);
    for (size_t i = 0; i < sizeof(h); i++)
        v = v << 8 | h[i];
    return (size_t)(v & c->mask);
}

/* Unlinks ring slot s from its bucket's chain. */
static void unlink_slot(struct msv_replay_cache *c, uint32_t s)
{
    uint32_t *p = &c->buckets[bucket_of(c, c->ids[s])];

    while (*p != NIL && *p != s)
        p = &c->chain[*p];
    if (*p == s)
        *p = c->chain[s];
}

msv_err msv_replay_cache_add(struct msv_replay_cache *c, const uint8_t id[32])
{
    size_t b = bucket_of(c, id);
    uint32_t s;

    for (s = c->buckets[b]; s != NIL; s = c->chain[s]) {
        if (memcmp(c->ids[s], id, 32) == 0)
            return MSV_ERR_REPLAY;
    }
    s = (uint32_t)c->next;
    if (c->count == c->capacity)
        unlink_slot(c, s);
    else
        c->count++;
    memcpy(c->ids[s], id, 32);
    c->chain[s] = c->buckets[b];
    c->buckets[b] = s;
    c->next = (c->next + 1) % c->capacity;
    return MSV_OK;
}
