/*
 * The plaintext inside a per-device envelope: one versioned structure for
 * messages, receipts, typing notices, edits, unsends and group changes
 * (proto/payload.proto, limits in docs/wire.md).
 */
#ifndef MISSIVE_PAYLOAD_H
#define MISSIVE_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

#define MSV_PAYLOAD_VERSION 1
#define MSV_ID_LEN 16
#define MSV_LOG_HEAD_LEN 112
#define MSV_LOG_EPOCH_LEN 96
#define MSV_TEXT_MAX (64u * 1024u)
#define MSV_HANDLE_MAX 256
#define MSV_PARTICIPANTS_MAX 256
#define MSV_GROUP_NAME_MAX 256
#define MSV_ATTACHMENTS_MAX 32
#define MSV_URI_MAX 1024
#define MSV_FILE_NAME_MAX 255
#define MSV_MIME_MAX 127
#define MSV_REACTION_MAX 32 /* bytes of one reaction's emoji */
#define MSV_GROUP_HASH_LEN 32
#define MSV_GROUP_SIGNATURE_MAX 72
#define MSV_JOIN_KEY_LEN 32 /* an invite link's secret, and a join request's proof */
#define MSV_MENTIONS_MAX 64
/* A group change as a delta (docs/groups.md): handles in each of its lists, and the whole
 * state's encoding inline (longer: an attachment of at most MSV_GROUP_STATE_MAX bytes) */
#define MSV_GROUP_DELTA_MAX 256
#define MSV_GROUP_STATE_INLINE_MAX (4u * 1024u)
#define MSV_GROUP_STATE_MAX (1024u * 1024u)
#define MSV_EDITS_MAX 100 /* edits of one message: its versions kept are bounded so */
/* A disappearing-message timer: 0 (off) or from 30 s to 4 weeks. */
#define MSV_TIMER_MIN_S 30u
#define MSV_TIMER_MAX_S (28u * 24u * 3600u)

enum msv_payload_kind {
    MSV_KIND_MESSAGE = 1,
    MSV_KIND_RECEIPT_DELIVERED = 2,
    MSV_KIND_RECEIPT_READ = 3,
    MSV_KIND_TYPING = 4,
    MSV_KIND_EDIT = 5,
    MSV_KIND_UNSEND = 6,
    MSV_KIND_GROUP_CHANGE = 7,
    MSV_KIND_SESSION_RESET = 8,
    MSV_KIND_REACTION = 9,
    MSV_KIND_TIMER = 10,
    MSV_KIND_SYNC = 11,
    MSV_KIND_GROUP_JOIN = 12,
    MSV_KIND_PROFILE_KEY = 13,
    MSV_KIND_LINK_HISTORY = 14,
    MSV_KIND_GROUP_COPY = 15,
};

/* Synced state (kind MSV_KIND_SYNC): keys "sync:..." or "contact:NAME\nHANDLE". */
#define MSV_SYNC_ENTRIES_MAX 64
#define MSV_SYNC_KEY_MAX 512
#define MSV_SYNC_VALUE_MAX 1024

struct msv_sync_entry {
    char *key;
    uint8_t *value; /* may be NULL when value_len is 0 */
    size_t value_len;
    bool deleted;
    uint64_t stamp; /* not 0 */
};

struct msv_attachment_ref {
    char *uri;
    uint8_t key[32];
    uint8_t sha256[32];
    uint8_t sha1[20];
    uint64_t size;
    char *name; /* may be NULL */
    char *mime; /* may be NULL */
};

/* Bytes [start, start + length) of a message's text name handle. */
struct msv_mention {
    uint32_t start;
    uint32_t length;
    char *handle;
};
/* Where a profile lies (kinds MESSAGE and PROFILE_KEY); docs/crypto.md "Profiles". */
#define MSV_PROFILE_SALT_LEN 32
struct msv_profile_ref {
    char *uri; /* "blob:" HEX */
    uint8_t sha256[32];
    uint64_t size; /* ciphertext bytes, 1..MSV_PROFILE_BLOB_MAX */
    uint8_t salt[MSV_PROFILE_SALT_LEN];
};
#define MSV_PROFILE_NAME_MAX 64
#define MSV_PROFILE_AVATAR_MAX (1024u * 1024u)
#define MSV_PROFILE_BLOB_MAX (MSV_PROFILE_AVATAR_MAX + MSV_PROFILE_NAME_MAX + 16)

/*
 * All strings are NUL-terminated UTF-8 without embedded NULs; NULL where
 * absent. Owned by the payload when it came from msv_payload_parse().
 */
#define MSV_PROFILE_KEY_LEN 32

/* The lists of a group change's delta. */
enum msv_group_delta {
    MSV_DELTA_ADDED,
    MSV_DELTA_REMOVED,
    MSV_DELTA_PROMOTED,
    MSV_DELTA_DEMOTED,
    MSV_DELTA_LISTS
};

struct msv_payload {
    enum msv_payload_kind kind;
    uint8_t message_id[MSV_ID_LEN];
    uint64_t sent_at_ms;
    char *text;
    char **participants;
    size_t participant_count;
    bool has_group;
    uint8_t group_id[MSV_ID_LEN];
    char *group_name;
    bool has_reply_to;
    uint8_t reply_to[MSV_ID_LEN];
    bool has_target;
    uint8_t target_id[MSV_ID_LEN]; /* receipts, edits and unsends */
    struct msv_attachment_ref *attachments;
    size_t attachment_count;
    bool has_log_head;
    uint8_t log_head[MSV_LOG_HEAD_LEN];   /* opaque here; see client/transparency.h */
    bool has_log_epoch;                   /* only with has_log_head */
    uint8_t log_epoch[MSV_LOG_EPOCH_LEN]; /* the key directory's root at its size, signed */
    bool has_profile_key;
    uint8_t profile_key[MSV_PROFILE_KEY_LEN]; /* the sender's, for sealed sends to it */
    uint32_t edit_number;        /* edits: 1 for a message's first edit, then 2, ...; else 0 */
    struct msv_sync_entry *sync; /* kind MSV_KIND_SYNC only */
    size_t sync_count;
    /* group changes only, all or none (docs/groups.md): the new state's admins (a subset of
     * participants), its epoch (from 1), the previous state's hash, the author's signature */
    char **group_admins;
    size_t group_admin_count;
    uint64_t group_epoch;
    bool has_group_signature;
    uint8_t group_prev_hash[MSV_GROUP_HASH_LEN];
    uint8_t group_signature[MSV_GROUP_SIGNATURE_MAX];
    size_t group_signature_len;
    /* or, in place of participants and group_admins, the delta form: the new state's hash and
     * name, what changed, and the whole state inline (group_state) or as an attachment (for
     * a device that holds none) */
    bool has_group_state_hash;
    uint8_t group_state_hash[MSV_GROUP_HASH_LEN];
    char **group_delta[MSV_DELTA_LISTS];
    size_t group_delta_count[MSV_DELTA_LISTS];
    uint8_t *group_state;
    size_t group_state_len;
    bool has_group_state_ref;
    struct msv_attachment_ref group_state_ref;
    /* GROUP_COPY (a group as the approving device holds it, for a new device of its account):
     * the group's id, its whole state (group_state or group_state_ref) and whether the account
     * took it; no hash, delta or signature */
    bool group_accepted;
    struct msv_mention *mentions; /* messages: ranges of text, on characters */
    size_t mention_count;
    uint32_t timer_s; /* messages: the timer they were sent under; TIMER: the new one */
    bool has_profile;
    struct msv_profile_ref profile; /* messages and PROFILE_KEY only */
    /* GROUP_JOIN only, with the group's id: a request (join_proof) or a link's settings
     * (join_link_version from 1; the secret absent when links are off), never both */
    bool has_join_proof;
    uint8_t join_proof[MSV_JOIN_KEY_LEN];
    uint64_t join_link_version;
    bool has_join_link_secret;
    uint8_t join_link_secret[MSV_JOIN_KEY_LEN];
    bool join_link_approval;
    /* group MESSAGEs only: the sender holds no usable state of the group's MLS group, and asks
     * to be added to it again */
    bool mls_outside;
};

/*
 * Checks p against the rules of its kind and the limits above, then encodes
 * it. MSV_ERR_INVALID if p breaks a rule. *out: caller frees with free().
 */
MSV_MUST_CHECK msv_err msv_payload_encode(const struct msv_payload *p, uint8_t **out,
                                          size_t *out_len);

/*
 * Parses and checks an encoded payload; anything that msv_payload_encode()
 * would refuse is MSV_ERR_PARSE, an unknown version MSV_ERR_UNSUPPORTED.
 * Unknown fields are ignored. Caller frees *out with msv_payload_free().
 */
MSV_MUST_CHECK msv_err msv_payload_parse(const uint8_t *in, size_t len, struct msv_payload **out);

/* Frees a parsed payload, wiping its text and keys. NULL is a no-op. */
void msv_payload_free(struct msv_payload *p);

/*
 * 1 if emoji can be a reaction: 1 to MSV_REACTION_MAX bytes of UTF-8 without
 * spaces or control characters (C0, DEL, C1).
 */
int msv_payload_reaction_is_valid(const char *emoji);
/* Whether e could go in a SYNC payload (key, stamp and value within the rules). */
bool msv_sync_entry_is_valid(const struct msv_sync_entry *e);

/* Returns a static name for kind ("message", "receipt-delivered", ...). */
const char *msv_payload_kind_name(enum msv_payload_kind kind);

#endif
