/*
 * A client's connection to missived: TLS 1.3 with the server certificate
 * pinned by its SHA-256 fingerprint, frames in and out, requests matched to
 * their answers. Blocking, with timeouts; one thread uses a connection.
 * The program must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)), as for any
 * OpenSSL socket: a server that goes away mid-write is then an error that
 * the caller sees (and retries), not the end of the process.
 */
#ifndef MSV_CLIENT_CONN_H
#define MSV_CLIENT_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "missive/crypto.h"
#include "wire/frame.h"

struct msv_conn;

/*
 * Connects and completes the TLS handshake. With pin set, a server whose
 * certificate has another fingerprint is MSV_ERR_AUTH; with pin NULL, any
 * certificate is accepted (trust on first use: read it with
 * msv_conn_fingerprint and keep it). A server that refuses, or does not
 * complete the handshake within timeout_ms, is MSV_ERR_IO. Caller frees with
 * msv_conn_close().
 */
MSV_MUST_CHECK msv_err msv_conn_open(const char *host, uint16_t port, const uint8_t pin[32],
                                     int timeout_ms, struct msv_conn **out);
void msv_conn_close(struct msv_conn *c);
void msv_conn_fingerprint(const struct msv_conn *c, uint8_t out[32]);
/*
 * The socket, for an event loop to poll: readable means msv_conn_recv() may
 * have a frame. Pushes that msv_conn_request() set aside are not on it; call
 * msv_conn_recv() with timeout 0 after each request to take them.
 */
int msv_conn_fd(const struct msv_conn *c);

MSV_MUST_CHECK msv_err msv_conn_send(struct msv_conn *c, const msv_frame *f);
/* Sends raw bytes as they are (tests use it to send malformed frames). */
MSV_MUST_CHECK msv_err msv_conn_send_raw(struct msv_conn *c, const uint8_t *p, size_t len);

/*
 * Next frame: first any push that msv_conn_request() set aside, then the
 * network. MSV_ERR_AGAIN when nothing arrived within timeout_ms, MSV_ERR_IO
 * when the server closed the connection. Caller frees *out with msv_frame_free().
 */
MSV_MUST_CHECK msv_err msv_conn_recv(struct msv_conn *c, int timeout_ms, msv_frame **out);
/* Sends req under a new request id (*id) without waiting: its answer comes by msv_conn_recv(). */
MSV_MUST_CHECK msv_err msv_conn_send_request(struct msv_conn *c, msv_frame *req, uint64_t *id);

/*
 * Sends req with a fresh request id and waits for the frame that answers it;
 * frames without a request id (pushes) that arrive meanwhile are kept for
 * msv_conn_recv(), up to 1024 frames or 16 MiB: pushes beyond that are
 * dropped unacknowledged (see msv_conn_has_dropped). No answer within
 * timeout_ms is MSV_ERR_IO, as is a lost connection. Caller frees *resp with
 * msv_frame_free().
 */
MSV_MUST_CHECK msv_err msv_conn_request(struct msv_conn *c, msv_frame *req, int timeout_ms,
                                        msv_frame **resp);
/*
 * The connection is taken as lost from here on (every later request is MSV_ERR_IO at once): its
 * server broke the protocol (an answer of a kind no request of that kind gets), so nothing more
 * it says on it is read.
 */
void msv_conn_break(struct msv_conn *c);
/*
 * Whether msv_conn_request() dropped pushes: the relay holds them as
 * delivered on this connection, so only a new connection brings them again
 * (the caller hangs up once it has taken what was kept).
 */
int msv_conn_has_dropped(const struct msv_conn *c);
/*
 * The server's words (NULL if none, or without memory) if it said, in a frame read so far (while
 * msv_conn_request() waited, or by msv_conn_recv()), that it closes this connection because a
 * newer connection of its device took its deliveries (ERROR_AUTH under request id 0,
 * Error.replaced). A push read while a request waited is still kept for msv_conn_recv().
 */
const char *msv_conn_ended_why(const struct msv_conn *c);

/* Gives c the descriptor of a lock to hold for as long as c: closed with c (or a later one). */
void msv_conn_hold(struct msv_conn *c, int lock_fd);

/* Hello, Challenge, Auth: proves the connection belongs to device_id of handle; on a
 * refusal, why (may be NULL) receives the server's reason. MSV_ERR_NOT_FOUND: the account
 * was deleted (ERROR_ACCOUNT_DELETED). */
MSV_MUST_CHECK msv_err msv_conn_auth(struct msv_conn *c, const char *handle, uint64_t device_id,
                                     const struct msv_identity *id, int timeout_ms, char *why,
                                     size_t why_len);
/* The same, for requests alone when requests_only is set (docs/wire.md, "Connections for
 * requests"): the server pushes nothing on it, and it neither replaces the device's
 * connection nor is replaced by a newer one. MSV_ERR_AGAIN: the device has as many of them
 * open as the server allows (ERROR_RATE_LIMITED). */
MSV_MUST_CHECK msv_err msv_conn_auth_as(struct msv_conn *c, const char *handle, uint64_t device_id,
                                        const struct msv_identity *id, int requests_only,
                                        int timeout_ms, char *why, size_t why_len);

#endif
