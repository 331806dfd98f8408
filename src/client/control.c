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
                                    struct msv_group_rec *g, char ***targets, size_t *n)
{
    uint8_t id[16];
    size_t len = 0;
    msv_err err;

    if (strncmp(conversation, "group:", 6) != 0)
        return client_members_of(conversation, targets, n);
    if (msv_hex_decode(conversation + 6, id, sizeof(id), &len) != MSV_OK || len != 16)
        return MSV_ERR_PARSE;
    err = msv_client_db_group_get(c->db, id, NULL, g);
    if (err == MSV_OK)
        err = client_members_of(g->members, targets, n);
    return err;
}

msv_err client_send_to_conversation(struct msv_client *c, struct msv_payload *p,
                                    const char *conversation)
{
    struct msv_group_rec g = {0};
    char **targets = NULL;
    uint8_t id[16];
    size_t n = 0;
    msv_err err = client_conversation_targets(c, conversation, &g, &targets, &n);

    if (err == MSV_OK && g.name == NULL)
        err = client_refuse_blocked(c, (const char *const *)targets, n);
    if (err == MSV_OK && p->kind == MSV_KIND_TYPING && g.name != NULL) {
        /* so that the members show it in the group, not beside it */
        p->has_group = true;
        memcpy(p->group_id, g.group_id, 16);
    }
    if (err == MSV_OK)
        err = client_send_payload(c, (const char *const *)targets, n, p, NULL, NULL, NULL, 0, NULL,
                                  id);
    free(targets);
    msv_group_clear(&g);
    return err;
}

/* Sends a control payload about target to the people of a conversation. */
msv_err client_send_control(struct msv_client *c, enum msv_payload_kind kind,
                            const uint8_t target[16], const char *text, const char *conversation)
{
    struct msv_payload p = {.kind = kind, .text = (char *)text};

    if (target != NULL) {
        p.has_target = true;
        memcpy(p.target_id, target, 16);
    }
    return client_send_to_conversation(c, &p, conversation);
}

msv_err msv_client_typing(struct msv_client *c, const char *conversation)
{
    if (!client_privacy_on(c, "typing")) {
        c->why.code = MSV_REFUSAL_PRIVACY;
        snprintf(c->why.message, sizeof(c->why.message),
                 "typing notices are off (missive settings set typing on)");
        return MSV_ERR_INVALID;
    }
    if (msv_client_is_request(c, conversation)) {
        c->why.code = MSV_REFUSAL_REQUEST;
        snprintf(c->why.message, sizeof(c->why.message),
                 "%s's message request is not accepted: nothing goes back yet", conversation);
        return MSV_ERR_INVALID;
    }
    return client_send_control(c, MSV_KIND_TYPING, NULL, NULL, conversation);
}

/* "sync:window:edit" or "sync:window:unsend": seconds, in decimal. */
static int window_key(const char *which, char key[24])
{
    if (strcmp(which, "edit") != 0 && strcmp(which, "unsend") != 0)
        return 0;
    snprintf(key, 24, "sync:window:%s", which);
    return 1;
}

msv_err msv_client_window(struct msv_client *c, const char *which, uint64_t *seconds)
{
    char key[24], digits[24];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    if (!window_key(which, key))
        return MSV_ERR_INVALID;
    *seconds = MSV_WINDOW_DEFAULT_S;
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    /* a value another device wrote that is not a number of seconds in range: the default */
    if (err == MSV_OK && len > 0 && len < sizeof(digits)) {
        /* the stored value is bytes, not a C string: look at it only once it is one */
        memcpy(digits, v, len);
        digits[len] = '\0';
        if (strspn(digits, "0123456789") == len && strtoull(digits, NULL, 10) <= MSV_WINDOW_MAX_S)
            *seconds = strtoull(digits, NULL, 10);
    }
    free(v);
    return err;
}

msv_err msv_client_set_window(struct msv_client *c, const char *which, uint64_t seconds)
{
    char key[24], digits[24];
    int n;

    if (!window_key(which, key) || seconds > MSV_WINDOW_MAX_S)
        return MSV_ERR_INVALID;
    n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)seconds);
    return msv_client_db_set(c->db, key, digits, (size_t)n);
}

/* Whether a change made at change_ms of a message sent at sent_ms is inside the window. */
static msv_err in_window(struct msv_client *c, enum msv_payload_kind kind, int64_t sent_ms,
                         int64_t change_ms, int64_t slack_ms, int *inside)
{
    uint64_t seconds = 0;
    msv_err err = msv_client_window(c, kind == MSV_KIND_EDIT ? "edit" : "unsend", &seconds);

    *inside = err == MSV_OK && change_ms - sent_ms <= (int64_t)seconds * 1000 + slack_ms;
    return err;
}

/* An edit or unsend of one of this account's messages, inside the account's window. */
/*
 * Stores an edit of m: the new text, followed by the "[file...]" lines that
 * end m's stored text (its files stay listed: an edit changes the words only).
 */
static msv_err store_edit(struct msv_client *c, const struct msv_message_rec *m, uint32_t number,
                          const char *text, int64_t at_ms)
{
    const char *old = m->text ? m->text : "";
    size_t keep = strlen(old), nl, len;
    char *stored;
    msv_err err;

    if (text == NULL)
        text = "";
    /* the file lines, from the end back: each "\n[file" ... "]" */
    while (keep > 0 && old[keep - 1] == ']') {
        for (nl = keep; nl > 0 && old[nl - 1] != '\n'; nl--)
            ;
        if (nl == 0 || strncmp(old + nl, "[file", 5) != 0)
            break;
        keep = nl - 1;
    }
    len = strlen(text);
    if ((stored = malloc(len + strlen(old + keep) + 1)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(stored, text, len);
    memcpy(stored + len, old + keep, strlen(old + keep) + 1);
    err = msv_client_db_message_edit(c->db, m->message_id, number, stored, at_ms);
    free(stored);
    return err;
}

static msv_err change_own(struct msv_client *c, const uint8_t id[16], const char *text,
                          enum msv_payload_kind kind)
{
    struct msv_message_rec *m = NULL;
    struct msv_payload p = {.kind = kind, .text = (char *)text, .has_target = true};
    int inside = 0;
    msv_err err = msv_client_db_message_get(c->db, id, &m);

    c->why.message[0] = '\0';
    memcpy(p.target_id, id, 16);
    if (err == MSV_OK && (!m->outgoing || m->kind != MSV_KIND_MESSAGE))
        err = MSV_ERR_INVALID; /* only this account's own messages */
    if (err == MSV_OK && strcmp(m->status, "unsent") == 0) {
        err = MSV_ERR_INVALID;
        snprintf(c->why.message, sizeof(c->why.message), "the message was unsent already");
    }
    if (err == MSV_OK)
        err = in_window(c, kind, m->sent_at_ms, msv_wall_ms(), 0, &inside);
    if (err == MSV_OK && !inside) {
        err = MSV_ERR_INVALID;
        snprintf(c->why.message, sizeof(c->why.message),
                 "too late: the %s window is over (see 'missive windows')",
                 kind == MSV_KIND_EDIT ? "edit" : "unsend");
    }
    /* the next number after the last edit this account's devices applied */
    if (err == MSV_OK && kind == MSV_KIND_EDIT &&
        (err = msv_client_db_edit_number(c->db, id, &p.edit_number)) == MSV_OK &&
        p.edit_number++ >= MSV_EDITS_MAX) {
        err = MSV_ERR_INVALID;
        snprintf(c->why.message, sizeof(c->why.message), "a message is edited at most %u times",
                 MSV_EDITS_MAX);
    }
    /*
     * An edit is recorded before it goes, so that its number is never used
     * twice (receivers would ignore the second); should the send fail, the
     * next edit supersedes it. An unsend is recorded once it went: until
     * then it can be tried again.
     */
    if (err == MSV_OK && kind == MSV_KIND_EDIT)
        err = store_edit(c, m, p.edit_number, text, msv_wall_ms());
    if (err == MSV_OK)
        err = client_send_to_conversation(c, &p, m->conversation);
    if (err == MSV_OK && kind == MSV_KIND_UNSEND)
        err = msv_client_db_message_rewrite(c->db, id, "", "unsent");
    if (err == MSV_OK && kind == MSV_KIND_UNSEND)
        err = client_delete_files(c, id); /* this device's copy of what it sent */
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
    int receipts = client_privacy_on(c, "read-receipts");

    *count = 0;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        /* a message edited before it was read is read now too: a disappearing one's time runs
         * from here (its status keeps saying it was edited) */
        if (!m[i].outgoing && strcmp(m[i].status, "edited") == 0)
            err = msv_client_db_message_expiry_start(c->db, m[i].message_id, msv_wall_ms());
        if (m[i].outgoing || strcmp(m[i].status, "received") != 0)
            continue;
        /* the receipt goes to the sender, whatever conversation the message is in; none
         * with read receipts off, or to a blocked sender: the message is read here only */
        if (receipts && !msv_client_is_blocked(c, m[i].sender) &&
            !msv_client_message_is_request(c, &m[i]))
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

/*
 * Whether an edit or unsend of target from its author applies: an unsend wins
 * over every edit, and an edit applies only if its number is above the last
 * one applied (a relay that holds one edit back or replays it cannot roll the
 * message back with it). *late: it came after the receiver's window.
 */
static msv_err change_applies(struct msv_client *c, const struct msv_message_rec *target,
                              const struct msv_payload *p, int *applies, int *late)
{
    uint32_t applied = 0;
    int inside = 0;
    msv_err err = MSV_OK;

    *applies = *late = 0;
    if (strcmp(target->status, "unsent") == 0)
        return MSV_OK;
    if (p->kind == MSV_KIND_EDIT &&
        (err = msv_client_db_edit_number(c->db, target->message_id, &applied)) != MSV_OK)
        return err;
    if (p->kind == MSV_KIND_EDIT && p->edit_number <= applied)
        return MSV_OK;
    err = in_window(c, p->kind, target->sent_at_ms, (int64_t)p->sent_at_ms, MSV_CLOCK_SKEW_MS,
                    &inside);
    *applies = err == MSV_OK && inside;
    *late = err == MSV_OK && !inside;
    return err;
}

/* Applies an edit or unsend from sender, who must be the author, and says what it did. */
static msv_err take_change(struct msv_client *c, const char *sender,
                           const struct msv_message_rec *target, const struct msv_payload *p,
                           struct msv_incoming *in, char *notice, size_t notice_len)
{
    const char *what = p->kind == MSV_KIND_EDIT ? "edited" : "unsent";
    int applies = 0, late = 0;
    msv_err err = MSV_OK;

    /* only the author changes a message */
    if (strcmp(target->sender, sender) != 0 ||
        (err = change_applies(c, target, p, &applies, &late)) != MSV_OK || (!applies && !late))
        return err;
    in->kind = MSV_INCOMING_EDIT;
    in->conversation = target->conversation;
    in->target = target->message_id;
    in->status = late ? "refused" : what;
    if (late) {
        snprintf(notice, notice_len, "%s %s a message after the window: %s refused: too late",
                 sender, what, p->kind == MSV_KIND_EDIT ? "edit" : "unsend");
        return MSV_OK;
    }
    err = p->kind == MSV_KIND_EDIT
              ? store_edit(c, target, p->edit_number, p->text, (int64_t)p->sent_at_ms)
              : msv_client_db_message_rewrite(c->db, target->message_id, "", "unsent");
    if (err == MSV_OK && p->kind == MSV_KIND_UNSEND)
        err = client_delete_files(c, target->message_id); /* what was received with it goes too */
    snprintf(notice, notice_len, "%s %s a message%s%.200s", sender, what,
             p->kind == MSV_KIND_EDIT ? ": " : "", p->kind == MSV_KIND_EDIT ? p->text : "");
    return err;
}

/* Whether a message this account sent went to handle: only they send receipts for it. */
static int is_recipient(struct msv_client *c, const struct msv_message_rec *m, const char *handle)
{
    msv_err err = msv_client_db_is_recipient(c->db, m->message_id, handle);

    /* sent before recipients were recorded: the conversation's other person */
    return err == MSV_OK || (err == MSV_ERR_NOT_FOUND && strcmp(m->conversation, handle) == 0);
}

/* client_take_control; *status (unless NULL): what an edit or unsend did ("edited",
 * "unsent", "refused"), NULL if nothing. */
static msv_err take_control(struct msv_client *c, const char *sender, uint64_t device,
                            const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                            const char **status);

/*
 * "early:<hex of the target message's id><hex of 8 bytes of a hash of the sender, its device and
 * the change>" = u64be wall ms kept || u64be sender's device || sender's handle || NUL || the
 * change's payload: an edit or unsend of a message this device does not have yet, applied as
 * its author's when that message is shown (client_changes_apply). A message may come after
 * its change: a server held it back, or it was owed to this device and sent again after it. At
 * most EARLY_PER_SENDER of one handle's and EARLY_MAX in all wait (past that the oldest of the
 * handle holding most goes, counted), each at most EARLY_KEEP_MS.
 */
#define EARLY "early:"
#define EARLY_KEY_MAX (sizeof(EARLY) + 32 + 16)
#define EARLY_MAX 256
#define EARLY_PER_SENDER 32
#define EARLY_KEEP_MS (30LL * 86400 * 1000)
#define EARLY_DROPPED "early-changes-dropped"

uint64_t msv_client_early_changes_dropped(struct msv_client *c)
{
    return client_counter(c, EARLY_DROPPED);
}

/* A kept change as read: its time, sender's device, sender and payload (borrowed). */
struct early {
    int64_t at;
    uint64_t device;
    const char *sender;
    const uint8_t *pt;
    size_t pt_len;
};

static int early_parse(const struct msv_setting *s, struct early *e)
{
    const uint8_t *end;

    if (s->len < 17 || (end = memchr(s->value + 16, '\0', s->len - 16)) == NULL)
        return 0;
    e->at = (int64_t)msv_get_u64be(s->value);
    e->device = msv_get_u64be(s->value + 8);
    e->sender = (const char *)s->value + 16;
    e->pt = end + 1;
    e->pt_len = s->len - (size_t)(e->pt - s->value);
    return 1;
}

static int early_expired(const struct early *e, int64_t now)
{
    return now - e->at > EARLY_KEEP_MS || e->at > now + EARLY_KEEP_MS;
}

/* The key of a change (sender's device, sender, payload) of target. */
static msv_err early_key(const uint8_t target[16], const char *sender, uint64_t device,
                         const uint8_t *pt, size_t pt_len, char key[EARLY_KEY_MAX])
{
    crypto_generichash_state st;
    uint8_t h[8], device_be[8];
    char hex[33], hh[17];
    msv_err err;

    msv_put_u64be(device_be, device);
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, (const uint8_t *)sender, strlen(sender) + 1);
    crypto_generichash_update(&st, device_be, sizeof(device_be));
    crypto_generichash_update(&st, pt, pt_len);
    crypto_generichash_final(&st, h, sizeof(h));
    err = msv_hex_encode(target, 16, hex, sizeof(hex));
    if (err == MSV_OK)
        err = msv_hex_encode(h, sizeof(h), hh, sizeof(hh));
    snprintf(key, EARLY_KEY_MAX, EARLY "%s%s", hex, hh);
    return err;
}

/* Makes room for one more of sender's: what expired or does not read goes; then, past a bound,
 * the oldest of sender's (its own bound) or of the handle holding most (the one in all). */
static msv_err early_room(struct msv_client *c, const char *sender)
{
    struct msv_setting *s = NULL;
    struct early *e = NULL;
    size_t n = 0, live = 0, mine = 0, most = 0, drop = SIZE_MAX;
    int64_t now = msv_wall_ms();
    const char *heavy = sender;
    msv_err err = msv_client_db_settings(c->db, EARLY, SIZE_MAX, &s, &n);

    if (err == MSV_OK && (e = calloc(n + 1, sizeof(*e))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (!early_parse(&s[i], &e[i]) || early_expired(&e[i], now)) {
            e[i].sender = NULL;
            err = msv_client_db_unset(c->db, s[i].key);
            continue;
        }
        live++;
        mine += strcmp(e[i].sender, sender) == 0;
    }
    /* the handle holding most, when all are full (a flood from some pushes out only theirs) */
    for (size_t i = 0; err == MSV_OK && mine < EARLY_PER_SENDER && live >= EARLY_MAX && i < n;
         i++) {
        size_t count = 0;

        for (size_t k = 0; e[i].sender != NULL && k < n; k++)
            count += e[k].sender != NULL && strcmp(e[k].sender, e[i].sender) == 0;
        if (count > most) {
            most = count;
            heavy = e[i].sender;
        }
    }
    for (size_t i = 0; err == MSV_OK && (mine >= EARLY_PER_SENDER || live >= EARLY_MAX) && i < n;
         i++)
        if (e[i].sender != NULL && strcmp(e[i].sender, heavy) == 0 &&
            (drop == SIZE_MAX || e[i].at < e[drop].at))
            drop = i;
    if (err == MSV_OK && drop != SIZE_MAX) {
        err = msv_client_db_unset(c->db, s[drop].key);
        if (err == MSV_OK)
            err = client_counter_bump(c, EARLY_DROPPED);
    }
    free(e);
    msv_settings_free(s, n);
    return err;
}

msv_err client_change_keep(struct msv_client *c, const char *sender, uint64_t device,
                           const uint8_t target[16], const uint8_t *pt, size_t pt_len)
{
    uint8_t *v = NULL;
    size_t len = 0;
    char key[EARLY_KEY_MAX];
    msv_err err = early_key(target, sender, device, pt, pt_len, key);

    /* the same change given again: kept once, its time as it was */
    if (err == MSV_OK && (err = msv_client_db_get(c->db, key, &v, &len)) == MSV_OK) {
        free(v);
        return MSV_OK;
    }
    if (err == MSV_ERR_NOT_FOUND)
        err = early_room(c, sender);
    len = 16 + strlen(sender) + 1 + pt_len;
    if (err == MSV_OK && (v = malloc(len)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        msv_put_u64be(v, (uint64_t)msv_wall_ms());
        msv_put_u64be(v + 8, device);
        memcpy(v + 16, sender, strlen(sender) + 1);
        memcpy(v + 16 + strlen(sender) + 1, pt, pt_len);
        err = msv_client_db_set(c->db, key, v, len);
    }
    free(v);
    return err;
}

/* The order kept changes go in: the author's unsend alone first (its edits never shown), then
 * edits by their number. */
static int early_rank(const struct msv_payload *p)
{
    return p->kind == MSV_KIND_UNSEND
               ? -1
               : (int)(p->edit_number > INT32_MAX ? INT32_MAX : p->edit_number);
}

msv_err client_changes_apply(struct msv_client *c, const uint8_t target[16], const char *author,
                             void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                             int *applied)
{
    struct msv_setting *s = NULL;
    struct msv_payload **p = NULL;
    size_t n = 0;
    int64_t now = msv_wall_ms();
    char prefix[EARLY_KEY_MAX], hex[33];
    int unsent = 0;
    msv_err err = msv_hex_encode(target, 16, hex, sizeof(hex));

    *applied = 0;
    snprintf(prefix, sizeof(prefix), EARLY "%s", hex);
    if (err == MSV_OK)
        err = msv_client_db_settings(c->db, prefix, EARLY_MAX, &s, &n);
    if (err == MSV_OK && n > 0 && (p = calloc(n, sizeof(*p))) == NULL)
        err = MSV_ERR_NOMEM;
    /* the author's (another's stays, for a message of theirs under the same id, until it
     * expires); one that expired or does not read goes */
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct early e;
        int ok = early_parse(&s[i], &e) && !early_expired(&e, now) &&
                 msv_payload_parse(e.pt, e.pt_len, &p[i]) == MSV_OK && p[i]->has_target &&
                 memcmp(p[i]->target_id, target, 16) == 0 &&
                 (p[i]->kind == MSV_KIND_EDIT || p[i]->kind == MSV_KIND_UNSEND);

        if (ok && strcmp(e.sender, author) != 0) {
            msv_payload_free(p[i]);
            p[i] = NULL;
            continue;
        }
        if (!ok) {
            msv_payload_free(p[i]);
            p[i] = NULL;
            err = msv_client_db_unset(c->db, s[i].key);
        }
    }
    /* in their order, as they would have been taken after the message */
    for (int done = 0; err == MSV_OK && !done;) {
        size_t next = SIZE_MAX;
        struct early e;

        for (size_t i = 0; i < n; i++)
            if (p[i] != NULL && (next == SIZE_MAX || early_rank(p[i]) < early_rank(p[next])))
                next = i;
        done = next == SIZE_MAX;
        if (done)
            break;
        /* once an unsend is taken, the author's edits are moot: dropped unseen (one refused
         * as too late leaves them to apply) */
        if (!unsent) {
            const char *did = NULL;

            (void)early_parse(&s[next], &e);
            err = take_control(c, e.sender, e.device, p[next], on_message, ctx, &did);
            unsent = did != NULL && strcmp(did, "unsent") == 0;
            *applied = 1;
        }
        if (err == MSV_OK)
            err = msv_client_db_unset(c->db, s[next].key);
        msv_payload_free(p[next]);
        p[next] = NULL;
    }
    for (size_t i = 0; i < n && p != NULL; i++)
        msv_payload_free(p[i]);
    free(p);
    msv_settings_free(s, n);
    return err;
}

void client_reused_id(const uint8_t id[16], const char *sender, uint64_t device,
                      uint8_t local_id[16])
{
    crypto_generichash_state h;
    uint8_t device_be[8];

    msv_put_u64be(device_be, device);
    crypto_generichash_init(&h, (const uint8_t *)"missive: reused message id", 26, 16);
    crypto_generichash_update(&h, id, 16);
    crypto_generichash_update(&h, (const uint8_t *)sender, strlen(sender) + 1);
    crypto_generichash_update(&h, device_be, sizeof(device_be));
    crypto_generichash_final(&h, local_id, 16);
}

msv_err client_change_target(struct msv_client *c, const uint8_t target_id[16], const char *sender,
                             uint64_t device, struct msv_message_rec **out)
{
    struct msv_known_device *known = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_message_get(c->db, target_id, out);

    if (err != MSV_OK || strcmp((*out)->sender, sender) == 0)
        return err;
    /* under that id, another's message that came first: sender's own, if it has one, is kept
     * under an id of its own (receive.c, redelivery_or_conflict), named by the device that
     * sent it: the change's, or another of sender's */
    err = msv_client_db_known_devices(c->db, sender, &known, &n);
    for (size_t i = 0; err == MSV_OK && i <= n; i++) {
        struct msv_message_rec *own = NULL;
        uint8_t local_id[16];

        if (i > 0 && known[i - 1].device_id == device)
            continue;
        client_reused_id(target_id, sender, i == 0 ? device : known[i - 1].device_id, local_id);
        err = msv_client_db_message_get(c->db, local_id, &own);
        if (err == MSV_OK) {
            msv_messages_free(*out, 1);
            *out = own;
            break;
        }
        if (err == MSV_ERR_NOT_FOUND)
            err = MSV_OK;
    }
    msv_known_devices_free(known, n);
    if (err != MSV_OK) { /* a storage failure: the delivery comes again */
        msv_messages_free(*out, 1);
        *out = NULL;
    }
    return err;
}

msv_err client_take_control(struct msv_client *c, const char *sender, uint64_t device,
                            const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    return take_control(c, sender, device, p, on_message, ctx, NULL);
}

static msv_err take_control(struct msv_client *c, const char *sender, uint64_t device,
                            const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                            const char **status)
{
    struct msv_message_rec *target = NULL;
    struct msv_incoming in = {.from = sender};
    struct msv_group_rec g = {0};
    char notice[600], group_conversation[40];
    msv_err err = MSV_OK;

    notice[0] = '\0';
    if (status != NULL)
        *status = NULL;
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
    if (p->kind == MSV_KIND_REACTION) /* this account's other devices' too */
        return client_take_reaction(c, sender, p, on_message, ctx);
    /* this account's own devices: only their edits and unsends, so that all of them agree */
    if (strcmp(sender, c->handle) == 0 && p->kind != MSV_KIND_EDIT && p->kind != MSV_KIND_UNSEND)
        return MSV_OK;
    if (p->has_target && (p->kind == MSV_KIND_EDIT || p->kind == MSV_KIND_UNSEND)
            ? client_change_target(c, p->target_id, sender, device, &target) != MSV_OK
            : p->has_target && msv_client_db_message_get(c->db, p->target_id, &target) != MSV_OK)
        return MSV_OK; /* about a message this device does not have */
    switch (p->kind) {
    case MSV_KIND_RECEIPT_DELIVERED:
    case MSV_KIND_RECEIPT_READ:
        /* only for what this account sent, and "read" is never taken back to "delivered";
         * with read receipts off, others' are not shown either */
        if (p->kind == MSV_KIND_RECEIPT_READ && !client_privacy_on(c, "read-receipts"))
            break;
        if (target->outgoing && is_recipient(c, target, sender) &&
            strcmp(target->status, "unsent") != 0 &&
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
        if (!client_privacy_on(c, "typing"))
            break; /* typing notices off: neither sent nor shown */
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
        err = take_change(c, sender, target, p, &in, notice, sizeof(notice));
        if (status != NULL)
            *status = in.status;
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
