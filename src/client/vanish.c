/*
 * Disappearing messages (docs/missive.md, "Disappearing messages"): each
 * conversation has a timer that any participant sets with a TIMER payload;
 * every message carries the timer in force when it was sent, and every
 * device deletes it that long after it was read (this account's own
 * messages: after they were sent), files and search index included.
 *
 * The timer in force is the setting "timer:<conversation>": u32be seconds
 * || u64be when it was set (the change's send time, never later than when it
 * arrived). A change older than the one in force changes nothing, so a relay
 * that holds one back or replays it cannot undo a newer one.
 */
#include "client/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "missive/util.h"
#include "util/endian.h"
#include "util/privdir.h"

#define TIMER_VALUE_LEN 12
#define EXPIRE_BATCH 64

msv_err msv_client_timer_parse(const char *text, uint32_t *timer_s)
{
    static const struct {
        char suffix;
        uint64_t seconds;
    } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400}};
    uint64_t n = 0, unit = 1;
    const char *s = text;

    if (text == NULL)
        return MSV_ERR_INVALID;
    if (strcmp(text, "off") == 0 || strcmp(text, "0") == 0) {
        *timer_s = 0;
        return MSV_OK;
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (uint64_t)(*s - '0');
        if (n > MSV_TIMER_MAX_S)
            return MSV_ERR_INVALID;
    }
    if (s == text)
        return MSV_ERR_INVALID;
    if (*s != '\0') {
        size_t i;

        for (i = 0; i < sizeof(units) / sizeof(units[0]) && units[i].suffix != *s; i++)
            ;
        if (i == sizeof(units) / sizeof(units[0]) || s[1] != '\0')
            return MSV_ERR_INVALID;
        unit = units[i].seconds;
    }
    if (n * unit < MSV_TIMER_MIN_S || n * unit > MSV_TIMER_MAX_S)
        return MSV_ERR_INVALID;
    *timer_s = (uint32_t)(n * unit);
    return MSV_OK;
}

void msv_client_timer_text(uint32_t timer_s, char out[16])
{
    static const struct {
        char suffix;
        uint32_t seconds;
    } units[] = {{'w', 7 * 86400}, {'d', 86400}, {'h', 3600}, {'m', 60}};
    size_t i;

    if (timer_s == 0) {
        snprintf(out, 16, "off");
        return;
    }
    for (i = 0; i < sizeof(units) / sizeof(units[0]) && timer_s % units[i].seconds != 0; i++)
        ;
    if (i == sizeof(units) / sizeof(units[0]))
        snprintf(out, 16, "%lus", (unsigned long)timer_s);
    else
        snprintf(out, 16, "%lu%c", (unsigned long)(timer_s / units[i].seconds), units[i].suffix);
}

static void timer_key(const char *conversation, char key[300])
{
    snprintf(key, 300, "timer:%s", conversation);
}

/* The timer in force and when it was set (0 and 0 if never). */
static msv_err timer_in_force(struct msv_client *c, const char *conversation, uint32_t *timer_s,
                              uint64_t *set_ms)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    timer_key(conversation, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    *timer_s = 0;
    *set_ms = 0;
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err == MSV_OK && len == TIMER_VALUE_LEN) {
        *timer_s = msv_get_u32be(v);
        *set_ms = msv_get_u64be(v + 4);
    } else if (err == MSV_OK) {
        err = MSV_ERR_PARSE;
    }
    free(v);
    return err;
}

msv_err msv_client_timer_get(struct msv_client *c, const char *conversation, uint32_t *timer_s)
{
    uint64_t set_ms;

    return timer_in_force(c, conversation, timer_s, &set_ms);
}

/* Records timer_s as set at set_ms unless a change at least as recent is in force (*applied). */
static msv_err timer_record(struct msv_client *c, const char *conversation, uint32_t timer_s,
                            uint64_t set_ms, int *applied)
{
    uint8_t v[TIMER_VALUE_LEN];
    uint64_t now_set = 0;
    uint32_t now_timer = 0;
    char key[300];
    msv_err err = timer_in_force(c, conversation, &now_timer, &now_set);

    *applied = 0;
    if (err != MSV_OK || (now_set != 0 && set_ms <= now_set))
        return err;
    msv_put_u32be(v, timer_s);
    msv_put_u64be(v + 4, set_ms);
    timer_key(conversation, key);
    err = msv_client_db_set(c->db, key, v, sizeof(v));
    *applied = err == MSV_OK;
    return err;
}

/* What history shows of a change: "<who> set disappearing messages to 1h" (or off). */
static void timer_notice(const char *who, uint32_t timer_s, char *out, size_t len)
{
    char value[16];

    msv_client_timer_text(timer_s, value);
    if (timer_s == 0)
        snprintf(out, len, "%s turned disappearing messages off", who);
    else
        snprintf(out, len, "%s set disappearing messages to %s", who, value);
}

msv_err msv_client_timer_set(struct msv_client *c, const char *conversation, uint32_t timer_s)
{
    struct msv_group_rec g = {0};
    struct msv_payload p = {.kind = MSV_KIND_TIMER, .timer_s = timer_s};
    char **targets = NULL, notice[400];
    uint8_t id[16];
    size_t n = 0;
    int applied = 0;
    msv_err err;

    if (timer_s != 0 && (timer_s < MSV_TIMER_MIN_S || timer_s > MSV_TIMER_MAX_S))
        return MSV_ERR_INVALID;
    err = client_conversation_targets(c, conversation, &g, &targets, &n);
    if (err == MSV_OK && g.name != NULL) {
        p.has_group = true;
        memcpy(p.group_id, g.group_id, 16);
    }
    timer_notice("You", timer_s, notice, sizeof(notice));
    if (err == MSV_OK)
        err = client_send_payload(c, (const char *const *)targets, n, &p, notice, conversation,
                                  NULL, 0, NULL, id);
    /* in force here as soon as it is queued (p.sent_at_ms is set then) */
    if (p.sent_at_ms != 0) {
        msv_err rec = timer_record(c, conversation, timer_s, p.sent_at_ms, &applied);

        err = err == MSV_OK ? rec : err;
    }
    free(targets);
    msv_group_clear(&g);
    return err;
}

uint32_t client_timer_for_send(struct msv_client *c, const char *conversation)
{
    uint32_t timer_s = 0;

    return msv_client_timer_get(c, conversation, &timer_s) == MSV_OK ? timer_s : 0;
}

msv_err client_take_timer(struct msv_client *c, const char *sender, uint64_t device,
                          const struct msv_payload *p, const char *conversation,
                          void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_message_rec rec = {.kind = MSV_KIND_TIMER, .status = "notice"};
    struct msv_incoming in = {.kind = MSV_INCOMING_TIMER, .from = sender};
    char notice[400];
    int64_t now = msv_wall_ms();
    /* a change stamped in the future would lock out every later one */
    uint64_t set_ms = p->sent_at_ms < (uint64_t)now ? p->sent_at_ms : (uint64_t)now;
    int applied = 0;
    msv_err err = timer_record(c, conversation, p->timer_s, set_ms, &applied);

    if (err != MSV_OK || !applied)
        return err; /* an older change than the one in force: nothing to do */
    timer_notice(strcmp(sender, c->handle) == 0 ? "You" : sender, p->timer_s, notice,
                 sizeof(notice));
    memcpy(rec.message_id, p->message_id, 16);
    rec.conversation = (char *)conversation;
    rec.outgoing = strcmp(sender, c->handle) == 0;
    rec.sender = (char *)sender;
    rec.sender_device = device;
    rec.text = notice;
    rec.sent_at_ms = (int64_t)p->sent_at_ms;
    rec.stored_at_ms = now;
    err = msv_client_db_message_put(c->db, &rec);
    if (err == MSV_ERR_EXISTS)
        err = MSV_OK; /* its id taken by another message: the change stands, unrecorded */
    if (err == MSV_OK && on_message != NULL) {
        in.conversation = conversation;
        in.notice = notice;
        in.timer_s = p->timer_s;
        on_message(ctx, &in);
    }
    return err;
}

/* attachments/<message id>-* (internal.h) */
msv_err client_delete_files(struct msv_client *c, const uint8_t id[16])
{
    char dir_path[1100], hex[33];
    struct dirent *e;
    DIR *d;
    int fd;
    msv_err err = MSV_OK;

    snprintf(dir_path, sizeof(dir_path), "%s/attachments", c->dir);
    fd = msv_privdir_open(AT_FDCWD, dir_path, 0);
    if (fd < 0)
        return errno == ENOENT ? MSV_OK : MSV_ERR_IO;
    if (msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK || (d = fdopendir(fd)) == NULL) {
        close(fd);
        return MSV_ERR_IO;
    }
    while (err == MSV_OK && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, hex, 32) == 0 && e->d_name[32] == '-' &&
            unlinkat(fd, e->d_name, 0) != 0 && errno != ENOENT)
            err = MSV_ERR_IO;
    }
    closedir(d);
    return err;
}

/*
 * Expired message m of this device's own was still in the outbox (o, n: the outbox) for some of
 * its recipients: the outbox's copy goes with it (a timer leaves no copy), and the conversation
 * says it may not have reached them, rather than the message vanishing unsaid. "May": a send
 * whose answer was lost left it in the outbox although the server had stored it.
 */
static msv_err expired_unsent(struct msv_client *c, const struct msv_message_rec *m,
                              const struct msv_outbox_rec *o, size_t n)
{
    char text[700], who[300];
    size_t at = 0;

    for (size_t i = 0; i < n; i++) {
        if (memcmp(o[i].message_id, m->message_id, 16) != 0)
            continue;
        /* the recipients, one a line, as "a, b, c" */
        for (const char *r = o[i].recipients; *r != '\0' && at + 3 < sizeof(who); r++) {
            if (*r != '\n')
                who[at++] = *r;
            else if (r[1] != '\0') {
                who[at++] = ',';
                who[at++] = ' ';
            }
        }
        who[at] = '\0';
        snprintf(text, sizeof(text),
                 "a message with a disappearing-message timer may not have reached %s: its timer "
                 "ran out while it still waited in this device's outbox for them (the server had "
                 "not confirmed it), and it was deleted",
                 who);
        return client_notice_keep(c, m->conversation, text);
    }
    return MSV_OK;
}

msv_err msv_client_expire(struct msv_client *c,
                          void (*on_message)(void *ctx, const struct msv_incoming *in), void *ctx,
                          size_t *count)
{
    struct msv_message_rec *m = NULL;
    size_t n = EXPIRE_BATCH;
    msv_err err = MSV_OK;

    *count = 0;
    while (err == MSV_OK && n == EXPIRE_BATCH) {
        struct msv_outbox_rec *o = NULL;
        size_t n_out = 0;
        int own = 0;

        n = 0;
        err = msv_client_db_messages_expired(c->db, msv_wall_ms(), EXPIRE_BATCH, &m, &n);
        for (size_t i = 0; i < n; i++)
            own |= m[i].outgoing;
        if (err == MSV_OK && own)
            err = msv_client_db_outbox(c->db, &o, &n_out);
        /* the files first: a crash after them leaves the row, and the next call ends the job
         * (the notice of what never went comes before the row, whose outbox entry goes with
         * it: a crash between says it twice rather than never) */
        for (size_t i = 0; err == MSV_OK && i < n; i++) {
            struct msv_incoming in = {.kind = MSV_INCOMING_EXPIRED};

            if (m[i].outgoing)
                err = expired_unsent(c, &m[i], o, n_out);
            if (err == MSV_OK)
                err = client_delete_files(c, m[i].message_id);
            if (err == MSV_OK)
                err = msv_client_db_message_delete(c->db, m[i].message_id);
            if (err == MSV_OK)
                (*count)++;
            if (err == MSV_OK && on_message != NULL) {
                in.conversation = m[i].conversation;
                in.target = m[i].message_id;
                in.from = m[i].sender;
                on_message(ctx, &in);
            }
        }
        msv_outbox_free(o, n_out);
        msv_messages_free(m, n);
        m = NULL;
    }
    return err;
}
