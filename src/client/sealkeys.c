/*
 * The keys of hybrid sealed sender (docs/crypto.md, "Hybrid sealed sender"):
 * a sender seals to a post-quantum device's signed last-resort KEM prekey,
 * kept per device and identity once its signature checked and fetched again
 * when older than SEAL_KEY_MAX_AGE_S; a recipient opens with the secret of the
 * last-resort KEM prekey the envelope names (the one in use or the one
 * before: msv_pqkeys_load), and refuses, counts and drops a classical sealed
 * envelope, which names nobody.
 *
 * Settings used: "seal-kem:<device>:<hex identity hash>" (u64be fetched at
 * || u32be id || encapsulation key), "sealed-downgrades-refused" (u64be),
 * "sealed-unopenable" (u64be: sealed to a KEM key this device does not hold),
 * "sealed-downgrades-said", "sealed-unopenable-said" (u64be: how many of each the user was
 * told of).
 */
#include "client/internal.h"
#include "client/requests.h"
#include "client/sessions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "missive/mlkem.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"

#define TIMEOUT_MS 15000
/* Well inside the week after which a device replaces its last-resort KEM prekey and the
 * week more it keeps the one before: a sealed envelope still has days to be delivered. */
#define SEAL_KEY_MAX_AGE_S (3 * 86400)
#define CACHED_LEN (8 + 4 + MSV_MLKEM768_EK_LEN)
#define REFUSED "sealed-downgrades-refused"
#define UNOPENABLE "sealed-unopenable"
#define SAID_REFUSED "sealed-downgrades-said"    /* of REFUSED, how many the user was told of */
#define SAID_UNOPENABLE "sealed-unopenable-said" /* of UNOPENABLE, the same */
#define SAID_UNCHECKED "senders-unchecked-said"  /* of CLIENT_SENDERS_UNCHECKED, the same */
#define UNOPENED_SAID_EVERY_MS 60000

static void cache_name(uint64_t device_id, const struct msv_public_identity *pub, char key[120])
{
    uint8_t h[MSV_IDENTITY_HASH_LEN];
    char hex[2 * MSV_IDENTITY_HASH_LEN + 1];

    msv_public_identity_hash(pub, h);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    snprintf(key, 120, "seal-kem:%llu:%s", (unsigned long long)device_id, hex);
}

/*
 * The cached key, if fresh (MSV_ERR_NOT_FOUND else); *newest gets the id of the last key
 * remembered for the device, fresh or not (0: none), below which no key is taken again.
 */
static msv_err cached(struct msv_client *c, const char *name, struct msv_sealing_key *key,
                      uint32_t *newest)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, name, &v, &len);
    uint64_t at = 0, now = (uint64_t)time(NULL);

    *newest = 0;
    if (err == MSV_OK && len != CACHED_LEN)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK) {
        at = msv_get_u64be(v);
        *newest = msv_get_u32be(v + 8);
    }
    if (err == MSV_OK && (at > now || now - at >= SEAL_KEY_MAX_AGE_S))
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK) {
        key->id = *newest;
        memcpy(key->ek, v + 12, MSV_MLKEM768_EK_LEN);
    }
    free(v);
    return err;
}

/* A refusal that withholds nothing: the server is busy (its storage failed, it is shutting
 * down) or says "slow down"; the claim is tried again with the send, from the outbox. */
static int claim_is_busy(const struct msv_refusal *why)
{
    return why->code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED ||
           why->code == MSV__WIRE__ERROR_CODE__ERROR_IO ||
           why->code == MSV__WIRE__ERROR_CODE__ERROR_SHUTTING_DOWN;
}

static int has_bundle(const Msv__Wire__PrekeyBundles *b, uint64_t device_id)
{
    for (size_t i = 0; i < b->n_bundles; i++)
        if (b->bundles[i]->device_id == device_id)
            return 1;
    return 0;
}

/* The first time in a send that a post-quantum device has no bundle at all: recheck the set. */
static msv_err recheck_if_gone(struct msv_client *c, const uint64_t *ids, const int *pq, size_t n,
                               msv_frame *const *resp)
{
    for (size_t i = 0; i < n && !c->sealing_rechecked; i++) {
        if (!pq[i] || has_bundle((*resp)->prekey_bundles, ids[i]))
            continue;
        c->sealing_rechecked = 1;
        return MSV_ERR_AGAIN;
    }
    return MSV_OK;
}

msv_err client_claim(struct msv_client *c, const uint64_t *ids, const int *pq, size_t n,
                     int sealing, const char *what, msv_frame **resp)
{
    char said[sizeof(c->why.message)];
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_request_prekey_claim(c->conn, ids, n, sealing, TIMEOUT_MS, resp, &c->why);
    if (err == MSV_OK)
        return recheck_if_gone(c, ids, pq, n, resp);
    if (*resp != NULL) { /* an error answer kept (a stale list: no claim's answer) */
        msv_frame_free(*resp);
        *resp = NULL;
        err = MSV_ERR_INVALID;
    }
    if (err == MSV_ERR_NOMEM)
        return err;
    if (err != MSV_ERR_IO && !claim_is_busy(&c->why))
        return err; /* a refusal: whether it withholds a key is the caller's to say */
    snprintf(said, sizeof(said), "%s", c->why.message[0] != '\0' ? c->why.message : "no answer");
    snprintf(c->why.message, sizeof(c->why.message),
             "the server did not give %.90s now (%s: %.50s); the message waits in the outbox "
             "and is tried again",
             what, err == MSV_ERR_IO && c->why.code == 0 ? "unreachable" : "busy", said);
    return MSV_ERR_IO;
}

/*
 * The device's last-resort KEM prekey from the server, checked as its own: MSV_ERR_NOT_FOUND
 * when the answer holds no bundle for it, MSV_ERR_AUTH when its bundle holds no key that
 * checks, MSV_ERR_IO when there is no answer or the server is busy (c->why says so).
 */
static msv_err fetch(struct msv_client *c, const char *handle, uint64_t device_id,
                     const struct msv_public_identity *pub, struct msv_sealing_key *key)
{
    char what[200];
    msv_frame *resp = NULL;
    msv_err err;

    snprintf(what, sizeof(what), "the post-quantum sealing key of %.64s (device %llu)", handle,
             (unsigned long long)device_id);
    err = client_claim(c, &device_id, &(const int){1}, 1, 1, what, &resp);
    if (err == MSV_ERR_AGAIN)
        msv_frame_free(resp);
    if (err == MSV_ERR_NOMEM || err == MSV_ERR_IO || err == MSV_ERR_AGAIN)
        return err; /* not a key withheld (yet) */
    if (err != MSV_OK)
        return MSV_ERR_AUTH; /* any other refusal withholds the key */
    err = MSV_ERR_NOT_FOUND;
    for (size_t i = 0; i < resp->prekey_bundles->n_bundles; i++) {
        const Msv__Wire__KemPrekey *k = resp->prekey_bundles->bundles[i]->kem;

        if (resp->prekey_bundles->bundles[i]->device_id == device_id && err != MSV_OK)
            err = MSV_ERR_AUTH;
        if (resp->prekey_bundles->bundles[i]->device_id != device_id || k == NULL ||
            !k->last_resort || k->signature.len != 64 ||
            msv_kem_prekey_verify(pub, k->id, 1, k->key.data, k->key.len, k->signature.data) !=
                MSV_OK)
            continue;
        key->id = k->id;
        memcpy(key->ek, k->key.data, MSV_MLKEM768_EK_LEN);
        err = MSV_OK;
    }
    msv_frame_free(resp);
    return err;
}

static msv_err remember(struct msv_client *c, const char *name, const struct msv_sealing_key *key)
{
    uint8_t v[CACHED_LEN];

    msv_put_u64be(v, (uint64_t)time(NULL));
    msv_put_u32be(v + 8, key->id);
    memcpy(v + 12, key->ek, MSV_MLKEM768_EK_LEN);
    return msv_client_db_set(c->db, name, v, sizeof(v));
}

msv_err client_last_resort_seen(struct msv_client *c, uint64_t device_id,
                                const struct msv_public_identity *pub, uint32_t id,
                                const uint8_t *ek, const uint8_t sig[64])
{
    struct msv_sealing_key *key = malloc(sizeof(*key));
    char name[120];
    uint32_t newest = 0;
    msv_err err = key == NULL ? MSV_ERR_NOMEM : MSV_OK;

    if (err == MSV_OK)
        err = msv_kem_prekey_verify(pub, id, 1, ek, MSV_MLKEM768_EK_LEN, sig);
    if (err == MSV_OK) {
        cache_name(device_id, pub, name);
        (void)cached(c, name, key, &newest); /* fresh or not, newest is what was seen */
        key->id = id;
        memcpy(key->ek, ek, MSV_MLKEM768_EK_LEN);
    }
    if (err == MSV_OK && id < newest)
        err = MSV_ERR_AUTH;
    else if (err == MSV_OK && id > newest)
        err = remember(c, name, key);
    free(key);
    return err;
}

msv_err client_pq_refused(struct msv_client *c, const char *handle, uint64_t device_id,
                          const char *what, const char *speaks)
{
    char warning[sizeof(c->why.message)];

    snprintf(warning, sizeof(warning),
             "the server gave %s for %.64s (device %llu), whose identity says it speaks "
             "post-quantum %sonly; nothing was sent to it",
             what, handle, (unsigned long long)device_id, speaks);
    c->why.code = MSV_REFUSAL_PQ;
    snprintf(c->why.message, sizeof(c->why.message), "%s", warning);
    if (c->on_pq_refused != NULL)
        c->on_pq_refused(c->ctx, handle, device_id, warning);
    return MSV_ERR_AUTH;
}

msv_err client_sealing_key(struct msv_client *c, const char *handle, uint64_t device_id,
                           const struct msv_public_identity *pub, struct msv_sealing_key *key)
{
    char name[120];
    uint32_t newest = 0;
    msv_err err;

    cache_name(device_id, pub, name);
    if (cached(c, name, key, &newest) == MSV_OK)
        return MSV_OK;
    err = fetch(c, handle, device_id, pub, key);
    /* ids only grow: an older key than one already taken is one the device may have let go */
    if (err == MSV_OK && key->id < newest)
        return client_pq_refused(c, handle, device_id,
                                 "an older post-quantum sealing key than it gave before", "");
    if (err == MSV_OK)
        return remember(c, name, key);
    /* no bundle at all once the set was rechecked (client_claim): a device the log still lists */
    if (err != MSV_ERR_AUTH && err != MSV_ERR_NOT_FOUND)
        return err;
    return client_pq_refused(c, handle, device_id, "no post-quantum sealing key that checks", "");
}

uint32_t client_setting_u32(struct msv_client_db *db, const char *name)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint32_t id = 0;

    if (msv_client_db_get(db, name, &v, &len) == MSV_OK && len == 4)
        id = msv_get_u32be(v);
    free(v);
    return id;
}

uint64_t client_counter(struct msv_client *c, const char *name)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t n = 0;

    if (msv_client_db_get(c->db, name, &v, &len) == MSV_OK && len == 8)
        n = msv_get_u64be(v);
    free(v);
    return n;
}

uint64_t msv_client_sealed_downgrades(struct msv_client *c)
{
    return client_counter(c, REFUSED);
}

uint64_t msv_client_sealed_unopenable(struct msv_client *c)
{
    return client_counter(c, UNOPENABLE);
}

uint64_t msv_client_senders_unchecked(struct msv_client *c)
{
    return client_counter(c, CLIENT_SENDERS_UNCHECKED);
}

static msv_err set_counter(struct msv_client *c, const char *name, uint64_t n)
{
    uint8_t v[8];

    msv_put_u64be(v, n);
    return msv_client_db_set(c->db, name, v, sizeof(v));
}

/*
 * Tells the user of the sealed envelopes this device could not open since it last did
 * (counters REFUSED and UNOPENABLE against what SAID records), at most once a minute per
 * process: they name nobody (nothing in them authenticates), so all that can be said is that
 * something did not arrive. What a minute holds back is told by the next call after it, or by
 * the end of a receive (msv_client_tell_unopened).
 */
void msv_client_tell_unopened(struct msv_client *c)
{
    uint64_t refused = client_counter(c, REFUSED), unopenable = client_counter(c, UNOPENABLE);
    uint64_t said_refused = client_counter(c, SAID_REFUSED),
             said_unopenable = client_counter(c, SAID_UNOPENABLE);
    uint64_t unchecked = client_counter(c, CLIENT_SENDERS_UNCHECKED),
             said_unchecked = client_counter(c, SAID_UNCHECKED);
    int64_t now = msv_mono_ms();
    char warning[600];

    if (c->on_unopened == NULL ||
        (refused <= said_refused && unopenable <= said_unopenable && unchecked <= said_unchecked) ||
        (c->unopened_said_ms != 0 && now - c->unopened_said_ms < UNOPENED_SAID_EVERY_MS))
        return;
    if (set_counter(c, SAID_REFUSED, refused) != MSV_OK ||
        set_counter(c, SAID_UNOPENABLE, unopenable) != MSV_OK ||
        set_counter(c, SAID_UNCHECKED, unchecked) != MSV_OK)
        return; /* told next time */
    c->unopened_said_ms = now;
    if (unchecked > said_unchecked) {
        snprintf(warning, sizeof(warning),
                 "%llu message(s) came that this device could not check, naming nobody: the "
                 "device each names as its sender is not one the directory lists for the "
                 "account it names (a device removed since it sent, or one a server made up). "
                 "Their senders cannot be known; if a message is missing, ask for it again",
                 (unsigned long long)(unchecked - said_unchecked));
        c->on_unopened(c->ctx, warning);
    }
    if (refused <= said_refused && unopenable <= said_unopenable)
        return;
    snprintf(warning, sizeof(warning),
             "%llu sealed envelope(s) came that this device cannot open, naming nobody: %llu made "
             "classically to this device, which speaks post-quantum only (a server that strips "
             "the post-quantum part does this), %llu sealed to a post-quantum key this device "
             "does not hold (an old or never published one). Their senders cannot be known; if a "
             "message is missing, ask for it again",
             (unsigned long long)(refused - said_refused + unopenable - said_unopenable),
             (unsigned long long)(refused - said_refused),
             (unsigned long long)(unopenable - said_unopenable));
    c->on_unopened(c->ctx, warning);
}

void client_device_counter_name(const char *prefix, uint64_t device_id, char name[64])
{
    snprintf(name, 64, "%.40s:%llu", prefix, (unsigned long long)device_id);
}

msv_err client_counter_bump(struct msv_client *c, const char *name)
{
    return set_counter(c, name, client_counter(c, name) + 1);
}

/* Counts a sealed envelope this device cannot open (counter REFUSED or UNOPENABLE), and tells
 * the user; MSV_ERR_AUTH once counted. */
static msv_err unopened(struct msv_client *c, const char *counter)
{
    msv_err err = client_counter_bump(c, counter);

    if (err != MSV_OK)
        return err;
    msv_client_tell_unopened(c);
    return MSV_ERR_AUTH;
}

/* What opening the first layer of a hybrid envelope leaves for the second. */
struct client_sealed_keys {
    struct msv_kem_prekey kem;
    uint8_t ss[32];
};

msv_err client_sealed_sender(struct msv_client *c, const uint8_t *wire, size_t len,
                             char handle[256], uint64_t *device, struct client_sealed_keys **keys)
{
    uint32_t id = 0;
    msv_err err;

    if (!msv_public_identity_is_pq(msv_identity_public(c->id)))
        return msv_sealed_sender(c->id, wire, len, handle, device);
    if (len > 0 && wire[0] == MSV_WIRE_SEALED) /* made classically to this device */
        return unopened(c, REFUSED);
    err = msv_sealed_kem_id(wire, len, &id);
    *keys = err == MSV_OK ? sodium_malloc(sizeof(**keys)) : NULL;
    if (err == MSV_OK && *keys == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK &&
        (msv_pqkeys_load_usable(c, id, &(*keys)->kem) != MSV_OK || !(*keys)->kem.last_resort))
        err = unopened(c, UNOPENABLE); /* sealed to no last-resort key this device holds */
    if (err == MSV_OK)
        err = msv_sealed_sender_pq(c->id, (*keys)->kem.dk, wire, len, handle, device, (*keys)->ss);
    if (err != MSV_OK && *keys != NULL) {
        sodium_free(*keys);
        *keys = NULL;
    }
    return err;
}

msv_err client_sealed_unwrap(struct msv_client *c, const struct client_sealed_keys *keys,
                             const struct msv_public_identity *sender, const uint8_t *wire,
                             size_t len, uint8_t **envelope, size_t *envelope_len)
{
    if (keys == NULL)
        return msv_sealed_unwrap(c->id, sender, wire, len, envelope, envelope_len);
    return msv_sealed_unwrap_pq(c->id, keys->kem.dk, keys->ss, sender, wire, len, envelope,
                                envelope_len);
}
