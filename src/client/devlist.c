/*
 * A sender's checks of the signed device lists a lookup shows (docs/transparency.md, "Signed
 * device lists", "What a sender does"): after the answer is checked against the log, each
 * device whose approval chain does not hold is taken out of the answer (nothing is sealed to
 * it) and the user is told; a root other than the one this device pinned for the handle is told
 * like a changed safety number. Per handle the setting kt_devlist:HANDLE holds
 *
 *     u8 root kind (0: none seen, unsigned) || u64be root id || root identity hash (32) ||
 *     u8 n || n x (u64be id || SHA-256 of its key): the unsigned records accepted as the end
 *     of a chain
 *
 * An older pin holds n x u64be (the ids alone): read with the keys unknown, and written with
 * them once a lookup's ends are accepted again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/internal.h"
#include "client/transparency.h"
#include "missive/kt.h"
#include "util/endian.h"

#define PIN_FIXED (1 + 8 + 32 + 1)
#define PIN_END (8u + 32u)
#define PIN_END_OLD 8u

struct devlist_pin {
    int present;
    uint8_t kind;
    uint64_t root_id;
    uint8_t root_hash[32];
    size_t n_ends;
    uint64_t ends[MSV_KT_DEVICES_MAX];
    uint8_t end_hash[MSV_KT_DEVICES_MAX][32];
    int hash_unknown; /* read from a pin of ids alone */
};

static void pin_key(char key[300], const char *handle)
{
    snprintf(key, 300, "kt_devlist:%.256s", handle);
}

/* The pin of handle (p->present 0 if none); MSV_ERR_PARSE for one that does not read. */
static msv_err pin_get(struct msv_client *c, const char *handle, struct devlist_pin *p)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    memset(p, 0, sizeof(*p));
    pin_key(key, handle);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err == MSV_OK && (len < PIN_FIXED || v[PIN_FIXED - 1] > MSV_KT_DEVICES_MAX ||
                          (len != PIN_FIXED + PIN_END * (size_t)v[PIN_FIXED - 1] &&
                           len != PIN_FIXED + PIN_END_OLD * (size_t)v[PIN_FIXED - 1])))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        p->present = 1;
        p->kind = v[0];
        p->root_id = msv_get_u64be(v + 1);
        memcpy(p->root_hash, v + 9, 32);
        p->n_ends = v[PIN_FIXED - 1];
        p->hash_unknown = p->n_ends > 0 && len == PIN_FIXED + PIN_END_OLD * p->n_ends;
        for (size_t i = 0; i < p->n_ends; i++) {
            const uint8_t *end = v + PIN_FIXED + (p->hash_unknown ? PIN_END_OLD : PIN_END) * i;

            p->ends[i] = msv_get_u64be(end);
            if (!p->hash_unknown)
                memcpy(p->end_hash[i], end + 8, 32);
        }
    }
    free(v);
    return err;
}

static msv_err pin_put(struct msv_client *c, const char *handle, const struct devlist_pin *p)
{
    uint8_t v[PIN_FIXED + PIN_END * MSV_KT_DEVICES_MAX];
    char key[300];

    pin_key(key, handle);
    v[0] = p->kind;
    msv_put_u64be(v + 1, p->root_id);
    memcpy(v + 9, p->root_hash, 32);
    v[PIN_FIXED - 1] = (uint8_t)p->n_ends;
    for (size_t i = 0; i < p->n_ends; i++) {
        msv_put_u64be(v + PIN_FIXED + PIN_END * i, p->ends[i]);
        memcpy(v + PIN_FIXED + PIN_END * i + 8, p->end_hash[i], 32);
    }
    return msv_client_db_set(c->db, key, v, PIN_FIXED + PIN_END * p->n_ends);
}

static int pin_equal(const struct devlist_pin *a, const struct devlist_pin *b)
{
    return a->present == b->present && a->kind == b->kind && a->root_id == b->root_id &&
           memcmp(a->root_hash, b->root_hash, 32) == 0 && a->n_ends == b->n_ends &&
           a->hash_unknown == b->hash_unknown &&
           memcmp(a->ends, b->ends, a->n_ends * sizeof(a->ends[0])) == 0 &&
           memcmp(a->end_hash, b->end_hash, a->n_ends * sizeof(a->end_hash[0])) == 0;
}

/* Whether p holds the end id with the key of hash (any key, for a pin of ids alone). */
static int has_end(const struct devlist_pin *p, uint64_t id, const uint8_t hash[32])
{
    for (size_t i = 0; i < p->n_ends; i++) {
        if (p->ends[i] == id)
            return p->hash_unknown || sodium_memcmp(p->end_hash[i], hash, 32) == 0;
    }
    return 0;
}

/* The record (listed device or chain record) of id in e: every chain's end is one. */
static const struct msv_kt_device *record_of(const struct msv_kt_entry *e, uint64_t id)
{
    for (size_t i = 0; i < e->n_devices; i++) {
        if (e->devices[i].device_id == id)
            return &e->devices[i];
    }
    for (size_t i = 0; i < e->n_chain; i++) {
        if (e->chain[i].device_id == id)
            return &e->chain[i];
    }
    return NULL;
}

/*
 * Whether the unsigned record end of an unsigned chain is taken: one this device accepted before
 * with this key, or (pin absent) any of a set with no root; and never with another key than
 * the log gave that device id before. hash is set to its key's SHA-256.
 */
static msv_err end_taken(struct msv_client *c, const struct devlist_pin *pin, int has_root,
                         const struct msv_kt_device *end, uint8_t hash[32], int *ok)
{
    int differs = 0;
    msv_err err;

    *ok = 0;
    if (end == NULL)
        return MSV_OK;
    crypto_hash_sha256(hash, end->identity, end->identity_len);
    err = msv_kt_device_key_differs(c->db, end->device_id, end->identity, end->identity_len,
                                    &differs);
    if (err != MSV_OK || differs)
        return err;
    *ok = pin->present ? has_end(pin, end->device_id, hash) : !has_root;
    return MSV_OK;
}

static void tell(struct msv_client *c, const char *handle, uint64_t device_id, const char *text)
{
    if (c->on_devlist != NULL)
        c->on_devlist(c->ctx, handle, device_id, text);
}

/* Takes device i out of hd (its record freed): nothing is sealed to it. */
static void drop_device(Msv__Wire__HandleDevices *hd, size_t i)
{
    protobuf_c_message_free_unpacked(&hd->devices[i]->base, NULL);
    memmove(&hd->devices[i], &hd->devices[i + 1], (hd->n_devices - i - 1) * sizeof(*hd->devices));
    hd->n_devices--;
}

void client_devices_drop(Msv__Wire__HandleDevices *hd)
{
    while (hd->n_devices > 0)
        drop_device(hd, hd->n_devices - 1);
}

/* A root other than the pinned one: told, as a changed safety number is. */
static void root_changed(struct msv_client *c, const char *handle, const struct devlist_pin *was,
                         const struct msv_kt_devlist *now)
{
    char text[1000];

    if (!was->present || (was->kind == now->root_kind && was->root_id == now->root_id &&
                          sodium_memcmp(was->root_hash, now->root_hash, 32) == 0))
        return;
    snprintf(text, sizeof(text),
             "the devices of %.256s are no longer approved by a device you knew: %s; compare "
             "its safety number ('missive verify %.256s') before trusting them",
             handle,
             now->root_kind == MSV_KT_RECOVERY ? "the account was recovered with its password"
                                               : "its device list was started again",
             handle);
    tell(c, handle, 0, text);
}

/* Checks one result's chains; drops the devices that fail them, and pins what it accepted. */
static msv_err check_result(struct msv_client *c, Msv__Wire__HandleDevices *hd,
                            struct msv_kt_entry *e, char *why, size_t why_len)
{
    struct msv_kt_devlist dl;
    struct devlist_pin pin, next;
    ProtobufCBinaryData data = msv_kt_proof_entry(hd->proof);
    char handle[257], text[600];
    msv_err err;

    snprintf(handle, sizeof(handle), "%.*s", (int)hd->handle.len, (const char *)hd->handle.data);
    /* the answer's devices are exactly the entry's, in its order (msv_kt_check_lookup); a set
     * that does not check out as a whole sends nothing to this handle, and the lookup's other
     * handles stand */
    if (msv_kt_leaf_parse(data.data, data.len, e) != MSV_OK || e->n_devices != hd->n_devices ||
        msv_kt_devlist_check(e, &dl) != MSV_OK) {
        snprintf(text, sizeof(text),
                 "the directory's device list of %.256s does not check out (its approvals name "
                 "two roots or keep a record no device's approval needs): nothing is sent to "
                 "its devices",
                 handle);
        tell(c, handle, 0, text);
        client_devices_drop(hd);
        return MSV_OK;
    }
    err = pin_get(c, handle, &pin);
    if (err != MSV_OK) {
        snprintf(why, why_len, "this device's record of the device list of %.64s does not read",
                 handle);
        return err;
    }
    next = pin;
    next.present = 1;
    next.n_ends = 0;
    next.hash_unknown = 0;
    if (dl.has_root) {
        root_changed(c, handle, &pin, &dl);
        next.kind = dl.root_kind;
        next.root_id = dl.root_id;
        memcpy(next.root_hash, dl.root_hash, 32);
    }
    /* from the last device down: dropping one moves only those after it */
    for (size_t i = e->n_devices; i-- > 0;) {
        /* an unsigned chain ends at a record this device accepted before, with the same key,
         * or the set is a legacy one (no root) seen for the first time: taken as it is */
        int ok = dl.chain[i] == MSV_KT_CHAIN_SIGNED;
        uint8_t hash[32];

        if (dl.chain[i] == MSV_KT_CHAIN_UNSIGNED) {
            err = end_taken(c, &pin, dl.has_root, record_of(e, dl.end[i]), hash, &ok);
            if (err != MSV_OK) {
                snprintf(why, why_len,
                         "this device's record of the device keys of %.64s does "
                         "not read",
                         handle);
                return err;
            }
        }
        if (ok && dl.chain[i] == MSV_KT_CHAIN_UNSIGNED && !has_end(&next, dl.end[i], hash)) {
            next.ends[next.n_ends] = dl.end[i];
            memcpy(next.end_hash[next.n_ends++], hash, 32);
        }
        if (ok)
            continue;
        snprintf(text, sizeof(text),
                 "device %llu of %.256s has no valid approval from its account's devices: "
                 "nothing is sent to it",
                 (unsigned long long)e->devices[i].device_id, handle);
        tell(c, handle, e->devices[i].device_id, text);
        drop_device(hd, i);
    }
    /* most lookups change nothing: no write */
    return pin_equal(&pin, &next) ? MSV_OK : pin_put(c, handle, &next);
}

msv_err client_devlist_check(struct msv_client *c, Msv__Wire__LookupResponse *r)
{
    struct msv_kt_entry *e = malloc(sizeof(*e));
    msv_err err = e != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && i < r->n_results; i++) {
        Msv__Wire__HandleDevices *hd = r->results[i];

        if (hd->n_devices > 0 && hd->proof != NULL)
            err = check_result(c, hd, e, c->why.message, sizeof(c->why.message));
    }
    free(e);
    return err;
}

enum msv_devlist_state msv_client_devlist_state(struct msv_client *c, const char *handle)
{
    struct devlist_pin pin;

    if (pin_get(c, handle, &pin) != MSV_OK || !pin.present)
        return MSV_DEVLIST_UNKNOWN;
    return pin.kind == MSV_KT_ROOT       ? MSV_DEVLIST_SIGNED
           : pin.kind == MSV_KT_RECOVERY ? MSV_DEVLIST_RECOVERED
                                         : MSV_DEVLIST_UNSIGNED;
}
