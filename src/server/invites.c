/* Registration invite codes (invites.h). */
#include "server/invites.h"

#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"

/* Crockford's base-32 alphabet: no I, L, O or U, so that codes read aloud survive. */
static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define CODE_CHARS 16

void msv_invite_new(char out[MSV_INVITE_TEXT_LEN])
{
    uint8_t r[CODE_CHARS];
    size_t k = 0;

    msv_random_bytes(r, sizeof(r));
    for (size_t i = 0; i < CODE_CHARS; i++) {
        if (i > 0 && i % 4 == 0)
            out[k++] = '-';
        out[k++] = alphabet[r[i] & 31]; /* 256 is a multiple of 32: uniform */
    }
    out[k] = '\0';
    sodium_memzero(r, sizeof(r));
}

/* The value of one typed character in the alphabet, or -1. */
static int digit(uint8_t ch)
{
    const char *at;

    if (ch >= 'a' && ch <= 'z')
        ch = (uint8_t)(ch - 'a' + 'A');
    if (ch == 'O')
        ch = '0';
    else if (ch == 'I' || ch == 'L')
        ch = '1';
    at = ch != 0 ? strchr(alphabet, ch) : NULL;
    return at != NULL ? (int)(at - alphabet) : -1;
}

msv_err msv_invite_hash(const uint8_t *code, size_t len, uint8_t out[32])
{
    char norm[CODE_CHARS];
    size_t n = 0;
    const uint8_t *parts[2] = {(const uint8_t *)"MSV-invite-v1", (const uint8_t *)norm};
    size_t lens[2] = {13, CODE_CHARS};
    msv_err err;

    if (len > MSV_INVITE_CODE_MAX)
        return MSV_ERR_INVALID;
    for (size_t i = 0; i < len; i++) {
        int d;

        if (code[i] == '-' || code[i] == ' ')
            continue;
        if ((d = digit(code[i])) < 0 || n == CODE_CHARS)
            return MSV_ERR_INVALID;
        norm[n++] = alphabet[d];
    }
    if (n != CODE_CHARS)
        return MSV_ERR_INVALID;
    err = msv_sha256_parts(parts, lens, 2, out);
    sodium_memzero(norm, sizeof(norm));
    return err;
}
