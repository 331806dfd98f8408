/*
 * The attachment protocol: ciphertexts the clients encrypted, uploaded in
 * chunks in order (resumable from BlobStatus's count) into the blob backend,
 * kept until they expire. The server checks the SHA-256 the uploader names
 * before the blob becomes readable; it never sees a key.
 */
#include <stdlib.h>
#include <string.h>

#include "missive/util.h"
#include "server/log.h"
#include "server/server.h"

#define CHUNK_MAX (256u * 1024u)

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

/*
 * The uploading device's quotas: unfinished uploads, and bytes (at their declared size) of
 * the device and of its account. Answers a refusal itself and returns 0. Creates on other
 * workers at the same moment are not seen, so a quota may be passed by a few uploads.
 */
static int quota_allows(struct msv_conn_state *c, uint64_t request_id, uint64_t size)
{
    struct msv_server *s = c->w->srv;
    struct msv_blob_usage u = {0};
    const char *why = NULL;

    if (s->store->ops->blob_usage(s->store->impl, c->device_id, msv_server_now_ms(s), &u) !=
        MSV_OK) {
        msv_conn_send_error(c, request_id, E_IO, "storage failed");
        return 0;
    }
    if (u.open >= s->cfg.blob_open_max)
        why = "too many unfinished uploads on this device; finish or abandon one first";
    else if (u.device_bytes + size > s->cfg.blob_device_bytes)
        why = "this device's attachments would pass its quota";
    else if (u.account_bytes + size > s->cfg.blob_account_bytes)
        why = "this account's attachments would pass its quota";
    if (why == NULL)
        return 1;
    atomic_fetch_add(&s->m.blobs_refused, 1);
    msv_conn_send_error(c, request_id, E_TOO_BIG, why);
    return 0;
}

void msv_blob_create(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobCreated created = MSV__WIRE__BLOB_CREATED__INIT;
    struct msv_blob_rec r = {0};

    if (f->blob_create->size == 0 || f->blob_create->size > s->cfg.blob_max) {
        msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                            "attachment size must be from 1 byte to the server's limit");
        return;
    }
    if (!quota_allows(c, f->request_id, f->blob_create->size))
        return;
    msv_random_bytes(r.id, sizeof(r.id));
    r.owner_device = c->device_id;
    r.size = f->blob_create->size;
    /* unfinished, it lives for hours; finished, for blob_ttl_ms from then */
    r.expires_ms =
        msv_server_now_ms(s) + (int64_t)(s->cfg.blob_unfinished_ttl_ms < s->cfg.blob_ttl_ms
                                             ? s->cfg.blob_unfinished_ttl_ms
                                             : s->cfg.blob_ttl_ms);
    if (s->blobs->ops->create(s->blobs->impl, r.id) != MSV_OK ||
        s->store->ops->blob_create(s->store->impl, &r) != MSV_OK) {
        s->blobs->ops->remove(s->blobs->impl, r.id);
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

void msv_blob_chunk(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__BlobChunk *ch = f->blob_chunk;
    struct msv_blob_rec r;

    if (!load_blob(c, f->request_id, ch->blob_id, 1, &r))
        return;
    if (r.complete || ch->offset != r.received || ch->data.len == 0 ||
        ch->data.len > chunk_max(s) || ch->data.len > r.size - r.received) {
        /* resumable: the answer says where to continue */
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "chunks go in order, within the size; BlobStatus says where to go on");
        return;
    }
    if (s->blobs->ops->write_at(s->blobs->impl, r.id, ch->offset, ch->data.data, ch->data.len) !=
        MSV_OK) {
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

void msv_blob_finish(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct msv_blob_rec r;
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
    if (s->blobs->ops->digest(s->blobs->impl, r.id, actual) != MSV_OK) {
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
    r.expires_ms = msv_server_now_ms(s) + (int64_t)s->cfg.blob_ttl_ms;
    if (s->blobs->ops->publish(s->blobs->impl, r.id) != MSV_OK ||
        s->store->ops->blob_update(s->store->impl, &r) != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    msv_conn_send_ok(c, f->request_id);
}

void msv_blob_get(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__BlobGet *g = f->blob_get;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobData data = MSV__WIRE__BLOB_DATA__INIT;
    struct msv_blob_rec r;
    uint8_t *buf;
    size_t want;

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
    if (buf == NULL ||
        s->blobs->ops->read_at(s->blobs->impl, r.id, g->offset, buf, want) != MSV_OK) {
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

void msv_blob_status(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_blob_rec r;

    if (load_blob(c, f->request_id, f->blob_status->blob_id, 1, &r))
        send_progress(c, f->request_id, &r);
}

void msv_blobs_expire(struct msv_server *s, int64_t now_ms)
{
    uint8_t(*ids)[MSV_BLOB_ID_LEN] = NULL;
    size_t n = 0;

    if (s->store->ops->blob_expire(s->store->impl, now_ms, &ids, &n) != MSV_OK)
        return;
    for (size_t i = 0; i < n; i++)
        s->blobs->ops->remove(s->blobs->impl, ids[i]);
    if (n > 0) {
        atomic_fetch_add(&s->m.blobs_expired, n);
        msv_log(MSV_LOG_INFO, "blobs_expired", "count=%zu", n);
    }
    free(ids);
}
