/*
 * Message requests (docs/missive.md, "Message requests"). The first message
 * from a handle that is not a contact, not a member of an accepted group of
 * this account's, and never written to, is a request: stored and shown, but
 * answered in no way (no delivery or read receipt, no typing notice) until the
 * user accepts it. The state of each handle lives in the settings table under
 * "sync:request:<handle>" = "pending" or "accepted", which the account's
 * devices share; the messages held back carry MSV_MESSAGE_REQUEST until their
 * receipts go.
 */
#include "client/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUEST_PREFIX "sync:request:"

static void request_key(const char *handle, char key[300])
{
    snprintf(key, 300, "%s%s", REQUEST_PREFIX, handle);
}

/* The state of handle: 'p' pending, 'a' accepted, 0 none. */
static char request_state(struct msv_client *c, const char *handle)
{
    char key[300], state = 0;
    uint8_t *v = NULL;
    size_t len = 0;

    request_key(handle, key);
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len > 0)
        state = v[0] == 'p' ? 'p' : 'a';
    free(v);
    return state;
}

static msv_err request_set(struct msv_client *c, const char *handle, const char *state)
{
    char key[300];

    request_key(handle, key);
    return msv_client_db_set(c->db, key, state, strlen(state));
}

int msv_client_is_request(struct msv_client *c, const char *handle)
{
    return request_state(c, handle) == 'p';
}

int msv_client_message_is_request(struct msv_client *c, const struct msv_message_rec *m)
{
    return !m->outgoing && (m->pending & MSV_MESSAGE_REQUEST) &&
           msv_client_is_request(c, m->sender);
}

static int is_contact(struct msv_client *c, const char *handle)
{
    struct msv_contact *list = NULL;
    size_t n = 0;
    int found = 0;

    if (msv_client_db_contacts(c->db, NULL, &list, &n) != MSV_OK)
        return 0;
    for (size_t i = 0; !found && i < n; i++)
        found = strcmp(list[i].handle, handle) == 0;
    msv_contacts_free(list, n);
    return found;
}

/* Whether members (one handle a line) has handle. */
static int has_member(const char *members, const char *handle)
{
    size_t k = strlen(handle);

    for (const char *line = members; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);

        if (n == k && memcmp(line, handle, k) == 0)
            return 1;
        line = end ? end + 1 : NULL;
    }
    return 0;
}

static int in_accepted_group(struct msv_client *c, const char *handle)
{
    struct msv_group_rec *g = NULL;
    size_t n = 0;
    int found = 0;

    if (msv_client_db_groups(c->db, &g, &n) != MSV_OK)
        return 0;
    for (size_t i = 0; !found && i < n; i++)
        found = g[i].accepted && has_member(g[i].members, handle);
    msv_groups_free(g, n);
    return found;
}

msv_err client_request_check(struct msv_client *c, const char *sender, int *request)
{
    char state = request_state(c, sender);

    *request = 0;
    if (state == 'a')
        return MSV_OK;
    if (state == 0 && (is_contact(c, sender) || in_accepted_group(c, sender) ||
                       msv_client_db_has_outgoing(c->db, sender) == MSV_OK))
        return MSV_OK;
    *request = 1;
    return state == 'p' ? MSV_OK : request_set(c, sender, "pending");
}

msv_err client_request_release(struct msv_client *c, const struct msv_message_rec *m)
{
    msv_err err = MSV_OK;

    if (!(m->pending & MSV_MESSAGE_REQUEST) || msv_client_is_request(c, m->sender))
        return MSV_OK;
    /* queued in the outbox even when they cannot go now; a step may so happen twice */
    if (client_send_control(c, MSV_KIND_RECEIPT_DELIVERED, m->message_id, NULL, m->sender) ==
        MSV_ERR_NOMEM)
        return MSV_ERR_NOMEM;
    if (strcmp(m->status, "read") == 0 && client_privacy_on(c, "read-receipts") &&
        !msv_client_is_blocked(c, m->sender))
        err = client_send_control(c, MSV_KIND_RECEIPT_READ, m->message_id, NULL, m->sender);
    if (err == MSV_ERR_NOMEM)
        return err;
    return msv_client_db_message_done(c->db, m->message_id, MSV_MESSAGE_REQUEST);
}

/* Says why in c->why and returns MSV_ERR_NOT_FOUND. */
static msv_err not_a_request(struct msv_client *c, const char *handle)
{
    c->why.code = MSV_REFUSAL_REQUEST;
    snprintf(c->why.message, sizeof(c->why.message), "%s has sent no message request", handle);
    return MSV_ERR_NOT_FOUND;
}

msv_err msv_client_request_accept(struct msv_client *c, const char *handle)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0;
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    if (!msv_client_is_request(c, handle))
        return not_a_request(c, handle);
    /* accepted first: a process stopped before the receipts went sends them on its next receive */
    err = request_set(c, handle, "accepted");
    if (err == MSV_OK)
        err = msv_client_db_history(c->db, handle, NULL, 0, &m, &n);
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = client_request_release(c, &m[i]);
    msv_messages_free(m, n);
    return err;
}

msv_err client_requests_written(struct msv_client *c, const char *const *handles, size_t n)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++)
        if (msv_client_is_request(c, handles[i]))
            err = msv_client_request_accept(c, handles[i]);
    return err;
}

/* Deletes a conversation's messages: their files first, then everything the database holds. */
msv_err client_delete_conversation(struct msv_client *c, const char *conversation)
{
    struct msv_message_rec *m = NULL;
    uint8_t(*ids)[16] = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_history(c->db, conversation, NULL, 0, &m, &n);

    if (err == MSV_OK && n > 0 && (ids = calloc(n, sizeof(*ids))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        memcpy(ids[i], m[i].message_id, 16);
        err = client_delete_files(c, m[i].message_id);
    }
    if (err == MSV_OK && n > 0)
        err = msv_client_db_messages_delete(c->db, (const uint8_t(*)[16])ids, n);
    free(ids);
    msv_messages_free(m, n);
    return err;
}

msv_err msv_client_request_delete(struct msv_client *c, const char *handle)
{
    char key[300];
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    if (!msv_client_is_request(c, handle))
        return not_a_request(c, handle);
    err = client_delete_conversation(c, handle);
    request_key(handle, key);
    /* no state left: its next message is a request again */
    if (err == MSV_OK)
        err = msv_client_db_unset(c->db, key);
    return err;
}

msv_err msv_client_request_block(struct msv_client *c, const char *handle)
{
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    if (!msv_client_is_request(c, handle))
        return not_a_request(c, handle);
    err = msv_client_block(c, handle);
    return err == MSV_OK ? msv_client_request_delete(c, handle) : err;
}

/* Fills r from the conversation's messages held as a request. */
static msv_err request_summary(struct msv_client *c, struct msv_request *r)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_history(c->db, r->handle, NULL, 0, &m, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (!msv_client_message_is_request(c, &m[i]))
            continue;
        if (r->count++ == 0 && (r->first_text = strdup(m[i].text)) == NULL)
            err = MSV_ERR_NOMEM;
        free(r->last_text);
        if (err == MSV_OK && (r->last_text = strdup(m[i].text)) == NULL)
            err = MSV_ERR_NOMEM;
        r->last_at_ms = m[i].stored_at_ms;
    }
    msv_messages_free(m, n);
    return err;
}

msv_err msv_client_requests(struct msv_client *c, struct msv_request **out, size_t *count)
{
    struct msv_setting *s = NULL;
    struct msv_request *list = NULL;
    size_t n = 0, k = 0;
    msv_err err = msv_client_db_settings(c->db, REQUEST_PREFIX, MSV_REQUESTS_MAX, &s, &n);

    if (err == MSV_OK && (list = calloc(n ? n : 1, sizeof(*list))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (s[i].len == 0 || s[i].value[0] != 'p')
            continue;
        snprintf(list[k].handle, sizeof(list[k].handle), "%s", s[i].key + strlen(REQUEST_PREFIX));
        err = request_summary(c, &list[k++]);
    }
    msv_settings_free(s, n);
    if (err != MSV_OK) {
        msv_requests_free(list, k);
        return err;
    }
    *out = list;
    *count = k;
    return MSV_OK;
}

void msv_requests_free(struct msv_request *r, size_t count)
{
    for (size_t i = 0; r != NULL && i < count; i++) {
        free(r[i].first_text);
        free(r[i].last_text);
    }
    free(r);
}
