/*
 * This device's MLS KeyPackages (docs/crypto.md, "MLS KeyPackages of a device"): made, their
 * private parts kept, published to the delivery service and kept topped up, with a last-resort
 * one; and the check that a KeyPackage is a given device's.
 *
 * Each KeyPackage (cipher suite 1) has a signature key of its own, and a basic credential that
 * binds it to the device: identity = u64be device id || the device identity's signature over
 * "MSV-mls-leaf-v1" || u64be device id || the 32-byte Ed25519 signature key. A member adding
 * a device checks that signature against the device's identity key from the verified directory,
 * so that a KeyPackage the server made up (whose private keys it would hold) is refused.
 *
 * Settings used: "mls-kp:<hex of the KeyPackageRef>" for each KeyPackage made (u8 flags, bit 0
 * last resort || u64be not_after in seconds || signature seed || init key || leaf key, 32 bytes
 * each || the KeyPackage MLSMessage), kept until KEEP_AFTER_S past its lifetime's end: a Welcome
 * naming it may come while its device is offline, and a KeyPackage whose upload got no answer may
 * be on the server; "mls-kp-renew-by-2" (u64be seconds): when all the server's ones are replaced
 * (absent: at the next publish, as after a restore).
 */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/client.h"
#include "client/internal.h"
#include "client/requests.h"
#include "missive/util.h"
#include "mls/mls.h"
#include "util/buf.h"
#include "util/endian.h"

#define TIMEOUT_MS 15000
#define PREFIX "mls-kp:"
#define RECORD_LEN (1 + 8 + 3 * 32)
#define LIFETIME_S (60 * 86400)          /* a KeyPackage's lifetime */
#define LAST_RESORT_RENEW_S (14 * 86400) /* a last-resort one this near its end is replaced */
#define RENEW_BEFORE_S (14 * 86400)      /* the ordinary ones replaced this long before their end */
#define KEEP_AFTER_S (30 * 86400) /* a private part kept past its end: the relay's queue time */
/* The KeyPackages made before their capabilities listed the group context's extension were
 * renewed by "mls-kp-renew-by": a device that holds only that name replaces them all at once. */
#define RENEW_BY "mls-kp-renew-by-2"
#define RENEW_BY_BEFORE "mls-kp-renew-by"
#define SKEW_S 3600 /* not_before this far back, for others' clocks */
#define LABEL "MSV-mls-leaf-v1"
#define LABEL_LEN 15

static msv_err record_name(const uint8_t ref[MSV_MLS_NH], char key[8 + 2 * MSV_MLS_NH])
{
    memcpy(key, PREFIX, 7);
    return msv_hex_encode(ref, MSV_MLS_NH, key + 7, 1 + 2 * MSV_MLS_NH);
}

/* What the device identity signs for a KeyPackage's signature key. */
static size_t binding_message(uint64_t device_id, const uint8_t sig_pub[32],
                              uint8_t msg[LABEL_LEN + 8 + 32])
{
    memcpy(msg, LABEL, LABEL_LEN);
    msv_put_u64be(msg + LABEL_LEN, device_id);
    memcpy(msg + LABEL_LEN + 8, sig_pub, 32);
    return LABEL_LEN + 8 + 32;
}

msv_err msv_mlskeys_leaf_credential(const uint8_t *leaf_raw, size_t leaf_len,
                                    const uint8_t **identity, size_t *identity_len,
                                    uint64_t *device_id)
{
    struct msv_reader r;
    const uint8_t *p;
    size_t n;
    uint16_t type = 0;

    /* LeafNode: encryption_key<V> signature_key<V> credential (u16 type, identity<V>) ... */
    msv_reader_init(&r, leaf_raw, leaf_len);
    if (msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK ||
        msv_reader_u16be(&r, &type) != MSV_OK || type != 1 ||
        msv_mls_get_vec(&r, identity, identity_len) != MSV_OK || *identity_len <= 8)
        return MSV_ERR_PARSE;
    *device_id = msv_get_u64be(*identity);
    return MSV_OK;
}

msv_err msv_mlskeys_leaf_check(const struct msv_public_identity *pub, uint64_t device_id,
                               const struct msv_mls_leaf *leaf, const char **why)
{
    const uint8_t *identity = NULL;
    size_t identity_len = 0;
    uint64_t named = 0;
    uint8_t msg[LABEL_LEN + 8 + 32];

    *why = NULL;
    if (msv_mlskeys_leaf_credential(leaf->raw, leaf->raw_len, &identity, &identity_len, &named) !=
        MSV_OK) {
        *why = "its credential is not a basic one";
        return MSV_ERR_PARSE;
    }
    if (leaf->signature_key_len != 32 || named != device_id) {
        *why = "its credential names another device";
        return MSV_ERR_AUTH;
    }
    if (msv_public_identity_verify(pub, msg, binding_message(device_id, leaf->signature_key, msg),
                                   identity + 8, identity_len - 8) != MSV_OK) {
        *why = "its signature key is not signed by the device's identity";
        return MSV_ERR_AUTH;
    }
    return MSV_OK;
}

msv_err msv_mlskeys_credential_check(const struct msv_public_identity *pub, uint64_t device_id,
                                     const uint8_t *kp, size_t kp_len, uint64_t now_s,
                                     const char **why)
{
    struct msv_mls_leaf leaf;
    msv_err err;

    *why = NULL;
    err = msv_mls_key_package_check(MSV_MLS_SUITE_X25519_AES128GCM, kp, kp_len, now_s, &leaf, why);
    return err != MSV_OK ? err : msv_mlskeys_leaf_check(pub, device_id, &leaf, why);
}

msv_err msv_mlskeys_credential_make(struct msv_client *c, uint8_t sig_seed[32],
                                    uint8_t identity[MSV_MLSKEYS_IDENTITY_MAX],
                                    size_t *identity_len)
{
    uint8_t sig_pub[32], sig_sk[64], msg[LABEL_LEN + 8 + 32];
    size_t sig_len = 0;
    msv_err err;

    randombytes_buf(sig_seed, 32);
    crypto_sign_seed_keypair(sig_pub, sig_sk, sig_seed);
    sodium_memzero(sig_sk, sizeof(sig_sk));
    msv_put_u64be(identity, c->device_id);
    err = msv_identity_sign(c->id, msg, binding_message(c->device_id, sig_pub, msg), identity + 8,
                            &sig_len);
    *identity_len = 8 + sig_len;
    if (err != MSV_OK)
        sodium_memzero(sig_seed, 32);
    return err;
}

/* Makes one KeyPackage and keeps its private part; *out (free()) is the MLSMessage. */
static msv_err make_one(struct msv_client *c, int last_resort, uint64_t now_s, uint8_t **out,
                        size_t *out_len)
{
    uint8_t *rec = sodium_malloc(RECORD_LEN + MSV_MLSKEYS_KP_MAX), ref[MSV_MLS_NH];
    uint8_t identity[MSV_MLSKEYS_IDENTITY_MAX];
    size_t identity_len = 0;
    char key[8 + 2 * MSV_MLS_NH];
    msv_err err;

    *out = NULL;
    if (rec == NULL)
        return MSV_ERR_NOMEM;
    rec[0] = (uint8_t)(last_resort ? 1 : 0);
    msv_put_u64be(rec + 1, now_s + LIFETIME_S);
    err = msv_mlskeys_credential_make(c, rec + 9, identity, &identity_len);
    if (err == MSV_OK)
        err = msv_mls_key_package_make(MSV_MLS_SUITE_X25519_AES128GCM, rec + 9, identity,
                                       identity_len, now_s - SKEW_S, now_s + LIFETIME_S, rec + 41,
                                       rec + 73, out, out_len);
    if (err == MSV_OK && (*out_len <= 4 || *out_len > MSV_MLSKEYS_KP_MAX))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) /* KeyPackageRef: of the KeyPackage, without the MLSMessage header */
        err = msv_mls_ref_hash((const uint8_t *)"MLS 1.0 KeyPackage Reference", 28, *out + 4,
                               *out_len - 4, ref);
    if (err == MSV_OK)
        err = record_name(ref, key);
    if (err == MSV_OK) { /* the KeyPackage itself follows: joining from a Welcome needs it */
        memcpy(rec + RECORD_LEN, *out, *out_len);
        err = msv_client_db_set(c->db, key, rec, RECORD_LEN + *out_len);
    }
    sodium_free(rec);
    if (err != MSV_OK) {
        free(*out);
        *out = NULL;
    }
    return err;
}

msv_err msv_mlskeys_for_welcome(struct msv_client *c, const uint8_t *welcome, size_t welcome_len,
                                struct msv_mlskeys_private *out)
{
    struct msv_setting *s = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_settings(c->db, PREFIX, SIZE_MAX, &s, &n);

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint8_t ref[MSV_MLS_NH];
        size_t len = 0;

        /* a Welcome names each new member by its KeyPackageRef (RFC 9420 12.4.3.1); the join
         * checks the rest */
        if (s[i].len <= RECORD_LEN || s[i].len > RECORD_LEN + MSV_MLSKEYS_KP_MAX ||
            msv_hex_decode(s[i].key + 7, ref, sizeof(ref), &len) != MSV_OK || len != sizeof(ref) ||
            memmem(welcome, welcome_len, ref, sizeof(ref)) == NULL)
            continue;
        if ((out->key_package = malloc(s[i].len - RECORD_LEN)) == NULL) {
            err = MSV_ERR_NOMEM;
            break;
        }
        out->last_resort = s[i].value[0] & 1;
        memcpy(out->sig_seed, s[i].value + 9, 32);
        memcpy(out->init_sk, s[i].value + 41, 32);
        memcpy(out->leaf_sk, s[i].value + 73, 32);
        memcpy(out->key_package, s[i].value + RECORD_LEN, s[i].len - RECORD_LEN);
        out->key_package_len = s[i].len - RECORD_LEN;
        snprintf(out->name, sizeof(out->name), "%s", s[i].key);
        msv_settings_free(s, n);
        return MSV_OK;
    }
    msv_settings_free(s, n);
    return err == MSV_OK ? MSV_ERR_NOT_FOUND : err;
}

void msv_mlskeys_private_clear(struct msv_mlskeys_private *k)
{
    free(k->key_package);
    sodium_memzero(k, sizeof(*k));
}

struct kept {
    char *key;
    uint64_t not_after;
};

static int older_first(const void *a, const void *b)
{
    const struct kept *x = a, *y = b;

    return x->not_after < y->not_after ? -1 : x->not_after > y->not_after;
}

/* Forgets the oldest of n kept private parts (sorted here) until at most max are left. */
static msv_err keep_newest(struct msv_client *c, struct kept *k, size_t n, size_t max)
{
    msv_err err = MSV_OK;

    if (n > 1) /* none kept: k may be NULL */
        qsort(k, n, sizeof(*k), older_first);
    for (size_t i = 0; err == MSV_OK && i + max < n; i++)
        err = msv_client_db_unset(c->db, k[i].key);
    return err;
}

/*
 * Forgets private parts whose KeyPackage's lifetime ended more than KEEP_AFTER_S ago, and
 * makes room: at most MSV_MLSKEYS_KEPT_MAX - 2 ordinary ones once adding more are made (the
 * oldest forgotten first: private parts of uploads that got no answer could pile up
 * otherwise), and at most one last-resort one before a new one is made (so two at most: the
 * one in use and the one before, for Welcomes on their way). A Welcome naming a forgotten one
 * is recorded as unreadable, as any other. *renew: set if no last-resort one has more than
 * LAST_RESORT_RENEW_S to go.
 */
static msv_err expire(struct msv_client *c, uint64_t now_s, size_t adding, int new_last, int *renew)
{
    struct msv_setting *s = NULL;
    struct kept *others = NULL, *lasts = NULL;
    size_t n = 0, n_others = 0, n_last = 0;
    msv_err err = msv_client_db_settings(c->db, PREFIX, SIZE_MAX, &s, &n);

    *renew = 1;
    if (err == MSV_OK && n > 0 &&
        ((others = calloc(n, sizeof(*others))) == NULL ||
         (lasts = calloc(n, sizeof(*lasts))) == NULL))
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint64_t not_after = s[i].len >= RECORD_LEN ? msv_get_u64be(s[i].value + 1) : 0;

        if (not_after + KEEP_AFTER_S <= now_s) {
            err = msv_client_db_unset(c->db, s[i].key);
        } else if (s[i].value[0] & 1) {
            lasts[n_last++] = (struct kept){s[i].key, not_after};
            if (not_after > now_s + LAST_RESORT_RENEW_S)
                *renew = 0;
        } else {
            others[n_others++] = (struct kept){s[i].key, not_after};
        }
    }
    if (err == MSV_OK)
        err =
            keep_newest(c, others, n_others,
                        adding < MSV_MLSKEYS_KEPT_MAX - 2 ? MSV_MLSKEYS_KEPT_MAX - 2 - adding : 0);
    if (err == MSV_OK && (new_last || *renew))
        err = keep_newest(c, lasts, n_last, 1);
    free(others);
    free(lasts);
    msv_settings_free(s, n);
    return err;
}

msv_err msv_mlskeys_publish(struct msv_client *c)
{
    struct msv_mls_kp_counts held = {0};
    uint8_t *kps[MSV_MLSKEYS_TARGET] = {0}, *last = NULL, when[8];
    size_t lens[MSV_MLSKEYS_TARGET] = {0}, last_len = 0, n = 0;
    uint64_t now_s = (uint64_t)(msv_wall_ms() / 1000);
    int renew = 0, replace;
    msv_err err;

    if (c->device_id == 0)
        return MSV_OK;
    err = msv_request_mls_key_packages(c->conn, NULL, NULL, 0, NULL, 0, 0, TIMEOUT_MS, &held,
                                       &c->why);
    /* the server drops no KeyPackage whose lifetime ended, and one restored from a backup has
     * no private parts: all of them replaced, in time, and after a restore */
    replace = now_s >= client_counter(c, RENEW_BY); /* when all are replaced by (0: now) */
    if (err == MSV_OK && (replace || held.left < MSV_MLSKEYS_LOW))
        n = replace ? MSV_MLSKEYS_TARGET : MSV_MLSKEYS_TARGET - held.left;
    if (err == MSV_OK)
        err = expire(c, now_s, n, replace || !held.has_last_resort, &renew);
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = make_one(c, 0, now_s, &kps[i], &lens[i]);
    if (err == MSV_OK && (replace || !held.has_last_resort || renew))
        err = make_one(c, 1, now_s, &last, &last_len);
    if (err == MSV_OK && (n > 0 || last != NULL))
        err = msv_request_mls_key_packages(c->conn, (const uint8_t *const *)kps, lens, n, last,
                                           last_len, replace, TIMEOUT_MS, &held, &c->why);
    if (err == MSV_OK && replace) {
        msv_put_u64be(when, now_s + LIFETIME_S - RENEW_BEFORE_S);
        err = msv_client_db_set(c->db, RENEW_BY, when, sizeof(when));
    }
    if (err == MSV_OK && replace)
        err = msv_client_db_unset(c->db, RENEW_BY_BEFORE);
    for (size_t i = 0; i < n; i++)
        free(kps[i]);
    free(last);
    return err;
}

msv_err msv_mlskeys_strip_backup_copy(struct msv_client_db *copy)
{
    msv_err err = msv_client_db_unset_prefix(copy, PREFIX);

    /* a restored device publishes all new ones, replacing those the server holds */
    if (err == MSV_OK)
        err = msv_client_db_unset(copy, RENEW_BY);
    /* nor its groups' MLS states (mlsgroups.c): an old epoch's secrets would read again what
     * followed it; nor what a message gave while it was being taken (MSV_MLS_GAVE_PREFIX: the
     * message itself is in the copy once stored, and a disappearing one must not be) */
    static const char *const stripped[] = {
        "mls-group:",        "mls-refound:", "mls-updated:",   "mls-sent:",       "mls-behind:",
        "mls-founded:",      "mls-follow:",  "mls-lost:",      "mls-rejoin:",     "mls-full-said:",
        "mls-taken:",        "mls-refused:", "mls-joined:",    "mls-own-commit:", "mls-welcome:",
        "mls-kept-welcome:", "mls-leave:",   "mls-gen-taken:", "mls-key-by:",     "mls-members-at:",
        MSV_MLS_GAVE_PREFIX};

    for (size_t i = 0; err == MSV_OK && i < sizeof(stripped) / sizeof(stripped[0]); i++)
        err = msv_client_db_unset_prefix(copy, stripped[i]);
    return err;
}
