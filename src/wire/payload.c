/*
 * The payload structure: one validation function serves both directions, so
 * nothing is sent that a receiver would refuse and nothing is accepted that
 * could not have been sent.
 */
#include "missive/payload.h"

#include <stdlib.h>
#include <string.h>

#include "missive/util.h"
#include "payload.pb-c.h"

typedef Msv__Payload__Payload pb_payload;
typedef Msv__Payload__AttachmentRef pb_attachment;
typedef Msv__Payload__SyncEntry pb_sync;
typedef Msv__Payload__MentionRange pb_mention;
typedef Msv__Payload__ProfileRef pb_profile;

const char *msv_payload_kind_name(enum msv_payload_kind kind)
{
    switch (kind) {
    case MSV_KIND_MESSAGE:
        return "message";
    case MSV_KIND_RECEIPT_DELIVERED:
        return "receipt-delivered";
    case MSV_KIND_RECEIPT_READ:
        return "receipt-read";
    case MSV_KIND_TYPING:
        return "typing";
    case MSV_KIND_EDIT:
        return "edit";
    case MSV_KIND_UNSEND:
        return "unsend";
    case MSV_KIND_GROUP_CHANGE:
        return "group-change";
    case MSV_KIND_SESSION_RESET:
        return "session-reset";
    case MSV_KIND_REACTION:
        return "reaction";
    case MSV_KIND_SYNC:
        return "sync";
    case MSV_KIND_GROUP_JOIN:
        return "group-join";
    case MSV_KIND_PROFILE_KEY:
        return "profile-key";
    case MSV_KIND_LINK_HISTORY:
        return "link-history";
    case MSV_KIND_GROUP_COPY:
        return "group-copy";
    case MSV_KIND_TIMER:
        return "timer";
    default:
        return "unknown";
    }
}

/* A present string: UTF-8, at most max bytes, non-empty if required. NULL is absent. */
static int text_ok(const char *s, size_t max, int required)
{
    size_t n;

    if (s == NULL)
        return !required;
    n = strlen(s);
    if (n > max || (required && n == 0))
        return 0;
    return msv_utf8_is_valid((const uint8_t *)s, n);
}

static int attachment_ok(const struct msv_attachment_ref *a)
{
    return text_ok(a->uri, MSV_URI_MAX, 1) && text_ok(a->name, MSV_FILE_NAME_MAX, 0) &&
           text_ok(a->mime, MSV_MIME_MAX, 0);
}

int msv_payload_reaction_is_valid(const char *emoji)
{
    const uint8_t *s = (const uint8_t *)emoji;
    size_t n = emoji != NULL ? strlen(emoji) : 0;

    if (n == 0 || n > MSV_REACTION_MAX || !msv_utf8_is_valid(s, n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        /* C0, space and DEL; C1 is U+0080..U+009F, encoded C2 80..C2 9F */
        if (s[i] <= 0x20 || s[i] == 0x7f || (s[i] == 0xc2 && i + 1 < n && s[i + 1] < 0xa0))
            return 0;
    }
    return 1;
}

/* A synced key: "sync:" and more, or "contact:" NAME "\n" HANDLE (both non-empty). */
static int sync_key_ok(const char *key)
{
    const char *nl;

    if (!text_ok(key, MSV_SYNC_KEY_MAX, 1))
        return 0;
    if (strncmp(key, "sync:", 5) == 0)
        return key[5] != '\0';
    if (strncmp(key, "contact:", 8) != 0)
        return 0;
    nl = strchr(key + 8, '\n');
    return nl != NULL && nl > key + 8 && nl[1] != '\0' && strchr(nl + 1, '\n') == NULL &&
           strlen(nl + 1) <= MSV_HANDLE_MAX;
}

static int sync_entry_ok(const struct msv_sync_entry *e)
{
    return sync_key_ok(e->key) && e->stamp != 0 && e->value_len <= MSV_SYNC_VALUE_MAX &&
           (e->value_len == 0 || e->value != NULL) && !(e->deleted && e->value_len != 0);
}

bool msv_sync_entry_is_valid(const struct msv_sync_entry *e)
{
    return e != NULL && sync_entry_ok(e);
}

/* A profile goes with the key that opens it, on messages and PROFILE_KEY only. */
static int profile_ok(const struct msv_payload *p)
{
    const struct msv_profile_ref *r = &p->profile;

    if (!p->has_profile)
        return 1;
    if (!p->has_profile_key || (p->kind != MSV_KIND_MESSAGE && p->kind != MSV_KIND_PROFILE_KEY))
        return 0;
    return text_ok(r->uri, MSV_URI_MAX, 1) && r->size > 0 && r->size <= MSV_PROFILE_BLOB_MAX;
}

static int has_text(const struct msv_payload *p)
{
    return p->text != NULL && p->text[0] != '\0';
}

/* The rules of each kind: what it must carry and what it must not. */
static int kind_ok(const struct msv_payload *p)
{
    int bare = !has_text(p) && p->attachment_count == 0;

    switch (p->kind) {
    case MSV_KIND_MESSAGE:
        return has_text(p) || p->attachment_count > 0;
    case MSV_KIND_EDIT:
        return p->has_target && has_text(p) && p->attachment_count == 0 && p->edit_number > 0 &&
               p->edit_number <= MSV_EDITS_MAX;
    case MSV_KIND_UNSEND:
    case MSV_KIND_RECEIPT_DELIVERED:
    case MSV_KIND_RECEIPT_READ:
        return p->has_target && bare;
    case MSV_KIND_TYPING:
    case MSV_KIND_SESSION_RESET:
        return bare;
    case MSV_KIND_GROUP_CHANGE:
        return p->has_group && (p->participant_count > 0 || p->has_group_state_hash) && bare;
    case MSV_KIND_REACTION:
        /* no text takes the sender's reaction away */
        return p->has_target && p->attachment_count == 0 &&
               (!has_text(p) || msv_payload_reaction_is_valid(p->text));
    case MSV_KIND_SYNC:
        return p->sync_count > 0 && bare && !p->has_group;
    case MSV_KIND_PROFILE_KEY:
        return p->has_profile_key && bare && !p->has_group;
    case MSV_KIND_TIMER:
        return bare;
    case MSV_KIND_LINK_HISTORY:
        /* where the archive lies, or why none comes: one of them */
        return p->has_target && !p->has_group && (p->attachment_count == 1) != has_text(p);
    case MSV_KIND_GROUP_COPY:
        /* the group's whole state (group_copy_ok), and nothing else */
        return p->has_group && bare && p->participant_count == 0 && p->group_name == NULL &&
               !p->has_target && !p->has_reply_to;
    case MSV_KIND_GROUP_JOIN:
        /* a request or a link's settings, for one group */
        return p->has_group && bare && p->has_join_proof != (p->join_link_version != 0);
    default:
        return 0;
    }
}

static int has_delta(const struct msv_payload *p)
{
    for (int l = 0; l < MSV_DELTA_LISTS; l++)
        if (p->group_delta_count[l] > 0)
            return 1;
    return p->has_group_state_hash || p->group_state_len > 0 || p->has_group_state_ref;
}

/* The whole state, inline (1 byte to 4 KiB) or as an attachment (1 byte to 1 MiB): one of them. */
static int whole_state_ok(const struct msv_payload *p)
{
    if (p->has_group_state_ref == (p->group_state_len > 0) ||
        p->group_state_len > MSV_GROUP_STATE_INLINE_MAX ||
        (p->group_state_len > 0 && p->group_state == NULL))
        return 0;
    return !p->has_group_state_ref ||
           (attachment_ok(&p->group_state_ref) && p->group_state_ref.size > 0 &&
            p->group_state_ref.size <= MSV_GROUP_STATE_MAX);
}

/* A GROUP_COPY's state: whole, without the hash or delta of a change. */
static int group_copy_ok(const struct msv_payload *p)
{
    for (int l = 0; l < MSV_DELTA_LISTS; l++)
        if (p->group_delta_count[l] > 0)
            return 0;
    return !p->has_group_state_hash && whole_state_ok(p);
}

/*
 * A change as a delta: the new name and state hash, no whole lists, at most
 * MSV_GROUP_DELTA_MAX handles in each list of the delta, and the whole state
 * either inline or as an attachment.
 */
static int group_delta_ok(const struct msv_payload *p)
{
    if (p->participant_count != 0 || p->group_admin_count != 0 || p->group_name == NULL ||
        !whole_state_ok(p))
        return 0;
    for (int l = 0; l < MSV_DELTA_LISTS; l++) {
        if (p->group_delta_count[l] > MSV_GROUP_DELTA_MAX ||
            (p->group_delta_count[l] > 0 && p->group_delta[l] == NULL))
            return 0;
        for (size_t i = 0; i < p->group_delta_count[l]; i++)
            if (!text_ok(p->group_delta[l][i], MSV_HANDLE_MAX, 1))
                return 0;
    }
    return 1;
}

/* The signed group state fields: only on a group change, all of them, admins among members. */
static int group_signing_ok(const struct msv_payload *p)
{
    if (!p->has_group_signature)
        return p->group_admin_count == 0 && p->group_epoch == 0 &&
               (p->kind == MSV_KIND_GROUP_COPY ? group_copy_ok(p) : !has_delta(p));
    if (p->kind != MSV_KIND_GROUP_CHANGE || p->group_epoch == 0 || p->group_signature_len == 0 ||
        p->group_signature_len > MSV_GROUP_SIGNATURE_MAX)
        return 0;
    if (p->has_group_state_hash)
        return group_delta_ok(p);
    if (has_delta(p) || p->group_admin_count == 0 || p->group_admins == NULL ||
        p->group_admin_count > p->participant_count)
        return 0;
    for (size_t i = 0; i < p->group_admin_count; i++) {
        size_t j = 0;

        if (!text_ok(p->group_admins[i], MSV_HANDLE_MAX, 1))
            return 0;
        while (j < p->participant_count && strcmp(p->participants[j], p->group_admins[i]) != 0)
            j++;
        if (j == p->participant_count)
            return 0;
    }
    return 1;
}

/* A range of a message's text: not empty, inside it, starting and ending between characters. */
static int mention_ok(const struct msv_payload *p, const struct msv_mention *m)
{
    size_t n = p->text != NULL ? strlen(p->text) : 0;
    const uint8_t *t = (const uint8_t *)p->text;

    if (p->kind != MSV_KIND_MESSAGE || !text_ok(m->handle, MSV_HANDLE_MAX, 1) || m->length == 0 ||
        m->start > n || m->length > n - m->start)
        return 0;
    return (t[m->start] & 0xc0) != 0x80 &&
           (m->start + m->length == n || (t[m->start + m->length] & 0xc0) != 0x80);
}

static int payload_ok(const struct msv_payload *p)
{
    static const uint8_t zero[MSV_ID_LEN];

    if (memcmp(p->message_id, zero, MSV_ID_LEN) == 0 || !kind_ok(p))
        return 0;
    if (p->edit_number != 0 && p->kind != MSV_KIND_EDIT)
        return 0;
    if (p->has_log_epoch && !p->has_log_head) /* a root is for the size of the head it comes with */
        return 0;
    if (!profile_ok(p))
        return 0;
    /* the join fields only on GROUP_JOIN; the link's secret and approval only with its version */
    if (p->kind != MSV_KIND_GROUP_JOIN && (p->has_join_proof || p->join_link_version != 0))
        return 0;
    if (p->join_link_version == 0 && (p->has_join_link_secret || p->join_link_approval))
        return 0;
    if (p->mls_outside && (p->kind != MSV_KIND_MESSAGE || !p->has_group))
        return 0;
    if (p->group_accepted && p->kind != MSV_KIND_GROUP_COPY)
        return 0;
    if ((p->sync_count > 0 && p->kind != MSV_KIND_SYNC) || p->sync_count > MSV_SYNC_ENTRIES_MAX ||
        (p->sync_count > 0 && p->sync == NULL))
        return 0;
    for (size_t i = 0; i < p->sync_count; i++) {
        if (!sync_entry_ok(&p->sync[i]))
            return 0;
    }
    /* a timer only where one applies, and never an absurd one */
    if (p->timer_s != 0 && ((p->kind != MSV_KIND_MESSAGE && p->kind != MSV_KIND_TIMER) ||
                            p->timer_s < MSV_TIMER_MIN_S || p->timer_s > MSV_TIMER_MAX_S))
        return 0;
    if (!text_ok(p->text, MSV_TEXT_MAX, 0) || !text_ok(p->group_name, MSV_GROUP_NAME_MAX, 0))
        return 0;
    if (p->group_name != NULL && !p->has_group)
        return 0;
    if (p->participant_count > MSV_PARTICIPANTS_MAX || p->attachment_count > MSV_ATTACHMENTS_MAX)
        return 0;
    if ((p->participant_count > 0 && p->participants == NULL) ||
        (p->attachment_count > 0 && p->attachments == NULL))
        return 0;
    for (size_t i = 0; i < p->participant_count; i++) {
        if (!text_ok(p->participants[i], MSV_HANDLE_MAX, 1))
            return 0;
    }
    for (size_t i = 0; i < p->attachment_count; i++) {
        if (!attachment_ok(&p->attachments[i]))
            return 0;
    }
    if (p->mention_count > MSV_MENTIONS_MAX || (p->mention_count > 0 && p->mentions == NULL))
        return 0;
    for (size_t i = 0; i < p->mention_count; i++) {
        if (!mention_ok(p, &p->mentions[i]))
            return 0;
    }
    return group_signing_ok(p);
}

static ProtobufCBinaryData bytes_of(const void *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)p};

    return b;
}

static ProtobufCBinaryData str_of(const char *s)
{
    return s ? bytes_of(s, strlen(s)) : bytes_of(NULL, 0);
}

static void encode_attachment(const struct msv_attachment_ref *a, pb_attachment *m)
{
    msv__payload__attachment_ref__init(m);
    m->uri = str_of(a->uri);
    m->key = bytes_of(a->key, sizeof(a->key));
    m->sha256 = bytes_of(a->sha256, sizeof(a->sha256));
    m->sha1 = bytes_of(a->sha1, sizeof(a->sha1));
    m->size = a->size;
    m->name = str_of(a->name);
    m->mime = str_of(a->mime);
}

/* The delta lists of a change, where each goes in the encoded message. */
static void delta_fields(pb_payload *m, size_t **counts, ProtobufCBinaryData ***lists)
{
    counts[MSV_DELTA_ADDED] = &m->n_group_added;
    lists[MSV_DELTA_ADDED] = &m->group_added;
    counts[MSV_DELTA_REMOVED] = &m->n_group_removed;
    lists[MSV_DELTA_REMOVED] = &m->group_removed;
    counts[MSV_DELTA_PROMOTED] = &m->n_group_promoted;
    lists[MSV_DELTA_PROMOTED] = &m->group_promoted;
    counts[MSV_DELTA_DEMOTED] = &m->n_group_demoted;
    lists[MSV_DELTA_DEMOTED] = &m->group_demoted;
}

/* The delta form of a change into m; delta holds its handles (MSV_GROUP_DELTA_MAX a list). */
static void encode_delta(const struct msv_payload *p, pb_payload *m, ProtobufCBinaryData *delta,
                         pb_attachment *ref)
{
    size_t *counts[MSV_DELTA_LISTS];
    ProtobufCBinaryData **lists[MSV_DELTA_LISTS];

    if (p->kind == MSV_KIND_GROUP_COPY) { /* the whole state only */
        m->group_state = bytes_of(p->group_state, p->group_state_len);
        if (p->has_group_state_ref) {
            encode_attachment(&p->group_state_ref, ref);
            m->group_state_ref = ref;
        }
        m->group_accepted = p->group_accepted;
        return;
    }
    if (!p->has_group_state_hash)
        return;
    delta_fields(m, counts, lists);
    for (int l = 0; l < MSV_DELTA_LISTS; l++) {
        ProtobufCBinaryData *at = delta + (size_t)l * MSV_GROUP_DELTA_MAX;

        for (size_t i = 0; i < p->group_delta_count[l]; i++)
            at[i] = str_of(p->group_delta[l][i]);
        *counts[l] = p->group_delta_count[l];
        *lists[l] = at;
    }
    m->group_state_hash = bytes_of(p->group_state_hash, MSV_GROUP_HASH_LEN);
    m->group_state = bytes_of(p->group_state, p->group_state_len);
    if (p->has_group_state_ref) {
        encode_attachment(&p->group_state_ref, ref);
        m->group_state_ref = ref;
    }
}

msv_err msv_payload_encode(const struct msv_payload *p, uint8_t **out, size_t *out_len)
{
    pb_payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    pb_attachment att[MSV_ATTACHMENTS_MAX], *att_ptrs[MSV_ATTACHMENTS_MAX];
    pb_sync sync[MSV_SYNC_ENTRIES_MAX], *sync_ptrs[MSV_SYNC_ENTRIES_MAX];
    ProtobufCBinaryData parts[MSV_PARTICIPANTS_MAX], admins[MSV_PARTICIPANTS_MAX];
    pb_mention mentions[MSV_MENTIONS_MAX], *mention_ptrs[MSV_MENTIONS_MAX];
    pb_profile profile = MSV__PAYLOAD__PROFILE_REF__INIT;
    pb_attachment state_ref;
    ProtobufCBinaryData *delta = NULL;
    uint8_t *buf;
    size_t n;

    if (p == NULL || !payload_ok(p))
        return MSV_ERR_INVALID;
    if (p->has_group_state_hash &&
        (delta = calloc(MSV_DELTA_LISTS * MSV_GROUP_DELTA_MAX, sizeof(*delta))) == NULL)
        return MSV_ERR_NOMEM;
    encode_delta(p, &m, delta, &state_ref);
    m.version = MSV_PAYLOAD_VERSION;
    m.kind = (Msv__Payload__Kind)p->kind;
    m.message_id = bytes_of(p->message_id, MSV_ID_LEN);
    m.sent_at_ms = p->sent_at_ms;
    m.text = str_of(p->text);
    m.edit_number = p->edit_number;
    for (size_t i = 0; i < p->participant_count; i++)
        parts[i] = str_of(p->participants[i]);
    m.n_participants = p->participant_count;
    m.participants = parts;
    if (p->has_group)
        m.group_id = bytes_of(p->group_id, MSV_ID_LEN);
    m.group_name = str_of(p->group_name);
    if (p->has_reply_to)
        m.reply_to = bytes_of(p->reply_to, MSV_ID_LEN);
    if (p->has_target)
        m.target_id = bytes_of(p->target_id, MSV_ID_LEN);
    if (p->has_log_head)
        m.log_head = bytes_of(p->log_head, MSV_LOG_HEAD_LEN);
    if (p->has_log_epoch)
        m.log_epoch = bytes_of(p->log_epoch, MSV_LOG_EPOCH_LEN);
    if (p->has_profile_key)
        m.profile_key = bytes_of(p->profile_key, MSV_PROFILE_KEY_LEN);
    if (p->has_group_signature) {
        for (size_t i = 0; i < p->group_admin_count; i++)
            admins[i] = str_of(p->group_admins[i]);
        m.n_group_admins = p->group_admin_count;
        m.group_admins = admins;
        m.group_epoch = p->group_epoch;
        m.group_prev_hash = bytes_of(p->group_prev_hash, MSV_GROUP_HASH_LEN);
        m.group_signature = bytes_of(p->group_signature, p->group_signature_len);
    }
    m.timer_s = p->timer_s;
    if (p->has_join_proof)
        m.join_proof = bytes_of(p->join_proof, MSV_JOIN_KEY_LEN);
    if (p->has_join_link_secret)
        m.join_link_secret = bytes_of(p->join_link_secret, MSV_JOIN_KEY_LEN);
    m.join_link_version = p->join_link_version;
    m.join_link_approval = p->join_link_approval;
    m.mls_outside = p->mls_outside;
    for (size_t i = 0; i < p->attachment_count; i++) {
        encode_attachment(&p->attachments[i], &att[i]);
        att_ptrs[i] = &att[i];
    }
    m.n_attachments = p->attachment_count;
    m.attachments = att_ptrs;
    for (size_t i = 0; i < p->sync_count; i++) {
        msv__payload__sync_entry__init(&sync[i]);
        sync[i].key = str_of(p->sync[i].key);
        sync[i].value = bytes_of(p->sync[i].value, p->sync[i].value_len);
        sync[i].deleted = p->sync[i].deleted;
        sync[i].stamp = p->sync[i].stamp;
        sync_ptrs[i] = &sync[i];
    }
    m.n_sync = p->sync_count;
    m.sync = sync_ptrs;
    for (size_t i = 0; i < p->mention_count; i++) {
        msv__payload__mention_range__init(&mentions[i]);
        mentions[i].start = p->mentions[i].start;
        mentions[i].length = p->mentions[i].length;
        mentions[i].handle = str_of(p->mentions[i].handle);
        mention_ptrs[i] = &mentions[i];
    }
    m.n_mentions = p->mention_count;
    m.mentions = mention_ptrs;
    if (p->has_profile) {
        profile.uri = str_of(p->profile.uri);
        profile.sha256 = bytes_of(p->profile.sha256, sizeof(p->profile.sha256));
        profile.size = p->profile.size;
        profile.salt = bytes_of(p->profile.salt, sizeof(p->profile.salt));
        m.profile = &profile;
    }
    n = msv__payload__payload__get_packed_size(&m);
    buf = malloc(n ? n : 1);
    if (buf != NULL)
        msv__payload__payload__pack(&m, buf);
    free(delta);
    if (buf == NULL)
        return MSV_ERR_NOMEM;
    *out = buf;
    *out_len = n;
    return MSV_OK;
}

/* ---- parsing -------------------------------------------------------------------------- */

void msv_payload_free(struct msv_payload *p)
{
    if (p == NULL)
        return;
    if (p->text != NULL)
        msv_secret_free(p->text, strlen(p->text));
    for (size_t i = 0; p->participants != NULL && i < p->participant_count; i++)
        free(p->participants[i]);
    free(p->participants);
    for (size_t i = 0; p->group_admins != NULL && i < p->group_admin_count; i++)
        free(p->group_admins[i]);
    free(p->group_admins);
    free(p->group_name);
    for (size_t i = 0; p->attachments != NULL && i < p->attachment_count; i++) {
        free(p->attachments[i].uri);
        free(p->attachments[i].name);
        free(p->attachments[i].mime);
    }
    msv_secret_free(p->attachments, p->attachment_count * sizeof(*p->attachments));
    for (size_t i = 0; p->sync != NULL && i < p->sync_count; i++) {
        free(p->sync[i].key);
        msv_secret_free(p->sync[i].value, p->sync[i].value_len);
    }
    free(p->sync);
    for (size_t i = 0; p->mentions != NULL && i < p->mention_count; i++)
        free(p->mentions[i].handle);
    free(p->mentions);
    free(p->profile.uri);
    for (int l = 0; l < MSV_DELTA_LISTS; l++) {
        for (size_t i = 0; p->group_delta[l] != NULL && i < p->group_delta_count[l]; i++)
            free(p->group_delta[l][i]);
        free(p->group_delta[l]);
    }
    free(p->group_state);
    free(p->group_state_ref.uri);
    free(p->group_state_ref.name);
    free(p->group_state_ref.mime);
    msv_wipe(p->group_state_ref.key, sizeof(p->group_state_ref.key));
    msv_wipe(p->join_link_secret, sizeof(p->join_link_secret));
    free(p);
}

/* Copies a bytes field into a C string; absent (empty) becomes NULL unless keep_empty. */
static msv_err copy_str(ProtobufCBinaryData b, int keep_empty, char **out)
{
    char *s;

    *out = NULL;
    if (b.len == 0 && !keep_empty)
        return MSV_OK;
    if (b.len > 0 && memchr(b.data, '\0', b.len) != NULL)
        return MSV_ERR_PARSE;
    s = malloc(b.len + 1);
    if (s == NULL)
        return MSV_ERR_NOMEM;
    if (b.len > 0)
        memcpy(s, b.data, b.len);
    s[b.len] = '\0';
    *out = s;
    return MSV_OK;
}

/* An optional 16-byte id: absent or exactly 16 bytes. */
static msv_err copy_id(ProtobufCBinaryData b, bool *present, uint8_t id[MSV_ID_LEN])
{
    if (b.len == 0) {
        if (present != NULL)
            *present = false;
        return present != NULL ? MSV_OK : MSV_ERR_PARSE;
    }
    if (b.len != MSV_ID_LEN)
        return MSV_ERR_PARSE;
    memcpy(id, b.data, MSV_ID_LEN);
    if (present != NULL)
        *present = true;
    return MSV_OK;
}

static msv_err copy_fixed(ProtobufCBinaryData b, uint8_t *out, size_t n)
{
    if (b.len != n)
        return MSV_ERR_PARSE;
    memcpy(out, b.data, n);
    return MSV_OK;
}

static msv_err copy_attachment(const pb_attachment *a, struct msv_attachment_ref *r)
{
    msv_err err;

    err = copy_str(a->uri, 0, &r->uri);
    if (err == MSV_OK)
        err = copy_str(a->name, 0, &r->name);
    if (err == MSV_OK)
        err = copy_str(a->mime, 0, &r->mime);
    if (err == MSV_OK)
        err = copy_fixed(a->key, r->key, sizeof(r->key));
    if (err == MSV_OK)
        err = copy_fixed(a->sha256, r->sha256, sizeof(r->sha256));
    if (err == MSV_OK)
        err = copy_fixed(a->sha1, r->sha1, sizeof(r->sha1));
    r->size = a->size;
    return err;
}

static msv_err copy_profile(const pb_profile *m, struct msv_payload *p)
{
    msv_err err;

    if (m == NULL)
        return MSV_OK;
    p->has_profile = true;
    p->profile.size = m->size;
    err = copy_str(m->uri, 0, &p->profile.uri);
    if (err == MSV_OK)
        err = copy_fixed(m->sha256, p->profile.sha256, sizeof(p->profile.sha256));
    if (err == MSV_OK)
        err = copy_fixed(m->salt, p->profile.salt, sizeof(p->profile.salt));
    return err;
}

static msv_err copy_sync(const pb_payload *m, struct msv_payload *p)
{
    msv_err err = MSV_OK;

    if (m->n_sync > MSV_SYNC_ENTRIES_MAX)
        return MSV_ERR_PARSE;
    if (m->n_sync == 0)
        return MSV_OK;
    p->sync = calloc(m->n_sync, sizeof(*p->sync));
    if (p->sync == NULL)
        return MSV_ERR_NOMEM;
    p->sync_count = m->n_sync;
    for (size_t i = 0; err == MSV_OK && i < m->n_sync; i++) {
        const pb_sync *e = m->sync[i];
        struct msv_sync_entry *r = &p->sync[i];

        if (e->value.len > MSV_SYNC_VALUE_MAX)
            return MSV_ERR_PARSE;
        err = copy_str(e->key, 0, &r->key);
        if (err == MSV_OK && e->value.len > 0) {
            r->value = malloc(e->value.len);
            if (r->value == NULL)
                return MSV_ERR_NOMEM;
            memcpy(r->value, e->value.data, e->value.len);
            r->value_len = e->value.len;
        }
        r->deleted = e->deleted;
        r->stamp = e->stamp;
    }
    return err;
}

static msv_err copy_lists(const pb_payload *m, struct msv_payload *p)
{
    msv_err err = MSV_OK;

    if (m->n_participants > MSV_PARTICIPANTS_MAX || m->n_attachments > MSV_ATTACHMENTS_MAX)
        return MSV_ERR_PARSE;
    if (m->n_participants > 0) {
        p->participants = calloc(m->n_participants, sizeof(*p->participants));
        if (p->participants == NULL)
            return MSV_ERR_NOMEM;
        p->participant_count = m->n_participants;
        for (size_t i = 0; err == MSV_OK && i < m->n_participants; i++)
            err = copy_str(m->participants[i], 1, &p->participants[i]);
    }
    if (err == MSV_OK && m->n_mentions > MSV_MENTIONS_MAX)
        return MSV_ERR_PARSE;
    if (err == MSV_OK && m->n_mentions > 0) {
        p->mentions = calloc(m->n_mentions, sizeof(*p->mentions));
        if (p->mentions == NULL)
            return MSV_ERR_NOMEM;
        p->mention_count = m->n_mentions;
        for (size_t i = 0; err == MSV_OK && i < m->n_mentions; i++) {
            p->mentions[i].start = m->mentions[i]->start;
            p->mentions[i].length = m->mentions[i]->length;
            err = copy_str(m->mentions[i]->handle, 1, &p->mentions[i].handle);
        }
    }
    if (err == MSV_OK && m->n_attachments > 0) {
        p->attachments = calloc(m->n_attachments, sizeof(*p->attachments));
        if (p->attachments == NULL)
            return MSV_ERR_NOMEM;
        p->attachment_count = m->n_attachments;
        for (size_t i = 0; err == MSV_OK && i < m->n_attachments; i++)
            err = copy_attachment(m->attachments[i], &p->attachments[i]);
    }
    return err;
}

/* A list of handles from the wire: at most max, each a string. */
static msv_err copy_handles(ProtobufCBinaryData *in, size_t n, size_t max, char ***out,
                            size_t *count)
{
    msv_err err = MSV_OK;

    if (n > max)
        return MSV_ERR_PARSE;
    if (n == 0)
        return MSV_OK;
    *out = calloc(n, sizeof(**out));
    if (*out == NULL)
        return MSV_ERR_NOMEM;
    *count = n;
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = copy_str(in[i], 1, &(*out)[i]);
    return err;
}

/* The delta form of a group change, as encoded (the rules are payload_ok()'s). */
static msv_err copy_group_delta(const pb_payload *m, struct msv_payload *p)
{
    size_t *counts[MSV_DELTA_LISTS];
    ProtobufCBinaryData **lists[MSV_DELTA_LISTS];
    pb_payload *mm = (pb_payload *)m; /* delta_fields() names the fields; nothing is written */
    msv_err err = MSV_OK;

    delta_fields(mm, counts, lists);
    for (int l = 0; err == MSV_OK && l < MSV_DELTA_LISTS; l++)
        err = copy_handles(*lists[l], *counts[l], MSV_GROUP_DELTA_MAX, &p->group_delta[l],
                           &p->group_delta_count[l]);
    if (err == MSV_OK && m->group_state_hash.len != 0) {
        err = copy_fixed(m->group_state_hash, p->group_state_hash, MSV_GROUP_HASH_LEN);
        p->has_group_state_hash = err == MSV_OK;
    }
    if (err == MSV_OK && m->group_state.len > MSV_GROUP_STATE_INLINE_MAX)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK && m->group_state.len > 0) {
        if ((p->group_state = malloc(m->group_state.len)) == NULL)
            return MSV_ERR_NOMEM;
        memcpy(p->group_state, m->group_state.data, m->group_state.len);
        p->group_state_len = m->group_state.len;
    }
    if (err == MSV_OK && m->group_state_ref != NULL) {
        p->has_group_state_ref = true;
        err = copy_attachment(m->group_state_ref, &p->group_state_ref);
    }
    return err;
}

/* The signed group state: present when a signature is, each field then exactly as encoded. */
static msv_err copy_group_signing(const pb_payload *m, struct msv_payload *p)
{
    msv_err err = MSV_OK;

    if (m->group_signature.len == 0)
        return m->n_group_admins == 0 && m->group_epoch == 0 && m->group_prev_hash.len == 0
                   ? MSV_OK
                   : MSV_ERR_PARSE;
    if (m->group_signature.len > MSV_GROUP_SIGNATURE_MAX ||
        m->n_group_admins > MSV_PARTICIPANTS_MAX ||
        (m->n_group_admins == 0 && m->group_state_hash.len == 0))
        return MSV_ERR_PARSE;
    p->has_group_signature = true;
    p->group_epoch = m->group_epoch;
    memcpy(p->group_signature, m->group_signature.data, m->group_signature.len);
    p->group_signature_len = m->group_signature.len;
    err = copy_fixed(m->group_prev_hash, p->group_prev_hash, MSV_GROUP_HASH_LEN);
    if (err != MSV_OK)
        return err;
    return copy_handles(m->group_admins, m->n_group_admins, MSV_PARTICIPANTS_MAX, &p->group_admins,
                        &p->group_admin_count);
}

/* A join request's proof or a link's secret: absent, or exactly MSV_JOIN_KEY_LEN bytes. */
static msv_err copy_join(const pb_payload *m, struct msv_payload *p)
{
    msv_err err = MSV_OK;

    p->join_link_version = m->join_link_version;
    p->join_link_approval = m->join_link_approval;
    p->has_join_proof = m->join_proof.len != 0;
    if (p->has_join_proof)
        err = copy_fixed(m->join_proof, p->join_proof, MSV_JOIN_KEY_LEN);
    p->has_join_link_secret = m->join_link_secret.len != 0;
    if (err == MSV_OK && p->has_join_link_secret)
        err = copy_fixed(m->join_link_secret, p->join_link_secret, MSV_JOIN_KEY_LEN);
    return err;
}

static msv_err copy_payload(const pb_payload *m, struct msv_payload *p)
{
    msv_err err;

    if (m->version == 0)
        return MSV_ERR_PARSE;
    if (m->version != MSV_PAYLOAD_VERSION)
        return MSV_ERR_UNSUPPORTED;
    p->kind = (enum msv_payload_kind)m->kind;
    p->sent_at_ms = m->sent_at_ms;
    p->edit_number = m->edit_number;
    p->timer_s = m->timer_s;
    p->mls_outside = m->mls_outside;
    p->group_accepted = m->group_accepted;
    err = copy_id(m->message_id, NULL, p->message_id);
    if (err == MSV_OK)
        err = copy_id(m->group_id, &p->has_group, p->group_id);
    if (err == MSV_OK)
        err = copy_id(m->reply_to, &p->has_reply_to, p->reply_to);
    if (err == MSV_OK)
        err = copy_id(m->target_id, &p->has_target, p->target_id);
    if (err == MSV_OK && m->log_head.len != 0) {
        if (m->log_head.len != MSV_LOG_HEAD_LEN)
            return MSV_ERR_PARSE;
        memcpy(p->log_head, m->log_head.data, MSV_LOG_HEAD_LEN);
        p->has_log_head = true;
    }
    if (err == MSV_OK && m->log_epoch.len != 0) {
        if (m->log_epoch.len != MSV_LOG_EPOCH_LEN)
            return MSV_ERR_PARSE;
        memcpy(p->log_epoch, m->log_epoch.data, MSV_LOG_EPOCH_LEN);
        p->has_log_epoch = true;
    }
    if (err == MSV_OK && m->profile_key.len != 0) {
        if (m->profile_key.len != MSV_PROFILE_KEY_LEN)
            return MSV_ERR_PARSE;
        memcpy(p->profile_key, m->profile_key.data, MSV_PROFILE_KEY_LEN);
        p->has_profile_key = true;
    }
    if (err == MSV_OK)
        err = copy_str(m->text, 0, &p->text);
    if (err == MSV_OK)
        err = copy_str(m->group_name, 0, &p->group_name);
    if (err == MSV_OK)
        err = copy_lists(m, p);
    if (err == MSV_OK)
        err = copy_sync(m, p);
    if (err == MSV_OK)
        err = copy_group_signing(m, p);
    if (err == MSV_OK)
        err = copy_group_delta(m, p);
    if (err == MSV_OK)
        err = copy_profile(m->profile, p);
    if (err == MSV_OK)
        err = copy_join(m, p);
    return err;
}

msv_err msv_payload_parse(const uint8_t *in, size_t len, struct msv_payload **out)
{
    pb_payload *m;
    struct msv_payload *p;
    msv_err err;

    /* The largest valid payload is bounded well below this; refuse before unpacking. */
    if (len > 2 * MSV_TEXT_MAX + 2 * MSV_PARTICIPANTS_MAX * (MSV_HANDLE_MAX + 4) +
                  MSV_ATTACHMENTS_MAX * 2048 +
                  MSV_SYNC_ENTRIES_MAX * (MSV_SYNC_KEY_MAX + MSV_SYNC_VALUE_MAX + 32) +
                  MSV_MENTIONS_MAX * (MSV_HANDLE_MAX + 16) + MSV_URI_MAX + 128 + 4096 +
                  MSV_DELTA_LISTS * MSV_GROUP_DELTA_MAX * (MSV_HANDLE_MAX + 4) +
                  MSV_GROUP_STATE_INLINE_MAX + 2048)
        return MSV_ERR_TOO_BIG;
    m = msv__payload__payload__unpack(NULL, len, in);
    if (m == NULL)
        return MSV_ERR_PARSE;
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        msv__payload__payload__free_unpacked(m, NULL);
        return MSV_ERR_NOMEM;
    }
    err = copy_payload(m, p);
    if (err == MSV_OK && !payload_ok(p))
        err = MSV_ERR_PARSE;
    /* the unpacked copy held the same text and keys */
    msv_wipe(m->text.data, m->text.len);
    for (size_t i = 0; i < m->n_attachments; i++)
        msv_wipe(m->attachments[i]->key.data, m->attachments[i]->key.len);
    if (m->group_state_ref != NULL)
        msv_wipe(m->group_state_ref->key.data, m->group_state_ref->key.len);
    for (size_t i = 0; i < m->n_sync; i++)
        msv_wipe(m->sync[i]->value.data, m->sync[i]->value.len);
    msv_wipe(m->join_link_secret.data, m->join_link_secret.len);
    msv__payload__payload__free_unpacked(m, NULL);
    if (err != MSV_OK) {
        msv_payload_free(p);
        return err;
    }
    *out = p;
    return MSV_OK;
}
