/*
 * Reactions: one emoji per person and message, sent to the message's
 * conversation as a REACTION payload (docs/wire.md), the newest of each
 * person's kept (client_db reactions table).
 */
#include "client/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "missive/payload.h"
#include "missive/util.h"

int client_in_conversation(struct msv_client *c, const char *conversation, const char *handle)
{
    struct msv_group_rec g = {0};
    char **members = NULL;
    uint8_t id[16];
    size_t n = 0, len = 0;
    int found = 0;

    if (strcmp(handle, c->handle) == 0 || strcmp(conversation, handle) == 0)
        return 1;
    if (strncmp(conversation, "group:", 6) != 0 ||
        msv_hex_decode(conversation + 6, id, sizeof(id), &len) != MSV_OK || len != 16 ||
        msv_client_db_group_get(c->db, id, NULL, &g) != MSV_OK)
        return 0;
    if (client_members_of(g.members, &members, &n) != MSV_OK)
        n = 0;
    for (size_t i = 0; i < n && !found; i++)
        found = strcmp(members[i], handle) == 0;
    free(members);
    msv_group_clear(&g);
    return found;
}

void msv_client_first_line(const char *text, char *out, size_t len)
{
    size_t n = strcspn(text, "\n");

    if (len == 0)
        return;
    if (n >= len) {
        n = len - 1;
        /* not in the middle of a character */
        while (n > 0 && ((uint8_t)text[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(out, text, n);
    out[n] = '\0';
}

/* A message people can react to: a message (not a group change), not unsent. */
static int reactable(const struct msv_message_rec *m)
{
    return m->kind == MSV_KIND_MESSAGE && strcmp(m->status, "unsent") != 0 &&
           strcmp(m->status, "unreadable") != 0;
}

msv_err msv_client_react(struct msv_client *c, const uint8_t id[16], const char *emoji)
{
    struct msv_payload p = {.kind = MSV_KIND_REACTION, .text = (char *)emoji, .has_target = true};
    struct msv_reaction_rec r = {.handle = c->handle, .emoji = (char *)emoji};
    struct msv_message_rec *m = NULL;
    msv_err err;

    if (emoji != NULL && !msv_payload_reaction_is_valid(emoji))
        return MSV_ERR_INVALID;
    err = msv_client_db_message_get(c->db, id, &m);
    if (err == MSV_OK && !reactable(m))
        err = MSV_ERR_INVALID;
    memcpy(p.target_id, id, 16);
    if (err == MSV_OK)
        err = client_send_to_conversation(c, &p, m->conversation);
    if (err == MSV_OK) {
        memcpy(r.message_id, id, 16);
        memcpy(r.reaction_id, p.message_id, 16);
        r.sent_at_ms = (int64_t)p.sent_at_ms;
        err = msv_client_db_reaction_put(c->db, &r);
    }
    msv_messages_free(m, m ? 1 : 0);
    return err;
}

msv_err client_take_reaction(struct msv_client *c, const char *sender, const struct msv_payload *p,
                             void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_reaction_rec r = {.handle = (char *)sender, .emoji = p->text ? p->text : ""};
    struct msv_incoming in = {.kind = MSV_INCOMING_REACTION, .from = sender};
    struct msv_message_rec *target = NULL;
    char notice[400], quote[81];
    msv_err err;

    /* about a message this device does not have, or from someone not in its conversation:
     * nothing to apply, and nobody to name */
    if (msv_client_db_message_get(c->db, p->target_id, &target) != MSV_OK)
        return MSV_OK;
    err = reactable(target) && client_in_conversation(c, target->conversation, sender)
              ? MSV_OK
              : MSV_ERR_AUTH;
    memcpy(r.message_id, p->target_id, 16);
    memcpy(r.reaction_id, p->message_id, 16);
    r.sent_at_ms = (int64_t)p->sent_at_ms;
    if (err == MSV_OK)
        err = msv_client_db_reaction_put(c->db, &r);
    if (err == MSV_OK && on_message != NULL) {
        msv_client_first_line(target->text, quote, sizeof(quote));
        if (r.emoji[0] != '\0')
            snprintf(notice, sizeof(notice), "%s reacted %s to: %s", sender, r.emoji, quote);
        else
            snprintf(notice, sizeof(notice), "%s took back a reaction to: %s", sender, quote);
        in.notice = notice;
        in.conversation = target->conversation;
        in.target = p->target_id;
        in.emoji = r.emoji;
        on_message(ctx, &in);
    }
    msv_messages_free(target, 1);
    /* a stale or unauthorised reaction changes nothing; it is not an error of the delivery */
    return err == MSV_ERR_AUTH || err == MSV_ERR_EXISTS ? MSV_OK : err;
}
