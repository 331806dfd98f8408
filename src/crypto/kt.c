/*
 * Transparency log leaves and signed tree heads (layouts in docs/transparency.md).
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/kt.h"
#include "missive/ptree.h"
#include "missive/vrf.h"
#include "util/buf.h"
#include "util/endian.h"

#define LEAF_VERSION 1
#define TOMBSTONE_VERSION 3 /* a deleted account's handle: a leaf without devices */
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

msv_err msv_kt_leaf_encode(const struct msv_kt_entry *e, uint8_t **out, size_t *len)
{
    size_t handle_len = strnlen(e->handle, sizeof(e->handle));
    struct msv_buf b;
    msv_err err;

    if (handle_len == 0 || handle_len > 255 || e->n_devices > MSV_KT_DEVICES_MAX ||
        (e->deleted && e->n_devices != 0))
        return MSV_ERR_INVALID;
    for (size_t i = 0; i < e->n_devices; i++) {
        if ((i > 0 && e->devices[i].device_id <= e->devices[i - 1].device_id) ||
            e->devices[i].identity_len > UINT16_MAX || e->devices[i].suite > UINT8_MAX)
            return MSV_ERR_INVALID;
    }
    msv_buf_init(&b, 1 << 20);
    msv_buf_put_u8(&b, e->deleted ? TOMBSTONE_VERSION : LEAF_VERSION);
    put_u64be(&b, (uint64_t)e->time_ms);
    msv_buf_put_u8(&b, (uint8_t)handle_len);
    msv_buf_put(&b, e->handle, handle_len);
    msv_buf_put_u8(&b, (uint8_t)e->n_devices);
    for (size_t i = 0; i < e->n_devices; i++) {
        put_u64be(&b, e->devices[i].device_id);
        msv_buf_put_u8(&b, (uint8_t)e->devices[i].suite);
        msv_buf_put_u16be(&b, (uint16_t)e->devices[i].identity_len);
        msv_buf_put(&b, e->devices[i].identity, e->devices[i].identity_len);
    }
    err = msv_buf_finish(&b, out, len);
    msv_buf_clear(&b);
    return err;
}

msv_err msv_kt_leaf_parse(const uint8_t *leaf, size_t len, struct msv_kt_entry *e)
{
    struct msv_reader r;
    const uint8_t *handle;
    uint8_t version, handle_len, n;
    uint64_t t;

    memset(e, 0, sizeof(*e));
    msv_reader_init(&r, leaf, len);
    if (msv_reader_u8(&r, &version) != MSV_OK ||
        (version != LEAF_VERSION && version != TOMBSTONE_VERSION) || get_u64be(&r, &t) != MSV_OK ||
        t > INT64_MAX || msv_reader_u8(&r, &handle_len) != MSV_OK || handle_len == 0 ||
        msv_reader_bytes(&r, handle_len, &handle) != MSV_OK ||
        memchr(handle, 0, handle_len) != NULL || msv_reader_u8(&r, &n) != MSV_OK ||
        n > MSV_KT_DEVICES_MAX || (version == TOMBSTONE_VERSION && n != 0))
        return MSV_ERR_PARSE;
    e->deleted = version == TOMBSTONE_VERSION;
    e->time_ms = (int64_t)t;
    memcpy(e->handle, handle, handle_len);
    for (uint8_t i = 0; i < n; i++) {
        struct msv_kt_device *d = &e->devices[i];
        uint8_t suite;
        uint16_t id_len;

        if (get_u64be(&r, &d->device_id) != MSV_OK || msv_reader_u8(&r, &suite) != MSV_OK ||
            msv_reader_u16be(&r, &id_len) != MSV_OK ||
            msv_reader_bytes(&r, id_len, &d->identity) != MSV_OK)
            return MSV_ERR_PARSE;
        if (i > 0 && d->device_id <= e->devices[i - 1].device_id)
            return MSV_ERR_PARSE; /* one encoding per set: ascending, distinct ids */
        d->suite = suite;
        d->identity_len = id_len;
    }
    e->n_devices = n;
    return msv_reader_left(&r) == 0 ? MSV_OK : MSV_ERR_PARSE;
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
