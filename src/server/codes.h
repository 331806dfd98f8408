/*
 * Verification codes (handlers.c; docs/missived.md, "Registration" and "Passwords"): the hash
 * a password reset's code is kept under in the store, and the hook that sends a code, which
 * missived runs for registrations and missive-admin for password resets.
 */
#ifndef MSV_SERVER_CODES_H
#define MSV_SERVER_CODES_H

#include <stdint.h>

/* SHA-256 of "MSV-reset-v1" || handle || 0 || code: never a registration code's hash. */
void msv_server_reset_code_hash(const char *handle, const char *code, uint8_t out[32]);
/* Runs hook as `hook -- HANDLE CODE`, detached (no zombie, no wait). */
void msv_server_run_hook(const char *hook, const char *handle, const char *code);

#endif
