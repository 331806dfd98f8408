/*
 * Invite codes as the server reads them from RegisterStart/RegisterFinish:
 * any bytes are refused or hashed, never read past; a code that hashes hashes
 * the same as its canonical form (upper case, no separators), which must
 * itself be a code.
 */
#include <stdlib.h>
#include <string.h>

#include "server/invites.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    uint8_t h1[32], h2[32], canon[16];
    size_t n = 0;

    if (msv_invite_hash(data, size, h1) != MSV_OK)
        return 0;
    for (size_t i = 0; i < size; i++) {
        uint8_t ch = data[i];

        if (ch == '-' || ch == ' ')
            continue;
        if (ch >= 'a' && ch <= 'z')
            ch = (uint8_t)(ch - 'a' + 'A');
        ch = ch == 'O' ? '0' : ch == 'I' || ch == 'L' ? '1' : ch;
        if (n == sizeof(canon) || strchr(alphabet, ch) == NULL || ch == 0)
            abort();
        canon[n++] = ch;
    }
    if (n != sizeof(canon) || msv_invite_hash(canon, n, h2) != MSV_OK || memcmp(h1, h2, 32) != 0)
        abort();
    return 0;
}
