/*
 * Contact verification: a safety number per conversation, made from both
 * accounts' device keys, that two people compare (read out, or as a QR code);
 * a verified contact whose devices change is not written to until the user
 * accepts the change (docs/missive.md, "Verifying contacts").
 */
#ifndef MSV_CLIENT_SAFETY_H
#define MSV_CLIENT_SAFETY_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"
#include "wire/frame.h"

/* 60 digits: 30 for each account, the accounts in the order of their handles. */
#define MSV_SAFETY_DIGITS 60
/* The way of making them that this Missive shows (1 or 2), and version 2's rounds of SHA-512. */
#define MSV_SAFETY_VERSION 2
#define MSV_SAFETY_ITERATIONS 5200

/*
 * The digest of a handle's device set (ids and identity hashes, in id order),
 * and the 30 digits shown for it under a version (1 or 2; anything else is
 * taken as 2). MSV_ERR_PARSE if an identity is unreadable.
 */
MSV_MUST_CHECK msv_err msv_safety_set_digest(const Msv__Wire__HandleDevices *hd,
                                             uint8_t digest[32]);
void msv_safety_digits(unsigned version, const char *handle, const uint8_t set_digest[32],
                       char out[31]);
/* Both sides' digits in handle order: the same number on both sides. */
void msv_safety_number(unsigned version, const char *a, const uint8_t a_digest[32], const char *b,
                       const uint8_t b_digest[32], char out[MSV_SAFETY_DIGITS + 1]);

#endif
