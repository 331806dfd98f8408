/*
 * Sessions, prekeys and the delivery token of a device (client/sessions.h).
 *
 * Settings used: "session:<device>:<peer>:<slot>" (stored sessions; see
 * msv_sessions_key()), "prekey:<id>" (secret || public of a prekey), "prekey-next"
 * (u32be, the next prekey id), "signed-prekey" (u32be id || u64be ms since
 * it is in use), "signed-prekey-old" (u32be id of the one before),
 * MSV_PROFILE_KEY_SETTING (the account's profile key, synced between its
 * devices), "token-published", "profile:<handle>" (the profile key a
 * handle's device sent), "pq-downgrade:<device>" (u64be, classical messages
 * refused in a post-quantum session with it).
 */
#define _GNU_SOURCE /* F_OFD_SETLK */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/client.h"
#include "client/internal.h"
#include "client/requests.h"
#include "client/sessions.h"
#include "crypto/internal.h"
#include "missive/mlkem.h"
#include "missive/ratchet.h"
#include "missive/util.h"
#include "util/endian.h"

#define TIMEOUT_MS 15000
#define CLAIM_MAX 64

static const char token_context[] = "MSV-delivery-token-v1";

/* ---- the session lock --------------------------------------------------------------------- */

/*
 * Every process of an account (a send, the daemon, a receive) uses its
 * sessions under one exclusive lock on "<account>/sessions.lock", held from
 * loading a session to storing it advanced: two processes that sealed with
 * the same stored session would use the same message key, and the
 * recipient could read only one of the two messages. Holds nest within one
 * client (a receipt sealed while a received message's session is held).
 */
int client_lock_file(struct msv_client *c, const char *name)
{
    char path[sizeof(c->dir) + 32];
    int fd, rc;

    snprintf(path, sizeof(path), "%s/%s", c->dir, name);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

msv_err client_lock_nested(struct msv_client *c, const char *name, int *fd, unsigned *depth)
{
    int got;

    if (*depth > 0) {
        (*depth)++;
        return MSV_OK;
    }
    got = client_lock_file(c, name);
    if (got < 0)
        return MSV_ERR_IO;
    *fd = got;
    *depth = 1;
    return MSV_OK;
}

void client_unlock_nested(int *fd, unsigned *depth)
{
    if (*depth == 0 || --*depth > 0)
        return;
    (void)flock(*fd, LOCK_UN);
    close(*fd);
    *fd = -1;
}

int client_claim_try(struct msv_client *c, const char *name, const uint8_t key[32], int wait_ms)
{
    char path[sizeof(c->dir) + 32];
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1};
    const struct timespec pause = {0, 20 * 1000 * 1000};
    int64_t until = msv_mono_ms() + wait_ms;
    int fd, rc;

    /* one byte of the file per key, at an offset of its first 7 bytes: keys are digests, so
     * two that share a byte are as likely as a collision of 56 bits */
    for (int i = 0; i < 7; i++)
        l.l_start = l.l_start << 8 | key[i];
    snprintf(path, sizeof(path), "%s/%s", c->dir, name);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    /* polled, not waited for in the kernel: a holder waiting for something the caller holds
     * (or the caller itself, through another open file) stops the wait at wait_ms */
    while ((rc = fcntl(fd, F_OFD_SETLK, &l)) != 0 &&
           (errno == EINTR || ((errno == EAGAIN || errno == EACCES) && msv_mono_ms() < until)))
        if (errno != EINTR)
            nanosleep(&pause, NULL);
    if (rc == 0)
        return fd;
    rc = errno == EAGAIN || errno == EACCES ? -2 : -1;
    close(fd);
    return rc;
}

void client_claim_release(int fd)
{
    if (fd >= 0)
        close(fd); /* an open file's own locks go with it */
}

/*
 * The account's locks are taken in one order: the session lock, then the MLS lock (a receive
 * holds the session lock and may take the MLS lock; a process holding the MLS lock seals
 * nothing pairwise and sends no outbox, account.c). Taken the other way, two processes could
 * wait for each other for good: such a taking is counted, for the tests to find.
 */
static unsigned long lock_order_breaks;

unsigned long client_lock_order_breaks(void)
{
    return lock_order_breaks;
}

static msv_err sessions_lock(struct msv_client *c)
{
    if (c->mls_lock_depth > 0 && c->session_lock_depth == 0)
        lock_order_breaks++;
    return client_lock_nested(c, "sessions.lock", &c->session_lock_fd, &c->session_lock_depth);
}

static void sessions_unlock(struct msv_client *c)
{
    client_unlock_nested(&c->session_lock_fd, &c->session_lock_depth);
}

msv_err client_sessions_hold(struct msv_client *c)
{
    return sessions_lock(c);
}

void client_sessions_release(struct msv_client *c)
{
    sessions_unlock(c);
}

void msv_sessions_key(const char *handle, uint64_t device_id, const struct msv_public_identity *pub,
                      unsigned slot, char key[MSV_SESSION_KEY_LEN])
{
    uint8_t hash[MSV_IDENTITY_HASH_LEN], peer[16];
    char hex[33];
    crypto_generichash_state st;

    msv_public_identity_hash(pub, hash);
    crypto_generichash_init(&st, NULL, 0, sizeof(peer));
    crypto_generichash_update(&st, (const uint8_t *)handle, strlen(handle) + 1);
    crypto_generichash_update(&st, hash, sizeof(hash));
    crypto_generichash_final(&st, peer, sizeof(peer));
    sodium_bin2hex(hex, sizeof(hex), peer, sizeof(peer));
    snprintf(key, MSV_SESSION_KEY_LEN, "session:%llu:%s:%u", (unsigned long long)device_id, hex,
             slot);
}

#define SLOT_KEY_LEN (MSV_SESSION_KEY_LEN + 12)

static void slot_key(const char *base, unsigned slot, char key[SLOT_KEY_LEN])
{
    snprintf(key, SLOT_KEY_LEN, "%s%u", base, slot);
}

/* The stored form of a slot's session (*v: caller frees with msv_secret_free). */
static msv_err load_raw(struct msv_client *c, const char *key_base, unsigned slot, uint8_t **v,
                        size_t *len)
{
    char key[SLOT_KEY_LEN];

    slot_key(key_base, slot, key);
    return msv_client_db_get(c->db, key, v, len);
}

static msv_err load_session(struct msv_client *c, const char *key_base, unsigned slot,
                            struct msv_session **out)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = load_raw(c, key_base, slot, &v, &len);

    if (err == MSV_OK)
        err = msv_session_import(v, len, out);
    msv_secret_free(v, len);
    return err;
}

static msv_err store_session(struct msv_client *c, const char *key_base, unsigned slot,
                             const struct msv_session *s)
{
    char key[SLOT_KEY_LEN];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_session_export(s, &v, &len);

    slot_key(key_base, slot, key);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, key, v, len);
    msv_secret_free(v, len);
    return err;
}

/* "session:<device>:<peer>:", to which a slot number is added. */
static void key_base(const char *handle, uint64_t device_id, const struct msv_public_identity *pub,
                     char base[MSV_SESSION_KEY_LEN])
{
    msv_sessions_key(handle, device_id, pub, 0, base);
    base[strlen(base) - 1] = '\0';
}

/* ---- prekeys ------------------------------------------------------------------------------ */

/* one-time prekeys of uploads whose answer was lost (sessions.h), and their secrets reclaimed */
#define UNSETTLED "prekeys-unsettled"
#define RECLAIMED "prekeys-reclaimed"

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

msv_err msv_sessions_take_prekey_ids(struct msv_client_db *db, uint32_t count, uint32_t *first)
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
        err = msv_sessions_take_prekey_ids(copy, MSV_PREKEY_RESTORE_GAP, &skipped);
    if (err == MSV_OK)
        err = msv_client_db_unset(copy, UNSETTLED); /* the copy holds none of their secrets */
    if (err == MSV_OK)
        err = msv_pqkeys_strip_backup_copy(copy);
    if (err == MSV_OK)
        err = msv_mlskeys_strip_backup_copy(copy);
    if (err == MSV_OK)
        err = msv_client_db_set(copy, MSV_PREKEYS_RESTORED, "1", 1);
    return err;
}

/* Makes and stores n prekeys (the first one signed if sig is not NULL). */
static msv_err make_prekeys(struct msv_client *c, struct msv_prekey *keys, size_t n,
                            uint8_t sig[64])
{
    uint32_t first = 0;
    msv_err err = msv_sessions_take_prekey_ids(c->db, (uint32_t)n, &first);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = msv_prekey_generate(c->id, first + (uint32_t)i, &keys[i], i == 0 ? sig : NULL);
        if (err == MSV_OK)
            err = store_prekey(c, &keys[i]);
    }
    return err;
}

/*
 * A profile key made on first use is stamped as old as can be: the key the
 * account's other devices hold (a linked device's snapshot) replaces it.
 */
static msv_err placeholder_key(struct msv_client *c, uint8_t key[MSV_PROFILE_KEY_LEN])
{
    struct msv_sync_entry e = {
        .key = MSV_PROFILE_KEY_SETTING, .value = key, .value_len = MSV_PROFILE_KEY_LEN, .stamp = 1};
    int applied = 0;
    msv_err err;

    msv_random_bytes(key, MSV_PROFILE_KEY_LEN);
    err = msv_client_db_sync_apply(c->db, &e, &applied);
    if (err == MSV_OK && !applied)
        err = msv_client_db_set(c->db, MSV_PROFILE_KEY_SETTING, key, MSV_PROFILE_KEY_LEN);
    return err;
}

msv_err msv_sessions_profile_key(struct msv_client *c, uint8_t key[MSV_PROFILE_KEY_LEN])
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, MSV_PROFILE_KEY_SETTING, &v, &len);

    if (err == MSV_OK && len == MSV_PROFILE_KEY_LEN)
        memcpy(key, v, MSV_PROFILE_KEY_LEN);
    msv_secret_free(v, len);
    if (err == MSV_OK && len == MSV_PROFILE_KEY_LEN)
        return MSV_OK;
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    return placeholder_key(c, key);
}

msv_err msv_sessions_new_profile_key(struct msv_client *c)
{
    uint8_t key[MSV_PROFILE_KEY_LEN];
    msv_err err;

    msv_random_bytes(key, MSV_PROFILE_KEY_LEN);
    err = msv_client_db_set(c->db, MSV_PROFILE_KEY_SETTING, key, MSV_PROFILE_KEY_LEN);
    sodium_memzero(key, sizeof(key));
    return err;
}

/* Registers this device's delivery token, from the profile key it holds now. */
static msv_err publish_token(struct msv_client *c)
{
    uint8_t profile[MSV_PROFILE_KEY_LEN], token[16];
    msv_err err = msv_sessions_profile_key(c, profile);

    msv_sessions_delivery_token(profile, token);
    if (err == MSV_OK)
        err = msv_request_set_delivery_token(c->conn, token, TIMEOUT_MS, &c->why);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, "token-published", "1", 1);
    sodium_memzero(profile, sizeof(profile));
    return err;
}

msv_err msv_sessions_profile_key_changed(struct msv_client *c)
{
    uint8_t *flag = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_unset(c->db, "token-published");

    if (err != MSV_OK || !(msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return err;
    /* a new connection publishes it by itself (msv_sessions_publish) */
    err = msv_client_connect(c);
    if (err == MSV_OK && msv_client_db_get(c->db, "token-published", &flag, &len) != MSV_OK)
        err = publish_token(c);
    free(flag);
    return err;
}

msv_err msv_sessions_rotate_profile_key(struct msv_client *c)
{
    msv_err err = msv_sessions_new_profile_key(c);

    return err == MSV_OK ? msv_sessions_profile_key_changed(c) : err;
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

/* A signed prekey record (u32be id || u64be since, ms) in setting which; 0 if none. */
static uint32_t signed_record(struct msv_client *c, const char *which, int64_t *since)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint32_t id = 0;

    *since = 0;
    if (msv_client_db_get(c->db, which, &v, &len) == MSV_OK && len == 12) {
        id = msv_get_u32be(v);
        *since = (int64_t)msv_get_u64be(v + 4);
    }
    free(v);
    return id;
}

/* The signed prekey in use ("signed-prekey"), 0 if none. */
static uint32_t signed_prekey(struct msv_client *c, int64_t *since)
{
    return signed_record(c, "signed-prekey", since);
}

/* One uploaded whose answer has not come ("signed-prekey-pending"), 0 if none. */
static uint32_t pending_signed_prekey(struct msv_client *c, int64_t *since)
{
    return signed_record(c, "signed-prekey-pending", since);
}

static msv_err set_signed_record(struct msv_client *c, const char *which, uint32_t id,
                                 int64_t since)
{
    uint8_t rec[12];

    msv_put_u32be(rec, id);
    msv_put_u64be(rec + 4, (uint64_t)since);
    return msv_client_db_set(c->db, which, rec, sizeof(rec));
}

/*
 * A new signed prekey is in use at the server: the one before it becomes
 * the previous (its secret still opens first messages made with it), and
 * the previous one's secret goes (forward secrecy for sessions it began).
 */
static msv_err signed_prekey_replaced(struct msv_client *c, uint32_t id, int64_t now)
{
    int64_t since;
    uint32_t current = signed_prekey(c, &since),
             old = client_setting_u32(c->db, "signed-prekey-old");
    uint8_t rec[4];
    char key[32];
    msv_err err = MSV_OK;

    if (id == current)
        return MSV_OK; /* recorded already (a publish that stopped before it cleared pending) */
    if (old != 0) {
        prekey_name(old, key);
        err = msv_client_db_unset(c->db, key);
    }
    msv_put_u32be(rec, current);
    if (err == MSV_OK && current != 0)
        err = msv_client_db_set(c->db, "signed-prekey-old", rec, 4);
    return err == MSV_OK ? set_signed_record(c, "signed-prekey", id, now) : err;
}

/*
 * What the server says it holds (held: its signed prekey's id) settles an upload whose answer
 * was lost: the pending key, if the server holds it, becomes the one in use; else its secret
 * goes. The same for the last-resort KEM prekey. *stale: the server holds a key that is not
 * the one in use here (its database restored from a backup, say): a new one is due. A server
 * that does not say which it holds (id 0 with has_signed) settles nothing.
 */
static msv_err reconcile(struct msv_client *c, const struct msv_prekey_counts *held, int *stale)
{
    int64_t pending_since, since;
    uint32_t pending = pending_signed_prekey(c, &pending_since);
    char key[32];
    msv_err err = MSV_OK;

    if (held->has_signed && held->signed_id == 0)
        return MSV_OK;
    if (pending != 0 && held->signed_id == pending)
        err = signed_prekey_replaced(c, pending, pending_since);
    if (err == MSV_OK && pending != 0 && pending != held->signed_id) {
        prekey_name(pending, key);
        err = msv_client_db_unset(c->db, key);
    }
    if (err == MSV_OK && pending != 0)
        err = msv_client_db_unset(c->db, "signed-prekey-pending");
    if (err == MSV_OK && held->signed_id != 0 && held->signed_id != signed_prekey(c, &since))
        *stale = 1;
    return err == MSV_OK
               ? msv_pqkeys_reconcile(c, held->kem_last_resort_id, held->has_kem_last_resort, stale)
               : err;
}

/* ---- one-time prekeys of uploads whose answer was lost (sessions.h) ---- */

/* a record: u8 kind (0 X25519, 1 KEM) || u32be first id || u32be count || u64be when the
 * server's one-time prekeys were replaced after it (0: not yet) */
#define UNSETTLED_REC 17

static msv_err unsettled_read(struct msv_client *c, uint8_t **v, size_t *n)
{
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, UNSETTLED, v, &len);

    if (err == MSV_ERR_NOT_FOUND) {
        *v = NULL;
        *n = 0;
        return MSV_OK;
    }
    if (err == MSV_OK && len % UNSETTLED_REC != 0) {
        free(*v);
        *v = NULL;
        return MSV_ERR_PARSE;
    }
    *n = len / UNSETTLED_REC;
    return err;
}

static msv_err unsettled_write(struct msv_client *c, const uint8_t *v, size_t n)
{
    return n == 0 ? msv_client_db_unset(c->db, UNSETTLED)
                  : msv_client_db_set(c->db, UNSETTLED, v, n * UNSETTLED_REC);
}

/* Deletes the secrets of a record's keys that are still here, and counts them. */
static msv_err reclaim(struct msv_client *c, const uint8_t *rec)
{
    uint32_t first = msv_get_u32be(rec + 1), n = msv_get_u32be(rec + 5);
    uint64_t count = 0;
    uint8_t *v = NULL, out[8];
    size_t len = 0;
    msv_err err = MSV_OK;

    if (n > MSV_PREKEYS_BATCH)
        n = MSV_PREKEYS_BATCH; /* no upload carries more */
    for (uint32_t i = 0; err == MSV_OK && i < n && first + i >= first; i++) {
        char key[40];
        int had;

        if (rec[0] == 1)
            msv_pqkeys_name(first + i, key);
        else
            prekey_name(first + i, key);
        err = msv_client_db_get(c->db, key, &v, &len);
        msv_secret_free(v, len);
        v = NULL;
        had = err == MSV_OK;
        if (err == MSV_OK)
            err = msv_client_db_unset(c->db, key);
        else if (err == MSV_ERR_NOT_FOUND)
            err = MSV_OK;
        count += (uint64_t)had;
    }
    if (err == MSV_OK && count > 0) {
        if (msv_client_db_get(c->db, RECLAIMED, &v, &len) == MSV_OK && len == 8)
            count += msv_get_u64be(v);
        free(v);
        msv_put_u64be(out, count);
        err = msv_client_db_set(c->db, RECLAIMED, out, sizeof(out));
    }
    return err;
}

static void put_unsettled(uint8_t *r, uint8_t kind, uint32_t first, size_t n)
{
    r[0] = kind;
    msv_put_u32be(r + 1, first);
    msv_put_u32be(r + 5, (uint32_t)n);
    msv_put_u64be(r + 9, 0);
}

/*
 * Records the one-time prekeys set carries before its upload (*added records, the last ones):
 * a lost answer or a crash leaves them recorded; an answer takes them out (unsettled_drop).
 */
static msv_err unsettled_add(struct msv_client *c, const struct msv_prekey_set *set, size_t *added)
{
    uint8_t *v = NULL, *grown;
    size_t n = 0, add = (set->n_one_time > 0) + (set->n_kem_one_time > 0);
    msv_err err = add == 0 ? MSV_OK : unsettled_read(c, &v, &n);

    *added = 0;
    if (err != MSV_OK || add == 0)
        return err;
    /* bounded: the oldest batches' secrets go first */
    while (err == MSV_OK && n + add > MSV_PREKEYS_UNSETTLED_MAX && n > 0) {
        err = reclaim(c, v);
        memmove(v, v + UNSETTLED_REC, (n - 1) * UNSETTLED_REC);
        n--;
    }
    grown = err == MSV_OK ? realloc(v, (n + add) * UNSETTLED_REC) : NULL;
    if (grown == NULL) {
        free(v);
        return err == MSV_OK ? MSV_ERR_NOMEM : err;
    }
    v = grown;
    if (set->n_one_time > 0)
        put_unsettled(v + n++ * UNSETTLED_REC, 0, set->one_time[0].id, set->n_one_time);
    if (set->n_kem_one_time > 0)
        put_unsettled(v + n++ * UNSETTLED_REC, 1, set->kem_one_time[0].id, set->n_kem_one_time);
    err = unsettled_write(c, v, n);
    free(v);
    if (err == MSV_OK)
        *added = add;
    return err;
}

/* The upload answered: the last added records go (publishes run one at a time). */
static msv_err unsettled_drop(struct msv_client *c, size_t added)
{
    uint8_t *v = NULL;
    size_t n = 0;
    msv_err err = added == 0 ? MSV_OK : unsettled_read(c, &v, &n);

    if (err == MSV_OK && added > 0)
        err = unsettled_write(c, v, n >= added ? n - added : 0);
    free(v);
    return err;
}

/*
 * At a publish: *replace if a lost batch waits for the server's one-time prekeys to be
 * replaced; batches replaced over MSV_PREKEYS_UNSETTLED_MS ago lose their secrets. With
 * replaced_at (an answered upload that replaced them): the waiting batches are stamped.
 */
static msv_err unsettled_settle(struct msv_client *c, int64_t now, int64_t replaced_at,
                                int *replace)
{
    uint8_t *v = NULL;
    size_t n = 0, kept = 0;
    msv_err err = unsettled_read(c, &v, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint8_t *r = v + i * UNSETTLED_REC;
        uint64_t at = msv_get_u64be(r + 9);

        if (at == 0 && replaced_at != 0)
            msv_put_u64be(r + 9, at = (uint64_t)replaced_at);
        if (at != 0 && now - (int64_t)at > MSV_PREKEYS_UNSETTLED_MS) {
            err = reclaim(c, r);
            continue;
        }
        if (at == 0 && replace != NULL)
            *replace = 1;
        memmove(v + kept++ * UNSETTLED_REC, r, UNSETTLED_REC);
    }
    if (err == MSV_OK && (kept != n || replaced_at != 0))
        err = unsettled_write(c, v, kept);
    free(v);
    return err;
}

msv_err msv_sessions_prekeys_unsettled(struct msv_client *c, size_t *batches, uint64_t *reclaimed)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = unsettled_read(c, &v, batches);

    free(v);
    v = NULL;
    *reclaimed = 0;
    if (err == MSV_OK && msv_client_db_get(c->db, RECLAIMED, &v, &len) == MSV_OK && len == 8)
        *reclaimed = msv_get_u64be(v);
    free(v);
    return err;
}

/* The server refused the upload of set (it answered): the X25519 secrets it carried go. */
static msv_err refused(struct msv_client *c, const struct msv_prekey_set *set)
{
    char key[32];
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < set->n_one_time; i++) {
        prekey_name(set->one_time[i].id, key);
        err = msv_client_db_unset(c->db, key);
    }
    if (err == MSV_OK && set->signed_key != NULL) {
        prekey_name(set->signed_key->id, key);
        err = msv_client_db_unset(c->db, key);
        if (err == MSV_OK)
            err = msv_client_db_unset(c->db, "signed-prekey-pending");
    }
    return err == MSV_OK ? msv_pqkeys_refused(c, set) : err;
}

/* 1 if set carries anything to upload. */
static int set_has_keys(const struct msv_prekey_set *set)
{
    return set->signed_key != NULL || set->n_one_time > 0 || set->kem_last_resort != NULL ||
           set->n_kem_one_time > 0;
}

static msv_err publish_locked(struct msv_client *c);

msv_err msv_sessions_publish(struct msv_client *c)
{
    int fd;
    msv_err err;

    if (!(msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return MSV_OK;
    /* two processes of one device (the daemon and a command, say) never rotate, record or
     * settle prekeys at once */
    fd = client_lock_file(c, "prekeys.lock");
    if (fd < 0)
        return MSV_ERR_IO;
    err = publish_locked(c);
    close(fd); /* and with it the lock */
    return err;
}

/* "keys-unpublished": u64be count of connections whose publish failed */
#define KEYS_UNPUBLISHED "keys-unpublished"

uint64_t msv_client_keys_unpublished(struct msv_client *c)
{
    return client_counter(c, KEYS_UNPUBLISHED);
}

/* "keys-limited-since": u64be wall ms of the first publish answered "slow down" since the last
 * one that went; past KEYS_LIMITED_TELL_MS it is told as a failure */
#define KEYS_LIMITED_SINCE "keys-limited-since"
#define KEYS_LIMITED_TELL_MS (3600LL * 1000)

/* Whether publishes have been answered "slow down" for too long (the first one recorded). */
static int limited_too_long(struct msv_client *c)
{
    uint8_t *v = NULL, now[8];
    size_t len = 0;
    int64_t since = msv_wall_ms();
    int too_long = 0;

    /* a time ahead of the clock (set before it went back) is counted from now */
    if (msv_client_db_get(c->db, KEYS_LIMITED_SINCE, &v, &len) == MSV_OK && len == 8 &&
        (int64_t)msv_get_u64be(v) <= since) {
        too_long = since - (int64_t)msv_get_u64be(v) > KEYS_LIMITED_TELL_MS;
    } else {
        msv_put_u64be(now, (uint64_t)since);
        if (msv_client_db_set(c->db, KEYS_LIMITED_SINCE, now, sizeof(now)) != MSV_OK)
            too_long = 0; /* recorded at the next one */
    }
    free(v);
    return too_long;
}

/* the wait before a failed publishing is tried again on the same connection, and its bound */
#define KEYS_RETRY_FIRST_MS (60LL * 1000)
#define KEYS_RETRY_MAX_MS (3600LL * 1000)

void client_publish_keys(struct msv_client *c)
{
    char warning[sizeof(c->why.message) + 400];
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    err = msv_sessions_publish(c);
    if (err == MSV_OK && msv_client_db_unset(c->db, KEYS_LIMITED_SINCE) != MSV_OK)
        c->why.message[0] = '\0'; /* forgotten at the next success */
    /* limited: the server still holds what it held, and the next connection tops up; told once
     * it has lasted KEYS_LIMITED_TELL_MS (a server that always says "slow down" keeps the keys
     * out as surely as one that fails) */
    if (err == MSV_OK ||
        (c->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED && !limited_too_long(c))) {
        c->keys_retry_at = c->keys_backoff_ms = 0;
        return;
    }
    c->keys_backoff_ms = c->keys_backoff_ms == 0                      ? KEYS_RETRY_FIRST_MS
                         : c->keys_backoff_ms < KEYS_RETRY_MAX_MS / 2 ? 2 * c->keys_backoff_ms
                                                                      : KEYS_RETRY_MAX_MS;
    c->keys_retry_at = msv_mono_ms() + c->keys_backoff_ms;
    if (client_counter_bump(c, KEYS_UNPUBLISHED) != MSV_OK) {
        /* told all the same: the count is only what the user may look up later */
    }
    snprintf(warning, sizeof(warning),
             "this device's keys could not be published to the server (%s%s%s%s): senders may "
             "find none to start a session, seal or add it to a group with, and send without "
             "forward secrecy or not at all; tried again at the next connection, or on this one "
             "after %lld s",
             c->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED
                 ? "it has said \"slow down\" to every try for over an hour; "
                 : "",
             msv_strerror(err), c->why.message[0] != '\0' ? ": " : "", c->why.message,
             (long long)(c->keys_backoff_ms / 1000));
    if (c->on_keys_unpublished != NULL)
        c->on_keys_unpublished(c->ctx, warning);
}

void msv_client_keys_retry(struct msv_client *c)
{
    if (c->conn != NULL && c->keys_retry_at != 0 && msv_mono_ms() >= c->keys_retry_at)
        client_publish_keys(c);
}

static msv_err publish_locked(struct msv_client *c)
{
    struct msv_prekey keys[MSV_PREKEYS_BATCH], spk;
    struct msv_prekey_set set = {0};
    struct msv_prekey_counts held = {0};
    struct msv_kem_batch *kem = NULL;
    uint8_t sig[64], *flag = NULL;
    int rotate, replace, stale = 0;
    int64_t now = msv_wall_ms(), since = 0;
    size_t flag_len = 0, n = 0, added = 0;
    msv_err err;

    err = msv_request_prekey_upload(c->conn, &set, TIMEOUT_MS, &held, &c->why);
    if (err == MSV_OK)
        err = reconcile(c, &held, &stale);
    /* restored from a backup, which holds no prekey secrets: all new ones, under new ids */
    replace = msv_client_db_get(c->db, MSV_PREKEYS_RESTORED, &flag, &flag_len) == MSV_OK;
    free(flag);
    flag = NULL;
    /* a batch whose answer was lost: the server's one-time prekeys are replaced too */
    if (err == MSV_OK)
        err = unsettled_settle(c, now, 0, &replace);
    /* a new signed prekey when the server has none, or the one in use is a week old */
    rotate = replace || stale || !held.has_signed || signed_prekey(c, &since) == 0 ||
             now - since > MSV_SIGNED_PREKEY_AGE_MS;
    if (err == MSV_OK && (replace || held.one_time_left < MSV_PREKEYS_LOW))
        n = replace ? MSV_PREKEYS_BATCH : MSV_PREKEYS_BATCH - held.one_time_left;
    if (err == MSV_OK && rotate)
        err = make_prekeys(c, &spk, 1, sig);
    /* from here until the upload's answer, the server may hold it */
    if (err == MSV_OK && rotate)
        err = set_signed_record(c, "signed-prekey-pending", spk.id, now);
    if (err == MSV_OK && n > 0)
        err = make_prekeys(c, keys, n, NULL);
    set = (struct msv_prekey_set){.signed_key = rotate ? &spk : NULL,
                                  .signed_sig = sig,
                                  .one_time = keys,
                                  .n_one_time = n,
                                  .replace = replace};
    /* the last-resort KEM prekey is replaced with the signed prekey; both go in one upload, so
     * the server never holds a new signed prekey without a KEM prekey to go with it */
    if (err == MSV_OK)
        err = msv_pqkeys_prepare(c, rotate, replace, &held, &kem, &set);
    /* recorded before the upload: no answer (or a crash) leaves the one-time keys recorded,
     * and the next publish settles the signed and last-resort keys and replaces those */
    if (err == MSV_OK && set_has_keys(&set))
        err = unsettled_add(c, &set, &added);
    if (err == MSV_OK && set_has_keys(&set)) {
        err = msv_request_prekey_upload(c->conn, &set, TIMEOUT_MS, &held, &c->why);
        /* an answer that refuses: nothing of it is held */
        if (err != MSV_ERR_IO && err != MSV_ERR_NOMEM && unsettled_drop(c, added) != MSV_OK)
            err = MSV_ERR_IO;
        else if (err != MSV_OK && err != MSV_ERR_IO && err != MSV_ERR_NOMEM &&
                 refused(c, &set) != MSV_OK)
            err = MSV_ERR_IO;
    }
    if (err == MSV_OK && replace && set.replace)
        err = unsettled_settle(c, now, now, NULL);
    if (err == MSV_OK && rotate)
        err = signed_prekey_replaced(c, spk.id, now);
    if (err == MSV_OK && rotate)
        err = msv_client_db_unset(c->db, "signed-prekey-pending");
    if (err == MSV_OK)
        err = msv_pqkeys_uploaded(c, &set);
    if (err == MSV_OK && replace)
        err = msv_client_db_unset(c->db, MSV_PREKEYS_RESTORED);
    msv_pqkeys_batch_free(kem);
    sodium_memzero(keys, sizeof(keys));
    sodium_memzero(&spk, sizeof(spk));
    if (err == MSV_OK && msv_client_db_get(c->db, "token-published", &flag, &flag_len) != MSV_OK)
        err = publish_token(c);
    free(flag);
    /* refused for its rate (uploads after ten in a row wait minutes): returned as such, so
     * that it is told once it has lasted (client_publish_keys), as a prekey upload's is; the
     * server still holds what was there */
    if (err == MSV_OK)
        err = msv_mlskeys_publish(c);
    return err;
}

struct msv_first_prekeys {
    struct msv_prekey spk;
    uint8_t sig[64];
    struct msv_kem_batch *kem;
    struct msv_prekey_set set;
};

void msv_sessions_first_prekeys_free(struct msv_first_prekeys *f)
{
    if (f == NULL)
        return;
    msv_pqkeys_batch_free(f->kem);
    sodium_free(f);
}

/*
 * Recorded as the ones in use at once: if the request carrying them fails,
 * the device's first connection finds the server without them and makes new
 * ones, as for any device the server holds no prekeys of.
 */
msv_err msv_sessions_first_prekeys(struct msv_client *c, struct msv_first_prekeys **out)
{
    struct msv_first_prekeys *f = NULL;
    msv_err err;

    if (!(msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return MSV_OK;
    f = sodium_malloc(sizeof(*f));
    if (f == NULL)
        return MSV_ERR_NOMEM;
    memset(f, 0, sizeof(*f));
    err = make_prekeys(c, &f->spk, 1, f->sig);
    f->set.signed_key = &f->spk;
    f->set.signed_sig = f->sig;
    if (err == MSV_OK)
        err = msv_pqkeys_prepare(c, 1, 0, NULL, &f->kem, &f->set);
    if (err == MSV_OK)
        err = signed_prekey_replaced(c, f->spk.id, msv_wall_ms());
    if (err == MSV_OK)
        err = msv_pqkeys_uploaded(c, &f->set);
    if (err != MSV_OK) {
        msv_sessions_first_prekeys_free(f);
        return err;
    }
    *out = f;
    return MSV_OK;
}

const struct msv_prekey_set *msv_sessions_first_prekeys_set(const struct msv_first_prekeys *f)
{
    return f != NULL ? &f->set : NULL;
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

/* The bundle's KEM prekey (ignored for a device that does not say post-quantum). */
static msv_err bundle_kem(const Msv__Wire__PrekeyBundle *b, struct msv_prekey_bundle *bundle)
{
    const Msv__Wire__KemPrekey *k = b->kem;

    if (k == NULL)
        return MSV_OK;
    if (k->key.len != MSV_MLKEM768_EK_LEN || k->signature.len != 64 || k->id == 0)
        return MSV_ERR_PARSE;
    bundle->has_kem = 1;
    bundle->kem_id = k->id;
    bundle->kem_last_resort = k->last_resort;
    memcpy(bundle->kem_pk, k->key.data, MSV_MLKEM768_EK_LEN);
    memcpy(bundle->kem_sig, k->signature.data, 64);
    return MSV_OK;
}

/* Starts a session from one claimed bundle, checked against the listed identity. */
static msv_err start_session(struct msv_client *c, const char *handle,
                             const Msv__Wire__DeviceInfo *d, const Msv__Wire__PrekeyBundle *b)
{
    struct msv_prekey_bundle *bundle = calloc(1, sizeof(*bundle));
    struct msv_public_identity *pub = NULL;
    struct msv_session *s = NULL;
    char base[MSV_SESSION_KEY_LEN];
    msv_err err = MSV_ERR_PARSE;

    if (bundle == NULL)
        return MSV_ERR_NOMEM;
    if (b->signed_ == NULL || b->signed_->key.len != 32 || b->signed_->signature.len != 64 ||
        (b->one_time != NULL && (b->one_time->key.len != 32 || b->one_time->id == 0)))
        goto out;
    bundle->signed_id = b->signed_->id;
    memcpy(bundle->signed_pk, b->signed_->key.data, 32);
    memcpy(bundle->signed_sig, b->signed_->signature.data, 64);
    if (b->one_time != NULL) {
        bundle->one_time_id = b->one_time->id;
        memcpy(bundle->one_time_pk, b->one_time->key.data, 32);
    }
    err = bundle_kem(b, bundle);
    if (err == MSV_OK)
        err = msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                        &pub);
    if (err == MSV_OK)
        err = msv_session_initiate(c->id, pub, bundle, &s);
    /* no freshness in a signature: a last-resort KEM prekey older than one seen is refused */
    if (err == MSV_OK && bundle->has_kem && bundle->kem_last_resort &&
        msv_public_identity_is_pq(pub))
        err = client_last_resort_seen(c, d->device_id, pub, bundle->kem_id, bundle->kem_pk,
                                      bundle->kem_sig);
    if (err == MSV_OK) {
        key_base(handle, d->device_id, pub, base);
        err = store_session(c, base, 0, s);
    }
out:
    msv_session_free(s);
    msv_public_identity_free(pub);
    free(bundle);
    return err;
}

/*
 * A device that says post-quantum gets a hybrid session or nothing: the
 * server gave no bundle for it, or one without a KEM prekey whose signature
 * checks. Refused (the send fails) and reported, never sealed classically.
 */
static msv_err pq_refused(struct msv_client *c, const char *handle, uint64_t device_id,
                          const char *what)
{
    return client_pq_refused(c, handle, device_id, what, "sessions ");
}

static void handle_of(const Msv__Wire__HandleDevices *hd, char handle[257])
{
    snprintf(handle, 257, "%.*s", (int)hd->handle.len, (const char *)hd->handle.data);
}

/* 1 if there is a current session with device d of handle (as the directory lists it). */
static int has_session(struct msv_client *c, const char *handle, const Msv__Wire__DeviceInfo *d)
{
    struct msv_public_identity *pub = NULL;
    char base[MSV_SESSION_KEY_LEN];
    uint8_t *v = NULL;
    size_t len = 0;
    int found = 0;

    if (msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                  &pub) != MSV_OK)
        return 0;
    key_base(handle, d->device_id, pub, base);
    found = load_raw(c, base, 0, &v, &len) == MSV_OK;
    msv_secret_free(v, len);
    msv_public_identity_free(pub);
    return found;
}

/* The current session with device d of handle (as the directory lists it), or NULL. */
static struct msv_session *current_session(struct msv_client *c, const char *handle,
                                           const Msv__Wire__DeviceInfo *d)
{
    struct msv_public_identity *pub = NULL;
    struct msv_session *s = NULL;
    char base[MSV_SESSION_KEY_LEN];

    if (msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                  &pub) != MSV_OK)
        return NULL;
    key_base(handle, d->device_id, pub, base);
    if (load_session(c, base, 0, &s) != MSV_OK)
        s = NULL;
    msv_public_identity_free(pub);
    return s;
}

int msv_sessions_kind(struct msv_client *c, const char *handle, const Msv__Wire__DeviceInfo *d)
{
    struct msv_session *s = current_session(c, handle, d);
    int kind = s == NULL              ? MSV_SESSION_NONE
               : msv_session_is_pq(s) ? MSV_SESSION_PQ
                                      : MSV_SESSION_CLASSICAL;

    msv_session_free(s);
    return kind;
}

static int device_is_pq(const Msv__Wire__DeviceInfo *d)
{
    struct msv_public_identity *pub = NULL;
    int pq = msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                       &pub) == MSV_OK &&
             msv_public_identity_is_pq(pub);

    msv_public_identity_free(pub);
    return pq;
}

uint32_t msv_sessions_kem_steps(struct msv_client *c, const char *handle,
                                const Msv__Wire__DeviceInfo *d)
{
    struct msv_session *s = current_session(c, handle, d);
    uint32_t steps = s != NULL ? msv_session_pq_steps(s) : 0;

    msv_session_free(s);
    return steps;
}

msv_err msv_sessions_prepare(struct msv_client *c, Msv__Wire__HandleDevices *const *hds, size_t n)
{
    size_t total = 0, n_need = 0;
    const Msv__Wire__DeviceInfo **need;
    const Msv__Wire__HandleDevices **owner;
    uint64_t *ids;
    int *pq;
    char handle[257];
    msv_err err = MSV_OK;

    for (size_t i = 0; i < n; i++)
        total += hds[i]->n_devices;
    need = calloc(total + 1, sizeof(*need));
    owner = calloc(total + 1, sizeof(*owner));
    ids = calloc(total + 1, sizeof(*ids));
    pq = calloc(total + 1, sizeof(*pq));
    if (need == NULL || owner == NULL || ids == NULL || pq == NULL) {
        free(need);
        free(owner);
        free(ids);
        free(pq);
        return MSV_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        handle_of(hds[i], handle);
        for (size_t k = 0; k < hds[i]->n_devices; k++) {
            const Msv__Wire__DeviceInfo *d = hds[i]->devices[k];

            if (!wants_session(c, d) || has_session(c, handle, d))
                continue;
            need[n_need] = d;
            owner[n_need] = hds[i];
            pq[n_need] = device_is_pq(d);
            ids[n_need++] = d->device_id;
        }
    }
    for (size_t at = 0; at < n_need && err == MSV_OK; at += CLAIM_MAX) {
        size_t batch = n_need - at < CLAIM_MAX ? n_need - at : CLAIM_MAX;
        msv_frame *got = NULL;
        int some_pq = 0;

        for (size_t k = at; k < at + batch; k++)
            some_pq |= pq[k];

        /* busy or "slow down" is not a key withheld: the send waits (any other refusal of a
         * post-quantum device's keys is refused as withheld, in msv_sessions_seal) */
        err = client_claim(c, ids + at, pq + at, batch, 0,
                           some_pq ? "the post-quantum prekeys of a recipient's device"
                                   : "the prekeys of a recipient's device",
                           &got);
        if (err == MSV_ERR_IO && c->why.code != 0 && !some_pq) {
            /* none post-quantum: they get the suite's envelope, as before there were claims */
            memset(&c->why, 0, sizeof(c->why));
            err = MSV_OK;
            continue;
        }
        /* MSV_ERR_AGAIN: a post-quantum device with no bundle at all, the set to recheck */
        if (err != MSV_OK && err != MSV_ERR_IO && err != MSV_ERR_NOMEM && err != MSV_ERR_AGAIN) {
            /* refused: these devices, none post-quantum, get the suite's envelope */
            memset(&c->why, 0, sizeof(c->why));
            err = MSV_OK;
            continue;
        }
        for (size_t b = 0; got != NULL && b < got->prekey_bundles->n_bundles; b++) {
            const Msv__Wire__PrekeyBundle *bundle = got->prekey_bundles->bundles[b];

            /* a bundle that does not verify is dropped: that device gets the suite's envelope,
             * unless it says post-quantum (msv_sessions_seal refuses it then) */
            for (size_t k = at; k < at + batch; k++) {
                if (need[k]->device_id != bundle->device_id)
                    continue;
                handle_of(owner[k], handle);
                (void)start_session(c, handle, need[k], bundle);
            }
        }
        msv_frame_free(got);
    }
    free(need);
    free(owner);
    free(ids);
    free(pq);
    return err;
}

msv_err msv_sessions_seal(struct msv_client *c, const char *handle, uint64_t device_id,
                          const struct msv_public_identity *pub, enum msv_suite suite,
                          const uint8_t *pt, size_t len, uint8_t **out, size_t *out_len)
{
    struct msv_session *s = NULL;
    char base[MSV_SESSION_KEY_LEN];
    msv_err err;

    if (suite != MSV_SUITE_MODERN)
        return msv_seal_suite(c->id, pub, suite, pt, len, out, out_len);
    err = sessions_lock(c);
    if (err != MSV_OK)
        return err;
    key_base(handle, device_id, pub, base);
    if (load_session(c, base, 0, &s) != MSV_OK) {
        sessions_unlock(c);
        /* never a classical envelope to a device that says post-quantum; no bundle at all is
         * refused as a withheld KEM prekey is: such a device brings its first prekeys with it */
        if (msv_public_identity_is_pq(pub))
            return pq_refused(c, handle, device_id, "no post-quantum prekey that checks");
        return msv_seal_suite(c->id, pub, suite, pt, len, out, out_len);
    }
    err = msv_session_encrypt(s, pt, len, out, out_len);
    /* stored advanced before the envelope leaves (and before the lock goes): a message key is
     * never used twice */
    if (err == MSV_OK)
        err = store_session(c, base, 0, s);
    sessions_unlock(c);
    if (err != MSV_OK && *out != NULL) {
        free(*out);
        *out = NULL;
    }
    msv_session_free(s);
    return err;
}

uint64_t msv_client_prekeys_reclaimed(struct msv_client *c)
{
    return client_counter(c, RECLAIMED);
}

/* ---- receiving ---------------------------------------------------------------------------- */

int msv_sessions_is_session_message(const uint8_t *wire, size_t len)
{
    return len > 0 && (wire[0] == MSV_WIRE_RATCHET || wire[0] == MSV_WIRE_PREKEY_MSG ||
                       wire[0] == MSV_WIRE_PQ_PREKEY_MSG || wire[0] == MSV_WIRE_PQ_RATCHET);
}

/* "pq-downgrade:<device>": u64be count of classical messages refused in post-quantum sessions */
#define DOWNGRADES "pq-downgrade"

uint64_t msv_sessions_downgrades(struct msv_client *c, uint64_t device_id)
{
    char key[64];

    client_device_counter_name(DOWNGRADES, device_id, key);
    return client_counter(c, key);
}

/* A classical message in a post-quantum session: counted, then refused (never read). */
static msv_err downgrade_refused(struct msv_client *c, uint64_t device_id)
{
    char key[64];

    client_device_counter_name(DOWNGRADES, device_id, key);
    return client_counter_bump(c, key) == MSV_OK ? MSV_ERR_AUTH : MSV_ERR_IO;
}

/*
 * 1 if id names one of this device's signed prekeys: the one in use, the one before, or one
 * uploaded whose answer has not come (the server may hand it out).
 */
static int is_signed_prekey(struct msv_client *c, uint32_t id)
{
    int64_t since;

    return id != 0 && (signed_prekey(c, &since) == id ||
                       client_setting_u32(c->db, "signed-prekey-old") == id ||
                       pending_signed_prekey(c, &since) == id);
}

/* The digest under which the base key of a session this device answered is remembered. */
static void base_key_digest(const uint8_t base[32], uint8_t digest[32])
{
    static const char context[] = "MSV-x3dh-base-v1";
    crypto_generichash_state st;

    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)context, sizeof(context) - 1);
    crypto_generichash_update(&st, base, 32);
    crypto_generichash_final(&st, digest, 32);
}

/* The X3DH (and KEM) answer with the prekeys' secrets, once per base key. */
static msv_err answer_with(struct msv_client *c, const struct msv_public_identity *pub,
                           const uint8_t *wire, size_t len, uint32_t spk_id, uint32_t opk_id,
                           const struct msv_kem_prekey *kem, const uint8_t base[32], uint8_t **pt,
                           size_t *pt_len, struct msv_session_update *u)
{
    struct msv_prekey spk, opk;
    msv_err err;

    base_key_digest(base, u->base_digest);
    err = msv_client_db_envelope_seen(c->db, u->base_digest);
    if (err != MSV_ERR_NOT_FOUND)
        return err == MSV_OK ? MSV_ERR_REPLAY : err;
    err = load_prekey(c, spk_id, &spk);
    if (err == MSV_OK && opk_id != 0)
        err = load_prekey(c, opk_id, &opk);
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_ERR_AUTH; /* a prekey used up already, or never ours */
    if (err == MSV_OK)
        err = msv_session_respond(c->id, pub, &spk, opk_id ? &opk : NULL, kem, wire, len, &u->s, pt,
                                  pt_len);
    if (err == MSV_OK) {
        u->is_new = 1;
        u->used_one_time = opk_id;
    }
    sodium_memzero(&spk, sizeof(spk));
    sodium_memzero(&opk, sizeof(opk));
    return err;
}

/*
 * A 0x06 message that starts a new session with us: the X3DH with our
 * prekeys. The signed prekey id must name a signed prekey (a one-time
 * prekey in its place would never be deleted), and a base key answered
 * before is a replay (MSV_ERR_REPLAY): it would bring back a session this
 * device has moved on from.
 */
static msv_err answer_prekey_message(struct msv_client *c, const struct msv_public_identity *pub,
                                     const uint8_t *wire, size_t len, uint8_t **pt, size_t *pt_len,
                                     struct msv_session_update *u)
{
    struct msv_kem_prekey *kem = NULL;
    uint32_t spk_id, opk_id, kem_id = 0;
    uint8_t base[32];
    msv_err err = msv_prekey_message_info(wire, len, &spk_id, &opk_id, base);

    if (err != MSV_OK || !is_signed_prekey(c, spk_id))
        return MSV_ERR_AUTH;
    if (wire[0] == MSV_WIRE_PQ_PREKEY_MSG) {
        kem = sodium_malloc(sizeof(*kem));
        if (kem == NULL)
            return MSV_ERR_NOMEM;
        err = msv_prekey_message_kem_id(wire, len, &kem_id);
        if (err == MSV_OK)
            err = msv_pqkeys_load_usable(c, kem_id, kem);
        if (err != MSV_OK) { /* a KEM prekey used up already, or never ours */
            sodium_free(kem);
            return err == MSV_ERR_NOMEM ? err : MSV_ERR_AUTH;
        }
    }
    err = answer_with(c, pub, wire, len, spk_id, opk_id, kem, base, pt, pt_len, u);
    if (kem != NULL)
        sodium_free(kem);
    if (err == MSV_OK)
        u->used_kem = kem_id;
    return err;
}

msv_err msv_sessions_open(struct msv_client *c, const char *handle, uint64_t device_id,
                          const struct msv_public_identity *pub, const uint8_t *wire, size_t len,
                          uint8_t **pt, size_t *pt_len, struct msv_session_update *u)
{
    msv_err err = MSV_ERR_AUTH, got;
    int downgraded = 0;

    memset(u, 0, sizeof(*u));
    if (!speaks_modern(msv_identity_suites(c->id)) ||
        !speaks_modern(msv_public_identity_suites(pub)))
        return MSV_ERR_AUTH;
    /* only the sessions with this very peer: its handle, device and identity */
    key_base(handle, device_id, pub, u->base);
    /* held until the update is stored or discarded: no other process reads or advances these
     * sessions in between */
    got = sessions_lock(c);
    if (got != MSV_OK)
        return got;
    u->c = c;
    /* the current session, then the earlier ones, newest first: a reset is the last resort */
    for (unsigned k = 0; k < MSV_SESSIONS_KEPT; k++) {
        struct msv_session *s = NULL;

        got = load_session(c, u->base, k, &s);
        if (got == MSV_ERR_NOT_FOUND)
            continue;
        if (got != MSV_OK)
            return got;
        if (msv_session_is_downgrade(s, wire, len)) {
            /* never read classically; an earlier session may still take it (a chain it had
             * before the post-quantum ratchet began) */
            downgraded = 1;
            msv_session_free(s);
            continue;
        }
        got = msv_session_decrypt(s, wire, len, pt, pt_len);
        if (got == MSV_OK) {
            u->s = s;
            u->slot = k;
            return MSV_OK;
        }
        msv_session_free(s);
        if (got == MSV_ERR_REPLAY || got == MSV_ERR_NOMEM)
            return got;
        err = got;
    }
    /* a classical message to a device that says post-quantum, or in a post-quantum session */
    if (downgraded ||
        (wire[0] == MSV_WIRE_PREKEY_MSG && msv_public_identity_is_pq(msv_identity_public(c->id))))
        return downgrade_refused(c, device_id);
    if (wire[0] == MSV_WIRE_PREKEY_MSG || wire[0] == MSV_WIRE_PQ_PREKEY_MSG)
        return answer_prekey_message(c, pub, wire, len, pt, pt_len, u);
    return err == MSV_ERR_TOO_BIG ? MSV_ERR_AUTH : err;
}

/* Slot from's stored session moves to slot to (which is emptied if from is). */
static msv_err move_slot(struct msv_client *c, const char *base, unsigned from, unsigned to)
{
    char key[SLOT_KEY_LEN];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = load_raw(c, base, from, &v, &len);

    slot_key(base, to, key);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, key, v, len);
    else if (err == MSV_ERR_NOT_FOUND)
        err = msv_client_db_unset(c->db, key);
    msv_secret_free(v, len);
    return err;
}

msv_err msv_sessions_commit(struct msv_client *c, struct msv_session_update *u)
{
    /* the slot the session that read the message leaves free: the others step back one,
     * so that messages sent in them still read (a new session drops the oldest) */
    unsigned from = u->is_new ? MSV_SESSIONS_KEPT - 1 : u->slot;
    char key[32];
    msv_err err = MSV_OK;

    if (u->s == NULL) {
        msv_sessions_discard(u);
        return MSV_OK;
    }
    for (unsigned i = from; err == MSV_OK && i > 0; i--)
        err = move_slot(c, u->base, i - 1, i);
    if (err == MSV_OK)
        err = store_session(c, u->base, 0, u->s);
    if (err == MSV_OK && u->used_one_time != 0) {
        prekey_name(u->used_one_time, key); /* forward secrecy: the secret goes */
        err = msv_client_db_unset(c->db, key);
    }
    if (err == MSV_OK && u->used_kem != 0)
        err = msv_pqkeys_used(c, u->used_kem);
    if (err == MSV_OK && u->is_new) /* answered once: never again */
        err = msv_client_db_envelope_read(c->db, u->base_digest, msv_wall_ms());
    msv_sessions_discard(u);
    return err;
}

void msv_sessions_discard(struct msv_session_update *u)
{
    msv_session_free(u->s);
    u->s = NULL;
    if (u->c != NULL)
        sessions_unlock(u->c);
    u->c = NULL;
}

msv_err msv_sessions_forget(struct msv_client *c, uint64_t device_id)
{
    char prefix[40];

    snprintf(prefix, sizeof(prefix), "session:%llu:", (unsigned long long)device_id);
    return msv_client_db_unset_prefix(c->db, prefix);
}
