/*
 * The owner's history proof (docs/transparency.md, "The owner's history proof"): for each of
 * the account's handles, the monitor counts the log entries of the handle it reads, and checks
 * that the key directory holds exactly that many versions of it: the newest the version the
 * count gives, committing to the newest entry read, and every marker version a later one would
 * need absent. A version that is in the key directory but not in the log (shown to others
 * only) and a skipped version both break it.
 *
 * Setting "kt_history:HANDLE" (24 bytes): u32be the version last proven, u64be its log index,
 * u32be the handle's entries read since, u64be the log index of the newest of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "client/transparency.h"
#include "missive/ptree.h"
#include "util/endian.h"

#define STATE_LEN 24
/* the handles of one account (docs/missive.md, "Several handles") and this device's own */
#define OWN_HANDLES_MAX 11

struct history {
    uint32_t version, read_since;
    uint64_t index, newest_read;
};

static void state_key(char key[300], const char *handle)
{
    snprintf(key, 300, "kt_history:%.256s", handle);
}

/* The state of handle; MSV_ERR_NOT_FOUND before its first proof. */
static msv_err state_get(struct msv_client *c, const char *handle, struct history *h)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    state_key(key, handle);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && len != STATE_LEN)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        h->version = msv_get_u32be(v);
        h->index = msv_get_u64be(v + 4);
        h->read_since = msv_get_u32be(v + 12);
        h->newest_read = msv_get_u64be(v + 16);
    }
    free(v);
    return err;
}

static msv_err state_put(struct msv_client *c, const char *handle, const struct history *h)
{
    char key[300];
    uint8_t v[STATE_LEN];

    state_key(key, handle);
    msv_put_u32be(v, h->version);
    msv_put_u64be(v + 4, h->index);
    msv_put_u32be(v + 12, h->read_since);
    msv_put_u64be(v + 16, h->newest_read);
    return msv_client_db_set(c->db, key, v, sizeof(v));
}

msv_err client_history_read(struct msv_client *c, const char *handle, uint64_t index)
{
    struct history h;
    msv_err err = state_get(c, handle, &h);

    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK; /* counted from its first proof on */
    if (err != MSV_OK || index <= h.index || (h.read_since > 0 && index <= h.newest_read))
        return err; /* read before */
    if (h.read_since == UINT32_MAX)
        return MSV_ERR_TOO_BIG;
    h.read_since++;
    h.newest_read = index;
    return state_put(c, handle, &h);
}

static void alarm(struct msv_client *c, const char *handle, const char *warning,
                  void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    (*alarms)++;
    if (on_alarm != NULL)
        on_alarm(ctx, warning);
    if (c->on_kt_history != NULL)
        c->on_kt_history(c->ctx, handle, warning);
}

/* Checks the history proof of one result (a handle of this account); read_to: the log entries
 * the monitor has read. */
static msv_err check_one(struct msv_client *c, const Msv__Wire__LookupResponse *r,
                         const Msv__Wire__HandleDevices *hd, uint64_t read_to,
                         void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    char handle[257], warning[600];
    const Msv__Wire__LogProof *p = hd->proof;
    struct history was, now = {0};
    uint32_t expect;
    msv_err err;

    snprintf(handle, sizeof(handle), "%.*s", (int)hd->handle.len, (const char *)hd->handle.data);
    now.index = p != NULL ? p->index : 0;
    now.newest_read = now.index;
    if (msv_pt_verify_versions(r->head->epoch_root.data, r->vrf_key.data, MSV_PT_HISTORY, handle,
                               p != NULL ? msv_kt_proof_entry(p).data : NULL,
                               p != NULL ? msv_kt_proof_entry(p).len : 0, hd->history_proof.data,
                               hd->history_proof.len, &now.version) != MSV_OK ||
        (now.version > 0) != (p != NULL)) {
        snprintf(warning, sizeof(warning),
                 "the directory does not prove the history of this account's handle %s in its "
                 "key directory: it may show others a version of its devices that its log does "
                 "not hold",
                 handle);
        alarm(c, handle, warning, on_alarm, ctx, alarms);
        return MSV_OK;
    }
    err = state_get(c, handle, &was);
    if (err == MSV_ERR_NOT_FOUND)
        return state_put(c, handle, &now); /* where counting starts */
    if (err != MSV_OK || (p != NULL && p->index >= read_to))
        return err; /* entries the monitor has not read yet: judged next time */
    expect = was.version + was.read_since;
    if (now.version == expect && now.index == (was.read_since > 0 ? was.newest_read : was.index))
        return state_put(c, handle, &now);
    snprintf(warning, sizeof(warning),
             "the directory's key directory holds version %lu of this account's handle %s, but "
             "its transparency log holds version %lu (log entry %llu): versions were skipped or "
             "made outside the log, and others may be shown devices that are not yours",
             (unsigned long)now.version, handle, (unsigned long)expect,
             (unsigned long long)(was.read_since > 0 ? was.newest_read : was.index));
    alarm(c, handle, warning, on_alarm, ctx, alarms);
    return state_put(c, handle, &now); /* raised once; counted from here on */
}

msv_err client_history_check(struct msv_client *c, const Msv__Wire__LookupResponse *r,
                             uint64_t read_to, void (*on_alarm)(void *, const char *), void *ctx,
                             size_t *alarms)
{
    msv_err err = MSV_OK;

    if (r->vrf_key.len == 0)
        return MSV_OK; /* a directory without a key directory (msv_kt_check_lookup let it) */
    for (size_t i = 0; err == MSV_OK && i < r->n_results; i++)
        err = check_one(c, r, r->results[i], read_to, on_alarm, ctx, alarms);
    return err;
}

msv_err client_own_handles_known(struct msv_client *c, char ***out, size_t *n)
{
    char **handles = calloc(OWN_HANDLES_MAX, sizeof(*handles));
    uint8_t *v = NULL;
    size_t len = 0, count = 0;
    msv_err err = handles != NULL ? MSV_OK : MSV_ERR_NOMEM;

    if (err == MSV_OK && (handles[count] = strdup(c->handle)) != NULL)
        count++;
    if (err == MSV_OK && msv_client_db_get(c->db, "handles", &v, &len) == MSV_OK) {
        for (size_t at = 0; at < len && count < OWN_HANDLES_MAX;) {
            const uint8_t *end = memchr(v + at, '\n', len - at);
            size_t line = end != NULL ? (size_t)(end - (v + at)) : len - at;
            char *h = line > 0 && line < 256 ? strndup((const char *)v + at, line) : NULL;

            if (h != NULL && strcmp(h, c->handle) != 0)
                handles[count++] = h;
            else
                free(h);
            at += line + 1;
        }
    }
    free(v);
    if (err == MSV_OK && count == 0)
        err = MSV_ERR_NOMEM;
    if (err != MSV_OK) {
        msv_handles_free(handles, count);
        return err;
    }
    *out = handles;
    *n = count;
    return MSV_OK;
}
