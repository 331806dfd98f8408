#include "server_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "client/client.h"
#include "missive/kt.h"
#include "missive/util.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/*
 * A port of its own for a test server, kept for the whole test: a restart binds the same
 * port, which must not be taken meanwhile. A port the kernel handed out (listen_port 0) is
 * in the ephemeral range, where any outgoing connection of a test running beside this one
 * may take it while the server is stopped; so the ports come from just below that range,
 * each held by a lock on a file named after it, so that two tests never pick the same one.
 */
static int port_free(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, ok;

    if (fd < 0)
        return 0;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
         bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static uint16_t reserve_port(int *lock_fd)
{
    char dir[64], path[96];
    unsigned low = 32768, high = 60999, span;
    struct timespec ts;
    unsigned seed;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

    if (f != NULL) {
        if (fscanf(f, "%u %u", &low, &high) != 2)
            low = 32768;
        fclose(f);
    }
    if (low < 2048)
        return 0; /* no room below the ephemeral range: the kernel's choice */
    span = low - 1024 < 8192 ? low - 1024 : 8192;
    snprintf(dir, sizeof(dir), "/tmp/msv-test-ports-%u", (unsigned)getuid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = (unsigned)getpid() * 2654435761u ^ (unsigned)ts.tv_nsec;
    for (int i = 0; i < 500; i++) {
        uint16_t port;
        int fd;

        seed = seed * 1103515245u + 12345u;
        port = (uint16_t)(low - span + (seed >> 8) % span);
        snprintf(path, sizeof(path), "%s/%u", dir, (unsigned)port);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && port_free(port)) {
            *lock_fd = fd;
            return port;
        }
        close(fd);
    }
    return 0;
}

static void release_ports(struct test_server *s)
{
    for (int i = 0; i < 2; i++) {
        if (s->port_lock[i] > 0)
            close(s->port_lock[i]);
        s->port_lock[i] = 0;
    }
}

void test_server_init(struct test_server *s, const char *extra)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "/tmp/msv-server-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->log, sizeof(s->log), "%s/missived.log", s->dir);
    snprintf(s->extra, sizeof(s->extra), "%s", extra ? extra : "");
}

static void write_config(struct test_server *s, char *path, size_t len)
{
    FILE *f;

    snprintf(path, len, "%s/missived.conf", s->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    if (s->leaf_version != 0)
        fprintf(f, "[directory]\nleaf_version = %u\n", s->leaf_version);
    fprintf(f,
            "[server]\ndata_dir = %s/data\nlisten_port = %u\nworkers = 2\n"
            "[http]\nlisten_port = %u\n"
            "[accounts]\nargon2_memlimit_kib = 8\nargon2_opslimit = 1\n"
            "[relay]\nexpiry_interval_ms = 200\n"
            "[testing]\nclock_file = %s/clock\n"
            "%s\n",
            /* a restart keeps the ports, so that clients holding the address find it again */
            s->dir, (unsigned)s->port, (unsigned)s->http_port, s->dir, s->extra);
    assert_int_equal(fclose(f), 0);
}

static int read_ports(struct test_server *s)
{
    char path[128], hex[80];
    FILE *f;
    unsigned tls = 0, http = 0;
    size_t n = 0;
    int ok;

    snprintf(path, sizeof(path), "%s/data/missived.ports", s->dir);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    ok = fscanf(f, "tls %u\nhttp %u\n", &tls, &http) == 2;
    fclose(f);
    if (!ok)
        return 0;
    s->port = (uint16_t)tls;
    s->http_port = (uint16_t)http;
    snprintf(path, sizeof(path), "%s/data/server.fingerprint", s->dir);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%79s", hex), 1);
    fclose(f);
    assert_int_equal(msv_hex_decode(hex, s->fingerprint, 32, &n), MSV_OK);
    return 1;
}

void test_server_start(struct test_server *s)
{
    char config[128], ports[128];
    pid_t test = getpid();

    if (s->port == 0 && s->http_port == 0) {
        s->port = reserve_port(&s->port_lock[0]);
        s->http_port = reserve_port(&s->port_lock[1]);
    }
    write_config(s, config, sizeof(config));
    snprintf(ports, sizeof(ports), "%s/data/missived.ports", s->dir);
    unlink(ports);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);

        /* The server lives no longer than its test, however the test ends (a failed
         * assertion, ctest's SIGKILL on a timeout); a test gone before prctl took effect
         * shows as a changed parent. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != test)
            _exit(127);
        dup2(fd, STDERR_FILENO);
        dup2(fd, STDOUT_FILENO);
        execl(MSV_MISSIVED, "missived", "--config", config, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int status;

        if (read_ports(s))
            return;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid)
            fail_msg("missived exited during start-up; see %s", s->log);
        sleep_ms(20);
    }
    fail_msg("missived did not start within 10 s; see %s", s->log);
}

void test_server_stop(struct test_server *s)
{
    int status = 0;

    if (s->pid <= 0)
        return;
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    assert_int_equal(waitpid(s->pid, &status, 0), s->pid);
    s->pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("missived did not stop cleanly (status %d); see %s", status, s->log);
}

void test_server_kill(struct test_server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

void test_server_cleanup(struct test_server *s)
{
    char cmd[128];

    test_server_stop(s);
    release_ports(s);
    if (getenv("MSV_KEEP_TEST_DIRS") == NULL) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
        assert_int_equal(system(cmd), 0);
    }
}

void test_server_set_clock(struct test_server *s, int64_t ms)
{
    char path[128], tmp[140];
    FILE *f;

    snprintf(path, sizeof(path), "%s/clock", s->dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "%lld\n", (long long)ms);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

void test_server_code(struct test_server *s, const char *handle, char code[7])
{
    char line[1024], want[128];
    FILE *f = fopen(s->log, "r");
    int found = 0;

    assert_non_null(f);
    snprintf(want, sizeof(want), "event=verification_code handle=%s code=", handle);
    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = strstr(line, want);

        if (p != NULL) {
            memcpy(code, p + strlen(want), 6);
            code[6] = '\0';
            found = 1;
        }
    }
    fclose(f);
    if (!found)
        fail_msg("no verification code for %s in %s", handle, s->log);
}

int test_server_http(struct test_server *s, const char *path, char *body, size_t len)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->http_port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;
    char req[256];
    size_t got = 0;
    ssize_t n;

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while (got + 1 < len && (n = read(fd, body + got, len - got - 1)) > 0)
        got += (size_t)n;
    body[got] = '\0';
    close(fd);
    assert_int_equal(sscanf(body, "HTTP/1.%*d %d", &status), 1);
    return status;
}

unsigned long long test_server_metric(struct test_server *s, const char *name)
{
    char body[32768], want[128], *p;
    unsigned long long v = 0;

    assert_int_equal(test_server_http(s, "/metrics", body, sizeof(body)), 200);
    snprintf(want, sizeof(want), "\nmissived_%s ", name);
    p = strstr(body, want);
    if (p == NULL)
        fail_msg("no metric %s", name);
    assert_int_equal(sscanf(p + strlen(want), "%llu", &v), 1);
    return v;
}

void test_server_enqueue(struct test_server *s, uint64_t device, uint64_t sender_device,
                         const char *sender_handle, int suite, const uint8_t *wire, size_t len)
{
    char path[128];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, TEST_TIMEOUT_MS);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO queue (device_id, sender_device, "
                                        "sender_handle, suite, ciphertext, enqueued_ms, "
                                        "expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?);",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)device);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)sender_device);
    sqlite3_bind_text(st, 3, sender_handle, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, suite);
    sqlite3_bind_blob(st, 5, wire, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, msv_wall_ms());
    sqlite3_bind_int64(st, 7, msv_wall_ms() + 86400000LL);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

size_t test_server_queued(struct test_server *s, struct test_queued **rows)
{
    char path[128];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    size_t n = 0, cap = 16;

    snprintf(path, sizeof(path), "%s/data/missive.db", s->dir);
    *rows = calloc(cap, sizeof(**rows));
    assert_non_null(*rows);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, TEST_TIMEOUT_MS);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT q.device_id, q.sender_device, q.sender_handle,"
                                        " q.suite, CASE WHEN q.body_id IS NULL THEN q.ciphertext"
                                        " ELSE b.body END FROM queue q LEFT JOIN queue_bodies b"
                                        " ON b.id = q.body_id ORDER BY q.id;",
                                        -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct test_queued *r;

        if (n == cap) {
            cap *= 2;
            *rows = realloc(*rows, cap * sizeof(**rows));
            assert_non_null(*rows);
        }
        r = &(*rows)[n++];
        r->device_id = (uint64_t)sqlite3_column_int64(st, 0);
        r->sender_device = (uint64_t)sqlite3_column_int64(st, 1);
        snprintf(r->sender_handle, sizeof(r->sender_handle), "%s",
                 (const char *)sqlite3_column_text(st, 2));
        r->suite = (uint32_t)sqlite3_column_int64(st, 3);
        r->len = (size_t)sqlite3_column_bytes(st, 4);
        r->ciphertext = malloc(r->len + 1);
        assert_non_null(r->ciphertext);
        memcpy(r->ciphertext, sqlite3_column_blob(st, 4), r->len);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

void test_queued_free(struct test_queued *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].ciphertext);
    free(rows);
}

struct msv_conn *test_connect(struct test_server *s)
{
    struct msv_conn *c = NULL;

    assert_int_equal(msv_conn_open("127.0.0.1", s->port, s->fingerprint, TEST_TIMEOUT_MS, &c),
                     MSV_OK);
    return c;
}

msv_frame *test_request(struct msv_conn *c, msv_frame *req)
{
    msv_frame *resp = NULL;

    assert_int_equal(msv_conn_request(c, req, TEST_TIMEOUT_MS, &resp), MSV_OK);
    return resp;
}

void test_device_connect(struct test_server *s, struct test_device *d)
{
    msv_conn_close(d->conn);
    d->conn = test_connect(s);
    assert_int_equal(
        msv_conn_auth(d->conn, d->handle, d->device_id, d->id, TEST_TIMEOUT_MS, NULL, 0), MSV_OK);
}

/* A new modern device for handle, registered by add (or, for a new account, by a code). */
static void enroll(struct test_server *s, const char *handle, struct test_device *d, int add,
                   enum msv_suite suite, unsigned also)
{
    struct msv_conn *c = test_connect(s);
    struct msv_refusal why = {0};
    char code[7];
    msv_err err;

    memset(d, 0, sizeof(*d));
    snprintf(d->handle, sizeof(d->handle), "%s", handle);
    assert_int_equal(msv_identity_generate_suites(suite, also, 0, &d->id), MSV_OK);
    if (add) {
        err = msv_request_add_device(c, handle, TEST_PASSWORD, d->id, NULL, "token",
                                     TEST_TIMEOUT_MS, &d->device_id, &why);
    } else {
        assert_int_equal(msv_request_register_start(c, handle, NULL, TEST_TIMEOUT_MS, &why),
                         MSV_OK);
        test_server_code(s, handle, code);
        err = msv_request_register_finish(c, handle, NULL, code, TEST_PASSWORD, d->id, NULL,
                                          "token", TEST_TIMEOUT_MS, &d->device_id, &why);
    }
    if (err != MSV_OK)
        fail_msg("enrolling %s: %s (%s)", handle, msv_strerror(err), why.message);
    msv_conn_close(c);
}

void test_register(struct test_server *s, const char *handle, struct test_device *d)
{
    test_register_suites(s, handle, d, MSV_SUITE_MODERN, 0);
}

void test_register_suites(struct test_server *s, const char *handle, struct test_device *d,
                          enum msv_suite suite, unsigned also)
{
    enroll(s, handle, d, 0, suite, also);
    test_device_connect(s, d);
}

msv_frame *test_remove_device(struct test_device *by, uint64_t device_id)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;

    rm.device_id = device_id;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    return test_request(by->conn, &req);
}

msv_frame *test_approve(struct test_device *approver, uint64_t device_id)
{
    return test_approve_key(approver, device_id, NULL);
}

msv_frame *test_approve_key(struct test_device *approver, uint64_t device_id,
                            const struct msv_identity *key)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ApproveDevice ap = MSV__WIRE__APPROVE_DEVICE__INIT;
    uint8_t hash[32], sig[MSV_KT_APPROVAL_SIG_MAX];
    size_t len = 0;

    ap.device_id = device_id;
    if (key != NULL) {
        msv_public_identity_hash(msv_identity_public(key), hash);
        assert_int_equal(msv_kt_approval_sign(approver->id, MSV_KT_APPROVED, device_id, hash,
                                              approver->device_id, sig, &len),
                         MSV_OK);
        ap.chain_approval = (ProtobufCBinaryData){len, sig};
    }
    req.body_case = MSV__WIRE__FRAME__BODY_APPROVE_DEVICE;
    req.approve_device = &ap;
    return test_request(approver->conn, &req);
}

void test_enroll_pending(struct test_server *s, const char *handle, struct test_device *d)
{
    enroll(s, handle, d, 1, MSV_SUITE_MODERN, 0);
}

void test_add_device(struct test_server *s, const char *handle, struct test_device *approver,
                     struct test_device *d)
{
    msv_frame *r;

    enroll(s, handle, d, 1, MSV_SUITE_MODERN, 0);
    r = test_approve_key(approver, d->device_id, d->id);
    assert_int_equal(r->body_case, MSV__WIRE__FRAME__BODY_OK);
    msv_frame_free(r);
    test_device_connect(s, d);
}

void test_device_free(struct test_device *d)
{
    msv_conn_close(d->conn);
    msv_identity_free(d->id);
    memset(d, 0, sizeof(*d));
}

/* Seals and sends; with resp, waits for the answer, else sends with request_id and returns. */
static void send_sealed(struct test_device *from, const char **handles, size_t n_handles,
                        struct test_device **to, size_t n_to, const char *text, uint64_t request_id,
                        msv_frame **resp)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__SendRequest send = MSV__WIRE__SEND_REQUEST__INIT;
    Msv__Wire__Envelope env[16], *envs[16];
    ProtobufCBinaryData hs[16];
    uint8_t id[16], *wires[16] = {0};

    assert_true(n_to <= 16 && n_handles <= 16);
    msv_random_bytes(id, sizeof(id));
    for (size_t i = 0; i < n_handles; i++) {
        hs[i].data = (uint8_t *)handles[i];
        hs[i].len = strlen(handles[i]);
    }
    for (size_t i = 0; i < n_to; i++) {
        size_t len = 0;

        assert_int_equal(msv_seal(from->id, msv_identity_public(to[i]->id), (const uint8_t *)text,
                                  strlen(text), &wires[i], &len),
                         MSV_OK);
        msv__wire__envelope__init(&env[i]);
        env[i].recipient_device = to[i]->device_id;
        env[i].suite = msv_envelope_suite(wires[i], len); /* the best both speak */
        env[i].ciphertext.data = wires[i];
        env[i].ciphertext.len = len;
        envs[i] = &env[i];
    }
    send.message_id.data = id;
    send.message_id.len = 16;
    send.n_recipient_handles = n_handles;
    send.recipient_handles = hs;
    send.n_envelopes = n_to;
    send.envelopes = envs;
    req.body_case = MSV__WIRE__FRAME__BODY_SEND;
    req.send = &send;
    if (resp != NULL) {
        *resp = test_request(from->conn, &req);
    } else {
        req.request_id = request_id;
        assert_int_equal(msv_conn_send(from->conn, &req), MSV_OK);
    }
    for (size_t i = 0; i < n_to; i++)
        free(wires[i]);
}

msv_frame *test_send(struct test_device *from, const char **handles, size_t n_handles,
                     struct test_device **to, size_t n_to, const char *text)
{
    msv_frame *resp = NULL;

    send_sealed(from, handles, n_handles, to, n_to, text, 0, &resp);
    return resp;
}

void test_send_begin(struct test_device *from, struct test_device *to, const char *text,
                     uint64_t request_id)
{
    const char *handle = to->handle;

    send_sealed(from, &handle, 1, &to, 1, text, request_id, NULL);
}

void test_send_many_begin(struct test_device *from, const char **handles, size_t n_handles,
                          struct test_device **to, size_t n_to, const char *text,
                          uint64_t request_id)
{
    send_sealed(from, handles, n_handles, to, n_to, text, request_id, NULL);
}

uint64_t test_expect_message(struct test_device *d, struct test_device *from, const char *text,
                             int timeout_ms)
{
    for (;;) {
        msv_frame *f = NULL;
        uint8_t *pt = NULL;
        size_t pt_len = 0;
        uint64_t qid;
        msv_err err = msv_conn_recv(d->conn, timeout_ms, &f);

        if (err == MSV_ERR_AGAIN)
            return 0;
        assert_int_equal(err, MSV_OK);
        if (f->body_case != MSV__WIRE__FRAME__BODY_DELIVER) {
            msv_frame_free(f);
            continue;
        }
        qid = f->deliver->queue_id;
        if (f->deliver->sender_device == 0) { /* a notice from the server */
            msv_frame_free(f);
            test_ack(d, qid);
            continue;
        }
        assert_int_equal(f->deliver->sender_device, from->device_id);
        assert_int_equal(msv_open(d->id, msv_identity_public(from->id), f->deliver->ciphertext.data,
                                  f->deliver->ciphertext.len, NULL, &pt, &pt_len),
                         MSV_OK);
        assert_int_equal(pt_len, strlen(text));
        assert_memory_equal(pt, text, pt_len);
        msv_secret_free(pt, pt_len);
        msv_frame_free(f);
        return qid;
    }
}

void test_ack(struct test_device *d, uint64_t queue_id)
{
    assert_int_equal(msv_request_ack(d->conn, &queue_id, 1), MSV_OK);
}

int test_error_code(const msv_frame *f)
{
    return f->body_case == MSV__WIRE__FRAME__BODY_ERROR ? (int)f->error->code : 0;
}

void test_expect_ok(msv_frame *f)
{
    if (f->body_case != MSV__WIRE__FRAME__BODY_OK)
        fail_msg("expected Ok, got body %d (error %d)", f->body_case, test_error_code(f));
    msv_frame_free(f);
}

void test_expect_error(msv_frame *f, int code)
{
    if (test_error_code(f) != code)
        fail_msg("expected error %d, got body %d (error %d)", code, f->body_case,
                 test_error_code(f));
    msv_frame_free(f);
}

struct msv_client *test_client_of_suites(struct test_server *s, const char *name,
                                         const char *handle, enum msv_suite suite, unsigned also)
{
    struct msv_client *c = NULL;
    uint8_t fp[32];
    char dir[128], code[7];

    snprintf(dir, sizeof(dir), "%s/%s", s->dir, name);
    assert_int_equal(
        msv_client_create(dir, handle, "127.0.0.1", s->port, suite, also, NULL, fp, &c), MSV_OK);
    assert_memory_equal(fp, s->fingerprint, 32); /* trust on first use pinned this server */
    c->send_backoff_ms = 20;     /* a send while the server is stopped gives up within 0.14 s */
    c->receive_until_synced = 1; /* a receive ends once all that was queued was pushed */
    assert_int_equal(msv_client_register_start(c), MSV_OK);
    test_server_code(s, handle, code);
    assert_int_equal(msv_client_register_finish(c, code, TEST_PASSWORD), MSV_OK);
    return c;
}

struct msv_client *test_client_for(struct test_server *s, const char *name, const char *handle)
{
    return test_client_of_suites(s, name, handle, MSV_SUITE_MODERN, 0);
}

void test_acquaint(struct msv_client *a, struct msv_client *b)
{
    assert_int_equal(msv_client_db_contact_add(a->db, b->handle, b->handle), MSV_OK);
    assert_int_equal(msv_client_db_contact_add(b->db, a->handle, a->handle), MSV_OK);
}
