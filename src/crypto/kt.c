/*
 * Transparency log leaves and signed tree heads (layouts in docs/transparency.md).
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/crypto.h"
#include "missive/kt.h"
#include "missive/ptree.h"
#include "missive/vrf.h"
#include "util/buf.h"
#include "util/endian.h"

#define LEAF_VERSION 1
#define TOMBSTONE_VERSION 3   /* a deleted account's handle: a leaf without devices */
#define SIGNED_LEAF_VERSION 6 /* a device set with its approvals */
static const char approval_label[] = "MSV-devlist-v1";
static const char head_label[] = "MSV-kt-head-v1";

static void put_u64be(struct msv_buf *b, uint64_t v)
{
    msv_buf_put_u32be(b, (uint32_t)(v >> 32));
    msv_buf_put_u32be(b, (uint32_t)v);
}

static msv_err get_u64be(struct msv_reader *r, uint64_t *v)
{
    uint32_t hi, lo;

    if (msv_reader_u32be(r, &hi) != MSV_OK || msv_reader_u32be(r, &lo) != MSV_OK)
        return MSV_ERR_PARSE;
    *v = (uint64_t)hi << 32 | lo;
    return MSV_OK;
}

static int record_is_valid(const struct msv_kt_device *d, int signed_list)
{
    const struct msv_kt_approval *a = &d->approval;

    if (d->identity_len > UINT16_MAX || d->suite > UINT8_MAX)
        return 0;
    if (!signed_list)
        return 1;
    if (a->kind > MSV_KT_RECOVERY)
        return 0;
    return a->kind == MSV_KT_UNSIGNED ? a->sig_len == 0
                                      : a->sig_len >= 1 && a->sig_len <= MSV_KT_APPROVAL_SIG_MAX;
}

/* n records with strictly ascending ids, each valid; chain records name no listed device */
static int records_are_valid(const struct msv_kt_device *d, size_t n, int signed_list,
                             const struct msv_kt_entry *listed)
{
    for (size_t i = 0; i < n; i++) {
        if ((i > 0 && d[i].device_id <= d[i - 1].device_id) || !record_is_valid(&d[i], signed_list))
            return 0;
        for (size_t k = 0; listed != NULL && k < listed->n_devices; k++) {
            if (listed->devices[k].device_id == d[i].device_id)
                return 0;
        }
    }
    return 1;
}

/* A version-6 set holds a signed record: one with none is a version-1 set (one encoding). */
static int has_signed_record(const struct msv_kt_entry *e)
{
    for (size_t i = 0; i < e->n_devices; i++) {
        if (e->devices[i].approval.kind != MSV_KT_UNSIGNED)
            return 1;
    }
    return e->n_chain > 0; /* a chain record is a signed approver (an unsigned one is named) */
}

static void put_record(struct msv_buf *b, const struct msv_kt_device *d, int signed_list)
{
    put_u64be(b, d->device_id);
    msv_buf_put_u8(b, (uint8_t)d->suite);
    msv_buf_put_u16be(b, (uint16_t)d->identity_len);
    msv_buf_put(b, d->identity, d->identity_len);
    if (!signed_list)
        return;
    msv_buf_put_u8(b, d->approval.kind);
    if (d->approval.kind == MSV_KT_APPROVED)
        put_u64be(b, d->approval.approver);
    if (d->approval.kind != MSV_KT_UNSIGNED) {
        msv_buf_put_u8(b, (uint8_t)d->approval.sig_len);
        msv_buf_put(b, d->approval.sig, d->approval.sig_len);
    }
}

msv_err msv_kt_leaf_encode(const struct msv_kt_entry *e, uint8_t **out, size_t *len)
{
    size_t handle_len = strnlen(e->handle, sizeof(e->handle));
    struct msv_buf b;
    msv_err err;

    if (handle_len == 0 || handle_len > 255 || e->n_devices > MSV_KT_DEVICES_MAX ||
        (e->deleted && (e->n_devices != 0 || e->signed_list)) ||
        (e->signed_list && (e->n_devices == 0 || e->n_chain > MSV_KT_DEVICES_MAX)) ||
        (!e->signed_list && e->n_chain != 0) ||
        !records_are_valid(e->devices, e->n_devices, e->signed_list, NULL) ||
        !records_are_valid(e->chain, e->n_chain, e->signed_list, e) ||
        (e->signed_list && !has_signed_record(e)))
        return MSV_ERR_INVALID;
    msv_buf_init(&b, 1 << 20);
    msv_buf_put_u8(&b, e->deleted       ? TOMBSTONE_VERSION
                       : e->signed_list ? SIGNED_LEAF_VERSION
                                        : LEAF_VERSION);
    put_u64be(&b, (uint64_t)e->time_ms);
    msv_buf_put_u8(&b, (uint8_t)handle_len);
    msv_buf_put(&b, e->handle, handle_len);
    msv_buf_put_u8(&b, (uint8_t)e->n_devices);
    for (size_t i = 0; i < e->n_devices; i++)
        put_record(&b, &e->devices[i], e->signed_list);
    if (e->signed_list) {
        msv_buf_put_u8(&b, (uint8_t)e->n_chain);
        for (size_t i = 0; i < e->n_chain; i++)
            put_record(&b, &e->chain[i], 1);
    }
    err = msv_buf_finish(&b, out, len);
    msv_buf_clear(&b);
    return err;
}

static msv_err get_record(struct msv_reader *r, struct msv_kt_device *d, int signed_list)
{
    struct msv_kt_approval *a = &d->approval;
    uint8_t suite, sig_len;
    uint16_t id_len;

    if (get_u64be(r, &d->device_id) != MSV_OK || msv_reader_u8(r, &suite) != MSV_OK ||
        msv_reader_u16be(r, &id_len) != MSV_OK ||
        msv_reader_bytes(r, id_len, &d->identity) != MSV_OK)
        return MSV_ERR_PARSE;
    d->suite = suite;
    d->identity_len = id_len;
    if (!signed_list)
        return MSV_OK;
    if (msv_reader_u8(r, &a->kind) != MSV_OK || a->kind > MSV_KT_RECOVERY ||
        (a->kind == MSV_KT_APPROVED && get_u64be(r, &a->approver) != MSV_OK))
        return MSV_ERR_PARSE;
    if (a->kind == MSV_KT_UNSIGNED)
        return MSV_OK;
    if (msv_reader_u8(r, &sig_len) != MSV_OK || sig_len == 0 || sig_len > MSV_KT_APPROVAL_SIG_MAX ||
        msv_reader_bytes(r, sig_len, &a->sig) != MSV_OK)
        return MSV_ERR_PARSE;
    a->sig_len = sig_len;
    return MSV_OK;
}

/* n records with strictly ascending ids (one encoding per set) */
static msv_err get_records(struct msv_reader *r, struct msv_kt_device *d, size_t n, int signed_list)
{
    for (size_t i = 0; i < n; i++) {
        if (get_record(r, &d[i], signed_list) != MSV_OK ||
            (i > 0 && d[i].device_id <= d[i - 1].device_id))
            return MSV_ERR_PARSE;
    }
    return MSV_OK;
}

msv_err msv_kt_leaf_parse(const uint8_t *leaf, size_t len, struct msv_kt_entry *e)
{
    struct msv_reader r;
    const uint8_t *handle;
    uint8_t version, handle_len, n, n_chain = 0;
    uint64_t t;

    memset(e, 0, sizeof(*e));
    msv_reader_init(&r, leaf, len);
    if (msv_reader_u8(&r, &version) != MSV_OK ||
        (version != LEAF_VERSION && version != TOMBSTONE_VERSION &&
         version != SIGNED_LEAF_VERSION) ||
        get_u64be(&r, &t) != MSV_OK || t > INT64_MAX || msv_reader_u8(&r, &handle_len) != MSV_OK ||
        handle_len == 0 || msv_reader_bytes(&r, handle_len, &handle) != MSV_OK ||
        memchr(handle, 0, handle_len) != NULL || msv_reader_u8(&r, &n) != MSV_OK ||
        n > MSV_KT_DEVICES_MAX || (version == TOMBSTONE_VERSION && n != 0) ||
        (version == SIGNED_LEAF_VERSION && n == 0))
        return MSV_ERR_PARSE;
    e->deleted = version == TOMBSTONE_VERSION;
    e->signed_list = version == SIGNED_LEAF_VERSION;
    e->time_ms = (int64_t)t;
    memcpy(e->handle, handle, handle_len);
    if (get_records(&r, e->devices, n, e->signed_list) != MSV_OK)
        return MSV_ERR_PARSE;
    e->n_devices = n;
    if (e->signed_list && (msv_reader_u8(&r, &n_chain) != MSV_OK || n_chain > MSV_KT_DEVICES_MAX ||
                           get_records(&r, e->chain, n_chain, 1) != MSV_OK ||
                           !records_are_valid(e->chain, n_chain, 1, e)))
        return MSV_ERR_PARSE;
    e->n_chain = n_chain;
    if (e->signed_list && !has_signed_record(e))
        return MSV_ERR_PARSE;
    return msv_reader_left(&r) == 0 ? MSV_OK : MSV_ERR_PARSE;
}

void msv_kt_approval_message(uint8_t kind, uint64_t device_id, const uint8_t hash[32],
                             uint64_t approver, uint8_t out[MSV_KT_APPROVAL_MSG_LEN])
{
    memcpy(out, approval_label, sizeof(approval_label) - 1);
    out[14] = kind;
    msv_put_u64be(out + 15, device_id);
    memcpy(out + 23, hash, 32);
    msv_put_u64be(out + 55, approver);
}

msv_err msv_kt_approval_sign(const struct msv_identity *signer, uint8_t kind, uint64_t device_id,
                             const uint8_t hash[32], uint64_t approver,
                             uint8_t sig[MSV_KT_APPROVAL_SIG_MAX], size_t *sig_len)
{
    uint8_t own[32], msg[MSV_KT_APPROVAL_MSG_LEN];

    if (kind == MSV_KT_ROOT || kind == MSV_KT_RECOVERY) {
        msv_public_identity_hash(msv_identity_public(signer), own);
        msv_kt_approval_message(kind, 0, own, 0, msg);
    } else if (kind == MSV_KT_APPROVED) {
        msv_kt_approval_message(kind, device_id, hash, approver, msg);
    } else {
        return MSV_ERR_INVALID;
    }
    return msv_identity_sign(signer, msg, sizeof(msg), sig, sig_len);
}

static msv_err device_key(const struct msv_kt_device *d, struct msv_public_identity **pub)
{
    return msv_public_identity_parse((enum msv_suite)d->suite, d->identity, d->identity_len, pub);
}

msv_err msv_kt_approval_verify(const struct msv_kt_device *d, const struct msv_kt_device *approver)
{
    const struct msv_kt_approval *a = &d->approval;
    struct msv_public_identity *pub = NULL, *signer = NULL;
    uint8_t hash[32], msg[MSV_KT_APPROVAL_MSG_LEN];
    int self = a->kind == MSV_KT_ROOT || a->kind == MSV_KT_RECOVERY;
    msv_err err;

    if (a->kind == MSV_KT_UNSIGNED || a->kind > MSV_KT_RECOVERY || a->sig_len == 0)
        return MSV_ERR_INVALID;
    if (self ? approver != NULL
             : approver == NULL || approver->device_id != a->approver ||
                   approver->device_id == d->device_id)
        return MSV_ERR_AUTH;
    err = device_key(d, &pub) == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
    if (err == MSV_OK && !self)
        err = device_key(approver, &signer) == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
    if (err == MSV_OK) {
        msv_public_identity_hash(pub, hash);
        msv_kt_approval_message(a->kind, self ? 0 : d->device_id, hash, self ? 0 : a->approver,
                                msg);
        err = msv_public_identity_verify(self ? pub : signer, msg, sizeof(msg), a->sig,
                                         a->sig_len) == MSV_OK
                  ? MSV_OK
                  : MSV_ERR_AUTH;
    }
    msv_public_identity_free(pub);
    msv_public_identity_free(signer);
    return err;
}

/* The record (listed device or chain record) of device id, or NULL; marks a chain record used. */
static const struct msv_kt_device *record_of(const struct msv_kt_entry *e, uint64_t id,
                                             uint8_t used[MSV_KT_DEVICES_MAX])
{
    for (size_t i = 0; i < e->n_devices; i++) {
        if (e->devices[i].device_id == id)
            return &e->devices[i];
    }
    for (size_t i = 0; i < e->n_chain; i++) {
        if (e->chain[i].device_id == id) {
            used[i] = 1; /* named by a chain, whether it holds or not */
            return &e->chain[i];
        }
    }
    return NULL;
}

/* What is known of one record's own approval: not checked yet, holds, fails. */
enum { STEP_UNKNOWN, STEP_HOLDS, STEP_FAILS };

/*
 * Whether record d's approval holds under approver (NULL for its own), its signature checked
 * once per set: step[] holds each record's outcome (listed devices, then chain records).
 */
static int step_holds(const struct msv_kt_entry *e, const struct msv_kt_device *d,
                      const struct msv_kt_device *approver, uint8_t step[2 * MSV_KT_DEVICES_MAX],
                      size_t *n_verified)
{
    size_t i = d >= e->devices && d < e->devices + e->n_devices
                   ? (size_t)(d - e->devices)
                   : e->n_devices + (size_t)(d - e->chain);

    if (step[i] == STEP_UNKNOWN) {
        (*n_verified)++;
        step[i] = msv_kt_approval_verify(d, approver) == MSV_OK ? STEP_HOLDS : STEP_FAILS;
    }
    return step[i] == STEP_HOLDS;
}

/*
 * Follows device d from approver to approver; marks the chain records it names in used
 * (indexed as e->chain) and sets *end to the record it ends at. A record's approver is
 * always the same record (the first of its id), so each step's outcome is kept in step.
 */
static enum msv_kt_chain follow_chain(const struct msv_kt_entry *e, const struct msv_kt_device *d,
                                      uint8_t used[MSV_KT_DEVICES_MAX],
                                      uint8_t step[2 * MSV_KT_DEVICES_MAX], size_t *n_verified,
                                      const struct msv_kt_device **end)
{
    for (size_t hops = 0; hops <= 2 * MSV_KT_DEVICES_MAX; hops++) {
        const struct msv_kt_device *approver;

        switch (d->approval.kind) {
        case MSV_KT_UNSIGNED:
            *end = d;
            return MSV_KT_CHAIN_UNSIGNED;
        case MSV_KT_ROOT:
        case MSV_KT_RECOVERY:
            *end = d;
            return step_holds(e, d, NULL, step, n_verified) ? MSV_KT_CHAIN_SIGNED
                                                            : MSV_KT_CHAIN_UNAPPROVED;
        default:
            approver = record_of(e, d->approval.approver, used);
            if (approver == NULL || !step_holds(e, d, approver, step, n_verified))
                return MSV_KT_CHAIN_UNAPPROVED;
            d = approver;
        }
    }
    return MSV_KT_CHAIN_UNAPPROVED; /* a cycle */
}

msv_err msv_kt_devlist_check(const struct msv_kt_entry *e, struct msv_kt_devlist *out)
{
    uint8_t used[MSV_KT_DEVICES_MAX] = {0}, step[2 * MSV_KT_DEVICES_MAX] = {0};
    struct msv_public_identity *pub = NULL;

    memset(out, 0, sizeof(*out));
    if (e->deleted || e->n_devices > MSV_KT_DEVICES_MAX || e->n_chain > MSV_KT_DEVICES_MAX)
        return MSV_ERR_AUTH;
    for (size_t i = 0; i < e->n_devices; i++) {
        const struct msv_kt_device *end = NULL;
        enum msv_kt_chain c = MSV_KT_CHAIN_UNSIGNED;

        if (e->signed_list)
            c = follow_chain(e, &e->devices[i], used, step, &out->n_verified, &end);
        else
            end = &e->devices[i];

        out->chain[i] = (uint8_t)c;
        out->end[i] = end != NULL ? end->device_id : 0;
        if (c == MSV_KT_CHAIN_UNSIGNED)
            out->n_unsigned++;
        else if (c == MSV_KT_CHAIN_UNAPPROVED)
            out->n_unapproved++;
        if (c != MSV_KT_CHAIN_SIGNED)
            continue;
        out->n_signed++;
        if (out->has_root && out->root_id == end->device_id)
            continue;
        if (out->has_root || device_key(end, &pub) != MSV_OK)
            return MSV_ERR_AUTH; /* two roots (or a root no key parses: not reached, it verified) */
        out->has_root = 1;
        out->root_kind = end->approval.kind;
        out->root_id = end->device_id;
        msv_public_identity_hash(pub, out->root_hash);
        msv_public_identity_free(pub);
        pub = NULL;
    }
    for (size_t i = 0; i < e->n_chain; i++) {
        if (!used[i])
            return MSV_ERR_AUTH; /* a chain record no listed device's chain passes through */
    }
    return MSV_OK;
}

static int is_listed(const struct msv_kt_entry *e, uint64_t id)
{
    for (size_t i = 0; i < e->n_devices; i++) {
        if (e->devices[i].device_id == id)
            return 1;
    }
    return 0;
}

static int compare_records(const void *a, const void *b)
{
    uint64_t x = ((const struct msv_kt_device *)a)->device_id;
    uint64_t y = ((const struct msv_kt_device *)b)->device_id;

    return x < y ? -1 : x > y;
}

msv_err msv_kt_devlist_complete(struct msv_kt_entry *e, const struct msv_kt_device *records,
                                size_t n, uint8_t *keep)
{
    /* each round takes the approvers named by the devices and records taken so far; a chain
     * is at most every record long */
    for (size_t round = 0; round <= n; round++) {
        size_t before = e->n_chain;

        for (size_t i = 0; i < n; i++) {
            uint64_t id = records[i].device_id;
            int named = 0;

            if (keep[i] || is_listed(e, id))
                continue;
            for (size_t k = 0; !named && k < e->n_devices; k++)
                named = e->devices[k].approval.kind == MSV_KT_APPROVED &&
                        e->devices[k].approval.approver == id;
            for (size_t k = 0; !named && k < e->n_chain; k++)
                named = e->chain[k].approval.kind == MSV_KT_APPROVED &&
                        e->chain[k].approval.approver == id;
            if (!named)
                continue;
            if (e->n_chain == MSV_KT_DEVICES_MAX)
                return MSV_ERR_TOO_BIG;
            keep[i] = 1;
            e->chain[e->n_chain++] = records[i];
        }
        if (e->n_chain == before)
            break;
    }
    qsort(e->chain, e->n_chain, sizeof(e->chain[0]), compare_records);
    e->signed_list = e->n_devices > 0 && has_signed_record(e);
    if (!e->signed_list)
        e->n_chain = 0; /* unsigned approvers only: nothing a version-1 set can carry */
    return MSV_OK;
}

/* What a tree head's signature covers: label || u64be size || u64be time || root. */
static void head_message(const struct msv_kt_head *h, uint8_t out[sizeof(head_label) - 1 + 48])
{
    size_t o = sizeof(head_label) - 1;

    memcpy(out, head_label, o);
    msv_put_u64be(out + o, h->size);
    msv_put_u64be(out + o + 8, (uint64_t)h->time_ms);
    memcpy(out + o + 16, h->root, MSV_KT_HASH_LEN);
}

msv_err msv_kt_head_sign(struct msv_kt_head *head, const uint8_t secret_key[64])
{
    uint8_t m[sizeof(head_label) - 1 + 48];

    head_message(head, m);
    return crypto_sign_detached(head->signature, NULL, m, sizeof(m), secret_key) == 0
               ? MSV_OK
               : MSV_ERR_CRYPTO;
}

msv_err msv_kt_head_verify(const struct msv_kt_head *head, const uint8_t log_key[MSV_KT_KEY_LEN])
{
    uint8_t m[sizeof(head_label) - 1 + 48];

    head_message(head, m);
    return crypto_sign_verify_detached(head->signature, m, sizeof(m), log_key) == 0 ? MSV_OK
                                                                                    : MSV_ERR_AUTH;
}

static const char rotation_label[] = "MSV-kt-key-v1";
#define ROTATION_LEN (sizeof(rotation_label) - 1 + 2 * MSV_KT_KEY_LEN + 8)

/* What a rotation's signature covers: label || old key || new key || u64be size. */
static void rotation_message(const uint8_t old_key[MSV_KT_KEY_LEN],
                             const uint8_t new_key[MSV_KT_KEY_LEN], uint64_t size,
                             uint8_t out[ROTATION_LEN])
{
    size_t o = sizeof(rotation_label) - 1;

    memcpy(out, rotation_label, o);
    memcpy(out + o, old_key, MSV_KT_KEY_LEN);
    memcpy(out + o + MSV_KT_KEY_LEN, new_key, MSV_KT_KEY_LEN);
    msv_put_u64be(out + o + 2 * MSV_KT_KEY_LEN, size);
}

msv_err msv_kt_rotation_sign(const uint8_t old_secret_key[64],
                             const uint8_t new_key[MSV_KT_KEY_LEN], uint64_t size,
                             uint8_t signature[MSV_KT_SIG_LEN])
{
    uint8_t m[ROTATION_LEN], old_key[MSV_KT_KEY_LEN];

    crypto_sign_ed25519_sk_to_pk(old_key, old_secret_key);
    rotation_message(old_key, new_key, size, m);
    return crypto_sign_detached(signature, NULL, m, sizeof(m), old_secret_key) == 0
               ? MSV_OK
               : MSV_ERR_CRYPTO;
}

msv_err msv_kt_rotation_verify(const uint8_t old_key[MSV_KT_KEY_LEN],
                               const uint8_t new_key[MSV_KT_KEY_LEN], uint64_t size,
                               const uint8_t signature[MSV_KT_SIG_LEN])
{
    uint8_t m[ROTATION_LEN];

    rotation_message(old_key, new_key, size, m);
    return crypto_sign_verify_detached(signature, m, sizeof(m), old_key) == 0 ? MSV_OK
                                                                              : MSV_ERR_AUTH;
}

#define ROTATION_LEAF_VERSION 2
#define ROTATION_LEAF_LEN MSV_KT_ROTATION_LEAF_LEN
_Static_assert(ROTATION_LEAF_LEN == 1 + 8 + 2 * MSV_KT_KEY_LEN + 8 + MSV_KT_SIG_LEN,
               "rotation entry layout");

msv_err msv_kt_rotation_leaf_encode(const struct msv_kt_rotation *r, uint8_t **out, size_t *len)
{
    uint8_t *leaf;

    if (r->time_ms < 0)
        return MSV_ERR_INVALID;
    leaf = malloc(ROTATION_LEAF_LEN);
    if (leaf == NULL)
        return MSV_ERR_NOMEM;
    leaf[0] = ROTATION_LEAF_VERSION;
    msv_put_u64be(leaf + 1, (uint64_t)r->time_ms);
    memcpy(leaf + 9, r->old_key, MSV_KT_KEY_LEN);
    memcpy(leaf + 9 + MSV_KT_KEY_LEN, r->new_key, MSV_KT_KEY_LEN);
    msv_put_u64be(leaf + 9 + 2 * MSV_KT_KEY_LEN, r->size);
    memcpy(leaf + 17 + 2 * MSV_KT_KEY_LEN, r->signature, MSV_KT_SIG_LEN);
    *out = leaf;
    *len = ROTATION_LEAF_LEN;
    return MSV_OK;
}

msv_err msv_kt_rotation_leaf_parse(const uint8_t *leaf, size_t len, struct msv_kt_rotation *r)
{
    uint64_t t;

    if (len != ROTATION_LEAF_LEN || leaf[0] != ROTATION_LEAF_VERSION)
        return MSV_ERR_PARSE;
    t = msv_get_u64be(leaf + 1);
    if (t > INT64_MAX)
        return MSV_ERR_PARSE;
    r->time_ms = (int64_t)t;
    memcpy(r->old_key, leaf + 9, MSV_KT_KEY_LEN);
    memcpy(r->new_key, leaf + 9 + MSV_KT_KEY_LEN, MSV_KT_KEY_LEN);
    r->size = msv_get_u64be(leaf + 9 + 2 * MSV_KT_KEY_LEN);
    memcpy(r->signature, leaf + 17 + 2 * MSV_KT_KEY_LEN, MSV_KT_SIG_LEN);
    return MSV_OK;
}

/*
 * One step of a chain: the entry names the key in force as its old key, that
 * key signed it, it sits where its size says (after the previous step), and
 * head proves it is in the log. Then its new key is in force.
 */
static msv_err follow_step(uint8_t key[MSV_KT_KEY_LEN], const struct msv_kt_rotation_proof *p,
                           uint64_t *next_index, const struct msv_kt_head *head)
{
    struct msv_kt_rotation r;
    uint8_t leaf_hash[MSV_KT_HASH_LEN];

    if (msv_kt_rotation_leaf_parse(p->leaf, p->leaf_len, &r) != MSV_OK ||
        sodium_memcmp(r.old_key, key, MSV_KT_KEY_LEN) != 0 ||
        msv_kt_rotation_verify(key, r.new_key, r.size, r.signature) != MSV_OK ||
        p->index < *next_index || p->index >= head->size || r.size != p->index + 1)
        return MSV_ERR_AUTH;
    msv_kt_leaf_hash(p->leaf, p->leaf_len, leaf_hash);
    if (msv_merkle_verify_inclusion(leaf_hash, p->index, head->size, p->path, p->n_path,
                                    head->root) != MSV_OK)
        return MSV_ERR_AUTH;
    memcpy(key, r.new_key, MSV_KT_KEY_LEN);
    *next_index = p->index + 1;
    return MSV_OK;
}

msv_err msv_kt_rotation_follow(const uint8_t pinned[MSV_KT_KEY_LEN],
                               const struct msv_kt_rotation_proof *chain, size_t n,
                               const struct msv_kt_head *head, uint8_t key_out[MSV_KT_KEY_LEN])
{
    uint8_t key[MSV_KT_KEY_LEN];
    uint64_t next_index = 0;
    msv_err err = MSV_OK;

    memcpy(key, pinned, MSV_KT_KEY_LEN);
    for (size_t i = 0; i < n && err == MSV_OK; i++)
        err = follow_step(key, &chain[i], &next_index, head);
    if (err == MSV_OK)
        err = msv_kt_head_verify(head, key);
    if (err == MSV_OK)
        memcpy(key_out, key, MSV_KT_KEY_LEN);
    return err;
}

/* ---- leaves that name no handle ----------------------------------------------------------- */

#define V4_LEAF_VERSION 4
#define CUTOVER_LEAF_VERSION 5

void msv_kt_v4_leaf_encode(const struct msv_kt_v4_leaf *l, uint8_t out[MSV_KT_V4_LEAF_LEN])
{
    out[0] = V4_LEAF_VERSION;
    msv_put_u64be(out + 1, (uint64_t)l->time_ms);
    memcpy(out + 9, l->label, 32);
    memcpy(out + 41, l->value, 32);
}

msv_err msv_kt_v4_leaf_parse(const uint8_t *leaf, size_t len, struct msv_kt_v4_leaf *l)
{
    uint64_t t;

    if (leaf == NULL || len != MSV_KT_V4_LEAF_LEN || leaf[0] != V4_LEAF_VERSION)
        return MSV_ERR_PARSE;
    t = msv_get_u64be(leaf + 1);
    if (t > INT64_MAX)
        return MSV_ERR_PARSE;
    l->time_ms = (int64_t)t;
    memcpy(l->label, leaf + 9, 32);
    memcpy(l->value, leaf + 41, 32);
    return MSV_OK;
}

void msv_kt_cutover_leaf_encode(int64_t time_ms, uint8_t out[MSV_KT_CUTOVER_LEAF_LEN])
{
    out[0] = CUTOVER_LEAF_VERSION;
    msv_put_u64be(out + 1, (uint64_t)time_ms);
    out[9] = V4_LEAF_VERSION;
}

msv_err msv_kt_cutover_leaf_parse(const uint8_t *leaf, size_t len)
{
    if (leaf == NULL || len != MSV_KT_CUTOVER_LEAF_LEN || leaf[0] != CUTOVER_LEAF_VERSION ||
        msv_get_u64be(leaf + 1) > INT64_MAX || leaf[9] != V4_LEAF_VERSION)
        return MSV_ERR_PARSE;
    return MSV_OK;
}

msv_err msv_kt_v4_open(const uint8_t vrf_pk[32], const uint8_t *leaf, size_t len,
                       const uint8_t *data, size_t data_len, uint32_t version,
                       const uint8_t opening[32], const uint8_t pi[80], struct msv_kt_entry *e)
{
    struct msv_kt_v4_leaf l;
    uint8_t alpha[300], beta[MSV_VRF_OUTPUT_LEN], label[MSV_PT_LABEL_LEN], value[MSV_PT_VALUE_LEN];
    size_t alpha_len = 0;

    /* the data a device set or tombstone, of the leaf's time; its label the VRF's for its
     * handle and version; its value the commitment to the data (docs/transparency.md) */
    if (version == 0 || msv_kt_v4_leaf_parse(leaf, len, &l) != MSV_OK ||
        msv_kt_leaf_parse(data, data_len, e) != MSV_OK || e->time_ms != l.time_ms ||
        msv_pt_vrf_input(e->handle, version, alpha, sizeof(alpha), &alpha_len) != MSV_OK ||
        msv_vrf_verify(MSV_PT_VRF_SUITE, vrf_pk, alpha, alpha_len, pi, beta) != MSV_OK)
        return MSV_ERR_AUTH;
    msv_pt_label(beta, label);
    if (msv_pt_commit(opening, e->handle, version, data, data_len, value) != MSV_OK ||
        sodium_memcmp(label, l.label, sizeof(label)) != 0 ||
        sodium_memcmp(value, l.value, sizeof(value)) != 0)
        return MSV_ERR_AUTH;
    return MSV_OK;
}
