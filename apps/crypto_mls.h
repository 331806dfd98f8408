/*
 * missive-crypto mls: MLS (RFC 9420) groups on files (apps/crypto_mls.c).
 */
#ifndef MSV_APPS_CRYPTO_MLS_H
#define MSV_APPS_CRYPTO_MLS_H

#include <stddef.h>

/* argv[0] is "mls", argv[1] the subcommand; returns the exit status. */
int msv_crypto_mls_main(int argc, char **argv);

/* STATE.pending (apps/crypto_mls_pending.c): what an interrupted command left to publish. */
#define MSV_MLS_PENDING_MAGIC "MSVMLS-PENDING 1"
#define MSV_MLS_PENDING_ENTRIES 4 /* a command has two outputs at most */

struct msv_mls_pending {
    const char *state_hash; /* 64 characters: the hex of the saved state's SHA-256 */
    size_t n;
    int replace[MSV_MLS_PENDING_ENTRIES]; /* R: over a file there (--force) */
    char *tmp[MSV_MLS_PENDING_ENTRIES];   /* NAME.stagedXXXXXX */
    char *name[MSV_MLS_PENDING_ENTRIES];
};

/*
 * Reads STATE.pending from text (len bytes and a NUL after them; its lines are cut in place, and
 * p's strings point into it); -1 if it is not exactly a file missive-crypto mls writes.
 */
int msv_mls_pending_parse(char *text, size_t len, struct msv_mls_pending *p);

#endif
