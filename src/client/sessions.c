/*
 * Sessions, prekeys and the delivery token of a device (client/sessions.h).
 *
 * Settings used: "session:<device>" and "session-prev:<device>" (stored
 * sessions), "prekey:<id>" (secret || public of a prekey), "prekey-next"
 * (u32be, the next prekey id), "signed-prekey" (u32be id || u64be ms since
 * it is in use), "signed-prekey-old" (u32be id of the one before),
 * "profile-key", "token-published", "profile:<handle>" (the profile key a
 * handle's device sent).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/client.h"
#include "client/sessions.h"
#include "crypto/internal.h"
#include "missive/ratchet.h"
#include "missive/util.h"
#include "util/endian.h"

#define TIMEOUT_MS 15000
#define CLAIM_MAX 64

static const char token_context[] = "MSV-delivery-token-v1";

static void session_key(const char *kind, uint64_t device_id, char key[48])
{
    snprintf(key, 48, "%s:%llu", kind, (unsigned long long)device_id);
}

static msv_err load_session(struct msv_client *c, const char *kind, uint64_t device_id,
                            struct msv_session **out)
{
    char key[48];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    session_key(kind, device_id, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK)
        err = msv_session_import(v, len, out);
    msv_secret_free(v, len);
    return err;
}

static msv_err store_session(struct msv_client *c, const char *kind, uint64_t device_id,
                             const struct msv_session *s)
{
    char key[48];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_session_export(s, &v, &len);

    session_key(kind, device_id, key);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, key, v, len);
    msv_secret_free(v, len);
    return err;
}

/* ---- prekeys ------------------------------------------------------------------------------ */

static void prekey_name(uint32_t id, char key[32])
{
    snprintf(key, 32, "prekey:%u", id);
}

static msv_err store_prekey(struct msv_client *c, const struct msv_prekey *k)
{
    uint8_t v[64];
    char key[32];
    msv_err err;

    memcpy(v, k->sk, 32);
    memcpy(v + 32, k->pk, 32);
    prekey_name(k->id, key);
    err = msv_client_db_set(c->db, key, v, sizeof(v));
    sodium_memzero(v, sizeof(v));
    return err;
}

static msv_err load_prekey(struct msv_client *c, uint32_t id, struct msv_prekey *k)
{
    char key[32];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    prekey_name(id, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && len != 64)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        k->id = id;
        memcpy(k->sk, v, 32);
        memcpy(k->pk, v + 32, 32);
    }
    msv_secret_free(v, len);
    return err;
}

/* Moves the next prekey id count further; *first: the id it was (ids are never reused). */
static msv_err take_prekey_ids(struct msv_client_db *db, uint32_t count, uint32_t *first)
{
    uint8_t *v = NULL, out[4];
    size_t len = 0;
    uint32_t next = 1;
    msv_err err = msv_client_db_get(db, "prekey-next", &v, &len);

    if (err == MSV_OK && len == 4)
        next = msv_get_u32be(v);
    free(v);
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    if (next > UINT32_MAX - count)
        return MSV_ERR_TOO_BIG;
    *first = next;
    next += count;
    msv_put_u32be(out, next);
    return msv_client_db_set(db, "prekey-next", out, 4);
}

msv_err msv_sessions_strip_backup_copy(struct msv_client_db *copy)
{
    uint32_t skipped;
    msv_err err = msv_client_db_unset_prefix(copy, "prekey:");

    if (err == MSV_OK)
        err = msv_client_db_unset(copy, "signed-prekey");
    if (err == MSV_OK)
        err = msv_client_db_unset(copy, "signed-prekey-old");
    if (err == MSV_OK)
        err = take_prekey_ids(copy, MSV_PREKEY_RESTORE_GAP, &skipped);
    if (err == MSV_OK)
        err = msv_client_db_set(copy, MSV_PREKEYS_RESTORED, "1", 1);
    return err;
}

/* Makes and stores n prekeys (the first one signed if sig is not NULL). */
static msv_err make_prekeys(struct msv_client *c, struct msv_prekey *keys, size_t n,
                            uint8_t sig[64])
{
    uint32_t first = 0;
    msv_err err = take_prekey_ids(c->db, (uint32_t)n, &first);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = msv_prekey_generate(c->id, first + (uint32_t)i, &keys[i], i == 0 ? sig : NULL);
        if (err == MSV_OK)
            err = store_prekey(c, &keys[i]);
    }
    return err;
}

msv_err msv_sessions_profile_key(struct msv_client *c, uint8_t key[MSV_PROFILE_KEY_LEN])
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, "profile-key", &v, &len);

    if (err == MSV_OK && len == MSV_PROFILE_KEY_LEN)
        memcpy(key, v, MSV_PROFILE_KEY_LEN);
    msv_secret_free(v, len);
    if (err == MSV_OK && len == MSV_PROFILE_KEY_LEN)
        return MSV_OK;
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    msv_random_bytes(key, MSV_PROFILE_KEY_LEN);
    return msv_client_db_set(c->db, "profile-key", key, MSV_PROFILE_KEY_LEN);
}

void msv_sessions_delivery_token(const uint8_t key[MSV_PROFILE_KEY_LEN], uint8_t token[16])
{
    uint8_t mac[32];
    const uint8_t *parts[1] = {(const uint8_t *)token_context};
    size_t lens[1] = {sizeof(token_context) - 1};

    if (msv_hmac_sha256_parts(key, MSV_PROFILE_KEY_LEN, parts, lens, 1, mac) != MSV_OK)
        msv_random_bytes(mac, sizeof(mac)); /* a token nobody knows: sealed sends just fail */
    memcpy(token, mac, 16);
    sodium_memzero(mac, sizeof(mac));
}

static void profile_name(const char *handle, char *key, size_t len)
{
    snprintf(key, len, "profile:%s", handle);
}

msv_err msv_sessions_token_for(struct msv_client *c, const char *handle, uint8_t token[16])
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    profile_name(handle, key, sizeof(key));
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && len != MSV_PROFILE_KEY_LEN)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        msv_sessions_delivery_token(v, token);
    msv_secret_free(v, len);
    return err;
}

msv_err msv_sessions_learn_profile(struct msv_client *c, const char *handle, const uint8_t *key)
{
    char name[300];

    profile_name(handle, name, sizeof(name));
    if (key == NULL)
        return msv_client_db_unset(c->db, name);
    return msv_client_db_set(c->db, name, key, MSV_PROFILE_KEY_LEN);
}

/* The signed prekey in use ("signed-prekey": u32be id || u64be since, ms), 0 if none. */
static uint32_t signed_prekey(struct msv_client *c, int64_t *since)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint32_t id = 0;

    *since = 0;
    if (msv_client_db_get(c->db, "signed-prekey", &v, &len) == MSV_OK && len == 12) {
        id = msv_get_u32be(v);
        *since = (int64_t)msv_get_u64be(v + 4);
    }
    free(v);
    return id;
}

/*
 * A new signed prekey is in use at the server: the one before it becomes
 * the previous (its secret still opens first messages made with it), and
 * the previous one's secret goes (forward secrecy for sessions it began).
 */
static msv_err signed_prekey_replaced(struct msv_client *c, uint32_t id, int64_t now)
{
    int64_t since;
    uint32_t current = signed_prekey(c, &since);
    uint8_t *v = NULL, rec[12];
    size_t len = 0;
    char key[32];
    msv_err err = MSV_OK;

    if (msv_client_db_get(c->db, "signed-prekey-old", &v, &len) == MSV_OK && len == 4) {
        prekey_name(msv_get_u32be(v), key);
        err = msv_client_db_unset(c->db, key);
    }
    free(v);
    msv_put_u32be(rec, current);
    if (err == MSV_OK && current != 0)
        err = msv_client_db_set(c->db, "signed-prekey-old", rec, 4);
    msv_put_u32be(rec, id);
    msv_put_u64be(rec + 4, (uint64_t)now);
    return err == MSV_OK ? msv_client_db_set(c->db, "signed-prekey", rec, sizeof(rec)) : err;
}

msv_err msv_sessions_publish(struct msv_client *c)
{
    struct msv_prekey keys[MSV_PREKEYS_BATCH], spk;
    uint8_t sig[64], profile[MSV_PROFILE_KEY_LEN], token[16], *flag = NULL;
    uint32_t left = 0;
    int has_signed = 0, rotate, replace;
    int64_t now = msv_wall_ms(), since = 0;
    size_t flag_len = 0, n = 0;
    msv_err err;

    if (!(msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return MSV_OK;
    err = msv_request_prekey_upload(c->conn, NULL, NULL, NULL, 0, 0, TIMEOUT_MS, &left, &has_signed,
                                    &c->why);
    /* restored from a backup, which holds no prekey secrets: all new ones, under new ids */
    replace = msv_client_db_get(c->db, MSV_PREKEYS_RESTORED, &flag, &flag_len) == MSV_OK;
    free(flag);
    flag = NULL;
    /* a new signed prekey when the server has none, or the one in use is a week old */
    rotate = replace || !has_signed || signed_prekey(c, &since) == 0 ||
             now - since > MSV_SIGNED_PREKEY_AGE_MS;
    if (err == MSV_OK && (replace || left < MSV_PREKEYS_LOW))
        n = replace ? MSV_PREKEYS_BATCH : MSV_PREKEYS_BATCH - left;
    if (err == MSV_OK && rotate)
        err = make_prekeys(c, &spk, 1, sig);
    if (err == MSV_OK && n > 0)
        err = make_prekeys(c, keys, n, NULL);
    if (err == MSV_OK && (rotate || n > 0))
        err = msv_request_prekey_upload(c->conn, rotate ? &spk : NULL, sig, keys, n, replace,
                                        TIMEOUT_MS, &left, &has_signed, &c->why);
    if (err == MSV_OK && rotate)
        err = signed_prekey_replaced(c, spk.id, now);
    if (err == MSV_OK && replace)
        err = msv_client_db_unset(c->db, MSV_PREKEYS_RESTORED);
    sodium_memzero(keys, sizeof(keys));
    sodium_memzero(&spk, sizeof(spk));
    if (err == MSV_OK && msv_client_db_get(c->db, "token-published", &flag, &flag_len) != MSV_OK) {
        err = msv_sessions_profile_key(c, profile);
        msv_sessions_delivery_token(profile, token);
        if (err == MSV_OK)
            err = msv_request_set_delivery_token(c->conn, token, TIMEOUT_MS, &c->why);
        if (err == MSV_OK)
            err = msv_client_db_set(c->db, "token-published", "1", 1);
        sodium_memzero(profile, sizeof(profile));
    }
    free(flag);
    return err;
}

/* ---- sending ------------------------------------------------------------------------------ */

static int speaks_modern(unsigned suites)
{
    return (suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) != 0;
}

static int wants_session(const struct msv_client *c, const Msv__Wire__DeviceInfo *d)
{
    return d->device_id != c->device_id && speaks_modern(msv_identity_suites(c->id)) &&
           speaks_modern(msv_identity_suites_of(d->identity.data, d->identity.len));
}

/* Starts a session from one claimed bundle, checked against the listed identity. */
static msv_err start_session(struct msv_client *c, const Msv__Wire__DeviceInfo *d,
                             const Msv__Wire__PrekeyBundle *b)
{
    struct msv_prekey_bundle bundle = {0};
    struct msv_public_identity *pub = NULL;
    struct msv_session *s = NULL;
    msv_err err;

    if (b->signed_ == NULL || b->signed_->key.len != 32 || b->signed_->signature.len != 64 ||
        (b->one_time != NULL && (b->one_time->key.len != 32 || b->one_time->id == 0)))
        return MSV_ERR_PARSE;
    bundle.signed_id = b->signed_->id;
    memcpy(bundle.signed_pk, b->signed_->key.data, 32);
    memcpy(bundle.signed_sig, b->signed_->signature.data, 64);
    if (b->one_time != NULL) {
        bundle.one_time_id = b->one_time->id;
        memcpy(bundle.one_time_pk, b->one_time->key.data, 32);
    }
    err = msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                    &pub);
    if (err == MSV_OK)
        err = msv_session_initiate(c->id, pub, &bundle, &s);
    if (err == MSV_OK)
        err = store_session(c, "session", d->device_id, s);
    msv_session_free(s);
    msv_public_identity_free(pub);
    return err;
}

msv_err msv_sessions_prepare(struct msv_client *c, Msv__Wire__HandleDevices *const *hds, size_t n)
{
    size_t total = 0, n_need = 0;
    const Msv__Wire__DeviceInfo **need;
    uint64_t *ids;
    msv_err err = MSV_OK;

    for (size_t i = 0; i < n; i++)
        total += hds[i]->n_devices;
    need = calloc(total + 1, sizeof(*need));
    ids = calloc(total + 1, sizeof(*ids));
    if (need == NULL || ids == NULL) {
        free(need);
        free(ids);
        return MSV_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < hds[i]->n_devices; k++) {
            const Msv__Wire__DeviceInfo *d = hds[i]->devices[k];
            struct msv_session *s = NULL;

            if (!wants_session(c, d))
                continue;
            if (load_session(c, "session", d->device_id, &s) == MSV_OK) {
                msv_session_free(s);
                continue;
            }
            need[n_need] = d;
            ids[n_need++] = d->device_id;
        }
    }
    for (size_t at = 0; at < n_need && err == MSV_OK; at += CLAIM_MAX) {
        size_t batch = n_need - at < CLAIM_MAX ? n_need - at : CLAIM_MAX;
        msv_frame *got = NULL;

        err = msv_request_prekey_claim(c->conn, ids + at, batch, TIMEOUT_MS, &got, &c->why);
        if (err != MSV_OK && err != MSV_ERR_IO && err != MSV_ERR_NOMEM) {
            /* refused (claiming too fast, say): these devices get the suite's envelope */
            memset(&c->why, 0, sizeof(c->why));
            err = MSV_OK;
            continue;
        }
        for (size_t b = 0; err == MSV_OK && b < got->prekey_bundles->n_bundles; b++) {
            const Msv__Wire__PrekeyBundle *bundle = got->prekey_bundles->bundles[b];

            /* a bundle that does not verify is dropped: that device gets the suite's envelope */
            for (size_t k = at; k < at + batch; k++) {
                if (need[k]->device_id == bundle->device_id)
                    (void)start_session(c, need[k], bundle);
            }
        }
        msv_frame_free(got);
    }
    free(need);
    free(ids);
    return err;
}

msv_err msv_sessions_seal(struct msv_client *c, uint64_t device_id,
                          const struct msv_public_identity *pub, enum msv_suite suite,
                          const uint8_t *pt, size_t len, uint8_t **out, size_t *out_len)
{
    struct msv_session *s = NULL;
    msv_err err;

    if (suite != MSV_SUITE_MODERN || load_session(c, "session", device_id, &s) != MSV_OK)
        return msv_seal_suite(c->id, pub, suite, pt, len, out, out_len);
    err = msv_session_encrypt(s, pt, len, out, out_len);
    /* stored advanced before the envelope leaves: a message key is never used twice */
    if (err == MSV_OK)
        err = store_session(c, "session", device_id, s);
    if (err != MSV_OK && *out != NULL) {
        free(*out);
        *out = NULL;
    }
    msv_session_free(s);
    return err;
}

/* ---- receiving ---------------------------------------------------------------------------- */

int msv_sessions_is_session_message(const uint8_t *wire, size_t len)
{
    return len > 0 && (wire[0] == MSV_WIRE_RATCHET || wire[0] == MSV_WIRE_PREKEY_MSG);
}

/* A 0x06 message that starts a new session with us: the X3DH with our prekeys. */
static msv_err answer_prekey_message(struct msv_client *c, const struct msv_public_identity *pub,
                                     const uint8_t *wire, size_t len, uint8_t **pt, size_t *pt_len,
                                     struct msv_session_update *u)
{
    struct msv_prekey spk, opk;
    uint32_t spk_id, opk_id;
    uint8_t base[32];
    msv_err err = msv_prekey_message_info(wire, len, &spk_id, &opk_id, base);

    if (err != MSV_OK)
        return MSV_ERR_AUTH;
    err = load_prekey(c, spk_id, &spk);
    if (err == MSV_OK && opk_id != 0)
        err = load_prekey(c, opk_id, &opk);
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_ERR_AUTH; /* a prekey used up already, or never ours */
    if (err == MSV_OK)
        err = msv_session_respond(c->id, pub, &spk, opk_id ? &opk : NULL, wire, len, &u->s, pt,
                                  pt_len);
    if (err == MSV_OK) {
        u->is_new = 1;
        u->used_one_time = opk_id;
    }
    sodium_memzero(&spk, sizeof(spk));
    sodium_memzero(&opk, sizeof(opk));
    return err;
}

msv_err msv_sessions_open(struct msv_client *c, uint64_t device_id,
                          const struct msv_public_identity *pub, const uint8_t *wire, size_t len,
                          uint8_t **pt, size_t *pt_len, struct msv_session_update *u)
{
    static const char *const kinds[2] = {"session", "session-prev"};
    msv_err err = MSV_ERR_AUTH, got;

    memset(u, 0, sizeof(*u));
    u->device_id = device_id;
    if (!speaks_modern(msv_identity_suites(c->id)) ||
        !speaks_modern(msv_public_identity_suites(pub)))
        return MSV_ERR_AUTH;
    for (int k = 0; k < 2; k++) {
        struct msv_session *s = NULL;

        got = load_session(c, kinds[k], device_id, &s);
        if (got == MSV_ERR_NOT_FOUND)
            continue;
        if (got != MSV_OK)
            return got;
        got = msv_session_decrypt(s, wire, len, pt, pt_len);
        if (got == MSV_OK) {
            u->s = s;
            u->was_previous = k == 1;
            return MSV_OK;
        }
        msv_session_free(s);
        if (got == MSV_ERR_REPLAY || got == MSV_ERR_NOMEM)
            return got;
        err = got;
    }
    if (wire[0] == MSV_WIRE_PREKEY_MSG)
        return answer_prekey_message(c, pub, wire, len, pt, pt_len, u);
    return err == MSV_ERR_TOO_BIG ? MSV_ERR_AUTH : err;
}

msv_err msv_sessions_commit(struct msv_client *c, struct msv_session_update *u)
{
    struct msv_session *cur = NULL;
    char key[32];
    msv_err err = MSV_OK;

    if (u->s == NULL)
        return MSV_OK;
    if (u->is_new || u->was_previous) {
        /* the session in use now steps back to previous, so late messages still read */
        if (load_session(c, "session", u->device_id, &cur) == MSV_OK)
            err = store_session(c, "session-prev", u->device_id, cur);
        msv_session_free(cur);
    }
    if (err == MSV_OK)
        err = store_session(c, "session", u->device_id, u->s);
    if (err == MSV_OK && u->used_one_time != 0) {
        prekey_name(u->used_one_time, key); /* forward secrecy: the secret goes */
        err = msv_client_db_unset(c->db, key);
    }
    msv_sessions_discard(u);
    return err;
}

void msv_sessions_discard(struct msv_session_update *u)
{
    msv_session_free(u->s);
    u->s = NULL;
}

msv_err msv_sessions_forget(struct msv_client *c, uint64_t device_id)
{
    char key[48];
    msv_err err;

    session_key("session", device_id, key);
    err = msv_client_db_unset(c->db, key);
    session_key("session-prev", device_id, key);
    if (err == MSV_OK)
        err = msv_client_db_unset(c->db, key);
    return err;
}
