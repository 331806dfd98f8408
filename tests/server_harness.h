/* Starting real missived processes on loopback, and driving them as devices, for the tests. */
#ifndef MSV_TEST_SERVER_HARNESS_H
#define MSV_TEST_SERVER_HARNESS_H

#include <stdint.h>
#include <sys/types.h>

#include "client/conn.h"
#include "client/requests.h"
#include "missive/crypto.h"

struct test_server {
    pid_t pid;
    char dir[64];
    char log[128];
    char extra[1024];      /* more INI lines for the config */
    unsigned leaf_version; /* [directory] leaf_version at every start; 0: the default */
    uint16_t port, http_port;
    int port_lock[2]; /* held while the ports are this server's (0: none) */
    uint8_t fingerprint[32];
};

struct test_device {
    struct msv_identity *id;
    uint64_t device_id;
    char handle[64];
    struct msv_conn *conn;
};

#define TEST_TIMEOUT_MS 10000
#define TEST_PASSWORD "correct horse battery"

/* A fresh data directory; extra (may be NULL) is appended to the config. */
void test_server_init(struct test_server *s, const char *extra);
/* Starts missived; it gets SIGTERM when the thread that started it ends (call it from the
 * test's main thread, not from one that ends before the test), and so with the test. */
void test_server_start(struct test_server *s);
/* SIGTERM and wait; asserts a clean exit. */
void test_server_stop(struct test_server *s);
void test_server_kill(struct test_server *s);
/* Stops if running and removes the data directory. */
void test_server_cleanup(struct test_server *s);
/* Sets the server's clock (ms since the epoch). */
void test_server_set_clock(struct test_server *s, int64_t ms);
/* The last verification code the server logged for handle. */
void test_server_code(struct test_server *s, const char *handle, char code[7]);
/* GET path on the HTTP port; returns the status and fills body. */
int test_server_http(struct test_server *s, const char *path, char *body, size_t len);
/* The value of missived_NAME on /metrics (the test fails if it is not there). */
unsigned long long test_server_metric(struct test_server *s, const char *name);

/* What the relay holds for devices, read from its database (the server may be running). */
struct test_queued {
    uint64_t device_id, sender_device;
    char sender_handle[128];
    uint32_t suite;
    uint8_t *ciphertext;
    size_t len;
};

/* Queues wire for device as from sender_device of sender_handle (the server stopped). */
void test_server_enqueue(struct test_server *s, uint64_t device, uint64_t sender_device,
                         const char *sender_handle, int suite, const uint8_t *wire, size_t len);
/* Every queued envelope, oldest first; free with test_queued_free(). */
size_t test_server_queued(struct test_server *s, struct test_queued **rows);
void test_queued_free(struct test_queued *rows, size_t n);

struct msv_conn *test_connect(struct test_server *s);
/* One frame's round trip; asserts an answer arrived. */
msv_frame *test_request(struct msv_conn *c, msv_frame *req);
/* Registers handle with a new modern device (connected and authenticated). */
void test_register(struct test_server *s, const char *handle, struct test_device *d);
/* The same with a device of suite that also speaks the suites in also. */
void test_register_suites(struct test_server *s, const char *handle, struct test_device *d,
                          enum msv_suite suite, unsigned also);
/* Adds a device to handle's account, approved by approver (connected and authenticated). */
void test_add_device(struct test_server *s, const char *handle, struct test_device *approver,
                     struct test_device *d);
/* A device added to handle's account with its password, waiting for approval (not connected). */
void test_enroll_pending(struct test_server *s, const char *handle, struct test_device *d);
/* Approves a pending device from an authenticated one; returns the answer (caller frees). */
/* by's account removes device_id (the answer). */
msv_frame *test_remove_device(struct test_device *by, uint64_t device_id);
msv_frame *test_approve(struct test_device *approver, uint64_t device_id);
/* The same with the approver's approval record of the device whose key is key (docs/
 * transparency.md, "Signed device lists"), as a client sends it. */
msv_frame *test_approve_key(struct test_device *approver, uint64_t device_id,
                            const struct msv_identity *key);
void test_device_connect(struct test_server *s, struct test_device *d);
void test_device_free(struct test_device *d);

/*
 * Seals text for each of the n target devices (in the best suite both
 * speak) and sends it from d to the given handles. Returns the server's answer (caller frees).
 */
msv_frame *test_send(struct test_device *from, const char **handles, size_t n_handles,
                     struct test_device **to, size_t n_to, const char *text);
/* The same to one device of one handle, without waiting: its answer carries request_id. */
void test_send_begin(struct test_device *from, struct test_device *to, const char *text,
                     uint64_t request_id);
/* test_send without waiting: its answer carries request_id. */
void test_send_many_begin(struct test_device *from, const char **handles, size_t n_handles,
                          struct test_device **to, size_t n_to, const char *text,
                          uint64_t request_id);
/*
 * Waits for the next Deliver on d, opens it as from's and checks the text;
 * returns its queue id (0 if nothing arrived within timeout_ms). Notices
 * from the server (sender 0) are skipped and acknowledged.
 */
uint64_t test_expect_message(struct test_device *d, struct test_device *from, const char *text,
                             int timeout_ms);
void test_ack(struct test_device *d, uint64_t queue_id);

/* The answer's error code (0 if it is not an Error). */
int test_error_code(const msv_frame *f);
/* Checks that f is Ok, or an Error with code; frees f. */
void test_expect_ok(msv_frame *f);
void test_expect_error(msv_frame *f, int code);

struct msv_client;
/*
 * A client library device of handle, its data in name under the server's
 * directory, registered (the server's certificate pinned on first use).
 * Caller frees with msv_client_close().
 */
struct msv_client *test_client_for(struct test_server *s, const char *name, const char *handle);
/* a and b each the other's contact: their first messages are no message requests. */
void test_acquaint(struct msv_client *a, struct msv_client *b);
/* The same with keys of suite and of the suites in also (a bit set of MSV_SUITE_BIT). */
struct msv_client *test_client_of_suites(struct test_server *s, const char *name,
                                         const char *handle, enum msv_suite suite, unsigned also);

#endif
