/*
 * Provisioning addresses: where an account's device leaves the one sealed
 * message that makes a new device, which showed the address in its QR code,
 * a device of the account (docs/wire.md, "Linking by QR code").
 *
 * An address is 16 random bytes held in memory for the connection that
 * opened it (in a cluster also in its Redis, so that a device connected to
 * another node links it: handlers.c): one per connection, MSV_PROVISION_PER_ADDRESS per client
 * address, MSV_PROVISION_MAX in all, gone after MSV_PROVISION_TTL_MS or when
 * its connection closes; it takes one LinkDevice and one message of at most
 * MSV_PROVISION_MESSAGE_MAX bytes.
 */
#ifndef MSV_SERVER_PROVISION_H
#define MSV_SERVER_PROVISION_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

#define MSV_PROVISION_ADDRESS_LEN 16
#define MSV_PROVISION_PER_ADDRESS 4
#define MSV_PROVISION_MAX 256
#define MSV_PROVISION_TTL_MS (10 * 60 * 1000)
#define MSV_PROVISION_MESSAGE_MAX (64 * 1024)

struct msv_provision_slot {
    uint8_t address[MSV_PROVISION_ADDRESS_LEN];
    const void *owner; /* the connection; NULL: the slot is free */
    uint64_t peer_key;
    int64_t expires_ms;
    uint32_t suite;
    uint8_t *identity; /* the new device's public identity */
    size_t identity_len;
    int linked; /* a LinkDevice took it */
    uint8_t *message;
    size_t message_len;
};

struct msv_provisions {
    pthread_mutex_t lock;
    _Atomic uint64_t *expired; /* counts the addresses that expired unused (a metric) */
    struct msv_provision_slot slots[MSV_PROVISION_MAX];
};

/* expired (borrowed) counts the addresses that expire before their message is taken. */
void msv_provisions_init(struct msv_provisions *p, _Atomic uint64_t *expired);
/* Frees every slot's bytes and the lock. */
void msv_provisions_clear(struct msv_provisions *p);

/*
 * Opens an address for owner (from peer_key's client address) holding the
 * new device (identity: its NewDevice, packed, with its first prekeys; copied). MSV_ERR_EXISTS:
 * owner has one already; MSV_ERR_AGAIN: peer_key has MSV_PROVISION_PER_ADDRESS, or all are taken.
 */
MSV_MUST_CHECK msv_err msv_provision_open(struct msv_provisions *p, const void *owner,
                                          uint64_t peer_key, int64_t now, uint32_t suite,
                                          const uint8_t *identity, size_t identity_len,
                                          uint8_t address[MSV_PROVISION_ADDRESS_LEN]);

/*
 * The device waiting at address, for a LinkDevice: a copy of what it opened
 * with (*identity: the packed NewDevice; caller frees). MSV_ERR_NOT_FOUND: no such address (or
 * expired); MSV_ERR_EXISTS: an earlier LinkDevice took it.
 */
MSV_MUST_CHECK msv_err msv_provision_link(struct msv_provisions *p, const uint8_t *address,
                                          size_t address_len, int64_t now, uint32_t *suite,
                                          uint8_t **identity, size_t *identity_len);

/*
 * Leaves message (copied) at a linked address. MSV_ERR_NOT_FOUND: no such
 * address, or not linked; MSV_ERR_EXISTS: it has its message;
 * MSV_ERR_TOO_BIG: over MSV_PROVISION_MESSAGE_MAX.
 */
MSV_MUST_CHECK msv_err msv_provision_put(struct msv_provisions *p, const uint8_t *address,
                                         size_t address_len, int64_t now, const uint8_t *message,
                                         size_t len);

/*
 * owner's message, which closes its address (*message: caller frees).
 * MSV_ERR_AGAIN: none yet; MSV_ERR_NOT_FOUND: owner has no address (or it
 * expired).
 */
MSV_MUST_CHECK msv_err msv_provision_take(struct msv_provisions *p, const void *owner, int64_t now,
                                          uint8_t **message, size_t *len);

/* owner's address (MSV_ERR_NOT_FOUND: none, or expired). */
MSV_MUST_CHECK msv_err msv_provision_address(struct msv_provisions *p, const void *owner,
                                             int64_t now,
                                             uint8_t address[MSV_PROVISION_ADDRESS_LEN]);

/* The connection owner closed: its address goes. */
void msv_provision_forget(struct msv_provisions *p, const void *owner);

#endif
