/*
 * Registration invite codes (docs/missived.md, "Registration"): made by
 * missive-admin, given to a person out of band, checked by the server. The
 * store keeps only a code's hash.
 */
#ifndef MSV_SERVER_INVITES_H
#define MSV_SERVER_INVITES_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

#define MSV_INVITE_CODE_MAX 64 /* bytes an invite code may have on the wire */
#define MSV_INVITE_TEXT_LEN 20 /* "XXXX-XXXX-XXXX-XXXX" and its terminator */

/* A fresh code: 16 characters of 32 (80 bits), in four groups of four. */
void msv_invite_new(char out[MSV_INVITE_TEXT_LEN]);

/*
 * The hash the store keeps of a code as a person typed it: case, dashes and
 * spaces do not count, and O, I and L read as 0, 1 and 1. MSV_ERR_INVALID for
 * anything else than 16 characters of the code's alphabet.
 */
MSV_MUST_CHECK msv_err msv_invite_hash(const uint8_t *code, size_t len, uint8_t out[32]);

#endif
