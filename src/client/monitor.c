/*
 * The owner's monitor (docs/transparency.md, "The owner's monitor" and "The owner's versions"):
 * it reads every version of each of this account's handles in the key directory since it last
 * looked, each proven, none skipped, each listing only devices of this account's own; it marks
 * removed devices and raises the alarm when one comes back; it checks the history proof of each
 * handle's newest version, and compares the log heads messages brought.
 */
#include "client/internal.h"
#include "client/sessions.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/safety.h"
#include "client/transparency.h"
#include "missive/payload.h"
#include "missive/util.h"
#include "util/endian.h"

#define MONITORED "kt_monitored" /* set when watching began: u64be the log's size then */
/*
 * Where this device vouches from: the version of its own handle that first lists it (u64be its
 * log index); one zero byte while the monitor's first read has not reached it (the versions before
 * it are the account's before this device, or a previous account's: taken, not judged); absent for
 * a monitor that began before it was kept (it took the set listed then as the account's).
 */
#define JOINED "kt_monitor_joined"
/* set by the device that registered its handle: the version that first lists it lists no other */
#define REGISTERED "kt_registered"
/* the account's devices in its newest entry checked, u64be id and identity hash each */
#define MONITOR_SET "kt_monitor_set"
#define SET_RECORD (8 + 32)
#define HISTORY_CHECKED "kt_monitor_checked" /* u64be ms: the last history proof checked */
#define HISTORY_INTERVAL_MS (3600LL * 1000)
/* versions of one handle an owner lookup's answer holds, at most (docs/transparency.md) */
#define VERSIONS_PER_ANSWER 32
/* owner lookups of versions in one run of the monitor: the versions past them wait for the next */
#define ROUNDS_MAX 16
/* u64be ms: when a watch last read every version of the account's handles to the newest */
#define WATCH_COMPLETE "kt_monitor_complete"
/* a directory that keeps the monitor from reading its versions this long raises the alarm */
#define WATCH_STALL_MS (24LL * 3600 * 1000)

/* Where the monitor's alarms go. */
struct alarm_sink {
    void (*on_alarm)(void *, const char *);
    void *ctx;
    size_t *count;
    struct msv_client *c;
};

static void raise_alarm(const struct alarm_sink *a, const char *warning)
{
    (*a->count)++;
    if (a->on_alarm != NULL)
        a->on_alarm(a->ctx, warning);
}

/* An alarm about the versions of handle: the daemon's kt_history event too. */
static void raise_history_alarm(const struct alarm_sink *a, const char *handle, const char *warning)
{
    raise_alarm(a, warning);
    if (a->c != NULL && a->c->on_kt_history != NULL)
        a->c->on_kt_history(a->c->ctx, handle, warning);
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
 * The account's devices in entry e against the entry checked before it: a device that left is
 * marked removed; a removed device (the same id and key) listed again raises the alarm, once.
 */
static msv_err monitor_removed(struct msv_client *c, const struct msv_kt_entry *e,
                               const struct alarm_sink *a)
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
        raise_alarm(a, warning);
    }
    free(prev);
    return err == MSV_OK ? msv_client_db_set(c->db, MONITOR_SET, cur, e->n_devices * SET_RECORD)
                         : err;
}

/*
 * The tombstone of a handle this device watches as its account's: expected after a removal it
 * was told of (the handle_removed notice, client_handle_removed), and the watch of it ends; else
 * the server took the handle away by itself: the alarm, and the watch goes on, so that whoever
 * gets the handle next is seen too.
 */
static msv_err own_tombstone(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                             const struct alarm_sink *a)
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
    raise_alarm(a, warning);
    if (c->on_handle_taken != NULL)
        c->on_handle_taken(c->ctx, e->handle, index, warning);
    return MSV_OK;
}

/*
 * The signed device list of version e (docs/transparency.md, "Signed device lists", "What the
 * owner's monitor adds"), against the account's devices of the version checked before it (prev,
 * SET_RECORD each): every chain must hold, and a device new in e must be approved by a device
 * of prev (a chain record lets a removed one's approval stand; only the versions show when it
 * was made), or be a root or recovery after a version with no devices; else the alarm.
 */
static void check_chains(const struct msv_kt_entry *e, uint64_t index, const uint8_t *prev,
                         size_t n_prev, const struct alarm_sink *a)
{
    struct msv_kt_devlist dl;
    char warning[600];

    if (!e->signed_list)
        return;
    if (msv_kt_devlist_check(e, &dl) != MSV_OK) {
        snprintf(warning, sizeof(warning),
                 "the directory's device list of this account's handle %.256s (log entry %llu) "
                 "does not check out: its approvals name two roots or a record no device needs",
                 e->handle, (unsigned long long)index);
        raise_alarm(a, warning);
        return;
    }
    for (size_t i = 0; i < e->n_devices; i++) {
        const struct msv_kt_device *d = &e->devices[i];
        int is_new = 1, by_prev = 0;

        for (size_t k = 0; k < n_prev; k++) {
            is_new &= msv_get_u64be(prev + k * SET_RECORD) != d->device_id;
            by_prev |= d->approval.kind == MSV_KT_APPROVED &&
                       msv_get_u64be(prev + k * SET_RECORD) == d->approval.approver;
        }
        if (dl.chain[i] != MSV_KT_CHAIN_UNAPPROVED &&
            (!is_new || by_prev || d->approval.kind == MSV_KT_UNSIGNED ||
             (n_prev == 0 && d->approval.kind != MSV_KT_APPROVED)))
            continue;
        snprintf(warning, sizeof(warning),
                 dl.chain[i] == MSV_KT_CHAIN_UNAPPROVED
                     ? "the directory's transparency log lists device %llu for this account's "
                       "handle %.256s (log entry %llu) without a valid approval from its devices"
                     : "the directory's transparency log lists device %llu for this account's "
                       "handle %.256s (log entry %llu) approved by a device that was not one of "
                       "the account's devices then: if it is not one of yours, someone can read "
                       "what is sent to this account",
                 (unsigned long long)d->device_id, e->handle, (unsigned long long)index);
        raise_alarm(a, warning);
    }
}

/*
 * One version of one of this account's handles (log entry index): a tombstone is checked as
 * above; a device set must list only devices this device counts as the account's own (itself,
 * the set listed when watching began, devices it or an approval it checked added), else the
 * alarm, once per device; and a removed device must not come back.
 */
static msv_err check_entry(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                           const struct alarm_sink *a)
{
    msv_err err;

    uint8_t *prev = NULL;
    size_t prev_len = 0;

    if (e->deleted) /* a handle removed: it lists no device */
        return own_tombstone(c, e, index, a);
    err = msv_client_db_get(c->db, MONITOR_SET, &prev, &prev_len);
    if (err == MSV_OK || err == MSV_ERR_NOT_FOUND)
        check_chains(e, index, prev, err == MSV_OK ? prev_len / SET_RECORD : 0, a);
    free(prev);
    err = monitor_removed(c, e, a);
    for (size_t i = 0; err == MSV_OK && i < e->n_devices; i++) {
        char warning[400], fp[MSV_FINGERPRINT_TEXT_LEN] = "(unreadable identity)";
        uint8_t h[32] = {0};
        int alarmed = 0;

        if (client_device_hash(e->devices[i].suite, e->devices[i].identity,
                               e->devices[i].identity_len, h) == MSV_OK)
            msv_fingerprint_text(h, fp);
        err = msv_client_db_own_device_get(c->db, e->devices[i].device_id, h, &alarmed);
        if (err == MSV_OK)
            continue; /* known, or already alarmed */
        if (err != MSV_ERR_NOT_FOUND)
            break;
        err = msv_client_db_own_device_put(c->db, e->devices[i].device_id, h, 0, NULL, 0, 1);
        snprintf(warning, sizeof(warning),
                 "the directory's transparency log lists device %llu (fingerprint %s) for this "
                 "account, and this device was never told of it: if it is not one of yours, "
                 "someone can read what is sent to this account",
                 (unsigned long long)e->devices[i].device_id, fp);
        raise_alarm(a, warning);
    }
    return err;
}

/* What the monitor knows of each handle of one owner lookup: the version last checked. */
struct watch {
    const Msv__Wire__LookupResponse *r;
    char **handles;
    size_t n;
    uint32_t *version;
    uint64_t *index, *from; /* from: the versions asked for (1: the whole history) */
    uint8_t *bad;           /* a version of the handle was not proven: the rest wait */
    uint8_t *taken;         /* a version of the handle was taken from this answer (a flag) */
    int joined;             /* the versions before this device's first are behind */
};

/* e lists this device, with its own key. */
static int lists_self(const struct msv_client *c, const struct msv_kt_entry *e)
{
    uint8_t mine[32], h[32];

    msv_public_identity_hash(msv_identity_public(c->id), mine);
    for (size_t i = 0; i < e->n_devices; i++) {
        if (e->devices[i].device_id == c->device_id &&
            client_device_hash(e->devices[i].suite, e->devices[i].identity,
                               e->devices[i].identity_len, h) == MSV_OK &&
            sodium_memcmp(h, mine, sizeof(mine)) == 0)
            return 1;
    }
    return 0;
}

/*
 * The first version of this device's own handle that lists it: where it vouches from. A device
 * that registered the handle is its only device then (checked as every later version); one
 * approved into the account takes the devices listed with it as the account's, as it did when it
 * was linked.
 */
static msv_err take_joined(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                           const struct alarm_sink *a)
{
    uint8_t *v = NULL, at[8];
    size_t len = 0, none = 0;
    const struct alarm_sink quiet = {NULL, NULL, &none, NULL};
    msv_err err = msv_client_db_get(c->db, REGISTERED, &v, &len);
    int registered = err == MSV_OK;

    free(v);
    msv_put_u64be(at, index);
    if (registered)
        err = check_entry(c, e, index, a);
    else if (err == MSV_ERR_NOT_FOUND)
        err = monitor_removed(c, e, &quiet);
    for (size_t i = 0; err == MSV_OK && !registered && i < e->n_devices; i++) {
        uint8_t h[32];

        if (client_device_hash(e->devices[i].suite, e->devices[i].identity,
                               e->devices[i].identity_len, h) == MSV_OK)
            err =
                msv_client_db_own_device_put(c->db, e->devices[i].device_id, h, e->devices[i].suite,
                                             e->devices[i].identity, e->devices[i].identity_len, 0);
    }
    return err == MSV_OK ? msv_client_db_set(c->db, JOINED, at, sizeof(at)) : err;
}

/*
 * One version of handle h of w, in log order. Before this device's first version (a monitor's
 * first read goes from each handle's start) the versions are the account's before this device,
 * or a previous account's: taken (the removed devices marked), not judged. fresh: the first
 * version of a handle whose watch starts now: a tombstone there ends a previous account.
 */
static msv_err take_entry(struct msv_client *c, struct watch *w, size_t h,
                          const struct msv_kt_entry *e, uint64_t index, int fresh,
                          const struct alarm_sink *a)
{
    size_t none = 0;
    const struct alarm_sink quiet = {NULL, NULL, &none, NULL};

    if (!w->joined && !e->deleted && strcmp(w->handles[h], c->handle) == 0 && lists_self(c, e)) {
        w->joined = 1;
        return take_joined(c, e, index, a);
    }
    if (!w->joined || (fresh && e->deleted))
        return e->deleted ? MSV_OK : monitor_removed(c, e, &quiet);
    return check_entry(c, e, index, a);
}

/* A leaf a checked lookup answer carries (proven, its handle's, opened), as an entry. */
static msv_err entry_of(const Msv__Wire__LogProof *p, struct msv_kt_entry *e)
{
    ProtobufCBinaryData b = msv_kt_proof_entry(p);

    return msv_kt_leaf_parse(b.data, b.len, e);
}

static void skipped_alarm(const struct watch *w, size_t h, uint32_t shown, uint32_t expect,
                          uint64_t index, const struct alarm_sink *a)
{
    char warning[700];

    snprintf(warning, sizeof(warning),
             "the directory's key directory holds version %lu of this account's handle %s, but "
             "its transparency log holds version %lu (log entry %llu): versions were skipped or "
             "made outside the log, and others may be shown devices that are not yours",
             (unsigned long)shown, w->handles[h], (unsigned long)expect, (unsigned long long)index);
    raise_history_alarm(a, w->handles[h], warning);
}

/* The handle (index into w) of the next version to check in log order, below cutoff; n if none
 * is left. *at: its place in the result's versions. */
static size_t next_version(const struct watch *w, uint64_t cutoff, size_t *at)
{
    size_t best = w->n;
    uint64_t best_index = UINT64_MAX;

    for (size_t h = 0; h < w->n; h++) {
        const Msv__Wire__HandleDevices *hd = w->r->results[h];

        if (w->bad[h])
            continue;
        for (size_t k = 0; k < hd->n_versions; k++) {
            const Msv__Wire__LogProof *p = hd->versions[k]->entry;

            if (p == NULL || (w->version[h] > 0 && p->index <= w->index[h]) || p->index > cutoff)
                continue;
            if (p->index < best_index) {
                best = h;
                best_index = p->index;
                *at = k;
            }
            break; /* a handle's versions come in order: its first unchecked one is its next */
        }
    }
    return best;
}

/*
 * Checks the versions one answer shows, all handles together in log order (the account's device
 * set moves from one entry to the next across its handles), up to the first one a handle with
 * more versions to come would reach; each version proven, the one after the handle's last.
 */
static msv_err take_versions(struct msv_client *c, struct watch *w, const struct alarm_sink *a,
                             int *more, int *changed)
{
    static _Thread_local struct msv_kt_entry e;
    uint64_t cutoff = UINT64_MAX;
    size_t h, at = 0, given = 0;
    msv_err err = MSV_OK;

    *more = 0;
    for (h = 0; h < w->n; h++) {
        const Msv__Wire__HandleDevices *hd = w->r->results[h];

        if (hd->n_versions > VERSIONS_PER_ANSWER) { /* the protocol's bound, and this code's */
            snprintf(c->why.message, sizeof(c->why.message),
                     "it gives %zu versions of %s in one answer, more than the %d an answer holds",
                     hd->n_versions, w->handles[h], VERSIONS_PER_ANSWER);
            return MSV_ERR_AUTH;
        }
        given += w->from[h] != 0 ? hd->n_versions : 0;
        if (w->from[h] == 0 || !hd->versions_more)
            continue;
        *more = 1;
        /* past its last version given, that handle's next versions come first */
        if (hd->n_versions == 0 || hd->versions[hd->n_versions - 1]->entry == NULL)
            cutoff = cutoff < w->index[h] ? cutoff : w->index[h];
        else if (hd->versions[hd->n_versions - 1]->entry->index < cutoff)
            cutoff = hd->versions[hd->n_versions - 1]->entry->index;
    }
    if (*more && given == 0) {
        /* an honest directory gives at least one version in an answer that says more follow:
         * "more" with none given would keep the monitor from ever reaching the newest */
        for (h = 0; h < w->n; h++) {
            char warning[600];

            if (w->from[h] == 0 || !w->r->results[h]->versions_more)
                continue;
            snprintf(warning, sizeof(warning),
                     "the directory says versions of this account's handle %s follow but shows "
                     "none: it keeps this device from checking what others are shown for it",
                     w->handles[h]);
            raise_history_alarm(a, w->handles[h], warning);
            w->bad[h] = 1;
        }
        *more = 0;
        return MSV_OK;
    }
    while (err == MSV_OK && (h = next_version(w, cutoff, &at)) < w->n) {
        const Msv__Wire__HandleVersion *v = w->r->results[h]->versions[at];
        char warning[600];

        if (msv_kt_check_owner_version(w->r, w->handles[h], v, &e) != MSV_OK) {
            snprintf(warning, sizeof(warning),
                     "the directory does not prove version %lu of this account's handle %s in "
                     "its key directory: it may show others devices that are not yours",
                     (unsigned long)v->version, w->handles[h]);
            raise_history_alarm(a, w->handles[h], warning);
            w->bad[h] = 1;
            continue;
        }
        /* the first version given may be the handle's newest tombstone: the directory gives
         * none before it (a previous account's, or this one's before it removed the handle) */
        if (v->version != w->version[h] + 1 && !(e.deleted && w->taken[h] == 0))
            skipped_alarm(w, h, v->version, w->version[h] + 1, v->entry->index, a);
        err = take_entry(c, w, h, &e, v->entry->index, w->version[h] == 0, a);
        w->taken[h] = 1; /* a flag, never a count: 256 versions would wrap a uint8_t to 0 */
        w->version[h] = v->version;
        w->index[h] = v->entry->index;
        if (err == MSV_OK)
            err = client_history_put(c, w->handles[h], w->version[h], w->index[h]);
        *changed = 1;
    }
    return err;
}

/*
 * Each handle's newest entry the answer shows, against the versions checked: never older; a
 * newer one no version showed (a handle the server no longer lists as the account's gets none)
 * is checked itself, and must be the next version (version 1 for a handle read from its start
 * whose versions the directory did not give).
 */
static msv_err take_newest(struct msv_client *c, struct watch *w, const struct alarm_sink *a,
                           int *changed)
{
    static _Thread_local struct msv_kt_entry e;
    msv_err err = MSV_OK;

    for (size_t h = 0; err == MSV_OK && h < w->n; h++) {
        const Msv__Wire__HandleDevices *hd = w->r->results[h];
        uint32_t shown = msv_kt_result_version(hd), expect = w->version[h] + 1;
        char warning[700];

        if (w->bad[h] || hd->proof == NULL || entry_of(hd->proof, &e) != MSV_OK)
            continue;
        if (w->from[h] != 0 && hd->proof->index == w->index[h] && shown == w->version[h])
            continue; /* nothing new */
        if (w->from[h] != 0 && (hd->proof->index < w->index[h] || shown < w->version[h])) {
            snprintf(warning, sizeof(warning),
                     "the directory serves this account's devices under %s from an older log "
                     "entry than entry %llu: others may be sealing messages to devices it no "
                     "longer has",
                     w->handles[h], (unsigned long long)w->index[h]);
            raise_alarm(a, warning);
            continue;
        }
        if (w->version[h] == 0) {
            /* a handle read from its start, whose versions the directory did not give */
            if (shown > 1 && !e.deleted)
                skipped_alarm(w, h, shown, 1, hd->proof->index, a);
            err = take_entry(c, w, h, &e, hd->proof->index, 1, a);
            if (err == MSV_OK)
                err = client_history_put(c, w->handles[h], shown, hd->proof->index);
            *changed = 1;
            continue;
        }
        if (w->from[h] != 0 && hd->tombstone != NULL && hd->tombstone->index > w->index[h]) {
            static _Thread_local struct msv_kt_entry t;

            /* taken away and registered again since: the tombstone is a version too */
            if (entry_of(hd->tombstone, &t) == MSV_OK &&
                (err = own_tombstone(c, &t, hd->tombstone->index, a)) != MSV_OK)
                break;
            expect++;
        }
        if (w->from[h] != 0 && shown != expect)
            skipped_alarm(w, h, shown, expect, hd->proof->index, a);
        err = take_entry(c, w, h, &e, hd->proof->index, 0, a);
        if (err == MSV_OK)
            err = client_history_put(c, w->handles[h], shown, hd->proof->index);
        *changed = 1;
    }
    return err;
}

static void watch_free(struct watch *w)
{
    msv_handles_free(w->handles, w->n);
    free(w->version);
    free(w->index);
    free(w->from);
    free(w->bad);
    free(w->taken);
}

/* The handles to watch, each with the version last checked (0 before the first). */
static msv_err watch_init(struct msv_client *c, struct watch *w)
{
    msv_err err = client_own_handles_known(c, &w->handles, &w->n);

    if (err != MSV_OK)
        return err;
    w->version = calloc(w->n, sizeof(*w->version));
    w->index = calloc(w->n, sizeof(*w->index));
    w->from = calloc(w->n, sizeof(*w->from));
    w->bad = calloc(w->n, 1);
    w->taken = calloc(w->n, 1);
    if (w->version == NULL || w->index == NULL || w->from == NULL || w->bad == NULL ||
        w->taken == NULL)
        return MSV_ERR_NOMEM;
    for (size_t h = 0; err == MSV_OK && h < w->n; h++) {
        err = client_history_get(c, w->handles[h], &w->version[h], &w->index[h]);
        if (err == MSV_OK)
            w->from[h] = w->index[h] + 1;
        else if (err == MSV_ERR_NOT_FOUND) {
            /* a handle not watched yet is read from its start (the directory gives nothing
             * before its newest tombstone): 1 asks for the whole history */
            w->from[h] = 1;
            err = MSV_OK;
        }
    }
    if (err == MSV_OK) {
        uint8_t *v = NULL;
        size_t len = 0;

        err = msv_client_db_get(c->db, JOINED, &v, &len);
        free(v);
        w->joined = err == MSV_ERR_NOT_FOUND || len == 8;
        if (err == MSV_ERR_NOT_FOUND)
            err = MSV_OK;
    }
    return err;
}

/*
 * One owner lookup of the account's handles, with the versions of each since the monitor last
 * looked (and the history proofs if history), checked. *more: versions are left to read.
 * MSV_ERR_AUTH: the answer was refused (c->why says why).
 */
static msv_err watch_round(struct msv_client *c, int history, const struct alarm_sink *a, int *more,
                           int *changed)
{
    struct watch w = {0};
    msv_frame *r = NULL;
    msv_err err = watch_init(c, &w);

    *more = 0;
    if (err == MSV_OK)
        err = client_owner_lookup(c, (const char *const *)w.handles, w.n, history, w.from, &r);
    if (err == MSV_OK && history)
        err = client_history_check(c, r->lookup_result, a->on_alarm, a->ctx, a->count);
    w.r = err == MSV_OK ? r->lookup_result : NULL;
    if (err == MSV_OK)
        err = take_versions(c, &w, a, more, changed);
    if (err == MSV_OK && !*more)
        err = take_newest(c, &w, a, changed);
    msv_frame_free(r);
    watch_free(&w);
    return err;
}

/* The history proofs were last checked an hour ago or more (or never). */
static int history_due(struct msv_client *c)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int due = msv_client_db_get(c->db, HISTORY_CHECKED, &v, &len) != MSV_OK || len != 8 ||
              msv_wall_ms() - (int64_t)msv_get_u64be(v) >= HISTORY_INTERVAL_MS;

    free(v);
    return due;
}

/*
 * The directory limited the watch's lookup: it waits for next time, unless no watch has read the
 * handles' versions to the newest for WATCH_STALL_MS (a directory that always says "slow down" to
 * the monitor alone would hide every version from it): then the alarm, once a day.
 */
static msv_err watch_stalled(struct msv_client *c, const struct alarm_sink *a)
{
    uint8_t *v = NULL, when[8];
    size_t len = 0;
    int64_t now = msv_wall_ms(), last;
    char warning[400];

    msv_put_u64be(when, (uint64_t)now);
    if (msv_client_db_get(c->db, WATCH_COMPLETE, &v, &len) != MSV_OK || len != 8) {
        free(v); /* none yet: counted from now */
        return msv_client_db_set(c->db, WATCH_COMPLETE, when, sizeof(when));
    }
    last = (int64_t)msv_get_u64be(v);
    free(v);
    if (now - last < WATCH_STALL_MS)
        return MSV_OK;
    snprintf(warning, sizeof(warning),
             "the directory has not let this device check its account's handles for %lld hours "
             "(it answers \"slow down\"): what others are shown for this account is unchecked",
             (long long)((now - last) / 3600000));
    raise_alarm(a, warning);
    /* said again a day later, not on every receive */
    return msv_client_db_set(c->db, WATCH_COMPLETE, when, sizeof(when));
}

/*
 * Reads the versions of the account's handles since the monitor last looked, in rounds (an
 * answer holds a bounded number), with the history proofs when they are due (hourly) or when a
 * version was read. A lookup the relay limits waits for next time; a refused answer is an alarm.
 */
static msv_err watch(struct msv_client *c, const struct alarm_sink *a)
{
    int history = history_due(c), more = 1, changed = 0, proven = history;
    uint8_t when[8];
    msv_err err = MSV_OK;

    for (int round = 0; err == MSV_OK && more && round < ROUNDS_MAX; round++)
        err = watch_round(c, history && round == 0, a, &more, &changed);
    if (err == MSV_OK && changed && !history) {
        err = watch_round(c, 1, a, &more, &changed);
        proven = 1;
    }
    if (err == MSV_ERR_INVALID && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED)
        return watch_stalled(c, a);
    msv_put_u64be(when, (uint64_t)msv_wall_ms());
    if (err == MSV_OK && !more &&
        msv_client_db_set(c->db, WATCH_COMPLETE, when, sizeof(when)) != MSV_OK)
        return MSV_ERR_IO;
    if ((err == MSV_OK || err == MSV_ERR_AUTH) && proven &&
        msv_client_db_set(c->db, HISTORY_CHECKED, when, sizeof(when)) != MSV_OK)
        return MSV_ERR_IO;
    if (err == MSV_ERR_AUTH) {
        char warning[400];

        snprintf(warning, sizeof(warning), "the directory's answer for this account: %s",
                 c->why.message);
        raise_alarm(a, warning);
        return MSV_OK;
    }
    return err;
}

/*
 * The monitor's first run: each handle's versions are read from its start, not taken as the
 * directory lists them now (a monitor that starts late would otherwise vouch for a device added
 * behind the account's back before it ran): those before this device's first version are taken,
 * every later one checked (take_entry).
 */
static msv_err monitor_baseline(struct msv_client *c, const struct alarm_sink *a)
{
    uint8_t next[8];
    const uint8_t pending = 0;
    msv_err err = msv_client_db_set(c->db, JOINED, &pending, 1);

    msv_put_u64be(next, msv_kt_known_size(c->db));
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, MONITORED, next, sizeof(next));
    return err == MSV_OK ? watch(c, a) : err;
}

/* Compares the heads received messages carried with this device's (after its versions were read).
 */
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
    const struct alarm_sink a = {on_alarm, ctx, alarms, c};
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_connect(c);

    *alarms = 0;
    if (err == MSV_OK)
        err = msv_client_db_get(c->db, MONITORED, &v, &len);
    free(v);
    if (err == MSV_ERR_NOT_FOUND)
        err = monitor_baseline(c, &a);
    else if (err == MSV_OK)
        err = watch(c, &a);
    if (err == MSV_OK)
        err = client_lineage_check(c, on_alarm, ctx, alarms);
    return err == MSV_OK ? check_gossip(c, on_alarm, ctx, alarms) : err;
}
