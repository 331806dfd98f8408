/*
 * Linking a device by QR code: the code, the sealed provisioning message
 * (the format is in link.h), and both sides of the exchange: the new device
 * that shows its code and waits, and the account's device that reads it,
 * adds and approves the new device and sends it the message.
 */
#define _GNU_SOURCE /* fmemopen */
#include "client/link.h"
#include "client/backup.h"
#include "client/internal.h"
#include "client/requests.h"
#include "client/sessions.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"

#define SEAL_MAGIC "MSVL\x01"
#define SEAL_MAGIC_LEN 5
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define SEAL_HEAD (SEAL_MAGIC_LEN + 32 + NONCE_LEN)
#define SIGN_CONTEXT "MSV-link-sign-v1"
#define WAIT_MAX_S 600 /* the server keeps an address 10 minutes */

/* ---- the code ------------------------------------------------------------------------ */

void msv_link_code_format(const struct msv_link_code *code, char out[MSV_LINK_CODE_LEN + 1])
{
    size_t o = strlen(MSV_LINK_PREFIX);

    memcpy(out, MSV_LINK_PREFIX, o);
    sodium_bin2hex(out + o, 33, code->address, 16);
    o += 32;
    out[o++] = ':';
    sodium_bin2hex(out + o, 65, code->ephemeral, 32);
    o += 64;
    out[o++] = ':';
    sodium_bin2hex(out + o, 65, code->fingerprint, 32);
}

/* len hex digits at in into out (len / 2 bytes). */
static msv_err hex_field(const char *in, size_t len, uint8_t *out)
{
    char part[65];
    size_t written = 0;

    memcpy(part, in, len);
    part[len] = '\0';
    if (msv_hex_decode(part, out, len / 2, &written) != MSV_OK || written != len / 2)
        return MSV_ERR_PARSE;
    return MSV_OK;
}

msv_err msv_link_code_parse(const char *text, struct msv_link_code *out)
{
    const size_t p = strlen(MSV_LINK_PREFIX);
    struct msv_link_code code;
    size_t len;

    while (*text == ' ' || *text == '\t')
        text++;
    len = strlen(text);
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    if (len > 13 && strncmp(text, "missive-link:", 13) == 0 && strncmp(text, MSV_LINK_PREFIX, p))
        return MSV_ERR_INVALID; /* a later version's code */
    if (len != MSV_LINK_CODE_LEN || strncmp(text, MSV_LINK_PREFIX, p) != 0 || text[p + 32] != ':' ||
        text[p + 32 + 1 + 64] != ':')
        return MSV_ERR_PARSE;
    if (hex_field(text + p, 32, code.address) != MSV_OK ||
        hex_field(text + p + 33, 64, code.ephemeral) != MSV_OK ||
        hex_field(text + p + 98, 64, code.fingerprint) != MSV_OK)
        return MSV_ERR_PARSE;
    *out = code;
    return MSV_OK;
}

/* ---- the sealed message ---------------------------------------------------------------- */

static msv_err seal_key(const uint8_t shared[32], const uint8_t sender[32],
                        const struct msv_link_code *code, uint8_t key[32])
{
    uint8_t info[32 + 32 + 16 + 32];

    memcpy(info, sender, 32);
    memcpy(info + 32, code->ephemeral, 32);
    memcpy(info + 64, code->address, 16);
    memcpy(info + 80, code->fingerprint, 32);
    return msv_hkdf_sha256(shared, 32, (const uint8_t *)"MSV-link-v1", 11, info, sizeof(info), key,
                           32);
}

static void seal_ad(const uint8_t sender[32], const struct msv_link_code *code,
                    uint8_t ad[SEAL_MAGIC_LEN + 32 + 16 + 32])
{
    memcpy(ad, SEAL_MAGIC, SEAL_MAGIC_LEN);
    memcpy(ad + SEAL_MAGIC_LEN, sender, 32);
    memcpy(ad + SEAL_MAGIC_LEN + 32, code->address, 16);
    memcpy(ad + SEAL_MAGIC_LEN + 48, code->fingerprint, 32);
}

msv_err msv_link_seal(const struct msv_link_code *code, const uint8_t *pt, size_t len,
                      uint8_t **out, size_t *out_len)
{
    uint8_t e[32], shared[32], key[32], ad[SEAL_MAGIC_LEN + 80], *buf;
    size_t total = SEAL_HEAD + len + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    msv_err err = MSV_ERR_CRYPTO;

    if (total > MSV_LINK_SEALED_MAX)
        return MSV_ERR_TOO_BIG;
    if ((buf = malloc(total)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(buf, SEAL_MAGIC, SEAL_MAGIC_LEN);
    msv_random_bytes(e, sizeof(e));
    msv_random_bytes(buf + SEAL_MAGIC_LEN + 32, NONCE_LEN);
    if (crypto_scalarmult_base(buf + SEAL_MAGIC_LEN, e) == 0 &&
        crypto_scalarmult(shared, e, code->ephemeral) == 0 &&
        seal_key(shared, buf + SEAL_MAGIC_LEN, code, key) == MSV_OK) {
        seal_ad(buf + SEAL_MAGIC_LEN, code, ad);
        crypto_aead_xchacha20poly1305_ietf_encrypt(buf + SEAL_HEAD, NULL, pt, len, ad, sizeof(ad),
                                                   NULL, buf + SEAL_MAGIC_LEN + 32, key);
        err = MSV_OK;
    }
    sodium_memzero(e, sizeof(e));
    sodium_memzero(shared, sizeof(shared));
    sodium_memzero(key, sizeof(key));
    if (err != MSV_OK) {
        free(buf);
        return err;
    }
    *out = buf;
    *out_len = total;
    return MSV_OK;
}

msv_err msv_link_open(const struct msv_link_code *code, const uint8_t ephemeral_sk[32],
                      const uint8_t *in, size_t len, uint8_t **pt, size_t *pt_len)
{
    uint8_t shared[32], key[32], ad[SEAL_MAGIC_LEN + 80], *buf = NULL;
    size_t n;
    msv_err err = MSV_ERR_AUTH;

    if (len < SEAL_HEAD + crypto_aead_xchacha20poly1305_ietf_ABYTES || len > MSV_LINK_SEALED_MAX ||
        memcmp(in, SEAL_MAGIC, SEAL_MAGIC_LEN) != 0)
        return MSV_ERR_AUTH;
    n = len - SEAL_HEAD - crypto_aead_xchacha20poly1305_ietf_ABYTES;
    if ((buf = sodium_malloc(n ? n : 1)) == NULL)
        return MSV_ERR_NOMEM;
    seal_ad(in + SEAL_MAGIC_LEN, code, ad);
    if (crypto_scalarmult(shared, ephemeral_sk, in + SEAL_MAGIC_LEN) == 0 &&
        seal_key(shared, in + SEAL_MAGIC_LEN, code, key) == MSV_OK &&
        crypto_aead_xchacha20poly1305_ietf_decrypt(buf, NULL, NULL, in + SEAL_HEAD, len - SEAL_HEAD,
                                                   ad, sizeof(ad), in + SEAL_MAGIC_LEN + 32,
                                                   key) == 0)
        err = MSV_OK;
    sodium_memzero(shared, sizeof(shared));
    sodium_memzero(key, sizeof(key));
    if (err != MSV_OK) {
        sodium_free(buf);
        return err;
    }
    /* handed over as msv_secret_free memory */
    *pt = malloc(n ? n : 1);
    if (*pt == NULL)
        err = MSV_ERR_NOMEM;
    else {
        memcpy(*pt, buf, n);
        *pt_len = n;
    }
    sodium_free(buf);
    return err;
}

msv_err msv_link_signed_bytes(const struct msv_link_code *code, const uint8_t *packed, size_t len,
                              uint8_t **out, size_t *out_len)
{
    size_t c = strlen(SIGN_CONTEXT), total = c + 16 + 32 + len;
    uint8_t *buf = malloc(total);

    if (buf == NULL)
        return MSV_ERR_NOMEM;
    memcpy(buf, SIGN_CONTEXT, c);
    memcpy(buf + c, code->address, 16);
    memcpy(buf + c + 16, code->fingerprint, 32);
    memcpy(buf + c + 48, packed, len);
    *out = buf;
    *out_len = total;
    return MSV_OK;
}

/* ---- the provisioning message ---------------------------------------------------------- */

msv_err msv_link_provision_parse(const uint8_t *pt, size_t len, Msv__Wire__Provision **out)
{
    Msv__Wire__Provision *p = msv__wire__provision__unpack(NULL, len, pt);
    int ok = p != NULL && p->version == 1 && p->handle.len > 0 && p->handle.len <= 256 &&
             memchr(p->handle.data, 0, p->handle.len) == NULL && p->device_id != 0 &&
             p->approver_id != 0 && p->approver_id != p->device_id &&
             p->approver_fingerprint.len == 32 && p->signature.len > 0 &&
             p->signature.len <= MSV_SIGNATURE_MAX && msv_link_state_is_valid(p);

    /* history: an archive to come (its id and key), all of a blob's reference, or nothing */
    if (ok && p->history_archive.len > 0)
        ok = p->history_archive.len == 16 && p->history_key.len == 32 && p->history_blob.len == 0 &&
             p->history_size == 0 && p->history_sha256.len == 0;
    else if (ok && (p->history_blob.len > 0 || p->history_key.len > 0 || p->history_size > 0 ||
                    p->history_sha256.len > 0))
        ok = p->history_blob.len > 0 && p->history_blob.len <= 80 && p->history_key.len == 32 &&
             p->history_sha256.len == 32 && p->history_size > 0;
    if (!ok) {
        if (p != NULL)
            msv__wire__provision__free_unpacked(p, NULL);
        return MSV_ERR_PARSE;
    }
    *out = p;
    return MSV_OK;
}

/* The bytes p's signature covers (p's signature left out); *out: caller frees. */
static msv_err provision_signed(const struct msv_link_code *code, const Msv__Wire__Provision *p,
                                uint8_t **out, size_t *out_len)
{
    Msv__Wire__Provision bare = *p;
    uint8_t *packed;
    size_t len;
    msv_err err;

    bare.signature = (ProtobufCBinaryData){0, NULL};
    len = msv__wire__provision__get_packed_size(&bare);
    if ((packed = malloc(len ? len : 1)) == NULL)
        return MSV_ERR_NOMEM;
    msv__wire__provision__pack(&bare, packed);
    err = msv_link_signed_bytes(code, packed, len, out, out_len);
    free(packed);
    return err;
}

/* ---- the new device -------------------------------------------------------------------- */

/*
 * What the account's directory says of the approver and of this device: the
 * approver must be listed with the fingerprint the message names and have
 * signed it; this device must be listed with its own keys.
 */
static msv_err check_approver(struct msv_client *c, const struct msv_link_code *code,
                              const Msv__Wire__Provision *p)
{
    const char *h = c->handle;
    const Msv__Wire__DeviceInfo *approver = NULL;
    struct msv_public_identity *pub = NULL;
    msv_frame *r = NULL;
    uint8_t hash[32], *msg = NULL;
    size_t msg_len = 0;
    int own = 0;
    msv_err err = client_verified_lookup(c, &h, 1, &r);

    for (size_t i = 0; err == MSV_OK && i < r->lookup_result->results[0]->n_devices; i++) {
        const Msv__Wire__DeviceInfo *d = r->lookup_result->results[0]->devices[i];

        if (client_device_hash(d->suite, d->identity.data, d->identity.len, hash) != MSV_OK)
            continue;
        if (d->device_id == p->approver_id &&
            sodium_memcmp(hash, p->approver_fingerprint.data, 32) == 0)
            approver = d;
        own |= d->device_id == p->device_id && sodium_memcmp(hash, code->fingerprint, 32) == 0;
    }
    if (err == MSV_OK && (approver == NULL || !own))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = msv_public_identity_parse((enum msv_suite)approver->suite, approver->identity.data,
                                        approver->identity.len, &pub);
    if (err == MSV_OK)
        err = provision_signed(code, p, &msg, &msg_len);
    if (err == MSV_OK)
        err = msv_public_identity_verify(pub, msg, msg_len, p->signature.data, p->signature.len);
    /* the approver is this account's own device, for the transparency monitor */
    if (err == MSV_OK)
        err = msv_client_db_own_device_put(c->db, approver->device_id, p->approver_fingerprint.data,
                                           approver->suite, approver->identity.data,
                                           approver->identity.len, 0);
    if (err == MSV_OK)
        err = client_remember(c, r->lookup_result->results[0]);
    free(msg);
    msv_public_identity_free(pub);
    msv_frame_free(r);
    return err == MSV_ERR_PARSE ? MSV_ERR_AUTH : err;
}

/* Waits for the message at this connection's address (polling once a second). */
static msv_err wait_message(struct msv_client *c, struct msv_conn *conn,
                            const struct msv_link_wait *w, uint8_t **msg, size_t *len)
{
    int wait_s = w->wait_s > 0 && w->wait_s < WAIT_MAX_S ? w->wait_s : WAIT_MAX_S;
    int64_t deadline = msv_mono_ms() + (int64_t)wait_s * 1000;
    struct timespec second = {1, 0};
    msv_err err;

    for (;;) {
        err = msv_request_provision_take(conn, TIMEOUT_MS, msg, len, &c->why);
        if (err != MSV_ERR_NOT_FOUND)
            return err;
        if (msv_mono_ms() >= deadline) {
            snprintf(c->why.message, sizeof(c->why.message),
                     "no device of the account sent this device's link within %d s", wait_s);
            return MSV_ERR_AGAIN;
        }
        if (w->progress != NULL)
            w->progress(w->ctx, (int)((deadline - msv_mono_ms() + 999) / 1000));
        nanosleep(&second, NULL);
    }
}

/* Opens, reads and checks the message; on success this device is the one it names. */
static msv_err take_message(struct msv_client *c, const struct msv_link_code *code,
                            const uint8_t sk[32], const uint8_t *msg, size_t len,
                            struct msv_link_result *res)
{
    Msv__Wire__Provision *p = NULL;
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    err = msv_link_open(code, sk, msg, len, &pt, &pt_len);
    if (err == MSV_OK)
        err = msv_link_provision_parse(pt, pt_len, &p) == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
    if (err == MSV_OK && (p->handle.len != strlen(c->handle) ||
                          memcmp(p->handle.data, c->handle, p->handle.len) != 0))
        err = MSV_ERR_AUTH; /* a code shown for one account, answered for another */
    if (err == MSV_OK) {
        c->device_id = p->device_id;
        err = msv_client_connect(c);
    }
    if (err == MSV_OK)
        err = check_approver(c, code, p);
    if (err == MSV_OK)
        err = client_save_device_id(c);
    if (err == MSV_OK) {
        res->device_id = p->device_id;
        res->approver_id = p->approver_id;
        memcpy(res->approver_fingerprint, p->approver_fingerprint.data, 32);
        res->history_size = p->history_size;
        res->settings = p->n_settings;
        res->groups = p->n_groups;
        /* linked now: a state that cannot be held is told, not undone */
        res->state_err = msv_link_state_apply(c, p);
        /* linked now, whatever comes of the history: a failure is told, not undone */
        if (p->history_archive.len > 0) { /* it comes later: awaited until imported */
            res->history_err = msv_link_history_pending_save(c, p);
            res->history = res->history_err == MSV_OK ? 2 : -1;
        } else if (p->history_blob.len > 0) {
            res->history_err = msv_link_history_pending_save(c, p);
            if (res->history_err == MSV_OK)
                res->history_err = msv_link_history_take(c, p);
            res->history = res->history_err == MSV_OK ? 1 : -1;
        }
    } else { /* nothing half-linked is kept: the next try starts again */
        c->device_id = 0;
        msv_conn_close(c->conn);
        c->conn = NULL;
    }
    if (err == MSV_ERR_AUTH && c->why.message[0] == '\0')
        snprintf(c->why.message, sizeof(c->why.message),
                 "the provisioning message did not come from a device of %.200s", c->handle);
    if (p != NULL)
        msv__wire__provision__free_unpacked(p, NULL);
    msv_secret_free(pt, pt_len);
    return err;
}

msv_err msv_client_link_by_code(struct msv_client *c, const struct msv_link_wait *w,
                                struct msv_link_result *res)
{
    struct msv_link_code code;
    struct msv_conn *conn = NULL;
    struct msv_first_prekeys *first = NULL;
    uint8_t sk[32], *msg = NULL;
    size_t len = 0;
    char text[MSV_LINK_CODE_LEN + 1];
    msv_err err = c->device_id != 0 ? MSV_ERR_EXISTS : msv_sessions_first_prekeys(c, &first);

    memset(&c->why, 0, sizeof(c->why));
    memset(res, 0, sizeof(*res));
    msv_random_bytes(sk, sizeof(sk));
    if (err == MSV_OK && crypto_scalarmult_base(code.ephemeral, sk) != 0)
        err = MSV_ERR_CRYPTO;
    msv_public_identity_hash(msv_identity_public(c->id), code.fingerprint);
    if (err == MSV_OK)
        err = client_plain_conn(c, &conn);
    if (err == MSV_OK)
        err = msv_request_provision_open(conn, c->id, msv_sessions_first_prekeys_set(first),
                                         TIMEOUT_MS, code.address, &c->why);
    msv_sessions_first_prekeys_free(first);
    if (err == MSV_OK) {
        msv_link_code_format(&code, text);
        w->show(w->ctx, text);
        err = wait_message(c, conn, w, &msg, &len);
    }
    msv_conn_close(conn);
    if (err == MSV_OK)
        err = take_message(c, &code, sk, msg, len, res);
    sodium_memzero(sk, sizeof(sk));
    free(msg);
    return err;
}

/* ---- the approving device -------------------------------------------------------------- */

/*
 * Adds the device waiting at the code's address to the account, pending,
 * and checks that it is the one the code names: a server that put other
 * keys there sees its device removed again.
 */
static msv_err add_waiting(struct msv_client *c, const struct msv_link_code *code, uint64_t *id)
{
    msv_frame *r = NULL;
    const Msv__Wire__DeviceInfo *d;
    uint8_t hash[32], *rec = NULL;
    char key[40];
    msv_err err = msv_client_connect(c);

    if (err == MSV_OK)
        err = msv_request_link_device(c->conn, code->address, TIMEOUT_MS, &r, &c->why);
    if (err != MSV_OK)
        return err;
    d = r->linked_device;
    if (d->suite > 255 ||
        client_device_hash(d->suite, d->identity.data, d->identity.len, hash) != MSV_OK ||
        sodium_memcmp(hash, code->fingerprint, 32) != 0) {
        int removed = msv_client_remove_device(c, d->device_id) == MSV_OK;

        snprintf(c->why.message, sizeof(c->why.message),
                 "the server's device at that address is not the one the code names%s",
                 removed ? " (removed again)" : "; remove it with: missive devices remove ID");
        msv_frame_free(r);
        return MSV_ERR_AUTH;
    }
    /* kept as a request to join, which msv_client_approve_device signs */
    rec = malloc(d->identity.len + 1);
    if (rec == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        rec[0] = (uint8_t)d->suite;
        memcpy(rec + 1, d->identity.data, d->identity.len);
        client_pending_key(d->device_id, key);
        err = msv_client_db_set(c->db, key, rec, d->identity.len + 1);
    }
    *id = d->device_id;
    free(rec);
    msv_frame_free(r);
    return err;
}

/* Room in a sealed message for the account's state: all but the seal and the other fields. */
#define STATE_BUDGET (MSV_LINK_SEALED_MAX - 1024)

/*
 * The account's state into p; groups that do not fit come only with the history, so without
 * one that is refused (before any device is added).
 */
static msv_err account_state(struct msv_client *c, const struct msv_link_add *how,
                             Msv__Wire__Provision *p)
{
    size_t settings_left = 0, groups_left = 0;
    msv_err err = msv_link_state_gather(c, STATE_BUDGET, p, &settings_left, &groups_left);

    if (err == MSV_OK && groups_left > 0 && !how->history) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "%zu group%s do not fit in the provisioning message (%d KiB): add the device "
                 "with its history",
                 groups_left, groups_left == 1 ? "" : "s", MSV_LINK_SEALED_MAX / 1024);
        err = MSV_ERR_TOO_BIG;
    }
    return err;
}

/* The signed, sealed provisioning message for device id; *out: caller frees. */
static msv_err provision_message(struct msv_client *c, const struct msv_link_code *code,
                                 Msv__Wire__Provision *pp, uint64_t id, uint8_t **out,
                                 size_t *out_len)
{
    Msv__Wire__Provision p = *pp; /* with the history's reference, if any */
    uint8_t fp[32], sig[MSV_SIGNATURE_MAX], *msg = NULL, *packed = NULL;
    size_t msg_len = 0, sig_len = 0, len = 0;
    msv_err err;

    msv_public_identity_hash(msv_identity_public(c->id), fp);
    p.version = 1;
    p.handle = (ProtobufCBinaryData){strlen(c->handle), (uint8_t *)c->handle};
    p.device_id = id;
    p.approver_id = c->device_id;
    p.approver_fingerprint = (ProtobufCBinaryData){32, fp};
    err = provision_signed(code, &p, &msg, &msg_len);
    if (err == MSV_OK)
        err = msv_identity_sign(c->id, msg, msg_len, sig, &sig_len);
    if (err == MSV_OK) {
        p.signature = (ProtobufCBinaryData){sig_len, sig};
        len = msv__wire__provision__get_packed_size(&p);
        err = (packed = malloc(len)) != NULL ? MSV_OK : MSV_ERR_NOMEM;
    }
    if (err == MSV_OK) {
        msv__wire__provision__pack(&p, packed);
        err = msv_link_seal(code, packed, len, out, out_len);
    }
    free(msg);
    free(packed);
    return err;
}

msv_err msv_client_link_add(struct msv_client *c, const struct msv_link_code *code,
                            const struct msv_link_add *how, uint64_t *device_id)
{
    Msv__Wire__Provision p = MSV__WIRE__PROVISION__INIT;
    uint8_t *msg = NULL, key[32], archive[16];
    size_t len = 0;
    uint64_t id = 0;
    msv_err err = MSV_OK;

    memset(&c->why, 0, sizeof(c->why));
    /* the state and the room for one more history first: a failure there adds no device */
    err = account_state(c, how, &p);
    if (err == MSV_OK && how->history)
        err = msv_link_history_room(c);
    if (err == MSV_OK)
        err = add_waiting(c, code, &id);
    if (err == MSV_OK)
        err = client_approve_device(c, id, 0); /* its groups go in the provisioning message */
    /* owed from before the message goes: a stop after it leaves it to send again */
    if (err == MSV_OK && how->history &&
        (err = msv_link_history_owe(c, id, key, archive)) == MSV_OK) {
        p.history_key = (ProtobufCBinaryData){32, key};
        p.history_archive = (ProtobufCBinaryData){16, archive};
    }
    if (err == MSV_OK)
        err = provision_message(c, code, &p, id, &msg, &len);
    sodium_memzero(key, sizeof(key));
    if (err == MSV_OK)
        err = msv_request_provision_put(c->conn, code->address, msg, len, TIMEOUT_MS, &c->why);
    /* a device that never got its key gets no history */
    if (err != MSV_OK && id != 0 && how->history && msv_link_history_forget(c, id) != MSV_OK)
        err = MSV_ERR_IO;
    free(msg);
    msv_link_state_clear(&p);
    if (err == MSV_OK)
        *device_id = id;
    return err;
}
