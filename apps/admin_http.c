/*
 * missive-admin --url: one request to a node's admin API (docs/missived.md, "The admin API")
 * with libevent's HTTP client, the token read from --token-file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "admin_http.h"
#include "server/admin_api.h"

#define ANSWER_MAX (1024 * 1024)
#define REQUEST_TIMEOUT_S 30

struct exchange {
    struct event_base *base;
    int status; /* 0: no answer */
    char *answer;
};

static void on_answer(struct evhttp_request *req, void *arg)
{
    struct exchange *x = arg;
    struct evbuffer *in;
    size_t len;

    event_base_loopexit(x->base, NULL); /* one answer is all: the connection is not kept */
    if (req == NULL || evhttp_request_get_response_code(req) == 0)
        return;
    in = evhttp_request_get_input_buffer(req);
    len = evbuffer_get_length(in);
    if (len > ANSWER_MAX || (x->answer = malloc(len + 1)) == NULL)
        return;
    if (evbuffer_remove(in, x->answer, len) != (int)len) {
        free(x->answer);
        x->answer = NULL;
        return;
    }
    x->answer[len] = '\0';
    x->status = evhttp_request_get_response_code(req);
}

/* The host and port of an http:// URL with no path beyond "/"; 0 (said) if it is not one. */
static int parse_url(const char *url, struct evhttp_uri **uri, int *port)
{
    const char *path;

    *uri = evhttp_uri_parse(url);
    path = *uri != NULL ? evhttp_uri_get_path(*uri) : NULL;
    if (*uri == NULL || evhttp_uri_get_scheme(*uri) == NULL ||
        strcmp(evhttp_uri_get_scheme(*uri), "http") != 0 || evhttp_uri_get_host(*uri) == NULL ||
        (path != NULL && path[0] != '\0' && strcmp(path, "/") != 0) ||
        evhttp_uri_get_query(*uri) != NULL) {
        fprintf(stderr, "missive-admin: --url takes http://HOST:PORT (the node's HTTP port)\n");
        return 0;
    }
    *port = evhttp_uri_get_port(*uri) > 0 ? evhttp_uri_get_port(*uri) : 80;
    return 1;
}

/* Sends the request; x says what came back. */
static int send_request(struct evhttp_uri *uri, int port, const char *token, int post,
                        const char *path, const char *body, struct exchange *x)
{
    struct event_base *base = event_base_new();
    struct evhttp_connection *conn = NULL;
    struct evhttp_request *req = NULL;
    char auth[MSV_ADMIN_TOKEN_BUF + 16];
    int ok = 0;

    x->base = base;
    if (base != NULL)
        conn = evhttp_connection_base_new(base, NULL, evhttp_uri_get_host(uri), (uint16_t)port);
    if (conn != NULL)
        req = evhttp_request_new(on_answer, x);
    if (req != NULL) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);

        evhttp_connection_set_timeout(conn, REQUEST_TIMEOUT_S);
        snprintf(auth, sizeof(auth), "Bearer %s", token);
        ok = evhttp_add_header(h, "Host", evhttp_uri_get_host(uri)) == 0 &&
             evhttp_add_header(h, "Authorization", auth) == 0 &&
             evhttp_add_header(h, "Content-Type", "application/json") == 0 &&
             evhttp_add_header(h, "Connection", "close") == 0 &&
             (body == NULL ||
              evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body)) == 0);
        sodium_memzero(auth, sizeof(auth));
        /* evhttp_make_request takes req whether it succeeds or not */
        ok = ok &&
             evhttp_make_request(conn, req, post ? EVHTTP_REQ_POST : EVHTTP_REQ_GET, path) == 0;
        if (!ok)
            req = NULL;
    }
    if (ok)
        event_base_dispatch(base);
    if (conn != NULL)
        evhttp_connection_free(conn);
    if (base != NULL)
        event_base_free(base);
    return ok;
}

int admin_http(const char *url, const char *token_file, int post, const char *path,
               const char *body, int *status, char **answer)
{
    struct exchange x = {NULL, 0, NULL};
    struct evhttp_uri *uri = NULL;
    char token[MSV_ADMIN_TOKEN_BUF], why[1200];
    size_t len = 0;
    int port = 0, ok;

    if (!parse_url(url, &uri, &port)) {
        evhttp_uri_free(uri);
        return 0;
    }
    if (msv_admin_token_load(token_file, token, sizeof(token), &len, why, sizeof(why)) != MSV_OK) {
        fprintf(stderr, "missive-admin: %s\n", why);
        evhttp_uri_free(uri);
        return 0;
    }
    token[len] = '\0';
    ok = send_request(uri, port, token, post, path, body, &x);
    sodium_memzero(token, sizeof(token));
    evhttp_uri_free(uri);
    if (!ok || x.status == 0) {
        fprintf(stderr, "missive-admin: no answer from %s\n", url);
        free(x.answer);
        return 0;
    }
    *status = x.status;
    *answer = x.answer;
    return 1;
}
