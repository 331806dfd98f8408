/*
 * Receipts, typing notices, edits and unsends: sending them and taking those that arrive.
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

msv_err client_conversation_targets(struct msv_client *c, const char *conversation,
                                    struct msv_group_rec *g, char **targets, size_t *n)
{
    uint8_t id[16];
    size_t len = 0;
    msv_err err;

    if (strncmp(conversation, "group:", 6) != 0) {
        targets[0] = (char *)conversation;
        *n = 1;
        return MSV_OK;
    }
    if (msv_hex_decode(conversation + 6, id, sizeof(id), &len) != MSV_OK || len != 16)
        return MSV_ERR_PARSE;
    err = msv_client_db_group_get(c->db, id, NULL, g);
    if (err == MSV_OK)
        *n = client_split_members(g->members, targets);
    return err;
}

/* Sends a control payload about target to the people of a conversation. */
msv_err client_send_control(struct msv_client *c, enum msv_payload_kind kind,
                            const uint8_t target[16], const char *text, const char *conversation)
{
    struct msv_group_rec g = {0};
    struct msv_payload p = {.kind = kind, .text = (char *)text};
    char *targets[MEMBERS_MAX];
    uint8_t id[16];
    size_t n = 0;
    msv_err err = client_conversation_targets(c, conversation, &g, targets, &n);

    if (target != NULL) {
        p.has_target = true;
        memcpy(p.target_id, target, 16);
    }
    if (err == MSV_OK && kind == MSV_KIND_TYPING && g.name != NULL) {
        /* so that the members show it in the group, not beside it */
        p.has_group = true;
        memcpy(p.group_id, g.group_id, 16);
    }
    if (err == MSV_OK)
        err = client_send_payload(c, (const char *const *)targets, n, &p, NULL, NULL, NULL, 0, NULL,
                                  id);
    msv_group_clear(&g);
    return err;
}

msv_err msv_client_typing(struct msv_client *c, const char *conversation)
{
    return client_send_control(c, MSV_KIND_TYPING, NULL, NULL, conversation);
}

/* An edit or unsend of one of this account's messages. */
static msv_err change_own(struct msv_client *c, const uint8_t id[16], const char *text,
                          enum msv_payload_kind kind)
{
    struct msv_message_rec *m = NULL;
    msv_err err = msv_client_db_message_get(c->db, id, &m);

    if (err == MSV_OK && (!m->outgoing || m->kind != MSV_KIND_MESSAGE))
        err = MSV_ERR_INVALID; /* only this account's own messages */
    if (err == MSV_OK)
        err = client_send_control(c, kind, id, text, m->conversation);
    if (err == MSV_OK)
        err = msv_client_db_message_rewrite(c->db, id, text ? text : "",
                                            kind == MSV_KIND_EDIT ? "edited" : "unsent");
    msv_messages_free(m, m ? 1 : 0);
    return err;
}

msv_err msv_client_edit(struct msv_client *c, const uint8_t id[16], const char *text)
{
    return change_own(c, id, text, MSV_KIND_EDIT);
}

msv_err msv_client_unsend(struct msv_client *c, const uint8_t id[16])
{
    return change_own(c, id, NULL, MSV_KIND_UNSEND);
}

msv_err msv_client_mark_read(struct msv_client *c, const char *conversation, size_t *count)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_history(c->db, conversation, NULL, 0, &m, &n);

    *count = 0;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (m[i].outgoing || strcmp(m[i].status, "received") != 0)
            continue;
        /* the receipt goes to the sender, whatever conversation the message is in */
        err = client_send_control(c, MSV_KIND_RECEIPT_READ, m[i].message_id, NULL, m[i].sender);
        if (err == MSV_OK)
            err = msv_client_db_message_status(c->db, m[i].message_id, "read");
        /* a disappearing message's time runs from now */
        if (err == MSV_OK)
            err = msv_client_db_message_expiry_start(c->db, m[i].message_id, msv_wall_ms());
        if (err == MSV_OK)
            (*count)++;
    }
    msv_messages_free(m, n);
    return err;
}

/* "changed-at:<message id, hex>": u64be send time of the last edit or unsend applied to it. */
static void change_key(const uint8_t id[16], char key[48])
{
    char hex[33];

    sodium_bin2hex(hex, sizeof(hex), id, 16);
    snprintf(key, 48, "changed-at:%s", hex);
}

/*
 * 1 if an edit or unsend of target comes too late to apply: the message is
 * unsent already, or a change its author made later has been applied (a
 * relay that holds one edit back cannot roll the message back with it).
 */
static int change_is_stale(struct msv_client *c, const struct msv_message_rec *target,
                           const struct msv_payload *p)
{
    char key[48];
    uint8_t *v = NULL;
    size_t len = 0;
    int stale = strcmp(target->status, "unsent") == 0;

    change_key(p->target_id, key);
    if (!stale && msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == 8)
        stale = p->sent_at_ms <= msv_get_u64be(v);
    free(v);
    return stale;
}

static msv_err change_applied(struct msv_client *c, const struct msv_payload *p)
{
    char key[48];
    uint8_t when[8];

    change_key(p->target_id, key);
    msv_put_u64be(when, p->sent_at_ms);
    return msv_client_db_set(c->db, key, when, sizeof(when));
}

/* Whether a message this account sent went to handle: only they send receipts for it. */
static int is_recipient(struct msv_client *c, const struct msv_message_rec *m, const char *handle)
{
    msv_err err = msv_client_db_is_recipient(c->db, m->message_id, handle);

    /* sent before recipients were recorded: the conversation's other person */
    return err == MSV_OK || (err == MSV_ERR_NOT_FOUND && strcmp(m->conversation, handle) == 0);
}

/* Applies a receipt, typing notice, edit or unsend from sender. */
msv_err client_take_control(struct msv_client *c, const char *sender, uint64_t device,
                            const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_message_rec *target = NULL;
    struct msv_incoming in = {.from = sender};
    struct msv_group_rec g = {0};
    char notice[600], group_conversation[40];
    msv_err err = MSV_OK;

    notice[0] = '\0';
    if (p->kind == MSV_KIND_SESSION_RESET) {
        /* its message started a new session with this device already (X3DH) */
        if (on_message != NULL) {
            in.kind = MSV_INCOMING_SESSION;
            in.notice = notice;
            snprintf(notice, sizeof(notice),
                     "%s (device %llu) could not read a message from this device; the session "
                     "with it was started anew. Send again what you sent it just before, if it "
                     "matters.",
                     sender, (unsigned long long)device);
            on_message(ctx, &in);
        }
        return MSV_OK;
    }
    if (strcmp(sender, c->handle) == 0)
        return MSV_OK; /* this account's own devices: nothing to apply */
    if (p->has_target && msv_client_db_message_get(c->db, p->target_id, &target) != MSV_OK)
        return MSV_OK; /* about a message this device does not have */
    switch (p->kind) {
    case MSV_KIND_RECEIPT_DELIVERED:
    case MSV_KIND_RECEIPT_READ:
        /* only for what this account sent, and "read" is never taken back to "delivered" */
        if (target->outgoing && is_recipient(c, target, sender) &&
            (p->kind == MSV_KIND_RECEIPT_READ || strcmp(target->status, "read") != 0)) {
            in.kind = MSV_INCOMING_RECEIPT;
            in.status = p->kind == MSV_KIND_RECEIPT_READ ? "read" : "delivered";
            err = msv_client_db_message_status(c->db, p->target_id, in.status);
            if (err == MSV_OK && on_message != NULL) {
                in.conversation = target->conversation;
                in.target = p->target_id;
                on_message(ctx, &in);
            }
        }
        break;
    case MSV_KIND_TYPING:
        in.kind = MSV_INCOMING_TYPING;
        in.conversation = sender;
        snprintf(notice, sizeof(notice), "%s is typing", sender);
        if (p->has_group && msv_client_db_group_get(c->db, p->group_id, NULL, &g) == MSV_OK) {
            /* in a group this device knows */
            msv_client_group_conversation(p->group_id, group_conversation);
            in.conversation = group_conversation;
            snprintf(notice, sizeof(notice), "%s is typing in %s", sender, g.name);
            msv_group_clear(&g);
        }
        break;
    case MSV_KIND_EDIT:
    case MSV_KIND_UNSEND:
        /* only the author changes a message, in the order the author made the changes */
        if (strcmp(target->sender, sender) != 0 || change_is_stale(c, target, p))
            break;
        err = change_applied(c, p);
        if (err == MSV_OK)
            err = msv_client_db_message_rewrite(c->db, p->target_id,
                                                p->kind == MSV_KIND_EDIT ? p->text : "",
                                                p->kind == MSV_KIND_EDIT ? "edited" : "unsent");
        in.kind = MSV_INCOMING_EDIT;
        in.conversation = target->conversation;
        in.target = p->target_id;
        in.status = p->kind == MSV_KIND_EDIT ? "edited" : "unsent";
        snprintf(notice, sizeof(notice), "%s %s a message%s%.200s", sender,
                 p->kind == MSV_KIND_EDIT ? "edited" : "unsent",
                 p->kind == MSV_KIND_EDIT ? ": " : "", p->kind == MSV_KIND_EDIT ? p->text : "");
        break;
    default:
        break;
    }
    if (notice[0] != '\0' && on_message != NULL) {
        in.notice = notice;
        on_message(ctx, &in);
    }
    msv_messages_free(target, target ? 1 : 0);
    return err;
}
