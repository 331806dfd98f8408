/*
 * A device's local state: settings (including its sealed keys), contacts,
 * the device keys it has seen per handle, message history with full-text
 * search, and the outbox of messages not yet accepted by the relay. One
 * SQLite file per account, mode 0600.
 */
#ifndef MSV_STORE_CLIENT_DB_H
#define MSV_STORE_CLIENT_DB_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"
#include "missive/payload.h"

struct msv_client_db;

/* Opens or creates the database at path (0600) and brings its schema up to date. */
MSV_MUST_CHECK msv_err msv_client_db_open(const char *path, struct msv_client_db **out);
void msv_client_db_close(struct msv_client_db *db);

/* Settings: small named values. get: *value caller frees with free(); MSV_ERR_NOT_FOUND. */
MSV_MUST_CHECK msv_err msv_client_db_set(struct msv_client_db *db, const char *key,
                                         const void *value, size_t len);
MSV_MUST_CHECK msv_err msv_client_db_get(struct msv_client_db *db, const char *key, uint8_t **value,
                                         size_t *len);
/*
 * Opens a transaction that the operations called before msv_client_db_end() join (each of
 * theirs becomes a savepoint within it): all of their writes are kept, or none. Begins nest;
 * the database is locked for writing until the outermost ends, so hold none across a network
 * round.
 */
MSV_MUST_CHECK msv_err msv_client_db_begin(struct msv_client_db *db);
/* Ends msv_client_db_begin's transaction: kept if err is MSV_OK (returned if the commit fails),
 * else undone and err returned. */
MSV_MUST_CHECK msv_err msv_client_db_end(struct msv_client_db *db, msv_err err);
/* Sets two settings in one transaction: both or neither. */
MSV_MUST_CHECK msv_err msv_client_db_set2(struct msv_client_db *db, const char *key,
                                          const void *value, size_t len, const char *key2,
                                          const void *value2, size_t len2);
/* Removes a setting (nothing happens if it is absent). */
MSV_MUST_CHECK msv_err msv_client_db_unset(struct msv_client_db *db, const char *key);
/* Removes every setting whose key starts with prefix. */
MSV_MUST_CHECK msv_err msv_client_db_unset_prefix(struct msv_client_db *db, const char *prefix);
/*
 * Removes, in one statement, every setting whose key starts with prefix and whose value does
 * not begin with a big-endian u64 from lo to hi (one shorter than 8 bytes included).
 */
MSV_MUST_CHECK msv_err msv_client_db_unset_prefix_outside(struct msv_client_db *db,
                                                          const char *prefix, uint64_t lo,
                                                          uint64_t hi);

struct msv_setting {
    char *key;
    uint8_t *value;
    size_t len;
};
/* The settings whose keys start with prefix, at most max, by key. Free with msv_settings_free(). */
MSV_MUST_CHECK msv_err msv_client_db_settings(struct msv_client_db *db, const char *prefix,
                                              size_t max, struct msv_setting **out, size_t *count);
void msv_settings_free(struct msv_setting *s, size_t count);

/*
 * A consistent copy of the whole database at path (which must not exist, or
 * be empty), taken while it may be in use.
 */
MSV_MUST_CHECK msv_err msv_client_db_snapshot(struct msv_client_db *db, const char *path);
/* Rebuilds the file so that nothing deleted remains in it. */
MSV_MUST_CHECK msv_err msv_client_db_compact(struct msv_client_db *db);

/* Contacts: a name for one or more handles. */
MSV_MUST_CHECK msv_err msv_client_db_contact_add(struct msv_client_db *db, const char *name,
                                                 const char *handle);
/* Removes every handle of name; MSV_ERR_NOT_FOUND if there is none. */
MSV_MUST_CHECK msv_err msv_client_db_contact_remove(struct msv_client_db *db, const char *name);

struct msv_contact {
    char *name;
    char *handle;
};
/* All contacts (name NULL) or one name's handles, ordered. Free with msv_contacts_free(). */
MSV_MUST_CHECK msv_err msv_client_db_contacts(struct msv_client_db *db, const char *name,
                                              struct msv_contact **out, size_t *count);
void msv_contacts_free(struct msv_contact *c, size_t count);

/* The devices last seen for a handle, as the directory published them. */
struct msv_known_device {
    uint64_t device_id;
    uint32_t suite;
    uint8_t *identity;
    size_t identity_len;
    int64_t first_seen_ms;
};
MSV_MUST_CHECK msv_err msv_client_db_known_devices(struct msv_client_db *db, const char *handle,
                                                   struct msv_known_device **out, size_t *count);
/*
 * Replaces the known device set of handle. *changed is set to 1 when a device
 * was known before under the same id with another identity, or the set was
 * not empty and differs (a device added or removed); first sightings are not
 * changes.
 */
MSV_MUST_CHECK msv_err msv_client_db_known_replace(struct msv_client_db *db, const char *handle,
                                                   const struct msv_known_device *devs, size_t n,
                                                   int64_t now_ms, int *changed);
void msv_known_devices_free(struct msv_known_device *d, size_t count);

/* Message history. */
struct msv_message_rec {
    int64_t row;
    uint8_t message_id[16];
    char *conversation; /* the other party's handle, or "group:<hex>" */
    int outgoing;
    char *sender; /* handle */
    uint64_t sender_device;
    int kind;
    char *text;
    int64_t sent_at_ms;
    int64_t stored_at_ms;
    char *status;     /* outgoing: queued, sent; incoming: received */
    unsigned pending; /* steps still to take once stored: MSV_MESSAGE_* */
    int has_reply_to;
    uint8_t reply_to[16];  /* the message this one answers, if has_reply_to */
    uint32_t timer_s;      /* the disappearing-message timer it came under (0: none) */
    int64_t expires_at_ms; /* when it is to be deleted (0: not yet counting down) */
};

/* What a received message needs after it is stored, each step recorded when done. */
#define MSV_MESSAGE_TO_SHOW 1u      /* shown to the user (on_message) */
#define MSV_MESSAGE_RECEIPT_OWED 2u /* its delivery receipt handed to the outbox */
#define MSV_MESSAGE_REQUEST 4u      /* a message request: its receipts held back until accepted */
/* Stores a message; MSV_ERR_EXISTS (and nothing changes) if its id is stored already. */
MSV_MUST_CHECK msv_err msv_client_db_message_put(struct msv_client_db *db,
                                                 const struct msv_message_rec *m);
/* One message by id (free with msv_messages_free(m, 1)); MSV_ERR_NOT_FOUND if none. */
MSV_MUST_CHECK msv_err msv_client_db_message_get(struct msv_client_db *db,
                                                 const uint8_t message_id[16],
                                                 struct msv_message_rec **out);
/* Replaces a message's text and status (edits and unsends). */
MSV_MUST_CHECK msv_err msv_client_db_message_rewrite(struct msv_client_db *db,
                                                     const uint8_t message_id[16], const char *text,
                                                     const char *status);
/*
 * Applies edit edit_number (made at at_ms) to a message: its text becomes text,
 * its status "edited", and the version is kept beside the earlier ones (the
 * original as edit 0). An unsend (rewrite with status "unsent") drops them all.
 */
MSV_MUST_CHECK msv_err msv_client_db_message_edit(struct msv_client_db *db,
                                                  const uint8_t message_id[16],
                                                  uint32_t edit_number, const char *text,
                                                  int64_t at_ms);
/* The number of the last edit applied to a message; 0 if none. */
MSV_MUST_CHECK msv_err msv_client_db_edit_number(struct msv_client_db *db,
                                                 const uint8_t message_id[16],
                                                 uint32_t *edit_number);
struct msv_message_version {
    uint32_t edit_number; /* 0: the original */
    char *text;
    int64_t at_ms; /* when its author made it (their clock) */
};
/* A message's versions, oldest first; none if never edited. Free with msv_message_versions_free. */
MSV_MUST_CHECK msv_err msv_client_db_message_versions(struct msv_client_db *db,
                                                      const uint8_t message_id[16],
                                                      struct msv_message_version **out,
                                                      size_t *count);
void msv_message_versions_free(struct msv_message_version *v, size_t count);
/* MSV_OK if a message with this id is stored, MSV_ERR_NOT_FOUND if not. */
MSV_MUST_CHECK msv_err msv_client_db_message_known(struct msv_client_db *db,
                                                   const uint8_t message_id[16]);
MSV_MUST_CHECK msv_err msv_client_db_message_status(struct msv_client_db *db,
                                                    const uint8_t message_id[16],
                                                    const char *status);
/*
 * Messages, oldest first: of one conversation (or all, NULL), matching a
 * full-text query (or all, NULL), at most limit of the newest.
 */
MSV_MUST_CHECK msv_err msv_client_db_history(struct msv_client_db *db, const char *conversation,
                                             const char *search, size_t limit,
                                             struct msv_message_rec **out, size_t *count);
/* As msv_client_db_history, of the messages stored before the one in row before_row only. */
MSV_MUST_CHECK msv_err msv_client_db_history_before(struct msv_client_db *db,
                                                    const char *conversation, const char *search,
                                                    int64_t before_row, size_t limit,
                                                    struct msv_message_rec **out, size_t *count);
/* Records steps (MSV_MESSAGE_*) of a stored message as done. */
MSV_MUST_CHECK msv_err msv_client_db_message_done(struct msv_client_db *db,
                                                  const uint8_t message_id[16], unsigned steps);
/* MSV_OK if this account ever wrote in conversation, MSV_ERR_NOT_FOUND if never. */
MSV_MUST_CHECK msv_err msv_client_db_has_outgoing(struct msv_client_db *db,
                                                  const char *conversation);
/* The messages with steps still to take, oldest first (free with msv_messages_free). */
MSV_MUST_CHECK msv_err msv_client_db_messages_pending(struct msv_client_db *db,
                                                      struct msv_message_rec **out, size_t *count);
void msv_messages_free(struct msv_message_rec *m, size_t count);

/* One person's reaction to a message (emoji "" once taken away). */
struct msv_reaction_rec {
    uint8_t message_id[16];
    char *handle;
    char *emoji;
    int64_t sent_at_ms;      /* the reacting device's clock: orders one person's reactions */
    uint8_t reaction_id[16]; /* the reaction payload's id: breaks ties of sent_at_ms */
};
/*
 * Records r as handle's reaction to the message unless the one recorded is
 * newer (by sent_at_ms, then reaction_id): MSV_ERR_EXISTS then, and nothing
 * changes.
 */
MSV_MUST_CHECK msv_err msv_client_db_reaction_put(struct msv_client_db *db,
                                                  const struct msv_reaction_rec *r);
/*
 * The reactions shown on a message (none taken away), those with the same
 * emoji together, the emoji given first first. Free with msv_reactions_free.
 */
MSV_MUST_CHECK msv_err msv_client_db_reactions(struct msv_client_db *db,
                                               const uint8_t message_id[16],
                                               struct msv_reaction_rec **out, size_t *count);
void msv_reactions_free(struct msv_reaction_rec *r, size_t count);

/* The people a message names (struct msv_mention of missive/payload.h). */
MSV_MUST_CHECK msv_err msv_client_db_mentions_put(struct msv_client_db *db,
                                                  const uint8_t message_id[16],
                                                  const struct msv_mention *m, size_t n);
/* A message's mentions by start; free with msv_mentions_free. */
MSV_MUST_CHECK msv_err msv_client_db_mentions(struct msv_client_db *db,
                                              const uint8_t message_id[16],
                                              struct msv_mention **out, size_t *count);
void msv_mentions_free(struct msv_mention *m, size_t count);
/* MSV_OK if an unread message of conversation mentions handle, MSV_ERR_NOT_FOUND if none. */
MSV_MUST_CHECK msv_err msv_client_db_mentioned_unread(struct msv_client_db *db,
                                                      const char *conversation, const char *handle);
/*
 * Disappearing messages. expiry_start: a message with a timer that is not yet
 * counting down starts to (it was read): it expires at now_ms + its timer.
 * expired: the messages whose time has come by now_ms, at most limit, soonest
 * first. delete: removes a message and everything that refers to it (its
 * recipients, its outbox entry, its edit record, its words in the search
 * index) so that nothing of it stays in the files; a message not stored is no
 * error. Files a message names are the caller's to delete, before this.
 */
MSV_MUST_CHECK msv_err msv_client_db_message_expiry_start(struct msv_client_db *db,
                                                          const uint8_t message_id[16],
                                                          int64_t now_ms);
MSV_MUST_CHECK msv_err msv_client_db_messages_expired(struct msv_client_db *db, int64_t now_ms,
                                                      size_t limit, struct msv_message_rec **out,
                                                      size_t *count);
MSV_MUST_CHECK msv_err msv_client_db_message_delete(struct msv_client_db *db,
                                                    const uint8_t message_id[16]);
/* msv_client_db_message_delete for n messages at once (one transaction, one scrub of the index). */
MSV_MUST_CHECK msv_err msv_client_db_messages_delete(struct msv_client_db *db,
                                                     const uint8_t (*ids)[16], size_t n);
/* Every message with a disappearing-message timer, counting down or not (backups leave them out).
 */
MSV_MUST_CHECK msv_err msv_client_db_messages_disappearing(struct msv_client_db *db,
                                                           struct msv_message_rec **out,
                                                           size_t *count);

/* A conversation as a list shows it: newest first, with its unread incoming messages. */
struct msv_conversation_rec {
    char *conversation;
    int64_t last_row; /* its newest message's row: orders the list */
    int64_t last_ms;  /* when its newest message was sent */
    size_t unread;    /* incoming messages not yet marked read */
    /* the person's choices (msv_client_conversations() fills them; 0 here) */
    int pinned, archived;
    int64_t muted_until_ms; /* 0: not muted */
};
MSV_MUST_CHECK msv_err msv_client_db_conversations(struct msv_client_db *db,
                                                   struct msv_conversation_rec **out,
                                                   size_t *count);
void msv_conversations_free(struct msv_conversation_rec *c, size_t count);

/*
 * Groups: membership as this device last learned it. members: handles, one
 * per line. A group someone else made is an invitation (accepted 0) until
 * this account accepts it.
 */
struct msv_group_rec {
    uint8_t group_id[16];
    char *name;
    char *members;
    int accepted;
};
/* Creates or updates a group; accepted applies to a new group only (an update keeps it). */
MSV_MUST_CHECK msv_err msv_client_db_group_put(struct msv_client_db *db, const uint8_t group_id[16],
                                               const char *name, const char *members, int accepted,
                                               int64_t now_ms);
/* Records who invited this account to group_id, while it is not accepted. */
MSV_MUST_CHECK msv_err msv_client_db_group_invited(struct msv_client_db *db,
                                                   const uint8_t group_id[16], const char *handle);
/* The invitations handle made that wait to be accepted; *ids: caller frees (NULL when none). */
MSV_MUST_CHECK msv_err msv_client_db_invitations_by(struct msv_client_db *db, const char *handle,
                                                    uint8_t (**ids)[16], size_t *n);
/* Deletes group_id's record if it is an invitation (not accepted); MSV_ERR_NOT_FOUND if it is
 * none (accepted, or no such group). */
MSV_MUST_CHECK msv_err msv_client_db_invitation_drop(struct msv_client_db *db,
                                                     const uint8_t group_id[16]);
/* How many groups wait to be accepted, of those whose inviter is recorded: *from those handle
 * invited to, *all in all. */
MSV_MUST_CHECK msv_err msv_client_db_invitations(struct msv_client_db *db, const char *handle,
                                                 size_t *from, size_t *all);
/* Accepts an invitation; MSV_ERR_NOT_FOUND if there is no such group. */
MSV_MUST_CHECK msv_err msv_client_db_group_accept(struct msv_client_db *db,
                                                  const uint8_t group_id[16]);
/*
 * By id (name NULL), whatever its state, or by name (group_id NULL), among
 * accepted groups only; MSV_ERR_NOT_FOUND if none, MSV_ERR_EXISTS if more
 * than one accepted group has the name (a name never picks one of several).
 */
MSV_MUST_CHECK msv_err msv_client_db_group_get(struct msv_client_db *db, const uint8_t *group_id,
                                               const char *name, struct msv_group_rec *out);
MSV_MUST_CHECK msv_err msv_client_db_groups(struct msv_client_db *db, struct msv_group_rec **out,
                                            size_t *count);
void msv_group_clear(struct msv_group_rec *g);
void msv_groups_free(struct msv_group_rec *g, size_t count);

/*
 * The handles a sent message went to. is_recipient: MSV_OK if handle is one,
 * MSV_ERR_AUTH if it is not, MSV_ERR_NOT_FOUND if none are recorded (a
 * message sent before they were).
 */
MSV_MUST_CHECK msv_err msv_client_db_recipients_put(struct msv_client_db *db,
                                                    const uint8_t message_id[16],
                                                    const char *const *handles, size_t n);
MSV_MUST_CHECK msv_err msv_client_db_is_recipient(struct msv_client_db *db,
                                                  const uint8_t message_id[16], const char *handle);

/*
 * Devices of this account this device was told of (itself, the devices
 * there were when it started to watch the log, devices it approved or whose
 * approval by one of these it checked), by id and identity hash, with the
 * public identity (may be NULL); alarmed: seen in the log without that.
 */
MSV_MUST_CHECK msv_err msv_client_db_own_device_put(struct msv_client_db *db, uint64_t device_id,
                                                    const uint8_t identity_hash[32], uint32_t suite,
                                                    const uint8_t *identity, size_t identity_len,
                                                    int alarmed);
/* The public identity of a device recorded as this account's (not alarmed); *identity freed. */
MSV_MUST_CHECK msv_err msv_client_db_own_device_identity(struct msv_client_db *db,
                                                         uint64_t device_id, uint32_t *suite,
                                                         uint8_t **identity, size_t *len);
/* MSV_OK (with *alarmed) if the device is recorded, MSV_ERR_NOT_FOUND if not. */
MSV_MUST_CHECK msv_err msv_client_db_own_device_get(struct msv_client_db *db, uint64_t device_id,
                                                    const uint8_t identity_hash[32], int *alarmed);

/*
 * The outbox: payloads waiting for the relay's acceptance, by message id.
 * put stores the payload and, in the same transaction, its history record
 * (history may be NULL: control messages are not history), so a message is
 * never shown as queued without being in the outbox. settle takes it out of
 * the outbox and, in the same transaction, sets its history status (status
 * may be NULL: unchanged); a message not in the outbox is no error.
 */
MSV_MUST_CHECK msv_err msv_client_db_outbox_put(struct msv_client_db *db,
                                                const struct msv_message_rec *history,
                                                const uint8_t message_id[16],
                                                const char *recipients, const uint8_t *payload,
                                                size_t len, int64_t now_ms);
MSV_MUST_CHECK msv_err msv_client_db_outbox_settle(struct msv_client_db *db,
                                                   const uint8_t message_id[16],
                                                   const char *status);
/*
 * A message sent to all of its recipients but some (refused: their device lists did not check
 * out) stays in the outbox owed to those alone: its recipients become them, and its history
 * status status (NULL: unchanged), in one transaction.
 */
MSV_MUST_CHECK msv_err msv_client_db_outbox_owed(struct msv_client_db *db,
                                                 const uint8_t message_id[16],
                                                 const char *recipients, const char *status);
struct msv_outbox_rec {
    uint8_t message_id[16];
    char *recipients; /* handles, one per line */
    uint8_t *payload;
    size_t payload_len;
    int owed; /* the others have it: it goes to recipients alone (msv_client_db_outbox_owed) */
    int64_t created_ms; /* when it was queued */
};
MSV_MUST_CHECK msv_err msv_client_db_outbox(struct msv_client_db *db, struct msv_outbox_rec **out,
                                            size_t *count);
void msv_outbox_free(struct msv_outbox_rec *o, size_t count);

/*
 * Envelopes this device has read, by a 32-byte digest of each: replay
 * protection that outlives the process, for every kind of envelope. seen:
 * MSV_OK if digest was recorded, MSV_ERR_NOT_FOUND if not; read records it.
 */
MSV_MUST_CHECK msv_err msv_client_db_envelope_seen(struct msv_client_db *db,
                                                   const uint8_t digest[32]);
MSV_MUST_CHECK msv_err msv_client_db_envelope_read(struct msv_client_db *db,
                                                   const uint8_t digest[32], int64_t now_ms);
/* Forgets the digests recorded before before_ms (what is older is refused by its age). */
MSV_MUST_CHECK msv_err msv_client_db_envelopes_forget(struct msv_client_db *db, int64_t before_ms);

/*
 * State synced between the account's own devices: "sync:" settings and
 * contacts, each change recorded (by triggers, whoever writes) with a stamp
 * above the key's last one and marked pending until sent. list: the pending
 * entries (pending_only) or all, oldest stamp first, at most max; free with
 * msv_sync_entries_free(). sent: the entry no longer pending, unless changed
 * since. resend_all: everything pending again (a snapshot for a new device).
 * apply: a change from another device, written only if newer than what is
 * held (*applied 1), and not recorded as pending.
 */
MSV_MUST_CHECK msv_err msv_client_db_sync_list(struct msv_client_db *db, int pending_only,
                                               size_t max, struct msv_sync_entry **out,
                                               size_t *count);
MSV_MUST_CHECK msv_err msv_client_db_sync_sent(struct msv_client_db *db,
                                               const struct msv_sync_entry *e);
MSV_MUST_CHECK msv_err msv_client_db_sync_resend_all(struct msv_client_db *db);
MSV_MUST_CHECK msv_err msv_client_db_sync_apply(struct msv_client_db *db,
                                                const struct msv_sync_entry *e, int *applied);
void msv_sync_entries_free(struct msv_sync_entry *e, size_t count);

/* The setting of a history copy that names its device's account directory. */
#define MSV_LINK_SOURCE_DIR "link:source-dir"
/*
 * Takes the history (messages with their recipients, versions, mentions and
 * reactions) and the groups with their signed states from the state
 * database at path (another device of the account's copy, brought to this
 * schema first) into db, oldest first; rows and settings db holds already
 * stay as they are. The messages' file lines are moved from the copy's
 * MSV_LINK_SOURCE_DIR to dir (this device's account directory). All or
 * nothing.
 */
MSV_MUST_CHECK msv_err msv_client_db_import_history(struct msv_client_db *db, const char *path,
                                                    const char *dir);

#endif
