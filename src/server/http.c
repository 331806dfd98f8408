/*
 * /health and Prometheus /metrics on the local HTTP port (evhttp, on a thread and loop of its
 * own: a worker waiting on a slow or paused database must not keep the port from saying so;
 * its handlers read only atomics and the store, whose pool is shared between threads).
 *
 * evhttp bounds a request's line and headers ([http] max_header_bytes: more is answered 413)
 * but its timeout starts again with every byte, so a client that trickles a request would
 * hold its connection as long as it liked. The port therefore makes each connection's
 * bufferevent itself and keeps a reference on it with a deadline ([http] request_timeout_s
 * after it was accepted); once a second, a connection past its deadline has its socket shut
 * down (evhttp sees it end and frees it), and one evhttp has freed is let go. The reference
 * keeps the descriptor open until then, so the sweep never touches a reused one.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "missive/util.h"
#include "server/admin_api.h"
#include "server/log.h"
#include "server/server.h"

#define STORE_WAIT_MS 1000 /* the longest /health and /metrics wait for the store */

struct http_conn {
    struct bufferevent *bev; /* a reference of ours */
    int64_t deadline_ms;     /* monotonic */
};

/*
 * The store's state for /health and /metrics is read by a thread of its own, asked for one
 * reading at a time: a request waits for it at most STORE_WAIT_MS and otherwise answers that
 * the store is failing, so the port stays answerable however long the database takes.
 */
struct store_check {
    pthread_mutex_t lock;
    pthread_cond_t done; /* on CLOCK_MONOTONIC */
    pthread_t thread;
    int started, stopping;
    uint64_t asked, answered; /* readings asked for and the last one made */
    int ok;
    uint64_t depth;     /* the last queue depth read */
    int64_t retried_ms; /* monotonic: when retry_failed last tried */
};

struct msv_http_conns {
    struct http_conn *items;
    size_t n, cap;
    struct event *sweep;
    struct event_base *base; /* the port's own loop, run by thread */
    struct event *stop;
    pthread_t thread;
    int started;
    struct store_check check;
    struct msv_server *srv;
    struct msv_admin_api *admin; /* NULL: no admin API */
};

/* /health's retries of a failed usage read: at most one a second */
#define RETRY_INTERVAL_MS 1000

/*
 * A failed usage read is otherwise cleared only by the next batch, which an idle node (out of its
 * load balancer for that 503) never gets: the reading makes it again itself, as a batch does, and
 * clears the flag only if no newer failure set it meanwhile. A failed commit is not retried so: a
 * small write of its own can pass on a disk too full for the batches (test_disk_full).
 */
static void retry_failed(struct msv_server *s, int64_t *retried_ms)
{
    struct msv_store *store = s->store;
    struct msv_queue_usage u = {0};
    int64_t now = msv_mono_ms();
    int usage = atomic_load(&s->usage_failing);

    if (usage == 0 || now - *retried_ms < RETRY_INTERVAL_MS)
        return;
    *retried_ms = now;
    atomic_fetch_add(&s->m.health_retries, 1);
    if (store->ops->queue_usage(store->impl, &u, 1) == MSV_OK &&
        atomic_compare_exchange_strong(&s->usage_failing, &usage, 0))
        msv_log(MSV_LOG_INFO, "store_recovered", "what=usage_read");
}

static void *check_main(void *arg)
{
    struct msv_http_conns *t = arg;
    struct store_check *k = &t->check;
    struct msv_store *store = t->srv->store;

    pthread_mutex_lock(&k->lock);
    while (!k->stopping) {
        uint64_t gen = k->asked, depth = 0;
        int ok;

        if (gen == k->answered) {
            pthread_cond_wait(&k->done, &k->lock);
            continue;
        }
        pthread_mutex_unlock(&k->lock);
        ok = store->ops->queue_depth(store->impl, &depth) == MSV_OK;
        if (ok)
            retry_failed(t->srv, &k->retried_ms);
        pthread_mutex_lock(&k->lock);
        k->ok = ok;
        if (ok)
            k->depth = depth;
        k->answered = gen;
        pthread_cond_broadcast(&k->done);
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* 1 if the store answered a fresh reading within STORE_WAIT_MS; *depth: the last one read. */
static int store_reading(struct msv_server *s, uint64_t *depth)
{
    struct store_check *k = &s->http_conns->check;
    struct timespec until;
    uint64_t want;
    int ok = 0;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += STORE_WAIT_MS / 1000;
    until.tv_nsec += (long)(STORE_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&k->lock);
    want = ++k->asked;
    pthread_cond_broadcast(&k->done);
    while (k->answered < want && pthread_cond_timedwait(&k->done, &k->lock, &until) == 0)
        ;
    ok = k->answered >= want && k->ok;
    *depth = k->depth;
    pthread_mutex_unlock(&k->lock);
    return ok;
}

/* Why the node is not healthy (a JSON string's contents); NULL if it is. */
static const char *unhealthy_reason(struct msv_server *s, int store_ok, int commits_ok,
                                    int reads_ok)
{
    if (atomic_load(&s->stopping))
        return "stopping";
    if (!store_ok)
        return "the store did not answer a reading within a second";
    if (atomic_load(&s->usage_failing))
        return "the recipients' queue usage could not be read: sends are refused";
    if (!commits_ok)
        return "the last group commit failed: sends are refused";
    if (!reads_ok)
        return "queue reads failed: deliveries wait";
    return NULL;
}

static void on_health(struct evhttp_request *req, void *arg)
{
    struct msv_server *s = arg;
    struct evbuffer *out = evbuffer_new();
    uint64_t depth = 0;
    int store_ok = store_reading(s, &depth);
    int commits_ok = !atomic_load(&s->commit_failing) && !atomic_load(&s->usage_failing);
    int reads_ok = !atomic_load(&s->fetch_failing);
    const char *why = unhealthy_reason(s, store_ok, commits_ok, reads_ok);

    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add_printf(out,
                        "{\"status\":\"%s\",\"store\":\"%s\",\"commits\":\"%s\","
                        "\"queue_reads\":\"%s\",\"connections\":%llu,\"queue_depth\":%llu",
                        why == NULL ? "ok" : "unavailable", store_ok ? "ok" : "failing",
                        commits_ok ? "ok" : "failing", reads_ok ? "ok" : "failing",
                        (unsigned long long)atomic_load(&s->m.connections_open),
                        (unsigned long long)depth);
    if (why != NULL)
        evbuffer_add_printf(out, ",\"reason\":\"%s\"", why);
    evbuffer_add_printf(out, "}\n");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, why == NULL ? HTTP_OK : 503, why == NULL ? "OK" : "Service Unavailable",
                      out);
    evbuffer_free(out);
}

/* Every counter and gauge /metrics reports, with its help text. */
#define M(field, name, type, help)                            \
    {                                                         \
        offsetof(struct msv_metrics, field), name, type, help \
    }
static const struct {
    size_t offset;
    const char *name, *type, *help;
} metrics[] = {
    M(connections_open, "connections_open", "gauge", "Open client connections."),
    M(connections_total, "connections_total", "counter", "Accepted connections."),
    M(frames_in, "frames_in_total", "counter", "Frames read."),
    M(frames_rejected, "frames_rejected_total", "counter", "Malformed frames (connection closed)."),
    M(reports, "reports_total", "counter", "Abuse reports stored."),
    M(reports_refused, "reports_refused_total", "counter",
      "Abuse reports refused (unknown account, too big, too many)."),
    M(auth_ok, "auth_ok_total", "counter", "Device authentications."),
    M(auth_failed, "auth_failed_total", "counter", "Failed device authentications."),
    M(registrations, "registrations_total", "counter", "Accounts created."),
    M(registrations_refused, "registrations_refused_total", "counter",
      "Registrations refused by the registration policy (closed, no or no valid invite)."),
    M(invites_used, "invites_used_total", "counter", "Accounts created with an invite."),
    M(devices_added, "devices_added_total", "counter", "Devices registered."),
    M(devices_removed, "devices_removed_total", "counter", "Devices removed."),
    M(devices_refused_full, "devices_refused_full_total", "counter",
      "Devices not added (AddDevice, LinkDevice) because their account had 8 devices waiting for "
      "approval already, or as many devices as it may have."),
    M(hooks_refused, "hooks_refused_total", "counter",
      "Verification codes not sent (their request refused) because 32 verification hooks ran "
      "at once already."),
    M(lookups, "lookups_total", "counter", "Handles looked up."),
    M(owner_versions, "owner_versions_total", "counter",
      "Versions of handles given to their own accounts' monitors, each with its proofs."),
    M(handles_added, "handles_added_total", "counter", "Handles added to accounts."),
    M(handles_removed, "handles_removed_total", "counter", "Handles removed from accounts."),
    M(handles_refused, "handles_refused_total", "counter",
      "Handles not added: the account's limit, or taken meanwhile."),
    M(usernames_set, "usernames_set_total", "counter", "Usernames set (new or changed)."),
    M(usernames_released, "usernames_released_total", "counter",
      "Usernames released (changed or removed), each then held from every account."),
    M(usernames_refused, "usernames_refused_total", "counter",
      "Usernames not set: not one, taken, held, changed too recently, or the account's limit."),
    M(unknown_lookups_refused, "unknown_lookups_refused_total", "counter",
      "Lookups refused: the account looked up too many usernames that no account has."),
    M(sends, "sends_total", "counter", "Send requests accepted for commit."),
    M(sealed_sends, "sealed_sends_total", "counter",
      "Sealed-sender sends accepted for commit (their sender unknown to the relay)."),
    M(envelopes_enqueued, "envelopes_enqueued_total", "counter", "Envelopes committed to queues."),
    M(envelopes_left_out, "envelopes_left_out_total", "counter",
      "Envelopes of sends taken that were left out because their device's queue was full (the "
      "send's other envelopes went; a send all of whose devices were full is refused, "
      "queue_full_total)."),
    M(envelopes_delivered, "envelopes_delivered_total", "counter", "Envelopes pushed to devices."),
    M(envelopes_acked, "envelopes_acked_total", "counter", "Envelopes acknowledged and deleted."),
    M(envelopes_expired, "envelopes_expired_total", "counter",
      "Envelopes deleted unread at expiry."),
    M(commit_batches, "commit_batches_total", "counter", "Group commits."),
    M(commit_failures, "commit_failures_total", "counter", "Group commits that failed."),
    M(health_retries, "health_retries_total", "counter",
      "Failed usage reads of a group commit that /health made again itself (once a second)."),
    M(commits_in_flight, "commits_in_flight", "gauge",
      "Group commits being written by the workers' committer threads (at most one each)."),
    M(commit_backlog_paused, "commit_backlog_paused_total", "counter",
      "Times a connection's reading paused because its worker's next group commit was full "
      "(commit_backlog, commit_backlog_kib)."),
    M(rate_limited, "rate_limited_total", "counter", "Requests refused by a rate limit."),
    M(cluster_wakes_out, "cluster_wakeups_sent_total", "counter",
      "Wake-ups published for devices connected to other nodes."),
    M(cluster_wakes_in, "cluster_wakeups_received_total", "counter",
      "Wake-ups from other nodes for devices connected here."),
    M(cluster_older_announced, "cluster_older_announcements_total", "counter",
      "Announcements from another node of a device's connection that authenticated before the "
      "one here, which stays (the device moved on before the announcement came)."),
    M(cluster_connects, "cluster_redis_connects_total", "counter",
      "Connections to the cluster's Redis begun (two per node when all is well)."),
    M(cluster_timeouts, "cluster_redis_timeouts_total", "counter",
      "Times the cluster's Redis did not answer within redis_timeout_ms and was given up on."),
    M(cluster_sweeps_out, "cluster_sweeps_asked_total", "counter",
      "Times this node, back on Redis after it could not publish wake-ups, asked the other "
      "nodes to read their devices' queues."),
    M(cluster_sweeps_in, "cluster_sweeps_done_total", "counter",
      "Times another node's request made this node read its devices' queues and check their "
      "connections."),
    M(http_refused, "http_requests_refused_total", "counter",
      "HTTP requests answered 4xx: malformed, an unknown path or method, headers over "
      "max_header_bytes."),
    M(http_timeouts, "http_timeouts_total", "counter",
      "HTTP connections closed at request_timeout_s."),
    M(sends_device_gone, "sends_device_gone_total", "counter",
      "Sends refused at their commit (ERROR_IO, nothing stored) because a recipient device was "
      "removed after the send was checked."),
    M(log_reads_again, "log_reads_again_total", "counter",
      "An account's LogRead read again because its handles or their tombstones changed while "
      "the entries were read (after three reads it is refused: 'try again')."),
    M(lookups_again, "lookups_again_total", "counter",
      "A Lookup asking for the account's history proofs or versions read again because the "
      "account's handles or their tombstones changed meanwhile (after three reads it is "
      "refused: 'try again')."),
    M(device_checks_failed, "device_checks_failed_total", "counter",
      "Checks of a device's connections (once its node listened to the device's channel) the "
      "store could not answer; each is made again, the wait doubling from 1 s to 30 s."),
    M(device_checks_given_up, "device_checks_given_up_total", "counter",
      "Such checks given up because 4,096 devices already waited on the worker (the "
      "connection waits for a sweep or its end)."),
    M(device_checks_waiting, "device_checks_waiting", "gauge",
      "Devices whose check waits to be made again."),
    M(queue_fetch_failures, "queue_fetch_failures_total", "counter",
      "Queue reads that failed (each worker reads every queue again a second later)."),
    M(db_faults[MSV_STORE_FAULT_BUSY], "database_faults_busy_total", "counter",
      "PostgreSQL failures: serialization failures and deadlocks (each, also when running the "
      "transaction again then went through), lock waits and statements timed out."),
    M(db_faults[MSV_STORE_FAULT_UNAVAILABLE], "database_faults_unavailable_total", "counter",
      "PostgreSQL failures: the connection lost, refused or timed out, the server shutting down."),
    M(db_faults[MSV_STORE_FAULT_FULL], "database_faults_full_total", "counter",
      "PostgreSQL failures: disk full, out of memory, too many connections (SQLSTATE class 53)."),
    M(db_faults[MSV_STORE_FAULT_OTHER], "database_faults_other_total", "counter",
      "PostgreSQL failures of any other kind but constraint violations."),
    M(db_faults[MSV_STORE_FAULT_POOL], "store_pool_timeouts_total", "counter",
      "Operations refused (answered ERROR_IO: try again) because no connection of the "
      "PostgreSQL pool came free within [store] pool_wait_ms."),
    M(store_unavailable, "store_unavailable_total", "counter",
      "Requests answered ERROR_IO because storage failed to decide them (authentication, "
      "suspension checks)."),
    M(connections_refused, "connections_refused_total", "counter",
      "Connections closed at once: too many from one address."),
    M(auth_timeouts, "auth_timeouts_total", "counter",
      "Connections closed for not authenticating within auth_timeout_s of accept."),
    M(accept_paused, "accept_paused_total", "counter",
      "Times accepting paused for accept_pause_ms because accept() failed (descriptors ran out)."),
    M(answers_too_big, "answers_too_big_total", "counter",
      "Answers larger than frame_max, sent as ERROR_TOO_BIG instead."),
    M(connections_revoked, "connections_revoked_total", "counter",
      "Connections closed because their device was removed or replaced, or its account "
      "suspended."),
    M(requests_only_open, "connections_requests_only", "gauge",
      "Open connections authenticated for requests alone (they take no deliveries)."),
    M(requests_only_refused, "connections_requests_only_refused_total", "counter",
      "Authentications for requests alone refused: the device had max_request_connections "
      "such connections open on this node."),
    M(stale_partial, "stale_answers_partial_total", "counter",
      "ERROR_STALE_DEVICES answers that listed only the handles that fit in a frame."),
    M(suspensions_in, "suspensions_told_total", "counter",
      "Suspensions told by missive-admin (control socket) or through the cluster's Redis."),
    M(blob_bytes_in, "blob_bytes_in_total", "counter", "Attachment bytes uploaded."),
    M(blob_bytes_out, "blob_bytes_out_total", "counter", "Attachment bytes downloaded."),
    M(blobs_expired, "blobs_expired_total", "counter", "Attachments deleted at expiry."),
    M(blobs_swept, "blobs_swept_total", "counter",
      "Attachment files no record named (left by a crash), removed."),
    M(reads_paused, "reads_paused_total", "counter",
      "Times a connection's requests waited for its unsent answers to drain."),
    M(codes_refused, "codes_refused_total", "counter",
      "Verification codes not sent: one pending for the handle, or its daily allowance used."),
    M(provision_opened, "provision_opened_total", "counter",
      "Provisioning addresses opened by devices to be linked by QR code."),
    M(provision_refused, "provision_refused_total", "counter",
      "Provisioning requests refused: one address per connection, too many from one client "
      "address, none free, or a message too big, unknown or a second one."),
    M(provision_delivered, "provision_delivered_total", "counter",
      "Provisioning messages taken by the devices they were left for."),
    M(provision_takes_early, "provision_takes_early_total", "counter",
      "ProvisionTake refused unlooked-at: asked again within 500 ms on its connection."),
    M(provision_expired, "provision_expired_total", "counter",
      "Provisioning addresses that expired (10 minutes) before their message was taken."),
    M(code_guesses_refused, "code_guesses_refused_total", "counter",
      "RegisterFinish refused unchecked: too many wrong codes for the handle lately."),
    M(sends_rate_limited, "sends_rate_limited_total", "counter",
      "Sends refused by the sending account's envelope rate."),
    M(queue_full, "queue_full_total", "counter",
      "Sends refused because every recipient device's queue was full (envelopes or bytes); "
      "a send with other devices leaves the full ones out (envelopes_left_out_total, "
      "mls_copies_skipped_total)."),
    M(quota_notices, "quota_notices_total", "counter",
      "Notices to an account that a send to it was refused, or left one of its devices out, for "
      "a full queue."),
    M(claims_refused, "prekey_claims_refused_total", "counter",
      "Prekey claims refused: a device named twice in one claim."),
    M(claims_throttled, "prekey_claims_throttled_total", "counter",
      "Devices claimed again by the same account within the interval: answered without a "
      "one-time prekey."),
    M(prekeys_exhausted, "prekeys_exhausted_total", "counter",
      "Claims that found a device with no one-time prekey left."),
    M(blobs_refused, "blobs_refused_total", "counter",
      "Uploads refused: past the largest size, too many unfinished, over the device's or "
      "account's bytes, or over the account's number of attachments."),
    M(blob_finish_failed, "blob_finish_failed_total", "counter",
      "BlobFinish requests whose bytes did not have the SHA-256 named, and those refused "
      "because the device's bucket of such failures was empty."),
    M(blob_finish_busy, "blob_finish_busy_total", "counter",
      "BlobFinish requests refused because finish_checks checks were running."),
    M(admin_requests, "admin_requests_total", "counter",
      "Requests to the admin API (/admin/...), whatever their answer."),
    M(admin_unauthorized, "admin_unauthorized_total", "counter",
      "Admin API requests without the admin token, or with another (answered 401)."),
    M(mls_key_packages_claimed, "mls_key_packages_claimed_total", "counter",
      "MLS KeyPackages handed out (each then deleted)."),
    M(mls_last_resort_claims, "mls_last_resort_claims_total", "counter",
      "MLS KeyPackage claims answered with the device's last-resort KeyPackage."),
    M(mls_claims_throttled, "mls_key_package_claims_throttled_total", "counter",
      "Devices claimed again by the same account within prekey_claim_interval_s: answered "
      "with the last-resort KeyPackage."),
    M(mls_commits, "mls_commits_total", "counter",
      "MLS commits accepted (each moved its group to the next epoch)."),
    M(mls_stale, "mls_stale_epoch_total", "counter",
      "MLS commits and proposals refused for an epoch that is not the group's current one."),
    M(mls_messages, "mls_messages_total", "counter",
      "MLS proposals, application messages and Welcomes accepted."),
    M(mls_copies, "mls_copies_queued_total", "counter",
      "Copies of MLS messages queued to member devices."),
    M(mls_refused, "mls_refused_total", "counter",
      "MLS requests refused for their shape, a limit or membership."),
    M(mls_skipped, "mls_copies_skipped_total", "counter",
      "Copies of MLS messages not queued because their member device's queue was full (the "
      "sender and the device's account are told)."),
    M(mls_log_reads, "mls_log_reads_total", "counter",
      "Reads of MLS groups' commit logs by member devices catching up."),
    M(mls_log_served, "mls_log_commits_served_total", "counter",
      "Commits those reads gave (each kept in its group's log: at most 256 a group)."),
    M(mls_welcomes_kept, "mls_welcomes_kept_total", "counter",
      "Welcomes kept for a member device whose queue was full, for it to ask for (one a "
      "membership)."),
    M(mls_welcome_reads, "mls_welcome_reads_total", "counter",
      "Member devices' asks for the Welcome kept for them."),
    M(shared_limits_fallback, "shared_limits_fallback_total", "counter",
      "Limit checks that Redis did not answer within redis_timeout_ms: counted on the node's "
      "own bucket instead."),
};
#undef M

static void metric(struct evbuffer *out, const char *name, const char *type, const char *help,
                   uint64_t value)
{
    evbuffer_add_printf(out, "# HELP missived_%s %s\n# TYPE missived_%s %s\nmissived_%s %llu\n",
                        name, help, name, type, name, (unsigned long long)value);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct msv_server *s = arg;
    struct evbuffer *out = evbuffer_new();
    uint64_t depth = 0;

    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    (void)store_reading(s, &depth);
    for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
        _Atomic uint64_t *v = (_Atomic uint64_t *)((char *)&s->m + metrics[i].offset);

        metric(out, metrics[i].name, metrics[i].type, metrics[i].help, atomic_load(v));
    }
    metric(out, "queue_depth", "gauge", "Envelopes waiting in all queues.", depth);
    metric(out, "keydir_proofs_kept", "gauge",
           "VRF proofs the key directory keeps for lookups (at most 1,000,000).",
           atomic_load(&s->kt.keydir.proofs_kept));
    metric(out, "keydir_append_proof_from", "gauge",
           "The first log entry whose key directory step auditors can still read "
           "([directory] append_proof_kib).",
           atomic_load(&s->kt.keydir.steps_kept_from));
    metric(out, "keydir_lookup_proofs_made_total", "counter",
           "VRF proofs made by lookups, not kept ones (a handle without entries, the bound).",
           atomic_load(&s->kt.keydir.lookup_misses));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
}

/* ---- connections and their deadlines ------------------------------------------------- */

/* Counts the 4xx answers evhttp writes (their status line starts an empty output buffer). */
static void on_output(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
    struct msv_server *s = arg;
    char line[12];

    if (info->orig_size != 0 || info->n_added < sizeof(line) ||
        evbuffer_copyout(out, line, sizeof(line)) != (ev_ssize_t)sizeof(line))
        return;
    if (memcmp(line, "HTTP/1.", 7) == 0 && line[9] == '4')
        atomic_fetch_add(&s->m.http_refused, 1);
}

static struct bufferevent *new_conn(struct event_base *base, void *arg)
{
    struct msv_server *s = arg;
    struct msv_http_conns *t = s->http_conns;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);

    if (bev == NULL)
        return NULL; /* evhttp makes one of its own */
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct http_conn *bigger = realloc(t->items, cap * sizeof(*bigger));

        if (bigger == NULL) {
            bufferevent_free(bev);
            return NULL;
        }
        t->items = bigger;
        t->cap = cap;
    }
    (void)evbuffer_add_cb(bufferevent_get_output(bev), on_output, s);
    bufferevent_incref(bev);
    t->items[t->n].bev = bev;
    t->items[t->n++].deadline_ms = msv_mono_ms() + (int64_t)s->cfg.http_request_timeout_s * 1000;
    return bev;
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct msv_server *s = arg;
    struct msv_http_conns *t = s->http_conns;
    int64_t now = msv_mono_ms();
    size_t kept = 0;

    (void)fd;
    (void)what;
    for (size_t i = 0; i < t->n; i++) {
        struct http_conn *c = &t->items[i];
        bufferevent_event_cb eventcb = NULL;

        /* evhttp clears the callbacks when it frees the connection */
        bufferevent_getcb(c->bev, NULL, NULL, &eventcb, NULL);
        if (eventcb != NULL && now < c->deadline_ms) {
            t->items[kept++] = *c;
            continue;
        }
        if (eventcb != NULL && bufferevent_getfd(c->bev) >= 0) {
            shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
            atomic_fetch_add(&s->m.http_timeouts, 1);
            msv_log(MSV_LOG_INFO, "http_timeout", "after=%us", s->cfg.http_request_timeout_s);
        }
        bufferevent_decref(c->bev);
    }
    t->n = kept;
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct msv_http_conns *t = arg;

    (void)fd;
    (void)what;
    event_base_loopbreak(t->base);
}

static void *http_main(void *arg)
{
    struct msv_http_conns *t = arg;

    event_base_dispatch(t->base);
    return NULL;
}

void msv_http_stop(struct msv_server *s)
{
    struct msv_http_conns *t = s->http_conns;

    if (t != NULL && t->started) {
        event_active(t->stop, EV_READ, 0);
        pthread_join(t->thread, NULL);
        t->started = 0;
    }
    if (t != NULL && t->check.started) {
        pthread_mutex_lock(&t->check.lock);
        t->check.stopping = 1;
        pthread_cond_broadcast(&t->check.done);
        pthread_mutex_unlock(&t->check.lock);
        pthread_join(t->check.thread, NULL); /* after the reading under way, if any */
        t->check.started = 0;
    }
    if (s->http_pause.resume != NULL) /* after the port's thread ended */
        event_free(s->http_pause.resume);
    s->http_pause.resume = NULL;
    if (s->http != NULL)
        evhttp_free(s->http); /* its listener and connections first: then ours are the last */
    s->http = NULL;
    s->http_listener = NULL;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        bufferevent_decref(t->items[i].bev);
    if (t->sweep != NULL)
        event_free(t->sweep);
    if (t->stop != NULL)
        event_free(t->stop);
    if (t->base != NULL)
        event_base_free(t->base);
    pthread_cond_destroy(&t->check.done);
    pthread_mutex_destroy(&t->check.lock);
    msv_admin_api_free(t->admin);
    free(t->items);
    free(t);
    s->http_conns = NULL;
}

/*
 * The HTTP port's accept() failing (descriptors ran out) would spin like the
 * client port's. evhttp owns its listener and hands the error callback only
 * the evhttp, so the server is found through the resume timer, whose argument
 * it is: that timer stays pending (a day between pauses) for this reason.
 */
#define HTTP_RESUME_IDLE_S 86400

static void on_http_resume(evutil_socket_t fd, short what, void *arg)
{
    struct msv_server *s = arg;
    struct timeval idle = {HTTP_RESUME_IDLE_S, 0};

    (void)fd;
    (void)what;
    if (!atomic_load(&s->stopping))
        evconnlistener_enable(s->http_listener);
    (void)evtimer_add(s->http_pause.resume, &idle); /* made on this loop: cannot fail */
}

static int find_http_server(const struct event_base *base, const struct event *ev, void *arg)
{
    (void)base;
    if (event_get_callback(ev) != on_http_resume)
        return 0;
    *(struct msv_server **)arg = event_get_callback_arg(ev);
    return 1;
}

static void on_http_accept_error(struct evconnlistener *l, void *arg)
{
    struct msv_server *s = NULL;

    (void)arg; /* the evhttp */
    (void)event_base_foreach_event(evconnlistener_get_base(l), find_http_server, &s);
    if (s != NULL)
        msv_server_accept_failed(s, l, &s->http_pause, "http");
}

static msv_err pause_on_accept_error(struct msv_server *s, struct event_base *base,
                                     struct evhttp_bound_socket *sock)
{
    struct timeval idle = {HTTP_RESUME_IDLE_S, 0};

    s->http_listener = evhttp_bound_socket_get_listener(sock);
    s->http_pause.resume = evtimer_new(base, on_http_resume, s);
    if (s->http_pause.resume == NULL || evtimer_add(s->http_pause.resume, &idle) != 0)
        return MSV_ERR_NOMEM;
    evconnlistener_set_error_cb(s->http_listener, on_http_accept_error);
    return MSV_OK;
}

/* The admin API if [http] admin_token_file names a token; logs whether it is on. */
static msv_err start_admin_api(struct msv_server *s, struct msv_http_conns *t)
{
    char why[1200] = "";

    if (msv_admin_api_open(&s->cfg, s, &t->admin, why, sizeof(why)) != MSV_OK) {
        msv_log(MSV_LOG_ERROR, "admin_api_refused", "reason=\"%s\"", why);
        return MSV_ERR_INVALID;
    }
    if (t->admin != NULL)
        msv_admin_api_register(t->admin, s->http);
    if (s->cfg.http_admin_token_file[0] != '\0')
        msv_log(t->admin != NULL ? MSV_LOG_INFO : MSV_LOG_WARN, "admin_api", "state=%s file=\"%s\"",
                t->admin != NULL ? "on" : "off (no such file)", s->cfg.http_admin_token_file);
    return MSV_OK;
}

msv_err msv_http_start(struct msv_server *s)
{
    struct evhttp_bound_socket *sock;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    struct timeval second = {1, 0};
    struct msv_http_conns *t = calloc(1, sizeof(*t));

    pthread_condattr_t monotonic;

    s->http_conns = t;
    if (t == NULL)
        return MSV_ERR_NOMEM;
    t->srv = s;
    pthread_mutex_init(&t->check.lock, NULL);
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&t->check.done, &monotonic);
    pthread_condattr_destroy(&monotonic);
    if ((t->base = event_base_new()) == NULL)
        return MSV_ERR_NOMEM;
    if (pthread_create(&t->check.thread, NULL, check_main, t) != 0)
        return MSV_ERR_NOMEM;
    t->check.started = 1;
    t->sweep = event_new(t->base, -1, EV_PERSIST, on_sweep, s);
    t->stop = event_new(t->base, -1, 0, on_stop, t);
    s->http = evhttp_new(t->base);
    if (s->http == NULL || t->sweep == NULL || t->stop == NULL || event_add(t->sweep, &second) != 0)
        return MSV_ERR_NOMEM;
    if (start_admin_api(s, t) != MSV_OK)
        return MSV_ERR_INVALID;
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
                                            (t->admin != NULL ? EVHTTP_REQ_POST : 0));
    evhttp_set_timeout(s->http, (int)s->cfg.http_request_timeout_s);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->cfg.http_max_header_bytes);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->cfg.http_max_header_bytes);
    evhttp_set_bevcb(s->http, new_conn, s);
    evhttp_set_cb(s->http, "/health", on_health, s);
    evhttp_set_cb(s->http, "/metrics", on_metrics, s);
    sock = evhttp_bind_socket_with_handle(s->http, s->cfg.http_host, s->cfg.http_port);
    if (sock == NULL)
        return MSV_ERR_IO;
    if (pause_on_accept_error(s, t->base, sock) != MSV_OK)
        return MSV_ERR_NOMEM;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &len) != 0)
        return MSV_ERR_IO;
    s->http_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                 : ((struct sockaddr_in6 *)&ss)->sin6_port);
    if (pthread_create(&t->thread, NULL, http_main, t) != 0)
        return MSV_ERR_NOMEM;
    t->started = 1;
    return MSV_OK;
}
