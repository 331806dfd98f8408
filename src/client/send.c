/*
 * Sending: sealing a payload for every device of every recipient, verified contacts, the outbox,
 * attachments.
 */
#include "client/internal.h"
#include "client/sessions.h"
#include "missive/kt.h"

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

/* a disappearing message's queued copies wait this long beyond its timer */
#define RELAY_EXPIRY_MARGIN_S 86400

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

/* The handle this send names this account by (client_send_as). */
#define SEND_AS(c) ((c)->send_as[0] != '\0' ? (c)->send_as : (c)->handle)

/* The sealed layer: hybrid to a post-quantum device (never classical), else classical. */
static msv_err wrap_sealed(struct msv_client *c, const char *peer, uint64_t device_id,
                           const struct msv_public_identity *pub, const uint8_t *inner,
                           size_t inner_len, uint8_t **out, size_t *out_len)
{
    struct msv_sealing_key *key = NULL;
    msv_err err;

    if (!msv_public_identity_is_pq(pub))
        return msv_sealed_wrap(c->id, pub, SEND_AS(c), c->device_id, inner, inner_len, out,
                               out_len);
    key = malloc(sizeof(*key));
    if (key == NULL)
        return MSV_ERR_NOMEM;
    err = client_sealing_key(c, peer, device_id, pub, key);
    if (err == MSV_OK)
        err = msv_sealed_wrap_pq(c->id, pub, key, SEND_AS(c), c->device_id, inner, inner_len, out,
                                 out_len);
    free(key);
    return err;
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
                    err = wrap_sealed(c, peer, d->device_id, pub, inner, inner_len,
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
    snprintf(key, len, MSV_VERIFIED_PREFIX "%s", handle);
}

msv_err client_check_verified(struct msv_client *c, Msv__Wire__HandleDevices *const *hds,
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

/*
 * A handle the directory lists no device for: not registered, or, when its log entry (checked
 * with the answer) is a tombstone, deleted (docs/transparency.md). MSV_ERR_NOT_FOUND.
 */
enum shown_empty { NOT_REGISTERED, DELETED, LEFT_OUT };

/* Why hd, checked with its answer, shows no device: its log entry is a tombstone, lists
 * devices (each left out, its approval not holding), or there is none. */
static enum shown_empty shown_empty(const Msv__Wire__HandleDevices *hd)
{
    struct msv_kt_entry *e = malloc(sizeof(*e));
    int parsed = e != NULL && hd->proof != NULL &&
                 msv_kt_leaf_parse(msv_kt_proof_entry(hd->proof).data,
                                   msv_kt_proof_entry(hd->proof).len, e) == MSV_OK;
    enum shown_empty why = !parsed        ? NOT_REGISTERED
                           : e->deleted   ? DELETED
                           : e->n_devices ? LEFT_OUT
                                          : NOT_REGISTERED;

    free(e);
    return why;
}

static msv_err no_devices(struct msv_client *c, const char *handle,
                          const Msv__Wire__HandleDevices *hd)
{
    enum shown_empty why = shown_empty(hd);

    snprintf(c->why.message, sizeof(c->why.message),
             why == DELETED    ? "%s deleted their account (its transparency log entry says so)"
             : why == LEFT_OUT ? "no device of %s has a valid approval from its account's devices "
                                 "(the directory's device list does not check out): nothing was "
                                 "sent"
                               : "%s is not registered",
             handle);
    return MSV_ERR_NOT_FOUND;
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
        err = client_verified_lookup(c, both, 2, &r);
    for (size_t i = 0; err == MSV_OK && i < 2; i++)
        err = client_remember(c, r->lookup_result->results[i]);
    if (err == MSV_OK && r->lookup_result->results[1]->n_devices == 0)
        err = no_devices(c, handle, r->lookup_result->results[1]);
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
 * How long the relay may keep the copies of a payload undelivered: for a
 * disappearing message, its timer and a day (a device that is offline for a
 * while still gets it; the copy never outlives the message by much); else
 * as long as the relay keeps anything (0).
 */
static uint32_t relay_expiry(const uint8_t *pt, size_t pt_len)
{
    struct msv_payload *p = NULL;
    uint32_t after = 0;

    if (msv_payload_parse(pt, pt_len, &p) == MSV_OK && p->kind == MSV_KIND_MESSAGE &&
        p->timer_s != 0)
        after = p->timer_s + RELAY_EXPIRY_MARGIN_S;
    msv_payload_free(p);
    return after;
}

/* Whether device is one of the n envelopes' recipients. */
static int addressed(const struct msv_outgoing *out, size_t n, uint64_t device)
{
    for (size_t i = 0; i < n; i++)
        if (out[i].device_id == device)
            return 1;
    return 0;
}

/*
 * The handles (hds their devices, one per handle) none of whose addressed devices (those out
 * has an envelope for) the relay queued the send for, their queues full (left; ids no envelope
 * was for count for nothing), refused, why their reason: owed the message and told of. This
 * account's own handles are not (the server tells its full device's account). A handle some of
 * whose devices got it is not either: its owner reads it there, and the full device's account
 * is told. *others: how many handles of another account the send addressed.
 */
static msv_err refuse_left_out(struct msv_client *c, const char *const *handles,
                               Msv__Wire__HandleDevices *const *hds, size_t n,
                               const struct msv_outgoing *out, size_t n_out,
                               const struct msv_send_left *left, const char *why,
                               struct client_refusals *refused, size_t *others)
{
    msv_err err = MSV_OK;

    *others = 0;
    for (size_t j = 0; j < n && err == MSV_OK; j++) {
        size_t sent = 0, full = 0;

        for (size_t d = 0; d < hds[j]->n_devices; d++) {
            uint64_t device = hds[j]->devices[d]->device_id;

            if (!addressed(out, n_out, device))
                continue;
            sent++;
            for (size_t i = 0; i < left->n; i++)
                if (left->devices[i] == device) {
                    full++;
                    break;
                }
        }
        if (sent == 0 || client_is_own_handle(c, handles[j]))
            continue;
        ++*others;
        if (full == sent)
            err = client_refusal_add(refused, handles[j], why, MSV_ERR_TOO_BIG);
    }
    return err;
}

/*
 * Sends to the devices of hds; on a stale list, *fresh holds the server's
 * current one. With a delivery token, sealed, on the connection that never
 * authenticated. *queued: the relay took it (some devices, perhaps not all). The handles none
 * of whose devices' queues had room are refused (refuse_left_out, the relay's words their
 * reason): those the relay left out of a send it took, or, refused whole, all of them (then
 * MSV_OK, nothing queued: deliver_group says whether the message reached anyone).
 */
static msv_err send_once(struct msv_client *c, const uint8_t id[16], const char *const *handles,
                         size_t n, Msv__Wire__HandleDevices *const *hds, size_t n_hds,
                         const uint8_t *pt, size_t pt_len, const uint8_t *token, msv_frame **fresh,
                         struct client_refusals *refused, int *queued)
{
    struct sealed_set s = {0};
    struct msv_send_as as = {0};
    struct msv_send_left *left = calloc(1, sizeof(*left));
    msv_err err = left != NULL ? client_check_verified(c, hds, n_hds) : MSV_ERR_NOMEM;

    *queued = 0;
    if (err == MSV_OK)
        err = seal_for(c, hds, n_hds, pt, pt_len, token != NULL, &s);
    if (err == MSV_OK && token != NULL && c->sealed_conn == NULL)
        err = client_plain_conn(c, &c->sealed_conn);
    /* the other people see this account as SEND_AS; its own devices as it authenticated */
    as.delivery_token = token;
    as.expire_after_s = relay_expiry(pt, pt_len);
    if (token == NULL && strcmp(SEND_AS(c), c->handle) != 0 &&
        !(n == 1 && strcmp(handles[0], c->handle) == 0))
        as.from = SEND_AS(c);
    as.left = left;
    if (err == MSV_OK)
        err = msv_request_send_as(token != NULL ? c->sealed_conn : c->conn, id, handles, n, s.out,
                                  s.count, &as, TIMEOUT_MS, fresh, &c->why);
    if (err == MSV_ERR_IO && token != NULL) {
        msv_conn_close(c->sealed_conn);
        c->sealed_conn = NULL;
    }
    *queued = err == MSV_OK;
    if ((err == MSV_OK && left->n > 0) || (err == MSV_ERR_TOO_BIG && left->all)) {
        char why[sizeof(c->why.message)];
        size_t before = refused->n, others = 0;
        msv_err e;

        snprintf(why, sizeof(why), "%s",
                 err == MSV_OK ? "the recipient's queue is full; nothing was sent, try again later"
                               : c->why.message);
        e = refuse_left_out(c, handles, hds, n_hds, s.out, s.count, left, why, refused, &others);
        /* refused whole: taken as those refusals only if they are every other account's
         * handle it went to (a relay naming devices of no such handle fails it as before) */
        if (e != MSV_OK || err == MSV_OK || refused->n - before == others)
            err = e;
    }
    sealed_clear(&s);
    free(left);
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
 * Fills k from the device sets remembered for targets; missing[i] is set for
 * each target that is unknown or was learnt over a day ago (ask the
 * directory about those). The relay refuses a send whose set is out of date and answers
 * with the current one, so a remembered set is safe to use.
 */
static msv_err known_sets_load(struct msv_client *c, const char *const *targets, size_t n,
                               struct known_sets *k, uint8_t *missing)
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
        missing[i] = err == MSV_ERR_NOT_FOUND;
        err = missing[i] ? MSV_OK : err;
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

/*
 * When what p says was written, p made at at: a payload about an earlier message (a receipt, an
 * edit, an unsend, a reaction) was written to whom that one was, and is dated by it (when this
 * device stored it), so that nothing about a message of an account deleted goes to the new
 * account of its handle.
 */
static int64_t written_at(struct msv_client *c, const struct msv_payload *p, int64_t at)
{
    struct msv_message_rec *m = NULL;
    int about = p->kind == MSV_KIND_RECEIPT_DELIVERED || p->kind == MSV_KIND_RECEIPT_READ ||
                p->kind == MSV_KIND_EDIT || p->kind == MSV_KIND_UNSEND ||
                p->kind == MSV_KIND_REACTION;

    /* the message read only on a device that ever learnt of a new account (a receipt goes with
     * every message read; a telling later than now is later than that message too) */
    if (about && p->has_target && client_renewed_any(c) &&
        msv_client_db_message_get(c->db, p->target_id, &m) == MSV_OK && m->stored_at_ms > 0 &&
        m->stored_at_ms < at)
        at = m->stored_at_ms;
    msv_messages_free(m, m != NULL ? 1 : 0);
    return at;
}

/*
 * Refuses handle (REFUSED_RENEWED) when the message being sent was written before this device
 * learnt that handle is a new account: it was written to the account that was deleted, and the
 * one registered since with the handle does not get it (docs/transparency.md, "A new account").
 */
static msv_err refuse_renewed(struct msv_client *c, const char *handle,
                              struct client_refusals *refused)
{
    char why[600];
    size_t before = refused->n;
    msv_err err;

    if (c->written_ms == 0 || client_is_own_handle(c, handle) ||
        client_is_refused(refused, handle) || !client_renewed_since(c, handle, c->written_ms))
        return MSV_OK;
    snprintf(why, sizeof(why),
             "%.64s is a new account: the account this was written to was deleted and the "
             "handle registered again; send it again to write to the new account",
             handle);
    err = client_refusal_gone(refused, handle, why, MSV_ERR_NOT_FOUND);
    if (err == MSV_OK && refused->n > before)
        refused->gone[before] = REFUSED_RENEWED;
    return err;
}

/*
 * Asks the directory for targets' devices and remembers them (warning of changes). A target
 * whose result does not check out, or whose device list as a whole does not (every device left
 * out), is refused: added to refused, its result keeping no device, not remembered, and looked
 * up again by the next send (docs/transparency.md, "A send to handles that do not check out").
 * A target no account has (never registered, or deleted) is refused as gone: the others get
 * the message, and it is not owed to that handle; so is one that the answer shows to be a new
 * account since the message was written (refuse_renewed).
 */
static msv_err look_up(struct msv_client *c, const char *const *targets, size_t n,
                       msv_frame **known, struct client_refusals *refused)
{
    msv_err err = client_send_lookup(c, targets, n, known, refused);
    int renewed_any = err == MSV_OK && c->written_ms != 0 && client_renewed_any(c);

    if (err == MSV_OK && (*known)->lookup_result->n_results != n)
        err = MSV_ERR_PARSE; /* an answer for other handles than asked */
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        const Msv__Wire__HandleDevices *hd = (*known)->lookup_result->results[i];

        if (client_is_refused(refused, targets[i]))
            continue;
        if (hd->n_devices == 0 && shown_empty(hd) == LEFT_OUT) {
            err = client_refusal_add(refused, targets[i], c->why.message,
                                     no_devices(c, targets[i], hd));
            if (err == MSV_OK)
                err = msv_kt_lookup_make_due(c->db, targets[i]);
            memset(&c->why, 0, sizeof(c->why));
            continue;
        }
        err = client_remember(c, hd);
        if (err == MSV_OK && hd->n_devices == 0 && strcmp(targets[i], c->handle) != 0) {
            err = client_refusal_gone(refused, targets[i], c->why.message,
                                      no_devices(c, targets[i], hd));
            memset(&c->why, 0, sizeof(c->why));
        } else if (err == MSV_OK && renewed_any)
            err = refuse_renewed(c, targets[i], refused);
    }
    return err;
}

/* Keeps of targets and their sets hds (n) those not refused, in order; their count. */
static size_t not_refused(const struct client_refusals *refused, const char **targets,
                          Msv__Wire__HandleDevices **hds, size_t n)
{
    size_t kept = 0;

    for (size_t i = 0; i < n; i++) {
        if (client_is_refused(refused, targets[i]))
            continue;
        targets[kept] = targets[i];
        hds[kept++] = hds[i];
    }
    return kept;
}

/* The error of refusal k, its words in c->why: what a send that reached nobody else returns. */
static msv_err refusal_error(struct msv_client *c, const struct client_refusals *refused, size_t k)
{
    memset(&c->why, 0, sizeof(c->why));
    snprintf(c->why.message, sizeof(c->why.message), "%s", refused->why[k]);
    return refused->err[k];
}

/* refusal_error of the first of targets refused, one it is owed to (not gone) first: a send
 * that reached nobody is then held for it, whatever the order of the handles. */
static msv_err first_refusal(struct msv_client *c, const struct client_refusals *refused,
                             const char *const *targets, size_t n)
{
    for (int gone = 0; gone < 2; gone++)
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < refused->n; k++)
                if (strcmp(refused->handle[k], targets[i]) == 0 && !refused->gone[k] == !gone)
                    return refusal_error(c, refused, k);
    return MSV_ERR_NOT_FOUND;
}

/* refusal_error of the refusals from the from-th on, one it is owed to (not gone) first. */
static msv_err refusal_since(struct msv_client *c, const struct client_refusals *refused,
                             size_t from)
{
    for (size_t k = from; k < refused->n; k++)
        if (!refused->gone[k])
            return refusal_error(c, refused, k);
    return refusal_error(c, refused, from);
}

/* Whether one of targets is refused. */
static int refused_among(const struct client_refusals *refused, const char *const *targets,
                         size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (client_is_refused(refused, targets[i]))
            return 1;
    return 0;
}

/* Whether every target but this account is refused (gone: as one no account has), and one is. */
static int others_refused(struct msv_client *c, const struct client_refusals *refused,
                          const char *const *targets, size_t n, int gone)
{
    size_t others = 0;

    for (size_t i = 0; i < n; i++) {
        size_t k = client_refusal_find(refused, targets[i]);

        if (client_is_own_handle(c, targets[i]))
            continue;
        if (k == refused->n || (gone && !refused->gone[k]))
            return 0;
        others++;
    }
    return others > 0;
}

/* Whether targets name anyone but this account (by any of its handles). */
static int names_others(struct msv_client *c, const char *const *targets, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!client_is_own_handle(c, targets[i]))
            return 1;
    return 0;
}

/* The device sets of a send's targets, in their order: remembered, or the directory's; the
 * refused ones left out. */
struct target_sets {
    struct known_sets ks;
    msv_frame **frames; /* the directory's answers, LOOKUP_BATCH handles each */
    size_t n_frames;
    const char **targets;           /* the targets not refused */
    Msv__Wire__HandleDevices **hds; /* one per target not refused */
    size_t n;
};

/* a lookup names at most this many handles (the directory's limit) */
#define LOOKUP_BATCH 256

static void target_sets_free(struct target_sets *t)
{
    known_sets_free(&t->ks);
    for (size_t i = 0; i < t->n_frames; i++)
        msv_frame_free(t->frames[i]);
    free(t->frames);
    free(t->targets);
    free(t->hds);
    memset(t, 0, sizeof(*t));
}

/*
 * The device sets of targets: the remembered ones, and the directory's for
 * the others, asked LOOKUP_BATCH handles at a time (one lookup per batch of
 * handles not known, never one per member); a target that is a new account since the message
 * was written is refused first (refuse_renewed), and a refused one not asked for.
 */
static msv_err target_sets_load(struct msv_client *c, const char *const *targets, size_t n,
                                struct target_sets *t, struct client_refusals *refused)
{
    uint8_t *missing = calloc(n + 1, 1);
    const char **ask = calloc(n + 1, sizeof(*ask));
    size_t *where = calloc(n + 1, sizeof(*where)), n_ask = 0;
    msv_err err =
        missing && ask && where ? known_sets_load(c, targets, n, &t->ks, missing) : MSV_ERR_NOMEM;

    if (err == MSV_OK && ((t->hds = calloc(n + 1, sizeof(*t->hds))) == NULL ||
                          (t->targets = calloc(n + 1, sizeof(*t->targets))) == NULL))
        err = MSV_ERR_NOMEM;
    /* a read per target only on a device that ever learnt of a new account */
    if (err == MSV_OK && c->written_ms != 0 && client_renewed_any(c))
        for (size_t i = 0; err == MSV_OK && i < n; i++)
            err = refuse_renewed(c, targets[i], refused);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        t->targets[i] = targets[i];
        t->hds[i] = t->ks.ptrs[i];
        if (missing[i] && !client_is_refused(refused, targets[i])) {
            where[n_ask] = i;
            ask[n_ask++] = targets[i];
        }
    }
    if (err == MSV_OK && (t->frames = calloc(n_ask / LOOKUP_BATCH + 1, sizeof(*t->frames))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t at = 0; err == MSV_OK && at < n_ask; at += LOOKUP_BATCH) {
        size_t k = n_ask - at < LOOKUP_BATCH ? n_ask - at : LOOKUP_BATCH;
        msv_frame **f = &t->frames[t->n_frames];

        err = look_up(c, ask + at, k, f, refused);
        if (*f != NULL) /* kept, also when a handle in it is refused: target_sets_free frees it */
            t->n_frames++;
        for (size_t i = 0; err == MSV_OK && i < k; i++)
            t->hds[where[at + i]] = (*f)->lookup_result->results[i];
    }
    /* a refused target's remembered set is never sent to in its place */
    if (err == MSV_OK)
        t->n = not_refused(refused, t->targets, t->hds, n);
    free(missing);
    free(ask);
    free(where);
    return err;
}

/*
 * Which of the n targets a stale answer says changed (stale[i] set): those
 * whose current devices it lists, and those whose set as sent (hds) holds a device it names as
 * none of the send's handles'. Every target when it cannot tell (a partial answer, or one that
 * names none of them).
 */
static void stale_targets(const msv_frame *answer, const char *const *targets,
                          Msv__Wire__HandleDevices *const *hds, size_t n, uint8_t *stale)
{
    const Msv__Wire__Error *e =
        answer != NULL && answer->body_case == MSV__WIRE__FRAME__BODY_ERROR ? answer->error : NULL;
    size_t count = 0;

    memset(stale, 0, n);
    for (size_t i = 0; e != NULL && !e->partial && i < n; i++) {
        for (size_t j = 0; j < e->n_current && !stale[i]; j++)
            stale[i] = msv_lookup_result_is_for(e->current[j], targets[i]); /* case folded */
        for (size_t d = 0; d < hds[i]->n_devices && !stale[i]; d++) {
            for (size_t u = 0; u < e->n_unknown_devices && !stale[i]; u++)
                stale[i] = hds[i]->devices[d]->device_id == e->unknown_devices[u];
        }
        count += stale[i];
    }
    if (count == 0)
        memset(stale, 1, n);
}

/*
 * Sends to the devices of hds (one per target, in their order); a stale set is
 * replaced by the relay's answer, learnt from the log, and the send tried again.
 */
static msv_err send_batch(struct msv_client *c, const uint8_t id[16], const char **targets,
                          size_t n, Msv__Wire__HandleDevices **start, const uint8_t *pt,
                          size_t pt_len, const uint8_t *token, int alone,
                          struct client_refusals *refused, int *queued)
{
    msv_frame *fresh[SEND_TRIES] = {NULL}; /* start's sets point into them */
    uint8_t *stale_at = malloc(n ? n : 1);
    const char **ask = malloc((n ? n : 1) * sizeof(*ask));
    size_t refused_before = refused->n;
    msv_err err = stale_at != NULL && ask != NULL ? MSV_OK : MSV_ERR_NOMEM;

    c->sealing_rechecked = 0;
    for (int tries = 0; err == MSV_OK && n > 0 && tries < SEND_TRIES; tries++) {
        msv_frame *stale = NULL;
        size_t n_ask = 0;

        err = send_once(c, id, targets, n, start, n, pt, pt_len, token, &stale, refused, queued);
        if (err == MSV_ERR_AGAIN)
            stale_targets(stale, targets, start, n, stale_at);
        msv_frame_free(stale);
        if (err != MSV_ERR_AGAIN)
            break;
        /* the device sets the relay says changed since they were learnt: learnt from the log
         * (the relay's own list of the devices is not taken on trust), then the send tried
         * again; a target refused now goes out of the send */
        for (size_t i = 0; i < n; i++) {
            if (stale_at[i])
                ask[n_ask++] = targets[i];
        }
        err = look_up(c, ask, n_ask, &fresh[tries], refused);
        for (size_t i = 0, k = 0; err == MSV_OK && i < n; i++) {
            if (stale_at[i])
                start[i] = fresh[tries]->lookup_result->results[k++];
        }
        if (err == MSV_OK)
            n = not_refused(refused, targets, start, n);
        /* as deliver_group: nothing goes when only this account is left of a send that
         * reached nobody else */
        if (err == MSV_OK && alone && refused->n > refused_before && !names_others(c, targets, n))
            err = refusal_since(c, refused, refused_before);
        if (err == MSV_OK && tries == SEND_TRIES - 1) {
            snprintf(c->why.message, sizeof(c->why.message),
                     "the relay keeps asking for devices that the transparency log does not "
                     "list, or that their account did not approve; nothing was sealed for them");
            err = MSV_ERR_AGAIN;
        }
    }
    for (int i = 0; i < SEND_TRIES; i++)
        msv_frame_free(fresh[i]);
    free(stale_at);
    free(ask);
    return err;
}

/* What one send to the relay may carry: its handles, envelopes and bytes (docs/wire.md). */
#define SEND_HANDLES_BATCH 256
#define SEND_ENVELOPES_BATCH 1024
#define SEND_BYTES_BATCH (768u * 1024u)
#define ENVELOPE_OVERHEAD 2048 /* an envelope's bytes beyond its payload, at most */

/* How many of hds from the first go in one send to the relay (at least one). */
static size_t batch_size(Msv__Wire__HandleDevices *const *hds, size_t n, size_t pt_len)
{
    size_t k = 0, envelopes = 0;

    while (k < n && k < SEND_HANDLES_BATCH) {
        size_t more = envelopes + hds[k]->n_devices;

        if (k > 0 &&
            (more > SEND_ENVELOPES_BATCH || more * (pt_len + ENVELOPE_OVERHEAD) > SEND_BYTES_BATCH))
            break;
        envelopes = more;
        k++;
    }
    return k;
}

/*
 * Sends to the targets' devices as last learnt (the directory is asked only
 * about handles not seen before), split in as many sends as the relay's
 * frame and counts need; a send of more than one batch tells its progress
 * through on_send_progress.
 */
static msv_err deliver_group(struct msv_client *c, const uint8_t id[16], const char *const *targets,
                             size_t n, const uint8_t *pt, size_t pt_len, const uint8_t *token,
                             int alone, struct client_refusals *refused)
{
    struct target_sets ts = {0};
    size_t done = 0, refused_before = refused->n;
    int went = 0;
    msv_err err = msv_client_connect(c);

    c->why.code = 0;
    if (err == MSV_OK)
        err = target_sets_load(c, targets, n, &ts, refused);
    /* alone (nothing went to others in this send) and refused all but this account: nothing
     * goes, not even its own devices' copy */
    if (err == MSV_OK && alone && refused->n > refused_before && !names_others(c, ts.targets, ts.n))
        err = refusal_since(c, refused, refused_before);
    while (err == MSV_OK && done < ts.n) {
        size_t k = batch_size(ts.hds + done, ts.n - done, pt_len);
        int queued = 0;

        /* a batch whose every queue is full: its handles refused (send_once), the next goes */
        err = send_batch(c, id, ts.targets + done, k, ts.hds + done, pt, pt_len, token,
                         alone && done == 0, refused, &queued);
        went |= queued;
        done += k;
        if (err == MSV_OK && k < ts.n && c->on_send_progress != NULL)
            c->on_send_progress(c->ctx, done, ts.n);
    }
    /* alone, the relay took none of its sends, and every other target is refused by now (full
     * queues): it reached nobody, and fails as the first refusal says */
    if (err == MSV_OK && alone && !went && refused->n > refused_before &&
        others_refused(c, refused, ts.targets, ts.n, 0))
        err = refusal_since(c, refused, refused_before);
    target_sets_free(&ts);
    return err;
}

#define UNSEALED "unsealed-sends"     /* u64be: sends that fell back to authenticated */
#define OWED_GIVEN_UP "owed-given-up" /* u64be: owed messages given up (owed_give_up) */

uint64_t msv_client_unsealed_sends(struct msv_client *c)
{
    return client_counter(c, UNSEALED);
}

uint64_t msv_client_owed_given_up(struct msv_client *c)
{
    return client_counter(c, OWED_GIVEN_UP);
}

/* Message id goes to handle authenticated: counted, and told through on_unsealed, once (a
 * message is tried again after a lost connection, and from the outbox). */
msv_err client_unsealed(struct msv_client *c, const uint8_t id[16], const char *handle)
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
                            size_t n, const uint8_t *pt, size_t pt_len,
                            struct client_refusals *refused)
{
    const char **plain = calloc(n + 1, sizeof(*plain));
    size_t n_plain = 0, sealed = 0;
    int own = 0; /* this account's devices get theirs apart when it goes by another handle */
    msv_err err = plain ? msv_client_connect(c) : MSV_ERR_NOMEM;

    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        uint8_t token[16];

        if (strcmp(SEND_AS(c), c->handle) != 0 && client_is_own_handle(c, targets[i])) {
            own = 1;
            continue;
        }
        if (client_is_refused(refused, targets[i]))
            continue; /* refused before in this send (or this flush): looked up next time */
        if (strcmp(targets[i], c->handle) != 0 &&
            msv_sessions_token_for(c, targets[i], token) == MSV_OK) {
            err = deliver_group(c, id, &targets[i], 1, pt, pt_len, token, 1, refused);
            if (err == MSV_OK || client_is_refused(refused, targets[i])) {
                sealed += err == MSV_OK;
                err = MSV_OK;
                continue;
            }
            if (err == MSV_ERR_AUTH && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_AUTH)
                err = client_unsealed(c, id, targets[i]);
            else if (err == MSV_ERR_UNSUPPORTED)
                err = MSV_OK; /* a device that cannot open sealed envelopes */
            if (err != MSV_OK)
                break;
        }
        plain[n_plain++] = targets[i];
    }
    /* everyone else refused: this account's own devices get no copy of what went nowhere */
    if (err == MSV_OK && refused_among(refused, targets, n) && sealed == 0 &&
        !names_others(c, plain, n_plain))
        err = first_refusal(c, refused, targets, n);
    if (err == MSV_OK && n_plain > 0)
        err = deliver_group(c, id, plain, n_plain, pt, pt_len, NULL, sealed == 0, refused);
    if (err == MSV_OK && own)
        err =
            deliver_group(c, id, (const char *const[]){c->handle}, 1, pt, pt_len, NULL, 0, refused);
    free(plain);
    return err;
}

/*
 * What goes to a whole group on MLS (a message, typing, a timer) goes as one application
 * message (mlsgroups.c); anything else, and any group not on MLS, as per-device copies. A
 * group on MLS falls back to per-device copies only where it is told: a device behind the
 * group's epoch for good (mls_send), and a member this account blocked: one application
 * message would reach their devices too, so while one of members is blocked this account's
 * sends go as per-device copies to the others.
 */
static int goes_on_mls(struct msv_client *c, const struct msv_payload *p,
                       const char *const *members, size_t n)
{
    return p->has_group &&
           (p->kind == MSV_KIND_MESSAGE || p->kind == MSV_KIND_TYPING ||
            p->kind == MSV_KIND_TIMER) &&
           client_mls_is_on(c, p->group_id) && client_blocked_among(c, members, n) == NULL;
}

/*
 * A payload to a group on MLS (of members targets): one application message, and per-device
 * copies to the members with no device in the MLS tree (added, but without a KeyPackage then),
 * who would read nothing otherwise. A device behind the group's MLS epoch for good sends
 * per-device copies to every member instead (client_mls_send said so, and told it in the group
 * when it fell behind).
 */
static msv_err mls_send(struct msv_client *c, const uint8_t *gid, const uint8_t id[16],
                        const char *const *targets, size_t n_targets, const uint8_t *pt,
                        size_t pt_len, struct client_refusals *refused)
{
    char *outside = NULL, **to = NULL;
    size_t n = 0;
    int per_device = 0;
    msv_err err = client_mls_send(c, gid, pt, pt_len, &per_device);

    if (err == MSV_OK && per_device)
        return deliver_once(c, id, targets, n_targets, pt, pt_len, refused);
    if (err == MSV_OK)
        err = client_mls_outside(c, gid, &outside);
    if (err == MSV_OK && outside != NULL)
        err = client_members_of(outside, &to, &n);
    if (err == MSV_OK && n > 0)
        err = deliver_once(c, id, (const char *const *)to, n, pt, pt_len, refused);
    /* the MLS message went: the members outside its tree all refused fails nothing; their
     * refusals are owed and told by the caller (owe_to_refused) */
    if (err != MSV_OK && n > 0 && others_refused(c, refused, (const char *const *)to, n, 0))
        err = MSV_OK;
    free(to);
    free(outside);
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
 * Whether another program of this device took the connection (the server said so as it closed
 * it: client_deliveries_taken). Then the send goes again at once, on a connection for requests
 * alone, which takes nothing from the other.
 */
static int connection_taken(struct msv_client *c)
{
    const char *why = c->conn != NULL ? msv_conn_ended_why(c->conn) : NULL;

    return why != NULL && client_deliveries_taken(c, why);
}

/*
 * deliver_once, again after a lost connection or a request to slow down:
 * 0.5 s, 1 s, 2 s later (at once when another program of the device took the connection).
 * What still fails stays in the outbox for the next command that connects.
 */
static msv_err deliver_payload(struct msv_client *c, const uint8_t id[16],
                               const char *const *targets, size_t n, const uint8_t *pt,
                               size_t pt_len, const uint8_t *mls_group,
                               struct client_refusals *refused)
{
    msv_err err = mls_group ? mls_send(c, mls_group, id, targets, n, pt, pt_len, refused)
                            : deliver_once(c, id, targets, n, pt, pt_len, refused);

    for (int i = 0; try_later(c, err) && i < RETRIES; i++) {
        struct timespec pause = {0, 0};
        long ms = (long)(c->send_backoff_ms > 0 ? c->send_backoff_ms : BACKOFF_MS) << i;

        if (connection_taken(c))
            ms = 0;
        msv_conn_close(c->conn);
        c->conn = NULL;
        msv_conn_close(c->sealed_conn);
        c->sealed_conn = NULL;
        pause.tv_sec = ms / 1000;
        pause.tv_nsec = (ms % 1000) * 1000000L;
        nanosleep(&pause, NULL);
        err = mls_group ? mls_send(c, mls_group, id, targets, n, pt, pt_len, refused)
                        : deliver_once(c, id, targets, n, pt, pt_len, refused);
    }
    return err;
}

/* The conversation an outbox entry belongs to, for keeping its order: the group's id, or the
 * recipients; caller frees. */
static char *outbox_conversation(const struct msv_outbox_rec *o, const struct msv_payload *p)
{
    char hex[2 * MSV_ID_LEN + 1];

    if (p != NULL && p->has_group &&
        msv_hex_encode(p->group_id, MSV_ID_LEN, hex, sizeof(hex)) == MSV_OK)
        return strdup(hex);
    return strdup(o->recipients);
}

static int outbox_is_held(char *const *held, size_t n, const char *conversation)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(held[i], conversation) == 0)
            return 1;
    return 0;
}

#define OUTBOX_HELD "outbox-held:" /* + message id in hex: why its last try failed */

/*
 * Message id could not go now (err): its reason is kept (OUTBOX_HELD) and told
 * (on_outbox_held); it stays queued in the outbox for the next flush.
 */
static msv_err outbox_held(struct msv_client *c, const uint8_t id[16], msv_err err)
{
    char key[sizeof(OUTBOX_HELD) + 32], hex[33], reason[sizeof(c->why.message)];

    snprintf(reason, sizeof(reason), "%s",
             c->why.message[0] != '\0' ? c->why.message : msv_strerror(err));
    if (msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
        return MSV_ERR_INVALID;
    snprintf(key, sizeof(key), OUTBOX_HELD "%s", hex);
    if (c->on_outbox_held != NULL)
        c->on_outbox_held(c->ctx, id, reason);
    return msv_client_db_set(c->db, key, reason, strlen(reason));
}

msv_err msv_client_outbox_held(struct msv_client *c, const uint8_t id[16], char **reason)
{
    char key[sizeof(OUTBOX_HELD) + 32], hex[33];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_hex_encode(id, 16, hex, sizeof(hex));

    if (err != MSV_OK)
        return err;
    snprintf(key, sizeof(key), OUTBOX_HELD "%s", hex);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK) {
        *reason = calloc(1, len + 1);
        if (*reason == NULL)
            err = MSV_ERR_NOMEM;
        else if (len > 0)
            memcpy(*reason, v, len);
    }
    free(v);
    return err;
}

/* Settles message id (status as msv_client_db_outbox_settle) and forgets why it was held. */
static msv_err outbox_settle(struct msv_client *c, const uint8_t id[16], const char *status)
{
    char key[sizeof(OUTBOX_HELD) + 32], hex[33];
    msv_err err = msv_client_db_outbox_settle(c->db, id, status);

    if (err == MSV_OK && msv_hex_encode(id, 16, hex, sizeof(hex)) == MSV_OK) {
        snprintf(key, sizeof(key), OUTBOX_HELD "%s", hex);
        err = msv_client_db_unset(c->db, key);
        if (err == MSV_ERR_NOT_FOUND)
            err = MSV_OK;
    }
    return err;
}

/* The handles one outbox entry goes to (*to, caller frees, NULL for p's participants): its
 * recipients when it is owed to them alone, or when p names no participants (a big group's
 * message and a group change: the outbox names them). */
static msv_err outbox_targets(const struct msv_outbox_rec *o, const struct msv_payload *p,
                              char ***to, size_t *n_to)
{
    if (o->owed || p->participant_count == 0)
        return client_members_of(o->recipients, to, n_to);
    *n_to = p->participant_count;
    return MSV_OK;
}

/* One outbox entry, to the participants its payload names (or those it is still owed to), as
 * what it named this account by. */
static msv_err outbox_send(struct msv_client *c, const struct msv_outbox_rec *o,
                           const struct msv_payload *p, struct client_refusals *refused)
{
    char **to = NULL;
    size_t n_to = 0;
    msv_err err = outbox_targets(o, p, &to, &n_to);
    const char *const *targets = (const char *const *)(to ? to : p->participants);

    c->send_as[0] = '\0';
    for (size_t k = 0; !p->has_group && k < p->participant_count; k++)
        if (strcmp(p->participants[k], c->handle) != 0 &&
            client_is_own_handle(c, p->participants[k]))
            snprintf(c->send_as, sizeof(c->send_as), "%s", p->participants[k]);
    memset(&c->why, 0, sizeof(c->why));
    /* owed to a few: as per-device copies to them alone (an MLS message would reach all) */
    if (err == MSV_OK && !o->owed && goes_on_mls(c, p, targets, n_to))
        err = mls_send(c, p->group_id, o->message_id, targets, n_to, o->payload, o->payload_len,
                       refused);
    else if (err == MSV_OK)
        err = deliver_once(c, o->message_id, targets, n_to, o->payload, o->payload_len, refused);
    free(to);
    return err;
}

msv_err client_notice_keep(struct msv_client *c, const char *conversation, const char *text)
{
    struct msv_message_rec rec = {.kind = MSV_KIND_MESSAGE, .status = "notice", .outgoing = 1};

    msv_random_bytes(rec.message_id, 16);
    rec.conversation = (char *)conversation;
    rec.sender = c->handle;
    rec.sender_device = c->device_id;
    rec.text = (char *)text;
    rec.sent_at_ms = rec.stored_at_ms = msv_wall_ms();
    return msv_client_db_message_put(c->db, &rec);
}

/* A notice kept in conversation's history and told through on_not_sent (about handle). */
static msv_err send_notice(struct msv_client *c, const char *conversation, const char *handle,
                           const char *text)
{
    if (c->on_not_sent != NULL)
        c->on_not_sent(c->ctx, conversation, handle, text);
    return client_notice_keep(c, conversation, text);
}

#define GONE_SAID "gone-said:" /* and a hash of conversation and handle: told there once */

/* Whether conversation was told that handle has no account; with mark, records that it was. */
static int gone_said(struct msv_client *c, const char *conversation, const char *handle, int mark)
{
    crypto_generichash_state st;
    uint8_t h[16], *v = NULL;
    char key[sizeof(GONE_SAID) + 33];
    size_t len = 0;
    int said;

    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, (const uint8_t *)conversation, strlen(conversation) + 1);
    crypto_generichash_update(&st, (const uint8_t *)handle, strlen(handle));
    crypto_generichash_final(&st, h, sizeof(h));
    memcpy(key, GONE_SAID, sizeof(GONE_SAID) - 1);
    if (msv_hex_encode(h, sizeof(h), key + sizeof(GONE_SAID) - 1, 33) != MSV_OK)
        return 0;
    if (mark)
        return msv_client_db_set(c->db, key, "", 0) == MSV_OK;
    said = msv_client_db_get(c->db, key, &v, &len) == MSV_OK;
    free(v);
    return said;
}

/* Which refused handles owe_to_refused tells of. */
enum tell { TELL_NONE, TELL_ALL, TELL_GONE /* those no account has */ };

/*
 * Message id (of conversation; none for a control message, which is not tried again) went to
 * targets but those refused: a notice per handle tell names says why (docs/transparency.md, "A
 * send to handles that do not check out"), kept before the message is owed, so that a crash
 * between loses none; then it stays in the outbox owed to them alone, but for those no account
 * has (gone: nobody to owe it to) or a new account it was not written to, its history status
 * status (NULL: unchanged; "failed": nobody got it), and each flush of the outbox tries them
 * again; owed to nobody, the outbox lets it go.
 */
static msv_err owe_to_refused(struct msv_client *c, const uint8_t id[16], const char *conversation,
                              const char *status, enum tell tell,
                              const struct client_refusals *refused, const char *const *targets,
                              size_t n)
{
    char **owed = calloc(n + 1, sizeof(*owed)), *recipients = NULL;
    size_t n_owed = 0;
    int group = conversation != NULL && strncmp(conversation, "group:", 6) == 0;
    int others_have = status == NULL || strcmp(status, "failed") != 0; /* failed: nobody has it */
    msv_err err = owed != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t k = 0; err == MSV_OK && k < refused->n; k++) {
        char text[sizeof(c->why.message) + 400];
        const char *h = refused->handle[k];
        size_t j = 0;

        while (j < n && strcmp(targets[j], h) != 0)
            j++;
        if (j == n)
            continue; /* refused for another message of this flush */
        if (!refused->gone[k])
            owed[n_owed++] = (char *)targets[j];
        if (tell == TELL_NONE || conversation == NULL || (tell == TELL_GONE && !refused->gone[k]))
            continue;
        /* a group's member whose account is gone: told once in the group (a handle the user
         * named is told at each send; a new account at each message written before it) */
        if (refused->gone[k] == 1 && group && gone_said(c, conversation, h, 0))
            continue;
        if (refused->gone[k]) /* nobody to owe it to */
            snprintf(text, sizeof(text), "not sent to %.256s: %s%s", h, refused->why[k],
                     others_have ? " (the others have it)" : "");
        else if (refused->err[k] == MSV_ERR_TOO_BIG) /* full queues (refuse_left_out) */
            snprintf(text, sizeof(text),
                     "not sent to %.256s: every one of its devices' queues on the server is full "
                     "(the others have it; it goes there again each time this device connects, "
                     "until the server takes it, for %d days)",
                     h, MSV_OUTBOX_OWED_DAYS);
        else
            snprintf(text, sizeof(text),
                     "not sent to %.256s: %s (the others have it; it goes to %.256s once what "
                     "the directory shows of them checks out, tried again each time this device "
                     "connects)",
                     h, refused->why[k], h);
        err = send_notice(c, conversation, h, text);
        if (err == MSV_OK && refused->gone[k] == 1 && group)
            (void)gone_said(c, conversation, h, 1); /* unmarked: said again, nothing worse */
    }
    if (err == MSV_OK && (conversation == NULL || n_owed == 0))
        err = outbox_settle(c, id, status);
    else if (err == MSV_OK && (err = client_join_members(owed, n_owed, &recipients)) == MSV_OK)
        err = msv_client_db_outbox_owed(c->db, id, recipients, status);
    free(recipients);
    free(owed);
    return err;
}

/*
 * Sends what the outbox still holds (messages a lost connection left
 * queued), oldest first; each goes to the participants its payload names,
 * except what goes to a blocked handle outside a group, which waits. One that
 * cannot go now (the server refused it for the moment, or could not store it)
 * is held, with its reason kept and told, and so is the rest of its
 * conversation, whose order stays; the other conversations go on. Only a
 * server out of reach (no answer at all) ends the flush: nothing else would go.
 */
/* The conversation of message id in history (caller frees), or NULL (a control message). */
static char *conversation_of(struct msv_client *c, const uint8_t id[16])
{
    struct msv_message_rec *m = NULL;
    char *conversation = NULL;

    if (msv_client_db_message_get(c->db, id, &m) == MSV_OK)
        conversation = strdup(m->conversation);
    msv_messages_free(m, m != NULL ? 1 : 0);
    return conversation;
}

/*
 * Outbox entry o went to all it went to now: settled (its status "sent", unchanged for one owed
 * to a few, whose notices say it went now), or owed to those refused (owe_to_refused).
 * *refused_all set when o's targets were all refused (o's send failed then).
 */
static msv_err outbox_sent(struct msv_client *c, const struct msv_outbox_rec *o,
                           const struct msv_payload *p, const struct client_refusals *refused)
{
    char **to = NULL, *conversation = conversation_of(c, o->message_id);
    size_t n_to = 0;
    msv_err err = outbox_targets(o, p, &to, &n_to);
    const char *const *targets = (const char *const *)(to ? to : p->participants);

    if (err == MSV_OK && refused_among(refused, targets, n_to))
        err = owe_to_refused(c, o->message_id, conversation, o->owed ? NULL : "sent",
                             o->owed ? TELL_GONE : TELL_ALL, refused, targets, n_to);
    else if (err == MSV_OK)
        err = outbox_settle(c, o->message_id, o->owed ? NULL : "sent");
    for (size_t i = 0; err == MSV_OK && o->owed && conversation != NULL && i < n_to; i++) {
        char text[600];

        if (client_is_refused(refused, targets[i]))
            continue;
        snprintf(text, sizeof(text),
                 "sent to %.256s now: what kept it from them (what the directory shows of them, or "
                 "their devices' full queues on the server) is over",
                 targets[i]);
        err = send_notice(c, conversation, targets[i], text);
    }
    free(conversation);
    free(to);
    return err;
}

/* Whether o's send failed (err, c->why) because its targets but this account were all refused:
 * it failed with the words of one of their refusals, one of a handle no account has if gone,
 * else one of a handle it is owed to. */
static int outbox_refused(struct msv_client *c, const struct msv_outbox_rec *o,
                          const struct msv_payload *p, const struct client_refusals *refused,
                          msv_err err, int gone)
{
    char **to = NULL;
    size_t n_to = 0;
    int all = 0;

    if (outbox_targets(o, p, &to, &n_to) != MSV_OK)
        return 0;
    for (size_t i = 0; i < n_to && !all; i++) {
        size_t k = client_refusal_find(refused, to != NULL ? to[i] : p->participants[i]);

        all = k < refused->n && refused->err[k] == err && !refused->gone[k] == !gone &&
              strcmp(refused->why[k], c->why.message) == 0;
    }
    free(to);
    return all;
}

/*
 * o was refused by all it went to. Owed (status NULL, tell TELL_GONE): owed on, as its notice
 * said, to those that still have an account; those that no account has now (deleted, or a new
 * account since it was written) are told of, once, and owed it no more (the outbox lets it go
 * once it is owed to nobody; its status stays). Not owed, and all of them gone (status
 * "failed", tell TELL_ALL): each is told of, and it failed.
 */
static msv_err outbox_gone(struct msv_client *c, const struct msv_outbox_rec *o,
                           const struct msv_payload *p, const struct client_refusals *refused,
                           const char *status, enum tell tell)
{
    char **to = NULL, *conversation = NULL;
    size_t n_to = 0;
    int gone = 0;
    msv_err err = outbox_targets(o, p, &to, &n_to);
    const char *const *targets = (const char *const *)(to ? to : p->participants);

    for (size_t i = 0; err == MSV_OK && i < n_to && !gone; i++) {
        size_t k = client_refusal_find(refused, targets[i]);

        gone = k < refused->n && refused->gone[k];
    }
    if (err == MSV_OK && gone) {
        conversation = conversation_of(c, o->message_id);
        err = owe_to_refused(c, o->message_id, conversation, status, tell, refused, targets, n_to);
    }
    free(conversation);
    free(to);
    return err;
}

/*
 * An entry owed to handles whose directory entries have not checked out since it was queued
 * MSV_OUTBOX_OWED_DAYS ago is given up: each of them is
 * named in the conversation ("... never got it"), and the outbox lets it go. *given: it was.
 */
static msv_err owed_give_up(struct msv_client *c, const struct msv_outbox_rec *o, int64_t now,
                            int *given)
{
    char **to = NULL, *conversation = NULL, text[600];
    size_t n = 0;
    msv_err err = MSV_OK;

    *given = o->owed && now - o->created_ms > MSV_OUTBOX_OWED_DAYS * 86400000LL;
    if (!*given)
        return MSV_OK;
    conversation = conversation_of(c, o->message_id);
    err = client_members_of(o->recipients, &to, &n);
    for (size_t i = 0; err == MSV_OK && conversation != NULL && i < n; i++) {
        snprintf(text, sizeof(text),
                 "%.256s never got a message sent %d days ago: what the directory shows of them "
                 "did not check out, or their devices' queues on the server stayed full, all that "
                 "time, and it is no longer tried; send it again once that is over",
                 to[i], MSV_OUTBOX_OWED_DAYS);
        err = send_notice(c, conversation, to[i], text);
    }
    if (err == MSV_OK)
        err = outbox_settle(c, o->message_id, NULL);
    if (err == MSV_OK)
        (void)client_counter_bump(c, OWED_GIVEN_UP); /* a count: the notices said it */
    free(to);
    free(conversation);
    return err;
}

int client_chain_holds(const struct client_in_flight *chain, const uint8_t *id, size_t len)
{
    for (const struct client_in_flight *f = chain; f != NULL; f = f->up)
        if (memcmp(f->id, id, len) == 0)
            return 1;
    return 0;
}

int client_outbox_holds(struct msv_client *c, const uint8_t *id, const uint8_t *group_id)
{
    struct msv_outbox_rec *o = NULL;
    size_t n = 0;
    int holds = 0;

    if (msv_client_db_outbox(c->db, &o, &n) != MSV_OK)
        return 1; /* unknown: as if it did */
    for (size_t i = 0; !holds && i < n; i++) {
        struct msv_payload *p = NULL;

        if (id != NULL)
            holds = memcmp(o[i].message_id, id, 16) == 0;
        else if (msv_payload_parse(o[i].payload, o[i].payload_len, &p) == MSV_OK)
            holds = p->has_group && memcmp(p->group_id, group_id, 16) == 0;
        msv_payload_free(p);
    }
    msv_outbox_free(o, n);
    return holds;
}

msv_err client_flush_outbox(struct msv_client *c)
{
    struct msv_outbox_rec *o = NULL;
    size_t n = 0, n_held = 0;
    char send_as[sizeof(c->send_as)]; /* of a send that connected, and so flushes first */
    int64_t written = c->written_ms;
    char **held = NULL;
    /* handles refused in this flush are not looked up again for its later entries */
    struct client_refusals refused = {0};
    msv_err err = msv_client_db_outbox(c->db, &o, &n);

    c->flushing++; /* a connection made again within: no flush within this one */
    memcpy(send_as, c->send_as, sizeof(send_as));
    if (err == MSV_OK && n > 0 && (held = calloc(n, sizeof(*held))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct msv_payload *p = NULL;
        char *conversation = NULL;
        int given = 0;

        err = owed_give_up(c, &o[i], msv_wall_ms(), &given);
        if (err != MSV_OK || given)
            continue;
        if (msv_payload_parse(o[i].payload, o[i].payload_len, &p) != MSV_OK) {
            err = outbox_settle(c, o[i].message_id, "failed"); /* never goes */
            continue;
        }
        /* written then: before it was queued, which came after a connection */
        c->written_ms = written_at(c, p,
                                   p->sent_at_ms > 0 && p->sent_at_ms < (uint64_t)o[i].created_ms
                                       ? (int64_t)p->sent_at_ms
                                       : o[i].created_ms);
        conversation = outbox_conversation(&o[i], p);
        if (conversation == NULL)
            err = MSV_ERR_NOMEM;
        else if (client_chain_holds(c->in_flight, o[i].message_id, 16)) {
            /* a send under way sends it itself; the later ones of its conversation wait */
            held[n_held++] = conversation;
            conversation = NULL;
        } else if (outbox_is_held(held, n_held, conversation))
            err = MSV_OK; /* an older message of its conversation could not go: it waits */
        else if (!p->has_group && client_blocked_among(c, (const char *const *)p->participants,
                                                       p->participant_count))
            err = MSV_OK; /* queued before the block: it waits until the unblock */
        else if ((err = outbox_send(c, &o[i], p, &refused)) == MSV_OK)
            err = outbox_sent(c, &o[i], p, &refused);
        else if (err == MSV_ERR_AUTH && c->why.code == MSV_REFUSAL_KEY_CHANGE)
            err = MSV_OK; /* waits until the user accepts the contact's new devices */
        else if (err == MSV_ERR_IO && c->why.message[0] == '\0' && c->why.code == 0)
            ; /* no answer: the server is out of reach, the flush ends */
        else if (o[i].owed && (outbox_refused(c, &o[i], p, &refused, err, 0) ||
                               outbox_refused(c, &o[i], p, &refused, err, 1)))
            err = outbox_gone(c, &o[i], p, &refused, NULL, TELL_GONE); /* still refused */
        else if (try_later(c, err) || err == MSV_ERR_NOMEM || err == MSV_ERR_AGAIN ||
                 /* no post-quantum key that checks: it waits, told, until one is served */
                 (err == MSV_ERR_AUTH && c->why.code == MSV_REFUSAL_PQ) ||
                 /* a recipient's full queues: tried once more (this flush), then failed */
                 (err != MSV_ERR_TOO_BIG && outbox_refused(c, &o[i], p, &refused, err, 0))) {
            err = outbox_held(c, o[i].message_id, err);
            held[n_held++] = conversation;
            conversation = NULL;
        } else if (outbox_refused(c, &o[i], p, &refused, err, 1))
            /* to handles no account has alone (or new accounts): it never goes, told */
            err = outbox_gone(c, &o[i], p, &refused, "failed", TELL_ALL);
        else
            /* it will never go (a recipient left, say): history says so, the outbox lets go */
            err = outbox_settle(c, o[i].message_id, "failed");
        free(conversation);
        msv_payload_free(p);
        client_refusals_forget_renewed(&refused); /* for that message alone */
        client_refusals_forget_full(&refused);
    }
    for (size_t i = 0; i < n_held; i++)
        free(held[i]);
    free(held);
    client_refusals_clear(&refused);
    memset(&c->why, 0, sizeof(c->why)); /* said through on_outbox_held: not the caller's */
    memcpy(c->send_as, send_as, sizeof(send_as));
    c->written_ms = written;
    msv_outbox_free(o, n);
    c->flushing--;
    return err;
}

msv_err client_upload_blob(struct msv_client *c, const uint8_t key[MSV_ATTACHMENT_KEY_LEN],
                           const uint8_t *data, size_t len, void (*progress)(uint64_t, uint64_t),
                           struct msv_attachment_digest *d, char *uri, size_t uri_len)
{
    uint8_t *ct = malloc(len ? len : 1), blob[32];
    char hex[65];
    msv_err err = ct ? MSV_OK : MSV_ERR_NOMEM;

    if (len == 0)
        err = MSV_ERR_INVALID;
    else if (len > MSV_ATTACHMENT_MAX)
        err = MSV_ERR_TOO_BIG; /* more than any recipient would download */
    if (err == MSV_OK)
        err = msv_attachment_encrypt(key, data, len, ct, d);
    if (err == MSV_OK)
        err = msv_client_connect(c);
    if (err == MSV_OK)
        err = msv_request_blob_upload(c->conn, ct, len, TIMEOUT_MS, progress, blob, &c->why);
    free(ct);
    if (err != MSV_OK || msv_hex_encode(blob, 32, hex, sizeof(hex)) != MSV_OK)
        return err != MSV_OK ? err : MSV_ERR_INVALID;
    snprintf(uri, uri_len, "blob:%s", hex);
    return MSV_OK;
}

/* Encrypts and uploads one file; fills ref (uri points into uri_buf). */
static msv_err upload(struct msv_client *c, const struct msv_file *f,
                      void (*progress)(uint64_t, uint64_t), struct msv_attachment_ref *ref,
                      char *uri_buf, size_t uri_len)
{
    struct msv_attachment_digest d;
    msv_err err;

    msv_attachment_key_generate(ref->key);
    err = client_upload_blob(c, ref->key, f->data, f->len, progress, &d, uri_buf, uri_len);
    if (err != MSV_OK)
        return err;
    ref->uri = uri_buf;
    memcpy(ref->sha256, d.sha256, 32);
    memcpy(ref->sha1, d.sha1, 20);
    ref->size = f->len;
    ref->name = (char *)f->name;
    ref->mime = (char *)f->mime;
    return MSV_OK;
}

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
 * accepts the message, then sent. c->outbox_with, if set, is written in the
 * transaction that queues it, and cleared.
 */
msv_err client_send_payload(struct msv_client *c, const char *const *targets_in, size_t n_in,
                            struct msv_payload *p, const char *text, const char *conversation,
                            const struct msv_file *files, size_t n_files,
                            void (*progress)(uint64_t, uint64_t), uint8_t message_id[16])
{
    const char **targets = NULL, **shown = NULL;
    struct msv_attachment_ref refs[MSV_ATTACHMENTS_MAX];
    char uris[MSV_ATTACHMENTS_MAX][80], preview[LONG_TEXT_PREVIEW + 4], profile_uri[81];
    struct msv_message_rec rec = {.outgoing = 1, .status = "queued"};
    struct client_refusals refused = {0};
    uint8_t *pt = NULL;
    size_t pt_len = 0, t = 0, blocked = 0;
    char *recipients = NULL, *stored = NULL;
    int64_t written = c->written_ms; /* of a send this one is made in (a receipt in a receive) */
    int64_t now;
    const struct client_outbox_with *with = c->outbox_with;
    int began = 0, queued = 0;
    msv_err err = MSV_OK;

    c->outbox_with = NULL;
    /* a group change goes to the members before and after it */
    if (n_in == 0 || n_in > 2 * MEMBERS_MAX || n_files >= MSV_ATTACHMENTS_MAX)
        return MSV_ERR_INVALID;
    if ((targets = calloc(n_in + 1, sizeof(*targets))) == NULL)
        return MSV_ERR_NOMEM;
    /* to one other person: as the handle used with them (docs/missive.md, "Handles") */
    c->send_as[0] = '\0';
    if (n_in == 1 && !p->has_group && !client_is_own_handle(c, targets_in[0]))
        (void)client_send_as(c, targets_in[0]);
    memset(refs, 0, sizeof(refs));
    /* the targets and this account, each once: its other devices get a copy; nothing at all
     * goes to a blocked handle (a group's other members still get theirs) */
    for (size_t i = 0; i <= n_in; i++) {
        const char *h = i < n_in ? targets_in[i] : c->handle;
        size_t k;

        if (i < n_in && strcmp(h, c->handle) != 0 && msv_client_is_blocked(c, h)) {
            blocked++;
            continue;
        }
        for (k = 0; k < t && strcmp(targets[k], h) != 0; k++)
            ;
        if (k == t)
            targets[t++] = h;
    }
    if (blocked > 0 && blocked == n_in) {
        err = client_refuse_blocked(c, targets_in, n_in);
        goto out;
    }
    /* written now, before its files' upload, whose connection flushes the outbox (which can
     * tell of a new account): dated then, in the payload too (docs/transparency.md) */
    now = msv_wall_ms();
    c->written_ms = written_at(c, p, now);
    if (p->kind == MSV_KIND_MESSAGE) {
        /* the conversation's disappearing-message timer goes with it */
        p->timer_s = conversation != NULL ? client_timer_for_send(c, conversation) : 0;
        p->attachments = refs;
        err = attach(c, text, files, n_files, progress, p, uris, preview);
    }
    if (err != MSV_OK)
        goto out;
    msv_random_bytes(p->message_id, MSV_ID_LEN);
    memcpy(message_id, p->message_id, MSV_ID_LEN);
    p->sent_at_ms = (uint64_t)now;
    {
        struct msv_kt_head head;

        /* the receivers compare it with the log they see (gossip of tree heads) */
        p->has_log_head = msv_kt_known_head(c->db, &head) == MSV_OK;
        if (p->has_log_head)
            msv_kt_head_encode(&head, p->log_head);
        /* and the key directory's root this device saw for that size, compared alike */
        p->has_log_epoch =
            p->has_log_head && msv_kt_known_epoch(c->db, head.size, p->log_epoch) == MSV_OK;
    }
    /* a group change or copy, or anything to a big group (a receipt too), names nobody: the
     * members hold the group */
    if (p->participants == NULL && t <= GROUP_LIST_MAX &&
        !(p->has_group && (p->kind == MSV_KIND_GROUP_CHANGE || p->kind == MSV_KIND_GROUP_COPY))) {
        /* naming this account as the others see it, never by a handle they were not given */
        shown = calloc(t + 1, sizeof(*shown));
        if (shown == NULL) {
            err = MSV_ERR_NOMEM;
            goto out;
        }
        for (size_t k = 0; k < t; k++)
            shown[k] = strcmp(targets[k], c->handle) == 0 ? SEND_AS(c) : targets[k];
        p->participants = (char **)shown;
        p->participant_count = t;
    }
    /* the receivers' key to send to this device sealed (its delivery token's key; only
     * devices that speak modern register one) */
    p->has_profile_key = (msv_identity_suites(c->id) & MSV_SUITE_BIT(MSV_SUITE_MODERN)) &&
                         msv_sessions_profile_key(c, p->profile_key) == MSV_OK;
    /* where the profile lies, for those who hold the key to it */
    p->has_profile = p->has_profile_key &&
                     (p->kind == MSV_KIND_MESSAGE || p->kind == MSV_KIND_PROFILE_KEY) &&
                     client_profile_ref(c, &p->profile, profile_uri) == MSV_OK;
    /* a group message this device cannot send on MLS asks the admins to add it again */
    p->mls_outside =
        p->has_group && p->kind == MSV_KIND_MESSAGE && client_mls_unusable(c, p->group_id);
    err = msv_payload_encode(p, &pt, &pt_len);
    if (err == MSV_OK)
        err = client_join_members((char *const *)targets, t, &recipients);
    if (err != MSV_OK)
        goto out;
    /* connect (and so flush older queued messages) before this one joins the outbox; a
     * server that cannot be reached now leaves it queued below */
    if (msv_client_connect(c) != MSV_OK) {
        msv_conn_close(c->conn);
        c->conn = NULL;
    }
    /* this device keeps its own copy of the files, as a receiver does (deleted with the
     * message: its timer, an unsend) */
    if (p->kind == MSV_KIND_MESSAGE && conversation != NULL && n_files > 0 &&
        (err = client_keep_sent_files(c, p->message_id, text, files, n_files, &stored)) != MSV_OK)
        goto out;
    memcpy(rec.message_id, p->message_id, 16);
    rec.conversation = (char *)conversation;
    rec.sender = c->handle;
    rec.sender_device = c->device_id;
    rec.kind = (int)p->kind;
    rec.text = (char *)(stored ? stored : text ? text : "");
    rec.sent_at_ms = rec.stored_at_ms = (int64_t)p->sent_at_ms;
    rec.has_reply_to = p->has_reply_to;
    memcpy(rec.reply_to, p->reply_to, 16);
    if (p->kind == MSV_KIND_MESSAGE && p->timer_s != 0) { /* this account's own: from now */
        rec.timer_s = p->timer_s;
        rec.expires_at_ms = rec.sent_at_ms + (int64_t)p->timer_s * 1000;
    }
    /* shown as queued until the relay accepts it, and kept in the outbox until then; control
     * messages (receipts, typing, edits) are not history. What the caller writes with it
     * (outbox_with) is kept only with it, and it only with that */
    if (with != NULL && (err = msv_client_db_begin(c->db)) == MSV_OK) {
        began = 1;
        err = with->write(c, with->arg);
    }
    if (err == MSV_OK)
        queued = (err = msv_client_db_outbox_put(c->db, conversation != NULL ? &rec : NULL,
                                                 p->message_id, recipients, pt, pt_len,
                                                 msv_wall_ms())) == MSV_OK;
    /* who may send receipts for it */
    if (err == MSV_OK && conversation != NULL)
        err = msv_client_db_recipients_put(c->db, p->message_id, targets, t);
    if (began && (err = msv_client_db_end(c->db, err)) != MSV_OK)
        queued = 0;
    if (!queued && stored != NULL)
        (void)client_delete_files(c, p->message_id); /* no message holds them */
    if (err == MSV_OK && with != NULL && with->queue_only) {
        /* older messages of its group wait in the outbox: it goes after them, with them */
        c->outbox_deferred = 1;
    } else if (err == MSV_OK) {
        /* a connection made again for it (a retry), or for a send within it (a receipt of a
         * receive it made), flushes the outbox without it */
        struct client_in_flight f = {p->message_id, c->in_flight};

        c->in_flight = &f;
        err = deliver_payload(c, p->message_id, targets, t, pt, pt_len,
                              goes_on_mls(c, p, targets_in, n_in) ? p->group_id : NULL, &refused);
        c->in_flight = f.up;
    }
    /* to handles no account has alone: it never goes, failed now rather than queued */
    if (err == MSV_ERR_NOT_FOUND && others_refused(c, &refused, targets, t, 1) &&
        outbox_settle(c, p->message_id, "failed") == MSV_OK)
        c->why.code = MSV_REFUSAL_GONE;
    /* the others have it; those refused are owed it, and told of */
    if (err == MSV_OK && refused_among(&refused, targets, t))
        err =
            owe_to_refused(c, p->message_id, conversation, "sent", TELL_ALL, &refused, targets, t);
    else if (err == MSV_OK)
        err = msv_client_db_outbox_settle(c->db, p->message_id, "sent");
out:
    /* last: a send within this one (a receipt of a receive its retry made) set it meanwhile */
    c->last_queued = queued;
    client_refusals_clear(&refused);
    if (shown != NULL && p->participants == (char **)shown) {
        p->participants = NULL;
        p->participant_count = 0;
    }
    free(shown);
    c->send_as[0] = '\0';
    c->written_ms = written;
    msv_secret_free(pt, pt_len);
    sodium_memzero(refs, sizeof(refs)); /* the attachment keys */
    free(stored);
    free(recipients);
    free(targets);
    return err;
}

msv_err msv_client_reply(struct msv_client *c, const uint8_t reply_to[16], const char *conversation,
                         const char *text, const struct msv_file *files, size_t n_files,
                         void (*progress)(uint64_t done, uint64_t total), uint8_t message_id[16])
{
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text, .has_reply_to = true};
    struct msv_message_rec *m = NULL;
    const char *to[1];
    msv_err err = msv_client_db_message_get(c->db, reply_to, &m);

    /* an answer goes where the message it answers is, nowhere else */
    if (err == MSV_OK && (m->kind != MSV_KIND_MESSAGE ||
                          (conversation != NULL && strcmp(conversation, m->conversation) != 0)))
        err = MSV_ERR_INVALID;
    memcpy(p.reply_to, reply_to, 16);
    to[0] = m != NULL ? m->conversation : NULL;
    if (err == MSV_OK && strncmp(m->conversation, "group:", 6) == 0)
        err = client_group_send(c, m->conversation, &p, files, n_files, progress, message_id);
    else if (err == MSV_OK && (err = client_requests_written(c, to, 1)) == MSV_OK)
        err = client_send_payload(c, to, 1, &p, text, to[0], files, n_files, progress, message_id);
    msv_messages_free(m, m ? 1 : 0);
    return err;
}

msv_err msv_client_send(struct msv_client *c, const char *const *handles, size_t n,
                        const char *text, const struct msv_file *files, size_t n_files,
                        void (*progress)(uint64_t done, uint64_t total), uint8_t message_id[16])
{
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text};
    msv_err err;

    if (n == 0 || n >= MSV_PARTICIPANTS_MAX) /* more go in a group */
        return MSV_ERR_INVALID;
    if (client_refuse_blocked(c, handles, n) != MSV_OK)
        return MSV_ERR_INVALID;
    /* writing to a handle accepts its message request */
    if ((err = client_requests_written(c, handles, n)) != MSV_OK)
        return err;
    return client_send_payload(c, handles, n, &p, text, handles[0], files, n_files, progress,
                               message_id);
}
