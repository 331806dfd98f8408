#include "client/client.h"
#include "client/sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

#define TIMEOUT_MS 15000
#define SEND_TRIES 3
#define SEALED_MAGIC "MSVS" /* identity sealed under a passphrase */
#define PLAIN_MAGIC "MSVP"  /* identity stored as it is (no passphrase) */
#define SALT_LEN crypto_pwhash_SALTBYTES
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

/* ---- keys at rest --------------------------------------------------------------------- */

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
static msv_err device_hash(uint32_t suite, const uint8_t *identity, size_t len, uint8_t h[32])
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

/* What an approval signs: "MSV-approve-v1" || u8 len || handle || u64be device id || hash. */
static size_t approval_message(const char *handle, uint64_t device_id, const uint8_t hash[32],
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
static msv_err plain_conn(struct msv_client *c, struct msv_conn **out)
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

msv_err msv_client_register_start(struct msv_client *c)
{
    struct msv_conn *conn = NULL;
    msv_err err = plain_conn(c, &conn);

    if (err == MSV_OK)
        err = msv_request_register_start(conn, c->handle, TIMEOUT_MS, &c->why);
    msv_conn_close(conn);
    return err;
}

msv_err msv_client_register_finish(struct msv_client *c, const char *code, const char *password)
{
    struct msv_conn *conn = NULL;
    msv_err err = c->device_id != 0 ? MSV_ERR_EXISTS : plain_conn(c, &conn);

    if (err == MSV_OK)
        err = msv_request_register_finish(conn, c->handle, code, password, c->id, "", TIMEOUT_MS,
                                          &c->device_id, &c->why);
    if (err == MSV_OK)
        err = save_device_id(c);
    msv_conn_close(conn);
    if (err == MSV_OK)
        publish_now(c);
    return err;
}

msv_err msv_client_link(struct msv_client *c, const char *password)
{
    struct msv_conn *conn = NULL;
    msv_err err = c->device_id != 0 ? MSV_ERR_EXISTS : plain_conn(c, &conn);

    if (err == MSV_OK)
        err = msv_request_add_device(conn, c->handle, password, c->id, "", TIMEOUT_MS,
                                     &c->device_id, &c->why);
    if (err == MSV_OK)
        err = save_device_id(c);
    msv_conn_close(conn);
    if (err == MSV_OK)
        publish_now(c);
    return err;
}

/*
 * How long the digest of an envelope read is kept; a payload made longer ago
 * than that (by its send time, which Missive's clients always set) is refused:
 * its digest may be forgotten, so it cannot be told from a replay.
 */
#define SEEN_KEEP_MS (180LL * 24 * 3600 * 1000)

static msv_err flush_outbox(struct msv_client *c);

msv_err msv_client_connect(struct msv_client *c)
{
    msv_err err;

    if (c->conn != NULL)
        return MSV_OK;
    if (c->device_id == 0)
        return MSV_ERR_NOT_FOUND; /* not registered yet */
    memset(&c->why, 0, sizeof(c->why));
    err = plain_conn(c, &c->conn);
    if (err == MSV_OK) {
        err = msv_conn_auth(c->conn, c->handle, c->device_id, c->id, TIMEOUT_MS, c->why.message,
                            sizeof(c->why.message));
        /* with its words the server answered that its storage failed (as a send it cannot
         * store); without, it did not answer at all */
        if (err == MSV_ERR_IO && c->why.message[0] != '\0')
            c->why.code = MSV__WIRE__ERROR_CODE__ERROR_IO;
    }
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
     * them, senders use the suite's own envelope and send unsealed */
    (void)msv_sessions_publish(c);
    /* the digests of envelopes read are kept as long as a message may be taken; failing
     * to forget old ones only keeps them longer */
    err = msv_client_db_envelopes_forget(c->db, msv_wall_ms() - SEEN_KEEP_MS);
    /* connected again: what an earlier lost connection left queued goes first; if it
     * cannot go now, it waits for the next time rather than failing this command */
    (void)flush_outbox(c);
    return MSV_OK;
}

/* ---- directory ------------------------------------------------------------------------ */

/* Asks the directory, and checks its answer against the transparency log. */
static msv_err checked_lookup(struct msv_client *c, const char *const *handles, size_t n,
                              msv_frame **result)
{
    msv_err err = msv_request_lookup(c->conn, handles, n, msv_kt_known_size(c->db), TIMEOUT_MS,
                                     result, &c->why);

    if (err == MSV_OK) {
        err = msv_kt_check_lookup(c->db, (*result)->lookup_result, c->why.message,
                                  sizeof(c->why.message));
        if (err != MSV_OK) {
            msv_frame_free(*result);
            *result = NULL;
        }
    }
    return err;
}

/* Moves tail's results after head's (each was checked on its own); tail keeps none. */
static msv_err join_lookups(msv_frame *head, msv_frame *tail)
{
    Msv__Wire__LookupResponse *h = head->lookup_result, *t = tail->lookup_result;
    Msv__Wire__HandleDevices **all;

    if (h->n_results > SIZE_MAX / sizeof(*all) - t->n_results)
        return MSV_ERR_NOMEM;
    all = realloc(h->results, (h->n_results + t->n_results) * sizeof(*all));
    if (all == NULL)
        return MSV_ERR_NOMEM;
    memcpy(all + h->n_results, t->results, t->n_results * sizeof(*all));
    h->results = all;
    h->n_results += t->n_results;
    t->n_results = 0;
    return MSV_OK;
}

/*
 * The directory's answer, checked. An answer too big for a frame (accounts of
 * many devices) is asked for in halves, each checked against the log.
 */
static msv_err verified_lookup(struct msv_client *c, const char *const *handles, size_t n,
                               msv_frame **result)
{
    msv_frame *tail = NULL;
    size_t half = n / 2;
    msv_err err = checked_lookup(c, handles, n, result);

    if (err != MSV_ERR_TOO_BIG || n < 2)
        return err;
    err = verified_lookup(c, handles, half, result);
    if (err == MSV_OK)
        err = verified_lookup(c, handles + half, n - half, &tail);
    if (err == MSV_OK)
        err = join_lookups(*result, tail);
    msv_frame_free(tail);
    if (err != MSV_OK) {
        msv_frame_free(*result);
        *result = NULL;
    } else {
        memset(&c->why, 0, sizeof(c->why)); /* the refusal of the whole was answered */
    }
    return err;
}

/* Remembers what the directory says of a handle; reports a changed device set. */
static msv_err remember(struct msv_client *c, const Msv__Wire__HandleDevices *hd)
{
    struct msv_known_device *devs = calloc(hd->n_devices + 1, sizeof(*devs));
    char handle[257];
    int changed = 0;
    msv_err err;

    if (devs == NULL)
        return MSV_ERR_NOMEM;
    snprintf(handle, sizeof(handle), "%.*s", (int)hd->handle.len, (const char *)hd->handle.data);
    for (size_t i = 0; i < hd->n_devices; i++) {
        devs[i].device_id = hd->devices[i]->device_id;
        devs[i].suite = hd->devices[i]->suite;
        devs[i].identity = hd->devices[i]->identity.data;
        devs[i].identity_len = hd->devices[i]->identity.len;
    }
    err = msv_client_db_known_replace(c->db, handle, devs, hd->n_devices, msv_wall_ms(), &changed);
    free(devs);
    if (err == MSV_OK && changed && c->on_key_change != NULL)
        c->on_key_change(c->ctx, handle);
    return err;
}

msv_err msv_client_devices(struct msv_client *c, const char *handle, msv_frame **result)
{
    const char *h = handle ? handle : c->handle;
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = verified_lookup(c, &h, 1, result);
    if (err == MSV_OK)
        err = remember(c, (*result)->lookup_result->results[0]);
    return err;
}

/* A device request of the account (remove, approve): Ok, or MSV_ERR_NOT_FOUND. */
static msv_err device_request(struct msv_client *c, Msv__Wire__Frame *req)
{
    msv_frame *resp = NULL;
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_conn_request(c->conn, req, TIMEOUT_MS, &resp);
    if (err == MSV_OK && resp->body_case != MSV__WIRE__FRAME__BODY_OK)
        err = MSV_ERR_NOT_FOUND;
    msv_frame_free(resp);
    return err;
}

msv_err msv_client_remove_device(struct msv_client *c, uint64_t device_id)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RemoveDevice rm = MSV__WIRE__REMOVE_DEVICE__INIT;

    rm.device_id = device_id;
    req.body_case = MSV__WIRE__FRAME__BODY_REMOVE_DEVICE;
    req.remove_device = &rm;
    return device_request(c, &req);
}

static void pending_key(uint64_t device_id, char key[40])
{
    snprintf(key, 40, "pending:%llu", (unsigned long long)device_id);
}

msv_err msv_client_approve_device(struct msv_client *c, uint64_t device_id)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ApproveDevice ap = MSV__WIRE__APPROVE_DEVICE__INIT;
    uint8_t *req_bytes = NULL, hash[32], msg[14 + 1 + 255 + 8 + 32], sig[MSV_SIGNATURE_MAX];
    size_t req_len = 0, sig_len = 0;
    char key[40];
    msv_err err;

    /* the request this device received: its key is what the approval vouches for */
    pending_key(device_id, key);
    err = msv_client_db_get(c->db, key, &req_bytes, &req_len);
    if (err == MSV_ERR_NOT_FOUND) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "this device has not received device %llu's request to join",
                 (unsigned long long)device_id);
        return err;
    }
    if (err == MSV_OK &&
        (req_len < 1 || device_hash(req_bytes[0], req_bytes + 1, req_len - 1, hash) != MSV_OK))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        err = msv_identity_sign(c->id, msg, approval_message(c->handle, device_id, hash, msg), sig,
                                &sig_len);
    if (err == MSV_OK) {
        ap.device_id = device_id;
        ap.approval = (ProtobufCBinaryData){sig_len, sig};
        req.body_case = MSV__WIRE__FRAME__BODY_APPROVE_DEVICE;
        req.approve_device = &ap;
        err = device_request(c, &req);
    }
    if (err == MSV_OK) /* approved here: this account's own, for this device's monitor */
        err = msv_client_db_own_device_put(c->db, device_id, hash, req_bytes[0], req_bytes + 1,
                                           req_len - 1, 0);
    free(req_bytes);
    return err;
}

/* ---- sending -------------------------------------------------------------------------- */

struct sealed_set {
    struct msv_outgoing *out;
    uint8_t **wires;
    size_t count;
};

static void sealed_clear(struct sealed_set *s)
{
    for (size_t i = 0; i < s->count; i++)
        free(s->wires[i]);
    free(s->out);
    free(s->wires);
    memset(s, 0, sizeof(*s));
}

/* "modern, ecies": the suites of pub. */
static const char *suites_text(const struct msv_public_identity *pub, char out[40])
{
    unsigned mask = msv_public_identity_suites(pub);
    size_t o = 0;

    out[0] = '\0';
    for (int s = MSV_SUITE_MODERN; s >= MSV_SUITE_CLASSIC; s--) {
        if (mask & MSV_SUITE_BIT(s))
            o += (size_t)snprintf(out + o, 40 - o, "%s%s", o ? ", " : "",
                                  msv_suite_name((enum msv_suite)s));
    }
    return out;
}

/*
 * Seals pt for every device listed, except this one: with a session where
 * there is one (or can be started from the device's prekeys), else in the
 * best suite both devices speak; a device that speaks none of this device's
 * suites is left out (and reported through on_unreachable). sealed: each
 * envelope is also wrapped so that the relay does not learn the sender
 * (devices that speak modern only: MSV_ERR_UNSUPPORTED else).
 */
static msv_err seal_for(struct msv_client *c, Msv__Wire__HandleDevices *const *hds, size_t n,
                        const uint8_t *pt, size_t pt_len, int sealed, struct sealed_set *s)
{
    size_t total = 0;
    msv_err err = MSV_OK;

    for (size_t i = 0; i < n; i++)
        total += hds[i]->n_devices;
    s->out = calloc(total + 1, sizeof(*s->out));
    s->wires = calloc(total + 1, sizeof(*s->wires));
    if (s->out == NULL || s->wires == NULL)
        return MSV_ERR_NOMEM;
    err = msv_sessions_prepare(c, hds, n);
    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        size_t before = s->count, skipped = 0;

        for (size_t k = 0; k < hds[i]->n_devices && err == MSV_OK; k++) {
            const Msv__Wire__DeviceInfo *d = hds[i]->devices[k];
            struct msv_public_identity *pub = NULL;
            enum msv_suite suite;
            char sa[40], peer[257];
            uint8_t *inner = NULL;
            size_t len = 0, inner_len = 0;

            if (d->device_id == c->device_id)
                continue;
            err = msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data,
                                            d->identity.len, &pub);
            /* the best suite both devices speak */
            suite = err == MSV_OK ? msv_suite_common(msv_identity_suites(c->id),
                                                     msv_public_identity_suites(pub))
                                  : MSV_SUITE_ANY;
            if (err == MSV_OK && suite == MSV_SUITE_ANY && !sealed) {
                /* it cannot be written to from here (the relay expects no envelope for it) */
                if (c->on_unreachable != NULL) {
                    char handle[257];

                    snprintf(handle, sizeof(handle), "%.*s", (int)hds[i]->handle.len,
                             (const char *)hds[i]->handle.data);
                    c->on_unreachable(c->ctx, handle, d->device_id, suites_text(pub, sa));
                }
                msv_public_identity_free(pub);
                skipped++;
                continue;
            }
            if (err == MSV_OK && sealed && suite != MSV_SUITE_MODERN)
                err = MSV_ERR_UNSUPPORTED;
            snprintf(peer, sizeof(peer), "%.*s", (int)hds[i]->handle.len,
                     (const char *)hds[i]->handle.data);
            if (err == MSV_OK && !sealed)
                err = msv_sessions_seal(c, peer, d->device_id, pub, suite, pt, pt_len,
                                        &s->wires[s->count], &len);
            if (err == MSV_OK && sealed) {
                err = msv_sessions_seal(c, peer, d->device_id, pub, suite, pt, pt_len, &inner,
                                        &inner_len);
                if (err == MSV_OK)
                    err = msv_sealed_wrap(c->id, pub, c->handle, c->device_id, inner, inner_len,
                                          &s->wires[s->count], &len);
                free(inner);
            }
            msv_public_identity_free(pub);
            if (err == MSV_OK) {
                s->out[s->count] = (struct msv_outgoing){
                    d->device_id, sealed ? MSV_ENVELOPE_SEALED : (uint32_t)suite,
                    s->wires[s->count], len};
                s->count++;
            }
        }
        if (err == MSV_OK && skipped > 0 && s->count == before &&
            !(hds[i]->handle.len == strlen(c->handle) &&
              memcmp(hds[i]->handle.data, c->handle, hds[i]->handle.len) == 0)) {
            snprintf(c->why.message, sizeof(c->why.message),
                     "no device of %.*s speaks a suite this device speaks", (int)hds[i]->handle.len,
                     (const char *)hds[i]->handle.data);
            err = MSV_ERR_UNSUPPORTED;
        }
    }
    return err;
}

/* ---- verified contacts -------------------------------------------------------------------- */

static void verified_key(const char *handle, char *key, size_t len)
{
    snprintf(key, len, "verified-set:%s", handle);
}

/*
 * MSV_OK unless one of hds is a verified contact whose devices changed since:
 * then nothing is sent (MSV_ERR_AUTH, why.code MSV_REFUSAL_KEY_CHANGE) until
 * the user accepts the change.
 */
static msv_err check_verified(struct msv_client *c, Msv__Wire__HandleDevices *const *hds,
                              size_t n_hds)
{
    for (size_t i = 0; i < n_hds; i++) {
        char handle[300], key[320];
        uint8_t *was = NULL, now[32];
        size_t len = 0;
        int changed;

        snprintf(handle, sizeof(handle), "%.*s", (int)hds[i]->handle.len,
                 (const char *)hds[i]->handle.data);
        verified_key(handle, key, sizeof(key));
        if (strcmp(handle, c->handle) == 0 || msv_client_db_get(c->db, key, &was, &len) != MSV_OK)
            continue;
        changed = len != 32 || msv_safety_set_digest(hds[i], now) != MSV_OK ||
                  !msv_equal_ct(was, now, 32);
        free(was);
        if (changed) {
            c->why.code = MSV_REFUSAL_KEY_CHANGE;
            snprintf(c->why.message, sizeof(c->why.message),
                     "the devices of %.64s changed since you verified them; nothing goes to "
                     "them until you compare the new safety number or accept the change "
                     "('missive verify HANDLE [--accept]')",
                     handle);
            return MSV_ERR_AUTH;
        }
    }
    return MSV_OK;
}

msv_err msv_client_safety_number(struct msv_client *c, const char *handle, unsigned version,
                                 char number[MSV_SAFETY_DIGITS + 1], uint8_t digest[32])
{
    const char *both[2] = {c->handle, handle};
    msv_frame *r = NULL;
    uint8_t mine[32];
    msv_err err;

    if (strcmp(handle, c->handle) == 0)
        return MSV_ERR_INVALID;
    err = msv_client_connect(c);
    if (err == MSV_OK)
        err = verified_lookup(c, both, 2, &r);
    for (size_t i = 0; err == MSV_OK && i < 2; i++)
        err = remember(c, r->lookup_result->results[i]);
    if (err == MSV_OK && r->lookup_result->results[1]->n_devices == 0) {
        snprintf(c->why.message, sizeof(c->why.message), "%s is not registered", handle);
        err = MSV_ERR_NOT_FOUND;
    }
    if (err == MSV_OK)
        err = msv_safety_set_digest(r->lookup_result->results[0], mine);
    if (err == MSV_OK)
        err = msv_safety_set_digest(r->lookup_result->results[1], digest);
    if (err == MSV_OK)
        msv_safety_number(version, c->handle, mine, handle, digest, number);
    msv_frame_free(r);
    return err;
}

msv_err msv_client_mark_verified(struct msv_client *c, const char *handle, const uint8_t digest[32])
{
    char key[320];

    verified_key(handle, key, sizeof(key));
    return msv_client_db_set(c->db, key, digest, 32);
}

msv_err msv_client_verified(struct msv_client *c, const char *handle, const uint8_t digest[32])
{
    char key[320];
    uint8_t *was = NULL;
    size_t len = 0;
    msv_err err;

    verified_key(handle, key, sizeof(key));
    err = msv_client_db_get(c->db, key, &was, &len);
    if (err == MSV_OK && (len != 32 || !msv_equal_ct(was, digest, 32)))
        err = MSV_ERR_AUTH;
    free(was);
    return err;
}

/*
 * Sends to the devices of hds; on a stale list, *fresh holds the server's
 * current one. With a delivery token, sealed, on the connection that never
 * authenticated.
 */
static msv_err send_once(struct msv_client *c, const uint8_t id[16], const char *const *handles,
                         size_t n, Msv__Wire__HandleDevices *const *hds, size_t n_hds,
                         const uint8_t *pt, size_t pt_len, const uint8_t *token, msv_frame **fresh)
{
    struct sealed_set s = {0};
    msv_err err = check_verified(c, hds, n_hds);

    if (err == MSV_OK)
        err = seal_for(c, hds, n_hds, pt, pt_len, token != NULL, &s);
    if (err == MSV_OK && token != NULL && c->sealed_conn == NULL)
        err = plain_conn(c, &c->sealed_conn);
    if (err == MSV_OK)
        err = msv_request_send(token != NULL ? c->sealed_conn : c->conn, id, handles, n, s.out,
                               s.count, token, TIMEOUT_MS, fresh, &c->why);
    if (err == MSV_ERR_IO && token != NULL) {
        msv_conn_close(c->sealed_conn);
        c->sealed_conn = NULL;
    }
    sealed_clear(&s);
    return err;
}

/* The device sets last learnt for some handles, shaped as a lookup's results. */
struct known_sets {
    size_t n;
    Msv__Wire__HandleDevices *hds, **ptrs;
    Msv__Wire__DeviceInfo *infos, **info_ptrs;
    struct msv_known_device **devs; /* own the identities the infos point into */
    size_t *counts;
};

static void known_sets_free(struct known_sets *k)
{
    for (size_t i = 0; k->devs != NULL && i < k->n; i++)
        msv_known_devices_free(k->devs[i], k->counts[i]);
    free(k->hds);
    free(k->ptrs);
    free(k->infos);
    free(k->info_ptrs);
    free(k->devs);
    free(k->counts);
    memset(k, 0, sizeof(*k));
}

/*
 * Fills k from the device sets remembered for targets. Returns MSV_OK if
 * every target has one; MSV_ERR_NOT_FOUND if one is unknown or was learnt
 * over a day ago (ask the directory). The relay refuses a send whose set is out of date and answers
 * with the current one, so a remembered set is safe to use.
 */
static msv_err known_sets_load(struct msv_client *c, const char *const *targets, size_t n,
                               struct known_sets *k)
{
    size_t total = 0, at = 0;
    msv_err err = MSV_OK;

    memset(k, 0, sizeof(*k));
    k->n = n;
    k->devs = calloc(n + 1, sizeof(*k->devs));
    k->counts = calloc(n + 1, sizeof(*k->counts));
    if (k->devs == NULL || k->counts == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        err = msv_client_db_known_devices(c->db, targets[i], &k->devs[i], &k->counts[i]);
        if (err == MSV_OK && k->counts[i] == 0)
            err = MSV_ERR_NOT_FOUND;
        /* a set learnt over a day ago is learnt again: it may have lost a device since */
        if (err == MSV_OK && msv_kt_lookup_is_due(c->db, targets[i], msv_wall_ms()))
            err = MSV_ERR_NOT_FOUND;
        total += k->counts[i];
    }
    if (err != MSV_OK)
        return err;
    k->hds = calloc(n + 1, sizeof(*k->hds));
    k->ptrs = calloc(n + 1, sizeof(*k->ptrs));
    k->infos = calloc(total + 1, sizeof(*k->infos));
    k->info_ptrs = calloc(total + 1, sizeof(*k->info_ptrs));
    if (k->hds == NULL || k->ptrs == NULL || k->infos == NULL || k->info_ptrs == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        msv__wire__handle_devices__init(&k->hds[i]);
        k->hds[i].handle = (ProtobufCBinaryData){strlen(targets[i]), (uint8_t *)targets[i]};
        k->hds[i].n_devices = k->counts[i];
        k->hds[i].devices = &k->info_ptrs[at];
        for (size_t d = 0; d < k->counts[i]; d++, at++) {
            msv__wire__device_info__init(&k->infos[at]);
            k->infos[at].device_id = k->devs[i][d].device_id;
            k->infos[at].suite = k->devs[i][d].suite;
            k->infos[at].identity =
                (ProtobufCBinaryData){k->devs[i][d].identity_len, k->devs[i][d].identity};
            k->info_ptrs[at] = &k->infos[at];
        }
        k->ptrs[i] = &k->hds[i];
    }
    return MSV_OK;
}

/* Asks the directory for targets' devices and remembers them (warning of changes). */
static msv_err look_up(struct msv_client *c, const char *const *targets, size_t n,
                       msv_frame **known)
{
    msv_err err = verified_lookup(c, targets, n, known);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        const Msv__Wire__HandleDevices *hd = (*known)->lookup_result->results[i];

        err = remember(c, hd);
        if (err == MSV_OK && hd->n_devices == 0 && strcmp(targets[i], c->handle) != 0) {
            snprintf(c->why.message, sizeof(c->why.message), "%s is not registered", targets[i]);
            err = MSV_ERR_NOT_FOUND;
        }
    }
    return err;
}

/*
 * Sends to the targets' devices as last learnt (the directory is asked only
 * about handles not seen before); a stale set is replaced by the relay's
 * answer, remembered, and the send tried again.
 */
static msv_err deliver_group(struct msv_client *c, const uint8_t id[16], const char *const *targets,
                             size_t n, const uint8_t *pt, size_t pt_len, const uint8_t *token)
{
    msv_frame *known = NULL, *fresh = NULL;
    struct known_sets ks = {0};
    Msv__Wire__HandleDevices *const *start = NULL;
    size_t n_start = n;
    msv_err err = msv_client_connect(c);

    c->why.code = 0;
    if (err == MSV_OK) {
        err = known_sets_load(c, targets, n, &ks);
        if (err == MSV_OK) {
            start = ks.ptrs;
        } else if (err == MSV_ERR_NOT_FOUND) {
            err = look_up(c, targets, n, &known);
            if (err == MSV_OK) {
                start = known->lookup_result->results;
                n_start = known->lookup_result->n_results;
            }
        }
    }
    for (int tries = 0; err == MSV_OK && tries < SEND_TRIES; tries++) {
        Msv__Wire__HandleDevices *const *hds = fresh ? fresh->lookup_result->results : start;
        size_t n_hds = fresh ? fresh->lookup_result->n_results : n_start;
        msv_frame *stale = NULL;

        err = send_once(c, id, targets, n, hds, n_hds, pt, pt_len, token, &stale);
        msv_frame_free(stale);
        if (err != MSV_ERR_AGAIN)
            break;
        /* the device set changed since it was learnt: learn it from the log, then try again
         * (the relay's own list of the devices is not taken on trust) */
        msv_frame_free(fresh);
        fresh = NULL;
        err = look_up(c, targets, n, &fresh);
        if (err == MSV_OK && tries == SEND_TRIES - 1) {
            snprintf(c->why.message, sizeof(c->why.message),
                     "the relay keeps asking for devices that the transparency log does not "
                     "list; nothing was sealed for them");
            err = MSV_ERR_AGAIN;
        }
    }
    known_sets_free(&ks);
    msv_frame_free(known);
    msv_frame_free(fresh);
    return err;
}

#define UNSEALED "unsealed-sends" /* u64be: sends that fell back to authenticated */

uint64_t msv_client_unsealed_sends(struct msv_client *c)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t n = 0;

    if (msv_client_db_get(c->db, UNSEALED, &v, &len) == MSV_OK && len == 8)
        n = msv_get_u64be(v);
    free(v);
    return n;
}

/* Message id goes to handle authenticated: counted, and told through on_unsealed, once (a
 * message is tried again after a lost connection, and from the outbox). */
static msv_err unsealed(struct msv_client *c, const uint8_t id[16], const char *handle)
{
    char key[320], hex[33];
    uint8_t v[8], *seen = NULL;
    size_t len = 0;
    msv_err err = msv_hex_encode(id, 16, hex, sizeof(hex));

    snprintf(key, sizeof(key), "unsealed:%s:%s", hex, handle);
    if (err == MSV_OK)
        err = msv_client_db_get(c->db, key, &seen, &len);
    free(seen);
    if (err != MSV_ERR_NOT_FOUND)
        return err;
    msv_put_u64be(v, msv_client_unsealed_sends(c) + 1);
    if (c->on_unsealed != NULL)
        c->on_unsealed(c->ctx, handle);
    err = msv_client_db_set(c->db, key, "", 0);
    return err == MSV_OK ? msv_client_db_set(c->db, UNSEALED, v, sizeof(v)) : err;
}

/*
 * Sends to every target: sealed to each handle whose delivery token this
 * device knows (from a profile key its devices sent), the rest (and this
 * account's other devices) in one authenticated send. A token the relay
 * refuses sends that handle this message authenticated, with a notice; the
 * profile key is kept, so the next message is sealed again (a relay that
 * refuses tokens cannot turn sealed sender off for good).
 */
static msv_err deliver_once(struct msv_client *c, const uint8_t id[16], const char *const *targets,
                            size_t n, const uint8_t *pt, size_t pt_len)
{
    const char *plain[MSV_PARTICIPANTS_MAX];
    size_t n_plain = 0;
    msv_err err = msv_client_connect(c);

    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        uint8_t token[16];

        if (strcmp(targets[i], c->handle) != 0 &&
            msv_sessions_token_for(c, targets[i], token) == MSV_OK) {
            err = deliver_group(c, id, &targets[i], 1, pt, pt_len, token);
            if (err == MSV_OK)
                continue;
            if (err == MSV_ERR_AUTH && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_AUTH)
                err = unsealed(c, id, targets[i]);
            else if (err == MSV_ERR_UNSUPPORTED)
                err = MSV_OK; /* a device that cannot open sealed envelopes */
            if (err != MSV_OK)
                return err;
        }
        if (n_plain < MSV_PARTICIPANTS_MAX)
            plain[n_plain++] = targets[i];
    }
    if (err == MSV_OK && n_plain > 0)
        err = deliver_group(c, id, plain, n_plain, pt, pt_len, NULL);
    return err;
}

/* Worth trying again later: the connection failed, or the server asked to slow down. */
static int try_later(const struct msv_client *c, msv_err err)
{
    return err == MSV_ERR_IO ||
           (err == MSV_ERR_INVALID && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
}

#define RETRIES 3
#define BACKOFF_MS 500

/*
 * deliver_once, again after a lost connection or a request to slow down:
 * 0.5 s, 1 s, 2 s later. What still fails stays in the outbox for the next
 * command that connects.
 */
static msv_err deliver_payload(struct msv_client *c, const uint8_t id[16],
                               const char *const *targets, size_t n, const uint8_t *pt,
                               size_t pt_len)
{
    msv_err err = deliver_once(c, id, targets, n, pt, pt_len);

    for (int i = 0; try_later(c, err) && i < RETRIES; i++) {
        struct timespec pause = {0, 0};
        long ms = (long)BACKOFF_MS << i;

        msv_conn_close(c->conn);
        c->conn = NULL;
        msv_conn_close(c->sealed_conn);
        c->sealed_conn = NULL;
        pause.tv_sec = ms / 1000;
        pause.tv_nsec = (ms % 1000) * 1000000L;
        nanosleep(&pause, NULL);
        err = deliver_once(c, id, targets, n, pt, pt_len);
    }
    return err;
}

/*
 * Sends what the outbox still holds (messages a lost connection left
 * queued), oldest first; each goes to the participants its payload names.
 */
static msv_err flush_outbox(struct msv_client *c)
{
    struct msv_outbox_rec *o = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_outbox(c->db, &o, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct msv_payload *p = NULL;

        if (msv_payload_parse(o[i].payload, o[i].payload_len, &p) != MSV_OK) {
            err = msv_client_db_outbox_settle(c->db, o[i].message_id, "failed"); /* never goes */
            continue;
        }
        err = deliver_once(c, o[i].message_id, (const char *const *)p->participants,
                           p->participant_count, o[i].payload, o[i].payload_len);
        if (err == MSV_OK)
            err = msv_client_db_outbox_settle(c->db, o[i].message_id, "sent");
        else if (err == MSV_ERR_AUTH && c->why.code == MSV_REFUSAL_KEY_CHANGE)
            err = MSV_OK; /* waits until the user accepts the contact's new devices */
        else if (!try_later(c, err) && err != MSV_ERR_NOMEM && err != MSV_ERR_AGAIN)
            /* it will never go (a recipient left, say): history says so, the outbox lets go */
            err = msv_client_db_outbox_settle(c->db, o[i].message_id, "failed");
        msv_payload_free(p);
    }
    msv_outbox_free(o, n);
    return err;
}

/* Encrypts and uploads one file; fills ref (uri points into uri_buf). */
static msv_err upload(struct msv_client *c, const struct msv_file *f,
                      void (*progress)(uint64_t, uint64_t), struct msv_attachment_ref *ref,
                      char *uri_buf, size_t uri_len)
{
    struct msv_attachment_digest d;
    uint8_t *ct = malloc(f->len ? f->len : 1), blob[32];
    char hex[65];
    msv_err err = ct ? MSV_OK : MSV_ERR_NOMEM;

    if (f->len == 0)
        err = MSV_ERR_INVALID;
    else if (f->len > MSV_ATTACHMENT_MAX)
        err = MSV_ERR_TOO_BIG; /* more than any recipient would download */
    msv_attachment_key_generate(ref->key);
    if (err == MSV_OK)
        err = msv_attachment_encrypt(ref->key, f->data, f->len, ct, &d);
    if (err == MSV_OK)
        err = msv_client_connect(c);
    if (err == MSV_OK)
        err = msv_request_blob_upload(c->conn, ct, f->len, TIMEOUT_MS, progress, blob, &c->why);
    free(ct);
    if (err != MSV_OK || msv_hex_encode(blob, 32, hex, sizeof(hex)) != MSV_OK)
        return err != MSV_OK ? err : MSV_ERR_INVALID;
    snprintf(uri_buf, uri_len, "blob:%s", hex);
    ref->uri = uri_buf;
    memcpy(ref->sha256, d.sha256, 32);
    memcpy(ref->sha1, d.sha1, 20);
    ref->size = f->len;
    ref->name = (char *)f->name;
    ref->mime = (char *)f->mime;
    return MSV_OK;
}

#define LONG_TEXT_MIME "text/x-missive-long-message"
#define LONG_TEXT_PREVIEW 200

/* Uploads the files (and text too long to go inline) and points p at them. */
static msv_err attach(struct msv_client *c, const char *text, const struct msv_file *files,
                      size_t n_files, void (*progress)(uint64_t, uint64_t), struct msv_payload *p,
                      char (*uris)[80], char *preview)
{
    msv_err err = MSV_OK;

    p->attachment_count = 0;
    for (size_t i = 0; err == MSV_OK && i < n_files; i++) {
        err = upload(c, &files[i], progress, &p->attachments[i], uris[i], 80);
        if (err == MSV_OK)
            p->attachment_count++;
    }
    if (err == MSV_OK && text != NULL && strlen(text) > MSV_CLIENT_INLINE_TEXT_MAX) {
        struct msv_file long_text = {"message.txt", LONG_TEXT_MIME, (const uint8_t *)text,
                                     strlen(text)};
        size_t cut = LONG_TEXT_PREVIEW;

        /* the envelope carries a preview, cut on a character boundary */
        while (cut > 0 && ((unsigned char)text[cut] & 0xc0) == 0x80)
            cut--;
        memcpy(preview, text, cut);
        memcpy(preview + cut, "\xe2\x80\xa6", 4); /* an ellipsis and the NUL */
        p->text = preview;
        err = upload(c, &long_text, progress, &p->attachments[n_files], uris[n_files], 80);
        if (err == MSV_OK)
            p->attachment_count++;
    }
    return err;
}

/*
 * The one way out: p (its kind and content set) goes to every device of the
 * targets and of this account. Files and long text are attached first (for
 * messages); history shows text under conversation, queued until the relay
 * accepts the message, then sent.
 */
static msv_err send_payload(struct msv_client *c, const char *const *targets_in, size_t n_in,
                            struct msv_payload *p, const char *text, const char *conversation,
                            const struct msv_file *files, size_t n_files,
                            void (*progress)(uint64_t, uint64_t), uint8_t message_id[16])
{
    const char *targets[MSV_PARTICIPANTS_MAX];
    struct msv_attachment_ref refs[MSV_ATTACHMENTS_MAX];
    char uris[MSV_ATTACHMENTS_MAX][80], preview[LONG_TEXT_PREVIEW + 4];
    struct msv_message_rec rec = {.outgoing = 1, .status = "queued"};
    uint8_t *pt = NULL;
    size_t pt_len = 0, t = 0;
    msv_err err = MSV_OK;

    if (n_in == 0 || n_in >= MSV_PARTICIPANTS_MAX || n_files >= MSV_ATTACHMENTS_MAX)
        return MSV_ERR_INVALID;
    memset(refs, 0, sizeof(refs));
    /* the targets and this account, each once: its other devices get a copy */
    for (size_t i = 0; i <= n_in; i++) {
        const char *h = i < n_in ? targets_in[i] : c->handle;
        size_t k;

        for (k = 0; k < t && strcmp(targets[k], h) != 0; k++)
            ;
        if (k == t)
            targets[t++] = h;
    }
    if (p->kind == MSV_KIND_MESSAGE) {
        p->attachments = refs;
        err = attach(c, text, files, n_files, progress, p, uris, preview);
    }
    if (err != MSV_OK)
        return err;
    msv_random_bytes(p->message_id, MSV_ID_LEN);
    memcpy(message_id, p->message_id, MSV_ID_LEN);
    p->sent_at_ms = (uint64_t)msv_wall_ms();
    {
        struct msv_kt_head head;

        /* the receivers compare it with the log they see (gossip of tree heads) */
        p->has_log_head = msv_kt_known_head(c->db, &head) == MSV_OK;
        if (p->has_log_head)
            msv_kt_head_encode(&head, p->log_head);
    }
    if (p->participants == NULL) {
        p->participants = (char **)targets;
        p->participant_count = t;
    }
    /* the receivers' key to send to this device sealed (its delivery token's key; only
     * devices that speak modern register one) */
    p->has_profile_key = (msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)) &&
                         msv_sessions_profile_key(c, p->profile_key) == MSV_OK;
    err = msv_payload_encode(p, &pt, &pt_len);
    if (err != MSV_OK)
        return err;
    /* connect (and so flush older queued messages) before this one joins the outbox; a
     * server that cannot be reached now leaves it queued below */
    if (msv_client_connect(c) != MSV_OK) {
        msv_conn_close(c->conn);
        c->conn = NULL;
    }
    memcpy(rec.message_id, p->message_id, 16);
    rec.conversation = (char *)conversation;
    rec.sender = c->handle;
    rec.sender_device = c->device_id;
    rec.kind = (int)p->kind;
    rec.text = (char *)(text ? text : "");
    rec.sent_at_ms = rec.stored_at_ms = (int64_t)p->sent_at_ms;
    /* shown as queued until the relay accepts it, and kept in the outbox until then; control
     * messages (receipts, typing, edits) are not history */
    err = msv_client_db_outbox_put(c->db, conversation != NULL ? &rec : NULL, p->message_id,
                                   conversation ? conversation : "", pt, pt_len, msv_wall_ms());
    /* who may send receipts for it */
    if (err == MSV_OK && conversation != NULL)
        err = msv_client_db_recipients_put(c->db, p->message_id, targets, t);
    if (err == MSV_OK)
        err = deliver_payload(c, p->message_id, targets, t, pt, pt_len);
    if (err == MSV_OK)
        err = msv_client_db_outbox_settle(c->db, p->message_id, "sent");
    msv_secret_free(pt, pt_len);
    sodium_memzero(refs, sizeof(refs)); /* the attachment keys */
    return err;
}

msv_err msv_client_send(struct msv_client *c, const char *const *handles, size_t n,
                        const char *text, const struct msv_file *files, size_t n_files,
                        void (*progress)(uint64_t done, uint64_t total), uint8_t message_id[16])
{
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text};

    if (n == 0)
        return MSV_ERR_INVALID;
    return send_payload(c, handles, n, &p, text, handles[0], files, n_files, progress, message_id);
}

/* ---- groups --------------------------------------------------------------------------- */

#define MEMBERS_MAX 256

/* Splits a member list (one handle per line) in place into members[]. */
static size_t split_members(char *list, char **members)
{
    size_t n = 0;

    for (char *line = strtok_r(list, "\n", &list); line != NULL && n < MEMBERS_MAX;
         line = strtok_r(NULL, "\n", &list))
        members[n++] = line;
    return n;
}

static msv_err join_members(char *const *members, size_t n, char **out)
{
    struct msv_buf b;
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err;

    msv_buf_init(&b, MEMBERS_MAX * (MSV_HANDLE_MAX + 1) + 1);
    for (size_t i = 0; i < n; i++) {
        msv_buf_put(&b, members[i], strlen(members[i]));
        msv_buf_put_u8(&b, '\n');
    }
    msv_buf_put_u8(&b, 0);
    err = msv_buf_finish(&b, &bytes, &len);
    if (err == MSV_OK)
        *out = (char *)bytes;
    return err;
}

void msv_client_group_conversation(const uint8_t group_id[16], char out[40])
{
    char hex[33];

    if (msv_hex_encode(group_id, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(out, 40, "group:%s", hex);
}

msv_err msv_client_group_find(struct msv_client *c, const char *which, struct msv_group_rec *g)
{
    uint8_t id[16];
    size_t len = 0;

    if (strncmp(which, "group:", 6) == 0) {
        if (msv_hex_decode(which + 6, id, sizeof(id), &len) != MSV_OK || len != 16)
            return MSV_ERR_NOT_FOUND;
        return msv_client_db_group_get(c->db, id, NULL, g);
    }
    return msv_client_db_group_get(c->db, NULL, which, g);
}

msv_err msv_client_group_accept(struct msv_client *c, const char *which)
{
    struct msv_group_rec g = {0};
    msv_err err =
        strncmp(which, "group:", 6) == 0 ? msv_client_group_find(c, which, &g) : MSV_ERR_NOT_FOUND;

    if (err == MSV_OK)
        err = msv_client_db_group_accept(c->db, g.group_id);
    msv_group_clear(&g);
    return err;
}

/* A group this account is in, by name or id; an invitation is MSV_ERR_NOT_FOUND until accepted. */
static msv_err joined_group(struct msv_client *c, const char *which, struct msv_group_rec *g)
{
    msv_err err = msv_client_group_find(c, which, g);

    if (err == MSV_OK && !g->accepted) {
        msv_group_clear(g);
        err = MSV_ERR_NOT_FOUND;
    }
    return err;
}

/* MSV_OK if no accepted group is named name, MSV_ERR_EXISTS if one is: names stay unambiguous. */
static msv_err name_is_free(struct msv_client *c, const char *name)
{
    struct msv_group_rec g = {0};
    msv_err err = msv_client_db_group_get(c->db, NULL, name, &g);

    msv_group_clear(&g);
    if (err == MSV_OK)
        return MSV_ERR_EXISTS;
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/* Sends a group change with the new name and members to the old and new members. */
static msv_err announce_group(struct msv_client *c, const uint8_t group_id[16], const char *name,
                              char **old, size_t n_old, char **members, size_t n)
{
    const char *targets[2 * MEMBERS_MAX];
    struct msv_payload p = {.kind = MSV_KIND_GROUP_CHANGE,
                            .has_group = true,
                            .group_name = (char *)name,
                            .participants = members,
                            .participant_count = n};
    char conversation[40], text[256];
    uint8_t id[16];
    size_t t = 0;

    memcpy(p.group_id, group_id, 16);
    /* removed members hear of it too: they are out from now on */
    for (size_t i = 0; i < n_old; i++)
        targets[t++] = old[i];
    for (size_t i = 0; i < n; i++)
        targets[t++] = members[i];
    msv_client_group_conversation(group_id, conversation);
    snprintf(text, sizeof(text), "group \"%s\": %zu members", name, n);
    return send_payload(c, targets, t, &p, text, conversation, NULL, 0, NULL, id);
}

msv_err msv_client_group_create(struct msv_client *c, const char *name, const char *const *members,
                                size_t n, uint8_t group_id[16])
{
    char *all[MEMBERS_MAX], *list = NULL;
    size_t k = 0;
    msv_err err;

    if (n == 0 || n >= MEMBERS_MAX || name == NULL || name[0] == '\0')
        return MSV_ERR_INVALID;
    all[k++] = c->handle;
    for (size_t i = 0; i < n; i++) {
        size_t j;

        for (j = 0; j < k && strcmp(all[j], members[i]) != 0; j++)
            ;
        if (j == k)
            all[k++] = (char *)members[i];
    }
    msv_random_bytes(group_id, 16);
    err = name_is_free(c, name);
    if (err == MSV_OK)
        err = join_members(all, k, &list);
    if (err == MSV_OK)
        err = msv_client_db_group_put(c->db, group_id, name, list, 1, msv_wall_ms());
    free(list);
    return err == MSV_OK ? announce_group(c, group_id, name, NULL, 0, all, k) : err;
}

msv_err msv_client_group_change(struct msv_client *c, const char *name, const char *new_name,
                                const char *const *add, size_t n_add, const char *const *remove,
                                size_t n_remove)
{
    struct msv_group_rec g;
    char *old[MEMBERS_MAX], *now[MEMBERS_MAX], *list = NULL, *old_list = NULL;
    size_t n_old, n_now = 0;
    msv_err err = joined_group(c, name, &g);

    if (err == MSV_OK && new_name != NULL && strcmp(new_name, g.name) != 0 &&
        (err = name_is_free(c, new_name)) != MSV_OK)
        msv_group_clear(&g);
    if (err != MSV_OK)
        return err;
    old_list = strdup(g.members);
    err = old_list ? MSV_OK : MSV_ERR_NOMEM;
    n_old = err == MSV_OK ? split_members(g.members, old) : 0;
    for (size_t i = 0; i < n_old; i++) {
        int gone = 0;

        for (size_t r = 0; r < n_remove; r++)
            gone |= strcmp(old[i], remove[r]) == 0;
        if (!gone)
            now[n_now++] = old[i];
    }
    for (size_t a = 0; a < n_add && n_now < MEMBERS_MAX; a++) {
        size_t j;

        for (j = 0; j < n_now && strcmp(now[j], add[a]) != 0; j++)
            ;
        if (j == n_now)
            now[n_now++] = (char *)add[a];
    }
    if (err == MSV_OK)
        err = join_members(now, n_now, &list);
    if (err == MSV_OK)
        err = msv_client_db_group_put(c->db, g.group_id, new_name ? new_name : g.name, list, 1,
                                      msv_wall_ms());
    if (err == MSV_OK)
        err = announce_group(c, g.group_id, new_name ? new_name : g.name, old, n_old, now, n_now);
    free(list);
    free(old_list);
    msv_group_clear(&g);
    return err;
}

msv_err msv_client_group_send(struct msv_client *c, const char *name, const char *text,
                              const struct msv_file *files, size_t n_files,
                              void (*progress)(uint64_t done, uint64_t total),
                              uint8_t message_id[16])
{
    struct msv_group_rec g;
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text, .has_group = true};
    char *members[MEMBERS_MAX], conversation[40];
    size_t n;
    msv_err err = joined_group(c, name, &g);

    if (err != MSV_OK)
        return err;
    n = split_members(g.members, members);
    memcpy(p.group_id, g.group_id, 16);
    p.group_name = g.name;
    p.participants = members;
    p.participant_count = n;
    msv_client_group_conversation(g.group_id, conversation);
    err = send_payload(c, (const char *const *)members, n, &p, text, conversation, files, n_files,
                       progress, message_id);
    msv_group_clear(&g);
    return err;
}

/* ---- receipts, typing, edits ---------------------------------------------------------- */

/* The handles a conversation reaches: its group's members, or the other person. */
static msv_err conversation_targets(struct msv_client *c, const char *conversation,
                                    struct msv_group_rec *g, char **targets, size_t *n)
{
    uint8_t id[16];
    size_t len = 0;
    msv_err err;

    if (strncmp(conversation, "group:", 6) != 0) {
        targets[0] = (char *)conversation;
        *n = 1;
        return MSV_OK;
    }
    if (msv_hex_decode(conversation + 6, id, sizeof(id), &len) != MSV_OK || len != 16)
        return MSV_ERR_PARSE;
    err = msv_client_db_group_get(c->db, id, NULL, g);
    if (err == MSV_OK)
        *n = split_members(g->members, targets);
    return err;
}

/* Sends a control payload about target to the people of a conversation. */
static msv_err send_control(struct msv_client *c, enum msv_payload_kind kind,
                            const uint8_t target[16], const char *text, const char *conversation)
{
    struct msv_group_rec g = {0};
    struct msv_payload p = {.kind = kind, .text = (char *)text};
    char *targets[MEMBERS_MAX];
    uint8_t id[16];
    size_t n = 0;
    msv_err err = conversation_targets(c, conversation, &g, targets, &n);

    if (target != NULL) {
        p.has_target = true;
        memcpy(p.target_id, target, 16);
    }
    if (err == MSV_OK && kind == MSV_KIND_TYPING && g.name != NULL) {
        /* so that the members show it in the group, not beside it */
        p.has_group = true;
        memcpy(p.group_id, g.group_id, 16);
    }
    if (err == MSV_OK)
        err = send_payload(c, (const char *const *)targets, n, &p, NULL, NULL, NULL, 0, NULL, id);
    msv_group_clear(&g);
    return err;
}

msv_err msv_client_typing(struct msv_client *c, const char *conversation)
{
    return send_control(c, MSV_KIND_TYPING, NULL, NULL, conversation);
}

/* An edit or unsend of one of this account's messages. */
static msv_err change_own(struct msv_client *c, const uint8_t id[16], const char *text,
                          enum msv_payload_kind kind)
{
    struct msv_message_rec *m = NULL;
    msv_err err = msv_client_db_message_get(c->db, id, &m);

    if (err == MSV_OK && (!m->outgoing || m->kind != MSV_KIND_MESSAGE))
        err = MSV_ERR_INVALID; /* only this account's own messages */
    if (err == MSV_OK)
        err = send_control(c, kind, id, text, m->conversation);
    if (err == MSV_OK)
        err = msv_client_db_message_rewrite(c->db, id, text ? text : "",
                                            kind == MSV_KIND_EDIT ? "edited" : "unsent");
    msv_messages_free(m, m ? 1 : 0);
    return err;
}

msv_err msv_client_edit(struct msv_client *c, const uint8_t id[16], const char *text)
{
    return change_own(c, id, text, MSV_KIND_EDIT);
}

msv_err msv_client_unsend(struct msv_client *c, const uint8_t id[16])
{
    return change_own(c, id, NULL, MSV_KIND_UNSEND);
}

msv_err msv_client_mark_read(struct msv_client *c, const char *conversation, size_t *count)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_history(c->db, conversation, NULL, 0, &m, &n);

    *count = 0;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (m[i].outgoing || strcmp(m[i].status, "received") != 0)
            continue;
        /* the receipt goes to the sender, whatever conversation the message is in */
        err = send_control(c, MSV_KIND_RECEIPT_READ, m[i].message_id, NULL, m[i].sender);
        if (err == MSV_OK)
            err = msv_client_db_message_status(c->db, m[i].message_id, "read");
        if (err == MSV_OK)
            (*count)++;
    }
    msv_messages_free(m, n);
    return err;
}

/* "changed-at:<message id, hex>": u64be send time of the last edit or unsend applied to it. */
static void change_key(const uint8_t id[16], char key[48])
{
    char hex[33];

    sodium_bin2hex(hex, sizeof(hex), id, 16);
    snprintf(key, 48, "changed-at:%s", hex);
}

/*
 * 1 if an edit or unsend of target comes too late to apply: the message is
 * unsent already, or a change its author made later has been applied (a
 * relay that holds one edit back cannot roll the message back with it).
 */
static int change_is_stale(struct msv_client *c, const struct msv_message_rec *target,
                           const struct msv_payload *p)
{
    char key[48];
    uint8_t *v = NULL;
    size_t len = 0;
    int stale = strcmp(target->status, "unsent") == 0;

    change_key(p->target_id, key);
    if (!stale && msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == 8)
        stale = p->sent_at_ms <= msv_get_u64be(v);
    free(v);
    return stale;
}

static msv_err change_applied(struct msv_client *c, const struct msv_payload *p)
{
    char key[48];
    uint8_t when[8];

    change_key(p->target_id, key);
    msv_put_u64be(when, p->sent_at_ms);
    return msv_client_db_set(c->db, key, when, sizeof(when));
}

/* Whether a message this account sent went to handle: only they send receipts for it. */
static int is_recipient(struct msv_client *c, const struct msv_message_rec *m, const char *handle)
{
    msv_err err = msv_client_db_is_recipient(c->db, m->message_id, handle);

    /* sent before recipients were recorded: the conversation's other person */
    return err == MSV_OK || (err == MSV_ERR_NOT_FOUND && strcmp(m->conversation, handle) == 0);
}

/* Applies a receipt, typing notice, edit or unsend from sender. */
static msv_err take_control(struct msv_client *c, const char *sender, uint64_t device,
                            const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_message_rec *target = NULL;
    struct msv_incoming in = {.from = sender};
    struct msv_group_rec g = {0};
    char notice[600], group_conversation[40];
    msv_err err = MSV_OK;

    notice[0] = '\0';
    if (p->kind == MSV_KIND_SESSION_RESET) {
        /* its message started a new session with this device already (X3DH) */
        if (on_message != NULL) {
            in.kind = MSV_INCOMING_SESSION;
            in.notice = notice;
            snprintf(notice, sizeof(notice),
                     "%s (device %llu) could not read a message from this device; the session "
                     "with it was started anew. Send again what you sent it just before, if it "
                     "matters.",
                     sender, (unsigned long long)device);
            on_message(ctx, &in);
        }
        return MSV_OK;
    }
    if (strcmp(sender, c->handle) == 0)
        return MSV_OK; /* this account's own devices: nothing to apply */
    if (p->has_target && msv_client_db_message_get(c->db, p->target_id, &target) != MSV_OK)
        return MSV_OK; /* about a message this device does not have */
    switch (p->kind) {
    case MSV_KIND_RECEIPT_DELIVERED:
    case MSV_KIND_RECEIPT_READ:
        /* only for what this account sent, and "read" is never taken back to "delivered" */
        if (target->outgoing && is_recipient(c, target, sender) &&
            (p->kind == MSV_KIND_RECEIPT_READ || strcmp(target->status, "read") != 0)) {
            in.kind = MSV_INCOMING_RECEIPT;
            in.status = p->kind == MSV_KIND_RECEIPT_READ ? "read" : "delivered";
            err = msv_client_db_message_status(c->db, p->target_id, in.status);
            if (err == MSV_OK && on_message != NULL) {
                in.conversation = target->conversation;
                in.target = p->target_id;
                on_message(ctx, &in);
            }
        }
        break;
    case MSV_KIND_TYPING:
        in.kind = MSV_INCOMING_TYPING;
        in.conversation = sender;
        snprintf(notice, sizeof(notice), "%s is typing", sender);
        if (p->has_group && msv_client_db_group_get(c->db, p->group_id, NULL, &g) == MSV_OK) {
            /* in a group this device knows */
            msv_client_group_conversation(p->group_id, group_conversation);
            in.conversation = group_conversation;
            snprintf(notice, sizeof(notice), "%s is typing in %s", sender, g.name);
            msv_group_clear(&g);
        }
        break;
    case MSV_KIND_EDIT:
    case MSV_KIND_UNSEND:
        /* only the author changes a message, in the order the author made the changes */
        if (strcmp(target->sender, sender) != 0 || change_is_stale(c, target, p))
            break;
        err = change_applied(c, p);
        if (err == MSV_OK)
            err = msv_client_db_message_rewrite(c->db, p->target_id,
                                                p->kind == MSV_KIND_EDIT ? p->text : "",
                                                p->kind == MSV_KIND_EDIT ? "edited" : "unsent");
        in.kind = MSV_INCOMING_EDIT;
        in.conversation = target->conversation;
        in.target = p->target_id;
        in.status = p->kind == MSV_KIND_EDIT ? "edited" : "unsent";
        snprintf(notice, sizeof(notice), "%s %s a message%s%.200s", sender,
                 p->kind == MSV_KIND_EDIT ? "edited" : "unsent",
                 p->kind == MSV_KIND_EDIT ? ": " : "", p->kind == MSV_KIND_EDIT ? p->text : "");
        break;
    default:
        break;
    }
    if (notice[0] != '\0' && on_message != NULL) {
        in.notice = notice;
        on_message(ctx, &in);
    }
    msv_messages_free(target, target ? 1 : 0);
    return err;
}

/* ---- receiving ------------------------------------------------------------------------ */

/* The sender's public identity, from the known devices, else from the directory. */
static msv_err sender_identity(struct msv_client *c, const char *handle, uint64_t device,
                               struct msv_public_identity **out)
{
    for (int fresh = 0; fresh < 2; fresh++) {
        struct msv_known_device *devs = NULL;
        size_t n = 0;
        msv_err err = msv_client_db_known_devices(c->db, handle, &devs, &n);

        for (size_t i = 0; err == MSV_OK && i < n; i++) {
            if (devs[i].device_id == device) {
                err = msv_public_identity_parse((enum msv_suite)devs[i].suite, devs[i].identity,
                                                devs[i].identity_len, out);
                msv_known_devices_free(devs, n);
                return err;
            }
        }
        msv_known_devices_free(devs, n);
        if (err != MSV_OK)
            return err;
        if (fresh == 0) {
            msv_frame *r = NULL;

            err = msv_client_devices(c, handle, &r);
            msv_frame_free(r);
            if (err != MSV_OK)
                return err;
        }
    }
    return MSV_ERR_NOT_FOUND;
}

/* The conversation a message belongs to: the other person, from this account's view. */
static const char *conversation_of(const struct msv_client *c, const char *sender,
                                   const struct msv_payload *p)
{
    if (strcmp(sender, c->handle) != 0)
        return sender;
    /* a copy of something this account sent from another device */
    for (size_t i = 0; i < p->participant_count; i++) {
        if (strcmp(p->participants[i], c->handle) != 0)
            return p->participants[i];
    }
    return c->handle;
}

#define LONG_TEXT_LIMIT (1u << 20)

/* A file name safe to put in a path: the last component, printable ASCII kept. */
static void safe_name(const char *name, char *out, size_t len)
{
    const char *base = name ? strrchr(name, '/') : NULL;
    size_t o = 0;

    base = base ? base + 1 : (name ? name : "");
    for (; *base && o + 1 < len; base++)
        out[o++] = (*base > ' ' && *base < 0x7f && *base != '/') ? *base : '_';
    if (o == 0 || out[0] == '.')
        o = (size_t)snprintf(out, len, "attachment");
    out[o < len ? o : len - 1] = '\0';
}

/* The account's attachments/ directory (made if missing), opened without following a link. */
static int open_attachments(const struct msv_client *c)
{
    char dir[1100];

    snprintf(dir, sizeof(dir), "%s/attachments", c->dir);
    return msv_privdir_open(AT_FDCWD, dir, 1);
}

/*
 * Creates a received file under attachments/ as <message id>-<name>, or
 * <message id>-<n>-<name> when that is taken (a message with two files of
 * one name): never over an existing file, never through a link. *dir
 * receives attachments/ (close it), file the name; -1 if no file is made.
 */
static int create_file(const struct msv_client *c, const uint8_t id[16], const char *name, int *dir,
                       char *file, size_t file_len)
{
    char hex[33], safe[128];
    int fd = -1;

    *dir = open_attachments(c);
    if (*dir < 0 || msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
        return -1;
    safe_name(name, safe, sizeof(safe));
    for (unsigned n = 1; fd < 0 && n <= 2 * MSV_ATTACHMENTS_MAX; n++) {
        if (n == 1)
            snprintf(file, file_len, "%s-%s", hex, safe);
        else
            snprintf(file, file_len, "%s-%u-%s", hex, n, safe);
        fd = openat(*dir, file, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    return fd;
}

/* A received file on its way to disk: the ciphertext, hashed as it is written. */
struct file_sink {
    int fd;
    struct msv_attachment_hasher *hash;
    size_t len;
};

static msv_err to_file(void *ctx, size_t size, const uint8_t *piece, size_t len)
{
    struct file_sink *f = ctx;
    msv_err err = msv_attachment_hasher_update(f->hash, piece, len);

    (void)size;
    if (err == MSV_OK)
        err = msv_write_all(f->fd, piece, len);
    if (err == MSV_OK)
        f->len += len;
    return err;
}

/* Decrypts the file's len bytes where they are, a piece at a time. */
static msv_err decrypt_in_place(int fd, const uint8_t key[MSV_ATTACHMENT_KEY_LEN], size_t len)
{
    struct msv_attachment_cipher *cipher = NULL;
    size_t piece = 1u << 20;
    uint8_t *buf = malloc(piece);
    msv_err err = buf ? msv_attachment_cipher_new(key, &cipher) : MSV_ERR_NOMEM;

    for (size_t off = 0; err == MSV_OK && off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;

        if (pread(fd, buf, n, (off_t)off) != (ssize_t)n)
            err = MSV_ERR_IO;
        if (err == MSV_OK)
            err = msv_attachment_cipher_update(cipher, buf, n, buf);
        if (err == MSV_OK && pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
            err = MSV_ERR_IO;
    }
    msv_attachment_cipher_free(cipher);
    msv_secret_free(buf, piece);
    return err;
}

/* The blob a reference names; MSV_ERR_UNSUPPORTED for a location this client cannot fetch. */
static msv_err blob_of(const struct msv_attachment_ref *a, uint8_t blob[32])
{
    size_t n = 0;

    if (strncmp(a->uri, "blob:", 5) != 0 || msv_hex_decode(a->uri + 5, blob, 32, &n) != MSV_OK ||
        n != 32)
        return MSV_ERR_UNSUPPORTED;
    return MSV_OK;
}

/*
 * Fetches a file straight to disk (create_file()): the ciphertext is written
 * as it arrives, its hash (the one the sender signed) checked, then it is
 * decrypted where it lies; nothing is held whole in memory. On failure no
 * file is left. MSV_ERR_EXISTS if no file can be made in attachments/.
 */
static msv_err fetch_to_file(struct msv_client *c, const struct msv_attachment_ref *a,
                             const uint8_t id[16], const char *name, char *path, size_t path_len,
                             size_t *len)
{
    struct file_sink f = {.fd = -1};
    struct msv_attachment_digest d;
    uint8_t blob[32];
    char file[200];
    int dir = -1;
    msv_err err = blob_of(a, blob);

    if (err == MSV_OK && (f.fd = create_file(c, id, name, &dir, file, sizeof(file))) < 0)
        err = MSV_ERR_EXISTS;
    if (err == MSV_OK)
        err = msv_attachment_hasher_new(&f.hash);
    if (err == MSV_OK)
        err = msv_request_blob_stream(c->conn, blob, MSV_ATTACHMENT_MAX, TIMEOUT_MS, c->on_download,
                                      c->ctx, to_file, &f, &c->why);
    if (err == MSV_OK)
        err = msv_attachment_hasher_final(f.hash, &d);
    if (err == MSV_OK && !msv_equal_ct(d.sha256, a->sha256, 32))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = decrypt_in_place(f.fd, a->key, f.len);
    if (err == MSV_OK && fsync(f.fd) != 0)
        err = MSV_ERR_IO;
    if (f.fd >= 0 && close(f.fd) != 0 && err == MSV_OK)
        err = MSV_ERR_IO;
    if (err != MSV_OK && f.fd >= 0)
        unlinkat(dir, file, 0); /* no file that is not the whole of what was sent */
    if (dir >= 0)
        close(dir);
    msv_attachment_hasher_free(f.hash);
    snprintf(path, path_len, "%s/attachments/%s", c->dir, err == MSV_OK ? file : "");
    if (err == MSV_OK)
        *len = f.len;
    return err;
}

/* Writes a received file held in memory (a long text that was not one) as create_file() says. */
static msv_err save_file(struct msv_client *c, const uint8_t id[16], const char *name,
                         const uint8_t *data, size_t len, char *path, size_t path_len)
{
    char file[200];
    int dir = -1, fd = create_file(c, id, name, &dir, file, sizeof(file));
    msv_err err = fd >= 0 ? msv_write_all(fd, data, len) : MSV_ERR_EXISTS;

    if (fd >= 0 && close(fd) != 0 && err == MSV_OK)
        err = MSV_ERR_IO;
    if (err != MSV_OK && fd >= 0)
        unlinkat(dir, file, 0);
    if (dir >= 0)
        close(dir);
    snprintf(path, path_len, "%s/attachments/%s", c->dir, err == MSV_OK ? file : "");
    return err;
}

/* Fetches and decrypts one attachment in memory; MSV_ERR_AUTH if it fails its hash check. */
static msv_err fetch_one(struct msv_client *c, const struct msv_attachment_ref *a, size_t max,
                         uint8_t **pt, size_t *len)
{
    uint8_t blob[32], *ct = NULL;
    size_t ct_len = 0;
    msv_err err = blob_of(a, blob);

    if (err == MSV_OK)
        err = msv_request_blob_download(c->conn, blob, max, TIMEOUT_MS, c->on_download, c->ctx, &ct,
                                        &ct_len, &c->why);
    if (err == MSV_OK && (*pt = malloc(ct_len ? ct_len : 1)) == NULL)
        err = MSV_ERR_NOMEM;
    /* the hash the sender signed is checked before anything is decrypted */
    if (err == MSV_OK &&
        (err = msv_attachment_decrypt(a->key, a->sha256, ct, ct_len, *pt)) != MSV_OK) {
        free(*pt);
        *pt = NULL;
    }
    free(ct);
    if (err == MSV_OK)
        *len = ct_len;
    return err;
}

/* Why a file cannot be had, for history; NULL for what may work next time (network, memory). */
static const char *unavailable(msv_err err)
{
    switch (err) {
    case MSV_ERR_IO:
    case MSV_ERR_NOMEM:
        return NULL;
    case MSV_ERR_AUTH:
        return "it failed its integrity check";
    case MSV_ERR_TOO_BIG:
        return "larger than the 256 MiB a client takes";
    case MSV_ERR_NOT_FOUND:
        return "the server does not have it (any more)";
    case MSV_ERR_UNSUPPORTED:
        return "at a location this client cannot fetch";
    case MSV_ERR_EXISTS:
        return "it could not be saved in the account's attachments directory";
    default:
        return msv_strerror(err);
    }
}

static int is_long_text(const struct msv_attachment_ref *a, const uint8_t *pt, size_t len)
{
    return a->mime != NULL && strcmp(a->mime, LONG_TEXT_MIME) == 0 && len <= LONG_TEXT_LIMIT &&
           memchr(pt, 0, len) == NULL && msv_utf8_is_valid(pt, len);
}

/*
 * Fetches, checks and keeps the message's attachments. *text (caller frees)
 * receives what history shows: the text (the whole of a long one), then a
 * line per file. A network failure (or want of memory) is returned, so that
 * the message is not acknowledged and comes again; a file that cannot be had
 * for any other reason (too big, gone, tampered with, not to be saved) is a
 * "not available" line, and the message is kept and acknowledged: nothing
 * stays stuck in the queue behind it.
 */
static msv_err fetch_attachments(struct msv_client *c, const struct msv_payload *p, char **text)
{
    struct msv_buf body, notes;
    uint8_t *out = NULL;
    size_t out_len = 0;
    msv_err err = MSV_OK;
    int have_long = 0;

    msv_buf_init(&body, LONG_TEXT_LIMIT + 64 * 1024 + 1);
    msv_buf_init(&notes, 64 * 1024);
    for (size_t i = 0; err == MSV_OK && i < p->attachment_count; i++) {
        const struct msv_attachment_ref *a = &p->attachments[i];
        const char *name = a->name ? a->name : "attachment";
        uint8_t *pt = NULL;
        size_t len = 0;
        char line[1400], path[1300];
        int as_text = 0;

        line[0] = '\0';
        err = MSV_ERR_TOO_BIG;
        if (!have_long && a->mime != NULL && strcmp(a->mime, LONG_TEXT_MIME) == 0)
            err = fetch_one(c, a, LONG_TEXT_LIMIT, &pt, &len); /* the message's text: in memory */
        if (err == MSV_OK && is_long_text(a, pt, len)) {
            have_long = as_text = 1;
            msv_buf_put(&body, pt, len);
        } else if (err == MSV_OK) {
            err = save_file(c, p->message_id, name, pt, len, path, sizeof(path));
        } else if (err == MSV_ERR_TOO_BIG) { /* a file (or a long text over the limit) */
            err = fetch_to_file(c, a, p->message_id, name, path, sizeof(path), &len);
        }
        if (err == MSV_OK && !as_text) {
            snprintf(line, sizeof(line), "\n[file: %s (%zu bytes)]", path, len);
        } else if (err != MSV_OK && unavailable(err) != NULL) {
            /* the message itself is fine: keep it (and acknowledge it), say what is missing */
            snprintf(line, sizeof(line), "\n[file %s not available: %s]", name, unavailable(err));
            err = MSV_OK;
        }
        msv_buf_put(&notes, line, strlen(line));
        msv_secret_free(pt, pt ? len : 0);
    }
    if (!have_long && p->text != NULL)
        msv_buf_put(&body, p->text, strlen(p->text));
    msv_buf_put(&body, notes.data, notes.len);
    msv_buf_put_u8(&body, 0);
    msv_buf_clear(&notes);
    if (err != MSV_OK) {
        msv_buf_clear(&body);
        return err;
    }
    err = msv_buf_finish(&body, &out, &out_len);
    if (err == MSV_OK)
        *text = (char *)out;
    return err;
}

/*
 * Who may speak in a message's group: a member of a group this device knows
 * (g receives it), or, for a group it does not know (g->name stays NULL), one
 * of the members the message names. MSV_ERR_AUTH for anyone else: nobody
 * posts into a group they are not in, or makes one without being in it.
 */
static msv_err group_sender(struct msv_client *c, const char *sender, const struct msv_payload *p,
                            struct msv_group_rec *g)
{
    char *known[MEMBERS_MAX];
    char *const *members = p->participants;
    size_t n = p->participant_count;
    msv_err err = msv_client_db_group_get(c->db, p->group_id, NULL, g);

    if (err == MSV_OK) {
        n = split_members(g->members, known);
        members = known;
    }
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(members[i], sender) == 0)
            return MSV_OK;
    }
    return MSV_ERR_AUTH;
}

/*
 * Applies what a message from a member (group_sender()) says about its group
 * g: a change sets name and members; the first message of a group this
 * device does not know creates it, as an invitation unless this account made
 * it. *text, for group changes, becomes the description history shows.
 */
static msv_err learn_group(struct msv_client *c, const char *sender, const struct msv_payload *p,
                           const struct msv_group_rec *g, char **text)
{
    char *members = NULL;
    msv_err err;

    if (g->name != NULL && p->kind != MSV_KIND_GROUP_CHANGE)
        return MSV_OK; /* a message in a group this device knows: nothing to learn */
    err = join_members(p->participants, p->participant_count, &members);
    if (err == MSV_OK)
        err = msv_client_db_group_put(c->db, p->group_id,
                                      p->group_name ? p->group_name : (g->name ? g->name : "group"),
                                      members, strcmp(sender, c->handle) == 0, msv_wall_ms());
    if (err == MSV_OK && p->kind == MSV_KIND_GROUP_CHANGE) {
        struct msv_buf b;
        uint8_t *out = NULL;
        size_t len = 0;

        msv_buf_init(&b, 128 * 1024);
        msv_buf_put(&b, "group \"", 7);
        if (p->group_name != NULL)
            msv_buf_put(&b, p->group_name, strlen(p->group_name));
        msv_buf_put(&b, "\": members", 10);
        for (size_t i = 0; i < p->participant_count; i++) {
            msv_buf_put(&b, i ? ", " : " ", i ? 2 : 1);
            msv_buf_put(&b, p->participants[i], strlen(p->participants[i]));
        }
        msv_buf_put_u8(&b, 0);
        if (msv_buf_finish(&b, &out, &len) == MSV_OK) {
            free(*text);
            *text = (char *)out;
        }
    }
    free(members);
    return err;
}

/* Opens and stores one delivered message; MSV_ERR_EXISTS for a redelivery. */
/* Keeps the log head a message carried, once per distinct head, for the monitor. */
static void keep_gossip(struct msv_client *c, const char *sender, const struct msv_payload *p)
{
    if (!p->has_log_head || strcmp(sender, c->handle) == 0)
        return;
    for (size_t i = 0; i < c->n_gossip; i++) {
        if (memcmp(c->gossip[i].head, p->log_head, MSV_LOG_HEAD_LEN) == 0)
            return;
    }
    if (c->n_gossip == sizeof(c->gossip) / sizeof(c->gossip[0]))
        return; /* enough to compare this time; later messages carry heads too */
    snprintf(c->gossip[c->n_gossip].from, sizeof(c->gossip[0].from), "%s", sender);
    memcpy(c->gossip[c->n_gossip++].head, p->log_head, MSV_LOG_HEAD_LEN);
}

/* Who sent a delivery, as far as it was read, and what reading it changed in a session. */
struct incoming {
    char sender[257];
    uint64_t device;
    int session_message;
    int sender_proved; /* the sender's device key opened the sealed layer, or the relay named it */
    int has_digest;
    uint8_t digest[32]; /* of the envelope read: recorded once read, so a replay is refused */
    struct msv_session_update update;
    int owes_receipt; /* a new message: its delivery receipt goes once the session is stored */
    uint8_t message_id[16]; /* the sender's, which the receipt names */
    uint8_t stored_id[16];  /* the history's: the same, or local_id after a reused id */
};

/*
 * Opens a delivery: a sealed one first yields its claimed sender, whose
 * device key (the directory's, transparency-checked) must open its second
 * layer; then that key authenticates the envelope, a session message or the
 * suite's own.
 */
static msv_err open_delivery(struct msv_client *c, const Msv__Wire__Deliver *d, struct incoming *in,
                             uint8_t **pt, size_t *pt_len)
{
    struct msv_public_identity *pub = NULL;
    uint8_t *inner = NULL;
    const uint8_t *env = d->ciphertext.data;
    size_t env_len = d->ciphertext.len;
    msv_err err = MSV_OK;

    if (d->sender_device == 0) { /* sealed: the sender is inside */
        char handle[256];

        err = msv_sealed_sender(c->id, d->ciphertext.data, d->ciphertext.len, handle, &in->device);
        if (err == MSV_OK)
            snprintf(in->sender, sizeof(in->sender), "%s", handle);
    } else {
        snprintf(in->sender, sizeof(in->sender), "%.*s", (int)d->sender_handle.len,
                 (const char *)d->sender_handle.data);
        in->device = d->sender_device;
    }
    if (err == MSV_OK)
        err = sender_identity(c, in->sender, in->device, &pub);
    /* the sender's static key proves the claim before anything else reads the envelope */
    if (err == MSV_OK && d->sender_device == 0)
        err =
            msv_sealed_unwrap(c->id, pub, d->ciphertext.data, d->ciphertext.len, &inner, &env_len);
    if (err == MSV_OK && d->sender_device == 0)
        env = inner;
    in->sender_proved = err == MSV_OK;
    /* every kind of envelope, every suite: one read once is never read again */
    if (err == MSV_OK) {
        crypto_generichash(in->digest, sizeof(in->digest), env, env_len, NULL, 0);
        in->has_digest = 1;
        err = msv_client_db_envelope_seen(c->db, in->digest);
        err = err == MSV_OK ? MSV_ERR_EXISTS : err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
    }
    in->session_message = err == MSV_OK && msv_sessions_is_session_message(env, env_len);
    if (err == MSV_OK && in->session_message)
        err = msv_sessions_open(c, in->sender, in->device, pub, env, env_len, pt, pt_len,
                                &in->update);
    else if (err == MSV_OK &&
             msv_envelope_suite(env, env_len) !=
                 msv_suite_common(msv_identity_suites(c->id), msv_public_identity_suites(pub)))
        err = MSV_ERR_AUTH; /* not the best suite both speak: a sender never does that */
    else if (err == MSV_OK)
        err = msv_open(c->id, pub, env, env_len, NULL, pt, pt_len);
    msv_public_identity_free(pub);
    free(inner);
    return err;
}

/*
 * After a received message is stored, two steps remain, each recorded when
 * done so that a process killed in between resumes them on its next receive
 * (the message's redelivery is recognised as stored and does nothing more):
 * showing it (on_message), then handing its delivery receipt to the outbox.
 * A step may so happen twice, never not at all.
 */
static msv_err show_message(struct msv_client *c, const struct msv_message_rec *m,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    if (on_message != NULL) {
        struct msv_incoming in = {.kind = MSV_INCOMING_MESSAGE,
                                  .message = m,
                                  .from = m->sender,
                                  .conversation = m->conversation};

        on_message(ctx, &in);
    }
    return msv_client_db_message_done(c->db, m->message_id, MSV_MESSAGE_TO_SHOW);
}

/* The receipt for message_id goes to sender; stored_id is the history's row that owed it. */
static msv_err send_receipt(struct msv_client *c, const uint8_t message_id[16],
                            const uint8_t stored_id[16], const char *sender)
{
    /* queued in the outbox even when it cannot go now: only a failure to queue it is kept */
    if (send_control(c, MSV_KIND_RECEIPT_DELIVERED, message_id, NULL, sender) == MSV_ERR_NOMEM)
        return MSV_ERR_NOMEM;
    return msv_client_db_message_done(c->db, stored_id, MSV_MESSAGE_RECEIPT_OWED);
}

/* The steps that a process stopped before (see show_message), oldest message first. */
static msv_err resume_pending(struct msv_client *c,
                              void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                              size_t *count)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_messages_pending(c->db, &m, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (m[i].pending & MSV_MESSAGE_TO_SHOW) {
            err = show_message(c, &m[i], on_message, ctx);
            (*count)++;
        }
        if (err == MSV_OK && (m[i].pending & MSV_MESSAGE_RECEIPT_OWED))
            err = send_receipt(c, m[i].message_id, m[i].message_id, m[i].sender);
    }
    msv_messages_free(m, n);
    return err;
}

/*
 * Message ids are the sender's choice: someone else who saw one (a member of
 * the same group) could send their own message under it first. So a stored id
 * is a redelivery (MSV_ERR_EXISTS) only if the stored message came from the
 * same sender and device. Otherwise the new message is kept, under a local id
 * (local_id) derived from the id, the sender and the device, so that its own
 * redelivery is recognised, with a note saying whose id it reused.
 */
static msv_err redelivery_or_conflict(struct msv_client *c, const struct incoming *from,
                                      const struct msv_payload *p, uint8_t local_id[16], char *note,
                                      size_t note_len)
{
    struct msv_message_rec *m = NULL;
    uint8_t device_be[8];
    crypto_generichash_state h;
    msv_err err = msv_client_db_message_get(c->db, p->message_id, &m);

    memcpy(local_id, p->message_id, 16);
    note[0] = '\0';
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    if (strcmp(m->sender, from->sender) == 0 &&
        (m->sender_device == from->device || m->sender_device == 0)) {
        msv_messages_free(m, 1);
        return MSV_ERR_EXISTS;
    }
    snprintf(note, note_len, "\n[sent under the id of an earlier message from %s (device %llu)]",
             m->sender, (unsigned long long)m->sender_device);
    msv_messages_free(m, 1);
    msv_put_u64be(device_be, from->device);
    crypto_generichash_init(&h, (const uint8_t *)"missive: reused message id", 26, 16);
    crypto_generichash_update(&h, p->message_id, 16);
    crypto_generichash_update(&h, (const uint8_t *)from->sender, strlen(from->sender) + 1);
    crypto_generichash_update(&h, device_be, sizeof(device_be));
    crypto_generichash_final(&h, local_id, 16);
    return msv_client_db_message_known(c->db, local_id) == MSV_OK ? MSV_ERR_EXISTS : MSV_OK;
}

/* Appends note to *text (both NUL-terminated; *text is replaced, the old one wiped). */
static msv_err append_note(char **text, const char *note)
{
    size_t n = strlen(*text), k = strlen(note);
    char *t = malloc(n + k + 1);

    if (t == NULL)
        return MSV_ERR_NOMEM;
    memcpy(t, *text, n);
    memcpy(t + n, note, k + 1);
    msv_secret_free(*text, n);
    *text = t;
    return MSV_OK;
}

static msv_err take_message(struct msv_client *c, const Msv__Wire__Deliver *d,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                            struct incoming *from)
{
    struct msv_payload *p = NULL;
    struct msv_message_rec rec = {.status = "received"};
    struct msv_group_rec group = {0};
    char *sender = from->sender, *text = NULL, group_conversation[40], note[600];
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    msv_err err = open_delivery(c, d, from, &pt, &pt_len);

    if (err == MSV_OK)
        err = msv_payload_parse(pt, pt_len, &p);
    msv_secret_free(pt, pt_len);
    if (err == MSV_OK && p->sent_at_ms != 0 &&
        (int64_t)p->sent_at_ms < msv_wall_ms() - SEEN_KEEP_MS)
        err = MSV_ERR_REPLAY;
    if (err != MSV_OK) {
        msv_payload_free(p);
        return err;
    }
    /* the key to answer it sealed */
    if (p->has_profile_key && strcmp(sender, c->handle) != 0 &&
        (err = msv_sessions_learn_profile(c, sender, p->profile_key)) != MSV_OK) {
        msv_payload_free(p);
        return err;
    }
    keep_gossip(c, sender, p);
    if (p->kind != MSV_KIND_MESSAGE && p->kind != MSV_KIND_GROUP_CHANGE) {
        err = take_control(c, sender, from->device, p, on_message, ctx);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, not a new message */
    }
    /* a redelivery: nothing to fetch or store again */
    if ((err = redelivery_or_conflict(c, from, p, rec.message_id, note, sizeof(note))) != MSV_OK) {
        msv_payload_free(p);
        return err;
    }
    /* refused before anything is fetched; acknowledged, so it does not come again */
    if (p->has_group && (err = group_sender(c, sender, p, &group)) != MSV_OK) {
        msv_group_clear(&group);
        msv_payload_free(p);
        return err == MSV_ERR_AUTH ? MSV_ERR_EXISTS : err;
    }
    err = fetch_attachments(c, p, &text);
    if (err == MSV_OK && note[0] != '\0' && (err = append_note(&text, note)) != MSV_OK)
        msv_secret_free(text, strlen(text));
    if (err != MSV_OK) {
        msv_group_clear(&group);
        msv_payload_free(p);
        return err;
    }
    rec.conversation = (char *)conversation_of(c, sender, p);
    if (p->has_group) {
        msv_client_group_conversation(p->group_id, group_conversation);
        rec.conversation = group_conversation;
        err = learn_group(c, sender, p, &group, &text);
        msv_group_clear(&group);
        if (err != MSV_OK) {
            msv_secret_free(text, strlen(text));
            msv_payload_free(p);
            return err;
        }
    }
    rec.outgoing = strcmp(sender, c->handle) == 0;
    rec.status = rec.outgoing ? "sent" : "received"; /* a copy from this account's other device */
    rec.sender = sender;
    rec.sender_device = from->device;
    rec.kind = (int)p->kind;
    rec.text = text;
    rec.sent_at_ms = (int64_t)p->sent_at_ms;
    rec.stored_at_ms = msv_wall_ms();
    from->owes_receipt = !rec.outgoing && p->kind == MSV_KIND_MESSAGE;
    rec.pending = MSV_MESSAGE_TO_SHOW | (from->owes_receipt ? MSV_MESSAGE_RECEIPT_OWED : 0);
    memcpy(from->message_id, p->message_id, 16);
    memcpy(from->stored_id, rec.message_id, 16);
    /* stored before it is acknowledged; the message id makes a redelivery a no-op */
    err = msv_client_db_message_put(c->db, &rec);
    /* a copy of this account's own message: who it went to, for their receipts */
    if (err == MSV_OK && rec.outgoing)
        err = msv_client_db_recipients_put(
            c->db, rec.message_id, (const char *const *)p->participants, p->participant_count);
    if (err == MSV_OK)
        err = show_message(c, &rec, on_message, ctx);
    msv_secret_free(text, strlen(text));
    msv_payload_free(p);
    return err;
}

/*
 * What a device notice of this account means for the transparency monitor:
 * a request to join is kept (its key is what an approval signs); an approval
 * counts the device as the account's own only if one of the account's own
 * devices signed it — the server cannot. Should recording fail, the monitor
 * warns of the device: a false alarm, never a missed one.
 */
static void note_device_change(struct msv_client *c, const Msv__Wire__DeviceChange *dc)
{
    const Msv__Wire__DeviceInfo *d = dc->device;
    struct msv_public_identity *approver = NULL;
    uint8_t hash[32], msg[14 + 1 + 255 + 8 + 32], *id = NULL;
    size_t id_len = 0;
    uint32_t suite = 0;
    msv_err err;

    if (d->suite > 255 || device_hash(d->suite, d->identity.data, d->identity.len, hash) != MSV_OK)
        return;
    if (dc->pending) {
        uint8_t *rec = malloc(d->identity.len + 1);
        char key[40];

        if (rec == NULL)
            return;
        rec[0] = (uint8_t)d->suite;
        memcpy(rec + 1, d->identity.data, d->identity.len);
        pending_key(d->device_id, key);
        err = msv_client_db_set(c->db, key, rec, d->identity.len + 1);
        free(rec);
        return;
    }
    err = msv_client_db_own_device_identity(c->db, dc->approver, &suite, &id, &id_len);
    if (err == MSV_OK)
        err = msv_public_identity_parse((enum msv_suite)suite, id, id_len, &approver);
    if (err == MSV_OK)
        err = msv_public_identity_verify(approver, msg,
                                         approval_message(c->handle, d->device_id, hash, msg),
                                         dc->approval.data, dc->approval.len);
    if (err == MSV_OK)
        err = msv_client_db_own_device_put(c->db, d->device_id, hash, d->suite, d->identity.data,
                                           d->identity.len, 0);
    msv_public_identity_free(approver);
    free(id);
}

static void take_notice(struct msv_client *c, const Msv__Wire__Deliver *d,
                        void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    Msv__Wire__DeviceChange *dc =
        msv__wire__device_change__unpack(NULL, d->ciphertext.len, d->ciphertext.data);

    if (dc == NULL)
        return;
    if (dc->device != NULL && dc->added)
        note_device_change(c, dc);
    if (on_message != NULL && dc->device != NULL) {
        struct msv_public_identity *pub = NULL;
        char notice[400], fp[MSV_FINGERPRINT_TEXT_LEN] = "(unreadable identity)";
        unsigned long long id = (unsigned long long)dc->device->device_id;
        struct msv_incoming in = {.kind = MSV_INCOMING_DEVICE, .notice = notice};
        uint8_t h[32];

        if (msv_public_identity_parse((enum msv_suite)dc->device->suite, dc->device->identity.data,
                                      dc->device->identity.len, &pub) == MSV_OK) {
            msv_public_identity_hash(pub, h);
            msv_fingerprint_text(h, fp);
        }
        msv_public_identity_free(pub);
        if (dc->pending)
            snprintf(notice, sizeof(notice),
                     "device %llu asks to join this account (fingerprint %s); if it is yours, "
                     "approve it with: missive devices approve %llu",
                     id, fp, id);
        else
            snprintf(notice, sizeof(notice), "device %llu was %s this account (fingerprint %s)", id,
                     dc->added ? "added to" : "removed from", fp);
        on_message(ctx, &in);
    }
    msv__wire__device_change__free_unpacked(dc, NULL);
}

#define RESET_INTERVAL_MS 60000

/*
 * No session of this device reads a session message from in->device: the
 * sessions with it are dropped and a reset goes to its handle, which starts
 * a new session (X3DH) with it; both sides are told. At most one reset per
 * device a minute, so two devices that cannot read each other do not loop.
 */
static int session_broken(struct msv_client *c, const struct incoming *in,
                          void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    char key[48], notice[600];
    uint8_t *v = NULL, when[8];
    size_t len = 0;
    int64_t now = msv_wall_ms(), last = 0;

    snprintf(key, sizeof(key), "reset:%llu", (unsigned long long)in->device);
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == 8)
        last = (int64_t)msv_get_u64be(v);
    free(v);
    if (now - last < RESET_INTERVAL_MS)
        return 0;
    msv_put_u64be(when, (uint64_t)now);
    if (msv_client_db_set(c->db, key, when, sizeof(when)) != MSV_OK ||
        msv_sessions_forget(c, in->device) != MSV_OK)
        return 0;
    (void)send_control(c, MSV_KIND_SESSION_RESET, NULL, NULL, in->sender);
    if (on_message != NULL) {
        struct msv_incoming note = {
            .kind = MSV_INCOMING_SESSION, .notice = notice, .from = in->sender};

        snprintf(notice, sizeof(notice),
                 "a message from %s (device %llu) could not be decrypted; the session with that "
                 "device was reset. Ask them to send it again.",
                 in->sender, (unsigned long long)in->device);
        on_message(ctx, &note);
    }
    return on_message != NULL;
}

/*
 * A delivery from a proven sender that this device could not read (a
 * session message whose key was used already, one no session reads, an
 * envelope that does not open or a payload that does not parse): before it
 * is acknowledged it goes into history as "unreadable" (its id: the start of
 * the delivery's hash, so a redelivery is recorded once) and is shown,
 * unless shown already. Anything but MSV_OK: not acknowledged.
 */
static msv_err record_unreadable(struct msv_client *c, const Msv__Wire__Deliver *d,
                                 const struct incoming *in, int shown,
                                 void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_message_rec rec = {.status = "unreadable", .kind = MSV_KIND_MESSAGE};
    char text[400];
    uint8_t h[32];
    msv_err err;

    crypto_generichash(h, sizeof(h), d->ciphertext.data, d->ciphertext.len, NULL, 0);
    memcpy(rec.message_id, h, sizeof(rec.message_id));
    snprintf(text, sizeof(text),
             "a message from %s (device %llu) could not be read; ask them to send it again",
             in->sender, (unsigned long long)in->device);
    rec.conversation = (char *)in->sender;
    rec.sender = (char *)in->sender;
    rec.sender_device = in->device;
    rec.text = text;
    rec.stored_at_ms = msv_wall_ms();
    err = msv_client_db_message_put(c->db, &rec);
    if (err == MSV_ERR_EXISTS)
        return MSV_OK; /* recorded and shown when it came before */
    if (err == MSV_OK && !shown && on_message != NULL) {
        struct msv_incoming note = {
            .kind = MSV_INCOMING_SESSION, .notice = text, .from = in->sender};

        on_message(ctx, &note);
    }
    return err;
}

/*
 * A receive that took all it could: pushes a request dropped (conn.h) are
 * held by the relay as delivered on this connection, so it is closed for the
 * next one to bring them.
 */
static msv_err receive_done(struct msv_client *c)
{
    if (c->conn != NULL && msv_conn_has_dropped(c->conn)) {
        msv_conn_close(c->conn);
        c->conn = NULL;
    }
    return MSV_OK;
}

msv_err msv_client_receive(struct msv_client *c, int timeout_ms,
                           void (*on_message)(void *ctx, const struct msv_incoming *in), void *ctx,
                           size_t *count)
{
    msv_err err = msv_client_connect(c);
    /* a server that never stops sending must not keep the caller here for ever */
    int64_t deadline = msv_mono_ms() + timeout_ms +
                       (c->receive_max_ms > 0 ? c->receive_max_ms : MSV_CLIENT_RECEIVE_MAX_MS);

    *count = 0;
    if (err == MSV_OK) /* what a process stopped before: shown, and its receipt owed */
        err = resume_pending(c, on_message, ctx, count);
    while (err == MSV_OK) {
        msv_frame *f = NULL;
        uint64_t q;
        int64_t left = deadline - msv_mono_ms();

        if (left <= 0)
            return receive_done(c); /* the rest waits, unacknowledged, for the next call */
        if (c->conn == NULL)        /* a receipt's retries gave it up */
            return MSV_ERR_IO;
        err = msv_conn_recv(c->conn, left < timeout_ms ? (int)left : timeout_ms, &f);
        if (err == MSV_ERR_AGAIN)
            return receive_done(c); /* quiet for timeout_ms: done */
        if (err != MSV_OK)
            break;
        if (f->body_case != MSV__WIRE__FRAME__BODY_DELIVER) {
            msv_frame_free(f);
            continue;
        }
        q = f->deliver->queue_id;
        if (f->deliver->sender_device == 0 && f->deliver->suite != MSV_ENVELOPE_SEALED) {
            take_notice(c, f->deliver, on_message, ctx);
        } else {
            struct incoming in;

            memset(&in, 0, sizeof(in));
            err = take_message(c, f->deliver, on_message, ctx, &in);
            if (err == MSV_OK)
                (*count)++;
            /* the message is stored: now that its envelope was read, and what reading it
             * changed in the session (in that order: a crash between the two leaves the
             * session behind, which later messages catch up on) */
            if ((err == MSV_OK || err == MSV_ERR_EXISTS) && in.has_digest &&
                msv_client_db_envelope_read(c->db, in.digest, msv_wall_ms()) != MSV_OK)
                err = MSV_ERR_IO;
            if (err == MSV_OK || err == MSV_ERR_EXISTS)
                err = msv_sessions_commit(c, &in.update) == MSV_OK ? err : MSV_ERR_IO;
            msv_sessions_discard(&in.update);
            /* the sender learns it arrived (in the session just stored); should that fail,
             * the outbox sends it later */
            if (err == MSV_OK && in.owes_receipt)
                err = send_receipt(c, in.message_id, in.stored_id, in.sender);
            if (in.sender_proved && (err == MSV_ERR_AUTH || err == MSV_ERR_REPLAY ||
                                     err == MSV_ERR_PARSE || err == MSV_ERR_UNSUPPORTED)) {
                int shown = err == MSV_ERR_AUTH && in.session_message &&
                            session_broken(c, &in, on_message, ctx);

                if (record_unreadable(c, f->deliver, &in, shown, on_message, ctx) != MSV_OK)
                    err = MSV_ERR_IO;
            }
            /* a redelivery, or a message that is not authentic or recorded as unreadable:
             * acknowledged and dropped, so that the relay does not offer it forever; storage
             * failures are not acknowledged */
            if (err == MSV_ERR_EXISTS || err == MSV_ERR_AUTH || err == MSV_ERR_PARSE ||
                err == MSV_ERR_NOT_FOUND || err == MSV_ERR_UNSUPPORTED || err == MSV_ERR_REPLAY)
                err = MSV_OK;
        }
        msv_frame_free(f);
        /* a receipt's retries may have given the connection up: the message stays
         * unacknowledged, and its redelivery is recognised */
        if (err == MSV_OK && c->conn == NULL)
            err = MSV_ERR_IO;
        if (err == MSV_OK)
            err = msv_request_ack(c->conn, &q, 1);
    }
    return err;
}

/* ---- watching the transparency log for this account ------------------------------------- */

#define MONITORED "kt_monitored" /* the next log index to read */
/* the account's devices in its newest entry read, u64be id and identity hash each */
#define MONITOR_SET "kt_monitor_set"
#define MONITOR_OWN "kt_monitor_own" /* u64be: that entry's log index */
#define SET_RECORD (8 + 32)

/* Remembers the account's device set of log entry index (n records of SET_RECORD bytes). */
static msv_err monitor_set_put(struct msv_client *c, uint64_t index, const uint8_t *set, size_t n)
{
    uint8_t v[8];
    msv_err err = msv_client_db_set(c->db, MONITOR_SET, set, n * SET_RECORD);

    msv_put_u64be(v, index);
    return err == MSV_OK ? msv_client_db_set(c->db, MONITOR_OWN, v, sizeof(v)) : err;
}

static void removed_key(char key[128], const uint8_t record[SET_RECORD])
{
    char hex[65];

    if (msv_hex_encode(record + 8, 32, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, 128, "kt_removed:%llu:%s", (unsigned long long)msv_get_u64be(record), hex);
}

static int set_has(const uint8_t *set, size_t n, const uint8_t record[SET_RECORD])
{
    for (size_t i = 0; i < n; i++) {
        if (memcmp(set + i * SET_RECORD, record, SET_RECORD) == 0)
            return 1;
    }
    return 0;
}

/*
 * The account's devices in entry e against its previous entry: a device that left is marked
 * removed; a removed device (the same id and key) listed again raises the alarm, once.
 */
static msv_err monitor_removed(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                               void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    uint8_t cur[MSV_KT_DEVICES_MAX * SET_RECORD], *prev = NULL, *marker = NULL;
    size_t prev_len = 0, marker_len = 0;
    char key[128];
    msv_err err = msv_client_db_get(c->db, MONITOR_SET, &prev, &prev_len);

    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    for (size_t i = 0; err == MSV_OK && i < e->n_devices; i++) {
        msv_put_u64be(cur + i * SET_RECORD, e->devices[i].device_id);
        if (device_hash(e->devices[i].suite, e->devices[i].identity, e->devices[i].identity_len,
                        cur + i * SET_RECORD + 8) != MSV_OK)
            memset(cur + i * SET_RECORD + 8, 0, 32);
    }
    for (size_t i = 0; err == MSV_OK && i < prev_len / SET_RECORD; i++) {
        if (!set_has(cur, e->n_devices, prev + i * SET_RECORD)) {
            removed_key(key, prev + i * SET_RECORD);
            err = msv_client_db_set(c->db, key, "", 0);
        }
    }
    for (size_t i = 0; err == MSV_OK && i < e->n_devices; i++) {
        char warning[400], fp[MSV_FINGERPRINT_TEXT_LEN];

        removed_key(key, cur + i * SET_RECORD);
        err = msv_client_db_get(c->db, key, &marker, &marker_len);
        free(marker);
        marker = NULL;
        if (err == MSV_ERR_NOT_FOUND) {
            err = MSV_OK;
            continue;
        }
        if (err == MSV_OK)
            err = msv_client_db_unset(c->db, key);
        msv_fingerprint_text(cur + i * SET_RECORD + 8, fp);
        snprintf(warning, sizeof(warning),
                 "the directory's transparency log lists device %llu (fingerprint %s) for this "
                 "account again, after it was removed: if it is not back by your doing, "
                 "someone can read what is sent to this account",
                 (unsigned long long)e->devices[i].device_id, fp);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    free(prev);
    return err == MSV_OK ? monitor_set_put(c, index, cur, e->n_devices) : err;
}

/* The log index of the account's newest entry the monitor read (UINT64_MAX: none yet). */
static uint64_t monitor_own_index(struct msv_client *c)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t index = UINT64_MAX;

    if (msv_client_db_get(c->db, MONITOR_OWN, &v, &len) == MSV_OK && len == 8)
        index = msv_get_u64be(v);
    free(v);
    return index;
}

#define NEWEST_CHECKED "kt_monitor_checked" /* u64be ms: when the entry served was last checked */
#define NEWEST_INTERVAL_MS (3600LL * 1000)

/*
 * The entry of this account the directory serves is the newest one the monitor read: checked
 * when the monitor read one of the account's entries, and at least hourly (a lookup each time
 * would spend the lookup rate on every receive). A lookup the relay limits waits for next time.
 */
static msv_err monitor_newest(struct msv_client *c, int read_own,
                              void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    const char *self = c->handle;
    msv_frame *r = NULL;
    uint8_t *v = NULL, when[8];
    size_t len = 0;
    uint64_t newest;
    char warning[400];
    msv_err err = msv_client_db_get(c->db, NEWEST_CHECKED, &v, &len);

    if (err == MSV_OK && len == 8 && !read_own &&
        msv_wall_ms() - (int64_t)msv_get_u64be(v) < NEWEST_INTERVAL_MS) {
        free(v);
        return MSV_OK;
    }
    free(v);
    v = NULL;
    err = msv_client_db_get(c->db, MONITOR_OWN, &v, &len);
    if (err != MSV_OK || len != 8) {
        free(v);
        return err == MSV_ERR_NOT_FOUND || err == MSV_OK ? MSV_OK : err;
    }
    newest = msv_get_u64be(v);
    free(v);
    err = verified_lookup(c, &self, 1, &r);
    if (err == MSV_ERR_INVALID && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED)
        return MSV_OK;
    msv_put_u64be(when, (uint64_t)msv_wall_ms());
    if ((err == MSV_OK || err == MSV_ERR_AUTH) &&
        msv_client_db_set(c->db, NEWEST_CHECKED, when, sizeof(when)) != MSV_OK)
        err = MSV_ERR_IO;
    if (err == MSV_OK && r->lookup_result->results[0]->proof != NULL &&
        r->lookup_result->results[0]->proof->index >= newest) {
        msv_frame_free(r);
        return MSV_OK;
    }
    if (err == MSV_OK)
        snprintf(warning, sizeof(warning),
                 "the directory serves this account's devices from an older log entry than "
                 "entry %llu: others may be sealing messages to devices it no longer has",
                 (unsigned long long)newest);
    else if (err == MSV_ERR_AUTH)
        snprintf(warning, sizeof(warning), "the directory's answer for this account: %s",
                 c->why.message);
    msv_frame_free(r);
    if (err != MSV_OK && err != MSV_ERR_AUTH)
        return err;
    (*alarms)++;
    if (on_alarm != NULL)
        on_alarm(ctx, warning);
    return MSV_OK;
}

/* The devices the directory lists for this account now: where watching starts. */
static msv_err monitor_baseline(struct msv_client *c)
{
    msv_frame *r = NULL;
    const char *self = c->handle;
    msv_err err = verified_lookup(c, &self, 1, &r);
    uint8_t next[8], h[32];

    for (size_t i = 0; err == MSV_OK && i < r->lookup_result->results[0]->n_devices; i++) {
        const Msv__Wire__DeviceInfo *d = r->lookup_result->results[0]->devices[i];

        if (device_hash(d->suite, d->identity.data, d->identity.len, h) == MSV_OK)
            err = msv_client_db_own_device_put(c->db, d->device_id, h, d->suite, d->identity.data,
                                               d->identity.len, 0);
    }
    if (err == MSV_OK && r->lookup_result->results[0]->proof != NULL) {
        static _Thread_local struct msv_kt_entry e;
        const Msv__Wire__LogProof *p = r->lookup_result->results[0]->proof;
        size_t none = 0;

        /* where the removed-device watch starts: the set listed now */
        if (msv_kt_leaf_parse(p->leaf.data, p->leaf.len, &e) == MSV_OK)
            err = monitor_removed(c, &e, p->index, NULL, NULL, &none);
    }
    msv_frame_free(r);
    msv_put_u64be(next, msv_kt_known_size(c->db));
    return err == MSV_OK ? msv_client_db_set(c->db, MONITORED, next, sizeof(next)) : err;
}

/* Another account's entry must not list a device id of this account's (a device id belongs to
 * one account: sessions are found by it). */
static msv_err monitor_foreign(struct msv_client *c, const struct msv_kt_entry *e, uint64_t index,
                               void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < e->n_devices; i++) {
        char warning[600];
        uint8_t *identity = NULL;
        size_t len = 0;
        uint32_t suite = 0;

        err = msv_client_db_own_device_identity(c->db, e->devices[i].device_id, &suite, &identity,
                                                &len);
        free(identity);
        if (err == MSV_ERR_NOT_FOUND) {
            err = MSV_OK;
            continue;
        }
        if (err != MSV_OK)
            break;
        snprintf(warning, sizeof(warning),
                 "the directory's transparency log lists this account's device %llu under "
                 "%.256s (entry %llu): someone may pose as that device to the people you write to",
                 (unsigned long long)e->devices[i].device_id, e->handle, (unsigned long long)index);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    return err;
}

/* Raises the alarm for each device of this account in leaf that this device was not told of. */
static msv_err monitor_leaf(struct msv_client *c, const Msv__Wire__LogProof *p,
                            void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms)
{
    static _Thread_local struct msv_kt_entry e;
    msv_err err = MSV_OK;

    if (msv_kt_leaf_parse(p->leaf.data, p->leaf.len, &e) != MSV_OK)
        return MSV_OK; /* proven, so the server wrote it */
    if (strcmp(e.handle, c->handle) != 0)
        return monitor_foreign(c, &e, p->index, on_alarm, ctx, alarms);
    err = monitor_removed(c, &e, p->index, on_alarm, ctx, alarms);
    for (size_t i = 0; err == MSV_OK && i < e.n_devices; i++) {
        char warning[400], fp[MSV_FINGERPRINT_TEXT_LEN] = "(unreadable identity)";
        uint8_t h[32] = {0};
        int alarmed = 0;

        if (device_hash(e.devices[i].suite, e.devices[i].identity, e.devices[i].identity_len, h) ==
            MSV_OK)
            msv_fingerprint_text(h, fp);
        err = msv_client_db_own_device_get(c->db, e.devices[i].device_id, h, &alarmed);
        if (err == MSV_OK)
            continue; /* known, or already alarmed */
        if (err != MSV_ERR_NOT_FOUND)
            break;
        err = msv_client_db_own_device_put(c->db, e.devices[i].device_id, h, 0, NULL, 0, 1);
        snprintf(warning, sizeof(warning),
                 "the directory's transparency log lists device %llu (fingerprint %s) for this "
                 "account, and this device was never told of it: if it is not one of yours, "
                 "someone can read what is sent to this account",
                 (unsigned long long)e.devices[i].device_id, fp);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    return err;
}

/* Compares the heads received messages carried with this device's (after the log was read). */
static msv_err check_gossip(struct msv_client *c, void (*on_alarm)(void *, const char *), void *ctx,
                            size_t *alarms)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < c->n_gossip; i++) {
        struct msv_kt_head g;
        char warning[400];
        int fits = 1;

        msv_kt_head_decode(c->gossip[i].head, &g);
        err = msv_kt_check_gossip(c->db, c->conn, &g, &fits);
        if (err != MSV_OK || fits)
            continue;
        snprintf(warning, sizeof(warning),
                 "the transparency log head that %s's device saw (%llu entries) does not fit "
                 "the log this device sees: the server shows you different directories",
                 c->gossip[i].from, (unsigned long long)g.size);
        (*alarms)++;
        if (on_alarm != NULL)
            on_alarm(ctx, warning);
    }
    c->n_gossip = 0;
    return err;
}

msv_err msv_client_monitor(struct msv_client *c, void (*on_alarm)(void *ctx, const char *warning),
                           void *ctx, size_t *alarms)
{
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t next = 0, own_before, own_read;
    msv_err err = msv_client_connect(c);

    *alarms = 0;
    if (err == MSV_OK)
        err = msv_client_db_get(c->db, MONITORED, &v, &len);
    if (err == MSV_ERR_NOT_FOUND) {
        err = monitor_baseline(c);
        return err == MSV_OK ? check_gossip(c, on_alarm, ctx, alarms) : err;
    }
    if (err == MSV_OK && len != 8)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        next = msv_get_u64be(v);
    free(v);
    own_before = monitor_own_index(c);
    while (err == MSV_OK) {
        msv_frame *r = NULL;
        struct msv_kt_head head;
        uint8_t out[8];
        size_t n = 0;

        err = msv_request_log_read(c->conn, next, MSV_KT_READ_MAX, msv_kt_known_size(c->db),
                                   TIMEOUT_MS, &r, &c->why);
        if (err == MSV_OK)
            err = msv_kt_check_entries(c->db, r->log_entries, next, &head, c->why.message,
                                       sizeof(c->why.message));
        if (err == MSV_OK)
            n = r->log_entries->n_entries;
        for (size_t i = 0; err == MSV_OK && i < n; i++)
            err = monitor_leaf(c, r->log_entries->entries[i], on_alarm, ctx, alarms);
        msv_frame_free(r);
        if (err != MSV_OK || n == 0)
            break;
        next += n;
        msv_put_u64be(out, next);
        err = msv_client_db_set(c->db, MONITORED, out, sizeof(out));
        if (next >= head.size)
            break;
    }
    own_read = monitor_own_index(c);
    if (err == MSV_OK)
        err = monitor_newest(c, own_read != own_before, on_alarm, ctx, alarms);
    return err == MSV_OK ? check_gossip(c, on_alarm, ctx, alarms) : err;
}
