/*
 * The account's handles (docs/missive.md, "Handles"): listing, adding with a
 * code, removing, and which of them a send names this account by.
 *
 * Settings used: "handles" (the account's handles as the server last listed
 * them, one a line, the first one first), "handles_watched" (every handle this
 * device knows as its account's, one a line: it grows from the server's lists
 * and the handle_added notices, and shrinks only when this device removes a
 * handle or its monitor reads the handle's tombstone in the log, so that a
 * server leaving one out of its list does not end the monitor's watch of it)
 * and "from:<handle>" (the handle this account writes to handle as).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "client/internal.h"
#include "client/requests.h"
#include "client/sessions.h"
#include "missive/util.h"

#define TIMEOUT_MS 15000
#define HANDLES_SETTING "handles"
#define WATCHED_SETTING "handles_watched"
/* handles watched at most: an account has at most 10, and some removed ones wait for their
 * tombstones */
#define WATCHED_MAX 64

void msv_handles_free(char **handles, size_t n)
{
    for (size_t i = 0; handles != NULL && i < n; i++)
        free(handles[i]);
    free(handles);
}

int client_lines_name(const uint8_t *v, size_t len, const char *handle)
{
    size_t hl = strlen(handle);

    for (size_t at = 0; hl > 0 && at + hl <= len;) {
        const uint8_t *end = memchr(v + at, '\n', len - at);
        size_t line = end != NULL ? (size_t)(end - (v + at)) : len - at;

        if (line == hl && memcmp(v + at, handle, hl) == 0)
            return 1;
        at += line + 1;
    }
    return 0;
}

int client_setting_names(struct msv_client *c, const char *key, const char *handle)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int has =
        msv_client_db_get(c->db, key, &v, &len) == MSV_OK && client_lines_name(v, len, handle);

    free(v);
    return has;
}

msv_err client_handle_watch(struct msv_client *c, const char *handle)
{
    uint8_t *v = NULL, *grown = NULL;
    size_t len = 0, hl = strlen(handle), lines = 0;
    msv_err err = msv_client_db_get(c->db, WATCHED_SETTING, &v, &len);

    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    if (err != MSV_OK || hl == 0 || client_lines_name(v, len, handle)) {
        free(v);
        return err;
    }
    for (size_t i = 0; i < len; i++)
        lines += v[i] == '\n';
    if (hl > MSV_HANDLE_MAX || memchr(handle, '\n', hl) != NULL)
        err = MSV_ERR_INVALID;
    else if (lines >= WATCHED_MAX)
        err = MSV_ERR_TOO_BIG;
    else if ((grown = malloc(len + hl + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        if (len > 0)
            memcpy(grown, v, len);
        memcpy(grown + len, handle, hl);
        grown[len + hl] = '\n';
        err = msv_client_db_set(c->db, WATCHED_SETTING, grown, len + hl + 1);
    }
    free(grown);
    free(v);
    return err;
}

/* Takes handle out of the one-a-line list under key (nothing if it is not there). */
static msv_err unlist_handle(struct msv_client *c, const char *key, const char *handle)
{
    uint8_t *v = NULL;
    size_t len = 0, hl = strlen(handle), k = 0;
    msv_err err = msv_client_db_get(c->db, key, &v, &len);

    if (err == MSV_ERR_NOT_FOUND || (err == MSV_OK && !client_lines_name(v, len, handle))) {
        free(v);
        return MSV_OK;
    }
    for (size_t at = 0; err == MSV_OK && at < len;) {
        const uint8_t *end = memchr(v + at, '\n', len - at);
        size_t line = end != NULL ? (size_t)(end - (v + at)) : len - at;

        if (!(line == hl && memcmp(v + at, handle, hl) == 0)) {
            memmove(v + k, v + at, line);
            k += line;
            v[k++] = '\n';
        }
        at += line + 1;
    }
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, key, v, k);
    free(v);
    return err;
}

void client_removed_key(char key[300], const char *handle)
{
    snprintf(key, 300, "kt_removed_handle:%.256s", handle);
}

msv_err client_handle_removed(struct msv_client *c, const char *handle)
{
    char key[300];

    if (!client_setting_names(c, WATCHED_SETTING, handle))
        return MSV_OK; /* expected of watched handles only: as many as those, at most */
    client_removed_key(key, handle);
    return msv_client_db_set(c->db, key, "", 0);
}

msv_err client_handle_unwatch(struct msv_client *c, const char *handle)
{
    msv_err err = unlist_handle(c, WATCHED_SETTING, handle);

    return err == MSV_OK ? unlist_handle(c, HANDLES_SETTING, handle) : err;
}

/* Keeps the list for client_is_own_handle (one a line), and watches each handle of it. */
static msv_err remember_handles(struct msv_client *c, char *const *handles, size_t n)
{
    char *text = NULL;
    msv_err err = client_join_members(handles, n, &text);

    if (err == MSV_OK)
        err = msv_client_db_set(c->db, HANDLES_SETTING, text, strlen(text));
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = client_handle_watch(c, handles[i]);
    free(text);
    return err;
}

msv_err msv_client_handles(struct msv_client *c, char ***out, size_t *n)
{
    msv_frame *answer = NULL;
    char **handles = NULL;
    size_t count = 0;
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_request_handle_list(c->conn, TIMEOUT_MS, &answer, &c->why);
    if (err == MSV_OK) {
        const Msv__Wire__HandleList *l = answer->handle_list;

        handles = calloc(l->n_handles + 1, sizeof(*handles));
        err = handles != NULL && l->n_handles > 0 ? MSV_OK : MSV_ERR_PARSE;
        for (size_t i = 0; err == MSV_OK && i < l->n_handles; i++) {
            if (l->handles[i].len > MSV_HANDLE_MAX ||
                memchr(l->handles[i].data, '\0', l->handles[i].len) != NULL ||
                memchr(l->handles[i].data, '\n', l->handles[i].len) != NULL)
                err = MSV_ERR_PARSE;
            else if ((handles[count] = malloc(l->handles[i].len + 1)) == NULL)
                err = MSV_ERR_NOMEM;
            if (err == MSV_OK) {
                memcpy(handles[count], l->handles[i].data, l->handles[i].len);
                handles[count++][l->handles[i].len] = '\0';
            }
        }
    }
    msv_frame_free(answer);
    if (err == MSV_OK)
        err = remember_handles(c, handles, count);
    if (err != MSV_OK) {
        msv_handles_free(handles, count);
        return err;
    }
    *out = handles;
    *n = count;
    return MSV_OK;
}

int client_is_own_handle(struct msv_client *c, const char *handle)
{
    return strcmp(handle, c->handle) == 0 || client_setting_names(c, HANDLES_SETTING, handle) ||
           client_setting_names(c, WATCHED_SETTING, handle);
}

/* Persists handle as this device's own (the one it authenticates with). */
static msv_err take_handle(struct msv_client *c, const char *handle)
{
    msv_err err = strlen(handle) < sizeof(c->handle)
                      ? msv_client_db_set(c->db, "handle", handle, strlen(handle))
                      : MSV_ERR_INVALID;

    if (err == MSV_OK)
        snprintf(c->handle, sizeof(c->handle), "%s", handle);
    return err;
}

msv_err client_handle_gone(struct msv_client *c, const char *gone, const char *first)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = MSV_OK;

    if (strcmp(gone, c->handle) == 0 && first != NULL && first[0] != '\0' &&
        strcmp(first, gone) != 0)
        err = take_handle(c, first);
    /* the list is read again at the next connection's chance; an old one only errs on the
     * side of naming this account by its first handle */
    if (err == MSV_OK && c->conn != NULL && msv_client_handles(c, &handles, &n) == MSV_OK)
        msv_handles_free(handles, n);
    return err;
}

msv_err msv_client_handle_add(struct msv_client *c, const char *handle)
{
    msv_err err = msv_client_connect(c);

    return err == MSV_OK ? msv_request_handle_change(c->conn, MSV_HANDLE_ADD, handle, NULL,
                                                     TIMEOUT_MS, &c->why)
                         : err;
}

msv_err msv_client_handle_verify(struct msv_client *c, const char *handle, const char *code)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_request_handle_change(c->conn, MSV_HANDLE_VERIFY, handle, code, TIMEOUT_MS,
                                        &c->why);
    if (err == MSV_OK && msv_client_handles(c, &handles, &n) == MSV_OK)
        msv_handles_free(handles, n);
    return err;
}

msv_err msv_client_handle_remove(struct msv_client *c, const char *handle)
{
    char **handles = NULL, *first = NULL;
    size_t n = 0;
    msv_err err = msv_client_handles(c, &handles, &n);

    /* the account's first handle afterwards: the first, or the next oldest if it goes */
    if (err == MSV_OK && n > 1)
        first = strcmp(handles[0], handle) == 0 ? handles[1] : handles[0];
    if (err == MSV_OK)
        err = msv_request_handle_change(c->conn, MSV_HANDLE_REMOVE, handle, NULL, TIMEOUT_MS,
                                        &c->why);
    if (err == MSV_OK && first != NULL && strcmp(c->handle, handle) == 0) {
        /* the server closes this connection: it authenticated with the removed handle */
        err = take_handle(c, first);
        msv_conn_close(c->conn);
        c->conn = NULL;
    }
    if (err == MSV_OK) {
        size_t k = 0;

        for (size_t i = 0; i < n; i++)
            if (strcmp(handles[i], handle) != 0)
                handles[k++] = handles[i];
            else
                free(handles[i]);
        n = k;
        err = remember_handles(c, handles, n);
    }
    /* this device removed it: its tombstone is expected, should the handle be added again and
     * its versions since the last look (up to the removal) read after all; no watch waits for it */
    if (err == MSV_OK)
        err = client_handle_removed(c, handle);
    if (err == MSV_OK)
        err = client_handle_unwatch(c, handle);
    msv_handles_free(handles, n);
    return err;
}

/* The username among handles (NULL if none): the one that is no address and no number. */
static const char *username_of(char *const *handles, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strchr(handles[i], '@') == NULL && handles[i][0] != '+')
            return handles[i];
    return NULL;
}

msv_err msv_client_username(struct msv_client *c, char **out)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = msv_client_handles(c, &handles, &n);
    const char *name = err == MSV_OK ? username_of(handles, n) : NULL;

    if (err == MSV_OK && (*out = strdup(name != NULL ? name : "")) == NULL)
        err = MSV_ERR_NOMEM;
    msv_handles_free(handles, n);
    return err;
}

/* UsernameSet with name ("" releases), then the lists kept here: the old one is no longer
 * watched (this device released it: no tombstone to wait for), the new one is. */
static msv_err change_username(struct msv_client *c, const char *name)
{
    char **handles = NULL, *old = NULL;
    size_t n = 0;
    msv_err err = msv_client_handles(c, &handles, &n);

    if (err == MSV_OK && username_of(handles, n) != NULL &&
        (old = strdup(username_of(handles, n))) == NULL)
        err = MSV_ERR_NOMEM;
    msv_handles_free(handles, n);
    if (err == MSV_OK)
        err = msv_request_username_set(c->conn, name, TIMEOUT_MS, &c->why);
    if (err == MSV_OK && old != NULL)
        err = client_handle_unwatch(c, old);
    if (err == MSV_OK && (err = msv_client_handles(c, &handles, &n)) == MSV_OK)
        msv_handles_free(handles, n); /* keeps and watches the new list */
    free(old);
    return err;
}

msv_err msv_client_username_set(struct msv_client *c, const char *name)
{
    char norm[MSV_USERNAME_MAX + 1];

    if (name == NULL || !msv_username_normalise((const uint8_t *)name, strlen(name), norm)) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "a username is 3 to 24 letters and digits beginning with a letter, a dot and 2 "
                 "to 9 digits, as alice.42");
        c->why.code = MSV__WIRE__ERROR_CODE__ERROR_INVALID;
        return MSV_ERR_INVALID;
    }
    return change_username(c, norm);
}

msv_err msv_client_username_remove(struct msv_client *c)
{
    return change_username(c, "");
}

msv_err msv_client_send_from(struct msv_client *c, const char *handle)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = MSV_OK;

    if (handle == NULL || handle[0] == '\0') {
        c->from[0] = '\0';
        return MSV_OK;
    }
    if (!client_is_own_handle(c, handle) && (err = msv_client_handles(c, &handles, &n)) == MSV_OK)
        msv_handles_free(handles, n);
    if (err == MSV_OK && !client_is_own_handle(c, handle))
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        snprintf(c->from, sizeof(c->from), "%s", handle);
    return err;
}

/* The account's first handle as last listed (its registration handle, or the oldest left), else
 * the one this device authenticates with. */
static void first_handle(struct msv_client *c, char out[sizeof(c->handle)])
{
    uint8_t *v = NULL;
    size_t len = 0, line = 0;

    snprintf(out, sizeof(c->handle), "%s", c->handle);
    if (msv_client_db_get(c->db, HANDLES_SETTING, &v, &len) == MSV_OK) {
        while (line < len && v[line] != '\n')
            line++;
        if (line > 0 && line < sizeof(c->handle)) {
            memcpy(out, v, line);
            out[line] = '\0';
        }
    }
    free(v);
}

/*
 * The handle peer is written to as: the one chosen for this send (msv_client_send_from),
 * else the one used with peer before (or that peer wrote to) while it is still this account's,
 * else the account's first handle. Once a handle is used with peer it stays, so that peer sees one
 * sender; when it changes, the sessions with peer's devices start anew, since peer's side keeps
 * them under the handle it sees.
 */
const char *client_send_as(struct msv_client *c, const char *peer)
{
    char key[300], before[sizeof(c->handle)], first[sizeof(c->handle)];
    uint8_t *v = NULL;
    size_t len = 0;
    const char *as;

    snprintf(key, sizeof(key), "from:%s", peer);
    first_handle(c, first);
    snprintf(before, sizeof(before), "%s", first);
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len < sizeof(before)) {
        memcpy(before, v, len);
        before[len] = '\0';
    }
    free(v);
    as = c->from[0] != '\0' ? c->from : client_is_own_handle(c, before) ? before : first;
    if (strcmp(as, before) != 0) {
        struct msv_known_device *devs = NULL;
        size_t n = 0;
        msv_err err = msv_client_db_known_devices(c->db, peer, &devs, &n);

        for (size_t i = 0; err == MSV_OK && i < n; i++)
            err = msv_sessions_forget(c, devs[i].device_id);
        msv_known_devices_free(devs, n);
        if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
            as = before; /* sessions the other side would not find: no change this time */
    }
    snprintf(c->send_as, sizeof(c->send_as), "%s", as);
    if (msv_client_db_set(c->db, key, as, strlen(as)) != MSV_OK)
        snprintf(c->send_as, sizeof(c->send_as), "%s", before); /* as before, then */
    return c->send_as;
}

msv_err client_note_addressed(struct msv_client *c, const char *sender, char *const *participants,
                              size_t n)
{
    const char *peer = NULL, *mine = NULL;
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;

    for (size_t i = 0; n == 2 && i < n; i++) {
        if (client_is_own_handle(c, participants[i]))
            mine = participants[i];
        else
            peer = participants[i];
    }
    /* the other person wrote to mine, or this account wrote to them as mine */
    if (mine == NULL || peer == NULL ||
        (strcmp(sender, peer) != 0 && !client_is_own_handle(c, sender)))
        return MSV_OK;
    snprintf(key, sizeof(key), "from:%s", peer);
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == strlen(mine) &&
        memcmp(v, mine, len) == 0) {
        free(v);
        return MSV_OK; /* as it was: no write for every message */
    }
    free(v);
    return msv_client_db_set(c->db, key, mine, strlen(mine));
}
