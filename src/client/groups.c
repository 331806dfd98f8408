/*
 * Groups: creating, changing and accepting them, and announcing each change to the members.
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

/* Splits a member list (one handle per line) in place into members[]. */
size_t client_split_members(char *list, char **members)
{
    size_t n = 0;

    for (char *line = strtok_r(list, "\n", &list); line != NULL && n < MEMBERS_MAX;
         line = strtok_r(NULL, "\n", &list))
        members[n++] = line;
    return n;
}

msv_err client_join_members(char *const *members, size_t n, char **out)
{
    struct msv_buf b;
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err;

    msv_buf_init(&b, MEMBERS_MAX * (MSV_HANDLE_MAX + 1) + 1);
    for (size_t i = 0; i < n; i++) {
        msv_buf_put(&b, members[i], strlen(members[i]));
        msv_buf_put_u8(&b, '\n');
    }
    msv_buf_put_u8(&b, 0);
    err = msv_buf_finish(&b, &bytes, &len);
    if (err == MSV_OK)
        *out = (char *)bytes;
    return err;
}

void msv_client_group_conversation(const uint8_t group_id[16], char out[40])
{
    char hex[33];

    if (msv_hex_encode(group_id, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(out, 40, "group:%s", hex);
}

msv_err msv_client_group_find(struct msv_client *c, const char *which, struct msv_group_rec *g)
{
    uint8_t id[16];
    size_t len = 0;

    if (strncmp(which, "group:", 6) == 0) {
        if (msv_hex_decode(which + 6, id, sizeof(id), &len) != MSV_OK || len != 16)
            return MSV_ERR_NOT_FOUND;
        return msv_client_db_group_get(c->db, id, NULL, g);
    }
    return msv_client_db_group_get(c->db, NULL, which, g);
}

msv_err msv_client_group_accept(struct msv_client *c, const char *which)
{
    struct msv_group_rec g = {0};
    msv_err err =
        strncmp(which, "group:", 6) == 0 ? msv_client_group_find(c, which, &g) : MSV_ERR_NOT_FOUND;

    if (err == MSV_OK)
        err = msv_client_db_group_accept(c->db, g.group_id);
    msv_group_clear(&g);
    return err;
}

/* A group this account is in, by name or id; an invitation is MSV_ERR_NOT_FOUND until accepted. */
static msv_err joined_group(struct msv_client *c, const char *which, struct msv_group_rec *g)
{
    msv_err err = msv_client_group_find(c, which, g);

    if (err == MSV_OK && !g->accepted) {
        msv_group_clear(g);
        err = MSV_ERR_NOT_FOUND;
    }
    return err;
}

/* MSV_OK if no accepted group is named name, MSV_ERR_EXISTS if one is: names stay unambiguous. */
static msv_err name_is_free(struct msv_client *c, const char *name)
{
    struct msv_group_rec g = {0};
    msv_err err = msv_client_db_group_get(c->db, NULL, name, &g);

    msv_group_clear(&g);
    if (err == MSV_OK)
        return MSV_ERR_EXISTS;
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/* Sends a group change with the new name and members to the old and new members. */
static msv_err announce_group(struct msv_client *c, const uint8_t group_id[16], const char *name,
                              char **old, size_t n_old, char **members, size_t n)
{
    const char *targets[2 * MEMBERS_MAX];
    struct msv_payload p = {.kind = MSV_KIND_GROUP_CHANGE,
                            .has_group = true,
                            .group_name = (char *)name,
                            .participants = members,
                            .participant_count = n};
    char conversation[40], text[256];
    uint8_t id[16];
    size_t t = 0;

    memcpy(p.group_id, group_id, 16);
    /* removed members hear of it too: they are out from now on */
    for (size_t i = 0; i < n_old; i++)
        targets[t++] = old[i];
    for (size_t i = 0; i < n; i++)
        targets[t++] = members[i];
    msv_client_group_conversation(group_id, conversation);
    snprintf(text, sizeof(text), "group \"%s\": %zu members", name, n);
    return client_send_payload(c, targets, t, &p, text, conversation, NULL, 0, NULL, id);
}

msv_err msv_client_group_create(struct msv_client *c, const char *name, const char *const *members,
                                size_t n, uint8_t group_id[16])
{
    char *all[MEMBERS_MAX], *list = NULL;
    size_t k = 0;
    msv_err err;

    if (n == 0 || n >= MEMBERS_MAX || name == NULL || name[0] == '\0')
        return MSV_ERR_INVALID;
    all[k++] = c->handle;
    for (size_t i = 0; i < n; i++) {
        size_t j;

        for (j = 0; j < k && strcmp(all[j], members[i]) != 0; j++)
            ;
        if (j == k)
            all[k++] = (char *)members[i];
    }
    msv_random_bytes(group_id, 16);
    err = name_is_free(c, name);
    if (err == MSV_OK)
        err = client_join_members(all, k, &list);
    if (err == MSV_OK)
        err = msv_client_db_group_put(c->db, group_id, name, list, 1, msv_wall_ms());
    free(list);
    return err == MSV_OK ? announce_group(c, group_id, name, NULL, 0, all, k) : err;
}

msv_err msv_client_group_change(struct msv_client *c, const char *name, const char *new_name,
                                const char *const *add, size_t n_add, const char *const *remove,
                                size_t n_remove)
{
    struct msv_group_rec g;
    char *old[MEMBERS_MAX], *now[MEMBERS_MAX], *list = NULL, *old_list = NULL;
    size_t n_old, n_now = 0;
    msv_err err = joined_group(c, name, &g);

    if (err == MSV_OK && new_name != NULL && strcmp(new_name, g.name) != 0 &&
        (err = name_is_free(c, new_name)) != MSV_OK)
        msv_group_clear(&g);
    if (err != MSV_OK)
        return err;
    old_list = strdup(g.members);
    err = old_list ? MSV_OK : MSV_ERR_NOMEM;
    n_old = err == MSV_OK ? client_split_members(g.members, old) : 0;
    for (size_t i = 0; i < n_old; i++) {
        int gone = 0;

        for (size_t r = 0; r < n_remove; r++)
            gone |= strcmp(old[i], remove[r]) == 0;
        if (!gone)
            now[n_now++] = old[i];
    }
    for (size_t a = 0; a < n_add && n_now < MEMBERS_MAX; a++) {
        size_t j;

        for (j = 0; j < n_now && strcmp(now[j], add[a]) != 0; j++)
            ;
        if (j == n_now)
            now[n_now++] = (char *)add[a];
    }
    if (err == MSV_OK)
        err = client_join_members(now, n_now, &list);
    if (err == MSV_OK)
        err = msv_client_db_group_put(c->db, g.group_id, new_name ? new_name : g.name, list, 1,
                                      msv_wall_ms());
    if (err == MSV_OK)
        err = announce_group(c, g.group_id, new_name ? new_name : g.name, old, n_old, now, n_now);
    free(list);
    free(old_list);
    msv_group_clear(&g);
    return err;
}

msv_err client_group_send(struct msv_client *c, const char *name, struct msv_payload *p,
                          const struct msv_file *files, size_t n_files,
                          void (*progress)(uint64_t done, uint64_t total), uint8_t message_id[16])
{
    struct msv_group_rec g;
    struct msv_mention mentions[MSV_MENTIONS_MAX];
    char *members[MEMBERS_MAX], conversation[40];
    size_t n;
    msv_err err = joined_group(c, name, &g);

    if (err != MSV_OK)
        return err;
    n = client_split_members(g.members, members);
    p->has_group = true;
    memcpy(p->group_id, g.group_id, 16);
    p->group_name = g.name;
    p->participants = members;
    p->participant_count = n;
    msv_client_group_conversation(g.group_id, conversation);
    p->mentions = mentions;
    p->mention_count = client_find_mentions(c, p->text, members, n, mentions);
    err = client_send_payload(c, (const char *const *)members, n, p, p->text, conversation, files,
                              n_files, progress, message_id);
    /* kept with the message, queued or sent */
    if (p->mention_count > 0 && msv_client_db_message_known(c->db, p->message_id) == MSV_OK) {
        msv_err kept = client_keep_mentions(c, p->message_id, conversation, p);

        err = err == MSV_OK ? kept : err;
    }
    msv_group_clear(&g);
    return err;
}

msv_err msv_client_group_send(struct msv_client *c, const char *name, const char *text,
                              const struct msv_file *files, size_t n_files,
                              void (*progress)(uint64_t done, uint64_t total),
                              uint8_t message_id[16])
{
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text};

    return client_group_send(c, name, &p, files, n_files, progress, message_id);
}
