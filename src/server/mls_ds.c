/*
 * The MLS delivery service (RFC 9420, section 16.4; docs/wire.md, "MLS delivery"; docs/missived.md,
 * "MLS groups"). MLS messages are opaque here: the server never reads them. It keeps
 *   - each device's KeyPackages, handed out once each (a last-resort one when none is left);
 *   - each group's epoch and member devices, as the commits' own frames name them: a commit for
 *     epoch e is accepted only while the group is at e, and then moves it to e + 1 and is queued
 *     to the members, all in one store transaction, so that of two commits for one epoch (from
 *     two workers or two nodes) exactly one wins;
 * and queues proposals, application messages (uploaded once, one copy per member device but the
 * sender, its body stored once for them all: msv_queue_in.shared) and Welcomes through the
 * relay's queue, under its caps. Each group's newest commits
 * are kept in its log (MLS_LOG_KEPT of it, MLS_LOG_ACCOUNT_MAX of one account's sending, as
 * long as a queued copy), which a member device that missed one reads to catch up; a Welcome
 * that a new member's full queue left out is kept for it (one a membership), for it to ask for.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "missive/payload.h"
#include "missive/util.h"
#include "server/log.h"
#include "server/server.h"

#define STORE(s) ((s)->store->ops)
#define IMPL(s) ((s)->store->impl)

#define MLS_DELIVERY_SUITE 160          /* Deliver.suite of an MlsDelivery */
#define MLS_GROUP_ID_MAX 64             /* bytes */
#define MLS_KEY_PACKAGE_MAX 8192        /* bytes, each */
#define MLS_KEY_PACKAGES_UPLOAD_MAX 100 /* per upload */
#define MLS_KEY_PACKAGES_KEPT 100       /* per device, the last-resort one not counted */
#define MLS_GROUP_DEVICES_MAX 10000     /* member devices per group */
#define MLS_DEVICE_GROUPS_MAX 1000      /* groups a device is a member of */
/* of them, groups another account's devices added it to: no stranger fills a device's groups */
#define MLS_DEVICE_GROUPS_BY_ACCOUNT_MAX 250
#define MLS_CHANGES_MAX 1000              /* devices added and removed by one commit */
#define MLS_RECIPIENTS_MAX 1000           /* devices one Welcome is for */
#define MLS_COPIED_MAX (64u << 20)        /* bytes of copies one send makes: size x copies */
#define MLS_CLAIM_TTL_MS 3600000          /* a claim lets its account add the device this long */
#define MLS_CLAIMS_OPEN_MAX 10000         /* open claims per account, the oldest dropped */
#define MLS_FULL_NAMED 1000               /* devices left out for a full queue named in an answer */
#define MLS_LOG_KEPT 256                  /* a group's newest commits kept in its log */
#define MLS_LOG_ACCOUNT_MAX 4096          /* commits kept in all logs of one account's sending */
#define MLS_LOG_ANSWER 64                 /* commits one read of a log gives */
#define MLS_LOGGED_FRAMING 48             /* bytes an MlsLogged adds to its delivery, at most */
#define MLS_LOG_ANSWER_BYTES (256u << 10) /* deliveries one read gives (the first always) */

/* ---- KeyPackages ------------------------------------------------------------------------- */

static void send_kp_state(struct msv_conn_state *c, uint64_t request_id, uint32_t left,
                          int has_last_resort)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsKeyPackageState st = MSV__WIRE__MLS_KEY_PACKAGE_STATE__INIT;

    st.left = left;
    st.has_last_resort = has_last_resort != 0;
    out.request_id = request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_STATE;
    out.mls_key_package_state = &st;
    msv_conn_send_frame(c, &out);
}

/* The upload's shape; an error text or NULL. */
static const char *check_kp_upload(const Msv__Wire__MlsKeyPackageUpload *q, int *code)
{
    *code = E_TOO_BIG;
    if (q->n_key_packages > MLS_KEY_PACKAGES_UPLOAD_MAX)
        return "at most 100 KeyPackages per upload";
    if (q->last_resort.len > MLS_KEY_PACKAGE_MAX)
        return "a KeyPackage is at most 8 KiB";
    for (size_t i = 0; i < q->n_key_packages; i++) {
        if (q->key_packages[i].len > MLS_KEY_PACKAGE_MAX)
            return "a KeyPackage is at most 8 KiB";
        if (q->key_packages[i].len == 0) {
            *code = E_INVALID;
            return "a KeyPackage is empty";
        }
    }
    return NULL;
}

void msv_mls_key_package_upload(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__MlsKeyPackageUpload *q = f->mls_key_package_upload;
    const uint8_t **kps = calloc(q->n_key_packages + 1, sizeof(*kps));
    size_t *lens = calloc(q->n_key_packages + 1, sizeof(*lens));
    struct msv_mls_key_package_upload up = {0};
    uint32_t left = 0;
    int has_last_resort = 0, code = E_INVALID;
    const char *bad = check_kp_upload(q, &code);
    msv_err err;

    if (bad == NULL && (kps == NULL || lens == NULL)) {
        code = E_IO;
        bad = "out of memory";
    }
    if (bad != NULL) {
        atomic_fetch_add(&s->m.mls_refused, 1);
        msv_conn_send_error(c, f->request_id, code, bad);
        goto out;
    }
    /* an upload (not the empty one that asks what is left) takes a token of the device's */
    if ((q->n_key_packages > 0 || q->last_resort.len > 0 || q->replace) &&
        (s->cfg.limit_key_package_uploads ||
         !msv_server_take_token(s, MSV_LIMIT_MLS_UPLOAD, c->device_id, 1))) {
        atomic_fetch_add(&s->m.mls_refused, 1);
        msv_conn_send_error(c, f->request_id, E_RATE,
                            "too many KeyPackage uploads from this device; slow down");
        goto out;
    }
    for (size_t i = 0; i < q->n_key_packages; i++) {
        kps[i] = q->key_packages[i].data;
        lens[i] = q->key_packages[i].len;
    }
    up = (struct msv_mls_key_package_upload){.kps = kps,
                                             .lens = lens,
                                             .n = q->n_key_packages,
                                             .last_resort =
                                                 q->last_resort.len ? q->last_resort.data : NULL,
                                             .last_resort_len = q->last_resort.len,
                                             .replace = q->replace};
    err = STORE(s)->mls_key_packages_put(IMPL(s), c->device_id, &up, MLS_KEY_PACKAGES_KEPT, &left,
                                         &has_last_resort);
    if (err == MSV_ERR_TOO_BIG) {
        atomic_fetch_add(&s->m.mls_refused, 1);
        msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                            "a device keeps at most 100 KeyPackages; nothing was stored");
    } else if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
    } else {
        send_kp_state(c, f->request_id, left, has_last_resort);
    }
out:
    free(kps);
    free(lens);
}

/*
 * One KeyPackage of device_id into k (its bytes into *owned); 0 if it has none. A device
 * claimed again by the same account within prekey_claim_interval_s gets its last-resort one,
 * so that nobody drains another's KeyPackages.
 */
static int claim_kp(struct msv_conn_state *c, uint64_t device_id, Msv__Wire__MlsKeyPackage *k,
                    uint8_t **owned, msv_err *err)
{
    struct msv_server *s = c->w->srv;
    uint64_t pair[2] = {c->account_id, device_id};
    size_t len = 0;
    int last_resort = 0, only_last_resort = 0;
    int64_t now = msv_server_now_ms(s);

    if (!msv_server_take_token(s, MSV_LIMIT_MLS_CLAIM, msv_server_key(s, pair, sizeof(pair)), 1)) {
        atomic_fetch_sub(&s->m.rate_limited, 1); /* answered all the same */
        atomic_fetch_add(&s->m.mls_claims_throttled, 1);
        only_last_resort = 1;
    }
    *err = STORE(s)->mls_key_package_claim(IMPL(s), device_id, only_last_resort, c->account_id, now,
                                           now + MLS_CLAIM_TTL_MS, MLS_CLAIMS_OPEN_MAX, owned, &len,
                                           &last_resort);
    if (*err == MSV_ERR_NOT_FOUND) {
        *err = MSV_OK;
        return 0;
    }
    if (*err != MSV_OK)
        return 0;
    msv__wire__mls_key_package__init(k);
    k->device_id = device_id;
    k->key_package = (ProtobufCBinaryData){len, *owned};
    k->last_resort = last_resort != 0;
    atomic_fetch_add(last_resort ? &s->m.mls_last_resort_claims : &s->m.mls_key_packages_claimed,
                     1);
    return 1;
}

void msv_mls_key_package_claim(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    char handle[MSV_HANDLE_MAX + 1];
    struct msv_device_list list = {0};
    Msv__Wire__MlsKeyPackage *k = NULL, **kp = NULL;
    Msv__Wire__MlsKeyPackages resp = MSV__WIRE__MLS_KEY_PACKAGES__INIT;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    uint8_t **owned = NULL;
    uint64_t account = 0;
    size_t got = 0;
    msv_err err;

    if (!msv_server_handle_normalise(f->mls_key_package_claim->handle, handle)) {
        atomic_fetch_add(&s->m.mls_refused, 1);
        msv_conn_send_error(c, f->request_id, E_INVALID, "that is not a handle");
        return;
    }
    err = STORE(s)->account_get(IMPL(s), handle, &account, NULL);
    if (err == MSV_OK)
        err = STORE(s)->devices_of_account(IMPL(s), account, &list);
    /* no account: an empty answer, as for one without KeyPackages, after a token of the
     * unknown-handle bucket, as a lookup of a name nobody has takes */
    if (err == MSV_ERR_NOT_FOUND) {
        err = MSV_OK;
        if (!msv_server_take_token(s, MSV_LIMIT_UNKNOWN, c->account_id, 1)) {
            atomic_fetch_add(&s->m.unknown_lookups_refused, 1);
            atomic_fetch_add(&s->m.mls_refused, 1);
            msv_conn_send_error(c, f->request_id, E_RATE,
                                "too many claims for handles that no account has; slow down");
            goto out;
        }
    }
    /* refused before anything is taken if the largest answer might not fit in a frame */
    if (err == MSV_OK && list.count * (MLS_KEY_PACKAGE_MAX + 32) + 64 > msv_server_answer_max(s)) {
        atomic_fetch_add(&s->m.mls_refused, 1);
        msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                            "the account has more devices than one answer holds KeyPackages "
                            "for; raise frame_max");
        goto out;
    }
    /* a lookup token per device, and one at least: a claim is never free */
    if (err == MSV_OK && !msv_server_take_token(s, MSV_LIMIT_LOOKUP, c->account_id,
                                                list.count > 0 ? (double)list.count : 1.0)) {
        atomic_fetch_add(&s->m.mls_refused, 1);
        msv_conn_send_error(c, f->request_id, E_RATE, "too many KeyPackage claims; slow down");
        goto out;
    }
    k = calloc(list.count + 1, sizeof(*k));
    kp = calloc(list.count + 1, sizeof(*kp));
    owned = calloc(list.count + 1, sizeof(*owned));
    if (err == MSV_OK && (k == NULL || kp == NULL || owned == NULL))
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; i < list.count && err == MSV_OK; i++) {
        /* pending devices are not addressed, nor is the claiming device itself */
        if (!list.items[i].approved || list.items[i].id == c->device_id)
            continue;
        if (claim_kp(c, list.items[i].id, &k[got], &owned[got], &err)) {
            kp[got] = &k[got];
            got++;
        }
    }
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        goto out;
    }
    resp.n_key_packages = got;
    resp.key_packages = kp;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGES;
    out.mls_key_packages = &resp;
    msv_conn_send_frame(c, &out);
out:
    for (size_t i = 0; owned != NULL && i < got; i++)
        free(owned[i]);
    free(owned);
    free(kp);
    free(k);
    msv_device_list_clear(&list);
}

/* ---- groups ------------------------------------------------------------------------------ */

/* A send's refusal, counted. */
static void refuse(struct msv_conn_state *c, uint64_t request_id, int code, const char *why)
{
    atomic_fetch_add(&c->w->srv->m.mls_refused, 1);
    msv_conn_send_error(c, request_id, code, why);
}

/* ERROR_MLS_STALE_EPOCH with the group's epoch, for the sender to re-base on. */
static void refuse_stale(struct msv_conn_state *c, uint64_t request_id, uint64_t epoch)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Error e = MSV__WIRE__ERROR__INIT;
    static const char why[] = "not the group's current epoch: process the commits that came "
                              "before, then send again";

    atomic_fetch_add(&c->w->srv->m.mls_stale, 1);
    e.code = MSV__WIRE__ERROR_CODE__ERROR_MLS_STALE_EPOCH;
    e.message = (ProtobufCBinaryData){sizeof(why) - 1, (uint8_t *)why};
    e.mls_epoch = epoch;
    out.request_id = request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_ERROR;
    out.error = &e;
    msv_conn_send_frame(c, &out);
}

/* The answer to a send taken: n copies queued; the devices left out for a full queue, the
 * first MLS_FULL_NAMED of them by id. */
static void send_sent(struct msv_conn_state *c, uint64_t request_id, uint64_t epoch, size_t n,
                      uint64_t *full, size_t n_full, size_t kept)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsSent sent = MSV__WIRE__MLS_SENT__INIT;

    sent.epoch = epoch;
    sent.queued = (uint32_t)n;
    sent.full = (uint32_t)n_full;
    sent.n_full_devices = n_full < MLS_FULL_NAMED ? n_full : MLS_FULL_NAMED;
    sent.full_devices = full;
    sent.kept = (uint32_t)kept;
    out.request_id = request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_MLS_SENT;
    out.mls_sent = &sent;
    msv_conn_send_frame(c, &out);
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int is_in(const uint64_t *sorted, size_t n, uint64_t id)
{
    return bsearch(&id, sorted, n, sizeof(*sorted), cmp_id) != NULL;
}

/* A proposal that names its sender alone in removed: it leaves (RFC 9420, 12.1.3). */
static int is_leave(const Msv__Wire__MlsSend *q)
{
    return q->kind == MSV__WIRE__MLS_KIND__MLS_KIND_PROPOSAL && q->n_added == 0 &&
           q->n_removed == 1;
}

/* The shape of a send, before any storage; an error text or NULL. */
static const char *check_shape(struct msv_server *s, const Msv__Wire__MlsSend *q, int *code)
{
    *code = E_INVALID;
    if (q->group_id.len == 0 || q->group_id.len > MLS_GROUP_ID_MAX)
        return "a group id is 1 to 64 bytes";
    if (q->kind < MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT ||
        q->kind > MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME)
        return "an MLS send is a commit, a proposal, an application message or a Welcome";
    if (q->message.len == 0)
        return "the MLS message is empty";
    if ((q->n_added || q->n_removed) && q->kind != MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT &&
        !is_leave(q))
        return "only a commit adds or removes devices (a proposal its own sender alone)";
    if (q->n_recipients && q->kind != MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME)
        return "only a Welcome names its recipients";
    if (q->kind == MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME && q->n_recipients == 0)
        return "a Welcome names the devices it is for";
    *code = E_TOO_BIG;
    if (q->message.len > atomic_load(&s->payload_limit))
        return "the MLS message is larger than the server's payload limit";
    if (q->n_added + q->n_removed > MLS_CHANGES_MAX)
        return "a commit adds and removes at most 1000 devices";
    if (q->n_recipients > MLS_RECIPIENTS_MAX)
        return "a Welcome is for at most 1000 devices";
    return NULL;
}

/* What a member receives, encoded once for all of them, with the group's epoch as read (so
 * that a member's message claiming a later epoch makes nobody catch up past the group);
 * NULL if out of memory. */
static uint8_t *pack_delivery(const Msv__Wire__MlsSend *q, uint64_t group_epoch, size_t *len)
{
    Msv__Wire__MlsDelivery d = MSV__WIRE__MLS_DELIVERY__INIT;
    uint8_t *p;

    d.group_id = q->group_id;
    d.kind = q->kind;
    d.epoch = q->epoch;
    d.message = q->message;
    d.group_epoch = group_epoch;
    *len = msv__wire__mls_delivery__get_packed_size(&d);
    p = malloc(*len);
    if (p != NULL)
        msv__wire__mls_delivery__pack(&d, p);
    return p;
}

/* What a send of n copies costs in send tokens: one a copy, as a pairwise send. */
static double send_cost(size_t n)
{
    return n > 0 ? (double)n : 1.0;
}

/* A group send's state while it is checked and stored. */
struct mls_send {
    struct msv_conn_state *c;
    const msv_frame *f;
    const Msv__Wire__MlsSend *q;
    uint64_t epoch;    /* the group's, as read */
    uint64_t *members; /* ascending */
    size_t n_members;
    uint8_t *packed; /* the MlsDelivery */
    size_t packed_len;
    struct msv_queue_in *items;
    uint64_t *ids;
    size_t n_items;
    uint64_t *full; /* the member devices left out: their queue is full */
    size_t n_full;
    size_t n_kept; /* of a Welcome: those left out it is kept for (taken out of full) */
};

/*
 * The sender's envelope rate (send_cost, a token for every copy) and every recipient's queue
 * caps (msv_server_queue_is_full, as for a send). A copy whose device's queue is full is left
 * out, its token given back and its device kept in m->full (the sender is told in the answer,
 * the device's account once the send is taken: tell_full), so that one member's full queue
 * holds up nobody else's messages. Answers a refusal itself and returns 0 (the rate, or a
 * failed read).
 */
static int take_room(struct mls_send *m)
{
    struct msv_conn_state *c = m->c;
    struct msv_server *s = c->w->srv;
    size_t n = m->n_items, kept = 0;
    double cost = send_cost(n);
    struct msv_queue_usage *use = calloc(n ? n : 1, sizeof(*use));

    m->full = calloc(n ? n : 1, sizeof(*m->full));
    if (use == NULL || m->full == NULL) {
        free(use);
        msv_conn_send_error(c, m->f->request_id, E_IO, "out of memory");
        return 0;
    }
    if (!msv_server_take_token(s, MSV_LIMIT_SEND, c->account_id, cost)) {
        free(use);
        atomic_fetch_add(&s->m.sends_rate_limited, 1);
        msv_conn_send_error(c, m->f->request_id, E_RATE, "too many envelopes sent; slow down");
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        use[i].device_id = m->items[i].device_id;
    if (n > 0 && STORE(s)->queue_usage(IMPL(s), use, n) != MSV_OK) {
        free(use);
        msv_server_refund_token(s, MSV_LIMIT_SEND, c->account_id, cost);
        msv_conn_send_error(c, m->f->request_id, E_IO, "storage failed");
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (msv_server_queue_is_full(s, &use[i], m->items[i].ciphertext_len))
            m->full[m->n_full++] = m->items[i].device_id;
        else
            m->items[kept++] = m->items[i];
    }
    free(use);
    m->n_items = kept;
    /* the copies left out are given back (a send of none still costs one); a Welcome's once
     * it is known which are kept instead, those costing as copies (keep_welcome) */
    if (m->n_full > 0 && m->q->kind != MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME)
        msv_server_refund_token(s, MSV_LIMIT_SEND, c->account_id, cost - send_cost(kept));
    return 1;
}

/* Once the send is taken and answered: the full devices' refusals recorded (one transaction)
 * and their accounts told. */
static void tell_full(struct msv_server *s, struct mls_send *m)
{
    if (m->n_full == 0)
        return;
    atomic_fetch_add(&s->m.mls_skipped, m->n_full);
    msv_server_queue_refused(s, m->full, m->n_full);
}

/* One copy of the delivery for each of targets but the sender, sharing its stored body. */
static int make_items(struct mls_send *m, const uint64_t *targets, size_t n)
{
    struct msv_conn_state *c = m->c;

    m->items = calloc(n ? n : 1, sizeof(*m->items));
    m->ids = calloc(n ? n : 1, sizeof(*m->ids));
    if (m->items == NULL || m->ids == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (targets[i] == c->device_id)
            continue;
        m->items[m->n_items++] = (struct msv_queue_in){.device_id = targets[i],
                                                       .sender_device = c->device_id,
                                                       .sender_handle = c->handle ? c->handle : "",
                                                       .suite = MLS_DELIVERY_SUITE,
                                                       .ciphertext = m->packed,
                                                       .ciphertext_len = m->packed_len,
                                                       .shared = 1};
    }
    return 1;
}

static void wake_all(struct msv_server *s, const struct mls_send *m)
{
    for (size_t i = 0; i < m->n_items; i++)
        msv_server_wake(s, m->items[i].device_id);
}

/* Every device a commit adds must exist and be approved; an error text or NULL. */
static const char *check_added(struct mls_send *m, int *code)
{
    struct msv_server *s = m->c->w->srv;

    for (size_t i = 0; i < m->q->n_removed; i++) {
        if (m->q->removed[i] == m->c->device_id) {
            *code = E_INVALID;
            return "a commit cannot remove its own sender (RFC 9420, 12.4)";
        }
    }
    for (size_t i = 0; i < m->q->n_added; i++) {
        struct msv_device_rec d = {0};
        msv_err err = STORE(s)->device_get(IMPL(s), m->q->added[i], &d);
        int approved = err == MSV_OK && d.approved;

        msv_device_rec_clear(&d);
        if (err != MSV_OK && err != MSV_ERR_NOT_FOUND) {
            *code = E_IO;
            return "storage failed";
        }
        if (!approved) {
            *code = E_INVALID;
            return "a commit adds a device that does not exist or is not approved";
        }
    }
    return NULL;
}

/* A commit: the epoch moves and the members change, with the copies queued, in one go. */
static void commit(struct mls_send *m)
{
    struct msv_server *s = m->c->w->srv;
    struct msv_conn_state *c = m->c;
    int64_t now = msv_server_now_ms(s);
    uint64_t epoch_now = 0, unclaimed = 0;
    int code = E_INVALID;
    const char *bad;
    struct msv_mls_commit mc;
    msv_err err;

    /* the tokens first: refused work is paid for too (refunded for a lost race or an IO
     * failure alone) */
    if (!take_room(m))
        return;
    if ((bad = check_added(m, &code)) != NULL) {
        if (code == E_IO)
            msv_server_refund_token(s, MSV_LIMIT_SEND, c->account_id, send_cost(m->n_items));
        refuse(c, m->f->request_id, code, bad);
        return;
    }
    if (s->cfg.mls_commit_pause_ms != 0) /* tests: widen the race the store must decide */
        usleep((useconds_t)s->cfg.mls_commit_pause_ms * 1000);
    mc = (struct msv_mls_commit){.group_id = m->q->group_id.data,
                                 .group_len = m->q->group_id.len,
                                 .epoch = m->q->epoch,
                                 .sender = c->device_id,
                                 .added = m->q->added,
                                 .removed = m->q->removed,
                                 .n_added = m->q->n_added,
                                 .n_removed = m->q->n_removed,
                                 .max_members = MLS_GROUP_DEVICES_MAX,
                                 .max_groups = MLS_DEVICE_GROUPS_MAX,
                                 .max_groups_by_account = MLS_DEVICE_GROUPS_BY_ACCOUNT_MAX,
                                 .claimer = c->account_id,
                                 .unclaimed = &unclaimed,
                                 .items = m->items,
                                 .n_items = m->n_items,
                                 .now_ms = now,
                                 .expires_ms = now + (int64_t)atomic_load(&s->queue_ttl_ms),
                                 .ids = m->ids,
                                 /* kept for members that miss it, as long as a queued copy */
                                 .log = m->packed,
                                 .log_len = m->packed_len,
                                 .log_keep = MLS_LOG_KEPT,
                                 .log_account_max = MLS_LOG_ACCOUNT_MAX,
                                 .log_expires_ms = now + (int64_t)atomic_load(&s->queue_ttl_ms)};
    err = STORE(s)->mls_commit(IMPL(s), &mc, &epoch_now);
    if (err == MSV_ERR_EXISTS)
        refuse_stale(c, m->f->request_id, epoch_now);
    else if (err == MSV_ERR_AUTH)
        refuse(c, m->f->request_id, MSV__WIRE__ERROR_CODE__ERROR_MLS_NOT_MEMBER,
               "this device is not a member of the group");
    else if (err == MSV_ERR_NOT_FOUND)
        refuse(c, m->f->request_id, E_NOT_FOUND, "no such group; a group starts at epoch 0");
    else if (err == MSV_ERR_TOO_BIG)
        refuse(c, m->f->request_id, E_TOO_BIG,
               "a group has at most 10000 member devices, a device is in at most 1000 groups, "
               "and one account adds another account's device to at most 250 of them");
    else if (err == MSV_ERR_INVALID) {
        char why[160];

        snprintf(why, sizeof(why),
                 "the commit adds device %llu, of which this account holds no unused KeyPackage "
                 "claimed within the hour: claim one first",
                 (unsigned long long)unclaimed);
        refuse(c, m->f->request_id, E_INVALID, why);
    } else if (err == MSV_ERR_AGAIN) {
        /* a copy's device was removed after the group was read (route): try again */
        atomic_fetch_add(&s->m.mls_refused, 1);
        msv_conn_send_error(c, m->f->request_id, E_IO,
                            "a member device was removed meanwhile; nothing changed, try again");
    } else if (err != MSV_OK)
        msv_conn_send_error(c, m->f->request_id, E_IO, "storage failed");
    if (err != MSV_OK) {
        if (err != MSV_ERR_AUTH && err != MSV_ERR_NOT_FOUND && err != MSV_ERR_TOO_BIG &&
            err != MSV_ERR_INVALID)
            msv_server_refund_token(s, MSV_LIMIT_SEND, c->account_id, send_cost(m->n_items));
        return;
    }
    atomic_fetch_add(&s->m.mls_commits, 1);
    atomic_fetch_add(&s->m.envelopes_enqueued, m->n_items);
    atomic_fetch_add(&s->m.mls_copies, m->n_items);
    wake_all(s, m);
    send_sent(c, m->f->request_id, epoch_now, m->n_items, m->full, m->n_full, 0);
    tell_full(s, m);
}

/*
 * A Welcome's copies queued (the sender's Welcome kept before for a device they go to
 * dropped), and the Welcome kept for each device left out for a full queue
 * that this sender's commit added (mls_welcome_put: one a membership, replaced by the next,
 * expiring with the queue), for it to ask for (msv_mls_welcome_get); those are taken out of
 * m->full, so that neither the sender nor their accounts are told of a Welcome not lost.
 * The tokens of those kept stay spent, as for copies queued; the others' are given back.
 */
static msv_err keep_welcome(struct mls_send *m, int64_t now, int64_t expires)
{
    struct msv_server *s = m->c->w->srv;
    uint8_t *kept = calloc(m->n_full ? m->n_full : 1, 1);
    struct msv_mls_welcome w = {.group_id = m->q->group_id.data,
                                .group_len = m->q->group_id.len,
                                .sender = m->c->device_id,
                                .items = m->items,
                                .n_items = m->n_items,
                                .now_ms = now,
                                .expires_ms = expires,
                                .ids = m->ids,
                                .left_out = m->full,
                                .n_left_out = m->n_full,
                                .delivery = m->packed,
                                .len = m->packed_len,
                                .kept = kept};
    size_t left = 0;
    msv_err err = kept == NULL ? MSV_ERR_NOMEM : STORE(s)->mls_welcome_put(IMPL(s), &w);

    for (size_t i = 0; err == MSV_OK && i < m->n_full; i++) {
        if (kept[i])
            m->n_kept++;
        else
            m->full[left++] = m->full[i];
    }
    free(kept);
    if (err != MSV_OK)
        return err;
    msv_server_refund_token(s, MSV_LIMIT_SEND, m->c->account_id,
                            send_cost(m->n_items + m->n_full) - send_cost(m->n_items + m->n_kept));
    m->n_full = left;
    return MSV_OK;
}

/* A proposal, an application message or a Welcome: queued, the epoch unchanged. */
static void forward(struct mls_send *m)
{
    struct msv_server *s = m->c->w->srv;
    int64_t now = msv_server_now_ms(s);
    msv_err err;

    if (!take_room(m))
        return;
    /* a leave: the device is off the list as its proposal is queued, in one transaction */
    if (is_leave(m->q))
        err = STORE(s)->mls_leave(IMPL(s), m->q->group_id.data, m->q->group_id.len, m->c->device_id,
                                  m->items, m->n_items, now,
                                  now + (int64_t)atomic_load(&s->queue_ttl_ms), m->ids);
    else if (m->q->kind == MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME)
        err = keep_welcome(m, now, now + (int64_t)atomic_load(&s->queue_ttl_ms));
    else
        err = m->n_items == 0
                  ? MSV_OK
                  : STORE(s)->queue_put(IMPL(s), m->items, m->n_items, now,
                                        now + (int64_t)atomic_load(&s->queue_ttl_ms), m->ids);
    if (err == MSV_ERR_NOT_FOUND) { /* it left already, through another connection */
        refuse(m->c, m->f->request_id, MSV__WIRE__ERROR_CODE__ERROR_MLS_NOT_MEMBER,
               "this device is not a member of the group");
        return;
    }
    if (err != MSV_OK) { /* a Welcome's copies left out too, none kept */
        msv_server_refund_token(
            s, MSV_LIMIT_SEND, m->c->account_id,
            send_cost(m->n_items +
                      (m->q->kind == MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME ? m->n_full : 0)));
        msv_conn_send_error(m->c, m->f->request_id, E_IO, "storage failed");
        return;
    }
    atomic_fetch_add(&s->m.mls_messages, 1);
    atomic_fetch_add(&s->m.envelopes_enqueued, m->n_items);
    atomic_fetch_add(&s->m.mls_copies, m->n_items);
    wake_all(s, m);
    atomic_fetch_add(&s->m.mls_welcomes_kept, m->n_kept);
    send_sent(m->c, m->f->request_id, m->epoch, m->n_items, m->full, m->n_full, m->n_kept);
    tell_full(s, m);
}

/* A Welcome's recipients: each once, each a member (added by a commit already). */
static const char *check_recipients(const struct mls_send *m)
{
    const Msv__Wire__MlsSend *q = m->q;

    for (size_t i = 0; i < q->n_recipients; i++) {
        if (!is_in(m->members, m->n_members, q->recipients[i]))
            return "a Welcome is for members of the group: commit their addition first";
        for (size_t k = 0; k < i; k++) {
            if (q->recipients[k] == q->recipients[i])
                return "a Welcome names a device more than once";
        }
    }
    return NULL;
}

/*
 * Reads the group, then: its members must include the sender (a commit for epoch 0 of an
 * unknown group starts it); handshake messages must be for the current epoch.
 */
static void route(struct mls_send *m)
{
    struct msv_server *s = m->c->w->srv;
    const Msv__Wire__MlsSend *q = m->q;
    int is_commit = q->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT;
    int handshake = is_commit || q->kind == MSV__WIRE__MLS_KIND__MLS_KIND_PROPOSAL;
    const char *bad;
    msv_err err = STORE(s)->mls_group_get(IMPL(s), q->group_id.data, q->group_id.len, &m->epoch,
                                          &m->members, &m->n_members);

    if (err == MSV_ERR_NOT_FOUND && is_commit && q->epoch == 0) {
        err = MSV_OK; /* a new group: nobody else to tell yet */
    } else if (err == MSV_ERR_NOT_FOUND) {
        refuse(m->c, m->f->request_id, E_NOT_FOUND, "no such group; a group starts at epoch 0");
        return;
    } else if (err == MSV_OK && !is_in(m->members, m->n_members, m->c->device_id)) {
        refuse(m->c, m->f->request_id, MSV__WIRE__ERROR_CODE__ERROR_MLS_NOT_MEMBER,
               "this device is not a member of the group");
        return;
    } else if (err == MSV_OK && handshake && q->epoch != m->epoch && !is_leave(q)) {
        /* a leave is taken at any epoch (a member committing on and on cannot hold it up):
         * queued with the epoch its sender gave */
        refuse_stale(m->c, m->f->request_id, m->epoch);
        return;
    }
    if (err != MSV_OK) {
        msv_conn_send_error(m->c, m->f->request_id, E_IO, "storage failed");
        return;
    }
    if (is_leave(q) && q->removed[0] != m->c->device_id) {
        refuse(m->c, m->f->request_id, E_INVALID,
               "a proposal removes its own sender alone; others are removed by a commit");
        return;
    }
    if ((bad = check_recipients(m)) != NULL) {
        refuse(m->c, m->f->request_id, E_INVALID, bad);
        return;
    }
    m->packed = pack_delivery(q, m->epoch, &m->packed_len);
    if (m->packed == NULL || !make_items(m, q->n_recipients ? q->recipients : m->members,
                                         q->n_recipients ? q->n_recipients : m->n_members)) {
        msv_conn_send_error(m->c, m->f->request_id, E_IO, "out of memory");
        return;
    }
    /* the body is stored once, but every copy is read and pushed whole (a worker reads the
     * queues of all its devices a wake-up touches at once): at most MLS_COPIED_MAX bytes of
     * copies a send */
    if ((uint64_t)m->packed_len * m->n_items > MLS_COPIED_MAX) {
        refuse(m->c, m->f->request_id, E_TOO_BIG,
               "the message times the members it goes to is more than 64 MiB: send it "
               "smaller (as an attachment's key, say)");
        return;
    }
    if (is_commit)
        commit(m);
    else
        forward(m);
}

void msv_mls_send(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct mls_send m = {.c = c, .f = f, .q = f->mls_send};
    int code;
    const char *bad = check_shape(s, m.q, &code);

    if (bad == NULL && s->cfg.mls_stale_devices &&
        m.q->kind == MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION) {
        code = E_STALE; /* tests only: a server that says so of an MLS message */
        bad = "the device list is stale";
    }
    if (bad != NULL) {
        refuse(c, f->request_id, code, bad);
        return;
    }
    route(&m);
    free(m.packed);
    free(m.members);
    free(m.items);
    free(m.ids);
    free(m.full);
}

/* The groups the server holds the asking device in, with their epochs. */
void msv_mls_groups_list(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct msv_mls_group_rec *recs = NULL;
    Msv__Wire__MlsGroup *g = NULL, **gp = NULL;
    Msv__Wire__MlsGroups resp = MSV__WIRE__MLS_GROUPS__INIT;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    size_t n = 0;

    if (!msv_server_take_token(s, MSV_LIMIT_LOOKUP, c->account_id, 1.0)) {
        refuse(c, f->request_id, E_RATE, "too many requests for the device's groups; slow down");
        return;
    }
    if (STORE(s)->mls_groups_of_device(IMPL(s), c->device_id, MLS_DEVICE_GROUPS_MAX, &recs, &n) !=
        MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    /* at most 1,000 groups of 64-byte ids: refused only with frame_max set far down */
    if (n * (MLS_GROUP_ID_MAX + 16) + 16 > msv_server_answer_max(s)) {
        refuse(c, f->request_id, E_TOO_BIG,
               "the device's groups do not fit in one answer; raise frame_max");
        goto out;
    }
    g = calloc(n ? n : 1, sizeof(*g));
    gp = calloc(n ? n : 1, sizeof(*gp));
    if (g == NULL || gp == NULL) {
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        msv__wire__mls_group__init(&g[i]);
        g[i].group_id = (ProtobufCBinaryData){recs[i].group_len, recs[i].group_id};
        g[i].epoch = recs[i].epoch;
        gp[i] = &g[i];
    }
    resp.n_groups = n;
    resp.groups = gp;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_MLS_GROUPS;
    out.mls_groups = &resp;
    msv_conn_send_frame(c, &out);
out:
    free(gp);
    free(g);
    free(recs);
}

/*
 * Whether a read of what the server keeps of a group for a member that missed it (its commit
 * log, or a Welcome kept for it) may go: a group id of 1 to 64 bytes, and a token of a bucket
 * of the account's own, so that a member making others read drains no bucket their directory
 * lookups need (refused with rate_why). Answers a refusal itself and returns 0.
 */
static int kept_read_allowed(struct msv_conn_state *c, const msv_frame *f,
                             const ProtobufCBinaryData *group_id, const char *rate_why)
{
    if (group_id->len == 0 || group_id->len > MLS_GROUP_ID_MAX) {
        refuse(c, f->request_id, E_INVALID, "a group id is 1 to 64 bytes");
        return 0;
    }
    if (!msv_server_take_token(c->w->srv, MSV_LIMIT_MLS_LOG, c->account_id, 1.0)) {
        refuse(c, f->request_id, E_RATE, rate_why);
        return 0;
    }
    return 1;
}

/* The commits a group's log keeps from an epoch on, for a member device that missed some. */
void msv_mls_commits_get(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__MlsCommitsGet *q = f->mls_commits_get;
    struct msv_mls_logged *l = NULL;
    Msv__Wire__MlsLogged *g = NULL, **gp = NULL;
    Msv__Wire__MlsCommits resp = MSV__WIRE__MLS_COMMITS__INIT;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    size_t n = 0, room = msv_server_answer_max(s);
    uint64_t epoch = 0;
    int more = 0;
    msv_err err;

    if (!kept_read_allowed(c, f, &q->group_id, "too many reads of MLS commit logs; slow down"))
        return;
    atomic_fetch_add(&s->m.mls_log_reads, 1);
    /* each commit costs its delivery and at most MLS_LOGGED_FRAMING bytes of framing; the
     * first always goes (a delivery is at most the payload limit and its own framing, which
     * the frame limit holds with 1 KiB to spare) */
    /* and at most MLS_LOG_ANSWER_BYTES, so that a slow link gets each answer in time */
    room = room > MLS_LOG_ANSWER_BYTES ? MLS_LOG_ANSWER_BYTES : room;
    room = room > 1024 + MLS_LOG_ANSWER * MLS_LOGGED_FRAMING
               ? room - 1024 - MLS_LOG_ANSWER * MLS_LOGGED_FRAMING
               : 1;
    err = STORE(s)->mls_commits_since(IMPL(s), q->group_id.data, q->group_id.len, c->device_id,
                                      q->from_epoch, msv_server_now_ms(s), MLS_LOG_ANSWER, room, &l,
                                      &n, &epoch, &more);
    if (err == MSV_ERR_NOT_FOUND) {
        refuse(c, f->request_id, E_NOT_FOUND, "no such group");
        return;
    }
    if (err == MSV_ERR_AUTH) {
        refuse(c, f->request_id, MSV__WIRE__ERROR_CODE__ERROR_MLS_NOT_MEMBER,
               "this device is not a member of the group");
        return;
    }
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    g = calloc(n ? n : 1, sizeof(*g));
    gp = calloc(n ? n : 1, sizeof(*gp));
    if (g == NULL || gp == NULL) {
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        msv__wire__mls_logged__init(&g[i]);
        g[i].epoch = l[i].epoch;
        g[i].sender_device = l[i].sender;
        g[i].delivery = (ProtobufCBinaryData){l[i].len, l[i].delivery};
        gp[i] = &g[i];
    }
    atomic_fetch_add(&s->m.mls_log_served, n);
    resp.epoch = epoch;
    resp.n_commits = n;
    resp.commits = gp;
    resp.more = more != 0;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_MLS_COMMITS;
    out.mls_commits = &resp;
    msv_conn_send_frame(c, &out);
out:
    free(gp);
    free(g);
    msv_mls_logged_free(l, n);
}

/* The Welcome the server keeps for the asking device in a group (forward, keep_welcome), or,
 * the device having joined from it, dropped. */
void msv_mls_welcome_get(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__MlsWelcomeGet *q = f->mls_welcome_get;
    Msv__Wire__MlsWelcomeKept resp = MSV__WIRE__MLS_WELCOME_KEPT__INIT;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    uint8_t *delivery = NULL;
    size_t len = 0;
    uint64_t sender = 0;
    msv_err err;

    if (!kept_read_allowed(c, f, &q->group_id, "too many reads of what MLS groups keep; slow down"))
        return;
    if (q->taken.len != 0 && q->taken.len != 32) {
        refuse(c, f->request_id, E_INVALID, "taken is the SHA-256 of the Welcome taken");
        return;
    }
    if (q->taken.len == 0)
        atomic_fetch_add(&s->m.mls_welcome_reads, 1);
    err = STORE(s)->mls_welcome_get(IMPL(s), q->group_id.data, q->group_id.len, c->device_id,
                                    msv_server_now_ms(s), &delivery, &len, &sender);
    /* taken: the one kept dropped if it is that one still (not one kept since in its place) */
    if (q->taken.len != 0 && (err == MSV_OK || err == MSV_ERR_NOT_FOUND)) {
        uint8_t digest[32] = {0};

        if (err == MSV_OK)
            crypto_hash_sha256(digest, delivery, len);
        err = err == MSV_OK && memcmp(digest, q->taken.data, 32) == 0
                  ? STORE(s)->mls_welcome_drop(IMPL(s), q->group_id.data, q->group_id.len,
                                               c->device_id, delivery, len)
                  : MSV_OK;
        free(delivery);
        if (err == MSV_OK)
            msv_conn_send_ok(c, f->request_id);
        else
            msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    if (err == MSV_ERR_AUTH)
        refuse(c, f->request_id, MSV__WIRE__ERROR_CODE__ERROR_MLS_NOT_MEMBER,
               "this device is not a member of the group");
    else if (err == MSV_ERR_NOT_FOUND)
        refuse(c, f->request_id, E_NOT_FOUND, "no Welcome is kept for this device in the group");
    else if (err != MSV_OK)
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
    if (err != MSV_OK)
        return;
    resp.sender_device = sender;
    resp.delivery = (ProtobufCBinaryData){len, delivery};
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_MLS_WELCOME_KEPT;
    out.mls_welcome_kept = &resp;
    msv_conn_send_frame(c, &out);
    free(delivery);
}
