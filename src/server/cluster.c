#include "server/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wshadow"
#include <hiredis/adapters/libevent.h>
#pragma GCC diagnostic pop

#include "missive/util.h"
#include "server/log.h"
#include "server/server.h"

#define TICK_MS 1000
#define HEARTBEAT_MS 10000
#define HEARTBEAT_TTL_S 30
#define WAKE_PREFIX "msv:wake:"
#define PRESENCE_PREFIX "msv:presence:"
#define DIRECTORY_CHANNEL "msv:directory"
#define PROBE_PREFIX "msv:probe:"
#define SUSPENDED_CHANNEL "msv:suspended"
/* a node back on Redis after it could not publish, or may have lost what it published: every
 * other node reads its devices' queues and checks their connections and caches once */
#define SWEEP_CHANNEL "msv:sweep"
#define DISCONNECT_ORDER "disconnect "

#define ORDER_PREFIX "msv:order:"
_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t), "a connection's order is kept as a pointer");

/* Deletes the presence, and the order of the connection it names, only if it still names
 * this node (a newer connection elsewhere wins). */
static const char forget_presence[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[2]) "
    "return redis.call('DEL', KEYS[1]) end return 0";

/*
 * Names this node (ARGV[1]) as the device's, and tells the other nodes that its connection of
 * order ARGV[2] (connection_order) is the newest (0 returned), unless Redis already holds a
 * newer one, whose order is returned: the announcement of a connection the device has left,
 * come late (after the device authenticated on another node), changes nothing elsewhere, and
 * that connection closes here (on_order). KEYS: the presence, the order, the device's
 * channel.
 */
static const char announce_script[] =
    "local held = tonumber(redis.call('GET', KEYS[2]) or '0') "
    "if held > tonumber(ARGV[2]) then return held end "
    "redis.call('SET', KEYS[2], ARGV[2]) redis.call('SET', KEYS[1], ARGV[1]) "
    "redis.call('PUBLISH', KEYS[3], 'g' .. ARGV[2] .. ':' .. ARGV[1]) return 0";

enum op_kind { OP_ONLINE, OP_OFFLINE, OP_WATCH, OP_UNWATCH, OP_WAKE, OP_CLOSE, OP_DIRECTORY };

struct op {
    enum op_kind kind;
    uint64_t device;
    uint64_t order; /* OP_ONLINE: the connection's (connection_order) */
    char *handle;   /* OP_DIRECTORY */
};

struct msv_cluster {
    struct msv_server *srv;
    char host[256];
    int port;
    char node[160];
    pthread_t thread;
    int started;
    struct event_base *base;
    struct event *ops_ev, *tick_ev, *probe_ev;

    pthread_mutex_t lock; /* guards ops and stopping */
    struct op *ops;
    size_t n_ops, cap_ops;
    int stopping;
    _Atomic int lost_op; /* an op that memory could not hold: made good by a sweep */

    /* the cluster thread's alone */
    redisAsyncContext *cmd, *sub; /* NULL while not connected */
    int cmd_up, sub_up;           /* connected (not only connecting) */
    int subscribed;               /* the directory channel is confirmed: wake-ups flow */
    int was_up;                   /* Redis was reachable once: its loss is worth a warning */
    /* devices connected to this node -> the order of their connection (as a pointer) */
    struct msv_u64map online;
    /* devices with connections here for requests alone -> how many (as a pointer): their
     * wake channel is listened to for removals, without presence (docs/wire.md) */
    struct msv_u64map watched;
    int64_t last_heartbeat;
    int64_t probe_sent_ms; /* monotonic; 0: no probe unanswered */
    int64_t connect_ms;    /* monotonic: connections begun, not yet answering; 0: none */
    int answered;          /* a probe came back on these connections: Redis really answers */
    /* a wake-up, close order or device change was not published, or may have been lost in a
     * connection given up (and at start: a node stopped before may have left some): the
     * other nodes are asked to sweep once Redis answers again */
    int unpublished;
    int64_t last_sweep_ms; /* monotonic: when another node's sweep was last done here */
    int sweep_pending;     /* one asked for within a second of the last: done at the tick */
    /* tests only ([testing] subscribe_gate): devices whose channel is listened to at the first
     * tick after the gate file is gone */
    uint64_t *gated;
    size_t n_gated, cap_gated;
};

/* ---- requests from the workers ---------------------------------------------------------- */

static void push_op(struct msv_cluster *c, enum op_kind kind, uint64_t device, uint64_t order,
                    const char *handle)
{
    struct op o = {kind, device, order, NULL};

    if (c == NULL)
        return;
    if (handle != NULL && (o.handle = strdup(handle)) == NULL) {
        atomic_store(&c->lost_op, 1);
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (c->n_ops == c->cap_ops) {
        size_t cap = c->cap_ops ? c->cap_ops * 2 : 64;
        struct op *bigger = realloc(c->ops, cap * sizeof(*bigger));

        if (bigger == NULL) {
            pthread_mutex_unlock(&c->lock);
            free(o.handle);
            atomic_store(&c->lost_op, 1); /* a sweep makes up for it */
            event_active(c->ops_ev, EV_READ, 0);
            return;
        }
        c->ops = bigger;
        c->cap_ops = cap;
    }
    c->ops[c->n_ops++] = o;
    pthread_mutex_unlock(&c->lock);
    event_active(c->ops_ev, EV_READ, 0);
}

void msv_cluster_online(struct msv_cluster *c, uint64_t device_id, uint64_t order)
{
    push_op(c, OP_ONLINE, device_id, order, NULL);
}

void msv_cluster_offline(struct msv_cluster *c, uint64_t device_id)
{
    push_op(c, OP_OFFLINE, device_id, 0, NULL);
}

void msv_cluster_watch(struct msv_cluster *c, uint64_t device_id, int on)
{
    push_op(c, on ? OP_WATCH : OP_UNWATCH, device_id, 0, NULL);
}

void msv_cluster_wake(struct msv_cluster *c, uint64_t device_id, int close)
{
    push_op(c, close ? OP_CLOSE : OP_WAKE, device_id, 0, NULL);
}

void msv_cluster_directory_changed(struct msv_cluster *c, const char *handle)
{
    push_op(c, OP_DIRECTORY, 0, 0, handle);
}

/* ---- Redis --------------------------------------------------------------------------- */

static void wake_all_online(struct msv_cluster *c)
{
    for (size_t i = 0; i < c->online.cap; i++) {
        if (c->online.keys[i] != 0)
            msv_server_wake_local(c->srv, c->online.keys[i]);
    }
}

/* What Redis may not have carried is read from the store: the caches dropped whole, every
 * connected device's queue read. */
static void read_all_again(struct msv_cluster *c)
{
    msv_dircache_drop_all(&c->srv->dir);
    msv_kt_log_grown(&c->srv->kt);
    wake_all_online(c);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *arg)
{
    const redisReply *r = reply;

    (void)ac;
    (void)arg;
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        msv_log(MSV_LOG_WARN, "redis_error", "reply=\"%.*s\"", (int)r->len, r->str);
}

/* The answer to a PUBLISH another node needed: none (the connection failed or was given up
 * before Redis answered) means it may not have gone, and a sweep makes up for it (a refusal
 * is logged, and not asked again and again). */
static void on_published(redisAsyncContext *ac, void *reply, void *arg)
{
    struct msv_cluster *c = ac->data;

    on_reply(ac, reply, arg);
    if (reply == NULL)
        c->unpublished = 1;
}

/*
 * The order Redis holds of a device's newest connection (an announcement's answer, refused; or
 * read once the device's channel is listened to here): the device's connections here that
 * authenticated before it close, its announcement having come before this node listened, or
 * this node's own having come late.
 */
static void newer_elsewhere(struct msv_cluster *c, uint64_t device, const redisReply *r)
{
    uint64_t order = 0;

    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        order = (uint64_t)r->integer;
    else if (r->type == REDIS_REPLY_STRING)
        order = strtoull(r->str, NULL, 10);
    if (order > (uintptr_t)msv_u64map_get(&c->online, device))
        msv_server_close_older(c->srv, device, order);
}

/* The answer to an announcement, or to a read of a device's order (arg: the device). */
static void on_order(redisAsyncContext *ac, void *reply, void *arg)
{
    on_reply(ac, reply, NULL);
    newer_elsewhere(ac->data, (uintptr_t)arg, reply);
}

/* Names this node as where device is connected now, and has the connections other nodes still
 * hold of it that authenticated before this one closed there (a device keeps one connection
 * that takes deliveries), unless Redis knows of a newer one (announce_script). Done again for
 * every device connected here when Redis answers again: one that connected while this node
 * was away from it was not announced, or perhaps not heard. */
static void announce(struct msv_cluster *c, uint64_t device, uint64_t order)
{
    if (c->cmd_up)
        redisAsyncCommand(c->cmd, on_order, (void *)(uintptr_t)device,
                          "EVAL %s 3 " PRESENCE_PREFIX "%" PRIu64 " " ORDER_PREFIX "%" PRIu64
                          " " WAKE_PREFIX "%" PRIu64 " %s %" PRIu64,
                          announce_script, device, device, device, c->node, order);
}

/* An account suspended through missive-admin anywhere in the cluster: its connections here close.
 */
static void suspended_message(struct msv_cluster *c, const char *payload)
{
    static const char disconnect[] = DISCONNECT_ORDER;
    int cut = strncmp(payload, disconnect, sizeof(disconnect) - 1) == 0;
    char *end = NULL;
    uint64_t account;

    if (cut) /* the operator's disconnect: not a suspension, the store is not asked */
        payload += sizeof(disconnect) - 1;
    if (payload[0] < '1' || payload[0] > '9')
        return;
    errno = 0;
    account = strtoull(payload, &end, 10);
    if (errno == 0 && *end == '\0' && cut)
        msv_server_account_disconnect(c->srv, account);
    else if (errno == 0 && *end == '\0')
        msv_server_account_suspended(c->srv, account);
}

/* Messages and confirmations on the subscriber connection. */
/* Publishes to this node's own probe channel once both connections can carry it. */
static void send_probe(struct msv_cluster *c)
{
    if (c->probe_sent_ms == 0 && c->cmd_up && c->subscribed) {
        redisAsyncCommand(c->cmd, on_reply, NULL, "PUBLISH " PROBE_PREFIX "%s p", c->node);
        c->probe_sent_ms = msv_mono_ms();
    }
}

/* What this node did not tell, or may not have: the other nodes look for themselves (once
 * Redis answers; the request lost is asked again). */
static void ask_sweep(struct msv_cluster *c)
{
    if (atomic_exchange(&c->lost_op, 0))
        c->unpublished = 1;
    if (!c->unpublished || !c->answered || !c->cmd_up)
        return;
    c->unpublished = 0;
    redisAsyncCommand(c->cmd, on_published, NULL, "PUBLISH " SWEEP_CHANNEL " %s", c->node);
    atomic_fetch_add(&c->srv->m.cluster_sweeps_out, 1);
    msv_log(MSV_LOG_INFO, "cluster_sweep_asked", "node=%s", c->node);
}

/* The probe came back: Redis answers both ways (the first time, it is up again). One that
 * comes back after its command connection went, or that was given up on, proves nothing. */
static void probe_answered(struct msv_cluster *c)
{
    if (c->probe_sent_ms == 0 || !c->cmd_up)
        return;
    c->probe_sent_ms = 0;
    if (c->answered)
        return;
    c->answered = 1;
    c->connect_ms = 0;
    c->was_up = 1;
    msv_log(MSV_LOG_INFO, "redis_connected", "redis=%s:%d node=%s", c->host, c->port, c->node);
    ask_sweep(c);
}

/* Another node, back on Redis, may have stored what it could not tell: every connected
 * device's queue is read, every connection checked against the store, the caches dropped;
 * at most once a second (asked again sooner, it waits for the tick). */
static void sweep(struct msv_cluster *c)
{
    int64_t now = msv_mono_ms();

    if (c->last_sweep_ms != 0 && now - c->last_sweep_ms < TICK_MS) {
        c->sweep_pending = 1;
        return;
    }
    c->last_sweep_ms = now;
    c->sweep_pending = 0;
    atomic_fetch_add(&c->srv->m.cluster_sweeps_in, 1);
    msv_server_recheck_all(c->srv);
    read_all_again(c);
}

/* The mark of a device's subscription made by listen_device (its confirmation's arg). */
static char listen_check;

/* The node of an announcement 'g<order>:<node>' (announce_script), and its order; NULL if
 * payload is not one. */
static const char *announced_node(const char *payload, uint64_t *order)
{
    char *end = NULL;

    if (payload[0] != 'g' || payload[1] < '1' || payload[1] > '9')
        return NULL;
    errno = 0;
    *order = strtoull(payload + 1, &end, 10);
    return errno == 0 && *end == ':' ? end + 1 : NULL;
}

static void on_message(redisAsyncContext *ac, void *reply, void *arg)
{
    struct msv_cluster *c = ac->data;
    const redisReply *r = reply;
    const redisReply *kind, *channel, *payload;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return;
    kind = r->element[0];
    channel = r->element[1];
    payload = r->element[2];
    if (kind->type != REDIS_REPLY_STRING || channel->type != REDIS_REPLY_STRING)
        return;
    if (strncmp(channel->str, PROBE_PREFIX, strlen(PROBE_PREFIX)) == 0) {
        if (strcmp(kind->str, "message") == 0)
            probe_answered(c);
        return;
    }
    if (strcmp(channel->str, DIRECTORY_CHANNEL) == 0) {
        if (strcmp(kind->str, "subscribe") == 0) {
            /* (re)connected: whatever was published meanwhile is read from the store */
            c->subscribed = 1;
            send_probe(c); /* Redis is taken as up once it answers one */
            read_all_again(c);
        } else if (strcmp(kind->str, "message") == 0 && payload->type == REDIS_REPLY_STRING) {
            msv_dircache_drop(&c->srv->dir, payload->str);
            msv_kt_log_grown(&c->srv->kt);
        }
        return;
    }
    if (strcmp(channel->str, SWEEP_CHANNEL) == 0) {
        if (strcmp(kind->str, "message") == 0 && payload->type == REDIS_REPLY_STRING &&
            strcmp(payload->str, c->node) != 0)
            sweep(c);
        return;
    }
    if (strcmp(channel->str, SUSPENDED_CHANNEL) == 0) {
        if (strcmp(kind->str, "message") == 0 && payload->type == REDIS_REPLY_STRING)
            suspended_message(c, payload->str);
        else if (strcmp(kind->str, "subscribe") == 0)
            /* (re)connected: a suspension published meanwhile is read from the store */
            msv_server_recheck_all(c->srv);
        return;
    }
    if (strncmp(channel->str, WAKE_PREFIX, strlen(WAKE_PREFIX)) == 0) {
        uint64_t device = strtoull(channel->str + strlen(WAKE_PREFIX), NULL, 10);

        /* a device only watched has connections for requests alone here: a removal closes
         * them, a newer connection elsewhere does not (msv_server_close_conns with no why) */
        if (device == 0 || (msv_u64map_get(&c->online, device) == NULL &&
                            msv_u64map_get(&c->watched, device) == NULL))
            return;
        if (strcmp(kind->str, "subscribe") == 0) {
            /* a wake-up published before the subscription took hold would be lost: read now */
            msv_server_wake_local(c->srv, device);
            /* and so would a newer connection's announcement elsewhere: its order is read */
            if (c->cmd_up && msv_u64map_get(&c->online, device) != NULL)
                redisAsyncCommand(c->cmd, on_order, (void *)(uintptr_t)device,
                                  "GET " ORDER_PREFIX "%" PRIu64, device);
            if (arg == &listen_check) /* and so would a removal (listen_device) */
                msv_server_recheck_device(c->srv, device);
        } else if (strcmp(kind->str, "message") == 0 && payload->type == REDIS_REPLY_STRING &&
                   payload->str[0] == 'g') {
            uint64_t order = 0;
            const char *node = announced_node(payload->str, &order);

            if (node == NULL || strcmp(node, c->node) == 0)
                return; /* this node's own announcement, or none */
            atomic_fetch_add(&c->srv->m.cluster_wakes_in, 1);
            /* connected anew to another node: what authenticated here before that closes */
            msv_server_close_older(c->srv, device, order);
        } else if (strcmp(kind->str, "message") == 0 && payload->type == REDIS_REPLY_STRING) {
            /* 'n<node>': an announcement with no order, from a node of an earlier version */
            int close = payload->str[0] == 'c' ||
                        (payload->str[0] == 'n' && strcmp(payload->str + 1, c->node) != 0);

            if (payload->str[0] == 'n' && !close)
                return; /* this node's own announcement */
            atomic_fetch_add(&c->srv->m.cluster_wakes_in, 1);
            if (!close)
                msv_server_wake_local(c->srv, device);
            else /* 'c': removed on another node; 'n': connected anew to another node */
                msv_server_close_conns(c->srv, device, 0, NULL,
                                       payload->str[0] == 'c' ? msv_server_removed_text : NULL);
        }
    }
}

/* mark: the arg its confirmation comes with (&listen_check, or NULL) */
static void subscribe_device(struct msv_cluster *c, uint64_t device, void *mark)
{
    if (c->sub_up)
        redisAsyncCommand(c->sub, on_message, mark, "SUBSCRIBE " WAKE_PREFIX "%" PRIu64, device);
}

/*
 * A device's channel listened to anew (a connection of it came): a removal another node
 * published after the connection's authentication but before the subscription took hold
 * reached no one here, so once Redis confirms it the store says whether the device is still
 * there. (Listened to again after Redis came back, every connection is checked anyway.)
 */
static void listen_device(struct msv_cluster *c, uint64_t device)
{
    /* tests: the window the check closes held open while the gate file exists */
    if (c->srv->cfg.subscribe_gate[0] != '\0' && access(c->srv->cfg.subscribe_gate, F_OK) == 0) {
        if (c->n_gated == c->cap_gated) {
            size_t cap = c->cap_gated ? c->cap_gated * 2 : 16;
            uint64_t *g = realloc(c->gated, cap * sizeof(*g));

            if (g != NULL) {
                c->gated = g;
                c->cap_gated = cap;
            }
        }
        if (c->n_gated < c->cap_gated) {
            c->gated[c->n_gated++] = device;
            return;
        }
    }
    subscribe_device(c, device, &listen_check);
}

/* Writes the node's heartbeat, which expires unless it is written again. */
static void send_heartbeat(struct msv_cluster *c)
{
    redisAsyncCommand(c->cmd, on_reply, NULL, "SET msv:node:%s %lld EX %d", c->node,
                      (long long)msv_wall_ms(), HEARTBEAT_TTL_S);
    c->last_heartbeat = msv_wall_ms();
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct msv_cluster *c = ac->data;
    int is_sub = ac == c->sub;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns; the tick tries again */
        if (is_sub)
            c->sub = NULL;
        else if (ac == c->cmd)
            c->cmd = NULL;
        return;
    }
    if (is_sub) {
        c->sub_up = 1;
        for (size_t i = 0; i < c->online.cap; i++)
            if (c->online.keys[i] != 0)
                subscribe_device(c, c->online.keys[i], NULL);
        for (size_t i = 0; i < c->watched.cap; i++)
            if (c->watched.keys[i] != 0 && msv_u64map_get(&c->online, c->watched.keys[i]) == NULL)
                subscribe_device(c, c->watched.keys[i], NULL);
        redisAsyncCommand(c->sub, on_message, NULL, "SUBSCRIBE " PROBE_PREFIX "%s", c->node);
        redisAsyncCommand(c->sub, on_message, NULL, "SUBSCRIBE " SWEEP_CHANNEL);
        /* last, so that its confirmation follows every device's and the sweeps' */
        redisAsyncCommand(c->sub, on_message, NULL, "SUBSCRIBE " DIRECTORY_CHANNEL);
        redisAsyncCommand(c->sub, on_message, NULL, "SUBSCRIBE " SUSPENDED_CHANNEL);
    } else {
        c->cmd_up = 1;
        send_heartbeat(c); /* at once: the node is seen as alive as soon as it is connected */
        for (size_t i = 0; i < c->online.cap; i++)
            if (c->online.keys[i] != 0)
                announce(c, c->online.keys[i], (uintptr_t)c->online.values[i]);
    }
    send_probe(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct msv_cluster *c = ac->data;

    (void)status;
    if (ac == c->sub) {
        c->sub = NULL;
        c->sub_up = 0;
        c->subscribed = 0;
    } else if (ac == c->cmd) {
        c->cmd = NULL;
        c->cmd_up = 0;
        c->unpublished |= c->answered; /* what it held unsent is lost (on_published says so too) */
    }
    c->probe_sent_ms = 0;
    c->answered = 0;
    if (c->was_up) {
        msv_log(MSV_LOG_WARN, "redis_lost",
                "redis=%s:%d reading queues every second until it is back", c->host, c->port);
        c->was_up = 0;
    }
}

static redisAsyncContext *connect_one(struct msv_cluster *c)
{
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);

    if (ac == NULL)
        return NULL;
    if (ac->err != 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, c->base) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    atomic_fetch_add(&c->srv->m.cluster_connects, 1);
    return ac;
}

/* ---- the cluster thread -------------------------------------------------------------- */

static void run_op(struct msv_cluster *c, const struct op *o)
{
    switch (o->kind) {
    case OP_ONLINE: {
        uintptr_t had = (uintptr_t)msv_u64map_get(&c->online, o->device);

        /* a connection that replaced one here is announced too: a node may still hold one
         * that authenticated between the two */
        if (o->order > had &&
            msv_u64map_put(&c->online, o->device, (void *)(uintptr_t)o->order) == MSV_OK) {
            if (had == 0 && msv_u64map_get(&c->watched, o->device) == NULL)
                listen_device(c, o->device);
            /* not told while Redis is away: told once it answers again (on_connect) */
            announce(c, o->device, o->order);
        }
        break;
    }
    case OP_OFFLINE:
        if (msv_u64map_del(&c->online, o->device) == NULL)
            break;
        if (c->sub_up && msv_u64map_get(&c->watched, o->device) == NULL)
            redisAsyncCommand(c->sub, on_message, NULL, "UNSUBSCRIBE " WAKE_PREFIX "%" PRIu64,
                              o->device);
        if (c->cmd_up)
            redisAsyncCommand(c->cmd, on_reply, NULL,
                              "EVAL %s 2 " PRESENCE_PREFIX "%" PRIu64 " " ORDER_PREFIX "%" PRIu64
                              " %s",
                              forget_presence, o->device, o->device, c->node);
        break;
    case OP_WATCH:
    case OP_UNWATCH: {
        uintptr_t n = (uintptr_t)msv_u64map_get(&c->watched, o->device);
        int listened = n > 0 || msv_u64map_get(&c->online, o->device) != NULL;

        if (o->kind == OP_WATCH &&
            msv_u64map_put(&c->watched, o->device, (void *)(n + 1)) != MSV_OK)
            atomic_store(&c->lost_op, 1); /* no memory: a sweep looks at every connection */
        else if (o->kind == OP_UNWATCH && n <= 1)
            msv_u64map_del(&c->watched, o->device);
        else if (o->kind == OP_UNWATCH &&
                 msv_u64map_put(&c->watched, o->device, (void *)(n - 1)) != MSV_OK)
            atomic_store(&c->lost_op, 1); /* cannot happen: a present key takes no memory */
        if (!listened && o->kind == OP_WATCH)
            listen_device(c, o->device);
        else if (o->kind == OP_UNWATCH && n == 1 && c->sub_up &&
                 msv_u64map_get(&c->online, o->device) == NULL)
            redisAsyncCommand(c->sub, on_message, NULL, "UNSUBSCRIBE " WAKE_PREFIX "%" PRIu64,
                              o->device);
        break;
    }
    case OP_WAKE:
    case OP_CLOSE:
        if (c->cmd_up) {
            redisAsyncCommand(c->cmd, on_published, NULL, "PUBLISH " WAKE_PREFIX "%" PRIu64 " %s",
                              o->device, o->kind == OP_CLOSE ? "c" : "w");
            atomic_fetch_add(&c->srv->m.cluster_wakes_out, 1);
        }
        /* not sent, or sent on connections not yet known to answer: a sweep makes up for it */
        c->unpublished |= !c->answered;
        break;
    case OP_DIRECTORY:
        if (c->cmd_up)
            redisAsyncCommand(c->cmd, on_published, NULL, "PUBLISH " DIRECTORY_CHANNEL " %s",
                              o->handle);
        c->unpublished |= !c->answered;
        break;
    }
}

static void on_ops(evutil_socket_t fd, short what, void *arg)
{
    struct msv_cluster *c = arg;
    struct op *ops;
    size_t n;
    int stopping;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&c->lock);
    ops = c->ops;
    n = c->n_ops;
    stopping = c->stopping;
    c->ops = NULL;
    c->n_ops = c->cap_ops = 0;
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        if (!stopping)
            run_op(c, &ops[i]);
        free(ops[i].handle);
    }
    free(ops);
    if (!stopping)
        ask_sweep(c); /* an op memory could not hold, or a publish that failed */
    if (stopping) {
        if (c->sub != NULL)
            redisAsyncFree(c->sub);
        if (c->cmd != NULL)
            redisAsyncFree(c->cmd);
        event_base_loopbreak(c->base);
    }
}

/* Gives up both connections; what they held unsent is lost, and the tick connects again. */
static void drop_both(struct msv_cluster *c)
{
    redisAsyncContext *sub = c->sub, *cmd = c->cmd;

    c->sub = c->cmd = NULL; /* forgotten first: on_disconnect only logs the loss */
    c->unpublished |= c->answered && cmd != NULL;
    c->sub_up = c->cmd_up = c->subscribed = c->answered = 0;
    c->connect_ms = 0;
    if (sub != NULL)
        redisAsyncFree(sub);
    if (cmd != NULL)
        redisAsyncFree(cmd);
    c->probe_sent_ms = 0;
}

/*
 * A Redis that stops answering (paused, hung, a network that drops packets) would hold every
 * wake-up in a buffer while the connections look up: a message this node publishes to its
 * own probe channel must come back on its subscriber within [cluster] redis_timeout_ms, or
 * both connections are dropped and the queues are read every second until Redis is back.
 */
/*
 * Connections that are not carrying a probe within the timeout of being begun (a paused
 * Redis still lets the kernel accept them) are given up on the same way, so that they
 * neither pile up what is sent on them nor pass for a Redis that answers.
 * 1 if Redis, up until now, was given up on just now.
 */
static int probe(struct msv_cluster *c)
{
    int64_t now = msv_mono_ms(), timeout = (int64_t)c->srv->cfg.redis_timeout_ms;
    int was_answering = c->answered;

    if ((c->probe_sent_ms != 0 && now - c->probe_sent_ms >= timeout) ||
        (!c->answered && c->connect_ms != 0 && now - c->connect_ms >= timeout)) {
        if (was_answering) { /* once an outage: connections that never answered are quiet */
            atomic_fetch_add(&c->srv->m.cluster_timeouts, 1);
            msv_log(MSV_LOG_WARN, "redis_unresponsive", "redis=%s:%d no answer within %ums",
                    c->host, c->port, c->srv->cfg.redis_timeout_ms);
        }
        drop_both(c);
        return was_answering;
    }
    send_probe(c);
    return 0;
}

static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    struct msv_cluster *c = arg;

    (void)fd;
    (void)what;
    /* given up on: what it held back is read from the store now, then every tick */
    if (probe(c))
        wake_all_online(c);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct msv_cluster *c = arg;
    int64_t now = msv_wall_ms();

    (void)fd;
    (void)what;
    /* the timeout runs from the first connection begun of those that must answer together */
    if ((c->cmd == NULL && c->sub == NULL) ||
        ((c->cmd == NULL || c->sub == NULL) && c->connect_ms == 0))
        c->connect_ms = msv_mono_ms();
    if (c->cmd == NULL)
        c->cmd = connect_one(c);
    if (c->sub == NULL)
        c->sub = connect_one(c);
    if (c->cmd_up && now - c->last_heartbeat >= HEARTBEAT_MS)
        send_heartbeat(c);
    /* wake-ups cannot be trusted to arrive until a probe came back: the queues are read */
    if (!c->answered)
        wake_all_online(c);
    if (c->sweep_pending)
        sweep(c);
    ask_sweep(c);
    if (c->n_gated > 0 && access(c->srv->cfg.subscribe_gate, F_OK) != 0) { /* tests */
        size_t n = c->n_gated;

        c->n_gated = 0;
        for (size_t i = 0; i < n; i++)
            if (msv_u64map_get(&c->online, c->gated[i]) != NULL ||
                msv_u64map_get(&c->watched, c->gated[i]) != NULL)
                listen_device(c, c->gated[i]);
    }
}

static void *cluster_main(void *arg)
{
    struct msv_cluster *c = arg;

    event_base_dispatch(c->base);
    return NULL;
}

msv_err msv_cluster_start(struct msv_server *s, const char *redis, const char *node,
                          struct msv_cluster **out, char *err, size_t err_len)
{
    struct msv_cluster *c = calloc(1, sizeof(*c));
    struct timeval tick = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    /* a quarter of the timeout: a stall is noticed within about 1.5 times it */
    unsigned probe_ms = s->cfg.redis_timeout_ms / 4 > 0 ? s->cfg.redis_timeout_ms / 4 : 1;
    struct timeval probe_every = {probe_ms / 1000, (probe_ms % 1000) * 1000};
    uint16_t port;

    if (c == NULL)
        return MSV_ERR_NOMEM;
    c->unpublished = 1; /* a node stopped before may have left some unpublished */
    if (msv_host_port(redis, strlen(redis), c->host, sizeof(c->host), &port) != MSV_OK) {
        snprintf(err, err_len, "[cluster] redis must be HOST:PORT, not \"%s\"", redis);
        free(c);
        return MSV_ERR_PARSE;
    }
    c->port = port;
    snprintf(c->node, sizeof(c->node), "%s", node);
    c->srv = s;
    pthread_mutex_init(&c->lock, NULL);
    msv_u64map_init(&c->online);
    msv_u64map_init(&c->watched);
    c->base = event_base_new();
    if (c->base != NULL) {
        c->ops_ev = event_new(c->base, -1, EV_PERSIST, on_ops, c);
        c->tick_ev = event_new(c->base, -1, EV_PERSIST, on_tick, c);
        c->probe_ev = event_new(c->base, -1, EV_PERSIST, on_probe_timer, c);
    }
    if (c->base == NULL || c->ops_ev == NULL || c->tick_ev == NULL || c->probe_ev == NULL ||
        event_add(c->tick_ev, &tick) != 0 || event_add(c->probe_ev, &probe_every) != 0) {
        msv_cluster_stop(c);
        snprintf(err, err_len, "out of memory");
        return MSV_ERR_NOMEM;
    }
    c->cmd = connect_one(c);
    c->sub = connect_one(c);
    if (pthread_create(&c->thread, NULL, cluster_main, c) != 0) {
        msv_cluster_stop(c);
        snprintf(err, err_len, "cannot start the cluster thread");
        return MSV_ERR_NOMEM;
    }
    c->started = 1;
    *out = c;
    return MSV_OK;
}

void msv_cluster_stop(struct msv_cluster *c)
{
    if (c == NULL)
        return;
    if (c->started) {
        pthread_mutex_lock(&c->lock);
        c->stopping = 1;
        pthread_mutex_unlock(&c->lock);
        event_active(c->ops_ev, EV_READ, 0);
        pthread_join(c->thread, NULL);
    } else {
        if (c->sub != NULL)
            redisAsyncFree(c->sub);
        if (c->cmd != NULL)
            redisAsyncFree(c->cmd);
    }
    for (size_t i = 0; i < c->n_ops; i++)
        free(c->ops[i].handle);
    free(c->ops);
    free(c->gated);
    if (c->ops_ev != NULL)
        event_free(c->ops_ev);
    if (c->tick_ev != NULL)
        event_free(c->tick_ev);
    if (c->probe_ev != NULL)
        event_free(c->probe_ev);
    if (c->base != NULL)
        event_base_free(c->base);
    msv_u64map_clear(&c->online);
    msv_u64map_clear(&c->watched);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Publishes "PREFIX ACCOUNT_ID" on msv:suspended; *nodes: how many nodes heard it. */
static msv_err publish_account(const char *redis, const char *prefix, uint64_t account_id,
                               int *nodes)
{
    struct timeval timeout = {2, 0};
    char host[256];
    uint16_t port;
    redisContext *r;
    redisReply *reply = NULL;
    msv_err err = MSV_ERR_IO;

    if (msv_host_port(redis, strlen(redis), host, sizeof(host), &port) != MSV_OK)
        return MSV_ERR_PARSE;
    r = redisConnectWithTimeout(host, port, timeout);
    if (r == NULL || r->err != 0)
        goto out;
    if (redisSetTimeout(r, timeout) != REDIS_OK)
        goto out;
    reply = redisCommand(r, "PUBLISH " SUSPENDED_CHANNEL " %s%" PRIu64, prefix, account_id);
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER)
        goto out;
    *nodes = (int)reply->integer;
    err = MSV_OK;
out:
    if (reply != NULL)
        freeReplyObject(reply);
    redisFree(r);
    return err;
}

msv_err msv_cluster_publish_suspended(const char *redis, uint64_t account_id, int *nodes)
{
    return publish_account(redis, "", account_id, nodes);
}

msv_err msv_cluster_publish_disconnect(const char *redis, uint64_t account_id, int *nodes)
{
    return publish_account(redis, DISCONNECT_ORDER, account_id, nodes);
}
