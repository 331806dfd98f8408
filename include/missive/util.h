/*
 * Small helpers of libmissive that callers need too: secret buffers, hex.
 */
#ifndef MISSIVE_UTIL_H
#define MISSIVE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

/*
 * Initialises the crypto libraries underneath libmissive: the random source
 * and OpenSSL's locked secure heap for private keys. Call once at start-up,
 * before other threads exist and before any other function; later calls are
 * harmless. Returns MSV_ERR_CRYPTO if the system's random source is unusable.
 */
MSV_MUST_CHECK msv_err msv_init(void);
/*
 * msv_init() for processes that hold many TLS connections (missived, the load
 * generator): OpenSSL keeps a few dozen bytes per connection in its secure
 * heap and fails handshakes once that is full, so theirs is 64 MiB (reserved
 * address space; only what is used becomes resident).
 */
MSV_MUST_CHECK msv_err msv_init_many_connections(void);

/* Fills n bytes with output of the system's CSPRNG (after msv_init()). */
void msv_random_bytes(void *out, size_t n);

/* Overwrites len bytes at p with zeros in a way the compiler cannot elide. */
void msv_wipe(void *p, size_t len);

/* Wipes len bytes at p and frees p. p may be NULL. */
void msv_secret_free(void *p, size_t len);
/* Writes all len bytes of data to the descriptor fd (again after EINTR); MSV_ERR_IO otherwise. */
MSV_MUST_CHECK msv_err msv_write_all(int fd, const void *data, size_t len);

/* The wall clock: milliseconds since the Unix epoch. */
int64_t msv_wall_ms(void);
/* Milliseconds on the monotonic clock: for deadlines and intervals, not dates. */
int64_t msv_mono_ms(void);

/* Constant-time comparison of two len-byte buffers; returns 1 if equal. */
int msv_equal_ct(const void *a, const void *b, size_t len);

/*
 * Writes 2*len lowercase hex digits and a NUL to out, which holds out_len
 * bytes. Returns MSV_ERR_INVALID if out is too small.
 */
MSV_MUST_CHECK msv_err msv_hex_encode(const uint8_t *in, size_t len, char *out, size_t out_len);

/*
 * Decodes the hex string in (upper or lower case, no separators) into out,
 * which holds out_len bytes; *written receives the byte count. Returns
 * MSV_ERR_PARSE for odd length or a non-hex digit, MSV_ERR_TOO_BIG if out is
 * too small.
 */
MSV_MUST_CHECK msv_err msv_hex_decode(const char *in, uint8_t *out, size_t out_len,
                                      size_t *written);

/*
 * Parses the len bytes at s as HOST:PORT (the last colon splits them; the
 * port is 1 to 65535 in decimal digits) into host (host_len bytes, NUL
 * terminated) and port. MSV_ERR_PARSE if they are not that, or the host is
 * empty or does not fit.
 */
MSV_MUST_CHECK msv_err msv_host_port(const char *s, size_t len, char *host, size_t host_len,
                                     uint16_t *port);

/* Returns 1 if the len bytes at s are well-formed UTF-8 (no overlongs, no surrogates). */
int msv_utf8_is_valid(const uint8_t *s, size_t len);

/*
 * Usernames (docs/missive.md, "Usernames"): NAME.DIGITS, where NAME is 3 to 24 ASCII letters and
 * digits beginning with a letter, and DIGITS 2 to 9 decimal digits, as "alice.42". Upper-case
 * letters are folded to lower case. Writes the username to out (MSV_USERNAME_MAX + 1 bytes) and
 * returns 1, or returns 0 (out untouched) for anything else.
 */
#define MSV_USERNAME_MAX 34
int msv_username_normalise(const uint8_t *s, size_t len, char *out);

/*
 * A handle folded as the directory keeps it: a username through msv_username_normalise, an
 * e-mail address or +E.164 number with its ASCII letters folded to lower case (its grammar is the
 * server's to check). Writes it to out (max + 1 bytes) and returns 1, or returns 0 for an empty
 * handle, one longer than max, or a username that is not one.
 */
int msv_handle_fold(const uint8_t *s, size_t len, size_t max, char *out);

#endif
