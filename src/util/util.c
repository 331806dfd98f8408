#include "missive/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sodium.h>

/* Room in OpenSSL's secure heap for the private parts of a few dozen RSA and P-256 keys. */
#define SECURE_HEAP_SIZE (256 * 1024)
/* ... and for 32-byte blocks that OpenSSL holds per TLS connection (B2 ran out at 8,000). */
#define SECURE_HEAP_SIZE_MANY (64 * 1024 * 1024)
#define SECURE_HEAP_MIN 32

static msv_err init(size_t secure_heap)
{
    /* sodium_init() is idempotent and thread-safe; -1 means no usable random source. */
    if (sodium_init() < 0)
        return MSV_ERR_CRYPTO;
        /*
         * OpenSSL keeps RSA and EC private components in BN_secure memory: locked pages
         * between guard pages, wiped when freed. Where locking memory is not allowed
         * (RLIMIT_MEMLOCK), OpenSSL falls back to its normal heap and keys still work.
         */
#ifndef MSV_SANITIZER_BUILD
    /* Sanitizer builds leave it out: ASan cannot see into those pages, and LeakSanitizer
     * does not scan them, so OpenSSL's long-lived objects referenced from there would
     * look leaked. On the normal heap the sanitizers check every key operation. */
    if (!CRYPTO_secure_malloc_initialized())
        (void)CRYPTO_secure_malloc_init(secure_heap, SECURE_HEAP_MIN);
#else
    (void)secure_heap;
#endif
    return MSV_OK;
}

msv_err msv_init(void)
{
    return init(SECURE_HEAP_SIZE);
}

msv_err msv_init_many_connections(void)
{
    return init(SECURE_HEAP_SIZE_MANY);
}

const char *msv_strerror(msv_err err)
{
    switch (err) {
    case MSV_OK:
        return "success";
    case MSV_ERR_NOMEM:
        return "out of memory";
    case MSV_ERR_INVALID:
        return "invalid argument";
    case MSV_ERR_PARSE:
        return "malformed input";
    case MSV_ERR_AUTH:
        return "message could not be authenticated";
    case MSV_ERR_TOO_BIG:
        return "input too large";
    case MSV_ERR_CRYPTO:
        return "cryptographic library failure";
    case MSV_ERR_IO:
        return "input/output error";
    case MSV_ERR_REPLAY:
        return "message was already received";
    case MSV_ERR_UNSUPPORTED:
        return "unsupported version or suite";
    case MSV_ERR_AGAIN:
        return "more input needed";
    case MSV_ERR_NOT_FOUND:
        return "not found";
    case MSV_ERR_EXISTS:
        return "already exists";
    case MSV_ERR_BUSY:
        return "in use by another process";
    default:
        return "unknown error";
    }
}

int64_t msv_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t msv_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void msv_random_bytes(void *out, size_t n)
{
    randombytes_buf(out, n);
}

void msv_wipe(void *p, size_t len)
{
    if (p != NULL)
        OPENSSL_cleanse(p, len);
}

void msv_secret_free(void *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

msv_err msv_write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return MSV_ERR_IO;
        p += n;
        len -= (size_t)n;
    }
    return MSV_OK;
}

int msv_equal_ct(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

msv_err msv_hex_encode(const uint8_t *in, size_t len, char *out, size_t out_len)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    if (len > (SIZE_MAX - 1) / 2 || out_len < 2 * len + 1)
        return MSV_ERR_INVALID;
    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
    return MSV_OK;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

msv_err msv_hex_decode(const char *in, uint8_t *out, size_t out_len, size_t *written)
{
    size_t n = strlen(in), i;

    if (n % 2 != 0)
        return MSV_ERR_PARSE;
    if (n / 2 > out_len)
        return MSV_ERR_TOO_BIG;
    for (i = 0; i < n / 2; i++) {
        int hi = hex_value(in[2 * i]), lo = hex_value(in[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return MSV_ERR_PARSE;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *written = n / 2;
    return MSV_OK;
}

msv_err msv_host_port(const char *s, size_t len, char *host, size_t host_len, uint16_t *port)
{
    size_t colon = len, digits;
    unsigned long n = 0;

    while (colon > 0 && s[colon - 1] != ':')
        colon--;
    if (colon < 2 || colon - 1 >= host_len)
        return MSV_ERR_PARSE; /* no colon, or nothing (or too much) before it */
    digits = len - colon;
    if (digits == 0 || digits > 5)
        return MSV_ERR_PARSE;
    for (size_t i = colon; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return MSV_ERR_PARSE;
        n = n * 10 + (unsigned long)(s[i] - '0');
    }
    if (n == 0 || n > 65535)
        return MSV_ERR_PARSE;
    memcpy(host, s, colon - 1);
    host[colon - 1] = '\0';
    *port = (uint16_t)n;
    return MSV_OK;
}

/* Unicode 15, table 3-7: the well-formed UTF-8 byte sequences. */
int msv_utf8_is_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = s[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0; /* no overlongs */
            else if (c == 0xed)
                hi = 0x9f; /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f; /* nothing above U+10FFFF */
        } else {
            return 0;
        }
        if (len - i - 1 < need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return 0;
        }
        i += need + 1;
    }
    return 1;
}

int msv_username_normalise(const uint8_t *s, size_t len, char *out)
{
    const uint8_t *dot = len > 0 ? memchr(s, '.', len) : NULL;
    size_t name = dot != NULL ? (size_t)(dot - s) : 0, digits = len - name - 1;

    if (dot == NULL || name < 3 || name > 24 || digits < 2 || digits > 9)
        return 0;
    for (size_t i = 0; i < name; i++) {
        int letter = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z');

        if (!letter && (i == 0 || s[i] < '0' || s[i] > '9'))
            return 0;
    }
    for (size_t i = name + 1; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[len] = '\0';
    return 1;
}

int msv_handle_fold(const uint8_t *s, size_t len, size_t max, char *out)
{
    if (len == 0 || len > max)
        return 0;
    if (memchr(s, '@', len) == NULL && s[0] != '+')
        return msv_username_normalise(s, len, out);
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[len] = '\0';
    return 1;
}
