/*
 * The ML-KEM-768 prekeys of a device whose identity says post-quantum
 * (docs/crypto.md, "Post-quantum sessions"): publishing and refilling them,
 * and their secrets for answering hybrid first messages.
 *
 * Settings used: "kem-prekey:<id>" (u8 last_resort || the 2400-byte
 * decapsulation key, which holds the encapsulation key), "kem-last-resort"
 * (u32be id of the last-resort one in use), "kem-last-resort-old" (u32be id of
 * the one before, kept for first messages still on their way),
 * "kem-last-resort-pending" (u32be id of one uploaded without an answer yet:
 * the server may hold it). Only these three last-resort secrets open anything,
 * and no other is kept (erase_stray_last_resort).
 * Ids come from the same counter as X25519 prekeys ("prekey-next"), so they
 * are never reused and only grow.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/client.h"
#include "client/internal.h"
#include "client/requests.h"
#include "client/sessions.h"
#include "missive/mlkem.h"
#include "missive/ratchet.h"
#include "missive/util.h"
#include "util/endian.h"

#define TIMEOUT_MS 15000
#define SECRET_LEN (1 + MSV_MLKEM768_DK_LEN)
#define EK_OFFSET 1152 /* FIPS 203: dk = dk_PKE (384 k) || ek || H(ek) || z */

static void kem_name(uint32_t id, char key[40])
{
    snprintf(key, 40, "kem-prekey:%u", id);
}

void msv_pqkeys_name(uint32_t id, char key[40])
{
    kem_name(id, key);
}

static msv_err store_kem(struct msv_client *c, const struct msv_kem_prekey *k)
{
    uint8_t *v = sodium_malloc(SECRET_LEN);
    char key[40];
    msv_err err;

    if (v == NULL)
        return MSV_ERR_NOMEM;
    v[0] = (uint8_t)k->last_resort;
    memcpy(v + 1, k->dk, MSV_MLKEM768_DK_LEN);
    kem_name(k->id, key);
    err = msv_client_db_set(c->db, key, v, SECRET_LEN);
    sodium_free(v);
    return err;
}

msv_err msv_pqkeys_load(struct msv_client *c, uint32_t id, struct msv_kem_prekey *k)
{
    char key[40];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    kem_name(id, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && (len != SECRET_LEN || v[0] > 1))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        k->id = id;
        k->last_resort = v[0];
        memcpy(k->dk, v + 1, MSV_MLKEM768_DK_LEN);
        memcpy(k->ek, k->dk + EK_OFFSET, MSV_MLKEM768_EK_LEN);
    }
    msv_secret_free(v, len);
    return err;
}

msv_err msv_pqkeys_load_usable(struct msv_client *c, uint32_t id, struct msv_kem_prekey *k)
{
    msv_err err = msv_pqkeys_load(c, id, k);

    /* a last-resort secret kept from an upload the server refused, or replaced twice since,
     * opens nothing: only what the server may hand out (or did within a rotation) */
    if (err == MSV_OK && k->last_resort && id != client_setting_u32(c->db, "kem-last-resort") &&
        id != client_setting_u32(c->db, "kem-last-resort-old") &&
        id != client_setting_u32(c->db, "kem-last-resort-pending")) {
        sodium_memzero(k, sizeof(*k));
        err = MSV_ERR_NOT_FOUND;
    }
    return err;
}

msv_err msv_pqkeys_used(struct msv_client *c, uint32_t id)
{
    struct msv_kem_prekey *k = sodium_malloc(sizeof(*k));
    char key[40];
    msv_err err;

    if (k == NULL)
        return MSV_ERR_NOMEM;
    err = msv_pqkeys_load(c, id, k);
    kem_name(id, key);
    /* forward secrecy: a one-time key's secret goes once a message made with it is stored */
    if (err == MSV_OK && !k->last_resort)
        err = msv_client_db_unset(c->db, key);
    else if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    sodium_free(k);
    return err;
}

/*
 * The setting name of the KEM prekey whose id the setting which ("kem-last-resort",
 * "kem-last-resort-old") holds; MSV_ERR_NOT_FOUND when it holds none.
 */
static msv_err last_resort_name(struct msv_client_db *db, const char *which, char name[40])
{
    uint8_t *v = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_get(db, which, &v, &n);

    if (err == MSV_OK && n != 4)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        kem_name(msv_get_u32be(v), name);
    free(v);
    return err;
}

/*
 * Reads the secret of the last-resort KEM prekey whose id the setting which names
 * (*secret NULL and MSV_OK when there is none).
 */
static msv_err kept_secret(struct msv_client_db *copy, const char *which, char name[40],
                           uint8_t **secret, size_t *len)
{
    msv_err err = last_resort_name(copy, which, name);

    *secret = NULL;
    if (err == MSV_OK)
        err = msv_client_db_get(copy, name, secret, len);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/*
 * A backup keeps the last-resort KEM secrets (the one in use, the one before and a pending
 * one), as it
 * keeps the identity key: senders seal to them for days (docs/crypto.md, "Hybrid sealed
 * sender"), and a restored device that lacked them could open none of what they sealed. The
 * one-time ones are left out, as X25519 one-time prekeys are.
 */
msv_err msv_pqkeys_strip_backup_copy(struct msv_client_db *copy)
{
    static const char *const which[3] = {"kem-last-resort", "kem-last-resort-old",
                                         "kem-last-resort-pending"};
    char names[3][40];
    uint8_t *secrets[3] = {NULL, NULL, NULL};
    size_t lens[3] = {0, 0, 0};
    msv_err err = MSV_OK;

    for (int i = 0; err == MSV_OK && i < 3; i++)
        err = kept_secret(copy, which[i], names[i], &secrets[i], &lens[i]);
    if (err == MSV_OK)
        err = msv_client_db_unset_prefix(copy, "kem-prekey:");
    for (int i = 0; i < 3; i++) {
        if (err == MSV_OK && secrets[i] != NULL)
            err = msv_client_db_set(copy, names[i], secrets[i], lens[i]);
        if (secrets[i] != NULL)
            sodium_memzero(secrets[i], lens[i]);
        free(secrets[i]);
    }
    return err;
}

static msv_err set_id(struct msv_client_db *db, const char *which, uint32_t id)
{
    uint8_t v[4];

    msv_put_u32be(v, id);
    return msv_client_db_set(db, which, v, 4);
}

/* Makes, stores and signs n KEM prekeys with ids from first on. */
static msv_err make_kems(struct msv_client *c, uint32_t first, int last_resort,
                         struct msv_kem_prekey *keys, uint8_t (*sigs)[64], size_t n)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = msv_kem_prekey_generate(c->id, first + (uint32_t)i, last_resort, &keys[i], sigs[i]);
        if (err == MSV_OK)
            err = store_kem(c, &keys[i]);
    }
    return err;
}

/*
 * A new last-resort key is in use at the server: the one before it keeps its
 * secret for first messages on their way, the one before that loses it.
 */
static msv_err last_resort_replaced(struct msv_client *c, uint32_t id)
{
    uint8_t *v = NULL;
    size_t len = 0;
    char key[40];
    msv_err err = MSV_OK;

    if (id == client_setting_u32(c->db, "kem-last-resort"))
        return MSV_OK; /* recorded already (a publish that stopped before it cleared pending) */
    if (last_resort_name(c->db, "kem-last-resort-old", key) == MSV_OK)
        err = msv_client_db_unset(c->db, key);
    if (err == MSV_OK && msv_client_db_get(c->db, "kem-last-resort", &v, &len) == MSV_OK &&
        len == 4)
        err = msv_client_db_set(c->db, "kem-last-resort-old", v, 4);
    free(v);
    return err == MSV_OK ? set_id(c->db, "kem-last-resort", id) : err;
}

/* The KEM part of one upload (keys and signatures in guarded memory: the secrets). */
struct msv_kem_batch {
    struct msv_kem_prekey keys[MSV_KEM_PREKEYS_BATCH + 1]; /* the last-resort one last */
    uint8_t sigs[MSV_KEM_PREKEYS_BATCH + 1][64];
};

void msv_pqkeys_batch_free(struct msv_kem_batch *b)
{
    if (b != NULL)
        sodium_free(b);
}

msv_err msv_pqkeys_prepare(struct msv_client *c, int rotate, int replace,
                           const struct msv_prekey_counts *held, struct msv_kem_batch **out,
                           struct msv_prekey_set *set)
{
    struct msv_kem_batch *b = NULL;
    uint32_t first = 0;
    size_t n = 0;
    msv_err err;

    if (!msv_public_identity_is_pq(msv_identity_public(c->id)))
        return MSV_OK;
    /* a new device carries its last-resort one only (held NULL); one-time ones follow */
    rotate = rotate || held == NULL || !held->has_kem_last_resort;
    if (held != NULL && (replace || held->kem_one_time_left < MSV_KEM_PREKEYS_LOW))
        n = replace ? MSV_KEM_PREKEYS_BATCH : MSV_KEM_PREKEYS_BATCH - held->kem_one_time_left;
    if (n == 0 && !rotate)
        return MSV_OK;
    b = sodium_malloc(sizeof(*b));
    if (b == NULL)
        return MSV_ERR_NOMEM;
    err = msv_sessions_take_prekey_ids(c->db, (uint32_t)n + 1, &first);
    if (err == MSV_OK)
        err = make_kems(c, first, 0, b->keys, b->sigs, n);
    if (err == MSV_OK && rotate)
        err = make_kems(c, first + (uint32_t)n, 1, &b->keys[n], &b->sigs[n], 1);
    /* from here until the upload's answer, the server may hold it */
    if (err == MSV_OK && rotate)
        err = set_id(c->db, "kem-last-resort-pending", first + (uint32_t)n);
    if (err != MSV_OK) {
        sodium_free(b);
        return err;
    }
    set->kem_one_time = b->keys;
    set->kem_sigs = (const uint8_t(*)[64])b->sigs;
    set->n_kem_one_time = n;
    set->kem_last_resort = rotate ? &b->keys[n] : NULL;
    set->kem_last_resort_sig = rotate ? b->sigs[n] : NULL;
    *out = b;
    return MSV_OK;
}

msv_err msv_pqkeys_uploaded(struct msv_client *c, const struct msv_prekey_set *set)
{
    msv_err err = MSV_OK;

    if (set->kem_last_resort != NULL)
        err = last_resort_replaced(c, set->kem_last_resort->id);
    return err == MSV_OK && set->kem_last_resort != NULL
               ? msv_client_db_unset(c->db, "kem-last-resort-pending")
               : err;
}

msv_err msv_pqkeys_refused(struct msv_client *c, const struct msv_prekey_set *set)
{
    char key[40];
    msv_err err = MSV_OK;

    /* never published: their secrets go */
    for (size_t i = 0; err == MSV_OK && i < set->n_kem_one_time; i++) {
        kem_name(set->kem_one_time[i].id, key);
        err = msv_client_db_unset(c->db, key);
    }
    if (err == MSV_OK && set->kem_last_resort != NULL) {
        kem_name(set->kem_last_resort->id, key);
        err = msv_client_db_unset(c->db, key);
        if (err == MSV_OK)
            err = msv_client_db_unset(c->db, "kem-last-resort-pending");
    }
    return err;
}

#define STRAY_SCAN_MAX 4096 /* settings read per sweep: more wait for the next connection */

/*
 * Erases every last-resort KEM secret but the one in use, the one before and a pending one. Such
 * a secret opens nothing (msv_pqkeys_load_usable), and none should be left: one is kept from an
 * upload that failed under an earlier version, or when a process stopped between making a key
 * and recording it as pending.
 */
static msv_err erase_stray_last_resort(struct msv_client *c)
{
    uint32_t keep[3] = {client_setting_u32(c->db, "kem-last-resort"),
                        client_setting_u32(c->db, "kem-last-resort-old"),
                        client_setting_u32(c->db, "kem-last-resort-pending")};
    struct msv_setting *all = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_settings(c->db, "kem-prekey:", STRAY_SCAN_MAX, &all, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint32_t id = (uint32_t)strtoul(all[i].key + strlen("kem-prekey:"), NULL, 10);

        if (all[i].len != SECRET_LEN || all[i].value[0] != 1 || id == keep[0] || id == keep[1] ||
            id == keep[2])
            continue;
        err = msv_client_db_unset(c->db, all[i].key);
    }
    for (size_t i = 0; i < n; i++)
        sodium_memzero(all[i].value, all[i].len);
    msv_settings_free(all, n);
    return err;
}

msv_err msv_pqkeys_reconcile(struct msv_client *c, uint32_t held, int has, int *stale)
{
    uint32_t pending = client_setting_u32(c->db, "kem-last-resort-pending");
    char key[40];
    msv_err err = MSV_OK;

    if (!msv_public_identity_is_pq(msv_identity_public(c->id)) || (has && held == 0))
        return MSV_OK; /* nothing of the kind, or a server that does not say which it holds */
    /* an upload whose answer was lost put it in use */
    if (pending != 0 && held == pending)
        err = last_resort_replaced(c, held);
    if (err == MSV_OK && pending != 0 && pending != held) {
        /* the upload that carried it never arrived: its secret goes */
        kem_name(pending, key);
        err = msv_client_db_unset(c->db, key);
    }
    if (err == MSV_OK && pending != 0)
        err = msv_client_db_unset(c->db, "kem-last-resort-pending");
    if (err == MSV_OK && held != 0 && held != client_setting_u32(c->db, "kem-last-resort"))
        *stale = 1;
    return err == MSV_OK ? erase_stray_last_resort(c) : err;
}
