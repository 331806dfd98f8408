/*
 * State synced between the devices of one account (docs/missive.md, "Sync
 * between your devices"): contacts and every setting whose key begins with
 * "sync:". The client database records each change (store/client_db.h); this
 * file sends what is pending to the account's other devices in SYNC payloads
 * of at most MSV_SYNC_ENTRIES_MAX entries, and applies theirs: only from this
 * account's own handle, and only where newer than what is held, so a replayed
 * or older change undoes nothing and an applied change is not sent back.
 */
#include <stdio.h>
#include <string.h>

#include "client/internal.h"
#include "missive/payload.h"
#include "store/client_db.h"

/* Enough rounds for a large snapshot; a writer that keeps changing keys cannot hold a flush. */
#define SYNC_ROUNDS_MAX 1024

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

    for (size_t i = 0; err == MSV_OK && i < *n; i++) {
        if (msv_sync_entry_is_valid(&e[i]))
            valid[k++] = e[i];
        else /* a contact name no payload can carry (a line break, too long): kept here only */
            err = msv_client_db_sync_sent(c->db, &e[i]);
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

msv_err msv_client_sync_flush(struct msv_client *c, size_t *sent)
{
    size_t n = 0, total = 0;
    msv_err err = MSV_OK;

    if (c->device_id == 0) /* not registered yet: nothing to send to */
        return MSV_OK;
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
    if (strcmp(sender, c->handle) != 0)
        return MSV_OK;
    for (size_t i = 0; err == MSV_OK && i < p->sync_count; i++) {
        int newer = 0;

        err = msv_client_db_sync_apply(c->db, &p->sync[i], &newer);
        applied += newer != 0;
    }
    if (applied > 0 && on_message != NULL) {
        char notice[160];
        struct msv_incoming in = {.kind = MSV_INCOMING_SYNC, .notice = notice, .from = sender};

        snprintf(notice, sizeof(notice), "%zu change%s synced from device %llu of this account",
                 applied, applied == 1 ? "" : "s", (unsigned long long)device);
        on_message(ctx, &in);
    }
    return err;
}
