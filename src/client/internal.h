/*
 * What the parts of the client library share (account, directory, send,
 * groups, control, receive, monitor), and no one outside them: the library's
 * interface is client/client.h.
 */
#ifndef MSV_CLIENT_INTERNAL_H
#define MSV_CLIENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "client/client.h"

struct msv_mls_leaf;

#define TIMEOUT_MS 15000
#define SEND_TRIES 3
#define SEEN_KEEP_MS (180LL * 24 * 3600 * 1000)
#define LONG_TEXT_MIME "text/x-missive-long-message"
#define MEMBERS_MAX 1024 /* people in a group (docs/groups.md, "Limits") */
/* a group message names the members (participants) of a group of at most this many */
#define GROUP_LIST_MAX MSV_PARTICIPANTS_MAX

/*
 * Handles (client/handles.c): whether handle is this account's, as this device knows (the
 * server's last list, and every handle watched).
 */
int client_is_own_handle(struct msv_client *c, const char *handle);
/* Adds handle to those this device watches as its account's (a list that only grows). */
msv_err client_handle_watch(struct msv_client *c, const char *handle);
/* Ends the watch of handle: this device removed it, or read its tombstone in the log. */
msv_err client_handle_unwatch(struct msv_client *c, const char *handle);
/*
 * Another device of the account removed handle (its handle_removed notice): the tombstone the
 * monitor will read is expected (setting client_removed_key), where one the account never asked
 * for raises the alarm.
 */
msv_err client_handle_removed(struct msv_client *c, const char *handle);
void client_removed_key(char key[300], const char *handle);
/* The handle a send to peer names this account by (c->send_as holds it). */
const char *client_send_as(struct msv_client *c, const char *peer);
/*
 * A payload to two people, from sender: the handle of this account in it is the one to write
 * to the other as from now on (the one they wrote to; or the one this account wrote as).
 */
msv_err client_note_addressed(struct msv_client *c, const char *sender, char *const *participants,
                              size_t n);
/* gone was removed from the account, whose first handle is now first. */
msv_err client_handle_gone(struct msv_client *c, const char *gone, const char *first);
/* What an approval signs: "MSV-approve-v1" || u8 len || handle || u64be device id || hash. */
size_t client_approval_message(const char *handle, uint64_t device_id, const uint8_t hash[32],
                               uint8_t out[14 + 1 + 255 + 8 + 32]);

/* The identity hash of a device as the directory or a notice describes it. */
msv_err client_device_hash(uint32_t suite, const uint8_t *identity, size_t len, uint8_t h[32]);

/*
 * Sends what the outbox still holds (messages a lost connection left
 * queued), oldest first; each goes to the participants its payload names.
 * One owed to handles whose directory entries did not check out is given up
 * MSV_OUTBOX_OWED_DAYS after it was queued, told.
 */
#define MSV_OUTBOX_OWED_DAYS 30
msv_err client_flush_outbox(struct msv_client *c);
/* Whether the outbox holds message id (group_id NULL), or else a payload of group group_id. */
int client_outbox_holds(struct msv_client *c, const uint8_t *id, const uint8_t *group_id);
/* The outbox a connection made under a lock left (outbox_deferred), sent now if no lock is held
 * and a connection is up: after a command (msv_client_sync_flush), when no send is under way. */
void client_outbox_later(struct msv_client *c);

msv_err client_join_members(char *const *members, size_t n, char **out);

void client_pending_key(uint64_t device_id, char key[40]);

/* Records c->device_id as this device's (and among the account's own devices). */
msv_err client_save_device_id(struct msv_client *c);

/*
 * A fresh connection for the unauthenticated account requests: to the
 * address that answered last, else to the next that answers (a cluster's
 * node that went away hands its devices to the others).
 */
msv_err client_plain_conn(struct msv_client *c, struct msv_conn **out);

/* Remembers what the directory says of a handle; reports a changed device set. */
msv_err client_remember(struct msv_client *c, const Msv__Wire__HandleDevices *hd);

/* The handles a conversation reaches: its group's members (g filled), or the other person;
 * caller frees *targets with free(). */
msv_err client_conversation_targets(struct msv_client *c, const char *conversation,
                                    struct msv_group_rec *g, char ***targets, size_t *n);

/* The disappearing-message timer a message sent now to conversation carries (0: none). */
uint32_t client_timer_for_send(struct msv_client *c, const char *conversation);

/*
 * Applies a TIMER payload from sender (a participant of conversation) unless
 * a newer change is in force: recorded, kept in history as a notice, shown.
 */
msv_err client_take_timer(struct msv_client *c, const char *sender, uint64_t device,
                          const struct msv_payload *p, const char *conversation,
                          void (*on_message)(void *, const struct msv_incoming *), void *ctx);

/*
 * Deletes the files received with a message (attachments/<message id>-*); a
 * file that will not go is MSV_ERR_IO, so that the message (and the reason to
 * try again) stays.
 */
msv_err client_delete_files(struct msv_client *c, const uint8_t id[16]);

/*
 * The sending device's copy of the files of its message id: each saved under
 * attachments/ as a received one is, and *stored (caller frees) is text with
 * the same "[file: PATH (N bytes)]" line per file (or "[file NAME not
 * available: ...]" when it could not be kept) that history shows and lists
 * under "attachments". MSV_ERR_NOMEM only; a file not kept does not stop the send.
 */
msv_err client_keep_sent_files(struct msv_client *c, const uint8_t id[16], const char *text,
                               const struct msv_file *files, size_t n, char **stored);

/* Sends a control payload about target to the people of a conversation. */
msv_err client_send_control(struct msv_client *c, enum msv_payload_kind kind,
                            const uint8_t target[16], const char *text, const char *conversation);

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
                            void (*progress)(uint64_t, uint64_t), uint8_t message_id[16]);

/* Sends p (its kind and content set) to the people of a conversation (a handle or "group:<hex>").
 */
msv_err client_send_to_conversation(struct msv_client *c, struct msv_payload *p,
                                    const char *conversation);

/*
 * Applies a reaction from sender (src/client/reactions.c): kept only if sender
 * is in the conversation of a message this device has, and newer than the
 * reaction of sender's kept for it.
 */
msv_err client_take_reaction(struct msv_client *c, const char *sender, const struct msv_payload *p,
                             void (*on_message)(void *, const struct msv_incoming *), void *ctx);
/*
 * A delivery from blocked handle, of payload kind (0: unreadable), is dropped
 * unanswered: counted, and told to on_message (may be NULL) as
 * MSV_INCOMING_BLOCKED.
 */
msv_err client_drop_blocked(struct msv_client *c, const char *handle, int kind,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx);
/*
 * A new one-to-one message from sender (src/client/msgrequests.c): *request
 * set if it is a message request (the handle's state becomes pending).
 */
msv_err client_request_check(struct msv_client *c, const char *sender, int *request);
/* Sends the receipts m held back as a request, if its handle is no longer one. */
msv_err client_request_release(struct msv_client *c, const struct msv_message_rec *m);
/* Writing to handles accepts those that are pending requests. */
msv_err client_requests_written(struct msv_client *c, const char *const *handles, size_t n);
/* The first of the handles that is blocked; NULL if none is. */
const char *client_blocked_among(struct msv_client *c, const char *const *handles, size_t n);
/* MSV_ERR_INVALID (why says which) if any of the handles is blocked. */
msv_err client_refuse_blocked(struct msv_client *c, const char *const *handles, size_t n);
/* Whether privacy setting name ("read-receipts", "typing") is on; on if it cannot be read. */
int client_privacy_on(struct msv_client *c, const char *name);
/* Whether the one-a-line list of handles v (len bytes) holds handle (src/client/handles.c). */
int client_lines_name(const uint8_t *v, size_t len, const char *handle);
/* The same of the list in setting key (none: no). */
int client_setting_names(struct msv_client *c, const char *key, const char *handle);
/* Whether handle was taken out of group gid by another member since it was last in it. */
int client_group_was_removed(struct msv_client *c, const uint8_t gid[16], const char *handle);
/*
 * Checks a group change from author's device against the group state this
 * device holds (docs/groups.md) and applies it if it passes. *applied: 1 if
 * it did; *text (caller frees) says for history what the change did, or why
 * it was refused. An error only for failures of this device (storage, memory).
 */
msv_err client_group_take(struct msv_client *c, const char *author, uint64_t device,
                          const struct msv_payload *p, int *applied, char **text);

/* The public identity of a device of handle: from the known devices, else from the directory. */
msv_err client_sender_identity(struct msv_client *c, const char *handle, uint64_t device,
                               struct msv_public_identity **out);

/*
 * Sends message p (its kind, text and reply_to set) to the group named or
 * identified by name, which this account must have accepted.
 */
msv_err client_group_send(struct msv_client *c, const char *name, struct msv_payload *p,
                          const struct msv_file *files, size_t n_files,
                          void (*progress)(uint64_t done, uint64_t total), uint8_t message_id[16]);

/* Whether handle is one of the people of conversation: this account, the other person, a
 * member of its group. */
int client_in_conversation(struct msv_client *c, const char *conversation, const char *handle);

/*
 * The "@name" of text that name one of members (by handle, or by a contact
 * name of one): at most MSV_MENTIONS_MAX ranges into out, whose handles point
 * into members. None for text too long to go inline.
 */
size_t client_find_mentions(struct msv_client *c, const char *text, char *const *members, size_t n,
                            struct msv_mention *out);

/* Stores the mentions of p that name people of conversation; the others are ignored. */
msv_err client_keep_mentions(struct msv_client *c, const uint8_t message_id[16],
                             const char *conversation, const struct msv_payload *p);
/*
 * A new message in conversation: an archived one that is not muted is archived
 * no more, and on_message (may be NULL) is told (MSV_INCOMING_CONVERSATION).
 */
msv_err client_conversation_arrived(struct msv_client *c, const char *conversation,
                                    void (*on_message)(void *, const struct msv_incoming *),
                                    void *ctx);

/* Splits a member list (one handle per line) in place into members[] (MEMBERS_MAX slots). */
size_t client_split_members(char *list, char **members);
/* The handles of a member list (one per line) in one block: caller frees *members with free(). */
msv_err client_members_of(const char *list, char ***members, size_t *n);

/* Applies a receipt, typing notice, edit or unsend from sender. */
msv_err client_take_control(struct msv_client *c, const char *sender, uint64_t device,
                            const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx);
/* Keeps an edit or unsend (pt, pt_len bytes) from sender's device of a message this device does
 * not have yet, to be applied when it comes (client_changes_apply). */
msv_err client_change_keep(struct msv_client *c, const char *sender, uint64_t device,
                           const uint8_t target[16], const uint8_t *pt, size_t pt_len);
/* Applies the changes kept for message target from author, its message now stored (*applied:
 * whether there were any); another's stay. */
msv_err client_changes_apply(struct msv_client *c, const uint8_t target[16], const char *author,
                             void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                             int *applied);
/* The id a message of sender's device is stored under when another's came first under id. */
void client_reused_id(const uint8_t id[16], const char *sender, uint64_t device,
                      uint8_t local_id[16]);
/* The message an edit or unsend from sender's device names by target_id: the one under that id,
 * or, when another's message holds it, sender's own kept under an id of its own (any of its
 * known devices'), if it has one (*out then the other's). Free *out with msv_messages_free(). */
msv_err client_change_target(struct msv_client *c, const uint8_t target_id[16], const char *sender,
                             uint64_t device, struct msv_message_rec **out);

/* A group this account is in, by name or id; an invitation is MSV_ERR_NOT_FOUND until accepted. */
msv_err client_joined_group(struct msv_client *c, const char *which, struct msv_group_rec *g);

/*
 * A group g as this device holds it, for a new device of the account: its state (groups.c's
 * encoding; built from the record when it has no signed state, *signed_state 0) and the state
 * before it (*prev NULL if none). Caller frees *state and *prev.
 */
msv_err client_group_export(struct msv_client *c, const struct msv_group_rec *g, uint8_t **state,
                            size_t *state_len, uint8_t **prev, size_t *prev_len, int *signed_state);
/* Holds group gid as client_group_export gave it (each state checked as it is decoded). */
msv_err client_group_install(struct msv_client *c, const uint8_t gid[16], const uint8_t *state,
                             size_t state_len, const uint8_t *prev, size_t prev_len,
                             int signed_state, int accepted);

/*
 * A GROUP_COPY of each group this device holds a signed state of and is in, to this account's
 * devices (for one just approved; those that hold the group ignore it); owed no more after.
 * *failed: the copies that could not be made (c->why says why the first), each owed (retried
 * by client_groups_copy_due).
 */
msv_err client_groups_copy(struct msv_client *c, size_t *failed);
/* A GROUP_COPY payload from device of sender: the group held as it says, if sender is this
 * account and this device holds no signed state of it (docs/groups.md, "A new device's
 * groups"); refusals are told (client_group_notice). An error leaves the delivery to be taken
 * again. */
msv_err client_take_group_copy(struct msv_client *c, const char *sender, uint64_t device,
                               const struct msv_payload *p);
/* Records that this account's devices are owed a copy of each group (before an approval goes);
 * *created: it was not owed already. client_groups_copy_unowe forgets it. */
msv_err client_groups_copy_owe(struct msv_client *c, int *created);
msv_err client_groups_copy_unowe(struct msv_client *c);
/* The copies owed sent: all of them if owed (a process stopped after an approval), then each
 * that could not be made, at most hourly and for a week. */
msv_err client_groups_copy_due(struct msv_client *c);
/* A notice kept in group gid's history and told through on_mls_notice. */
msv_err client_group_notice(struct msv_client *c, const uint8_t gid[16], const char *text);
/* Approves device_id (msv_client_approve_device), its groups copied to it if copy_groups. */
msv_err client_approve_device(struct msv_client *c, uint64_t device_id, int copy_groups);

/* A GROUP_JOIN payload from sender (src/client/invites.c): a link's settings or a request. */
msv_err client_take_join(struct msv_client *c, const char *sender, const struct msv_payload *p,
                         void (*on_message)(void *, const struct msv_incoming *), void *ctx);

/* The epoch and hash of the signed state this device holds of group gid, and (unless NULL) its
 * admins, one a line (free()); MSV_ERR_NOT_FOUND if it holds none. */
msv_err client_group_state_digest(struct msv_client *c, const uint8_t gid[16], uint64_t *epoch,
                                  uint8_t hash[32], char **admins);
/* What the group context names of an invite link's secret: SHA-256("MSV-group-link-v1" ||
 * group id || secret). */
void client_group_link_hash(const uint8_t gid[16], const uint8_t secret[MSV_JOIN_KEY_LEN],
                            uint8_t out[32]);
/* The version, flags and (all zero while it is off) secret's hash of the invite link this device
 * holds of group gid; version 0 and off if none. */
msv_err client_group_link_digest(struct msv_client *c, const uint8_t gid[16], uint64_t *version,
                                 uint8_t *flags, uint8_t hash[32]);

/*
 * The group context extension (src/client/groupctx.c; docs/crypto.md, "The group context"):
 * what a group's MLS group carries in its GroupContext of its signed state and invite link.
 */
struct client_group_ctx {
    int present;          /* the GroupContext carries the extension */
    size_t others;        /* extensions of other types it carries */
    uint64_t state_epoch; /* the signed state's */
    uint8_t state_hash[32];
    char *admins; /* one a line */
    size_t n_admins;
    uint64_t link_version;
    uint8_t link_flags; /* the invite link's: 1 on, 2 approval */
    uint8_t link_hash[32];
};
/* Reads a GroupContext's extensions (an encoded Extension list without its length) into *g
 * (present 0 without ours). Anything malformed: MSV_ERR_PARSE, *g cleared. */
msv_err client_group_ctx_parse(const uint8_t *ext, size_t len, struct client_group_ctx *g);
void client_group_ctx_clear(struct client_group_ctx *g);
/* Whether handle is an admin the extension names. */
int client_group_ctx_admin(const struct client_group_ctx *g, const char *handle);
/*
 * The extension list an admin's device commits for group gid over cur (the GroupContext's):
 * ours alone, from the signed state and invite link this device holds, each part only if newer
 * than cur's (a greater state epoch, a greater link version; of the same, the one first by the
 * rule for two of one version). Caller frees *ext. MSV_ERR_PARSE if cur does not parse.
 */
msv_err client_group_ctx_make(struct msv_client *c, const uint8_t gid[16], const uint8_t *cur,
                              size_t cur_len, uint8_t **ext, size_t *len);

/* The most an invite link's version moves on in one step a device takes (its settings, or a
 * group context): no admin's changes move it that far while another's are on their way, and a
 * version of 2^32 - 1, which would stop every later change, takes 65,536 steps. */
#define CLIENT_LINK_STEP_MAX 65536

/* The group context of group gid's MLS group as this device holds it (src/client/mlsgroups.c;
 * present 0 if it holds none). */
msv_err client_mls_group_ctx(struct msv_client *c, const uint8_t gid[16],
                             struct client_group_ctx *g);

/*
 * Group invitations waiting to be accepted (a group someone else made, with this account in
 * it): at most CLIENT_INVITES_FROM_ONE from one handle and CLIENT_INVITES_MAX in all. Before a
 * message of a group this device does not know, from inviter (a handle not this account's),
 * creates it: *taken 0 if the invitation is dropped (told at most once a day for each inviter,
 * or once a day in all). The group made, its inviter is recorded (msv_client_db_group_invited).
 */
#define CLIENT_INVITES_FROM_ONE 20
#define CLIENT_INVITES_MAX 1000
MSV_MUST_CHECK msv_err client_invitation_check(struct msv_client *c, const uint8_t gid[16],
                                               const char *inviter, int *taken);
/* How often, in this process, the session lock was taken under the MLS lock: the wrong order
 * (sessions.c); 0 unless a path breaks it. */
unsigned long client_lock_order_breaks(void);
/* Forgets the invitations inviter made, with their messages (on a block). */
MSV_MUST_CHECK msv_err client_invitations_forget(struct msv_client *c, const char *inviter);
/* Forgets invitation gid, if it still is one (*dropped): its record, its signed states and its
 * MLS state (groups.c). */
MSV_MUST_CHECK msv_err client_group_forget(struct msv_client *c, const uint8_t gid[16],
                                           int *dropped);
/* Keeps text in conversation's history as a notice of this device's (status "notice"; send.c):
 * no message written there (msv_client_db_has_outgoing). */
MSV_MUST_CHECK msv_err client_notice_keep(struct msv_client *c, const char *conversation,
                                          const char *text);
/* Deletes the messages of conversation, with their files (msgrequests.c). */
MSV_MUST_CHECK msv_err client_delete_conversation(struct msv_client *c, const char *conversation);
/* Whether this account asked to join group gid by a link naming author as an admin. */
int client_join_invited_by(struct msv_client *c, const uint8_t gid[16], const char *author);
/* After author's change of group gid was applied: accepts the group if this account asked to
 * join it by a link naming author as an admin. */
msv_err client_join_arrived(struct msv_client *c, const uint8_t gid[16], const char *author);

/* Applies a SYNC payload from sender's device: only if sender is this account (else ignored). */
/* A LINK_HISTORY payload from device of sender (src/client/link_history.c): the history this
 * new device awaits is kept and imported, each step told to on_message. */
msv_err client_take_link_history(struct msv_client *c, const char *sender, uint64_t device,
                                 const struct msv_payload *in,
                                 void (*on_message)(void *, const struct msv_incoming *),
                                 void *ctx);
msv_err client_take_sync(struct msv_client *c, const char *sender, uint64_t device,
                         const struct msv_payload *p,
                         void (*on_message)(void *, const struct msv_incoming *), void *ctx);

/* Message id goes to handle authenticated: counted, and told through on_unsealed, once (a
 * message is tried again after a lost connection, and from the outbox). */
msv_err client_unsealed(struct msv_client *c, const uint8_t id[16], const char *handle);

/*
 * The directory's answer, checked. An answer too big for a frame (accounts of
 * many devices) is asked for in halves, each checked against the log.
 */
msv_err client_verified_lookup(struct msv_client *c, const char *const *handles, size_t n,
                               msv_frame **result);
/*
 * A sender's checks of the signed device lists of r, an answer msv_kt_check_lookup accepted
 * (docs/transparency.md, "Signed device lists"): devices without a valid approval chain are
 * taken out of r and told (on_devlist), a new root is told, and what was accepted is pinned.
 * MSV_ERR_AUTH (c->why) for a list that does not check out as a whole.
 */
msv_err client_devlist_check(struct msv_client *c, Msv__Wire__LookupResponse *r);
/* Takes every device out of hd (their records freed): nothing is sealed to any. */
void client_devices_drop(Msv__Wire__HandleDevices *hd);

/*
 * The handles a send leaves out because what the directory shows of them does not check out (a
 * result of its lookup failing its own checks, or its signed device list as a whole), each with
 * why and the error (send.c): the others are sent to, and these never with keys unchecked.
 * Each handle once; at most one per target of a send.
 */
struct client_refusals {
    size_t n;
    char **handle; /* as the send named it */
    char **why;
    msv_err *err;
    /* no account has the handle (never registered, or deleted): not owed; REFUSED_RENEWED: it
     * is a new account, which this message was not written to (not owed either) */
    unsigned char *gone;
};
#define REFUSED_RENEWED 2

MSV_MUST_CHECK msv_err client_refusal_add(struct client_refusals *r, const char *handle,
                                          const char *why, msv_err err);
/* client_refusal_add of a handle no account has: the message is not owed to it. */
MSV_MUST_CHECK msv_err client_refusal_gone(struct client_refusals *r, const char *handle,
                                           const char *why, msv_err err);
int client_is_refused(const struct client_refusals *r, const char *handle);
/* The index of handle's refusal in r; r->n if it is not refused. */
size_t client_refusal_find(const struct client_refusals *r, const char *handle);
void client_refusals_clear(struct client_refusals *r);
/* Takes the REFUSED_RENEWED refusals out of r (they hold for one message only). */
void client_refusals_forget_renewed(struct client_refusals *r);
/* Takes the refusals for full queues (MSV_ERR_TOO_BIG) out of r: a queue has room again as soon
 * as its device reads, so each message asks the relay itself. */
void client_refusals_forget_full(struct client_refusals *r);
/*
 * client_verified_lookup for a send: a result that does not check out on its own is refused
 * (added to refused with c->why's words; its result in *result keeps no device) and the rest of
 * the answer is checked and taken without it; an answer that fails as a whole fails the lookup.
 */
msv_err client_send_lookup(struct msv_client *c, const char *const *handles, size_t n,
                           msv_frame **result, struct client_refusals *refused);
/* client_verified_lookup of this account's own handles: history, each result with its history
 * proof (checked by client_history_check); versions_from (NULL: none), per handle the versions
 * from that log index on (0: none). */
msv_err client_owner_lookup(struct msv_client *c, const char *const *handles, size_t n, int history,
                            const uint64_t *versions_from, msv_frame **result);
/* The version of handle the monitor last checked and its log index (history.c);
 * MSV_ERR_NOT_FOUND before the first. */
msv_err client_history_get(struct msv_client *c, const char *handle, uint32_t *version,
                           uint64_t *index);
msv_err client_history_put(struct msv_client *c, const char *handle, uint32_t version,
                           uint64_t index);
/*
 * Checks the history proof of each result of r (an answer of client_owner_lookup with history,
 * checked): the handle's newest version, with every marker version a later one would need
 * absent, or the alarm (history.c; docs/transparency.md, "The owner's history proof").
 */
msv_err client_history_check(struct msv_client *c, const Msv__Wire__LookupResponse *r,
                             void (*on_alarm)(void *, const char *), void *ctx, size_t *alarms);
/*
 * Checks that the key directory grew, by append-only steps, from the root the monitor pinned
 * last (pinning the first one it sees), through every root a lookup showed this device (kept by
 * msv_kt_seen_add) when the steps reach its size, or the alarm; roots left unchecked for a day, or
 * not kept, are told (lineage.c; docs/transparency.md, "The monitor's lineage").
 */
msv_err client_lineage_check(struct msv_client *c, void (*on_alarm)(void *, const char *),
                             void *ctx, size_t *alarms);
/* This device's handle first, then the account's others as last listed, then those it still
 * watches (caller frees with msv_handles_free). */
msv_err client_own_handles_known(struct msv_client *c, char ***out, size_t *n);
/* Whether this device learnt at since_ms or later that handle is a new account (what was
 * written to handle before then was written to the account deleted, and does not go). */
int client_renewed_since(struct msv_client *c, const char *handle, int64_t since_ms);
/* Whether this device ever learnt of a new account (or cannot tell). */
int client_renewed_any(struct msv_client *c);

/* Encrypts data under key, uploads it; its digests in d, "blob:HEX" in uri. */
msv_err client_upload_blob(struct msv_client *c, const uint8_t key[MSV_ATTACHMENT_KEY_LEN],
                           const uint8_t *data, size_t len, void (*progress)(uint64_t, uint64_t),
                           struct msv_attachment_digest *d, char *uri, size_t uri_len);
/* Fetches the blob a names (at most max bytes), checks its hash, decrypts it (caller frees *pt). */
msv_err client_fetch_blob(struct msv_client *c, const struct msv_attachment_ref *a, size_t max,
                          uint8_t **pt, size_t *len);
/* This account's profile pointer (r->uri points into uri); MSV_ERR_NOT_FOUND if none. */
msv_err client_profile_ref(struct msv_client *c, struct msv_profile_ref *r, char uri[81]);
/* Fetches a contact's profile that p points at if it is new; told as MSV_INCOMING_PROFILE. */
msv_err client_take_profile(struct msv_client *c, const char *sender, const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx);
/* The profile (NULL if none) under the key about to be replaced, and uploaded again after. */
msv_err client_profile_before_rotation(struct msv_client *c, struct msv_profile **out);
msv_err client_profile_after_rotation(struct msv_client *c, const struct msv_profile *p);

/*
 * Sends the synced changes still pending to this account's other devices
 * (msv_client_sync_flush); unless anyway, only once another device of the
 * account is known here (a device just approved is, before the directory says so).
 */
msv_err client_sync_flush(struct msv_client *c, size_t *sent, int anyway);

/*
 * Refuses a send to a post-quantum device the server gave no checked key for (MSV_ERR_AUTH):
 * c->why (MSV_REFUSAL_PQ) and on_pq_refused say "the server gave WHAT for HANDLE ...";
 * speaks ("sessions " or "") completes "whose identity says it speaks post-quantum ...only".
 */
msv_err client_pq_refused(struct msv_client *c, const char *handle, uint64_t device_id,
                          const char *what, const char *speaks);

/*
 * Claims the prekey bundles of the n devices ids (sealing: their last-resort KEM prekeys only,
 * handing nothing out once), for the session start and the sealing-key fetch alike: *resp
 * (caller frees with msv_frame_free) on an answer. A refusal that withholds nothing (the
 * server busy, or saying "slow down") is MSV_ERR_IO, c->why saying "the server did not give
 * WHAT now (busy ...); tried again ..."; no answer at all is MSV_ERR_IO too; any other
 * refusal is returned as msv_request_prekey_claim gives it. An answer with no bundle at all
 * for a device whose pq[i] is set (a device that left its account, or an account deleted, since
 * the send learnt the set) is MSV_ERR_AGAIN the first time in a send (c->sealing_rechecked),
 * *resp set all the same (the others' bundles, claimed, are not to be wasted):
 * the send learns the devices from the log again and tries once more, and a device the log
 * still lists is refused then as a withheld key (its bundle came with it).
 */
msv_err client_claim(struct msv_client *c, const uint64_t *ids, const int *pq, size_t n,
                     int sealing, const char *what, msv_frame **resp);

/*
 * Hybrid sealed sender (sealkeys.c): the checked last-resort KEM prekey a post-quantum device
 * of handle is sealed to (MSV_ERR_AUTH, why.code MSV_REFUSAL_PQ and on_pq_refused when the
 * server gives none that checks); the first layer of a delivery as this device's identity
 * calls for (*keys: the KEM secrets it needed, or NULL; caller frees with sodium_free), a
 * classical one to a post-quantum device being refused and counted; and the second layer.
 */
struct msv_sealing_key;
struct client_sealed_keys;
/* The u32be id kept in setting name (0 when there is none). */
uint32_t client_setting_u32(struct msv_client_db *db, const char *name);
/* The u64be count kept in setting name (0 when there is none). */
uint64_t client_counter(struct msv_client *c, const char *name);
/* Adds one to the count kept in setting name. */
msv_err client_counter_bump(struct msv_client *c, const char *name);
/* The count of envelopes dropped because their sending device could not be checked (u64be). */
#define CLIENT_SENDERS_UNCHECKED "senders-unchecked"
/*
 * Publishes this device's keys on connecting (msv_sessions_publish); a failure other than the
 * server's "slow down" is counted and told (on_keys_unpublished), never only dropped.
 */
void client_publish_keys(struct msv_client *c);
/* The setting name of a count per device: "<prefix>:<device_id>". */
void client_device_counter_name(const char *prefix, uint64_t device_id, char name[64]);
msv_err client_sealing_key(struct msv_client *c, const char *handle, uint64_t device_id,
                           const struct msv_public_identity *pub, struct msv_sealing_key *key);
/*
 * A session start is about to use the last-resort KEM prekey id (ek, signed sig) of a
 * post-quantum device: MSV_ERR_AUTH when it is older than the newest one this device has seen
 * for it (ids only grow: an older one is one the device may have let go, served again), else
 * it is kept as the newest seen (and as the device's sealing key) when newer.
 */
msv_err client_last_resort_seen(struct msv_client *c, uint64_t device_id,
                                const struct msv_public_identity *pub, uint32_t id,
                                const uint8_t *ek, const uint8_t sig[64]);
msv_err client_sealed_sender(struct msv_client *c, const uint8_t *wire, size_t len,
                             char handle[256], uint64_t *device, struct client_sealed_keys **keys);
msv_err client_sealed_unwrap(struct msv_client *c, const struct client_sealed_keys *keys,
                             const struct msv_public_identity *sender, const uint8_t *wire,
                             size_t len, uint8_t **envelope, size_t *envelope_len);

/*
 * This device's MLS KeyPackages (src/client/mlskeys.c, docs/crypto.md "MLS KeyPackages of a
 * device"): the delivery service is kept holding at least MSV_MLSKEYS_LOW of them (topped up to
 * MSV_MLSKEYS_TARGET) and a last-resort one; their private parts are kept for their lifetime,
 * at most MSV_MLSKEYS_KEPT_MAX.
 */
#define MSV_MLSKEYS_TARGET 50
#define MSV_MLSKEYS_LOW 20
#define MSV_MLSKEYS_KEPT_MAX 400
MSV_MUST_CHECK msv_err msv_mlskeys_publish(struct msv_client *c);
/*
 * Checks that the KeyPackage MLSMessage kp is valid now (RFC 9420 10.1, suite 1) and device
 * device_id's: its credential's signature by pub (the device's identity key from the verified
 * directory) over its signature key. MSV_OK, or an error with *why (a static string).
 */
MSV_MUST_CHECK msv_err msv_mlskeys_credential_check(const struct msv_public_identity *pub,
                                                    uint64_t device_id, const uint8_t *kp,
                                                    size_t kp_len, uint64_t now_s,
                                                    const char **why);
/* The file name in the account's directory, open and exclusively locked (flock); -1 if not. */
int client_lock_file(struct msv_client *c, const char *name);
/* That lock held in *fd, nested within one client: *depth counts the holds. */
MSV_MUST_CHECK msv_err client_lock_nested(struct msv_client *c, const char *name, int *fd,
                                          unsigned *depth);
void client_unlock_nested(int *fd, unsigned *depth);
/*
 * A claim on one thing (key: a digest) among the account's processes: the open file of name
 * holding a lock (fcntl, of its open file description) on a byte of its own, tried for up to
 * wait_ms (polled, so that no wait lasts longer). The file's descriptor if claimed here, -2 if
 * another process (or another open file of this one) held it all that time, -1 if the file
 * cannot be locked. Gone with client_claim_release() or the process.
 */
int client_claim_try(struct msv_client *c, const char *name, const uint8_t key[32], int wait_ms);
void client_claim_release(int fd);
/* Whether chain (c->in_flight: message ids; c->mls_taking: digests) holds the len bytes id. */
int client_chain_holds(const struct client_in_flight *chain, const uint8_t *id, size_t len);
/*
 * The account's session lock (sessions.c), held by a receive from before it asks whether a
 * delivery was taken until that delivery is: two processes of one account that get the same
 * delivery (a connection replaced while its deliveries were unacknowledged) take it once. A
 * group's change holds it from reading the group's state until the change is sent or queued
 * (groups.c), as a receive does applying one, so that no process changes a state another has
 * read.
 */
MSV_MUST_CHECK msv_err client_sessions_hold(struct msv_client *c);
void client_sessions_release(struct msv_client *c);
/*
 * Another program of this device took the connection that took its deliveries (words: the
 * server's, as it closed it; NULL if it said nothing): recorded in
 * c->deliveries_taken, unless this is the account's owner (deliveries_take_over), which takes
 * the connection back. 1 if recorded, now or before.
 */
int client_deliveries_taken(struct msv_client *c, const char *words);
/* A receive after client_deliveries_taken: MSV_ERR_IO, with the server's words in c->why. */
msv_err client_deliveries_gone(struct msv_client *c);

/*
 * Groups on MLS (mlsgroups.c, docs/crypto.md "Groups on MLS in the client"). A group is on MLS
 * once this device holds its member state. client_mls_sync() makes the MLS group follow the
 * group's members (start: move a group of per-device copies to MLS if every device of every
 * member has a valid KeyPackage, saying why not otherwise); client_mls_send() sends a payload
 * as one application message; client_mls_take() reads one MLS delivery.
 */
#define MSV_MLS_UPDATE_S (7 * 86400)
#define MSV_MLS_UPDATE_MESSAGES 1000
/*
 * Verified contacts (send.c): MSV_VERIFIED_PREFIX || handle holds the digest of the devices
 * verified (missive verify); MSV_OK unless one of hds is a verified contact whose devices
 * changed since: then nothing is to be sent (MSV_ERR_AUTH, why.code MSV_REFUSAL_KEY_CHANGE)
 * until the user accepts the change.
 */
#define MSV_VERIFIED_PREFIX "verified-set:"
MSV_MUST_CHECK msv_err client_check_verified(struct msv_client *c,
                                             Msv__Wire__HandleDevices *const *hds, size_t n_hds);
int client_mls_is_on(struct msv_client *c, const uint8_t gid[16]);
MSV_MUST_CHECK msv_err client_mls_sync(struct msv_client *c, const uint8_t gid[16], int start);
/* *per_device: the payload did not go; it is to go as per-device copies to every member (this
 * device is behind the group's epoch for good, told when it fell behind) */
MSV_MUST_CHECK msv_err client_mls_send(struct msv_client *c, const uint8_t gid[16],
                                       const uint8_t *pt, size_t pt_len, int *per_device);
/*
 * After each receive, client_mls_joins sends the Welcomes kept, commits what an admin's device
 * must follow (client_mls_follow_due), and adds the devices waiting to join.
 * A device of this account this device approved joins the account's groups on MLS: it is
 * recorded (client_mls_join_due) and added by this device's commits (client_mls_joins) to
 * every group on MLS this device is in, once the device has published
 * a KeyPackage; what fails is tried again after MSV_MLS_JOIN_RETRY_MS or a quarter of the time
 * waited (at most an hour), for MSV_MLS_JOIN_DAYS, then told in each group it is not in.
 */
#define MSV_MLS_JOIN_RETRY_MS (60 * 1000)
#define MSV_MLS_JOIN_DAYS 7
#define MSV_MLS_JOINS_MAX 16 /* devices waiting at once; the oldest is given up past it */
MSV_MUST_CHECK msv_err client_mls_join_due(struct msv_client *c, uint64_t device_id);
/* A device the server says was added to this account: recorded as client_mls_join_due does if
 * the directory lists it under this account (and no other wait is pushed out for it). */
MSV_MUST_CHECK msv_err client_mls_join_noticed(struct msv_client *c, uint64_t device_id);
/*
 * A device removed from this account (by this device, or told by the server, whose word is
 * only the cue): the leaves of this account's devices that the verified directory no longer
 * lists are committed out of each group on MLS this device is in (any device of the account
 * may remove them): by the remover at once (client_mls_outs), at the end of each receive, and
 * before a message to such a group (which goes as per-device copies while one stays); tried
 * again as a joining device is, for MSV_MLS_JOIN_DAYS. One record ("mls-out"); removed: the
 * device this device removed (0: a notice), kept until the directory lists it no more.
 */
MSV_MUST_CHECK msv_err client_mls_out_due(struct msv_client *c, uint64_t removed);
/* The removal of device removed was refused by the server for good: no longer waited for. */
MSV_MUST_CHECK msv_err client_mls_out_forget(struct msv_client *c, uint64_t removed);
void client_mls_outs(struct msv_client *c);
/* An admin's device took another's change of group gid (a member leaving): at the end of the
 * receive (client_mls_joins) it commits what the MLS group must follow (a removal). */
MSV_MUST_CHECK msv_err client_mls_follow_due(struct msv_client *c, const uint8_t gid[16]);
/*
 * Whether a group message this device sends now goes as per-device copies for want of the
 * group's MLS state (it holds none, or, no admin, is behind for good): the payload says so
 * (mls_outside), asking the admins to add this device again.
 */
int client_mls_unusable(struct msv_client *c, const uint8_t gid[16]);
/*
 * Before a message to group gid from this device, which holds no state of its MLS group: the
 * device's queue read first (its messages told as any read within a send), where the
 * Welcome adding it may wait (linked or added a moment ago), so that the message goes on MLS
 * rather than asking the group's admins to add the device again. Not within a receive, nor
 * by a program that takes its deliveries as they come; at most once a minute per group by a
 * process (a group that is not on MLS would otherwise read the queue at every message). A
 * failure leaves everything as it was. 1 if the queue was read (the group may have changed).
 */
int client_mls_queue_first(struct msv_client *c, const uint8_t gid[16]);
/*
 * A group message of device (of member sender), written at sent_at_ms, said it holds no usable
 * state of the group's MLS group: on an admin's device holding the group, that device's leaf
 * is recorded to be replaced at the end of the receive (client_mls_joins), at most once an
 * hour; an ask written over an hour ago changes nothing.
 */
MSV_MUST_CHECK msv_err client_mls_rejoin_asked(struct msv_client *c, const uint8_t gid[16],
                                               const char *sender, uint64_t device,
                                               uint64_t sent_at_ms);
/*
 * A commit or Welcome sent by reference (docs/crypto.md, "Large commits and Welcomes"): the
 * 102 bytes parsed; MSV_ERR_NOT_FOUND if msg is no reference (an MLSMessage), MSV_ERR_PARSE if
 * it is a malformed one (another length or version, a size of 0 or past 8 MiB).
 */
struct msv_mls_ref {
    char uri[5 + 64 + 1]; /* blob:<hex of the blob id> */
    uint8_t key[32];
    uint8_t sha256[32];
    uint32_t size;
};
MSV_MUST_CHECK msv_err msv_mls_ref_parse(const uint8_t *msg, size_t len, struct msv_mls_ref *ref);
void client_mls_joins(struct msv_client *c);
/* The group's members, this account aside, with no device in its MLS tree (*out: one handle a
 * line, caller frees; NULL if none): they get a group message as per-device copies. */
MSV_MUST_CHECK msv_err client_mls_outside(struct msv_client *c, const uint8_t gid[16], char **out);
struct client_mls_in {
    char sender[257]; /* of an application message: named by its leaf's credential */
    uint64_t device;
    uint8_t *pt; /* an application message's payload (msv_secret_free) */
    size_t pt_len;
    char notice[400];      /* what to record and show instead, if not empty */
    char conversation[40]; /* the notice's: the group's if this device knows it, else empty */
    int joined;            /* a Welcome's: this device joined from it (its state saved) */
    int stale;             /* a Welcome's: of a state this device holds, or one before it */
};
/*
 * MSV_OK unless storing failed (then the delivery stays unacknowledged). digest: the
 * delivery's (receive.c, take_mls). An application message's payload is kept with the state
 * that read it, in one transaction, until client_mls_forget() once it is stored and the
 * delivery recorded: the same delivery taken again (redelivered, or by another process of the
 * account at once) gives the payload kept, and one recorded already gives nothing. What a
 * receive finds kept at its start ("mls-in:" settings, client_mls_gave_parse()) is taken then.
 */
MSV_MUST_CHECK msv_err client_mls_take(struct msv_client *c, const uint8_t *delivery, size_t len,
                                       const char *sender_handle, uint64_t sender_device,
                                       const uint8_t digest[32], struct client_mls_in *in);
MSV_MUST_CHECK msv_err client_mls_forget(struct msv_client *c, const uint8_t digest[32]);
/* After client_mls_take, at once: the refusal of a commit it made (taken from the client, so
 * that what the notice's telling runs cannot change it); whether it was told so already (its
 * notice is then not told again); once the notice is stored, the refusal recorded as told. */
void client_mls_refusal_take(struct msv_client *c, struct client_mls_refusal *r);
int client_mls_refusal_repeat(struct msv_client *c, const struct client_mls_refusal *r);
MSV_MUST_CHECK msv_err client_mls_refusal_told(struct msv_client *c,
                                               const struct client_mls_refusal *r);
/* MSV_OK if a payload is kept for digest, MSV_ERR_NOT_FOUND if not. */
MSV_MUST_CHECK msv_err client_mls_kept(struct msv_client *c, const uint8_t digest[32]);
MSV_MUST_CHECK msv_err client_mls_gave_parse(const uint8_t *v, size_t len,
                                             struct client_mls_in *in);
#define MSV_MLS_GAVE_PREFIX "mls-in:"

/* The device id and basic credential identity of a LeafNode (MSV_ERR_PARSE if not one). */
MSV_MUST_CHECK msv_err msv_mlskeys_leaf_credential(const uint8_t *leaf_raw, size_t leaf_len,
                                                   const uint8_t **identity, size_t *identity_len,
                                                   uint64_t *device_id);
/* The binding check of msv_mlskeys_credential_check() for a leaf of a group's tree. */
MSV_MUST_CHECK msv_err msv_mlskeys_leaf_check(const struct msv_public_identity *pub,
                                              uint64_t device_id, const struct msv_mls_leaf *leaf,
                                              const char **why);
#define MSV_MLSKEYS_IDENTITY_MAX (8 + MSV_SIGNATURE_MAX)
#define MSV_MLSKEYS_KP_MAX 8192 /* the delivery service's limit */
/* A fresh signature seed and this device's credential identity binding its key. */
MSV_MUST_CHECK msv_err msv_mlskeys_credential_make(struct msv_client *c, uint8_t sig_seed[32],
                                                   uint8_t identity[MSV_MLSKEYS_IDENTITY_MAX],
                                                   size_t *identity_len);
/* The private part of one of this device's KeyPackages, with the KeyPackage. */
struct msv_mlskeys_private {
    char name[8 + 2 * 32]; /* its setting */
    int last_resort;
    uint8_t sig_seed[32], init_sk[32], leaf_sk[32];
    uint8_t *key_package;
    size_t key_package_len;
};
/* The KeyPackage a Welcome is for, if this device keeps it (MSV_ERR_NOT_FOUND if not). Clear
 * *out with msv_mlskeys_private_clear(). */
MSV_MUST_CHECK msv_err msv_mlskeys_for_welcome(struct msv_client *c, const uint8_t *welcome,
                                               size_t welcome_len, struct msv_mlskeys_private *out);
void msv_mlskeys_private_clear(struct msv_mlskeys_private *k);
/* A backup holds no KeyPackage's private part, and no MLS group's state. */
MSV_MUST_CHECK msv_err msv_mlskeys_strip_backup_copy(struct msv_client_db *copy);

#endif
