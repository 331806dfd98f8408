#include "server/shared_limits.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "missive/util.h"

#define RETRY_MS 1000                   /* a silent Redis is asked again after this */
#define MAX_TTL_MS (2ll * 86400 * 1000) /* no bucket outlives two days unused */
#define KEY_PREFIX "msv:limit:"

/*
 * KEYS[1] the bucket; ARGV rate (tokens/s), burst, cost, now (ms), ttl (ms), lease. Returns 1 when
 * the cost was taken (a negative cost is a refund: always taken), 2 when the lease was taken with
 * it, 0 when there were too few tokens. A clock behind the bucket's does not refill it.
 */
static const char bucket_script[] =
    "local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) "
    "local now = tonumber(ARGV[4]) "
    "local b = redis.call('HMGET', KEYS[1], 't', 'u') "
    "local t, u = tonumber(b[1]) or burst, tonumber(b[2]) or now "
    "if now > u then t = t + (now - u) / 1000 * rate; u = now end "
    "if cost >= 0 and t > burst then t = burst end "
    "local ok = 0 "
    "if t >= cost then t = t - cost; ok = 1 end "
    "local lease = tonumber(ARGV[6]) "
    "if ok == 1 and lease > 0 and t - lease >= burst / 2 then t = t - lease; ok = 2 end "
    "redis.call('HSET', KEYS[1], 't', string.format('%.17g', t), 'u', string.format('%d', u)) "
    "redis.call('PEXPIRE', KEYS[1], ARGV[5]) "
    "return ok";

struct msv_shared_limits {
    pthread_mutex_t lock; /* guards everything below */
    char host[256];
    int port;
    struct timeval timeout;
    redisContext *ctx; /* NULL: not connected */
    char sha[41];      /* the script's, once loaded */
    int64_t retry_at;  /* mono ms before which a lost Redis is not asked again */
};

msv_err msv_shared_limits_new(const char *redis, unsigned timeout_ms,
                              struct msv_shared_limits **out)
{
    struct msv_shared_limits *sl = calloc(1, sizeof(*sl));
    uint16_t port = 0;

    if (sl == NULL)
        return MSV_ERR_NOMEM;
    if (msv_host_port(redis, strlen(redis), sl->host, sizeof(sl->host), &port) != MSV_OK) {
        free(sl);
        return MSV_ERR_INVALID;
    }
    sl->port = port;
    sl->timeout.tv_sec = timeout_ms / 1000;
    sl->timeout.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
    pthread_mutex_init(&sl->lock, NULL);
    *out = sl;
    return MSV_OK;
}

void msv_shared_limits_free(struct msv_shared_limits *sl)
{
    if (sl == NULL)
        return;
    if (sl->ctx != NULL)
        redisFree(sl->ctx);
    pthread_mutex_destroy(&sl->lock);
    free(sl);
}

/* Drops the connection: nothing is asked again for RETRY_MS. */
static void drop_locked(struct msv_shared_limits *sl)
{
    if (sl->ctx != NULL)
        redisFree(sl->ctx);
    sl->ctx = NULL;
    sl->sha[0] = '\0';
    sl->retry_at = msv_mono_ms() + RETRY_MS;
}

/* Connects (if it may) and loads the script; 0 when Redis is not usable now. */
static int ready_locked(struct msv_shared_limits *sl)
{
    redisReply *r;

    if (sl->ctx != NULL && sl->sha[0] != '\0')
        return 1;
    if (sl->ctx == NULL) {
        if (msv_mono_ms() < sl->retry_at)
            return 0;
        sl->ctx = redisConnectWithTimeout(sl->host, sl->port, sl->timeout);
        if (sl->ctx == NULL || sl->ctx->err != 0 ||
            redisSetTimeout(sl->ctx, sl->timeout) != REDIS_OK) {
            drop_locked(sl);
            return 0;
        }
    }
    r = redisCommand(sl->ctx, "SCRIPT LOAD %s", bucket_script);
    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40)
        memcpy(sl->sha, r->str, 41);
    else
        drop_locked(sl);
    freeReplyObject(r);
    return sl->sha[0] != '\0';
}

enum msv_shared_take msv_shared_limits_take(struct msv_shared_limits *sl,
                                            const struct msv_shared_bucket *b, double cost,
                                            double lease, int64_t now_ms, double *leased)
{
    enum msv_shared_take res = MSV_SHARED_UNAVAILABLE;
    char bucket[96], rate_s[32], burst_s[32], cost_s[32], lease_s[32];
    double ttl = b->rate > 0 ? b->burst / b->rate * 1000.0 + 1000.0 : (double)MAX_TTL_MS;
    redisReply *r = NULL;

    if (leased != NULL)
        *leased = 0;
    snprintf(bucket, sizeof(bucket), KEY_PREFIX "%s:%016" PRIx64, b->name, b->key);
    snprintf(rate_s, sizeof(rate_s), "%.17g", b->rate);
    snprintf(burst_s, sizeof(burst_s), "%.17g", b->burst);
    snprintf(cost_s, sizeof(cost_s), "%.17g", cost);
    snprintf(lease_s, sizeof(lease_s), "%.17g", lease > 0 ? lease : 0.0);
    if (ttl > (double)MAX_TTL_MS)
        ttl = (double)MAX_TTL_MS;
    pthread_mutex_lock(&sl->lock);
    if (!ready_locked(sl))
        goto out;
    r = redisCommand(sl->ctx, "EVALSHA %s 1 %s %s %s %s %" PRId64 " %lld %s", sl->sha, bucket,
                     rate_s, burst_s, cost_s, now_ms, (long long)ttl, lease_s);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        drop_locked(sl); /* timed out, lost, or the script gone (NOSCRIPT): start again */
        goto out;
    }
    res = r->integer >= 1 ? MSV_SHARED_TAKEN : MSV_SHARED_REFUSED;
    if (r->integer == 2 && leased != NULL)
        *leased = lease;
out:
    pthread_mutex_unlock(&sl->lock);
    freeReplyObject(r);
    return res;
}

/* ---- short-lived values the nodes share (provisioning addresses, docs/missived.md) ---------- */

msv_err msv_shared_put(struct msv_shared_limits *sl, const char *key, const void *value, size_t len,
                       int64_t ttl_ms, int only_new)
{
    msv_err err = MSV_ERR_IO;
    redisReply *r = NULL;

    pthread_mutex_lock(&sl->lock);
    if (!ready_locked(sl))
        goto out;
    r = redisCommand(sl->ctx, only_new ? "SET %s %b PX %lld NX" : "SET %s %b PX %lld", key, value,
                     len, (long long)ttl_ms);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        drop_locked(sl);
    else
        err = r->type == REDIS_REPLY_NIL ? MSV_ERR_EXISTS : MSV_OK;
out:
    pthread_mutex_unlock(&sl->lock);
    freeReplyObject(r);
    return err;
}

msv_err msv_shared_get(struct msv_shared_limits *sl, const char *key, int take, size_t max,
                       uint8_t **value, size_t *len)
{
    static const char take_script[] = "local v = redis.call('GET', KEYS[1]) "
                                      "if v then redis.call('DEL', KEYS[1]) end return v";
    msv_err err = MSV_ERR_IO;
    redisReply *r = NULL;

    pthread_mutex_lock(&sl->lock);
    if (!ready_locked(sl))
        goto out;
    r = take ? redisCommand(sl->ctx, "EVAL %s 1 %s", take_script, key)
             : redisCommand(sl->ctx, "GET %s", key);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        drop_locked(sl);
        goto out;
    }
    if (r->type != REDIS_REPLY_STRING)
        err = MSV_ERR_NOT_FOUND;
    else if ((size_t)r->len > max)
        err = MSV_ERR_TOO_BIG;
    else if ((*value = malloc(r->len ? (size_t)r->len : 1)) == NULL)
        err = MSV_ERR_NOMEM;
    else {
        memcpy(*value, r->str, (size_t)r->len);
        *len = (size_t)r->len;
        err = MSV_OK;
    }
out:
    pthread_mutex_unlock(&sl->lock);
    freeReplyObject(r);
    return err;
}
