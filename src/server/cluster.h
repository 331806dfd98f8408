/*
 * Scale-out: missived nodes that share one PostgreSQL database coordinate
 * through Redis, and through Redis alone for what is not stored.
 *
 *  - Presence: while a device is connected to a node, msv:presence:ID holds
 *    the node's name; msv:node:NAME holds the node's heartbeat (30 s expiry),
 *    so a presence naming a node without one is stale.
 *  - Wake-ups: a node that committed an envelope for a device connected
 *    elsewhere publishes on msv:wake:ID; the node holding it subscribes to
 *    that channel and pushes the device's queue from PostgreSQL. A wake-up
 *    carries no message: losing one delays a delivery, never loses it.
 *  - Directory changes: msv:directory carries the handle whose devices
 *    changed; every node drops what it cached of it.
 *  - Suspensions: missive-admin publishes an account's id on msv:suspended;
 *    every node closes that account's connections (the store permitting).
 *    A node that (re)subscribes checks all its connections against the store.
 *
 * Whatever Redis may have missed is made good when its connection comes
 * back: the cache is dropped whole and every connected device's queue is
 * read again. While Redis is unreachable, or silent (a probe the node
 * publishes to itself, msv:probe:NAME, not back within [cluster]
 * redis_timeout_ms: the connections are then dropped), the node reads its
 * devices' queues once a second instead of waiting for wake-ups.
 *  - Sweeps: a node that could not publish (or may have lost) a wake-up, a
 *    close order or a directory change, and every node that starts, publishes
 *    its name on msv:sweep once its probe comes back; every other node then
 *    reads its devices' queues, checks its connections against the store and
 *    drops its cache (at most once a second).
 *
 * A cluster runs its own thread and event loop; the functions below may be
 * called from any thread.
 */
#ifndef MSV_SERVER_CLUSTER_H
#define MSV_SERVER_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

struct msv_server;
struct msv_cluster;

/*
 * Starts the cluster thread for s: redis is HOST:PORT, node this node's
 * name. An unreachable Redis is not an error (the node retries every
 * second); a malformed address is.
 */
MSV_MUST_CHECK msv_err msv_cluster_start(struct msv_server *s, const char *redis, const char *node,
                                         struct msv_cluster **out, char *err, size_t err_len);
void msv_cluster_stop(struct msv_cluster *c);

/* A device's connection came to this node (order: its connection_order), or left it. */
void msv_cluster_online(struct msv_cluster *c, uint64_t device_id, uint64_t order);
void msv_cluster_offline(struct msv_cluster *c, uint64_t device_id);
/* A connection of device_id for requests alone opened (on) or closed on this node: while it
 * has some, the device's removal on another node reaches them (no presence is set). */
void msv_cluster_watch(struct msv_cluster *c, uint64_t device_id, int on);
/* Tells the node holding device_id to push its queue (close: to close its connection). */
void msv_cluster_wake(struct msv_cluster *c, uint64_t device_id, int close);
/* handle's devices changed: every node forgets what it cached of them. */
void msv_cluster_directory_changed(struct msv_cluster *c, const char *handle);

/*
 * For missive-admin, outside any node: tells every node of the cluster whose
 * Redis is redis (HOST:PORT) that account_id was suspended (msv:suspended);
 * *nodes is how many nodes heard it. MSV_ERR_IO if Redis cannot be reached.
 */
MSV_MUST_CHECK msv_err msv_cluster_publish_suspended(const char *redis, uint64_t account_id,
                                                     int *nodes);
/*
 * The same for an operator's disconnect of account_id (POST /admin/disconnect): published on
 * msv:suspended as "disconnect ACCOUNT_ID"; every node closes the account's connections.
 */
MSV_MUST_CHECK msv_err msv_cluster_publish_disconnect(const char *redis, uint64_t account_id,
                                                      int *nodes);

#endif
