/* /health and Prometheus /metrics on the local HTTP port (evhttp, on worker 0's loop). */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "server/server.h"

static void on_health(struct evhttp_request *req, void *arg)
{
    struct msv_server *s = arg;
    struct evbuffer *out = evbuffer_new();
    uint64_t depth = 0;
    int store_ok = s->store->ops->queue_depth(s->store->impl, &depth) == MSV_OK;
    int commits_ok = !atomic_load(&s->commit_failing);
    int healthy = store_ok && commits_ok && !atomic_load(&s->stopping);

    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add_printf(
        out,
        "{\"status\":\"%s\",\"store\":\"%s\",\"commits\":\"%s\","
        "\"connections\":%llu,\"queue_depth\":%llu}\n",
        healthy ? "ok" : "unavailable", store_ok ? "ok" : "failing", commits_ok ? "ok" : "failing",
        (unsigned long long)atomic_load(&s->m.connections_open), (unsigned long long)depth);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, healthy ? HTTP_OK : 503, healthy ? "OK" : "Service Unavailable", out);
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
    M(auth_ok, "auth_ok_total", "counter", "Device authentications."),
    M(auth_failed, "auth_failed_total", "counter", "Failed device authentications."),
    M(registrations, "registrations_total", "counter", "Accounts created."),
    M(devices_added, "devices_added_total", "counter", "Devices registered."),
    M(devices_removed, "devices_removed_total", "counter", "Devices removed."),
    M(lookups, "lookups_total", "counter", "Handles looked up."),
    M(sends, "sends_total", "counter", "Send requests accepted for commit."),
    M(sealed_sends, "sealed_sends_total", "counter",
      "Sealed-sender sends accepted for commit (their sender unknown to the relay)."),
    M(envelopes_enqueued, "envelopes_enqueued_total", "counter", "Envelopes committed to queues."),
    M(envelopes_delivered, "envelopes_delivered_total", "counter", "Envelopes pushed to devices."),
    M(envelopes_acked, "envelopes_acked_total", "counter", "Envelopes acknowledged and deleted."),
    M(envelopes_expired, "envelopes_expired_total", "counter",
      "Envelopes deleted unread at expiry."),
    M(commit_batches, "commit_batches_total", "counter", "Group commits."),
    M(commit_failures, "commit_failures_total", "counter", "Group commits that failed."),
    M(rate_limited, "rate_limited_total", "counter", "Requests refused by a rate limit."),
    M(cluster_wakes_out, "cluster_wakeups_sent_total", "counter",
      "Wake-ups published for devices connected to other nodes."),
    M(cluster_wakes_in, "cluster_wakeups_received_total", "counter",
      "Wake-ups from other nodes for devices connected here."),
    M(cluster_connects, "cluster_redis_connects_total", "counter",
      "Connections to the cluster's Redis begun (two per node when all is well)."),
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
    M(stale_partial, "stale_answers_partial_total", "counter",
      "ERROR_STALE_DEVICES answers that listed only the handles that fit in a frame."),
    M(suspensions_in, "suspensions_told_total", "counter",
      "Suspensions told by missive-admin (control socket) or through the cluster's Redis."),
    M(blob_bytes_in, "blob_bytes_in_total", "counter", "Attachment bytes uploaded."),
    M(blob_bytes_out, "blob_bytes_out_total", "counter", "Attachment bytes downloaded."),
    M(blobs_expired, "blobs_expired_total", "counter", "Attachments deleted at expiry."),
    M(reads_paused, "reads_paused_total", "counter",
      "Times a connection's requests waited for its unsent answers to drain."),
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
    (void)s->store->ops->queue_depth(s->store->impl, &depth);
    for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
        _Atomic uint64_t *v = (_Atomic uint64_t *)((char *)&s->m + metrics[i].offset);

        metric(out, metrics[i].name, metrics[i].type, metrics[i].help, atomic_load(v));
    }
    metric(out, "queue_depth", "gauge", "Envelopes waiting in all queues.", depth);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
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

msv_err msv_http_start(struct msv_server *s, struct event_base *base)
{
    struct evhttp_bound_socket *sock;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    s->http = evhttp_new(base);
    if (s->http == NULL)
        return MSV_ERR_NOMEM;
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(s->http, 10);
    evhttp_set_cb(s->http, "/health", on_health, s);
    evhttp_set_cb(s->http, "/metrics", on_metrics, s);
    sock = evhttp_bind_socket_with_handle(s->http, s->cfg.http_host, s->cfg.http_port);
    if (sock == NULL)
        return MSV_ERR_IO;
    if (pause_on_accept_error(s, base, sock) != MSV_OK)
        return MSV_ERR_NOMEM;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &len) != 0)
        return MSV_ERR_IO;
    s->http_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                 : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return MSV_OK;
}

void msv_http_free(struct msv_server *s)
{
    if (s->http_pause.resume != NULL)
        event_free(s->http_pause.resume);
    s->http_pause.resume = NULL;
    if (s->http != NULL)
        evhttp_free(s->http); /* and its listener */
    s->http = NULL;
    s->http_listener = NULL;
}
