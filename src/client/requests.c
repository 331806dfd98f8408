#include "client/requests.h"
#include "missive/kt.h"
#include "missive/payload.h"
#include "missive/ratchet.h"
#include "missive/util.h"

#include "crypto/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

msv_err msv_request_refusal(const msv_frame *f, struct msv_refusal *why)
{
    /* an answer of the wrong kind, and no refusal: the server broke the protocol, which reads
     * as a lost connection (what was asked is tried again, not failed) */
    if (f->body_case != MSV__WIRE__FRAME__BODY_ERROR) {
        if (why != NULL)
            memset(why, 0, sizeof(*why));
        return MSV_ERR_IO;
    }
    if (why != NULL) {
        why->code = (int)f->error->code;
        snprintf(why->message, sizeof(why->message), "%.*s", (int)f->error->message.len,
                 (const char *)f->error->message.data);
    }
    switch (f->error->code) {
    case MSV__WIRE__ERROR_CODE__ERROR_AUTH:
    case MSV__WIRE__ERROR_CODE__ERROR_UNAUTHENTICATED:
        return MSV_ERR_AUTH;
    case MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG:
        return MSV_ERR_TOO_BIG;
    case MSV__WIRE__ERROR_CODE__ERROR_EXISTS:
        return MSV_ERR_EXISTS;
    case MSV__WIRE__ERROR_CODE__ERROR_NOT_FOUND:
        return MSV_ERR_NOT_FOUND;
    case MSV__WIRE__ERROR_CODE__ERROR_IO:
        return MSV_ERR_IO;
    case MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES:
        return MSV_ERR_AGAIN;
    default:
        return MSV_ERR_INVALID;
    }
}

msv_err msv_request_answer_refusal(struct msv_conn *c, const msv_frame *f, struct msv_refusal *why)
{
    /* an answer of another kind than asked for, and no refusal: the server broke the protocol;
     * the connection is given up (what was asked is tried again on a new one, not failed) */
    if (f->body_case != MSV__WIRE__FRAME__BODY_ERROR)
        msv_conn_break(c);
    return msv_request_refusal(f, why);
}

/* Runs req; MSV_OK if the answer has body case want, else the refusal. */
/* As run, but *resp is the answer whatever it was, when there was one (caller frees). */
static msv_err run_answered(struct msv_conn *c, msv_frame *req, int want, int timeout_ms,
                            struct msv_refusal *why, msv_frame **resp)
{
    msv_err err = msv_conn_request(c, req, timeout_ms, resp);

    if (err != MSV_OK && why != NULL) /* no answer: no refusal to tell of */
        memset(why, 0, sizeof(*why));
    if (err != MSV_OK) /* a silent server is an I/O failure: AGAIN means a stale list */
        return err == MSV_ERR_AGAIN ? MSV_ERR_IO : err;
    return (int)(*resp)->body_case == want ? MSV_OK : msv_request_answer_refusal(c, *resp, why);
}

static msv_err run(struct msv_conn *c, msv_frame *req, int want, int timeout_ms,
                   struct msv_refusal *why, msv_frame **answer)
{
    msv_frame *resp = NULL;
    msv_err err = run_answered(c, req, want, timeout_ms, why, &resp);

    if (answer != NULL && (err == MSV_OK || err == MSV_ERR_AGAIN))
        *answer = resp;
    else
        msv_frame_free(resp);
    return err;
}

static ProtobufCBinaryData text(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};

    return b;
}

msv_err msv_request_register_start(struct msv_conn *c, const char *handle, const char *invite,
                                   int timeout_ms, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RegisterStart start = MSV__WIRE__REGISTER_START__INIT;

    start.handle = text(handle);
    start.invite = text(invite ? invite : "");
    req.body_case = MSV__WIRE__FRAME__BODY_REGISTER_START;
    req.register_start = &start;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

/* A PrekeyUpload's wire form; its arrays are allocated (upload_wire_clear frees them). */
struct upload_wire {
    Msv__Wire__PrekeyUpload up;
    Msv__Wire__SignedPrekey sp;
    Msv__Wire__KemPrekey lr;
    Msv__Wire__OneTimePrekey *ot, **ot_ptrs;
    Msv__Wire__KemPrekey *kem, **kem_ptrs;
};

static void kem_wire(Msv__Wire__KemPrekey *w, const struct msv_kem_prekey *k, const uint8_t *sig)
{
    msv__wire__kem_prekey__init(w);
    w->id = k->id;
    w->key = (ProtobufCBinaryData){sizeof(k->ek), (uint8_t *)k->ek};
    w->signature = (ProtobufCBinaryData){64, (uint8_t *)sig};
    w->last_resort = k->last_resort != 0;
}

static void upload_wire_clear(struct upload_wire *w)
{
    free(w->ot);
    free(w->ot_ptrs);
    free(w->kem);
    free(w->kem_ptrs);
}

static msv_err upload_wire_fill(struct upload_wire *w, const struct msv_prekey_set *set)
{
    memset(w, 0, sizeof(*w));
    msv__wire__prekey_upload__init(&w->up);
    w->ot = calloc(set->n_one_time + 1, sizeof(*w->ot));
    w->ot_ptrs = calloc(set->n_one_time + 1, sizeof(*w->ot_ptrs));
    w->kem = calloc(set->n_kem_one_time + 1, sizeof(*w->kem));
    w->kem_ptrs = calloc(set->n_kem_one_time + 1, sizeof(*w->kem_ptrs));
    if (w->ot == NULL || w->ot_ptrs == NULL || w->kem == NULL || w->kem_ptrs == NULL)
        return MSV_ERR_NOMEM;
    if (set->signed_key != NULL) {
        msv__wire__signed_prekey__init(&w->sp);
        w->sp.id = set->signed_key->id;
        w->sp.key = (ProtobufCBinaryData){32, (uint8_t *)set->signed_key->pk};
        w->sp.signature = (ProtobufCBinaryData){64, (uint8_t *)set->signed_sig};
        w->up.signed_ = &w->sp;
    }
    for (size_t i = 0; i < set->n_one_time; i++) {
        msv__wire__one_time_prekey__init(&w->ot[i]);
        w->ot[i].id = set->one_time[i].id;
        w->ot[i].key = (ProtobufCBinaryData){32, (uint8_t *)set->one_time[i].pk};
        w->ot_ptrs[i] = &w->ot[i];
    }
    if (set->kem_last_resort != NULL) {
        kem_wire(&w->lr, set->kem_last_resort, set->kem_last_resort_sig);
        w->up.kem_last_resort = &w->lr;
    }
    for (size_t i = 0; i < set->n_kem_one_time; i++) {
        kem_wire(&w->kem[i], &set->kem_one_time[i], set->kem_sigs[i]);
        w->kem_ptrs[i] = &w->kem[i];
    }
    w->up.n_one_time = set->n_one_time;
    w->up.one_time = w->ot_ptrs;
    w->up.n_kem_one_time = set->n_kem_one_time;
    w->up.kem_one_time = w->kem_ptrs;
    w->up.replace_one_time = set->replace != 0;
    return MSV_OK;
}

/* nd borrows from w, which holds the first prekeys' wire form (first NULL: none). */
static msv_err new_device(Msv__Wire__NewDevice *nd, struct upload_wire *w,
                          const struct msv_identity *id, const struct msv_prekey_set *first,
                          const char *push_token)
{
    static const struct msv_prekey_set none;
    size_t len = 0;
    const uint8_t *pub = msv_public_identity_bytes(msv_identity_public(id), &len);
    msv_err err = upload_wire_fill(w, first != NULL ? first : &none);

    msv__wire__new_device__init(nd);
    nd->suite = (uint32_t)msv_identity_suite(id);
    nd->identity.data = (uint8_t *)pub;
    nd->identity.len = len;
    nd->push_token = text(push_token ? push_token : "");
    if (first != NULL)
        nd->prekeys = &w->up;
    return err;
}

/*
 * nd carries the device's approval of itself of kind (a root, or a recovery), sig its storage
 * (docs/transparency.md, "Signed device lists").
 */
static msv_err self_approve(Msv__Wire__NewDevice *nd, const struct msv_identity *id, uint8_t kind,
                            uint8_t sig[MSV_KT_APPROVAL_SIG_MAX])
{
    static const uint8_t unused[32];
    size_t len = 0;
    msv_err err = msv_kt_approval_sign(id, kind, 0, unused, 0, sig, &len);

    if (err == MSV_OK && kind == MSV_KT_ROOT)
        nd->root_signature = (ProtobufCBinaryData){len, sig};
    else if (err == MSV_OK)
        nd->recovery_signature = (ProtobufCBinaryData){len, sig};
    return err;
}

static msv_err registered(struct msv_conn *c, msv_frame *req, int timeout_ms, uint64_t *device_id,
                          struct msv_refusal *why)
{
    msv_frame *resp = NULL;
    msv_err err = run(c, req, MSV__WIRE__FRAME__BODY_REGISTERED, timeout_ms, why, &resp);

    if (err == MSV_OK) {
        *device_id = resp->registered->device_id;
        msv_frame_free(resp);
    }
    return err;
}

msv_err msv_request_register_finish(struct msv_conn *c, const char *handle, const char *invite,
                                    const char *code, const char *password,
                                    const struct msv_identity *id,
                                    const struct msv_prekey_set *first, const char *push_token,
                                    int timeout_ms, uint64_t *device_id, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__RegisterFinish fin = MSV__WIRE__REGISTER_FINISH__INIT;
    Msv__Wire__NewDevice nd;
    struct upload_wire w;
    uint8_t sig[MSV_KT_APPROVAL_SIG_MAX];
    msv_err err = new_device(&nd, &w, id, first, push_token);

    if (err == MSV_OK) /* the account's first device: the root of its device list */
        err = self_approve(&nd, id, MSV_KT_ROOT, sig);

    fin.handle = text(handle);
    fin.invite = text(invite ? invite : "");
    fin.code = text(code);
    fin.password = text(password);
    fin.device = &nd;
    req.body_case = MSV__WIRE__FRAME__BODY_REGISTER_FINISH;
    req.register_finish = &fin;
    if (err == MSV_OK)
        err = registered(c, &req, timeout_ms, device_id, why);
    upload_wire_clear(&w);
    return err;
}

msv_err msv_request_add_device(struct msv_conn *c, const char *handle, const char *password,
                               const struct msv_identity *id, const struct msv_prekey_set *first,
                               const char *push_token, int timeout_ms, uint64_t *device_id,
                               struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__AddDevice add = MSV__WIRE__ADD_DEVICE__INIT;
    Msv__Wire__NewDevice nd;
    struct upload_wire w;
    uint8_t sig[MSV_KT_APPROVAL_SIG_MAX];
    msv_err err = new_device(&nd, &w, id, first, push_token);

    /* kept only when no device of the account is left to approve it: a recovery */
    if (err == MSV_OK)
        err = self_approve(&nd, id, MSV_KT_RECOVERY, sig);

    add.handle = text(handle);
    add.password = text(password);
    add.device = &nd;
    req.body_case = MSV__WIRE__FRAME__BODY_ADD_DEVICE;
    req.add_device = &add;
    if (err == MSV_OK)
        err = registered(c, &req, timeout_ms, device_id, why);
    upload_wire_clear(&w);
    return err;
}

msv_err msv_request_provision_open(struct msv_conn *c, const struct msv_identity *id,
                                   const struct msv_prekey_set *first, int timeout_ms,
                                   uint8_t address[16], struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ProvisionOpen po = MSV__WIRE__PROVISION_OPEN__INIT;
    Msv__Wire__NewDevice nd;
    struct upload_wire w;
    msv_frame *resp = NULL;
    msv_err err = new_device(&nd, &w, id, first, "");

    po.device = &nd;
    req.body_case = MSV__WIRE__FRAME__BODY_PROVISION_OPEN;
    req.provision_open = &po;
    if (err == MSV_OK)
        err = run(c, &req, MSV__WIRE__FRAME__BODY_PROVISION_ADDRESS, timeout_ms, why, &resp);
    upload_wire_clear(&w);
    if (err == MSV_OK && resp->provision_address->address.len != 16)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        memcpy(address, resp->provision_address->address.data, 16);
    msv_frame_free(resp);
    return err;
}

msv_err msv_request_provision_take(struct msv_conn *c, int timeout_ms, uint8_t **message,
                                   size_t *len, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ProvisionTake pt = MSV__WIRE__PROVISION_TAKE__INIT;
    msv_frame *resp = NULL;
    msv_err err;

    req.body_case = MSV__WIRE__FRAME__BODY_PROVISION_TAKE;
    req.provision_take = &pt;
    err = run(c, &req, MSV__WIRE__FRAME__BODY_PROVISION_MESSAGE, timeout_ms, why, &resp);
    if (err == MSV_OK) {
        ProtobufCBinaryData m = resp->provision_message->message;

        *message = malloc(m.len ? m.len : 1);
        if (*message == NULL)
            err = MSV_ERR_NOMEM;
        else {
            memcpy(*message, m.data, m.len);
            *len = m.len;
        }
    }
    msv_frame_free(resp);
    return err;
}

msv_err msv_request_link_device(struct msv_conn *c, const uint8_t address[16], int timeout_ms,
                                msv_frame **linked, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LinkDevice ld = MSV__WIRE__LINK_DEVICE__INIT;

    ld.address = (ProtobufCBinaryData){16, (uint8_t *)address};
    req.body_case = MSV__WIRE__FRAME__BODY_LINK_DEVICE;
    req.link_device = &ld;
    return run(c, &req, MSV__WIRE__FRAME__BODY_LINKED_DEVICE, timeout_ms, why, linked);
}

msv_err msv_request_provision_put(struct msv_conn *c, const uint8_t address[16],
                                  const uint8_t *message, size_t len, int timeout_ms,
                                  struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ProvisionPut pp = MSV__WIRE__PROVISION_PUT__INIT;

    pp.address = (ProtobufCBinaryData){16, (uint8_t *)address};
    pp.message = (ProtobufCBinaryData){len, (uint8_t *)message};
    req.body_case = MSV__WIRE__FRAME__BODY_PROVISION_PUT;
    req.provision_put = &pp;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_send(struct msv_conn *c, const uint8_t message_id[16],
                         const char *const *handles, size_t n_handles,
                         const struct msv_outgoing *envelopes, size_t n,
                         const uint8_t *delivery_token, int timeout_ms, msv_frame **current,
                         struct msv_refusal *why)
{
    return msv_request_send_expiring(c, message_id, handles, n_handles, envelopes, n,
                                     delivery_token, 0, timeout_ms, current, why);
}

msv_err msv_request_send_expiring(struct msv_conn *c, const uint8_t message_id[16],
                                  const char *const *handles, size_t n_handles,
                                  const struct msv_outgoing *envelopes, size_t n,
                                  const uint8_t *delivery_token, uint32_t expire_after_s,
                                  int timeout_ms, msv_frame **current, struct msv_refusal *why)
{
    struct msv_send_as as = {.delivery_token = delivery_token, .expire_after_s = expire_after_s};

    return msv_request_send_as(c, message_id, handles, n_handles, envelopes, n, &as, timeout_ms,
                               current, why);
}

/* The devices a send's answer names as left out for a full queue (all: refused whole). */
static void send_left(const msv_frame *answer, msv_err err, struct msv_send_left *left)
{
    const uint64_t *d = NULL;
    size_t n = 0;

    left->n = 0;
    left->all = 0;
    if (answer != NULL && err == MSV_OK && answer->body_case == MSV__WIRE__FRAME__BODY_OK) {
        d = answer->ok->full_devices;
        n = answer->ok->n_full_devices;
    } else if (answer != NULL && err == MSV_ERR_TOO_BIG &&
               answer->body_case == MSV__WIRE__FRAME__BODY_ERROR) {
        d = answer->error->full_devices;
        n = answer->error->n_full_devices;
        left->all = n > 0;
    }
    for (size_t i = 0; i < n && left->n < MSV_SEND_LEFT_MAX; i++)
        left->devices[left->n++] = d[i];
}

msv_err msv_request_send_as(struct msv_conn *c, const uint8_t message_id[16],
                            const char *const *handles, size_t n_handles,
                            const struct msv_outgoing *envelopes, size_t n,
                            const struct msv_send_as *as, int timeout_ms, msv_frame **current,
                            struct msv_refusal *why)
{
    const uint8_t *delivery_token = as->delivery_token;
    uint32_t expire_after_s = as->expire_after_s;
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__SendRequest send = MSV__WIRE__SEND_REQUEST__INIT;
    Msv__Wire__Envelope *env = calloc(n ? n : 1, sizeof(*env));
    Msv__Wire__Envelope **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    ProtobufCBinaryData *hs = calloc(n_handles ? n_handles : 1, sizeof(*hs));
    msv_frame *answer = NULL;
    msv_err err = MSV_ERR_NOMEM;

    if (env == NULL || ptrs == NULL || hs == NULL)
        goto out;
    for (size_t i = 0; i < n_handles; i++)
        hs[i] = text(handles[i]);
    for (size_t i = 0; i < n; i++) {
        msv__wire__envelope__init(&env[i]);
        env[i].recipient_device = envelopes[i].device_id;
        env[i].suite = envelopes[i].suite;
        env[i].ciphertext.data = (uint8_t *)envelopes[i].ciphertext;
        env[i].ciphertext.len = envelopes[i].ciphertext_len;
        ptrs[i] = &env[i];
    }
    send.message_id.data = (uint8_t *)message_id;
    send.message_id.len = 16;
    send.n_recipient_handles = n_handles;
    send.recipient_handles = hs;
    send.n_envelopes = n;
    send.envelopes = ptrs;
    if (delivery_token != NULL)
        send.delivery_token = (ProtobufCBinaryData){16, (uint8_t *)delivery_token};
    send.expire_after_s = expire_after_s;
    if (as->from != NULL)
        send.from_handle = text(as->from);
    req.body_case = MSV__WIRE__FRAME__BODY_SEND;
    req.send = &send;
    err = run_answered(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, &answer);
    if (as->left != NULL)
        send_left(answer, err, as->left);
    if (err == MSV_ERR_AGAIN && current != NULL)
        *current = answer;
    else
        msv_frame_free(answer);
out:
    free(env);
    free(ptrs);
    free(hs);
    return err;
}

msv_err msv_request_report(struct msv_conn *c, const char *reported, const char *reason,
                           const char *text, int timeout_ms, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ReportRequest r = MSV__WIRE__REPORT_REQUEST__INIT;
    msv_frame *answer = NULL;
    msv_err err;

    r.reported = (char *)reported;
    r.reason = (char *)reason;
    r.text = (char *)text;
    req.body_case = MSV__WIRE__FRAME__BODY_REPORT;
    req.report = &r;
    err = run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, &answer);
    msv_frame_free(answer);
    return err;
}

msv_err msv_request_password_change(struct msv_conn *c, const char *password,
                                    const char *new_password, int timeout_ms,
                                    struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__PasswordChange p = MSV__WIRE__PASSWORD_CHANGE__INIT;

    p.password = text(password);
    p.new_password = text(new_password);
    req.body_case = MSV__WIRE__FRAME__BODY_PASSWORD_CHANGE;
    req.password_change = &p;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_account_delete(struct msv_conn *c, const char *password, int timeout_ms,
                                   struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__AccountDelete d = MSV__WIRE__ACCOUNT_DELETE__INIT;

    d.password = text(password);
    req.body_case = MSV__WIRE__FRAME__BODY_ACCOUNT_DELETE;
    req.account_delete = &d;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_password_reset(struct msv_conn *c, const char *handle, const char *code,
                                   const char *new_password, int timeout_ms,
                                   struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__PasswordReset r = MSV__WIRE__PASSWORD_RESET__INIT;

    r.handle = text(handle);
    r.code = text(code);
    r.new_password = text(new_password);
    req.body_case = MSV__WIRE__FRAME__BODY_PASSWORD_RESET;
    req.password_reset = &r;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_prekey_upload(struct msv_conn *c, const struct msv_prekey_set *set,
                                  int timeout_ms, struct msv_prekey_counts *counts,
                                  struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    struct upload_wire w;
    msv_frame *answer = NULL;
    msv_err err = upload_wire_fill(&w, set);

    req.body_case = MSV__WIRE__FRAME__BODY_PREKEY_UPLOAD;
    req.prekey_upload = &w.up;
    if (err == MSV_OK)
        err = run(c, &req, MSV__WIRE__FRAME__BODY_PREKEY_STATE, timeout_ms, why, &answer);
    if (err == MSV_OK) {
        counts->one_time_left = answer->prekey_state->one_time_left;
        counts->has_signed = answer->prekey_state->has_signed;
        counts->kem_one_time_left = answer->prekey_state->kem_one_time_left;
        counts->has_kem_last_resort = answer->prekey_state->has_kem_last_resort;
        counts->signed_id = answer->prekey_state->signed_id;
        counts->kem_last_resort_id = answer->prekey_state->kem_last_resort_id;
    }
    msv_frame_free(answer);
    upload_wire_clear(&w);
    return err;
}

msv_err msv_request_prekey_claim(struct msv_conn *c, const uint64_t *device_ids, size_t n,
                                 int sealing_keys, int timeout_ms, msv_frame **result,
                                 struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__PrekeyClaim claim = MSV__WIRE__PREKEY_CLAIM__INIT;

    claim.n_device_ids = n;
    claim.device_ids = (uint64_t *)device_ids;
    claim.sealing_keys = sealing_keys != 0;
    req.body_case = MSV__WIRE__FRAME__BODY_PREKEY_CLAIM;
    req.prekey_claim = &claim;
    return run(c, &req, MSV__WIRE__FRAME__BODY_PREKEY_BUNDLES, timeout_ms, why, result);
}

msv_err msv_request_mls_key_packages(struct msv_conn *c, const uint8_t *const *kps,
                                     const size_t *lens, size_t n, const uint8_t *last,
                                     size_t last_len, int replace, int timeout_ms,
                                     struct msv_mls_kp_counts *counts, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsKeyPackageUpload up = MSV__WIRE__MLS_KEY_PACKAGE_UPLOAD__INIT;
    ProtobufCBinaryData *items = n > 0 ? calloc(n, sizeof(*items)) : NULL;
    msv_frame *answer = NULL;
    msv_err err;

    if (n > 0 && items == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        items[i] = (ProtobufCBinaryData){lens[i], (uint8_t *)kps[i]};
    up.n_key_packages = n;
    up.key_packages = items;
    if (last != NULL)
        up.last_resort = (ProtobufCBinaryData){last_len, (uint8_t *)last};
    up.replace = replace != 0;
    req.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_UPLOAD;
    req.mls_key_package_upload = &up;
    err = run(c, &req, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_STATE, timeout_ms, why, &answer);
    if (err == MSV_OK) {
        counts->left = answer->mls_key_package_state->left;
        counts->has_last_resort = answer->mls_key_package_state->has_last_resort;
    }
    msv_frame_free(answer);
    free(items);
    return err;
}

msv_err msv_request_mls_claim(struct msv_conn *c, const char *handle, int timeout_ms,
                              msv_frame **result, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsKeyPackageClaim claim = MSV__WIRE__MLS_KEY_PACKAGE_CLAIM__INIT;

    claim.handle = text(handle);
    req.body_case = MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_CLAIM;
    req.mls_key_package_claim = &claim;
    return run(c, &req, MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGES, timeout_ms, why, result);
}

msv_err msv_request_mls_send(struct msv_conn *c, const struct msv_mls_send *s, int timeout_ms,
                             struct msv_mls_sent *sent, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsSend send = MSV__WIRE__MLS_SEND__INIT;
    msv_frame *resp = NULL;
    msv_err err;

    memset(sent, 0, sizeof(*sent));
    send.group_id = (ProtobufCBinaryData){s->group_id_len, (uint8_t *)s->group_id};
    send.kind = (Msv__Wire__MlsKind)s->kind;
    send.epoch = s->epoch;
    send.message = (ProtobufCBinaryData){s->message_len, (uint8_t *)s->message};
    send.n_added = s->n_added;
    send.added = (uint64_t *)s->added;
    send.n_removed = s->n_removed;
    send.removed = (uint64_t *)s->removed;
    send.n_recipients = s->n_recipients;
    send.recipients = (uint64_t *)s->recipients;
    req.body_case = MSV__WIRE__FRAME__BODY_MLS_SEND;
    req.mls_send = &send;
    err = msv_conn_request(c, &req, timeout_ms, &resp);
    if (err != MSV_OK) {
        if (why != NULL)
            memset(why, 0, sizeof(*why));
        return err == MSV_ERR_AGAIN ? MSV_ERR_IO : err;
    }
    if (resp->body_case == MSV__WIRE__FRAME__BODY_MLS_SENT) {
        const Msv__Wire__MlsSent *a = resp->mls_sent;

        sent->epoch = a->epoch;
        sent->queued = a->queued;
        sent->full = a->full;
        sent->kept = a->kept;
        for (size_t i = 0; i < a->n_full_devices && i < MSV_MLS_FULL_KEPT; i++)
            sent->full_devices[sent->n_full_devices++] = a->full_devices[i];
    } else if (resp->body_case == MSV__WIRE__FRAME__BODY_ERROR &&
               resp->error->code == MSV__WIRE__ERROR_CODE__ERROR_MLS_STALE_EPOCH) {
        (void)msv_request_refusal(resp, why);
        sent->epoch = resp->error->mls_epoch;
        err = MSV_ERR_REPLAY;
    } else {
        err = msv_request_answer_refusal(c, resp, why);
    }
    msv_frame_free(resp);
    return err;
}

msv_err msv_request_mls_commits(struct msv_conn *c, const uint8_t *group_id, size_t group_id_len,
                                uint64_t from, int timeout_ms, msv_frame **answer,
                                struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsCommitsGet get = MSV__WIRE__MLS_COMMITS_GET__INIT;

    *answer = NULL;
    get.group_id = (ProtobufCBinaryData){group_id_len, (uint8_t *)group_id};
    get.from_epoch = from;
    req.body_case = MSV__WIRE__FRAME__BODY_MLS_COMMITS_GET;
    req.mls_commits_get = &get;
    return run(c, &req, MSV__WIRE__FRAME__BODY_MLS_COMMITS, timeout_ms, why, answer);
}

msv_err msv_request_mls_welcome(struct msv_conn *c, const uint8_t *group_id, size_t group_id_len,
                                const uint8_t *taken, int timeout_ms, msv_frame **answer,
                                struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsWelcomeGet get = MSV__WIRE__MLS_WELCOME_GET__INIT;

    *answer = NULL;
    get.group_id = (ProtobufCBinaryData){group_id_len, (uint8_t *)group_id};
    if (taken != NULL)
        get.taken = (ProtobufCBinaryData){32, (uint8_t *)taken};
    req.body_case = MSV__WIRE__FRAME__BODY_MLS_WELCOME_GET;
    req.mls_welcome_get = &get;
    return taken ? run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL)
                 : run(c, &req, MSV__WIRE__FRAME__BODY_MLS_WELCOME_KEPT, timeout_ms, why, answer);
}

msv_err msv_request_set_delivery_token(struct msv_conn *c, const uint8_t token[16], int timeout_ms,
                                       struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__SetDeliveryToken t = MSV__WIRE__SET_DELIVERY_TOKEN__INIT;

    t.token = (ProtobufCBinaryData){16, (uint8_t *)token};
    req.body_case = MSV__WIRE__FRAME__BODY_SET_DELIVERY_TOKEN;
    req.set_delivery_token = &t;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_ack(struct msv_conn *c, const uint64_t *queue_ids, size_t n)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Ack ack = MSV__WIRE__ACK__INIT;

    ack.n_queue_ids = n;
    ack.queue_ids = (uint64_t *)queue_ids;
    req.body_case = MSV__WIRE__FRAME__BODY_ACK;
    req.ack = &ack;
    return msv_conn_send(c, &req);
}

msv_err msv_request_ack_committed(struct msv_conn *c, const uint64_t *queue_id, int timeout_ms)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Ack ack = MSV__WIRE__ACK__INIT;

    ack.n_queue_ids = 1;
    ack.queue_ids = (uint64_t *)queue_id;
    req.body_case = MSV__WIRE__FRAME__BODY_ACK;
    req.ack = &ack;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, NULL, NULL);
}

/*
 * Every result answers the handle asked in its place: a proven answer for another handle (the
 * directory's own account, say) would have the asker seal to that account's devices.
 */
int msv_lookup_result_is_for(const Msv__Wire__HandleDevices *hd, const char *handle)
{
    char want[MSV_HANDLE_MAX + 1], got[MSV_HANDLE_MAX + 1];

    return hd != NULL &&
           msv_handle_fold((const uint8_t *)handle, strlen(handle), MSV_HANDLE_MAX, want) &&
           msv_handle_fold(hd->handle.data, hd->handle.len, MSV_HANDLE_MAX, got) &&
           strcmp(want, got) == 0;
}

static int results_match(const Msv__Wire__LookupResponse *r, const char *const *handles, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!msv_lookup_result_is_for(r->results[i], handles[i]))
            return 0;
    return 1;
}

msv_err msv_request_lookup(struct msv_conn *c, const char *const *handles, size_t n, int history,
                           uint64_t known_size, int timeout_ms, msv_frame **result,
                           struct msv_refusal *why)
{
    return msv_request_owner_lookup(c, handles, n, history, NULL, known_size, timeout_ms, result,
                                    why);
}

static msv_err lookup_request(struct msv_conn *c, const char *const *handles, size_t n, int history,
                              const uint64_t *versions_from, uint64_t known_size, int timeout_ms,
                              int match, msv_frame **result, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LookupRequest q = MSV__WIRE__LOOKUP_REQUEST__INIT;
    ProtobufCBinaryData *hs = calloc(n ? n : 1, sizeof(*hs));
    msv_err err;

    if (hs == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        hs[i] = text(handles[i]);
    q.n_handles = n;
    q.handles = hs;
    q.known_size = known_size;
    q.history = history != 0;
    if (versions_from != NULL) {
        q.n_versions_from = n;
        q.versions_from = (uint64_t *)versions_from;
    }
    req.body_case = MSV__WIRE__FRAME__BODY_LOOKUP;
    req.lookup = &q;
    err = run(c, &req, MSV__WIRE__FRAME__BODY_LOOKUP_RESULT, timeout_ms, why, result);
    free(hs);
    if (err == MSV_OK && (*result)->lookup_result->n_results != n) {
        msv_frame_free(*result);
        *result = NULL;
        err = MSV_ERR_PARSE;
    } else if (err == MSV_OK && match && !results_match((*result)->lookup_result, handles, n)) {
        msv_frame_free(*result);
        *result = NULL;
        err = MSV_ERR_AUTH;
        if (why != NULL) {
            why->code = 0;
            snprintf(why->message, sizeof(why->message),
                     "the directory answered a lookup with another handle than the one asked: "
                     "nothing it said is used");
        }
    }
    return err;
}

msv_err msv_request_owner_lookup(struct msv_conn *c, const char *const *handles, size_t n,
                                 int history, const uint64_t *versions_from, uint64_t known_size,
                                 int timeout_ms, msv_frame **result, struct msv_refusal *why)
{
    return lookup_request(c, handles, n, history, versions_from, known_size, timeout_ms, 1, result,
                          why);
}

msv_err msv_request_send_lookup(struct msv_conn *c, const char *const *handles, size_t n,
                                uint64_t known_size, int timeout_ms, msv_frame **result,
                                struct msv_refusal *why)
{
    return lookup_request(c, handles, n, 0, NULL, known_size, timeout_ms, 0, result, why);
}

msv_err msv_request_log_read(struct msv_conn *c, uint64_t start, uint32_t count,
                             uint64_t known_size, int append_proof, int timeout_ms,
                             msv_frame **result, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LogRead q = MSV__WIRE__LOG_READ__INIT;

    q.start = start;
    q.count = count;
    q.known_size = known_size;
    q.append_proof = append_proof != 0;
    req.body_case = MSV__WIRE__FRAME__BODY_LOG_READ;
    req.log_read = &q;
    return run(c, &req, MSV__WIRE__FRAME__BODY_LOG_ENTRIES, timeout_ms, why, result);
}

static msv_err blob_progress(struct msv_conn *c, msv_frame *req, int timeout_ms, uint64_t *received,
                             struct msv_refusal *why)
{
    msv_frame *resp = NULL;
    msv_err err = run(c, req, MSV__WIRE__FRAME__BODY_BLOB_PROGRESS, timeout_ms, why, &resp);

    if (err == MSV_OK) {
        *received = resp->blob_progress->received;
        msv_frame_free(resp);
    }
    return err;
}

msv_err msv_request_blob_upload(struct msv_conn *c, const uint8_t *data, size_t len, int timeout_ms,
                                void (*progress)(uint64_t done, uint64_t total),
                                uint8_t blob_id[32], struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobCreate create = MSV__WIRE__BLOB_CREATE__INIT;
    Msv__Wire__BlobChunk chunk = MSV__WIRE__BLOB_CHUNK__INIT;
    Msv__Wire__BlobStatus status = MSV__WIRE__BLOB_STATUS__INIT;
    Msv__Wire__BlobFinish finish = MSV__WIRE__BLOB_FINISH__INIT;
    msv_frame *resp = NULL;
    uint8_t sha[32];
    uint64_t done = 0;
    size_t max;
    msv_err err;
    int retries = 0;

    create.size = len;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CREATE;
    req.blob_create = &create;
    err = run(c, &req, MSV__WIRE__FRAME__BODY_BLOB_CREATED, timeout_ms, why, &resp);
    if (err != MSV_OK)
        return err;
    if (resp->blob_created->blob_id.len != 32 || resp->blob_created->chunk_max == 0) {
        msv_frame_free(resp);
        return MSV_ERR_PARSE;
    }
    memcpy(blob_id, resp->blob_created->blob_id.data, 32);
    max = resp->blob_created->chunk_max;
    msv_frame_free(resp);
    chunk.blob_id.data = status.blob_id.data = finish.blob_id.data = blob_id;
    chunk.blob_id.len = status.blob_id.len = finish.blob_id.len = 32;
    while (done < len) {
        chunk.offset = done;
        chunk.data.data = (uint8_t *)data + done;
        chunk.data.len = len - done < max ? len - done : max;
        req.body_case = MSV__WIRE__FRAME__BODY_BLOB_CHUNK;
        req.blob_chunk = &chunk;
        err = blob_progress(c, &req, timeout_ms, &done, why);
        if (err == MSV_ERR_INVALID && retries++ < 3) {
            /* out of step with the server: ask where it stands and go on from there */
            req.body_case = MSV__WIRE__FRAME__BODY_BLOB_STATUS;
            req.blob_status = &status;
            err = blob_progress(c, &req, timeout_ms, &done, why);
        }
        if (err != MSV_OK)
            return err;
        if (progress != NULL)
            progress(done, len);
    }
    err = msv_sha256(data, len, sha);
    if (err != MSV_OK)
        return err;
    finish.sha256.data = sha;
    finish.sha256.len = 32;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_FINISH;
    req.blob_finish = &finish;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_blob_stream(struct msv_conn *c, const uint8_t blob_id[32], size_t max,
                                int timeout_ms,
                                void (*progress)(void *ctx, uint64_t done, uint64_t total),
                                void *ctx, msv_blob_sink sink, void *sink_ctx,
                                struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__BlobGet get = MSV__WIRE__BLOB_GET__INIT;
    size_t size = 0, got = 0;
    int first = 1;
    msv_err err = MSV_OK;

    get.blob_id.data = (uint8_t *)blob_id;
    get.blob_id.len = 32;
    req.body_case = MSV__WIRE__FRAME__BODY_BLOB_GET;
    req.blob_get = &get;
    do {
        msv_frame *resp = NULL;
        const Msv__Wire__BlobData *d;

        get.offset = got;
        get.length = 1u << 20;
        err = run(c, &req, MSV__WIRE__FRAME__BODY_BLOB_DATA, timeout_ms, why, &resp);
        if (err != MSV_OK)
            break;
        d = resp->blob_data;
        if (first) {
            first = 0;
            size = (size_t)d->size;
            err = d->size > max ? MSV_ERR_TOO_BIG : MSV_OK;
        }
        /* each piece must fit where it says it goes, and make progress */
        if (err == MSV_OK && (d->size != size || d->data.len == 0 || d->data.len > size - got))
            err = MSV_ERR_PARSE;
        if (err == MSV_OK)
            err = sink(sink_ctx, size, d->data.data, d->data.len);
        if (err == MSV_OK) {
            got += d->data.len;
            if (progress != NULL)
                progress(ctx, got, size);
        }
        msv_frame_free(resp);
    } while (err == MSV_OK && got < size);
    return err;
}

/* Collects a blob in memory, allocated once its size is known. */
struct into_memory {
    uint8_t *buf;
    size_t got;
};

static msv_err into_memory(void *ctx, size_t size, const uint8_t *piece, size_t len)
{
    struct into_memory *m = ctx;

    if (m->buf == NULL && (m->buf = malloc(size ? size : 1)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(m->buf + m->got, piece, len); /* within size: checked by the caller */
    m->got += len;
    return MSV_OK;
}

msv_err msv_request_blob_download(struct msv_conn *c, const uint8_t blob_id[32], size_t max,
                                  int timeout_ms,
                                  void (*progress)(void *ctx, uint64_t done, uint64_t total),
                                  void *ctx, uint8_t **data, size_t *len, struct msv_refusal *why)
{
    struct into_memory m = {0};
    msv_err err =
        msv_request_blob_stream(c, blob_id, max, timeout_ms, progress, ctx, into_memory, &m, why);

    if (err != MSV_OK) {
        free(m.buf);
        return err;
    }
    *data = m.buf;
    *len = m.got;
    return MSV_OK;
}

/* ---- handles of the account (frame.proto HandleAdd ...) ------------------------------- */

msv_err msv_request_handle_change(struct msv_conn *c, int what, const char *handle,
                                  const char *code, int timeout_ms, struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__HandleAdd add = MSV__WIRE__HANDLE_ADD__INIT;
    Msv__Wire__HandleVerify verify = MSV__WIRE__HANDLE_VERIFY__INIT;
    Msv__Wire__HandleRemove remove = MSV__WIRE__HANDLE_REMOVE__INIT;

    if (what == MSV_HANDLE_ADD) {
        add.handle = text(handle);
        req.body_case = MSV__WIRE__FRAME__BODY_HANDLE_ADD;
        req.handle_add = &add;
    } else if (what == MSV_HANDLE_VERIFY) {
        verify.handle = text(handle);
        verify.code = text(code);
        req.body_case = MSV__WIRE__FRAME__BODY_HANDLE_VERIFY;
        req.handle_verify = &verify;
    } else {
        remove.handle = text(handle);
        req.body_case = MSV__WIRE__FRAME__BODY_HANDLE_REMOVE;
        req.handle_remove = &remove;
    }
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_username_set(struct msv_conn *c, const char *username, int timeout_ms,
                                 struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__UsernameSet set = MSV__WIRE__USERNAME_SET__INIT;

    set.username = text(username != NULL ? username : "");
    req.body_case = MSV__WIRE__FRAME__BODY_USERNAME_SET;
    req.username_set = &set;
    return run(c, &req, MSV__WIRE__FRAME__BODY_OK, timeout_ms, why, NULL);
}

msv_err msv_request_handle_list(struct msv_conn *c, int timeout_ms, msv_frame **answer,
                                struct msv_refusal *why)
{
    Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
    Msv__Wire__HandleListRequest list = MSV__WIRE__HANDLE_LIST_REQUEST__INIT;

    req.body_case = MSV__WIRE__FRAME__BODY_HANDLE_LIST_REQUEST;
    req.handle_list_request = &list;
    return run(c, &req, MSV__WIRE__FRAME__BODY_HANDLE_LIST, timeout_ms, why, answer);
}
