/*
 * State synced between the devices of one account (docs/missive.md, "Sync
 * between your devices"): contacts and every setting whose key begins with
 * "sync:". The client database records each change (store/client_db.h); this
 * file sends what is pending to the account's other devices in SYNC payloads
 * of at most MSV_SYNC_ENTRIES_MAX entries, and applies theirs: only from one of
 * this account's own handles, and only where newer than what is held, so a replayed
 * or older change undoes nothing and an applied change is not sent back.
 *
 * The account's profile key is synced too. A block newer than it (made here
 * or on another device) rotates it: a new key, its delivery token registered,
 * and the key handed to every contact, group member and conversation partner
 * who is not blocked, so that the blocked person's token stops working.
 */
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "client/internal.h"
#include "client/sessions.h"
#include "missive/payload.h"
#include "store/client_db.h"

/* Enough rounds for a large snapshot; a writer that keeps changing keys cannot hold a flush. */
#define SYNC_ROUNDS_MAX 1024

#define BLOCK_PREFIX "sync:block:"
#define PEERS_MAX 4096 /* at most this many people are handed a new profile key */

/* Whether the synced state holds a block newer than the profile key. */
static msv_err block_after_key(struct msv_client *c, int *due)
{
    struct msv_sync_entry *e = NULL;
    uint64_t key_stamp = 0, block_stamp = 0;
    size_t n = 0;
    msv_err err = msv_client_db_sync_list(c->db, 0, SIZE_MAX, &e, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (strcmp(e[i].key, MSV_PROFILE_KEY_SETTING) == 0)
            key_stamp = e[i].stamp;
        else if (strncmp(e[i].key, BLOCK_PREFIX, strlen(BLOCK_PREFIX)) == 0 && !e[i].deleted &&
                 e[i].stamp > block_stamp)
            block_stamp = e[i].stamp;
    }
    msv_sync_entries_free(e, n);
    *due = block_stamp > key_stamp;
    return err;
}

static int is_blocked(struct msv_client *c, const char *handle)
{
    char key[sizeof(BLOCK_PREFIX) + MSV_HANDLE_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    int blocked;

    snprintf(key, sizeof(key), "%s%s", BLOCK_PREFIX, handle);
    blocked = msv_client_db_get(c->db, key, &v, &len) == MSV_OK;
    free(v);
    return blocked;
}

struct peers {
    char *h[PEERS_MAX];
    size_t n;
};

/* Adds handle once, unless it is this account's or blocked, or the list is full. */
static msv_err add_peer(struct msv_client *c, struct peers *p, const char *handle)
{
    if (p->n == PEERS_MAX || strcmp(handle, c->handle) == 0 || strncmp(handle, "group:", 6) == 0 ||
        is_blocked(c, handle))
        return MSV_OK;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->h[i], handle) == 0)
            return MSV_OK;
    p->h[p->n] = strdup(handle);
    return p->h[p->n++] != NULL ? MSV_OK : MSV_ERR_NOMEM;
}

/* Everyone this account writes to: contacts, members of its groups, conversation partners. */
static msv_err gather_peers(struct msv_client *c, struct peers *p)
{
    struct msv_contact *contacts = NULL;
    struct msv_group_rec *groups = NULL;
    struct msv_conversation_rec *convs = NULL;
    size_t n_contacts = 0, n_groups = 0, n_convs = 0;
    msv_err err = msv_client_db_contacts(c->db, NULL, &contacts, &n_contacts);

    if (err == MSV_OK)
        err = msv_client_db_groups(c->db, &groups, &n_groups);
    if (err == MSV_OK)
        err = msv_client_db_conversations(c->db, &convs, &n_convs);
    for (size_t i = 0; err == MSV_OK && i < n_contacts; i++)
        err = add_peer(c, p, contacts[i].handle);
    for (size_t i = 0; err == MSV_OK && i < n_groups; i++) {
        char **members = NULL;
        size_t k = 0;

        err = client_members_of(groups[i].members, &members, &k);
        for (size_t m = 0; err == MSV_OK && m < k; m++)
            err = add_peer(c, p, members[m]);
        free(members);
    }
    for (size_t i = 0; err == MSV_OK && i < n_convs; i++)
        err = add_peer(c, p, convs[i].conversation);
    msv_contacts_free(contacts, n_contacts);
    msv_groups_free(groups, n_groups);
    msv_conversations_free(convs, n_convs);
    return err;
}

/*
 * A block newer than the profile key: a new key, and it to everyone but the
 * blocked, each in a payload of their own (so nobody learns who else got it).
 * One that cannot be reached now gets it from the outbox, or with the next
 * message (every payload carries the key).
 */
static msv_err rotate_for_block(struct msv_client *c)
{
    struct peers *p;
    struct msv_profile *profile = NULL;
    int due = 0;
    msv_err err = block_after_key(c, &due);

    if (err != MSV_OK || !due || !(msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return err;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return MSV_ERR_NOMEM;
    /* the profile goes again under the new key (NULL: none, or not to be had now) */
    if (client_profile_before_rotation(c, &profile) != MSV_OK)
        profile = NULL;
    err = msv_sessions_rotate_profile_key(c);
    if ((err == MSV_OK || err == MSV_ERR_IO) && profile != NULL &&
        client_profile_after_rotation(c, profile) == MSV_ERR_NOMEM)
        err = MSV_ERR_NOMEM;
    msv_profile_free(profile);
    if (err == MSV_OK || err == MSV_ERR_IO) /* registered at the next connection otherwise */
        err = gather_peers(c, p);
    for (size_t i = 0; err == MSV_OK && i < p->n; i++) {
        struct msv_payload key = {.kind = MSV_KIND_PROFILE_KEY};
        const char *to = p->h[i];
        uint8_t id[MSV_ID_LEN];

        if (client_send_payload(c, &to, 1, &key, NULL, NULL, NULL, 0, NULL, id) == MSV_ERR_NOMEM)
            err = MSV_ERR_NOMEM;
    }
    for (size_t i = 0; i < p->n; i++)
        free(p->h[i]);
    free(p);
    return err;
}

/* A SYNC payload stays well below the relay's smallest envelope limit (16 KiB by default). */
#define SYNC_BATCH_BYTES 8000
#define SYNC_ENTRY_OVERHEAD 24

/* Sends one batch of pending entries; *n receives how many were pending. */
static msv_err flush_batch(struct msv_client *c, size_t *n, size_t *sent)
{
    struct msv_sync_entry *e = NULL, valid[MSV_SYNC_ENTRIES_MAX];
    struct msv_payload p = {.kind = MSV_KIND_SYNC};
    const char *self = c->handle;
    uint8_t id[MSV_ID_LEN];
    size_t k = 0;
    msv_err err;

    *n = 0;
    err = msv_client_db_sync_list(c->db, 1, MSV_SYNC_ENTRIES_MAX, &e, n);

    for (size_t i = 0, bytes = 0; err == MSV_OK && i < *n; i++) {
        size_t size = strlen(e[i].key) + e[i].value_len + SYNC_ENTRY_OVERHEAD;

        if (!msv_sync_entry_is_valid(&e[i])) {
            /* a contact name no payload can carry (a line break, too long): kept here only */
            err = msv_client_db_sync_sent(c->db, &e[i]);
            continue;
        }
        if (bytes + size > SYNC_BATCH_BYTES)
            break; /* the rest goes in the next payload */
        valid[k++] = e[i];
        bytes += size;
    }
    if (err == MSV_OK && k > 0) {
        p.sync = valid;
        p.sync_count = k;
        err = client_send_payload(c, &self, 1, &p, NULL, NULL, NULL, 0, NULL, id);
        /* a relay that cannot be reached leaves it in the outbox, which sends it later */
        if (err == MSV_ERR_IO)
            err = MSV_OK;
        for (size_t i = 0; err == MSV_OK && i < k; i++)
            err = msv_client_db_sync_sent(c->db, &valid[i]);
        if (err == MSV_OK)
            *sent += k;
    }
    msv_sync_entries_free(e, *n);
    return err;
}

/* Whether the directory listed a device of this account other than this one. */
static int other_device_known(struct msv_client *c)
{
    struct msv_known_device *d = NULL;
    size_t n = 0;
    int other = 0;

    if (msv_client_db_known_devices(c->db, c->handle, &d, &n) != MSV_OK)
        return 1; /* unsure: try to send */
    for (size_t i = 0; i < n; i++)
        other |= d[i].device_id != c->device_id;
    msv_known_devices_free(d, n);
    return other;
}

msv_err msv_client_sync_flush(struct msv_client *c, size_t *sent)
{
    msv_err err = client_sync_flush(c, sent, 0);
    struct msv_refusal why = c->why;

    /* and the copies of groups owed since an approval here (a stop, or a failure, left them),
     * only on a connection the command made: no wait for a server out of reach. What fails
     * stays owed, for the next command */
    if (err == MSV_OK && c->device_id != 0 && c->conn != NULL)
        (void)client_groups_copy_due(c);
    client_outbox_later(c); /* what a connection made under a lock held back */
    c->why = why;
    return err;
}

msv_err client_sync_flush(struct msv_client *c, size_t *sent, int anyway)
{
    size_t n = 0, total = 0;
    msv_err err = MSV_OK;

    if (c->device_id == 0) /* not registered yet: nothing to send to */
        return MSV_OK;
    err = rotate_for_block(c);
    /* changes wait (pending) until this device knows another of the account's: a lone device
     * does not connect for nobody, and a device approved later gets everything anyway */
    if (err == MSV_OK && !anyway && !other_device_known(c)) {
        if (sent != NULL)
            *sent = 0;
        return MSV_OK;
    }
    for (int round = 0; err == MSV_OK && round < SYNC_ROUNDS_MAX; round++) {
        err = flush_batch(c, &n, &total);
        if (n == 0)
            break;
    }
    if (sent != NULL)
        *sent = total;
    return err;
}

msv_err client_take_sync(struct msv_client *c, const char *sender, uint64_t device,
                         const struct msv_payload *p,
                         void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    size_t applied = 0;
    msv_err err = MSV_OK;

    /* only the account's own devices share its state: anyone else's changes nothing */
    if (!client_is_own_handle(c, sender))
        return MSV_OK;
    for (size_t i = 0; err == MSV_OK && i < p->sync_count; i++) {
        int newer = 0;

        err = msv_client_db_sync_apply(c->db, &p->sync[i], &newer);
        applied += newer != 0;
        /* the account's new profile key: this device's delivery token follows */
        if (err == MSV_OK && newer && strcmp(p->sync[i].key, MSV_PROFILE_KEY_SETTING) == 0 &&
            msv_sessions_profile_key_changed(c) == MSV_ERR_NOMEM)
            err = MSV_ERR_NOMEM;
    }
    /* a block made on another device that did not rotate the key (yet) */
    if (err == MSV_OK && applied > 0)
        err = rotate_for_block(c);
    if (applied > 0 && on_message != NULL) {
        char notice[160];
        struct msv_incoming in = {.kind = MSV_INCOMING_SYNC, .notice = notice, .from = sender};

        snprintf(notice, sizeof(notice), "%zu change%s synced from device %llu of this account",
                 applied, applied == 1 ? "" : "s", (unsigned long long)device);
        on_message(ctx, &in);
    }
    return err;
}
