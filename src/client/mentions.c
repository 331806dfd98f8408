/*
 * Mentions in group messages: "@name" in the text, name a member's handle or
 * the contact name of a member, is sent as a range naming the handle
 * (docs/wire.md); a receiver keeps only the ranges that name members.
 */
#include "client/internal.h"

#include <string.h>

#include "missive/payload.h"

/* The member named: a member's handle, or a contact name of a member (NULL if neither). */
static const char *member_named(struct msv_client *c, const char *name, char *const *members,
                                size_t n)
{
    struct msv_contact *contacts = NULL;
    size_t k = 0;
    const char *found = NULL;

    for (size_t i = 0; i < n && found == NULL; i++)
        if (strcmp(members[i], name) == 0)
            found = members[i];
    if (found == NULL && msv_client_db_contacts(c->db, name, &contacts, &k) == MSV_OK) {
        for (size_t j = 0; j < k && found == NULL; j++)
            for (size_t i = 0; i < n && found == NULL; i++)
                if (strcmp(contacts[j].handle, members[i]) == 0)
                    found = members[i];
    }
    msv_contacts_free(contacts, k);
    return found;
}

/* The end of the name after an '@' at text[at]: up to a space, without trailing punctuation. */
static size_t name_end(const char *text, size_t at)
{
    size_t end = at + 1 + strcspn(text + at + 1, " \t\n@");

    /* a handle goes on past its own '@' (bob@example.org) */
    if (text[end] == '@')
        end += 1 + strcspn(text + end + 1, " \t\n");
    while (end > at + 1 && strchr(".,!?:;)'\"", text[end - 1]) != NULL)
        end--;
    return end;
}

size_t client_find_mentions(struct msv_client *c, const char *text, char *const *members, size_t n,
                            struct msv_mention *out)
{
    char name[MSV_HANDLE_MAX + 1];
    size_t count = 0, len = text != NULL ? strlen(text) : 0;

    if (len > MSV_CLIENT_INLINE_TEXT_MAX)
        return 0; /* sent as a file with a preview: no ranges in that */
    for (size_t i = 0; i < len && count < MSV_MENTIONS_MAX; i++) {
        size_t end;
        const char *who;

        /* an '@' that begins a word (not the one inside an address) */
        if (text[i] != '@' || (i > 0 && strchr(" \t\n(", text[i - 1]) == NULL))
            continue;
        end = name_end(text, i);
        if (end - i - 1 == 0 || end - i - 1 > MSV_HANDLE_MAX)
            continue;
        memcpy(name, text + i + 1, end - i - 1);
        name[end - i - 1] = '\0';
        who = member_named(c, name, members, n);
        if (who == NULL)
            continue;
        out[count].start = (uint32_t)i;
        out[count].length = (uint32_t)(end - i);
        out[count].handle = (char *)who;
        count++;
        i = end - 1;
    }
    return count;
}

msv_err client_keep_mentions(struct msv_client *c, const uint8_t message_id[16],
                             const char *conversation, const struct msv_payload *p)
{
    struct msv_mention kept[MSV_MENTIONS_MAX];
    size_t n = 0;

    /* never trusted: only ranges naming people of the conversation are kept */
    for (size_t i = 0; i < p->mention_count && n < MSV_MENTIONS_MAX; i++)
        if (client_in_conversation(c, conversation, p->mentions[i].handle))
            kept[n++] = p->mentions[i];
    return n > 0 ? msv_client_db_mentions_put(c->db, message_id, kept, n) : MSV_OK;
}
