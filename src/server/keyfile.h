/*
 * missived's secret key files in its data directory (log.key, vrf.key): read, or made on first
 * start with mode 0600 and synced, and their public halves written beside them in hex.
 */
#ifndef MSV_SERVER_KEYFILE_H
#define MSV_SERVER_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

/*
 * Reads DIR/NAME, which must hold exactly len bytes (else MSV_ERR_PARSE: "... is not a WHAT
 * (LEN bytes)"), into secret; when it does not exist, make(secret, ctx) fills secret and the
 * file is written. err says what failed.
 */
MSV_MUST_CHECK msv_err msv_keyfile_load(const char *dir, const char *name, const char *what,
                                        uint8_t *secret, size_t len,
                                        void (*make)(uint8_t *secret, void *ctx), void *ctx,
                                        char *err, size_t err_len);

/* Writes DIR/NAME: pub in hex and a new line (mode 0644). */
MSV_MUST_CHECK msv_err msv_keyfile_write_public(const char *dir, const char *name,
                                                const uint8_t *pub, size_t len, char *err,
                                                size_t err_len);

#endif
