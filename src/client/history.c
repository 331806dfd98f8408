/*
 * The owner's history proof (docs/transparency.md, "The owner's history proof"): for each of
 * the account's handles, the key directory holds its newest version with every marker version a
 * later one would need absent, so no version above it can be shown to anyone. The monitor
 * (monitor.c) checks every version below it as it is shown them ("The owner's versions").
 *
 * Setting "kt_history:HANDLE" (24 bytes): u32be the version last checked, u64be its log index,
 * then 12 zero bytes. A monitor that read the log's leaves kept there how many entries of the
 * handle it read and checked since that version (u32be) and the newest one's index (u64be): the
 * version they make is the one checked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "client/transparency.h"
#include "missive/ptree.h"
#include "util/endian.h"

#define STATE_LEN 24
/* this device's own handle, the account's (at most 10), and those still watched (at most 64) */
#define OWN_HANDLES_MAX 75

static void state_key(char key[300], const char *handle)
{
    snprintf(key, 300, "kt_history:%.256s", handle);
}

msv_err client_history_get(struct msv_client *c, const char *handle, uint32_t *version,
                           uint64_t *index)
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
        uint32_t read_since = msv_get_u32be(v + 12);

        *version = msv_get_u32be(v);
        *index = msv_get_u64be(v + 4);
        if (read_since > 0 && *version <= UINT32_MAX - read_since) {
            *version += read_since;
            *index = msv_get_u64be(v + 16);
        }
    }
    free(v);
    return err;
}

msv_err client_history_put(struct msv_client *c, const char *handle, uint32_t version,
                           uint64_t index)
{
    char key[300];
    uint8_t v[STATE_LEN] = {0};

    state_key(key, handle);
    msv_put_u32be(v, version);
    msv_put_u64be(v + 4, index);
    return msv_client_db_set(c->db, key, v, sizeof(v));
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

/* Checks the history proof of one result (a handle of this account). */
static void check_one(struct msv_client *c, const Msv__Wire__LookupResponse *r,
                      const Msv__Wire__HandleDevices *hd, void (*on_alarm)(void *, const char *),
                      void *ctx, size_t *alarms)
{
    char handle[257], warning[600];
    const Msv__Wire__LogProof *p = hd->proof;
    uint32_t version = 0;
    msv_err err;

    snprintf(handle, sizeof(handle), "%.*s", (int)hd->handle.len, (const char *)hd->handle.data);
    /* the server gives it for the handles it lists as the account's: a handle it no longer lists
     * (removed, or taken away: monitor.c watches its newest entry) has none; this device's own
     * handle always does */
    if (hd->history_proof.len == 0 && strcmp(handle, c->handle) != 0)
        return;
    err = msv_pt_verify_versions(r->head->epoch_root.data, r->vrf_key.data, MSV_PT_HISTORY, handle,
                                 p != NULL ? msv_kt_proof_entry(p).data : NULL,
                                 p != NULL ? msv_kt_proof_entry(p).len : 0, hd->history_proof.data,
                                 hd->history_proof.len, &version);
    if (err == MSV_OK && (version > 0) == (p != NULL))
        return;
    if (err == MSV_ERR_UNSUPPORTED)
        snprintf(warning, sizeof(warning),
                 "the history of this account's handle %s cannot be checked: the directory "
                 "proves it in a format this version of Missive does not read (another "
                 "release's); upgrade Missive or the server",
                 handle);
    else
        snprintf(warning, sizeof(warning),
                 "the directory does not prove the history of this account's handle %s in its "
                 "key directory: it may show others a version of its devices that its log does "
                 "not hold",
                 handle);
    alarm(c, handle, warning, on_alarm, ctx, alarms);
}

msv_err client_history_check(struct msv_client *c, const Msv__Wire__LookupResponse *r,
                             void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    if (r->vrf_key.len == 0)
        return MSV_OK; /* a directory without a key directory (msv_kt_check_lookup let it) */
    for (size_t i = 0; i < r->n_results; i++)
        check_one(c, r, r->results[i], on_alarm, ctx, alarms);
    return MSV_OK;
}

/* Adds the handles listed in setting (one a line) that handles[0..*count) lacks. */
static void add_listed(struct msv_client *c, const char *setting, char **handles, size_t *count)
{
    uint8_t *v = NULL;
    size_t len = 0;

    if (msv_client_db_get(c->db, setting, &v, &len) != MSV_OK)
        return;
    for (size_t at = 0; at < len && *count < OWN_HANDLES_MAX;) {
        const uint8_t *end = memchr(v + at, '\n', len - at);
        size_t line = end != NULL ? (size_t)(end - (v + at)) : len - at;
        char *h = line > 0 && line < 256 ? strndup((const char *)v + at, line) : NULL;
        int known = 0;

        for (size_t i = 0; h != NULL && i < *count; i++)
            known |= strcmp(handles[i], h) == 0;
        if (h != NULL && !known)
            handles[(*count)++] = h;
        else
            free(h);
        at += line + 1;
    }
    free(v);
}

msv_err client_own_handles_known(struct msv_client *c, char ***out, size_t *n)
{
    char **handles = calloc(OWN_HANDLES_MAX, sizeof(*handles));
    size_t count = 0;

    if (handles == NULL || (handles[0] = strdup(c->handle)) == NULL) {
        free(handles);
        return MSV_ERR_NOMEM;
    }
    count = 1;
    add_listed(c, "handles", handles, &count);
    add_listed(c, "handles_watched", handles, &count);
    *out = handles;
    *n = count;
    return MSV_OK;
}
