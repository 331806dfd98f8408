/*
 * The attachment store: ciphertexts the clients encrypted, uploaded in
 * chunks in order (resumable from BlobStatus's count), kept as files under
 * data_dir/blobs/ until they expire. The server checks the SHA-256 the
 * uploader names before the blob becomes readable; it never sees a key.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "missive/util.h"
#include "server/log.h"
#include "server/server.h"

#define CHUNK_MAX (256u * 1024u)

enum {
    E_INVALID = MSV__WIRE__ERROR_CODE__ERROR_INVALID,
    E_AUTH = MSV__WIRE__ERROR_CODE__ERROR_AUTH,
    E_TOO_BIG = MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG,
    E_IO = MSV__WIRE__ERROR_CODE__ERROR_IO,
    E_NOT_FOUND = MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND,
};

static void blob_path(const struct msv_server *s, const uint8_t id[MSV_BLOB_ID_LEN], int partial,
                      char *out, size_t len)
{
    char hex[2 * MSV_BLOB_ID_LEN + 1];

    if (msv_hex_encode(id, MSV_BLOB_ID_LEN, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0'; /* cannot happen: the buffer fits */
    snprintf(out, len, "%s/blobs/%s%s", s->cfg.data_dir, hex, partial ? ".part" : "");
}

static size_t chunk_max(const struct msv_server *s)
{
    return s->cfg.frame_max - 1024 < CHUNK_MAX ? s->cfg.frame_max - 1024 : CHUNK_MAX;
}

static void send_progress(struct msv_conn_state *c, uint64_t request_id,
                          const struct msv_blob_rec *r)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobProgress p = MSV__WIRE__BLOB_PROGRESS__INIT;

    p.received = r->received;
    p.size = r->size;
    p.complete = r->complete != 0;
    out.request_id = request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_BLOB_PROGRESS;
    out.blob_progress = &p;
    msv_conn_send_frame(c, &out);
}

static void blob_create(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobCreated created = MSV__WIRE__BLOB_CREATED__INIT;
    struct msv_blob_rec r = {0};
    char path[1200];
    int fd;

    if (f->blob_create->size == 0 || f->blob_create->size > s->cfg.blob_max) {
        msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                            "attachment size must be from 1 byte to the server's limit");
        return;
    }
    msv_random_bytes(r.id, sizeof(r.id));
    r.owner_device = c->device_id;
    r.size = f->blob_create->size;
    r.expires_ms = msv_server_now_ms(s) + (int64_t)s->cfg.blob_ttl_ms;
    blob_path(s, r.id, 1, path, sizeof(path));
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || close(fd) != 0 || s->store->ops->blob_create(s->store->impl, &r) != MSV_OK) {
        unlink(path);
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    created.blob_id.data = r.id;
    created.blob_id.len = sizeof(r.id);
    created.chunk_max = (uint32_t)chunk_max(s);
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_BLOB_CREATED;
    out.blob_created = &created;
    msv_conn_send_frame(c, &out);
}

/* Loads the blob named by id; owner_only limits it to the uploading device. */
static int load_blob(struct msv_conn_state *c, uint64_t request_id, ProtobufCBinaryData id,
                     int owner_only, struct msv_blob_rec *r)
{
    struct msv_server *s = c->w->srv;

    if (id.len != MSV_BLOB_ID_LEN ||
        s->store->ops->blob_get(s->store->impl, id.data, r) != MSV_OK ||
        (owner_only && r->owner_device != c->device_id) || r->expires_ms <= msv_server_now_ms(s)) {
        msv_conn_send_error(c, request_id, E_NOT_FOUND, "no such attachment");
        return 0;
    }
    return 1;
}

static void blob_chunk(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__BlobChunk *ch = f->blob_chunk;
    struct msv_blob_rec r;
    char path[1200];
    ssize_t wrote;
    int fd;

    if (!load_blob(c, f->request_id, ch->blob_id, 1, &r))
        return;
    if (r.complete || ch->offset != r.received || ch->data.len == 0 ||
        ch->data.len > chunk_max(s) || ch->data.len > r.size - r.received) {
        /* resumable: the answer says where to continue */
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "chunks go in order, within the size; BlobStatus says where to go on");
        return;
    }
    blob_path(s, r.id, 1, path, sizeof(path));
    fd = open(path, O_WRONLY | O_CLOEXEC);
    wrote = fd >= 0 ? pwrite(fd, ch->data.data, ch->data.len, (off_t)ch->offset) : -1;
    if (fd >= 0)
        close(fd);
    if (wrote != (ssize_t)ch->data.len) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    r.received += ch->data.len;
    if (s->store->ops->blob_update(s->store->impl, &r) != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    atomic_fetch_add(&s->m.blob_bytes_in, ch->data.len);
    send_progress(c, f->request_id, &r);
}

static msv_err hash_file(const char *path, uint8_t out[32], int sync)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t buf[65536];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    msv_err err = MSV_ERR_IO;
    ssize_t n;

    if (ctx == NULL || fd < 0 || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
            goto out;
    }
    if (n == 0 && EVP_DigestFinal_ex(ctx, out, NULL) == 1 && (!sync || fdatasync(fd) == 0))
        err = MSV_OK;
out:
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(ctx);
    return err;
}

static void blob_finish(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct msv_blob_rec r;
    char part[1200], done[1200];
    uint8_t actual[32];

    if (!load_blob(c, f->request_id, f->blob_finish->blob_id, 1, &r))
        return;
    if (r.complete) {
        msv_conn_send_ok(c, f->request_id);
        return;
    }
    if (r.received != r.size || f->blob_finish->sha256.len != 32) {
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "upload every byte first, then name its 32-byte SHA-256");
        return;
    }
    blob_path(s, r.id, 1, part, sizeof(part));
    blob_path(s, r.id, 0, done, sizeof(done));
    if (hash_file(part, actual, 1) != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    if (!msv_equal_ct(actual, f->blob_finish->sha256.data, 32)) {
        msv_conn_send_error(c, f->request_id, E_AUTH,
                            "the uploaded bytes do not have that SHA-256");
        return;
    }
    memcpy(r.sha256, actual, 32);
    r.complete = 1;
    if (rename(part, done) != 0 || s->store->ops->blob_update(s->store->impl, &r) != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    msv_conn_send_ok(c, f->request_id);
}

static void blob_get(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__BlobGet *g = f->blob_get;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobData data = MSV__WIRE__BLOB_DATA__INIT;
    struct msv_blob_rec r;
    char path[1200];
    uint8_t *buf;
    size_t want;
    ssize_t got = -1;
    int fd;

    if (!load_blob(c, f->request_id, g->blob_id, 0, &r))
        return;
    if (!r.complete) {
        msv_conn_send_error(c, f->request_id, E_NOT_FOUND, "no such attachment");
        return;
    }
    if (g->offset > r.size || g->length == 0) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "offset beyond the end, or no length");
        return;
    }
    want = g->length < chunk_max(s) ? g->length : chunk_max(s);
    if (want > r.size - g->offset)
        want = (size_t)(r.size - g->offset);
    buf = malloc(want ? want : 1);
    blob_path(s, r.id, 0, path, sizeof(path));
    fd = buf != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        got = pread(fd, buf, want, (off_t)g->offset);
        close(fd);
    }
    if (got != (ssize_t)want) {
        free(buf);
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    data.data.data = buf;
    data.data.len = want;
    data.size = r.size;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_BLOB_DATA;
    out.blob_data = &data;
    msv_conn_send_frame(c, &out);
    atomic_fetch_add(&s->m.blob_bytes_out, want);
    free(buf);
}

void msv_handle_blob(struct msv_conn_state *c, msv_frame *f)
{
    struct msv_blob_rec r;

    switch (f->body_case) {
    case MSV__WIRE__FRAME__BODY_BLOB_CREATE:
        blob_create(c, f);
        break;
    case MSV__WIRE__FRAME__BODY_BLOB_CHUNK:
        blob_chunk(c, f);
        break;
    case MSV__WIRE__FRAME__BODY_BLOB_STATUS:
        if (load_blob(c, f->request_id, f->blob_status->blob_id, 1, &r))
            send_progress(c, f->request_id, &r);
        break;
    case MSV__WIRE__FRAME__BODY_BLOB_FINISH:
        blob_finish(c, f);
        break;
    case MSV__WIRE__FRAME__BODY_BLOB_GET:
        blob_get(c, f);
        break;
    default:
        break;
    }
}

void msv_blobs_expire(struct msv_server *s, int64_t now_ms)
{
    uint8_t(*ids)[MSV_BLOB_ID_LEN] = NULL;
    size_t n = 0;

    if (s->store->ops->blob_expire(s->store->impl, now_ms, &ids, &n) != MSV_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        char path[1200];

        blob_path(s, ids[i], 0, path, sizeof(path));
        unlink(path);
        blob_path(s, ids[i], 1, path, sizeof(path));
        unlink(path);
    }
    if (n > 0) {
        atomic_fetch_add(&s->m.blobs_expired, n);
        msv_log(MSV_LOG_INFO, "blobs_expired", "count=%zu", n);
    }
    free(ids);
}
