/*
 * Watching the transparency log for this account: foreign devices, removed devices, gossip.
 */
#include "client/internal.h"
#include "client/sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/safety.h"
#include "client/transparency.h"
#include "missive/payload.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"
#include "util/buf.h"
#include "util/privdir.h"

#define MONITORED "kt_monitored" /* the next log index to read */
/* the account's devices in its newest entry read, u64be id and identity hash each */
#define MONITOR_SET "kt_monitor_set"
#define MONITOR_OWN "kt_monitor_own" /* u64be: that entry's log index */
#define SET_RECORD (8 + 32)
/* "kt_monitor_newest:HANDLE", u64be: the newest log entry of another handle of the account read */
#define NEWEST_OF "kt_monitor_newest:"

static void newest_key(char key[300], const char *handle)
{
    snprintf(key, 300, NEWEST_OF "%.256s", handle);
}

/* Remembers index as the newest entry of handle (one of the account's) the monitor read. */
static msv_err newest_put(struct msv_client *c, const char *handle, uint64_t index)
{
    char key[300];
    uint8_t v[8];

    newest_key(key, handle);
    msv_put_u64be(v, index);
    return msv_client_db_set(c->db, key, v, sizeof(v));
}

/* The newest entry of handle the monitor read (MSV_ERR_NOT_FOUND: none yet). This device's own
 * handle's is MONITOR_OWN. */
static msv_err newest_get(struct msv_client *c, const char *handle, uint64_t *index)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    if (strcmp(handle, c->handle) == 0)
        err = msv_client_db_get(c->db, MONITOR_OWN, &v, &len);
    else {
        newest_key(key, handle);
        err = msv_client_db_get(c->db, key, &v, &len);
    }
    if (err == MSV_OK && len != 8)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        *index = msv_get_u64be(v);
    free(v);
    return err;
}

/*
 * Remembers the account's device set of log entry index (n records of SET_RECORD bytes), and
 * the index if the entry is of this device's own handle (the one monitor_newest looks up).
 */
static msv_err monitor_set_put(struct msv_client *c, uint64_t index, const uint8_t *set, size_t n,
                               int self)
{
    uint8_t v[8];
    msv_err err = msv_client_db_set(c->db, MONITOR_SET, set, n * SET_RECORD);

    msv_put_u64be(v, index);
    return err == MSV_OK && self ? msv_client_db_set(c->db, MONITOR_OWN, v, sizeof(v)) : err;
}

static void removed_key(char key[128], const uint8_t record[SET_RECORD])
{
    char hex[65];

    if (msv_hex_encode(record + 8, 32, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, 128, "kt_removed:%llu:%s", (unsigned long long)msv_get_u64be(record), hex);
}

static int set_has(const uint8_t *set, size_t n, const uint8_t record[SET_RECORD])
{
    for (size_t i = 0; i < n; i++) {
        if (memcmp(set + i * SET_RECORD, record, SET_RECORD) == 0)
            return 1;
    }
    return 0;
}

/*
 * The account's devices in entry e against its previous entry: a device that left is marked
 * removed; a removed device (the same id and key) listed again raises the alarm, once.
 */
static msv_err monitor_removed(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                               void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    uint8_t cur[MSV_KT_DEVICES_MAX * SET_RECORD], *prev = NULL, *marker = NULL;
    size_t prev_len = 0, marker_len = 0;
    char key[128];
    msv_err err = msv_client_db_get(c->db, MONITOR_SET, &prev, &prev_len);

    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    for (size_t i = 0; err == MSV_OK && i < e->n_devices; i++) {
        msv_put_u64be(cur + i * SET_RECORD, e->devices[i].device_id);
        if (client_device_hash(e->devices[i].suite, e->devices[i].identity,
                               e->devices[i].identity_len, cur + i * SET_RECORD + 8) != MSV_OK)
            memset(cur + i * SET_RECORD + 8, 0, 32);
    }
    for (size_t i = 0; err == MSV_OK && i < prev_len / SET_RECORD; i++) {
        if (!set_has(cur, e->n_devices, prev + i * SET_RECORD)) {
            removed_key(key, prev + i * SET_RECORD);
            err = msv_client_db_set(c->db, key, "", 0);
        }
    }
    for (size_t i = 0; err == MSV_OK && i < e->n_devices; i++) {
        char warning[400], fp[MSV_FINGERPRINT_TEXT_LEN];

        removed_key(key, cur + i * SET_RECORD);
        err = msv_client_db_get(c->db, key, &marker, &marker_len);
        free(marker);
        marker = NULL;
        if (err == MSV_ERR_NOT_FOUND) {
            err = MSV_OK;
            continue;
        }
        if (err == MSV_OK)
            err = msv_client_db_unset(c->db, key);
        msv_fingerprint_text(cur + i * SET_RECORD + 8, fp);
        snprintf(warning, sizeof(warning),
                 "the directory's transparency log lists device %llu (fingerprint %s) for this "
                 "account again, after it was removed: if it is not back by your doing, "
                 "someone can read what is sent to this account",
                 (unsigned long long)e->devices[i].device_id, fp);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    free(prev);
    if (err == MSV_OK && strcmp(e->handle, c->handle) != 0)
        err = newest_put(c, e->handle, index);
    return err == MSV_OK
               ? monitor_set_put(c, index, cur, e->n_devices, strcmp(e->handle, c->handle) == 0)
               : err;
}

/* The log index of the account's newest entry the monitor read (UINT64_MAX: none yet). */
static uint64_t monitor_own_index(struct msv_client *c)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t index = UINT64_MAX;

    if (msv_client_db_get(c->db, MONITOR_OWN, &v, &len) == MSV_OK && len == 8)
        index = msv_get_u64be(v);
    free(v);
    return index;
}

/*
 * The account's handles looked up with their history proofs, each checked (client_history_check:
 * alarms raised there); results[0] is this device's handle.
 */
static msv_err owner_lookup(struct msv_client *c, uint64_t read_to,
                            void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms,
                            msv_frame **r)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = client_own_handles_known(c, &handles, &n);

    if (err == MSV_OK)
        err = client_owner_lookup(c, (const char *const *)handles, n, r);
    msv_handles_free(handles, n);
    if (err == MSV_OK && (err = client_history_check(c, (*r)->lookup_result, read_to, on_alarm, ctx,
                                                     alarms)) != MSV_OK) {
        msv_frame_free(*r);
        *r = NULL;
    }
    return err;
}

#define NEWEST_CHECKED "kt_monitor_checked" /* u64be ms: when the entry served was last checked */
#define NEWEST_INTERVAL_MS (3600LL * 1000)

/*
 * Each result of the owner's lookup (one per handle of the account) against the newest entry of
 * that handle the monitor read: the alarm if the directory serves an older one, or none.
 */
static msv_err newest_served(struct msv_client *c, const Msv__Wire__LookupResponse *r,
                             void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < r->n_results; i++) {
        const Msv__Wire__HandleDevices *hd = r->results[i];
        char handle[MSV_HANDLE_MAX + 1], warning[700];
        uint64_t newest = 0;

        if (hd->handle.len > MSV_HANDLE_MAX)
            continue;
        snprintf(handle, sizeof(handle), "%.*s", (int)hd->handle.len,
                 (const char *)hd->handle.data);
        err = newest_get(c, handle, &newest);
        if (err == MSV_ERR_NOT_FOUND) {
            err = MSV_OK;
            continue;
        }
        if (err != MSV_OK || (hd->proof != NULL && hd->proof->index >= newest))
            continue;
        snprintf(warning, sizeof(warning),
                 "the directory serves this account's devices under %s from an older log entry "
                 "than entry %llu: others may be sealing messages to devices it no longer has",
                 handle, (unsigned long long)newest);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    return err;
}

#define NEWEST_CHECKED "kt_monitor_checked" /* u64be ms: when the entry served was last checked */
#define NEWEST_INTERVAL_MS (3600LL * 1000)

/*
 * The entries of this account's handles the directory serves are the newest ones the monitor
 * read: checked when the monitor read an entry of this device's handle, and at least hourly (a
 * lookup each time would spend the lookup rate on every receive). A lookup the relay limits
 * waits for next time.
 */
static msv_err monitor_newest(struct msv_client *c, int read_own, uint64_t read_to,
                              void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    msv_frame *r = NULL;
    uint8_t *v = NULL, when[8];
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, NEWEST_CHECKED, &v, &len);

    if (err == MSV_OK && len == 8 && !read_own &&
        msv_wall_ms() - (int64_t)msv_get_u64be(v) < NEWEST_INTERVAL_MS) {
        free(v);
        return MSV_OK;
    }
    free(v);
    if (monitor_own_index(c) == UINT64_MAX)
        return MSV_OK; /* nothing read yet */
    err = owner_lookup(c, read_to, on_alarm, ctx, alarms, &r);
    if (err == MSV_ERR_INVALID && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED)
        return MSV_OK;
    msv_put_u64be(when, (uint64_t)msv_wall_ms());
    if ((err == MSV_OK || err == MSV_ERR_AUTH) &&
        msv_client_db_set(c->db, NEWEST_CHECKED, when, sizeof(when)) != MSV_OK)
        err = MSV_ERR_IO;
    if (err == MSV_OK) {
        err = newest_served(c, r->lookup_result, on_alarm, ctx, alarms);
        msv_frame_free(r);
        return err;
    }
    msv_frame_free(r);
    if (err != MSV_ERR_AUTH)
        return err;
    (*alarms)++;
    if (on_alarm != NULL) {
        char warning[400];

        snprintf(warning, sizeof(warning), "the directory's answer for this account: %s",
                 c->why.message);
        on_alarm(ctx, warning);
    }
    return MSV_OK;
}

/* The devices the directory lists for this account now: where watching starts. */
static msv_err monitor_baseline(struct msv_client *c, void (*on_alarm)(void *, const char *),
                                void *ctx, size_t *alarms)
{
    msv_frame *r = NULL;
    msv_err err = owner_lookup(c, 0, on_alarm, ctx, alarms, &r);
    uint8_t next[8], h[32];

    for (size_t i = 0; err == MSV_OK && i < r->lookup_result->results[0]->n_devices; i++) {
        const Msv__Wire__DeviceInfo *d = r->lookup_result->results[0]->devices[i];

        if (client_device_hash(d->suite, d->identity.data, d->identity.len, h) == MSV_OK)
            err = msv_client_db_own_device_put(c->db, d->device_id, h, d->suite, d->identity.data,
                                               d->identity.len, 0);
    }
    if (err == MSV_OK && r->lookup_result->results[0]->proof != NULL) {
        static _Thread_local struct msv_kt_entry e;
        ProtobufCBinaryData b = msv_kt_proof_entry(r->lookup_result->results[0]->proof);
        const Msv__Wire__LogProof *p = r->lookup_result->results[0]->proof;
        size_t none = 0;

        /* where the removed-device watch starts: the set listed now */
        if (msv_kt_leaf_parse(b.data, b.len, &e) == MSV_OK)
            err = monitor_removed(c, &e, p->index, NULL, NULL, &none);
    }
    msv_frame_free(r);
    msv_put_u64be(next, msv_kt_known_size(c->db));
    return err == MSV_OK ? msv_client_db_set(c->db, MONITORED, next, sizeof(next)) : err;
}

/* Another account's entry must not list a device id of this account's (a device id belongs to
 * one account: sessions are found by it). */
static msv_err monitor_foreign(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                               void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < e->n_devices; i++) {
        char warning[600];
        uint8_t *identity = NULL;
        size_t len = 0;
        uint32_t suite = 0;

        err = msv_client_db_own_device_identity(c->db, e->devices[i].device_id, &suite, &identity,
                                                &len);
        free(identity);
        if (err == MSV_ERR_NOT_FOUND) {
            err = MSV_OK;
            continue;
        }
        if (err != MSV_OK)
            break;
        snprintf(warning, sizeof(warning),
                 "the directory's transparency log lists this account's device %llu under "
                 "%.256s (entry %llu): someone may pose as that device to the people you write to",
                 (unsigned long long)e->devices[i].device_id, e->handle, (unsigned long long)index);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    return err;
}

/* Another account's tombstone: remembered for a handle this device knows; the alarm if this
 * device was shown a later entry of it without the tombstone, and the user told that the
 * handle is a new account (docs/transparency.md, "A new account"). */
static msv_err monitor_tombstone(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                                 void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    char warning[700];
    int hidden = 0;
    msv_err err = msv_kt_tombstone_read(c->db, e->handle, index, &hidden);

    if (err != MSV_OK || !hidden)
        return err;
    snprintf(warning, sizeof(warning),
             "the directory showed the devices of %.256s without saying that its account was "
             "deleted (transparency log entry %llu): %.256s is a new account, not the one you "
             "knew",
             e->handle, (unsigned long long)index, e->handle);
    (*alarms)++;
    if (on_alarm != NULL)
        on_alarm(ctx, warning);
    return client_new_account(c, e->handle);
}

/*
 * Whether e is an entry of one of this account's handles. One that lists a device of this
 * account under a handle this device does not know as its account's (added on another device
 * since) makes it ask the server for the list: a server that lies so is then checked against
 * what this device knows of its own devices, as for its own handle.
 */
static int own_entry(struct msv_client *c, const struct msv_kt_entry *e)
{
    char **handles = NULL;
    size_t n = 0;

    if (client_is_own_handle(c, e->handle))
        return 1;
    for (size_t i = 0; i < e->n_devices; i++) {
        uint8_t *identity = NULL;
        size_t len = 0;
        uint32_t suite = 0;
        msv_err err = msv_client_db_own_device_identity(c->db, e->devices[i].device_id, &suite,
                                                        &identity, &len);

        free(identity);
        if (err != MSV_OK)
            continue;
        if (msv_client_handles(c, &handles, &n) == MSV_OK)
            msv_handles_free(handles, n);
        return client_is_own_handle(c, e->handle);
    }
    return 0;
}

/*
 * The tombstone of a handle this device watches as its account's: expected after a removal it
 * was told of (the handle_removed notice, client_handle_removed), and the watch of it ends; else
 * the server took the handle away by itself: the alarm, and the watch goes on, so that whoever
 * gets the handle next is seen too.
 */
static msv_err monitor_own_tombstone(struct msv_client *c, const struct msv_kt_entry *e,
                                     uint64_t index, void (*on_alarm)(void *, const char *),
                                     void *ctx, size_t *alarms)
{
    char key[300], warning[700];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    client_removed_key(key, e->handle);
    err = msv_client_db_get(c->db, key, &v, &len);
    free(v);
    if (err == MSV_OK && (err = msv_client_db_unset(c->db, key)) == MSV_OK)
        return strcmp(e->handle, c->handle) != 0 ? client_handle_unwatch(c, e->handle) : MSV_OK;
    if (err != MSV_ERR_NOT_FOUND)
        return err;
    snprintf(warning, sizeof(warning),
             "the directory's transparency log says this account's handle %.256s was removed "
             "(entry %llu), but none of its devices removed it: the server took it away, and "
             "messages to it no longer reach you",
             e->handle, (unsigned long long)index);
    (*alarms)++;
    if (on_alarm != NULL)
        on_alarm(ctx, warning);
    if (c->on_handle_taken != NULL)
        c->on_handle_taken(c->ctx, e->handle, index, warning);
    return MSV_OK;
}

/* Raises the alarm for each device of this account in leaf that this device was not told of. */
static msv_err monitor_leaf(struct msv_client *c, const Msv__Wire__LogProof *p,
                            void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    static _Thread_local struct msv_kt_entry e;
    msv_err err = MSV_OK;

    if (msv_kt_leaf_parse(p->leaf.data, p->leaf.len, &e) != MSV_OK)
        return MSV_OK; /* proven, so the server wrote it */
    if (!own_entry(c, &e) && e.deleted)
        return monitor_tombstone(c, &e, p->index, on_alarm, ctx, alarms);
    if (!own_entry(c, &e))
        return monitor_foreign(c, &e, p->index, on_alarm, ctx, alarms);
    if ((err = client_history_read(c, e.handle, p->index)) != MSV_OK)
        return err;
    if (e.deleted) /* a handle removed: it lists no device */
        return monitor_own_tombstone(c, &e, p->index, on_alarm, ctx, alarms);
    err = monitor_removed(c, &e, p->index, on_alarm, ctx, alarms);
    for (size_t i = 0; err == MSV_OK && i < e.n_devices; i++) {
        char warning[400], fp[MSV_FINGERPRINT_TEXT_LEN] = "(unreadable identity)";
        uint8_t h[32] = {0};
        int alarmed = 0;

        if (client_device_hash(e.devices[i].suite, e.devices[i].identity, e.devices[i].identity_len,
                               h) == MSV_OK)
            msv_fingerprint_text(h, fp);
        err = msv_client_db_own_device_get(c->db, e.devices[i].device_id, h, &alarmed);
        if (err == MSV_OK)
            continue; /* known, or already alarmed */
        if (err != MSV_ERR_NOT_FOUND)
            break;
        err = msv_client_db_own_device_put(c->db, e.devices[i].device_id, h, 0, NULL, 0, 1);
        snprintf(warning, sizeof(warning),
                 "the directory's transparency log lists device %llu (fingerprint %s) for this "
                 "account, and this device was never told of it: if it is not one of yours, "
                 "someone can read what is sent to this account",
                 (unsigned long long)e.devices[i].device_id, fp);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    return err;
}

/* Compares the heads received messages carried with this device's (after the log was read). */
static msv_err check_gossip(struct msv_client *c, void (*on_alarm)(void *, const char *), void *ctx,
                            size_t *alarms)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < c->n_gossip; i++) {
        struct msv_kt_head g;
        char warning[400];
        int fits = 1;

        msv_kt_head_decode(c->gossip[i].head, &g);
        err = msv_kt_check_gossip(c->db, c->conn, &g, &fits);
        if (err == MSV_OK && fits && c->gossip[i].has_epoch)
            err = msv_kt_check_gossip_epoch(c->db, g.size, c->gossip[i].epoch, &fits);
        if (err != MSV_OK || fits)
            continue;
        snprintf(warning, sizeof(warning),
                 "the transparency log head that %s's device saw (%llu entries) does not fit "
                 "the log this device sees: the server shows you different directories",
                 c->gossip[i].from, (unsigned long long)g.size);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    c->n_gossip = 0;
    return err;
}

msv_err msv_client_monitor(struct msv_client *c, void (*on_alarm)(void *ctx, const char *warning),
                           void *ctx, size_t *alarms)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t next = 0, own_before, own_read;
    msv_err err = msv_client_connect(c);

    *alarms = 0;
    if (err == MSV_OK)
        err = msv_client_db_get(c->db, MONITORED, &v, &len);
    if (err == MSV_ERR_NOT_FOUND) {
        err = monitor_baseline(c, on_alarm, ctx, alarms);
        return err == MSV_OK ? check_gossip(c, on_alarm, ctx, alarms) : err;
    }
    if (err == MSV_OK && len != 8)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        next = msv_get_u64be(v);
    free(v);
    own_before = monitor_own_index(c);
    while (err == MSV_OK) {
        msv_frame *r = NULL;
        struct msv_kt_head head;
        uint8_t out[8];
        size_t n = 0;

        err = msv_request_log_read(c->conn, next, MSV_KT_READ_MAX, msv_kt_known_size(c->db), 0,
                                   TIMEOUT_MS, &r, &c->why);
        if (err == MSV_OK)
            err = msv_kt_check_entries(c->db, r->log_entries, next, &head, c->why.message,
                                       sizeof(c->why.message));
        if (err == MSV_OK)
            n = r->log_entries->n_entries;
        for (size_t i = 0; err == MSV_OK && i < n; i++)
            err = monitor_leaf(c, r->log_entries->entries[i], on_alarm, ctx, alarms);
        msv_frame_free(r);
        if (err != MSV_OK || n == 0)
            break;
        next += n;
        msv_put_u64be(out, next);
        err = msv_client_db_set(c->db, MONITORED, out, sizeof(out));
        if (next >= head.size)
            break;
    }
    own_read = monitor_own_index(c);
    if (err == MSV_OK)
        err = monitor_newest(c, own_read != own_before, next, on_alarm, ctx, alarms);
    return err == MSV_OK ? check_gossip(c, on_alarm, ctx, alarms) : err;
}
