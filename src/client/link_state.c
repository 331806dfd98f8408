/*
 * The account's state in a provisioning message (docs/crypto.md, "Linking"):
 * what a new device needs at once, history or not. The approving device puts
 * in every synced entry (contacts, blocks, "sync:" settings with the
 * conversations' mute, archive and pin, the profile key and pointer), its
 * verified marks and its groups with their states, up to a budget; the new
 * device checks each part and holds it as if synced from the approver.
 *
 * The message is sealed to the new device and signed by the approver, so the
 * server can neither read these nor add to them (a forged verified mark would
 * need the approver's key). What does not fit: synced entries follow by sync
 * as before; groups come with the history, and without one the link is
 * refused before any device is added.
 */
#include "client/link.h"
#include "client/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "missive/payload.h"

#define SETTINGS_MAX 8192
/* a setting's or group's framing in the packed Provision, above its fields */
#define PART_OVERHEAD 16

/* ---- the approving device ---------------------------------------------------------------- */

static msv_err add_setting(Msv__Wire__Provision *p, const char *key, const uint8_t *value,
                           size_t len, int deleted, uint64_t stamp, size_t *budget)
{
    Msv__Wire__ProvisionSetting *s;
    size_t size = strlen(key) + len + PART_OVERHEAD;

    if (size > *budget)
        return MSV_ERR_TOO_BIG;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return MSV_ERR_NOMEM;
    msv__wire__provision_setting__init(s);
    p->settings[p->n_settings++] = s;
    s->key = strdup(key);
    s->value.data = malloc(len ? len : 1);
    if (s->key == NULL || s->value.data == NULL)
        return MSV_ERR_NOMEM;
    memcpy(s->value.data, value, len);
    s->value.len = len;
    s->deleted = deleted != 0;
    s->stamp = stamp;
    *budget -= size;
    return MSV_OK;
}

/* Every synced entry, then the verified marks, while they fit (*left: how many did not). */
static msv_err gather_settings(struct msv_client *c, Msv__Wire__Provision *p, size_t *budget,
                               size_t *left)
{
    struct msv_sync_entry *e = NULL;
    struct msv_setting *v = NULL;
    size_t n_e = 0, n_v = 0;
    msv_err err = msv_client_db_sync_list(c->db, 0, SETTINGS_MAX, &e, &n_e);

    if (err == MSV_OK)
        err = msv_client_db_settings(c->db, MSV_VERIFIED_PREFIX, SETTINGS_MAX - n_e, &v, &n_v);
    if (err == MSV_OK && (p->settings = calloc(n_e + n_v + 1, sizeof(*p->settings))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n_e; i++) {
        if (!msv_sync_entry_is_valid(&e[i]))
            continue; /* kept on this device only, as sync does */
        err =
            add_setting(p, e[i].key, e[i].value, e[i].value_len, e[i].deleted, e[i].stamp, budget);
        if (err == MSV_ERR_TOO_BIG) {
            (*left)++;
            err = MSV_OK;
        }
    }
    for (size_t i = 0; err == MSV_OK && i < n_v; i++) {
        err = add_setting(p, v[i].key, v[i].value, v[i].len, 0, 0, budget);
        if (err == MSV_ERR_TOO_BIG) {
            (*left)++;
            err = MSV_OK;
        }
    }
    msv_sync_entries_free(e, n_e);
    msv_settings_free(v, n_v);
    return err;
}

static msv_err add_group(struct msv_client *c, Msv__Wire__Provision *p,
                         const struct msv_group_rec *g, size_t *budget)
{
    Msv__Wire__ProvisionGroup *pg = NULL;
    uint8_t *state = NULL, *prev = NULL;
    size_t state_len = 0, prev_len = 0, size;
    int signed_state = 0;
    msv_err err = client_group_export(c, g, &state, &state_len, &prev, &prev_len, &signed_state);

    if (err != MSV_OK)
        return err;
    size = 16 + state_len + prev_len + PART_OVERHEAD;
    if (size > *budget)
        err = MSV_ERR_TOO_BIG;
    else if ((pg = calloc(1, sizeof(*pg))) == NULL)
        err = MSV_ERR_NOMEM;
    else {
        msv__wire__provision_group__init(pg);
        if ((pg->group_id.data = malloc(16)) == NULL) {
            free(pg);
            err = MSV_ERR_NOMEM;
        }
    }
    if (err == MSV_OK) {
        memcpy(pg->group_id.data, g->group_id, 16);
        pg->group_id.len = 16;
        pg->accepted = g->accepted != 0;
        pg->state = (ProtobufCBinaryData){state_len, state};
        pg->prev = (ProtobufCBinaryData){prev_len, prev};
        pg->signed_state = signed_state != 0;
        p->groups[p->n_groups++] = pg;
        *budget -= size;
        return MSV_OK;
    }
    free(state);
    free(prev);
    return err;
}

msv_err msv_link_state_gather(struct msv_client *c, size_t budget, Msv__Wire__Provision *p,
                              size_t *settings_left, size_t *groups_left)
{
    struct msv_group_rec *g = NULL;
    size_t n = 0;
    msv_err err;

    *settings_left = *groups_left = 0;
    err = gather_settings(c, p, &budget, settings_left);
    if (err == MSV_OK)
        err = msv_client_db_groups(c->db, &g, &n);
    if (err == MSV_OK && (p->groups = calloc(n + 1, sizeof(*p->groups))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = add_group(c, p, &g[i], &budget);
        if (err == MSV_ERR_TOO_BIG) {
            (*groups_left)++;
            err = MSV_OK;
        }
    }
    msv_groups_free(g, n);
    return err;
}

void msv_link_state_clear(Msv__Wire__Provision *p)
{
    for (size_t i = 0; p->settings != NULL && i < p->n_settings; i++) {
        free(p->settings[i]->key);
        free(p->settings[i]->value.data);
        free(p->settings[i]);
    }
    for (size_t i = 0; p->groups != NULL && i < p->n_groups; i++) {
        free(p->groups[i]->group_id.data);
        free(p->groups[i]->state.data);
        free(p->groups[i]->prev.data);
        free(p->groups[i]);
    }
    free(p->settings);
    free(p->groups);
    p->settings = NULL;
    p->groups = NULL;
    p->n_settings = p->n_groups = 0;
}

/* ---- the new device ---------------------------------------------------------------------- */

static struct msv_sync_entry entry_of(const Msv__Wire__ProvisionSetting *s)
{
    struct msv_sync_entry e = {s->key, s->value.data, s->value.len, s->deleted, s->stamp};

    return e;
}

/* A verified mark: "verified-set:HANDLE" and the 32-byte digest of the devices verified. */
static int verified_ok(const Msv__Wire__ProvisionSetting *s)
{
    size_t n = strlen(MSV_VERIFIED_PREFIX), len = strlen(s->key);

    return strncmp(s->key, MSV_VERIFIED_PREFIX, n) == 0 && len > n && len - n <= MSV_HANDLE_MAX &&
           s->value.len == 32 && !s->deleted;
}

int msv_link_state_is_valid(const Msv__Wire__Provision *p)
{
    if (p->n_settings > SETTINGS_MAX || p->n_groups > SETTINGS_MAX)
        return 0;
    for (size_t i = 0; i < p->n_settings; i++) {
        const Msv__Wire__ProvisionSetting *s = p->settings[i];
        struct msv_sync_entry e = entry_of(s);

        if (s->stamp > 0 ? !msv_sync_entry_is_valid(&e) : !verified_ok(s))
            return 0;
    }
    for (size_t i = 0; i < p->n_groups; i++)
        if (p->groups[i]->group_id.len != 16 || p->groups[i]->state.len == 0)
            return 0;
    return 1;
}

msv_err msv_link_state_apply(struct msv_client *c, const Msv__Wire__Provision *p)
{
    struct msv_payload sync = {.kind = MSV_KIND_SYNC};
    size_t n = 0;
    msv_err err = MSV_OK;

    if (p->n_settings > 0 && (sync.sync = calloc(p->n_settings, sizeof(*sync.sync))) == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < p->n_settings; i++) {
        const Msv__Wire__ProvisionSetting *s = p->settings[i];

        if (s->stamp > 0)
            sync.sync[n++] = entry_of(s);
        else
            err = msv_client_db_set(c->db, s->key, s->value.data, s->value.len);
    }
    sync.sync_count = n;
    /* as a sync from the approver: only what is newer than held, the profile key's token too */
    if (err == MSV_OK && n > 0)
        err = client_take_sync(c, c->handle, p->approver_id, &sync, NULL, NULL);
    for (size_t i = 0; err == MSV_OK && i < p->n_groups; i++) {
        const Msv__Wire__ProvisionGroup *g = p->groups[i];

        err = client_group_install(c, g->group_id.data, g->state.data, g->state.len, g->prev.data,
                                   g->prev.len, g->signed_state, g->accepted);
    }
    free(sync.sync);
    return err;
}
