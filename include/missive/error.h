/*
 * Missive error codes: one table for the whole library.
 *
 * Every function that can fail returns msv_err: MSV_OK (0) on success, a
 * negative MSV_ERR_* otherwise. Cryptographic failures of any kind (bad
 * signature, bad tag, undecryptable block, malformed ciphertext) collapse into
 * MSV_ERR_AUTH so that neither the code nor its text is an oracle.
 */
#ifndef MISSIVE_ERROR_H
#define MISSIVE_ERROR_H

#if defined(__GNUC__) || defined(__clang__)
#define MSV_MUST_CHECK __attribute__((warn_unused_result))
#else
#define MSV_MUST_CHECK
#endif

typedef int msv_err;

enum {
    MSV_OK = 0,
    MSV_ERR_NOMEM = -1,       /* an allocation failed */
    MSV_ERR_INVALID = -2,     /* a caller passed an argument outside the contract */
    MSV_ERR_PARSE = -3,       /* input bytes are not of the expected format */
    MSV_ERR_AUTH = -4,        /* authentication or decryption failed */
    MSV_ERR_TOO_BIG = -5,     /* input exceeds a configured or format limit */
    MSV_ERR_CRYPTO = -6,      /* the crypto library failed for a reason not caused by input */
    MSV_ERR_IO = -7,          /* a read or write on a file or socket failed */
    MSV_ERR_REPLAY = -8,      /* the message was seen before */
    MSV_ERR_UNSUPPORTED = -9, /* a version, suite or feature this build does not know */
    MSV_ERR_AGAIN = -10,      /* more input is needed before anything can be returned */
    MSV_ERR_NOT_FOUND = -11,  /* the named object does not exist */
    MSV_ERR_EXISTS = -12,     /* the object to create exists already */
    MSV_ERR_BUSY = -13,       /* another process holds what is needed, for longer than waited */
};

/* Returns a static, human-readable description of err; never NULL. */
const char *msv_strerror(msv_err err);

#endif
