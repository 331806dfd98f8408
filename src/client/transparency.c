/*
 * Checking directory answers against the transparency log (transparency.h).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/requests.h"
#include "client/transparency.h"
#include "missive/ptree.h"
#include "missive/util.h"
#include "util/endian.h"

void msv_kt_head_decode(const uint8_t in[MSV_LOG_HEAD_LEN], struct msv_kt_head *h)
{
    h->size = msv_get_u64be(in);
    h->time_ms = (int64_t)msv_get_u64be(in + 8);
    memcpy(h->root, in + 16, MSV_KT_HASH_LEN);
    memcpy(h->signature, in + 16 + MSV_KT_HASH_LEN, MSV_KT_SIG_LEN);
}

void msv_kt_head_encode(const struct msv_kt_head *h, uint8_t out[MSV_LOG_HEAD_LEN])
{
    msv_put_u64be(out, h->size);
    msv_put_u64be(out + 8, (uint64_t)h->time_ms);
    memcpy(out + 16, h->root, MSV_KT_HASH_LEN);
    memcpy(out + 16 + MSV_KT_HASH_LEN, h->signature, MSV_KT_SIG_LEN);
}

msv_err msv_kt_known_head(struct msv_client_db *db, struct msv_kt_head *h)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(db, "kt_head", &v, &len);

    if (err == MSV_OK && len != MSV_LOG_HEAD_LEN)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        msv_kt_head_decode(v, h);
    free(v);
    return err;
}

static msv_err remember_head(struct msv_client_db *db, const struct msv_kt_head *h)
{
    uint8_t v[MSV_LOG_HEAD_LEN];

    msv_kt_head_encode(h, v);
    return msv_client_db_set(db, "kt_head", v, sizeof(v));
}

uint64_t msv_kt_known_size(struct msv_client_db *db)
{
    struct msv_kt_head h;

    return msv_kt_known_head(db, &h) == MSV_OK ? h.size : 0;
}

static msv_err refuse(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static msv_err refuse(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return MSV_ERR_AUTH;
}

/* Copies n 32-byte proof hashes; 0 if one is malformed or there are too many. */
static int proof_hashes(ProtobufCBinaryData *in, size_t n, uint8_t out[][MSV_KT_HASH_LEN])
{
    if (n > MSV_KT_PROOF_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i].len != MSV_KT_HASH_LEN)
            return 0;
        memcpy(out[i], in[i].data, MSV_KT_HASH_LEN);
    }
    return 1;
}

/* What every answer from the log carries: its head, the log key, the consistency proof. */
struct log_answer {
    const Msv__Wire__TreeHead *head;
    ProtobufCBinaryData log_key;
    ProtobufCBinaryData *consistency;
    size_t n_consistency;
    Msv__Wire__LogProof **rotations;
    size_t n_rotations;
};

#define ROTATIONS_MAX 16

msv_err msv_kt_follow_rotations(const uint8_t pinned[MSV_KT_KEY_LEN],
                                Msv__Wire__LogProof *const *rotations, size_t n_rotations,
                                const struct msv_kt_head *head,
                                const uint8_t head_key[MSV_KT_KEY_LEN])
{
    static _Thread_local uint8_t paths[ROTATIONS_MAX][MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    struct msv_kt_rotation_proof chain[ROTATIONS_MAX];
    uint8_t key[MSV_KT_KEY_LEN];
    size_t first = n_rotations, n = 0;

    /* the chain starts at the entry that moves away from the pinned key */
    for (size_t i = 0; i < n_rotations && first == n_rotations; i++) {
        struct msv_kt_rotation rot;
        const Msv__Wire__LogProof *p = rotations[i];

        if (msv_kt_rotation_leaf_parse(p->leaf.data, p->leaf.len, &rot) == MSV_OK &&
            sodium_memcmp(rot.old_key, pinned, MSV_KT_KEY_LEN) == 0)
            first = i;
    }
    if (first == n_rotations || n_rotations - first > ROTATIONS_MAX)
        return MSV_ERR_AUTH;
    for (size_t i = first; i < n_rotations; i++, n++) {
        const Msv__Wire__LogProof *p = rotations[i];

        if (!proof_hashes(p->path, p->n_path, paths[n]))
            return MSV_ERR_AUTH;
        chain[n] =
            (struct msv_kt_rotation_proof){p->leaf.data, p->leaf.len, p->index,
                                           (const uint8_t(*)[MSV_KT_HASH_LEN])paths[n], p->n_path};
    }
    if (msv_kt_rotation_follow(pinned, chain, n, head, key) != MSV_OK ||
        sodium_memcmp(key, head_key, MSV_KT_KEY_LEN) != 0)
        return MSV_ERR_AUTH;
    return MSV_OK;
}

/* The head of r, signed with key (the pinned one, or pinned now if there is none). */
static msv_err check_head(struct msv_client_db *db, const struct log_answer *r,
                          struct msv_kt_head *head, int *pin, char *why, size_t len)
{
    const Msv__Wire__TreeHead *w = r->head;
    uint8_t *key = NULL;
    size_t key_len = 0;
    msv_err err;

    if (w == NULL || r->log_key.len != MSV_KT_KEY_LEN || w->root.len != MSV_KT_HASH_LEN ||
        w->signature.len != MSV_KT_SIG_LEN || w->time_ms > INT64_MAX)
        return refuse(why, len, "the directory's answer has no transparency log head");
    head->size = w->size;
    head->time_ms = (int64_t)w->time_ms;
    memcpy(head->root, w->root.data, MSV_KT_HASH_LEN);
    memcpy(head->signature, w->signature.data, MSV_KT_SIG_LEN);
    err = msv_client_db_get(db, "kt_log_key", &key, &key_len);
    if (err == MSV_ERR_NOT_FOUND) {
        *pin = 1; /* trust on first use, as the server's certificate */
        err = MSV_OK;
    } else if (err == MSV_OK && (key_len != MSV_KT_KEY_LEN ||
                                 sodium_memcmp(key, r->log_key.data, MSV_KT_KEY_LEN) != 0)) {
        if (key_len == MSV_KT_KEY_LEN && msv_kt_follow_rotations(key, r->rotations, r->n_rotations,
                                                                 head, r->log_key.data) == MSV_OK)
            *pin = 1; /* the log announced the new key, signed by the pinned one */
        else
            err = refuse(why, len,
                         "the directory's transparency log key is not the one this device "
                         "pinned; its answers cannot be trusted");
    }
    free(key);
    if (err == MSV_OK && msv_kt_head_verify(head, r->log_key.data) != MSV_OK)
        err = refuse(why, len, "the transparency log head is not signed by the log key");
    /* the server signs a head at least every minute it is asked: an old one is a frozen view */
    if (err == MSV_OK && head->time_ms < msv_wall_ms() - MSV_KT_HEAD_MAX_AGE_MS)
        err = refuse(why, len,
                     "the directory's transparency log head is %lld hours old: it may be "
                     "showing this device a frozen view of the log",
                     (long long)((msv_wall_ms() - head->time_ms) / 3600000));
    if (err == MSV_OK && head->time_ms > msv_wall_ms() + MSV_KT_HEAD_MAX_SKEW_MS)
        err = refuse(why, len,
                     "the directory's transparency log head is dated %lld minutes in the "
                     "future: it would look fresh after it is not (or this device's clock is "
                     "wrong)",
                     (long long)((head->time_ms - msv_wall_ms()) / 60000));
    return err;
}

/* head extends the one accepted before. */
static msv_err check_growth(struct msv_client_db *db, const struct log_answer *r,
                            const struct msv_kt_head *head, char *why, size_t len)
{
    static _Thread_local uint8_t proof[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    struct msv_kt_head old;
    msv_err err = msv_kt_known_head(db, &old);

    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    if (head->size < old.size)
        return refuse(why, len,
                      "the directory shows an older transparency log (%llu entries) than it "
                      "showed before (%llu)",
                      (unsigned long long)head->size, (unsigned long long)old.size);
    if (!proof_hashes(r->consistency, r->n_consistency, proof) ||
        msv_merkle_verify_consistency(old.size, head->size, old.root, head->root, proof,
                                      r->n_consistency) != MSV_OK)
        return refuse(why, len,
                      "the directory's transparency log was rewritten: its head of %llu "
                      "entries does not extend the one of %llu entries seen before",
                      (unsigned long long)head->size, (unsigned long long)old.size);
    return MSV_OK;
}

/* ---- what earlier answers pinned: each handle's newest entry, each device id's handle ---- */

#define PIN_LEN 16 /* u64be log index, u64be time of the lookup in ms */

static void handle_pin_key(char key[300], const uint8_t *handle, size_t handle_len)
{
    snprintf(key, 300, "kt_index:%.*s", (int)(handle_len < 256 ? handle_len : 256),
             (const char *)handle);
}

/* The SHA-256 of the key the log gave a device id (docs/transparency.md, check 6). */
static void device_pin_key(char key[48], uint64_t device_id)
{
    snprintf(key, 48, "kt_device_key:%llu", (unsigned long long)device_id);
}

/* The log index of the newest entry of handle accepted, and when: MSV_ERR_NOT_FOUND if none. */
static msv_err handle_pin(struct msv_client_db *db, const uint8_t *handle, size_t handle_len,
                          uint64_t *index, int64_t *when_ms)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    handle_pin_key(key, handle, handle_len);
    err = msv_client_db_get(db, key, &v, &len);
    if (err == MSV_OK && len != PIN_LEN)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        *index = msv_get_u64be(v);
        *when_ms = (int64_t)msv_get_u64be(v + 8);
    }
    free(v);
    return err;
}

msv_err msv_kt_lookup_make_due(struct msv_client_db *db, const char *handle)
{
    char key[300];
    uint8_t v[PIN_LEN];
    uint64_t index = 0;
    int64_t when = 0;
    msv_err err = handle_pin(db, (const uint8_t *)handle, strlen(handle), &index, &when);

    if (err != MSV_OK)
        return err == MSV_ERR_NOT_FOUND ? MSV_OK : err; /* none: looked up anyway */
    handle_pin_key(key, (const uint8_t *)handle, strlen(handle));
    msv_put_u64be(v, index);
    msv_put_u64be(v + 8, 0);
    return msv_client_db_set(db, key, v, sizeof(v));
}

int msv_kt_lookup_is_due(struct msv_client_db *db, const char *handle, int64_t now_ms)
{
    uint64_t index = 0;
    int64_t when = 0;

    if (handle_pin(db, (const uint8_t *)handle, strlen(handle), &index, &when) != MSV_OK)
        return 1;
    return now_ms - when >= MSV_KT_RELOOKUP_MS || when > now_ms;
}

/*
 * A device id listed under handle has the key the log gave it (here, under any handle, or
 * before): a device id has one key forever, whichever handles of its account list it.
 */
static msv_err check_device_owner(struct msv_client_db *db, const Msv__Wire__LookupResponse *r,
                                  size_t at, const Msv__Wire__DeviceInfo *dev, size_t *bad,
                                  char *why, size_t len)
{
    const ProtobufCBinaryData *handle = &r->results[at]->handle;
    int handle_len = handle->len < 256 ? (int)handle->len : 256;
    unsigned long long id = (unsigned long long)dev->device_id;
    int differs = 0;
    msv_err err;

    for (size_t i = 0; i < at; i++) {
        const Msv__Wire__HandleDevices *other = r->results[i];

        for (size_t d = 0; d < other->n_devices; d++) {
            const Msv__Wire__DeviceInfo *o = other->devices[d];

            if (o->device_id == dev->device_id &&
                (o->identity.len != dev->identity.len ||
                 memcmp(o->identity.data, dev->identity.data, dev->identity.len) != 0))
                return refuse(why, len,
                              "the directory lists device %llu with two keys, under %.*s and %.*s",
                              id, (int)other->handle.len, (const char *)other->handle.data,
                              handle_len, (const char *)handle->data);
        }
    }
    err = msv_kt_device_key_differs(db, dev->device_id, dev->identity.data, dev->identity.len,
                                    &differs);
    if (err == MSV_OK && differs) {
        *bad = at;
        err = refuse(why, len,
                     "the directory lists device %llu under %.*s with another key than its log "
                     "gave that device before: a device keeps its key, so this answer is forged",
                     id, handle_len, (const char *)handle->data);
    }
    return err;
}

msv_err msv_kt_device_key_differs(struct msv_client_db *db, uint64_t device_id,
                                  const uint8_t *identity, size_t identity_len, int *differs)
{
    char key[48];
    uint8_t *owner = NULL, hash[32];
    size_t owner_len = 0;
    msv_err err;

    *differs = 0;
    crypto_hash_sha256(hash, identity, identity_len);
    device_pin_key(key, device_id);
    err = msv_client_db_get(db, key, &owner, &owner_len);
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err == MSV_OK)
        *differs = owner_len != sizeof(hash) || sodium_memcmp(owner, hash, owner_len) != 0;
    free(owner);
    return err;
}

/* The answer's entry of handle at is not older than the newest one accepted before. */
static msv_err check_newest(struct msv_client_db *db, const Msv__Wire__HandleDevices *hd, char *why,
                            size_t len)
{
    uint64_t pinned = 0;
    int64_t when = 0;
    msv_err err = handle_pin(db, hd->handle.data, hd->handle.len, &pinned, &when);

    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    if (hd->proof == NULL || hd->proof->index < pinned)
        return refuse(
            why, len,
            "the directory shows an older device set of %.*s (log entry %llu) than "
            "it showed before (entry %llu): a removed device could come back",
            (int)(hd->handle.len < 256 ? hd->handle.len : 256), (const char *)hd->handle.data,
            (unsigned long long)(hd->proof ? hd->proof->index : 0), (unsigned long long)pinned);
    return MSV_OK;
}

/* ---- accounts deleted and registered again (docs/transparency.md, "A new account") ---- */

/* "kt_gone:HANDLE": the newest tombstone of handle this device knows of (u64be index);
 * "kt_renewed:HANDLE": the handle is a new account, and the user is not told yet. */
static void account_key(char key[300], const char *what, const uint8_t *handle, size_t handle_len)
{
    snprintf(key, 300, "%s:%.*s", what, (int)(handle_len < 256 ? handle_len : 256),
             (const char *)handle);
}

static msv_err gone_pin(struct msv_client_db *db, const uint8_t *handle, size_t handle_len,
                        uint64_t *index)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    account_key(key, "kt_gone", handle, handle_len);
    err = msv_client_db_get(db, key, &v, &len);
    if (err == MSV_OK && len != 8)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        *index = msv_get_u64be(v);
    free(v);
    return err;
}

/* Remembers a tombstone of handle at index, unless a newer one is known. */
static msv_err gone_remember(struct msv_client_db *db, const uint8_t *handle, size_t handle_len,
                             uint64_t index)
{
    char key[300];
    uint8_t v[8];
    uint64_t known = 0;
    msv_err err = gone_pin(db, handle, handle_len, &known);

    if (err == MSV_OK && known >= index)
        return MSV_OK;
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    account_key(key, "kt_gone", handle, handle_len);
    msv_put_u64be(v, index);
    return msv_client_db_set(db, key, v, sizeof(v));
}

static msv_err renewed_mark(struct msv_client_db *db, const uint8_t *handle, size_t handle_len,
                            uint64_t index)
{
    char key[300];
    uint8_t v[8];

    account_key(key, "kt_renewed", handle, handle_len);
    msv_put_u64be(v, index);
    return msv_client_db_set(db, key, v, sizeof(v));
}

int msv_kt_renewed_index(struct msv_client_db *db, const char *handle, uint64_t *index)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    int renewed;

    account_key(key, "kt_renewed", (const uint8_t *)handle, strlen(handle));
    renewed = msv_client_db_get(db, key, &v, &len) == MSV_OK;
    *index = renewed && len == 8 ? msv_get_u64be(v) : 0;
    free(v);
    return renewed;
}

msv_err msv_kt_renewed_told(struct msv_client_db *db, const char *handle)
{
    char key[300];

    account_key(key, "kt_renewed", (const uint8_t *)handle, strlen(handle));
    return msv_client_db_unset(db, key);
}

ProtobufCBinaryData msv_kt_proof_entry(const Msv__Wire__LogProof *p)
{
    struct msv_kt_v4_leaf l;

    return msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &l) == MSV_OK ? p->data : p->leaf;
}

/*
 * The entry a proven leaf stands for (e): the leaf's own, or, for a version-4 leaf (it names
 * no handle), the data beside it, once it is shown to be the version the leaf commits to
 * (docs/transparency.md, "Leaves that name no handle"). MSV_ERR_AUTH otherwise.
 */
static msv_err open_entry(const Msv__Wire__LogProof *p, const ProtobufCBinaryData *vrf_key,
                          struct msv_kt_entry *e)
{
    struct msv_kt_v4_leaf l;

    if (msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &l) != MSV_OK)
        return msv_kt_leaf_parse(p->leaf.data, p->leaf.len, e) == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
    if (vrf_key->len != MSV_VRF_PUBLIC_KEY_LEN || p->opening.len != MSV_PT_OPENING_LEN ||
        p->vrf_proof.len != MSV_VRF_PROOF_LEN)
        return MSV_ERR_AUTH;
    return msv_kt_v4_open(vrf_key->data, p->leaf.data, p->leaf.len, p->data.data, p->data.len,
                          p->version, p->opening.data, p->vrf_proof.data, e);
}

static int leaf_is_tombstone(const Msv__Wire__LogProof *p)
{
    static _Thread_local struct msv_kt_entry e;
    ProtobufCBinaryData b;

    if (p == NULL)
        return 0;
    b = msv_kt_proof_entry(p);
    return msv_kt_leaf_parse(b.data, b.len, &e) == MSV_OK && e.deleted;
}

/* The tombstone an answer carries besides hd's newest leaf: proven, the handle's, and older. */
static msv_err check_tombstone(const Msv__Wire__HandleDevices *hd, const struct msv_kt_head *head,
                               const ProtobufCBinaryData *vrf_key, char *why, size_t len)
{
    static _Thread_local uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    static _Thread_local struct msv_kt_entry e;
    const Msv__Wire__LogProof *t = hd->tombstone;
    uint8_t h[MSV_KT_HASH_LEN];

    if (t == NULL)
        return MSV_OK;
    msv_kt_leaf_hash(t->leaf.data, t->leaf.len, h);
    if (hd->proof == NULL || t->index >= hd->proof->index ||
        !proof_hashes(t->path, t->n_path, path) ||
        msv_merkle_verify_inclusion(h, t->index, head->size, path, t->n_path, head->root) !=
            MSV_OK ||
        open_entry(t, vrf_key, &e) != MSV_OK || !e.deleted || strlen(e.handle) != hd->handle.len ||
        memcmp(e.handle, hd->handle.data, hd->handle.len) != 0)
        return refuse(why, len, "the directory's tombstone of %.*s is not in its transparency log",
                      (int)(hd->handle.len < 256 ? hd->handle.len : 256),
                      (const char *)hd->handle.data);
    return MSV_OK;
}

/*
 * An answer for a handle whose tombstone this device knows (from an earlier answer) must not
 * show the account from before it, nor a later one without it: a
 * directory that hid the deletion would pass a new account off as the one the user knew.
 */
static msv_err check_deletion(struct msv_client_db *db, const Msv__Wire__HandleDevices *hd,
                              char *why, size_t len)
{
    int handle_len = hd->handle.len < 256 ? (int)hd->handle.len : 256;
    uint64_t gone = 0;
    msv_err err = gone_pin(db, hd->handle.data, hd->handle.len, &gone);

    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    if (hd->proof == NULL || hd->proof->index < gone)
        return refuse(why, len,
                      "the directory shows the account %.*s as it was before it was deleted "
                      "(its tombstone is log entry %llu)",
                      handle_len, (const char *)hd->handle.data, (unsigned long long)gone);
    if (hd->proof->index > gone && !leaf_is_tombstone(hd->proof) &&
        (hd->tombstone == NULL || hd->tombstone->index < gone))
        return refuse(why, len,
                      "the directory hides that the account %.*s was deleted (log entry %llu): "
                      "it would pass a new account off as the one you knew",
                      handle_len, (const char *)hd->handle.data, (unsigned long long)gone);
    return MSV_OK;
}

/* What an accepted answer says of hd's account: its tombstone, and whether it is a new account
 * since the entry pinned before (a tombstone at or after it, then a later leaf). */
static msv_err pin_deletion(struct msv_client_db *db, const Msv__Wire__HandleDevices *hd)
{
    uint64_t pinned = 0, gone;
    int64_t when = 0;
    int tombstone = leaf_is_tombstone(hd->proof);
    msv_err err = handle_pin(db, hd->handle.data, hd->handle.len, &pinned, &when);
    int knew = err == MSV_OK;

    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    if (!tombstone && hd->tombstone == NULL)
        return MSV_OK;
    gone = tombstone ? hd->proof->index : hd->tombstone->index;
    err = gone_remember(db, hd->handle.data, hd->handle.len, gone);
    if (err == MSV_OK && knew && !tombstone && gone >= pinned)
        err = renewed_mark(db, hd->handle.data, hd->handle.len, hd->proof->index);
    return err;
}

/* Pins what an accepted answer showed: each handle's entry, each device's handle. */
static msv_err pin_results(struct msv_client_db *db, const Msv__Wire__LookupResponse *r)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < r->n_results; i++) {
        const Msv__Wire__HandleDevices *hd = r->results[i];
        char key[300];
        uint8_t v[PIN_LEN];

        if (hd->proof == NULL)
            continue;
        err = pin_deletion(db, hd);
        if (err != MSV_OK)
            break;
        handle_pin_key(key, hd->handle.data, hd->handle.len);
        msv_put_u64be(v, hd->proof->index);
        msv_put_u64be(v + 8, (uint64_t)msv_wall_ms());
        err = msv_client_db_set(db, key, v, sizeof(v));
        for (size_t d = 0; err == MSV_OK && d < hd->n_devices; d++) {
            uint8_t hash[32];

            crypto_hash_sha256(hash, hd->devices[d]->identity.data, hd->devices[d]->identity.len);
            device_pin_key(key, hd->devices[d]->device_id);
            err = msv_client_db_set(db, key, hash, sizeof(hash));
        }
    }
    return err;
}

/* hd's devices are exactly its leaf's, and the leaf is in head's tree. */
static msv_err check_result(const Msv__Wire__HandleDevices *hd, const struct msv_kt_head *head,
                            const ProtobufCBinaryData *vrf_key, char *why, size_t len)
{
    static _Thread_local uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    static _Thread_local struct msv_kt_entry e;
    const Msv__Wire__LogProof *p = hd->proof;
    int handle_len = hd->handle.len < 256 ? (int)hd->handle.len : 256;
    const char *handle = (const char *)hd->handle.data;
    uint8_t h[MSV_KT_HASH_LEN];

    if (p == NULL) {
        if (hd->n_devices == 0)
            return MSV_OK; /* a handle the log has never seen */
        return refuse(why, len, "the directory named devices of %.*s without a log proof",
                      handle_len, handle);
    }
    msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
    if (!proof_hashes(p->path, p->n_path, path) ||
        msv_merkle_verify_inclusion(h, p->index, head->size, path, p->n_path, head->root) != MSV_OK)
        return refuse(why, len, "the directory's answer for %.*s is not in its transparency log",
                      handle_len, handle);
    /* a version-4 leaf: its data must be the version the leaf commits to (one of another entry,
     * or a device set the leaf does not commit to, is refused) */
    if (open_entry(p, vrf_key, &e) != MSV_OK || strlen(e.handle) != hd->handle.len ||
        memcmp(e.handle, handle, hd->handle.len) != 0 || e.n_devices != hd->n_devices)
        return refuse(why, len, "the directory's devices of %.*s are not the ones its log holds",
                      handle_len, handle);
    for (size_t i = 0; i < e.n_devices; i++) {
        const Msv__Wire__DeviceInfo *d = hd->devices[i];

        if (d->device_id != e.devices[i].device_id || d->suite != e.devices[i].suite ||
            d->identity.len != e.devices[i].identity_len ||
            memcmp(d->identity.data, e.devices[i].identity, d->identity.len) != 0)
            return refuse(why, len,
                          "the directory's devices of %.*s are not the ones its log holds",
                          handle_len, handle);
    }
    return MSV_OK;
}

/* The head of an answer, checked (key, signature, growth); remembered if check_rest holds. */
static msv_err check_answer(struct msv_client_db *db, const struct log_answer *a,
                            struct msv_kt_head *head, int *pin, char *why, size_t why_len)
{
    msv_err err = check_head(db, a, head, pin, why, why_len);

    return err == MSV_OK ? check_growth(db, a, head, why, why_len) : err;
}

static msv_err accept_answer(struct msv_client_db *db, const struct log_answer *a,
                             const struct msv_kt_head *head, int pin)
{
    msv_err err = MSV_OK;

    if (pin)
        err = msv_client_db_set(db, "kt_log_key", a->log_key.data, MSV_KT_KEY_LEN);
    if (err == MSV_OK && head->size >= msv_kt_known_size(db))
        err = remember_head(db, head);
    return err;
}

/* A failure of one result's own checks, not of the answer or the store. */
static int is_result_failure(msv_err err)
{
    return err == MSV_ERR_AUTH || err == MSV_ERR_PARSE || err == MSV_ERR_UNSUPPORTED;
}

/* The checks of result i of r alone (but the device keys compared with the results before it). */
static msv_err check_one(struct msv_client_db *db, const Msv__Wire__LookupResponse *r, size_t i,
                         const struct msv_kt_head *head, size_t *bad, char *why, size_t why_len)
{
    const Msv__Wire__HandleDevices *hd = r->results[i];
    msv_err err = check_result(hd, head, &r->vrf_key, why, why_len);

    if (err == MSV_OK)
        err = check_tombstone(hd, head, &r->vrf_key, why, why_len);
    if (err == MSV_OK)
        err = check_newest(db, hd, why, why_len);
    if (err == MSV_OK)
        err = check_deletion(db, hd, why, why_len);
    if (is_result_failure(err))
        *bad = i;
    for (size_t d = 0; err == MSV_OK && d < hd->n_devices; d++)
        err = check_device_owner(db, r, i, hd->devices[d], bad, why, why_len);
    return err;
}

msv_err msv_kt_check_lookup(struct msv_client_db *db, const Msv__Wire__LookupResponse *r, char *why,
                            size_t why_len)
{
    size_t bad = SIZE_MAX;

    return msv_kt_check_lookup_at(db, r, &bad, why, why_len);
}

msv_err msv_kt_check_lookup_at(struct msv_client_db *db, const Msv__Wire__LookupResponse *r,
                               size_t *bad, char *why, size_t why_len)
{
    const struct log_answer a = {r->head,          r->log_key,   r->consistency,
                                 r->n_consistency, r->rotations, r->n_rotations};
    struct msv_kt_head head;
    int pin = 0, pin_vrf = 0, keydir = 0;
    msv_err err = check_answer(db, &a, &head, &pin, why, why_len);

    *bad = SIZE_MAX;
    /* the VRF key first: the leaves are opened with it */
    if (err == MSV_OK)
        err = msv_kt_check_epoch(db, r, &head, &pin_vrf, &keydir, why, why_len);
    for (size_t i = 0; err == MSV_OK && i < r->n_results; i++)
        err = check_one(db, r, i, &head, bad, why, why_len);
    /* the key directory proves each leaf the handle's newest (docs/transparency.md) */
    if (err == MSV_OK && keydir &&
        (err = msv_kt_check_versions_at(r, bad, why, why_len)) != MSV_OK && !is_result_failure(err))
        *bad = SIZE_MAX;
    if (err == MSV_OK)
        err = accept_answer(db, &a, &head, pin);
    if (err == MSV_OK && pin_vrf)
        err = msv_kt_pin_vrf_key(db, r);
    if (err == MSV_OK)
        err = msv_kt_keep_epoch(db, r, &head);
    return err == MSV_OK ? pin_results(db, r) : err;
}

msv_err msv_kt_check_cutover(const Msv__Wire__LogEntries *r, const struct msv_kt_head *head,
                             uint64_t from, uint64_t read, int64_t *cutover, char *why,
                             size_t why_len)
{
    static _Thread_local uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    const Msv__Wire__LogProof *p = r->cutover;
    uint8_t h[MSV_KT_HASH_LEN];

    if (p == NULL) {
        if (*cutover >= 0 && (uint64_t)*cutover < head->size)
            return refuse(why, why_len,
                          "the answer does not name the log's cut-over (entry %lld): it would "
                          "hide where leaves stop naming handles",
                          (long long)*cutover);
        return MSV_OK;
    }
    msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
    if (p->index >= head->size || msv_kt_cutover_leaf_parse(p->leaf.data, p->leaf.len) != MSV_OK ||
        !proof_hashes(p->path, p->n_path, path) ||
        msv_merkle_verify_inclusion(h, p->index, head->size, path, p->n_path, head->root) != MSV_OK)
        return refuse(why, why_len,
                      "the log's cut-over the answer names (entry %llu) is not a cut-over entry "
                      "in the tree its head signs: the cut-over moved",
                      (unsigned long long)p->index);
    if (*cutover >= 0 && (uint64_t)*cutover != p->index)
        return refuse(why, why_len,
                      "the log's cut-over moved: the answer names entry %llu, this reader "
                      "read it at entry %lld",
                      (unsigned long long)p->index, (long long)*cutover);
    if (*cutover < 0 && p->index >= from && p->index < read)
        return refuse(why, why_len,
                      "entry %llu, which the answer names the log's cut-over, was given to "
                      "this reader as another entry",
                      (unsigned long long)p->index);
    *cutover = (int64_t)p->index;
    return MSV_OK;
}

int msv_kt_fits_cutover(const Msv__Wire__LogProof *p, int64_t cutover)
{
    struct msv_kt_rotation rot;
    struct msv_kt_v4_leaf v4;

    if (msv_kt_cutover_leaf_parse(p->leaf.data, p->leaf.len) == MSV_OK)
        return p->leaf_hash.len == 0 && (cutover < 0 || (uint64_t)cutover == p->index);
    return cutover < 0 || p->index < (uint64_t)cutover ||
           msv_kt_rotation_leaf_parse(p->leaf.data, p->leaf.len, &rot) == MSV_OK ||
           msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &v4) == MSV_OK;
}

msv_err msv_kt_check_entries(struct msv_client_db *db, const Msv__Wire__LogEntries *r,
                             uint64_t start, struct msv_kt_head *head, char *why, size_t why_len)
{
    static _Thread_local uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    const struct log_answer a = {r->head,          r->log_key,   r->consistency,
                                 r->n_consistency, r->rotations, r->n_rotations};
    int pin = 0;
    msv_err err = check_answer(db, &a, head, &pin, why, why_len);

    for (size_t i = 0; err == MSV_OK && i < r->n_entries; i++) {
        const Msv__Wire__LogProof *p = r->entries[i];
        uint8_t h[MSV_KT_HASH_LEN];

        msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
        if (p->index != start + i || !proof_hashes(p->path, p->n_path, path) ||
            msv_merkle_verify_inclusion(h, p->index, head->size, path, p->n_path, head->root) !=
                MSV_OK)
            err = refuse(why, why_len, "entry %llu of the transparency log is not proven",
                         (unsigned long long)(start + i));
    }
    return err == MSV_OK ? accept_answer(db, &a, head, pin) : err;
}

/* Asks the server for its head now, checked as every answer (key, signature, age, growth from
 * this device's head) and adopted; MSV_ERR_AUTH if it does not hold. */
static msv_err refresh_head(struct msv_client_db *db, struct msv_conn *conn, uint64_t known_size,
                            struct msv_kt_head *now)
{
    struct msv_refusal why = {0};
    msv_frame *r = NULL;
    msv_err err = msv_request_log_read(conn, UINT64_MAX, 0, known_size, 0, 15000, &r, &why);

    if (err == MSV_OK)
        err = msv_kt_check_entries(db, r->log_entries, UINT64_MAX, now, why.message,
                                   sizeof(why.message));
    msv_frame_free(r);
    return err;
}

/* The server proves g a prefix of its log as at head now: *fits; MSV_ERR_AGAIN if its head has
 * changed since now (the log grew meanwhile). */
static msv_err prove_prefix(struct msv_conn *conn, const struct msv_kt_head *g,
                            const struct msv_kt_head *now, int *fits)
{
    static _Thread_local uint8_t proof[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    struct msv_refusal why = {0};
    msv_frame *r = NULL;
    msv_err err = msv_request_log_read(conn, UINT64_MAX, 0, g->size, 0, 15000, &r, &why);
    const Msv__Wire__LogEntries *e;

    if (err != MSV_OK)
        return err;
    e = r->log_entries;
    if (e->head == NULL || e->head->size != now->size || e->head->root.len != MSV_KT_HASH_LEN ||
        memcmp(e->head->root.data, now->root, MSV_KT_HASH_LEN) != 0)
        err = MSV_ERR_AGAIN;
    else
        *fits = proof_hashes(e->consistency, e->n_consistency, proof) &&
                msv_merkle_verify_consistency(g->size, now->size, g->root, now->root, proof,
                                              e->n_consistency) == MSV_OK;
    msv_frame_free(r);
    return err;
}

msv_err msv_kt_check_gossip(struct msv_client_db *db, struct msv_conn *conn,
                            const struct msv_kt_head *g, int *fits)
{
    struct msv_kt_head mine, now;
    uint8_t *key = NULL;
    size_t key_len = 0;
    msv_err err;

    *fits = 1;
    err = msv_client_db_get(db, "kt_log_key", &key, &key_len);
    if (err == MSV_OK && (key_len != MSV_KT_KEY_LEN || msv_kt_head_verify(g, key) != MSV_OK))
        err = MSV_ERR_NOT_FOUND; /* not a head of this log: nothing to compare */
    free(key);
    if (err == MSV_OK)
        err = msv_kt_known_head(db, &mine);
    if (err != MSV_OK)
        return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
    if (g->size == mine.size) {
        *fits = sodium_memcmp(g->root, mine.root, MSV_KT_HASH_LEN) == 0;
        return MSV_OK;
    }
    /* both heads are compared with the server's current one, which must extend this device's
     * (else the log was rewritten under it) and is adopted; retried if the log grows meanwhile */
    for (int tries = 0; tries < 3; tries++) {
        err = refresh_head(db, conn, mine.size, &now);
        if (err == MSV_ERR_AUTH) {
            *fits = 0;
            return MSV_OK;
        }
        if (err != MSV_OK)
            return err;
        mine = now;
        if (g->size >= now.size) {
            /* larger: the server showed them more than it shows this device; equal: one root */
            *fits = g->size == now.size && sodium_memcmp(g->root, now.root, MSV_KT_HASH_LEN) == 0;
            return MSV_OK;
        }
        err = prove_prefix(conn, g, &now, fits);
        if (err != MSV_ERR_AGAIN)
            return err;
    }
    return err;
}

msv_err msv_kt_check_owner_version(const Msv__Wire__LookupResponse *r, const char *handle,
                                   const Msv__Wire__HandleVersion *v, struct msv_kt_entry *e)
{
    static _Thread_local uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    const Msv__Wire__LogProof *p = v->entry;
    struct msv_kt_v4_leaf l;
    ProtobufCBinaryData data;
    uint8_t h[MSV_KT_HASH_LEN];
    uint32_t version = 0;

    if (p == NULL || r->head == NULL || r->head->root.len != MSV_KT_HASH_LEN ||
        r->head->epoch_root.len != MSV_PT_HASH_LEN || r->vrf_key.len != MSV_VRF_PUBLIC_KEY_LEN)
        return MSV_ERR_AUTH;
    /* the entry is in the log of the answer's head (checked by msv_kt_check_lookup), its
     * handle's (a version-4 leaf opened at this version with the data beside it) ... */
    msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
    if (!proof_hashes(p->path, p->n_path, path) ||
        msv_merkle_verify_inclusion(h, p->index, r->head->size, path, p->n_path,
                                    r->head->root.data) != MSV_OK ||
        open_entry(p, &r->vrf_key, e) != MSV_OK || strcmp(e->handle, handle) != 0 ||
        (msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &l) == MSV_OK && p->version != v->version))
        return MSV_ERR_AUTH;
    /* ... and the key directory's version v.version of handle commits to it */
    data = msv_kt_proof_entry(p);
    if (msv_pt_verify_versions(r->head->epoch_root.data, r->vrf_key.data, MSV_PT_PRESENCE, handle,
                               data.data, data.len, v->proof.data, v->proof.len,
                               &version) != MSV_OK ||
        version != v->version)
        return MSV_ERR_AUTH;
    return MSV_OK;
}

uint32_t msv_kt_result_version(const Msv__Wire__HandleDevices *hd)
{
    /* u8 kind || u32be v || ...: checked by msv_kt_check_lookup before this is read */
    if (hd->version_proof.len < 5)
        return 0;
    return msv_get_u32be(hd->version_proof.data + 1);
}
