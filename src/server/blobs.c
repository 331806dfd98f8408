/*
 * The attachment protocol: ciphertexts the clients encrypted, uploaded in
 * chunks in order (resumable from BlobStatus's count) into the blob backend,
 * kept until they expire. The server checks the SHA-256 the uploader names
 * before the blob becomes readable; it never sees a key.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

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
 * The uploading device's quotas: unfinished uploads, bytes (at their declared size) of the
 * device and of its account, and the account's number of attachments. Answers a refusal itself and
 * returns 0. Creates on other workers at the same moment are not seen, so a quota may be passed by
 * a few uploads.
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
    /* each a file and a record, however small: their number is bounded too */
    else if (u.account_count >= s->cfg.blob_account_count)
        why = "this account keeps as many attachments as the server allows; wait for some to "
              "expire";
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
        atomic_fetch_add(&s->m.blobs_refused, 1);
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
    msv_err err = id.len != MSV_BLOB_ID_LEN ? MSV_ERR_NOT_FOUND
                                            : s->store->ops->blob_get(s->store->impl, id.data, r);

    /* a store that failed says so: "no such attachment" is for good, and a client takes a
     * file it was told is gone as lost */
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND) {
        msv_conn_send_error(c, request_id, E_IO, "storage failed; try again later");
        return 0;
    }
    if (err != MSV_OK || (owner_only && r->owner_device != c->device_id) ||
        r->expires_ms <= msv_server_now_ms(s)) {
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

/*
 * A BlobFinish being checked. Reading and syncing an upload of up to max_size
 * bytes takes long, so its digest runs on a thread of its own and the worker's
 * event loop goes on serving; the thread hands the job back to the loop
 * (event_base_once), which answers. The worker's list owns the job until then.
 */
struct msv_blob_job {
    struct msv_worker *w;
    struct msv_conn_state *c; /* NULL once the connection is gone */
    uint64_t request_id;
    struct msv_blob_rec r;
    uint8_t want[32], actual[32];
    msv_err err;
    struct msv_blob_job *prev, *next;
};

static void job_unlink(struct msv_blob_job *j)
{
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        j->w->blob_jobs = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
}

/* An answer for j's request, if its connection is still there. */
static void job_answer(struct msv_blob_job *j, int code, const char *message)
{
    if (j->c == NULL)
        return;
    if (code == 0)
        msv_conn_send_ok(j->c, j->request_id);
    else
        msv_conn_send_error(j->c, j->request_id, code, message);
}

/*
 * On the loop again: the digest is known; publish or refuse, and answer. A
 * matching upload is published even when its connection has gone meanwhile.
 */
static void on_job_done(evutil_socket_t fd, short what, void *arg)
{
    struct msv_blob_job *j = arg;
    struct msv_server *s = j->w->srv;
    uint64_t device = j->r.owner_device;

    (void)fd;
    (void)what;
    job_unlink(j);
    if (j->c != NULL)
        j->c->finishing = 0;
    if (j->err == MSV_OK && !msv_equal_ct(j->actual, j->want, 32)) {
        atomic_fetch_add(&s->m.blob_finish_failed, 1); /* its token stays spent */
        job_answer(j, E_AUTH, "the uploaded bytes do not have that SHA-256");
        free(j);
        return;
    }
    msv_server_refund_token(s, MSV_LIMIT_BLOB_FINISH, device, 1);
    memcpy(j->r.sha256, j->actual, 32);
    j->r.complete = 1;
    j->r.expires_ms = msv_server_now_ms(s) + (int64_t)s->cfg.blob_ttl_ms;
    if (j->err != MSV_OK || s->blobs->ops->publish(s->blobs->impl, j->r.id) != MSV_OK ||
        s->store->ops->blob_update(s->store->impl, &j->r) != MSV_OK)
        job_answer(j, E_IO, "storage failed");
    else
        job_answer(j, 0, NULL);
    free(j);
}

static void *digest_thread(void *arg)
{
    struct msv_blob_job *j = arg;
    struct msv_server *s = j->w->srv;
    const struct timeval now = {0, 0};

    j->err = s->blobs->ops->digest(s->blobs->impl, j->r.id, j->actual);
    /* the check's place is free before its answer can be sent: a finish sent on seeing it fits */
    pthread_mutex_lock(&s->blob_jobs_lock);
    s->blob_checks_busy--;
    pthread_mutex_unlock(&s->blob_jobs_lock);
    /* if libevent cannot take it, the job waits in the list for msv_blob_jobs_drain */
    if (event_base_once(j->w->base, -1, EV_TIMEOUT, on_job_done, j, &now) != 0)
        msv_log(MSV_LOG_ERROR, "blob_finish_lost", "reason=\"out of memory\"");
    pthread_mutex_lock(&s->blob_jobs_lock);
    s->blob_jobs_running--;
    pthread_cond_broadcast(&s->blob_jobs_idle);
    pthread_mutex_unlock(&s->blob_jobs_lock);
    return NULL;
}

/* Starts j's thread; answers a refusal itself and returns 0 (j is then the caller's). */
static int start_job(struct msv_conn_state *c, struct msv_blob_job *j)
{
    struct msv_server *s = c->w->srv;
    pthread_attr_t attr;
    pthread_t thread;
    int started = 0;

    pthread_mutex_lock(&s->blob_jobs_lock);
    if (s->blob_checks_busy < s->cfg.blob_finish_checks) {
        s->blob_checks_busy++;
        s->blob_jobs_running++;
        started = 1;
    }
    pthread_mutex_unlock(&s->blob_jobs_lock);
    if (!started) {
        atomic_fetch_add(&s->m.blob_finish_busy, 1);
        msv_conn_send_error(c, j->request_id, E_RATE,
                            "the server is busy checking uploads; finish again shortly");
        return 0;
    }
    j->next = c->w->blob_jobs;
    if (j->next != NULL)
        j->next->prev = j;
    c->w->blob_jobs = j;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    started = pthread_create(&thread, &attr, digest_thread, j) == 0;
    pthread_attr_destroy(&attr);
    if (started)
        return 1;
    job_unlink(j);
    pthread_mutex_lock(&s->blob_jobs_lock);
    s->blob_checks_busy--;
    s->blob_jobs_running--;
    pthread_cond_broadcast(&s->blob_jobs_idle);
    pthread_mutex_unlock(&s->blob_jobs_lock);
    msv_conn_send_error(c, j->request_id, E_IO, "out of threads");
    return 0;
}

/*
 * Each check reads the whole upload, so failed ones are limited per device
 * ([blobs] finish_fail_rate): a token is taken for every check and given back
 * unless the bytes did not match.
 */
void msv_blob_finish(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct msv_blob_job *j;
    struct msv_blob_rec r;

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
    if (c->finishing) {
        msv_conn_send_error(c, f->request_id, E_RATE,
                            "an upload of this connection is being checked; wait for its answer");
        return;
    }
    if (!msv_server_take_token(s, MSV_LIMIT_BLOB_FINISH, c->device_id, 1)) {
        atomic_fetch_add(&s->m.blob_finish_failed, 1); /* as docs/missived.md says */
        msv_conn_send_error(c, f->request_id, E_RATE,
                            "too many uploads that did not match their SHA-256; wait");
        return;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        msv_server_refund_token(s, MSV_LIMIT_BLOB_FINISH, c->device_id, 1);
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        return;
    }
    *j = (struct msv_blob_job){.w = c->w, .c = c, .request_id = f->request_id, .r = r};
    memcpy(j->want, f->blob_finish->sha256.data, 32);
    if (!start_job(c, j)) {
        msv_server_refund_token(s, MSV_LIMIT_BLOB_FINISH, c->device_id, 1);
        free(j);
        return;
    }
    c->finishing = 1;
}

void msv_blob_jobs_forget(struct msv_conn_state *c)
{
    for (struct msv_blob_job *j = c->w->blob_jobs; j != NULL; j = j->next) {
        if (j->c == c)
            j->c = NULL; /* the check still ends; its answer has nowhere to go */
    }
}

void msv_blob_jobs_drain(struct msv_server *s)
{
    pthread_mutex_lock(&s->blob_jobs_lock);
    while (s->blob_jobs_running > 0)
        pthread_cond_wait(&s->blob_jobs_idle, &s->blob_jobs_lock);
    pthread_mutex_unlock(&s->blob_jobs_lock);
    for (unsigned i = 0; s->workers != NULL && i < s->worker_count; i++) {
        while (s->workers[i].blob_jobs != NULL) {
            struct msv_blob_job *j = s->workers[i].blob_jobs;

            job_unlink(j);
            free(j);
        }
    }
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

    /* a bounded batch a tick: each file is unlinked on this worker's loop (the next tick goes
     * on where this one stopped) */
    if (s->store->ops->blob_expire(s->store->impl, now_ms, BLOB_EXPIRE_MAX, &ids, &n) != MSV_OK)
        return;
    for (size_t i = 0; i < n; i++)
        s->blobs->ops->remove(s->blobs->impl, ids[i]);
    if (n > 0) {
        atomic_fetch_add(&s->m.blobs_expired, n);
        msv_log(MSV_LOG_INFO, "blobs_expired", "count=%zu", n);
    }
    free(ids);
}

/*
 * Removes the attachment files no record names, once ten minutes old: a crash between the
 * commit that deleted their records (an account's deletion, expiry) and the files' removal
 * leaves them, as does one between a file's creation and its record's (no upload waits that
 * long for its record). At start, then hourly (docs/missived.md, "Deleting an account").
 */
/*
 * Removes the files among ids (ascending) that no record names, up to the first above last (if
 * given); *stop: where it stopped (the count it looked at).
 */
static size_t sweep_ids(struct msv_server *s, uint8_t (*ids)[MSV_BLOB_ID_LEN], size_t n,
                        const uint8_t *last, size_t *stop)
{
    size_t swept = 0, i;

    for (i = 0; i < n && (last == NULL || memcmp(ids[i], last, MSV_BLOB_ID_LEN) <= 0); i++) {
        struct msv_blob_rec r;

        if (s->store->ops->blob_get(s->store->impl, ids[i], &r) != MSV_ERR_NOT_FOUND)
            continue; /* recorded, or the store cannot say: kept */
        s->blobs->ops->remove(s->blobs->impl, ids[i]);
        swept++;
    }
    *stop = i;
    return swept;
}

void msv_blobs_sweep(struct msv_server *s)
{
    uint8_t(*ids)[MSV_BLOB_ID_LEN] = NULL, from[MSV_BLOB_ID_LEN];
    int64_t before = (int64_t)time(NULL) - BLOB_ORPHAN_AGE_S;
    int had = s->blobs_sweep_has_from;
    size_t n = 0, swept = 0, stop = 0;

    s->blobs_swept_ms = msv_mono_ms();
    memcpy(from, s->blobs_sweep_from, sizeof(from));
    /*
     * BLOB_SWEEP_MAX files a sweep, in id order around the ids, each sweep going on from the
     * last id the one before looked at (the first from a random one): a store holding more old
     * files than that, recorded ones among them, has every file looked at within a few sweeps
     * (before, every sweep looked at the same first ones, and orphans past them stayed).
     */
    if (s->blobs->ops->list_before(s->blobs->impl, before, had ? from : NULL, BLOB_SWEEP_MAX, &ids,
                                   &n) != MSV_OK)
        return;
    swept = sweep_ids(s, ids, n, NULL, &stop);
    s->blobs_sweep_has_from = n == BLOB_SWEEP_MAX;
    if (s->blobs_sweep_has_from)
        memcpy(s->blobs_sweep_from, ids[n - 1], MSV_BLOB_ID_LEN);
    free(ids);
    ids = NULL;
    /* the end reached short of a whole batch: on from the lowest, up to where this one began */
    if (had && n < BLOB_SWEEP_MAX) {
        size_t budget = BLOB_SWEEP_MAX - n;

        if (s->blobs->ops->list_before(s->blobs->impl, before, NULL, budget, &ids, &n) != MSV_OK)
            n = 0;
        swept += sweep_ids(s, ids, n, from, &stop);
        /* the whole budget spent below where it began: the next goes on from there; else the
         * round is done, and the next starts from the lowest */
        s->blobs_sweep_has_from = n > 0 && n == budget && stop == n;
        if (s->blobs_sweep_has_from)
            memcpy(s->blobs_sweep_from, ids[n - 1], MSV_BLOB_ID_LEN);
        free(ids);
    }
    if (swept > 0) {
        atomic_fetch_add(&s->m.blobs_swept, swept);
        msv_log(MSV_LOG_INFO, "blobs_swept", "count=%zu", swept);
    }
}
