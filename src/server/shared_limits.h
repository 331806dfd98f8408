/*
 * Limits that hold across a cluster's nodes: token buckets kept in the
 * cluster's Redis, so that N nodes give a handle, an account or a claimer the
 * allowance one node would, not N times it.
 *
 * A bucket is the hash msv:limit:NAME:KEY (KEY in hex) with fields t (tokens)
 * and u (when they were last counted, ms of the asking node's clock); one Lua
 * script refills it at the limit's rate, caps it at the burst and takes the
 * cost, atomically. The key expires once a full bucket would have refilled.
 *
 * The connection is synchronous and answers within a timeout: a Redis that
 * does not answer in time is left alone for a second, and the caller counts on
 * its own node's bucket meanwhile. Callable from any thread.
 */
#ifndef MSV_SERVER_SHARED_LIMITS_H
#define MSV_SERVER_SHARED_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

struct msv_shared_limits;

/* What a shared bucket answered. */
enum msv_shared_take {
    MSV_SHARED_TAKEN,
    MSV_SHARED_REFUSED,
    MSV_SHARED_UNAVAILABLE, /* Redis did not answer in time: use the node's bucket */
};

/*
 * Prepares buckets in the Redis at redis (HOST:PORT), each command answered within
 * timeout_ms. Connects on first use. Caller frees with msv_shared_limits_free.
 */
MSV_MUST_CHECK msv_err msv_shared_limits_new(const char *redis, unsigned timeout_ms,
                                             struct msv_shared_limits **out);
void msv_shared_limits_free(struct msv_shared_limits *sl);

/* One bucket: rate tokens a second, at most burst. */
struct msv_shared_bucket {
    const char *name; /* the limit's, in the Redis key */
    uint64_t key;
    double rate, burst;
};

/*
 * Takes cost tokens from bucket b at now_ms; a negative cost gives tokens back (always TAKEN
 * unless Redis is unavailable). With lease > 0, also takes lease tokens more for the caller to
 * spend locally, but only while the bucket stays at least half full after it, so that close to
 * the limit every take is counted in Redis; *leased (if not NULL) says what was taken more.
 */
enum msv_shared_take msv_shared_limits_take(struct msv_shared_limits *sl,
                                            const struct msv_shared_bucket *b, double cost,
                                            double lease, int64_t now_ms, double *leased);

/*
 * Short-lived values in the same Redis: put sets key to value (len bytes) for ttl_ms (only_new:
 * unless it is set, MSV_ERR_EXISTS then); get reads it (take: and deletes it, atomically) into
 * *value (caller frees), MSV_ERR_NOT_FOUND if unset, MSV_ERR_TOO_BIG over max bytes. Both answer
 * MSV_ERR_IO when Redis is not usable now.
 */
MSV_MUST_CHECK msv_err msv_shared_put(struct msv_shared_limits *sl, const char *key,
                                      const void *value, size_t len, int64_t ttl_ms, int only_new);
MSV_MUST_CHECK msv_err msv_shared_get(struct msv_shared_limits *sl, const char *key, int take,
                                      size_t max, uint8_t **value, size_t *len);

#endif
