/*
 * What the account's person chose for each conversation: muted (until a
 * time, or for good), archived, pinned. Kept as the account's settings
 * "sync:conv:<conversation>:mute" (Unix ms, in decimal), ":archive" and ":pin"
 * ("1"), which the account's devices share; absent is the default.
 */
#include "client/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "missive/util.h"

#define CONVERSATION_MAX 300

/* "sync:conv:<conversation>:<what>"; 0 if the conversation is not a name one. */
static int conv_key(const char *conversation, const char *what, char key[CONVERSATION_MAX + 20])
{
    size_t n = strlen(conversation);

    if (n == 0 || n > CONVERSATION_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)conversation[i] < 0x20 || conversation[i] == 0x7f)
            return 0;
    snprintf(key, CONVERSATION_MAX + 20, "sync:conv:%s:%s", conversation, what);
    return 1;
}

/* A setting as a number; 0 if absent or not a decimal number (another device's garbage). */
static int64_t conv_number(struct msv_client *c, const char *conversation, const char *what)
{
    char key[CONVERSATION_MAX + 20], digits[24];
    uint8_t *v = NULL;
    size_t len = 0;
    int64_t n = 0;

    if (!conv_key(conversation, what, key) || msv_client_db_get(c->db, key, &v, &len) != MSV_OK)
        return 0;
    if (len > 0 && len < 20) {
        /* bytes, not a C string, until copied and ended */
        memcpy(digits, v, len);
        digits[len] = '\0';
        if (strspn(digits, "0123456789") == len)
            n = strtoll(digits, NULL, 10);
    }
    free(v);
    return n;
}

static msv_err conv_put(struct msv_client *c, const char *conversation, const char *what,
                        int64_t value)
{
    char key[CONVERSATION_MAX + 20], digits[24];
    int n;

    if (!conv_key(conversation, what, key))
        return MSV_ERR_INVALID;
    if (value == 0)
        return msv_client_db_unset(c->db, key);
    n = snprintf(digits, sizeof(digits), "%lld", (long long)value);
    return msv_client_db_set(c->db, key, digits, (size_t)n);
}

int msv_client_conversation_muted(struct msv_client *c, const char *conversation)
{
    return conv_number(c, conversation, "mute") > msv_wall_ms();
}

msv_err msv_client_conversation_set(struct msv_client *c, const char *conversation,
                                    enum msv_conversation_change what, int64_t mute_until_ms)
{
    switch (what) {
    case MSV_CONVERSATION_MUTE:
        return mute_until_ms > 0 ? conv_put(c, conversation, "mute", mute_until_ms)
                                 : MSV_ERR_INVALID;
    case MSV_CONVERSATION_UNMUTE:
        return conv_put(c, conversation, "mute", 0);
    case MSV_CONVERSATION_ARCHIVE:
    case MSV_CONVERSATION_UNARCHIVE:
        return conv_put(c, conversation, "archive", what == MSV_CONVERSATION_ARCHIVE);
    case MSV_CONVERSATION_PIN:
    case MSV_CONVERSATION_UNPIN:
        return conv_put(c, conversation, "pin", what == MSV_CONVERSATION_PIN);
    }
    return MSV_ERR_INVALID;
}

msv_err client_conversation_arrived(struct msv_client *c, const char *conversation,
                                    void (*on_message)(void *, const struct msv_incoming *),
                                    void *ctx)
{
    struct msv_incoming in = {
        .kind = MSV_INCOMING_CONVERSATION, .conversation = conversation, .status = "unarchived"};
    char notice[CONVERSATION_MAX + 80];
    msv_err err;

    if (conv_number(c, conversation, "archive") == 0 ||
        msv_client_conversation_muted(c, conversation))
        return MSV_OK;
    err = conv_put(c, conversation, "archive", 0);
    if (err == MSV_OK && on_message != NULL) {
        snprintf(notice, sizeof(notice), "%s is no longer archived: a new message came",
                 conversation);
        in.notice = notice;
        on_message(ctx, &in);
    }
    return err;
}

msv_err msv_client_conversations(struct msv_client *c, int with_archived, const char *keep,
                                 struct msv_conversation_rec **out, size_t *count)
{
    struct msv_conversation_rec *list = NULL, *sorted = NULL;
    size_t n = 0, k = 0;
    int64_t now = msv_wall_ms();
    msv_err err = msv_client_db_conversations(c->db, &list, &n);

    if (err == MSV_OK && (sorted = calloc(n ? n : 1, sizeof(*sorted))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        list[i].pinned = conv_number(c, list[i].conversation, "pin") != 0;
        list[i].archived = conv_number(c, list[i].conversation, "archive") != 0;
        list[i].muted_until_ms = conv_number(c, list[i].conversation, "mute");
        if (list[i].muted_until_ms <= now)
            list[i].muted_until_ms = 0; /* a mute that ran out */
    }
    /* pinned first, then the others, each newest first as listed; archived ones left out */
    for (int pinned = 1; err == MSV_OK && pinned >= 0; pinned--) {
        for (size_t i = 0; i < n; i++) {
            int shown = with_archived || !list[i].archived ||
                        (keep != NULL && strcmp(keep, list[i].conversation) == 0);

            if (list[i].pinned == pinned && shown) {
                sorted[k++] = list[i];
                list[i].conversation = NULL; /* moved */
            }
        }
    }
    msv_conversations_free(list, n);
    if (err != MSV_OK) {
        msv_conversations_free(sorted, k);
        return err;
    }
    *out = sorted;
    *count = k;
    return MSV_OK;
}
