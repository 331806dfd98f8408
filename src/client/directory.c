/*
 * The directory: looking devices up (checked against the transparency log) and remembering them.
 */
#include "client/internal.h"
#include "client/link.h"
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
#include "missive/kt.h"
#include "missive/payload.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"
#include "util/buf.h"
#include "util/privdir.h"

/* and a handle: i64be when this device learnt it is a new account, u64be the log index of the
 * new account's entry that told it */
#define RENEWED_AT "renewed-at:"

/* handle's RENEWED_AT key, the handle folded as the directory keeps it (a send names it as the
 * user typed it) */
static void renewed_key(const char *handle, char key[sizeof(RENEWED_AT) + MSV_HANDLE_MAX + 1])
{
    char folded[MSV_HANDLE_MAX + 1];

    if (!msv_handle_fold((const uint8_t *)handle, strlen(handle), MSV_HANDLE_MAX, folded))
        snprintf(folded, sizeof(folded), "%.*s", MSV_HANDLE_MAX, handle);
    snprintf(key, sizeof(RENEWED_AT) + MSV_HANDLE_MAX + 1, RENEWED_AT "%s", folded);
}

/*
 * handle's account was deleted and registered again (log entry index of the new account): when
 * this device learnt it is kept (client_renewed_since), the sessions with the devices known of
 * it go (a verified mark stays, no longer matching), and the user is told (on_account_new)
 * before msv_kt_renewed_told.
 */
static msv_err new_account(struct msv_client *c, const char *handle, uint64_t index)
{
    struct msv_known_device *devs = NULL;
    size_t n = 0;
    char key[sizeof(RENEWED_AT) + MSV_HANDLE_MAX + 1];
    uint8_t at[16], *was = NULL;
    size_t was_len = 0;
    msv_err err = msv_client_db_known_devices(c->db, handle, &devs, &n);

    /* first, so that a crash after it withholds what was written before; told of the same entry
     * again (a crash before the telling ended, or two processes telling at once), the time it
     * was first learnt stays: what the user wrote since goes */
    renewed_key(handle, key);
    msv_put_u64be(at, (uint64_t)msv_wall_ms());
    msv_put_u64be(at + 8, index);
    if (err == MSV_OK && (msv_client_db_get(c->db, key, &was, &was_len) != MSV_OK ||
                          was_len != sizeof(at) || msv_get_u64be(was + 8) != index))
        err = msv_client_db_set(c->db, key, at, sizeof(at));
    free(was);

    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = msv_sessions_forget(c, devs[i].device_id);
    msv_known_devices_free(devs, n);
    /* a verified mark stays: it no longer matches, and sends stop until the user compares the
     * new safety number or accepts it, as for any verified contact whose devices changed */
    if (err == MSV_OK && c->on_account_new != NULL)
        c->on_account_new(c->ctx, handle);
    return err == MSV_OK ? msv_kt_renewed_told(c->db, handle) : err;
}

int client_renewed_since(struct msv_client *c, const char *handle, int64_t since_ms)
{
    char key[sizeof(RENEWED_AT) + MSV_HANDLE_MAX + 1];
    uint8_t *v = NULL, now[16] = {0};
    size_t len = 0;
    int64_t at;
    msv_err err;

    renewed_key(handle, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_ERR_NOT_FOUND)
        return 0;
    if (err != MSV_OK)
        return 1; /* unknown: withheld rather than sent */
    at = len == 16 ? (int64_t)msv_get_u64be(v) : INT64_MAX;
    if (len == 16)
        memcpy(now + 8, v + 8, 8); /* the entry's index stays */
    free(v);
    /* dated ahead of the clock (it was set back), or unreadable: counted from now, so that what
     * is written from now on goes */
    if (at > msv_wall_ms()) {
        at = msv_wall_ms();
        msv_put_u64be(now, (uint64_t)at);
        if (msv_client_db_set(c->db, key, now, sizeof(now)) != MSV_OK)
            at = msv_wall_ms(); /* not kept: counted from now again next time */
    }
    return at >= since_ms;
}

int client_renewed_any(struct msv_client *c)
{
    struct msv_setting *set = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_settings(c->db, RENEWED_AT, 1, &set, &n);

    msv_settings_free(set, n);
    return err != MSV_OK || n > 0;
}

/* Tells of each handle of an accepted answer that is a new account, before its devices are
 * remembered (so the old account's are the ones forgotten). */
static msv_err new_accounts(struct msv_client *c, const Msv__Wire__LookupResponse *r)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < r->n_results; i++) {
        char handle[257];
        uint64_t index = 0;

        snprintf(handle, sizeof(handle), "%.*s", (int)r->results[i]->handle.len,
                 (const char *)r->results[i]->handle.data);
        if (msv_kt_renewed_index(c->db, handle, &index))
            err = new_account(c, handle, index);
    }
    return err;
}

msv_err client_refusal_add(struct client_refusals *r, const char *handle, const char *why,
                           msv_err err)
{
    char **handles, **whys;
    unsigned char *gone;
    msv_err *errs;

    if (client_is_refused(r, handle))
        return MSV_OK;
    handles = realloc(r->handle, (r->n + 1) * sizeof(*handles));
    if (handles != NULL)
        r->handle = handles;
    whys = realloc(r->why, (r->n + 1) * sizeof(*whys));
    if (whys != NULL)
        r->why = whys;
    errs = realloc(r->err, (r->n + 1) * sizeof(*errs));
    if (errs != NULL)
        r->err = errs;
    gone = realloc(r->gone, r->n + 1);
    if (gone != NULL)
        r->gone = gone;
    if (handles == NULL || whys == NULL || errs == NULL || gone == NULL)
        return MSV_ERR_NOMEM;
    r->handle[r->n] = strdup(handle);
    r->why[r->n] = strdup(why);
    r->err[r->n] = err;
    r->gone[r->n] = 0;
    if (r->handle[r->n] == NULL || r->why[r->n] == NULL) {
        free(r->handle[r->n]);
        free(r->why[r->n]);
        return MSV_ERR_NOMEM;
    }
    r->n++;
    return MSV_OK;
}

msv_err client_refusal_gone(struct client_refusals *r, const char *handle, const char *why,
                            msv_err err)
{
    size_t before = r->n;
    msv_err e = client_refusal_add(r, handle, why, err);

    if (e == MSV_OK && r->n > before)
        r->gone[before] = 1;
    return e;
}

size_t client_refusal_find(const struct client_refusals *r, const char *handle)
{
    size_t i = 0;

    while (r != NULL && i < r->n && strcmp(r->handle[i], handle) != 0)
        i++;
    return i;
}

int client_is_refused(const struct client_refusals *r, const char *handle)
{
    return r != NULL && client_refusal_find(r, handle) < r->n;
}

void client_refusals_clear(struct client_refusals *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->handle[i]);
        free(r->why[i]);
    }
    free(r->handle);
    free(r->why);
    free(r->err);
    free(r->gone);
    memset(r, 0, sizeof(*r));
}

/* Drops the refusals for which drop(r, i) holds. */
static void forget_where(struct client_refusals *r,
                         int (*drop)(const struct client_refusals *, size_t))
{
    size_t kept = 0;

    for (size_t i = 0; i < r->n; i++) {
        if (drop(r, i)) {
            free(r->handle[i]);
            free(r->why[i]);
            continue;
        }
        r->handle[kept] = r->handle[i];
        r->why[kept] = r->why[i];
        r->err[kept] = r->err[i];
        r->gone[kept++] = r->gone[i];
    }
    r->n = kept;
}

static int is_renewed(const struct client_refusals *r, size_t i)
{
    return r->gone[i] == REFUSED_RENEWED;
}

static int is_full_queue(const struct client_refusals *r, size_t i)
{
    return !r->gone[i] && r->err[i] == MSV_ERR_TOO_BIG;
}

void client_refusals_forget_renewed(struct client_refusals *r)
{
    forget_where(r, is_renewed);
}

void client_refusals_forget_full(struct client_refusals *r)
{
    forget_where(r, is_full_queue);
}

/*
 * Result i of view (the answer's results kept, at[i] their places in the answer for handles) is
 * refused for why (err): its devices dropped, the next lookup of its handle due, and it leaves
 * view.
 */
static msv_err set_aside(struct msv_client *c, const char *const *handles,
                         Msv__Wire__LookupResponse *view, size_t *at, size_t i, const char *why,
                         msv_err err, struct client_refusals *refused)
{
    msv_err e = client_refusal_add(refused, handles[at[i]], why, err);

    if (e == MSV_OK)
        e = msv_kt_lookup_make_due(c->db, handles[at[i]]);
    if (e != MSV_OK)
        return e;
    client_devices_drop(view->results[i]);
    view->n_results--;
    memmove(&view->results[i], &view->results[i + 1],
            (view->n_results - i) * sizeof(*view->results));
    memmove(&at[i], &at[i + 1], (view->n_results - i) * sizeof(*at));
    memset(&c->why, 0, sizeof(c->why));
    return MSV_OK;
}

/*
 * A send's checks of r, the answer for handles: a result for another handle than the one asked
 * in its place, or one that fails its own checks, is refused (set_aside) and the others are
 * checked again without it; *view holds the results kept (freed by the caller). An answer that
 * fails as a whole, or of which no result checks out, fails.
 */
static msv_err check_each(struct msv_client *c, const char *const *handles,
                          Msv__Wire__LookupResponse *r, struct client_refusals *refused,
                          Msv__Wire__LookupResponse *view)
{
    size_t *at = calloc(r->n_results + 1, sizeof(*at)), bad = SIZE_MAX;
    msv_err err = MSV_OK;

    *view = *r;
    view->results = calloc(r->n_results + 1, sizeof(*view->results));
    if (at == NULL || view->results == NULL) {
        free(at);
        return MSV_ERR_NOMEM;
    }
    memcpy(view->results, r->results, r->n_results * sizeof(*r->results));
    for (size_t i = 0; i < r->n_results; i++) {
        at[i] = i;
        if (r->results[i] == NULL)
            err = MSV_ERR_PARSE;
    }
    for (size_t i = 0; err == MSV_OK && i < view->n_results;) {
        char why[600];

        if (msv_lookup_result_is_for(view->results[i], handles[at[i]])) {
            i++;
            continue;
        }
        snprintf(why, sizeof(why),
                 "the directory answered the lookup of %.256s with another handle than the one "
                 "asked: nothing it said of it is used",
                 handles[at[i]]);
        err = set_aside(c, handles, view, at, i, why, MSV_ERR_AUTH, refused);
    }
    while (err == MSV_OK && view->n_results > 0 &&
           (err = msv_kt_check_lookup_at(c->db, view, &bad, c->why.message,
                                         sizeof(c->why.message))) != MSV_OK &&
           bad < view->n_results)
        err = set_aside(c, handles, view, at, bad, c->why.message, err, refused);
    /* nothing left that checks out: the answer is refused as a whole, and nothing of it (its
     * head, its key directory's VRF key) is remembered */
    if (err == MSV_OK && view->n_results == 0 && r->n_results > 0) {
        snprintf(c->why.message, sizeof(c->why.message), "%s", refused->why[refused->n - 1]);
        err = refused->err[refused->n - 1];
    }
    free(at);
    return err;
}

/* Asks the directory, and checks its answer against the transparency log; with refused (a
 * send's lookup), results that fail alone are refused (check_each). */
static msv_err checked_lookup(struct msv_client *c, const char *const *handles, size_t n,
                              int history, const uint64_t *versions_from, msv_frame **result,
                              struct client_refusals *refused)
{
    msv_err err =
        refused != NULL
            ? msv_request_send_lookup(c->conn, handles, n, msv_kt_known_size(c->db), TIMEOUT_MS,
                                      result, &c->why)
            : msv_request_owner_lookup(c->conn, handles, n, history, versions_from,
                                       msv_kt_known_size(c->db), TIMEOUT_MS, result, &c->why);
    Msv__Wire__LookupResponse view = MSV__WIRE__LOOKUP_RESPONSE__INIT;

    if (err == MSV_OK) {
        if (refused != NULL)
            err = check_each(c, handles, (*result)->lookup_result, refused, &view);
        else
            err = msv_kt_check_lookup(c->db, (*result)->lookup_result, c->why.message,
                                      sizeof(c->why.message));
        if (refused == NULL)
            view = *(*result)->lookup_result;
        if (err == MSV_OK)
            err = new_accounts(c, &view);
        /* a sender's lookup: only devices the account approved are sent to (the owner's
         * monitor reads its own answers whole) */
        if (err == MSV_OK && !history && versions_from == NULL)
            err = client_devlist_check(c, &view);
        if (err != MSV_OK) {
            msv_frame_free(*result);
            *result = NULL;
        }
    }
    if (refused != NULL)
        free(view.results);
    return err;
}

msv_err client_owner_lookup(struct msv_client *c, const char *const *handles, size_t n, int history,
                            const uint64_t *versions_from, msv_frame **result)
{
    return checked_lookup(c, handles, n, history, versions_from, result, NULL);
}

/* Moves tail's results after head's (each was checked on its own); tail keeps none. */
static msv_err join_lookups(msv_frame *head, msv_frame *tail)
{
    Msv__Wire__LookupResponse *h = head->lookup_result, *t = tail->lookup_result;
    Msv__Wire__HandleDevices **all;

    if (h->n_results > SIZE_MAX / sizeof(*all) - t->n_results)
        return MSV_ERR_NOMEM;
    all = realloc(h->results, (h->n_results + t->n_results) * sizeof(*all));
    if (all == NULL)
        return MSV_ERR_NOMEM;
    memcpy(all + h->n_results, t->results, t->n_results * sizeof(*all));
    h->results = all;
    h->n_results += t->n_results;
    t->n_results = 0;
    return MSV_OK;
}

/*
 * The directory's answer, checked. An answer too big for a frame (accounts of
 * many devices) is asked for in halves, each checked against the log.
 */
static msv_err verified_lookup(struct msv_client *c, const char *const *handles, size_t n,
                               msv_frame **result, struct client_refusals *refused)
{
    msv_frame *tail = NULL;
    size_t half = n / 2;
    msv_err err = checked_lookup(c, handles, n, 0, NULL, result, refused);

    if (err != MSV_ERR_TOO_BIG || n < 2)
        return err;
    err = verified_lookup(c, handles, half, result, refused);
    if (err == MSV_OK)
        err = verified_lookup(c, handles + half, n - half, &tail, refused);
    if (err == MSV_OK)
        err = join_lookups(*result, tail);
    msv_frame_free(tail);
    if (err != MSV_OK) {
        msv_frame_free(*result);
        *result = NULL;
    } else {
        memset(&c->why, 0, sizeof(c->why)); /* the refusal of the whole was answered */
    }
    return err;
}

msv_err client_verified_lookup(struct msv_client *c, const char *const *handles, size_t n,
                               msv_frame **result)
{
    return verified_lookup(c, handles, n, result, NULL);
}

msv_err client_send_lookup(struct msv_client *c, const char *const *handles, size_t n,
                           msv_frame **result, struct client_refusals *refused)
{
    return verified_lookup(c, handles, n, result, refused);
}

/* Remembers what the directory says of a handle; reports a changed device set. */
msv_err client_remember(struct msv_client *c, const Msv__Wire__HandleDevices *hd)
{
    struct msv_known_device *devs = calloc(hd->n_devices + 1, sizeof(*devs));
    char handle[257];
    int changed = 0;
    msv_err err;

    if (devs == NULL)
        return MSV_ERR_NOMEM;
    snprintf(handle, sizeof(handle), "%.*s", (int)hd->handle.len, (const char *)hd->handle.data);
    for (size_t i = 0; i < hd->n_devices; i++) {
        devs[i].device_id = hd->devices[i]->device_id;
        devs[i].suite = hd->devices[i]->suite;
        devs[i].identity = hd->devices[i]->identity.data;
        devs[i].identity_len = hd->devices[i]->identity.len;
    }
    err = msv_client_db_known_replace(c->db, handle, devs, hd->n_devices, msv_wall_ms(), &changed);
    free(devs);
    if (err == MSV_OK && changed && c->on_key_change != NULL)
        c->on_key_change(c->ctx, handle);
    return err;
}

msv_err msv_client_devices(struct msv_client *c, const char *handle, msv_frame **result)
{
    const char *h = handle ? handle : c->handle;
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = client_verified_lookup(c, &h, 1, result);
    if (err == MSV_OK)
        err = client_remember(c, (*result)->lookup_result->results[0]);
    return err;
}

/* A device request of the account (remove, approve): Ok, or the server's refusal (its words in
 * c->why). */
static msv_err device_request(struct msv_client *c, Msv__Wire__Frame *req)
{
    msv_frame *resp = NULL;
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_conn_request(c->conn, req, TIMEOUT_MS, &resp);
    /* refused: the server's words, for the user (a device that no longer waits, an account
     * at its limit of devices, an approval that does not verify) */
    if (err == MSV_OK && resp->body_case != MSV__WIRE__FRAME__BODY_OK)
        err = msv_request_answer_refusal(c->conn, resp, &c->why);
    msv_frame_free(resp);
    return err;
}

msv_err msv_client_remove_device(struct msv_client *c, uint64_t device_id)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;

    msv_err err;

    /* recorded before the request: a removal the server made whose answer never came (or a
     * crash after it) is committed out of the groups on MLS all the same (a record of none
     * costs one look at the directory) */
    if (device_id != c->device_id && client_mls_out_due(c, device_id) != MSV_OK)
        c->why.message[0] = '\0';
    rm.device_id = device_id;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    err = device_request(c, &req);
    /* refused for good (an answer, not a lost connection): the device stays, nothing waits
     * (should that fail to be written, the record waits for the directory: told in 7 days) */
    if (err != MSV_OK && err != MSV_ERR_IO && device_id != c->device_id) {
        msv_err forgot = client_mls_out_forget(c, device_id);

        (void)forgot; /* the server's refusal is what is said */
    }
    /* a device gone is owed no history any more (it would hold a place of the few owed) */
    if (err == MSV_OK)
        err = msv_link_history_forget(c, device_id);
    /* its leaves in the groups on MLS this device is in committed out now (what cannot be
     * now is tried again at the next receive; the removal stands) */
    if (err == MSV_OK && device_id != c->device_id) {
        client_mls_outs(c);
        c->why.message[0] = '\0';
    }
    return err;
}

void client_pending_key(uint64_t device_id, char key[40])
{
    snprintf(key, 40, "pending:%llu", (unsigned long long)device_id);
}

msv_err client_approve_device(struct msv_client *c, uint64_t device_id, int copy_groups)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ApproveDevice ap = MSV__WIRE__APPROVE_DEVICE__INIT;
    uint8_t *req_bytes = NULL, hash[32], msg[14 + 1 + 255 + 8 + 32], sig[MSV_SIGNATURE_MAX],
            chain[MSV_KT_APPROVAL_SIG_MAX];
    size_t req_len = 0, sig_len = 0, chain_len = 0, failed = 0;
    int owed_here = 0;
    char key[40];
    msv_err err;

    /* the request this device received: its key is what the approval vouches for */
    client_pending_key(device_id, key);
    err = msv_client_db_get(c->db, key, &req_bytes, &req_len);
    if (err == MSV_ERR_NOT_FOUND) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "this device has not received device %llu's request to join",
                 (unsigned long long)device_id);
        return err;
    }
    if (err == MSV_OK && (req_len < 1 || client_device_hash(req_bytes[0], req_bytes + 1,
                                                            req_len - 1, hash) != MSV_OK))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        err = msv_identity_sign(
            c->id, msg, client_approval_message(c->handle, device_id, hash, msg), sig, &sig_len);
    /* the record the directory's device sets carry (docs/transparency.md, "Signed device
     * lists") */
    if (err == MSV_OK)
        err = msv_kt_approval_sign(c->id, MSV_KT_APPROVED, device_id, hash, c->device_id, chain,
                                   &chain_len);
    /* owed before the approval goes: a process stopped after it sends them later */
    if (err == MSV_OK && copy_groups)
        err = client_groups_copy_owe(c, &owed_here);
    if (err == MSV_OK) {
        ap.device_id = device_id;
        ap.approval = (ProtobufCBinaryData){sig_len, sig};
        ap.chain_approval = (ProtobufCBinaryData){chain_len, chain};
        req.body_case = MSV__WIRE__FRAME__BODY_APPROVE_DEVICE;
        req.approve_device = &ap;
        err = device_request(c, &req);
        /* refused: nothing owed (the network: it may have been approved, and copies to a
         * device that was not are ignored by the account's devices, which hold the groups) */
        if (err != MSV_OK && err != MSV_ERR_IO && owed_here)
            (void)client_groups_copy_unowe(c); /* else sent after a command: harmless */
    }
    if (err == MSV_OK) /* approved here: this account's own, for this device's monitor */
        err = msv_client_db_own_device_put(c->db, device_id, hash, req_bytes[0], req_bytes + 1,
                                           req_len - 1, 0);
    /* it joins the groups on MLS this device is in, once it has published a KeyPackage (should
     * that not be recorded, an admin's next change adds it: the approval stands) */
    if (err == MSV_OK && client_mls_join_due(c, device_id) != MSV_OK)
        c->why.message[0] = '\0';
    free(req_bytes);
    /* the new device gets the whole synced state; what cannot go now stays pending, for the
     * next flush */
    if (err == MSV_OK && msv_client_db_sync_resend_all(c->db) == MSV_OK &&
        client_sync_flush(c, NULL, 1) != MSV_OK)
        c->why.message[0] = '\0';
    /* and the groups this device holds: a group's Welcome is taken only by a device that holds
     * the group (one that comes by QR code has them in its provisioning message). The approval
     * stands if some cannot go; c->why says so */
    if (err == MSV_OK && copy_groups) {
        char why[sizeof(c->why.message)];

        err = client_groups_copy(c, &failed);
        snprintf(why, sizeof(why), "%s", c->why.message);
        if (err == MSV_OK && failed > 0)
            snprintf(c->why.message, sizeof(c->why.message),
                     "%zu group%s could not be copied to device %llu yet (%.110s): tried again "
                     "hourly, after a command, for a week",
                     failed, failed == 1 ? "" : "s", (unsigned long long)device_id, why);
    }
    return err;
}

msv_err msv_client_approve_device(struct msv_client *c, uint64_t device_id)
{
    memset(&c->why, 0, sizeof(c->why));
    return client_approve_device(c, device_id, 1);
}
