/*
 * The client's requests to missived, one function each. Each sends a request
 * on an open connection and waits for its answer. When the server refuses,
 * the function returns MSV_ERR_AUTH, MSV_ERR_INVALID, MSV_ERR_TOO_BIG,
 * MSV_ERR_EXISTS, MSV_ERR_NOT_FOUND or MSV_ERR_IO, and (if why is not NULL)
 * fills why with the server's code and text. No answer within timeout_ms, or
 * a lost connection, is MSV_ERR_IO.
 */
#ifndef MSV_CLIENT_REQUESTS_H
#define MSV_CLIENT_REQUESTS_H

#include <stddef.h>
#include <stdint.h>

#include "client/conn.h"

struct msv_refusal {
    int code; /* msv.wire.ErrorCode */
    char message[256];
};

/*
 * An answer f that is not the one asked for, as the library's error: a refusal (Error) mapped
 * by its code, its words kept in why (may be NULL); an answer of another kind MSV_ERR_IO, as
 * a lost connection (the request is tried again, not failed).
 */
msv_err msv_request_refusal(const msv_frame *f, struct msv_refusal *why);
/* msv_request_refusal for an answer read on c: an answer of another kind gives c up too (every
 * later request on it is MSV_ERR_IO at once). */
msv_err msv_request_answer_refusal(struct msv_conn *c, const msv_frame *f, struct msv_refusal *why);

struct msv_prekey;
struct msv_kem_prekey;

/*
 * What one PrekeyUpload carries (all borrowed; a NULL key or n 0 leaves that
 * part out): the signed prekey with its signature, one-time prekeys, the
 * last-resort KEM prekey with its signature and one-time KEM prekeys with
 * theirs; replace drops the one-time ones the server holds first.
 */
struct msv_prekey_set {
    const struct msv_prekey *signed_key;
    const uint8_t *signed_sig;
    const struct msv_prekey *one_time;
    size_t n_one_time;
    const struct msv_kem_prekey *kem_last_resort;
    const uint8_t *kem_last_resort_sig;
    const struct msv_kem_prekey *kem_one_time;
    const uint8_t (*kem_sigs)[64];
    size_t n_kem_one_time;
    int replace;
};

/* What the server holds for the device after an upload (PrekeyState). */
struct msv_prekey_counts {
    uint32_t one_time_left;
    int has_signed;
    uint32_t kem_one_time_left;
    int has_kem_last_resort;
    uint32_t signed_id;          /* the signed prekey the server holds (0: none) */
    uint32_t kem_last_resort_id; /* the last-resort KEM prekey it holds (0: none) */
};

/*
 * Asks the server to send a verification code to handle; invite (NULL: none)
 * is the code of an invite, for a server that registers by invitation.
 */
MSV_MUST_CHECK msv_err msv_request_register_start(struct msv_conn *c, const char *handle,
                                                  const char *invite, int timeout_ms,
                                                  struct msv_refusal *why);
/*
 * Creates the account with its first device; *device_id receives the device's
 * id. first (NULL: none) are the device's first prekeys, stored with it
 * (NewDevice.prekeys; required of an identity that says post-quantum).
 */
MSV_MUST_CHECK msv_err msv_request_register_finish(
    struct msv_conn *c, const char *handle, const char *invite, const char *code,
    const char *password, const struct msv_identity *id, const struct msv_prekey_set *first,
    const char *push_token, int timeout_ms, uint64_t *device_id, struct msv_refusal *why);
/* Adds a device to an existing account (first: as for register_finish). */
MSV_MUST_CHECK msv_err msv_request_add_device(struct msv_conn *c, const char *handle,
                                              const char *password, const struct msv_identity *id,
                                              const struct msv_prekey_set *first,
                                              const char *push_token, int timeout_ms,
                                              uint64_t *device_id, struct msv_refusal *why);

/*
 * Linking by QR code (docs/wire.md, "Linking by QR code"). provision_open
 * opens this connection's provisioning address (16 bytes) holding id's
 * public identity and its first prekeys (as for register_finish); provision_take takes the message
 * left there (MSV_ERR_NOT_FOUND while there is none; *message: caller frees); link_device
 * (authenticated) adds the device waiting at address to the caller's account, pending, and answers
 * it (*linked: caller frees with msv_frame_free, its linked_device set); provision_put leaves the
 * message.
 */
MSV_MUST_CHECK msv_err msv_request_provision_open(struct msv_conn *c, const struct msv_identity *id,
                                                  const struct msv_prekey_set *first,
                                                  int timeout_ms, uint8_t address[16],
                                                  struct msv_refusal *why);
MSV_MUST_CHECK msv_err msv_request_provision_take(struct msv_conn *c, int timeout_ms,
                                                  uint8_t **message, size_t *len,
                                                  struct msv_refusal *why);
MSV_MUST_CHECK msv_err msv_request_link_device(struct msv_conn *c, const uint8_t address[16],
                                               int timeout_ms, msv_frame **linked,
                                               struct msv_refusal *why);
MSV_MUST_CHECK msv_err msv_request_provision_put(struct msv_conn *c, const uint8_t address[16],
                                                 const uint8_t *message, size_t len, int timeout_ms,
                                                 struct msv_refusal *why);

struct msv_outgoing {
    uint64_t device_id;
    uint32_t suite;
    const uint8_t *ciphertext;
    size_t ciphertext_len;
};

/* An abuse report to the operator (frame.proto ReportRequest); text "" sends none. */
MSV_MUST_CHECK msv_err msv_request_report(struct msv_conn *c, const char *reported,
                                          const char *reason, const char *text, int timeout_ms,
                                          struct msv_refusal *why);

/* Changes the account's password (frame.proto PasswordChange): MSV_ERR_AUTH if password is wrong.
 */
MSV_MUST_CHECK msv_err msv_request_password_change(struct msv_conn *c, const char *password,
                                                   const char *new_password, int timeout_ms,
                                                   struct msv_refusal *why);

/* A new password with the operator's code (frame.proto PasswordReset): MSV_ERR_AUTH if wrong. */
MSV_MUST_CHECK msv_err msv_request_password_reset(struct msv_conn *c, const char *handle,
                                                  const char *code, const char *new_password,
                                                  int timeout_ms, struct msv_refusal *why);
/* Deletes the account (frame.proto AccountDelete): MSV_ERR_AUTH if password is wrong. */
MSV_MUST_CHECK msv_err msv_request_account_delete(struct msv_conn *c, const char *password,
                                                  int timeout_ms, struct msv_refusal *why);

/*
 * Sends one message: an envelope per device of the named handles. On
 * MSV_ERR_AGAIN the device list was stale: *current (caller frees with
 * msv_frame_free) holds the server's Error with the devices to address.
 * delivery_token (16 bytes, or NULL) makes it a sealed send, on a connection
 * that has not authenticated.
 */
MSV_MUST_CHECK msv_err msv_request_send(struct msv_conn *c, const uint8_t message_id[16],
                                        const char *const *handles, size_t n_handles,
                                        const struct msv_outgoing *envelopes, size_t n,
                                        const uint8_t *delivery_token, int timeout_ms,
                                        msv_frame **current, struct msv_refusal *why);
/* The same, asking the relay to drop copies still undelivered after expire_after_s (0: never). */
/* What else a send says: msv_request_send_expiring's, and the handle it is from (may be NULL). */
/* The recipient devices a send was not queued for, their queue on the server full. */
#define MSV_SEND_LEFT_MAX 1024 /* a send's envelopes at most (docs/wire.md) */
struct msv_send_left {
    size_t n;
    int all; /* the send was refused (MSV_ERR_TOO_BIG): every one of its devices' queues full */
    uint64_t devices[MSV_SEND_LEFT_MAX];
};
struct msv_send_as {
    const uint8_t *delivery_token;
    uint32_t expire_after_s;
    const char *from;           /* frame.proto SendRequest.from_handle */
    struct msv_send_left *left; /* out, may be NULL: what the answer left out */
};
MSV_MUST_CHECK msv_err msv_request_send_as(struct msv_conn *c, const uint8_t message_id[16],
                                           const char *const *handles, size_t n_handles,
                                           const struct msv_outgoing *envelopes, size_t n,
                                           const struct msv_send_as *as, int timeout_ms,
                                           msv_frame **current, struct msv_refusal *why);
/*
 * The account's handles (frame.proto HandleAdd, HandleVerify, HandleRemove; code only for
 * MSV_HANDLE_VERIFY). handle_list: *answer (a HandleList; free with msv_frame_free).
 */
/* UsernameSet: username becomes the account's (NULL or "": the account's is released). */
MSV_MUST_CHECK msv_err msv_request_username_set(struct msv_conn *c, const char *username,
                                                int timeout_ms, struct msv_refusal *why);
enum { MSV_HANDLE_ADD, MSV_HANDLE_VERIFY, MSV_HANDLE_REMOVE };
MSV_MUST_CHECK msv_err msv_request_handle_change(struct msv_conn *c, int what, const char *handle,
                                                 const char *code, int timeout_ms,
                                                 struct msv_refusal *why);
MSV_MUST_CHECK msv_err msv_request_handle_list(struct msv_conn *c, int timeout_ms,
                                               msv_frame **answer, struct msv_refusal *why);
MSV_MUST_CHECK msv_err msv_request_send_expiring(struct msv_conn *c, const uint8_t message_id[16],
                                                 const char *const *handles, size_t n_handles,
                                                 const struct msv_outgoing *envelopes, size_t n,
                                                 const uint8_t *delivery_token,
                                                 uint32_t expire_after_s, int timeout_ms,
                                                 msv_frame **current, struct msv_refusal *why);

/*
 * Looks up handles; *result (caller frees with msv_frame_free) holds the
 * LookupResponse, one HandleDevices per handle in order, with the proofs
 * from the tree head of known_size entries (0: none) on; history: the
 * results for the account's own handles carry their history proofs.
 */
MSV_MUST_CHECK msv_err msv_request_lookup(struct msv_conn *c, const char *const *handles, size_t n,
                                          int history, uint64_t known_size, int timeout_ms,
                                          msv_frame **result, struct msv_refusal *why);
/*
 * msv_request_lookup for the owner's monitor: versions_from (NULL: none; else one per handle)
 * asks, for each of the account's own handles, its versions from that log index on (0: none).
 */
MSV_MUST_CHECK msv_err msv_request_owner_lookup(struct msv_conn *c, const char *const *handles,
                                                size_t n, int history,
                                                const uint64_t *versions_from, uint64_t known_size,
                                                int timeout_ms, msv_frame **result,
                                                struct msv_refusal *why);

/*
 * msv_request_lookup for a send (no history proofs): the answer holds a result per handle, but a
 * result that names another handle than the one asked in its place is left for the caller to
 * refuse (msv_lookup_result_is_for), the others standing.
 */
MSV_MUST_CHECK msv_err msv_request_send_lookup(struct msv_conn *c, const char *const *handles,
                                               size_t n, uint64_t known_size, int timeout_ms,
                                               msv_frame **result, struct msv_refusal *why);
/* Whether hd names handle (both folded as the directory keeps them). */
int msv_lookup_result_is_for(const Msv__Wire__HandleDevices *hd, const char *handle);

/*
 * Reads count leaves of the transparency log from start, with proofs (LogEntries); append_proof:
 * with their steps in the key directory too.
 */
MSV_MUST_CHECK msv_err msv_request_log_read(struct msv_conn *c, uint64_t start, uint32_t count,
                                            uint64_t known_size, int append_proof, int timeout_ms,
                                            msv_frame **result, struct msv_refusal *why);

/*
 * Uploads len bytes (an encrypted attachment) in the chunks the server allows,
 * resuming from what arrived if a chunk is refused, and finishes with their
 * SHA-256. progress, if not NULL, is called after every chunk.
 */
MSV_MUST_CHECK msv_err msv_request_blob_upload(struct msv_conn *c, const uint8_t *data, size_t len,
                                               int timeout_ms,
                                               void (*progress)(uint64_t done, uint64_t total),
                                               uint8_t blob_id[32], struct msv_refusal *why);
/*
 * Downloads a blob piece by piece: sink receives each piece in order with the
 * blob's size (at most max, else MSV_ERR_TOO_BIG before any piece), and may
 * stop the download by returning an error, which is returned. progress (may
 * be NULL) is told after each piece.
 */
typedef msv_err (*msv_blob_sink)(void *ctx, size_t size, const uint8_t *piece, size_t len);
MSV_MUST_CHECK msv_err
msv_request_blob_stream(struct msv_conn *c, const uint8_t blob_id[32], size_t max, int timeout_ms,
                        void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
                        msv_blob_sink sink, void *sink_ctx, struct msv_refusal *why);
/*
 * Downloads a whole blob; *data (caller frees with free()) receives its *len
 * bytes. progress (may be NULL) is told after each piece.
 */
MSV_MUST_CHECK msv_err
msv_request_blob_download(struct msv_conn *c, const uint8_t blob_id[32], size_t max, int timeout_ms,
                          void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
                          uint8_t **data, size_t *len, struct msv_refusal *why);

/*
 * Publishes the prekeys of set in one request, which the server stores in one
 * transaction (an empty set just asks); *counts: what the server holds for
 * this device afterwards.
 */
MSV_MUST_CHECK msv_err msv_request_prekey_upload(struct msv_conn *c,
                                                 const struct msv_prekey_set *set, int timeout_ms,
                                                 struct msv_prekey_counts *counts,
                                                 struct msv_refusal *why);
/*
 * Claims the devices' prekey bundles (sealing_keys: only their sealing keys, nothing handed
 * out once); *result (msv_frame_free) holds PrekeyBundles.
 */
MSV_MUST_CHECK msv_err msv_request_prekey_claim(struct msv_conn *c, const uint64_t *device_ids,
                                                size_t n, int sealing_keys, int timeout_ms,
                                                msv_frame **result, struct msv_refusal *why);
struct msv_mls_kp_counts {
    uint32_t left; /* KeyPackages the server holds unclaimed, the last-resort one not counted */
    int has_last_resort;
};
/*
 * Publishes n KeyPackages (MLSMessages) of this device and, when last is not NULL, its new
 * last-resort one, in one request (nothing given: just asks; replace: the server's unclaimed
 * ones dropped first); *counts: what the server holds afterwards.
 */
MSV_MUST_CHECK msv_err msv_request_mls_key_packages(struct msv_conn *c, const uint8_t *const *kps,
                                                    const size_t *lens, size_t n,
                                                    const uint8_t *last, size_t last_len,
                                                    int replace, int timeout_ms,
                                                    struct msv_mls_kp_counts *counts,
                                                    struct msv_refusal *why);
/* Registers this device's 16-byte delivery token for sealed sends. */
MSV_MUST_CHECK msv_err msv_request_set_delivery_token(struct msv_conn *c, const uint8_t token[16],
                                                      int timeout_ms, struct msv_refusal *why);

/* Acknowledges delivered queue ids (no answer is awaited). */
MSV_MUST_CHECK msv_err msv_request_ack(struct msv_conn *c, const uint64_t *queue_ids, size_t n);
/* Acknowledges queue_id again and waits until the server committed it (and all before it). */
MSV_MUST_CHECK msv_err msv_request_ack_committed(struct msv_conn *c, const uint64_t *queue_id,
                                                 int timeout_ms);

/* A claim of one KeyPackage of each of handle's devices: *result an MlsKeyPackages frame. */
MSV_MUST_CHECK msv_err msv_request_mls_claim(struct msv_conn *c, const char *handle, int timeout_ms,
                                             msv_frame **result, struct msv_refusal *why);

/* One MlsSend (docs/wire.md, "MLS delivery"); the arrays are borrowed. */
struct msv_mls_send {
    const uint8_t *group_id;
    size_t group_id_len;
    int kind; /* MSV__WIRE__MLS_KIND__* */
    uint64_t epoch;
    const uint8_t *message;
    size_t message_len;
    const uint64_t *added, *removed, *recipients;
    size_t n_added, n_removed, n_recipients;
};
/* What a send was answered (MlsSent). */
#define MSV_MLS_FULL_KEPT 8
struct msv_mls_sent {
    uint64_t epoch;  /* the group's epoch after it (refused as stale: the current one) */
    uint32_t queued; /* devices it was queued for */
    uint32_t full;   /* member devices it was not queued for: their queue was full */
    uint64_t full_devices[MSV_MLS_FULL_KEPT]; /* the first of them */
    size_t n_full_devices;
    uint32_t kept; /* of a Welcome: devices left out for a full queue it is kept for */
};
/*
 * Sends s; *sent says what the delivery service answered (refused for a stale epoch,
 * MSV_ERR_REPLAY, its epoch alone).
 */
MSV_MUST_CHECK msv_err msv_request_mls_send(struct msv_conn *c, const struct msv_mls_send *s,
                                            int timeout_ms, struct msv_mls_sent *sent,
                                            struct msv_refusal *why);
/*
 * The commits the delivery service's log keeps of a group for epochs from `from` on
 * (MlsCommitsGet): *answer the MlsCommits frame (caller frees with msv_frame_free), else the
 * refusal (ERROR_MLS_NOT_MEMBER: MSV_ERR_INVALID, why->code saying so).
 */
MSV_MUST_CHECK msv_err msv_request_mls_commits(struct msv_conn *c, const uint8_t *group_id,
                                               size_t group_id_len, uint64_t from, int timeout_ms,
                                               msv_frame **answer, struct msv_refusal *why);
/*
 * The Welcome the delivery service keeps for this device in a group (MlsWelcomeGet): *answer
 * the MlsWelcomeKept frame (caller frees with msv_frame_free), else the refusal (none kept:
 * MSV_ERR_NOT_FOUND; ERROR_MLS_NOT_MEMBER: MSV_ERR_INVALID, why->code saying so). With taken (the
 * SHA-256 of the one this device joined from, or holds the state of already), the server
 * drops that one instead, if it is still kept: no answer frame.
 */
MSV_MUST_CHECK msv_err msv_request_mls_welcome(struct msv_conn *c, const uint8_t *group_id,
                                               size_t group_id_len, const uint8_t *taken,
                                               int timeout_ms, msv_frame **answer,
                                               struct msv_refusal *why);

#endif
