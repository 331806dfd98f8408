/*
 * Blocking, privacy settings and abuse reports (docs/missive.md, "Blocking",
 * "Privacy settings" and "Reporting abuse"). Both live in the settings table under keys that begin
 * with "sync:", which the account's devices share: "sync:block:<handle>" = "1" while handle is
 * blocked, "sync:privacy:<name>" = "on" or "off". What was dropped from a blocked handle is counted
 * on this device only, under "blocked-dropped:<handle>" (u64be).
 */
#include "client/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "util/buf.h"
#include "util/endian.h"

#define BLOCK_PREFIX "sync:block:"
#define DROPPED_PREFIX "blocked-dropped:"
#define PRIVACY_PREFIX "sync:privacy:"

static const char *const privacy_names[] = {"read-receipts", "typing"};

static void block_key(const char *prefix, const char *handle, char *key, size_t len)
{
    snprintf(key, len, "%s%s", prefix, handle);
}

/* A handle as the directory knows them: "name@domain", at most 255 bytes, printable. */
static int handle_is_wellformed(const char *handle)
{
    size_t n = strlen(handle);

    if (n == 0 || n > 255 || strchr(handle, '@') == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)handle[i] <= ' ' || handle[i] == 0x7f)
            return 0;
    return 1;
}

/* Says why in c->why, with code, and returns err. */
static msv_err refuse(struct msv_client *c, int code, msv_err err, const char *before,
                      const char *what, const char *after)
{
    c->why.code = code;
    snprintf(c->why.message, sizeof(c->why.message), "%s%s%s", before, what, after);
    return err;
}

int msv_client_is_blocked(struct msv_client *c, const char *handle)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    int blocked;

    if (strcmp(handle, c->handle) == 0)
        return 0;
    block_key(BLOCK_PREFIX, handle, key, sizeof(key));
    blocked = msv_client_db_get(c->db, key, &v, &len) == MSV_OK;
    free(v);
    return blocked;
}

msv_err msv_client_block(struct msv_client *c, const char *handle)
{
    struct msv_setting *list = NULL;
    msv_frame *r = NULL;
    char key[300];
    size_t n = 0;
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    if (!handle_is_wellformed(handle) || strcmp(handle, c->handle) == 0)
        return refuse(c, MSV_REFUSAL_BLOCKED, MSV_ERR_INVALID, "", handle,
                      " is not a handle someone else has (name@domain)");
    /* (blocked already: its invitations are looked for again, should a block have failed
     * after it was recorded) */
    if (msv_client_is_blocked(c, handle))
        return client_invitations_forget(c, handle);
    err = msv_client_db_settings(c->db, BLOCK_PREFIX, MSV_BLOCKED_MAX, &list, &n);
    msv_settings_free(list, n);
    if (err != MSV_OK)
        return err;
    if (n >= MSV_BLOCKED_MAX)
        return refuse(c, MSV_REFUSAL_BLOCKED, MSV_ERR_TOO_BIG, "", "10000",
                      " handles are blocked already");
    /* only an account that exists: a typing error blocks nobody and says so */
    err = msv_client_devices(c, handle, &r);
    if (err == MSV_OK && r->lookup_result->results[0]->n_devices == 0)
        err = MSV_ERR_NOT_FOUND;
    msv_frame_free(r);
    if (err == MSV_ERR_NOT_FOUND)
        return refuse(c, MSV_REFUSAL_BLOCKED, err, "", handle, " has no account on this server");
    if (err != MSV_OK)
        return err;
    block_key(BLOCK_PREFIX, handle, key, sizeof(key));
    err = msv_client_db_set(c->db, key, "1", 1);
    /* its group invitations go with it (room for others' then) */
    return err == MSV_OK ? client_invitations_forget(c, handle) : err;
}

msv_err msv_client_unblock(struct msv_client *c, const char *handle)
{
    char key[300];
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    if (!handle_is_wellformed(handle) || !msv_client_is_blocked(c, handle))
        return refuse(c, MSV_REFUSAL_BLOCKED, MSV_ERR_NOT_FOUND, "", handle, " is not blocked");
    block_key(BLOCK_PREFIX, handle, key, sizeof(key));
    err = msv_client_db_unset(c->db, key);
    block_key(DROPPED_PREFIX, handle, key, sizeof(key));
    if (err == MSV_OK)
        err = msv_client_db_unset(c->db, key);
    return err;
}

/* How many deliveries from handle were dropped since it was blocked. */
static uint64_t dropped_count(struct msv_client *c, const char *handle)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t n = 0;

    block_key(DROPPED_PREFIX, handle, key, sizeof(key));
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == 8)
        n = msv_get_u64be(v);
    free(v);
    return n;
}

/* What a payload of kind is, for the count's event; 0: a delivery that could not be read. */
static const char *dropped_what(int kind)
{
    switch (kind) {
    case MSV_KIND_MESSAGE:
        return "message";
    case MSV_KIND_RECEIPT_DELIVERED:
    case MSV_KIND_RECEIPT_READ:
        return "receipt";
    case MSV_KIND_TYPING:
        return "typing";
    case MSV_KIND_EDIT:
    case MSV_KIND_UNSEND:
        return "edit";
    case MSV_KIND_GROUP_CHANGE:
        return "group";
    case 0:
        return "unreadable";
    default:
        return "other";
    }
}

msv_err client_drop_blocked(struct msv_client *c, const char *handle, int kind,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    char key[300];
    uint8_t v[8];
    msv_err err;

    block_key(DROPPED_PREFIX, handle, key, sizeof(key));
    msv_put_u64be(v, dropped_count(c, handle) + 1);
    err = msv_client_db_set(c->db, key, v, sizeof(v));
    if (err == MSV_OK && on_message != NULL) {
        struct msv_incoming in = {
            .kind = MSV_INCOMING_BLOCKED, .from = handle, .status = dropped_what(kind)};

        on_message(ctx, &in);
    }
    return err;
}

msv_err msv_client_blocked(struct msv_client *c, struct msv_blocked **out, size_t *count)
{
    struct msv_setting *s = NULL;
    struct msv_blocked *list = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_settings(c->db, BLOCK_PREFIX, MSV_BLOCKED_MAX, &s, &n);

    if (err == MSV_OK && (list = calloc(n ? n : 1, sizeof(*list))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        snprintf(list[i].handle, sizeof(list[i].handle), "%s", s[i].key + strlen(BLOCK_PREFIX));
        list[i].dropped = dropped_count(c, list[i].handle);
    }
    msv_settings_free(s, n);
    if (err != MSV_OK) {
        free(list);
        return err;
    }
    *out = list;
    *count = n;
    return MSV_OK;
}

const char *client_blocked_among(struct msv_client *c, const char *const *handles, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (msv_client_is_blocked(c, handles[i]))
            return handles[i];
    return NULL;
}

msv_err client_refuse_blocked(struct msv_client *c, const char *const *handles, size_t n)
{
    const char *blocked = client_blocked_among(c, handles, n);

    if (blocked == NULL)
        return MSV_OK;
    return refuse(c, MSV_REFUSAL_BLOCKED, MSV_ERR_INVALID, "", blocked,
                  " is blocked; nothing is sent to them until you unblock them (missive unblock)");
}

/* The index of a privacy setting's name; -1 for none. */
static int privacy_index(const char *name)
{
    for (size_t i = 0; i < sizeof(privacy_names) / sizeof(privacy_names[0]); i++)
        if (strcmp(privacy_names[i], name) == 0)
            return (int)i;
    return -1;
}

const char *msv_client_privacy_name(size_t i)
{
    return i < sizeof(privacy_names) / sizeof(privacy_names[0]) ? privacy_names[i] : NULL;
}

/* The setting as stored: on unless turned off. */
static msv_err privacy_read(struct msv_client *c, const char *name, int *on)
{
    char key[64];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    snprintf(key, sizeof(key), "%s%s", PRIVACY_PREFIX, name);
    err = msv_client_db_get(c->db, key, &v, &len);
    *on = !(err == MSV_OK && len == 3 && memcmp(v, "off", 3) == 0);
    free(v);
    return err == MSV_OK || err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

msv_err msv_client_privacy_get(struct msv_client *c, const char *name, int *on)
{
    memset(&c->why, 0, sizeof(c->why));
    if (privacy_index(name) < 0)
        return refuse(c, MSV_REFUSAL_PRIVACY, MSV_ERR_NOT_FOUND, "no setting ", name,
                      " (there are read-receipts and typing)");
    return privacy_read(c, name, on);
}

msv_err msv_client_privacy_set(struct msv_client *c, const char *name, const char *value)
{
    char key[64];

    memset(&c->why, 0, sizeof(c->why));
    if (privacy_index(name) < 0)
        return refuse(c, MSV_REFUSAL_PRIVACY, MSV_ERR_NOT_FOUND, "no setting ", name,
                      " (there are read-receipts and typing)");
    if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0)
        return refuse(c, MSV_REFUSAL_PRIVACY, MSV_ERR_INVALID, "", value, " is neither on nor off");
    snprintf(key, sizeof(key), "%s%s", PRIVACY_PREFIX, name);
    return msv_client_db_set(c->db, key, value, strlen(value));
}

int client_privacy_on(struct msv_client *c, const char *name)
{
    int on = 1;

    return privacy_read(c, name, &on) == MSV_OK ? on : 1;
}

/* The reported messages' text, one "[sent at ms] text" line each; *out caller frees. */
static msv_err reported_text(struct msv_client *c, const char *handle, const uint8_t (*ids)[16],
                             size_t n, char **out)
{
    struct msv_buf b;
    uint8_t *data = NULL;
    size_t len = 0;
    msv_err err = MSV_OK;

    msv_buf_init(&b, 1u << 20);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct msv_message_rec *m = NULL;
        char line[40], hex[33];

        err = msv_client_db_message_get(c->db, ids[i], &m);
        if (err == MSV_OK && (m->outgoing || strcmp(m->sender, handle) != 0))
            err = MSV_ERR_NOT_FOUND;
        if (err == MSV_ERR_NOT_FOUND) {
            sodium_bin2hex(hex, sizeof(hex), ids[i], 16);
            refuse(c, MSV_REFUSAL_REPORT, err, "message ", hex, " is not one this handle sent");
        }
        if (err == MSV_OK) {
            snprintf(line, sizeof(line), "%s[%lld] ", i ? "\n" : "", (long long)m->sent_at_ms);
            msv_buf_put(&b, line, strlen(line));
            msv_buf_put(&b, m->text, strlen(m->text));
        }
        msv_messages_free(m, m ? 1 : 0);
    }
    msv_buf_put_u8(&b, 0);
    if (err == MSV_OK)
        err = msv_buf_finish(&b, &data, &len);
    else
        msv_buf_clear(&b);
    if (err == MSV_OK)
        *out = (char *)data;
    return err;
}

msv_err msv_client_report(struct msv_client *c, const char *handle, const char *reason,
                          const uint8_t (*ids)[16], size_t n, int include_text)
{
    char *text = NULL;
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    if (!handle_is_wellformed(handle) || strcmp(handle, c->handle) == 0)
        return refuse(c, MSV_REFUSAL_REPORT, MSV_ERR_INVALID, "", handle,
                      " is not a handle someone else has (name@domain)");
    if (reason != NULL && strlen(reason) > MSV_REPORT_REASON_MAX)
        return refuse(c, MSV_REFUSAL_REPORT, MSV_ERR_TOO_BIG, "a reason is at most ", "1000",
                      " bytes");
    if (n > MSV_REPORT_MESSAGES_MAX)
        return refuse(c, MSV_REFUSAL_REPORT, MSV_ERR_TOO_BIG, "a report names at most ", "50",
                      " messages");
    /* the messages are checked either way; their text goes only if the user chose so */
    err = reported_text(c, handle, ids, n, &text);
    if (err == MSV_OK)
        err = msv_client_connect(c);
    if (err == MSV_OK)
        err = msv_request_report(c->conn, handle, reason ? reason : "", include_text ? text : "",
                                 TIMEOUT_MS, &c->why);
    if (text != NULL)
        msv_secret_free(text, strlen(text));
    return err;
}
