/* /health and Prometheus /metrics on the local HTTP port (evhttp, on worker 0's loop). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "server/server.h"

static void on_health(struct evhttp_request *req, void *arg)
{
    struct msv_server *s = arg;
    struct evbuffer *out = evbuffer_new();
    uint64_t depth = 0;
    int store_ok = s->store->ops->queue_depth(s->store->impl, &depth) == MSV_OK;
    int healthy = store_ok && !atomic_load(&s->stopping);

    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add_printf(out,
                        "{\"status\":\"%s\",\"store\":\"%s\",\"connections\":%llu,"
                        "\"queue_depth\":%llu}\n",
                        healthy ? "ok" : "unavailable", store_ok ? "ok" : "failing",
                        (unsigned long long)atomic_load(&s->m.connections_open),
                        (unsigned long long)depth);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, healthy ? HTTP_OK : 503, healthy ? "OK" : "Service Unavailable", out);
    evbuffer_free(out);
}

static void metric(struct evbuffer *out, const char *name, const char *type, const char *help,
                   uint64_t value)
{
    evbuffer_add_printf(out, "# HELP missived_%s %s\n# TYPE missived_%s %s\nmissived_%s %llu\n",
                        name, help, name, type, name, (unsigned long long)value);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct msv_server *s = arg;
    struct msv_metrics *m = &s->m;
    struct evbuffer *out = evbuffer_new();
    uint64_t depth = 0;

    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    (void)s->store->ops->queue_depth(s->store->impl, &depth);
    metric(out, "connections_open", "gauge", "Open client connections.",
           atomic_load(&m->connections_open));
    metric(out, "connections_total", "counter", "Accepted connections.",
           atomic_load(&m->connections_total));
    metric(out, "frames_in_total", "counter", "Frames read.", atomic_load(&m->frames_in));
    metric(out, "frames_rejected_total", "counter", "Malformed frames (connection closed).",
           atomic_load(&m->frames_rejected));
    metric(out, "auth_ok_total", "counter", "Device authentications.", atomic_load(&m->auth_ok));
    metric(out, "auth_failed_total", "counter", "Failed device authentications.",
           atomic_load(&m->auth_failed));
    metric(out, "registrations_total", "counter", "Accounts created.",
           atomic_load(&m->registrations));
    metric(out, "devices_added_total", "counter", "Devices registered.",
           atomic_load(&m->devices_added));
    metric(out, "devices_removed_total", "counter", "Devices removed.",
           atomic_load(&m->devices_removed));
    metric(out, "lookups_total", "counter", "Handles looked up.", atomic_load(&m->lookups));
    metric(out, "sends_total", "counter", "Send requests accepted for commit.",
           atomic_load(&m->sends));
    metric(out, "envelopes_enqueued_total", "counter", "Envelopes committed to queues.",
           atomic_load(&m->envelopes_enqueued));
    metric(out, "envelopes_delivered_total", "counter", "Envelopes pushed to devices.",
           atomic_load(&m->envelopes_delivered));
    metric(out, "envelopes_acked_total", "counter", "Envelopes acknowledged and deleted.",
           atomic_load(&m->envelopes_acked));
    metric(out, "envelopes_expired_total", "counter", "Envelopes deleted unread at expiry.",
           atomic_load(&m->envelopes_expired));
    metric(out, "commit_batches_total", "counter", "Group commits.",
           atomic_load(&m->commit_batches));
    metric(out, "commit_failures_total", "counter", "Group commits that failed.",
           atomic_load(&m->commit_failures));
    metric(out, "rate_limited_total", "counter", "Requests refused by a rate limit.",
           atomic_load(&m->rate_limited));
    metric(out, "blob_bytes_in_total", "counter", "Attachment bytes uploaded.",
           atomic_load(&m->blob_bytes_in));
    metric(out, "blob_bytes_out_total", "counter", "Attachment bytes downloaded.",
           atomic_load(&m->blob_bytes_out));
    metric(out, "blobs_expired_total", "counter", "Attachments deleted at expiry.",
           atomic_load(&m->blobs_expired));
    metric(out, "reads_paused_total", "counter",
           "Times a connection's requests waited for its unsent answers to drain.",
           atomic_load(&m->reads_paused));
    metric(out, "queue_depth", "gauge", "Envelopes waiting in all queues.", depth);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
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
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &len) != 0)
        return MSV_ERR_IO;
    s->http_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                 : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return MSV_OK;
}
