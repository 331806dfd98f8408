/* Provisioning addresses for linking a device by QR code (provision.h). */
#include "server/provision.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static void slot_clear(struct msv_provision_slot *slot)
{
    free(slot->identity);
    free(slot->message);
    memset(slot, 0, sizeof(*slot));
}

/* Frees the slots whose time is up (lock held); each counts as expired. */
static void sweep(struct msv_provisions *p, int64_t now)
{
    for (size_t i = 0; i < MSV_PROVISION_MAX; i++) {
        if (p->slots[i].owner != NULL && p->slots[i].expires_ms <= now) {
            slot_clear(&p->slots[i]);
            atomic_fetch_add(p->expired, 1);
        }
    }
}

/* The live slot with address (lock held), or NULL. */
static struct msv_provision_slot *by_address(struct msv_provisions *p, const uint8_t *address,
                                             size_t len)
{
    if (len != MSV_PROVISION_ADDRESS_LEN)
        return NULL;
    for (size_t i = 0; i < MSV_PROVISION_MAX; i++) {
        if (p->slots[i].owner != NULL &&
            sodium_memcmp(p->slots[i].address, address, MSV_PROVISION_ADDRESS_LEN) == 0)
            return &p->slots[i];
    }
    return NULL;
}

static struct msv_provision_slot *by_owner(struct msv_provisions *p, const void *owner)
{
    for (size_t i = 0; i < MSV_PROVISION_MAX; i++) {
        if (p->slots[i].owner == owner)
            return &p->slots[i];
    }
    return NULL;
}

void msv_provisions_init(struct msv_provisions *p, _Atomic uint64_t *expired)
{
    memset(p->slots, 0, sizeof(p->slots));
    p->expired = expired;
    pthread_mutex_init(&p->lock, NULL);
}

void msv_provisions_clear(struct msv_provisions *p)
{
    for (size_t i = 0; i < MSV_PROVISION_MAX; i++)
        slot_clear(&p->slots[i]);
    pthread_mutex_destroy(&p->lock);
}

/* Where a new address may go (lock held): MSV_OK with *free_slot, or why not. */
static msv_err place_for(struct msv_provisions *p, const void *owner, uint64_t peer_key,
                         struct msv_provision_slot **free_slot)
{
    size_t from_peer = 0;

    *free_slot = NULL;
    for (size_t i = 0; i < MSV_PROVISION_MAX; i++) {
        struct msv_provision_slot *slot = &p->slots[i];

        if (slot->owner == owner)
            return MSV_ERR_EXISTS;
        if (slot->owner == NULL && *free_slot == NULL)
            *free_slot = slot;
        from_peer += slot->owner != NULL && slot->peer_key == peer_key;
    }
    return from_peer >= MSV_PROVISION_PER_ADDRESS || *free_slot == NULL ? MSV_ERR_AGAIN : MSV_OK;
}

msv_err msv_provision_open(struct msv_provisions *p, const void *owner, uint64_t peer_key,
                           int64_t now, uint32_t suite, const uint8_t *identity,
                           size_t identity_len, uint8_t address[MSV_PROVISION_ADDRESS_LEN])
{
    struct msv_provision_slot *slot = NULL;
    uint8_t *copy = malloc(identity_len ? identity_len : 1);
    msv_err err;

    if (copy == NULL)
        return MSV_ERR_NOMEM;
    memcpy(copy, identity, identity_len);
    pthread_mutex_lock(&p->lock);
    sweep(p, now);
    err = place_for(p, owner, peer_key, &slot);
    if (err == MSV_OK) {
        randombytes_buf(slot->address, MSV_PROVISION_ADDRESS_LEN);
        slot->owner = owner;
        slot->peer_key = peer_key;
        slot->expires_ms = now + MSV_PROVISION_TTL_MS;
        slot->suite = suite;
        slot->identity = copy;
        slot->identity_len = identity_len;
        memcpy(address, slot->address, MSV_PROVISION_ADDRESS_LEN);
        copy = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    free(copy);
    return err;
}

msv_err msv_provision_link(struct msv_provisions *p, const uint8_t *address, size_t address_len,
                           int64_t now, uint32_t *suite, uint8_t **identity, size_t *identity_len)
{
    struct msv_provision_slot *slot;
    msv_err err = MSV_ERR_NOT_FOUND;

    pthread_mutex_lock(&p->lock);
    sweep(p, now);
    slot = by_address(p, address, address_len);
    if (slot != NULL && slot->linked)
        err = MSV_ERR_EXISTS;
    else if (slot != NULL && (*identity = malloc(slot->identity_len + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    else if (slot != NULL) {
        memcpy(*identity, slot->identity, slot->identity_len);
        *identity_len = slot->identity_len;
        *suite = slot->suite;
        slot->linked = 1;
        err = MSV_OK;
    }
    pthread_mutex_unlock(&p->lock);
    return err;
}

msv_err msv_provision_put(struct msv_provisions *p, const uint8_t *address, size_t address_len,
                          int64_t now, const uint8_t *message, size_t len)
{
    struct msv_provision_slot *slot;
    msv_err err = MSV_ERR_NOT_FOUND;

    if (len > MSV_PROVISION_MESSAGE_MAX)
        return MSV_ERR_TOO_BIG;
    pthread_mutex_lock(&p->lock);
    sweep(p, now);
    slot = by_address(p, address, address_len);
    if (slot != NULL && !slot->linked)
        slot = NULL;
    if (slot != NULL && slot->message != NULL)
        err = MSV_ERR_EXISTS;
    else if (slot != NULL && (slot->message = malloc(len ? len : 1)) == NULL)
        err = MSV_ERR_NOMEM;
    else if (slot != NULL) {
        memcpy(slot->message, message, len);
        slot->message_len = len;
        err = MSV_OK;
    }
    pthread_mutex_unlock(&p->lock);
    return err;
}

msv_err msv_provision_take(struct msv_provisions *p, const void *owner, int64_t now,
                           uint8_t **message, size_t *len)
{
    struct msv_provision_slot *slot;
    msv_err err = MSV_ERR_NOT_FOUND;

    pthread_mutex_lock(&p->lock);
    sweep(p, now);
    slot = by_owner(p, owner);
    if (slot != NULL && slot->message == NULL)
        err = MSV_ERR_AGAIN;
    else if (slot != NULL) {
        *message = slot->message;
        *len = slot->message_len;
        slot->message = NULL;
        slot_clear(slot);
        err = MSV_OK;
    }
    pthread_mutex_unlock(&p->lock);
    return err;
}

void msv_provision_forget(struct msv_provisions *p, const void *owner)
{
    struct msv_provision_slot *slot;

    pthread_mutex_lock(&p->lock);
    slot = by_owner(p, owner);
    if (slot != NULL)
        slot_clear(slot);
    pthread_mutex_unlock(&p->lock);
}

msv_err msv_provision_address(struct msv_provisions *p, const void *owner, int64_t now,
                              uint8_t address[MSV_PROVISION_ADDRESS_LEN])
{
    struct msv_provision_slot *slot;

    pthread_mutex_lock(&p->lock);
    sweep(p, now);
    slot = by_owner(p, owner);
    if (slot != NULL)
        memcpy(address, slot->address, MSV_PROVISION_ADDRESS_LEN);
    pthread_mutex_unlock(&p->lock);
    return slot != NULL ? MSV_OK : MSV_ERR_NOT_FOUND;
}
