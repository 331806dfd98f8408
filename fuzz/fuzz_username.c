/*
 * Usernames as missived reads them from UsernameSet and lookups (msv_username_normalise): any
 * bytes are refused or normalised, never read past; what is accepted is NAME.DIGITS in lower
 * case, as long as the input, and accepted again unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "missive/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[MSV_USERNAME_MAX + 1], again[MSV_USERNAME_MAX + 1];
    const char *dot;

    if (!msv_username_normalise(data, size, out))
        return 0;
    if (size > MSV_USERNAME_MAX || strlen(out) != size || (dot = strchr(out, '.')) == NULL ||
        strchr(dot + 1, '.') != NULL || !(out[0] >= 'a' && out[0] <= 'z'))
        abort();
    for (size_t i = 0; i < size; i++)
        if (out[i] >= 'A' && out[i] <= 'Z')
            abort();
    if (!msv_username_normalise((const uint8_t *)out, size, again) || strcmp(out, again) != 0)
        abort();
    return 0;
}
