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
/*
 * Runs hook as `hook -- HANDLE CODE` without waiting for it: 0, or -1 if as many hooks as may
 * run at once in this process (32) run already (or no process could be made). A hook is killed
 * once it has run a minute; those that ended are reaped at the next call.
 */
int msv_server_run_hook(const char *hook, const char *handle, const char *code);
/* Whether a hook could run now (one place at least is free). */
int msv_server_hook_room(void);

#endif
