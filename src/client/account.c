/*
 * Accounts: the device keys sealed at rest, the settings, opening, registering and linking a
 * device.
 */
#include "client/internal.h"
#include "client/sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/safety.h"
#include "client/transparency.h"
#include "missive/payload.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"
#include "util/buf.h"
#include "util/privdir.h"

#define SEALED_MAGIC "MSVS" /* identity sealed under a passphrase */
#define PLAIN_MAGIC "MSVP"  /* identity stored as it is (no passphrase) */
#define SALT_LEN crypto_pwhash_SALTBYTES
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

/* "MSVS" || salt || u32be opslimit || u32be memlimit KiB || nonce || XChaCha20-Poly1305(export) */
static msv_err seal_identity(const struct msv_identity *id, const char *pass, uint8_t **out,
                             size_t *out_len)
{
    unsigned long long ops = crypto_pwhash_OPSLIMIT_INTERACTIVE, ct_len = 0;
    size_t mem = crypto_pwhash_MEMLIMIT_INTERACTIVE, exp_len = 0,
           head = 4 + SALT_LEN + 8 + NONCE_LEN;
    uint8_t *exp = NULL, *buf = NULL, key[32];
    msv_err err = msv_identity_export(id, &exp, &exp_len);

    if (err != MSV_OK)
        return err;
    buf = malloc(head + exp_len + crypto_aead_xchacha20poly1305_ietf_ABYTES);
    if (buf == NULL) {
        msv_secret_free(exp, exp_len);
        return MSV_ERR_NOMEM;
    }
    if (pass == NULL || pass[0] == '\0') {
        memcpy(buf, PLAIN_MAGIC, 4);
        memcpy(buf + 4, exp, exp_len);
        *out_len = 4 + exp_len;
        goto done;
    }
    memcpy(buf, SEALED_MAGIC, 4);
    msv_random_bytes(buf + 4, SALT_LEN);
    msv_put_u32be(buf + 4 + SALT_LEN, (uint32_t)ops);
    msv_put_u32be(buf + 8 + SALT_LEN, (uint32_t)(mem / 1024));
    msv_random_bytes(buf + 12 + SALT_LEN, NONCE_LEN);
    err = crypto_pwhash(key, sizeof(key), pass, strlen(pass), buf + 4, ops, mem,
                        crypto_pwhash_ALG_ARGON2ID13) == 0
              ? MSV_OK
              : MSV_ERR_NOMEM;
    if (err == MSV_OK)
        crypto_aead_xchacha20poly1305_ietf_encrypt(buf + head, &ct_len, exp, exp_len, buf, 4, NULL,
                                                   buf + 12 + SALT_LEN, key);
    sodium_memzero(key, sizeof(key));
    *out_len = head + (size_t)ct_len;
done:
    msv_secret_free(exp, exp_len);
    if (err != MSV_OK) {
        free(buf);
        return err;
    }
    *out = buf;
    return MSV_OK;
}

static msv_err unseal_identity(const uint8_t *in, size_t len, const char *pass,
                               struct msv_identity **out)
{
    size_t head = 4 + SALT_LEN + 8 + NONCE_LEN;
    unsigned long long ops = 0, pt_len = 0;
    size_t mem = 0;
    uint8_t key[32], *pt;
    msv_err err;

    if (len >= 4 && memcmp(in, PLAIN_MAGIC, 4) == 0)
        return msv_identity_import(in + 4, len - 4, out);
    if (len < head + crypto_aead_xchacha20poly1305_ietf_ABYTES || memcmp(in, SEALED_MAGIC, 4) != 0)
        return MSV_ERR_PARSE;
    if (pass == NULL || pass[0] == '\0')
        return MSV_ERR_AUTH; /* sealed: a passphrase is needed */
    ops = msv_get_u32be(in + 4 + SALT_LEN);
    mem = msv_get_u32be(in + 8 + SALT_LEN);
    if (ops > 64 || mem > 4u * 1024 * 1024)
        return MSV_ERR_PARSE; /* parameters no passphrase file of ours has */
    pt = malloc(len - head);
    if (pt == NULL)
        return MSV_ERR_NOMEM;
    err = MSV_ERR_AUTH;
    if (crypto_pwhash(key, sizeof(key), pass, strlen(pass), in + 4, ops, mem * 1024,
                      crypto_pwhash_ALG_ARGON2ID13) == 0 &&
        crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &pt_len, NULL, in + head, len - head, in, 4,
                                                   in + 12 + SALT_LEN, key) == 0)
        err = msv_identity_import(pt, (size_t)pt_len, out);
    sodium_memzero(key, sizeof(key));
    msv_secret_free(pt, len - head);
    return err;
}

/* ---- settings ------------------------------------------------------------------------- */

static msv_err set_text(struct msv_client *c, const char *key, const char *value)
{
    return msv_client_db_set(c->db, key, value, strlen(value));
}

static msv_err get_text(struct msv_client *c, const char *key, char *out, size_t out_len)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, key, &v, &len);

    if (err == MSV_OK && len >= out_len)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        memcpy(out, v, len);
        out[len] = '\0';
    }
    free(v);
    return err;
}

/* The identity hash of a device as the directory or a notice describes it. */
msv_err client_device_hash(uint32_t suite, const uint8_t *identity, size_t len, uint8_t h[32])
{
    struct msv_public_identity *pub = NULL;
    msv_err err = msv_public_identity_parse((enum msv_suite)suite, identity, len, &pub);

    if (err == MSV_OK)
        msv_public_identity_hash(pub, h);
    msv_public_identity_free(pub);
    return err;
}

static msv_err save_device_id(struct msv_client *c)
{
    char text[32];
    uint8_t h[32];
    msv_err err;

    snprintf(text, sizeof(text), "%llu", (unsigned long long)c->device_id);
    err = set_text(c, "device_id", text);
    /* this device is one the transparency monitor knows of */
    msv_public_identity_hash(msv_identity_public(c->id), h);
    if (err == MSV_OK) {
        size_t len = 0;
        const uint8_t *pub = msv_public_identity_bytes(msv_identity_public(c->id), &len);

        err = msv_client_db_own_device_put(c->db, c->device_id, h,
                                           (uint32_t)msv_identity_suite(c->id), pub, len, 0);
    }
    return err;
}

msv_err client_save_device_id(struct msv_client *c)
{
    return save_device_id(c);
}

/* What an approval signs: "MSV-approve-v1" || u8 len || handle || u64be device id || hash. */
size_t client_approval_message(const char *handle, uint64_t device_id, const uint8_t hash[32],
                               uint8_t out[14 + 1 + 255 + 8 + 32])
{
    size_t n = strlen(handle) > 255 ? 255 : strlen(handle), o = 14;

    memcpy(out, "MSV-approve-v1", 14);
    out[o++] = (uint8_t)n;
    memcpy(out + o, handle, n);
    o += n;
    msv_put_u64be(out + o, device_id);
    o += 8;
    memcpy(out + o, hash, 32);
    return o + 32;
}

static msv_err mkdir_p(const char *dir)
{
    char path[1024];

    if (strlen(dir) >= sizeof(path))
        return MSV_ERR_INVALID;
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return MSV_ERR_IO;
        *p = '/';
    }
    return mkdir(path, 0700) == 0 || errno == EEXIST ? MSV_OK : MSV_ERR_IO;
}

/*
 * Opens the account's database. The directory must be this user's and
 * writable by nobody else (MSV_ERR_INVALID): in a directory someone else
 * made, or may write, they could replace or link any file of the account.
 */
static msv_err open_db(struct msv_client *c, const char *dir)
{
    char path[1100];
    struct stat st;

    if (stat(dir, &st) != 0)
        return MSV_ERR_IO;
    if (!msv_privdir_is_private(&st))
        return MSV_ERR_INVALID;
    snprintf(c->dir, sizeof(c->dir), "%s", dir);
    snprintf(path, sizeof(path), "%s/state.db", dir);
    return msv_client_db_open(path, &c->db);
}

msv_err msv_client_create(const char *dir, const char *handle, const char *host, uint16_t port,
                          enum msv_suite suite, unsigned also, const char *passphrase,
                          uint8_t fingerprint[32], struct msv_client **out)
{
    struct msv_client *c = calloc(1, sizeof(*c));
    struct msv_conn *probe = NULL;
    uint8_t *sealed = NULL, *existing = NULL;
    size_t sealed_len = 0, existing_len = 0;
    char port_text[8];
    msv_err err;

    if (c == NULL)
        return MSV_ERR_NOMEM;
    err = strlen(handle) < sizeof(c->handle) && strlen(host) < sizeof(c->host) ? mkdir_p(dir)
                                                                               : MSV_ERR_INVALID;
    if (err == MSV_OK)
        err = open_db(c, dir);
    if (err == MSV_OK && msv_client_db_get(c->db, "identity", &existing, &existing_len) == MSV_OK)
        err = MSV_ERR_EXISTS; /* never overwrite a device's keys */
    free(existing);
    /* trust on first use: remember the certificate this server shows now */
    if (err == MSV_OK)
        err = msv_conn_open(host, port, NULL, TIMEOUT_MS, &probe);
    if (err == MSV_OK) {
        msv_conn_fingerprint(probe, c->pin);
        memcpy(fingerprint, c->pin, 32);
        msv_conn_close(probe);
        err = msv_identity_generate_suites(suite, also & ~MSV_SUITE_BIT(suite), 0, &c->id);
    }
    if (err == MSV_OK)
        err = seal_identity(c->id, passphrase, &sealed, &sealed_len);
    snprintf(c->handle, sizeof(c->handle), "%s", handle);
    snprintf(c->host, sizeof(c->host), "%s", host);
    snprintf(port_text, sizeof(port_text), "%u", port);
    c->port = port;
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, "identity", sealed, sealed_len);
    if (err == MSV_OK)
        err = set_text(c, "handle", handle);
    if (err == MSV_OK)
        err = set_text(c, "host", host);
    if (err == MSV_OK)
        err = set_text(c, "port", port_text);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, "pin", c->pin, 32);
    if (err == MSV_OK)
        err = save_device_id(c);
    free(sealed);
    if (err != MSV_OK) {
        msv_client_close(c);
        return err;
    }
    *out = c;
    return MSV_OK;
}

msv_err msv_client_open(const char *dir, const char *passphrase, struct msv_client **out)
{
    struct msv_client *c = calloc(1, sizeof(*c));
    uint8_t *sealed = NULL, *pin = NULL;
    size_t sealed_len = 0, pin_len = 0;
    char text[32];
    msv_err err;

    if (c == NULL)
        return MSV_ERR_NOMEM;
    err = open_db(c, dir);
    if (err == MSV_OK)
        err = msv_client_db_get(c->db, "identity", &sealed, &sealed_len);
    if (err == MSV_OK)
        err = unseal_identity(sealed, sealed_len, passphrase, &c->id);
    if (err == MSV_OK)
        err = get_text(c, "handle", c->handle, sizeof(c->handle));
    if (err == MSV_OK)
        err = get_text(c, "host", c->host, sizeof(c->host));
    if (err == MSV_OK)
        err = get_text(c, "port", text, sizeof(text));
    if (err == MSV_OK) {
        c->port = (uint16_t)strtoul(text, NULL, 10);
        err = get_text(c, "device_id", text, sizeof(text));
    }
    if (err == MSV_OK) {
        c->device_id = strtoull(text, NULL, 10);
        err = msv_client_db_get(c->db, "pin", &pin, &pin_len);
    }
    if (err == MSV_OK && pin_len == 32)
        memcpy(c->pin, pin, 32);
    else if (err == MSV_OK)
        err = MSV_ERR_PARSE;
    /* an account from before alternative addresses has none */
    if (err == MSV_OK && get_text(c, "servers", c->others, sizeof(c->others)) != MSV_OK)
        c->others[0] = '\0';
    /* messages whose time came while no program ran (or one was stopped half-way) */
    if (err == MSV_OK) {
        size_t expired = 0;

        err = msv_client_expire(c, NULL, NULL, &expired);
    }
    free(sealed);
    free(pin);
    if (err != MSV_OK) {
        msv_client_close(c);
        return err == MSV_ERR_NOT_FOUND ? MSV_ERR_NOT_FOUND : err;
    }
    *out = c;
    return MSV_OK;
}

void msv_client_close(struct msv_client *c)
{
    if (c == NULL)
        return;
    msv_conn_close(c->conn);
    msv_conn_close(c->sealed_conn);
    msv_identity_free(c->id);
    msv_client_db_close(c->db);
    free(c->deliveries_taken);
    free(c);
}

/* ---- accounts ------------------------------------------------------------------------- */

/* The i-th of "HOST:PORT,..." into host and port; MSV_ERR_NOT_FOUND past the end. */
static msv_err server_at(const char *list, unsigned i, char *host, size_t host_len, uint16_t *port)
{
    const char *p = list;

    for (; i > 0 && p != NULL; i--)
        p = (p = strchr(p, ',')) != NULL ? p + 1 : NULL;
    if (p == NULL || *p == '\0')
        return MSV_ERR_NOT_FOUND;
    return msv_host_port(p, strcspn(p, ","), host, host_len, port) == MSV_OK ? MSV_OK
                                                                             : MSV_ERR_INVALID;
}

msv_err msv_client_set_servers(struct msv_client *c, const char *others)
{
    char host[256];
    uint16_t port;
    unsigned i = 0;
    msv_err err;

    if (strlen(others) >= sizeof(c->others))
        return MSV_ERR_INVALID;
    while ((err = server_at(others, i, host, sizeof(host), &port)) == MSV_OK)
        i++;
    if (err != MSV_ERR_NOT_FOUND || (i == 0 && others[0] != '\0'))
        return MSV_ERR_INVALID;
    err = set_text(c, "servers", others);
    if (err == MSV_OK) {
        snprintf(c->others, sizeof(c->others), "%s", others);
        c->preferred = 0;
    }
    return err;
}

/*
 * A fresh connection for the unauthenticated account requests: to the
 * address that answered last, else to the next that answers (a cluster's
 * node that went away hands its devices to the others).
 */
msv_err client_plain_conn(struct msv_client *c, struct msv_conn **out)
{
    unsigned count = 1;
    char host[256];
    uint16_t port;
    msv_err err = MSV_ERR_IO, first = MSV_OK;
    int64_t started = msv_mono_ms();

    while (server_at(c->others, count - 1, host, sizeof(host), &port) == MSV_OK)
        count++;
    for (unsigned k = 0; k < count; k++) {
        unsigned i = (c->preferred + k) % count;

        if (i == 0) {
            snprintf(host, sizeof(host), "%s", c->host);
            port = c->port;
        } else if (server_at(c->others, i - 1, host, sizeof(host), &port) != MSV_OK) {
            continue;
        }
        err = msv_conn_open(host, port, c->pin, TIMEOUT_MS, out);
        if (err == MSV_OK) {
            c->preferred = i;
            return MSV_OK;
        }
        if (first == MSV_OK)
            first = err;
    }
    if (first == MSV_ERR_IO) /* unreachable: say so, and whether it was silent or refused */
        snprintf(c->why.message, sizeof(c->why.message), "the server at %.180s:%u%s %s", c->host,
                 (unsigned)c->port, count > 1 ? " (and the others)" : "",
                 msv_mono_ms() - started >= TIMEOUT_MS ? "did not answer in time"
                                                       : "cannot be reached");
    return first != MSV_OK ? first : err; /* what the preferred address said */
}

/*
 * A new device publishes its prekeys and delivery token at once, so that
 * the first messages to it already start sessions; if that fails, the next
 * connection does it. Registering leaves no connection open.
 */
static void publish_now(struct msv_client *c)
{
    if (msv_client_connect(c) != MSV_OK)
        memset(&c->why, 0, sizeof(c->why));
    msv_conn_close(c->conn);
    c->conn = NULL;
}

#define INVITE_SETTING "registration-invite"
#define INVITE_MAX 64

msv_err msv_client_set_invite(struct msv_client *c, const char *invite)
{
    size_t len = strlen(invite);

    if (len == 0 || len > INVITE_MAX)
        return MSV_ERR_INVALID;
    return msv_client_db_set(c->db, INVITE_SETTING, (const uint8_t *)invite, len);
}

/* The invite code kept for this registration, as a C string in out; "" if none. */
static msv_err kept_invite(struct msv_client *c, char out[INVITE_MAX + 1])
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, INVITE_SETTING, &v, &len);

    out[0] = '\0';
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err == MSV_OK && len <= INVITE_MAX) {
        memcpy(out, v, len);
        out[len] = '\0';
    }
    free(v);
    return err;
}

msv_err msv_client_register_start(struct msv_client *c)
{
    struct msv_conn *conn = NULL;
    char invite[INVITE_MAX + 1];
    msv_err err = kept_invite(c, invite);

    if (err == MSV_OK)
        err = client_plain_conn(c, &conn);
    if (err == MSV_OK)
        err = msv_request_register_start(conn, c->handle, invite, TIMEOUT_MS, &c->why);
    msv_conn_close(conn);
    return err;
}

msv_err msv_client_register_finish(struct msv_client *c, const char *code, const char *password)
{
    struct msv_conn *conn = NULL;
    struct msv_first_prekeys *first = NULL;
    char invite[INVITE_MAX + 1];
    msv_err err = c->device_id != 0 ? MSV_ERR_EXISTS : kept_invite(c, invite);

    if (err == MSV_OK)
        err = msv_sessions_first_prekeys(c, &first);
    if (err == MSV_OK)
        err = client_plain_conn(c, &conn);
    if (err == MSV_OK)
        err = msv_request_register_finish(conn, c->handle, invite, code, password, c->id,
                                          msv_sessions_first_prekeys_set(first), "", TIMEOUT_MS,
                                          &c->device_id, &c->why);
    msv_sessions_first_prekeys_free(first);
    if (err == MSV_OK)
        err = save_device_id(c);
    /* the handle's first version after this registration lists this device alone: the owner's
     * monitor checks it so (monitor.c) */
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, "kt_registered", "", 0);
    if (err == MSV_OK && invite[0] != '\0')
        err = msv_client_db_unset(c->db, INVITE_SETTING);
    msv_conn_close(conn);
    /* the account's first device makes its profile key (a linked device gets it by sync) */
    if (err == MSV_OK && (msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        err = msv_sessions_new_profile_key(c);
    if (err == MSV_OK)
        publish_now(c);
    return err;
}

msv_err msv_client_link(struct msv_client *c, const char *password)
{
    struct msv_conn *conn = NULL;
    struct msv_first_prekeys *first = NULL;
    msv_err err = c->device_id != 0 ? MSV_ERR_EXISTS : msv_sessions_first_prekeys(c, &first);

    if (err == MSV_OK)
        err = client_plain_conn(c, &conn);
    if (err == MSV_OK)
        err = msv_request_add_device(conn, c->handle, password, c->id,
                                     msv_sessions_first_prekeys_set(first), "", TIMEOUT_MS,
                                     &c->device_id, &c->why);
    msv_sessions_first_prekeys_free(first);
    if (err == MSV_OK)
        err = save_device_id(c);
    msv_conn_close(conn);
    if (err == MSV_OK)
        publish_now(c);
    return err;
}

msv_err msv_client_wipe(struct msv_client *c)
{
    msv_conn_close(c->conn);
    c->conn = NULL;
    c->device_id = 0; /* nothing of it is left to connect with */
    return msv_privdir_remove(c->dir) == 0 ? MSV_OK : MSV_ERR_IO;
}

msv_err msv_client_leave(struct msv_client *c)
{
    msv_err err = c->device_id != 0 ? msv_client_remove_device(c, c->device_id) : MSV_OK;

    /* a deleted account's device has no server side left to leave */
    if (err == MSV_ERR_NOT_FOUND && msv_client_account_deleted(c))
        err = MSV_OK;
    return err == MSV_OK ? msv_client_wipe(c) : err;
}

int msv_client_account_deleted(const struct msv_client *c)
{
    return c->why.code == MSV__WIRE__ERROR_CODE__ERROR_ACCOUNT_DELETED;
}

msv_err msv_client_delete_account(struct msv_client *c, const char *password)
{
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_request_account_delete(c->conn, password, TIMEOUT_MS, &c->why);
    return err == MSV_OK ? msv_client_wipe(c) : err;
}

msv_err msv_client_password_reset(const char *host, uint16_t port, const char *handle,
                                  const char *code, const char *new_password,
                                  struct msv_refusal *why)
{
    struct msv_conn *conn = NULL;
    msv_err err = strlen(new_password) < 8 || strlen(new_password) > 1024
                      ? MSV_ERR_INVALID
                      : msv_conn_open(host, port, NULL, TIMEOUT_MS, &conn);

    if (err == MSV_OK)
        err = msv_request_password_reset(conn, handle, code, new_password, TIMEOUT_MS, why);
    msv_conn_close(conn);
    return err;
}

msv_err msv_client_password_change(struct msv_client *c, const char *password,
                                   const char *new_password)
{
    msv_err err = strlen(new_password) < 8 || strlen(new_password) > 1024 ? MSV_ERR_INVALID
                                                                          : msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_request_password_change(c->conn, password, new_password, TIMEOUT_MS, &c->why);
    return err;
}

/*
 * How long the digest of an envelope read is kept; a payload made longer ago
 * than that (by its send time, which Missive's clients always set) is refused:
 * its digest may be forgotten, so it cannot be told from a replay.
 */

/* Whether the outbox must not be sent now: the session or MLS lock is held, or a flush of it
 * is under way (msv_client_connect says why). */
static int outbox_must_wait(const struct msv_client *c)
{
    return c->session_lock_depth > 0 || c->mls_lock_depth > 0 || c->flushing > 0;
}

/* The pid the holder of the deliveries lock wrote in it ("" if none). */
static void deliveries_holder(int fd, char *pid, size_t len)
{
    ssize_t n = pread(fd, pid, len - 1, 0);

    pid[n > 0 ? (size_t)n : 0] = '\0';
    pid[strspn(pid, "0123456789")] = '\0';
}

/*
 * Takes the deliveries lock (struct msv_client) for a connection that takes deliveries:
 * *fd its descriptor, which the connection holds, or -1 when it goes without (the lock held
 * elsewhere, and the caller does not wait: take_over, or the owner; or under the session or MLS
 * lock, or within a send of the outbox, whose holder may be waiting for what this process
 * holds).
 */
static msv_err take_deliveries_lock(struct msv_client *c, int take_over, int *fd)
{
    const struct timespec pause = {0, 50 * 1000 * 1000};
    char path[sizeof(c->dir) + 32], pid[24] = "";
    int wait_ms =
        c->deliveries_wait_ms == 0 ? MSV_CLIENT_DELIVERIES_WAIT_MS : c->deliveries_wait_ms;
    int64_t start = msv_mono_ms(), until = start + (wait_ms > 0 ? wait_ms : 0);
    int told = 0, n;

    snprintf(path, sizeof(path), "%s/deliveries.lock", c->dir);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    while (*fd >= 0 && flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;

        if (e == EINTR)
            continue;
        /* a lock that cannot be had at all (no descriptor left, say), as one held elsewhere
         * by a caller that does not wait: the connection goes without it, as before the lock
         * (failing here would fail a queued message for good within a send of the outbox) */
        if (e != EWOULDBLOCK || take_over || c->deliveries_take_over || outbox_must_wait(c)) {
            close(*fd);
            *fd = -1;
            return MSV_OK;
        }
        deliveries_holder(*fd, pid, sizeof(pid));
        if (msv_mono_ms() >= until) {
            close(*fd);
            *fd = -1;
            snprintf(c->why.message, sizeof(c->why.message),
                     "another program of this device%s%s%s takes its deliveries from the server "
                     "(a receive, say), which keeps one connection for them%s",
                     pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "",
                     wait_ms > 0 ? "; it did not end in time (run `missive daemon` to use "
                                   "several commands of the account at once)"
                                 : "");
            return MSV_ERR_BUSY;
        }
        /* told once the holder's pid is there (it writes it just after taking the lock), or
         * after a second without */
        if (!told && (pid[0] != '\0' || msv_mono_ms() >= start + 1000)) {
            if (c->on_deliveries_wait != NULL)
                c->on_deliveries_wait(c->ctx, pid, wait_ms);
            told = 1;
        }
        nanosleep(&pause, NULL);
    }
    if (*fd < 0)
        return MSV_OK;
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(*fd, 0) != 0 || pwrite(*fd, pid, (size_t)n, 0) != n) {
        /* the pid only names the holder to a waiter */
    }
    return MSV_OK;
}

int client_deliveries_taken(struct msv_client *c, const char *words)
{
    if (c->deliveries_taken != NULL)
        return 1;
    if (words == NULL || c->deliveries_take_over)
        return 0;
    c->deliveries_taken = strdup(words); /* without memory: it connects again as before */
    return c->deliveries_taken != NULL;
}

msv_err client_deliveries_gone(struct msv_client *c)
{
    c->why.code = 0; /* a connection lost, whatever an earlier answer said */
    snprintf(c->why.message, sizeof(c->why.message), "%s", c->deliveries_taken);
    return MSV_ERR_IO;
}

/* A connection as client_plain_conn makes it, holding the deliveries lock unless requests_only
 * (take_over: it goes without the lock rather than wait for another process's hold). */
static msv_err conn_for(struct msv_client *c, int requests_only, int take_over,
                        struct msv_conn **out)
{
    int fd = -1;
    msv_err err = requests_only ? MSV_OK : take_deliveries_lock(c, take_over, &fd);

    if (err == MSV_OK)
        err = client_plain_conn(c, out);
    if (err == MSV_OK)
        msv_conn_hold(*out, fd);
    else if (fd >= 0)
        close(fd);
    return err;
}

/*
 * Once a receive within a command is over, its connection (which takes deliveries, and holds
 * the deliveries lock) is replaced by one for requests alone, made first: the old one serves
 * on if that fails (refused for the number of such connections, say), and the command keeps
 * it. Keys were published and the outbox sent on the old one: neither is done again.
 */
static void for_requests_again(struct msv_client *c)
{
    struct msv_conn *fresh = NULL;
    msv_err err = client_plain_conn(c, &fresh);

    c->conn_for_receive = 0;
    if (err == MSV_OK)
        err = msv_conn_auth_as(fresh, c->handle, c->device_id, c->id, 1, TIMEOUT_MS, NULL, 0);
    if (err != MSV_OK) {
        msv_conn_close(fresh);
        return;
    }
    msv_conn_close(c->conn);
    c->conn = fresh;
    c->conn_requests_only = 1;
}

msv_err msv_client_connect(struct msv_client *c)
{
    int requests_only = (!c->takes_deliveries && c->receiving == 0) || c->deliveries_taken != NULL,
        switched = 0;
    msv_err err;

    if (c->conn != NULL && c->conn_for_receive && requests_only)
        for_requests_again(c);
    /* one for requests alone serves requests; deliveries need one that takes them (the
     * outbox was flushed on the first: a receive in a send would send that send again) */
    if (c->conn != NULL && c->conn_requests_only && !requests_only) {
        msv_conn_close(c->conn);
        c->conn = NULL;
        switched = 1;
    }
    if (c->conn != NULL)
        return MSV_OK;
    if (c->device_id == 0)
        return MSV_ERR_NOT_FOUND; /* not registered yet */
    memset(&c->why, 0, sizeof(c->why));
    err = conn_for(c, requests_only, 0, &c->conn);
    if (err == MSV_OK) {
        err = msv_conn_auth_as(c->conn, c->handle, c->device_id, c->id, requests_only, TIMEOUT_MS,
                               c->why.message, sizeof(c->why.message));
        /* the device has as many connections for requests open as the server allows (dead
         * ones it has not noticed, say): one that takes deliveries, which replaces the
         * device's other such connection, rather than no connection */
        if (err == MSV_ERR_AGAIN && c->deliveries_taken != NULL) {
            /* not past another program of the device that took its deliveries: this one
             * takes them no more, so the device's connections for requests are full */
            err = MSV_ERR_BUSY;
        } else if (err == MSV_ERR_AGAIN) {
            msv_conn_close(c->conn);
            c->conn = NULL;
            memset(&c->why, 0, sizeof(c->why));
            requests_only = 0;
            err = conn_for(c, 0, 1, &c->conn); /* it replaces the other rather than wait */
            if (err == MSV_OK)
                err = msv_conn_auth(c->conn, c->handle, c->device_id, c->id, TIMEOUT_MS,
                                    c->why.message, sizeof(c->why.message));
        }
        c->conn_requests_only = requests_only;
        c->conn_for_receive = !requests_only && !c->takes_deliveries && c->receiving > 0;
        /* with its words the server answered that its storage failed (as a send it cannot
         * store); without, it did not answer at all */
        if (err == MSV_ERR_IO && c->why.message[0] != '\0')
            c->why.code = MSV__WIRE__ERROR_CODE__ERROR_IO;
    }
    if (err == MSV_ERR_NOT_FOUND) /* the account was deleted: say so to whoever asks */
        c->why.code = MSV__WIRE__ERROR_CODE__ERROR_ACCOUNT_DELETED;
    if (err == MSV_ERR_IO && c->why.code == 0 && c->conn != NULL)
        snprintf(c->why.message, sizeof(c->why.message),
                 "the server at %.180s:%u did not answer within %d s, or closed the connection",
                 c->host, (unsigned)c->port, TIMEOUT_MS / 1000);
    if (err != MSV_OK) {
        msv_conn_close(c->conn);
        c->conn = NULL;
        return err;
    }
    /* prekeys for sessions and the delivery token, when the server lacks them; without
     * them, senders use the suite's own envelope and send unsealed: a failure is told and
     * counted, and the next connection tries again */
    client_publish_keys(c);
    /* the digests of envelopes read are kept as long as a message may be taken; failing
     * to forget old ones only keeps them longer */
    err = msv_client_db_envelopes_forget(c->db, msv_wall_ms() - SEEN_KEEP_MS);
    /* connected again: what an earlier lost connection left queued goes first; if it
     * cannot go now, it waits for the next time rather than failing this command (a send's
     * own message, which it sends itself, left out). Not under the session or MLS lock: its
     * sends take the session lock, and another process may hold that while it waits for the
     * MLS lock (a receive); nor within a flush (it would send what that flush sends next);
     * then it goes after the command */
    if (!switched) {
        c->outbox_deferred = outbox_must_wait(c);
        if (!c->outbox_deferred)
            (void)client_flush_outbox(c);
    }
    return MSV_OK;
}

void client_outbox_later(struct msv_client *c)
{
    if (!c->outbox_deferred || c->conn == NULL || outbox_must_wait(c) || c->in_flight != NULL)
        return;
    c->outbox_deferred = 0;
    (void)client_flush_outbox(c); /* what cannot go waits for the next connection */
}

msv_err msv_client_usage(struct msv_client *c, msv_frame **result)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__UsageRequest u = MSV__WIRE__USAGE_REQUEST__INIT;
    msv_frame *resp = NULL;
    msv_err err = msv_client_connect(c);

    req.body_case = MSV__WIRE__FRAME__BODY_USAGE_REQUEST;
    req.usage_request = &u;
    if (err == MSV_OK)
        err = msv_conn_request(c->conn, &req, TIMEOUT_MS, &resp);
    if (err == MSV_OK && resp->body_case != MSV__WIRE__FRAME__BODY_USAGE)
        err = resp->body_case == MSV__WIRE__FRAME__BODY_ERROR ? MSV_ERR_IO : MSV_ERR_PARSE;
    if (err != MSV_OK) {
        msv_frame_free(resp);
        return err;
    }
    *result = resp;
    return MSV_OK;
}
