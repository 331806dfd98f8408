/*
 * The client's side of key transparency: every directory answer is checked
 * against the log before its devices are used (docs/transparency.md).
 */
#ifndef MSV_CLIENT_TRANSPARENCY_H
#define MSV_CLIENT_TRANSPARENCY_H

#include <stddef.h>
#include <stdint.h>

#include "missive/kt.h"
#include "store/client_db.h"
#include "wire/frame.h"

/* The newest tree head this device accepted; MSV_ERR_NOT_FOUND if none yet. */
MSV_MUST_CHECK msv_err msv_kt_known_head(struct msv_client_db *db, struct msv_kt_head *h);
/* The size of the newest tree head this device accepted (0: none yet). */
uint64_t msv_kt_known_size(struct msv_client_db *db);

/*
 * Checks a lookup answer: the head is signed by the log key this device
 * pinned (the first one it saw), it extends the head accepted before
 * (consistency proof; never smaller, never a different root for the same
 * size), and every result that names devices comes with its log leaf, whose
 * devices are exactly those, proven in the head's tree. On success the head
 * is remembered. MSV_ERR_AUTH (why says what failed) if anything does not
 * hold; nothing is remembered then.
 */
MSV_MUST_CHECK msv_err msv_kt_check_lookup(struct msv_client_db *db,
                                           const Msv__Wire__LookupResponse *r, char *why,
                                           size_t why_len);

/*
 * Checks a LogEntries answer to a read from start: its head as above, and
 * every entry proven at its index (start, start + 1, ...) in head's tree.
 * head receives the answer's head.
 */
MSV_MUST_CHECK msv_err msv_kt_check_entries(struct msv_client_db *db,
                                            const Msv__Wire__LogEntries *r, uint64_t start,
                                            struct msv_kt_head *head, char *why, size_t why_len);

#endif
