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

/*
 * Takes cost tokens from the bucket name/key (rate tokens a second, at most burst) at now_ms.
 * A negative cost gives tokens back (always TAKEN unless Redis is unavailable).
 */
enum msv_shared_take msv_shared_limits_take(struct msv_shared_limits *sl, const char *name,
                                            uint64_t key, double rate, double burst, double cost,
                                            int64_t now_ms);

#endif
